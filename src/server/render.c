/*
 * Status and claim responses (see render.h).
 *
 * SPDX-License-Identifier: MIT
 */
#include "render.h"

#include "clock.h"
#include "ids.h"
#include "json.h"
#include "log.h"

void render_time_field(buf_t *out, const char *name, int64_t ms)
{
	char text[RFC3339_LEN + 1];

	clock_format_rfc3339(ms, text);
	buf_putc(out, ',');
	json_write_key(out, name);
	buf_putc(out, '"');
	buf_append(out, text, RFC3339_LEN);
	buf_putc(out, '"');
}

static void raw_field(buf_t *out, const char *name, const rbuf_t *raw)
{
	if (raw == NULL)
		return;
	buf_putc(out, ',');
	json_write_key(out, name);
	buf_append(out, raw->data, raw->len);
}

static void id_field(buf_t *out, const char *name, const iq_id_t *id, int first)
{
	char text[ID_TEXT_LEN + 1];

	id_format(id, text);
	if (!first)
		buf_putc(out, ',');
	json_write_key(out, name);
	buf_putc(out, '"');
	buf_append(out, text, ID_TEXT_LEN);
	buf_putc(out, '"');
}

static void string_field(buf_t *out, const char *name, const char *s, size_t len)
{
	buf_putc(out, ',');
	json_write_key(out, name);
	json_write_string(out, s, len);
}

static void int_field(buf_t *out, const char *name, int64_t v)
{
	buf_putc(out, ',');
	json_write_key(out, name);
	buf_put_i64(out, v);
}

void render_state(buf_t *out, const job_record_t *rec)
{
	const char *state = job_state_name(rec->state);

	buf_puts(out, "{\"status\":\"");
	buf_puts(out, state);
	buf_putc(out, '"');
	buf_putc(out, ',');
	id_field(out, "request_id", &rec->id, 1);
	string_field(out, "model", rec->model->data, rec->model->len);
	buf_putc(out, '}');
}

void render_status(buf_t *out, const job_record_t *rec)
{
	const char *state = job_state_name(rec->state);

	buf_putc(out, '{');
	id_field(out, "request_id", &rec->id, 1);
	string_field(out, "model", rec->model->data, rec->model->len);
	buf_puts(out, ",\"status\":\"");
	buf_puts(out, state);
	buf_putc(out, '"');
	int_field(out, "priority", rec->priority);
	int_field(out, "retries", rec->retries);
	raw_field(out, "inputs", rec->payload);
	raw_field(out, "info", rec->info);
	if (rec->state == JOB_DONE)
		raw_field(out, "outputs", rec->outputs);
	if (rec->state == JOB_FAILED && rec->error)
		string_field(out, "error", rec->error->data, rec->error->len);
	render_time_field(out, "created_at", rec->created_at);
	if (rec->claimed_at)
		render_time_field(out, "claimed_at", rec->claimed_at);
	if (rec->state == JOB_RUNNING && rec->lease_expires_at)
		render_time_field(out, "lease_expires_at", rec->lease_expires_at);
	if (rec->done_at)
		render_time_field(out, "done_at", rec->done_at);
	raw_field(out, "warnings", rec->warnings);
	buf_putc(out, '}');
}

void render_claim(buf_t *out, const job_record_t *rec)
{
	buf_putc(out, '{');
	id_field(out, "request_id", &rec->id, 1);
	string_field(out, "model", rec->model->data, rec->model->len);
	raw_field(out, "payload", rec->payload);
	raw_field(out, "info", rec->info);
	int_field(out, "priority", rec->priority);
	int_field(out, "retries", rec->retries);
	id_field(out, "claim_id", &rec->claim_id, 0);
	render_time_field(out, "claimed_at", rec->claimed_at);
	if (rec->lease_expires_at) /* 0: a claim with no lease */
		render_time_field(out, "lease_expires_at", rec->lease_expires_at);
	buf_putc(out, '}');
}

void render_add_raw_field(buf_t *out, const char *name, const char *raw, size_t len)
{
	IQ_ASSERT(out->len > 0 && out->data[out->len - 1] == '}');
	out->len--; /* reopen the object */
	buf_putc(out, ',');
	json_write_key(out, name);
	buf_append(out, raw, len);
	buf_putc(out, '}');
}
