/*
 * Fuzz target for request body validation (request.h). The input is a
 * request body. It is parsed with the known fields of every route that
 * takes a JSON body, and then every reader that route uses runs on the
 * result, even after an earlier reader failed. Runs with the default limits and
 * with tight ones. Checks: accepted values obey the reader's rule; every
 * error has a 4xx status, a code, and a NUL-terminated message without
 * control bytes; the warnings and the QueueError body built from an error
 * are valid JSON.
 *
 * SPDX-License-Identifier: MIT
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "buf.h"
#include "check.h"
#include "config.h"
#include "error.h"
#include "ids.h"
#include "inferq_error.h"
#include "json.h"
#include "request.h"

/* Field lists as the handlers declare them (handlers_client.c, handlers_worker.c). */
static const char *const submit_fields[] = {"model", "payload", "info", "priority", NULL};
static const char *const cancel_fields[] = {"model", "request_id", NULL};
static const char *const clear_fields[] = {"model", NULL};
static const char *const claim_fields[] = {"model", "claim_timeout", "wait", "worker", NULL};
static const char *const heartbeat_fields[] = {"model", "request_id", "claim_id", "info", NULL};
static const char *const complete_fields[] = {"model",   "request_id", "claim_id",
                                              "outputs", "info",       NULL};
static const char *const fail_fields[] = {"model", "request_id", "claim_id", "error", "info", NULL};

static const char *const *const routes[] = {submit_fields, cancel_fields,    clear_fields,
                                            claim_fields,  heartbeat_fields, complete_fields,
                                            fail_fields};

static serve_config_t configs[2];
static const char *input_start, *input_end;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	config_defaults(&configs[0]);
	config_defaults(&configs[1]);
	configs[1].max_json_depth = 2;
	configs[1].max_info_bytes = 16;
	configs[1].max_model_length = 8;
	log_set_level(LOG_ERROR);
	return 0;
}

static void reset_error(input_error_t *err)
{
	memset(err, 0xaa, sizeof(*err));
}

/* Checks a reader's result: 0, or a negative code with a well-formed error. */
static void check_result(int rc, const input_error_t *err, const char *what)
{
	buf_t body = BUF_INIT;
	json_span_t root;

	if (rc == 0)
		return;
	FUZZ_CHECK(rc == INFERQ_EINVAL || rc == INFERQ_ELIMIT, "%s returned %d", what, rc);
	FUZZ_CHECK(err->status >= 400 && err->status <= 499, "%s set status %d", what, err->status);
	FUZZ_CHECK(err->code != NULL && err->code[0] != '\0', "%s set no code", what);
	fuzz_check_message(err->message, sizeof(err->message), what);

	error_body(&body, err->status, err->code, err->param, "%s", err->message);
	FUZZ_CHECK(json_validate(body.data, body.len, 4, &root, NULL) == 0 &&
	               root.type == JSON_TYPE_OBJECT,
	           "error body %s is not a JSON object", fuzz_show(body.data, body.len));
	buf_free(&body);
}

static void check_inside(const json_span_t *v, const char *what)
{
	FUZZ_CHECK(v->start >= input_start && v->len <= (size_t)(input_end - v->start),
	           "%s span lies outside the body", what);
}

static void check_model(const serve_config_t *c, const body_t *b)
{
	buf_t model = BUF_INIT;
	input_error_t err;
	int rc;

	reset_error(&err);
	rc = read_model(c, b, &model, &err);
	check_result(rc, &err, "read_model");
	if (rc == 0) {
		FUZZ_CHECK(model.len >= 1 && model.len <= c->max_model_length,
		           "read_model accepted %zu characters", model.len);
		FUZZ_CHECK(strspn(model.data, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
		                              "0123456789._:/-") == model.len,
		           "read_model accepted %s", fuzz_show(model.data, model.len));
	}
	buf_free(&model);
}

static void check_id(const body_t *b, const char *name)
{
	char text[ID_TEXT_LEN + 1];
	buf_t sent = BUF_INIT;
	input_error_t err;
	iq_id_t id;
	int rc;

	reset_error(&err);
	rc = read_id(b, name, &id, &err);
	check_result(rc, &err, "read_id");
	if (rc != 0)
		goto out;
	json_string_decode(*body_field(b, name), &sent);
	id_format(&id, text);
	FUZZ_CHECK(sent.len == ID_TEXT_LEN && strncasecmp(sent.data, text, ID_TEXT_LEN) == 0,
	           "read_id(%s) accepted %s as %s", name, fuzz_show(sent.data, sent.len), text);
out:
	buf_free(&sent);
}

static void check_int(const body_t *b, const char *name, int64_t min, int64_t max)
{
	input_error_t err;
	int64_t v = INT64_MIN;
	int rc;

	reset_error(&err);
	rc = read_int(b, name, min, max, &v, &err);
	check_result(rc, &err, "read_int");
	if (rc == 0 && body_field(b, name))
		FUZZ_CHECK(v >= min && v <= max, "read_int(%s) accepted %lld", name, (long long)v);
}

static void check_seconds(const body_t *b, const char *name, double min, double max)
{
	input_error_t err;
	double v = -1;
	int rc;

	reset_error(&err);
	rc = read_seconds(b, name, min, max, &v, &err);
	check_result(rc, &err, "read_seconds");
	if (rc == 0 && body_field(b, name))
		FUZZ_CHECK(isfinite(v) && v >= min && v <= max, "read_seconds(%s) accepted %g",
		           name, v);
}

static void check_string(const body_t *b, const char *name, int required, size_t max_len)
{
	buf_t s = BUF_INIT;
	input_error_t err;
	int present = -1, rc;

	reset_error(&err);
	rc = read_string(b, name, required, max_len, &s, &present, &err);
	check_result(rc, &err, "read_string");
	FUZZ_CHECK(present == (body_field(b, name) != NULL), "read_string(%s) set present %d", name,
	           present);
	if (rc == 0 && present)
		FUZZ_CHECK(s.len <= max_len && (s.len == 0 || memchr(s.data, '\0', s.len) == NULL),
		           "read_string(%s) accepted %s", name, fuzz_show(s.data, s.len));
	buf_free(&s);
}

static void check_object(const body_t *b, const char *name, int required)
{
	input_error_t err;
	json_span_t v;
	int present = -1, rc;

	reset_error(&err);
	rc = read_object(b, name, required, &v, &present, &err);
	check_result(rc, &err, "read_object");
	if (rc == 0 && present) {
		FUZZ_CHECK(v.type == JSON_TYPE_OBJECT, "read_object(%s) accepted type %d", name,
		           (int)v.type);
		check_inside(&v, name);
	}
}

static void check_info(const serve_config_t *c, const body_t *b)
{
	input_error_t err;
	json_span_t v, history;
	int present = -1, rc;

	reset_error(&err);
	rc = read_info(c, b, &v, &present, &err);
	check_result(rc, &err, "read_info");
	if (rc == 0 && present) {
		FUZZ_CHECK(v.type == JSON_TYPE_OBJECT && v.len <= c->max_info_bytes,
		           "read_info accepted %zu bytes of type %d", v.len, (int)v.type);
		FUZZ_CHECK(!json_object_find(v, "retry_history", &history),
		           "read_info accepted retry_history");
	}
}

/* Runs the readers each route runs, with the same arguments as its handler. */
static void run_readers(const serve_config_t *c, const char *const *fields, const body_t *b)
{
	check_model(c, b);
	if (fields == submit_fields) {
		check_object(b, "payload", 1);
		check_info(c, b);
		check_int(b, "priority", INT32_MIN, INT32_MAX);
	} else if (fields == cancel_fields) {
		check_id(b, "request_id");
	} else if (fields == claim_fields) {
		check_int(b, "claim_timeout", 1, 86400);
		check_seconds(b, "wait", 0, 60);
		check_string(b, "worker", 0, 128);
	} else if (fields != clear_fields) {
		check_id(b, "request_id");
		check_id(b, "claim_id");
		check_info(c, b);
		if (fields == complete_fields)
			check_object(b, "outputs", 1);
		if (fields == fail_fields)
			check_string(b, "error", 1, c->max_info_bytes);
	}
}

static void check_body(const body_t *b, const char *const *fields)
{
	buf_t out = BUF_INIT;
	json_span_t root;

	FUZZ_CHECK(b->root.type == JSON_TYPE_OBJECT, "body_parse accepted type %d",
	           (int)b->root.type);
	for (int i = 0; fields[i]; i++) {
		if (b->present[i])
			check_inside(&b->fields[i], fields[i]);
	}
	buf_puts(&out, "{\"id\":1}");
	body_add_warnings(&out, b);
	FUZZ_CHECK(json_validate(out.data, out.len, 3, &root, NULL) == 0,
	           "object with warnings %s is not valid JSON", fuzz_show(out.data, out.len));
	buf_free(&out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *text = malloc(size ? size : 1);

	memcpy(text, data, size);
	input_start = text;
	input_end = text + size;
	for (size_t c = 0; c < sizeof(configs) / sizeof(configs[0]); c++) {
		for (size_t r = 0; r < sizeof(routes) / sizeof(routes[0]); r++) {
			input_error_t err;
			body_t b;
			int rc;

			reset_error(&err);
			rc = body_parse(&configs[c], text, size, routes[r], &b, &err);
			check_result(rc, &err, "body_parse");
			if (rc == 0) {
				check_body(&b, routes[r]);
				run_readers(&configs[c], routes[r], &b);
			}
			body_free(&b);
		}
	}
	free(text);
	return 0;
}
