/*
 * API keys in memory and the checks of every request (see auth.h).
 *
 * The table contains every key of the store, revoked and expired ones too, in
 * creation order and in a hash table by SHA-256 digest. A request's key is
 * hashed once; the digest picks a bucket and is compared with each entry
 * in constant time (CRYPTO_memcmp). Which bucket is walked depends on the
 * digest of the presented text only, which tells a guesser nothing about
 * stored keys.
 *
 * Changes follow the commit rule of the job queue: a new or revoked key
 * changes memory at once (a revoked key stops working at once), its store
 * operation joins the collecting batch, the response waits for the commit,
 * and a failed commit rolls the change back through auth_undo().
 * last_used_at changes in memory on every use and reaches the store at
 * most once a minute per key (the first time a minute after the key was
 * loaded or created), and at a clean stop, so a crash loses at most a
 * minute of it.
 *
 * SPDX-License-Identifier: MIT
 */
#include "auth.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "alloc.h"
#include "clock.h"
#include "error.h"
#include "inferq_error.h"
#include "json.h"
#include "log.h"
#include "render.h"
#include "request.h"
#include "server.h"

#define LIMITER_MAX_ADDRESSES 10000
#define ADMIN_KEY_FILE "admin.key"
#define ADMIN_KEY_NAME "admin"

struct auth {
	int enabled; /* 0 with --auth none */
	auth_key_t **keys; /* creation order */
	size_t count, cap;
	auth_key_t **buckets; /* by digest; nbuckets is a power of two */
	size_t nbuckets;
	auth_limiter_t *limiter;
	auth_cidr_t proxies[CONFIG_MAX_PROXIES];
	size_t proxy_count;
	EVP_MD *sha256;         /* fetched once */
	EVP_MD_CTX *digest_ctx; /* reused by every hash, on the loop thread */
};

/* --- The key table ------------------------------------------------------ */

/*
 * Hashes text with SHA-256. The algorithm is fetched and the context made
 * once per server: EVP_Digest did both on every call, which cost more than
 * the hash of a key and 8 % of a lifecycle request's instructions.
 */
static void sha256(auth_t *a, const char *text, size_t len, unsigned char digest[32])
{
	unsigned int digest_len = 0;

	IQ_ASSERT(EVP_DigestInit_ex2(a->digest_ctx, a->sha256, NULL) == 1 &&
		  EVP_DigestUpdate(a->digest_ctx, text, len) == 1 &&
		  EVP_DigestFinal_ex(a->digest_ctx, digest, &digest_len) == 1 && digest_len == 32);
}

static void hex_encode(const unsigned char *bytes, size_t n, char *out)
{
	static const char digits[] = "0123456789abcdef";

	for (size_t i = 0; i < n; i++) {
		out[2 * i] = digits[bytes[i] >> 4];
		out[2 * i + 1] = digits[bytes[i] & 0x0f];
	}
	out[2 * n] = '\0';
}

static int nibble(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

/* Decodes 64 lowercase hex digits; returns 0 or INFERQ_EINVAL. */
static int hex_decode(const char *hex, unsigned char out[32])
{
	for (size_t i = 0; i < 32; i++) {
		int hi = nibble(hex[2 * i]), lo = hi < 0 ? -1 : nibble(hex[2 * i + 1]);

		if (lo < 0)
			return INFERQ_EINVAL;
		out[i] = (unsigned char)(hi << 4 | lo);
	}
	return 0;
}

static size_t bucket_of(const auth_t *a, const unsigned char digest[32])
{
	uint64_t h;

	memcpy(&h, digest, sizeof(h));
	return (size_t)(h & (a->nbuckets - 1));
}

static void rehash(auth_t *a, size_t nbuckets)
{
	free(a->buckets);
	a->nbuckets = nbuckets;
	a->buckets = xcalloc(nbuckets, sizeof(*a->buckets));
	for (size_t i = 0; i < a->count; i++) {
		auth_key_t *k = a->keys[i];
		size_t b = bucket_of(a, k->digest);

		k->bucket_next = a->buckets[b];
		a->buckets[b] = k;
	}
}

static void table_add(auth_t *a, auth_key_t *k)
{
	size_t b;

	if (a->count == a->cap) {
		a->cap = a->cap ? a->cap * 2 : 16;
		a->keys = xrealloc(a->keys, a->cap * sizeof(*a->keys));
	}
	a->keys[a->count++] = k;
	if (a->count > a->nbuckets) {
		rehash(a, a->nbuckets ? a->nbuckets * 2 : 64);
		return;
	}
	b = bucket_of(a, k->digest);
	k->bucket_next = a->buckets[b];
	a->buckets[b] = k;
}

static void key_free(auth_key_t *k)
{
	for (size_t i = 0; i < k->pattern_count; i++)
		free(k->patterns[i]);
	free(k->patterns);
	rbuf_unref(k->rec.models);
	free(k);
}

static void table_remove(auth_t *a, auth_key_t *k)
{
	auth_key_t **link = &a->buckets[bucket_of(a, k->digest)];
	size_t i;

	while (*link && *link != k)
		link = &(*link)->bucket_next;
	if (*link)
		*link = k->bucket_next;
	for (i = 0; i < a->count && a->keys[i] != k; i++)
		;
	if (i < a->count) {
		memmove(&a->keys[i], &a->keys[i + 1], (a->count - i - 1) * sizeof(*a->keys));
		a->count--;
	}
	key_free(k);
}

/* Finds the key with digest, comparing every candidate of its bucket in constant time. */
static auth_key_t *find_digest(const auth_t *a, const unsigned char digest[32])
{
	auth_key_t *found = NULL;

	if (a->nbuckets == 0)
		return NULL;
	for (auth_key_t *k = a->buckets[bucket_of(a, digest)]; k; k = k->bucket_next) {
		if (CRYPTO_memcmp(k->digest, digest, 32) == 0)
			found = k;
	}
	return found;
}

static auth_key_t *find_name(const auth_t *a, const char *name)
{
	for (size_t i = 0; i < a->count; i++) {
		if (strcmp(a->keys[i]->rec.name, name) == 0)
			return a->keys[i];
	}
	return NULL;
}

/* Decodes the JSON array of patterns in k->rec.models into k->patterns. */
static int decode_patterns(auth_key_t *k)
{
	const rbuf_t *models = k->rec.models;
	json_span_t root, item;
	json_iter_t it;

	if (!models || json_validate(models->data, models->len, 2, &root, NULL) != 0 ||
	    root.type != JSON_TYPE_ARRAY)
		return INFERQ_EINVAL;
	json_array_begin(&it, root);
	while (json_array_next(&it, &item)) {
		buf_t text = BUF_INIT;

		if (item.type != JSON_TYPE_STRING || k->pattern_count >= AUTH_MAX_PATTERNS)
			return INFERQ_EINVAL;
		json_string_decode(item, &text);
		k->patterns = xrealloc(k->patterns, (k->pattern_count + 1) * sizeof(char *));
		k->patterns[k->pattern_count++] = xstrdup(text.data ? text.data : "");
		buf_free(&text);
	}
	return 0;
}

/* Makes an in-memory key of a store record, taking over rec->models. */
static int key_from_record(store_key_t *rec, auth_key_t **out)
{
	auth_key_t *k = xcalloc(1, sizeof(*k));

	k->rec = *rec;
	rec->models = NULL;
	k->persisted_used_at = k->rec.last_used_at;
	k->persisted_mono = clock_mono_ms();
	if (auth_role_parse(k->rec.role, strlen(k->rec.role), &k->role) != 0 ||
	    strlen(k->rec.hash) != STORE_KEY_HASH_HEX || hex_decode(k->rec.hash, k->digest) != 0 ||
	    decode_patterns(k) != 0) {
		key_free(k);
		return INFERQ_EINVAL;
	}
	*out = k;
	return 0;
}

static int load_key(void *ctx, store_key_t *rec)
{
	auth_t *a = ctx;
	auth_key_t *k;

	if (key_from_record(rec, &k) != 0) {
		log_error("auth", "API key \"%s\" in the store is invalid (role, hash or models); "
				  "the store was changed by hand",
			  rec->name);
		rbuf_unref(rec->models);
		return INFERQ_EINVAL;
	}
	table_add(a, k);
	return 0;
}

/* --- Roles and rendering ------------------------------------------------ */

const char *auth_role_name(unsigned role)
{
	switch (role) {
	case AUTH_ROLE_ADMIN: return "admin";
	case AUTH_ROLE_CLIENT: return "client";
	case AUTH_ROLE_WORKER: return "worker";
	}
	return "none";
}

int auth_role_parse(const char *name, size_t len, unsigned *out)
{
	static const unsigned roles[] = {AUTH_ROLE_ADMIN, AUTH_ROLE_CLIENT, AUTH_ROLE_WORKER};

	for (size_t i = 0; i < sizeof(roles) / sizeof(roles[0]); i++) {
		const char *text = auth_role_name(roles[i]);

		if (strlen(text) == len && memcmp(text, name, len) == 0) {
			*out = roles[i];
			return 0;
		}
	}
	return INFERQ_EINVAL;
}

void auth_key_render(buf_t *out, const auth_key_t *k, const char *key_text)
{
	buf_puts(out, "{\"name\":");
	json_write_string(out, k->rec.name, strlen(k->rec.name));
	if (key_text)
		buf_printf(out, ",\"key\":\"%s\"", key_text);
	buf_printf(out, ",\"key_prefix\":\"%.8s\",\"role\":\"%s\",\"models\":", k->rec.hash,
		   auth_role_name(k->role));
	buf_append(out, k->rec.models->data, k->rec.models->len);
	render_time_field(out, "created_at", k->rec.created_at);
	if (k->rec.last_used_at)
		render_time_field(out, "last_used_at", k->rec.last_used_at);
	if (k->rec.expires_at)
		render_time_field(out, "expires_at", k->rec.expires_at);
	if (k->rec.revoked_at)
		render_time_field(out, "revoked_at", k->rec.revoked_at);
	buf_putc(out, '}');
}

size_t auth_key_count(const server_t *s)
{
	return s->auth->count;
}

const auth_key_t *auth_key_at(const server_t *s, size_t i)
{
	return s->auth->keys[i];
}

/* --- Store operations --------------------------------------------------- */

static store_op_t *add_key_op(store_batch_t *b, store_op_kind_t kind, const auth_key_t *k)
{
	store_op_t *op = store_batch_add(b, kind);

	op->key = k->rec;
	op->key.models = rbuf_ref(k->rec.models);
	return op;
}

static void record_last_use(server_t *s, auth_key_t *k)
{
	add_key_op(&s->collecting->batch, STORE_OP_KEY_USED, k);
	k->persisted_used_at = k->rec.last_used_at;
	k->persisted_mono = clock_mono_ms();
}

void auth_flush_last_used(server_t *s)
{
	auth_t *a = s->auth;

	for (size_t i = 0; a && i < a->count; i++) {
		if (a->keys[i]->rec.last_used_at > a->keys[i]->persisted_used_at)
			record_last_use(s, a->keys[i]);
	}
}

void auth_undo(server_t *s, const store_op_t *op)
{
	auth_key_t *k = find_name(s->auth, op->key.name);

	if (!k)
		return;
	switch (op->kind) {
	case STORE_OP_KEY_PUT:
		if (strcmp(k->rec.hash, op->key.hash) == 0)
			table_remove(s->auth, k);
		break;
	case STORE_OP_KEY_REVOKE: k->rec.revoked_at = 0; break;
	case STORE_OP_KEY_USED: k->persisted_used_at = 0; break;
	default: break;
	}
}

/* Fills a new key with random text; writes the text into key_text. */
static auth_key_t *new_key(auth_t *a, const char *name, unsigned role, rbuf_t *models,
			   int64_t now_ms, int64_t expires_at, char key_text[AUTH_KEY_TEXT_LEN + 1])
{
	auth_key_t *k = xcalloc(1, sizeof(*k));
	unsigned char secret[32];

	random_bytes(secret, sizeof(secret));
	memcpy(key_text, AUTH_KEY_PREFIX, strlen(AUTH_KEY_PREFIX));
	hex_encode(secret, sizeof(secret), key_text + strlen(AUTH_KEY_PREFIX));
	sha256(a, key_text, AUTH_KEY_TEXT_LEN, k->digest);
	hex_encode(k->digest, sizeof(k->digest), k->rec.hash);

	snprintf(k->rec.name, sizeof(k->rec.name), "%s", name);
	snprintf(k->rec.role, sizeof(k->rec.role), "%s", auth_role_name(role));
	k->role = role;
	k->rec.models = rbuf_ref(models);
	k->rec.created_at = now_ms;
	k->rec.expires_at = expires_at;
	k->persisted_mono = clock_mono_ms();
	IQ_ASSERT(decode_patterns(k) == 0);
	return k;
}

int auth_key_create(server_t *s, const char *name, unsigned role, rbuf_t *models,
		    int64_t expires_at, char key_text[AUTH_KEY_TEXT_LEN + 1],
		    const auth_key_t **out)
{
	auth_key_t *k;

	if (find_name(s->auth, name))
		return INFERQ_ECONFLICT;
	k = new_key(s->auth, name, role, models, clock_wall_ms(), expires_at, key_text);
	table_add(s->auth, k);
	add_key_op(&s->collecting->batch, STORE_OP_KEY_PUT, k);
	log_info("auth", "created API key name=%s role=%s hash=%.8s", k->rec.name,
		 auth_role_name(role), k->rec.hash);
	*out = k;
	return 0;
}

int auth_key_merge(server_t *s, store_key_t *rec)
{
	auth_key_t *k = find_name(s->auth, rec->name);

	if (k && strcmp(k->rec.hash, rec->hash) != 0)
		return INFERQ_ECONFLICT;
	if (k) {
		if (rec->revoked_at == 0 || k->rec.revoked_at != 0)
			return 0;
		k->rec.revoked_at = rec->revoked_at;
		add_key_op(&s->collecting->batch, STORE_OP_KEY_REVOKE, k);
		log_info("auth", "API key name=%s hash=%.8s was revoked on another node",
			 k->rec.name, k->rec.hash);
		return 0;
	}
	if (key_from_record(rec, &k) != 0)
		return INFERQ_EINVAL;
	table_add(s->auth, k);
	add_key_op(&s->collecting->batch, STORE_OP_KEY_PUT, k);
	log_info("auth", "API key name=%s role=%s hash=%.8s was created on another node",
		 k->rec.name, k->rec.role, k->rec.hash);
	return 0;
}

static int key_works(const auth_key_t *k, int64_t now_ms)
{
	return k->rec.revoked_at == 0 && (k->rec.expires_at == 0 || now_ms < k->rec.expires_at);
}

int auth_key_revoke(server_t *s, const char *name, const auth_key_t **out)
{
	auth_t *a = s->auth;
	auth_key_t *k = find_name(a, name);
	int64_t now = clock_wall_ms();
	size_t admins = 0;

	if (!k)
		return INFERQ_ENOTFOUND;
	*out = k;
	if (k->rec.revoked_at)
		return 0;
	for (size_t i = 0; i < a->count; i++) {
		if (a->keys[i] != k && a->keys[i]->role == AUTH_ROLE_ADMIN && key_works(a->keys[i], now))
			admins++;
	}
	if (k->role == AUTH_ROLE_ADMIN && key_works(k, now) && admins == 0)
		return INFERQ_ECONFLICT;
	k->rec.revoked_at = now;
	add_key_op(&s->collecting->batch, STORE_OP_KEY_REVOKE, k);
	log_info("auth", "revoked API key name=%s role=%s hash=%.8s", k->rec.name,
		 auth_role_name(k->role), k->rec.hash);
	return 0;
}

/* --- Start: load, or create the first admin key -------------------------- */

static void on_bootstrap_commit(store_batch_t *batch, void *ctx)
{
	*(int *)ctx = 1;
}

/* Commits one batch before the server listens, running the loop until it is done. */
static int commit_now(server_t *s, store_batch_t *b)
{
	int done = 0;

	IQ_ASSERT(store_commit(s->store, b, on_bootstrap_commit, &done) == 0);
	while (!done)
		uv_run(s->loop, UV_RUN_ONCE);
	return b->result;
}

/* Writes text and a newline to a new file at path with mode 0600, then fsyncs it and its dir. */
static int write_key_file(const char *dir, const char *path, const char *text)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
	size_t len = strlen(text);
	int ok, dir_fd;

	if (fd < 0)
		return -errno;
	ok = fchmod(fd, 0600) == 0 && write(fd, text, len) == (ssize_t)len &&
	     write(fd, "\n", 1) == 1 && fsync(fd) == 0;
	if (close(fd) != 0)
		ok = 0;
	if (!ok) {
		int saved = errno;

		unlink(path);
		return -saved;
	}
	dir_fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dir_fd >= 0) {
		fsync(dir_fd);
		close(dir_fd);
	}
	return 0;
}

static int bootstrap(server_t *s)
{
	char path[sizeof(s->config.data_dir) + sizeof(ADMIN_KEY_FILE) + 1];
	char key_text[AUTH_KEY_TEXT_LEN + 1];
	rbuf_t *models = rbuf_from_str("[\"*\"]");
	store_batch_t batch;
	auth_key_t *k;
	int rc;

	snprintf(path, sizeof(path), "%s/%s", s->config.data_dir, ADMIN_KEY_FILE);
	k = new_key(s->auth, ADMIN_KEY_NAME, AUTH_ROLE_ADMIN, models, clock_wall_ms(), 0, key_text);
	rbuf_unref(models);

	rc = write_key_file(s->config.data_dir, path, key_text);
	explicit_bzero(key_text, sizeof(key_text));
	if (rc == -EEXIST) {
		log_error("auth", "%s exists, but the store has no API keys, so the file was not "
				  "created for this store (it is left from a start that failed, or "
				  "was copied in): move it away and start again to create a new "
				  "admin key",
			  path);
		key_free(k);
		return INFERQ_EINVAL;
	}
	if (rc < 0) {
		log_error("auth", "cannot write the admin key to %s: %s; check the data dir's "
				  "permissions and free space",
			  path, strerror(-rc));
		key_free(k);
		return INFERQ_EIO;
	}

	store_batch_init(&batch);
	add_key_op(&batch, STORE_OP_KEY_PUT, k);
	rc = commit_now(s, &batch);
	if (rc != 0) {
		log_error("auth", "cannot save the admin key: %s", batch.error);
		unlink(path);
		store_batch_free(&batch);
		key_free(k);
		return INFERQ_EIO;
	}
	store_batch_free(&batch);
	table_add(s->auth, k);
	log_info("auth", "created the admin key \"%s\" and wrote it to %s (mode 0600); pass it "
			 "as \"Authorization: Bearer KEY\"",
		 ADMIN_KEY_NAME, path);
	return 0;
}

int auth_open(server_t *s)
{
	auth_t *a = xcalloc(1, sizeof(*a));
	int rc;

	s->auth = a;
	a->enabled = !s->config.auth_none;
	a->sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
	a->digest_ctx = EVP_MD_CTX_new();
	IQ_ASSERT(a->sha256 && a->digest_ctx);
	a->limiter = auth_limiter_new(AUTH_FAIL_LIMIT, AUTH_FAIL_WINDOW_MS, AUTH_BLOCK_MS,
				      LIMITER_MAX_ADDRESSES);
	for (size_t i = 0; i < s->config.trusted_proxy_count; i++) {
		/* config_parse checked every range already. */
		IQ_ASSERT(auth_cidr_parse(s->config.trusted_proxies[i], &a->proxies[i]) == 0);
		a->proxy_count++;
	}

	rc = store_load_keys(s->store, load_key, a);
	if (rc != 0) {
		log_error("auth", "cannot load the API keys from %s/inferq.db: %s",
			  s->config.data_dir, inferq_strerror(rc));
		return rc;
	}
	log_info("auth", "loaded %zu API key%s", a->count, a->count == 1 ? "" : "s");
	if (a->count == 0 && s->keys_shared)
		log_info("auth", "no admin key is created: this node takes the API keys of the "
				 "other nodes from the database; use an admin key of theirs");
	else if (a->count == 0) {
		rc = bootstrap(s);
		if (rc != 0)
			return rc;
	}
	if (!a->enabled)
		log_warn("auth", "--auth none: every request is allowed without a key; use it only "
				 "for development on a loopback address");
	return 0;
}

void auth_close(server_t *s)
{
	auth_t *a = s->auth;

	if (!a)
		return;
	for (size_t i = 0; i < a->count; i++)
		key_free(a->keys[i]);
	free(a->keys);
	free(a->buckets);
	auth_limiter_free(a->limiter);
	EVP_MD_CTX_free(a->digest_ctx);
	EVP_MD_free(a->sha256);
	free(a);
	s->auth = NULL;
}

/* --- Checks of requests ------------------------------------------------- */

#define CHALLENGE "WWW-Authenticate: Bearer realm=\"inferq\"\r\n"
#define CHALLENGE_INVALID "WWW-Authenticate: Bearer realm=\"inferq\", error=\"invalid_token\"\r\n"

static void respond_with(http_request_t *req, int status, const char *code, const char *headers,
			 const char *fmt, ...) __attribute__((format(printf, 5, 6)));

static void respond_with(http_request_t *req, int status, const char *code, const char *headers,
			 const char *fmt, ...)
{
	buf_t body = BUF_INIT;
	buf_t message = BUF_INIT;
	va_list ap;

	va_start(ap, fmt);
	buf_vprintf(&message, fmt, ap);
	va_end(ap);
	error_body(&body, status, code, NULL, "%s", message.data);
	http_respond(req, status, NULL, headers, body.data, body.len);
	buf_free(&message);
	buf_free(&body);
}

/* Sends 401 for a request without a usable key: none, malformed, unknown, revoked or expired. */
static void reject(http_request_t *req, auth_bearer_t kind, const auth_key_t *k, const char *addr,
		   const unsigned char digest[32])
{
	char when[RFC3339_LEN + 1];

	switch (kind) {
	case AUTH_BEARER_MISSING:
		log_debug("auth", "request %llu from %s has no API key", (unsigned long long)req->id,
			  addr);
		respond_with(req, 401, "missing_api_key", CHALLENGE,
			     "missing API key: send the header \"Authorization: Bearer KEY\"");
		return;
	case AUTH_BEARER_SCHEME:
		log_debug("auth", "request %llu from %s uses another scheme than Bearer",
			  (unsigned long long)req->id, addr);
		respond_with(req, 401, "invalid_authorization", CHALLENGE,
			     "the Authorization header must use the Bearer scheme: send "
			     "\"Authorization: Bearer KEY\"");
		return;
	case AUTH_BEARER_MALFORMED:
		log_debug("auth", "request %llu from %s has a malformed Authorization header",
			  (unsigned long long)req->id, addr);
		respond_with(req, 401, "invalid_authorization", CHALLENGE,
			     "the Authorization header is malformed: send one header "
			     "\"Authorization: Bearer KEY\" with no spaces in the key");
		return;
	case AUTH_BEARER_OK: break;
	}
	if (!k) {
		log_debug("auth", "request %llu from %s has an unknown API key (hash %02x%02x%02x%02x)",
			  (unsigned long long)req->id, addr, digest[0], digest[1], digest[2],
			  digest[3]);
		respond_with(req, 401, "invalid_api_key", CHALLENGE_INVALID,
			     "invalid API key: check that the whole key was sent; an admin creates "
			     "keys with `inferq keys create`");
	} else if (k->rec.revoked_at) {
		log_debug("auth", "request %llu from %s uses revoked API key %s",
			  (unsigned long long)req->id, addr, k->rec.name);
		respond_with(req, 401, "invalid_api_key", CHALLENGE_INVALID,
			     "the API key was revoked; ask an admin for a new key");
	} else {
		clock_format_rfc3339(k->rec.expires_at, when);
		log_debug("auth", "request %llu from %s uses expired API key %s",
			  (unsigned long long)req->id, addr, k->rec.name);
		respond_with(req, 401, "invalid_api_key", CHALLENGE_INVALID,
			     "the API key expired at %s; ask an admin for a new key", when);
	}
}

/* Returns the roles that may use a route, as text for a 403 message. */
static const char *roles_text(unsigned roles)
{
	if ((roles & AUTH_ROLE_CLIENT) && (roles & AUTH_ROLE_WORKER))
		return "client, worker or admin";
	if (roles & AUTH_ROLE_CLIENT)
		return "client or admin";
	if (roles & AUTH_ROLE_WORKER)
		return "worker or admin";
	return "admin";
}

static void forbid(http_request_t *req, const auth_key_t *k, unsigned roles)
{
	char path[64];

	log_debug("auth", "request %llu: API key %s with role %s may not use %s",
		  (unsigned long long)req->id, k->rec.name, auth_role_name(k->role),
		  excerpt(req->path, req->path_len, path, sizeof(path)));
	respond_with(req, 403, "permission_denied", NULL,
		     "API key \"%s\" has role %s, which may not use %s %s; use a key with role %s",
		     k->rec.name, auth_role_name(k->role), req->method_name,
		     excerpt(req->path, req->path_len, path, sizeof(path)), roles_text(roles));
}

/* Responds to a failed authentication: 401, or 429 once addr is over the failure limit. */
static void fail(server_t *s, http_request_t *req, auth_bearer_t kind, const auth_key_t *k,
		 const char *addr, const unsigned char digest[32])
{
	auth_t *a = s->auth;
	int64_t mono = clock_mono_ms();
	int64_t left = auth_limiter_blocked(a->limiter, addr, mono);
	char retry[96];

	if (left == 0 && auth_limiter_fail(a->limiter, addr, mono)) {
		log_warn("auth", "more than %d failed authentications from %s within %d s: "
				 "responding 429 to its failures for %d s",
			 AUTH_FAIL_LIMIT, addr, AUTH_FAIL_WINDOW_MS / 1000, AUTH_BLOCK_MS / 1000);
		left = auth_limiter_blocked(a->limiter, addr, mono);
	}
	if (left == 0) {
		reject(req, kind, k, addr, digest);
		return;
	}
	/*
	 * Unlike other 429s this one carries x-should-retry: false, because the
	 * official SDKs would otherwise sleep Retry-After and repeat the request
	 * with the same wrong key, hanging a misconfigured client for a minute.
	 */
	snprintf(retry, sizeof(retry), "Retry-After: %lld\r\nx-should-retry: false\r\n",
		 (long long)((left + 999) / 1000));
	respond_with(req, 429, "too_many_auth_failures", retry,
		     "too many failed authentications from %s; retry after %lld s with a valid "
		     "API key",
		     addr, (long long)((left + 999) / 1000));
}

int auth_check(server_t *s, http_request_t *req, unsigned roles)
{
	auth_t *a = s->auth;
	unsigned char digest[32] = {0};
	char addr[AUTH_ADDR_LEN];
	const char *key = NULL;
	size_t key_len = 0;
	auth_key_t *k = NULL;
	auth_bearer_t kind;
	int64_t now;

	req->user = NULL;
	if (!a->enabled)
		return 0;
	now = clock_wall_ms();
	kind = auth_read_bearer(req, &key, &key_len);
	if (kind == AUTH_BEARER_OK) {
		/* Keep-alive clients send the same key on every request: hash it once per connection. */
		if (!http_request_memo_get(req, key, key_len, digest)) {
			sha256(a, key, key_len, digest);
			http_request_memo_put(req, key, key_len, digest);
		}
		k = find_digest(a, digest);
	}
	if (!k || !key_works(k, now)) {
		auth_request_address(s, req, addr);
		fail(s, req, kind, k, addr, digest);
		return INFERQ_EAUTH;
	}

	/* A valid key passes even from a blocked address, so clients sharing it with a guesser work. */
	k->rec.last_used_at = now;
	if (clock_mono_ms() - k->persisted_mono >= AUTH_LAST_USED_PERSIST_MS)
		record_last_use(s, k);
	if (k->role != AUTH_ROLE_ADMIN && !(k->role & roles)) {
		forbid(req, k, roles);
		return INFERQ_EAUTH;
	}
	req->user = k;
	return 0;
}

void auth_request_address(const server_t *s, const http_request_t *req, char out[AUTH_ADDR_LEN])
{
	const auth_t *a = s->auth;

	if (a == NULL)
		auth_client_address(req, NULL, 0, out);
	else
		auth_client_address(req, a->proxies, a->proxy_count, out);
}

int auth_covers(const server_t *s, const http_request_t *req, const char *model,
		size_t model_len)
{
	const auth_key_t *k = req->user;

	if (!s->auth->enabled)
		return 1;
	if (!k)
		return 0;
	if (k->role == AUTH_ROLE_ADMIN)
		return 1;
	for (size_t i = 0; i < k->pattern_count; i++) {
		if (auth_pattern_matches(k->patterns[i], strlen(k->patterns[i]), model, model_len))
			return 1;
	}
	return 0;
}

void auth_respond_model_not_found(http_request_t *req, const char *model, size_t model_len)
{
	respond_error(req, 404, "not_found", "model",
		      "model %.*s not found; check the model name and that your API key covers it",
		      (int)model_len, model);
}

int auth_still_valid(const server_t *s, const http_request_t *req)
{
	const auth_key_t *k = req->user;

	return !s->auth->enabled || (k && key_works(k, clock_wall_ms()));
}

void auth_respond_key_gone(http_request_t *req)
{
	respond_with(req, 401, "invalid_api_key", CHALLENGE_INVALID,
		     "the API key was revoked or expired while the request waited; ask an admin "
		     "for a new key");
}
