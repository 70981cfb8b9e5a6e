/*
 * Client routes: submit, status, cancel, metrics and clear, with the
 * fields and status codes of the Together Queue API.
 *
 * SPDX-License-Identifier: MIT
 */
#include <stdint.h>
#include <string.h>

#include "auth.h"
#include "clock.h"
#include "error.h"
#include "inferq_error.h"
#include "log.h"
#include "render.h"
#include "request.h"
#include "routes.h"
#include "status_cache.h"

static int same_model(const job_record_t *rec, const buf_t *model)
{
	return rec->model->len == model->len && memcmp(rec->model->data, model->data, model->len) == 0;
}

static void not_found(http_request_t *req, const iq_id_t *id, const buf_t *model)
{
	char text[ID_TEXT_LEN + 1];

	id_format(id, text);
	respond_error(req, 404, "not_found", "request_id",
		      "no job %s for model %s; check the id and model, or the job may have been "
		      "deleted after the retention period",
		      text, model->data);
}

/* Refuses new work while the store falls behind, so memory stays bounded. */
static void respond_overloaded(http_request_t *req)
{
	buf_t body = BUF_INIT;

	error_body(&body, 503, "overloaded", NULL,
		   "more changes wait for the disk than the server accepts "
		   "(--max-pending-changes); retry the submit after the Retry-After delay");
	http_respond(req, 503, NULL, "Retry-After: 1\r\n", body.data, body.len);
	buf_free(&body);
}

static const char *const submit_fields[] = {"model", "payload", "info", "priority", NULL};

static void reply_request_id(server_t *s, http_request_t *req, const iq_id_t *id,
			     const body_t *b)
{
	buf_t reply = BUF_INIT;
	char text[ID_TEXT_LEN + 1];

	/* In pieces: buf_printf runs vsnprintf twice, a visible cost per submit in a profile. */
	id_format(id, text);
	buf_reserve(&reply, 80);
	buf_puts(&reply, "{\"requestId\":\"");
	buf_append(&reply, text, ID_TEXT_LEN);
	buf_puts(&reply, "\",\"request_id\":\"");
	buf_append(&reply, text, ID_TEXT_LEN);
	buf_puts(&reply, "\"}");
	body_add_warnings(&reply, b);
	/* Sent after the commit, so an uncommitted first submit is never revealed. */
	engine_reply_after_commit(s, req, 200, &reply);
}

/*
 * Responds to a submit whose Idempotency-Key was used before for this model
 * within --idempotency-ttl: the first job's id for the same body, 409 for
 * another. Returns 1 when it responded, 0 when the key is new.
 */
static int answer_repeated_submit(server_t *s, http_request_t *req, const buf_t *model,
				  const char *key, size_t key_len, const char *hash,
				  const body_t *b, queue_time_t now)
{
	char first_hash[BODY_HASH_HEX + 1];
	char shown[64];
	iq_id_t id;
	job_t *job;
	int rc;

	job = idempotency_find(s->idempotency, model->data, model->len, key, key_len);
	if (job) {
		id = job->rec.id;
		memcpy(first_hash, job->rec.body_hash->data, BODY_HASH_HEX + 1);
		rc = 0;
	} else {
		rc = store_find_idempotency(s->store, model->data, model->len, key, key_len,
					    now.wall_ms - s->config.idempotency_ttl_ms, &id,
					    first_hash);
	}
	if (rc == INFERQ_ENOTFOUND)
		return 0;
	if (rc != 0) {
		respond_error(req, 503, "store_unavailable", NULL,
			      "the store could not be read; retry later");
		return 1;
	}
	if (strcmp(first_hash, hash) != 0) {
		respond_error(req, 409, "idempotency_conflict", "Idempotency-Key",
			      "Idempotency-Key \"%s\" was already used for model %s with a "
			      "different body; use a new key for a new job",
			      excerpt(key, key_len, shown, sizeof(shown)), model->data);
		return 1;
	}
	reply_request_id(s, req, &id, b);
	return 1;
}

void handle_submit(server_t *s, http_request_t *req)
{
	queue_time_t now = server_now();
	input_error_t err;
	body_t b;
	buf_t model = BUF_INIT;
	json_span_t payload, info;
	int has_info = 0;
	int64_t priority = 0;
	queue_model_t *m;
	job_t *job;
	char id[ID_TEXT_LEN + 1];
	char hash[BODY_HASH_HEX + 1];
	size_t key_len = 0;
	const char *key = http_request_header(req, "idempotency-key", &key_len);

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
	if (engine_overloaded(s)) {
		respond_overloaded(req);
		goto out;
	}
	if (key) {
		if (!idempotency_key_valid(key, key_len)) {
			respond_error(req, 400, "invalid_field", "Idempotency-Key",
				      "Idempotency-Key must be 1 to %d visible ASCII characters, "
				      "e.g. a UUID",
				      IDEMPOTENCY_KEY_MAX);
			goto out;
		}
		idempotency_body_hash(req->body, req->body_len, hash);
		if (answer_repeated_submit(s, req, &model, key, key_len, hash, &b, now))
			goto out;
	}

	m = queue_model_get(s->queue, model.data, model.len, 1);
	server_model_state(m);
	job = queue_job_new();
	id_new_v7(&job->rec.id, now.wall_ms);
	job->rec.seq = s->next_seq++;
	job->rec.model = rbuf_ref(m->name);
	job->rec.priority = (int32_t)priority;
	job->rec.state = JOB_PENDING;
	job->rec.created_at = now.wall_ms;
	job->rec.payload = rbuf_new(payload.start, payload.len);
	if (has_info)
		job->rec.info = rbuf_new(info.start, info.len);
	if (b.warnings.len)
		job->rec.warnings = rbuf_new(b.warnings.data, b.warnings.len);
	if (key) {
		job->rec.idempotency_key = rbuf_new(key, key_len);
		job->rec.body_hash = rbuf_new(hash, BODY_HASH_HEX);
	}
	queue_add(s->queue, job, now);
	engine_record_insert(s, job);
	if (key)
		idempotency_track(s->idempotency, job);

	reply_request_id(s, req, &job->rec.id, &b);
	id_format(&job->rec.id, id);
	log_fields(LOG_DEBUG, "queue", "submitted", LOG_STR("request_id", id),
		   LOG_STR("model", model.data), LOG_INT("priority", priority));
	claim_dispatch_waiters(s, m);
out:
	body_free(&b);
	buf_free(&model);
}

/*
 * Sends the cached status of finished job id and returns 1, or returns 0
 * when it is not cached. A job of another model gets the 404 of an unknown
 * job, as from the store.
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
		not_found(req, id, model);
	else
		http_respond(req, 200, NULL, NULL, body, body_len);
	return 1;
}

void handle_status(server_t *s, http_request_t *req)
{
	input_error_t err;
	iq_id_t id;
	buf_t model = BUF_INIT;
	buf_t reply = BUF_INIT;
	job_record_t row;
	const job_record_t *rec = NULL;
	job_t *job;
	int rc;

	if (read_id_query(req->query, req->query_len, "request_id", &id, &err) != 0 ||
	    read_model_query(&s->config, req->query, req->query_len, &model, &err) != 0) {
		respond_input_error(req, &err);
		goto out;
	}
	/* The same response as for an unknown job, so other tenants' jobs stay invisible. */
	if (!auth_covers(s, req, model.data, model.len)) {
		not_found(req, &id, &model);
		goto out;
	}
	job = queue_find(s->queue, &id);
	if (job) {
		rec = engine_committed_record(job);
		if (rec == NULL || !same_model(rec, &model)) {
			not_found(req, &id, &model);
			goto out;
		}
		render_status(&reply, rec);
		respond_json(req, 200, &reply);
		goto out;
	}

	if (respond_cached_status(s, req, &id, &model))
		goto out;
	rc = store_get(s->store, &id, &row);
	if (rc == INFERQ_ENOTFOUND || (rc == 0 && !same_model(&row, &model))) {
		not_found(req, &id, &model);
	} else if (rc != 0) {
		respond_error(req, 503, "store_unavailable", NULL,
			      "the store could not be read; retry later");
	} else {
		render_status(&reply, &row);
		/* Only a finished job's row stays as it is until the retention purge. */
		if (job_state_is_terminal(row.state))
			(void)status_cache_put(s->status_cache, &id, row.model->data,
					       row.model->len, reply.data, reply.len);
		respond_json(req, 200, &reply);
	}
	if (rc == 0)
		job_record_clear(&row);
out:
	buf_free(&model);
}

/*
 * Finds the job of a body's request_id and model for a change. Sends 404
 * (unknown, other model, or a model the key does not cover) or 409 (already
 * terminal, read from the store) and returns NULL when there is no job to
 * change.
 */
job_t *find_job_for_change(server_t *s, http_request_t *req, const iq_id_t *id,
			   const buf_t *model)
{
	job_t *job;
	job_record_t row;
	int rc;

	if (!auth_covers(s, req, model->data, model->len)) {
		not_found(req, id, model);
		return NULL;
	}
	job = queue_find(s->queue, id);
	if (job && !job->uncommitted_insert) {
		if (same_model(&job->rec, model))
			return job;
		not_found(req, id, model);
		return NULL;
	}
	rc = store_get(s->store, id, &row);
	if (rc == 0 && same_model(&row, model) && job_state_is_terminal(row.state)) {
		buf_t body = BUF_INIT;

		conflict_body(&body, "invalid_state", NULL, row.state,
			      "the job is already %s; a finished job cannot change",
			      job_state_name(row.state));
		respond_json(req, 409, &body);
	} else if (rc == INFERQ_EIO) {
		respond_error(req, 503, "store_unavailable", NULL,
			      "the store could not be read; retry later");
	} else {
		not_found(req, id, model);
	}
	if (rc == 0)
		job_record_clear(&row);
	return NULL;
}

static const char *const cancel_fields[] = {"model", "request_id", NULL};

void handle_cancel(server_t *s, http_request_t *req)
{
	queue_time_t now = server_now();
	input_error_t err;
	body_t b;
	buf_t model = BUF_INIT;
	buf_t reply = BUF_INIT;
	iq_id_t id;
	job_t *job;

	if (body_parse(&s->config, req->body, req->body_len, cancel_fields, &b, &err) != 0 ||
	    read_model(&s->config, &b, &model, &err) != 0 ||
	    read_id(&b, "request_id", &id, &err) != 0) {
		respond_input_error(req, &err);
		goto out;
	}
	job = find_job_for_change(s, req, &id, &model);
	if (job == NULL)
		goto out;
	if (job->rec.state != JOB_PENDING) {
		/* Sent after the commit: the state may come from an uncommitted change. */
		conflict_body(&reply, "invalid_state", NULL, job->rec.state,
			      "only pending jobs can be canceled; this job is %s",
			      job_state_name(job->rec.state));
		engine_reply_after_commit(s, req, 409, &reply);
		goto out;
	}
	engine_touch(s, job);
	IQ_ASSERT(queue_cancel(s->queue, job, now) == 0);
	engine_record_update(s, job, JOB_PENDING);
	render_state(&reply, &job->rec);
	body_add_warnings(&reply, &b);
	engine_reply_after_commit(s, req, 200, &reply);
out:
	body_free(&b);
	buf_free(&model);
}

void handle_metrics(server_t *s, http_request_t *req)
{
	input_error_t err;
	buf_t model = BUF_INIT;
	buf_t reply = BUF_INIT;
	queue_model_t *m;
	uint64_t waiting = 0, running = 0;

	if (read_model_query(&s->config, req->query, req->query_len, &model, &err) != 0) {
		respond_input_error(req, &err);
		goto out;
	}
	if (!auth_covers(s, req, model.data, model.len)) {
		auth_respond_model_not_found(req, model.data, model.len);
		goto out;
	}
	m = queue_model_get(s->queue, model.data, model.len, 0);
	if (m && m->user) {
		model_state_t *ms = m->user;

		waiting = ms->committed[JOB_PENDING];
		running = ms->committed[JOB_RUNNING];
	}
	buf_printf(&reply,
		   "{\"messages_waiting\":%llu,\"messages_running\":%llu,\"total_jobs\":%llu}",
		   (unsigned long long)waiting, (unsigned long long)running,
		   (unsigned long long)(waiting + running));
	respond_json(req, 200, &reply);
out:
	buf_free(&model);
}

static const char *const clear_fields[] = {"model", NULL};

void handle_clear(server_t *s, http_request_t *req)
{
	queue_time_t now = server_now();
	input_error_t err;
	body_t b;
	buf_t model = BUF_INIT;
	buf_t reply = BUF_INIT;
	queue_model_t *m;
	job_t *job;
	uint64_t count = 0;

	if (body_parse(&s->config, req->body, req->body_len, clear_fields, &b, &err) != 0 ||
	    read_model(&s->config, &b, &model, &err) != 0) {
		respond_input_error(req, &err);
		goto out;
	}
	if (!auth_covers(s, req, model.data, model.len)) {
		auth_respond_model_not_found(req, model.data, model.len);
		goto out;
	}
	m = queue_model_get(s->queue, model.data, model.len, 0);
	while (m && (job = queue_peek(m)) != NULL) {
		engine_touch(s, job);
		IQ_ASSERT(queue_cancel(s->queue, job, now) == 0);
		engine_record_update(s, job, JOB_PENDING);
		count++;
	}
	if (count)
		log_fields(LOG_INFO, "queue", "cleared pending jobs", LOG_STR("model", model.data),
			   LOG_UINT("count", count));
	buf_printf(&reply, "{\"canceled_count\":%llu}", (unsigned long long)count);
	body_add_warnings(&reply, &b);
	engine_reply_after_commit(s, req, 200, &reply);
out:
	body_free(&b);
	buf_free(&model);
}

void handle_healthz(server_t *s, http_request_t *req)
{
	static const char body[] = "{\"status\":\"ok\"}";

	http_respond(req, 200, NULL, NULL, body, sizeof(body) - 1);
}

void handle_readyz(server_t *s, http_request_t *req)
{
	static const char body[] = "{\"status\":\"ready\"}";
	char err[256];

	if (store_check(s->store, err, sizeof(err)) != 0) {
		respond_error(req, 503, "store_unavailable", NULL, "not ready: %s", err);
		return;
	}
	http_respond(req, 200, NULL, NULL, body, sizeof(body) - 1);
}
