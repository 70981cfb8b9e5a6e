/*
 * Output of the client subcommands: a job's status as aligned
 * "name  value" lines, and `wait` with its progress bar. The bar is drawn
 * on stderr only when stderr is a terminal, redrawn in place with a
 * carriage return, and erased before the final status goes to stdout, so
 * piped output contains the result alone.
 *
 * SPDX-License-Identifier: MIT
 */
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "json.h"

#define BAR_WIDTH      24
#define INFO_MAX_DEPTH 512

static void print_field(const char *name, const char *value)
{
	if (value)
		printf("%-17s %s\n", name, value);
}

void cli_print_status(const cli_opts_t *opts, const inferq_status_t *st)
{
	if (opts->json) {
		printf("%s\n", st->raw);
		return;
	}
	print_field("request_id", st->request_id);
	print_field("model", st->model);
	print_field("status", st->status);
	printf("%-17s %d\n", "priority", (int)st->priority);
	printf("%-17s %lld\n", "retries", (long long)st->retries);
	print_field("created_at", st->created_at);
	print_field("claimed_at", st->claimed_at);
	print_field("lease_expires_at", st->lease_expires_at);
	print_field("done_at", st->done_at);
	print_field("error", st->error);
	print_field("inputs", st->inputs);
	print_field("info", st->info);
	print_field("outputs", st->outputs);
}

/* State of the progress bar between polls. */
typedef struct {
	struct timespec start; /* CLOCK_MONOTONIC when the wait began */
	int drawn;             /* 1 once a line is on the terminal */
} progress_t;

/* Reads info.progress as a fraction in [0, 1]; returns 0, or -1 when absent. */
static int read_progress(const char *info, double *out)
{
	json_span_t root, value;
	json_scan_error_t err;
	double v;

	if (!info || json_validate(info, strlen(info), INFO_MAX_DEPTH, &root, &err) != 0 ||
	    root.type != JSON_TYPE_OBJECT || !json_object_find(root, "progress", &value) ||
	    value.type != JSON_TYPE_NUMBER || json_double(value, &v) != 0)
		return -1;
	if (v < 0)
		v = 0;
	if (v > 1)
		v = 1;
	*out = v;
	return 0;
}

static double seconds_since(const struct timespec *start)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (double)(now.tv_sec - start->tv_sec) + (double)(now.tv_nsec - start->tv_nsec) / 1e9;
}

static void draw_progress(const inferq_status_t *st, void *user)
{
	progress_t *bar = user;
	char cells[BAR_WIDTH + 1];
	double fraction = 0;
	int have = read_progress(st->info, &fraction) == 0;
	int filled = (int)(fraction * BAR_WIDTH + 0.5);

	for (int i = 0; i < BAR_WIDTH; i++) {
		if (!have)
			cells[i] = ' ';
		else
			cells[i] = i < filled ? '#' : '-';
	}
	cells[BAR_WIDTH] = '\0';
	fprintf(stderr, "\r[%s] ", cells);
	if (have)
		fprintf(stderr, "%3d%%", (int)(fraction * 100 + 0.5));
	else
		fputs("  --", stderr);
	fprintf(stderr, "  %-8s %6.1f s\033[K", st->status, seconds_since(&bar->start));
	fflush(stderr);
	bar->drawn = 1;
}

int cli_wait_job(const cli_opts_t *opts, inferq_client_t *c, const char *request_id)
{
	progress_t bar = {.drawn = 0};
	inferq_status_t *st = NULL;
	long timeout_ms = opts->timeout < 0 ? -1 : (long)(opts->timeout * 1000 + 0.5);
	int tty = isatty(STDERR_FILENO);
	int rc, exit_code;

	clock_gettime(CLOCK_MONOTONIC, &bar.start);
	rc = inferq_job_wait(c, opts->model, request_id, timeout_ms, tty ? draw_progress : NULL,
	                     &bar, &st);
	if (bar.drawn) {
		fputs("\r\033[K", stderr);
		fflush(stderr);
	}
	if (rc != 0 && rc != INFERQ_ETIMEDOUT)
		return cli_report(opts, c, rc);

	/* Print the last status read, then explain an exit code other than 0. */
	if (st)
		cli_print_status(opts, st);
	if (rc == INFERQ_ETIMEDOUT) {
		fprintf(stderr, "inferq %s: %s\n", opts->command, inferq_client_last_error(c));
		exit_code = CLI_EXIT_TIMEOUT;
	} else if (st->state == INFERQ_STATE_DONE) {
		exit_code = CLI_EXIT_OK;
	} else {
		if (st->state == INFERQ_STATE_FAILED)
			fprintf(stderr, "inferq %s: job %s failed: %s\n", opts->command, request_id,
			        st->error ? st->error : "(no error message)");
		else
			fprintf(stderr, "inferq %s: job %s was canceled\n", opts->command,
			        request_id);
		exit_code = CLI_EXIT_JOB_FAILED;
	}
	inferq_status_free(st);
	return exit_code;
}
