/*
 * Option parsing, help and dispatch of the client subcommands, plus what
 * they share: the client set-up from options, error reports and exit
 * codes, and reading --payload. Every option of every subcommand is in one
 * getopt_long table. A subcommand lists the ones it accepts in a mask, so
 * `inferq status --priority 1` is a usage error, not a silent no-op.
 *
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "suggest.h"
#include "worker.h"

enum {
	OPT_MODEL = CLI_OPT_OWN,
	OPT_PAYLOAD,
	OPT_INFO,
	OPT_PRIORITY,
	OPT_WAIT,
	OPT_TIMEOUT,
	OPT_HELP,
};

/* Bits of the command-specific options a subcommand accepts. */
enum {
	ACCEPT_PAYLOAD = 1 << 0,
	ACCEPT_INFO = 1 << 1,
	ACCEPT_PRIORITY = 1 << 2,
	ACCEPT_WAIT = 1 << 3,
	ACCEPT_TIMEOUT = 1 << 4,
};

typedef struct {
	const char *name;
	const char *args;    /* usage after the name */
	const char *summary; /* one line for `inferq --help` */
	const char *options; /* help lines of the command's own options, or "" */
	const char *notes;   /* what the command prints and its special exit codes */
	int accept;          /* ACCEPT_* bits */
	int takes_id;        /* 1: one positional request id */
	int (*run)(const cli_opts_t *opts);
} command_t;

static const command_t commands[] = {
    {"submit", "--model M [--payload JSON|@FILE|-] [--info JSON] [--priority N] [--wait]",
     "submit a job and print its request id",
     "  --payload JSON|@FILE|-  the job's payload, a JSON object: given inline, read\n"
     "                          from FILE, or read from stdin (default {})\n"
     "  --info JSON             metadata for the job, a JSON object\n"
     "  --priority N            integer, higher runs first (default 0)\n"
     "  --wait                  wait for the job to finish and print its final status\n"
     "  --timeout S             with --wait: give up after S seconds (default: no limit)\n",
     "Prints the request id, or with --json the server's response. With --wait it\n"
     "prints the final status instead, as `inferq wait` does.\n",
     ACCEPT_PAYLOAD | ACCEPT_INFO | ACCEPT_PRIORITY | ACCEPT_WAIT | ACCEPT_TIMEOUT, 0,
     cli_run_submit},
    {"status", "ID --model M", "print a job's status", "",
     "Prints the job's fields, or with --json the server's response.\n", 0, 1, cli_run_status},
    {"wait", "ID --model M [--timeout S]", "wait until a job is done, failed or canceled",
     "  --timeout S             give up after S seconds (default: no limit)\n",
     "On a terminal, shows a progress bar fed by the job's info.progress (0 to 1)\n"
     "on stderr. Prints the final status; exits 6 when the job failed or was\n"
     "canceled and 7 when the timeout passed.\n",
     ACCEPT_TIMEOUT, 1, cli_run_wait},
    {"cancel", "ID --model M", "cancel a pending job", "",
     "Prints \"canceled ID\". Exits 5 when the job is no longer pending.\n", 0, 1, cli_run_cancel},
    {"clear", "--model M", "cancel every pending job of a model", "",
     "Prints how many jobs were canceled; running jobs are not touched.\n", 0, 0, cli_run_clear},
    {"metrics", "--model M", "print a model's queue gauges", "",
     "Prints the jobs waiting (pending), running, and their total.\n", 0, 0, cli_run_metrics},
};

#define N_COMMANDS (sizeof(commands) / sizeof(commands[0]))

static const char global_help[] =
    "  --model M               the model the job belongs to (required)\n"
    "  --server URL            server base URL (default $INFERQ_URL, then\n"
    "                          " INFERQ_DEFAULT_URL ")\n"
    "  --key-file PATH         file whose first line is the API key, used when\n"
    "                          $INFERQ_API_KEY and $TOGETHER_API_KEY are unset\n"
    "                          (default " INFERQ_DEFAULT_KEY_FILE " when readable)\n"
    "  --cacert PATH           PEM CA certificates for an https:// server\n"
    "  --request-timeout S     seconds for one HTTP request (default 30)\n"
    "  --json                  print the server's JSON response unchanged\n"
    "  --help                  print this help\n";

static const struct option long_options[] = {
    CLI_CONNECTION_OPTIONS,
    {"model", required_argument, NULL, OPT_MODEL},
    {"payload", required_argument, NULL, OPT_PAYLOAD},
    {"info", required_argument, NULL, OPT_INFO},
    {"priority", required_argument, NULL, OPT_PRIORITY},
    {"wait", no_argument, NULL, OPT_WAIT},
    {"timeout", required_argument, NULL, OPT_TIMEOUT},
    {"help", no_argument, NULL, OPT_HELP},
    {NULL, 0, NULL, 0},
};

static const command_t *find_command(const char *name)
{
	for (size_t i = 0; i < N_COMMANDS; i++)
		if (strcmp(commands[i].name, name) == 0)
			return &commands[i];
	return NULL;
}

int cli_is_command(const char *name)
{
	return find_command(name) != NULL || strcmp(name, "worker") == 0 ||
	       strcmp(name, "keys") == 0 || strcmp(name, "jobs") == 0 ||
	       strcmp(name, "workers") == 0 || strcmp(name, "bench") == 0;
}

const char *cli_suggest_command(const char *name)
{
	static const char *const others[] = {"serve", "version", "help",  "worker",
					     "keys",  "jobs",    "workers", "bench"};
	const char *names[N_COMMANDS + sizeof(others) / sizeof(others[0])];
	size_t n = 0;

	for (size_t i = 0; i < N_COMMANDS; i++)
		names[n++] = commands[i].name;
	for (size_t i = 0; i < sizeof(others) / sizeof(others[0]); i++)
		names[n++] = others[i];
	return suggest_nearest(name, names, n);
}

void cli_print_commands(FILE *out)
{
	for (size_t i = 0; i < N_COMMANDS; i++)
		fprintf(out, "  %-9s %s\n", commands[i].name, commands[i].summary);
	fprintf(out, "  %-9s %s\n", "worker", "run a program once per claimed job of a model");
	fprintf(out, "  %-9s %s\n", "keys", "create, list and revoke API keys (admin)");
	fprintf(out, "  %-9s %s\n", "jobs", "list jobs of every model, newest first (admin)");
	fprintf(out, "  %-9s %s\n", "workers", "list the workers the server has seen (admin)");
	fprintf(out, "  %-9s %s\n", "bench", "load-test a server and print rates and latency");
}

void cli_print_exit_codes(FILE *out)
{
	fprintf(out, "exit codes of the client commands:\n"
	             "  0  success\n"
	             "  1  any other error (authentication, server error, bad response)\n"
	             "  2  usage error: bad option or argument, or the server rejected the\n"
	             "     request as invalid (HTTP 400)\n"
	             "  3  the server could not be reached\n"
	             "  4  not found: no such job for that model (HTTP 404)\n"
	             "  5  conflict: the job's state does not allow the change (HTTP 409)\n"
	             "  6  wait, submit --wait: the job failed or was canceled\n"
	             "  7  timed out: --timeout passed, or a request got no answer in time\n");
}

static void print_help(FILE *out, const command_t *cmd)
{
	fprintf(out, "usage: inferq %s %s [options]\n\n%c%s.\n\noptions:\n%s%s\n%s\n", cmd->name,
	        cmd->args, cmd->summary[0] - 'a' + 'A', cmd->summary + 1, cmd->options, global_help,
	        cmd->notes);
	cli_print_exit_codes(out);
}

int cli_usage_error(const char *command, const char *help, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "inferq %s: ", command);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\nrun `inferq %s --help` for the options\n", help);
	return CLI_EXIT_USAGE;
}

int cli_connection_option(cli_opts_t *opts, const char *help, int opt, const char *arg)
{
	switch (opt) {
	case CLI_OPT_SERVER: opts->server = arg; return 0;
	case CLI_OPT_KEY_FILE: opts->key_file = arg; return 0;
	case CLI_OPT_CACERT: opts->cacert = arg; return 0;
	case CLI_OPT_JSON: opts->json = 1; return 0;
	case CLI_OPT_REQUEST_TIMEOUT:
		if (cli_parse_seconds(arg, 0.001, 1e9, &opts->request_timeout) != 0)
			return cli_usage_error(opts->command, help,
			                       "invalid --request-timeout \"%s\": use a number of "
			                       "seconds above 0, such as 30",
			                       arg);
		return 0;
	}
	return -1;
}

int cli_parse_seconds(const char *text, double min, double max, double *out)
{
	char *end;
	double v;

	errno = 0;
	v = strtod(text, &end);
	if (end == text || *end != '\0' || errno == ERANGE || !isfinite(v) || v < min || v > max)
		return -1;
	*out = v;
	return 0;
}

static int parse_priority(const char *text, int *out)
{
	char *end;
	long long v;

	errno = 0;
	v = strtoll(text, &end, 10);
	if (end == text || *end != '\0' || errno == ERANGE || v < INT32_MIN || v > INT32_MAX)
		return -1;
	*out = (int)v;
	return 0;
}

/* Handles one command-specific option; returns 0 or an exit code. */
static int command_option(const command_t *cmd, cli_opts_t *opts, int opt, const char *arg)
{
	static const int needs[] = {
	    [OPT_PAYLOAD - OPT_PAYLOAD] = ACCEPT_PAYLOAD,   [OPT_INFO - OPT_PAYLOAD] = ACCEPT_INFO,
	    [OPT_PRIORITY - OPT_PAYLOAD] = ACCEPT_PRIORITY, [OPT_WAIT - OPT_PAYLOAD] = ACCEPT_WAIT,
	    [OPT_TIMEOUT - OPT_PAYLOAD] = ACCEPT_TIMEOUT,
	};

	if (!(cmd->accept & needs[opt - OPT_PAYLOAD]))
		return cli_usage_error(cmd->name, cmd->name,
		                       "option --%s does not apply to this command",
		                       long_options[opt - CLI_OPT_SERVER].name);
	switch (opt) {
	case OPT_PAYLOAD: opts->payload = arg; break;
	case OPT_INFO: opts->info = arg; break;
	case OPT_WAIT: opts->wait = 1; break;
	case OPT_PRIORITY:
		if (parse_priority(arg, &opts->priority) != 0)
			return cli_usage_error(cmd->name, cmd->name,
			                       "invalid --priority \"%s\": use an integer from "
			                       "-2147483648 to 2147483647",
			                       arg);
		break;
	case OPT_TIMEOUT:
		if (cli_parse_seconds(arg, 0, 1e9, &opts->timeout) != 0)
			return cli_usage_error(cmd->name, cmd->name,
			                       "invalid --timeout \"%s\": use a number of seconds, "
			                       "0 or more, such as 30 or 2.5",
			                       arg);
		break;
	}
	return 0;
}

/* Parses argv into opts. Returns 0, -1 after --help, or an exit code. */
static int parse_options(const command_t *cmd, int argc, char **argv, cli_opts_t *opts)
{
	int opt, rc;

	opterr = 0;
	optind = 0; /* 0 makes glibc's getopt start afresh at argv[1] */
	while ((opt = getopt_long(argc, argv, "", long_options, NULL)) != -1) {
		rc = cli_connection_option(opts, cmd->name, opt, optarg);
		if (rc >= 0) {
			if (rc > 0)
				return rc;
			continue;
		}
		switch (opt) {
		case OPT_MODEL: opts->model = optarg; break;
		case OPT_HELP: print_help(stdout, cmd); return -1;
		case '?':
			if (optopt >= CLI_OPT_SERVER && optopt <= OPT_HELP)
				return cli_usage_error(cmd->name, cmd->name,
				                       "option --%s needs a value",
				                       long_options[optopt - CLI_OPT_SERVER].name);
			return cli_usage_error(cmd->name, cmd->name, "unknown option \"%s\"",
			                       argv[optind - 1]);
		default:
			if ((rc = command_option(cmd, opts, opt, optarg)) != 0)
				return rc;
		}
	}
	if (cmd->takes_id) {
		if (optind >= argc)
			return cli_usage_error(cmd->name, cmd->name,
			                       "missing the request id: pass the id that "
			                       "submit printed");
		opts->id = argv[optind++];
	}
	if (optind < argc)
		return cli_usage_error(cmd->name, cmd->name, "unexpected argument \"%s\"",
		                       argv[optind]);
	if (!opts->model || !*opts->model)
		return cli_usage_error(cmd->name, cmd->name,
		                       "missing --model: name the queue's model, as in "
		                       "--model my-org/llm");
	if ((cmd->accept & ACCEPT_WAIT) && opts->timeout >= 0 && !opts->wait)
		return cli_usage_error(cmd->name, cmd->name,
		                       "option --timeout applies only with --wait");
	return 0;
}

int cli_main(int argc, char **argv)
{
	const command_t *cmd = find_command(argv[0]);
	cli_opts_t opts = {0};
	int rc;

	if (strcmp(argv[0], "worker") == 0)
		return worker_main(argc, argv);
	if (strcmp(argv[0], "keys") == 0)
		return keys_main(argc, argv);
	if (strcmp(argv[0], "jobs") == 0 || strcmp(argv[0], "workers") == 0)
		return admin_main(argc, argv);
	if (strcmp(argv[0], "bench") == 0)
		return bench_main(argc, argv);
	if (!cmd) {
		fprintf(stderr, "inferq: unknown command \"%s\"\n", argv[0]);
		return CLI_EXIT_USAGE;
	}
	opts.command = cmd->name;
	opts.timeout = -1;
	rc = parse_options(cmd, argc, argv, &opts);
	if (rc != 0)
		return rc < 0 ? CLI_EXIT_OK : rc;
	return cmd->run(&opts);
}

int cli_exit_code(int rc)
{
	switch (rc) {
	case 0: return CLI_EXIT_OK;
	case INFERQ_EINVAL: return CLI_EXIT_USAGE;
	case INFERQ_ECONNECT: return CLI_EXIT_CONNECT;
	case INFERQ_ENOTFOUND: return CLI_EXIT_NOTFOUND;
	case INFERQ_ECONFLICT: return CLI_EXIT_CONFLICT;
	case INFERQ_ETIMEDOUT: return CLI_EXIT_TIMEOUT;
	}
	return CLI_EXIT_ERROR;
}

int cli_report(const cli_opts_t *opts, inferq_client_t *c, int rc)
{
	const char *body = inferq_client_last_response(c);

	if (opts->json && inferq_client_last_status(c) >= 400 && body[0] == '{')
		printf("%s\n", body);
	fprintf(stderr, "inferq %s: %s\n", opts->command, inferq_client_last_error(c));
	if (inferq_client_last_status(c) == 401)
		fprintf(stderr,
		        "inferq %s: give the CLI a key with $INFERQ_API_KEY or --key-file "
		        "(default ./inferq-data/admin.key, written by the server at its "
		        "first start)\n",
		        opts->command);
	return cli_exit_code(rc);
}

int cli_client_new(const cli_opts_t *opts, inferq_client_t **out)
{
	inferq_client_t *c = NULL;
	int rc;

	*out = NULL;

	/* --server wins over INFERQ_URL, so a bad INFERQ_URL must not stop it. */
	if (opts->server)
		unsetenv("INFERQ_URL");
	rc = inferq_client_new(&c);
	if (rc == INFERQ_EINVAL) {
		fprintf(stderr,
		        "inferq %s: invalid INFERQ_URL \"%s\": it must start with http:// "
		        "or https://\n",
		        opts->command, getenv("INFERQ_URL"));
		return CLI_EXIT_USAGE;
	}
	if (rc != 0) {
		fprintf(stderr, "inferq %s: cannot create a client: %s\n", opts->command,
		        inferq_strerror(rc));
		return CLI_EXIT_ERROR;
	}
	if ((opts->server && (rc = inferq_client_set_url(c, opts->server)) != 0) ||
	    (opts->key_file && (rc = inferq_client_set_key_file(c, opts->key_file)) != 0) ||
	    (opts->cacert && (rc = inferq_client_set_cacert(c, opts->cacert)) != 0)) {
		fprintf(stderr, "inferq %s: %s\n", opts->command, inferq_client_last_error(c));
		inferq_client_free(c);
		return rc == INFERQ_ENOMEM ? CLI_EXIT_ERROR : CLI_EXIT_USAGE;
	}
	if (opts->request_timeout > 0)
		inferq_client_set_timeouts(c, 0, (long)ceil(opts->request_timeout * 1000));
	*out = c;
	return 0;
}

/* Reads all of f into a new NUL-terminated string; NULL on failure. */
static char *read_all(FILE *f, size_t *len)
{
	size_t cap = 4096, n = 0, got;
	char *data = malloc(cap), *grown;

	while (data && (got = fread(data + n, 1, cap - n - 1, f)) > 0) {
		n += got;
		if (cap - n - 1 > 0)
			continue;
		grown = cap > SIZE_MAX / 2 ? NULL : realloc(data, cap * 2);
		if (!grown) {
			free(data);
			return NULL;
		}
		data = grown;
		cap *= 2;
	}
	if (!data || ferror(f)) {
		free(data);
		return NULL;
	}
	data[n] = '\0';
	*len = n;
	return data;
}

int cli_read_payload(const cli_opts_t *opts, char **out)
{
	const char *arg = opts->payload ? opts->payload : "{}";
	const char *source = NULL;
	FILE *f = NULL;
	size_t len;
	char *data;

	if (strcmp(arg, "-") == 0) {
		f = stdin;
		source = "stdin";
	} else if (arg[0] == '@') {
		source = arg + 1;
		f = fopen(source, "rb");
		if (!f) {
			fprintf(stderr, "inferq %s: cannot open the payload file %s: %s\n",
			        opts->command, source, strerror(errno));
			return CLI_EXIT_USAGE;
		}
	}
	if (!f) {
		*out = strdup(arg);
		return *out ? 0 : CLI_EXIT_ERROR;
	}
	data = read_all(f, &len);
	if (f != stdin)
		fclose(f);
	if (!data) {
		fprintf(stderr, "inferq %s: cannot read the payload from %s\n", opts->command,
		        source);
		return CLI_EXIT_ERROR;
	}
	if (strlen(data) != len) {
		fprintf(stderr,
		        "inferq %s: the payload from %s contains a NUL byte, which JSON "
		        "text cannot contain\n",
		        opts->command, source);
		free(data);
		return CLI_EXIT_USAGE;
	}
	*out = data;
	return 0;
}
