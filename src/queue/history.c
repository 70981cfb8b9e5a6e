/*
 * Job history (see history.h). The stored array is text this file wrote,
 * so it is always valid JSON; it is re-read with the strict scanner only to
 * find element boundaries when the oldest events must go. An event is at
 * most a few hundred bytes (the detail is cut to HISTORY_DETAIL_MAX, and
 * worker names are limited by the routes), so a full history of 32 events
 * stays near 10 KiB.
 *
 * SPDX-License-Identifier: MIT
 */
#include "history.h"

#include <string.h>

#include "clock.h"
#include "json.h"
#include "log.h"

/* The stored array nests one object in one array. */
#define HISTORY_DEPTH 2

static const char *const event_names[] = {
	[HISTORY_NONE] = "",
	[HISTORY_SUBMITTED] = "submitted",
	[HISTORY_CLAIMED] = "claimed",
	[HISTORY_RELEASED] = "released",
	[HISTORY_EXPIRED] = "expired",
	[HISTORY_RETRIED] = "retried",
	[HISTORY_COMPLETED] = "completed",
	[HISTORY_FAILED] = "failed",
	[HISTORY_CANCELED] = "canceled",
};

const char *history_event_name(history_event_t event)
{
	if ((size_t)event >= sizeof(event_names) / sizeof(event_names[0]))
		return "";
	return event_names[event];
}

history_event_t history_event_of(job_state_t prev, job_state_t next)
{
	if (prev == next)
		return HISTORY_NONE;
	switch (next) {
	case JOB_RUNNING: return HISTORY_CLAIMED;
	case JOB_PENDING: return HISTORY_RELEASED;
	case JOB_DONE: return HISTORY_COMPLETED;
	case JOB_FAILED: return HISTORY_FAILED;
	case JOB_CANCELED: return HISTORY_CANCELED;
	}
	return HISTORY_NONE;
}

/* Returns the length of the longest prefix of s[0..len) within max bytes that ends on a
 * UTF-8 character boundary. */
static size_t utf8_cut(const char *s, size_t len, size_t max)
{
	if (len <= max)
		return len;
	while (max > 0 && ((unsigned char)s[max] & 0xc0) == 0x80)
		max--;
	return max;
}

/* Writes one event object to out. */
static void write_event(buf_t *out, history_event_t event, int64_t at_ms, const rbuf_t *worker,
			const char *detail)
{
	char at[RFC3339_LEN + 1];

	clock_format_rfc3339(at_ms, at);
	buf_puts(out, "{\"at\":\"");
	buf_append(out, at, RFC3339_LEN);
	buf_puts(out, "\",\"event\":\"");
	buf_puts(out, history_event_name(event));
	buf_putc(out, '"');
	if (worker && worker->len > 0) {
		buf_puts(out, ",\"worker\":");
		json_write_string(out, worker->data, worker->len);
	}
	if (detail && detail[0]) {
		size_t len = strlen(detail);

		buf_puts(out, ",\"detail\":");
		json_write_string(out, detail, utf8_cut(detail, len, HISTORY_DETAIL_MAX));
	}
	buf_putc(out, '}');
}

/*
 * Appends the stored events of history to out, each followed by a comma,
 * skipping the oldest so that at most keep remain. A history that does not
 * scan (a database edited by hand) is dropped with a warning.
 */
static void copy_newest(buf_t *out, const rbuf_t *history, size_t keep)
{
	json_span_t root, item;
	json_iter_t it;
	size_t total = 0, skip, i = 0;

	if (!history || keep == 0)
		return;
	if (json_validate(history->data, history->len, HISTORY_DEPTH, &root, NULL) != 0 ||
	    root.type != JSON_TYPE_ARRAY) {
		log_warn("queue", "a job's stored history is not a JSON array; starting it anew");
		return;
	}
	json_array_begin(&it, root);
	while (json_array_next(&it, &item))
		total++;
	skip = total > keep ? total - keep : 0;
	json_array_begin(&it, root);
	while (json_array_next(&it, &item)) {
		if (i++ < skip)
			continue;
		buf_append(out, item.start, item.len);
		buf_putc(out, ',');
	}
}

void history_append(job_record_t *rec, history_event_t event, int64_t at_ms,
		    const rbuf_t *worker, const char *detail, uint32_t max)
{
	buf_t text = BUF_INIT;

	if (event == HISTORY_NONE)
		return;
	if (max == 0) {
		rbuf_unref(rec->history);
		rec->history = NULL;
		return;
	}
	buf_putc(&text, '[');
	copy_newest(&text, rec->history, max - 1);
	write_event(&text, event, at_ms, worker, detail);
	buf_putc(&text, ']');
	rbuf_unref(rec->history);
	rec->history = rbuf_from_buf(&text);
}

size_t history_count(const job_record_t *rec)
{
	json_span_t root, item;
	json_iter_t it;
	size_t n = 0;

	if (!rec->history ||
	    json_validate(rec->history->data, rec->history->len, HISTORY_DEPTH, &root, NULL) != 0)
		return 0;
	json_array_begin(&it, root);
	while (json_array_next(&it, &item))
		n++;
	return n;
}

void history_render(buf_t *out, const job_record_t *rec)
{
	buf_t stored = BUF_INIT;

	buf_putc(out, '[');
	write_event(out, HISTORY_SUBMITTED, rec->created_at, NULL, NULL);
	copy_newest(&stored, rec->history, SIZE_MAX);
	if (stored.len > 0) {
		buf_putc(out, ',');
		buf_append(out, stored.data, stored.len - 1); /* without the last comma */
	}
	buf_putc(out, ']');
	buf_free(&stored);
}
