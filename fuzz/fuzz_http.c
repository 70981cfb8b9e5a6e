/*
 * Fuzz target for the HTTP/1.1 framing in http.c, driven through the real
 * server. LLVMFuzzerInitialize starts http_server_start on 127.0.0.1 port 0
 * on a libuv loop in the fuzzer's thread. Each input goes over a new TCP
 * connection from a non-blocking client socket in the same thread, which
 * runs the loop with UV_RUN_NOWAIT between its own steps. Nothing leaves
 * 127.0.0.1.
 *
 * Input layout: byte 0 modulo 4 is the number of split points, and that
 * many following bytes give the sizes (1..256) of the first pieces. The
 * rest is the request stream. Each piece is written, then the loop runs,
 * so the server sees it as a separate read. Then the client shuts down its
 * side and reads until the server closes.
 *
 * The handler answers at once with 200 and a 3-byte body, except requests
 * whose path starts with "/later", which are answered after the next loop
 * pass, so pipelined requests wait and the max_pipelined pause is reached.
 * It checks each request's fields as the header documents them.
 *
 * Checks: the bytes received are a sequence of complete HTTP/1.1 responses
 * (100, then 200s in request order, then at most one final error); there
 * is one 200 per request handed to the handler (at most one when some were
 * answered late); the server closes
 * the connection within CLOSE_TIMEOUT_MS, and all its handles for that
 * connection within another CLOSE_TIMEOUT_MS.
 *
 * SPDX-License-Identifier: MIT
 */
#include <arpa/inet.h>
#include <errno.h>
#include <poll.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include "buf.h"
#include "check.h"
#include "clock.h"
#include "http.h"
#include "log.h"

#define CLOSE_TIMEOUT_MS 5000
#define MAX_DEFERRED     64
#define MAX_REQUESTS     4096 /* inputs are at most a few KiB, so fewer requests than this */

static uv_loop_t loop;
static http_server_t *server;
static struct sockaddr_in server_addr;
static int idle_handles; /* handles on the loop with no connection open */

static http_request_t *deferred[MAX_DEFERRED];
static size_t deferred_count;
static unsigned char is_head[MAX_REQUESTS]; /* per request handed to the handler, in order */
static size_t request_count;
static size_t deferred_total; /* requests of this input whose response was deferred */

static void count_handle(uv_handle_t *h, void *arg)
{
	(*(int *)arg)++;
}

static int handle_count(void)
{
	int n = 0;

	uv_walk(&loop, count_handle, &n);
	return n;
}

/* Checks what the header promises about a request's fields. */
static void check_request(const http_request_t *req)
{
	FUZZ_CHECK(req->method_name != NULL && req->method_name[0] != '\0', "no method name");
	FUZZ_CHECK(req->path_len > 0 || req->query_len == 0, "query without a target");
	FUZZ_CHECK(memchr(req->path, '?', req->path_len) == NULL, "path %s contains '?'",
	           fuzz_show(req->path, req->path_len));
	FUZZ_CHECK(req->body[req->body_len] == '\0', "body not NUL-terminated");
	for (size_t i = 0; i < req->header_count; i++) {
		const http_header_t *h = &req->headers[i];

		FUZZ_CHECK(h->name_len > 0, "header %zu has an empty name", i);
		if (h->value_len > 0) {
			char first = h->value[0], last = h->value[h->value_len - 1];

			FUZZ_CHECK(first != ' ' && first != '\t' && last != ' ' && last != '\t',
			           "header value %s not trimmed",
			           fuzz_show(h->value, h->value_len));
		}
	}
}

static void on_request(void *ctx, http_request_t *req)
{
	check_request(req);
	FUZZ_CHECK(request_count < MAX_REQUESTS, "more than %d requests in one input",
	           MAX_REQUESTS);
	is_head[request_count++] = strcmp(req->method_name, "HEAD") == 0;
	if (req->path_len >= 6 && memcmp(req->path, "/later", 6) == 0 &&
	    deferred_count < MAX_DEFERRED) {
		deferred[deferred_count++] = req;
		deferred_total++;
		return;
	}
	http_respond(req, 200, "text/plain", NULL, "ok\n", 3);
}

static void answer_deferred(void)
{
	for (size_t i = 0; i < deferred_count; i++)
		http_respond(deferred[i], 200, "text/plain", NULL, "ok\n", 3);
	deferred_count = 0;
}

/* Runs one non-blocking loop pass, then sends the deferred responses. */
static void pump(void)
{
	uv_run(&loop, UV_RUN_NOWAIT);
	answer_deferred();
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	http_limits_t limits = {
	    .max_header_bytes = 2048,
	    .max_body_bytes = 8192,
	    .idle_timeout_ms = 0,
	    .request_timeout_ms = 0,
	    .max_connections = 0,
	    .max_pipelined = 4,
	};
	char err[256];

	signal(SIGPIPE, SIG_IGN);
	log_set_level(LOG_ERROR);
	uv_loop_init(&loop);
	if (http_server_start(&loop, "127.0.0.1:0", &limits, on_request, NULL, &server, err,
	                      sizeof(err)) != 0) {
		fprintf(stderr, "fuzz_http: cannot start the server: %s\n", err);
		exit(1);
	}
	memset(&server_addr, 0, sizeof(server_addr));
	server_addr.sin_family = AF_INET;
	server_addr.sin_port = htons((uint16_t)http_server_port(server));
	server_addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	idle_handles = handle_count();
	return 0;
}

/* Reads what is available into got; returns 1 at EOF. */
static int drain(int fd, buf_t *got)
{
	char tmp[4096];

	for (;;) {
		ssize_t n = recv(fd, tmp, sizeof(tmp), 0);

		if (n > 0) {
			buf_append(got, tmp, (size_t)n);
			continue;
		}
		if (n == 0)
			return 1;
		if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
			return 0;
		/* A reset after the server closed with unread bytes counts as the end. */
		FUZZ_CHECK(errno == ECONNRESET, "recv failed: %s", strerror(errno));
		return 1;
	}
}

/* Writes p[0..len), running the server whenever the socket is full. */
static void send_all(int fd, const char *p, size_t len, buf_t *got)
{
	int64_t deadline = clock_mono_ms() + CLOSE_TIMEOUT_MS;

	while (len > 0) {
		ssize_t n = send(fd, p, len, MSG_NOSIGNAL);

		if (n > 0) {
			p += n;
			len -= (size_t)n;
			continue;
		}
		/* The server may have closed already; the rest is never read. */
		if (n < 0 && (errno == EPIPE || errno == ECONNRESET))
			return;
		FUZZ_CHECK(n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR),
		           "send failed: %s", strerror(errno));
		FUZZ_CHECK(clock_mono_ms() < deadline, "server stopped reading for %d ms",
		           CLOSE_TIMEOUT_MS);
		pump();
		drain(fd, got);
	}
}

/* Returns the value of header name in the header block h[0..len), or -1. */
static long header_number(const char *h, size_t len, const char *name)
{
	size_t nlen = strlen(name);

	for (const char *line = h; line < h + len;) {
		const char *eol = memmem(line, (size_t)(h + len - line), "\r\n", 2);

		if (eol == NULL)
			break;
		if ((size_t)(eol - line) > nlen && strncasecmp(line, name, nlen) == 0 &&
		    line[nlen] == ':')
			return strtol(line + nlen + 1, NULL, 10);
		line = eol + 2;
	}
	return -1;
}

/* Parses the response stream; returns the number of 200 responses. */
static size_t check_responses(const char *p, size_t len, const char *input, size_t input_len)
{
	size_t pos = 0, ok = 0;
	int final_seen = 0;

	while (pos < len) {
		const char *r = p + pos, *end;
		int status;
		long body;

		FUZZ_CHECK(!final_seen, "bytes after a final error response: %s (input %s)",
		           fuzz_show(r, len - pos), fuzz_show(input, input_len));
		end = memmem(r, len - pos, "\r\n\r\n", 4);
		FUZZ_CHECK(end != NULL, "incomplete response head %s (input %s)",
		           fuzz_show(r, len - pos), fuzz_show(input, input_len));
		FUZZ_CHECK(len - pos >= 13 && memcmp(r, "HTTP/1.1 ", 9) == 0 && r[9] >= '1' &&
		               r[9] <= '5' && r[10] >= '0' && r[10] <= '9' && r[11] >= '0' &&
		               r[11] <= '9' && r[12] == ' ',
		           "bad status line %s (input %s)", fuzz_show(r, len - pos),
		           fuzz_show(input, input_len));
		status = (r[9] - '0') * 100 + (r[10] - '0') * 10 + (r[11] - '0');
		body = header_number(r, (size_t)(end - r) + 2, "content-length");
		pos += (size_t)(end - r) + 4;
		if (status == 100)
			continue;
		FUZZ_CHECK(body >= 0, "response %d has no Content-Length (input %s)", status,
		           fuzz_show(input, input_len));
		if (status == 200) {
			FUZZ_CHECK(ok < request_count,
			           "more 200 responses than requests (input %s)",
			           fuzz_show(input, input_len));
			if (is_head[ok++])
				body = 0;
		} else {
			FUZZ_CHECK(status >= 400, "unexpected status %d (input %s)", status,
			           fuzz_show(input, input_len));
			final_seen = 1;
		}
		FUZZ_CHECK((size_t)body <= len - pos, "response body cut short (input %s)",
		           fuzz_show(input, input_len));
		pos += (size_t)body;
	}
	return ok;
}

/*
 * Connects a non-blocking client socket to the server. The connect itself
 * is non-blocking too, because libFuzzer's SIGALRM would interrupt a
 * blocking one with EINTR.
 */
static int client_connect(void)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
	struct pollfd pfd = {.fd = -1, .events = POLLOUT};
	int soerr = 0, rc;
	socklen_t soerr_len = sizeof(soerr);

	FUZZ_CHECK(fd >= 0, "socket failed: %s", strerror(errno));
	rc = connect(fd, (struct sockaddr *)&server_addr, sizeof(server_addr));
	FUZZ_CHECK(rc == 0 || errno == EINPROGRESS, "connect to 127.0.0.1:%d failed: %s",
	           ntohs(server_addr.sin_port), strerror(errno));
	pfd.fd = fd;
	do
		rc = poll(&pfd, 1, CLOSE_TIMEOUT_MS);
	while (rc < 0 && errno == EINTR);
	FUZZ_CHECK(rc == 1, "connect to 127.0.0.1:%d did not finish within %d ms",
	           ntohs(server_addr.sin_port), CLOSE_TIMEOUT_MS);
	getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &soerr_len);
	FUZZ_CHECK(soerr == 0, "connect to 127.0.0.1:%d failed: %s", ntohs(server_addr.sin_port),
	           strerror(soerr));
	return fd;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *input = (const char *)data;
	size_t splits, pos, len;
	buf_t got = BUF_INIT;
	int64_t deadline;
	size_t answered;
	int fd, eof = 0;

	if (size == 0)
		return 0;
	splits = data[0] % 4;
	if (size < 1 + splits)
		return 0;
	pos = 1 + splits;
	request_count = 0;
	deferred_total = 0;
	fd = client_connect();

	/* Send the pieces, letting the server read each before the next. */
	for (size_t i = 0; i < splits && pos < size; i++) {
		len = (size_t)data[1 + i] + 1;
		if (len > size - pos)
			len = size - pos;
		send_all(fd, input + pos, len, &got);
		pos += len;
		pump();
		pump();
		drain(fd, &got);
	}
	send_all(fd, input + pos, size - pos, &got);
	shutdown(fd, SHUT_WR);

	deadline = clock_mono_ms() + CLOSE_TIMEOUT_MS;
	while (!eof) {
		FUZZ_CHECK(clock_mono_ms() < deadline,
		           "server did not close the connection within %d ms (input %s)",
		           CLOSE_TIMEOUT_MS, fuzz_show(input, size));
		pump();
		eof = drain(fd, &got);
	}
	close(fd);
	answered = check_responses(got.data, got.len, input, size);

	/*
	 * With every request answered at once, each one gets its response. A
	 * late answer may be dropped: when the client ends its side in the
	 * middle of a later request, the server closes the connection at once.
	 */
	if (deferred_total == 0)
		FUZZ_CHECK(answered == request_count, "%zu responses to %zu requests (input %s)",
		           answered, request_count, fuzz_show(input, size));

	/* Let the server close its side, so no connection outlives the input. */
	deadline = clock_mono_ms() + CLOSE_TIMEOUT_MS;
	while (handle_count() > idle_handles || deferred_count > 0) {
		FUZZ_CHECK(clock_mono_ms() < deadline, "connection handles still open after %d ms",
		           CLOSE_TIMEOUT_MS);
		pump();
	}
	buf_free(&got);
	return 0;
}
