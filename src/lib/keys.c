/*
 * Admin calls of libinferq for API keys: create, list and revoke, on the
 * /v1/admin/keys routes. A created key's text comes back once, in the
 * create response; the library copies it to the caller and keeps nothing.
 *
 * SPDX-License-Identifier: MIT
 */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

void inferq_key_free(inferq_key_t *key)
{
	if (!key)
		return;
	if (key->key) {
		/* The text is a credential: do not leave it in freed memory. */
		explicit_bzero(key->key, strlen(key->key));
		free(key->key);
	}
	free(key->name);
	free(key->key_prefix);
	free(key->role);
	free(key->models);
	free(key->created_at);
	free(key->last_used_at);
	free(key->expires_at);
	free(key->revoked_at);
	free(key);
}

void inferq_key_list_free(inferq_key_t **keys, size_t count)
{
	if (!keys)
		return;
	for (size_t i = 0; i < count; i++)
		inferq_key_free(keys[i]);
	free(keys);
}

/* Stores one member of a key object; members this version does not know are skipped. */
static int key_member(inferq_key_t *k, inferq__span_t name, inferq__span_t value)
{
	static const struct {
		const char *name;
		size_t offset;
		int raw; /* 1: keep the JSON text; 0: decode a string */
	} fields[] = {
	    {"name", offsetof(inferq_key_t, name), 0},
	    {"key", offsetof(inferq_key_t, key), 0},
	    {"key_prefix", offsetof(inferq_key_t, key_prefix), 0},
	    {"role", offsetof(inferq_key_t, role), 0},
	    {"models", offsetof(inferq_key_t, models), 1},
	    {"created_at", offsetof(inferq_key_t, created_at), 0},
	    {"last_used_at", offsetof(inferq_key_t, last_used_at), 0},
	    {"expires_at", offsetof(inferq_key_t, expires_at), 0},
	    {"revoked_at", offsetof(inferq_key_t, revoked_at), 0},
	};

	for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
		char **slot = (char **)((char *)k + fields[i].offset);

		if (inferq__json_key_is(name, fields[i].name) != 0 || *slot)
			continue;
		if (fields[i].raw) {
			*slot = inferq__strndup(value.p, value.len);
			return *slot ? 0 : INFERQ_ENOMEM;
		}
		return inferq__json_string(value, slot);
	}
	return 0;
}

/* Decodes a key object span into a new key in *out. */
static int decode_key(inferq_client_t *c, inferq__span_t object, inferq_key_t **out)
{
	inferq_key_t *k = inferq__calloc(1, sizeof(*k));
	inferq__member_iter_t it;
	inferq__span_t name, value;
	int rc = 0;

	*out = NULL;
	if (!k)
		return inferq__fail(c, INFERQ_ENOMEM, "out of memory");
	if (object.len == 0 || object.p[0] != '{')
		rc = INFERQ_EPROTO;
	inferq__json_members(&it, object);
	while (rc == 0 && inferq__json_next(&it, &name, &value) == 0)
		rc = key_member(k, name, value);
	if (rc == 0 && (!k->name || !k->role || !k->models))
		rc = INFERQ_EPROTO;
	if (rc != 0) {
		inferq_key_free(k);
		if (rc == INFERQ_ENOMEM)
			return inferq__fail(c, rc, "out of memory");
		return inferq__fail(c, rc, "the server sent a key without name, role or models: "
		                           "%.200s",
		                    c->response.data ? c->response.data : "");
	}
	*out = k;
	return 0;
}

/* Returns the end of the checked JSON value that starts at p (strings and nesting skipped). */
static const char *value_end(const char *p, const char *end)
{
	int depth = 0, in_string = 0;

	for (; p < end; p++) {
		if (in_string) {
			if (*p == '\\')
				p++;
			else if (*p == '"')
				in_string = 0;
			if (!in_string && depth == 0)
				return p + 1;
			continue;
		}
		if (*p == '"')
			in_string = 1;
		else if (*p == '{' || *p == '[')
			depth++;
		else if (*p == '}' || *p == ']') {
			if (--depth == 0)
				return p + 1;
		} else if (depth == 0 && (*p == ',' || *p == ' ' || *p == '\t' || *p == '\r' ||
		                          *p == '\n'))
			return p;
	}
	return end;
}

/* Decodes every element of the checked array span into a new array of keys. */
static int decode_key_array(inferq_client_t *c, inferq__span_t array, inferq_key_t ***out,
                            size_t *count)
{
	const char *p = array.p + 1, *end = array.p + array.len - 1;
	inferq_key_t **keys = NULL, **grown;
	size_t n = 0;
	int rc = 0;

	while (rc == 0) {
		inferq__span_t element;

		while (p < end && (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n' || *p == ','))
			p++;
		if (p >= end)
			break;
		element.p = p;
		p = value_end(p, end);
		element.len = (size_t)(p - element.p);
		grown = inferq__realloc(keys, (n + 1) * sizeof(*keys));
		if (!grown) {
			rc = inferq__fail(c, INFERQ_ENOMEM, "out of memory");
			break;
		}
		keys = grown;
		rc = decode_key(c, element, &keys[n]);
		if (rc == 0)
			n++;
	}
	if (rc != 0) {
		inferq_key_list_free(keys, n);
		return rc;
	}
	*out = keys;
	*count = n;
	return 0;
}

static int key_response(inferq_client_t *c, inferq_key_t **out)
{
	inferq__span_t object;
	int rc = inferq__checked_response(c, &object);

	return rc != 0 ? rc : decode_key(c, object, out);
}

int inferq_keys_create(inferq_client_t *c, const char *name, const char *role,
                       const char *const *models, size_t model_count, const char *expires_in,
                       inferq_key_t **out)
{
	inferq__sb_t body = {0};
	inferq__call_t call = {0};
	int rc;

	*out = NULL;
	if ((rc = inferq__check_arg(c, "name", name)) != 0 ||
	    (rc = inferq__check_arg(c, "role", role)) != 0)
		return rc;
	for (size_t i = 0; i < model_count; i++) {
		if ((rc = inferq__check_arg(c, "models", models[i])) != 0)
			return rc;
	}

	inferq__sb_puts(&body, "{");
	inferq__sb_json_field(&body, "name", name);
	inferq__sb_puts(&body, ",");
	inferq__sb_json_field(&body, "role", role);
	if (models) {
		inferq__sb_puts(&body, ",\"models\":[");
		for (size_t i = 0; i < model_count; i++) {
			if (i > 0)
				inferq__sb_puts(&body, ",");
			inferq__sb_json_string(&body, models[i]);
		}
		inferq__sb_puts(&body, "]");
	}
	if (expires_in) {
		inferq__sb_puts(&body, ",");
		inferq__sb_json_field(&body, "expires_in", expires_in);
	}
	inferq__sb_puts(&body, "}");
	if (body.oom) {
		inferq__sb_free(&body);
		return inferq__fail(c, INFERQ_ENOMEM, "out of memory");
	}

	/* A 503 applied nothing and is retried; a lost response after sending is not. */
	call.path = "/v1/admin/keys";
	call.body = body.data;
	call.body_len = body.len;
	call.retry = INFERQ__RETRY_UNSENT;
	rc = inferq__call(c, &call);
	inferq__sb_free(&body);
	return rc != 0 ? rc : key_response(c, out);
}

int inferq_keys_list(inferq_client_t *c, inferq_key_t ***out, size_t *count)
{
	inferq__call_t call = {0};
	inferq__span_t object, data;
	int rc;

	*out = NULL;
	*count = 0;
	call.path = "/v1/admin/keys";
	call.retry = INFERQ__RETRY_ALWAYS;
	if ((rc = inferq__call(c, &call)) != 0 || (rc = inferq__checked_response(c, &object)) != 0)
		return rc;
	if (inferq__json_get(object, "data", &data) != 0 || data.len < 2 || data.p[0] != '[')
		return inferq__fail(c, INFERQ_EPROTO, "the response lacks the array \"data\": %.200s",
		                    c->response.data);
	return decode_key_array(c, data, out, count);
}

int inferq_keys_revoke(inferq_client_t *c, const char *name, inferq_key_t **out)
{
	inferq__sb_t body = {0};
	inferq_key_t *k = NULL;
	int rc;

	if (out)
		*out = NULL;
	if ((rc = inferq__check_arg(c, "name", name)) != 0)
		return rc;
	inferq__sb_puts(&body, "{");
	inferq__sb_json_field(&body, "name", name);
	inferq__sb_puts(&body, "}");
	rc = inferq__post(c, "/v1/admin/keys/revoke", &body, NULL, NULL);
	if (rc != 0 || !out)
		return rc;
	rc = key_response(c, &k);
	*out = k;
	return rc;
}
