/*
 * Worker routes: claim (with long-poll), heartbeat, complete, fail and
 * release. Every call after the claim is fenced by claim_id: the queue
 * engine decides whether the caller still holds the job.
 *
 * SPDX-License-Identifier: MIT
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "auth.h"
#include "clock.h"
#include "inferq_error.h"
#include "log.h"
#include "render.h"
#include "request.h"
#include "routes.h"

#define MAX_WORKER_NAME 128 /* bytes */
#define MAX_WAIT_S 60

/* Marks the claiming worker seen in the workers view, with its x-worker-version header. */
static void note_worker(server_t *s, const http_request_t *req, const buf_t *worker)
{
	size_t version_len = 0;
	const char *version = http_request_header(req, "x-worker-version", &version_len);

	workers_seen(s->workers, worker->data, worker->len, worker->data, worker->len, version,
		     version_len, clock_wall_ms());
}

/* max_jobs: an optional integer from 1 to --max-batch. */
static int read_max_jobs(const serve_config_t *c, const body_t *b, int64_t *out,
			 input_error_t *err)
{
	char message[sizeof(err->message)];

	if (read_int(b, "max_jobs", 1, c->max_batch, out, err) == 0)
		return 0;
	/* read_int's message names the field and the value; add the flag that sets the bound. */
	snprintf(message, sizeof(message), "%s", err->message);
	return input_fail(err, INFERQ_EINVAL, "invalid_field", "max_jobs",
			  "%s; the maximum is set by --max-batch", message);
}

static const char *const claim_fields[] = {"model",  "claim_timeout", "wait",
					   "worker", "max_jobs",      NULL};

void handle_claim(server_t *s, http_request_t *req)
{
	input_error_t err;
	body_t b;
	buf_t model = BUF_INIT;
	buf_t worker = BUF_INIT;
	int64_t timeout = s->config.claim_timeout;
	double wait = 0;
	int64_t max_jobs = 1;
	int has_worker = 0;
	claim_params_t params = {0, NULL, CLAIM_FORMAT_NATIVE, 1};
	queue_model_t *m;

	if (body_parse(&s->config, req->body, req->body_len, claim_fields, &b, &err) != 0 ||
	    read_model(&s->config, &b, &model, &err) != 0 ||
	    read_int(&b, "claim_timeout", 1, 86400, &timeout, &err) != 0 ||
	    read_seconds(&b, "wait", 0, MAX_WAIT_S, &wait, &err) != 0 ||
	    read_string(&b, "worker", 0, MAX_WORKER_NAME, &worker, &has_worker, &err) != 0 ||
	    read_max_jobs(&s->config, &b, &max_jobs, &err) != 0) {
		respond_input_error(req, &err);
		goto out;
	}
	if (!auth_covers(s, req, model.data, model.len)) {
		auth_respond_model_not_found(req, model.data, model.len);
		goto out;
	}

	note_worker(s, req, &worker);
	params.claim_timeout = (uint32_t)timeout;
	if (max_jobs > 1) {
		/* max_jobs 1, or none, keeps the single-job response shape. */
		params.format = CLAIM_FORMAT_LIST;
		params.max_jobs = (uint32_t)max_jobs;
	}
	if (has_worker)
		params.worker = rbuf_new(worker.data ? worker.data : "", worker.len);
	m = queue_model_get(s->queue, model.data, model.len, 1);
	server_model_state(m);
	if (claim_next(s, m, &params, req, &b.warnings))
		goto out;
	if (wait > 0 && !s->stopping) {
		claim_wait(s, m, &params, (int64_t)ceil(wait * 1000), req);
		goto out;
	}
	http_respond(req, 204, NULL, NULL, "", 0);
out:
	rbuf_unref(params.worker);
	body_free(&b);
	buf_free(&model);
	buf_free(&worker);
}

/* The fields of one fenced worker call, read from its body, and its job. */
typedef struct {
	body_t body;
	buf_t model;
	iq_id_t id;
	iq_id_t claim_id;
	json_span_t info;
	int has_info;
	job_t *job;
} fenced_t;

/* Reads model, request_id, claim_id and info and finds the job; else responds with the error. */
static int fenced_begin(server_t *s, http_request_t *req, const char *const *fields, fenced_t *f)
{
	input_error_t err;
	buf_t reply = BUF_INIT;
	int has_claim;

	memset(f, 0, sizeof(*f));
	if (body_parse(&s->config, req->body, req->body_len, fields, &f->body, &err) != 0 ||
	    read_model(&s->config, &f->body, &f->model, &err) != 0 ||
	    read_id(&f->body, "request_id", &f->id, &err) != 0 ||
	    ((has_claim = body_field(&f->body, "claim_id") != NULL) &&
	     read_id(&f->body, "claim_id", &f->claim_id, &err) != 0) ||
	    read_info(&s->config, &f->body, &f->info, &f->has_info, &err) != 0) {
		respond_input_error(req, &err);
		return INFERQ_EINVAL;
	}
	f->job = find_job_for_change(s, req, &f->id, &f->model);
	if (f->job == NULL)
		return INFERQ_ENOTFOUND;
	if (!has_claim) {
		/* No claim proves ownership as little as a stale one: a conflict, not bad syntax. */
		conflict_body(&reply, "claim_mismatch", "claim_id", f->job->rec.state,
			      "claim_id is missing; only the worker that holds the current claim "
			      "can change the job, so send the claim_id of its claim response");
		engine_reply_after_commit(s, req, 409, &reply);
		return INFERQ_ECONFLICT;
	}
	return 0;
}

static void fenced_end(fenced_t *f)
{
	body_free(&f->body);
	buf_free(&f->model);
}

/*
 * Finishes a fenced call after the queue engine returned rc: records the
 * change and queues the reply, or sends the conflict or limit error.
 */
static void fenced_finish(server_t *s, http_request_t *req, fenced_t *f, int rc,
			  job_state_t prev, buf_t *reply)
{
	job_t *job = f->job;

	if (rc == INFERQ_ECONFLICT) {
		/* Sent after the commit: the state may come from an uncommitted change. */
		engine_untouch(s, job);
		buf_reset(reply);
		if (job_state_is_terminal(job->rec.state))
			conflict_body(reply, "invalid_state", NULL, job->rec.state,
				      "the job is already %s; a finished job cannot change",
				      job_state_name(job->rec.state));
		else
			conflict_body(reply, "claim_mismatch", NULL, job->rec.state,
				      "claim_id is not the job's current claim: its lease expired "
				      "and another worker claimed it, or it was released; stop "
				      "working on this job");
		engine_reply_after_commit(s, req, 409, reply);
		return;
	}
	if (rc == INFERQ_ELIMIT) {
		engine_untouch(s, job);
		respond_error(req, 400, "too_large", "info",
			      "info would be over %zu bytes or %d levels deep after this merge; "
			      "send a smaller info or raise --max-info-bytes",
			      s->config.max_info_bytes, s->config.max_json_depth);
		buf_free(reply);
		return;
	}
	IQ_ASSERT(rc == 0);
	engine_record_update(s, job, prev);
	if (reply->len == 0)
		render_state(reply, &job->rec);
	body_add_warnings(reply, &f->body);
	engine_reply_after_commit(s, req, 200, reply);
	engine_arm_lease_timer(s);
	if (job->rec.state == JOB_PENDING)
		claim_dispatch_waiters(s, job->model);
}

static const char *const heartbeat_fields[] = {"model", "request_id", "claim_id", "info", NULL};

void handle_heartbeat(server_t *s, http_request_t *req)
{
	fenced_t f;
	buf_t reply = BUF_INIT;
	job_state_t prev;
	int rc;

	if (fenced_begin(s, req, heartbeat_fields, &f) != 0)
		goto out;
	prev = f.job->rec.state;
	engine_touch(s, f.job);
	rc = queue_heartbeat(s->queue, f.job, &f.claim_id, f.has_info ? &f.info : NULL,
			     server_now());
	if (rc == 0) {
		buf_puts(&reply, "{\"status\":\"running\"");
		render_time_field(&reply, "lease_expires_at", f.job->rec.lease_expires_at);
		buf_putc(&reply, '}');
	}
	fenced_finish(s, req, &f, rc, prev, &reply);
out:
	fenced_end(&f);
}

static const char *const complete_fields[] = {"model", "request_id", "claim_id", "outputs",
					      "info", NULL};

void handle_complete(server_t *s, http_request_t *req)
{
	input_error_t err;
	fenced_t f;
	buf_t reply = BUF_INIT;
	json_span_t outputs;
	rbuf_t *raw;
	job_state_t prev;
	int rc;

	if (fenced_begin(s, req, complete_fields, &f) != 0)
		goto out;
	if (read_object(&f.body, "outputs", 1, &outputs, NULL, &err) != 0) {
		respond_input_error(req, &err);
		goto out;
	}
	prev = f.job->rec.state;
	raw = rbuf_new(outputs.start, outputs.len);
	engine_touch(s, f.job);
	rc = queue_complete(s->queue, f.job, &f.claim_id, raw, f.has_info ? &f.info : NULL,
			    server_now());
	rbuf_unref(raw);
	fenced_finish(s, req, &f, rc, prev, &reply);
out:
	fenced_end(&f);
}

static const char *const fail_fields[] = {"model", "request_id", "claim_id", "error", "info",
					  NULL};

void handle_fail(server_t *s, http_request_t *req)
{
	input_error_t err;
	fenced_t f;
	buf_t reply = BUF_INIT;
	buf_t error = BUF_INIT;
	rbuf_t *text;
	job_state_t prev;
	int rc;

	if (fenced_begin(s, req, fail_fields, &f) != 0)
		goto out;
	if (read_string(&f.body, "error", 1, s->config.max_info_bytes, &error, NULL, &err) != 0) {
		respond_input_error(req, &err);
		goto out;
	}
	prev = f.job->rec.state;
	text = rbuf_new(error.data ? error.data : "", error.len);
	engine_touch(s, f.job);
	rc = queue_fail(s->queue, f.job, &f.claim_id, text, f.has_info ? &f.info : NULL,
			server_now());
	rbuf_unref(text);
	fenced_finish(s, req, &f, rc, prev, &reply);
out:
	buf_free(&error);
	fenced_end(&f);
}

static const char *const release_fields[] = {"model", "request_id", "claim_id", "info", NULL};

void handle_release(server_t *s, http_request_t *req)
{
	fenced_t f;
	buf_t reply = BUF_INIT;
	job_state_t prev;
	int rc;

	if (fenced_begin(s, req, release_fields, &f) != 0)
		goto out;
	prev = f.job->rec.state;
	engine_touch(s, f.job);
	rc = queue_release(s->queue, f.job, &f.claim_id, f.has_info ? &f.info : NULL,
			   server_now());
	fenced_finish(s, req, &f, rc, prev, &reply);
out:
	fenced_end(&f);
}
