/*
 * Strict JSON scanning, span iteration, an escaping writer and RFC 7386
 * merge patch, all over raw bytes (see json.h).
 *
 * json_validate() is the only function that checks input: it is a single
 * pass without recursion, and it allocates only for documents nested more
 * than 1024 levels deep. Every other function trusts that its spans come
 * from a validated document, so it never re-checks grammar and never reads
 * outside the span. Bodies up to the 10 MiB request limit are the expected
 * size.
 *
 * SPDX-License-Identifier: MIT
 */
#include "json.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "inferq_error.h"

#define ONES  0x0101010101010101ULL
#define HIGHS 0x8080808080808080ULL

/* Levels whose container kind fits in the scanner itself (64 bits a word). */
#define LOCAL_DEPTH_WORDS 16

typedef struct {
	const unsigned char *begin; /* first byte of the document */
	const unsigned char *end;   /* one past the last byte */
	json_scan_error_t *err;          /* may be NULL */
	int max_depth;
	int depth;                         /* arrays and objects open at the cursor */
	uint64_t *kinds;                   /* bit d set when level d + 1 is an object */
	size_t kinds_words;                /* capacity of kinds, in 64-bit words */
	uint64_t local[LOCAL_DEPTH_WORDS]; /* kinds storage before any allocation */
} scanner_t;

/* ---- character classes ---- */

static int is_ws(unsigned char c)
{
	return c == ' ' || c == '\n' || c == '\r' || c == '\t';
}

static int is_digit(unsigned char c)
{
	return c >= '0' && c <= '9';
}

static int hex_value(unsigned char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Reads the 4 hex digits at p, which a validated string guarantees. */
static unsigned hex4(const unsigned char *p)
{
	return (unsigned)(hex_value(p[0]) << 12 | hex_value(p[1]) << 8 | hex_value(p[2]) << 4 |
	                  hex_value(p[3]));
}

/*
 * Returns a mask with the high bit set in each byte of v that is a quote,
 * a backslash, a control byte or non-ASCII, or 0 when there is none. Bits
 * above the lowest one may be spurious (borrows), but the lowest is exact.
 */
static uint64_t special_bytes(uint64_t v)
{
	uint64_t below_space = (v - ONES * 0x20) & ~v & HIGHS;
	uint64_t quote = v ^ (ONES * '"');
	uint64_t backslash = v ^ (ONES * '\\');

	quote = (quote - ONES) & ~quote & HIGHS;
	backslash = (backslash - ONES) & ~backslash & HIGHS;
	return (v & HIGHS) | below_space | quote | backslash;
}

static int byte_is_plain(unsigned char c)
{
	return c >= 0x20 && c < 0x80 && c != '"' && c != '\\';
}

/* Skips printable ASCII other than '"' and '\\', eight bytes at a time where possible. */
static const unsigned char *skip_plain_ascii(const unsigned char *p, const unsigned char *end)
{
	uint64_t v, special;

	while (end - p >= 8) {
		memcpy(&v, p, sizeof(v));
		special = special_bytes(v);
		if (special) {
#if defined(__GNUC__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
			/* The lowest set bit marks the first special byte in memory order. */
			return p + (__builtin_ctzll(special) >> 3);
#else
			break;
#endif
		}
		p += 8;
	}
	while (p < end && byte_is_plain(*p))
		p++;
	return p;
}

static const unsigned char *skip_ws(const unsigned char *p, const unsigned char *end)
{
	while (p < end && is_ws(*p))
		p++;
	return p;
}

/*
 * Checks the UTF-8 sequence at p, whose first byte is 0x80 or above, by the
 * table of well-formed sequences in Unicode chapter 3. Returns its length
 * (2 to 4), or 0 when it is invalid, with *bad set to the index of the
 * first byte that breaks it and *why to the reason.
 */
static size_t utf8_sequence(const unsigned char *p, const unsigned char *end, size_t *bad,
                            const char **why)
{
	unsigned char c = p[0], lo = 0x80, hi = 0xbf;
	size_t n;

	*bad = 0;
	if (c < 0xc0) {
		*why = "continuation byte without a lead byte";
		return 0;
	}
	if (c < 0xc2) {
		*why = "overlong encoding";
		return 0;
	}
	if (c < 0xe0) {
		n = 2;
	} else if (c < 0xf0) {
		n = 3;
		lo = c == 0xe0 ? 0xa0 : 0x80;
		hi = c == 0xed ? 0x9f : 0xbf;
	} else if (c < 0xf5) {
		n = 4;
		lo = c == 0xf0 ? 0x90 : 0x80;
		hi = c == 0xf4 ? 0x8f : 0xbf;
	} else {
		*why = "byte never used in UTF-8";
		return 0;
	}

	for (size_t i = 1; i < n; i++) {
		unsigned char b;

		*bad = i;
		if (p + i == end) {
			*why = "sequence truncated by the end of input";
			return 0;
		}
		b = p[i];
		if (b < 0x80 || b > 0xbf) {
			*why = "expected a continuation byte (0x80-0xbf)";
			return 0;
		}
		if (i == 1 && (b < lo || b > hi)) {
			if (c == 0xed)
				*why = "UTF-16 surrogate (U+D800-U+DFFF) encoded in UTF-8";
			else if (c == 0xf4)
				*why = "code point above U+10FFFF";
			else
				*why = "overlong encoding";
			return 0;
		}
	}
	return n;
}

/*
 * Skips plain ASCII and well-formed UTF-8 sequences that end before end,
 * without recording why it stops; utf8_sequence() explains the stop.
 */
static const unsigned char *skip_text(const unsigned char *p, const unsigned char *end)
{
	for (;;) {
		p = skip_plain_ascii(p, end);

		/* Non-ASCII text goes sequence after sequence, without the 8-byte test. */
		while (end - p >= 4 && *p >= 0x80) {
			unsigned char c = p[0], lo, hi;

			if (c >= 0xc2 && c <= 0xdf) {
				if ((p[1] & 0xc0) != 0x80)
					return p;
				p += 2;
			} else if (c >= 0xe0 && c <= 0xef) {
				lo = c == 0xe0 ? 0xa0 : 0x80;
				hi = c == 0xed ? 0x9f : 0xbf;
				if (p[1] < lo || p[1] > hi || (p[2] & 0xc0) != 0x80)
					return p;
				p += 3;
			} else if (c >= 0xf0 && c <= 0xf4) {
				lo = c == 0xf0 ? 0x90 : 0x80;
				hi = c == 0xf4 ? 0x8f : 0xbf;
				if (p[1] < lo || p[1] > hi || (p[2] & 0xc0) != 0x80 ||
				    (p[3] & 0xc0) != 0x80)
					return p;
				p += 4;
			} else {
				return p;
			}
		}
		if (p == end || !byte_is_plain(*p))
			return p;
	}
}

/* ---- scanner errors ---- */

static size_t offset_of(const scanner_t *s, const unsigned char *at)
{
	return (size_t)(at - s->begin);
}

/* Records a message whose format contains the offset of at as its only %zu. */
__attribute__((format(printf, 3, 4), cold, noinline)) static int
fail(scanner_t *s, const unsigned char *at, const char *fmt, ...)
{
	va_list ap;

	if (s->err) {
		s->err->offset = offset_of(s, at);
		s->err->too_deep = 0;
		va_start(ap, fmt);
		vsnprintf(s->err->message, sizeof(s->err->message), fmt, ap);
		va_end(ap);
	}
	return INFERQ_EINVAL;
}

/* Names byte c for a message: "character 'x'" or, when not plainly printable, "byte 0xNN". */
static const char *describe_byte(char *buf, size_t size, unsigned char c)
{
	if (c > 0x20 && c < 0x7f && c != '\'' && c != '"' && c != '\\')
		snprintf(buf, size, "character '%c'", c);
	else
		snprintf(buf, size, "byte 0x%02x", c);
	return buf;
}

/* Describes the byte at p, or the end of input when p is the end. */
static const char *describe_at(const scanner_t *s, const unsigned char *p, char *buf, size_t size)
{
	if (p == s->end)
		return "the end of input";
	return describe_byte(buf, size, *p);
}

__attribute__((cold, noinline)) static int fail_unexpected(scanner_t *s, const unsigned char *p,
                                                           const char *expected)
{
	char what[24];

	if (p == s->end) {
		const char *open = "expected a JSON value";

		if (s->depth > 0)
			open = s->kinds[(s->depth - 1) / 64] >> ((s->depth - 1) % 64) & 1
			           ? "object not closed"
			           : "array not closed";
		return fail(s, p, "unexpected end of input at offset %zu: %s", offset_of(s, p),
		            open);
	}
	if (p == s->begin && s->end - p >= 3 && memcmp(p, "\xef\xbb\xbf", 3) == 0)
		return fail(
		    s, p,
		    "unexpected byte 0xef at offset %zu: a byte order mark (0xef 0xbb 0xbf) is "
		    "not allowed before JSON text",
		    offset_of(s, p));
	return fail(s, p, "unexpected %s at offset %zu: %s", describe_byte(what, sizeof(what), *p),
	            offset_of(s, p), expected);
}

__attribute__((cold, noinline)) static int fail_utf8(scanner_t *s, const unsigned char *p,
                                                     size_t bad, const char *why)
{
	char bytes[24] = "";
	size_t used = 0, shown;

	if (bad == 0)
		return fail(s, p, "invalid UTF-8 byte 0x%02x at offset %zu: %s", *p,
		            offset_of(s, p), why);

	/* List the bytes read so far, up to and including the one that breaks the sequence. */
	shown = p + bad == s->end ? bad : bad + 1;
	for (size_t i = 0; i < shown; i++)
		used += (size_t)snprintf(bytes + used, sizeof(bytes) - used, "%s0x%02x",
		                         i ? " " : "", p[i]);
	return fail(s, p, "invalid UTF-8 sequence %s at offset %zu: %s", bytes, offset_of(s, p),
	            why);
}

/* ---- scanner: strings ---- */

/*
 * The scan_* functions below take the position of a token and return the
 * byte after it, or NULL after recording the error with fail(). Returning
 * the position, not storing it through a pointer, keeps it in a register.
 */

/* Scans the \u escape whose backslash is at p, and the low surrogate escape after a high one. */
static const unsigned char *scan_unicode_escape(scanner_t *s, const unsigned char *p,
                                                const unsigned char *quote)
{
	const unsigned char *end = s->end;
	char what[24];
	unsigned cp;

	for (int i = 2; i < 6; i++) {
		if (p + i == end) {
			fail(s, p + i,
			     "unexpected end of input at offset %zu: string starting at offset %zu "
			     "not closed",
			     offset_of(s, p + i), offset_of(s, quote));
			return NULL;
		}
		if (hex_value(p[i]) < 0) {
			fail(s, p + i,
			     "invalid \\u escape at offset %zu: expected 4 hex digits, found %s",
			     offset_of(s, p + i), describe_byte(what, sizeof(what), p[i]));
			return NULL;
		}
	}
	cp = hex4(p + 2);
	if (cp >= 0xdc00 && cp <= 0xdfff) {
		fail(s, p,
		     "lone surrogate escape \\u%.4s at offset %zu: a low surrogate "
		     "(\\udc00-\\udfff) must follow a high surrogate escape (\\ud800-\\udbff)",
		     (const char *)p + 2, offset_of(s, p));
		return NULL;
	}
	if (cp >= 0xd800 && cp <= 0xdbff) {
		const unsigned char *q = p + 6;

		if (end - q < 6 || q[0] != '\\' || q[1] != 'u' || hex_value(q[2]) < 0 ||
		    hex_value(q[3]) < 0 || hex_value(q[4]) < 0 || hex_value(q[5]) < 0 ||
		    hex4(q + 2) < 0xdc00 || hex4(q + 2) > 0xdfff) {
			fail(s, p,
			     "lone surrogate escape \\u%.4s at offset %zu: a high surrogate "
			     "(\\ud800-\\udbff) must be followed by a low surrogate escape "
			     "(\\udc00-\\udfff)",
			     (const char *)p + 2, offset_of(s, p));
			return NULL;
		}
		p += 6;
	}
	return p + 6;
}

static const unsigned char *scan_escape(scanner_t *s, const unsigned char *p,
                                        const unsigned char *quote)
{
	char what[24];

	if (p + 1 == s->end) {
		fail(s, p + 1,
		     "unexpected end of input at offset %zu: string starting at offset %zu not "
		     "closed",
		     offset_of(s, p + 1), offset_of(s, quote));
		return NULL;
	}
	switch (p[1]) {
	case '"':
	case '\\':
	case '/':
	case 'b':
	case 'f':
	case 'n':
	case 'r':
	case 't': return p + 2;
	case 'u': return scan_unicode_escape(s, p, quote);
	default:
		fail(s, p,
		     "invalid escape sequence at offset %zu: %s after '\\' "
		     "(valid escapes: \\\" \\\\ \\/ \\b \\f \\n \\r \\t \\uXXXX)",
		     offset_of(s, p), describe_byte(what, sizeof(what), p[1]));
		return NULL;
	}
}

/* Scans the string whose opening quote is at quote. */
static const unsigned char *scan_string(scanner_t *s, const unsigned char *quote)
{
	const unsigned char *p = quote + 1, *end = s->end;
	const char *why;
	size_t n, bad;

	for (;;) {
		p = skip_text(p, end);
		if (p == end) {
			fail(s, p,
			     "unexpected end of input at offset %zu: string starting at offset %zu "
			     "not closed",
			     offset_of(s, p), offset_of(s, quote));
			return NULL;
		}
		if (*p == '"')
			return p + 1;
		if (*p == '\\') {
			p = scan_escape(s, p, quote);
			if (!p)
				return NULL;
		} else if (*p < 0x20) {
			fail(s, p,
			     "unescaped control character 0x%02x at offset %zu: control characters "
			     "in strings must be written as escapes such as \\u%04x",
			     *p, offset_of(s, p), *p);
			return NULL;
		} else {
			n = utf8_sequence(p, end, &bad, &why);
			if (n == 0) {
				fail_utf8(s, p, bad, why);
				return NULL;
			}
			p += n;
		}
	}
}

/* ---- scanner: numbers and literals ---- */

static const unsigned char *skip_digits(const unsigned char *p, const unsigned char *end)
{
	while (p < end && is_digit(*p))
		p++;
	return p;
}

__attribute__((cold, noinline)) static const unsigned char *
fail_number(scanner_t *s, const unsigned char *p, const char *expected)
{
	char what[24];

	fail(s, p, "invalid number at offset %zu: expected %s, found %s", offset_of(s, p), expected,
	     describe_at(s, p, what, sizeof(what)));
	return NULL;
}

/* Scans -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? at p. */
static const unsigned char *scan_number(scanner_t *s, const unsigned char *p)
{
	const unsigned char *end = s->end;

	if (*p == '-')
		p++;
	if (p == end || !is_digit(*p))
		return fail_number(s, p, "a digit after '-'");
	if (*p == '0') {
		p++;
		if (p < end && is_digit(*p)) {
			fail(s, p - 1,
			     "invalid number at offset %zu: a leading zero must not be followed by "
			     "digits",
			     offset_of(s, p - 1));
			return NULL;
		}
	} else {
		p = skip_digits(p, end);
	}

	if (p < end && *p == '.') {
		p++;
		if (p == end || !is_digit(*p))
			return fail_number(s, p, "a digit after the decimal point");
		p = skip_digits(p, end);
	}

	if (p < end && (*p == 'e' || *p == 'E')) {
		p++;
		if (p < end && (*p == '+' || *p == '-'))
			p++;
		if (p == end || !is_digit(*p))
			return fail_number(s, p, "a digit in the exponent");
		p = skip_digits(p, end);
	}
	return p;
}

static const unsigned char *scan_literal(scanner_t *s, const unsigned char *p, const char *word,
                                         size_t n)
{
	if ((size_t)(s->end - p) < n || memcmp(p, word, n) != 0) {
		fail(s, p, "invalid literal at offset %zu: expected %s", offset_of(s, p), word);
		return NULL;
	}
	return p + n;
}

/* Scans the scalar at p, anything but an array or object. */
static const unsigned char *scan_scalar(scanner_t *s, const unsigned char *p)
{
	switch (*p) {
	case '"': return scan_string(s, p);
	case 't': return scan_literal(s, p, "true", 4);
	case 'f': return scan_literal(s, p, "false", 5);
	case 'n': return scan_literal(s, p, "null", 4);
	case '-':
	case '0':
	case '1':
	case '2':
	case '3':
	case '4':
	case '5':
	case '6':
	case '7':
	case '8':
	case '9': return scan_number(s, p);
	default: fail_unexpected(s, p, "expected a JSON value"); return NULL;
	}
}

/* ---- scanner: nesting ---- */

static int top_is_object(const scanner_t *s)
{
	int level = s->depth - 1;

	return (int)(s->kinds[level / 64] >> (level % 64) & 1);
}

/* Opens an array or object at p, growing the kind stack past the local words when needed. */
static int push(scanner_t *s, const unsigned char *p, int is_object)
{
	int level = s->depth;
	uint64_t bit;

	if (level >= s->max_depth) {
		fail(s, p, "nesting depth exceeds the limit of %d at offset %zu", s->max_depth,
		     offset_of(s, p));
		if (s->err)
			s->err->too_deep = 1;
		return INFERQ_ELIMIT;
	}
	if ((size_t)level / 64 >= s->kinds_words) {
		size_t words = s->kinds_words * 2;

		if (s->kinds == s->local) {
			s->kinds = xmalloc(words * sizeof(uint64_t));
			memcpy(s->kinds, s->local, sizeof(s->local));
		} else {
			s->kinds = xrealloc(s->kinds, words * sizeof(uint64_t));
		}
		s->kinds_words = words;
	}
	bit = (uint64_t)1 << (level % 64);
	if (is_object)
		s->kinds[level / 64] |= bit;
	else
		s->kinds[level / 64] &= ~bit;
	s->depth++;
	return 0;
}

static json_type_t type_of(unsigned char c)
{
	switch (c) {
	case '{': return JSON_TYPE_OBJECT;
	case '[': return JSON_TYPE_ARRAY;
	case '"': return JSON_TYPE_STRING;
	case 't': return JSON_TYPE_TRUE;
	case 'f': return JSON_TYPE_FALSE;
	case 'n': return JSON_TYPE_NULL;
	default: return JSON_TYPE_NUMBER;
	}
}

/* Closes the innermost array or object and returns the kind of the one around it. */
static int pop(scanner_t *s)
{
	s->depth--;
	return s->depth > 0 && top_is_object(s);
}

/*
 * Scans one value and everything nested in it, without recursion: the
 * labels are the scanner's states, s->kinds is its stack, and in_object
 * caches the kind of the innermost open container. Returns 0 and stores
 * the byte after the value in *after, or returns the error code.
 */
static int scan_value(scanner_t *s, const unsigned char *p, const unsigned char **after)
{
	const unsigned char *end = s->end;
	int in_object = 0, rc;

value:
	if (p == end)
		return fail_unexpected(s, p, "");
	if (*p == '{' || *p == '[') {
		in_object = *p == '{';
		rc = push(s, p, in_object);
		if (rc)
			return rc;
		p = skip_ws(p + 1, end);
		if (p < end && *p == (in_object ? '}' : ']')) {
			in_object = pop(s);
			p++;
			goto next;
		}
		if (in_object)
			goto member;
		goto value;
	}
	p = scan_scalar(s, p);
	if (!p)
		return INFERQ_EINVAL;

next:
	if (s->depth == 0) {
		*after = p;
		return 0;
	}
	p = skip_ws(p, end);
	if (p < end && *p == ',') {
		p = skip_ws(p + 1, end);
		if (in_object)
			goto member;
		goto value;
	}
	if (p < end && *p == (in_object ? '}' : ']')) {
		in_object = pop(s);
		p++;
		goto next;
	}
	return fail_unexpected(s, p,
	                       in_object ? "expected ',' or '}' after an object member"
	                                 : "expected ',' or ']' after an array element");

member:
	if (p == end || *p != '"')
		return fail_unexpected(s, p, "expected a string as the member name");
	p = scan_string(s, p);
	if (!p)
		return INFERQ_EINVAL;
	p = skip_ws(p, end);
	if (p == end || *p != ':')
		return fail_unexpected(s, p, "expected ':' after the member name");
	p = skip_ws(p + 1, end);
	goto value;
}

int json_validate(const char *p, size_t len, int max_depth, json_span_t *root, json_scan_error_t *err)
{
	scanner_t s;
	const unsigned char *first, *cur = NULL;
	int rc;

	s.begin = (const unsigned char *)(len ? p : "");
	s.end = s.begin + len;
	s.err = err;
	s.max_depth = max_depth > 0 ? max_depth : 0;
	s.depth = 0;
	s.kinds = s.local;
	s.kinds_words = LOCAL_DEPTH_WORDS;

	first = skip_ws(s.begin, s.end);
	rc = scan_value(&s, first, &cur);
	if (rc)
		goto out;

	root->start = (const char *)first;
	root->len = (size_t)(cur - first);
	root->type = type_of(*first);

	cur = skip_ws(cur, s.end);
	if (cur != s.end)
		rc = fail_unexpected(&s, cur, "expected the end of input after the JSON value");
out:
	if (s.kinds != s.local)
		free(s.kinds);
	return rc;
}

/* ---- skipping within validated spans ---- */

/* Returns the byte after the closing quote of the validated string opening at p. */
static const char *skip_string(const char *p, const char *end)
{
	const char *q = p + 1;

	for (;;) {
		const char *b;
		size_t backslashes = 0;

		q = memchr(q, '"', (size_t)(end - q));
		/* The quote is escaped when an odd run of backslashes precedes it. */
		for (b = q - 1; *b == '\\'; b--)
			backslashes++;
		if (backslashes % 2 == 0)
			return q + 1;
		q++;
	}
}

static const char *skip_container(const char *p, const char *end)
{
	int depth = 0;

	for (;;) {
		char c = *p;

		if (c == '"') {
			p = skip_string(p, end);
			continue;
		}
		if (c == '{' || c == '[') {
			depth++;
		} else if (c == '}' || c == ']') {
			if (--depth == 0)
				return p + 1;
		}
		p++;
	}
}

/* Returns the byte after the validated value starting at p. */
static const char *skip_value(const char *p, const char *end)
{
	switch (*p) {
	case '"': return skip_string(p, end);
	case '{':
	case '[': return skip_container(p, end);
	case 't':
	case 'n': return p + 4;
	case 'f': return p + 5;
	default:
		while (p < end && (is_digit((unsigned char)*p) || *p == '-' || *p == '+' ||
		                   *p == '.' || *p == 'e' || *p == 'E'))
			p++;
		return p;
	}
}

static const char *skip_ws_chars(const char *p, const char *end)
{
	return (const char *)skip_ws((const unsigned char *)p, (const unsigned char *)end);
}

static json_span_t span_at(const char *p, const char *end)
{
	json_span_t v;
	const char *after = skip_value(p, end);

	v.start = p;
	v.len = (size_t)(after - p);
	v.type = type_of((unsigned char)*p);
	return v;
}

/* ---- iterators ---- */

static void iter_init(json_iter_t *it, json_span_t span, json_type_t type)
{
	if (span.type != type || span.len < 2) {
		it->pos = span.start;
		it->end = span.start;
		return;
	}
	it->pos = span.start + 1;
	it->end = span.start + span.len;
}

/* Moves past the separator before the next item; returns 0 at the closing bracket. */
static int iter_advance(json_iter_t *it)
{
	const char *p;

	if (it->pos >= it->end)
		return 0;
	p = skip_ws_chars(it->pos, it->end);
	if (*p == ',')
		p = skip_ws_chars(p + 1, it->end);
	if (*p == '}' || *p == ']') {
		it->pos = it->end;
		return 0;
	}
	it->pos = p;
	return 1;
}

void json_object_begin(json_iter_t *it, json_span_t object)
{
	iter_init(it, object, JSON_TYPE_OBJECT);
}

int json_object_next(json_iter_t *it, json_member_t *out)
{
	const char *p;

	if (!iter_advance(it))
		return 0;
	out->key = span_at(it->pos, it->end);
	p = skip_ws_chars(it->pos + out->key.len, it->end);
	p = skip_ws_chars(p + 1, it->end); /* past ':' */
	out->value = span_at(p, it->end);
	it->pos = p + out->value.len;
	return 1;
}

void json_array_begin(json_iter_t *it, json_span_t array)
{
	iter_init(it, array, JSON_TYPE_ARRAY);
}

int json_array_next(json_iter_t *it, json_span_t *out)
{
	if (!iter_advance(it))
		return 0;
	*out = span_at(it->pos, it->end);
	it->pos += out->len;
	return 1;
}

/* ---- string decoding ---- */

static size_t utf8_encode(unsigned cp, char *out)
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

/*
 * Decodes the validated escape whose backslash is at p into out (up to 4
 * bytes), stores the byte count in *n and returns the byte after the escape.
 */
static const char *decode_escape(const char *p, char *out, size_t *n)
{
	const unsigned char *u = (const unsigned char *)p;
	unsigned cp;

	*n = 1;
	switch (p[1]) {
	case 'b': out[0] = '\b'; return p + 2;
	case 'f': out[0] = '\f'; return p + 2;
	case 'n': out[0] = '\n'; return p + 2;
	case 'r': out[0] = '\r'; return p + 2;
	case 't': out[0] = '\t'; return p + 2;
	case 'u': break;
	default: out[0] = p[1]; return p + 2;
	}

	cp = hex4(u + 2);
	p += 6;
	if (cp >= 0xd800 && cp <= 0xdbff) {
		/* Validation guarantees the low surrogate escape follows. */
		cp = 0x10000 + ((cp - 0xd800) << 10) + (hex4(u + 8) - 0xdc00);
		p += 6;
	}
	*n = utf8_encode(cp, out);
	return p;
}

int json_string_decode(json_span_t str, buf_t *out)
{
	const char *p, *end;
	int has_nul = 0;

	if (str.type != JSON_TYPE_STRING || str.len < 2)
		return INFERQ_EINVAL;
	p = str.start + 1;
	end = str.start + str.len - 1;
	buf_reserve(out, str.len);

	while (p < end) {
		const char *backslash = memchr(p, '\\', (size_t)(end - p));
		char decoded[4];
		size_t n;

		if (!backslash) {
			buf_append(out, p, (size_t)(end - p));
			break;
		}
		buf_append(out, p, (size_t)(backslash - p));
		p = decode_escape(backslash, decoded, &n);
		if (n == 1 && decoded[0] == '\0')
			has_nul = 1;
		buf_append(out, decoded, n);
	}
	return has_nul ? INFERQ_EINVAL : 0;
}

int json_string_equals(json_span_t str, const char *name)
{
	const char *p, *end, *q = name, *qend = name + strlen(name);

	if (str.type != JSON_TYPE_STRING || str.len < 2)
		return 0;
	p = str.start + 1;
	end = str.start + str.len - 1;

	while (p < end) {
		const char *backslash = memchr(p, '\\', (size_t)(end - p));
		const char *run_end = backslash ? backslash : end;
		size_t run = (size_t)(run_end - p), n;
		char decoded[4];

		if (run > (size_t)(qend - q) || memcmp(p, q, run) != 0)
			return 0;
		q += run;
		if (!backslash)
			break;
		p = decode_escape(backslash, decoded, &n);
		if (n > (size_t)(qend - q) || memcmp(decoded, q, n) != 0)
			return 0;
		q += n;
	}
	return q == qend;
}

int json_object_find(json_span_t object, const char *name, json_span_t *value)
{
	json_iter_t it;
	json_member_t m;
	int found = 0;

	json_object_begin(&it, object);
	while (json_object_next(&it, &m)) {
		if (json_string_equals(m.key, name)) {
			*value = m.value;
			found = 1;
		}
	}
	return found;
}

/* ---- numbers ---- */

int json_int64(json_span_t num, int64_t *out)
{
	const char *p = num.start, *end = num.start + num.len;
	uint64_t limit = INT64_MAX, magnitude = 0;
	int negative = 0;

	if (num.type != JSON_TYPE_NUMBER || num.len == 0)
		return INFERQ_EINVAL;
	for (const char *c = p; c < end; c++) {
		if (*c == '.' || *c == 'e' || *c == 'E')
			return INFERQ_EINVAL;
	}
	if (*p == '-') {
		negative = 1;
		limit = (uint64_t)INT64_MAX + 1;
		p++;
	}

	for (; p < end; p++) {
		unsigned digit = (unsigned)(*p - '0');

		if (magnitude > (limit - digit) / 10)
			return INFERQ_ERANGE;
		magnitude = magnitude * 10 + digit;
	}

	if (!negative)
		*out = (int64_t)magnitude;
	else if (magnitude == (uint64_t)INT64_MAX + 1)
		*out = INT64_MIN;
	else
		*out = -(int64_t)magnitude;
	return 0;
}

int json_double(json_span_t num, double *out)
{
	char local[64], *text = local;
	double v;

	if (num.type != JSON_TYPE_NUMBER || num.len == 0)
		return INFERQ_EINVAL;

	/* strtod needs a terminated copy: the span may end at the last byte of the buffer. */
	if (num.len >= sizeof(local))
		text = xmalloc(num.len + 1);
	memcpy(text, num.start, num.len);
	text[num.len] = '\0';
	/* NOTE: strtod follows LC_NUMERIC; inferq never calls setlocale, so '.' is the point. */
	v = strtod(text, NULL);
	if (text != local)
		free(text);

	if (!isfinite(v))
		return INFERQ_ERANGE;
	*out = v;
	return 0;
}

/* ---- writer ---- */

/* Input bytes escaped per buffer reservation: bounds the slack reserved for escapes. */
#define WRITE_BLOCK 4096

/* Writes the escape for byte c at w, which has room for 6 bytes; returns the end. */
static char *put_escape(char *w, unsigned char c)
{
	static const char hex[] = "0123456789abcdef";
	char letter = 0;

	switch (c) {
	case '"': letter = '"'; break;
	case '\\': letter = '\\'; break;
	case '\b': letter = 'b'; break;
	case '\f': letter = 'f'; break;
	case '\n': letter = 'n'; break;
	case '\r': letter = 'r'; break;
	case '\t': letter = 't'; break;
	default: break;
	}
	if (letter) {
		w[0] = '\\';
		w[1] = letter;
		return w + 2;
	}
	if (c >= 0x80) {
		memcpy(w, "\\ufffd", 6); /* one byte of an invalid UTF-8 sequence */
		return w + 6;
	}
	memcpy(w, "\\u00", 4);
	w[4] = hex[c >> 4];
	w[5] = hex[c & 0xf];
	return w + 6;
}

/*
 * Escapes the input bytes from p up to stop into out, which has room for 6
 * output bytes per input byte. A UTF-8 sequence that starts before stop is
 * checked against end and copied whole, so it may run up to 3 bytes past
 * stop. Returns where it stopped reading.
 */
static const unsigned char *write_block(buf_t *out, const unsigned char *p,
                                        const unsigned char *stop, const unsigned char *end)
{
	char *w = out->data + out->len;
	const char *why;
	size_t n, bad;

	while (p < stop) {
		const unsigned char *run = p;

		p = skip_text(p, stop);
		memcpy(w, run, (size_t)(p - run));
		w += p - run;
		if (p >= stop)
			break;
		if (*p >= 0x80 && (n = utf8_sequence(p, end, &bad, &why)) != 0) {
			memcpy(w, p, n);
			w += n;
			p += n;
			continue;
		}
		w = put_escape(w, *p);
		p++;
	}
	out->len = (size_t)(w - out->data);
	return p;
}

void json_write_string(buf_t *out, const char *s, size_t len)
{
	const unsigned char *p = (const unsigned char *)s, *end = p + len;

	buf_putc(out, '"');
	while (p < end) {
		size_t block = (size_t)(end - p) < WRITE_BLOCK ? (size_t)(end - p) : WRITE_BLOCK;

		buf_reserve(out, (block + 3) * 6);
		p = write_block(out, p, p + block, end);
	}
	buf_putc(out, '"'); /* also restores the terminating NUL */
}

void json_write_key(buf_t *out, const char *name)
{
	json_write_string(out, name, strlen(name));
	buf_putc(out, ':');
}

/* ---- merge patch ---- */

typedef struct member_entry {
	json_member_t m;
	const char *key; /* decoded key, key_len bytes, may contain NUL */
	size_t key_len;
	size_t key_offset;          /* where the decoded key starts in the scratch buffer */
	int decoded;                /* 1 when key points into the scratch buffer */
	size_t index;               /* position in the object */
	int superseded;             /* a later member has the same key */
	struct member_entry *match; /* target entries: the patch member with the same key */
	int matched;                /* patch entries: the target has the same key */
} member_entry_t;

typedef struct {
	member_entry_t *items;   /* in document order */
	member_entry_t **sorted; /* by key, then by index */
	size_t count;
} member_table_t;

/* Nesting depth of a validated value: 0 for a scalar, 1 for "[]" or "{}". */
static int value_depth(json_span_t v)
{
	const char *p = v.start, *end = v.start + v.len;
	int depth = 0, max = 0;

	if (v.type != JSON_TYPE_ARRAY && v.type != JSON_TYPE_OBJECT)
		return 0;
	while (p < end) {
		char c = *p;

		if (c == '"') {
			p = skip_string(p, end);
			continue;
		}
		if (c == '{' || c == '[') {
			if (++depth > max)
				max = depth;
		} else if (c == '}' || c == ']') {
			depth--;
		}
		p++;
	}
	return max;
}

static int compare_entries(const void *a, const void *b)
{
	const member_entry_t *x = *(member_entry_t *const *)a;
	const member_entry_t *y = *(member_entry_t *const *)b;
	size_t n = x->key_len < y->key_len ? x->key_len : y->key_len;
	int c = n ? memcmp(x->key, y->key, n) : 0;

	if (c)
		return c;
	if (x->key_len != y->key_len)
		return x->key_len < y->key_len ? -1 : 1;
	return x->index < y->index ? -1 : x->index > y->index;
}

static int same_key(const member_entry_t *x, const member_entry_t *y)
{
	return x->key_len == y->key_len && memcmp(x->key, y->key, x->key_len) == 0;
}

/*
 * Fills t with the members of a validated object. Keys with escapes are
 * decoded into scratch; sort_table() resolves them once scratch stops growing.
 */
static void collect_members(member_table_t *t, json_span_t object, buf_t *scratch)
{
	json_iter_t it;
	json_member_t m;
	size_t n = 0;

	json_object_begin(&it, object);
	while (json_object_next(&it, &m))
		n++;
	t->count = n;
	t->items = xcalloc(n ? n : 1, sizeof(*t->items));
	t->sorted = xmalloc((n ? n : 1) * sizeof(*t->sorted));

	json_object_begin(&it, object);
	for (size_t i = 0; json_object_next(&it, &m); i++) {
		member_entry_t *e = &t->items[i];

		e->m = m;
		e->index = i;
		if (memchr(m.key.start, '\\', m.key.len)) {
			e->decoded = 1;
			e->key_offset = scratch->len;
			json_string_decode(m.key, scratch); /* a NUL in a key is fine here */
			e->key_len = scratch->len - e->key_offset;
		} else {
			e->key = m.key.start + 1;
			e->key_len = m.key.len - 2;
		}
	}
}

/* Resolves decoded keys, sorts, and marks every member that a later duplicate overrides. */
static void sort_table(member_table_t *t, const buf_t *scratch)
{
	for (size_t i = 0; i < t->count; i++) {
		if (t->items[i].decoded)
			t->items[i].key = scratch->data + t->items[i].key_offset;
		t->sorted[i] = &t->items[i];
	}
	if (t->count > 1)
		qsort(t->sorted, t->count, sizeof(*t->sorted), compare_entries);
	for (size_t i = 0; i + 1 < t->count; i++) {
		if (same_key(t->sorted[i], t->sorted[i + 1]))
			t->sorted[i]->superseded = 1;
	}
}

/* Pairs each surviving target member with the surviving patch member of the same key. */
static void match_tables(member_table_t *target, member_table_t *patch)
{
	size_t i = 0, j = 0;

	while (i < target->count && j < patch->count) {
		member_entry_t *t = target->sorted[i], *p = patch->sorted[j];
		int c;

		if (t->superseded) {
			i++;
			continue;
		}
		if (p->superseded) {
			j++;
			continue;
		}
		c = compare_entries(&t, &p);
		if (same_key(t, p)) {
			t->match = p;
			p->matched = 1;
			i++;
			j++;
		} else if (c < 0) {
			i++;
		} else {
			j++;
		}
	}
}

static void free_table(member_table_t *t)
{
	free(t->items);
	free(t->sorted);
}

/* Appends a raw value found depth containers deep, if its own nesting fits under the limit. */
static int copy_value(json_span_t v, int depth, int max_depth, buf_t *out)
{
	if (value_depth(v) > max_depth - depth)
		return INFERQ_ELIMIT;
	buf_append(out, v.start, v.len);
	return 0;
}

static void put_member_key(buf_t *out, int *first, json_span_t key)
{
	if (!*first)
		buf_putc(out, ',');
	*first = 0;
	buf_append(out, key.start, key.len);
	buf_putc(out, ':');
}

static int merge_value(const json_span_t *target, json_span_t patch, int depth, int max_depth,
                       buf_t *out);

/*
 * Writes the object MergePatch(target, patch) for a patch object, where
 * target is NULL when absent or not an object, and depth is the nesting
 * depth of the object being written (1 at the root).
 */
static int merge_object(const json_span_t *target, json_span_t patch, int depth, int max_depth,
                        buf_t *out)
{
	member_table_t t = {0}, p = {0};
	buf_t scratch = BUF_INIT;
	int first = 1, rc = 0;

	if (depth > max_depth)
		return INFERQ_ELIMIT;
	if (target)
		collect_members(&t, *target, &scratch);
	collect_members(&p, patch, &scratch);
	sort_table(&t, &scratch);
	sort_table(&p, &scratch);
	match_tables(&t, &p);

	buf_putc(out, '{');

	/* Target members in their order, patched in place; null patch values delete. */
	for (size_t i = 0; i < t.count; i++) {
		member_entry_t *e = &t.items[i];

		if (e->superseded || (e->match && e->match->m.value.type == JSON_TYPE_NULL))
			continue;
		put_member_key(out, &first, e->m.key);
		if (e->match)
			rc = merge_value(&e->m.value, e->match->m.value, depth, max_depth, out);
		else
			rc = copy_value(e->m.value, depth, max_depth, out);
		if (rc)
			goto out;
	}

	/* Then the patch's new members in patch order, with nulls removed inside them. */
	for (size_t i = 0; i < p.count; i++) {
		member_entry_t *e = &p.items[i];

		if (e->superseded || e->matched || e->m.value.type == JSON_TYPE_NULL)
			continue;
		put_member_key(out, &first, e->m.key);
		rc = merge_value(NULL, e->m.value, depth, max_depth, out);
		if (rc)
			goto out;
	}

	buf_putc(out, '}');
out:
	free_table(&t);
	free_table(&p);
	buf_free(&scratch);
	return rc;
}

/* Writes MergePatch(target, patch) for a value found depth containers deep. */
static int merge_value(const json_span_t *target, json_span_t patch, int depth, int max_depth,
                       buf_t *out)
{
	if (patch.type != JSON_TYPE_OBJECT)
		return copy_value(patch, depth, max_depth, out);
	if (target && target->type != JSON_TYPE_OBJECT)
		target = NULL;
	return merge_object(target, patch, depth + 1, max_depth, out);
}

/* Returns the span of a validated document without its surrounding whitespace. */
static json_span_t trimmed_span(const char *p, size_t len)
{
	const char *end = p + len;
	json_span_t v;

	p = skip_ws_chars(p, end);
	while (end > p && is_ws((unsigned char)end[-1]))
		end--;
	v.start = p;
	v.len = (size_t)(end - p);
	v.type = v.len ? type_of((unsigned char)*p) : JSON_TYPE_NULL;
	return v;
}

int json_merge_patch(const char *target, size_t target_len, const char *patch, size_t patch_len,
                     int max_depth, buf_t *out)
{
	json_span_t t, p;
	size_t saved = out->len;
	int rc;

	p = trimmed_span(patch, patch_len);
	if (p.len == 0)
		return INFERQ_EINVAL;
	if (target && target_len)
		t = trimmed_span(target, target_len);
	else
		t.len = 0;

	rc = merge_value(t.len ? &t : NULL, p, 0, max_depth, out);
	if (rc) {
		out->len = saved;
		if (out->cap)
			out->data[saved] = '\0';
	}
	return rc;
}
