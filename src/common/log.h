/*
 * Leveled logging for the server: one line per event on stderr, as text
 * "2026-02-07T10:30:00.123Z LEVEL subsystem: message key=value ..." or, with
 * LOG_FORMAT_JSON, as one JSON object per line with "ts", "level",
 * "subsystem", "msg" and the event's fields. The level is checked before any
 * formatting. Client-supplied text must go through log_quote() or a
 * LOG_TEXT field, which truncate and escape it. Keys and tokens are never
 * passed to these functions.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef INFERQ_LOG_H
#define INFERQ_LOG_H

#include <stddef.h>
#include <stdint.h>

typedef enum { LOG_DEBUG = 0, LOG_INFO = 1, LOG_WARN = 2, LOG_ERROR = 3 } log_level_t;
typedef enum { LOG_FORMAT_TEXT = 0, LOG_FORMAT_JSON = 1 } log_format_t;

/* Maximum bytes of a LOG_TEXT value; a longer one is cut and marked. */
#define LOG_TEXT_MAX 128
/* Appended to a value that was cut. */
#define LOG_TRUNCATED_MARK "...(truncated)"

/* Sets the minimum level written; called once at start, before threads run. */
void log_set_level(log_level_t level);
/* Parses "debug", "info", "warn" or "error"; returns 0 or INFERQ_EINVAL. */
int log_parse_level(const char *name, log_level_t *out);
int log_enabled(log_level_t level);
/* Sets the line format; called once at start, before threads run. */
void log_set_format(log_format_t format);
/* Parses "text" or "json"; returns 0 or INFERQ_EINVAL. */
int log_parse_format(const char *name, log_format_t *out);
/*
 * Sets the file descriptor lines are written to (default 2, stderr) and
 * returns the previous one; for tests, before threads run.
 */
int log_set_fd(int fd);
/*
 * Formats fmt like printf and writes it as one line (the "msg" of a JSON
 * line), whatever the level set. The log_* macros check the level first.
 * Any thread.
 */
void log_write(log_level_t level, const char *subsystem, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/*
 * Writes s[0..len) into out (size outlen) as a printable, escaped and
 * truncated string, for untrusted input in log lines; returns out.
 */
const char *log_quote(const char *s, size_t len, char *out, size_t outlen);

/* Kinds of log_field_t values. */
typedef enum {
	LOG_FIELD_STR,  /* trusted NUL-terminated text, escaped */
	LOG_FIELD_TEXT, /* untrusted bytes: escaped, cut at LOG_TEXT_MAX with LOG_TRUNCATED_MARK */
	LOG_FIELD_INT,
	LOG_FIELD_UINT,
	LOG_FIELD_DOUBLE,
} log_field_type_t;

/* One key and value of a structured log line; build them with the LOG_* macros below. */
typedef struct {
	const char *key; /* a constant identifier such as "request_id" */
	log_field_type_t type;
	const char *str; /* STR, TEXT */
	size_t len;      /* TEXT: bytes of str */
	int64_t i;       /* INT */
	uint64_t u;      /* UINT */
	double d;        /* DOUBLE */
} log_field_t;

#define LOG_STR(k, v)     ((log_field_t){.key = (k), .type = LOG_FIELD_STR, .str = (v)})
#define LOG_TEXT(k, v, n) ((log_field_t){.key = (k), .type = LOG_FIELD_TEXT, .str = (v), .len = (n)})
#define LOG_INT(k, v)     ((log_field_t){.key = (k), .type = LOG_FIELD_INT, .i = (int64_t)(v)})
#define LOG_UINT(k, v)    ((log_field_t){.key = (k), .type = LOG_FIELD_UINT, .u = (uint64_t)(v)})
#define LOG_DOUBLE(k, v)  ((log_field_t){.key = (k), .type = LOG_FIELD_DOUBLE, .d = (double)(v)})

/*
 * Writes one line with message msg (trusted text) and count fields, in
 * the format set by log_set_format(), whatever the level set by
 * log_set_level(): callers check log_enabled() first, as log_fields() does.
 * A line longer than 4 KiB is cut, values first, and stays valid JSON.
 * Any thread.
 */
void log_event(log_level_t level, const char *subsystem, const char *msg,
	       const log_field_t *fields, size_t count);

/* log_event() with the fields given inline, when level is enabled. */
#define log_fields(level, sub, msg, ...)                                                    \
	do {                                                                                \
		if (log_enabled(level)) {                                                   \
			const log_field_t log_fields_[] = {__VA_ARGS__};                    \
			log_event(level, sub, msg, log_fields_,                             \
				  sizeof(log_fields_) / sizeof(log_fields_[0]));            \
		}                                                                           \
	} while (0)

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
