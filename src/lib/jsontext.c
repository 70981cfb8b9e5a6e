/*
 * JSON as raw text for libinferq. Responses are not handed whole to
 * jansson, because jansson rejects numbers that the server keeps as sent
 * (integers beyond 64 bits, 1e400) inside payload, outputs and info. This
 * scanner checks the grammar and finds member spans; jansson then decodes
 * only the scalar members (strings, integers). The scanner also checks the
 * JSON text a caller passes in, so a payload cannot close the request's
 * object and add fields of its own.
 *
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "internal.h"

#define MAX_DEPTH 512

typedef struct {
	const char *start;
	const char *p;
	const char *end;
	char *message;
	size_t message_size;
} scanner_t;

static int invalid(scanner_t *s, const char *reason)
{
	size_t offset = (size_t)(s->p - s->start);

	if (s->p < s->end)
		snprintf(s->message, s->message_size, "%s at byte %zu (found '%c')", reason, offset,
		         (unsigned char)*s->p >= 0x20 && (unsigned char)*s->p < 0x7f ? *s->p : '?');
	else
		snprintf(s->message, s->message_size, "%s at byte %zu (the text ended)", reason,
		         offset);
	return INFERQ_EINVAL;
}

static void skip_ws(scanner_t *s)
{
	while (s->p < s->end && (*s->p == ' ' || *s->p == '\t' || *s->p == '\n' || *s->p == '\r'))
		s->p++;
}

static int is_hex(char ch)
{
	return (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f') || (ch >= 'A' && ch <= 'F');
}

static int scan_string(scanner_t *s)
{
	s->p++; /* the opening quote */
	while (s->p < s->end) {
		unsigned char ch = (unsigned char)*s->p;

		if (ch == '"') {
			s->p++;
			return 0;
		}
		if (ch < 0x20)
			return invalid(s, "unescaped control character in a string");
		if (ch != '\\') {
			s->p++;
			continue;
		}
		s->p++;
		if (s->p >= s->end)
			break;
		if (*s->p == 'u') {
			for (int i = 1; i <= 4; i++)
				if (s->p + i >= s->end || !is_hex(s->p[i]))
					return invalid(s, "invalid \\u escape");
			s->p += 5;
		} else if (*s->p && strchr("\"\\/bfnrt", *s->p)) {
			s->p++;
		} else {
			return invalid(s, "invalid escape in a string");
		}
	}
	return invalid(s, "unterminated string");
}

static int scan_digits(scanner_t *s)
{
	const char *first = s->p;

	while (s->p < s->end && *s->p >= '0' && *s->p <= '9')
		s->p++;
	return s->p > first ? 0 : invalid(s, "expected a digit");
}

static int scan_number(scanner_t *s)
{
	if (*s->p == '-')
		s->p++;
	if (s->p < s->end && *s->p == '0')
		s->p++;
	else if (scan_digits(s) != 0)
		return INFERQ_EINVAL;
	if (s->p < s->end && *s->p == '.') {
		s->p++;
		if (scan_digits(s) != 0)
			return INFERQ_EINVAL;
	}
	if (s->p < s->end && (*s->p == 'e' || *s->p == 'E')) {
		s->p++;
		if (s->p < s->end && (*s->p == '+' || *s->p == '-'))
			s->p++;
		if (scan_digits(s) != 0)
			return INFERQ_EINVAL;
	}
	return 0;
}

static int scan_literal(scanner_t *s, const char *word)
{
	size_t n = strlen(word);

	if ((size_t)(s->end - s->p) < n || memcmp(s->p, word, n) != 0)
		return invalid(s, "expected a JSON value");
	s->p += n;
	return 0;
}

static int scan_value(scanner_t *s, int depth);

/* Scans an object or array; close is '}' or ']'. */
static int scan_container(scanner_t *s, char close, int depth)
{
	int rc;

	if (depth >= MAX_DEPTH)
		return invalid(s, "nesting deeper than 512 levels");
	s->p++;
	skip_ws(s);
	if (s->p < s->end && *s->p == close) {
		s->p++;
		return 0;
	}
	for (;;) {
		if (close == '}') {
			if (s->p >= s->end || *s->p != '"')
				return invalid(s, "expected a member name in quotes");
			if ((rc = scan_string(s)) != 0)
				return rc;
			skip_ws(s);
			if (s->p >= s->end || *s->p != ':')
				return invalid(s, "expected ':' after a member name");
			s->p++;
			skip_ws(s);
		}
		if ((rc = scan_value(s, depth + 1)) != 0)
			return rc;
		skip_ws(s);
		if (s->p < s->end && *s->p == ',') {
			s->p++;
			skip_ws(s);
			continue;
		}
		if (s->p < s->end && *s->p == close) {
			s->p++;
			return 0;
		}
		return invalid(s, close == '}' ? "expected ',' or '}'" : "expected ',' or ']'");
	}
}

static int scan_value(scanner_t *s, int depth)
{
	if (s->p >= s->end)
		return invalid(s, "expected a JSON value");
	switch (*s->p) {
	case '{': return scan_container(s, '}', depth);
	case '[': return scan_container(s, ']', depth);
	case '"': return scan_string(s);
	case 't': return scan_literal(s, "true");
	case 'f': return scan_literal(s, "false");
	case 'n': return scan_literal(s, "null");
	default:
		if (*s->p == '-' || (*s->p >= '0' && *s->p <= '9'))
			return scan_number(s);
		return invalid(s, "expected a JSON value");
	}
}

int inferq__json_check(const char *p, size_t len, inferq__span_t *root, char *message,
                       size_t message_size)
{
	scanner_t s = {p, p, p + len, message, message_size};
	const char *value;
	int rc;

	skip_ws(&s);
	value = s.p;
	if ((rc = scan_value(&s, 0)) != 0)
		return rc;
	root->p = value;
	root->len = (size_t)(s.p - value);
	skip_ws(&s);
	if (s.p != s.end)
		return invalid(&s, "unexpected text after the JSON value");
	return 0;
}

void inferq__json_members(inferq__member_iter_t *it, inferq__span_t object)
{
	it->pos = object.p + 1;
	it->end = object.p + object.len;
}

/* Scans one value of checked text starting at *pos and stores its span. */
static void next_value(const char **pos, const char *end, inferq__span_t *out)
{
	char message[8];
	scanner_t s = {*pos, *pos, end, message, sizeof(message)};

	scan_value(&s, 0);
	out->p = *pos;
	out->len = (size_t)(s.p - *pos);
	*pos = s.p;
}

int inferq__json_next(inferq__member_iter_t *it, inferq__span_t *key, inferq__span_t *value)
{
	scanner_t s = {it->pos, it->pos, it->end, NULL, 0};

	skip_ws(&s);
	if (s.p < s.end && *s.p == ',')
		s.p++;
	skip_ws(&s);
	if (s.p >= s.end || *s.p != '"') {
		it->pos = it->end;
		return INFERQ_ENOTFOUND;
	}
	next_value(&s.p, s.end, key);
	skip_ws(&s);
	s.p++; /* ':' */
	skip_ws(&s);
	next_value(&s.p, s.end, value);
	it->pos = s.p;
	return 0;
}

int inferq__json_next_element(inferq__member_iter_t *it, inferq__span_t *value)
{
	scanner_t s = {it->pos, it->pos, it->end, NULL, 0};

	skip_ws(&s);
	if (s.p < s.end && *s.p == ',')
		s.p++;
	skip_ws(&s);
	if (s.p >= s.end || *s.p == ']') {
		it->pos = it->end;
		return INFERQ_ENOTFOUND;
	}
	next_value(&s.p, s.end, value);
	it->pos = s.p;
	return 0;
}

int inferq__json_key_is(inferq__span_t key, const char *name)
{
	size_t n = strlen(name);

	if (key.len == n + 2 && memcmp(key.p + 1, name, n) == 0)
		return 0;
	return INFERQ_ENOTFOUND;
}

int inferq__json_get(inferq__span_t object, const char *name, inferq__span_t *value)
{
	inferq__member_iter_t it;
	inferq__span_t key, v;
	int found = INFERQ_ENOTFOUND;

	/* The last of duplicate names wins, as in RFC 7386. */
	inferq__json_members(&it, object);
	while (inferq__json_next(&it, &key, &v) == 0) {
		if (inferq__json_key_is(key, name) == 0) {
			*value = v;
			found = 0;
		}
	}
	return found;
}

int inferq__json_string(inferq__span_t str, char **out)
{
	json_error_t err;
	json_t *v;
	int rc = 0;

	*out = NULL;
	if (str.len < 2 || str.p[0] != '"')
		return INFERQ_EPROTO;
	v = json_loadb(str.p, str.len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &err);
	if (!v)
		return json_error_code(&err) == json_error_out_of_memory ? INFERQ_ENOMEM
		                                                         : INFERQ_EPROTO;
	if (!json_is_string(v)) {
		rc = INFERQ_EPROTO;
		goto out;
	}

	/* A decoded "\u0000" ends the C string early; the server rejects it in text fields. */
	*out = inferq__strndup(json_string_value(v), strlen(json_string_value(v)));
	if (!*out)
		rc = INFERQ_ENOMEM;
out:
	json_decref(v);
	return rc;
}

int inferq__json_int(inferq__span_t num, int64_t *out)
{
	char text[32];
	char *end;
	long long v;

	if (num.len == 0 || num.len >= sizeof(text))
		return INFERQ_EPROTO;
	memcpy(text, num.p, num.len);
	text[num.len] = '\0';
	if (strspn(text, "-0123456789") != num.len)
		return INFERQ_EPROTO;
	errno = 0;
	v = strtoll(text, &end, 10);
	if (*end != '\0' || errno == ERANGE)
		return INFERQ_EPROTO;
	*out = v;
	return 0;
}
