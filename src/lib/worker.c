/*
 * Worker calls of libinferq: claim, then heartbeat, complete, fail or
 * release. A claim is an opaque handle that carries the request id and the
 * claim id together, so every later call sends the fencing claim id that
 * the server requires.
 *
 * SPDX-License-Identifier: MIT
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

struct inferq_claim {
	char *request_id;
	char *claim_id;
	char *model;
	char *payload;          /* raw JSON text */
	char *info;             /* raw JSON text, or NULL */
	char *lease_expires_at; /* RFC 3339 UTC */
	int64_t retries;
	int32_t priority;
};

void inferq_claim_free(inferq_claim_t *claim)
{
	if (!claim)
		return;
	free(claim->request_id);
	free(claim->claim_id);
	free(claim->model);
	free(claim->payload);
	free(claim->info);
	free(claim->lease_expires_at);
	free(claim);
}

const char *inferq_claim_request_id(const inferq_claim_t *claim)
{
	return claim->request_id;
}

const char *inferq_claim_id(const inferq_claim_t *claim)
{
	return claim->claim_id;
}

const char *inferq_claim_model(const inferq_claim_t *claim)
{
	return claim->model;
}

const char *inferq_claim_payload(const inferq_claim_t *claim)
{
	return claim->payload;
}

const char *inferq_claim_info(const inferq_claim_t *claim)
{
	return claim->info;
}

int64_t inferq_claim_retries(const inferq_claim_t *claim)
{
	return claim->retries;
}

int32_t inferq_claim_priority(const inferq_claim_t *claim)
{
	return claim->priority;
}

const char *inferq_claim_lease_expires_at(const inferq_claim_t *claim)
{
	return claim->lease_expires_at;
}

/* Copies the raw JSON text of member name into *out; absent leaves NULL. */
static int raw_member(inferq_client_t *c, inferq__span_t object, const char *name, char **out)
{
	inferq__span_t value;

	if (inferq__json_get(object, name, &value) != 0)
		return 0;
	*out = inferq__strndup(value.p, value.len);
	return *out ? 0 : inferq__fail(c, INFERQ_ENOMEM, "out of memory");
}

static int parse_claim(inferq_client_t *c, inferq_claim_t **out)
{
	inferq_claim_t *claim;
	inferq__span_t object;
	int64_t priority = 0;
	int rc;

	if ((rc = inferq__checked_response(c, &object)) != 0)
		return rc;
	claim = inferq__calloc(1, sizeof(*claim));
	if (!claim)
		return inferq__fail(c, INFERQ_ENOMEM, "out of memory");
	if ((rc = inferq__response_string(c, object, "request_id", &claim->request_id)) != 0 ||
	    (rc = inferq__response_string(c, object, "claim_id", &claim->claim_id)) != 0 ||
	    (rc = inferq__response_string(c, object, "model", &claim->model)) != 0 ||
	    (rc = inferq__response_string(c, object, "lease_expires_at",
	                                  &claim->lease_expires_at)) != 0 ||
	    (rc = inferq__response_int(c, object, "retries", &claim->retries)) != 0 ||
	    (rc = inferq__response_int(c, object, "priority", &priority)) != 0 ||
	    (rc = raw_member(c, object, "payload", &claim->payload)) != 0 ||
	    (rc = raw_member(c, object, "info", &claim->info)) != 0)
		goto fail;
	if (!claim->payload) {
		rc = inferq__fail(c, INFERQ_EPROTO, "the claim response lacks \"payload\"");
		goto fail;
	}
	claim->priority = (int32_t)priority;
	*out = claim;
	return 0;
fail:
	inferq_claim_free(claim);
	return rc;
}

int inferq_job_claim(inferq_client_t *c, const char *model, int claim_timeout_s, double wait_s,
                     const char *worker, inferq_claim_t **out)
{
	inferq__call_t call = {0};
	inferq__sb_t body = {0};
	long wait_ms;
	int rc;

	*out = NULL;
	if ((rc = inferq__check_arg(c, "model", model)) != 0)
		return rc;
	if (claim_timeout_s < 0 || claim_timeout_s > 86400)
		return inferq__fail(c, INFERQ_ERANGE,
		                    "invalid claim timeout %d s: use 1 to 86400 s, or 0 for the "
		                    "server's default",
		                    claim_timeout_s);
	if (!(wait_s >= 0 && wait_s <= 60))
		return inferq__fail(c, INFERQ_ERANGE, "invalid wait %g s: use 0 to 60 s", wait_s);

	inferq__sb_puts(&body, "{");
	inferq__sb_json_field(&body, "model", model);
	if (claim_timeout_s > 0)
		inferq__sb_printf(&body, ",\"claim_timeout\":%d", claim_timeout_s);
	/* Whole milliseconds by hand, so a caller's LC_NUMERIC cannot write "0,5". */
	wait_ms = (long)(wait_s * 1000 + 0.5);
	inferq__sb_printf(&body, ",\"wait\":%ld.%03ld", wait_ms / 1000, wait_ms % 1000);
	if (worker) {
		inferq__sb_puts(&body, ",");
		inferq__sb_json_field(&body, "worker", worker);
	}
	inferq__sb_puts(&body, "}");
	if (body.oom) {
		inferq__sb_free(&body);
		return inferq__fail(c, INFERQ_ENOMEM, "out of memory");
	}

	/* A lost claim response leaves the job leased until the lease ends, so repeat only unsent
	 * claims. */
	call.path = "/v1/queue/claim";
	call.body = body.data;
	call.body_len = body.len;
	call.retry = INFERQ__RETRY_UNSENT;
	call.extra_timeout_ms = wait_ms;
	rc = inferq__call(c, &call);
	inferq__sb_free(&body);
	if (rc != 0 || c->http_status == 204)
		return rc;
	return parse_claim(c, out);
}

/*
 * Builds the fenced body {model, request_id, claim_id, extra} and posts it.
 * extra_name/extra_json add one raw JSON member (NULL: none); error_text
 * adds "error" as a string.
 */
static int fenced_call(inferq_client_t *c, inferq_claim_t *claim, const char *route,
                       const char *extra_name, const char *extra_json, const char *error_text,
                       const char *expected_status)
{
	inferq__sb_t body = {0};
	char path[64];

	if (!claim)
		return inferq__fail(c, INFERQ_EINVAL,
		                    "missing claim: pass the claim that "
		                    "inferq_job_claim() returned");
	inferq__sb_puts(&body, "{");
	inferq__sb_json_field(&body, "model", claim->model);
	inferq__sb_puts(&body, ",");
	inferq__sb_json_field(&body, "request_id", claim->request_id);
	inferq__sb_puts(&body, ",");
	inferq__sb_json_field(&body, "claim_id", claim->claim_id);
	if (extra_json)
		inferq__sb_printf(&body, ",\"%s\":%s", extra_name, extra_json);
	if (error_text) {
		inferq__sb_puts(&body, ",");
		inferq__sb_json_field(&body, "error", error_text);
	}
	inferq__sb_puts(&body, "}");
	snprintf(path, sizeof(path), "/v1/queue/%s", route);
	return inferq__post(c, path, &body, NULL, expected_status);
}

int inferq_claim_heartbeat(inferq_client_t *c, inferq_claim_t *claim, const char *info_patch)
{
	inferq__span_t object;
	char *lease = NULL;
	int rc;

	if (info_patch && (rc = inferq__check_object(c, "info", info_patch)) != 0)
		return rc;
	rc = fenced_call(c, claim, "heartbeat", "info", info_patch, NULL, NULL);
	if (rc != 0 || (rc = inferq__checked_response(c, &object)) != 0 ||
	    (rc = inferq__response_string(c, object, "lease_expires_at", &lease)) != 0)
		return rc;
	free(claim->lease_expires_at);
	claim->lease_expires_at = lease;
	return 0;
}

int inferq_claim_complete(inferq_client_t *c, inferq_claim_t *claim, const char *outputs)
{
	int rc = inferq__check_object(c, "outputs", outputs);

	if (rc != 0)
		return rc;
	return fenced_call(c, claim, "complete", "outputs", outputs, NULL, "done");
}

int inferq_claim_fail(inferq_client_t *c, inferq_claim_t *claim, const char *error)
{
	int rc = inferq__check_arg(c, "error", error);

	if (rc != 0)
		return rc;
	return fenced_call(c, claim, "fail", NULL, NULL, error, "failed");
}

int inferq_claim_release(inferq_client_t *c, inferq_claim_t *claim)
{
	return fenced_call(c, claim, "release", NULL, NULL, NULL, "pending");
}
