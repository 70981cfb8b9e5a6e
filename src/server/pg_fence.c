/*
 * Heartbeat, complete, fail and release on the postgres store: the calls
 * fenced by claim_id. The change is one UPDATE that locks the row and
 * applies only when the claim id is current and the state allows it (a
 * pending job that kept its claim id after a lease expiry may still be
 * completed, failed or taken back by a heartbeat), so the database alone
 * judges the fence. An info patch is merged here, on the exact bytes, by
 * json_merge_patch: the call reads the row, merges, and the UPDATE applies
 * only if info is still what was read (compare and swap), else it reads
 * again, at most FENCE_ATTEMPTS times.
 *
 * The release statement also gives back the jobs of a claim whose response
 * could not be sent because its client had gone (pgq_give_back).
 *
 * SPDX-License-Identifier: MIT
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "auth.h"
#include "inferq_error.h"
#include "json.h"
#include "log.h"
#include "observe.h"
#include "pgq.h"
#include "render.h"
#include "request.h"

#define FENCE_ATTEMPTS 8 /* reads of a row whose info other calls keep changing */

/*
 * $1 id, $2 model, $3 claim id (NULL: any claim, for Sprocket updates,
 * which carry none), $4 new info or NULL (keep), $5 the info
 * $4 was merged from, $6 outputs, error, or the history detail of a
 * release (NULL for a worker's), $7 --max-job-history. Returns
 * the state seen, whether the claim is current, whether info was
 * unchanged, and the new state, lease, claimed_at, done_at and worker when
 * the update applied. The update adds the history event of the change.
 */
#define MINE                                                                                   \
	"(CASE WHEN $3::uuid IS NULL THEN claim_id IS NOT NULL ELSE claim_id IS NOT DISTINCT "  \
	"FROM $3::uuid END)"
#define FENCE_HEAD                                                                             \
	"WITH cur AS (SELECT id, state, claim_id, info FROM inferq_jobs WHERE id = $1::uuid "   \
	"AND model = $2 FOR UPDATE), "                                                          \
	"fits AS (SELECT id, state, " MINE " AS mine, "                                           \
	"($4::text IS NULL OR info IS NOT DISTINCT FROM $5::text) AS same FROM cur), "
#define FENCE_TAIL(states)                                                                     \
	"FROM fits WHERE j.id = fits.id AND fits.mine AND fits.same AND fits.state IN " states  \
	" RETURNING j.state, j.lease_expires_at, j.claimed_at, j.done_at, j.worker) "           \
	"SELECT fits.state, fits.mine, fits.same, (SELECT state FROM u), "                      \
	"(SELECT lease_expires_at FROM u), $6::text IS NULL, (SELECT claimed_at FROM u), "      \
	"(SELECT done_at FROM u), (SELECT worker FROM u) FROM fits"
/* The history of j with one more event; worker and detail are SQL expressions. */
#define ADD_EVENT(event, detail)                                                               \
	"inferq_history_add(j.history, inferq_now_ms(), '" event "', j.worker, " detail        \
	", $7::int)"

static const char *const fence_sql[] = {
	[PG_FENCE_HEARTBEAT] = FENCE_HEAD
	"u AS (UPDATE inferq_jobs j SET state = 1, info = coalesce($4, j.info), "
	"lease_expires_at = CASE WHEN j.claim_timeout > 0 THEN inferq_now_ms() + "
	"j.claim_timeout * 1000::bigint ELSE 0 END, "
	/* A heartbeat that takes a pending job back claims it again. */
	"history = CASE WHEN fits.state = 0 THEN " ADD_EVENT("claimed", "NULL") " ELSE "
	"j.history END " FENCE_TAIL("(0, 1)"),
	[PG_FENCE_COMPLETE] = FENCE_HEAD
	"u AS (UPDATE inferq_jobs j SET state = 2, info = coalesce($4, j.info), outputs = $6, "
	"done_at = inferq_now_ms(), lease_expires_at = 0, "
	"history = " ADD_EVENT("completed", "NULL") " " FENCE_TAIL("(0, 1)"),
	[PG_FENCE_FAIL] = FENCE_HEAD
	"u AS (UPDATE inferq_jobs j SET state = 3, info = coalesce($4, j.info), error = $6, "
	"done_at = inferq_now_ms(), lease_expires_at = 0, "
	"history = " ADD_EVENT("failed", "$6") " " FENCE_TAIL("(0, 1)"),
	[PG_FENCE_RELEASE] = FENCE_HEAD
	"u AS (UPDATE inferq_jobs j SET state = 0, info = coalesce($4, j.info), claim_id = NULL, "
	"lease_expires_at = 0, history = " ADD_EVENT("released", "$6") " " FENCE_TAIL("(1)"),
};

static const char sql_read[] =
	"SELECT state, " MINE ", info FROM inferq_jobs "
	"WHERE id = $1::uuid AND model = $2";

/* Tells waiters on every node that a released job is pending again. */
static const char sql_notify[] = "SELECT pg_notify('" PGQ_CHANNEL "', $1)";

typedef struct {
	server_t *server;
	http_request_t *req;
	pg_fence_t op;
	iq_id_t id;
	char id_text[ID_TEXT_LEN + 1];
	char claim_text[ID_TEXT_LEN + 1];
	int no_claim; /* the body had no claim_id: the all-zero id, nobody's claim, is used */
	int sprocket; /* a Sprocket update: any current claim will do (claim_text unused) */
	buf_t model;
	buf_t warnings;
	buf_t patch;  /* info patch, or empty when the body had none */
	buf_t result; /* outputs (complete), error text (fail), or a give-back's detail (release) */
	int attempts;
} fence_call_t;

static void call_clear(fence_call_t *c)
{
	buf_free(&c->model);
	buf_free(&c->warnings);
	buf_free(&c->patch);
	buf_free(&c->result);
}

static void call_free(fence_call_t *c)
{
	call_clear(c);
	free(c);
}

static void not_found(fence_call_t *c)
{
	respond_error(c->req, 404, "not_found", "request_id",
		      "no job %s for model %s; check the id and model, or the job may have been "
		      "deleted after the retention period",
		      c->id_text, c->model.data);
}

static void too_large(fence_call_t *c)
{
	respond_error(c->req, 400, "too_large", "info",
		      "info would be over %zu bytes or %d levels deep after this merge; send a "
		      "smaller info or raise --max-info-bytes",
		      c->server->config.max_info_bytes, c->server->config.max_json_depth);
}

/*
 * Sends the 409 when the call may not change a job in state with the claim
 * check mine; returns 1 when it did, 0 when the call may go on.
 */
static int refuse(fence_call_t *c, job_state_t state, int mine)
{
	buf_t reply = BUF_INIT;

	if (job_state_is_terminal(state))
		conflict_body(&reply, "invalid_state", NULL, state,
			      "the job is already %s; a finished job cannot change",
			      job_state_name(state));
	else if (c->sprocket && !mine)
		conflict_body(&reply, "invalid_state", NULL, state,
			      "the job is %s and no worker holds it (it was never retrieved, or "
			      "it was released); retrieve it before sending status updates",
			      job_state_name(state));
	else if (c->sprocket)
		return 0;
	else if (c->no_claim)
		conflict_body(&reply, "claim_mismatch", "claim_id", state,
			      "claim_id is missing; only the worker that holds the current claim "
			      "can change the job, so send the claim_id of its claim response");
	else if (!mine || (c->op == PG_FENCE_RELEASE && state != JOB_RUNNING))
		conflict_body(&reply, "claim_mismatch", NULL, state,
			      "claim_id is not the job's current claim: its lease expired and "
			      "another worker claimed it, or it was released; stop working on "
			      "this job");
	else
		return 0;
	respond_json(c->req, 409, &reply);
	return 1;
}

static void reply_ok(fence_call_t *c, job_state_t state, int64_t lease_ms)
{
	buf_t reply = BUF_INIT;
	job_record_t rec = {0};

	if (c->op == PG_FENCE_HEARTBEAT && !c->sprocket) {
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

static void run_read(fence_call_t *c);

/* Feeds the metrics with the change the update result r reports, made for cause. */
static void observe_change(fence_call_t *c, const PGresult *r, int cause)
{
	job_record_t rec = {0};

	rec.id = c->id;
	rec.model = rbuf_new(c->model.data, c->model.len);
	rec.state = (job_state_t)atoi(PQgetvalue(r, 0, 3));
	rec.claimed_at = strtoll(PQgetvalue(r, 0, 6), NULL, 10);
	rec.done_at = strtoll(PQgetvalue(r, 0, 7), NULL, 10);
	if (!PQgetisnull(r, 0, 8))
		rec.worker = rbuf_new(PQgetvalue(r, 0, 8), (size_t)PQgetlength(r, 0, 8));
	pgq_observe(c->server, &rec, STORE_OP_UPDATE, cause,
		    (job_state_t)atoi(PQgetvalue(r, 0, 0)));
	job_record_clear(&rec);
}

static void on_update(void *ctx, int rc, PGresult *const *results, int count, const char *err)
{
	fence_call_t *c = ctx;
	const PGresult *r = rc == 0 ? results[0] : NULL;
	job_state_t state;

	if (rc != 0) {
		pgq_respond_unavailable(c->server, c->req, rc, err);
	} else if (PQntuples(r) == 0) {
		not_found(c);
	} else if (!PQgetisnull(r, 0, 3)) {
		reply_ok(c, (job_state_t)atoi(PQgetvalue(r, 0, 3)),
			 strtoll(PQgetvalue(r, 0, 4), NULL, 10));
		observe_change(c, r, OBSERVE_CAUSE_REQUEST);
	} else {
		state = (job_state_t)atoi(PQgetvalue(r, 0, 0));
		if (!refuse(c, state, strcmp(PQgetvalue(r, 0, 1), "t") == 0)) {
			/* Only the info compare failed: another call changed it meanwhile. */
			if (++c->attempts < FENCE_ATTEMPTS) {
				run_read(c);
				return;
			}
			pgq_respond_unavailable(c->server, c->req, INFERQ_EBUSY,
						"the job's info changed under every attempt to "
						"merge this patch; retry the call");
		}
	}
	call_free(c);
}

/*
 * Fills st with the update of c, with new_info (NULL: keep info) merged
 * from old_info. history is the text of --max-job-history. st borrows
 * every value.
 */
static void set_update(pg_stmt_t *st, const fence_call_t *c, const char *new_info,
		       size_t new_len, const char *old_info, size_t old_len, const char *history)
{
	st->sql = fence_sql[c->op];
	pgq_param(st, 0, c->id_text);
	pgq_param(st, 1, c->model.data);
	pgq_param(st, 2, c->sprocket ? NULL : c->claim_text);
	if (new_info)
		pgq_param_len(st, 3, new_info, new_len);
	else
		pgq_param(st, 3, NULL);
	if (old_info)
		pgq_param_len(st, 4, old_info, old_len);
	else
		pgq_param(st, 4, NULL);
	if (c->op == PG_FENCE_COMPLETE || c->op == PG_FENCE_FAIL ||
	    (c->op == PG_FENCE_RELEASE && c->result.len > 0))
		pgq_param_len(st, 5, c->result.data, c->result.len);
	else
		pgq_param(st, 5, NULL);
	pgq_param(st, 6, history);
}

/* Runs the update with new_info (NULL: keep info) merged from old_info. */
static void run_update(fence_call_t *c, const char *new_info, size_t new_len,
		       const char *old_info, size_t old_len)
{
	pg_stmt_t st[2];
	char history[16];

	memset(st, 0, sizeof(st));
	snprintf(history, sizeof(history), "%u", c->server->config.max_job_history);
	set_update(&st[0], c, new_info, new_len, old_info, old_len, history);
	if (c->op == PG_FENCE_RELEASE) {
		st[1].sql = sql_notify;
		pgq_param(&st[1], 0, c->model.data);
	}
	pgq_exec(c->server, st, c->op == PG_FENCE_RELEASE ? 2 : 1, on_update, c);
}

static void on_read(void *ctx, int rc, PGresult *const *results, int count, const char *err)
{
	fence_call_t *c = ctx;
	const PGresult *r = rc == 0 ? results[0] : NULL;
	buf_t merged = BUF_INIT;
	const char *info;
	size_t info_len;
	int null_info, mrc;

	if (rc != 0) {
		pgq_respond_unavailable(c->server, c->req, rc, err);
		goto out;
	}
	if (PQntuples(r) == 0) {
		not_found(c);
		goto out;
	}
	if (refuse(c, (job_state_t)atoi(PQgetvalue(r, 0, 0)),
		   strcmp(PQgetvalue(r, 0, 1), "t") == 0))
		goto out;
	null_info = PQgetisnull(r, 0, 2);
	info = null_info ? NULL : PQgetvalue(r, 0, 2);
	info_len = null_info ? 0 : (size_t)PQgetlength(r, 0, 2);
	mrc = json_merge_patch(info, info_len, c->patch.data, c->patch.len,
			       c->server->config.max_json_depth, &merged);
	if (mrc != 0 || merged.len > c->server->config.max_info_bytes) {
		too_large(c);
		buf_free(&merged);
		goto out;
	}
	run_update(c, merged.data, merged.len, info, info_len);
	buf_free(&merged);
	return;
out:
	call_free(c);
}

static void run_read(fence_call_t *c)
{
	pg_stmt_t st = {.sql = sql_read};

	pgq_param(&st, 0, c->id_text);
	pgq_param(&st, 1, c->model.data);
	pgq_param(&st, 2, c->sprocket ? NULL : c->claim_text);
	pgq_exec(c->server, &st, 1, on_read, c);
}

static const char *const fence_fields[][6] = {
	[PG_FENCE_HEARTBEAT] = {"model", "request_id", "claim_id", "info", NULL},
	[PG_FENCE_COMPLETE] = {"model", "request_id", "claim_id", "outputs", "info", NULL},
	[PG_FENCE_FAIL] = {"model", "request_id", "claim_id", "error", "info", NULL},
	[PG_FENCE_RELEASE] = {"model", "request_id", "claim_id", "info", NULL},
};

/* Reads outputs (complete) or error (fail) into out; returns 0 or the input error. */
static int read_result(server_t *s, pg_fence_t op, const body_t *b, buf_t *out,
		       input_error_t *err)
{
	json_span_t outputs;
	int rc = 0;

	if (op == PG_FENCE_COMPLETE) {
		rc = read_object(b, "outputs", 1, &outputs, NULL, err);
		if (rc == 0)
			buf_append(out, outputs.start, outputs.len);
	} else if (op == PG_FENCE_FAIL) {
		rc = read_string(b, "error", 1, s->config.max_info_bytes, out, NULL, err);
	}
	return rc;
}

void pg_fence(server_t *s, http_request_t *req, pg_fence_t op)
{
	input_error_t err;
	body_t b;
	iq_id_t claim_id;
	json_span_t info;
	int has_info = 0;
	fence_call_t *c = xcalloc(1, sizeof(*c));

	c->server = s;
	c->req = req;
	c->op = op;
	memset(&claim_id, 0, sizeof(claim_id));
	if (body_parse(&s->config, req->body, req->body_len, fence_fields[op], &b, &err) != 0 ||
	    read_model(&s->config, &b, &c->model, &err) != 0 ||
	    read_id(&b, "request_id", &c->id, &err) != 0 ||
	    (body_field(&b, "claim_id") && read_id(&b, "claim_id", &claim_id, &err) != 0) ||
	    read_info(&s->config, &b, &info, &has_info, &err) != 0 ||
	    read_result(s, op, &b, &c->result, &err) != 0) {
		respond_input_error(req, &err);
		goto fail;
	}
	id_format(&c->id, c->id_text);
	if (!auth_covers(s, req, c->model.data, c->model.len)) {
		not_found(c);
		goto fail;
	}
	c->no_claim = body_field(&b, "claim_id") == NULL;
	id_format(&claim_id, c->claim_text);
	if (b.warnings.len)
		buf_append(&c->warnings, b.warnings.data, b.warnings.len);
	if (has_info) {
		buf_append(&c->patch, info.start, info.len);
		run_read(c);
	} else {
		run_update(c, NULL, 0, NULL, 0);
	}
	body_free(&b);
	return;
fail:
	body_free(&b);
	call_free(c);
}

void pgq_sprocket_update(server_t *s, http_request_t *req, int op, const buf_t *model,
			 const iq_id_t *id, const char *result, size_t result_len,
			 const json_span_t *info, const buf_t *warnings)
{
	fence_call_t *c = xcalloc(1, sizeof(*c));

	c->server = s;
	c->req = req;
	c->op = (pg_fence_t)op;
	c->sprocket = 1;
	c->id = *id;
	id_format(id, c->id_text);
	buf_append(&c->model, model->data, model->len);
	buf_putc(&c->model, '\0');
	c->model.len--;
	if (!auth_covers(s, req, c->model.data, c->model.len)) {
		not_found(c);
		call_free(c);
		return;
	}
	if (c->op != PG_FENCE_HEARTBEAT)
		buf_append(&c->result, result, result_len);
	if (warnings && warnings->len)
		buf_append(&c->warnings, warnings->data, warnings->len);
	if (info) {
		buf_append(&c->patch, info->start, info->len);
		run_read(c);
	} else {
		run_update(c, NULL, 0, NULL, 0);
	}
}

/* ---- give-back of a claim whose response cannot be sent ---- */

/* A claim's give-back: the no-job response goes to req when its last task ends. */
typedef struct {
	http_request_t *req;
	claim_format_t format;
	size_t tasks; /* give-back tasks in flight */
} give_back_t;

/* One task of a give-back: up to PG_TASK_MAX_STMTS releases in one transaction. */
typedef struct {
	give_back_t *claim;
	int count;
	fence_call_t calls[PG_TASK_MAX_STMTS];
} give_back_task_t;

/* Logs and counts the outcome of the give-back of c. Returns 1 when its job is pending again. */
static int given_back(fence_call_t *c, int rc, const PGresult *r, const char *err)
{
	if (rc != 0) {
		log_fields(LOG_WARN, "queue",
			   "could not give back the job of a claim whose client closed its "
			   "connection, so it stays running until its lease expires",
			   LOG_STR("request_id", c->id_text), LOG_STR("model", c->model.data),
			   LOG_STR("error", err ? err : ""));
		return 0;
	}
	if (PQntuples(r) == 0 || PQgetisnull(r, 0, 3)) {
		log_fields(LOG_DEBUG, "queue",
			   "claim not given back: the job changed since the claim",
			   LOG_STR("request_id", c->id_text), LOG_STR("model", c->model.data));
		return 0;
	}
	observe_change(c, r, OBSERVE_CAUSE_UNDELIVERED);
	log_fields(LOG_INFO, "queue",
		   "claim response not sent because the client closed its connection, job back "
		   "to pending",
		   LOG_STR("request_id", c->id_text), LOG_STR("model", c->model.data),
		   LOG_TEXT("worker", PQgetisnull(r, 0, 8) ? "" : PQgetvalue(r, 0, 8),
			    (size_t)PQgetlength(r, 0, 8)));
	return 1;
}

static void on_given_back(void *ctx, int rc, PGresult *const *results, int count,
			  const char *err)
{
	give_back_task_t *t = ctx;
	give_back_t *claim = t->claim;
	server_t *s = t->calls[0].server;
	int pending = 0;

	for (int i = 0; i < t->count; i++)
		pending |= given_back(&t->calls[i], rc, rc == 0 ? results[i] : NULL, err);

	/* Waiters on this node get the jobs at once, the other nodes through a NOTIFY hint. */
	if (pending && s->pg)
		pgq_job_added(s, t->calls[0].model.data);
	for (int i = 0; i < t->count; i++)
		call_clear(&t->calls[i]);
	free(t);
	if (--claim->tasks > 0)
		return;
	claim_respond_no_job(claim->req, claim->format);
	free(claim);
}

/* Starts the task that gives back recs[0..count), count at most PG_TASK_MAX_STMTS. */
static void start_give_back(server_t *s, give_back_t *claim, const job_record_t *recs,
			    int count)
{
	give_back_task_t *t = xcalloc(1, sizeof(*t));
	pg_stmt_t st[PG_TASK_MAX_STMTS];
	char history[16];

	memset(st, 0, sizeof(st));
	snprintf(history, sizeof(history), "%u", s->config.max_job_history);
	t->claim = claim;
	t->count = count;
	for (int i = 0; i < count; i++) {
		fence_call_t *c = &t->calls[i];

		c->server = s;
		c->op = PG_FENCE_RELEASE;
		c->id = recs[i].id;
		id_format(&recs[i].id, c->id_text);
		id_format(&recs[i].claim_id, c->claim_text);
		buf_append(&c->model, recs[i].model->data, recs[i].model->len);
		buf_putc(&c->model, '\0');
		c->model.len--;
		buf_puts(&c->result, CLAIM_GIVE_BACK_DETAIL);
		set_update(&st[i], c, NULL, 0, NULL, 0, history);
	}
	pgq_exec(s, st, count, on_given_back, t);
}

void pgq_give_back(server_t *s, http_request_t *req, claim_format_t format,
		   const job_record_t *recs, int count)
{
	give_back_t *claim = xcalloc(1, sizeof(*claim));

	claim->req = req;
	claim->format = format;
	claim->tasks = (size_t)(count + PG_TASK_MAX_STMTS - 1) / PG_TASK_MAX_STMTS;
	for (int i = 0; i < count; i += PG_TASK_MAX_STMTS) {
		int n = count - i < PG_TASK_MAX_STMTS ? count - i : PG_TASK_MAX_STMTS;

		start_give_back(s, claim, recs + i, n);
	}
}
