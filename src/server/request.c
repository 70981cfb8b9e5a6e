/*
 * Request body and query validation, and response helpers (see request.h).
 * Error messages name the field, show a short excerpt of the value that
 * was sent, and say what is accepted.
 *
 * SPDX-License-Identifier: MIT
 */
#include "request.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "error.h"
#include "inferq_error.h"
#include "log.h"
#include "render.h"

#define MAX_WARNINGS 16

const char *excerpt(const char *s, size_t len, char *out, size_t outlen)
{
	size_t o = 0, i;

	for (i = 0; i < len && i < 40 && o + 5 < outlen; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c < 0x20 || c == 0x7f)
			o += (size_t)snprintf(out + o, outlen - o, "\\x%02x", c);
		else
			out[o++] = (char)c;
	}
	if (i < len && o + 4 < outlen) {
		memcpy(out + o, "...", 3);
		o += 3;
	}
	out[o] = '\0';
	return out;
}

void respond_json(http_request_t *req, int status, buf_t *body)
{
	http_respond(req, status, NULL, NULL, body->data ? body->data : "", body->len);
	buf_free(body);
}

static void respond_error_va(http_request_t *req, int status, const char *code, const char *param,
			     const char *fmt, va_list ap)
{
	buf_t message = BUF_INIT;
	buf_t body = BUF_INIT;

	buf_vprintf(&message, fmt, ap);
	error_body(&body, status, code, param, "%s", message.data ? message.data : "");
	log_debug("http", "request %llu answered %d %s: %s", (unsigned long long)req->id, status,
		  code, message.data ? message.data : "");
	buf_free(&message);
	respond_json(req, status, &body);
}

void respond_error(http_request_t *req, int status, const char *code, const char *param,
		   const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	respond_error_va(req, status, code, param, fmt, ap);
	va_end(ap);
}

static void conflict_body(buf_t *body, const char *code, job_state_t state, const char *fmt,
			  va_list ap)
{
	buf_t message = BUF_INIT;

	buf_vprintf(&message, fmt, ap);
	error_body(body, 409, code, NULL, "%s", message.data ? message.data : "");
	/* Add "status" before the closing brace of the QueueError object. */
	body->len--;
	buf_puts(body, ",\"status\":\"");
	buf_puts(body, job_state_name(state));
	buf_puts(body, "\"}");
	buf_free(&message);
}

void respond_conflict(http_request_t *req, const char *code, job_state_t state, const char *fmt,
		      ...)
{
	buf_t body = BUF_INIT;
	va_list ap;

	va_start(ap, fmt);
	conflict_body(&body, code, state, fmt, ap);
	va_end(ap);
	respond_json(req, 409, &body);
}

void conflict_after_commit(server_t *s, http_request_t *req, const char *code, job_state_t state,
			   const char *fmt, ...)
{
	buf_t body = BUF_INIT;
	va_list ap;

	va_start(ap, fmt);
	conflict_body(&body, code, state, fmt, ap);
	va_end(ap);
	engine_reply_after_commit(s, req, 409, &body);
}

static void add_warning(body_t *b, const json_span_t *key)
{
	buf_t text = BUF_INIT;
	buf_t name = BUF_INIT;
	char shown[64];

	if (json_string_decode(*key, &name) != 0 && name.len == 0)
		buf_puts(&name, "?");
	buf_printf(&text, "unknown field \"%s\" ignored",
		   excerpt(name.data ? name.data : "", name.len, shown, sizeof(shown)));
	buf_putc(&b->warnings, b->warnings.len ? ',' : '[');
	json_write_string(&b->warnings, text.data, text.len);
	buf_free(&text);
	buf_free(&name);
}

int body_parse(server_t *s, http_request_t *req, const char *const *names, body_t *out)
{
	json_error_t err;
	json_iter_t it;
	json_member_t m;
	size_t warnings = 0;
	int rc;

	memset(out, 0, sizeof(*out));
	out->names = names;
	if (req->body_len == 0) {
		respond_error(req, 400, "invalid_json", NULL,
			      "request body is empty; send a JSON object");
		return INFERQ_EINVAL;
	}
	rc = json_validate(req->body, req->body_len, s->config.max_json_depth, &out->root, &err);
	if (rc == INFERQ_ELIMIT) {
		respond_error(req, 400, "too_deep", NULL,
			      "request body nests deeper than the limit of %d levels (offset %zu); "
			      "flatten the JSON or raise --max-json-depth",
			      s->config.max_json_depth, err.offset);
		return rc;
	}
	if (rc != 0) {
		respond_error(req, 400, "invalid_json", NULL, "request body is not valid JSON: %s",
			      err.message);
		return rc;
	}
	if (out->root.type != JSON_OBJECT) {
		respond_error(req, 400, "invalid_body", NULL,
			      "request body must be a JSON object such as {\"model\": ...}");
		return INFERQ_EINVAL;
	}

	json_object_iter(&it, out->root);
	while (json_object_next(&it, &m)) {
		int known = 0;

		for (int i = 0; names[i]; i++) {
			if (!json_string_equals(m.key, names[i]))
				continue;
			known = 1;
			if (out->present[i]) {
				respond_error(req, 400, "duplicate_field", names[i],
					      "field \"%s\" appears more than once; send it once",
					      names[i]);
				body_free(out);
				return INFERQ_EINVAL;
			}
			out->present[i] = 1;
			out->fields[i] = m.value;
			break;
		}
		if (!known && warnings++ < MAX_WARNINGS)
			add_warning(out, &m.key);
	}
	if (out->warnings.len)
		buf_putc(&out->warnings, ']');
	return 0;
}

void body_add_warnings(buf_t *out, const body_t *b)
{
	if (b->warnings.len)
		render_add_raw_field(out, "warnings", b->warnings.data, b->warnings.len);
}

void body_free(body_t *b)
{
	buf_free(&b->warnings);
}

const json_span_t *body_field(const body_t *b, const char *name)
{
	for (int i = 0; b->names[i]; i++) {
		if (strcmp(b->names[i], name) == 0)
			return b->present[i] ? &b->fields[i] : NULL;
	}
	return NULL;
}

static const char *type_name(json_type_t t)
{
	static const char *const names[] = {"null", "false", "true", "a number", "a string",
					    "an array", "an object"};

	return names[t];
}

static int model_char_ok(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       c == '.' || c == '_' || c == ':' || c == '/' || c == '-';
}

static int check_model(server_t *s, http_request_t *req, const char *name, size_t len)
{
	char shown[64];

	if (len == 0) {
		respond_error(req, 400, "invalid_field", "model",
			      "model must not be empty; send the model name, e.g. "
			      "\"my-org/video-gen\"");
		return INFERQ_EINVAL;
	}
	if (len > s->config.max_model_length) {
		respond_error(req, 400, "invalid_field", "model",
			      "model is %zu characters long; the limit is %zu (--max-model-length)",
			      len, s->config.max_model_length);
		return INFERQ_EINVAL;
	}
	for (size_t i = 0; i < len; i++) {
		if (!model_char_ok((unsigned char)name[i])) {
			respond_error(req, 400, "invalid_field", "model",
				      "model \"%s\" contains a character that is not allowed at "
				      "position %zu; use only A-Z a-z 0-9 . _ : / -",
				      excerpt(name, len, shown, sizeof(shown)), i + 1);
			return INFERQ_EINVAL;
		}
	}
	return 0;
}

int read_model(server_t *s, http_request_t *req, const body_t *b, buf_t *out)
{
	const json_span_t *v = body_field(b, "model");

	if (v == NULL) {
		respond_error(req, 400, "missing_field", "model",
			      "field \"model\" is required; send the model name as a string");
		return INFERQ_EINVAL;
	}
	if (v->type != JSON_STRING) {
		respond_error(req, 400, "invalid_field", "model",
			      "model must be a string, not %s", type_name(v->type));
		return INFERQ_EINVAL;
	}
	buf_reset(out);
	if (json_string_decode(*v, out) != 0) {
		respond_error(req, 400, "invalid_field", "model",
			      "model contains a NUL character; use only A-Z a-z 0-9 . _ : / -");
		return INFERQ_EINVAL;
	}
	return check_model(s, req, out->data ? out->data : "", out->len);
}

static int query_param(http_request_t *req, const char *name, buf_t *out)
{
	char value[1024];
	size_t len = 0;
	int rc;

	rc = http_query_param(req->query, req->query_len, name, value, sizeof(value), &len);
	if (rc == 0) {
		respond_error(req, 400, "missing_field", name,
			      "query parameter \"%s\" is required", name);
		return INFERQ_EINVAL;
	}
	if (rc < 0) {
		respond_error(req, 400, "invalid_field", name,
			      "query parameter \"%s\" is not valid percent-encoded text or is "
			      "longer than %zu bytes",
			      name, sizeof(value) - 1);
		return INFERQ_EINVAL;
	}
	buf_reset(out);
	buf_append(out, value, len);
	return 0;
}

int read_model_query(server_t *s, http_request_t *req, buf_t *out)
{
	if (query_param(req, "model", out) != 0)
		return INFERQ_EINVAL;
	return check_model(s, req, out->data ? out->data : "", out->len);
}

static int parse_id_text(http_request_t *req, const char *name, const char *text, size_t len,
			 iq_id_t *out)
{
	char shown[64];

	if (id_parse(text, len, out) != 0) {
		respond_error(req, 400, "invalid_field", name,
			      "%s \"%s\" is not a valid id; expected the 36-character UUID the "
			      "server returned, e.g. 01938f6e-8a1c-7cc2-9b1e-3f0a5e0c2d11",
			      name, excerpt(text, len, shown, sizeof(shown)));
		return INFERQ_EINVAL;
	}
	return 0;
}

int read_id(http_request_t *req, const body_t *b, const char *name, iq_id_t *out)
{
	const json_span_t *v = body_field(b, name);
	buf_t text = BUF_INIT;
	int rc;

	if (v == NULL) {
		respond_error(req, 400, "missing_field", name, "field \"%s\" is required", name);
		return INFERQ_EINVAL;
	}
	if (v->type != JSON_STRING) {
		respond_error(req, 400, "invalid_field", name, "%s must be a string, not %s", name,
			      type_name(v->type));
		return INFERQ_EINVAL;
	}
	json_string_decode(*v, &text);
	rc = parse_id_text(req, name, text.data ? text.data : "", text.len, out);
	buf_free(&text);
	return rc;
}

int read_id_query(http_request_t *req, const char *name, iq_id_t *out)
{
	buf_t text = BUF_INIT;
	int rc;

	rc = query_param(req, name, &text);
	if (rc == 0)
		rc = parse_id_text(req, name, text.data ? text.data : "", text.len, out);
	buf_free(&text);
	return rc;
}

int read_object(server_t *s, http_request_t *req, const body_t *b, const char *name, int required,
		json_span_t *out, int *present)
{
	const json_span_t *v = body_field(b, name);

	if (present)
		*present = v != NULL;
	if (v == NULL) {
		if (!required)
			return 0;
		respond_error(req, 400, "missing_field", name,
			      "field \"%s\" is required; send a JSON object", name);
		return INFERQ_EINVAL;
	}
	if (v->type != JSON_OBJECT) {
		respond_error(req, 400, "invalid_field", name, "%s must be a JSON object, not %s",
			      name, type_name(v->type));
		return INFERQ_EINVAL;
	}
	*out = *v;
	return 0;
}

int read_info(server_t *s, http_request_t *req, const body_t *b, json_span_t *out, int *present)
{
	json_span_t history;

	if (read_object(s, req, b, "info", 0, out, present) != 0)
		return INFERQ_EINVAL;
	if (!*present)
		return 0;
	if (out->len > s->config.max_info_bytes) {
		respond_error(req, 400, "too_large", "info",
			      "info is %zu bytes; the limit is %zu bytes (--max-info-bytes)",
			      out->len, s->config.max_info_bytes);
		return INFERQ_ELIMIT;
	}
	if (json_object_get(*out, "retry_history", &history)) {
		respond_error(req, 400, "invalid_field", "info",
			      "info.retry_history is written by the server and cannot be set; "
			      "remove it from info");
		return INFERQ_EINVAL;
	}
	return 0;
}

int read_int32(http_request_t *req, const body_t *b, const char *name, int64_t min, int64_t max,
	       int64_t *out)
{
	const json_span_t *v = body_field(b, name);
	char shown[64];
	int64_t n;

	if (v == NULL)
		return 0;
	if (v->type != JSON_NUMBER || json_int64(*v, &n) != 0 || n < min || n > max) {
		respond_error(req, 400, "invalid_field", name,
			      "%s must be an integer from %lld to %lld; got %s", name,
			      (long long)min, (long long)max,
			      excerpt(v->start, v->len, shown, sizeof(shown)));
		return INFERQ_EINVAL;
	}
	*out = n;
	return 0;
}

int read_seconds(http_request_t *req, const body_t *b, const char *name, double min, double max,
		 double *out)
{
	const json_span_t *v = body_field(b, name);
	char shown[64];
	double d;

	if (v == NULL)
		return 0;
	if (v->type != JSON_NUMBER || json_double(*v, &d) != 0 || !isfinite(d) || d < min ||
	    d > max) {
		respond_error(req, 400, "invalid_field", name,
			      "%s must be a number of seconds from %g to %g; got %s", name, min,
			      max, excerpt(v->start, v->len, shown, sizeof(shown)));
		return INFERQ_EINVAL;
	}
	*out = d;
	return 0;
}

int read_string(http_request_t *req, const body_t *b, const char *name, int required,
		size_t max_len, buf_t *out, int *present)
{
	const json_span_t *v = body_field(b, name);

	if (present)
		*present = v != NULL;
	if (v == NULL) {
		if (!required)
			return 0;
		respond_error(req, 400, "missing_field", name,
			      "field \"%s\" is required; send a string", name);
		return INFERQ_EINVAL;
	}
	if (v->type != JSON_STRING) {
		respond_error(req, 400, "invalid_field", name, "%s must be a string, not %s", name,
			      type_name(v->type));
		return INFERQ_EINVAL;
	}
	buf_reset(out);
	if (json_string_decode(*v, out) != 0) {
		respond_error(req, 400, "invalid_field", name,
			      "%s contains a NUL character, which is not allowed", name);
		return INFERQ_EINVAL;
	}
	if (out->len > max_len) {
		respond_error(req, 400, "invalid_field", name,
			      "%s is %zu bytes long; the limit is %zu bytes", name, out->len,
			      max_len);
		return INFERQ_ELIMIT;
	}
	return 0;
}
