/*
 * Unit tests for request validation (request.h): body_parse and every field
 * reader, the query-string readers, conflict_body and excerpt. They call the
 * real JSON scanner, query decoder and renderer from the core library, start
 * from config_defaults() and change one limit where a case needs it. Each
 * rejection checks the status, the QueueError code, the param and that the
 * message names the field.
 *
 * SPDX-License-Identifier: MIT
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "ids.h"
#include "inferq_error.h"
#include "job.h"
#include "request.h"

/* Known fields of the bodies in these tests: at most BODY_MAX_FIELDS. */
static const char *const fields[] = {"model",   "payload",    "info",   "priority",
                                     "timeout", "request_id", "worker", NULL};

static const char sample_id[] = "01938f6e-8a1c-7cc2-9b1e-3f0a5e0c2d11";

/* ---- helpers ---- */

static serve_config_t defaults(void)
{
	serve_config_t c;

	config_defaults(&c);
	return c;
}

static int parse_with(const serve_config_t *c, const char *text, body_t *b, input_error_t *err)
{
	return body_parse(c, text, strlen(text), fields, b, err);
}

/* Parses text with the defaults and fails the test if the body is rejected. */
static void parse_ok(const char *text, body_t *b)
{
	serve_config_t c = defaults();
	input_error_t err;
	int rc = parse_with(&c, text, b, &err);

	if (rc != 0)
		fail_msg("body %s rejected: %s", text, err.message);
}

/* Checks an input_error_t: status 400, code, param, and that the message contains needle. */
static void check_error(const input_error_t *err, const char *code, const char *param,
                        const char *needle)
{
	assert_int_equal(err->status, 400);
	assert_string_equal(err->code, code);
	if (param == NULL)
		assert_null(err->param);
	else
		assert_string_equal(err->param, param);
	if (needle != NULL && strstr(err->message, needle) == NULL)
		fail_msg("message \"%s\" does not contain \"%s\"", err->message, needle);
}

static size_t count_of(const char *haystack, const char *needle)
{
	size_t n = 0;

	for (const char *p = strstr(haystack, needle); p; p = strstr(p + 1, needle))
		n++;
	return n;
}

/* Returns a malloc'd body {"model":"<n times ch>"}. */
static char *model_body(size_t n, char ch)
{
	char *text = malloc(n + 16);

	assert_non_null(text);
	memcpy(text, "{\"model\":\"", 10);
	memset(text + 10, ch, n);
	memcpy(text + 10 + n, "\"}", 3);
	return text;
}

/* ---- body_parse ---- */

/* ---- body_parse_object ---- */

static void test_body_object_inside_array(void **state)
{
	static const char text[] =
	    "{\"jobs\":[{\"model\":\"m\",\"x\":1},{\"model\":\"n\",\"model\":\"o\"}]}";
	json_span_t root, jobs, elem;
	json_iter_t it;
	input_error_t err;
	body_t b;
	buf_t model = BUF_INIT;
	serve_config_t c = defaults();

	assert_int_equal(json_validate(text, strlen(text), 64, &root, NULL), 0);
	assert_true(json_object_find(root, "jobs", &jobs));
	json_array_begin(&it, jobs);

	/* The first element: its own fields, its unknown field as a warning. */
	assert_true(json_array_next(&it, &elem));
	assert_int_equal(body_parse_object(&elem, fields, &b, &err), 0);
	assert_int_equal(read_model(&c, &b, &model, &err), 0);
	assert_string_equal(model.data, "m");
	assert_string_equal(b.warnings.data, "[\"unknown field \\\"x\\\" ignored\"]");
	assert_ptr_equal(b.root.start, elem.start);
	body_free(&b);

	/* The second repeats a known field. */
	assert_true(json_array_next(&it, &elem));
	assert_int_equal(body_parse_object(&elem, fields, &b, &err), INFERQ_EINVAL);
	check_error(&err, "duplicate_field", "model", "more than once");
	body_free(&b);
	buf_free(&model);
}

static void test_body_empty(void **state)
{
	serve_config_t c = defaults();
	input_error_t err;
	body_t b;

	assert_int_equal(body_parse(&c, "", 0, fields, &b, &err), INFERQ_EINVAL);
	check_error(&err, "invalid_json", NULL, "empty");
	body_free(&b);
}

static void test_body_invalid_json_offset(void **state)
{
	serve_config_t c = defaults();
	input_error_t err;
	body_t b;

	assert_int_equal(parse_with(&c, "{\"model\": x}", &b, &err), INFERQ_EINVAL);
	check_error(&err, "invalid_json", NULL, "not valid JSON");
	check_error(&err, "invalid_json", NULL, "offset 10");
	body_free(&b);

	assert_int_equal(parse_with(&c, "{\"model\":\"a\"} x", &b, &err), INFERQ_EINVAL);
	check_error(&err, "invalid_json", NULL, "offset 14");
	body_free(&b);

	assert_int_equal(parse_with(&c, "{\"model\":\"a\"", &b, &err), INFERQ_EINVAL);
	check_error(&err, "invalid_json", NULL, "offset 12");
	body_free(&b);
}

static void test_body_non_object_roots(void **state)
{
	static const struct {
		const char *text;
		const char *expected;
	} cases[] = {
	    {"null", "not null"},   {"false", "not false"},     {"true", "not true"},
	    {"12", "not a number"}, {"-1.5e3", "not a number"}, {"\"model\"", "not a string"},
	    {"[]", "not an array"}, {"[{}]", "not an array"},   {" \t\n 0 ", "not a number"},
	};
	serve_config_t c = defaults();

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		input_error_t err;
		body_t b;

		assert_int_equal(parse_with(&c, cases[i].text, &b, &err), INFERQ_EINVAL);
		check_error(&err, "invalid_body", NULL, cases[i].expected);
		check_error(&err, "invalid_body", NULL, "must be a JSON object");
		body_free(&b);
	}
}

static void test_body_whitespace_object(void **state)
{
	body_t b;

	parse_ok(" \r\n\t{}\n ", &b);
	assert_null(body_field(&b, "model"));
	assert_int_equal(b.warnings.len, 0);
	body_free(&b);
}

/* Returns a malloc'd body {"payload": <depth-1 nested arrays>}, nested depth levels in all. */
static char *nested_body(int depth)
{
	size_t inner = (size_t)(depth - 1);
	char *text = malloc(2 * inner + 16);
	size_t o = 0;

	assert_non_null(text);
	memcpy(text, "{\"payload\":", 11);
	o = 11;
	memset(text + o, '[', inner);
	o += inner;
	memset(text + o, ']', inner);
	o += inner;
	memcpy(text + o, "}", 2);
	return text;
}

static void test_body_depth_limit(void **state)
{
	serve_config_t c = defaults();
	char *at = nested_body(c.max_json_depth);
	char *over = nested_body(c.max_json_depth + 1);
	input_error_t err;
	body_t b;

	assert_int_equal(c.max_json_depth, 64);
	assert_int_equal(parse_with(&c, at, &b, &err), 0);
	assert_non_null(body_field(&b, "payload"));
	body_free(&b);

	assert_int_equal(parse_with(&c, over, &b, &err), INFERQ_ELIMIT);
	check_error(&err, "too_deep", NULL, "limit of 64 levels");
	check_error(&err, "too_deep", NULL, "--max-json-depth");
	body_free(&b);

	free(at);
	free(over);
}

static void test_body_depth_custom(void **state)
{
	serve_config_t c = defaults();
	input_error_t err;
	body_t b;

	c.max_json_depth = 3;
	assert_int_equal(parse_with(&c, "{\"payload\":{\"a\":[1]}}", &b, &err), 0);
	body_free(&b);

	assert_int_equal(parse_with(&c, "{\"payload\":{\"a\":[[1]]}}", &b, &err), INFERQ_ELIMIT);
	check_error(&err, "too_deep", NULL, "limit of 3 levels");
	body_free(&b);

	/* The depth limit is hit before the stray comma, so the error is too_deep. */
	assert_int_equal(parse_with(&c, "{\"payload\":{\"a\":[[1,]]}}", &b, &err), INFERQ_ELIMIT);
	check_error(&err, "too_deep", NULL, "--max-json-depth");
	body_free(&b);
}

static void test_body_known_fields(void **state)
{
	const json_span_t *v;
	body_t b;

	parse_ok("{\"model\":\"m\",\"priority\":5,\"payload\":{\"x\":[1,2]}}", &b);
	v = body_field(&b, "model");
	assert_non_null(v);
	assert_int_equal(v->type, JSON_TYPE_STRING);
	assert_int_equal(v->len, 3);
	assert_memory_equal(v->start, "\"m\"", 3);
	v = body_field(&b, "payload");
	assert_non_null(v);
	assert_int_equal(v->type, JSON_TYPE_OBJECT);
	assert_int_equal(v->len, strlen("{\"x\":[1,2]}"));
	assert_null(body_field(&b, "info"));
	assert_null(body_field(&b, "not_a_known_field"));
	assert_int_equal(b.warnings.len, 0);
	body_free(&b);
}

static void test_body_duplicate_field(void **state)
{
	serve_config_t c = defaults();
	input_error_t err;
	body_t b;

	assert_int_equal(
	    parse_with(&c, "{\"model\":\"a\",\"priority\":1,\"model\":\"b\"}", &b, &err),
	    INFERQ_EINVAL);
	check_error(&err, "duplicate_field", "model", "\"model\" appears more than once");
	body_free(&b);

	/* The same name spelled with an escape is the same field. */
	assert_int_equal(parse_with(&c, "{\"priority\":1,\"\\u0070riority\":2}", &b, &err),
	                 INFERQ_EINVAL);
	check_error(&err, "duplicate_field", "priority", "priority");
	body_free(&b);

	/* Repeated unknown fields are only warnings. */
	assert_int_equal(parse_with(&c, "{\"x\":1,\"x\":2}", &b, &err), 0);
	assert_string_equal(
	    b.warnings.data,
	    "[\"unknown field \\\"x\\\" ignored\",\"unknown field \\\"x\\\" ignored\"]");
	body_free(&b);
}

static void test_body_unknown_warnings(void **state)
{
	buf_t out = BUF_INIT;
	body_t b;

	parse_ok("{\"model\":\"m\",\"foo\":1,\"bar\":{\"model\":2}}", &b);
	assert_non_null(body_field(&b, "model"));
	assert_string_equal(b.warnings.data, "[\"unknown field \\\"foo\\\" ignored\","
	                                     "\"unknown field \\\"bar\\\" ignored\"]");

	buf_puts(&out, "{\"status\":\"pending\"}");
	body_add_warnings(&out, &b);
	assert_string_equal(out.data, "{\"status\":\"pending\",\"warnings\":["
	                              "\"unknown field \\\"foo\\\" ignored\","
	                              "\"unknown field \\\"bar\\\" ignored\"]}");
	buf_free(&out);
	body_free(&b);
}

static void test_body_no_warnings_adds_nothing(void **state)
{
	buf_t out = BUF_INIT;
	body_t b;

	parse_ok("{\"model\":\"m\"}", &b);
	assert_int_equal(b.warnings.len, 0);
	buf_puts(&out, "{\"a\":1}");
	body_add_warnings(&out, &b);
	assert_string_equal(out.data, "{\"a\":1}");
	buf_free(&out);
	body_free(&b);
}

static void test_body_warning_key_escaping(void **state)
{
	body_t b;

	/* A quote in the key is escaped again for JSON. A control byte becomes \x01. */
	parse_ok("{\"a\\\"b\":1,\"c\\u0001\":2,\"caf\\u00e9\":3}", &b);
	assert_string_equal(b.warnings.data, "[\"unknown field \\\"a\\\"b\\\" ignored\","
	                                     "\"unknown field \\\"c\\\\x01\\\" ignored\","
	                                     "\"unknown field \\\"caf\xc3\xa9\\\" ignored\"]");
	body_free(&b);

	/* A NUL in an unknown key does not stop the warning. */
	parse_ok("{\"k\\u0000\":1}", &b);
	assert_string_equal(b.warnings.data, "[\"unknown field \\\"k\\\\x00\\\" ignored\"]");
	body_free(&b);
}

static void test_body_long_unknown_key(void **state)
{
	char text[128];
	body_t b;

	/* A 50-byte key is cut to 40 bytes and marked with "...". */
	snprintf(text, sizeof(text), "{\"%s\":1}",
	         "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWX");
	parse_ok(text, &b);
	assert_string_equal(b.warnings.data,
	                    "[\"unknown field \\\"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMN...\\\" "
	                    "ignored\"]");
	body_free(&b);
}

static void test_body_at_most_16_warnings(void **state)
{
	buf_t text = BUF_INIT;
	body_t b;

	buf_puts(&text, "{\"model\":\"m\"");
	for (int i = 0; i < 20; i++)
		buf_printf(&text, ",\"f%d\":%d", i, i);
	buf_puts(&text, ",\"priority\":3}");
	parse_ok(text.data, &b);

	assert_int_equal(count_of(b.warnings.data, "unknown field"), 16);
	assert_non_null(strstr(b.warnings.data, "\\\"f0\\\""));
	assert_non_null(strstr(b.warnings.data, "\\\"f15\\\""));
	assert_null(strstr(b.warnings.data, "\\\"f16\\\""));
	assert_int_equal(b.warnings.data[0], '[');
	assert_int_equal(b.warnings.data[b.warnings.len - 1], ']');
	/* Known fields after the 16th unknown one are still found. */
	assert_non_null(body_field(&b, "priority"));
	body_free(&b);
	buf_free(&text);
}

static void test_body_escaped_known_key(void **state)
{
	buf_t model = BUF_INIT;
	serve_config_t c = defaults();
	input_error_t err;
	body_t b;

	parse_ok("{\"\\u006dodel\":\"my-org/gen\"}", &b);
	assert_non_null(body_field(&b, "model"));
	assert_int_equal(b.warnings.len, 0);
	assert_int_equal(read_model(&c, &b, &model, &err), 0);
	assert_string_equal(model.data, "my-org/gen");
	body_free(&b);
	buf_free(&model);

	/* Case matters: "Model" is an unknown field. */
	parse_ok("{\"Model\":\"m\"}", &b);
	assert_null(body_field(&b, "model"));
	assert_string_equal(b.warnings.data, "[\"unknown field \\\"Model\\\" ignored\"]");
	body_free(&b);
}

/* ---- read_model ---- */

static void test_model_missing(void **state)
{
	serve_config_t c = defaults();
	buf_t model = BUF_INIT;
	input_error_t err;
	body_t b;

	parse_ok("{\"priority\":1}", &b);
	assert_int_equal(read_model(&c, &b, &model, &err), INFERQ_EINVAL);
	check_error(&err, "missing_field", "model", "\"model\" is required");
	body_free(&b);
	buf_free(&model);
}

/* A missing field's error names the first unknown field, the likely misspelling. */
static void test_missing_names_unknown(void **state)
{
	serve_config_t c = defaults();
	buf_t model = BUF_INIT;
	input_error_t err;
	body_t b;

	parse_ok("{\"modle\":\"m\",\"extra\":1}", &b);
	assert_int_equal(read_model(&c, &b, &model, &err), INFERQ_EINVAL);
	check_error(&err, "missing_field", "model", "\"model\" is required");
	assert_non_null(strstr(err.message, "unknown field \"modle\""));
	assert_null(strstr(err.message, "extra"));
	body_free(&b);

	parse_ok("{\"priority\":1}", &b);
	assert_int_equal(read_model(&c, &b, &model, &err), INFERQ_EINVAL);
	assert_null(strstr(err.message, "unknown field"));
	body_free(&b);
	buf_free(&model);
}

static void test_model_not_string(void **state)
{
	static const struct {
		const char *text;
		const char *expected;
	} cases[] = {
	    {"{\"model\":null}", "not null"},        {"{\"model\":true}", "not true"},
	    {"{\"model\":false}", "not false"},      {"{\"model\":7}", "not a number"},
	    {"{\"model\":[\"m\"]}", "not an array"}, {"{\"model\":{}}", "not an object"},
	};
	serve_config_t c = defaults();

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		buf_t model = BUF_INIT;
		input_error_t err;
		body_t b;

		parse_ok(cases[i].text, &b);
		assert_int_equal(read_model(&c, &b, &model, &err), INFERQ_EINVAL);
		check_error(&err, "invalid_field", "model", "model must be a string");
		check_error(&err, "invalid_field", "model", cases[i].expected);
		body_free(&b);
		buf_free(&model);
	}
}

static void test_model_empty(void **state)
{
	serve_config_t c = defaults();
	buf_t model = BUF_INIT;
	input_error_t err;
	body_t b;

	parse_ok("{\"model\":\"\"}", &b);
	assert_int_equal(read_model(&c, &b, &model, &err), INFERQ_EINVAL);
	check_error(&err, "invalid_field", "model", "model must not be empty");
	body_free(&b);
	buf_free(&model);
}

static void test_model_length_limit(void **state)
{
	serve_config_t c = defaults();
	buf_t model = BUF_INIT;
	input_error_t err;
	body_t b;

	c.max_model_length = 5;
	parse_ok("{\"model\":\"abcde\"}", &b);
	assert_int_equal(read_model(&c, &b, &model, &err), 0);
	assert_string_equal(model.data, "abcde");
	assert_int_equal(model.len, 5);
	body_free(&b);

	parse_ok("{\"model\":\"abcdef\"}", &b);
	assert_int_equal(read_model(&c, &b, &model, &err), INFERQ_EINVAL);
	check_error(&err, "invalid_field", "model", "model is 6 characters long; the limit is 5");
	check_error(&err, "invalid_field", "model", "--max-model-length");
	body_free(&b);

	/* Escapes count after decoding: "\u0061" is one character. */
	parse_ok("{\"model\":\"\\u0061bcde\"}", &b);
	assert_int_equal(read_model(&c, &b, &model, &err), 0);
	assert_string_equal(model.data, "abcde");
	body_free(&b);
	buf_free(&model);
}

static void test_model_default_length(void **state)
{
	serve_config_t c = defaults();
	char *at = model_body(128, 'm');
	char *over = model_body(129, 'm');
	buf_t model = BUF_INIT;
	input_error_t err;
	body_t b;

	assert_int_equal(c.max_model_length, 128);
	parse_ok(at, &b);
	assert_int_equal(read_model(&c, &b, &model, &err), 0);
	assert_int_equal(model.len, 128);
	body_free(&b);

	parse_ok(over, &b);
	assert_int_equal(read_model(&c, &b, &model, &err), INFERQ_EINVAL);
	check_error(&err, "invalid_field", "model", "129 characters long; the limit is 128");
	body_free(&b);
	buf_free(&model);
	free(at);
	free(over);
}

static void test_model_allowed_characters(void **state)
{
	static const char *const names[] = {
	    "ABCDEFGHIJKLMNOPQRSTUVWXYZ",
	    "abcdefghijklmnopqrstuvwxyz",
	    "0123456789",
	    ".",
	    "_",
	    ":",
	    "/",
	    "-",
	    "my-org/video_gen:v1.2",
	};
	serve_config_t c = defaults();

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		buf_t model = BUF_INIT;
		char text[128];
		input_error_t err;
		body_t b;

		snprintf(text, sizeof(text), "{\"model\":\"%s\"}", names[i]);
		parse_ok(text, &b);
		if (read_model(&c, &b, &model, &err) != 0)
			fail_msg("model %s rejected: %s", names[i], err.message);
		assert_string_equal(model.data, names[i]);
		body_free(&b);
		buf_free(&model);
	}
}

static void test_model_disallowed_characters(void **state)
{
	static const struct {
		const char *text;
		const char *expected; /* part of the message */
	} cases[] = {
	    {"{\"model\":\"my model\"}",
	     "\"my model\" has a character that is not allowed at byte 3"},
	    {"{\"model\":\"caf\xc3\xa9\"}", "at byte 4"},
	    {"{\"model\":\"caf\\u00e9\"}", "at byte 4"},
	    {"{\"model\":\"a@b\"}", "at byte 2"},
	    {"{\"model\":\"a+b\"}", "at byte 2"},
	    {"{\"model\":\"a\\\\b\"}", "at byte 2"},
	    {"{\"model\":\"a\\\"b\"}", "at byte 2"},
	    {"{\"model\":\"tab\\tx\"}", "\"tab\\x09x\""},
	    {"{\"model\":\"~\"}", "at byte 1"},
	};
	serve_config_t c = defaults();

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		buf_t model = BUF_INIT;
		input_error_t err;
		body_t b;

		parse_ok(cases[i].text, &b);
		assert_int_equal(read_model(&c, &b, &model, &err), INFERQ_EINVAL);
		check_error(&err, "invalid_field", "model", cases[i].expected);
		check_error(&err, "invalid_field", "model", "A-Z a-z 0-9 . _ : / -");
		body_free(&b);
		buf_free(&model);
	}
}

static void test_model_nul_escape(void **state)
{
	serve_config_t c = defaults();
	buf_t model = BUF_INIT;
	input_error_t err;
	body_t b;

	parse_ok("{\"model\":\"ab\\u0000cd\"}", &b);
	assert_int_equal(read_model(&c, &b, &model, &err), INFERQ_EINVAL);
	check_error(&err, "invalid_field", "model", "model contains a NUL character");
	body_free(&b);
	buf_free(&model);
}

/* ---- read_model_query ---- */

static int model_query(const serve_config_t *c, const char *query, buf_t *out, input_error_t *err)
{
	return read_model_query(c, query, strlen(query), out, err);
}

static void test_model_query_decoding(void **state)
{
	static const struct {
		const char *query;
		const char *model;
	} cases[] = {
	    {"model=gen", "gen"},
	    {"model=my-org%2Fvideo-gen", "my-org/video-gen"},
	    {"model=my-org%2fvideo-gen", "my-org/video-gen"},
	    {"limit=3&model=a.b&x=1", "a.b"},
	    {"mod%65l=enc", "enc"},
	    {"model=first&model=second", "first"},
	    {"&&model=m&&", "m"},
	};
	serve_config_t c = defaults();

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		buf_t model = BUF_INIT;
		input_error_t err;

		if (model_query(&c, cases[i].query, &model, &err) != 0)
			fail_msg("query %s rejected: %s", cases[i].query, err.message);
		assert_string_equal(model.data, cases[i].model);
		buf_free(&model);
	}
}

static void test_model_query_bounded_by_len(void **state)
{
	serve_config_t c = defaults();
	const char query[] = "model=abc&model=zzz";
	buf_t model = BUF_INIT;
	input_error_t err;

	/* Only the first len bytes are the query: "model=ab". */
	assert_int_equal(read_model_query(&c, query, 8, &model, &err), 0);
	assert_string_equal(model.data, "ab");
	buf_free(&model);
}

static void test_model_query_missing(void **state)
{
	static const char *const queries[] = {"", "limit=3", "Model=m", "models=m", "mode=m"};
	serve_config_t c = defaults();

	for (size_t i = 0; i < sizeof(queries) / sizeof(queries[0]); i++) {
		buf_t model = BUF_INIT;
		input_error_t err;

		assert_int_equal(model_query(&c, queries[i], &model, &err), INFERQ_EINVAL);
		check_error(&err, "missing_field", "model",
		            "query parameter \"model\" is required");
		buf_free(&model);
	}
}

static void test_model_query_malformed(void **state)
{
	static const char *const queries[] = {
	    "model=%zz", "model=abc%2", "model=abc%", "model=a%00b", "%zz=1&model=m",
	};
	serve_config_t c = defaults();

	for (size_t i = 0; i < sizeof(queries) / sizeof(queries[0]); i++) {
		buf_t model = BUF_INIT;
		input_error_t err;

		assert_int_equal(model_query(&c, queries[i], &model, &err), INFERQ_EINVAL);
		check_error(&err, "invalid_field", "model", "not valid percent-encoded");
		buf_free(&model);
	}
}

static void test_model_query_invalid_value(void **state)
{
	serve_config_t c = defaults();
	buf_t model = BUF_INIT;
	input_error_t err;

	assert_int_equal(model_query(&c, "model=", &model, &err), INFERQ_EINVAL);
	check_error(&err, "invalid_field", "model", "must not be empty");
	assert_int_equal(model_query(&c, "model", &model, &err), INFERQ_EINVAL);
	check_error(&err, "invalid_field", "model", "must not be empty");
	/* '+' decodes to a space, which a model name cannot contain. */
	assert_int_equal(model_query(&c, "model=a+b", &model, &err), INFERQ_EINVAL);
	check_error(&err, "invalid_field", "model", "\"a b\" has a character that is not allowed");
	assert_int_equal(model_query(&c, "model=a%C3%A9", &model, &err), INFERQ_EINVAL);
	check_error(&err, "invalid_field", "model", "at byte 2");
	buf_free(&model);
}

static void test_model_query_too_long(void **state)
{
	serve_config_t c = defaults();
	buf_t query = BUF_INIT;
	buf_t model = BUF_INIT;
	input_error_t err;

	/* 1024 decoded bytes is the longest query value. The model length limit applies after it.
	 */
	c.max_model_length = 1024;
	buf_puts(&query, "model=");
	for (int i = 0; i < 1024; i++)
		buf_putc(&query, 'a');
	assert_int_equal(read_model_query(&c, query.data, query.len, &model, &err), 0);
	assert_int_equal(model.len, 1024);

	buf_putc(&query, 'a');
	assert_int_equal(read_model_query(&c, query.data, query.len, &model, &err), INFERQ_EINVAL);
	check_error(&err, "invalid_field", "model", "longer than 1024 bytes");

	c.max_model_length = 128;
	query.len--;
	assert_int_equal(read_model_query(&c, query.data, query.len, &model, &err), INFERQ_EINVAL);
	check_error(&err, "invalid_field", "model",
	            "model is 1024 characters long; the limit is 128");
	buf_free(&query);
	buf_free(&model);
}

/* ---- read_id and read_id_query ---- */

static void test_id_valid(void **state)
{
	iq_id_t want, got;
	input_error_t err;
	char text[128];
	body_t b;

	assert_int_equal(id_parse(sample_id, strlen(sample_id), &want), 0);
	snprintf(text, sizeof(text), "{\"request_id\":\"%s\"}", sample_id);
	parse_ok(text, &b);
	memset(&got, 0, sizeof(got));
	assert_int_equal(read_id(&b, "request_id", &got, &err), 0);
	assert_true(id_equal(&got, &want));
	body_free(&b);

	/* Upper case is accepted and names the same id. */
	parse_ok("{\"request_id\":\"01938F6E-8A1C-7CC2-9B1E-3F0A5E0C2D11\"}", &b);
	memset(&got, 0, sizeof(got));
	assert_int_equal(read_id(&b, "request_id", &got, &err), 0);
	assert_true(id_equal(&got, &want));
	body_free(&b);

	/* Escapes in the value are decoded first: \u002d is '-'. */
	parse_ok("{\"request_id\":\"01938f6e\\u002d8a1c-7cc2-9b1e-3f0a5e0c2d11\"}", &b);
	memset(&got, 0, sizeof(got));
	assert_int_equal(read_id(&b, "request_id", &got, &err), 0);
	assert_true(id_equal(&got, &want));
	body_free(&b);
}

static void test_id_missing_and_type(void **state)
{
	static const struct {
		const char *text;
		const char *expected;
	} wrong_type[] = {
	    {"{\"request_id\":null}", "request_id must be a string, not null"},
	    {"{\"request_id\":123}", "request_id must be a string, not a number"},
	    {"{\"request_id\":{}}", "request_id must be a string, not an object"},
	    {"{\"request_id\":[]}", "request_id must be a string, not an array"},
	    {"{\"request_id\":true}", "request_id must be a string, not true"},
	};
	input_error_t err;
	iq_id_t id;
	body_t b;

	parse_ok("{\"model\":\"m\"}", &b);
	assert_int_equal(read_id(&b, "request_id", &id, &err), INFERQ_EINVAL);
	check_error(&err, "missing_field", "request_id", "\"request_id\" is required");
	body_free(&b);

	for (size_t i = 0; i < sizeof(wrong_type) / sizeof(wrong_type[0]); i++) {
		parse_ok(wrong_type[i].text, &b);
		assert_int_equal(read_id(&b, "request_id", &id, &err), INFERQ_EINVAL);
		check_error(&err, "invalid_field", "request_id", wrong_type[i].expected);
		body_free(&b);
	}
}

/* Malformed id texts, each valid as JSON string content. */
static const char *const bad_ids[] = {
    "",
    "01938f6e-8a1c-7cc2-9b1e-3f0a5e0c2d1",           /* 35 characters */
    "01938f6e-8a1c-7cc2-9b1e-3f0a5e0c2d111",         /* 37 characters */
    "01938f6e8a1c7cc29b1e3f0a5e0c2d11",              /* no hyphens */
    "01938f6e-8a1c-7cc29-b1e-3f0a5e0c2d11",          /* hyphen moved */
    "01938f6e8-a1c-7cc2-9b1e-3f0a5e0c2d11",          /* hyphen moved */
    "01938f6e-8a1c-7cc2-9b1e-3f0a5e0c2d1g",          /* not hexadecimal */
    "0193 f6e-8a1c-7cc2-9b1e-3f0a5e0c2d11",          /* space */
    "01938f6e_8a1c_7cc2_9b1e_3f0a5e0c2d11",          /* underscores */
    "{01938f6e-8a1c-7cc2-9b1e-3f0a5e0c2d1}",         /* braces, 37 characters */
    "urn:uuid:01938f6e-8a1c-7cc2-9b1e-3f0a5e0c2d11", /* URN form */
    "-01938f6e8a1c-7cc2-9b1e-3f0a5e0c2d11",          /* leading hyphen */
    "01938f6e-8a1c-7cc2-9b1e-+3f0a5e0c2d1",          /* sign inside */
};

static void test_id_malformed(void **state)
{
	for (size_t i = 0; i < sizeof(bad_ids) / sizeof(bad_ids[0]); i++) {
		input_error_t err;
		char text[160];
		iq_id_t id;
		body_t b;

		snprintf(text, sizeof(text), "{\"worker\":\"w\",\"request_id\":\"%s\"}",
		         bad_ids[i]);
		parse_ok(text, &b);
		assert_int_equal(read_id(&b, "request_id", &id, &err), INFERQ_EINVAL);
		check_error(&err, "invalid_field", "request_id", "is not a valid id");
		check_error(&err, "invalid_field", "request_id", "request_id \"");
		body_free(&b);
	}
}

static void test_id_query(void **state)
{
	iq_id_t want, got;
	input_error_t err;
	char query[160];

	assert_int_equal(id_parse(sample_id, strlen(sample_id), &want), 0);
	snprintf(query, sizeof(query), "x=1&request_id=%s", sample_id);
	assert_int_equal(read_id_query(query, strlen(query), "request_id", &got, &err), 0);
	assert_true(id_equal(&got, &want));

	/* Percent-encoded hyphens decode before the id is checked. */
	snprintf(query, sizeof(query), "request_id=01938f6e%%2D8a1c%%2d7cc2-9b1e-3f0a5e0c2d11");
	memset(&got, 0, sizeof(got));
	assert_int_equal(read_id_query(query, strlen(query), "request_id", &got, &err), 0);
	assert_true(id_equal(&got, &want));

	assert_int_equal(read_id_query("model=m", 7, "request_id", &got, &err), INFERQ_EINVAL);
	check_error(&err, "missing_field", "request_id", "\"request_id\" is required");

	assert_int_equal(read_id_query("request_id=%zz", 14, "request_id", &got, &err),
	                 INFERQ_EINVAL);
	check_error(&err, "invalid_field", "request_id", "not valid percent-encoded");

	assert_int_equal(read_id_query("claim_id=abc", 12, "claim_id", &got, &err), INFERQ_EINVAL);
	check_error(&err, "invalid_field", "claim_id", "claim_id \"abc\" is not a valid id");
}

static void test_id_query_malformed(void **state)
{
	for (size_t i = 0; i < sizeof(bad_ids) / sizeof(bad_ids[0]); i++) {
		input_error_t err;
		char query[160];
		iq_id_t id;

		snprintf(query, sizeof(query), "request_id=%s", bad_ids[i]);
		/* In a query the "+" of one shape decodes to a space, still not a valid id. */
		assert_int_equal(read_id_query(query, strlen(query), "request_id", &id, &err),
		                 INFERQ_EINVAL);
		check_error(&err, "invalid_field", "request_id", "request_id");
	}
}

static void test_id_query_too_long(void **state)
{
	buf_t query = BUF_INIT;
	input_error_t err;
	iq_id_t id;

	buf_puts(&query, "request_id=");
	for (int i = 0; i < 1025; i++)
		buf_putc(&query, '0');
	assert_int_equal(read_id_query(query.data, query.len, "request_id", &id, &err),
	                 INFERQ_EINVAL);
	check_error(&err, "invalid_field", "request_id", "longer than 1024 bytes");

	/* 1024 bytes pass the decoder and fail as an id, with a cut excerpt. */
	query.len--;
	assert_int_equal(read_id_query(query.data, query.len, "request_id", &id, &err),
	                 INFERQ_EINVAL);
	check_error(&err, "invalid_field", "request_id", "is not a valid id");
	check_error(&err, "invalid_field", "request_id", "0000...\"");
	buf_free(&query);
}

/* ---- read_object ---- */

static void test_object_reader(void **state)
{
	json_span_t v = {NULL, 0, JSON_TYPE_NULL};
	input_error_t err;
	int present = -1;
	body_t b;

	parse_ok("{\"payload\":{\"prompt\":\"hi\"},\"worker\":[]}", &b);
	assert_int_equal(read_object(&b, "payload", 1, &v, &present, &err), 0);
	assert_int_equal(present, 1);
	assert_int_equal(v.type, JSON_TYPE_OBJECT);
	assert_int_equal(v.len, strlen("{\"prompt\":\"hi\"}"));
	assert_memory_equal(v.start, "{\"prompt\":\"hi\"}", v.len);

	/* present may be NULL. */
	assert_int_equal(read_object(&b, "payload", 1, &v, NULL, &err), 0);

	assert_int_equal(read_object(&b, "worker", 0, &v, &present, &err), INFERQ_EINVAL);
	assert_int_equal(present, 1);
	check_error(&err, "invalid_field", "worker", "worker must be a JSON object, not an array");

	/* An absent optional object leaves out unchanged. */
	v.len = 99;
	assert_int_equal(read_object(&b, "info", 0, &v, &present, &err), 0);
	assert_int_equal(present, 0);
	assert_int_equal(v.len, 99);
	assert_int_equal(read_object(&b, "info", 0, &v, NULL, &err), 0);

	assert_int_equal(read_object(&b, "info", 1, &v, &present, &err), INFERQ_EINVAL);
	assert_int_equal(present, 0);
	check_error(&err, "missing_field", "info", "field \"info\" is required");
	body_free(&b);
}

static void test_object_wrong_types(void **state)
{
	static const char *const values[] = {"null", "1", "\"{}\"", "[{}]", "false"};

	for (size_t i = 0; i < sizeof(values) / sizeof(values[0]); i++) {
		json_span_t v;
		input_error_t err;
		char text[64];
		body_t b;

		snprintf(text, sizeof(text), "{\"payload\":%s}", values[i]);
		parse_ok(text, &b);
		assert_int_equal(read_object(&b, "payload", 1, &v, NULL, &err), INFERQ_EINVAL);
		check_error(&err, "invalid_field", "payload",
		            "payload must be a JSON object, not ");
		body_free(&b);
	}
}

/* ---- read_info ---- */

static void test_info_size_limit(void **state)
{
	const char info[] = "{\"trace\":\"abcdefgh\"}"; /* 20 bytes */
	serve_config_t c = defaults();
	input_error_t err;
	json_span_t v;
	int present = 0;
	char text[64];
	body_t b;

	assert_int_equal(c.max_info_bytes, 64u << 10);
	snprintf(text, sizeof(text), "{\"info\":%s}", info);
	parse_ok(text, &b);

	c.max_info_bytes = strlen(info);
	assert_int_equal(read_info(&c, &b, &v, &present, &err), 0);
	assert_int_equal(present, 1);
	assert_int_equal(v.len, strlen(info));
	assert_memory_equal(v.start, info, v.len);

	c.max_info_bytes = strlen(info) - 1;
	assert_int_equal(read_info(&c, &b, &v, &present, &err), INFERQ_ELIMIT);
	check_error(&err, "too_large", "info", "info is 20 bytes; the limit is 19 bytes");
	check_error(&err, "too_large", "info", "--max-info-bytes");
	body_free(&b);
}

static void test_info_absent_and_empty(void **state)
{
	serve_config_t c = defaults();
	input_error_t err;
	json_span_t v = {NULL, 0, JSON_TYPE_NULL};
	int present = 1;
	body_t b;

	parse_ok("{\"model\":\"m\"}", &b);
	assert_int_equal(read_info(&c, &b, &v, &present, &err), 0);
	assert_int_equal(present, 0);
	assert_null(v.start);
	body_free(&b);

	parse_ok("{\"info\":{}}", &b);
	c.max_info_bytes = 2;
	assert_int_equal(read_info(&c, &b, &v, &present, &err), 0);
	assert_int_equal(present, 1);
	assert_int_equal(v.len, 2);
	body_free(&b);
}

static void test_info_retry_history(void **state)
{
	static const char *const bodies[] = {
	    "{\"info\":{\"retry_history\":[]}}",
	    "{\"info\":{\"a\":1,\"retry_history\":null}}",
	    "{\"info\":{\"retry\\u005fhistory\":{}}}",
	};
	serve_config_t c = defaults();

	for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
		input_error_t err;
		json_span_t v;
		int present;
		body_t b;

		parse_ok(bodies[i], &b);
		assert_int_equal(read_info(&c, &b, &v, &present, &err), INFERQ_EINVAL);
		check_error(&err, "invalid_field", "info",
		            "info.retry_history is written by the server");
		body_free(&b);
	}
}

static void test_info_nested_retry_history(void **state)
{
	serve_config_t c = defaults();
	input_error_t err;
	json_span_t v;
	int present;
	body_t b;

	/* Only a top-level member is reserved. */
	parse_ok("{\"info\":{\"mine\":{\"retry_history\":[1]},\"retry_historyx\":1}}", &b);
	assert_int_equal(read_info(&c, &b, &v, &present, &err), 0);
	assert_int_equal(present, 1);
	body_free(&b);
}

static void test_info_not_object(void **state)
{
	static const char *const values[] = {"[]", "\"x\"", "null", "3"};
	serve_config_t c = defaults();

	for (size_t i = 0; i < sizeof(values) / sizeof(values[0]); i++) {
		input_error_t err;
		json_span_t v;
		int present = 0;
		char text[64];
		body_t b;

		snprintf(text, sizeof(text), "{\"info\":%s}", values[i]);
		parse_ok(text, &b);
		assert_int_equal(read_info(&c, &b, &v, &present, &err), INFERQ_EINVAL);
		assert_int_equal(present, 1);
		check_error(&err, "invalid_field", "info", "info must be a JSON object");
		body_free(&b);
	}
}

/* ---- read_int ---- */

struct int_case {
	const char *value; /* JSON text of "priority" */
	int ok;
	int64_t want;
};

static void check_int_cases(const struct int_case *cases, size_t n, int64_t min, int64_t max)
{
	for (size_t i = 0; i < n; i++) {
		input_error_t err;
		int64_t got = 12345;
		char text[128];
		body_t b;
		int rc;

		snprintf(text, sizeof(text), "{\"priority\":%s}", cases[i].value);
		parse_ok(text, &b);
		rc = read_int(&b, "priority", min, max, &got, &err);
		if (cases[i].ok) {
			if (rc != 0)
				fail_msg("priority %s rejected: %s", cases[i].value, err.message);
			assert_int_equal(got, cases[i].want);
		} else {
			if (rc != INFERQ_EINVAL)
				fail_msg("priority %s accepted as %lld", cases[i].value,
				         (long long)got);
			assert_int_equal(got, 12345);
			check_error(&err, "invalid_field", "priority",
			            "priority must be an integer");
			check_error(&err, "invalid_field", "priority", cases[i].value);
		}
		body_free(&b);
	}
}

static void test_int_int32_range(void **state)
{
	static const struct int_case cases[] = {
	    {"0", 1, 0},
	    {"-0", 1, 0},
	    {"5", 1, 5},
	    {"-17", 1, -17},
	    {"2147483647", 1, INT32_MAX},
	    {"-2147483648", 1, INT32_MIN},
	    {"2147483648", 0, 0},
	    {"-2147483649", 0, 0},
	    {"9223372036854775807", 0, 0},
	    {"9223372036854775808", 0, 0},
	    {"123456789012345678901234567890", 0, 0},
	    {"1.0", 0, 0},
	    {"1e2", 0, 0},
	    {"1E2", 0, 0},
	    {"-0.0", 0, 0},
	    {"0.5", 0, 0},
	    {"\"5\"", 0, 0},
	    {"true", 0, 0},
	    {"null", 0, 0},
	    {"[1]", 0, 0},
	};

	check_int_cases(cases, sizeof(cases) / sizeof(cases[0]), INT32_MIN, INT32_MAX);
}

static void test_int_int64_range(void **state)
{
	static const struct int_case cases[] = {
	    {"9223372036854775807", 1, INT64_MAX}, {"-9223372036854775808", 1, INT64_MIN},
	    {"9223372036854775808", 0, 0},         {"-9223372036854775809", 0, 0},
	    {"99999999999999999999", 0, 0},
	};

	check_int_cases(cases, sizeof(cases) / sizeof(cases[0]), INT64_MIN, INT64_MAX);
}

static void test_int_small_range(void **state)
{
	static const struct int_case cases[] = {
	    {"1", 1, 1}, {"10", 1, 10}, {"0", 0, 0}, {"11", 0, 0}, {"-1", 0, 0},
	};

	check_int_cases(cases, sizeof(cases) / sizeof(cases[0]), 1, 10);
}

static void test_int_absent_and_message(void **state)
{
	input_error_t err;
	int64_t got = 42;
	body_t b;

	parse_ok("{\"model\":\"m\"}", &b);
	assert_int_equal(read_int(&b, "priority", 0, 10, &got, &err), 0);
	assert_int_equal(got, 42);
	body_free(&b);

	parse_ok("{\"priority\":1e2}", &b);
	assert_int_equal(read_int(&b, "priority", -5, 5, &got, &err), INFERQ_EINVAL);
	check_error(&err, "invalid_field", "priority",
	            "priority must be an integer from -5 to 5; got 1e2");
	body_free(&b);
}

/* ---- read_seconds ---- */

struct seconds_case {
	const char *value; /* JSON text of "timeout" */
	int ok;
	double want;
};

static void test_seconds_values(void **state)
{
	static const struct seconds_case cases[] = {
	    {"0", 1, 0.0},         {"1", 1, 1.0},          {"1.5", 1, 1.5},  {"0.001", 1, 0.001},
	    {"86400", 1, 86400.0}, {"8.64e4", 1, 86400.0}, {"1E1", 1, 10.0}, {"-0", 1, 0.0},
	    {"1e-400", 1, 0.0},    {"-1", 0, 0},           {"-0.5", 0, 0},   {"86400.001", 0, 0},
	    {"1e5", 0, 0},         {"1e400", 0, 0},        {"-1e400", 0, 0}, {"\"5\"", 0, 0},
	    {"null", 0, 0},        {"{}", 0, 0},
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		input_error_t err;
		double got = -7.0;
		char text[128];
		body_t b;
		int rc;

		snprintf(text, sizeof(text), "{\"timeout\":%s}", cases[i].value);
		parse_ok(text, &b);
		rc = read_seconds(&b, "timeout", 0, 86400, &got, &err);
		if (cases[i].ok) {
			if (rc != 0)
				fail_msg("timeout %s rejected: %s", cases[i].value, err.message);
			assert_true(got == cases[i].want);
		} else {
			if (rc != INFERQ_EINVAL)
				fail_msg("timeout %s accepted as %g", cases[i].value, got);
			assert_true(got == -7.0);
			check_error(&err, "invalid_field", "timeout",
			            "timeout must be a number of seconds from 0 to 86400; got ");
			check_error(&err, "invalid_field", "timeout", cases[i].value);
		}
		body_free(&b);
	}
}

static void test_seconds_fraction_min(void **state)
{
	input_error_t err;
	double got = 0;
	body_t b;

	parse_ok("{\"timeout\":0.25}", &b);
	assert_int_equal(read_seconds(&b, "timeout", 0.5, 2, &got, &err), INFERQ_EINVAL);
	check_error(&err, "invalid_field", "timeout", "from 0.5 to 2; got 0.25");
	assert_int_equal(read_seconds(&b, "timeout", 0.25, 2, &got, &err), 0);
	assert_true(got == 0.25);
	body_free(&b);

	/* Absent: out unchanged. */
	parse_ok("{}", &b);
	got = 3.0;
	assert_int_equal(read_seconds(&b, "timeout", 0, 1, &got, &err), 0);
	assert_true(got == 3.0);
	body_free(&b);
}

/* ---- read_string ---- */

static void test_string_reader(void **state)
{
	buf_t out = BUF_INIT;
	input_error_t err;
	int present = -1;
	body_t b;

	parse_ok("{\"worker\":\"gpu-\\\"7\\\"\"}", &b);
	assert_int_equal(read_string(&b, "worker", 1, 64, &out, &present, &err), 0);
	assert_int_equal(present, 1);
	assert_string_equal(out.data, "gpu-\"7\"");
	assert_int_equal(read_string(&b, "worker", 1, 64, &out, NULL, &err), 0);
	assert_string_equal(out.data, "gpu-\"7\"");

	/* Optional and absent: 0, present is 0 and out is unchanged. */
	assert_int_equal(read_string(&b, "model", 0, 64, &out, &present, &err), 0);
	assert_int_equal(present, 0);
	assert_string_equal(out.data, "gpu-\"7\"");

	assert_int_equal(read_string(&b, "model", 1, 64, &out, &present, &err), INFERQ_EINVAL);
	assert_int_equal(present, 0);
	check_error(&err, "missing_field", "model", "field \"model\" is required");
	body_free(&b);
	buf_free(&out);
}

static void test_string_max_length(void **state)
{
	buf_t out = BUF_INIT;
	input_error_t err;
	body_t b;

	parse_ok("{\"worker\":\"abcd\"}", &b);
	assert_int_equal(read_string(&b, "worker", 1, 4, &out, NULL, &err), 0);
	assert_string_equal(out.data, "abcd");
	assert_int_equal(read_string(&b, "worker", 1, 3, &out, NULL, &err), INFERQ_ELIMIT);
	check_error(&err, "invalid_field", "worker",
	            "worker is 4 bytes long; the limit is 3 bytes");
	body_free(&b);

	/* The limit counts decoded UTF-8 bytes: "\u00e9" is 2 bytes, "\ud83d\ude00" is 4. */
	parse_ok("{\"worker\":\"\\u00e9\\ud83d\\ude00\"}", &b);
	assert_int_equal(read_string(&b, "worker", 1, 6, &out, NULL, &err), 0);
	assert_string_equal(out.data, "\xc3\xa9\xf0\x9f\x98\x80");
	assert_int_equal(read_string(&b, "worker", 1, 5, &out, NULL, &err), INFERQ_ELIMIT);
	check_error(&err, "invalid_field", "worker", "6 bytes long");
	body_free(&b);

	parse_ok("{\"worker\":\"\"}", &b);
	assert_int_equal(read_string(&b, "worker", 1, 0, &out, NULL, &err), 0);
	assert_int_equal(out.len, 0);
	body_free(&b);
	buf_free(&out);
}

static void test_string_rejects(void **state)
{
	buf_t out = BUF_INIT;
	input_error_t err;
	int present = 0;
	body_t b;

	parse_ok("{\"worker\":\"a\\u0000b\"}", &b);
	assert_int_equal(read_string(&b, "worker", 0, 64, &out, &present, &err), INFERQ_EINVAL);
	assert_int_equal(present, 1);
	check_error(&err, "invalid_field", "worker", "worker contains a NUL character");
	body_free(&b);

	parse_ok("{\"worker\":7}", &b);
	assert_int_equal(read_string(&b, "worker", 0, 64, &out, &present, &err), INFERQ_EINVAL);
	check_error(&err, "invalid_field", "worker", "worker must be a string, not a number");
	body_free(&b);

	parse_ok("{\"worker\":null}", &b);
	assert_int_equal(read_string(&b, "worker", 0, 64, &out, &present, &err), INFERQ_EINVAL);
	check_error(&err, "invalid_field", "worker", "worker must be a string, not null");
	body_free(&b);
	buf_free(&out);
}

/* ---- conflict_body ---- */

static void test_conflict_body(void **state)
{
	buf_t out = BUF_INIT;

	conflict_body(&out, "invalid_state", NULL, JOB_RUNNING, "job %s is %s; cancel it first",
	              "j\"1", "busy");
	assert_string_equal(out.data, "{\"code\":\"invalid_state\","
	                              "\"message\":\"job j\\\"1 is busy; cancel it first\","
	                              "\"type\":\"conflict_error\",\"status\":\"running\"}");
	buf_free(&out);

	conflict_body(&out, "already_done", NULL, JOB_CANCELED, "no change");
	assert_string_equal(out.data, "{\"code\":\"already_done\",\"message\":\"no change\","
	                              "\"type\":\"conflict_error\",\"status\":\"canceled\"}");
	buf_free(&out);

	conflict_body(&out, "claim_mismatch", "claim_id", JOB_PENDING, "stale");
	assert_string_equal(out.data, "{\"code\":\"claim_mismatch\",\"message\":\"stale\","
	                              "\"param\":\"claim_id\",\"type\":\"conflict_error\","
	                              "\"status\":\"pending\"}");
	buf_free(&out);
}

static void test_conflict_body_states(void **state)
{
	static const struct {
		job_state_t state;
		const char *name;
	} states[] = {
	    {JOB_PENDING, "\"status\":\"pending\"}"},   {JOB_RUNNING, "\"status\":\"running\"}"},
	    {JOB_DONE, "\"status\":\"done\"}"},         {JOB_FAILED, "\"status\":\"failed\"}"},
	    {JOB_CANCELED, "\"status\":\"canceled\"}"},
	};

	for (size_t i = 0; i < sizeof(states) / sizeof(states[0]); i++) {
		buf_t out = BUF_INIT;
		size_t tail = strlen(states[i].name);

		conflict_body(&out, "c", NULL, states[i].state, "m");
		assert_true(out.len > tail);
		assert_string_equal(out.data + out.len - tail, states[i].name);
		buf_free(&out);
	}
}

/* ---- excerpt ---- */

static void test_excerpt_short(void **state)
{
	char out[64];

	assert_string_equal(excerpt("hello", 5, out, sizeof(out)), "hello");
	assert_string_equal(excerpt("", 0, out, sizeof(out)), "");
	/* Only len bytes are read, and a NUL inside them is shown. */
	assert_string_equal(excerpt("ab\0cd", 5, out, sizeof(out)), "ab\\x00cd");
	assert_string_equal(excerpt("a\tb\x7f\x1f", 5, out, sizeof(out)), "a\\x09b\\x7f\\x1f");
	/* Bytes above 0x7f are copied unchanged. */
	assert_string_equal(excerpt("\xc3\xa9", 2, out, sizeof(out)), "\xc3\xa9");
}

static void test_excerpt_truncates_at_40(void **state)
{
	const char text[] = "0123456789012345678901234567890123456789ABC";
	char out[64];

	assert_string_equal(excerpt(text, 40, out, sizeof(out)),
	                    "0123456789012345678901234567890123456789");
	assert_string_equal(excerpt(text, 41, out, sizeof(out)),
	                    "0123456789012345678901234567890123456789...");
	assert_string_equal(excerpt(text, strlen(text), out, sizeof(out)),
	                    "0123456789012345678901234567890123456789...");
}

static void test_excerpt_small_buffer(void **state)
{
	char out[8];

	assert_string_equal(excerpt("abcdefghij", 10, out, sizeof(out)), "abc...");
	assert_string_equal(excerpt("abc", 3, out, sizeof(out)), "abc");
}

static void test_excerpt_control_bytes_fit(void **state)
{
	char text[40];
	char out[64];
	size_t n;

	/*
	 * 40 control bytes would need 160 output bytes: the excerpt stops at a
	 * whole escape that fits. NOTE: it then has no room left for "...", so
	 * such an excerpt is cut without the marker that printable text gets.
	 */
	memset(text, 0x01, sizeof(text));
	excerpt(text, sizeof(text), out, sizeof(out));
	n = strlen(out);
	assert_true(n > 0);
	assert_true(n < sizeof(out));
	for (size_t i = 0; i + 4 <= n; i += 4)
		assert_memory_equal(out + i, "\\x01", 4);
	assert_true(n % 4 == 0 || strcmp(out + n - 3, "...") == 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_body_object_inside_array),
	    cmocka_unit_test(test_body_empty),
	    cmocka_unit_test(test_body_invalid_json_offset),
	    cmocka_unit_test(test_body_non_object_roots),
	    cmocka_unit_test(test_body_whitespace_object),
	    cmocka_unit_test(test_body_depth_limit),
	    cmocka_unit_test(test_body_depth_custom),
	    cmocka_unit_test(test_body_known_fields),
	    cmocka_unit_test(test_body_duplicate_field),
	    cmocka_unit_test(test_body_unknown_warnings),
	    cmocka_unit_test(test_body_no_warnings_adds_nothing),
	    cmocka_unit_test(test_body_warning_key_escaping),
	    cmocka_unit_test(test_body_long_unknown_key),
	    cmocka_unit_test(test_body_at_most_16_warnings),
	    cmocka_unit_test(test_body_escaped_known_key),
	    cmocka_unit_test(test_model_missing),
	    cmocka_unit_test(test_missing_names_unknown),
	    cmocka_unit_test(test_model_not_string),
	    cmocka_unit_test(test_model_empty),
	    cmocka_unit_test(test_model_length_limit),
	    cmocka_unit_test(test_model_default_length),
	    cmocka_unit_test(test_model_allowed_characters),
	    cmocka_unit_test(test_model_disallowed_characters),
	    cmocka_unit_test(test_model_nul_escape),
	    cmocka_unit_test(test_model_query_decoding),
	    cmocka_unit_test(test_model_query_bounded_by_len),
	    cmocka_unit_test(test_model_query_missing),
	    cmocka_unit_test(test_model_query_malformed),
	    cmocka_unit_test(test_model_query_invalid_value),
	    cmocka_unit_test(test_model_query_too_long),
	    cmocka_unit_test(test_id_valid),
	    cmocka_unit_test(test_id_missing_and_type),
	    cmocka_unit_test(test_id_malformed),
	    cmocka_unit_test(test_id_query),
	    cmocka_unit_test(test_id_query_malformed),
	    cmocka_unit_test(test_id_query_too_long),
	    cmocka_unit_test(test_object_reader),
	    cmocka_unit_test(test_object_wrong_types),
	    cmocka_unit_test(test_info_size_limit),
	    cmocka_unit_test(test_info_absent_and_empty),
	    cmocka_unit_test(test_info_retry_history),
	    cmocka_unit_test(test_info_nested_retry_history),
	    cmocka_unit_test(test_info_not_object),
	    cmocka_unit_test(test_int_int32_range),
	    cmocka_unit_test(test_int_int64_range),
	    cmocka_unit_test(test_int_small_range),
	    cmocka_unit_test(test_int_absent_and_message),
	    cmocka_unit_test(test_seconds_values),
	    cmocka_unit_test(test_seconds_fraction_min),
	    cmocka_unit_test(test_string_reader),
	    cmocka_unit_test(test_string_max_length),
	    cmocka_unit_test(test_string_rejects),
	    cmocka_unit_test(test_conflict_body),
	    cmocka_unit_test(test_conflict_body_states),
	    cmocka_unit_test(test_excerpt_short),
	    cmocka_unit_test(test_excerpt_truncates_at_40),
	    cmocka_unit_test(test_excerpt_small_buffer),
	    cmocka_unit_test(test_excerpt_control_bytes_fit),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
