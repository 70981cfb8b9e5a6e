/*
 * The beanstalkd and PostgreSQL side of bench/run.sh: the job lifecycle
 * that `inferq bench lifecycle` drives (put a job, a worker reserves it,
 * then deletes or completes it), from --producers and --workers threads,
 * each with its own connection and one request in flight, as inferq
 * bench's connections have. Producers wait while more than --backlog jobs
 * are outstanding. Prints one JSON object with the jobs completed in the
 * measured seconds. Connects only to 127.0.0.1 or a Unix socket.
 *
 *   peerbench beanstalk PORT [options]
 *   peerbench postgres CONNINFO [options]
 *
 * SPDX-License-Identifier: MIT
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static struct {
	const char *peer, *target;
	int producers, workers;
	long backlog;
	double seconds;
} opt = {NULL, NULL, 50, 50, 1000, 5};

static atomic_long issued, completed, failures;
static atomic_int stopping;

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void die(const char *what, const char *why)
{
	fprintf(stderr, "peerbench %s: %s: %s\n", opt.peer, what, why);
	exit(1);
}

/* 1 when a producer may add a job now; waits briefly while the backlog is full. */
static int may_produce(void)
{
	while (!atomic_load(&stopping)) {
		if (atomic_load(&issued) - atomic_load(&completed) < opt.backlog) {
			atomic_fetch_add(&issued, 1);
			return 1;
		}
		usleep(200);
	}
	return 0;
}

/* --- beanstalkd -------------------------------------------------------- */

typedef struct {
	int fd;
	char buf[65536];
	size_t len;
} bconn_t;

static void bs_connect(bconn_t *c)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(atoi(opt.target))};
	int one = 1;

	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	c->len = 0;
	c->fd = socket(AF_INET, SOCK_STREAM, 0);
	if (c->fd < 0 || connect(c->fd, (struct sockaddr *)&a, sizeof(a)) != 0)
		die("connect", strerror(errno));
	setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

static void bs_send(bconn_t *c, const char *s, size_t n)
{
	while (n > 0) {
		ssize_t w = write(c->fd, s, n);

		if (w <= 0)
			die("write", strerror(errno));
		s += w;
		n -= (size_t)w;
	}
}

/* Reads one reply line (and the body after RESERVED) into line. */
static void bs_reply(bconn_t *c, char *line, size_t cap)
{
	char *eol;
	size_t need = 0;

	for (;;) {
		eol = memmem(c->buf, c->len, "\r\n", 2);
		if (eol) {
			size_t ll = (size_t)(eol - c->buf);
			unsigned long id, bytes;

			if (sscanf(c->buf, "RESERVED %lu %lu", &id, &bytes) == 2)
				need = ll + 2 + bytes + 2;
			else
				need = ll + 2;
			if (c->len >= need) {
				snprintf(line, cap, "%.*s", (int)ll, c->buf);
				memmove(c->buf, c->buf + need, c->len - need);
				c->len -= need;
				return;
			}
		}
		ssize_t r = read(c->fd, c->buf + c->len, sizeof(c->buf) - c->len);
		if (r <= 0)
			die("read", r == 0 ? "connection closed" : strerror(errno));
		c->len += (size_t)r;
	}
}

static void *bs_producer(void *arg)
{
	static const char put[] = "put 0 0 60 17\r\n{\"input\":\"bench\"}\r\n";
	bconn_t *c = calloc(1, sizeof(*c));
	char line[256];

	(void)arg;
	bs_connect(c);
	while (may_produce()) {
		bs_send(c, put, sizeof(put) - 1);
		bs_reply(c, line, sizeof(line));
		if (strncmp(line, "INSERTED", 8) != 0)
			die("put", line);
	}
	close(c->fd);
	free(c);
	return NULL;
}

static void *bs_worker(void *arg)
{
	bconn_t *c = calloc(1, sizeof(*c));
	char line[256], cmd[64];
	unsigned long id, bytes;

	(void)arg;
	bs_connect(c);
	while (!atomic_load(&stopping)) {
		bs_send(c, "reserve-with-timeout 1\r\n", 24);
		bs_reply(c, line, sizeof(line));
		if (strncmp(line, "TIMED_OUT", 9) == 0)
			continue;
		if (sscanf(line, "RESERVED %lu %lu", &id, &bytes) != 2)
			die("reserve", line);
		int n = snprintf(cmd, sizeof(cmd), "delete %lu\r\n", id);
		bs_send(c, cmd, (size_t)n);
		bs_reply(c, line, sizeof(line));
		if (strcmp(line, "DELETED") != 0)
			die("delete", line);
		atomic_fetch_add(&completed, 1);
	}
	close(c->fd);
	free(c);
	return NULL;
}

/* --- PostgreSQL ---------------------------------------------------------- */

static PGconn *pg_connect(void)
{
	PGconn *pg = PQconnectdb(opt.target);

	if (PQstatus(pg) != CONNECTION_OK)
		die("connect", PQerrorMessage(pg));
	return pg;
}

static PGresult *pg_exec(PGconn *pg, const char *sql, int n, const char *const *params,
                         ExecStatusType want)
{
	PGresult *r = PQexecParams(pg, sql, n, NULL, params, NULL, NULL, 0);

	if (PQresultStatus(r) != want)
		die(sql, PQerrorMessage(pg));
	return r;
}

static void *pg_producer(void *arg)
{
	PGconn *pg = pg_connect();
	const char *params[] = {"{\"input\":\"bench\"}"};

	(void)arg;
	while (may_produce())
		PQclear(pg_exec(pg, "INSERT INTO jobs (payload) VALUES ($1)", 1, params,
		                PGRES_COMMAND_OK));
	PQfinish(pg);
	return NULL;
}

static void *pg_worker(void *arg)
{
	PGconn *pg = pg_connect();
	const char *claim = "UPDATE jobs SET state = 'running', claimed_at = now() WHERE id = ("
	                    "SELECT id FROM jobs WHERE state = 'pending' ORDER BY id "
	                    "FOR UPDATE SKIP LOCKED LIMIT 1) RETURNING id, payload";
	const char *done = "UPDATE jobs SET state = 'done', outputs = '{\"ok\":true}', "
	                   "done_at = now() WHERE id = $1 AND state = 'running'";

	(void)arg;
	while (!atomic_load(&stopping)) {
		PGresult *r = pg_exec(pg, claim, 0, NULL, PGRES_TUPLES_OK);

		if (PQntuples(r) == 0) {
			PQclear(r);
			usleep(1000); /* a poll, as a SKIP LOCKED worker without LISTEN does */
			continue;
		}
		const char *params[] = {PQgetvalue(r, 0, 0)};
		PGresult *d = pg_exec(pg, done, 1, params, PGRES_COMMAND_OK);

		if (strcmp(PQcmdTuples(d), "1") != 0)
			atomic_fetch_add(&failures, 1);
		PQclear(d);
		PQclear(r);
		atomic_fetch_add(&completed, 1);
	}
	PQfinish(pg);
	return NULL;
}

static void pg_setup(void)
{
	PGconn *pg = pg_connect();
	PGresult *r;

	r = PQexec(pg,
	                "DROP TABLE IF EXISTS jobs; CREATE TABLE jobs (id bigserial PRIMARY KEY, "
	                "state text NOT NULL DEFAULT 'pending', payload jsonb NOT NULL, "
	                "outputs jsonb, created_at timestamptz NOT NULL DEFAULT now(), "
	                "claimed_at timestamptz, done_at timestamptz); "
	                "CREATE INDEX jobs_pending ON jobs (id) WHERE state = 'pending'");
	if (PQresultStatus(r) != PGRES_COMMAND_OK)
		die("create the jobs table", PQerrorMessage(pg));
	PQclear(r);
	PQfinish(pg);
}

int main(int argc, char **argv)
{
	void *(*producer)(void *), *(*worker)(void *);
	pthread_t *threads;
	double t0, t1;
	int n;

	if (argc < 3) {
		fprintf(stderr, "usage: peerbench beanstalk PORT|postgres CONNINFO [--producers N] "
		                "[--workers N] [--backlog N] [--seconds S]\n");
		return 2;
	}
	opt.peer = argv[1];
	opt.target = argv[2];
	for (int i = 3; i + 1 < argc; i += 2) {
		if (strcmp(argv[i], "--producers") == 0)
			opt.producers = atoi(argv[i + 1]);
		else if (strcmp(argv[i], "--workers") == 0)
			opt.workers = atoi(argv[i + 1]);
		else if (strcmp(argv[i], "--backlog") == 0)
			opt.backlog = atol(argv[i + 1]);
		else if (strcmp(argv[i], "--seconds") == 0)
			opt.seconds = atof(argv[i + 1]);
		else
			die("unknown option", argv[i]);
	}
	if (strcmp(opt.peer, "beanstalk") == 0) {
		producer = bs_producer;
		worker = bs_worker;
	} else if (strcmp(opt.peer, "postgres") == 0) {
		pg_setup();
		producer = pg_producer;
		worker = pg_worker;
	} else {
		die("unknown peer", opt.peer);
		return 2;
	}
	n = opt.producers + opt.workers;
	threads = calloc((size_t)n, sizeof(*threads));
	t0 = now_s();
	for (int i = 0; i < n; i++)
		pthread_create(&threads[i], NULL, i < opt.producers ? producer : worker, NULL);
	usleep((useconds_t)(opt.seconds * 1e6));
	long done = atomic_load(&completed);
	t1 = now_s();
	atomic_store(&stopping, 1);
	for (int i = 0; i < n; i++)
		pthread_join(threads[i], NULL);
	printf("{\"peer\":\"%s\",\"jobs\":%ld,\"seconds\":%.4f,\"rate\":%.1f,\"added\":%ld,"
	       "\"producers\":%d,\"workers\":%d,\"failures\":%ld}\n",
	       opt.peer, done, t1 - t0, (double)done / (t1 - t0), atomic_load(&issued),
	       opt.producers, opt.workers, atomic_load(&failures));
	free(threads);
	return 0;
}
