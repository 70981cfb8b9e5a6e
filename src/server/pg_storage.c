/*
 * Output files on the postgres store (pgq.h). The bytes live in
 * --storage-dir, which every node must share (NFS or similar), so any node
 * serves a file that any node stored. The database stores what nodes must
 * agree on: the upload signing secret (inferq_settings) and one row per
 * file naming its job (inferq_files). Deleting a job sets its files'
 * job_id to NULL through the foreign key, and the sweep unlinks those
 * files before it deletes their rows, so a crash between the two only
 * repeats the unlink.
 *
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "alloc.h"
#include "inferq_error.h"
#include "log.h"
#include "pgq.h"

#define SECRET_NAME "storage_secret"

/* ---- the signing secret ---- */

static int hex_value(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

int pgq_storage_secret_load(PGconn *pg, uint8_t secret[STORAGE_SECRET_BYTES], char *err,
			    size_t errlen)
{
	static const char sql_create[] = "INSERT INTO inferq_settings (name, value) "
					 "VALUES ('" SECRET_NAME "', $1) ON CONFLICT (name) DO NOTHING";
	static const char sql_read[] =
		"SELECT value FROM inferq_settings WHERE name = '" SECRET_NAME "'";
	uint8_t fresh[STORAGE_SECRET_BYTES];
	char hex[STORAGE_SECRET_BYTES * 2 + 1];
	const char *params[1] = {hex};
	const char *value;
	PGresult *r;
	int rc = INFERQ_EIO;

	/* The first node to start creates the secret; the others keep the stored one. */
	random_bytes(fresh, sizeof(fresh));
	for (size_t i = 0; i < sizeof(fresh); i++)
		snprintf(hex + 2 * i, 3, "%02x", fresh[i]);
	explicit_bzero(fresh, sizeof(fresh));
	r = PQexecParams(pg, sql_create, 1, NULL, params, NULL, NULL, 0);
	explicit_bzero(hex, sizeof(hex));
	if (PQresultStatus(r) != PGRES_COMMAND_OK) {
		snprintf(err, errlen, "cannot store the upload signing secret: %s",
			 PQresultErrorMessage(r));
		goto out;
	}
	PQclear(r);
	r = PQexec(pg, sql_read);
	if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1) {
		snprintf(err, errlen, "cannot read the upload signing secret: %s",
			 PQresultErrorMessage(r));
		goto out;
	}
	value = PQgetvalue(r, 0, 0);
	if (strlen(value) != STORAGE_SECRET_BYTES * 2)
		goto malformed;
	for (size_t i = 0; i < STORAGE_SECRET_BYTES; i++) {
		int hi = hex_value(value[2 * i]), lo = hex_value(value[2 * i + 1]);

		if (hi < 0 || lo < 0)
			goto malformed;
		secret[i] = (uint8_t)(hi << 4 | lo);
	}
	rc = 0;
	goto out;
malformed:
	snprintf(err, errlen,
		 "the upload signing secret in table inferq_settings (name '" SECRET_NAME "') "
		 "is not %d lowercase hex digits; delete that row and restart the nodes, which "
		 "makes every upload URL issued so far invalid",
		 STORAGE_SECRET_BYTES * 2);
out:
	err[strcspn(err, "\n")] = '\0';
	PQclear(r);
	return rc;
}

/* ---- the owner of a file ---- */

/*
 * $1 job id, $2 the file to register or NULL. A finished job gets no row:
 * the upload is refused with 409.
 */
static const char sql_file_job[] =
	"WITH job AS (SELECT id, state, model FROM inferq_jobs WHERE id = $1::uuid), "
	"ins AS (INSERT INTO inferq_files (name, job_id, created_at) "
	"SELECT $2, id, inferq_now_ms() FROM job WHERE $2::text IS NOT NULL AND state < 2 "
	"ON CONFLICT (name) DO NOTHING) "
	"SELECT state, model FROM job";

typedef struct {
	pgq_file_job_cb cb;
	void (*stored_cb)(void *ctx, int rc, const char *err);
	void *ctx;
} file_call_t;

static void on_file_job(void *ctx, int rc, PGresult *const *results, int count, const char *err)
{
	file_call_t *c = ctx;
	const PGresult *r = rc == 0 ? results[0] : NULL;

	if (rc != 0)
		c->cb(c->ctx, rc, NULL, 0, JOB_PENDING, err);
	else if (PQntuples(r) == 0)
		c->cb(c->ctx, INFERQ_ENOTFOUND, NULL, 0, JOB_PENDING, NULL);
	else
		c->cb(c->ctx, 0, PQgetvalue(r, 0, 1), (size_t)PQgetlength(r, 0, 1),
		      (job_state_t)atoi(PQgetvalue(r, 0, 0)), NULL);
	free(c);
}

void pgq_file_job(server_t *s, const iq_id_t *id, const char *register_name,
		  pgq_file_job_cb cb, void *ctx)
{
	file_call_t *c = xcalloc(1, sizeof(*c));
	pg_stmt_t st = {.sql = sql_file_job};
	char text[ID_TEXT_LEN + 1];

	c->cb = cb;
	c->ctx = ctx;
	id_format(id, text);
	pgq_param(&st, 0, text);
	pgq_param(&st, 1, register_name);
	pgq_exec(s, &st, 1, on_file_job, c);
}

/* A row whose job_id is NULL belongs to a deleted job: the sweep unlinks its file. */
static const char sql_file_stored[] =
	"UPDATE inferq_files SET size = $2::bigint WHERE name = $1 AND job_id IS NOT NULL "
	"RETURNING size";

static void on_file_stored(void *ctx, int rc, PGresult *const *results, int count,
			   const char *err)
{
	file_call_t *c = ctx;

	if (rc == 0 && PQntuples(results[0]) == 0)
		rc = INFERQ_ENOTFOUND;
	c->stored_cb(c->ctx, rc, err);
	free(c);
}

void pgq_file_stored(server_t *s, const char *name, uint64_t size,
		     void (*cb)(void *ctx, int rc, const char *err), void *ctx)
{
	file_call_t *c = xcalloc(1, sizeof(*c));
	pg_stmt_t st = {.sql = sql_file_stored};
	char bytes[24];

	c->stored_cb = cb;
	c->ctx = ctx;
	snprintf(bytes, sizeof(bytes), "%llu", (unsigned long long)size);
	pgq_param(&st, 0, name);
	pgq_param(&st, 1, bytes);
	pgq_exec(s, &st, 1, on_file_stored, c);
}

/* ---- files of deleted jobs ---- */

static const char sql_forget[] =
	"DELETE FROM inferq_files WHERE name = ANY($1::text[]) AND job_id IS NULL";

typedef struct {
	uv_work_t work;
	server_t *server;
	int *busy;
	char dir[4096];
	char **names; /* checked filenames to unlink */
	size_t count;
	size_t removed;
	int failed_errno; /* errno of the first unlink that failed for another reason than ENOENT */
	buf_t list;       /* every row's name as a PostgreSQL array literal, for sql_forget */
} forget_t;

/* Clears the busy flag, which lives in s->pg and is gone once the node stops. */
static void forget_end(forget_t *f)
{
	if (f->server->pg)
		*f->busy = 0;
}

static void forget_free(forget_t *f)
{
	for (size_t i = 0; i < f->count; i++)
		free(f->names[i]);
	free(f->names);
	buf_free(&f->list);
	free(f);
}

static void forget_work(uv_work_t *w)
{
	forget_t *f = w->data;
	char path[sizeof(f->dir) + STORAGE_NAME_MAX + 2];

	for (size_t i = 0; i < f->count; i++) {
		snprintf(path, sizeof(path), "%s/%s", f->dir, f->names[i]);
		if (unlink(path) == 0)
			f->removed++;
		else if (errno != ENOENT && f->failed_errno == 0)
			f->failed_errno = errno;
	}
}

static void on_forgotten(void *ctx, int rc, PGresult *const *results, int count,
			 const char *err)
{
	forget_t *f = ctx;

	if (rc != 0)
		log_warn("storage", "cannot delete the rows of %zu removed files: %s; the next "
				    "sweep removes them",
			 f->count, err ? err : "");
	forget_end(f);
	forget_free(f);
}

static void forget_done(uv_work_t *w, int status)
{
	forget_t *f = w->data;
	pg_stmt_t st = {.sql = sql_forget};

	if (f->removed > 0)
		log_info("retention", "deleted %zu output files of deleted jobs", f->removed);
	if (f->failed_errno != 0 || f->server->pg == NULL) {
		/* The rows stay, so a later sweep tries these files again. */
		if (f->failed_errno != 0)
			log_warn("storage", "cannot delete files of deleted jobs in %s: %s; "
					    "retried at the next sweep",
				 f->dir, strerror(f->failed_errno));
		forget_end(f);
		forget_free(f);
		return;
	}
	pgq_param_len(&st, 0, f->list.data, f->list.len);
	pgq_exec(f->server, &st, 1, on_forgotten, f);
}

void pgq_files_forget(server_t *s, const PGresult *names, int *busy)
{
	forget_t *f;
	int n = PQntuples(names);

	if (n == 0 || *busy || s->storage == NULL)
		return;
	f = xcalloc(1, sizeof(*f));
	f->work.data = f;
	f->server = s;
	f->busy = busy;
	snprintf(f->dir, sizeof(f->dir), "%s", storage_dir(s->storage));
	f->names = xcalloc((size_t)n, sizeof(*f->names));
	buf_putc(&f->list, '{');
	for (int i = 0; i < n; i++) {
		const char *name = PQgetvalue(names, i, 0);
		char reason[8];
		iq_id_t id;

		/* Only a checked filename is joined to the directory; a row with another
		 * name (not written by inferq) is deleted without an unlink. */
		if (storage_filename_parse(name, strlen(name), STORAGE_NAME_MAX, &id, reason,
					   sizeof(reason)) == 0)
			f->names[f->count++] = xstrdup(name);
		buf_puts(&f->list, i ? ",\"" : "\"");
		for (const char *p = name; *p; p++) {
			if (*p == '"' || *p == '\\')
				buf_putc(&f->list, '\\');
			buf_putc(&f->list, *p);
		}
		buf_putc(&f->list, '"');
	}
	buf_putc(&f->list, '}');
	*busy = 1;
	IQ_ASSERT(uv_queue_work(s->loop, &f->work, forget_work, forget_done) == 0);
}
