/*
 * Batch routes (handlers_batch.c, and pg_batch.c on the postgres store):
 * the request checks, the stored Idempotency-Keys of a batch's jobs and the
 * JSON of the responses, shared so that both stores respond alike.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef INFERQ_BATCH_H
#define INFERQ_BATCH_H

#include "request.h"
#include "server.h"

#define BATCH_KEY_MAX (IDEMPOTENCY_KEY_MAX + 12) /* "KEY i" with a space and up to 10 digits */

/* One checked job of a batch; its spans point into the request body. */
typedef struct {
	body_t body;
	buf_t model;
	json_span_t payload;
	json_span_t info;
	int has_info;
	int64_t priority;
} batch_item_t;

/* A submit_batch request after its checks. */
typedef struct {
	body_t top;
	batch_item_t *items;
	size_t count;
	const char *key; /* Idempotency-Key header, or NULL */
	size_t key_len;
	char hash[BODY_HASH_HEX + 1]; /* of the whole body, when key is set */
} batch_t;

/* The fields of one job of a complete_batch, read from its object. */
typedef struct {
	body_t body;
	buf_t model;
	iq_id_t id;
	iq_id_t claim_id;
	int has_claim;
	json_span_t outputs;
	json_span_t info;
	int has_info;
} complete_item_t;

/*
 * Checks the envelope {"jobs": [...]} of a batch route: an array of 1 to
 * --max-batch elements. Fills b->top, b->count and *jobs, or responds and
 * returns an error.
 */
int batch_check_envelope(server_t *s, http_request_t *req, batch_t *b, const json_span_t **jobs);

/*
 * Reads the jobs of a submit_batch and checks every one (fields, then
 * whether the request's key covers its model). Responds and returns an
 * error on the first fault.
 */
int batch_check(server_t *s, http_request_t *req, batch_t *b);

void batch_free(batch_t *b);

/* Writes the stored Idempotency-Key of job index: "KEY index". */
size_t batch_member_key(const batch_t *b, size_t index, char out[BATCH_KEY_MAX + 1]);

/* Appends the 200 body of a submit_batch: {"data": [ids of b's jobs, in order]}. */
void batch_render_ids(buf_t *reply, const batch_t *b, const iq_id_t *ids);

/* Sends the 409 for a batch whose Idempotency-Key was used for another body. */
void batch_respond_key_reused(http_request_t *req, const batch_t *b);

/* Sends the 409 for a replayed batch some of whose jobs retention deleted. */
void batch_respond_members_gone(http_request_t *req, const batch_t *b);

/* Reads the fields of one complete_batch job. Returns 0, or a negative code with err filled. */
int batch_read_complete_item(server_t *s, const json_span_t *v, complete_item_t *it, int *has_id,
                             input_error_t *err);

/* Why one job of a complete_batch cannot be completed. */
typedef enum {
	BATCH_FAULT_NOT_FOUND,   /* 404: no such job for the model, or the key does not cover it */
	BATCH_FAULT_FINISHED,    /* 409 invalid_state */
	BATCH_FAULT_NO_CLAIM,    /* 409 claim_mismatch: the job has no claim_id */
	BATCH_FAULT_NOT_CURRENT, /* 409 claim_mismatch: the job is under another claim */
	BATCH_FAULT_TOO_LARGE,   /* 400: info too large or deep after the merge */
} batch_fault_t;

/* Fills err, with its HTTP status, for job id of model that failed with fault in state. */
void batch_fault(const server_t *s, input_error_t *err, batch_fault_t fault, const iq_id_t *id,
                 const buf_t *model, job_state_t state);

/*
 * Appends the result of job index that failed with err to reply: its
 * request_id when id is set, and the QueueError object of err, with the
 * job's unchanged status when state is a job_state_t (not -1).
 */
void batch_put_job_error(buf_t *reply, size_t index, const iq_id_t *id, const input_error_t *err,
                         int state);

#endif
