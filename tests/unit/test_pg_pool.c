/*
 * Tests of the PostgreSQL connection pool that need no database: bad
 * connection strings, the host named in messages, and tasks given while
 * the database cannot be reached, which must fail at once (503 upstream)
 * instead of waiting. Each test runs its own uv loop, bounded by a
 * watchdog timer.
 *
 * SPDX-License-Identifier: MIT
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "inferq_error.h"
#include "pg_pool.h"

#define WATCHDOG_MS 10000
#define MISSING_DIR "/nonexistent/inferq-test-socket-dir"

typedef struct {
	int calls;
	int rc;
	char err[512];
} outcome_t;

static void on_task(void *ctx, int rc, PGresult *const *results, int count, const char *err)
{
	outcome_t *o = ctx;

	o->calls++;
	o->rc = rc;
	snprintf(o->err, sizeof(o->err), "%s", err ? err : "");
	assert_null(results);
	assert_int_equal(count, 0);
}

static void on_watchdog(uv_timer_t *t)
{
	uv_stop(t->loop);
}

/* Runs the loop until o has its callback or the watchdog fires. */
static void run_until_called(uv_loop_t *loop, outcome_t *o)
{
	uv_timer_t watchdog;

	uv_timer_init(loop, &watchdog);
	uv_timer_start(&watchdog, on_watchdog, WATCHDOG_MS, 0);
	while (o->calls == 0 && uv_timer_get_due_in(&watchdog) > 0)
		uv_run(loop, UV_RUN_ONCE);
	uv_timer_stop(&watchdog);
	uv_close((uv_handle_t *)&watchdog, NULL);
	uv_run(loop, UV_RUN_NOWAIT); /* finishes the close while watchdog is still in scope */
}

static void close_pool(uv_loop_t *loop, pg_pool_t *pool)
{
	pg_pool_close(pool);
	uv_run(loop, UV_RUN_DEFAULT);
	assert_int_equal(uv_loop_close(loop), 0);
}

static void test_bad_conninfo_rejected(void **state)
{
	uv_loop_t loop;
	pg_pool_t *pool = NULL;
	char err[256] = "";
	pg_pool_config_t c = {.conninfo = "postgres://[::1", .size = 2, .max_waiting = 10};

	uv_loop_init(&loop);
	assert_int_equal(pg_pool_open(&loop, &c, &pool, err, sizeof(err)), INFERQ_EINVAL);
	assert_null(pool);
	assert_true(strlen(err) > 0);
	assert_int_equal(uv_loop_close(&loop), 0);
}

static void test_host_named_for_socket_and_tcp(void **state)
{
	uv_loop_t loop;
	pg_pool_t *pool = NULL;
	char err[256];
	pg_pool_config_t c = {.conninfo = "postgres:///db?host=" MISSING_DIR "&port=6001",
			      .size = 1, .max_waiting = 10};

	uv_loop_init(&loop);
	assert_int_equal(pg_pool_open(&loop, &c, &pool, err, sizeof(err)), 0);
	assert_string_equal(pg_pool_host(pool), "socket " MISSING_DIR " (port 6001)");
	close_pool(&loop, pool);

	c.conninfo = "postgresql://user@127.0.0.1:1/db?connect_timeout=1";
	uv_loop_init(&loop);
	assert_int_equal(pg_pool_open(&loop, &c, &pool, err, sizeof(err)), 0);
	assert_string_equal(pg_pool_host(pool), "127.0.0.1:1");
	close_pool(&loop, pool);
}

static void test_unreachable_database_fails_tasks(void **state)
{
	uv_loop_t loop;
	pg_pool_t *pool = NULL;
	char err[256];
	outcome_t first = {0}, later = {0};
	pg_stmt_t st = {.sql = "SELECT 1"};
	pg_pool_config_t c = {.conninfo = "postgres:///db?host=" MISSING_DIR, .size = 2,
			      .max_waiting = 10, .listen = "inferq_jobs"};

	uv_loop_init(&loop);
	assert_int_equal(pg_pool_open(&loop, &c, &pool, err, sizeof(err)), 0);
	pg_pool_exec(pool, &st, 1, 0, on_task, &first);
	run_until_called(&loop, &first);
	assert_int_equal(first.calls, 1);
	assert_int_equal(first.rc, INFERQ_EBUSY);
	assert_non_null(strstr(first.err, MISSING_DIR));
	assert_non_null(strstr(first.err, "unreachable"));
	/* libpq's two lines read as two sentences on the one line of the message. */
	assert_non_null(strstr(first.err, "No such file or directory. Is the server"));
	assert_null(strchr(first.err, '\n'));
	assert_int_equal(pg_pool_up(pool), 0);

	/* While every connection waits for its retry, a task fails from inside the call. */
	pg_pool_exec(pool, &st, 1, PG_TASK_ORDERED, on_task, &later);
	if (later.calls == 0)
		run_until_called(&loop, &later);
	assert_int_equal(later.calls, 1);
	assert_int_equal(later.rc, INFERQ_EBUSY);
	close_pool(&loop, pool);
}

static void test_close_fails_waiting_tasks(void **state)
{
	uv_loop_t loop;
	pg_pool_t *pool = NULL;
	char err[256];
	outcome_t o = {0};
	pg_stmt_t st = {.sql = "SELECT $1::int", .nparams = 1, .values = {"7"}, .lengths = {1}};
	/* A TCP port nothing listens on: connecting takes at least one loop turn. */
	pg_pool_config_t c = {.conninfo = "postgres://u@127.0.0.1:1/db", .size = 1,
			      .max_waiting = 10};

	uv_loop_init(&loop);
	assert_int_equal(pg_pool_open(&loop, &c, &pool, err, sizeof(err)), 0);
	pg_pool_exec(pool, &st, 1, 0, on_task, &o);
	if (o.calls == 0) {
		pg_pool_close(pool);
		assert_int_equal(o.calls, 1);
		assert_int_equal(o.rc, INFERQ_EIO);
		assert_non_null(strstr(o.err, "stopping"));
		uv_run(&loop, UV_RUN_DEFAULT);
		assert_int_equal(uv_loop_close(&loop), 0);
		return;
	}
	/* The connection was refused at once: the task failed as unreachable instead. */
	assert_int_equal(o.rc, INFERQ_EBUSY);
	close_pool(&loop, pool);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_bad_conninfo_rejected),
		cmocka_unit_test(test_host_named_for_socket_and_tcp),
		cmocka_unit_test(test_unreachable_database_fails_tasks),
		cmocka_unit_test(test_close_fails_waiting_tasks),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
