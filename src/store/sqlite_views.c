/*
 * Admin reads of the local store, on the loop thread's read connection:
 * the job listing and the per-model counts. Both read committed rows only
 * and never wait for the writer, because in WAL mode the read connection
 * works on its own snapshot.
 *
 * The listing walks jobs by seq, newest first, on the primary key (or on
 * jobs_model_seq for one model). It reads just seq and state per row and
 * loads the whole row only for a match, so a page costs at most max_scan
 * cheap row visits plus limit full reads, whatever the filter.
 *
 * SPDX-License-Identifier: MIT
 */
#include <stdint.h>
#include <string.h>

#include "inferq_error.h"
#include "sqlite_store.h"

static const char sql_scan_all[] =
    "SELECT seq, state FROM jobs WHERE seq < ?1 ORDER BY seq DESC";
static const char sql_scan_model[] =
    "SELECT seq, state FROM jobs WHERE model = ?2 AND seq < ?1 ORDER BY seq DESC";
static const char sql_counts[] =
    "SELECT model, state, n FROM job_counts WHERE n > 0 ORDER BY model";

/* Loads the row with seq and hands it to fn. */
static int emit_row(local_store_t *s, int64_t seq, store_list_cb fn, void *ctx)
{
	job_record_t rec;
	int rc, ret;

	memset(&rec, 0, sizeof(rec));
	rc = sqlite3_bind_int64(s->get_by_seq, 1, seq);
	if (rc == SQLITE_OK)
		rc = sqlite3_step(s->get_by_seq);
	if (rc == SQLITE_ROW)
		ret = local_read_row(s->get_by_seq, &rec);
	else
		ret = INFERQ_EIO; /* the scan saw the row, so it is in this read's snapshot */
	sqlite3_reset(s->get_by_seq);
	sqlite3_clear_bindings(s->get_by_seq);
	if (ret == 0)
		ret = fn(ctx, &rec);
	job_record_clear(&rec);
	return ret;
}

/* Returns 1 when the scanned row's state column matches the expected state (-1: any). */
static int state_matches(sqlite3_stmt *st, int expected)
{
	const unsigned char *text;
	job_state_t state;

	if (expected < 0)
		return 1;
	text = sqlite3_column_text(st, 1);
	return text && job_state_parse((const char *)text, &state) == 0 && (int)state == expected;
}

/* Steps the scan for one page; see store_list_jobs for the rules of *next_before. */
static int scan_page(local_store_t *s, sqlite3_stmt *st, const store_list_t *q, store_list_cb fn,
		     void *ctx, uint64_t *next_before)
{
	uint32_t examined = 0, found = 0;
	int rc, ret = 0;

	*next_before = 0;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		int64_t seq = sqlite3_column_int64(st, 0);
		int match = state_matches(st, q->state);

		examined++;
		if (match && found == q->limit) {
			/* A full page, and another job follows: the next page starts there. */
			*next_before = (uint64_t)seq + 1;
			return 0;
		}
		if (match) {
			ret = emit_row(s, seq, fn, ctx);
			if (ret != 0)
				return ret;
			found++;
		}
		if (examined >= q->max_scan) {
			*next_before = (uint64_t)seq;
			return 0;
		}
	}
	return rc == SQLITE_DONE ? 0 : INFERQ_EIO;
}

int local_list_jobs(void *state, const store_list_t *query, store_list_cb fn, void *ctx,
		    uint64_t *next_before)
{
	local_store_t *s = state;
	sqlite3_stmt *st = NULL;
	int64_t before = query->before_seq > INT64_MAX ? INT64_MAX : (int64_t)query->before_seq;
	int rc, ret;

	*next_before = 0;
	rc = sqlite3_prepare_v2(s->rdb, query->model ? sql_scan_model : sql_scan_all, -1, &st,
				NULL);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(st, 1, before);
	if (rc == SQLITE_OK && query->model)
		rc = sqlite3_bind_text(st, 2, query->model, (int)query->model_len, SQLITE_STATIC);
	if (rc != SQLITE_OK) {
		ret = INFERQ_EIO;
		goto out;
	}
	ret = scan_page(s, st, query, fn, ctx, next_before);
out:
	/* Finalizing ends the read transaction, so the snapshot does not hold back checkpoints. */
	sqlite3_finalize(st);
	return ret;
}

int local_count_jobs(void *state, store_count_cb fn, void *ctx)
{
	local_store_t *s = state;
	sqlite3_stmt *st = NULL;
	int rc;

	if (sqlite3_prepare_v2(s->rdb, sql_counts, -1, &st, NULL) != SQLITE_OK)
		return INFERQ_EIO;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		const unsigned char *model = sqlite3_column_text(st, 0);
		const unsigned char *name = sqlite3_column_text(st, 1);
		job_state_t job_state;

		if (!model || !name || job_state_parse((const char *)name, &job_state) != 0)
			continue;
		fn(ctx, (const char *)model, (size_t)sqlite3_column_bytes(st, 0), job_state,
		   (uint64_t)sqlite3_column_int64(st, 2));
	}
	sqlite3_finalize(st);
	return rc == SQLITE_DONE ? 0 : INFERQ_EIO;
}
