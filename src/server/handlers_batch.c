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
 * This file is the local store's side; batch_rules.c has the checks and
 * response bodies it shares with the postgres store's pg_batch.c.
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
#include "inferq_error.h"
#include "log.h"
#include "render.h"
#include "request.h"
#include "routes.h"

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
	size_t key_len = batch_member_key(b, index, key);
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

	batch_render_ids(&reply, b, ids);
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
	iq_id_t *ids;
	int rc, responded = 1;

	ids = xcalloc(b->count, sizeof(*ids));
	rc = find_member(s, b, 0, now, &ids[0], first_hash);
	if (rc == INFERQ_ENOTFOUND) {
		responded = 0;
		goto out;
	}
	if (rc == 0 && strcmp(first_hash, b->hash) != 0) {
		batch_respond_key_reused(req, b);
		goto out;
	}

	/* The same body: the first batch's jobs were committed together, or all wait to be. */
	for (size_t i = 1; rc == 0 && i < b->count; i++)
		rc = find_member(s, b, i, now, &ids[i], hash);
	if (rc == 0)
		reply_ids(s, req, b, ids);
	else if (rc == INFERQ_ENOTFOUND)
		batch_respond_members_gone(req, b);
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
			job->rec.idempotency_key = rbuf_new(key, batch_member_key(b, i, key));
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
	if (batch_check(s, req, &b) != 0)
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
			batch_fault(s, err, BATCH_FAULT_FINISHED, id, model, row.state);
		}
		job_record_clear(&row);
		if (*state >= 0)
			return NULL;
	}
not_found:
	batch_fault(s, err, BATCH_FAULT_NOT_FOUND, id, model, JOB_PENDING);
	return NULL;
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
	if (batch_read_complete_item(s, v, &it, &has_id, &err) != 0) {
		batch_put_job_error(reply, index, has_id ? &it.id : NULL, &err, -1);
		goto out;
	}
	job = find_job(s, req, &it.id, &it.model, &err, &state);
	if (job == NULL) {
		batch_put_job_error(reply, index, &it.id, &err, state);
		goto out;
	}
	if (!it.has_claim) {
		batch_fault(s, &err, BATCH_FAULT_NO_CLAIM, &it.id, &it.model, job->rec.state);
		batch_put_job_error(reply, index, &it.id, &err, job->rec.state);
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
			batch_fault(s, &err, BATCH_FAULT_TOO_LARGE, &it.id, &it.model, job->rec.state);
		else if (job_state_is_terminal(job->rec.state))
			batch_fault(s, &err, BATCH_FAULT_FINISHED, &it.id, &it.model, job->rec.state);
		else
			batch_fault(s, &err, BATCH_FAULT_NOT_CURRENT, &it.id, &it.model,
			            job->rec.state);
		batch_put_job_error(reply, index, &it.id, &err,
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
	if (batch_check_envelope(s, req, &b, &jobs) != 0)
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
