/*
 * The store: the durable truth behind the in-memory queue. The loop thread
 * collects the mutations of one loop pass into a store_batch_t and hands it
 * to store_commit(); the backend executes the whole batch as one
 * transaction off the loop thread, and calls back on the loop thread once
 * it is durable (or has failed and left nothing behind). At most one batch
 * is in flight; the caller collects the next one meanwhile.
 *
 * Backends: "local" (SQLite in WAL mode with synchronous=FULL, one writer
 * thread, a read connection for the loop thread). Every backend implements
 * exactly the functions below.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef INFERQ_STORE_H
#define INFERQ_STORE_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "job.h"

typedef struct store store_t;

typedef enum {
	STORE_OP_INSERT, /* a new job: every field of rec, its idempotency key included */
	STORE_OP_UPDATE, /* rec.id plus its mutable fields: state, retries, claimed_at,
			    done_at, lease_expires_at, claim_timeout, claim_id, worker,
			    info, outputs, error, history */
	STORE_OP_PURGE,  /* delete terminal jobs with done_at < purge_before */
	STORE_OP_KEY_PUT,    /* a new API key: every field of key */
	STORE_OP_KEY_REVOKE, /* key.name and key.revoked_at of a key not revoked yet */
	STORE_OP_KEY_USED,   /* key.hash and key.last_used_at (kept when the stored one is later) */
} store_op_kind_t;

/* Returns 1 for the operations on API keys, which carry no job. */
static inline int store_op_is_key(store_op_kind_t kind)
{
	return kind >= STORE_OP_KEY_PUT;
}

#define STORE_KEY_NAME_MAX 64 /* bytes of an API key's name */
#define STORE_KEY_HASH_HEX 64 /* hex digits of a SHA-256 */

/* An API key as the store keeps it: its name and the SHA-256 of its text, never the key. */
typedef struct {
	char name[STORE_KEY_NAME_MAX + 1];
	char hash[STORE_KEY_HASH_HEX + 1]; /* lowercase hex SHA-256 of the key text */
	char role[8];                      /* "admin", "client" or "worker" */
	rbuf_t *models;                    /* JSON array of model pattern strings */
	int64_t created_at;                /* ms since epoch */
	int64_t last_used_at;              /* ms since epoch, 0 = never used */
	int64_t expires_at;                /* ms since epoch, 0 = never expires */
	int64_t revoked_at;                /* ms since epoch, 0 = not revoked */
} store_key_t;

/* Finished jobs of one model and state that a purge deleted. */
typedef struct {
	char *model; /* NUL-terminated, owned by the op */
	job_state_t state;
	uint64_t count;
} store_purged_t;

typedef struct {
	store_op_kind_t kind;
	job_record_t rec;     /* INSERT, UPDATE: holds references until the op is freed */
	store_key_t key;      /* KEY_*: holds a reference to key.models until the op is freed */
	int64_t purge_before; /* PURGE: ms since epoch */
	uint32_t purge_limit; /* PURGE: delete at most this many rows */
	int64_t purged;       /* PURGE: rows deleted, set by the backend */
	iq_id_t *purged_ids;  /* PURGE: ids of those rows (malloc'd by the backend; the
				 caller may take them over, else store_batch_reset frees them) */
	void *owner;          /* free for the caller (the job this op changes) */
	job_state_t prev_state; /* UPDATE: the job's state before this op, which the store's
				   counts per model and state follow; set it on every update */
	int64_t lease_mono;     /* free for the caller (monotonic lease deadline after this op) */
	int event;              /* free for the caller (what this op records, history.h) */
	store_purged_t *purged_by; /* PURGE: the deleted rows per model and state, set by the
	                              backend; freed by store_batch_reset */
	size_t purged_by_count;
	uint8_t cause;          /* free for the caller (what made the change, for metrics) */
} store_op_t;

typedef struct store_batch {
	store_op_t *ops;
	size_t count, cap;
	uint64_t id;         /* caller's batch number */
	int result;          /* set by the backend: 0, INFERQ_EIO or INFERQ_EBUSY */
	char error[256];     /* set by the backend on failure: cause and remedy */
	void *user;          /* free for the caller */
} store_batch_t;

typedef void (*store_commit_cb)(store_batch_t *batch, void *ctx);

/*
 * Batches between store_commit and their callbacks at most. Those handed
 * over while the writer is busy wait, and it commits all of them as one
 * transaction as soon as it is free, without waiting for the loop thread.
 */
#define STORE_MAX_IN_FLIGHT 8

typedef struct {
	uv_loop_t *loop;      /* the loop that receives commit callbacks */
	const char *data_dir; /* local store: directory of inferq.db; created 0700 if missing */
} store_config_t;

/*
 * Opens (creating or migrating as needed) the store. On failure returns
 * INFERQ_EIO or INFERQ_EINVAL and writes the cause into err[0..errlen).
 */
int store_open(const store_config_t *config, store_t **out, char *err, size_t errlen);

/*
 * Waits for the batches in flight and runs their callbacks from inside
 * store_close (a batch a callback commits is waited for too), stops the
 * writer, checkpoints and closes. The loop is not run meanwhile. The store's
 * uv_async_t handle is closed with uv_close(), so the caller must run the
 * loop afterwards (uv_run) to finish closing it; the store's memory is freed
 * then. Loop thread. Accepts NULL.
 */
void store_close(store_t *s);

/*
 * Reads every pending and running job in seq order, calling fn once per job
 * with a record whose references fn takes over; fn returns 0 to go on.
 * Sets *max_seq to the largest seq of any job ever stored (0 when empty),
 * so new jobs continue the order. Called once at start, before any commit.
 * Returns 0, INFERQ_EIO, or the first non-zero value fn returned.
 */
int store_load(store_t *s, int (*fn)(void *ctx, job_record_t *rec), void *ctx, uint64_t *max_seq);

/*
 * Reads every API key, revoked and expired ones included, in creation
 * order, calling fn once per key; fn takes over key->models and returns 0
 * to go on. Called at start. Returns 0, INFERQ_EIO, or the first non-zero
 * value fn returned.
 */
int store_load_keys(store_t *s, int (*fn)(void *ctx, store_key_t *key), void *ctx);

/*
 * Finds the newest committed job of model submitted with Idempotency-Key key
 * at or after since_ms (ms since epoch). Fills *id and body_hash (the hex
 * SHA-256 of that submit's body, NUL-terminated) and returns 0; returns
 * INFERQ_ENOTFOUND when there is none, INFERQ_EIO on a read error. Loop
 * thread; an indexed read that never waits for the writer.
 */
int store_find_idempotency(store_t *s, const char *model, size_t model_len, const char *key,
			   size_t key_len, int64_t since_ms, iq_id_t *id, char body_hash[65]);

/*
 * Hands batch to the writer. cb(batch, ctx) runs on the loop thread when
 * the transaction committed (batch->result 0) or failed (negative, nothing
 * of the batch applied, batch->error says why). The caller keeps ownership
 * of batch and must not touch it until cb. Batches commit in the order they
 * were handed over, and their callbacks run in that order. Batches that
 * waited for the writer together commit in one transaction, so they succeed
 * or fail together. Only empty batches ahead of the first one with changes
 * succeed either way. A batch handed over after one that fails, before that
 * one's callback has run, is not run and fails too, because its changes may
 * build on the failed ones.
 * Returns 0, or INFERQ_EBUSY when STORE_MAX_IN_FLIGHT batches are in flight.
 */
int store_commit(store_t *s, store_batch_t *batch, store_commit_cb cb, void *ctx);

/*
 * Returns 1 when the writer waits for work, so a batch handed over now
 * starts at once, else 0. Loop thread; a hint, read without waiting.
 */
int store_writer_idle(store_t *s);

/*
 * Counts the finished (done, failed, canceled) jobs kept in the store, per
 * model and state. It calls fn once per pair with the model's name, valid
 * during the call, and fn returns 0 to go on. Called at start, on the loop
 * thread. It reads the counts the store keeps with every commit, so its
 * cost grows with the number of models, not jobs. Returns 0, INFERQ_EIO,
 * or the first non-zero value fn returned.
 */
int store_count_finished(store_t *s,
			 int (*fn)(void *ctx, const char *model, job_state_t state, uint64_t count),
			 void *ctx);

/*
 * Reads the committed row of a job into *out (caller clears it with
 * job_record_clear). Loop thread; never waits for the writer. Returns 0,
 * INFERQ_ENOTFOUND or INFERQ_EIO.
 */
int store_get(store_t *s, const iq_id_t *id, job_record_t *out);

/* One page of the admin job listing: committed jobs, newest (highest seq) first. */
typedef struct {
	const char *model; /* only jobs of this model, or NULL for every model */
	size_t model_len;
	int state;           /* only jobs in this job_state_t, or -1 for every state */
	uint64_t before_seq; /* only jobs with a lower seq; UINT64_MAX starts at the newest */
	uint32_t limit;      /* jobs to return at most, 1 or more */
	uint32_t max_scan;   /* rows to examine at most, so a rare state filter stays cheap */
} store_list_t;

/* Receives one listed job; the record is borrowed. Returns 0 to go on. */
typedef int (*store_list_cb)(void *ctx, const job_record_t *rec);

/* Receives the number n of committed jobs of model[0..model_len) in state. */
typedef void (*store_count_cb)(void *ctx, const char *model, size_t model_len,
			       job_state_t state, uint64_t n);

/*
 * Reads one page of committed jobs matching query in descending seq order
 * (submission order, so newest first), calling fn for each, at most
 * query->limit jobs, after examining at most query->max_scan rows. Sets
 * *next_before to the before_seq of the next page: the seq of the last
 * row examined, or 0 when no row below it can match. A page may hold
 * fewer than limit jobs, even none, while *next_before is not 0, when the
 * scan limit ended it. Loop thread; never waits for the writer. Returns
 * 0, INFERQ_EIO, or the first non-zero value fn returned.
 */
int store_list_jobs(store_t *s, const store_list_t *query, store_list_cb fn, void *ctx,
		    uint64_t *next_before);

/*
 * Calls fn once per model and state with at least one committed job, in
 * ascending byte order of the model name.
 * Reads a table the store keeps up to date in every commit, so the cost
 * grows with the number of models, not jobs. Loop thread. Returns 0 or
 * INFERQ_EIO.
 */
int store_count_jobs(store_t *s, store_count_cb fn, void *ctx);

/*
 * Reports whether the store is open and writable: 0, or INFERQ_EIO with the
 * reason in err. Loop thread; cheap enough for a readiness probe.
 */
int store_check(store_t *s, char *err, size_t errlen);

/*
 * Batch helpers. store_batch_add returns a zeroed op appended to batch; the
 * pointer is valid until the next store_batch_add, which may move the ops.
 */
void store_batch_init(store_batch_t *batch);
store_op_t *store_batch_add(store_batch_t *batch, store_op_kind_t kind);
/*
 * Clears every op's record, key and purged ids, empties the batch and clears result and error,
 * keeping its memory, id and user.
 */
void store_batch_reset(store_batch_t *batch);
void store_batch_free(store_batch_t *batch);

/*
 * Backend interface, for store.c and the backend files only. store_open()
 * picks a backend and each store_* call is forwarded to it with the
 * backend's own state in place of store_t; the contracts are those of the
 * functions above.
 */
typedef struct store_backend {
	const char *name;
	int (*open)(const store_config_t *config, void **state, char *err, size_t errlen);
	void (*close)(void *state);
	int (*load)(void *state, int (*fn)(void *ctx, job_record_t *rec), void *ctx,
		    uint64_t *max_seq);
	int (*load_keys)(void *state, int (*fn)(void *ctx, store_key_t *key), void *ctx);
	int (*count_finished)(void *state,
			      int (*fn)(void *ctx, const char *model, job_state_t state,
					uint64_t count),
			      void *ctx);
	int (*find_idempotency)(void *state, const char *model, size_t model_len, const char *key,
				size_t key_len, int64_t since_ms, iq_id_t *id, char body_hash[65]);
	int (*commit)(void *state, store_batch_t *batch, store_commit_cb cb, void *ctx);
	int (*writer_idle)(void *state);
	int (*get)(void *state, const iq_id_t *id, job_record_t *out);
	int (*check)(void *state, char *err, size_t errlen);
	int (*list_jobs)(void *state, const store_list_t *query, store_list_cb fn, void *ctx,
			 uint64_t *next_before);
	int (*count_jobs)(void *state, store_count_cb fn, void *ctx);
} store_backend_t;

/* SQLite in DATA_DIR/inferq.db (sqlite.c, sqlite_writer.c). */
extern const store_backend_t store_backend_local;

#endif
