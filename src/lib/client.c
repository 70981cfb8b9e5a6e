/*
 * The client handle of libinferq: creation, options (URL, API key, key
 * file, timeouts, retries, CA file) and the last error. A handle owns one
 * curl easy handle, so consecutive calls reuse the keep-alive connection.
 *
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define DEFAULT_CONNECT_MS     10000
#define DEFAULT_REQUEST_MS     30000
#define DEFAULT_ATTEMPTS       5
#define DEFAULT_FIRST_PAUSE_MS 100
#define MAX_ATTEMPTS           20
#define MAX_KEY_BYTES          4096

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_result = CURLE_FAILED_INIT;

static void init_curl(void)
{
	curl_init_result = curl_global_init(CURL_GLOBAL_DEFAULT);
}

void inferq_free(void *p)
{
	free(p);
}

int inferq__fail(inferq_client_t *c, int code, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(c->error, sizeof(c->error), fmt, ap);
	va_end(ap);
	return code;
}

/* Replaces *slot with a copy of value (NULL allowed); on out-of-memory keeps *slot. */
static int replace_string(inferq_client_t *c, char **slot, const char *value)
{
	char *copy = NULL;

	if (value) {
		copy = inferq__strndup(value, strlen(value));
		if (!copy)
			return inferq__fail(c, INFERQ_ENOMEM, "out of memory");
	}
	free(*slot);
	*slot = copy;
	return 0;
}

/*
 * Reads the first line of path into a new string in *out. Returns 0,
 * INFERQ_ENOTFOUND, INFERQ_EIO, INFERQ_EINVAL (empty first line or a line
 * too long to be a key) or INFERQ_ENOMEM, with c->error set.
 */
static int read_key_file(inferq_client_t *c, const char *path, char **out)
{
	char line[MAX_KEY_BYTES + 2];
	size_t n;
	FILE *f;
	int rc = 0;

	*out = NULL;
	f = fopen(path, "r");
	if (!f)
		return inferq__fail(c, errno == ENOENT ? INFERQ_ENOTFOUND : INFERQ_EIO,
		                    "cannot open the key file %s: %s", path, strerror(errno));
	if (!fgets(line, sizeof(line), f)) {
		rc = ferror(f) ? inferq__fail(c, INFERQ_EIO, "cannot read the key file %s: %s",
		                              path, strerror(errno))
		               : inferq__fail(c, INFERQ_EINVAL, "the key file %s is empty", path);
		goto out;
	}
	n = strcspn(line, "\r\n");
	if (n > MAX_KEY_BYTES) {
		rc = inferq__fail(c, INFERQ_EINVAL,
		                  "the first line of the key file %s is longer than %d bytes", path,
		                  MAX_KEY_BYTES);
		goto out;
	}
	if (n == 0) {
		rc = inferq__fail(c, INFERQ_EINVAL, "the first line of the key file %s is empty",
		                  path);
		goto out;
	}
	*out = inferq__strndup(line, n);
	if (!*out)
		rc = inferq__fail(c, INFERQ_ENOMEM, "out of memory");
out:
	fclose(f);
	return rc;
}

/* Returns the key from INFERQ_API_KEY or TOGETHER_API_KEY, or NULL. */
static const char *env_key(void)
{
	const char *key = getenv("INFERQ_API_KEY");

	if (key && *key)
		return key;
	key = getenv("TOGETHER_API_KEY");
	if (key && *key)
		return key;
	return NULL;
}

static int resolve_default_key(inferq_client_t *c)
{
	const char *key = env_key();
	char *from_file = NULL;
	int rc;

	if (key) {
		c->key_from_env = 1;
		return replace_string(c, &c->api_key, key);
	}

	/* The default key file is optional: a missing or unreadable one means no key. */
	rc = read_key_file(c, INFERQ_DEFAULT_KEY_FILE, &from_file);
	c->error[0] = '\0';
	if (rc == INFERQ_ENOMEM)
		return rc;
	c->api_key = from_file;
	return 0;
}

int inferq_client_new(inferq_client_t **out)
{
	inferq_client_t *c;
	const char *url = getenv("INFERQ_URL");
	int rc;

	*out = NULL;
	pthread_once(&curl_once, init_curl);
	if (curl_init_result != CURLE_OK)
		return INFERQ_ENOMEM;
	c = inferq__calloc(1, sizeof(*c));
	if (!c)
		return INFERQ_ENOMEM;
	c->connect_ms = DEFAULT_CONNECT_MS;
	c->request_ms = DEFAULT_REQUEST_MS;
	c->attempts = DEFAULT_ATTEMPTS;
	c->first_pause_ms = DEFAULT_FIRST_PAUSE_MS;
	c->curl = curl_easy_init();
	if (!c->curl) {
		rc = INFERQ_ENOMEM;
		goto fail;
	}
	rc = inferq_client_set_url(c, url && *url ? url : INFERQ_DEFAULT_URL);
	if (rc != 0)
		goto fail;
	rc = resolve_default_key(c);
	if (rc != 0)
		goto fail;
	*out = c;
	return 0;
fail:
	inferq_client_free(c);
	return rc;
}

void inferq_client_free(inferq_client_t *c)
{
	if (!c)
		return;
	if (c->curl)
		curl_easy_cleanup(c->curl);
	free(c->base_url);
	free(c->api_key);
	free(c->cacert);
	inferq__sb_free(&c->response);
	free(c);
}

int inferq_client_set_url(inferq_client_t *c, const char *url)
{
	size_t n;
	char *copy;

	if (!url || (strncmp(url, "http://", 7) != 0 && strncmp(url, "https://", 8) != 0))
		return inferq__fail(
		    c, INFERQ_EINVAL,
		    "invalid server URL \"%s\": it must start with http:// or https://, "
		    "as in %s",
		    url ? url : "(null)", INFERQ_DEFAULT_URL);
	n = strlen(url);
	while (n > 0 && url[n - 1] == '/')
		n--;
	if (n >= 3 && memcmp(url + n - 3, "/v1", 3) == 0)
		n -= 3;
	while (n > 0 && url[n - 1] == '/')
		n--;
	copy = inferq__strndup(url, n);
	if (!copy)
		return inferq__fail(c, INFERQ_ENOMEM, "out of memory");
	free(c->base_url);
	c->base_url = copy;
	return 0;
}

int inferq_client_set_api_key(inferq_client_t *c, const char *key)
{
	if (key) {
		for (const char *p = key; *p; p++)
			if ((unsigned char)*p < 0x20 || *p == 0x7f)
				return inferq__fail(c, INFERQ_EINVAL,
				                    "invalid API key: it contains a control "
				                    "character at byte %zu",
				                    (size_t)(p - key));
	}
	if (replace_string(c, &c->api_key, key) != 0)
		return INFERQ_ENOMEM;
	c->key_from_env = 0;
	return 0;
}

int inferq_client_set_key_file(inferq_client_t *c, const char *path)
{
	char *key = NULL;
	int rc;

	if (c->key_from_env)
		return 0;
	rc = read_key_file(c, path, &key);
	if (rc != 0)
		return rc;
	rc = inferq_client_set_api_key(c, key);
	free(key);
	return rc;
}

void inferq_client_set_timeouts(inferq_client_t *c, long connect_ms, long request_ms)
{
	if (connect_ms > 0)
		c->connect_ms = connect_ms;
	if (request_ms > 0)
		c->request_ms = request_ms;
}

int inferq_client_set_retries(inferq_client_t *c, int attempts, long first_pause_ms)
{
	if (attempts < 1 || attempts > MAX_ATTEMPTS)
		return inferq__fail(c, INFERQ_ERANGE, "invalid attempt count %d: use 1 to %d",
		                    attempts, MAX_ATTEMPTS);
	if (first_pause_ms < 0 || first_pause_ms > 2000)
		return inferq__fail(c, INFERQ_ERANGE,
		                    "invalid first pause %ld ms: use 0 to 2000 ms", first_pause_ms);
	c->attempts = attempts;
	c->first_pause_ms = first_pause_ms;
	return 0;
}

int inferq_client_set_cacert(inferq_client_t *c, const char *path)
{
	int rc = replace_string(c, &c->cacert, path);

	/* Every other option is set again before each request; this clears CURLOPT_CAINFO. */
	if (rc == 0 && !path)
		curl_easy_reset(c->curl);
	return rc;
}

const char *inferq_client_last_error(const inferq_client_t *c)
{
	return c->error;
}

int inferq_client_last_status(const inferq_client_t *c)
{
	return c->http_status;
}

const char *inferq_client_last_response(const inferq_client_t *c)
{
	return c->response.data ? c->response.data : "";
}

int inferq__check_arg(inferq_client_t *c, const char *name, const char *value)
{
	if (!value || !*value)
		return inferq__fail(c, INFERQ_EINVAL, "missing %s: pass a non-empty string", name);
	return 0;
}

int inferq__check_object(inferq_client_t *c, const char *field, const char *text)
{
	inferq__span_t root;
	char message[160];

	if (!text)
		return inferq__fail(c, INFERQ_EINVAL, "missing %s: pass the text of a JSON object",
		                    field);
	if (inferq__json_check(text, strlen(text), &root, message, sizeof(message)) != 0)
		return inferq__fail(c, INFERQ_EINVAL, "%s is not valid JSON: %s", field, message);
	if (root.p[0] != '{')
		return inferq__fail(
		    c, INFERQ_EINVAL,
		    "%s must be a JSON object such as {\"text\": \"hi\"}; got %.40s", field,
		    root.p);
	return 0;
}
