/*
 * Job ids and claim ids. Job ids are UUIDv7 (RFC 9562): 48 bits of
 * milliseconds since the epoch, then random bits, so they sort by creation
 * time. Claim ids are random UUIDv4. Both travel as 36-character lowercase
 * text and are kept as 16 bytes in memory.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef INFERQ_IDS_H
#define INFERQ_IDS_H

#include <stddef.h>
#include <stdint.h>

#define ID_BYTES 16
#define ID_TEXT_LEN 36 /* without the NUL */

typedef struct {
	uint8_t b[ID_BYTES];
} iq_id_t;

/*
 * Fills out with a new UUIDv7 for the time now_ms (ms since epoch). Its 74
 * random bits come from the kernel's CSPRNG, read in blocks of 4 KiB per
 * thread. Any thread.
 */
void id_new_v7(iq_id_t *out, int64_t now_ms);
/* Fills out with a new UUIDv4: 122 bits from the same CSPRNG blocks. Any thread. */
void id_new_v4(iq_id_t *out);
/* Writes the 36-character lowercase form and a NUL into out. */
void id_format(const iq_id_t *id, char out[ID_TEXT_LEN + 1]);
/*
 * Parses the canonical 8-4-4-4-12 hexadecimal form (either case);
 * returns 0 or INFERQ_EINVAL.
 */
int id_parse(const char *s, size_t len, iq_id_t *out);
int id_is_zero(const iq_id_t *id);
int id_equal(const iq_id_t *a, const iq_id_t *b);
/* Fills p[0..n) with random bytes from the kernel; aborts if none can be had. */
void random_bytes(void *p, size_t n);

#endif
