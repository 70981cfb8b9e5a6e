/*
 * Unit tests for job history (history.c) and the workers registry
 * (workers.c): events derived from state changes, the bound on stored
 * events, detail cutting on a UTF-8 boundary, rendering with the submit
 * first, and the registry's counters, eviction and forgetting. Output is
 * checked with jansson, which the tests link anyway.
 *
 * SPDX-License-Identifier: MIT
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "history.h"
#include "workers.h"

#define T0 INT64_C(1770000000000) /* 2026-02-02T02:40:00Z */

static json_t *parse(const buf_t *b)
{
	json_error_t err;
	json_t *v = json_loadb(b->data, b->len, 0, &err);

	if (!v)
		fail_msg("invalid JSON (%s): %.*s", err.text, (int)b->len, b->data);
	return v;
}

static json_t *render(const job_record_t *rec)
{
	buf_t out = BUF_INIT;
	json_t *v;

	history_render(&out, rec);
	v = parse(&out);
	buf_free(&out);
	return v;
}

static const char *event_at(json_t *history, size_t i, const char *member)
{
	json_t *v = json_object_get(json_array_get(history, i), member);

	return v ? json_string_value(v) : NULL;
}

static void test_event_of_transitions(void **state)
{
	assert_int_equal(history_event_of(JOB_PENDING, JOB_RUNNING), HISTORY_CLAIMED);
	assert_int_equal(history_event_of(JOB_RUNNING, JOB_PENDING), HISTORY_RELEASED);
	assert_int_equal(history_event_of(JOB_RUNNING, JOB_DONE), HISTORY_COMPLETED);
	assert_int_equal(history_event_of(JOB_PENDING, JOB_DONE), HISTORY_COMPLETED);
	assert_int_equal(history_event_of(JOB_RUNNING, JOB_FAILED), HISTORY_FAILED);
	assert_int_equal(history_event_of(JOB_PENDING, JOB_CANCELED), HISTORY_CANCELED);
	assert_int_equal(history_event_of(JOB_RUNNING, JOB_RUNNING), HISTORY_NONE);
	assert_string_equal(history_event_name(HISTORY_EXPIRED), "expired");
	assert_string_equal(history_event_name(HISTORY_NONE), "");
	assert_string_equal(history_event_name((history_event_t)99), "");
}

static void test_render_starts_with_submit(void **state)
{
	job_record_t rec = {.created_at = T0};
	json_t *h = render(&rec);

	assert_int_equal(json_array_size(h), 1);
	assert_string_equal(event_at(h, 0, "event"), "submitted");
	assert_string_equal(event_at(h, 0, "at"), "2026-02-02T02:40:00Z");
	assert_null(event_at(h, 0, "worker"));
	json_decref(h);
}

static void test_append_keeps_newest(void **state)
{
	job_record_t rec = {.created_at = T0};
	rbuf_t *worker = rbuf_from_str("w\"1");
	rbuf_t *before;
	char detail[16];
	json_t *h;

	for (int i = 0; i < 5; i++) {
		snprintf(detail, sizeof(detail), "n%d", i);
		history_append(&rec, i % 2 ? HISTORY_RELEASED : HISTORY_CLAIMED, T0 + i * 1000,
			       worker, detail, 3);
	}
	assert_int_equal(history_count(&rec), 3);
	h = render(&rec);
	assert_int_equal(json_array_size(h), 4);
	assert_string_equal(event_at(h, 1, "detail"), "n2");
	assert_string_equal(event_at(h, 3, "detail"), "n4");
	assert_string_equal(event_at(h, 3, "event"), "claimed");
	assert_string_equal(event_at(h, 3, "worker"), "w\"1");
	assert_string_equal(event_at(h, 3, "at"), "2026-02-02T02:40:04Z");
	json_decref(h);

	/* A copy taken before an append keeps its own history. */
	before = rbuf_ref(rec.history);
	history_append(&rec, HISTORY_NONE, T0, NULL, NULL, 3);
	assert_ptr_equal(rec.history, before);
	history_append(&rec, HISTORY_CANCELED, T0, NULL, NULL, 3);
	assert_ptr_not_equal(rec.history, before);
	assert_string_equal(before->data + before->len - 2, "}]");

	history_append(&rec, HISTORY_FAILED, T0, NULL, NULL, 0);
	assert_null(rec.history);
	assert_int_equal(history_count(&rec), 0);
	rbuf_unref(before);
	rbuf_unref(worker);
	job_record_clear(&rec);
}

static void test_detail_cut_on_utf8_boundary(void **state)
{
	job_record_t rec = {.created_at = T0};
	char detail[HISTORY_DETAIL_MAX + 64];
	size_t len;
	json_t *h;

	/* "é" is two bytes; one byte of padding puts a character across the limit. */
	detail[0] = 'x';
	for (len = 1; len + 2 < sizeof(detail); len += 2)
		memcpy(detail + len, "\xc3\xa9", 2);
	detail[len] = '\0';
	history_append(&rec, HISTORY_FAILED, T0, NULL, detail, 8);
	h = render(&rec);
	len = strlen(event_at(h, 1, "detail"));
	assert_true(len <= HISTORY_DETAIL_MAX);
	assert_true(len >= HISTORY_DETAIL_MAX - 1);
	assert_int_equal(len % 2, 1);
	json_decref(h);
	job_record_clear(&rec);
}

static void test_bad_stored_history_restarts(void **state)
{
	job_record_t rec = {.created_at = T0};

	rec.history = rbuf_from_str("not json");
	assert_int_equal(history_count(&rec), 0);
	history_append(&rec, HISTORY_CLAIMED, T0, NULL, NULL, 4);
	assert_int_equal(history_count(&rec), 1);
	job_record_clear(&rec);
}

static json_t *workers_json(workers_t *w, int64_t now)
{
	buf_t out = BUF_INIT;
	json_t *v, *data;

	workers_render(w, &out, now);
	v = parse(&out);
	buf_free(&out);
	data = json_incref(json_object_get(v, "data"));
	json_decref(v);
	return data;
}

static job_record_t job_of(const char *worker, uint8_t n, job_state_t state)
{
	job_record_t rec = {.state = state, .claimed_at = T0};

	rec.id.b[15] = n;
	rec.model = rbuf_from_str("m/x");
	rec.worker = worker ? rbuf_from_str(worker) : NULL;
	return rec;
}

static void test_workers_counters(void **state)
{
	workers_t *w = workers_new(10, 3600000);
	job_record_t a = job_of("alpha", 1, JOB_RUNNING), b = job_of("alpha", 2, JOB_RUNNING);
	job_record_t anon = job_of(NULL, 3, JOB_RUNNING);
	json_t *data, *alpha;

	workers_seen(w, "alpha", 5, "alpha", 5, "1.0", 3, T0);
	workers_record(w, HISTORY_CLAIMED, &a, T0 + 1000);
	workers_record(w, HISTORY_CLAIMED, &b, T0 + 1000);
	workers_record(w, HISTORY_CLAIMED, &b, T0 + 1000);
	workers_record(w, HISTORY_CLAIMED, &anon, T0 + 500);
	data = workers_json(w, T0 + 2000);
	assert_int_equal(json_array_size(data), 2);
	alpha = json_array_get(data, 0);
	assert_string_equal(json_string_value(json_object_get(alpha, "name")), "alpha");
	assert_string_equal(json_string_value(json_object_get(alpha, "version")), "1.0");
	assert_int_equal(json_array_size(json_object_get(alpha, "current_jobs")), 2);
	assert_string_equal(
	    json_string_value(json_object_get(json_array_get(data, 1), "name")), WORKERS_ANONYMOUS);
	json_decref(data);

	a.state = JOB_DONE;
	workers_record(w, HISTORY_COMPLETED, &a, T0 + 3000);
	b.state = JOB_PENDING;
	workers_record(w, HISTORY_EXPIRED, &b, T0 + 9000);
	data = workers_json(w, T0 + 9000);
	alpha = json_array_get(data, 0);
	assert_int_equal(json_integer_value(json_object_get(alpha, "jobs_done")), 1);
	assert_int_equal(json_integer_value(json_object_get(alpha, "jobs_expired")), 1);
	assert_int_equal(json_array_size(json_object_get(alpha, "current_jobs")), 0);
	/* An expiry is not a sighting. */
	assert_string_equal(json_string_value(json_object_get(alpha, "last_seen")),
			    "2026-02-02T02:40:03Z");
	json_decref(data);

	job_record_clear(&a);
	job_record_clear(&b);
	job_record_clear(&anon);
	workers_free(w);
}

static void test_workers_evict_and_forget(void **state)
{
	workers_t *w = workers_new(2, 10000);
	json_t *data;

	workers_seen(w, "one", 3, "", 0, NULL, 0, T0);
	workers_seen(w, "two", 3, "", 0, NULL, 0, T0 + 1000);
	workers_seen(w, "one", 3, "", 0, NULL, 0, T0 + 2000);
	workers_seen(w, "three", 5, "", 0, NULL, 0, T0 + 3000);
	assert_int_equal(workers_count(w), 2);
	data = workers_json(w, T0 + 3000);
	assert_string_equal(json_string_value(json_object_get(json_array_get(data, 0), "name")),
			    "three");
	assert_string_equal(json_string_value(json_object_get(json_array_get(data, 1), "name")),
			    "one");
	json_decref(data);

	data = workers_json(w, T0 + 12500);
	assert_int_equal(json_array_size(data), 1);
	json_decref(data);
	data = workers_json(w, T0 + 13001);
	assert_int_equal(json_array_size(data), 0);
	json_decref(data);
	workers_free(w);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_event_of_transitions),
		cmocka_unit_test(test_render_starts_with_submit),
		cmocka_unit_test(test_append_keeps_newest),
		cmocka_unit_test(test_detail_cut_on_utf8_boundary),
		cmocka_unit_test(test_bad_stored_history_restarts),
		cmocka_unit_test(test_workers_counters),
		cmocka_unit_test(test_workers_evict_and_forget),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
