/*
 * Batch routes on the postgres store (batch.h has the checks and response
 * bodies both stores share).
 *
 * POST /v1/queue/submit_batch is one statement over arrays (unnest WITH
 * ORDINALITY), run as an ordered task: the jobs commit together, take
 * their seq in the order of the batch, and cost one round trip. With an
 * Idempotency-Key a first statement takes the advisory lock of job 0's
 * key, as a single submit does, and the insert happens only when job 0's
 * key was not used within --idempotency-ttl.
 *
 * POST /v1/queue/complete_batch applies the fencing and late-completion
 * rules of a single complete (pg_fence.c) to every job in one statement
 * over arrays, which locks the rows in id order so that two batches never
 * deadlock. A job with an info patch is read first and merged on the node,
 * and its update applies only if info is unchanged since (compare and
 * swap). Jobs that must run again (a second entry for the same job, or an
 * info changed meanwhile) go in another round, so a batch usually costs
 * one round trip, two with patches.
 *
 * SPDX-License-Identifier: MIT
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "auth.h"
#include "batch.h"
#include "error.h"
#include "idempotency.h"
#include "inferq_error.h"
#include "json.h"
#include "log.h"
#include "observe.h"
#include "pgq.h"
#include "render.h"

#define FENCE_ATTEMPTS 8 /* reads of a job whose info other calls keep changing, as pg_fence.c */

/*
 * Appends one element to the PostgreSQL array literal out, which
 * array_begin opened: v[0..len) quoted, or NULL.
 */
static void put_element(buf_t *out, const char *v, size_t len)
{
	/* Every element ends with '"' or "NULL", so only an empty array ends with '{'. */
	if (out->data[out->len - 1] != '{')
		buf_putc(out, ',');
	if (v == NULL) {
		buf_puts(out, "NULL");
		return;
	}
	buf_putc(out, '"');
	for (size_t i = 0; i < len; i++) {
		if (v[i] == '"' || v[i] == '\\')
			buf_putc(out, '\\');
		buf_putc(out, v[i]);
	}
	buf_putc(out, '"');
}

static void array_begin(buf_t *out)
{
	buf_putc(out, '{');
}

static void array_end(buf_t *out)
{
	buf_putc(out, '}');
}

/* ---- submit_batch ---- */

static const char sql_key_lock[] =
	"SELECT pg_advisory_xact_lock(hashtextextended($1 || ' ' || $2, 0))";

/*
 * $1..$7 arrays of id, model, priority, payload, info, warnings and stored
 * key; $8 body hash; $9 --idempotency-ttl in ms. Returns one row per job in
 * batch order: its index, and the id and body hash of the job an earlier
 * batch stored under its key, if any. The waiters hear of the jobs after
 * the commit (pgq_job_added), not by a NOTIFY in here.
 */
static const char sql_submit_batch[] =
	"WITH input AS (SELECT * FROM unnest($1::uuid[], $2::text[], $3::int[], $4::text[], "
	"$5::text[], $6::text[], $7::text[]) WITH ORDINALITY "
	"AS t(id, model, priority, payload, info, warnings, key, ord)), "
	"prev AS (SELECT i.ord, p.id, p.body_hash FROM input i CROSS JOIN LATERAL "
	"(SELECT id, body_hash FROM inferq_jobs j WHERE i.key IS NOT NULL AND j.model = i.model "
	"AND j.idempotency_key = i.key AND j.created_at >= inferq_now_ms() - $9::bigint "
	"ORDER BY seq DESC LIMIT 1) p), "
	"ins AS (INSERT INTO inferq_jobs (id, model, priority, created_at, payload, info, "
	"warnings, idempotency_key, body_hash) SELECT id, model, priority, inferq_now_ms(), "
	"payload, info, warnings, key, $8 FROM input "
	"WHERE NOT EXISTS (SELECT 1 FROM prev WHERE prev.ord = 1) ORDER BY ord RETURNING model) "
	"SELECT i.ord, p.id, p.body_hash FROM input i "
	"LEFT JOIN prev p ON p.ord = i.ord ORDER BY i.ord";

typedef struct {
	server_t *server;
	http_request_t *req;
	batch_t batch;
	iq_id_t *ids;
} submit_call_t;

static void submit_free(submit_call_t *c)
{
	batch_free(&c->batch);
	free(c->ids);
	free(c);
}

/* Sends the response for a batch whose job 0 was stored before under the same key. */
static void answer_repeated(submit_call_t *c, const PGresult *r)
{
	const batch_t *b = &c->batch;
	buf_t reply = BUF_INIT;

	if (strcmp(PQgetvalue(r, 0, 2), b->hash) != 0) {
		batch_respond_key_reused(c->req, b);
		return;
	}
	/* The same body: the first batch's jobs were committed together. */
	for (size_t i = 0; i < b->count; i++) {
		if (PQgetisnull(r, (int)i, 1)) {
			batch_respond_members_gone(c->req, b);
			return;
		}
		id_parse(PQgetvalue(r, (int)i, 1), (size_t)PQgetlength(r, (int)i, 1), &c->ids[i]);
	}
	batch_render_ids(&reply, b, c->ids);
	respond_json(c->req, 200, &reply);
}

static void on_batch_submitted(void *ctx, int rc, PGresult *const *results, int count,
			       const char *err)
{
	submit_call_t *c = ctx;
	const PGresult *r = rc == 0 ? results[count - 1] : NULL;
	const batch_t *b = &c->batch;
	buf_t reply = BUF_INIT;
	char first[ID_TEXT_LEN + 1];

	if (rc != 0) {
		pgq_respond_unavailable(c->server, c->req, rc, err);
		goto out;
	}
	if (!PQgetisnull(r, 0, 1)) {
		answer_repeated(c, r);
		goto out;
	}
	batch_render_ids(&reply, b, c->ids);
	respond_json(c->req, 200, &reply);
	for (size_t i = 0; i < b->count; i++) {
		job_record_t rec = {0};

		rec.id = c->ids[i];
		rec.state = JOB_PENDING;
		rec.model = rbuf_new(b->items[i].model.data, b->items[i].model.len);
		pgq_observe(c->server, &rec, STORE_OP_INSERT, OBSERVE_CAUSE_REQUEST, JOB_PENDING);
		job_record_clear(&rec);
		/* Once per run of jobs of one model: the hints of a model coalesce anyway. */
		if (i == 0 || b->items[i].model.len != b->items[i - 1].model.len ||
		    memcmp(b->items[i].model.data, b->items[i - 1].model.data,
			   b->items[i].model.len) != 0)
			pgq_job_added(c->server, b->items[i].model.data);
	}
	id_format(&c->ids[0], first);
	log_fields(LOG_DEBUG, "queue", "submitted a batch", LOG_STR("request_id", first),
		   LOG_STR("model", b->items[0].model.data), LOG_UINT("jobs", b->count));
out:
	submit_free(c);
}

/* The arrays of a submit_batch statement, as PostgreSQL array literals. */
typedef struct {
	buf_t ids, models, priorities, payloads, infos, warnings, keys;
} submit_arrays_t;

static void fill_submit_arrays(const submit_call_t *c, submit_arrays_t *a)
{
	const batch_t *b = &c->batch;
	char text[ID_TEXT_LEN + 1], number[24], key[BATCH_KEY_MAX + 1];

	memset(a, 0, sizeof(*a));
	array_begin(&a->ids);
	array_begin(&a->models);
	array_begin(&a->priorities);
	array_begin(&a->payloads);
	array_begin(&a->infos);
	array_begin(&a->warnings);
	array_begin(&a->keys);
	for (size_t i = 0; i < b->count; i++) {
		const batch_item_t *it = &b->items[i];
		const buf_t *warnings = &it->body.warnings;

		id_format(&c->ids[i], text);
		put_element(&a->ids, text, ID_TEXT_LEN);
		put_element(&a->models, it->model.data, it->model.len);
		snprintf(number, sizeof(number), "%lld", (long long)it->priority);
		put_element(&a->priorities, number, strlen(number));
		put_element(&a->payloads, it->payload.start, it->payload.len);
		put_element(&a->infos, it->has_info ? it->info.start : NULL, it->info.len);
		put_element(&a->warnings, warnings->len ? warnings->data : NULL, warnings->len);
		if (b->key)
			put_element(&a->keys, key, batch_member_key(b, i, key));
		else
			put_element(&a->keys, NULL, 0);
	}
	array_end(&a->ids);
	array_end(&a->models);
	array_end(&a->priorities);
	array_end(&a->payloads);
	array_end(&a->infos);
	array_end(&a->warnings);
	array_end(&a->keys);
}

static void free_submit_arrays(submit_arrays_t *a)
{
	buf_free(&a->ids);
	buf_free(&a->models);
	buf_free(&a->priorities);
	buf_free(&a->payloads);
	buf_free(&a->infos);
	buf_free(&a->warnings);
	buf_free(&a->keys);
}

static void param_array(pg_stmt_t *st, int i, const buf_t *a)
{
	pgq_param_len(st, i, a->data, a->len);
}

void pg_handle_submit_batch(server_t *s, http_request_t *req)
{
	submit_call_t *c = xcalloc(1, sizeof(*c));
	batch_t *b = &c->batch;
	submit_arrays_t a;
	pg_stmt_t st[2];
	pg_stmt_t *ins = &st[0];
	char ttl[24], key0[BATCH_KEY_MAX + 1];
	size_t key0_len;
	queue_time_t now = server_now();

	c->server = s;
	c->req = req;
	b->key = http_request_header(req, "idempotency-key", &b->key_len);
	if (batch_check(s, req, b) != 0)
		goto fail;
	if (b->key && !idempotency_key_valid(b->key, b->key_len)) {
		respond_error(req, 400, "invalid_field", "Idempotency-Key",
			      "Idempotency-Key must be 1 to %d visible ASCII characters, e.g. a UUID",
			      IDEMPOTENCY_KEY_MAX);
		goto fail;
	}
	if (b->key)
		idempotency_body_hash(req->body, req->body_len, b->hash);
	c->ids = xcalloc(b->count, sizeof(*c->ids));
	for (size_t i = 0; i < b->count; i++)
		id_new_v7(&c->ids[i], now.wall_ms);

	memset(st, 0, sizeof(st));
	if (b->key) {
		/* Serializes nodes that get the same batch key, as a single submit does. */
		key0_len = batch_member_key(b, 0, key0);
		st[0].sql = sql_key_lock;
		pgq_param_len(&st[0], 0, b->items[0].model.data, b->items[0].model.len);
		pgq_param_len(&st[0], 1, key0, key0_len);
		ins = &st[1];
	}
	fill_submit_arrays(c, &a);
	snprintf(ttl, sizeof(ttl), "%lld", (long long)s->config.idempotency_ttl_ms);
	ins->sql = sql_submit_batch;
	param_array(ins, 0, &a.ids);
	param_array(ins, 1, &a.models);
	param_array(ins, 2, &a.priorities);
	param_array(ins, 3, &a.payloads);
	param_array(ins, 4, &a.infos);
	param_array(ins, 5, &a.warnings);
	param_array(ins, 6, &a.keys);
	pgq_param(ins, 7, b->key ? b->hash : NULL);
	pgq_param(ins, 8, ttl);
	/* Ordered, as single submits: batches and submits take their seq in arrival order. */
	pgq_exec_ordered(s, st, b->key ? 2 : 1, on_batch_submitted, c);
	free_submit_arrays(&a);
	return;
fail:
	submit_free(c);
}

/* ---- complete_batch ---- */

/* $1..$3 arrays of id, model and claim id: each job's state, claim check and info. */
static const char sql_complete_read[] =
	"SELECT i.ord, j.state, j.claim_id IS NOT DISTINCT FROM i.claim_id, j.info "
	"FROM unnest($1::uuid[], $2::text[], $3::uuid[]) WITH ORDINALITY AS i(id, model, "
	"claim_id, ord) JOIN inferq_jobs j ON j.id = i.id AND j.model = i.model";

/*
 * $1..$7 arrays of id, model, claim id, outputs, new info, the info it was
 * merged from, and whether the job has a patch; $8 --max-job-history, for
 * the history event each completed job gets. Returns one row per job
 * found: its index, the state seen, whether the claim is current, whether
 * info was unchanged, whether the update applied, and claimed_at and done_at.
 */
static const char sql_complete_batch[] =
	"WITH input AS (SELECT * FROM unnest($1::uuid[], $2::text[], $3::uuid[], $4::text[], "
	"$5::text[], $6::text[], $7::bool[]) WITH ORDINALITY AS t(id, model, claim_id, outputs, "
	"new_info, old_info, patched, ord)), "
	"cur AS (SELECT j.id, j.model, j.state, j.claim_id, j.info FROM inferq_jobs j "
	"WHERE j.id IN (SELECT id FROM input) ORDER BY j.id FOR UPDATE), "
	"fits AS (SELECT i.ord, i.id, c.state, c.claim_id IS NOT DISTINCT FROM i.claim_id AS mine, "
	"(NOT i.patched OR c.info IS NOT DISTINCT FROM i.old_info) AS same, i.outputs, "
	"i.new_info, i.patched FROM input i JOIN cur c ON c.id = i.id AND c.model = i.model), "
	"u AS (UPDATE inferq_jobs j SET state = 2, outputs = f.outputs, info = CASE WHEN "
	"f.patched THEN f.new_info ELSE j.info END, done_at = inferq_now_ms(), "
	"lease_expires_at = 0, history = inferq_history_add(j.history, inferq_now_ms(), "
	"'completed', j.worker, NULL, $8::int) FROM fits f WHERE j.id = f.id AND f.mine AND f.same "
	"AND f.state IN (0, 1) RETURNING j.id, j.claimed_at, j.done_at) "
	"SELECT f.ord, f.state, f.mine, f.same, u.id IS NOT NULL, u.claimed_at, u.done_at "
	"FROM fits f LEFT JOIN u ON u.id = f.id ORDER BY f.ord";

typedef enum {
	ITEM_WAITING, /* goes into the next round */
	ITEM_ROUND,   /* in the round that runs */
	ITEM_ENDED,   /* its result is in result */
} item_stage_t;

typedef struct {
	complete_item_t fields;
	item_stage_t stage;
	int attempts;    /* rounds that found its info changed */
	int merged;      /* new_info is this round's merge */
	buf_t new_info;  /* info after the patch */
	buf_t old_info;  /* info the patch was merged into */
	int old_null;    /* that info was NULL */
	buf_t result;    /* its entry of the response's data */
} complete_entry_t;

typedef struct {
	server_t *server;
	http_request_t *req;
	batch_t batch; /* only the envelope (top) is used */
	complete_entry_t *entries;
	size_t count;
	size_t *round; /* indexes of the entries in the round */
	size_t round_count;
	int committed; /* a task succeeded, so some jobs may have changed */
} complete_call_t;

static void complete_free(complete_call_t *c)
{
	for (size_t i = 0; i < c->count; i++) {
		complete_entry_t *e = &c->entries[i];

		body_free(&e->fields.body);
		buf_free(&e->fields.model);
		buf_free(&e->new_info);
		buf_free(&e->old_info);
		buf_free(&e->result);
	}
	free(c->entries);
	free(c->round);
	batch_free(&c->batch);
	free(c);
}

static void end_with_error(complete_entry_t *e, size_t index, const input_error_t *err,
			   int state)
{
	batch_put_job_error(&e->result, index, &e->fields.id, err, state);
	e->stage = ITEM_ENDED;
}

static void end_with_fault(complete_call_t *c, size_t index, batch_fault_t fault,
			   job_state_t state)
{
	complete_entry_t *e = &c->entries[index];
	input_error_t err;

	batch_fault(c->server, &err, fault, &e->fields.id, &e->fields.model, state);
	end_with_error(e, index, &err,
		       fault == BATCH_FAULT_NOT_FOUND || fault == BATCH_FAULT_TOO_LARGE ? -1
											  : (int)state);
}

/*
 * Ends entry index with the error that a job in state with claim check mine
 * gets, as pg_fence.c rejects a complete. Returns 1 when it did, 0 when the
 * job may be completed.
 */
static int reject_entry(complete_call_t *c, size_t index, job_state_t state, int mine)
{
	if (job_state_is_terminal(state))
		end_with_fault(c, index, BATCH_FAULT_FINISHED, state);
	else if (!c->entries[index].fields.has_claim)
		end_with_fault(c, index, BATCH_FAULT_NO_CLAIM, state);
	else if (!mine)
		end_with_fault(c, index, BATCH_FAULT_NOT_CURRENT, state);
	else
		return 0;
	return 1;
}

static void respond_batch(complete_call_t *c)
{
	buf_t reply = BUF_INIT;

	buf_puts(&reply, "{\"data\":[");
	for (size_t i = 0; i < c->count; i++) {
		if (i > 0)
			buf_putc(&reply, ',');
		buf_append(&reply, c->entries[i].result.data, c->entries[i].result.len);
	}
	buf_puts(&reply, "]}");
	body_add_warnings(&reply, &c->batch.top);
	respond_json(c->req, 200, &reply);
	complete_free(c);
}

/*
 * Ends every entry of the round, and every waiting one, with the failure of
 * a task. When the first task failed, the request gets a 503 instead, as a
 * single complete whose task failed does.
 */
static void fail_remaining(complete_call_t *c, int rc, const char *err)
{
	input_error_t e;

	if (!c->committed) {
		pgq_respond_unavailable(c->server, c->req, rc, err);
		complete_free(c);
		return;
	}
	for (size_t i = 0; i < c->count; i++) {
		if (c->entries[i].stage == ITEM_ENDED)
			continue;
		input_fail(&e, rc, "store_unavailable", NULL,
			   "%s; this job may or may not be done, so read its status before "
			   "retrying it",
			   err && *err ? err : "the database could not be reached");
		e.status = 503;
		end_with_error(&c->entries[i], i, &e, -1);
	}
	respond_batch(c);
}

static void run_round(complete_call_t *c);

static void observe_done(complete_call_t *c, size_t index, const PGresult *r, int row)
{
	complete_entry_t *e = &c->entries[index];
	job_record_t rec = {0};
	char text[ID_TEXT_LEN + 1];

	rec.id = e->fields.id;
	rec.model = rbuf_new(e->fields.model.data, e->fields.model.len);
	rec.state = JOB_DONE;
	rec.claimed_at = strtoll(PQgetvalue(r, row, 5), NULL, 10);
	rec.done_at = strtoll(PQgetvalue(r, row, 6), NULL, 10);
	pgq_observe(c->server, &rec, STORE_OP_UPDATE, OBSERVE_CAUSE_REQUEST,
		    (job_state_t)atoi(PQgetvalue(r, row, 1)));
	job_record_clear(&rec);
	id_format(&e->fields.id, text);
	buf_printf(&e->result, "{\"request_id\":\"%s\",\"status\":\"done\"}", text);
	body_add_warnings(&e->result, &e->fields.body);
	e->stage = ITEM_ENDED;
}

static void on_round_done(void *ctx, int rc, PGresult *const *results, int count,
			  const char *err)
{
	complete_call_t *c = ctx;
	const PGresult *r = rc == 0 ? results[0] : NULL;
	int rows = r ? PQntuples(r) : 0;
	input_error_t e;

	if (rc != 0) {
		fail_remaining(c, rc, err);
		return;
	}
	c->committed = 1;
	for (int row = 0; row < rows; row++) {
		size_t index = c->round[strtoul(PQgetvalue(r, row, 0), NULL, 10) - 1];
		complete_entry_t *entry = &c->entries[index];
		job_state_t state = (job_state_t)atoi(PQgetvalue(r, row, 1));

		if (strcmp(PQgetvalue(r, row, 4), "t") == 0) {
			observe_done(c, index, r, row);
		} else if (!reject_entry(c, index, state, strcmp(PQgetvalue(r, row, 2), "t") == 0)) {
			/* Only the info compare failed: another call changed it meanwhile. */
			entry->merged = 0;
			entry->stage = ITEM_WAITING;
			if (++entry->attempts >= FENCE_ATTEMPTS) {
				input_fail(&e, INFERQ_EBUSY, "store_unavailable", NULL,
					   "the job's info changed under every attempt to merge "
					   "this patch; retry this job");
				e.status = 503;
				end_with_error(entry, index, &e, -1);
			}
		}
	}
	/* Entries of the round without a row have no job of that id and model. */
	for (size_t i = 0; i < c->round_count; i++) {
		if (c->entries[c->round[i]].stage == ITEM_ROUND)
			end_with_fault(c, c->round[i], BATCH_FAULT_NOT_FOUND, JOB_PENDING);
	}
	run_round(c);
}

/* The arrays of a complete_batch statement, as PostgreSQL array literals. */
typedef struct {
	buf_t ids, models, claims, outputs, new_infos, old_infos, patched;
} complete_arrays_t;

static void run_update(complete_call_t *c)
{
	complete_arrays_t a;
	pg_stmt_t st = {.sql = sql_complete_batch};
	char text[ID_TEXT_LEN + 1], history[16];
	buf_t *all[] = {&a.ids, &a.models, &a.claims, &a.outputs, &a.new_infos, &a.old_infos,
			&a.patched};
	size_t n = sizeof(all) / sizeof(all[0]);

	memset(&a, 0, sizeof(a));
	for (size_t k = 0; k < n; k++)
		array_begin(all[k]);
	for (size_t i = 0; i < c->round_count; i++) {
		complete_entry_t *e = &c->entries[c->round[i]];
		iq_id_t none;

		id_format(&e->fields.id, text);
		put_element(&a.ids, text, ID_TEXT_LEN);
		put_element(&a.models, e->fields.model.data, e->fields.model.len);
		/* The all-zero id is nobody's claim: a job without claim_id is never "mine". */
		memset(&none, 0, sizeof(none));
		id_format(e->fields.has_claim ? &e->fields.claim_id : &none, text);
		put_element(&a.claims, text, ID_TEXT_LEN);
		put_element(&a.outputs, e->fields.outputs.start, e->fields.outputs.len);
		put_element(&a.new_infos, e->merged ? e->new_info.data : NULL, e->new_info.len);
		put_element(&a.old_infos, e->merged && !e->old_null ? e->old_info.data : NULL,
			    e->old_info.len);
		put_element(&a.patched, e->merged ? "t" : "f", 1);
	}
	for (size_t k = 0; k < n; k++) {
		array_end(all[k]);
		param_array(&st, (int)k, all[k]);
	}
	snprintf(history, sizeof(history), "%u", c->server->config.max_job_history);
	pgq_param(&st, (int)n, history);
	pgq_exec(c->server, &st, 1, on_round_done, c);
	for (size_t k = 0; k < n; k++)
		buf_free(all[k]);
}

/* Merges the patch of entry index into the info of row of read result r. */
static void merge_patch(complete_call_t *c, size_t index, const PGresult *r, int row)
{
	complete_entry_t *e = &c->entries[index];
	const serve_config_t *config = &c->server->config;
	const char *info = PQgetisnull(r, row, 3) ? NULL : PQgetvalue(r, row, 3);
	size_t info_len = info ? (size_t)PQgetlength(r, row, 3) : 0;

	buf_free(&e->new_info);
	buf_free(&e->old_info);
	if (json_merge_patch(info, info_len, e->fields.info.start, e->fields.info.len,
			     config->max_json_depth, &e->new_info) != 0 ||
	    e->new_info.len > config->max_info_bytes) {
		end_with_fault(c, index, BATCH_FAULT_TOO_LARGE, JOB_PENDING);
		return;
	}
	e->old_null = info == NULL;
	if (info)
		buf_append(&e->old_info, info, info_len);
	e->merged = 1;
}

static void on_read_done(void *ctx, int rc, PGresult *const *results, int count,
			 const char *err)
{
	complete_call_t *c = ctx;
	const PGresult *r = rc == 0 ? results[0] : NULL;
	size_t kept = 0;

	if (rc != 0) {
		fail_remaining(c, rc, err);
		return;
	}
	for (int row = 0; row < PQntuples(r); row++) {
		size_t index = c->round[strtoul(PQgetvalue(r, row, 0), NULL, 10) - 1];

		if (!reject_entry(c, index, (job_state_t)atoi(PQgetvalue(r, row, 1)),
			    strcmp(PQgetvalue(r, row, 2), "t") == 0))
			merge_patch(c, index, r, row);
	}
	/* Keeps in the round the entries the update decides: merged ones, and ones
	 * without a patch. A patched entry the read did not find has no job. */
	for (size_t i = 0; i < c->round_count; i++) {
		complete_entry_t *e = &c->entries[c->round[i]];

		if (e->stage == ITEM_ROUND && e->fields.has_info && !e->merged)
			end_with_fault(c, c->round[i], BATCH_FAULT_NOT_FOUND, JOB_PENDING);
		if (e->stage == ITEM_ROUND)
			c->round[kept++] = c->round[i];
	}
	c->round_count = kept;
	if (kept == 0) {
		run_round(c);
		return;
	}
	run_update(c);
}

static void run_read(complete_call_t *c)
{
	buf_t ids = BUF_INIT, models = BUF_INIT, claims = BUF_INIT;
	pg_stmt_t st = {.sql = sql_complete_read};
	char text[ID_TEXT_LEN + 1];

	array_begin(&ids);
	array_begin(&models);
	array_begin(&claims);
	for (size_t i = 0; i < c->round_count; i++) {
		complete_entry_t *e = &c->entries[c->round[i]];
		iq_id_t none;

		/* Every entry of the round is listed, so the row indexes match c->round,
		 * but only patched ones need the read: the others get the zero id, which
		 * no job has. */
		memset(&none, 0, sizeof(none));
		id_format(e->fields.has_info && !e->merged ? &e->fields.id : &none, text);
		put_element(&ids, text, ID_TEXT_LEN);
		put_element(&models, e->fields.model.data, e->fields.model.len);
		id_format(e->fields.has_claim ? &e->fields.claim_id : &none, text);
		put_element(&claims, text, ID_TEXT_LEN);
	}
	array_end(&ids);
	array_end(&models);
	array_end(&claims);
	param_array(&st, 0, &ids);
	param_array(&st, 1, &models);
	param_array(&st, 2, &claims);
	pgq_exec(c->server, &st, 1, on_read_done, c);
	buf_free(&ids);
	buf_free(&models);
	buf_free(&claims);
}

/*
 * Runs the next round over the waiting entries, at most one per job (a
 * later entry for the same job waits for the next round, so it sees the
 * first one's outcome, as on the local store), or responds when
 * none waits.
 */
static void run_round(complete_call_t *c)
{
	size_t patched = 0;

	c->round_count = 0;
	for (size_t i = 0; i < c->count; i++) {
		complete_entry_t *e = &c->entries[i];
		size_t k;

		if (e->stage != ITEM_WAITING)
			continue;
		for (k = 0; k < c->round_count; k++) {
			if (memcmp(&c->entries[c->round[k]].fields.id, &e->fields.id,
				   sizeof(e->fields.id)) == 0)
				break;
		}
		if (k < c->round_count)
			continue;
		e->stage = ITEM_ROUND;
		c->round[c->round_count++] = i;
		patched += e->fields.has_info && !e->merged;
	}
	if (c->round_count == 0) {
		respond_batch(c);
		return;
	}
	if (patched > 0)
		run_read(c);
	else
		run_update(c);
}

void pg_handle_complete_batch(server_t *s, http_request_t *req)
{
	complete_call_t *c = xcalloc(1, sizeof(*c));
	const json_span_t *jobs;
	json_span_t v;
	json_iter_t it;

	c->server = s;
	c->req = req;
	/* The envelope is checked whole; each job then succeeds or fails on its own. */
	if (batch_check_envelope(s, req, &c->batch, &jobs) != 0) {
		complete_free(c);
		return;
	}
	c->entries = xcalloc(c->batch.count, sizeof(*c->entries));
	c->round = xcalloc(c->batch.count, sizeof(*c->round));
	json_array_begin(&it, *jobs);
	for (size_t i = 0; json_array_next(&it, &v); i++) {
		complete_entry_t *e = &c->entries[i];
		input_error_t err;
		int has_id = 0;

		c->count = i + 1;
		if (batch_read_complete_item(s, &v, &e->fields, &has_id, &err) != 0) {
			batch_put_job_error(&e->result, i, has_id ? &e->fields.id : NULL, &err, -1);
			e->stage = ITEM_ENDED;
		} else if (!auth_covers(s, req, e->fields.model.data, e->fields.model.len)) {
			end_with_fault(c, i, BATCH_FAULT_NOT_FOUND, JOB_PENDING);
		}
	}
	run_round(c);
}
