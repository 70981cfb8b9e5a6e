/*
 * HTTP calls of libinferq over libcurl: one request per attempt on the
 * handle's keep-alive connection, bounded retries with a doubling pause,
 * and the mapping of curl errors and HTTP statuses to INFERQ_E* codes.
 * A call is repeated after a transport error only when it is safe: always
 * when no byte of the request was sent, and otherwise only when the caller
 * marked the call INFERQ__RETRY_ALWAYS.
 *
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "internal.h"

#ifndef INFERQ_VERSION
#define INFERQ_VERSION "0"
#endif

#define MAX_PAUSE_MS       2000
#define MAX_RESPONSE_BYTES ((size_t)256 << 20)

/* The outcome of one attempt. */
typedef struct {
	int code;     /* 0: an HTTP response came; else the INFERQ_E* of the failure */
	int sent;     /* 1 when bytes of the request may have reached the server */
	int retry_ok; /* 1 when the failure is worth another attempt */
	int curl;     /* CURLcode of a failed transfer, else CURLE_OK */
} attempt_t;

static size_t on_body(char *p, size_t size, size_t n, void *user)
{
	inferq__sb_t *sb = user;
	size_t bytes = size * n;

	if (sb->len + bytes > MAX_RESPONSE_BYTES)
		return 0;
	inferq__sb_append(sb, p, bytes);
	return sb->oom ? 0 : bytes;
}

void inferq__sleep_ms(long ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};

	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

/* Appends "name: value", or "name:" for a NULL value, which makes curl drop the header. */
static int add_header(struct curl_slist **list, const char *name, const char *value)
{
	inferq__sb_t line = {0};
	struct curl_slist *grown;

	inferq__sb_puts(&line, name);
	inferq__sb_puts(&line, ":");
	if (value) {
		inferq__sb_puts(&line, " ");
		inferq__sb_puts(&line, value);
	}
	grown = line.oom ? NULL : curl_slist_append(*list, line.data);
	inferq__sb_free(&line);
	if (!grown)
		return INFERQ_ENOMEM;
	*list = grown;
	return 0;
}

static int build_headers(inferq_client_t *c, const inferq__call_t *call, struct curl_slist **out)
{
	struct curl_slist *list = NULL;
	int rc = 0;

	if (c->api_key) {
		inferq__sb_t bearer = {0};

		inferq__sb_puts(&bearer, "Bearer ");
		inferq__sb_puts(&bearer, c->api_key);
		rc = bearer.oom ? INFERQ_ENOMEM : add_header(&list, "Authorization", bearer.data);
		inferq__sb_free(&bearer);
	}
	if (rc == 0 && call->body)
		rc = add_header(&list, "Content-Type", "application/json");
	if (rc == 0 && call->body)
		rc = add_header(&list, "Expect", NULL); /* no 100-continue round trip */
	if (rc == 0 && call->idempotency_key)
		rc = add_header(&list, "Idempotency-Key", call->idempotency_key);
	if (rc != 0) {
		curl_slist_free_all(list);
		return rc;
	}
	*out = list;
	return 0;
}

static void set_options(inferq_client_t *c, const inferq__call_t *call, const char *url,
                        struct curl_slist *headers)
{
	CURL *h = c->curl;

	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);
	curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, c->connect_ms);
	curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, c->request_ms + call->extra_timeout_ms);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, &c->response);
	curl_easy_setopt(h, CURLOPT_ERRORBUFFER, c->curl_error);
	if (c->cacert)
		curl_easy_setopt(h, CURLOPT_CAINFO, c->cacert);
	curl_easy_setopt(h, CURLOPT_USERAGENT, "libinferq/" INFERQ_VERSION);
	if (call->body) {
		curl_easy_setopt(h, CURLOPT_POST, 1L);
		curl_easy_setopt(h, CURLOPT_POSTFIELDS, call->body);
		curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)call->body_len);
	} else {
		curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
	}
}

/* Maps a curl failure to an INFERQ_E* code and decides whether another attempt may help. */
static void classify(inferq_client_t *c, CURLcode res, attempt_t *a)
{
	long request_bytes = 0;

	curl_easy_getinfo(c->curl, CURLINFO_REQUEST_SIZE, &request_bytes);
	a->sent = request_bytes > 0;
	a->curl = res;
	switch (res) {
	case CURLE_COULDNT_RESOLVE_HOST:
	case CURLE_COULDNT_RESOLVE_PROXY:
	case CURLE_COULDNT_CONNECT:
	case CURLE_SEND_ERROR:
	case CURLE_RECV_ERROR:
	case CURLE_GOT_NOTHING:
	case CURLE_PARTIAL_FILE:
		a->code = INFERQ_ECONNECT;
		a->retry_ok = 1;
		break;
	case CURLE_OPERATION_TIMEDOUT:
		a->code = INFERQ_ETIMEDOUT;
		a->retry_ok = 1;
		break;
	case CURLE_OUT_OF_MEMORY: a->code = INFERQ_ENOMEM; break;
	case CURLE_WRITE_ERROR: a->code = c->response.oom ? INFERQ_ENOMEM : INFERQ_EPROTO; break;
	case CURLE_URL_MALFORMAT:
	case CURLE_UNSUPPORTED_PROTOCOL: a->code = INFERQ_EINVAL; break;
	default:
		/* TLS failures and the like: another attempt would fail the same way. */
		a->code = INFERQ_ECONNECT;
		break;
	}
}

static attempt_t attempt(inferq_client_t *c, const inferq__call_t *call, const char *url)
{
	struct curl_slist *headers = NULL;
	attempt_t a = {0, 0, 0, 0};
	CURLcode res;
	long status = 0;

	inferq__sb_reset(&c->response);
	c->http_status = 0;
	c->curl_error[0] = '\0';
	if (build_headers(c, call, &headers) != 0) {
		a.code = INFERQ_ENOMEM;
		return a;
	}
	set_options(c, call, url, headers);
	res = curl_easy_perform(c->curl);
	curl_easy_setopt(c->curl, CURLOPT_HTTPHEADER, NULL);
	curl_slist_free_all(headers);
	if (res != CURLE_OK) {
		classify(c, res, &a);
		return a;
	}
	curl_easy_getinfo(c->curl, CURLINFO_RESPONSE_CODE, &status);
	c->http_status = (int)status;
	a.sent = 1;
	a.retry_ok = status == 429 || status == 503;
	return a;
}

static int status_code(int http)
{
	switch (http) {
	case 400:
	case 405: return INFERQ_EINVAL;
	case 401:
	case 403: return INFERQ_EAUTH;
	case 404: return INFERQ_ENOTFOUND;
	case 408: return INFERQ_ETIMEDOUT;
	case 409: return INFERQ_ECONFLICT;
	case 413:
	case 431: return INFERQ_ELIMIT;
	case 429:
	case 503: return INFERQ_EBUSY;
	}
	return http >= 500 ? INFERQ_EIO : INFERQ_EPROTO;
}

/*
 * Returns 0 when the response's "status" member equals expected, otherwise
 * INFERQ_ENOTFOUND, or INFERQ_ENOMEM when decoding the member ran out of memory.
 */
static int response_status_is(inferq_client_t *c, const char *expected)
{
	inferq__span_t object, value;
	char *status = NULL;
	int rc;

	if (inferq__response_object(c, &object) != 0 ||
	    inferq__json_get(object, "status", &value) != 0)
		return INFERQ_ENOTFOUND;
	rc = inferq__json_string(value, &status);
	if (rc != 0)
		return rc == INFERQ_ENOMEM ? rc : INFERQ_ENOTFOUND;
	rc = strcmp(status, expected) == 0 ? 0 : INFERQ_ENOTFOUND;
	free(status);
	return rc;
}

/*
 * Sets c->error from an error response: the server's QueueError message.
 * Returns the code of the HTTP status, or INFERQ_ENOMEM when the message
 * cannot be decoded for lack of memory (c->http_status still has the status).
 */
static int http_error(inferq_client_t *c)
{
	inferq__span_t object, value;
	char *message = NULL;
	int code = status_code(c->http_status);
	int rc;

	if (inferq__response_object(c, &object) == 0 &&
	    inferq__json_get(object, "message", &value) == 0) {
		rc = inferq__json_string(value, &message);
		if (rc == 0) {
			inferq__fail(c, code, "%s", message);
			free(message);
			return code;
		}
		if (rc == INFERQ_ENOMEM)
			return inferq__fail(c, rc,
			                    "out of memory while decoding the message of an "
			                    "HTTP %d response",
			                    c->http_status);
	}
	return inferq__fail(c, code, "the server returned HTTP %d without a QueueError body",
	                    c->http_status);
}

/*
 * Returns what to do about a TLS failure, or "" for other failures. error
 * is libcurl's message, which distinguishes a name mismatch from an unknown CA.
 */
static const char *tls_hint(int res, const char *error)
{
	switch (res) {
	case CURLE_PEER_FAILED_VERIFICATION:
		if (strstr(error, "subject name") || strstr(error, "host name"))
			return "; the server's certificate does not name this host: use a host name or "
			       "IP address that the certificate lists";
		return "; the server's certificate is not trusted: pass the CA certificate that "
		       "signed it (--cacert FILE, or inferq_client_set_cacert())";
	case CURLE_SSL_CACERT_BADFILE:
		return "; the CA file cannot be read: pass a readable PEM file to --cacert";
	case CURLE_SSL_CONNECT_ERROR:
		return "; the TLS handshake failed: check that the server serves HTTPS on this "
		       "port, or use http:// for a plain HTTP listener";
	}
	return "";
}

static int transport_error(inferq_client_t *c, const attempt_t *a, int attempts)
{
	const char *hint;

	if (a->code == INFERQ_ENOMEM)
		return inferq__fail(c, a->code, "out of memory");
	if (a->code == INFERQ_EPROTO)
		return inferq__fail(c, a->code, "the response from %s is larger than %zu bytes",
		                    c->base_url, MAX_RESPONSE_BYTES);
	/* A TLS failure reached the server: only the secure connection failed. */
	hint = tls_hint(a->curl, c->curl_error);
	return inferq__fail(c, a->code, "%s %s: %s (%d attempt%s)%s",
	                    hint[0] ? "no secure connection to" : "cannot reach", c->base_url,
	                    c->curl_error[0] ? c->curl_error : "connection failed", attempts,
	                    attempts == 1 ? "" : "s", hint);
}

int inferq__call(inferq_client_t *c, const inferq__call_t *call)
{
	inferq__sb_t url = {0};
	long pause = c->first_pause_ms;
	int maybe_applied = 0;
	attempt_t a = {0, 0, 0, 0};
	int n, rc;

	inferq__sb_puts(&url, c->base_url);
	inferq__sb_puts(&url, call->path);
	if (url.oom) {
		rc = inferq__fail(c, INFERQ_ENOMEM, "out of memory");
		goto out;
	}
	/* A key from the environment is not checked when it is read, since no client exists yet. */
	for (const char *p = c->api_key; p && *p; p++) {
		if ((unsigned char)*p < 0x20 || *p == 0x7f) {
			rc = inferq__fail(c, INFERQ_EINVAL,
			                  "invalid API key%s: it contains a control character "
			                  "(byte 0x%02x at offset %zu), such as a newline copied "
			                  "with it; remove it",
			                  c->key_from_env ? " in $INFERQ_API_KEY or $TOGETHER_API_KEY"
			                                  : "",
			                  (unsigned)(unsigned char)*p, (size_t)(p - c->api_key));
			goto out;
		}
	}
	for (n = 1;; n++) {
		a = attempt(c, call, url.data);
		if (a.code == 0 && c->http_status >= 200 && c->http_status < 300) {
			rc = 0;
			c->error[0] = '\0';
			goto out;
		}
		if (a.code == 0 && c->http_status == 409 && maybe_applied &&
		    call->expected_status) {
			rc = response_status_is(c, call->expected_status);
			if (rc == 0)
				c->error[0] = '\0';
			if (rc == INFERQ_ENOMEM)
				rc = inferq__fail(c, rc, "out of memory");
			if (rc != INFERQ_ENOTFOUND)
				goto out;
		}
		if (a.code != 0 && a.sent)
			maybe_applied = 1;

		/* Stop at a final response, at the last attempt, or before an unsafe repeat. */
		if (!a.retry_ok || n >= c->attempts)
			break;
		if (a.code != 0 && a.sent && call->retry != INFERQ__RETRY_ALWAYS)
			break;
		inferq__sleep_ms(pause);
		pause = pause * 2 > MAX_PAUSE_MS ? MAX_PAUSE_MS : pause * 2;
	}
	rc = a.code == 0 ? http_error(c) : transport_error(c, &a, n);
out:
	inferq__sb_free(&url);
	return rc;
}

int inferq__response_object(inferq_client_t *c, inferq__span_t *object)
{
	char message[160];

	if (c->response.oom)
		return INFERQ_ENOMEM;
	if (!c->response.data ||
	    inferq__json_check(c->response.data, c->response.len, object, message,
	                       sizeof(message)) != 0 ||
	    object->p[0] != '{')
		return INFERQ_EPROTO;
	return 0;
}

/* Runs a POST call with the body in sb; frees sb. */
int inferq__post(inferq_client_t *c, const char *path, inferq__sb_t *sb, const char *idem_key,
                 const char *expected_status)
{
	inferq__call_t call = {0};
	int rc;

	if (sb->oom) {
		inferq__sb_free(sb);
		return inferq__fail(c, INFERQ_ENOMEM, "out of memory");
	}
	call.path = path;
	call.body = sb->data;
	call.body_len = sb->len;
	call.idempotency_key = idem_key;
	call.retry = INFERQ__RETRY_ALWAYS;
	call.expected_status = expected_status;
	rc = inferq__call(c, &call);
	inferq__sb_free(sb);
	return rc;
}

/* Decodes the string member name of the response into *out. */
int inferq__response_string(inferq_client_t *c, inferq__span_t object, const char *name, char **out)
{
	inferq__span_t value;
	int rc;

	if (inferq__json_get(object, name, &value) != 0)
		return inferq__fail(c, INFERQ_EPROTO, "the response lacks \"%s\": %.200s", name,
		                    c->response.data);
	rc = inferq__json_string(value, out);
	if (rc == INFERQ_EPROTO)
		return inferq__fail(c, rc, "\"%s\" in the response is not a string", name);
	return rc == INFERQ_ENOMEM ? inferq__fail(c, rc, "out of memory") : rc;
}

int inferq__response_int(inferq_client_t *c, inferq__span_t object, const char *name, int64_t *out)
{
	inferq__span_t value;

	if (inferq__json_get(object, name, &value) != 0 || inferq__json_int(value, out) != 0)
		return inferq__fail(c, INFERQ_EPROTO,
		                    "the response lacks the integer \"%s\": %.200s", name,
		                    c->response.data);
	return 0;
}

int inferq__checked_response(inferq_client_t *c, inferq__span_t *object)
{
	int rc = inferq__response_object(c, object);

	if (rc == INFERQ_EPROTO)
		return inferq__fail(c, rc,
		                    "the server sent a response that is not a JSON object: "
		                    "%.200s",
		                    c->response.data ? c->response.data : "");
	return rc == INFERQ_ENOMEM ? inferq__fail(c, rc, "out of memory") : rc;
}
