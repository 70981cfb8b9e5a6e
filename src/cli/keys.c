/*
 * `inferq keys create|list|revoke`: the admin commands for API keys, on
 * libinferq's inferq_keys_* calls. They need a key with the admin role
 * (by default ./inferq-data/admin.key). create prints the new key once:
 * the server keeps only its hash.
 *
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

#define MAX_MODELS 64

enum {
	OPT_NAME = CLI_OPT_OWN,
	OPT_ROLE,
	OPT_MODELS,
	OPT_EXPIRES,
	OPT_HELP,
};

static const struct option options[] = {
    CLI_CONNECTION_OPTIONS,
    {"name", required_argument, NULL, OPT_NAME},
    {"role", required_argument, NULL, OPT_ROLE},
    {"models", required_argument, NULL, OPT_MODELS},
    {"expires", required_argument, NULL, OPT_EXPIRES},
    {"help", no_argument, NULL, OPT_HELP},
    {NULL, 0, NULL, 0},
};

static const char usage_text[] =
    "usage: inferq keys create --name NAME --role ROLE [--models PATTERNS] [--expires D]\n"
    "       inferq keys list\n"
    "       inferq keys revoke NAME\n"
    "\n"
    "Manages API keys; needs a key with the admin role.\n"
    "\n"
    "create options:\n"
    "  --name NAME             1 to 64 characters of A-Z a-z 0-9 . _ -; names stay\n"
    "                          taken after a key is revoked\n"
    "  --role ROLE             client (submit, status, cancel, clear, metrics), worker\n"
    "                          (claim, heartbeat, complete, fail, release, status) or\n"
    "                          admin (everything, and keys)\n"
    "  --models PATTERNS       models the key may use, comma-separated or repeated:\n"
    "                          \"*\", a model name, or a prefix such as 'my-org/*';\n"
    "                          required for client and worker keys\n"
    "  --expires D             the key stops working after D, such as 30d or 12h\n"
    "\n"
    "options of every subcommand:\n"
    "  --server URL            server base URL (default $INFERQ_URL, then\n"
    "                          " INFERQ_DEFAULT_URL ")\n"
    "  --key-file PATH         file whose first line is the admin key, used when\n"
    "                          $INFERQ_API_KEY and $TOGETHER_API_KEY are unset\n"
    "                          (default " INFERQ_DEFAULT_KEY_FILE " when readable)\n"
    "  --cacert PATH           PEM CA certificates for an https:// server\n"
    "  --request-timeout S     seconds for one HTTP request (default 30)\n"
    "  --json                  print the server's JSON response unchanged\n"
    "  --help                  print this help\n"
    "\n"
    "create prints the new key on the last line (with --json, in the response); the\n"
    "server keeps only its hash, so store the key at once. list prints one line per\n"
    "key, revoke prints \"revoked NAME\".\n";

typedef struct {
	cli_opts_t common;
	const char *name;
	const char *role;
	const char *expires;
	char *models[MAX_MODELS];
	size_t model_count;
	int has_models;
} keys_opts_t;

/* Splits a --models value at commas into opts->models. */
static int add_models(keys_opts_t *opts, const char *value)
{
	const char *p = value;

	opts->has_models = 1;
	while (*p) {
		const char *comma = strchr(p, ',');
		size_t len = comma ? (size_t)(comma - p) : strlen(p);

		if (len == 0)
			return cli_usage_error(
			    opts->common.command, "keys",
			    "invalid --models \"%s\": a pattern is empty; separate "
			    "patterns with one comma, as in 'a/*,b/model'",
			    value);
		if (opts->model_count == MAX_MODELS)
			return cli_usage_error(opts->common.command, "keys",
			                       "more than %d --models patterns", MAX_MODELS);
		opts->models[opts->model_count] = strndup(p, len);
		if (!opts->models[opts->model_count])
			return CLI_EXIT_ERROR;
		opts->model_count++;
		p += len + (comma ? 1 : 0);
	}
	return 0;
}

/* Parses argv (argv[0] is the subcommand). Returns 0, -1 after --help, or an exit code. */
static int parse(int argc, char **argv, keys_opts_t *opts)
{
	const char *command = opts->common.command;
	int opt, rc;

	opterr = 0;
	optind = 0; /* 0 makes glibc's getopt start afresh at argv[1] */
	while ((opt = getopt_long(argc, argv, "", options, NULL)) != -1) {
		rc = cli_connection_option(&opts->common, "keys", opt, optarg);
		if (rc >= 0) {
			if (rc > 0)
				return rc;
			continue;
		}
		switch (opt) {
		case OPT_NAME: opts->name = optarg; break;
		case OPT_ROLE: opts->role = optarg; break;
		case OPT_EXPIRES: opts->expires = optarg; break;
		case OPT_MODELS:
			if ((rc = add_models(opts, optarg)) != 0)
				return rc;
			break;
		case OPT_HELP: fputs(usage_text, stdout); return -1;
		default:
			if (optopt >= CLI_OPT_SERVER && optopt <= OPT_HELP)
				return cli_usage_error(command, "keys", "option --%s needs a value",
				                       options[optopt - CLI_OPT_SERVER].name);
			return cli_usage_error(command, "keys", "unknown option \"%s\"",
			                       argv[optind - 1]);
		}
	}
	return 0;
}

/* Rejects the options of create on the other subcommands. */
static int only_common(const keys_opts_t *opts)
{
	if (opts->name || opts->role || opts->expires || opts->has_models)
		return cli_usage_error(opts->common.command, "keys",
		                       "--name, --role, --models and --expires apply only to "
		                       "`inferq keys create`");
	return 0;
}

static void print_field(const char *name, const char *value)
{
	if (value)
		printf("%-12s %s\n", name, value);
}

static int run_create(const keys_opts_t *opts, inferq_client_t *c)
{
	inferq_key_t *k = NULL;
	int rc;

	/* A bare number would mean seconds, and a user who writes 90 rarely means 90 seconds. */
	if (opts->expires && opts->expires[0] &&
	    strspn(opts->expires, "0123456789") == strlen(opts->expires))
		return cli_usage_error(
		    opts->common.command, "keys",
		    "--expires %s has no unit: write %ss, %sh or %sd for seconds, "
		    "hours or days",
		    opts->expires, opts->expires, opts->expires, opts->expires);
	rc = inferq_keys_create(c, opts->name, opts->role,
	                        opts->has_models ? (const char *const *)opts->models : NULL,
	                        opts->model_count, opts->expires, &k);
	if (rc != 0)
		return cli_report(&opts->common, c, rc);
	if (opts->common.json) {
		printf("%s\n", inferq_client_last_response(c));
	} else {
		print_field("name", k->name);
		print_field("role", k->role);
		print_field("models", k->models);
		print_field("key_prefix", k->key_prefix);
		print_field("created_at", k->created_at);
		print_field("expires_at", k->expires_at);
		print_field("key", k->key);
		fprintf(stderr, "inferq keys create: store the key now; the server keeps only its "
		                "hash and cannot show it again\n");
	}
	inferq_key_free(k);
	return CLI_EXIT_OK;
}

static const char *or_dash(const char *s)
{
	return s ? s : "-";
}

static int run_list(const keys_opts_t *opts, inferq_client_t *c)
{
	inferq_key_t **keys = NULL;
	size_t count = 0;
	int rc = inferq_keys_list(c, &keys, &count);

	if (rc != 0)
		return cli_report(&opts->common, c, rc);
	if (opts->common.json) {
		printf("%s\n", inferq_client_last_response(c));
	} else {
		printf("%-20s %-6s %-8s %-20s %-20s %-20s %-20s %s\n", "NAME", "ROLE", "PREFIX",
		       "CREATED", "LAST_USED", "EXPIRES", "REVOKED", "MODELS");
		for (size_t i = 0; i < count; i++) {
			const inferq_key_t *k = keys[i];

			printf("%-20s %-6s %-8s %-20s %-20s %-20s %-20s %s\n", k->name, k->role,
			       or_dash(k->key_prefix), or_dash(k->created_at),
			       or_dash(k->last_used_at), or_dash(k->expires_at),
			       or_dash(k->revoked_at), k->models);
		}
	}
	inferq_key_list_free(keys, count);
	return CLI_EXIT_OK;
}

static int run_revoke(const keys_opts_t *opts, inferq_client_t *c, const char *name)
{
	int rc = inferq_keys_revoke(c, name, NULL);

	/* The server's message points to its HTTP route; a CLI user lists keys with the CLI. */
	if (rc == INFERQ_ENOTFOUND && !opts->common.json) {
		fprintf(stderr, "inferq keys revoke: no API key named \"%s\"; list the keys with "
		                "`inferq keys list`\n",
		        name);
		return CLI_EXIT_NOTFOUND;
	}
	if (rc != 0)
		return cli_report(&opts->common, c, rc);
	if (opts->common.json)
		printf("%s\n", inferq_client_last_response(c));
	else
		printf("revoked %s\n", name);
	return CLI_EXIT_OK;
}

/* Checks the arguments of the subcommand; returns 0 or an exit code. */
static int check_args(const char *sub, keys_opts_t *opts, int argc, char **argv)
{
	int extra = argc - optind;

	if (strcmp(sub, "create") == 0) {
		if (extra > 0)
			return cli_usage_error(opts->common.command, "keys",
			                       "unexpected argument \"%s\"", argv[optind]);
		if (!opts->name || !*opts->name)
			return cli_usage_error(opts->common.command, "keys",
			                       "missing --name: name the key, "
			                       "as in --name web-app");
		if (!opts->role || !*opts->role)
			return cli_usage_error(opts->common.command, "keys",
			                       "missing --role: use client, worker or admin");
		if (!opts->has_models && strcmp(opts->role, "admin") != 0)
			return cli_usage_error(
			    opts->common.command, "keys",
			    "missing --models: name the models a %s key may use, as "
			    "in --models 'my-org/*'",
			    opts->role);
		return 0;
	}
	if (only_common(opts) != 0)
		return CLI_EXIT_USAGE;
	if (strcmp(sub, "list") == 0 && extra > 0)
		return cli_usage_error(opts->common.command, "keys", "unexpected argument \"%s\"",
		                       argv[optind]);
	if (strcmp(sub, "revoke") == 0 && extra != 1)
		return cli_usage_error(opts->common.command, "keys",
		                       extra == 0 ? "missing the name of the key to revoke"
		                                  : "revoke takes one key name");
	return 0;
}

static int run(const char *sub, keys_opts_t *opts, int argc, char **argv)
{
	inferq_client_t *c = NULL;
	int exit_code = check_args(sub, opts, argc, argv);

	if (exit_code != 0)
		return exit_code;
	if ((exit_code = cli_client_new(&opts->common, &c)) != 0)
		return exit_code;
	if (strcmp(sub, "create") == 0)
		exit_code = run_create(opts, c);
	else if (strcmp(sub, "list") == 0)
		exit_code = run_list(opts, c);
	else
		exit_code = run_revoke(opts, c, argv[optind]);
	inferq_client_free(c);
	return exit_code;
}

int keys_main(int argc, char **argv)
{
	static const char *const subs[] = {"create", "list", "revoke"};
	static const char *const commands[] = {"keys create", "keys list", "keys revoke"};
	keys_opts_t opts = {0};
	int rc, exit_code;
	size_t i;

	if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "help") == 0) {
		fputs(usage_text, argc < 2 ? stderr : stdout);
		return argc < 2 ? CLI_EXIT_USAGE : CLI_EXIT_OK;
	}
	for (i = 0; i < 3 && strcmp(argv[1], subs[i]) != 0; i++)
		;
	if (i == 3)
		return cli_usage_error("keys", "keys",
		                       "unknown subcommand \"%s\": use create, list or revoke",
		                       argv[1]);
	opts.common.command = commands[i];
	opts.common.timeout = -1;

	rc = parse(argc - 1, argv + 1, &opts);
	if (rc != 0)
		exit_code = rc < 0 ? CLI_EXIT_OK : rc;
	else
		exit_code = run(subs[i], &opts, argc - 1, argv + 1);
	for (size_t m = 0; m < opts.model_count; m++)
		free(opts.models[m]);
	return exit_code;
}
