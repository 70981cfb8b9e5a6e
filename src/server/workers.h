/*
 * The workers this server has seen, for GET /v1/admin/workers: in memory
 * and per node, so a restart or another node starts with none. A worker is
 * identified by the claimant label its jobs carry (job_record_t.worker),
 * which is the claim's "worker" field or Sprocket's "HOST (VERSION)".
 * Claims without one are grouped as "(anonymous)". Job counters and the current jobs
 * change only when a change commits, so the view never shows a claim that
 * could still be rolled back.
 *
 * Bounds: at most max_tracked workers (the least recently seen is evicted
 * to make room), and a worker not seen for forget_ms is dropped at the next
 * view or new worker. Lookups are O(1) by label; eviction and the view are
 * O(n) in the workers tracked. Loop thread only.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef INFERQ_WORKERS_H
#define INFERQ_WORKERS_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "history.h"
#include "job.h"

#define WORKERS_ANONYMOUS "(anonymous)"
#define WORKERS_VERSION_MAX 64 /* bytes of a version kept; longer ones are cut */

typedef struct workers workers_t;

/* Returns an empty registry with the bounds described above (max_tracked >= 1). */
workers_t *workers_new(uint32_t max_tracked, int64_t forget_ms);
/* Frees the registry and every worker in it; accepts NULL. */
void workers_free(workers_t *w);

/*
 * Records a request from a worker (a claim or a Sprocket retrieve, with or
 * without a job): label[0..label_len) is the claimant label its jobs will
 * carry (empty for none), name the name to show (empty: the label), and
 * version the x-worker-version header or NULL. Sets last_seen to now_ms
 * (ms since the epoch); a new worker also gets first_seen.
 */
void workers_seen(workers_t *w, const char *label, size_t label_len, const char *name,
		  size_t name_len, const char *version, size_t version_len, int64_t now_ms);

/*
 * Applies one committed change of a job to its claimant (rec->worker):
 * claimed adds the job to its current jobs, completed, failed, released and
 * expired remove it and count; a heartbeat (HISTORY_NONE on a running job)
 * only marks the worker seen. An expiry never marks the worker seen, and
 * is ignored for a worker no longer tracked.
 */
void workers_record(workers_t *w, history_event_t event, const job_record_t *rec,
		    int64_t now_ms);

/*
 * Adds a job that was running when the server started to its claimant's
 * current jobs; the worker counts as seen at the job's claimed_at.
 */
void workers_restore_running(workers_t *w, const job_record_t *rec);

/*
 * Replaces the current jobs of every tracked worker with the jobs of
 * running[0..n) that name it, in that order, and adds each claimant not
 * tracked yet as workers_restore_running does. The postgres store calls it
 * with the running jobs of the whole cluster before each view.
 */
void workers_set_running(workers_t *w, const job_record_t *running, size_t n);

/* Returns how many workers are tracked (forgotten ones may still count until the next view). */
size_t workers_count(const workers_t *w);

/*
 * Drops workers not seen since now_ms - forget_ms, then appends
 * {"data":[worker, ...]} to out, the most recently seen first.
 */
void workers_render(workers_t *w, buf_t *out, int64_t now_ms);

#endif
