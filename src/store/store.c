/*
 * The backend-independent half of the store: batch helpers, and the store_*
 * functions, which forward each call to the backend that store_open()
 * picked. Only the local SQLite backend exists so far.
 *
 * SPDX-License-Identifier: MIT
 */
#include "store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "inferq_error.h"
#include "log.h"

struct store {
	const store_backend_t *backend;
	void *state; /* the backend's own */
};

int store_open(const store_config_t *config, store_t **out, char *err, size_t errlen)
{
	const store_backend_t *backend = &store_backend_local;
	void *state = NULL;
	int rc;

	*out = NULL;
	if (errlen > 0)
		err[0] = '\0';
	rc = backend->open(config, &state, err, errlen);
	if (rc < 0)
		return rc;

	*out = xmalloc(sizeof(**out));
	(*out)->backend = backend;
	(*out)->state = state;
	return 0;
}

void store_close(store_t *s)
{
	if (!s)
		return;
	s->backend->close(s->state);
	free(s);
}

int store_load(store_t *s, int (*fn)(void *ctx, job_record_t *rec), void *ctx, uint64_t *max_seq)
{
	return s->backend->load(s->state, fn, ctx, max_seq);
}

int store_load_keys(store_t *s, int (*fn)(void *ctx, store_key_t *key), void *ctx)
{
	return s->backend->load_keys(s->state, fn, ctx);
}

int store_count_finished(store_t *s,
			 int (*fn)(void *ctx, const char *model, job_state_t state, uint64_t count),
			 void *ctx)
{
	return s->backend->count_finished(s->state, fn, ctx);
}

int store_find_idempotency(store_t *s, const char *model, size_t model_len, const char *key,
			   size_t key_len, int64_t since_ms, iq_id_t *id, char body_hash[65])
{
	return s->backend->find_idempotency(s->state, model, model_len, key, key_len, since_ms, id,
					    body_hash);
}

int store_commit(store_t *s, store_batch_t *batch, store_commit_cb cb, void *ctx)
{
	IQ_ASSERT(batch != NULL && cb != NULL);
	return s->backend->commit(s->state, batch, cb, ctx);
}

int store_writer_idle(store_t *s)
{
	return s->backend->writer_idle(s->state);
}

int store_get(store_t *s, const iq_id_t *id, job_record_t *out)
{
	return s->backend->get(s->state, id, out);
}

int store_list_jobs(store_t *s, const store_list_t *query, store_list_cb fn, void *ctx,
		    uint64_t *next_before)
{
	return s->backend->list_jobs(s->state, query, fn, ctx, next_before);
}

int store_count_jobs(store_t *s, store_count_cb fn, void *ctx)
{
	return s->backend->count_jobs(s->state, fn, ctx);
}

int store_check(store_t *s, char *err, size_t errlen)
{
	if (!s) {
		snprintf(err, errlen, "the store is not open");
		return INFERQ_EIO;
	}
	return s->backend->check(s->state, err, errlen);
}

void store_batch_init(store_batch_t *batch)
{
	memset(batch, 0, sizeof(*batch));
}

store_op_t *store_batch_add(store_batch_t *batch, store_op_kind_t kind)
{
	store_op_t *op;

	if (batch->count == batch->cap) {
		batch->cap = batch->cap ? batch->cap * 2 : 64;
		batch->ops = xrealloc(batch->ops, batch->cap * sizeof(*batch->ops));
	}
	op = &batch->ops[batch->count++];
	memset(op, 0, sizeof(*op));
	op->kind = kind;
	return op;
}

void store_batch_reset(store_batch_t *batch)
{
	for (size_t i = 0; i < batch->count; i++) {
		job_record_clear(&batch->ops[i].rec);
		rbuf_unref(batch->ops[i].key.models);
		batch->ops[i].key.models = NULL;
		free(batch->ops[i].purged_ids);
		batch->ops[i].purged_ids = NULL;
		for (size_t j = 0; j < batch->ops[i].purged_by_count; j++)
			free(batch->ops[i].purged_by[j].model);
		free(batch->ops[i].purged_by);
		batch->ops[i].purged_by = NULL;
		batch->ops[i].purged_by_count = 0;
	}
	batch->count = 0;
	batch->result = 0;
	batch->error[0] = '\0';
}

void store_batch_free(store_batch_t *batch)
{
	store_batch_reset(batch);
	free(batch->ops);
	store_batch_init(batch);
}
