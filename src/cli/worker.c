/*
 * `inferq worker`: options, the claim thread and the main thread's
 * shutdown logic. One job runs per slot; --concurrency sets the slots.
 *
 * Why threads: libinferq's calls block (libcurl's easy interface). A claim
 * long-polls for up to --wait seconds, and a report to an unreachable
 * server is retried for minutes, so neither may hold up the heartbeats or
 * pipes of other jobs. The claim thread therefore claims only when a slot
 * is free, each job runs on its own thread (worker_job.c), and the main
 * thread only waits for signals (signalfd) and for jobs to end (eventfd).
 *
 * Shutdown: the first SIGTERM, SIGINT or SIGHUP (a closed terminal) stops
 * claiming and gives running
 * jobs --grace seconds. A second signal, or the end of the grace period,
 * kills their commands and releases their jobs. A claim still waiting on
 * the server is not waited for: the process exits with _exit(), and the
 * server drops the waiting claim when its connection closes.
 *
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include "alloc.h"
#include "clock.h"
#include "worker.h"

#define DEFAULT_CLAIM_TIMEOUT_S 60
#define DEFAULT_WAIT_S          30.0
#define DEFAULT_GRACE_S         30.0
#define MAX_CONCURRENCY         256
#define KILL_WAIT_MS            15000 /* after the kill, how long releases may take */
#define CLAIM_PAUSE_MAX_MS      30000

/* One slot of --concurrency: the thread of the job running in it. */
struct job_slot {
	pthread_t thread;
	int started; /* 1 when thread has to be joined */
	int busy;    /* 1 while its job runs */
	worker_t *worker;
	inferq_claim_t *claim; /* handed to the thread, which owns it from then on */
};

enum {
	OPT_MODEL = 1000,
	OPT_CONCURRENCY,
	OPT_CLAIM_TIMEOUT,
	OPT_TIMEOUT,
	OPT_GRACE,
	OPT_WAIT,
	OPT_WORKER,
	OPT_SERVER,
	OPT_KEY_FILE,
	OPT_CACERT,
	OPT_REQUEST_TIMEOUT,
	OPT_HELP,
};

static const struct option options[] = {
    {"model", required_argument, NULL, OPT_MODEL},
    {"concurrency", required_argument, NULL, OPT_CONCURRENCY},
    {"claim-timeout", required_argument, NULL, OPT_CLAIM_TIMEOUT},
    {"timeout", required_argument, NULL, OPT_TIMEOUT},
    {"grace", required_argument, NULL, OPT_GRACE},
    {"wait", required_argument, NULL, OPT_WAIT},
    {"worker", required_argument, NULL, OPT_WORKER},
    {"server", required_argument, NULL, OPT_SERVER},
    {"key-file", required_argument, NULL, OPT_KEY_FILE},
    {"cacert", required_argument, NULL, OPT_CACERT},
    {"request-timeout", required_argument, NULL, OPT_REQUEST_TIMEOUT},
    {"help", no_argument, NULL, OPT_HELP},
    {NULL, 0, NULL, 0},
};

static void print_help(FILE *out)
{
	fprintf(
	    out,
	    "usage: inferq worker --model M [options] -- CMD [ARGS...]\n"
	    "\n"
	    "Run CMD once per claimed job of model M.\n"
	    "\n"
	    "CMD gets the job's payload (a JSON object) on stdin and INFERQ_REQUEST_ID,\n"
	    "INFERQ_MODEL and INFERQ_RETRIES in its environment. It may write JSON objects,\n"
	    "one per line, to file descriptor 3, such as {\"progress\": 0.4}: each is merged\n"
	    "into the job's info (lines that arrive close together are sent as one update,\n"
	    "at most one per second). Exit status 0 with one JSON object on stdout\n"
	    "completes the job with that object as its outputs. Any other exit status, a\n"
	    "signal, or other stdout fails the job with an error that names the status or\n"
	    "signal and ends with the last 4 KiB of CMD's stderr. CMD's stderr also goes\n"
	    "to the worker's stderr, each line prefixed with [REQUEST_ID].\n"
	    "\n"
	    "options:\n"
	    "  --model M               the model whose jobs to run (required)\n"
	    "  --concurrency N         jobs run at once, 1 to %d (default 1)\n"
	    "  --claim-timeout S       lease of each job in whole seconds, 1 to 86400, or a\n"
	    "                          duration such as 5m (default %d); heartbeats go every\n"
	    "                          S/3 seconds\n"
	    "  --timeout S             seconds CMD may run per job; then it gets SIGTERM,\n"
	    "                          SIGKILL 5 s later, and the job fails (default: no limit)\n"
	    "  --grace S               seconds running jobs get to finish after the first\n"
	    "                          SIGTERM, SIGINT or SIGHUP (default %g)\n"
	    "  --wait S                seconds one claim waits for a job, 0 to 60 (default %g)\n"
	    "  --worker NAME           the worker's name in the server's retry history\n"
	    "                          (default HOSTNAME:PID)\n"
	    "  --server URL            server base URL (default $INFERQ_URL, then\n"
	    "                          " INFERQ_DEFAULT_URL ")\n"
	    "  --key-file PATH         file whose first line is the API key, used when\n"
	    "                          $INFERQ_API_KEY and $TOGETHER_API_KEY are unset\n"
	    "                          (default " INFERQ_DEFAULT_KEY_FILE " when readable)\n"
	    "  --cacert PATH           PEM CA certificates for an https:// server\n"
	    "  --request-timeout S     seconds for one HTTP request (default 30)\n"
	    "  --help                  print this help\n"
	    "\n"
	    "The first SIGTERM, SIGINT or SIGHUP stops claiming and lets running jobs finish\n"
	    "within --grace; a second one, or the end of the grace period, kills CMD and releases\n"
	    "its job to the queue. Complete and fail are retried for up to 10 minutes while\n"
	    "the server cannot be reached. One log line per event goes to stderr.\n"
	    "\n"
	    "exit codes:\n"
	    "  0  stopped by SIGTERM, SIGINT or SIGHUP after every result was delivered\n"
	    "  1  a result could not be delivered, or the server rejected the API key\n"
	    "  2  usage error, or the server rejected the claim as invalid (HTTP 400)\n"
	    "  4  the API key does not cover the model (HTTP 404)\n",
	    MAX_CONCURRENCY, DEFAULT_CLAIM_TIMEOUT_S, DEFAULT_GRACE_S, DEFAULT_WAIT_S);
}

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static int usage_error(const char *fmt, ...)
{
	va_list ap;

	fputs("inferq worker: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputs("\nrun `inferq worker --help` for the options\n", stderr);
	return CLI_EXIT_USAGE;
}

static int parse_int(const char *text, long min, long max, int *out)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(text, &end, 10);
	if (end == text || *end != '\0' || errno == ERANGE || v < min || v > max)
		return -1;
	*out = (int)v;
	return 0;
}

/* Handles one option. Returns 0, -1 after --help, or an exit code. */
static int take_option(worker_config_t *cfg, int opt, const char *arg)
{
	switch (opt) {
	case OPT_MODEL: cfg->cli.model = arg; break;
	case OPT_WORKER: cfg->name = arg; break;
	case OPT_SERVER: cfg->cli.server = arg; break;
	case OPT_KEY_FILE: cfg->cli.key_file = arg; break;
	case OPT_CACERT: cfg->cli.cacert = arg; break;
	case OPT_HELP: print_help(stdout); return -1;
	case OPT_CONCURRENCY:
		if (parse_int(arg, 1, MAX_CONCURRENCY, &cfg->concurrency) != 0)
			return usage_error(
			    "invalid --concurrency \"%s\": use a whole number from 1 "
			    "to %d",
			    arg, MAX_CONCURRENCY);
		break;
	case OPT_CLAIM_TIMEOUT: {
		int64_t ms;

		/* A bare number is seconds, and a duration with a unit works as in inferq serve. */
		if (clock_parse_duration(arg, strlen(arg), 1000, &ms) != 0 || ms < 1000 ||
		    ms > 86400LL * 1000 || ms % 1000 != 0)
			return usage_error(
			    "invalid --claim-timeout \"%s\": use whole seconds from 1 "
			    "to 86400 (24h), such as 60 or 5m",
			    arg);
		cfg->claim_timeout_s = (int)(ms / 1000);
		break;
	}
	case OPT_TIMEOUT:
		if (cli_parse_seconds(arg, 0.001, 1e9, &cfg->timeout_s) != 0)
			return usage_error(
			    "invalid --timeout \"%s\": use a number of seconds above "
			    "0, such as 600 or 2.5",
			    arg);
		break;
	case OPT_GRACE:
		if (cli_parse_seconds(arg, 0, 1e9, &cfg->grace_s) != 0)
			return usage_error("invalid --grace \"%s\": use a number of seconds, 0 or "
			                   "more, such as 30",
			                   arg);
		break;
	case OPT_WAIT:
		if (cli_parse_seconds(arg, 0, 60, &cfg->wait_s) != 0)
			return usage_error(
			    "invalid --wait \"%s\": use a number of seconds from 0 to "
			    "60, such as 30",
			    arg);
		break;
	case OPT_REQUEST_TIMEOUT:
		if (cli_parse_seconds(arg, 0.001, 1e9, &cfg->cli.request_timeout) != 0)
			return usage_error("invalid --request-timeout \"%s\": use a number of "
			                   "seconds above 0, such as 30",
			                   arg);
		break;
	}
	return 0;
}

/*
 * Finds CMD: as given when it contains a "/", else in PATH, as execvp()
 * would. Stores a malloc'd path in *out. Returns 0 or an exit code.
 */
static int find_command(const char *cmd, char **out)
{
	const char *path = getenv("PATH");
	struct stat st;
	buf_t candidate = BUF_INIT;

	if (strchr(cmd, '/')) {
		if (stat(cmd, &st) != 0)
			return usage_error("cannot run the command \"%s\": %s", cmd,
			                   strerror(errno));
		if (S_ISDIR(st.st_mode))
			return usage_error("cannot run the command \"%s\": it is a directory", cmd);
		if (access(cmd, X_OK) != 0)
			return usage_error("cannot run the command \"%s\": it is not executable; "
			                   "make it so with chmod +x %s",
			                   cmd, cmd);
		*out = xstrdup(cmd);
		return 0;
	}
	for (const char *dir = path ? path : "/usr/local/bin:/usr/bin:/bin"; dir;) {
		const char *colon = strchr(dir, ':');
		size_t len = colon ? (size_t)(colon - dir) : strlen(dir);

		buf_reset(&candidate);
		buf_append(&candidate, len ? dir : ".", len ? len : 1);
		buf_putc(&candidate, '/');
		buf_puts(&candidate, cmd);
		if (stat(candidate.data, &st) == 0 && !S_ISDIR(st.st_mode) &&
		    access(candidate.data, X_OK) == 0) {
			*out = xstrdup(candidate.data);
			buf_free(&candidate);
			return 0;
		}
		dir = colon ? colon + 1 : NULL;
	}
	buf_free(&candidate);
	return usage_error("cannot run the command \"%s\": no executable of that name in PATH; "
	                   "give its path, such as ./%s",
	                   cmd, cmd);
}

/* Parses argv into cfg. Returns 0, -1 after --help, or an exit code. */
static int parse_args(int argc, char **argv, worker_config_t *cfg)
{
	int opt, rc;

	opterr = 0;
	optind = 0;
	/* "+": stop at CMD, so CMD's own options are not taken for the worker's. */
	while ((opt = getopt_long(argc, argv, "+", options, NULL)) != -1) {
		if (opt == '?') {
			if (optopt >= OPT_MODEL && optopt <= OPT_HELP)
				return usage_error("option --%s needs a value",
				                   options[optopt - OPT_MODEL].name);
			return usage_error("unknown option \"%s\"", argv[optind - 1]);
		}
		if ((rc = take_option(cfg, opt, optarg)) != 0)
			return rc;
	}
	if (!cfg->cli.model || !*cfg->cli.model)
		return usage_error(
		    "missing --model: name the queue's model, as in --model my-org/llm");
	if (optind >= argc)
		return usage_error("missing the command: put it after \"--\", as in "
		                   "inferq worker --model M -- ./run.sh");
	cfg->command = argv + optind;
	return find_command(cfg->command[0], &cfg->command_path);
}

/* --- Claim thread --------------------------------------------------------- */

static void wake_main(worker_t *w)
{
	uint64_t one = 1;

	if (write(w->wake_fd, &one, sizeof(one)) < 0) {
		/* The counter is already non-zero: the main thread wakes anyway. */
	}
}

static void *job_thread(void *arg)
{
	struct job_slot *slot = arg;
	worker_t *w = slot->worker;
	int rc = worker_job_run(w, slot->claim);

	pthread_mutex_lock(&w->lock);
	slot->claim = NULL;
	slot->busy = 0;
	w->running--;
	if (rc != 0)
		w->undelivered++;
	pthread_cond_broadcast(&w->slot_free);
	pthread_mutex_unlock(&w->lock);
	wake_main(w);
	return NULL;
}

/* Gives a claimed job back when it cannot run here. */
static void release_claim(inferq_client_t *c, inferq_claim_t *claim, const char *why)
{
	const char *id = inferq_claim_request_id(claim);

	if (inferq_claim_release(c, claim) == 0)
		worker_log(LOG_INFO, "released request_id=%s: %s", id, why);
	else
		worker_log(LOG_ERROR,
		           "release failed: %s; the job runs again once its lease expires "
		           "request_id=%s",
		           inferq_client_last_error(c), id);
	inferq_claim_free(claim);
}

/* Starts the claim's job in a free slot; called with w->lock held. Returns 0 or INFERQ_EIO. */
static int start_job(worker_t *w, inferq_claim_t *claim)
{
	struct job_slot *slot = NULL;

	for (int i = 0; i < w->config->concurrency && !slot; i++)
		if (!w->slots[i].busy)
			slot = &w->slots[i];
	if (slot->started)
		pthread_join(slot->thread, NULL); /* its job has ended: busy is 0 */
	slot->started = 0;
	slot->busy = 1;
	slot->worker = w;
	slot->claim = claim;
	w->running++;
	if (pthread_create(&slot->thread, NULL, job_thread, slot) != 0) {
		slot->busy = 0;
		slot->claim = NULL;
		w->running--;
		return INFERQ_EIO;
	}
	slot->started = 1;
	return 0;
}

static int claim_error_is_fatal(int rc)
{
	return rc == INFERQ_EAUTH || rc == INFERQ_ENOTFOUND || rc == INFERQ_EINVAL ||
	       rc == INFERQ_ERANGE;
}

/* Waits for a free slot. Returns 1 when one is free, 0 when stopping. */
static int wait_for_slot(worker_t *w)
{
	int free_slot;

	pthread_mutex_lock(&w->lock);
	while (!w->stopping && w->running >= w->config->concurrency)
		pthread_cond_wait(&w->slot_free, &w->lock);
	free_slot = !w->stopping;
	pthread_mutex_unlock(&w->lock);
	return free_slot;
}

/* Sleeps ms unless stopping is set first. */
static void pause_claims(worker_t *w, int64_t ms)
{
	struct timespec until;

	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += ms / 1000;
	until.tv_nsec += (ms % 1000) * 1000000;
	if (until.tv_nsec >= 1000000000) {
		until.tv_sec++;
		until.tv_nsec -= 1000000000;
	}
	pthread_mutex_lock(&w->lock);
	while (!w->stopping && pthread_cond_timedwait(&w->slot_free, &w->lock, &until) == 0)
		;
	pthread_mutex_unlock(&w->lock);
}

/* Handles a failed claim. Returns 0 to go on claiming, 1 to stop. */
static int claim_failed(worker_t *w, inferq_client_t *c, int rc, int64_t *pause)
{
	const worker_config_t *cfg = w->config;

	if (claim_error_is_fatal(rc)) {
		worker_log(LOG_ERROR, "claim failed, stopping: %s model=%s",
		           inferq_client_last_error(c), cfg->cli.model);
		pthread_mutex_lock(&w->lock);
		w->exit_code = cli_exit_code(rc);
		w->stopping = 1;
		pthread_cond_broadcast(&w->slot_free);
		pthread_mutex_unlock(&w->lock);
		return 1;
	}
	*pause = *pause ? *pause * 2 : 1000;
	if (*pause > CLAIM_PAUSE_MAX_MS)
		*pause = CLAIM_PAUSE_MAX_MS;
	worker_log(LOG_WARN, "claim failed: %s; retrying in %lld s model=%s",
	           inferq_client_last_error(c), (long long)(*pause / 1000), cfg->cli.model);
	pause_claims(w, *pause);
	return 0;
}

typedef struct {
	worker_t *w;
	inferq_client_t *client;
} claim_loop_t;

/* Records whether a claim is in flight, so the main thread knows if it can join this thread. */
static void set_claiming(worker_t *w, int claiming)
{
	pthread_mutex_lock(&w->lock);
	w->claiming = claiming;
	pthread_cond_broadcast(&w->slot_free);
	pthread_mutex_unlock(&w->lock);
}

static void *claim_thread(void *arg)
{
	claim_loop_t *loop = arg;
	worker_t *w = loop->w;
	const worker_config_t *cfg = w->config;
	inferq_client_t *c = loop->client;
	int64_t pause = 0;

	while (wait_for_slot(w)) {
		inferq_claim_t *claim = NULL;
		int rc;

		set_claiming(w, 1);
		rc = inferq_job_claim(c, cfg->cli.model, cfg->claim_timeout_s, cfg->wait_s,
		                      cfg->name, &claim);
		set_claiming(w, 0);
		if (rc != 0) {
			if (claim_failed(w, c, rc, &pause))
				break;
			continue;
		}
		if (pause)
			worker_log(LOG_INFO, "claims work again model=%s", cfg->cli.model);
		pause = 0;
		if (!claim)
			continue;
		worker_log(LOG_INFO, "claimed request_id=%s retries=%lld",
		           inferq_claim_request_id(claim), (long long)inferq_claim_retries(claim));
		pthread_mutex_lock(&w->lock);
		if (w->stopping) {
			pthread_mutex_unlock(&w->lock);
			release_claim(c, claim, "the worker is shutting down");
			break;
		}
		rc = start_job(w, claim);
		pthread_mutex_unlock(&w->lock);
		if (rc != 0)
			release_claim(c, claim, "the worker cannot start a thread for it");
	}
	pthread_mutex_lock(&w->lock);
	w->claim_done = 1;
	pthread_cond_broadcast(&w->slot_free);
	pthread_mutex_unlock(&w->lock);
	wake_main(w);
	return NULL;
}

/* --- Main thread ---------------------------------------------------------- */

static void begin_kill(worker_t *w, const char *why)
{
	int running;

	pthread_mutex_lock(&w->lock);
	w->killing = 1;
	running = w->running;
	pthread_mutex_unlock(&w->lock);
	worker_log(LOG_WARN, "%s: killing the command of %d running job%s and releasing them", why,
	           running, running == 1 ? "" : "s");
	if (write(w->kill_pipe[1], "k", 1) < 0) {
		/* Nobody reads the pipe, so a failed write means it is full and already readable.
		 */
	}
}

/* Returns the name of a stop signal, e.g. "SIGTERM". */
static const char *stop_signal_name(int sig)
{
	if (sig == SIGINT)
		return "SIGINT";
	if (sig == SIGHUP)
		return "SIGHUP";
	return "SIGTERM";
}

/* Acts on SIGTERM, SIGINT or SIGHUP. Returns 1 when the worker must exit at once. */
static int on_signal(worker_t *w, int sig, int64_t *grace_end)
{
	const char *name = stop_signal_name(sig);
	char why[64];
	int stopping, killing, running;

	pthread_mutex_lock(&w->lock);
	stopping = w->stopping;
	killing = w->killing;
	running = w->running;
	if (!stopping) {
		w->stopping = 1;
		pthread_cond_broadcast(&w->slot_free);
	}
	pthread_mutex_unlock(&w->lock);

	if (!stopping) {
		*grace_end = clock_mono_ms() + (int64_t)(w->config->grace_s * 1000);
		worker_log(LOG_INFO, "%s: no more claims; %d running job%s get %g s to finish",
		           name, running, running == 1 ? "" : "s", w->config->grace_s);
		return 0;
	}
	if (!killing) {
		snprintf(why, sizeof(why), "second signal (%s)", name);
		begin_kill(w, why);
		return 0;
	}
	worker_log(LOG_ERROR, "third signal (%s): exiting without waiting for releases", name);
	return 1;
}

/*
 * Waits for signals and for jobs to end until the worker may exit.
 * Returns 0 after a clean shutdown, 1 when it had to give up on jobs.
 */
static int supervise(worker_t *w, int signal_fd)
{
	int64_t grace_end = INT64_MAX, kill_end = INT64_MAX;

	for (;;) {
		struct pollfd pfd[2] = {{.fd = signal_fd, .events = POLLIN},
		                        {.fd = w->wake_fd, .events = POLLIN}};
		int64_t now = clock_mono_ms(), until;
		int stopping, killing, running;

		pthread_mutex_lock(&w->lock);
		stopping = w->stopping;
		killing = w->killing;
		running = w->running;
		pthread_mutex_unlock(&w->lock);

		if (stopping && running == 0)
			return 0;
		if (stopping && grace_end == INT64_MAX) /* a fatal claim error stopped the claims */
			grace_end = now + (int64_t)(w->config->grace_s * 1000);
		if (stopping && !killing && now >= grace_end) {
			begin_kill(w, "the grace period is over");
			killing = 1;
		}
		if (killing && kill_end == INT64_MAX)
			kill_end = now + KILL_WAIT_MS;
		if (killing && now >= kill_end) {
			worker_log(LOG_ERROR,
			           "%d job%s did not end within %d s of the kill; exiting, "
			           "their leases will expire",
			           running, running == 1 ? "" : "s", KILL_WAIT_MS / 1000);
			return 1;
		}

		until = INT64_MAX;
		if (stopping)
			until = grace_end;
		if (killing)
			until = kill_end;
		if (poll(pfd, 2, until == INT64_MAX ? -1 : (int)(until - now)) < 0 &&
		    errno != EINTR)
			return 1;
		if (pfd[0].revents & POLLIN) {
			struct signalfd_siginfo si;

			if (read(signal_fd, &si, sizeof(si)) == (ssize_t)sizeof(si) &&
			    on_signal(w, (int)si.ssi_signo, &grace_end))
				return 1;
		}
		if (pfd[1].revents & POLLIN) {
			uint64_t count;

			if (read(w->wake_fd, &count, sizeof(count)) < 0) {
				/* EAGAIN: another read took the count first. */
			}
		}
	}
}

static void default_name(char *out, size_t size)
{
	char host[256];

	if (gethostname(host, sizeof(host)) != 0)
		strcpy(host, "worker");
	host[sizeof(host) - 1] = '\0';
	snprintf(out, size, "%s:%d", host, (int)getpid());
}

/* Creates the worker's pipes and blocks the signals that the main thread reads. */
static int setup(worker_t *w, int *signal_fd)
{
	sigset_t stop_signals;

	sigemptyset(&stop_signals);
	sigaddset(&stop_signals, SIGTERM);
	sigaddset(&stop_signals, SIGINT);
	sigaddset(&stop_signals, SIGHUP); /* a closed terminal stops the worker as SIGTERM does */
	/* Blocked before any thread starts, so every thread inherits the mask. */
	pthread_sigmask(SIG_BLOCK, &stop_signals, NULL);
	/* A command that exits before reading all of its stdin must not kill the worker. */
	signal(SIGPIPE, SIG_IGN);

	*signal_fd = signalfd(-1, &stop_signals, SFD_CLOEXEC);
	w->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (*signal_fd < 0 || w->wake_fd < 0 || pipe2(w->kill_pipe, O_CLOEXEC | O_NONBLOCK) != 0) {
		fprintf(stderr, "inferq worker: cannot set up signal handling: %s\n",
		        strerror(errno));
		return CLI_EXIT_ERROR;
	}
	pthread_mutex_init(&w->lock, NULL);
	pthread_cond_init(&w->slot_free, NULL);
	return 0;
}

/*
 * Joins the threads that have ended or are about to: the job threads that
 * ran no job any more, and the claim thread unless a claim is in flight (it
 * may take up to --wait seconds). Returns 1 when every thread was joined,
 * 0 when one is still running.
 */
static int join_threads(worker_t *w, pthread_t claimer)
{
	int all_joined = 1, claim_done;

	for (int i = 0; i < w->config->concurrency; i++) {
		int started, busy;

		pthread_mutex_lock(&w->lock);
		started = w->slots[i].started;
		busy = w->slots[i].busy;
		pthread_mutex_unlock(&w->lock);
		if (started && !busy) {
			pthread_join(w->slots[i].thread, NULL);
			w->slots[i].started = 0;
		}
		all_joined &= !busy;
	}

	/* Between claims the thread notices stopping at once, or releases a job it just got. */
	pthread_mutex_lock(&w->lock);
	while (!w->claim_done && !w->claiming)
		pthread_cond_wait(&w->slot_free, &w->lock);
	claim_done = w->claim_done;
	pthread_mutex_unlock(&w->lock);
	if (claim_done)
		pthread_join(claimer, NULL);
	return all_joined && claim_done;
}

int worker_main(int argc, char **argv)
{
	worker_config_t cfg = {0};
	worker_t w = {0};
	claim_loop_t loop = {&w, NULL};
	char name[300];
	pthread_t claimer;
	int signal_fd = -1, rc, code;

	cfg.cli.command = "worker";
	cfg.concurrency = 1;
	cfg.claim_timeout_s = DEFAULT_CLAIM_TIMEOUT_S;
	cfg.wait_s = DEFAULT_WAIT_S;
	cfg.grace_s = DEFAULT_GRACE_S;
	if ((rc = parse_args(argc, argv, &cfg)) != 0)
		return rc < 0 ? CLI_EXIT_OK : rc;
	if (!cfg.name) {
		default_name(name, sizeof(name));
		cfg.name = name;
	}
	cfg.heartbeat_ms = (int64_t)cfg.claim_timeout_s * 1000 / 3;

	/* The first client is made before any thread: cli_client_new() may unsetenv(). */
	if ((code = cli_client_new(&cfg.cli, &loop.client)) != 0)
		goto out;
	w.config = &cfg;
	w.slots = xcalloc((size_t)cfg.concurrency, sizeof(*w.slots));
	if ((code = setup(&w, &signal_fd)) != 0)
		goto out;

	worker_log(LOG_INFO,
	           "started model=%s concurrency=%d claim_timeout=%d command=%s "
	           "worker=%s",
	           cfg.cli.model, cfg.concurrency, cfg.claim_timeout_s, cfg.command_path, cfg.name);
	if (pthread_create(&claimer, NULL, claim_thread, &loop) != 0) {
		fprintf(stderr, "inferq worker: cannot start the claim thread\n");
		code = CLI_EXIT_ERROR;
		goto out;
	}
	code = supervise(&w, signal_fd);
	pthread_mutex_lock(&w.lock);
	if (code == 0)
		code = w.undelivered ? CLI_EXIT_ERROR : w.exit_code;
	pthread_mutex_unlock(&w.lock);
	worker_log(LOG_INFO, "stopped exit_code=%d", code);

	/*
	 * A claim may still wait on the server: then leave without joining its
	 * thread. NOTE: a job the server hands to that claim in the last moment
	 * stays leased to this gone worker until its lease expires.
	 */
	if (!join_threads(&w, claimer)) {
		fflush(stdout);
		fflush(stderr);
		_exit(code);
	}
out:
	inferq_client_free(loop.client);
	free(w.slots);
	free(cfg.command_path);
	if (signal_fd >= 0)
		close(signal_fd);
	if (w.wake_fd > 0)
		close(w.wake_fd);
	if (w.kill_pipe[0] > 0) {
		close(w.kill_pipe[0]);
		close(w.kill_pipe[1]);
	}
	return code;
}
