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
#include "storage.h"

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
	log_info("store", "loaded %llu pending and running jobs in %lld ms",
		 (unsigned long long)lc.jobs, (long long)(clock_mono_ms() - started));
	return 0;
}

static void free_model_state(queue_model_t *m, void *ctx)
{
	free(m->user);
	m->user = NULL;
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
}

static uv_timer_t drain_timer;

/* Every connection is closed: commit what is left, then close the store. */
static void on_http_closed(void *ctx)
{
	server_t *s = ctx;

	s->http = NULL;
	pgq_close(s);
	auth_flush_last_used(s);
	uv_timer_stop(&s->lease_timer);
	uv_timer_stop(&s->retention_timer);
	uv_timer_init(s->loop, &drain_timer);
	drain_timer.data = s;
	uv_timer_start(&drain_timer, on_drain_timer, 0, 5);
}

static void on_signal(uv_signal_t *handle, int signum)
{
	server_t *s = handle->data;

	if (s->stopping) {
		log_warn("server", "second %s during the stop, exiting now", strsignal(signum));
		exit(1);
	}
	s->stopping = 1;
	log_info("server", "%s received, stopping: finishing open requests", strsignal(signum));
	claim_flush_waiters(s);
	pgq_flush_waiters(s);
	observe_close_listener(s);
	http_server_close(s->http, on_http_closed, s);
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

static void stop_listening(server_t *s);

static int start_listening(server_t *s)
{
	http_limits_t limits = {
		.max_header_bytes = s->config.max_header_bytes,
		.max_body_bytes = s->config.max_body_bytes,
		.idle_timeout_ms = (uint64_t)s->config.idle_timeout_ms,
		.request_timeout_ms = (uint64_t)s->config.request_timeout_ms,
		.max_connections = fit_connections_to_file_limit(s->config.max_connections),
		.max_pipelined = 64,
		.body_limit = storage_body_limit,
		.observer = observe_http,
	};
	char err[256];

	if (http_server_start(s->loop, s->config.listen, &limits, routes_dispatch, s, &s->http,
			      err, sizeof(err)) != 0) {
		log_error("server", "cannot listen on %s: %s; choose another address or port with "
				    "--listen",
			  s->config.listen, err);
		return INFERQ_EIO;
	}
	if (observe_listen(s, &limits) != 0) {
		stop_listening(s);
		return INFERQ_EIO;
	}
	return 0;
}

/* Logs the bound address, once the server is ready: tests and scripts wait for this line. */
static void log_listening(const server_t *s)
{
	char host[256];
	char *colon;

	snprintf(host, sizeof(host), "%s", s->config.listen);
	colon = strrchr(host, ':');
	if (colon)
		*colon = '\0';
	log_info("server", "listening on %s:%d", host, http_server_port(s->http));
}

/* Closes the listener of a start that failed later, before anything was served. */
static void stop_listening(server_t *s)
{
	observe_close_listener(s);
	http_server_close(s->http, NULL, NULL);
	s->http = NULL;
	uv_run(s->loop, UV_RUN_DEFAULT);
}

static void log_config(const serve_config_t *c)
{
	log_info("server",
		 "config: data_dir=%s claim_timeout=%us max_retries=%u retention=%llds "
		 "max_body_bytes=%zu max_header_bytes=%zu max_info_bytes=%zu "
		 "idempotency_ttl=%llds max_model_length=%zu max_json_depth=%d request_timeout=%lldms "
		 "idle_timeout=%lldms max_connections=%u log_format=%s access_log=%s "
		 "metrics_listen=%s metrics_max_models=%u store=%s pg_pool=%u",
		 c->data_dir, c->claim_timeout, c->max_retries, (long long)(c->retention_ms / 1000),
		 c->max_body_bytes, c->max_header_bytes, c->max_info_bytes,
		 (long long)(c->idempotency_ttl_ms / 1000), c->max_model_length,
		 c->max_json_depth, (long long)c->request_timeout_ms,
		 (long long)c->idle_timeout_ms, c->max_connections,
		 c->log_format == LOG_FORMAT_JSON ? "json" : "text", c->access_log ? "on" : "off",
		 c->metrics_listen[0] ? c->metrics_listen : "none", c->metrics_max_models,
		 pgq_is_postgres(c->store) ? "postgres" : "local", c->pg_pool);
}

int serve_main(int argc, char **argv)
{
	static server_t server;
	server_t *s = &server;
	queue_config_t qc;
	store_config_t sc;
	pgq_start_t *pg_start = NULL;
	char err[512];
	int rc;

	config_defaults(&s->config);
	rc = config_parse(&s->config, argc, argv);
	if (rc != 0)
		return rc > 0 ? 0 : 2;
	log_set_level(s->config.log_level);
	log_set_format(s->config.log_format);
	signal(SIGPIPE, SIG_IGN);
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

	/* Bind first, so a bad --listen or a busy port fails before the data dir is touched. */
	if (start_listening(s) != 0) {
		queue_free(s->queue);
		idempotency_free(s->idempotency);
		workers_free(s->workers);
		observe_free(s);
		return 1;
	}
	sc.loop = s->loop;
	sc.data_dir = s->config.data_dir;
	if (store_open(&sc, &s->store, err, sizeof(err)) != 0) {
		log_error("store", "cannot open the store: %s", err);
		stop_listening(s);
		queue_free(s->queue);
		idempotency_free(s->idempotency);
		workers_free(s->workers);
		observe_free(s);
		return 1;
	}
	if (load_queue(s) != 0 ||
	    (pgq_is_postgres(s->config.store) && pgq_prepare(s, &pg_start) != 0) ||
	    auth_open(s) != 0 || storage_open(s, http_server_port(s->http)) != 0) {
		pgq_start_abort(pg_start);
		store_close(s->store);
		stop_listening(s);
		auth_close(s);
		queue_model_each(s->queue, free_model_state, NULL);
		queue_free(s->queue);
		idempotency_free(s->idempotency);
		workers_free(s->workers);
		observe_free(s);
		return 1;
	}
	observe_load_finished(s);
	engine_init(s);
	if (pg_start && pgq_open(s, pg_start) != 0) {
		engine_close(s);
		store_close(s->store);
		stop_listening(s);
		auth_close(s);
		storage_close(s);
		queue_model_each(s->queue, free_model_state, NULL);
		queue_free(s->queue);
		idempotency_free(s->idempotency);
		workers_free(s->workers);
		observe_free(s);
		return 1;
	}

	uv_signal_init(s->loop, &s->sigint);
	uv_signal_init(s->loop, &s->sigterm);
	s->sigint.data = s->sigterm.data = s;
	uv_signal_start(&s->sigint, on_signal, SIGINT);
	uv_signal_start(&s->sigterm, on_signal, SIGTERM);
	log_listening(s);

	uv_run(s->loop, UV_RUN_DEFAULT);

	queue_model_each(s->queue, free_model_state, NULL);
	queue_free(s->queue);
	idempotency_free(s->idempotency);
	workers_free(s->workers);
	auth_close(s);
	storage_close(s);
	observe_free(s);
	uv_loop_close(s->loop);
	log_info("server", "stopped");
	return s->exit_code;
}
