/*
 * The queue engine (see queue.h): job rules over three indexes kept in step
 * with every job's state. A job is in its model's pending heap exactly when
 * it is pending, and in the lease heap exactly when it is running with a
 * lease. Each job stores its slot in both heaps (pending_pos, lease_pos), so
 * removing any job is O(log n). Per-model pending and running counters
 * equal the number of jobs in those states after every call.
 *
 * Built for millions of jobs: the id hash chains through job->hash_next with
 * a load factor of at most 1, and heap arrays double and halve, so the index
 * cost per job is 16 to 32 bytes on top of job_t.
 *
 * SPDX-License-Identifier: MIT
 */
#include "queue.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "clock.h"
#include "inferq_error.h"
#include "log.h"

#define DEFAULT_MAX_RETRIES    3
#define DEFAULT_MAX_INFO_BYTES (64 * 1024)
#define DEFAULT_MAX_DEPTH      64
#define MIN_BUCKET_BITS        6 /* 64 buckets */
#define MIN_HEAP_CAP           8

/*
 * Depth limit for re-reading a stored info object during an expiry. It is
 * above max_depth so an info accepted under an older, higher limit keeps
 * its members.
 */
#define INFO_SCAN_DEPTH 1024

enum heap_kind { HEAP_PENDING, HEAP_LEASE };

struct queue {
	queue_config_t config;

	job_t **buckets; /* chains through job->hash_next */
	unsigned bucket_bits;
	size_t job_count;

	queue_model_t **model_buckets; /* chains through model->next */
	unsigned model_bucket_bits;
	size_t model_count;

	job_t **lease_heap; /* running jobs with a lease, by lease_mono */
	size_t lease_len, lease_cap;
};

/* ---- hashing ---- */

/*
 * Job ids are UUIDv7: bytes 0..5 are a timestamp that many jobs share, so
 * the hash takes bytes 8..15, which are random, and spreads them with a
 * Fibonacci multiply whose top bits pick the bucket.
 */
static size_t id_bucket(const iq_id_t *id, unsigned bits)
{
	uint64_t x;

	memcpy(&x, id->b + 8, sizeof(x));
	return (size_t)((x * UINT64_C(0x9e3779b97f4a7c15)) >> (64 - bits));
}

/* FNV-1a, then the same multiply as id_bucket(). */
static size_t name_bucket(const char *name, size_t len, unsigned bits)
{
	uint64_t h = UINT64_C(0xcbf29ce484222325);

	for (size_t i = 0; i < len; i++) {
		h ^= (uint8_t)name[i];
		h *= UINT64_C(0x100000001b3);
	}
	return (size_t)((h * UINT64_C(0x9e3779b97f4a7c15)) >> (64 - bits));
}

static void rehash_jobs(queue_t *q, unsigned bits)
{
	size_t old_n = (size_t)1 << q->bucket_bits;
	job_t **fresh = xcalloc((size_t)1 << bits, sizeof(*fresh));

	for (size_t i = 0; i < old_n; i++) {
		job_t *j = q->buckets[i];

		while (j) {
			job_t *next = j->hash_next;
			size_t b = id_bucket(&j->rec.id, bits);

			j->hash_next = fresh[b];
			fresh[b] = j;
			j = next;
		}
	}
	free(q->buckets);
	q->buckets = fresh;
	q->bucket_bits = bits;
}

static void hash_insert(queue_t *q, job_t *job)
{
	size_t b;

	if (q->job_count >= ((size_t)1 << q->bucket_bits))
		rehash_jobs(q, q->bucket_bits + 1);
	b = id_bucket(&job->rec.id, q->bucket_bits);
	job->hash_next = q->buckets[b];
	q->buckets[b] = job;
	q->job_count++;
}

static void hash_remove(queue_t *q, job_t *job)
{
	job_t **link = &q->buckets[id_bucket(&job->rec.id, q->bucket_bits)];

	while (*link != job) {
		IQ_ASSERT(*link != NULL);
		link = &(*link)->hash_next;
	}
	*link = job->hash_next;
	job->hash_next = NULL;
	q->job_count--;

	/* Shrink at a quarter full, so a burst of drops gives the memory back. */
	if (q->bucket_bits > MIN_BUCKET_BITS && q->job_count < ((size_t)1 << q->bucket_bits) / 4)
		rehash_jobs(q, q->bucket_bits - 1);
}

/* ---- binary heaps ---- */

static size_t heap_pos(const job_t *j, enum heap_kind kind)
{
	return kind == HEAP_PENDING ? j->pending_pos : j->lease_pos;
}

static void set_heap_pos(job_t *j, enum heap_kind kind, size_t pos)
{
	IQ_ASSERT(pos <= JOB_NO_POS);
	if (kind == HEAP_PENDING)
		j->pending_pos = (uint32_t)pos;
	else
		j->lease_pos = (uint32_t)pos;
}

/* Returns 1 when a belongs above b: pending by priority desc then seq asc,
 * leases by deadline asc then seq asc. */
static int heap_before(const job_t *a, const job_t *b, enum heap_kind kind)
{
	if (kind == HEAP_PENDING) {
		if (a->rec.priority != b->rec.priority)
			return a->rec.priority > b->rec.priority;
	} else if (a->lease_mono != b->lease_mono) {
		return a->lease_mono < b->lease_mono;
	}
	return a->rec.seq < b->rec.seq;
}

static void heap_set(job_t **h, size_t i, job_t *j, enum heap_kind kind)
{
	h[i] = j;
	set_heap_pos(j, kind, i);
}

static void sift_up(job_t **h, size_t i, enum heap_kind kind)
{
	job_t *j = h[i];

	while (i > 0) {
		size_t parent = (i - 1) / 2;

		if (!heap_before(j, h[parent], kind))
			break;
		heap_set(h, i, h[parent], kind);
		i = parent;
	}
	heap_set(h, i, j, kind);
}

static void sift_down(job_t **h, size_t len, size_t i, enum heap_kind kind)
{
	job_t *j = h[i];

	for (;;) {
		size_t child = 2 * i + 1;

		if (child >= len)
			break;
		if (child + 1 < len && heap_before(h[child + 1], h[child], kind))
			child++;
		if (!heap_before(h[child], j, kind))
			break;
		heap_set(h, i, h[child], kind);
		i = child;
	}
	heap_set(h, i, j, kind);
}

static void heap_push(job_t ***h, size_t *len, size_t *cap, job_t *j, enum heap_kind kind)
{
	if (*len == *cap) {
		*cap = *cap ? *cap * 2 : MIN_HEAP_CAP;
		*h = xrealloc(*h, *cap * sizeof(**h));
	}
	(*h)[*len] = j;
	IQ_ASSERT(*len < JOB_NO_POS);
	set_heap_pos(j, kind, *len);
	(*len)++;
	sift_up(*h, *len - 1, kind);
}

static void heap_remove(job_t ***h, size_t *len, size_t *cap, job_t *j, enum heap_kind kind)
{
	size_t i = heap_pos(j, kind);

	IQ_ASSERT(i < *len && (*h)[i] == j);
	set_heap_pos(j, kind, JOB_NO_POS);
	(*len)--;
	if (i < *len) {
		/* The last element fills the hole and may need to go either way. */
		job_t *last = (*h)[*len];

		heap_set(*h, i, last, kind);
		if (i > 0 && heap_before(last, (*h)[(i - 1) / 2], kind))
			sift_up(*h, i, kind);
		else
			sift_down(*h, *len, i, kind);
	}
	if (*cap > MIN_HEAP_CAP && *len < *cap / 4) {
		*cap /= 2;
		*h = xrealloc(*h, *cap * sizeof(**h));
	}
}

/* ---- index membership ---- */

static void pending_insert(job_t *job)
{
	queue_model_t *m = job->model;

	heap_push(&m->heap, &m->heap_len, &m->heap_cap, job, HEAP_PENDING);
}

static void pending_remove(job_t *job)
{
	queue_model_t *m = job->model;

	heap_remove(&m->heap, &m->heap_len, &m->heap_cap, job, HEAP_PENDING);
}

static void lease_insert(queue_t *q, job_t *job)
{
	heap_push(&q->lease_heap, &q->lease_len, &q->lease_cap, job, HEAP_LEASE);
}

static void lease_remove(queue_t *q, job_t *job)
{
	heap_remove(&q->lease_heap, &q->lease_len, &q->lease_cap, job, HEAP_LEASE);
}

/* Takes job out of both heaps and out of its model's counters. */
static void unindex(queue_t *q, job_t *job)
{
	if (job->pending_pos != JOB_NO_POS)
		pending_remove(job);
	if (job->lease_pos != JOB_NO_POS)
		lease_remove(q, job);
	if (job->rec.state == JOB_PENDING)
		job->model->pending--;
	else if (job->rec.state == JOB_RUNNING)
		job->model->running--;
}

/*
 * Puts job into the heap and counter that its state calls for. A running
 * job with lease_expires_at 0 holds its claim with no lease, so it counts
 * as running but has no place in the lease heap.
 */
static void reindex(queue_t *q, job_t *job)
{
	if (job->rec.state == JOB_PENDING) {
		job->model->pending++;
		pending_insert(job);
	} else if (job->rec.state == JOB_RUNNING) {
		job->model->running++;
		if (job->rec.lease_expires_at != 0)
			lease_insert(q, job);
	}
}

/*
 * Converts a wall-clock lease deadline to the monotonic clock. A deadline
 * long past can come out at or below zero, so it is raised to 1: 0 keeps
 * meaning "no lease", and queue_next_lease() returns no negative deadline
 * that a caller could take for "no job runs". With positive monotonic
 * times, as CLOCK_MONOTONIC gives, such a lease still ends at the first
 * queue_expire_next().
 */
static int64_t lease_deadline(int64_t expires_at_wall, queue_time_t now)
{
	int64_t mono = now.mono_ms + (expires_at_wall - now.wall_ms);

	return mono < 1 ? 1 : mono;
}

/* Starts a lease of timeout_s seconds from now; 0 seconds means no lease. */
static void lease_start(job_t *job, uint32_t timeout_s, queue_time_t now)
{
	if (timeout_s == 0) {
		job->rec.lease_expires_at = 0;
		job->lease_mono = 0;
		return;
	}
	job->rec.lease_expires_at = now.wall_ms + (int64_t)timeout_s * 1000;
	job->lease_mono = lease_deadline(job->rec.lease_expires_at, now);
}

static void lease_clear(job_t *job)
{
	job->rec.lease_expires_at = 0;
	job->lease_mono = 0;
}

/* ---- queue and models ---- */

queue_t *queue_new(const queue_config_t *config)
{
	queue_t *q = xcalloc(1, sizeof(*q));

	if (config) {
		q->config = *config;
	} else {
		q->config.max_retries = DEFAULT_MAX_RETRIES;
	}
	if (q->config.max_info_bytes == 0)
		q->config.max_info_bytes = DEFAULT_MAX_INFO_BYTES;
	if (q->config.max_depth <= 0)
		q->config.max_depth = DEFAULT_MAX_DEPTH;
	q->bucket_bits = MIN_BUCKET_BITS;
	q->buckets = xcalloc((size_t)1 << q->bucket_bits, sizeof(*q->buckets));
	q->model_bucket_bits = MIN_BUCKET_BITS;
	q->model_buckets = xcalloc((size_t)1 << q->model_bucket_bits, sizeof(*q->model_buckets));
	return q;
}

void queue_free(queue_t *q)
{
	if (!q)
		return;
	for (size_t i = 0; i < ((size_t)1 << q->bucket_bits); i++) {
		job_t *j = q->buckets[i];

		while (j) {
			job_t *next = j->hash_next;

			job_record_clear(&j->rec);
			free(j);
			j = next;
		}
	}
	for (size_t i = 0; i < ((size_t)1 << q->model_bucket_bits); i++) {
		queue_model_t *m = q->model_buckets[i];

		while (m) {
			queue_model_t *next = m->next;

			rbuf_unref(m->name);
			free(m->heap);
			free(m);
			m = next;
		}
	}
	free(q->buckets);
	free(q->model_buckets);
	free(q->lease_heap);
	free(q);
}

static void rehash_models(queue_t *q)
{
	unsigned bits = q->model_bucket_bits + 1;
	size_t old_n = (size_t)1 << q->model_bucket_bits;
	queue_model_t **fresh = xcalloc((size_t)1 << bits, sizeof(*fresh));

	for (size_t i = 0; i < old_n; i++) {
		queue_model_t *m = q->model_buckets[i];

		while (m) {
			queue_model_t *next = m->next;
			size_t b = name_bucket(m->name->data, m->name->len, bits);

			m->next = fresh[b];
			fresh[b] = m;
			m = next;
		}
	}
	free(q->model_buckets);
	q->model_buckets = fresh;
	q->model_bucket_bits = bits;
}

queue_model_t *queue_model_get(queue_t *q, const char *name, size_t len, int create)
{
	size_t b = name_bucket(name, len, q->model_bucket_bits);
	queue_model_t *m;

	for (m = q->model_buckets[b]; m; m = m->next) {
		if (m->name->len == len && memcmp(m->name->data, name, len) == 0)
			return m;
	}
	if (!create)
		return NULL;

	if (q->model_count >= ((size_t)1 << q->model_bucket_bits)) {
		rehash_models(q);
		b = name_bucket(name, len, q->model_bucket_bits);
	}
	m = xcalloc(1, sizeof(*m));
	m->name = rbuf_new(name, len);
	m->next = q->model_buckets[b];
	q->model_buckets[b] = m;
	q->model_count++;
	return m;
}

void queue_model_each(queue_t *q, void (*fn)(queue_model_t *m, void *ctx), void *ctx)
{
	for (size_t i = 0; i < ((size_t)1 << q->model_bucket_bits); i++) {
		queue_model_t *m = q->model_buckets[i];

		while (m) {
			queue_model_t *next = m->next;

			fn(m, ctx);
			m = next;
		}
	}
}

void queue_pending_each(queue_model_t *m, void (*fn)(const job_t *job, void *ctx), void *ctx)
{
	for (size_t i = 0; i < m->heap_len; i++)
		fn(m->heap[i], ctx);
}

/* ---- jobs ---- */

job_t *queue_job_new(void)
{
	job_t *job = xcalloc(1, sizeof(*job));

	job->pending_pos = JOB_NO_POS;
	job->lease_pos = JOB_NO_POS;
	return job;
}

void queue_add(queue_t *q, job_t *job, queue_time_t now)
{
	queue_model_t *m;

	IQ_ASSERT(job->rec.model != NULL);
	IQ_ASSERT(queue_find(q, &job->rec.id) == NULL);
	m = queue_model_get(q, job->rec.model->data, job->rec.model->len, 1);

	/* Every job of a model shares the model's name bytes. */
	rbuf_unref(job->rec.model);
	job->rec.model = rbuf_ref(m->name);
	job->model = m;
	job->pending_pos = JOB_NO_POS;
	job->lease_pos = JOB_NO_POS;
	job->lease_mono = 0;
	if (job->rec.state == JOB_RUNNING && job->rec.lease_expires_at != 0)
		job->lease_mono = lease_deadline(job->rec.lease_expires_at, now);

	hash_insert(q, job);
	reindex(q, job);
}

job_t *queue_find(queue_t *q, const iq_id_t *id)
{
	job_t *j = q->buckets[id_bucket(id, q->bucket_bits)];

	while (j && !id_equal(&j->rec.id, id))
		j = j->hash_next;
	return j;
}

void queue_drop(queue_t *q, job_t *job)
{
	unindex(q, job);
	hash_remove(q, job);
	job_record_clear(&job->rec);
	free(job);
}

job_t *queue_peek(queue_model_t *m)
{
	return m->heap_len ? m->heap[0] : NULL;
}

job_t *queue_claim(queue_t *q, queue_model_t *m, uint32_t claim_timeout_s, rbuf_t *worker,
		   queue_time_t now)
{
	job_t *job = queue_peek(m);

	if (!job)
		return NULL;
	unindex(q, job);

	job->rec.state = JOB_RUNNING;
	id_new_v4(&job->rec.claim_id);
	job->rec.claimed_at = now.wall_ms;
	job->rec.claim_timeout = claim_timeout_s;
	lease_start(job, claim_timeout_s, now);
	rbuf_ref(worker);
	rbuf_unref(job->rec.worker);
	job->rec.worker = worker;

	reindex(q, job);
	return job;
}

/* ---- worker updates ---- */

/*
 * Returns 0 when claim_id may act on job: the current claim of a running
 * job, or the last claimant of a job sent back to pending by a lease
 * expiry. Release zeroes the claim and a new claim replaces it, so a
 * pending job keeps a claim id only after an expiry. A zero or NULL claim
 * id never matches. Otherwise returns INFERQ_ECONFLICT.
 */
static int claim_check(const job_t *job, const iq_id_t *claim_id)
{
	if (job_state_is_terminal(job->rec.state))
		return INFERQ_ECONFLICT;
	if (!claim_id || id_is_zero(claim_id) || !id_equal(&job->rec.claim_id, claim_id))
		return INFERQ_ECONFLICT;
	return 0;
}

/*
 * Computes info merged with patch into *out without touching job; *out is
 * NULL when patch is NULL. Returns 0 or INFERQ_ELIMIT when the result is
 * over max_info_bytes or max_depth.
 */
static int merge_info(const queue_t *q, const job_t *job, const json_span_t *patch, rbuf_t **out)
{
	const rbuf_t *info = job->rec.info;
	buf_t merged = BUF_INIT;
	int rc;

	*out = NULL;
	if (!patch)
		return 0;
	IQ_ASSERT(patch->type == JSON_TYPE_OBJECT);
	rc = json_merge_patch(info ? info->data : NULL, info ? info->len : 0, patch->start,
			      patch->len, q->config.max_depth, &merged);
	if (rc != 0)
		goto out;
	if (merged.len > q->config.max_info_bytes) {
		rc = INFERQ_ELIMIT;
		goto out;
	}
	*out = rbuf_from_buf(&merged);
out:
	buf_free(&merged);
	return rc;
}

/* Replaces the job's info with fresh when fresh is not NULL, consuming it. */
static void info_replace(job_t *job, rbuf_t *fresh)
{
	if (!fresh)
		return;
	rbuf_unref(job->rec.info);
	job->rec.info = fresh;
}

int queue_heartbeat(queue_t *q, job_t *job, const iq_id_t *claim_id, const json_span_t *info_patch,
		    queue_time_t now)
{
	rbuf_t *info;
	int rc = claim_check(job, claim_id);

	if (rc == 0)
		rc = merge_info(q, job, info_patch, &info);
	if (rc != 0)
		return rc;

	info_replace(job, info);
	unindex(q, job);
	job->rec.state = JOB_RUNNING;
	lease_start(job, job->rec.claim_timeout, now);
	reindex(q, job);
	return 0;
}

/* Moves job to a terminal state from running or (late) from pending. */
static void finish(queue_t *q, job_t *job, job_state_t state, queue_time_t now)
{
	unindex(q, job);
	job->rec.state = state;
	job->rec.done_at = now.wall_ms;
	lease_clear(job);
}

int queue_complete(queue_t *q, job_t *job, const iq_id_t *claim_id, rbuf_t *outputs,
		   const json_span_t *info_patch, queue_time_t now)
{
	rbuf_t *info;
	int rc = claim_check(job, claim_id);

	if (rc == 0)
		rc = merge_info(q, job, info_patch, &info);
	if (rc != 0)
		return rc;

	info_replace(job, info);
	finish(q, job, JOB_DONE, now);
	rbuf_ref(outputs);
	rbuf_unref(job->rec.outputs);
	job->rec.outputs = outputs;
	return 0;
}

int queue_fail(queue_t *q, job_t *job, const iq_id_t *claim_id, rbuf_t *error,
	       const json_span_t *info_patch, queue_time_t now)
{
	rbuf_t *info;
	int rc = claim_check(job, claim_id);

	if (rc == 0)
		rc = merge_info(q, job, info_patch, &info);
	if (rc != 0)
		return rc;

	info_replace(job, info);
	finish(q, job, JOB_FAILED, now);
	rbuf_ref(error);
	rbuf_unref(job->rec.error);
	job->rec.error = error;
	return 0;
}

int queue_release(queue_t *q, job_t *job, const iq_id_t *claim_id, const json_span_t *info_patch,
		  queue_time_t now)
{
	rbuf_t *info;
	int rc = claim_check(job, claim_id);

	if (rc == 0 && job->rec.state != JOB_RUNNING)
		rc = INFERQ_ECONFLICT;
	if (rc == 0)
		rc = merge_info(q, job, info_patch, &info);
	if (rc != 0)
		return rc;

	info_replace(job, info);
	unindex(q, job);
	job->rec.state = JOB_PENDING;
	memset(&job->rec.claim_id, 0, sizeof(job->rec.claim_id));
	lease_clear(job);
	reindex(q, job);
	return 0;
}

int queue_cancel(queue_t *q, job_t *job, queue_time_t now)
{
	if (job->rec.state != JOB_PENDING)
		return INFERQ_ECONFLICT;
	finish(q, job, JOB_CANCELED, now);
	return 0;
}

/* ---- lease expiry ---- */

int64_t queue_next_lease(queue_t *q)
{
	return q->lease_len ? q->lease_heap[0]->lease_mono : -1;
}

job_t *queue_lease_first(queue_t *q)
{
	return q->lease_len ? q->lease_heap[0] : NULL;
}

/*
 * Appends the elements of the retry_history array of the validated object
 * info, each followed by a comma, to out. A retry_history that is not an
 * array is dropped (the new array replaces it), since the server owns that
 * member and rejects patches that set it.
 */
static void copy_history(json_span_t info, buf_t *out)
{
	json_span_t history, entry;
	json_iter_t it;

	if (!json_object_find(info, "retry_history", &history) || history.type != JSON_TYPE_ARRAY)
		return;
	json_array_begin(&it, history);
	while (json_array_next(&it, &entry)) {
		buf_append(out, entry.start, entry.len);
		buf_putc(out, ',');
	}
}

/* Appends one retry_history entry for the lease of job that ended now. */
static void write_history_entry(const job_t *job, queue_time_t now, buf_t *out)
{
	char when[RFC3339_LEN + 1];

	buf_putc(out, '{');
	json_write_key(out, "attempt");
	buf_put_u64(out, (uint64_t)job->rec.retries + 1);
	if (job->rec.worker) {
		buf_putc(out, ',');
		json_write_key(out, "worker");
		json_write_string(out, job->rec.worker->data, job->rec.worker->len);
	}
	buf_putc(out, ',');
	json_write_key(out, "claimed_at");
	clock_format_rfc3339(job->rec.claimed_at, when);
	json_write_string(out, when, strlen(when));
	buf_putc(out, ',');
	json_write_key(out, "expired_at");
	clock_format_rfc3339(now.wall_ms, when);
	json_write_string(out, when, strlen(when));
	buf_putc(out, '}');
}

/* Fills *root and returns 1 when the job's info reads back as a JSON object. */
static int info_object(const job_t *job, json_span_t *root)
{
	const rbuf_t *info = job->rec.info;
	char id[ID_TEXT_LEN + 1];
	const char *reason;
	json_scan_error_t err;

	if (!info)
		return 0;
	if (json_validate(info->data, info->len, INFO_SCAN_DEPTH, root, &err) != 0) {
		reason = err.message;
	} else if (root->type != JSON_TYPE_OBJECT) {
		reason = "not an object";
	} else {
		return 1;
	}

	id_format(&job->rec.id, id);
	log_fields(LOG_WARN, "queue", "stored info is invalid; replacing it with only retry_history",
		   LOG_STR("request_id", id), LOG_STR("model", job->rec.model->data),
		   LOG_STR("reason", reason));
	return 0;
}

/*
 * Returns info with one more retry_history entry; the other members keep
 * their bytes. max_info_bytes does not apply, because losing the entry
 * would hide a retry. An info that does not read back as a JSON object
 * (the server validates info before storing it) is replaced by an object
 * holding only the history. Returns NULL, so info stays as it is, only if
 * the merge fails.
 */
static rbuf_t *info_with_history(const job_t *job, queue_time_t now)
{
	buf_t patch = BUF_INIT, merged = BUF_INIT;
	json_span_t root;
	int rc;

	buf_puts(&patch, "{\"retry_history\":[");
	if (info_object(job, &root))
		copy_history(root, &patch);
	else
		root.len = 0;
	write_history_entry(job, now, &patch);
	buf_puts(&patch, "]}");
	if (root.len == 0)
		return rbuf_from_buf(&patch);

	/*
	 * The result nests as deep as info or as the 3 levels of the history,
	 * and info passed validation at INFO_SCAN_DEPTH, so this limit holds.
	 */
	rc = json_merge_patch(root.start, root.len, patch.data, patch.len, INFO_SCAN_DEPTH,
			      &merged);
	buf_free(&patch);
	if (rc != 0) {
		char id[ID_TEXT_LEN + 1];

		id_format(&job->rec.id, id);
		log_fields(LOG_ERROR, "queue", "adding retry_history to info failed",
			   LOG_STR("request_id", id), LOG_STR("model", job->rec.model->data),
			   LOG_STR("error", inferq_strerror(rc)));
		buf_free(&merged);
		return NULL;
	}
	return rbuf_from_buf(&merged);
}

static rbuf_t *expiry_error(uint32_t retries, uint32_t max_retries)
{
	buf_t text = BUF_INIT;
	uint64_t deliveries = (uint64_t)retries + 1;

	if (max_retries == 0)
		buf_printf(&text, "claim timed out and retries are off (1 delivery, max_retries 0)");
	else
		buf_printf(&text,
			   "claim timed out after the last retry (%" PRIu64
			   " deliveries, max_retries %" PRIu32 ")",
			   deliveries, max_retries);
	return rbuf_from_buf(&text);
}

job_t *queue_expire_next(queue_t *q, queue_time_t now)
{
	job_t *job;

	if (q->lease_len == 0 || q->lease_heap[0]->lease_mono > now.mono_ms)
		return NULL;
	job = q->lease_heap[0];
	info_replace(job, info_with_history(job, now));

	unindex(q, job);
	lease_clear(job);
	if (job->rec.retries < q->config.max_retries) {
		/* claim_id stays, so the last claimant can still finish late. */
		job->rec.retries++;
		job->rec.state = JOB_PENDING;
	} else {
		rbuf_unref(job->rec.error);
		job->rec.error = expiry_error(job->rec.retries, q->config.max_retries);
		job->rec.state = JOB_FAILED;
		job->rec.done_at = now.wall_ms;
	}
	reindex(q, job);
	return job;
}

/* ---- undo ---- */

void queue_restore(queue_t *q, job_t *job, job_record_t *rec, queue_time_t now)
{
	IQ_ASSERT(rec->model != NULL && rec->model->len == job->model->name->len &&
		  memcmp(rec->model->data, job->model->name->data, rec->model->len) == 0);
	IQ_ASSERT(id_equal(&rec->id, &job->rec.id));

	unindex(q, job);
	job_record_clear(&job->rec);
	job->rec = *rec;
	memset(rec, 0, sizeof(*rec));
	job->lease_mono = 0;
	if (job->rec.state == JOB_RUNNING && job->rec.lease_expires_at != 0)
		job->lease_mono = lease_deadline(job->rec.lease_expires_at, now);
	reindex(q, job);
}

void queue_set_lease(queue_t *q, job_t *job, int64_t lease_mono)
{
	IQ_ASSERT(job->rec.state == JOB_RUNNING);
	unindex(q, job);
	job->lease_mono = lease_mono;
	reindex(q, job);
}

/* ---- self-check ---- */

static int check_fail(const char *what)
{
	log_error("queue", "index check failed: %s", what);
	return INFERQ_EINVAL;
}

static int check_heap(job_t **h, size_t len, enum heap_kind kind, const queue_model_t *m)
{
	for (size_t i = 0; i < len; i++) {
		if (heap_pos(h[i], kind) != i)
			return check_fail("a job's heap position differs from its slot");
		if (i > 0 && heap_before(h[i], h[(i - 1) / 2], kind))
			return check_fail("a heap is out of order");
		if (m && h[i]->model != m)
			return check_fail("a pending heap holds a job of another model");
	}
	return 0;
}

static int check_job(const queue_t *q, job_t *j)
{
	queue_model_t *m = j->model;
	int in_pending = j->pending_pos != JOB_NO_POS;
	int in_lease = j->lease_pos != JOB_NO_POS;

	if (in_pending && (j->pending_pos >= m->heap_len || m->heap[j->pending_pos] != j))
		return check_fail("pending_pos points at another job");
	if (in_lease && (j->lease_pos >= q->lease_len || q->lease_heap[j->lease_pos] != j))
		return check_fail("lease_pos points at another job");
	if (in_pending != (j->rec.state == JOB_PENDING))
		return check_fail("a job's pending heap membership differs from its state");
	if (in_lease != (j->rec.state == JOB_RUNNING && j->rec.lease_expires_at != 0))
		return check_fail("a job's lease heap membership differs from its state and lease");
	if (j->rec.model != m->name)
		return check_fail("a job's model name is not its model's");
	return 0;
}

/*
 * Counts running jobs per model by borrowing the running counters: each
 * running job takes one off its model, so every counter must end at zero.
 * The counters are put back before returning.
 */
static int check_running(queue_t *q)
{
	int rc = 0;

	for (size_t i = 0; i < ((size_t)1 << q->bucket_bits); i++) {
		for (job_t *j = q->buckets[i]; j; j = j->hash_next)
			j->model->running -= j->rec.state == JOB_RUNNING;
	}
	for (size_t i = 0; i < ((size_t)1 << q->model_bucket_bits); i++) {
		for (queue_model_t *m = q->model_buckets[i]; m; m = m->next) {
			if (m->running != 0 && rc == 0)
				rc = check_fail("a model's running count differs from its running jobs");
		}
	}
	for (size_t i = 0; i < ((size_t)1 << q->bucket_bits); i++) {
		for (job_t *j = q->buckets[i]; j; j = j->hash_next)
			j->model->running += j->rec.state == JOB_RUNNING;
	}
	return rc;
}

int queue_check(queue_t *q)
{
	size_t jobs = 0;
	int rc;

	for (size_t i = 0; i < ((size_t)1 << q->model_bucket_bits); i++) {
		for (queue_model_t *m = q->model_buckets[i]; m; m = m->next) {
			if (m->pending != m->heap_len)
				return check_fail("a model's pending count differs from its heap");
			rc = check_heap(m->heap, m->heap_len, HEAP_PENDING, m);
			if (rc != 0)
				return rc;
		}
	}
	rc = check_heap(q->lease_heap, q->lease_len, HEAP_LEASE, NULL);
	if (rc != 0)
		return rc;

	for (size_t i = 0; i < ((size_t)1 << q->bucket_bits); i++) {
		for (job_t *j = q->buckets[i]; j; j = j->hash_next) {
			if (id_bucket(&j->rec.id, q->bucket_bits) != i)
				return check_fail("a job is in the wrong hash bucket");
			rc = check_job(q, j);
			if (rc != 0)
				return rc;
			jobs++;
		}
	}
	if (jobs != q->job_count)
		return check_fail("the job count differs from the hash contents");
	return check_running(q);
}
