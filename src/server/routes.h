/*
 * The route table and the request handlers. Every handler is named
 * handle_* and answers its request exactly once, at once or after a commit.
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
 * Decides whether req may use its route. Returns 0 when allowed; otherwise
 * sends 401/403 and returns INFERQ_EAUTH. This version has no keys yet and
 * allows every request.
 */
int auth_check(server_t *s, http_request_t *req);

/*
 * Finds the job with id for a change through a model's route. Answers 404
 * (unknown, or another model's) or 409 (already finished) itself and
 * returns NULL when there is no job to change.
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

void handle_healthz(server_t *s, http_request_t *req);
void handle_readyz(server_t *s, http_request_t *req);

#endif
