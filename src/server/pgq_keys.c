/*
 * API keys on the postgres store. Each node keeps its keys in its local
 * store, as with the local store, and table inferq_api_keys makes them
 * the same on every node: at start a node pulls the keys it lacks (so a
 * node joining a cluster makes no admin key of its own) and pushes its
 * own; while it runs it pushes each committed key change and pulls the
 * changes of other nodes every --pg-sweep-interval. Invariant: a change bumps
 * inferq_api_keys.version only when it changes the row, so a pulled
 * change that a node pushes back does not bounce forever.
 *
 * SPDX-License-Identifier: MIT
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "auth.h"
#include "inferq_error.h"
#include "log.h"
#include "pgq.h"

#define KEY_COLUMNS "name, hash, role, models, created_at, last_used_at, expires_at, revoked_at"

static const char sql_pull[] =
	"SELECT " KEY_COLUMNS ", version FROM inferq_api_keys WHERE version > $1::bigint "
	"ORDER BY version";

static const char sql_put[] =
	"INSERT INTO inferq_api_keys (" KEY_COLUMNS ") VALUES ($1, $2, $3, $4, $5::bigint, "
	"$6::bigint, $7::bigint, $8::bigint) ON CONFLICT DO NOTHING";

static const char sql_revoke[] =
	"UPDATE inferq_api_keys SET revoked_at = $2::bigint, "
	"version = nextval('inferq_api_keys_version') WHERE hash = $1 AND revoked_at = 0 "
	"AND $2::bigint > 0";

static const char sql_used[] =
	"UPDATE inferq_api_keys SET last_used_at = $2::bigint WHERE hash = $1 "
	"AND last_used_at < $2::bigint";

/* Parameters of one key; the numbers are kept in nums. */
typedef struct {
	char nums[4][24];
} key_params_t;

static void set_key_params(pg_stmt_t *st, const store_key_t *k, key_params_t *kp)
{
	snprintf(kp->nums[0], sizeof(kp->nums[0]), "%lld", (long long)k->created_at);
	snprintf(kp->nums[1], sizeof(kp->nums[1]), "%lld", (long long)k->last_used_at);
	snprintf(kp->nums[2], sizeof(kp->nums[2]), "%lld", (long long)k->expires_at);
	snprintf(kp->nums[3], sizeof(kp->nums[3]), "%lld", (long long)k->revoked_at);
	pgq_param(st, 0, k->name);
	pgq_param(st, 1, k->hash);
	pgq_param(st, 2, k->role);
	pgq_param_len(st, 3, k->models ? k->models->data : "[]", k->models ? k->models->len : 2);
	for (int i = 0; i < 4; i++)
		pgq_param(st, 4 + i, kp->nums[i]);
}

/* Reads row of a result of KEY_COLUMNS into k (k->models is new). */
static void row_key(const PGresult *r, int row, store_key_t *k)
{
	memset(k, 0, sizeof(*k));
	snprintf(k->name, sizeof(k->name), "%s", PQgetvalue(r, row, 0));
	snprintf(k->hash, sizeof(k->hash), "%s", PQgetvalue(r, row, 1));
	snprintf(k->role, sizeof(k->role), "%s", PQgetvalue(r, row, 2));
	k->models = rbuf_new(PQgetvalue(r, row, 3), (size_t)PQgetlength(r, row, 3));
	k->created_at = strtoll(PQgetvalue(r, row, 4), NULL, 10);
	k->last_used_at = strtoll(PQgetvalue(r, row, 5), NULL, 10);
	k->expires_at = strtoll(PQgetvalue(r, row, 6), NULL, 10);
	k->revoked_at = strtoll(PQgetvalue(r, row, 7), NULL, 10);
}

/* Merges the pulled rows into the key table; returns the highest version seen. */
static int64_t merge_rows(server_t *s, const PGresult *r, int64_t last)
{
	for (int i = 0; i < PQntuples(r); i++) {
		store_key_t k;
		int rc;

		row_key(r, i, &k);
		rc = auth_key_merge(s, &k);
		if (rc == INFERQ_ECONFLICT)
			log_warn("auth",
				 "API key name=%s of the cluster (hash=%.8s) differs from this "
				 "node's key of that name, which works only here; revoke one of "
				 "them and give the other a new name",
				 k.name, k.hash);
		else if (rc != 0)
			log_error("auth",
				  "API key name=%s in the database is invalid (role, hash or "
				  "models); the table was changed by hand",
				  k.name);
		rbuf_unref(k.models);
		last = strtoll(PQgetvalue(r, i, 8), NULL, 10);
	}
	return last;
}

/* ---- start ---- */

static int exec_params(PGconn *pg, const pg_stmt_t *st, PGresult **out, char *err, size_t len)
{
	PGresult *r = PQexecParams(pg, st->sql, st->nparams, NULL, st->values, st->lengths, NULL,
				   0);
	ExecStatusType status = PQresultStatus(r);

	if (status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK) {
		snprintf(err, len, "%s", PQresultErrorMessage(r));
		err[strcspn(err, "\n")] = '\0';
		PQclear(r);
		return INFERQ_EIO;
	}
	if (out)
		*out = r;
	else
		PQclear(r);
	return 0;
}

int pgq_keys_pull_start(server_t *s, PGconn *pg, int64_t *version, char *err, size_t len)
{
	pg_stmt_t st = {.sql = sql_pull};
	PGresult *r;
	int rc;

	pgq_param(&st, 0, "0");
	rc = exec_params(pg, &st, &r, err, len);
	if (rc != 0)
		return rc;
	*version = merge_rows(s, r, 0);
	if (PQntuples(r))
		log_info("auth", "%d API keys in the database", PQntuples(r));
	PQclear(r);
	return 0;
}

int pgq_keys_push_start(server_t *s, PGconn *pg, char *err, size_t len)
{
	for (size_t i = 0; i < auth_key_count(s); i++) {
		const store_key_t *k = &auth_key_at(s, i)->rec;
		pg_stmt_t put = {.sql = sql_put}, revoke = {.sql = sql_revoke};
		key_params_t kp;
		int rc;

		set_key_params(&put, k, &kp);
		pgq_param(&revoke, 0, k->hash);
		pgq_param(&revoke, 1, kp.nums[3]);
		rc = exec_params(pg, &put, NULL, err, len);
		if (rc == 0)
			rc = exec_params(pg, &revoke, NULL, err, len);
		if (rc != 0)
			return rc;
	}
	return 0;
}

/* ---- while running ---- */

static void on_pushed(void *ctx, int rc, PGresult *const *results, int count, const char *err)
{
	if (rc != 0)
		log_warn("auth", "could not save an API key change in the database: %s; other "
				 "nodes learn it when this node restarts",
			 err);
}

void pgq_key_committed(server_t *s, const store_op_t *op)
{
	pg_stmt_t st;
	key_params_t kp;

	if (!s->pg)
		return;
	memset(&st, 0, sizeof(st));
	switch (op->kind) {
	case STORE_OP_KEY_PUT:
		st.sql = sql_put;
		set_key_params(&st, &op->key, &kp);
		break;
	case STORE_OP_KEY_REVOKE:
		st.sql = sql_revoke;
		snprintf(kp.nums[3], sizeof(kp.nums[3]), "%lld", (long long)op->key.revoked_at);
		pgq_param(&st, 0, op->key.hash);
		pgq_param(&st, 1, kp.nums[3]);
		break;
	case STORE_OP_KEY_USED:
		st.sql = sql_used;
		snprintf(kp.nums[1], sizeof(kp.nums[1]), "%lld", (long long)op->key.last_used_at);
		pgq_param(&st, 0, op->key.hash);
		pgq_param(&st, 1, kp.nums[1]);
		break;
	default:
		return;
	}
	pgq_exec_background(s, &st, 1, on_pushed, NULL);
}

typedef struct {
	server_t *server;
	int64_t *version;
	int *busy;
} pull_t;

static void on_pulled(void *ctx, int rc, PGresult *const *results, int count, const char *err)
{
	pull_t *p = ctx;

	*p->busy = 0;
	if (rc == 0 && p->server->pg)
		*p->version = merge_rows(p->server, results[0], *p->version);
	free(p);
}

void pgq_keys_pull(server_t *s, int64_t *version, int *busy)
{
	pg_stmt_t st = {.sql = sql_pull};
	char text[24];
	pull_t *p;

	if (*busy)
		return;
	p = xcalloc(1, sizeof(*p));
	p->server = s;
	p->version = version;
	p->busy = busy;
	*busy = 1;
	snprintf(text, sizeof(text), "%lld", (long long)*version);
	pgq_param(&st, 0, text);
	pgq_exec_background(s, &st, 1, on_pulled, p);
}
