/*
 * Unit tests of the latency histogram of `inferq bench` (src/cli/bench_hist.c):
 * bucket boundaries, the error bound of a quantile, and the edges (empty,
 * one value, the largest uint64_t).
 *
 * SPDX-License-Identifier: MIT
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <cmocka.h>

#include "../../src/cli/bench_hist.c"

static void small_values_are_exact(void **state)
{
	(void)state;
	for (uint64_t v = 0; v < 64; v++)
		assert_int_equal(bench_hist_bucket(v), v);
	assert_int_equal(bench_hist_bucket(64), 64);
	assert_int_equal(bench_hist_bucket(127), 127);
	assert_int_equal(bench_hist_bucket(128), 128); /* 128 and 129 share a bucket */
	assert_int_equal(bench_hist_bucket(129), 128);
	assert_int_equal(bench_hist_bucket(130), 129);
}

static void buckets_rise_with_values(void **state)
{
	unsigned prev = 0, b;

	(void)state;
	for (uint64_t v = 1; v < (1ull << 40); v += v / 7 + 1) {
		b = bench_hist_bucket(v);
		assert_true(b >= prev);
		assert_true(b < BENCH_HIST_BUCKETS);
		/* The bucket's highest value is within 1/64 of every value in it. */
		assert_true(bucket_high(b) >= v);
		assert_true((double)(bucket_high(b) - v) <= (double)v / 64.0);
		prev = b;
	}
	assert_int_equal(bench_hist_bucket(UINT64_MAX), BENCH_HIST_BUCKETS - 1);
	assert_true(bucket_high(BENCH_HIST_BUCKETS - 1) == UINT64_MAX);
}

static void quantiles_of_a_uniform_range(void **state)
{
	bench_hist_t *h = calloc(1, sizeof(*h));
	uint64_t p50, p99;

	(void)state;
	for (uint64_t us = 1; us <= 1000; us++)
		bench_hist_record(h, us * 1000);
	assert_int_equal(h->total, 1000);
	assert_int_equal(h->max, 1000000);
	p50 = bench_hist_quantile(h, 0.5);
	p99 = bench_hist_quantile(h, 0.99);
	assert_true(p50 >= 500000 && p50 <= 500000 + 500000 / 64);
	assert_true(p99 >= 990000 && p99 <= 1000000);
	assert_int_equal(bench_hist_quantile(h, 1.0), 1000000);
	assert_true(bench_hist_quantile(h, 0.0) >= 1000 && bench_hist_quantile(h, 0.0) <= 1016);
	assert_true(h->sum == 500500.0 * 1000.0);
	free(h);
}

static void empty_and_single(void **state)
{
	bench_hist_t *h = calloc(1, sizeof(*h));

	(void)state;
	assert_int_equal(bench_hist_quantile(h, 0.5), 0);
	bench_hist_record(h, 123456);
	/* Never above the largest value recorded, even though the bucket reaches higher. */
	assert_int_equal(bench_hist_quantile(h, 0.5), 123456);
	assert_int_equal(bench_hist_quantile(h, 0.99), 123456);
	bench_hist_record(h, UINT64_MAX);
	assert_int_equal(bench_hist_quantile(h, 1.0), UINT64_MAX);
	/* Now the max no longer clamps it: the bucket's highest value, within 1/64. */
	assert_true(bench_hist_quantile(h, 0.5) >= 123456);
	assert_true(bench_hist_quantile(h, 0.5) <= 123456 + 123456 / 64);
	free(h);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(small_values_are_exact),
	    cmocka_unit_test(buckets_rise_with_values),
	    cmocka_unit_test(quantiles_of_a_uniform_range),
	    cmocka_unit_test(empty_and_single),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
