/*
 * Starting CMD for `inferq worker`: fork and exec without a shell, with
 * the payload pipe on stdin, pipes on stdout, stderr and fd 3, the job's
 * INFERQ_* variables in the environment, and a process group of its own.
 * Every pipe is opened close-on-exec, and the child closes every fd above
 * 4 before exec (fds 5 to 4095 on kernels without close_range), so CMD
 * does not keep another job's pipes or the worker's sockets open.
 *
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "alloc.h"
#include "worker.h"

extern char **environ;

/* Builds CMD's environment: the worker's, with the job's INFERQ_* variables set. */
static char **build_env(const inferq_claim_t *claim)
{
	static const char *const names[] = {
	    "INFERQ_REQUEST_ID=", "INFERQ_MODEL=", "INFERQ_RETRIES="};
	size_t n = 0, k = 0;
	char **env;
	buf_t b = BUF_INIT;

	while (environ[n])
		n++;
	env = xcalloc(n + 4, sizeof(*env));
	for (size_t i = 0; i < n; i++) {
		int ours = 0;

		for (size_t m = 0; m < 3; m++)
			ours |= strncmp(environ[i], names[m], strlen(names[m])) == 0;
		if (!ours)
			env[k++] = xstrdup(environ[i]);
	}
	buf_printf(&b, "INFERQ_REQUEST_ID=%s", inferq_claim_request_id(claim));
	env[k++] = xstrdup(b.data);
	buf_reset(&b);
	buf_printf(&b, "INFERQ_MODEL=%s", inferq_claim_model(claim));
	env[k++] = xstrdup(b.data);
	buf_reset(&b);
	buf_printf(&b, "INFERQ_RETRIES=%lld", (long long)inferq_claim_retries(claim));
	env[k++] = xstrdup(b.data);
	buf_free(&b);
	return env;
}

static void free_env(char **env)
{
	for (size_t i = 0; env && env[i]; i++)
		free(env[i]);
	free(env);
}

/*
 * The child between fork and exec: only async-signal-safe calls. fds[0..3]
 * become fds 0 to 3 (moved above 9 first, so no target overwrites a
 * source), status_fd becomes fd 4 (close-on-exec), everything else closes.
 * A failed exec sends errno through fd 4.
 */
static void child_exec(const worker_config_t *cfg, char **env, const int fds[4], int status_fd)
{
	struct sigaction dfl;
	sigset_t none;
	int moved[4], status, e;

	setpgid(0, 0);
	memset(&dfl, 0, sizeof(dfl));
	dfl.sa_handler = SIG_DFL;
	sigaction(SIGPIPE, &dfl, NULL);
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);

	status = fcntl(status_fd, F_DUPFD, 10);
	for (int i = 0; i < 4; i++)
		moved[i] = fcntl(fds[i], F_DUPFD, 10);
	for (int i = 0; i < 4; i++)
		dup2(moved[i], i);
	dup2(status, 4);
	fcntl(4, F_SETFD, FD_CLOEXEC);
	if (syscall(SYS_close_range, 5U, ~0U, 0U) != 0)
		for (int fd = 5; fd < 4096; fd++)
			close(fd);

	execve(cfg->command_path, cfg->command, env);
	e = errno;
	if (write(4, &e, sizeof(e)) < 0) {
		/* The parent then gets exit status 127 and no errno. */
	}
	_exit(127);
}

static void close_fd(int *fd)
{
	if (*fd >= 0)
		close(*fd);
	*fd = -1;
}

int worker_spawn(const worker_config_t *cfg, const inferq_claim_t *claim, worker_child_t *out)
{
	int p[5][2], child_fds[4], e = 0, rc = INFERQ_EIO, saved_errno;
	char **env = build_env(claim);
	ssize_t got;
	int n = 0;

	for (; n < 5; n++)
		if (pipe2(p[n], O_CLOEXEC) != 0)
			goto out;
	/* stdin is read by CMD; stdout, stderr, fd 3 and the exec status are written by it. */
	child_fds[0] = p[0][0];
	for (int i = 1; i < 4; i++)
		child_fds[i] = p[i][1];

	out->pid = fork();
	if (out->pid < 0)
		goto out;
	if (out->pid == 0)
		child_exec(cfg, env, child_fds, p[4][1]);
	setpgid(out->pid, out->pid); /* also here, so a kill right away reaches the group */

	/* The status pipe reaches its end at the exec, or carries errno. */
	close_fd(&p[4][1]);
	do
		got = read(p[4][0], &e, sizeof(e));
	while (got < 0 && errno == EINTR);
	out->exec_errno = got == (ssize_t)sizeof(e) ? e : 0;

	/* The worker keeps stdin's write end and the read ends of the others. */
	out->fds[0] = p[0][1];
	p[0][1] = -1;
	for (int i = 1; i < 4; i++) {
		out->fds[i] = p[i][0];
		p[i][0] = -1;
	}
	for (int i = 0; i < 4; i++)
		fcntl(out->fds[i], F_SETFL, O_NONBLOCK);
	out->pidfd = (int)syscall(SYS_pidfd_open, out->pid, 0);
	rc = 0;
out:
	saved_errno = errno;
	for (int i = 0; i < n; i++) {
		close_fd(&p[i][0]);
		close_fd(&p[i][1]);
	}
	free_env(env);
	errno = saved_errno;
	return rc;
}
