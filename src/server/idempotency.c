/*
 * The map of uncommitted keyed submits (see idempotency.h): a chained hash
 * table over (model, key), grown by doubling. Loop thread only.
 *
 * SPDX-License-Identifier: MIT
 */
#include "idempotency.h"

#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "log.h"

typedef struct entry {
	struct entry *next;
	job_t *job;
	uint64_t hash;
} entry_t;

struct idempotency {
	entry_t **buckets;
	size_t bucket_count; /* a power of two */
	size_t count;
};

static uint64_t fnv1a(uint64_t h, const char *p, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		h ^= (unsigned char)p[i];
		h *= 0x100000001b3ULL;
	}
	return h;
}

static uint64_t key_hash(const char *model, size_t model_len, const char *key, size_t key_len)
{
	uint64_t h = fnv1a(0xcbf29ce484222325ULL, model, model_len);

	h = fnv1a(h, "\n", 1);
	return fnv1a(h, key, key_len);
}

idempotency_t *idempotency_new(void)
{
	idempotency_t *m = xcalloc(1, sizeof(*m));

	m->bucket_count = 64;
	m->buckets = xcalloc(m->bucket_count, sizeof(*m->buckets));
	return m;
}

void idempotency_free(idempotency_t *m)
{
	if (m == NULL)
		return;
	for (size_t i = 0; i < m->bucket_count; i++) {
		entry_t *e = m->buckets[i];

		while (e) {
			entry_t *next = e->next;

			free(e);
			e = next;
		}
	}
	free(m->buckets);
	free(m);
}

static void grow(idempotency_t *m)
{
	size_t count = m->bucket_count * 2;
	entry_t **buckets = xcalloc(count, sizeof(*buckets));

	for (size_t i = 0; i < m->bucket_count; i++) {
		entry_t *e = m->buckets[i];

		while (e) {
			entry_t *next = e->next;
			size_t b = e->hash & (count - 1);

			e->next = buckets[b];
			buckets[b] = e;
			e = next;
		}
	}
	free(m->buckets);
	m->buckets = buckets;
	m->bucket_count = count;
}

void idempotency_track(idempotency_t *m, job_t *job)
{
	const job_record_t *r = &job->rec;
	entry_t *e = xmalloc(sizeof(*e));
	size_t b;

	IQ_ASSERT(r->idempotency_key != NULL && r->body_hash != NULL);
	if (m->count >= m->bucket_count)
		grow(m);
	e->job = job;
	e->hash = key_hash(r->model->data, r->model->len, r->idempotency_key->data,
			   r->idempotency_key->len);
	b = e->hash & (m->bucket_count - 1);
	e->next = m->buckets[b];
	m->buckets[b] = e;
	m->count++;
}

void idempotency_untrack(idempotency_t *m, job_t *job)
{
	const job_record_t *r = &job->rec;
	uint64_t h;
	entry_t **link;

	if (r->idempotency_key == NULL)
		return;
	h = key_hash(r->model->data, r->model->len, r->idempotency_key->data,
		     r->idempotency_key->len);
	for (link = &m->buckets[h & (m->bucket_count - 1)]; *link; link = &(*link)->next) {
		entry_t *e = *link;

		if (e->job == job) {
			*link = e->next;
			free(e);
			m->count--;
			return;
		}
	}
}

static int bytes_equal(const rbuf_t *r, const char *p, size_t n)
{
	return r->len == n && memcmp(r->data, p, n) == 0;
}

job_t *idempotency_find(idempotency_t *m, const char *model, size_t model_len, const char *key,
			size_t key_len)
{
	uint64_t h = key_hash(model, model_len, key, key_len);

	for (entry_t *e = m->buckets[h & (m->bucket_count - 1)]; e; e = e->next) {
		const job_record_t *r = &e->job->rec;

		if (e->hash == h && bytes_equal(r->model, model, model_len) &&
		    bytes_equal(r->idempotency_key, key, key_len))
			return e->job;
	}
	return NULL;
}

int idempotency_key_valid(const char *key, size_t len)
{
	if (len == 0 || len > IDEMPOTENCY_KEY_MAX)
		return 0;
	for (size_t i = 0; i < len; i++) {
		if ((unsigned char)key[i] < 0x21 || (unsigned char)key[i] > 0x7e)
			return 0;
	}
	return 1;
}

void idempotency_body_hash(const char *body, size_t len, char out[BODY_HASH_HEX + 1])
{
	static const char hex[] = "0123456789abcdef";
	unsigned char digest[EVP_MAX_MD_SIZE];
	unsigned int digest_len = 0;

	int ok = EVP_Digest(body, len, digest, &digest_len, EVP_sha256(), NULL);

	IQ_ASSERT(ok == 1 && digest_len * 2 == BODY_HASH_HEX);
	for (unsigned int i = 0; i < digest_len; i++) {
		out[2 * i] = hex[digest[i] >> 4];
		out[2 * i + 1] = hex[digest[i] & 15];
	}
	out[BODY_HASH_HEX] = '\0';
}
