/*
 * Strict JSON (RFC 8259) scanning over raw bytes, without building a tree.
 *
 * The server keeps `payload`, `outputs` and `info` as the exact bytes a
 * client sent, so integers beyond 64 bits and spellings like 1e400 or 1.0
 * come back unchanged. json_validate() checks a whole document (UTF-8,
 * grammar, nesting depth) and records the span of the root value; the
 * iterators then walk members and elements of an already validated span.
 * Only validated spans may be passed to the functions after json_validate().
 *
 * The writer functions append escaped JSON to a buf_t, and
 * json_merge_patch() applies an RFC 7386 merge patch on raw text, copying
 * untouched members byte for byte.
 *
 * Names avoid those of jansson (json_object_get, JSON_OBJECT, ...): the
 * inferq binary links both, and a shared symbol name would silently send
 * jansson's callers here.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef INFERQ_JSON_H
#define INFERQ_JSON_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"

typedef enum {
	JSON_TYPE_NULL,
	JSON_TYPE_FALSE,
	JSON_TYPE_TRUE,
	JSON_TYPE_NUMBER,
	JSON_TYPE_STRING,
	JSON_TYPE_ARRAY,
	JSON_TYPE_OBJECT,
} json_type_t;

/* A value inside a validated document; strings include their quotes. */
typedef struct {
	const char *start;
	size_t len;
	json_type_t type;
} json_span_t;

typedef struct {
	json_span_t key; /* JSON_TYPE_STRING, quotes included, escapes not decoded */
	json_span_t value;
} json_member_t;

/* Why a document was rejected, for the error message sent to the client. */
typedef struct {
	size_t offset;     /* byte offset of the first offending byte */
	char message[160]; /* e.g. "invalid UTF-8 byte 0xff at offset 12" */
	int too_deep;      /* 1 when the nesting limit was the reason */
} json_scan_error_t;

/*
 * Validates p[0..len) as one JSON value with optional surrounding
 * whitespace, nested at most max_depth arrays/objects deep (a bare scalar
 * is depth 0, "{}" is depth 1; a negative limit acts as 0). Rejects invalid
 * UTF-8 (overlong forms, surrogates encoded in UTF-8, code points above
 * U+10FFFF), unescaped control characters, lone surrogate escapes such as
 * "\ud800", leading zeros, and trailing bytes. Numbers of any size and
 * precision are valid, and so is "\u0000".
 * On success fills *root and returns 0. Otherwise it fills *err (which may
 * be NULL) and returns INFERQ_EINVAL, or INFERQ_ELIMIT with err->too_deep
 * set when the depth limit is the first problem found in the document.
 * err->message is printable ASCII and names err->offset. Allocates only
 * for documents nested deeper than 1024 levels. Any thread.
 */
int json_validate(const char *p, size_t len, int max_depth, json_span_t *root, json_scan_error_t *err);

typedef struct {
	const char *pos; /* next byte to scan */
	const char *end; /* one past the closing bracket */
} json_iter_t;

/* Starts iterating the members of a validated JSON_TYPE_OBJECT span (other types yield none). */
void json_object_begin(json_iter_t *it, json_span_t object);
/* Stores the next member in *out and returns 1, or returns 0 at the end. */
int json_object_next(json_iter_t *it, json_member_t *out);
/* Starts iterating the elements of a validated JSON_TYPE_ARRAY span (other types yield none). */
void json_array_begin(json_iter_t *it, json_span_t array);
/* Stores the next element in *out and returns 1, or returns 0 at the end. */
int json_array_next(json_iter_t *it, json_span_t *out);

/*
 * Finds the member of a validated object whose decoded key equals name
 * (escapes like "\u006dodel" count as "model"). With duplicate keys the
 * last one wins, as in RFC 7386. Returns 1 and fills *value, or 0.
 */
int json_object_find(json_span_t object, const char *name, json_span_t *value);

/* Returns 1 when the decoded key of a validated string span equals name. */
int json_string_equals(json_span_t str, const char *name);

/*
 * Appends the decoded bytes of a validated string span (quotes removed,
 * escapes resolved to UTF-8) to out. Returns 0, or INFERQ_EINVAL when the
 * decoded text contains a NUL byte (callers that need C strings reject it)
 * or when str is not a string. With a NUL, the whole decoded text is still
 * appended, so callers that accept NUL bytes may ignore that code.
 */
int json_string_decode(json_span_t str, buf_t *out);

/*
 * Reads a validated number span as a signed 64-bit integer. Returns 0;
 * INFERQ_EINVAL when it has a fraction or exponent part (even "1.0" or
 * "1e2") or is not a number; INFERQ_ERANGE when it does not fit in
 * int64_t. *out is written only on success.
 */
int json_int64(json_span_t num, int64_t *out);

/*
 * Reads a validated number span as a double (for example "1.5" seconds),
 * rounded by strtod. Returns 0, INFERQ_ERANGE when it is not finite as a
 * double (1e400), or INFERQ_EINVAL when num is not a number. A value too
 * small for a double, such as 1e-400, reads as 0 and is not an error.
 */
int json_double(json_span_t num, double *out);

/*
 * Appends s[0..len) as a JSON string with quotes: '"', '\\' and control
 * characters are escaped, valid UTF-8 is copied, and each byte of an
 * invalid UTF-8 sequence becomes \ufffd, so the output is always valid JSON.
 */
void json_write_string(buf_t *out, const char *s, size_t len);
/* Appends "name": using json_write_string for the name. */
void json_write_key(buf_t *out, const char *name);

/*
 * Applies an RFC 7386 merge patch. target is a validated JSON document, or
 * NULL/0 for an absent target; patch is a validated JSON document; either
 * may have surrounding whitespace. The result (appended to out) keeps
 * untouched members of target as their raw bytes, replaces members present
 * in patch with the patch's raw value, removes members whose patch value is
 * null, and recurses where both sides are objects. An object added where
 * the target had none loses its null members at every level. A non-object
 * patch replaces the target. Output has no whitespace between the tokens
 * it writes; raw values keep theirs. Members keep the target's order, then
 * new members follow in patch order. Keys compare after decoding, and with
 * a duplicate key, in target or patch, only the last member counts: earlier
 * duplicates are dropped from the output. Returns 0, INFERQ_ELIMIT when
 * the result would nest deeper than max_depth, or INFERQ_EINVAL when patch
 * is empty; on error out is left as it was. Any thread.
 */
int json_merge_patch(const char *target, size_t target_len, const char *patch, size_t patch_len,
		     int max_depth, buf_t *out);

#endif
