/*
 * The parts of the admin views (handlers_views.c) that both stores use:
 * the query parameters of the job listing, the job view with its history,
 * and the rows of the queues view. The postgres store (pg_views.c) reads
 * its rows from the database and renders them with these.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef INFERQ_VIEWS_H
#define INFERQ_VIEWS_H

#include <stdint.h>

#include "request.h"
#include "server.h"

/* Parameters of GET /v1/admin/jobs. */
typedef struct {
	buf_t model;
	int has_model;
	int state; /* job_state_t, or -1 for any */
	uint32_t limit;
	uint64_t before_seq;
} list_params_t;

/*
 * Reads the model, status, limit and cursor of GET /v1/admin/jobs into p
 * (zeroed by the caller; free p->model). Returns 0, or INFERQ_EINVAL with
 * err naming the parameter.
 */
int views_read_list_params(server_t *s, const http_request_t *req, list_params_t *p,
			   input_error_t *err);

/* Ends the listing that starts with {"data":[ and adds next_cursor unless next_before is 0. */
void views_end_list(buf_t *reply, uint64_t next_before);

/* Reads the id of GET /v1/admin/jobs/ID; returns 0, or sends the 400 and returns INFERQ_EINVAL. */
int views_read_job_id(http_request_t *req, iq_id_t *id);
/* Sends the job object of rec with its history. */
void views_reply_job(http_request_t *req, const job_record_t *rec);
/* Sends the 404 of GET /v1/admin/jobs/ID. */
void views_job_not_found(http_request_t *req, const iq_id_t *id);

/* One model's figures in GET /v1/admin/queues. */
typedef struct {
	const char *model; /* borrowed from the store row or the queue's model */
	size_t model_len;
	rbuf_t *name;      /* reference that keeps model alive */
	uint64_t counts[JOB_STATE_COUNT];
	uint64_t waiting_workers;
	const model_state_t *ms; /* or NULL for a model not in memory */
	int64_t oldest_pending_at; /* ms since epoch, 0 = none */
	uint64_t oldest_seq;
} queue_row_t;

typedef struct {
	queue_row_t *rows;
	size_t count, cap;
	size_t from_store; /* rows[0..from_store) came from the store, sorted by model */
} queue_rows_t;

/* Appends a zeroed row for model; the pointer is valid until the next row is added. */
queue_row_t *views_add_queue_row(queue_rows_t *qr, const char *model, size_t len);
/* Sets count n of state in the row of model (ctx is the queue_rows_t); rows of one model come together. */
void views_add_queue_count(void *ctx, const char *model, size_t len, job_state_t state,
			   uint64_t n);
/* Returns the row of model among rows[0..from_store), or NULL. */
queue_row_t *views_find_store_row(queue_rows_t *qr, const char *model, size_t len);
/*
 * Adds this node's in-memory figures: totals since the start, long-poll
 * claims waiting on the local store, and the oldest pending job in memory.
 */
void views_add_memory_figures(server_t *s, queue_rows_t *qr);
/* Sorts the rows by model and sends {"data":[row, ...]}. */
void views_reply_queues(http_request_t *req, queue_rows_t *qr);
/* Frees the rows of qr. */
void views_free_queue_rows(queue_rows_t *qr);

#endif
