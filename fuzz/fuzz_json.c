/*
 * Fuzz target for the strict JSON scanner (json.h). Each input is validated
 * at several depth limits, which must agree with each other. An accepted
 * document is walked with every iterator and decoder, checking that each
 * span lies inside its parent. The verdict is compared with jansson 2.14.
 * Both must agree except on the three things jansson rejects by design
 * (integers outside int64_t, numbers that overflow a double, and NUL in an
 * object key) and on raw NUL bytes, which jansson sometimes skips. The input is also written with
 * json_write_string, whose output must validate and decode back.
 *
 * SPDX-License-Identifier: MIT
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "check.h"
#include "inferq_error.h"
#include "jansson_ref.h"
#include "json.h"

#define DIFF_DEPTH   1000 /* below jansson's own nesting limit of 2048 */
#define FIND_MEMBERS 64   /* members per object checked against json_object_find */

static const int depths[] = {-1, 0, 1, 2, 5, 64, DIFF_DEPTH};
#define N_DEPTHS (sizeof(depths) / sizeof(depths[0]))

static const char *doc_start, *doc_end; /* the input, for span bounds checks */

static void check_error(const json_scan_error_t *err, int rc, size_t len)
{
	char where[48];

	FUZZ_CHECK(rc == INFERQ_EINVAL || rc == INFERQ_ELIMIT, "json_validate returned %d", rc);
	FUZZ_CHECK(err->too_deep == (rc == INFERQ_ELIMIT), "too_deep %d with code %d",
	           err->too_deep, rc);
	FUZZ_CHECK(err->offset <= len, "error offset %zu beyond length %zu", err->offset, len);
	fuzz_check_message(err->message, sizeof(err->message), "json_validate message");
	snprintf(where, sizeof(where), "at offset %zu", err->offset);
	FUZZ_CHECK(strstr(err->message, where) != NULL, "message \"%s\" does not name offset %zu",
	           err->message, err->offset);
}

/* Checks that a span lies inside [lo, hi) and that its first byte matches its type. */
static void check_span(json_span_t v, const char *lo, const char *hi)
{
	static const char first[] = {'n', 'f', 't', 0, '"', '[', '{'};

	FUZZ_CHECK(v.start >= lo && v.len > 0 && v.len <= (size_t)(hi - v.start),
	           "span of %zu bytes at offset %td lies outside its parent", v.len,
	           v.start - doc_start);
	FUZZ_CHECK(v.type <= JSON_TYPE_OBJECT, "span type %d", (int)v.type);
	if (v.type == JSON_TYPE_NUMBER)
		FUZZ_CHECK(v.start[0] == '-' || (v.start[0] >= '0' && v.start[0] <= '9'),
		           "number span starts with 0x%02x", (unsigned char)v.start[0]);
	else
		FUZZ_CHECK(v.start[0] == first[v.type], "span of type %d starts with %s",
		           (int)v.type, fuzz_show(v.start, 1));
}

/* Decoded string: valid UTF-8 unless the text has a NUL, and json_write_string round-trips it. */
static void check_string(json_span_t s)
{
	buf_t text = BUF_INIT, again = BUF_INIT, written = BUF_INIT;
	json_span_t root;
	int rc = json_string_decode(s, &text);

	FUZZ_CHECK(rc == 0 || rc == INFERQ_EINVAL, "json_string_decode returned %d", rc);
	FUZZ_CHECK((rc != 0) == (text.len > 0 && memchr(text.data, '\0', text.len) != NULL),
	           "json_string_decode returned %d for %s", rc, fuzz_show(s.start, s.len));
	FUZZ_CHECK(fuzz_utf8_valid(text.data, text.len), "decoded %s is not valid UTF-8",
	           fuzz_show(s.start, s.len));
	if (rc == 0)
		FUZZ_CHECK(json_string_equals(s, text.data ? text.data : ""),
		           "json_string_equals differs from json_string_decode for %s",
		           fuzz_show(s.start, s.len));

	json_write_string(&written, text.data, text.len);
	FUZZ_CHECK(json_validate(written.data, written.len, 0, &root, NULL) == 0 &&
	               root.type == JSON_TYPE_STRING,
	           "json_write_string output %s does not validate",
	           fuzz_show(written.data, written.len));
	json_string_decode(root, &again);
	FUZZ_CHECK(again.len == text.len && memcmp(again.data, text.data, text.len) == 0,
	           "json_write_string does not round-trip %s", fuzz_show(s.start, s.len));
	buf_free(&text);
	buf_free(&again);
	buf_free(&written);
}

static void check_number(json_span_t v)
{
	int64_t i;
	double d;
	int rc_int = json_int64(v, &i), rc_dbl = json_double(v, &d);

	FUZZ_CHECK(rc_int == 0 || rc_int == INFERQ_EINVAL || rc_int == INFERQ_ERANGE,
	           "json_int64 returned %d", rc_int);
	FUZZ_CHECK(rc_dbl == 0 || rc_dbl == INFERQ_ERANGE, "json_double returned %d for %s", rc_dbl,
	           fuzz_show(v.start, v.len));
	if (rc_int == 0) {
		FUZZ_CHECK(memchr(v.start, '.', v.len) == NULL &&
		               memchr(v.start, 'e', v.len) == NULL &&
		               memchr(v.start, 'E', v.len) == NULL,
		           "json_int64 accepted %s", fuzz_show(v.start, v.len));
		FUZZ_CHECK(rc_dbl == 0 && d == (double)i, "json_double %.17g differs from %lld", d,
		           (long long)i);
	}
}

static void walk(json_span_t v, const char *lo, const char *hi, int depth);

static void walk_object(json_span_t v, int depth)
{
	const char *hi = v.start + v.len - 1, *prev_end = v.start + 1;
	buf_t name = BUF_INIT;
	json_iter_t it;
	json_member_t m;
	int checked = 0;

	json_object_begin(&it, v);
	while (json_object_next(&it, &m)) {
		json_span_t found, last = m.value;
		json_iter_t scan;
		json_member_t other;

		FUZZ_CHECK(m.key.type == JSON_TYPE_STRING, "member key has type %d",
		           (int)m.key.type);
		check_span(m.key, prev_end, hi);
		check_span(m.value, m.key.start + m.key.len, hi);
		prev_end = m.value.start + m.value.len;
		check_string(m.key);
		walk(m.value, m.value.start, m.value.start + m.value.len, depth + 1);

		/* json_object_find must return the last member with this decoded key. */
		buf_reset(&name);
		if (checked++ >= FIND_MEMBERS || json_string_decode(m.key, &name) != 0)
			continue;
		scan = it;
		while (json_object_next(&scan, &other))
			if (json_string_equals(other.key, name.data ? name.data : ""))
				last = other.value;
		FUZZ_CHECK(json_object_find(v, name.data ? name.data : "", &found) == 1,
		           "json_object_find misses key %s", fuzz_show(name.data, name.len));
		FUZZ_CHECK(found.start == last.start && found.len == last.len,
		           "json_object_find(%s) is not the last member with that key",
		           fuzz_show(name.data, name.len));
	}
	buf_free(&name);
}

static void walk(json_span_t v, const char *lo, const char *hi, int depth)
{
	json_iter_t it;
	json_span_t e;
	const char *prev_end;

	check_span(v, lo, hi);
	FUZZ_CHECK(depth <= DIFF_DEPTH, "walk deeper than the validated depth");
	switch (v.type) {
	case JSON_TYPE_NULL: FUZZ_CHECK(v.len == 4, "null span of %zu bytes", v.len); break;
	case JSON_TYPE_TRUE: FUZZ_CHECK(v.len == 4, "true span of %zu bytes", v.len); break;
	case JSON_TYPE_FALSE: FUZZ_CHECK(v.len == 5, "false span of %zu bytes", v.len); break;
	case JSON_TYPE_NUMBER: check_number(v); break;
	case JSON_TYPE_STRING: check_string(v); break;
	case JSON_TYPE_ARRAY:
		FUZZ_CHECK(v.start[v.len - 1] == ']', "array span does not end with ]");
		prev_end = v.start + 1;
		json_array_begin(&it, v);
		while (json_array_next(&it, &e)) {
			walk(e, prev_end, v.start + v.len - 1, depth + 1);
			prev_end = e.start + e.len;
		}
		break;
	case JSON_TYPE_OBJECT:
		FUZZ_CHECK(v.start[v.len - 1] == '}', "object span does not end with }");
		walk_object(v, depth);
		break;
	}
}

/* Compares the accepted document with jansson's parse of the same bytes. */
static void compare_with_jansson(const char *p, size_t len, int rc, json_span_t root,
                                 const json_scan_error_t *err)
{
	json_error_t jerr;
	json_t *ref = json_loadb(p, len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
	json_t *ours;
	int beyond = 0;

	if (rc == INFERQ_ELIMIT) {
		/* Deeper than DIFF_DEPTH: jansson's verdict depends on its own limit. */
		json_decref(ref);
		return;
	}
	if (rc != 0) {
		/* jansson 2.14 skips a raw NUL byte right after a number or literal ("6\0",
		 * "[6\0]"); RFC 8259 allows no NUL byte outside a string, nor inside one. */
		FUZZ_CHECK(ref == NULL || memchr(p, '\0', len) != NULL,
		           "json_validate rejects what jansson accepts: %s (%s)", fuzz_show(p, len),
		           err->message);
		json_decref(ref);
		return;
	}
	ours = ref_from_span(root, &beyond);
	if (beyond) {
		FUZZ_CHECK(ref == NULL, "jansson accepts a document marked beyond it: %s",
		           fuzz_show(p, len));
	} else {
		FUZZ_CHECK(ref != NULL, "json_validate accepts what jansson rejects: %s (%s)",
		           fuzz_show(p, len), jerr.text);
		FUZZ_CHECK(json_equal(ours, ref), "decoded values differ from jansson for %s",
		           fuzz_show(p, len));
	}
	json_decref(ours);
	json_decref(ref);
}

/* Any bytes through json_write_string: valid JSON that decodes back when the input was UTF-8. */
static void check_write_string(const char *p, size_t len)
{
	buf_t out = BUF_INIT, back = BUF_INIT;
	json_span_t root;

	json_write_string(&out, p, len);
	FUZZ_CHECK(json_validate(out.data, out.len, 0, &root, NULL) == 0 &&
	               root.type == JSON_TYPE_STRING && root.len == out.len,
	           "json_write_string(%s) is not a valid JSON string", fuzz_show(p, len));
	json_string_decode(root, &back);
	if (fuzz_utf8_valid(p, len))
		FUZZ_CHECK(back.len == len && memcmp(back.data, p, len) == 0,
		           "json_write_string does not round-trip %s", fuzz_show(p, len));
	buf_free(&out);
	buf_free(&back);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* A private copy, so a read one byte past the input is caught by ASan. */
	char *p = malloc(size ? size : 1);
	json_scan_error_t errs[N_DEPTHS];
	json_span_t roots[N_DEPTHS];
	int rcs[N_DEPTHS];

	memcpy(p, data, size);
	doc_start = p;
	doc_end = p + size;
	for (size_t i = 0; i < N_DEPTHS; i++) {
		rcs[i] = json_validate(p, size, depths[i], &roots[i], &errs[i]);
		if (rcs[i] != 0)
			check_error(&errs[i], rcs[i], size);
	}

	/* A negative limit acts as 0; a document valid at one limit is valid at every larger one.
	 */
	FUZZ_CHECK(rcs[0] == rcs[1] && (rcs[0] == 0 || errs[0].offset == errs[1].offset),
	           "limits -1 and 0 differ (%d, %d) for %s", rcs[0], rcs[1], fuzz_show(p, size));
	for (size_t i = 1; i < N_DEPTHS; i++) {
		if (rcs[i - 1] == 0)
			FUZZ_CHECK(rcs[i] == 0 && roots[i].start == roots[i - 1].start &&
			               roots[i].len == roots[i - 1].len,
			           "valid at depth %d but not at %d: %s", depths[i - 1], depths[i],
			           fuzz_show(p, size));
		if (rcs[i] == 0 && rcs[i - 1] != 0)
			FUZZ_CHECK(rcs[i - 1] == INFERQ_ELIMIT,
			           "valid at depth %d but code %d at depth %d: %s", depths[i],
			           rcs[i - 1], depths[i - 1], fuzz_show(p, size));
	}

	if (rcs[N_DEPTHS - 1] == 0) {
		json_span_t root = roots[N_DEPTHS - 1];

		walk(root, p, p + size, 0);
		FUZZ_CHECK(root.start + root.len <= doc_end, "root span past the input");
	}
	compare_with_jansson(p, size, rcs[N_DEPTHS - 1], roots[N_DEPTHS - 1], &errs[N_DEPTHS - 1]);
	check_write_string(p, size);
	free(p);
	return 0;
}
