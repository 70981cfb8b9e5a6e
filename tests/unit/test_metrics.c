/*
 * Tests of the metrics registry: histogram bucketing and rendering, label
 * escaping, the model cardinality cap, the per-route status codes and the
 * structure of the whole exposition (each family's HELP and TYPE once,
 * before its samples).
 *
 * SPDX-License-Identifier: MIT
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "metrics.h"

/* Returns 1 when text contains line as a whole line. */
static int has_line(const char *text, const char *line)
{
	size_t len = strlen(line);

	for (const char *p = text; (p = strstr(p, line)) != NULL; p++) {
		if ((p == text || p[-1] == '\n') && (p[len] == '\n' || p[len] == '\0'))
			return 1;
	}
	return 0;
}

static size_t count_lines_starting(const char *text, const char *prefix)
{
	size_t n = 0;
	size_t len = strlen(prefix);

	for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
		if (strncmp(p, prefix, len) == 0)
			n++;
	}
	return n;
}

/* ---- histograms ---- */

static const double bounds[] = {0.1, 1, 10};

static void test_histogram_bucket_edges(void **state)
{
	metrics_histogram_t h;

	metrics_histogram_init(&h, bounds, 3);
	metrics_histogram_observe(&h, 0);    /* le 0.1 */
	metrics_histogram_observe(&h, 0.1);  /* le 0.1: the bound is inclusive */
	metrics_histogram_observe(&h, 0.11); /* le 1 */
	metrics_histogram_observe(&h, 1);    /* le 1 */
	metrics_histogram_observe(&h, 10);   /* le 10 */
	metrics_histogram_observe(&h, 10.5); /* +Inf */
	metrics_histogram_observe(&h, INFINITY);
	metrics_histogram_observe(&h, NAN); /* ignored */

	assert_int_equal(h.counts[0], 2);
	assert_int_equal(h.counts[1], 2);
	assert_int_equal(h.counts[2], 1);
	assert_int_equal(h.counts[3], 2);
	assert_int_equal(h.total, 7);
	metrics_histogram_free(&h);
	metrics_histogram_free(&h); /* a freed histogram may be freed again */
}

static void test_histogram_render_cumulative(void **state)
{
	metrics_histogram_t h;
	buf_t out = BUF_INIT;

	metrics_histogram_init(&h, bounds, 3);
	metrics_histogram_observe(&h, 0.05);
	metrics_histogram_observe(&h, 0.5);
	metrics_histogram_observe(&h, 0.5);
	metrics_histogram_observe(&h, 100);
	metrics_histogram_render(&out, "x_seconds", "model=\"a\"", &h);

	assert_true(has_line(out.data, "x_seconds_bucket{model=\"a\",le=\"0.1\"} 1"));
	assert_true(has_line(out.data, "x_seconds_bucket{model=\"a\",le=\"1\"} 3"));
	assert_true(has_line(out.data, "x_seconds_bucket{model=\"a\",le=\"10\"} 3"));
	assert_true(has_line(out.data, "x_seconds_bucket{model=\"a\",le=\"+Inf\"} 4"));
	assert_true(has_line(out.data, "x_seconds_sum{model=\"a\"} 101.05"));
	assert_true(has_line(out.data, "x_seconds_count{model=\"a\"} 4"));
	assert_int_equal(count_lines_starting(out.data, "x_seconds_bucket{"), 4);
	metrics_histogram_free(&h);
	buf_free(&out);
}

static void test_histogram_render_no_labels(void **state)
{
	metrics_histogram_t h;
	buf_t out = BUF_INIT;

	metrics_histogram_init(&h, bounds, 3);
	metrics_histogram_render(&out, "y", "", &h);
	assert_true(has_line(out.data, "y_bucket{le=\"0.1\"} 0"));
	assert_true(has_line(out.data, "y_bucket{le=\"+Inf\"} 0"));
	assert_true(has_line(out.data, "y_sum 0"));
	assert_true(has_line(out.data, "y_count 0"));
	metrics_histogram_free(&h);
	buf_free(&out);
}

static void test_job_bounds_cover_10ms_to_1h(void **state)
{
	assert_true(metrics_job_seconds_bound_count >= 10);
	assert_true(metrics_job_seconds_bounds[0] == 0.01);
	assert_true(metrics_job_seconds_bounds[metrics_job_seconds_bound_count - 1] == 3600);
	for (size_t i = 1; i < metrics_job_seconds_bound_count; i++)
		assert_true(metrics_job_seconds_bounds[i] > metrics_job_seconds_bounds[i - 1]);
}

/* ---- label values ---- */

static void test_escape_label_specials(void **state)
{
	static const struct {
		const char *in;
		const char *out;
	} cases[] = {
	    {"plain/model-1.0:x_y", "plain/model-1.0:x_y"},
	    {"a\"b", "a\\\"b"},
	    {"a\\b", "a\\\\b"},
	    {"line1\nline2", "line1\\nline2"},
	    {"\\\"\n", "\\\\\\\"\\n"},
	    {"tab\tand caf\xc3\xa9", "tab\tand caf\xc3\xa9"},
	    {"", ""},
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		buf_t out = BUF_INIT;

		buf_puts(&out, "");
		metrics_escape_label(&out, cases[i].in, strlen(cases[i].in));
		assert_string_equal(out.data, cases[i].out);
		buf_free(&out);
	}
}

static void test_escape_label_embedded_nul(void **state)
{
	buf_t out = BUF_INIT;

	metrics_escape_label(&out, "a\0b\"", 4);
	assert_int_equal(out.len, 5);
	assert_memory_equal(out.data, "a\0b\\\"", 5);
	buf_free(&out);
}

static void test_render_escapes_model_name(void **state)
{
	metrics_t *m = metrics_new(10);
	metrics_model_t *mm = metrics_model(m, "we\"ird\\model\n", 13);
	buf_t out = BUF_INIT;

	metrics_job_event(mm, METRICS_JOB_SUBMITTED);
	metrics_render(m, NULL, &out);
	assert_true(has_line(out.data,
			     "inferq_jobs_submitted_total{model=\"we\\\"ird\\\\model\\n\"} 1"));
	assert_true(has_line(out.data, "inferq_jobs{model=\"we\\\"ird\\\\model\\n\",state="
				       "\"pending\"} 0"));
	metrics_free(m);
	buf_free(&out);
}

/* ---- cardinality ---- */

static void test_model_cap_folds_into_other(void **state)
{
	metrics_t *m = metrics_new(2);
	metrics_model_t *a = metrics_model(m, "a", 1);
	metrics_model_t *b = metrics_model(m, "b", 1);
	metrics_model_t *c = metrics_model(m, "c", 1);
	metrics_model_t *d = metrics_model(m, "d", 1);
	buf_t out = BUF_INIT;

	assert_ptr_not_equal(a, b);
	assert_ptr_equal(metrics_model(m, "a", 1), a);
	assert_ptr_equal(c, d);
	assert_string_equal(c->name, METRICS_OTHER_MODEL);

	metrics_job_event(c, METRICS_JOB_SUBMITTED);
	metrics_job_event(d, METRICS_JOB_SUBMITTED);
	metrics_job_event(a, METRICS_JOB_CLAIMED);
	metrics_render(m, NULL, &out);
	assert_true(has_line(out.data, "inferq_jobs_submitted_total{model=\"__other__\"} 2"));
	assert_true(has_line(out.data, "inferq_jobs_submitted_total{model=\"a\"} 0"));
	assert_true(has_line(out.data, "inferq_jobs_claimed_total{model=\"a\"} 1"));
	assert_true(has_line(out.data, "inferq_metrics_models_dropped_total 2"));
	assert_int_equal(count_lines_starting(out.data, "inferq_jobs_submitted_total{"), 3);
	assert_null(strstr(out.data, "model=\"c\""));
	metrics_free(m);
	buf_free(&out);
}

static void test_gauges_cleared_and_summed(void **state)
{
	metrics_t *m = metrics_new(1);
	metrics_model_t *a = metrics_model(m, "a", 1);
	metrics_model_t *other = metrics_model(m, "b", 1);
	buf_t out = BUF_INIT;

	a->jobs[JOB_PENDING] = 7;
	other->jobs[JOB_RUNNING] = 3;
	other->waiting_workers = 2;
	metrics_clear_gauges(m);
	assert_int_equal(a->jobs[JOB_PENDING], 0);
	assert_int_equal(other->jobs[JOB_RUNNING], 0);
	assert_int_equal(other->waiting_workers, 0);

	a->jobs[JOB_PENDING] = 4;
	other->waiting_workers = 5;
	metrics_render(m, NULL, &out);
	assert_true(has_line(out.data, "inferq_jobs{model=\"a\",state=\"pending\"} 4"));
	assert_true(has_line(out.data, "inferq_waiting_workers{model=\"__other__\"} 5"));
	metrics_free(m);
	buf_free(&out);
}

/* ---- HTTP and store ---- */

static void test_http_routes_and_codes(void **state)
{
	metrics_t *m = metrics_new(10);
	buf_t out = BUF_INIT;

	metrics_http_request(m, "/v1/queue/submit", 200, 0.002);
	metrics_http_request(m, "/v1/queue/submit", 200, 0.003);
	metrics_http_request(m, "/v1/queue/submit", 400, 0.0001);
	metrics_http_request(m, "other", 404, 0.0001);
	metrics_set_connections(m, 3);
	metrics_render(m, NULL, &out);
	assert_true(has_line(out.data,
			     "inferq_http_requests_total{route=\"/v1/queue/submit\",code=\"200\"} 2"));
	assert_true(has_line(out.data,
			     "inferq_http_requests_total{route=\"/v1/queue/submit\",code=\"400\"} 1"));
	assert_true(has_line(out.data, "inferq_http_requests_total{route=\"other\",code=\"404\"} 1"));
	assert_true(has_line(out.data, "inferq_http_request_duration_seconds_count{route="
				       "\"/v1/queue/submit\"} 3"));
	assert_true(has_line(out.data, "inferq_http_request_duration_seconds_bucket{route="
				       "\"/v1/queue/submit\",le=\"0.0025\"} 2"));
	assert_true(has_line(out.data, "inferq_http_connections 3"));
	metrics_free(m);
	buf_free(&out);
}

static void test_http_code_cap(void **state)
{
	metrics_t *m = metrics_new(10);
	buf_t out = BUF_INIT;

	/* 40 distinct codes: the first 32 get their own sample, the rest share code="other". */
	for (int code = 200; code < 240; code++)
		metrics_http_request(m, "/r", code, 0.001);
	metrics_http_request(m, "/r", 239, 0.001);
	metrics_render(m, NULL, &out);
	assert_int_equal(count_lines_starting(out.data, "inferq_http_requests_total{route=\"/r\""),
			 33);
	assert_true(has_line(out.data, "inferq_http_requests_total{route=\"/r\",code=\"231\"} 1"));
	assert_true(has_line(out.data, "inferq_http_requests_total{route=\"/r\",code=\"other\"} 9"));
	metrics_free(m);
	buf_free(&out);
}

static void test_http_route_cap(void **state)
{
	static char names[METRICS_MAX_ROUTES + 5][16];
	metrics_t *m = metrics_new(10);
	buf_t out = BUF_INIT;

	for (int i = 0; i < METRICS_MAX_ROUTES + 5; i++) {
		snprintf(names[i], sizeof(names[i]), "/r%d", i);
		metrics_http_request(m, names[i], 200, 0.001);
	}
	metrics_render(m, NULL, &out);
	assert_int_equal(count_lines_starting(out.data, "inferq_http_requests_total{"),
			 METRICS_MAX_ROUTES + 1);
	assert_true(has_line(out.data, "inferq_http_requests_total{route=\"other\",code=\"200\"} 5"));
	metrics_free(m);
	buf_free(&out);
}

static void test_store_commits(void **state)
{
	metrics_t *m = metrics_new(10);
	buf_t out = BUF_INIT;

	metrics_store_commit(m, 1, 0.002, 1);
	metrics_store_commit(m, 300, 0.004, 1);
	metrics_store_commit(m, 5, 0.5, 0);
	metrics_render(m, NULL, &out);
	assert_true(has_line(out.data, "inferq_store_commits_total 2"));
	assert_true(has_line(out.data, "inferq_store_commit_failures_total 1"));
	assert_true(has_line(out.data, "inferq_store_commit_batch_size_bucket{le=\"1\"} 1"));
	assert_true(has_line(out.data, "inferq_store_commit_batch_size_bucket{le=\"256\"} 2"));
	assert_true(has_line(out.data, "inferq_store_commit_batch_size_bucket{le=\"512\"} 3"));
	assert_true(has_line(out.data, "inferq_store_commit_batch_size_sum 306"));
	assert_true(has_line(out.data, "inferq_store_commit_duration_seconds_count 3"));
	metrics_free(m);
	buf_free(&out);
}

/* ---- the whole exposition ---- */

/* Checks that each family has one HELP and one TYPE line, and that they come before its samples. */
static void test_render_family_headers(void **state)
{
	metrics_t *m = metrics_new(10);
	metrics_process_t proc;
	buf_t out = BUF_INIT;
	char *text, *line, *save = NULL;
	char seen[64][80];
	size_t seen_count = 0;
	char current[80] = "";

	metrics_job_event(metrics_model(m, "a", 1), METRICS_JOB_COMPLETED);
	metrics_http_request(m, "/x", 200, 0.001);
	assert_int_equal(metrics_read_process(&proc), 0);
	metrics_render(m, &proc, &out);
	assert_int_equal(out.data[out.len - 1], '\n');

	text = strdup(out.data);
	for (line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		char name[80];

		if (sscanf(line, "# HELP %79s", name) == 1) {
			for (size_t i = 0; i < seen_count; i++)
				assert_string_not_equal(seen[i], name);
			assert_true(seen_count < 64);
			snprintf(seen[seen_count++], sizeof(seen[0]), "%s", name);
			snprintf(current, sizeof(current), "%s", name);
			continue;
		}
		if (sscanf(line, "# TYPE %79s", name) == 1) {
			assert_string_equal(name, current);
			continue;
		}
		/* A sample belongs to the family whose headers came last. */
		assert_int_equal(strncmp(line, current, strlen(current)), 0);
	}
	assert_true(seen_count >= 25);
	free(text);

	assert_true(has_line(out.data, "# TYPE inferq_job_wait_seconds histogram"));
	assert_true(has_line(out.data, "# TYPE inferq_jobs_completed_total counter"));
	assert_true(has_line(out.data, "# TYPE inferq_jobs gauge"));
	assert_true(has_line(out.data, "inferq_build_info{version=\"" INFERQ_VERSION "\"} 1"));
	assert_non_null(strstr(out.data, "\nprocess_resident_memory_bytes "));
	assert_non_null(strstr(out.data, "\nprocess_start_time_seconds "));
	metrics_free(m);
	buf_free(&out);
}

static void test_read_process(void **state)
{
	metrics_process_t p;

	assert_int_equal(metrics_read_process(&p), 0);
	assert_true(p.resident_bytes > 0);
	assert_true(p.open_fds >= 3); /* stdin, stdout, stderr */
	assert_true(p.start_time > 1.6e9);
	assert_true(p.cpu_seconds >= 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_histogram_bucket_edges),
	    cmocka_unit_test(test_histogram_render_cumulative),
	    cmocka_unit_test(test_histogram_render_no_labels),
	    cmocka_unit_test(test_job_bounds_cover_10ms_to_1h),
	    cmocka_unit_test(test_escape_label_specials),
	    cmocka_unit_test(test_escape_label_embedded_nul),
	    cmocka_unit_test(test_render_escapes_model_name),
	    cmocka_unit_test(test_model_cap_folds_into_other),
	    cmocka_unit_test(test_gauges_cleared_and_summed),
	    cmocka_unit_test(test_http_routes_and_codes),
	    cmocka_unit_test(test_http_code_cap),
	    cmocka_unit_test(test_http_route_cap),
	    cmocka_unit_test(test_store_commits),
	    cmocka_unit_test(test_render_family_headers),
	    cmocka_unit_test(test_read_process),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
