/*
 * `inferq serve`: binds its address, opens the store, rebuilds the in-memory
 * queue from it, and runs the loop until SIGINT or SIGTERM. A stop is
 * graceful: no new connections, 204 for long-poll waiters, a response after
 * its commit for every request already received, then a clean store close.
 * A second signal during the stop exits at once; nothing acknowledged is
 * lost by that, because acknowledged changes are already committed.
 *
 * SPDX-License-Identifier: MIT
 */
#include <pthread.h>
#include <signal.h>
#include <sys/resource.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "auth.h"
#include "clock.h"
#include "inferq_error.h"
#include "log.h"
#include "observe.h"
#include "pgq.h"
#include "routes.h"
#include "server.h"
#include "status_cache.h"
#include "storage.h"
#include "tls.h"

int serve_main(int argc, char **argv);

/* Files kept for the store, the log, listeners and libuv, beside connections. */
#define RESERVED_FILES 64
/* Soft limit taken when the hard limit is unlimited. */
#define MAX_OPEN_FILES 1048576

typedef struct {
	server_t *server;
	queue_time_t now;
	uint64_t jobs;
} load_ctx_t;

static int load_job(void *ctx, job_record_t *rec)
{
	load_ctx_t *lc = ctx;
	server_t *s = lc->server;
	queue_model_t *m = queue_model_get(s->queue, rec->model->data, rec->model->len, 1);
	model_state_t *ms = server_model_state(m);
	job_t *job = queue_job_new();

	job->rec = *rec;
	rbuf_unref(job->rec.model);
	job->rec.model = rbuf_ref(m->name);
	queue_add(s->queue, job, lc->now);
	ms->committed[job->rec.state]++;
	if (job->rec.state == JOB_RUNNING)
		workers_restore_running(s->workers, &job->rec);
	lc->jobs++;
	return 0;
}

static int load_queue(server_t *s)
{
	load_ctx_t lc = {s, server_now(), 0};
	uint64_t max_seq = 0;
	int64_t started = clock_mono_ms();
	int rc;

	rc = store_load(s->store, load_job, &lc, &max_seq);
	if (rc != 0) {
		log_error("store", "could not load the jobs from %s/inferq.db: %s",
			  s->config.data_dir, inferq_strerror(rc));
		return rc;
	}
	s->next_seq = max_seq + 1;
	/* On the postgres store the jobs live in the database, and the local file contains none. */
	if (!pgq_is_postgres(s->config.store))
		log_info("store", "loaded %llu pending and running jobs in %lld ms",
			 (unsigned long long)lc.jobs, (long long)(clock_mono_ms() - started));
	return 0;
}

static void free_model_state(queue_model_t *m, void *ctx)
{
	free(m->user);
	m->user = NULL;
}

/* Frees what serve_main makes before the store opens, on every failed start. */
static void free_start_state(server_t *s)
{
	queue_model_each(s->queue, free_model_state, NULL);
	queue_free(s->queue);
	idempotency_free(s->idempotency);
	workers_free(s->workers);
	observe_free(s);
	tls_context_free(s->tls);
}

static void on_drain_timer(uv_timer_t *timer)
{
	server_t *s = timer->data;

	if (engine_busy(s))
		return;
	uv_timer_stop(timer);
	uv_close((uv_handle_t *)timer, NULL);
	store_close(s->store);
	s->store = NULL;
	engine_close(s);
	uv_close((uv_handle_t *)&s->sigint, NULL);
	uv_close((uv_handle_t *)&s->sigterm, NULL);
	uv_close((uv_handle_t *)&s->sighup, NULL);
}

static uv_timer_t drain_timer;

/* Every connection is closed: commit what is left, then close the store. */
static void on_http_closed(void *ctx)
{
	server_t *s = ctx;

	if (--s->listeners_open > 0)
		return;
	s->http = NULL;
	s->https = NULL;
	pgq_close(s);
	auth_flush_last_used(s);
	uv_timer_stop(&s->lease_timer);
	uv_timer_stop(&s->retention_timer);
	uv_timer_init(s->loop, &drain_timer);
	drain_timer.data = s;
	uv_timer_start(&drain_timer, on_drain_timer, 0, 5);
}

/*
 * Stops accepting and closes the listeners. The loop ends once every open
 * request has its response.
 */
static void begin_stop(server_t *s)
{
	s->stopping = 1;
	claim_flush_waiters(s);
	pgq_flush_waiters(s);
	observe_close_listener(s);
	http_server_close(s->http, on_http_closed, s);
	if (s->https)
		http_server_close(s->https, on_http_closed, s);
}

static void on_signal(uv_signal_t *handle, int signum)
{
	server_t *s = handle->data;

	if (s->stopping) {
		log_warn("server", "second SIG%s during the stop, exiting now", sigabbrev_np(signum));
		exit(1);
	}
	log_info("server", "SIG%s received, stopping: finishing open requests",
		 sigabbrev_np(signum));
	begin_stop(s);
}

/* Logs the loaded certificate, with a warning when it has expired. */
static void log_certificate(const server_t *s, const char *event)
{
	char about[512];

	if (tls_context_describe(s->tls, about, sizeof(about)))
		log_warn("server",
			 "%s the TLS certificate from %s, which has expired: %s; clients will reject "
			 "it: renew it, then send SIGHUP",
			 event, s->config.tls_cert, about);
	else
		log_info("server", "%s the TLS certificate from %s: %s", event, s->config.tls_cert,
			 about);
}

/* Rereads the certificate and key; new connections use them, open ones keep theirs. */
static void on_sighup(uv_signal_t *handle, int signum)
{
	server_t *s = handle->data;
	char err[768];

	if (!s->tls) {
		log_info("server", "SIGHUP received: no --tls-cert is set, nothing to reload");
		return;
	}
	if (tls_context_reload(s->tls, err, sizeof(err)) != 0) {
		log_warn("server", "SIGHUP received, but the TLS certificate was not reloaded: %s; "
				   "still serving the previous certificate",
			 err);
		return;
	}
	log_certificate(s, "SIGHUP received: loaded");
}

/* Loads --tls-cert and --tls-key, when they are set. */
static int load_tls(server_t *s)
{
	char err[768];

	if (!s->config.tls_cert[0])
		return 0;
	if (tls_context_new(s->config.tls_cert, s->config.tls_key, &s->tls, err, sizeof(err)) !=
	    0) {
		log_error("server", "cannot start TLS: %s", err);
		return INFERQ_EINVAL;
	}
	log_certificate(s, "loaded");
	return 0;
}

/*
 * Raises the open-file soft limit to the hard limit, and returns how many
 * connections fit under it. Past the limit libuv closes new connections
 * without telling the server, so --max-connections, which logs, must stay
 * below it.
 */
static uint32_t fit_connections_to_file_limit(uint32_t wanted)
{
	struct rlimit rl;
	rlim_t target, usable;

	if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
		return wanted;
	target = rl.rlim_max == RLIM_INFINITY ? MAX_OPEN_FILES : rl.rlim_max;
	if (rl.rlim_cur < target) {
		rlim_t old = rl.rlim_cur;

		rl.rlim_cur = target;
		if (setrlimit(RLIMIT_NOFILE, &rl) == 0)
			log_info("server", "raised the open-file limit from %llu to %llu",
				 (unsigned long long)old, (unsigned long long)target);
		else
			getrlimit(RLIMIT_NOFILE, &rl);
	}
	usable = rl.rlim_cur > RESERVED_FILES ? rl.rlim_cur - RESERVED_FILES : 1;
	if (wanted <= usable)
		return wanted;
	log_warn("server",
		 "--max-connections %u does not fit the open-file limit of %llu; accepting at "
		 "most %llu connections: raise the limit (ulimit -n, LimitNOFILE= in systemd)",
		 wanted, (unsigned long long)rl.rlim_cur, (unsigned long long)usable);
	return (uint32_t)usable;
}

/* Closes the listeners of a start that failed later, before anything was served. */
static void stop_listening(server_t *s)
{
	observe_close_listener(s);
	http_server_close(s->http, NULL, NULL);
	if (s->https)
		http_server_close(s->https, NULL, NULL);
	s->http = NULL;
	s->https = NULL;
	s->listeners_open = 0;
	uv_run(s->loop, UV_RUN_DEFAULT);
}

static int listen_on(server_t *s, const char *addr, const char *flag, const http_limits_t *limits,
		     int https, http_server_t **out)
{
	char err[256];

	if (http_server_start(s->loop, addr, limits, routes_dispatch, s, out, err, sizeof(err)) !=
	    0) {
		log_error("server", "cannot listen on %s: %s; choose another address or port with %s",
			  addr, err, flag);
		return INFERQ_EIO;
	}
	if (https)
		http_server_use_tls(*out, s->tls);
	s->listeners_open++;
	return 0;
}

static int start_listening(server_t *s)
{
	http_limits_t limits = {
		.max_header_bytes = s->config.max_header_bytes,
		.max_body_bytes = s->config.max_body_bytes,
		.idle_timeout_ms = (uint64_t)s->config.idle_timeout_ms,
		.request_timeout_ms = (uint64_t)s->config.request_timeout_ms,
		.max_connections = fit_connections_to_file_limit(s->config.max_connections),
		.max_pipelined = 64,
		.max_requests_per_pass = s->config.max_requests_per_pass,
		.body_limit = storage_body_limit,
		.observer = observe_http,
		.tls_handshake_timeout_ms = (uint64_t)s->config.tls_handshake_timeout_ms,
		.accept_later = 1, /* start_accepting(), once the store is loaded */
	};
	int https_on_listen = s->tls && !s->config.tls_listen[0];

	if (listen_on(s, s->config.listen, "--listen", &limits, https_on_listen, &s->http) != 0)
		return INFERQ_EIO;
	if (s->config.tls_listen[0] &&
	    listen_on(s, s->config.tls_listen, "--tls-listen", &limits, 1, &s->https) != 0) {
		stop_listening(s);
		return INFERQ_EIO;
	}
	if (observe_listen(s, &limits) != 0) {
		stop_listening(s);
		return INFERQ_EIO;
	}
	return 0;
}

/*
 * Logs the bound address and scheme of one listener, once the server is
 * ready: tests and scripts wait for "listening on HOST:PORT".
 */
static void log_listening(const char *addr, const http_server_t *http, int https)
{
	char host[256];
	char *colon;

	snprintf(host, sizeof(host), "%s", addr);
	colon = strrchr(host, ':');
	if (colon)
		*colon = '\0';
	log_info("server", "listening on %s:%d (%s)", host, http_server_port(http),
		 https ? "https" : "http");
}

/*
 * Starts accepting on every listener. The sockets are bound and listening
 * from the start, but no connection is served before the store is loaded,
 * the engine runs and the signal handlers are set.
 */
static int start_accepting(server_t *s)
{
	char err[256];

	if (http_server_accept(s->http, err, sizeof(err)) != 0 ||
	    (s->https && http_server_accept(s->https, err, sizeof(err)) != 0) ||
	    observe_accept(s, err, sizeof(err)) != 0) {
		log_error("server", "cannot accept connections: %s; stopping", err);
		return INFERQ_EIO;
	}
	return 0;
}

/*
 * Opens the output file storage. Its default public URL names the HTTPS
 * listener when there is one, since Sprocket workers speak only HTTPS. On
 * the postgres store (pg_start set) it signs with the cluster's secret.
 */
static int open_storage(server_t *s, const pgq_start_t *pg_start)
{
	const uint8_t *secret = pgq_start_storage_secret(pg_start);

	if (s->https)
		return storage_open(s, "https", s->config.tls_listen, http_server_port(s->https),
				    secret);
	return storage_open(s, s->tls ? "https" : "http", s->config.listen,
			    http_server_port(s->http), secret);
}

static void log_config(const serve_config_t *c)
{
	log_info("server",
		 "config: data_dir=%s claim_timeout=%us max_retries=%u retention=%llds "
		 "max_body_bytes=%zu max_header_bytes=%zu max_info_bytes=%zu "
		 "idempotency_ttl=%llds max_model_length=%zu max_json_depth=%d request_timeout=%lldms "
		 "idle_timeout=%lldms max_connections=%u log_format=%s access_log=%s "
		 "metrics_listen=%s metrics_max_models=%u status_cache_bytes=%zu "
		 "max_requests_per_pass=%u store=%s pg_pool=%u",
		 c->data_dir, c->claim_timeout, c->max_retries, (long long)(c->retention_ms / 1000),
		 c->max_body_bytes, c->max_header_bytes, c->max_info_bytes,
		 (long long)(c->idempotency_ttl_ms / 1000), c->max_model_length,
		 c->max_json_depth, (long long)c->request_timeout_ms,
		 (long long)c->idle_timeout_ms, c->max_connections,
		 c->log_format == LOG_FORMAT_JSON ? "json" : "text", c->access_log ? "on" : "off",
		 c->metrics_listen[0] ? c->metrics_listen : "none", c->metrics_max_models,
		 c->status_cache_bytes, c->max_requests_per_pass,
		 pgq_is_postgres(c->store) ? "postgres" : "local", c->pg_pool);
}

int serve_main(int argc, char **argv)
{
	static server_t server;
	server_t *s = &server;
	queue_config_t qc;
	store_config_t sc;
	pgq_start_t *pg_start = NULL;
	sigset_t start_signals;
	char err[512];
	int rc;

	config_defaults(&s->config);
	rc = config_parse(&s->config, argc, argv);
	if (rc != 0)
		return rc > 0 ? 0 : 2;
	log_set_level(s->config.log_level);
	log_set_format(s->config.log_format);
	signal(SIGPIPE, SIG_IGN);
	/*
	 * Until the handlers are set, SIGTERM and SIGHUP would kill the process
	 * by their default action. Held pending, each takes effect once the start
	 * is over. SIGINT (Ctrl-C at a terminal) still ends a start at once.
	 */
	sigemptyset(&start_signals);
	sigaddset(&start_signals, SIGTERM);
	sigaddset(&start_signals, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &start_signals, NULL);
	log_info("server", "inferq %s starting", INFERQ_VERSION);
	log_config(&s->config);

	s->loop = uv_default_loop();
	qc.max_retries = s->config.max_retries;
	qc.max_info_bytes = s->config.max_info_bytes;
	qc.max_depth = s->config.max_json_depth;
	s->queue = queue_new(&qc);
	s->idempotency = idempotency_new();
	s->workers = workers_new(s->config.max_workers_tracked, s->config.worker_forget_ms);
	observe_open(s);

	/* Bind first, so a bad --listen, a busy port or a bad certificate fails before the
	 * data dir is touched. */
	if (load_tls(s) != 0 || start_listening(s) != 0) {
		free_start_state(s);
		return 1;
	}
	sc.loop = s->loop;
	sc.data_dir = s->config.data_dir;
	if (store_open(&sc, &s->store, err, sizeof(err)) != 0) {
		log_error("store", "cannot open the store: %s", err);
		stop_listening(s);
		free_start_state(s);
		return 1;
	}
	if (load_queue(s) != 0 ||
	    (pgq_is_postgres(s->config.store) && pgq_prepare(s, &pg_start) != 0) ||
	    auth_open(s) != 0 || open_storage(s, pg_start) != 0) {
		pgq_start_abort(pg_start);
		store_close(s->store);
		stop_listening(s);
		auth_close(s);
		free_start_state(s);
		return 1;
	}
	observe_load_finished(s);
	s->status_cache = status_cache_new(s->config.status_cache_bytes);
	engine_init(s);
	if (pg_start && pgq_open(s, pg_start) != 0) {
		status_cache_free(s->status_cache);
		engine_close(s);
		store_close(s->store);
		stop_listening(s);
		auth_close(s);
		storage_close(s);
		free_start_state(s);
		return 1;
	}

	uv_signal_init(s->loop, &s->sigint);
	uv_signal_init(s->loop, &s->sigterm);
	s->sigint.data = s->sigterm.data = s;
	uv_signal_start(&s->sigint, on_signal, SIGINT);
	uv_signal_start(&s->sigterm, on_signal, SIGTERM);
	uv_signal_init(s->loop, &s->sighup);
	s->sighup.data = s;
	uv_signal_start(&s->sighup, on_sighup, SIGHUP);
	pthread_sigmask(SIG_UNBLOCK, &start_signals, NULL);
	if (start_accepting(s) != 0) {
		s->exit_code = 1;
		begin_stop(s);
	} else {
		log_listening(s->config.listen, s->http, s->tls && !s->https);
		if (s->https)
			log_listening(s->config.tls_listen, s->https, 1);
	}

	uv_run(s->loop, UV_RUN_DEFAULT);

	queue_model_each(s->queue, free_model_state, NULL);
	queue_free(s->queue);
	idempotency_free(s->idempotency);
	workers_free(s->workers);
	auth_close(s);
	storage_close(s);
	status_cache_free(s->status_cache);
	observe_free(s);
	tls_context_free(s->tls);
	uv_loop_close(s->loop);
	log_info("server", "stopped");
	return s->exit_code;
}
