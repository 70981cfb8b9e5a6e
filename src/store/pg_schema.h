/*
 * The PostgreSQL schema of the postgres store: its migrations, applied at
 * start under an advisory lock, and the sweep statements every node runs.
 * Times are ms since the epoch from the database clock (inferq_now_ms()),
 * so nodes with skewed clocks agree on leases.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef INFERQ_PG_SCHEMA_H
#define INFERQ_PG_SCHEMA_H

#include <stddef.h>
#include <libpq-fe.h>

#define PG_SCHEMA_VERSION 3
#define PG_LOCK_MIGRATE 7236052001LL /* advisory lock held while migrating */
#define PG_LOCK_SWEEP "7236052002"   /* advisory lock of the sweeping node, as SQL */

/*
 * Connects (blocking; call before the loop serves) and takes the
 * migration lock, which the connection holds until it is closed. Returns
 * the connection, or NULL with the cause and the fix in err.
 */
PGconn *pg_schema_connect(const char *conninfo, char *err, size_t errlen);

/*
 * Applies every missing migration over pg, which holds the migration
 * lock, each in its own transaction. Returns 0, or INFERQ_EIO with the
 * cause in err (a failed statement, or a schema newer than this binary).
 */
int pg_schema_migrate(PGconn *pg, char *err, size_t errlen);

/*
 * Sweep, part 1 ($1 = --max-retries): under the sweep lock, sends expired
 * leases back to pending (retries + 1) or fails them after the last retry,
 * appending to info.retry_history; returns one row per job (id, model,
 * new state, retries, the notify result, claimed_at, done_at) and
 * notifies the models (NOTIFY folds repeats).
 */
#define PG_SQL_EXPIRE                                                                          \
	"WITH lock AS (SELECT pg_try_advisory_xact_lock(" PG_LOCK_SWEEP ") AS held), "          \
	"exp AS (SELECT id FROM inferq_jobs WHERE state = 1 AND lease_expires_at > 0 "          \
	"AND lease_expires_at <= inferq_now_ms() AND (SELECT held FROM lock) "                  \
	"ORDER BY lease_expires_at LIMIT 1000 FOR UPDATE SKIP LOCKED), "                        \
	"u AS (UPDATE inferq_jobs j SET "                                                       \
	"info = inferq_add_retry(j.info, j.retries, j.worker, j.claimed_at), "                  \
	"lease_expires_at = 0, "                                                                \
	"state = CASE WHEN j.retries < $1::int THEN 0 ELSE 3 END, "                             \
	"retries = CASE WHEN j.retries < $1::int THEN j.retries + 1 ELSE j.retries END, "       \
	"done_at = CASE WHEN j.retries < $1::int THEN 0 ELSE inferq_now_ms() END, "             \
	"error = CASE WHEN j.retries < $1::int THEN j.error WHEN $1::int = 0 THEN "             \
	"'claim timed out and retries are off (1 delivery, max_retries 0)' ELSE "               \
	"format('claim timed out after the last retry (%s deliveries, max_retries %s)', "       \
	"j.retries + 1, $1::int) END "                                                          \
	"FROM exp WHERE j.id = exp.id RETURNING j.id, j.model, j.state, j.retries, "          \
	"j.claimed_at, j.done_at) "                                                            \
	"SELECT id, model, state, retries, pg_notify('inferq_jobs', model), claimed_at, "       \
	"done_at FROM u"

/* Sweep, part 2 ($1 = --retention in ms): deletes up to 1000 finished jobs past it. */
#define PG_SQL_PURGE                                                                           \
	"DELETE FROM inferq_jobs WHERE id IN (SELECT id FROM inferq_jobs WHERE state >= 2 "     \
	"AND done_at < inferq_now_ms() - $1::bigint AND (SELECT pg_try_advisory_xact_lock("     \
	PG_LOCK_SWEEP ")) ORDER BY done_at LIMIT 1000)"

/* Sweep, part 3: the cluster-wide count of pending and running jobs per model and state. */
#define PG_SQL_GAUGES                                                                          \
	"SELECT model, state, count(*) FROM inferq_jobs WHERE state IN (0, 1) "                 \
	"GROUP BY model, state"

/*
 * Sweep, part 4: up to 1000 names of files whose job was deleted, for the
 * sweeping node to unlink before it deletes their rows.
 */
#define PG_SQL_ORPHAN_FILES                                                                    \
	"SELECT name FROM inferq_files WHERE job_id IS NULL AND (SELECT "                       \
	"pg_try_advisory_xact_lock(" PG_LOCK_SWEEP ")) ORDER BY name LIMIT 1000"

#endif
