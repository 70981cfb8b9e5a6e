/*
 * Allocation-failure tests of libinferq. For each public call that
 * allocates, the test fails the library's n-th allocation for n = 0, 1, 2,
 * ... (inferq__alloc_fail_after() in src/lib/internal.h) and requires
 * INFERQ_ENOMEM with "out of memory" as the last error, until a run of the
 * call reaches no armed allocation and succeeds. Any other result fails the
 * test, and so does a success that swallowed an injected failure. Built
 * with SANITIZE=address, LeakSanitizer also fails the run when an error path
 * leaks. Allocations inside libcurl and jansson are not injected.
 *
 * The calls run against the real server binary on 127.0.0.1 with port 0 and
 * a fresh data dir (INFERQ_BIN names it, else $BUILD/inferq, else
 * build/inferq). Every run of a call gets its own model or key name, so a
 * call that reached the server before its client ran out of memory leaves
 * nothing behind for the next run.
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

#define INFERQ__LIBC_ALLOC /* the test itself may call malloc() */
#include "inferq.h"
#include "internal.h"

#define START_TIMEOUT_MS 10000
#define STOP_TIMEOUT_MS  10000
/* Upper bound on the allocations one call makes; no call comes near it. */
#define MAX_FAIL_STEP 500

typedef struct {
	char dir[64]; /* temp dir: data/ and server.log inside */
	char log_path[96];
	char url[64];
	char key[256]; /* the admin key the server wrote at first start */
	pid_t pid;
} server_t;

static server_t server;

/* State of one run of a call: what prepare() made and what the call returned. */
typedef struct {
	inferq_client_t *c;
	inferq_client_t *created; /* out of inferq_client_new() */
	char model[64];
	char name[64]; /* a key name */
	char *request_id;
	inferq_claim_t *claim;
	inferq_status_t *status;
	inferq_key_t *key;
	inferq_key_t **keys;
	size_t key_count;
	inferq_job_page_t *page;
	inferq_worker_t **workers;
	size_t worker_count;
} run_t;

typedef struct {
	const char *name;
	void (*prepare)(run_t *r); /* runs with the seam disarmed; may be NULL */
	int (*call)(run_t *r);     /* runs with one allocation armed to fail */
	int expected;              /* what the call returns when no allocation fails */
} op_t;

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

/* Forks the server on 127.0.0.1, any port; its output goes to the log file. */
static void spawn_server(server_t *s)
{
	char data_dir[128];

	snprintf(data_dir, sizeof(data_dir), "%s/data", s->dir);
	mkdir(data_dir, 0700);
	s->pid = fork();
	if (s->pid == 0) {
		FILE *log = fopen(s->log_path, "w");

		if (!log)
			_exit(127);
		dup2(fileno(log), STDOUT_FILENO);
		dup2(fileno(log), STDERR_FILENO);
		execl(server_binary(), "inferq", "serve", "--listen", "127.0.0.1:0", "--data-dir",
		      data_dir, "--auth", "keys", (char *)NULL);
		_exit(127);
	}
}

/* Polls the log for "listening on 127.0.0.1:PORT", then reads the admin key. */
static int await_listening(server_t *s)
{
	long deadline = now_ms() + START_TIMEOUT_MS;
	char line[1024], key_path[128];
	int port = 0;
	FILE *f;

	while (port <= 0 && now_ms() < deadline) {
		f = fopen(s->log_path, "r");
		while (f && port <= 0 && fgets(line, sizeof(line), f)) {
			const char *at = strstr(line, "listening on 127.0.0.1:");

			if (at)
				port = atoi(at + strlen("listening on 127.0.0.1:"));
		}
		if (f)
			fclose(f);
		if (port <= 0 && waitpid(s->pid, NULL, WNOHANG) == s->pid) {
			fprintf(stderr, "server %s exited at start; see %s\n", server_binary(),
			        s->log_path);
			return -1;
		}
		if (port <= 0)
			sleep_ms(10);
	}
	if (port <= 0) {
		fprintf(stderr, "server did not log its port within %d ms; see %s\n",
		        START_TIMEOUT_MS, s->log_path);
		return -1;
	}
	snprintf(s->url, sizeof(s->url), "http://127.0.0.1:%d", port);
	snprintf(key_path, sizeof(key_path), "%s/data/admin.key", s->dir);
	f = fopen(key_path, "r");
	if (f && fgets(s->key, sizeof(s->key), f))
		s->key[strcspn(s->key, "\r\n")] = '\0';
	if (f)
		fclose(f);
	if (!s->key[0]) {
		fprintf(stderr, "cannot read the admin key from %s\n", key_path);
		return -1;
	}
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

static int group_setup(void **state)
{
	memset(&server, 0, sizeof(server));
	snprintf(server.dir, sizeof(server.dir), "/tmp/inferq-test-oom-XXXXXX");
	if (!mkdtemp(server.dir))
		return -1;
	snprintf(server.log_path, sizeof(server.log_path), "%s/server.log", server.dir);
	unsetenv("INFERQ_URL");
	unsetenv("INFERQ_API_KEY");
	unsetenv("TOGETHER_API_KEY");
	spawn_server(&server);
	if (server.pid < 0)
		return -1;
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

/* --- Unarmed helpers ------------------------------------------------------ */

static inferq_client_t *connect_admin(void)
{
	inferq_client_t *c = NULL;

	assert_int_equal(inferq_client_new(&c), 0);
	assert_int_equal(inferq_client_set_url(c, server.url), 0);
	assert_int_equal(inferq_client_set_api_key(c, server.key), 0);
	/* ENOMEM is never retried, so retries only slow down a real failure. */
	assert_int_equal(inferq_client_set_retries(c, 1, 0), 0);
	return c;
}

static void submit_job(run_t *r)
{
	int rc = inferq_job_submit(r->c, r->model, "{\"prompt\":\"hi\"}", NULL, 0, &r->request_id);

	if (rc != 0)
		fail_msg("submit to %s failed: %d %s", r->model, rc,
		         inferq_client_last_error(r->c));
}

static void claim_job(run_t *r)
{
	int rc;

	submit_job(r);
	rc = inferq_job_claim(r->c, r->model, 60, 0, "oom-worker", &r->claim);
	if (rc != 0 || !r->claim)
		fail_msg("claim on %s failed: %d %s", r->model, rc, inferq_client_last_error(r->c));
}

static void create_key(run_t *r)
{
	const char *models[] = {"oom/*"};
	inferq_key_t *k = NULL;
	int rc = inferq_keys_create(r->c, r->name, "client", models, 1, NULL, &k);

	if (rc != 0)
		fail_msg("creating key %s failed: %d %s", r->name, rc,
		         inferq_client_last_error(r->c));
	inferq_key_free(k);
}

/* --- The calls under test ------------------------------------------------- */

static int call_client_new(run_t *r)
{
	return inferq_client_new(&r->created);
}

static void prepare_env_key(run_t *r)
{
	setenv("INFERQ_API_KEY", server.key, 1);
	setenv("INFERQ_URL", server.url, 1);
}

static int call_set_url(run_t *r)
{
	return inferq_client_set_url(r->c, "http://127.0.0.1:1/v1/");
}

static int call_set_api_key(run_t *r)
{
	return inferq_client_set_api_key(r->c, "iq_not_a_real_key");
}

static int call_set_key_file(run_t *r)
{
	char path[128];

	snprintf(path, sizeof(path), "%s/data/admin.key", server.dir);
	return inferq_client_set_key_file(r->c, path);
}

static int call_set_cacert(run_t *r)
{
	return inferq_client_set_cacert(r->c, "/etc/ssl/certs/ca-certificates.crt");
}

static int call_submit(run_t *r)
{
	return inferq_job_submit(r->c, r->model, "{\"prompt\":\"caf\\u00e9\"}", "{\"tag\":1}", 3,
	                         &r->request_id);
}

static int call_status(run_t *r)
{
	return inferq_job_status(r->c, r->model, r->request_id, &r->status);
}

static int call_cancel(run_t *r)
{
	return inferq_job_cancel(r->c, r->model, r->request_id);
}

static void prepare_done_job(run_t *r)
{
	claim_job(r);
	assert_int_equal(inferq_claim_complete(r->c, r->claim, "{\"y\":1}"), 0);
}

static int call_wait(run_t *r)
{
	return inferq_job_wait(r->c, r->model, r->request_id, 5000, NULL, NULL, &r->status);
}

static int call_clear(run_t *r)
{
	int64_t canceled = -1;

	return inferq_queue_clear(r->c, r->model, &canceled);
}

static int call_metrics(run_t *r)
{
	int64_t waiting, running, total;

	return inferq_queue_metrics(r->c, r->model, &waiting, &running, &total);
}

static int call_claim(run_t *r)
{
	return inferq_job_claim(r->c, r->model, 60, 0, "oom-worker", &r->claim);
}

static int call_heartbeat(run_t *r)
{
	return inferq_claim_heartbeat(r->c, r->claim, "{\"progress\":0.5}");
}

static int call_complete(run_t *r)
{
	return inferq_claim_complete(r->c, r->claim, "{\"text\":\"done \\\"q\\\"\"}");
}

static int call_fail(run_t *r)
{
	return inferq_claim_fail(r->c, r->claim, "model crashed: \"bad\"\n");
}

static int call_release(run_t *r)
{
	return inferq_claim_release(r->c, r->claim);
}

/* The server rejects this call with a QueueError body, which the client decodes. */
static int call_status_unknown(run_t *r)
{
	return inferq_job_status(r->c, r->model, "00000000-0000-4000-8000-000000000000",
	                         &r->status);
}

static int call_keys_create(run_t *r)
{
	const char *models[] = {"oom/a", "oom-org/*"};

	return inferq_keys_create(r->c, r->name, "worker", models, 2, "30d", &r->key);
}

static int call_keys_list(run_t *r)
{
	return inferq_keys_list(r->c, &r->keys, &r->key_count);
}

static int call_keys_revoke(run_t *r)
{
	return inferq_keys_revoke(r->c, r->name, &r->key);
}

static int call_admin_jobs(run_t *r)
{
	return inferq_admin_jobs(r->c, r->model, "pending", 10, NULL, &r->page);
}

static int call_admin_workers(run_t *r)
{
	return inferq_admin_workers(r->c, &r->workers, &r->worker_count);
}

/* Frees what prepare() and the call left in r, with the seam disarmed. */
static void free_run(run_t *r)
{
	inferq_client_free(r->created);
	inferq_client_free(r->c);
	inferq_free(r->request_id);
	inferq_claim_free(r->claim);
	inferq_status_free(r->status);
	inferq_key_free(r->key);
	inferq_key_list_free(r->keys, r->key_count);
	inferq_job_page_free(r->page);
	inferq_worker_list_free(r->workers, r->worker_count);
	memset(r, 0, sizeof(*r));
}

/*
 * Runs op with the n-th allocation failing, for n = 0, 1, ... until a run
 * reaches no armed allocation. Returns the number of runs that failed.
 */
static long run_until_success(const op_t *op)
{
	long n;

	for (n = 0; n < MAX_FAIL_STEP; n++) {
		run_t r = {0};
		void *prepared_claim, *prepared_id;
		long injected;
		int rc;

		r.c = connect_admin();
		snprintf(r.model, sizeof(r.model), "oom/%s-%ld", op->name, n);
		snprintf(r.name, sizeof(r.name), "oom-%s-%ld", op->name, n);
		for (char *p = r.name; *p; p++)
			if (*p == '_')
				*p = '-'; /* key names take no underscores */
		if (op->prepare)
			op->prepare(&r);

		/* A rejected option leaves a message that an ENOMEM path must replace. */
		assert_int_equal(inferq_client_set_retries(r.c, 0, 0), INFERQ_ERANGE);

		prepared_claim = r.claim;
		prepared_id = r.request_id;
		inferq__alloc_fail_after(n);
		rc = op->call(&r);
		injected = inferq__alloc_fail_after(-1);
		unsetenv("INFERQ_API_KEY");
		unsetenv("INFERQ_URL");

		if (injected == 0) {
			if (rc != op->expected)
				fail_msg("%s returned %d with no injected failure, not %d: %s",
				         op->name, rc, op->expected, inferq_client_last_error(r.c));
			if (rc != 0 && (!inferq_client_last_error(r.c)[0] ||
			                strstr(inferq_client_last_error(r.c), "out of memory")))
				fail_msg("%s returned %d with the last error \"%s\"", op->name, rc,
				         inferq_client_last_error(r.c));
			free_run(&r);
			return n;
		}
		if (rc == 0)
			fail_msg("%s returned 0 after allocation %ld failed", op->name, n);
		if (rc != INFERQ_ENOMEM)
			fail_msg(
			    "%s returned %d, not INFERQ_ENOMEM, after allocation %ld failed: %s",
			    op->name, rc, n, inferq_client_last_error(r.c));
		if (op->call != call_client_new &&
		    !strstr(inferq_client_last_error(r.c), "out of memory"))
			fail_msg("%s returned INFERQ_ENOMEM after allocation %ld failed, with the "
			         "last error \"%s\"",
			         op->name, n, inferq_client_last_error(r.c));

		/* A failed call stores no new object in its out parameters. */
		assert_null(r.created);
		assert_null(r.status);
		assert_null(r.key);
		assert_null(r.keys);
		assert_int_equal(r.key_count, 0);
		assert_null(r.page);
		assert_null(r.workers);
		assert_int_equal(r.worker_count, 0);
		assert_ptr_equal(r.claim, prepared_claim);
		assert_ptr_equal(r.request_id, prepared_id);
		free_run(&r);
	}
	fail_msg("%s still hit an injected failure after %d runs", op->name, MAX_FAIL_STEP);
	return n;
}

/* Runs each op of a table; each must allocate at least once. */
static void run_ops(const op_t *ops, size_t count)
{
	for (size_t i = 0; i < count; i++) {
		long runs = run_until_success(&ops[i]);

		if (runs == 0)
			fail_msg("%s made no allocation through the seam", ops[i].name);
		printf("# %s: %ld allocations failed one at a time\n", ops[i].name, runs);
	}
}

/* --- Tests ---------------------------------------------------------------- */

static void client_calls_fail_cleanly(void **state)
{
	const op_t ops[] = {
	    {"client_new", NULL, call_client_new, 0},
	    {"client_new_env_key", prepare_env_key, call_client_new, 0},
	    {"set_url", NULL, call_set_url, 0},
	    {"set_api_key", NULL, call_set_api_key, 0},
	    {"set_key_file", NULL, call_set_key_file, 0},
	    {"set_cacert", NULL, call_set_cacert, 0},
	};

	run_ops(ops, sizeof(ops) / sizeof(ops[0]));
}

static void job_calls_fail_cleanly(void **state)
{
	const op_t ops[] = {
	    {"submit", NULL, call_submit, 0},
	    {"status", submit_job, call_status, 0},
	    {"cancel", submit_job, call_cancel, 0},
	    {"wait", prepare_done_job, call_wait, 0},
	    {"clear", submit_job, call_clear, 0},
	    {"metrics", submit_job, call_metrics, 0},
	    {"status_unknown", NULL, call_status_unknown, INFERQ_ENOTFOUND},
	};

	run_ops(ops, sizeof(ops) / sizeof(ops[0]));
}

static void worker_calls_fail_cleanly(void **state)
{
	const op_t ops[] = {
	    {"claim", submit_job, call_claim, 0},      {"heartbeat", claim_job, call_heartbeat, 0},
	    {"complete", claim_job, call_complete, 0}, {"fail", claim_job, call_fail, 0},
	    {"release", claim_job, call_release, 0},
	};

	run_ops(ops, sizeof(ops) / sizeof(ops[0]));
}

static void key_calls_fail_cleanly(void **state)
{
	const op_t ops[] = {
	    {"keys_create", NULL, call_keys_create, 0},
	    {"keys_list", NULL, call_keys_list, 0},
	    {"keys_revoke", create_key, call_keys_revoke, 0},
	};
	run_t setup = {0};

	/* The list must not grow between runs, so its keys are created once, here. */
	setup.c = connect_admin();
	snprintf(setup.name, sizeof(setup.name), "oom-listed-1");
	create_key(&setup);
	snprintf(setup.name, sizeof(setup.name), "oom-listed-2");
	create_key(&setup);
	free_run(&setup);

	run_ops(ops, sizeof(ops) / sizeof(ops[0]));
}

static void admin_calls_fail_cleanly(void **state)
{
	const op_t ops[] = {
	    {"admin_jobs", submit_job, call_admin_jobs, 0},
	    {"admin_workers", NULL, call_admin_workers, 0},
	};
	run_t setup = {0};

	/* A worker with a current job, so the workers view has something to decode. */
	setup.c = connect_admin();
	snprintf(setup.model, sizeof(setup.model), "oom/admin-worker");
	claim_job(&setup);
	free_run(&setup);

	run_ops(ops, sizeof(ops) / sizeof(ops[0]));
}

/* The seam itself: it counts allocations, fails one, then succeeds again. */
static void seam_fails_once(void **state)
{
	char *a, *b, *c, *grown;

	assert_int_equal(inferq__alloc_fail_after(1), 0);
	a = inferq__strndup("a", 1);
	b = inferq__strndup("b", 1);
	c = inferq__strndup("c", 1);
	assert_int_equal(inferq__alloc_fail_after(-1), 1);
	assert_non_null(a);
	assert_null(b);
	assert_non_null(c);

	/* n = 0 fails the next allocation; a failed realloc keeps the old block. */
	inferq__alloc_fail_after(0);
	grown = inferq__realloc(a, 64);
	assert_int_equal(inferq__alloc_fail_after(-1), 1);
	assert_null(grown);
	assert_string_equal(a, "a");

	/* Disarmed, nothing fails and nothing is counted. */
	grown = inferq__calloc(1, 8);
	assert_non_null(grown);
	assert_int_equal(inferq__alloc_fail_after(-1), 0);
	free(grown);
	free(a);
	free(c);
}

int main(void)
{
	const struct CMUnitTest offline[] = {
	    cmocka_unit_test(seam_fails_once),
	};
	const struct CMUnitTest with_server[] = {
	    cmocka_unit_test(client_calls_fail_cleanly),
	    cmocka_unit_test(job_calls_fail_cleanly),
	    cmocka_unit_test(worker_calls_fail_cleanly),
	    cmocka_unit_test(key_calls_fail_cleanly),
	    cmocka_unit_test(admin_calls_fail_cleanly),
	};
	int failed = 0;

	signal(SIGPIPE, SIG_IGN);
	failed += cmocka_run_group_tests_name("lib_oom_seam", offline, NULL, NULL);
	failed += cmocka_run_group_tests_name("lib_oom", with_server, group_setup, group_teardown);
	return failed ? 1 : 0;
}
