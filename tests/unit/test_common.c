/*
 * Unit tests for the shared building blocks: ids (UUIDv7 and v4 layout,
 * text round trip, every malformed shape), clock (RFC 3339 formatting,
 * duration parsing, the fake-clock seam), buf and rbuf, log_quote, and the
 * flag parser of `inferq serve` (config.h). Flag errors go to stderr; the
 * tests capture it and check that the message names the flag and value.
 * Random ids come from the kernel, so the checks on them are about layout
 * and bits that must vary, never about particular values.
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
#include <time.h>
#include <sys/wait.h>
#include <unistd.h>

#include "buf.h"
#include "clock.h"
#include "config.h"
#include "ids.h"
#include "inferq_error.h"
#include "log.h"
#include "suggest.h"

/* ---- ids ---- */

static int id_version(const iq_id_t *id)
{
	return id->b[6] >> 4;
}

static int id_variant_ok(const iq_id_t *id)
{
	return (id->b[8] & 0xc0) == 0x80;
}

static int64_t id_v7_ms(const iq_id_t *id)
{
	uint64_t ms = 0;

	for (int i = 0; i < 6; i++)
		ms = ms << 8 | id->b[i];
	return (int64_t)ms;
}

static void test_id_v7_layout(void **state)
{
	static const int64_t times[] = {
	    0, 1, 255, 256, 1700000000123LL, 1709210096000LL, (1LL << 48) - 1,
	};

	for (size_t i = 0; i < sizeof(times) / sizeof(times[0]); i++) {
		char text[ID_TEXT_LEN + 1];
		iq_id_t id;

		id_new_v7(&id, times[i]);
		assert_int_equal(id_version(&id), 7);
		assert_true(id_variant_ok(&id));
		assert_int_equal(id_v7_ms(&id), times[i]);

		id_format(&id, text);
		assert_int_equal(strlen(text), ID_TEXT_LEN);
		assert_int_equal(text[14], '7');
		assert_non_null(strchr("89ab", text[19]));
	}
}

static void test_id_v7_prefix_text(void **state)
{
	char text[ID_TEXT_LEN + 1];
	iq_id_t id;

	/* 0x01938f6e8a1c ms: the first 12 hex digits are the time. */
	id_new_v7(&id, 0x01938f6e8a1cLL);
	id_format(&id, text);
	assert_memory_equal(text, "01938f6e-8a1c-7", 15);
}

static void test_id_v7_sorts_by_time(void **state)
{
	const int64_t base = 1700000000000LL;
	char prev_text[ID_TEXT_LEN + 1], text[ID_TEXT_LEN + 1];
	iq_id_t prev, id;

	id_new_v7(&prev, base);
	id_format(&prev, prev_text);
	for (int i = 1; i < 200; i++) {
		id_new_v7(&id, base + i * 7);
		id_format(&id, text);
		assert_true(memcmp(prev.b, id.b, ID_BYTES) < 0);
		assert_true(strcmp(prev_text, text) < 0);
		prev = id;
		memcpy(prev_text, text, sizeof(text));
	}

	/* Within one millisecond the prefix is shared and the random part differs. */
	id_new_v7(&prev, base);
	id_new_v7(&id, base);
	assert_memory_equal(prev.b, id.b, 6);
	assert_false(id_equal(&prev, &id));
}

/* Checks that every bit outside the fixed ones takes both values over 64 ids. */
static void check_random_bits(void (*make)(iq_id_t *), int first_random_byte)
{
	uint8_t ones[ID_BYTES] = {0}, zeros[ID_BYTES] = {0};

	for (int n = 0; n < 64; n++) {
		iq_id_t id;

		make(&id);
		for (int i = 0; i < ID_BYTES; i++) {
			ones[i] |= id.b[i];
			zeros[i] |= (uint8_t)~id.b[i];
		}
	}
	for (int i = first_random_byte; i < ID_BYTES; i++) {
		uint8_t fixed = 0; /* version nibble in byte 6, variant bits in byte 8 */

		if (i == 6)
			fixed = 0xf0;
		if (i == 8)
			fixed = 0xc0;

		if ((ones[i] & zeros[i] & (uint8_t)~fixed) != (uint8_t)~fixed)
			fail_msg("byte %d: some random bits never changed (ones %02x zeros %02x)",
			         i, ones[i], zeros[i]);
	}
}

static void make_v4(iq_id_t *id)
{
	id_new_v4(id);
}

static void make_v7(iq_id_t *id)
{
	id_new_v7(id, 1700000000000LL);
}

static void test_id_v4_layout(void **state)
{
	char text[ID_TEXT_LEN + 1];
	iq_id_t a, b;

	for (int i = 0; i < 100; i++) {
		id_new_v4(&a);
		assert_int_equal(id_version(&a), 4);
		assert_true(id_variant_ok(&a));
		id_format(&a, text);
		assert_int_equal(text[14], '4');
		assert_non_null(strchr("89ab", text[19]));
	}
	id_new_v4(&b);
	assert_false(id_equal(&a, &b));
	check_random_bits(make_v4, 0);
	check_random_bits(make_v7, 6);
}

static int compare_ids(const void *a, const void *b)
{
	return memcmp(a, b, sizeof(iq_id_t));
}

static void test_ids_distinct_across_refills(void **state)
{
	enum { COUNT = 5000 }; /* about 12 refills of the 4 KiB random block */
	iq_id_t *ids = calloc(COUNT * 2, sizeof(*ids));

	assert_non_null(ids);
	for (int i = 0; i < COUNT; i++) {
		/* The same millisecond for every v7 id: only the random bits differ. */
		id_new_v7(&ids[i], 1700000000000LL);
		id_new_v4(&ids[COUNT + i]);
		assert_int_equal(ids[i].b[6] >> 4, 7);
		assert_int_equal(ids[COUNT + i].b[6] >> 4, 4);
		assert_int_equal(ids[COUNT + i].b[8] >> 6, 2);
	}
	qsort(ids, COUNT * 2, sizeof(*ids), compare_ids);
	for (int i = 1; i < COUNT * 2; i++)
		assert_int_not_equal(memcmp(&ids[i - 1], &ids[i], sizeof(*ids)), 0);
	free(ids);
}

static void test_ids_fork_child_differs(void **state)
{
	iq_id_t before, parent, from_child;
	int fds[2];
	pid_t pid;
	int status;

	/* Fill this thread's random block, so that the child inherits bytes not used yet. */
	id_new_v4(&before);
	assert_int_equal(pipe(fds), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		iq_id_t id;

		id_new_v4(&id);
		_exit(write(fds[1], &id, sizeof(id)) == (ssize_t)sizeof(id) ? 0 : 1);
	}
	close(fds[1]);
	assert_int_equal(read(fds[0], &from_child, sizeof(from_child)), sizeof(from_child));
	close(fds[0]);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);

	id_new_v4(&parent);
	assert_int_not_equal(memcmp(&parent, &from_child, sizeof(parent)), 0);
	assert_int_not_equal(memcmp(&before, &from_child, sizeof(before)), 0);
}

static void test_id_format_known(void **state)
{
	char text[ID_TEXT_LEN + 1];
	iq_id_t id;

	for (int i = 0; i < ID_BYTES; i++)
		id.b[i] = (uint8_t)(i * 0x11);
	id_format(&id, text);
	assert_string_equal(text, "00112233-4455-6677-8899-aabbccddeeff");

	memset(&id, 0, sizeof(id));
	id_format(&id, text);
	assert_string_equal(text, "00000000-0000-0000-0000-000000000000");
	assert_true(id_is_zero(&id));
	id.b[15] = 1;
	assert_false(id_is_zero(&id));
}

static void test_id_round_trip(void **state)
{
	for (int i = 0; i < 200; i++) {
		char text[ID_TEXT_LEN + 1];
		iq_id_t id, back;

		if (i % 2)
			id_new_v4(&id);
		else
			id_new_v7(&id, 1700000000000LL + i);
		id_format(&id, text);
		memset(&back, 0xaa, sizeof(back));
		assert_int_equal(id_parse(text, strlen(text), &back), 0);
		assert_true(id_equal(&id, &back));
	}
}

static void test_id_parse_upper_case(void **state)
{
	iq_id_t lower, upper, mixed;

	assert_int_equal(id_parse("00112233-4455-6677-8899-aabbccddeeff", 36, &lower), 0);
	assert_int_equal(id_parse("00112233-4455-6677-8899-AABBCCDDEEFF", 36, &upper), 0);
	assert_int_equal(id_parse("00112233-4455-6677-8899-aAbBcCdDeEfF", 36, &mixed), 0);
	assert_true(id_equal(&lower, &upper));
	assert_true(id_equal(&lower, &mixed));
	assert_int_equal(lower.b[10], 0xaa);
	assert_int_equal(lower.b[15], 0xff);
}

static void test_id_parse_reads_only_len(void **state)
{
	const char valid[] = "01938f6e-8a1c-7cc2-9b1e-3f0a5e0c2d11";
	char *exact = malloc(ID_TEXT_LEN);
	iq_id_t id;

	/* Exactly 36 bytes with no NUL: ASan reports any read past them. */
	assert_non_null(exact);
	memcpy(exact, valid, ID_TEXT_LEN);
	assert_int_equal(id_parse(exact, ID_TEXT_LEN, &id), 0);
	free(exact);

	/* A valid text followed by more bytes is judged by len alone. */
	assert_int_equal(id_parse(valid, 35, &id), INFERQ_EINVAL);
	assert_int_equal(id_parse("01938f6e-8a1c-7cc2-9b1e-3f0a5e0c2d11ff", 36, &id), 0);
}

static void test_id_parse_malformed(void **state)
{
	static const char *const shapes[] = {
	    "",
	    "0",
	    "01938f6e-8a1c-7cc2-9b1e-3f0a5e0c2d1",
	    "01938f6e-8a1c-7cc2-9b1e-3f0a5e0c2d111",
	    "01938f6e8a1c7cc29b1e3f0a5e0c2d11",
	    "01938f6e8a1c7cc29b1e3f0a5e0c2d110000",
	    "{1938f6e-8a1c-7cc2-9b1e-3f0a5e0c2d1}",
	    "01938f6e-8a1c-7cc2-9b1e-3f0a5e0c2d1 ",
	    " 1938f6e-8a1c-7cc2-9b1e-3f0a5e0c2d11",
	    "0x938f6e-8a1c-7cc2-9b1e-3f0a5e0c2d11",
	    "+1938f6e-8a1c-7cc2-9b1e-3f0a5e0c2d11",
	    "01938f6e:8a1c:7cc2:9b1e:3f0a5e0c2d11",
	    "01938f6e--8a1c7cc2-9b1e-3f0a5e0c2d11",
	};
	const char valid[] = "01938f6e-8a1c-7cc2-9b1e-3f0a5e0c2d11";
	iq_id_t id;

	for (size_t i = 0; i < sizeof(shapes) / sizeof(shapes[0]); i++) {
		if (id_parse(shapes[i], strlen(shapes[i]), &id) != INFERQ_EINVAL)
			fail_msg("id \"%s\" accepted", shapes[i]);
	}

	/* Every position: a hyphen where a digit belongs, a digit where a hyphen belongs. */
	for (size_t pos = 0; pos < ID_TEXT_LEN; pos++) {
		static const char wrong_digits[] = "gG -_\0\xff";
		char text[ID_TEXT_LEN + 1];

		memcpy(text, valid, sizeof(valid));
		if (valid[pos] == '-') {
			text[pos] = '0';
			assert_int_equal(id_parse(text, ID_TEXT_LEN, &id), INFERQ_EINVAL);
			continue;
		}
		for (size_t k = 0; k < sizeof(wrong_digits) - 1; k++) {
			text[pos] = wrong_digits[k];
			if (id_parse(text, ID_TEXT_LEN, &id) != INFERQ_EINVAL)
				fail_msg("byte 0x%02x at position %zu accepted",
				         (unsigned char)wrong_digits[k], pos);
		}
	}
}

static void test_random_bytes_fill(void **state)
{
	uint8_t a[64], b[64];

	memset(a, 0, sizeof(a));
	memset(b, 0, sizeof(b));
	random_bytes(a, sizeof(a));
	random_bytes(b, sizeof(b));
	assert_memory_not_equal(a, b, sizeof(a));
	random_bytes(a, 0);
}

/* ---- clock: RFC 3339 ---- */

static void test_rfc3339_known_instants(void **state)
{
	static const struct {
		int64_t ms;
		const char *text;
	} cases[] = {
	    {0, "1970-01-01T00:00:00Z"},
	    {999, "1970-01-01T00:00:00Z"},
	    {1000, "1970-01-01T00:00:01Z"},
	    {1709210096000LL, "2024-02-29T12:34:56Z"},
	    {1709210096999LL, "2024-02-29T12:34:56Z"},
	    {1709251199999LL, "2024-02-29T23:59:59Z"},
	    {1709251200000LL, "2024-03-01T00:00:00Z"},
	    {951782400000LL, "2000-02-29T00:00:00Z"},
	    {1704067199999LL, "2023-12-31T23:59:59Z"},
	    {1704067200000LL, "2024-01-01T00:00:00Z"},
	    {2147483648000LL, "2038-01-19T03:14:08Z"},
	    {253402300799999LL, "9999-12-31T23:59:59Z"},
	    {-1, "1969-12-31T23:59:59Z"},
	    {-999, "1969-12-31T23:59:59Z"},
	    {-1000, "1969-12-31T23:59:59Z"},
	    {-1001, "1969-12-31T23:59:58Z"},
	    {-301247450000LL, "1960-06-15T08:09:10Z"},
	    {-301247449500LL, "1960-06-15T08:09:10Z"},
	    {-2208988800000LL, "1900-01-01T00:00:00Z"},
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char out[RFC3339_LEN + 1];

		memset(out, 'x', sizeof(out));
		clock_format_rfc3339(cases[i].ms, out);
		if (strcmp(out, cases[i].text) != 0)
			fail_msg("%lld ms formatted as %s, expected %s", (long long)cases[i].ms,
			         out, cases[i].text);
	}
}

static void test_rfc3339_extremes_stay_in_shape(void **state)
{
	static const int64_t extremes[] = {INT64_MIN, INT64_MIN + 1, INT64_MAX};

	/* Outside years 0 to 9999 the text is not a true instant, but it keeps its shape. */
	for (size_t i = 0; i < sizeof(extremes) / sizeof(extremes[0]); i++) {
		char out[RFC3339_LEN + 1];

		clock_format_rfc3339(extremes[i], out);
		assert_int_equal(strlen(out), RFC3339_LEN);
		assert_int_equal(out[4], '-');
		assert_int_equal(out[10], 'T');
		assert_int_equal(out[19], 'Z');
	}
}

/* ---- clock: durations ---- */

static int parse_duration(const char *s, int64_t unit, int64_t *out)
{
	return clock_parse_duration(s, strlen(s), unit, out);
}

static void test_duration_valid(void **state)
{
	static const struct {
		const char *text;
		int64_t unit;
		int64_t ms;
	} cases[] = {
	    {"90", 1000, 90000},
	    {"90s", 1000, 90000},
	    {"90", 1, 90},
	    {"90", 60000, 5400000},
	    {"0", 1000, 0},
	    {"0ms", 1000, 0},
	    {"500ms", 1000, 500},
	    {"1.5s", 1000, 1500},
	    {"1.5", 1000, 1500},
	    {"0.1", 1000, 100},
	    {"5m", 1000, 300000},
	    {"2h", 1000, 7200000},
	    {"7d", 1000, 604800000},
	    {"1.5h", 1000, 5400000},
	    {"007s", 1000, 7000},
	    /* A leading or trailing point is accepted: ".5s" is 0.5 s and "5." is 5. */
	    {".5s", 1000, 500},
	    {".5", 1000, 500},
	    {"5.", 1000, 5000},
	    {"5.s", 1000, 5000},
	    /* Fractions of a millisecond round half up. */
	    {"1.5ms", 1000, 2},
	    {"1.4ms", 1000, 1},
	    {"9007199254740992ms", 1000, 9007199254740992LL},
	    {"104249991d", 1000, 104249991LL * 86400000},
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		int64_t ms = -1;
		int rc = parse_duration(cases[i].text, cases[i].unit, &ms);

		if (rc != 0)
			fail_msg("duration \"%s\" rejected with %d", cases[i].text, rc);
		if (ms != cases[i].ms)
			fail_msg("duration \"%s\" read as %lld ms, expected %lld", cases[i].text,
			         (long long)ms, (long long)cases[i].ms);
	}
}

static void test_duration_invalid(void **state)
{
	static const char *const bad[] = {
	    "",      "s",    "ms",  ".",   ".s",   "-5",   "+5",   "5x",    "5 s",
	    " 5",    "5 ",   "5S",  "5MS", "5sec", "5mss", "5min", "1h30m", "1e3",
	    "1.5.5", "0x10", "5ss", "5dd", "nan",  "inf",  "d",
	};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		int64_t ms = 77;

		if (parse_duration(bad[i], 1000, &ms) != INFERQ_EINVAL)
			fail_msg("duration \"%s\" not rejected as invalid", bad[i]);
		assert_int_equal(ms, 77);
	}

	/* The NUL is inside len, so "5\0s" is not "5". */
	{
		int64_t ms = 77;

		assert_int_equal(clock_parse_duration("5\0s", 3, 1000, &ms), INFERQ_EINVAL);
		assert_int_equal(ms, 77);
	}
}

static void test_duration_overflow(void **state)
{
	static const char *const big[] = {
	    "104249992d",
	    "9007199254740993000ms",
	    "9007199254741s",
	    "99999999999999999999999999999999h",
	};
	char nines[420];
	int64_t ms = 77;

	for (size_t i = 0; i < sizeof(big) / sizeof(big[0]); i++) {
		if (parse_duration(big[i], 1000, &ms) != INFERQ_ERANGE)
			fail_msg("duration \"%s\" not rejected as out of range", big[i]);
		assert_int_equal(ms, 77);
	}

	/* 400 digits overflow a double to infinity: still out of range, not accepted. */
	memset(nines, '9', 400);
	nines[400] = '\0';
	assert_int_equal(parse_duration(nines, 1000, &ms), INFERQ_ERANGE);
	strcat(nines, "ms");
	assert_int_equal(parse_duration(nines, 1, &ms), INFERQ_ERANGE);
	assert_int_equal(ms, 77);
}

static void test_duration_bounded_by_len(void **state)
{
	int64_t ms = 0;

	/* "5m" cut to one byte is a bare 5 in the default unit. */
	assert_int_equal(clock_parse_duration("5m", 1, 1000, &ms), 0);
	assert_int_equal(ms, 5000);
	assert_int_equal(clock_parse_duration("500ms", 4, 1000, &ms), 0);
	assert_int_equal(ms, 500LL * 60000); /* "500m" */
	assert_int_equal(clock_parse_duration("5", 0, 1000, &ms), INFERQ_EINVAL);
}

/* ---- clock: fake source ---- */

struct fake_clock {
	int64_t wall;
	int64_t mono;
	int reads;
};

static int64_t fake_wall(void *ctx)
{
	struct fake_clock *f = ctx;

	f->reads++;
	return f->wall;
}

static int64_t fake_mono(void *ctx)
{
	struct fake_clock *f = ctx;

	f->reads++;
	return f->mono;
}

static void test_clock_fake_source(void **state)
{
	struct fake_clock fake = {1709210096123LL, 42, 0};
	int64_t before, after, mono1, mono2;

	clock_set_source(fake_wall, fake_mono, &fake);
	assert_int_equal(clock_wall_ms(), 1709210096123LL);
	assert_int_equal(clock_mono_ms(), 42);
	fake.wall += 1500;
	fake.mono += 1500;
	assert_int_equal(clock_wall_ms(), 1709210097623LL);
	assert_int_equal(clock_mono_ms(), 1542);
	assert_int_equal(fake.reads, 4);

	/* NULL restores the system clocks. */
	clock_set_source(NULL, NULL, NULL);
	before = (int64_t)time(NULL) * 1000;
	after = clock_wall_ms();
	assert_true(after >= before - 1000);
	assert_true(after <= before + 5000);
	mono1 = clock_mono_ms();
	mono2 = clock_mono_ms();
	assert_true(mono2 >= mono1);
	assert_int_equal(fake.reads, 4);
}

/* ---- buf and rbuf ---- */

static void test_buf_append_growth(void **state)
{
	buf_t b = BUF_INIT;
	size_t last_cap = 0;

	for (int i = 0; i < 5000; i++) {
		char ch = (char)('a' + i % 26);

		buf_append(&b, &ch, 1);
		assert_int_equal(b.len, (size_t)i + 1);
		assert_true(b.cap > b.len);
		assert_int_equal(b.data[b.len], '\0');
		assert_true(b.cap >= last_cap);
		last_cap = b.cap;
	}
	for (int i = 0; i < 5000; i++)
		assert_int_equal(b.data[i], 'a' + i % 26);

	/* Embedded NUL bytes are kept, and len counts them. */
	buf_reset(&b);
	assert_int_equal(b.len, 0);
	assert_int_equal(b.data[0], '\0');
	assert_int_equal(b.cap, last_cap);
	buf_append(&b, "a\0b", 3);
	assert_int_equal(b.len, 3);
	assert_memory_equal(b.data, "a\0b", 4);
	buf_free(&b);
	assert_null(b.data);
	assert_int_equal(b.len, 0);
	assert_int_equal(b.cap, 0);
}

static void test_buf_empty_operations(void **state)
{
	buf_t b;

	buf_init(&b);
	buf_reset(&b);
	buf_free(&b);
	buf_free(&b);
	buf_append(&b, NULL, 0);
	assert_non_null(b.data);
	assert_string_equal(b.data, "");
	buf_puts(&b, "");
	buf_putc(&b, 'x');
	buf_puts(&b, "yz");
	assert_string_equal(b.data, "xyz");
	assert_int_equal(b.len, 3);
	buf_reserve(&b, 1000);
	assert_true(b.cap >= 1004);
	assert_string_equal(b.data, "xyz");
	buf_free(&b);
}

static void test_buf_printf_growth(void **state)
{
	buf_t b = BUF_INIT;
	char *big = malloc(10001);

	assert_non_null(big);
	memset(big, 'q', 10000);
	big[10000] = '\0';

	buf_printf(&b, "%s=%d", "k", 5);
	assert_string_equal(b.data, "k=5");
	buf_printf(&b, "[%s]", big);
	assert_int_equal(b.len, 3 + 10002);
	assert_int_equal(b.data[3], '[');
	assert_int_equal(b.data[b.len - 1], ']');
	assert_int_equal(b.data[b.len], '\0');
	assert_int_equal(strspn(b.data + 4, "q"), 10000);

	/* Many small appends across reallocations. */
	buf_reset(&b);
	for (int i = 0; i < 1000; i++)
		buf_printf(&b, "%03d,", i);
	assert_int_equal(b.len, 4000);
	assert_memory_equal(b.data, "000,001,002,", 12);
	assert_string_equal(b.data + 3996, "999,");

	/* An empty format adds nothing. */
	buf_reset(&b);
	buf_printf(&b, "%s", "");
	assert_int_equal(b.len, 0);
	buf_free(&b);
	free(big);
}

static void test_buf_integers(void **state)
{
	buf_t b = BUF_INIT;

	buf_put_u64(&b, 0);
	buf_putc(&b, ' ');
	buf_put_u64(&b, UINT64_MAX);
	buf_putc(&b, ' ');
	buf_put_i64(&b, INT64_MIN);
	buf_putc(&b, ' ');
	buf_put_i64(&b, INT64_MAX);
	buf_putc(&b, ' ');
	buf_put_i64(&b, -1);
	buf_putc(&b, ' ');
	buf_put_i64(&b, 0);
	assert_string_equal(b.data, "0 18446744073709551615 -9223372036854775808 "
	                            "9223372036854775807 -1 0");
	buf_free(&b);
}

static void test_rbuf_refs(void **state)
{
	char source[] = "payload";
	buf_t b = BUF_INIT;
	rbuf_t *r, *s, *e;

	r = rbuf_new(source, 7);
	assert_int_equal(r->refs, 1);
	assert_int_equal(r->len, 7);
	assert_string_equal(r->data, "payload");
	source[0] = 'X';
	assert_string_equal(r->data, "payload");

	s = rbuf_ref(r);
	assert_ptr_equal(s, r);
	assert_int_equal(r->refs, 2);
	rbuf_unref(s);
	assert_int_equal(r->refs, 1);
	assert_string_equal(r->data, "payload");
	rbuf_unref(r); /* frees: ASan and valgrind report a leak otherwise */

	assert_null(rbuf_ref(NULL));
	rbuf_unref(NULL);

	e = rbuf_new(NULL, 0);
	assert_int_equal(e->len, 0);
	assert_string_equal(e->data, "");
	rbuf_unref(e);

	r = rbuf_from_str("a\"b");
	assert_int_equal(r->len, 3);
	assert_string_equal(r->data, "a\"b");
	rbuf_unref(r);

	buf_append(&b, "x\0y", 3);
	r = rbuf_from_buf(&b);
	assert_null(b.data);
	assert_int_equal(b.len, 0);
	assert_int_equal(r->len, 3);
	assert_memory_equal(r->data, "x\0y", 4);
	rbuf_unref(r);

	r = rbuf_from_buf(&b);
	assert_int_equal(r->len, 0);
	assert_string_equal(r->data, "");
	rbuf_unref(r);
}

/* ---- log_quote ---- */

static void test_log_quote_escaping(void **state)
{
	char out[64];

	assert_string_equal(log_quote("plain text 123", 14, out, sizeof(out)), "plain text 123");
	assert_string_equal(log_quote("", 0, out, sizeof(out)), "");
	assert_string_equal(log_quote("a\"b\\c", 5, out, sizeof(out)), "a\\x22b\\x5cc");
	assert_string_equal(log_quote("l1\nl2\r\t", 7, out, sizeof(out)), "l1\\x0al2\\x0d\\x09");
	assert_string_equal(log_quote("\x7f\x1b[31m", 6, out, sizeof(out)), "\\x7f\\x1b[31m");
	assert_string_equal(log_quote("caf\xc3\xa9", 5, out, sizeof(out)), "caf\\xc3\\xa9");
	assert_string_equal(log_quote("a\0b", 3, out, sizeof(out)), "a\\x00b");
}

static void test_log_quote_truncation(void **state)
{
	const char text[] = "abcdefghijklmnopqrstuvwxyz";
	char out[16];
	char tiny[8];
	char none[4] = "zzz";

	/* 16 bytes leave room for 7 plain bytes, the "..." marker and the NUL. */
	assert_string_equal(log_quote(text, 7, out, sizeof(out)), "abcdefg");
	assert_string_equal(log_quote(text, 26, out, sizeof(out)), "abcdefg...");
	assert_string_equal(log_quote("\n\n\n\n\n", 5, out, sizeof(out)), "\\x0a\\x0a...");
	assert_string_equal(log_quote(text, 26, tiny, sizeof(tiny)), "...");

	/* Below 8 bytes the output is empty, and a zero size writes nothing. */
	assert_string_equal(log_quote(text, 26, none, 4), "");
	none[0] = 'z';
	log_quote(text, 26, none, 0);
	assert_int_equal(none[0], 'z');
}

static void test_log_quote_always_fits(void **state)
{
	unsigned int seed = 12345;
	char input[200];

	/* Fixed seed: 2000 random inputs into every size from 8 to 80 bytes. */
	for (int n = 0; n < 2000; n++) {
		size_t len = (size_t)(rand_r(&seed) % (int)sizeof(input));
		size_t outlen = 8 + (size_t)(rand_r(&seed) % 73);
		char *out = malloc(outlen);

		assert_non_null(out);
		for (size_t i = 0; i < len; i++)
			input[i] = (char)(rand_r(&seed) % 256);
		log_quote(input, len, out, outlen);
		assert_true(strlen(out) < outlen);
		for (const char *p = out; *p; p++)
			assert_true(*p >= 0x20 && *p < 0x7f && *p != '"');
		free(out);
	}
}

/* ---- config_parse ---- */

#define MAX_ARGS 8

/* argv for config_parse: writable copies, since getopt may reorder them. */
struct args {
	int argc;
	char *argv[MAX_ARGS + 1];
};

static void args_init(struct args *a, const char *const *list)
{
	a->argc = 0;
	for (; *list && a->argc < MAX_ARGS; list++)
		a->argv[a->argc++] = strdup(*list);
	a->argv[a->argc] = NULL;
}

static void args_free(struct args *a)
{
	for (int i = 0; i < a->argc; i++)
		free(a->argv[i]);
}

/*
 * Runs config_parse on list (argv[0] "serve" included) with stream fd
 * (1 or 2) captured into text.
 */
static int parse_captured(serve_config_t *c, const char *const *list, int fd, char *text,
                          size_t size)
{
	FILE *tmp = tmpfile();
	struct args a;
	int saved, rc;
	size_t n;

	assert_non_null(tmp);
	fflush(stdout);
	fflush(stderr);
	saved = dup(fd);
	assert_true(saved >= 0);
	assert_true(dup2(fileno(tmp), fd) >= 0);

	args_init(&a, list);
	rc = config_parse(c, a.argc, a.argv);
	args_free(&a);

	fflush(stdout);
	fflush(stderr);
	assert_true(dup2(saved, fd) >= 0);
	close(saved);
	rewind(tmp);
	n = fread(text, 1, size - 1, tmp);
	text[n] = '\0';
	fclose(tmp);
	return rc;
}

static int parse_flags(serve_config_t *c, const char *const *list, char *err, size_t size)
{
	return parse_captured(c, list, 2, err, size);
}

static void test_config_defaults(void **state)
{
	serve_config_t c;
	char err[512];

	config_defaults(&c);
	assert_string_equal(c.listen, "127.0.0.1:8080");
	assert_string_equal(c.data_dir, "./inferq-data");
	assert_int_equal(c.claim_timeout, 300);
	assert_int_equal(c.max_retries, 3);
	assert_int_equal(c.retention_ms, 7LL * 86400 * 1000);
	assert_int_equal(c.idempotency_ttl_ms, 86400LL * 1000);
	assert_int_equal(c.max_body_bytes, 10u << 20);
	assert_int_equal(c.max_header_bytes, 16u << 10);
	assert_int_equal(c.max_info_bytes, 64u << 10);
	assert_int_equal(c.max_model_length, 128);
	assert_int_equal(c.max_json_depth, 64);
	assert_int_equal(c.request_timeout_ms, 30000);
	assert_int_equal(c.idle_timeout_ms, 60000);
	assert_int_equal(c.max_connections, 10000);
	assert_int_equal(c.log_level, LOG_INFO);

	/* No flags: nothing changes. */
	{
		const char *const list[] = {"serve", NULL};
		serve_config_t parsed;

		config_defaults(&parsed);
		assert_int_equal(parse_flags(&parsed, list, err, sizeof(err)), 0);
		assert_memory_equal(&parsed, &c, sizeof(c));
		assert_string_equal(err, "");
	}
}

enum field {
	F_CLAIM_TIMEOUT,
	F_MAX_RETRIES,
	F_RETENTION,
	F_IDEMPOTENCY_TTL,
	F_MAX_BODY,
	F_MAX_HEADER,
	F_MAX_INFO,
	F_MAX_MODEL,
	F_MAX_DEPTH,
	F_REQUEST_TIMEOUT,
	F_IDLE_TIMEOUT,
	F_MAX_CONNECTIONS,
	F_LOG_LEVEL,
};

static int64_t field_value(const serve_config_t *c, enum field f)
{
	switch (f) {
	case F_CLAIM_TIMEOUT: return c->claim_timeout;
	case F_MAX_RETRIES: return c->max_retries;
	case F_RETENTION: return c->retention_ms;
	case F_IDEMPOTENCY_TTL: return c->idempotency_ttl_ms;
	case F_MAX_BODY: return (int64_t)c->max_body_bytes;
	case F_MAX_HEADER: return (int64_t)c->max_header_bytes;
	case F_MAX_INFO: return (int64_t)c->max_info_bytes;
	case F_MAX_MODEL: return (int64_t)c->max_model_length;
	case F_MAX_DEPTH: return c->max_json_depth;
	case F_REQUEST_TIMEOUT: return c->request_timeout_ms;
	case F_IDLE_TIMEOUT: return c->idle_timeout_ms;
	case F_MAX_CONNECTIONS: return c->max_connections;
	case F_LOG_LEVEL: return c->log_level;
	}
	return -1;
}

static void test_config_valid_values(void **state)
{
	static const struct {
		const char *flag;
		const char *value;
		enum field field;
		int64_t want;
	} cases[] = {
	    {"--claim-timeout", "1", F_CLAIM_TIMEOUT, 1},
	    {"--claim-timeout", "86400", F_CLAIM_TIMEOUT, 86400},
	    {"--claim-timeout", "0060", F_CLAIM_TIMEOUT, 60},
	    {"--claim-timeout", "5s", F_CLAIM_TIMEOUT, 5},
	    {"--claim-timeout", "5m", F_CLAIM_TIMEOUT, 300},
	    {"--claim-timeout", "24h", F_CLAIM_TIMEOUT, 86400},
	    {"--max-retries", "0", F_MAX_RETRIES, 0},
	    {"--max-retries", "1000", F_MAX_RETRIES, 1000},
	    {"--retention", "1s", F_RETENTION, 1000},
	    {"--retention", "1", F_RETENTION, 1000},
	    {"--retention", "1000ms", F_RETENTION, 1000},
	    {"--retention", "1.5s", F_RETENTION, 1500},
	    {"--retention", "12h", F_RETENTION, 12LL * 3600000},
	    {"--retention", "90m", F_RETENTION, 90LL * 60000},
	    {"--retention", "3650d", F_RETENTION, 3650LL * 86400000},
	    {"--idempotency-ttl", "1s", F_IDEMPOTENCY_TTL, 1000},
	    {"--idempotency-ttl", "30d", F_IDEMPOTENCY_TTL, 30LL * 86400000},
	    {"--max-body-bytes", "64", F_MAX_BODY, 64},
	    {"--max-body-bytes", "10M", F_MAX_BODY, 10LL << 20},
	    {"--max-body-bytes", "10m", F_MAX_BODY, 10LL << 20},
	    {"--max-body-bytes", "1024K", F_MAX_BODY, 1LL << 20},
	    {"--max-body-bytes", "1G", F_MAX_BODY, 1LL << 30},
	    {"--max-body-bytes", "1g", F_MAX_BODY, 1LL << 30},
	    {"--max-header-bytes", "256", F_MAX_HEADER, 256},
	    {"--max-header-bytes", "16k", F_MAX_HEADER, 16LL << 10},
	    {"--max-header-bytes", "1M", F_MAX_HEADER, 1LL << 20},
	    {"--max-info-bytes", "2", F_MAX_INFO, 2},
	    {"--max-info-bytes", "64K", F_MAX_INFO, 64LL << 10},
	    {"--max-info-bytes", "1G", F_MAX_INFO, 1LL << 30},
	    {"--max-model-length", "1", F_MAX_MODEL, 1},
	    {"--max-model-length", "1024", F_MAX_MODEL, 1024},
	    {"--max-json-depth", "2", F_MAX_DEPTH, 2},
	    {"--max-json-depth", "1000", F_MAX_DEPTH, 1000},
	    {"--request-timeout", "100ms", F_REQUEST_TIMEOUT, 100},
	    {"--request-timeout", "0.1", F_REQUEST_TIMEOUT, 100},
	    {"--request-timeout", "1h", F_REQUEST_TIMEOUT, 3600000},
	    {"--request-timeout", "3600", F_REQUEST_TIMEOUT, 3600000},
	    {"--idle-timeout", "100ms", F_IDLE_TIMEOUT, 100},
	    {"--idle-timeout", "1d", F_IDLE_TIMEOUT, 86400000},
	    {"--idle-timeout", "24h", F_IDLE_TIMEOUT, 86400000},
	    {"--max-connections", "1", F_MAX_CONNECTIONS, 1},
	    {"--max-connections", "1000000", F_MAX_CONNECTIONS, 1000000},
	    {"--log-level", "debug", F_LOG_LEVEL, LOG_DEBUG},
	    {"--log-level", "info", F_LOG_LEVEL, LOG_INFO},
	    {"--log-level", "warn", F_LOG_LEVEL, LOG_WARN},
	    {"--log-level", "warning", F_LOG_LEVEL, LOG_WARN},
	    {"--log-level", "ERROR", F_LOG_LEVEL, LOG_ERROR},
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const char *const list[] = {"serve", cases[i].flag, cases[i].value, NULL};
		char joined[128];
		const char *const list_eq[] = {"serve", joined, NULL};
		serve_config_t c;
		char err[512];
		int rc;

		config_defaults(&c);
		rc = parse_flags(&c, list, err, sizeof(err));
		if (rc != 0)
			fail_msg("%s %s rejected: %s", cases[i].flag, cases[i].value, err);
		if (field_value(&c, cases[i].field) != cases[i].want)
			fail_msg("%s %s stored %lld, expected %lld", cases[i].flag, cases[i].value,
			         (long long)field_value(&c, cases[i].field),
			         (long long)cases[i].want);

		/* The --flag=value form is the same. */
		snprintf(joined, sizeof(joined), "%s=%s", cases[i].flag, cases[i].value);
		config_defaults(&c);
		assert_int_equal(parse_flags(&c, list_eq, err, sizeof(err)), 0);
		assert_int_equal(field_value(&c, cases[i].field), cases[i].want);
	}
}

static void test_config_strings(void **state)
{
	char long_value[1100];
	serve_config_t c;
	char err[2048]; /* the message repeats the 1024-byte value */

	{
		const char *const list[] = {"serve",      "--listen",        "0.0.0.0:9000",
		                            "--data-dir", "/var/lib/inferq", NULL};

		config_defaults(&c);
		assert_int_equal(parse_flags(&c, list, err, sizeof(err)), 0);
		assert_string_equal(c.listen, "0.0.0.0:9000");
		assert_string_equal(c.data_dir, "/var/lib/inferq");
	}

	/*
	 * --listen holds up to 255 bytes, --data-dir up to 1023. A listen value
	 * within the length is still checked as an address.
	 */
	memset(long_value, 'h', sizeof(long_value));
	long_value[255] = '\0';
	{
		const char *const list[] = {"serve", "--listen", long_value, NULL};

		config_defaults(&c);
		assert_int_equal(parse_flags(&c, list, err, sizeof(err)), INFERQ_EINVAL);
		assert_non_null(strstr(err, "invalid listen address"));
		assert_string_equal(c.listen, "127.0.0.1:8080");
		long_value[255] = 'h';
		long_value[256] = '\0';
		config_defaults(&c);
		assert_int_equal(parse_flags(&c, list, err, sizeof(err)), INFERQ_EINVAL);
		assert_string_equal(c.listen, "127.0.0.1:8080");
		assert_non_null(strstr(err, "--listen: expected 1 to 255 bytes, got 256"));
	}
	memset(long_value, 'd', sizeof(long_value));
	long_value[1023] = '\0';
	{
		const char *const list[] = {"serve", "--data-dir", long_value, NULL};

		config_defaults(&c);
		assert_int_equal(parse_flags(&c, list, err, sizeof(err)), 0);
		assert_int_equal(strlen(c.data_dir), 1023);
		long_value[1023] = 'd';
		long_value[1024] = '\0';
		config_defaults(&c);
		assert_int_equal(parse_flags(&c, list, err, sizeof(err)), INFERQ_EINVAL);
		assert_string_equal(c.data_dir, "./inferq-data");
		assert_non_null(strstr(err, "--data-dir: expected 1 to 1023 bytes, got 1024"));
	}
	{
		const char *const list[] = {"serve", "--listen=", NULL};

		config_defaults(&c);
		assert_int_equal(parse_flags(&c, list, err, sizeof(err)), INFERQ_EINVAL);
		assert_non_null(strstr(err, "invalid value for --listen: expected 1 to 255 bytes, got 0"));
	}
	{
		const char *const list[] = {"serve", "--data-dir", "", NULL};

		config_defaults(&c);
		assert_int_equal(parse_flags(&c, list, err, sizeof(err)), INFERQ_EINVAL);
		assert_non_null(strstr(err, "--data-dir"));
	}
}

static void test_config_invalid_values(void **state)
{
	static const struct {
		const char *flag;
		const char *value;
		const char *range; /* part of the message */
	} cases[] = {
	    {"claim-timeout", "0", "from 1 to 86400"},
	    {"claim-timeout", "86401", "from 1 to 86400"},
	    {"claim-timeout", "-1", "from 1 to 86400"},
	    {"claim-timeout", "+5", "from 1 to 86400"},
	    {"claim-timeout", " 5", "from 1 to 86400"},
	    {"max-retries", " 3", "from 0 to 1000"},
	    {"claim-timeout", "1.5s", "whole seconds"},
	    {"claim-timeout", "25h", "from 1 to 86400"},
	    {"claim-timeout", "1.5", "whole seconds"},
	    {"claim-timeout", "abc", "whole seconds"},
	    {"claim-timeout", "", "whole seconds"},
	    {"claim-timeout", "18446744073709551616", "whole seconds"},
	    {"max-retries", "1001", "from 0 to 1000"},
	    {"max-retries", "-1", "from 0 to 1000"},
	    {"max-retries", "3x", "from 0 to 1000"},
	    {"retention", "999ms", "from 1s to 3650d"},
	    {"retention", "0.5s", "from 1s to 3650d"},
	    {"retention", "0", "from 1s to 3650d"},
	    {"retention", "3651d", "from 1s to 3650d"},
	    {"retention", "7x", "from 1s to 3650d"},
	    {"retention", "-1d", "from 1s to 3650d"},
	    {"retention", "7 d", "from 1s to 3650d"},
	    {"retention", "", "from 1s to 3650d"},
	    {"retention", "99999999999999999999d", "from 1s to 3650d"},
	    {"idempotency-ttl", "999ms", "from 1s to 30d"},
	    {"idempotency-ttl", "31d", "from 1s to 30d"},
	    {"max-body-bytes", "63", "from 64 to 1G"},
	    {"max-body-bytes", "1025M", "from 64 to 1G"},
	    {"max-body-bytes", "2G", "from 64 to 1G"},
	    {"max-body-bytes", "10MB", "from 64 to 1G"},
	    {"max-body-bytes", "M", "from 64 to 1G"},
	    {"max-body-bytes", "1.5M", "from 64 to 1G"},
	    {"max-body-bytes", "-1", "from 64 to 1G"},
	    {"max-body-bytes", "-1K", "from 64 to 1G"},
	    {"max-body-bytes", "", "from 64 to 1G"},
	    {"max-body-bytes", "17179869184G", "from 64 to 1G"},
	    {"max-body-bytes", "99999999999999999999999999999999999", "from 64 to 1G"},
	    {"max-header-bytes", "255", "from 256 to 1M"},
	    {"max-header-bytes", "1025K", "from 256 to 1M"},
	    {"max-info-bytes", "1", "from 2 to 1G"},
	    {"max-info-bytes", "0", "from 2 to 1G"},
	    {"max-info-bytes", "2G", "from 2 to 1G"},
	    {"max-model-length", "0", "from 1 to 1024"},
	    {"max-model-length", "1025", "from 1 to 1024"},
	    {"max-model-length", "1K", "from 1 to 1024"},
	    {"max-json-depth", "1", "from 2 to 1000"},
	    {"max-json-depth", "1001", "from 2 to 1000"},
	    {"request-timeout", "99ms", "from 100ms to 1h"},
	    {"request-timeout", "3601s", "from 100ms to 1h"},
	    {"request-timeout", "2h", "from 100ms to 1h"},
	    {"request-timeout", "0", "from 100ms to 1h"},
	    {"idle-timeout", "99ms", "from 100ms to 1d"},
	    {"idle-timeout", "86401s", "from 100ms to 1d"},
	    {"idle-timeout", "2d", "from 100ms to 1d"},
	    {"max-connections", "0", "from 1 to 1000000"},
	    {"max-connections", "1000001", "from 1 to 1000000"},
	    {"log-level", "verbose", "debug, info, warn or error"},
	    {"log-level", "", "debug, info, warn or error"},
	    {"log-level", "trace", "debug, info, warn or error"},
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char flag[64], named[160];
		const char *const list[] = {"serve", flag, cases[i].value, NULL};
		serve_config_t c, fresh;
		char err[512];

		snprintf(flag, sizeof(flag), "--%s", cases[i].flag);
		config_defaults(&c);
		config_defaults(&fresh);
		if (parse_flags(&c, list, err, sizeof(err)) != INFERQ_EINVAL)
			fail_msg("%s \"%s\" accepted", flag, cases[i].value);

		/* The message names the value, the flag and the accepted range. */
		snprintf(named, sizeof(named), "invalid value \"%s\" for %s", cases[i].value, flag);
		if (strstr(err, named) == NULL)
			fail_msg("error for %s \"%s\" is \"%s\"", flag, cases[i].value, err);
		if (strstr(err, cases[i].range) == NULL)
			fail_msg("error for %s \"%s\" does not give \"%s\": %s", flag,
			         cases[i].value, cases[i].range, err);

		/* A rejected value leaves the setting as it was. */
		assert_memory_equal(&c, &fresh, sizeof(c));
	}
}

static void test_config_bad_command_lines(void **state)
{
	static const struct {
		const char *args[5];
		const char *needle;
	} cases[] = {
	    {{"serve", "--listen", NULL}, "--listen needs a value"},
	    {{"serve", "--max-retries", NULL}, "--max-retries needs a value"},
	    {{"serve", "--bogus", NULL}, "unknown flag --bogus\n"},
	    {{"serve", "--bogus=1", NULL}, "unknown flag --bogus\n"},
	    {{"serve", "--lisen", "x", NULL}, "unknown flag --lisen; did you mean --listen?"},
	    {{"serve", "--port", "8080", NULL}, "unknown flag --port; did you mean --listen?"},
	    {{"serve", "--max", "5", NULL}, "--max is ambiguous"},
	    {{"serve", "--max=5", NULL}, "--max is ambiguous"},
	    {{"serve", "--help=yes", NULL}, "--help takes no value"},
	    {{"serve", "-x", NULL}, "unknown flag -x"},
	    {{"serve", "extra", NULL}, "unexpected argument \"extra\""},
	    {{"serve", "--max-retries", "5", "extra", NULL}, "unexpected argument \"extra\""},
	    {{"serve", "--", "extra", NULL}, "unexpected argument \"extra\""},
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		serve_config_t c;
		char err[512];

		config_defaults(&c);
		if (parse_flags(&c, cases[i].args, err, sizeof(err)) != INFERQ_EINVAL)
			fail_msg("command line %zu accepted", i);
		if (strstr(err, cases[i].needle) == NULL)
			fail_msg("command line %zu: error \"%s\" lacks \"%s\"", i, err,
			         cases[i].needle);
		assert_non_null(strstr(err, "inferq serve --help"));
	}
}

static void test_suggest_nearest(void **state)
{
	static const char *const names[] = {"listen", "list", "status", "a"};

	assert_int_equal(suggest_distance("listen", "listen"), 0);
	assert_int_equal(suggest_distance("lisen", "listen"), 1);
	assert_int_equal(suggest_distance("", "abc"), 3);
	assert_int_equal(suggest_distance("abcdefghijklmnopqrstuvwxyz0123456", "a"), SIZE_MAX);
	assert_string_equal(suggest_nearest("lisen", names, 4), "listen");
	assert_string_equal(suggest_nearest("lst", names, 4), "list");
	assert_string_equal(suggest_nearest("stats", names, 4), "status");
	assert_null(suggest_nearest("port", names, 4));
	/* "b" is one edit from "a", but that edit replaces all of it. */
	assert_null(suggest_nearest("b", names, 4));
	assert_null(suggest_nearest("anything", names, 0));
}

static void test_config_help(void **state)
{
	const char *const help[] = {"serve", "--help", NULL};
	const char *const help_after[] = {"serve", "--max-retries", "5", "--help", NULL};
	const char *const help_then_bad[] = {"serve", "--help", "--bogus", NULL};
	serve_config_t c;
	char out[4096];

	config_defaults(&c);
	assert_int_equal(parse_captured(&c, help, 1, out, sizeof(out)), 1);
	assert_non_null(strstr(out, "usage: inferq serve"));
	assert_non_null(strstr(out, "--max-json-depth"));
	assert_non_null(strstr(out, "--idempotency-ttl"));

	config_defaults(&c);
	assert_int_equal(parse_captured(&c, help_after, 1, out, sizeof(out)), 1);
	assert_non_null(strstr(out, "usage: inferq serve"));

	/* --help stops parsing before the unknown flag after it. */
	config_defaults(&c);
	assert_int_equal(parse_captured(&c, help_then_bad, 1, out, sizeof(out)), 1);
}

static void test_config_repeated_and_combined(void **state)
{
	const char *const list[] = {"serve",       "--max-retries=1", "--max-retries", "9",
	                            "--log-level", "debug",           "--retention",   "2h",
	                            NULL};
	serve_config_t c;
	char err[512];

	config_defaults(&c);
	assert_int_equal(parse_flags(&c, list, err, sizeof(err)), 0);
	assert_int_equal(c.max_retries, 9);
	assert_int_equal(c.log_level, LOG_DEBUG);
	assert_int_equal(c.retention_ms, 2LL * 3600000);
	assert_string_equal(err, "");
}

static void test_config_parse_twice(void **state)
{
	const char *const bad[] = {"serve", "-xy", NULL};
	const char *const good[] = {"serve", "--max-retries", "7", NULL};
	serve_config_t c;
	char err[512];

	/* A failed parse that stopped inside "-xy" must not leak into the next one. */
	config_defaults(&c);
	assert_int_equal(parse_flags(&c, bad, err, sizeof(err)), INFERQ_EINVAL);
	config_defaults(&c);
	if (parse_flags(&c, good, err, sizeof(err)) != 0)
		fail_msg("second parse failed: %s", err);
	assert_int_equal(c.max_retries, 7);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_id_v7_layout),
	    cmocka_unit_test(test_id_v7_prefix_text),
	    cmocka_unit_test(test_id_v7_sorts_by_time),
	    cmocka_unit_test(test_id_v4_layout),
	    cmocka_unit_test(test_ids_distinct_across_refills),
	    cmocka_unit_test(test_ids_fork_child_differs),
	    cmocka_unit_test(test_id_format_known),
	    cmocka_unit_test(test_id_round_trip),
	    cmocka_unit_test(test_id_parse_upper_case),
	    cmocka_unit_test(test_id_parse_reads_only_len),
	    cmocka_unit_test(test_id_parse_malformed),
	    cmocka_unit_test(test_random_bytes_fill),
	    cmocka_unit_test(test_rfc3339_known_instants),
	    cmocka_unit_test(test_rfc3339_extremes_stay_in_shape),
	    cmocka_unit_test(test_duration_valid),
	    cmocka_unit_test(test_duration_invalid),
	    cmocka_unit_test(test_duration_overflow),
	    cmocka_unit_test(test_duration_bounded_by_len),
	    cmocka_unit_test(test_clock_fake_source),
	    cmocka_unit_test(test_buf_append_growth),
	    cmocka_unit_test(test_buf_empty_operations),
	    cmocka_unit_test(test_buf_printf_growth),
	    cmocka_unit_test(test_buf_integers),
	    cmocka_unit_test(test_rbuf_refs),
	    cmocka_unit_test(test_log_quote_escaping),
	    cmocka_unit_test(test_log_quote_truncation),
	    cmocka_unit_test(test_log_quote_always_fits),
	    cmocka_unit_test(test_config_defaults),
	    cmocka_unit_test(test_config_valid_values),
	    cmocka_unit_test(test_config_strings),
	    cmocka_unit_test(test_config_invalid_values),
	    cmocka_unit_test(test_config_bad_command_lines),
	    cmocka_unit_test(test_suggest_nearest),
	    cmocka_unit_test(test_config_help),
	    cmocka_unit_test(test_config_repeated_and_combined),
	    cmocka_unit_test(test_config_parse_twice),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
