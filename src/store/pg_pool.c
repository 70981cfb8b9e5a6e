/*
 * The libpq connection pool (see pg_pool.h). Each connection is a small
 * state machine: DOWN (waiting for its retry timer), CONNECTING (driven by
 * PQconnectPoll), UP (idle or running one task). A connection runs at most
 * one unordered task, or a pipeline of ordered tasks that run one after
 * another in the order they were given (submits, so that their order is
 * the order of the requests); results are read until each task's sync.
 * Invariant: a task is either on the wait list or owned by exactly one UP
 * connection, and its callback runs exactly once.
 *
 * SPDX-License-Identifier: MIT
 */
#include "pg_pool.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "inferq_error.h"
#include "log.h"

#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000
#define CONNECT_TIMEOUT_MS 5000 /* when the config sets none */
#define SQLSTATE_QUERY_CANCELED "57014" /* statement_timeout, or a cancel request */
#define MAX_PIPELINED 256 /* ordered tasks in flight on one connection */
/*
 * Statement texts the pool prepares, at most: texts past it run unprepared,
 * so texts built per request cannot fill memory here or in the backends.
 */
#define PREPARED_MAX 128
#define PREPARED_NAME "iq_%u"
#define HINT_DELAY_MS 2 /* how long hints gather before one NOTIFY per payload goes out */
#define ECHO_TTL_MS 5000 /* a hint's own notification not back by then is not awaited */
#define ECHO_MAX 1024    /* hints awaited back at most; past it their echoes are delivered */

enum { CONN_DOWN, CONN_CONNECTING, CONN_UP };

typedef struct task {
	struct task *next;
	pg_stmt_t stmts[PG_TASK_MAX_STMTS];
	int count;
	char *params; /* one block holding every parameter value, NUL-terminated each */
	pg_task_cb cb;
	void *ctx;
	PGresult *results[PG_TASK_MAX_STMTS];
	int nresults;
	int failed;
	int ordered; /* PG_TASK_ORDERED */
	int plain;   /* set-up statements of the pool: never prepared */
	int16_t slot[PG_TASK_MAX_STMTS];    /* prepared statement of each statement, or -1 */
	int16_t prepares[PG_TASK_MAX_STMTS]; /* slots this task prepares, sent first */
	int nprepares;
	int nseen; /* results read so far, prepares included */
	char err[384];
	struct pg_pool *counted; /* the pool whose outstanding count includes this task, or NULL */
} task_t;

typedef struct conn {
	pg_pool_t *pool;
	PGconn *pg;
	uv_poll_t *poll; /* heap handle of the current socket, or NULL */
	int fd;
	int events;
	int state;
	int listener; /* only LISTENs, runs no pool task */
	task_t *task;      /* oldest task in flight; the others follow through next */
	task_t *task_tail; /* newest task in flight */
	uint32_t inflight;
	uv_timer_t timer; /* retry backoff while DOWN, connect deadline while CONNECTING */
	int64_t backoff_ms;
	uint8_t prepared[PREPARED_MAX]; /* 1: slot i is prepared (or its prepare is sent) here */
} conn_t;

/* One statement text that connections prepare under the name of its slot. */
typedef struct {
	char *sql;
	uint32_t hash;
} prepared_t;

struct pg_pool {
	uv_loop_t *loop;
	char *conninfo;
	char host[128];
	char listen_sql[128];
	char channel[64]; /* the LISTEN channel, which hints notify */
	pg_notify_cb notify;
	void *ctx;
	conn_t *conns; /* size task connections, then the listener when there is one */
	uint32_t size, total;
	uint32_t max_waiting, waiting;
	uint32_t outstanding; /* tasks waiting or in flight, background ones aside */
	task_t *head, *tail;
	int64_t connect_timeout_ms;
	int64_t statement_timeout_ms;
	char settings_sql[96]; /* run first on each task connection, or "" */
	int outage;      /* 1 after the warning that no connection is up, until one is */
	int closing;
	uint32_t handles; /* open uv handles; the pool is freed when it drops to 0 after close */
	char last_error[192];
	prepared_t prepared[PREPARED_MAX]; /* the statement table, shared by the connections */
	uint32_t nprepared;
	char **hints; /* distinct payloads to notify when hint_timer fires */
	uint32_t nhints, hints_cap;
	uv_timer_t hint_timer;
	/*
	 * Hints sent whose notification has not come back to the listener yet.
	 * The caller of pg_pool_hint already woke its own waiters, so the echo
	 * is dropped instead of waking them a second time.
	 */
	struct echo {
		char *payload;
		uint64_t sent_ms;
	} *echoes;
	uint32_t nechoes;
};

static void conn_connect(conn_t *c);
static void dispatch(pg_pool_t *p);

/*
 * Copies libpq's message on one line: line breaks and tabs become spaces,
 * none trail. A line that ends without punctuation before a line starting
 * with a capital letter ends a sentence in libpq's messages ("server closed
 * the connection unexpectedly" then "This probably means..."), so it gets
 * a period.
 */
static void copy_message(char *out, size_t len, const char *msg)
{
	size_t n = 0;
	int space = 0, line_break = 0;

	if (!msg || !*msg)
		msg = "unknown error";
	/* Each turn adds up to three characters, and the terminator needs one more. */
	for (; *msg && n + 3 < len; msg++) {
		int blank = *msg == '\n' || *msg == '\r' || *msg == '\t' || *msg == ' ';

		if (blank) {
			line_break |= *msg == '\n';
			space = n > 0;
			continue;
		}
		if (space && line_break && isupper((unsigned char)*msg) &&
		    !strchr(".:;!?", out[n - 1]))
			out[n++] = '.';
		if (space)
			out[n++] = ' ';
		out[n++] = *msg;
		space = 0;
		line_break = 0;
	}
	out[n] = '\0';
}

static void finish_task(task_t *t, int rc, const char *err)
{
	if (t->counted)
		t->counted->outstanding--;
	if (t->cb)
		t->cb(t->ctx, rc, rc == 0 ? t->results : NULL, rc == 0 ? t->nresults : 0, err);
	for (int i = 0; i < t->nresults; i++)
		PQclear(t->results[i]);
	free(t->params);
	free(t);
}

static int pool_reachable(const pg_pool_t *p)
{
	for (uint32_t i = 0; i < p->size; i++) {
		if (p->conns[i].state != CONN_DOWN)
			return 1;
	}
	return 0;
}

int pg_pool_up(const pg_pool_t *p)
{
	for (uint32_t i = 0; i < p->size; i++) {
		if (p->conns[i].state == CONN_UP)
			return 1;
	}
	return 0;
}

const char *pg_pool_host(const pg_pool_t *p)
{
	return p->host;
}

/* Fails every task on the wait list with rc. */
static void fail_waiting(pg_pool_t *p, int rc, const char *err)
{
	while (p->head) {
		task_t *t = p->head;

		p->head = t->next;
		if (!p->head)
			p->tail = NULL;
		p->waiting--;
		finish_task(t, rc, err);
	}
}

static void unreachable_message(const pg_pool_t *p, char *out, size_t len)
{
	snprintf(out, len,
		 "the database at %s is unreachable (%s); the server reconnects by itself, retry "
		 "after the Retry-After delay",
		 p->host, p->last_error[0] ? p->last_error : "connecting");
}

static void on_handle_closed(uv_handle_t *h)
{
	pg_pool_t *p = h->data;

	if (h->type == UV_POLL)
		free(h);
	if (--p->handles == 0 && p->closing) {
		for (uint32_t i = 0; i < p->nprepared; i++)
			free(p->prepared[i].sql);
		for (uint32_t i = 0; i < p->nhints; i++)
			free(p->hints[i]);
		free(p->hints);
		for (uint32_t i = 0; i < p->nechoes; i++)
			free(p->echoes[i].payload);
		free(p->echoes);
		free(p->conns);
		free(p->conninfo);
		free(p);
	}
}

/* Stops polling and closes the libpq connection, keeping the conn for a retry. */
static void conn_drop(conn_t *c)
{
	if (c->poll) {
		uv_poll_stop(c->poll);
		c->poll->data = c->pool;
		uv_close((uv_handle_t *)c->poll, on_handle_closed);
		c->poll = NULL;
	}
	if (c->pg)
		PQfinish(c->pg);
	c->pg = NULL;
	c->fd = -1;
	c->events = 0;
	/* The next connection is a new backend: it has no prepared statement. */
	memset(c->prepared, 0, sizeof(c->prepared));
}

/* Fails every task in flight on c, oldest first. */
static void fail_inflight(conn_t *c, int rc, const char *msg)
{
	while (c->task) {
		task_t *t = c->task;

		c->task = t->next;
		if (!c->task)
			c->task_tail = NULL;
		c->inflight--;
		finish_task(t, rc, msg);
	}
}

static void on_retry(uv_timer_t *timer)
{
	conn_connect(timer->data);
}

static void conn_fail(conn_t *c, const char *why)
{
	pg_pool_t *p = c->pool;
	char msg[640];

	copy_message(p->last_error, sizeof(p->last_error), why);
	conn_drop(c);
	c->state = CONN_DOWN;
	snprintf(msg, sizeof(msg),
		 "the connection to the database at %s broke (%s); the change may not have "
		 "been saved: retry it",
		 p->host, p->last_error);
	fail_inflight(c, INFERQ_EIO, msg);
	if (p->closing)
		return;
	if (!p->outage && !pg_pool_up(p)) {
		p->outage = 1;
		log_warn("store", "database at %s is unreachable: %s; requests get 503 until it "
				  "is back, reconnecting with backoff",
			 p->host, p->last_error);
	}
	if (!pool_reachable(p)) {
		unreachable_message(p, msg, sizeof(msg));
		fail_waiting(p, INFERQ_EBUSY, msg);
	}
	c->backoff_ms = c->backoff_ms ? c->backoff_ms * 2 : BACKOFF_MIN_MS;
	if (c->backoff_ms > BACKOFF_MAX_MS)
		c->backoff_ms = BACKOFF_MAX_MS;
	uv_timer_start(&c->timer, on_retry, (uint64_t)c->backoff_ms, 0);
}

static void on_poll(uv_poll_t *handle, int status, int events);

/* Polls the connection's current socket for events, making a new handle when it changed. */
static int set_poll(conn_t *c, int events)
{
	int fd = PQsocket(c->pg);

	if (fd < 0)
		return INFERQ_EIO;
	if (c->poll && fd != c->fd) {
		uv_poll_stop(c->poll);
		c->poll->data = c->pool;
		uv_close((uv_handle_t *)c->poll, on_handle_closed);
		c->poll = NULL;
	}
	if (!c->poll) {
		c->poll = xmalloc(sizeof(*c->poll));
		if (uv_poll_init(c->pool->loop, c->poll, fd) != 0) {
			free(c->poll);
			c->poll = NULL;
			return INFERQ_EIO;
		}
		c->pool->handles++;
		c->poll->data = c;
		c->fd = fd;
		c->events = 0;
	}
	if (events != c->events) {
		c->events = events;
		uv_poll_start(c->poll, events, on_poll);
	}
	return 0;
}

static void on_connect_deadline(uv_timer_t *timer)
{
	conn_t *c = timer->data;

	if (c->state == CONN_CONNECTING)
		conn_fail(c, "connecting timed out");
}

/*
 * Logs what PostgreSQL sends outside a result: a NOTICE or WARNING, or the
 * FATAL of a connection the server ends. libpq's default prints it raw to
 * stderr, outside the log's format. arg is the pool's host text.
 */
static void on_notice(void *arg, const PGresult *res)
{
	const char *severity = PQresultErrorField(res, PG_DIAG_SEVERITY_NONLOCALIZED);
	char text[256];

	copy_message(text, sizeof(text), PQresultErrorMessage(res));
	if (severity && (strcmp(severity, "NOTICE") == 0 || strcmp(severity, "INFO") == 0 ||
			 strcmp(severity, "LOG") == 0 || strcmp(severity, "DEBUG") == 0))
		log_info("store", "database at %s: %s", (const char *)arg, text);
	else
		log_warn("store", "database at %s: %s", (const char *)arg, text);
}

static void conn_connect(conn_t *c)
{
	c->pg = PQconnectStart(c->pool->conninfo);
	if (c->pg == NULL || PQstatus(c->pg) == CONNECTION_BAD) {
		conn_fail(c, c->pg ? PQerrorMessage(c->pg) : "out of memory");
		return;
	}
	PQsetNoticeReceiver(c->pg, on_notice, c->pool->host);
	c->state = CONN_CONNECTING;
	if (set_poll(c, UV_WRITABLE) != 0) {
		conn_fail(c, "the connection has no socket");
		return;
	}
	uv_timer_start(&c->timer, on_connect_deadline, (uint64_t)c->pool->connect_timeout_ms, 0);
}

static uint32_t text_hash(const char *s)
{
	uint32_t h = 2166136261u;

	for (; *s; s++)
		h = (h ^ (uint8_t)*s) * 16777619u;
	return h;
}

/*
 * Returns the slot of statement text sql in the pool's table, adding it
 * when new, or -1 when the table is full. Texts are compared, not
 * pointers, since a caller may build one in a buffer it reuses.
 */
static int prepared_slot(pg_pool_t *p, const char *sql)
{
	uint32_t h = text_hash(sql);

	for (uint32_t i = 0; i < p->nprepared; i++) {
		if (p->prepared[i].hash == h && strcmp(p->prepared[i].sql, sql) == 0)
			return (int)i;
	}
	if (p->nprepared == PREPARED_MAX)
		return -1;
	p->prepared[p->nprepared].sql = xstrdup(sql);
	p->prepared[p->nprepared].hash = h;
	return (int)p->nprepared++;
}

/*
 * Sends the statements of t in one pipeline with one sync. A text this
 * connection has not prepared yet is prepared first, ahead of the task's
 * statements, so no failure of a statement can abort the prepare; the
 * prepared statement outlives the transaction. From then on the
 * connection runs it by name and PostgreSQL plans it no more each time.
 */
static int send_task(conn_t *c, task_t *t)
{
	char name[16];

	t->nprepares = 0;
	for (int i = 0; i < t->count; i++) {
		int slot = t->plain ? -1 : prepared_slot(c->pool, t->stmts[i].sql);

		t->slot[i] = (int16_t)slot;
		if (slot < 0 || c->prepared[slot])
			continue;
		snprintf(name, sizeof(name), PREPARED_NAME, (unsigned)slot);
		if (!PQsendPrepare(c->pg, name, t->stmts[i].sql, 0, NULL))
			return INFERQ_EIO;
		c->prepared[slot] = 1;
		t->prepares[t->nprepares++] = (int16_t)slot;
	}
	for (int i = 0; i < t->count; i++) {
		const pg_stmt_t *st = &t->stmts[i];
		int ok;

		if (t->slot[i] >= 0) {
			snprintf(name, sizeof(name), PREPARED_NAME, (unsigned)t->slot[i]);
			ok = PQsendQueryPrepared(c->pg, name, st->nparams, st->values, st->lengths,
						 NULL, 0);
		} else {
			ok = PQsendQueryParams(c->pg, st->sql, st->nparams, NULL, st->values,
					       st->lengths, NULL, 0);
		}
		if (!ok)
			return INFERQ_EIO;
	}
	if (!PQpipelineSync(c->pg))
		return INFERQ_EIO;
	return PQflush(c->pg) < 0 ? INFERQ_EIO : 0;
}

static void conn_start_task(conn_t *c, task_t *t)
{
	t->next = NULL;
	if (c->task_tail)
		c->task_tail->next = t;
	else
		c->task = t;
	c->task_tail = t;
	c->inflight++;
	if (send_task(c, t) != 0) {
		conn_fail(c, PQerrorMessage(c->pg));
		return;
	}
	set_poll(c, UV_READABLE | UV_WRITABLE);
}

/* Returns the connection that runs ordered tasks: the first one up, or NULL. */
static conn_t *ordered_conn(pg_pool_t *p)
{
	for (uint32_t i = 0; i < p->size; i++) {
		if (p->conns[i].state == CONN_UP)
			return &p->conns[i];
	}
	return NULL;
}

/* Returns an up connection with nothing in flight, or NULL. */
static conn_t *idle_conn(pg_pool_t *p)
{
	for (uint32_t i = p->size; i-- > 0;) {
		if (p->conns[i].state == CONN_UP && p->conns[i].inflight == 0)
			return &p->conns[i];
	}
	return NULL;
}

/*
 * Starts the waiting tasks that can start, in FIFO order. Ordered tasks
 * all go to one connection, pipelined; once one cannot start, no later
 * ordered task starts either, so their order holds.
 */
static void dispatch(pg_pool_t *p)
{
	task_t **link = &p->head;
	task_t *prev = NULL;
	int ordered_blocked = 0;

	while (*link) {
		task_t *t = *link;
		conn_t *c;

		if (t->ordered) {
			c = ordered_blocked ? NULL : ordered_conn(p);
			if (c && c->inflight >= MAX_PIPELINED)
				c = NULL;
			if (c && c->inflight && c->task->ordered == 0)
				c = NULL;
			if (!c)
				ordered_blocked = 1;
		} else {
			c = idle_conn(p);
		}
		if (!c) {
			prev = t;
			link = &t->next;
			continue;
		}
		*link = t->next;
		if (p->tail == t)
			p->tail = prev;
		p->waiting--;
		conn_start_task(c, t);
		if (c->state != CONN_UP) {
			/* The send failed the connection and maybe every waiting task: restart. */
			link = &p->head;
			prev = NULL;
			ordered_blocked = 0;
		}
	}
}

static void listen_done(void *ctx, int rc, PGresult *const *results, int count, const char *err)
{
	if (rc != 0)
		log_warn("store", "LISTEN failed: %s; long-poll claims fall back to polling", err);
}

static void settings_done(void *ctx, int rc, PGresult *const *results, int count,
			  const char *err)
{
	pg_pool_t *p = ctx;

	if (rc != 0)
		log_warn("store", "setting the statement timeout of a connection to the database at "
				  "%s failed: %s; its statements run without one",
			 p->host, err);
}

static void conn_ready(conn_t *c)
{
	pg_pool_t *p = c->pool;

	uv_timer_stop(&c->timer);
	c->state = CONN_UP;
	c->backoff_ms = 0;
	PQsetnonblocking(c->pg, 1);
	if (!PQenterPipelineMode(c->pg)) {
		conn_fail(c, PQerrorMessage(c->pg));
		return;
	}
	set_poll(c, UV_READABLE);
	if (p->outage && !c->listener) {
		p->outage = 0;
		log_info("store", "database at %s is reachable again", p->host);
	}
	if (c->listener) {
		task_t *t = xcalloc(1, sizeof(*t));

		t->count = 1;
		t->plain = 1;
		t->stmts[0].sql = p->listen_sql;
		t->cb = listen_done;
		conn_start_task(c, t);
		return;
	}
	if (p->settings_sql[0]) {
		/* Sent ahead of any task, so every task on c runs under the setting. */
		task_t *t = xcalloc(1, sizeof(*t));

		t->count = 1;
		t->plain = 1;
		t->stmts[0].sql = p->settings_sql;
		t->cb = settings_done;
		t->ctx = p;
		conn_start_task(c, t);
		if (c->state != CONN_UP)
			return;
	}
	dispatch(p);
}

/* Fills t->err from the failed result r, naming the flag when the statement timeout hit. */
static void task_error(const pg_pool_t *p, task_t *t, const PGresult *r)
{
	const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);

	if (state && strcmp(state, SQLSTATE_QUERY_CANCELED) == 0 && p->statement_timeout_ms > 0) {
		snprintf(t->err, sizeof(t->err),
			 "the database at %s did not finish the request within "
			 "--pg-statement-timeout (%lld ms), so nothing of it was saved; retry "
			 "after the Retry-After delay",
			 p->host, (long long)p->statement_timeout_ms);
		return;
	}
	copy_message(t->err, sizeof(t->err), PQresultErrorMessage(r));
}

/* Reads the results that arrived; finishes each task in flight at its sync. */
static void read_results(conn_t *c)
{
	int nulls = 0;

	while (c->state == CONN_UP && c->task && !PQisBusy(c->pg)) {
		task_t *t = c->task;
		PGresult *r = PQgetResult(c->pg);
		ExecStatusType st;

		if (r == NULL) {
			if (++nulls > 1)
				break;
			continue;
		}
		nulls = 0;
		st = PQresultStatus(r);
		if (st != PGRES_PIPELINE_SYNC && t->nseen++ < t->nprepares) {
			/* The result of a prepare: a failed one fails the task, as its statement would. */
			if (st != PGRES_COMMAND_OK)
				c->prepared[t->prepares[t->nseen - 1]] = 0;
			if (st == PGRES_FATAL_ERROR && !t->failed) {
				t->failed = 1;
				task_error(c->pool, t, r);
			}
			PQclear(r);
			continue;
		}
		if (st == PGRES_PIPELINE_SYNC) {
			PQclear(r);
			c->task = t->next;
			if (!c->task)
				c->task_tail = NULL;
			c->inflight--;
			finish_task(t, t->failed ? INFERQ_EIO : 0, t->err);
			continue;
		}
		if (st == PGRES_FATAL_ERROR && !t->failed) {
			t->failed = 1;
			task_error(c->pool, t, r);
		}
		if ((st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) && t->nresults < t->count) {
			t->results[t->nresults++] = r;
			continue;
		}
		PQclear(r);
	}
}

/* Returns 1 when pid is the backend of one of p's task connections. */
static int own_backend(const pg_pool_t *p, int pid)
{
	for (uint32_t i = 0; i < p->size; i++) {
		if (p->conns[i].state == CONN_UP && PQbackendPID(p->conns[i].pg) == pid)
			return 1;
	}
	return 0;
}

/* Forgets the echoes older than ECHO_TTL_MS (their hint failed, or the listener was down). */
static void expire_echoes(pg_pool_t *p)
{
	uint64_t now = uv_now(p->loop);
	uint32_t kept = 0;

	for (uint32_t i = 0; i < p->nechoes; i++) {
		if (now - p->echoes[i].sent_ms > ECHO_TTL_MS)
			free(p->echoes[i].payload);
		else
			p->echoes[kept++] = p->echoes[i];
	}
	p->nechoes = kept;
}

/* Returns 1 and removes the echo when n is the notification of a hint this pool sent. */
static int take_echo(pg_pool_t *p, const PGnotify *n)
{
	if (!p->nechoes || strcmp(n->relname, p->channel) != 0 || !own_backend(p, n->be_pid))
		return 0;
	for (uint32_t i = 0; i < p->nechoes; i++) {
		if (strcmp(p->echoes[i].payload, n->extra) == 0) {
			free(p->echoes[i].payload);
			p->echoes[i] = p->echoes[--p->nechoes];
			return 1;
		}
	}
	return 0;
}

static void drain_notifies(conn_t *c)
{
	PGnotify *n;

	while ((n = PQnotifies(c->pg)) != NULL) {
		if (c->pool->notify && !take_echo(c->pool, n))
			c->pool->notify(c->pool->ctx, n->relname, n->extra);
		PQfreemem(n);
	}
}

static void on_connecting(conn_t *c)
{
	switch (PQconnectPoll(c->pg)) {
	case PGRES_POLLING_FAILED:
		conn_fail(c, PQerrorMessage(c->pg));
		break;
	case PGRES_POLLING_READING:
		if (set_poll(c, UV_READABLE) != 0)
			conn_fail(c, "the connection lost its socket");
		break;
	case PGRES_POLLING_WRITING:
		if (set_poll(c, UV_WRITABLE) != 0)
			conn_fail(c, "the connection lost its socket");
		break;
	case PGRES_POLLING_OK:
		conn_ready(c);
		break;
	default:
		break;
	}
}

static void on_poll(uv_poll_t *handle, int status, int events)
{
	conn_t *c = handle->data;
	int rc;

	if (c->state == CONN_CONNECTING) {
		on_connecting(c);
		return;
	}
	if (status < 0) {
		conn_fail(c, uv_strerror(status));
		return;
	}
	if (events & UV_WRITABLE) {
		rc = PQflush(c->pg);
		if (rc < 0) {
			conn_fail(c, PQerrorMessage(c->pg));
			return;
		}
		if (rc == 0)
			set_poll(c, UV_READABLE);
	}
	if (events & UV_READABLE) {
		if (!PQconsumeInput(c->pg)) {
			conn_fail(c, PQerrorMessage(c->pg));
			return;
		}
		drain_notifies(c);
		read_results(c);
		if (c->state == CONN_UP && !c->listener && c->pool->head)
			dispatch(c->pool);
	}
}

/* Reads host and port from the connection string for messages: "host:port" or "socket DIR". */
static int describe_host(pg_pool_t *p, char *err, size_t errlen)
{
	char *perr = NULL;
	PQconninfoOption *opts = PQconninfoParse(p->conninfo, &perr);
	const char *host = NULL, *port = NULL;

	if (opts == NULL) {
		copy_message(err, errlen, perr ? perr : "cannot parse the connection string");
		PQfreemem(perr);
		return INFERQ_EINVAL;
	}
	for (PQconninfoOption *o = opts; o->keyword; o++) {
		if (strcmp(o->keyword, "host") == 0 && o->val && *o->val)
			host = o->val;
		else if (strcmp(o->keyword, "hostaddr") == 0 && o->val && *o->val && !host)
			host = o->val;
		else if (strcmp(o->keyword, "port") == 0 && o->val && *o->val)
			port = o->val;
	}
	if (host && host[0] == '/')
		snprintf(p->host, sizeof(p->host), "socket %s (port %s)", host,
			 port ? port : "5432");
	else
		snprintf(p->host, sizeof(p->host), "%s:%s", host ? host : "localhost",
			 port ? port : "5432");
	PQconninfoFree(opts);
	return 0;
}

int pg_pool_open(uv_loop_t *loop, const pg_pool_config_t *config, pg_pool_t **out, char *err,
		 size_t errlen)
{
	pg_pool_t *p = xcalloc(1, sizeof(*p));

	p->loop = loop;
	p->conninfo = xstrdup(config->conninfo);
	if (describe_host(p, err, errlen) != 0) {
		free(p->conninfo);
		free(p);
		return INFERQ_EINVAL;
	}
	p->notify = config->notify;
	p->ctx = config->ctx;
	p->size = config->size ? config->size : 1;
	p->total = p->size + (config->listen ? 1 : 0);
	p->max_waiting = config->max_waiting;
	p->connect_timeout_ms =
		config->connect_timeout_ms > 0 ? config->connect_timeout_ms : CONNECT_TIMEOUT_MS;
	p->statement_timeout_ms = config->statement_timeout_ms;
	if (config->statement_timeout_ms > 0)
		snprintf(p->settings_sql, sizeof(p->settings_sql), "SET statement_timeout = %lld",
			 (long long)config->statement_timeout_ms);
	if (config->listen)
		snprintf(p->listen_sql, sizeof(p->listen_sql), "LISTEN %s", config->listen);
	snprintf(p->channel, sizeof(p->channel), "%s", config->listen ? config->listen : "");
	uv_timer_init(loop, &p->hint_timer);
	p->hint_timer.data = p;
	p->handles++;
	p->conns = xcalloc(p->total, sizeof(conn_t));
	for (uint32_t i = 0; i < p->total; i++) {
		conn_t *c = &p->conns[i];

		c->pool = p;
		c->fd = -1;
		c->listener = i >= p->size;
		uv_timer_init(loop, &c->timer);
		c->timer.data = c;
		p->handles++;
		conn_connect(c);
	}
	*out = p;
	return 0;
}

/* Copies the statements and their parameter values into a new task. */
static task_t *task_new(const pg_stmt_t *stmts, int count, pg_task_cb cb, void *ctx)
{
	task_t *t = xcalloc(1, sizeof(*t));
	size_t total = 0;
	char *at;

	for (int i = 0; i < count; i++) {
		for (int j = 0; j < stmts[i].nparams; j++) {
			if (stmts[i].values[j])
				total += (size_t)stmts[i].lengths[j] + 1;
		}
	}
	t->params = at = xmalloc(total ? total : 1);
	t->count = count;
	t->cb = cb;
	t->ctx = ctx;
	for (int i = 0; i < count; i++) {
		t->stmts[i] = stmts[i];
		for (int j = 0; j < stmts[i].nparams; j++) {
			const char *v = stmts[i].values[j];

			if (!v)
				continue;
			memcpy(at, v, (size_t)stmts[i].lengths[j]);
			at[stmts[i].lengths[j]] = '\0';
			t->stmts[i].values[j] = at;
			at += stmts[i].lengths[j] + 1;
		}
	}
	return t;
}

void pg_pool_exec(pg_pool_t *p, const pg_stmt_t *stmts, int count, int flags, pg_task_cb cb,
		  void *ctx)
{
	task_t *t = task_new(stmts, count, cb, ctx);
	char msg[640];

	if (p->closing) {
		finish_task(t, INFERQ_EBUSY, "the server is stopping");
		return;
	}
	if (!pool_reachable(p)) {
		unreachable_message(p, msg, sizeof(msg));
		finish_task(t, INFERQ_EBUSY, msg);
		return;
	}
	if ((flags & PG_TASK_ORDERED) && p->outstanding >= p->max_waiting) {
		snprintf(msg, sizeof(msg),
			 "more changes wait for the database than the server accepts "
			 "(--max-pending-changes, %u); retry after the Retry-After delay",
			 p->max_waiting);
		finish_task(t, INFERQ_ELIMIT, msg);
		return;
	}
	if (!(flags & PG_TASK_BACKGROUND)) {
		t->counted = p;
		p->outstanding++;
	}
	t->ordered = (flags & PG_TASK_ORDERED) != 0;
	if (p->tail)
		p->tail->next = t;
	else
		p->head = t;
	p->tail = t;
	p->waiting++;
	dispatch(p);
}

static void hint_done(void *ctx, int rc, PGresult *const *results, int count, const char *err)
{
	if (rc != 0)
		log_debug("store", "a NOTIFY hint was not sent: %s; other nodes find the job by "
				   "polling",
			  err);
}

/* Sends one NOTIFY per gathered payload, PG_TASK_MAX_STMTS to a task. */
static void on_hint_timer(uv_timer_t *timer)
{
	static const char sql[] = "SELECT pg_notify($1, $2)";
	pg_pool_t *p = timer->data;
	pg_stmt_t st[PG_TASK_MAX_STMTS];
	uint32_t i = 0;

	while (i < p->nhints) {
		int n = 0;

		memset(st, 0, sizeof(st));
		for (; i < p->nhints && n < PG_TASK_MAX_STMTS; i++, n++) {
			st[n].sql = sql;
			st[n].nparams = 2;
			st[n].values[0] = p->channel;
			st[n].lengths[0] = (int)strlen(p->channel);
			st[n].values[1] = p->hints[i];
			st[n].lengths[1] = (int)strlen(p->hints[i]);
		}
		pg_pool_exec(p, st, n, PG_TASK_BACKGROUND, hint_done, NULL); /* copies the values */
	}
	expire_echoes(p);
	if (!p->echoes)
		p->echoes = xmalloc(ECHO_MAX * sizeof(*p->echoes));
	for (i = 0; i < p->nhints; i++) {
		if (p->nechoes < ECHO_MAX) {
			p->echoes[p->nechoes].payload = p->hints[i];
			p->echoes[p->nechoes++].sent_ms = uv_now(p->loop);
		} else {
			free(p->hints[i]);
		}
	}
	p->nhints = 0;
}

void pg_pool_hint(pg_pool_t *p, const char *payload)
{
	if (p->closing || !p->channel[0])
		return;
	for (uint32_t i = 0; i < p->nhints; i++) {
		if (strcmp(p->hints[i], payload) == 0)
			return;
	}
	if (p->nhints == p->hints_cap) {
		p->hints_cap = p->hints_cap ? p->hints_cap * 2 : 8;
		p->hints = xrealloc(p->hints, p->hints_cap * sizeof(*p->hints));
	}
	p->hints[p->nhints++] = xstrdup(payload);
	if (p->nhints == 1)
		uv_timer_start(&p->hint_timer, on_hint_timer, HINT_DELAY_MS, 0);
}

void pg_pool_close(pg_pool_t *p)
{
	if (!p)
		return;
	p->closing = 1;
	uv_timer_stop(&p->hint_timer);
	uv_close((uv_handle_t *)&p->hint_timer, on_handle_closed);
	fail_waiting(p, INFERQ_EIO, "the server is stopping");
	for (uint32_t i = 0; i < p->total; i++) {
		conn_t *c = &p->conns[i];

		fail_inflight(c, INFERQ_EIO, "the server is stopping");
		conn_drop(c);
		c->state = CONN_DOWN;
		uv_timer_stop(&c->timer);
		c->timer.data = p;
		uv_close((uv_handle_t *)&c->timer, on_handle_closed);
	}
}

PGconn *pg_connect_blocking(const char *conninfo, int64_t connect_timeout_s, char *err,
			    size_t errlen)
{
	/* A connect_timeout in conninfo, expanded after this default, overrides it. */
	const char *const keys[] = {"connect_timeout", "dbname", NULL};
	char timeout[24];
	const char *const values[] = {timeout, conninfo, NULL};
	PGconn *pg;

	snprintf(timeout, sizeof(timeout), "%lld", (long long)connect_timeout_s);
	pg = PQconnectdbParams(keys, values, 1);

	if (pg == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	if (PQstatus(pg) != CONNECTION_OK) {
		copy_message(err, errlen, PQerrorMessage(pg));
		PQfinish(pg);
		return NULL;
	}
	return pg;
}
