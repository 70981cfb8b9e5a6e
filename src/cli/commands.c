/*
 * The client subcommands: each creates a client from the options, makes
 * one library call (two for submit --wait), prints the result and returns
 * the exit code. With --json the output is the server's response body
 * exactly as it arrived.
 *
 * SPDX-License-Identifier: MIT
 */
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static void print_response(inferq_client_t *c)
{
	printf("%s\n", inferq_client_last_response(c));
}

int cli_run_submit(const cli_opts_t *opts)
{
	inferq_client_t *c = NULL;
	char *payload = NULL, *id = NULL;
	int rc, exit_code;

	if ((exit_code = cli_read_payload(opts, &payload)) != 0)
		return exit_code;
	if ((exit_code = cli_client_new(opts, &c)) != 0)
		goto out;
	rc = inferq_job_submit(c, opts->model, payload, opts->info, opts->priority, &id);
	if (rc != 0) {
		exit_code = cli_report(opts, c, rc);
		goto out;
	}
	if (opts->wait)
		exit_code = cli_wait_job(opts, c, id);
	else if (opts->json)
		print_response(c);
	else
		printf("%s\n", id);
out:
	inferq_free(id);
	free(payload);
	inferq_client_free(c);
	return exit_code;
}

int cli_run_status(const cli_opts_t *opts)
{
	inferq_client_t *c = NULL;
	inferq_status_t *st = NULL;
	int rc, exit_code;

	if ((exit_code = cli_client_new(opts, &c)) != 0)
		return exit_code;
	rc = inferq_job_status(c, opts->model, opts->id, &st);
	if (rc == 0)
		cli_print_status(opts, st);
	else
		exit_code = cli_report(opts, c, rc);
	inferq_status_free(st);
	inferq_client_free(c);
	return exit_code;
}

int cli_run_wait(const cli_opts_t *opts)
{
	inferq_client_t *c = NULL;
	int exit_code;

	if ((exit_code = cli_client_new(opts, &c)) != 0)
		return exit_code;
	exit_code = cli_wait_job(opts, c, opts->id);
	inferq_client_free(c);
	return exit_code;
}

int cli_run_cancel(const cli_opts_t *opts)
{
	inferq_client_t *c = NULL;
	int rc, exit_code;

	if ((exit_code = cli_client_new(opts, &c)) != 0)
		return exit_code;
	rc = inferq_job_cancel(c, opts->model, opts->id);
	if (rc != 0)
		exit_code = cli_report(opts, c, rc);
	else if (opts->json)
		print_response(c);
	else
		printf("canceled %s\n", opts->id);
	inferq_client_free(c);
	return exit_code;
}

int cli_run_clear(const cli_opts_t *opts)
{
	inferq_client_t *c = NULL;
	int64_t canceled = 0;
	int rc, exit_code;

	if ((exit_code = cli_client_new(opts, &c)) != 0)
		return exit_code;
	rc = inferq_queue_clear(c, opts->model, &canceled);
	if (rc != 0)
		exit_code = cli_report(opts, c, rc);
	else if (opts->json)
		print_response(c);
	else
		printf("canceled %lld pending job%s of %s\n", (long long)canceled,
		       canceled == 1 ? "" : "s", opts->model);
	inferq_client_free(c);
	return exit_code;
}

int cli_run_metrics(const cli_opts_t *opts)
{
	inferq_client_t *c = NULL;
	int64_t waiting = 0, running = 0, total = 0;
	int rc, exit_code;

	if ((exit_code = cli_client_new(opts, &c)) != 0)
		return exit_code;
	rc = inferq_queue_metrics(c, opts->model, &waiting, &running, &total);
	if (rc != 0)
		exit_code = cli_report(opts, c, rc);
	else if (opts->json)
		print_response(c);
	else
		printf("waiting  %lld\nrunning  %lld\ntotal    %lld\n", (long long)waiting,
		       (long long)running, (long long)total);
	inferq_client_free(c);
	return exit_code;
}
