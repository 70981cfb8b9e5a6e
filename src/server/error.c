/*
 * QueueError bodies (see error.h).
 *
 * SPDX-License-Identifier: MIT
 */
#include "error.h"

#include <stdarg.h>
#include <string.h>

#include "json.h"

const char *error_type_for_status(int status)
{
	switch (status) {
	case 400:
	case 405:
		return "invalid_request_error";
	case 401:
		return "authentication_error";
	case 403:
		return "permission_error";
	case 404:
		return "not_found_error";
	case 408:
		return "timeout_error";
	case 409:
		return "conflict_error";
	case 413:
	case 431:
		return "request_too_large";
	case 429:
		return "rate_limit_error";
	}
	if (status >= 500)
		return "server_error";
	return "invalid_request_error";
}

void error_body(buf_t *out, int status, const char *code, const char *param, const char *fmt, ...)
{
	buf_t message = BUF_INIT;
	va_list ap;

	va_start(ap, fmt);
	buf_vprintf(&message, fmt, ap);
	va_end(ap);

	buf_puts(out, "{\"code\":");
	json_write_string(out, code, strlen(code));
	buf_puts(out, ",\"message\":");
	json_write_string(out, message.data ? message.data : "", message.len);
	if (param) {
		buf_puts(out, ",\"param\":");
		json_write_string(out, param, strlen(param));
	}
	buf_puts(out, ",\"type\":");
	json_write_string(out, error_type_for_status(status), strlen(error_type_for_status(status)));
	buf_putc(out, '}');
	buf_free(&message);
}
