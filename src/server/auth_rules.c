/*
 * The pure rules of authentication (see auth.h): model patterns, address
 * ranges, the loopback test of --auth none, the Bearer header, the client
 * address behind a trusted proxy, and the rate limiter of failed
 * authentications. Nothing here touches the server state, so unit tests
 * drive it directly.
 *
 * SPDX-License-Identifier: MIT
 */
#include "auth.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "alloc.h"
#include "inferq_error.h"

/* --- Patterns ----------------------------------------------------------- */

static int model_char_ok(unsigned char ch)
{
	return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
	       ch == '.' || ch == '_' || ch == ':' || ch == '/' || ch == '-';
}

static int model_name_ok(const char *s, size_t len, size_t max_len)
{
	if (len == 0 || len > max_len)
		return 0;
	for (size_t i = 0; i < len; i++) {
		if (!model_char_ok((unsigned char)s[i]))
			return 0;
	}
	return 1;
}

int auth_pattern_check(const char *pattern, size_t len, size_t max_model_length)
{
	if (len == 1 && pattern[0] == '*')
		return 0;
	/* A prefix pattern: "org/" must itself be model characters, with something before the /. */
	if (len >= 3 && pattern[len - 1] == '*' && pattern[len - 2] == '/')
		return model_name_ok(pattern, len - 1, max_model_length) && pattern[0] != '/'
			   ? 0
			   : INFERQ_EINVAL;
	return model_name_ok(pattern, len, max_model_length) ? 0 : INFERQ_EINVAL;
}

int auth_pattern_matches(const char *pattern, size_t pattern_len, const char *model,
			 size_t model_len)
{
	if (pattern_len == 1 && pattern[0] == '*')
		return 1;
	if (pattern_len >= 2 && pattern[pattern_len - 1] == '*') {
		size_t prefix = pattern_len - 1; /* "org/" */

		return model_len > prefix && memcmp(model, pattern, prefix) == 0;
	}
	return model_len == pattern_len && memcmp(model, pattern, model_len) == 0;
}

/* --- Address ranges ----------------------------------------------------- */

/* Parses an IPv4 or IPv6 address; an IPv4-mapped IPv6 address becomes IPv4. Returns 4, 6 or 0. */
static int parse_ip(const char *text, uint8_t out[16])
{
	static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

	memset(out, 0, 16);
	if (inet_pton(AF_INET, text, out) == 1)
		return 4;
	if (inet_pton(AF_INET6, text, out) != 1)
		return 0;
	if (memcmp(out, mapped, sizeof(mapped)) == 0) {
		memmove(out, out + 12, 4);
		memset(out + 4, 0, 12);
		return 4;
	}
	return 6;
}

int auth_cidr_parse(const char *text, auth_cidr_t *out)
{
	char addr[AUTH_ADDR_LEN];
	const char *slash = strchr(text, '/');
	size_t addr_len = slash ? (size_t)(slash - text) : strlen(text);
	int bits, prefix;

	memset(out, 0, sizeof(*out));
	if (addr_len == 0 || addr_len >= sizeof(addr))
		return INFERQ_EINVAL;
	memcpy(addr, text, addr_len);
	addr[addr_len] = '\0';
	/* Parse the address as written: "::ffff:10.0.0.0/104" stays IPv6. */
	if (inet_pton(AF_INET, addr, out->addr) == 1)
		out->family = 4;
	else if (inet_pton(AF_INET6, addr, out->addr) == 1)
		out->family = 6;
	else
		return INFERQ_EINVAL;
	bits = out->family == 4 ? 32 : 128;

	prefix = bits;
	if (slash) {
		char *end;
		long n;

		if (slash[1] < '0' || slash[1] > '9')
			return INFERQ_EINVAL;
		n = strtol(slash + 1, &end, 10);
		if (*end != '\0' || n < 0 || n > bits)
			return INFERQ_EINVAL;
		prefix = (int)n;
	}
	out->prefix = prefix;

	/* Host bits must be zero. */
	for (int i = prefix; i < bits; i++) {
		if (out->addr[i / 8] & (0x80 >> (i % 8)))
			return INFERQ_EINVAL;
	}
	return 0;
}

int auth_cidr_contains(const auth_cidr_t *range, const char *ip)
{
	uint8_t addr[16];
	int family = parse_ip(ip, addr);
	int full, rest;

	if (family == 0)
		return 0;
	if (family != range->family) {
		/* An IPv4 client against an IPv4-mapped IPv6 range. */
		static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

		if (family != 4 || range->prefix < 96 || memcmp(range->addr, mapped, 12) != 0)
			return 0;
		memmove(addr + 12, addr, 4);
		memcpy(addr, mapped, 12);
	}
	full = range->prefix / 8;
	rest = range->prefix % 8;
	if (memcmp(addr, range->addr, (size_t)full) != 0)
		return 0;
	if (rest == 0)
		return 1;
	return ((addr[full] ^ range->addr[full]) & (0xff << (8 - rest)) & 0xff) == 0;
}

int auth_listen_is_loopback(const char *listen)
{
	char host[256];
	const char *colon = strrchr(listen, ':');
	size_t len = colon ? (size_t)(colon - listen) : strlen(listen);
	uint8_t addr[16];
	int family;

	if (len >= 2 && listen[0] == '[' && listen[len - 1] == ']') {
		listen++;
		len -= 2;
	}
	if (len == 0 || len >= sizeof(host))
		return 0;
	memcpy(host, listen, len);
	host[len] = '\0';
	if (strcasecmp(host, "localhost") == 0)
		return 1;
	family = parse_ip(host, addr);
	if (family == 4)
		return addr[0] == 127;
	if (family == 6) {
		static const uint8_t loopback[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};

		return memcmp(addr, loopback, 16) == 0;
	}
	return 0;
}

/* --- The Authorization header ------------------------------------------- */

static int name_is(const http_header_t *h, const char *name)
{
	size_t len = strlen(name);

	return h->name_len == len && strncasecmp(h->name, name, len) == 0;
}

auth_bearer_t auth_read_bearer(const http_request_t *req, const char **key, size_t *len)
{
	const http_header_t *found = NULL;
	const char *v;
	size_t n, i;

	for (i = 0; i < req->header_count; i++) {
		if (!name_is(&req->headers[i], "authorization"))
			continue;
		if (found)
			return AUTH_BEARER_MALFORMED;
		found = &req->headers[i];
	}
	if (!found || found->value_len == 0)
		return AUTH_BEARER_MISSING;
	v = found->value;
	n = found->value_len;
	if (n < 6 || strncasecmp(v, "bearer", 6) != 0 || (n > 6 && v[6] != ' ' && v[6] != '\t'))
		return AUTH_BEARER_SCHEME;

	/* The HTTP layer removed the spaces after the value, so the key runs to the end. */
	for (i = 6; i < n && (v[i] == ' ' || v[i] == '\t'); i++)
		;
	if (i == n)
		return AUTH_BEARER_MISSING;
	*key = v + i;
	*len = n - i;
	for (; i < n; i++) {
		if (v[i] == ' ' || v[i] == '\t')
			return AUTH_BEARER_MALFORMED;
	}
	return AUTH_BEARER_OK;
}

/* --- Client address ----------------------------------------------------- */

/* Copies the IP of a peer "ip:port" or "[ip]:port" into out. */
static void peer_ip(const char *remote, char out[AUTH_ADDR_LEN])
{
	const char *colon = strrchr(remote, ':');
	size_t len = colon ? (size_t)(colon - remote) : strlen(remote);

	if (len >= 2 && remote[0] == '[' && remote[len - 1] == ']') {
		remote++;
		len -= 2;
	}
	if (len >= AUTH_ADDR_LEN)
		len = AUTH_ADDR_LEN - 1;
	memcpy(out, remote, len);
	out[len] = '\0';
}

/* Copies the last comma-separated element of value, trimmed, into out; 0 or INFERQ_EINVAL. */
static int last_hop(const char *value, size_t len, char out[AUTH_ADDR_LEN])
{
	size_t start = len, end = len;
	uint8_t addr[16];

	while (start > 0 && value[start - 1] != ',')
		start--;
	while (start < end && (value[start] == ' ' || value[start] == '\t'))
		start++;
	while (end > start && (value[end - 1] == ' ' || value[end - 1] == '\t'))
		end--;
	if (end == start || end - start >= AUTH_ADDR_LEN)
		return INFERQ_EINVAL;
	memcpy(out, value + start, end - start);
	out[end - start] = '\0';
	return parse_ip(out, addr) ? 0 : INFERQ_EINVAL;
}

void auth_client_address(const http_request_t *req, const auth_cidr_t *proxies,
			 size_t proxy_count, char out[AUTH_ADDR_LEN])
{
	const http_header_t *forwarded = NULL;
	char hop[AUTH_ADDR_LEN];
	int trusted = 0;

	peer_ip(req->remote_addr, out);
	for (size_t i = 0; i < proxy_count && !trusted; i++)
		trusted = auth_cidr_contains(&proxies[i], out);
	if (!trusted)
		return;
	for (size_t i = 0; i < req->header_count; i++) {
		if (name_is(&req->headers[i], "x-forwarded-for"))
			forwarded = &req->headers[i];
	}
	if (forwarded && last_hop(forwarded->value, forwarded->value_len, hop) == 0)
		memcpy(out, hop, sizeof(hop));
}

/* --- Rate limiter of failed authentications ----------------------------- */

#define LIMITER_BUCKETS 1024

typedef struct entry {
	struct entry *next;
	char addr[AUTH_ADDR_LEN];
	int64_t window_start;  /* ms, monotonic: first failure of the current window */
	uint32_t failures;     /* in the current window */
	int64_t blocked_until; /* ms, monotonic; 0 = not blocked */
} entry_t;

struct auth_limiter {
	uint32_t max_failures;
	int64_t window_ms, block_ms;
	size_t max_entries, count;
	entry_t *buckets[LIMITER_BUCKETS];
};

auth_limiter_t *auth_limiter_new(uint32_t max_failures, int64_t window_ms, int64_t block_ms,
				 size_t max_entries)
{
	auth_limiter_t *l = xcalloc(1, sizeof(*l));

	l->max_failures = max_failures;
	l->window_ms = window_ms;
	l->block_ms = block_ms;
	l->max_entries = max_entries;
	return l;
}

void auth_limiter_free(auth_limiter_t *l)
{
	if (!l)
		return;
	for (size_t i = 0; i < LIMITER_BUCKETS; i++) {
		entry_t *e = l->buckets[i];

		while (e) {
			entry_t *next = e->next;

			free(e);
			e = next;
		}
	}
	free(l);
}

static size_t bucket_of(const char *addr)
{
	uint32_t h = 2166136261u; /* FNV-1a */

	for (; *addr; addr++)
		h = (h ^ (unsigned char)*addr) * 16777619u;
	return h % LIMITER_BUCKETS;
}

static entry_t *find_entry(auth_limiter_t *l, const char *addr)
{
	for (entry_t *e = l->buckets[bucket_of(addr)]; e; e = e->next) {
		if (strcmp(e->addr, addr) == 0)
			return e;
	}
	return NULL;
}

static int entry_expired(const auth_limiter_t *l, const entry_t *e, int64_t now_ms)
{
	return now_ms >= e->blocked_until && now_ms - e->window_start >= l->window_ms;
}

/* Drops every entry whose window and block are over. */
static void sweep(auth_limiter_t *l, int64_t now_ms)
{
	for (size_t i = 0; i < LIMITER_BUCKETS; i++) {
		entry_t **link = &l->buckets[i];

		while (*link) {
			entry_t *e = *link;

			if (entry_expired(l, e, now_ms)) {
				*link = e->next;
				free(e);
				l->count--;
			} else {
				link = &e->next;
			}
		}
	}
}

int64_t auth_limiter_blocked(auth_limiter_t *l, const char *addr, int64_t now_ms)
{
	entry_t *e = find_entry(l, addr);

	if (!e || now_ms >= e->blocked_until)
		return 0;
	return e->blocked_until - now_ms;
}

int auth_limiter_fail(auth_limiter_t *l, const char *addr, int64_t now_ms)
{
	entry_t *e = find_entry(l, addr);

	if (!e) {
		if (l->count >= l->max_entries)
			sweep(l, now_ms);
		if (l->count >= l->max_entries)
			return 0;
		e = xcalloc(1, sizeof(*e));
		snprintf(e->addr, sizeof(e->addr), "%s", addr);
		e->next = l->buckets[bucket_of(addr)];
		l->buckets[bucket_of(addr)] = e;
		l->count++;
		e->window_start = now_ms;
	}
	if (now_ms - e->window_start >= l->window_ms) {
		e->window_start = now_ms;
		e->failures = 0;
	}
	e->failures++;
	if (e->failures > l->max_failures && now_ms >= e->blocked_until) {
		e->blocked_until = now_ms + l->block_ms;
		e->failures = 0;
		e->window_start = now_ms;
		return 1;
	}
	return 0;
}
