/*
 * Admin views of libinferq: one page of the job listing and the workers
 * the server has seen, on GET /v1/admin/jobs and GET /v1/admin/workers.
 * Both are reads, so they are retried like status. Jobs decode exactly as
 * inferq_job_status() decodes a status, each keeping its own raw text.
 *
 * SPDX-License-Identifier: MIT
 */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define MAX_LIMIT 1000

void inferq_job_page_free(inferq_job_page_t *page)
{
	if (!page)
		return;
	for (size_t i = 0; i < page->count; i++)
		inferq_status_free(page->jobs[i]);
	free(page->jobs);
	free(page->next_cursor);
	free(page->raw);
	free(page);
}

/* Appends "&name=value" (or "?" first) with value escaped. */
static int add_param(inferq_client_t *c, inferq__sb_t *path, const char *name, const char *value)
{
	char *escaped = curl_easy_escape(c->curl, value, 0);

	if (!escaped)
		return inferq__fail(c, INFERQ_ENOMEM, "out of memory");
	inferq__sb_printf(path, "%s%s=%s", strchr(path->data ? path->data : "", '?') ? "&" : "?",
	                  name, escaped);
	curl_free(escaped);
	return path->oom ? inferq__fail(c, INFERQ_ENOMEM, "out of memory") : 0;
}

static int jobs_path(inferq_client_t *c, const char *model, const char *status, int limit,
                     const char *cursor, inferq__sb_t *path)
{
	char number[16];
	int rc = 0;

	inferq__sb_puts(path, "/v1/admin/jobs");
	if (model)
		rc = add_param(c, path, "model", model);
	if (rc == 0 && status)
		rc = add_param(c, path, "status", status);
	if (rc == 0 && limit > 0) {
		snprintf(number, sizeof(number), "%d", limit);
		rc = add_param(c, path, "limit", number);
	}
	if (rc == 0 && cursor)
		rc = add_param(c, path, "cursor", cursor);
	if (rc == 0 && path->oom)
		rc = inferq__fail(c, INFERQ_ENOMEM, "out of memory");
	return rc;
}

/* Decodes the "data" array of the response into page->jobs. */
static int decode_jobs(inferq_client_t *c, inferq__span_t data, inferq_job_page_t *page)
{
	inferq__member_iter_t it;
	inferq__span_t element;
	inferq_status_t **grown;
	int rc;

	inferq__json_members(&it, data);
	while (inferq__json_next_element(&it, &element) == 0) {
		grown = inferq__realloc(page->jobs, (page->count + 1) * sizeof(*page->jobs));
		if (!grown)
			return inferq__fail(c, INFERQ_ENOMEM, "out of memory");
		page->jobs = grown;
		rc = inferq__status_decode(c, element, element.p, element.len,
		                           &page->jobs[page->count]);
		if (rc != 0)
			return rc;
		page->count++;
	}
	return 0;
}

static int decode_page(inferq_client_t *c, inferq_job_page_t *page)
{
	inferq__span_t object, data, cursor;
	int rc;

	if ((rc = inferq__checked_response(c, &object)) != 0)
		return rc;
	if (inferq__json_get(object, "data", &data) != 0 || data.len < 2 || data.p[0] != '[')
		return inferq__fail(c, INFERQ_EPROTO, "the response lacks the array \"data\": %.200s",
		                    c->response.data);
	if ((rc = decode_jobs(c, data, page)) != 0)
		return rc;
	if (inferq__json_get(object, "next_cursor", &cursor) == 0 &&
	    (rc = inferq__response_string(c, object, "next_cursor", &page->next_cursor)) != 0)
		return rc;
	page->raw = inferq__strndup(c->response.data, c->response.len);
	return page->raw ? 0 : inferq__fail(c, INFERQ_ENOMEM, "out of memory");
}

int inferq_admin_jobs(inferq_client_t *c, const char *model, const char *status, int limit,
                      const char *cursor, inferq_job_page_t **out)
{
	inferq__sb_t path = {0};
	inferq__call_t call = {0};
	inferq_job_page_t *page = NULL;
	int rc;

	*out = NULL;
	if (limit < 0 || limit > MAX_LIMIT)
		return inferq__fail(c, INFERQ_ERANGE, "limit %d is out of range: use 1 to %d, or 0 "
		                                      "for the server's default",
		                    limit, MAX_LIMIT);
	if ((rc = jobs_path(c, model, status, limit, cursor, &path)) != 0)
		goto out;
	call.path = path.data;
	call.retry = INFERQ__RETRY_ALWAYS;
	if ((rc = inferq__call(c, &call)) != 0)
		goto out;
	page = inferq__calloc(1, sizeof(*page));
	if (!page) {
		rc = inferq__fail(c, INFERQ_ENOMEM, "out of memory");
		goto out;
	}
	rc = decode_page(c, page);
	if (rc == 0) {
		*out = page;
		page = NULL;
	}
out:
	inferq_job_page_free(page);
	inferq__sb_free(&path);
	return rc;
}

static void worker_free(inferq_worker_t *w)
{
	if (!w)
		return;
	free(w->name);
	free(w->version);
	free(w->first_seen);
	free(w->last_seen);
	free(w->current_jobs);
	free(w);
}

void inferq_worker_list_free(inferq_worker_t **workers, size_t count)
{
	if (!workers)
		return;
	for (size_t i = 0; i < count; i++)
		worker_free(workers[i]);
	free(workers);
}

/* Stores one member of a worker object; members this version does not know are skipped. */
static int worker_member(inferq_worker_t *w, inferq__span_t key, inferq__span_t value)
{
	static const struct {
		const char *name;
		size_t offset;
	} strings[] = {
	    {"name", offsetof(inferq_worker_t, name)},
	    {"version", offsetof(inferq_worker_t, version)},
	    {"first_seen", offsetof(inferq_worker_t, first_seen)},
	    {"last_seen", offsetof(inferq_worker_t, last_seen)},
	};
	static const struct {
		const char *name;
		size_t offset;
	} counters[] = {
	    {"jobs_done", offsetof(inferq_worker_t, jobs_done)},
	    {"jobs_failed", offsetof(inferq_worker_t, jobs_failed)},
	    {"jobs_expired", offsetof(inferq_worker_t, jobs_expired)},
	};
	inferq__member_iter_t it;
	inferq__span_t element;

	for (size_t i = 0; i < sizeof(strings) / sizeof(strings[0]); i++) {
		char **slot = (char **)((char *)w + strings[i].offset);

		if (inferq__json_key_is(key, strings[i].name) == 0 && !*slot)
			return inferq__json_string(value, slot);
	}
	for (size_t i = 0; i < sizeof(counters) / sizeof(counters[0]); i++) {
		if (inferq__json_key_is(key, counters[i].name) == 0)
			return inferq__json_int(value, (int64_t *)((char *)w + counters[i].offset));
	}
	if (inferq__json_key_is(key, "current_jobs") != 0 || w->current_jobs)
		return 0;
	if (value.len < 2 || value.p[0] != '[')
		return INFERQ_EPROTO;
	inferq__json_members(&it, value);
	while (inferq__json_next_element(&it, &element) == 0)
		w->current_count++;
	w->current_jobs = inferq__strndup(value.p, value.len);
	return w->current_jobs ? 0 : INFERQ_ENOMEM;
}

static int decode_worker(inferq_client_t *c, inferq__span_t object, inferq_worker_t **out)
{
	inferq_worker_t *w = inferq__calloc(1, sizeof(*w));
	inferq__member_iter_t it;
	inferq__span_t key, value;
	int rc = 0;

	*out = NULL;
	if (!w)
		return inferq__fail(c, INFERQ_ENOMEM, "out of memory");
	if (object.len == 0 || object.p[0] != '{')
		rc = INFERQ_EPROTO;
	inferq__json_members(&it, object);
	while (rc == 0 && inferq__json_next(&it, &key, &value) == 0)
		rc = worker_member(w, key, value);
	if (rc == 0 && (!w->name || !w->last_seen || !w->current_jobs))
		rc = INFERQ_EPROTO;
	if (rc != 0) {
		worker_free(w);
		if (rc == INFERQ_ENOMEM)
			return inferq__fail(c, rc, "out of memory");
		return inferq__fail(c, rc, "the server sent a worker without name, last_seen or "
		                           "current_jobs: %.200s",
		                    object.p);
	}
	*out = w;
	return 0;
}

int inferq_admin_workers(inferq_client_t *c, inferq_worker_t ***out, size_t *count)
{
	inferq__call_t call = {0};
	inferq__member_iter_t it;
	inferq__span_t object, data, element;
	inferq_worker_t **list = NULL, **grown;
	size_t n = 0;
	int rc;

	*out = NULL;
	*count = 0;
	call.path = "/v1/admin/workers";
	call.retry = INFERQ__RETRY_ALWAYS;
	if ((rc = inferq__call(c, &call)) != 0 || (rc = inferq__checked_response(c, &object)) != 0)
		return rc;
	if (inferq__json_get(object, "data", &data) != 0 || data.len < 2 || data.p[0] != '[')
		return inferq__fail(c, INFERQ_EPROTO, "the response lacks the array \"data\": %.200s",
		                    c->response.data);
	inferq__json_members(&it, data);
	while (rc == 0 && inferq__json_next_element(&it, &element) == 0) {
		grown = inferq__realloc(list, (n + 1) * sizeof(*list));
		if (!grown) {
			rc = inferq__fail(c, INFERQ_ENOMEM, "out of memory");
			break;
		}
		list = grown;
		rc = decode_worker(c, element, &list[n]);
		if (rc == 0)
			n++;
	}
	if (rc != 0) {
		inferq_worker_list_free(list, n);
		return rc;
	}
	*out = list;
	*count = n;
	return 0;
}
