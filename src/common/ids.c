/*
 * UUIDv7 job ids and UUIDv4 claim ids (see ids.h).
 *
 * SPDX-License-Identifier: MIT
 */
#include "ids.h"

#include <errno.h>
#include <pthread.h>
#include <string.h>
#include <sys/random.h>

#include "inferq_error.h"
#include "log.h"

void random_bytes(void *p, size_t n)
{
	uint8_t *out = p;

	while (n > 0) {
		ssize_t got = getrandom(out, n, 0);

		if (got < 0) {
			if (errno == EINTR)
				continue;
			log_error("ids", "getrandom failed: %s", strerror(errno));
			IQ_ASSERT(!"random bytes unavailable");
		}
		out += got;
		n -= (size_t)got;
	}
}

/*
 * Random bytes for ids, read from the kernel's CSPRNG (getrandom) 4 KiB at
 * a time rather than with one syscall per id: 409 UUIDv7s or 256 UUIDv4s
 * per refill. Each thread has its own block, so no lock is taken. Bytes
 * are wiped as they are handed out, and a forked child drops its parent's
 * block, so that two processes never hand out the same bytes.
 */
#define ID_RANDOM_BLOCK 4096

static _Thread_local struct {
	uint8_t bytes[ID_RANDOM_BLOCK];
	size_t used; /* bytes already handed out; ID_RANDOM_BLOCK when empty */
	int ready;   /* this thread has registered the fork handler */
} id_random = {.used = ID_RANDOM_BLOCK};

static pthread_once_t id_random_once = PTHREAD_ONCE_INIT;

static void drop_block_in_child(void)
{
	explicit_bzero(id_random.bytes, sizeof(id_random.bytes));
	id_random.used = ID_RANDOM_BLOCK;
}

static void register_fork_handler(void)
{
	pthread_atfork(NULL, NULL, drop_block_in_child);
}

static void id_random_bytes(uint8_t *out, size_t n)
{
	if (!id_random.ready) {
		pthread_once(&id_random_once, register_fork_handler);
		id_random.ready = 1;
	}
	if (ID_RANDOM_BLOCK - id_random.used < n) {
		random_bytes(id_random.bytes, sizeof(id_random.bytes));
		id_random.used = 0;
	}
	memcpy(out, id_random.bytes + id_random.used, n);
	explicit_bzero(id_random.bytes + id_random.used, n);
	id_random.used += n;
}

void id_new_v7(iq_id_t *out, int64_t now_ms)
{
	uint64_t ms = (uint64_t)now_ms;

	id_random_bytes(out->b + 6, ID_BYTES - 6);
	for (int i = 0; i < 6; i++)
		out->b[i] = (uint8_t)(ms >> (40 - 8 * i));
	out->b[6] = (uint8_t)(0x70 | (out->b[6] & 0x0f));
	out->b[8] = (uint8_t)(0x80 | (out->b[8] & 0x3f));
}

void id_new_v4(iq_id_t *out)
{
	id_random_bytes(out->b, ID_BYTES);
	out->b[6] = (uint8_t)(0x40 | (out->b[6] & 0x0f));
	out->b[8] = (uint8_t)(0x80 | (out->b[8] & 0x3f));
}

void id_format(const iq_id_t *id, char out[ID_TEXT_LEN + 1])
{
	static const char hex[] = "0123456789abcdef";
	/* Where each byte's two digits start; the dashes sit at 8, 13, 18 and 23. */
	static const uint8_t at[ID_BYTES] = {0,  2,  4,  6,  9,  11, 14, 16,
					     19, 21, 24, 26, 28, 30, 32, 34};
	uint8_t bytes[ID_BYTES];

	/* A local copy: stores through out could alias id, which kept every byte reloaded. */
	memcpy(bytes, id->b, ID_BYTES);
	for (int i = 0; i < ID_BYTES; i++) {
		out[at[i]] = hex[bytes[i] >> 4];
		out[at[i] + 1] = hex[bytes[i] & 15];
	}
	out[8] = out[13] = out[18] = out[23] = '-';
	out[ID_TEXT_LEN] = '\0';
}

static int hex_value(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

int id_parse(const char *s, size_t len, iq_id_t *out)
{
	size_t pos = 0;

	if (len != ID_TEXT_LEN)
		return INFERQ_EINVAL;
	for (int i = 0; i < ID_BYTES; i++) {
		int hi, lo;

		if (pos == 8 || pos == 13 || pos == 18 || pos == 23) {
			if (s[pos] != '-')
				return INFERQ_EINVAL;
			pos++;
		}
		hi = hex_value(s[pos]);
		lo = hex_value(s[pos + 1]);
		if (hi < 0 || lo < 0)
			return INFERQ_EINVAL;
		out->b[i] = (uint8_t)(hi << 4 | lo);
		pos += 2;
	}
	return 0;
}

int id_is_zero(const iq_id_t *id)
{
	static const iq_id_t zero;

	return memcmp(id->b, zero.b, ID_BYTES) == 0;
}

int id_equal(const iq_id_t *a, const iq_id_t *b)
{
	return memcmp(a->b, b->b, ID_BYTES) == 0;
}
