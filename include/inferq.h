/*
 * libinferq: the C client library of the inferq job queue. It speaks the
 * HTTP API of `inferq serve` (docs/api.md) over libcurl. Clients submit
 * jobs and read their status. Workers claim jobs, send heartbeats, and
 * complete, fail or release them.
 *
 * Rules that hold for every function below:
 *
 * - Every call returns 0 or a negative INFERQ_E* code (inferq_error.h).
 *   After a failed call, inferq_client_last_error() returns a message (the
 *   server's QueueError message, curl's error or the library's own) and
 *   inferq_client_last_status() the HTTP status (0 when no response came).
 * - One client handle belongs to one thread at a time. Handles share no
 *   state; the only global state is curl_global_init(), run once.
 * - Strings returned through out parameters are owned by the caller and
 *   freed with inferq_free(), except those a comment marks "borrowed".
 *   Borrowed strings stay valid until the next call on the same handle, or
 *   until the owning object is freed.
 * - Out of memory is returned as INFERQ_ENOMEM; the library never aborts
 *   and never prints.
 * - JSON that the caller passes in (payload, info, outputs) is checked for
 *   JSON syntax and must be an object; it is sent as the exact bytes given.
 *   JSON that comes back (inputs, outputs, info, the whole response) is
 *   returned as the exact text the server sent, so integers beyond 64 bits
 *   or spellings like 1e400 survive. Scalar fields (ids, states, times,
 *   counters) are decoded for the caller.
 * - Calls that are safe to repeat are retried on connection errors
 *   (refused, reset, timed out) and on 429 and 503 responses: up to 5
 *   attempts by default, with a pause of 100 ms that doubles up to 2 s.
 *   Submit carries an `Idempotency-Key` header with a random UUID, the same
 *   on every attempt, so a server that honours it creates one job. Claim is
 *   retried only when no byte of the request was sent, because a lost claim
 *   response would leave the job leased to no worker until the lease ends.
 *   Complete, fail, release and cancel treat a 409 on a repeated attempt as
 *   success when the job's status is the one the call asked for, because
 *   the earlier attempt already reached the server.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef INFERQ_H
#define INFERQ_H

#include <stddef.h>
#include <stdint.h>

#include "inferq_error.h"

#ifdef __cplusplus
extern "C" {
#endif

#define INFERQ_DEFAULT_URL      "http://127.0.0.1:8080"
#define INFERQ_DEFAULT_KEY_FILE "./inferq-data/admin.key"

typedef struct inferq_client inferq_client_t;
typedef struct inferq_claim inferq_claim_t;

/* Frees a string returned by the library; accepts NULL. */
void inferq_free(void *p);

/* --- Client handle ------------------------------------------------------ */

/*
 * Creates a client. The base URL comes from INFERQ_URL, else
 * INFERQ_DEFAULT_URL. The API key comes from INFERQ_API_KEY, else
 * TOGETHER_API_KEY, else the first line of INFERQ_DEFAULT_KEY_FILE when that
 * file is readable; otherwise requests carry no Authorization header.
 * Returns 0 and stores the handle in *out, INFERQ_ENOMEM, or INFERQ_EINVAL
 * when INFERQ_URL is not an http:// or https:// URL (then *out is NULL and
 * no message can be kept: set the URL in code to see why).
 * Free the handle with inferq_client_free().
 */
int inferq_client_new(inferq_client_t **out);

/* Frees a client and everything borrowed from it; accepts NULL. */
void inferq_client_free(inferq_client_t *c);

/*
 * Sets the base URL, such as "http://127.0.0.1:8080" (a trailing "/" or
 * "/v1" is dropped). Returns 0, INFERQ_EINVAL when url does not start with
 * http:// or https://, or INFERQ_ENOMEM.
 */
int inferq_client_set_url(inferq_client_t *c, const char *url);

/*
 * Sets the API key sent as `Authorization: Bearer KEY`, overriding the
 * environment and key files; NULL sends no key. Returns 0, INFERQ_EINVAL
 * for a key with control characters, or INFERQ_ENOMEM.
 */
int inferq_client_set_api_key(inferq_client_t *c, const char *key);

/*
 * Reads the API key from the first line of the file at path, unless
 * INFERQ_API_KEY or TOGETHER_API_KEY is set (the environment wins, and then
 * the file is not opened). Returns 0; INFERQ_ENOTFOUND when the file does
 * not exist; INFERQ_EIO when it cannot be read; INFERQ_EINVAL when its
 * first line is empty; INFERQ_ENOMEM.
 */
int inferq_client_set_key_file(inferq_client_t *c, const char *path);

/*
 * Sets the connection timeout and the timeout of one whole request, in
 * milliseconds (defaults 10000 and 30000; 0 keeps the current value). A
 * claim that waits for a job gets its wait added to the request timeout.
 */
void inferq_client_set_timeouts(inferq_client_t *c, long connect_ms, long request_ms);

/*
 * Sets how many times a call is attempted in all (1 = no retry, default 5,
 * at most 20) and the first pause between attempts in milliseconds
 * (default 100; it doubles up to 2000). Returns 0 or INFERQ_ERANGE.
 */
int inferq_client_set_retries(inferq_client_t *c, int attempts, long first_pause_ms);

/*
 * Sets a file of PEM CA certificates that verifies the server of an
 * https:// URL, instead of the system's. NULL restores the system's.
 * Returns 0 or INFERQ_ENOMEM. The file is read at the next request.
 */
int inferq_client_set_cacert(inferq_client_t *c, const char *path);

/*
 * Returns the message of the last failed call on c ("" after a success);
 * borrowed.
 */
const char *inferq_client_last_error(const inferq_client_t *c);

/* Returns the HTTP status of the last response on c, or 0 when none came. */
int inferq_client_last_status(const inferq_client_t *c);

/*
 * Returns the body of the last response on c exactly as the server sent it:
 * a JSON object, or "" for a response without a body such as a 204. The
 * string is borrowed. Error responses are kept too, so a caller can show
 * the server's QueueError.
 */
const char *inferq_client_last_response(const inferq_client_t *c);

/* --- Jobs --------------------------------------------------------------- */

typedef enum {
	INFERQ_STATE_UNKNOWN = 0, /* a status this library does not know */
	INFERQ_STATE_PENDING,
	INFERQ_STATE_RUNNING,
	INFERQ_STATE_DONE,
	INFERQ_STATE_FAILED,
	INFERQ_STATE_CANCELED,
} inferq_state_t;

/*
 * The status of one job, as GET /v1/queue/status returned it. The library
 * allocates it and the caller frees it with inferq_status_free(); fields
 * the server left out are NULL. New fields may be appended in later
 * versions, so callers never allocate or copy this struct.
 */
typedef struct {
	char *request_id;
	char *model;
	char *status;         /* "pending", "running", "done", "failed", "canceled" */
	inferq_state_t state; /* status as an enum */
	int32_t priority;
	int64_t retries;        /* lease expiries that sent the job back */
	char *inputs;           /* raw JSON text of the submitted payload */
	char *outputs;          /* raw JSON text, when done */
	char *info;             /* raw JSON text, when set */
	char *error;            /* why the job failed, when failed */
	char *created_at;       /* RFC 3339 UTC, as "2026-02-07T10:30:00Z" */
	char *claimed_at;       /* time of the latest claim */
	char *done_at;          /* when the job reached a terminal state */
	char *lease_expires_at; /* while running */
	char *raw;              /* the whole response body as sent */
} inferq_status_t;

/* Frees a status and its strings; accepts NULL. */
void inferq_status_free(inferq_status_t *st);

/* Returns 1 for done, failed and canceled, else 0. */
int inferq_state_is_terminal(inferq_state_t state);

/*
 * Submits a job. payload is the text of a JSON object; info is the text of
 * a JSON object or NULL; priority is higher-first. Stores the new job's id
 * in *request_id (caller frees with inferq_free()). Returns 0; INFERQ_EINVAL
 * for invalid JSON or a 400 response; INFERQ_ECONNECT, INFERQ_ETIMEDOUT,
 * INFERQ_EAUTH, INFERQ_ENOTFOUND (the key does not cover the model),
 * INFERQ_EBUSY (503 after the retries), INFERQ_EPROTO, INFERQ_ENOMEM.
 */
int inferq_job_submit(inferq_client_t *c, const char *model, const char *payload, const char *info,
                      int32_t priority, char **request_id);

/*
 * Reads a job's status into *out (caller frees with inferq_status_free()).
 * Returns 0; INFERQ_ENOTFOUND for an unknown job; the transport and
 * protocol errors listed at inferq_job_submit().
 */
int inferq_job_status(inferq_client_t *c, const char *model, const char *request_id,
                      inferq_status_t **out);

/*
 * Cancels a pending job. Returns 0; INFERQ_ECONFLICT when the job is no
 * longer pending (its status is in the response, see
 * inferq_client_last_response()); INFERQ_ENOTFOUND; transport errors.
 */
int inferq_job_cancel(inferq_client_t *c, const char *model, const char *request_id);

/* Called by inferq_job_wait() after each poll with the status just read. */
typedef void (*inferq_wait_cb)(const inferq_status_t *st, void *user);

/*
 * Polls a job's status until it is done, failed or canceled, or until
 * timeout_ms passes (negative = no limit; 0 = poll once). Pauses start at
 * 100 ms and grow by half up to 2 s. progress (or NULL) is called with each
 * status read. Returns 0 when the job reached a terminal state, whatever
 * the outcome, with its status in *out (caller frees). Returns
 * INFERQ_ETIMEDOUT when the time ran out, with the last status read in
 * *out. Other errors are those of inferq_job_status(), with *out NULL.
 */
int inferq_job_wait(inferq_client_t *c, const char *model, const char *request_id, long timeout_ms,
                    inferq_wait_cb progress, void *user, inferq_status_t **out);

/*
 * Cancels every pending job of model and stores how many in *canceled
 * (may be NULL). A retry after a lost response counts only the jobs the
 * repeated attempt canceled. Returns 0 or the errors of inferq_job_submit().
 */
int inferq_queue_clear(inferq_client_t *c, const char *model, int64_t *canceled);

/*
 * Reads a model's queue gauges: jobs waiting (pending), running, and their
 * sum. Any out pointer may be NULL. Returns 0 or the errors of
 * inferq_job_submit().
 */
int inferq_queue_metrics(inferq_client_t *c, const char *model, int64_t *waiting, int64_t *running,
                         int64_t *total);

/* --- Workers ------------------------------------------------------------ */

/*
 * Claims the next job of model. claim_timeout_s is the lease in seconds
 * (1..86400, or 0 for the server's default). wait_s is how long to wait
 * for a job when none is pending (0..60 s, fractions allowed). worker is a
 * name for the server's logs and retry history, or NULL. Stores a claim in *out
 * (caller frees with inferq_claim_free()), or NULL when no job arrived
 * within wait_s; both cases return 0. Other returns: INFERQ_EINVAL,
 * INFERQ_ERANGE (a timeout out of range), transport and protocol errors.
 */
int inferq_job_claim(inferq_client_t *c, const char *model, int claim_timeout_s, double wait_s,
                     const char *worker, inferq_claim_t **out);

/* Frees a claim and its strings; accepts NULL. It does not release the job. */
void inferq_claim_free(inferq_claim_t *claim);

/* Accessors of a claim; strings are borrowed from the claim. */
const char *inferq_claim_request_id(const inferq_claim_t *claim);
const char *inferq_claim_id(const inferq_claim_t *claim);
const char *inferq_claim_model(const inferq_claim_t *claim);
/* Raw JSON text of the job's payload. */
const char *inferq_claim_payload(const inferq_claim_t *claim);
/* Raw JSON text of the job's info at claim time, or NULL when it has none. */
const char *inferq_claim_info(const inferq_claim_t *claim);
int64_t inferq_claim_retries(const inferq_claim_t *claim);
int32_t inferq_claim_priority(const inferq_claim_t *claim);
/* RFC 3339 UTC end of the lease; a successful heartbeat updates it. */
const char *inferq_claim_lease_expires_at(const inferq_claim_t *claim);

/*
 * Extends the claim's lease by its claim timeout from now and merges
 * info_patch (JSON object text, RFC 7386 merge patch, or NULL) into the
 * job's info. On success the claim's lease_expires_at holds the new end.
 * Returns 0; INFERQ_ECONFLICT when the claim is no longer the job's current
 * one or the job is terminal; INFERQ_ENOTFOUND; INFERQ_EINVAL; transport
 * errors.
 */
int inferq_claim_heartbeat(inferq_client_t *c, inferq_claim_t *claim, const char *info_patch);

/*
 * Completes the claimed job with outputs (JSON object text). Returns 0, or
 * the errors of inferq_claim_heartbeat().
 */
int inferq_claim_complete(inferq_client_t *c, inferq_claim_t *claim, const char *outputs);

/*
 * Fails the claimed job with the message error (UTF-8 text, no NUL); a
 * failed job is never retried. Returns 0, or the errors of
 * inferq_claim_heartbeat().
 */
int inferq_claim_fail(inferq_client_t *c, inferq_claim_t *claim, const char *error);

/*
 * Gives the claimed job back: it returns to pending in its original place
 * with its retries unchanged. Returns 0, or the errors of
 * inferq_claim_heartbeat().
 */
int inferq_claim_release(inferq_client_t *c, inferq_claim_t *claim);

/* --- API keys (admin role) ---------------------------------------------- */

/*
 * One API key as the admin routes return it. The library allocates it and
 * the caller frees it with inferq_key_free(); fields the server left out
 * are NULL. New fields may be appended in later versions.
 */
typedef struct {
	char *name;
	char *key;          /* the key itself: only from inferq_keys_create(), shown once */
	char *key_prefix;   /* first 8 hex digits of the key's SHA-256, to tell keys apart */
	char *role;         /* "admin", "client" or "worker" */
	char *models;       /* raw JSON array text of the model patterns */
	char *created_at;   /* RFC 3339 UTC */
	char *last_used_at; /* when the key was last accepted, or NULL when never */
	char *expires_at;   /* or NULL when the key never expires */
	char *revoked_at;   /* or NULL while the key is not revoked */
} inferq_key_t;

/* Frees a key and its strings; accepts NULL. */
void inferq_key_free(inferq_key_t *key);

/* Frees an array of count keys from inferq_keys_list(); accepts NULL. */
void inferq_key_list_free(inferq_key_t **keys, size_t count);

/*
 * Creates an API key (the client's key must have the admin role). role is
 * "admin", "client" or "worker"; models lists model_count patterns ("*",
 * "org/model", or a prefix "org/" followed by "*"), and may be NULL for an
 * admin key, which covers every model; expires_in is a duration such as
 * "30d" or NULL for a key that never expires. Stores the new key, with its
 * text in key->key, in *out (caller frees with inferq_key_free()). The
 * server keeps only a hash, so the text cannot be read again. Not repeated
 * after a connection error once the request was sent, because a lost
 * response would leave a key nobody knows. Returns 0; INFERQ_EINVAL (a
 * field was rejected, see inferq_client_last_error()); INFERQ_ECONFLICT
 * (the name is taken); INFERQ_EAUTH; transport and protocol errors.
 */
int inferq_keys_create(inferq_client_t *c, const char *name, const char *role,
                       const char *const *models, size_t model_count, const char *expires_in,
                       inferq_key_t **out);

/*
 * Lists every key, revoked and expired ones included, in creation order,
 * without their texts. Stores a malloc'd array of *count keys in *out
 * (caller frees with inferq_key_list_free()). Returns 0, INFERQ_EAUTH, or
 * transport and protocol errors.
 */
int inferq_keys_list(inferq_client_t *c, inferq_key_t ***out, size_t *count);

/*
 * Revokes the key called name; it stops working at once. Revoking a
 * revoked key succeeds and changes nothing. Stores the key's new state in
 * *out when out is not NULL. Returns 0; INFERQ_ENOTFOUND (no such key);
 * INFERQ_ECONFLICT (the last working admin key); INFERQ_EAUTH; transport
 * errors.
 */
int inferq_keys_revoke(inferq_client_t *c, const char *name, inferq_key_t **out);

/* --- Admin views (admin role) ------------------------------------------- */

/*
 * One page of the job listing (GET /v1/admin/jobs). The library allocates
 * it and the caller frees it with inferq_job_page_free().
 */
typedef struct {
	inferq_status_t **jobs; /* count jobs, newest first, each as inferq_job_status() reads it */
	size_t count;
	char *next_cursor; /* pass to the next call for the next page; NULL on the last page */
	char *raw;         /* the whole response body as sent */
} inferq_job_page_t;

/* Frees a page and its jobs; accepts NULL. */
void inferq_job_page_free(inferq_job_page_t *page);

/*
 * Reads one page of jobs across models, newest first. model and status
 * ("pending", "running", "done", "failed" or "canceled") filter when not
 * NULL; limit is 1 to 1000 jobs, or 0 for the server's default (50);
 * cursor is NULL for the first page, else the next_cursor of the page
 * before. A page may hold fewer than limit jobs, even none, and still have
 * a next_cursor: follow it until it is NULL. Stores the page in *out
 * (caller frees). Returns 0; INFERQ_EINVAL (a bad filter, limit or
 * cursor); INFERQ_EAUTH (the key is not an admin key); INFERQ_ERANGE (limit
 * out of range); transport and protocol errors.
 */
int inferq_admin_jobs(inferq_client_t *c, const char *model, const char *status, int limit,
                      const char *cursor, inferq_job_page_t **out);

/*
 * One worker as GET /v1/admin/workers shows it. Allocated by the library;
 * fields the server left out are NULL. New fields may be appended in later
 * versions.
 */
typedef struct {
	char *name;         /* the claim's worker field or Sprocket's hostname; "(anonymous)" */
	char *version;      /* its x-worker-version header, or NULL */
	char *first_seen;   /* RFC 3339 UTC */
	char *last_seen;    /* RFC 3339 UTC */
	char *current_jobs; /* raw JSON array text of {"request_id", "model"} objects */
	size_t current_count; /* elements of current_jobs */
	int64_t jobs_done;
	int64_t jobs_failed;
	int64_t jobs_expired;
} inferq_worker_t;

/* Frees an array of count workers from inferq_admin_workers(); accepts NULL. */
void inferq_worker_list_free(inferq_worker_t **workers, size_t count);

/*
 * Reads the workers the server has seen, the most recently seen first.
 * Stores a malloc'd array of *count workers in *out (caller frees with
 * inferq_worker_list_free()). Returns 0, INFERQ_EAUTH, or transport and
 * protocol errors.
 */
int inferq_admin_workers(inferq_client_t *c, inferq_worker_t ***out, size_t *count);

#ifdef __cplusplus
}
#endif

#endif
