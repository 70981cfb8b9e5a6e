/*
 * Route table and dispatch: exact path match (or prefix match for the
 * routes that take a name in the path), then method, then the API key and
 * its role. A known path with another method gets 405 with an Allow
 * header, and a shorter prefix route does not take it; an unknown path 404.
 *
 * SPDX-License-Identifier: MIT
 */
#include "routes.h"

#include <stdio.h>
#include <string.h>

#include "auth.h"
#include "error.h"
#include "inferq_error.h"
#include "metrics.h"
#include "observe.h"
#include "pgq.h"
#include "request.h"
#include "suggest.h"

#define CLIENT AUTH_ROLE_CLIENT
#define WORKER AUTH_ROLE_WORKER
#define ADMIN AUTH_ROLE_ADMIN

typedef struct {
	const char *method;
	const char *path; /* exact, or a prefix when it ends in '/' and is not "/" */
	void (*handler)(server_t *s, http_request_t *req);
	unsigned roles; /* AUTH_ROLE_* bits that may use it (admin always may); 0: no key needed */
} route_t;

static const route_t routes[] = {
	{"POST", "/v1/queue/submit", handle_submit, CLIENT},
	{"POST", "/v1/queue/submit_batch", handle_submit_batch, CLIENT},
	{"GET", "/v1/queue/status", handle_status, CLIENT | WORKER},
	{"POST", "/v1/queue/cancel", handle_cancel, CLIENT},
	{"GET", "/v1/queue/metrics", handle_metrics, CLIENT},
	{"POST", "/v1/queue/clear", handle_clear, CLIENT},
	{"POST", "/v1/queue/claim", handle_claim, WORKER},
	{"POST", "/v1/queue/heartbeat", handle_heartbeat, WORKER},
	{"POST", "/v1/queue/complete", handle_complete, WORKER},
	{"POST", "/v1/queue/complete_batch", handle_complete_batch, WORKER},
	{"POST", "/v1/queue/fail", handle_fail, WORKER},
	{"POST", "/v1/queue/release", handle_release, WORKER},
	{"GET", "/internal/v1/queue/retrieve", handle_sprocket_retrieve, WORKER},
	{"POST", "/internal/v1/videos/status", handle_sprocket_status, WORKER},
	/* Longer paths first: a prefix route never takes a path a longer route matched. */
	{"POST", "/v1/storage/upload-request", handle_storage_upload_request, WORKER},
	{"PUT", "/v1/storage/upload/", handle_storage_upload, 0},
	{"GET", "/v1/deployments/storage/", handle_storage_get, CLIENT | WORKER},
	{"GET", "/v1/storage/", handle_storage_get, CLIENT | WORKER},
	{"POST", "/v1/admin/keys", handle_keys_create, ADMIN},
	{"GET", "/v1/admin/keys", handle_keys_list, ADMIN},
	{"POST", "/v1/admin/keys/revoke", handle_keys_revoke, ADMIN},
	{"DELETE", "/v1/admin/keys/", handle_key_delete, ADMIN},
	{"GET", "/v1/admin/jobs", handle_admin_jobs, ADMIN},
	{"GET", "/v1/admin/jobs/", handle_admin_job, ADMIN},
	{"GET", "/v1/admin/workers", handle_admin_workers, ADMIN},
	{"GET", "/v1/admin/queues", handle_admin_queues, ADMIN},
	{"GET", "/healthz", handle_healthz, 0},
	{"GET", "/readyz", handle_readyz, 0},
	{"GET", "/metrics", handle_prometheus, ADMIN},
	{"GET", "/", handle_dashboard_index, 0},
	{"GET", "/ui/", handle_dashboard_file, 0},
};

#define ROUTE_COUNT (sizeof(routes) / sizeof(routes[0]))

static int path_is(const http_request_t *req, const char *path)
{
	size_t len = strlen(path);

	if (len > 1 && path[len - 1] == '/')
		return req->path_len > len && memcmp(req->path, path, len) == 0;
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

const char *routes_pattern(const http_request_t *req)
{
	for (size_t i = 0; i < ROUTE_COUNT; i++) {
		if (path_is(req, routes[i].path))
			return routes[i].path;
	}
	return METRICS_OTHER_ROUTE;
}

/*
 * Returns the route whose exact path is nearest to req's (within two
 * edits, or the same path under /v1), for the hint of a 404, or NULL.
 */
static const route_t *nearest_route(const http_request_t *req)
{
	const char *paths[ROUTE_COUNT];
	size_t index[ROUTE_COUNT];
	char path[64], prefixed[sizeof(path) + 3];
	const char *near;
	size_t n = 0;

	if (req->path_len >= sizeof(path) - 3)
		return NULL;
	memcpy(path, req->path, req->path_len);
	path[req->path_len] = '\0';
	snprintf(prefixed, sizeof(prefixed), "/v1%s", path);
	for (size_t i = 0; i < ROUTE_COUNT; i++) {
		size_t len = strlen(routes[i].path);

		if (len < 2 || routes[i].path[len - 1] == '/')
			continue; /* "/" and the prefix routes take any path below them */
		if (strcmp(prefixed, routes[i].path) == 0)
			return &routes[i];
		index[n] = i;
		paths[n++] = routes[i].path;
	}
	near = suggest_nearest(path, paths, n);
	for (size_t j = 0; near && j < n; j++)
		if (paths[j] == near)
			return &routes[index[j]];
	return NULL;
}

void routes_dispatch(void *ctx, http_request_t *req)
{
	server_t *s = ctx;
	const route_t *near;
	const char *allowed = NULL;
	size_t allowed_len = 0; /* length of the route path that set allowed */
	char shown[64];

	for (size_t i = 0; i < ROUTE_COUNT; i++) {
		const route_t *r = &routes[i];

		if (!path_is(req, r->path) || strlen(r->path) < allowed_len)
			continue;
		if (!method_is(req, r->method)) {
			allowed = r->method;
			allowed_len = strlen(r->path);
			continue;
		}
		if (r->roles && auth_check(s, req, r->roles) != 0)
			return;
		/* With --store postgres the database decides: its handlers replace the queue's. */
		if (s->pg && pgq_route(r->handler)) {
			pgq_route(r->handler)(s, req);
			return;
		}
		r->handler(s, req);
		engine_request_done(s);
		return;
	}
	if (allowed) {
		method_not_allowed(req, allowed);
		return;
	}
	near = nearest_route(req);
	if (near)
		respond_error(req, 404, "not_found", NULL,
			      "no route %s %s; did you mean %s %s? See docs/api.md for the routes",
			      req->method_name,
			      excerpt(req->path, req->path_len, shown, sizeof(shown)), near->method,
			      near->path);
	else
		respond_error(req, 404, "not_found", NULL,
			      "no route %s %s; see docs/api.md for the routes", req->method_name,
			      excerpt(req->path, req->path_len, shown, sizeof(shown)));
}
