/*
 * A fixed pool of libpq connections driven by the libuv loop: no call here
 * blocks the loop thread. A task is a list of statements sent in pipeline
 * mode with one sync, so they run as one implicit transaction in one round
 * trip, and its callback runs once the sync came back, after the commit.
 * Tasks wait in FIFO order for a free connection; broken connections come
 * back with a backoff. One extra connection only LISTENs, when asked to.
 * Each connection prepares a statement text the first time it runs it and
 * runs it by name afterwards (up to 128 texts per pool; more run
 * unprepared), so callers pass SQL text and PostgreSQL plans it once per
 * connection instead of once per call.
 *
 * Everything runs on the loop thread.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef INFERQ_PG_POOL_H
#define INFERQ_PG_POOL_H

#include <stddef.h>
#include <stdint.h>
#include <libpq-fe.h>
#include <uv.h>

#define PG_TASK_MAX_STMTS 4
#define PG_STMT_MAX_PARAMS 16

typedef struct pg_pool pg_pool_t;

/* One statement with text parameters; a NULL value is SQL NULL. */
typedef struct {
	const char *sql; /* static text, not copied */
	int nparams;
	const char *values[PG_STMT_MAX_PARAMS]; /* copied by pg_pool_exec */
	int lengths[PG_STMT_MAX_PARAMS];
} pg_stmt_t;

/*
 * Receives the outcome of a task: rc 0 with one result per statement
 * (borrowed, freed after the call), or a negative code (INFERQ_EIO: the
 * statement failed or the connection broke, so the transaction did not
 * commit or its outcome is unknown; INFERQ_EBUSY: no connection is up;
 * INFERQ_ELIMIT: an ordered task while max_waiting tasks are already
 * waiting or running) with
 * results NULL and err saying why.
 */
typedef void (*pg_task_cb)(void *ctx, int rc, PGresult *const *results, int count,
			   const char *err);

/* Receives one notification of the LISTEN connection; channel and payload are borrowed. */
typedef void (*pg_notify_cb)(void *ctx, const char *channel, const char *payload);

typedef struct {
	const char *conninfo; /* libpq connection string or URI, copied */
	uint32_t size;        /* connections that run tasks, at least 1 */
	uint32_t max_waiting; /* tasks waiting or running (background ones aside) before ordered
	                         ones get INFERQ_ELIMIT */
	const char *listen;   /* channel the extra connection LISTENs on, or NULL for none */
	pg_notify_cb notify;
	void *ctx;            /* for notify */
	int64_t connect_timeout_ms;   /* one connection attempt; 0 = 5 s */
	int64_t statement_timeout_ms; /* statement_timeout of each task connection; 0 = none */
} pg_pool_config_t;

/*
 * Starts connecting every connection and returns the pool in *out; tasks
 * submitted before a connection is up wait for it. Returns 0 or
 * INFERQ_EINVAL (bad conninfo, with err filled). Takes no blocking step.
 */
int pg_pool_open(uv_loop_t *loop, const pg_pool_config_t *config, pg_pool_t **out, char *err,
		 size_t errlen);

/* Flags of pg_pool_exec. */
#define PG_TASK_ORDERED 1 /* runs after every ordered task given before it (one connection) */
/*
 * No request waits for it (a NOTIFY hint, a sweep), so it does not count
 * toward max_waiting: with a small limit, a hint still in flight after a
 * submit's commit would otherwise get the next submit refused.
 */
#define PG_TASK_BACKGROUND 2

/*
 * Runs count (1..PG_TASK_MAX_STMTS) statements as one transaction and
 * calls cb(ctx, ...) on the loop thread when it ended (with INFERQ_EIO and
 * a message naming --pg-statement-timeout when a statement ran past the
 * statement timeout, so nothing of the task committed); cb may run from
 * inside this call when the task cannot start (EBUSY). Parameter values
 * are copied. Ordered tasks are pipelined on one connection, so they
 * commit in the order given; other tasks run on any idle connection.
 */
void pg_pool_exec(pg_pool_t *pool, const pg_stmt_t *stmts, int count, int flags, pg_task_cb cb,
		  void *ctx);

/*
 * Notifies the LISTEN channel with payload, as a hint outside any task's
 * transaction: a NOTIFY in a transaction holds a lock of the whole
 * database cluster through its commit, so commits that notify run one at
 * a time. Hints given within a few milliseconds are sent together, one
 * NOTIFY per distinct payload. A hint may be lost (the database is down);
 * listeners must poll too. Its notification, back on this pool's own
 * listener, is dropped there: the caller tells this node's waiters itself.
 * Does nothing when the pool listens on no channel.
 */
void pg_pool_hint(pg_pool_t *pool, const char *payload);

/* Returns 1 when at least one task connection is up. */
int pg_pool_up(const pg_pool_t *pool);

/* Returns the database host the pool connects to ("localhost" or a socket dir), for messages. */
const char *pg_pool_host(const pg_pool_t *pool);

/*
 * Fails every waiting and running task with INFERQ_EIO, closes the
 * connections and frees the pool once the loop has closed its handles.
 * Accepts NULL.
 */
void pg_pool_close(pg_pool_t *pool);

/*
 * Opens a blocking connection for start-up work (migrations) before the
 * loop serves, giving up after connect_timeout_s seconds unless conninfo
 * sets connect_timeout itself. Returns the connection or NULL with err
 * filled.
 */
PGconn *pg_connect_blocking(const char *conninfo, int64_t connect_timeout_s, char *err,
			    size_t errlen);

#endif
