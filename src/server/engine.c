/*
 * The commit pipeline: group commit of queue changes to the store.
 *
 * The collecting batch gathers the store operations and the pending
 * responses of one loop pass. A uv_check hook hands it to the store at the
 * end of the pass. When the store's writer waits for work, it goes at once
 * after each request instead, so the writer commits the first requests of a
 * burst while the loop parses the rest. Up to STORE_MAX_IN_FLIGHT batches
 * are in flight. The writer commits all those that waited for it in one
 * transaction, so one fsync covers every request that arrived while the
 * previous commit was on disk. The commit callback hands over the next batch
 * before it sends the responses, so the disk works while they go out.
 *
 * Undo: before its first uncommitted change a job keeps a copy of its
 * committed record (job->committed). When a commit fails, every change not
 * yet committed is rolled back from those copies, newest first: the
 * collecting batch, the batches in flight after the failed one (the store
 * rejects them without running them), then the failed one. Their requests
 * get 503. Status reads use the same copies, so they never show an
 * uncommitted change.
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
#include "history.h"
#include "inferq_error.h"
#include "log.h"
#include "observe.h"
#include "pgq.h"
#include "server.h"
#include "status_cache.h"
#include "storage.h"

#define STATE_NONE JOB_STATE_COUNT /* prev_state of an insert */
#define PURGE_LIMIT 10000          /* rows one retention pass deletes */
/*
 * Delay of the lease timer after a failed commit. An expired lease whose
 * commit failed is undone with its deadline still past, so without a pause
 * the timer would expire it again at once, in a busy loop of failing commits.
 */
#define LEASE_RETRY_MS 1000

struct reply {
	reply_t *next;
	http_request_t *req;
	int status;
	buf_t body;
	claim_grant_t *grant; /* a claim's jobs, given back when req is orphaned, or NULL */
};

static void flush(server_t *s);
static void on_commit(store_batch_t *batch, void *ctx);
static void arm_lease_timer(server_t *s, int64_t min_delay_ms);

queue_time_t server_now(void)
{
	queue_time_t now = {clock_wall_ms(), clock_mono_ms()};

	return now;
}

model_state_t *server_model_state(queue_model_t *m)
{
	if (m->user == NULL)
		m->user = xcalloc(1, sizeof(model_state_t));
	return m->user;
}

static int batch_empty(const pending_batch_t *pb)
{
	return pb->batch.count == 0 && pb->replies_head == NULL;
}

int engine_busy(const server_t *s)
{
	return s->n_inflight > 0 || !batch_empty(s->collecting);
}

int engine_overloaded(server_t *s)
{
	size_t waiting = s->collecting->batch.count;
	int64_t now;

	for (size_t i = 0; i < s->n_inflight; i++)
		waiting += s->inflight[i]->batch.count;
	if (waiting < s->config.max_pending_changes)
		return 0;
	now = clock_mono_ms();
	if (now - s->overload_logged_ms >= 1000) {
		log_warn("store", "%zu changes wait for the disk (limit %u, --max-pending-changes): "
				  "answering submits 503 until the store catches up; check the disk's "
				  "latency",
			 waiting, s->config.max_pending_changes);
		s->overload_logged_ms = now;
	}
	return 1;
}

/*
 * A job's committed image: job->committed points at rec. The lease deadline
 * lives here rather than in job_t, so that clean jobs do not pay for it.
 */
struct committed_image {
	job_record_t rec;
	int64_t lease_mono; /* job->lease_mono that goes with rec */
};

static struct committed_image *image_of(const job_t *job)
{
	return (struct committed_image *)job->committed;
}

/* Returns the record of a new image, uninitialised, with its lease_mono set. */
static job_record_t *new_image(int64_t lease_mono)
{
	struct committed_image *image = xmalloc(sizeof(*image));

	image->lease_mono = lease_mono;
	return &image->rec;
}

void engine_touch(server_t *s, job_t *job)
{
	if (job->uncommitted_insert || job->committed)
		return;
	job->committed = new_image(job->lease_mono);
	job_record_copy(job->committed, &job->rec);
}

static void on_idle(uv_idle_t *handle)
{
	/* Nothing to do: an active idle handle keeps the poll phase from blocking. */
}

/*
 * Makes the loop reach its check phase soon. Changes recorded by a timer
 * (a lease expiry, a retention purge) arrive with no I/O to wake the poll
 * phase, so without this they would wait uncommitted until the next request.
 */
static void wake_flush(server_t *s)
{
	if (s->n_inflight < STORE_MAX_IN_FLIGHT)
		uv_idle_start(&s->flush_idle, on_idle);
}

static store_op_t *add_op(server_t *s, job_t *job, store_op_kind_t kind, job_state_t prev)
{
	store_op_t *op = store_batch_add(&s->collecting->batch, kind);

	job_record_copy(&op->rec, &job->rec);
	op->owner = job;
	op->prev_state = prev;
	op->lease_mono = job->lease_mono;
	job->dirty_batch = s->collecting->batch.id;
	wake_flush(s);
	return op;
}

void engine_record_insert(server_t *s, job_t *job)
{
	job->uncommitted_insert = 1;
	add_op(s, job, STORE_OP_INSERT, STATE_NONE);
}

/* Appends event to the job's history, so it commits with the change it records. */
static void add_history(server_t *s, job_t *job, history_event_t event, int64_t at_ms,
			const rbuf_t *worker, const char *detail)
{
	history_append(&job->rec, event, at_ms, worker, detail, s->config.max_job_history);
}

/*
 * Records a change of job with its history event, whose detail is detail
 * or, when NULL, the error of a failed job. Returns the op for more marks.
 */
static store_op_t *record_update(server_t *s, job_t *job, job_state_t prev, const char *detail)
{
	history_event_t event = history_event_of(prev, job->rec.state);
	const rbuf_t *worker = event == HISTORY_CANCELED ? NULL : job->rec.worker;
	store_op_t *op;

	if (detail == NULL && event == HISTORY_FAILED && job->rec.error)
		detail = job->rec.error->data;
	add_history(s, job, event, clock_wall_ms(), worker, detail);
	op = add_op(s, job, STORE_OP_UPDATE, prev);
	op->event = event;
	return op;
}

void engine_record_update(server_t *s, job_t *job, job_state_t prev)
{
	record_update(s, job, prev, NULL);
}

void engine_record_claim(server_t *s, job_t *job)
{
	record_update(s, job, JOB_PENDING, NULL)->cause = OBSERVE_CAUSE_CLAIM;
}

void engine_record_give_back(server_t *s, job_t *job)
{
	store_op_t *op = record_update(s, job, JOB_RUNNING, CLAIM_GIVE_BACK_DETAIL);

	op->cause = OBSERVE_CAUSE_UNDELIVERED;
}

void engine_untouch(server_t *s, job_t *job)
{
	if (job->dirty_batch == 0 && job->committed) {
		job_record_clear(job->committed);
		free(job->committed);
		job->committed = NULL;
	}
}

const job_record_t *engine_committed_record(const job_t *job)
{
	if (job->uncommitted_insert)
		return NULL;
	return job->committed ? job->committed : &job->rec;
}

static void add_reply(server_t *s, http_request_t *req, int status, buf_t *body,
		      claim_grant_t *grant)
{
	reply_t *r = xcalloc(1, sizeof(*r));
	pending_batch_t *pb = s->collecting;

	r->req = req;
	r->status = status;
	r->body = *body;
	r->grant = grant;
	buf_init(body);
	if (pb->replies_tail)
		pb->replies_tail->next = r;
	else
		pb->replies_head = r;
	pb->replies_tail = r;
	wake_flush(s);
}

void engine_reply_after_commit(server_t *s, http_request_t *req, int status, buf_t *body)
{
	add_reply(s, req, status, body, NULL);
}

void engine_reply_claim_after_commit(server_t *s, http_request_t *req, buf_t *body,
				     claim_grant_t *grant)
{
	add_reply(s, req, 200, body, grant);
}

/*
 * Sends each reply of the list r and frees it, or sends 503 to each when
 * failure is set. A claim whose client is gone gives its jobs back instead.
 */
static void send_reply_list(server_t *s, reply_t *r, const char *failure)
{
	while (r) {
		reply_t *next = r->next;

		if (failure) {
			buf_t body = BUF_INIT;

			/*
			 * After a failed fsync the disk may still hold the commit, and a
			 * crash before the next commit can bring it back: the outcome is
			 * unknown, so the message must not promise that nothing happened.
			 */
			error_body(&body, 503, "store_unavailable", NULL,
				   "the store could not commit the change (%s), so it is not applied; "
				   "if the disk wrote part of it, it can reappear after a crash, so "
				   "retry the request (a submit with the same Idempotency-Key is never "
				   "applied twice)",
				   failure);
			http_respond(r->req, 503, NULL, "Retry-After: 1\r\n", body.data, body.len);
			buf_free(&body);
		} else if (r->grant && http_request_is_orphaned(r->req)) {
			claim_give_back(s, r->req, r->grant);
			r->grant = NULL;
		} else {
			http_respond(r->req, r->status, NULL, NULL, r->body.data ? r->body.data : "",
				     r->body.len);
		}
		claim_grant_free(r->grant);
		buf_free(&r->body);
		free(r);
		r = next;
	}
}

/* Takes the replies of pb out of it. */
static reply_t *take_replies(pending_batch_t *pb)
{
	reply_t *r = pb->replies_head;

	pb->replies_head = pb->replies_tail = NULL;
	return r;
}

static void send_replies(server_t *s, pending_batch_t *pb, const char *failure)
{
	send_reply_list(s, take_replies(pb), failure);
}

static void count_committed(server_t *s, job_t *job, const store_op_t *op, int64_t now_ms)
{
	model_state_t *ms = server_model_state(job->model);

	if (op->prev_state <= JOB_RUNNING)
		ms->committed[op->prev_state]--;
	if (op->rec.state <= JOB_RUNNING)
		ms->committed[op->rec.state]++;

	/* Totals since the start and the workers view follow committed changes only. */
	if (op->kind == STORE_OP_INSERT)
		ms->submitted_total++;
	else if (op->prev_state != op->rec.state && op->rec.state == JOB_DONE)
		ms->completed_total++;
	else if (op->prev_state != op->rec.state && op->rec.state == JOB_FAILED)
		ms->failed_total++;
	if (s->workers)
		workers_record(s->workers, (history_event_t)op->event, &op->rec, now_ms);
}

static void clear_committed(job_t *job)
{
	if (job->committed) {
		job_record_clear(job->committed);
		free(job->committed);
		job->committed = NULL;
	}
}

static void schedule_purge(server_t *s);

static reply_t *commit_succeeded(server_t *s, pending_batch_t *pb)
{
	store_batch_t *b = &pb->batch;
	int64_t now_ms = clock_wall_ms();
	size_t i;

	/* Counts, and committed images of jobs changed again in the next batch. */
	for (i = 0; i < b->count; i++) {
		store_op_t *op = &b->ops[i];
		job_t *job = op->owner;

		if (op->kind == STORE_OP_PURGE) {
			observe_purge_committed(s, op);
			if (op->purged > 0)
				log_info("retention", "deleted %lld finished jobs",
					 (long long)op->purged);
			if (op->purged >= (int64_t)op->purge_limit)
				schedule_purge(s);
			status_cache_forget(s->status_cache, op->purged_ids, (size_t)op->purged);
			storage_forget_jobs(s, op->purged_ids, (size_t)op->purged);
			op->purged_ids = NULL;
			continue;
		}
		if (store_op_is_key(op->kind)) {
			pgq_key_committed(s, op); /* other nodes learn it (postgres store) */
			continue;
		}
		count_committed(s, job, op, now_ms);
		observe_job_committed(s, job, op);
		if (op->kind == STORE_OP_INSERT)
			idempotency_untrack(s->idempotency, job);
		if (job->dirty_batch > b->id) {
			if (job->committed)
				job_record_clear(job->committed);
			else
				job->committed = new_image(0);
			job_record_copy(job->committed, &op->rec);
			image_of(job)->lease_mono = op->lease_mono;
			job->uncommitted_insert = 0;
		}
	}

	/* Jobs whose last change was in this batch are clean now. */
	for (i = 0; i < b->count; i++) {
		job_t *job = b->ops[i].owner;

		if (job && job->dirty_batch == b->id) {
			clear_committed(job);
			job->uncommitted_insert = 0;
			job->dirty_batch = 0;
		}
	}

	/*
	 * A terminal change is the last change of its job, so no later op of
	 * this batch or the next one refers to the job. Drop it from memory,
	 * because status reads find it in the store.
	 */
	for (i = 0; i < b->count; i++) {
		store_op_t *op = &b->ops[i];

		if (op->owner && job_state_is_terminal(op->rec.state))
			queue_drop(s->queue, op->owner);
	}
	store_batch_reset(b);
	return take_replies(pb);
}

/* Rolls back the changes of pb, newest first. */
static void undo_batch(server_t *s, pending_batch_t *pb, queue_time_t now)
{
	store_batch_t *b = &pb->batch;

	for (size_t i = b->count; i-- > 0;) {
		store_op_t *op = &b->ops[i];
		job_t *job = op->owner;

		if (job == NULL) {
			if (store_op_is_key(op->kind))
				auth_undo(s, op);
			continue;
		}
		if (job->uncommitted_insert) {
			if (op->kind == STORE_OP_INSERT) {
				idempotency_untrack(s->idempotency, job);
				queue_drop(s->queue, job);
			}
			continue;
		}
		if (job->committed) {
			int64_t lease_mono = image_of(job)->lease_mono;

			queue_restore(s->queue, job, job->committed, now);
			if (job->rec.state == JOB_RUNNING && lease_mono > 0)
				queue_set_lease(s->queue, job, lease_mono);
			free(job->committed);
			job->committed = NULL;
			job->dirty_batch = 0;
		}
	}
}

static void dispatch_model(queue_model_t *m, void *ctx)
{
	claim_dispatch_waiters(ctx, m);
}

static void commit_failed(server_t *s, pending_batch_t *pb)
{
	queue_time_t now = server_now();
	pending_batch_t *next = s->collecting;
	size_t later = next->batch.count;

	for (size_t i = 0; i < s->n_inflight; i++)
		later += s->inflight[i]->batch.count;
	log_warn("store", "commit of %zu changes failed, %zu more rolled back: %s",
		 pb->batch.count, later, pb->batch.error);
	/* Newest first: the collecting batch, the ones in flight after pb, then pb. */
	undo_batch(s, next, now);
	for (size_t i = s->n_inflight; i-- > 0;)
		undo_batch(s, s->inflight[i], now);
	undo_batch(s, pb, now);
	send_replies(s, pb, pb->batch.error);
	for (size_t i = 0; i < s->n_inflight; i++) {
		send_replies(s, s->inflight[i], pb->batch.error);
		s->inflight[i]->abandoned = 1; /* reset at its callback, since the store still has it */
	}
	send_replies(s, next, pb->batch.error);
	store_batch_reset(&pb->batch);
	store_batch_reset(&next->batch);

	/* Restored jobs may be claimable again, and leases may have moved. */
	queue_model_each(s->queue, dispatch_model, s);
	arm_lease_timer(s, LEASE_RETRY_MS);
}

static void on_commit(store_batch_t *batch, void *ctx)
{
	server_t *s = ctx;
	pending_batch_t *pb = s->inflight[0];
	reply_t *replies;

	IQ_ASSERT(s->n_inflight > 0 && &pb->batch == batch);
	s->n_inflight--;
	memmove(&s->inflight[0], &s->inflight[1], s->n_inflight * sizeof(s->inflight[0]));
	if (pb->abandoned) {
		/* Rejected by the store after an earlier failure, which sent its requests 503. */
		pb->abandoned = 0;
		store_batch_reset(&pb->batch);
		flush(s);
		return;
	}
	if (batch->count > 0)
		observe_commit_done(s, batch, pb->handed_ns);
	if (batch->result != 0) {
		commit_failed(s, pb);
		flush(s);
		return;
	}
	/* The next batch goes to the store first, so the disk works while the replies go out. */
	replies = commit_succeeded(s, pb);
	flush(s);
	send_reply_list(s, replies, NULL);
}

static void flush(server_t *s)
{
	pending_batch_t *pb = s->collecting;
	int rc;

	/* The commit callback calls flush again, so no idle spin while the store is full. */
	uv_idle_stop(&s->flush_idle);
	if (batch_empty(pb))
		return;
	if (pb->batch.count == 0 && s->n_inflight == 0) {
		/* Replies that wait only for earlier commits, all done now. */
		send_replies(s, pb, NULL);
		return;
	}
	/*
	 * With no changes, the batch still goes to the store, whose callback
	 * comes after those of the earlier commits its replies wait for.
	 */
	if (s->n_inflight == STORE_MAX_IN_FLIGHT)
		return;
	pb->handed_ns = uv_hrtime();
	rc = store_commit(s->store, &pb->batch, on_commit, s);
	IQ_ASSERT(rc == 0);
	s->inflight[s->n_inflight++] = pb;
	/*
	 * The batches go round in turn and the store calls back in the order it
	 * got them, so the one after pb is neither in flight nor collecting.
	 */
	s->collecting = &s->batches[(size_t)(pb - s->batches + 1) % (STORE_MAX_IN_FLIGHT + 1)];
	IQ_ASSERT(s->collecting != s->inflight[0]);
	s->collecting->batch.id = s->next_batch_id++;
}

void engine_request_done(server_t *s)
{
	if (s->collecting->batch.count > 0 && store_writer_idle(s->store))
		flush(s);
}

static void on_check(uv_check_t *handle)
{
	flush(handle->data);
}

/*
 * Records a lease expiry: "expired", then "retried" or "failed", all naming
 * the worker that held the lease, in one update. Returns the update's op.
 */
static store_op_t *record_expiry(server_t *s, job_t *job, int64_t now_ms)
{
	const rbuf_t *worker = job->rec.worker;
	char detail[96];
	store_op_t *op;

	snprintf(detail, sizeof(detail), "lease of %u s ran out", job->rec.claim_timeout);
	add_history(s, job, HISTORY_EXPIRED, now_ms, worker, detail);
	if (job->rec.state == JOB_PENDING) {
		snprintf(detail, sizeof(detail), "retry %u of %u", job->rec.retries,
			 s->config.max_retries);
		add_history(s, job, HISTORY_RETRIED, now_ms, worker, detail);
	} else {
		add_history(s, job, HISTORY_FAILED, now_ms, worker,
			    job->rec.error ? job->rec.error->data : NULL);
	}
	op = add_op(s, job, STORE_OP_UPDATE, JOB_RUNNING);
	op->event = HISTORY_EXPIRED;
	return op;
}

static void on_lease_timer(uv_timer_t *timer)
{
	server_t *s = timer->data;
	queue_time_t now = server_now();
	job_t *job;

	while ((job = queue_lease_first(s->queue)) != NULL && job->lease_mono <= now.mono_ms) {
		char id[ID_TEXT_LEN + 1];
		job_t *expired;

		engine_touch(s, job);
		expired = queue_expire_next(s->queue, now);
		IQ_ASSERT(expired == job);
		record_expiry(s, job, now.wall_ms)->cause = OBSERVE_CAUSE_EXPIRY;
		id_format(&job->rec.id, id);
		log_fields(LOG_INFO, "lease",
			   job->rec.state == JOB_PENDING
				   ? "lease expired, job back to pending"
				   : "lease expired after the last retry, job failed",
			   LOG_STR("request_id", id), LOG_STR("model", job->rec.model->data),
			   LOG_UINT("retries", job->rec.retries));
		if (job->rec.state == JOB_PENDING)
			claim_dispatch_waiters(s, job->model);
	}
	engine_arm_lease_timer(s);
}

/* Starts the lease timer for the earliest lease, but no sooner than min_delay_ms from now. */
static void arm_lease_timer(server_t *s, int64_t min_delay_ms)
{
	int64_t next = queue_next_lease(s->queue);
	int64_t delay;

	if (next < 0) {
		uv_timer_stop(&s->lease_timer);
		return;
	}
	delay = next - clock_mono_ms();
	if (delay < min_delay_ms)
		delay = min_delay_ms;
	uv_timer_start(&s->lease_timer, on_lease_timer, (uint64_t)delay, 0);
}

void engine_arm_lease_timer(server_t *s)
{
	arm_lease_timer(s, 0);
}

static void add_purge(server_t *s)
{
	store_op_t *op = store_batch_add(&s->collecting->batch, STORE_OP_PURGE);

	op->purge_before = clock_wall_ms() - s->config.retention_ms;
	op->purge_limit = PURGE_LIMIT;
	wake_flush(s);
}

static void on_retention_timer(uv_timer_t *timer)
{
	add_purge(timer->data);
}

/* Runs another purge pass soon, because the last one hit its row limit. */
static void schedule_purge(server_t *s)
{
	add_purge(s);
}

void engine_init(server_t *s)
{
	int64_t period = s->config.retention_ms / 2;

	if (period < 1000)
		period = 1000;
	if (period > 60000)
		period = 60000;

	s->next_batch_id = 1;
	for (size_t i = 0; i < STORE_MAX_IN_FLIGHT + 1; i++) {
		memset(&s->batches[i], 0, sizeof(s->batches[i]));
		store_batch_init(&s->batches[i].batch);
	}
	s->collecting = &s->batches[0];
	s->collecting->batch.id = s->next_batch_id++;
	s->n_inflight = 0;

	uv_check_init(s->loop, &s->flush_check);
	s->flush_check.data = s;
	uv_check_start(&s->flush_check, on_check);
	uv_idle_init(s->loop, &s->flush_idle);
	s->flush_idle.data = s;
	uv_timer_init(s->loop, &s->lease_timer);
	s->lease_timer.data = s;
	uv_timer_init(s->loop, &s->retention_timer);
	s->retention_timer.data = s;
	uv_timer_start(&s->retention_timer, on_retention_timer, (uint64_t)period, (uint64_t)period);
	engine_arm_lease_timer(s);
}

void engine_close(server_t *s)
{
	uv_check_stop(&s->flush_check);
	uv_close((uv_handle_t *)&s->flush_check, NULL);
	uv_idle_stop(&s->flush_idle);
	uv_close((uv_handle_t *)&s->flush_idle, NULL);
	uv_close((uv_handle_t *)&s->lease_timer, NULL);
	uv_close((uv_handle_t *)&s->retention_timer, NULL);
	for (size_t i = 0; i < STORE_MAX_IN_FLIGHT + 1; i++)
		store_batch_free(&s->batches[i].batch);
}
