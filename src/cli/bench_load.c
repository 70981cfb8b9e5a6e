/*
 * The load engine of `inferq bench`: keep-alive HTTP/1.1 connections on
 * one libuv loop. Each connection asks its scenario for requests until
 * `pipeline` are in flight, writes them in one write, and matches the
 * responses to them in order (HTTP/1.1 answers in request order), timing
 * each from the moment it was queued to the moment its last byte was
 * parsed. Invariant: c->inflight counts exactly the requests written and
 * not yet answered on c, and run->in_flight is their sum over the
 * open connections; the run ends when it is stopping and that sum is 0.
 *
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>

#include "alloc.h"
#include "bench.h"
#include "inferq_error.h"

#define READ_CHUNK     65536
#define DRAIN_EXTRA_MS 10000 /* past the longest long-poll wait */

typedef struct {
	uv_write_t req;
	size_t len;
	char data[];
} write_t;

int bench_target_parse(const char *url, bench_target_t *t, char *err, size_t err_len)
{
	const char *p, *host, *host_end, *port = NULL, *path;
	struct addrinfo hints = {0}, *res = NULL;
	size_t host_len, port_len = 0;
	int rc;

	memset(t, 0, sizeof(*t));
	if (strncmp(url, "http://", 7) != 0) {
		snprintf(err, err_len,
		         "invalid URL \"%s\": use http://HOST:PORT (https is not "
		         "supported by the load generator)",
		         url);
		return INFERQ_EINVAL;
	}
	host = url + 7;
	if (*host == '[') {
		host_end = strchr(host, ']');
		p = host_end ? host_end + 1 : NULL;
	} else {
		host_end = host + strcspn(host, ":/?");
		p = host_end;
	}
	if (!p || host_end == host || (*p && *p != ':' && *p != '/' && *p != '?'))
		goto bad;
	if (*p == ':') {
		port = p + 1;
		port_len = strspn(port, "0123456789");
		if (port_len == 0 || port_len > 5 || atoi(port) < 1 || atoi(port) > 65535)
			goto bad;
		p = port + port_len;
	}
	path = p;
	if (*path && *path != '/' && *path != '?')
		goto bad;
	host_len = (size_t)((*host == '[' ? host_end + 1 : host_end) - host);
	if (host_len >= sizeof(t->host) || strlen(path) + 2 >= sizeof(t->path))
		goto bad;
	memcpy(t->host, host, host_len);
	if (port)
		memcpy(t->port, port, port_len);
	else
		strcpy(t->port, "80");
	snprintf(t->path, sizeof(t->path), "%s%s", *path == '/' ? "" : "/", path);
	t->host_line_len = (size_t)snprintf(t->host_line, sizeof(t->host_line), "Host: %s\r\n",
	                                    t->host);

	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	{
		char name[256];
		size_t off = *host == '[' ? 1 : 0;

		snprintf(name, sizeof(name), "%.*s", (int)(host_len - 2 * off), host + off);
		rc = getaddrinfo(name, t->port, &hints, &res);
		if (rc != 0) {
			snprintf(err, err_len, "cannot resolve the host \"%s\" of %s: %s", name,
			         url, gai_strerror(rc));
			return INFERQ_EINVAL;
		}
	}
	memcpy(&t->addr, res->ai_addr, res->ai_addrlen);
	freeaddrinfo(res);
	return 0;
bad:
	snprintf(err, err_len,
	         "invalid URL \"%s\": use http://HOST[:PORT][/PATH], as in "
	         "http://127.0.0.1:8080",
	         url);
	return INFERQ_EINVAL;
}

void bench_put_request_for(buf_t *out, const bench_target_t *t, const char *req, size_t len)
{
	const char *eol = memmem(req, len, "\r\n", 2);
	size_t line = eol ? (size_t)(eol + 2 - req) : len;

	buf_append(out, req, line);
	buf_append(out, t->host_line, t->host_line_len);
	buf_append(out, req + line, len - line);
}

void bench_run_error(bench_run_t *run, const char *fmt, ...)
{
	va_list ap;

	run->errors++;
	if (run->error[0])
		return; /* keep the first reason */
	va_start(ap, fmt);
	vsnprintf(run->error, sizeof(run->error), fmt, ap);
	va_end(ap);
}

static void fail_run(bench_run_t *run, int rc);

static void on_close(uv_handle_t *h)
{
	(void)h;
}

static void conn_close(bench_conn_t *c)
{
	if (!c->open)
		return;
	c->open = 0;
	c->run->in_flight -= c->inflight;
	uv_close((uv_handle_t *)&c->tcp, on_close);
}

static void close_all(bench_run_t *run)
{
	for (unsigned i = 0; i < run->n_conns; i++)
		conn_close(&run->conns[i]);
	if (run->timer_on) {
		run->timer_on = 0;
		uv_close((uv_handle_t *)&run->timer, on_close);
	}
}

/* 1 when every request in flight on c is a long-poll that may never be answered. */
static int only_parked(const bench_conn_t *c)
{
	unsigned cap = c->run->opts->pipeline;

	for (unsigned i = 0; i < c->inflight; i++)
		if (c->kinds[(c->head + i) % cap] != KIND_PARK)
			return 0;
	return 1;
}

/* While stopping: closes c when it waits for nothing but long-polls (unless a hand-off is under
 * way). */
static void conn_check(bench_conn_t *c)
{
	if (c->run->stopping && c->open && !c->has_job &&
	    (c->inflight == 0 || (!c->run->handoff_busy && only_parked(c))))
		conn_close(c);
}

/* Returns 1 when an open worker connection has a claimed job it has not completed yet. */
static int job_held(const bench_run_t *run)
{
	for (unsigned i = 0; i < run->n_conns; i++) {
		if (run->conns[i].open && run->conns[i].has_job)
			return 1;
	}
	return 0;
}

/*
 * Ends the run when it is stopping and nothing is in flight. A worker that
 * has a job keeps the run going: the response that stopped the run may
 * be the claim of the last hand-off, read just before that worker sends
 * its complete.
 */
static void end_if_idle(bench_run_t *run)
{
	if (run->stopping && run->in_flight == 0 && !job_held(run))
		close_all(run);
}

/*
 * Stops the run when nothing is in flight after every connection was asked
 * for work: no response can come to change a scenario's mind, so the run
 * would otherwise wait forever (a count that failed requests never reach).
 */
static void stop_if_quiet(bench_run_t *run)
{
	if (!run->stopping && run->connecting == 0 && run->in_flight == 0)
		bench_run_stop(run);
}

void bench_run_check(bench_run_t *run)
{
	if (!run->stopping)
		return;
	for (unsigned i = 0; i < run->n_conns; i++)
		conn_check(&run->conns[i]);
	end_if_idle(run);
}

static void on_drain_timeout(uv_timer_t *t)
{
	bench_run_t *run = t->data;
	uint64_t left = run->in_flight;

	if (left > 0)
		bench_run_error(run, "%llu requests were still unanswered %.1f s after the end",
		                (unsigned long long)left,
		                (double)(uv_hrtime() - run->t_stop) / 1e9);
	run->errors += left > 0 ? left - 1 : 0;
	close_all(run);
}

void bench_run_stop(bench_run_t *run)
{
	uint64_t drain_ms = (uint64_t)(run->opts->wait * 1000) + DRAIN_EXTRA_MS;

	if (run->stopping)
		return;
	run->stopping = 1;
	run->t_stop = uv_hrtime();
	run->units_at_stop = run->units;
	run->requests_at_stop = run->requests;
	if (run->timer_on)
		uv_timer_start(&run->timer, on_drain_timeout, drain_ms, 0);
	bench_run_check(run);
}

void bench_run_unit(bench_run_t *run)
{
	run->units++;
	if (run->limit && run->units >= run->limit)
		bench_run_stop(run);
}

static void on_duration(uv_timer_t *t)
{
	bench_run_stop(t->data);
}

static void fail_run(bench_run_t *run, int rc)
{
	if (!run->failed)
		run->failed = rc;
	if (!run->stopping) {
		run->stopping = 1;
		run->t_stop = uv_hrtime();
		run->units_at_stop = run->units;
		run->requests_at_stop = run->requests;
	}
	close_all(run);
}

static void on_write(uv_write_t *req, int status)
{
	write_t *w = (write_t *)req;
	bench_conn_t *c = req->handle->data;

	free(w);
	if (status < 0 && status != UV_ECANCELED && c->open) {
		bench_run_error(c->run, "write failed on connection %u: %s", c->index,
		                uv_strerror(status));
		conn_close(c);
		stop_if_quiet(c->run);
		end_if_idle(c->run);
	}
}

void bench_conn_pump(bench_conn_t *c)
{
	bench_run_t *run = c->run;
	unsigned cap = run->opts->pipeline;
	buf_t out = BUF_INIT;
	write_t *w;
	int kind, rc;

	if (!c->open || run->connecting > 0)
		return;
	while (c->inflight < cap) {
		buf_reset(&run->scratch);
		kind = run->scen->next(c, &run->scratch);
		if (kind < 0)
			break;
		bench_put_request_for(&out, c->target, run->scratch.data, run->scratch.len);
		c->kinds[(c->head + c->inflight) % cap] = kind;
		c->sent_ns[(c->head + c->inflight) % cap] = uv_hrtime();
		c->inflight++;
		run->in_flight++;
	}
	if (out.len == 0)
		goto out;
	/*
	 * Written at once when the socket takes it all, as it usually does. A
	 * uv_write that completes still costs an epoll_ctl per request (strace),
	 * and this client shares the machine with the server it measures.
	 */
	uv_buf_t whole = uv_buf_init(out.data, (unsigned)out.len);
	rc = uv_try_write((uv_stream_t *)&c->tcp, &whole, 1);
	if (rc == UV_EAGAIN)
		rc = 0;
	if (rc >= 0 && (size_t)rc < out.len) {
		w = xmalloc(sizeof(*w) + out.len - (size_t)rc);
		w->len = out.len - (size_t)rc;
		memcpy(w->data, out.data + rc, w->len);
		uv_buf_t rest = uv_buf_init(w->data, (unsigned)w->len);
		rc = uv_write(&w->req, (uv_stream_t *)&c->tcp, &rest, 1, on_write);
		if (rc < 0)
			free(w);
	}
	if (rc < 0) {
		bench_run_error(run, "write failed on connection %u: %s", c->index,
		                uv_strerror(rc));
		conn_close(c);
	}
out:
	buf_free(&out);
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
	bench_conn_t *c = h->data;

	(void)hint;
	if (c->rcap - c->rlen < READ_CHUNK) {
		c->rcap = c->rlen + 2 * READ_CHUNK;
		c->rbuf = xrealloc(c->rbuf, c->rcap);
	}
	*b = uv_buf_init(c->rbuf + c->rlen, (unsigned)(c->rcap - c->rlen));
}

/*
 * Parses one response at the start of buf (len bytes). Returns its total
 * length (head and body) when all of it is there, 0 when more bytes are
 * needed, or INFERQ_EPROTO for a response the engine cannot frame (no
 * Content-Length, or chunked). Sets *status, *body_off and *body_len.
 */
static long frame_response(const char *buf, size_t len, int *status, size_t *body_off,
                           size_t *body_len)
{
	const char *end = memmem(buf, len, "\r\n\r\n", 4), *line, *next;
	long long length = -1;

	if (!end)
		return len > 65536 ? INFERQ_EPROTO : 0;
	if (len < 12 || memcmp(buf, "HTTP/1.", 7) != 0 || buf[8] != ' ')
		return INFERQ_EPROTO;
	*status = atoi(buf + 9);
	if (*status < 100 || *status > 599)
		return INFERQ_EPROTO;
	for (line = memchr(buf, '\n', (size_t)(end - buf)) + 1; line < end; line = next) {
		next = memchr(line, '\n', (size_t)(end + 2 - line)) + 1;
		if (strncasecmp(line, "content-length:", 15) == 0)
			length = atoll(line + 15);
		else if (strncasecmp(line, "transfer-encoding:", 18) == 0)
			return INFERQ_EPROTO;
	}
	if (*status == 204 || *status == 304 || *status < 200)
		length = 0;
	if (length < 0)
		return INFERQ_EPROTO;
	*body_off = (size_t)(end + 4 - buf);
	*body_len = (size_t)length;
	if (len < *body_off + *body_len)
		return 0;
	return (long)(*body_off + *body_len);
}

/* Hands every complete response in c->rbuf to the scenario. Returns 0 or a negative INFERQ_E*. */
static int parse_responses(bench_conn_t *c)
{
	bench_run_t *run = c->run;
	unsigned cap = run->opts->pipeline;
	size_t used = 0, body_off, body_len;
	long total;
	int status, kind, rc = 0;
	uint64_t now, lat;

	while (c->rlen - used > 0) {
		const char *resp = c->rbuf + used;

		total = frame_response(resp, c->rlen - used, &status, &body_off, &body_len);
		if (total == 0)
			break;
		if (total < 0 || c->inflight == 0) {
			bench_run_error(run,
			                "connection %u: a response that cannot be framed (no "
			                "Content-Length, chunked, or not asked for): %.*s",
			                c->index, (int)(c->rlen - used < 40 ? c->rlen - used : 40),
			                resp);
			conn_close(c);
			return 0;
		}
		now = uv_hrtime();
		kind = c->kinds[c->head];
		lat = now - c->sent_ns[c->head];
		c->head = (c->head + 1) % cap;
		c->inflight--;
		run->in_flight--;
		run->requests++;
		run->statuses[status]++;
		if (!run->stopping || kind != KIND_PARK)
			bench_hist_record(run->latency, lat);
		if (status == 401 || status == 403) {
			/*
			 * Every later request would fail the same way, and a stream of
			 * them trips the server's limit of failed authentications for
			 * this address, so the run stops at the first.
			 */
			bench_run_error(run,
			                "the server rejected the API key with HTTP %d, so the run "
			                "stopped: %.*s; give a key that covers the model and "
			                "its role, such as an admin key, with --key or "
			                "INFERQ_API_KEY",
			                status, (int)(body_len < 300 ? body_len : 300),
			                resp + body_off);
			rc = INFERQ_EAUTH;
			break;
		}
		rc = run->scen->done(c, kind, status, resp + body_off, body_len, lat);
		used += (size_t)total;
		if (rc < 0)
			break;
	}
	memmove(c->rbuf, c->rbuf + used, c->rlen - used);
	c->rlen -= used;
	return rc;
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
	bench_conn_t *c = s->data;
	bench_run_t *run = c->run;
	int rc;

	(void)b;
	if (n == 0 || !c->open)
		return;
	if (n < 0) {
		if (c->inflight > 0)
			bench_run_error(run,
			                "connection %u closed by the server with %u requests "
			                "in flight (%s)",
			                c->index, c->inflight, uv_strerror((int)n));
		conn_close(c);
		stop_if_quiet(run);
		end_if_idle(run);
		return;
	}
	c->rlen += (size_t)n;
	rc = parse_responses(c);
	if (rc < 0) {
		fail_run(run, rc);
		return;
	}
	bench_conn_pump(c);
	stop_if_quiet(run);
	conn_check(c);
	end_if_idle(run);
}

static void start_measuring(bench_run_t *run, double duration)
{
	run->t_start = uv_hrtime();
	if (duration > 0) {
		uv_timer_start(&run->timer, on_duration, (uint64_t)(duration * 1000), 0);
	}
	for (unsigned i = 0; i < run->n_conns; i++)
		bench_conn_pump(&run->conns[i]);
	stop_if_quiet(run);
	bench_run_check(run);
}

static void on_connect(uv_connect_t *req, int status)
{
	bench_conn_t *c = req->handle->data;
	bench_run_t *run = c->run;
	double duration = *(double *)req->data;

	free(req);
	if (status == UV_ECANCELED)
		return;
	if (status < 0) {
		if (!run->failed)
			snprintf(run->error, sizeof(run->error), "cannot connect to %s:%s: %s",
			         c->target->host, c->target->port, uv_strerror(status));
		run->errors++;
		fail_run(run, INFERQ_ECONNECT);
		return;
	}
	if (run->failed)
		return;
	uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
	if (--run->connecting == 0)
		start_measuring(run, duration);
}

/* Raises the open-file limit to fit n connections. Returns 0 or INFERQ_ELIMIT. */
static int fit_open_files(bench_run_t *run, unsigned n)
{
	struct rlimit rl;
	rlim_t need = (rlim_t)n + 64;

	if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur >= need)
		return 0;
	if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < need) {
		snprintf(run->error, sizeof(run->error),
		         "%u connections need %llu open files, but the hard limit is %llu: raise "
		         "it (ulimit -Hn as root) or use fewer connections",
		         n, (unsigned long long)need, (unsigned long long)rl.rlim_max);
		return INFERQ_ELIMIT;
	}
	rl.rlim_cur = need;
	if (setrlimit(RLIMIT_NOFILE, &rl) != 0) {
		snprintf(run->error, sizeof(run->error),
		         "cannot raise the open-file limit to %llu: %s", (unsigned long long)need,
		         strerror(errno));
		return INFERQ_ELIMIT;
	}
	return 0;
}

/* Picks the server of the next connection of a role: round-robin within its group. */
static const bench_target_t *next_target(const bench_targets_t *t, int role, unsigned *n_load,
                                         unsigned *n_workers)
{
	if (role == ROLE_WORKER || role == ROLE_IDLE)
		return &t->workers[(*n_workers)++ % t->n_workers];
	return &t->load[(*n_load)++ % t->n_load];
}

int bench_run(bench_run_t *run, const int *roles, unsigned n_conns, double duration)
{
	static double duration_arg;
	unsigned cap = run->opts->pipeline, n_load = 0, n_workers = 0;
	int rc;

	if ((rc = fit_open_files(run, n_conns)) != 0)
		return rc;
	if (!run->latency)
		run->latency = xcalloc(1, sizeof(*run->latency));
	if (!run->unit_latency)
		run->unit_latency = xcalloc(1, sizeof(*run->unit_latency));
	if (!run->e2e_latency)
		run->e2e_latency = xcalloc(1, sizeof(*run->e2e_latency));
	uv_loop_init(&run->loop);
	uv_timer_init(&run->loop, &run->timer);
	run->timer.data = run;
	run->timer_on = 1;
	run->conns = xcalloc(n_conns, sizeof(*run->conns));
	run->n_conns = n_conns;
	run->connecting = n_conns;
	duration_arg = duration;

	for (unsigned i = 0; i < n_conns; i++) {
		bench_conn_t *c = &run->conns[i];
		uv_connect_t *req = xmalloc(sizeof(*req));

		c->run = run;
		c->index = i;
		c->role = roles[i];
		c->target = next_target(run->targets, c->role, &n_load, &n_workers);
		c->sent_ns = xcalloc(cap, sizeof(*c->sent_ns));
		c->kinds = xcalloc(cap, sizeof(*c->kinds));
		uv_tcp_init(&run->loop, &c->tcp);
		c->tcp.data = c;
		c->open = 1;
		uv_tcp_nodelay(&c->tcp, 1);
		req->data = &duration_arg;
		rc = uv_tcp_connect(req, &c->tcp, (const struct sockaddr *)&c->target->addr,
		                    on_connect);
		if (rc < 0) {
			free(req);
			snprintf(run->error, sizeof(run->error), "cannot connect to %s:%s: %s",
			         c->target->host, c->target->port, uv_strerror(rc));
			fail_run(run, rc == UV_EMFILE ? INFERQ_ELIMIT : INFERQ_ECONNECT);
			break;
		}
	}
	uv_run(&run->loop, UV_RUN_DEFAULT);
	if (!run->t_stop)
		run->t_stop = uv_hrtime();
	if (!run->t_start)
		run->t_start = run->t_stop;
	return run->failed;
}

void bench_run_free(bench_run_t *run)
{
	if (!run)
		return;
	if (run->conns) {
		for (unsigned i = 0; i < run->n_conns; i++) {
			free(run->conns[i].rbuf);
			free(run->conns[i].sent_ns);
			free(run->conns[i].kinds);
			free(run->conns[i].held);
		}
		uv_loop_close(&run->loop);
	}
	free(run->conns);
	free(run->latency);
	free(run->unit_latency);
	free(run->e2e_latency);
	buf_free(&run->submit_req);
	buf_free(&run->claim_req);
	buf_free(&run->park_req);
	buf_free(&run->plain_req);
	buf_free(&run->head);
	buf_free(&run->scratch);
	memset(run, 0, sizeof(*run));
}
