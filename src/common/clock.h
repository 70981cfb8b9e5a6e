/*
 * Time for the server: wall-clock milliseconds for stored timestamps, a
 * monotonic clock for timers, RFC 3339 formatting, and duration parsing for
 * flags ("90", "90s", "500ms", "5m", "2h", "7d"). The clock functions go
 * through a seam so tests can substitute a fake clock.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef INFERQ_CLOCK_H
#define INFERQ_CLOCK_H

#include <stddef.h>
#include <stdint.h>

#define RFC3339_LEN 20 /* "2026-02-07T10:30:00Z", without the NUL */

/* Milliseconds since the Unix epoch (CLOCK_REALTIME). */
int64_t clock_wall_ms(void);
/* Milliseconds from an arbitrary origin that never goes back (CLOCK_MONOTONIC). */
int64_t clock_mono_ms(void);

/*
 * Replaces both clocks for tests; pass NULL to restore the system clocks.
 * ctx is passed to each function.
 */
void clock_set_source(int64_t (*wall_ms)(void *), int64_t (*mono_ms)(void *), void *ctx);

/* Writes ms since epoch as whole-second RFC 3339 UTC ("...Z") plus a NUL. */
void clock_format_rfc3339(int64_t ms, char out[RFC3339_LEN + 1]);

/*
 * Parses a duration: digits followed by an optional unit ms, s, m, h or d
 * (a bare number is in default_unit_ms units). Fractions are accepted
 * ("1.5s"). Stores milliseconds in *out; returns 0, INFERQ_EINVAL for bad
 * syntax or INFERQ_ERANGE for a value beyond 2^53 ms.
 */
int clock_parse_duration(const char *s, size_t len, int64_t default_unit_ms, int64_t *out);

#endif
