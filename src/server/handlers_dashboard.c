/*
 * The web dashboard's static routes: GET / sends index.html and GET
 * /ui/NAME sends one file of web/, both from the table compiled into the
 * binary. They need no API key, because the files contain no data: the
 * page prompts for an admin key and calls the API with it. Every response carries
 * a Content-Security-Policy that allows scripts, styles and requests from
 * this origin only, so no inline script runs even if the page were fed
 * hostile text.
 *
 * Caching: every file is sent with "Cache-Control: no-cache" and its ETag,
 * so a browser revalidates on each load and gets 304 while the binary is
 * unchanged. After an upgrade it fetches the new files at once.
 *
 * SPDX-License-Identifier: MIT
 */
#include <stdio.h>
#include <string.h>

#include "dashboard.h"
#include "http.h"
#include "request.h"
#include "routes.h"

#define UI_PREFIX "/ui/"

/* frame-ancestors 'none' and X-Frame-Options keep the page out of other sites' frames. */
#define SECURITY_HEADERS                                                                           \
	"Content-Security-Policy: default-src 'self'; script-src 'self'; style-src 'self'; "       \
	"img-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; "                 \
	"form-action 'self'; frame-ancestors 'none'\r\n"                                           \
	"X-Content-Type-Options: nosniff\r\n"                                                      \
	"X-Frame-Options: DENY\r\n"                                                                \
	"Referrer-Policy: no-referrer\r\n"

const web_asset_t *dashboard_find(const char *name, size_t len)
{
	for (size_t i = 0; i < web_asset_count; i++) {
		const web_asset_t *a = &web_assets[i];

		if (strlen(a->name) == len && memcmp(a->name, name, len) == 0)
			return a;
	}
	return NULL;
}

static int is_space(char c)
{
	return c == ' ' || c == '\t';
}

int dashboard_etag_matches(const char *header, size_t len, const char *etag)
{
	size_t etag_len = strlen(etag);
	size_t i = 0;

	while (i < len) {
		size_t start;

		while (i < len && (is_space(header[i]) || header[i] == ','))
			i++;
		if (i == len)
			break;
		if (header[i] == '*')
			return 1;

		/* Weak comparison: W/"x" matches "x". */
		if (len - i >= 2 && header[i] == 'W' && header[i + 1] == '/')
			i += 2;
		if (i == len || header[i] != '"')
			return 0;
		start = i++;
		while (i < len && header[i] != '"')
			i++;
		if (i == len)
			return 0;
		i++;
		if (i - start == etag_len && memcmp(header + start, etag, etag_len) == 0)
			return 1;
	}
	return 0;
}

static void send_asset(http_request_t *req, const web_asset_t *a)
{
	char headers[640];
	const char *if_none_match;
	size_t len;

	snprintf(headers, sizeof(headers), "ETag: %s\r\nCache-Control: no-cache\r\n%s", a->etag,
	         SECURITY_HEADERS);
	if_none_match = http_request_header(req, "If-None-Match", &len);
	if (if_none_match && dashboard_etag_matches(if_none_match, len, a->etag)) {
		http_respond(req, 304, NULL, headers, NULL, 0);
		return;
	}
	http_respond(req, 200, a->content_type, headers, (const char *)a->data, a->len);
}

void handle_dashboard_index(server_t *s, http_request_t *req)
{
	const web_asset_t *a = dashboard_find("index.html", strlen("index.html"));

	/* scripts/embed_web.py stops with an error when web/index.html is missing. */
	if (!a) {
		respond_error(req, 500, "dashboard_missing", NULL,
		              "this build has no dashboard page; rebuild with web/index.html");
		return;
	}
	send_asset(req, a);
}

void handle_dashboard_file(server_t *s, http_request_t *req)
{
	const char *name = req->path + strlen(UI_PREFIX);
	size_t len = req->path_len - strlen(UI_PREFIX);
	const web_asset_t *a = dashboard_find(name, len);
	char shown[64];

	if (!a) {
		respond_error(req, 404, "not_found", NULL,
		              "dashboard file \"%s\" not found; open / to load the dashboard",
		              excerpt(name, len, shown, sizeof(shown)));
		return;
	}
	send_asset(req, a);
}
