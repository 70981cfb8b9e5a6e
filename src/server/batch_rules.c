/*
 * Checks and response bodies shared by the batch routes of both stores (batch.h).
 *
 * SPDX-License-Identifier: MIT
 */
#include "batch.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "auth.h"
#include "error.h"
#include "inferq_error.h"
#include "log.h"
#include "render.h"

static const char *const batch_fields[] = {"jobs", NULL};
static const char *const job_fields[] = {"model", "payload", "info", "priority", NULL};
static const char *const complete_fields[] = {"model",   "request_id", "claim_id",
                                              "outputs", "info",       NULL};

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

int batch_check_envelope(server_t *s, http_request_t *req, batch_t *b, const json_span_t **jobs)
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

int batch_check(server_t *s, http_request_t *req, batch_t *b)
{
	const json_span_t *jobs;
	json_span_t v;
	json_iter_t it;
	size_t count;

	if (batch_check_envelope(s, req, b, &jobs) != 0)
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

void batch_free(batch_t *b)
{
	for (size_t i = 0; b->items && i < b->count; i++) {
		body_free(&b->items[i].body);
		buf_free(&b->items[i].model);
	}
	free(b->items);
	body_free(&b->top);
}

size_t batch_member_key(const batch_t *b, size_t index, char out[BATCH_KEY_MAX + 1])
{
	return (size_t)snprintf(out, BATCH_KEY_MAX + 1, "%.*s %zu", (int)b->key_len, b->key, index);
}

void batch_render_ids(buf_t *reply, const batch_t *b, const iq_id_t *ids)
{
	char text[ID_TEXT_LEN + 1];

	buf_puts(reply, "{\"data\":[");
	for (size_t i = 0; i < b->count; i++) {
		id_format(&ids[i], text);
		buf_printf(reply, "%s{\"requestId\":\"%s\",\"request_id\":\"%s\"}", i ? "," : "",
		           text, text);
		body_add_warnings(reply, &b->items[i].body);
	}
	buf_puts(reply, "]}");
	body_add_warnings(reply, &b->top);
}

void batch_respond_key_reused(http_request_t *req, const batch_t *b)
{
	char shown[64];

	respond_error(req, 409, "idempotency_conflict", "Idempotency-Key",
	              "Idempotency-Key \"%s\" was already used for a batch whose first job "
	              "is for model %s, with a different body; use a new key for a new batch",
	              excerpt(b->key, b->key_len, shown, sizeof(shown)), b->items[0].model.data);
}

void batch_respond_members_gone(http_request_t *req, const batch_t *b)
{
	char shown[64];

	respond_error(req, 409, "idempotency_conflict", "Idempotency-Key",
	              "Idempotency-Key \"%s\" was used for this batch, but some of its jobs "
	              "were deleted after --retention; use a new key to submit it again",
	              excerpt(b->key, b->key_len, shown, sizeof(shown)));
}

int batch_read_complete_item(server_t *s, const json_span_t *v, complete_item_t *it, int *has_id,
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

void batch_fault(const server_t *s, input_error_t *err, batch_fault_t fault, const iq_id_t *id,
                 const buf_t *model, job_state_t state)
{
	char text[ID_TEXT_LEN + 1];

	switch (fault) {
	case BATCH_FAULT_NOT_FOUND:
		id_format(id, text);
		input_fail(err, INFERQ_ENOTFOUND, "not_found", "request_id",
		           "no job %s for model %s; check the id and model, or the job may have been "
		           "deleted after the retention period",
		           text, model->data);
		err->status = 404;
		return;
	case BATCH_FAULT_FINISHED:
		input_fail(err, INFERQ_ECONFLICT, "invalid_state", NULL,
		           "the job is already %s; a finished job cannot change",
		           job_state_name(state));
		err->status = 409;
		return;
	case BATCH_FAULT_NO_CLAIM:
		input_fail(err, INFERQ_ECONFLICT, "claim_mismatch", "claim_id",
		           "claim_id is missing; only the worker that holds the current claim can "
		           "complete the job, so send the claim_id of its claim response");
		err->status = 409;
		return;
	case BATCH_FAULT_NOT_CURRENT:
		input_fail(err, INFERQ_ECONFLICT, "claim_mismatch", "claim_id",
		           "claim_id is not the job's current claim: its lease expired and "
		           "another worker claimed it, or it was released; stop working on "
		           "this job");
		err->status = 409;
		return;
	case BATCH_FAULT_TOO_LARGE:
		input_fail(err, INFERQ_ELIMIT, "too_large", "info",
		           "info would be over %zu bytes or %d levels deep after this merge; "
		           "send a smaller info or raise --max-info-bytes",
		           s->config.max_info_bytes, s->config.max_json_depth);
		return;
	}
}

void batch_put_job_error(buf_t *reply, size_t index, const iq_id_t *id, const input_error_t *err,
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
