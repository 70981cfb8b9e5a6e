/*
 * Client routes on the postgres store: submit, status, cancel, metrics,
 * clear and readyz. They validate exactly as the local handlers do
 * (request.c), then run one database task and answer from its callback,
 * so a change is acknowledged only after its commit.
 *
 * SPDX-License-Identifier: MIT
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "auth.h"
#include "clock.h"
#include "error.h"
#include "idempotency.h"
#include "inferq_error.h"
#include "log.h"
#include "observe.h"
#include "pgq.h"
#include "render.h"
#include "request.h"
#include "status_cache.h"

/* What a callback needs of its request once the handler has returned. */
typedef struct {
	server_t *server;
	http_request_t *req;
	iq_id_t id;
	buf_t model;
	buf_t warnings; /* JSON array of the body's unknown fields, or empty */
	char hash[BODY_HASH_HEX + 1];
	char key_shown[64];
	int64_t priority;
	int64_t sent_ms; /* status: clock_mono_ms() when the task was handed to the pool */
} call_t;

static call_t *call_new(server_t *s, http_request_t *req, const buf_t *model, const body_t *b)
{
	call_t *c = xcalloc(1, sizeof(*c));

	c->server = s;
	c->req = req;
	buf_append(&c->model, model->data, model->len);
	buf_putc(&c->model, '\0');
	c->model.len--;
	if (b && b->warnings.len)
		buf_append(&c->warnings, b->warnings.data, b->warnings.len);
	return c;
}

static void call_free(call_t *c)
{
	buf_free(&c->model);
	buf_free(&c->warnings);
	free(c);
}

/* Adds the call's warnings to the JSON object that ends out. */
static void add_warnings(buf_t *out, const call_t *c)
{
	if (c->warnings.len)
		render_add_raw_field(out, "warnings", c->warnings.data, c->warnings.len);
}

/* Feeds the metrics with the committed change of the call's job to state. */
static void observe_one(call_t *c, job_state_t state, store_op_kind_t kind, job_state_t prev)
{
	job_record_t rec = {0};

	rec.id = c->id;
	rec.state = state;
	rec.model = rbuf_new(c->model.data, c->model.len);
	pgq_observe(c->server, &rec, kind, OBSERVE_CAUSE_REQUEST, prev);
	job_record_clear(&rec);
}

static void not_found(http_request_t *req, const iq_id_t *id, const char *model)
{
	char text[ID_TEXT_LEN + 1];

	id_format(id, text);
	respond_error(req, 404, "not_found", "request_id",
		      "no job %s for model %s; check the id and model, or the job may have been "
		      "deleted after the retention period",
		      text, model);
}

/* ---- submit ---- */

#define SUBMIT_INSERT                                                                          \
	"INSERT INTO inferq_jobs (id, model, priority, created_at, payload, info, warnings, "   \
	"idempotency_key, body_hash) "

/* The waiters hear of the job after the commit (pgq_job_added), not by a NOTIFY in here. */
static const char sql_submit[] = SUBMIT_INSERT "VALUES ($1::uuid, $2, $3::int, "
				 "inferq_now_ms(), $4, $5, $6, NULL, NULL)";

static const char sql_idempotency_lock[] =
	"SELECT pg_advisory_xact_lock(hashtextextended($1 || ' ' || $2, 0))";

static const char sql_submit_keyed[] =
	"WITH prev AS (SELECT id, body_hash FROM inferq_jobs WHERE model = $2 AND "
	"idempotency_key = $7 AND created_at >= inferq_now_ms() - $9::bigint "
	"ORDER BY seq DESC LIMIT 1), "
	"ins AS (" SUBMIT_INSERT "SELECT $1::uuid, $2, $3::int, inferq_now_ms(), $4, $5, "
	"$6, $7, $8 WHERE NOT EXISTS (SELECT 1 FROM prev) RETURNING model) "
	"SELECT (SELECT id FROM prev), (SELECT body_hash FROM prev), "
	"(SELECT count(*) FROM ins)";

static void reply_request_id(call_t *c, const iq_id_t *id)
{
	buf_t reply = BUF_INIT;
	char text[ID_TEXT_LEN + 1];

	id_format(id, text);
	buf_printf(&reply, "{\"requestId\":\"%s\",\"request_id\":\"%s\"}", text, text);
	add_warnings(&reply, c);
	respond_json(c->req, 200, &reply);
}

static void on_submitted(void *ctx, int rc, PGresult *const *results, int count,
			 const char *err)
{
	call_t *c = ctx;
	const PGresult *r = count ? results[count - 1] : NULL;
	iq_id_t first;

	if (rc != 0) {
		pgq_respond_unavailable(c->server, c->req, rc, err);
	} else if (count == 2 && !PQgetisnull(r, 0, 0)) {
		/* The key was used within --idempotency-ttl: same body, same job. */
		id_parse(PQgetvalue(r, 0, 0), (size_t)PQgetlength(r, 0, 0), &first);
		if (strcmp(PQgetvalue(r, 0, 1), c->hash) == 0)
			reply_request_id(c, &first);
		else
			respond_error(c->req, 409, "idempotency_conflict", "Idempotency-Key",
				      "Idempotency-Key \"%s\" was already used for model %s with a "
				      "different body; use a new key for a new job",
				      c->key_shown, c->model.data);
	} else {
		reply_request_id(c, &c->id);
		observe_one(c, JOB_PENDING, STORE_OP_INSERT, JOB_PENDING);
		pgq_job_added(c->server, c->model.data);
		if (log_enabled(LOG_DEBUG)) {
			char text[ID_TEXT_LEN + 1];

			id_format(&c->id, text);
			log_fields(LOG_DEBUG, "queue", "submitted", LOG_STR("request_id", text),
				   LOG_STR("model", c->model.data),
				   LOG_INT("priority", c->priority));
		}
	}
	call_free(c);
}

static const char *const submit_fields[] = {"model", "payload", "info", "priority", NULL};

/*
 * Fills the statements of a submit and returns how many; they point into
 * id (filled here), priority, ttl and c until pgq_exec copies them.
 */
static int submit_statements(server_t *s, call_t *c, const json_span_t *payload,
			     const json_span_t *info, int has_info, const char *priority,
			     const char *key, size_t key_len, const char *ttl, char *id,
			     pg_stmt_t *st)
{
	pg_stmt_t *ins = key ? &st[1] : &st[0];

	id_format(&c->id, id);
	ins->sql = key ? sql_submit_keyed : sql_submit;
	pgq_param(ins, 0, id);
	pgq_param(ins, 1, c->model.data);
	pgq_param(ins, 2, priority);
	pgq_param_len(ins, 3, payload->start, payload->len);
	if (has_info)
		pgq_param_len(ins, 4, info->start, info->len);
	else
		pgq_param(ins, 4, NULL);
	if (c->warnings.len)
		pgq_param_len(ins, 5, c->warnings.data, c->warnings.len);
	else
		pgq_param(ins, 5, NULL);
	if (!key)
		return 1;
	pgq_param_len(ins, 6, key, key_len);
	pgq_param(ins, 7, c->hash);
	pgq_param(ins, 8, ttl);
	st[0].sql = sql_idempotency_lock;
	pgq_param(&st[0], 0, c->model.data);
	pgq_param_len(&st[0], 1, key, key_len);
	return 2;
}

void pg_handle_submit(server_t *s, http_request_t *req)
{
	input_error_t err;
	body_t b;
	buf_t model = BUF_INIT;
	json_span_t payload, info;
	int has_info = 0, count;
	int64_t priority = 0;
	char prio[24], ttl[24], id[ID_TEXT_LEN + 1];
	pg_stmt_t st[2];
	call_t *c;
	size_t key_len = 0;
	const char *key = http_request_header(req, "idempotency-key", &key_len);

	memset(st, 0, sizeof(st));
	if (body_parse(&s->config, req->body, req->body_len, submit_fields, &b, &err) != 0 ||
	    read_model(&s->config, &b, &model, &err) != 0 ||
	    read_object(&b, "payload", 1, &payload, NULL, &err) != 0 ||
	    read_info(&s->config, &b, &info, &has_info, &err) != 0 ||
	    read_int(&b, "priority", INT32_MIN, INT32_MAX, &priority, &err) != 0) {
		respond_input_error(req, &err);
		goto out;
	}
	if (!auth_covers(s, req, model.data, model.len)) {
		auth_respond_model_not_found(req, model.data, model.len);
		goto out;
	}
	if (key && !idempotency_key_valid(key, key_len)) {
		respond_error(req, 400, "invalid_field", "Idempotency-Key",
			      "Idempotency-Key must be 1 to %d visible ASCII characters, "
			      "e.g. a UUID",
			      IDEMPOTENCY_KEY_MAX);
		goto out;
	}

	c = call_new(s, req, &model, &b);
	c->priority = priority;
	id_new_v7(&c->id, clock_wall_ms());
	if (key) {
		idempotency_body_hash(req->body, req->body_len, c->hash);
		excerpt(key, key_len, c->key_shown, sizeof(c->key_shown));
	}
	snprintf(prio, sizeof(prio), "%lld", (long long)priority);
	snprintf(ttl, sizeof(ttl), "%lld", (long long)s->config.idempotency_ttl_ms);
	count = submit_statements(s, c, &payload, &info, has_info, prio, key, key_len, ttl, id,
				  st);
	/* Ordered: submits commit, and so take their seq, in the order they arrived. */
	pgq_exec_ordered(s, st, count, on_submitted, c);
out:
	body_free(&b);
	buf_free(&model);
}

/* ---- status ---- */

/* The job's columns, then the database clock (column PGQ_JOB_COLUMN_COUNT) for the cache. */
static const char sql_status[] =
	"SELECT " PGQ_JOB_COLUMNS ", inferq_now_ms() FROM inferq_jobs WHERE id = $1::uuid "
	"AND model = $2";

/*
 * Caches the status body of finished job rec. Any node's retention sweep
 * may delete the row from done_at + --retention on, by the database clock.
 * So the entry expires then, counted from when the query was sent, because
 * the database read its clock after that. It expires after
 * --pg-status-cache-ttl at the latest.
 */
static void cache_finished(call_t *c, const job_record_t *rec, const PGresult *res,
			   const buf_t *body)
{
	const serve_config_t *config = &c->server->config;
	int64_t db_now = strtoll(PQgetvalue(res, 0, PGQ_JOB_COLUMN_COUNT), NULL, 10);
	int64_t life = rec->done_at + config->retention_ms - db_now;

	if (!job_state_is_terminal(rec->state) || config->pg_status_cache_ttl_ms == 0)
		return;
	if (life > config->pg_status_cache_ttl_ms)
		life = config->pg_status_cache_ttl_ms;
	if (life <= 0)
		return;
	(void)status_cache_put_until(c->server->status_cache, &rec->id, rec->model->data,
				     rec->model->len, body->data, body->len, c->sent_ms + life);
}

static void on_status(void *ctx, int rc, PGresult *const *results, int count, const char *err)
{
	call_t *c = ctx;
	job_record_t rec;
	buf_t reply = BUF_INIT;

	if (rc != 0) {
		pgq_respond_unavailable(c->server, c->req, rc, err);
	} else if (PQntuples(results[0]) == 0) {
		not_found(c->req, &c->id, c->model.data);
	} else {
		pgq_row_record(results[0], 0, &rec);
		render_status(&reply, &rec);
		cache_finished(c, &rec, results[0], &reply);
		respond_json(c->req, 200, &reply);
		job_record_clear(&rec);
	}
	call_free(c);
}

/*
 * Sends the cached status of finished job id and returns 1, or returns 0
 * when it is not cached. A job of another model gets the 404 of an unknown
 * job, as from the database.
 */
static int respond_cached_status(server_t *s, http_request_t *req, const iq_id_t *id,
				 const buf_t *model)
{
	const char *cached_model, *body;
	size_t cached_model_len, body_len;

	if (status_cache_get(s->status_cache, id, &cached_model, &cached_model_len, &body,
			     &body_len) != 0)
		return 0;
	if (cached_model_len != model->len || memcmp(cached_model, model->data, model->len) != 0)
		not_found(req, id, model->data);
	else
		http_respond(req, 200, NULL, NULL, body, body_len);
	return 1;
}

void pg_handle_status(server_t *s, http_request_t *req)
{
	input_error_t err;
	iq_id_t id;
	buf_t model = BUF_INIT;
	char text[ID_TEXT_LEN + 1];
	pg_stmt_t st = {.sql = sql_status};
	call_t *c;

	if (read_id_query(req->query, req->query_len, "request_id", &id, &err) != 0 ||
	    read_model_query(&s->config, req->query, req->query_len, &model, &err) != 0) {
		respond_input_error(req, &err);
		goto out;
	}
	/* The same response as for an unknown job, so other tenants' jobs stay invisible. */
	if (!auth_covers(s, req, model.data, model.len)) {
		not_found(req, &id, model.data);
		goto out;
	}
	if (respond_cached_status(s, req, &id, &model))
		goto out;
	c = call_new(s, req, &model, NULL);
	c->id = id;
	c->sent_ms = clock_mono_ms();
	id_format(&id, text);
	pgq_param(&st, 0, text);
	pgq_param(&st, 1, c->model.data);
	pgq_exec(s, &st, 1, on_status, c);
out:
	buf_free(&model);
}

/* ---- cancel ---- */

static const char sql_cancel[] =
	"WITH cur AS (SELECT id, state FROM inferq_jobs WHERE id = $1::uuid AND model = $2 "
	"FOR UPDATE), "
	"u AS (UPDATE inferq_jobs j SET state = 4, done_at = inferq_now_ms(), "
	"history = inferq_history_add(j.history, inferq_now_ms(), 'canceled', NULL, NULL, "
	"$3::int) FROM cur "
	"WHERE j.id = cur.id AND cur.state = 0 RETURNING j.state) "
	"SELECT cur.state, (SELECT state FROM u) FROM cur";

static void on_cancel(void *ctx, int rc, PGresult *const *results, int count, const char *err)
{
	call_t *c = ctx;
	buf_t reply = BUF_INIT;
	job_record_t rec = {0};
	job_state_t state;

	if (rc != 0) {
		pgq_respond_unavailable(c->server, c->req, rc, err);
		goto out;
	}
	if (PQntuples(results[0]) == 0) {
		not_found(c->req, &c->id, c->model.data);
		goto out;
	}
	state = (job_state_t)atoi(PQgetvalue(results[0], 0, 0));
	if (PQgetisnull(results[0], 0, 1)) {
		conflict_body(&reply, "invalid_state", NULL, state,
			      "only pending jobs can be canceled; this job is %s",
			      job_state_name(state));
		respond_json(c->req, 409, &reply);
		goto out;
	}
	rec.id = c->id;
	rec.state = JOB_CANCELED;
	rec.model = rbuf_new(c->model.data, c->model.len);
	pgq_observe(c->server, &rec, STORE_OP_UPDATE, OBSERVE_CAUSE_REQUEST, JOB_PENDING);
	render_state(&reply, &rec);
	add_warnings(&reply, c);
	respond_json(c->req, 200, &reply);
	job_record_clear(&rec);
out:
	call_free(c);
}

static const char *const cancel_fields[] = {"model", "request_id", NULL};

void pg_handle_cancel(server_t *s, http_request_t *req)
{
	input_error_t err;
	body_t b;
	buf_t model = BUF_INIT;
	iq_id_t id;
	char text[ID_TEXT_LEN + 1], history[16];
	pg_stmt_t st = {.sql = sql_cancel};
	call_t *c;

	if (body_parse(&s->config, req->body, req->body_len, cancel_fields, &b, &err) != 0 ||
	    read_model(&s->config, &b, &model, &err) != 0 ||
	    read_id(&b, "request_id", &id, &err) != 0) {
		respond_input_error(req, &err);
		goto out;
	}
	if (!auth_covers(s, req, model.data, model.len)) {
		not_found(req, &id, model.data);
		goto out;
	}
	c = call_new(s, req, &model, &b);
	c->id = id;
	id_format(&id, text);
	snprintf(history, sizeof(history), "%u", s->config.max_job_history);
	pgq_param(&st, 0, text);
	pgq_param(&st, 1, c->model.data);
	pgq_param(&st, 2, history);
	pgq_exec(s, &st, 1, on_cancel, c);
out:
	body_free(&b);
	buf_free(&model);
}

/* ---- metrics and clear ---- */

static const char sql_metrics[] =
	"SELECT (SELECT count(*) FROM inferq_jobs WHERE model = $1 AND state = 0), "
	"(SELECT count(*) FROM inferq_jobs WHERE model = $1 AND state = 1)";

static void on_metrics(void *ctx, int rc, PGresult *const *results, int count, const char *err)
{
	call_t *c = ctx;
	buf_t reply = BUF_INIT;
	unsigned long long waiting, running;

	if (rc != 0) {
		pgq_respond_unavailable(c->server, c->req, rc, err);
	} else {
		waiting = strtoull(PQgetvalue(results[0], 0, 0), NULL, 10);
		running = strtoull(PQgetvalue(results[0], 0, 1), NULL, 10);
		buf_printf(&reply,
			   "{\"messages_waiting\":%llu,\"messages_running\":%llu,"
			   "\"total_jobs\":%llu}",
			   waiting, running, waiting + running);
		respond_json(c->req, 200, &reply);
	}
	call_free(c);
}

void pg_handle_metrics(server_t *s, http_request_t *req)
{
	input_error_t err;
	buf_t model = BUF_INIT;
	pg_stmt_t st = {.sql = sql_metrics};
	call_t *c;

	if (read_model_query(&s->config, req->query, req->query_len, &model, &err) != 0) {
		respond_input_error(req, &err);
		goto out;
	}
	if (!auth_covers(s, req, model.data, model.len)) {
		auth_respond_model_not_found(req, model.data, model.len);
		goto out;
	}
	c = call_new(s, req, &model, NULL);
	pgq_param(&st, 0, c->model.data);
	pgq_exec(s, &st, 1, on_metrics, c);
out:
	buf_free(&model);
}

static const char sql_clear[] =
	"WITH u AS (UPDATE inferq_jobs SET state = 4, done_at = inferq_now_ms(), "
	"history = inferq_history_add(history, inferq_now_ms(), 'canceled', NULL, NULL, "
	"$2::int) "
	"WHERE model = $1 AND state = 0 RETURNING id) SELECT id FROM u";

static void on_clear(void *ctx, int rc, PGresult *const *results, int count, const char *err)
{
	call_t *c = ctx;
	buf_t reply = BUF_INIT;
	int n;

	if (rc != 0) {
		pgq_respond_unavailable(c->server, c->req, rc, err);
	} else {
		n = PQntuples(results[0]);
		for (int i = 0; i < n; i++) {
			id_parse(PQgetvalue(results[0], i, 0),
				 (size_t)PQgetlength(results[0], i, 0), &c->id);
			observe_one(c, JOB_CANCELED, STORE_OP_UPDATE, JOB_PENDING);
		}
		if (n)
			log_fields(LOG_INFO, "queue", "cleared pending jobs",
				   LOG_STR("model", c->model.data), LOG_INT("count", n));
		buf_printf(&reply, "{\"canceled_count\":%d}", n);
		add_warnings(&reply, c);
		respond_json(c->req, 200, &reply);
	}
	call_free(c);
}

static const char *const clear_fields[] = {"model", NULL};

void pg_handle_clear(server_t *s, http_request_t *req)
{
	input_error_t err;
	body_t b;
	buf_t model = BUF_INIT;
	pg_stmt_t st = {.sql = sql_clear};
	char history[16];
	call_t *c;

	if (body_parse(&s->config, req->body, req->body_len, clear_fields, &b, &err) != 0 ||
	    read_model(&s->config, &b, &model, &err) != 0) {
		respond_input_error(req, &err);
		goto out;
	}
	if (!auth_covers(s, req, model.data, model.len)) {
		auth_respond_model_not_found(req, model.data, model.len);
		goto out;
	}
	c = call_new(s, req, &model, &b);
	snprintf(history, sizeof(history), "%u", s->config.max_job_history);
	pgq_param(&st, 0, c->model.data);
	pgq_param(&st, 1, history);
	pgq_exec(s, &st, 1, on_clear, c);
out:
	body_free(&b);
	buf_free(&model);
}

/* ---- readiness and routes without a postgres version ---- */

static void on_ready(void *ctx, int rc, PGresult *const *results, int count, const char *err)
{
	call_t *c = ctx;
	static const char body[] = "{\"status\":\"ready\"}";

	if (rc != 0)
		pgq_respond_unavailable(c->server, c->req, rc, err);
	else
		http_respond(c->req, 200, NULL, NULL, body, sizeof(body) - 1);
	call_free(c);
}

void pg_handle_readyz(server_t *s, http_request_t *req)
{
	buf_t none = BUF_INIT;
	pg_stmt_t st = {.sql = "SELECT 1"};

	pgq_exec(s, &st, 1, on_ready, call_new(s, req, &none, NULL));
}
