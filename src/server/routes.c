/*
 * Route table and dispatch: exact path match, then method. A known path
 * with another method gets 405 with an Allow header; an unknown path 404.
 *
 * SPDX-License-Identifier: MIT
 */
#include "routes.h"

#include <stdio.h>
#include <string.h>

#include "error.h"
#include "inferq_error.h"
#include "request.h"

typedef struct {
	const char *method;
	const char *path;
	void (*handler)(server_t *s, http_request_t *req);
	int needs_key; /* 0 for the routes that answer without a key */
} route_t;

static const route_t routes[] = {
	{"POST", "/v1/queue/submit", handle_submit, 1},
	{"GET", "/v1/queue/status", handle_status, 1},
	{"POST", "/v1/queue/cancel", handle_cancel, 1},
	{"GET", "/v1/queue/metrics", handle_metrics, 1},
	{"POST", "/v1/queue/clear", handle_clear, 1},
	{"POST", "/v1/queue/claim", handle_claim, 1},
	{"POST", "/v1/queue/heartbeat", handle_heartbeat, 1},
	{"POST", "/v1/queue/complete", handle_complete, 1},
	{"POST", "/v1/queue/fail", handle_fail, 1},
	{"POST", "/v1/queue/release", handle_release, 1},
	{"GET", "/healthz", handle_healthz, 0},
	{"GET", "/readyz", handle_readyz, 0},
};

#define ROUTE_COUNT (sizeof(routes) / sizeof(routes[0]))

int auth_check(server_t *s, http_request_t *req)
{
	return 0;
}

static int path_is(const http_request_t *req, const char *path)
{
	size_t len = strlen(path);

	return req->path_len == len && memcmp(req->path, path, len) == 0;
}

static int method_is(const http_request_t *req, const char *method)
{
	if (strcmp(req->method_name, method) == 0)
		return 1;
	/* HEAD is served wherever GET is; the HTTP layer drops the body. */
	return strcmp(method, "GET") == 0 && strcmp(req->method_name, "HEAD") == 0;
}

static void method_not_allowed(http_request_t *req, const char *allowed)
{
	char header[64];
	buf_t body = BUF_INIT;
	char shown[64];

	snprintf(header, sizeof(header), "Allow: %s\r\n", allowed);
	error_body(&body, 405, "method_not_allowed", NULL, "method %s is not allowed on %s; use %s",
		   req->method_name, excerpt(req->path, req->path_len, shown, sizeof(shown)),
		   allowed);
	http_respond(req, 405, NULL, header, body.data, body.len);
	buf_free(&body);
}

void routes_dispatch(void *ctx, http_request_t *req)
{
	server_t *s = ctx;
	const char *allowed = NULL;
	char shown[64];

	for (size_t i = 0; i < ROUTE_COUNT; i++) {
		const route_t *r = &routes[i];

		if (!path_is(req, r->path))
			continue;
		if (!method_is(req, r->method)) {
			allowed = r->method;
			continue;
		}
		if (r->needs_key && auth_check(s, req) != 0)
			return;
		r->handler(s, req);
		return;
	}
	if (allowed) {
		method_not_allowed(req, allowed);
		return;
	}
	respond_error(req, 404, "not_found", NULL, "no route %s %s; see docs/api.md for the routes",
		      req->method_name, excerpt(req->path, req->path_len, shown, sizeof(shown)));
}
