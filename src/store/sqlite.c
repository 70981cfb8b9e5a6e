/*
 * The local store backend: one SQLite file, DATA_DIR/inferq.db, in WAL mode
 * with synchronous=FULL, so a commit that succeeded is on disk. A writer
 * thread with its own connection runs each batch as one BEGIN IMMEDIATE
 * transaction, then wakes the loop through a uv_async_t. The loop thread
 * reads committed rows on a second, read-only connection. In WAL mode that
 * connection reads its own snapshot instead of waiting for the writer.
 * An exclusive flock on DATA_DIR/inferq.lock keeps a second server out.
 * This file has the data dir, the lock, the read connection and the
 * loop-thread side; sqlite_writer.c has the schema and the writer thread.
 *
 * Invariants: at most STORE_MAX_IN_FLIGHT batches are between store_commit
 * and their callbacks, and the writer runs them in the order they came, so
 * it starts the next one as soon as it commits one, without waiting for the
 * loop. While the writer thread runs, only it touches the write connection.
 * The mutex guards only the hand-over fields (queued, finished, rejection,
 * stop).
 *
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "alloc.h"
#include "inferq_error.h"
#include "log.h"
#include "sqlite_store.h"

#define DB_FILE   "inferq.db"
#define LOCK_FILE "inferq.lock"
/*
 * A WAL reader gets SQLITE_BUSY only in brief cases, such as while another
 * connection recovers the WAL index. A longer wait would stall the loop.
 */
#define READER_BUSY_TIMEOUT_MS 100

static const char sql_find_idempotency[] =
    "SELECT id, body_hash FROM jobs WHERE model = ?1 AND idempotency_key = ?2 "
    "AND created_at >= ?3 ORDER BY created_at DESC LIMIT 1";

static const char sql_get[] = "SELECT " INSERT_COLUMNS " FROM jobs WHERE id = ?1";
static const char sql_get_by_seq[] = "SELECT " INSERT_COLUMNS " FROM jobs WHERE seq = ?1";
static const char sql_load[] =
    "SELECT " INSERT_COLUMNS " FROM jobs WHERE state IN ('pending', 'running') ORDER BY seq";
static const char sql_max_seq[] =
    "SELECT max(coalesce((SELECT max(seq) FROM jobs), 0), "
    "coalesce((SELECT value FROM store_meta WHERE name = 'max_seq'), 0))";

static const char sql_count_finished[] =
    "SELECT model, state, n FROM job_counts WHERE n > 0 "
    "AND state IN ('done', 'failed', 'canceled')";

static const char sql_load_keys[] =
    "SELECT name, key_hash, role, models, created_at, last_used_at, expires_at, revoked_at "
    "FROM api_keys ORDER BY created_at, rowid";

static char *path_join(const char *dir, const char *name)
{
	size_t n = strlen(dir) + 1 + strlen(name) + 1;
	char *p = xmalloc(n);

	snprintf(p, n, "%s/%s", dir, name);
	return p;
}

int local_query_int(sqlite3 *db, const char *sql, int64_t *out)
{
	sqlite3_stmt *st = NULL;
	int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);

	if (rc == SQLITE_OK) {
		rc = sqlite3_step(st);
		if (rc == SQLITE_ROW) {
			*out = sqlite3_column_int64(st, 0);
			rc = SQLITE_OK;
		}
	}
	sqlite3_finalize(st);
	return rc;
}

/* Creates dir and its missing parents with mode 0700, like mkdir -p. */
static int make_dirs(const char *dir, char *err, size_t errlen)
{
	char *p = xstrdup(dir);
	int ret = 0;

	for (char *c = p + 1;; c++) {
		char saved = *c;

		if (saved != '/' && saved != '\0')
			continue;
		*c = '\0';
		if (mkdir(p, 0700) != 0 && errno != EEXIST) {
			snprintf(err, errlen,
			         "cannot create data dir %s: %s%s%s; create it by hand or choose "
			         "another --data-dir",
			         dir, strerror(errno), saved ? " at " : "", saved ? p : "");
			ret = INFERQ_EIO;
		}
		*c = saved;
		if (ret < 0 || saved == '\0')
			break;
	}
	free(p);
	return ret;
}

static int prepare_dir(const char *dir, char *err, size_t errlen)
{
	struct stat st;

	if (make_dirs(dir, err, errlen) < 0)
		return INFERQ_EIO;
	if (stat(dir, &st) != 0) {
		snprintf(err, errlen, "cannot read data dir %s: %s", dir, strerror(errno));
		return INFERQ_EIO;
	}
	if (!S_ISDIR(st.st_mode)) {
		snprintf(err, errlen,
		         "data dir %s is not a directory: choose a directory path for --data-dir",
		         dir);
		return INFERQ_EINVAL;
	}
	if (access(dir, W_OK | X_OK) != 0) {
		snprintf(err, errlen,
		         "data dir %s is not writable (%s): give this user write access to it or "
		         "choose another --data-dir",
		         dir, strerror(errno));
		return INFERQ_EIO;
	}
	return 0;
}

/* Writes " (pid N)" for the process named in the lock file, or "" when it names none. */
static void read_lock_owner(int fd, char *out, size_t outlen)
{
	char text[24];
	ssize_t n = pread(fd, text, sizeof(text) - 1, 0);
	long pid;

	out[0] = '\0';
	if (n <= 0)
		return;
	text[n] = '\0';
	pid = strtol(text, NULL, 10);
	if (pid > 0)
		snprintf(out, outlen, " (pid %ld)", pid);
}

static int take_lock(local_store_t *s, char *err, size_t errlen)
{
	char *path = path_join(s->dir, LOCK_FILE);
	char owner[40];
	char pid[24];
	int fd, ret = 0;

	fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0) {
		snprintf(err, errlen, "cannot open lock file %s: %s", path, strerror(errno));
		ret = INFERQ_EIO;
		goto out;
	}
	if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
		if (errno == EWOULDBLOCK) {
			read_lock_owner(fd, owner, sizeof(owner));
			snprintf(err, errlen,
			         "data dir %s is locked (%s): another inferq process%s is probably "
			         "using it; stop it or choose another --data-dir",
			         s->dir, path, owner);
		} else {
			snprintf(err, errlen, "cannot lock %s: %s", path, strerror(errno));
		}
		close(fd);
		ret = INFERQ_EIO;
		goto out;
	}

	/* Only the error message above reads the pid, so a failed write is harmless. */
	snprintf(pid, sizeof(pid), "%ld\n", (long)getpid());
	if (ftruncate(fd, 0) == 0) {
		ssize_t written = pwrite(fd, pid, strlen(pid), 0);

		(void)written;
	}
	s->lock_fd = fd;
out:
	free(path);
	return ret;
}

static int open_reader(local_store_t *s, char *err, size_t errlen)
{
	int flags = SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX;
	int rc;

	rc = sqlite3_open_v2(s->db_path, &s->rdb, flags, NULL);
	if (rc == SQLITE_OK) {
		sqlite3_extended_result_codes(s->rdb, 1);
		sqlite3_busy_timeout(s->rdb, READER_BUSY_TIMEOUT_MS);
		rc = local_prepare(s->rdb, sql_get, &s->get);
	}
	if (rc == SQLITE_OK)
		rc = local_prepare(s->rdb, sql_find_idempotency, &s->find_idempotency);
	if (rc == SQLITE_OK)
		rc = local_prepare(s->rdb, sql_get_by_seq, &s->get_by_seq);
	if (rc != SQLITE_OK) {
		snprintf(err, errlen, "cannot open database %s for reading: %s", s->db_path,
		         s->rdb ? sqlite3_errmsg(s->rdb) : sqlite3_errstr(rc));
		return INFERQ_EIO;
	}
	return 0;
}

static void close_reader(local_store_t *s)
{
	sqlite3_finalize(s->get);
	sqlite3_finalize(s->find_idempotency);
	sqlite3_finalize(s->get_by_seq);
	s->get = NULL;
	s->find_idempotency = NULL;
	s->get_by_seq = NULL;
	sqlite3_close_v2(s->rdb);
	s->rdb = NULL;
}

static rbuf_t *column_bytes(sqlite3_stmt *st, int col)
{
	const unsigned char *text;

	if (sqlite3_column_type(st, col) == SQLITE_NULL)
		return NULL;
	text = sqlite3_column_text(st, col);
	return rbuf_new(text ? (const char *)text : "", (size_t)sqlite3_column_bytes(st, col));
}

static int column_id(sqlite3_stmt *st, int col, iq_id_t *out)
{
	const unsigned char *text = sqlite3_column_text(st, col);

	if (!text)
		return INFERQ_EIO;
	return id_parse((const char *)text, (size_t)sqlite3_column_bytes(st, col), out) == 0
	           ? 0
	           : INFERQ_EIO;
}

int local_read_row(sqlite3_stmt *st, job_record_t *r)
{
	const unsigned char *state = sqlite3_column_text(st, COL_STATE);

	memset(r, 0, sizeof(*r));
	if (column_id(st, COL_ID, &r->id) < 0)
		return INFERQ_EIO;
	if (!state || job_state_parse((const char *)state, &r->state) < 0)
		return INFERQ_EIO;
	if (sqlite3_column_type(st, COL_CLAIM_ID) != SQLITE_NULL &&
	    column_id(st, COL_CLAIM_ID, &r->claim_id) < 0)
		return INFERQ_EIO;

	r->seq = (uint64_t)sqlite3_column_int64(st, COL_SEQ);
	r->priority = (int32_t)sqlite3_column_int64(st, COL_PRIORITY);
	r->retries = (uint32_t)sqlite3_column_int64(st, COL_RETRIES);
	r->created_at = sqlite3_column_int64(st, COL_CREATED_AT);
	r->claimed_at = sqlite3_column_int64(st, COL_CLAIMED_AT);
	r->done_at = sqlite3_column_int64(st, COL_DONE_AT);
	r->lease_expires_at = sqlite3_column_int64(st, COL_LEASE_EXPIRES_AT);
	r->claim_timeout = (uint32_t)sqlite3_column_int64(st, COL_CLAIM_TIMEOUT);
	r->model = column_bytes(st, COL_MODEL);
	r->worker = column_bytes(st, COL_WORKER);
	r->payload = column_bytes(st, COL_PAYLOAD);
	r->info = column_bytes(st, COL_INFO);
	r->outputs = column_bytes(st, COL_OUTPUTS);
	r->error = column_bytes(st, COL_ERROR);
	r->warnings = column_bytes(st, COL_WARNINGS);
	r->history = column_bytes(st, COL_HISTORY);
	return 0;
}

/* Runs the callback of the oldest batch in flight, b. */
static void deliver(local_store_t *s, store_batch_t *b)
{
	struct local_in_flight f = s->in_flight[0];

	IQ_ASSERT(s->n_in_flight > 0 && b == f.batch);
	s->n_in_flight--;
	memmove(&s->in_flight[0], &s->in_flight[1], s->n_in_flight * sizeof(s->in_flight[0]));
	if (s->n_in_flight == 0)
		uv_unref((uv_handle_t *)&s->async);
	/* The first failure of an era ends it; the batches rejected after it belong to it. */
	if (b->result != 0 && f.era == s->era)
		s->era++;
	if (b->count > 0) {
		s->last_result = b->result;
		memcpy(s->last_error, b->error, sizeof(s->last_error));
	}
	f.cb(b, f.cb_ctx);
}

/* Takes the finished batches, oldest first, into out; returns how many. */
static size_t take_finished(local_store_t *s, store_batch_t **out)
{
	size_t n;

	pthread_mutex_lock(&s->mu);
	n = s->n_finished;
	memcpy(out, s->finished, n * sizeof(out[0]));
	s->n_finished = 0;
	pthread_mutex_unlock(&s->mu);
	return n;
}

/* Runs the callbacks of the batches the writer has finished, oldest first. */
static void deliver_finished(local_store_t *s)
{
	store_batch_t *done[STORE_MAX_IN_FLIGHT];
	size_t n = take_finished(s, done);

	for (size_t i = 0; i < n; i++)
		deliver(s, done[i]);
}

static void on_async(uv_async_t *handle)
{
	deliver_finished(handle->data);
}

static int start_writer(local_store_t *s, char *err, size_t errlen)
{
	sigset_t all, old;
	int rc;

	/* Block every signal in the writer, so the kernel delivers them to other threads. */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	rc = pthread_create(&s->thread, NULL, local_writer_main, s);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (rc != 0) {
		snprintf(err, errlen, "cannot start the store writer thread: %s", strerror(rc));
		return INFERQ_EIO;
	}
	/* The name shows in top -H, ps -L and /proc/PID/task/TID/comm; a failure only loses it. */
	(void)pthread_setname_np(s->thread, "inferq-writer");
	s->writer_running = 1;

	rc = uv_async_init(s->loop, &s->async, on_async);
	if (rc != 0) {
		snprintf(err, errlen, "cannot create the store's wake-up handle: %s",
		         uv_strerror(rc));
		return INFERQ_EIO;
	}
	s->async.data = s;
	/* The handle keeps the loop alive only while a batch is in flight. */
	uv_unref((uv_handle_t *)&s->async);
	return 0;
}

static void stop_writer(local_store_t *s)
{
	if (!s->writer_running)
		return;
	pthread_mutex_lock(&s->mu);
	s->stop = 1;
	pthread_cond_signal(&s->wake);
	pthread_mutex_unlock(&s->mu);
	pthread_join(s->thread, NULL);
	s->writer_running = 0;
}

static void free_store(local_store_t *s)
{
	pthread_cond_destroy(&s->done);
	pthread_cond_destroy(&s->wake);
	pthread_mutex_destroy(&s->mu);
	free(s->db_path);
	free(s->dir);
	free(s);
}

static void on_async_closed(uv_handle_t *handle)
{
	free_store(handle->data);
}

/* Stops the thread, closes both connections and releases the lock. */
static void shut_down(local_store_t *s)
{
	stop_writer(s);
	close_reader(s);
	local_writer_close(s);
	if (s->lock_fd >= 0) {
		close(s->lock_fd);
		s->lock_fd = -1;
	}
}

/*
 * Turns off SQLite's count of the memory it holds, which nothing reads: the
 * count takes a global mutex on every allocation, a few percent of the
 * writer thread's time. It must run before SQLite initializes, so a process
 * that used SQLite before the first store opens keeps the count.
 */
static void configure_sqlite(void)
{
	sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
}

static int local_open(const store_config_t *config, void **out, char *err, size_t errlen)
{
	static pthread_once_t configured = PTHREAD_ONCE_INIT;

	local_store_t *s;
	int ret;

	if (!config || !config->loop || !config->data_dir || !config->data_dir[0]) {
		snprintf(err, errlen,
		         "the local store needs a loop and a data dir: pass --data-dir with a "
		         "directory path");
		return INFERQ_EINVAL;
	}
	if (!sqlite3_threadsafe()) {
		snprintf(err, errlen,
		         "SQLite %s was built without thread support, which the store's writer "
		         "thread needs: install a threadsafe libsqlite3",
		         sqlite3_libversion());
		return INFERQ_EIO;
	}
	pthread_once(&configured, configure_sqlite);
	s = xcalloc(1, sizeof(*s));
	s->loop = config->loop;
	s->lock_fd = -1;
	s->dir = xstrdup(config->data_dir);
	s->db_path = path_join(s->dir, DB_FILE);
	pthread_mutex_init(&s->mu, NULL);
	pthread_cond_init(&s->wake, NULL);
	pthread_cond_init(&s->done, NULL);

	ret = prepare_dir(s->dir, err, errlen);
	if (ret == 0)
		ret = take_lock(s, err, errlen);
	if (ret == 0)
		ret = local_writer_open(s, err, errlen);
	if (ret == 0)
		ret = open_reader(s, err, errlen);
	if (ret == 0)
		ret = start_writer(s, err, errlen);
	if (ret < 0) {
		/* The async handle is initialized last, so no failure leaves it open. */
		shut_down(s);
		free_store(s);
		return ret;
	}
	*out = s;
	return 0;
}

static void local_close(void *state)
{
	local_store_t *s = state;

	/* A callback may commit the next batch, so wait until none is in flight. */
	while (s->n_in_flight > 0) {
		pthread_mutex_lock(&s->mu);
		while (s->n_finished == 0)
			pthread_cond_wait(&s->done, &s->mu);
		pthread_mutex_unlock(&s->mu);
		deliver_finished(s);
	}
	shut_down(s);
	uv_close((uv_handle_t *)&s->async, on_async_closed);
}

static int local_commit(void *state, store_batch_t *batch, store_commit_cb cb, void *ctx)
{
	local_store_t *s = state;
	struct local_in_flight *f;

	if (s->n_in_flight == STORE_MAX_IN_FLIGHT)
		return INFERQ_EBUSY;
	f = &s->in_flight[s->n_in_flight++];
	f->batch = batch;
	f->cb = cb;
	f->cb_ctx = ctx;
	f->era = s->era;
	uv_ref((uv_handle_t *)&s->async);

	pthread_mutex_lock(&s->mu);
	IQ_ASSERT(s->n_queued < STORE_MAX_IN_FLIGHT);
	atomic_store_explicit(&s->writer_waits, 0, memory_order_relaxed);
	s->queued[s->n_queued] = batch;
	s->queued_era[s->n_queued] = f->era;
	s->n_queued++;
	pthread_cond_signal(&s->wake);
	pthread_mutex_unlock(&s->mu);
	return 0;
}

static int local_writer_idle(void *state)
{
	local_store_t *s = state;

	return atomic_load_explicit(&s->writer_waits, memory_order_relaxed);
}

static int local_get(void *state, const iq_id_t *id, job_record_t *out)
{
	local_store_t *s = state;
	char text[ID_TEXT_LEN + 1];
	int rc, ret;

	memset(out, 0, sizeof(*out));
	id_format(id, text);
	rc = sqlite3_bind_text(s->get, 1, text, ID_TEXT_LEN, SQLITE_STATIC);
	if (rc == SQLITE_OK)
		rc = sqlite3_step(s->get);
	if (rc == SQLITE_ROW)
		ret = local_read_row(s->get, out);
	else if (rc == SQLITE_DONE)
		ret = INFERQ_ENOTFOUND;
	else
		ret = INFERQ_EIO;

	/* Resetting ends the read transaction, so the snapshot does not hold back checkpoints. */
	sqlite3_reset(s->get);
	sqlite3_clear_bindings(s->get);
	if (ret < 0)
		job_record_clear(out);
	return ret;
}

static int local_load(void *state, int (*fn)(void *ctx, job_record_t *rec), void *ctx,
                      uint64_t *max_seq)
{
	local_store_t *s = state;
	sqlite3_stmt *st = NULL;
	job_record_t rec;
	int64_t max = 0;
	int rc, ret = 0;

	*max_seq = 0;
	if (local_query_int(s->rdb, sql_max_seq, &max) != SQLITE_OK)
		return INFERQ_EIO;
	*max_seq = (uint64_t)max;

	if (sqlite3_prepare_v2(s->rdb, sql_load, -1, &st, NULL) != SQLITE_OK)
		return INFERQ_EIO;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		ret = local_read_row(st, &rec);
		if (ret < 0)
			break;
		ret = fn(ctx, &rec);
		if (ret != 0)
			break;
	}
	if (ret == 0 && rc != SQLITE_DONE)
		ret = INFERQ_EIO;
	sqlite3_finalize(st);
	return ret;
}

/* Copies column col into out[0..size) as a C string; returns 0 or INFERQ_EIO when it does not fit. */
static int column_copy(sqlite3_stmt *st, int col, char *out, size_t size)
{
	const unsigned char *text = sqlite3_column_text(st, col);
	size_t len = (size_t)sqlite3_column_bytes(st, col);

	if (!text || len == 0 || len >= size)
		return INFERQ_EIO;
	memcpy(out, text, len);
	out[len] = '\0';
	return 0;
}

static int read_key_row(sqlite3_stmt *st, store_key_t *k)
{
	memset(k, 0, sizeof(*k));
	if (column_copy(st, 0, k->name, sizeof(k->name)) < 0 ||
	    column_copy(st, 1, k->hash, sizeof(k->hash)) < 0 ||
	    column_copy(st, 2, k->role, sizeof(k->role)) < 0 ||
	    sqlite3_column_type(st, 3) == SQLITE_NULL)
		return INFERQ_EIO;
	k->models = column_bytes(st, 3);
	k->created_at = sqlite3_column_int64(st, 4);
	k->last_used_at = sqlite3_column_int64(st, 5);
	k->expires_at = sqlite3_column_int64(st, 6);
	k->revoked_at = sqlite3_column_int64(st, 7);
	return 0;
}

static int local_load_keys(void *state, int (*fn)(void *ctx, store_key_t *key), void *ctx)
{
	local_store_t *s = state;
	sqlite3_stmt *st = NULL;
	store_key_t key;
	int rc, ret = 0;

	if (sqlite3_prepare_v2(s->rdb, sql_load_keys, -1, &st, NULL) != SQLITE_OK)
		return INFERQ_EIO;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		ret = read_key_row(st, &key);
		if (ret < 0)
			break;
		ret = fn(ctx, &key);
		if (ret != 0)
			break;
	}
	if (ret == 0 && rc != SQLITE_DONE)
		ret = INFERQ_EIO;
	sqlite3_finalize(st);
	return ret;
}

static int local_count_finished(void *state,
                                int (*fn)(void *ctx, const char *model, job_state_t st,
                                          uint64_t count),
                                void *ctx)
{
	local_store_t *s = state;
	sqlite3_stmt *st = NULL;
	int rc, ret = 0;

	if (sqlite3_prepare_v2(s->rdb, sql_count_finished, -1, &st, NULL) != SQLITE_OK)
		return INFERQ_EIO;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		const char *model = (const char *)sqlite3_column_text(st, 0);
		const char *name = (const char *)sqlite3_column_text(st, 1);
		job_state_t state_value;

		/* A row this server did not write is skipped rather than failing the start. */
		if (model == NULL || name == NULL || job_state_parse(name, &state_value) != 0)
			continue;
		ret = fn(ctx, model, state_value, (uint64_t)sqlite3_column_int64(st, 2));
		if (ret != 0)
			break;
	}
	if (ret == 0 && rc != SQLITE_DONE)
		ret = INFERQ_EIO;
	sqlite3_finalize(st);
	return ret;
}

static int local_find_idempotency(void *state, const char *model, size_t model_len,
                                  const char *key, size_t key_len, int64_t since_ms, iq_id_t *id,
                                  char body_hash[65])
{
	local_store_t *s = state;
	sqlite3_stmt *st = s->find_idempotency;
	const char *id_text, *hash;
	int rc, ret = INFERQ_EIO;

	sqlite3_bind_text(st, 1, model, (int)model_len, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, key, (int)key_len, SQLITE_STATIC);
	sqlite3_bind_int64(st, 3, since_ms);
	rc = sqlite3_step(st);
	if (rc == SQLITE_DONE) {
		ret = INFERQ_ENOTFOUND;
	} else if (rc == SQLITE_ROW) {
		id_text = (const char *)sqlite3_column_text(st, 0);
		hash = (const char *)sqlite3_column_text(st, 1);
		if (id_text && hash && strlen(hash) == 64 &&
		    id_parse(id_text, strlen(id_text), id) == 0) {
			memcpy(body_hash, hash, 65);
			ret = 0;
		}
	}
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
	return ret;
}

static int local_check(void *state, char *err, size_t errlen)
{
	local_store_t *s = state;

	if (s->last_result < 0) {
		snprintf(err, errlen, "the last commit failed: %s", s->last_error);
		return INFERQ_EIO;
	}
	if (access(s->db_path, W_OK) != 0) {
		snprintf(err, errlen,
		         "database %s is not writable (%s): give this user write access to it",
		         s->db_path, strerror(errno));
		return INFERQ_EIO;
	}
	return 0;
}

const store_backend_t store_backend_local = {
    .name = "local",
    .open = local_open,
    .close = local_close,
    .load = local_load,
    .load_keys = local_load_keys,
    .count_finished = local_count_finished,
    .find_idempotency = local_find_idempotency,
    .commit = local_commit,
    .writer_idle = local_writer_idle,
    .get = local_get,
    .check = local_check,
    .list_jobs = local_list_jobs,
    .count_jobs = local_count_jobs,
};
