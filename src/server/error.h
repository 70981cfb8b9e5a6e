/*
 * The QueueError body that every error response carries:
 * {"code": ..., "message": ..., "param": ..., "type": ...}, with the type
 * derived from the status code as the Together Queue API does.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef INFERQ_SERVER_ERROR_H
#define INFERQ_SERVER_ERROR_H

#include "buf.h"

/* Returns the QueueError type for an HTTP status, e.g. "not_found_error" for 404. */
const char *error_type_for_status(int status);

/*
 * Appends a QueueError object to out. code is machine-readable
 * ("invalid_json", "missing_field", ...); param names the field or NULL;
 * message (printf format) says what failed and how to fix it.
 */
void error_body(buf_t *out, int status, const char *code, const char *param, const char *fmt, ...)
	__attribute__((format(printf, 5, 6)));

#endif
