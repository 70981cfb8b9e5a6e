/*
 * Tests of the TLS layer (tls.c) without sockets: an OpenSSL client on
 * memory BIOs talks to a tls_conn_t, and a pump moves the ciphertext
 * between them, so each test controls exactly which bytes arrive when.
 * Certificates are made in the test with OpenSSL's API (EC P-256, self-
 * signed) and written as PEM files under a fresh /tmp directory.
 *
 * SPDX-License-Identifier: MIT
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "buf.h"
#include "inferq_error.h"
#include "tls.h"

struct files {
	char dir[64];
	char cert[128], key[128];     /* pair A */
	char cert_b[128], key_b[128]; /* pair B */
	char other_key[128];          /* a key that matches neither */
	char expired_cert[128], expired_key[128];
};

static struct files files;

/* ---- certificates ---- */

static EVP_PKEY *write_key(const char *path)
{
	EVP_PKEY *key = EVP_EC_gen("P-256");
	FILE *f = fopen(path, "w");

	assert_non_null(key);
	assert_non_null(f);
	assert_int_equal(PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL), 1);
	fclose(f);
	return key;
}

/* Writes a self-signed certificate for key, valid from now+from_days to now+to_days. */
static void write_cert(const char *path, EVP_PKEY *key, long serial, long from_days, long to_days)
{
	X509 *cert = X509_new();
	X509_NAME *name;
	FILE *f = fopen(path, "w");

	assert_non_null(cert);
	assert_non_null(f);
	X509_set_version(cert, 2);
	ASN1_INTEGER_set(X509_get_serialNumber(cert), serial);
	X509_gmtime_adj(X509_getm_notBefore(cert), from_days * 86400);
	X509_gmtime_adj(X509_getm_notAfter(cert), to_days * 86400);
	X509_set_pubkey(cert, key);
	name = X509_get_subject_name(cert);
	X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)"localhost", -1,
	                           -1, 0);
	X509_set_issuer_name(cert, name);
	assert_true(X509_sign(cert, key, EVP_sha256()) > 0);
	assert_int_equal(PEM_write_X509(f, cert), 1);
	fclose(f);
	X509_free(cert);
}

static void make_pair(const char *dir, const char *name, char *cert, char *key, long serial,
                      long from_days, long to_days)
{
	EVP_PKEY *pkey;

	snprintf(cert, 128, "%s/%s.pem", dir, name);
	snprintf(key, 128, "%s/%s.key", dir, name);
	pkey = write_key(key);
	write_cert(cert, pkey, serial, from_days, to_days);
	EVP_PKEY_free(pkey);
}

static int group_setup(void **state)
{
	char other_cert[128];

	snprintf(files.dir, sizeof(files.dir), "/tmp/inferq-tls-XXXXXX");
	assert_non_null(mkdtemp(files.dir));
	make_pair(files.dir, "a", files.cert, files.key, 1, 0, 2);
	make_pair(files.dir, "b", files.cert_b, files.key_b, 2, 0, 2);
	make_pair(files.dir, "other", other_cert, files.other_key, 3, 0, 2);
	make_pair(files.dir, "expired", files.expired_cert, files.expired_key, 4, -3, -1);
	return 0;
}

static int group_teardown(void **state)
{
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", files.dir);
	return system(cmd) == 0 ? 0 : -1;
}

static void copy_file(const char *from, const char *to)
{
	char data[8192];
	FILE *in = fopen(from, "r"), *out = fopen(to, "w");
	size_t n;

	assert_non_null(in);
	assert_non_null(out);
	n = fread(data, 1, sizeof(data), in);
	assert_int_equal(fwrite(data, 1, n, out), n);
	fclose(in);
	fclose(out);
}

/* ---- a client on memory BIOs ---- */

struct client {
	SSL_CTX *ctx;
	SSL *ssl;
	BIO *in, *out; /* in: bytes from the server; out: bytes to the server */
};

static void client_init(struct client *cl, int min_version, int max_version)
{
	cl->ctx = SSL_CTX_new(TLS_client_method());
	assert_non_null(cl->ctx);
	SSL_CTX_set_min_proto_version(cl->ctx, min_version);
	SSL_CTX_set_max_proto_version(cl->ctx, max_version);
	SSL_CTX_set_verify(cl->ctx, SSL_VERIFY_NONE, NULL);
	cl->ssl = SSL_new(cl->ctx);
	cl->in = BIO_new(BIO_s_mem());
	cl->out = BIO_new(BIO_s_mem());
	BIO_set_mem_eof_return(cl->in, -1);
	SSL_set_bio(cl->ssl, cl->in, cl->out);
	SSL_set_connect_state(cl->ssl);
}

static void client_free(struct client *cl)
{
	SSL_free(cl->ssl);
	SSL_CTX_free(cl->ctx);
}

/* Moves everything the client wrote into buf. */
static void client_take(struct client *cl, buf_t *buf)
{
	char chunk[4096];
	int n;

	while ((n = BIO_read(cl->out, chunk, sizeof(chunk))) > 0)
		buf_append(buf, chunk, (size_t)n);
}

/*
 * Runs the handshake: client output goes to the server step bytes at a
 * time, server output back to the client. Returns the feed result that
 * ended it (0 when the handshake finished on both sides).
 */
static int pump_handshake(struct client *cl, tls_conn_t *srv, size_t step, buf_t *plain)
{
	char err[160];
	int rc = 0;

	for (int round = 0; round < 20; round++) {
		buf_t c2s = BUF_INIT, s2c = BUF_INIT;
		int done;

		ERR_clear_error();
		done = SSL_do_handshake(cl->ssl) == 1;
		client_take(cl, &c2s);
		for (size_t off = 0; off < c2s.len && rc == 0; off += step) {
			size_t n = c2s.len - off < step ? c2s.len - off : step;

			rc = tls_conn_feed(srv, c2s.data + off, n, plain, err, sizeof(err));
		}
		tls_conn_take_output(srv, &s2c);
		if (s2c.len > 0)
			BIO_write(cl->in, s2c.data, (int)s2c.len);
		buf_free(&c2s);
		buf_free(&s2c);
		if (rc != 0 || (done && tls_conn_handshake_done(srv)))
			return rc;
	}
	fail_msg("handshake did not finish in 20 rounds");
	return -1;
}

/* Reads all plaintext the client can decrypt from what the server wrote. */
static int client_read(struct client *cl, tls_conn_t *srv, buf_t *plain)
{
	buf_t s2c = BUF_INIT;
	char chunk[16384];
	int n;

	tls_conn_take_output(srv, &s2c);
	BIO_write(cl->in, s2c.data, (int)s2c.len);
	buf_free(&s2c);
	while ((n = SSL_read(cl->ssl, chunk, sizeof(chunk))) > 0)
		buf_append(plain, chunk, (size_t)n);
	return SSL_get_error(cl->ssl, n);
}

static tls_context_t *context_a(void)
{
	tls_context_t *ctx = NULL;
	char err[512];

	assert_int_equal(tls_context_new(files.cert, files.key, &ctx, err, sizeof(err)), 0);
	return ctx;
}

/* Returns the serial of the certificate the client got. */
static long peer_serial(struct client *cl)
{
	X509 *cert = SSL_get1_peer_certificate(cl->ssl);
	long serial;

	assert_non_null(cert);
	serial = ASN1_INTEGER_get(X509_get_serialNumber(cert));
	X509_free(cert);
	return serial;
}

/* ---- tests ---- */

static void context_errors(void **state)
{
	tls_context_t *ctx = NULL;
	char err[512], missing[160], junk[160], encrypted[160];
	FILE *f;
	EVP_PKEY *key;

	snprintf(missing, sizeof(missing), "%s/missing.pem", files.dir);
	assert_int_equal(tls_context_new(missing, files.key, &ctx, err, sizeof(err)),
	                 INFERQ_EINVAL);
	assert_non_null(strstr(err, "cannot read --tls-cert"));
	assert_non_null(strstr(err, missing));

	assert_int_equal(tls_context_new(files.cert, files.dir, &ctx, err, sizeof(err)),
	                 INFERQ_EINVAL);
	assert_non_null(strstr(err, "is not a regular file"));

	snprintf(junk, sizeof(junk), "%s/junk.pem", files.dir);
	f = fopen(junk, "w");
	assert_non_null(f);
	fputs("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n", f);
	fclose(f);
	assert_int_equal(tls_context_new(junk, files.key, &ctx, err, sizeof(err)), INFERQ_EINVAL);
	assert_non_null(strstr(err, "cannot load the certificate from --tls-cert"));

	assert_int_equal(tls_context_new(files.cert, files.other_key, &ctx, err, sizeof(err)),
	                 INFERQ_EINVAL);
	assert_non_null(strstr(err, "does not match the certificate"));
	assert_non_null(strstr(err, files.other_key));

	snprintf(encrypted, sizeof(encrypted), "%s/encrypted.key", files.dir);
	f = fopen(encrypted, "w");
	assert_non_null(f);
	key = EVP_EC_gen("P-256");
	assert_int_equal(
	    PEM_write_PrivateKey(f, key, EVP_aes_256_cbc(), NULL, 0, NULL, (void *)"secret"), 1);
	fclose(f);
	EVP_PKEY_free(key);
	assert_int_equal(tls_context_new(files.cert, encrypted, &ctx, err, sizeof(err)),
	                 INFERQ_EINVAL);
	assert_non_null(strstr(err, "is encrypted"));
	assert_null(ctx);
	assert_int_equal(ERR_peek_error(), 0);
}

static void handshake_and_data(void **state)
{
	tls_context_t *ctx = context_a();
	tls_conn_t *srv = tls_conn_new(ctx);
	struct client cl;
	buf_t plain = BUF_INIT, got = BUF_INIT, c2s = BUF_INIT;
	char err[160], *big = malloc(200000);

	client_init(&cl, TLS1_2_VERSION, TLS1_3_VERSION);
	assert_int_equal(tls_conn_handshake_done(srv), 0);
	assert_int_equal(pump_handshake(&cl, srv, SIZE_MAX, &plain), 0);
	assert_int_equal(tls_conn_handshake_done(srv), 1);
	assert_int_equal(SSL_version(cl.ssl), TLS1_3_VERSION);
	assert_int_equal(plain.len, 0);

	assert_int_equal(SSL_write(cl.ssl, "GET / HTTP/1.1\r\n\r\n", 18), 18);
	client_take(&cl, &c2s);
	assert_int_equal(tls_conn_feed(srv, c2s.data, c2s.len, &plain, err, sizeof(err)), 0);
	assert_int_equal(plain.len, 18);
	assert_memory_equal(plain.data, "GET / HTTP/1.1\r\n\r\n", 18);

	/* 200 KB go out in records of at most 16 KiB each. */
	for (size_t i = 0; i < 200000; i++)
		big[i] = (char)('a' + i % 26);
	assert_int_equal(tls_conn_write(srv, big, 200000, err, sizeof(err)), 0);
	assert_int_equal(client_read(&cl, srv, &got), SSL_ERROR_WANT_READ);
	assert_int_equal(got.len, 200000);
	assert_memory_equal(got.data, big, 200000);

	free(big);
	buf_free(&plain);
	buf_free(&got);
	buf_free(&c2s);
	client_free(&cl);
	tls_conn_free(srv);
	tls_context_free(ctx);
}

static void handshake_one_byte_at_a_time(void **state)
{
	tls_context_t *ctx = context_a();
	tls_conn_t *srv = tls_conn_new(ctx);
	struct client cl;
	buf_t plain = BUF_INIT;

	client_init(&cl, TLS1_2_VERSION, TLS1_2_VERSION);
	assert_int_equal(pump_handshake(&cl, srv, 1, &plain), 0);
	assert_int_equal(tls_conn_handshake_done(srv), 1);
	assert_string_equal(SSL_get_cipher_name(cl.ssl), "ECDHE-ECDSA-AES256-GCM-SHA384");
	client_free(&cl);
	tls_conn_free(srv);
	tls_context_free(ctx);
	buf_free(&plain);
}

static void old_versions_rejected(void **state)
{
	const int versions[] = {TLS1_VERSION, TLS1_1_VERSION};
	tls_context_t *ctx = context_a();

	for (size_t i = 0; i < 2; i++) {
		tls_conn_t *srv = tls_conn_new(ctx);
		struct client cl;
		buf_t plain = BUF_INIT, alert = BUF_INIT;

		client_init(&cl, versions[i], versions[i]);
		SSL_set_security_level(cl.ssl, 0);
		SSL_set_cipher_list(cl.ssl, "DEFAULT:@SECLEVEL=0");
		assert_int_equal(pump_handshake(&cl, srv, SIZE_MAX, &plain), INFERQ_EPROTO);
		assert_int_equal(tls_conn_handshake_done(srv), 0);
		/* The server's alert was handed to the client by the pump: nothing is left. */
		assert_int_equal(tls_conn_take_output(srv, &alert), 0);
		assert_int_equal(SSL_do_handshake(cl.ssl), -1);
		assert_int_equal(ERR_GET_REASON(ERR_peek_last_error()),
		                 SSL_R_TLSV1_ALERT_PROTOCOL_VERSION);
		ERR_clear_error();
		client_free(&cl);
		tls_conn_free(srv);
		buf_free(&plain);
	}
	tls_context_free(ctx);
}

static void garbage_fails_connection(void **state)
{
	tls_context_t *ctx = context_a();
	tls_conn_t *srv = tls_conn_new(ctx);
	buf_t plain = BUF_INIT, out = BUF_INIT;
	char err[160];
	const char hello[] = "\x16\x03\x01\x00\x04\x01\x00\x00\x00"; /* empty ClientHello */

	assert_int_equal(tls_conn_feed(srv, hello, sizeof(hello) - 1, &plain, err, sizeof(err)),
	                 INFERQ_EPROTO);
	assert_true(strlen(err) > 0);
	assert_int_equal(tls_conn_got_plain_http(srv), 0);
	assert_true(tls_conn_take_output(srv, &out) > 0);
	assert_int_equal(out.data[0], 0x15); /* an alert record */

	/* A failed connection stays failed and sends no close_notify. */
	assert_int_equal(tls_conn_feed(srv, "x", 1, &plain, err, sizeof(err)), INFERQ_EPROTO);
	assert_int_equal(tls_conn_write(srv, "x", 1, err, sizeof(err)), INFERQ_EPROTO);
	tls_conn_close_notify(srv);
	buf_reset(&out);
	assert_int_equal(tls_conn_take_output(srv, &out), 0);
	assert_int_equal(plain.len, 0);
	tls_conn_free(srv);

	srv = tls_conn_new(ctx);
	assert_int_equal(tls_conn_feed(srv, "GET / HTTP/1.1\r\n", 16, &plain, err, sizeof(err)),
	                 INFERQ_EPROTO);
	assert_int_equal(tls_conn_got_plain_http(srv), 1);
	tls_conn_free(srv);

	/* A partial record is no error: the connection waits for the rest. */
	srv = tls_conn_new(ctx);
	assert_int_equal(tls_conn_feed(srv, "\x16\x03\x01", 3, &plain, err, sizeof(err)), 0);
	tls_conn_close_notify(srv); /* before the handshake: nothing to send */
	assert_int_equal(tls_conn_take_output(srv, &out), 0);
	tls_conn_free(srv);

	buf_free(&plain);
	buf_free(&out);
	tls_context_free(ctx);
}

static void close_notify_both_ways(void **state)
{
	tls_context_t *ctx = context_a();
	tls_conn_t *srv = tls_conn_new(ctx);
	struct client cl;
	buf_t plain = BUF_INIT, c2s = BUF_INIT, got = BUF_INIT;
	char err[160];

	client_init(&cl, TLS1_2_VERSION, TLS1_3_VERSION);
	assert_int_equal(pump_handshake(&cl, srv, SIZE_MAX, &plain), 0);

	/* Data and the client's close_notify in one feed: the data comes out first. */
	assert_int_equal(SSL_write(cl.ssl, "last", 4), 4);
	assert_true(SSL_shutdown(cl.ssl) >= 0);
	client_take(&cl, &c2s);
	assert_int_equal(tls_conn_feed(srv, c2s.data, c2s.len, &plain, err, sizeof(err)),
	                 TLS_PEER_CLOSED);
	assert_int_equal(plain.len, 4);
	assert_memory_equal(plain.data, "last", 4);

	/* The server can still send its response, then its own close_notify. */
	assert_int_equal(tls_conn_write(srv, "reply", 5, err, sizeof(err)), 0);
	tls_conn_close_notify(srv);
	assert_int_equal(client_read(&cl, srv, &got), SSL_ERROR_ZERO_RETURN);
	assert_int_equal(got.len, 5);
	assert_memory_equal(got.data, "reply", 5);

	buf_free(&plain);
	buf_free(&c2s);
	buf_free(&got);
	client_free(&cl);
	tls_conn_free(srv);
	tls_context_free(ctx);
}

static void reload_swaps_pair(void **state)
{
	char cert[160], key[160], err[512], about[512];
	tls_context_t *ctx = NULL;
	tls_conn_t *before, *after, *kept;
	struct client c1, c2, c3;
	buf_t plain = BUF_INIT;
	FILE *f;

	snprintf(cert, sizeof(cert), "%s/live.pem", files.dir);
	snprintf(key, sizeof(key), "%s/live.key", files.dir);
	copy_file(files.cert, cert);
	copy_file(files.key, key);
	assert_int_equal(tls_context_new(cert, key, &ctx, err, sizeof(err)), 0);
	before = tls_conn_new(ctx);

	copy_file(files.cert_b, cert);
	copy_file(files.key_b, key);
	assert_int_equal(tls_context_reload(ctx, err, sizeof(err)), 0);
	after = tls_conn_new(ctx);

	/* A broken certificate file keeps pair B. */
	f = fopen(cert, "w");
	assert_non_null(f);
	fputs("garbage\n", f);
	fclose(f);
	assert_int_equal(tls_context_reload(ctx, err, sizeof(err)), INFERQ_EINVAL);
	assert_non_null(strstr(err, cert));
	kept = tls_conn_new(ctx);
	assert_int_equal(tls_context_describe(ctx, about, sizeof(about)), 0);
	assert_non_null(strstr(about, "CN=localhost"));

	client_init(&c1, TLS1_2_VERSION, TLS1_3_VERSION);
	client_init(&c2, TLS1_2_VERSION, TLS1_3_VERSION);
	client_init(&c3, TLS1_2_VERSION, TLS1_3_VERSION);
	assert_int_equal(pump_handshake(&c1, before, SIZE_MAX, &plain), 0);
	assert_int_equal(pump_handshake(&c2, after, SIZE_MAX, &plain), 0);
	assert_int_equal(pump_handshake(&c3, kept, SIZE_MAX, &plain), 0);
	assert_int_equal(peer_serial(&c1), 1);
	assert_int_equal(peer_serial(&c2), 2);
	assert_int_equal(peer_serial(&c3), 2);

	client_free(&c1);
	client_free(&c2);
	client_free(&c3);
	tls_conn_free(before);
	tls_conn_free(after);
	tls_conn_free(kept);
	tls_context_free(ctx);
	buf_free(&plain);
}

static void describe_expired(void **state)
{
	tls_context_t *ctx = NULL;
	char err[512], about[512];

	assert_int_equal(
	    tls_context_new(files.expired_cert, files.expired_key, &ctx, err, sizeof(err)), 0);
	assert_int_equal(tls_context_describe(ctx, about, sizeof(about)), 1);
	assert_non_null(strstr(about, "EXPIRED"));
	assert_non_null(strstr(about, "sha256 fingerprint "));
	tls_context_free(ctx);
	tls_context_free(NULL);
	tls_conn_free(NULL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(context_errors),
	    cmocka_unit_test(handshake_and_data),
	    cmocka_unit_test(handshake_one_byte_at_a_time),
	    cmocka_unit_test(old_versions_rejected),
	    cmocka_unit_test(garbage_fails_connection),
	    cmocka_unit_test(close_notify_both_ways),
	    cmocka_unit_test(reload_swaps_pair),
	    cmocka_unit_test(describe_expired),
	};

	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
