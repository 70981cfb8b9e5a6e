/*
 * HTTP/1.1 server on libuv and llhttp: accepts connections, frames requests
 * (Content-Length and chunked bodies), enforces the size limits and
 * timeouts, and hands each complete request to one handler callback. The
 * handler answers with http_respond(), at once or later (after a commit or
 * a long-poll wait); responses on a connection go out in request order, so
 * pipelined requests are answered in order.
 *
 * All functions run on the loop thread.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef INFERQ_HTTP_H
#define INFERQ_HTTP_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct http_server http_server_t;
struct http_request;

/*
 * Called once per http_respond() call, with the handler's
 * ctx, the request (valid only during the call), the status, the bytes of
 * the response body and the nanoseconds from the end of the request's
 * headers until the response was queued. Also called when the client went
 * away before the answer. Loop thread.
 *
 * Also called once for each error response that the layer sends itself
 * (malformed request, a size limit, a request timeout), with req->rejected
 * set and no body. When the request's headers were complete, req has them
 * and the duration counts as above. Otherwise req has no headers, its
 * method and path are those of the request line (method -1 and both "-"
 * when the target was not read), and the duration counts from the
 * request's first byte, in whole ms. A connection closed at accept for
 * max_connections gets no response and no call.
 */
typedef void (*http_observer_cb)(void *ctx, const struct http_request *req, int status,
				 size_t body_len, uint64_t duration_ns);
typedef struct tls_context tls_context_t; /* tls.h */

/*
 * Per-server limits. A timeout of 0 disables that timer and max_connections
 * 0 means no limit; max_header_bytes and max_pipelined must be at least 1.
 */
typedef struct {
	size_t max_header_bytes;     /* request line plus headers; over it: 431 */
	size_t max_body_bytes;       /* decoded body; over it: 413 (Content-Length checked first) */
	uint64_t idle_timeout_ms;    /* no request arriving and none unanswered: close */
	uint64_t request_timeout_ms; /* first byte of a request to its last body byte: 408 */
	uint32_t max_connections;    /* further connections are closed at accept */
	uint32_t max_pipelined;      /* unanswered requests per connection before reading pauses */
	/*
	 * Requests parsed per connection in one loop pass, 0 = no limit. The
	 * rest of a pipelined burst waits for the next pass, so one client's
	 * burst does not delay the other connections' requests by more than this.
	 */
	uint32_t max_requests_per_pass;
	/*
	 * Optional: returns the body limit of one request once its headers are
	 * complete (path, query and headers set, no body yet) and points *flag
	 * at the setting's name for the 413 message. NULL: max_body_bytes and
	 * "--max-body-bytes" for every request. Called with the handler's ctx.
	 */
	size_t (*body_limit)(void *ctx, const struct http_request *req, const char **flag);
	http_observer_cb observer;   /* or NULL: metrics and the access log */
	uint64_t tls_handshake_timeout_ms; /* accept to finished TLS handshake: close */
	int accept_later; /* 1: bind and listen at start, accept from http_server_accept() on */
} http_limits_t;

typedef struct {
	const char *name; /* as received, not NUL-terminated */
	size_t name_len;
	const char *value; /* surrounding whitespace removed, not NUL-terminated */
	size_t value_len;
} http_header_t;

typedef struct http_request {
	int method;              /* llhttp_method_t value, e.g. HTTP_GET */
	const char *method_name; /* "GET", "POST", ... */
	const char *path;        /* target up to '?', not decoded */
	size_t path_len;
	const char *query;       /* after '?', not decoded; "" when absent */
	size_t query_len;
	const http_header_t *headers;
	size_t header_count;
	const char *body;        /* decoded body plus a NUL; "" when empty */
	size_t body_len;
	uint64_t id;             /* per-process request number, for logs */
	char remote_addr[64];    /* peer address "ip:port" */
	void *user;              /* free for the handler */
	/*
	 * 1 when the HTTP layer rejected the request before the handler saw it,
	 * so only the observer gets it; else 0. See http_observer_cb.
	 */
	int rejected;
} http_request_t;

typedef void (*http_handler_cb)(void *ctx, http_request_t *req);

/*
 * Starts listening on listen_addr ("host:port" with a numeric IPv4 host,
 * localhost (127.0.0.1) or a bracketed IPv6 one; port 0 picks a free port) and calls handler for each
 * complete request, in arrival order per connection. Returns 0, or
 * INFERQ_EINVAL (bad address or limits) / INFERQ_EIO (socket, bind or listen
 * failed) with the cause in err.
 */
int http_server_start(uv_loop_t *loop, const char *listen_addr, const http_limits_t *limits,
		      http_handler_cb handler, void *ctx, http_server_t **out, char *err,
		      size_t errlen);

/*
 * Checks a listen address as http_server_start() reads it: "host:port" with
 * a numeric IPv4 host, localhost, or a bracketed IPv6 host, and a port from
 * 0 to 65535. Returns 0, or INFERQ_EINVAL with the reason and an example in
 * err. Binds nothing.
 */
int http_listen_addr_check(const char *text, char *err, size_t errlen);

/* Returns the bound port (useful after port 0). */
int http_server_port(const http_server_t *server);

/*
 * Starts accepting connections on a server started with accept_later set;
 * until then clients wait in the kernel's backlog. Call it once. Returns 0,
 * or INFERQ_EIO with the cause in err.
 */
int http_server_accept(http_server_t *server, char *err, size_t errlen);

/* Returns the connections accepted and not yet closed. */
uint32_t http_server_connections(const http_server_t *server);

/*
 * Makes every connection the server accepts from now on speak TLS with the
 * certificate tls holds at that moment (HTTPS); call it before the loop
 * runs. The server does not own tls, which must outlive its connections'
 * start (each connection keeps its own reference to the certificate).
 */
void http_server_use_tls(http_server_t *server, tls_context_t *tls);

/*
 * Stops accepting, closes idle connections at once and drops requests only
 * partly received, then closes each other connection once its unanswered
 * requests are answered and written; calls done(ctx) (done may be NULL)
 * when every handle is closed, after which the server is freed. Requests
 * parsed but not answered still get their responses sent before their
 * connection closes. A connection that got its last response may wait up
 * to 2 s for the client to close its side before it is closed. Call it
 * once per server.
 */
void http_server_close(http_server_t *server, void (*done)(void *ctx), void *ctx);

/*
 * Returns the value of the first header named name (ASCII case-insensitive)
 * and its length in *len, or NULL when absent.
 */
const char *http_request_header(const http_request_t *req, const char *name, size_t *len);

/*
 * Sends the response to req and frees req: exactly once per request, from
 * the loop thread, at any time after the handler was called (also from
 * inside it). status is 200-599 (other values fail an assertion and abort).
 * body is copied; for a HEAD request it is not read and may be NULL, and
 * body_len only sets Content-Length. content_type NULL means "application/json".
 * extra_headers is NULL or complete "Name: value\r\n" lines. The layer adds
 * Date, Content-Type and Content-Length (neither for 204 and 304, which
 * carry no body; a HEAD answer keeps Content-Length and drops the body),
 * Connection: close when the connection will close, "Connection:
 * keep-alive" for a kept HTTP/1.0 connection, and "x-should-retry: false"
 * on 4xx responses other than 408 and 429. When the client went away
 * before the answer, the response is dropped quietly.
 */
void http_respond(http_request_t *req, int status, const char *content_type,
		  const char *extra_headers, const char *body, size_t body_len);

/*
 * Returns 1 when the request's connection is closed or the client has ended
 * its side of it (EOF), so a long-poll can stop waiting; else 0. A client
 * that only half-closed still receives the response.
 */
int http_request_is_orphaned(const http_request_t *req);

/* Called when the client of an unanswered request ends its side or the connection closes. */
typedef void (*http_orphan_cb)(void *arg, http_request_t *req);

/*
 * Calls cb(arg, req) once if the connection of req reaches EOF or closes
 * before req is answered, so that a long-poll can answer at once instead of
 * at the end of its wait (a socket whose client closed stays in CLOSE_WAIT
 * until then). The callback may call http_respond(); a client that only
 * half-closed still receives that response. http_respond() cancels the
 * watch. Call it at most once per request, and only while
 * http_request_is_orphaned() returns 0.
 */
void http_request_watch_orphan(http_request_t *req, http_orphan_cb cb, void *arg);

/*
 * Cancels the watch of http_request_watch_orphan, so cb is never called. A
 * caller that frees arg while req still waits for its response must call
 * it. Does nothing when req has no watch (none was set, or cb ran already).
 */
void http_request_unwatch_orphan(http_request_t *req);

/* Bytes of the longest value http_request_memo_put() keeps. */
#define HTTP_MEMO_VALUE_MAX 128

/*
 * A memo per connection of one value and 32 bytes computed from it, for
 * work that every request of a keep-alive connection repeats, such as
 * hashing its API key. http_request_memo_get() copies the result into
 * result and returns 1 when the connection of req has a memo of exactly
 * value[0..len), else returns 0. http_request_memo_put() replaces the
 * memo (a value over HTTP_MEMO_VALUE_MAX bytes is not kept). The memo is
 * zeroed and freed with the connection.
 */
int http_request_memo_get(const http_request_t *req, const char *value, size_t len,
			  unsigned char result[32]);
void http_request_memo_put(http_request_t *req, const char *value, size_t len,
			   const unsigned char result[32]);

/*
 * Reads query parameter name from query[0..len), percent-decoding it
 * ('+' is a space) into out as a NUL-terminated string, its length in
 * *value_len (may be NULL). Keys are compared after decoding and the first
 * occurrence wins; "name" without '=' has the value "". Returns 1 found,
 * 0 absent, INFERQ_EINVAL when the value or a key before it has a malformed
 * %XY or decodes to a NUL, INFERQ_ELIMIT when the value and its NUL do not
 * fit in outlen bytes.
 */
int http_query_param(const char *query, size_t len, const char *name, char *out, size_t outlen,
		     size_t *value_len);

#endif
