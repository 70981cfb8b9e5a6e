/*
 * Unit tests for the queue engine: claim order, fencing by claim id, lease
 * expiry with retry_history, late completion, info merge limits, undo by
 * queue_restore, and a seeded random run checked against a plain reference
 * model. Time is a fake clock: each test passes queue_time_t values it
 * builds from a millisecond offset. queue_check() runs after the steps
 * that change indexes, so a broken heap or counter fails the test at once.
 *
 * SPDX-License-Identifier: MIT
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "clock.h"
#include "inferq_error.h"
#include "json.h"
#include "queue.h"

#define WALL_BASE INT64_C(1770000000000) /* 2026-02-02T02:40:00Z */
#define MONO_BASE INT64_C(5000000)

/* The fake clock: both clocks at offset ms from the start of the test. */
static queue_time_t at(int64_t ms)
{
	queue_time_t t = {WALL_BASE + ms, MONO_BASE + ms};

	return t;
}

static queue_t *new_queue(uint32_t max_retries, size_t max_info_bytes, int max_depth)
{
	queue_config_t config = {max_retries, max_info_bytes, max_depth};

	return queue_new(&config);
}

static job_t *new_job(const char *model, int32_t priority, uint64_t seq, queue_time_t now)
{
	job_t *job = queue_job_new();

	id_new_v7(&job->rec.id, now.wall_ms);
	job->rec.seq = seq;
	job->rec.model = rbuf_from_str(model);
	job->rec.priority = priority;
	job->rec.state = JOB_PENDING;
	job->rec.created_at = now.wall_ms;
	job->rec.payload = rbuf_from_str("{\"prompt\":\"hi\"}");
	return job;
}

static job_t *add_job(queue_t *q, const char *model, int32_t priority, uint64_t seq,
		      queue_time_t now)
{
	job_t *job = new_job(model, priority, seq, now);

	queue_add(q, job, now);
	assert_int_equal(queue_check(q), 0);
	return job;
}

static queue_model_t *model(queue_t *q, const char *name)
{
	queue_model_t *m = queue_model_get(q, name, strlen(name), 0);

	assert_non_null(m);
	return m;
}

/* Returns a validated span over text, which must outlive the span. */
static json_span_t span(const char *text)
{
	json_span_t root;
	json_scan_error_t err;

	assert_int_equal(json_validate(text, strlen(text), 64, &root, &err), 0);
	return root;
}

/* Asserts two records are the same, byte fields compared by pointer. */
static void assert_record_same(const job_record_t *a, const job_record_t *b)
{
	assert_memory_equal(a->id.b, b->id.b, ID_BYTES);
	assert_int_equal(a->seq, b->seq);
	assert_ptr_equal(a->model, b->model);
	assert_int_equal(a->priority, b->priority);
	assert_int_equal(a->state, b->state);
	assert_int_equal(a->retries, b->retries);
	assert_int_equal(a->created_at, b->created_at);
	assert_int_equal(a->claimed_at, b->claimed_at);
	assert_int_equal(a->done_at, b->done_at);
	assert_int_equal(a->lease_expires_at, b->lease_expires_at);
	assert_int_equal(a->claim_timeout, b->claim_timeout);
	assert_memory_equal(a->claim_id.b, b->claim_id.b, ID_BYTES);
	assert_ptr_equal(a->worker, b->worker);
	assert_ptr_equal(a->payload, b->payload);
	assert_ptr_equal(a->info, b->info);
	assert_ptr_equal(a->outputs, b->outputs);
	assert_ptr_equal(a->error, b->error);
	assert_ptr_equal(a->warnings, b->warnings);
}

/* Returns the job's info as a validated span; the job must have info. */
static json_span_t info_span(const job_t *job)
{
	json_span_t root;
	json_scan_error_t err;

	assert_non_null(job->rec.info);
	assert_int_equal(json_validate(job->rec.info->data, job->rec.info->len, 64, &root, &err),
			 0);
	assert_int_equal(root.type, JSON_TYPE_OBJECT);
	return root;
}

static json_span_t member(json_span_t object, const char *name)
{
	json_span_t value;

	assert_true(json_object_find(object, name, &value));
	return value;
}

static int has_member(json_span_t object, const char *name)
{
	json_span_t value;

	return json_object_find(object, name, &value);
}

static size_t count_items(json_span_t container)
{
	json_iter_t it;
	json_member_t m;
	json_span_t e;
	size_t n = 0;

	if (container.type == JSON_TYPE_OBJECT) {
		json_object_begin(&it, container);
		while (json_object_next(&it, &m))
			n++;
	} else {
		assert_int_equal(container.type, JSON_TYPE_ARRAY);
		json_array_begin(&it, container);
		while (json_array_next(&it, &e))
			n++;
	}
	return n;
}

static json_span_t element(json_span_t array, size_t i)
{
	json_iter_t it;
	json_span_t e;

	assert_int_equal(array.type, JSON_TYPE_ARRAY);
	json_array_begin(&it, array);
	for (size_t k = 0; k <= i; k++)
		assert_true(json_array_next(&it, &e));
	return e;
}

static void assert_json_string(json_span_t value, const char *want)
{
	buf_t text = BUF_INIT;

	assert_int_equal(value.type, JSON_TYPE_STRING);
	assert_int_equal(json_string_decode(value, &text), 0);
	assert_non_null(text.data);
	assert_string_equal(text.data, want);
	buf_free(&text);
}

static int64_t json_integer(json_span_t value)
{
	int64_t n;

	assert_int_equal(value.type, JSON_TYPE_NUMBER);
	assert_int_equal(json_int64(value, &n), 0);
	return n;
}

static void assert_rfc3339(json_span_t value, int64_t ms)
{
	char want[RFC3339_LEN + 1];

	clock_format_rfc3339(ms, want);
	assert_json_string(value, want);
}

/* Asserts entry i of info.retry_history (attempt i + 1). */
static void assert_history_entry(const job_t *job, size_t i, const char *worker,
				 int64_t claimed_at, int64_t expired_at)
{
	json_span_t entry = element(member(info_span(job), "retry_history"), i);

	assert_int_equal(entry.type, JSON_TYPE_OBJECT);
	assert_int_equal(json_integer(member(entry, "attempt")), i + 1);
	if (worker)
		assert_json_string(member(entry, "worker"), worker);
	else
		assert_false(has_member(entry, "worker"));
	assert_rfc3339(member(entry, "claimed_at"), claimed_at);
	assert_rfc3339(member(entry, "expired_at"), expired_at);
	assert_int_equal(count_items(entry), worker ? 4 : 3);
}

static size_t history_len(const job_t *job)
{
	return count_items(member(info_span(job), "retry_history"));
}

/* ---- claim order ---- */

static void test_claim_order_priority_then_fifo(void **state)
{
	static const int32_t prio[] = {0,  -1, INT32_MAX, 5, INT32_MIN, 0,  5,
				       -1, 7,  INT32_MIN, 0, INT32_MAX, -7, 5};
	static const uint64_t want_seq[] = {3, 12, 9, 4, 7, 14, 1, 6, 11, 2, 8, 13, 5, 10};
	const size_t n = sizeof(prio) / sizeof(prio[0]);
	queue_t *q = new_queue(3, 0, 0);
	queue_model_t *m;

	/* Submitted out of seq order, so FIFO cannot come from insertion order. */
	for (size_t i = n; i-- > 0;)
		add_job(q, "m", prio[i], i + 1, at(0));
	m = model(q, "m");
	assert_int_equal(m->pending, n);

	for (size_t i = 0; i < n; i++) {
		job_t *job = queue_claim(q, m, 30, NULL, at(1000));

		assert_non_null(job);
		assert_int_equal(job->rec.seq, want_seq[i]);
		assert_int_equal(job->rec.state, JOB_RUNNING);
		assert_int_equal(queue_check(q), 0);
	}
	assert_int_equal(m->pending, 0);
	assert_int_equal(m->running, n);
	assert_null(queue_claim(q, m, 30, NULL, at(1000)));
	queue_free(q);
}

static void test_claim_empty_returns_null(void **state)
{
	queue_t *q = new_queue(3, 0, 0);
	queue_model_t *m;

	assert_null(queue_model_get(q, "absent", 6, 0));
	m = queue_model_get(q, "empty", 5, 1);
	assert_non_null(m);
	assert_ptr_equal(queue_model_get(q, "empty", 5, 0), m);
	assert_null(queue_peek(m));
	assert_null(queue_claim(q, m, 30, NULL, at(0)));
	assert_int_equal(queue_next_lease(q), -1);
	assert_null(queue_expire_next(q, at(INT64_C(1) << 40)));
	assert_int_equal(queue_check(q), 0);
	queue_free(q);
}

static void test_claim_sets_lease_and_worker(void **state)
{
	queue_t *q = new_queue(3, 0, 0);
	job_t *job = add_job(q, "m", 0, 1, at(0));
	rbuf_t *w1 = rbuf_from_str("worker-1");
	rbuf_t *w2 = rbuf_from_str("worker-2");
	iq_id_t first;

	assert_ptr_equal(queue_claim(q, model(q, "m"), 30, w1, at(2000)), job);
	assert_int_equal(job->rec.claimed_at, WALL_BASE + 2000);
	assert_int_equal(job->rec.lease_expires_at, WALL_BASE + 32000);
	assert_int_equal(job->lease_mono, MONO_BASE + 32000);
	assert_int_equal(job->rec.claim_timeout, 30);
	assert_ptr_equal(job->rec.worker, w1);
	assert_int_equal(w1->refs, 2);
	assert_false(id_is_zero(&job->rec.claim_id));
	assert_int_equal(queue_next_lease(q), MONO_BASE + 32000);
	first = job->rec.claim_id;

	/* A second claim replaces the worker and the claim id. */
	assert_int_equal(queue_release(q, job, &first, NULL, at(3000)), 0);
	assert_ptr_equal(queue_claim(q, model(q, "m"), 60, w2, at(4000)), job);
	assert_int_equal(w1->refs, 1);
	assert_ptr_equal(job->rec.worker, w2);
	assert_false(id_equal(&first, &job->rec.claim_id));
	assert_int_equal(job->rec.lease_expires_at, WALL_BASE + 64000);

	rbuf_unref(w1);
	rbuf_unref(w2);
	queue_free(q);
}

static void test_claim_without_lease(void **state)
{
	queue_t *q = new_queue(3, 0, 0);
	job_t *job = add_job(q, "m", 0, 1, at(0));
	iq_id_t claim;

	assert_ptr_equal(queue_claim(q, model(q, "m"), 0, NULL, at(0)), job);
	claim = job->rec.claim_id;
	assert_int_equal(job->rec.lease_expires_at, 0);
	assert_int_equal(job->lease_pos, JOB_NO_POS);
	assert_int_equal(model(q, "m")->running, 1);
	assert_int_equal(queue_next_lease(q), -1);
	assert_int_equal(queue_heartbeat(q, job, &claim, NULL, at(1000)), 0);
	assert_int_equal(job->rec.lease_expires_at, 0);
	assert_null(queue_expire_next(q, at(INT64_C(1) << 40)));
	assert_int_equal(queue_check(q), 0);
	assert_int_equal(queue_complete(q, job, &claim, NULL, NULL, at(2000)), 0);
	assert_int_equal(model(q, "m")->running, 0);
	queue_free(q);
}

/* ---- cancel ---- */

static void test_cancel_pending_keeps_order(void **state)
{
	queue_t *q = new_queue(3, 0, 0);
	job_t *jobs[8];
	static const uint64_t want_seq[] = {3, 5, 6, 7};
	queue_model_t *m;
	job_t *running;

	for (int i = 0; i < 8; i++)
		jobs[i] = add_job(q, "m", i < 4 ? 1 : 0, (uint64_t)i + 1, at(0));
	m = model(q, "m");

	/* Cancel the top, a middle job, and the last one. */
	assert_int_equal(queue_cancel(q, jobs[0], at(5000)), 0);
	assert_int_equal(queue_cancel(q, jobs[3], at(5000)), 0);
	assert_int_equal(queue_cancel(q, jobs[7], at(5000)), 0);
	assert_int_equal(queue_check(q), 0);
	assert_int_equal(jobs[0]->rec.state, JOB_CANCELED);
	assert_int_equal(jobs[0]->rec.done_at, WALL_BASE + 5000);
	assert_int_equal(jobs[0]->pending_pos, JOB_NO_POS);
	assert_int_equal(m->pending, 5);

	/* Canceled again, or canceled while running, is a conflict. */
	assert_int_equal(queue_cancel(q, jobs[0], at(6000)), INFERQ_ECONFLICT);
	assert_int_equal(jobs[0]->rec.done_at, WALL_BASE + 5000);
	running = queue_claim(q, m, 30, NULL, at(6000));
	assert_ptr_equal(running, jobs[1]);
	assert_int_equal(queue_cancel(q, running, at(6000)), INFERQ_ECONFLICT);
	assert_int_equal(running->rec.state, JOB_RUNNING);

	for (size_t i = 0; i < 4; i++) {
		job_t *job = queue_claim(q, m, 30, NULL, at(7000));

		assert_non_null(job);
		assert_int_equal(job->rec.seq, want_seq[i]);
	}
	assert_null(queue_claim(q, m, 30, NULL, at(7000)));
	assert_int_equal(queue_check(q), 0);
	queue_free(q);
}

/* ---- heartbeat and fencing ---- */

static void test_heartbeat_extends_lease(void **state)
{
	queue_t *q = new_queue(3, 0, 0);
	job_t *job = add_job(q, "m", 0, 1, at(0));
	iq_id_t claim;

	queue_claim(q, model(q, "m"), 30, NULL, at(0));
	claim = job->rec.claim_id;
	assert_int_equal(queue_heartbeat(q, job, &claim, NULL, at(20000)), 0);
	assert_int_equal(job->rec.lease_expires_at, WALL_BASE + 50000);
	assert_int_equal(queue_next_lease(q), MONO_BASE + 50000);
	assert_int_equal(job->rec.state, JOB_RUNNING);
	assert_int_equal(job->rec.claimed_at, WALL_BASE);

	/* The first lease would have ended at 30 s; the extended one has not. */
	assert_null(queue_expire_next(q, at(31000)));
	assert_null(queue_expire_next(q, at(49999)));
	assert_ptr_equal(queue_expire_next(q, at(50000)), job);
	assert_int_equal(queue_check(q), 0);
	queue_free(q);
}

static void test_heartbeat_reorders_lease_heap(void **state)
{
	queue_t *q = new_queue(3, 0, 0);
	job_t *a = add_job(q, "m", 0, 1, at(0));
	job_t *b = add_job(q, "m", 0, 2, at(0));
	iq_id_t claim_a;

	queue_claim(q, model(q, "m"), 15, NULL, at(0));
	queue_claim(q, model(q, "m"), 20, NULL, at(0));
	claim_a = a->rec.claim_id;
	assert_int_equal(queue_next_lease(q), MONO_BASE + 15000);

	/* The heartbeat moves a's deadline from 15 s to 24 s, past b's 20 s. */
	assert_int_equal(queue_heartbeat(q, a, &claim_a, NULL, at(9000)), 0);
	assert_int_equal(a->lease_mono, MONO_BASE + 24000);
	assert_int_equal(queue_next_lease(q), b->lease_mono);
	assert_int_equal(queue_check(q), 0);
	assert_ptr_equal(queue_expire_next(q, at(30000)), b);
	assert_ptr_equal(queue_expire_next(q, at(30000)), a);
	assert_null(queue_expire_next(q, at(30000)));
	queue_free(q);
}

static void test_stale_claim_changes_nothing(void **state)
{
	queue_t *q = new_queue(3, 0, 0);
	job_t *job = add_job(q, "m", 0, 1, at(0));
	rbuf_t *outputs = rbuf_from_str("{\"text\":\"late\"}");
	rbuf_t *error = rbuf_from_str("worker crashed");
	const char *patch_text = "{\"progress\":1}";
	json_span_t patch = span(patch_text);
	iq_id_t stale, zero;
	job_record_t before;
	int64_t lease_mono;

	memset(&zero, 0, sizeof(zero));
	queue_claim(q, model(q, "m"), 30, NULL, at(0));
	id_new_v4(&stale);
	job_record_copy(&before, &job->rec);
	lease_mono = job->lease_mono;

	assert_int_equal(queue_heartbeat(q, job, &stale, &patch, at(1000)), INFERQ_ECONFLICT);
	assert_int_equal(queue_complete(q, job, &stale, outputs, &patch, at(1000)),
			 INFERQ_ECONFLICT);
	assert_int_equal(queue_fail(q, job, &stale, error, NULL, at(1000)), INFERQ_ECONFLICT);
	assert_int_equal(queue_release(q, job, &stale, NULL, at(1000)), INFERQ_ECONFLICT);
	assert_int_equal(queue_heartbeat(q, job, &zero, NULL, at(1000)), INFERQ_ECONFLICT);
	assert_int_equal(queue_complete(q, job, NULL, outputs, NULL, at(1000)), INFERQ_ECONFLICT);
	assert_int_equal(queue_release(q, job, NULL, NULL, at(1000)), INFERQ_ECONFLICT);

	assert_record_same(&job->rec, &before);
	assert_int_equal(job->lease_mono, lease_mono);
	assert_int_equal(outputs->refs, 1);
	assert_int_equal(error->refs, 1);
	assert_int_equal(queue_check(q), 0);

	job_record_clear(&before);
	rbuf_unref(outputs);
	rbuf_unref(error);
	queue_free(q);
}

static void test_zero_claim_never_matches_pending(void **state)
{
	queue_t *q = new_queue(3, 0, 0);
	job_t *job = add_job(q, "m", 0, 1, at(0));
	iq_id_t zero;

	/* A never-claimed job has a zero claim id; a zero id must not match it. */
	memset(&zero, 0, sizeof(zero));
	assert_int_equal(queue_heartbeat(q, job, &zero, NULL, at(0)), INFERQ_ECONFLICT);
	assert_int_equal(queue_complete(q, job, &zero, NULL, NULL, at(0)), INFERQ_ECONFLICT);
	assert_int_equal(queue_fail(q, job, &zero, NULL, NULL, at(0)), INFERQ_ECONFLICT);
	assert_int_equal(queue_release(q, job, &zero, NULL, at(0)), INFERQ_ECONFLICT);
	assert_int_equal(job->rec.state, JOB_PENDING);
	queue_free(q);
}

/* ---- complete, fail, release ---- */

static void test_complete_sets_outputs(void **state)
{
	queue_t *q = new_queue(3, 0, 0);
	job_t *job = add_job(q, "m", 0, 1, at(0));
	rbuf_t *outputs = rbuf_from_str("{\"text\":\"done\"}");
	json_span_t patch = span("{\"progress\":1}");
	iq_id_t claim;

	queue_claim(q, model(q, "m"), 30, NULL, at(0));
	claim = job->rec.claim_id;
	assert_int_equal(queue_complete(q, job, &claim, outputs, &patch, at(9000)), 0);
	assert_int_equal(job->rec.state, JOB_DONE);
	assert_ptr_equal(job->rec.outputs, outputs);
	assert_int_equal(outputs->refs, 2);
	assert_int_equal(job->rec.done_at, WALL_BASE + 9000);
	assert_int_equal(job->rec.lease_expires_at, 0);
	assert_int_equal(job->lease_mono, 0);
	assert_int_equal(job->lease_pos, JOB_NO_POS);
	assert_string_equal(job->rec.info->data, "{\"progress\":1}");
	assert_int_equal(model(q, "m")->running, 0);
	assert_int_equal(queue_next_lease(q), -1);
	assert_int_equal(queue_check(q), 0);

	/* Terminal jobs do not change again. */
	assert_int_equal(queue_complete(q, job, &claim, outputs, NULL, at(9500)),
			 INFERQ_ECONFLICT);
	assert_int_equal(queue_heartbeat(q, job, &claim, NULL, at(9500)), INFERQ_ECONFLICT);
	assert_int_equal(queue_fail(q, job, &claim, NULL, NULL, at(9500)), INFERQ_ECONFLICT);
	assert_int_equal(queue_release(q, job, &claim, NULL, at(9500)), INFERQ_ECONFLICT);
	assert_int_equal(queue_cancel(q, job, at(9500)), INFERQ_ECONFLICT);
	assert_int_equal(job->rec.done_at, WALL_BASE + 9000);
	assert_ptr_equal(queue_find(q, &job->rec.id), job);

	rbuf_unref(outputs);
	queue_free(q);
}

static void test_fail_sets_error(void **state)
{
	queue_t *q = new_queue(3, 0, 0);
	job_t *job = add_job(q, "m", 0, 1, at(0));
	rbuf_t *error = rbuf_from_str("CUDA out of memory");
	iq_id_t claim;

	queue_claim(q, model(q, "m"), 30, NULL, at(0));
	claim = job->rec.claim_id;
	assert_int_equal(queue_fail(q, job, &claim, error, NULL, at(3000)), 0);
	assert_int_equal(job->rec.state, JOB_FAILED);
	assert_ptr_equal(job->rec.error, error);
	assert_int_equal(job->rec.done_at, WALL_BASE + 3000);
	assert_int_equal(job->rec.retries, 0);
	assert_null(job->rec.info);
	assert_int_equal(model(q, "m")->running, 0);
	assert_int_equal(model(q, "m")->pending, 0);
	assert_null(queue_peek(model(q, "m")));
	assert_int_equal(queue_check(q), 0);

	rbuf_unref(error);
	queue_free(q);
}

static void test_release_restores_original_place(void **state)
{
	queue_t *q = new_queue(3, 0, 0);
	job_t *a = add_job(q, "m", 2, 1, at(0));
	job_t *b = add_job(q, "m", 2, 2, at(0));
	job_t *c = add_job(q, "m", 1, 3, at(0));
	queue_model_t *m = model(q, "m");
	iq_id_t claim;

	assert_ptr_equal(queue_claim(q, m, 30, NULL, at(0)), a);
	claim = a->rec.claim_id;
	assert_ptr_equal(queue_peek(m), b);
	assert_int_equal(queue_release(q, a, &claim, NULL, at(1000)), 0);
	assert_int_equal(queue_check(q), 0);
	assert_int_equal(a->rec.state, JOB_PENDING);
	assert_true(id_is_zero(&a->rec.claim_id));
	assert_int_equal(a->rec.lease_expires_at, 0);
	assert_int_equal(a->rec.retries, 0);
	assert_int_equal(m->pending, 3);
	assert_int_equal(m->running, 0);

	/* The releasing worker can no longer act on the job. */
	assert_int_equal(queue_complete(q, a, &claim, NULL, NULL, at(2000)), INFERQ_ECONFLICT);
	assert_int_equal(queue_heartbeat(q, a, &claim, NULL, at(2000)), INFERQ_ECONFLICT);
	assert_int_equal(queue_release(q, a, &claim, NULL, at(2000)), INFERQ_ECONFLICT);

	assert_ptr_equal(queue_claim(q, m, 30, NULL, at(3000)), a);
	assert_ptr_equal(queue_claim(q, m, 30, NULL, at(3000)), b);
	assert_ptr_equal(queue_claim(q, m, 30, NULL, at(3000)), c);
	queue_free(q);
}

/* ---- lease expiry ---- */

static void test_expiry_retries_then_fails(void **state)
{
	static const char *workers[] = {"w1", "w2", "w3", "w4"};
	queue_t *q = new_queue(3, 0, 0);
	job_t *job = new_job("m", 0, 1, at(0));
	const char *big = "123456789012345678901234567890";
	int64_t claimed[4], expired[4];
	queue_model_t *m;

	job->rec.info = rbuf_from_str("{\"stage\":\"load\",\"n\":123456789012345678901234567890}");
	queue_add(q, job, at(0));
	m = model(q, "m");

	for (uint32_t round = 0; round < 4; round++) {
		rbuf_t *w = rbuf_from_str(workers[round]);
		int64_t t = (int64_t)round * 100000;

		claimed[round] = WALL_BASE + t;
		expired[round] = WALL_BASE + t + 61000;
		assert_ptr_equal(queue_claim(q, m, 60, w, at(t)), job);
		rbuf_unref(w);
		assert_null(queue_expire_next(q, at(t + 59999)));
		assert_ptr_equal(queue_expire_next(q, at(t + 61000)), job);
		assert_int_equal(queue_check(q), 0);
		assert_int_equal(history_len(job), round + 1);
		for (uint32_t i = 0; i <= round; i++)
			assert_history_entry(job, i, workers[i], claimed[i], expired[i]);

		/* Members other than retry_history keep their exact bytes. */
		assert_non_null(strstr(job->rec.info->data, big));
		assert_non_null(strstr(job->rec.info->data, "\"stage\":\"load\""));
		assert_int_equal(job->rec.lease_expires_at, 0);
		assert_int_equal(job->lease_mono, 0);

		if (round < 3) {
			assert_int_equal(job->rec.state, JOB_PENDING);
			assert_int_equal(job->rec.retries, round + 1);
			assert_false(id_is_zero(&job->rec.claim_id));
			assert_int_equal(m->pending, 1);
			assert_int_equal(m->running, 0);
		}
	}
	assert_int_equal(job->rec.state, JOB_FAILED);
	assert_int_equal(job->rec.retries, 3);
	assert_int_equal(job->rec.done_at, WALL_BASE + 300000 + 61000);
	assert_non_null(job->rec.error);
	assert_string_equal(job->rec.error->data,
			    "claim timed out after the last retry (4 deliveries, max_retries 3)");
	assert_int_equal(m->pending, 0);
	assert_int_equal(m->running, 0);
	assert_null(queue_claim(q, m, 60, NULL, at(500000)));
	queue_free(q);
}

static void test_expiry_with_no_retries(void **state)
{
	queue_t *q = new_queue(0, 0, 0);
	job_t *job = add_job(q, "m", 0, 1, at(0));

	queue_claim(q, model(q, "m"), 1, NULL, at(0));
	assert_ptr_equal(queue_expire_next(q, at(1000)), job);
	assert_int_equal(job->rec.state, JOB_FAILED);
	assert_int_equal(job->rec.retries, 0);
	assert_string_equal(job->rec.error->data,
			    "claim timed out and retries are off (1 delivery, max_retries 0)");
	assert_history_entry(job, 0, NULL, WALL_BASE, WALL_BASE + 1000);
	assert_int_equal(queue_check(q), 0);
	queue_free(q);
}

static void test_expiry_keeps_place(void **state)
{
	queue_t *q = new_queue(3, 0, 0);
	job_t *a = add_job(q, "m", 0, 1, at(0));
	job_t *b = add_job(q, "m", 0, 2, at(0));
	job_t *c = add_job(q, "m", 0, 3, at(0));
	job_t *hi, *lo;
	queue_model_t *m = model(q, "m");

	assert_ptr_equal(queue_claim(q, m, 10, NULL, at(0)), a);
	assert_ptr_equal(queue_claim(q, m, 10, NULL, at(0)), b);
	hi = add_job(q, "m", 1, 4, at(1000));
	lo = add_job(q, "m", -1, 5, at(1000));

	/* b and a both expire; a's tie on the deadline breaks by seq. */
	assert_ptr_equal(queue_expire_next(q, at(10000)), a);
	assert_ptr_equal(queue_expire_next(q, at(10000)), b);
	assert_null(queue_expire_next(q, at(10000)));
	assert_int_equal(queue_check(q), 0);

	assert_ptr_equal(queue_claim(q, m, 10, NULL, at(11000)), hi);
	assert_ptr_equal(queue_claim(q, m, 10, NULL, at(11000)), a);
	assert_ptr_equal(queue_claim(q, m, 10, NULL, at(11000)), b);
	assert_ptr_equal(queue_claim(q, m, 10, NULL, at(11000)), c);
	assert_ptr_equal(queue_claim(q, m, 10, NULL, at(11000)), lo);
	queue_free(q);
}

static void test_expiry_history_cases(void **state)
{
	queue_t *q = new_queue(3, 0, 0);
	job_t *kept = new_job("m", 0, 1, at(0));
	job_t *replaced = new_job("m", 0, 2, at(0));
	json_span_t root;

	/* A history loaded from the store is extended. */
	kept->rec.retries = 1;
	kept->rec.info = rbuf_from_str("{\"retry_history\":[{\"attempt\":1,\"worker\":\"old\","
				       "\"claimed_at\":\"2026-01-01T00:00:00Z\","
				       "\"expired_at\":\"2026-01-01T00:05:00Z\"}],\"x\":[1,2]}");
	queue_add(q, kept, at(0));

	/* A retry_history that is not an array is replaced by a new array. */
	replaced->rec.info = rbuf_from_str("{\"retry_history\":\"junk\",\"y\":true}");
	queue_add(q, replaced, at(0));

	queue_claim(q, model(q, "m"), 5, NULL, at(0));
	queue_claim(q, model(q, "m"), 5, NULL, at(0));
	assert_ptr_equal(queue_expire_next(q, at(5000)), kept);
	assert_ptr_equal(queue_expire_next(q, at(5000)), replaced);
	assert_int_equal(queue_check(q), 0);

	root = info_span(kept);
	assert_int_equal(count_items(member(root, "retry_history")), 2);
	assert_json_string(member(element(member(root, "retry_history"), 0), "worker"), "old");
	assert_int_equal(count_items(member(root, "x")), 2);
	assert_history_entry(kept, 1, NULL, WALL_BASE, WALL_BASE + 5000);
	assert_int_equal(kept->rec.retries, 2);

	assert_int_equal(member(info_span(replaced), "y").type, JSON_TYPE_TRUE);
	assert_int_equal(history_len(replaced), 1);
	assert_history_entry(replaced, 0, NULL, WALL_BASE, WALL_BASE + 5000);
	queue_free(q);
}

static void test_expiry_replaces_invalid_info(void **state)
{
	static const char *bad[] = {"[1,2]", "{\"a\":", "\"text\""};
	queue_t *q = new_queue(3, 0, 0);

	for (size_t i = 0; i < 3; i++) {
		job_t *job = new_job("m", 0, i + 1, at(0));

		job->rec.info = rbuf_from_str(bad[i]);
		queue_add(q, job, at(0));
		assert_ptr_equal(queue_claim(q, model(q, "m"), 5, NULL, at(0)), job);
		assert_ptr_equal(queue_expire_next(q, at(5000)), job);
		assert_int_equal(count_items(info_span(job)), 1);
		assert_int_equal(history_len(job), 1);
		assert_history_entry(job, 0, NULL, WALL_BASE, WALL_BASE + 5000);
		assert_int_equal(queue_cancel(q, job, at(6000)), 0);
	}
	assert_int_equal(queue_check(q), 0);
	queue_free(q);
}

static void test_expiry_ignores_info_limit(void **state)
{
	queue_t *q = new_queue(3, 40, 0);
	job_t *job = new_job("m", 0, 1, at(0));

	job->rec.info = rbuf_from_str("{\"note\":\"0123456789012345678901234\"}");
	queue_add(q, job, at(0));
	queue_claim(q, model(q, "m"), 5, NULL, at(0));
	assert_ptr_equal(queue_expire_next(q, at(5000)), job);
	assert_true(job->rec.info->len > 40);
	assert_int_equal(history_len(job), 1);
	queue_free(q);
}

/* ---- late completion ---- */

static void test_late_complete_after_expiry(void **state)
{
	queue_t *q = new_queue(3, 0, 0);
	job_t *a = add_job(q, "m", 0, 1, at(0));
	job_t *b = add_job(q, "m", 0, 2, at(0));
	rbuf_t *outputs = rbuf_from_str("{\"ok\":true}");
	rbuf_t *error = rbuf_from_str("bad input");
	queue_model_t *m = model(q, "m");
	iq_id_t claim_a, claim_b;

	queue_claim(q, m, 10, NULL, at(0));
	queue_claim(q, m, 10, NULL, at(0));
	claim_a = a->rec.claim_id;
	claim_b = b->rec.claim_id;
	assert_non_null(queue_expire_next(q, at(10000)));
	assert_non_null(queue_expire_next(q, at(10000)));
	assert_int_equal(m->pending, 2);

	assert_int_equal(queue_complete(q, a, &claim_a, outputs, NULL, at(12000)), 0);
	assert_int_equal(a->rec.state, JOB_DONE);
	assert_int_equal(a->rec.retries, 1);
	assert_int_equal(a->pending_pos, JOB_NO_POS);
	assert_int_equal(queue_fail(q, b, &claim_b, error, NULL, at(12000)), 0);
	assert_int_equal(b->rec.state, JOB_FAILED);
	assert_ptr_equal(b->rec.error, error);
	assert_int_equal(m->pending, 0);
	assert_int_equal(m->running, 0);
	assert_null(queue_peek(m));
	assert_int_equal(queue_check(q), 0);

	rbuf_unref(outputs);
	rbuf_unref(error);
	queue_free(q);
}

static void test_late_complete_after_reclaim_conflicts(void **state)
{
	queue_t *q = new_queue(3, 0, 0);
	job_t *job = add_job(q, "m", 0, 1, at(0));
	queue_model_t *m = model(q, "m");
	iq_id_t first, second;

	queue_claim(q, m, 10, NULL, at(0));
	first = job->rec.claim_id;
	assert_ptr_equal(queue_expire_next(q, at(10000)), job);
	assert_ptr_equal(queue_claim(q, m, 10, NULL, at(11000)), job);
	second = job->rec.claim_id;

	assert_int_equal(queue_complete(q, job, &first, NULL, NULL, at(12000)), INFERQ_ECONFLICT);
	assert_int_equal(queue_heartbeat(q, job, &first, NULL, at(12000)), INFERQ_ECONFLICT);
	assert_int_equal(job->rec.state, JOB_RUNNING);

	/* A late release is a conflict too: release needs a running claim. */
	assert_ptr_equal(queue_expire_next(q, at(21000)), job);
	assert_int_equal(queue_release(q, job, &second, NULL, at(22000)), INFERQ_ECONFLICT);
	assert_int_equal(queue_complete(q, job, &first, NULL, NULL, at(22000)), INFERQ_ECONFLICT);
	assert_int_equal(queue_complete(q, job, &second, NULL, NULL, at(22000)), 0);
	assert_int_equal(queue_check(q), 0);
	queue_free(q);
}

static void test_late_complete_after_final_failure(void **state)
{
	queue_t *q = new_queue(0, 0, 0);
	job_t *job = add_job(q, "m", 0, 1, at(0));
	iq_id_t claim;

	queue_claim(q, model(q, "m"), 10, NULL, at(0));
	claim = job->rec.claim_id;
	assert_ptr_equal(queue_expire_next(q, at(10000)), job);
	assert_int_equal(job->rec.state, JOB_FAILED);
	assert_int_equal(queue_complete(q, job, &claim, NULL, NULL, at(11000)), INFERQ_ECONFLICT);
	assert_int_equal(queue_heartbeat(q, job, &claim, NULL, at(11000)), INFERQ_ECONFLICT);
	queue_free(q);
}

static void test_late_heartbeat_revives(void **state)
{
	queue_t *q = new_queue(3, 0, 0);
	job_t *job = add_job(q, "m", 0, 1, at(0));
	job_t *other = add_job(q, "m", 0, 2, at(0));
	queue_model_t *m = model(q, "m");
	rbuf_t *info;
	iq_id_t claim;

	queue_claim(q, m, 10, NULL, at(0));
	claim = job->rec.claim_id;
	assert_ptr_equal(queue_expire_next(q, at(10000)), job);
	info = job->rec.info;
	assert_ptr_equal(queue_peek(m), job);

	assert_int_equal(queue_heartbeat(q, job, &claim, NULL, at(15000)), 0);
	assert_int_equal(job->rec.state, JOB_RUNNING);
	assert_memory_equal(job->rec.claim_id.b, claim.b, ID_BYTES);
	assert_int_equal(job->rec.retries, 1);
	assert_ptr_equal(job->rec.info, info);
	assert_int_equal(job->rec.claimed_at, WALL_BASE);
	assert_int_equal(job->rec.lease_expires_at, WALL_BASE + 25000);
	assert_int_equal(job->lease_mono, MONO_BASE + 25000);
	assert_int_equal(job->pending_pos, JOB_NO_POS);
	assert_int_equal(m->pending, 1);
	assert_int_equal(m->running, 1);
	assert_ptr_equal(queue_peek(m), other);
	assert_int_equal(queue_check(q), 0);

	assert_int_equal(queue_complete(q, job, &claim, NULL, NULL, at(16000)), 0);
	assert_int_equal(job->rec.state, JOB_DONE);
	queue_free(q);
}

/* ---- info merge ---- */

static void test_info_merge_patch(void **state)
{
	queue_t *q = new_queue(3, 48, 4);
	job_t *job = add_job(q, "m", 0, 1, at(0));
	json_span_t set = span("{\"a\":1,\"b\":{\"c\":2}}");
	json_span_t update = span("{\"a\":null,\"b\":{\"d\":3}}");
	json_span_t too_big = span("{\"z\":\"0123456789012345678901234567890123456789\"}");
	json_span_t too_deep = span("{\"b\":{\"e\":{\"f\":{\"g\":{}}}}}");
	job_record_t before;
	json_span_t root;
	iq_id_t claim;

	queue_claim(q, model(q, "m"), 30, NULL, at(0));
	claim = job->rec.claim_id;
	assert_int_equal(queue_heartbeat(q, job, &claim, &set, at(1000)), 0);
	assert_int_equal(queue_heartbeat(q, job, &claim, &update, at(2000)), 0);
	root = info_span(job);
	assert_false(has_member(root, "a"));
	assert_int_equal(json_integer(member(member(root, "b"), "c")), 2);
	assert_int_equal(json_integer(member(member(root, "b"), "d")), 3);
	assert_int_equal(count_items(root), 1);
	assert_int_equal(job->rec.lease_expires_at, WALL_BASE + 32000);

	/* Over max_info_bytes or max_depth: rejected, and nothing changes. */
	job_record_copy(&before, &job->rec);
	assert_int_equal(queue_heartbeat(q, job, &claim, &too_big, at(3000)), INFERQ_ELIMIT);
	assert_int_equal(queue_heartbeat(q, job, &claim, &too_deep, at(3000)), INFERQ_ELIMIT);
	assert_int_equal(queue_complete(q, job, &claim, NULL, &too_big, at(3000)), INFERQ_ELIMIT);
	assert_int_equal(queue_fail(q, job, &claim, NULL, &too_big, at(3000)), INFERQ_ELIMIT);
	assert_int_equal(queue_release(q, job, &claim, &too_big, at(3000)), INFERQ_ELIMIT);
	assert_record_same(&job->rec, &before);
	job_record_clear(&before);

	/* A stale claim is reported before a size problem. */
	memset(&claim, 0, sizeof(claim));
	assert_int_equal(queue_heartbeat(q, job, &claim, &too_big, at(3000)), INFERQ_ECONFLICT);
	assert_int_equal(queue_check(q), 0);
	queue_free(q);
}

static void test_info_merge_on_release(void **state)
{
	queue_t *q = new_queue(3, 0, 0);
	job_t *job = add_job(q, "m", 0, 1, at(0));
	json_span_t patch = span("{\"reason\":\"shutdown\"}");
	iq_id_t claim;

	queue_claim(q, model(q, "m"), 30, NULL, at(0));
	claim = job->rec.claim_id;
	assert_int_equal(queue_release(q, job, &claim, &patch, at(1000)), 0);
	assert_string_equal(job->rec.info->data, "{\"reason\":\"shutdown\"}");
	queue_free(q);
}

/* ---- add and restore ---- */

static void test_add_running_past_lease_expires(void **state)
{
	queue_t *q = new_queue(3, 0, 0);
	job_t *past = new_job("m", 0, 1, at(0));
	job_t *ancient = new_job("m", 0, 2, at(0));
	job_t *future = new_job("m", 0, 3, at(0));
	queue_model_t *m;

	past->rec.state = JOB_RUNNING;
	id_new_v4(&past->rec.claim_id);
	past->rec.claimed_at = WALL_BASE - 60000;
	past->rec.claim_timeout = 30;
	past->rec.lease_expires_at = WALL_BASE - 30000;

	/* Far enough back that the monotonic deadline would fall below zero. */
	ancient->rec.state = JOB_RUNNING;
	id_new_v4(&ancient->rec.claim_id);
	ancient->rec.claimed_at = WALL_BASE - 90000000;
	ancient->rec.claim_timeout = 30;
	ancient->rec.lease_expires_at = WALL_BASE - 86400000;

	future->rec.state = JOB_RUNNING;
	id_new_v4(&future->rec.claim_id);
	future->rec.claimed_at = WALL_BASE - 10000;
	future->rec.claim_timeout = 30;
	future->rec.lease_expires_at = WALL_BASE + 20000;

	queue_add(q, past, at(0));
	queue_add(q, ancient, at(0));
	queue_add(q, future, at(0));
	assert_int_equal(queue_check(q), 0);
	m = model(q, "m");
	assert_int_equal(m->running, 3);
	assert_int_equal(future->lease_mono, MONO_BASE + 20000);
	assert_true(queue_next_lease(q) > 0);
	assert_true(queue_next_lease(q) <= MONO_BASE);

	assert_ptr_equal(queue_expire_next(q, at(0)), ancient);
	assert_ptr_equal(queue_expire_next(q, at(0)), past);
	assert_null(queue_expire_next(q, at(0)));
	assert_int_equal(past->rec.state, JOB_PENDING);
	assert_int_equal(past->rec.retries, 1);
	assert_history_entry(past, 0, NULL, WALL_BASE - 60000, WALL_BASE);
	assert_ptr_equal(queue_expire_next(q, at(20000)), future);
	assert_int_equal(queue_check(q), 0);
	queue_free(q);
}

static void test_add_shares_model_name(void **state)
{
	queue_t *q = new_queue(3, 0, 0);
	job_t *a = add_job(q, "llama", 0, 1, at(0));
	job_t *b = add_job(q, "llama", 0, 2, at(0));
	job_t *c = add_job(q, "mistral", 0, 3, at(0));

	assert_ptr_equal(a->rec.model, b->rec.model);
	assert_ptr_equal(a->model, b->model);
	assert_ptr_not_equal(a->model, c->model);
	assert_string_equal(c->rec.model->data, "mistral");
	assert_int_equal(model(q, "llama")->pending, 2);
	assert_int_equal(model(q, "mistral")->pending, 1);
	assert_ptr_equal(queue_peek(model(q, "mistral")), c);
	queue_free(q);
}

/*
 * Snapshots job, applies change, restores, and checks the record, lease and
 * counters. Heap slots may differ after a restore, so the caller checks the
 * claim order instead.
 */
static void check_restore_round_trip(queue_t *q, job_t *job, void (*change)(queue_t *, job_t *))
{
	job_record_t snapshot, again;
	int64_t lease_mono = job->lease_mono;
	queue_model_t *m = job->model;
	uint64_t pending = m->pending, running = m->running;

	job_record_copy(&snapshot, &job->rec);
	change(q, job);
	assert_int_equal(queue_check(q), 0);

	job_record_copy(&again, &snapshot);
	queue_restore(q, job, &again, at(50000));
	assert_null(again.model);
	assert_int_equal(queue_check(q), 0);
	assert_record_same(&job->rec, &snapshot);
	assert_int_equal(job->lease_mono, lease_mono);
	assert_int_equal(m->pending, pending);
	assert_int_equal(m->running, running);
	job_record_clear(&snapshot);
}

static void claim_it(queue_t *q, job_t *job)
{
	assert_ptr_equal(queue_claim(q, job->model, 99, NULL, at(50000)), job);
}

static void cancel_it(queue_t *q, job_t *job)
{
	assert_int_equal(queue_cancel(q, job, at(50000)), 0);
}

static void complete_it(queue_t *q, job_t *job)
{
	rbuf_t *outputs = rbuf_from_str("{}");
	iq_id_t claim = job->rec.claim_id;

	assert_int_equal(queue_complete(q, job, &claim, outputs, NULL, at(50000)), 0);
	rbuf_unref(outputs);
}

static void release_it(queue_t *q, job_t *job)
{
	iq_id_t claim = job->rec.claim_id;

	assert_int_equal(queue_release(q, job, &claim, NULL, at(50000)), 0);
}

static void expire_it(queue_t *q, job_t *job)
{
	assert_ptr_equal(queue_expire_next(q, at(job->lease_mono - MONO_BASE)), job);
}

static void test_restore_round_trips(void **state)
{
	queue_t *q = new_queue(3, 0, 0);
	job_t *jobs[6];
	queue_model_t *m;
	static const int order[] = {1, 3, 5, 0, 2, 4};

	for (int i = 0; i < 6; i++)
		jobs[i] = add_job(q, "m", i % 2 ? 3 : 0, (uint64_t)i + 1, at(0));
	m = model(q, "m");

	/* Undo of a claim of the top job, and of a cancel of a middle one. */
	check_restore_round_trip(q, jobs[1], claim_it);
	check_restore_round_trip(q, jobs[2], cancel_it);

	/* Undo of complete, release and expiry of a running job. */
	assert_ptr_equal(queue_claim(q, m, 20, NULL, at(40000)), jobs[1]);
	check_restore_round_trip(q, jobs[1], complete_it);
	check_restore_round_trip(q, jobs[1], release_it);
	check_restore_round_trip(q, jobs[1], expire_it);
	assert_int_equal(jobs[1]->lease_mono, MONO_BASE + 60000);
	release_it(q, jobs[1]);

	for (int i = 0; i < 6; i++)
		assert_ptr_equal(queue_claim(q, m, 20, NULL, at(70000)), jobs[order[i]]);
	queue_free(q);
}

static void test_restore_recomputes_lease(void **state)
{
	queue_t *q = new_queue(3, 0, 0);
	job_t *job = add_job(q, "m", 0, 1, at(0));
	job_record_t snapshot;
	queue_time_t later = {WALL_BASE + 5000, MONO_BASE + 7000}; /* clocks drifted 2 s */
	iq_id_t claim;

	queue_claim(q, model(q, "m"), 30, NULL, at(0));
	claim = job->rec.claim_id;
	job_record_copy(&snapshot, &job->rec);
	assert_int_equal(queue_complete(q, job, &claim, NULL, NULL, at(1000)), 0);
	queue_restore(q, job, &snapshot, later);
	assert_int_equal(job->rec.state, JOB_RUNNING);
	assert_int_equal(job->lease_mono, MONO_BASE + 32000);
	assert_int_equal(queue_next_lease(q), MONO_BASE + 32000);
	assert_int_equal(model(q, "m")->running, 1);
	assert_int_equal(queue_check(q), 0);
	queue_free(q);
}

static void test_set_lease_reorders_heap(void **state)
{
	queue_t *q = new_queue(3, 0, 0);
	job_t *first = add_job(q, "m", 0, 1, at(0));
	job_t *second = add_job(q, "m", 0, 2, at(0));

	queue_claim(q, model(q, "m"), 10, NULL, at(0));
	queue_claim(q, model(q, "m"), 20, NULL, at(0));
	assert_ptr_equal(queue_lease_first(q), first);

	/* Moving the second lease before the first makes it the next to expire. */
	queue_set_lease(q, second, MONO_BASE + 5000);
	assert_ptr_equal(queue_lease_first(q), second);
	assert_int_equal(queue_next_lease(q), MONO_BASE + 5000);
	assert_int_equal(second->lease_mono, MONO_BASE + 5000);
	assert_int_equal(second->rec.state, JOB_RUNNING);

	/* And back behind it. */
	queue_set_lease(q, second, MONO_BASE + 60000);
	assert_ptr_equal(queue_lease_first(q), first);
	assert_int_equal(model(q, "m")->running, 2);
	assert_int_equal(queue_check(q), 0);
	queue_free(q);
}

/* ---- drop, hash growth, models ---- */

static void test_drop_fixes_counters(void **state)
{
	queue_t *q = new_queue(3, 0, 0);
	job_t *pending = add_job(q, "m", 0, 1, at(0));
	job_t *running = add_job(q, "m", 1, 2, at(0));
	job_t *done = add_job(q, "m", 0, 3, at(0));
	queue_model_t *m = model(q, "m");
	iq_id_t ids[3] = {pending->rec.id, running->rec.id, done->rec.id};

	assert_ptr_equal(queue_claim(q, m, 30, NULL, at(0)), running);
	cancel_it(q, done);
	queue_drop(q, pending);
	queue_drop(q, running);
	queue_drop(q, done);
	assert_int_equal(queue_check(q), 0);
	for (int i = 0; i < 3; i++)
		assert_null(queue_find(q, &ids[i]));
	assert_int_equal(m->pending, 0);
	assert_int_equal(m->running, 0);
	assert_int_equal(queue_next_lease(q), -1);
	assert_ptr_equal(queue_model_get(q, "m", 1, 0), m);
	queue_free(q);
}

static void test_hash_grows_and_shrinks(void **state)
{
	enum { COUNT = 5000 };
	queue_t *q = new_queue(3, 0, 0);
	job_t **jobs = calloc(COUNT, sizeof(*jobs));
	iq_id_t missing;

	assert_non_null(jobs);
	for (int i = 0; i < COUNT; i++) {
		/* Every id shares its timestamp, as in a burst of submits. */
		jobs[i] = new_job("m", i % 7, (uint64_t)i + 1, at(0));
		queue_add(q, jobs[i], at(0));
	}
	assert_int_equal(queue_check(q), 0);
	for (int i = 0; i < COUNT; i++)
		assert_ptr_equal(queue_find(q, &jobs[i]->rec.id), jobs[i]);
	id_new_v7(&missing, WALL_BASE);
	assert_null(queue_find(q, &missing));

	for (int i = 0; i < COUNT; i += 2)
		queue_drop(q, jobs[i]);
	assert_int_equal(queue_check(q), 0);
	for (int i = 1; i < COUNT; i += 2)
		assert_ptr_equal(queue_find(q, &jobs[i]->rec.id), jobs[i]);
	for (int i = 1; i < COUNT - 10; i += 2)
		queue_drop(q, jobs[i]);
	assert_int_equal(queue_check(q), 0);
	assert_int_equal(model(q, "m")->pending, 5);
	for (int i = COUNT - 9; i < COUNT; i += 2)
		assert_ptr_equal(queue_find(q, &jobs[i]->rec.id), jobs[i]);
	free(jobs);
	queue_free(q);
}

static void count_model(queue_model_t *m, void *ctx)
{
	size_t *count = ctx;

	(*count)++;
	assert_true(m->name->len > 0);
}

static void test_many_models(void **state)
{
	queue_t *q = new_queue(3, 0, 0);
	char name[32];
	size_t count = 0;

	for (int i = 0; i < 300; i++) {
		snprintf(name, sizeof(name), "org/model-%d", i);
		add_job(q, name, 0, (uint64_t)i + 1, at(0));
	}
	for (int i = 0; i < 300; i++) {
		queue_model_t *m;

		snprintf(name, sizeof(name), "org/model-%d", i);
		m = model(q, name);
		assert_string_equal(m->name->data, name);
		assert_int_equal(m->pending, 1);
		assert_int_equal(queue_peek(m)->rec.seq, (uint64_t)i + 1);
	}
	queue_model_each(q, count_model, &count);
	assert_int_equal(count, 300);
	assert_null(queue_model_get(q, "org/model-", 10, 0));
	queue_free(q);
}

/* ---- randomized check against a reference model ---- */

#define RAND_MODELS 3
#define RAND_OPS 20000
#define RAND_MAX_JOBS 400

/* What the test expects of one job. */
typedef struct {
	job_t *job;
	int model;
	int32_t priority;
	uint64_t seq;
	job_state_t state;
	uint32_t retries;
	iq_id_t claim;      /* last claim this test was given */
	int claim_live;     /* claim may still act: running, or pending after an expiry */
	uint32_t timeout;   /* s, claim_timeout of the last claim */
	int64_t lease_mono; /* expected deadline while running */
} ref_job_t;

typedef struct {
	ref_job_t jobs[RAND_MAX_JOBS];
	int count;
	ref_job_t *pending[RAND_MODELS][RAND_MAX_JOBS]; /* sorted: priority desc, seq asc */
	int pending_len[RAND_MODELS];
	uint64_t state_rng;
	uint64_t next_seq;
	int64_t now_ms;
} ref_t;

static uint64_t rng_next(ref_t *r)
{
	/* xorshift64*, so the run is the same on every libc. */
	r->state_rng ^= r->state_rng >> 12;
	r->state_rng ^= r->state_rng << 25;
	r->state_rng ^= r->state_rng >> 27;
	return r->state_rng * UINT64_C(2685821657736338717);
}

static uint32_t rng_below(ref_t *r, uint32_t n)
{
	return (uint32_t)(rng_next(r) >> 33) % n;
}

static const char *const rand_model_names[RAND_MODELS] = {"alpha", "beta", "gamma"};

static int ref_before(const ref_job_t *a, const ref_job_t *b)
{
	if (a->priority != b->priority)
		return a->priority > b->priority;
	return a->seq < b->seq;
}

static void ref_pending_insert(ref_t *r, ref_job_t *j)
{
	ref_job_t **list = r->pending[j->model];
	int n = r->pending_len[j->model];
	int i = n;

	while (i > 0 && ref_before(j, list[i - 1])) {
		list[i] = list[i - 1];
		i--;
	}
	list[i] = j;
	r->pending_len[j->model] = n + 1;
	j->state = JOB_PENDING;
}

static void ref_pending_remove(ref_t *r, ref_job_t *j)
{
	ref_job_t **list = r->pending[j->model];
	int n = r->pending_len[j->model];
	int i = 0;

	while (i < n && list[i] != j)
		i++;
	assert_true(i < n);
	memmove(&list[i], &list[i + 1], (size_t)(n - i - 1) * sizeof(*list));
	r->pending_len[j->model] = n - 1;
}

static ref_job_t *ref_pick(ref_t *r, job_state_t state)
{
	int start, i;

	if (r->count == 0)
		return NULL;
	start = (int)rng_below(r, (uint32_t)r->count);
	for (i = 0; i < r->count; i++) {
		ref_job_t *j = &r->jobs[(start + i) % r->count];

		if (j->state == state)
			return j;
	}
	return NULL;
}

static int32_t random_priority(ref_t *r)
{
	static const int32_t special[] = {INT32_MIN, INT32_MIN + 1, -1, 0, 1, INT32_MAX - 1,
					  INT32_MAX};

	if (rng_below(r, 4) == 0)
		return special[rng_below(r, 7)];
	return (int32_t)rng_below(r, 5) - 2;
}

static void rand_submit(queue_t *q, ref_t *r)
{
	ref_job_t *j;

	if (r->count == RAND_MAX_JOBS)
		return;
	j = &r->jobs[r->count++];
	memset(j, 0, sizeof(*j));
	j->model = (int)rng_below(r, RAND_MODELS);
	j->priority = random_priority(r);
	j->seq = ++r->next_seq;
	j->job = new_job(rand_model_names[j->model], j->priority, j->seq, at(r->now_ms));
	queue_add(q, j->job, at(r->now_ms));
	ref_pending_insert(r, j);
}

static void rand_claim(queue_t *q, ref_t *r)
{
	int mi = (int)rng_below(r, RAND_MODELS);
	queue_model_t *m = queue_model_get(q, rand_model_names[mi], strlen(rand_model_names[mi]), 1);
	uint32_t timeout = 1 + rng_below(r, 20);
	job_t *got = queue_claim(q, m, timeout, NULL, at(r->now_ms));
	ref_job_t *want;

	if (r->pending_len[mi] == 0) {
		assert_null(got);
		return;
	}
	want = r->pending[mi][0];
	assert_ptr_equal(got, want->job);
	ref_pending_remove(r, want);
	want->state = JOB_RUNNING;
	want->claim = got->rec.claim_id;
	want->claim_live = 1;
	want->timeout = timeout;
	want->lease_mono = MONO_BASE + r->now_ms + (int64_t)timeout * 1000;
}

/* Sends a worker update with the job's claim: complete, fail, release or heartbeat. */
static void rand_update(queue_t *q, ref_t *r)
{
	uint32_t kind = rng_below(r, 4);
	ref_job_t *j = ref_pick(r, rng_below(r, 2) ? JOB_RUNNING : JOB_PENDING);
	iq_id_t claim;
	int rc, allowed;

	if (!j)
		return;
	claim = j->claim;
	allowed = j->claim_live && (kind != 2 || j->state == JOB_RUNNING);
	if (rng_below(r, 8) == 0) {
		/* A claim id the queue never gave out. */
		id_new_v4(&claim);
		allowed = 0;
	}
	if (kind == 0)
		rc = queue_complete(q, j->job, &claim, NULL, NULL, at(r->now_ms));
	else if (kind == 1)
		rc = queue_fail(q, j->job, &claim, NULL, NULL, at(r->now_ms));
	else if (kind == 2)
		rc = queue_release(q, j->job, &claim, NULL, at(r->now_ms));
	else
		rc = queue_heartbeat(q, j->job, &claim, NULL, at(r->now_ms));
	assert_int_equal(rc, allowed ? 0 : INFERQ_ECONFLICT);
	if (!allowed)
		return;

	if (j->state == JOB_PENDING)
		ref_pending_remove(r, j);
	if (kind == 0 || kind == 1) {
		j->state = kind == 0 ? JOB_DONE : JOB_FAILED;
		j->claim_live = 0;
	} else if (kind == 2) {
		j->claim_live = 0;
		ref_pending_insert(r, j);
	} else {
		j->state = JOB_RUNNING;
		j->lease_mono = MONO_BASE + r->now_ms + (int64_t)j->timeout * 1000;
	}
}

static void rand_cancel(queue_t *q, ref_t *r)
{
	ref_job_t *j = ref_pick(r, JOB_PENDING);

	if (!j)
		return;
	assert_int_equal(queue_cancel(q, j->job, at(r->now_ms)), 0);
	ref_pending_remove(r, j);
	j->state = JOB_CANCELED;
	j->claim_live = 0;
}

static ref_job_t *ref_next_expiry(ref_t *r)
{
	ref_job_t *best = NULL;

	for (int i = 0; i < r->count; i++) {
		ref_job_t *j = &r->jobs[i];

		if (j->state != JOB_RUNNING || j->lease_mono > MONO_BASE + r->now_ms)
			continue;
		if (!best || j->lease_mono < best->lease_mono ||
		    (j->lease_mono == best->lease_mono && j->seq < best->seq))
			best = j;
	}
	return best;
}

/* Advances the clock and expires every lease that ended, in deadline order. */
static void rand_expire(queue_t *q, ref_t *r, uint32_t max_retries)
{
	r->now_ms += rng_below(r, 8000);
	for (;;) {
		ref_job_t *want = ref_next_expiry(r);
		job_t *got = queue_expire_next(q, at(r->now_ms));

		if (!want) {
			assert_null(got);
			return;
		}
		assert_ptr_equal(got, want->job);
		if (want->retries < max_retries) {
			want->retries++;
			ref_pending_insert(r, want);
		} else {
			want->state = JOB_FAILED;
			want->claim_live = 0;
		}
		assert_int_equal(got->rec.retries, want->retries);
	}
}

/* Drops one terminal job, moving the last reference entry into its slot. */
static void rand_drop(queue_t *q, ref_t *r)
{
	ref_job_t *j = ref_pick(r, rng_below(r, 2) ? JOB_DONE : JOB_CANCELED);
	ref_job_t *last;

	if (!j)
		j = ref_pick(r, JOB_FAILED);
	if (!j)
		return;
	queue_drop(q, j->job);
	last = &r->jobs[--r->count];
	if (j != last) {
		/* Pending lists point into jobs[], so repoint the moved entry. */
		if (last->state == JOB_PENDING) {
			ref_job_t **list = r->pending[last->model];

			for (int i = 0; i < r->pending_len[last->model]; i++) {
				if (list[i] == last)
					list[i] = j;
			}
		}
		*j = *last;
	}
}

/* Snapshots a random job, changes it by a random operation, and undoes it. */
static void rand_undo(queue_t *q, ref_t *r)
{
	ref_job_t *j = ref_pick(r, rng_below(r, 2) ? JOB_RUNNING : JOB_PENDING);
	job_record_t snapshot;
	iq_id_t claim;

	if (!j)
		return;
	job_record_copy(&snapshot, &j->job->rec);
	claim = j->job->rec.claim_id;
	if (j->state == JOB_PENDING)
		assert_int_equal(queue_cancel(q, j->job, at(r->now_ms)), 0);
	else
		assert_int_equal(queue_complete(q, j->job, &claim, NULL, NULL, at(r->now_ms)), 0);
	assert_int_equal(queue_check(q), 0);
	queue_restore(q, j->job, &snapshot, at(r->now_ms));
	assert_int_equal(j->job->rec.state, j->state);
}

static void check_ref_counts(queue_t *q, ref_t *r)
{
	for (int mi = 0; mi < RAND_MODELS; mi++) {
		queue_model_t *m = queue_model_get(q, rand_model_names[mi],
						   strlen(rand_model_names[mi]), 0);
		uint64_t running = 0;

		for (int i = 0; i < r->count; i++)
			running += r->jobs[i].model == mi && r->jobs[i].state == JOB_RUNNING;
		if (!m) {
			assert_int_equal(r->pending_len[mi], 0);
			assert_int_equal(running, 0);
			continue;
		}
		assert_int_equal(m->pending, r->pending_len[mi]);
		assert_int_equal(m->running, running);
		if (r->pending_len[mi])
			assert_ptr_equal(queue_peek(m), r->pending[mi][0]->job);
	}
	assert_int_equal(queue_check(q), 0);
}

static void test_random_against_reference(void **state)
{
	const uint32_t max_retries = 2;
	queue_t *q = new_queue(max_retries, 0, 0);
	ref_t *r = calloc(1, sizeof(*r));

	assert_non_null(r);
	r->state_rng = UINT64_C(0x2545f4914f6cdd1d);
	for (int op = 0; op < RAND_OPS; op++) {
		uint32_t pick = rng_below(r, 100);

		if (pick < 30)
			rand_submit(q, r);
		else if (pick < 55)
			rand_claim(q, r);
		else if (pick < 70)
			rand_update(q, r);
		else if (pick < 76)
			rand_cancel(q, r);
		else if (pick < 86)
			rand_expire(q, r, max_retries);
		else if (pick < 96)
			rand_drop(q, r);
		else
			rand_undo(q, r);
		check_ref_counts(q, r);
	}

	/* Drain: every pending job comes out in the reference order. */
	for (int mi = 0; mi < RAND_MODELS; mi++) {
		queue_model_t *m = queue_model_get(q, rand_model_names[mi],
						   strlen(rand_model_names[mi]), 1);

		for (int i = 0; i < r->pending_len[mi]; i++)
			assert_ptr_equal(queue_claim(q, m, 10, NULL, at(r->now_ms)),
					 r->pending[mi][i]->job);
		assert_null(queue_claim(q, m, 10, NULL, at(r->now_ms)));
	}
	free(r);
	queue_free(q);
}

static void test_job_size_fits_chunk(void **state)
{
	job_t *job = queue_job_new();

	/* 216 bytes plus glibc's 8-byte chunk header fill a 224-byte chunk: a pending job's
	 * memory depends on it. */
	if (sizeof(void *) == 8)
		assert_true(sizeof(job_t) <= 216);
	assert_int_equal(job->pending_pos, JOB_NO_POS);
	assert_int_equal(job->lease_pos, JOB_NO_POS);
	assert_int_equal(job->uncommitted_insert, 0);
	job->uncommitted_insert = 1;
	assert_int_equal(job->lease_pos, JOB_NO_POS);
	free(job);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_job_size_fits_chunk),
		cmocka_unit_test(test_claim_order_priority_then_fifo),
		cmocka_unit_test(test_claim_empty_returns_null),
		cmocka_unit_test(test_claim_sets_lease_and_worker),
		cmocka_unit_test(test_claim_without_lease),
		cmocka_unit_test(test_cancel_pending_keeps_order),
		cmocka_unit_test(test_heartbeat_extends_lease),
		cmocka_unit_test(test_heartbeat_reorders_lease_heap),
		cmocka_unit_test(test_stale_claim_changes_nothing),
		cmocka_unit_test(test_zero_claim_never_matches_pending),
		cmocka_unit_test(test_complete_sets_outputs),
		cmocka_unit_test(test_fail_sets_error),
		cmocka_unit_test(test_release_restores_original_place),
		cmocka_unit_test(test_expiry_retries_then_fails),
		cmocka_unit_test(test_expiry_with_no_retries),
		cmocka_unit_test(test_expiry_keeps_place),
		cmocka_unit_test(test_expiry_history_cases),
		cmocka_unit_test(test_expiry_replaces_invalid_info),
		cmocka_unit_test(test_expiry_ignores_info_limit),
		cmocka_unit_test(test_late_complete_after_expiry),
		cmocka_unit_test(test_late_complete_after_reclaim_conflicts),
		cmocka_unit_test(test_late_complete_after_final_failure),
		cmocka_unit_test(test_late_heartbeat_revives),
		cmocka_unit_test(test_info_merge_patch),
		cmocka_unit_test(test_info_merge_on_release),
		cmocka_unit_test(test_add_running_past_lease_expires),
		cmocka_unit_test(test_add_shares_model_name),
		cmocka_unit_test(test_restore_round_trips),
		cmocka_unit_test(test_restore_recomputes_lease),
		cmocka_unit_test(test_set_lease_reorders_heap),
		cmocka_unit_test(test_drop_fixes_counters),
		cmocka_unit_test(test_hash_grows_and_shrinks),
		cmocka_unit_test(test_many_models),
		cmocka_unit_test(test_random_against_reference),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
