/*
 * TLS for the HTTP server, on OpenSSL with memory BIOs, so that the libuv
 * stream code never handles an SSL object. A tls_context_t holds the server's
 * certificate and key (reloadable); a tls_conn_t is one connection's TLS
 * state: ciphertext read from the socket goes in with tls_conn_feed(),
 * which returns the plaintext; plaintext to send goes in with
 * tls_conn_write(), and the ciphertext to put on the socket comes out of
 * tls_conn_take_output(). The caller must write that output after every
 * feed, write and close_notify, because a handshake or an alert produces
 * output without any plaintext being written.
 *
 * Settings: TLS 1.2 to 1.3; for TLS 1.2 only ECDHE key exchange with
 * AES-GCM or ChaCha20-Poly1305, for TLS 1.3 OpenSSL's default suites; no
 * renegotiation, no compression, no session resumption (no tickets, no
 * session cache); ALPN selects "http/1.1" when the client offers it.
 *
 * All functions run on the loop thread. OpenSSL's types stay inside tls.c.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef INFERQ_TLS_H
#define INFERQ_TLS_H

#include <stddef.h>

#include "buf.h"

typedef struct tls_context tls_context_t;
typedef struct tls_conn tls_conn_t;

/* tls_conn_feed() result: the peer sent close_notify (its side is closed). */
#define TLS_PEER_CLOSED 1

/*
 * Loads the PEM certificate chain (server certificate first, then any
 * intermediates) from cert_file and the PEM private key from key_file, and
 * checks that the key belongs to the certificate. Returns 0 with a new
 * context in *out, or INFERQ_EINVAL with a message in err that names the
 * file and the fix (missing or unreadable file, no certificate, an
 * encrypted key, a key that does not match). The caller frees the context
 * with tls_context_free().
 */
int tls_context_new(const char *cert_file, const char *key_file, tls_context_t **out, char *err,
                    size_t errlen);

/*
 * Reads the certificate and key files again. On success connections
 * created from now on use the new pair, while existing ones keep the pair
 * they started with; returns 0. On failure the context keeps its previous
 * pair and INFERQ_EINVAL comes back with the reason in err, as for
 * tls_context_new().
 */
int tls_context_reload(tls_context_t *ctx, char *err, size_t errlen);

/*
 * Writes a one-line description of the current certificate into out:
 * subject, expiry, SHA-256 fingerprint, and "EXPIRED" when its notAfter
 * has passed. Returns 1 when the certificate has expired, else 0.
 */
int tls_context_describe(const tls_context_t *ctx, char *out, size_t outlen);

/* Frees ctx (NULL is fine). Connections created from it stay usable. */
void tls_context_free(tls_context_t *ctx);

/*
 * Creates the server side of one TLS connection with the context's
 * current certificate. Aborts on out-of-memory, as the server's allocator
 * does. Free it with tls_conn_free().
 */
tls_conn_t *tls_conn_new(tls_context_t *ctx);

/* Frees conn (NULL is fine). */
void tls_conn_free(tls_conn_t *conn);

/*
 * Feeds len bytes of ciphertext received from the peer, advances the
 * handshake, and appends the plaintext now available to plain (possibly
 * none: partial records wait for more bytes). Returns 0,
 * TLS_PEER_CLOSED when the peer sent close_notify (plaintext before it is
 * still appended), or INFERQ_EPROTO when the peer broke the protocol or the
 * handshake failed, with OpenSSL's reason in err. After INFERQ_EPROTO the
 * connection is failed: take its output (an alert) and close the socket.
 */
int tls_conn_feed(tls_conn_t *conn, const char *cipher, size_t len, buf_t *plain, char *err,
                  size_t errlen);

/*
 * Encrypts len bytes of plaintext, in as many records as needed, into the
 * pending output. Call only after the handshake finished. Returns 0, or
 * INFERQ_EPROTO with the reason in err when the connection has failed.
 */
int tls_conn_write(tls_conn_t *conn, const char *plain, size_t len, char *err, size_t errlen);

/*
 * Queues a close_notify alert once the handshake has finished and the
 * connection has not failed; otherwise does nothing, because there is no
 * session to close.
 */
void tls_conn_close_notify(tls_conn_t *conn);

/* Moves the pending ciphertext to the end of out; returns the bytes moved. */
size_t tls_conn_take_output(tls_conn_t *conn, buf_t *out);

/* Returns 1 once the handshake has finished, else 0. */
int tls_conn_handshake_done(const tls_conn_t *conn);

/*
 * Returns 1 when the failure reported by tls_conn_feed() was a plain HTTP
 * request sent to the TLS port, which the caller may reject with a plain-text response.
 */
int tls_conn_got_plain_http(const tls_conn_t *conn);

#endif
