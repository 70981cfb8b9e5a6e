/*
 * The web dashboard's files, compiled into the binary by
 * scripts/embed_web.py from web/ (the generated table lives in
 * BUILD/gen/web_assets.c), and the helpers that serve them at / and
 * /ui/NAME. The table is constant and sorted by name; every entry has a
 * strong ETag derived from its bytes, so a changed file gets a new tag.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef INFERQ_DASHBOARD_H
#define INFERQ_DASHBOARD_H

#include <stddef.h>

/* One file of web/. */
typedef struct {
	const char *name;         /* base name, e.g. "app.js" */
	const char *content_type; /* Content-Type header value */
	const char *etag;         /* strong entity tag with its quotes, e.g. "\"3f2a...\"" */
	const unsigned char *data;
	size_t len; /* bytes */
} web_asset_t;

extern const web_asset_t web_assets[];
extern const size_t web_asset_count;

/*
 * Returns the asset whose name is name[0..len), or NULL when there is none.
 * name is compared byte for byte, so "a%2Ejs" or "../app.js" match nothing.
 * Any thread: the table is constant.
 */
const web_asset_t *dashboard_find(const char *name, size_t len);

/*
 * Returns 1 when the If-None-Match value header[0..len) matches etag under
 * the weak comparison that RFC 9110 section 13.1.2 prescribes for it ("W/"
 * prefixes are ignored, "*" matches any tag), else 0. A malformed list
 * matches nothing, so the client gets the full response.
 */
int dashboard_etag_matches(const char *header, size_t len, const char *etag);

#endif
