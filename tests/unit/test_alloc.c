/*
 * Death tests of the server's allocation wrappers (alloc.h): on
 * out-of-memory they write one line that contains "out of memory" to stderr and
 * abort, because the server never continues with half-built state. Each case
 * forks; the child asks for an impossible size (SIZE_MAX / 2 bytes, more than
 * any address space), which fails for real with no injection, and the parent
 * checks that the child died by SIGABRT after writing that line.
 *
 * Under AddressSanitizer an impossible size is a report and exit(1) by
 * default, so this binary sets allocator_may_return_null=1 to get the NULL
 * that the C library returns.
 *
 * SPDX-License-Identifier: MIT
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "alloc.h"

#if defined(__SANITIZE_ADDRESS__)
const char *__asan_default_options(void);
const char *__asan_default_options(void)
{
	return "allocator_may_return_null=1";
}
#endif

#define CHILD_TIMEOUT_MS 10000
#define IMPOSSIBLE_SIZE  (SIZE_MAX / 2)

/* What a forked child left behind. */
typedef struct {
	int status;        /* from waitpid() */
	char output[4096]; /* its stderr, NUL-terminated, truncated to fit */
} death_t;

static long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

/* Reads fd until EOF or the deadline into out[0..size). */
static void read_until_eof(int fd, char *out, size_t size, long deadline)
{
	size_t len = 0;

	while (now_ms() < deadline) {
		struct pollfd pfd = {.fd = fd, .events = POLLIN};
		char chunk[512];
		ssize_t n;

		if (poll(&pfd, 1, 100) <= 0)
			continue;
		n = read(fd, chunk, sizeof(chunk));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		if ((size_t)n > size - 1 - len)
			n = (ssize_t)(size - 1 - len);
		memcpy(out + len, chunk, (size_t)n);
		len += (size_t)n;
	}
	out[len] = '\0';
}

/*
 * Runs body in a child with stderr on a pipe and no core dump, and stores
 * how it ended. A body that returns makes the child exit with status 0.
 */
static void run_child(void (*body)(void), death_t *d)
{
	long deadline = now_ms() + CHILD_TIMEOUT_MS;
	int fds[2];
	pid_t pid;

	assert_int_equal(pipe(fds), 0);
	fflush(stdout);
	fflush(stderr);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct rlimit no_core = {0, 0};

		setrlimit(RLIMIT_CORE, &no_core);
		close(fds[0]);
		dup2(fds[1], STDERR_FILENO);
		body();
		_exit(0);
	}
	close(fds[1]);
	read_until_eof(fds[0], d->output, sizeof(d->output), deadline);
	close(fds[0]);
	while (waitpid(pid, &d->status, WNOHANG) == 0) {
		if (now_ms() > deadline) {
			kill(pid, SIGKILL);
			waitpid(pid, &d->status, 0);
			fail_msg("the child did not end within %d ms", CHILD_TIMEOUT_MS);
		}
		poll(NULL, 0, 10);
	}
}

/* Counts the lines of text that the server's wrappers write ("inferq: ..."). */
static int count_inferq_lines(const char *text)
{
	int count = 0;

	for (const char *line = text; *line;) {
		const char *end = strchr(line, '\n');

		if (strncmp(line, "inferq:", 7) == 0)
			count++;
		if (!end)
			break;
		line = end + 1;
	}
	return count;
}

static void expect_abort_with_message(void (*body)(void))
{
	death_t d = {0};

	run_child(body, &d);
	if (!WIFSIGNALED(d.status))
		fail_msg("the child was not killed by a signal (wait status 0x%x); stderr: %s",
		         (unsigned)d.status, d.output);
	assert_int_equal(WTERMSIG(d.status), SIGABRT);
	if (!strstr(d.output, "out of memory"))
		fail_msg("stderr lacks \"out of memory\": %s", d.output);
	assert_int_equal(count_inferq_lines(d.output), 1);
}

/* Child bodies: each returns only when the wrapper did not abort. */
static void call_xmalloc(void)
{
	free(xmalloc(IMPOSSIBLE_SIZE));
}

static void call_xcalloc(void)
{
	free(xcalloc(1, IMPOSSIBLE_SIZE));
}

/* count * size overflows size_t: rejected before calloc sees it. */
static void call_xcalloc_overflow(void)
{
	free(xcalloc(IMPOSSIBLE_SIZE, 4));
}

/* n + 1 wraps to 0: rejected instead of a 1-byte copy of a huge string. */
static void call_xstrndup_wrap(void)
{
	free(xstrndup("x", SIZE_MAX));
}

static void call_xrealloc(void)
{
	void *p = xmalloc(16);

	p = xrealloc(p, IMPOSSIBLE_SIZE);
	free(p);
}

static void call_xmalloc_small(void)
{
	char *p = xmalloc(64);

	memset(p, 'x', 64);
	free(p);
}

static void xmalloc_oom_aborts(void **state)
{
	expect_abort_with_message(call_xmalloc);
}

static void xcalloc_oom_aborts(void **state)
{
	expect_abort_with_message(call_xcalloc);
}

static void xrealloc_oom_aborts(void **state)
{
	expect_abort_with_message(call_xrealloc);
}

static void xcalloc_overflow_aborts(void **state)
{
	expect_abort_with_message(call_xcalloc_overflow);
}

static void xstrndup_wrap_aborts(void **state)
{
	expect_abort_with_message(call_xstrndup_wrap);
}

/* The harness must tell a normal exit apart from an abort. */
static void small_xmalloc_exits_normally(void **state)
{
	death_t d = {0};

	run_child(call_xmalloc_small, &d);
	assert_true(WIFEXITED(d.status));
	assert_int_equal(WEXITSTATUS(d.status), 0);
	assert_string_equal(d.output, "");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(xmalloc_oom_aborts),
	    cmocka_unit_test(xcalloc_oom_aborts),
	    cmocka_unit_test(xrealloc_oom_aborts),
	    cmocka_unit_test(xcalloc_overflow_aborts),
	    cmocka_unit_test(xstrndup_wrap_aborts),
	    cmocka_unit_test(small_xmalloc_exits_normally),
	};

	return cmocka_run_group_tests_name("alloc", tests, NULL, NULL);
}
