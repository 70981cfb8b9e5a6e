/*
 * The job record: every persistent field of one job, as the store keeps it
 * and as status responses show it. Byte fields are shared rbuf_t values, so
 * copying a record (for a store operation or an undo image) copies pointers
 * and adds references, never payload bytes.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef INFERQ_JOB_H
#define INFERQ_JOB_H

#include <stdint.h>

#include "buf.h"
#include "ids.h"

typedef enum {
	JOB_PENDING = 0,
	JOB_RUNNING = 1,
	JOB_DONE = 2,
	JOB_FAILED = 3,
	JOB_CANCELED = 4,
} job_state_t;

#define JOB_STATE_COUNT 5

typedef struct job_record {
	iq_id_t id;
	uint64_t seq;             /* submission order: unique, increasing */
	rbuf_t *model;            /* model name */
	int32_t priority;         /* higher first */
	job_state_t state;
	uint32_t retries;         /* lease expiries that sent the job back to pending */
	uint32_t claim_timeout;   /* s, lease length of the latest claim */
	int64_t created_at;       /* ms since epoch */
	int64_t claimed_at;       /* ms since epoch of the latest claim, 0 = never claimed */
	int64_t done_at;          /* ms since epoch of the terminal state, 0 = not terminal */
	int64_t lease_expires_at; /* ms since epoch, 0 = no lease */
	iq_id_t claim_id;         /* latest claim; all zero = none (never claimed, or released) */
	rbuf_t *worker;           /* name the latest claimant gave, or NULL */
	rbuf_t *payload;          /* raw JSON object as submitted */
	rbuf_t *info;             /* raw JSON object, or NULL when absent */
	rbuf_t *outputs;          /* raw JSON object once done, else NULL */
	rbuf_t *error;            /* plain UTF-8 text once failed, else NULL */
	rbuf_t *warnings;         /* raw JSON array of strings from the submit, or NULL */
	rbuf_t *idempotency_key;  /* Idempotency-Key header of the submit, or NULL */
	rbuf_t *body_hash;        /* hex SHA-256 of the submit body, set with idempotency_key */
	rbuf_t *history;          /* raw JSON array of the events after the submit (history.h),
				     oldest first, or NULL when there are none */
} job_record_t;

/* Returns "pending", "running", "done", "failed" or "canceled". */
const char *job_state_name(job_state_t state);
/* Parses a state name; returns 0 or INFERQ_EINVAL. */
int job_state_parse(const char *name, job_state_t *out);
static inline int job_state_is_terminal(job_state_t state)
{
	return state >= JOB_DONE;
}

/* Makes dst a copy of src, adding a reference to each byte field. */
void job_record_copy(job_record_t *dst, const job_record_t *src);
/* Drops the references of r and zeroes it; accepts a zeroed record. */
void job_record_clear(job_record_t *r);

#endif
