/*
 * Tests of the local store against real SQLite files: each test gets a
 * fresh data dir under /tmp and its own uv loop, commits through the writer
 * thread and reads back through the read connection. Waits on the loop are
 * bounded by a watchdog timer.
 *
 * SPDX-License-Identifier: MIT
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <ftw.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "inferq_error.h"
#include "job.h"
#include "store.h"

#define BASE_MS     INT64_C(1770000000000)
#define WATCHDOG_MS 60000

typedef struct {
	char root[64];     /* mkdtemp directory, removed at teardown */
	char data_dir[96]; /* root/data, created by store_open */
	char db_path[128];
	uv_loop_t loop;
	uv_timer_t watchdog;
	int timed_out;
	store_t *store;
	char err[512];
} fixture_t;

typedef struct {
	int calls;
	int result;
	char error[256];
	/* When set, the callback commits this batch next (once). */
	store_t *store;
	store_batch_t *next;
	int next_rc;
} commit_ctx_t;

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	return remove(path);
}

static int setup(void **state)
{
	fixture_t *f = calloc(1, sizeof(*f));

	assert_non_null(f);
	snprintf(f->root, sizeof(f->root), "/tmp/inferq-store-XXXXXX");
	assert_non_null(mkdtemp(f->root));
	snprintf(f->data_dir, sizeof(f->data_dir), "%s/data", f->root);
	snprintf(f->db_path, sizeof(f->db_path), "%s/inferq.db", f->data_dir);
	assert_int_equal(uv_loop_init(&f->loop), 0);
	assert_int_equal(uv_timer_init(&f->loop, &f->watchdog), 0);
	f->watchdog.data = f;
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	fixture_t *f = *state;

	store_close(f->store);
	uv_close((uv_handle_t *)&f->watchdog, NULL);
	uv_run(&f->loop, UV_RUN_DEFAULT);
	assert_int_equal(uv_loop_close(&f->loop), 0);
	nftw(f->root, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
	free(f);
	return 0;
}

static int open_store(fixture_t *f, store_t **out)
{
	store_config_t config = {.loop = &f->loop, .data_dir = f->data_dir};

	f->err[0] = '\0';
	return store_open(&config, out, f->err, sizeof(f->err));
}

static void open_main(fixture_t *f)
{
	int rc = open_store(f, &f->store);

	if (rc != 0)
		fail_msg("store_open failed (%d): %s", rc, f->err);
}

/* Closes the store and runs the loop so its handle finishes closing. */
static void close_main(fixture_t *f)
{
	store_close(f->store);
	f->store = NULL;
	uv_run(&f->loop, UV_RUN_NOWAIT);
}

static void on_watchdog(uv_timer_t *timer)
{
	fixture_t *f = timer->data;

	f->timed_out = 1;
}

static void on_commit(store_batch_t *batch, void *arg)
{
	commit_ctx_t *c = arg;

	c->calls++;
	c->result = batch->result;
	snprintf(c->error, sizeof(c->error), "%s", batch->error);
	if (c->next) {
		store_batch_t *next = c->next;

		c->next = NULL;
		c->next_rc = store_commit(c->store, next, on_commit, c);
	}
}

/* Runs the loop until *calls reaches want, or fails after WATCHDOG_MS. */
static void wait_count(fixture_t *f, const int *calls, int want)
{
	f->timed_out = 0;
	uv_timer_start(&f->watchdog, on_watchdog, WATCHDOG_MS, 0);
	while (*calls < want && !f->timed_out)
		uv_run(&f->loop, UV_RUN_ONCE);
	uv_timer_stop(&f->watchdog);
	assert_false(f->timed_out);
	assert_int_equal(*calls, want);
}

/* Runs the loop until c has seen want callbacks, or fails after WATCHDOG_MS. */
static void wait_calls(fixture_t *f, commit_ctx_t *c, int want)
{
	wait_count(f, &c->calls, want);
}

/* Commits batch, waits for its callback and returns batch->result. */
static int commit_wait(fixture_t *f, store_batch_t *batch)
{
	commit_ctx_t c = {0};

	assert_int_equal(store_commit(f->store, batch, on_commit, &c), 0);
	wait_calls(f, &c, 1);
	assert_int_equal(c.result, batch->result);
	return batch->result;
}

/* Fills r with a job of that seq and state, with the fields that state implies. */
static void make_job(job_record_t *r, uint64_t seq, job_state_t state)
{
	memset(r, 0, sizeof(*r));
	id_new_v7(&r->id, BASE_MS + (int64_t)seq);
	r->seq = seq;
	r->model = rbuf_from_str("org/model-a");
	r->priority = (int32_t)(seq % 3) - 1;
	r->state = state;
	r->created_at = BASE_MS + (int64_t)seq;
	r->payload = rbuf_from_str("{\"prompt\":\"hello\"}");
	if (state != JOB_PENDING && state != JOB_CANCELED) {
		r->claimed_at = r->created_at + 10;
		r->claim_timeout = 300;
		id_new_v4(&r->claim_id);
		r->worker = rbuf_from_str("worker-1");
	}
	if (state == JOB_RUNNING)
		r->lease_expires_at = r->claimed_at + 300000;
	if (job_state_is_terminal(state))
		r->done_at = r->created_at + 1000;
	if (state == JOB_DONE)
		r->outputs = rbuf_from_str("{\"text\":\"ok\"}");
	if (state == JOB_FAILED)
		r->error = rbuf_from_str("model crashed");
}

static void add_op(store_batch_t *b, store_op_kind_t kind, const job_record_t *r)
{
	store_op_t *op = store_batch_add(b, kind);

	job_record_copy(&op->rec, r);
}

/* Adds an update of r, whose stored state is prev. */
static void add_update(store_batch_t *b, const job_record_t *r, job_state_t prev)
{
	store_op_t *op = store_batch_add(b, STORE_OP_UPDATE);

	job_record_copy(&op->rec, r);
	op->prev_state = prev;
}

static void add_purge(store_batch_t *b, int64_t before, uint32_t limit)
{
	store_op_t *op = store_batch_add(b, STORE_OP_PURGE);

	op->purge_before = before;
	op->purge_limit = limit;
}

static void assert_bytes_equal(const rbuf_t *got, const rbuf_t *want, const char *field)
{
	if (!want) {
		if (got)
			fail_msg("%s: expected NULL, got %zu bytes", field, got->len);
		return;
	}
	if (!got)
		fail_msg("%s: expected %zu bytes, got NULL", field, want->len);
	if (got->len != want->len)
		fail_msg("%s: expected %zu bytes, got %zu", field, want->len, got->len);
	if (memcmp(got->data, want->data, want->len) != 0)
		fail_msg("%s: bytes differ", field);
	assert_int_equal(got->data[got->len], '\0');
}

static void assert_record_equal(const job_record_t *got, const job_record_t *want)
{
	assert_true(id_equal(&got->id, &want->id));
	assert_int_equal(got->seq, want->seq);
	assert_int_equal(got->priority, want->priority);
	assert_int_equal(got->state, want->state);
	assert_int_equal(got->retries, want->retries);
	assert_int_equal(got->created_at, want->created_at);
	assert_int_equal(got->claimed_at, want->claimed_at);
	assert_int_equal(got->done_at, want->done_at);
	assert_int_equal(got->lease_expires_at, want->lease_expires_at);
	assert_int_equal(got->claim_timeout, want->claim_timeout);
	assert_true(id_equal(&got->claim_id, &want->claim_id));
	assert_bytes_equal(got->model, want->model, "model");
	assert_bytes_equal(got->worker, want->worker, "worker");
	assert_bytes_equal(got->payload, want->payload, "payload");
	assert_bytes_equal(got->info, want->info, "info");
	assert_bytes_equal(got->outputs, want->outputs, "outputs");
	assert_bytes_equal(got->error, want->error, "error");
	assert_bytes_equal(got->warnings, want->warnings, "warnings");
}

static void assert_stored(fixture_t *f, const job_record_t *want)
{
	job_record_t got;

	assert_int_equal(store_get(f->store, &want->id, &got), 0);
	assert_record_equal(&got, want);
	job_record_clear(&got);
}

static void assert_absent(fixture_t *f, const iq_id_t *id)
{
	job_record_t got;

	assert_int_equal(store_get(f->store, id, &got), INFERQ_ENOTFOUND);
	assert_null(got.payload);
}

static int64_t query_int(const char *db_path, const char *sql)
{
	sqlite3 *db = NULL;
	sqlite3_stmt *st = NULL;
	int64_t v;

	assert_int_equal(sqlite3_open_v2(db_path, &db, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_step(st), SQLITE_ROW);
	v = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	sqlite3_close(db);
	return v;
}

/* Runs sql and returns its extended SQLite result code. */
static int exec_sql_rc(const char *db_path, const char *sql)
{
	sqlite3 *db = NULL;
	int rc;

	assert_int_equal(sqlite3_open_v2(db_path, &db, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
	sqlite3_extended_result_codes(db, 1);
	rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
	sqlite3_close(db);
	return rc;
}

static void exec_sql(const char *db_path, const char *sql)
{
	assert_int_equal(exec_sql_rc(db_path, sql), SQLITE_OK);
}

typedef struct {
	uint64_t seqs[16];
	job_state_t states[16];
	size_t count;
	int stop_after; /* return 7 after this many records; 0 = never */
} load_ctx_t;

static int collect(void *arg, job_record_t *rec)
{
	load_ctx_t *c = arg;

	if (c->count < 16) {
		c->seqs[c->count] = rec->seq;
		c->states[c->count] = rec->state;
	}
	c->count++;
	job_record_clear(rec);
	if (c->stop_after && (int)c->count == c->stop_after)
		return 7;
	return 0;
}

/* Checks what schema version 5 leaves: no triggers, and no IN list in the jobs table's checks. */
static void assert_schema_5(const char *db_path)
{
	assert_int_equal(query_int(db_path, "PRAGMA user_version"), 5);
	/* The writer keeps job_counts; no trigger runs per row. */
	assert_int_equal(query_int(db_path, "SELECT count(*) FROM sqlite_master WHERE "
	                                    "type = 'trigger'"),
	                 0);
	/* SQLite builds a b-tree for each test of an IN list of more than two values. */
	assert_int_equal(query_int(db_path, "SELECT instr(sql, ' IN (') FROM sqlite_master "
	                                    "WHERE name = 'jobs'"),
	                 0);
}

static void open_creates_schema(void **state)
{
	fixture_t *f = *state;
	struct stat st;

	open_main(f);
	assert_int_equal(stat(f->data_dir, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0700);
	assert_int_equal(store_check(f->store, f->err, sizeof(f->err)), 0);
	close_main(f);

	assert_schema_5(f->db_path);
	assert_int_equal(query_int(f->db_path, "SELECT count(*) FROM sqlite_master WHERE "
	                                       "type = 'table' AND name = 'jobs'"),
	                 1);
	assert_int_equal(query_int(f->db_path, "SELECT count(*) FROM sqlite_master WHERE "
	                                       "type = 'index' AND name IN "
	                                       "('jobs_active', 'jobs_done_at')"),
	                 2);
	assert_int_equal(query_int(f->db_path, "SELECT count(*) FROM jobs"), 0);
	/* WAL mode is stored in the file, so a fresh connection reads it back. */
	assert_int_equal(query_int(f->db_path, "SELECT journal_mode = 'wal' FROM "
	                                       "pragma_journal_mode"),
	                 1);
}

static void open_creates_missing_parents(void **state)
{
	fixture_t *f = *state;
	struct stat st;

	snprintf(f->data_dir, sizeof(f->data_dir), "%s/a/b/data", f->root);
	open_main(f);
	assert_int_equal(stat(f->data_dir, &st), 0);
	assert_true(S_ISDIR(st.st_mode));
	close_main(f);
}

static void reopen_keeps_data(void **state)
{
	fixture_t *f = *state;
	store_batch_t b;
	job_record_t job;
	load_ctx_t loaded = {0};
	uint64_t max_seq = 0;

	open_main(f);
	make_job(&job, 1, JOB_PENDING);
	store_batch_init(&b);
	add_op(&b, STORE_OP_INSERT, &job);
	assert_int_equal(commit_wait(f, &b), 0);
	close_main(f);

	open_main(f);
	assert_stored(f, &job);
	assert_int_equal(store_load(f->store, collect, &loaded, &max_seq), 0);
	assert_int_equal(loaded.count, 1);
	assert_int_equal(max_seq, 1);
	assert_int_equal(query_int(f->db_path, "PRAGMA user_version"), 5);

	job_record_clear(&job);
	store_batch_free(&b);
}

static void fields_round_trip(void **state)
{
	fixture_t *f = *state;
	static const char tricky[] = "{\"text\":\"a\\u0000b\",\"big\":1e400,"
	                             "\"n\":123456789012345678901234567890,"
	                             "\"u\":\"h\xc3\xa9llo \xe2\x9c\x93 \xf0\x9f\x98\x80\"}";
	store_batch_t b;
	job_record_t plain, large;
	buf_t blob = BUF_INIT;

	open_main(f);
	make_job(&plain, 1, JOB_PENDING);
	rbuf_unref(plain.payload);
	plain.payload = rbuf_new(tricky, sizeof(tricky) - 1);
	plain.info = rbuf_from_str("{\"source\":\"caf\xc3\xa9\",\"esc\":\"\\u0000\"}");
	plain.warnings = rbuf_from_str("[\"priority clamped\"]");
	plain.priority = INT32_MIN;

	make_job(&large, 2, JOB_PENDING);
	buf_puts(&blob, "{\"blob\":\"");
	while (blob.len < (1u << 20))
		buf_puts(&blob, "0123456789abcdef");
	buf_puts(&blob, "\"}");
	rbuf_unref(large.payload);
	large.payload = rbuf_from_buf(&blob);
	large.priority = INT32_MAX;

	store_batch_init(&b);
	add_op(&b, STORE_OP_INSERT, &plain);
	add_op(&b, STORE_OP_INSERT, &large);
	assert_int_equal(commit_wait(f, &b), 0);
	assert_stored(f, &plain);
	assert_stored(f, &large);

	/* In the file: zero times and absent fields are NULL, bytes are TEXT of exact length. */
	assert_int_equal(query_int(f->db_path,
	                           "SELECT count(*) FROM jobs WHERE seq = 1 AND "
	                           "claimed_at IS NULL AND done_at IS NULL AND "
	                           "lease_expires_at IS NULL AND claim_timeout IS NULL AND "
	                           "claim_id IS NULL AND worker IS NULL AND outputs IS NULL "
	                           "AND error IS NULL AND typeof(payload) = 'text'"),
	                 1);
	assert_int_equal(query_int(f->db_path, "SELECT length(CAST(payload AS BLOB)) FROM jobs "
	                                       "WHERE seq = 1"),
	                 sizeof(tricky) - 1);
	assert_int_equal(query_int(f->db_path, "SELECT length(CAST(payload AS BLOB)) FROM jobs "
	                                       "WHERE seq = 2"),
	                 large.payload->len);

	/* Claim: every mutable field changes, worker is empty but present. */
	plain.state = JOB_RUNNING;
	plain.retries = 2;
	plain.claimed_at = BASE_MS + 500;
	plain.lease_expires_at = BASE_MS + 90500;
	plain.claim_timeout = 90;
	id_new_v4(&plain.claim_id);
	plain.worker = rbuf_from_str("");
	rbuf_unref(plain.info);
	plain.info = rbuf_from_str("{\"progress\":0.5}");
	store_batch_reset(&b);
	add_update(&b, &plain, JOB_PENDING);
	assert_int_equal(commit_wait(f, &b), 0);
	assert_stored(f, &plain);

	/* Finish with outputs that carry the same hard cases as the payload. */
	plain.state = JOB_FAILED;
	plain.done_at = BASE_MS + 900;
	plain.lease_expires_at = 0;
	memset(&plain.claim_id, 0, sizeof(plain.claim_id));
	plain.outputs = rbuf_new(tricky, sizeof(tricky) - 1);
	plain.error = rbuf_from_str("out of memory: \xe2\x9c\x97");
	store_batch_reset(&b);
	add_update(&b, &plain, JOB_RUNNING);
	assert_int_equal(commit_wait(f, &b), 0);
	assert_stored(f, &plain);

	/* The purge deletes the finished job and leaves the pending one. */
	store_batch_reset(&b);
	add_purge(&b, plain.done_at + 1, 100);
	assert_int_equal(commit_wait(f, &b), 0);
	assert_int_equal(b.ops[0].purged, 1);
	assert_absent(f, &plain.id);
	assert_stored(f, &large);

	job_record_clear(&plain);
	job_record_clear(&large);
	store_batch_free(&b);
}

static void purge_returns_every_id(void **state)
{
	fixture_t *f = *state;
	store_batch_t b;
	job_record_t jobs[9];
	int seen[9] = {0};

	open_main(f);
	store_batch_init(&b);
	for (int i = 0; i < 9; i++) {
		make_job(&jobs[i], (uint64_t)i + 1, JOB_DONE);
		jobs[i].done_at = BASE_MS + 100 + i;
		add_op(&b, STORE_OP_INSERT, &jobs[i]);
	}
	assert_int_equal(commit_wait(f, &b), 0);

	store_batch_reset(&b);
	add_purge(&b, INT64_MAX, 100);
	assert_int_equal(commit_wait(f, &b), 0);
	assert_int_equal(b.ops[0].purged, 9);
	for (int k = 0; k < 9; k++) {
		for (int i = 0; i < 9; i++)
			seen[i] += id_equal(&b.ops[0].purged_ids[k], &jobs[i].id);
	}
	for (int i = 0; i < 9; i++) {
		assert_int_equal(seen[i], 1);
		job_record_clear(&jobs[i]);
	}
	store_batch_free(&b);
}

static void purge_honours_cutoff_and_limit(void **state)
{
	fixture_t *f = *state;
	store_batch_t b;
	job_record_t jobs[5];
	uint64_t max_seq = 0;
	load_ctx_t loaded = {0};

	open_main(f);
	store_batch_init(&b);
	make_job(&jobs[0], 1, JOB_DONE);
	make_job(&jobs[1], 2, JOB_FAILED);
	make_job(&jobs[2], 3, JOB_CANCELED);
	make_job(&jobs[3], 4, JOB_PENDING);
	make_job(&jobs[4], 5, JOB_RUNNING);
	jobs[0].done_at = BASE_MS + 100;
	jobs[1].done_at = BASE_MS + 200;
	jobs[2].done_at = BASE_MS + 300;
	for (int i = 0; i < 5; i++)
		add_op(&b, STORE_OP_INSERT, &jobs[i]);
	assert_int_equal(commit_wait(f, &b), 0);

	/* Two jobs are older than the cutoff, but the limit lets one go: the oldest. */
	store_batch_reset(&b);
	add_purge(&b, BASE_MS + 250, 1);
	assert_int_equal(commit_wait(f, &b), 0);
	assert_int_equal(b.ops[0].purged, 1);
	assert_non_null(b.ops[0].purged_ids);
	assert_memory_equal(&b.ops[0].purged_ids[0], &jobs[0].id, sizeof(iq_id_t));
	assert_absent(f, &jobs[0].id);
	assert_stored(f, &jobs[1]);

	store_batch_reset(&b);
	add_purge(&b, BASE_MS + 250, 100);
	assert_int_equal(commit_wait(f, &b), 0);
	assert_int_equal(b.ops[0].purged, 1);
	assert_absent(f, &jobs[1].id);
	assert_stored(f, &jobs[2]);

	/* A cutoff in the far future deletes only terminal jobs. */
	store_batch_reset(&b);
	add_purge(&b, INT64_MAX, 100);
	assert_int_equal(commit_wait(f, &b), 0);
	assert_int_equal(b.ops[0].purged, 1);
	assert_memory_equal(&b.ops[0].purged_ids[0], &jobs[2].id, sizeof(iq_id_t));
	assert_absent(f, &jobs[2].id);

	/* A purge that deletes nothing returns no ids. */
	store_batch_reset(&b);
	add_purge(&b, INT64_MAX, 100);
	assert_int_equal(commit_wait(f, &b), 0);
	assert_int_equal(b.ops[0].purged, 0);
	assert_stored(f, &jobs[3]);
	assert_stored(f, &jobs[4]);

	assert_int_equal(store_load(f->store, collect, &loaded, &max_seq), 0);
	assert_int_equal(loaded.count, 2);
	assert_int_equal(max_seq, 5);

	for (int i = 0; i < 5; i++)
		job_record_clear(&jobs[i]);
	store_batch_free(&b);
}

/* Counts by "model/state", gathered by store_count_finished() or store_count_jobs(). */
typedef struct {
	char keys[8][64];
	uint64_t counts[8];
	size_t n;
} finished_ctx_t;

static int collect_finished(void *ctx, const char *model, job_state_t state, uint64_t count)
{
	finished_ctx_t *fc = ctx;

	assert_true(fc->n < 8);
	snprintf(fc->keys[fc->n], sizeof(fc->keys[0]), "%s/%s", model, job_state_name(state));
	fc->counts[fc->n++] = count;
	return 0;
}

static uint64_t finished_count(const finished_ctx_t *fc, const char *key)
{
	for (size_t i = 0; i < fc->n; i++) {
		if (strcmp(fc->keys[i], key) == 0)
			return fc->counts[i];
	}
	return 0;
}

static uint64_t purged_count(const store_op_t *op, const char *model, job_state_t state)
{
	for (size_t i = 0; i < op->purged_by_count; i++) {
		if (op->purged_by[i].state == state && strcmp(op->purged_by[i].model, model) == 0)
			return op->purged_by[i].count;
	}
	return 0;
}

static void finished_counts_and_purged_by_model(void **state)
{
	fixture_t *f = *state;
	static const job_state_t states[] = {JOB_DONE, JOB_DONE,    JOB_FAILED, JOB_CANCELED,
					     JOB_DONE, JOB_PENDING, JOB_RUNNING};
	static const char *const models[] = {"org/a", "org/a", "org/a", "org/b",
					     "org/b", "org/a", "org/b"};
	job_record_t jobs[7];
	finished_ctx_t before = {0}, after = {0};
	store_batch_t b;

	open_main(f);
	store_batch_init(&b);
	for (int i = 0; i < 7; i++) {
		make_job(&jobs[i], (uint64_t)i + 1, states[i]);
		rbuf_unref(jobs[i].model);
		jobs[i].model = rbuf_from_str(models[i]);
		if (job_state_is_terminal(states[i]))
			jobs[i].done_at = BASE_MS + 100 * (i + 1);
		add_op(&b, STORE_OP_INSERT, &jobs[i]);
	}
	assert_int_equal(commit_wait(f, &b), 0);

	assert_int_equal(store_count_finished(f->store, collect_finished, &before), 0);
	assert_int_equal(before.n, 4);
	assert_int_equal(finished_count(&before, "org/a/done"), 2);
	assert_int_equal(finished_count(&before, "org/a/failed"), 1);
	assert_int_equal(finished_count(&before, "org/b/canceled"), 1);
	assert_int_equal(finished_count(&before, "org/b/done"), 1);

	/* The cutoff takes the first four finished jobs; the purge reports them per model. */
	store_batch_reset(&b);
	add_purge(&b, BASE_MS + 450, 100);
	assert_int_equal(commit_wait(f, &b), 0);
	assert_int_equal(b.ops[0].purged, 4);
	assert_int_equal(b.ops[0].purged_by_count, 3);
	assert_int_equal(purged_count(&b.ops[0], "org/a", JOB_DONE), 2);
	assert_int_equal(purged_count(&b.ops[0], "org/a", JOB_FAILED), 1);
	assert_int_equal(purged_count(&b.ops[0], "org/b", JOB_CANCELED), 1);
	assert_int_equal(purged_count(&b.ops[0], "org/b", JOB_DONE), 0);

	/* Resetting the batch frees the counts. */
	store_batch_reset(&b);
	add_purge(&b, BASE_MS + 450, 100);
	assert_null(b.ops[0].purged_by);
	assert_int_equal(b.ops[0].purged_by_count, 0);
	assert_int_equal(commit_wait(f, &b), 0);
	assert_int_equal(b.ops[0].purged, 0);
	assert_int_equal(b.ops[0].purged_by_count, 0);

	assert_int_equal(store_count_finished(f->store, collect_finished, &after), 0);
	assert_int_equal(after.n, 1);
	assert_int_equal(finished_count(&after, "org/b/done"), 1);

	for (int i = 0; i < 7; i++)
		job_record_clear(&jobs[i]);
	store_batch_free(&b);
}

/* Gathers the counts of store_count_jobs() by "model/state", as collect_finished does. */
static void collect_count(void *ctx, const char *model, size_t model_len, job_state_t state,
			  uint64_t n)
{
	finished_ctx_t *fc = ctx;

	assert_true(fc->n < 8);
	snprintf(fc->keys[fc->n], sizeof(fc->keys[0]), "%.*s/%s", (int)model_len, model,
		 job_state_name(state));
	fc->counts[fc->n++] = n;
}

static uint64_t count_of(store_t *store, const char *key)
{
	finished_ctx_t fc = {0};

	assert_int_equal(store_count_jobs(store, collect_count, &fc), 0);
	return finished_count(&fc, key);
}

static size_t count_pairs(store_t *store)
{
	finished_ctx_t fc = {0};

	assert_int_equal(store_count_jobs(store, collect_count, &fc), 0);
	return fc.n;
}

static void job_counts_follow_batches(void **state)
{
	fixture_t *f = *state;
	job_record_t a[3], other;
	store_batch_t b;

	open_main(f);
	store_batch_init(&b);
	for (int i = 0; i < 3; i++) {
		make_job(&a[i], (uint64_t)i + 1, JOB_PENDING);
		add_op(&b, STORE_OP_INSERT, &a[i]);
	}
	make_job(&other, 4, JOB_PENDING);
	rbuf_unref(other.model);
	other.model = rbuf_from_str("org/model-b");
	add_op(&b, STORE_OP_INSERT, &other);
	/* A job inserted and claimed in the same batch counts once, as running. */
	a[2].state = JOB_RUNNING;
	add_update(&b, &a[2], JOB_PENDING);
	assert_int_equal(commit_wait(f, &b), 0);
	assert_int_equal(count_of(f->store, "org/model-a/pending"), 2);
	assert_int_equal(count_of(f->store, "org/model-a/running"), 1);
	assert_int_equal(count_of(f->store, "org/model-b/pending"), 1);
	assert_int_equal(count_pairs(f->store), 3);

	/* An update that keeps the state (progress) leaves the counts alone. */
	store_batch_reset(&b);
	add_update(&b, &a[2], JOB_RUNNING);
	a[0].state = JOB_DONE;
	a[0].done_at = BASE_MS + 10;
	add_update(&b, &a[0], JOB_PENDING);
	assert_int_equal(commit_wait(f, &b), 0);
	assert_int_equal(count_of(f->store, "org/model-a/pending"), 1);
	assert_int_equal(count_of(f->store, "org/model-a/running"), 1);
	assert_int_equal(count_of(f->store, "org/model-a/done"), 1);

	/* A failed batch changes no count. */
	store_batch_reset(&b);
	a[1].state = JOB_CANCELED;
	add_update(&b, &a[1], JOB_PENDING);
	add_op(&b, STORE_OP_INSERT, &other); /* a duplicate id: the batch fails */
	assert_int_equal(commit_wait(f, &b), INFERQ_EIO);
	assert_int_equal(count_of(f->store, "org/model-a/pending"), 1);
	assert_int_equal(count_of(f->store, "org/model-a/canceled"), 0);

	/* The purge takes its deleted jobs off; a count of 0 is not reported. */
	store_batch_reset(&b);
	add_purge(&b, BASE_MS + 11, 100);
	assert_int_equal(commit_wait(f, &b), 0);
	assert_int_equal(b.ops[0].purged, 1);
	assert_int_equal(count_of(f->store, "org/model-a/done"), 0);
	assert_int_equal(count_pairs(f->store), 3);

	/* The table agrees with a count of the rows. */
	assert_int_equal(query_int(f->db_path,
				   "SELECT count(*) FROM (SELECT model, state, count(*) AS n FROM "
				   "jobs GROUP BY model, state) AS c LEFT JOIN job_counts k USING "
				   "(model, state) WHERE k.n IS NOT c.n"),
			 0);

	for (int i = 0; i < 3; i++)
		job_record_clear(&a[i]);
	job_record_clear(&other);
	store_batch_free(&b);
}

/* A database of schema version 4 keeps the counts its triggers made, and loses the triggers. */
static void migrates_counts_from_version_4(void **state)
{
	fixture_t *f = *state;
	job_record_t job;
	store_batch_t b;

	open_main(f);
	make_job(&job, 1, JOB_PENDING);
	store_batch_init(&b);
	add_op(&b, STORE_OP_INSERT, &job);
	assert_int_equal(commit_wait(f, &b), 0);
	close_main(f);
	exec_sql(f->db_path,
		 "CREATE TRIGGER jobs_count_insert AFTER INSERT ON jobs BEGIN SELECT 1; END;"
		 "CREATE TRIGGER jobs_count_update AFTER UPDATE OF state ON jobs BEGIN SELECT 1; END;"
		 "CREATE TRIGGER jobs_count_delete AFTER DELETE ON jobs BEGIN SELECT 1; END;"
		 "PRAGMA writable_schema = ON;"
		 "UPDATE sqlite_schema SET sql = replace(sql, 'CHECK (state = ''pending'' OR "
		 "state = ''running'' OR state = ''done'' OR state = ''failed'' OR state = "
		 "''canceled'')', 'CHECK (state IN (''pending'', ''running'', ''done'', ''failed'', "
		 "''canceled''))') WHERE name = 'jobs';"
		 "PRAGMA writable_schema = OFF;"
		 "PRAGMA user_version = 4");
	assert_int_equal(query_int(f->db_path, "SELECT instr(sql, 'state IN (') > 0 FROM "
					       "sqlite_master WHERE name = 'jobs'"),
			 1);

	open_main(f);
	assert_int_equal(count_of(f->store, "org/model-a/pending"), 1);
	job.state = JOB_RUNNING;
	store_batch_reset(&b);
	add_update(&b, &job, JOB_PENDING);
	assert_int_equal(commit_wait(f, &b), 0);
	assert_int_equal(count_of(f->store, "org/model-a/pending"), 0);
	assert_int_equal(count_of(f->store, "org/model-a/running"), 1);
	close_main(f);
	assert_schema_5(f->db_path);
	/* The state check is a chain of comparisons now, and still rejects an unknown state. */
	assert_int_equal(query_int(f->db_path, "SELECT instr(sql, 'OR state = ') > 0 FROM "
					       "sqlite_master WHERE name = 'jobs'"),
			 1);
	assert_int_equal(query_int(f->db_path, "SELECT count(*) FROM pragma_integrity_check "
					       "WHERE integrity_check <> 'ok'"),
			 0);
	assert_int_equal(exec_sql_rc(f->db_path, "UPDATE jobs SET state = 'lost'"),
			 SQLITE_CONSTRAINT_CHECK);

	job_record_clear(&job);
	store_batch_free(&b);
}

static void purge_keeps_max_seq(void **state)
{
	fixture_t *f = *state;
	store_batch_t b;
	job_record_t job;
	uint64_t max_seq = 0;
	load_ctx_t loaded = {0};

	open_main(f);
	store_batch_init(&b);
	make_job(&job, 41, JOB_DONE);
	add_op(&b, STORE_OP_INSERT, &job);
	assert_int_equal(commit_wait(f, &b), 0);
	store_batch_reset(&b);
	add_purge(&b, INT64_MAX, 10);
	assert_int_equal(commit_wait(f, &b), 0);
	assert_int_equal(b.ops[0].purged, 1);
	assert_int_equal(query_int(f->db_path, "SELECT count(*) FROM jobs"), 0);
	close_main(f);

	/* The table is empty, yet seq must continue after the purged job. */
	open_main(f);
	assert_int_equal(store_load(f->store, collect, &loaded, &max_seq), 0);
	assert_int_equal(loaded.count, 0);
	assert_int_equal(max_seq, 41);

	job_record_clear(&job);
	store_batch_free(&b);
}

static void update_missing_fails_batch(void **state)
{
	fixture_t *f = *state;
	store_batch_t b;
	job_record_t kept, fresh, missing, kept_done;
	char id[ID_TEXT_LEN + 1];

	open_main(f);
	store_batch_init(&b);
	make_job(&kept, 1, JOB_PENDING);
	add_op(&b, STORE_OP_INSERT, &kept);
	assert_int_equal(commit_wait(f, &b), 0);

	/* One batch changes kept, inserts fresh, then updates a job never stored. */
	make_job(&kept_done, 1, JOB_CANCELED);
	kept_done.id = kept.id;
	make_job(&fresh, 2, JOB_PENDING);
	make_job(&missing, 3, JOB_RUNNING);
	store_batch_reset(&b);
	add_update(&b, &kept_done, JOB_PENDING);
	add_op(&b, STORE_OP_INSERT, &fresh);
	add_update(&b, &missing, JOB_PENDING);
	assert_int_equal(commit_wait(f, &b), INFERQ_EIO);
	id_format(&missing.id, id);
	assert_non_null(strstr(b.error, id));
	assert_non_null(strstr(b.error, f->db_path));
	assert_non_null(strstr(b.error, "no such job"));

	assert_stored(f, &kept);
	assert_absent(f, &fresh.id);
	assert_int_equal(store_check(f->store, f->err, sizeof(f->err)), INFERQ_EIO);
	assert_non_null(strstr(f->err, id));

	/* The next good commit clears the failure that store_check reports. */
	store_batch_reset(&b);
	add_op(&b, STORE_OP_INSERT, &fresh);
	assert_int_equal(commit_wait(f, &b), 0);
	assert_stored(f, &fresh);
	assert_int_equal(store_check(f->store, f->err, sizeof(f->err)), 0);

	job_record_clear(&kept);
	job_record_clear(&kept_done);
	job_record_clear(&fresh);
	job_record_clear(&missing);
	store_batch_free(&b);
}

static void duplicate_insert_fails_batch(void **state)
{
	fixture_t *f = *state;
	store_batch_t b;
	job_record_t first, second;

	open_main(f);
	store_batch_init(&b);
	make_job(&first, 1, JOB_PENDING);
	make_job(&second, 2, JOB_PENDING);
	second.id = first.id;
	add_op(&b, STORE_OP_INSERT, &first);
	add_op(&b, STORE_OP_INSERT, &second);
	assert_int_equal(commit_wait(f, &b), INFERQ_EIO);
	assert_non_null(strstr(b.error, "UNIQUE"));
	assert_absent(f, &first.id);
	assert_int_equal(query_int(f->db_path, "SELECT count(*) FROM jobs"), 0);

	job_record_clear(&first);
	job_record_clear(&second);
	store_batch_free(&b);
}

static void load_active_in_seq_order(void **state)
{
	fixture_t *f = *state;
	static const struct {
		uint64_t seq;
		job_state_t state;
	} rows[] = {
	    {5, JOB_PENDING}, {2, JOB_RUNNING},  {9, JOB_DONE},    {7, JOB_PENDING},
	    {3, JOB_FAILED},  {8, JOB_CANCELED}, {4, JOB_PENDING},
	};
	store_batch_t b;
	job_record_t job;
	load_ctx_t loaded = {0};
	load_ctx_t stopped = {.stop_after = 2};
	uint64_t max_seq = 1234;

	open_main(f);
	assert_int_equal(store_load(f->store, collect, &loaded, &max_seq), 0);
	assert_int_equal(loaded.count, 0);
	assert_int_equal(max_seq, 0);

	store_batch_init(&b);
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		make_job(&job, rows[i].seq, rows[i].state);
		add_op(&b, STORE_OP_INSERT, &job);
		job_record_clear(&job);
	}
	assert_int_equal(commit_wait(f, &b), 0);
	close_main(f);

	open_main(f);
	assert_int_equal(store_load(f->store, collect, &loaded, &max_seq), 0);
	assert_int_equal(loaded.count, 4);
	assert_int_equal(loaded.seqs[0], 2);
	assert_int_equal(loaded.states[0], JOB_RUNNING);
	assert_int_equal(loaded.seqs[1], 4);
	assert_int_equal(loaded.seqs[2], 5);
	assert_int_equal(loaded.seqs[3], 7);
	assert_int_equal(loaded.states[3], JOB_PENDING);
	/* The largest seq belongs to a finished job, and still counts. */
	assert_int_equal(max_seq, 9);

	assert_int_equal(store_load(f->store, collect, &stopped, &max_seq), 7);
	assert_int_equal(stopped.count, 2);

	store_batch_free(&b);
}

static const char hash_a[] = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
static const char hash_b[] = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

static void idempotency_key_found_since(void **state)
{
	fixture_t *f = *state;
	store_batch_t b;
	job_record_t first, second, other_model;
	iq_id_t id;
	char hash[65];

	open_main(f);
	make_job(&first, 1, JOB_DONE);
	first.idempotency_key = rbuf_from_str("retry-key-1");
	first.body_hash = rbuf_from_str(hash_a);
	make_job(&second, 2, JOB_PENDING);
	second.idempotency_key = rbuf_from_str("retry-key-1");
	second.body_hash = rbuf_from_str(hash_b);
	make_job(&other_model, 3, JOB_PENDING);
	rbuf_unref(other_model.model);
	other_model.model = rbuf_from_str("org/model-b");
	other_model.idempotency_key = rbuf_from_str("retry-key-2");
	other_model.body_hash = rbuf_from_str(hash_a);
	store_batch_init(&b);
	add_op(&b, STORE_OP_INSERT, &first);
	add_op(&b, STORE_OP_INSERT, &second);
	add_op(&b, STORE_OP_INSERT, &other_model);
	assert_int_equal(commit_wait(f, &b), 0);

	/* The newest job with the key wins. */
	assert_int_equal(store_find_idempotency(f->store, "org/model-a", 11, "retry-key-1", 11, 0,
						&id, hash),
			 0);
	assert_true(id_equal(&id, &second.id));
	assert_string_equal(hash, hash_b);

	/* Keys are per model. */
	assert_int_equal(store_find_idempotency(f->store, "org/model-a", 11, "retry-key-2", 11, 0,
						&id, hash),
			 INFERQ_ENOTFOUND);
	assert_int_equal(store_find_idempotency(f->store, "org/model-b", 11, "retry-key-2", 11, 0,
						&id, hash),
			 0);
	assert_true(id_equal(&id, &other_model.id));

	/* A key older than since_ms no longer counts. */
	assert_int_equal(store_find_idempotency(f->store, "org/model-a", 11, "retry-key-1", 11,
						second.created_at + 1, &id, hash),
			 INFERQ_ENOTFOUND);

	job_record_clear(&first);
	job_record_clear(&second);
	job_record_clear(&other_model);
	store_batch_free(&b);
}

static void migrates_version_1(void **state)
{
	fixture_t *f = *state;

	/* Turn a new database back into schema version 1. */
	open_main(f);
	close_main(f);
	exec_sql(f->db_path, "DROP TABLE job_counts;"
			     "DROP INDEX jobs_model_seq;"
			     "ALTER TABLE jobs DROP COLUMN history;"
			     "DROP TABLE api_keys;"
			     "DROP INDEX jobs_idempotency;"
			     "ALTER TABLE jobs DROP COLUMN body_hash;"
			     "ALTER TABLE jobs DROP COLUMN idempotency_key;"
			     "PRAGMA user_version = 1");
	assert_int_equal(query_int(f->db_path, "SELECT count(*) FROM pragma_table_info('jobs') "
					       "WHERE name = 'idempotency_key'"),
			 0);

	open_main(f);
	close_main(f);
	assert_int_equal(query_int(f->db_path, "PRAGMA user_version"), 5);
	assert_int_equal(query_int(f->db_path, "SELECT count(*) FROM pragma_table_info('jobs') "
					       "WHERE name IN ('idempotency_key', 'body_hash')"),
			 2);
	assert_int_equal(query_int(f->db_path, "SELECT count(*) FROM api_keys"), 0);
	assert_int_equal(query_int(f->db_path, "SELECT count(*) FROM pragma_table_info('jobs') "
					       "WHERE name = 'history'"),
			 1);
	assert_int_equal(query_int(f->db_path, "SELECT count(*) FROM job_counts"), 0);
}

static void second_open_rejected(void **state)
{
	fixture_t *f = *state;
	store_t *other = NULL;
	char lock_path[160];

	open_main(f);
	assert_int_equal(open_store(f, &other), INFERQ_EIO);
	assert_null(other);
	snprintf(lock_path, sizeof(lock_path), "%s/inferq.lock", f->data_dir);
	assert_non_null(strstr(f->err, lock_path));
	assert_non_null(strstr(f->err, "another inferq process"));
	assert_non_null(strstr(f->err, "pid"));

	/* Once the first store is closed, the data dir is free again. */
	close_main(f);
	assert_int_equal(open_store(f, &other), 0);
	store_close(other);
}

static void newer_version_rejected(void **state)
{
	fixture_t *f = *state;
	store_t *other = NULL;

	open_main(f);
	close_main(f);
	exec_sql(f->db_path, "PRAGMA user_version = 6");

	assert_int_equal(open_store(f, &other), INFERQ_EIO);
	assert_null(other);
	assert_non_null(strstr(f->err, "schema version 6"));
	assert_non_null(strstr(f->err, f->db_path));
	assert_int_equal(query_int(f->db_path, "PRAGMA user_version"), 6);

	/* The lock of the failed open was released. */
	exec_sql(f->db_path, "PRAGMA user_version = 5");
	open_main(f);
}

static void garbage_database_rejected(void **state)
{
	fixture_t *f = *state;
	store_t *other = NULL;
	FILE *fp;

	assert_int_equal(mkdir(f->data_dir, 0700), 0);
	fp = fopen(f->db_path, "w");
	assert_non_null(fp);
	for (int i = 0; i < 512; i++)
		fputs("not a database ", fp);
	fclose(fp);

	assert_int_equal(open_store(f, &other), INFERQ_EIO);
	assert_null(other);
	assert_non_null(strstr(f->err, f->db_path));
	assert_non_null(strstr(f->err, "not a database"));
}

static void data_dir_file_rejected(void **state)
{
	fixture_t *f = *state;
	store_t *other = NULL;
	FILE *fp = fopen(f->data_dir, "w");

	assert_non_null(fp);
	fclose(fp);
	assert_int_equal(open_store(f, &other), INFERQ_EINVAL);
	assert_null(other);
	assert_non_null(strstr(f->err, "not a directory"));
	assert_non_null(strstr(f->err, f->data_dir));
}

static void empty_data_dir_rejected(void **state)
{
	fixture_t *f = *state;
	store_config_t config = {.loop = &f->loop, .data_dir = ""};
	store_t *other = NULL;

	assert_int_equal(store_open(&config, &other, f->err, sizeof(f->err)), INFERQ_EINVAL);
	assert_null(other);
	assert_non_null(strstr(f->err, "data dir"));
}

/* Exits 0 when store_open rejects the read-only data dir with a clear message. */
static int open_read_only_dir(fixture_t *f)
{
	store_t *other = NULL;
	int rc = open_store(f, &other);

	if (rc != INFERQ_EIO || other != NULL)
		return 1;
	if (!strstr(f->err, "not writable") || !strstr(f->err, f->data_dir))
		return 2;
	return 0;
}

static void read_only_data_dir_rejected(void **state)
{
	fixture_t *f = *state;
	pid_t pid;
	int status = 0;

	assert_int_equal(mkdir(f->data_dir, 0700), 0);
	if (geteuid() != 0) {
		assert_int_equal(chmod(f->data_dir, 0500), 0);
		assert_int_equal(open_read_only_dir(f), 0);
		assert_int_equal(chmod(f->data_dir, 0700), 0);
		return;
	}

	/* root may write anywhere, so the check runs in a child as user nobody. */
	assert_int_equal(chmod(f->root, 0755), 0);
	assert_int_equal(chmod(f->data_dir, 0755), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		if (setgid(65534) != 0 || setuid(65534) != 0)
			_exit(3);
		_exit(open_read_only_dir(f));
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
}

/* Callbacks in the order they ran: which batch, and its result. */
typedef struct {
	int calls;
	store_batch_t *batch[STORE_MAX_IN_FLIGHT + 1];
	int result[STORE_MAX_IN_FLIGHT + 1];
} order_ctx_t;

static void on_commit_ordered(store_batch_t *batch, void *arg)
{
	order_ctx_t *c = arg;

	assert_true(c->calls < STORE_MAX_IN_FLIGHT + 1);
	c->batch[c->calls] = batch;
	c->result[c->calls] = batch->result;
	c->calls++;
}

static void wait_ordered(fixture_t *f, order_ctx_t *c, int want)
{
	wait_count(f, &c->calls, want);
}

/*
 * The store takes STORE_MAX_IN_FLIGHT batches before their callbacks and
 * rejects one more; they commit and call back in the order they came.
 */
static void commit_while_busy(void **state)
{
	fixture_t *f = *state;
	enum { N = STORE_MAX_IN_FLIGHT + 1 };
	store_batch_t b[N];
	job_record_t r[N];
	order_ctx_t c = {0};

	open_main(f);
	for (int i = 0; i < N; i++) {
		store_batch_init(&b[i]);
		make_job(&r[i], (uint64_t)i + 1, JOB_PENDING);
		add_op(&b[i], STORE_OP_INSERT, &r[i]);
	}
	for (int i = 0; i < N - 1; i++)
		assert_int_equal(store_commit(f->store, &b[i], on_commit_ordered, &c), 0);
	assert_int_equal(store_commit(f->store, &b[N - 1], on_commit_ordered, &c), INFERQ_EBUSY);
	wait_ordered(f, &c, N - 1);
	for (int i = 0; i < N - 1; i++) {
		assert_ptr_equal(c.batch[i], &b[i]);
		assert_int_equal(c.result[i], 0);
		assert_stored(f, &r[i]);
	}
	assert_absent(f, &r[N - 1].id);

	assert_int_equal(store_commit(f->store, &b[N - 1], on_commit_ordered, &c), 0);
	wait_ordered(f, &c, N);
	assert_int_equal(c.result[N - 1], 0);
	assert_stored(f, &r[N - 1]);

	for (int i = 0; i < N; i++) {
		job_record_clear(&r[i]);
		store_batch_free(&b[i]);
	}
}

/*
 * A batch handed over behind one that fails, before that one's callback,
 * fails without running, because its changes may build on the failed ones.
 * The first batch handed over after that callback runs as usual.
 */
static void batches_behind_failure_not_run(void **state)
{
	fixture_t *f = *state;
	store_batch_t bad, behind, after;
	job_record_t missing, queued, later;
	order_ctx_t c = {0};

	open_main(f);
	store_batch_init(&bad);
	store_batch_init(&behind);
	store_batch_init(&after);
	make_job(&missing, 1, JOB_RUNNING); /* an update of a job the database lacks */
	make_job(&queued, 2, JOB_PENDING);
	make_job(&later, 3, JOB_PENDING);
	add_op(&bad, STORE_OP_UPDATE, &missing);
	add_op(&behind, STORE_OP_INSERT, &queued);
	add_op(&after, STORE_OP_INSERT, &later);

	assert_int_equal(store_commit(f->store, &bad, on_commit_ordered, &c), 0);
	assert_int_equal(store_commit(f->store, &behind, on_commit_ordered, &c), 0);
	wait_ordered(f, &c, 2);
	assert_ptr_equal(c.batch[0], &bad);
	assert_int_equal(c.result[0], INFERQ_EIO);
	assert_non_null(strstr(bad.error, "no such job in the database"));
	assert_ptr_equal(c.batch[1], &behind);
	assert_int_equal(c.result[1], INFERQ_EIO);
	/* Run in one transaction with bad, or rejected after it: either way it names the cause. */
	assert_non_null(strstr(behind.error, "no such job in the database"));
	assert_absent(f, &queued.id);

	assert_int_equal(store_commit(f->store, &after, on_commit_ordered, &c), 0);
	wait_ordered(f, &c, 3);
	assert_int_equal(c.result[2], 0);
	assert_stored(f, &later);
	assert_absent(f, &queued.id);

	job_record_clear(&missing);
	job_record_clear(&queued);
	job_record_clear(&later);
	store_batch_free(&bad);
	store_batch_free(&behind);
	store_batch_free(&after);
}

/* An empty batch calls back after the batch handed over before it. */
static void empty_batch_keeps_order(void **state)
{
	fixture_t *f = *state;
	store_batch_t full, empty;
	job_record_t r;
	order_ctx_t c = {0};

	open_main(f);
	store_batch_init(&full);
	store_batch_init(&empty);
	make_job(&r, 1, JOB_PENDING);
	add_op(&full, STORE_OP_INSERT, &r);

	assert_int_equal(store_commit(f->store, &full, on_commit_ordered, &c), 0);
	assert_int_equal(store_commit(f->store, &empty, on_commit_ordered, &c), 0);
	wait_ordered(f, &c, 2);
	assert_ptr_equal(c.batch[0], &full);
	assert_ptr_equal(c.batch[1], &empty);
	assert_int_equal(c.result[0], 0);
	assert_int_equal(c.result[1], 0);
	assert_stored(f, &r);

	job_record_clear(&r);
	store_batch_free(&full);
	store_batch_free(&empty);
}

/*
 * An empty batch ahead of a failing one depends only on earlier commits, so
 * it succeeds, also when the writer runs both in one transaction.
 */
static void empty_batch_before_failure_succeeds(void **state)
{
	fixture_t *f = *state;
	store_batch_t empty, bad;
	job_record_t missing;
	order_ctx_t c = {0};

	open_main(f);
	store_batch_init(&empty);
	store_batch_init(&bad);
	make_job(&missing, 1, JOB_RUNNING);
	add_op(&bad, STORE_OP_UPDATE, &missing);

	assert_int_equal(store_commit(f->store, &empty, on_commit_ordered, &c), 0);
	assert_int_equal(store_commit(f->store, &bad, on_commit_ordered, &c), 0);
	wait_ordered(f, &c, 2);
	assert_ptr_equal(c.batch[0], &empty);
	assert_int_equal(c.result[0], 0);
	assert_ptr_equal(c.batch[1], &bad);
	assert_int_equal(c.result[1], INFERQ_EIO);

	job_record_clear(&missing);
	store_batch_free(&empty);
	store_batch_free(&bad);
}

static void empty_batch_commits(void **state)
{
	fixture_t *f = *state;
	store_batch_t b;

	open_main(f);
	store_batch_init(&b);
	assert_int_equal(commit_wait(f, &b), 0);
	assert_string_equal(b.error, "");
	store_batch_free(&b);
}

static void ten_thousand_inserts(void **state)
{
	fixture_t *f = *state;
	enum { JOBS = 10000 };
	store_batch_t b;
	job_record_t job;
	commit_ctx_t c = {0};
	load_ctx_t loaded = {0};
	uint64_t max_seq = 0;

	open_main(f);
	store_batch_init(&b);
	for (uint64_t seq = 1; seq <= JOBS; seq++) {
		make_job(&job, seq, JOB_PENDING);
		add_op(&b, STORE_OP_INSERT, &job);
		job_record_clear(&job);
	}
	assert_int_equal(b.count, JOBS);

	assert_int_equal(store_commit(f->store, &b, on_commit, &c), 0);
	wait_calls(f, &c, 1);
	assert_int_equal(c.result, 0);
	assert_int_equal(store_load(f->store, collect, &loaded, &max_seq), 0);
	assert_int_equal(loaded.count, JOBS);
	assert_int_equal(max_seq, JOBS);
	assert_stored(f, &b.ops[JOBS / 2].rec);
	store_batch_free(&b);
}

static void close_with_nothing_in_flight(void **state)
{
	fixture_t *f = *state;
	char wal[160];
	struct stat st;

	open_main(f);
	close_main(f);

	/* The checkpoint at close leaves an empty WAL file behind, or none. */
	snprintf(wal, sizeof(wal), "%s-wal", f->db_path);
	if (stat(wal, &st) == 0)
		assert_int_equal(st.st_size, 0);
	open_main(f);
}

static void close_waits_for_in_flight(void **state)
{
	fixture_t *f = *state;
	store_batch_t first, second;
	job_record_t a, b;
	commit_ctx_t c = {0};

	open_main(f);
	store_batch_init(&first);
	store_batch_init(&second);
	make_job(&a, 1, JOB_PENDING);
	make_job(&b, 2, JOB_PENDING);
	add_op(&first, STORE_OP_INSERT, &a);
	add_op(&second, STORE_OP_INSERT, &b);

	/* The first callback commits the second batch; close must wait for both. */
	c.store = f->store;
	c.next = &second;
	assert_int_equal(store_commit(f->store, &first, on_commit, &c), 0);
	store_close(f->store);
	f->store = NULL;
	assert_int_equal(c.calls, 2);
	assert_int_equal(c.next_rc, 0);
	assert_int_equal(first.result, 0);
	assert_int_equal(second.result, 0);
	uv_run(&f->loop, UV_RUN_NOWAIT);

	open_main(f);
	assert_stored(f, &a);
	assert_stored(f, &b);

	job_record_clear(&a);
	job_record_clear(&b);
	store_batch_free(&first);
	store_batch_free(&second);
}

static void batch_helpers_reuse_memory(void **state)
{
	store_batch_t b;
	job_record_t job;
	store_op_t *ops;

	store_batch_init(&b);
	make_job(&job, 1, JOB_PENDING);
	for (int i = 0; i < 100; i++)
		add_op(&b, STORE_OP_INSERT, &job);
	assert_int_equal(b.count, 100);
	assert_true(b.cap >= 100);
	assert_int_equal(job.payload->refs, 101);

	ops = b.ops;
	b.result = INFERQ_EIO;
	snprintf(b.error, sizeof(b.error), "failed");
	store_batch_reset(&b);
	assert_int_equal(b.count, 0);
	assert_ptr_equal(b.ops, ops);
	assert_int_equal(b.result, 0);
	assert_string_equal(b.error, "");
	assert_int_equal(job.payload->refs, 1);

	assert_int_equal(store_batch_add(&b, STORE_OP_PURGE)->kind, STORE_OP_PURGE);
	assert_int_equal(b.ops[0].purged, 0);
	store_batch_free(&b);
	assert_null(b.ops);
	assert_int_equal(b.cap, 0);
	job_record_clear(&job);
}

/* --- API keys ----------------------------------------------------------- */

static void add_key_op(store_batch_t *b, store_op_kind_t kind, const char *name, char hash_digit,
		       int64_t ms)
{
	store_op_t *op = store_batch_add(b, kind);

	snprintf(op->key.name, sizeof(op->key.name), "%s", name);
	memset(op->key.hash, hash_digit, STORE_KEY_HASH_HEX);
	op->key.hash[STORE_KEY_HASH_HEX] = '\0';
	snprintf(op->key.role, sizeof(op->key.role), "client");
	op->key.models = rbuf_from_str("[\"org/*\"]");
	op->key.created_at = ms;
	op->key.last_used_at = kind == STORE_OP_KEY_USED ? ms : 0;
	op->key.revoked_at = kind == STORE_OP_KEY_REVOKE ? ms : 0;
	op->key.expires_at = kind == STORE_OP_KEY_PUT && hash_digit == 'b' ? ms + 1000 : 0;
}

typedef struct {
	store_key_t keys[4];
	int count;
} keys_ctx_t;

static int collect_key(void *arg, store_key_t *key)
{
	keys_ctx_t *c = arg;

	assert_true(c->count < 4);
	c->keys[c->count++] = *key;
	return 0;
}

static void free_keys(keys_ctx_t *c)
{
	for (int i = 0; i < c->count; i++)
		rbuf_unref(c->keys[i].models);
	c->count = 0;
}

static void keys_round_trip(void **state)
{
	fixture_t *f = *state;
	store_batch_t b;
	keys_ctx_t c = {0};

	open_main(f);
	store_batch_init(&b);
	add_key_op(&b, STORE_OP_KEY_PUT, "web", 'a', BASE_MS);
	add_key_op(&b, STORE_OP_KEY_PUT, "gpu", 'b', BASE_MS + 1);
	assert_int_equal(commit_wait(f, &b), 0);
	store_batch_reset(&b);

	add_key_op(&b, STORE_OP_KEY_REVOKE, "web", 'a', BASE_MS + 5000);
	add_key_op(&b, STORE_OP_KEY_USED, "gpu", 'b', BASE_MS + 7000);
	/* An older last use never moves last_used_at back. */
	add_key_op(&b, STORE_OP_KEY_USED, "gpu", 'b', BASE_MS + 6000);
	assert_int_equal(commit_wait(f, &b), 0);
	store_batch_free(&b);

	assert_int_equal(store_load_keys(f->store, collect_key, &c), 0);
	assert_int_equal(c.count, 2);
	assert_string_equal(c.keys[0].name, "web");
	assert_int_equal(c.keys[0].hash[0], 'a');
	assert_int_equal(strlen(c.keys[0].hash), STORE_KEY_HASH_HEX);
	assert_string_equal(c.keys[0].role, "client");
	assert_string_equal(c.keys[0].models->data, "[\"org/*\"]");
	assert_int_equal(c.keys[0].created_at, BASE_MS);
	assert_int_equal(c.keys[0].revoked_at, BASE_MS + 5000);
	assert_int_equal(c.keys[0].last_used_at, 0);
	assert_int_equal(c.keys[0].expires_at, 0);
	assert_string_equal(c.keys[1].name, "gpu");
	assert_int_equal(c.keys[1].last_used_at, BASE_MS + 7000);
	assert_int_equal(c.keys[1].expires_at, BASE_MS + 1001);
	assert_int_equal(c.keys[1].revoked_at, 0);
	free_keys(&c);
}

static void keys_bad_batch_leaves_nothing(void **state)
{
	fixture_t *f = *state;
	store_batch_t b;
	keys_ctx_t c = {0};

	open_main(f);
	store_batch_init(&b);
	add_key_op(&b, STORE_OP_KEY_PUT, "web", 'a', BASE_MS);
	add_key_op(&b, STORE_OP_KEY_REVOKE, "nobody", 'c', BASE_MS);
	assert_int_equal(commit_wait(f, &b), INFERQ_EIO);
	assert_non_null(strstr(b.error, "revocation of API key nobody"));
	assert_non_null(strstr(b.error, "no such API key"));
	store_batch_reset(&b);

	/* A second key with a name or hash already stored breaks a constraint. */
	add_key_op(&b, STORE_OP_KEY_PUT, "web", 'a', BASE_MS);
	assert_int_equal(commit_wait(f, &b), 0);
	store_batch_reset(&b);
	add_key_op(&b, STORE_OP_KEY_PUT, "web", 'd', BASE_MS);
	assert_int_equal(commit_wait(f, &b), INFERQ_EIO);
	store_batch_reset(&b);
	add_key_op(&b, STORE_OP_KEY_PUT, "other", 'a', BASE_MS);
	assert_int_equal(commit_wait(f, &b), INFERQ_EIO);
	store_batch_free(&b);

	assert_int_equal(store_load_keys(f->store, collect_key, &c), 0);
	assert_int_equal(c.count, 1);
	assert_string_equal(c.keys[0].name, "web");
	assert_int_equal(c.keys[0].revoked_at, 0);
	free_keys(&c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(open_creates_schema, setup, teardown),
	    cmocka_unit_test_setup_teardown(open_creates_missing_parents, setup, teardown),
	    cmocka_unit_test_setup_teardown(reopen_keeps_data, setup, teardown),
	    cmocka_unit_test_setup_teardown(fields_round_trip, setup, teardown),
	    cmocka_unit_test_setup_teardown(purge_honours_cutoff_and_limit, setup, teardown),
	    cmocka_unit_test_setup_teardown(purge_returns_every_id, setup, teardown),
	    cmocka_unit_test_setup_teardown(purge_keeps_max_seq, setup, teardown),
	    cmocka_unit_test_setup_teardown(update_missing_fails_batch, setup, teardown),
	    cmocka_unit_test_setup_teardown(duplicate_insert_fails_batch, setup, teardown),
	    cmocka_unit_test_setup_teardown(load_active_in_seq_order, setup, teardown),
	    cmocka_unit_test_setup_teardown(idempotency_key_found_since, setup, teardown),
	    cmocka_unit_test_setup_teardown(migrates_version_1, setup, teardown),
	    cmocka_unit_test_setup_teardown(keys_round_trip, setup, teardown),
	    cmocka_unit_test_setup_teardown(keys_bad_batch_leaves_nothing, setup, teardown),
	    cmocka_unit_test_setup_teardown(second_open_rejected, setup, teardown),
	    cmocka_unit_test_setup_teardown(newer_version_rejected, setup, teardown),
	    cmocka_unit_test_setup_teardown(garbage_database_rejected, setup, teardown),
	    cmocka_unit_test_setup_teardown(data_dir_file_rejected, setup, teardown),
	    cmocka_unit_test_setup_teardown(empty_data_dir_rejected, setup, teardown),
	    cmocka_unit_test_setup_teardown(read_only_data_dir_rejected, setup, teardown),
	    cmocka_unit_test_setup_teardown(commit_while_busy, setup, teardown),
	    cmocka_unit_test_setup_teardown(batches_behind_failure_not_run, setup, teardown),
	    cmocka_unit_test_setup_teardown(empty_batch_keeps_order, setup, teardown),
	    cmocka_unit_test_setup_teardown(empty_batch_before_failure_succeeds, setup, teardown),
	    cmocka_unit_test_setup_teardown(empty_batch_commits, setup, teardown),
	    cmocka_unit_test_setup_teardown(ten_thousand_inserts, setup, teardown),
	    cmocka_unit_test_setup_teardown(close_with_nothing_in_flight, setup, teardown),
	    cmocka_unit_test_setup_teardown(close_waits_for_in_flight, setup, teardown),
	    cmocka_unit_test(batch_helpers_reuse_memory),
	    cmocka_unit_test_setup_teardown(finished_counts_and_purged_by_model, setup, teardown),
	    cmocka_unit_test_setup_teardown(job_counts_follow_batches, setup, teardown),
	    cmocka_unit_test_setup_teardown(migrates_counts_from_version_4, setup, teardown),
	};

	return cmocka_run_group_tests_name("store", tests, NULL, NULL);
}
