/*
 * The admin views on the postgres store: the job listing, one job with its
 * history, the queues and the workers. Each view is one database task on
 * the pool, and its response is sent from the task's callback. The
 * parameters, checks and JSON are those of the local store
 * (handlers_views.c, views.h), so a client sees the same views from either
 * store. docs/scale-out.md describes what each view reads.
 *
 * SPDX-License-Identifier: MIT
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "clock.h"
#include "inferq_error.h"
#include "pgq.h"
#include "render.h"
#include "views.h"
#include "workers.h"

/* What a callback needs of its request once the handler has returned. */
typedef struct {
	server_t *server;
	http_request_t *req;
	uint32_t limit;
	iq_id_t id;
} view_call_t;

static view_call_t *call_new(server_t *s, http_request_t *req)
{
	view_call_t *c = xcalloc(1, sizeof(*c));

	c->server = s;
	c->req = req;
	return c;
}

/* ---- GET /v1/admin/jobs ---- */

/*
 * $1 the seq bound, $2 model or NULL, $3 --max-list-scan, $4 state or NULL,
 * $5 limit + 1. Examines at most $3 rows below the bound (of the model),
 * newest first, as the local store does. Returns the matching ones among
 * them, at most $5, and on every row how many rows were examined and the
 * lowest seq examined. With no match it returns one row whose job columns
 * are NULL, so the counts still arrive.
 */
static const char sql_list[] =
	"WITH scanned AS MATERIALIZED (SELECT seq, state FROM inferq_jobs WHERE seq < $1::bigint "
	"AND ($2::text IS NULL OR model = $2::text) ORDER BY seq DESC LIMIT $3::int), "
	"bounds AS (SELECT count(*) AS examined, min(seq) AS lowest FROM scanned) "
	"SELECT " PGQ_VIEW_COLUMNS ", bounds.examined, bounds.lowest FROM bounds "
	"LEFT JOIN LATERAL (SELECT * FROM inferq_jobs WHERE seq IN (SELECT seq FROM scanned "
	"WHERE $4::int IS NULL OR state = $4::int) ORDER BY seq DESC LIMIT $5::int) j ON true "
	"ORDER BY seq DESC";

#define LIST_EXAMINED_COL 19
#define LIST_LOWEST_COL 20

static void on_listed(void *ctx, int rc, PGresult *const *results, int count, const char *err)
{
	view_call_t *c = ctx;
	const PGresult *r = rc == 0 ? results[0] : NULL;
	buf_t reply = BUF_INIT;
	uint64_t next = 0, examined;
	int rows, matches;

	if (rc != 0) {
		pgq_respond_unavailable(c->server, c->req, rc, err);
		free(c);
		return;
	}
	rows = PQntuples(r);
	matches = rows > 0 && !PQgetisnull(r, 0, 0) ? rows : 0;
	examined = rows > 0 ? strtoull(PQgetvalue(r, 0, LIST_EXAMINED_COL), NULL, 10) : 0;

	buf_puts(&reply, "{\"data\":[");
	for (int i = 0; i < matches && (uint32_t)i < c->limit; i++) {
		job_record_t rec;

		pgq_row_record(r, i, &rec);
		if (i > 0)
			buf_putc(&reply, ',');
		render_status(&reply, &rec);
		job_record_clear(&rec);
	}
	/* The rules of store_list_jobs: the next page starts after the last job shown. */
	if ((uint32_t)matches > c->limit)
		next = strtoull(PQgetvalue(r, (int)c->limit, 1), NULL, 10) + 1;
	else if (examined >= c->server->config.max_list_scan)
		next = strtoull(PQgetvalue(r, 0, LIST_LOWEST_COL), NULL, 10);
	views_end_list(&reply, next);
	respond_json(c->req, 200, &reply);
	free(c);
}

void pg_handle_admin_jobs(server_t *s, http_request_t *req)
{
	input_error_t err;
	list_params_t p;
	pg_stmt_t st = {.sql = sql_list};
	char before[24], scan[16], state[8], limit[16];
	view_call_t *c;

	memset(&p, 0, sizeof(p));
	if (views_read_list_params(s, req, &p, &err) != 0) {
		respond_input_error(req, &err);
		goto out;
	}
	c = call_new(s, req);
	c->limit = p.limit;
	snprintf(before, sizeof(before), "%llu",
		 (unsigned long long)(p.before_seq > INT64_MAX ? INT64_MAX : p.before_seq));
	snprintf(scan, sizeof(scan), "%u", s->config.max_list_scan);
	snprintf(state, sizeof(state), "%d", p.state);
	snprintf(limit, sizeof(limit), "%u", p.limit + 1);
	pgq_param(&st, 0, before);
	if (p.has_model)
		pgq_param_len(&st, 1, p.model.data, p.model.len);
	else
		pgq_param(&st, 1, NULL);
	pgq_param(&st, 2, scan);
	pgq_param(&st, 3, p.state >= 0 ? state : NULL);
	pgq_param(&st, 4, limit);
	pgq_exec(s, &st, 1, on_listed, c);
out:
	buf_free(&p.model);
}

/* ---- GET /v1/admin/jobs/ID ---- */

static const char sql_job[] = "SELECT " PGQ_VIEW_COLUMNS " FROM inferq_jobs WHERE id = $1::uuid";

static void on_job(void *ctx, int rc, PGresult *const *results, int count, const char *err)
{
	view_call_t *c = ctx;
	job_record_t rec;

	if (rc != 0) {
		pgq_respond_unavailable(c->server, c->req, rc, err);
	} else if (PQntuples(results[0]) == 0) {
		views_job_not_found(c->req, &c->id);
	} else {
		pgq_row_record_history(results[0], 0, &rec);
		views_reply_job(c->req, &rec);
		job_record_clear(&rec);
	}
	free(c);
}

void pg_handle_admin_job(server_t *s, http_request_t *req)
{
	pg_stmt_t st = {.sql = sql_job};
	char text[ID_TEXT_LEN + 1];
	view_call_t *c;
	iq_id_t id;

	if (views_read_job_id(req, &id) != 0)
		return;
	c = call_new(s, req);
	c->id = id;
	id_format(&id, text);
	pgq_param(&st, 0, text);
	pgq_exec(s, &st, 1, on_job, c);
}

/* ---- GET /v1/admin/queues ---- */

/*
 * Jobs per model and state, sorted by model bytewise as
 * views_find_store_row expects. A grouped count, not a counter table:
 * it costs the view a scan of the table and costs claims nothing
 * (docs/scale-out.md).
 */
static const char sql_counts[] =
	"SELECT model, state, count(*) FROM inferq_jobs GROUP BY model, state "
	"ORDER BY model COLLATE \"C\", state";

/* The created_at of each model's oldest pending job; it reads the pending rows only. */
static const char sql_oldest[] =
	"SELECT DISTINCT ON (model) model, created_at FROM inferq_jobs WHERE state = 0 "
	"ORDER BY model, seq";

/* Counts a long-poll claim waiting on this node in the row of its model. */
static void add_waiter(void *ctx, const char *model)
{
	queue_rows_t *qr = ctx;
	size_t len = strlen(model);
	queue_row_t *row = NULL;

	for (size_t i = 0; i < qr->count && !row; i++) {
		if (qr->rows[i].model_len == len && memcmp(qr->rows[i].model, model, len) == 0)
			row = &qr->rows[i];
	}
	if (!row)
		row = views_add_queue_row(qr, model, len);
	row->waiting_workers++;
}

static void on_counts(void *ctx, int rc, PGresult *const *results, int count, const char *err)
{
	view_call_t *c = ctx;
	queue_rows_t qr = {NULL, 0, 0, 0};

	if (rc != 0 || count < 2) {
		pgq_respond_unavailable(c->server, c->req, rc ? rc : INFERQ_EIO, err);
		free(c);
		return;
	}
	for (int i = 0; i < PQntuples(results[0]); i++) {
		int state = atoi(PQgetvalue(results[0], i, 1));

		if (state < 0 || state >= JOB_STATE_COUNT)
			continue;
		views_add_queue_count(&qr, PQgetvalue(results[0], i, 0),
				      (size_t)PQgetlength(results[0], i, 0), (job_state_t)state,
				      strtoull(PQgetvalue(results[0], i, 2), NULL, 10));
	}
	qr.from_store = qr.count;
	for (int i = 0; i < PQntuples(results[1]); i++) {
		queue_row_t *row = views_find_store_row(&qr, PQgetvalue(results[1], i, 0),
							(size_t)PQgetlength(results[1], i, 0));

		if (row)
			row->oldest_pending_at = strtoll(PQgetvalue(results[1], i, 1), NULL, 10);
	}
	views_add_memory_figures(c->server, &qr);
	pgq_waiters_each(c->server, add_waiter, &qr);
	views_reply_queues(c->req, &qr);
	views_free_queue_rows(&qr);
	free(c);
}

void pg_handle_admin_queues(server_t *s, http_request_t *req)
{
	pg_stmt_t st[2] = {{.sql = sql_counts}, {.sql = sql_oldest}};

	pgq_exec(s, st, 2, on_counts, call_new(s, req));
}

/* ---- GET /v1/admin/workers ---- */

/* Every running job of the cluster with its claimant, in claim order. */
static const char sql_running[] =
	"SELECT id, model, worker, claimed_at FROM inferq_jobs WHERE state = 1 "
	"ORDER BY claimed_at, seq";

static void on_running(void *ctx, int rc, PGresult *const *results, int count, const char *err)
{
	view_call_t *c = ctx;
	const PGresult *r = rc == 0 ? results[0] : NULL;
	job_record_t *running;
	buf_t reply = BUF_INIT;
	int n;

	if (rc != 0) {
		pgq_respond_unavailable(c->server, c->req, rc, err);
		free(c);
		return;
	}
	n = PQntuples(r);
	running = xcalloc(n > 0 ? (size_t)n : 1, sizeof(*running));
	for (int i = 0; i < n; i++) {
		id_parse(PQgetvalue(r, i, 0), (size_t)PQgetlength(r, i, 0), &running[i].id);
		running[i].model = rbuf_new(PQgetvalue(r, i, 1), (size_t)PQgetlength(r, i, 1));
		if (!PQgetisnull(r, i, 2))
			running[i].worker = rbuf_new(PQgetvalue(r, i, 2), (size_t)PQgetlength(r, i, 2));
		running[i].state = JOB_RUNNING;
		running[i].claimed_at = strtoll(PQgetvalue(r, i, 3), NULL, 10);
	}
	workers_set_running(c->server->workers, running, (size_t)n);
	for (int i = 0; i < n; i++)
		job_record_clear(&running[i]);
	free(running);
	workers_render(c->server->workers, &reply, clock_wall_ms());
	respond_json(c->req, 200, &reply);
	free(c);
}

void pg_handle_admin_workers(server_t *s, http_request_t *req)
{
	pg_stmt_t st = {.sql = sql_running};

	pgq_exec(s, &st, 1, on_running, call_new(s, req));
}
