/*
 * libfault: an LD_PRELOAD shim that makes the real inferq binary meet a
 * failing disk and a jumping wall clock, with no test-only code in the
 * server. It wraps fsync, fdatasync, write, pwrite and pwrite64 (strace
 * shows that SQLite 3.40.1 of Debian 12 writes with pwrite64 and syncs with
 * fdatasync), and clock_gettime, gettimeofday and time for the wall clock.
 * The file named by INFERQ_FAULT_CONTROL sets which faults are on; the
 * format is in tests/fault/README.md.
 *
 * Invariant: without a control file, or with every setting off, each call
 * goes to the libc function unchanged, with its own errno. The wrappers take
 * no lock and, after the dlsym() of their first call, allocate nothing,
 * because libuv calls write() from a signal handler: a settings snapshot is
 * a slot of a static ring, published through one atomic pointer, and after
 * publication only its call counters change.
 *
 * SPDX-License-Identifier: MIT
 */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define CONTROL_ENV     "INFERQ_FAULT_CONTROL"
#define CONTROL_MAX     4096
#define PATTERN_MAX     256
#define REREAD_MS       20 /* the control file is read again at least this often */
#define SLOTS           64 /* settings snapshots kept; no reader keeps one for 64 reloads */
#define DEFAULT_PATTERN "inferq.db*"
#define NS_PER_MS       1000000LL
#define MAX_DELAY_MS    60000
#define MAX_OFFSET_MS   (100LL * 365 * 86400 * 1000) /* a century */

enum kind { KIND_SYNC, KIND_WRITE, KIND_COUNT };

/* A file fault of one kind: which errno, and which matching calls get it. */
struct fault {
	int err;       /* 0: the calls succeed */
	int64_t skip;  /* this many matching calls pass before the first failure */
	int64_t count; /* then this many fail, and later ones pass; 0: every later one fails */
};

struct settings {
	struct fault faults[KIND_COUNT];
	int64_t fsync_delay_ms;
	int64_t wall_offset_ms;
	char pattern[PATTERN_MAX]; /* fnmatch pattern of the files that fsync= and write= hit */
	atomic_int_least64_t calls[KIND_COUNT]; /* matching calls seen under these settings */
};

/* Identity of the control file as last read, to notice a rewrite at the next call. */
struct file_id {
	dev_t dev;
	ino_t ino;
	off_t size;
	struct timespec mtime;
	struct timespec ctime;
};

static struct settings ring[SLOTS];
static _Atomic(struct settings *) current;
static atomic_uint next_slot;
static atomic_flag reloading = ATOMIC_FLAG_INIT;
static atomic_int_least64_t last_read_ms = -1;
static struct file_id last_id;      /* written only by the thread holding reloading */
static char last_text[CONTROL_MAX]; /* likewise: the text behind *current */
static size_t last_len;
static int have_text;

/* ---- the libc functions behind the wrappers ---- */

typedef int (*fsync_fn)(int);
typedef ssize_t (*write_fn)(int, const void *, size_t);
typedef ssize_t (*pwrite_fn)(int, const void *, size_t, off_t);
typedef ssize_t (*pwrite64_fn)(int, const void *, size_t, off64_t);
typedef int (*clock_gettime_fn)(clockid_t, struct timespec *);
typedef int (*gettimeofday_fn)(struct timeval *, void *);
typedef time_t (*time_fn)(time_t *);

/* Looks up the next definition of name after this library; aborts when there is none. */
static void *next_symbol(const char *name)
{
	void *sym = dlsym(RTLD_NEXT, name);

	if (sym == NULL) {
		fprintf(stderr, "libfault: dlsym(RTLD_NEXT, \"%s\") found nothing: %s\n", name,
		        dlerror());
		abort();
	}
	return sym;
}

/* Declares a static pointer to the libc function and a loader that caches it. */
#define REAL(type, name)                                                                           \
	static type real_##name(void)                                                              \
	{                                                                                          \
		static _Atomic(type) fn;                                                           \
		type f = atomic_load_explicit(&fn, memory_order_acquire);                          \
		if (f == NULL) {                                                                   \
			f = (type)next_symbol(#name);                                              \
			atomic_store_explicit(&fn, f, memory_order_release);                       \
		}                                                                                  \
		return f;                                                                          \
	}

REAL(fsync_fn, fsync)
REAL(fsync_fn, fdatasync)
REAL(write_fn, write)
REAL(pwrite_fn, pwrite)
REAL(pwrite64_fn, pwrite64)
REAL(clock_gettime_fn, clock_gettime)
REAL(gettimeofday_fn, gettimeofday)
REAL(time_fn, time)

static int64_t mono_ms(void)
{
	struct timespec ts;

	real_clock_gettime()(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / NS_PER_MS;
}

/* ---- the control file ---- */

static int errno_named(const char *name, int *out)
{
	static const struct {
		const char *name;
		int value;
	} names[] = {{"off", 0},         {"eio", EIO},     {"enospc", ENOSPC},
	             {"edquot", EDQUOT}, {"erofs", EROFS}, {"ebadf", EBADF}};

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		if (strcmp(names[i].name, name) == 0) {
			*out = names[i].value;
			return 0;
		}
	}
	return -1;
}

static int parse_ms(const char *text, int64_t limit, int64_t *out)
{
	char *end;
	long long v;

	errno = 0;
	v = strtoll(text, &end, 10);
	if (errno != 0 || end == text || *end != '\0' || v > limit || v < -limit)
		return -1;
	*out = v;
	return 0;
}

static int parse_count(const char *text, int64_t *out)
{
	return text[0] == '-' ? -1 : parse_ms(text, INT32_MAX, out);
}

/* Resets every setting but the call counters, which only publish() resets. */
static void set_defaults(struct settings *st)
{
	memset(st->faults, 0, sizeof(st->faults));
	st->fsync_delay_ms = 0;
	st->wall_offset_ms = 0;
	snprintf(st->pattern, sizeof(st->pattern), "%s", DEFAULT_PATTERN);
}

/* Applies one trimmed line; returns 0, or -1 when the line is not a valid setting. */
static int apply_line(struct settings *st, char *line)
{
	char *value = strchr(line, '=');

	if (strcmp(line, "off") == 0) {
		set_defaults(st);
		return 0;
	}
	if (value == NULL)
		return -1;
	*value++ = '\0';
	if (strcmp(line, "fsync") == 0)
		return errno_named(value, &st->faults[KIND_SYNC].err);
	if (strcmp(line, "write") == 0)
		return errno_named(value, &st->faults[KIND_WRITE].err);
	if (strcmp(line, "fsync_skip") == 0)
		return parse_count(value, &st->faults[KIND_SYNC].skip);
	if (strcmp(line, "fsync_count") == 0)
		return parse_count(value, &st->faults[KIND_SYNC].count);
	if (strcmp(line, "write_skip") == 0)
		return parse_count(value, &st->faults[KIND_WRITE].skip);
	if (strcmp(line, "write_count") == 0)
		return parse_count(value, &st->faults[KIND_WRITE].count);
	if (strcmp(line, "fsync_delay_ms") == 0)
		return value[0] == '-' ? -1 : parse_ms(value, MAX_DELAY_MS, &st->fsync_delay_ms);
	if (strcmp(line, "wall_offset_ms") == 0)
		return parse_ms(value, MAX_OFFSET_MS, &st->wall_offset_ms);
	if (strcmp(line, "files") == 0) {
		if (value[0] == '\0' || strlen(value) >= sizeof(st->pattern))
			return -1;
		snprintf(st->pattern, sizeof(st->pattern), "%s", value);
		return 0;
	}
	return -1;
}

static char *trim(char *s)
{
	char *end = s + strlen(s);

	while (*s == ' ' || *s == '\t' || *s == '\r')
		s++;
	while (end > s && (end[-1] == ' ' || end[-1] == '\t' || end[-1] == '\r'))
		*--end = '\0';
	return s;
}

/*
 * Parses the whole control text into st, from the defaults. An invalid line
 * is reported on stderr and ignored, so a typo cannot pass for "off" silently.
 */
static void parse_control(const char *path, char *text, struct settings *st)
{
	int lineno = 0;
	char *save = NULL;

	set_defaults(st);
	for (char *raw = strtok_r(text, "\n", &save); raw; raw = strtok_r(NULL, "\n", &save)) {
		char copy[CONTROL_MAX];
		char *line = trim(raw);

		lineno++;
		if (line[0] == '\0' || line[0] == '#')
			continue;
		snprintf(copy, sizeof(copy), "%s", line);
		if (apply_line(st, line) != 0)
			fprintf(stderr,
			        "libfault: %s: invalid line \"%s\"; expected off, fsync=ERR, "
			        "write=ERR (ERR: off, eio, enospc, edquot, erofs, ebadf), "
			        "fsync_skip=N, fsync_count=N, write_skip=N, write_count=N, "
			        "fsync_delay_ms=N (0 to %d), wall_offset_ms=[+-]N or files=GLOB\n",
			        path, copy, MAX_DELAY_MS);
	}
}

static int same_id(const struct file_id *a, const struct file_id *b)
{
	return a->dev == b->dev && a->ino == b->ino && a->size == b->size &&
	       a->mtime.tv_sec == b->mtime.tv_sec && a->mtime.tv_nsec == b->mtime.tv_nsec &&
	       a->ctime.tv_sec == b->ctime.tv_sec && a->ctime.tv_nsec == b->ctime.tv_nsec;
}

/* Reads the control file into text; returns its length, or -1 when it is missing. */
static ssize_t read_control(const char *path, char *text, size_t size)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t len = 0, n;

	if (fd < 0)
		return -1;
	while ((size_t)len < size - 1 && (n = read(fd, text + len, size - 1 - (size_t)len)) > 0)
		len += n;
	close(fd);
	text[len] = '\0';
	return len;
}

/* Publishes the settings of text unless they equal the text behind the current ones. */
static void publish(const char *path, const char *text, size_t len)
{
	char scratch[CONTROL_MAX];
	struct settings *slot;

	if (have_text && len == last_len && memcmp(text, last_text, len) == 0)
		return;
	memcpy(last_text, text, len);
	last_len = len;
	have_text = 1;

	slot = &ring[atomic_fetch_add(&next_slot, 1) % SLOTS];
	memcpy(scratch, text, len + 1);
	parse_control(path, scratch, slot);
	for (int k = 0; k < KIND_COUNT; k++)
		atomic_store(&slot->calls[k], 0);
	atomic_store_explicit(&current, slot, memory_order_release);
}

/*
 * Reads the control file again when it changed (one stat per call) or when
 * REREAD_MS passed, which also catches a rewrite that kept size and times.
 * A thread that finds another one reloading keeps the current settings.
 */
static void refresh(void)
{
	const char *path = getenv(CONTROL_ENV);
	char text[CONTROL_MAX];
	struct file_id id;
	struct stat sb;
	int64_t now;
	ssize_t len;

	if (path == NULL || path[0] == '\0')
		return;
	if (atomic_flag_test_and_set_explicit(&reloading, memory_order_acquire))
		return;

	now = mono_ms();
	memset(&id, 0, sizeof(id));
	if (stat(path, &sb) == 0) {
		id.dev = sb.st_dev;
		id.ino = sb.st_ino;
		id.size = sb.st_size;
		id.mtime = sb.st_mtim;
		id.ctime = sb.st_ctim;
	}
	if (atomic_load(&last_read_ms) >= 0 && same_id(&id, &last_id) &&
	    now - atomic_load(&last_read_ms) < REREAD_MS)
		goto out;

	last_id = id;
	atomic_store(&last_read_ms, now);
	len = read_control(path, text, sizeof(text));
	if (len < 0) {
		text[0] = '\0';
		len = 0;
	}
	publish(path, text, (size_t)len);
out:
	atomic_flag_clear_explicit(&reloading, memory_order_release);
}

/* Returns the current settings, or NULL when no control file is configured or read yet. */
static struct settings *settings_now(void)
{
	int saved = errno;
	struct settings *st;

	refresh();
	st = atomic_load_explicit(&current, memory_order_acquire);
	errno = saved;
	return st;
}

/* ---- file faults ---- */

/* Returns 1 when fd is a file whose path matches the settings' pattern. */
static int fd_matches(const struct settings *st, int fd)
{
	char link[64], path[4096];
	const char *subject;
	ssize_t n;

	snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
	n = readlink(link, path, sizeof(path) - 1);
	if (n <= 0)
		return 0;
	path[n] = '\0';
	/* Sockets, pipes and eventfds read as "socket:[N]" and the like: no file. */
	if (path[0] != '/')
		return 0;
	subject = strchr(st->pattern, '/') ? path : strrchr(path, '/') + 1;
	return fnmatch(st->pattern, subject, 0) == 0;
}

/* Logs the first injected fault of each kind per settings snapshot. */
static void note_fault(const struct settings *st, enum kind kind, const char *call, int fd)
{
	static _Atomic(const struct settings *) noted[KIND_COUNT];

	if (atomic_exchange(&noted[kind], st) == st)
		return;
	fprintf(stderr, "libfault: injected %s on %s() of fd %d (files=%s)\n",
	        strerror(st->faults[kind].err), call, fd, st->pattern);
}

/* Counts a matching call and returns the errno it fails with, or 0 when it passes. */
static int next_fault(struct settings *st, enum kind kind, const char *call, int fd)
{
	const struct fault *f = &st->faults[kind];
	int64_t n = atomic_fetch_add(&st->calls[kind], 1);

	if (f->err == 0 || n < f->skip || (f->count > 0 && n >= f->skip + f->count))
		return 0;
	note_fault(st, kind, call, fd);
	return f->err;
}

static void pause_ms(int64_t ms)
{
	struct timespec left = {(time_t)(ms / 1000), (long)(ms % 1000) * NS_PER_MS};

	while (nanosleep(&left, &left) != 0 && errno == EINTR)
		continue;
}

/*
 * Decides the fate of a sync call on fd: returns 0 to run it, or the errno
 * to fail it with. A matching call first sleeps fsync_delay_ms.
 */
static int sync_fault(int fd, const char *call)
{
	struct settings *st = settings_now();
	int saved = errno;
	int err = 0;

	if (st == NULL || (st->faults[KIND_SYNC].err == 0 && st->fsync_delay_ms == 0))
		return 0;
	if (fd_matches(st, fd)) {
		if (st->fsync_delay_ms > 0)
			pause_ms(st->fsync_delay_ms);
		err = next_fault(st, KIND_SYNC, call, fd);
	}
	errno = saved;
	return err;
}

static int write_fault(int fd, const char *call)
{
	struct settings *st = settings_now();
	int saved = errno;
	int err = 0;

	if (st == NULL || st->faults[KIND_WRITE].err == 0)
		return 0;
	if (fd_matches(st, fd))
		err = next_fault(st, KIND_WRITE, call, fd);
	errno = saved;
	return err;
}

int fsync(int fd)
{
	int err = sync_fault(fd, "fsync");

	if (err) {
		errno = err;
		return -1;
	}
	return real_fsync()(fd);
}

int fdatasync(int fd)
{
	int err = sync_fault(fd, "fdatasync");

	if (err) {
		errno = err;
		return -1;
	}
	return real_fdatasync()(fd);
}

ssize_t write(int fd, const void *buf, size_t count)
{
	int err = write_fault(fd, "write");

	if (err) {
		errno = err;
		return -1;
	}
	return real_write()(fd, buf, count);
}

ssize_t pwrite(int fd, const void *buf, size_t count, off_t offset)
{
	int err = write_fault(fd, "pwrite");

	if (err) {
		errno = err;
		return -1;
	}
	return real_pwrite()(fd, buf, count, offset);
}

ssize_t pwrite64(int fd, const void *buf, size_t count, off64_t offset)
{
	int err = write_fault(fd, "pwrite64");

	if (err) {
		errno = err;
		return -1;
	}
	return real_pwrite64()(fd, buf, count, offset);
}

/* ---- the wall clock ---- */

static int64_t wall_offset_ms(void)
{
	const struct settings *st = settings_now();

	return st ? st->wall_offset_ms : 0;
}

static void shift_timespec(struct timespec *ts, int64_t offset_ms)
{
	int64_t ns = (int64_t)ts->tv_nsec + (offset_ms % 1000) * NS_PER_MS;

	ts->tv_sec += (time_t)(offset_ms / 1000);
	if (ns < 0) {
		ns += 1000000000LL;
		ts->tv_sec--;
	} else if (ns >= 1000000000LL) {
		ns -= 1000000000LL;
		ts->tv_sec++;
	}
	ts->tv_nsec = (long)ns;
}

int clock_gettime(clockid_t id, struct timespec *ts)
{
	int rc = real_clock_gettime()(id, ts);

	if (rc == 0 && (id == CLOCK_REALTIME || id == CLOCK_REALTIME_COARSE)) {
		int64_t offset = wall_offset_ms();

		if (offset)
			shift_timespec(ts, offset);
	}
	return rc;
}

int gettimeofday(struct timeval *restrict tv, void *restrict tz)
{
	int rc = real_gettimeofday()(tv, tz);
	int64_t offset;

	if (rc != 0)
		return rc;
	offset = wall_offset_ms();
	if (offset) {
		struct timespec ts = {tv->tv_sec, (long)tv->tv_usec * 1000};

		shift_timespec(&ts, offset);
		tv->tv_sec = ts.tv_sec;
		tv->tv_usec = ts.tv_nsec / 1000;
	}
	return rc;
}

time_t time(time_t *out)
{
	time_t now = real_time()(NULL);
	int64_t offset = wall_offset_ms();

	/* Floor division, so a negative offset of less than a second moves back one second. */
	if (now != (time_t)-1 && offset) {
		int64_t ms = (int64_t)now * 1000 + offset;

		now = (time_t)(ms / 1000 - (ms % 1000 < 0));
	}
	if (out)
		*out = now;
	return now;
}
