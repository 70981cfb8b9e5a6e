/*
 * API keys, roles and tenant isolation.
 *
 * A key is "iq_" plus 64 hex digits (32 random bytes). The server keeps
 * only the SHA-256 of each key, in the store and in a hash table in memory
 * loaded at start. A presented key is hashed, and its digest is compared in
 * constant time. A key has a role (admin, client or worker) that decides
 * which routes it may use, and model patterns (every model "*", one model
 * "org/model", or a prefix "org/" followed by "*") that decide which
 * models it sees: a model outside them answers
 * 404 exactly as a model or job that does not exist, so tenants stay
 * invisible to each other. Keys are created and revoked through the commit
 * pipeline like job changes. Key texts are never logged; log lines name a
 * key by its name or the first 8 hex digits of its hash.
 *
 * auth_rules.c has the pure parts (patterns, CIDR ranges, the failure rate
 * limiter, the client address); auth.c has the key table and the checks.
 * Everything runs on the loop thread.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef INFERQ_AUTH_H
#define INFERQ_AUTH_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "http.h"
#include "store.h"

struct server;

/* Roles, as bits so a route can list the roles it admits. Admin passes every route. */
enum {
	AUTH_ROLE_ADMIN = 1 << 0,
	AUTH_ROLE_CLIENT = 1 << 1,
	AUTH_ROLE_WORKER = 1 << 2,
};

#define AUTH_KEY_PREFIX "iq_"
#define AUTH_KEY_TEXT_LEN (3 + 64) /* "iq_" and 32 random bytes in hex, without the NUL */
#define AUTH_MAX_PATTERNS 64       /* model patterns of one key */
#define AUTH_ADDR_LEN 46           /* INET6_ADDRSTRLEN: an address as text with its NUL */

/* Failed authentications from one client address: the limit, its window and the block. */
#define AUTH_FAIL_LIMIT 20
#define AUTH_FAIL_WINDOW_MS 10000
#define AUTH_BLOCK_MS 60000
/* last_used_at is written to the store at most this often per key, and at a clean stop. */
#define AUTH_LAST_USED_PERSIST_MS 60000

/* One key in memory. rec.models is the JSON array text the store keeps. */
typedef struct auth_key {
	store_key_t rec;
	unsigned char digest[32]; /* SHA-256 of the key text */
	unsigned role;            /* one AUTH_ROLE_* bit */
	char **patterns;          /* decoded model patterns */
	size_t pattern_count;
	int64_t persisted_used_at; /* ms since epoch: last_used_at as last written to the store */
	int64_t persisted_mono;    /* ms, monotonic: when it was loaded or last_used_at written */
	struct auth_key *bucket_next;
} auth_key_t;

typedef struct auth auth_t;

/* --- Pure rules (auth_rules.c) ------------------------------------------ */

/* An address range: IPv4 (family 4) or IPv6 (family 6) address with a prefix length. */
typedef struct {
	int family;
	uint8_t addr[16]; /* network byte order; IPv4 uses the first 4 bytes */
	int prefix;       /* bits, 0-32 or 0-128 */
} auth_cidr_t;

/*
 * Parses "10.0.0.0/8", "fd00::/8", or a bare address (a /32 or /128).
 * Host bits beyond the prefix are rejected, because "10.0.0.1/8" is
 * usually a typo. Returns 0 or INFERQ_EINVAL.
 */
int auth_cidr_parse(const char *text, auth_cidr_t *out);

/*
 * Returns 1 when the address text ip (IPv4 or IPv6; an IPv4-mapped IPv6
 * address counts as its IPv4 address) is inside range, else 0.
 */
int auth_cidr_contains(const auth_cidr_t *range, const char *ip);

/*
 * Returns 1 when the host of a --listen value ("host:port", "[v6]:port")
 * is a loopback address: 127.0.0.0/8, ::1 or localhost; else 0.
 */
int auth_listen_is_loopback(const char *listen);

/*
 * Checks one model pattern: "*", a model name, or a model-name prefix
 * ending in "/" followed by "*". Model names are 1 to
 * max_model_length characters of A-Z a-z 0-9 . _ : / -. Returns 0 or
 * INFERQ_EINVAL.
 */
int auth_pattern_check(const char *pattern, size_t len, size_t max_model_length);

/*
 * Returns 1 when pattern covers model, else 0. "*" covers every model. A
 * prefix pattern ("org/" then "*") covers every model that starts with
 * "org/" and has more after it, nested names such as "org/a/b" too. Any
 * other pattern covers only the model of the same name.
 */
int auth_pattern_matches(const char *pattern, size_t pattern_len, const char *model,
			 size_t model_len);

/* Why a request carries no usable key; AUTH_BEARER_OK when it carries one. */
typedef enum {
	AUTH_BEARER_OK,
	AUTH_BEARER_MISSING,   /* no Authorization header, or "Bearer" with no key */
	AUTH_BEARER_SCHEME,    /* another scheme, such as Basic */
	AUTH_BEARER_MALFORMED, /* two Authorization headers, or a key with spaces */
} auth_bearer_t;

/*
 * Reads the key of an "Authorization: Bearer KEY" header of req. The
 * scheme is matched without regard to case (RFC 9110 section 11.1), so
 * "bearer KEY" works; one or more spaces may follow it. Stores the key's
 * span (inside req's headers) in *key and *len on AUTH_BEARER_OK.
 */
auth_bearer_t auth_read_bearer(const http_request_t *req, const char **key, size_t *len);

/*
 * Writes the client address of req into out: its peer's IP, or, when the
 * peer is inside one of the proxies ranges and sent X-Forwarded-For, the
 * last address of the last X-Forwarded-For header (the one the proxy
 * added). A last hop that is not an IP address is ignored.
 */
void auth_client_address(const http_request_t *req, const auth_cidr_t *proxies,
			 size_t proxy_count, char out[AUTH_ADDR_LEN]);

/* Counts failed authentications per client address and blocks an address over the limit. */
typedef struct auth_limiter auth_limiter_t;

/*
 * Creates a limiter: an address with more than max_failures failures
 * within window_ms is blocked for block_ms. At most max_entries addresses
 * are tracked. When the table is full and no entry has run out, further
 * addresses are not tracked, so the limiter fails open instead of growing.
 */
auth_limiter_t *auth_limiter_new(uint32_t max_failures, int64_t window_ms, int64_t block_ms,
				 size_t max_entries);
void auth_limiter_free(auth_limiter_t *l);
/* Returns the ms left of addr's block at now_ms (monotonic), or 0 when not blocked. */
int64_t auth_limiter_blocked(auth_limiter_t *l, const char *addr, int64_t now_ms);
/* Records a failure of addr at now_ms; returns 1 when it started a block, else 0. */
int auth_limiter_fail(auth_limiter_t *l, const char *addr, int64_t now_ms);

/* --- Keys and checks (auth.c) ------------------------------------------- */

/*
 * Loads the keys from the store. When the store has none, creates the
 * admin key "admin", writes it to DATA_DIR/admin.key (mode 0600, created
 * exclusively and fsynced) and commits it before returning. The log names
 * the file, never the key. Call after store_open and before listening,
 * because it runs the loop until that commit is done. Returns 0, or INFERQ_EIO /
 * INFERQ_EINVAL after logging the cause.
 */
int auth_open(struct server *s);
/* Frees the key table and the limiter. */
void auth_close(struct server *s);

/*
 * Decides whether req may use a route that admits roles (AUTH_ROLE_*
 * bits). Returns 0 when allowed and remembers the key on req for
 * auth_covers(). Otherwise sends 401 (no usable key, with
 * WWW-Authenticate), 403 (role) or 429 (the client address is blocked
 * after failures) and returns INFERQ_EAUTH. With --auth none every request
 * is allowed.
 */
int auth_check(struct server *s, http_request_t *req, unsigned roles);

/*
 * Writes the client address of req into out, as the limit on failed
 * authentications uses it: auth_client_address() with the --trusted-proxy
 * ranges. Before auth_open() and after auth_close() it is the peer's IP.
 */
void auth_request_address(const struct server *s, const http_request_t *req,
			  char out[AUTH_ADDR_LEN]);

/*
 * Returns 1 when the key that auth_check() accepted for req covers model
 * (admin keys cover every model, and so does --auth none), else 0.
 */
int auth_covers(const struct server *s, const http_request_t *req, const char *model,
		size_t model_len);

/*
 * Sends 404 for a model that req's key does not cover, on the routes that
 * name no job (submit, metrics, clear, claim). The body depends only on the
 * model name, never on whether the model has jobs.
 */
void auth_respond_model_not_found(http_request_t *req, const char *model, size_t model_len);

/*
 * Returns 1 when the key remembered on req is still valid (not revoked or
 * expired since auth_check), else 0; for long-poll claims that wait.
 */
int auth_still_valid(const struct server *s, const http_request_t *req);

/* Sends 401 to a request whose key was revoked or expired while it waited. */
void auth_respond_key_gone(http_request_t *req);

/*
 * Creates a key: name, role (one AUTH_ROLE_* bit), models (a JSON array of
 * checked patterns; a reference is taken) and expires_at (ms since epoch,
 * 0 = never). Adds it to memory at once and records its insert in the
 * collecting batch. Writes the key text and a NUL into key_text; the
 * caller sends it once, after the commit, and never logs it. Returns 0
 * with *out set, or INFERQ_ECONFLICT when the name is taken.
 */
int auth_key_create(struct server *s, const char *name, unsigned role, rbuf_t *models,
		    int64_t expires_at, char key_text[AUTH_KEY_TEXT_LEN + 1],
		    const auth_key_t **out);

/*
 * Revokes the key called name at once and records the change. Returns 0
 * with *out set (also when it was revoked already, which changes nothing);
 * INFERQ_ENOTFOUND for an unknown name; INFERQ_ECONFLICT when it is the
 * last admin key that still works.
 */
int auth_key_revoke(struct server *s, const char *name, const auth_key_t **out);

/*
 * Merges a key that another node created or revoked (the postgres store):
 * adds it when no key has its name, or revokes the local key of the same
 * hash, and records the change for the local store. Takes over
 * rec->models (leaving it NULL) when it tries to add the key; the caller
 * unrefs what is left. Returns 0, INFERQ_ECONFLICT when
 * another key (another hash) has that name here, or INFERQ_EINVAL when
 * rec is malformed. Loop thread.
 */
int auth_key_merge(struct server *s, store_key_t *rec);

/* Returns the number of keys and the key at index i, in creation order. */
size_t auth_key_count(const struct server *s);
const auth_key_t *auth_key_at(const struct server *s, size_t i);

/* Returns "admin", "client" or "worker". */
const char *auth_role_name(unsigned role);
/* Parses a role name into its AUTH_ROLE_* bit; returns 0 or INFERQ_EINVAL. */
int auth_role_parse(const char *name, size_t len, unsigned *out);

/*
 * Appends the public view of k: name, key_prefix (the first 8 hex digits
 * of its hash), role, models and its times. A key_text (NULL for none) is
 * added as "key", which only the create response carries.
 */
void auth_key_render(buf_t *out, const auth_key_t *k, const char *key_text);

/*
 * Rolls back the in-memory change of a key operation whose commit failed
 * (called by the engine for the ops of failed batches, newest first).
 */
void auth_undo(struct server *s, const store_op_t *op);

/* Records the last use of every key whose last_used_at is newer than the store's. */
void auth_flush_last_used(struct server *s);

#endif
