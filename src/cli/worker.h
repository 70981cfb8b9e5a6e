/*
 * `inferq worker -- CMD ARGS...`: turns any program into a queue worker.
 * The worker claims jobs of one model and runs CMD once per job with the
 * payload on stdin; CMD's stdout becomes the outputs and its exit status
 * decides between complete and fail. Heartbeats, info updates from CMD's
 * fd 3, retries of lost reports and a draining shutdown are the worker's.
 *
 * Threads: the main thread handles signals and shutdown, and one claim
 * thread claims with long-poll while a slot is free. Each running job has
 * its own thread with its own client handle, so a slow or unreachable
 * server delays only the calls of that job. Every HTTP call goes through
 * libinferq.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef INFERQ_CLI_WORKER_H
#define INFERQ_CLI_WORKER_H

#include <pthread.h>
#include <stdint.h>
#include <sys/types.h>

#include "buf.h"
#include "cli.h"
#include "log.h"

/*
 * Runs `inferq worker`: argv[0] is "worker", the rest its options, then
 * "--" and the command. Returns the exit code (CLI_EXIT_*): 0 after a
 * shutdown by SIGTERM or SIGINT that delivered every result.
 */
int worker_main(int argc, char **argv);

/* --- Shared by the worker's files --------------------------------------- */

/* Settings from the command line; read-only once the threads start. */
typedef struct {
	cli_opts_t cli;       /* --model, --server, --key-file, --cacert, --request-timeout */
	int concurrency;      /* jobs run at once */
	int claim_timeout_s;  /* lease per claim and heartbeat, in seconds */
	double wait_s;        /* long-poll wait of one claim, in seconds */
	double timeout_s;     /* run time allowed per job in seconds; 0: no limit */
	double grace_s;       /* drain time after the first SIGTERM or SIGINT, in seconds */
	const char *name;     /* --worker, or hostname:pid */
	char **command;       /* CMD and its arguments, NULL-terminated */
	char *command_path;   /* CMD found in PATH, or CMD itself when it contains a "/" */
	int64_t heartbeat_ms; /* claim_timeout_s / 3, in ms */
} worker_config_t;

/* State shared by the threads; fields below the mutex are guarded by it. */
typedef struct {
	const worker_config_t *config;
	struct job_slot *slots; /* config->concurrency slots, defined in worker.c */
	int kill_pipe[2];       /* written once when running jobs must be killed and released */
	int wake_fd; /* eventfd the main thread polls: a job ended or the claim thread stopped */
	pthread_mutex_t lock;
	pthread_cond_t slot_free; /* a job ended, stopping was set, or the claim thread moved on */
	int running;              /* job threads not yet finished */
	int stopping;             /* 1 after the first signal: claim no more */
	int killing;              /* 1 after the second signal or the end of the grace period */
	int claiming;             /* 1 while a claim request is in flight */
	int claim_done;           /* 1 once the claim thread has returned */
	int exit_code;            /* CLI_EXIT_* to end with, set by a fatal claim error */
	int undelivered;          /* results that could not be reported to the server */
} worker_t;

/*
 * Runs one claimed job to its end on the calling thread: starts CMD, keeps
 * the lease, forwards info, then completes, fails or releases the job.
 * Takes ownership of claim. Logs every event; returns 0, or
 * INFERQ_EIO when the result could not be delivered to the server.
 */
int worker_job_run(worker_t *w, inferq_claim_t *claim);

/* CMD once started. */
typedef struct {
	pid_t pid;
	int pidfd;      /* becomes readable when CMD exits; -1 without pidfd_open() */
	int fds[4];     /* the worker's ends of CMD's fds 0 to 3, non-blocking, close-on-exec */
	int exec_errno; /* errno of a failed exec (CMD then exits 127), else 0 */
} worker_child_t;

/*
 * Starts cfg->command for claim: its payload goes to fds[0], and its stdout,
 * stderr and fd 3 come from fds[1..3]. CMD runs in a new process group
 * whose id is its pid. Returns 0, also when exec failed (exec_errno is then
 * set), or INFERQ_EIO with errno set when a pipe or fork failed. The caller
 * closes the fds and reaps the child. Any thread.
 */
int worker_spawn(const worker_config_t *cfg, const inferq_claim_t *claim, worker_child_t *out);

/* Writes one log line "… info  worker: MESSAGE" on stderr; any thread. */
#define worker_log(level, ...)                                                                     \
	do {                                                                                       \
		if (log_enabled(level))                                                            \
			log_write(level, "worker", __VA_ARGS__);                                   \
	} while (0)

/* --- Info updates from fd 3 (worker_info.c) ----------------------------- */

/*
 * Lines read from CMD's fd 3, combined into one pending merge patch. A line
 * that arrives while a patch is pending is merged into it when the combined
 * patch has the same effect as the two applied in turn. Otherwise (an
 * object patch over a key that an earlier line set to a non-object) the
 * line stalls the batch until the pending patch has been sent.
 */
typedef struct {
	buf_t input;            /* bytes read but not yet taken as lines */
	buf_t pending;          /* the combined patch, a JSON object; empty when none */
	int stalled;            /* 1: the next line must wait until pending is sent */
	int discarding;         /* 1: skipping the rest of an over-long line */
	int invalid_lines;      /* lines dropped so far; only the first few are logged */
	const char *request_id; /* for warnings; borrowed */
} info_batch_t;

/* Initializes an empty batch; request_id is borrowed for log lines. */
void info_batch_init(info_batch_t *b, const char *request_id);

/* Frees the batch's buffers. */
void info_batch_destroy(info_batch_t *b);

/*
 * Appends bytes read from fd 3 and takes every complete line that can
 * join the pending patch. Invalid lines are dropped with a warning.
 */
void info_batch_add(info_batch_t *b, const char *data, size_t len);

/* Takes a last line without a newline, once fd 3 has reached its end. */
void info_batch_finish(info_batch_t *b);

/*
 * Moves the pending patch into out (appended) and takes the lines that
 * waited behind it. Returns 1 when a patch was moved, 0 when none was
 * pending.
 */
int info_batch_take(info_batch_t *b, buf_t *out);

/* --- Text helpers (worker_info.c) --------------------------------------- */

/*
 * Appends s[0..len) to out as valid UTF-8 without NUL bytes: each byte of
 * an invalid sequence, and each NUL, becomes U+FFFD.
 */
void worker_append_utf8(buf_t *out, const char *s, size_t len);

#endif
