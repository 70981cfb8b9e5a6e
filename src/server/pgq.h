/*
 * The queue on PostgreSQL, for `inferq serve --store postgres://...`: the
 * database decides every claim and change, so several nodes can share one
 * queue (docs/scale-out.md). server_t.pg is NULL with the local store, and
 * nothing here runs then. Every response to a change is sent from the
 * callback of its database task, that is after its commit.
 *
 * All functions run on the loop thread.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef INFERQ_PGQ_H
#define INFERQ_PGQ_H

#include <libpq-fe.h>

#include "json.h"
#include "pg_pool.h"
#include "server.h"
#include "storage.h"

#define PGQ_CHANNEL "inferq_jobs" /* NOTIFY channel; the payload is a model name */

/* The columns every job query returns, in the order pgq_row_record reads them. */
#define PGQ_JOB_COLUMNS                                                                         \
	"id, seq, model, priority, state, retries, created_at, claimed_at, done_at, "           \
	"lease_expires_at, claim_timeout, claim_id, worker, payload, info, outputs, "    \
	"error, warnings"
#define PGQ_JOB_COLUMN_COUNT 18
/* PGQ_JOB_COLUMNS and the history, for the admin views (pgq_row_record_history). */
#define PGQ_VIEW_COLUMNS PGQ_JOB_COLUMNS ", history"

typedef struct pgq pgq_t;
typedef void (*route_handler_fn)(server_t *s, http_request_t *req);

/* Returns 1 when store names PostgreSQL ("postgres://", "postgresql://"). */
int pgq_is_postgres(const char *store);

typedef struct pgq_start pgq_start_t;

/*
 * Start, part 1, before auth_open: connects (blocking; the loop does not
 * serve yet), takes the migration lock, which orders nodes that start at
 * once, applies the migrations, and sets s->keys_shared when the database
 * holds API keys (so this node creates no admin key of its own). Returns
 * 0 with *out set, or INFERQ_EIO after logging an error that names the
 * database and the fix.
 */
int pgq_prepare(server_t *s, pgq_start_t **out);

/*
 * Start, part 2, after auth_open and engine_init: pushes this node's API
 * keys, pulls the others', releases the lock, then opens the connection
 * pool, the sweep timer and the LISTEN connection, and sets s->pg.
 * Consumes start. Returns 0, or INFERQ_EIO after logging the error.
 */
int pgq_open(server_t *s, pgq_start_t *start);

/* Releases a start that pgq_open will not get. Accepts NULL. */
void pgq_start_abort(pgq_start_t *start);

/*
 * Tells the waiters that a committed change made a job of model pending:
 * this node's waiters at once, the other nodes' through a NOTIFY hint sent
 * after the commit (pg_pool_hint), never inside the change's transaction.
 */
void pgq_job_added(server_t *s, const char *model);

/* Sends "no job" to every long-poll claim waiting on this node (at stop). */
void pgq_flush_waiters(server_t *s);

/* Stops the timers and closes the pool; the loop must run afterwards. Accepts s->pg NULL. */
void pgq_close(server_t *s);

/*
 * Returns the PostgreSQL handler that replaces route handler local, or
 * NULL when the route works the same on both stores.
 */
route_handler_fn pgq_route(route_handler_fn local);

/* Runs a task on s->pg's pool (pg_pool_exec). */
void pgq_exec(server_t *s, const pg_stmt_t *stmts, int count, pg_task_cb cb, void *ctx);
/* The same as an ordered task: it commits after every ordered task given before it. */
void pgq_exec_ordered(server_t *s, const pg_stmt_t *stmts, int count, pg_task_cb cb, void *ctx);
/* The same for a task no request waits for, outside --max-pending-changes (PG_TASK_BACKGROUND). */
void pgq_exec_background(server_t *s, const pg_stmt_t *stmts, int count, pg_task_cb cb,
			 void *ctx);

/*
 * Feeds a committed change to the metrics and the debug log (observe.h):
 * kind STORE_OP_INSERT or STORE_OP_UPDATE, cause an OBSERVE_CAUSE_*, prev
 * the state before. rec is borrowed.
 */
void pgq_observe(server_t *s, const job_record_t *rec, store_op_kind_t kind, int cause,
		 job_state_t prev);

/* Fills rec from row of a result with PGQ_JOB_COLUMNS; clear it with job_record_clear. */
void pgq_row_record(const PGresult *res, int row, job_record_t *rec);
/* The same for a result with PGQ_VIEW_COLUMNS, history included. */
void pgq_row_record_history(const PGresult *res, int row, job_record_t *rec);

/*
 * Sends the 503 for a failed task (rc and err from its callback), with
 * Retry-After, naming the database.
 */
void pgq_respond_unavailable(server_t *s, http_request_t *req, int rc, const char *err);

/* Sets param i of st to the NUL-terminated text v (NULL = SQL NULL). */
void pgq_param(pg_stmt_t *st, int i, const char *v);
/* Sets param i of st to v[0..len). */
void pgq_param_len(pg_stmt_t *st, int i, const char *v, size_t len);

/* Calls fn with the model of each long-poll claim waiting on this node, oldest first. */
void pgq_waiters_each(server_t *s, void (*fn)(void *ctx, const char *model), void *ctx);

/* Parks req as a long-poll claim on model for wait_ms; the params' worker is copied. */
void pgq_wait(server_t *s, const char *model, size_t model_len, const claim_params_t *p,
	      int64_t wait_ms, http_request_t *req);

/*
 * Starts a claim of the next job of model for req. When it took a job it
 * sends the 200 (with warnings, a JSON array or NULL), or, when the client
 * is gone by then, gives the jobs back (pgq_give_back, which responds to
 * req), and calls done(ctx, 1, 0, NULL). Otherwise it sends nothing and calls
 * done(ctx, 0, rc, err) with rc 0 (no pending job) or the failure
 * (INFERQ_EIO, INFERQ_EBUSY). Copies what it needs from p and warnings.
 */
void pgq_claim(server_t *s, const char *model, size_t model_len, const claim_params_t *p,
	       http_request_t *req, const buf_t *warnings,
	       void (*done)(void *ctx, int claimed, int rc, const char *err), void *ctx);

/*
 * Claims the next job of model for req in p->format, waiting up to wait_ms
 * (0: answer at once) for one: 200 with the job, else 204 (native) or
 * {"data":null} (Sprocket), or 503. Copies what it needs.
 */
void pgq_claim_route(server_t *s, http_request_t *req, const char *model, size_t model_len,
		     const claim_params_t *p, int64_t wait_ms, const buf_t *warnings);

/*
 * Applies a Sprocket status update (op HEARTBEAT for running, COMPLETE
 * with result = outputs, FAIL with result = error text) to the job under
 * whatever claim it holds: accepted while running or pending after a lease
 * expiry with no claim since, 409 otherwise. info is the patch or NULL.
 */
void pgq_sprocket_update(server_t *s, http_request_t *req, int op, const buf_t *model,
			 const iq_id_t *id, const char *result, size_t result_len,
			 const json_span_t *info, const buf_t *warnings);

/* The worker calls fenced by claim_id. */
typedef enum { PG_FENCE_HEARTBEAT, PG_FENCE_COMPLETE, PG_FENCE_FAIL, PG_FENCE_RELEASE } pg_fence_t;

/*
 * pg_fence.c: validates a heartbeat, complete, fail or release and runs
 * it against the database, answering req from the task's callback.
 */
void pg_fence(server_t *s, http_request_t *req, pg_fence_t op);

/*
 * Gives back the count jobs of recs, which a claim of req took but cannot
 * send because the client closed its connection or ended its side of it.
 * Each job goes back to pending with the release statement, fenced on its
 * claim id, so a job that changed since stays as it is. Its history gets
 * "released" with CLAIM_GIVE_BACK_DETAIL and retries stay unchanged. Once
 * the database is done, sends req the no-job response of format, which a
 * client that only half-closed can still read. Copies what it needs from
 * recs.
 */
void pgq_give_back(server_t *s, http_request_t *req, claim_format_t format,
		   const job_record_t *recs, int count);

/* pgq_keys.c: API keys shared through table inferq_api_keys. */

/* At start: merges every key of the database into the key table; sets *version. */
int pgq_keys_pull_start(server_t *s, PGconn *pg, int64_t *version, char *err, size_t len);
/* At start: saves every key of the key table in the database. */
int pgq_keys_push_start(server_t *s, PGconn *pg, char *err, size_t len);
/* Saves the committed key change op (KEY_PUT, KEY_REVOKE, KEY_USED) in the database. */
void pgq_key_committed(server_t *s, const store_op_t *op);
/* Merges the key changes after *version; *busy is 1 while a pull is in flight. */
void pgq_keys_pull(server_t *s, int64_t *version, int *busy);

/* pg_storage.c: output files on the postgres store (docs/scale-out.md). */

/*
 * Reads the upload signing secret from table inferq_settings over the
 * start-up connection pg, creating it first when no node has. Returns 0,
 * or INFERQ_EIO with the cause in err.
 */
int pgq_storage_secret_load(PGconn *pg, uint8_t secret[STORAGE_SECRET_BYTES], char *err,
			    size_t errlen);

/* Returns the upload signing secret pgq_prepare read, for storage_open. */
const uint8_t *pgq_start_storage_secret(const pgq_start_t *start);

/*
 * Receives the job that owns a file: rc 0 with its model (borrowed) and
 * state, INFERQ_ENOTFOUND when there is no such job, or a failure for
 * pgq_respond_unavailable with err.
 */
typedef void (*pgq_file_job_cb)(void *ctx, int rc, const char *model, size_t model_len,
				job_state_t state, const char *err);

/*
 * Looks up job id, the owner of a file. With register_name, and the job
 * not finished, the same statement adds that file's row to inferq_files
 * (kept when it exists), so the row exists before an upload writes bytes.
 */
void pgq_file_job(server_t *s, const iq_id_t *id, const char *register_name,
		  pgq_file_job_cb cb, void *ctx);

/*
 * Records the size of the uploaded file name. cb gets rc 0, INFERQ_ENOTFOUND
 * when its job was deleted meanwhile (the caller then unlinks the file),
 * or a failure for pgq_respond_unavailable.
 */
void pgq_file_stored(server_t *s, const char *name, uint64_t size,
		     void (*cb)(void *ctx, int rc, const char *err), void *ctx);

/*
 * Unlinks the files named in result names (one column, from
 * PG_SQL_ORPHAN_FILES) on the thread pool, then deletes their rows. *busy
 * is 1 until that is done; a call while busy does nothing.
 */
void pgq_files_forget(server_t *s, const PGresult *names, int *busy);

/* pg_batch.c: the batch routes of the postgres store. */
void pg_handle_submit_batch(server_t *s, http_request_t *req);
void pg_handle_complete_batch(server_t *s, http_request_t *req);

/* pg_client.c and pg_worker.c: the route handlers of the postgres store. */
void pg_handle_submit(server_t *s, http_request_t *req);
void pg_handle_status(server_t *s, http_request_t *req);
void pg_handle_cancel(server_t *s, http_request_t *req);
void pg_handle_metrics(server_t *s, http_request_t *req);
void pg_handle_clear(server_t *s, http_request_t *req);
void pg_handle_readyz(server_t *s, http_request_t *req);
void pg_handle_claim(server_t *s, http_request_t *req);
void pg_handle_heartbeat(server_t *s, http_request_t *req);
void pg_handle_complete(server_t *s, http_request_t *req);
void pg_handle_fail(server_t *s, http_request_t *req);
void pg_handle_release(server_t *s, http_request_t *req);

/* pg_views.c: the admin views of the postgres store. */
void pg_handle_admin_jobs(server_t *s, http_request_t *req);
void pg_handle_admin_job(server_t *s, http_request_t *req);
void pg_handle_admin_queues(server_t *s, http_request_t *req);
void pg_handle_admin_workers(server_t *s, http_request_t *req);

#endif
