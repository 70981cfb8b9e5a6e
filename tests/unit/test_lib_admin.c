/*
 * Tests of libinferq's admin views, inferq_admin_jobs() and
 * inferq_admin_workers(), against the real server binary started on
 * 127.0.0.1 with port 0 and a fresh data dir (INFERQ_BIN names it, else
 * $BUILD/inferq, else build/inferq). One server serves every test; each
 * test uses its own model and filters on it.
 *
 * SPDX-License-Identifier: MIT
 */
#include <ftw.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "inferq.h"

#define START_TIMEOUT_MS 10000
#define STOP_TIMEOUT_MS  10000

static struct {
	char dir[64];
	char log_path[96];
	char url[64];
	char key[256];
	pid_t pid;
} server;

static long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

static void sleep_ms(long ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};

	nanosleep(&ts, NULL);
}

static const char *server_binary(void)
{
	static char path[512];
	const char *bin = getenv("INFERQ_BIN");
	const char *build = getenv("BUILD");

	if (bin && *bin)
		return bin;
	snprintf(path, sizeof(path), "%s/inferq", build && *build ? build : "build");
	return path;
}

static void spawn_server(void)
{
	char data_dir[128];

	snprintf(data_dir, sizeof(data_dir), "%s/data", server.dir);
	mkdir(data_dir, 0700);
	server.pid = fork();
	if (server.pid == 0) {
		FILE *log = fopen(server.log_path, "w");

		if (!log)
			_exit(127);
		dup2(fileno(log), STDOUT_FILENO);
		dup2(fileno(log), STDERR_FILENO);
		execl(server_binary(), "inferq", "serve", "--listen", "127.0.0.1:0", "--data-dir",
		      data_dir, (char *)NULL);
		_exit(127);
	}
}

/* Polls the log for the bound port, then reads the admin key. */
static int await_listening(void)
{
	long deadline = now_ms() + START_TIMEOUT_MS;
	char line[1024], key_path[128];
	int port = 0;
	FILE *f;

	while (port == 0 && now_ms() < deadline) {
		f = fopen(server.log_path, "r");
		while (f && fgets(line, sizeof(line), f)) {
			const char *at = strstr(line, "listening on 127.0.0.1:");

			if (at)
				port = atoi(at + strlen("listening on 127.0.0.1:"));
		}
		if (f)
			fclose(f);
		if (port == 0 && waitpid(server.pid, NULL, WNOHANG) == server.pid)
			return -1;
		sleep_ms(10);
	}
	if (port == 0)
		return -1;
	snprintf(server.url, sizeof(server.url), "http://127.0.0.1:%d", port);
	snprintf(key_path, sizeof(key_path), "%s/data/admin.key", server.dir);
	f = fopen(key_path, "r");
	if (f && fgets(server.key, sizeof(server.key), f))
		server.key[strcspn(server.key, "\r\n")] = '\0';
	if (f)
		fclose(f);
	return server.key[0] ? 0 : -1;
}

static int remove_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	return remove(path);
}

static int group_setup(void **state)
{
	snprintf(server.dir, sizeof(server.dir), "/tmp/inferq-test-lib-admin-XXXXXX");
	if (!mkdtemp(server.dir))
		return -1;
	snprintf(server.log_path, sizeof(server.log_path), "%s/server.log", server.dir);
	unsetenv("INFERQ_URL");
	unsetenv("INFERQ_API_KEY");
	unsetenv("TOGETHER_API_KEY");
	spawn_server();
	return server.pid > 0 ? await_listening() : -1;
}

static int group_teardown(void **state)
{
	long deadline = now_ms() + STOP_TIMEOUT_MS;
	int status = 0;

	kill(server.pid, SIGTERM);
	while (waitpid(server.pid, &status, WNOHANG) == 0) {
		if (now_ms() > deadline) {
			kill(server.pid, SIGKILL);
			waitpid(server.pid, &status, 0);
			break;
		}
		sleep_ms(10);
	}
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		fprintf(stderr, "server did not exit 0 after SIGTERM; log kept in %s\n",
		        server.log_path);
		return -1;
	}
	nftw(server.dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
	return 0;
}

static inferq_client_t *connect_admin(void)
{
	inferq_client_t *c = NULL;

	assert_int_equal(inferq_client_new(&c), 0);
	assert_int_equal(inferq_client_set_url(c, server.url), 0);
	assert_int_equal(inferq_client_set_api_key(c, server.key), 0);
	return c;
}

static char *submit(inferq_client_t *c, const char *model)
{
	char *id = NULL;

	if (inferq_job_submit(c, model, "{\"n\":12345678901234567890}", NULL, 0, &id) != 0)
		fail_msg("submit failed: %s", inferq_client_last_error(c));
	return id;
}

static void jobs_pages_follow_cursor(void **state)
{
	inferq_client_t *c = connect_admin();
	inferq_job_page_t *page = NULL;
	char *ids[5];
	char *cursor = NULL;
	size_t seen = 0;

	for (int i = 0; i < 5; i++)
		ids[i] = submit(c, "lib/pages");
	for (int round = 0; round < 10; round++) {
		assert_int_equal(inferq_admin_jobs(c, "lib/pages", NULL, 2, cursor, &page), 0);
		free(cursor);
		cursor = page->next_cursor ? strdup(page->next_cursor) : NULL;
		for (size_t i = 0; i < page->count; i++) {
			const inferq_status_t *st = page->jobs[i];

			assert_true(seen < 5);
			assert_string_equal(st->request_id, ids[4 - seen]);
			assert_string_equal(st->model, "lib/pages");
			assert_int_equal(st->state, INFERQ_STATE_PENDING);
			assert_string_equal(st->inputs, "{\"n\":12345678901234567890}");
			assert_non_null(strstr(st->raw, st->request_id));
			assert_int_equal(st->raw[0], '{');
			seen++;
		}
		assert_non_null(strstr(page->raw, "\"data\""));
		inferq_job_page_free(page);
		page = NULL;
		if (!cursor)
			break;
	}
	assert_int_equal(seen, 5);
	for (int i = 0; i < 5; i++)
		inferq_free(ids[i]);
	inferq_client_free(c);
}

static void jobs_filters_and_errors(void **state)
{
	inferq_client_t *c = connect_admin();
	inferq_job_page_t *page = NULL;
	char *id = submit(c, "lib/filter");

	assert_int_equal(inferq_job_cancel(c, "lib/filter", id), 0);
	assert_int_equal(inferq_admin_jobs(c, "lib/filter", "canceled", 0, NULL, &page), 0);
	assert_int_equal(page->count, 1);
	assert_int_equal(page->jobs[0]->state, INFERQ_STATE_CANCELED);
	assert_null(page->next_cursor);
	inferq_job_page_free(page);

	assert_int_equal(inferq_admin_jobs(c, "lib/filter", "pending", 0, NULL, &page), 0);
	assert_int_equal(page->count, 0);
	inferq_job_page_free(page);

	page = NULL;
	assert_int_equal(inferq_admin_jobs(c, NULL, "finished", 0, NULL, &page), INFERQ_EINVAL);
	assert_null(page);
	assert_non_null(strstr(inferq_client_last_error(c), "finished"));
	assert_int_equal(inferq_admin_jobs(c, NULL, NULL, 0, "not-a-cursor", &page), INFERQ_EINVAL);
	assert_int_equal(inferq_admin_jobs(c, NULL, NULL, 1001, NULL, &page), INFERQ_ERANGE);
	assert_int_equal(inferq_admin_jobs(c, NULL, NULL, -1, NULL, &page), INFERQ_ERANGE);
	assert_null(page);
	inferq_free(id);
	inferq_client_free(c);
}

static void workers_listed(void **state)
{
	inferq_client_t *c = connect_admin();
	inferq_claim_t *claim = NULL;
	inferq_worker_t **workers = NULL;
	size_t count = 0, found = 0;
	char *id = submit(c, "lib/workers");

	assert_int_equal(inferq_job_claim(c, "lib/workers", 60, 0, "lib-worker", &claim), 0);
	assert_non_null(claim);
	assert_int_equal(inferq_admin_workers(c, &workers, &count), 0);
	for (size_t i = 0; i < count; i++) {
		if (strcmp(workers[i]->name, "lib-worker") != 0)
			continue;
		found++;
		assert_int_equal(workers[i]->current_count, 1);
		assert_non_null(strstr(workers[i]->current_jobs, id));
		assert_null(workers[i]->version);
		assert_non_null(workers[i]->first_seen);
		assert_int_equal(workers[i]->jobs_done, 0);
	}
	assert_int_equal(found, 1);
	inferq_worker_list_free(workers, count);

	assert_int_equal(inferq_claim_complete(c, claim, "{}"), 0);
	assert_int_equal(inferq_admin_workers(c, &workers, &count), 0);
	for (size_t i = 0; i < count; i++) {
		if (strcmp(workers[i]->name, "lib-worker") == 0) {
			assert_int_equal(workers[i]->jobs_done, 1);
			assert_int_equal(workers[i]->current_count, 0);
		}
	}
	inferq_worker_list_free(workers, count);
	inferq_claim_free(claim);
	inferq_free(id);
	inferq_client_free(c);
}

static void views_need_admin_key(void **state)
{
	inferq_client_t *admin = connect_admin();
	inferq_client_t *c = NULL;
	inferq_key_t *key = NULL;
	inferq_job_page_t *page = NULL;
	inferq_worker_t **workers = NULL;
	size_t count = 7;
	const char *const models[] = {"*"};

	assert_int_equal(inferq_keys_create(admin, "lib-client", "client", models, 1, NULL, &key),
	                 0);
	assert_int_equal(inferq_client_new(&c), 0);
	assert_int_equal(inferq_client_set_url(c, server.url), 0);
	assert_int_equal(inferq_client_set_api_key(c, key->key), 0);
	assert_int_equal(inferq_admin_jobs(c, NULL, NULL, 0, NULL, &page), INFERQ_EAUTH);
	assert_int_equal(inferq_client_last_status(c), 403);
	assert_int_equal(inferq_admin_workers(c, &workers, &count), INFERQ_EAUTH);
	assert_null(workers);
	assert_int_equal(count, 0);
	inferq_key_free(key);
	inferq_client_free(c);
	inferq_client_free(admin);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(jobs_pages_follow_cursor),
	    cmocka_unit_test(jobs_filters_and_errors),
	    cmocka_unit_test(workers_listed),
	    cmocka_unit_test(views_need_admin_key),
	};

	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
