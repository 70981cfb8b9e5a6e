/*
 * `inferq jobs` and `inferq workers`: the operator views, on libinferq's
 * inferq_admin_jobs() and inferq_admin_workers(). They need a key with the
 * admin role (by default ./inferq-data/admin.key). Tables go to stdout,
 * one row per job or worker. Notes such as "more jobs follow" go to
 * stderr, so piped output contains the rows alone.
 *
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"

#define MAX_LIMIT     1000
#define ALL_PAGE_SIZE 1000    /* jobs per request with --all and no --limit */
#define MAX_PAGES     1000000 /* a bound on --all, far above any real listing */

enum {
	OPT_MODEL = CLI_OPT_OWN,
	OPT_STATUS,
	OPT_LIMIT,
	OPT_CURSOR,
	OPT_ALL,
	OPT_HELP,
};

static const struct option options[] = {
    CLI_CONNECTION_OPTIONS,
    {"model", required_argument, NULL, OPT_MODEL},
    {"status", required_argument, NULL, OPT_STATUS},
    {"limit", required_argument, NULL, OPT_LIMIT},
    {"cursor", required_argument, NULL, OPT_CURSOR},
    {"all", no_argument, NULL, OPT_ALL},
    {"help", no_argument, NULL, OPT_HELP},
    {NULL, 0, NULL, 0},
};

static const char common_help[] =
    "  --server URL            server base URL (default $INFERQ_URL, then\n"
    "                          " INFERQ_DEFAULT_URL ")\n"
    "  --key-file PATH         file whose first line is the admin key, used when\n"
    "                          $INFERQ_API_KEY and $TOGETHER_API_KEY are unset\n"
    "                          (default " INFERQ_DEFAULT_KEY_FILE " when readable)\n"
    "  --cacert PATH           PEM CA certificates for an https:// server\n"
    "  --request-timeout S     seconds for one HTTP request (default 30)\n"
    "  --json                  print the server's JSON instead of a table\n"
    "  --help                  print this help\n";

static const char jobs_help[] =
    "usage: inferq jobs [--model M] [--status S] [--limit N] [--cursor C] [--all] [--json]\n"
    "\n"
    "Lists jobs of every model, newest first; needs a key with the admin role.\n"
    "\n"
    "options:\n"
    "  --model M               only jobs of model M\n"
    "  --status S              only jobs in status S: pending, running, done, failed\n"
    "                          or canceled\n"
    "  --limit N               jobs to show, 1 to 1000 (default 50); with --all, jobs\n"
    "                          per request (default 1000)\n"
    "  --cursor C              start at the page that a previous listing named\n"
    "  --all                   follow the pages to the last job\n";

static const char jobs_notes[] =
    "\n"
    "Prints a table: ID, MODEL, STATUS, PRIORITY, RETRIES, CREATED and AGE (time\n"
    "since the submit). When more jobs follow, stderr names the --cursor of the\n"
    "next page. With --json it prints the server's response; with --all --json, one\n"
    "object {\"data\": [...]} with every job.\n";

static const char workers_help[] =
    "usage: inferq workers [--json]\n"
    "\n"
    "Lists the workers this server has seen, the most recently seen first; needs a\n"
    "key with the admin role.\n"
    "\n"
    "options:\n";

static const char workers_notes[] =
    "\n"
    "Prints a table: NAME, VERSION, LAST_SEEN, CURRENT (jobs held now), DONE,\n"
    "FAILED and EXPIRED. A worker is named by its claim's worker field or its\n"
    "Sprocket hostname; claims without a name count as (anonymous).\n";

typedef struct {
	cli_opts_t common;
	const char *status;
	const char *cursor;
	int limit; /* 0: not given */
	int all;
} admin_opts_t;

static void print_help(const char *command)
{
	if (strcmp(command, "jobs") == 0)
		printf("%s%s%s", jobs_help, common_help, jobs_notes);
	else
		printf("%s%s%s", workers_help, common_help, workers_notes);
	putchar('\n');
	cli_print_exit_codes(stdout);
}

static int parse_limit(const char *text, int *out)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(text, &end, 10);
	if (end == text || *end != '\0' || errno == ERANGE || v < 1 || v > MAX_LIMIT)
		return -1;
	*out = (int)v;
	return 0;
}

/* Handles an option that only `inferq jobs` takes. */
static int jobs_option(admin_opts_t *opts, int opt, const char *arg)
{
	const char *command = opts->common.command;

	if (strcmp(command, "jobs") != 0)
		return cli_usage_error(command, command,
		                       "option --%s applies only to `inferq jobs`",
		                       options[opt - CLI_OPT_SERVER].name);
	switch (opt) {
	case OPT_MODEL: opts->common.model = arg; break;
	case OPT_STATUS: opts->status = arg; break;
	case OPT_CURSOR: opts->cursor = arg; break;
	case OPT_ALL: opts->all = 1; break;
	case OPT_LIMIT:
		if (parse_limit(arg, &opts->limit) != 0)
			return cli_usage_error(command, command,
			                       "invalid --limit \"%s\": use a whole number from 1 "
			                       "to %d",
			                       arg, MAX_LIMIT);
		break;
	}
	return 0;
}

/* Parses argv (argv[0] is the command). Returns 0, -1 after --help, or an exit code. */
static int parse(int argc, char **argv, admin_opts_t *opts)
{
	const char *command = opts->common.command;
	int opt, rc;

	opterr = 0;
	optind = 0; /* 0 makes glibc's getopt start afresh at argv[1] */
	while ((opt = getopt_long(argc, argv, "", options, NULL)) != -1) {
		rc = cli_connection_option(&opts->common, command, opt, optarg);
		if (rc >= 0) {
			if (rc > 0)
				return rc;
			continue;
		}
		switch (opt) {
		case OPT_HELP: print_help(command); return -1;
		case OPT_MODEL:
		case OPT_STATUS:
		case OPT_LIMIT:
		case OPT_CURSOR:
		case OPT_ALL:
			if ((rc = jobs_option(opts, opt, optarg)) != 0)
				return rc;
			break;
		default:
			if (optopt >= CLI_OPT_SERVER && optopt <= OPT_HELP)
				return cli_usage_error(command, command,
				                       "option --%s needs a value",
				                       options[optopt - CLI_OPT_SERVER].name);
			return cli_usage_error(command, command, "unknown option \"%s\"",
			                       argv[optind - 1]);
		}
	}
	if (optind < argc)
		return cli_usage_error(command, command, "unexpected argument \"%s\"",
		                       argv[optind]);
	return 0;
}

/* Formats the time since an RFC 3339 UTC timestamp as "42s", "5m", "3h" or "2d". */
static void format_age(const char *stamp, char *out, size_t outlen)
{
	struct tm tm = {0};
	const char *end = stamp ? strptime(stamp, "%Y-%m-%dT%H:%M:%SZ", &tm) : NULL;
	long long age;

	if (!end || *end != '\0') {
		snprintf(out, outlen, "-");
		return;
	}
	age = (long long)(time(NULL) - timegm(&tm));
	if (age < 0)
		age = 0;
	if (age < 120)
		snprintf(out, outlen, "%llds", age);
	else if (age < 2 * 3600)
		snprintf(out, outlen, "%lldm", age / 60);
	else if (age < 2 * 86400)
		snprintf(out, outlen, "%lldh", age / 3600);
	else
		snprintf(out, outlen, "%lldd", age / 86400);
}

static void print_job_header(void)
{
	printf("%-36s  %-24s  %-8s  %8s  %7s  %-20s  %s\n", "ID", "MODEL", "STATUS", "PRIORITY",
	       "RETRIES", "CREATED", "AGE");
}

static void print_job_row(const inferq_status_t *st)
{
	char age[32];

	format_age(st->created_at, age, sizeof(age));
	printf("%-36s  %-24s  %-8s  %8d  %7lld  %-20s  %s\n", st->request_id,
	       st->model ? st->model : "-", st->status, (int)st->priority, (long long)st->retries,
	       st->created_at ? st->created_at : "-", age);
}

/* Prints one page as table rows, or its jobs' raw text into the combined --all --json. */
static void print_page(const admin_opts_t *opts, const inferq_job_page_t *page, size_t *printed)
{
	for (size_t i = 0; i < page->count; i++) {
		if (opts->common.json && opts->all)
			printf("%s%s", *printed > 0 ? "," : "", page->jobs[i]->raw);
		else if (!opts->common.json)
			print_job_row(page->jobs[i]);
		(*printed)++;
	}
	if (opts->common.json && !opts->all)
		printf("%s\n", page->raw);
}

static int run_jobs(const admin_opts_t *opts, inferq_client_t *c)
{
	inferq_job_page_t *page = NULL;
	char *cursor = opts->cursor ? strdup(opts->cursor) : NULL;
	int limit = opts->limit ? opts->limit : (opts->all ? ALL_PAGE_SIZE : 0);
	size_t printed = 0;
	int started = 0;
	int rc = 0;

	for (long pages = 0; pages < MAX_PAGES; pages++) {
		rc = inferq_admin_jobs(c, opts->common.model, opts->status, limit, cursor, &page);
		free(cursor);
		cursor = NULL;
		if (rc != 0)
			break;
		/* The header waits for the first page, so a rejected filter prints no table. */
		if (pages == 0 && opts->common.json && opts->all)
			printf("{\"data\":[");
		else if (pages == 0 && !opts->common.json)
			print_job_header();
		started = 1;
		print_page(opts, page, &printed);
		if (page->next_cursor)
			cursor = strdup(page->next_cursor);
		inferq_job_page_free(page);
		if (!opts->all || !cursor)
			break;
	}
	if (started && opts->common.json && opts->all)
		printf("]}\n");
	fflush(stdout);
	if (rc != 0) {
		free(cursor);
		return cli_report(&opts->common, c, rc);
	}
	if (cursor && !opts->all)
		fprintf(stderr,
		        "inferq jobs: more jobs follow; pass --cursor %s for the next page, "
		        "or --all\n",
		        cursor);
	free(cursor);
	return CLI_EXIT_OK;
}

static int run_workers(const admin_opts_t *opts, inferq_client_t *c)
{
	inferq_worker_t **workers = NULL;
	size_t count = 0;
	char age[32];
	int rc = inferq_admin_workers(c, &workers, &count);

	if (rc != 0)
		return cli_report(&opts->common, c, rc);
	if (opts->common.json) {
		printf("%s\n", inferq_client_last_response(c));
		inferq_worker_list_free(workers, count);
		return CLI_EXIT_OK;
	}
	printf("%-24s  %-16s  %-9s  %7s  %8s  %8s  %8s\n", "NAME", "VERSION", "LAST_SEEN",
	       "CURRENT", "DONE", "FAILED", "EXPIRED");
	for (size_t i = 0; i < count; i++) {
		const inferq_worker_t *w = workers[i];

		format_age(w->last_seen, age, sizeof(age));
		printf("%-24s  %-16s  %-9s  %7zu  %8lld  %8lld  %8lld\n", w->name,
		       w->version ? w->version : "-", age, w->current_count,
		       (long long)w->jobs_done, (long long)w->jobs_failed,
		       (long long)w->jobs_expired);
	}
	inferq_worker_list_free(workers, count);
	return CLI_EXIT_OK;
}

int admin_main(int argc, char **argv)
{
	admin_opts_t opts = {0};
	inferq_client_t *c = NULL;
	int rc;

	opts.common.command = strcmp(argv[0], "jobs") == 0 ? "jobs" : "workers";
	opts.common.timeout = -1;
	rc = parse(argc, argv, &opts);
	if (rc != 0)
		return rc < 0 ? CLI_EXIT_OK : rc;
	if ((rc = cli_client_new(&opts.common, &c)) != 0)
		return rc;
	if (strcmp(opts.common.command, "jobs") == 0)
		rc = run_jobs(&opts, c);
	else
		rc = run_workers(&opts, c);
	inferq_client_free(c);
	return rc;
}
