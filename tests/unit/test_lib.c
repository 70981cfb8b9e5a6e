/*
 * Tests of libinferq. Most run against the real server binary, started on
 * 127.0.0.1 with port 0 and a fresh data dir (INFERQ_BIN names it, else
 * $BUILD/inferq, else build/inferq). The retry rules are tested against a
 * scripted fake server on a thread, which can drop a connection after
 * reading a request: the real server cannot be made to do that on demand.
 * Each test uses its own model, so tests sharing the server cannot see each
 * other's jobs.
 *
 * SPDX-License-Identifier: MIT
 */
#include <arpa/inet.h>
#include <ftw.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "inferq.h"

#define START_TIMEOUT_MS 10000
#define STOP_TIMEOUT_MS  10000

typedef struct {
	char dir[64]; /* temp dir: data/ and server.log inside */
	char log_path[96];
	char url[64];
	char key[256];
	pid_t pid;
	int port;
	int auth_none; /* start with --auth none: for a server whose key the client cannot know */
} server_t;

static server_t server;

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

/* Returns a port on 127.0.0.1 that was free a moment ago. */
static int free_port(void)
{
	struct sockaddr_in addr = {.sin_family = AF_INET};
	socklen_t len = sizeof(addr);
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	int port;

	addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(fd, (struct sockaddr *)&addr, sizeof(addr)), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&addr, &len), 0);
	port = ntohs(addr.sin_port);
	close(fd);
	return port;
}

/* Forks the server on port (0: any), after delay_ms; its output goes to the log file. */
static void spawn_server(server_t *s, int port, long delay_ms)
{
	char data_dir[128], listen_arg[64];

	snprintf(data_dir, sizeof(data_dir), "%s/data", s->dir);
	snprintf(listen_arg, sizeof(listen_arg), "127.0.0.1:%d", port);
	mkdir(data_dir, 0700);
	s->pid = fork();
	assert_true(s->pid >= 0);
	if (s->pid == 0) {
		FILE *log = fopen(s->log_path, "w");

		if (!log)
			_exit(127);
		dup2(fileno(log), STDOUT_FILENO);
		dup2(fileno(log), STDERR_FILENO);
		if (delay_ms > 0)
			sleep_ms(delay_ms);
		execl(server_binary(), "inferq", "serve", "--listen", listen_arg, "--data-dir",
		      data_dir, "--auth", s->auth_none ? "none" : "keys", (char *)NULL);
		_exit(127);
	}
}

/* Polls the log for "listening on 127.0.0.1:PORT" and reads the admin key. */
static int await_listening(server_t *s)
{
	long deadline = now_ms() + START_TIMEOUT_MS;
	char line[1024], key_path[128];
	FILE *f;

	while (now_ms() < deadline) {
		const char *at;

		f = fopen(s->log_path, "r");
		while (f && fgets(line, sizeof(line), f)) {
			at = strstr(line, "listening on 127.0.0.1:");
			if (at) {
				s->port = atoi(at + strlen("listening on 127.0.0.1:"));
				break;
			}
		}
		if (f)
			fclose(f);
		if (s->port > 0)
			break;
		if (waitpid(s->pid, NULL, WNOHANG) == s->pid) {
			fprintf(stderr, "server %s exited at start; see %s\n", server_binary(),
			        s->log_path);
			return -1;
		}
		sleep_ms(10);
	}
	if (s->port <= 0) {
		fprintf(stderr, "server did not log its port within %d ms\n", START_TIMEOUT_MS);
		return -1;
	}
	snprintf(s->url, sizeof(s->url), "http://127.0.0.1:%d", s->port);
	snprintf(key_path, sizeof(key_path), "%s/data/admin.key", s->dir);
	f = fopen(key_path, "r");
	if (f && fgets(s->key, sizeof(s->key), f))
		s->key[strcspn(s->key, "\r\n")] = '\0';
	if (f)
		fclose(f);
	return 0;
}

static int stop_server(server_t *s)
{
	long deadline = now_ms() + STOP_TIMEOUT_MS;
	int status = 0;

	if (s->pid <= 0)
		return 0;
	kill(s->pid, SIGTERM);
	while (waitpid(s->pid, &status, WNOHANG) == 0) {
		if (now_ms() > deadline) {
			kill(s->pid, SIGKILL);
			waitpid(s->pid, &status, 0);
			break;
		}
		sleep_ms(10);
	}
	s->pid = 0;
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

static int remove_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	return remove(path);
}

static void make_temp_dir(server_t *s)
{
	snprintf(s->dir, sizeof(s->dir), "/tmp/inferq-test-lib-XXXXXX");
	assert_non_null(mkdtemp(s->dir));
	snprintf(s->log_path, sizeof(s->log_path), "%s/server.log", s->dir);
}

static int group_setup(void **state)
{
	memset(&server, 0, sizeof(server));
	snprintf(server.dir, sizeof(server.dir), "/tmp/inferq-test-lib-XXXXXX");
	if (!mkdtemp(server.dir))
		return -1;
	snprintf(server.log_path, sizeof(server.log_path), "%s/server.log", server.dir);
	unsetenv("INFERQ_URL");
	unsetenv("INFERQ_API_KEY");
	unsetenv("TOGETHER_API_KEY");
	spawn_server(&server, 0, 0);
	return await_listening(&server);
}

static int group_teardown(void **state)
{
	int status = stop_server(&server);

	if (status != 0)
		fprintf(stderr, "server exited with status %d after SIGTERM; log kept in %s\n",
		        status, server.log_path);
	else
		nftw(server.dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
	return status == 0 ? 0 : -1;
}

static inferq_client_t *connect_to(const char *url)
{
	inferq_client_t *c = NULL;

	assert_int_equal(inferq_client_new(&c), 0);
	assert_int_equal(inferq_client_set_url(c, url), 0);
	if (server.key[0])
		assert_int_equal(inferq_client_set_api_key(c, server.key), 0);
	return c;
}

static char *submit(inferq_client_t *c, const char *model, const char *payload)
{
	char *id = NULL;
	int rc = inferq_job_submit(c, model, payload, NULL, 0, &id);

	if (rc != 0)
		fail_msg("submit to %s failed: %d %s", model, rc, inferq_client_last_error(c));
	assert_non_null(id);
	assert_int_equal(strlen(id), 36);
	return id;
}

static inferq_claim_t *claim(inferq_client_t *c, const char *model)
{
	inferq_claim_t *cl = NULL;
	int rc = inferq_job_claim(c, model, 60, 0, "test-worker", &cl);

	if (rc != 0)
		fail_msg("claim on %s failed: %d %s", model, rc, inferq_client_last_error(c));
	assert_non_null(cl);
	return cl;
}

static inferq_status_t *status_of(inferq_client_t *c, const char *model, const char *id)
{
	inferq_status_t *st = NULL;
	int rc = inferq_job_status(c, model, id, &st);

	if (rc != 0)
		fail_msg("status of %s failed: %d %s", id, rc, inferq_client_last_error(c));
	return st;
}

/* --- Tests against the real server -------------------------------------- */

static void submit_keeps_raw_payload(void **state)
{
	/* Numbers jansson cannot hold must come back as the same text. */
	const char *payload = "{\"big\": 123456789012345678901234567890, \"x\": 1e400, \"f\": 1.0, "
	                      "\"s\": \"caf\\u00e9 \\\"q\\\"\"}";
	const char *info = "{\"tag\":[1,2,{\"n\":null}]}";
	inferq_client_t *c = connect_to(server.url);
	inferq_status_t *st;
	char *id = NULL;

	assert_int_equal(inferq_job_submit(c, "lib/raw", payload, info, 7, &id), 0);
	assert_int_equal(inferq_client_last_status(c), 200);
	assert_non_null(strstr(inferq_client_last_response(c), id));
	st = status_of(c, "lib/raw", id);
	assert_string_equal(st->request_id, id);
	assert_string_equal(st->model, "lib/raw");
	assert_string_equal(st->status, "pending");
	assert_int_equal(st->state, INFERQ_STATE_PENDING);
	assert_int_equal(st->priority, 7);
	assert_int_equal(st->retries, 0);
	assert_string_equal(st->inputs, payload);
	assert_string_equal(st->info, info);
	assert_null(st->outputs);
	assert_null(st->error);
	assert_null(st->done_at);
	assert_non_null(st->created_at);
	assert_int_equal(strlen(st->created_at), 20);
	assert_string_equal(st->raw, inferq_client_last_response(c));
	inferq_status_free(st);
	inferq_free(id);
	inferq_client_free(c);
}

static void claim_heartbeat_complete(void **state)
{
	inferq_client_t *c = connect_to(server.url);
	inferq_claim_t *cl;
	inferq_status_t *st;
	char *id = submit(c, "lib/complete", "{\"prompt\":\"hi\"}");
	char *first_lease;

	cl = claim(c, "lib/complete");
	assert_string_equal(inferq_claim_request_id(cl), id);
	assert_string_equal(inferq_claim_model(cl), "lib/complete");
	assert_string_equal(inferq_claim_payload(cl), "{\"prompt\":\"hi\"}");
	assert_null(inferq_claim_info(cl));
	assert_int_equal(inferq_claim_retries(cl), 0);
	assert_int_equal(inferq_claim_priority(cl), 0);
	assert_int_equal(strlen(inferq_claim_id(cl)), 36);
	first_lease = strdup(inferq_claim_lease_expires_at(cl));

	assert_int_equal(inferq_claim_heartbeat(c, cl, "{\"progress\":0.5}"), 0);
	assert_non_null(inferq_claim_lease_expires_at(cl));
	assert_true(strcmp(inferq_claim_lease_expires_at(cl), first_lease) >= 0);
	st = status_of(c, "lib/complete", id);
	assert_int_equal(st->state, INFERQ_STATE_RUNNING);
	assert_string_equal(st->info, "{\"progress\":0.5}");
	assert_non_null(st->claimed_at);
	inferq_status_free(st);

	assert_int_equal(inferq_claim_complete(c, cl, "{\"y\": 1e400}"), 0);
	st = status_of(c, "lib/complete", id);
	assert_int_equal(st->state, INFERQ_STATE_DONE);
	assert_string_equal(st->outputs, "{\"y\": 1e400}");
	assert_non_null(st->done_at);
	inferq_status_free(st);

	/* The job is terminal now: a second complete is a conflict. */
	assert_int_equal(inferq_claim_complete(c, cl, "{}"), INFERQ_ECONFLICT);
	assert_int_equal(inferq_client_last_status(c), 409);
	assert_true(strlen(inferq_client_last_error(c)) > 0);
	free(first_lease);
	inferq_claim_free(cl);
	inferq_free(id);
	inferq_client_free(c);
}

static void claim_fail_sets_error(void **state)
{
	inferq_client_t *c = connect_to(server.url);
	char *id = submit(c, "lib/fail", "{}");
	inferq_claim_t *cl = claim(c, "lib/fail");
	inferq_status_t *st;

	assert_int_equal(inferq_claim_fail(c, cl, "model crashed: \"oom\"\n"), 0);
	st = status_of(c, "lib/fail", id);
	assert_int_equal(st->state, INFERQ_STATE_FAILED);
	assert_string_equal(st->error, "model crashed: \"oom\"\n");
	assert_null(st->outputs);
	inferq_status_free(st);
	inferq_claim_free(cl);
	inferq_free(id);
	inferq_client_free(c);
}

static void release_then_stale_claim(void **state)
{
	inferq_client_t *c = connect_to(server.url);
	char *id = submit(c, "lib/release", "{}");
	inferq_claim_t *first = claim(c, "lib/release");
	inferq_claim_t *second;
	inferq_status_t *st;

	assert_int_equal(inferq_claim_release(c, first), 0);
	st = status_of(c, "lib/release", id);
	assert_int_equal(st->state, INFERQ_STATE_PENDING);
	assert_int_equal(st->retries, 0);
	inferq_status_free(st);

	/* A new claim fences the old one off. */
	second = claim(c, "lib/release");
	assert_string_equal(inferq_claim_request_id(second), id);
	assert_string_not_equal(inferq_claim_id(second), inferq_claim_id(first));
	assert_int_equal(inferq_claim_complete(c, first, "{}"), INFERQ_ECONFLICT);
	assert_int_equal(inferq_claim_heartbeat(c, first, NULL), INFERQ_ECONFLICT);
	assert_int_equal(inferq_claim_complete(c, second, "{\"ok\":true}"), 0);
	inferq_claim_free(first);
	inferq_claim_free(second);
	inferq_free(id);
	inferq_client_free(c);
}

static void claim_empty_queue(void **state)
{
	inferq_client_t *c = connect_to(server.url);
	inferq_claim_t *cl = (inferq_claim_t *)1;
	long start = now_ms();

	assert_int_equal(inferq_job_claim(c, "lib/empty", 0, 0, NULL, &cl), 0);
	assert_null(cl);
	assert_int_equal(inferq_client_last_status(c), 204);

	/* A claim with a wait returns after about that long. */
	start = now_ms();
	assert_int_equal(inferq_job_claim(c, "lib/empty", 0, 0.3, NULL, &cl), 0);
	assert_null(cl);
	assert_true(now_ms() - start >= 250);
	assert_int_equal(inferq_job_claim(c, "lib/empty", 0, 61, NULL, &cl), INFERQ_ERANGE);
	assert_int_equal(inferq_job_claim(c, "lib/empty", 86401, 0, NULL, &cl), INFERQ_ERANGE);
	inferq_client_free(c);
}

static void cancel_and_conflict(void **state)
{
	inferq_client_t *c = connect_to(server.url);
	char *id = submit(c, "lib/cancel", "{}");
	inferq_status_t *st;

	assert_int_equal(inferq_job_cancel(c, "lib/cancel", id), 0);
	assert_non_null(strstr(inferq_client_last_response(c), "\"canceled\""));
	st = status_of(c, "lib/cancel", id);
	assert_int_equal(st->state, INFERQ_STATE_CANCELED);
	inferq_status_free(st);

	/* A first attempt that meets 409 is a real conflict, even with the wanted status. */
	assert_int_equal(inferq_job_cancel(c, "lib/cancel", id), INFERQ_ECONFLICT);
	assert_int_equal(inferq_client_last_status(c), 409);
	assert_non_null(strstr(inferq_client_last_response(c), "\"canceled\""));
	inferq_free(id);
	inferq_client_free(c);
}

static void unknown_job_not_found(void **state)
{
	inferq_client_t *c = connect_to(server.url);
	const char *unknown = "00000000-0001-7000-8000-000000000001";
	inferq_status_t *st = NULL;

	assert_int_equal(inferq_job_status(c, "lib/unknown", unknown, &st), INFERQ_ENOTFOUND);
	assert_null(st);
	assert_int_equal(inferq_client_last_status(c), 404);
	assert_true(strlen(inferq_client_last_error(c)) > 0);
	assert_int_equal(inferq_job_cancel(c, "lib/unknown", unknown), INFERQ_ENOTFOUND);
	inferq_client_free(c);
}

static void clear_and_metrics(void **state)
{
	inferq_client_t *c = connect_to(server.url);
	int64_t waiting = -1, running = -1, total = -1, canceled = -1;
	inferq_claim_t *cl;

	assert_int_equal(inferq_queue_metrics(c, "lib/metrics", &waiting, &running, &total), 0);
	assert_int_equal(waiting, 0);
	assert_int_equal(running, 0);
	assert_int_equal(total, 0);
	for (int i = 0; i < 3; i++)
		inferq_free(submit(c, "lib/metrics", "{}"));
	cl = claim(c, "lib/metrics");
	assert_int_equal(inferq_queue_metrics(c, "lib/metrics", &waiting, &running, &total), 0);
	assert_int_equal(waiting, 2);
	assert_int_equal(running, 1);
	assert_int_equal(total, 3);

	assert_int_equal(inferq_queue_clear(c, "lib/metrics", &canceled), 0);
	assert_int_equal(canceled, 2);
	assert_int_equal(inferq_queue_metrics(c, "lib/metrics", &waiting, &running, &total), 0);
	assert_int_equal(waiting, 0);
	assert_int_equal(running, 1);
	assert_int_equal(total, 1);
	assert_int_equal(inferq_queue_clear(c, "lib/metrics", NULL), 0);
	inferq_claim_free(cl);
	inferq_client_free(c);
}

/* Worker thread for wait_until_done: claims with a wait, reports progress, completes. */
static void *complete_later(void *arg)
{
	inferq_client_t *c = connect_to(server.url);
	inferq_claim_t *cl = NULL;
	long rc;

	(void)arg;
	rc = inferq_job_claim(c, "lib/wait", 30, 10, "waiter", &cl);
	if (rc == 0 && cl) {
		sleep_ms(300);
		rc = inferq_claim_heartbeat(c, cl, "{\"progress\":0.5}");
		sleep_ms(300);
		if (rc == 0)
			rc = inferq_claim_complete(c, cl, "{\"answer\":42}");
	} else if (rc == 0) {
		rc = INFERQ_ETIMEDOUT;
	}
	inferq_claim_free(cl);
	inferq_client_free(c);
	return (void *)rc;
}

static void count_poll(const inferq_status_t *st, void *user)
{
	int *polls = user;

	assert_non_null(st->status);
	(*polls)++;
}

static void wait_until_done(void **state)
{
	inferq_client_t *c = connect_to(server.url);
	inferq_status_t *st = NULL;
	pthread_t worker;
	void *worker_rc;
	int polls = 0;
	char *id = submit(c, "lib/wait", "{}");

	/* No worker has claimed the job yet, so a short wait times out with the last status. */
	assert_int_equal(inferq_job_wait(c, "lib/wait", id, 250, count_poll, &polls, &st),
	                 INFERQ_ETIMEDOUT);
	assert_non_null(st);
	assert_int_equal(st->state, INFERQ_STATE_PENDING);
	assert_true(polls >= 2);
	assert_non_null(strstr(inferq_client_last_error(c), id));
	inferq_status_free(st);

	assert_int_equal(pthread_create(&worker, NULL, complete_later, NULL), 0);
	polls = 0;
	assert_int_equal(inferq_job_wait(c, "lib/wait", id, 20000, count_poll, &polls, &st), 0);
	assert_int_equal(pthread_join(worker, &worker_rc), 0);
	assert_int_equal((long)worker_rc, 0);
	assert_int_equal(st->state, INFERQ_STATE_DONE);
	assert_string_equal(st->outputs, "{\"answer\":42}");
	assert_true(polls >= 2);
	inferq_status_free(st);
	inferq_free(id);
	inferq_client_free(c);
}

static void invalid_json_rejected_locally(void **state)
{
	inferq_client_t *c = connect_to(server.url);
	char *id = NULL;

	assert_int_equal(inferq_job_submit(c, "lib/bad", "{\"a\":1", NULL, 0, &id), INFERQ_EINVAL);
	assert_null(id);
	assert_int_equal(inferq_client_last_status(c), 0);
	assert_non_null(strstr(inferq_client_last_error(c), "payload"));

	/* A payload that closes the body's object and adds a field is not one value. */
	assert_int_equal(inferq_job_submit(c, "lib/bad", "{}, \"priority\": 9", NULL, 0, &id),
	                 INFERQ_EINVAL);
	assert_int_equal(inferq_job_submit(c, "lib/bad", "[1]", NULL, 0, &id), INFERQ_EINVAL);
	assert_non_null(strstr(inferq_client_last_error(c), "JSON object"));
	assert_int_equal(inferq_job_submit(c, "lib/bad", "{}", "nope", 0, &id), INFERQ_EINVAL);
	assert_non_null(strstr(inferq_client_last_error(c), "info"));
	assert_int_equal(inferq_job_submit(c, "", "{}", NULL, 0, &id), INFERQ_EINVAL);
	inferq_client_free(c);
}

static void server_rejection_message(void **state)
{
	inferq_client_t *c = connect_to(server.url);
	char *id = NULL;

	assert_int_equal(inferq_job_submit(c, "bad model!", "{}", NULL, 0, &id), INFERQ_EINVAL);
	assert_int_equal(inferq_client_last_status(c), 400);
	assert_non_null(strstr(inferq_client_last_error(c), "model"));
	assert_non_null(strstr(inferq_client_last_response(c), "invalid_request_error"));
	inferq_client_free(c);
}

static void connection_refused(void **state)
{
	char url[64];
	inferq_client_t *c;
	inferq_status_t *st = NULL;
	long start;

	snprintf(url, sizeof(url), "http://127.0.0.1:%d", free_port());
	c = connect_to(url);
	assert_int_equal(inferq_client_set_retries(c, 3, 50), 0);
	start = now_ms();
	assert_int_equal(inferq_job_status(c, "lib/refused", "x", &st), INFERQ_ECONNECT);
	assert_true(now_ms() - start >= 150); /* pauses of 50 and 100 ms */
	assert_null(st);
	assert_int_equal(inferq_client_last_status(c), 0);
	assert_non_null(strstr(inferq_client_last_error(c), url));
	assert_non_null(strstr(inferq_client_last_error(c), "3 attempts"));
	inferq_client_free(c);
}

static void retries_until_server_starts(void **state)
{
	server_t late = {0};
	inferq_client_t *c;
	inferq_status_t *st;
	char url[64];
	char *id = NULL;
	long start;
	int rc;

	make_temp_dir(&late);
	late.port = free_port();
	snprintf(url, sizeof(url), "http://127.0.0.1:%d", late.port);
	/* Its admin key does not exist before it starts, so it runs without keys. */
	late.auth_none = 1;
	spawn_server(&late, late.port, 500);
	c = connect_to(url);
	assert_int_equal(inferq_client_set_retries(c, 10, 100), 0);

	start = now_ms();
	rc = inferq_job_submit(c, "lib/late", "{}", NULL, 0, &id);
	if (rc != 0)
		fail_msg("submit to a server starting late failed: %s",
		         inferq_client_last_error(c));
	assert_true(now_ms() - start >= 400);
	st = status_of(c, "lib/late", id);
	assert_int_equal(st->state, INFERQ_STATE_PENDING);
	inferq_status_free(st);
	inferq_free(id);
	inferq_client_free(c);
	assert_int_equal(stop_server(&late), 0);
	nftw(late.dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* --- Options ------------------------------------------------------------ */

static void options_and_key_file(void **state)
{
	char dir[64] = "/tmp/inferq-test-key-XXXXXX", path[96], missing[96];
	inferq_client_t *c = NULL;
	FILE *f;

	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/key", dir);
	snprintf(missing, sizeof(missing), "%s/absent", dir);
	f = fopen(path, "w");
	fputs("secret-from-file\nsecond line\n", f);
	fclose(f);

	assert_int_equal(inferq_client_new(&c), 0);
	assert_int_equal(inferq_client_set_url(c, "ftp://x"), INFERQ_EINVAL);
	assert_non_null(strstr(inferq_client_last_error(c), "ftp://x"));
	assert_int_equal(inferq_client_set_url(c, "http://127.0.0.1:1/v1/"), 0);
	assert_int_equal(inferq_client_set_key_file(c, missing), INFERQ_ENOTFOUND);
	assert_non_null(strstr(inferq_client_last_error(c), missing));
	assert_int_equal(inferq_client_set_key_file(c, path), 0);
	assert_int_equal(inferq_client_set_api_key(c, "bad\nkey"), INFERQ_EINVAL);
	assert_int_equal(inferq_client_set_retries(c, 0, 100), INFERQ_ERANGE);
	assert_int_equal(inferq_client_set_retries(c, 21, 100), INFERQ_ERANGE);
	inferq_client_free(c);

	/* The environment wins over a key file, which is then not even opened. */
	setenv("TOGETHER_API_KEY", "from-env", 1);
	assert_int_equal(inferq_client_new(&c), 0);
	assert_int_equal(inferq_client_set_key_file(c, missing), 0);
	inferq_client_free(c);
	unsetenv("TOGETHER_API_KEY");

	setenv("INFERQ_URL", "localhost:8080", 1);
	c = (inferq_client_t *)1;
	assert_int_equal(inferq_client_new(&c), INFERQ_EINVAL);
	assert_null(c);
	unsetenv("INFERQ_URL");
	nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/*
 * The local JSON check, seen through submit: with nothing listening and one
 * attempt, valid JSON gets as far as INFERQ_ECONNECT and invalid JSON stops
 * at INFERQ_EINVAL before any request.
 */
static void payload_json_check(void **state)
{
	static const char *valid[] = {
	    "{}",
	    " {\"a\":[1,-0.5e+3,0,1E2,true,false,null,\"\\u00e9\\n\\\"\"]}\n",
	    "{\"a\":{\"b\":{}},\"\":\"\"}",
	    "{\"big\":123456789012345678901234567890,\"x\":1e400}",
	};
	static const char *invalid[] = {
	    "",
	    "{",
	    "{\"a\"}",
	    "{\"a\":}",
	    "{\"a\":1,}",
	    "{\"a\":01}",
	    "{\"a\":1.}",
	    "{\"a\":.5}",
	    "{\"a\":-}",
	    "{\"a\":\"\\x\"}",
	    "{\"a\":\"\\u12\"}",
	    "{\"a\":\"\t\"}",
	    "{} {}",
	    "{\"a\":tru}",
	    "{'a':1}",
	    "{\"a\":1} x",
	    "{\"a\":\"open}",
	};
	char url[64], deep[1100];
	inferq_client_t *c;
	char *id = NULL;
	size_t i;

	snprintf(url, sizeof(url), "http://127.0.0.1:%d", free_port());
	c = connect_to(url);
	assert_int_equal(inferq_client_set_retries(c, 1, 0), 0);
	for (i = 0; i < sizeof(valid) / sizeof(valid[0]); i++) {
		int rc = inferq_job_submit(c, "lib/json", valid[i], NULL, 0, &id);

		if (rc != INFERQ_ECONNECT)
			fail_msg("valid payload %s rejected: %s", valid[i],
			         inferq_client_last_error(c));
	}
	for (i = 0; i < sizeof(invalid) / sizeof(invalid[0]); i++) {
		int rc = inferq_job_submit(c, "lib/json", invalid[i], NULL, 0, &id);

		if (rc != INFERQ_EINVAL)
			fail_msg("invalid payload %s returned %d, expected INFERQ_EINVAL",
			         invalid[i], rc);
		assert_int_equal(inferq_client_last_status(c), 0);
	}

	/* 512 levels of nesting pass the check, 513 do not. */
	for (int levels = 512; levels <= 513; levels++) {
		size_t n = 0;
		int rc;

		n += (size_t)snprintf(deep, sizeof(deep), "{\"a\":");
		for (i = 1; i < (size_t)levels; i++)
			deep[n++] = '[';
		for (i = 1; i < (size_t)levels; i++)
			deep[n++] = ']';
		deep[n++] = '}';
		deep[n] = '\0';
		rc = inferq_job_submit(c, "lib/json", deep, NULL, 0, &id);
		assert_int_equal(rc, levels == 512 ? INFERQ_ECONNECT : INFERQ_EINVAL);
	}
	assert_non_null(strstr(inferq_client_last_error(c), "nesting deeper than 512"));
	inferq_client_free(c);
}

/* --- Retry rules against a scripted fake server ------------------------- */

#define FAKE_MAX 8

/* One step of the fake server's script: status NULL drops the connection after the request. */
typedef struct {
	const char *status; /* "200 OK" */
	const char *body;
} step_t;

/* A one-thread HTTP server that plays a script, one connection per step. */
typedef struct {
	int fd;
	int port;
	int steps;
	step_t script[FAKE_MAX];
	char requests[FAKE_MAX][2048];
	int served;
	pthread_t thread;
} fake_t;

/* Reads one request (headers and Content-Length body) into buf; returns its length. */
static size_t read_request(int fd, char *buf, size_t cap)
{
	size_t len = 0;
	long deadline = now_ms() + 5000;

	while (len + 1 < cap && now_ms() < deadline) {
		struct pollfd p = {fd, POLLIN, 0};
		const char *head_end, *cl;
		ssize_t n;

		if (poll(&p, 1, 100) <= 0)
			continue;
		n = read(fd, buf + len, cap - 1 - len);
		if (n <= 0)
			break;
		len += (size_t)n;
		buf[len] = '\0';
		head_end = strstr(buf, "\r\n\r\n");
		if (!head_end)
			continue;
		cl = strcasestr(buf, "Content-Length:");
		if (!cl || (size_t)(head_end + 4 - buf) + strtoul(cl + 15, NULL, 10) <= len)
			break;
	}
	buf[len] = '\0';
	return len;
}

static void *fake_run(void *arg)
{
	fake_t *f = arg;

	for (int i = 0; i < f->steps; i++) {
		struct pollfd p = {f->fd, POLLIN, 0};
		char head[256];
		int conn;

		if (poll(&p, 1, 5000) <= 0)
			break;
		conn = accept(f->fd, NULL, NULL);
		if (conn < 0)
			break;
		read_request(conn, f->requests[i], sizeof(f->requests[i]));
		f->served++;
		if (f->script[i].status) {
			snprintf(head, sizeof(head),
			         "HTTP/1.1 %s\r\nContent-Type: application/json\r\n"
			         "Connection: close\r\nContent-Length: %zu\r\n\r\n",
			         f->script[i].status, strlen(f->script[i].body));
			(void)!write(conn, head, strlen(head));
			(void)!write(conn, f->script[i].body, strlen(f->script[i].body));
		}
		close(conn);
	}
	return NULL;
}

static void fake_start(fake_t *f)
{
	struct sockaddr_in addr = {.sin_family = AF_INET};
	socklen_t len = sizeof(addr);

	addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	f->fd = socket(AF_INET, SOCK_STREAM, 0);
	assert_int_equal(bind(f->fd, (struct sockaddr *)&addr, sizeof(addr)), 0);
	assert_int_equal(listen(f->fd, 8), 0);
	assert_int_equal(getsockname(f->fd, (struct sockaddr *)&addr, &len), 0);
	f->port = ntohs(addr.sin_port);
	assert_int_equal(pthread_create(&f->thread, NULL, fake_run, f), 0);
}

static inferq_client_t *fake_client(fake_t *f)
{
	inferq_client_t *c = NULL;
	char url[64];

	snprintf(url, sizeof(url), "http://127.0.0.1:%d", f->port);
	assert_int_equal(inferq_client_new(&c), 0);
	assert_int_equal(inferq_client_set_url(c, url), 0);
	assert_int_equal(inferq_client_set_retries(c, 4, 20), 0);
	return c;
}

static void fake_stop(fake_t *f)
{
	pthread_join(f->thread, NULL);
	close(f->fd);
}

static const char *header_value(const char *request, const char *name, char *out, size_t cap)
{
	const char *at = strcasestr(request, name);
	size_t n;

	if (!at)
		return NULL;
	at += strlen(name);
	while (*at == ' ' || *at == ':')
		at++;
	n = strcspn(at, "\r\n");
	snprintf(out, cap, "%.*s", (int)(n < cap ? n : cap - 1), at);
	return out;
}

static const step_t drop = {NULL, NULL};

static const step_t submit_ok = {"200 OK",
                                 "{\"requestId\":\"01938f6e-8a1c-7cc2-9b1e-3f0a5e0c2d11\","
                                 "\"request_id\":\"01938f6e-8a1c-7cc2-9b1e-3f0a5e0c2d11\"}"};

static const step_t claim_ok = {
    "200 OK", "{\"request_id\":\"01938f6e-8a1c-7cc2-9b1e-3f0a5e0c2d11\",\"model\":\"m\","
              "\"payload\":{\"a\":1},\"priority\":0,\"retries\":1,"
              "\"claim_id\":\"11111111-2222-4333-8444-555555555555\","
              "\"claimed_at\":\"2026-02-07T10:30:00Z\","
              "\"lease_expires_at\":\"2026-02-07T10:35:00Z\"}"};

static const step_t conflict_done = {"409 Conflict",
                                     "{\"code\":\"invalid_state\",\"message\":\"job is done\","
                                     "\"type\":\"conflict_error\",\"status\":\"done\"}"};

static const step_t busy = {"503 Service Unavailable",
                            "{\"code\":\"store_unavailable\",\"message\":\"disk full\","
                            "\"type\":\"server_error\"}"};

static void submit_retry_same_key(void **state)
{
	fake_t f = {.steps = 2, .script = {drop, submit_ok}};
	char key1[64], key2[64];
	inferq_client_t *c;
	char *id = NULL;

	fake_start(&f);
	c = fake_client(&f);
	assert_int_equal(inferq_job_submit(c, "m", "{}", NULL, 0, &id), 0);
	fake_stop(&f);
	assert_string_equal(id, "01938f6e-8a1c-7cc2-9b1e-3f0a5e0c2d11");
	assert_int_equal(f.served, 2);
	assert_non_null(header_value(f.requests[0], "Idempotency-Key", key1, sizeof(key1)));
	assert_non_null(header_value(f.requests[1], "Idempotency-Key", key2, sizeof(key2)));
	assert_int_equal(strlen(key1), 36);
	assert_string_equal(key1, key2);
	inferq_free(id);
	inferq_client_free(c);
}

static void complete_retry_conflict_is_success(void **state)
{
	fake_t f = {.steps = 3, .script = {claim_ok, drop, conflict_done}};
	inferq_claim_t *cl = NULL;
	inferq_client_t *c;

	fake_start(&f);
	c = fake_client(&f);
	assert_int_equal(inferq_job_claim(c, "m", 0, 0, NULL, &cl), 0);
	assert_non_null(cl);
	assert_int_equal(inferq_claim_retries(cl), 1);
	assert_string_equal(inferq_claim_payload(cl), "{\"a\":1}");

	/* The first complete is dropped after sending; the repeat meets 409 done. */
	assert_int_equal(inferq_claim_complete(c, cl, "{}"), 0);
	fake_stop(&f);
	assert_int_equal(f.served, 3);
	assert_non_null(
	    strstr(f.requests[1], "\"claim_id\":\"11111111-2222-4333-8444-555555555555\""));
	assert_non_null(strstr(f.requests[2], "/v1/queue/complete"));
	inferq_claim_free(cl);
	inferq_client_free(c);
}

static void fail_conflict_done_is_error(void **state)
{
	fake_t f = {.steps = 3, .script = {claim_ok, drop, conflict_done}};
	inferq_claim_t *cl = NULL;
	inferq_client_t *c;

	/* fail wants "failed"; a job that someone else completed stays a conflict. */
	fake_start(&f);
	c = fake_client(&f);
	assert_int_equal(inferq_job_claim(c, "m", 0, 0, NULL, &cl), 0);
	assert_int_equal(inferq_claim_fail(c, cl, "boom"), INFERQ_ECONFLICT);
	assert_string_equal(inferq_client_last_error(c), "job is done");
	fake_stop(&f);
	inferq_claim_free(cl);
	inferq_client_free(c);
}

static void claim_not_repeated_after_send(void **state)
{
	fake_t f = {.steps = 1, .script = {drop}};
	inferq_claim_t *cl = NULL;
	inferq_client_t *c;

	fake_start(&f);
	c = fake_client(&f);
	assert_int_equal(inferq_job_claim(c, "m", 0, 0, NULL, &cl), INFERQ_ECONNECT);
	assert_null(cl);
	assert_non_null(strstr(inferq_client_last_error(c), "1 attempt"));
	fake_stop(&f);
	assert_int_equal(f.served, 1);
	inferq_client_free(c);
}

static void busy_server_retried(void **state)
{
	fake_t f = {.steps = 2, .script = {busy, submit_ok}};
	inferq_client_t *c;
	char *id = NULL;

	fake_start(&f);
	c = fake_client(&f);
	assert_int_equal(inferq_job_submit(c, "m", "{}", NULL, 0, &id), 0);
	fake_stop(&f);
	assert_int_equal(f.served, 2);
	inferq_free(id);
	inferq_client_free(c);
}

int main(void)
{
	const struct CMUnitTest with_server[] = {
	    cmocka_unit_test(submit_keeps_raw_payload),
	    cmocka_unit_test(claim_heartbeat_complete),
	    cmocka_unit_test(claim_fail_sets_error),
	    cmocka_unit_test(release_then_stale_claim),
	    cmocka_unit_test(claim_empty_queue),
	    cmocka_unit_test(cancel_and_conflict),
	    cmocka_unit_test(unknown_job_not_found),
	    cmocka_unit_test(clear_and_metrics),
	    cmocka_unit_test(wait_until_done),
	    cmocka_unit_test(invalid_json_rejected_locally),
	    cmocka_unit_test(server_rejection_message),
	    cmocka_unit_test(connection_refused),
	    cmocka_unit_test(retries_until_server_starts),
	};
	const struct CMUnitTest without_server[] = {
	    cmocka_unit_test(options_and_key_file),
	    cmocka_unit_test(payload_json_check),
	    cmocka_unit_test(submit_retry_same_key),
	    cmocka_unit_test(complete_retry_conflict_is_success),
	    cmocka_unit_test(fail_conflict_done_is_error),
	    cmocka_unit_test(claim_not_repeated_after_send),
	    cmocka_unit_test(busy_server_retried),
	};
	int failed = 0;

	signal(SIGPIPE, SIG_IGN);
	failed += cmocka_run_group_tests_name("lib_offline", without_server, NULL, NULL);
	failed +=
	    cmocka_run_group_tests_name("lib_server", with_server, group_setup, group_teardown);
	return failed ? 1 : 0;
}
