/*
 * The allocator seam of libinferq. Every allocation in src/lib goes through
 * these wrappers, and internal.h poisons the libc names so that a direct call
 * does not compile. A test calls inferq__alloc_fail_after() to make one
 * chosen allocation fail, then checks that the public call returns
 * INFERQ_ENOMEM, sets its last error and frees what it had allocated, in the
 * way SQLite's tests fail the Nth allocation. Memory from these wrappers is
 * plain malloc memory: free() and inferq_free() release it. Allocations made
 * inside libcurl and jansson do not pass through here.
 *
 * With no failure armed, the cost is one relaxed atomic load per allocation.
 *
 * SPDX-License-Identifier: MIT
 */
#define INFERQ__LIBC_ALLOC /* this file calls malloc() itself */

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* Allocations that still succeed before the injected failure; -1: none armed. */
static atomic_long countdown = -1;
/* Failures injected since the last inferq__alloc_fail_after() call. */
static atomic_long injected;

long inferq__alloc_fail_after(long n)
{
	atomic_store(&countdown, n < 0 ? -1 : n);
	return atomic_exchange(&injected, 0);
}

/* Returns 1 when this allocation is the armed one, and disarms the seam. */
static int inject_failure(void)
{
	if (atomic_load_explicit(&countdown, memory_order_relaxed) < 0)
		return 0;
	if (atomic_fetch_sub(&countdown, 1) != 0)
		return 0;
	atomic_fetch_add(&injected, 1);
	return 1;
}

void *inferq__malloc(size_t size)
{
	return inject_failure() ? NULL : malloc(size);
}

void *inferq__calloc(size_t count, size_t size)
{
	return inject_failure() ? NULL : calloc(count, size);
}

void *inferq__realloc(void *p, size_t size)
{
	return inject_failure() ? NULL : realloc(p, size);
}

char *inferq__strndup(const char *p, size_t n)
{
	char *s = inferq__malloc(n + 1);

	if (!s)
		return NULL;
	memcpy(s, p, n);
	s[n] = '\0';
	return s;
}
