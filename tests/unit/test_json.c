/*
 * Unit tests for the strict JSON scanner, the span iterators, the escaping
 * writer and RFC 7386 merge patch (json.h). jansson 2.14 is the reference
 * parser, and the scanner must agree with it on every input except where
 * jansson is stricter by design. Those are exactly three cases: integers
 * outside int64_t, numbers that overflow a double (1e400), and NUL bytes
 * in object keys ("\u0000" in a key). Every loop has a fixed seed and count.
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

/*
 * jansson's type constants and error type are renamed JANSSON_* and
 * jansson_* while jansson.h is included, so the reference side of each
 * comparison reads apart from json.h's JSON_TYPE_* names.
 */
#define json_error_t     jansson_error_t
#define json_object_get  jansson_object_get
#define json_object_iter jansson_object_iter
#define JSON_OBJECT      JANSSON_OBJECT
#define JSON_ARRAY       JANSSON_ARRAY
#define JSON_STRING      JANSSON_STRING
#define JSON_TRUE        JANSSON_TRUE
#define JSON_FALSE       JANSSON_FALSE
#define JSON_NULL        JANSSON_NULL
#include <jansson.h>
#undef json_error_t
#undef json_object_get
#undef json_object_iter
#undef JSON_OBJECT
#undef JSON_ARRAY
#undef JSON_STRING
#undef JSON_TRUE
#undef JSON_FALSE
#undef JSON_NULL
#undef json_is_object
#undef json_is_array
#undef json_is_string
#undef json_is_true
#undef json_is_false
#undef json_is_null
#undef json_is_boolean
#undef json_object_foreach
#undef json_object_foreach_safe
#undef json_object_keylen_foreach
#undef json_object_keylen_foreach_safe

#define jansson_is_object(j) ((j) && json_typeof(j) == JANSSON_OBJECT)
#define jansson_is_null(j)   ((j) && json_typeof(j) == JANSSON_NULL)

#include "buf.h"
#include "inferq_error.h"
#include "json.h"

#define TEXT(s) s, sizeof(s) - 1

/* ---- helpers ---- */

/* Formats bytes for a failure message: printable ASCII as is, the rest as \xNN. */
static const char *show(const char *p, size_t len)
{
	static char out[2048];
	size_t o = 0;

	for (size_t i = 0; i < len && o + 8 < sizeof(out); i++) {
		unsigned char c = (unsigned char)p[i];

		if (c >= 0x20 && c < 0x7f && c != '\\')
			out[o++] = (char)c;
		else
			o += (size_t)snprintf(out + o, sizeof(out) - o, "\\x%02x", c);
	}
	out[o] = '\0';
	return out;
}

static uint64_t rng_state;

static void rng_seed(uint64_t seed)
{
	rng_state = seed;
}

/* xorshift64*: small, deterministic, good enough to pick mutations. */
static uint32_t rng_next(void)
{
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return (uint32_t)((rng_state * 0x2545F4914F6CDD1DULL) >> 32);
}

static uint32_t rng_below(uint32_t n)
{
	return rng_next() % n;
}

/* Checks that a rejection message is printable ASCII and names err->offset. */
static void check_error_report(const json_scan_error_t *err, size_t len, const char *doc)
{
	char where[48];

	if (err->message[0] == '\0')
		fail_msg("empty error message for %s", show(doc, len));
	for (const char *c = err->message; *c; c++) {
		if (*c < 0x20 || *c > 0x7e)
			fail_msg("non-printable byte 0x%02x in message \"%s\"", (unsigned char)*c,
			         show(err->message, strlen(err->message)));
	}
	if (err->offset > len)
		fail_msg("offset %zu beyond length %zu for %s", err->offset, len, show(doc, len));
	snprintf(where, sizeof(where), "at offset %zu", err->offset);
	if (!strstr(err->message, where))
		fail_msg("message \"%s\" does not name offset %zu", err->message, err->offset);
}

/*
 * Builds the jansson value of a span using only the json.h iterators and
 * decoders, so it can be compared with jansson's own parse. Sets *beyond
 * when the document contains something jansson rejects by design.
 */
static json_t *span_to_jansson(json_span_t v, int *beyond)
{
	json_iter_t it;
	buf_t text = BUF_INIT;
	json_t *out = NULL;

	switch (v.type) {
	case JSON_TYPE_NULL: return json_null();
	case JSON_TYPE_TRUE: return json_true();
	case JSON_TYPE_FALSE: return json_false();
	case JSON_TYPE_STRING:
		json_string_decode(v, &text);
		out = json_stringn(text.data ? text.data : "", text.len);
		break;
	case JSON_TYPE_NUMBER: {
		int64_t i;
		double d;
		int rc = json_int64(v, &i);

		if (rc == 0)
			return json_integer(i);
		if (rc == INFERQ_ERANGE || json_double(v, &d) != 0) {
			*beyond = 1;
			return json_null();
		}
		return json_real(d);
	}
	case JSON_TYPE_ARRAY: {
		json_span_t e;

		out = json_array();
		json_array_begin(&it, v);
		while (json_array_next(&it, &e))
			json_array_append_new(out, span_to_jansson(e, beyond));
		break;
	}
	case JSON_TYPE_OBJECT: {
		json_member_t m;

		out = json_object();
		json_object_begin(&it, v);
		while (json_object_next(&it, &m)) {
			buf_reset(&text);
			if (json_string_decode(m.key, &text) != 0) {
				*beyond = 1;
				continue;
			}
			json_object_setn_new(out, text.data ? text.data : "", text.len,
			                     span_to_jansson(m.value, beyond));
		}
		break;
	}
	}
	buf_free(&text);
	return out;
}

typedef struct {
	int accepted;
	int rejected;
	int beyond_jansson;
} diff_stats_t;

/* Runs one document through json_validate and jansson and fails on any disagreement. */
static void check_against_jansson(const char *doc, size_t len, diff_stats_t *stats)
{
	jansson_error_t jerr;
	json_scan_error_t err;
	json_span_t root;
	json_t *ref = json_loadb(doc, len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
	int rc = json_validate(doc, len, 1000, &root, &err);

	if (rc != 0) {
		if (ref)
			fail_msg("json_validate rejects what jansson accepts: %s (%s)",
			         show(doc, len), err.message);
		check_error_report(&err, len, doc);
		stats->rejected++;
		return;
	}

	int beyond = 0;
	json_t *ours = span_to_jansson(root, &beyond);

	if (beyond) {
		if (ref)
			fail_msg("jansson accepts a document marked beyond it: %s", show(doc, len));
		stats->beyond_jansson++;
	} else if (!ref) {
		fail_msg("json_validate accepts what jansson rejects: %s (jansson: %s)",
		         show(doc, len), jerr.text);
	} else if (!json_equal(ours, ref)) {
		fail_msg("decoded values differ from jansson for %s", show(doc, len));
	}
	stats->accepted++;
	json_decref(ours);
	json_decref(ref);
}

/* ---- json_validate: tables ---- */

typedef struct {
	const char *text;
	size_t len;
	json_type_t type;
} valid_case_t;

/* clang-format off */
#define VALID(s, t) {s, sizeof(s) - 1, t}

static const valid_case_t valid_cases[] = {
	VALID("null", JSON_TYPE_NULL),
	VALID("true", JSON_TYPE_TRUE),
	VALID("false", JSON_TYPE_FALSE),
	VALID("0", JSON_TYPE_NUMBER),
	VALID("-0", JSON_TYPE_NUMBER),
	VALID("-0.0", JSON_TYPE_NUMBER),
	VALID("1", JSON_TYPE_NUMBER),
	VALID("-1", JSON_TYPE_NUMBER),
	VALID("0.5", JSON_TYPE_NUMBER),
	VALID("0.5e-10", JSON_TYPE_NUMBER),
	VALID("1e400", JSON_TYPE_NUMBER),
	VALID("-1e400", JSON_TYPE_NUMBER),
	VALID("1e-400", JSON_TYPE_NUMBER),
	VALID("1E+2", JSON_TYPE_NUMBER),
	VALID("1e-2", JSON_TYPE_NUMBER),
	VALID("0e0", JSON_TYPE_NUMBER),
	VALID("0E-0", JSON_TYPE_NUMBER),
	VALID("10", JSON_TYPE_NUMBER),
	VALID("123456789012345678901234567890", JSON_TYPE_NUMBER),
	VALID("-123456789012345678901234567890.123456789e-456", JSON_TYPE_NUMBER),
	VALID("9223372036854775807", JSON_TYPE_NUMBER),
	VALID("-9223372036854775808", JSON_TYPE_NUMBER),
	VALID("\"\"", JSON_TYPE_STRING),
	VALID("\"abc\"", JSON_TYPE_STRING),
	VALID("\"\\u0000\"", JSON_TYPE_STRING),
	VALID("\"a\\u0000b\"", JSON_TYPE_STRING),
	VALID("\"\\\"\\\\\\/\\b\\f\\n\\r\\t\"", JSON_TYPE_STRING),
	VALID("\"\\ud834\\udd1e\"", JSON_TYPE_STRING),
	VALID("\"\\uD834\\uDD1E\"", JSON_TYPE_STRING),
	VALID("\"\\udbff\\udfff\"", JSON_TYPE_STRING),
	VALID("\"\\u00e9\\uFFFF\\ufffe\"", JSON_TYPE_STRING),
	VALID("\"\x7f\"", JSON_TYPE_STRING),
	VALID("\"\xc3\xa9\"", JSON_TYPE_STRING),
	VALID("\"\xf0\x9f\x98\x80\"", JSON_TYPE_STRING),
	VALID("\"/\"", JSON_TYPE_STRING),
	VALID("\"'\"", JSON_TYPE_STRING),
	VALID("[]", JSON_TYPE_ARRAY),
	VALID("[ ]", JSON_TYPE_ARRAY),
	VALID("{}", JSON_TYPE_OBJECT),
	VALID("{ }", JSON_TYPE_OBJECT),
	VALID(" \t\r\n[1]\n", JSON_TYPE_ARRAY),
	VALID("[1,2,3]", JSON_TYPE_ARRAY),
	VALID("[[],[[]],{}]", JSON_TYPE_ARRAY),
	VALID("{\"a\":1}", JSON_TYPE_OBJECT),
	VALID("{\"a\":{\"b\":[true,false,null]}}", JSON_TYPE_OBJECT),
	VALID("{\"\":0}", JSON_TYPE_OBJECT),
	VALID("{\"a\":1,\"a\":2}", JSON_TYPE_OBJECT),
	VALID("{\"a\\u0000\":1}", JSON_TYPE_OBJECT),
	VALID("[\"\\u0000\"]", JSON_TYPE_ARRAY),
	VALID("{ \"a\" : [ 1 , 2 ] , \"b\" : { } }", JSON_TYPE_OBJECT),
	VALID("[1e400,123456789012345678901234567890]", JSON_TYPE_ARRAY),
	VALID("{\"}\":\"]\",\"\\\"\":\"\\\\\"}", JSON_TYPE_OBJECT),
	VALID("[-0,0.0,1.5E-3,2e+8]", JSON_TYPE_ARRAY),
};
/* clang-format on */

static void test_validate_accepts_valid(void **state)
{
	for (size_t i = 0; i < sizeof(valid_cases) / sizeof(valid_cases[0]); i++) {
		const valid_case_t *c = &valid_cases[i];
		json_span_t root;
		json_scan_error_t err;
		int rc = json_validate(c->text, c->len, 64, &root, &err);

		if (rc != 0)
			fail_msg("rejected %s: %s", show(c->text, c->len), err.message);
		if (root.type != c->type)
			fail_msg("type %d, expected %d for %s", root.type, c->type,
			         show(c->text, c->len));
	}
}

typedef struct {
	const char *text;
	size_t len;
	size_t offset;
	const char *message; /* a substring of the expected message */
} invalid_case_t;

/* clang-format off */
#define INVALID(s, off, msg) {s, sizeof(s) - 1, off, msg}

static const invalid_case_t invalid_cases[] = {
	/* Empty input and whitespace. */
	INVALID("", 0, "unexpected end of input at offset 0: expected a JSON value"),
	INVALID("   ", 3, "unexpected end of input at offset 3: expected a JSON value"),
	INVALID("\f1", 0, "unexpected byte 0x0c at offset 0"),
	INVALID("\v1", 0, "unexpected byte 0x0b at offset 0"),
	INVALID("\xc2\xa0 1", 0, "unexpected byte 0xc2 at offset 0"),
	INVALID("\xef\xbb\xbf{}", 0, "byte order mark"),
	INVALID("\0", 0, "unexpected byte 0x00 at offset 0"),
	INVALID("[1]\0", 3, "unexpected byte 0x00 at offset 3"),

	/* Numbers. */
	INVALID("01", 0, "invalid number at offset 0: a leading zero must not be followed"),
	INVALID("-01", 1, "leading zero"),
	INVALID("00", 0, "leading zero"),
	INVALID("[01]", 1, "leading zero"),
	INVALID("+1", 0, "unexpected character '+' at offset 0: expected a JSON value"),
	INVALID(".5", 0, "unexpected character '.' at offset 0"),
	INVALID("-.5", 1, "expected a digit after '-', found character '.'"),
	INVALID("1.", 2, "expected a digit after the decimal point, found the end of input"),
	INVALID("1.e5", 2, "expected a digit after the decimal point, found character 'e'"),
	INVALID("1e", 2, "expected a digit in the exponent, found the end of input"),
	INVALID("1e+", 3, "expected a digit in the exponent"),
	INVALID("1.5e", 4, "exponent"),
	INVALID("-", 1, "invalid number at offset 1: expected a digit after '-'"),
	INVALID("- 1", 1, "expected a digit after '-', found byte 0x20"),
	INVALID("--1", 1, "expected a digit after '-'"),
	INVALID("[-]", 2, "expected a digit after '-'"),
	INVALID("1e1.5", 3, "unexpected character '.' at offset 3"),
	INVALID("1.5.5", 3, "after the JSON value"),
	INVALID("0x10", 1, "unexpected character 'x' at offset 1"),
	INVALID("1_000", 1, "unexpected character '_'"),
	INVALID("NaN", 0, "unexpected character 'N' at offset 0: expected a JSON value"),
	INVALID("Infinity", 0, "unexpected character 'I'"),
	INVALID("-Infinity", 1, "expected a digit after '-'"),
	INVALID("[NaN]", 1, "unexpected character 'N' at offset 1"),

	/* Literals. */
	INVALID("tru", 0, "invalid literal at offset 0: expected true"),
	INVALID("True", 0, "unexpected character 'T'"),
	INVALID("nul", 0, "expected null"),
	INVALID("nan", 0, "expected null"),
	INVALID("fals", 0, "expected false"),
	INVALID("falsee", 5, "unexpected character 'e' at offset 5: expected the end of input"),
	INVALID("nulll", 4, "after the JSON value"),
	INVALID("1 2", 2, "unexpected character '2' at offset 2"),
	INVALID("'a'", 0, "unexpected byte 0x27 at offset 0"),
	INVALID("/* c */ 1", 0, "unexpected character '/'"),

	/* Arrays and objects. */
	INVALID("[1,]", 3, "unexpected character ']' at offset 3: expected a JSON value"),
	INVALID("[,1]", 1, "unexpected character ','"),
	INVALID("[1 2]", 3, "expected ',' or ']' after an array element"),
	INVALID("{\"a\":1,}", 7, "expected a string as the member name"),
	INVALID("{,}", 1, "expected a string as the member name"),
	INVALID("{\"a\"}", 4, "expected ':' after the member name"),
	INVALID("{\"a\" 1}", 5, "expected ':'"),
	INVALID("{a:1}", 1, "unexpected character 'a' at offset 1"),
	INVALID("{'a':1}", 1, "unexpected byte 0x27"),
	INVALID("{\"a\":}", 5, "unexpected character '}' at offset 5: expected a JSON value"),
	INVALID("{1:2}", 1, "member name"),
	INVALID("{\"a\":1 \"b\":2}", 7, "expected ',' or '}' after an object member"),
	INVALID("[", 1, "unexpected end of input at offset 1: array not closed"),
	INVALID("{", 1, "unexpected end of input at offset 1: object not closed"),
	INVALID("{\"a\":1", 6, "unexpected end of input at offset 6: object not closed"),
	INVALID("{\"a\":", 5, "object not closed"),
	INVALID("{\"a\"", 4, "object not closed"),
	INVALID("[1,2", 4, "array not closed"),
	INVALID("[[1],", 5, "array not closed"),
	INVALID("]", 0, "unexpected character ']'"),
	INVALID("[}", 1, "unexpected character '}'"),
	INVALID("{]", 1, "unexpected character ']'"),
	INVALID("[1}", 2, "expected ',' or ']'"),
	INVALID("{\"a\":1]", 6, "expected ',' or '}'"),
	INVALID("[1]]", 3, "after the JSON value"),
	INVALID("{\"a\":1}}", 7, "after the JSON value"),
	INVALID("[{\"a\":[1}]]", 8, "expected ',' or ']'"),

	/* Strings and escapes. */
	INVALID("\"abc", 4, "unexpected end of input at offset 4: string starting at offset 0"),
	INVALID("[\"abc", 5, "string starting at offset 1 not closed"),
	INVALID("\"\\", 2, "not closed"),
	INVALID("\"\\x\"", 1, "invalid escape sequence at offset 1: character 'x' after '\\'"),
	INVALID("\"\\U0041\"", 1, "invalid escape sequence"),
	INVALID("\"\\'\"", 1, "byte 0x27 after"),
	INVALID("\"\\0\"", 1, "invalid escape sequence"),
	INVALID("\"\\u12\"", 5,
		"invalid \\u escape at offset 5: expected 4 hex digits, found byte 0x22"),
	INVALID("\"\\u12G4\"", 5, "found character 'G'"),
	INVALID("\"\\u12", 5, "not closed"),
	INVALID("\"\\u0000", 7, "string starting at offset 0 not closed"),
	INVALID("\"\\ud800\"", 1, "lone surrogate escape \\ud800 at offset 1"),
	INVALID("\"\\uDBFF\"", 1, "lone surrogate escape \\uDBFF"),
	INVALID("\"\\udc00\"", 1, "lone surrogate escape \\udc00 at offset 1: a low surrogate"),
	INVALID("\"\\udfff\"", 1, "lone surrogate"),
	INVALID("\"a\\ud800\\u0041\"", 2, "lone surrogate escape \\ud800 at offset 2"),
	INVALID("\"\\ud800\\ud800\"", 1, "lone surrogate"),
	INVALID("\"\\udbff\\ue000\"", 1, "lone surrogate"),
	INVALID("\"\\ud800x\"", 1, "lone surrogate"),
	INVALID("\"\\ud800\\n\"", 1, "lone surrogate"),
	INVALID("\"\\ud800\\u12\"", 1, "lone surrogate"),
	INVALID("\"\\udc00\\ud800\"", 1, "lone surrogate escape \\udc00"),
	INVALID("\"a\x01\"", 2, "unescaped control character 0x01 at offset 2"),
	INVALID("\"\n\"", 1, "unescaped control character 0x0a at offset 1"),
	INVALID("\"\t\"", 1, "such as \\u0009"),
	INVALID("\"\x1f\"", 1, "0x1f"),
	INVALID("\"\0\"", 1, "unescaped control character 0x00 at offset 1"),
	INVALID("{\"k\":\"abcdef\xff\"}", 12, "invalid UTF-8 byte 0xff at offset 12"),
};
/* clang-format on */

static void test_validate_rejects_invalid(void **state)
{
	for (size_t i = 0; i < sizeof(invalid_cases) / sizeof(invalid_cases[0]); i++) {
		const invalid_case_t *c = &invalid_cases[i];
		json_span_t root;
		json_scan_error_t err;
		int rc = json_validate(c->text, c->len, 64, &root, &err);

		if (rc != INFERQ_EINVAL)
			fail_msg("returned %d for %s", rc, show(c->text, c->len));
		if (err.offset != c->offset)
			fail_msg("offset %zu, expected %zu for %s (%s)", err.offset, c->offset,
			         show(c->text, c->len), err.message);
		if (!strstr(err.message, c->message))
			fail_msg("message \"%s\" lacks \"%s\" for %s", err.message, c->message,
			         show(c->text, c->len));
		assert_int_equal(err.too_deep, 0);
		check_error_report(&err, c->len, c->text);
	}
}

static void test_validate_exact_messages(void **state)
{
	json_span_t root;
	json_scan_error_t err;

	assert_int_equal(json_validate(TEXT("{\"k\":\"abcdef\xff\"}"), 64, &root, &err),
	                 INFERQ_EINVAL);
	assert_string_equal(err.message,
	                    "invalid UTF-8 byte 0xff at offset 12: byte never used in UTF-8");

	assert_int_equal(json_validate(TEXT("{\"a\":1"), 64, &root, &err), INFERQ_EINVAL);
	assert_string_equal(err.message, "unexpected end of input at offset 6: object not closed");

	assert_int_equal(json_validate(TEXT("\"\xe0\x80\x80\""), 64, &root, &err), INFERQ_EINVAL);
	assert_string_equal(err.message,
	                    "invalid UTF-8 sequence 0xe0 0x80 at offset 1: overlong encoding");

	assert_int_equal(json_validate(TEXT("\"\xe2\x82"), 64, &root, &err), INFERQ_EINVAL);
	assert_string_equal(err.message, "invalid UTF-8 sequence 0xe2 0x82 at offset 1: sequence "
	                                 "truncated by the end of input");

	assert_int_equal(json_validate(TEXT("[1,]"), 64, &root, &err), INFERQ_EINVAL);
	assert_string_equal(err.message,
	                    "unexpected character ']' at offset 3: expected a JSON value");
}

/* A NULL error pointer is allowed when the caller only needs the verdict. */
static void test_validate_without_error_report(void **state)
{
	json_span_t root;

	assert_int_equal(json_validate(TEXT("[1,"), 64, &root, NULL), INFERQ_EINVAL);
	assert_int_equal(json_validate(TEXT("[[1]]"), 1, &root, NULL), INFERQ_ELIMIT);
	assert_int_equal(json_validate(NULL, 0, 64, &root, NULL), INFERQ_EINVAL);
	assert_int_equal(json_validate(TEXT("[1]"), 64, &root, NULL), 0);
}

static void test_validate_root_span(void **state)
{
	const char obj[] = "  {\"a\" : 1}  \n";
	const char num[] = " 12 ";
	json_span_t root;
	json_scan_error_t err;

	assert_int_equal(json_validate(obj, sizeof(obj) - 1, 64, &root, &err), 0);
	assert_ptr_equal(root.start, obj + 2);
	assert_int_equal(root.len, 9);
	assert_int_equal(root.type, JSON_TYPE_OBJECT);

	assert_int_equal(json_validate(num, sizeof(num) - 1, 64, &root, &err), 0);
	assert_ptr_equal(root.start, num + 1);
	assert_int_equal(root.len, 2);
	assert_int_equal(root.type, JSON_TYPE_NUMBER);
}

/* ---- json_validate: UTF-8 ---- */

typedef struct {
	const char *bytes; /* placed between quotes */
	size_t len;
	int valid;
	const char *message; /* for invalid cases, a substring of the message */
} utf8_case_t;

/* clang-format off */
#define UTF8_OK(s)        {s, sizeof(s) - 1, 1, NULL}
#define UTF8_BAD(s, msg) {s, sizeof(s) - 1, 0, msg}

static const utf8_case_t utf8_cases[] = {
	UTF8_OK("\xc2\x80"),         /* U+0080, smallest 2-byte */
	UTF8_OK("\xdf\xbf"),         /* U+07FF */
	UTF8_OK("\xe0\xa0\x80"),     /* U+0800, smallest 3-byte */
	UTF8_OK("\xed\x9f\xbf"),     /* U+D7FF, just below the surrogates */
	UTF8_OK("\xee\x80\x80"),     /* U+E000, just above the surrogates */
	UTF8_OK("\xef\xbf\xbe"),     /* U+FFFE */
	UTF8_OK("\xef\xbf\xbf"),     /* U+FFFF */
	UTF8_OK("\xf0\x90\x80\x80"), /* U+10000, smallest 4-byte */
	UTF8_OK("\xf4\x8f\xbf\xbf"), /* U+10FFFF, the largest code point */
	UTF8_OK("\xe2\x82\xac"),     /* euro sign */
	UTF8_OK("a\xc3\xa9z"),
	UTF8_BAD("\x80", "invalid UTF-8 byte 0x80 at offset 1: continuation byte without"),
	UTF8_BAD("\xbf", "continuation byte without a lead byte"),
	UTF8_BAD("a\x80", "invalid UTF-8 byte 0x80 at offset 2"),
	UTF8_BAD("\xc0\x80", "invalid UTF-8 byte 0xc0 at offset 1: overlong encoding"),
	UTF8_BAD("\xc1\xbf", "invalid UTF-8 byte 0xc1 at offset 1: overlong encoding"),
	UTF8_BAD("\xe0\x80\x80", "sequence 0xe0 0x80 at offset 1: overlong encoding"),
	UTF8_BAD("\xe0\x9f\xbf", "overlong encoding"),
	UTF8_BAD("\xf0\x80\x80\x80", "sequence 0xf0 0x80 at offset 1: overlong encoding"),
	UTF8_BAD("\xf0\x8f\xbf\xbf", "overlong encoding"),
	UTF8_BAD("\xed\xa0\x80", "sequence 0xed 0xa0 at offset 1: UTF-16 surrogate"),
	UTF8_BAD("\xed\xbf\xbf", "UTF-16 surrogate"),
	UTF8_BAD("\xed\xb0\x80", "UTF-16 surrogate"),
	UTF8_BAD("\xf4\x90\x80\x80", "sequence 0xf4 0x90 at offset 1: code point above U+10FFFF"),
	UTF8_BAD("\xf4\xbf\xbf\xbf", "above U+10FFFF"),
	UTF8_BAD("\xf5\x80\x80\x80", "invalid UTF-8 byte 0xf5 at offset 1: byte never used"),
	UTF8_BAD("\xf7\xbf\xbf\xbf", "byte 0xf7"),
	UTF8_BAD("\xf8\x88\x80\x80\x80", "byte 0xf8"),
	UTF8_BAD("\xfc\x84\x80\x80\x80\x80", "byte 0xfc"),
	UTF8_BAD("\xfe", "invalid UTF-8 byte 0xfe"),
	UTF8_BAD("\xff", "invalid UTF-8 byte 0xff"),
	UTF8_BAD("\xc2", "sequence 0xc2 0x22 at offset 1: expected a continuation byte"),
	UTF8_BAD("\xc2\x41", "sequence 0xc2 0x41 at offset 1"),
	UTF8_BAD("\xe2\x82", "sequence 0xe2 0x82 0x22 at offset 1"),
	UTF8_BAD("\xe2\x82\xc0", "sequence 0xe2 0x82 0xc0 at offset 1"),
	UTF8_BAD("\xf0\x9f\x98", "sequence 0xf0 0x9f 0x98 0x22"),
	UTF8_BAD("\xf0\x9f\x98\x41", "expected a continuation byte"),
	UTF8_BAD("\xe2\x28\xa1", "sequence 0xe2 0x28"),
};
/* clang-format on */

static void test_validate_utf8_cases(void **state)
{
	for (size_t i = 0; i < sizeof(utf8_cases) / sizeof(utf8_cases[0]); i++) {
		const utf8_case_t *c = &utf8_cases[i];
		char doc[16];
		size_t len = c->len + 2;
		json_span_t root;
		json_scan_error_t err;
		int rc;

		doc[0] = '"';
		memcpy(doc + 1, c->bytes, c->len);
		doc[len - 1] = '"';
		rc = json_validate(doc, len, 64, &root, &err);
		if (c->valid && rc != 0)
			fail_msg("rejected %s: %s", show(doc, len), err.message);
		if (!c->valid) {
			if (rc != INFERQ_EINVAL)
				fail_msg("accepted %s", show(doc, len));
			if (!strstr(err.message, c->message))
				fail_msg("message \"%s\" lacks \"%s\"", err.message, c->message);
			check_error_report(&err, len, doc);
		}
	}
}

/* A sequence cut off by the end of input, with no closing quote, names the truncation. */
static void test_validate_utf8_truncated_at_end(void **state)
{
	static const char *const cuts[] = {"\"\xc3", "\"\xe2\x82", "\"\xf0\x9f\x98", "\"\xf0"};
	json_span_t root;
	json_scan_error_t err;

	for (size_t i = 0; i < sizeof(cuts) / sizeof(cuts[0]); i++) {
		size_t len = strlen(cuts[i]);

		assert_int_equal(json_validate(cuts[i], len, 64, &root, &err), INFERQ_EINVAL);
		assert_int_equal(err.offset, 1);
		assert_non_null(strstr(err.message, "truncated by the end of input"));
	}
}

/* Every byte pair inside a string, and a wide sample of 3- and 4-byte sequences. */
static void test_validate_utf8_matches_jansson(void **state)
{
	static const unsigned char tails[] = {0x80, 0xbf, 0x41, 0xc0, 0x22, 0x9f};
	diff_stats_t stats = {0, 0, 0};
	char doc[8];

	for (unsigned a = 0; a < 256; a++) {
		doc[0] = '"';
		doc[1] = (char)a;
		doc[2] = '"';
		check_against_jansson(doc, 3, &stats);
		for (unsigned b = 0; b < 256; b++) {
			doc[2] = (char)b;
			doc[3] = '"';
			check_against_jansson(doc, 4, &stats);
		}
	}
	for (unsigned a = 0xe0; a < 0x100; a++) {
		for (unsigned b = 0; b < 256; b++) {
			for (size_t t = 0; t < sizeof(tails); t++) {
				doc[1] = (char)a;
				doc[2] = (char)b;
				doc[3] = (char)tails[t];
				doc[4] = '"';
				check_against_jansson(doc, 5, &stats);
				doc[4] = (char)tails[(t + 1) % sizeof(tails)];
				doc[5] = '"';
				check_against_jansson(doc, 6, &stats);
			}
		}
	}
	assert_int_equal(stats.beyond_jansson, 0);
	assert_true(stats.accepted > 1000);
	assert_true(stats.rejected > 1000);
}

/* Every character after a backslash, and every \u code unit alone and in pairs. */
static void test_validate_escapes_match_jansson(void **state)
{
	static const unsigned lows[] = {0xdc00, 0xdfff, 0xdbff, 0xe000, 0x0041, 0x0000, 0xd800};
	diff_stats_t stats = {0, 0, 0};
	char doc[32];

	for (unsigned c = 0; c < 256; c++) {
		doc[0] = '"';
		doc[1] = '\\';
		doc[2] = (char)c;
		doc[3] = '"';
		check_against_jansson(doc, 4, &stats);
	}
	for (unsigned u = 0; u < 0x10000; u++) {
		snprintf(doc, sizeof(doc), "\"\\u%04x\"", u);
		check_against_jansson(doc, 8, &stats);
		snprintf(doc, sizeof(doc), "\"\\u%04X\"", u);
		check_against_jansson(doc, 8, &stats);
	}
	for (unsigned hi = 0xd7ff; hi <= 0xdc00; hi += 0x3f) {
		for (size_t i = 0; i < sizeof(lows) / sizeof(lows[0]); i++) {
			snprintf(doc, sizeof(doc), "\"\\u%04x\\u%04x\"", hi, lows[i]);
			check_against_jansson(doc, 14, &stats);
			snprintf(doc, sizeof(doc), "\"\\u%04x\\u%04x\"", 0xdbff, lows[i]);
			check_against_jansson(doc, 14, &stats);
		}
	}
	assert_true(stats.accepted > 60000);
}

/* ---- json_validate: depth ---- */

/* Writes n nested arrays around 1 ("[[1]]" for 2) into a new heap buffer. */
static char *nested_arrays(size_t n, size_t *len)
{
	char *p = malloc(2 * n + 1);

	assert_non_null(p);
	memset(p, '[', n);
	p[n] = '1';
	memset(p + n + 1, ']', n);
	*len = 2 * n + 1;
	return p;
}

/* Writes n nested objects: {"a":{"a":...1...}}. */
static char *nested_objects(size_t n, size_t *len)
{
	buf_t b = BUF_INIT;

	for (size_t i = 0; i < n; i++)
		buf_puts(&b, "{\"a\":");
	buf_putc(&b, '1');
	for (size_t i = 0; i < n; i++)
		buf_putc(&b, '}');
	*len = b.len;
	return b.data;
}

static void test_validate_depth_limit(void **state)
{
	json_span_t root;
	json_scan_error_t err;
	size_t len;
	char *doc;

	doc = nested_arrays(64, &len);
	assert_int_equal(json_validate(doc, len, 64, &root, &err), 0);
	free(doc);

	doc = nested_arrays(65, &len);
	assert_int_equal(json_validate(doc, len, 64, &root, &err), INFERQ_ELIMIT);
	assert_int_equal(err.too_deep, 1);
	assert_int_equal(err.offset, 64);
	assert_string_equal(err.message, "nesting depth exceeds the limit of 64 at offset 64");
	free(doc);

	doc = nested_objects(64, &len);
	assert_int_equal(json_validate(doc, len, 64, &root, &err), 0);
	free(doc);

	doc = nested_objects(65, &len);
	assert_int_equal(json_validate(doc, len, 64, &root, &err), INFERQ_ELIMIT);
	assert_int_equal(err.too_deep, 1);
	assert_int_equal(err.offset, 64 * 5);
	free(doc);

	/* A scalar is depth 0 and "{}" is depth 1. */
	assert_int_equal(json_validate(TEXT("\"x\""), 0, &root, &err), 0);
	assert_int_equal(json_validate(TEXT("[]"), 0, &root, &err), INFERQ_ELIMIT);
	assert_int_equal(err.offset, 0);
	assert_int_equal(json_validate(TEXT("{}"), 1, &root, &err), 0);
	assert_int_equal(json_validate(TEXT("[1,{\"a\":[]}]"), 2, &root, &err), INFERQ_ELIMIT);
	assert_int_equal(err.offset, 8);
	assert_int_equal(json_validate(TEXT("[1,{\"a\":[]}]"), 3, &root, &err), 0);
	assert_int_equal(json_validate(TEXT("[[],[],[[]]]"), 3, &root, &err), 0);
	assert_int_equal(json_validate(TEXT("[[],[],[[]]]"), 2, &root, &err), INFERQ_ELIMIT);

	/* A negative limit acts as 0. */
	assert_int_equal(json_validate(TEXT("1"), -5, &root, &err), 0);
	assert_int_equal(json_validate(TEXT("[]"), -5, &root, &err), INFERQ_ELIMIT);
}

/* The first problem found decides the result: depth before a later syntax error, and back. */
static void test_validate_depth_error_order(void **state)
{
	json_span_t root;
	json_scan_error_t err;

	assert_int_equal(json_validate(TEXT("[[[x"), 2, &root, &err), INFERQ_ELIMIT);
	assert_int_equal(err.too_deep, 1);
	assert_int_equal(json_validate(TEXT("[x[["), 2, &root, &err), INFERQ_EINVAL);
	assert_int_equal(err.too_deep, 0);
}

/* Depths beyond what the scanner keeps on its stack still pair brackets correctly. */
static void test_validate_deep_nesting(void **state)
{
	json_span_t root;
	json_scan_error_t err;
	buf_t b = BUF_INIT;
	size_t len;
	char *doc;

	doc = nested_arrays(5000, &len);
	assert_int_equal(json_validate(doc, len, 5000, &root, &err), 0);
	assert_int_equal(root.len, len);
	assert_int_equal(json_validate(doc, len, 4999, &root, &err), INFERQ_ELIMIT);
	assert_int_equal(err.offset, 4999);
	free(doc);

	/* Alternate arrays and objects 3000 deep, then close one level with the wrong bracket. */
	for (int i = 0; i < 3000; i++)
		buf_puts(&b, i % 2 ? "{\"k\":" : "[");
	buf_puts(&b, "0");
	for (int i = 2999; i >= 0; i--)
		buf_putc(&b, i % 2 ? '}' : ']');
	assert_int_equal(json_validate(b.data, b.len, 3000, &root, &err), 0);
	b.data[b.len - 1500] = b.data[b.len - 1500] == '}' ? ']' : '}';
	assert_int_equal(json_validate(b.data, b.len, 3000, &root, &err), INFERQ_EINVAL);
	assert_int_equal(err.offset, b.len - 1500);
	buf_free(&b);

	/* A million open brackets stop at the limit. */
	len = 1000000;
	doc = malloc(len);
	assert_non_null(doc);
	memset(doc, '[', len);
	assert_int_equal(json_validate(doc, len, 64, &root, &err), INFERQ_ELIMIT);
	assert_int_equal(err.offset, 64);
	free(doc);
}

/* A large document with long strings crosses the 8-byte fast path at every alignment. */
static void test_validate_long_strings(void **state)
{
	buf_t b = BUF_INIT;
	json_span_t root;
	json_scan_error_t err;

	buf_putc(&b, '[');
	for (int i = 0; i < 64; i++) {
		buf_puts(&b, i ? ",\"" : "\"");
		for (int j = 0; j < i; j++)
			buf_putc(&b, (char)('a' + j % 26));
		buf_puts(&b, "\\n\xc3\xa9\"");
	}
	buf_putc(&b, ']');
	assert_int_equal(json_validate(b.data, b.len, 64, &root, &err), 0);

	/* A control byte at any position of a long string is found. */
	for (size_t pos = 1; pos < 40; pos++) {
		buf_reset(&b);
		buf_putc(&b, '"');
		for (int j = 0; j < 40; j++)
			buf_putc(&b, 'x');
		buf_putc(&b, '"');
		b.data[pos] = '\x02';
		assert_int_equal(json_validate(b.data, b.len, 64, &root, &err), INFERQ_EINVAL);
		assert_int_equal(err.offset, pos);
	}
	buf_free(&b);
}

/* ---- differential checks against jansson ---- */

static const char *const seed_docs[] = {
    "null",
    "true",
    "-0.5e-3",
    "12345",
    "\"hello\"",
    "[]",
    "{}",
    "[1,2,3]",
    "{\"a\":1,\"b\":[true,false,null],\"c\":{\"d\":\"e\"}}",
    "{\"model\":\"m/x\",\"payload\":{\"prompt\":\"hi\",\"n\":2},\"priority\":-3}",
    "[\"\\u00e9\\u20ac\\ud83d\\ude00\",\"\\\"\\\\\\/\\b\\f\\n\\r\\t\"]",
    "{\"\\u0061\":\"\\u0000\"}",
    "[0,-0,0.0,1e5,1E-5,2.5e+10,9223372036854775807,-9223372036854775808]",
    "[1e400,123456789012345678901234567890]",
    "\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\"",
    " { \"a\" : [ { } , [ ] , \"x\" ] } ",
    "[[[[[[[[1]]]]]]]]",
    "{\"k\":{\"k\":{\"k\":{\"k\":null}}}}",
    "[\"a\",\"b\",\"c\",\"d\",\"e\",\"f\"]",
    "{\"a\":1,\"a\":2}",
    "[\"\\ud800\\udc00\",\"\\udbff\\udfff\"]",
    "[true,false,null,1,\"s\",[],{}]",
    "3.141592653589793",
    "[\"\x7f\",\"tab\\there\"]",
    "{\"deep\":[[{\"x\":[1,{\"y\":\"z\"}]}]]}",
};

static const char *const fragments[] = {
    "\\u0000",
    "\\ud800",
    "\\udc00",
    "\\ud83d\\ude00",
    "1e400",
    "-0",
    "123456789012345678901234",
    "\xed\xa0\x80",
    "\xf4\x90\x80\x80",
    "\xc0\x80",
    "\xe2\x82\xac",
    "null",
    "[",
    "{",
    "\"a\":",
    ",",
    "\"",
    "\\",
    "\\u",
    "0.",
    "e+",
    "]",
    "}",
    "\xef\xbb\xbf",
    "9223372036854775808",
    "-9223372036854775809",
    "1e308",
    "1e309",
    "\\\"",
    "true",
};

static const char interesting_bytes[] = " \t\n\r{}[],:\"\\0123456789-+.eEtfnul\x01\x1f\x7f"
                                        "\x80\xbf\xc0\xc2\xe0\xed\xf0\xf4\xf5\xff";

#define MUTANT_MAX 512

/* Applies one random edit to doc[0..*len), keeping it within MUTANT_MAX bytes. */
static void mutate(char *doc, size_t *len)
{
	size_t n = *len, pos = n ? rng_below((uint32_t)n) : 0;
	const char *frag;
	size_t flen, from, count;

	switch (rng_below(7)) {
	case 0:
		if (n)
			doc[pos] ^= (char)(1u << rng_below(8));
		break;
	case 1:
		if (n)
			doc[pos] = interesting_bytes[rng_below(sizeof(interesting_bytes) - 1)];
		break;
	case 2:
		if (n + 1 < MUTANT_MAX) {
			memmove(doc + pos + 1, doc + pos, n - pos);
			doc[pos] = interesting_bytes[rng_below(sizeof(interesting_bytes) - 1)];
			*len = n + 1;
		}
		break;
	case 3:
		if (n) {
			memmove(doc + pos, doc + pos + 1, n - pos - 1);
			*len = n - 1;
		}
		break;
	case 4:
		frag = fragments[rng_below(sizeof(fragments) / sizeof(fragments[0]))];
		flen = strlen(frag);
		if (n + flen < MUTANT_MAX) {
			memmove(doc + pos + flen, doc + pos, n - pos);
			memcpy(doc + pos, frag, flen);
			*len = n + flen;
		}
		break;
	case 5: *len = pos; break;
	default:
		if (!n)
			break;
		from = rng_below((uint32_t)n);
		count = 1 + rng_below((uint32_t)(n - from));
		if (n + count < MUTANT_MAX) {
			char chunk[MUTANT_MAX];

			memcpy(chunk, doc + from, count);
			memmove(doc + pos + count, doc + pos, n - pos);
			memcpy(doc + pos, chunk, count);
			*len = n + count;
		}
		break;
	}
}

static void test_differential_seeds(void **state)
{
	diff_stats_t stats = {0, 0, 0};
	static const char *const numbers[] = {
	    "0",
	    "-0",
	    "1",
	    "-1",
	    "0.0",
	    "1.0",
	    "1e0",
	    "1E+0",
	    "1e-0",
	    "0.000001",
	    "1e-400",
	    "1e308",
	    "1.7976931348623157e308",
	    "4.9e-324",
	    "9223372036854775807",
	    "-9223372036854775808",
	    "9223372036854775806",
	    "12.5e3",
	    "-3.25E-2",
	};

	for (size_t i = 0; i < sizeof(seed_docs) / sizeof(seed_docs[0]); i++)
		check_against_jansson(seed_docs[i], strlen(seed_docs[i]), &stats);
	for (size_t i = 0; i < sizeof(valid_cases) / sizeof(valid_cases[0]); i++)
		check_against_jansson(valid_cases[i].text, valid_cases[i].len, &stats);
	for (size_t i = 0; i < sizeof(invalid_cases) / sizeof(invalid_cases[0]); i++)
		check_against_jansson(invalid_cases[i].text, invalid_cases[i].len, &stats);
	for (size_t i = 0; i < sizeof(numbers) / sizeof(numbers[0]); i++)
		check_against_jansson(numbers[i], strlen(numbers[i]), &stats);

	/* Exactly the documented divergences are marked beyond jansson. */
	stats.beyond_jansson = 0;
	check_against_jansson(TEXT("1e400"), &stats);
	check_against_jansson(TEXT("-1e400"), &stats);
	check_against_jansson(TEXT("9223372036854775808"), &stats);
	check_against_jansson(TEXT("-9223372036854775809"), &stats);
	check_against_jansson(TEXT("[123456789012345678901234567890]"), &stats);
	check_against_jansson(TEXT("{\"a\\u0000\":1}"), &stats);
	assert_int_equal(stats.beyond_jansson, 6);
}

static void test_differential_mutations(void **state)
{
	diff_stats_t stats = {0, 0, 0};
	char doc[MUTANT_MAX];
	size_t len = 0;

	rng_seed(0x9e3779b97f4a7c15ULL);
	for (int i = 0; i < 20000; i++) {
		/* A quarter of the time keep editing the last mutant, so edits compound. */
		if (len == 0 || rng_below(4) != 0) {
			const char *seed =
			    seed_docs[rng_below(sizeof(seed_docs) / sizeof(seed_docs[0]))];

			len = strlen(seed);
			memcpy(doc, seed, len);
		}
		for (uint32_t k = rng_below(4) ? 1 : 2 + rng_below(2); k > 0; k--)
			mutate(doc, &len);
		check_against_jansson(doc, len, &stats);
	}
	print_message("mutations: %d accepted (%d beyond jansson), %d rejected\n", stats.accepted,
	              stats.beyond_jansson, stats.rejected);
	assert_true(stats.accepted > 2000);
	assert_true(stats.rejected > 2000);
}

/* ---- iterators and lookups ---- */

static json_span_t parse(const char *text, size_t len)
{
	json_span_t root;
	json_scan_error_t err;

	if (json_validate(text, len, 64, &root, &err) != 0)
		fail_msg("test document rejected: %s", err.message);
	return root;
}

static void assert_span(json_span_t s, const char *text, json_type_t type)
{
	if (s.len != strlen(text) || memcmp(s.start, text, s.len) != 0)
		fail_msg("span \"%s\", expected \"%s\"", show(s.start, s.len), text);
	assert_int_equal(s.type, type);
}

static void test_object_iteration(void **state)
{
	static const char doc[] = "{ \"a\" : 1 , \"b\":[1,{\"c\":\"}\"}], \"c\\\"\" : \"x,y\" ,"
	                          "\"d\":{ },\"e\":-1.5e3 , \"f\" :true}";
	json_span_t root = parse(TEXT(doc));
	json_iter_t it;
	json_member_t m;

	json_object_begin(&it, root);
	assert_int_equal(json_object_next(&it, &m), 1);
	assert_span(m.key, "\"a\"", JSON_TYPE_STRING);
	assert_span(m.value, "1", JSON_TYPE_NUMBER);
	assert_int_equal(json_object_next(&it, &m), 1);
	assert_span(m.key, "\"b\"", JSON_TYPE_STRING);
	assert_span(m.value, "[1,{\"c\":\"}\"}]", JSON_TYPE_ARRAY);
	assert_int_equal(json_object_next(&it, &m), 1);
	assert_span(m.key, "\"c\\\"\"", JSON_TYPE_STRING);
	assert_span(m.value, "\"x,y\"", JSON_TYPE_STRING);
	assert_int_equal(json_object_next(&it, &m), 1);
	assert_span(m.value, "{ }", JSON_TYPE_OBJECT);
	assert_int_equal(json_object_next(&it, &m), 1);
	assert_span(m.value, "-1.5e3", JSON_TYPE_NUMBER);
	assert_int_equal(json_object_next(&it, &m), 1);
	assert_span(m.key, "\"f\"", JSON_TYPE_STRING);
	assert_span(m.value, "true", JSON_TYPE_TRUE);
	assert_int_equal(json_object_next(&it, &m), 0);
	assert_int_equal(json_object_next(&it, &m), 0);

	json_object_begin(&it, parse(TEXT("{ }")));
	assert_int_equal(json_object_next(&it, &m), 0);

	/* Iterating a span of another type yields nothing. */
	json_object_begin(&it, parse(TEXT("[1]")));
	assert_int_equal(json_object_next(&it, &m), 0);
}

static void test_array_iteration(void **state)
{
	static const char doc[] =
	    "[ 1 , \"a]\\\\\" , [ ] , { \"k\" : [ 2 ] } , null,false,\"\\\"]\" ]";
	json_span_t root = parse(TEXT(doc));
	json_iter_t it;
	json_span_t e;

	json_array_begin(&it, root);
	assert_int_equal(json_array_next(&it, &e), 1);
	assert_span(e, "1", JSON_TYPE_NUMBER);
	assert_int_equal(json_array_next(&it, &e), 1);
	assert_span(e, "\"a]\\\\\"", JSON_TYPE_STRING);
	assert_int_equal(json_array_next(&it, &e), 1);
	assert_span(e, "[ ]", JSON_TYPE_ARRAY);
	assert_int_equal(json_array_next(&it, &e), 1);
	assert_span(e, "{ \"k\" : [ 2 ] }", JSON_TYPE_OBJECT);
	assert_int_equal(json_array_next(&it, &e), 1);
	assert_span(e, "null", JSON_TYPE_NULL);
	assert_int_equal(json_array_next(&it, &e), 1);
	assert_span(e, "false", JSON_TYPE_FALSE);
	assert_int_equal(json_array_next(&it, &e), 1);
	assert_span(e, "\"\\\"]\"", JSON_TYPE_STRING);
	assert_int_equal(json_array_next(&it, &e), 0);

	json_array_begin(&it, parse(TEXT("[]")));
	assert_int_equal(json_array_next(&it, &e), 0);
	json_array_begin(&it, parse(TEXT("{}")));
	assert_int_equal(json_array_next(&it, &e), 0);
}

/* A number that ends the buffer has no byte after it, so ASan catches any read past it. */
static void test_iteration_at_buffer_end(void **state)
{
	char *doc = malloc(5);
	json_iter_t it;
	json_span_t e;
	double d;

	assert_non_null(doc);
	memcpy(doc, "12.5", 4);
	assert_int_equal(json_double(parse(doc, 4), &d), 0);
	assert_true(d == 12.5);
	memcpy(doc, "[7]", 3);
	json_array_begin(&it, parse(doc, 3));
	assert_int_equal(json_array_next(&it, &e), 1);
	assert_span(e, "7", JSON_TYPE_NUMBER);
	assert_int_equal(json_array_next(&it, &e), 0);
	free(doc);
}

static void test_object_get(void **state)
{
	json_span_t root =
	    parse(TEXT("{\"model\":\"a\",\"mode\":1,\"models\":2,\"\\u006dodel\":\"b\","
	               "\"\\u00e9\":3,\"\\ud83d\\ude00\":4,\"a\\u0000b\":5,\"\":6}"));
	json_span_t v;

	assert_int_equal(json_object_find(root, "model", &v), 1);
	assert_span(v, "\"b\"", JSON_TYPE_STRING);
	assert_int_equal(json_object_find(root, "mode", &v), 1);
	assert_span(v, "1", JSON_TYPE_NUMBER);
	assert_int_equal(json_object_find(root, "models", &v), 1);
	assert_span(v, "2", JSON_TYPE_NUMBER);
	assert_int_equal(json_object_find(root, "\xc3\xa9", &v), 1);
	assert_span(v, "3", JSON_TYPE_NUMBER);
	assert_int_equal(json_object_find(root, "\xf0\x9f\x98\x80", &v), 1);
	assert_span(v, "4", JSON_TYPE_NUMBER);
	assert_int_equal(json_object_find(root, "", &v), 1);
	assert_span(v, "6", JSON_TYPE_NUMBER);
	assert_int_equal(json_object_find(root, "mod", &v), 0);
	assert_int_equal(json_object_find(root, "a", &v), 0);
	assert_int_equal(json_object_find(root, "modelx", &v), 0);
	assert_int_equal(json_object_find(parse(TEXT("[\"model\"]")), "model", &v), 0);
	assert_int_equal(json_object_find(parse(TEXT("{}")), "model", &v), 0);
}

static void test_string_equals(void **state)
{
	assert_int_equal(json_string_equals(parse(TEXT("\"abc\"")), "abc"), 1);
	assert_int_equal(json_string_equals(parse(TEXT("\"abc\"")), "ab"), 0);
	assert_int_equal(json_string_equals(parse(TEXT("\"abc\"")), "abcd"), 0);
	assert_int_equal(json_string_equals(parse(TEXT("\"\"")), ""), 1);
	assert_int_equal(json_string_equals(parse(TEXT("\"\"")), "a"), 0);
	assert_int_equal(json_string_equals(parse(TEXT("\"a\\nb\"")), "a\nb"), 1);
	assert_int_equal(json_string_equals(parse(TEXT("\"\\u0041\"")), "A"), 1);
	assert_int_equal(json_string_equals(parse(TEXT("\"\\/\\\\\\\"\"")), "/\\\""), 1);
	assert_int_equal(json_string_equals(parse(TEXT("\"\\u20ac\"")), "\xe2\x82\xac"), 1);
	assert_int_equal(json_string_equals(parse(TEXT("\"\\u20ac\"")), "\xe2\x82"), 0);
	assert_int_equal(json_string_equals(parse(TEXT("\"a\\u0000\"")), "a"), 0);
	assert_int_equal(json_string_equals(parse(TEXT("1")), "1"), 0);
}

static void test_string_decode(void **state)
{
	buf_t out = BUF_INIT;

	assert_int_equal(json_string_decode(parse(TEXT("\"\\\"\\\\\\/\\b\\f\\n\\r\\t\"")), &out),
	                 0);
	assert_int_equal(out.len, 8);
	assert_memory_equal(out.data, "\"\\/\b\f\n\r\t", 8);

	buf_reset(&out);
	assert_int_equal(
	    json_string_decode(parse(TEXT("\"x\\ud83d\\ude00y\\u00e9\xe2\x82\xac\"")), &out), 0);
	assert_string_equal(out.data, "x\xf0\x9f\x98\x80y\xc3\xa9\xe2\x82\xac");

	/* Decoding appends after the buffer's existing bytes. */
	buf_reset(&out);
	buf_puts(&out, "pre:");
	assert_int_equal(json_string_decode(parse(TEXT("\"\\u0041\\u07ff\\uffff\"")), &out), 0);
	assert_string_equal(out.data, "pre:A\xdf\xbf\xef\xbf\xbf");

	/* A NUL is reported, and the whole decoded text is still appended. */
	buf_reset(&out);
	assert_int_equal(json_string_decode(parse(TEXT("\"a\\u0000b\"")), &out), INFERQ_EINVAL);
	assert_int_equal(out.len, 3);
	assert_memory_equal(out.data, "a\0b", 3);

	buf_reset(&out);
	assert_int_equal(json_string_decode(parse(TEXT("\"\"")), &out), 0);
	assert_int_equal(out.len, 0);
	assert_int_equal(json_string_decode(parse(TEXT("12")), &out), INFERQ_EINVAL);
	buf_free(&out);
}

/* ---- numbers ---- */

static void test_int64(void **state)
{
	static const struct {
		const char *text;
		int rc;
		int64_t value;
	} cases[] = {
	    {"0", 0, 0},
	    {"-0", 0, 0},
	    {"7", 0, 7},
	    {"-5", 0, -5},
	    {"9223372036854775807", 0, INT64_MAX},
	    {"-9223372036854775808", 0, INT64_MIN},
	    {"9223372036854775806", 0, INT64_MAX - 1},
	    {"-9223372036854775807", 0, INT64_MIN + 1},
	    {"9223372036854775808", INFERQ_ERANGE, 0},
	    {"-9223372036854775809", INFERQ_ERANGE, 0},
	    {"18446744073709551616", INFERQ_ERANGE, 0},
	    {"99999999999999999999", INFERQ_ERANGE, 0},
	    {"123456789012345678901234567890", INFERQ_ERANGE, 0},
	    {"1.0", INFERQ_EINVAL, 0},
	    {"1e2", INFERQ_EINVAL, 0},
	    {"1E2", INFERQ_EINVAL, 0},
	    {"-0.0", INFERQ_EINVAL, 0},
	    {"123456789012345678901234567890.5", INFERQ_EINVAL, 0},
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		int64_t v = 42;
		int rc = json_int64(parse(cases[i].text, strlen(cases[i].text)), &v);

		if (rc != cases[i].rc)
			fail_msg("json_int64(%s) returned %d, expected %d", cases[i].text, rc,
			         cases[i].rc);
		if (rc == 0 && v != cases[i].value)
			fail_msg("json_int64(%s) read %lld", cases[i].text, (long long)v);
		if (rc != 0 && v != 42)
			fail_msg("json_int64(%s) wrote its output on failure", cases[i].text);
	}
	{
		int64_t v;

		assert_int_equal(json_int64(parse(TEXT("\"1\"")), &v), INFERQ_EINVAL);
	}
}

static void test_double(void **state)
{
	char big[128];
	double d = 0;

	assert_int_equal(json_double(parse(TEXT("1.5")), &d), 0);
	assert_true(d == 1.5);
	assert_int_equal(json_double(parse(TEXT("-0.25")), &d), 0);
	assert_true(d == -0.25);
	assert_int_equal(json_double(parse(TEXT("123")), &d), 0);
	assert_true(d == 123.0);
	assert_int_equal(json_double(parse(TEXT("0.1")), &d), 0);
	assert_true(d == 0.1);
	assert_int_equal(json_double(parse(TEXT("1e-400")), &d), 0);
	assert_true(d == 0.0);
	assert_int_equal(json_double(parse(TEXT("1.7976931348623157e308")), &d), 0);
	assert_true(d == 1.7976931348623157e308);
	assert_int_equal(json_double(parse(TEXT("1e400")), &d), INFERQ_ERANGE);
	assert_int_equal(json_double(parse(TEXT("-1e400")), &d), INFERQ_ERANGE);
	assert_int_equal(json_double(parse(TEXT("null")), &d), INFERQ_EINVAL);

	/* A literal longer than the local copy buffer. */
	big[0] = '1';
	memset(big + 1, '0', 99);
	big[100] = '\0';
	assert_int_equal(json_double(parse(big, 100), &d), 0);
	assert_true(d == 1e99);
}

/* ---- writer ---- */

static void assert_written(const char *in, size_t len, const char *expected)
{
	buf_t out = BUF_INIT;

	json_write_string(&out, in, len);
	if (strcmp(out.data, expected) != 0)
		fail_msg("wrote %s for %s, expected %s", out.data, show(in, len), expected);
	buf_free(&out);
}

static void test_write_string_escapes(void **state)
{
	assert_written(TEXT(""), "\"\"");
	assert_written(TEXT("plain text"), "\"plain text\"");
	assert_written(TEXT("a\"b\\c/d"), "\"a\\\"b\\\\c/d\"");
	assert_written(TEXT("\b\f\n\r\t"), "\"\\b\\f\\n\\r\\t\"");
	assert_written(TEXT("\x01\x0b\x1f"), "\"\\u0001\\u000b\\u001f\"");
	assert_written(TEXT("a\0b"), "\"a\\u0000b\"");
	assert_written(TEXT("\x7f"), "\"\x7f\"");
	assert_written(TEXT("\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80"),
	               "\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\"");
	assert_written(TEXT("\xf4\x8f\xbf\xbf"), "\"\xf4\x8f\xbf\xbf\"");

	/* Every control character gets an escape that decodes back to it. */
	for (int c = 0; c < 0x20; c++) {
		char in = (char)c;
		buf_t out = BUF_INIT;
		buf_t back = BUF_INIT;
		json_span_t root;
		json_scan_error_t err;

		json_write_string(&out, &in, 1);
		assert_int_equal(json_validate(out.data, out.len, 0, &root, &err), 0);
		json_string_decode(root, &back);
		assert_int_equal(back.len, 1);
		assert_int_equal(back.data[0], c);
		buf_free(&out);
		buf_free(&back);
	}
}

static void test_write_string_invalid_utf8(void **state)
{
	assert_written(TEXT("\xff"), "\"\\ufffd\"");
	assert_written(TEXT("a\xc3"), "\"a\\ufffd\"");
	assert_written(TEXT("\xe2\x82\x41"), "\"\\ufffd\\ufffdA\"");
	assert_written(TEXT("\xed\xa0\x80"), "\"\\ufffd\\ufffd\\ufffd\"");
	assert_written(TEXT("\xc0\xaf"), "\"\\ufffd\\ufffd\"");
	assert_written(TEXT("\xf4\x90\x80\x80"), "\"\\ufffd\\ufffd\\ufffd\\ufffd\"");
	assert_written(TEXT("\x80ok\xc3\xa9"), "\"\\ufffdok\xc3\xa9\"");
	assert_written(TEXT("\xf0\x9f\x98"), "\"\\ufffd\\ufffd\\ufffd\"");
}

/* Special bytes at every offset of a long run take the slow path at the right place. */
static void test_write_string_alignment(void **state)
{
	char in[40], expected[64];

	for (size_t pos = 0; pos < sizeof(in); pos++) {
		memset(in, 'x', sizeof(in));
		in[pos] = '"';
		memset(expected, 'x', sizeof(expected));
		expected[0] = '"';
		expected[1 + pos] = '\\';
		expected[2 + pos] = '"';
		expected[sizeof(in) + 2] = '"';
		expected[sizeof(in) + 3] = '\0';
		assert_written(in, sizeof(in), expected);
	}
}

/* Encodes cp as UTF-8 into out and returns the length. */
static size_t encode_utf8(uint32_t cp, char *out)
{
	if (cp < 0x80) {
		out[0] = (char)cp;
		return 1;
	}
	if (cp < 0x800) {
		out[0] = (char)(0xc0 | cp >> 6);
		out[1] = (char)(0x80 | (cp & 0x3f));
		return 2;
	}
	if (cp < 0x10000) {
		out[0] = (char)(0xe0 | cp >> 12);
		out[1] = (char)(0x80 | (cp >> 6 & 0x3f));
		out[2] = (char)(0x80 | (cp & 0x3f));
		return 3;
	}
	out[0] = (char)(0xf0 | cp >> 18);
	out[1] = (char)(0x80 | (cp >> 12 & 0x3f));
	out[2] = (char)(0x80 | (cp >> 6 & 0x3f));
	out[3] = (char)(0x80 | (cp & 0x3f));
	return 4;
}

/* Valid UTF-8 survives a round trip through jansson, and random bytes always give valid JSON. */
static void test_write_string_round_trip(void **state)
{
	rng_seed(12345);
	for (int i = 0; i < 2000; i++) {
		char in[256];
		size_t len = 0, n = rng_below(40);
		buf_t out = BUF_INIT;
		jansson_error_t jerr;
		json_t *j;

		for (size_t k = 0; k < n; k++) {
			uint32_t cp;

			switch (rng_below(4)) {
			case 0: cp = rng_below(0x80); break;
			case 1: cp = 0x80 + rng_below(0x800 - 0x80); break;
			case 2: cp = 0x800 + rng_below(0x10000 - 0x800); break;
			default: cp = 0x10000 + rng_below(0x110000 - 0x10000); break;
			}
			if (cp >= 0xd800 && cp <= 0xdfff)
				cp = 0xfffd;
			len += encode_utf8(cp, in + len);
		}
		json_write_string(&out, in, len);
		j = json_loadb(out.data, out.len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
		if (!j)
			fail_msg("jansson rejects %s: %s", show(out.data, out.len), jerr.text);
		assert_int_equal(json_string_length(j), len);
		assert_memory_equal(json_string_value(j), in, len);
		json_decref(j);
		buf_free(&out);
	}

	for (int i = 0; i < 2000; i++) {
		char in[64];
		size_t len = rng_below(sizeof(in));
		buf_t out = BUF_INIT;
		json_span_t root;
		json_scan_error_t err;
		jansson_error_t jerr;
		json_t *j;

		for (size_t k = 0; k < len; k++)
			in[k] = (char)rng_below(256);
		json_write_string(&out, in, len);
		if (json_validate(out.data, out.len, 0, &root, &err) != 0)
			fail_msg("wrote invalid JSON %s: %s", show(out.data, out.len), err.message);
		j = json_loadb(out.data, out.len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
		assert_non_null(j);
		json_decref(j);
		buf_free(&out);
	}
}

static void test_write_key(void **state)
{
	buf_t out = BUF_INIT;

	buf_putc(&out, '{');
	json_write_key(&out, "model");
	buf_puts(&out, "1,");
	json_write_key(&out, "a\"b\n");
	buf_puts(&out, "2}");
	assert_string_equal(out.data, "{\"model\":1,\"a\\\"b\\n\":2}");
	buf_free(&out);
}

/* ---- merge patch ---- */

typedef struct {
	const char *target; /* NULL for an absent target */
	const char *patch;
	const char *result; /* exact bytes json_merge_patch writes */
} merge_case_t;

/* The examples of RFC 7386 Appendix A, then its section 3 example. */
static const merge_case_t rfc7386_cases[] = {
    {"{\"a\":\"b\"}", "{\"a\":\"c\"}", "{\"a\":\"c\"}"},
    {"{\"a\":\"b\"}", "{\"b\":\"c\"}", "{\"a\":\"b\",\"b\":\"c\"}"},
    {"{\"a\":\"b\"}", "{\"a\":null}", "{}"},
    {"{\"a\":\"b\",\"b\":\"c\"}", "{\"a\":null}", "{\"b\":\"c\"}"},
    {"{\"a\":[\"b\"]}", "{\"a\":\"c\"}", "{\"a\":\"c\"}"},
    {"{\"a\":\"c\"}", "{\"a\":[\"b\"]}", "{\"a\":[\"b\"]}"},
    {"{\"a\": {\"b\": \"c\"}}", "{\"a\": {\"b\": \"d\", \"c\": null}}", "{\"a\":{\"b\":\"d\"}}"},
    {"{\"a\": [{\"b\":\"c\"}]}", "{\"a\": [1]}", "{\"a\":[1]}"},
    {"[\"a\",\"b\"]", "[\"c\",\"d\"]", "[\"c\",\"d\"]"},
    {"{\"a\":\"b\"}", "[\"c\"]", "[\"c\"]"},
    {"{\"a\":\"foo\"}", "null", "null"},
    {"{\"a\":\"foo\"}", "\"bar\"", "\"bar\""},
    {"{\"e\":null}", "{\"a\":1}", "{\"e\":null,\"a\":1}"},
    {"[1,2]", "{\"a\":\"b\",\"c\":null}", "{\"a\":\"b\"}"},
    {"{}", "{\"a\":{\"bb\":{\"ccc\":null}}}", "{\"a\":{\"bb\":{}}}"},
    {"{\n  \"title\": \"Goodbye!\",\n  \"author\" : {\n    \"givenName\" : \"John\",\n"
     "    \"familyName\" : \"Doe\"\n  },\n  \"tags\":[ \"example\", \"sample\" ],\n"
     "  \"content\": \"This will be unchanged\"\n}",
     "{\n  \"title\": \"Hello!\",\n  \"phoneNumber\": \"+01-234-567-8910\",\n"
     "  \"author\": {\n    \"familyName\": null\n  },\n  \"tags\": [ \"example\" ]\n}",
     "{\"title\":\"Hello!\",\"author\":{\"givenName\":\"John\"},\"tags\":[ \"example\" ],"
     "\"content\":\"This will be unchanged\",\"phoneNumber\":\"+01-234-567-8910\"}"},
};

/* Further cases: raw bytes kept, duplicates, escaped keys, absent and scalar targets. */
static const merge_case_t merge_cases[] = {
    {"{\"a\":1e400,\"b\":123456789012345678901234567890,\"c\":1.0,\"d\":{\"e\":-0.0E+00,"
     "\"f\":[1e400, 2]},\"g\":\"x\"}",
     "{\"g\":null,\"d\":{\"h\":99999999999999999999999}}",
     "{\"a\":1e400,\"b\":123456789012345678901234567890,\"c\":1.0,\"d\":{\"e\":-0.0E+00,"
     "\"f\":[1e400, 2],\"h\":99999999999999999999999}}"},
    {"{\"s\":\"\\u00e9\\n\",\"t\":\"\\ud83d\\ude00\"}", "{\"u\":\"\\u0000\"}",
     "{\"s\":\"\\u00e9\\n\",\"t\":\"\\ud83d\\ude00\",\"u\":\"\\u0000\"}"},
    {"{\"a\" : 1 , \"b\":[ 1 ]}", "{}", "{\"a\":1,\"b\":[ 1 ]}"},
    {"  {\"a\":1}  ", " {\"b\":2}\n", "{\"a\":1,\"b\":2}"},
    {NULL, "{\"a\":{\"b\":null,\"c\":[null]}}", "{\"a\":{\"c\":[null]}}"},
    {NULL, "[1, null]", "[1, null]"},
    {NULL, "null", "null"},
    {"null", "{\"a\":null}", "{}"},
    {"\"s\"", "3", "3"},
    {"[1,2]", "{\"a\":1}", "{\"a\":1}"},
    {"{\"a\":1}", "{\"a\":{\"b\":null,\"c\":{\"d\":null}}}", "{\"a\":{\"c\":{}}}"},
    {"{\"a\":{\"x\":1}}", "{\"a\":{\"y\":{\"z\":null}}}", "{\"a\":{\"x\":1,\"y\":{}}}"},
    {"{\"a\":{\"x\":1}}", "{\"a\":{}}", "{\"a\":{\"x\":1}}"},
    {"{\"a\":1}", "{\"b\":null}", "{\"a\":1}"},
    /* Duplicate keys: the last member wins and earlier ones are dropped. */
    {"{\"a\":1,\"b\":2,\"a\":3}", "{\"c\":4}", "{\"b\":2,\"a\":3,\"c\":4}"},
    {"{\"a\":1,\"b\":2,\"a\":3}", "{\"a\":null}", "{\"b\":2}"},
    {"{\"a\":{\"p\":1},\"a\":{\"q\":2}}", "{\"a\":{\"r\":3}}", "{\"a\":{\"q\":2,\"r\":3}}"},
    {"{}", "{\"x\":1,\"x\":2}", "{\"x\":2}"},
    {"{\"a\":1}", "{\"a\":5,\"a\":null}", "{}"},
    {"{\"a\":1}", "{\"a\":null,\"a\":5}", "{\"a\":5}"},
    {"{}", "{\"n\":1,\"m\":2,\"n\":3}", "{\"m\":2,\"n\":3}"},
    /* Keys compare after decoding; the target keeps its spelling. */
    {"{\"\\u0061\":1,\"b\":2}", "{\"a\":2}", "{\"\\u0061\":2,\"b\":2}"},
    {"{\"\\u0061\":1,\"b\":2}", "{\"\\u0062\":null}", "{\"\\u0061\":1}"},
    {"{\"a\":1,\"\\u0061\":2}", "{\"c\":3}", "{\"\\u0061\":2,\"c\":3}"},
    {"{\"a\\u0000\":1,\"a\":2}", "{\"a\\u0000\":null}", "{\"a\":2}"},
    {"{\"ab\":1,\"a\":2,\"\":3}", "{\"a\":9,\"\":null}", "{\"ab\":1,\"a\":9}"},
};

static void run_merge_case(const merge_case_t *c, int check_with_jansson)
{
	buf_t out = BUF_INIT;
	size_t tlen = c->target ? strlen(c->target) : 0;
	int rc = json_merge_patch(c->target, tlen, c->patch, strlen(c->patch), 64, &out);

	if (rc != 0)
		fail_msg("merge of %s into %s returned %d", c->patch, c->target, rc);
	if (strcmp(out.data, c->result) != 0)
		fail_msg("merge of %s into %s wrote %s, expected %s", c->patch,
		         c->target ? c->target : "(absent)", out.data, c->result);

	if (check_with_jansson) {
		json_t *got = json_loads(out.data, JSON_DECODE_ANY, NULL);
		json_t *want = json_loads(c->result, JSON_DECODE_ANY, NULL);

		assert_non_null(got);
		assert_non_null(want);
		assert_true(json_equal(got, want));
		json_decref(got);
		json_decref(want);
	}
	buf_free(&out);
}

static void test_merge_patch_rfc7386(void **state)
{
	for (size_t i = 0; i < sizeof(rfc7386_cases) / sizeof(rfc7386_cases[0]); i++)
		run_merge_case(&rfc7386_cases[i], 1);
}

static void test_merge_patch_cases(void **state)
{
	for (size_t i = 0; i < sizeof(merge_cases) / sizeof(merge_cases[0]); i++)
		run_merge_case(&merge_cases[i], 0);
}

static void test_merge_patch_appends(void **state)
{
	buf_t out = BUF_INIT;

	buf_puts(&out, "info=");
	assert_int_equal(json_merge_patch(TEXT("{\"a\":1}"), TEXT("{\"b\":2}"), 64, &out), 0);
	assert_string_equal(out.data, "info={\"a\":1,\"b\":2}");
	buf_free(&out);
}

static void test_merge_patch_depth_limit(void **state)
{
	buf_t out = BUF_INIT;

	buf_puts(&out, "keep");

	/* Untouched target members count toward the depth of the result. */
	assert_int_equal(json_merge_patch(TEXT("{\"a\":{\"b\":1}}"), TEXT("{\"c\":1}"), 2, &out),
	                 0);
	buf_reset(&out);
	buf_puts(&out, "keep");
	assert_int_equal(json_merge_patch(TEXT("{\"a\":{\"b\":[1]}}"), TEXT("{\"c\":1}"), 2, &out),
	                 INFERQ_ELIMIT);
	assert_string_equal(out.data, "keep");

	/* Objects the patch adds. */
	assert_int_equal(json_merge_patch(NULL, 0, TEXT("{\"a\":{\"b\":{\"c\":1}}}"), 2, &out),
	                 INFERQ_ELIMIT);
	assert_string_equal(out.data, "keep");
	assert_int_equal(json_merge_patch(NULL, 0, TEXT("{\"a\":{\"b\":{\"c\":1}}}"), 3, &out), 0);
	assert_string_equal(out.data, "keep{\"a\":{\"b\":{\"c\":1}}}");

	/* Raw arrays the patch sets, and a non-object patch at the root. */
	buf_reset(&out);
	assert_int_equal(json_merge_patch(TEXT("{}"), TEXT("{\"a\":[[[1]]]}"), 3, &out),
	                 INFERQ_ELIMIT);
	assert_int_equal(out.len, 0);
	assert_int_equal(json_merge_patch(TEXT("{}"), TEXT("{\"a\":[[[1]]]}"), 4, &out), 0);
	buf_reset(&out);
	assert_int_equal(json_merge_patch(TEXT("{}"), TEXT("[[1]]"), 1, &out), INFERQ_ELIMIT);
	assert_int_equal(json_merge_patch(TEXT("{}"), TEXT("[[1]]"), 2, &out), 0);
	assert_string_equal(out.data, "[[1]]");

	/* The depth counted is the result's: deleting the deep part makes it fit. */
	buf_reset(&out);
	assert_int_equal(
	    json_merge_patch(TEXT("{\"a\":{\"b\":{\"c\":1}}}"), TEXT("{\"a\":null}"), 1, &out), 0);
	assert_string_equal(out.data, "{}");
	buf_reset(&out);
	assert_int_equal(json_merge_patch(TEXT("{\"a\":1}"), TEXT("{}"), 0, &out), INFERQ_ELIMIT);
	assert_int_equal(json_merge_patch(TEXT("{\"a\":1}"), TEXT("7"), 0, &out), 0);
	assert_string_equal(out.data, "7");

	/* Brackets inside strings do not count. */
	buf_reset(&out);
	assert_int_equal(
	    json_merge_patch(TEXT("{\"a\":\"[[[{{\"}"), TEXT("{\"b\":\"]]\"}"), 1, &out), 0);
	assert_string_equal(out.data, "{\"a\":\"[[[{{\",\"b\":\"]]\"}");
	buf_free(&out);
}

/* Keys random_value() writes, decoded ("\u0061" is "a"). */
static const char *const merge_keys[] = {"a", "b", "c", "d"};

/*
 * RFC 7386's MergePatch pseudocode on jansson values, as the reference. It
 * visits the patch by the known key set instead of iterating it, because
 * jansson's json_object_begin is out of reach in this binary (see the
 * include block); each key changes only its own member, so order is moot.
 */
static json_t *reference_merge(json_t *target, json_t *patch)
{
	json_t *result;
	size_t visited = 0;

	if (!jansson_is_object(patch))
		return json_incref(patch);
	result = jansson_is_object(target) ? json_deep_copy(target) : json_object();
	for (size_t i = 0; i < sizeof(merge_keys) / sizeof(merge_keys[0]); i++) {
		const char *key = merge_keys[i];
		json_t *value = json_object_getn(patch, key, strlen(key));

		if (!value)
			continue;
		visited++;
		if (jansson_is_null(value))
			json_object_del(result, key);
		else
			json_object_set_new(
			    result, key,
			    reference_merge(json_object_getn(result, key, strlen(key)), value));
	}
	assert_int_equal(visited, json_object_size(patch));
	return result;
}

/* Writes a random JSON value with keys from a small set, so members often collide. */
static void random_value(buf_t *b, int depth)
{
	static const char *const keys[] = {"\"a\"", "\"b\"", "\"c\"", "\"\\u0061\"", "\"d\""};
	static const char *const scalars[] = {"null", "null",     "1",   "\"s\"",
	                                      "true", "[1,null]", "2.5", "[]"};
	uint32_t kind = depth >= 4 ? 1 : rng_below(3);

	if (kind == 0) {
		uint32_t n = rng_below(5);

		buf_putc(b, '{');
		for (uint32_t i = 0; i < n; i++) {
			if (i)
				buf_putc(b, ',');
			buf_puts(b, keys[rng_below(sizeof(keys) / sizeof(keys[0]))]);
			buf_putc(b, ':');
			random_value(b, depth + 1);
		}
		buf_putc(b, '}');
	} else {
		buf_puts(b, scalars[rng_below(sizeof(scalars) / sizeof(scalars[0]))]);
	}
}

static void test_merge_patch_matches_reference(void **state)
{
	rng_seed(7386);
	for (int i = 0; i < 3000; i++) {
		buf_t target = BUF_INIT, patch = BUF_INIT, out = BUF_INIT;
		json_t *t, *p, *want, *got;
		json_span_t root;
		json_scan_error_t err;

		random_value(&target, 0);
		random_value(&patch, rng_below(2) ? 0 : 1);
		assert_int_equal(
		    json_merge_patch(target.data, target.len, patch.data, patch.len, 64, &out), 0);
		if (json_validate(out.data, out.len, 64, &root, &err) != 0)
			fail_msg("merge wrote invalid JSON %s: %s", out.data, err.message);

		t = json_loadb(target.data, target.len, JSON_DECODE_ANY, NULL);
		p = json_loadb(patch.data, patch.len, JSON_DECODE_ANY, NULL);
		got = json_loadb(out.data, out.len, JSON_DECODE_ANY, NULL);
		assert_non_null(t);
		assert_non_null(p);
		assert_non_null(got);
		want = reference_merge(t, p);
		if (!json_equal(got, want))
			fail_msg("merge of %s into %s wrote %s", patch.data, target.data, out.data);
		json_decref(t);
		json_decref(p);
		json_decref(got);
		json_decref(want);
		buf_free(&target);
		buf_free(&patch);
		buf_free(&out);
	}
}

/* A large object goes through the sorted member tables, not a quadratic scan. */
static void test_merge_patch_large_object(void **state)
{
	buf_t target = BUF_INIT, patch = BUF_INIT, out = BUF_INIT, want = BUF_INIT;

	buf_putc(&target, '{');
	buf_putc(&patch, '{');
	buf_putc(&want, '{');
	for (int i = 0; i < 20000; i++) {
		buf_printf(&target, "%s\"k%d\":%d", i ? "," : "", i, i);
		if (i % 2 == 0)
			buf_printf(&patch, "%s\"k%d\":null", i ? "," : "", i);
		else
			buf_printf(&want, "%s\"k%d\":%d", i > 1 ? "," : "", i, i);
	}
	buf_puts(&patch, ",\"new\":true}");
	buf_puts(&target, "}");
	buf_puts(&want, ",\"new\":true}");
	assert_int_equal(json_merge_patch(target.data, target.len, patch.data, patch.len, 64, &out),
	                 0);
	assert_string_equal(out.data, want.data);
	buf_free(&target);
	buf_free(&patch);
	buf_free(&out);
	buf_free(&want);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_validate_accepts_valid),
	    cmocka_unit_test(test_validate_rejects_invalid),
	    cmocka_unit_test(test_validate_exact_messages),
	    cmocka_unit_test(test_validate_without_error_report),
	    cmocka_unit_test(test_validate_root_span),
	    cmocka_unit_test(test_validate_utf8_cases),
	    cmocka_unit_test(test_validate_utf8_truncated_at_end),
	    cmocka_unit_test(test_validate_utf8_matches_jansson),
	    cmocka_unit_test(test_validate_escapes_match_jansson),
	    cmocka_unit_test(test_validate_depth_limit),
	    cmocka_unit_test(test_validate_depth_error_order),
	    cmocka_unit_test(test_validate_deep_nesting),
	    cmocka_unit_test(test_validate_long_strings),
	    cmocka_unit_test(test_differential_seeds),
	    cmocka_unit_test(test_differential_mutations),
	    cmocka_unit_test(test_object_iteration),
	    cmocka_unit_test(test_array_iteration),
	    cmocka_unit_test(test_iteration_at_buffer_end),
	    cmocka_unit_test(test_object_get),
	    cmocka_unit_test(test_string_equals),
	    cmocka_unit_test(test_string_decode),
	    cmocka_unit_test(test_int64),
	    cmocka_unit_test(test_double),
	    cmocka_unit_test(test_write_string_escapes),
	    cmocka_unit_test(test_write_string_invalid_utf8),
	    cmocka_unit_test(test_write_string_alignment),
	    cmocka_unit_test(test_write_string_round_trip),
	    cmocka_unit_test(test_write_key),
	    cmocka_unit_test(test_merge_patch_rfc7386),
	    cmocka_unit_test(test_merge_patch_cases),
	    cmocka_unit_test(test_merge_patch_appends),
	    cmocka_unit_test(test_merge_patch_depth_limit),
	    cmocka_unit_test(test_merge_patch_matches_reference),
	    cmocka_unit_test(test_merge_patch_large_object),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
