/*
 * Admin views for operators and the dashboard: the job listing, one job
 * with its history, the workers seen and the per-model queue figures.
 * Only keys with the admin role reach them (see routes.c). They show
 * committed state only. Jobs and counts come from the store, which contains
 * committed rows alone, and the in-memory figures (totals, workers) change
 * only when a commit succeeds.
 * The parts the postgres store reuses (pg_views.c) are declared in views.h.
 *
 * SPDX-License-Identifier: MIT
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "clock.h"
#include "history.h"
#include "inferq_error.h"
#include "json.h"
#include "render.h"
#include "request.h"
#include "routes.h"
#include "views.h"

#define JOBS_PATH "/v1/admin/jobs/"
#define LIST_DEFAULT_LIMIT 50
#define LIST_MAX_LIMIT 1000
#define CURSOR_LEN 16 /* hex digits of the seq bound; the format is not part of the API */
#define QUERY_VALUE_MAX 256

/* Reads optional query parameter name into value; returns 1, 0 when absent, or < 0 with err. */
static int query_text(const http_request_t *req, const char *name, char *value, size_t *len,
		      input_error_t *err)
{
	int rc = http_query_param(req->query, req->query_len, name, value, QUERY_VALUE_MAX + 1,
				  len);

	if (rc < 0)
		return input_fail(err, INFERQ_EINVAL, "invalid_field", name,
				  "query parameter \"%s\" is not valid percent-encoded text, "
				  "contains a NUL, or is longer than %d bytes",
				  name, QUERY_VALUE_MAX);
	return rc;
}

static int read_status_filter(const http_request_t *req, list_params_t *p, input_error_t *err)
{
	char value[QUERY_VALUE_MAX + 1], shown[64];
	size_t len = 0;
	job_state_t state;
	int rc = query_text(req, "status", value, &len, err);

	if (rc <= 0)
		return rc;
	if (job_state_parse(value, &state) != 0)
		return input_fail(err, INFERQ_EINVAL, "invalid_field", "status",
				  "status \"%s\" is not a job status; use pending, running, done, "
				  "failed or canceled",
				  excerpt(value, len, shown, sizeof(shown)));
	p->state = (int)state;
	return 0;
}

static int read_limit(const http_request_t *req, list_params_t *p, input_error_t *err)
{
	char value[QUERY_VALUE_MAX + 1], shown[64];
	size_t len = 0;
	uint64_t n = 0;
	int rc = query_text(req, "limit", value, &len, err);

	if (rc <= 0)
		return rc;
	for (size_t i = 0; i < len && n <= LIST_MAX_LIMIT; i++) {
		if (value[i] < '0' || value[i] > '9') {
			n = 0;
			break;
		}
		n = n * 10 + (uint64_t)(value[i] - '0');
	}
	if (n < 1 || n > LIST_MAX_LIMIT)
		return input_fail(err, INFERQ_EINVAL, "invalid_field", "limit",
				  "limit \"%s\" is not a whole number from 1 to %d; send e.g. "
				  "limit=100",
				  excerpt(value, len, shown, sizeof(shown)), LIST_MAX_LIMIT);
	p->limit = (uint32_t)n;
	return 0;
}

/* A cursor is the seq bound of the next page as CURSOR_LEN lowercase hex digits. */
static int read_cursor(const http_request_t *req, list_params_t *p, input_error_t *err)
{
	char value[QUERY_VALUE_MAX + 1], shown[64];
	size_t len = 0;
	uint64_t seq = 0;
	int rc = query_text(req, "cursor", value, &len, err);

	if (rc <= 0)
		return rc;
	for (size_t i = 0; i < len && len == CURSOR_LEN; i++) {
		char ch = value[i];
		unsigned digit;

		if (ch >= '0' && ch <= '9')
			digit = (unsigned)(ch - '0');
		else if (ch >= 'a' && ch <= 'f')
			digit = (unsigned)(ch - 'a' + 10);
		else {
			seq = 0;
			break;
		}
		seq = seq << 4 | digit;
	}
	if (len != CURSOR_LEN || seq == 0 || seq > INT64_MAX)
		return input_fail(err, INFERQ_EINVAL, "invalid_field", "cursor",
				  "cursor \"%s\" is not a cursor this server returned; send the "
				  "next_cursor of the previous page unchanged, or leave cursor out "
				  "for the first page",
				  excerpt(value, len, shown, sizeof(shown)));
	p->before_seq = seq;
	return 0;
}

int views_read_list_params(server_t *s, const http_request_t *req, list_params_t *p,
			   input_error_t *err)
{
	char value[QUERY_VALUE_MAX + 1];
	size_t len = 0;
	int rc;

	p->state = -1;
	p->limit = LIST_DEFAULT_LIMIT;
	p->before_seq = UINT64_MAX;
	rc = http_query_param(req->query, req->query_len, "model", value, sizeof(value), &len);
	if (rc != 0) {
		/* Present (or malformed): the status route's rules and messages apply. */
		if (read_model_query(&s->config, req->query, req->query_len, &p->model, err) != 0)
			return INFERQ_EINVAL;
		p->has_model = 1;
	}
	if (read_status_filter(req, p, err) != 0 || read_limit(req, p, err) != 0 ||
	    read_cursor(req, p, err) != 0)
		return INFERQ_EINVAL;
	return 0;
}

typedef struct {
	buf_t *out;
	size_t count;
} list_ctx_t;

static int add_listed_job(void *ctx, const job_record_t *rec)
{
	list_ctx_t *lc = ctx;

	if (lc->count++ > 0)
		buf_putc(lc->out, ',');
	render_status(lc->out, rec);
	return 0;
}

void handle_admin_jobs(server_t *s, http_request_t *req)
{
	input_error_t err;
	list_params_t p;
	store_list_t query;
	buf_t reply = BUF_INIT;
	list_ctx_t lc = {&reply, 0};
	uint64_t next = 0;
	int rc;

	memset(&p, 0, sizeof(p));
	if (views_read_list_params(s, req, &p, &err) != 0) {
		respond_input_error(req, &err);
		goto out;
	}
	query.model = p.has_model ? p.model.data : NULL;
	query.model_len = p.model.len;
	query.state = p.state;
	query.before_seq = p.before_seq;
	query.limit = p.limit;
	query.max_scan = s->config.max_list_scan;

	buf_puts(&reply, "{\"data\":[");
	rc = store_list_jobs(s->store, &query, add_listed_job, &lc, &next);
	if (rc != 0) {
		respond_error(req, 503, "store_unavailable", NULL,
			      "the store could not be read; retry later");
		goto out;
	}
	views_end_list(&reply, next);
	respond_json(req, 200, &reply);
out:
	buf_free(&reply);
	buf_free(&p.model);
}

void views_end_list(buf_t *reply, uint64_t next_before)
{
	buf_putc(reply, ']');
	if (next_before != 0)
		buf_printf(reply, ",\"next_cursor\":\"%016" PRIx64 "\"", next_before);
	buf_putc(reply, '}');
}

void views_reply_job(http_request_t *req, const job_record_t *rec)
{
	buf_t reply = BUF_INIT;
	buf_t history = BUF_INIT;

	render_status(&reply, rec);
	history_render(&history, rec);
	render_add_raw_field(&reply, "history", history.data, history.len);
	respond_json(req, 200, &reply);
	buf_free(&history);
}

int views_read_job_id(http_request_t *req, iq_id_t *id)
{
	const char *text = req->path + strlen(JOBS_PATH);
	size_t len = req->path_len - strlen(JOBS_PATH);
	char shown[64];

	if (id_parse(text, len, id) == 0)
		return 0;
	respond_error(req, 400, "invalid_field", "request_id",
		      "request_id \"%s\" in the path is not a valid id; expected the "
		      "36-character UUID the server returned",
		      excerpt(text, len, shown, sizeof(shown)));
	return INFERQ_EINVAL;
}

void views_job_not_found(http_request_t *req, const iq_id_t *id)
{
	char id_text[ID_TEXT_LEN + 1];

	id_format(id, id_text);
	respond_error(req, 404, "not_found", "request_id",
		      "no job with request_id %s; check the id, or the job may have been "
		      "deleted after the retention period",
		      id_text);
}

void handle_admin_job(server_t *s, http_request_t *req)
{
	const job_record_t *rec;
	job_record_t row;
	job_t *job;
	iq_id_t id;
	int rc;

	if (views_read_job_id(req, &id) != 0)
		return;

	/* A job in memory shows its committed image; one whose insert is uncommitted does not exist yet. */
	job = queue_find(s->queue, &id);
	rec = job ? engine_committed_record(job) : NULL;
	if (rec) {
		views_reply_job(req, rec);
		return;
	}
	rc = job ? INFERQ_ENOTFOUND : store_get(s->store, &id, &row);
	if (rc == 0) {
		views_reply_job(req, &row);
		job_record_clear(&row);
	} else if (rc == INFERQ_ENOTFOUND) {
		views_job_not_found(req, &id);
	} else {
		respond_error(req, 503, "store_unavailable", NULL,
			      "the store could not be read; retry later");
	}
}

void handle_admin_workers(server_t *s, http_request_t *req)
{
	buf_t reply = BUF_INIT;

	workers_render(s->workers, &reply, clock_wall_ms());
	respond_json(req, 200, &reply);
}

queue_row_t *views_add_queue_row(queue_rows_t *qr, const char *model, size_t len)
{
	queue_row_t *row;

	if (qr->count == qr->cap) {
		qr->cap = qr->cap ? qr->cap * 2 : 16;
		qr->rows = xrealloc(qr->rows, qr->cap * sizeof(*qr->rows));
	}
	row = &qr->rows[qr->count++];
	memset(row, 0, sizeof(*row));
	row->name = rbuf_new(model, len);
	row->model = row->name->data;
	row->model_len = len;
	return row;
}

static int compare_model(const char *a, size_t alen, const char *b, size_t blen)
{
	int c = memcmp(a, b, alen < blen ? alen : blen);

	if (c != 0)
		return c;
	return alen < blen ? -1 : alen > blen;
}

void views_add_queue_count(void *ctx, const char *model, size_t len, job_state_t state,
			   uint64_t n)
{
	queue_rows_t *qr = ctx;
	queue_row_t *last = qr->count ? &qr->rows[qr->count - 1] : NULL;

	/* The store sends the rows of one model together. */
	if (!last || compare_model(last->model, last->model_len, model, len) != 0)
		last = views_add_queue_row(qr, model, len);
	last->counts[state] = n;
}

queue_row_t *views_find_store_row(queue_rows_t *qr, const char *model, size_t len)
{
	size_t lo = 0, hi = qr->from_store;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = compare_model(qr->rows[mid].model, qr->rows[mid].model_len, model, len);

		if (c == 0)
			return &qr->rows[mid];
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}

static void note_pending(const job_t *job, void *ctx)
{
	queue_row_t *row = ctx;
	const job_record_t *rec = engine_committed_record(job);

	/*
	 * Committed pending jobs only. NOTE: a pending job whose claim is not
	 * committed yet has left the pending heap and is missed for that moment.
	 */
	if (!rec || rec->state != JOB_PENDING)
		return;
	if (row->oldest_pending_at == 0 || rec->seq < row->oldest_seq) {
		row->oldest_seq = rec->seq;
		row->oldest_pending_at = rec->created_at;
	}
}

static void add_memory_figures(queue_model_t *m, void *ctx)
{
	queue_rows_t *qr = ctx;
	const model_state_t *ms = m->user;
	queue_row_t *row = views_find_store_row(qr, m->name->data, m->name->len);
	uint64_t waiters = ms ? claim_waiter_count(ms) : 0;

	if (!row && waiters == 0 &&
	    !(ms && (ms->submitted_total || ms->completed_total || ms->failed_total)))
		return;
	if (!row)
		row = views_add_queue_row(qr, m->name->data, m->name->len);
	row->ms = ms;
	row->waiting_workers = waiters;
	queue_pending_each(m, note_pending, row);
}

static int by_model(const void *a, const void *b)
{
	const queue_row_t *x = a, *y = b;

	return compare_model(x->model, x->model_len, y->model, y->model_len);
}

static void render_queue_row(buf_t *out, const queue_row_t *row)
{
	static const char *const names[JOB_STATE_COUNT] = {"pending", "running", "done", "failed",
							   "canceled"};

	buf_putc(out, '{');
	json_write_key(out, "model");
	json_write_string(out, row->model, row->model_len);
	for (int i = 0; i < JOB_STATE_COUNT; i++)
		buf_printf(out, ",\"%s\":%llu", names[i], (unsigned long long)row->counts[i]);
	buf_printf(out,
		   ",\"waiting_workers\":%llu,\"submitted_total\":%llu,\"completed_total\":%llu,"
		   "\"failed_total\":%llu",
		   (unsigned long long)row->waiting_workers,
		   (unsigned long long)(row->ms ? row->ms->submitted_total : 0),
		   (unsigned long long)(row->ms ? row->ms->completed_total : 0),
		   (unsigned long long)(row->ms ? row->ms->failed_total : 0));
	if (row->oldest_pending_at)
		render_time_field(out, "oldest_pending_at", row->oldest_pending_at);
	buf_putc(out, '}');
}

void views_add_memory_figures(server_t *s, queue_rows_t *qr)
{
	queue_model_each(s->queue, add_memory_figures, qr);
}

void views_reply_queues(http_request_t *req, queue_rows_t *qr)
{
	buf_t reply = BUF_INIT;

	if (qr->count > 0)
		qsort(qr->rows, qr->count, sizeof(*qr->rows), by_model);
	buf_puts(&reply, "{\"data\":[");
	for (size_t i = 0; i < qr->count; i++) {
		if (i > 0)
			buf_putc(&reply, ',');
		render_queue_row(&reply, &qr->rows[i]);
	}
	buf_puts(&reply, "]}");
	respond_json(req, 200, &reply);
}

void views_free_queue_rows(queue_rows_t *qr)
{
	for (size_t i = 0; i < qr->count; i++)
		rbuf_unref(qr->rows[i].name);
	free(qr->rows);
}

void handle_admin_queues(server_t *s, http_request_t *req)
{
	queue_rows_t qr = {NULL, 0, 0, 0};

	if (store_count_jobs(s->store, views_add_queue_count, &qr) != 0) {
		respond_error(req, 503, "store_unavailable", NULL,
			      "the store could not be read; retry later");
		goto out;
	}
	qr.from_store = qr.count;
	views_add_memory_figures(s, &qr);
	views_reply_queues(req, &qr);
out:
	views_free_queue_rows(&qr);
}
