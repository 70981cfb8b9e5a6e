/*
 * One job of `inferq worker`, run on its own thread: start CMD with the
 * payload on stdin, keep the lease with heartbeats, forward fd 3 info
 * lines, enforce --timeout, then complete, fail or release the job.
 *
 * The thread polls CMD's pipes (non-blocking), a pidfd that becomes
 * readable when CMD exits, and the worker's kill pipe. Heartbeats are
 * blocking libinferq calls on the job's own client, made between polls.
 * NOTE: while a heartbeat waits for an unresponsive server (up to the
 * request timeout per attempt), this job's pipes and --timeout wait too.
 * CMD runs in its own process group (worker_spawn.c), so a terminal's
 * Ctrl-C reaches only the worker, which then drains, and a kill reaches
 * CMD's children too.
 *
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "json.h"
#include "worker.h"

#define KILL_GRACE_MS       5000       /* from SIGTERM to SIGKILL after --timeout */
#define STDERR_TAIL         4096       /* bytes of stderr kept for the error of a failed job */
#define STDERR_LINE_MAX     3900       /* longer stderr lines are passed through in pieces */
#define STDOUT_MAX          (16 << 20) /* bytes of stdout kept; beyond it the job fails */
#define READ_CHUNK          65536
#define INFO_INTERVAL_MS    1000 /* at most one info heartbeat per second */
#define REPORT_DEADLINE_MS  (10 * 60 * 1000)
#define RELEASE_DEADLINE_MS 10000
#define REPORT_PAUSE_MAX_MS 30000
#define OUTPUTS_MAX_DEPTH   512
#define NO_PIDFD_POLL_MS    50 /* how often to look for CMD's exit without a pidfd */

typedef struct {
	worker_t *w;
	const worker_config_t *cfg;
	inferq_client_t *client;
	inferq_claim_t *claim;
	const char *id; /* request id, borrowed from claim */

	pid_t pid;
	int pidfd;                          /* -1 when pidfd_open() is not available */
	int in_fd, out_fd, err_fd, info_fd; /* our ends of CMD's fds 0 to 3; -1 once closed */
	int watch_kill;                     /* 1 until the kill pipe was acted on */
	size_t payload_sent;                /* bytes of the payload written to stdin */

	buf_t out;              /* CMD's stdout */
	int out_overflow;       /* 1 when stdout passed STDOUT_MAX */
	char tail[STDERR_TAIL]; /* the last bytes of stderr */
	size_t tail_len;
	int tail_cut;   /* 1 when stderr was longer than the tail */
	buf_t err_line; /* a stderr line not yet passed through */
	info_batch_t info;
	buf_t patch; /* an info patch taken from info but not yet accepted */

	int exited;     /* 1 once CMD was reaped */
	int status;     /* waitpid() status */
	int exec_errno; /* errno of a failed exec, else 0 */

	int64_t started_ms, next_heartbeat_ms, last_info_ms, timeout_at_ms, kill_at_ms;
	int heartbeat_failures;   /* consecutive failed heartbeats */
	int term_sent, kill_sent; /* signals sent to CMD's process group */
	int timed_out;            /* --timeout passed */
	int lost_claim;           /* the server gave the job to another claim */
	int shutdown_kill;        /* the worker shuts down: release the job */
} job_t;

/* --- Helpers ------------------------------------------------------------ */

static void sleep_ms(int64_t ms)
{
	struct timespec left = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};

	while (nanosleep(&left, &left) != 0 && errno == EINTR)
		;
}

static void close_fd(int *fd)
{
	if (*fd >= 0)
		close(*fd);
	*fd = -1;
}

/* Starts CMD. Returns 0, also when exec failed (then j->exec_errno is set), or INFERQ_EIO. */
static int spawn(job_t *j)
{
	worker_child_t child;

	if (worker_spawn(j->cfg, j->claim, &child) != 0) {
		worker_log(LOG_ERROR, "cannot start the command: %s request_id=%s", strerror(errno),
		           j->id);
		return INFERQ_EIO;
	}
	j->pid = child.pid;
	j->pidfd = child.pidfd;
	j->in_fd = child.fds[0];
	j->out_fd = child.fds[1];
	j->err_fd = child.fds[2];
	j->info_fd = child.fds[3];
	j->exec_errno = child.exec_errno;
	return 0;
}

/* --- CMD's pipes -------------------------------------------------------- */

static void write_payload(job_t *j)
{
	const char *payload = inferq_claim_payload(j->claim);
	size_t len = strlen(payload);
	ssize_t n;

	while (j->payload_sent < len) {
		n = write(j->in_fd, payload + j->payload_sent, len - j->payload_sent);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			return;
		if (n < 0) /* EPIPE: CMD closed stdin without reading all of it */
			break;
		j->payload_sent += (size_t)n;
	}
	close_fd(&j->in_fd);
}

/* Writes "[ID] LINE\n" on the worker's stderr in one write, so lines of jobs never mix. */
static void pass_stderr_line(job_t *j, const char *p, size_t len)
{
	buf_t line = BUF_INIT;

	buf_printf(&line, "[%s] ", j->id);
	buf_append(&line, p, len);
	buf_putc(&line, '\n');
	if (write(STDERR_FILENO, line.data, line.len) < 0) {
		/* The worker's own stderr is gone; nothing else can show the line. */
	}
	buf_free(&line);
}

static void keep_tail(job_t *j, const char *p, size_t n)
{
	if (n >= STDERR_TAIL) {
		j->tail_cut |= j->tail_len > 0 || n > STDERR_TAIL;
		memcpy(j->tail, p + n - STDERR_TAIL, STDERR_TAIL);
		j->tail_len = STDERR_TAIL;
		return;
	}
	if (j->tail_len + n > STDERR_TAIL) {
		size_t drop = j->tail_len + n - STDERR_TAIL;

		memmove(j->tail, j->tail + drop, j->tail_len - drop);
		j->tail_len -= drop;
		j->tail_cut = 1;
	}
	memcpy(j->tail + j->tail_len, p, n);
	j->tail_len += n;
}

static void take_stderr(job_t *j, const char *p, size_t n, int at_end)
{
	const char *nl;

	keep_tail(j, p, n);
	buf_append(&j->err_line, p, n);
	while ((nl = memchr(j->err_line.data, '\n', j->err_line.len)) ||
	       j->err_line.len > STDERR_LINE_MAX) {
		size_t len = nl ? (size_t)(nl - j->err_line.data) : STDERR_LINE_MAX;
		size_t used = nl ? len + 1 : len;

		pass_stderr_line(j, j->err_line.data, len);
		memmove(j->err_line.data, j->err_line.data + used, j->err_line.len - used);
		j->err_line.len -= used;
	}
	if (at_end && j->err_line.len > 0) {
		pass_stderr_line(j, j->err_line.data, j->err_line.len);
		j->err_line.len = 0;
	}
}

static void take_stdout(job_t *j, const char *p, size_t n)
{
	if (j->out_overflow || j->out.len + n > STDOUT_MAX) {
		j->out_overflow = 1;
		return;
	}
	buf_append(&j->out, p, n);
}

/*
 * Reads what *fd has now. Returns 1 when bytes may remain, 0 at EAGAIN, or
 * -1 at the end of the pipe (then *fd is closed).
 */
static int read_pipe(job_t *j, int *fd)
{
	char chunk[READ_CHUNK];
	ssize_t n;

	do
		n = read(*fd, chunk, sizeof(chunk));
	while (n < 0 && errno == EINTR);
	if (n < 0 && errno == EAGAIN)
		return 0;
	if (n > 0) {
		if (fd == &j->out_fd)
			take_stdout(j, chunk, (size_t)n);
		else if (fd == &j->err_fd)
			take_stderr(j, chunk, (size_t)n, 0);
		else
			info_batch_add(&j->info, chunk, (size_t)n);
		return 1;
	}
	if (fd == &j->err_fd)
		take_stderr(j, "", 0, 1);
	if (fd == &j->info_fd)
		info_batch_finish(&j->info);
	close_fd(fd);
	return -1;
}

/*
 * Reads every pipe until it is empty. After CMD exits this gets all it
 * wrote; a background child of CMD that keeps a pipe open is not waited for.
 */
static void drain_pipes(job_t *j)
{
	int *fds[3] = {&j->out_fd, &j->err_fd, &j->info_fd};

	for (int i = 0; i < 3; i++)
		while (*fds[i] >= 0 && read_pipe(j, fds[i]) > 0)
			;
	if (j->err_fd >= 0)
		take_stderr(j, "", 0, 1);
	if (j->info_fd >= 0)
		info_batch_finish(&j->info);
}

/* --- Signals to CMD ----------------------------------------------------- */

static void signal_group(job_t *j, int sig)
{
	if (!j->exited && kill(-j->pid, sig) != 0)
		kill(j->pid, sig);
}

/* Sends SIGTERM now and SIGKILL after KILL_GRACE_MS unless CMD exits first. */
static void terminate(job_t *j, int64_t now)
{
	if (j->term_sent)
		return;
	signal_group(j, SIGTERM);
	j->term_sent = 1;
	j->kill_at_ms = now + KILL_GRACE_MS;
}

static void reap(job_t *j)
{
	pid_t r;

	do
		r = waitpid(j->pid, &j->status, WNOHANG);
	while (r < 0 && errno == EINTR);
	if (r == j->pid)
		j->exited = 1;
}

/* Kills CMD for a shutdown once the main thread has asked for it. */
static void check_kill_pipe(job_t *j)
{
	int killing;

	pthread_mutex_lock(&j->w->lock);
	killing = j->w->killing;
	pthread_mutex_unlock(&j->w->lock);
	if (!killing)
		return;
	j->watch_kill = 0;
	j->shutdown_kill = 1;
	signal_group(j, SIGKILL);
	j->kill_sent = 1;
}

/* --- Heartbeats --------------------------------------------------------- */

/*
 * Sends a heartbeat, with the next info patch when with_info is set. A 409
 * or 404 means the job is no longer this claim's: CMD is stopped. Other
 * failures are retried after 1 s, doubling up to the heartbeat interval.
 */
static void heartbeat(job_t *j, int64_t now, int with_info)
{
	const char *patch;
	int64_t pause;
	int rc;

	if (with_info && j->patch.len == 0)
		info_batch_take(&j->info, &j->patch);
	patch = with_info && j->patch.len > 0 ? j->patch.data : NULL;
	rc = inferq_claim_heartbeat(j->client, j->claim, patch);
	if (rc == 0) {
		if (patch) {
			buf_reset(&j->patch);
			j->last_info_ms = now;
		}
		j->heartbeat_failures = 0;
		j->next_heartbeat_ms = now + j->cfg->heartbeat_ms;
		return;
	}
	if (patch && (rc == INFERQ_EINVAL || rc == INFERQ_ELIMIT)) {
		worker_log(LOG_WARN,
		           "the server rejected an info update, dropped: %s request_id=%s",
		           inferq_client_last_error(j->client), j->id);
		buf_reset(&j->patch);
		j->last_info_ms = now;
		j->next_heartbeat_ms = now; /* the rejected call did not extend the lease */
		return;
	}
	if (rc == INFERQ_ECONFLICT || rc == INFERQ_ENOTFOUND) {
		worker_log(LOG_WARN, "lost the claim, stopping the command: %s request_id=%s",
		           inferq_client_last_error(j->client), j->id);
		j->lost_claim = 1;
		terminate(j, now);
		j->next_heartbeat_ms = INT64_MAX;
		return;
	}

	/* The server may be restarting: retry after 1 s, doubling up to the interval. */
	pause = (int64_t)1000 << (j->heartbeat_failures < 6 ? j->heartbeat_failures : 6);
	if (pause > j->cfg->heartbeat_ms)
		pause = j->cfg->heartbeat_ms;
	j->heartbeat_failures++;
	worker_log(LOG_WARN, "heartbeat failed: %s; retrying in %.1f s request_id=%s",
	           inferq_client_last_error(j->client), (double)pause / 1000, j->id);
	j->next_heartbeat_ms = now + pause;
	if (patch)
		j->last_info_ms = now; /* the patch is kept and goes with the next heartbeat */
}

static int info_due(const job_t *j, int64_t now)
{
	if (j->lost_claim || j->shutdown_kill)
		return 0;
	if (j->patch.len == 0 && j->info.pending.len == 0)
		return 0;
	return now >= j->last_info_ms + INFO_INTERVAL_MS;
}

static void run_timers(job_t *j, int64_t now)
{
	const worker_config_t *cfg = j->cfg;

	if (!j->lost_claim && !j->shutdown_kill &&
	    (now >= j->next_heartbeat_ms || info_due(j, now)))
		heartbeat(j, now, info_due(j, now));

	if (cfg->timeout_s > 0 && !j->timed_out && now >= j->timeout_at_ms) {
		j->timed_out = 1;
		worker_log(LOG_WARN,
		           "the command ran longer than --timeout %g s, sending SIGTERM "
		           "request_id=%s",
		           cfg->timeout_s, j->id);
		terminate(j, now);
	}
	if (j->term_sent && !j->kill_sent && now >= j->kill_at_ms) {
		worker_log(LOG_WARN,
		           "the command did not exit within %d s of SIGTERM, sending "
		           "SIGKILL request_id=%s",
		           KILL_GRACE_MS / 1000, j->id);
		signal_group(j, SIGKILL);
		j->kill_sent = 1;
	}
}

/* Returns the poll timeout in ms until the next timer of the job. */
static int next_timeout(const job_t *j, int64_t now)
{
	int64_t next = INT64_MAX;

	if (!j->lost_claim && !j->shutdown_kill) {
		next = j->next_heartbeat_ms;
		if (j->patch.len > 0 || j->info.pending.len > 0)
			next = next < j->last_info_ms + INFO_INTERVAL_MS
			           ? next
			           : j->last_info_ms + INFO_INTERVAL_MS;
	}
	if (j->cfg->timeout_s > 0 && !j->timed_out && j->timeout_at_ms < next)
		next = j->timeout_at_ms;
	if (j->term_sent && !j->kill_sent && j->kill_at_ms < next)
		next = j->kill_at_ms;
	if (j->pidfd < 0 && now + NO_PIDFD_POLL_MS < next)
		next = now + NO_PIDFD_POLL_MS;
	if (next == INT64_MAX)
		return -1;
	return next <= now ? 0 : (int)(next - now < 60000 ? next - now : 60000);
}

/* Runs the poll loop until CMD has exited, then reads what its pipes still hold. */
static void supervise(job_t *j)
{
	while (!j->exited) {
		struct pollfd pfd[6];
		int *fds[6];
		int n = 0;
		int64_t now = clock_mono_ms();

		if (j->in_fd >= 0) {
			pfd[n] = (struct pollfd){.fd = j->in_fd, .events = POLLOUT};
			fds[n++] = &j->in_fd;
		}
		if (j->out_fd >= 0) {
			pfd[n] = (struct pollfd){.fd = j->out_fd, .events = POLLIN};
			fds[n++] = &j->out_fd;
		}
		if (j->err_fd >= 0) {
			pfd[n] = (struct pollfd){.fd = j->err_fd, .events = POLLIN};
			fds[n++] = &j->err_fd;
		}
		if (j->info_fd >= 0 && !j->info.stalled) {
			pfd[n] = (struct pollfd){.fd = j->info_fd, .events = POLLIN};
			fds[n++] = &j->info_fd;
		}
		if (j->pidfd >= 0) {
			pfd[n] = (struct pollfd){.fd = j->pidfd, .events = POLLIN};
			fds[n++] = &j->pidfd;
		}
		if (j->watch_kill) {
			pfd[n] = (struct pollfd){.fd = j->w->kill_pipe[0], .events = POLLIN};
			fds[n++] = NULL;
		}

		if (poll(pfd, (nfds_t)n, next_timeout(j, now)) < 0 && errno != EINTR) {
			worker_log(LOG_ERROR, "poll failed: %s request_id=%s", strerror(errno),
			           j->id);
			sleep_ms(10);
		}
		for (int i = 0; i < n; i++) {
			if (!pfd[i].revents)
				continue;
			if (!fds[i])
				check_kill_pipe(j);
			else if (fds[i] == &j->in_fd)
				write_payload(j);
			else if (fds[i] != &j->pidfd)
				read_pipe(j, fds[i]);
		}
		reap(j);
		if (!j->exited)
			run_timers(j, clock_mono_ms());
	}
	close_fd(&j->in_fd);
	drain_pipes(j);
}

/* --- Reporting the result ------------------------------------------------ */

typedef enum { REPORT_COMPLETE, REPORT_FAIL, REPORT_RELEASE } report_kind_t;

static const char *const report_calls[] = {"complete", "fail", "release"};
static const char *const report_states[] = {"done", "failed", "pending"};

static int is_transient(int rc)
{
	return rc == INFERQ_ECONNECT || rc == INFERQ_ETIMEDOUT || rc == INFERQ_EBUSY ||
	       rc == INFERQ_EIO || rc == INFERQ_EPROTO || rc == INFERQ_ENOMEM;
}

/* Returns 1 when the last response is a 409 whose "status" is state. */
static int conflict_shows_state(job_t *j, const char *state)
{
	const char *body = inferq_client_last_response(j->client);
	json_span_t root, value;

	return json_validate(body, strlen(body), OUTPUTS_MAX_DEPTH, &root, NULL) == 0 &&
	       root.type == JSON_TYPE_OBJECT && json_object_find(root, "status", &value) &&
	       value.type == JSON_TYPE_STRING && json_string_equals(value, state);
}

static void log_reported(job_t *j, report_kind_t kind, const char *text, const char *note)
{
	double seconds = (double)(clock_mono_ms() - j->started_ms) / 1000;
	char quoted[240];

	if (kind == REPORT_COMPLETE) {
		worker_log(LOG_INFO, "completed request_id=%s seconds=%.1f%s", j->id, seconds,
		           note);
	} else if (kind == REPORT_FAIL) {
		log_quote(text, strcspn(text, "\n"), quoted, sizeof(quoted));
		worker_log(LOG_INFO, "failed request_id=%s seconds=%.1f error=%s%s", j->id, seconds,
		           quoted, note);
	} else {
		worker_log(LOG_INFO, "released request_id=%s: the worker is shutting down%s", j->id,
		           note);
	}
}

static int call_server(job_t *j, report_kind_t kind, const char *text)
{
	if (kind == REPORT_COMPLETE)
		return inferq_claim_complete(j->client, j->claim, text);
	if (kind == REPORT_FAIL)
		return inferq_claim_fail(j->client, j->claim, text);
	return inferq_claim_release(j->client, j->claim);
}

/*
 * Sends complete, fail or release until the server replies, with pauses
 * from 1 s doubling to 30 s, for at most limit_ms. After a lost response a
 * 409 that shows the requested state counts as success. Returns 0 when the
 * server took the report or replied that another claim owns the job.
 * Returns INFERQ_EINVAL or INFERQ_ELIMIT when it rejected the outputs, and
 * INFERQ_EIO when the report could not be delivered.
 */
static int report(job_t *j, report_kind_t kind, const char *text, int64_t limit_ms)
{
	const char *call = report_calls[kind];
	int64_t deadline = clock_mono_ms() + limit_ms;
	int64_t pause = 1000;
	int may_have_landed = 0;

	for (;;) {
		int rc = call_server(j, kind, text);

		if (rc == 0) {
			log_reported(j, kind, text, "");
			return 0;
		}
		if (rc == INFERQ_ECONFLICT && may_have_landed &&
		    conflict_shows_state(j, report_states[kind])) {
			log_reported(j, kind, text, " (an earlier attempt had reached the server)");
			return 0;
		}
		if (rc == INFERQ_ECONFLICT || rc == INFERQ_ENOTFOUND) {
			worker_log(LOG_WARN,
			           "%s rejected, the job belongs to another claim now or no "
			           "longer exists: %s request_id=%s",
			           call, inferq_client_last_error(j->client), j->id);
			return 0;
		}
		if (kind == REPORT_COMPLETE && (rc == INFERQ_EINVAL || rc == INFERQ_ELIMIT))
			return rc;
		if (!is_transient(rc)) {
			worker_log(LOG_ERROR, "%s failed: %s request_id=%s", call,
			           inferq_client_last_error(j->client), j->id);
			return INFERQ_EIO;
		}
		may_have_landed = 1;
		if (clock_mono_ms() + pause > deadline) {
			worker_log(LOG_ERROR,
			           "%s failed for %lld s, giving up: %s; the job runs again "
			           "once its lease expires request_id=%s",
			           call, (long long)(limit_ms / 1000),
			           inferq_client_last_error(j->client), j->id);
			return INFERQ_EIO;
		}
		worker_log(LOG_WARN, "%s failed: %s; retrying in %lld s request_id=%s", call,
		           inferq_client_last_error(j->client), (long long)(pause / 1000), j->id);
		sleep_ms(pause);
		pause = pause * 2 > REPORT_PAUSE_MAX_MS ? REPORT_PAUSE_MAX_MS : pause * 2;
	}
}

/* Sends the info patches still pending when CMD ended, each with one call. */
static void send_last_info(job_t *j)
{
	while (j->patch.len > 0 || info_batch_take(&j->info, &j->patch)) {
		int rc = inferq_claim_heartbeat(j->client, j->claim, j->patch.data);

		if (rc != 0)
			worker_log(LOG_WARN, "the last info update was not sent: %s request_id=%s",
			           inferq_client_last_error(j->client), j->id);
		buf_reset(&j->patch);
		if (rc == INFERQ_ECONFLICT || rc == INFERQ_ENOTFOUND || is_transient(rc))
			break;
	}
}

static void describe_exit(const job_t *j, buf_t *msg)
{
	int st = j->status;

	if (WIFEXITED(st)) {
		buf_printf(msg, "exit status %d", WEXITSTATUS(st));
		return;
	}
	if (sigabbrev_np(WTERMSIG(st)))
		buf_printf(msg, "signal SIG%s", sigabbrev_np(WTERMSIG(st)));
	else
		buf_printf(msg, "signal %d", WTERMSIG(st));
	if (WCOREDUMP(st))
		buf_puts(msg, " (core dumped)");
}

static void append_stderr_tail(const job_t *j, buf_t *msg)
{
	size_t start = 0;

	if (j->tail_len == 0)
		return;
	/* A cut tail may begin inside a UTF-8 sequence: skip its continuation bytes. */
	while (j->tail_cut && start < j->tail_len && ((unsigned char)j->tail[start] & 0xC0) == 0x80)
		start++;
	buf_puts(msg, j->tail_cut ? "\nstderr (last 4 KiB):\n" : "\nstderr:\n");
	worker_append_utf8(msg, j->tail + start, j->tail_len - start);
}

/*
 * Writes why the job failed into msg, or leaves msg empty and stores the
 * outputs in *outputs when CMD succeeded.
 */
static void judge(job_t *j, buf_t *msg, buf_t *outputs)
{
	json_scan_error_t err;
	json_span_t root;
	char quoted[240];

	if (j->exec_errno) {
		buf_printf(msg, "cannot run %s: %s", j->cfg->command_path, strerror(j->exec_errno));
		return;
	}
	if (j->timed_out) {
		buf_printf(msg, "the command timed out after %g s (--timeout) and ended with ",
		           j->cfg->timeout_s);
		describe_exit(j, msg);
	} else if (WIFSIGNALED(j->status)) {
		buf_puts(msg, "the command was killed by ");
		describe_exit(j, msg);
	} else if (WEXITSTATUS(j->status) != 0) {
		buf_puts(msg, "the command failed with ");
		describe_exit(j, msg);
	} else if (j->out_overflow) {
		buf_printf(msg,
		           "the command wrote more than %d MiB to stdout; print only the "
		           "outputs object there",
		           STDOUT_MAX >> 20);
	} else if (j->out.len == 0) {
		buf_puts(msg,
		         "the command exited with status 0 but printed nothing on stdout; print "
		         "the outputs as one JSON object");
	} else if (json_validate(j->out.data, j->out.len, OUTPUTS_MAX_DEPTH, &root, &err) != 0) {
		log_quote(j->out.data, j->out.len, quoted, sizeof(quoted));
		buf_printf(msg,
		           "the command exited with status 0 but its stdout is not one JSON "
		           "object (%s): %s",
		           err.message, quoted);
	} else if (root.type != JSON_TYPE_OBJECT) {
		log_quote(j->out.data, j->out.len, quoted, sizeof(quoted));
		buf_printf(msg,
		           "the command exited with status 0 but its stdout is not one JSON "
		           "object (it is another JSON value): %s",
		           quoted);
	} else {
		buf_append(outputs, root.start, root.len);
		return;
	}
	append_stderr_tail(j, msg);
}

/* Reports the end of the job to the server. Returns 0 or INFERQ_EIO. */
static int finish(job_t *j)
{
	buf_t msg = BUF_INIT, outputs = BUF_INIT;
	int rc = 0;

	if (j->lost_claim) {
		worker_log(LOG_INFO,
		           "dropped the result: the job belongs to another claim now "
		           "request_id=%s",
		           j->id);
		return 0;
	}
	if (j->shutdown_kill)
		return report(j, REPORT_RELEASE, NULL, RELEASE_DEADLINE_MS) == 0 ? 0 : INFERQ_EIO;

	send_last_info(j);
	judge(j, &msg, &outputs);
	if (msg.len == 0) {
		rc = report(j, REPORT_COMPLETE, outputs.data, REPORT_DEADLINE_MS);
		if (rc == INFERQ_EINVAL || rc == INFERQ_ELIMIT)
			buf_printf(&msg, "the server rejected the outputs: %s",
			           inferq_client_last_error(j->client));
	}
	if (msg.len > 0)
		rc = report(j, REPORT_FAIL, msg.data, REPORT_DEADLINE_MS);
	buf_free(&msg);
	buf_free(&outputs);
	return rc == 0 ? 0 : INFERQ_EIO;
}

/* --- The job thread's entry ----------------------------------------------- */

static void job_init(job_t *j, worker_t *w, inferq_claim_t *claim)
{
	int64_t now = clock_mono_ms();

	memset(j, 0, sizeof(*j));
	j->w = w;
	j->cfg = w->config;
	j->claim = claim;
	j->id = inferq_claim_request_id(claim);
	j->pid = -1;
	j->pidfd = j->in_fd = j->out_fd = j->err_fd = j->info_fd = -1;
	j->watch_kill = 1;
	buf_init(&j->out);
	buf_init(&j->err_line);
	buf_init(&j->patch);
	info_batch_init(&j->info, j->id);
	j->started_ms = now;
	j->next_heartbeat_ms = now + j->cfg->heartbeat_ms;
	j->last_info_ms = now - INFO_INTERVAL_MS;
	j->timeout_at_ms = now + (int64_t)(j->cfg->timeout_s * 1000);
}

int worker_job_run(worker_t *w, inferq_claim_t *claim)
{
	job_t j;
	int rc = INFERQ_EIO;

	job_init(&j, w, claim);
	if (cli_client_new(&j.cfg->cli, &j.client) != 0) {
		worker_log(LOG_ERROR,
		           "cannot create a client for the job; its lease will expire "
		           "request_id=%s",
		           j.id);
		goto out;
	}
	if (spawn(&j) != 0) {
		/* Another worker may have the resources this one lacks. */
		rc = report(&j, REPORT_RELEASE, NULL, RELEASE_DEADLINE_MS) == 0 ? 0 : INFERQ_EIO;
		goto out;
	}
	worker_log(LOG_DEBUG, "started the command pid=%d request_id=%s", (int)j.pid, j.id);
	supervise(&j);
	rc = finish(&j);
out:
	close_fd(&j.pidfd);
	close_fd(&j.in_fd);
	close_fd(&j.out_fd);
	close_fd(&j.err_fd);
	close_fd(&j.info_fd);
	buf_free(&j.out);
	buf_free(&j.err_line);
	buf_free(&j.patch);
	info_batch_destroy(&j.info);
	inferq_client_free(j.client);
	inferq_claim_free(claim);
	return rc;
}
