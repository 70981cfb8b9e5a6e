/*
 * Tests of the HTTP layer: a real server runs on its own uv loop in a
 * background thread on 127.0.0.1 port 0, and the tests talk to it over raw
 * blocking sockets (receive timeout 5 s), so every framing case is checked
 * byte for byte. The test handler answers some paths at once and others
 * after a uv_timer delay, which lets tests answer requests out of order.
 *
 * SPDX-License-Identifier: MIT
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "http.h"
#include "inferq_error.h"
#include "log.h"

#define RECV_TIMEOUT_MS 5000
#define CLIENT_BUF      (4u << 20)

/* ---- server fixture ---- */

struct fixture {
	uv_loop_t loop;
	uv_thread_t thread;
	uv_async_t stop_async;
	uv_sem_t started;
	http_server_t *server;
	http_limits_t limits;
	int port;
	int start_rc;
	char start_err[256];
	atomic_int stop_sent;
	atomic_int done_called;
	atomic_int handled;       /* requests the handler received */
	atomic_int orphan_checks; /* /orphan requests answered */
	atomic_int orphaned_seen; /* of those, answered while orphaned */
};

static struct fixture fx;

/* One call of the observer, copied on the loop thread. */
struct observation {
	int status;
	int rejected;
	int method;
	char method_name[16];
	char path[64];
	size_t header_count;
	size_t body_len; /* bytes of the response body */
};

#define MAX_OBSERVATIONS 16

/* The observer's calls, filled on the loop thread and read by the test thread. */
static struct {
	uv_mutex_t lock;
	struct observation seen[MAX_OBSERVATIONS];
	int count;
} observed;

struct delayed {
	uv_timer_t timer;
	http_request_t *req;
	char tag[64];
	int check_orphan;
};

static http_limits_t default_limits(void)
{
	http_limits_t lim = {
	    .max_header_bytes = 8192,
	    .max_body_bytes = 1 << 20,
	    .idle_timeout_ms = 10000,
	    .request_timeout_ms = 10000,
	    .max_connections = 64,
	    .max_pipelined = 16,
	};
	return lim;
}

static int query_int(const http_request_t *req, const char *name, int fallback)
{
	char value[32];

	if (http_query_param(req->query, req->query_len, name, value, sizeof(value), NULL) != 1)
		return fallback;
	return atoi(value);
}

static void on_delay_closed(uv_handle_t *h)
{
	free(h->data);
}

static void on_delay(uv_timer_t *t)
{
	struct delayed *d = t->data;

	if (d->check_orphan) {
		atomic_fetch_add(&fx.orphaned_seen, http_request_is_orphaned(d->req));
		atomic_fetch_add(&fx.orphan_checks, 1);
	}
	http_respond(d->req, 200, "text/plain", NULL, d->tag, strlen(d->tag));
	uv_close((uv_handle_t *)t, on_delay_closed);
}

static void answer_later(http_request_t *req, int check_orphan)
{
	struct delayed *d = calloc(1, sizeof(*d));

	d->req = req;
	d->check_orphan = check_orphan;
	if (http_query_param(req->query, req->query_len, "tag", d->tag, sizeof(d->tag), NULL) != 1)
		strcpy(d->tag, "late");
	uv_timer_init(&fx.loop, &d->timer);
	d->timer.data = d;
	uv_timer_start(&d->timer, on_delay, (uint64_t)query_int(req, "ms", 100), 0);
}

static int path_is(const http_request_t *req, const char *path)
{
	return req->path_len == strlen(path) && memcmp(req->path, path, req->path_len) == 0;
}

/* Answers with the target split into path and query, and the X-Test header. */
static void answer_target(http_request_t *req)
{
	char body[512];
	size_t len = 0;
	const char *value = http_request_header(req, "x-test", &len);
	int n = snprintf(body, sizeof(body), "%.*s|%.*s|%.*s|%zu", (int)req->path_len, req->path,
	                 (int)req->query_len, req->query, value ? (int)len : 4,
	                 value ? value : "none", req->header_count);

	http_respond(req, 200, "text/plain", NULL, body, (size_t)n);
}

static void test_handler(void *ctx, http_request_t *req)
{
	atomic_fetch_add(&fx.handled, 1);
	if (path_is(req, "/fast")) {
		http_respond(req, 200, NULL, NULL, "{\"ok\":true}", 11);
	} else if (path_is(req, "/echo")) {
		http_respond(req, 200, "application/octet-stream", "X-Echo: 1\r\n", req->body,
		             req->body_len);
	} else if (path_is(req, "/delay")) {
		answer_later(req, 0);
	} else if (path_is(req, "/orphan")) {
		answer_later(req, 1);
	} else if (path_is(req, "/status")) {
		http_respond(req, query_int(req, "code", 200), NULL, NULL, "{}", 2);
	} else if (path_is(req, "/target")) {
		answer_target(req);
	} else if (path_is(req, "/big")) {
		size_t n = (size_t)query_int(req, "kib", 256) * 1024;
		char *body = malloc(n);

		memset(body, 'a' + (char)(query_int(req, "i", 0) % 26), n);
		http_respond(req, 200, "text/plain", NULL, body, n);
		free(body);
	} else {
		http_respond(req, 404, NULL, NULL, "{\"code\":\"not_found\"}", 20);
	}
}

static void on_server_done(void *ctx)
{
	atomic_store(&fx.done_called, 1);
}

static void on_stop(uv_async_t *a)
{
	http_server_close(fx.server, on_server_done, NULL);
	uv_close((uv_handle_t *)a, NULL);
}

static void server_thread(void *arg)
{
	fx.start_rc = http_server_start(&fx.loop, "127.0.0.1:0", &fx.limits, test_handler, NULL,
	                                &fx.server, fx.start_err, sizeof(fx.start_err));
	if (fx.start_rc == 0)
		fx.port = http_server_port(fx.server);
	else
		uv_close((uv_handle_t *)&fx.stop_async, NULL);
	uv_sem_post(&fx.started);
	uv_run(&fx.loop, UV_RUN_DEFAULT);
}

static void server_start(const http_limits_t *limits)
{
	memset(&fx, 0, sizeof(fx));
	fx.limits = *limits;
	assert_int_equal(uv_loop_init(&fx.loop), 0);
	assert_int_equal(uv_async_init(&fx.loop, &fx.stop_async, on_stop), 0);
	assert_int_equal(uv_sem_init(&fx.started, 0), 0);
	assert_int_equal(uv_thread_create(&fx.thread, server_thread, NULL), 0);
	uv_sem_wait(&fx.started);
	uv_sem_destroy(&fx.started);
	assert_int_equal(fx.start_rc, 0);
	assert_true(fx.port > 0);
}

/* Asks the loop thread to close the server; the thread ends when every handle is closed. */
static void server_request_close(void)
{
	if (atomic_exchange(&fx.stop_sent, 1) == 0)
		uv_async_send(&fx.stop_async);
}

static void server_stop(void)
{
	server_request_close();
	uv_thread_join(&fx.thread);
	assert_int_equal(fx.done_called, 1);
	assert_int_equal(uv_loop_close(&fx.loop), 0);
}

static int setup(void **state)
{
	http_limits_t lim = default_limits();

	server_start(&lim);
	return 0;
}

static int teardown(void **state)
{
	server_stop();
	return 0;
}

/* Restarts the fixture's server with other limits. */
static void restart_with(const http_limits_t *lim)
{
	server_stop();
	server_start(lim);
}

/* ---- raw client ---- */

typedef struct {
	int fd;
	char *buf;
	size_t len;
} client_t;

typedef struct {
	int status;
	char head[8192]; /* status line and headers */
	char *body;      /* NUL-terminated copy */
	size_t body_len;
} response_t;

static client_t *client_open(void)
{
	client_t *cl = calloc(1, sizeof(*cl));
	struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)fx.port)};
	struct timeval tv = {.tv_sec = RECV_TIMEOUT_MS / 1000};
	int one = 1;

	addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	cl->buf = malloc(CLIENT_BUF);
	cl->fd = socket(AF_INET, SOCK_STREAM, 0);
	assert_true(cl->fd >= 0);
	assert_int_equal(setsockopt(cl->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)), 0);
	assert_int_equal(setsockopt(cl->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)), 0);
	assert_int_equal(connect(cl->fd, (struct sockaddr *)&addr, sizeof(addr)), 0);
	return cl;
}

static void client_close(client_t *cl)
{
	close(cl->fd);
	free(cl->buf);
	free(cl);
}

/* Closes with SO_LINGER 0, so the server sees a reset instead of EOF. */
static void client_reset(client_t *cl)
{
	struct linger lg = {.l_onoff = 1, .l_linger = 0};

	setsockopt(cl->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	client_close(cl);
}

static void send_bytes(client_t *cl, const char *p, size_t len)
{
	while (len > 0) {
		ssize_t n = send(cl->fd, p, len, MSG_NOSIGNAL);

		assert_true(n > 0);
		p += n;
		len -= (size_t)n;
	}
}

static void send_str(client_t *cl, const char *s)
{
	send_bytes(cl, s, strlen(s));
}

/* Sends s one byte per send() with a short pause, so the server sees many small reads. */
static void send_bytewise(client_t *cl, const char *s)
{
	struct timespec pause = {.tv_nsec = 1000000};

	for (; *s; s++) {
		send_bytes(cl, s, 1);
		nanosleep(&pause, NULL);
	}
}

static ssize_t client_fill(client_t *cl)
{
	ssize_t n;

	assert_true(cl->len < CLIENT_BUF);
	n = recv(cl->fd, cl->buf + cl->len, CLIENT_BUF - cl->len, 0);
	if (n > 0)
		cl->len += (size_t)n;
	return n;
}

static const char *find_header_end(const client_t *cl)
{
	return memmem(cl->buf, cl->len, "\r\n\r\n", 4);
}

static size_t header_content_length(const char *head, int *present)
{
	const char *p = strcasestr(head, "\r\nContent-Length:");

	*present = p != NULL;
	return p ? strtoul(p + 17, NULL, 10) : 0;
}

/*
 * Reads one response. Returns 0, or -1 when the connection closed or timed
 * out first. HEAD responses have no body whatever their Content-Length.
 */
static int read_response_for(client_t *cl, response_t *r, int head_request)
{
	const char *end;
	size_t head_len, body_len;
	int has_cl;

	memset(r, 0, sizeof(*r));
	while ((end = find_header_end(cl)) == NULL) {
		if (client_fill(cl) <= 0)
			return -1;
	}
	head_len = (size_t)(end - cl->buf) + 4;
	assert_true(head_len < sizeof(r->head));
	memcpy(r->head, cl->buf, head_len);
	r->head[head_len] = '\0';
	assert_int_equal(strncmp(r->head, "HTTP/1.1 ", 9), 0);
	r->status = atoi(r->head + 9);
	body_len = header_content_length(r->head, &has_cl);
	if (head_request || r->status < 200 || r->status == 204)
		body_len = 0;
	while (cl->len < head_len + body_len) {
		if (client_fill(cl) <= 0)
			return -1;
	}
	r->body = malloc(body_len + 1);
	memcpy(r->body, cl->buf + head_len, body_len);
	r->body[body_len] = '\0';
	r->body_len = body_len;
	memmove(cl->buf, cl->buf + head_len + body_len, cl->len - head_len - body_len);
	cl->len -= head_len + body_len;
	return 0;
}

static int read_response(client_t *cl, response_t *r)
{
	return read_response_for(cl, r, 0);
}

static void response_free(response_t *r)
{
	free(r->body);
	r->body = NULL;
}

static int has_header(const response_t *r, const char *line)
{
	char needle[256];

	snprintf(needle, sizeof(needle), "\r\n%s\r\n", line);
	return strcasestr(r->head, needle) != NULL;
}

/* Returns 1 when the server closed the connection (EOF or reset) and sent nothing more. */
static int wait_closed(client_t *cl)
{
	for (int i = 0; i < 1000; i++) {
		ssize_t n = client_fill(cl);

		if (n == 0 || (n < 0 && errno == ECONNRESET))
			return cl->len == 0;
		if (n < 0)
			return 0; /* timed out */
	}
	return 0;
}

/* Sends one request on a fresh connection and expects an error status, then a close. */
static void expect_rejected(const char *request, int status, const char *body_part)
{
	client_t *cl = client_open();
	response_t r;

	send_str(cl, request);
	assert_int_equal(read_response(cl, &r), 0);
	assert_int_equal(r.status, status);
	assert_true(has_header(&r, "Connection: close"));
	if (body_part)
		assert_non_null(strstr(r.body, body_part));
	assert_true(wait_closed(cl));
	response_free(&r);
	client_close(cl);
}

/* Polls an atomic counter until it reaches want or 5 s pass. */
static int wait_counter(atomic_int *counter, int want)
{
	struct timespec pause = {.tv_nsec = 5000000};

	for (int i = 0; i < 1000; i++) {
		if (atomic_load(counter) >= want)
			return 1;
		nanosleep(&pause, NULL);
	}
	return 0;
}

static long elapsed_ms(const struct timespec *start)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (now.tv_sec - start->tv_sec) * 1000 + (now.tv_nsec - start->tv_nsec) / 1000000;
}

/* Copies each call into observed, as the server's metrics and access log see it. */
static void record_observation(void *ctx, const http_request_t *req, int status, size_t body_len,
                               uint64_t duration_ns)
{
	struct observation o = {.status = status, .rejected = req->rejected, .method = req->method,
	                        .header_count = req->header_count, .body_len = body_len};

	snprintf(o.method_name, sizeof(o.method_name), "%s", req->method_name);
	snprintf(o.path, sizeof(o.path), "%.*s", (int)req->path_len, req->path);
	uv_mutex_lock(&observed.lock);
	if (observed.count < MAX_OBSERVATIONS)
		observed.seen[observed.count++] = o;
	uv_mutex_unlock(&observed.lock);
}

/* Returns a copy of the observer's last call; fails when there was none. */
static struct observation last_observation(void)
{
	struct observation o;

	uv_mutex_lock(&observed.lock);
	assert_true(observed.count > 0);
	o = observed.seen[observed.count - 1];
	uv_mutex_unlock(&observed.lock);
	return o;
}

static int observation_count(void)
{
	int n;

	uv_mutex_lock(&observed.lock);
	n = observed.count;
	uv_mutex_unlock(&observed.lock);
	return n;
}

/*
 * Sends request on a new connection, reads the response and returns the
 * observer's call for it, whose body_len must match the body received.
 */
static struct observation observe_one(const char *request, int status)
{
	client_t *cl = client_open();
	int before = observation_count();
	struct observation o;
	response_t r;

	send_str(cl, request);
	assert_int_equal(read_response(cl, &r), 0);
	assert_int_equal(r.status, status);
	assert_int_equal(observation_count(), before + 1);
	o = last_observation();
	assert_int_equal(o.status, status);
	assert_int_equal(o.body_len, r.body_len);
	response_free(&r);
	client_close(cl);
	return o;
}

/* ---- tests ---- */

static void get_simple(void **state)
{
	client_t *cl = client_open();
	response_t r;

	send_str(cl, "GET /fast HTTP/1.1\r\nHost: x\r\n\r\n");
	assert_int_equal(read_response(cl, &r), 0);
	assert_int_equal(r.status, 200);
	assert_int_equal(strncmp(r.head, "HTTP/1.1 200 OK\r\n", 17), 0);
	assert_true(has_header(&r, "Content-Type: application/json"));
	assert_true(has_header(&r, "Content-Length: 11"));
	assert_null(strcasestr(r.head, "x-should-retry"));
	assert_null(strcasestr(r.head, "Connection:"));
	assert_string_equal(r.body, "{\"ok\":true}");
	response_free(&r);
	client_close(cl);
}

static void post_content_length_echo(void **state)
{
	/* The body holds a bare CR and a NUL: only the header block is checked for CR. */
	static const char body[] = "ab\rc\0d\r\n";
	client_t *cl = client_open();
	response_t r;
	char head[128];

	snprintf(head, sizeof(head), "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: %zu\r\n\r\n",
	         sizeof(body) - 1);
	send_str(cl, head);
	send_bytes(cl, body, sizeof(body) - 1);
	assert_int_equal(read_response(cl, &r), 0);
	assert_int_equal(r.status, 200);
	assert_true(has_header(&r, "Content-Type: application/octet-stream"));
	assert_true(has_header(&r, "X-Echo: 1"));
	assert_int_equal(r.body_len, sizeof(body) - 1);
	assert_memory_equal(r.body, body, sizeof(body) - 1);
	response_free(&r);
	client_close(cl);
}

static void post_large_body_echo(void **state)
{
	size_t n = 300000; /* over the size kept inside the request allocation */
	char *body = malloc(n);
	client_t *cl = client_open();
	response_t r;
	char head[128];

	for (size_t i = 0; i < n; i++)
		body[i] = (char)('a' + i % 26);
	snprintf(head, sizeof(head), "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: %zu\r\n\r\n", n);
	send_str(cl, head);
	send_bytes(cl, body, n);
	assert_int_equal(read_response(cl, &r), 0);
	assert_int_equal(r.status, 200);
	assert_int_equal(r.body_len, n);
	assert_memory_equal(r.body, body, n);
	response_free(&r);
	client_close(cl);
	free(body);
}

static void post_chunked_decoded(void **state)
{
	client_t *cl = client_open();
	response_t r;

	send_str(cl, "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
	             "5\r\nhello\r\n1;ext=1\r\n \r\n");
	send_bytewise(cl, "5\r\nwo\rld\r\n");
	send_str(cl, "0\r\nTrailer-X: 1\r\n\r\n");
	assert_int_equal(read_response(cl, &r), 0);
	assert_int_equal(r.status, 200);
	assert_string_equal(r.body, "hello wo\rld");
	response_free(&r);

	/* The connection stays usable after a chunked body. */
	send_str(cl, "GET /fast HTTP/1.1\r\nHost: t\r\n\r\n");
	assert_int_equal(read_response(cl, &r), 0);
	assert_int_equal(r.status, 200);
	response_free(&r);
	client_close(cl);
}

static void keep_alive_several(void **state)
{
	client_t *cl = client_open();
	response_t r;

	for (int i = 0; i < 5; i++) {
		char req[128], want[32];

		snprintf(req, sizeof(req), "GET /target?i=%d HTTP/1.1\r\nHost: x\r\n\r\n", i);
		snprintf(want, sizeof(want), "/target|i=%d|none|1", i);
		send_str(cl, req);
		assert_int_equal(read_response(cl, &r), 0);
		assert_int_equal(r.status, 200);
		assert_string_equal(r.body, want);
		response_free(&r);
	}
	assert_int_equal(atomic_load(&fx.handled), 5);
	client_close(cl);
}

static void target_and_header_values(void **state)
{
	client_t *cl = client_open();
	response_t r;

	send_str(cl,
	         "GET /target?a=%20b&c HTTP/1.1\r\nX-Test:   padded value \t\r\nHost: x\r\n\r\n");
	assert_int_equal(read_response(cl, &r), 0);
	assert_string_equal(r.body, "/target|a=%20b&c|padded value|2");
	response_free(&r);
	send_str(cl, "GET /target HTTP/1.1\r\nHost: t\r\nx-test:\r\n\r\n");
	assert_int_equal(read_response(cl, &r), 0);
	assert_string_equal(r.body, "/target|||2");
	response_free(&r);
	client_close(cl);
}

static void pipelined_out_of_order(void **state)
{
	client_t *cl = client_open();
	response_t r;
	static const char *const want[] = {"A", "B", "{\"ok\":true}", "C"};

	/* A waits longest and C is answered before B, yet responses keep request order. */
	send_str(cl, "GET /delay?ms=300&tag=A HTTP/1.1\r\nHost: t\r\n\r\n"
	             "GET /delay?ms=150&tag=B HTTP/1.1\r\nHost: t\r\n\r\n"
	             "GET /fast HTTP/1.1\r\nHost: t\r\n\r\n"
	             "GET /delay?ms=10&tag=C HTTP/1.1\r\nHost: t\r\n\r\n");
	for (int i = 0; i < 4; i++) {
		assert_int_equal(read_response(cl, &r), 0);
		assert_int_equal(r.status, 200);
		assert_string_equal(r.body, want[i]);
		response_free(&r);
	}
	client_close(cl);
}

static void pipeline_limit_pauses_reading(void **state)
{
	http_limits_t lim = default_limits();
	client_t *cl;
	response_t r;
	char req[4096] = "";

	lim.max_pipelined = 2;
	restart_with(&lim);
	cl = client_open();
	for (int i = 0; i < 6; i++) {
		char one[128];

		snprintf(one, sizeof(one), "GET /delay?ms=%d&tag=T%d HTTP/1.1\r\nHost: t\r\n\r\n", 60 - i * 10,
		         i);
		strcat(req, one);
	}
	send_str(cl, req);

	/* Only two requests are dispatched until the first answers arrive. */
	assert_int_equal(read_response(cl, &r), 0);
	assert_string_equal(r.body, "T0");
	response_free(&r);
	for (int i = 1; i < 6; i++) {
		char want[16];

		snprintf(want, sizeof(want), "T%d", i);
		assert_int_equal(read_response(cl, &r), 0);
		assert_string_equal(r.body, want);
		response_free(&r);
	}
	assert_int_equal(atomic_load(&fx.handled), 6);
	client_close(cl);
}

static void pass_budget_keeps_pipeline_whole(void **state)
{
	http_limits_t lim = default_limits();
	client_t *cl;
	response_t r;
	char req[16384] = "";
	int count = 60;

	/* One request per loop pass: a burst of 60, with Content-Length and chunked bodies,
	 * is parsed over 60 passes from the stash, and every answer comes in order. */
	lim.max_requests_per_pass = 1;
	restart_with(&lim);
	cl = client_open();
	for (int i = 0; i < count; i++) {
		char one[256];

		if (i % 3 == 0)
			snprintf(one, sizeof(one), "GET /target?i=%d HTTP/1.1\r\nHost: t\r\n\r\n", i);
		else if (i % 3 == 1)
			snprintf(one, sizeof(one),
			         "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n\r\nb%03d", i);
		else
			snprintf(one, sizeof(one),
			         "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
			         "2\r\nc%d\r\n2\r\n%02d\r\n0\r\n\r\n",
			         i % 10, i);
		strcat(req, one);
	}
	send_str(cl, req);
	for (int i = 0; i < count; i++) {
		char want[64];

		if (i % 3 == 0)
			snprintf(want, sizeof(want), "/target|i=%d|none|1", i);
		else if (i % 3 == 1)
			snprintf(want, sizeof(want), "b%03d", i);
		else
			snprintf(want, sizeof(want), "c%d%02d", i % 10, i);
		assert_int_equal(read_response(cl, &r), 0);
		assert_int_equal(r.status, 200);
		assert_string_equal(r.body, want);
		response_free(&r);
	}
	assert_int_equal(atomic_load(&fx.handled), count);
	client_close(cl);
}

static void slow_reader_gets_everything(void **state)
{
	http_limits_t lim = default_limits();
	client_t *cl;
	response_t r;
	char req[8192] = "";
	int count = 40;

	/* 40 responses of 256 KiB (10 MiB) to a client that reads only after sending
	 * all requests: reading pauses on the write backlog and resumes as it drains. */
	lim.max_pipelined = 64;
	restart_with(&lim);
	cl = client_open();
	for (int i = 0; i < count; i++) {
		char one[64];

		snprintf(one, sizeof(one), "GET /big?i=%d HTTP/1.1\r\nHost: t\r\n\r\n", i);
		strcat(req, one);
	}
	send_str(cl, req);
	for (int i = 0; i < count; i++) {
		assert_int_equal(read_response(cl, &r), 0);
		assert_int_equal(r.status, 200);
		assert_int_equal(r.body_len, 256 * 1024);
		assert_int_equal(r.body[0], 'a' + i % 26);
		assert_int_equal(r.body[r.body_len - 1], 'a' + i % 26);
		response_free(&r);
	}
	client_close(cl);
}

static void body_over_limit_by_content_length(void **state)
{
	http_limits_t lim = default_limits();
	client_t *cl;
	response_t r;

	lim.max_body_bytes = 1024;
	restart_with(&lim);

	/* The answer comes before any body byte is sent. */
	expect_rejected("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5000\r\n\r\n", 413, "1024");

	/* With Expect: 100-continue, 413 comes instead of 100. */
	cl = client_open();
	send_str(cl, "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 1025\r\nExpect: 100-continue\r\n\r\n");
	assert_int_equal(read_response(cl, &r), 0);
	assert_int_equal(r.status, 413);
	assert_true(has_header(&r, "x-should-retry: false"));
	assert_non_null(strstr(r.body, "\"type\":\"request_too_large\""));
	assert_true(wait_closed(cl));
	response_free(&r);
	client_close(cl);

	/* Exactly at the limit is accepted. */
	cl = client_open();
	send_str(cl, "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 1024\r\n\r\n");
	for (int i = 0; i < 16; i++)
		send_str(cl, "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef");
	assert_int_equal(read_response(cl, &r), 0);
	assert_int_equal(r.status, 200);
	assert_int_equal(r.body_len, 1024);
	response_free(&r);
	client_close(cl);
	assert_int_equal(atomic_load(&fx.handled), 1);
}

/* A per-request body limit: 4096 bytes for /echo?big, 1024 for every other request. */
static size_t big_echo_limit(void *ctx, const struct http_request *req, const char **flag)
{
	if (path_is(req, "/echo") && req->query_len == 3 && memcmp(req->query, "big", 3) == 0) {
		*flag = "--big-limit";
		return 4096;
	}
	return 1024;
}

/* Sends a POST of n bytes to target on a new connection and reads the response. */
static void post_bytes(const char *target, size_t n, response_t *r)
{
	client_t *cl = client_open();
	char head[128];
	char *body = malloc(n);

	memset(body, 'z', n);
	snprintf(head, sizeof(head), "POST %s HTTP/1.1\r\nHost: t\r\nContent-Length: %zu\r\n\r\n",
	         target, n);
	send_str(cl, head);
	send_bytes(cl, body, n);
	assert_int_equal(read_response(cl, r), 0);
	client_close(cl);
	free(body);
}

static void body_limit_per_request(void **state)
{
	http_limits_t lim = default_limits();
	client_t *cl;
	response_t r;
	char chunk[3000];

	lim.max_body_bytes = 1024;
	lim.body_limit = big_echo_limit;
	restart_with(&lim);

	post_bytes("/echo?big", 4096, &r);
	assert_int_equal(r.status, 200);
	assert_int_equal(r.body_len, 4096);
	response_free(&r);

	post_bytes("/echo?big", 4097, &r);
	assert_int_equal(r.status, 413);
	assert_non_null(strstr(r.body, "4096 bytes (--big-limit)"));
	response_free(&r);

	post_bytes("/echo", 1025, &r);
	assert_int_equal(r.status, 413);
	assert_non_null(strstr(r.body, "1024 bytes (--max-body-bytes)"));
	response_free(&r);

	/* A chunked body is held to the same per-request limit as it arrives. */
	cl = client_open();
	memset(chunk, 'y', 2990);
	strcpy(chunk + 2990, "\r\n");
	send_str(cl, "POST /echo?big HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n");
	send_str(cl, "bae\r\n"); /* 2990 bytes */
	send_str(cl, chunk);
	send_str(cl, "0\r\n\r\n");
	assert_int_equal(read_response(cl, &r), 0);
	assert_int_equal(r.status, 200);
	assert_int_equal(r.body_len, 2990);
	response_free(&r);
	send_str(cl, "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n");
	send_str(cl, "bae\r\n");
	send_str(cl, chunk);
	assert_int_equal(read_response(cl, &r), 0);
	assert_int_equal(r.status, 413);
	assert_non_null(strstr(r.body, "--max-body-bytes"));
	response_free(&r);
	client_close(cl);
	assert_int_equal(atomic_load(&fx.handled), 2);
}

static void body_over_limit_chunked(void **state)
{
	http_limits_t lim = default_limits();
	client_t *cl;
	response_t r;
	char chunk[700];

	lim.max_body_bytes = 1024;
	restart_with(&lim);
	cl = client_open();
	memset(chunk, 'x', 600);
	strcpy(chunk + 600, "\r\n");
	send_str(cl, "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n");
	for (int i = 0; i < 2; i++) {
		send_str(cl, "258\r\n"); /* 600 bytes */
		send_str(cl, chunk);
	}
	assert_int_equal(read_response(cl, &r), 0);
	assert_int_equal(r.status, 413);
	assert_true(has_header(&r, "Connection: close"));
	assert_non_null(strstr(r.body, "1024 bytes"));
	assert_true(wait_closed(cl));
	response_free(&r);
	client_close(cl);
	assert_int_equal(atomic_load(&fx.handled), 0);
}

static void headers_over_limit(void **state)
{
	static const char start[] = "GET /fast HTTP/1.1\r\nHost: t\r\nX-Big: ";
	http_limits_t lim = default_limits();
	char req[4096];
	size_t n = sizeof(start) - 1;
	client_t *cl;
	response_t r;

	lim.max_header_bytes = 1024;
	restart_with(&lim);

	memcpy(req, start, n);
	memset(req + n, 'v', 2000);
	strcpy(req + n + 2000, "\r\n\r\n");
	expect_rejected(req, 431, "1024 bytes");

	/* A header block of exactly the limit is accepted: 1024 - 4 - n value bytes. */
	memset(req + n, 'v', 1024 - 4 - n);
	strcpy(req + 1024 - 4, "\r\n\r\n");
	assert_int_equal(strlen(req), 1024);
	cl = client_open();
	send_str(cl, req);
	assert_int_equal(read_response(cl, &r), 0);
	assert_int_equal(r.status, 200);
	response_free(&r);

	/* One byte more is rejected. */
	memset(req + n, 'v', 1024 - 3 - n);
	strcpy(req + 1024 - 3, "\r\n\r\n");
	send_str(cl, req);
	assert_int_equal(read_response(cl, &r), 0);
	assert_int_equal(r.status, 431);
	response_free(&r);
	client_close(cl);
}

static void bare_cr_rejected(void **state)
{
	/* Shapes llhttp 8.1 accepts on its own. */
	static const char *const requests[] = {
	    "GET /fast HTTP/1.1\r\nHost: t\r\nX: a\r\n\rY: b\r\n\r\n",
	    "GET /fast HTTP/1.1\r\nHost: t\r\nX:\rb\r\n\r\n",
	    "\rGET /fast HTTP/1.1\r\nHost: t\r\n\r\n",
	    "GET /fast HTTP/1.1\r\nHost: t\r\r\n\r\n",
	    "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\rabc\r\n0\r\n\r\n",
	};

	for (size_t i = 0; i < sizeof(requests) / sizeof(requests[0]); i++)
		expect_rejected(requests[i], 400, "CR not followed by LF");
	assert_int_equal(atomic_load(&fx.handled), 0);
}

static void bare_cr_split_across_reads(void **state)
{
	client_t *cl = client_open();
	response_t r;

	/* A valid request sent one byte per read: every CR ends one read. */
	send_bytewise(cl, "GET /fast HTTP/1.1\r\nHost: t\r\nX: a\r\n\r\n");
	assert_int_equal(read_response(cl, &r), 0);
	assert_int_equal(r.status, 200);
	response_free(&r);

	/* The bare CR ends one read, the byte after it starts the next. */
	send_bytewise(cl, "GET /fast HTTP/1.1\r\nHost: t\r\nX: a\r\n\r");
	send_bytewise(cl, "Y: b\r\n\r\n");
	assert_int_equal(read_response(cl, &r), 0);
	assert_int_equal(r.status, 400);
	assert_non_null(strstr(r.body, "CR not followed by LF"));
	assert_true(wait_closed(cl));
	response_free(&r);
	client_close(cl);
	assert_int_equal(atomic_load(&fx.handled), 1);
}

static void framing_errors_rejected(void **state)
{
	expect_rejected("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nTransfer-Encoding: "
	                "chunked\r\n\r\n0\r\n\r\n",
	                400, "Content-Length can't be present with Transfer-Encoding");
	expect_rejected("POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nContent-Length: "
	                "3\r\n\r\n0\r\n\r\n",
	                400, "Content-Length can't be present with Transfer-Encoding");
	expect_rejected("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
	                400, "Duplicate Content-Length");
	expect_rejected("POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nab\r\n",
	                400, "Invalid character in chunk size");
	expect_rejected("GET /fast HTTP/1.1\r\nHost: t\r\nX: a\x01b\r\n\r\n", 400,
	                "Invalid header value char (HPE_INVALID_HEADER_TOKEN)");
	expect_rejected("G@T /fast HTTP/1.1\r\nHost: t\r\n\r\n", 400, "HPE_INVALID_METHOD");
	expect_rejected("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 1x\r\n\r\n", 400,
	                "HPE_INVALID_CONTENT_LENGTH");
	/* llhttp 8.1 accepts these two on its own. */
	expect_rejected("GET /fast HTTP/1.1\r\nHost: t\r\nBad Name: x\r\n\r\n", 400, "whitespace");
	expect_rejected("GET /fast HTTP/1.1\r\nHost: t\r\nName : x\r\n\r\n", 400, "whitespace");
	expect_rejected("POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
	                501, "gzip");
	expect_rejected("GET /fast HTTP/2.0\r\n\r\n", 505, "HTTP/2.0");
	/* llhttp 8.1 accepts any two bytes after chunk data; a smuggled body hides there. */
	expect_rejected("POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
	                "3\r\nabcXX0\r\n\r\n",
	                400, "chunk data not followed by CRLF");
	expect_rejected("POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
	                "3\r\nabc\rX0\r\n\r\n",
	                400, "chunk data not followed by CRLF");
	/* llhttp 8.1 accepts a header line with no name. */
	expect_rejected("GET /fast HTTP/1.1\r\nHost: t\r\n: x\r\n\r\n", 400, "empty name");
	expect_rejected("GET /fast HTTP/1.1\r\n: x\r\nHost: t\r\n\r\n", 400, "empty name");
	/* The 501 message quotes the Transfer-Encoding value, not the headers after it. */
	expect_rejected("POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\nX-After: "
	                "secret\r\n\r\n",
	                501, "Transfer-Encoding gzip is not supported");
	/* RFC 9112 section 3.2: HTTP/1.1 needs exactly one Host. */
	expect_rejected("GET /fast HTTP/1.1\r\n\r\n", 400, "exactly one Host header, got 0");
	expect_rejected("GET /fast HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400,
	                "exactly one Host header, got 2");
	assert_int_equal(atomic_load(&fx.handled), 0);
}

static void chunks_with_crlf_accepted(void **state)
{
	client_t *cl = client_open();
	response_t r;

	/* Chunk data and its CRLF split over separate writes, the CR alone at the end of one. */
	send_str(cl, "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r");
	send_str(cl, "\n2\r\nde\r\n0\r\n\r\n");
	assert_int_equal(read_response(cl, &r), 0);
	assert_int_equal(r.status, 200);
	assert_string_equal(r.body, "abcde");
	response_free(&r);
	client_close(cl);
}

static void expect_continue(void **state)
{
	client_t *cl = client_open();
	response_t r;
	char body[2000];

	memset(body, 'q', sizeof(body));
	send_str(cl, "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 2000\r\nExpect: 100-continue\r\n\r\n");
	assert_int_equal(read_response(cl, &r), 0);
	assert_int_equal(r.status, 100);
	assert_string_equal(r.head, "HTTP/1.1 100 Continue\r\n\r\n");
	response_free(&r);
	send_bytes(cl, body, sizeof(body));
	assert_int_equal(read_response(cl, &r), 0);
	assert_int_equal(r.status, 200);
	assert_int_equal(r.body_len, sizeof(body));
	response_free(&r);
	client_close(cl);
}

static void request_timeout_408(void **state)
{
	http_limits_t lim = default_limits();
	struct timespec start;
	client_t *cl;
	response_t r;

	lim.request_timeout_ms = 300;
	restart_with(&lim);
	cl = client_open();
	clock_gettime(CLOCK_MONOTONIC, &start);
	send_str(cl, "GET /fast HTTP/1.1\r\nHost: x\r\n");
	assert_int_equal(read_response(cl, &r), 0);
	assert_int_equal(r.status, 408);
	assert_true(elapsed_ms(&start) >= 250);
	assert_true(has_header(&r, "Connection: close"));
	assert_null(strcasestr(r.head, "x-should-retry"));
	assert_non_null(strstr(r.body, "\"type\":\"timeout_error\""));
	assert_true(wait_closed(cl));
	response_free(&r);
	client_close(cl);
}

static void waiting_handler_not_timed_out(void **state)
{
	http_limits_t lim = default_limits();
	client_t *cl;
	response_t r;

	lim.request_timeout_ms = 200;
	lim.idle_timeout_ms = 200;
	restart_with(&lim);
	cl = client_open();
	send_str(cl, "GET /delay?ms=700&tag=slow HTTP/1.1\r\nHost: t\r\n\r\n");
	assert_int_equal(read_response(cl, &r), 0);
	assert_int_equal(r.status, 200);
	assert_string_equal(r.body, "slow");
	assert_null(strcasestr(r.head, "Connection:"));
	response_free(&r);
	client_close(cl);
}

static void idle_timeout_closes(void **state)
{
	http_limits_t lim = default_limits();
	struct timespec start;
	client_t *cl;
	response_t r;

	lim.idle_timeout_ms = 300;
	restart_with(&lim);
	cl = client_open();
	send_str(cl, "GET /fast HTTP/1.1\r\nHost: t\r\n\r\n");
	assert_int_equal(read_response(cl, &r), 0);
	response_free(&r);
	clock_gettime(CLOCK_MONOTONIC, &start);
	assert_true(wait_closed(cl));
	assert_true(elapsed_ms(&start) >= 250);
	client_close(cl);
}

static void connection_close_honoured(void **state)
{
	client_t *cl = client_open();
	response_t r;

	/* The second request, after Connection: close, is never read. */
	send_str(cl, "GET /fast HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\nGET /fast HTTP/1.1\r\nHost: t\r\n\r\n");
	assert_int_equal(read_response(cl, &r), 0);
	assert_int_equal(r.status, 200);
	assert_true(has_header(&r, "Connection: close"));
	assert_true(wait_closed(cl));
	response_free(&r);
	client_close(cl);
	assert_int_equal(atomic_load(&fx.handled), 1);
}

static void http10_requests(void **state)
{
	client_t *cl = client_open();
	response_t r;

	send_str(cl, "GET /fast HTTP/1.0\r\n\r\n");
	assert_int_equal(read_response(cl, &r), 0);
	assert_int_equal(strncmp(r.head, "HTTP/1.1 200 OK\r\n", 17), 0);
	assert_true(has_header(&r, "Connection: close"));
	assert_true(wait_closed(cl));
	response_free(&r);
	client_close(cl);

	cl = client_open();
	for (int i = 0; i < 2; i++) {
		send_str(cl, "GET /fast HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
		assert_int_equal(read_response(cl, &r), 0);
		assert_int_equal(r.status, 200);
		assert_true(has_header(&r, "Connection: keep-alive"));
		response_free(&r);
	}
	client_close(cl);
}

static void head_and_no_content(void **state)
{
	client_t *cl = client_open();
	response_t r;

	send_str(cl, "HEAD /fast HTTP/1.1\r\nHost: t\r\n\r\nGET /status?code=204 HTTP/1.1\r\nHost: t\r\n\r\n"
	             "GET /fast HTTP/1.1\r\nHost: t\r\n\r\n");
	assert_int_equal(read_response_for(cl, &r, 1), 0);
	assert_int_equal(r.status, 200);
	assert_true(has_header(&r, "Content-Length: 11"));
	response_free(&r);
	assert_int_equal(read_response(cl, &r), 0);
	assert_int_equal(r.status, 204);
	assert_null(strcasestr(r.head, "Content-Length"));
	response_free(&r);

	/* Had HEAD or 204 carried body bytes, this response would not parse. */
	assert_int_equal(read_response(cl, &r), 0);
	assert_int_equal(r.status, 200);
	assert_string_equal(r.body, "{\"ok\":true}");
	response_free(&r);
	client_close(cl);
}

static void should_retry_header(void **state)
{
	static const struct {
		int status;
		int has_header;
	} cases[] = {{200, 0}, {400, 1}, {404, 1}, {408, 0},
	             {409, 1}, {429, 0}, {500, 0}, {503, 0}};
	client_t *cl = client_open();

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char req[96];
		response_t r;

		snprintf(req, sizeof(req), "GET /status?code=%d HTTP/1.1\r\nHost: t\r\n\r\n", cases[i].status);
		send_str(cl, req);
		assert_int_equal(read_response(cl, &r), 0);
		assert_int_equal(r.status, cases[i].status);
		assert_int_equal(has_header(&r, "x-should-retry: false"), cases[i].has_header);
		response_free(&r);
	}
	client_close(cl);
}

static void orphaned_request_answered_late(void **state)
{
	client_t *cl = client_open();

	/* A reset closes the connection at once. */
	send_str(cl, "GET /orphan?ms=200 HTTP/1.1\r\nHost: t\r\n\r\n");
	assert_true(wait_counter(&fx.handled, 1));
	client_reset(cl);
	assert_true(wait_counter(&fx.orphan_checks, 1));
	assert_int_equal(atomic_load(&fx.orphaned_seen), 1);

	/* An EOF also marks the request orphaned; pipelined ones behind it too. */
	cl = client_open();
	send_str(cl, "GET /orphan?ms=200 HTTP/1.1\r\nHost: t\r\n\r\nGET /orphan?ms=50 HTTP/1.1\r\nHost: t\r\n\r\n");
	assert_true(wait_counter(&fx.handled, 3));
	shutdown(cl->fd, SHUT_WR);
	assert_true(wait_counter(&fx.orphan_checks, 3));
	assert_int_equal(atomic_load(&fx.orphaned_seen), 3);
	client_close(cl);
}

static void half_closed_client_gets_answers(void **state)
{
	client_t *cl = client_open();
	response_t r;

	send_str(cl, "GET /delay?ms=100&tag=A HTTP/1.1\r\nHost: t\r\n\r\nGET /fast HTTP/1.1\r\nHost: t\r\n\r\n");
	shutdown(cl->fd, SHUT_WR);
	assert_int_equal(read_response(cl, &r), 0);
	assert_string_equal(r.body, "A");
	response_free(&r);
	assert_int_equal(read_response(cl, &r), 0);
	assert_int_equal(r.status, 200);
	response_free(&r);
	assert_true(wait_closed(cl));
	client_close(cl);
}

static void rejections_reach_observer(void **state)
{
	static const char start[] = "GET /fast?sig=secret HTTP/1.1\r\nHost: t\r\nX-Big: ";
	http_limits_t lim = default_limits();
	char big[2048];
	struct observation o;
	size_t n;

	lim.max_header_bytes = 1024;
	lim.max_body_bytes = 100;
	lim.observer = record_observation;
	assert_int_equal(uv_mutex_init(&observed.lock), 0);
	observed.count = 0;
	restart_with(&lim);

	/* A request line that llhttp cannot read: no method, no path. */
	o = observe_one("GARBAGE\r\n\r\n", 400);
	assert_int_equal(o.rejected, 1);
	assert_int_equal(o.method, -1);
	assert_string_equal(o.method_name, "-");
	assert_string_equal(o.path, "-");
	assert_int_equal(o.header_count, 0);

	/* Headers over the limit: the request line was read, the query string is left out. */
	n = strlen(start);
	memcpy(big, start, n);
	memset(big + n, 'v', 1500);
	strcpy(big + n + 1500, "\r\n\r\n");
	o = observe_one(big, 431);
	assert_int_equal(o.rejected, 1);
	assert_string_equal(o.method_name, "GET");
	assert_string_equal(o.path, "/fast");
	assert_int_equal(o.header_count, 0);

	/* A body over the limit: the headers were complete, so the request has them. */
	o = observe_one("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 500\r\n\r\n", 413);
	assert_int_equal(o.rejected, 1);
	assert_string_equal(o.method_name, "POST");
	assert_string_equal(o.path, "/echo");
	assert_int_equal(o.header_count, 2);

	/* A request that reaches the handler is not marked rejected. */
	o = observe_one("GET /fast HTTP/1.1\r\nHost: t\r\n\r\n", 200);
	assert_int_equal(o.rejected, 0);
	assert_string_equal(o.path, "/fast");
	assert_int_equal(atomic_load(&fx.handled), 1);

	/* The server that teardown stops has no observer, so the lock can go. */
	lim = default_limits();
	restart_with(&lim);
	uv_mutex_destroy(&observed.lock);
}

static void connection_limit(void **state)
{
	http_limits_t lim = default_limits();
	client_t *a, *b, *c;
	response_t r;

	lim.max_connections = 2;
	restart_with(&lim);
	a = client_open();
	b = client_open();
	send_str(a, "GET /fast HTTP/1.1\r\nHost: t\r\n\r\n");
	send_str(b, "GET /fast HTTP/1.1\r\nHost: t\r\n\r\n");
	assert_int_equal(read_response(a, &r), 0);
	response_free(&r);
	assert_int_equal(read_response(b, &r), 0);
	response_free(&r);

	c = client_open();
	assert_true(wait_closed(c));
	client_close(c);

	/* Closing one frees a place. */
	client_close(a);
	for (int i = 0; i < 100; i++) {
		c = client_open();
		send_str(c, "GET /fast HTTP/1.1\r\nHost: t\r\n\r\n");
		if (read_response(c, &r) == 0)
			break;
		client_close(c);
		c = NULL;
	}
	assert_non_null(c);
	assert_int_equal(r.status, 200);
	response_free(&r);
	client_close(c);
	client_close(b);
}

static void upgrade_answered_then_closed(void **state)
{
	client_t *cl = client_open();
	response_t r;

	send_str(cl, "GET /fast HTTP/1.1\r\nHost: t\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n"
	             "GET /fast HTTP/1.1\r\nHost: t\r\n\r\n");
	assert_int_equal(read_response(cl, &r), 0);
	assert_int_equal(r.status, 200);
	assert_true(has_header(&r, "Connection: close"));
	assert_true(wait_closed(cl));
	response_free(&r);
	client_close(cl);
}

static void close_waits_for_answers(void **state)
{
	client_t *busy = client_open();
	client_t *idle = client_open();
	response_t r;

	send_str(busy, "GET /delay?ms=300&tag=last HTTP/1.1\r\nHost: t\r\n\r\n");
	assert_true(wait_counter(&fx.handled, 1));
	server_request_close();

	assert_true(wait_closed(idle));
	assert_int_equal(read_response(busy, &r), 0);
	assert_string_equal(r.body, "last");
	assert_true(has_header(&r, "Connection: close"));
	assert_true(wait_closed(busy));
	response_free(&r);
	client_close(busy);
	client_close(idle);
	assert_true(wait_counter(&fx.done_called, 1));
}

static void query_param_decoding(void **state)
{
	static const struct {
		const char *query;
		const char *name;
		int rc;
		const char *value;
	} cases[] = {
	    {"model=a%2Fb&x=1", "model", 1, "a/b"},
	    {"x=1&model=a+b", "model", 1, "a b"},
	    {"model=first&model=second", "model", 1, "first"},
	    {"mod%65l=k", "model", 1, "k"},
	    {"models=1&model", "model", 1, ""},
	    {"a=1&&model=%41%42", "model", 1, "AB"},
	    {"model=%4", "model", INFERQ_EINVAL, NULL},
	    {"model=%zz", "model", INFERQ_EINVAL, NULL},
	    {"model=a%00b", "model", INFERQ_EINVAL, NULL},
	    {"m%zz=1&model=x", "model", INFERQ_EINVAL, NULL},
	    {"model=0123456789abcdef", "model", INFERQ_ELIMIT, NULL},
	    {"other=1", "model", 0, NULL},
	    {"", "model", 0, NULL},
	    {"model%3D=x", "model", 0, NULL},
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char out[16] = "unchanged";
		size_t len = 99;
		int rc = http_query_param(cases[i].query, strlen(cases[i].query), cases[i].name,
		                          out, sizeof(out), &len);

		assert_int_equal(rc, cases[i].rc);
		if (cases[i].value) {
			assert_string_equal(out, cases[i].value);
			assert_int_equal(len, strlen(cases[i].value));
		}
	}
}

static void listen_address_errors(void **state)
{
	static const char *const bad[] = {
	    "127.0.0.1",       "localhost",    "::1:80",       "[::1]80",
	    "127.0.0.1:70000", "127.0.0.1:",   "127.0.0.1:8x", ":80"};
	http_limits_t lim = default_limits();
	uv_loop_t loop;

	assert_int_equal(uv_loop_init(&loop), 0);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		http_server_t *s = NULL;
		char err[256] = "";

		assert_int_equal(http_server_start(&loop, bad[i], &lim, test_handler, NULL, &s, err,
		                                   sizeof(err)),
		                 INFERQ_EINVAL);
		assert_non_null(strstr(err, bad[i]));
		assert_null(s);
	}
	assert_int_equal(uv_loop_close(&loop), 0);
}

static void listen_port_in_use(void **state)
{
	http_limits_t lim = default_limits();
	uv_loop_t loop;
	http_server_t *s = NULL;
	char addr[64], err[256] = "";

	snprintf(addr, sizeof(addr), "127.0.0.1:%d", fx.port);
	assert_int_equal(uv_loop_init(&loop), 0);
	assert_int_equal(
	    http_server_start(&loop, addr, &lim, test_handler, NULL, &s, err, sizeof(err)),
	    INFERQ_EIO);
	assert_null(s);
	assert_string_equal(err, "bind failed: Address already in use");
	assert_int_equal(uv_loop_close(&loop), 0);
}

static void ipv6_listen(void **state)
{
	http_limits_t lim = default_limits();
	uv_loop_t loop;
	http_server_t *s = NULL;
	char err[256] = "";
	int rc;

	assert_int_equal(uv_loop_init(&loop), 0);
	rc = http_server_start(&loop, "[::1]:0", &lim, test_handler, NULL, &s, err, sizeof(err));
	if (rc == INFERQ_EIO) {
		/* The host has no IPv6 loopback: the error must say why. */
		assert_non_null(strstr(err, "failed"));
	} else {
		assert_int_equal(rc, 0);
		assert_true(http_server_port(s) > 0);
		http_server_close(s, NULL, NULL);
		uv_run(&loop, UV_RUN_DEFAULT);
	}
	assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void)
{
	const char *level = getenv("INFERQ_TEST_LOG");
	log_level_t lvl = LOG_ERROR;
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(get_simple, setup, teardown),
	    cmocka_unit_test_setup_teardown(post_content_length_echo, setup, teardown),
	    cmocka_unit_test_setup_teardown(post_large_body_echo, setup, teardown),
	    cmocka_unit_test_setup_teardown(post_chunked_decoded, setup, teardown),
	    cmocka_unit_test_setup_teardown(keep_alive_several, setup, teardown),
	    cmocka_unit_test_setup_teardown(target_and_header_values, setup, teardown),
	    cmocka_unit_test_setup_teardown(pipelined_out_of_order, setup, teardown),
	    cmocka_unit_test_setup_teardown(pipeline_limit_pauses_reading, setup, teardown),
	    cmocka_unit_test_setup_teardown(pass_budget_keeps_pipeline_whole, setup, teardown),
	    cmocka_unit_test_setup_teardown(slow_reader_gets_everything, setup, teardown),
	    cmocka_unit_test_setup_teardown(body_over_limit_by_content_length, setup, teardown),
	    cmocka_unit_test_setup_teardown(body_over_limit_chunked, setup, teardown),
	    cmocka_unit_test_setup_teardown(body_limit_per_request, setup, teardown),
	    cmocka_unit_test_setup_teardown(headers_over_limit, setup, teardown),
	    cmocka_unit_test_setup_teardown(bare_cr_rejected, setup, teardown),
	    cmocka_unit_test_setup_teardown(bare_cr_split_across_reads, setup, teardown),
	    cmocka_unit_test_setup_teardown(framing_errors_rejected, setup, teardown),
	    cmocka_unit_test_setup_teardown(chunks_with_crlf_accepted, setup, teardown),
	    cmocka_unit_test_setup_teardown(expect_continue, setup, teardown),
	    cmocka_unit_test_setup_teardown(request_timeout_408, setup, teardown),
	    cmocka_unit_test_setup_teardown(waiting_handler_not_timed_out, setup, teardown),
	    cmocka_unit_test_setup_teardown(idle_timeout_closes, setup, teardown),
	    cmocka_unit_test_setup_teardown(connection_close_honoured, setup, teardown),
	    cmocka_unit_test_setup_teardown(http10_requests, setup, teardown),
	    cmocka_unit_test_setup_teardown(head_and_no_content, setup, teardown),
	    cmocka_unit_test_setup_teardown(should_retry_header, setup, teardown),
	    cmocka_unit_test_setup_teardown(orphaned_request_answered_late, setup, teardown),
	    cmocka_unit_test_setup_teardown(half_closed_client_gets_answers, setup, teardown),
	    cmocka_unit_test_setup_teardown(rejections_reach_observer, setup, teardown),
	    cmocka_unit_test_setup_teardown(connection_limit, setup, teardown),
	    cmocka_unit_test_setup_teardown(upgrade_answered_then_closed, setup, teardown),
	    cmocka_unit_test_setup_teardown(close_waits_for_answers, setup, teardown),
	    cmocka_unit_test(query_param_decoding),
	    cmocka_unit_test(listen_address_errors),
	    cmocka_unit_test_setup_teardown(listen_port_in_use, setup, teardown),
	    cmocka_unit_test(ipv6_listen),
	};

	if (level)
		log_parse_level(level, &lvl);
	if (getenv("INFERQ_TEST_FILTER"))
		cmocka_set_test_filter(getenv("INFERQ_TEST_FILTER"));
	log_set_level(lvl);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
