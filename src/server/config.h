/*
 * Settings of `inferq serve`, from its command-line flags. Every limit the
 * server enforces is here, with its default.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef INFERQ_CONFIG_H
#define INFERQ_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "log.h"

#define CONFIG_MAX_PROXIES 16 /* --trusted-proxy flags */

typedef struct {
	char listen[256];           /* "host:port" */
	char data_dir[1024];
	uint32_t claim_timeout;     /* s, default lease of a claim */
	uint32_t max_claim_hold;    /* s, lease of a Sprocket retrieve without claim_timeout;
	                               0 = no lease */
	uint32_t max_retries;       /* lease expiries retried before a job fails */
	int64_t retention_ms;       /* how long finished jobs are kept */
	int64_t idempotency_ttl_ms; /* how long a submit's Idempotency-Key is honoured */
	size_t max_body_bytes;
	size_t max_header_bytes;
	size_t max_info_bytes;
	size_t max_model_length;    /* characters (all ASCII) */
	int max_json_depth;
	int64_t request_timeout_ms; /* first byte of a request to its last */
	int64_t idle_timeout_ms;    /* idle keep-alive connection */
	uint32_t max_connections;
	uint32_t max_pending_changes; /* uncommitted changes before submits get 503 */
	uint32_t max_job_history;     /* events kept per job after its submit */
	uint32_t max_workers_tracked; /* workers the admin view remembers */
	int64_t worker_forget_ms;     /* an idle worker not seen for this long leaves the view */
	uint32_t max_list_scan;       /* rows one page of the admin job listing examines */
	uint32_t max_batch;           /* jobs in one submit_batch, and max_jobs of one claim */
	size_t status_cache_bytes;    /* status bodies of finished jobs kept in memory; 0 = off */
	uint32_t max_requests_per_pass; /* requests parsed per connection per loop pass; 0 = all */
	log_level_t log_level;
	int auth_none;              /* --auth none: every request allowed (loopback only) */
	char trusted_proxies[CONFIG_MAX_PROXIES][64]; /* --trusted-proxy CIDR ranges, checked */
	size_t trusted_proxy_count;
	char public_url[513];       /* --public-url without a trailing '/'; "" = from --listen */
	size_t max_filename_length; /* bytes of a stored file's name, request id included */
	int64_t upload_url_ttl_ms;  /* how long a signed upload URL stays valid */
	uint64_t max_upload_bytes;  /* body of one upload, and of one file response */
	char storage_dir[1024];     /* --storage-dir; "" = DATA_DIR/storage */
	log_format_t log_format;
	int access_log;               /* --access-log: one line per HTTP request */
	char metrics_listen[256];     /* "host:port" of the unauthenticated /metrics, "" = none */
	uint32_t metrics_max_models;  /* models with their own metrics series */
	char tls_cert[1024];        /* PEM certificate chain; "" = no TLS */
	char tls_key[1024];         /* PEM private key; set exactly when tls_cert is */
	char tls_listen[256];       /* "host:port" of a separate HTTPS listener; "" = none */
	int64_t tls_handshake_timeout_ms; /* accept to finished handshake */
	char store[1024];             /* "local", or a PostgreSQL URI (--store, INFERQ_STORE) */
	uint32_t pg_pool;             /* PostgreSQL connections per node that run requests */
	int64_t pg_sweep_interval_ms; /* lease expiry, retention and gauge recount period */
	int64_t pg_poll_interval_ms;  /* claim retry period while long-poll claims wait */
	uint32_t pg_retention_batch;  /* finished jobs one sweep deletes at most */
	int64_t pg_connect_timeout_ms;   /* one connection attempt, whole seconds */
	int64_t pg_statement_timeout_ms; /* one database task of a request; 0 = no limit */
	int64_t pg_status_cache_ttl_ms;  /* maximum age of a status cache entry; 0 = none kept */
} serve_config_t;

/* Fills c with the defaults. */
void config_defaults(serve_config_t *c);

/*
 * Parses the flags of `inferq serve` (argv[0] is "serve"). Returns 0, 1 when
 * --help was printed, or INFERQ_EINVAL after printing an error that names
 * the flag, the value and the accepted range to stderr.
 */
int config_parse(serve_config_t *c, int argc, char **argv);

/* Prints the usage of `inferq serve` to stdout. */
void config_usage(void);

#endif
