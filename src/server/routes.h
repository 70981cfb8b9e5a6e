/*
 * The route table and the request handlers. Every handler is named
 * handle_* and responds to its request exactly once, at once or after a commit.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef INFERQ_ROUTES_H
#define INFERQ_ROUTES_H

#include "http.h"
#include "server.h"

/* The http_handler_cb of the server: finds the route and calls its handler. */
void routes_dispatch(void *ctx, http_request_t *req);

/*
 * Returns the path of the route table entry that req's path matches,
 * whatever the method, or "other". The result is a static string, and a
 * prefix route's path ends in '/'. Metrics label requests with it, never
 * with the raw path.
 */
const char *routes_pattern(const http_request_t *req);

/*
 * Finds the job with id for a change through a model's route. When there is
 * no job to change, it sends the response itself and returns NULL: 404 for an
 * unknown job, another model's, or a model the request's key does not cover,
 * and 409 for a finished one.
 */
job_t *find_job_for_change(server_t *s, http_request_t *req, const iq_id_t *id,
			   const buf_t *model);

void handle_submit(server_t *s, http_request_t *req);
void handle_status(server_t *s, http_request_t *req);
void handle_cancel(server_t *s, http_request_t *req);
void handle_metrics(server_t *s, http_request_t *req);
void handle_clear(server_t *s, http_request_t *req);

void handle_claim(server_t *s, http_request_t *req);
void handle_heartbeat(server_t *s, http_request_t *req);
void handle_complete(server_t *s, http_request_t *req);
void handle_fail(server_t *s, http_request_t *req);
void handle_release(server_t *s, http_request_t *req);

/* handlers_batch.c: several jobs per request, an inferq extension. */
void handle_submit_batch(server_t *s, http_request_t *req);
void handle_complete_batch(server_t *s, http_request_t *req);

/* handlers_sprocket.c: the routes of Together's Sprocket worker SDK. */
void handle_sprocket_retrieve(server_t *s, http_request_t *req);
void handle_sprocket_status(server_t *s, http_request_t *req);

/* handlers_storage.c: output files of Sprocket workers (storage.h). */
void handle_storage_upload_request(server_t *s, http_request_t *req);
void handle_storage_upload(server_t *s, http_request_t *req);
void handle_storage_get(server_t *s, http_request_t *req);

/* handlers_admin.c: API keys, admin role only. */
void handle_keys_create(server_t *s, http_request_t *req);
void handle_keys_list(server_t *s, http_request_t *req);
void handle_keys_revoke(server_t *s, http_request_t *req);
void handle_key_delete(server_t *s, http_request_t *req);

/* handlers_views.c: operator views of jobs, workers and queues, admin role only. */
void handle_admin_jobs(server_t *s, http_request_t *req);
void handle_admin_job(server_t *s, http_request_t *req);
void handle_admin_workers(server_t *s, http_request_t *req);
void handle_admin_queues(server_t *s, http_request_t *req);

/* handlers_dashboard.c: the web dashboard's files, no key needed. */
void handle_dashboard_index(server_t *s, http_request_t *req);
void handle_dashboard_file(server_t *s, http_request_t *req);

void handle_healthz(server_t *s, http_request_t *req);
void handle_readyz(server_t *s, http_request_t *req);

#endif
