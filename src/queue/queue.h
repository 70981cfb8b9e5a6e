/*
 * The queue engine: every non-terminal job in memory, indexed for the job
 * rules, with no I/O and no clock of its own (callers pass the time in), so
 * unit tests drive it with a fake clock.
 *
 * Indexes: a hash by job id; per model a binary heap of pending jobs ordered
 * by priority (higher first) then seq (lower first); one heap of running
 * jobs ordered by lease deadline on the monotonic clock. Claims, cancels
 * and expiries are O(log n) in the number of jobs; nothing scans.
 *
 * Ownership: the queue owns every job added to it and every model it
 * creates. Terminal jobs stay in the indexes' hash (not in the heaps) until
 * the caller drops them with queue_drop(), once the store has committed
 * their final state. Single-threaded: the server calls it from the loop
 * thread only.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef INFERQ_QUEUE_H
#define INFERQ_QUEUE_H

#include <stddef.h>
#include <stdint.h>

#include "job.h"
#include "json.h"

typedef struct queue queue_t;

/* Now, on both clocks: wall for stored timestamps, mono for leases. */
typedef struct {
	int64_t wall_ms; /* ms since epoch */
	int64_t mono_ms; /* ms on the monotonic clock */
} queue_time_t;

typedef struct {
	uint32_t max_retries;    /* expiries retried before the job fails; default 3 */
	size_t max_info_bytes;   /* limit on info after a merge patch; default 64 KiB */
	int max_depth;           /* JSON nesting limit for info after a merge; default 64 */
} queue_config_t;

typedef struct queue_model {
	rbuf_t *name;
	uint64_t pending; /* jobs in state pending, in memory */
	uint64_t running; /* jobs in state running, in memory */
	void *user;       /* free for the server (its waiter list); the queue never reads it */
	/* private to queue.c below */
	struct job **heap;
	size_t heap_len, heap_cap;
	struct queue_model *next;
} queue_model_t;

/*
 * Heap position of a job in no heap. A heap holds fewer jobs than this
 * (asserted): at 200 bytes or more per job, memory ends long before.
 */
#define JOB_NO_POS 0x7fffffffu

/*
 * One job in memory: 216 bytes on x86-64, so that with glibc's 8 bytes of
 * chunk header it takes a 224-byte chunk. Fields are ordered to leave no
 * padding, and the heap positions are 32 bits, to keep pending jobs small.
 */
typedef struct job {
	job_record_t rec;
	queue_model_t *model;
	int64_t lease_mono;      /* monotonic ms when the lease ends, 0 = no lease */
	uint32_t pending_pos;    /* index in model->heap, or JOB_NO_POS */
	uint32_t lease_pos : 31; /* index in the lease heap, or JOB_NO_POS */

	/* Owned by the server's commit logic; the queue never reads them. */
	uint32_t uncommitted_insert : 1; /* submitted, and the insert is not committed yet */
	struct job *hash_next;
	uint64_t dirty_batch;    /* batch with the latest uncommitted change, 0 = clean */
	/*
	 * Last committed record while dirty, NULL when clean. The server
	 * allocates it with room after the record for the lease_mono that goes
	 * with it (engine.c).
	 */
	job_record_t *committed;
} job_t;

/*
 * Returns an empty queue. config NULL means every default; in a config,
 * max_info_bytes 0 and max_depth 0 also mean the default, and max_retries
 * is used as given (0: a job fails at its first lease expiry).
 */
queue_t *queue_new(const queue_config_t *config);
/*
 * Frees every job and model. Accepts NULL. It does not free job->committed,
 * which belongs to the server.
 */
void queue_free(queue_t *q);

/*
 * Returns the model called name[0..len), creating it when create is set
 * (else NULL when it is unknown). A model stays allocated, with zero
 * counts, after its last job leaves.
 */
queue_model_t *queue_model_get(queue_t *q, const char *name, size_t len, int create);
/* Calls fn for each model, in no set order; fn must not create models. */
void queue_model_each(queue_t *q, void (*fn)(queue_model_t *m, void *ctx), void *ctx);

/*
 * Calls fn for each pending job of m, in no set order; fn must not change
 * the queue. O(pending jobs of m): for admin views, not the request path.
 */
void queue_pending_each(queue_model_t *m, void (*fn)(const job_t *job, void *ctx), void *ctx);

/* Returns a zeroed job with pending_pos and lease_pos set to SIZE_MAX. */
job_t *queue_job_new(void);

/*
 * Adds a pending or running job (a new submit, or a row loaded from the
 * store at start) to the indexes and takes ownership of it. job->rec must
 * be complete and its id new to the queue; job->rec.model names the model
 * (created as needed) and is replaced by a reference to the model's own
 * name. A terminal job goes into the hash only. For a
 * running job the lease deadline is placed on the monotonic clock as
 * now.mono_ms + (rec.lease_expires_at - now.wall_ms), so a lease that ran
 * out while the server was down expires at the first queue_expire_next().
 */
void queue_add(queue_t *q, job_t *job, queue_time_t now);

/* Returns the job with this id, or NULL. */
job_t *queue_find(queue_t *q, const iq_id_t *id);

/*
 * Removes job from every index and frees it with its record. The caller
 * frees job->committed first when it is set.
 */
void queue_drop(queue_t *q, job_t *job);

/* Returns the pending job a claim of model m would take next, or NULL. */
job_t *queue_peek(queue_model_t *m);

/*
 * Claims the next pending job of m: state running, a new claim_id, claimed_at
 * = now, a lease of claim_timeout_s seconds, worker recorded (reference
 * added; NULL allowed). claim_timeout_s 0 means no lease: the job runs
 * until it is completed, failed or released, and heartbeats keep it so.
 * Returns the job, or NULL when m has none pending.
 */
job_t *queue_claim(queue_t *q, queue_model_t *m, uint32_t claim_timeout_s, rbuf_t *worker,
		   queue_time_t now);

/*
 * Worker updates, fenced by claim_id. Each accepts the current claim of a
 * running job, and also the last claimant of a job that went back to
 * pending through a lease expiry with no claim since (late completion).
 * info_patch, when not NULL, is a validated JSON object merged into info
 * (RFC 7386). Each returns 0; INFERQ_ECONFLICT when the job is terminal,
 * the claim is not current, or (release) the job is not running;
 * INFERQ_ELIMIT when info would exceed max_info_bytes or max_depth. On any
 * error the job is unchanged.
 *
 * heartbeat: extends the lease by the claim's claim_timeout from now; a
 *   late heartbeat takes the job back to running under the same claim with
 *   retries and history unchanged.
 * complete: state done, outputs (reference added), done_at, lease cleared.
 * fail: state failed, error text (reference added), done_at, lease cleared;
 *   never retried.
 * release: back to pending in its original place, retries unchanged, the
 *   claim cleared so the releasing worker can no longer complete it.
 */
int queue_heartbeat(queue_t *q, job_t *job, const iq_id_t *claim_id, const json_span_t *info_patch,
		    queue_time_t now);
int queue_complete(queue_t *q, job_t *job, const iq_id_t *claim_id, rbuf_t *outputs,
		   const json_span_t *info_patch, queue_time_t now);
int queue_fail(queue_t *q, job_t *job, const iq_id_t *claim_id, rbuf_t *error,
	       const json_span_t *info_patch, queue_time_t now);
int queue_release(queue_t *q, job_t *job, const iq_id_t *claim_id, const json_span_t *info_patch,
		  queue_time_t now);

/* Cancels a pending job (done_at = now); INFERQ_ECONFLICT in any other state. */
int queue_cancel(queue_t *q, job_t *job, queue_time_t now);

/* Returns the earliest lease deadline (monotonic ms), or -1 when no job runs. */
int64_t queue_next_lease(queue_t *q);

/* Returns the running job whose lease ends first, or NULL when no job runs. */
job_t *queue_lease_first(queue_t *q);

/*
 * When the earliest lease ended at or before now.mono_ms, applies the expiry
 * rule to that job and returns it; else returns NULL. The rule: append
 * {"attempt", "worker", "claimed_at", "expired_at"} to info.retry_history
 * (attempt = retries + 1, times as RFC 3339); then if retries < max_retries,
 * retries += 1 and the job goes back to pending in its original place,
 * keeping its claim_id for the late-completion rule; else the job fails with
 * an error saying the claim timed out after the last retry, retries
 * unchanged. The history entry is added even when info would pass
 * max_info_bytes, because losing it would hide a retry.
 */
job_t *queue_expire_next(queue_t *q, queue_time_t now);

/*
 * Puts job back to the state in rec (an earlier copy of job->rec, as taken
 * for undo), fixing its place in every index and the model counters. A
 * running job gets its monotonic lease deadline from rec.lease_expires_at
 * as in queue_add(). Consumes rec's references and zeroes *rec.
 */
void queue_restore(queue_t *q, job_t *job, job_record_t *rec, queue_time_t now);

/*
 * Sets the monotonic lease deadline of a running job and fixes its place in
 * the lease heap. Undo uses it to put back the exact deadline, because one
 * rebuilt from the wall clock would move when that clock jumped.
 */
void queue_set_lease(queue_t *q, job_t *job, int64_t lease_mono);

/*
 * Checks every index invariant: heap order and stored positions, heap
 * membership against each job's state, per-model counters, the hash.
 * Returns 0, or INFERQ_EINVAL after logging the first broken invariant.
 * O(n); for tests and debugging. It changes nothing, but borrows the
 * running counters while it counts.
 */
int queue_check(queue_t *q);

#endif
