/*
 * The string builder of libinferq: request bodies and response buffers.
 * Unlike the server's buf_t it never aborts: an allocation failure sets a
 * sticky oom flag that the owner checks once and turns into INFERQ_ENOMEM.
 *
 * SPDX-License-Identifier: MIT
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

static int reserve(inferq__sb_t *sb, size_t extra)
{
	size_t need, cap;
	char *p;

	if (sb->oom)
		return -1;
	if (extra > SIZE_MAX / 2 - sb->len) {
		sb->oom = 1;
		return -1;
	}
	need = sb->len + extra + 1;
	if (need <= sb->cap)
		return 0;
	cap = sb->cap ? sb->cap : 256;
	while (cap < need)
		cap *= 2;
	p = inferq__realloc(sb->data, cap);
	if (!p) {
		sb->oom = 1;
		return -1;
	}
	sb->data = p;
	sb->cap = cap;
	return 0;
}

void inferq__sb_append(inferq__sb_t *sb, const char *p, size_t n)
{
	if (reserve(sb, n) != 0)
		return;
	if (n)
		memcpy(sb->data + sb->len, p, n);
	sb->len += n;
	sb->data[sb->len] = '\0';
}

void inferq__sb_puts(inferq__sb_t *sb, const char *s)
{
	inferq__sb_append(sb, s, strlen(s));
}

void inferq__sb_printf(inferq__sb_t *sb, const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0 || reserve(sb, (size_t)n) != 0)
		return;
	va_start(ap, fmt);
	vsnprintf(sb->data + sb->len, (size_t)n + 1, fmt, ap);
	va_end(ap);
	sb->len += (size_t)n;
}

void inferq__sb_json_string(inferq__sb_t *sb, const char *s)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t run = 0;

	inferq__sb_append(sb, "\"", 1);
	for (; p[run];) {
		unsigned char ch = p[run];

		if (ch >= 0x20 && ch != '"' && ch != '\\') {
			run++;
			continue;
		}

		/* Flush the plain bytes before ch, then escape ch. */
		inferq__sb_append(sb, (const char *)p, run);
		p += run + 1;
		run = 0;
		if (ch == '"')
			inferq__sb_puts(sb, "\\\"");
		else if (ch == '\\')
			inferq__sb_puts(sb, "\\\\");
		else if (ch == '\n')
			inferq__sb_puts(sb, "\\n");
		else if (ch == '\t')
			inferq__sb_puts(sb, "\\t");
		else if (ch == '\r')
			inferq__sb_puts(sb, "\\r");
		else
			inferq__sb_printf(sb, "\\u%04x", ch);
	}
	inferq__sb_append(sb, (const char *)p, run);
	inferq__sb_append(sb, "\"", 1);
}

void inferq__sb_json_field(inferq__sb_t *sb, const char *name, const char *s)
{
	inferq__sb_json_string(sb, name);
	inferq__sb_append(sb, ":", 1);
	inferq__sb_json_string(sb, s);
}

void inferq__sb_reset(inferq__sb_t *sb)
{
	sb->len = 0;
	sb->oom = 0;
	if (sb->data)
		sb->data[0] = '\0';
}

void inferq__sb_free(inferq__sb_t *sb)
{
	free(sb->data);
	sb->data = NULL;
	sb->len = 0;
	sb->cap = 0;
	sb->oom = 0;
}
