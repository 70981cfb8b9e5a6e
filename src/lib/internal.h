/*
 * Internals of libinferq shared by its source files: the allocator seam,
 * the client struct, the HTTP call with retries, a string builder that
 * reports out-of-memory instead of aborting, and a small JSON scanner that
 * keeps raw text.
 *
 * Every name here starts with "inferq__" (two underscores, as libuv's
 * "uv__") so that a program that links libinferq.a cannot collide with it,
 * and has hidden visibility, so libinferq.so exports only the public API.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef INFERQ_LIB_INTERNAL_H
#define INFERQ_LIB_INTERNAL_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <curl/curl.h>

#include "inferq.h"

#pragma GCC visibility push(hidden)

/* --- Allocator (alloc.c) ------------------------------------------------ */

/*
 * Every allocation of the library goes through these wrappers, so a test can
 * fail one of them. They behave as malloc(), calloc() and realloc(); free()
 * releases their memory. Any thread.
 */
void *inferq__malloc(size_t size);
void *inferq__calloc(size_t count, size_t size);
void *inferq__realloc(void *p, size_t size);

/* Returns a malloc'd copy of p[0..n) with a NUL, or NULL on out-of-memory. */
char *inferq__strndup(const char *p, size_t n);

/*
 * For tests only: lets the next n allocations of the wrappers succeed and
 * fails the one after (n = 0: the next one). The failure happens once, and
 * later allocations succeed again. A negative n disarms the seam. Returns how
 * many failures were injected since the previous call (0 or 1), so a test can
 * tell a call that never reached the armed allocation from one that
 * swallowed its failure. The setting is process-wide: arm it while only one
 * thread uses the library.
 */
long inferq__alloc_fail_after(long n);

/*
 * A direct libc allocation in the library would bypass the seam, so it does
 * not compile. alloc.c and tests define INFERQ__LIBC_ALLOC to opt out.
 */
#ifndef INFERQ__LIBC_ALLOC
#pragma GCC poison malloc calloc realloc reallocarray strdup strndup asprintf vasprintf
#endif

/* --- String builder ----------------------------------------------------- */

/*
 * A growable NUL-terminated string. An allocation failure sets oom, after
 * which appends do nothing; the owner checks oom once at the end.
 */
typedef struct {
	char *data;
	size_t len; /* bytes, without the NUL */
	size_t cap;
	int oom;
} inferq__sb_t;

void inferq__sb_append(inferq__sb_t *sb, const char *p, size_t n);
void inferq__sb_puts(inferq__sb_t *sb, const char *s);
void inferq__sb_printf(inferq__sb_t *sb, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Appends s as a JSON string with quotes, escaping '"', '\\' and control bytes. */
void inferq__sb_json_string(inferq__sb_t *sb, const char *s);
/* Appends "name": then s as a JSON string. */
void inferq__sb_json_field(inferq__sb_t *sb, const char *name, const char *s);
void inferq__sb_reset(inferq__sb_t *sb);
void inferq__sb_free(inferq__sb_t *sb);

/* --- JSON scanning ------------------------------------------------------ */

/* A span of JSON text: one value, strings with their quotes. */
typedef struct {
	const char *p;
	size_t len;
} inferq__span_t;

/*
 * Checks that p[0..len) is one JSON value (RFC 8259 grammar; UTF-8 is left
 * to the server) with optional whitespace around it, nested at most 512
 * levels. Stores the value without the whitespace in *root. Returns 0, or
 * INFERQ_EINVAL and a message in message[0..message_size) naming the byte offset.
 */
int inferq__json_check(const char *p, size_t len, inferq__span_t *root, char *message,
                       size_t message_size);

/* Iterates the members of an object span that passed inferq__json_check(). */
typedef struct {
	const char *pos;
	const char *end;
} inferq__member_iter_t;

void inferq__json_members(inferq__member_iter_t *it, inferq__span_t object);
/*
 * Stores the next member's key (quotes included, escapes not decoded) and
 * value and returns 0, or returns INFERQ_ENOTFOUND after the last member.
 */
int inferq__json_next(inferq__member_iter_t *it, inferq__span_t *key, inferq__span_t *value);

/*
 * Stores the next element of an array span that passed inferq__json_check()
 * and returns 0, or returns INFERQ_ENOTFOUND after the last one. Start with
 * inferq__json_members() on the array span.
 */
int inferq__json_next_element(inferq__member_iter_t *it, inferq__span_t *value);

/*
 * Returns 0 when the key span's bytes between the quotes equal name. Keys
 * are compared undecoded: the server spells every ASCII name plainly.
 */
int inferq__json_key_is(inferq__span_t key, const char *name);

/* Finds a member of a checked object by name; returns 0 or INFERQ_ENOTFOUND. */
int inferq__json_get(inferq__span_t object, const char *name, inferq__span_t *value);

/*
 * Decodes a JSON string span into a malloc'd C string in *out. Returns 0,
 * INFERQ_EPROTO when the span is not a string, or INFERQ_ENOMEM.
 */
int inferq__json_string(inferq__span_t str, char **out);

/* Reads an integer span; returns 0 or INFERQ_EPROTO. */
int inferq__json_int(inferq__span_t num, int64_t *out);

/* --- Client and HTTP calls ---------------------------------------------- */

struct inferq_client {
	CURL *curl;
	char *base_url;      /* without a trailing "/" */
	char *api_key;       /* NULL: no Authorization header */
	int key_from_env;    /* 1 when api_key came from the environment */
	char *cacert;        /* NULL: the system's CA store */
	long connect_ms;     /* connection timeout */
	long request_ms;     /* whole-request timeout */
	int attempts;        /* attempts per call, retries included */
	long first_pause_ms; /* pause before the first retry; doubles to 2 s */
	int http_status;     /* of the last response, 0 when none */
	inferq__sb_t response;
	char error[1024];
	char curl_error[CURL_ERROR_SIZE];
};

/* When a call may be sent again after a transport error. */
typedef enum {
	INFERQ__RETRY_UNSENT, /* only when no byte of the request was sent */
	INFERQ__RETRY_ALWAYS, /* also when the request may have reached the server */
} inferq__retry_t;

/* One API call. Bodies and paths are built by the caller. */
typedef struct {
	const char *path; /* "/v1/queue/status?..." */
	const char *body; /* NULL for GET */
	size_t body_len;
	const char *idempotency_key; /* or NULL */
	inferq__retry_t retry;
	/*
	 * When a repeated attempt gets 409 and the response's status equals
	 * this (for example "done" for complete), the call counts as done,
	 * because an earlier attempt reached the server. NULL: no such rule.
	 */
	const char *expected_status;
	long extra_timeout_ms; /* added to the request timeout (a claim's wait) */
} inferq__call_t;

/*
 * Performs a call with retries. Returns 0 for a 2xx response, whose status
 * is in c->http_status and body in c->response; otherwise the INFERQ_E*
 * code with c->error set.
 */
int inferq__call(inferq_client_t *c, const inferq__call_t *call);

/* Formats c->error and returns code. */
int inferq__fail(inferq_client_t *c, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/*
 * Checks caller JSON text for a request field: it must be a JSON object.
 * Returns 0 or INFERQ_EINVAL with c->error naming the field.
 */
int inferq__check_object(inferq_client_t *c, const char *field, const char *text);

/* Checks a required string argument; returns 0 or INFERQ_EINVAL. */
int inferq__check_arg(inferq_client_t *c, const char *name, const char *value);

/* Sleeps ms milliseconds, resuming after signals. */
void inferq__sleep_ms(long ms);

/* Returns the checked top-level object of c->response, or INFERQ_EPROTO. */
int inferq__response_object(inferq_client_t *c, inferq__span_t *object);

/*
 * Runs a POST of the JSON body in sb to path (retried as
 * INFERQ__RETRY_ALWAYS) and frees sb. idem_key and expected_status are as in
 * inferq__call_t. Returns 0 or an INFERQ_E* code with c->error set.
 */
int inferq__post(inferq_client_t *c, const char *path, inferq__sb_t *sb, const char *idem_key,
                 const char *expected_status);

/* As inferq__response_object(), with c->error set on failure. */
int inferq__checked_response(inferq_client_t *c, inferq__span_t *object);

/*
 * Decodes the string member name of a response object into *out (malloc'd).
 * Returns 0, INFERQ_EPROTO (absent or not a string) or INFERQ_ENOMEM, with
 * c->error set.
 */
int inferq__response_string(inferq_client_t *c, inferq__span_t object, const char *name,
                            char **out);

/*
 * Decodes a status object (the shape of GET /v1/queue/status) into a new
 * status in *out, with a copy of raw[0..raw_len) as its raw text. Returns
 * 0, INFERQ_EPROTO or INFERQ_ENOMEM, with c->error set.
 */
int inferq__status_decode(inferq_client_t *c, inferq__span_t object, const char *raw,
                          size_t raw_len, inferq_status_t **out);

/* Reads the integer member name of a response object; 0 or INFERQ_EPROTO. */
int inferq__response_int(inferq_client_t *c, inferq__span_t object, const char *name, int64_t *out);

#pragma GCC visibility pop

#endif
