/*
 * Worker routes on the postgres store: claim (with long-poll), heartbeat,
 * complete, fail and release. A claim is one UPDATE over the rows that
 * FOR UPDATE SKIP LOCKED picked (one, or up to max_jobs), so two nodes
 * never take the same job; every later call is one statement that checks
 * the claim id and the state on the locked row, so the database is the
 * only judge of fencing.
 *
 * SPDX-License-Identifier: MIT
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "auth.h"
#include "clock.h"
#include "error.h"
#include "inferq_error.h"
#include "log.h"
#include "observe.h"
#include "pgq.h"
#include "render.h"
#include "request.h"
#include "workers.h"

#define MAX_WORKER_NAME 128 /* bytes, as on the local store */
#define MAX_WAIT_S 60

/* ---- claim ---- */

static const char sql_claim[] =
	"UPDATE inferq_jobs SET state = 1, claim_id = $2::uuid, claimed_at = inferq_now_ms(), "
	"claim_timeout = $3::int, lease_expires_at = CASE WHEN $3::int > 0 THEN "
	"inferq_now_ms() + $3::int * 1000::bigint ELSE 0 END, worker = $4, "
	"history = inferq_history_add(history, inferq_now_ms(), 'claimed', $4, NULL, $5::int) "
	"WHERE id IN (SELECT id FROM inferq_jobs WHERE model = $1 AND state = 0 "
	"ORDER BY priority DESC, seq FOR UPDATE SKIP LOCKED LIMIT 1) "
	"RETURNING " PGQ_JOB_COLUMNS;

/*
 * The same for up to $2 jobs (max_jobs), each under its own claim id, which
 * the database makes. RETURNING has no order, so the node sorts the rows.
 */
static const char sql_claim_list[] =
	"UPDATE inferq_jobs SET state = 1, claim_id = gen_random_uuid(), "
	"claimed_at = inferq_now_ms(), claim_timeout = $3::int, lease_expires_at = CASE WHEN "
	"$3::int > 0 THEN inferq_now_ms() + $3::int * 1000::bigint ELSE 0 END, worker = $4, "
	"history = inferq_history_add(history, inferq_now_ms(), 'claimed', $4, NULL, $5::int) "
	"WHERE id IN (SELECT id FROM inferq_jobs WHERE model = $1 AND state = 0 "
	"ORDER BY priority DESC, seq FOR UPDATE SKIP LOCKED LIMIT $2::int) "
	"RETURNING " PGQ_JOB_COLUMNS;

typedef struct {
	server_t *server;
	http_request_t *req;
	claim_format_t format;
	buf_t warnings;
	void (*done)(void *ctx, int claimed, int rc, const char *err);
	void *ctx;
} claim_call_t;

static void log_claimed(const job_record_t *rec)
{
	char id[ID_TEXT_LEN + 1];
	const rbuf_t *name = rec->worker;

	if (!log_enabled(LOG_DEBUG))
		return;
	id_format(&rec->id, id);
	log_fields(LOG_DEBUG, "queue", "claimed", LOG_STR("request_id", id),
		   LOG_STR("model", rec->model->data), LOG_UINT("retries", rec->retries),
		   LOG_TEXT("worker", name ? name->data : "", name ? name->len : 0));
}

/* Orders claimed jobs as the claim took them: priority first, then FIFO. */
static int compare_claimed(const void *a, const void *b)
{
	const job_record_t *x = a, *y = b;

	if (x->priority != y->priority)
		return x->priority > y->priority ? -1 : 1;
	return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* Sends the 200 of a claim that took the n jobs of recs. */
static void respond_claimed(claim_call_t *c, const job_record_t *recs, int n)
{
	buf_t body = BUF_INIT;

	if (c->format == CLAIM_FORMAT_SPROCKET)
		buf_puts(&body, "{\"data\":");
	else if (c->format == CLAIM_FORMAT_LIST)
		buf_puts(&body, "{\"data\":[");
	for (int i = 0; i < n; i++) {
		if (i > 0)
			buf_putc(&body, ',');
		render_claim(&body, &recs[i]);
	}
	if (c->format == CLAIM_FORMAT_LIST)
		buf_puts(&body, "]}");
	if (c->warnings.len)
		render_add_raw_field(&body, "warnings", c->warnings.data, c->warnings.len);
	if (c->format == CLAIM_FORMAT_SPROCKET)
		buf_putc(&body, '}');
	respond_json(c->req, 200, &body);
}

static void on_claimed(void *ctx, int rc, PGresult *const *results, int count, const char *err)
{
	claim_call_t *c = ctx;
	job_record_t *recs;
	int n = rc == 0 ? PQntuples(results[0]) : 0;

	if (n > 0) {
		recs = xcalloc((size_t)n, sizeof(*recs));
		for (int i = 0; i < n; i++)
			pgq_row_record(results[0], i, &recs[i]);
		qsort(recs, (size_t)n, sizeof(*recs), compare_claimed);
		for (int i = 0; i < n; i++) {
			pgq_observe(c->server, &recs[i], STORE_OP_UPDATE, OBSERVE_CAUSE_CLAIM,
				    JOB_PENDING);
			log_claimed(&recs[i]);
		}

		/* A client that left while the claim ran cannot get the jobs: they go back now. */
		if (http_request_is_orphaned(c->req))
			pgq_give_back(c->server, c->req, c->format, recs, n);
		else
			respond_claimed(c, recs, n);
		for (int i = 0; i < n; i++)
			job_record_clear(&recs[i]);
		free(recs);
	}
	c->done(c->ctx, n > 0, n > 0 ? 0 : rc, err);
	buf_free(&c->warnings);
	free(c);
}

void pgq_claim(server_t *s, const char *model, size_t model_len, const claim_params_t *p,
	       http_request_t *req, const buf_t *warnings,
	       void (*done)(void *ctx, int claimed, int rc, const char *err), void *ctx)
{
	claim_call_t *c = xcalloc(1, sizeof(*c));
	pg_stmt_t st = {.sql = sql_claim};
	iq_id_t claim_id;
	char id[ID_TEXT_LEN + 1], timeout[16], history[16], max_jobs[16];

	c->server = s;
	c->req = req;
	c->format = p->format;
	c->done = done;
	c->ctx = ctx;
	if (warnings && warnings->len)
		buf_append(&c->warnings, warnings->data, warnings->len);
	id_new_v4(&claim_id);
	id_format(&claim_id, id);
	snprintf(timeout, sizeof(timeout), "%u", p->claim_timeout);
	pgq_param_len(&st, 0, model, model_len);
	pgq_param(&st, 1, id);
	pgq_param(&st, 2, timeout);
	if (p->worker)
		pgq_param_len(&st, 3, p->worker->data, p->worker->len);
	else
		pgq_param(&st, 3, NULL);
	snprintf(history, sizeof(history), "%u", s->config.max_job_history);
	pgq_param(&st, 4, history);
	if (p->format == CLAIM_FORMAT_LIST) {
		st.sql = sql_claim_list;
		snprintf(max_jobs, sizeof(max_jobs), "%u", p->max_jobs);
		pgq_param(&st, 1, max_jobs);
	}
	pgq_exec(s, &st, 1, on_claimed, c);
}

/* What a claim or retrieve does once its first attempt ended. */
typedef struct {
	server_t *server;
	http_request_t *req;
	buf_t model;
	claim_params_t params;
	int64_t wait_ms;
} route_claim_t;

static void route_claim_done(void *ctx, int claimed, int rc, const char *err)
{
	static const char sprocket_none[] = "{\"data\":null}";
	route_claim_t *call = ctx;
	server_t *s = call->server;

	if (claimed) {
		/* the job is sent, or given back (pgq_give_back then sends the no-job response) */
	} else if (rc != 0) {
		pgq_respond_unavailable(s, call->req, rc, err);
	} else if (call->wait_ms > 0 && !s->stopping && s->pg) {
		pgq_wait(s, call->model.data, call->model.len, &call->params, call->wait_ms,
			 call->req);
	} else if (call->params.format == CLAIM_FORMAT_SPROCKET) {
		http_respond(call->req, 200, NULL, NULL, sprocket_none, sizeof(sprocket_none) - 1);
	} else {
		http_respond(call->req, 204, NULL, NULL, "", 0);
	}
	rbuf_unref(call->params.worker);
	buf_free(&call->model);
	free(call);
}

void pgq_claim_route(server_t *s, http_request_t *req, const char *model, size_t model_len,
		     const claim_params_t *p, int64_t wait_ms, const buf_t *warnings)
{
	route_claim_t *rc = xcalloc(1, sizeof(*rc));

	rc->server = s;
	rc->req = req;
	buf_append(&rc->model, model, model_len);
	rc->params = *p;
	rc->params.worker = p->worker ? rbuf_ref(p->worker) : NULL;
	rc->wait_ms = wait_ms;
	pgq_claim(s, model, model_len, &rc->params, req, warnings, route_claim_done, rc);
}

/* Marks the claiming worker seen in this node's workers view, as handle_claim does. */
static void note_worker(server_t *s, const http_request_t *req, const buf_t *worker)
{
	size_t version_len = 0;
	const char *version = http_request_header(req, "x-worker-version", &version_len);

	workers_seen(s->workers, worker->data, worker->len, worker->data, worker->len, version,
		     version_len, clock_wall_ms());
}

static const char *const claim_fields[] = {"model", "claim_timeout", "wait", "worker", "max_jobs",
					   NULL};

/* max_jobs: an optional integer from 1 to --max-batch, checked as the local store does. */
static int read_max_jobs(const serve_config_t *c, const body_t *b, int64_t *out,
			 input_error_t *err)
{
	char message[sizeof(err->message)];

	if (read_int(b, "max_jobs", 1, c->max_batch, out, err) == 0)
		return 0;
	snprintf(message, sizeof(message), "%s", err->message);
	return input_fail(err, INFERQ_EINVAL, "invalid_field", "max_jobs",
			  "%s; the maximum is set by --max-batch", message);
}

void pg_handle_claim(server_t *s, http_request_t *req)
{
	input_error_t err;
	body_t b;
	buf_t model = BUF_INIT;
	buf_t worker = BUF_INIT;
	int64_t timeout = s->config.claim_timeout;
	double wait = 0;
	int has_worker = 0;
	int64_t max_jobs = 1;
	claim_params_t params = {.format = CLAIM_FORMAT_NATIVE, .max_jobs = 1};

	if (body_parse(&s->config, req->body, req->body_len, claim_fields, &b, &err) != 0 ||
	    read_model(&s->config, &b, &model, &err) != 0 ||
	    read_int(&b, "claim_timeout", 1, 86400, &timeout, &err) != 0 ||
	    read_seconds(&b, "wait", 0, MAX_WAIT_S, &wait, &err) != 0 ||
	    read_string(&b, "worker", 0, MAX_WORKER_NAME, &worker, &has_worker, &err) != 0 ||
	    read_max_jobs(&s->config, &b, &max_jobs, &err) != 0) {
		respond_input_error(req, &err);
		goto out;
	}
	if (!auth_covers(s, req, model.data, model.len)) {
		auth_respond_model_not_found(req, model.data, model.len);
		goto out;
	}
	note_worker(s, req, &worker);
	params.claim_timeout = (uint32_t)timeout;
	if (max_jobs > 1) {
		/* max_jobs 1, or none, keeps the single-job response shape. */
		params.format = CLAIM_FORMAT_LIST;
		params.max_jobs = (uint32_t)max_jobs;
	}
	if (has_worker)
		params.worker = rbuf_new(worker.data ? worker.data : "", worker.len);
	pgq_claim_route(s, req, model.data, model.len, &params,
			wait > 0 ? (int64_t)ceil(wait * 1000) : 0, &b.warnings);
	rbuf_unref(params.worker);
out:
	body_free(&b);
	buf_free(&model);
	buf_free(&worker);
}

void pg_handle_heartbeat(server_t *s, http_request_t *req)
{
	pg_fence(s, req, PG_FENCE_HEARTBEAT);
}

void pg_handle_complete(server_t *s, http_request_t *req)
{
	pg_fence(s, req, PG_FENCE_COMPLETE);
}

void pg_handle_fail(server_t *s, http_request_t *req)
{
	pg_fence(s, req, PG_FENCE_FAIL);
}

void pg_handle_release(server_t *s, http_request_t *req)
{
	pg_fence(s, req, PG_FENCE_RELEASE);
}
