/*
 * Descriptions of the INFERQ_E* result codes.
 *
 * SPDX-License-Identifier: MIT
 */
#include "inferq_error.h"

const char *inferq_strerror(int code)
{
	switch (code) {
	case INFERQ_OK: return "success";
	case INFERQ_ENOMEM: return "out of memory";
	case INFERQ_EINVAL: return "invalid argument";
	case INFERQ_ENOTFOUND: return "not found";
	case INFERQ_ECONFLICT: return "conflict with the current state";
	case INFERQ_EIO: return "input/output error";
	case INFERQ_ERANGE: return "value out of range";
	case INFERQ_ELIMIT: return "limit exceeded";
	case INFERQ_EBUSY: return "temporarily unavailable";
	case INFERQ_ETIMEDOUT: return "timed out";
	case INFERQ_EAUTH: return "authentication failed";
	case INFERQ_ECONNECT: return "connection failed";
	case INFERQ_EPROTO: return "protocol error";
	}
	return "unknown error";
}
