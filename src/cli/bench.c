/*
 * `inferq bench`: option parsing, the API key, and the report. The load
 * itself is in bench_load.c and the scenarios in bench_scen.c. Every option
 * is checked before any connection opens, and each error names the value
 * and what to pass instead.
 *
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "alloc.h"
#include "bench.h"
#include "cli.h"

enum {
	OPT_SERVER = 1000,
	OPT_WORKER_SERVER,
	OPT_KEY,
	OPT_KEY_FILE,
	OPT_MODEL,
	OPT_PAYLOAD,
	OPT_BODY,
	OPT_WORKERS,
	OPT_IDLE_WORKERS,
	OPT_BACKLOG,
	OPT_PREFILL,
	OPT_REFILL,
	OPT_WAIT,
	OPT_BATCH,
	OPT_JSON,
	OPT_HELP,
};

static const struct option long_options[] = {
    {"connections", required_argument, NULL, 'c'},
    {"pipeline", required_argument, NULL, 'P'},
    {"duration", required_argument, NULL, 'd'},
    {"requests", required_argument, NULL, 'n'},
    {"server", required_argument, NULL, OPT_SERVER},
    {"worker-server", required_argument, NULL, OPT_WORKER_SERVER},
    {"key", required_argument, NULL, OPT_KEY},
    {"key-file", required_argument, NULL, OPT_KEY_FILE},
    {"model", required_argument, NULL, OPT_MODEL},
    {"payload", required_argument, NULL, OPT_PAYLOAD},
    {"body", required_argument, NULL, OPT_BODY},
    {"workers", required_argument, NULL, OPT_WORKERS},
    {"idle-workers", required_argument, NULL, OPT_IDLE_WORKERS},
    {"backlog", required_argument, NULL, OPT_BACKLOG},
    {"prefill", required_argument, NULL, OPT_PREFILL},
    {"refill", no_argument, NULL, OPT_REFILL},
    {"wait", required_argument, NULL, OPT_WAIT},
    {"batch", required_argument, NULL, OPT_BATCH},
    {"json", no_argument, NULL, OPT_JSON},
    {"help", no_argument, NULL, OPT_HELP},
    {NULL, 0, NULL, 0},
};

static const char *const scenarios[] = {
    "submit", "status", "claim-complete", "lifecycle", "handoff", "get", "post"};

static const char help[] =
    "usage: inferq bench SCENARIO [URL] [options]\n"
    "\n"
    "Load-tests an inferq server, or with get and post any HTTP/1.1 server, from many\n"
    "keep-alive connections on one thread, and prints the rate and the latency.\n"
    "\n"
    "scenarios:\n"
    "  submit          POST /v1/queue/submit, one job per request\n"
    "  status          GET /v1/queue/status of one finished job (made first)\n"
    "  claim-complete  submit --prefill jobs, then claim and complete them\n"
    "  lifecycle       submitters and workers at once; counts jobs completed\n"
    "  handoff         one job at a time to long-polling workers; latency from the\n"
    "                  submit's response to the claim's response\n"
    "  get URL         GET URL, as given\n"
    "  post URL        POST --body to URL\n"
    "\n"
    "options:\n"
    "  -c, --connections N  load connections; submitters in lifecycle (default 50)\n"
    "  -P, --pipeline N     requests in flight per connection, 1 to 1024 (default 1);\n"
    "                       submit, status, get, post, lifecycle submitters\n"
    "  -d, --duration S     seconds to run (default 5)\n"
    "  -n, --requests N     stop after N requests, or N jobs or hand-offs, instead\n"
    "  --server URL         inferq base URL (default $INFERQ_URL, then\n"
    "                       " INFERQ_DEFAULT_URL "); give it again for more\n"
    "                       nodes of one postgres store, and the connections are\n"
    "                       spread over them round-robin\n"
    "  --worker-server URL  claim-complete, lifecycle, handoff: where the worker\n"
    "                       connections go, round-robin when given more than once\n"
    "                       (default: the --server URLs); with --server on another\n"
    "                       node, handoff measures the hand-off between nodes\n"
    "  --key KEY            API key (default $INFERQ_API_KEY, $TOGETHER_API_KEY, then\n"
    "                       the first line of " INFERQ_DEFAULT_KEY_FILE ")\n"
    "  --key-file PATH      file whose first line is the API key\n"
    "  --model M            the model of the jobs (default bench-TIME-PID, new for each\n"
    "                       run, so jobs left by earlier runs do not skew this one)\n"
    "  --payload JSON       each job's payload, a JSON object (default {\"input\":\"bench\"})\n"
    "  --body TEXT          post: the body (default a submit's body)\n"
    "  --workers N          lifecycle, handoff: worker connections (default: -c in\n"
    "                       lifecycle, 4 in handoff)\n"
    "  --idle-workers N     lifecycle: extra connections long-polling the model M-idle,\n"
    "                       which gets no jobs (default 0)\n"
    "  --backlog N          lifecycle: pending jobs at most before submitters wait\n"
    "                       (default 1000)\n"
    "  --prefill N          claim-complete: jobs submitted first (default 10000)\n"
    "  --refill             claim-complete: submit a job after each complete, so the\n"
    "                       pending count stays at --prefill; run by -d or -n\n"
    "  --wait S             long-poll wait of worker claims, 0 to 60 (default 1 in\n"
    "                       lifecycle, 30 in handoff)\n"
    "  --batch N            submit, lifecycle: N jobs per POST /v1/queue/submit_batch;\n"
    "                       lifecycle workers claim with max_jobs N and complete what\n"
    "                       they got with one POST /v1/queue/complete_batch; 1 to\n"
    "                       100000 (default 1: the single-job routes). submit then\n"
    "                       counts jobs, and -n is rounded up to whole batches\n"
    "  --json               print one JSON object instead of text\n"
    "  --help               print this help\n"
    "\n"
    "Rates count only what finished before the end of -d or the N-th unit of -n; the\n"
    "requests still in flight are then answered and checked, and a worker completes\n"
    "the job it holds, so a run leaves no job running. Jobs that submit, status and\n"
    "claim-complete leave pending stay in the queue: run benchmarks against a\n"
    "throwaway server. Exits 0, 1 when a request got an unexpected answer or the run\n"
    "broke off, 2 on a usage error, 3 when the server could not be reached.\n";

static int usage(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static int usage(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "inferq bench: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\nrun `inferq bench --help` for the options\n");
	return CLI_EXIT_USAGE;
}

/* Parses an integer from min to max. Returns 0 or -1. */
static int parse_count(const char *text, uint64_t min, uint64_t max, uint64_t *out)
{
	char *end;
	unsigned long long v;

	errno = 0;
	if (*text == '-' || *text == '+')
		return -1;
	v = strtoull(text, &end, 10);
	if (end == text || *end != '\0' || errno == ERANGE || v < min || v > max)
		return -1;
	*out = v;
	return 0;
}

static int count_option(const char *name, const char *text, uint64_t min, uint64_t max,
                        uint64_t *out)
{
	if (parse_count(text, min, max, out) == 0)
		return 0;
	return usage("invalid %s \"%s\": use a whole number from %llu to %llu", name, text,
	             (unsigned long long)min, (unsigned long long)max);
}

/* Reads the first line of path into a new string. Returns it, or NULL with errno set. */
static char *read_first_line(const char *path)
{
	char line[4096];
	FILE *f = fopen(path, "r");

	if (!f)
		return NULL;
	if (!fgets(line, sizeof(line), f)) {
		fclose(f);
		errno = EINVAL;
		return NULL;
	}
	fclose(f);
	line[strcspn(line, "\r\n")] = '\0';
	return strdup(line);
}

static int valid_model(const char *m)
{
	size_t n = strlen(m);

	return n > 0 && n <= 128 &&
	       strspn(m, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:/-") ==
	           n;
}

static int is_scenario(const char *s)
{
	for (size_t i = 0; i < sizeof(scenarios) / sizeof(scenarios[0]); i++)
		if (strcmp(s, scenarios[i]) == 0)
			return 1;
	return 0;
}

/* Returns 1 for get and post, which send to a URL and use no model, else 0. */
static int is_raw(const bench_opts_t *o)
{
	return strcmp(o->scenario, "get") == 0 || strcmp(o->scenario, "post") == 0;
}

/* Checks the options against the scenario and fills the defaults. Returns 0 or an exit code. */
static int check_options(bench_opts_t *o, int given_workers, int given_wait, int given_duration)
{
	const char *s = o->scenario;
	int lifecycle = strcmp(s, "lifecycle") == 0, handoff = strcmp(s, "handoff") == 0;
	int raw = is_raw(o);
	json_t *j;

	if (raw && !o->url)
		return usage("%s needs a URL, as in inferq bench %s http://127.0.0.1:8081/", s, s);
	if (!raw && o->url)
		return usage("unexpected argument \"%s\": only get and post take a URL; name an "
		             "inferq server with --server",
		             o->url);
	if (o->count && given_duration)
		return usage("give -d or -n, not both");
	if ((given_workers || o->idle_workers) && !lifecycle && !handoff)
		return usage("--workers and --idle-workers apply to lifecycle and handoff only");
	if (o->idle_workers && !lifecycle)
		return usage("--idle-workers applies to lifecycle only");
	if (given_wait && !lifecycle && !handoff)
		return usage("--wait applies to lifecycle and handoff only");
	if ((o->prefill != 10000 || o->refill) && strcmp(s, "claim-complete") != 0)
		return usage("--prefill and --refill apply to claim-complete only");
	if (o->refill && !o->count && !given_duration)
		return usage("--refill keeps the queue full, so it needs -d or -n to end");
	if (o->n_worker_servers && !lifecycle && !handoff && strcmp(s, "claim-complete") != 0)
		return usage("--worker-server applies to claim-complete, lifecycle and handoff only");
	if (raw && (o->n_servers || o->n_worker_servers))
		return usage("%s sends to its URL; --server and --worker-server name inferq servers "
		             "and do not apply",
		             s);
	if (o->body && strcmp(s, "post") != 0)
		return usage("--body applies to post only");
	if (o->batch > 1 && !lifecycle && strcmp(s, "submit") != 0)
		return usage("--batch applies to submit and lifecycle only");
	if (o->pipeline > 1 && (handoff || strcmp(s, "claim-complete") == 0))
		return usage("-P applies to submit, status, get, post and lifecycle submitters; "
		             "a worker has one request in flight");
	if (!o->model) {
		static char model[64];

		snprintf(model, sizeof(model), "bench-%lld-%d", (long long)time(NULL), (int)getpid());
		o->model = model;
	}
	if (!valid_model(o->model))
		return usage("invalid --model \"%s\": use 1 to 128 characters of A-Z a-z 0-9 . _ "
		             ": / -",
		             o->model);
	j = json_loads(o->payload, JSON_DECODE_ANY, NULL);
	if (!json_is_object(j)) {
		json_decref(j);
		return usage("invalid --payload \"%.80s\": give a JSON object, as in "
		             "'{\"input\":\"hello\"}'",
		             o->payload);
	}
	json_decref(j);
	if (!given_workers)
		o->workers = handoff ? 4 : o->connections;
	if (handoff)
		o->connections = 1;
	if (!given_wait)
		o->wait = handoff ? 30 : 1;
	if (!o->count && !given_duration)
		o->duration = 5;
	if (strcmp(s, "claim-complete") == 0 && !o->count && !given_duration && !o->refill)
		o->duration = 0; /* until the prefilled jobs are done */
	return 0;
}

/* Reports an unknown option, or a known one given without its value. Returns the exit code. */
static int bad_option(const char *arg)
{
	for (const struct option *o = long_options; o->name; o++)
		if ((arg[0] == '-' && arg[1] == '-' && strcmp(arg + 2, o->name) == 0) ||
		    (arg[0] == '-' && arg[1] == o->val && arg[2] == '\0'))
			return usage("option %s needs a value", arg);
	return usage("unknown option \"%s\"", arg);
}

/* Handles one option. Returns 0 or an exit code. */
static int take_option(bench_opts_t *o, int opt, const char *arg, int *given)
{
	uint64_t v;
	double d;
	int rc = 0;

	switch (opt) {
	case 'c':
		rc = count_option("-c", arg, 1, 200000, &v);
		o->connections = (unsigned)v;
		break;
	case 'P':
		rc = count_option("-P", arg, 1, 1024, &v);
		o->pipeline = (unsigned)v;
		break;
	case 'n': rc = count_option("-n", arg, 1, 1000000000000ull, &o->count); break;
	case 'd':
		if (cli_parse_seconds(arg, 0.01, 86400, &o->duration) != 0)
			return usage(
			    "invalid -d \"%s\": use seconds from 0.01 to 86400, such as 10", arg);
		given[0] = 1;
		break;
	case OPT_SERVER:
		o->servers = xrealloc(o->servers, (o->n_servers + 1) * sizeof(*o->servers));
		o->servers[o->n_servers++] = arg;
		break;
	case OPT_WORKER_SERVER:
		o->worker_servers = xrealloc(o->worker_servers,
		                             (o->n_worker_servers + 1) * sizeof(*o->worker_servers));
		o->worker_servers[o->n_worker_servers++] = arg;
		break;
	case OPT_KEY: o->key = arg; break;
	case OPT_KEY_FILE: {
		char *key = read_first_line(arg);

		if (!key || !*key) {
			free(key);
			return usage("cannot read an API key from --key-file %s: %s", arg,
			             errno ? strerror(errno) : "the first line is empty");
		}
		o->key = key; /* lives until exit */
		break;
	}
	case OPT_MODEL: o->model = arg; break;
	case OPT_PAYLOAD: o->payload = arg; break;
	case OPT_BODY: o->body = arg; break;
	case OPT_WORKERS:
		rc = count_option("--workers", arg, 1, 200000, &v);
		o->workers = (unsigned)v;
		given[1] = 1;
		break;
	case OPT_IDLE_WORKERS:
		rc = count_option("--idle-workers", arg, 0, 200000, &v);
		o->idle_workers = (unsigned)v;
		break;
	case OPT_BACKLOG:
		rc = count_option("--backlog", arg, 1, 1000000000000ull, &o->backlog);
		break;
	case OPT_PREFILL: rc = count_option("--prefill", arg, 0, 1000000000ull, &o->prefill); break;
	case OPT_REFILL: o->refill = 1; break;
	case OPT_WAIT:
		if (cli_parse_seconds(arg, 0, 60, &d) != 0)
			return usage("invalid --wait \"%s\": use seconds from 0 to 60", arg);
		o->wait = d;
		given[2] = 1;
		break;
	case OPT_BATCH:
		rc = count_option("--batch", arg, 1, 100000, &v);
		o->batch = (unsigned)v;
		break;
	case OPT_JSON: o->json = 1; break;
	}
	return rc;
}

/* The key from the environment or the default file, or NULL. */
static const char *default_key(void)
{
	const char *k = getenv("INFERQ_API_KEY");

	if (!k || !*k)
		k = getenv("TOGETHER_API_KEY");
	if (k && *k)
		return k;
	return read_first_line(INFERQ_DEFAULT_KEY_FILE); /* NULL when unreadable */
}

/* Parses n URLs into a new array at *out. Returns 0 or the usage exit code. */
static int parse_urls(const char *const *urls, unsigned n, bench_target_t **out)
{
	char err[512];

	*out = xcalloc(n, sizeof(**out));
	for (unsigned i = 0; i < n; i++)
		if (bench_target_parse(urls[i], &(*out)[i], err, sizeof(err)) != 0)
			return usage("%s", err);
	return 0;
}

/*
 * Resolves the load servers: the URL of get and post, else every --server,
 * else $INFERQ_URL or the built-in URL. The worker servers are the
 * --worker-server URLs, or the load servers when none is given. Returns 0
 * or the usage exit code.
 */
static int parse_targets(const bench_opts_t *o, bench_targets_t *t)
{
	const char *single_url = o->url;
	int rc;

	if (!single_url && !o->n_servers) {
		single_url = getenv("INFERQ_URL");
		if (!single_url || !*single_url)
			single_url = INFERQ_DEFAULT_URL;
	}
	if (single_url)
		rc = parse_urls(&single_url, 1, &t->load);
	else
		rc = parse_urls(o->servers, o->n_servers, &t->load);
	t->n_load = single_url ? 1 : o->n_servers;
	if (rc != 0)
		return rc;
	if (!o->n_worker_servers) {
		t->workers = t->load;
		t->n_workers = t->n_load;
		return 0;
	}
	t->n_workers = o->n_worker_servers;
	return parse_urls(o->worker_servers, o->n_worker_servers, &t->workers);
}

int bench_main(int argc, char **argv)
{
	bench_opts_t o = {.connections = 50,
	                  .pipeline = 1,
	                  .model = NULL,
	                  .payload = "{\"input\":\"bench\"}",
	                  .backlog = 1000,
	                  .prefill = 10000,
	                  .batch = 1};
	bench_targets_t targets = {0};
	int opt, rc, given[3] = {0, 0, 0};

	opterr = 0;
	optind = 0;
	rc = 0;
	while (rc == 0 && (opt = getopt_long(argc, argv, "c:P:d:n:", long_options, NULL)) != -1) {
		if (opt == OPT_HELP) {
			fputs(help, stdout);
			goto out;
		}
		if (opt == '?')
			rc = bad_option(argv[optind - 1]);
		else
			rc = take_option(&o, opt, optarg, given);
	}
	if (rc != 0)
		goto out;
	if (optind >= argc) {
		rc = usage("missing the scenario: submit, status, claim-complete, lifecycle, "
		           "handoff, get URL or post URL");
		goto out;
	}
	o.scenario = argv[optind++];
	if (!is_scenario(o.scenario)) {
		rc = usage("unknown scenario \"%s\": use submit, status, claim-complete, "
		           "lifecycle, handoff, get or post",
		           o.scenario);
		goto out;
	}
	if (optind < argc)
		o.url = argv[optind++];
	if (optind < argc) {
		rc = usage("unexpected argument \"%s\"", argv[optind]);
		goto out;
	}
	if ((rc = check_options(&o, given[1], given[2], given[0])) != 0)
		goto out;
	if (!o.key)
		o.key = default_key();

	if ((rc = parse_targets(&o, &targets)) == 0)
		rc = bench_scenario_main(&o, &targets);
out:
	/* Every exit frees the --server lists, which the options took before any check. */
	if (targets.workers != targets.load)
		free(targets.workers);
	free(targets.load);
	free(o.servers);
	free(o.worker_servers);
	return rc;
}

/* --- Report --------------------------------------------------------------- */

static double ms(uint64_t ns)
{
	return (double)ns / 1e6;
}

static void print_latency_json(const char *name, const bench_hist_t *h)
{
	printf("\"%s\":{\"count\":%llu,\"mean\":%.4f,\"p50\":%.4f,\"p90\":%.4f,\"p99\":%.4f,"
	       "\"p999\":%.4f,\"max\":%.4f}",
	       name, (unsigned long long)h->total, h->total ? h->sum / (double)h->total / 1e6 : 0,
	       ms(bench_hist_quantile(h, 0.5)), ms(bench_hist_quantile(h, 0.9)),
	       ms(bench_hist_quantile(h, 0.99)), ms(bench_hist_quantile(h, 0.999)), ms(h->max));
}

static void print_latency_text(const char *name, const bench_hist_t *h)
{
	printf("  %-15s p50 %.3f ms  p90 %.3f ms  p99 %.3f ms  p99.9 %.3f ms  max %.3f ms\n", name,
	       ms(bench_hist_quantile(h, 0.5)), ms(bench_hist_quantile(h, 0.9)),
	       ms(bench_hist_quantile(h, 0.99)), ms(bench_hist_quantile(h, 0.999)), ms(h->max));
}

static void print_targets_json(const char *name, const bench_target_t *t, unsigned n)
{
	printf("\"%s\":[", name);
	for (unsigned i = 0; i < n; i++)
		printf("%s\"%s:%s\"", i ? "," : "", t[i].host, t[i].port);
	printf("],");
}

static void report_json(const bench_opts_t *o, const bench_run_t *run, const char *unit,
                        double secs)
{
	const bench_targets_t *t = run->targets;
	int first = 1;

	printf("{\"scenario\":\"%s\",\"target\":\"%s:%s\",\"connections\":%u,\"pipeline\":%u,"
	       "\"workers\":%u,\"idle_workers\":%u,\"batch\":%u,\"seconds\":%.4f,\"requests\":%llu,"
	       "\"requests_per_s\":%.1f,\"unit\":\"%s\",\"units\":%llu,\"rate\":%.1f,",
	       o->scenario, run->target->host, run->target->port, o->connections, o->pipeline,
	       o->workers, o->idle_workers, o->batch, secs,
	       (unsigned long long)run->requests_at_stop, (double)run->requests_at_stop / secs,
	       unit, (unsigned long long)run->units_at_stop, (double)run->units_at_stop / secs);
	printf("\"requests_total\":%llu,\"prefilled\":%llu,\"submitted\":%llu,\"claimed\":%llu,"
	       "\"completed\":%llu,\"errors\":%llu,",
	       (unsigned long long)run->requests,
	       (unsigned long long)(strcmp(o->scenario, "claim-complete") == 0 ? o->prefill : 0),
	       (unsigned long long)run->submitted,
	       (unsigned long long)run->claimed, (unsigned long long)run->completed,
	       (unsigned long long)run->errors);
	print_targets_json("targets", t->load, t->n_load);
	print_targets_json("worker_targets", t->workers, t->n_workers);
	/* --model allows no character that JSON escapes. */
	if (is_raw(o))
		printf("\"model\":null,");
	else
		printf("\"model\":\"%s\",", o->model);
	print_latency_json("latency_ms", run->latency);
	if (run->unit_latency->total) {
		putchar(',');
		print_latency_json("handoff_ms", run->unit_latency);
		putchar(',');
		print_latency_json("submit_to_claim_ms", run->e2e_latency);
	}
	printf(",\"statuses\":{");
	for (int s = 0; s < 600; s++)
		if (run->statuses[s]) {
			printf("%s\"%d\":%llu", first ? "" : ",", s,
			       (unsigned long long)run->statuses[s]);
			first = 0;
		}
	printf("}");
	if (run->error[0]) {
		json_t *e = json_string(run->error);
		char *text = e ? json_dumps(e, JSON_ENCODE_ANY) : NULL;

		if (text)
			printf(",\"error\":%s", text);
		free(text);
		json_decref(e);
	}
	printf("}\n");
}

static void print_targets_text(const bench_target_t *t, unsigned n)
{
	for (unsigned i = 0; i < n; i++)
		printf("%s%s:%s", i ? " " : "", t[i].host, t[i].port);
}

void bench_report(const bench_opts_t *o, const bench_run_t *run, const char *unit)
{
	double secs = (double)(run->t_stop - run->t_start) / 1e9;

	if (secs <= 0)
		secs = 1e-9;
	if (o->json) {
		report_json(o, run, unit, secs);
		return;
	}
	printf("inferq bench %s: ", o->scenario);
	print_targets_text(run->targets->load, run->targets->n_load);
	printf(", %u connection%s, pipeline %u", o->connections, o->connections == 1 ? "" : "s",
	       o->pipeline);
	if (!is_raw(o))
		printf(", model %s", o->model);
	if (run->targets->workers != run->targets->load) {
		printf(", workers on ");
		print_targets_text(run->targets->workers, run->targets->n_workers);
	}
	if (strcmp(o->scenario, "lifecycle") == 0 || strcmp(o->scenario, "handoff") == 0)
		printf(", %u workers", o->workers);
	if (o->idle_workers)
		printf(", %u idle workers", o->idle_workers);
	if (o->batch > 1)
		printf(", batch %u", o->batch);
	printf("\n  time       %.2f s\n", secs);
	printf("  requests   %llu  (%.0f requests/s)\n", (unsigned long long)run->requests_at_stop,
	       (double)run->requests_at_stop / secs);
	if (strcmp(unit, "requests") != 0)
		printf("  %-10s %llu  (%.0f %s/s)\n", unit, (unsigned long long)run->units_at_stop,
		       (double)run->units_at_stop / secs, unit);
	if (run->submitted || run->claimed) {
		printf("  totals     submitted %llu", (unsigned long long)run->submitted);
		if (o->prefill && strcmp(o->scenario, "claim-complete") == 0)
			printf(" (after %llu prefilled)", (unsigned long long)o->prefill);
		printf(", claimed %llu, completed %llu (with the drain)\n",
		       (unsigned long long)run->claimed, (unsigned long long)run->completed);
	}
	print_latency_text("latency", run->latency);
	if (run->unit_latency->total)
		print_latency_text("hand-off", run->unit_latency);
	if (run->e2e_latency->total)
		print_latency_text("submit-to-claim", run->e2e_latency);
	printf("  statuses  ");
	for (int s = 0; s < 600; s++)
		if (run->statuses[s])
			printf(" %d: %llu", s, (unsigned long long)run->statuses[s]);
	printf("\n  errors     %llu%s%s\n", (unsigned long long)run->errors,
	       run->error[0] ? ", first: " : "", run->error);
}
