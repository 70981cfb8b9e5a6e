/*
 * Allocation wrappers for the server: on out-of-memory they log one line and
 * abort, because the loop thread cannot continue with half-built state.
 * The client library does not use them; it returns INFERQ_ENOMEM instead.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef INFERQ_ALLOC_H
#define INFERQ_ALLOC_H

#include <stddef.h>

void *xmalloc(size_t n);
void *xcalloc(size_t count, size_t size);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);

#endif
