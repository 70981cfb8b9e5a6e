/*
 * Worker routes on the postgres store: claim (with long-poll), heartbeat,
 * complete, fail and release. A claim is one UPDATE over the row that
 * FOR UPDATE SKIP LOCKED picked, so two nodes never take the same job;
 * every later call is one statement that checks the claim id and the
 * state on the locked row, so the database is the only judge of fencing.
 *
 * SPDX-License-Identifier: MIT
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "auth.h"
#include "error.h"
#include "inferq_error.h"
#include "log.h"
#include "pgq.h"
#include "render.h"
#include "request.h"

#define MAX_WORKER_NAME 128 /* bytes, as on the local store */
#define MAX_WAIT_S 60

/* ---- claim ---- */

static const char sql_claim[] =
	"UPDATE inferq_jobs SET state = 1, claim_id = $2::uuid, claimed_at = inferq_now_ms(), "
	"claim_timeout = $3::int, lease_expires_at = CASE WHEN $3::int > 0 THEN "
	"inferq_now_ms() + $3::int * 1000::bigint ELSE 0 END, worker = $4 "
	"WHERE id IN (SELECT id FROM inferq_jobs WHERE model = $1 AND state = 0 "
	"ORDER BY priority DESC, seq FOR UPDATE SKIP LOCKED LIMIT 1) "
	"RETURNING " PGQ_JOB_COLUMNS;

typedef struct {
	server_t *server;
	http_request_t *req;
	claim_format_t format;
	buf_t warnings;
	void (*done)(void *ctx, int claimed, int rc, const char *err);
	void *ctx;
} claim_call_t;

static void on_claimed(void *ctx, int rc, PGresult *const *results, int count, const char *err)
{
	claim_call_t *c = ctx;
	job_record_t rec;
	buf_t body = BUF_INIT;
	int claimed = rc == 0 && PQntuples(results[0]) == 1;

	if (claimed) {
		pgq_row_record(results[0], 0, &rec);
		if (c->format == CLAIM_FORMAT_SPROCKET)
			buf_puts(&body, "{\"data\":");
		render_claim(&body, &rec);
		if (c->warnings.len)
			render_add_raw_field(&body, "warnings", c->warnings.data, c->warnings.len);
		if (c->format == CLAIM_FORMAT_SPROCKET)
			buf_putc(&body, '}');
		respond_json(c->req, 200, &body);
		job_record_clear(&rec);
	}
	c->done(c->ctx, claimed, claimed ? 0 : rc, err);
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
	char id[ID_TEXT_LEN + 1], timeout[16];

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
	pgq_exec(s, &st, 1, on_claimed, c);
}

/* What the claim route does once its first attempt ended. */
typedef struct {
	server_t *server;
	http_request_t *req;
	buf_t model;
	claim_params_t params;
	int64_t wait_ms;
} route_claim_t;

static void route_claim_done(void *ctx, int claimed, int rc, const char *err)
{
	route_claim_t *rc_ = ctx;
	server_t *s = rc_->server;

	if (claimed) {
		/* sent */
	} else if (rc != 0) {
		pgq_respond_unavailable(s, rc_->req, rc, err);
	} else if (rc_->wait_ms > 0 && !s->stopping && s->pg) {
		pgq_wait(s, rc_->model.data, rc_->model.len, &rc_->params, rc_->wait_ms,
			 rc_->req);
	} else {
		http_respond(rc_->req, 204, NULL, NULL, "", 0);
	}
	rbuf_unref(rc_->params.worker);
	buf_free(&rc_->model);
	free(rc_);
}

static const char *const claim_fields[] = {"model", "claim_timeout", "wait", "worker", NULL};

void pg_handle_claim(server_t *s, http_request_t *req)
{
	input_error_t err;
	body_t b;
	buf_t model = BUF_INIT;
	buf_t worker = BUF_INIT;
	int64_t timeout = s->config.claim_timeout;
	double wait = 0;
	int has_worker = 0;
	route_claim_t *rc;

	if (body_parse(&s->config, req->body, req->body_len, claim_fields, &b, &err) != 0 ||
	    read_model(&s->config, &b, &model, &err) != 0 ||
	    read_int(&b, "claim_timeout", 1, 86400, &timeout, &err) != 0 ||
	    read_seconds(&b, "wait", 0, MAX_WAIT_S, &wait, &err) != 0 ||
	    read_string(&b, "worker", 0, MAX_WORKER_NAME, &worker, &has_worker, &err) != 0) {
		respond_input_error(req, &err);
		goto out;
	}
	if (!auth_covers(s, req, model.data, model.len)) {
		auth_respond_model_not_found(req, model.data, model.len);
		goto out;
	}
	rc = xcalloc(1, sizeof(*rc));
	rc->server = s;
	rc->req = req;
	buf_append(&rc->model, model.data, model.len);
	rc->params.claim_timeout = (uint32_t)timeout;
	rc->params.format = CLAIM_FORMAT_NATIVE;
	if (has_worker)
		rc->params.worker = rbuf_new(worker.data ? worker.data : "", worker.len);
	rc->wait_ms = wait > 0 ? (int64_t)ceil(wait * 1000) : 0;
	pgq_claim(s, model.data, model.len, &rc->params, req, &b.warnings, route_claim_done, rc);
out:
	body_free(&b);
	buf_free(&model);
	buf_free(&worker);
}

/* ---- fenced calls ---- */

typedef enum { FENCE_HEARTBEAT, FENCE_COMPLETE, FENCE_FAIL, FENCE_RELEASE } fence_op_t;

/*
 * $1 id, $2 model, $3 claim id, $4 info patch or NULL, $5 --max-info-bytes,
 * $6 outputs or error. The row is locked, the merged info computed, and
 * the update applied only when the claim id is current, the state allows
 * the change and the merged info fits; the last row tells which check held.
 */
#define FENCE_HEAD                                                                             \
	"WITH cur AS (SELECT id, state, claim_id, info FROM inferq_jobs WHERE id = $1::uuid "   \
	"AND model = $2 FOR UPDATE), "                                                          \
	"m AS (SELECT id, state, claim_id IS NOT DISTINCT FROM $3::uuid AS mine, "              \
	"CASE WHEN $4::jsonb IS NULL THEN info ELSE inferq_merge_patch(coalesce(info, '{}'), "  \
	"$4::jsonb) END AS info FROM cur), "                                                    \
	"fits AS (SELECT m.*, ($4::jsonb IS NULL OR octet_length(m.info::text) <= $5::int) AS ok " \
	"FROM m), "
#define FENCE_TAIL(states)                                                                     \
	"FROM fits WHERE j.id = fits.id AND fits.mine AND fits.ok AND fits.state IN " states    \
	" RETURNING j.state, j.lease_expires_at) "                                              \
	"SELECT fits.state, fits.mine, fits.ok, (SELECT state FROM u), "                        \
	"(SELECT lease_expires_at FROM u), $6::text IS NULL FROM fits"

static const char *const fence_sql[] = {
	[FENCE_HEARTBEAT] = FENCE_HEAD
	"u AS (UPDATE inferq_jobs j SET state = 1, info = fits.info, lease_expires_at = CASE "
	"WHEN j.claim_timeout > 0 THEN inferq_now_ms() + j.claim_timeout * 1000::bigint ELSE 0 "
	"END " FENCE_TAIL("(0, 1)"),
	[FENCE_COMPLETE] = FENCE_HEAD
	"u AS (UPDATE inferq_jobs j SET state = 2, info = fits.info, outputs = $6, "
	"done_at = inferq_now_ms(), lease_expires_at = 0 " FENCE_TAIL("(0, 1)"),
	[FENCE_FAIL] = FENCE_HEAD
	"u AS (UPDATE inferq_jobs j SET state = 3, info = fits.info, error = $6, "
	"done_at = inferq_now_ms(), lease_expires_at = 0 " FENCE_TAIL("(0, 1)"),
	[FENCE_RELEASE] = FENCE_HEAD
	"u AS (UPDATE inferq_jobs j SET state = 0, info = fits.info, claim_id = NULL, "
	"lease_expires_at = 0 " FENCE_TAIL("(1)"),
};

/* Tells waiters on every node that a released job is pending again. */
static const char sql_notify[] = "SELECT pg_notify('" PGQ_CHANNEL "', $1)";

typedef struct {
	server_t *server;
	http_request_t *req;
	fence_op_t op;
	iq_id_t id;
	buf_t model;
	buf_t warnings;
	int no_claim; /* the body had no claim_id: the statement changes nothing */
} fence_call_t;

static void fence_conflict(fence_call_t *c, job_state_t state)
{
	buf_t reply = BUF_INIT;

	if (job_state_is_terminal(state))
		conflict_body(&reply, "invalid_state", NULL, state,
			      "the job is already %s; a finished job cannot change",
			      job_state_name(state));
	else
		conflict_body(&reply, "claim_mismatch", NULL, state,
			      "claim_id is not the job's current claim: its lease expired and "
			      "another worker claimed it, or it was released; stop working on "
			      "this job");
	respond_json(c->req, 409, &reply);
}

static void fence_ok(fence_call_t *c, job_state_t state, int64_t lease_ms)
{
	buf_t reply = BUF_INIT;
	job_record_t rec = {0};

	if (c->op == FENCE_HEARTBEAT) {
		buf_puts(&reply, "{\"status\":\"running\"");
		render_time_field(&reply, "lease_expires_at", lease_ms);
		buf_putc(&reply, '}');
	} else {
		rec.id = c->id;
		rec.state = state;
		rec.model = rbuf_new(c->model.data, c->model.len);
		render_state(&reply, &rec);
		job_record_clear(&rec);
	}
	if (c->warnings.len)
		render_add_raw_field(&reply, "warnings", c->warnings.data, c->warnings.len);
	respond_json(c->req, 200, &reply);
}

/* Sends the 409 of a call without claim_id: it proves ownership as little as a stale one. */
static void missing_claim(http_request_t *req, job_state_t state)
{
	buf_t reply = BUF_INIT;

	conflict_body(&reply, "claim_mismatch", "claim_id", state,
		      "claim_id is missing; only the worker that holds the current claim can "
		      "change the job, so send the claim_id of its claim response");
	respond_json(req, 409, &reply);
}

static void on_fenced(void *ctx, int rc, PGresult *const *results, int count, const char *err)
{
	fence_call_t *c = ctx;
	const PGresult *r = rc == 0 ? results[0] : NULL;
	char text[ID_TEXT_LEN + 1];
	job_state_t state;

	if (rc != 0) {
		pgq_respond_unavailable(c->server, c->req, rc, err);
		goto out;
	}
	if (PQntuples(r) == 0) {
		id_format(&c->id, text);
		respond_error(c->req, 404, "not_found", "request_id",
			      "no job %s for model %s; check the id and model, or the job may have "
			      "been deleted after the retention period",
			      text, c->model.data);
		goto out;
	}
	state = (job_state_t)atoi(PQgetvalue(r, 0, 0));
	if (c->no_claim && !job_state_is_terminal(state)) {
		missing_claim(c->req, state);
	} else if (!PQgetisnull(r, 0, 3)) {
		fence_ok(c, (job_state_t)atoi(PQgetvalue(r, 0, 3)),
			 strtoll(PQgetvalue(r, 0, 4), NULL, 10));
	} else if (job_state_is_terminal(state) || strcmp(PQgetvalue(r, 0, 1), "t") != 0 ||
		   (c->op == FENCE_RELEASE && state != JOB_RUNNING)) {
		fence_conflict(c, state);
	} else {
		respond_error(c->req, 400, "too_large", "info",
			      "info would be over %zu bytes after this merge; send a smaller info "
			      "or raise --max-info-bytes",
			      c->server->config.max_info_bytes);
	}
out:
	buf_free(&c->model);
	buf_free(&c->warnings);
	free(c);
}

static const char *const fence_fields[][6] = {
	[FENCE_HEARTBEAT] = {"model", "request_id", "claim_id", "info", NULL},
	[FENCE_COMPLETE] = {"model", "request_id", "claim_id", "outputs", "info", NULL},
	[FENCE_FAIL] = {"model", "request_id", "claim_id", "error", "info", NULL},
	[FENCE_RELEASE] = {"model", "request_id", "claim_id", "info", NULL},
};

/* Reads the op-specific field (outputs or error) into *value; returns 0 or the input error. */
static int read_result(server_t *s, fence_op_t op, const body_t *b, json_span_t *outputs,
		       buf_t *error, input_error_t *err)
{
	if (op == FENCE_COMPLETE)
		return read_object(b, "outputs", 1, outputs, NULL, err);
	if (op == FENCE_FAIL)
		return read_string(b, "error", 1, s->config.max_info_bytes, error, NULL, err);
	return 0;
}

static void fill_fence(pg_stmt_t *st, fence_call_t *c, const char *id, const char *claim,
		       const json_span_t *info, int has_info, const char *max_info,
		       const json_span_t *outputs, const buf_t *error)
{
	st[0].sql = fence_sql[c->op];
	pgq_param(&st[0], 0, id);
	pgq_param(&st[0], 1, c->model.data);
	pgq_param(&st[0], 2, claim);
	if (has_info)
		pgq_param_len(&st[0], 3, info->start, info->len);
	else
		pgq_param(&st[0], 3, NULL);
	pgq_param(&st[0], 4, max_info);
	if (c->op == FENCE_COMPLETE)
		pgq_param_len(&st[0], 5, outputs->start, outputs->len);
	else if (c->op == FENCE_FAIL)
		pgq_param_len(&st[0], 5, error->data, error->len);
	else
		pgq_param(&st[0], 5, NULL);
}

static void fenced(server_t *s, http_request_t *req, fence_op_t op)
{
	input_error_t err;
	body_t b;
	buf_t model = BUF_INIT, error = BUF_INIT;
	iq_id_t id, claim_id;
	json_span_t info, outputs;
	int has_info = 0;
	char text[ID_TEXT_LEN + 1], claim[ID_TEXT_LEN + 1], max_info[24];
	pg_stmt_t st[2];
	fence_call_t *c;

	memset(st, 0, sizeof(st));
	if (body_parse(&s->config, req->body, req->body_len, fence_fields[op], &b, &err) != 0 ||
	    read_model(&s->config, &b, &model, &err) != 0 ||
	    read_id(&b, "request_id", &id, &err) != 0 ||
	    (body_field(&b, "claim_id") && read_id(&b, "claim_id", &claim_id, &err) != 0) ||
	    read_info(&s->config, &b, &info, &has_info, &err) != 0) {
		respond_input_error(req, &err);
		goto out;
	}
	if (!auth_covers(s, req, model.data, model.len)) {
		id_format(&id, text);
		respond_error(req, 404, "not_found", "request_id",
			      "no job %s for model %s; check the id and model, or the job may have "
			      "been deleted after the retention period",
			      text, model.data);
		goto out;
	}
	if (read_result(s, op, &b, &outputs, &error, &err) != 0) {
		respond_input_error(req, &err);
		goto out;
	}

	c = xcalloc(1, sizeof(*c));
	c->server = s;
	c->req = req;
	c->op = op;
	c->id = id;
	buf_append(&c->model, model.data, model.len);
	buf_putc(&c->model, '\0');
	c->model.len--;
	if (b.warnings.len)
		buf_append(&c->warnings, b.warnings.data, b.warnings.len);
	id_format(&id, text);
	/* Without claim_id the all-zero id, which is nobody's claim, still finds the job. */
	c->no_claim = body_field(&b, "claim_id") == NULL;
	if (c->no_claim)
		memset(&claim_id, 0, sizeof(claim_id));
	id_format(&claim_id, claim);
	snprintf(max_info, sizeof(max_info), "%zu", s->config.max_info_bytes);
	fill_fence(st, c, text, claim, &info, has_info, max_info, &outputs, &error);
	if (op == FENCE_RELEASE) {
		st[1].sql = sql_notify;
		pgq_param(&st[1], 0, c->model.data);
	}
	pgq_exec(s, st, op == FENCE_RELEASE ? 2 : 1, on_fenced, c);
out:
	body_free(&b);
	buf_free(&model);
	buf_free(&error);
}

void pg_handle_heartbeat(server_t *s, http_request_t *req)
{
	fenced(s, req, FENCE_HEARTBEAT);
}

void pg_handle_complete(server_t *s, http_request_t *req)
{
	fenced(s, req, FENCE_COMPLETE);
}

void pg_handle_fail(server_t *s, http_request_t *req)
{
	fenced(s, req, FENCE_FAIL);
}

void pg_handle_release(server_t *s, http_request_t *req)
{
	fenced(s, req, FENCE_RELEASE);
}
