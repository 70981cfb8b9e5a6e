/*
 * Migrations of the postgres store (pg_schema.h). Migration N brings the
 * schema from version N-1 to N; inferq_schema has one row per version applied.
 * Migrations only ever get appended: a released one never changes.
 *
 * SPDX-License-Identifier: MIT
 */
#include "pg_schema.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "inferq_error.h"
#include "pg_pool.h"

static const char migration_1[] =
	"CREATE FUNCTION inferq_now_ms() RETURNS bigint LANGUAGE sql VOLATILE AS "
	"$$ SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint $$;\n"
	"CREATE FUNCTION inferq_rfc3339(ms bigint) RETURNS text LANGUAGE sql IMMUTABLE AS "
	"$$ SELECT to_char(to_timestamp(ms / 1000) AT TIME ZONE 'UTC', "
	"'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') $$;\n"
	/*
	 * info with one more retry_history entry for the lease that just expired.
	 * info is text holding the client's bytes; this rewrite goes through jsonb,
	 * so it respells info. An info that jsonb rejects stays as it is.
	 */
	"CREATE FUNCTION inferq_add_retry(info text, retries integer, worker text, "
	"claimed_at bigint) RETURNS text LANGUAGE plpgsql VOLATILE AS $$\n"
	"DECLARE doc jsonb; entry jsonb;\n"
	"BEGIN\n"
	"  entry := jsonb_strip_nulls(jsonb_build_object('attempt', retries + 1, 'worker', worker, "
	"'claimed_at', inferq_rfc3339(claimed_at), "
	"'expired_at', inferq_rfc3339(inferq_now_ms())));\n"
	"  IF info IS NULL THEN RETURN jsonb_build_object('retry_history', "
	"jsonb_build_array(entry))::text; END IF;\n"
	"  BEGIN doc := info::jsonb; EXCEPTION WHEN others THEN RETURN info; END;\n"
	"  IF jsonb_typeof(doc) <> 'object' THEN RETURN jsonb_build_object('retry_history', "
	"jsonb_build_array(entry))::text; END IF;\n"
	"  RETURN jsonb_set(doc, '{retry_history}', CASE WHEN jsonb_typeof(doc -> 'retry_history') "
	"= 'array' THEN doc -> 'retry_history' ELSE '[]'::jsonb END || jsonb_build_array(entry))"
	"::text;\n"
	"END $$;\n"
	"CREATE TABLE inferq_jobs (\n"
	"  id uuid PRIMARY KEY,\n"
	"  seq bigint GENERATED ALWAYS AS IDENTITY UNIQUE,\n"
	"  model text NOT NULL,\n"
	"  priority integer NOT NULL DEFAULT 0,\n"
	"  state smallint NOT NULL DEFAULT 0,\n"
	"  retries integer NOT NULL DEFAULT 0,\n"
	"  created_at bigint NOT NULL,\n"
	"  claimed_at bigint NOT NULL DEFAULT 0,\n"
	"  done_at bigint NOT NULL DEFAULT 0,\n"
	"  lease_expires_at bigint NOT NULL DEFAULT 0,\n"
	"  claim_timeout integer NOT NULL DEFAULT 0,\n"
	"  claim_id uuid,\n"
	"  worker text,\n"
	"  payload text NOT NULL,\n"
	"  info text,\n"
	"  outputs text,\n"
	"  error text,\n"
	"  warnings text,\n"
	"  idempotency_key text,\n"
	"  body_hash text\n"
	") WITH (fillfactor = 80, autovacuum_vacuum_scale_factor = 0.01, "
	"autovacuum_analyze_scale_factor = 0.01, autovacuum_vacuum_cost_delay = 0);\n"
	"CREATE INDEX inferq_jobs_pending ON inferq_jobs (model, priority DESC, seq) "
	"WHERE state = 0;\n"
	"CREATE INDEX inferq_jobs_running ON inferq_jobs (model) WHERE state = 1;\n"
	"CREATE INDEX inferq_jobs_lease ON inferq_jobs (lease_expires_at) "
	"WHERE state = 1 AND lease_expires_at > 0;\n"
	"CREATE INDEX inferq_jobs_finished ON inferq_jobs (done_at) WHERE state >= 2;\n"
	"CREATE INDEX inferq_jobs_idempotency ON inferq_jobs (model, idempotency_key, seq) "
	"WHERE idempotency_key IS NOT NULL;\n";

/* API keys shared by every node; version orders the changes nodes pull. */
static const char migration_2[] =
	"CREATE SEQUENCE inferq_api_keys_version;\n"
	"CREATE TABLE inferq_api_keys (\n"
	"  hash text PRIMARY KEY,\n"
	"  name text NOT NULL UNIQUE,\n"
	"  role text NOT NULL,\n"
	"  models text NOT NULL,\n"
	"  created_at bigint NOT NULL,\n"
	"  last_used_at bigint NOT NULL DEFAULT 0,\n"
	"  expires_at bigint NOT NULL DEFAULT 0,\n"
	"  revoked_at bigint NOT NULL DEFAULT 0,\n"
	"  version bigint NOT NULL DEFAULT nextval('inferq_api_keys_version')\n"
	");\n"
	"CREATE INDEX inferq_api_keys_by_version ON inferq_api_keys (version);\n";

/*
 * The job history of GET /v1/admin/jobs/ID (src/queue/history.h has the
 * event format), and an index that lets the listing filtered by model walk
 * seq backwards without reading other models' rows. history is json, not
 * jsonb, because json keeps the bytes written, so the events read the same
 * as on the local store. inferq_history_add appends one event and keeps the
 * newest max (none when max is 0); the statements that change a job call it
 * in the same UPDATE. The detail is cut to 256 bytes (HISTORY_DETAIL_MAX)
 * on a character boundary.
 */
static const char migration_3[] =
	"ALTER TABLE inferq_jobs ADD COLUMN history json;\n"
	"CREATE INDEX inferq_jobs_model_seq ON inferq_jobs (model, seq);\n"
	"CREATE FUNCTION inferq_history_add(history json, at bigint, event text, worker text, "
	"detail text, max integer) RETURNS json LANGUAGE plpgsql IMMUTABLE AS $$\n"
	"DECLARE cut text := nullif(detail, ''); kept text; entry text; n integer := 0;\n"
	"BEGIN\n"
	"  IF max <= 0 THEN RETURN NULL; END IF;\n"
	"  IF cut IS NOT NULL THEN\n"
	"    cut := left(cut, 256);\n"
	"    WHILE octet_length(cut) > 256 LOOP cut := left(cut, -1); END LOOP;\n"
	"  END IF;\n"
	"  entry := '{\"at\":\"' || inferq_rfc3339(at) || '\",\"event\":\"' || event || '\"' || "
	"coalesce(',\"worker\":' || to_json(nullif(worker, ''))::text, '') || "
	"coalesce(',\"detail\":' || to_json(cut)::text, '') || '}';\n"
	"  IF json_typeof(history) = 'array' THEN n := json_array_length(history); END IF;\n"
	/* Below the cap the array text only grows, so no element is parsed out. */
	"  IF n > 0 AND n < max THEN\n"
	"    RETURN (left(rtrim(history::text), -1) || ',' || entry || ']')::json;\n"
	"  ELSIF n > 0 AND max > 1 THEN\n"
	"    SELECT string_agg(e::text, ',' ORDER BY i) INTO kept "
	"FROM json_array_elements(history) WITH ORDINALITY AS t(e, i) WHERE i > n - (max - 1);\n"
	"  END IF;\n"
	"  RETURN ('[' || coalesce(kept || ',', '') || entry || ']')::json;\n"
	"END $$;\n";

/*
 * Output files of Sprocket workers and settings every node shares. The
 * bytes of a file live in the shared --storage-dir, and its row names the
 * job that owns it. Deleting the job sets job_id to NULL (the foreign key's
 * action, which also covers an upload racing the deletion), and the sweep
 * then unlinks the file and deletes the row. inferq_settings contains the
 * upload signing secret ("storage_secret", 64 hex digits) that the first
 * node to start creates.
 */
static const char migration_4[] =
	"CREATE TABLE inferq_settings (\n"
	"  name text PRIMARY KEY,\n"
	"  value text NOT NULL\n"
	");\n"
	"CREATE TABLE inferq_files (\n"
	"  name text PRIMARY KEY,\n"
	"  job_id uuid REFERENCES inferq_jobs (id) ON DELETE SET NULL,\n"
	"  size bigint,\n"
	"  created_at bigint NOT NULL\n"
	");\n"
	"CREATE INDEX inferq_files_job ON inferq_files (job_id);\n"
	"CREATE INDEX inferq_files_orphaned ON inferq_files (name) WHERE job_id IS NULL;\n";

static const char *const migrations[PG_SCHEMA_VERSION] = {migration_1, migration_2, migration_3,
								  migration_4};

/* Runs sql; returns 0 or INFERQ_EIO with the server's message in err. */
static int run(PGconn *pg, const char *sql, PGresult **keep, char *err, size_t errlen)
{
	PGresult *r = PQexec(pg, sql);
	ExecStatusType st = PQresultStatus(r);

	if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
		snprintf(err, errlen, "%s", PQresultErrorMessage(r));
		err[strcspn(err, "\n")] = '\0';
		PQclear(r);
		return INFERQ_EIO;
	}
	if (keep)
		*keep = r;
	else
		PQclear(r);
	return 0;
}

static int apply(PGconn *pg, int version, char *err, size_t errlen)
{
	char sql[128];
	char why[384];

	if (run(pg, "BEGIN", NULL, err, errlen) != 0)
		return INFERQ_EIO;
	snprintf(sql, sizeof(sql), "INSERT INTO inferq_schema (version) VALUES (%d)", version);
	if (run(pg, migrations[version - 1], NULL, why, sizeof(why)) != 0 ||
	    run(pg, sql, NULL, why, sizeof(why)) != 0 ||
	    run(pg, "COMMIT", NULL, why, sizeof(why)) != 0) {
		snprintf(err, errlen, "migration to schema version %d failed: %s", version, why);
		PQclear(PQexec(pg, "ROLLBACK"));
		return INFERQ_EIO;
	}
	return 0;
}

int pg_schema_migrate(PGconn *pg, char *err, size_t errlen)
{
	PGresult *r = NULL;
	int version;
	int rc;

	rc = run(pg, "CREATE TABLE IF NOT EXISTS inferq_schema (version integer NOT NULL)", NULL,
		 err, errlen);
	if (rc == 0)
		rc = run(pg, "SELECT coalesce(max(version), 0) FROM inferq_schema", &r, err,
			 errlen);
	if (rc != 0)
		return rc;
	version = atoi(PQgetvalue(r, 0, 0));
	PQclear(r);
	if (version > PG_SCHEMA_VERSION) {
		snprintf(err, errlen,
			 "the database has schema version %d, newer than this inferq knows (%d); "
			 "run a newer inferq",
			 version, PG_SCHEMA_VERSION);
		return INFERQ_EIO;
	}
	for (int v = version + 1; v <= PG_SCHEMA_VERSION && rc == 0; v++)
		rc = apply(pg, v, err, errlen);
	return rc;
}

PGconn *pg_schema_connect(const char *conninfo, int64_t connect_timeout_s, char *err,
			   size_t errlen)
{
	char why[384];
	char sql[96];
	PGconn *pg = pg_connect_blocking(conninfo, connect_timeout_s, why, sizeof(why));

	if (pg == NULL) {
		snprintf(err, errlen,
			 "cannot connect: %s; check that PostgreSQL runs and that --store (or "
			 "INFERQ_STORE) names its host, user and database",
			 why);
		return NULL;
	}
	PQclear(PQexec(pg, "SET client_min_messages = warning"));
	snprintf(sql, sizeof(sql), "SELECT pg_advisory_lock(%lld)", (long long)PG_LOCK_MIGRATE);
	if (run(pg, sql, NULL, err, errlen) != 0) {
		PQfinish(pg);
		return NULL;
	}
	return pg;
}
