/*
 * The server context shared by the route handlers and the commit engine.
 * One loop thread owns all of it; the store's writer thread sees only the
 * batches handed to it.
 *
 * Commit rule: a handler applies its change to the in-memory queue at once
 * (so the next request sees it and two claims never take the same job),
 * records a store operation in the collecting batch, and registers its
 * response with engine_reply_after_commit(). Responses are sent only after
 * the batch commits; if a commit fails, every uncommitted change is undone
 * and those requests get 503. Reads show committed state only: a job with
 * an uncommitted change is read from its committed image.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef INFERQ_SERVER_H
#define INFERQ_SERVER_H

#include <stdint.h>
#include <uv.h>

#include "buf.h"
#include "config.h"
#include "http.h"
#include "idempotency.h"
#include "queue.h"
#include "store.h"
#include "workers.h"

typedef struct auth auth_t;
typedef struct observe observe_t;
typedef struct reply reply_t;
typedef struct waiter waiter_t;
typedef struct claim_grant claim_grant_t;

/* Per-model state of the server, hung on queue_model_t.user. */
typedef struct {
	uint64_t committed[JOB_STATE_COUNT]; /* committed jobs in memory by state (pending, running) */
	waiter_t *waiters_head;               /* long-poll claims, oldest first */
	waiter_t *waiters_tail;
	uint32_t pg_waiters;                  /* postgres store: this node's long-poll claims */
	/* Committed changes since the process started, for GET /v1/admin/queues. */
	uint64_t submitted_total;
	uint64_t completed_total;
	uint64_t failed_total;
	struct metrics_model *metrics;        /* this model's metrics series, set at first use */
} model_state_t;

/* A store batch with the responses that wait for its commit. */
typedef struct {
	store_batch_t batch;
	reply_t *replies_head;
	reply_t *replies_tail;
	uint64_t handed_ns; /* uv_hrtime() when it was handed to the store */
	/*
	 * In flight, but an earlier batch failed. Its changes are rolled back,
	 * its requests got 503 already, and the store will not run it.
	 */
	int abandoned;
} pending_batch_t;

typedef struct server {
	uv_loop_t *loop;
	serve_config_t config;
	queue_t *queue;
	store_t *store;
	http_server_t *http;        /* --listen: HTTPS when TLS is on and --tls-listen is not set */
	http_server_t *https;       /* --tls-listen, or NULL */
	int listeners_open;         /* http servers started and not yet closed */
	tls_context_t *tls;         /* --tls-cert and --tls-key, or NULL */
	idempotency_t *idempotency; /* keyed submits not committed yet */
	auth_t *auth;               /* API keys and the failure limiter (auth.h) */
	struct storage *storage;    /* output files of Sprocket workers (storage.h) */
	workers_t *workers;         /* workers seen, for GET /v1/admin/workers (workers.h) */
	observe_t *observe;         /* metrics and the metrics listener (observe.h) */
	struct status_cache *status_cache; /* finished jobs' status bodies (status_cache.h) */
	struct pgq *pg;             /* the queue on PostgreSQL (pgq.h), or NULL: local store */
	int keys_shared;            /* the postgres store holds API keys: make no admin key */

	uint64_t next_seq;      /* seq of the next submitted job */
	uint64_t next_batch_id; /* id of the next collecting batch; starts at 1 */
	pending_batch_t batches[STORE_MAX_IN_FLIGHT + 1];
	pending_batch_t *collecting; /* changes of this loop pass */
	/* Handed to the store, oldest first; the store commits them in this order. */
	pending_batch_t *inflight[STORE_MAX_IN_FLIGHT];
	size_t n_inflight;

	uv_check_t flush_check;
	uv_idle_t flush_idle; /* active while changes wait and the store takes a batch */
	uv_timer_t lease_timer;
	uv_timer_t retention_timer;
	uv_signal_t sigint, sigterm;
	uv_signal_t sighup; /* rereads the TLS certificate */
	int stopping;
	int exit_code;
	int64_t overload_logged_ms; /* monotonic ms of the last overload warning */
} server_t;

/* The time now on both clocks. */
queue_time_t server_now(void);

/* Returns the server state of model m, creating it on first use. */
model_state_t *server_model_state(queue_model_t *m);

/* engine.c: the commit pipeline. */

/* Sets up the batches, the flush hook and the timers. Loop thread. */
void engine_init(server_t *s);
/* Closes the engine's handles; the loop must run afterwards to finish. */
void engine_close(server_t *s);

/*
 * Records the committed image of job before its first uncommitted change.
 * Call before every queue_* call that mutates job.
 */
void engine_touch(server_t *s, job_t *job);
/* Forgets the image engine_touch took when the change did not happen after all. */
void engine_untouch(server_t *s, job_t *job);
/* Records that a new job was added to the queue: its insert goes into the batch. */
void engine_record_insert(server_t *s, job_t *job);
/* Records a change of job (made after engine_touch) whose state before was prev. */
void engine_record_update(server_t *s, job_t *job, job_state_t prev);
/* Records a claim of job (pending before); the same as engine_record_update, counted as a claim. */
void engine_record_claim(server_t *s, job_t *job);
/*
 * Records the give-back of job (running before, released by queue_release)
 * whose claim response could not be sent: a "released" history event with
 * CLAIM_GIVE_BACK_DETAIL, counted apart from the releases of workers.
 */
void engine_record_give_back(server_t *s, job_t *job);

/*
 * Sends status and body (taken over) to req once every change recorded so far
 * is committed; if the commit fails, sends 503 instead.
 */
void engine_reply_after_commit(server_t *s, http_request_t *req, int status, buf_t *body);

/*
 * The same for the 200 of a claim that took the jobs in grant (taken over).
 * When the client is gone by the time the response would be sent
 * (http_request_is_orphaned), claim_give_back runs instead of the send.
 */
void engine_reply_claim_after_commit(server_t *s, http_request_t *req, buf_t *body,
				     claim_grant_t *grant);

/*
 * Hands the changes recorded so far to the store when its writer waits for
 * work, instead of at the end of the loop pass. Called after each request's
 * handler, so the writer commits the first requests of a burst while the
 * loop parses the rest.
 */
void engine_request_done(server_t *s);

/* Returns the committed record of job, or NULL when its insert is not committed. */
const job_record_t *engine_committed_record(const job_t *job);

/* Re-arms the lease timer for the earliest lease. */
void engine_arm_lease_timer(server_t *s);

/* Returns 1 while a batch is in flight or changes wait to be committed. */
int engine_busy(const server_t *s);

/*
 * Returns 1 when more changes wait for the disk than --max-pending-changes:
 * the store has fallen behind and new work should be refused with 503.
 */
int engine_overloaded(server_t *s);

/* claim.c: claims, shared by the claim route and the long-poll waiters. */

/* Response shape of a claim: the native route's, or Sprocket's retrieve. */
typedef enum {
	CLAIM_FORMAT_NATIVE = 0,   /* the job object; 204 when no job */
	CLAIM_FORMAT_SPROCKET = 1, /* {"data": job object}; 200 {"data":null} when no job */
	CLAIM_FORMAT_LIST = 2,     /* {"data": [job object, ...]} of up to max_jobs; 204 when none */
} claim_format_t;

typedef struct {
	uint32_t claim_timeout; /* s, 0 = no lease */
	rbuf_t *worker;         /* or NULL */
	claim_format_t format;
	uint32_t max_jobs; /* jobs one claim takes with CLAIM_FORMAT_LIST; the others take 1 */
} claim_params_t;

/*
 * Claims the next job of m for req (with CLAIM_FORMAT_LIST the next
 * p->max_jobs at most, in priority then FIFO order, each with its own claim
 * id and lease) and queues the 200 response, shaped by p->format, for after
 * the commit, with warnings (a JSON array, or NULL) added to the response
 * object. When the client is gone by then, the jobs are given back instead
 * (claim_give_back). Returns 1 when a job was claimed, 0 when none is
 * pending.
 */
int claim_next(server_t *s, queue_model_t *m, const claim_params_t *p, http_request_t *req,
	       const buf_t *warnings);

/*
 * Parks req as a long-poll waiter on m for wait_ms; it takes over p->worker.
 * A waiter whose client closes its connection or its side of it gets the
 * no-job response at once. A client already at EOF gets it now, unparked,
 * and p->worker then stays with the caller.
 */
void claim_wait(server_t *s, queue_model_t *m, claim_params_t *p, int64_t wait_ms,
		http_request_t *req);

/*
 * The history detail of a job given back because its claim response could
 * not be sent. Both stores write it.
 */
#define CLAIM_GIVE_BACK_DETAIL                                                                  \
	"given back because the client closed its connection before the claim response was sent"

/*
 * Gives back the jobs of grant, whose claim response cannot be sent to req
 * because the client closed its connection or ended its side of it. Each
 * job that still runs under its claim from grant goes back to pending in
 * its original place, as a release does, with retries unchanged. Then
 * queues the no-job response to req for after the commit, which a client
 * that only half-closed can still read. Takes over grant.
 */
void claim_give_back(server_t *s, http_request_t *req, claim_grant_t *grant);

/* Frees grant. Accepts NULL. */
void claim_grant_free(claim_grant_t *grant);

/* Sends the no-job response of format: 204, or Sprocket's 200 {"data":null}. */
void claim_respond_no_job(http_request_t *req, claim_format_t format);

/* Hands pending jobs of m to its long-poll waiters, oldest waiter first. */
void claim_dispatch_waiters(server_t *s, queue_model_t *m);

/* Sends the no-job response (204, or Sprocket's {"data":null}) to every long-poll waiter. */
void claim_flush_waiters(server_t *s);

/* Returns how many long-poll claims wait on the model of ms. O(waiters). */
size_t claim_waiter_count(const model_state_t *ms);

#endif
