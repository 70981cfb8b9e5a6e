/*
 * Aborting allocation wrappers (see alloc.h).
 *
 * SPDX-License-Identifier: MIT
 */
#include "alloc.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void out_of_memory(size_t n)
{
	fprintf(stderr, "inferq: out of memory allocating %zu bytes, aborting\n", n);
	abort();
}

/* Aborts for a count * size that does not fit in size_t. */
static void too_large(size_t count, size_t size)
{
	fprintf(stderr, "inferq: out of memory: %zu items of %zu bytes exceed the address space, "
			"aborting\n",
		count, size);
	abort();
}

void *xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);

	if (p == NULL)
		out_of_memory(n);
	return p;
}

void *xcalloc(size_t count, size_t size)
{
	void *p;

	if (size && count > SIZE_MAX / size)
		too_large(count, size);
	p = calloc(count ? count : 1, size ? size : 1);
	if (p == NULL)
		out_of_memory(count * size);
	return p;
}

void *xrealloc(void *p, size_t n)
{
	void *q = realloc(p, n ? n : 1);

	if (q == NULL)
		out_of_memory(n);
	return q;
}

char *xstrndup(const char *s, size_t n)
{
	char *d;

	if (n == SIZE_MAX)
		too_large(n, 1);
	d = xmalloc(n + 1);

	memcpy(d, s, n);
	d[n] = '\0';
	return d;
}

char *xstrdup(const char *s)
{
	return xstrndup(s, strlen(s));
}
