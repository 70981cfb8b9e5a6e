/*
 * The metrics registry and its Prometheus text rendering (see metrics.h).
 * Series live in singly linked lists in creation order, so the output
 * order is stable between scrapes. Lookups are linear: a model's series is
 * looked up once and kept by the caller, and the route list is short.
 *
 * SPDX-License-Identifier: MIT
 */
#include "metrics.h"

#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "alloc.h"
#include "inferq_error.h"

#define MAX_CODES 32 /* distinct status codes kept per route; more go to code="other" */

/* Queue wait and run time of inference jobs: 10 ms to 1 h. */
const double metrics_job_seconds_bounds[] = {0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
					     30, 60, 120, 300, 600, 1800, 3600};
const size_t metrics_job_seconds_bound_count =
	sizeof(metrics_job_seconds_bounds) / sizeof(metrics_job_seconds_bounds[0]);

/* HTTP latency: 0.5 ms to 60 s, the longest long-poll wait. */
static const double http_seconds_bounds[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
					     0.05,   0.1,   0.25,   0.5,   1,    2.5,
					     5,      10,    30,     60};
/* Commit latency: one fsync on a fast disk to a stalled one. */
static const double commit_seconds_bounds[] = {0.0001, 0.00025, 0.0005, 0.001, 0.0025,
					       0.005,  0.01,    0.025,  0.05,  0.1,
					       0.25,   0.5,     1,      2.5,   5};
/* Changes per commit, in powers of two. */
static const double commit_size_bounds[] = {1,   2,   4,    8,    16,   32,   64,
					    128, 256, 512, 1024, 2048, 4096, 8192};

#define COUNT_OF(a) (sizeof(a) / sizeof((a)[0]))

typedef struct {
	int code; /* HTTP status, 0 = the "other" slot */
	uint64_t count;
} code_count_t;

typedef struct metrics_route {
	const char *route; /* static string, not owned */
	code_count_t codes[MAX_CODES + 1];
	size_t code_count;
	metrics_histogram_t duration;
	struct metrics_route *next;
} metrics_route_t;

struct metrics {
	uint32_t max_models;
	uint32_t model_count; /* series of their own, "__other__" not included */
	metrics_model_t *models_head, *models_tail;
	metrics_model_t *other; /* created at the first model past the cap */
	uint64_t models_dropped;

	metrics_route_t *routes_head, *routes_tail;
	size_t route_count;
	uint64_t connections;

	metrics_histogram_t commit_size;
	metrics_histogram_t commit_seconds;
	uint64_t commits;
	uint64_t commit_failures;
};

/* Event names, as in inferq_jobs_NAME_total, and their help texts. */
static const char *const event_names[METRICS_JOB_EVENT_COUNT] = {
	"submitted", "claimed",  "completed", "failed",      "expired",
	"canceled",  "retried",  "released",  "undelivered",
};
static const char *const event_help[METRICS_JOB_EVENT_COUNT] = {
	"Jobs submitted and committed.",
	"Claims of jobs by workers, committed.",
	"Jobs completed with outputs.",
	"Jobs that became failed: failed by a worker, or by a lease expiry after the last retry.",
	"Lease expiries: claims whose worker stopped sending heartbeats in time.",
	"Pending jobs canceled, one by one or by clear.",
	"Lease expiries that sent the job back to pending for another delivery.",
	"Running jobs a worker gave back to the queue with release.",
	"Claimed jobs given back to the queue because the client closed its connection before "
	"the claim response was sent.",
};

/* ---- histograms and labels ---- */

void metrics_histogram_init(metrics_histogram_t *h, const double *bounds, size_t bound_count)
{
	memset(h, 0, sizeof(*h));
	h->bounds = bounds;
	h->bound_count = bound_count;
	h->counts = xcalloc(bound_count + 1, sizeof(*h->counts));
}

void metrics_histogram_free(metrics_histogram_t *h)
{
	free(h->counts);
	h->counts = NULL;
}

void metrics_histogram_observe(metrics_histogram_t *h, double value)
{
	size_t lo = 0, hi = h->bound_count;

	if (isnan(value))
		return;
	/* Binary search for the first bound >= value; hi == bound_count is +Inf. */
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (h->bounds[mid] >= value)
			hi = mid;
		else
			lo = mid + 1;
	}
	h->counts[lo]++;
	h->total++;
	h->sum += value;
}

void metrics_escape_label(buf_t *out, const char *s, size_t len)
{
	size_t start = 0;

	for (size_t i = 0; i < len; i++) {
		const char *esc = NULL;

		if (s[i] == '\\')
			esc = "\\\\";
		else if (s[i] == '"')
			esc = "\\\"";
		else if (s[i] == '\n')
			esc = "\\n";
		if (esc == NULL)
			continue;
		buf_append(out, s + start, i - start);
		buf_puts(out, esc);
		start = i + 1;
	}
	buf_append(out, s + start, len - start);
}

/* Appends a float the way Prometheus parses it: +Inf, -Inf, NaN or a decimal. */
static void put_float(buf_t *out, double v)
{
	if (isnan(v))
		buf_puts(out, "NaN");
	else if (isinf(v))
		buf_puts(out, v > 0 ? "+Inf" : "-Inf");
	else
		buf_printf(out, "%.15g", v);
}

/* Appends "name{labels} " (no braces when labels is empty). */
static void put_sample_start(buf_t *out, const char *name, const char *labels)
{
	buf_puts(out, name);
	if (labels[0]) {
		buf_putc(out, '{');
		buf_puts(out, labels);
		buf_putc(out, '}');
	}
	buf_putc(out, ' ');
}

void metrics_histogram_render(buf_t *out, const char *name, const char *labels,
			      const metrics_histogram_t *h)
{
	uint64_t cumulative = 0;
	const char *sep = labels[0] ? "," : "";

	for (size_t i = 0; i <= h->bound_count; i++) {
		cumulative += h->counts[i];
		buf_printf(out, "%s_bucket{%s%sle=\"", name, labels, sep);
		if (i < h->bound_count)
			put_float(out, h->bounds[i]);
		else
			buf_puts(out, "+Inf");
		buf_puts(out, "\"} ");
		buf_put_u64(out, cumulative);
		buf_putc(out, '\n');
	}
	buf_printf(out, "%s_sum", name);
	if (labels[0])
		buf_printf(out, "{%s}", labels);
	buf_putc(out, ' ');
	put_float(out, h->sum);
	buf_printf(out, "\n%s_count", name);
	if (labels[0])
		buf_printf(out, "{%s}", labels);
	buf_putc(out, ' ');
	buf_put_u64(out, h->total);
	buf_putc(out, '\n');
}

/* ---- registry ---- */

metrics_t *metrics_new(uint32_t max_models)
{
	metrics_t *m = xcalloc(1, sizeof(*m));

	m->max_models = max_models ? max_models : 1;
	metrics_histogram_init(&m->commit_size, commit_size_bounds, COUNT_OF(commit_size_bounds));
	metrics_histogram_init(&m->commit_seconds, commit_seconds_bounds,
			       COUNT_OF(commit_seconds_bounds));
	return m;
}

static void free_model(metrics_model_t *mm)
{
	metrics_histogram_free(&mm->wait);
	metrics_histogram_free(&mm->run);
	free(mm->name);
	free(mm);
}

void metrics_free(metrics_t *m)
{
	if (m == NULL)
		return;
	for (metrics_model_t *mm = m->models_head, *next; mm; mm = next) {
		next = mm->next;
		free_model(mm);
	}
	if (m->other)
		free_model(m->other);
	for (metrics_route_t *r = m->routes_head, *next; r; r = next) {
		next = r->next;
		metrics_histogram_free(&r->duration);
		free(r);
	}
	metrics_histogram_free(&m->commit_size);
	metrics_histogram_free(&m->commit_seconds);
	free(m);
}

static metrics_model_t *new_model(const char *name, size_t len)
{
	metrics_model_t *mm = xcalloc(1, sizeof(*mm));

	mm->name = xmalloc(len + 1);
	memcpy(mm->name, name, len);
	mm->name[len] = '\0';
	mm->name_len = len;
	metrics_histogram_init(&mm->wait, metrics_job_seconds_bounds,
			       metrics_job_seconds_bound_count);
	metrics_histogram_init(&mm->run, metrics_job_seconds_bounds,
			       metrics_job_seconds_bound_count);
	return mm;
}

metrics_model_t *metrics_model(metrics_t *m, const char *name, size_t len)
{
	metrics_model_t *mm;

	for (mm = m->models_head; mm; mm = mm->next) {
		if (mm->name_len == len && memcmp(mm->name, name, len) == 0)
			return mm;
	}
	if (m->model_count >= m->max_models) {
		if (m->other == NULL)
			m->other = new_model(METRICS_OTHER_MODEL, strlen(METRICS_OTHER_MODEL));
		m->models_dropped++;
		return m->other;
	}
	mm = new_model(name, len);
	if (m->models_tail)
		m->models_tail->next = mm;
	else
		m->models_head = mm;
	m->models_tail = mm;
	m->model_count++;
	return mm;
}

void metrics_job_event(metrics_model_t *mm, metrics_job_event_t event)
{
	mm->events[event]++;
}

void metrics_finished_add(metrics_model_t *mm, job_state_t state, int64_t delta)
{
	uint64_t *n = &mm->finished[state];

	if (delta < 0 && (uint64_t)-delta > *n)
		*n = 0;
	else
		*n += (uint64_t)delta;
}

void metrics_clear_gauges(metrics_t *m)
{
	for (metrics_model_t *mm = m->models_head; mm; mm = mm->next) {
		memset(mm->jobs, 0, sizeof(mm->jobs));
		mm->waiting_workers = 0;
	}
	if (m->other) {
		memset(m->other->jobs, 0, sizeof(m->other->jobs));
		m->other->waiting_workers = 0;
	}
}

static metrics_route_t *find_route(metrics_t *m, const char *route)
{
	metrics_route_t *r;

	/* Routes come from one static table, so the pointer usually matches; text is the fallback. */
	for (r = m->routes_head; r; r = r->next) {
		if (r->route == route)
			return r;
	}
	for (r = m->routes_head; r; r = r->next) {
		if (strcmp(r->route, route) == 0)
			return r;
	}
	if (m->route_count >= METRICS_MAX_ROUTES && strcmp(route, METRICS_OTHER_ROUTE) != 0)
		return find_route(m, METRICS_OTHER_ROUTE);
	r = xcalloc(1, sizeof(*r));
	r->route = route;
	metrics_histogram_init(&r->duration, http_seconds_bounds, COUNT_OF(http_seconds_bounds));
	if (m->routes_tail)
		m->routes_tail->next = r;
	else
		m->routes_head = r;
	m->routes_tail = r;
	m->route_count++;
	return r;
}

void metrics_http_request(metrics_t *m, const char *route, int status, double seconds)
{
	metrics_route_t *r = find_route(m, route);
	size_t i;

	metrics_histogram_observe(&r->duration, seconds);
	for (i = 0; i < r->code_count; i++) {
		if (r->codes[i].code == status)
			break;
	}
	if (i == r->code_count) {
		/* Past MAX_CODES distinct codes, the last slot counts the rest as "other". */
		if (r->code_count < MAX_CODES) {
			r->codes[i].code = status;
		} else {
			i = MAX_CODES;
			r->codes[i].code = 0;
			r->code_count = MAX_CODES + 1;
		}
		if (i == r->code_count)
			r->code_count++;
	}
	r->codes[i].count++;
}

void metrics_store_commit(metrics_t *m, size_t changes, double seconds, int ok)
{
	metrics_histogram_observe(&m->commit_size, (double)changes);
	metrics_histogram_observe(&m->commit_seconds, seconds);
	if (ok)
		m->commits++;
	else
		m->commit_failures++;
}

void metrics_set_connections(metrics_t *m, uint64_t connections)
{
	m->connections = connections;
}

/* ---- rendering ---- */

static void put_family(buf_t *out, const char *name, const char *type, const char *help)
{
	buf_printf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* Calls fn for every model series, "__other__" last. */
static void each_model(const metrics_t *m, void (*fn)(const metrics_model_t *mm, void *ctx),
		       void *ctx)
{
	for (const metrics_model_t *mm = m->models_head; mm; mm = mm->next)
		fn(mm, ctx);
	if (m->other)
		fn(m->other, ctx);
}

/* Per-family state while every model is rendered. */
typedef struct {
	buf_t *out;
	buf_t labels;
	int event;   /* METRICS_JOB_* for the counters */
	int which;   /* 0: wait histogram, 1: run histogram */
} render_ctx_t;

static void model_labels(render_ctx_t *rc, const metrics_model_t *mm)
{
	buf_reset(&rc->labels);
	buf_puts(&rc->labels, "model=\"");
	metrics_escape_label(&rc->labels, mm->name, mm->name_len);
	buf_putc(&rc->labels, '"');
}

static void render_jobs_gauge(const metrics_model_t *mm, void *ctx)
{
	render_ctx_t *rc = ctx;

	model_labels(rc, mm);
	for (int st = 0; st < JOB_STATE_COUNT; st++) {
		buf_printf(rc->out, "inferq_jobs{%s,state=\"%s\"} ", rc->labels.data,
			   job_state_name((job_state_t)st));
		buf_put_u64(rc->out, st <= JOB_RUNNING ? mm->jobs[st] : mm->finished[st]);
		buf_putc(rc->out, '\n');
	}
}

static void render_waiting(const metrics_model_t *mm, void *ctx)
{
	render_ctx_t *rc = ctx;

	model_labels(rc, mm);
	put_sample_start(rc->out, "inferq_waiting_workers", rc->labels.data);
	buf_put_u64(rc->out, mm->waiting_workers);
	buf_putc(rc->out, '\n');
}

static void render_event(const metrics_model_t *mm, void *ctx)
{
	render_ctx_t *rc = ctx;
	char name[64];

	model_labels(rc, mm);
	snprintf(name, sizeof(name), "inferq_jobs_%s_total", event_names[rc->event]);
	put_sample_start(rc->out, name, rc->labels.data);
	buf_put_u64(rc->out, mm->events[rc->event]);
	buf_putc(rc->out, '\n');
}

static void render_job_histogram(const metrics_model_t *mm, void *ctx)
{
	render_ctx_t *rc = ctx;

	model_labels(rc, mm);
	if (rc->which == 0)
		metrics_histogram_render(rc->out, "inferq_job_wait_seconds", rc->labels.data,
					 &mm->wait);
	else
		metrics_histogram_render(rc->out, "inferq_job_run_seconds", rc->labels.data,
					 &mm->run);
}

static void render_models(const metrics_t *m, buf_t *out)
{
	render_ctx_t rc = {out, BUF_INIT, 0, 0};
	char name[64];

	put_family(out, "inferq_jobs", "gauge",
		   "Jobs by model and state, committed: pending and running from the in-memory "
		   "queue, finished ones retained in the store.");
	each_model(m, render_jobs_gauge, &rc);
	put_family(out, "inferq_waiting_workers", "gauge",
		   "Claims parked in a long-poll wait for a job of the model.");
	each_model(m, render_waiting, &rc);
	for (rc.event = 0; rc.event < METRICS_JOB_EVENT_COUNT; rc.event++) {
		snprintf(name, sizeof(name), "inferq_jobs_%s_total", event_names[rc.event]);
		put_family(out, name, "counter", event_help[rc.event]);
		each_model(m, render_event, &rc);
	}
	put_family(out, "inferq_job_wait_seconds", "histogram",
		   "Time jobs waited in the queue, from submission to each claim.");
	rc.which = 0;
	each_model(m, render_job_histogram, &rc);
	put_family(out, "inferq_job_run_seconds", "histogram",
		   "Time from the last claim to done or failed.");
	rc.which = 1;
	each_model(m, render_job_histogram, &rc);
	put_family(out, "inferq_metrics_models_dropped_total", "counter",
		   "Models beyond --metrics-max-models, counted under model=\"__other__\".");
	buf_printf(out, "inferq_metrics_models_dropped_total %llu\n",
		   (unsigned long long)m->models_dropped);
	buf_free(&rc.labels);
}

static void render_http(const metrics_t *m, buf_t *out)
{
	buf_t labels = BUF_INIT;
	const metrics_route_t *r;

	put_family(out, "inferq_http_requests_total", "counter",
		   "HTTP requests answered, by route pattern and status code.");
	for (r = m->routes_head; r; r = r->next) {
		for (size_t i = 0; i < r->code_count; i++) {
			buf_puts(out, "inferq_http_requests_total{route=\"");
			metrics_escape_label(out, r->route, strlen(r->route));
			if (r->codes[i].code)
				buf_printf(out, "\",code=\"%d\"} ", r->codes[i].code);
			else
				buf_puts(out, "\",code=\"other\"} ");
			buf_put_u64(out, r->codes[i].count);
			buf_putc(out, '\n');
		}
	}
	put_family(out, "inferq_http_request_duration_seconds", "histogram",
		   "Time from the end of a request's headers to its response being queued.");
	for (r = m->routes_head; r; r = r->next) {
		buf_reset(&labels);
		buf_puts(&labels, "route=\"");
		metrics_escape_label(&labels, r->route, strlen(r->route));
		buf_putc(&labels, '"');
		metrics_histogram_render(out, "inferq_http_request_duration_seconds", labels.data,
					 &r->duration);
	}
	put_family(out, "inferq_http_connections", "gauge", "Open HTTP connections.");
	buf_printf(out, "inferq_http_connections %llu\n", (unsigned long long)m->connections);
	buf_free(&labels);
}

static void render_store(const metrics_t *m, buf_t *out)
{
	put_family(out, "inferq_store_commit_batch_size", "histogram",
		   "Changes of one batch handed to the store; batches waiting together share a transaction.");
	metrics_histogram_render(out, "inferq_store_commit_batch_size", "", &m->commit_size);
	put_family(out, "inferq_store_commit_duration_seconds", "histogram",
		   "Time from handing a batch to the store to its commit callback.");
	metrics_histogram_render(out, "inferq_store_commit_duration_seconds", "",
				 &m->commit_seconds);
	put_family(out, "inferq_store_commits_total", "counter", "Batches of changes the store committed.");
	buf_printf(out, "inferq_store_commits_total %llu\n", (unsigned long long)m->commits);
	put_family(out, "inferq_store_commit_failures_total", "counter",
		   "Batches whose commit failed; their requests got 503.");
	buf_printf(out, "inferq_store_commit_failures_total %llu\n",
		   (unsigned long long)m->commit_failures);
}

static void render_process(const metrics_process_t *p, buf_t *out)
{
	put_family(out, "process_resident_memory_bytes", "gauge", "Resident memory size in bytes.");
	buf_printf(out, "process_resident_memory_bytes %llu\n",
		   (unsigned long long)p->resident_bytes);
	put_family(out, "process_open_fds", "gauge", "Open file descriptors.");
	buf_printf(out, "process_open_fds %llu\n", (unsigned long long)p->open_fds);
	put_family(out, "process_max_fds", "gauge", "Limit of open file descriptors.");
	buf_printf(out, "process_max_fds %llu\n", (unsigned long long)p->max_fds);
	put_family(out, "process_cpu_seconds_total", "counter",
		   "User and system CPU time spent in seconds.");
	buf_puts(out, "process_cpu_seconds_total ");
	put_float(out, p->cpu_seconds);
	buf_putc(out, '\n');
	put_family(out, "process_start_time_seconds", "gauge",
		   "Start time of the process since the Unix epoch in seconds.");
	buf_puts(out, "process_start_time_seconds ");
	put_float(out, p->start_time);
	buf_putc(out, '\n');
}

void metrics_render(const metrics_t *m, const metrics_process_t *proc, buf_t *out)
{
	put_family(out, "inferq_build_info", "gauge", "Always 1; the version label names the build.");
	buf_puts(out, "inferq_build_info{version=\"");
	metrics_escape_label(out, INFERQ_VERSION, strlen(INFERQ_VERSION));
	buf_puts(out, "\"} 1\n");
	render_models(m, out);
	render_http(m, out);
	render_store(m, out);
	if (proc)
		render_process(proc, out);
}

/* ---- process figures ---- */

/* Returns the process start time in seconds since the epoch, from /proc, or 0. */
static double read_start_time(void)
{
	char buf[1024];
	FILE *f;
	size_t n;
	char *p;
	unsigned long long start_ticks = 0, btime = 0;
	long ticks = sysconf(_SC_CLK_TCK);

	/* Field 22 of /proc/self/stat, counted after the ')' that ends the command name. */
	f = fopen("/proc/self/stat", "r");
	if (f == NULL)
		return 0;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	p = strrchr(buf, ')');
	if (p == NULL || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %*u %*u %*d "
				       "%*d %*d %*d %*d %*d %llu",
				&start_ticks) != 1)
		return 0;

	f = fopen("/proc/stat", "r");
	if (f == NULL)
		return 0;
	while (fgets(buf, sizeof(buf), f)) {
		if (sscanf(buf, "btime %llu", &btime) == 1)
			break;
	}
	fclose(f);
	if (btime == 0 || ticks <= 0)
		return 0;
	return (double)btime + (double)start_ticks / (double)ticks;
}

int metrics_read_process(metrics_process_t *p)
{
	unsigned long long size = 0, resident = 0;
	struct rusage ru;
	struct rlimit rl;
	struct dirent *de;
	FILE *f;
	DIR *dir;

	memset(p, 0, sizeof(*p));
	f = fopen("/proc/self/statm", "r");
	if (f == NULL)
		return INFERQ_EIO;
	if (fscanf(f, "%llu %llu", &size, &resident) == 2)
		p->resident_bytes = resident * (uint64_t)sysconf(_SC_PAGESIZE);
	fclose(f);

	dir = opendir("/proc/self/fd");
	if (dir) {
		while ((de = readdir(dir)) != NULL) {
			if (de->d_name[0] != '.')
				p->open_fds++;
		}
		closedir(dir);
		/* The directory stream itself held one descriptor while it was read. */
		if (p->open_fds > 0)
			p->open_fds--;
	}
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0)
		p->max_fds = rl.rlim_cur == RLIM_INFINITY ? 0 : (uint64_t)rl.rlim_cur;
	if (getrusage(RUSAGE_SELF, &ru) == 0)
		p->cpu_seconds = (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
				 (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
	p->start_time = read_start_time();
	return 0;
}
