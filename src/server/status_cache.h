/*
 * Cache of rendered status bodies of finished jobs, so that repeated status
 * reads of a finished job cost no SQLite read (and no POSIX lock and unlock
 * of the database file). A finished job's row never changes until the
 * retention purge deletes it, so an entry stays valid until the caller
 * forgets it when that purge commits, or, on the postgres store, where
 * another node may delete it, until the expiry given with it. The cache contains at most max_bytes of
 * entries, counted with their overhead, and drops the least recently used
 * entry first.
 *
 * Every function but status_cache_new accepts a NULL cache and treats it as
 * one of 0 bytes. Loop thread only.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef INFERQ_STATUS_CACHE_H
#define INFERQ_STATUS_CACHE_H

#include <stddef.h>
#include <stdint.h>

#include "ids.h"

typedef struct status_cache status_cache_t;

/*
 * Creates a cache of at most max_bytes (0: a cache that stores nothing).
 * Aborts when out of memory. Free it with status_cache_free().
 */
status_cache_t *status_cache_new(size_t max_bytes);

/* Frees the cache and every entry. Accepts NULL. */
void status_cache_free(status_cache_t *cache);

/*
 * Looks up id. On a hit, points *model and *body at the entry's model name
 * and body (valid until the next call that changes the cache), sets their
 * lengths, marks the entry as most recently used and returns 0. Returns
 * INFERQ_ENOTFOUND on a miss.
 */
int status_cache_get(status_cache_t *cache, const iq_id_t *id, const char **model,
		     size_t *model_len, const char **body, size_t *body_len);

/*
 * Stores a copy of the body of finished job id of model, replacing any
 * entry of id, and drops least recently used entries until the total fits.
 * Returns 0, or INFERQ_ELIMIT when the entry alone is larger than an eighth
 * of max_bytes and is therefore not stored.
 */
int status_cache_put(status_cache_t *cache, const iq_id_t *id, const char *model,
		     size_t model_len, const char *body, size_t body_len);

/*
 * The same as status_cache_put, for an entry that is stale from
 * clock_mono_ms() expires_ms on: status_cache_get then drops it and
 * returns INFERQ_ENOTFOUND. expires_ms 0 means never, as status_cache_put.
 */
int status_cache_put_until(status_cache_t *cache, const iq_id_t *id, const char *model,
			   size_t model_len, const char *body, size_t body_len, int64_t expires_ms);

/* Drops the entries of the count ids in ids (those not cached are skipped). */
void status_cache_forget(status_cache_t *cache, const iq_id_t *ids, size_t count);

/* Returns the bytes the entries take, as counted against max_bytes. */
size_t status_cache_bytes(const status_cache_t *cache);

/* Returns the number of entries. */
size_t status_cache_count(const status_cache_t *cache);

#endif
