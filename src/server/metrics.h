/*
 * The metrics registry behind GET /metrics: per-model job counters and
 * histograms, HTTP request counts and latencies by route, store commit
 * figures, and their rendering in the Prometheus text exposition format
 * (version 0.0.4). It does no I/O beyond reading /proc for the process
 * figures and does not depend on the server, so unit tests drive it alone.
 *
 * Cardinality: at most max_models models get series of their own; every
 * model beyond that shares the series labelled model="__other__", and
 * inferq_metrics_models_dropped_total counts those models. Routes are a
 * fixed table, capped at METRICS_MAX_ROUTES as a guard.
 *
 * Counters count since the process started. Loop thread only.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef INFERQ_METRICS_H
#define INFERQ_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "job.h"

#define METRICS_OTHER_MODEL "__other__"
#define METRICS_OTHER_ROUTE "other"
/* Requests that the HTTP layer rejected before routing (malformed, over a limit, timed out). */
#define METRICS_UNROUTED_ROUTE "unrouted"
#define METRICS_MAX_ROUTES  64 /* distinct route labels; later ones count as "other" */
#define METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

/* A histogram with fixed upper bounds; the +Inf bucket is implicit. */
typedef struct {
	const double *bounds; /* ascending upper bounds, not owned */
	size_t bound_count;
	uint64_t *counts;     /* bound_count + 1 counts per bucket, not cumulative */
	uint64_t total;       /* observations */
	double sum;           /* sum of the observed values */
} metrics_histogram_t;

/* Job events counted per model. */
typedef enum {
	METRICS_JOB_SUBMITTED,
	METRICS_JOB_CLAIMED,
	METRICS_JOB_COMPLETED,
	METRICS_JOB_FAILED,   /* every job that became failed, by a worker or the last expiry */
	METRICS_JOB_EXPIRED,  /* every lease expiry */
	METRICS_JOB_CANCELED,
	METRICS_JOB_RETRIED,  /* lease expiries that sent the job back to pending */
	METRICS_JOB_RELEASED, /* jobs a worker gave back with release */
	METRICS_JOB_UNDELIVERED, /* claimed jobs given back because the client left first */
	METRICS_JOB_EVENT_COUNT,
} metrics_job_event_t;

/* The series of one model (or of "__other__"). */
typedef struct metrics_model {
	char *name;
	size_t name_len;
	uint64_t events[METRICS_JOB_EVENT_COUNT];
	metrics_histogram_t wait; /* s, created -> claimed */
	metrics_histogram_t run;  /* s, claimed -> done or failed */
	/* Gauges, set by the caller before each render (metrics_clear_gauges). */
	uint64_t jobs[JOB_STATE_COUNT]; /* pending and running; the rest unused */
	uint64_t waiting_workers;
	/* Finished jobs kept in the store, by state, kept up to date by metrics_finished_add. */
	uint64_t finished[JOB_STATE_COUNT];
	struct metrics_model *next;
} metrics_model_t;

/* Figures of the process, read from /proc by metrics_read_process(). */
typedef struct {
	uint64_t resident_bytes;
	uint64_t open_fds;
	uint64_t max_fds;
	double cpu_seconds;     /* user + system */
	double start_time;      /* s since epoch */
} metrics_process_t;

typedef struct metrics metrics_t;

/*
 * Returns a new registry that gives at most max_models models series of
 * their own (at least 1). Aborts on out-of-memory, as the server does.
 */
metrics_t *metrics_new(uint32_t max_models);
/* Frees m and every series; accepts NULL. */
void metrics_free(metrics_t *m);

/*
 * Returns the series of model name[0..len), creating it while fewer than
 * max_models exist. Past the cap it returns the shared "__other__" series
 * and counts one dropped model, so callers keep the result per model: each
 * call with a new name past the cap counts again. The pointer lives as long
 * as m.
 */
metrics_model_t *metrics_model(metrics_t *m, const char *name, size_t len);

/* Counts event on series mm. */
void metrics_job_event(metrics_model_t *mm, metrics_job_event_t event);

/*
 * Adds delta (negative for a purge) to the finished jobs of mm in state; the
 * count stops at 0. inferq_jobs shows them for done, failed and canceled.
 */
void metrics_finished_add(metrics_model_t *mm, job_state_t state, int64_t delta);

/* Zeroes the jobs and waiting_workers gauges of every series, before they are refilled. */
void metrics_clear_gauges(metrics_t *m);

/*
 * Counts one HTTP response: route is a static string naming the route
 * pattern (never the raw path), status the HTTP status, seconds its
 * latency. route must outlive m.
 */
void metrics_http_request(metrics_t *m, const char *route, int status, double seconds);

/* Records one store commit of changes operations, taking seconds, that succeeded or not. */
void metrics_store_commit(metrics_t *m, size_t changes, double seconds, int ok);

/* Sets the open connections shown by inferq_http_connections at the next render. */
void metrics_set_connections(metrics_t *m, uint64_t connections);

/*
 * Appends the whole exposition to out: every family with its HELP and
 * TYPE lines, then its samples. proc may be NULL to leave out the
 * process_* families.
 */
void metrics_render(const metrics_t *m, const metrics_process_t *proc, buf_t *out);

/*
 * Fills p from /proc/self (statm, stat, fd) and getrlimit. A figure that
 * cannot be read is left 0. Returns 0, or INFERQ_EIO when /proc is missing.
 */
int metrics_read_process(metrics_process_t *p);

/* Histograms and label values, exposed for the unit tests and reused by render. */

/* Sets h up with bound_count ascending bounds (not copied: they must outlive h). */
void metrics_histogram_init(metrics_histogram_t *h, const double *bounds, size_t bound_count);
/* Frees the counts of h; accepts a zeroed histogram. */
void metrics_histogram_free(metrics_histogram_t *h);
/* Adds value to the first bucket whose bound is >= value (NaN is ignored). */
void metrics_histogram_observe(metrics_histogram_t *h, double value);
/*
 * Appends the NAME_bucket lines (cumulative, ending in le="+Inf"),
 * NAME_sum and NAME_count of h. labels is "" or escaped label pairs such
 * as model="a" without braces; le is added after them.
 */
void metrics_histogram_render(buf_t *out, const char *name, const char *labels,
			      const metrics_histogram_t *h);
/*
 * Appends s[0..len) as a label value: backslash, double quote and newline
 * become \\, \" and \n; other bytes are kept.
 */
void metrics_escape_label(buf_t *out, const char *s, size_t len);

/* Bucket bounds, in the unit of each histogram. */
extern const double metrics_job_seconds_bounds[];
extern const size_t metrics_job_seconds_bound_count;

#endif
