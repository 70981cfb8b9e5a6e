/*
 * The history of a job: what happened to it after its submit, as a raw
 * JSON array of event objects kept in job_record_t.history and stored with
 * the job, so each event commits together with the change it records.
 * The array contains at most a caller-given number of events (the newest).
 * The submit itself is never stored, because created_at already records
 * it, and history_render() shows it first. No I/O and no clock: callers
 * pass the time in.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef INFERQ_HISTORY_H
#define INFERQ_HISTORY_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "job.h"

/* The fixed set of event names, in the order of history_event_t. */
typedef enum {
	HISTORY_NONE = 0,  /* a change that is no event (a heartbeat) */
	HISTORY_SUBMITTED, /* never stored: rendered from created_at */
	HISTORY_CLAIMED,   /* a worker took the job (or took it back with a late heartbeat) */
	HISTORY_RELEASED,  /* the worker gave the job back */
	HISTORY_EXPIRED,   /* the lease ran out; worker is the one that held it */
	HISTORY_RETRIED,   /* after an expiry, back to pending with retries + 1 */
	HISTORY_COMPLETED,
	HISTORY_FAILED,    /* by the worker, or after an expiry past the last retry */
	HISTORY_CANCELED,
} history_event_t;

#define HISTORY_DETAIL_MAX 256 /* bytes of an event's detail text kept; longer is cut */

/* Returns the event's name, such as "claimed"; "" for HISTORY_NONE. */
const char *history_event_name(history_event_t event);

/*
 * Returns the event of a change from state prev to state next made by a
 * worker or client call: claimed, released, completed, failed or canceled,
 * and HISTORY_NONE when the state did not change (a heartbeat). Lease
 * expiries are recorded by the lease timer with explicit events instead,
 * because from the states alone an expiry looks like a release or a fail.
 */
history_event_t history_event_of(job_state_t prev, job_state_t next);

/*
 * Appends one event to rec->history: {"at", "event", "worker"?, "detail"?}.
 * at_ms is ms since the epoch. worker (may be NULL) is the claimant's name.
 * detail (may be NULL) is plain text, cut to HISTORY_DETAIL_MAX bytes on a
 * UTF-8 boundary. Keeps only the newest max events, dropping the oldest;
 * max 0 keeps none and leaves rec->history NULL. rec->history is replaced
 * by a new rbuf_t, so copies of the record taken before are not changed.
 * Loop thread (it changes reference counts).
 */
void history_append(job_record_t *rec, history_event_t event, int64_t at_ms,
		    const rbuf_t *worker, const char *detail, uint32_t max);

/* Returns how many events rec->history contains (the submit not counted). */
size_t history_count(const job_record_t *rec);

/*
 * Appends the JSON array of the job's history to out: the submit (at
 * created_at) first, then the stored events, oldest first.
 */
void history_render(buf_t *out, const job_record_t *rec);

#endif
