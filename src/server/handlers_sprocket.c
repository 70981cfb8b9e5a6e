/*
 * Worker routes of the Sprocket protocol (Together's Python SDK for queue
 * workers): GET /internal/v1/queue/retrieve claims a job, with long-poll,
 * and POST /internal/v1/videos/status reports running, done or failed.
 *
 * Sprocket's status updates carry no claim id, so they are fenced with the
 * job's current claim id: an update is accepted while the job is running
 * (whoever holds the claim) or pending after a lease expiry with no claim
 * since (late completion), and gets 409 once the job is terminal. A stale
 * Sprocket worker therefore cannot be told apart from the current one; the
 * native routes close that gap with an explicit claim_id.
 *
 * SPDX-License-Identifier: MIT
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "auth.h"
#include "clock.h"
#include "inferq_error.h"
#include "log.h"
#include "pgq.h"
#include "render.h"
#include "request.h"
#include "routes.h"

#define MAX_HOSTNAME 128      /* bytes of the hostname query parameter */
#define MAX_WORKER_VERSION 64 /* bytes of the x-worker-version header */
#define MAX_TIMEOUT_MS 60000  /* maximum long-poll wait of a retrieve */
#define MAX_QUERY_VALUE 1024  /* bytes of one decoded query parameter */

/* Parameters of a retrieve, read from its query string and headers. */
typedef struct {
	buf_t model;
	int64_t timeout_ms;    /* long-poll wait, 0 = respond at once */
	int64_t claim_timeout; /* s, or -1 when not sent */
	buf_t worker;          /* "HOST (VERSION)", "HOST", "(VERSION)" or empty */
	size_t host_len;       /* bytes of HOST at the start of worker */
} retrieve_t;

/*
 * Reads optional query parameter name into value (MAX_QUERY_VALUE + 1
 * bytes). Returns 1 when present, 0 when absent, or a negative code with
 * err filled.
 */
static int query_value(const http_request_t *req, const char *name, char *value, size_t *len,
		       input_error_t *err)
{
	int rc = http_query_param(req->query, req->query_len, name, value, MAX_QUERY_VALUE + 1,
				  len);

	if (rc < 0)
		return input_fail(err, INFERQ_EINVAL, "invalid_field", name,
				  "query parameter \"%s\" is not valid percent-encoded text, "
				  "contains a NUL, or is longer than %d bytes",
				  name, MAX_QUERY_VALUE);
	return rc;
}

static int read_timeout(const http_request_t *req, retrieve_t *r, input_error_t *err)
{
	char value[MAX_QUERY_VALUE + 1], shown[64];
	size_t len = 0;
	int rc = query_value(req, "timeout", value, &len, err);

	if (rc <= 0)
		return rc;
	if (clock_parse_duration(value, len, 1000, &r->timeout_ms) != 0 ||
	    r->timeout_ms > MAX_TIMEOUT_MS)
		return input_fail(err, INFERQ_EINVAL, "invalid_field", "timeout",
				  "timeout \"%s\" is not a duration from 0 to 60 s; send a number "
				  "with a unit, e.g. 5s, 500ms or 1m",
				  excerpt(value, len, shown, sizeof(shown)));
	return 0;
}

static int read_claim_timeout(const http_request_t *req, retrieve_t *r, input_error_t *err)
{
	char value[MAX_QUERY_VALUE + 1], shown[64];
	size_t len = 0;
	int64_t n = 0;
	int rc = query_value(req, "claim_timeout", value, &len, err);

	if (rc <= 0)
		return rc;
	for (size_t i = 0; i < len && n <= 86400; i++) {
		if (value[i] < '0' || value[i] > '9') {
			n = -1;
			break;
		}
		n = n * 10 + (value[i] - '0');
	}
	if (len == 0 || n < 1 || n > 86400)
		return input_fail(err, INFERQ_EINVAL, "invalid_field", "claim_timeout",
				  "claim_timeout \"%s\" is not whole seconds from 1 to 86400; "
				  "send e.g. claim_timeout=90, or leave it out to hold the claim "
				  "until the job ends (bounded by --max-claim-hold)",
				  excerpt(value, len, shown, sizeof(shown)));
	r->claim_timeout = n;
	return 0;
}

/* Builds the worker name from the hostname parameter and the x-worker-version header. */
static int read_worker(const http_request_t *req, retrieve_t *r, input_error_t *err)
{
	char host[MAX_QUERY_VALUE + 1];
	size_t host_len = 0, version_len = 0;
	const char *version = http_request_header(req, "x-worker-version", &version_len);
	int rc = query_value(req, "hostname", host, &host_len, err);

	if (rc < 0)
		return rc;
	if (host_len > MAX_HOSTNAME)
		return input_fail(err, INFERQ_EINVAL, "invalid_field", "hostname",
				  "hostname is %zu bytes long; the limit is %d bytes", host_len,
				  MAX_HOSTNAME);
	if (version && version_len > MAX_WORKER_VERSION)
		return input_fail(err, INFERQ_EINVAL, "invalid_field", "x-worker-version",
				  "header x-worker-version is %zu bytes long; the limit is %d bytes",
				  version_len, MAX_WORKER_VERSION);
	buf_append(&r->worker, host, host_len);
	r->host_len = host_len;
	if (version && version_len) {
		if (host_len)
			buf_putc(&r->worker, ' ');
		buf_putc(&r->worker, '(');
		buf_append(&r->worker, version, version_len);
		buf_putc(&r->worker, ')');
	}
	return 0;
}

/* Marks the retrieving worker seen in the workers view: named by its hostname. */
static void note_worker(server_t *s, const http_request_t *req, const retrieve_t *r)
{
	size_t version_len = 0;
	const char *version = http_request_header(req, "x-worker-version", &version_len);

	workers_seen(s->workers, r->worker.data, r->worker.len, r->worker.data, r->host_len,
		     version, version_len, clock_wall_ms());
}

void handle_sprocket_retrieve(server_t *s, http_request_t *req)
{
	static const char no_job[] = "{\"data\":null}";
	input_error_t err;
	retrieve_t r = {BUF_INIT, 0, -1, BUF_INIT, 0};
	claim_params_t params = {0, NULL, CLAIM_FORMAT_SPROCKET, 1};
	queue_model_t *m;

	/* x-idle-time, which Sprocket also sends, is accepted and ignored. */
	if (read_model_query(&s->config, req->query, req->query_len, &r.model, &err) != 0 ||
	    read_timeout(req, &r, &err) != 0 || read_claim_timeout(req, &r, &err) != 0 ||
	    read_worker(req, &r, &err) != 0) {
		respond_input_error(req, &err);
		goto out;
	}
	if (!auth_covers(s, req, r.model.data, r.model.len)) {
		auth_respond_model_not_found(req, r.model.data, r.model.len);
		goto out;
	}

	/*
	 * Without claim_timeout the claim lasts until the job ends, within --max-claim-hold.
	 * NOTE: each running update renews such a lease for another --max-claim-hold, so only
	 * a worker that stops sending updates loses the job; a live one may hold it longer.
	 */
	params.claim_timeout =
		r.claim_timeout > 0 ? (uint32_t)r.claim_timeout : s->config.max_claim_hold;
	note_worker(s, req, &r);
	if (r.worker.len)
		params.worker = rbuf_new(r.worker.data, r.worker.len);
	if (s->pg) {
		pgq_claim_route(s, req, r.model.data, r.model.len, &params, r.timeout_ms, NULL);
		goto out;
	}
	m = queue_model_get(s->queue, r.model.data, r.model.len, 1);
	server_model_state(m);
	if (claim_next(s, m, &params, req, NULL))
		goto out;
	if (r.timeout_ms > 0 && !s->stopping) {
		claim_wait(s, m, &params, r.timeout_ms, req);
		goto out;
	}
	http_respond(req, 200, NULL, NULL, no_job, sizeof(no_job) - 1);
out:
	rbuf_unref(params.worker);
	buf_free(&r.model);
	buf_free(&r.worker);
}

/* The status values of a Sprocket update. */
typedef enum { UPDATE_RUNNING, UPDATE_DONE, UPDATE_FAILED } update_kind_t;

static int read_update_kind(const body_t *b, update_kind_t *out, input_error_t *err)
{
	static const char *const names[] = {"running", "done", "failed"};
	buf_t text = BUF_INIT;
	char shown[64];
	int rc;

	rc = read_string(b, "status", 1, 64, &text, NULL, err);
	for (size_t i = 0; rc == 0 && i < 3; i++) {
		if (text.len == strlen(names[i]) && memcmp(text.data, names[i], text.len) == 0) {
			*out = (update_kind_t)i;
			goto out;
		}
	}
	if (rc == 0)
		rc = input_fail(err, INFERQ_EINVAL, "invalid_field", "status",
				"status \"%s\" is not a Sprocket update; send running, done or "
				"failed",
				excerpt(text.data ? text.data : "", text.len, shown, sizeof(shown)));
out:
	buf_free(&text);
	return rc;
}

/*
 * Returns the error text of a failed update as a new rbuf_t: info.error when
 * it is a string, its JSON text when it is another non-null value, else a
 * default text stating that the worker sent none.
 */
static rbuf_t *failure_text(const json_span_t *info, int has_info)
{
	static const char fallback[] = "the worker reported the job failed and sent no info.error";
	json_span_t value;
	buf_t text = BUF_INIT;
	rbuf_t *out;

	if (!has_info || !json_object_find(*info, "error", &value) || value.type == JSON_TYPE_NULL)
		return rbuf_new(fallback, sizeof(fallback) - 1);
	if (value.type != JSON_TYPE_STRING || json_string_decode(value, &text) != 0) {
		buf_reset(&text);
		buf_append(&text, value.start, value.len);
	}
	out = rbuf_new(text.data ? text.data : "", text.len);
	buf_free(&text);
	return out;
}

/* Sends the 409 of an update the queue engine rejected. */
static void reply_conflict(server_t *s, http_request_t *req, const job_t *job)
{
	buf_t reply = BUF_INIT;

	/* Sent after the commit: the state may come from an uncommitted change. */
	if (job_state_is_terminal(job->rec.state))
		conflict_body(&reply, "invalid_state", NULL, job->rec.state,
			      "the job is already %s; a finished job cannot change",
			      job_state_name(job->rec.state));
	else
		conflict_body(&reply, "invalid_state", NULL, job->rec.state,
			      "the job is %s and no worker holds it (it was never retrieved, or "
			      "it was released); retrieve it before sending status updates",
			      job_state_name(job->rec.state));
	engine_reply_after_commit(s, req, 409, &reply);
}

/* Applies one update to job under its current claim; returns the queue engine's code. */
static int apply_update(server_t *s, job_t *job, update_kind_t kind, const json_span_t *payload,
			const json_span_t *info, int has_info)
{
	iq_id_t claim_id = job->rec.claim_id; /* a copy: the engine may change the record */
	const json_span_t *patch = has_info ? info : NULL;
	queue_time_t now = server_now();
	rbuf_t *raw;
	int rc;

	switch (kind) {
	case UPDATE_RUNNING:
		return queue_heartbeat(s->queue, job, &claim_id, patch, now);
	case UPDATE_DONE:
		raw = rbuf_new(payload->start, payload->len);
		rc = queue_complete(s->queue, job, &claim_id, raw, patch, now);
		break;
	case UPDATE_FAILED:
	default:
		raw = failure_text(info, has_info);
		rc = queue_fail(s->queue, job, &claim_id, raw, patch, now);
		break;
	}
	rbuf_unref(raw);
	return rc;
}

static const char *const status_fields[] = {"model", "request_id", "status", "payload", "info",
					    NULL};

void handle_sprocket_status(server_t *s, http_request_t *req)
{
	input_error_t err;
	body_t b;
	buf_t model = BUF_INIT;
	buf_t reply = BUF_INIT;
	iq_id_t id;
	update_kind_t kind = UPDATE_RUNNING;
	json_span_t payload = {NULL, 0, JSON_TYPE_NULL}, info;
	int has_info = 0;
	job_state_t prev;
	job_t *job;
	int rc;

	/* payload is the outputs of a done update; running and failed updates ignore it. */
	if (body_parse(&s->config, req->body, req->body_len, status_fields, &b, &err) != 0 ||
	    read_model(&s->config, &b, &model, &err) != 0 ||
	    read_id(&b, "request_id", &id, &err) != 0 || read_update_kind(&b, &kind, &err) != 0 ||
	    (kind == UPDATE_DONE && read_object(&b, "payload", 1, &payload, NULL, &err) != 0) ||
	    read_info(&s->config, &b, &info, &has_info, &err) != 0) {
		respond_input_error(req, &err);
		goto out;
	}
	if (s->pg) {
		rbuf_t *text = kind == UPDATE_FAILED ? failure_text(&info, has_info) : NULL;

		pgq_sprocket_update(s, req, (int)kind, &model, &id,
				    text ? text->data : payload.start,
				    text ? text->len : payload.len, has_info ? &info : NULL,
				    &b.warnings);
		rbuf_unref(text);
		goto out;
	}
	job = find_job_for_change(s, req, &id, &model);
	if (job == NULL)
		goto out;

	prev = job->rec.state;
	engine_touch(s, job);
	rc = apply_update(s, job, kind, &payload, &info, has_info);
	if (rc == INFERQ_ECONFLICT) {
		engine_untouch(s, job);
		reply_conflict(s, req, job);
		goto out;
	}
	if (rc == INFERQ_ELIMIT) {
		engine_untouch(s, job);
		respond_error(req, 400, "too_large", "info",
			      "info would be over %zu bytes or %d levels deep after this merge; "
			      "send a smaller info or raise --max-info-bytes",
			      s->config.max_info_bytes, s->config.max_json_depth);
		goto out;
	}
	IQ_ASSERT(rc == 0);
	engine_record_update(s, job, prev);
	render_state(&reply, &job->rec);
	body_add_warnings(&reply, &b);
	engine_reply_after_commit(s, req, 200, &reply);
	engine_arm_lease_timer(s);
	if (log_enabled(LOG_DEBUG)) {
		char text[ID_TEXT_LEN + 1];

		id_format(&id, text);
		log_fields(LOG_DEBUG, "queue", "sprocket update", LOG_STR("request_id", text),
			   LOG_STR("model", job->rec.model->data),
			   LOG_STR("status", job_state_name(job->rec.state)));
	}
out:
	buf_free(&reply);
	body_free(&b);
	buf_free(&model);
}
