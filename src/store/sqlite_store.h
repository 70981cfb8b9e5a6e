/*
 * Internals of the local store backend, shared by sqlite.c (data dir, lock,
 * read connection, the loop-thread side) and sqlite_writer.c (schema, write
 * connection, writer thread). Nothing outside src/store includes this file.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef INFERQ_SQLITE_STORE_H
#define INFERQ_SQLITE_STORE_H

#include <pthread.h>
#include <stdatomic.h>
#include <sqlite3.h>
#include <stdint.h>
#include <uv.h>

#include "store.h"

/* Columns of jobs in the order of JOB_COLUMNS. Statement parameter ?N binds column N - 1. */
enum {
	COL_SEQ,
	COL_ID,
	COL_MODEL,
	COL_PRIORITY,
	COL_STATE,
	COL_RETRIES,
	COL_CREATED_AT,
	COL_CLAIMED_AT,
	COL_DONE_AT,
	COL_LEASE_EXPIRES_AT,
	COL_CLAIM_TIMEOUT,
	COL_CLAIM_ID,
	COL_WORKER,
	COL_PAYLOAD,
	COL_INFO,
	COL_OUTPUTS,
	COL_ERROR,
	COL_WARNINGS,
	COL_IDEMPOTENCY_KEY, /* written by inserts only; not in JOB_COLUMNS */
	COL_BODY_HASH,
	COL_HISTORY, /* schema version 4 */
};

#define PARAM(col) ((col) + 1)

#define JOB_COLUMNS                                                                                \
	"seq, id, model, priority, state, retries, created_at, claimed_at, done_at, "              \
	"lease_expires_at, claim_timeout, claim_id, worker, payload, info, outputs, error, "       \
	"warnings"

/*
 * The columns an insert writes and a row read returns: JOB_COLUMNS, the
 * submit's idempotency key (which read_row leaves out of the record) and
 * the history.
 */
#define INSERT_COLUMNS JOB_COLUMNS ", idempotency_key, body_hash, history"

/* A change of the number of jobs of one model in one state (sqlite_counts.c). */
typedef struct {
	const char *model; /* borrowed from the batch being run */
	size_t len;
	job_state_t state;
	int64_t delta;
} count_delta_t;

/* The changes of job_counts that one batch makes, one entry per model and state. */
typedef struct {
	count_delta_t *v;
	size_t n, cap;
	size_t last; /* the entry found last, tried first */
} count_deltas_t;

/* Forgets the entries and keeps the memory for the next batch. */
void count_deltas_reset(count_deltas_t *deltas);
void count_deltas_free(count_deltas_t *deltas);
/*
 * Adds what op changed to deltas: an insert adds its job, an update moves its job
 * from op->prev_state to its new state, a purge that ran removes what it
 * deleted. The entries borrow the model names of op until deltas is reset.
 */
void count_deltas_op(count_deltas_t *deltas, const store_op_t *op);

typedef struct {
	sqlite3 *db;
	sqlite3_stmt *begin, *commit, *rollback;
	sqlite3_stmt *insert, *update, *purge, *keep_max_seq;
	sqlite3_stmt *key_insert, *key_revoke, *key_used;
	sqlite3_stmt *count_upsert;
	count_deltas_t counts; /* the batch's changes of job_counts, written before COMMIT */
	/* Id texts bound with SQLITE_STATIC, valid until the statement is reset. */
	char id_text[ID_TEXT_LEN + 1];
	char claim_text[ID_TEXT_LEN + 1];
} writer_t;

typedef struct {
	uv_loop_t *loop;
	char *dir;
	char *db_path;
	int lock_fd; /* file with the flock on it; -1 when not taken */

	sqlite3 *rdb;      /* read connection, loop thread */
	sqlite3_stmt *get;              /* on rdb */
	sqlite3_stmt *find_idempotency; /* on rdb */
	sqlite3_stmt *get_by_seq;       /* on rdb, for the job listing (sqlite_views.c) */
	writer_t w;        /* used by the writer thread only, while it runs */

	pthread_t thread;
	int writer_running;
	pthread_mutex_t mu;
	pthread_cond_t wake;     /* to the writer: a batch was queued, or stop */
	pthread_cond_t done;     /* to the loop thread: a batch finished */
	/* mu: batches handed over and not yet taken by the writer, oldest first, and their eras */
	store_batch_t *queued[STORE_MAX_IN_FLIGHT];
	uint64_t queued_era[STORE_MAX_IN_FLIGHT];
	size_t n_queued;
	/* mu: batches executed or rejected, oldest first, callbacks not yet run */
	store_batch_t *finished[STORE_MAX_IN_FLIGHT];
	size_t n_finished;
	/*
	 * mu: batches of an era below this are rejected, not run. A failed batch
	 * sets it past its own era, because every batch handed over after it, up
	 * to its callback, carries changes that the failure rolls back.
	 */
	uint64_t reject_below;
	char reject_error[sizeof(((store_batch_t *)0)->error)]; /* mu: why, for rejected batches */
	int stop;                /* mu: the writer exits once nothing is queued */
	/*
	 * 1 while the writer waits with nothing queued. Written under mu, by
	 * the writer before it waits and by store_commit; read without it.
	 */
	atomic_int writer_waits;
	uv_async_t async;        /* writer to loop: a batch was added to finished */

	/* Loop thread only. */
	struct local_in_flight {
		store_batch_t *batch;
		store_commit_cb cb;
		void *cb_ctx;
		uint64_t era;
	} in_flight[STORE_MAX_IN_FLIGHT]; /* handed over, oldest first */
	size_t n_in_flight;
	/* Starts at 0 and grows by one at the callback of each batch that failed. */
	uint64_t era;
	int last_result; /* result of the last non-empty batch */
	char last_error[sizeof(((store_batch_t *)0)->error)];
} local_store_t;

static inline int local_prepare(sqlite3 *db, const char *sql, sqlite3_stmt **out)
{
	return sqlite3_prepare_v3(db, sql, -1, SQLITE_PREPARE_PERSISTENT, out, NULL);
}

/* Runs sql, which returns one integer, into *out. Returns a SQLite result code. */
int local_query_int(sqlite3 *db, const char *sql, int64_t *out);

/*
 * Fills r from the current row of a statement that selects INSERT_COLUMNS.
 * Returns 0, or INFERQ_EIO for a row inferq did not write (r is then
 * partly filled; clear it with job_record_clear).
 */
int local_read_row(sqlite3_stmt *st, job_record_t *r);

/* sqlite_views.c: the job listing and the per-model counts, on the read connection. */
int local_list_jobs(void *state, const store_list_t *query, store_list_cb fn, void *ctx,
		    uint64_t *next_before);
int local_count_jobs(void *state, store_count_cb fn, void *ctx);

/*
 * Opens the write connection on s->db_path, checks the schema version, sets
 * WAL mode and the PRAGMAs, migrates and prepares the writer's statements.
 * Returns 0, or INFERQ_EIO with the cause in err. Loop thread, before the
 * writer thread starts.
 */
int local_writer_open(local_store_t *s, char *err, size_t errlen);
/* Checkpoints the WAL into the database file and closes. The thread must be stopped. */
void local_writer_close(local_store_t *s);
/* Runs the writer thread (arg is the store): each queued batch, until stop with none queued. */
void *local_writer_main(void *arg);

#endif
