/*
 * Leveled logging for the server: one line per event on stderr,
 * "2026-02-07T10:30:00.123Z LEVEL subsystem: message key=value ...".
 * The level is checked before any formatting. Client-supplied text must go
 * through log_quote(), which truncates and escapes it. Keys and tokens are
 * never passed to these functions.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef INFERQ_LOG_H
#define INFERQ_LOG_H

#include <stddef.h>

typedef enum { LOG_DEBUG = 0, LOG_INFO = 1, LOG_WARN = 2, LOG_ERROR = 3 } log_level_t;

/* Sets the minimum level written; called once at start, before threads run. */
void log_set_level(log_level_t level);
/* Parses "debug", "info", "warn" or "error"; returns 0 or INFERQ_EINVAL. */
int log_parse_level(const char *name, log_level_t *out);
int log_enabled(log_level_t level);
void log_write(log_level_t level, const char *subsystem, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/*
 * Writes s[0..len) into out (size outlen) as a printable, escaped and
 * truncated string, for untrusted input in log lines; returns out.
 */
const char *log_quote(const char *s, size_t len, char *out, size_t outlen);

#define log_debug(sub, ...) \
	do { if (log_enabled(LOG_DEBUG)) log_write(LOG_DEBUG, sub, __VA_ARGS__); } while (0)
#define log_info(sub, ...) \
	do { if (log_enabled(LOG_INFO)) log_write(LOG_INFO, sub, __VA_ARGS__); } while (0)
#define log_warn(sub, ...) \
	do { if (log_enabled(LOG_WARN)) log_write(LOG_WARN, sub, __VA_ARGS__); } while (0)
#define log_error(sub, ...) log_write(LOG_ERROR, sub, __VA_ARGS__)

/* Logs file:line and the failed expression, then aborts. */
#define IQ_ASSERT(expr) \
	do { if (!(expr)) log_assert_failed(#expr, __FILE__, __LINE__); } while (0)
void log_assert_failed(const char *expr, const char *file, int line) __attribute__((noreturn));

#endif
