/*
 * The registry of workers seen (see workers.h): a hash of workers by
 * claimant label, chained through worker_t.hash_next, and an array of all
 * of them for eviction and the view. Each worker keeps its current jobs in
 * a small array, searched linearly, because a worker has few jobs at once.
 *
 * SPDX-License-Identifier: MIT
 */
#include "workers.h"

#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "clock.h"
#include "ids.h"
#include "json.h"
#include "log.h"

#define BUCKET_COUNT 4096 /* chains stay short up to tens of thousands of workers */

typedef struct {
	iq_id_t id;
	rbuf_t *model;
} current_job_t;

typedef struct worker {
	rbuf_t *label;   /* hash key: the claimant label, or WORKERS_ANONYMOUS */
	rbuf_t *name;    /* shown name */
	rbuf_t *version; /* or NULL */
	int64_t first_seen, last_seen; /* ms since epoch */
	uint64_t done, failed, expired;
	current_job_t *jobs;
	size_t job_count, job_cap;
	size_t index; /* position in workers_t.all */
	struct worker *hash_next;
} worker_t;

struct workers {
	uint32_t max_tracked;
	int64_t forget_ms;
	worker_t *buckets[BUCKET_COUNT];
	worker_t **all;
	size_t count, cap;
};

workers_t *workers_new(uint32_t max_tracked, int64_t forget_ms)
{
	workers_t *w = xcalloc(1, sizeof(*w));

	w->max_tracked = max_tracked ? max_tracked : 1;
	w->forget_ms = forget_ms;
	return w;
}

static uint32_t hash_label(const char *p, size_t len)
{
	uint32_t h = 2166136261u; /* FNV-1a */

	for (size_t i = 0; i < len; i++) {
		h ^= (unsigned char)p[i];
		h *= 16777619u;
	}
	return h % BUCKET_COUNT;
}

static void free_worker(worker_t *wk)
{
	for (size_t i = 0; i < wk->job_count; i++)
		rbuf_unref(wk->jobs[i].model);
	free(wk->jobs);
	rbuf_unref(wk->label);
	rbuf_unref(wk->name);
	rbuf_unref(wk->version);
	free(wk);
}

void workers_free(workers_t *w)
{
	if (!w)
		return;
	for (size_t i = 0; i < w->count; i++)
		free_worker(w->all[i]);
	free(w->all);
	free(w);
}

size_t workers_count(const workers_t *w)
{
	return w->count;
}

static worker_t *find(workers_t *w, const char *label, size_t len)
{
	worker_t *wk = w->buckets[hash_label(label, len)];

	while (wk && !(wk->label->len == len && memcmp(wk->label->data, label, len) == 0))
		wk = wk->hash_next;
	return wk;
}

/* Unlinks wk from the hash and the array, and frees it. */
static void drop(workers_t *w, worker_t *wk)
{
	worker_t **link = &w->buckets[hash_label(wk->label->data, wk->label->len)];

	while (*link != wk)
		link = &(*link)->hash_next;
	*link = wk->hash_next;
	w->all[wk->index] = w->all[--w->count];
	w->all[wk->index]->index = wk->index;
	free_worker(wk);
}

/*
 * Drops every worker not seen since now_ms - forget_ms, except those with
 * running jobs: a job with a long lease and no heartbeats keeps its worker
 * listed until it finishes.
 */
static void forget_idle(workers_t *w, int64_t now_ms)
{
	/* Downwards: drop() moves the last worker into the freed slot, which was checked. */
	for (size_t i = w->count; i-- > 0;) {
		if (w->all[i]->job_count == 0 && now_ms - w->all[i]->last_seen > w->forget_ms)
			drop(w, w->all[i]);
	}
}

/* Returns 1 when a should be evicted before b: workers without jobs first, then the oldest. */
static int evicts_before(const worker_t *a, const worker_t *b)
{
	if ((a->job_count == 0) != (b->job_count == 0))
		return a->job_count == 0;
	return a->last_seen < b->last_seen;
}

static void evict_least_recent(workers_t *w)
{
	worker_t *oldest = w->all[0];

	for (size_t i = 1; i < w->count; i++)
		if (evicts_before(w->all[i], oldest))
			oldest = w->all[i];
	log_debug("workers", "tracking %zu workers (--max-workers-tracked): forgetting the least "
			     "recently seen",
		  w->count);
	drop(w, oldest);
}

/* Returns the worker with label, adding it (seen at seen_ms) when it is new. */
static worker_t *get(workers_t *w, const char *label, size_t len, int64_t seen_ms)
{
	worker_t *wk;
	uint32_t bucket;

	if (len == 0) {
		label = WORKERS_ANONYMOUS;
		len = strlen(WORKERS_ANONYMOUS);
	}
	wk = find(w, label, len);
	if (wk)
		return wk;

	forget_idle(w, seen_ms);
	if (w->count >= w->max_tracked)
		evict_least_recent(w);
	if (w->count == w->cap) {
		w->cap = w->cap ? w->cap * 2 : 16;
		w->all = xrealloc(w->all, w->cap * sizeof(*w->all));
	}
	wk = xcalloc(1, sizeof(*wk));
	wk->label = rbuf_new(label, len);
	wk->name = rbuf_ref(wk->label);
	wk->first_seen = wk->last_seen = seen_ms;
	wk->index = w->count;
	w->all[w->count++] = wk;
	bucket = hash_label(label, len);
	wk->hash_next = w->buckets[bucket];
	w->buckets[bucket] = wk;
	return wk;
}

static void mark_seen(worker_t *wk, int64_t ms)
{
	if (ms > wk->last_seen)
		wk->last_seen = ms;
}

void workers_seen(workers_t *w, const char *label, size_t label_len, const char *name,
		  size_t name_len, const char *version, size_t version_len, int64_t now_ms)
{
	worker_t *wk = get(w, label, label_len, now_ms);

	mark_seen(wk, now_ms);
	if (name_len > 0 && !(wk->name->len == name_len && memcmp(wk->name->data, name, name_len) == 0)) {
		rbuf_unref(wk->name);
		wk->name = rbuf_new(name, name_len);
	}
	if (version && version_len > 0) {
		if (version_len > WORKERS_VERSION_MAX)
			version_len = WORKERS_VERSION_MAX;
		rbuf_unref(wk->version);
		wk->version = rbuf_new(version, version_len);
	}
}

static void add_job(worker_t *wk, const job_record_t *rec)
{
	for (size_t i = 0; i < wk->job_count; i++)
		if (id_equal(&wk->jobs[i].id, &rec->id))
			return;
	if (wk->job_count == wk->job_cap) {
		wk->job_cap = wk->job_cap ? wk->job_cap * 2 : 4;
		wk->jobs = xrealloc(wk->jobs, wk->job_cap * sizeof(*wk->jobs));
	}
	wk->jobs[wk->job_count].id = rec->id;
	wk->jobs[wk->job_count].model = rbuf_ref(rec->model);
	wk->job_count++;
}

static void remove_job(worker_t *wk, const iq_id_t *id)
{
	for (size_t i = 0; i < wk->job_count; i++) {
		if (!id_equal(&wk->jobs[i].id, id))
			continue;
		rbuf_unref(wk->jobs[i].model);
		/* Shift, so the current jobs stay in claim order. */
		memmove(&wk->jobs[i], &wk->jobs[i + 1], (wk->job_count - i - 1) * sizeof(*wk->jobs));
		wk->job_count--;
		return;
	}
}

void workers_record(workers_t *w, history_event_t event, const job_record_t *rec,
		    int64_t now_ms)
{
	const char *label = rec->worker ? rec->worker->data : "";
	size_t len = rec->worker ? rec->worker->len : 0;
	worker_t *wk;

	if (event == HISTORY_EXPIRED) {
		wk = find(w, len ? label : WORKERS_ANONYMOUS, len ? len : strlen(WORKERS_ANONYMOUS));
		if (wk) {
			wk->expired++;
			remove_job(wk, &rec->id);
		}
		return;
	}
	if (event == HISTORY_NONE && rec->state != JOB_RUNNING)
		return;
	if (event == HISTORY_CANCELED || event == HISTORY_SUBMITTED || event == HISTORY_RETRIED)
		return;

	wk = get(w, label, len, now_ms);
	mark_seen(wk, now_ms);
	switch (event) {
	case HISTORY_CLAIMED: add_job(wk, rec); break;
	case HISTORY_COMPLETED:
		wk->done++;
		remove_job(wk, &rec->id);
		break;
	case HISTORY_FAILED:
		wk->failed++;
		remove_job(wk, &rec->id);
		break;
	case HISTORY_RELEASED: remove_job(wk, &rec->id); break;
	default: break;
	}
}

void workers_restore_running(workers_t *w, const job_record_t *rec)
{
	const char *label = rec->worker ? rec->worker->data : "";
	size_t len = rec->worker ? rec->worker->len : 0;
	worker_t *wk = get(w, label, len, rec->claimed_at);

	mark_seen(wk, rec->claimed_at);
	add_job(wk, rec);
}

void workers_set_running(workers_t *w, const job_record_t *running, size_t n)
{
	for (size_t i = 0; i < w->count; i++) {
		worker_t *wk = w->all[i];

		for (size_t j = 0; j < wk->job_count; j++)
			rbuf_unref(wk->jobs[j].model);
		wk->job_count = 0;
	}
	for (size_t i = 0; i < n; i++)
		workers_restore_running(w, &running[i]);
}

static int by_last_seen(const void *a, const void *b)
{
	const worker_t *x = *(const worker_t *const *)a;
	const worker_t *y = *(const worker_t *const *)b;

	if (x->last_seen != y->last_seen)
		return x->last_seen > y->last_seen ? -1 : 1;
	if (x->label->len != y->label->len)
		return x->label->len < y->label->len ? -1 : 1;
	return memcmp(x->label->data, y->label->data, x->label->len);
}

static void time_member(buf_t *out, const char *name, int64_t ms)
{
	char text[RFC3339_LEN + 1];

	clock_format_rfc3339(ms, text);
	buf_putc(out, ',');
	json_write_key(out, name);
	buf_putc(out, '"');
	buf_append(out, text, RFC3339_LEN);
	buf_putc(out, '"');
}

static void render_worker(buf_t *out, const worker_t *wk)
{
	char id[ID_TEXT_LEN + 1];

	buf_putc(out, '{');
	json_write_key(out, "name");
	json_write_string(out, wk->name->data, wk->name->len);
	if (wk->version) {
		buf_putc(out, ',');
		json_write_key(out, "version");
		json_write_string(out, wk->version->data, wk->version->len);
	}
	time_member(out, "first_seen", wk->first_seen);
	time_member(out, "last_seen", wk->last_seen);
	buf_puts(out, ",\"current_jobs\":[");
	for (size_t i = 0; i < wk->job_count; i++) {
		id_format(&wk->jobs[i].id, id);
		buf_printf(out, "%s{\"request_id\":\"%s\",\"model\":", i ? "," : "", id);
		json_write_string(out, wk->jobs[i].model->data, wk->jobs[i].model->len);
		buf_putc(out, '}');
	}
	buf_printf(out, "],\"jobs_done\":%llu,\"jobs_failed\":%llu,\"jobs_expired\":%llu}",
		   (unsigned long long)wk->done, (unsigned long long)wk->failed,
		   (unsigned long long)wk->expired);
}

void workers_render(workers_t *w, buf_t *out, int64_t now_ms)
{
	worker_t **sorted;

	forget_idle(w, now_ms);
	sorted = xmalloc((w->count ? w->count : 1) * sizeof(*sorted));
	if (w->count > 0)
		memcpy(sorted, w->all, w->count * sizeof(*sorted));
	qsort(sorted, w->count, sizeof(*sorted), by_last_seen);
	buf_puts(out, "{\"data\":[");
	for (size_t i = 0; i < w->count; i++) {
		if (i > 0)
			buf_putc(out, ',');
		render_worker(out, sorted[i]);
	}
	buf_puts(out, "]}");
	free(sorted);
}
