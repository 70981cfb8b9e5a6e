/*
 * The client subcommands of the inferq binary (submit, status, wait,
 * cancel, clear, metrics), built on libinferq. They print results on
 * stdout and messages on stderr, and end with the exit codes below, which
 * `inferq --help` and docs/cli.md list.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef INFERQ_CLI_H
#define INFERQ_CLI_H

#include <stdio.h>

#include "inferq.h"

enum {
	CLI_EXIT_OK = 0,
	CLI_EXIT_ERROR = 1,      /* any error not listed below */
	CLI_EXIT_USAGE = 2,      /* bad option or argument, or a 400 from the server */
	CLI_EXIT_CONNECT = 3,    /* the server could not be reached */
	CLI_EXIT_NOTFOUND = 4,   /* no such job (404) */
	CLI_EXIT_CONFLICT = 5,   /* the job's state does not allow the change (409) */
	CLI_EXIT_JOB_FAILED = 6, /* wait or submit --wait: the job failed or was canceled */
	CLI_EXIT_TIMEOUT = 7,    /* --timeout passed, or a request timed out */
};

/* Returns 1 when name is a client subcommand that cli_main() runs, else 0. */
int cli_is_command(const char *name);

/*
 * Runs a client subcommand: argv[0] is its name, the rest its options.
 * Returns the process exit code (CLI_EXIT_*).
 */
int cli_main(int argc, char **argv);

/* keys.c: `inferq keys create|list|revoke`; argv[0] is "keys". Returns the exit code. */
int keys_main(int argc, char **argv);

/* admin.c: `inferq jobs` and `inferq workers`; argv[0] names which. Returns the exit code. */
int admin_main(int argc, char **argv);

/* bench.c: `inferq bench SCENARIO`; argv[0] is "bench". Returns the exit code. */
int bench_main(int argc, char **argv);

/*
 * Returns the command name (client or not) nearest to name within two
 * edits, for a "did you mean" hint, or NULL when none is that close.
 */
const char *cli_suggest_command(const char *name);

/* Prints the list of client subcommands for `inferq --help`. */
void cli_print_commands(FILE *out);

/* Prints the exit codes for `inferq --help`. */
void cli_print_exit_codes(FILE *out);

/* --- Shared by the files of src/cli ------------------------------------- */

/* Options of every client subcommand; unused ones keep their defaults. */
typedef struct {
	const char *command;    /* argv[0] */
	const char *server;     /* --server, or NULL for INFERQ_URL or the default */
	const char *key_file;   /* --key-file, or NULL for the default file */
	const char *cacert;     /* --cacert */
	double request_timeout; /* --request-timeout in seconds; 0: library default */
	int json;               /* --json */
	const char *model;      /* --model */
	const char *id;         /* the positional request id */
	const char *payload;    /* --payload as given: JSON text, @FILE or - */
	const char *info;       /* --info JSON text */
	int priority;           /* --priority */
	int wait;               /* --wait */
	double timeout;         /* --timeout in seconds; negative: no limit */
} cli_opts_t;

/*
 * Codes of the connection options that every client subcommand takes. Each
 * command's getopt table starts with CLI_CONNECTION_OPTIONS, and its own
 * codes follow from CLI_OPT_OWN in the order of its table.
 */
enum {
	CLI_OPT_SERVER = 1000,
	CLI_OPT_KEY_FILE,
	CLI_OPT_CACERT,
	CLI_OPT_REQUEST_TIMEOUT,
	CLI_OPT_JSON,
	CLI_OPT_OWN,
};

#define CLI_CONNECTION_OPTIONS                                                                     \
	{"server", required_argument, NULL, CLI_OPT_SERVER},                                       \
	    {"key-file", required_argument, NULL, CLI_OPT_KEY_FILE},                               \
	    {"cacert", required_argument, NULL, CLI_OPT_CACERT},                                   \
	    {"request-timeout", required_argument, NULL, CLI_OPT_REQUEST_TIMEOUT},                 \
	{                                                                                          \
		"json", no_argument, NULL, CLI_OPT_JSON                                            \
	}

/*
 * Prints "inferq COMMAND: message" and a pointer to `inferq HELP --help` on
 * stderr. Returns CLI_EXIT_USAGE.
 */
int cli_usage_error(const char *command, const char *help, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/*
 * Stores connection option opt with value arg in opts. Returns 0, an exit
 * code after printing a usage error for opts->command (with a pointer to
 * `inferq HELP --help`), or -1 when opt is not a connection option.
 */
int cli_connection_option(cli_opts_t *opts, const char *help, int opt, const char *arg);

/*
 * Creates a client configured from opts (server, key file, CA file,
 * request timeout). Returns 0 with *out set, or an exit code after
 * printing why on stderr.
 */
int cli_client_new(const cli_opts_t *opts, inferq_client_t **out);

/*
 * Reports a failed library call: prints "inferq COMMAND: MESSAGE" on
 * stderr and, with --json, the server's JSON error body on stdout.
 * Returns the exit code for rc.
 */
int cli_report(const cli_opts_t *opts, inferq_client_t *c, int rc);

/* Returns the exit code for a library result code. */
int cli_exit_code(int rc);

/*
 * Parses a number of seconds (fractions allowed) from min to max into *out.
 * Returns 0, or -1 for text that is not such a number.
 */
int cli_parse_seconds(const char *text, double min, double max, double *out);

/*
 * Resolves --payload: JSON text as given, @FILE read from FILE, "-" read
 * from stdin. Stores a malloc'd copy in *out. Returns 0, or an exit code
 * after printing why.
 */
int cli_read_payload(const cli_opts_t *opts, char **out);

/* Prints a status as "name  value" lines, or the server's JSON with --json. */
void cli_print_status(const cli_opts_t *opts, const inferq_status_t *st);

/*
 * The subcommands, run by cli_main() after parsing; each returns the exit
 * code.
 */
int cli_run_submit(const cli_opts_t *opts);
int cli_run_status(const cli_opts_t *opts);
int cli_run_wait(const cli_opts_t *opts);
int cli_run_cancel(const cli_opts_t *opts);
int cli_run_clear(const cli_opts_t *opts);
int cli_run_metrics(const cli_opts_t *opts);

/*
 * Waits for a job and prints its final status. On a terminal (stderr) a
 * one-line progress bar shows info.progress, the state and the elapsed
 * time. Returns the exit code: 0 done, 6 failed or canceled, 7 timeout.
 */
int cli_wait_job(const cli_opts_t *opts, inferq_client_t *c, const char *request_id);

#endif
