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
#include <stdint.h>
#include <libpq-fe.h>

#define PG_SCHEMA_VERSION 4
#define PG_LOCK_MIGRATE 7236052001LL /* advisory lock held while migrating */
#define PG_LOCK_SWEEP "7236052002"   /* advisory lock of the sweeping node, as SQL */

/*
 * Connects (blocking; call before the loop serves) and takes the
 * migration lock, which the connection holds until it is closed. Returns
 * the connection, or NULL with the cause and the fix in err.
 */
PGconn *pg_schema_connect(const char *conninfo, int64_t connect_timeout_s, char *err,
			   size_t errlen);

/*
 * Applies every missing migration over pg, which holds the migration
 * lock, each in its own transaction. Returns 0, or INFERQ_EIO with the
 * cause in err (a failed statement, or a schema newer than this binary).
 */
int pg_schema_migrate(PGconn *pg, char *err, size_t errlen);

/*
 * Sweep, part 1 ($1 = --max-retries, $2 = --max-job-history): under the
 * sweep lock, sends expired leases back to pending (retries + 1) or fails
 * them after the last retry, appending to info.retry_history and adding
 * the history events "expired", then "retried" or "failed"; returns one
 * row per job (id, model, new state, retries, the notify result,
 * claimed_at, done_at, worker) and notifies the models (NOTIFY folds
 * repeats).
 */
#define PG_SQL_EXPIRE                                                                          \
	"WITH lock AS (SELECT pg_try_advisory_xact_lock(" PG_LOCK_SWEEP ") AS held), "          \
	"exp AS (SELECT id, inferq_now_ms() AS now, retries < $1::int AS retry, "               \
	"CASE WHEN retries < $1::int THEN NULL WHEN $1::int = 0 THEN "                           \
	"'claim timed out and retries are off (1 delivery, max_retries 0)' ELSE "               \
	"format('claim timed out after the last retry (%s deliveries, max_retries %s)', "       \
	"retries + 1, $1::int) END AS error FROM inferq_jobs WHERE state = 1 "                  \
	"AND lease_expires_at > 0 AND lease_expires_at <= inferq_now_ms() "                     \
	"AND (SELECT held FROM lock) "                                                          \
	"ORDER BY lease_expires_at LIMIT 1000 FOR UPDATE SKIP LOCKED), "                        \
	"u AS (UPDATE inferq_jobs j SET "                                                       \
	"info = inferq_add_retry(j.info, j.retries, j.worker, j.claimed_at), "                  \
	"lease_expires_at = 0, "                                                                \
	"state = CASE WHEN exp.retry THEN 0 ELSE 3 END, "                                       \
	"retries = CASE WHEN exp.retry THEN j.retries + 1 ELSE j.retries END, "                 \
	"done_at = CASE WHEN exp.retry THEN 0 ELSE exp.now END, "                               \
	"error = coalesce(exp.error, j.error), "                                                \
	"history = inferq_history_add(inferq_history_add(j.history, exp.now, 'expired', "       \
	"j.worker, format('lease of %s s ran out', j.claim_timeout), $2::int), exp.now, "       \
	"CASE WHEN exp.retry THEN 'retried' ELSE 'failed' END, j.worker, "                      \
	"CASE WHEN exp.retry THEN format('retry %s of %s', j.retries + 1, $1::int) "            \
	"ELSE exp.error END, $2::int) "                                                         \
	"FROM exp WHERE j.id = exp.id RETURNING j.id, j.model, j.state, j.retries, "          \
	"j.claimed_at, j.done_at, j.worker) "                                                  \
	"SELECT id, model, state, retries, pg_notify('inferq_jobs', model), claimed_at, "       \
	"done_at, worker FROM u"

/*
 * Sweep, part 2: deletes up to $2 (--pg-retention-batch) finished jobs older
 * than $1 (--retention in ms), the oldest first, and returns their ids.
 */
#define PG_SQL_PURGE                                                                           \
	"DELETE FROM inferq_jobs WHERE id IN (SELECT id FROM inferq_jobs WHERE state >= 2 "     \
	"AND done_at < inferq_now_ms() - $1::bigint AND (SELECT pg_try_advisory_xact_lock("     \
	PG_LOCK_SWEEP ")) ORDER BY done_at LIMIT $2::int) RETURNING id"

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
