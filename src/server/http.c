/*
 * HTTP/1.1 server (see http.h). Each connection owns one llhttp parser, one
 * uv_timer (request, idle or lingering-close deadline) and a ring of
 * response slots, one per request in arrival order. http_respond() fills a
 * slot and only the ready slots at the head of the ring are written, so
 * responses leave in request order whatever order the handler responds in.
 * Ready output is written once per loop pass from a uv_check callback, so
 * several responses on one connection share one uv_write.
 *
 * llhttp 8.1 accepts a bare CR in places where it should require CRLF (at
 * the start of a header value, before the request line, and "\r\n\rX" ends
 * the header block; also "3\rX" as a chunk-size line), and whitespace in or
 * after a header name. Header names are checked as they complete; bytes of the header
 * block and of chunk framing lines are therefore scanned before llhttp sees
 * them, and a CR not followed by LF is answered with 400. The parser is
 * paused at the end of the headers, at each chunk header and at the end of
 * each message, so the loop always knows which region the next byte is in.
 *
 * A connection is freed when both of its handles are closed and every
 * request it dispatched has been answered (reference count).
 *
 * SPDX-License-Identifier: MIT
 */
#include "http.h"

#include <errno.h>
#include <llhttp.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "alloc.h"
#include "buf.h"
#include "error.h"
#include "inferq_error.h"
#include "log.h"
#include "tls.h"

#define READ_BUF_BYTES          65536
#define INLINE_BODY_MAX         65536      /* larger bodies grow as they arrive */
#define WRITE_HIGH_BYTES        (1u << 20) /* unsent bytes above which reading pauses */
#define WRITE_LOW_BYTES         (256u << 10)
#define LINGER_MS               2000 /* max time to drain a client after our FIN */
#define REJECT_WARN_INTERVAL_MS 1000
#define LISTEN_BACKLOG          511

enum timer_mode { TIMER_OFF, TIMER_REQUEST, TIMER_IDLE, TIMER_LINGER, TIMER_HANDSHAKE };
enum parse_pause { PAUSE_NONE, PAUSE_HEADERS, PAUSE_CHUNK_HEADER, PAUSE_MESSAGE };
enum conn_header { CONN_HDR_NONE, CONN_HDR_CLOSE, CONN_HDR_KEEP_ALIVE };

struct conn;

struct req {
	http_request_t pub; /* first member: an http_request_t * is a struct req * */
	struct conn *conn;
	uint64_t seq;      /* response slot in conn's ring */
	buf_t body_buf;    /* chunked bodies and bodies over INLINE_BODY_MAX */
	char *inline_body; /* NULL unless the body lives in this allocation */
	size_t inline_cap;
	size_t max_body;             /* body limit of this request */
	const char *body_limit_flag; /* the setting that sets max_body, for the 413 message */
	unsigned keep_alive : 1;
	unsigned is_head : 1;
	unsigned http10 : 1;
	uint64_t started_ns;       /* uv_hrtime() at the end of the headers */
	http_observer_cb observer; /* copied from the limits: the server may be gone at the answer */
	void *observer_ctx;
	http_orphan_cb orphan_cb; /* set by http_request_watch_orphan, or NULL */
	void *orphan_arg;
	struct req *watch_prev, *watch_next; /* conn->watched, while orphan_cb is set */
	/* header array, target and header text, then the inline body follow */
};

struct slot {
	buf_t resp; /* formatted response; empty when written straight to conn->out */
	unsigned ready : 1;
	unsigned close_after : 1;
};

/* Offsets into conn->text, because the buffer moves as it grows. */
struct header_span {
	size_t name_off, name_len, value_off, value_len;
};

struct conn {
	uv_tcp_t tcp;
	uv_timer_t timer;
	uv_shutdown_t shutdown_req;
	llhttp_t parser;
	struct http_server *server; /* NULL once both handles are closed */
	struct conn *prev, *next;   /* server->conns */
	struct conn *flush_next;    /* server->flush_head list */
	uint32_t refs;              /* handles + dispatched requests + pending callbacks */
	int open_handles;
	char remote[64];
	tls_conn_t *tls; /* NULL on a plain HTTP listener */

	/* the request being parsed */
	buf_t text; /* target, then header names and values */
	size_t target_len;
	struct header_span *spans;
	size_t span_count, span_cap;
	int in_field;
	struct req *cur; /* allocated at the end of the headers */
	uint64_t begin_ms; /* uv_now() at the first byte of the request being parsed */
	size_t header_bytes;
	uint64_t chunk_data_left; /* chunk data bytes not yet fed (not scanned for CR) */
	int chunk_crlf_left;      /* bytes of the CRLF that must follow chunk data, 0..2 */
	enum parse_pause pause;
	buf_t stash; /* bytes read but not parsed while parsing is paused */

	/* responses, in request order: slots [head_seq, tail_seq) */
	struct slot *ring;
	size_t ring_cap; /* power of two */
	uint64_t head_seq, tail_seq;
	uint32_t unanswered; /* dispatched to the handler, http_respond() not yet called */
	struct req *watched; /* unanswered requests with an orphan callback */
	uint32_t pass_requests; /* requests dispatched in loop pass pass_seen */
	uint64_t pass_seen;
	buf_t out;           /* ready bytes not yet handed to uv_write */
	size_t write_queued; /* bytes in out and in uv_write requests */
	size_t ready_bytes;  /* responses formatted but not yet handed to uv_write */

	struct conn_memo *memo; /* http_request_memo_put(), NULL until then */

	enum timer_mode timer_mode;
	unsigned in_header_block : 1; /* next byte belongs to a request line or header */
	unsigned in_request : 1;      /* a request has started and is not complete */
	unsigned chunked : 1;         /* the current body uses chunked framing */
	unsigned cr_pending : 1;      /* last scanned byte was a CR */
	unsigned reading : 1;
	unsigned parse_stopped : 1; /* no more requests are read on this connection */
	unsigned peer_eof : 1;
	unsigned close_after_flush : 1;
	unsigned shutdown_started : 1;
	unsigned lingering : 1;
	unsigned backlogged : 1; /* write_queued + ready_bytes went over WRITE_HIGH_BYTES */
	unsigned flush_scheduled : 1;
	unsigned closed : 1;
};

/* One value a handler saw on this connection and the 32 bytes it computed from it. */
struct conn_memo {
	size_t len;
	char value[HTTP_MEMO_VALUE_MAX];
	unsigned char result[32];
};

struct write_req {
	uv_write_t req;
	struct conn *conn;
	buf_t data;
};

struct http_server {
	uv_loop_t *loop;
	uv_tcp_t listener;
	uv_check_t check; /* writes ready output once per loop pass */
	uv_idle_t idle;   /* keeps the poll phase from blocking while output waits */
	http_limits_t limits;
	http_handler_cb handler;
	void *ctx;
	llhttp_settings_t settings;
	struct conn *conns;
	struct conn *flush_head, *flush_tail;
	uint32_t open_conns;      /* accepted, not yet closed: counted against max_connections */
	uint32_t pending_handles; /* listener and rejected sockets not yet closed */
	int aux_open;             /* check and idle handles not yet closed */
	int port;
	int closing;
	int finishing;
	void (*done)(void *ctx);
	void *done_ctx;
	uint64_t last_reject_warn_ms;
	uint64_t rejects_since_warn;
	uint64_t pass; /* loop passes so far, counted at the end of on_check */
	time_t date_sec;
	char date[32];
	tls_context_t *tls; /* not owned; NULL: plain HTTP */
	buf_t tls_plain;    /* plaintext of one read, before it is parsed */
	char read_buf[READ_BUF_BYTES];
};

static uint64_t next_request_id = 1;

static void conn_feed(struct conn *c, const char *p, size_t len);
static void conn_close(struct conn *c);
static void schedule_flush(struct conn *c);
static void send_tls_output(struct conn *c);
static void update_reading(struct conn *c);
static void update_timer(struct conn *c);
static void maybe_finish_server(struct http_server *s);
static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b);
static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *b);
static void on_timer(uv_timer_t *t);

/* ---- responses ---- */

static const char *reason_phrase(int status)
{
	switch (status) {
	case 100: return "Continue";
	case 200: return "OK";
	case 201: return "Created";
	case 202: return "Accepted";
	case 204: return "No Content";
	case 206: return "Partial Content";
	case 301: return "Moved Permanently";
	case 302: return "Found";
	case 304: return "Not Modified";
	case 400: return "Bad Request";
	case 401: return "Unauthorized";
	case 403: return "Forbidden";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 408: return "Request Timeout";
	case 409: return "Conflict";
	case 410: return "Gone";
	case 411: return "Length Required";
	case 413: return "Content Too Large";
	case 415: return "Unsupported Media Type";
	case 416: return "Range Not Satisfiable";
	case 422: return "Unprocessable Content";
	case 429: return "Too Many Requests";
	case 431: return "Request Header Fields Too Large";
	case 500: return "Internal Server Error";
	case 501: return "Not Implemented";
	case 502: return "Bad Gateway";
	case 503: return "Service Unavailable";
	case 504: return "Gateway Timeout";
	case 505: return "HTTP Version Not Supported";
	}
	return "Unknown";
}

/* Returns the IMF-fixdate for now, formatted at most once per second. */
static const char *http_date(struct http_server *s)
{
	static const char days[7][4] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
	static const char months[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
	                                   "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
	time_t now = time(NULL);
	struct tm tm;

	if (now == s->date_sec)
		return s->date;
	gmtime_r(&now, &tm);
	snprintf(s->date, sizeof(s->date), "%s, %02d %s %04d %02d:%02d:%02d GMT", days[tm.tm_wday],
	         tm.tm_mday, months[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min,
	         tm.tm_sec);
	s->date_sec = now;
	return s->date;
}

static void format_response(struct http_server *s, buf_t *out, int status, const char *content_type,
                            const char *extra_headers, const char *body, size_t body_len,
                            int is_head, enum conn_header conn_header)
{
	int has_body = status != 204 && status != 304;

	/* No printf: it took 7 % of the loop thread's instructions per request, for this one line. */
	buf_reserve(out, 160 + (is_head ? 0 : body_len));
	buf_puts(out, "HTTP/1.1 ");
	buf_put_u64(out, (uint64_t)status);
	buf_putc(out, ' ');
	buf_puts(out, reason_phrase(status));
	buf_puts(out, "\r\nDate: ");
	buf_puts(out, http_date(s));
	buf_puts(out, "\r\n");
	if (has_body) {
		buf_puts(out, "Content-Type: ");
		buf_puts(out, content_type ? content_type : "application/json");
		buf_puts(out, "\r\nContent-Length: ");
		buf_put_u64(out, body_len);
		buf_puts(out, "\r\n");
	}
	if (status >= 400 && status < 500 && status != 408 && status != 429)
		buf_puts(out, "x-should-retry: false\r\n");
	if (extra_headers)
		buf_puts(out, extra_headers);
	if (conn_header == CONN_HDR_CLOSE)
		buf_puts(out, "Connection: close\r\n");
	else if (conn_header == CONN_HDR_KEEP_ALIVE)
		buf_puts(out, "Connection: keep-alive\r\n");
	buf_puts(out, "\r\n");
	if (has_body && !is_head && body_len > 0)
		buf_append(out, body, body_len);
}

/* ---- response ring ---- */

static struct slot *slot_at(struct conn *c, uint64_t seq)
{
	return &c->ring[seq & (c->ring_cap - 1)];
}

static uint64_t ring_push(struct conn *c)
{
	if (c->tail_seq - c->head_seq == c->ring_cap) {
		size_t cap = c->ring_cap ? c->ring_cap * 2 : 4;
		struct slot *ring = xcalloc(cap, sizeof(*ring));

		for (uint64_t seq = c->head_seq; seq < c->tail_seq; seq++)
			ring[seq & (cap - 1)] = *slot_at(c, seq);
		free(c->ring);
		c->ring = ring;
		c->ring_cap = cap;
	}
	memset(slot_at(c, c->tail_seq), 0, sizeof(struct slot));
	return c->tail_seq++;
}

static void ring_free(struct conn *c)
{
	for (uint64_t seq = c->head_seq; seq < c->tail_seq; seq++)
		buf_free(&slot_at(c, seq)->resp);
	free(c->ring);
	c->ring = NULL;
	c->ring_cap = 0;
	c->head_seq = c->tail_seq = 0;
}

/* ---- connection lifetime ---- */

static void conn_unref(struct conn *c)
{
	IQ_ASSERT(c->refs > 0);
	if (--c->refs > 0)
		return;
	buf_free(&c->text);
	buf_free(&c->stash);
	buf_free(&c->out);
	free(c->spans);
	ring_free(c);
	if (c->memo) {
		explicit_bzero(c->memo, sizeof(*c->memo)); /* it may hold an API key */
		free(c->memo);
	}
	free(c);
}

static void req_free(struct req *r)
{
	buf_free(&r->body_buf);
	free(r);
}

static void on_conn_handle_closed(uv_handle_t *h)
{
	struct conn *c = h->data;
	struct http_server *s = c->server;

	if (--c->open_handles == 0) {
		if (c->prev)
			c->prev->next = c->next;
		else
			s->conns = c->next;
		if (c->next)
			c->next->prev = c->prev;
		c->server = NULL;
		maybe_finish_server(s);
	}
	conn_unref(c);
}

static void unwatch(struct conn *c, struct req *r)
{
	if (r->watch_prev)
		r->watch_prev->watch_next = r->watch_next;
	else
		c->watched = r->watch_next;
	if (r->watch_next)
		r->watch_next->watch_prev = r->watch_prev;
	r->watch_prev = r->watch_next = NULL;
	r->orphan_cb = NULL;
}

/* Calls the orphan callback of each watched request, once. */
static void notify_orphans(struct conn *c)
{
	while (c->watched) {
		struct req *r = c->watched;
		http_orphan_cb cb = r->orphan_cb;
		void *arg = r->orphan_arg;

		unwatch(c, r);
		cb(arg, &r->pub);
	}
}

/*
 * Closes the socket at once. Requests still unanswered stay valid (they
 * hold references) and are reported as orphaned.
 */
static void conn_close(struct conn *c)
{
	if (c->closed)
		return;
	c->closed = 1;
	c->server->open_conns--;
	if (c->cur) {
		req_free(c->cur);
		c->cur = NULL;
	}
	buf_free(&c->stash);
	buf_free(&c->out);
	ring_free(c);
	tls_conn_free(c->tls);
	c->tls = NULL;
	uv_close((uv_handle_t *)&c->tcp, on_conn_handle_closed);
	uv_close((uv_handle_t *)&c->timer, on_conn_handle_closed);
	notify_orphans(c);
}

static void on_shutdown(uv_shutdown_t *sr, int status)
{
	struct conn *c = sr->data;

	if (!c->closed) {
		if (status < 0 || c->peer_eof) {
			conn_close(c);
		} else {
			/* Drain what the client still sends, so that closing with
			 * unread bytes does not reset the connection before the
			 * client has read our last response. */
			c->lingering = 1;
			c->timer_mode = TIMER_LINGER;
			uv_timer_start(&c->timer, on_timer, LINGER_MS, 0);
			update_reading(c);
		}
	}
	conn_unref(c);
}

static void begin_shutdown(struct conn *c)
{
	int rc;

	if (c->shutdown_started || c->closed)
		return;
	c->shutdown_started = 1;
	c->parse_stopped = 1;
	update_reading(c);
	if (c->tls) {
		tls_conn_close_notify(c->tls);
		send_tls_output(c);
		if (c->closed)
			return;
	}
	c->shutdown_req.data = c;
	rc = uv_shutdown(&c->shutdown_req, (uv_stream_t *)&c->tcp, on_shutdown);
	if (rc < 0) {
		conn_close(c);
		return;
	}
	c->refs++;
}

/* ---- writing ---- */

/* Resumes reading once the output waiting for the socket has drained below the low mark. */
static void end_backlog(struct conn *c)
{
	if (c->backlogged && c->write_queued + c->ready_bytes < WRITE_LOW_BYTES) {
		c->backlogged = 0;
		schedule_flush(c);
	}
}

static void on_write(uv_write_t *wr, int status)
{
	struct write_req *w = (struct write_req *)wr;
	struct conn *c = w->conn;

	c->write_queued -= w->data.len;
	buf_free(&w->data);
	free(w);
	if (!c->closed) {
		if (status < 0) {
			log_debug("http", "write to %s failed: %s", c->remote, uv_strerror(status));
			conn_close(c);
		} else {
			end_backlog(c);
			update_timer(c);
		}
	}
	conn_unref(c);
}

/*
 * Writes as much of data as the socket takes at once, when nothing is
 * queued before it. Returns the bytes written (0 when the socket is full
 * or writes are queued) or a negative libuv error.
 */
static int try_write(struct conn *c, const buf_t *data)
{
	uv_buf_t b = uv_buf_init(data->data, (unsigned)data->len);
	int n = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);

	return n == UV_EAGAIN ? 0 : n;
}

/*
 * Hands data (taken over) to the socket and closes the connection when that
 * fails. The bytes the socket takes at once skip uv_write, because libuv
 * 1.44 makes one epoll_ctl call after each completed uv_write request, even
 * when the socket took every byte at once.
 */
static void send_bytes(struct conn *c, buf_t *data)
{
	struct write_req *w;
	uv_buf_t b;
	int rc = try_write(c, data);

	if (rc < 0) {
		log_debug("http", "write to %s failed: %s", c->remote, uv_strerror(rc));
		buf_free(data);
		conn_close(c);
		return;
	}
	if ((size_t)rc == data->len) {
		buf_free(data);
		end_backlog(c);
		return;
	}
	if (rc > 0) {
		memmove(data->data, data->data + rc, data->len - (size_t)rc);
		data->len -= (size_t)rc;
		data->data[data->len] = '\0';
	}

	w = xmalloc(sizeof(*w));
	w->conn = c;
	w->data = *data;
	buf_init(data);
	c->write_queued += w->data.len;
	b = uv_buf_init(w->data.data, (unsigned)w->data.len);
	rc = uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, on_write);
	if (rc < 0) {
		log_debug("http", "write to %s failed: %s", c->remote, uv_strerror(rc));
		c->write_queued -= w->data.len;
		buf_free(&w->data);
		free(w);
		conn_close(c);
		return;
	}
	c->refs++;
	if (c->write_queued > WRITE_HIGH_BYTES)
		c->backlogged = 1;
}

/* Sends the pending TLS output: handshake messages, alerts, encrypted responses. */
static void send_tls_output(struct conn *c)
{
	buf_t cipher = BUF_INIT;

	if (tls_conn_take_output(c->tls, &cipher) > 0)
		send_bytes(c, &cipher);
}

static void write_out(struct conn *c)
{
	buf_t data = c->out;
	char err[160];

	buf_init(&c->out);
	c->ready_bytes -= data.len;
	if (!c->tls) {
		send_bytes(c, &data);
		return;
	}
	if (tls_conn_write(c->tls, data.data, data.len, err, sizeof(err)) != 0) {
		log_debug("http", "TLS write to %s failed: %s", c->remote, err);
		buf_free(&data);
		conn_close(c);
		return;
	}
	buf_free(&data);
	send_tls_output(c);
}

/* Moves the ready slots at the head of the ring to the socket. */
static void conn_flush(struct conn *c)
{
	while (c->head_seq < c->tail_seq) {
		struct slot *sl = slot_at(c, c->head_seq);

		if (!sl->ready)
			break;
		if (c->out.len == 0) {
			buf_free(&c->out);
			c->out = sl->resp;
			buf_init(&sl->resp);
		} else {
			buf_append(&c->out, sl->resp.data, sl->resp.len);
			buf_free(&sl->resp);
		}
		if (sl->close_after)
			c->close_after_flush = 1;
		c->head_seq++;
	}
	if (c->out.len > 0)
		write_out(c);
	if (c->closed)
		return;

	/* A closing server or a client that sent EOF gets its remaining
	 * responses, then the connection ends. */
	if ((c->server->closing || c->peer_eof) && c->unanswered == 0 && !c->in_request &&
	    c->head_seq == c->tail_seq)
		c->close_after_flush = 1;
	if (c->close_after_flush && c->head_seq == c->tail_seq) {
		/* TLS still owes the client a close_notify, which begin_shutdown sends. */
		if (c->peer_eof && c->write_queued == 0 && !c->tls)
			conn_close(c);
		else
			begin_shutdown(c);
	}
	update_reading(c);
}

static void on_idle(uv_idle_t *h)
{
	/* Nothing to do: an active idle handle only makes the poll phase return at once. */
}

static void schedule_flush(struct conn *c)
{
	struct http_server *s = c->server;

	if (c->flush_scheduled || c->closed)
		return;
	c->flush_scheduled = 1;
	c->refs++;
	c->flush_next = NULL;
	if (s->flush_tail)
		s->flush_tail->flush_next = c;
	else
		s->flush_head = c;
	s->flush_tail = c;
	uv_idle_start(&s->idle, on_idle);
}

static int can_parse(const struct conn *c)
{
	return !c->closed && !c->parse_stopped && c->unanswered < c->server->limits.max_pipelined &&
	       !c->backlogged;
}

/* Parses bytes set aside while the connection was paused. */
static void conn_resume(struct conn *c)
{
	if (c->closed)
		return;
	if (c->stash.len > 0 && can_parse(c)) {
		buf_t stash = c->stash;

		buf_init(&c->stash);
		conn_feed(c, stash.data, stash.len);
		buf_free(&stash);
	}
	update_reading(c);
}

static void on_check(uv_check_t *h)
{
	struct http_server *s = h->data;
	struct conn *c = s->flush_head;

	s->flush_head = s->flush_tail = NULL;
	while (c) {
		struct conn *next = c->flush_next;

		c->flush_scheduled = 0;
		if (!c->closed)
			conn_flush(c);
		conn_resume(c);
		conn_unref(c);
		c = next;
	}
	if (!s->flush_head)
		uv_idle_stop(&s->idle);

	/*
	 * The pass ends here, after the resumes above, so a connection stopped
	 * by max_requests_per_pass parses its next requests in the next pass.
	 */
	s->pass++;
	maybe_finish_server(s);
}

/* ---- reading and timers ---- */

static void update_reading(struct conn *c)
{
	int want;

	if (c->closed)
		return;
	want = c->lingering || (!c->peer_eof && c->stash.len == 0 && can_parse(c));
	if (want && !c->reading) {
		if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) == 0)
			c->reading = 1;
	} else if (!want && c->reading) {
		uv_read_stop((uv_stream_t *)&c->tcp);
		c->reading = 0;
	}
}

static void timer_start(struct conn *c, enum timer_mode mode, uint64_t ms)
{
	c->timer_mode = mode;
	if (ms > 0)
		uv_timer_start(&c->timer, on_timer, ms, 0);
	else
		uv_timer_stop(&c->timer);
}

/*
 * Picks the deadline that applies now: the request timeout while a request
 * is arriving, none while the handler owes responses, else the idle timeout
 * (restarted on each call, that is on each response or finished write).
 */
static void update_timer(struct conn *c)
{
	const http_limits_t *lim = &c->server->limits;

	if (c->closed || c->lingering)
		return;
	if (c->tls && !tls_conn_handshake_done(c->tls)) {
		if (c->timer_mode != TIMER_HANDSHAKE)
			timer_start(c, TIMER_HANDSHAKE, lim->tls_handshake_timeout_ms);
		return;
	}
	if (c->in_request && !c->parse_stopped) {
		if (c->timer_mode != TIMER_REQUEST)
			timer_start(c, TIMER_REQUEST, lim->request_timeout_ms);
		return;
	}
	if (c->unanswered > 0) {
		c->timer_mode = TIMER_OFF;
		uv_timer_stop(&c->timer);
		return;
	}
	timer_start(c, TIMER_IDLE, lim->idle_timeout_ms);
}

/*
 * Reports a request rejected by conn_reject() to the observer (see
 * http_observer_cb). A request with complete headers is reported as
 * parsed. For one without, the method and the path (without the query
 * string) come from the request line once its target was read.
 */
static void observe_rejection(struct conn *c, int status, size_t body_len)
{
	const http_limits_t *lim = &c->server->limits;
	http_request_t stub;
	uint64_t duration_ns = 0;
	const char *query;

	if (lim->observer == NULL)
		return;
	if (c->cur) {
		c->cur->pub.rejected = 1;
		c->cur->pub.body_len = 0; /* the part received so far is not handed out */
		lim->observer(c->server->ctx, &c->cur->pub, status, body_len,
		              uv_hrtime() - c->cur->started_ns);
		return;
	}

	memset(&stub, 0, sizeof(stub));
	stub.method = -1;
	stub.method_name = "-";
	stub.path = "-";
	stub.path_len = 1;
	stub.query = "";
	stub.body = "";
	if (c->in_request && c->target_len > 0) {
		/* llhttp reads the method before it calls on_url with the target. */
		stub.method = llhttp_get_method(&c->parser);
		stub.method_name = llhttp_method_name((llhttp_method_t)stub.method);
		stub.path = c->text.data;
		query = memchr(c->text.data, '?', c->target_len);
		stub.path_len = query ? (size_t)(query - c->text.data) : c->target_len;
	}
	if (c->in_request)
		duration_ns = (uv_now(c->server->loop) - c->begin_ms) * 1000000u;
	stub.id = __atomic_fetch_add(&next_request_id, 1, __ATOMIC_RELAXED);
	memcpy(stub.remote_addr, c->remote, sizeof(stub.remote_addr));
	stub.rejected = 1;
	lim->observer(c->server->ctx, &stub, status, body_len, duration_ns);
}

/*
 * Queues an error response generated by this layer, reports it to the
 * observer and stops reading requests. The connection closes once the
 * response is written.
 */
static void conn_reject(struct conn *c, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void conn_reject(struct conn *c, int status, const char *code, const char *fmt, ...)
{
	char message[256];
	buf_t body = BUF_INIT;
	struct slot *sl;
	va_list ap;

	if (c->closed || c->parse_stopped)
		return;
	va_start(ap, fmt);
	vsnprintf(message, sizeof(message), fmt, ap);
	va_end(ap);
	log_debug("http", "rejected request from %s with %d: %s", c->remote, status, message);
	error_body(&body, status, code, NULL, "%s", message);
	observe_rejection(c, status, body.len);

	c->parse_stopped = 1;
	c->in_request = 0;
	if (c->cur) {
		req_free(c->cur);
		c->cur = NULL;
	}
	buf_free(&c->stash);
	update_reading(c);

	sl = slot_at(c, ring_push(c));
	format_response(c->server, &sl->resp, status, NULL, NULL, body.data, body.len, 0,
	                CONN_HDR_CLOSE);
	sl->ready = 1;
	sl->close_after = 1;
	buf_free(&body);
	schedule_flush(c);
	update_timer(c);
}

static void on_timer(uv_timer_t *t)
{
	struct conn *c = t->data;

	switch (c->timer_mode) {
	case TIMER_REQUEST:
		conn_reject(c, 408, "request_timeout",
		            "request not complete within %llu ms of its first byte; send the "
		            "whole request without pausing",
		            (unsigned long long)c->server->limits.request_timeout_ms);
		break;
	case TIMER_IDLE:
		log_debug("http", "closing idle connection from %s", c->remote);
		if (c->tls) {
			/* Best effort: the alert goes out if the socket takes it at once. */
			tls_conn_close_notify(c->tls);
			send_tls_output(c);
		}
		conn_close(c);
		break;
	case TIMER_LINGER: conn_close(c); break;
	case TIMER_HANDSHAKE:
		log_debug("http",
		          "closing connection from %s: TLS handshake not finished within %llu ms "
		          "(--tls-handshake-timeout)",
		          c->remote, (unsigned long long)c->server->limits.tls_handshake_timeout_ms);
		conn_close(c);
		break;
	case TIMER_OFF: break;
	}
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
	struct conn *c = h->data;

	/* One buffer per server is enough: each read is parsed, and any
	 * unparsed tail copied to the stash, before the next read. */
	*b = uv_buf_init(c->server->read_buf, sizeof(c->server->read_buf));
}

/* Handles the end of the client's side (TCP EOF or TLS close_notify): respond, then close. */
static void on_peer_eof(struct conn *c)
{
	c->peer_eof = 1;
	update_reading(c);
	notify_orphans(c);
	if (c->closed)
		return;
	if (c->in_request ||
	    (c->unanswered == 0 && c->head_seq == c->tail_seq && c->write_queued == 0))
		conn_close(c);
	else
		schedule_flush(c);
}

/*
 * Ends a TLS connection whose peer broke the protocol: the alert OpenSSL
 * queued goes out, then the connection shuts down. A plain HTTP request
 * sent to the TLS port gets a 400 in plain text that names https://.
 */
static void on_tls_error(struct conn *c, const char *err)
{
	if (tls_conn_got_plain_http(c->tls)) {
		tls_conn_free(c->tls);
		c->tls = NULL;
		conn_reject(c, 400, "https_required",
		            "this port serves HTTPS and got a plain HTTP request; send it to an "
		            "https:// URL");
		return;
	}
	log_debug("http", "closing connection from %s after a TLS error: %s", c->remote, err);
	c->parse_stopped = 1;
	c->in_request = 0;
	if (c->cur) {
		req_free(c->cur);
		c->cur = NULL;
	}
	buf_free(&c->stash);
	begin_shutdown(c);
}

/* Decrypts bytes read from a TLS connection and parses the plaintext. */
static void feed_tls(struct conn *c, const char *p, size_t len)
{
	/* One plaintext buffer per server is enough, as for read_buf: it is
	 * parsed, and any unparsed tail stashed, before the next read. */
	buf_t *plain = &c->server->tls_plain;
	int was_done = tls_conn_handshake_done(c->tls);
	char err[160];
	int rc = tls_conn_feed(c->tls, p, len, plain, err, sizeof(err));

	send_tls_output(c);
	if (!c->closed && rc == INFERQ_EPROTO)
		on_tls_error(c, err);
	if (c->closed || rc == INFERQ_EPROTO) {
		buf_reset(plain);
		return;
	}
	if (!was_done && tls_conn_handshake_done(c->tls)) {
		log_debug("http", "TLS handshake with %s finished", c->remote);
		update_timer(c);
	}
	if (plain->len > 0)
		conn_feed(c, plain->data, plain->len);
	buf_reset(plain);
	if (rc == TLS_PEER_CLOSED && !c->closed && !c->peer_eof)
		on_peer_eof(c);
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *b)
{
	struct conn *c = stream->data;

	if (nread == 0)
		return;
	c->refs++;
	if (c->lingering) {
		if (nread < 0)
			conn_close(c);
	} else if (nread > 0 && c->tls) {
		feed_tls(c, b->base, (size_t)nread);
	} else if (nread > 0) {
		conn_feed(c, b->base, (size_t)nread);
	} else if (nread == UV_EOF) {
		on_peer_eof(c);
	} else {
		log_debug("http", "read from %s failed: %s", c->remote, uv_strerror((int)nread));
		conn_close(c);
	}
	conn_unref(c);
}

/* ---- llhttp callbacks ---- */

static int on_message_begin(llhttp_t *p)
{
	struct conn *c = p->data;

	c->in_request = 1;
	c->begin_ms = uv_now(c->server->loop);
	c->chunked = 0;
	c->chunk_crlf_left = 0;
	c->in_field = 0;
	c->target_len = 0;
	c->span_count = 0;
	buf_reset(&c->text);
	update_timer(c);
	return 0;
}

static int on_url(llhttp_t *p, const char *at, size_t len)
{
	struct conn *c = p->data;

	buf_append(&c->text, at, len);
	c->target_len += len;
	return 0;
}

static int on_header_field(llhttp_t *p, const char *at, size_t len)
{
	struct conn *c = p->data;

	if (!c->in_field) {
		if (c->span_count == c->span_cap) {
			c->span_cap = c->span_cap ? c->span_cap * 2 : 16;
			c->spans = xrealloc(c->spans, c->span_cap * sizeof(*c->spans));
		}
		c->spans[c->span_count++].name_off = c->text.len;
		c->in_field = 1;
	}
	buf_append(&c->text, at, len);
	return 0;
}

/* Rejects a header line with no name (": x"), which llhttp 8.1 lets through. */
static int reject_empty_name(struct conn *c)
{
	conn_reject(c, 400, "invalid_http",
	            "invalid HTTP request: a header line has an empty name (RFC 9110 section 5.1)");
	return -1;
}

static int on_header_field_complete(llhttp_t *p)
{
	struct conn *c = p->data;
	struct header_span *sp;

	if (!c->in_field)
		return reject_empty_name(c);
	sp = &c->spans[c->span_count - 1];
	sp->name_len = c->text.len - sp->name_off;
	if (sp->name_len == 0)
		return reject_empty_name(c);
	sp->value_off = c->text.len;

	/* llhttp 8.1 lets "Bad Name:" and "Name :" through; RFC 9112 section 5.1
	 * requires a 400 for whitespace before the colon. */
	if (memchr(c->text.data + sp->name_off, ' ', sp->name_len) ||
	    memchr(c->text.data + sp->name_off, '\t', sp->name_len)) {
		char quoted[64];

		conn_reject(
		    c, 400, "invalid_http",
		    "invalid HTTP request: header name %s contains whitespace",
		    log_quote(c->text.data + sp->name_off, sp->name_len, quoted, sizeof(quoted)));
		return -1;
	}
	return 0;
}

static int on_header_value(llhttp_t *p, const char *at, size_t len)
{
	struct conn *c = p->data;

	if (!c->in_field)
		return reject_empty_name(c);
	buf_append(&c->text, at, len);
	return 0;
}

static int on_header_value_complete(llhttp_t *p)
{
	struct conn *c = p->data;
	struct header_span *sp;

	if (!c->in_field)
		return reject_empty_name(c);
	sp = &c->spans[c->span_count - 1];
	sp->value_len = c->text.len - sp->value_off;
	c->in_field = 0;
	return 0;
}

static int on_headers_complete(llhttp_t *p)
{
	struct conn *c = p->data;

	c->pause = PAUSE_HEADERS;
	return HPE_PAUSED;
}

static int on_chunk_header(llhttp_t *p)
{
	struct conn *c = p->data;

	c->pause = PAUSE_CHUNK_HEADER;
	return HPE_PAUSED;
}

static int on_body(llhttp_t *p, const char *at, size_t len)
{
	struct conn *c = p->data;
	struct req *r = c->cur;
	size_t max = r->max_body;

	if (r->pub.body_len + len > max) {
		conn_reject(c, 413, "body_too_large",
		            "request body exceeds the limit of %zu bytes (%s); send a smaller body",
		            max, r->body_limit_flag);
		return -1;
	}
	if (r->inline_body) {
		IQ_ASSERT(r->pub.body_len + len <= r->inline_cap);
		memcpy(r->inline_body + r->pub.body_len, at, len);
	} else {
		buf_append(&r->body_buf, at, len);
	}
	r->pub.body_len += len;
	return 0;
}

static int on_message_complete(llhttp_t *p)
{
	struct conn *c = p->data;

	c->pause = PAUSE_MESSAGE;
	return HPE_PAUSED;
}

/* ---- requests ---- */

static void trim_value(const char *text, size_t *off, size_t *len)
{
	while (*len > 0 && (text[*off] == ' ' || text[*off] == '\t')) {
		(*off)++;
		(*len)--;
	}
	while (*len > 0 && (text[*off + *len - 1] == ' ' || text[*off + *len - 1] == '\t'))
		(*len)--;
}

/* Builds the request in one allocation: struct, header array, text, inline body. */
static struct req *req_new(struct conn *c)
{
	llhttp_t *p = &c->parser;
	size_t n = c->span_count;
	size_t inline_cap = 0;
	size_t size;
	struct req *r;
	http_header_t *headers;
	char *text;
	const char *q;

	if ((p->flags & F_CONTENT_LENGTH) && !(p->flags & F_CHUNKED) &&
	    p->content_length <= INLINE_BODY_MAX)
		inline_cap = (size_t)p->content_length;
	size = sizeof(*r) + n * sizeof(http_header_t) + c->text.len + 1 + inline_cap + 1;
	r = xmalloc(size);
	memset(r, 0, sizeof(*r));
	headers = (http_header_t *)(r + 1);
	text = (char *)(headers + n);
	memcpy(text, c->text.data ? c->text.data : "", c->text.len);
	text[c->text.len] = '\0';
	if (inline_cap > 0 || (p->flags & F_CONTENT_LENGTH && p->content_length == 0)) {
		r->inline_body = text + c->text.len + 1;
		r->inline_cap = inline_cap;
	}

	for (size_t i = 0; i < n; i++) {
		struct header_span sp = c->spans[i];

		trim_value(text, &sp.value_off, &sp.value_len);
		headers[i].name = text + sp.name_off;
		headers[i].name_len = sp.name_len;
		headers[i].value = text + sp.value_off;
		headers[i].value_len = sp.value_len;
	}
	r->conn = c;
	r->pub.method = llhttp_get_method(p);
	r->pub.method_name = llhttp_method_name((llhttp_method_t)r->pub.method);
	r->pub.path = text;
	q = memchr(text, '?', c->target_len);
	r->pub.path_len = q ? (size_t)(q - text) : c->target_len;
	r->pub.query = q ? q + 1 : "";
	r->pub.query_len = q ? c->target_len - r->pub.path_len - 1 : 0;
	r->pub.headers = headers;
	r->pub.header_count = n;
	r->pub.body = "";
	r->pub.id = __atomic_fetch_add(&next_request_id, 1, __ATOMIC_RELAXED);
	memcpy(r->pub.remote_addr, c->remote, sizeof(r->pub.remote_addr));
	r->is_head = r->pub.method == HTTP_HEAD;
	r->http10 = llhttp_get_http_major(p) == 1 && llhttp_get_http_minor(p) == 0;
	r->started_ns = uv_hrtime();
	r->observer = c->server->limits.observer;
	r->observer_ctx = c->server->ctx;
	return r;
}

static int header_is(const http_header_t *h, const char *name, const char *value)
{
	return h->name_len == strlen(name) && strncasecmp(h->name, name, h->name_len) == 0 &&
	       (!value ||
	        (h->value_len == strlen(value) && strncasecmp(h->value, value, h->value_len) == 0));
}

/* Checks framing the parser leaves to us; returns 0 or the status sent. */
static int check_headers(struct conn *c, struct req *r)
{
	llhttp_t *p = &c->parser;
	const http_limits_t *lim = &c->server->limits;
	int te_count = 0, te_chunked = 0, host_count = 0;
	char quoted[64];

	if (llhttp_get_http_major(p) != 1) {
		conn_reject(c, 505, "unsupported_http_version",
		            "HTTP/%d.%d is not supported; use HTTP/1.1", llhttp_get_http_major(p),
		            llhttp_get_http_minor(p));
		return 505;
	}
	for (size_t i = 0; i < r->pub.header_count; i++) {
		const http_header_t *h = &r->pub.headers[i];

		host_count += header_is(h, "host", NULL);
		if (header_is(h, "transfer-encoding", NULL)) {
			te_count++;
			te_chunked += header_is(h, "transfer-encoding", "chunked");
		}
	}
	/* RFC 9112 section 3.2: an HTTP/1.1 request carries exactly one Host. */
	if (llhttp_get_http_minor(p) >= 1 && host_count != 1) {
		conn_reject(c, 400, "invalid_http",
		            "invalid HTTP request: HTTP/1.1 needs exactly one Host header, got %d",
		            host_count);
		return 400;
	}
	if (te_count > 0 && (te_count != 1 || te_chunked != 1)) {
		size_t v_len = 0;
		const char *v = http_request_header(&r->pub, "transfer-encoding", &v_len);

		conn_reject(c, 501, "unsupported_transfer_encoding",
		            "Transfer-Encoding %s is not supported; send one \"Transfer-Encoding: "
		            "chunked\" header or a Content-Length",
		            log_quote(v, v_len, quoted, sizeof(quoted)));
		return 501;
	}
	r->max_body = lim->max_body_bytes;
	r->body_limit_flag = "--max-body-bytes";
	if (lim->body_limit)
		r->max_body = lim->body_limit(c->server->ctx, &r->pub, &r->body_limit_flag);
	if ((p->flags & F_CONTENT_LENGTH) && p->content_length > r->max_body) {
		conn_reject(c, 413, "body_too_large",
		            "Content-Length %llu exceeds the request body limit of %zu bytes "
		            "(%s); send a smaller body",
		            (unsigned long long)p->content_length, r->max_body, r->body_limit_flag);
		return 413;
	}
	return 0;
}

static void send_continue(struct conn *c)
{
	struct slot *sl = slot_at(c, ring_push(c));

	buf_puts(&sl->resp, "HTTP/1.1 100 Continue\r\n\r\n");
	sl->ready = 1;
	schedule_flush(c);
}

static void headers_complete(struct conn *c)
{
	const http_limits_t *lim = &c->server->limits;
	llhttp_t *p = &c->parser;
	size_t len;
	const char *expect;
	struct req *r;

	c->in_header_block = 0;
	c->cr_pending = 0;
	if (c->header_bytes > lim->max_header_bytes) {
		conn_reject(c, 431, "headers_too_large",
		            "request line and headers exceed the limit of %zu bytes "
		            "(--max-header-bytes); send fewer or shorter headers",
		            lim->max_header_bytes);
		return;
	}
	r = req_new(c);
	c->cur = r;
	c->chunked = (p->flags & F_CHUNKED) != 0;
	if (check_headers(c, r) != 0)
		return;

	expect = http_request_header(&r->pub, "expect", &len);
	if (expect && len == 12 && strncasecmp(expect, "100-continue", 12) == 0 && !r->http10 &&
	    (c->chunked || p->content_length > 0))
		send_continue(c);
}

static void message_complete(struct conn *c)
{
	struct http_server *s = c->server;
	struct req *r = c->cur;

	c->cur = NULL;
	c->in_request = 0;
	c->in_header_block = 1;
	c->header_bytes = 0;
	c->cr_pending = 0;
	c->chunked = 0;

	if (r->inline_body) {
		r->inline_body[r->pub.body_len] = '\0';
		r->pub.body = r->inline_body;
	} else if (r->body_buf.len > 0) {
		r->pub.body = r->body_buf.data;
	}
	r->keep_alive = llhttp_should_keep_alive(&c->parser) && !llhttp_get_upgrade(&c->parser);
	if (!r->keep_alive) {
		c->parse_stopped = 1;
		update_reading(c);
	}
	r->seq = ring_push(c);
	c->unanswered++;
	if (c->pass_seen != s->pass) {
		c->pass_seen = s->pass;
		c->pass_requests = 0;
	}
	c->pass_requests++;
	c->refs++;
	update_timer(c);
	s->handler(s->ctx, &r->pub);
}

/* ---- feeding the parser ---- */

/*
 * Scans p[0..n) of a region where every CR must be followed by LF. Returns
 * the count of bytes that may go to the parser: n, or the index of the
 * first byte that follows a bare CR (0 when the CR ended the previous read).
 */
static size_t scan_bare_cr(struct conn *c, const char *p, size_t n)
{
	size_t i = 0;

	if (n > 0 && c->cr_pending) {
		if (p[0] != '\n')
			return 0;
		c->cr_pending = 0;
		i = 1;
	}
	/* memchr skips the bytes between CRs, which are nearly all of them, many at a time. */
	while (i < n) {
		const char *cr = memchr(p + i, '\r', n - i);

		if (cr == NULL)
			break;
		i = (size_t)(cr - p) + 1;
		if (i == n) {
			c->cr_pending = 1;
			break;
		}
		if (p[i] != '\n')
			return i;
		i++;
	}
	return n;
}

static void reject_parse_error(struct conn *c, llhttp_errno_t err)
{
	conn_reject(c, 400, "invalid_http", "invalid HTTP request: %s (%s)",
	            llhttp_get_error_reason(&c->parser), llhttp_errno_name(err));
}

/* Handles a pause of the parser; returns 1 when feeding should go on. */
static int handle_pause(struct conn *c)
{
	enum parse_pause pause = c->pause;

	c->pause = PAUSE_NONE;
	switch (pause) {
	case PAUSE_HEADERS: headers_complete(c); break;
	case PAUSE_CHUNK_HEADER:
		c->chunk_data_left = c->parser.content_length;
		c->chunk_crlf_left = 0;
		c->cr_pending = 0;
		break;
	case PAUSE_MESSAGE: message_complete(c); break;
	case PAUSE_NONE: break;
	}
	return !c->closed && !c->parse_stopped;
}

/*
 * Checks that the framing after a chunk's data starts with CRLF: llhttp
 * 8.1 accepts any two bytes there, which lets a body hide a second request.
 * Consumes the expectation as the bytes are seen; returns 0 on a mismatch.
 */
static int chunk_crlf_ok(struct conn *c, const char *p, size_t n)
{
	for (size_t i = 0; i < n && c->chunk_crlf_left > 0; i++) {
		char want = c->chunk_crlf_left == 2 ? '\r' : '\n';

		if (p[i] != want)
			return 0;
		c->chunk_crlf_left--;
	}
	return 1;
}

/* Returns 1 when the connection has had its max_requests_per_pass in this loop pass. */
static int pass_budget_spent(const struct conn *c)
{
	const struct http_server *s = c->server;

	return s->limits.max_requests_per_pass > 0 && c->pass_seen == s->pass &&
	       c->pass_requests >= s->limits.max_requests_per_pass;
}

/*
 * Feeds the parser, one region at a time: header block and chunk framing
 * (scanned for bare CR, and the header block counted against its limit),
 * or body bytes (passed as they are). Between requests it stops when the
 * connection has max_pipelined unanswered requests, too much unsent output
 * or its max_requests_per_pass in this loop pass, and keeps the rest in the
 * stash. After the last of these, on_check parses the stash in the next pass.
 */
static void conn_feed(struct conn *c, const char *p, size_t len)
{
	const http_limits_t *lim = &c->server->limits;
	int run_empty = 0; /* run the parser once more on no bytes, after a pause */

	while ((len > 0 || run_empty) && can_parse(c)) {
		if (pass_budget_spent(c) && !c->in_request) {
			schedule_flush(c);
			break;
		}
		size_t n = len, used;
		int scanned = 0, bare_cr = 0;
		llhttp_errno_t err;

		if (c->in_header_block) {
			size_t room = lim->max_header_bytes - c->header_bytes + 1;

			n = n < room ? n : room;
			scanned = 1;
		} else if (c->chunked && c->chunk_data_left > 0) {
			n = n < c->chunk_data_left ? n : (size_t)c->chunk_data_left;
		} else if (c->chunked) {
			if (!chunk_crlf_ok(c, p, n)) {
				conn_reject(c, 400, "invalid_http",
				            "invalid HTTP request: chunk data not followed by CRLF");
				break;
			}
			scanned = 1;
		}
		if (scanned) {
			size_t ok = scan_bare_cr(c, p, n);

			bare_cr = ok < n;
			n = ok;
		}
		run_empty = 0;
		err = n > 0 || !bare_cr ? llhttp_execute(&c->parser, p, n) : HPE_OK;
		used = n;
		if (err == HPE_PAUSED) {
			used = (size_t)(llhttp_get_error_pos(&c->parser) - p);
			llhttp_resume(&c->parser);
		} else if (err == HPE_PAUSED_UPGRADE) {
			/* Upgrades are not supported: the handler got the request as
			 * a plain one and the connection closes after its response. */
			c->parse_stopped = 1;
			break;
		} else if (err != HPE_OK) {
			reject_parse_error(c, err);
			break;
		}
		if (c->in_header_block)
			c->header_bytes += used;
		if (c->chunked && !c->in_header_block && !scanned) {
			c->chunk_data_left -= used;
			if (c->chunk_data_left == 0)
				c->chunk_crlf_left = 2;
		}
		p += used;
		len -= used;

		if (c->pause != PAUSE_NONE) {
			run_empty = c->pause == PAUSE_HEADERS;
			if (!handle_pause(c))
				break;
			continue;
		}
		if (bare_cr) {
			conn_reject(c, 400, "invalid_http",
			            "invalid HTTP request: CR not followed by LF in the %s",
			            c->in_header_block ? "header block" : "chunked body framing");
			break;
		}
		if (c->in_header_block && c->header_bytes > lim->max_header_bytes) {
			conn_reject(c, 431, "headers_too_large",
			            "request line and headers exceed the limit of %zu bytes "
			            "(--max-header-bytes); send fewer or shorter headers",
			            lim->max_header_bytes);
			break;
		}
	}
	if (len > 0 && !c->closed && !c->parse_stopped)
		buf_append(&c->stash, p, len);
	update_reading(c);
}

/* ---- accepting ---- */

static void format_peer(struct conn *c)
{
	struct sockaddr_storage ss;
	int len = sizeof(ss);
	char ip[INET6_ADDRSTRLEN] = "?";

	if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &len) != 0) {
		snprintf(c->remote, sizeof(c->remote), "unknown");
	} else if (ss.ss_family == AF_INET6) {
		const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)&ss;

		uv_ip6_name(a, ip, sizeof(ip));
		snprintf(c->remote, sizeof(c->remote), "[%s]:%u", ip, ntohs(a->sin6_port));
	} else {
		const struct sockaddr_in *a = (const struct sockaddr_in *)&ss;

		uv_ip4_name(a, ip, sizeof(ip));
		snprintf(c->remote, sizeof(c->remote), "%s:%u", ip, ntohs(a->sin_port));
	}
}

static void on_rejected_closed(uv_handle_t *h)
{
	struct http_server *s = h->data;

	free(h);
	s->pending_handles--;
	maybe_finish_server(s);
}

/* Accepts and closes a connection over max_connections, warning at most once a second. */
static void reject_connection(struct http_server *s)
{
	uv_tcp_t *t = xmalloc(sizeof(*t));
	uint64_t now = uv_now(s->loop);

	uv_tcp_init(s->loop, t);
	t->data = s;
	(void)uv_accept((uv_stream_t *)&s->listener, (uv_stream_t *)t);
	s->pending_handles++;
	uv_close((uv_handle_t *)t, on_rejected_closed);

	s->rejects_since_warn++;
	if (s->last_reject_warn_ms == 0 ||
	    now - s->last_reject_warn_ms >= REJECT_WARN_INTERVAL_MS) {
		log_warn(
		    "http",
		    "connection limit of %u reached: closed %llu new connections since the last "
		    "warning; raise max_connections or add capacity",
		    s->limits.max_connections, (unsigned long long)s->rejects_since_warn);
		s->last_reject_warn_ms = now ? now : 1;
		s->rejects_since_warn = 0;
	}
}

static void on_connection(uv_stream_t *listener, int status)
{
	struct http_server *s = listener->data;
	struct conn *c;

	if (status < 0) {
		log_warn("http", "accept on port %d failed: %s", s->port, uv_strerror(status));
		return;
	}
	if (s->limits.max_connections > 0 && s->open_conns >= s->limits.max_connections) {
		reject_connection(s);
		return;
	}
	c = xcalloc(1, sizeof(*c));
	c->server = s;
	c->refs = 2;
	c->open_handles = 2;
	uv_tcp_init(s->loop, &c->tcp);
	uv_timer_init(s->loop, &c->timer);
	c->tcp.data = c;
	c->timer.data = c;
	c->next = s->conns;
	if (s->conns)
		s->conns->prev = c;
	s->conns = c;
	s->open_conns++;
	if (uv_accept(listener, (uv_stream_t *)&c->tcp) != 0) {
		conn_close(c);
		return;
	}
	uv_tcp_nodelay(&c->tcp, 1);
	format_peer(c);
	if (s->tls)
		c->tls = tls_conn_new(s->tls);
	llhttp_init(&c->parser, HTTP_REQUEST, &s->settings);
	c->parser.data = c;
	c->in_header_block = 1;
	update_reading(c);
	update_timer(c);
	log_debug("http", "accepted connection from %s", c->remote);
}

/* ---- server ---- */

static int parse_listen_addr(const char *text, struct sockaddr_storage *addr, char *err,
                             size_t errlen)
{
	char host[64];
	const char *port_text, *colon;
	size_t host_len;
	unsigned long port;
	char *end;
	int ipv6 = text[0] == '[';

	if (ipv6) {
		const char *bracket = strchr(text, ']');

		if (!bracket || bracket[1] != ':')
			goto invalid;
		host_len = (size_t)(bracket - text - 1);
		memcpy(host, text + 1, host_len < sizeof(host) ? host_len : 0);
		port_text = bracket + 2;
	} else {
		colon = strrchr(text, ':');
		if (!colon || memchr(text, ':', (size_t)(colon - text)))
			goto invalid;
		host_len = (size_t)(colon - text);
		memcpy(host, text, host_len < sizeof(host) ? host_len : 0);
		port_text = colon + 1;
	}
	if (host_len == 0 || host_len >= sizeof(host) || port_text[0] < '0' || port_text[0] > '9')
		goto invalid;
	host[host_len] = '\0';
	if (!ipv6 && strcasecmp(host, "localhost") == 0)
		snprintf(host, sizeof(host), "127.0.0.1");
	port = strtoul(port_text, &end, 10);
	if (*end != '\0' || port > 65535)
		goto invalid;
	memset(addr, 0, sizeof(*addr));
	if (ipv6 ? uv_ip6_addr(host, (int)port, (struct sockaddr_in6 *)addr)
	         : uv_ip4_addr(host, (int)port, (struct sockaddr_in *)addr))
		goto invalid;
	return 0;
invalid:
	snprintf(err, errlen,
	         "invalid listen address \"%s\": expected a numeric host or localhost and a "
	         "port from 0 to 65535, as in 127.0.0.1:8080 or [::1]:8080 (port 0 picks a free "
	         "port)",
	         text);
	return INFERQ_EINVAL;
}

/* Binds and listens on a socket of our own, so a failure leaves no libuv handle behind. */
static int open_listener(const struct sockaddr_storage *addr, int *fd_out, int *port_out, char *err,
                         size_t errlen)
{
	socklen_t len =
	    addr->ss_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
	struct sockaddr_storage bound;
	socklen_t bound_len = sizeof(bound);
	const char *step = "socket";
	int one = 1;
	int fd = socket(addr->ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd < 0)
		goto fail;
	/* Lets a restarted server bind while old connections sit in TIME_WAIT. */
	step = "setsockopt(SO_REUSEADDR)";
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0)
		goto fail;
	step = "bind";
	if (bind(fd, (const struct sockaddr *)addr, len) != 0)
		goto fail;
	step = "listen";
	if (listen(fd, LISTEN_BACKLOG) != 0 ||
	    getsockname(fd, (struct sockaddr *)&bound, &bound_len) != 0)
		goto fail;
	*port_out = ntohs(bound.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&bound)->sin6_port
	                                              : ((struct sockaddr_in *)&bound)->sin_port);
	*fd_out = fd;
	return 0;
fail:
	snprintf(err, errlen, "%s failed: %s", step, strerror(errno));
	if (fd >= 0)
		close(fd);
	return INFERQ_EIO;
}

static void init_settings(llhttp_settings_t *st)
{
	llhttp_settings_init(st);
	st->on_message_begin = on_message_begin;
	st->on_url = on_url;
	st->on_header_field = on_header_field;
	st->on_header_field_complete = on_header_field_complete;
	st->on_header_value = on_header_value;
	st->on_header_value_complete = on_header_value_complete;
	st->on_headers_complete = on_headers_complete;
	st->on_chunk_header = on_chunk_header;
	st->on_body = on_body;
	st->on_message_complete = on_message_complete;
}

int http_server_start(uv_loop_t *loop, const char *listen_addr, const http_limits_t *limits,
                      http_handler_cb handler, void *ctx, http_server_t **out, char *err,
                      size_t errlen)
{
	struct sockaddr_storage addr;
	struct http_server *s;
	int fd = -1, port = 0, rc;

	if (limits->max_header_bytes == 0 || limits->max_pipelined == 0) {
		snprintf(err, errlen,
		         "invalid HTTP limits: max_header_bytes (%zu) and "
		         "max_pipelined (%u) must be at least 1",
		         limits->max_header_bytes, limits->max_pipelined);
		return INFERQ_EINVAL;
	}
	rc = parse_listen_addr(listen_addr, &addr, err, errlen);
	if (rc == 0)
		rc = open_listener(&addr, &fd, &port, err, errlen);
	if (rc < 0)
		return rc;

	s = xcalloc(1, sizeof(*s));
	s->loop = loop;
	s->limits = *limits;
	s->handler = handler;
	s->ctx = ctx;
	s->port = port;
	init_settings(&s->settings);
	uv_tcp_init(loop, &s->listener);
	uv_check_init(loop, &s->check);
	uv_idle_init(loop, &s->idle);
	s->listener.data = s->check.data = s->idle.data = s;
	s->pending_handles = 1;
	s->aux_open = 2;
	uv_check_start(&s->check, on_check);
	uv_unref((uv_handle_t *)&s->check);

	rc = uv_tcp_open(&s->listener, fd);
	if (rc == 0 && !limits->accept_later)
		rc = uv_listen((uv_stream_t *)&s->listener, LISTEN_BACKLOG, on_connection);
	if (rc < 0) {
		snprintf(err, errlen, "listen on the loop failed: %s", uv_strerror(rc));
		if (uv_fileno((uv_handle_t *)&s->listener, &(uv_os_fd_t){0}) != 0)
			close(fd);
		/* NOTE: the struct is freed by close callbacks, so only once the loop runs. */
		http_server_close(s, NULL, NULL);
		return INFERQ_EIO;
	}
	log_debug("http", "listening on %s (port %d)", listen_addr, port);
	*out = s;
	return 0;
}

int http_server_port(const http_server_t *server)
{
	return server->port;
}

int http_listen_addr_check(const char *text, char *err, size_t errlen)
{
	struct sockaddr_storage addr;

	return parse_listen_addr(text, &addr, err, errlen);
}

int http_server_accept(http_server_t *server, char *err, size_t errlen)
{
	int rc = uv_listen((uv_stream_t *)&server->listener, LISTEN_BACKLOG, on_connection);

	if (rc < 0) {
		snprintf(err, errlen, "listen on the loop failed: %s", uv_strerror(rc));
		return INFERQ_EIO;
	}
	return 0;
}

uint32_t http_server_connections(const http_server_t *server)
{
	return server->open_conns;
}

void http_server_use_tls(http_server_t *server, tls_context_t *tls)
{
	server->tls = tls;
}

static void on_aux_closed(uv_handle_t *h)
{
	struct http_server *s = h->data;
	void (*done)(void *ctx) = s->done;
	void *done_ctx = s->done_ctx;

	if (--s->aux_open > 0)
		return;
	buf_free(&s->tls_plain);
	free(s);
	if (done)
		done(done_ctx);
}

static void maybe_finish_server(struct http_server *s)
{
	if (!s->closing || s->finishing || s->conns || s->pending_handles > 0 || s->flush_head)
		return;
	s->finishing = 1;
	uv_close((uv_handle_t *)&s->check, on_aux_closed);
	uv_close((uv_handle_t *)&s->idle, on_aux_closed);
}

static void on_listener_closed(uv_handle_t *h)
{
	struct http_server *s = h->data;

	s->pending_handles--;
	maybe_finish_server(s);
}

void http_server_close(http_server_t *s, void (*done)(void *ctx), void *ctx)
{
	struct conn *c;

	IQ_ASSERT(!s->closing);
	s->closing = 1;
	s->done = done;
	s->done_ctx = ctx;
	uv_close((uv_handle_t *)&s->listener, on_listener_closed);

	for (c = s->conns; c; c = c->next) {
		if (c->closed)
			continue;
		if (c->unanswered == 0 && c->head_seq == c->tail_seq && c->write_queued == 0) {
			conn_close(c);
			continue;
		}
		/* Busy: finish the requests already read, drop a partial one. */
		if (c->cur) {
			req_free(c->cur);
			c->cur = NULL;
		}
		c->in_request = 0;
		c->parse_stopped = 1;
		buf_free(&c->stash);
		update_reading(c);
		update_timer(c);
		schedule_flush(c);
	}
	maybe_finish_server(s);
}

/* ---- requests, public ---- */

const char *http_request_header(const http_request_t *req, const char *name, size_t *len)
{
	size_t name_len = strlen(name);

	for (size_t i = 0; i < req->header_count; i++) {
		const http_header_t *h = &req->headers[i];

		if (h->name_len == name_len && strncasecmp(h->name, name, name_len) == 0) {
			*len = h->value_len;
			return h->value;
		}
	}
	return NULL;
}

static void queue_response(struct conn *c, struct req *r, int status, const char *content_type,
                           const char *extra_headers, const char *body, size_t body_len)
{
	struct slot *sl = slot_at(c, r->seq);
	int last = (c->server->closing || c->peer_eof) && r->seq + 1 == c->tail_seq;
	enum conn_header conn_header = CONN_HDR_NONE;

	if (!r->keep_alive || last)
		conn_header = CONN_HDR_CLOSE;
	else if (r->http10)
		conn_header = CONN_HDR_KEEP_ALIVE;

	/* At the head of the ring the bytes can go straight to the output. */
	buf_t *target = r->seq == c->head_seq ? &c->out : &sl->resp;
	size_t before = target->len;

	format_response(c->server, target, status, content_type, extra_headers, body, body_len,
	                r->is_head, conn_header);
	/*
	 * Responses wait here until the loop pass ends. For a client that does
	 * not read, responses to its pipelined requests would pile up without
	 * bound, so they count toward the same limit as unsent writes.
	 */
	c->ready_bytes += target->len - before;
	if (c->write_queued + c->ready_bytes > WRITE_HIGH_BYTES)
		c->backlogged = 1;
	sl->ready = 1;
	sl->close_after = conn_header == CONN_HDR_CLOSE;
	schedule_flush(c);
	update_timer(c);
}

void http_respond(http_request_t *req, int status, const char *content_type,
                  const char *extra_headers, const char *body, size_t body_len)
{
	struct req *r = (struct req *)req;
	struct conn *c = r->conn;

	IQ_ASSERT(status >= 200 && status <= 599);
	IQ_ASSERT(c->unanswered > 0);
	c->unanswered--;
	if (r->orphan_cb)
		unwatch(c, r);
	if (log_enabled(LOG_DEBUG)) {
		char path[96];

		log_debug("http", "request %llu %s %s from %s: status %d%s",
		          (unsigned long long)req->id, req->method_name,
		          log_quote(req->path, req->path_len, path, sizeof(path)), req->remote_addr,
		          status, c->closed ? " (client gone, response dropped)" : "");
	}
	if (!c->closed)
		queue_response(c, r, status, content_type, extra_headers, body, body_len);
	if (r->observer)
		r->observer(r->observer_ctx, req, status, body_len, uv_hrtime() - r->started_ns);
	req_free(r);
	conn_unref(c);
}

int http_request_is_orphaned(const http_request_t *req)
{
	const struct conn *c = ((const struct req *)req)->conn;

	return c->closed || c->peer_eof;
}

void http_request_watch_orphan(http_request_t *req, http_orphan_cb cb, void *arg)
{
	struct req *r = (struct req *)req;
	struct conn *c = r->conn;

	IQ_ASSERT(cb != NULL && r->orphan_cb == NULL && !c->closed && !c->peer_eof);
	r->orphan_cb = cb;
	r->orphan_arg = arg;
	r->watch_prev = NULL;
	r->watch_next = c->watched;
	if (c->watched)
		c->watched->watch_prev = r;
	c->watched = r;
}

void http_request_unwatch_orphan(http_request_t *req)
{
	struct req *r = (struct req *)req;

	if (r->orphan_cb)
		unwatch(r->conn, r);
}

/* ---- query strings ---- */

static int hex_value(char ch)
{
	if (ch >= '0' && ch <= '9')
		return ch - '0';
	if (ch >= 'a' && ch <= 'f')
		return ch - 'a' + 10;
	if (ch >= 'A' && ch <= 'F')
		return ch - 'A' + 10;
	return -1;
}

/* Decodes the byte at *p ('+' is a space, %XY a byte); returns 0 or INFERQ_EINVAL. */
static int decode_byte(const char **p, const char *end, char *out)
{
	const char *s = *p;

	if (*s == '+') {
		*out = ' ';
		*p = s + 1;
	} else if (*s == '%') {
		if (end - s < 3 || hex_value(s[1]) < 0 || hex_value(s[2]) < 0)
			return INFERQ_EINVAL;
		*out = (char)(hex_value(s[1]) * 16 + hex_value(s[2]));
		*p = s + 3;
	} else {
		*out = *s;
		*p = s + 1;
	}
	return *out == '\0' ? INFERQ_EINVAL : 0;
}

/* Returns 1 when key[0..len) decodes to name, 0 when not, INFERQ_EINVAL when malformed. */
static int key_matches(const char *key, size_t len, const char *name)
{
	const char *p = key, *end = key + len;
	size_t i = 0;
	int same = 1;
	char ch;

	while (p < end) {
		if (decode_byte(&p, end, &ch) != 0)
			return INFERQ_EINVAL;
		if (name[i] == '\0' || name[i] != ch)
			same = 0;
		else
			i++;
	}
	return same && name[i] == '\0';
}

int http_query_param(const char *query, size_t len, const char *name, char *out, size_t outlen,
                     size_t *value_len)
{
	const char *p = query, *end = query + len;

	while (p < end) {
		const char *amp = memchr(p, '&', (size_t)(end - p));
		const char *pair_end = amp ? amp : end;
		const char *eq = memchr(p, '=', (size_t)(pair_end - p));
		const char *key_end = eq ? eq : pair_end;
		int match = key_matches(p, (size_t)(key_end - p), name);

		if (match < 0)
			return match;
		if (match && p < pair_end) {
			const char *v = eq ? eq + 1 : pair_end;
			size_t o = 0;

			while (v < pair_end) {
				char ch;

				if (decode_byte(&v, pair_end, &ch) != 0)
					return INFERQ_EINVAL;
				if (o + 1 >= outlen)
					return INFERQ_ELIMIT;
				out[o++] = ch;
			}
			if (outlen == 0)
				return INFERQ_ELIMIT;
			out[o] = '\0';
			if (value_len)
				*value_len = o;
			return 1;
		}
		p = amp ? amp + 1 : end;
	}
	return 0;
}

int http_request_memo_get(const http_request_t *req, const char *value, size_t len,
                          unsigned char result[32])
{
	const struct conn_memo *m = ((const struct req *)req)->conn->memo;

	if (m == NULL || m->len != len || memcmp(m->value, value, len) != 0)
		return 0;
	memcpy(result, m->result, sizeof(m->result));
	return 1;
}

void http_request_memo_put(http_request_t *req, const char *value, size_t len,
                           const unsigned char result[32])
{
	struct conn *c = ((struct req *)req)->conn;

	if (len > HTTP_MEMO_VALUE_MAX)
		return;
	if (c->memo == NULL)
		c->memo = xmalloc(sizeof(*c->memo));
	c->memo->len = len;
	memcpy(c->memo->value, value, len);
	memcpy(c->memo->result, result, sizeof(c->memo->result));
}
