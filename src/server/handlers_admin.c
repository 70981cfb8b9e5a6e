/*
 * Admin routes for API keys: create, list and revoke. Only keys with the
 * admin role reach them (see routes.c). A new key's text is in the create
 * response only, sent once after the commit; the server keeps its hash.
 * Every response that shows keys waits for the commit of the changes
 * recorded before it, so none shows a key change that could still be
 * rolled back.
 *
 * SPDX-License-Identifier: MIT
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "auth.h"
#include "clock.h"
#include "error.h"
#include "inferq_error.h"
#include "json.h"
#include "log.h"
#include "render.h"
#include "request.h"
#include "routes.h"

#define KEYS_PATH "/v1/admin/keys/"
#define MAX_EXPIRES_MS (3650LL * 86400 * 1000)

static int name_char_ok(unsigned char ch)
{
	return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
	       ch == '.' || ch == '_' || ch == '-';
}

/* Checks a key name: 1 to 64 characters of A-Z a-z 0-9 . _ -. */
static int check_name(const char *name, size_t len, input_error_t *err)
{
	char shown[64];
	size_t i;

	for (i = 0; i < len && name_char_ok((unsigned char)name[i]); i++)
		;
	if (len == 0 || len > STORE_KEY_NAME_MAX || i < len) {
		err->status = 400;
		err->code = "invalid_field";
		err->param = "name";
		snprintf(err->message, sizeof(err->message),
			 "name \"%s\" is not a valid key name; use 1 to %d characters of A-Z a-z "
			 "0-9 . _ -, such as \"web-app\"",
			 excerpt(name, len, shown, sizeof(shown)), STORE_KEY_NAME_MAX);
		return INFERQ_EINVAL;
	}
	return 0;
}

/* Appends one checked pattern to the JSON array in out. */
static int add_pattern(const serve_config_t *c, json_span_t item, size_t index, buf_t *out,
		       input_error_t *err)
{
	buf_t text = BUF_INIT;
	char shown[64];
	int rc = 0;

	if (item.type != JSON_TYPE_STRING || json_string_decode(item, &text) != 0 ||
	    auth_pattern_check(text.data ? text.data : "", text.len, c->max_model_length) != 0)
		rc = input_fail(err, INFERQ_EINVAL, "invalid_field", "models",
				 "models[%zu] %s is not a valid model pattern; use \"*\", a model "
				 "name, or a prefix ending in \"/*\" such as \"my-org/*\"",
				 index, excerpt(item.start, item.len, shown, sizeof(shown)));
	else
		json_write_string(out, text.data, text.len);
	buf_free(&text);
	return rc;
}

/*
 * Reads models into a JSON array of checked patterns in out. An admin key
 * covers every model, so for it models may be left out or be ["*"] only.
 */
static int read_models(const serve_config_t *c, const body_t *b, unsigned role, buf_t *out,
		       input_error_t *err)
{
	const json_span_t *v = body_field(b, "models");
	json_span_t item;
	json_iter_t it;
	size_t n = 0;

	if (!v && role == AUTH_ROLE_ADMIN) {
		buf_puts(out, "[\"*\"]");
		return 0;
	}
	if (!v) {
		err->status = 400;
		err->code = "missing_field";
		err->param = "models";
		snprintf(err->message, sizeof(err->message),
			 "field \"models\" is required for a client or worker key; send the model "
			 "patterns it may use, such as [\"my-org/*\"]");
		return INFERQ_EINVAL;
	}
	if (v->type != JSON_TYPE_ARRAY)
		return input_fail(err, INFERQ_EINVAL, "invalid_field", "models",
				   "models must be an array of model patterns such as "
				   "[\"my-org/*\"]");
	buf_putc(out, '[');
	json_array_begin(&it, *v);
	while (json_array_next(&it, &item)) {
		if (n == AUTH_MAX_PATTERNS)
			return input_fail(err, INFERQ_EINVAL, "invalid_field", "models", "models has more than %d patterns",
					   AUTH_MAX_PATTERNS);
		if (n > 0)
			buf_putc(out, ',');
		if (add_pattern(c, item, n, out, err) != 0)
			return INFERQ_EINVAL;
		n++;
	}
	buf_putc(out, ']');
	if (n == 0)
		return input_fail(err, INFERQ_EINVAL, "invalid_field", "models",
				   "models is empty; send at least one pattern such as \"my-org/*\"");
	if (role == AUTH_ROLE_ADMIN && strcmp(out->data, "[\"*\"]") != 0)
		return input_fail(err, INFERQ_EINVAL, "invalid_field", "models",
				   "an admin key covers every model; leave out models or send "
				   "[\"*\"]");
	return 0;
}

/* Reads expires_in ("30d", "12h", "90s") into *expires_at (ms since epoch), 0 when absent. */
static int read_expires(const body_t *b, int64_t now, int64_t *expires_at, input_error_t *err)
{
	buf_t text = BUF_INIT;
	int present = 0;
	int64_t ms = 0;
	char shown[64];
	int rc;

	*expires_at = 0;
	rc = read_string(b, "expires_in", 0, 64, &text, &present, err);
	if (rc == 0 && present &&
	    (clock_parse_duration(text.data ? text.data : "", text.len, 1000, &ms) != 0 ||
	     ms < 1000 || ms > MAX_EXPIRES_MS))
		rc = input_fail(err, INFERQ_EINVAL, "invalid_field", "expires_in",
				 "expires_in \"%s\" is not a duration from 1s to 3650d; send one "
				 "such as \"30d\", \"12h\" or \"90s\"",
				 excerpt(text.data ? text.data : "", text.len, shown, sizeof(shown)));
	if (rc == 0 && present)
		*expires_at = now + ms;
	buf_free(&text);
	return rc;
}

static const char *const create_fields[] = {"name", "role", "models", "expires_in", NULL};

void handle_keys_create(server_t *s, http_request_t *req)
{
	input_error_t err;
	body_t b;
	buf_t name = BUF_INIT, role_text = BUF_INIT, models = BUF_INIT, reply = BUF_INIT;
	char key_text[AUTH_KEY_TEXT_LEN + 1];
	char shown[64];
	const auth_key_t *k;
	int64_t expires_at = 0;
	unsigned role = 0;
	rbuf_t *models_json;
	int rc;

	if (body_parse(&s->config, req->body, req->body_len, create_fields, &b, &err) != 0 ||
	    read_string(&b, "name", 1, 256, &name, NULL, &err) != 0 ||
	    check_name(name.data, name.len, &err) != 0 ||
	    read_string(&b, "role", 1, 64, &role_text, NULL, &err) != 0) {
		respond_input_error(req, &err);
		goto out;
	}
	if (auth_role_parse(role_text.data, role_text.len, &role) != 0) {
		respond_error(req, 400, "invalid_field", "role",
			      "role \"%s\" is not a role; use admin, client or worker",
			      excerpt(role_text.data, role_text.len, shown, sizeof(shown)));
		goto out;
	}
	if (read_models(&s->config, &b, role, &models, &err) != 0 ||
	    read_expires(&b, clock_wall_ms(), &expires_at, &err) != 0) {
		respond_input_error(req, &err);
		goto out;
	}

	models_json = rbuf_from_buf(&models);
	rc = auth_key_create(s, name.data, role, models_json, expires_at, key_text, &k);
	rbuf_unref(models_json);
	if (rc == INFERQ_ECONFLICT) {
		/* Sent after the commit: the key with that name may be uncommitted yet. */
		error_body(&reply, 409, "key_exists", "name",
			   "an API key named \"%s\" already exists; names stay taken after a key "
			   "is revoked, so choose another name",
			   name.data);
		engine_reply_after_commit(s, req, 409, &reply);
		goto out;
	}
	auth_key_render(&reply, k, key_text);
	explicit_bzero(key_text, sizeof(key_text));
	body_add_warnings(&reply, &b);
	engine_reply_after_commit(s, req, 200, &reply);
out:
	body_free(&b);
	buf_free(&name);
	buf_free(&role_text);
	buf_free(&models);
	buf_free(&reply);
}

void handle_keys_list(server_t *s, http_request_t *req)
{
	buf_t reply = BUF_INIT;
	size_t n = auth_key_count(s);

	buf_puts(&reply, "{\"data\":[");
	for (size_t i = 0; i < n; i++) {
		if (i > 0)
			buf_putc(&reply, ',');
		auth_key_render(&reply, auth_key_at(s, i), NULL);
	}
	buf_puts(&reply, "]}");
	/* After the commit, so the list never shows a change that could be rolled back. */
	engine_reply_after_commit(s, req, 200, &reply);
}

/* Revokes the key called name[0..len) and sends its view after the commit. */
static void revoke_key(server_t *s, http_request_t *req, const char *name, size_t len)
{
	input_error_t err;
	buf_t reply = BUF_INIT;
	char text[STORE_KEY_NAME_MAX + 1];
	const auth_key_t *k = NULL;
	int rc;

	if (check_name(name, len, &err) != 0) {
		respond_input_error(req, &err);
		return;
	}
	memcpy(text, name, len);
	text[len] = '\0';
	rc = auth_key_revoke(s, text, &k);
	if (rc == INFERQ_ENOTFOUND) {
		respond_error(req, 404, "not_found", "name",
			      "no API key named \"%s\"; list the keys with GET /v1/admin/keys",
			      text);
		return;
	}
	if (rc == INFERQ_ECONFLICT) {
		error_body(&reply, 409, "last_admin_key", "name",
			   "\"%s\" is the last admin key that works; create another admin key "
			   "before you revoke it",
			   text);
		respond_json(req, 409, &reply);
		return;
	}
	auth_key_render(&reply, k, NULL);
	engine_reply_after_commit(s, req, 200, &reply);
}

static const char *const revoke_fields[] = {"name", NULL};

void handle_keys_revoke(server_t *s, http_request_t *req)
{
	input_error_t err;
	body_t b;
	buf_t name = BUF_INIT;

	if (body_parse(&s->config, req->body, req->body_len, revoke_fields, &b, &err) != 0 ||
	    read_string(&b, "name", 1, 256, &name, NULL, &err) != 0) {
		respond_input_error(req, &err);
		goto out;
	}
	revoke_key(s, req, name.data ? name.data : "", name.len);
out:
	body_free(&b);
	buf_free(&name);
}

void handle_key_delete(server_t *s, http_request_t *req)
{
	size_t prefix = strlen(KEYS_PATH);

	revoke_key(s, req, req->path + prefix, req->path_len - prefix);
}
