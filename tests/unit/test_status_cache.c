/*
 * Unit tests for the status body cache (status_cache.c): hits and misses,
 * replacement, the byte limit with least-recently-used eviction, the entry
 * size cap, forgetting purged ids, growth of the table past many entries,
 * and a cache of 0 bytes or NULL that stores nothing.
 *
 * SPDX-License-Identifier: MIT
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "inferq_error.h"
#include "clock.h"
#include "status_cache.h"

/* An id whose bytes all derive from n, like a job id's random part. */
static iq_id_t make_id(uint32_t n)
{
	iq_id_t id;

	for (int i = 0; i < ID_BYTES; i++)
		id.b[i] = (uint8_t)((n * 2654435761u) >> (i % 4 * 8)) ^ (uint8_t)(i * 7);
	id.b[0] = (uint8_t)n;
	id.b[1] = (uint8_t)(n >> 8);
	id.b[2] = (uint8_t)(n >> 16);
	return id;
}

static int has(status_cache_t *cache, uint32_t n)
{
	iq_id_t id = make_id(n);
	const char *model, *body;
	size_t model_len, body_len;

	return status_cache_get(cache, &id, &model, &model_len, &body, &body_len) == 0;
}

static void put_body(status_cache_t *cache, uint32_t n, size_t body_len)
{
	char body[4096];
	iq_id_t id = make_id(n);

	assert_true(body_len <= sizeof(body));
	memset(body, 'a' + (int)(n % 26), body_len);
	assert_int_equal(status_cache_put(cache, &id, "m", 1, body, body_len), 0);
}

static void test_get_returns_put_entry(void **state)
{
	status_cache_t *cache = status_cache_new(1 << 20);
	iq_id_t id = make_id(1), other = make_id(2);
	const char *model, *body;
	size_t model_len, body_len;

	assert_int_equal(status_cache_get(cache, &id, &model, &model_len, &body, &body_len),
			 INFERQ_ENOTFOUND);
	assert_int_equal(status_cache_put(cache, &id, "llama", 5, "{\"a\":1}", 7), 0);
	assert_int_equal(status_cache_get(cache, &id, &model, &model_len, &body, &body_len), 0);
	assert_int_equal(model_len, 5);
	assert_memory_equal(model, "llama", 5);
	assert_int_equal(body_len, 7);
	assert_memory_equal(body, "{\"a\":1}", 7);
	assert_int_equal(body[body_len], '\0');
	assert_int_equal(status_cache_get(cache, &other, &model, &model_len, &body, &body_len),
			 INFERQ_ENOTFOUND);
	assert_int_equal(status_cache_count(cache), 1);
	status_cache_free(cache);
}

static void test_put_replaces_entry(void **state)
{
	status_cache_t *cache = status_cache_new(1 << 20);
	iq_id_t id = make_id(7);
	const char *model, *body;
	size_t model_len, body_len, bytes_one;

	assert_int_equal(status_cache_put(cache, &id, "m", 1, "old", 3), 0);
	bytes_one = status_cache_bytes(cache);
	assert_int_equal(status_cache_put(cache, &id, "m", 1, "new", 3), 0);
	assert_int_equal(status_cache_count(cache), 1);
	assert_int_equal(status_cache_bytes(cache), bytes_one);
	assert_int_equal(status_cache_get(cache, &id, &model, &model_len, &body, &body_len), 0);
	assert_memory_equal(body, "new", 3);
	status_cache_free(cache);
}

static void test_limit_evicts_least_recently_used(void **state)
{
	size_t max_bytes = 64 * 1024;
	status_cache_t *cache = status_cache_new(max_bytes);
	uint32_t n;

	/* Entries of about 1 KiB: the cache keeps fewer than 64 of them. */
	for (n = 0; n < 200; n++) {
		put_body(cache, n, 1000);
		assert_true(status_cache_bytes(cache) <= max_bytes);
		/* Entry 0 is read after each put, so it stays the most recently used. */
		assert_true(has(cache, 0));
	}
	assert_true(status_cache_count(cache) < 64);
	assert_true(status_cache_count(cache) > 32);
	assert_true(has(cache, 199));
	assert_true(has(cache, 198));
	assert_false(has(cache, 1));
	assert_false(has(cache, 100));
	status_cache_free(cache);
}

static void test_entry_over_eighth_not_stored(void **state)
{
	status_cache_t *cache = status_cache_new(16 * 1024);
	char body[4096];
	iq_id_t id = make_id(3);

	memset(body, 'x', sizeof(body));
	put_body(cache, 1, 100);
	assert_int_equal(status_cache_put(cache, &id, "m", 1, body, sizeof(body)), INFERQ_ELIMIT);
	assert_false(has(cache, 3));
	assert_true(has(cache, 1));
	assert_int_equal(status_cache_count(cache), 1);
	status_cache_free(cache);
}

static void test_forget_drops_listed_ids(void **state)
{
	status_cache_t *cache = status_cache_new(1 << 20);
	iq_id_t purged[3] = {make_id(2), make_id(4), make_id(999)};

	for (uint32_t n = 0; n < 6; n++)
		put_body(cache, n, 50);
	status_cache_forget(cache, purged, 3);
	assert_int_equal(status_cache_count(cache), 4);
	assert_false(has(cache, 2));
	assert_false(has(cache, 4));
	assert_true(has(cache, 0));
	assert_true(has(cache, 5));

	/* Forgetting every entry brings the byte count back to 0. */
	for (uint32_t n = 0; n < 6; n++) {
		iq_id_t id = make_id(n);

		status_cache_forget(cache, &id, 1);
	}
	assert_int_equal(status_cache_count(cache), 0);
	assert_int_equal(status_cache_bytes(cache), 0);
	status_cache_free(cache);
}

static void test_many_entries_all_found(void **state)
{
	status_cache_t *cache = status_cache_new(64 << 20);
	uint32_t count = 20000;

	/* Past many doublings of the table every entry is still found. */
	for (uint32_t n = 0; n < count; n++)
		put_body(cache, n, 16);
	assert_int_equal(status_cache_count(cache), count);
	for (uint32_t n = 0; n < count; n++)
		assert_true(has(cache, n));
	assert_false(has(cache, count));
	status_cache_free(cache);
}

static void test_zero_bytes_and_null_store_nothing(void **state)
{
	status_cache_t *cache = status_cache_new(0);
	iq_id_t id = make_id(1);

	assert_int_equal(status_cache_put(cache, &id, "m", 1, "{}", 2), INFERQ_ELIMIT);
	assert_false(has(cache, 1));
	assert_int_equal(status_cache_count(cache), 0);
	status_cache_free(cache);

	assert_int_equal(status_cache_put(NULL, &id, "m", 1, "{}", 2), INFERQ_ELIMIT);
	assert_false(has(NULL, 1));
	status_cache_forget(NULL, &id, 1);
	assert_int_equal(status_cache_bytes(NULL), 0);
	status_cache_free(NULL);
}

static void test_expired_entry_dropped(void **state)
{
	status_cache_t *cache = status_cache_new(1 << 20);
	iq_id_t stale = make_id(1), fresh = make_id(2), forever = make_id(3);
	int64_t now = clock_mono_ms();

	assert_int_equal(status_cache_put_until(cache, &stale, "m", 1, "{}", 2, now - 1), 0);
	assert_int_equal(status_cache_put_until(cache, &fresh, "m", 1, "{}", 2, now + 60000), 0);
	assert_int_equal(status_cache_put_until(cache, &forever, "m", 1, "{}", 2, 0), 0);
	assert_int_equal(status_cache_count(cache), 3);
	assert_false(has(cache, 1));
	assert_int_equal(status_cache_count(cache), 2);
	assert_true(has(cache, 2));
	assert_true(has(cache, 3));
	status_cache_free(cache);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_get_returns_put_entry),
		cmocka_unit_test(test_put_replaces_entry),
		cmocka_unit_test(test_limit_evicts_least_recently_used),
		cmocka_unit_test(test_entry_over_eighth_not_stored),
		cmocka_unit_test(test_forget_drops_listed_ids),
		cmocka_unit_test(test_many_entries_all_found),
		cmocka_unit_test(test_zero_bytes_and_null_store_nothing),
		cmocka_unit_test(test_expired_entry_dropped),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
