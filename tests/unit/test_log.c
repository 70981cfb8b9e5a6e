/*
 * Tests of the log line formats: text and JSON lines of log_event() and
 * log_write(), escaping of untrusted values, truncation with its mark, and
 * lines that overflow the line buffer. Lines are written to a pipe
 * (log_set_fd) and JSON lines are parsed back with jansson.
 *
 * SPDX-License-Identifier: MIT
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "inferq_error.h"
#include "log.h"

static int pipe_fds[2];
static int saved_fd;

static int setup(void **state)
{
	if (pipe(pipe_fds) != 0)
		return -1;
	saved_fd = log_set_fd(pipe_fds[1]);
	log_set_level(LOG_DEBUG);
	return 0;
}

static int teardown(void **state)
{
	log_set_fd(saved_fd);
	log_set_format(LOG_FORMAT_TEXT);
	log_set_level(LOG_INFO);
	close(pipe_fds[0]);
	close(pipe_fds[1]);
	return 0;
}

/* Reads the one line written since the last call into out (NUL-terminated, without '\n'). */
static void read_line(char *out, size_t outlen)
{
	ssize_t n = read(pipe_fds[0], out, outlen - 1);

	assert_true(n > 0);
	out[n] = '\0';
	assert_int_equal(out[n - 1], '\n');
	assert_null(memchr(out, '\n', (size_t)n - 1)); /* exactly one line */
	out[n - 1] = '\0';
}

static json_t *read_json_line(void)
{
	static char line[8192];
	json_error_t err;
	json_t *obj;

	read_line(line, sizeof(line));
	obj = json_loads(line, 0, &err);
	if (obj == NULL)
		fail_msg("not valid JSON (%s): %s", err.text, line);
	assert_true(json_is_object(obj));
	return obj;
}

static const char *str_member(json_t *obj, const char *key)
{
	json_t *v = json_object_get(obj, key);

	if (!json_is_string(v))
		fail_msg("member %s missing or not a string", key);
	return json_string_value(v);
}

/* "2026-02-07T10:30:00.123Z": RFC 3339, UTC, milliseconds. */
static void assert_timestamp(const char *ts)
{
	static const char shape[] = "dddd-dd-ddTdd:dd:dd.dddZ";

	assert_int_equal(strlen(ts), strlen(shape));
	for (size_t i = 0; shape[i]; i++) {
		if (shape[i] == 'd')
			assert_true(ts[i] >= '0' && ts[i] <= '9');
		else
			assert_int_equal(ts[i], shape[i]);
	}
}

static void test_format_parse(void **state)
{
	log_format_t f;

	assert_int_equal(log_parse_format("text", &f), 0);
	assert_int_equal(f, LOG_FORMAT_TEXT);
	assert_int_equal(log_parse_format("json", &f), 0);
	assert_int_equal(f, LOG_FORMAT_JSON);
	assert_int_equal(log_parse_format("JSON5", &f), INFERQ_EINVAL);
	assert_int_equal(log_parse_format("", &f), INFERQ_EINVAL);
}

static void test_json_event_fields(void **state)
{
	json_t *obj;

	log_set_format(LOG_FORMAT_JSON);
	log_fields(LOG_WARN, "lease", "lease expired", LOG_STR("request_id", "0193-abc"),
		   LOG_STR("model", "org/m"), LOG_INT("delta", -5), LOG_UINT("retries", 3),
		   LOG_DOUBLE("duration_ms", 1.5));
	obj = read_json_line();
	assert_timestamp(str_member(obj, "ts"));
	assert_string_equal(str_member(obj, "level"), "warn");
	assert_string_equal(str_member(obj, "subsystem"), "lease");
	assert_string_equal(str_member(obj, "msg"), "lease expired");
	assert_string_equal(str_member(obj, "request_id"), "0193-abc");
	assert_string_equal(str_member(obj, "model"), "org/m");
	assert_int_equal(json_integer_value(json_object_get(obj, "delta")), -5);
	assert_int_equal(json_integer_value(json_object_get(obj, "retries")), 3);
	assert_true(json_real_value(json_object_get(obj, "duration_ms")) == 1.5);
	assert_int_equal(json_object_size(obj), 9);
	json_decref(obj);
}

static void test_text_event_fields(void **state)
{
	char line[4096];

	log_set_format(LOG_FORMAT_TEXT);
	log_fields(LOG_INFO, "queue", "claimed", LOG_STR("request_id", "0193-abc"),
		   LOG_STR("model", "org/m"), LOG_TEXT("worker", "gpu 0 \"a\"", 9),
		   LOG_UINT("retries", 2), LOG_STR("empty", ""));
	read_line(line, sizeof(line));
	assert_timestamp(strtok(line, " "));
	assert_string_equal(line + 25, "info  queue: claimed request_id=0193-abc model=org/m "
				       "worker=\"gpu 0 \\\"a\\\"\" retries=2 empty=\"\"");
}

static void test_text_truncated_with_mark(void **state)
{
	char input[300];
	char line[4096];
	char *value;

	memset(input, 'x', sizeof(input));
	log_set_format(LOG_FORMAT_TEXT);
	log_fields(LOG_INFO, "access", "request", LOG_TEXT("path", input, sizeof(input)));
	read_line(line, sizeof(line));
	value = strstr(line, " path=\"");
	assert_non_null(value);
	value += 7;
	assert_int_equal(strspn(value, "x"), LOG_TEXT_MAX);
	assert_string_equal(value + LOG_TEXT_MAX, LOG_TRUNCATED_MARK "\"");
}

static void test_json_text_escaped_and_truncated(void **state)
{
	char input[200];
	json_t *obj;
	const char *path;

	/* Quote, backslash, control bytes, a valid UTF-8 letter and an invalid byte. */
	memcpy(input, "a\"b\\c\n\x01\x7f caf\xc3\xa9 \xff", 16);
	memset(input + 16, 'y', sizeof(input) - 16);
	log_set_format(LOG_FORMAT_JSON);
	log_fields(LOG_INFO, "access", "request", LOG_TEXT("path", input, sizeof(input)),
		   LOG_INT("status", 404));
	obj = read_json_line();
	path = str_member(obj, "path");
	assert_memory_equal(path, "a\"b\\c\n\x01\\x7f caf\xc3\xa9 \\xff", 22);
	assert_int_equal(strlen(path), 22 + (LOG_TEXT_MAX - 16) + strlen(LOG_TRUNCATED_MARK));
	assert_string_equal(path + strlen(path) - strlen(LOG_TRUNCATED_MARK), LOG_TRUNCATED_MARK);
	assert_int_equal(json_integer_value(json_object_get(obj, "status")), 404);
	json_decref(obj);
}

static void test_json_overlong_line_stays_valid(void **state)
{
	char *big = malloc(10000);
	json_t *obj;
	const char *error;

	memset(big, '"', 9999); /* each byte needs an escape */
	big[9999] = '\0';
	log_set_format(LOG_FORMAT_JSON);
	log_fields(LOG_ERROR, "store", "commit failed", LOG_STR("request_id", "r1"),
		   LOG_STR("error", big), LOG_STR("model", "dropped"));
	obj = read_json_line();
	error = str_member(obj, "error");
	assert_string_equal(error + strlen(error) - strlen(LOG_TRUNCATED_MARK), LOG_TRUNCATED_MARK);
	assert_true(strlen(error) > 1000);
	assert_string_equal(str_member(obj, "request_id"), "r1");
	assert_null(json_object_get(obj, "model")); /* no room left after the cut value */
	json_decref(obj);
	free(big);
}

static void test_json_log_write_message(void **state)
{
	json_t *obj;

	log_set_format(LOG_FORMAT_JSON);
	log_info("server", "listening on %s:%d \"now\"\t", "127.0.0.1", 8080);
	obj = read_json_line();
	assert_string_equal(str_member(obj, "msg"), "listening on 127.0.0.1:8080 \"now\"\t");
	assert_string_equal(str_member(obj, "level"), "info");
	json_decref(obj);
}

static void test_text_log_write_unchanged(void **state)
{
	char line[4096];

	log_set_format(LOG_FORMAT_TEXT);
	log_warn("server", "second %s during the stop", "SIGTERM");
	read_line(line, sizeof(line));
	assert_string_equal(line + 25, "warn  server: second SIGTERM during the stop");
}

static void test_level_filter(void **state)
{
	char line[4096];

	log_set_format(LOG_FORMAT_TEXT);
	log_set_level(LOG_WARN);
	log_fields(LOG_INFO, "queue", "hidden", LOG_STR("model", "m"));
	log_fields(LOG_ERROR, "queue", "shown", LOG_STR("model", "m"));
	read_line(line, sizeof(line));
	assert_non_null(strstr(line, "shown"));
	assert_null(strstr(line, "hidden"));
	log_set_level(LOG_DEBUG);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_format_parse),
	    cmocka_unit_test_setup_teardown(test_json_event_fields, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_text_event_fields, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_text_truncated_with_mark, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_json_text_escaped_and_truncated, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_json_overlong_line_stays_valid, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_json_log_write_message, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_text_log_write_unchanged, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_level_filter, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
