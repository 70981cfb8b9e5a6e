/*
 * Status body cache (see status_cache.h): a chained hash table keyed by job
 * id, and a doubly linked list of the same entries in order of use, most
 * recent first. Each entry is one allocation holding its links, its id, the
 * model name and the body. The table doubles when it has more entries
 * than buckets, so a chain stays short: job ids are random past their
 * timestamp, and the hash uses those bytes.
 *
 * SPDX-License-Identifier: MIT
 */
#include "status_cache.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "clock.h"
#include "inferq_error.h"

#define MIN_BUCKETS 64

struct entry {
	struct entry *chain;      /* next entry of the same bucket */
	struct entry *prev, *next; /* use order: prev is more recently used */
	iq_id_t id;
	size_t model_len;
	size_t body_len;
	size_t charge; /* bytes counted against max_bytes */
	int64_t expires_ms; /* clock_mono_ms() from which the entry is stale; 0 = never */
	char data[];   /* model, NUL, body, NUL */
};

struct status_cache {
	size_t max_bytes;
	size_t bytes;
	size_t count;
	struct entry **buckets;
	size_t bucket_count; /* power of two */
	struct entry *newest, *oldest;
};

static uint64_t hash_id(const iq_id_t *id)
{
	uint64_t a, b;

	memcpy(&a, id->b, sizeof(a));
	memcpy(&b, id->b + 8, sizeof(b));
	b ^= a;
	b ^= b >> 33;
	b *= 0xff51afd7ed558ccdULL;
	b ^= b >> 33;
	return b;
}

static struct entry **bucket_of(status_cache_t *cache, const iq_id_t *id)
{
	return &cache->buckets[hash_id(id) & (cache->bucket_count - 1)];
}

status_cache_t *status_cache_new(size_t max_bytes)
{
	status_cache_t *cache = xcalloc(1, sizeof(*cache));

	cache->max_bytes = max_bytes;
	cache->bucket_count = MIN_BUCKETS;
	cache->buckets = xcalloc(cache->bucket_count, sizeof(*cache->buckets));
	return cache;
}

void status_cache_free(status_cache_t *cache)
{
	struct entry *e, *next;

	if (cache == NULL)
		return;
	for (e = cache->newest; e; e = next) {
		next = e->next;
		free(e);
	}
	free(cache->buckets);
	free(cache);
}

static void unlink_use(status_cache_t *cache, struct entry *e)
{
	if (e->prev)
		e->prev->next = e->next;
	else
		cache->newest = e->next;
	if (e->next)
		e->next->prev = e->prev;
	else
		cache->oldest = e->prev;
	e->prev = e->next = NULL;
}

static void link_newest(status_cache_t *cache, struct entry *e)
{
	e->prev = NULL;
	e->next = cache->newest;
	if (cache->newest)
		cache->newest->prev = e;
	else
		cache->oldest = e;
	cache->newest = e;
}

/* Returns the link that points at id's entry, or at the NULL ending its bucket. */
static struct entry **find_link(status_cache_t *cache, const iq_id_t *id)
{
	struct entry **link = bucket_of(cache, id);

	while (*link && memcmp((*link)->id.b, id->b, ID_BYTES) != 0)
		link = &(*link)->chain;
	return link;
}

static void remove_entry(status_cache_t *cache, struct entry **link)
{
	struct entry *e = *link;

	*link = e->chain;
	unlink_use(cache, e);
	cache->bytes -= e->charge;
	cache->count--;
	free(e);
}

static void grow_table(status_cache_t *cache)
{
	size_t n = cache->bucket_count * 2;
	struct entry **buckets = xcalloc(n, sizeof(*buckets));

	for (size_t i = 0; i < cache->bucket_count; i++) {
		struct entry *e = cache->buckets[i];

		while (e) {
			struct entry *next = e->chain;
			struct entry **head = &buckets[hash_id(&e->id) & (n - 1)];

			e->chain = *head;
			*head = e;
			e = next;
		}
	}
	free(cache->buckets);
	cache->buckets = buckets;
	cache->bucket_count = n;
}

int status_cache_get(status_cache_t *cache, const iq_id_t *id, const char **model,
		     size_t *model_len, const char **body, size_t *body_len)
{
	struct entry **link = cache ? find_link(cache, id) : NULL;
	struct entry *e = link ? *link : NULL;

	if (e == NULL)
		return INFERQ_ENOTFOUND;
	if (e->expires_ms && clock_mono_ms() >= e->expires_ms) {
		remove_entry(cache, link);
		return INFERQ_ENOTFOUND;
	}
	if (cache->newest != e) {
		unlink_use(cache, e);
		link_newest(cache, e);
	}
	*model = e->data;
	*model_len = e->model_len;
	*body = e->data + e->model_len + 1;
	*body_len = e->body_len;
	return 0;
}

int status_cache_put(status_cache_t *cache, const iq_id_t *id, const char *model,
		     size_t model_len, const char *body, size_t body_len)
{
	return status_cache_put_until(cache, id, model, model_len, body, body_len, 0);
}

int status_cache_put_until(status_cache_t *cache, const iq_id_t *id, const char *model,
			   size_t model_len, const char *body, size_t body_len, int64_t expires_ms)
{
	/* The table has one to two buckets per entry, because it doubles once the
	 * entries outnumber the buckets, so each entry is charged two pointers. */
	size_t charge = sizeof(struct entry) + model_len + body_len + 2 + 2 * sizeof(void *);
	struct entry **link;
	struct entry *e;

	if (cache == NULL || charge > cache->max_bytes / 8)
		return INFERQ_ELIMIT;
	link = find_link(cache, id);
	if (*link)
		remove_entry(cache, link);
	while (cache->bytes + charge > cache->max_bytes)
		remove_entry(cache, find_link(cache, &cache->oldest->id));

	e = xmalloc(sizeof(*e) + model_len + body_len + 2);
	e->id = *id;
	e->model_len = model_len;
	e->body_len = body_len;
	e->charge = charge;
	e->expires_ms = expires_ms;
	memcpy(e->data, model, model_len);
	e->data[model_len] = '\0';
	memcpy(e->data + model_len + 1, body, body_len);
	e->data[model_len + 1 + body_len] = '\0';

	if (cache->count + 1 > cache->bucket_count)
		grow_table(cache);
	link = bucket_of(cache, id);
	e->chain = *link;
	*link = e;
	link_newest(cache, e);
	cache->bytes += charge;
	cache->count++;
	return 0;
}

void status_cache_forget(status_cache_t *cache, const iq_id_t *ids, size_t count)
{
	for (size_t i = 0; cache && i < count && cache->count > 0; i++) {
		struct entry **link = find_link(cache, &ids[i]);

		if (*link)
			remove_entry(cache, link);
	}
}

size_t status_cache_bytes(const status_cache_t *cache)
{
	return cache ? cache->bytes : 0;
}

size_t status_cache_count(const status_cache_t *cache)
{
	return cache ? cache->count : 0;
}
