/*
 * Idempotency keys of submits. A client that sends the same
 * Idempotency-Key header for the same model within the key window gets the
 * first job's id back instead of a second job, so a submit retried after a
 * lost response never runs twice; the same key with a different body is a
 * conflict. Committed keys live in the store (indexed by model and key);
 * this map holds only the keyed submits whose insert is not committed yet,
 * so it stays as small as one commit batch.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef INFERQ_IDEMPOTENCY_H
#define INFERQ_IDEMPOTENCY_H

#include <stddef.h>

#include "queue.h"

#define IDEMPOTENCY_KEY_MAX 255 /* bytes */
#define BODY_HASH_HEX 64        /* characters of a hex SHA-256 */

typedef struct idempotency idempotency_t;

idempotency_t *idempotency_new(void);
/* Frees the map (not the jobs). Accepts NULL. */
void idempotency_free(idempotency_t *m);

/*
 * Tracks job, whose record has idempotency_key and body_hash set and whose
 * insert is not committed yet.
 */
void idempotency_track(idempotency_t *m, job_t *job);
/* Stops tracking job (its insert committed, or was rolled back); no-op when untracked. */
void idempotency_untrack(idempotency_t *m, job_t *job);
/* Returns the uncommitted job of model with key, or NULL. */
job_t *idempotency_find(idempotency_t *m, const char *model, size_t model_len, const char *key,
			size_t key_len);

/* Returns 1 when key[0..len) is a valid key: 1 to 255 visible ASCII characters. */
int idempotency_key_valid(const char *key, size_t len);
/* Writes the hex SHA-256 of body[0..len) and a NUL into out. */
void idempotency_body_hash(const char *body, size_t len, char out[BODY_HASH_HEX + 1]);

#endif
