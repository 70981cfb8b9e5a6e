/*
 * Observability glue between the server and the metrics registry
 * (metrics.h): the hooks the engine and the HTTP layer call, the GET
 * /metrics handler, the optional unauthenticated --metrics-listen
 * listener, and the access log. Every hook is one call at its site.
 *
 * Job counters count committed changes only: observe_job_committed() runs
 * from the commit callback, so a change rolled back after a failed commit
 * is never counted. All functions run on the loop thread.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef INFERQ_OBSERVE_H
#define INFERQ_OBSERVE_H

#include <stdint.h>

#include "http.h"
#include "server.h"
#include "store.h"

/*
 * What made a job change, stored in store_op_t.cause because the states
 * before and after do not tell a claim from a late heartbeat that takes a
 * job back, or a lease expiry from a release or a worker's fail.
 */
enum {
	OBSERVE_CAUSE_REQUEST = 0, /* a client or worker request other than a claim */
	OBSERVE_CAUSE_CLAIM = 1,
	OBSERVE_CAUSE_EXPIRY = 2,
	OBSERVE_CAUSE_UNDELIVERED = 3, /* a claim given back: its client left before the response */
};

/* Creates s->observe with its registry, from s->config. Call once at start. */
void observe_open(server_t *s);

/*
 * Starts the --metrics-listen listener when the flag is set, with the
 * main listener's limits, and logs its bound address. Returns 0, or
 * INFERQ_EIO after logging why it could not listen.
 */
int observe_listen(server_t *s, const http_limits_t *limits);

/*
 * Starts accepting on the --metrics-listen listener, if any. Returns 0, or
 * INFERQ_EIO with the cause in err.
 */
int observe_accept(server_t *s, char *err, size_t errlen);

/* Closes the --metrics-listen listener, if any; its connections finish on their own. */
void observe_close_listener(server_t *s);

/* Frees s->observe; accepts a server where observe_open() was not called. */
void observe_free(server_t *s);

/*
 * The http_observer_cb of the main listener: HTTP metrics and the access
 * log. Requests that the HTTP layer rejected count under the route
 * METRICS_UNROUTED_ROUTE.
 */
void observe_http(void *ctx, const struct http_request *req, int status, size_t body_len,
		  uint64_t duration_ns);

/* Counts the committed change op of job: job counters, wait and run histograms. */
void observe_job_committed(server_t *s, const job_t *job, const store_op_t *op);
/*
 * The same for a change that no in-memory job carries (the postgres store):
 * op->rec needs model, id, state and the timestamps the histograms use.
 */
void observe_change_committed(server_t *s, const store_op_t *op);

/*
 * Counts the finished jobs kept in the store, per model and state, for the
 * done, failed and canceled samples of inferq_jobs. Call once after the
 * queue is loaded; a failed read is logged and leaves those samples at 0.
 */
void observe_load_finished(server_t *s);

/* Subtracts the finished jobs that the committed purge op deleted. */
void observe_purge_committed(server_t *s, const store_op_t *op);

/*
 * Records the end of the commit of batch: its size, its latency from
 * handed_ns (uv_hrtime() when it was handed to the store) and its result.
 */
void observe_commit_done(server_t *s, const store_batch_t *batch, uint64_t handed_ns);

/* GET /metrics on the main listener (admin key): the Prometheus exposition. */
void handle_prometheus(server_t *s, http_request_t *req);

#endif
