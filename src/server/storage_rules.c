/*
 * Pure rules of output-file storage (see storage.h): filename checks,
 * upload URL signatures, Range headers, content types and the public base
 * URL. No I/O and no shared state, so every function is safe on any thread
 * and unit tests drive them directly.
 *
 * SPDX-License-Identifier: MIT
 */
#include "storage.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "inferq_error.h"

static int fail(char *reason, size_t reason_len, const char *text)
{
	snprintf(reason, reason_len, "%s", text);
	return INFERQ_EINVAL;
}

static int is_lower_uuid(const char *s)
{
	for (int i = 0; i < ID_TEXT_LEN; i++) {
		char c = s[i];

		if (i == 8 || i == 13 || i == 18 || i == 23) {
			if (c != '-')
				return 0;
		} else if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) {
			return 0;
		}
	}
	return 1;
}

static int is_name_char(char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
	       c == '.' || c == '_' || c == '-';
}

int storage_filename_parse(const char *name, size_t len, size_t max_len, iq_id_t *id,
			   char *reason, size_t reason_len)
{
	const char *rest = name + ID_TEXT_LEN + 1;
	size_t rest_len;

	if (len > max_len) {
		snprintf(reason, reason_len,
			 "is %zu bytes long; the limit is %zu bytes (--max-filename-length), so "
			 "use a shorter name",
			 len, max_len);
		return INFERQ_EINVAL;
	}
	if (len < ID_TEXT_LEN + 2 || !is_lower_uuid(name) || name[ID_TEXT_LEN] != '-')
		return fail(reason, reason_len,
			    "does not start with a job's request id (36 lowercase characters, "
			    "as in 0190b3c4-8c2e-7def-8a01-23456789abcd) followed by '-' and a "
			    "name; name files {request_id}-{name}");
	rest_len = len - ID_TEXT_LEN - 1;
	if (rest[0] == '.')
		return fail(reason, reason_len,
			    "has a name that starts with '.'; start the name after the request "
			    "id with a letter, digit, '_' or '-'");
	for (size_t i = 0; i < rest_len; i++) {
		if (!is_name_char(rest[i]))
			return fail(reason, reason_len,
				    "contains a character other than A-Z a-z 0-9 . _ - after the "
				    "request id; use only those");
		if (rest[i] == '.' && i + 1 < rest_len && rest[i + 1] == '.')
			return fail(reason, reason_len, "contains \"..\"; use single dots only");
	}
	if (id_parse(name, ID_TEXT_LEN, id) != 0)
		return fail(reason, reason_len, "does not start with a valid request id");
	return 0;
}

static int hex_digit(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

int storage_decode_segment(const char *text, size_t len, char *out, size_t outlen,
			   size_t *out_len)
{
	size_t o = 0;

	for (size_t i = 0; i < len; i++) {
		char c = text[i];

		if (c == '%') {
			if (i + 2 >= len || hex_digit(text[i + 1]) < 0 || hex_digit(text[i + 2]) < 0)
				return INFERQ_EINVAL;
			c = (char)(hex_digit(text[i + 1]) * 16 + hex_digit(text[i + 2]));
			i += 2;
		}
		if (c == '\0')
			return INFERQ_EINVAL;
		if (o + 1 >= outlen)
			return INFERQ_ELIMIT;
		out[o++] = c;
	}
	if (outlen == 0)
		return INFERQ_ELIMIT;
	out[o] = '\0';
	*out_len = o;
	return 0;
}

/* Computes the raw HMAC-SHA256 of the signed text of an upload URL. */
static void sign_raw(const uint8_t secret[STORAGE_SECRET_BYTES], const char *filename,
		     size_t filename_len, int64_t expires, unsigned char mac[32])
{
	char text[STORAGE_NAME_MAX + 64];
	unsigned int mac_len = 0;
	int n;

	n = snprintf(text, sizeof(text), "PUT\n%.*s\n%lld", (int)filename_len, filename,
		     (long long)expires);
	if (n < 0 || (size_t)n >= sizeof(text))
		n = 0; /* not reached: checked filenames are at most 255 bytes */
	HMAC(EVP_sha256(), secret, STORAGE_SECRET_BYTES, (const unsigned char *)text, (size_t)n,
	     mac, &mac_len);
}

void storage_sign(const uint8_t secret[STORAGE_SECRET_BYTES], const char *filename,
		  size_t filename_len, int64_t expires, char out[STORAGE_SIGNATURE_HEX + 1])
{
	static const char digits[] = "0123456789abcdef";
	unsigned char mac[32];

	sign_raw(secret, filename, filename_len, expires, mac);
	for (int i = 0; i < 32; i++) {
		out[2 * i] = digits[mac[i] >> 4];
		out[2 * i + 1] = digits[mac[i] & 15];
	}
	out[STORAGE_SIGNATURE_HEX] = '\0';
}

/*
 * Parses 1 to 18 decimal digits without a leading zero, the only form
 * storage_sign signs; returns 0 or INFERQ_EINVAL.
 */
static int parse_seconds(const char *s, size_t len, int64_t *out)
{
	int64_t v = 0;

	if (len == 0 || len > 18 || (s[0] == '0' && len > 1))
		return INFERQ_EINVAL;
	for (size_t i = 0; i < len; i++) {
		if (s[i] < '0' || s[i] > '9')
			return INFERQ_EINVAL;
		v = v * 10 + (s[i] - '0');
	}
	*out = v;
	return 0;
}

int storage_signature_check(const uint8_t secret[STORAGE_SECRET_BYTES], const char *filename,
			    size_t filename_len, const char *expires, size_t expires_len,
			    const char *signature, size_t signature_len, int64_t now_s)
{
	unsigned char want[32], got[32];
	int64_t expires_s;

	if (!expires || !signature || signature_len != STORAGE_SIGNATURE_HEX ||
	    parse_seconds(expires, expires_len, &expires_s) != 0)
		return INFERQ_EAUTH;
	for (int i = 0; i < 32; i++) {
		int hi = hex_digit(signature[2 * i]), lo = hex_digit(signature[2 * i + 1]);

		if (hi < 0 || lo < 0)
			return INFERQ_EAUTH;
		got[i] = (unsigned char)(hi * 16 + lo);
	}
	sign_raw(secret, filename, filename_len, expires_s, want);
	if (CRYPTO_memcmp(want, got, sizeof(want)) != 0)
		return INFERQ_EAUTH;
	return expires_s < now_s ? INFERQ_ETIMEDOUT : 0;
}

/*
 * Parses the decimal digits at *p up to end into *out, saturating at
 * UINT64_MAX. Returns 1 when at least one digit was read, else 0.
 */
static int read_position(const char **p, const char *end, uint64_t *out)
{
	const char *s = *p;
	uint64_t v = 0;

	while (s < end && *s >= '0' && *s <= '9') {
		unsigned d = (unsigned)(*s - '0');

		v = v > (UINT64_MAX - d) / 10 ? UINT64_MAX : v * 10 + d;
		s++;
	}
	if (s == *p)
		return 0;
	*p = s;
	*out = v;
	return 1;
}

static int whole_file(uint64_t size, storage_range_t *out)
{
	out->start = 0;
	out->count = size;
	out->partial = 0;
	return 0;
}

int storage_range_resolve(const char *value, size_t len, uint64_t size, storage_range_t *out)
{
	const char *p, *end;
	uint64_t first = 0, last = UINT64_MAX;
	int has_first, has_last;

	if (!value || len < 6 || strncasecmp(value, "bytes=", 6) != 0 ||
	    memchr(value, ',', len) != NULL)
		return whole_file(size, out);
	p = value + 6;
	end = value + len;
	has_first = read_position(&p, end, &first);
	if (p == end || *p != '-')
		return whole_file(size, out);
	p++;
	has_last = read_position(&p, end, &last);
	if (p != end || (!has_first && !has_last) || (has_first && has_last && last < first))
		return whole_file(size, out);

	if (!has_first) {
		/* "bytes=-n": the last n bytes. */
		if (last == 0 || size == 0)
			return INFERQ_ERANGE;
		out->count = last < size ? last : size;
		out->start = size - out->count;
	} else {
		if (first >= size)
			return INFERQ_ERANGE;
		if (last >= size)
			last = size - 1;
		out->start = first;
		out->count = last - first + 1;
	}
	out->partial = 1;
	return 0;
}

const char *storage_content_type(const char *name, size_t len)
{
	static const struct {
		const char *ext;
		const char *type;
	} types[] = {
		{"mp4", "video/mp4"},   {"webm", "video/webm"},       {"mov", "video/quicktime"},
		{"png", "image/png"},   {"jpg", "image/jpeg"},        {"jpeg", "image/jpeg"},
		{"webp", "image/webp"}, {"gif", "image/gif"},         {"json", "application/json"},
		{"txt", "text/plain; charset=utf-8"}, {"wav", "audio/wav"}, {"mp3", "audio/mpeg"},
	};
	const char *dot = NULL;

	for (size_t i = 0; i < len; i++) {
		if (name[i] == '.')
			dot = name + i;
	}
	if (dot) {
		size_t ext_len = len - (size_t)(dot + 1 - name);

		for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
			if (strlen(types[i].ext) == ext_len &&
			    strncasecmp(dot + 1, types[i].ext, ext_len) == 0)
				return types[i].type;
		}
	}
	return "application/octet-stream";
}

int storage_default_public_url(const char *scheme, const char *listen, int port,
			       const char *hostname, char *out, size_t outlen)
{
	const char *colon = strrchr(listen, ':');
	size_t host_len = colon ? (size_t)(colon - listen) : strlen(listen);
	int n;

	if ((host_len == 7 && memcmp(listen, "0.0.0.0", 7) == 0) ||
	    (host_len == 4 && memcmp(listen, "[::]", 4) == 0)) {
		listen = hostname && hostname[0] ? hostname : "127.0.0.1";
		host_len = strlen(listen);
	}
	n = snprintf(out, outlen, "%s://%.*s:%d", scheme, (int)host_len, listen, port);
	if (n < 0 || (size_t)n >= outlen)
		return INFERQ_ELIMIT;
	return 0;
}

int storage_public_url_check(const char *url)
{
	size_t len = strlen(url);
	size_t prefix;

	if (strncmp(url, "http://", 7) == 0)
		prefix = 7;
	else if (strncmp(url, "https://", 8) == 0)
		prefix = 8;
	else
		return INFERQ_EINVAL;
	if (len > STORAGE_URL_MAX || len == prefix || url[prefix] == '/' || url[prefix] == ':')
		return INFERQ_EINVAL;
	for (size_t i = prefix; i < len; i++) {
		unsigned char c = (unsigned char)url[i];

		if (c <= ' ' || c >= 0x7f || c == '"' || c == '\\' || c == '?' || c == '#')
			return INFERQ_EINVAL;
	}
	return 0;
}
