/*
 * Client calls of libinferq: submit, status, cancel, wait, and the queue
 * calls clear and metrics. Each builds its JSON body or query string, runs
 * inferq__call() and decodes the members it returns. Payload, outputs and
 * info travel as raw JSON text in both directions.
 *
 * SPDX-License-Identifier: MIT
 */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "internal.h"

#define WAIT_FIRST_PAUSE_MS 100
#define WAIT_MAX_PAUSE_MS   2000

/* Writes a random UUIDv4 in lowercase text into out. */
static int new_uuid(inferq_client_t *c, char out[37])
{
	unsigned char b[16];
	size_t got = 0;

	while (got < sizeof(b)) {
		ssize_t n = getrandom(b + got, sizeof(b) - got, 0);

		if (n <= 0)
			return inferq__fail(c, INFERQ_EIO,
			                    "cannot read random bytes for the "
			                    "Idempotency-Key header");
		got += (size_t)n;
	}
	b[6] = (unsigned char)((b[6] & 0x0f) | 0x40);
	b[8] = (unsigned char)((b[8] & 0x3f) | 0x80);
	snprintf(out, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
	         b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12],
	         b[13], b[14], b[15]);
	return 0;
}

int inferq_job_submit(inferq_client_t *c, const char *model, const char *payload, const char *info,
                      int32_t priority, char **request_id)
{
	inferq__sb_t body = {0};
	inferq__span_t object;
	char key[37];
	int rc;

	*request_id = NULL;
	if ((rc = inferq__check_arg(c, "model", model)) != 0 ||
	    (rc = inferq__check_object(c, "payload", payload)) != 0 ||
	    (info && (rc = inferq__check_object(c, "info", info)) != 0) ||
	    (rc = new_uuid(c, key)) != 0)
		return rc;

	inferq__sb_puts(&body, "{");
	inferq__sb_json_field(&body, "model", model);
	inferq__sb_printf(&body, ",\"payload\":%s", payload);
	if (info)
		inferq__sb_printf(&body, ",\"info\":%s", info);
	inferq__sb_printf(&body, ",\"priority\":%d}", (int)priority);
	/*
	 * NOTE: a server that ignores Idempotency-Key creates a second job when
	 * a submit is repeated after its response was lost on the way back.
	 */
	rc = inferq__post(c, "/v1/queue/submit", &body, key, NULL);
	if (rc != 0)
		return rc;

	if ((rc = inferq__checked_response(c, &object)) != 0)
		return rc;
	if (inferq__json_get(object, "request_id", &(inferq__span_t){0}) == 0)
		return inferq__response_string(c, object, "request_id", request_id);
	return inferq__response_string(c, object, "requestId", request_id);
}

void inferq_status_free(inferq_status_t *st)
{
	if (!st)
		return;
	free(st->request_id);
	free(st->model);
	free(st->status);
	free(st->inputs);
	free(st->outputs);
	free(st->info);
	free(st->error);
	free(st->created_at);
	free(st->claimed_at);
	free(st->done_at);
	free(st->lease_expires_at);
	free(st->raw);
	free(st);
}

int inferq_state_is_terminal(inferq_state_t state)
{
	return state == INFERQ_STATE_DONE || state == INFERQ_STATE_FAILED ||
	       state == INFERQ_STATE_CANCELED;
}

static inferq_state_t parse_state(const char *s)
{
	static const struct {
		const char *name;
		inferq_state_t state;
	} states[] = {
	    {"pending", INFERQ_STATE_PENDING},   {"running", INFERQ_STATE_RUNNING},
	    {"done", INFERQ_STATE_DONE},         {"failed", INFERQ_STATE_FAILED},
	    {"canceled", INFERQ_STATE_CANCELED},
	};

	for (size_t i = 0; i < sizeof(states) / sizeof(states[0]); i++)
		if (strcmp(s, states[i].name) == 0)
			return states[i].state;
	return INFERQ_STATE_UNKNOWN;
}

/* Stores one status member; members this version does not know are skipped. */
static int status_member(inferq_status_t *st, inferq__span_t key, inferq__span_t value)
{
	static const struct {
		const char *name;
		size_t offset;
		int raw; /* 1: keep the JSON text; 0: decode a string */
	} fields[] = {
	    {"request_id", offsetof(inferq_status_t, request_id), 0},
	    {"model", offsetof(inferq_status_t, model), 0},
	    {"status", offsetof(inferq_status_t, status), 0},
	    {"inputs", offsetof(inferq_status_t, inputs), 1},
	    {"outputs", offsetof(inferq_status_t, outputs), 1},
	    {"info", offsetof(inferq_status_t, info), 1},
	    {"error", offsetof(inferq_status_t, error), 0},
	    {"created_at", offsetof(inferq_status_t, created_at), 0},
	    {"claimed_at", offsetof(inferq_status_t, claimed_at), 0},
	    {"done_at", offsetof(inferq_status_t, done_at), 0},
	    {"lease_expires_at", offsetof(inferq_status_t, lease_expires_at), 0},
	};
	int64_t n;

	if (inferq__json_key_is(key, "priority") == 0 || inferq__json_key_is(key, "retries") == 0) {
		if (inferq__json_int(value, &n) != 0)
			return INFERQ_EPROTO;
		if (inferq__json_key_is(key, "priority") == 0)
			st->priority = (int32_t)n;
		else
			st->retries = n;
		return 0;
	}
	for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
		char **slot = (char **)((char *)st + fields[i].offset);

		if (inferq__json_key_is(key, fields[i].name) != 0)
			continue;
		free(*slot);
		if (!fields[i].raw)
			return inferq__json_string(value, slot);
		*slot = inferq__strndup(value.p, value.len);
		return *slot ? 0 : INFERQ_ENOMEM;
	}
	return 0;
}

int inferq__status_decode(inferq_client_t *c, inferq__span_t object, const char *raw,
                          size_t raw_len, inferq_status_t **out)
{
	inferq_status_t *st;
	inferq__member_iter_t it;
	inferq__span_t key, value;
	int rc;

	if (object.len == 0 || object.p[0] != '{')
		return inferq__fail(c, INFERQ_EPROTO, "the server sent a job that is not a JSON "
		                                      "object: %.200s",
		                    raw);
	st = inferq__calloc(1, sizeof(*st));
	if (!st)
		return inferq__fail(c, INFERQ_ENOMEM, "out of memory");
	inferq__json_members(&it, object);
	while (inferq__json_next(&it, &key, &value) == 0) {
		rc = status_member(st, key, value);
		if (rc == INFERQ_ENOMEM) {
			rc = inferq__fail(c, rc, "out of memory");
			goto fail;
		}
		if (rc != 0) {
			rc = inferq__fail(c, rc, "the status response has an invalid %.*s member",
			                  (int)key.len, key.p);
			goto fail;
		}
	}
	if (!st->status || !st->request_id) {
		rc = inferq__fail(c, INFERQ_EPROTO,
		                  "the status response lacks request_id or status: "
		                  "%.200s",
		                  raw);
		goto fail;
	}
	st->state = parse_state(st->status);
	st->raw = inferq__strndup(raw, raw_len);
	if (!st->raw) {
		rc = inferq__fail(c, INFERQ_ENOMEM, "out of memory");
		goto fail;
	}
	*out = st;
	return 0;
fail:
	inferq_status_free(st);
	return rc;
}

static int parse_status(inferq_client_t *c, inferq_status_t **out)
{
	inferq__span_t object;
	int rc;

	if ((rc = inferq__checked_response(c, &object)) != 0)
		return rc;
	return inferq__status_decode(c, object, c->response.data, c->response.len, out);
}

int inferq_job_status(inferq_client_t *c, const char *model, const char *request_id,
                      inferq_status_t **out)
{
	inferq__call_t call = {0};
	inferq__sb_t path = {0};
	char *id_q = NULL, *model_q = NULL;
	int rc;

	*out = NULL;
	if ((rc = inferq__check_arg(c, "model", model)) != 0 ||
	    (rc = inferq__check_arg(c, "request_id", request_id)) != 0)
		return rc;
	id_q = curl_easy_escape(c->curl, request_id, 0);
	model_q = curl_easy_escape(c->curl, model, 0);
	if (!id_q || !model_q) {
		rc = inferq__fail(c, INFERQ_ENOMEM, "out of memory");
		goto out;
	}
	inferq__sb_printf(&path, "/v1/queue/status?request_id=%s&model=%s", id_q, model_q);
	if (path.oom) {
		rc = inferq__fail(c, INFERQ_ENOMEM, "out of memory");
		goto out;
	}
	call.path = path.data;
	call.retry = INFERQ__RETRY_ALWAYS;
	rc = inferq__call(c, &call);
	if (rc == 0)
		rc = parse_status(c, out);
out:
	curl_free(id_q);
	curl_free(model_q);
	inferq__sb_free(&path);
	return rc;
}

int inferq_job_cancel(inferq_client_t *c, const char *model, const char *request_id)
{
	inferq__sb_t body = {0};
	int rc;

	if ((rc = inferq__check_arg(c, "model", model)) != 0 ||
	    (rc = inferq__check_arg(c, "request_id", request_id)) != 0)
		return rc;
	inferq__sb_puts(&body, "{");
	inferq__sb_json_field(&body, "model", model);
	inferq__sb_puts(&body, ",");
	inferq__sb_json_field(&body, "request_id", request_id);
	inferq__sb_puts(&body, "}");
	return inferq__post(c, "/v1/queue/cancel", &body, NULL, "canceled");
}

static long elapsed_ms(const struct timespec *start)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (now.tv_sec - start->tv_sec) * 1000L + (now.tv_nsec - start->tv_nsec) / 1000000L;
}

int inferq_job_wait(inferq_client_t *c, const char *model, const char *request_id, long timeout_ms,
                    inferq_wait_cb progress, void *user, inferq_status_t **out)
{
	inferq_status_t *last = NULL;
	struct timespec start;
	long pause = WAIT_FIRST_PAUSE_MS;
	int rc;

	*out = NULL;
	clock_gettime(CLOCK_MONOTONIC, &start);
	for (;;) {
		inferq_status_t *st = NULL;
		long left;

		rc = inferq_job_status(c, model, request_id, &st);
		if (rc != 0) {
			inferq_status_free(last);
			return rc;
		}
		inferq_status_free(last);
		last = st;
		if (progress)
			progress(st, user);
		if (inferq_state_is_terminal(st->state)) {
			*out = st;
			return 0;
		}

		/* Sleep the next pause, but never past the deadline. */
		left = timeout_ms < 0 ? pause : timeout_ms - elapsed_ms(&start);
		if (left <= 0) {
			*out = st;
			return inferq__fail(c, INFERQ_ETIMEDOUT,
			                    "timed out after %.3g s waiting for job %s; it is %s",
			                    (double)timeout_ms / 1000, request_id, st->status);
		}
		inferq__sleep_ms(left < pause ? left : pause);
		pause = pause * 3 / 2 > WAIT_MAX_PAUSE_MS ? WAIT_MAX_PAUSE_MS : pause * 3 / 2;
	}
}

int inferq_queue_clear(inferq_client_t *c, const char *model, int64_t *canceled)
{
	inferq__sb_t body = {0};
	inferq__span_t object;
	int64_t n;
	int rc;

	if ((rc = inferq__check_arg(c, "model", model)) != 0)
		return rc;
	inferq__sb_puts(&body, "{");
	inferq__sb_json_field(&body, "model", model);
	inferq__sb_puts(&body, "}");
	if ((rc = inferq__post(c, "/v1/queue/clear", &body, NULL, NULL)) != 0 ||
	    (rc = inferq__checked_response(c, &object)) != 0 ||
	    (rc = inferq__response_int(c, object, "canceled_count", &n)) != 0)
		return rc;
	if (canceled)
		*canceled = n;
	return 0;
}

int inferq_queue_metrics(inferq_client_t *c, const char *model, int64_t *waiting, int64_t *running,
                         int64_t *total)
{
	inferq__call_t call = {0};
	inferq__sb_t path = {0};
	inferq__span_t object;
	char *model_q;
	int64_t w, r, t;
	int rc;

	if ((rc = inferq__check_arg(c, "model", model)) != 0)
		return rc;
	model_q = curl_easy_escape(c->curl, model, 0);
	if (model_q)
		inferq__sb_printf(&path, "/v1/queue/metrics?model=%s", model_q);
	curl_free(model_q);
	if (!model_q || path.oom) {
		inferq__sb_free(&path);
		return inferq__fail(c, INFERQ_ENOMEM, "out of memory");
	}
	call.path = path.data;
	call.retry = INFERQ__RETRY_ALWAYS;
	rc = inferq__call(c, &call);
	inferq__sb_free(&path);
	if (rc != 0 || (rc = inferq__checked_response(c, &object)) != 0 ||
	    (rc = inferq__response_int(c, object, "messages_waiting", &w)) != 0 ||
	    (rc = inferq__response_int(c, object, "messages_running", &r)) != 0 ||
	    (rc = inferq__response_int(c, object, "total_jobs", &t)) != 0)
		return rc;
	if (waiting)
		*waiting = w;
	if (running)
		*running = r;
	if (total)
		*total = t;
	return 0;
}
