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
#define MAX_QUERY_VALUE 1024 /* bytes of one decoded query parameter */

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

int input_fail(input_error_t *err, int rc, const char *code, const char *param, const char *fmt,
	       ...)
{
	va_list ap;

	err->status = 400;
	err->code = code;
	err->param = param;
	va_start(ap, fmt);
	vsnprintf(err->message, sizeof(err->message), fmt, ap);
	va_end(ap);
	return rc;
}

static const char *type_name(json_type_t t)
{
	static const char *const names[] = {"null", "false", "true", "a number", "a string",
					    "an array", "an object"};

	return names[t];
}

static void add_warning(body_t *b, const json_span_t *key)
{
	buf_t text = BUF_INIT;
	buf_t name = BUF_INIT;
	char shown[64];

	json_string_decode(*key, &name);
	excerpt(name.data ? name.data : "", name.len, shown, sizeof(shown));
	if (b->unknown[0] == '\0')
		snprintf(b->unknown, sizeof(b->unknown), "%s", shown);
	buf_printf(&text, "unknown field \"%s\" ignored", shown);
	buf_putc(&b->warnings, b->warnings.len ? ',' : '[');
	json_write_string(&b->warnings, text.data, text.len);
	buf_free(&text);
	buf_free(&name);
}

int body_parse(const serve_config_t *c, const char *text, size_t len, const char *const *names,
	       body_t *out, input_error_t *err)
{
	json_scan_error_t jerr;
	json_span_t root;
	int rc;

	memset(out, 0, sizeof(*out));
	out->names = names;
	if (len == 0)
		return input_fail(err, INFERQ_EINVAL, "invalid_json", NULL,
			    "request body is empty; send a JSON object");
	rc = json_validate(text, len, c->max_json_depth, &out->root, &jerr);
	if (rc == INFERQ_ELIMIT)
		return input_fail(err, rc, "too_deep", NULL,
			    "request body nests deeper than the limit of %d levels (offset %zu); "
			    "flatten the JSON or raise --max-json-depth",
			    c->max_json_depth, jerr.offset);
	if (rc != 0)
		return input_fail(err, rc, "invalid_json", NULL, "request body is not valid JSON: %s",
			    jerr.message);
	if (out->root.type != JSON_TYPE_OBJECT)
		return input_fail(err, INFERQ_EINVAL, "invalid_body", NULL,
			    "request body must be a JSON object such as {\"model\": ...}, not %s",
			    type_name(out->root.type));
	root = out->root; /* body_parse_object() clears out first */
	return body_parse_object(&root, names, out, err);
}

int body_parse_object(const json_span_t *object, const char *const *names, body_t *out,
		      input_error_t *err)
{
	json_iter_t it;
	json_member_t m;
	size_t unknown = 0;

	memset(out, 0, sizeof(*out));
	out->root = *object;
	out->names = names;
	json_object_begin(&it, out->root);
	while (json_object_next(&it, &m)) {
		int known = 0;

		for (int i = 0; names[i]; i++) {
			if (!json_string_equals(m.key, names[i]))
				continue;
			known = 1;
			if (out->present[i])
				return input_fail(err, INFERQ_EINVAL, "duplicate_field", names[i],
					    "field \"%s\" appears more than once; send it once",
					    names[i]);
			out->present[i] = 1;
			out->fields[i] = m.value;
			break;
		}
		if (!known && unknown++ < MAX_WARNINGS)
			add_warning(out, &m.key);
	}
	if (out->warnings.len)
		buf_putc(&out->warnings, ']');
	return 0;
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

void body_add_warnings(buf_t *out, const body_t *b)
{
	if (b->warnings.len)
		render_add_raw_field(out, "warnings", b->warnings.data, b->warnings.len);
}

/*
 * Fails with "field NAME is required; REMEDY", and names the body's first
 * unknown field, since a misspelt field name is the usual cause.
 */
static int fail_missing(const body_t *b, input_error_t *err, const char *name,
			const char *remedy)
{
	if (b->unknown[0])
		return input_fail(err, INFERQ_EINVAL, "missing_field", name,
			    "field \"%s\" is required; %s (the body has an unknown field \"%s\": "
			    "check its spelling)",
			    name, remedy, b->unknown);
	return input_fail(err, INFERQ_EINVAL, "missing_field", name,
		    "field \"%s\" is required; %s", name, remedy);
}

static int model_char_ok(unsigned char ch)
{
	return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
	       ch == '.' || ch == '_' || ch == ':' || ch == '/' || ch == '-';
}

static int check_model(const serve_config_t *c, const char *name, size_t len, input_error_t *err)
{
	char shown[64];

	if (len == 0)
		return input_fail(err, INFERQ_EINVAL, "invalid_field", "model",
			    "model must not be empty; send the model name, e.g. "
			    "\"my-org/video-gen\"");
	if (len > c->max_model_length)
		return input_fail(err, INFERQ_EINVAL, "invalid_field", "model",
			    "model is %zu characters long; the limit is %zu (--max-model-length)",
			    len, c->max_model_length);
	for (size_t i = 0; i < len; i++) {
		if (!model_char_ok((unsigned char)name[i]))
			return input_fail(err, INFERQ_EINVAL, "invalid_field", "model",
				    "model \"%s\" has a character that is not allowed at byte %zu; "
				    "use only A-Z a-z 0-9 . _ : / -",
				    excerpt(name, len, shown, sizeof(shown)), i + 1);
	}
	return 0;
}

int read_model(const serve_config_t *c, const body_t *b, buf_t *out, input_error_t *err)
{
	const json_span_t *v = body_field(b, "model");

	if (v == NULL)
		return fail_missing(b, err, "model", "send the model name as a string");
	if (v->type != JSON_TYPE_STRING)
		return input_fail(err, INFERQ_EINVAL, "invalid_field", "model",
			    "model must be a string, not %s", type_name(v->type));
	buf_reset(out);
	if (json_string_decode(*v, out) != 0)
		return input_fail(err, INFERQ_EINVAL, "invalid_field", "model",
			    "model contains a NUL character; use only A-Z a-z 0-9 . _ : / -");
	return check_model(c, out->data ? out->data : "", out->len, err);
}

static int query_param(const char *query, size_t len, const char *name, buf_t *out,
		       input_error_t *err)
{
	char value[MAX_QUERY_VALUE + 1];
	size_t value_len = 0;
	int rc;

	rc = http_query_param(query, len, name, value, sizeof(value), &value_len);
	if (rc == 0)
		return input_fail(err, INFERQ_EINVAL, "missing_field", name,
			    "query parameter \"%s\" is required", name);
	if (rc < 0)
		return input_fail(err, INFERQ_EINVAL, "invalid_field", name,
			    "the query string is not valid percent-encoded text, or query "
			    "parameter \"%s\" contains a NUL or is longer than %d bytes",
			    name, MAX_QUERY_VALUE);
	buf_reset(out);
	buf_append(out, value, value_len);
	return 0;
}

int read_model_query(const serve_config_t *c, const char *query, size_t len, buf_t *out,
		     input_error_t *err)
{
	if (query_param(query, len, "model", out, err) != 0)
		return INFERQ_EINVAL;
	return check_model(c, out->data ? out->data : "", out->len, err);
}

static int parse_id_text(const char *name, const char *text, size_t len, iq_id_t *out,
			 input_error_t *err)
{
	char shown[64];

	if (id_parse(text, len, out) != 0)
		return input_fail(err, INFERQ_EINVAL, "invalid_field", name,
			    "%s \"%s\" is not a valid id; expected the 36-character UUID the "
			    "server returned, e.g. 01938f6e-8a1c-7cc2-9b1e-3f0a5e0c2d11",
			    name, excerpt(text, len, shown, sizeof(shown)));
	return 0;
}

int read_id(const body_t *b, const char *name, iq_id_t *out, input_error_t *err)
{
	const json_span_t *v = body_field(b, name);
	buf_t text = BUF_INIT;
	int rc;

	if (v == NULL)
		return fail_missing(b, err, name, "send the id the server returned, as a string");
	if (v->type != JSON_TYPE_STRING)
		return input_fail(err, INFERQ_EINVAL, "invalid_field", name,
			    "%s must be a string, not %s", name, type_name(v->type));
	json_string_decode(*v, &text);
	rc = parse_id_text(name, text.data ? text.data : "", text.len, out, err);
	buf_free(&text);
	return rc;
}

int read_id_query(const char *query, size_t len, const char *name, iq_id_t *out,
		  input_error_t *err)
{
	buf_t text = BUF_INIT;
	int rc;

	rc = query_param(query, len, name, &text, err);
	if (rc == 0)
		rc = parse_id_text(name, text.data ? text.data : "", text.len, out, err);
	buf_free(&text);
	return rc;
}

int read_object(const body_t *b, const char *name, int required, json_span_t *out, int *present,
		input_error_t *err)
{
	const json_span_t *v = body_field(b, name);

	if (present)
		*present = v != NULL;
	if (v == NULL) {
		if (!required)
			return 0;
		return fail_missing(b, err, name, "send a JSON object");
	}
	if (v->type != JSON_TYPE_OBJECT)
		return input_fail(err, INFERQ_EINVAL, "invalid_field", name,
			    "%s must be a JSON object, not %s", name, type_name(v->type));
	*out = *v;
	return 0;
}

int read_info(const serve_config_t *c, const body_t *b, json_span_t *out, int *present,
	      input_error_t *err)
{
	json_span_t history;
	int sent = 0;

	int rc = read_object(b, "info", 0, out, &sent, err);

	if (present)
		*present = sent;
	if (rc != 0)
		return rc;
	if (!sent)
		return 0;
	if (out->len > c->max_info_bytes)
		return input_fail(err, INFERQ_ELIMIT, "too_large", "info",
			    "info is %zu bytes; the limit is %zu bytes (--max-info-bytes)",
			    out->len, c->max_info_bytes);
	if (json_object_find(*out, "retry_history", &history))
		return input_fail(err, INFERQ_EINVAL, "invalid_field", "info",
			    "info.retry_history is written by the server and cannot be set; "
			    "remove it from info");
	return 0;
}

int read_int(const body_t *b, const char *name, int64_t min, int64_t max, int64_t *out,
	     input_error_t *err)
{
	const json_span_t *v = body_field(b, name);
	char shown[64];
	int64_t n;

	if (v == NULL)
		return 0;
	if (v->type != JSON_TYPE_NUMBER || json_int64(*v, &n) != 0 || n < min || n > max)
		return input_fail(err, INFERQ_EINVAL, "invalid_field", name,
			    "%s must be an integer from %lld to %lld; got %s", name,
			    (long long)min, (long long)max,
			    excerpt(v->start, v->len, shown, sizeof(shown)));
	*out = n;
	return 0;
}

int read_seconds(const body_t *b, const char *name, double min, double max, double *out,
		 input_error_t *err)
{
	const json_span_t *v = body_field(b, name);
	char shown[64];
	double d;

	if (v == NULL)
		return 0;
	if (v->type != JSON_TYPE_NUMBER || json_double(*v, &d) != 0 || !isfinite(d) || d < min ||
	    d > max)
		return input_fail(err, INFERQ_EINVAL, "invalid_field", name,
			    "%s must be a number of seconds from %g to %g; got %s", name, min, max,
			    excerpt(v->start, v->len, shown, sizeof(shown)));
	*out = d;
	return 0;
}

int read_string(const body_t *b, const char *name, int required, size_t max_len, buf_t *out,
		int *present, input_error_t *err)
{
	const json_span_t *v = body_field(b, name);

	if (present)
		*present = v != NULL;
	if (v == NULL) {
		if (!required)
			return 0;
		return fail_missing(b, err, name, "send a string");
	}
	if (v->type != JSON_TYPE_STRING)
		return input_fail(err, INFERQ_EINVAL, "invalid_field", name,
			    "%s must be a string, not %s", name, type_name(v->type));
	buf_reset(out);
	if (json_string_decode(*v, out) != 0)
		return input_fail(err, INFERQ_EINVAL, "invalid_field", name,
			    "%s contains a NUL character, which is not allowed", name);
	if (out->len > max_len)
		return input_fail(err, INFERQ_ELIMIT, "invalid_field", name,
			    "%s is %zu bytes long; the limit is %zu bytes", name, out->len,
			    max_len);
	return 0;
}

void respond_json(http_request_t *req, int status, buf_t *body)
{
	http_respond(req, status, NULL, NULL, body->data ? body->data : "", body->len);
	buf_free(body);
}

void respond_input_error(http_request_t *req, const input_error_t *err)
{
	buf_t body = BUF_INIT;

	error_body(&body, err->status, err->code, err->param, "%s", err->message);
	log_debug("http", "request %llu rejected with %d %s: %s", (unsigned long long)req->id,
		  err->status, err->code, err->message);
	respond_json(req, err->status, &body);
}

void respond_error(http_request_t *req, int status, const char *code, const char *param,
		   const char *fmt, ...)
{
	input_error_t err = {status, code, param, ""};
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(err.message, sizeof(err.message), fmt, ap);
	va_end(ap);
	respond_input_error(req, &err);
}

void conflict_body(buf_t *out, const char *code, const char *param, job_state_t state,
		   const char *fmt, ...)
{
	char message[512];
	char status[32];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(message, sizeof(message), fmt, ap);
	va_end(ap);
	error_body(out, 409, code, param, "%s", message);
	snprintf(status, sizeof(status), "\"%s\"", job_state_name(state));
	render_add_raw_field(out, "status", status, strlen(status));
}
