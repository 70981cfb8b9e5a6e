/*
 * Observability glue (see observe.h). The registry keeps the counters. The
 * queue gauges are read at each scrape from the committed counts per model
 * (which mirror the store) and the long-poll waiter lists, so they match
 * what the status and queue metrics routes return.
 *
 * SPDX-License-Identifier: MIT
 */
#include "observe.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "auth.h"
#include "error.h"
#include "inferq_error.h"
#include "log.h"
#include "metrics.h"
#include "request.h"
#include "routes.h"

#define METRICS_PATH "/metrics"

struct observe {
	metrics_t *metrics;
	http_server_t *http;        /* the --metrics-listen listener, or NULL */
};

void observe_open(server_t *s)
{
	s->observe = xcalloc(1, sizeof(*s->observe));
	s->observe->metrics = metrics_new(s->config.metrics_max_models);
}

void observe_free(server_t *s)
{
	if (s->observe == NULL)
		return;
	metrics_free(s->observe->metrics);
	free(s->observe);
	s->observe = NULL;
}

/* Returns the series of queue model m, looked up once and kept in its state. */
static metrics_model_t *series_of(server_t *s, queue_model_t *m)
{
	model_state_t *ms = server_model_state(m);

	if (ms->metrics == NULL)
		ms->metrics = metrics_model(s->observe->metrics, m->name->data, m->name->len);
	return ms->metrics;
}

/* ---- job changes and commits ---- */

static double seconds_between(int64_t from_ms, int64_t to_ms)
{
	return to_ms > from_ms ? (double)(to_ms - from_ms) / 1000.0 : 0.0;
}

static void observe_run_time(metrics_model_t *mm, const job_record_t *rec)
{
	if (rec->claimed_at > 0)
		metrics_histogram_observe(&mm->run, seconds_between(rec->claimed_at, rec->done_at));
}

static void count_change(metrics_model_t *mm, const store_op_t *op);

void observe_job_committed(server_t *s, const job_t *job, const store_op_t *op)
{
	count_change(series_of(s, job->model), op);
}

void observe_change_committed(server_t *s, const store_op_t *op)
{
	const rbuf_t *model = op->rec.model;

	count_change(series_of(s, queue_model_get(s->queue, model->data, model->len, 1)), op);
}

static void count_change(metrics_model_t *mm, const store_op_t *op)
{
	const job_record_t *rec = &op->rec;

	if (log_enabled(LOG_DEBUG)) {
		char id[ID_TEXT_LEN + 1];

		id_format(&rec->id, id);
		log_fields(LOG_DEBUG, "queue", "change committed", LOG_STR("request_id", id),
			   LOG_STR("model", rec->model->data), LOG_STR("state", job_state_name(rec->state)));
	}
	if (op->kind == STORE_OP_INSERT) {
		metrics_job_event(mm, METRICS_JOB_SUBMITTED);
		return;
	}
	if (op->cause == OBSERVE_CAUSE_CLAIM) {
		metrics_job_event(mm, METRICS_JOB_CLAIMED);
		metrics_histogram_observe(&mm->wait,
					  seconds_between(rec->created_at, rec->claimed_at));
		return;
	}
	if (op->cause == OBSERVE_CAUSE_EXPIRY) {
		metrics_job_event(mm, METRICS_JOB_EXPIRED);
		if (rec->state == JOB_PENDING)
			metrics_job_event(mm, METRICS_JOB_RETRIED);
	}
	switch (rec->state) {
	case JOB_DONE:
		metrics_job_event(mm, METRICS_JOB_COMPLETED);
		metrics_finished_add(mm, JOB_DONE, 1);
		observe_run_time(mm, rec);
		break;
	case JOB_FAILED:
		metrics_job_event(mm, METRICS_JOB_FAILED);
		metrics_finished_add(mm, JOB_FAILED, 1);
		observe_run_time(mm, rec);
		break;
	case JOB_CANCELED:
		metrics_job_event(mm, METRICS_JOB_CANCELED);
		metrics_finished_add(mm, JOB_CANCELED, 1);
		break;
	case JOB_PENDING:
		if (op->cause == OBSERVE_CAUSE_REQUEST && op->prev_state == JOB_RUNNING)
			metrics_job_event(mm, METRICS_JOB_RELEASED);
		else if (op->cause == OBSERVE_CAUSE_UNDELIVERED)
			metrics_job_event(mm, METRICS_JOB_UNDELIVERED);
		break;
	default:
		/* running -> running (heartbeat) or a late heartbeat taking a job back */
		break;
	}
}

/* Returns the series of the model called name, creating the queue model that keeps it. */
static metrics_model_t *series_named(server_t *s, const char *name)
{
	return series_of(s, queue_model_get(s->queue, name, strlen(name), 1));
}

static int add_finished(void *ctx, const char *model, job_state_t state, uint64_t count)
{
	server_t *s = ctx;

	metrics_finished_add(series_named(s, model), state, (int64_t)count);
	return 0;
}

void observe_load_finished(server_t *s)
{
	int rc = store_count_finished(s->store, add_finished, s);

	if (rc != 0)
		log_warn("store", "could not count the finished jobs for /metrics: %s; inferq_jobs "
				  "shows 0 done, failed and canceled jobs until they change",
			 inferq_strerror(rc));
}

void observe_purge_committed(server_t *s, const store_op_t *op)
{
	for (size_t i = 0; i < op->purged_by_count; i++)
		metrics_finished_add(series_named(s, op->purged_by[i].model), op->purged_by[i].state,
				     -(int64_t)op->purged_by[i].count);
}

void observe_commit_done(server_t *s, const store_batch_t *batch, uint64_t handed_ns)
{
	double seconds = (double)(uv_hrtime() - handed_ns) / 1e9;

	metrics_store_commit(s->observe->metrics, batch->count, seconds, batch->result == 0);
}

/* ---- HTTP ---- */

/*
 * Writes the access log line of req at level info, whatever --log-level,
 * because --access-log requests every line. The query string is left out,
 * because a signed URL carries its signature there. No header is logged.
 * remote is the client address that the failed-authentication limit uses
 * (X-Forwarded-For from a --trusted-proxy peer), and peer the TCP peer.
 */
static void access_log(server_t *s, const http_request_t *req, const char *route, int status,
		       size_t body_len, uint64_t duration_ns)
{
	char client[AUTH_ADDR_LEN];

	auth_request_address(s, req, client);

	const log_field_t fields[] = {
		LOG_STR("method", req->method_name),
		LOG_STR("route", route),
		LOG_TEXT("path", req->path, req->path_len),
		LOG_INT("status", status),
		LOG_DOUBLE("duration_ms", (double)duration_ns / 1e6),
		LOG_UINT("bytes", body_len),
		LOG_STR("remote", client),
		LOG_STR("peer", req->remote_addr),
		LOG_UINT("request", req->id),
	};

	log_event(LOG_INFO, "access", "request", fields, sizeof(fields) / sizeof(fields[0]));
}

static void observe_request(server_t *s, const http_request_t *req, const char *route,
			    int status, size_t body_len, uint64_t duration_ns)
{
	if (s->observe)
		metrics_http_request(s->observe->metrics, route, status, (double)duration_ns / 1e9);
	if (s->config.access_log)
		access_log(s, req, route, status, body_len, duration_ns);
}

void observe_http(void *ctx, const struct http_request *req, int status, size_t body_len,
		  uint64_t duration_ns)
{
	const char *route = req->rejected ? METRICS_UNROUTED_ROUTE : routes_pattern(req);

	observe_request(ctx, req, route, status, body_len, duration_ns);
}

static int is_metrics_path(const http_request_t *req)
{
	return req->path_len == strlen(METRICS_PATH) &&
	       memcmp(req->path, METRICS_PATH, req->path_len) == 0;
}

/* The http_observer_cb of the --metrics-listen listener, which serves one route. */
static void observe_metrics_http(void *ctx, const struct http_request *req, int status,
				 size_t body_len, uint64_t duration_ns)
{
	const char *route = METRICS_OTHER_ROUTE;

	if (req->rejected)
		route = METRICS_UNROUTED_ROUTE;
	else if (is_metrics_path(req))
		route = METRICS_PATH;
	observe_request(ctx, req, route, status, body_len, duration_ns);
}

/* ---- the exposition ---- */

static void fill_model_gauges(queue_model_t *m, void *ctx)
{
	server_t *s = ctx;
	model_state_t *ms = server_model_state(m);
	metrics_model_t *mm = series_of(s, m);

	mm->jobs[JOB_PENDING] += ms->committed[JOB_PENDING];
	mm->jobs[JOB_RUNNING] += ms->committed[JOB_RUNNING];
	mm->waiting_workers += claim_waiter_count(ms) + ms->pg_waiters;
}

static void respond_metrics(server_t *s, http_request_t *req)
{
	metrics_t *m = s->observe->metrics;
	metrics_process_t proc;
	uint64_t connections = 0;
	buf_t body = BUF_INIT;

	metrics_clear_gauges(m);
	queue_model_each(s->queue, fill_model_gauges, s);
	if (s->http)
		connections += http_server_connections(s->http);
	if (s->observe->http)
		connections += http_server_connections(s->observe->http);
	metrics_set_connections(m, connections);
	metrics_read_process(&proc);
	metrics_render(m, &proc, &body);
	http_respond(req, 200, METRICS_CONTENT_TYPE, NULL, body.data ? body.data : "", body.len);
	buf_free(&body);
}

void handle_prometheus(server_t *s, http_request_t *req)
{
	respond_metrics(s, req);
}

/* The handler of the --metrics-listen listener: GET /metrics and nothing else. */
static void metrics_dispatch(void *ctx, http_request_t *req)
{
	server_t *s = ctx;
	char shown[64];

	if (!is_metrics_path(req)) {
		respond_error(req, 404, "not_found", NULL,
			      "no route %s %s on the metrics listener; it serves only GET /metrics",
			      req->method_name, excerpt(req->path, req->path_len, shown, sizeof(shown)));
		return;
	}
	if (strcmp(req->method_name, "GET") != 0 && strcmp(req->method_name, "HEAD") != 0) {
		buf_t body = BUF_INIT;

		/* 405 with the QueueError body, as on the main listener. */
		error_body(&body, 405, "method_not_allowed", NULL,
			   "method %s is not allowed on /metrics; use GET", req->method_name);
		http_respond(req, 405, NULL, "Allow: GET\r\n", body.data, body.len);
		buf_free(&body);
		return;
	}
	respond_metrics(s, req);
}

/* ---- the metrics listener ---- */

int observe_listen(server_t *s, const http_limits_t *limits)
{
	http_limits_t own = *limits;
	char err[256];
	char host[256];
	char *colon;

	if (s->config.metrics_listen[0] == '\0')
		return 0;
	own.observer = observe_metrics_http;
	if (http_server_start(s->loop, s->config.metrics_listen, &own, metrics_dispatch, s,
			      &s->observe->http, err, sizeof(err)) != 0) {
		log_error("server", "cannot listen on %s for /metrics: %s; choose another address or "
				    "port with --metrics-listen",
			  s->config.metrics_listen, err);
		return INFERQ_EIO;
	}
	snprintf(host, sizeof(host), "%s", s->config.metrics_listen);
	colon = strrchr(host, ':');
	if (colon)
		*colon = '\0';
	log_info("server", "serving /metrics without auth on %s:%d", host,
		 http_server_port(s->observe->http));
	return 0;
}

int observe_accept(server_t *s, char *err, size_t errlen)
{
	if (s->observe == NULL || s->observe->http == NULL)
		return 0;
	return http_server_accept(s->observe->http, err, errlen);
}

void observe_close_listener(server_t *s)
{
	if (s->observe == NULL || s->observe->http == NULL)
		return;
	http_server_close(s->observe->http, NULL, NULL);
	s->observe->http = NULL;
}
