/*
 * Unit tests for the dashboard's file table and If-None-Match matching
 * (dashboard.h). They read the real table that scripts/embed_web.py
 * generated from web/ for this build.
 *
 * SPDX-License-Identifier: MIT
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <string.h>

#include "dashboard.h"

static int matches(const char *header, const char *etag)
{
	return dashboard_etag_matches(header, strlen(header), etag);
}

static void test_table_sorted_and_tagged(void **state)
{
	assert_true(web_asset_count >= 2);
	for (size_t i = 0; i < web_asset_count; i++) {
		const web_asset_t *a = &web_assets[i];
		size_t tag_len = strlen(a->etag);

		assert_true(a->len > 0);
		assert_non_null(a->data);
		assert_true(tag_len == 22);
		assert_int_equal(a->etag[0], '"');
		assert_int_equal(a->etag[tag_len - 1], '"');
		assert_non_null(strchr(a->content_type, '/'));
		if (i > 0)
			assert_true(strcmp(web_assets[i - 1].name, a->name) < 0);
	}
}

static void test_find_exact_names(void **state)
{
	const web_asset_t *index = dashboard_find("index.html", 10);
	const web_asset_t *script = dashboard_find("app.js", 6);

	assert_non_null(index);
	assert_string_equal(index->content_type, "text/html; charset=utf-8");
	assert_non_null(script);
	assert_string_equal(script->content_type, "text/javascript; charset=utf-8");

	/* A prefix of a name, or a name with more after it, is another name. */
	assert_null(dashboard_find("app.j", 5));
	assert_null(dashboard_find("app.js/", 7));
	assert_null(dashboard_find("APP.JS", 6));
	assert_null(dashboard_find("../app.js", 9));
	assert_null(dashboard_find("", 0));
	/* The length bounds the name: "app.jsX" with length 6 is app.js. */
	assert_ptr_equal(dashboard_find("app.jsX", 6), script);
}

static void test_etag_exact_and_weak(void **state)
{
	const char *tag = "\"abc123\"";

	assert_int_equal(matches("\"abc123\"", tag), 1);
	assert_int_equal(matches("W/\"abc123\"", tag), 1);
	assert_int_equal(matches("*", tag), 1);
	assert_int_equal(matches("\"abc12\"", tag), 0);
	assert_int_equal(matches("\"abc1234\"", tag), 0);
	assert_int_equal(matches("abc123", tag), 0);
}

static void test_etag_lists(void **state)
{
	const char *tag = "\"abc123\"";

	assert_int_equal(matches("\"x\", \"abc123\"", tag), 1);
	assert_int_equal(matches("\"x\",W/\"abc123\"", tag), 1);
	assert_int_equal(matches(" ,\t\"abc123\" , ", tag), 1);
	assert_int_equal(matches("\"x\", \"y\"", tag), 0);
	/* A malformed entry stops the scan, so the tags after it do not match. */
	assert_int_equal(matches("x, \"abc123\"", tag), 0);
}

static void test_etag_malformed(void **state)
{
	const char *tag = "\"abc123\"";

	assert_int_equal(matches("", tag), 0);
	assert_int_equal(matches(",,", tag), 0);
	assert_int_equal(matches("W/", tag), 0);
	assert_int_equal(matches("W", tag), 0);
	assert_int_equal(matches("\"abc123", tag), 0);
	assert_int_equal(matches("\"", tag), 0);
	/* The header length bounds the scan: no read past it. */
	assert_int_equal(dashboard_etag_matches("\"abc123\"", 7, tag), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_table_sorted_and_tagged),
	    cmocka_unit_test(test_find_exact_names),
	    cmocka_unit_test(test_etag_exact_and_weak),
	    cmocka_unit_test(test_etag_lists),
	    cmocka_unit_test(test_etag_malformed),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
