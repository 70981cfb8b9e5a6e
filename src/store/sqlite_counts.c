/*
 * The number of jobs per model and state (table job_counts), kept by the
 * writer thread. Each batch adds up its changes in memory and writes one
 * upsert per model and state it touched just before it commits. The
 * triggers of schema version 4 ran two statements per changed row instead.
 *
 * SPDX-License-Identifier: MIT
 */
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "sqlite_store.h"

void count_deltas_reset(count_deltas_t *deltas)
{
	deltas->n = 0;
	deltas->last = 0;
}

void count_deltas_free(count_deltas_t *deltas)
{
	free(deltas->v);
	memset(deltas, 0, sizeof(*deltas));
}

static void add(count_deltas_t *deltas, const char *model, size_t len, job_state_t state,
		int64_t delta)
{
	count_delta_t *entry;

	/* A batch usually changes jobs of one model, op after op, so the last entry is tried first. */
	for (size_t i = deltas->last; i < deltas->n + deltas->last; i++) {
		entry = &deltas->v[i % deltas->n];
		if (entry->state == state && entry->len == len &&
		    memcmp(entry->model, model, len) == 0) {
			entry->delta += delta;
			deltas->last = i % deltas->n;
			return;
		}
	}
	if (deltas->n == deltas->cap) {
		deltas->cap = deltas->cap ? deltas->cap * 2 : 16;
		deltas->v = xrealloc(deltas->v, deltas->cap * sizeof(*deltas->v));
	}
	entry = &deltas->v[deltas->n];
	entry->model = model;
	entry->len = len;
	entry->state = state;
	entry->delta = delta;
	deltas->last = deltas->n++;
}

void count_deltas_op(count_deltas_t *deltas, const store_op_t *op)
{
	const rbuf_t *model = op->rec.model;

	switch (op->kind) {
	case STORE_OP_INSERT:
		if (model)
			add(deltas, model->data, model->len, op->rec.state, 1);
		break;
	case STORE_OP_UPDATE:
		if (model && op->prev_state != op->rec.state && op->prev_state < JOB_STATE_COUNT) {
			add(deltas, model->data, model->len, op->prev_state, -1);
			add(deltas, model->data, model->len, op->rec.state, 1);
		}
		break;
	case STORE_OP_PURGE:
		for (size_t i = 0; i < op->purged_by_count; i++) {
			const store_purged_t *purged = &op->purged_by[i];

			add(deltas, purged->model, strlen(purged->model), purged->state,
			    -(int64_t)purged->count);
		}
		break;
	default: break;
	}
}
