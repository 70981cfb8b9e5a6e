/*
 * Claims and long-poll waiters. A claim that finds no pending job and asks
 * to wait parks on its model's waiter list (oldest first) with one timer;
 * whenever a job becomes pending (submit, lease expiry, release, undo) the
 * oldest waiter gets it, and a waiter with max_jobs > 1 also takes the jobs
 * pending at that moment, up to max_jobs. No polling. The native claim route and Sprocket's
 * retrieve share this path; claim_params_t.format picks the response shape.
 *
 * A claim's response waits for the commit of the claim. When its client has
 * gone by then, the jobs go back to pending at once (claim_give_back)
 * instead of running under a lease that no worker renews.
 *
 * SPDX-License-Identifier: MIT
 */
#include <stdlib.h>

#include "alloc.h"
#include "auth.h"
#include "inferq_error.h"
#include "log.h"
#include "render.h"
#include "request.h"
#include "server.h"

struct waiter {
	waiter_t *prev, *next;
	server_t *server;
	queue_model_t *model;
	http_request_t *req;
	claim_params_t params;
	uv_timer_t timer; /* fires when the wait is over */
};

/* The jobs one claim took, each under its own claim id. */
struct claim_grant {
	claim_format_t format;
	uint32_t count;
	struct {
		iq_id_t id;
		iq_id_t claim_id;
	} jobs[];
};

/* Claims job, the head of m, and appends its claim object to body. */
static void claim_one(server_t *s, queue_model_t *m, const claim_params_t *p, job_t *job,
		      buf_t *body, queue_time_t now)
{
	job_t *claimed;

	engine_touch(s, job);
	claimed = queue_claim(s->queue, m, p->claim_timeout, p->worker, now);
	IQ_ASSERT(claimed == job);
	engine_record_claim(s, job);
	render_claim(body, &job->rec);
	if (log_enabled(LOG_DEBUG)) {
		char id[ID_TEXT_LEN + 1];
		const rbuf_t *name = job->rec.worker;

		id_format(&job->rec.id, id);
		log_fields(LOG_DEBUG, "queue", "claimed", LOG_STR("request_id", id),
			   LOG_STR("model", job->rec.model->data), LOG_UINT("retries", job->rec.retries),
			   LOG_TEXT("worker", name ? name->data : "", name ? name->len : 0));
	}
}

int claim_next(server_t *s, queue_model_t *m, const claim_params_t *p, http_request_t *req,
	       const buf_t *warnings)
{
	queue_time_t now = server_now();
	uint32_t max = p->format == CLAIM_FORMAT_LIST ? p->max_jobs : 1;
	job_t *job = queue_peek(m);
	buf_t body = BUF_INIT;
	claim_grant_t *grant;

	if (job == NULL)
		return 0;
	if (max > m->pending)
		max = (uint32_t)m->pending;
	grant = xmalloc(sizeof(*grant) + max * sizeof(grant->jobs[0]));
	grant->format = p->format;
	grant->count = 0;
	if (p->format == CLAIM_FORMAT_SPROCKET)
		buf_puts(&body, "{\"data\":");
	else if (p->format == CLAIM_FORMAT_LIST)
		buf_puts(&body, "{\"data\":[");
	for (uint32_t n = 0; n < max && job; n++) {
		if (n > 0)
			buf_putc(&body, ',');
		claim_one(s, m, p, job, &body, now);
		grant->jobs[n].id = job->rec.id;
		grant->jobs[n].claim_id = job->rec.claim_id;
		grant->count++;
		job = queue_peek(m);
	}
	if (p->format == CLAIM_FORMAT_LIST)
		buf_puts(&body, "]}");
	if (warnings && warnings->len)
		render_add_raw_field(&body, "warnings", warnings->data, warnings->len);
	if (p->format == CLAIM_FORMAT_SPROCKET)
		buf_putc(&body, '}');
	engine_reply_claim_after_commit(s, req, &body, grant);
	engine_arm_lease_timer(s);
	return 1;
}

void claim_grant_free(claim_grant_t *grant)
{
	free(grant);
}

/*
 * Releases job when it still runs under claim_id, as the release route
 * does, and records the give-back. Returns 1 when it did, 0 when the job
 * changed since the claim (the fence of queue_release) and stays as it is.
 */
static int give_back_one(server_t *s, job_t *job, const iq_id_t *claim_id, queue_time_t now)
{
	char id[ID_TEXT_LEN + 1];
	const rbuf_t *name = job->rec.worker;

	engine_touch(s, job);
	if (queue_release(s->queue, job, claim_id, NULL, now) != 0) {
		engine_untouch(s, job);
		return 0;
	}
	engine_record_give_back(s, job);
	id_format(&job->rec.id, id);
	log_fields(LOG_INFO, "queue",
		   "claim response not sent because the client closed its connection, job back "
		   "to pending",
		   LOG_STR("request_id", id), LOG_STR("model", job->rec.model->data),
		   LOG_TEXT("worker", name ? name->data : "", name ? name->len : 0));
	return 1;
}

void claim_give_back(server_t *s, http_request_t *req, claim_grant_t *grant)
{
	queue_time_t now = server_now();
	queue_model_t *m = NULL;
	buf_t none = BUF_INIT;

	for (uint32_t i = 0; i < grant->count; i++) {
		job_t *job = queue_find(s->queue, &grant->jobs[i].id);

		if (job && give_back_one(s, job, &grant->jobs[i].claim_id, now))
			m = job->model;
	}

	/* The no-job response waits for the commit of the give-back, as any change's does. */
	if (grant->format == CLAIM_FORMAT_SPROCKET) {
		buf_puts(&none, "{\"data\":null}");
		engine_reply_after_commit(s, req, 200, &none);
	} else {
		engine_reply_after_commit(s, req, 204, &none);
	}
	claim_grant_free(grant);
	if (m) {
		engine_arm_lease_timer(s);
		claim_dispatch_waiters(s, m);
	}
}

void claim_respond_no_job(http_request_t *req, claim_format_t format)
{
	static const char sprocket_none[] = "{\"data\":null}";

	if (format == CLAIM_FORMAT_SPROCKET)
		http_respond(req, 200, NULL, NULL, sprocket_none, sizeof(sprocket_none) - 1);
	else
		http_respond(req, 204, NULL, NULL, "", 0);
}

static void unlink_waiter(waiter_t *w)
{
	model_state_t *ms = server_model_state(w->model);

	if (w->prev)
		w->prev->next = w->next;
	else
		ms->waiters_head = w->next;
	if (w->next)
		w->next->prev = w->prev;
	else
		ms->waiters_tail = w->prev;
	w->prev = w->next = NULL;
}

static void free_waiter(uv_handle_t *handle)
{
	waiter_t *w = handle->data;

	rbuf_unref(w->params.worker);
	free(w);
}

static void close_waiter(waiter_t *w)
{
	uv_timer_stop(&w->timer);
	uv_close((uv_handle_t *)&w->timer, free_waiter);
}

/* Sends the response for "no job arrived in time" in the waiter's format. */
static void respond_no_job(waiter_t *w)
{
	claim_respond_no_job(w->req, w->params.format);
}

static void on_wait_over(uv_timer_t *timer)
{
	waiter_t *w = timer->data;

	unlink_waiter(w);
	respond_no_job(w);
	close_waiter(w);
}

/*
 * Ends the wait of a client that closed its connection or its side of it:
 * the no-job response goes out at once, which a half-closed client can
 * still read, and a closed connection no longer waits in CLOSE_WAIT.
 */
static void on_client_gone(void *arg, http_request_t *req)
{
	waiter_t *w = arg;

	log_fields(LOG_DEBUG, "queue", "claim wait ended: the client closed its connection",
		   LOG_STR("model", w->model->name->data));
	unlink_waiter(w);
	respond_no_job(w);
	close_waiter(w);
}

void claim_wait(server_t *s, queue_model_t *m, claim_params_t *p, int64_t wait_ms,
		http_request_t *req)
{
	model_state_t *ms = server_model_state(m);
	waiter_t *w;

	/* A client already at EOF (a request followed by its FIN) gets the answer now. */
	if (http_request_is_orphaned(req)) {
		if (p->format == CLAIM_FORMAT_SPROCKET)
			http_respond(req, 200, NULL, NULL, "{\"data\":null}", 13);
		else
			http_respond(req, 204, NULL, NULL, "", 0);
		return;
	}
	w = xcalloc(1, sizeof(*w));
	w->server = s;
	w->model = m;
	w->req = req;
	w->params = *p;
	p->worker = NULL;
	w->prev = ms->waiters_tail;
	if (ms->waiters_tail)
		ms->waiters_tail->next = w;
	else
		ms->waiters_head = w;
	ms->waiters_tail = w;
	uv_timer_init(s->loop, &w->timer);
	w->timer.data = w;
	uv_timer_start(&w->timer, on_wait_over, (uint64_t)wait_ms, 0);
	http_request_watch_orphan(req, on_client_gone, w);
	log_fields(LOG_DEBUG, "queue", "claim waits for a job", LOG_STR("model", m->name->data),
		   LOG_INT("wait_ms", wait_ms));
}

void claim_dispatch_waiters(server_t *s, queue_model_t *m)
{
	model_state_t *ms = m->user;

	while (ms && ms->waiters_head && queue_peek(m)) {
		waiter_t *w = ms->waiters_head;

		unlink_waiter(w);
		/* w is freed below, but a claim's response waits for its commit. */
		http_request_unwatch_orphan(w->req);
		if (http_request_is_orphaned(w->req))
			respond_no_job(w);
		else if (!auth_still_valid(s, w->req))
			auth_respond_key_gone(w->req);
		else
			claim_next(s, m, &w->params, w->req, NULL);
		close_waiter(w);
	}
}

static void flush_model(queue_model_t *m, void *ctx)
{
	model_state_t *ms = m->user;

	while (ms && ms->waiters_head) {
		waiter_t *w = ms->waiters_head;

		unlink_waiter(w);
		respond_no_job(w);
		close_waiter(w);
	}
}

void claim_flush_waiters(server_t *s)
{
	queue_model_each(s->queue, flush_model, s);
}

size_t claim_waiter_count(const model_state_t *ms)
{
	size_t n = 0;

	for (const waiter_t *w = ms->waiters_head; w; w = w->next)
		n++;
	return n;
}
