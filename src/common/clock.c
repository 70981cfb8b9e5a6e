/*
 * Clocks, RFC 3339 formatting and duration parsing (see clock.h).
 *
 * SPDX-License-Identifier: MIT
 */
#include "clock.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#include "inferq_error.h"

static int64_t (*fake_wall)(void *);
static int64_t (*fake_mono)(void *);
static void *fake_ctx;

void clock_set_source(int64_t (*wall_ms)(void *), int64_t (*mono_ms)(void *), void *ctx)
{
	fake_wall = wall_ms;
	fake_mono = mono_ms;
	fake_ctx = ctx;
}

static int64_t read_clock(clockid_t id)
{
	struct timespec ts;

	clock_gettime(id, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t clock_wall_ms(void)
{
	return fake_wall ? fake_wall(fake_ctx) : read_clock(CLOCK_REALTIME);
}

int64_t clock_mono_ms(void)
{
	return fake_mono ? fake_mono(fake_ctx) : read_clock(CLOCK_MONOTONIC);
}

static void put_digits(char *out, int value, int width)
{
	for (int i = width - 1; i >= 0; i--) {
		out[i] = (char)('0' + value % 10);
		value /= 10;
	}
}

void clock_format_rfc3339(int64_t ms, char out[RFC3339_LEN + 1])
{
	time_t secs = (time_t)(ms / 1000 - (ms % 1000 < 0)); /* floor, without overflow */
	struct tm tm;
	int year;

	gmtime_r(&secs, &tm);
	year = tm.tm_year + 1900;
	if (year < 0)
		year = 0;
	if (year > 9999)
		year = 9999;
	memcpy(out, "0000-00-00T00:00:00Z", RFC3339_LEN + 1);
	put_digits(out, year, 4);
	put_digits(out + 5, tm.tm_mon + 1, 2);
	put_digits(out + 8, tm.tm_mday, 2);
	put_digits(out + 11, tm.tm_hour, 2);
	put_digits(out + 14, tm.tm_min, 2);
	put_digits(out + 17, tm.tm_sec, 2);
}

static int unit_ms(const char *u, size_t n, int64_t *out)
{
	static const struct {
		const char *name;
		int64_t ms;
	} units[] = {{"ms", 1}, {"s", 1000}, {"m", 60000}, {"h", 3600000}, {"d", 86400000}};

	for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
		if (strlen(units[i].name) == n && memcmp(units[i].name, u, n) == 0) {
			*out = units[i].ms;
			return 0;
		}
	}
	return INFERQ_EINVAL;
}

int clock_parse_duration(const char *s, size_t len, int64_t default_unit_ms, int64_t *out)
{
	const double max_ms = 9007199254740992.0; /* 2^53 */
	double whole = 0, frac = 0, scale = 1;
	size_t i = 0, digits = 0;
	int64_t unit = default_unit_ms;
	double total;

	while (i < len && s[i] >= '0' && s[i] <= '9') {
		whole = whole * 10 + (s[i++] - '0');
		digits++;
	}
	if (i < len && s[i] == '.') {
		i++;
		while (i < len && s[i] >= '0' && s[i] <= '9') {
			scale /= 10;
			frac += (s[i++] - '0') * scale;
			digits++;
		}
	}
	if (digits == 0)
		return INFERQ_EINVAL;
	if (i < len && unit_ms(s + i, len - i, &unit) != 0)
		return INFERQ_EINVAL;
	total = (whole + frac) * (double)unit;
	if (total > max_ms)
		return INFERQ_ERANGE;
	*out = (int64_t)(total + 0.5);
	return 0;
}
