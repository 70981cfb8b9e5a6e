/*
 * Leveled one-line logging (see log.h). Lines are formatted into a stack
 * buffer and written with one write(2) call, so lines from the loop thread
 * and the store writer thread never interleave. A line is at most
 * LINE_BYTES long. When the values do not fit, the value being written is
 * cut with LOG_TRUNCATED_MARK and later fields are left out, so a JSON line
 * stays one valid object.
 *
 * SPDX-License-Identifier: MIT
 */
#include "log.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "inferq_error.h"

#define LINE_BYTES   4096
#define MESSAGE_MAX  2048 /* bytes of a log_write() message before escaping */
#define MARK_LEN     (sizeof(LOG_TRUNCATED_MARK) - 1)

static int min_level = LOG_INFO;
static log_format_t line_format = LOG_FORMAT_TEXT;
static int out_fd = STDERR_FILENO;

static const char *const level_names[] = {"debug", "info", "warn", "error"};

/*
 * Bytes kept free at the end of a line for what closes it: a truncation
 * mark, the closing quote of a value, and "}\n".
 */
#define LINE_TAIL (MARK_LEN + 3)

/* A line being built. put() keeps len within LINE_BYTES - LINE_TAIL. */
typedef struct {
	char data[LINE_BYTES];
	size_t len;
	int full; /* something did not fit: later fields are dropped */
} line_t;

void log_set_level(log_level_t level)
{
	min_level = level;
}

int log_parse_level(const char *name, log_level_t *out)
{
	for (int i = 0; i < 4; i++) {
		if (strcasecmp(name, level_names[i]) == 0) {
			*out = (log_level_t)i;
			return 0;
		}
	}
	if (strcasecmp(name, "warning") == 0) {
		*out = LOG_WARN;
		return 0;
	}
	return INFERQ_EINVAL;
}

int log_enabled(log_level_t level)
{
	return (int)level >= min_level;
}

void log_set_format(log_format_t format)
{
	line_format = format;
}

int log_parse_format(const char *name, log_format_t *out)
{
	if (strcmp(name, "text") == 0) {
		*out = LOG_FORMAT_TEXT;
		return 0;
	}
	if (strcmp(name, "json") == 0) {
		*out = LOG_FORMAT_JSON;
		return 0;
	}
	return INFERQ_EINVAL;
}

int log_set_fd(int fd)
{
	int old = out_fd;

	out_fd = fd;
	return old;
}

/* Appends s[0..n) only when all of it fits; otherwise marks the line full. */
static void put(line_t *l, const char *s, size_t n)
{
	if (l->full || l->len + n > LINE_BYTES - LINE_TAIL) {
		l->full = 1;
		return;
	}
	memcpy(l->data + l->len, s, n);
	l->len += n;
}

static void put_str(line_t *l, const char *s)
{
	put(l, s, strlen(s));
}

/* Returns the length of the valid UTF-8 sequence of 2 to 4 bytes at s, or 0. */
static size_t utf8_sequence(const unsigned char *s, size_t n)
{
	size_t len;
	unsigned min;
	unsigned cp;

	if (s[0] >= 0xc2 && s[0] <= 0xdf) {
		len = 2, cp = s[0] & 0x1f, min = 0x80;
	} else if (s[0] >= 0xe0 && s[0] <= 0xef) {
		len = 3, cp = s[0] & 0x0f, min = 0x800;
	} else if (s[0] >= 0xf0 && s[0] <= 0xf4) {
		len = 4, cp = s[0] & 0x07, min = 0x10000;
	} else {
		return 0;
	}
	if (n < len)
		return 0;
	for (size_t i = 1; i < len; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = (cp << 6) | (s[i] & 0x3f);
	}
	if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	return len;
}

/*
 * Appends s[0..len) escaped: quote and backslash get a backslash, other
 * control and non-ASCII bytes become \xNN in text; JSON writes control
 * bytes as \u00NN, keeps valid UTF-8 and shows other bytes as the text
 * "\xNN". Stops after max input bytes or when the line is nearly full,
 * and then appends LOG_TRUNCATED_MARK. Leaves room for a closing quote and
 * "}\n": the caller entered with len within LINE_BYTES - LINE_TAIL.
 */
static void put_escaped(line_t *l, const char *s, size_t len, size_t max, int json)
{
	const unsigned char *u = (const unsigned char *)s;
	size_t i = 0;

	if (l->full)
		return;
	while (i < len && i < max) {
		char esc[8];
		size_t n = 1, step = 1;
		const char *out = esc;

		if (u[i] == '"' || u[i] == '\\') {
			esc[0] = '\\', esc[1] = (char)u[i], n = 2;
		} else if (u[i] >= 0x20 && u[i] < 0x7f) {
			out = s + i;
		} else if (json && u[i] < 0x20) {
			n = (size_t)snprintf(esc, sizeof(esc), "\\u%04x", u[i]);
		} else if (json && u[i] >= 0x80 && (step = utf8_sequence(u + i, len - i)) > 0) {
			out = s + i, n = step;
		} else {
			step = 1;
			n = (size_t)snprintf(esc, sizeof(esc), json ? "\\\\x%02x" : "\\x%02x", u[i]);
		}
		if (l->len + n + LINE_TAIL > LINE_BYTES || i + step > max)
			break;
		memcpy(l->data + l->len, out, n);
		l->len += n;
		i += step;
	}
	if (i < len) {
		memcpy(l->data + l->len, LOG_TRUNCATED_MARK, MARK_LEN);
		l->len += MARK_LEN;
	}
}

/* Returns 1 when s can be written bare after "key=" in a text line. */
static int is_bare_token(const char *s, size_t len)
{
	if (len == 0)
		return 0;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      strchr("._:/@+-", c)))
			return 0;
	}
	return 1;
}

static void begin_line(line_t *l, log_level_t level, const char *subsystem)
{
	struct timespec ts;
	struct tm tm;
	char head[96];
	int n;

	l->len = 0;
	l->full = 0;
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	n = snprintf(head, sizeof(head),
		     line_format == LOG_FORMAT_JSON ? "{\"ts\":\"%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ\","
						      "\"level\":\"%s\",\"subsystem\":\""
						    : "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %-5s ",
		     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
		     tm.tm_sec, ts.tv_nsec / 1000000, level_names[level]);
	put(l, head, (size_t)n);
	if (line_format == LOG_FORMAT_JSON) {
		put_escaped(l, subsystem, strlen(subsystem), SIZE_MAX, 1);
		put_str(l, "\",\"msg\":\"");
	} else {
		put_str(l, subsystem);
		put_str(l, ": ");
	}
}

static void put_message(line_t *l, const char *msg, size_t len)
{
	if (line_format == LOG_FORMAT_JSON) {
		put_escaped(l, msg, len, SIZE_MAX, 1);
		l->data[l->len++] = '"'; /* put_escaped left room for it */
	} else {
		size_t room = LINE_BYTES - LINE_TAIL - l->len;

		put(l, msg, len < room ? len : room);
	}
}

static void put_field(line_t *l, const log_field_t *f)
{
	int json = line_format == LOG_FORMAT_JSON;
	char num[96];
	size_t len;
	size_t max = SIZE_MAX;

	if (l->full)
		return;
	switch (f->type) {
	case LOG_FIELD_INT:
		snprintf(num, sizeof(num), json ? ",\"%s\":%lld" : " %s=%lld", f->key, (long long)f->i);
		put_str(l, num);
		return;
	case LOG_FIELD_UINT:
		snprintf(num, sizeof(num), json ? ",\"%s\":%llu" : " %s=%llu", f->key,
			 (unsigned long long)f->u);
		put_str(l, num);
		return;
	case LOG_FIELD_DOUBLE:
		if (isfinite(f->d))
			snprintf(num, sizeof(num), json ? ",\"%s\":%.6g" : " %s=%.6g", f->key, f->d);
		else
			snprintf(num, sizeof(num), json ? ",\"%s\":null" : " %s=none", f->key);
		put_str(l, num);
		return;
	case LOG_FIELD_TEXT:
		len = f->len;
		max = LOG_TEXT_MAX;
		break;
	case LOG_FIELD_STR:
	default:
		len = f->str ? strlen(f->str) : 0;
		break;
	}

	/* Key and opening quote go in one put(), so a full line never ends in a bare key. */
	if (!json && len <= max && is_bare_token(f->str, len)) {
		snprintf(num, sizeof(num), " %s=", f->key);
		put_str(l, num);
		put(l, f->str, len);
		return;
	}
	snprintf(num, sizeof(num), json ? ",\"%s\":\"" : " %s=\"", f->key);
	put_str(l, num);
	if (l->full)
		return;
	put_escaped(l, f->str ? f->str : "", len, max, json);
	l->data[l->len++] = '"'; /* put_escaped left room for it */
}

static void end_line(line_t *l)
{
	if (line_format == LOG_FORMAT_JSON)
		l->data[l->len++] = '}';
	l->data[l->len++] = '\n';
	if (write(out_fd, l->data, l->len) < 0) {
		/* Nowhere left to report a failed log write. */
	}
}

void log_event(log_level_t level, const char *subsystem, const char *msg,
	       const log_field_t *fields, size_t count)
{
	line_t line;

	begin_line(&line, level, subsystem);
	put_message(&line, msg, strlen(msg));
	for (size_t i = 0; i < count; i++)
		put_field(&line, &fields[i]);
	end_line(&line);
}

void log_write(log_level_t level, const char *subsystem, const char *fmt, ...)
{
	char msg[MESSAGE_MAX];
	line_t line;
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (n < 0)
		n = 0;
	if (n > (int)sizeof(msg) - 1)
		n = (int)sizeof(msg) - 1;
	begin_line(&line, level, subsystem);
	put_message(&line, msg, (size_t)n);
	end_line(&line);
}

const char *log_quote(const char *s, size_t len, char *out, size_t outlen)
{
	size_t o = 0;
	size_t i;

	if (outlen < 8) {
		if (outlen)
			out[0] = '\0';
		return out;
	}
	for (i = 0; i < len && o + 5 < outlen - 4; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\') {
			out[o++] = (char)c;
		} else {
			o += (size_t)snprintf(out + o, outlen - o, "\\x%02x", c);
		}
	}
	if (i < len) {
		memcpy(out + o, "...", 3);
		o += 3;
	}
	out[o] = '\0';
	return out;
}

void log_assert_failed(const char *expr, const char *file, int line)
{
	log_write(LOG_ERROR, "assert", "%s:%d: assertion failed: %s", file, line, expr);
	abort();
}
