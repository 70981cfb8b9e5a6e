/*
 * The latency histogram of `inferq bench`: counts per logarithmic bucket,
 * in the manner of an HDR histogram with two significant binary digits
 * more. Recording is a shift and an add, so it costs nothing next to a
 * request; quantiles walk the 3,776 counts once.
 *
 * SPDX-License-Identifier: MIT
 */
#include "bench.h"

unsigned bench_hist_bucket(uint64_t ns)
{
	unsigned e;

	if (ns < BENCH_HIST_SUB)
		return (unsigned)ns;
	e = 63 - (unsigned)__builtin_clzll(ns); /* 6 or more */
	return BENCH_HIST_SUB + (e - 6) * BENCH_HIST_SUB +
	       (unsigned)((ns >> (e - 6)) - BENCH_HIST_SUB);
}

/* The highest value that falls in bucket i. */
static uint64_t bucket_high(unsigned i)
{
	unsigned e, sub;

	if (i < BENCH_HIST_SUB)
		return i;
	e = (i - BENCH_HIST_SUB) / BENCH_HIST_SUB + 6;
	sub = (i - BENCH_HIST_SUB) % BENCH_HIST_SUB;
	return ((uint64_t)(BENCH_HIST_SUB + sub) << (e - 6)) + ((1ull << (e - 6)) - 1);
}

void bench_hist_record(bench_hist_t *h, uint64_t ns)
{
	h->counts[bench_hist_bucket(ns)]++;
	h->total++;
	h->sum += (double)ns;
	if (ns > h->max)
		h->max = ns;
}

uint64_t bench_hist_quantile(const bench_hist_t *h, double q)
{
	uint64_t rank, seen = 0, high;

	if (h->total == 0)
		return 0;
	if (q <= 0)
		q = 0;
	if (q >= 1)
		return h->max;

	/* The value of rank r (1-based) is the r-th smallest; q = 0.99 of 100 is rank 99. */
	rank = (uint64_t)(q * (double)h->total + 0.999999);
	if (rank == 0)
		rank = 1;
	for (unsigned i = 0; i < BENCH_HIST_BUCKETS; i++) {
		seen += h->counts[i];
		if (seen >= rank) {
			high = bucket_high(i);
			return high < h->max ? high : h->max;
		}
	}
	return h->max;
}
