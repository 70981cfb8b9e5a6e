/*
 * Shared checks for the fuzz targets (see check.h).
 *
 * SPDX-License-Identifier: MIT
 */
#include "check.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void fuzz_fail(const char *fmt, ...)
{
	va_list ap;

	fputs("fuzz check failed: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	abort();
}

const char *fuzz_show(const void *p, size_t len)
{
	static char bufs[2][1024];
	static int next;
	char *out = bufs[next];
	const unsigned char *s = p;
	size_t o = 0, i;

	next ^= 1;
	for (i = 0; i < len && i < 200; i++) {
		if (s[i] >= 0x20 && s[i] < 0x7f && s[i] != '\\')
			out[o++] = (char)s[i];
		else
			o += (size_t)snprintf(out + o, sizeof(bufs[0]) - o, "\\x%02x", s[i]);
	}
	if (i < len)
		o += (size_t)snprintf(out + o, sizeof(bufs[0]) - o, "... (%zu bytes)", len);
	out[o] = '\0';
	return out;
}

/* Returns the length of the UTF-8 sequence at s[0..n), or 0 when it is invalid. */
static size_t utf8_sequence(const unsigned char *s, size_t n)
{
	unsigned long cp;
	size_t len;

	if (s[0] < 0x80)
		return 1;
	if (s[0] >= 0xc2 && s[0] <= 0xdf) {
		len = 2;
		cp = s[0] & 0x1f;
	} else if (s[0] >= 0xe0 && s[0] <= 0xef) {
		len = 3;
		cp = s[0] & 0x0f;
	} else if (s[0] >= 0xf0 && s[0] <= 0xf4) {
		len = 4;
		cp = s[0] & 0x07;
	} else {
		return 0;
	}
	if (n < len)
		return 0;
	for (size_t i = 1; i < len; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = cp << 6 | (s[i] & 0x3f);
	}
	if ((len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) || cp > 0x10ffff ||
	    (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	return len;
}

int fuzz_utf8_valid(const void *p, size_t len)
{
	const unsigned char *s = p;
	size_t i = 0;

	while (i < len) {
		size_t n = utf8_sequence(s + i, len - i);

		if (n == 0)
			return 0;
		i += n;
	}
	return 1;
}

void fuzz_check_message(const char *message, size_t size, const char *what)
{
	const char *nul = memchr(message, '\0', size);

	FUZZ_CHECK(nul != NULL, "%s is not NUL-terminated within its %zu bytes", what, size);
	FUZZ_CHECK(nul != message, "%s is empty", what);
	for (const char *c = message; c < nul; c++) {
		unsigned char ch = (unsigned char)*c;

		FUZZ_CHECK(ch >= 0x20 && ch != 0x7f, "%s has control byte 0x%02x: %s", what, ch,
		           fuzz_show(message, (size_t)(nul - message)));
	}
}
