/*
 * Batch routes, inferq extensions that Together's API does not have: up to
 * --max-batch jobs per request and one commit per request, so a client or
 * worker pays the per-request cost once per batch instead of once per job.
 *
 * POST /v1/queue/submit_batch is all or nothing. Every job is checked
 * (fields, then whether the key covers its model) before any job is added
 * to the queue, so one bad job rejects the whole request with nothing
 * stored. The jobs of an accepted batch are added in one loop pass, so one
 * commit holds them all, and the 200 is sent only after that commit.
 *
 * An Idempotency-Key covers a whole submit_batch: job i is stored with the
 * key "KEY i" (a space cannot occur in a client's key, so these never meet
 * the keys of single submits) and the SHA-256 of the whole body. A replay
 * looks up job 0 under the model of job 0, then every other job under its
 * model.
 *
 * POST /v1/queue/complete_batch checks only its envelope as a whole; each
 * job then succeeds or fails on its own, because claims fence single jobs,
 * and the 200 lists one result per job.
 *
 * SPDX-License-Identifier: MIT
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "auth.h"
#include "error.h"
#include "inferq_error.h"
#include "log.h"
#include "render.h"
#include "request.h"
#include "routes.h"

#define BATCH_KEY_MAX (IDEMPOTENCY_KEY_MAX + 12) /* "KEY i" with a space and up to 10 digits */

/* One checked job of a batch; its spans point into the request body. */
typedef struct {
	body_t body;
	buf_t model;
	json_span_t payload;
	json_span_t info;
	int has_info;
	int64_t priority;
} batch_item_t;

/* A submit_batch request after its checks. */
typedef struct {
	body_t top;
	batch_item_t *items;
	size_t count;
	const char *key; /* Idempotency-Key header, or NULL */
	size_t key_len;
	char hash[BODY_HASH_HEX + 1]; /* of the whole body, when key is set */
} batch_t;

static const char *const batch_fields[] = {"jobs", NULL};
static const char *const job_fields[] = {"model", "payload", "info", "priority", NULL};

static const char *value_kind(json_type_t t)
{
	switch (t) {
	case JSON_TYPE_NULL: return "null";
	case JSON_TYPE_FALSE:
	case JSON_TYPE_TRUE: return "a boolean";
	case JSON_TYPE_NUMBER: return "a number";
	case JSON_TYPE_STRING: return "a string";
	case JSON_TYPE_ARRAY: return "an array";
	case JSON_TYPE_OBJECT: return "an object";
	}
	return "a value";
}

/* Sends err about job index: param and message name the field as jobs[index].FIELD. */
static void respond_job_error(http_request_t *req, size_t index, const input_error_t *err)
{
	input_error_t e = *err;
	char param[96];

	if (err->param)
		snprintf(param, sizeof(param), "jobs[%zu].%s", index, err->param);
	else
		snprintf(param, sizeof(param), "jobs[%zu]", index);
	e.param = param;
	snprintf(e.message, sizeof(e.message), "%s: %.400s", param, err->message);
	respond_input_error(req, &e);
}

/* Checks the fields of job index, and that the request's key covers its model. */
static int check_job(server_t *s, http_request_t *req, const json_span_t *v, size_t index,
                     const batch_item_t *prev, batch_item_t *it)
{
	input_error_t err;
	char param[64];

	if (v->type != JSON_TYPE_OBJECT) {
		snprintf(param, sizeof(param), "jobs[%zu]", index);
		respond_error(
		    req, 400, "invalid_field", param,
		    "%s must be a JSON object such as {\"model\": ..., \"payload\": {...}}, "
		    "not %s",
		    param, value_kind(v->type));
		return INFERQ_EINVAL;
	}
	if (body_parse_object(v, job_fields, &it->body, &err) != 0 ||
	    read_model(&s->config, &it->body, &it->model, &err) != 0 ||
	    read_object(&it->body, "payload", 1, &it->payload, NULL, &err) != 0 ||
	    read_info(&s->config, &it->body, &it->info, &it->has_info, &err) != 0 ||
	    read_int(&it->body, "priority", INT32_MIN, INT32_MAX, &it->priority, &err) != 0) {
		respond_job_error(req, index, &err);
		return INFERQ_EINVAL;
	}

	/* Runs of one model are common, so the key is checked once per run. */
	if (prev && prev->model.len == it->model.len &&
	    memcmp(prev->model.data, it->model.data, it->model.len) == 0)
		return 0;
	if (!auth_covers(s, req, it->model.data, it->model.len)) {
		snprintf(param, sizeof(param), "jobs[%zu].model", index);
		respond_error(req, 404, "not_found", param,
		              "%s: model %s not found; check the model name and that your API key "
		              "covers it. No job of the batch was stored",
		              param, it->model.data);
		return INFERQ_ENOTFOUND;
	}
	return 0;
}

/*
 * Checks the envelope {"jobs": [...]} of a batch route: an array of 1 to
 * --max-batch elements. Fills b->top and *jobs, or responds and returns an
 * error.
 */
static int check_envelope(server_t *s, http_request_t *req, batch_t *b, const json_span_t **jobs)
{
	input_error_t err;
	json_span_t v;
	json_iter_t it;
	size_t count = 0;

	if (body_parse(&s->config, req->body, req->body_len, batch_fields, &b->top, &err) != 0) {
		respond_input_error(req, &err);
		return INFERQ_EINVAL;
	}
	*jobs = body_field(&b->top, "jobs");
	if (*jobs == NULL) {
		respond_error(req, 400, "missing_field", "jobs",
		              "field \"jobs\" is required; send {\"jobs\": [{\"model\": ..., "
		              "...}, ...]}");
		return INFERQ_EINVAL;
	}
	if ((*jobs)->type != JSON_TYPE_ARRAY) {
		respond_error(req, 400, "invalid_field", "jobs",
		              "jobs must be an array of job objects, not %s",
		              value_kind((*jobs)->type));
		return INFERQ_EINVAL;
	}
	json_array_begin(&it, **jobs);
	while (json_array_next(&it, &v))
		count++;
	if (count == 0) {
		respond_error(req, 400, "invalid_field", "jobs",
		              "jobs is empty; send at least one job");
		return INFERQ_EINVAL;
	}
	if (count > s->config.max_batch) {
		respond_error(req, 400, "too_large", "jobs",
		              "jobs lists %zu jobs; the limit is %u (--max-batch), so split the "
		              "batch",
		              count, s->config.max_batch);
		return INFERQ_ELIMIT;
	}
	b->count = count;
	return 0;
}

/* Reads the jobs of a submit_batch and checks every one. Responds and returns an error on the first
 * fault. */
static int check_batch(server_t *s, http_request_t *req, batch_t *b)
{
	const json_span_t *jobs;
	json_span_t v;
	json_iter_t it;
	size_t count;

	if (check_envelope(s, req, b, &jobs) != 0)
		return INFERQ_EINVAL;
	count = b->count;
	b->count = 0; /* items checked so far, which batch_free() frees */
	b->items = xcalloc(count, sizeof(*b->items));
	json_array_begin(&it, *jobs);
	for (size_t i = 0; json_array_next(&it, &v); i++) {
		b->count = i + 1;
		if (check_job(s, req, &v, i, i ? &b->items[i - 1] : NULL, &b->items[i]) != 0)
			return INFERQ_EINVAL;
	}
	return 0;
}

static void batch_free(batch_t *b)
{
	for (size_t i = 0; b->items && i < b->count; i++) {
		body_free(&b->items[i].body);
		buf_free(&b->items[i].model);
	}
	free(b->items);
	body_free(&b->top);
}

/* Writes the stored Idempotency-Key of job index: "KEY index". */
static size_t member_key(const batch_t *b, size_t index, char out[BATCH_KEY_MAX + 1])
{
	return (size_t)snprintf(out, BATCH_KEY_MAX + 1, "%.*s %zu", (int)b->key_len, b->key, index);
}

/*
 * Finds job index of an earlier batch with the same key: among the
 * uncommitted jobs, then in the store within --idempotency-ttl. Fills *id
 * and hash. Returns 0, INFERQ_ENOTFOUND or INFERQ_EIO.
 */
static int find_member(server_t *s, const batch_t *b, size_t index, queue_time_t now, iq_id_t *id,
                       char hash[BODY_HASH_HEX + 1])
{
	const buf_t *model = &b->items[index].model;
	char key[BATCH_KEY_MAX + 1];
	size_t key_len = member_key(b, index, key);
	job_t *job;

	job = idempotency_find(s->idempotency, model->data, model->len, key, key_len);
	if (job) {
		*id = job->rec.id;
		memcpy(hash, job->rec.body_hash->data, BODY_HASH_HEX + 1);
		return 0;
	}
	return store_find_idempotency(s->store, model->data, model->len, key, key_len,
	                              now.wall_ms - s->config.idempotency_ttl_ms, id, hash);
}

/* Queues the 200 with the ids of the batch's jobs, in order, for after the commit. */
static void reply_ids(server_t *s, http_request_t *req, const batch_t *b, const iq_id_t *ids)
{
	buf_t reply = BUF_INIT;
	char text[ID_TEXT_LEN + 1];

	buf_puts(&reply, "{\"data\":[");
	for (size_t i = 0; i < b->count; i++) {
		id_format(&ids[i], text);
		buf_printf(&reply, "%s{\"requestId\":\"%s\",\"request_id\":\"%s\"}", i ? "," : "",
		           text, text);
		body_add_warnings(&reply, &b->items[i].body);
	}
	buf_puts(&reply, "]}");
	body_add_warnings(&reply, &b->top);
	/* Sent after the commit, so an uncommitted first batch is never revealed. */
	engine_reply_after_commit(s, req, 200, &reply);
}

/*
 * Responds to a batch whose Idempotency-Key was used before: the first
 * batch's ids for the same body, 409 for another body. Returns 1 when it
 * responded, 0 when the key is new.
 */
static int answer_repeated_batch(server_t *s, http_request_t *req, const batch_t *b,
                                 queue_time_t now)
{
	char first_hash[BODY_HASH_HEX + 1];
	char hash[BODY_HASH_HEX + 1];
	char shown[64];
	iq_id_t *ids;
	int rc, responded = 1;

	ids = xcalloc(b->count, sizeof(*ids));
	rc = find_member(s, b, 0, now, &ids[0], first_hash);
	if (rc == INFERQ_ENOTFOUND) {
		responded = 0;
		goto out;
	}
	if (rc == 0 && strcmp(first_hash, b->hash) != 0) {
		respond_error(
		    req, 409, "idempotency_conflict", "Idempotency-Key",
		    "Idempotency-Key \"%s\" was already used for a batch whose first job "
		    "is for model %s, with a different body; use a new key for a new batch",
		    excerpt(b->key, b->key_len, shown, sizeof(shown)), b->items[0].model.data);
		goto out;
	}

	/* The same body: the first batch's jobs were committed together, or all wait to be. */
	for (size_t i = 1; rc == 0 && i < b->count; i++)
		rc = find_member(s, b, i, now, &ids[i], hash);
	if (rc == 0)
		reply_ids(s, req, b, ids);
	else if (rc == INFERQ_ENOTFOUND)
		respond_error(
		    req, 409, "idempotency_conflict", "Idempotency-Key",
		    "Idempotency-Key \"%s\" was used for this batch, but some of its jobs "
		    "were deleted after --retention; use a new key to submit it again",
		    excerpt(b->key, b->key_len, shown, sizeof(shown)));
	else
		respond_error(req, 503, "store_unavailable", NULL,
		              "the store could not be read; retry later");
out:
	free(ids);
	return responded;
}

/* Adds the jobs of b to the queue, records their inserts and fills ids. */
static void insert_jobs(server_t *s, const batch_t *b, queue_time_t now, iq_id_t *ids)
{
	queue_model_t *m = NULL;
	char key[BATCH_KEY_MAX + 1];

	for (size_t i = 0; i < b->count; i++) {
		const batch_item_t *it = &b->items[i];
		job_t *job = queue_job_new();

		if (m == NULL || m->name->len != it->model.len ||
		    memcmp(m->name->data, it->model.data, it->model.len) != 0) {
			m = queue_model_get(s->queue, it->model.data, it->model.len, 1);
			server_model_state(m);
		}
		id_new_v7(&job->rec.id, now.wall_ms);
		job->rec.seq = s->next_seq++;
		job->rec.model = rbuf_ref(m->name);
		job->rec.priority = (int32_t)it->priority;
		job->rec.state = JOB_PENDING;
		job->rec.created_at = now.wall_ms;
		job->rec.payload = rbuf_new(it->payload.start, it->payload.len);
		if (it->has_info)
			job->rec.info = rbuf_new(it->info.start, it->info.len);
		if (it->body.warnings.len)
			job->rec.warnings = rbuf_new(it->body.warnings.data, it->body.warnings.len);
		if (b->key) {
			job->rec.idempotency_key = rbuf_new(key, member_key(b, i, key));
			job->rec.body_hash = rbuf_new(b->hash, BODY_HASH_HEX);
		}
		queue_add(s->queue, job, now);
		engine_record_insert(s, job);
		if (b->key)
			idempotency_track(s->idempotency, job);
		ids[i] = job->rec.id;
	}
}

/* Hands the new jobs to long-poll claims, once per run of one model. */
static void dispatch_batch(server_t *s, const batch_t *b)
{
	for (size_t i = 0; i < b->count; i++) {
		const buf_t *model = &b->items[i].model;

		if (i > 0 && model->len == b->items[i - 1].model.len &&
		    memcmp(model->data, b->items[i - 1].model.data, model->len) == 0)
			continue;
		claim_dispatch_waiters(s, queue_model_get(s->queue, model->data, model->len, 0));
	}
}

void handle_submit_batch(server_t *s, http_request_t *req)
{
	queue_time_t now = server_now();
	batch_t b = {0};
	iq_id_t *ids = NULL;
	char first[ID_TEXT_LEN + 1];

	b.key = http_request_header(req, "idempotency-key", &b.key_len);
	if (check_batch(s, req, &b) != 0)
		goto out;
	if (engine_overloaded(s)) {
		buf_t body = BUF_INIT;

		error_body(&body, 503, "overloaded", NULL,
		           "more changes wait for the disk than the server accepts "
		           "(--max-pending-changes); retry the batch after the Retry-After delay");
		http_respond(req, 503, NULL, "Retry-After: 1\r\n", body.data, body.len);
		buf_free(&body);
		goto out;
	}
	if (b.key) {
		if (!idempotency_key_valid(b.key, b.key_len)) {
			respond_error(req, 400, "invalid_field", "Idempotency-Key",
			              "Idempotency-Key must be 1 to %d visible ASCII characters, "
			              "e.g. a UUID",
			              IDEMPOTENCY_KEY_MAX);
			goto out;
		}
		idempotency_body_hash(req->body, req->body_len, b.hash);
		if (answer_repeated_batch(s, req, &b, now))
			goto out;
	}

	ids = xcalloc(b.count, sizeof(*ids));
	insert_jobs(s, &b, now, ids);
	reply_ids(s, req, &b, ids);
	id_format(&ids[0], first);
	log_fields(LOG_DEBUG, "queue", "submitted a batch", LOG_STR("request_id", first),
	           LOG_STR("model", b.items[0].model.data), LOG_UINT("jobs", b.count));
	dispatch_batch(s, &b);
out:
	free(ids);
	batch_free(&b);
}

/* --- POST /v1/queue/complete_batch ---------------------------------------- */

static const char *const complete_fields[] = {"model",   "request_id", "claim_id",
                                              "outputs", "info",       NULL};

/*
 * Appends the result of job index that failed with err to reply: its
 * request_id when id is set, and the QueueError object of err, with the
 * job's unchanged status when state is a job_state_t (not -1).
 */
static void put_job_error(buf_t *reply, size_t index, const iq_id_t *id, const input_error_t *err,
                          int state)
{
	char param[96];
	char text[ID_TEXT_LEN + 1];

	if (err->param)
		snprintf(param, sizeof(param), "jobs[%zu].%s", index, err->param);
	else
		snprintf(param, sizeof(param), "jobs[%zu]", index);
	text[0] = '\0';
	buf_putc(reply, '{');
	if (id) {
		id_format(id, text);
		buf_printf(reply, "\"request_id\":\"%s\",", text);
	}
	log_fields(LOG_DEBUG, "queue", "complete_batch rejected a job", LOG_UINT("index", index),
	           LOG_STR("code", err->code), LOG_STR("request_id", text));
	buf_puts(reply, "\"error\":");
	error_body(reply, err->status, err->code, param, "%s: %.400s", param, err->message);
	if (state >= 0) {
		char status[32];

		snprintf(status, sizeof(status), "\"%s\"", job_state_name((job_state_t)state));
		render_add_raw_field(reply, "status", status, strlen(status));
	}
	buf_putc(reply, '}');
}

static int same_model(const job_record_t *rec, const buf_t *model)
{
	return rec->model->len == model->len &&
	       memcmp(rec->model->data, model->data, model->len) == 0;
}

/*
 * Finds the job of id and model for a change, as find_job_for_change() does,
 * but fills err (and *state for a finished job) instead of responding.
 */
static job_t *find_job(server_t *s, http_request_t *req, const iq_id_t *id, const buf_t *model,
                       input_error_t *err, int *state)
{
	char text[ID_TEXT_LEN + 1];
	job_record_t row;
	job_t *job;
	int rc;

	if (!auth_covers(s, req, model->data, model->len))
		goto not_found;
	job = queue_find(s->queue, id);
	if (job && !job->uncommitted_insert) {
		if (same_model(&job->rec, model))
			return job;
		goto not_found;
	}
	rc = store_get(s->store, id, &row);
	if (rc == INFERQ_EIO) {
		input_fail(err, rc, "store_unavailable", NULL,
		           "the store could not be read; retry this job later");
		err->status = 503;
		return NULL;
	}
	if (rc == 0) {
		if (same_model(&row, model) && job_state_is_terminal(row.state)) {
			*state = row.state;
			input_fail(err, INFERQ_ECONFLICT, "invalid_state", NULL,
			           "the job is already %s; a finished job cannot change",
			           job_state_name(row.state));
			err->status = 409;
		}
		job_record_clear(&row);
		if (*state >= 0)
			return NULL;
	}
not_found:
	id_format(id, text);
	input_fail(err, INFERQ_ENOTFOUND, "not_found", "request_id",
	           "no job %s for model %s; check the id and model, or the job may have been "
	           "deleted after the retention period",
	           text, model->data);
	err->status = 404;
	return NULL;
}

/* The fields of one job of a complete_batch, read from its object. */
typedef struct {
	body_t body;
	buf_t model;
	iq_id_t id;
	iq_id_t claim_id;
	int has_claim;
	json_span_t outputs;
	json_span_t info;
	int has_info;
} complete_item_t;

/* Reads the fields of job index. Returns 0, or a negative code with err filled. */
static int read_complete_item(server_t *s, const json_span_t *v, complete_item_t *it, int *has_id,
                              input_error_t *err)
{
	if (v->type != JSON_TYPE_OBJECT)
		return input_fail(
		    err, INFERQ_EINVAL, "invalid_field", NULL,
		    "each job must be a JSON object such as {\"model\": ..., "
		    "\"request_id\": ..., \"claim_id\": ..., \"outputs\": {...}}, not %s",
		    value_kind(v->type));
	if (body_parse_object(v, complete_fields, &it->body, err) != 0 ||
	    read_model(&s->config, &it->body, &it->model, err) != 0 ||
	    read_id(&it->body, "request_id", &it->id, err) != 0)
		return INFERQ_EINVAL;
	*has_id = 1;
	it->has_claim = body_field(&it->body, "claim_id") != NULL;
	if ((it->has_claim && read_id(&it->body, "claim_id", &it->claim_id, err) != 0) ||
	    read_object(&it->body, "outputs", 1, &it->outputs, NULL, err) != 0 ||
	    read_info(&s->config, &it->body, &it->info, &it->has_info, err) != 0)
		return INFERQ_EINVAL;
	return 0;
}

/* Completes job index of a complete_batch on its own and appends its result to reply. */
static void complete_one(server_t *s, http_request_t *req, const json_span_t *v, size_t index,
                         queue_time_t now, buf_t *reply)
{
	complete_item_t it;
	input_error_t err;
	int has_id = 0, state = -1, rc;
	char text[ID_TEXT_LEN + 1];
	job_state_t prev;
	rbuf_t *raw;
	job_t *job;

	memset(&it, 0, sizeof(it));
	if (read_complete_item(s, v, &it, &has_id, &err) != 0) {
		put_job_error(reply, index, has_id ? &it.id : NULL, &err, -1);
		goto out;
	}
	job = find_job(s, req, &it.id, &it.model, &err, &state);
	if (job == NULL) {
		put_job_error(reply, index, &it.id, &err, state);
		goto out;
	}
	if (!it.has_claim) {
		input_fail(&err, INFERQ_ECONFLICT, "claim_mismatch", "claim_id",
		           "claim_id is missing; only the worker that holds the current claim can "
		           "complete the job, so send the claim_id of its claim response");
		err.status = 409;
		put_job_error(reply, index, &it.id, &err, job->rec.state);
		goto out;
	}

	prev = job->rec.state;
	raw = rbuf_new(it.outputs.start, it.outputs.len);
	engine_touch(s, job);
	rc = queue_complete(s->queue, job, &it.claim_id, raw, it.has_info ? &it.info : NULL, now);
	rbuf_unref(raw);
	if (rc != 0) {
		engine_untouch(s, job);
		if (rc == INFERQ_ELIMIT)
			input_fail(
			    &err, rc, "too_large", "info",
			    "info would be over %zu bytes or %d levels deep after this merge; "
			    "send a smaller info or raise --max-info-bytes",
			    s->config.max_info_bytes, s->config.max_json_depth);
		else if (job_state_is_terminal(job->rec.state))
			input_fail(&err, rc, "invalid_state", NULL,
			           "the job is already %s; a finished job cannot change",
			           job_state_name(job->rec.state));
		else
			input_fail(&err, rc, "claim_mismatch", "claim_id",
			           "claim_id is not the job's current claim: its lease expired and "
			           "another worker claimed it, or it was released; stop working on "
			           "this job");
		if (rc != INFERQ_ELIMIT)
			err.status = 409;
		put_job_error(reply, index, &it.id, &err,
		              rc == INFERQ_ELIMIT ? -1 : (int)job->rec.state);
		goto out;
	}
	engine_record_update(s, job, prev);
	id_format(&it.id, text);
	buf_printf(reply, "{\"request_id\":\"%s\",\"status\":\"done\"}", text);
	body_add_warnings(reply, &it.body);
out:
	body_free(&it.body);
	buf_free(&it.model);
}

void handle_complete_batch(server_t *s, http_request_t *req)
{
	queue_time_t now = server_now();
	buf_t reply = BUF_INIT;
	batch_t b = {0};
	const json_span_t *jobs;
	json_span_t v;
	json_iter_t it;

	/* The envelope is checked whole; each job then succeeds or fails on its own. */
	if (check_envelope(s, req, &b, &jobs) != 0)
		goto out;
	buf_puts(&reply, "{\"data\":[");
	json_array_begin(&it, *jobs);
	for (size_t i = 0; json_array_next(&it, &v); i++) {
		if (i > 0)
			buf_putc(&reply, ',');
		complete_one(s, req, &v, i, now, &reply);
	}
	buf_puts(&reply, "]}");
	body_add_warnings(&reply, &b.top);
	/* Sent after the commit: the states in it may come from uncommitted changes. */
	engine_reply_after_commit(s, req, 200, &reply);
	engine_arm_lease_timer(s);
out:
	batch_free(&b);
}
