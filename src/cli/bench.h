/*
 * `inferq bench`, a load generator for inferq and for any HTTP/1.1 server:
 * the declarations its files share. One process, one libuv loop thread,
 * many keep-alive connections; every structure here belongs to that thread.
 * A scenario supplies the next request of a connection and consumes each
 * response; the engine in bench_load.c keeps up to `pipeline` requests in
 * flight per connection and times each one.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef INFERQ_BENCH_H
#define INFERQ_BENCH_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "buf.h"

/* --- Histogram (bench_hist.c) -------------------------------------------- */

/*
 * Log-bucketed latency histogram: values below 64 ns are exact, each power
 * of two above is split into 64 buckets, so a quantile is within 1.6 % of
 * the true value. 3,776 buckets cover every uint64_t.
 */
#define BENCH_HIST_SUB     64
#define BENCH_HIST_BUCKETS (BENCH_HIST_SUB + 58 * BENCH_HIST_SUB)

typedef struct {
	uint64_t counts[BENCH_HIST_BUCKETS];
	uint64_t total; /* values recorded */
	uint64_t max;   /* largest value recorded, ns */
	double sum;     /* of all values, ns */
} bench_hist_t;

/* Adds one value (ns) to h. */
void bench_hist_record(bench_hist_t *h, uint64_t ns);

/*
 * Returns the value (ns) at quantile q (0 to 1) of h: the highest value of
 * the bucket holding it, never above h->max; 0 when h is empty.
 */
uint64_t bench_hist_quantile(const bench_hist_t *h, double q);

/* Returns the bucket index of a value (ns); exposed for the unit test. */
unsigned bench_hist_bucket(uint64_t ns);

/* --- Options ------------------------------------------------------------- */

typedef struct {
	const char *scenario;  /* submit, status, claim-complete, lifecycle, handoff, get, post */
	const char *url;       /* get, post: the target URL; else NULL */
	const char **servers;  /* --server base URLs, in the order given; NULL when none */
	unsigned n_servers;
	const char **worker_servers; /* --worker-server base URLs; NULL when none */
	unsigned n_worker_servers;
	const char *key;       /* API key, or NULL to send none */
	const char *model;     /* --model */
	const char *payload;   /* --payload JSON of each submit */
	const char *body;      /* post: --body; NULL means a submit body */
	unsigned connections;  /* -c: load connections (submitters in lifecycle) */
	unsigned pipeline;     /* -P: requests in flight per connection */
	double duration;       /* -d seconds; 0 with a count */
	uint64_t count;        /* -n requests (jobs for job scenarios); 0: by duration */
	unsigned workers;      /* lifecycle, handoff: worker connections */
	unsigned idle_workers; /* lifecycle: connections long-polling a model without jobs */
	uint64_t backlog;      /* lifecycle: pending jobs at most before submitters wait */
	uint64_t prefill;      /* claim-complete: jobs submitted before the measured phase */
	int refill;            /* claim-complete: submit one job after each complete */
	double wait;           /* long-poll wait of worker claims, seconds */
	unsigned batch;        /* --batch: jobs per submit_batch, max_jobs per claim; 1: none */
	int json;              /* --json */
} bench_opts_t;

/* --- Load engine (bench_load.c) ------------------------------------------ */

typedef struct bench_run bench_run_t;
typedef struct bench_conn bench_conn_t;

/* What a connection does; a scenario gives each connection one role. */
enum { ROLE_LOAD, ROLE_SUBMIT, ROLE_WORKER, ROLE_IDLE };

/* Request kinds, recorded per request in flight. */
enum { KIND_PLAIN, KIND_SUBMIT, KIND_CLAIM, KIND_COMPLETE, KIND_PARK };

#define BENCH_ID_MAX 64 /* request and claim ids are 36 characters */

struct bench_conn {
	uv_tcp_t tcp;
	bench_run_t *run;
	const struct bench_target *target; /* the server this connection sends to */
	unsigned index;
	int role;
	int open;   /* connected and not closed */
	int paused; /* a submitter waiting for the backlog to shrink */
	char *rbuf; /* received bytes not yet parsed */
	size_t rlen, rcap;
	uint64_t *sent_ns; /* ring of send times, one per request in flight */
	int *kinds;        /* ring of request kinds, parallel to sent_ns */
	unsigned head, inflight;
	/* worker state: the job it holds */
	int has_job;
	char job_id[BENCH_ID_MAX + 1];
	char claim_id[BENCH_ID_MAX + 1];
	int resubmit; /* claim-complete --refill: a submit is due */
	/* --batch: the jobs of the last claim, completed with one complete_batch */
	struct bench_job *held;
	unsigned held_count;
};

/* A claimed job that a worker still has to complete. */
struct bench_job {
	char job_id[BENCH_ID_MAX + 1];
	char claim_id[BENCH_ID_MAX + 1];
};

/* A scenario: how each connection chooses its next request and what it does with a response. */
typedef struct {
	/*
	 * Appends the connection's next request to out. Returns its KIND_*, or
	 * -1 when the connection has nothing to send now.
	 */
	int (*next)(bench_conn_t *c, buf_t *out);
	/*
	 * Consumes one response to a request of the given kind. body is not
	 * NUL-terminated. Returns 0, or a negative INFERQ_E* to stop the run.
	 */
	int (*done)(bench_conn_t *c, int kind, int status, const char *body, size_t len,
	            uint64_t latency_ns);
} bench_scenario_t;

/* An address and the Host header for it, from an http:// URL. */
typedef struct bench_target {
	char host[256]; /* as written in the URL, for the Host header */
	char port[8];
	char path[2048]; /* path and query; "/" when the URL has none */
	char host_line[272]; /* "Host: HOST\r\n", inserted into every request to this server */
	size_t host_line_len;
	struct sockaddr_storage addr;
} bench_target_t;

/*
 * The servers of a run. Connections of each group are spread over its
 * servers round-robin: the i-th connection of the group goes to server
 * i mod n.
 */
typedef struct {
	bench_target_t *load; /* load and submitter connections: --server, or get's URL */
	unsigned n_load;
	bench_target_t *workers; /* worker connections: --worker-server, or load when none */
	unsigned n_workers;
} bench_targets_t;

struct bench_run {
	uv_loop_t loop;
	const bench_opts_t *opts;
	const bench_scenario_t *scen;
	const bench_targets_t *targets;
	const bench_target_t *target; /* the first load server: set-up calls, paths */
	bench_conn_t *conns;
	unsigned n_conns;
	unsigned connecting;      /* connections not yet established */
	uint64_t limit;           /* units that end the run; 0: by duration */
	int stopping;             /* no new work; the run ends when nothing is in flight */
	int failed;               /* a negative INFERQ_E* that ended the run, or 0 */
	char error[512];          /* why, for the report */
	uint64_t t_start, t_stop; /* ns on uv_hrtime(); t_stop 0 while measuring */
	uv_timer_t timer;
	int timer_on;
	uint64_t in_flight; /* requests written and not answered, over the open connections */
	uint64_t requests;  /* responses received */
	uint64_t units;     /* the scenario's unit (jobs, requests, hand-offs) */
	uint64_t units_at_stop;
	uint64_t requests_at_stop;
	uint64_t errors; /* unexpected statuses and broken connections */
	uint64_t statuses[600];
	bench_hist_t *latency;      /* per request */
	bench_hist_t *unit_latency; /* handoff: submit ack to claim response */
	bench_hist_t *e2e_latency;  /* handoff: submit sent to claim response */
	/* job accounting shared by the job scenarios */
	uint64_t issued;    /* submits sent */
	uint64_t submitted; /* submits acknowledged with 200 */
	uint64_t claimed;
	uint64_t completed;
	/* handoff: the one job in flight */
	char handoff_id[BENCH_ID_MAX + 1];
	char handoff_claimed[BENCH_ID_MAX + 1]; /* the job a worker claimed before the ack */
	uint64_t handoff_sent_ns, handoff_ack_ns, handoff_claim_ns;
	int handoff_busy;
	uint64_t claims_sent;
	uint64_t paused; /* submitters waiting for the backlog to shrink */
	/* request templates, built once */
	buf_t submit_req;
	buf_t claim_req;
	buf_t park_req;  /* idle workers' claim on a model without jobs */
	buf_t plain_req; /* status, get, post */
	buf_t head;      /* "Authorization: ...\r\n", or empty without a key */
	buf_t scratch;   /* the request a scenario is writing, before its Host line */
};

/*
 * Parses an http:// URL and resolves its host. Returns 0, or INFERQ_EINVAL
 * with why in err (err_len bytes) for a URL that is not http://HOST[:PORT][/PATH]
 * or a host that does not resolve.
 */
int bench_target_parse(const char *url, bench_target_t *t, char *err, size_t err_len);

/*
 * Appends the request req (len bytes, without a Host header) to out with
 * t's Host line after its request line. Requests are built without Host so
 * one template serves connections to different servers.
 */
void bench_put_request_for(buf_t *out, const bench_target_t *t, const char *req, size_t len);

/*
 * Runs one load phase: opens n_conns connections, gives each the role
 * roles[i] and a server of run->targets (ROLE_WORKER and ROLE_IDLE from the
 * worker servers, the others from the load servers, round-robin), sends
 * requests as the scenario supplies them until the duration or run->limit
 * units, then drains. run must be zeroed except for opts, scen, targets,
 * target and limit. Returns 0 or a negative INFERQ_E* (with
 * run->error set); run keeps the counts and histograms until
 * bench_run_free().
 */
int bench_run(bench_run_t *run, const int *roles, unsigned n_conns, double duration);

/* Frees what bench_run() allocated. Accepts a run that never started. */
void bench_run_free(bench_run_t *run);

/* Asks connection c for requests again, after its scenario state changed. */
void bench_conn_pump(bench_conn_t *c);

/*
 * While stopping: closes the connections that wait only for long-polls and
 * ends the run when nothing is in flight. For a scenario whose state
 * decides that (run->handoff_busy).
 */
void bench_run_check(bench_run_t *run);

/* Stops the measured phase now: no new work, drain, then end. */
void bench_run_stop(bench_run_t *run);

/* Counts one unit of the scenario; ends the phase when the limit is reached. */
void bench_run_unit(bench_run_t *run);

/* Records one unexpected response; the run goes on. */
void bench_run_error(bench_run_t *run, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* --- Scenarios (bench_scen.c) -------------------------------------------- */

/*
 * Runs the scenario named in opts against targets and prints the report.
 * Returns the process exit code: 0, 1 when any request failed or the run
 * broke off, 3 when a server could not be reached.
 */
int bench_scenario_main(const bench_opts_t *opts, const bench_targets_t *targets);

/*
 * Finds the string value of a top-level member "name" in the JSON object
 * body (len bytes) and copies it to out (cap bytes with the NUL). Returns
 * 0, or INFERQ_ENOTFOUND when absent, not a plain string, or too long.
 */
int bench_json_string(const char *body, size_t len, const char *name, char *out, size_t cap);

/*
 * Calls fn(body of the element, its length, ctx) for each object element of
 * the top-level array member "name" of the JSON object body (len bytes),
 * stopping at the first nonzero return. Returns the number of elements
 * visited, or INFERQ_ENOTFOUND when the member is absent or not an array.
 */
int bench_json_each(const char *body, size_t len, const char *name,
                    int (*fn)(const char *elem, size_t elem_len, void *ctx), void *ctx);

/* --- Report (bench.c) ---------------------------------------------------- */

/* Prints the figures of a finished run as text or, with opts->json, one JSON object. */
void bench_report(const bench_opts_t *opts, const bench_run_t *run, const char *unit_name);

#endif
