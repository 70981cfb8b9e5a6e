/*
 * Validation of request bodies and query strings, free of I/O so unit tests
 * and fuzzers can drive it. Every reader checks one field; on bad input it
 * fills an input_error_t (status, QueueError code, field, and a message
 * that names the value and the fix) and returns a negative code, so a
 * handler chains readers and responds with the first error:
 *
 *	if (read_model(c, &body, &model, &err) != 0 ||
 *	    read_int(&body, "priority", INT32_MIN, INT32_MAX, &priority, &err) != 0) {
 *		respond_input_error(req, &err);
 *		goto out;
 *	}
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef INFERQ_REQUEST_H
#define INFERQ_REQUEST_H

#include <stdint.h>

#include "buf.h"
#include "config.h"
#include "http.h"
#include "ids.h"
#include "job.h"
#include "json.h"

#define BODY_MAX_FIELDS 8

/* Why a request was rejected: what the 4xx response will say. */
typedef struct {
	int status;        /* HTTP status, usually 400 */
	const char *code;  /* QueueError code, e.g. "invalid_field" */
	const char *param; /* field at fault, or NULL */
	char message[512]; /* what failed, on which value, and the fix */
} input_error_t;

/* A validated JSON object body with its known top-level fields located. */
typedef struct {
	json_span_t root;
	const char *const *names;            /* known field names, NULL-terminated */
	json_span_t fields[BODY_MAX_FIELDS]; /* value of each known field */
	int present[BODY_MAX_FIELDS];        /* 1 when the field was sent */
	buf_t warnings;                      /* JSON array of warning strings, or empty */
	char unknown[64]; /* name of the first unknown field, shown by missing-field errors */
} body_t;

/*
 * Validates text[0..len) as a JSON object within c's depth limit, rejects
 * duplicate known fields, and records each unknown field (the first 16) as
 * a warning. names lists the known fields (at most BODY_MAX_FIELDS). The
 * spans in out point into text. Returns 0 or INFERQ_EINVAL / INFERQ_ELIMIT
 * with err filled; out must be freed with body_free() either way.
 */
int body_parse(const serve_config_t *c, const char *text, size_t len, const char *const *names,
	       body_t *out, input_error_t *err);
/*
 * Locates the known fields of object, a JSON_TYPE_OBJECT span inside a
 * document that json_validate() accepted, as body_parse() does for a whole
 * body: a duplicate known field is an error, unknown ones become warnings.
 * Returns 0 or INFERQ_EINVAL with err filled; out must be freed with
 * body_free() either way.
 */
int body_parse_object(const json_span_t *object, const char *const *names, body_t *out,
		      input_error_t *err);
/* Frees the warnings of b. */
void body_free(body_t *b);
/* Returns the value span of known field name, or NULL when it was not sent. */
const json_span_t *body_field(const body_t *b, const char *name);
/* Adds "warnings":[...] to the JSON object that ends out, when b had unknown fields. */
void body_add_warnings(buf_t *out, const body_t *b);

/*
 * Field readers. Required fields are rejected when absent; optional ones
 * leave *out unchanged and return 0 when absent. Each returns 0, or a
 * negative code with err filled.
 */

/* model: a string of 1 to c->max_model_length characters of A-Z a-z 0-9 . _ : / - */
int read_model(const serve_config_t *c, const body_t *b, buf_t *out, input_error_t *err);
/* The same rules for a model given as query parameter "model". */
int read_model_query(const serve_config_t *c, const char *query, size_t len, buf_t *out,
		     input_error_t *err);
/* A required id field (request_id, claim_id) in the canonical UUID form. */
int read_id(const body_t *b, const char *name, iq_id_t *out, input_error_t *err);
int read_id_query(const char *query, size_t len, const char *name, iq_id_t *out,
		  input_error_t *err);
/* A JSON object field; *present (may be NULL) tells whether it was sent. */
int read_object(const body_t *b, const char *name, int required, json_span_t *out, int *present,
		input_error_t *err);
/* info: an optional object within c->max_info_bytes that does not set retry_history. */
int read_info(const serve_config_t *c, const body_t *b, json_span_t *out, int *present,
	      input_error_t *err);
/* An optional integer literal in [min, max]; "1.0", "1e2" and strings are rejected. */
int read_int(const body_t *b, const char *name, int64_t min, int64_t max, int64_t *out,
	     input_error_t *err);
/* An optional number of seconds in [min, max]; fractions allowed. */
int read_seconds(const body_t *b, const char *name, double min, double max, double *out,
		 input_error_t *err);
/* A string of at most max_len bytes with no NUL; *present may be NULL. */
int read_string(const body_t *b, const char *name, int required, size_t max_len, buf_t *out,
		int *present, input_error_t *err);

/*
 * Fills err with a 400 of QueueError code for field param (or NULL) and the
 * message fmt, then returns rc. Every validator reports bad input this way.
 */
int input_fail(input_error_t *err, int rc, const char *code, const char *param, const char *fmt,
	       ...) __attribute__((format(printf, 5, 6)));

/* Sends the 4xx response that err describes. */
void respond_input_error(http_request_t *req, const input_error_t *err);
/* Sends status with body (taken over and freed). */
void respond_json(http_request_t *req, int status, buf_t *body);
/* Sends an error with the QueueError body; fmt says what failed and the fix. */
void respond_error(http_request_t *req, int status, const char *code, const char *param,
		   const char *fmt, ...) __attribute__((format(printf, 5, 6)));
/*
 * Appends a 409 QueueError body that also carries the job's unchanged "status";
 * param names the field at fault, or NULL.
 */
void conflict_body(buf_t *out, const char *code, const char *param, job_state_t state,
		   const char *fmt, ...) __attribute__((format(printf, 5, 6)));

/*
 * Writes a short printable excerpt of untrusted text into out (for error
 * messages): at most 40 bytes, control bytes shown as \xNN; returns out.
 */
const char *excerpt(const char *s, size_t len, char *out, size_t outlen);

#endif
