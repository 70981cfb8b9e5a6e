/*
 * Reading request bodies and query strings, and writing responses. Every
 * function that rejects input sends the 4xx QueueError response itself and
 * returns a negative value, so a handler stops at the first error:
 *
 *	if (body_parse(s, req, fields, &body) != 0)
 *		return;
 *
 * Loop thread only.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef INFERQ_REQUEST_H
#define INFERQ_REQUEST_H

#include <stdint.h>

#include "buf.h"
#include "ids.h"
#include "json.h"
#include "server.h"

#define BODY_MAX_FIELDS 8

/* A validated JSON object body with its known top-level fields located. */
typedef struct {
	json_span_t root;
	const char *const *names;              /* known field names, NULL-terminated */
	json_span_t fields[BODY_MAX_FIELDS];   /* value of each known field */
	int present[BODY_MAX_FIELDS];          /* 1 when the field was sent */
	buf_t warnings;                        /* JSON array of warning strings, or empty */
} body_t;

/*
 * Validates req's body as a JSON object, rejects duplicate known fields,
 * and records each unknown field as a warning. names lists the known fields
 * (at most BODY_MAX_FIELDS). Returns 0, or a negative code after sending 400.
 */
int body_parse(server_t *s, http_request_t *req, const char *const *names, body_t *out);
/* Adds ,"warnings":[...] to the JSON object in out when b had unknown fields. */
void body_add_warnings(buf_t *out, const body_t *b);
/* Frees the warnings of b. */
void body_free(body_t *b);
/* Returns the value span of known field name, or NULL when it was not sent. */
const json_span_t *body_field(const body_t *b, const char *name);

/*
 * Field readers. Each reads one field of body b (or, for the _query forms,
 * the query string of req), validates it, and on error sends 400 naming the
 * field and returns a negative code. "required" fields answer 400 when absent;
 * optional ones leave *out unchanged and return 0.
 */
int read_model(server_t *s, http_request_t *req, const body_t *b, buf_t *out);
int read_model_query(server_t *s, http_request_t *req, buf_t *out);
int read_id(http_request_t *req, const body_t *b, const char *name, iq_id_t *out);
int read_id_query(http_request_t *req, const char *name, iq_id_t *out);
int read_object(server_t *s, http_request_t *req, const body_t *b, const char *name, int required,
		json_span_t *out, int *present);
int read_info(server_t *s, http_request_t *req, const body_t *b, json_span_t *out, int *present);
int read_int32(http_request_t *req, const body_t *b, const char *name, int64_t min, int64_t max,
	       int64_t *out);
int read_seconds(http_request_t *req, const body_t *b, const char *name, double min, double max,
		 double *out);
int read_string(http_request_t *req, const body_t *b, const char *name, int required,
		size_t max_len, buf_t *out, int *present);

/* Sends status with body (taken over and freed). */
void respond_json(http_request_t *req, int status, buf_t *body);
/* Sends an error with the QueueError body; fmt says what failed and the fix. */
void respond_error(http_request_t *req, int status, const char *code, const char *param,
		   const char *fmt, ...) __attribute__((format(printf, 5, 6)));
/* Sends 409 with the QueueError body plus the job's unchanged "status". */
void respond_conflict(http_request_t *req, const char *code, job_state_t state, const char *fmt,
		      ...) __attribute__((format(printf, 4, 5)));

/*
 * Queues a 409 like respond_conflict(), sent after every change recorded so
 * far is committed, because the state it reports may not be committed yet.
 */
void conflict_after_commit(server_t *s, http_request_t *req, const char *code, job_state_t state,
			   const char *fmt, ...) __attribute__((format(printf, 5, 6)));

/*
 * Writes a short printable excerpt of untrusted text into out (for error
 * messages): at most 40 characters, control bytes shown as \xNN.
 */
const char *excerpt(const char *s, size_t len, char *out, size_t outlen);

#endif
