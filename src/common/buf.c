/*
 * Growable and reference-counted byte buffers (see buf.h).
 *
 * SPDX-License-Identifier: MIT
 */
#include "buf.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"

void buf_init(buf_t *b)
{
	b->data = NULL;
	b->len = 0;
	b->cap = 0;
}

void buf_free(buf_t *b)
{
	free(b->data);
	buf_init(b);
}

void buf_reset(buf_t *b)
{
	b->len = 0;
	if (b->cap)
		b->data[0] = '\0';
}

void buf_reserve(buf_t *b, size_t extra)
{
	size_t need = b->len + extra + 1;
	size_t cap = b->cap ? b->cap : 64;

	if (need <= b->cap)
		return;
	while (cap < need)
		cap *= 2;
	b->data = xrealloc(b->data, cap);
	b->cap = cap;
	b->data[b->len] = '\0'; /* a first allocation must hold the NUL too */
}

void buf_append(buf_t *b, const void *p, size_t n)
{
	buf_reserve(b, n);
	if (n)
		memcpy(b->data + b->len, p, n);
	b->len += n;
	b->data[b->len] = '\0';
}

void buf_puts(buf_t *b, const char *s)
{
	buf_append(b, s, strlen(s));
}

void buf_putc(buf_t *b, char c)
{
	buf_reserve(b, 1);
	b->data[b->len++] = c;
	b->data[b->len] = '\0';
}

void buf_vprintf(buf_t *b, const char *fmt, va_list ap)
{
	va_list copy;
	int n;

	va_copy(copy, ap);
	n = vsnprintf(NULL, 0, fmt, copy);
	va_end(copy);
	if (n < 0)
		return;
	buf_reserve(b, (size_t)n);
	vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
	b->len += (size_t)n;
}

void buf_printf(buf_t *b, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	buf_vprintf(b, fmt, ap);
	va_end(ap);
}

void buf_put_u64(buf_t *b, uint64_t v)
{
	char tmp[24];
	int i = (int)sizeof(tmp);

	do {
		tmp[--i] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	buf_append(b, tmp + i, sizeof(tmp) - (size_t)i);
}

void buf_put_i64(buf_t *b, int64_t v)
{
	if (v < 0) {
		buf_putc(b, '-');
		buf_put_u64(b, (uint64_t)0 - (uint64_t)v);
		return;
	}
	buf_put_u64(b, (uint64_t)v);
}

rbuf_t *rbuf_new(const void *p, size_t len)
{
	rbuf_t *r = xmalloc(sizeof(*r) + len + 1);

	r->refs = 1;
	r->len = len;
	if (len)
		memcpy(r->data, p, len);
	r->data[len] = '\0';
	return r;
}

rbuf_t *rbuf_from_str(const char *s)
{
	return rbuf_new(s, strlen(s));
}

rbuf_t *rbuf_from_buf(buf_t *b)
{
	rbuf_t *r = rbuf_new(b->data, b->len);

	buf_free(b);
	return r;
}

rbuf_t *rbuf_ref(rbuf_t *r)
{
	if (r)
		r->refs++;
	return r;
}

void rbuf_unref(rbuf_t *r)
{
	if (r && --r->refs == 0)
		free(r);
}
