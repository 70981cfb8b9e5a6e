/*
 * Checks shared by the fuzz targets. A failed check prints what went wrong
 * with the offending bytes escaped, then aborts, so libFuzzer saves the
 * input as a crash file.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef INFERQ_FUZZ_CHECK_H
#define INFERQ_FUZZ_CHECK_H

#include <stddef.h>

/* Prints "fuzz check failed: " and the message to stderr, then aborts. */
void fuzz_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

/* Aborts with the message unless cond holds. */
#define FUZZ_CHECK(cond, ...)                                                                      \
	do {                                                                                       \
		if (!(cond))                                                                       \
			fuzz_fail(__VA_ARGS__);                                                    \
	} while (0)

/*
 * Formats p[0..len) for a failure message: printable ASCII as is, other
 * bytes as \xNN, cut after about 200 bytes. Returns one of two static
 * buffers in turn, so two calls can share one printf. Not thread-safe.
 */
const char *fuzz_show(const void *p, size_t len);

/* Returns 1 when p[0..len) is valid UTF-8 (RFC 3629: no overlongs, no surrogates). */
int fuzz_utf8_valid(const void *p, size_t len);

/*
 * Checks an error message held in a char array of size bytes: it must be
 * NUL-terminated inside the array, non-empty, and free of control bytes
 * (below 0x20, and 0x7f). Bytes from 0x80 up are allowed because messages
 * quote client text. what names the message in the failure report.
 */
void fuzz_check_message(const char *message, size_t size, const char *what);

#endif
