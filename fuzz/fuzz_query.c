/*
 * Fuzz target for the small text parsers: http_query_param (against a
 * reference decoder written here from its contract, with output buffers of
 * several sizes allocated to the exact size so ASan reports any overrun),
 * read_model_query and read_id_query, clock_parse_duration (against strtod)
 * and id_parse (against the 8-4-4-4-12 grammar, with an id_format round
 * trip). The whole input is given to each.
 *
 * SPDX-License-Identifier: MIT
 */
#include <ctype.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "buf.h"
#include "check.h"
#include "clock.h"
#include "config.h"
#include "http.h"
#include "ids.h"
#include "inferq_error.h"
#include "request.h"

static const char *const names[] = {"model", "request_id", "a", "a b", "x&y", "\xc3\xa9"};
static const size_t out_sizes[] = {0, 1, 2, 8, 64, 1025};

static serve_config_t config;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	config_defaults(&config);
	log_set_level(LOG_ERROR);
	return 0;
}

static int hex_digit(char ch)
{
	if (ch >= '0' && ch <= '9')
		return ch - '0';
	ch = (char)tolower((unsigned char)ch);
	return ch >= 'a' && ch <= 'f' ? ch - 'a' + 10 : -1;
}

/* Percent-decodes s[0..len) into out; returns 0, or -1 on a malformed %XY or a NUL. */
static int ref_decode(const char *s, size_t len, buf_t *out)
{
	for (size_t i = 0; i < len; i++) {
		char ch = s[i];

		if (ch == '+') {
			ch = ' ';
		} else if (ch == '%') {
			if (len - i < 3 || hex_digit(s[i + 1]) < 0 || hex_digit(s[i + 2]) < 0)
				return -1;
			ch = (char)(hex_digit(s[i + 1]) * 16 + hex_digit(s[i + 2]));
			i += 2;
		}
		if (ch == '\0')
			return -1;
		buf_putc(out, ch);
	}
	return 0;
}

/*
 * The contract of http_query_param, pair by pair. Returns 1 with the
 * decoded value in *value, 0, INFERQ_EINVAL, INFERQ_ELIMIT, or EITHER_ERROR when the
 * value is both malformed and too long (either code is right).
 */
#define EITHER_ERROR 2
static int ref_query_param(const char *q, size_t len, const char *name, size_t outlen, buf_t *value)
{
	size_t pos = 0;
	int rc = 0;
	buf_t key = BUF_INIT;

	while (pos < len && rc == 0) {
		const char *amp = memchr(q + pos, '&', len - pos);
		size_t pair_end = amp ? (size_t)(amp - q) : len;
		const char *eq = memchr(q + pos, '=', pair_end - pos);
		size_t key_end = eq ? (size_t)(eq - q) : pair_end;

		buf_reset(&key);
		if (ref_decode(q + pos, key_end - pos, &key) != 0) {
			rc = INFERQ_EINVAL;
		} else if (pair_end > pos && key.len == strlen(name) &&
		           memcmp(key.data ? key.data : "", name, key.len) == 0) {
			size_t v = eq ? key_end + 1 : pair_end;
			int bad = ref_decode(q + v, pair_end - v, value) != 0;
			int long_value = value->len + 1 > outlen;

			if (bad && long_value)
				rc = EITHER_ERROR;
			else if (bad)
				rc = INFERQ_EINVAL;
			else if (long_value)
				rc = INFERQ_ELIMIT;
			else
				rc = 1;
		}
		pos = pair_end + 1;
	}
	buf_free(&key);
	return rc;
}

static void check_query_param(const char *q, size_t len)
{
	for (size_t n = 0; n < sizeof(names) / sizeof(names[0]); n++) {
		for (size_t s = 0; s < sizeof(out_sizes) / sizeof(out_sizes[0]); s++) {
			char *out =
			    malloc(out_sizes[s]); /* ASan reports any write into malloc(0) */
			buf_t want = BUF_INIT;
			size_t got_len = SIZE_MAX;
			int rc = http_query_param(q, len, names[n], out, out_sizes[s], &got_len);
			int ref = ref_query_param(q, len, names[n], out_sizes[s], &want);

			if (ref == EITHER_ERROR)
				FUZZ_CHECK(rc == INFERQ_EINVAL || rc == INFERQ_ELIMIT,
				           "http_query_param(%s, %s) returned %d",
				           fuzz_show(q, len), names[n], rc);
			else
				FUZZ_CHECK(rc == ref,
				           "http_query_param(%s, %s, %zu) returned %d, want %d",
				           fuzz_show(q, len), names[n], out_sizes[s], rc, ref);
			if (rc == 1)
				FUZZ_CHECK(got_len == want.len && out[got_len] == '\0' &&
				               memcmp(out, want.data ? want.data : "", want.len) ==
				                   0,
				           "http_query_param(%s, %s) gave %s, want %s",
				           fuzz_show(q, len), names[n], fuzz_show(out, got_len),
				           fuzz_show(want.data, want.len));
			buf_free(&want);
			free(out);
		}
	}
}

static void check_message(int rc, const input_error_t *err, const char *what)
{
	if (rc == 0)
		return;
	FUZZ_CHECK(rc < 0 && err->status == 400 && err->code != NULL, "%s returned %d", what, rc);
	fuzz_check_message(err->message, sizeof(err->message), what);
}

static void check_query_readers(const char *q, size_t len)
{
	input_error_t err;
	buf_t model = BUF_INIT;
	iq_id_t id;
	int rc;

	memset(&err, 0xaa, sizeof(err));
	rc = read_model_query(&config, q, len, &model, &err);
	check_message(rc, &err, "read_model_query");
	if (rc == 0)
		FUZZ_CHECK(model.len >= 1 && model.len <= config.max_model_length,
		           "read_model_query accepted %s", fuzz_show(model.data, model.len));
	memset(&err, 0xaa, sizeof(err));
	rc = read_id_query(q, len, "request_id", &id, &err);
	check_message(rc, &err, "read_id_query");
	buf_free(&model);
}

/* Returns 1 when s[0..len) is digits, an optional fraction, and an optional unit. */
static int ref_duration_syntax(const char *s, size_t len, int64_t *unit)
{
	static const struct {
		const char *name;
		int64_t ms;
	} units[] = {{"", 0},      {"ms", 1},      {"s", 1000},
	             {"m", 60000}, {"h", 3600000}, {"d", 86400000}};
	size_t i = 0, digits = 0;

	for (; i < len && isdigit((unsigned char)s[i]); i++)
		digits++;
	if (i < len && s[i] == '.')
		for (i++; i < len && isdigit((unsigned char)s[i]); i++)
			digits++;
	if (digits == 0)
		return 0;
	for (size_t u = 0; u < sizeof(units) / sizeof(units[0]); u++) {
		if (strlen(units[u].name) == len - i &&
		    memcmp(units[u].name, s + i, len - i) == 0) {
			if (units[u].ms)
				*unit = units[u].ms;
			return 1;
		}
	}
	return 0;
}

static void check_duration(const char *s, size_t len, int64_t default_unit)
{
	int64_t ms = -1, unit = default_unit;
	int ok = ref_duration_syntax(s, len, &unit);
	int rc = clock_parse_duration(s, len, default_unit, &ms);
	char number[64];
	double want;
	size_t n;

	FUZZ_CHECK(rc == 0 || rc == INFERQ_EINVAL || rc == INFERQ_ERANGE,
	           "clock_parse_duration returned %d", rc);
	FUZZ_CHECK((rc != INFERQ_EINVAL) == ok, "clock_parse_duration(%s) returned %d",
	           fuzz_show(s, len), rc);
	if (rc != 0)
		return;
	FUZZ_CHECK(ms >= 0 && ms <= (INT64_C(1) << 53), "clock_parse_duration(%s) gave %lld",
	           fuzz_show(s, len), (long long)ms);

	/* Compare with strtod when the number is short enough to copy. */
	for (n = 0; n < len && (isdigit((unsigned char)s[n]) || s[n] == '.');)
		n++;
	if (n >= sizeof(number))
		return;
	memcpy(number, s, n);
	number[n] = '\0';
	want = strtod(number, NULL) * (double)unit;
	FUZZ_CHECK(fabs((double)ms - want) <= 1 + want * 1e-9,
	           "clock_parse_duration(%s) gave %lld, strtod %.17g", fuzz_show(s, len),
	           (long long)ms, want);
}

static int ref_id_syntax(const char *s, size_t len)
{
	if (len != ID_TEXT_LEN)
		return 0;
	for (size_t i = 0; i < len; i++) {
		int dash = i == 8 || i == 13 || i == 18 || i == 23;

		if (dash ? s[i] != '-' : hex_digit(s[i]) < 0)
			return 0;
	}
	return 1;
}

static void check_id(const char *s, size_t len)
{
	char text[ID_TEXT_LEN + 1];
	iq_id_t id, again;
	int rc = id_parse(s, len, &id);

	FUZZ_CHECK(rc == 0 || rc == INFERQ_EINVAL, "id_parse returned %d", rc);
	FUZZ_CHECK((rc == 0) == ref_id_syntax(s, len), "id_parse(%s) returned %d",
	           fuzz_show(s, len), rc);
	if (rc != 0)
		return;
	id_format(&id, text);
	FUZZ_CHECK(strncasecmp(text, s, ID_TEXT_LEN) == 0 && text[ID_TEXT_LEN] == '\0',
	           "id_format gave %s for %s", text, fuzz_show(s, len));
	for (size_t i = 0; i < ID_TEXT_LEN; i++)
		FUZZ_CHECK(!isupper((unsigned char)text[i]), "id_format gave upper case %s", text);
	FUZZ_CHECK(id_parse(text, ID_TEXT_LEN, &again) == 0 && id_equal(&id, &again),
	           "id_parse(id_format(x)) differs for %s", text);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *s = malloc(size ? size : 1);

	memcpy(s, data, size);
	check_query_param(s, size);
	check_query_readers(s, size);
	check_duration(s, size, 1000);
	check_duration(s, size, 1);
	check_id(s, size);
	free(s);
	return 0;
}
