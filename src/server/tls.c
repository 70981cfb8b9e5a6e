/*
 * TLS contexts and per-connection TLS state on OpenSSL (see tls.h). Each
 * tls_conn_t reads from one memory BIO, into which the caller feeds the
 * ciphertext, and writes to another, which the caller drains, so OpenSSL
 * never touches a socket and never blocks.
 *
 * Reload swaps the context's SSL_CTX. Every SSL holds a reference to the
 * SSL_CTX it was created from, so connections that started before a reload
 * keep their certificate until they close.
 *
 * SPDX-License-Identifier: MIT
 */
#include "tls.h"

#include <errno.h>
#include <limits.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "alloc.h"
#include "inferq_error.h"
#include "log.h"

/* TLS 1.2 suites: forward secrecy (ECDHE) and an AEAD cipher only. */
#define TLS12_CIPHERS                                                                              \
	"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"                               \
	"ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"                               \
	"ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"

#define READ_CHUNK 16384 /* the largest TLS record's plaintext */

struct tls_context {
	SSL_CTX *ssl_ctx; /* current pair; replaced by a successful reload */
	char *cert_file;
	char *key_file;
};

struct tls_conn {
	SSL *ssl;
	BIO *rbio; /* ciphertext from the peer; owned by ssl */
	BIO *wbio; /* ciphertext for the peer; owned by ssl */
	unsigned failed : 1;
	unsigned plain_http : 1;
};

/* Passphrase callback of a key load: records that the key is encrypted and gives no passphrase. */
static int no_passphrase(char *buf, int size, int rwflag, void *userdata)
{
	*(int *)userdata = 1;
	return 0;
}

/* Selects "http/1.1" when the client offers it; otherwise the handshake goes on without ALPN. */
static int select_alpn(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                       const unsigned char *in, unsigned int inlen, void *arg)
{
	static const unsigned char http11[] = "\x08http/1.1";
	unsigned char *selected;

	if (SSL_select_next_proto(&selected, outlen, http11, sizeof(http11) - 1, in, inlen) !=
	    OPENSSL_NPN_NEGOTIATED)
		return SSL_TLSEXT_ERR_NOACK;
	*out = selected;
	return SSL_TLSEXT_ERR_OK;
}

/* Returns OpenSSL's reason for the oldest queued error, or fallback when none is queued. */
static const char *ssl_reason(const char *fallback)
{
	unsigned long e = ERR_peek_error();
	const char *reason = e ? ERR_reason_error_string(e) : NULL;

	return reason ? reason : fallback;
}

/* Checks that path names a readable regular file; flag is the flag that named it. */
static int check_file(const char *flag, const char *path, char *err, size_t errlen)
{
	struct stat st;
	FILE *f;

	if (stat(path, &st) != 0) {
		snprintf(err, errlen, "cannot read %s %s: %s; pass the path of a PEM file", flag,
		         path, strerror(errno));
		return INFERQ_EINVAL;
	}
	if (!S_ISREG(st.st_mode)) {
		snprintf(err, errlen, "%s %s is not a regular file; pass the path of a PEM file",
		         flag, path);
		return INFERQ_EINVAL;
	}
	f = fopen(path, "r");
	if (!f) {
		snprintf(err, errlen,
		         "cannot read %s %s: %s; make it readable by the user inferq runs as", flag,
		         path, strerror(errno));
		return INFERQ_EINVAL;
	}
	fclose(f);
	return 0;
}

static void set_policy(SSL_CTX *ssl_ctx)
{
	SSL_CTX_set_min_proto_version(ssl_ctx, TLS1_2_VERSION);
	SSL_CTX_set_max_proto_version(ssl_ctx, TLS1_3_VERSION);
	SSL_CTX_set_options(ssl_ctx,
	                    SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_TICKET);
	/* No resumption: no stateless tickets (their key would need rotating)
	 * and no server-side session cache, which TLS 1.3 would use instead. */
	SSL_CTX_set_session_cache_mode(ssl_ctx, SSL_SESS_CACHE_OFF);
	SSL_CTX_set_num_tickets(ssl_ctx, 0);
	/* Idle keep-alive connections give their read and write buffers back. */
	SSL_CTX_set_mode(ssl_ctx, SSL_MODE_RELEASE_BUFFERS);
	SSL_CTX_set_alpn_select_cb(ssl_ctx, select_alpn, NULL);
}

/* Builds an SSL_CTX from the two files, or explains in err why it cannot. */
static int load_pair(const char *cert_file, const char *key_file, SSL_CTX **out, char *err,
                     size_t errlen)
{
	SSL_CTX *ssl_ctx = NULL;
	int encrypted = 0;
	int rc = INFERQ_EINVAL;

	if (check_file("--tls-cert", cert_file, err, errlen) != 0 ||
	    check_file("--tls-key", key_file, err, errlen) != 0)
		return INFERQ_EINVAL;
	ERR_clear_error();
	ssl_ctx = SSL_CTX_new(TLS_server_method());
	if (!ssl_ctx) {
		snprintf(err, errlen, "cannot create a TLS context: %s",
		         ssl_reason("unknown error"));
		goto out;
	}
	if (SSL_CTX_set_cipher_list(ssl_ctx, TLS12_CIPHERS) != 1) {
		snprintf(err, errlen, "cannot set the TLS 1.2 cipher list: %s",
		         ssl_reason("unknown error"));
		goto out;
	}
	set_policy(ssl_ctx);

	if (SSL_CTX_use_certificate_chain_file(ssl_ctx, cert_file) != 1) {
		snprintf(err, errlen,
		         "cannot load the certificate from --tls-cert %s: %s; pass a PEM file that "
		         "starts with -----BEGIN CERTIFICATE----- (server certificate first, then "
		         "any intermediates)",
		         cert_file, ssl_reason("no certificate found"));
		goto out;
	}
	SSL_CTX_set_default_passwd_cb(ssl_ctx, no_passphrase);
	SSL_CTX_set_default_passwd_cb_userdata(ssl_ctx, &encrypted);
	if (SSL_CTX_use_PrivateKey_file(ssl_ctx, key_file, SSL_FILETYPE_PEM) != 1) {
		if (encrypted)
			snprintf(
			    err, errlen,
			    "--tls-key %s is encrypted and inferq cannot ask for a passphrase; "
			    "write a decrypted copy with `openssl pkey -in %s -out NEW.key`, "
			    "readable only by inferq",
			    key_file, key_file);
		else if (ERR_GET_REASON(ERR_peek_last_error()) == X509_R_KEY_VALUES_MISMATCH)
			snprintf(
			    err, errlen,
			    "the private key in --tls-key %s does not match the certificate in "
			    "--tls-cert %s; pass the key the certificate was issued for",
			    key_file, cert_file);
		else
			snprintf(
			    err, errlen,
			    "cannot load the private key from --tls-key %s: %s; pass a PEM file "
			    "that starts with -----BEGIN PRIVATE KEY----- (or an RSA or EC key)",
			    key_file, ssl_reason("no private key found"));
		goto out;
	}
	SSL_CTX_set_default_passwd_cb_userdata(ssl_ctx, NULL);
	SSL_CTX_set_default_passwd_cb(ssl_ctx, NULL);
	if (SSL_CTX_check_private_key(ssl_ctx) != 1) {
		snprintf(err, errlen,
		         "the private key in --tls-key %s does not match the certificate in "
		         "--tls-cert %s; pass the key the certificate was issued for",
		         key_file, cert_file);
		goto out;
	}
	*out = ssl_ctx;
	ssl_ctx = NULL;
	rc = 0;
out:
	SSL_CTX_free(ssl_ctx);
	ERR_clear_error();
	return rc;
}

int tls_context_new(const char *cert_file, const char *key_file, tls_context_t **out, char *err,
                    size_t errlen)
{
	SSL_CTX *ssl_ctx;
	tls_context_t *ctx;
	int rc = load_pair(cert_file, key_file, &ssl_ctx, err, errlen);

	if (rc != 0)
		return rc;
	ctx = xcalloc(1, sizeof(*ctx));
	ctx->ssl_ctx = ssl_ctx;
	ctx->cert_file = xstrdup(cert_file);
	ctx->key_file = xstrdup(key_file);
	*out = ctx;
	return 0;
}

int tls_context_reload(tls_context_t *ctx, char *err, size_t errlen)
{
	SSL_CTX *ssl_ctx;
	int rc = load_pair(ctx->cert_file, ctx->key_file, &ssl_ctx, err, errlen);

	if (rc != 0)
		return rc;
	SSL_CTX_free(ctx->ssl_ctx);
	ctx->ssl_ctx = ssl_ctx;
	return 0;
}

/* Formats an ASN1_TIME as RFC 3339 UTC, or "?" when it cannot be read. */
static void format_time(const ASN1_TIME *t, char *out, size_t outlen)
{
	struct tm tm;

	if (!t || ASN1_TIME_to_tm(t, &tm) != 1) {
		snprintf(out, outlen, "?");
		return;
	}
	strftime(out, outlen, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

int tls_context_describe(const tls_context_t *ctx, char *out, size_t outlen)
{
	X509 *cert = SSL_CTX_get0_certificate(ctx->ssl_ctx);
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int md_len = 0;
	char subject[256] = "?", not_after[32], fingerprint[2 * EVP_MAX_MD_SIZE + 1] = "?";
	int expired;

	X509_NAME_oneline(X509_get_subject_name(cert), subject, sizeof(subject));
	format_time(X509_get0_notAfter(cert), not_after, sizeof(not_after));
	if (X509_digest(cert, EVP_sha256(), md, &md_len) == 1) {
		for (unsigned int i = 0; i < md_len; i++)
			snprintf(fingerprint + 2 * i, 3, "%02x", md[i]);
	}
	expired = X509_cmp_current_time(X509_get0_notAfter(cert)) < 0;
	snprintf(out, outlen, "subject %s, expires %s%s, sha256 fingerprint %s", subject, not_after,
	         expired ? " (EXPIRED)" : "", fingerprint);
	ERR_clear_error();
	return expired;
}

void tls_context_free(tls_context_t *ctx)
{
	if (!ctx)
		return;
	SSL_CTX_free(ctx->ssl_ctx);
	free(ctx->cert_file);
	free(ctx->key_file);
	free(ctx);
}

tls_conn_t *tls_conn_new(tls_context_t *ctx)
{
	tls_conn_t *conn = xcalloc(1, sizeof(*conn));

	conn->ssl = SSL_new(ctx->ssl_ctx);
	conn->rbio = BIO_new(BIO_s_mem());
	conn->wbio = BIO_new(BIO_s_mem());
	if (!conn->ssl || !conn->rbio || !conn->wbio) {
		log_error("tls", "out of memory creating a TLS connection");
		abort();
	}
	/* An empty read BIO means "wait for more bytes", not end of file. */
	BIO_set_mem_eof_return(conn->rbio, -1);
	SSL_set_bio(conn->ssl, conn->rbio, conn->wbio);
	SSL_set_accept_state(conn->ssl);
	return conn;
}

void tls_conn_free(tls_conn_t *conn)
{
	if (!conn)
		return;
	SSL_free(conn->ssl); /* frees both BIOs */
	free(conn);
}

/* Marks conn failed after an SSL call returned ret, and explains why in err. */
static int fail(tls_conn_t *conn, int ssl_error, char *err, size_t errlen)
{
	unsigned long e = ERR_peek_error();

	conn->failed = 1;
	conn->plain_http = ERR_GET_LIB(e) == ERR_LIB_SSL && ERR_GET_REASON(e) == SSL_R_HTTP_REQUEST;
	if (ssl_error == SSL_ERROR_SYSCALL && e == 0)
		snprintf(err, errlen, "unexpected end of the TLS stream");
	else
		snprintf(err, errlen, "%s", ssl_reason("TLS protocol error"));
	ERR_clear_error();
	return INFERQ_EPROTO;
}

int tls_conn_feed(tls_conn_t *conn, const char *cipher, size_t len, buf_t *plain, char *err,
                  size_t errlen)
{
	char chunk[READ_CHUNK];

	if (conn->failed) {
		snprintf(err, errlen, "TLS connection already failed");
		return INFERQ_EPROTO;
	}
	while (len > 0) {
		int part = len > INT_MAX ? INT_MAX : (int)len;
		int n = BIO_write(conn->rbio, cipher, part);

		if (n <= 0) {
			log_error("tls", "out of memory buffering TLS input");
			abort();
		}
		cipher += n;
		len -= (size_t)n;
	}
	for (;;) {
		int n, e;

		ERR_clear_error();
		n = SSL_read(conn->ssl, chunk, sizeof(chunk));
		if (n > 0) {
			buf_append(plain, chunk, (size_t)n);
			continue;
		}
		e = SSL_get_error(conn->ssl, n);
		if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
			return 0;
		if (e == SSL_ERROR_ZERO_RETURN)
			return TLS_PEER_CLOSED;
		return fail(conn, e, err, errlen);
	}
}

int tls_conn_write(tls_conn_t *conn, const char *plain, size_t len, char *err, size_t errlen)
{
	if (conn->failed) {
		snprintf(err, errlen, "TLS connection already failed");
		return INFERQ_EPROTO;
	}
	while (len > 0) {
		int part = len > INT_MAX ? INT_MAX : (int)len;
		int n;

		ERR_clear_error();
		n = SSL_write(conn->ssl, plain, part);
		if (n <= 0)
			return fail(conn, SSL_get_error(conn->ssl, n), err, errlen);
		plain += n;
		len -= (size_t)n;
	}
	return 0;
}

void tls_conn_close_notify(tls_conn_t *conn)
{
	if (conn->failed || !SSL_is_init_finished(conn->ssl))
		return;
	ERR_clear_error();
	/* 0 means sent and the peer's close_notify not yet seen: we do not wait for it. */
	(void)SSL_shutdown(conn->ssl);
	ERR_clear_error();
}

size_t tls_conn_take_output(tls_conn_t *conn, buf_t *out)
{
	size_t pending = BIO_ctrl_pending(conn->wbio);
	size_t taken = 0;

	if (pending == 0)
		return 0;
	buf_reserve(out, pending);

	/* BIO_read takes an int length, so output over 2 GiB is read in parts. */
	while (taken < pending) {
		size_t part = pending - taken > INT_MAX ? INT_MAX : pending - taken;
		int n = BIO_read(conn->wbio, out->data + out->len + taken, (int)part);

		IQ_ASSERT(n == (int)part);
		taken += part;
	}
	out->len += pending;
	out->data[out->len] = '\0';
	return pending;
}

int tls_conn_handshake_done(const tls_conn_t *conn)
{
	return SSL_is_init_finished(conn->ssl) ? 1 : 0;
}

int tls_conn_got_plain_http(const tls_conn_t *conn)
{
	return conn->plain_http;
}
