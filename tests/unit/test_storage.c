/*
 * Unit tests for the pure rules of output-file storage (storage_rules.c):
 * the filename parser, path segment decoding, upload URL signatures, the
 * Range resolver, content types and the public base URL. They also run the
 * blocking file write and read of storage.c on a temp directory. The signature's
 * expected value was computed with Python's hmac module, an independent
 * HMAC-SHA256.
 *
 * SPDX-License-Identifier: MIT
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "inferq_error.h"
#include "storage.h"

static const char sample_id[] = "01938f6e-8a1c-7cc2-9b1e-3f0a5e0c2d11";

static int parse(const char *name, size_t max_len, char *reason, size_t reason_len)
{
	iq_id_t id;

	return storage_filename_parse(name, strlen(name), max_len, &id, reason, reason_len);
}

/* Builds sample_id + "-" + rest in out. */
static const char *with_id(char *out, size_t outlen, const char *rest)
{
	snprintf(out, outlen, "%s-%s", sample_id, rest);
	return out;
}

/* ---- filenames ---- */

static void test_filename_valid(void **state)
{
	static const char *const rests[] = {"out.mp4", "a", "A_b-c.1.png", "-x", "_", "x.",
					    "video.final.webm"};
	char name[300], reason[256], text[ID_TEXT_LEN + 1];
	iq_id_t id;

	for (size_t i = 0; i < sizeof(rests) / sizeof(rests[0]); i++) {
		with_id(name, sizeof(name), rests[i]);
		assert_int_equal(storage_filename_parse(name, strlen(name), 255, &id, reason,
							sizeof(reason)),
				 0);
		id_format(&id, text);
		assert_string_equal(text, sample_id);
	}
}

static void test_filename_bad_id(void **state)
{
	static const char *const names[] = {
		"out.mp4",
		"01938f6e-8a1c-7cc2-9b1e-3f0a5e0c2d11",
		"01938f6e-8a1c-7cc2-9b1e-3f0a5e0c2d11-",
		"01938f6e-8a1c-7cc2-9b1e-3f0a5e0c2d11_out",
		"01938F6E-8A1C-7CC2-9B1E-3F0A5E0C2D11-out",
		"01938f6e8a1c-7cc2-9b1e-3f0a5e0c2d11-out.png",
		"01938f6e-8a1c-7cc2-9b1e-3f0a5e0c2d1g-out",
		"",
	};
	char reason[256];

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		assert_int_equal(parse(names[i], 255, reason, sizeof(reason)), INFERQ_EINVAL);
		assert_non_null(strstr(reason, "request id"));
	}
}

static void test_filename_bad_names(void **state)
{
	static const struct {
		const char *rest;
		const char *reason;
	} cases[] = {
		{".hidden", "starts with '.'"},
		{"..", "starts with '.'"},
		{"a/b", "A-Z a-z 0-9"},
		{"a\\b", "A-Z a-z 0-9"},
		{"a b", "A-Z a-z 0-9"},
		{"a%2fb", "A-Z a-z 0-9"},
		{"caf\xc3\xa9", "A-Z a-z 0-9"},
		{"a..b", "\"..\""},
		{"a...", "\"..\""},
		{"x\n", "A-Z a-z 0-9"},
	};
	char name[300], reason[256];

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		with_id(name, sizeof(name), cases[i].rest);
		assert_int_equal(parse(name, 255, reason, sizeof(reason)), INFERQ_EINVAL);
		assert_non_null(strstr(reason, cases[i].reason));
	}
}

static void test_filename_nul_inside(void **state)
{
	char name[64], reason[256];
	iq_id_t id;
	size_t len;

	with_id(name, sizeof(name), "ab");
	len = strlen(name);
	name[len - 1] = '\0';
	assert_int_equal(storage_filename_parse(name, len, 255, &id, reason, sizeof(reason)),
			 INFERQ_EINVAL);
}

static void test_filename_length_limit(void **state)
{
	char name[300], rest[260], reason[256];

	memset(rest, 'x', 218);
	rest[218] = '\0';
	with_id(name, sizeof(name), rest); /* 36 + 1 + 218 = 255 bytes */
	assert_int_equal(strlen(name), 255);
	assert_int_equal(parse(name, 255, reason, sizeof(reason)), 0);
	strcat(name, "x");
	assert_int_equal(parse(name, 255, reason, sizeof(reason)), INFERQ_EINVAL);
	assert_non_null(strstr(reason, "256 bytes"));
	assert_non_null(strstr(reason, "--max-filename-length"));

	with_id(name, sizeof(name), "a");
	assert_int_equal(parse(name, 38, reason, sizeof(reason)), 0);
	with_id(name, sizeof(name), "ab");
	assert_int_equal(parse(name, 38, reason, sizeof(reason)), INFERQ_EINVAL);
}

/* ---- path segments ---- */

static void test_decode_segment(void **state)
{
	char out[16];
	size_t len = 0;

	assert_int_equal(storage_decode_segment("a%2Eb%2e+c", 10, out, sizeof(out), &len), 0);
	assert_string_equal(out, "a.b.+c");
	assert_int_equal(len, 6);
	assert_int_equal(storage_decode_segment("..%2F", 5, out, sizeof(out), &len), 0);
	assert_string_equal(out, "../");
	assert_int_equal(storage_decode_segment("", 0, out, sizeof(out), &len), 0);
	assert_int_equal(len, 0);

	assert_int_equal(storage_decode_segment("a%", 2, out, sizeof(out), &len), INFERQ_EINVAL);
	assert_int_equal(storage_decode_segment("a%2", 3, out, sizeof(out), &len), INFERQ_EINVAL);
	assert_int_equal(storage_decode_segment("%zz", 3, out, sizeof(out), &len), INFERQ_EINVAL);
	assert_int_equal(storage_decode_segment("a%00b", 5, out, sizeof(out), &len),
			 INFERQ_EINVAL);
	assert_int_equal(storage_decode_segment("0123456789abcdef", 16, out, sizeof(out), &len),
			 INFERQ_ELIMIT);
	assert_int_equal(storage_decode_segment("0123456789abcde", 15, out, sizeof(out), &len), 0);
}

/* ---- signatures ---- */

static void fill_secret(uint8_t secret[STORAGE_SECRET_BYTES])
{
	for (int i = 0; i < STORAGE_SECRET_BYTES; i++)
		secret[i] = (uint8_t)i;
}

static void test_sign_known_answer(void **state)
{
	uint8_t secret[STORAGE_SECRET_BYTES];
	char name[64], sig[STORAGE_SIGNATURE_HEX + 1];

	fill_secret(secret);
	with_id(name, sizeof(name), "out.mp4");
	storage_sign(secret, name, strlen(name), 1700000000, sig);
	assert_string_equal(sig,
			    "0e8d49de42e1ae059981314a66faceafab5ed8d6806d3dd325462ed812365a66");
}

static int check(const uint8_t *secret, const char *name, const char *expires, const char *sig,
		 int64_t now)
{
	return storage_signature_check(secret, name, strlen(name), expires,
				       expires ? strlen(expires) : 0, sig, sig ? strlen(sig) : 0,
				       now);
}

static void test_signature_check(void **state)
{
	uint8_t secret[STORAGE_SECRET_BYTES], other[STORAGE_SECRET_BYTES];
	char name[64], other_name[64], sig[STORAGE_SIGNATURE_HEX + 1], upper[65], bad[65];

	fill_secret(secret);
	memcpy(other, secret, sizeof(other));
	other[31] ^= 1;
	with_id(name, sizeof(name), "out.mp4");
	with_id(other_name, sizeof(other_name), "out.mp5");
	storage_sign(secret, name, strlen(name), 1000, sig);

	assert_int_equal(check(secret, name, "1000", sig, 999), 0);
	assert_int_equal(check(secret, name, "1000", sig, 1000), 0);
	assert_int_equal(check(secret, name, "1000", sig, 1001), INFERQ_ETIMEDOUT);
	for (int i = 0; i < 65; i++)
		upper[i] = (sig[i] >= 'a' && sig[i] <= 'f') ? (char)(sig[i] - 32) : sig[i];
	assert_int_equal(check(secret, name, "1000", upper, 999), 0);

	/* Tampered parts: the expiry, the name, the secret, the signature. */
	assert_int_equal(check(secret, name, "1001", sig, 999), INFERQ_EAUTH);
	assert_int_equal(check(secret, name, "01000", sig, 999), INFERQ_EAUTH);
	assert_int_equal(check(secret, other_name, "1000", sig, 999), INFERQ_EAUTH);
	assert_int_equal(check(other, name, "1000", sig, 999), INFERQ_EAUTH);
	memcpy(bad, sig, sizeof(bad));
	bad[63] = bad[63] == '0' ? '1' : '0';
	assert_int_equal(check(secret, name, "1000", bad, 999), INFERQ_EAUTH);
	/* An expired URL with a wrong signature is reported as not authentic. */
	assert_int_equal(check(secret, name, "1000", bad, 5000), INFERQ_EAUTH);

	/* Malformed parameters. */
	bad[63] = 'g';
	assert_int_equal(check(secret, name, "1000", bad, 999), INFERQ_EAUTH);
	bad[63] = '\0';
	assert_int_equal(check(secret, name, "1000", bad, 999), INFERQ_EAUTH);
	assert_int_equal(check(secret, name, NULL, sig, 999), INFERQ_EAUTH);
	assert_int_equal(check(secret, name, "1000", NULL, 999), INFERQ_EAUTH);
	assert_int_equal(check(secret, name, "", sig, 999), INFERQ_EAUTH);
	assert_int_equal(check(secret, name, "-1", sig, 999), INFERQ_EAUTH);
	assert_int_equal(check(secret, name, "1e3", sig, 999), INFERQ_EAUTH);
	assert_int_equal(check(secret, name, "1234567890123456789", sig, 999), INFERQ_EAUTH);
}

/* ---- ranges ---- */

static int resolve(const char *header, uint64_t size, storage_range_t *r)
{
	return storage_range_resolve(header, header ? strlen(header) : 0, size, r);
}

static void test_range_single(void **state)
{
	static const struct {
		const char *header;
		uint64_t start, count;
	} cases[] = {
		{"bytes=0-0", 0, 1},
		{"bytes=10-19", 10, 10},
		{"bytes=90-", 90, 10},
		{"bytes=0-", 0, 100},
		{"bytes=-10", 90, 10},
		{"bytes=-100", 0, 100},
		{"bytes=-1000", 0, 100},
		{"bytes=95-500", 95, 5},
		{"BYTES=1-2", 1, 2},
		{"bytes=99-99999999999999999999999999", 99, 1},
		{"bytes=-99999999999999999999999999", 0, 100},
	};
	storage_range_t r;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		assert_int_equal(resolve(cases[i].header, 100, &r), 0);
		assert_int_equal(r.partial, 1);
		assert_int_equal(r.start, cases[i].start);
		assert_int_equal(r.count, cases[i].count);
	}
}

static void test_range_unsatisfiable(void **state)
{
	static const char *const headers[] = {"bytes=100-", "bytes=100-200", "bytes=-0",
					      "bytes=18446744073709551615-",
					      "bytes=99999999999999999999999-"};
	storage_range_t r;

	for (size_t i = 0; i < sizeof(headers) / sizeof(headers[0]); i++)
		assert_int_equal(resolve(headers[i], 100, &r), INFERQ_ERANGE);
	/* Every range of an empty file is unsatisfiable. */
	assert_int_equal(resolve("bytes=0-", 0, &r), INFERQ_ERANGE);
	assert_int_equal(resolve("bytes=-5", 0, &r), INFERQ_ERANGE);
}

static void test_range_whole_file(void **state)
{
	static const char *const headers[] = {
		NULL,         "",          "bytes",       "bytes=",      "bytes=-",
		"bytes=5-2",  "bytes=abc", "bytes=1-2-3", "items=0-1",   "bytes=0-1,3-4",
		"bytes= 0-1", "bytes=0-1 ", "bytes=0 -1", "bytes=+1-2",  "bytes=1--2",
	};
	storage_range_t r;

	for (size_t i = 0; i < sizeof(headers) / sizeof(headers[0]); i++) {
		assert_int_equal(resolve(headers[i], 100, &r), 0);
		assert_int_equal(r.partial, 0);
		assert_int_equal(r.start, 0);
		assert_int_equal(r.count, 100);
	}
	assert_int_equal(resolve(NULL, 0, &r), 0);
	assert_int_equal(r.count, 0);
}

/* ---- content types and URLs ---- */

static void test_content_types(void **state)
{
	static const char *const pairs[][2] = {
		{"a.mp4", "video/mp4"},        {"a.webm", "video/webm"},
		{"a.mov", "video/quicktime"},  {"a.png", "image/png"},
		{"a.jpg", "image/jpeg"},       {"a.JPEG", "image/jpeg"},
		{"a.webp", "image/webp"},      {"a.gif", "image/gif"},
		{"a.json", "application/json"}, {"a.txt", "text/plain; charset=utf-8"},
		{"a.wav", "audio/wav"},        {"a.Mp3", "audio/mpeg"},
		{"a", "application/octet-stream"}, {"a.", "application/octet-stream"},
		{"a.png.bin", "application/octet-stream"}, {"a.mp44", "application/octet-stream"},
		{"mp4", "application/octet-stream"},
	};

	for (size_t i = 0; i < sizeof(pairs) / sizeof(pairs[0]); i++)
		assert_string_equal(storage_content_type(pairs[i][0], strlen(pairs[i][0])),
				    pairs[i][1]);
}

static void test_default_public_url(void **state)
{
	char out[64];

	assert_int_equal(storage_default_public_url("http", "127.0.0.1:0", 4321, "box", out,
						    sizeof(out)),
			 0);
	assert_string_equal(out, "http://127.0.0.1:4321");
	assert_int_equal(storage_default_public_url("http", "[::1]:80", 80, "box", out,
						    sizeof(out)),
			 0);
	assert_string_equal(out, "http://[::1]:80");
	assert_int_equal(storage_default_public_url("https", "0.0.0.0:8080", 8080, "box", out,
						    sizeof(out)),
			 0);
	assert_string_equal(out, "https://box:8080");
	assert_int_equal(storage_default_public_url("http", "[::]:8080", 8080, "", out,
						    sizeof(out)),
			 0);
	assert_string_equal(out, "http://127.0.0.1:8080");
	assert_int_equal(storage_default_public_url("http", "0.0.0.0:1", 1, NULL, out,
						    sizeof(out)),
			 0);
	assert_string_equal(out, "http://127.0.0.1:1");
	assert_int_equal(storage_default_public_url("http", "127.0.0.1:1", 1, NULL, out, 10),
			 INFERQ_ELIMIT);
}

static void test_public_url_check(void **state)
{
	static const char *const good[] = {"http://a", "https://queue.example.com",
					   "https://q.example.com:8443/base", "http://[::1]:80"};
	static const char *const bad[] = {"ftp://a",  "https://",     "http:/a",
					  "https:///a", "https://:80", "https://a b",
					  "https://a?x", "https://a#x", "https://a\"b",
					  "https://a\\b", "a.example.com"};

	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
		assert_int_equal(storage_public_url_check(good[i]), 0);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_int_equal(storage_public_url_check(bad[i]), INFERQ_EINVAL);
}

/* ---- file I/O ---- */

static int count_entries(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	int n = 0;

	assert_non_null(d);
	while ((e = readdir(d)) != NULL)
		n += e->d_name[0] != '.' || strncmp(e->d_name, STORAGE_TEMP_PREFIX, 8) == 0;
	closedir(d);
	return n;
}

static void test_write_and_read_file(void **state)
{
	char dir[] = "/tmp/inferq-storage-XXXXXX";
	char name[64], path[128], err[256];
	storage_read_t rd;

	assert_non_null(mkdtemp(dir));
	with_id(name, sizeof(name), "f.bin");
	assert_int_equal(storage_write_file(dir, name, "hello world", 11, err, sizeof(err)), 0);
	assert_int_equal(storage_write_file(dir, name, "replaced", 8, err, sizeof(err)), 0);
	assert_int_equal(count_entries(dir), 1);

	memset(&rd, 0, sizeof(rd));
	assert_int_equal(storage_read_file(dir, name, NULL, 0, 1, 100, &rd, err, sizeof(err)), 0);
	assert_int_equal(rd.size, 8);
	assert_int_equal(rd.range.partial, 0);
	assert_int_equal(rd.body.len, 8);
	assert_memory_equal(rd.body.data, "replaced", 8);
	buf_free(&rd.body);

	memset(&rd, 0, sizeof(rd));
	assert_int_equal(storage_read_file(dir, name, "bytes=2-4", 9, 1, 100, &rd, err,
					   sizeof(err)),
			 0);
	assert_int_equal(rd.range.partial, 1);
	assert_memory_equal(rd.body.data, "pla", 3);
	buf_free(&rd.body);

	/* Without the body only the size and the range are resolved. */
	memset(&rd, 0, sizeof(rd));
	assert_int_equal(storage_read_file(dir, name, NULL, 0, 0, 1, &rd, err, sizeof(err)),
			 INFERQ_ELIMIT);
	assert_int_equal(storage_read_file(dir, name, NULL, 0, 0, 8, &rd, err, sizeof(err)), 0);
	assert_null(rd.body.data);
	assert_int_equal(storage_read_file(dir, name, "bytes=8-", 8, 1, 100, &rd, err,
					   sizeof(err)),
			 INFERQ_ERANGE);
	assert_int_equal(rd.size, 8);

	assert_int_equal(storage_read_file(dir, "missing", NULL, 0, 1, 100, &rd, err, sizeof(err)),
			 INFERQ_ENOTFOUND);
	/* A symlink is not followed, and a directory is not a file. */
	snprintf(path, sizeof(path), "%s/link", dir);
	assert_int_equal(symlink("/etc/hostname", path), 0);
	assert_int_equal(storage_read_file(dir, "link", NULL, 0, 1, 100, &rd, err, sizeof(err)),
			 INFERQ_ENOTFOUND);
	unlink(path);
	snprintf(path, sizeof(path), "%s/sub", dir);
	assert_int_equal(mkdir(path, 0700), 0);
	assert_int_equal(storage_read_file(dir, "sub", NULL, 0, 1, 100, &rd, err, sizeof(err)),
			 INFERQ_ENOTFOUND);
	rmdir(path);

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	unlink(path);
	rmdir(dir);
}

static void test_write_fails_cleanly(void **state)
{
	char err[256];

	assert_int_equal(storage_write_file("/nonexistent-inferq-dir", "x", "a", 1, err,
					    sizeof(err)),
			 INFERQ_EIO);
	assert_non_null(strstr(err, "temp file"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_filename_valid),
		cmocka_unit_test(test_filename_bad_id),
		cmocka_unit_test(test_filename_bad_names),
		cmocka_unit_test(test_filename_nul_inside),
		cmocka_unit_test(test_filename_length_limit),
		cmocka_unit_test(test_decode_segment),
		cmocka_unit_test(test_sign_known_answer),
		cmocka_unit_test(test_signature_check),
		cmocka_unit_test(test_range_single),
		cmocka_unit_test(test_range_unsatisfiable),
		cmocka_unit_test(test_range_whole_file),
		cmocka_unit_test(test_content_types),
		cmocka_unit_test(test_default_public_url),
		cmocka_unit_test(test_public_url_check),
		cmocka_unit_test(test_write_and_read_file),
		cmocka_unit_test(test_write_fails_cleanly),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
