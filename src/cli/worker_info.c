/*
 * Info updates of `inferq worker`: the JSON lines that CMD writes to fd 3
 * are merge patches (RFC 7386) for the job's info. Lines that arrive close
 * together are combined into one patch, so the job thread sends at most one
 * info heartbeat per second however chatty CMD is.
 *
 * Invariant: applying the pending patch has the same effect as applying
 * each line it contains in turn. Two patches cannot combine when a key gets
 * an object patch after an earlier line set it to a non-object. In turn,
 * the object replaces that value; in one patch, it would be merged into
 * the job's older value. Such a line waits until the pending patch has
 * been sent. Meanwhile the job thread stops reading fd 3, so a stalled
 * batch keeps at most one read (64 KiB) beyond a line.
 *
 * SPDX-License-Identifier: MIT
 */
#include <string.h>

#include "inferq_error.h"
#include "json.h"
#include "worker.h"

/* The server's default limits of info size and JSON nesting. */
#define INFO_LINE_MAX     (64 * 1024)
#define INFO_MAX_DEPTH    64
#define INVALID_LINES_LOG 10 /* invalid lines logged per job; later ones are counted */

void info_batch_init(info_batch_t *b, const char *request_id)
{
	memset(b, 0, sizeof(*b));
	buf_init(&b->input);
	buf_init(&b->pending);
	b->request_id = request_id;
}

void info_batch_destroy(info_batch_t *b)
{
	buf_free(&b->input);
	buf_free(&b->pending);
}

/* Finds the member of object whose decoded key equals that of key. Returns 1 or 0. */
static int find_same_key(json_span_t object, json_span_t key, json_span_t *value)
{
	buf_t name = BUF_INIT;
	int found = 0;

	/* A key with "\u0000" cannot be looked up by C string, so it never matches. */
	if (json_string_decode(key, &name) == 0)
		found = json_object_find(object, name.data ? name.data : "", value);
	buf_free(&name);
	return found;
}

/*
 * Writes to out one patch with the effect of patch a followed by patch b,
 * both validated objects. Returns 0, or INFERQ_ECONFLICT when no single
 * merge patch has that effect.
 */
static int compose(json_span_t a, json_span_t b, buf_t *out)
{
	json_iter_t it;
	json_member_t m;
	json_span_t other;
	int first = 1;

	buf_putc(out, '{');

	/* Members of a that b leaves alone keep their place. */
	json_object_begin(&it, a);
	while (json_object_next(&it, &m)) {
		if (find_same_key(b, m.key, &other))
			continue;
		buf_puts(out, first ? "" : ",");
		buf_append(out, m.key.start, m.key.len);
		buf_putc(out, ':');
		buf_append(out, m.value.start, m.value.len);
		first = 0;
	}

	/* Members of b replace those of a, except that two object patches combine. */
	json_object_begin(&it, b);
	while (json_object_next(&it, &m)) {
		int in_a = find_same_key(a, m.key, &other);

		buf_puts(out, first ? "" : ",");
		buf_append(out, m.key.start, m.key.len);
		buf_putc(out, ':');
		first = 0;
		if (m.value.type != JSON_TYPE_OBJECT || !in_a) {
			buf_append(out, m.value.start, m.value.len);
			continue;
		}
		if (other.type != JSON_TYPE_OBJECT)
			return INFERQ_ECONFLICT;
		if (compose(other, m.value, out) != 0)
			return INFERQ_ECONFLICT;
	}
	buf_putc(out, '}');
	return 0;
}

static void warn_invalid(info_batch_t *b, const char *why, const char *line, size_t len)
{
	char quoted[160];

	b->invalid_lines++;
	if (b->invalid_lines > INVALID_LINES_LOG)
		return;
	log_quote(line, len, quoted, sizeof(quoted));
	worker_log(LOG_WARN, "ignored a line on fd 3: %s%s request_id=%s line=%s", why,
	           b->invalid_lines == INVALID_LINES_LOG ? " (later invalid lines of this job "
	                                                   "are ignored without a warning)"
	                                                 : "",
	           b->request_id, quoted);
}

static int is_blank(const char *p, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (p[i] != ' ' && p[i] != '\t' && p[i] != '\r')
			return 0;
	return 1;
}

/* Merges one line into pending. Returns 0 (taken or dropped) or INFERQ_ECONFLICT. */
static int take_line(info_batch_t *b, const char *line, size_t len)
{
	json_scan_error_t err;
	json_span_t root, pending;
	buf_t combined = BUF_INIT;
	int rc;

	if (is_blank(line, len))
		return 0;
	if (len > INFO_LINE_MAX) {
		warn_invalid(b, "longer than 64 KiB, the server's default limit of info", line,
		             len);
		return 0;
	}
	if (json_validate(line, len, INFO_MAX_DEPTH, &root, &err) != 0) {
		warn_invalid(b, err.message, line, len);
		return 0;
	}
	if (root.type != JSON_TYPE_OBJECT) {
		warn_invalid(b, "not a JSON object", line, len);
		return 0;
	}
	if (b->pending.len == 0) {
		buf_append(&b->pending, root.start, root.len);
		return 0;
	}
	rc = json_validate(b->pending.data, b->pending.len, INFO_MAX_DEPTH, &pending, NULL);
	if (rc == 0)
		rc = compose(pending, root, &combined);
	if (rc == 0) {
		buf_free(&b->pending);
		b->pending = combined;
		return 0;
	}
	buf_free(&combined);
	return INFERQ_ECONFLICT;
}

/* Takes complete lines from the front of input until one has to wait. */
static void take_lines(info_batch_t *b)
{
	size_t start = 0;

	while (!b->stalled && start < b->input.len) {
		const char *p = b->input.data + start;
		const char *nl = memchr(p, '\n', b->input.len - start);
		size_t len;

		if (!nl)
			break;
		len = (size_t)(nl - p);
		if (b->discarding)
			b->discarding = 0;
		else if (take_line(b, p, len) != 0)
			b->stalled = 1;
		if (!b->stalled)
			start += len + 1;
	}
	memmove(b->input.data, b->input.data + start, b->input.len - start);
	b->input.len -= start;
	if (b->input.data)
		b->input.data[b->input.len] = '\0';

	/* A line without its end yet: drop it once it cannot be valid any more. */
	if (!b->stalled && b->input.len > INFO_LINE_MAX) {
		if (!b->discarding)
			warn_invalid(b, "longer than 64 KiB, the server's default limit of info",
			             b->input.data, b->input.len);
		b->discarding = 1;
		buf_reset(&b->input);
	}
}

void info_batch_add(info_batch_t *b, const char *data, size_t len)
{
	if (b->discarding && !b->stalled && !memchr(data, '\n', len))
		return;
	buf_append(&b->input, data, len);
	take_lines(b);
}

void info_batch_finish(info_batch_t *b)
{
	if (b->input.len > 0 && b->input.data[b->input.len - 1] != '\n') {
		buf_putc(&b->input, '\n');
		take_lines(b);
	}
	if (b->invalid_lines > INVALID_LINES_LOG)
		worker_log(LOG_WARN, "ignored %d invalid lines on fd 3 in all request_id=%s",
		           b->invalid_lines, b->request_id);
}

int info_batch_take(info_batch_t *b, buf_t *out)
{
	if (b->pending.len == 0)
		return 0;
	buf_append(out, b->pending.data, b->pending.len);
	buf_reset(&b->pending);
	b->stalled = 0;
	take_lines(b);
	return 1;
}

/* Returns the length of the valid UTF-8 sequence at p (not NUL), or 0. */
static size_t utf8_length(const unsigned char *p, size_t avail)
{
	unsigned c = p[0], cp, min;
	size_t n;

	if (c == 0)
		return 0;
	if (c < 0x80)
		return 1;
	if (c >= 0xC2 && c <= 0xDF) {
		n = 2, cp = c & 0x1F, min = 0x80;
	} else if ((c & 0xF0) == 0xE0) {
		n = 3, cp = c & 0x0F, min = 0x800;
	} else if (c >= 0xF0 && c <= 0xF4) {
		n = 4, cp = c & 0x07, min = 0x10000;
	} else {
		return 0;
	}
	if (avail < n)
		return 0;
	for (size_t k = 1; k < n; k++) {
		if ((p[k] & 0xC0) != 0x80)
			return 0;
		cp = (cp << 6) | (p[k] & 0x3F);
	}
	if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
		return 0;
	return n;
}

void worker_append_utf8(buf_t *out, const char *s, size_t len)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t i = 0;

	while (i < len) {
		size_t n = utf8_length(p + i, len - i);

		if (n == 0) {
			buf_append(out, "\xEF\xBF\xBD", 3);
			i++;
		} else {
			buf_append(out, p + i, n);
			i += n;
		}
	}
}
