/*
 * Growable byte buffers (buf_t) and reference-counted immutable byte strings
 * (rbuf_t). A buf_t is owned by one function or struct at a time; an rbuf_t
 * is shared, and its count is changed only on the loop thread, while other
 * threads (the store writer) may read its bytes as long as the loop holds a
 * reference. Both keep a NUL after their bytes, so text can be used as a C
 * string, but the length is what counts: JSON text may contain "\u0000".
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef INFERQ_BUF_H
#define INFERQ_BUF_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

typedef struct {
	char *data; /* NUL-terminated when cap > 0 */
	size_t len; /* bytes used, without the NUL */
	size_t cap; /* bytes allocated */
} buf_t;

#define BUF_INIT {NULL, 0, 0}

void buf_init(buf_t *b);
/* Frees the bytes and leaves b empty; accepts an empty buffer. */
void buf_free(buf_t *b);
void buf_reset(buf_t *b);
/* Makes room for extra more bytes; aborts on out-of-memory. */
void buf_reserve(buf_t *b, size_t extra);
void buf_append(buf_t *b, const void *p, size_t n);
void buf_puts(buf_t *b, const char *s);
void buf_putc(buf_t *b, char c);
void buf_printf(buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void buf_vprintf(buf_t *b, const char *fmt, va_list ap);
void buf_put_u64(buf_t *b, uint64_t v);
void buf_put_i64(buf_t *b, int64_t v);

typedef struct rbuf {
	uint32_t refs; /* changed on the loop thread only */
	size_t len;    /* bytes, without the trailing NUL */
	char data[];   /* len bytes then a NUL */
} rbuf_t;

/* Returns a new rbuf_t holding a copy of p[0..len) with one reference. */
rbuf_t *rbuf_new(const void *p, size_t len);
rbuf_t *rbuf_from_str(const char *s);
/* Takes the bytes of b into a new rbuf_t and empties b. */
rbuf_t *rbuf_from_buf(buf_t *b);
/* Adds a reference; accepts NULL and returns its argument. */
rbuf_t *rbuf_ref(rbuf_t *r);
/* Drops a reference, freeing at zero; accepts NULL. */
void rbuf_unref(rbuf_t *r);

#endif
