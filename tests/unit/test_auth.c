/*
 * Tests of the pure authentication rules: model patterns, address ranges,
 * the loopback test of --auth none, the Bearer header, the client address
 * behind a trusted proxy, and the limiter of failed authentications.
 *
 * SPDX-License-Identifier: MIT
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "auth.h"
#include "inferq_error.h"

static int check(const char *pattern)
{
	return auth_pattern_check(pattern, strlen(pattern), 128);
}

static int matches(const char *pattern, const char *model)
{
	return auth_pattern_matches(pattern, strlen(pattern), model, strlen(model));
}

static void pattern_check_accepts(void **state)
{
	const char *good[] = {"*", "my-org/model", "my-org/*", "a/*", "org/sub/*", "m", "v1.2:x_y"};

	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
		assert_int_equal(check(good[i]), 0);
}

static void pattern_check_rejects(void **state)
{
	const char *bad[] = {"",       "**",      "org*",   "*/model", "org/**", "/*",
			     "o rg/*", "org/m*",  "org/*x", "*org",    "org/\x01", "org/é"};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		print_message("pattern %s\n", bad[i]);
		assert_int_equal(check(bad[i]), INFERQ_EINVAL);
	}
}

static void pattern_check_length(void **state)
{
	char name[131];

	memset(name, 'a', sizeof(name));
	assert_int_equal(auth_pattern_check(name, 128, 128), 0);
	assert_int_equal(auth_pattern_check(name, 129, 128), INFERQ_EINVAL);
	/* A prefix pattern may be as long as a model name plus "*". */
	name[127] = '/';
	name[128] = '*';
	assert_int_equal(auth_pattern_check(name, 129, 128), 0);
}

static void pattern_star_covers_all(void **state)
{
	assert_true(matches("*", "a"));
	assert_true(matches("*", "org/model"));
}

static void pattern_exact(void **state)
{
	assert_true(matches("org/model", "org/model"));
	assert_false(matches("org/model", "org/model2"));
	assert_false(matches("org/model", "org/mode"));
	assert_false(matches("org/model", "ORG/model"));
}

static void pattern_prefix(void **state)
{
	assert_true(matches("org/*", "org/model"));
	assert_true(matches("org/*", "org/a/b"));
	assert_false(matches("org/*", "org/"));
	assert_false(matches("org/*", "org"));
	assert_false(matches("org/*", "organisation/model"));
	assert_false(matches("org/*", "other/org/model"));
	assert_true(matches("org/sub/*", "org/sub/x"));
	assert_false(matches("org/sub/*", "org/subx"));
}

static void cidr_parse_valid(void **state)
{
	auth_cidr_t c;

	assert_int_equal(auth_cidr_parse("10.0.0.0/8", &c), 0);
	assert_int_equal(c.family, 4);
	assert_int_equal(c.prefix, 8);
	assert_int_equal(c.addr[0], 10);
	assert_int_equal(auth_cidr_parse("127.0.0.1", &c), 0);
	assert_int_equal(c.prefix, 32);
	assert_int_equal(auth_cidr_parse("0.0.0.0/0", &c), 0);
	assert_int_equal(c.prefix, 0);
	assert_int_equal(auth_cidr_parse("fd00::/8", &c), 0);
	assert_int_equal(c.family, 6);
	assert_int_equal(c.prefix, 8);
	assert_int_equal(auth_cidr_parse("::1", &c), 0);
	assert_int_equal(c.prefix, 128);
	assert_int_equal(auth_cidr_parse("192.168.1.128/25", &c), 0);
}

static void cidr_parse_invalid(void **state)
{
	const char *bad[] = {"",         "/8",         "10.0.0.0/",   "10.0.0.0/33", "10.0.0.0/-1",
			     "10.0.0.0/8x", "10.0.0.1/8", "10.0.0/8",   "fd00::/129",  "fd00::1/8",
			     "host/8",   "10.0.0.0/ 8", "10.0.0.0/+8", "1.2.3.4/08x"};
	auth_cidr_t c;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		print_message("range %s\n", bad[i]);
		assert_int_equal(auth_cidr_parse(bad[i], &c), INFERQ_EINVAL);
	}
}

static int in_range(const char *range, const char *ip)
{
	auth_cidr_t c;

	assert_int_equal(auth_cidr_parse(range, &c), 0);
	return auth_cidr_contains(&c, ip);
}

static void cidr_contains(void **state)
{
	assert_true(in_range("10.0.0.0/8", "10.1.2.3"));
	assert_false(in_range("10.0.0.0/8", "11.0.0.0"));
	assert_true(in_range("192.168.1.128/25", "192.168.1.255"));
	assert_false(in_range("192.168.1.128/25", "192.168.1.127"));
	assert_true(in_range("127.0.0.1/32", "127.0.0.1"));
	assert_false(in_range("127.0.0.1/32", "127.0.0.2"));
	assert_true(in_range("0.0.0.0/0", "8.8.8.8"));
	assert_false(in_range("0.0.0.0/0", "::1"));
	assert_true(in_range("fd00::/8", "fd12::1"));
	assert_false(in_range("fd00::/8", "fe80::1"));
	assert_false(in_range("fd00::/8", "10.0.0.1"));
	assert_false(in_range("10.0.0.0/8", "not-an-ip"));
	assert_false(in_range("10.0.0.0/8", ""));
}

static void cidr_contains_mapped(void **state)
{
	/* An IPv4 client seen on an IPv6 socket, and an IPv4-mapped range. */
	assert_true(in_range("10.0.0.0/8", "::ffff:10.9.8.7"));
	assert_false(in_range("10.0.0.0/8", "::ffff:11.0.0.1"));
	assert_true(in_range("::ffff:10.0.0.0/104", "10.1.1.1"));
	assert_false(in_range("::ffff:10.0.0.0/104", "11.1.1.1"));
}

static void listen_loopback(void **state)
{
	assert_true(auth_listen_is_loopback("127.0.0.1:8080"));
	assert_true(auth_listen_is_loopback("127.1.2.3:0"));
	assert_true(auth_listen_is_loopback("[::1]:8080"));
	assert_true(auth_listen_is_loopback("localhost:8080"));
	assert_false(auth_listen_is_loopback("0.0.0.0:0"));
	assert_false(auth_listen_is_loopback("[::]:8080"));
	assert_false(auth_listen_is_loopback("10.0.0.1:8080"));
	assert_false(auth_listen_is_loopback("128.0.0.1:8080"));
	assert_false(auth_listen_is_loopback("localhost.example.com:80"));
	assert_false(auth_listen_is_loopback(":8080"));
}

/* A request with the given headers (name, value pairs) from peer. */
typedef struct {
	http_request_t req;
	http_header_t headers[4];
} fake_t;

static void fake(fake_t *f, const char *peer, const char *const *pairs, size_t n)
{
	memset(f, 0, sizeof(*f));
	for (size_t i = 0; i < n; i++) {
		f->headers[i].name = pairs[2 * i];
		f->headers[i].name_len = strlen(pairs[2 * i]);
		f->headers[i].value = pairs[2 * i + 1];
		f->headers[i].value_len = strlen(pairs[2 * i + 1]);
	}
	f->req.headers = f->headers;
	f->req.header_count = n;
	snprintf(f->req.remote_addr, sizeof(f->req.remote_addr), "%s", peer);
}

static auth_bearer_t bearer(const char *value, char *key_out)
{
	const char *pairs[] = {"Authorization", value};
	const char *key = NULL;
	size_t len = 0;
	fake_t f;
	auth_bearer_t kind;

	fake(&f, "127.0.0.1:1", pairs, 1);
	kind = auth_read_bearer(&f.req, &key, &len);
	if (kind == AUTH_BEARER_OK) {
		memcpy(key_out, key, len);
		key_out[len] = '\0';
	}
	return kind;
}

static void bearer_forms(void **state)
{
	char key[64];

	assert_int_equal(bearer("Bearer iq_abc", key), AUTH_BEARER_OK);
	assert_string_equal(key, "iq_abc");
	assert_int_equal(bearer("bearer iq_abc", key), AUTH_BEARER_OK);
	assert_string_equal(key, "iq_abc");
	assert_int_equal(bearer("BEARER  \tiq_abc", key), AUTH_BEARER_OK);
	assert_string_equal(key, "iq_abc");
	assert_int_equal(bearer("Bearer", key), AUTH_BEARER_MISSING);
	assert_int_equal(bearer("", key), AUTH_BEARER_MISSING);
	assert_int_equal(bearer("Basic dXNlcjpwYXNz", key), AUTH_BEARER_SCHEME);
	assert_int_equal(bearer("Bearerabc", key), AUTH_BEARER_SCHEME);
	assert_int_equal(bearer("iq_abc", key), AUTH_BEARER_SCHEME);
	assert_int_equal(bearer("Bearer iq abc", key), AUTH_BEARER_MALFORMED);
}

static void bearer_missing_or_twice(void **state)
{
	const char *two[] = {"authorization", "Bearer a", "AUTHORIZATION", "Bearer b"};
	const char *other[] = {"Host", "x"};
	const char *key;
	size_t len;
	fake_t f;

	fake(&f, "127.0.0.1:1", other, 1);
	assert_int_equal(auth_read_bearer(&f.req, &key, &len), AUTH_BEARER_MISSING);
	fake(&f, "127.0.0.1:1", two, 2);
	assert_int_equal(auth_read_bearer(&f.req, &key, &len), AUTH_BEARER_MALFORMED);
}

static void client_address(const char *peer, const char *const *pairs, size_t n,
			   const char *proxy, char out[AUTH_ADDR_LEN])
{
	auth_cidr_t range = {0};
	fake_t f;

	fake(&f, peer, pairs, n);
	if (proxy)
		assert_int_equal(auth_cidr_parse(proxy, &range), 0);
	auth_client_address(&f.req, &range, proxy ? 1 : 0, out);
}

static void address_from_peer(void **state)
{
	const char *xff[] = {"X-Forwarded-For", "203.0.113.9"};
	char addr[AUTH_ADDR_LEN];

	client_address("192.0.2.1:5555", NULL, 0, NULL, addr);
	assert_string_equal(addr, "192.0.2.1");
	client_address("[2001:db8::1]:443", NULL, 0, NULL, addr);
	assert_string_equal(addr, "2001:db8::1");
	/* Without a trusted proxy, X-Forwarded-For is ignored. */
	client_address("192.0.2.1:5555", xff, 1, NULL, addr);
	assert_string_equal(addr, "192.0.2.1");
	/* A peer outside the trusted range cannot set its address either. */
	client_address("192.0.2.1:5555", xff, 1, "10.0.0.0/8", addr);
	assert_string_equal(addr, "192.0.2.1");
}

static void address_from_proxy(void **state)
{
	const char *one[] = {"X-Forwarded-For", "203.0.113.9"};
	const char *chain[] = {"x-forwarded-for", "198.51.100.1, 203.0.113.9 "};
	const char *two[] = {"X-Forwarded-For", "198.51.100.1", "X-Forwarded-For", "2001:db8::7"};
	const char *junk[] = {"X-Forwarded-For", "203.0.113.9, unknown"};
	const char *empty[] = {"X-Forwarded-For", ""};
	char addr[AUTH_ADDR_LEN];

	client_address("10.1.1.1:80", one, 1, "10.0.0.0/8", addr);
	assert_string_equal(addr, "203.0.113.9");
	/* The last hop is the one the trusted proxy added; earlier ones are the client's word. */
	client_address("10.1.1.1:80", chain, 1, "10.0.0.0/8", addr);
	assert_string_equal(addr, "203.0.113.9");
	client_address("10.1.1.1:80", two, 2, "10.0.0.0/8", addr);
	assert_string_equal(addr, "2001:db8::7");
	client_address("10.1.1.1:80", junk, 1, "10.0.0.0/8", addr);
	assert_string_equal(addr, "10.1.1.1");
	client_address("10.1.1.1:80", empty, 1, "10.0.0.0/8", addr);
	assert_string_equal(addr, "10.1.1.1");
	client_address("10.1.1.1:80", NULL, 0, "10.0.0.0/8", addr);
	assert_string_equal(addr, "10.1.1.1");
}

static void limiter_blocks_after_limit(void **state)
{
	auth_limiter_t *l = auth_limiter_new(3, 10000, 60000, 100);

	for (int i = 0; i < 3; i++)
		assert_int_equal(auth_limiter_fail(l, "a", 1000 + i), 0);
	assert_int_equal(auth_limiter_blocked(l, "a", 1003), 0);
	assert_int_equal(auth_limiter_fail(l, "a", 1004), 1);
	assert_int_equal(auth_limiter_blocked(l, "a", 1004), 60000);
	assert_int_equal(auth_limiter_blocked(l, "a", 61003), 1);
	assert_int_equal(auth_limiter_blocked(l, "a", 61004), 0);
	/* Other addresses are not affected. */
	assert_int_equal(auth_limiter_blocked(l, "b", 1004), 0);
	auth_limiter_free(l);
}

static void limiter_window_resets(void **state)
{
	auth_limiter_t *l = auth_limiter_new(3, 10000, 60000, 100);

	/* Three failures per window never block, however many windows pass. */
	for (int w = 0; w < 5; w++) {
		for (int i = 0; i < 3; i++)
			assert_int_equal(auth_limiter_fail(l, "a", w * 10000 + i), 0);
	}
	assert_int_equal(auth_limiter_blocked(l, "a", 50000), 0);
	auth_limiter_free(l);
}

static void limiter_full_table_fails_open(void **state)
{
	auth_limiter_t *l = auth_limiter_new(1, 10000, 60000, 2);

	assert_int_equal(auth_limiter_fail(l, "a", 0), 0);
	assert_int_equal(auth_limiter_fail(l, "b", 0), 0);
	/* The table is full: "c" is not tracked and never blocked. */
	assert_int_equal(auth_limiter_fail(l, "c", 1), 0);
	assert_int_equal(auth_limiter_fail(l, "c", 2), 0);
	assert_int_equal(auth_limiter_blocked(l, "c", 3), 0);
	/* Once the windows of a and b are over, their entries make room. */
	assert_int_equal(auth_limiter_fail(l, "c", 20000), 0);
	assert_int_equal(auth_limiter_fail(l, "c", 20001), 1);
	assert_true(auth_limiter_blocked(l, "c", 20002) > 0);
	auth_limiter_free(l);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(pattern_check_accepts),
		cmocka_unit_test(pattern_check_rejects),
		cmocka_unit_test(pattern_check_length),
		cmocka_unit_test(pattern_star_covers_all),
		cmocka_unit_test(pattern_exact),
		cmocka_unit_test(pattern_prefix),
		cmocka_unit_test(cidr_parse_valid),
		cmocka_unit_test(cidr_parse_invalid),
		cmocka_unit_test(cidr_contains),
		cmocka_unit_test(cidr_contains_mapped),
		cmocka_unit_test(listen_loopback),
		cmocka_unit_test(bearer_forms),
		cmocka_unit_test(bearer_missing_or_twice),
		cmocka_unit_test(address_from_peer),
		cmocka_unit_test(address_from_proxy),
		cmocka_unit_test(limiter_blocks_after_limit),
		cmocka_unit_test(limiter_window_resets),
		cmocka_unit_test(limiter_full_table_fails_open),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
