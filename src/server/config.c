/*
 * Flag parsing for `inferq serve` (see config.h). Durations accept a unit
 * ("500ms", "30s", "5m", "2h", "7d"); sizes accept "K", "M" or "G" binary
 * suffixes. Out-of-range values are errors, never silently clamped.
 *
 * SPDX-License-Identifier: MIT
 */
#include "config.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth.h"
#include "clock.h"
#include "http.h"
#include "inferq_error.h"
#include "storage.h"
#include "suggest.h"

enum {
	OPT_LISTEN = 1000,
	OPT_DATA_DIR,
	OPT_CLAIM_TIMEOUT,
	OPT_MAX_CLAIM_HOLD,
	OPT_MAX_RETRIES,
	OPT_RETENTION,
	OPT_IDEMPOTENCY_TTL,
	OPT_MAX_BODY,
	OPT_MAX_HEADER,
	OPT_MAX_INFO,
	OPT_MAX_MODEL,
	OPT_MAX_DEPTH,
	OPT_REQUEST_TIMEOUT,
	OPT_IDLE_TIMEOUT,
	OPT_MAX_CONNECTIONS,
	OPT_MAX_PENDING_CHANGES,
	OPT_MAX_JOB_HISTORY,
	OPT_MAX_WORKERS_TRACKED,
	OPT_WORKER_FORGET,
	OPT_MAX_LIST_SCAN,
	OPT_MAX_BATCH,
	OPT_STATUS_CACHE_BYTES,
	OPT_MAX_REQUESTS_PER_PASS,
	OPT_LOG_LEVEL,
	OPT_AUTH,
	OPT_TRUSTED_PROXY,
	OPT_PUBLIC_URL,
	OPT_MAX_FILENAME,
	OPT_UPLOAD_URL_TTL,
	OPT_MAX_UPLOAD,
	OPT_STORAGE_DIR,
	OPT_LOG_FORMAT,
	OPT_ACCESS_LOG,
	OPT_METRICS_LISTEN,
	OPT_METRICS_MAX_MODELS,
	OPT_TLS_CERT,
	OPT_TLS_KEY,
	OPT_TLS_LISTEN,
	OPT_TLS_HANDSHAKE_TIMEOUT,
	OPT_STORE,
	OPT_PG_POOL,
	OPT_PG_SWEEP_INTERVAL,
	OPT_PG_POLL_INTERVAL,
	OPT_PG_RETENTION_BATCH,
	OPT_PG_CONNECT_TIMEOUT,
	OPT_PG_STATEMENT_TIMEOUT,
	OPT_PG_STATUS_CACHE_TTL,
	OPT_HELP,
};

static const struct option options[] = {
	{"listen", required_argument, NULL, OPT_LISTEN},
	{"data-dir", required_argument, NULL, OPT_DATA_DIR},
	{"claim-timeout", required_argument, NULL, OPT_CLAIM_TIMEOUT},
	{"max-claim-hold", required_argument, NULL, OPT_MAX_CLAIM_HOLD},
	{"max-retries", required_argument, NULL, OPT_MAX_RETRIES},
	{"retention", required_argument, NULL, OPT_RETENTION},
	{"idempotency-ttl", required_argument, NULL, OPT_IDEMPOTENCY_TTL},
	{"max-body-bytes", required_argument, NULL, OPT_MAX_BODY},
	{"max-header-bytes", required_argument, NULL, OPT_MAX_HEADER},
	{"max-info-bytes", required_argument, NULL, OPT_MAX_INFO},
	{"max-model-length", required_argument, NULL, OPT_MAX_MODEL},
	{"max-json-depth", required_argument, NULL, OPT_MAX_DEPTH},
	{"request-timeout", required_argument, NULL, OPT_REQUEST_TIMEOUT},
	{"idle-timeout", required_argument, NULL, OPT_IDLE_TIMEOUT},
	{"max-connections", required_argument, NULL, OPT_MAX_CONNECTIONS},
	{"max-pending-changes", required_argument, NULL, OPT_MAX_PENDING_CHANGES},
	{"max-job-history", required_argument, NULL, OPT_MAX_JOB_HISTORY},
	{"max-workers-tracked", required_argument, NULL, OPT_MAX_WORKERS_TRACKED},
	{"worker-forget", required_argument, NULL, OPT_WORKER_FORGET},
	{"max-list-scan", required_argument, NULL, OPT_MAX_LIST_SCAN},
	{"max-batch", required_argument, NULL, OPT_MAX_BATCH},
	{"status-cache-bytes", required_argument, NULL, OPT_STATUS_CACHE_BYTES},
	{"max-requests-per-pass", required_argument, NULL, OPT_MAX_REQUESTS_PER_PASS},
	{"log-level", required_argument, NULL, OPT_LOG_LEVEL},
	{"auth", required_argument, NULL, OPT_AUTH},
	{"trusted-proxy", required_argument, NULL, OPT_TRUSTED_PROXY},
	{"public-url", required_argument, NULL, OPT_PUBLIC_URL},
	{"max-filename-length", required_argument, NULL, OPT_MAX_FILENAME},
	{"upload-url-ttl", required_argument, NULL, OPT_UPLOAD_URL_TTL},
	{"max-upload-bytes", required_argument, NULL, OPT_MAX_UPLOAD},
	{"storage-dir", required_argument, NULL, OPT_STORAGE_DIR},
	{"log-format", required_argument, NULL, OPT_LOG_FORMAT},
	{"access-log", no_argument, NULL, OPT_ACCESS_LOG},
	{"metrics-listen", required_argument, NULL, OPT_METRICS_LISTEN},
	{"metrics-max-models", required_argument, NULL, OPT_METRICS_MAX_MODELS},
	{"tls-cert", required_argument, NULL, OPT_TLS_CERT},
	{"tls-key", required_argument, NULL, OPT_TLS_KEY},
	{"tls-listen", required_argument, NULL, OPT_TLS_LISTEN},
	{"tls-handshake-timeout", required_argument, NULL, OPT_TLS_HANDSHAKE_TIMEOUT},
	{"store", required_argument, NULL, OPT_STORE},
	{"pg-pool", required_argument, NULL, OPT_PG_POOL},
	{"pg-sweep-interval", required_argument, NULL, OPT_PG_SWEEP_INTERVAL},
	{"pg-poll-interval", required_argument, NULL, OPT_PG_POLL_INTERVAL},
	{"pg-retention-batch", required_argument, NULL, OPT_PG_RETENTION_BATCH},
	{"pg-connect-timeout", required_argument, NULL, OPT_PG_CONNECT_TIMEOUT},
	{"pg-statement-timeout", required_argument, NULL, OPT_PG_STATEMENT_TIMEOUT},
	{"pg-status-cache-ttl", required_argument, NULL, OPT_PG_STATUS_CACHE_TTL},
	{"help", no_argument, NULL, OPT_HELP},
	{NULL, 0, NULL, 0},
};

void config_defaults(serve_config_t *c)
{
	memset(c, 0, sizeof(*c));
	snprintf(c->listen, sizeof(c->listen), "127.0.0.1:8080");
	snprintf(c->data_dir, sizeof(c->data_dir), "./inferq-data");
	c->claim_timeout = 300;
	c->max_claim_hold = 86400;
	c->max_retries = 3;
	c->retention_ms = 7LL * 86400 * 1000;
	c->idempotency_ttl_ms = 86400LL * 1000;
	c->max_body_bytes = 10u << 20;
	c->max_header_bytes = 16u << 10;
	c->max_info_bytes = 64u << 10;
	c->max_model_length = 128;
	c->max_json_depth = 64;
	c->request_timeout_ms = 30000;
	c->idle_timeout_ms = 60000;
	c->max_connections = 10000;
	c->max_pending_changes = 100000;
	c->max_job_history = 32;
	c->max_workers_tracked = 10000;
	c->worker_forget_ms = 3600LL * 1000;
	c->max_list_scan = 100000;
	c->max_batch = 1000;
	c->status_cache_bytes = 16u << 20;
	c->max_requests_per_pass = 8;
	c->log_level = LOG_INFO;
	c->max_filename_length = STORAGE_NAME_MAX;
	c->upload_url_ttl_ms = 3600LL * 1000;
	c->max_upload_bytes = 512u << 20;
	c->log_format = LOG_FORMAT_TEXT;
	c->metrics_max_models = 1000;
	c->tls_handshake_timeout_ms = 10000;
	snprintf(c->store, sizeof(c->store), "local");
	c->pg_pool = 4;
	c->pg_sweep_interval_ms = 1000;
	c->pg_poll_interval_ms = 250;
	c->pg_retention_batch = 1000;
	c->pg_connect_timeout_ms = 5000;
	c->pg_statement_timeout_ms = 30000;
	c->pg_status_cache_ttl_ms = 60000;
}

void config_usage(void)
{
	printf("usage: inferq serve [flags]\n"
	       "\n"
	       "Runs the inferq queue server.\n"
	       "\n"
	       "  --listen HOST:PORT        address to listen on: an IPv4 address, localhost or\n"
	       "                            [IPv6], and a port (0 picks a free one; default\n"
	       "                            127.0.0.1:8080)\n"
	       "  --data-dir DIR            directory of the SQLite store (default ./inferq-data)\n"
	       "  --claim-timeout DURATION  lease of a claim that sets no claim_timeout, whole\n"
	       "                            seconds from 1s to 24h; a bare number is seconds\n"
	       "                            (default 300)\n"
	       "  --max-claim-hold DURATION  lease of a Sprocket retrieve that sets no\n"
	       "                            claim_timeout, renewed by each running update;\n"
	       "                            whole seconds up to 365d, 0 = no limit (default 24h)\n"
	       "  --max-retries N           lease expiries retried before a job fails,\n"
	       "                            0 to 1000 (default 3)\n"
	       "  --retention DURATION      how long finished jobs stay readable, e.g. 7d, 12h,\n"
	       "                            30s (default 7d)\n"
	       "  --idempotency-ttl DURATION  how long a submit's Idempotency-Key is honoured\n"
	       "                            (default 24h)\n"
	       "  --max-body-bytes BYTES    request body limit; K, M, G suffixes (default 10M)\n"
	       "  --max-header-bytes BYTES  request line and headers limit (default 16K)\n"
	       "  --max-info-bytes BYTES    size limit of a job's info (default 64K)\n"
	       "  --max-model-length N      longest model name in characters (default 128)\n"
	       "  --max-json-depth N        deepest JSON nesting accepted (default 64)\n"
	       "  --request-timeout DURATION  time allowed to receive one request (default 30s)\n"
	       "  --idle-timeout DURATION   idle keep-alive connections close after it (default 60s)\n"
	       "  --max-connections N       open connections at most (default 10000)\n"
	       "  --max-pending-changes N   changes waiting for the disk before submits are\n"
	       "                            answered 503 (default 100000)\n"
	       "  --max-job-history N       events kept per job for GET /v1/admin/jobs/ID,\n"
	       "                            the newest; 0 to 1000 (default 32)\n"
	       "  --max-workers-tracked N   workers GET /v1/admin/workers remembers; the least\n"
	       "                            recently seen goes first (default 10000)\n"
	       "  --worker-forget DURATION  a worker not seen for this long and without a running\n"
	       "                            job leaves the workers view, 1s to 30d (default 1h)\n"
	       "  --max-list-scan N         rows one page of GET /v1/admin/jobs examines at\n"
	       "                            most, 1 to 100000000 (default 100000)\n"
	       "  --max-batch N             jobs one POST /v1/queue/submit_batch may carry, and\n"
	       "                            the largest max_jobs of one claim, 1 to 100000\n"
	       "                            (default 1000)\n"
	       "  --status-cache-bytes BYTES  memory for status responses of finished jobs,\n"
	       "                            kept to answer repeated status reads without a\n"
	       "                            store read; 0 to 1G, 0 = off (default 16M)\n"
	       "  --max-requests-per-pass N  pipelined requests of one connection parsed per\n"
	       "                            loop pass, so that a pipelining client cannot\n"
	       "                            delay the others; 0 to 1024, 0 = no limit\n"
	       "                            (default 8)\n"
	       "  --log-level LEVEL         debug, info, warn or error (default info)\n"
	       "  --auth keys|none          keys: every route but /healthz and /readyz needs an\n"
	       "                            API key (default); none: no checks, allowed only\n"
	       "                            with a loopback --listen address\n"
	       "  --trusted-proxy CIDR      a reverse proxy's address range, e.g. 10.0.0.0/8;\n"
	       "                            for peers inside it the client address is the last\n"
	       "                            X-Forwarded-For hop; repeatable, up to 16\n"
	       "  --public-url URL          base URL of this server in storage URLs, e.g.\n"
	       "                            https://queue.example.com (default the HTTPS\n"
	       "                            listener's https://HOST:PORT, else http://HOST:PORT\n"
	       "                            from --listen; 0.0.0.0 and [::] become the hostname)\n"
	       "  --max-filename-length N   longest stored file name in bytes, request id\n"
	       "                            included, 38 to 255 (default 255)\n"
	       "  --upload-url-ttl DURATION  how long a signed upload URL is valid, 1s to 7d\n"
	       "                            (default 1h)\n"
	       "  --max-upload-bytes BYTES  size limit of one uploaded file, which also bounds\n"
	       "                            one file response; 1 to 16G (default 512M)\n"
	       "  --storage-dir DIR         directory of uploaded output files; nodes over one\n"
	       "                            PostgreSQL must share it, e.g. on NFS (default\n"
	       "                            DATA_DIR/storage)\n"
	       "  --log-format text|json    log lines as text or as one JSON object each\n"
	       "                            (default text)\n"
	       "  --access-log              log one line per HTTP request, whatever\n"
	       "                            --log-level (default off)\n"
	       "  --metrics-listen HOST:PORT  also serve GET /metrics without auth on this\n"
	       "                            address, for scrapers on a private network\n"
	       "                            (default: only on --listen, with an admin key)\n"
	       "  --metrics-max-models N    models with metrics series of their own; more\n"
	       "                            share model=\"__other__\", 1 to 100000 (default 1000)\n"
	       "  --tls-cert FILE           PEM certificate chain (server certificate first);\n"
	       "                            with --tls-key, serves HTTPS (reread on SIGHUP)\n"
	       "  --tls-key FILE            PEM private key of --tls-cert, not encrypted\n"
	       "  --tls-listen HOST:PORT    serve HTTPS here and plain HTTP on --listen; without\n"
	       "                            it, --listen itself serves HTTPS when --tls-cert is set\n"
	       "  --tls-handshake-timeout DURATION  connections that have not finished the TLS\n"
	       "                            handshake close after it (default 10s)\n"
	       "  --store local|postgres://USER@HOST/DB  where the queue lives: local is SQLite\n"
	       "                            in --data-dir; a PostgreSQL URI lets several nodes\n"
	       "                            share one queue, e.g. postgres:///inferq?host=/run/pg\n"
	       "                            for a Unix socket (default local, or INFERQ_STORE)\n"
	       "  --pg-pool N               PostgreSQL connections per node, 1 to 64 (default 4)\n"
	       "  --pg-sweep-interval DURATION  how often a postgres node expires leases, deletes\n"
	       "                            jobs past --retention and recounts the job gauges,\n"
	       "                            100ms to 1m (default 1s)\n"
	       "  --pg-poll-interval DURATION  how often waiting long-poll claims retry on the\n"
	       "                            postgres store when no notification came, 10ms to\n"
	       "                            1m (default 250ms)\n"
	       "  --pg-retention-batch N    finished jobs one sweep deletes at most on the\n"
	       "                            postgres store, 1 to 1000000 (default 1000)\n"
	       "  --pg-connect-timeout DURATION  time allowed for one connection attempt to\n"
	       "                            PostgreSQL, whole seconds from 1s to 10m (default 5s)\n"
	       "  --pg-statement-timeout DURATION  time a request's statements may run in\n"
	       "                            PostgreSQL before they are canceled and the request\n"
	       "                            gets 503; 10ms to 1d, 0 = no limit (default 30s)\n"
	       "  --pg-status-cache-ttl DURATION  longest time a postgres node answers status\n"
	       "                            reads of a finished job from --status-cache-bytes\n"
	       "                            without reading the database, 0 to 1h, 0 = no\n"
	       "                            caching on postgres (default 60s)\n"
	       "  --help                    print this help\n");
}

static int flag_error(const char *flag, const char *value, const char *expected)
{
	fprintf(stderr, "inferq serve: invalid value \"%s\" for --%s: expected %s\n", value, flag,
		expected);
	return INFERQ_EINVAL;
}

static int parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
	char *end;
	unsigned long long v;

	if (*s < '0' || *s > '9')
		return INFERQ_EINVAL;
	v = strtoull(s, &end, 10);
	if (*end != '\0' || v < min || v > max)
		return INFERQ_EINVAL;
	*out = v;
	return 0;
}

static int parse_size(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
	char digits[32];
	size_t len = strlen(s);
	uint64_t scale = 1, v;
	char last = len ? s[len - 1] : '\0';

	if (last == 'K' || last == 'k')
		scale = 1u << 10;
	else if (last == 'M' || last == 'm')
		scale = 1u << 20;
	else if (last == 'G' || last == 'g')
		scale = 1u << 30;
	if (scale > 1)
		len--;
	if (len == 0 || len >= sizeof(digits))
		return INFERQ_EINVAL;
	memcpy(digits, s, len);
	digits[len] = '\0';
	if (parse_u64(digits, 0, UINT64_MAX / scale, &v) != 0)
		return INFERQ_EINVAL;
	v *= scale;
	if (v < min || v > max)
		return INFERQ_EINVAL;
	*out = v;
	return 0;
}

static int parse_duration(const char *s, int64_t min_ms, int64_t max_ms, int64_t *out)
{
	int64_t ms;

	if (clock_parse_duration(s, strlen(s), 1000, &ms) != 0 || ms < min_ms || ms > max_ms)
		return INFERQ_EINVAL;
	*out = ms;
	return 0;
}

static int copy_string(char *dst, size_t size, const char *flag, const char *value)
{
	if (value[0] == '\0' || strlen(value) >= size) {
		fprintf(stderr, "inferq serve: invalid value for --%s: expected 1 to %zu bytes, got %zu\n",
			flag, size - 1, strlen(value));
		return INFERQ_EINVAL;
	}
	snprintf(dst, size, "%s", value);
	return 0;
}

/* Copies a listen address after checking it, so a bad one is a flag error before any bind. */
static int copy_listen(char *dst, size_t size, const char *flag, const char *value)
{
	char err[256];
	size_t len = strlen(value);

	if (len == 0 || len >= size)
		return copy_string(dst, size, flag, value); /* reports the length */
	if (http_listen_addr_check(value, err, sizeof(err)) != 0) {
		fprintf(stderr, "inferq serve: --%s: %s\n", flag, err);
		return INFERQ_EINVAL;
	}
	return copy_string(dst, size, flag, value);
}

/* Applies the flags of output-file storage (storage.h). */
static int apply_storage(serve_config_t *c, int opt, const char *v)
{
	uint64_t n;
	size_t len;

	switch (opt) {
	case OPT_PUBLIC_URL:
		len = strlen(v);
		while (len > 0 && v[len - 1] == '/')
			len--;
		snprintf(c->public_url, sizeof(c->public_url), "%.*s", (int)len, v);
		if (len > STORAGE_URL_MAX || storage_public_url_check(c->public_url) != 0)
			return flag_error("public-url", v,
					  "an http:// or https:// URL with a host, at most 512 "
					  "bytes, without spaces, quotes, '?' or '#', e.g. "
					  "https://queue.example.com");
		return 0;
	case OPT_MAX_FILENAME:
		if (parse_u64(v, ID_TEXT_LEN + 2, STORAGE_NAME_MAX, &n) != 0)
			return flag_error("max-filename-length", v, "a whole number from 38 to 255");
		c->max_filename_length = (size_t)n;
		return 0;
	case OPT_UPLOAD_URL_TTL:
		if (parse_duration(v, 1000, 7LL * 86400 * 1000, &c->upload_url_ttl_ms) != 0 ||
		    c->upload_url_ttl_ms % 1000 != 0)
			return flag_error("upload-url-ttl", v,
					  "whole seconds from 1s to 7d, e.g. 1h or 900s");
		return 0;
	case OPT_MAX_UPLOAD:
		if (parse_size(v, 1, 16ULL << 30, &n) != 0)
			return flag_error("max-upload-bytes", v, "bytes from 1 to 16G, e.g. 512M");
		c->max_upload_bytes = n;
		return 0;
	}
	return INFERQ_EINVAL;
}

/* The --pg-* flags of the postgres store other than --pg-pool. */
static int apply_pg_limit(serve_config_t *c, int opt, const char *v)
{
	uint64_t n;

	switch (opt) {
	case OPT_PG_SWEEP_INTERVAL:
		if (parse_duration(v, 100, 60000, &c->pg_sweep_interval_ms) != 0)
			return flag_error("pg-sweep-interval", v,
					  "a duration from 100ms to 1m, e.g. 1s or 500ms");
		return 0;
	case OPT_PG_POLL_INTERVAL:
		if (parse_duration(v, 10, 60000, &c->pg_poll_interval_ms) != 0)
			return flag_error("pg-poll-interval", v,
					  "a duration from 10ms to 1m, e.g. 250ms or 1s");
		return 0;
	case OPT_PG_RETENTION_BATCH:
		if (parse_u64(v, 1, 1000000, &n) != 0)
			return flag_error("pg-retention-batch", v, "a whole number from 1 to 1000000");
		c->pg_retention_batch = (uint32_t)n;
		return 0;
	case OPT_PG_CONNECT_TIMEOUT:
		/* Whole seconds, because libpq's connect_timeout of the start-up connection is. */
		if (parse_duration(v, 1000, 600000, &c->pg_connect_timeout_ms) != 0 ||
		    c->pg_connect_timeout_ms % 1000 != 0)
			return flag_error("pg-connect-timeout", v,
					  "whole seconds from 1s to 10m, e.g. 5s or 1m");
		return 0;
	case OPT_PG_STATEMENT_TIMEOUT:
		if (parse_duration(v, 0, 86400000, &c->pg_statement_timeout_ms) != 0 ||
		    (c->pg_statement_timeout_ms > 0 && c->pg_statement_timeout_ms < 10))
			return flag_error("pg-statement-timeout", v,
					  "0 (no limit) or a duration from 10ms to 1d, e.g. 30s");
		return 0;
	case OPT_PG_STATUS_CACHE_TTL:
		if (parse_duration(v, 0, 3600000, &c->pg_status_cache_ttl_ms) != 0)
			return flag_error("pg-status-cache-ttl", v,
					  "a duration from 0 (no caching) to 1h, e.g. 60s");
		return 0;
	}
	return INFERQ_EINVAL;
}

/* --store and the --pg-* flags. */
static int apply_store(serve_config_t *c, int opt, const char *v)
{
	uint64_t n;

	if (opt == OPT_PG_POOL) {
		if (parse_u64(v, 1, 64, &n) != 0)
			return flag_error("pg-pool", v, "a whole number from 1 to 64");
		c->pg_pool = (uint32_t)n;
		return 0;
	}
	if (opt != OPT_STORE)
		return apply_pg_limit(c, opt, v);
	if (strcmp(v, "local") != 0 && strncmp(v, "postgres://", 11) != 0 &&
	    strncmp(v, "postgresql://", 13) != 0)
		return flag_error("store", v,
				  "local, or a PostgreSQL URI such as postgres://inferq@db/inferq");
	return copy_string(c->store, sizeof(c->store), "store", v);
}

static int apply(serve_config_t *c, int opt, const char *v)
{
	uint64_t n;

	switch (opt) {
	case OPT_LISTEN:
		return copy_listen(c->listen, sizeof(c->listen), "listen", v);
	case OPT_DATA_DIR:
		return copy_string(c->data_dir, sizeof(c->data_dir), "data-dir", v);
	case OPT_STORAGE_DIR:
		if (v[0] == '\0')
			return flag_error("storage-dir", v, "a directory path");
		return copy_string(c->storage_dir, sizeof(c->storage_dir), "storage-dir", v);
	case OPT_CLAIM_TIMEOUT: {
		int64_t ms;

		/* A bare number is seconds, as the claim's own claim_timeout field. */
		if (parse_duration(v, 1000, 86400LL * 1000, &ms) != 0 || ms % 1000 != 0)
			return flag_error("claim-timeout", v,
					  "whole seconds from 1 to 86400 (24h), e.g. 300 or 5m");
		c->claim_timeout = (uint32_t)(ms / 1000);
		return 0;
	}
	case OPT_MAX_CLAIM_HOLD: {
		int64_t ms;

		if (parse_duration(v, 0, 365LL * 86400 * 1000, &ms) != 0 || ms % 1000 != 0)
			return flag_error("max-claim-hold", v,
					  "whole seconds from 0 (no limit) to 365d, e.g. 24h or 90s");
		c->max_claim_hold = (uint32_t)(ms / 1000);
		return 0;
	}
	case OPT_MAX_RETRIES:
		if (parse_u64(v, 0, 1000, &n) != 0)
			return flag_error("max-retries", v, "a whole number from 0 to 1000");
		c->max_retries = (uint32_t)n;
		return 0;
	case OPT_RETENTION:
		if (parse_duration(v, 1000, 3650LL * 86400 * 1000, &c->retention_ms) != 0)
			return flag_error("retention", v, "a duration from 1s to 3650d, e.g. 7d");
		return 0;
	case OPT_IDEMPOTENCY_TTL:
		if (parse_duration(v, 1000, 30LL * 86400 * 1000, &c->idempotency_ttl_ms) != 0)
			return flag_error("idempotency-ttl", v, "a duration from 1s to 30d, e.g. 24h");
		return 0;
	case OPT_MAX_BODY:
		if (parse_size(v, 64, 1u << 30, &n) != 0)
			return flag_error("max-body-bytes", v, "bytes from 64 to 1G, e.g. 10M");
		c->max_body_bytes = (size_t)n;
		return 0;
	case OPT_MAX_HEADER:
		if (parse_size(v, 256, 1u << 20, &n) != 0)
			return flag_error("max-header-bytes", v, "bytes from 256 to 1M, e.g. 16K");
		c->max_header_bytes = (size_t)n;
		return 0;
	case OPT_MAX_INFO:
		if (parse_size(v, 2, 1u << 30, &n) != 0)
			return flag_error("max-info-bytes", v, "bytes from 2 to 1G, e.g. 64K");
		c->max_info_bytes = (size_t)n;
		return 0;
	case OPT_MAX_MODEL:
		if (parse_u64(v, 1, 1024, &n) != 0)
			return flag_error("max-model-length", v, "a whole number from 1 to 1024");
		c->max_model_length = (size_t)n;
		return 0;
	case OPT_MAX_DEPTH:
		if (parse_u64(v, 2, 1000, &n) != 0)
			return flag_error("max-json-depth", v, "a whole number from 2 to 1000");
		c->max_json_depth = (int)n;
		return 0;
	case OPT_REQUEST_TIMEOUT:
		if (parse_duration(v, 100, 3600000, &c->request_timeout_ms) != 0)
			return flag_error("request-timeout", v, "a duration from 100ms to 1h");
		return 0;
	case OPT_IDLE_TIMEOUT:
		if (parse_duration(v, 100, 86400000, &c->idle_timeout_ms) != 0)
			return flag_error("idle-timeout", v, "a duration from 100ms to 1d");
		return 0;
	case OPT_MAX_CONNECTIONS:
		if (parse_u64(v, 1, 1000000, &n) != 0)
			return flag_error("max-connections", v, "a whole number from 1 to 1000000");
		c->max_connections = (uint32_t)n;
		return 0;
	case OPT_MAX_PENDING_CHANGES:
		if (parse_u64(v, 1, 10000000, &n) != 0)
			return flag_error("max-pending-changes", v, "a whole number from 1 to 10000000");
		c->max_pending_changes = (uint32_t)n;
		return 0;
	case OPT_MAX_JOB_HISTORY:
		if (parse_u64(v, 0, 1000, &n) != 0)
			return flag_error("max-job-history", v, "a whole number from 0 to 1000");
		c->max_job_history = (uint32_t)n;
		return 0;
	case OPT_MAX_WORKERS_TRACKED:
		if (parse_u64(v, 1, 1000000, &n) != 0)
			return flag_error("max-workers-tracked", v, "a whole number from 1 to 1000000");
		c->max_workers_tracked = (uint32_t)n;
		return 0;
	case OPT_WORKER_FORGET:
		if (parse_duration(v, 1000, 30LL * 86400 * 1000, &c->worker_forget_ms) != 0)
			return flag_error("worker-forget", v, "a duration from 1s to 30d, e.g. 1h");
		return 0;
	case OPT_MAX_LIST_SCAN:
		if (parse_u64(v, 1, 100000000, &n) != 0)
			return flag_error("max-list-scan", v, "a whole number from 1 to 100000000");
		c->max_list_scan = (uint32_t)n;
		return 0;
	case OPT_MAX_BATCH:
		if (parse_u64(v, 1, 100000, &n) != 0)
			return flag_error("max-batch", v, "a whole number from 1 to 100000");
		c->max_batch = (uint32_t)n;
		return 0;
	case OPT_STATUS_CACHE_BYTES:
		if (parse_size(v, 0, 1u << 30, &n) != 0)
			return flag_error("status-cache-bytes", v, "bytes from 0 to 1G, e.g. 16M");
		c->status_cache_bytes = (size_t)n;
		return 0;
	case OPT_MAX_REQUESTS_PER_PASS:
		if (parse_u64(v, 0, 1024, &n) != 0)
			return flag_error("max-requests-per-pass", v, "a whole number from 0 to 1024");
		c->max_requests_per_pass = (uint32_t)n;
		return 0;
	case OPT_LOG_LEVEL:
		if (log_parse_level(v, &c->log_level) != 0)
			return flag_error("log-level", v, "debug, info, warn or error");
		return 0;
	case OPT_LOG_FORMAT:
		if (log_parse_format(v, &c->log_format) != 0)
			return flag_error("log-format", v, "text or json");
		return 0;
	case OPT_ACCESS_LOG:
		c->access_log = 1;
		return 0;
	case OPT_METRICS_LISTEN:
		return copy_listen(c->metrics_listen, sizeof(c->metrics_listen), "metrics-listen", v);
	case OPT_METRICS_MAX_MODELS:
		if (parse_u64(v, 1, 100000, &n) != 0)
			return flag_error("metrics-max-models", v, "a whole number from 1 to 100000");
		c->metrics_max_models = (uint32_t)n;
		return 0;
	case OPT_AUTH:
		if (strcmp(v, "keys") != 0 && strcmp(v, "none") != 0)
			return flag_error("auth", v, "keys or none");
		c->auth_none = strcmp(v, "none") == 0;
		return 0;
	case OPT_TRUSTED_PROXY: {
		auth_cidr_t range;

		if (strlen(v) >= sizeof(c->trusted_proxies[0]) || auth_cidr_parse(v, &range) != 0)
			return flag_error("trusted-proxy", v,
					  "an address or range such as 127.0.0.1, 10.0.0.0/8 or "
					  "fd00::/8, with no host bits set beyond the prefix");
		if (c->trusted_proxy_count == CONFIG_MAX_PROXIES)
			return flag_error("trusted-proxy", v, "at most 16 --trusted-proxy flags");
		snprintf(c->trusted_proxies[c->trusted_proxy_count++], sizeof(c->trusted_proxies[0]),
			 "%s", v);
		return 0;
	}
	case OPT_STORE:
	case OPT_PG_POOL:
	case OPT_PG_SWEEP_INTERVAL:
	case OPT_PG_POLL_INTERVAL:
	case OPT_PG_RETENTION_BATCH:
	case OPT_PG_CONNECT_TIMEOUT:
	case OPT_PG_STATEMENT_TIMEOUT:
	case OPT_PG_STATUS_CACHE_TTL:
		return apply_store(c, opt, v);
	case OPT_PUBLIC_URL:
	case OPT_MAX_FILENAME:
	case OPT_UPLOAD_URL_TTL:
	case OPT_MAX_UPLOAD:
		return apply_storage(c, opt, v);
	case OPT_TLS_CERT:
		return copy_string(c->tls_cert, sizeof(c->tls_cert), "tls-cert", v);
	case OPT_TLS_KEY:
		return copy_string(c->tls_key, sizeof(c->tls_key), "tls-key", v);
	case OPT_TLS_LISTEN:
		return copy_listen(c->tls_listen, sizeof(c->tls_listen), "tls-listen", v);
	case OPT_TLS_HANDSHAKE_TIMEOUT:
		if (parse_duration(v, 100, 3600000, &c->tls_handshake_timeout_ms) != 0)
			return flag_error("tls-handshake-timeout", v, "a duration from 100ms to 1h");
		return 0;
	}
	return INFERQ_EINVAL;
}

/* Checks that the TLS flags come as a set: the certificate with its key, and a listener only with both. */
static int check_tls_flags(const serve_config_t *c)
{
	if (c->tls_cert[0] && !c->tls_key[0]) {
		fprintf(stderr, "inferq serve: --tls-cert %s needs --tls-key: pass the certificate's "
				"private key too\n",
			c->tls_cert);
		return INFERQ_EINVAL;
	}
	if (c->tls_key[0] && !c->tls_cert[0]) {
		fprintf(stderr, "inferq serve: --tls-key %s needs --tls-cert: pass the certificate "
				"that goes with the key too\n",
			c->tls_key);
		return INFERQ_EINVAL;
	}
	if (c->tls_listen[0] && !c->tls_cert[0]) {
		fprintf(stderr, "inferq serve: --tls-listen %s needs --tls-cert and --tls-key: pass "
				"the certificate and key that the HTTPS listener serves\n",
			c->tls_listen);
		return INFERQ_EINVAL;
	}
	return 0;
}

/* Returns how many flags start with prefix. */
static size_t prefix_count(const char *prefix)
{
	size_t n = 0, len = strlen(prefix);

	for (const struct option *o = options; o->name; o++)
		n += len > 0 && strncmp(o->name, prefix, len) == 0;
	return n;
}

/* Returns the first flag that starts with prefix, or "" when none does. */
static const char *first_with_prefix(const char *prefix)
{
	size_t len = strlen(prefix);

	for (const struct option *o = options; o->name; o++)
		if (strncmp(o->name, prefix, len) == 0)
			return o->name;
	return "";
}

/*
 * Reports a flag that getopt_long rejected: opt is ':' for a known flag
 * without its value, '?' for an unknown one. arg is the word it read, such
 * as "--port" or "--port=80". An unknown flag gets the nearest known one,
 * and the usual names of an address get --listen.
 */
static void bad_flag(int opt, const char *arg)
{
	static const char *const address_words[] = {"port", "host", "bind", "addr", "address"};
	const char *names[sizeof(options) / sizeof(options[0])];
	char flag[64];
	const char *name, *nearest;
	size_t n = 0, len;

	if (opt == ':') {
		fprintf(stderr, "inferq serve: %s needs a value; run 'inferq serve --help' for "
				"its format\n",
			arg);
		return;
	}
	/* The flag as given, without "=value", and its name without the dashes. */
	len = strcspn(arg, "=");
	snprintf(flag, sizeof(flag), "%.*s", (int)(len < sizeof(flag) ? len : sizeof(flag) - 1),
		 arg);
	name = flag + strspn(flag, "-");
	for (const struct option *o = options; o->name; o++) {
		if (strcmp(name, o->name) == 0) {
			/* Only a flag without a value is rejected by its own name. */
			fprintf(stderr, "inferq serve: %s takes no value; run 'inferq serve --help' "
					"for the flags\n",
				flag);
			return;
		}
		names[n++] = o->name;
	}
	if (prefix_count(name) > 1) {
		fprintf(stderr, "inferq serve: %s is ambiguous: more than one flag starts with it, "
				"such as --%s; run 'inferq serve --help' for the flags\n",
			flag, first_with_prefix(name));
		return;
	}
	nearest = suggest_nearest(name, names, n);
	for (size_t i = 0; !nearest && i < sizeof(address_words) / sizeof(address_words[0]); i++)
		if (strcmp(name, address_words[i]) == 0)
			nearest = "listen";
	if (nearest)
		fprintf(stderr, "inferq serve: unknown flag %s; did you mean --%s?\n", flag, nearest);
	else
		fprintf(stderr, "inferq serve: unknown flag %s\n", flag);
	fprintf(stderr, "run 'inferq serve --help' for the flags\n");
}

int config_parse(serve_config_t *c, int argc, char **argv)
{
	const char *env = getenv("INFERQ_STORE");
	int opt;

	/* The environment sets the default store; --store overrides it. */
	if (env && *env && apply_store(c, OPT_STORE, env) != 0) {
		fprintf(stderr, "inferq serve: the value comes from INFERQ_STORE\n");
		return INFERQ_EINVAL;
	}
	optind = 0; /* 0, not 1: glibc then also drops the state of an earlier parse */
	opterr = 0;
	/* The leading ':' makes a known flag without its value return ':', not '?'. */
	while ((opt = getopt_long(argc, argv, ":", options, NULL)) != -1) {
		if (opt == OPT_HELP) {
			config_usage();
			return 1;
		}
		if (opt == '?' || opt == ':') {
			bad_flag(opt, argv[optind - 1]);
			return INFERQ_EINVAL;
		}
		if (apply(c, opt, optarg) != 0)
			return INFERQ_EINVAL;
	}
	if (optind < argc) {
		fprintf(stderr, "inferq serve: unexpected argument \"%s\"\n"
				"run 'inferq serve --help' for the flags\n",
			argv[optind]);
		return INFERQ_EINVAL;
	}
	if (check_tls_flags(c) != 0)
		return INFERQ_EINVAL;
	if (c->auth_none && !auth_listen_is_loopback(c->listen)) {
		fprintf(stderr, "inferq serve: --auth none is allowed only with a loopback --listen "
				"address (127.0.0.0/8, ::1 or localhost), because it lets anyone "
				"who can connect use every route; got --listen %s. Use --auth keys, "
				"or listen on 127.0.0.1\n",
			c->listen);
		return INFERQ_EINVAL;
	}
	if (c->auth_none && c->tls_listen[0] && !auth_listen_is_loopback(c->tls_listen)) {
		fprintf(stderr, "inferq serve: --auth none is allowed only with loopback addresses, "
				"and --tls-listen %s is not one; use --auth keys, or listen on "
				"127.0.0.1\n",
			c->tls_listen);
		return INFERQ_EINVAL;
	}
	return 0;
}
