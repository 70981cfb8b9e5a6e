/*
 * Measures the local store's writer alone, without HTTP: the store ops
 * that the single-job lifecycle makes, in batches of a chosen size. Each
 * batch_size inserts B new jobs, claims the B jobs the previous batch_size inserted
 * and completes the B it claimed, with the history events the server
 * appends, so after two batches every batch_size is one third of each kind.
 * It prints the process CPU time (nearly all of it the writer thread's,
 * since the loop only waits) and the wall time per job. Under
 * `valgrind --tool=callgrind` it gives repeatable instruction counts.
 *
 *   build/bench/store_writer [--jobs N] [--batch_size B] DIR
 *
 * SPDX-License-Identifier: MIT
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <uv.h>

#include "buf.h"
#include "history.h"
#include "ids.h"
#include "store.h"

typedef struct {
	int done;
	int result;
	char error[256];
} wait_t;

static void on_commit(store_batch_t *batch, void *arg)
{
	wait_t *wait = arg;

	wait->done = 1;
	wait->result = batch->result;
	snprintf(wait->error, sizeof(wait->error), "%s", batch->error);
}

static double seconds(clockid_t clock)
{
	struct timespec ts;

	clock_gettime(clock, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double cpu_seconds(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
	       (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static void add(store_batch_t *batch, store_op_kind_t kind, const job_record_t *rec,
                job_state_t prev)
{
	store_op_t *op = store_batch_add(batch, kind);

	job_record_copy(&op->rec, rec);
	op->prev_state = prev;
}

static const char usage[] = "usage: store_writer [--jobs N] [--batch B] DIR, where DIR is a "
                            "new directory for the database\n";

int main(int argc, char **argv)
{
	long jobs = 100000, batch_size = 64;
	const char *dir = NULL;
	uv_loop_t loop;
	store_config_t config = {.loop = &loop};
	store_t *store = NULL;
	store_batch_t batch;
	job_record_t *ring;
	rbuf_t *model = rbuf_from_str("bench/model");
	rbuf_t *payload = rbuf_from_str("{\"input\":\"bench\"}");
	rbuf_t *worker = rbuf_from_str("bench-worker");
	rbuf_t *outputs = rbuf_from_str("{\"output\":\"ok\"}");
	char err[512];
	double cpu0, wall0, cpu, wall;
	long rounds;

	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--jobs") == 0 && i + 1 < argc)
			jobs = atol(argv[++i]);
		else if (strcmp(argv[i], "--batch") == 0 && i + 1 < argc)
			batch_size = atol(argv[++i]);
		else if (argv[i][0] != '-' && !dir)
			dir = argv[i];
		else {
			fprintf(stderr, "store_writer: unknown argument \"%s\"\n%s", argv[i],
			        usage);
			return 2;
		}
	}
	if (!dir || jobs < 1 || batch_size < 1) {
		fprintf(stderr, "store_writer: %s\n%s",
		        !dir ? "missing the data directory"
		             : "--jobs and --batch must be 1 or more",
		        usage);
		return 2;
	}
	uv_loop_init(&loop);
	config.data_dir = dir;
	if (store_open(&config, &store, err, sizeof(err)) != 0) {
		fprintf(stderr, "store_writer: %s\n", err);
		return 1;
	}
	store_batch_init(&batch);
	/* Three generations of jobs are live: just inserted, claimed, being completed. */
	ring = calloc((size_t)(3 * batch_size), sizeof(*ring));
	rounds = jobs / batch_size + 2;
	cpu0 = cpu_seconds();
	wall0 = seconds(CLOCK_MONOTONIC);
	for (long r = 0; r < rounds; r++) {
		job_record_t *fresh = &ring[(r % 3) * batch_size];
		job_record_t *claimed = &ring[((r + 2) % 3) * batch_size]; /* inserted last round */
		job_record_t *finished = &ring[((r + 1) % 3) * batch_size]; /* claimed last round */
		int64_t now = (int64_t)(seconds(CLOCK_REALTIME) * 1000);
		wait_t wait = {0};

		store_batch_reset(&batch);
		for (long i = 0; r >= 2 && i < batch_size; i++) {
			job_record_t *job = &finished[i];

			job->state = JOB_DONE;
			job->done_at = now;
			job->lease_expires_at = 0;
			job->outputs = rbuf_ref(outputs);
			history_append(job, HISTORY_COMPLETED, now, worker, NULL, 100);
			add(&batch, STORE_OP_UPDATE, job, JOB_RUNNING);
			job_record_clear(job);
		}
		for (long i = 0; r >= 1 && i < batch_size; i++) {
			job_record_t *job = &claimed[i];

			job->state = JOB_RUNNING;
			job->claimed_at = now;
			job->claim_timeout = 300;
			job->lease_expires_at = now + 300000;
			id_new_v4(&job->claim_id);
			job->worker = rbuf_ref(worker);
			history_append(job, HISTORY_CLAIMED, now, worker, NULL, 100);
			add(&batch, STORE_OP_UPDATE, job, JOB_PENDING);
		}
		for (long i = 0; i < batch_size; i++) {
			job_record_t *job = &fresh[i];

			memset(job, 0, sizeof(*job));
			id_new_v7(&job->id, now);
			job->seq = (uint64_t)(r * batch_size + i + 1);
			job->model = rbuf_ref(model);
			job->state = JOB_PENDING;
			job->created_at = now;
			job->payload = rbuf_ref(payload);
			add(&batch, STORE_OP_INSERT, job, JOB_PENDING);
		}
		if (store_commit(store, &batch, on_commit, &wait) != 0) {
			fprintf(stderr, "store_writer: a batch_size is already in flight\n");
			return 1;
		}
		while (!wait.done)
			uv_run(&loop, UV_RUN_ONCE);
		if (wait.result != 0) {
			fprintf(stderr, "store_writer: commit failed: %s\n", wait.error);
			return 1;
		}
	}
	cpu = cpu_seconds() - cpu0;
	wall = seconds(CLOCK_MONOTONIC) - wall0;
	printf("jobs %ld  batch %ld (x3 ops)  cpu %.2f us/job  wall %.2f us/job  %.0f jobs/s\n",
	       (rounds - 2) * batch_size, batch_size,
	       cpu * 1e6 / (double)((rounds - 2) * batch_size),
	       wall * 1e6 / (double)((rounds - 2) * batch_size),
	       (double)((rounds - 2) * batch_size) / wall);
	for (long i = 0; i < 3 * batch_size; i++)
		job_record_clear(&ring[i]);
	free(ring);
	store_batch_free(&batch);
	store_close(store);
	uv_run(&loop, UV_RUN_DEFAULT);
	uv_loop_close(&loop);
	rbuf_unref(model);
	rbuf_unref(payload);
	rbuf_unref(worker);
	rbuf_unref(outputs);
	return 0;
}
