/*
 * The write side of the local store: the schema and its migrations, the
 * write connection, and the writer thread that runs each batch as one
 * BEGIN IMMEDIATE transaction with cached prepared statements. A batch
 * commits whole or leaves nothing behind, and its error names the cause
 * and the remedy. Binding copies no bytes: the batch's rbuf_t values are
 * bound SQLITE_STATIC, because the loop keeps them alive until the callback.
 *
 * SPDX-License-Identifier: MIT
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "inferq_error.h"
#include "log.h"
#include "sqlite_store.h"

#define WRITER_BUSY_TIMEOUT_MS 5000
/* Size the WAL file is truncated back to after a checkpoint, in bytes. */
#define WAL_SIZE_LIMIT (64 * 1024 * 1024)

/* Result of an UPDATE that matched no row, outside SQLite's codes (all >= 0). */
#define ERR_NO_ROW (-1)

/*
 * Schema migrations: migrations[i] takes the database from version i to
 * i + 1 (PRAGMA user_version). Append new ones and never edit a released
 * one. Times are ms since epoch, NULL where the record contains 0.
 */
static const char *const migrations[] = {
    "CREATE TABLE jobs ("
    " seq INTEGER PRIMARY KEY,"
    " id TEXT NOT NULL UNIQUE CHECK (length(id) = 36),"
    " model TEXT NOT NULL,"
    " priority INTEGER NOT NULL CHECK (priority BETWEEN -2147483648 AND 2147483647),"
    " state TEXT NOT NULL"
    "  CHECK (state IN ('pending', 'running', 'done', 'failed', 'canceled')),"
    " retries INTEGER NOT NULL CHECK (retries >= 0),"
    " created_at INTEGER NOT NULL,"
    " claimed_at INTEGER,"
    " done_at INTEGER,"
    " lease_expires_at INTEGER,"
    " claim_timeout INTEGER CHECK (claim_timeout >= 0),"
    " claim_id TEXT CHECK (length(claim_id) = 36),"
    " worker TEXT,"
    " payload TEXT NOT NULL,"
    " info TEXT,"
    " outputs TEXT,"
    " error TEXT,"
    " warnings TEXT"
    ") STRICT;"
    /* store_load reads the active jobs in seq order. */
    "CREATE INDEX jobs_active ON jobs (seq) WHERE state IN ('pending', 'running');"
    /* The retention purge takes the oldest finished jobs first. */
    "CREATE INDEX jobs_done_at ON jobs (done_at) WHERE done_at IS NOT NULL;"
    /* max_seq outlives the purge of the newest job, so seq never goes back. */
    "CREATE TABLE store_meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL) STRICT, WITHOUT ROWID;"
    "INSERT INTO store_meta (name, value) VALUES ('max_seq', 0);",

    /* Version 2: the Idempotency-Key of a submit and a hash of its body. */
    "ALTER TABLE jobs ADD COLUMN idempotency_key TEXT;"
    "ALTER TABLE jobs ADD COLUMN body_hash TEXT;"
    "CREATE INDEX jobs_idempotency ON jobs (model, idempotency_key, created_at)"
    " WHERE idempotency_key IS NOT NULL;",

    /*
     * Version 3: API keys, stored as the SHA-256 of the key text only.
     * Revoked keys stay, so their names cannot be reused and the list
     * shows when they were revoked. models is a JSON array of patterns.
     */
    "CREATE TABLE api_keys ("
    " name TEXT NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 64),"
    " key_hash TEXT NOT NULL UNIQUE CHECK (length(key_hash) = 64),"
    " role TEXT NOT NULL CHECK (role IN ('admin', 'client', 'worker')),"
    " models TEXT NOT NULL,"
    " created_at INTEGER NOT NULL,"
    " last_used_at INTEGER,"
    " expires_at INTEGER,"
    " revoked_at INTEGER"
    ") STRICT;",

    /*
     * Version 4: the job history (a JSON array of events, history.h); an
     * index for the admin job listing by model, newest first; and the
     * number of jobs per model and state, kept by triggers in the same
     * transaction as every insert, state change and delete, so the queues
     * view reads a few rows instead of counting the table. An older
     * database gets its counts from one scan here.
     */
    "ALTER TABLE jobs ADD COLUMN history TEXT;"
    "CREATE INDEX jobs_model_seq ON jobs (model, seq);"
    "CREATE TABLE job_counts ("
    " model TEXT NOT NULL,"
    " state TEXT NOT NULL,"
    " n INTEGER NOT NULL,"
    " PRIMARY KEY (model, state)"
    ") STRICT, WITHOUT ROWID;"
    "INSERT INTO job_counts (model, state, n) SELECT model, state, count(*) FROM jobs"
    " GROUP BY model, state;"
    "CREATE TRIGGER jobs_count_insert AFTER INSERT ON jobs BEGIN"
    " INSERT INTO job_counts (model, state, n) VALUES (new.model, new.state, 1)"
    "  ON CONFLICT (model, state) DO UPDATE SET n = n + 1;"
    " END;"
    "CREATE TRIGGER jobs_count_update AFTER UPDATE OF state ON jobs"
    " WHEN old.state <> new.state BEGIN"
    " UPDATE job_counts SET n = n - 1 WHERE model = old.model AND state = old.state;"
    " INSERT INTO job_counts (model, state, n) VALUES (new.model, new.state, 1)"
    "  ON CONFLICT (model, state) DO UPDATE SET n = n + 1;"
    " END;"
    "CREATE TRIGGER jobs_count_delete AFTER DELETE ON jobs BEGIN"
    " UPDATE job_counts SET n = n - 1 WHERE model = old.model AND state = old.state;"
    " END;",

    /*
     * Version 5: the writer keeps job_counts itself, one upsert per model
     * and state per batch (sqlite_counts.c), instead of the triggers, which
     * ran two statements for every changed row. The counts carry over.
     *
     * And the CHECK on state becomes a chain of comparisons. SQLite tests
     * "x IN (list)" of more than two values by building a temporary b-tree
     * of the list, so every insert and update built and dropped one: about
     * half of the writer's instructions per job. The two checks accept the
     * same values and the rows stay as they are, so the table's SQL text is
     * changed in place (writable_schema, as SQLite's ALTER TABLE page
     * describes for constraint changes), and RESET reloads the schema.
     */
    "DROP TRIGGER jobs_count_insert;"
    "DROP TRIGGER jobs_count_update;"
    "DROP TRIGGER jobs_count_delete;"
    "PRAGMA writable_schema = ON;"
    "UPDATE sqlite_schema SET sql = replace(sql,"
    " 'CHECK (state IN (''pending'', ''running'', ''done'', ''failed'', ''canceled''))',"
    " 'CHECK (state = ''pending'' OR state = ''running'' OR state = ''done'' OR"
    " state = ''failed'' OR state = ''canceled'')')"
    " WHERE type = 'table' AND name = 'jobs';"
    "PRAGMA writable_schema = RESET;",
};

#define SCHEMA_VERSION ((int)(sizeof(migrations) / sizeof(migrations[0])))

static const char sql_insert[] =
    "INSERT INTO jobs (" INSERT_COLUMNS ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, "
    "?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21)";
static const char sql_update[] =
    "UPDATE jobs SET state = ?5, retries = ?6, claimed_at = ?8, done_at = ?9, "
    "lease_expires_at = ?10, claim_timeout = ?11, claim_id = ?12, worker = ?13, info = ?15, "
    "outputs = ?16, error = ?17, history = ?21 WHERE seq = ?1 AND id = ?2";
static const char sql_purge[] =
    "DELETE FROM jobs WHERE seq IN (SELECT seq FROM jobs WHERE done_at < ?1 "
    "AND state IN ('done', 'failed', 'canceled') ORDER BY done_at LIMIT ?2) "
    "RETURNING model, state, id";
static const char sql_key_insert[] =
    "INSERT INTO api_keys (name, key_hash, role, models, created_at, last_used_at, expires_at, "
    "revoked_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)";
static const char sql_key_revoke[] =
    "UPDATE api_keys SET revoked_at = ?2 WHERE name = ?1 AND revoked_at IS NULL";
static const char sql_key_used[] =
    "UPDATE api_keys SET last_used_at = max(coalesce(last_used_at, 0), ?2) WHERE key_hash = ?1";
static const char sql_count_upsert[] =
    "INSERT INTO job_counts (model, state, n) VALUES (?1, ?2, ?3) "
    "ON CONFLICT (model, state) DO UPDATE SET n = n + excluded.n";
static const char sql_keep_max_seq[] =
    "UPDATE store_meta SET value = max(value, coalesce((SELECT max(seq) FROM jobs), 0)) "
    "WHERE name = 'max_seq'";

/*
 * Runs one statement of a commit. Every write of a batch goes through this
 * pointer, so a fault injector can make any step of a commit fail here.
 */
static int (*step_fn)(sqlite3_stmt *stmt) = sqlite3_step;

/* Runs a statement that returns no rows, resets it and returns a SQLite code. */
static int run_statement(sqlite3_stmt *st)
{
	int rc = step_fn(st);

	sqlite3_reset(st);
	return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

static int query_text(sqlite3 *db, const char *sql, char *out, size_t outlen)
{
	sqlite3_stmt *st = NULL;
	int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);

	if (rc == SQLITE_OK) {
		rc = sqlite3_step(st);
		if (rc == SQLITE_ROW) {
			const unsigned char *text = sqlite3_column_text(st, 0);

			snprintf(out, outlen, "%s", text ? (const char *)text : "");
			rc = SQLITE_OK;
		}
	}
	sqlite3_finalize(st);
	return rc;
}

/* Reads the schema version into *version_out and rejects one newer than this build's. */
static int check_version(local_store_t *s, sqlite3 *db, int64_t *version_out, char *err,
                         size_t errlen)
{
	int64_t version = 0;
	int rc = local_query_int(db, "PRAGMA user_version", &version);

	if (rc != SQLITE_OK) {
		snprintf(err, errlen,
		         "cannot read database %s: %s; check that it is an inferq database",
		         s->db_path, sqlite3_errmsg(db));
		return INFERQ_EIO;
	}
	if (version < 0 || version > SCHEMA_VERSION) {
		snprintf(err, errlen,
		         "database %s has schema version %" PRId64
		         ", but this inferq knows versions up to %d: upgrade inferq or choose "
		         "another --data-dir",
		         s->db_path, version, SCHEMA_VERSION);
		return INFERQ_EIO;
	}
	*version_out = version;
	return 0;
}

static int configure_writer(local_store_t *s, sqlite3 *db, char *err, size_t errlen)
{
	char mode[16];
	char sql[96];
	int rc;

	sqlite3_busy_timeout(db, WRITER_BUSY_TIMEOUT_MS);
	rc = query_text(db, "PRAGMA journal_mode = WAL", mode, sizeof(mode));
	if (rc != SQLITE_OK)
		goto sql_error;
	if (strcmp(mode, "wal") != 0) {
		snprintf(err, errlen,
		         "database %s stayed in journal mode %s instead of WAL: put the data dir "
		         "on a local filesystem that supports shared memory",
		         s->db_path, mode);
		return INFERQ_EIO;
	}
	snprintf(
	    sql, sizeof(sql),
	    "PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; PRAGMA journal_size_limit = %d",
	    WAL_SIZE_LIMIT);
	rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
	if (rc != SQLITE_OK)
		goto sql_error;
	return 0;

sql_error:
	snprintf(err, errlen, "cannot set up database %s: %s", s->db_path, sqlite3_errmsg(db));
	return INFERQ_EIO;
}

/* Applies every migration the file lacks, all in one transaction. */
static int migrate(local_store_t *s, sqlite3 *db, char *err, size_t errlen)
{
	int64_t version = 0;
	char sql[48];
	int rc, ret;

	rc = sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
	if (rc != SQLITE_OK)
		goto sql_error;

	/* Read the version again inside the transaction, where no other connection can change it.
	 */
	ret = check_version(s, db, &version, err, errlen);
	if (ret < 0)
		goto out;
	for (int v = (int)version; v < SCHEMA_VERSION; v++) {
		rc = sqlite3_exec(db, migrations[v], NULL, NULL, NULL);
		if (rc != SQLITE_OK)
			goto sql_error;
		snprintf(sql, sizeof(sql), "PRAGMA user_version = %d", v + 1);
		rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
		if (rc != SQLITE_OK)
			goto sql_error;
	}
	rc = sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
	if (rc != SQLITE_OK)
		goto sql_error;
	return 0;

sql_error:
	snprintf(err, errlen, "cannot migrate database %s to schema version %d: %s", s->db_path,
	         SCHEMA_VERSION, sqlite3_errmsg(db));
	ret = INFERQ_EIO;
out:
	if (!sqlite3_get_autocommit(db))
		sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
	return ret;
}

static int prepare_writer(local_store_t *s, char *err, size_t errlen)
{
	writer_t *w = &s->w;
	const struct {
		const char *sql;
		sqlite3_stmt **stmt;
	} list[] = {
	    {"BEGIN IMMEDIATE", &w->begin},
	    {"COMMIT", &w->commit},
	    {"ROLLBACK", &w->rollback},
	    {sql_insert, &w->insert},
	    {sql_update, &w->update},
	    {sql_purge, &w->purge},
	    {sql_keep_max_seq, &w->keep_max_seq},
	    {sql_key_insert, &w->key_insert},
	    {sql_key_revoke, &w->key_revoke},
	    {sql_key_used, &w->key_used},
	    {sql_count_upsert, &w->count_upsert},
	};

	for (size_t i = 0; i < sizeof(list) / sizeof(list[0]); i++) {
		if (local_prepare(w->db, list[i].sql, list[i].stmt) != SQLITE_OK) {
			snprintf(err, errlen, "cannot prepare statement on %s: %s", s->db_path,
			         sqlite3_errmsg(w->db));
			return INFERQ_EIO;
		}
	}
	return 0;
}

int local_writer_open(local_store_t *s, char *err, size_t errlen)
{
	int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX;
	int64_t version = 0;
	int rc, ret;

	rc = sqlite3_open_v2(s->db_path, &s->w.db, flags, NULL);
	if (rc != SQLITE_OK) {
		snprintf(err, errlen, "cannot open database %s: %s", s->db_path,
		         s->w.db ? sqlite3_errmsg(s->w.db) : sqlite3_errstr(rc));
		return INFERQ_EIO;
	}
	sqlite3_extended_result_codes(s->w.db, 1);
	if (sqlite3_db_readonly(s->w.db, "main") == 1) {
		snprintf(err, errlen, "database %s is read-only: give this user write access to it",
		         s->db_path);
		return INFERQ_EIO;
	}

	/* Check the version before the journal mode changes anything in the file. */
	ret = check_version(s, s->w.db, &version, err, errlen);
	if (ret == 0)
		ret = configure_writer(s, s->w.db, err, errlen);
	if (ret == 0)
		ret = migrate(s, s->w.db, err, errlen);
	if (ret == 0)
		ret = prepare_writer(s, err, errlen);
	return ret;
}

/* Checkpoints the WAL into the database file and closes. The thread must be stopped. */
void local_writer_close(local_store_t *s)
{
	writer_t *w = &s->w;
	sqlite3_stmt **list[] = {&w->begin,        &w->commit,     &w->rollback,
	                         &w->insert,       &w->update,     &w->purge,
	                         &w->keep_max_seq, &w->key_insert, &w->key_revoke,
	                         &w->key_used,     &w->count_upsert};

	for (size_t i = 0; i < sizeof(list) / sizeof(list[0]); i++) {
		sqlite3_finalize(*list[i]);
		*list[i] = NULL;
	}
	if (w->db && s->lock_fd >= 0)
		sqlite3_wal_checkpoint_v2(w->db, NULL, SQLITE_CHECKPOINT_TRUNCATE, NULL, NULL);
	sqlite3_close_v2(w->db);
	w->db = NULL;
	count_deltas_free(&w->counts);
}

static int bind_bytes(sqlite3_stmt *st, int col, const rbuf_t *r)
{
	if (!r)
		return sqlite3_bind_null(st, PARAM(col));
	return sqlite3_bind_text64(st, PARAM(col), r->data, r->len, SQLITE_STATIC, SQLITE_UTF8);
}

/* Binds v, or NULL when it is 0 (a time or claim timeout the job does not have). */
static int bind_nonzero(sqlite3_stmt *st, int col, int64_t v)
{
	if (v == 0)
		return sqlite3_bind_null(st, PARAM(col));
	return sqlite3_bind_int64(st, PARAM(col), v);
}

/* Binds the id and the fields that STORE_OP_UPDATE changes, the history included. */
static int bind_mutable(writer_t *w, sqlite3_stmt *st, const job_record_t *r)
{
	int rc;

	id_format(&r->id, w->id_text);
	rc = sqlite3_bind_text(st, PARAM(COL_ID), w->id_text, ID_TEXT_LEN, SQLITE_STATIC);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_text(st, PARAM(COL_STATE), job_state_name(r->state), -1,
		                       SQLITE_STATIC);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(st, PARAM(COL_RETRIES), r->retries);
	if (rc == SQLITE_OK)
		rc = bind_nonzero(st, COL_CLAIMED_AT, r->claimed_at);
	if (rc == SQLITE_OK)
		rc = bind_nonzero(st, COL_DONE_AT, r->done_at);
	if (rc == SQLITE_OK)
		rc = bind_nonzero(st, COL_LEASE_EXPIRES_AT, r->lease_expires_at);
	if (rc == SQLITE_OK)
		rc = bind_nonzero(st, COL_CLAIM_TIMEOUT, r->claim_timeout);
	if (rc == SQLITE_OK && id_is_zero(&r->claim_id)) {
		rc = sqlite3_bind_null(st, PARAM(COL_CLAIM_ID));
	} else if (rc == SQLITE_OK) {
		id_format(&r->claim_id, w->claim_text);
		rc = sqlite3_bind_text(st, PARAM(COL_CLAIM_ID), w->claim_text, ID_TEXT_LEN,
		                       SQLITE_STATIC);
	}
	if (rc == SQLITE_OK)
		rc = bind_bytes(st, COL_WORKER, r->worker);
	if (rc == SQLITE_OK)
		rc = bind_bytes(st, COL_INFO, r->info);
	if (rc == SQLITE_OK)
		rc = bind_bytes(st, COL_OUTPUTS, r->outputs);
	if (rc == SQLITE_OK)
		rc = bind_bytes(st, COL_ERROR, r->error);
	if (rc == SQLITE_OK)
		rc = bind_bytes(st, COL_HISTORY, r->history);
	return rc;
}

/* Steps a bound statement, then resets it and drops its references to the batch's bytes. */
static int step_bound(sqlite3_stmt *st)
{
	int rc = step_fn(st);

	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
	return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

static int exec_insert(writer_t *w, const job_record_t *r)
{
	sqlite3_stmt *st = w->insert;
	int rc = bind_mutable(w, st, r);

	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(st, PARAM(COL_SEQ), (int64_t)r->seq);
	if (rc == SQLITE_OK)
		rc = bind_bytes(st, COL_MODEL, r->model);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(st, PARAM(COL_PRIORITY), r->priority);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(st, PARAM(COL_CREATED_AT), r->created_at);
	if (rc == SQLITE_OK)
		rc = bind_bytes(st, COL_PAYLOAD, r->payload);
	if (rc == SQLITE_OK)
		rc = bind_bytes(st, COL_WARNINGS, r->warnings);
	if (rc == SQLITE_OK)
		rc = bind_bytes(st, COL_IDEMPOTENCY_KEY, r->idempotency_key);
	if (rc == SQLITE_OK)
		rc = bind_bytes(st, COL_BODY_HASH, r->body_hash);
	if (rc != SQLITE_OK) {
		sqlite3_clear_bindings(st);
		return rc;
	}
	return step_bound(st);
}

/* Finds the row by seq, the table's rowid, and checks its id: no lookup in the index of ids. */
static int exec_update(writer_t *w, const job_record_t *r)
{
	sqlite3_stmt *st = w->update;
	int rc = bind_mutable(w, st, r);

	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(st, PARAM(COL_SEQ), (int64_t)r->seq);
	if (rc != SQLITE_OK) {
		sqlite3_clear_bindings(st);
		return rc;
	}
	rc = step_bound(st);
	if (rc == SQLITE_OK && sqlite3_changes(w->db) == 0)
		return ERR_NO_ROW;
	return rc;
}

/* Appends the id in column col of the RETURNING row to op->purged_ids. */
static void collect_purged_id(store_op_t *op, sqlite3_stmt *st, int col)
{
	const char *id = (const char *)sqlite3_column_text(st, col);
	size_t n = (size_t)op->purged;

	if ((n & (n - 1)) == 0)
		op->purged_ids = xrealloc(op->purged_ids, (n ? n * 2 : 1) * sizeof(*op->purged_ids));
	if (id == NULL || id_parse(id, (size_t)sqlite3_column_bytes(st, col),
				   &op->purged_ids[n]) != 0)
		return;
	op->purged++;
}

/* Adds the deleted row at st (model, state) to op's counts per model and state. */
static void count_purged_row(store_op_t *op, sqlite3_stmt *st)
{
	const char *model = (const char *)sqlite3_column_text(st, 0);
	const char *name = (const char *)sqlite3_column_text(st, 1);
	job_state_t state;
	size_t i;

	if (model == NULL || name == NULL || job_state_parse(name, &state) != 0)
		return;
	for (i = 0; i < op->purged_by_count; i++) {
		if (op->purged_by[i].state == state && strcmp(op->purged_by[i].model, model) == 0)
			break;
	}
	if (i == op->purged_by_count) {
		op->purged_by = xrealloc(op->purged_by, (i + 1) * sizeof(*op->purged_by));
		op->purged_by[i].model = xstrdup(model);
		op->purged_by[i].state = state;
		op->purged_by[i].count = 0;
		op->purged_by_count++;
	}
	op->purged_by[i].count++;
}

static int exec_purge(writer_t *w, store_op_t *op)
{
	sqlite3_stmt *st = w->purge;
	int rc;

	/* Remember the largest seq first, in case the purge deletes that job. */
	rc = run_statement(w->keep_max_seq);
	if (rc != SQLITE_OK)
		return rc;
	rc = sqlite3_bind_int64(st, 1, op->purge_before);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(st, 2, op->purge_limit);
	if (rc != SQLITE_OK) {
		sqlite3_clear_bindings(st);
		return rc;
	}
	/*
	 * Each deleted row comes back as a row of RETURNING model, state, id:
	 * the counts go to the metrics, the ids to the caller, which deletes
	 * the jobs' output files after the commit.
	 */
	free(op->purged_ids);
	op->purged_ids = NULL;
	op->purged = 0;
	for (size_t i = 0; i < op->purged_by_count; i++)
		free(op->purged_by[i].model);
	op->purged_by_count = 0;
	while ((rc = step_fn(st)) == SQLITE_ROW) {
		count_purged_row(op, st);
		collect_purged_id(op, st, 2);
	}
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
	return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

static int exec_key_insert(writer_t *w, const store_key_t *k)
{
	sqlite3_stmt *st = w->key_insert;
	int rc = sqlite3_bind_text(st, 1, k->name, -1, SQLITE_STATIC);

	if (rc == SQLITE_OK)
		rc = sqlite3_bind_text(st, 2, k->hash, -1, SQLITE_STATIC);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_text(st, 3, k->role, -1, SQLITE_STATIC);
	if (rc == SQLITE_OK)
		rc = k->models ? sqlite3_bind_text64(st, 4, k->models->data, k->models->len,
		                                     SQLITE_STATIC, SQLITE_UTF8)
		               : SQLITE_MISUSE;
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(st, 5, k->created_at);
	/* The columns of times 6 to 8 are NULL when the time is 0, as in jobs. */
	if (rc == SQLITE_OK)
		rc = k->last_used_at ? sqlite3_bind_int64(st, 6, k->last_used_at)
		                     : sqlite3_bind_null(st, 6);
	if (rc == SQLITE_OK)
		rc = k->expires_at ? sqlite3_bind_int64(st, 7, k->expires_at) : sqlite3_bind_null(st, 7);
	if (rc == SQLITE_OK)
		rc = k->revoked_at ? sqlite3_bind_int64(st, 8, k->revoked_at) : sqlite3_bind_null(st, 8);
	if (rc != SQLITE_OK) {
		sqlite3_clear_bindings(st);
		return rc;
	}
	return step_bound(st);
}

/* Runs an UPDATE of one key bound by text ?1 and time ?2; no row changed is ERR_NO_ROW. */
static int exec_key_update(writer_t *w, sqlite3_stmt *st, const char *text, int64_t ms)
{
	int rc = sqlite3_bind_text(st, 1, text, -1, SQLITE_STATIC);

	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(st, 2, ms);
	if (rc != SQLITE_OK) {
		sqlite3_clear_bindings(st);
		return rc;
	}
	rc = step_bound(st);
	if (rc == SQLITE_OK && sqlite3_changes(w->db) == 0)
		return ERR_NO_ROW;
	return rc;
}

static int exec_op(writer_t *w, store_op_t *op)
{
	switch (op->kind) {
	case STORE_OP_INSERT: return exec_insert(w, &op->rec);
	case STORE_OP_UPDATE: return exec_update(w, &op->rec);
	case STORE_OP_PURGE: return exec_purge(w, op);
	case STORE_OP_KEY_PUT: return exec_key_insert(w, &op->key);
	case STORE_OP_KEY_REVOKE:
		return exec_key_update(w, w->key_revoke, op->key.name, op->key.revoked_at);
	case STORE_OP_KEY_USED:
		return exec_key_update(w, w->key_used, op->key.hash, op->key.last_used_at);
	}
	return SQLITE_MISUSE;
}

/* Writes the batch's changes of job_counts; the entries left out changed by 0. */
static int exec_counts(writer_t *w)
{
	int rc = SQLITE_OK;

	for (size_t i = 0; rc == SQLITE_OK && i < w->counts.n; i++) {
		const count_delta_t *e = &w->counts.v[i];
		sqlite3_stmt *st = w->count_upsert;

		if (e->delta == 0)
			continue;
		rc = sqlite3_bind_text64(st, 1, e->model, e->len, SQLITE_STATIC, SQLITE_UTF8);
		if (rc == SQLITE_OK)
			rc = sqlite3_bind_text(st, 2, job_state_name(e->state), -1, SQLITE_STATIC);
		if (rc == SQLITE_OK)
			rc = sqlite3_bind_int64(st, 3, e->delta);
		if (rc != SQLITE_OK) {
			sqlite3_clear_bindings(st);
			return rc;
		}
		rc = step_bound(st);
	}
	return rc;
}

static int result_code(int rc)
{
	if (rc == ERR_NO_ROW)
		return INFERQ_EIO;
	switch (rc & 0xff) {
	case SQLITE_BUSY:
	case SQLITE_LOCKED: return INFERQ_EBUSY;
	}
	return INFERQ_EIO;
}

static const char *remedy(int rc)
{
	if (rc == ERR_NO_ROW)
		return "the queue in memory and the database disagree: restart inferq to reload it";
	switch (rc & 0xff) {
	case SQLITE_FULL: return "the disk is full: free space on the filesystem of the data dir";
	case SQLITE_BUSY:
	case SQLITE_LOCKED:
		return "another program (an sqlite3 shell?) locks the database: close it";
	case SQLITE_READONLY:
		return "check the file's permissions and that its filesystem is writable";
	case SQLITE_CONSTRAINT:
		return "a job breaks a database constraint: this is a bug in inferq";
	}
	return "check the disk (dmesg) and the database file";
}

static void describe_op(const store_op_t *op, char *out, size_t outlen)
{
	char id[ID_TEXT_LEN + 1];

	id_format(&op->rec.id, id);
	switch (op->kind) {
	case STORE_OP_INSERT: snprintf(out, outlen, "insert of job %s", id); break;
	case STORE_OP_UPDATE: snprintf(out, outlen, "update of job %s", id); break;
	case STORE_OP_PURGE: snprintf(out, outlen, "purge of finished jobs"); break;
	case STORE_OP_KEY_PUT: snprintf(out, outlen, "insert of API key %s", op->key.name); break;
	case STORE_OP_KEY_REVOKE:
		snprintf(out, outlen, "revocation of API key %s", op->key.name);
		break;
	case STORE_OP_KEY_USED:
		snprintf(out, outlen, "last use of API key %.8s", op->key.hash);
		break;
	default: snprintf(out, outlen, "operation of unknown kind %d", (int)op->kind); break;
	}
}

/* Sets the batch's result and error. Call it before ROLLBACK, which clears sqlite3_errmsg. */
static void fail_batch(local_store_t *s, store_batch_t *b, int rc, const store_op_t *failed,
                       const char *failed_step)
{
	const char *cause = sqlite3_errmsg(s->w.db);

	if (rc == ERR_NO_ROW)
		cause = failed && store_op_is_key(failed->kind) ? "no such API key in the database"
		                                                : "no such job in the database";

	b->result = result_code(rc);
	snprintf(b->error, sizeof(b->error), "%s: %s failed: %s; %s", s->db_path, failed_step,
	         cause, remedy(rc));
}

static void rollback(writer_t *w)
{
	if (!sqlite3_get_autocommit(w->db))
		run_statement(w->rollback);
}

static const char counts_step[] = "update of the job counts per model and state";

/*
 * Runs the n batches b[0..n) as one transaction, in order, or leaves nothing
 * of them behind: they commit together or fail with the same error. Empty
 * batches before the first one with changes depend only on earlier
 * transactions, so they succeed even when the transaction fails.
 */
static void run_group(local_store_t *s, store_batch_t **b, size_t n)
{
	writer_t *w = &s->w;
	const store_op_t *failed = NULL;
	const char *step = "begin";
	char failed_step[128];
	size_t ops = 0, first;
	int rc;

	for (size_t k = 0; k < n; k++) {
		b[k]->result = 0;
		b[k]->error[0] = '\0';
		ops += b[k]->count;
	}
	if (ops == 0)
		return;

	/* A transaction may be left open by a ROLLBACK that failed last time. */
	rollback(w);
	rc = run_statement(w->begin);
	count_deltas_reset(&w->counts);
	for (size_t k = 0; rc == SQLITE_OK && k < n; k++) {
		for (size_t i = 0; rc == SQLITE_OK && i < b[k]->count; i++) {
			rc = exec_op(w, &b[k]->ops[i]);
			if (rc != SQLITE_OK)
				failed = &b[k]->ops[i];
			else
				count_deltas_op(&w->counts, &b[k]->ops[i]);
		}
	}
	if (rc == SQLITE_OK) {
		step = counts_step;
		rc = exec_counts(w);
	}
	if (rc == SQLITE_OK) {
		step = "commit";
		rc = run_statement(w->commit);
	}
	if (rc == SQLITE_OK)
		return;

	if (failed)
		describe_op(failed, failed_step, sizeof(failed_step));
	else if (step == counts_step)
		snprintf(failed_step, sizeof(failed_step), "%s", step);
	else
		snprintf(failed_step, sizeof(failed_step), "%s of %zu operations", step, ops);
	first = 0;
	while (b[first]->count == 0)
		first++;
	fail_batch(s, b[first], rc, failed, failed_step);
	for (size_t k = first + 1; k < n; k++) {
		b[k]->result = b[first]->result;
		memcpy(b[k]->error, b[first]->error, sizeof(b[k]->error));
	}
	rollback(w);
}

/* Fails b without running it: it was handed over after a batch that failed. */
static void reject_batch(local_store_t *s, store_batch_t *b)
{
	int n;

	b->result = INFERQ_EIO;
	n = snprintf(b->error, sizeof(b->error), "not run, because the commit before it failed: %s",
	             s->reject_error);
	if (n < 0 || (size_t)n >= sizeof(b->error))
		b->error[sizeof(b->error) - 1] = '\0';
}

void *local_writer_main(void *arg)
{
	local_store_t *s = arg;
	store_batch_t *group[STORE_MAX_IN_FLIGHT];
	uint64_t era[STORE_MAX_IN_FLIGHT];
	size_t n, first;

	pthread_mutex_lock(&s->mu);
	for (;;) {
		while (s->n_queued == 0 && !s->stop) {
			atomic_store_explicit(&s->writer_waits, 1, memory_order_relaxed);
			pthread_cond_wait(&s->wake, &s->mu);
		}
		if (s->n_queued == 0)
			break;
		/* Every batch waiting goes into one transaction, so one fsync covers them all. */
		n = s->n_queued;
		memcpy(group, s->queued, n * sizeof(group[0]));
		memcpy(era, s->queued_era, n * sizeof(era[0]));
		s->n_queued = 0;
		/* Those from before a failure's callback come first, and are rejected. */
		for (first = 0; first < n && era[first] < s->reject_below; first++)
			reject_batch(s, group[first]);
		pthread_mutex_unlock(&s->mu);

		run_group(s, group + first, n - first);

		pthread_mutex_lock(&s->mu);
		if (first < n && group[n - 1]->result != 0) {
			s->reject_below = era[n - 1] + 1;
			memcpy(s->reject_error, group[n - 1]->error, sizeof(s->reject_error));
		}
		IQ_ASSERT(s->n_finished + n <= STORE_MAX_IN_FLIGHT);
		memcpy(s->finished + s->n_finished, group, n * sizeof(group[0]));
		s->n_finished += n;
		pthread_cond_signal(&s->done);
		pthread_mutex_unlock(&s->mu);
		uv_async_send(&s->async);
		pthread_mutex_lock(&s->mu);
	}
	pthread_mutex_unlock(&s->mu);
	return NULL;
}
