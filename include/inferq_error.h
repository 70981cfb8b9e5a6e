/*
 * Result codes shared by the inferq server, the client library and the CLI.
 * Every internal call returns 0 on success or one of these negative values;
 * a function never mixes them with boolean or -1 returns.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef INFERQ_ERROR_H
#define INFERQ_ERROR_H

enum {
	INFERQ_OK = 0,
	INFERQ_ENOMEM = -1,    /* allocation failed */
	INFERQ_EINVAL = -2,    /* invalid argument or input */
	INFERQ_ENOTFOUND = -3, /* no such job, model or file */
	INFERQ_ECONFLICT = -4, /* state or claim does not allow the change */
	INFERQ_EIO = -5,       /* disk, database or socket error */
	INFERQ_ERANGE = -6,    /* value outside its allowed range */
	INFERQ_ELIMIT = -7,    /* a configured size or depth limit was exceeded */
	INFERQ_EBUSY = -8,     /* resource temporarily unavailable; retry later */
	INFERQ_ETIMEDOUT = -9, /* operation did not finish in time */
	INFERQ_EAUTH = -10,    /* missing, unknown or insufficient credentials */
	INFERQ_ECONNECT = -11, /* could not reach the server */
	INFERQ_EPROTO = -12,   /* peer sent something that breaks the protocol */
};

/* Returns a static English description of an INFERQ_E* code. */
const char *inferq_strerror(int code);

#endif
