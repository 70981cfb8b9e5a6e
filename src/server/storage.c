/*
 * Output-file storage on disk (see storage.h): the directory, the signing
 * secret, the start-up sweep, the deletion of files whose jobs retention
 * deleted, and the blocking file reads and writes that the routes run on
 * libuv's thread pool.
 *
 * A file is written to a temp file in the same directory, fsynced, renamed
 * over its name and the directory fsynced, so a reader or a crash sees the
 * old file or the new one, never a part.
 *
 * SPDX-License-Identifier: MIT
 */
#include "storage.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "alloc.h"
#include "inferq_error.h"
#include "log.h"
#include "server.h"

struct storage {
	char dir[PATH_MAX];
	char public_url[STORAGE_URL_MAX + 1];
	uint8_t secret[STORAGE_SECRET_BYTES];
};

const char *storage_public_url(const storage_t *st)
{
	return st->public_url;
}

const char *storage_dir(const storage_t *st)
{
	return st->dir;
}

const uint8_t *storage_secret(const storage_t *st)
{
	return st->secret;
}

static void fsync_dir(const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

	if (fd >= 0) {
		fsync(fd);
		close(fd);
	}
}

/* --- The signing secret --------------------------------------------------- */

static int create_secret(storage_t *st, const char *data_dir, const char *path)
{
	int fd, ok;

	random_bytes(st->secret, sizeof(st->secret));
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0)
		goto fail;
	ok = fchmod(fd, 0600) == 0 &&
	     write(fd, st->secret, sizeof(st->secret)) == (ssize_t)sizeof(st->secret) &&
	     fsync(fd) == 0;
	if (close(fd) != 0)
		ok = 0;
	if (!ok) {
		int saved = errno;

		unlink(path);
		errno = saved;
		goto fail;
	}
	fsync_dir(data_dir);
	log_info("storage", "created the upload signing secret %s (mode 0600)", path);
	return 0;
fail:
	log_error("storage", "cannot create the upload signing secret %s: %s; check the data "
			     "dir's permissions and free space",
		  path, strerror(errno));
	return INFERQ_EIO;
}

/* Loads DATA_DIR/storage.key, creating it on first start. */
static int load_secret(storage_t *st, const char *data_dir)
{
	char path[PATH_MAX];
	struct stat sb;
	int fd, rc = INFERQ_EIO;
	ssize_t n;

	snprintf(path, sizeof(path), "%s/%s", data_dir, STORAGE_SECRET_FILE);
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0 && errno == ENOENT)
		return create_secret(st, data_dir, path);
	if (fd < 0 || fstat(fd, &sb) != 0) {
		log_error("storage", "cannot read the upload signing secret %s: %s", path,
			  strerror(errno));
		goto out;
	}
	if (!S_ISREG(sb.st_mode) || sb.st_size != STORAGE_SECRET_BYTES) {
		log_error("storage", "the upload signing secret %s is not a regular file of %d bytes "
				     "(it is %lld bytes): restore it from a backup, or delete it to "
				     "create a new one, which makes every upload URL issued so far "
				     "invalid",
			  path, STORAGE_SECRET_BYTES, (long long)sb.st_size);
		rc = INFERQ_EINVAL;
		goto out;
	}
	if (sb.st_mode & 077)
		log_warn("storage", "the upload signing secret %s can be read by other users (mode "
				    "%03o); run chmod 600 on it",
			 path, (unsigned)(sb.st_mode & 0777));
	n = read(fd, st->secret, sizeof(st->secret));
	if (n != (ssize_t)sizeof(st->secret)) {
		log_error("storage", "cannot read the upload signing secret %s: %s", path,
			  n < 0 ? strerror(errno) : "short read");
		goto out;
	}
	rc = 0;
out:
	if (fd >= 0)
		close(fd);
	return rc;
}

/* --- Start-up ------------------------------------------------------------- */

/* Returns 1 when the job with id still exists (in memory or in the store), 0 when not. */
static int job_exists(server_t *s, const iq_id_t *id, int *read_failed)
{
	job_record_t row;
	int rc;

	if (queue_find(s->queue, id))
		return 1;
	rc = store_get(s->store, id, &row);
	if (rc == 0) {
		job_record_clear(&row);
		return 1;
	}
	if (rc != INFERQ_ENOTFOUND)
		*read_failed = 1;
	return rc != INFERQ_ENOTFOUND;
}

/*
 * Removes temp files of uploads a stop or crash interrupted, and files of
 * jobs deleted while their files were not (a crash between the purge's
 * commit and the file deletion). Files with other names are left alone.
 *
 * With shared set (the postgres store, whose nodes share the directory), a
 * temp file may belong to an upload another node is writing, so only temp
 * files older than STORAGE_TEMP_STALE_S go. Files of deleted jobs are then
 * left to the database's file sweep (pg_storage.c).
 */
static void sweep(server_t *s, storage_t *st, int shared)
{
	time_t stale_before = time(NULL) - STORAGE_TEMP_STALE_S;
	DIR *d = opendir(st->dir);
	struct dirent *e;
	size_t temps = 0, orphans = 0;
	int read_failed = 0;

	if (d == NULL) {
		log_warn("storage", "cannot list %s to remove leftover files: %s", st->dir,
			 strerror(errno));
		return;
	}
	while ((e = readdir(d)) != NULL && !read_failed) {
		char reason[8];
		iq_id_t id;
		size_t len = strlen(e->d_name);

		if (strncmp(e->d_name, STORAGE_TEMP_PREFIX, strlen(STORAGE_TEMP_PREFIX)) == 0) {
			struct stat sb;

			if (!shared || (fstatat(dirfd(d), e->d_name, &sb, AT_SYMLINK_NOFOLLOW) == 0 &&
					sb.st_mtime < stale_before))
				temps += unlinkat(dirfd(d), e->d_name, 0) == 0;
			continue;
		}
		if (shared)
			continue;
		if (storage_filename_parse(e->d_name, len, STORAGE_NAME_MAX, &id, reason,
					   sizeof(reason)) != 0)
			continue;
		if (!job_exists(s, &id, &read_failed))
			orphans += unlinkat(dirfd(d), e->d_name, 0) == 0;
	}
	closedir(d);
	if (read_failed)
		log_warn("storage", "the store could not be read while looking for files of deleted "
				    "jobs; they stay until the next start");
	if (temps + orphans > 0) {
		fsync_dir(st->dir);
		log_info("storage", "removed %zu unfinished uploads and %zu files of deleted jobs",
			 temps, orphans);
	}
}

int storage_open(server_t *s, const char *scheme, const char *listen, int port,
		 const uint8_t *shared_secret)
{
	storage_t *st = xcalloc(1, sizeof(*st));
	char host[256] = "";
	int n;

	if (s->config.storage_dir[0])
		n = snprintf(st->dir, sizeof(st->dir), "%s", s->config.storage_dir);
	else
		n = snprintf(st->dir, sizeof(st->dir), "%s/%s", s->config.data_dir, STORAGE_DIR);
	if (n < 0 || (size_t)n >= sizeof(st->dir)) {
		log_error("storage", "the storage directory path under %s is too long; use a "
				     "shorter --data-dir or --storage-dir",
			  s->config.storage_dir[0] ? s->config.storage_dir : s->config.data_dir);
		goto fail;
	}
	if (mkdir(st->dir, 0700) != 0 && errno != EEXIST) {
		log_error("storage", "cannot create %s: %s; check the permissions of its parent "
				     "directory, or set --storage-dir",
			  st->dir, strerror(errno));
		goto fail;
	}
	if (shared_secret)
		memcpy(st->secret, shared_secret, sizeof(st->secret));
	else if (load_secret(st, s->config.data_dir) != 0)
		goto fail;

	if (s->config.public_url[0]) {
		snprintf(st->public_url, sizeof(st->public_url), "%s", s->config.public_url);
	} else {
		if (gethostname(host, sizeof(host)) != 0)
			host[0] = '\0';
		host[sizeof(host) - 1] = '\0';
		if (storage_default_public_url(scheme, listen, port, host, st->public_url,
					       sizeof(st->public_url)) != 0) {
			log_error("storage", "the public URL derived from the listen address %s is too "
					     "long; set --public-url",
				  listen);
			goto fail;
		}
	}
	sweep(s, st, shared_secret != NULL);
	s->storage = st;
	log_info("storage", "output files in %s, served under %s/v1/storage/; max_upload_bytes=%llu "
			    "upload_url_ttl=%llds max_filename_length=%zu",
		 st->dir, st->public_url, (unsigned long long)s->config.max_upload_bytes,
		 (long long)(s->config.upload_url_ttl_ms / 1000), s->config.max_filename_length);
	return 0;
fail:
	explicit_bzero(st->secret, sizeof(st->secret));
	free(st);
	return INFERQ_EIO;
}

void storage_close(server_t *s)
{
	if (s->storage == NULL)
		return;
	explicit_bzero(s->storage->secret, sizeof(s->storage->secret));
	free(s->storage);
	s->storage = NULL;
}

/* --- Files of deleted jobs ------------------------------------------------ */

typedef struct {
	uv_work_t work;
	char dir[PATH_MAX];
	iq_id_t *ids; /* sorted in the worker */
	size_t count;
	size_t removed;
	int list_errno; /* errno of opendir, 0 when the directory was read */
} forget_t;

static int compare_ids(const void *a, const void *b)
{
	return memcmp(a, b, sizeof(iq_id_t));
}

static void forget_work(uv_work_t *w)
{
	forget_t *f = w->data;
	struct dirent *e;
	DIR *d;

	qsort(f->ids, f->count, sizeof(*f->ids), compare_ids);
	d = opendir(f->dir);
	if (d == NULL) {
		f->list_errno = errno;
		return;
	}
	while ((e = readdir(d)) != NULL) {
		char reason[8];
		iq_id_t id;

		if (storage_filename_parse(e->d_name, strlen(e->d_name), STORAGE_NAME_MAX, &id, reason,
					   sizeof(reason)) != 0)
			continue;
		if (bsearch(&id, f->ids, f->count, sizeof(*f->ids), compare_ids))
			f->removed += unlinkat(dirfd(d), e->d_name, 0) == 0;
	}
	closedir(d);
	if (f->removed > 0)
		fsync_dir(f->dir);
}

static void forget_done(uv_work_t *w, int status)
{
	forget_t *f = w->data;

	if (f->list_errno)
		log_warn("storage", "cannot list %s to delete the files of %zu deleted jobs: %s; "
				    "they are removed at the next start",
			 f->dir, f->count, strerror(f->list_errno));
	else if (f->removed > 0)
		log_info("retention", "deleted %zu output files of deleted jobs", f->removed);
	free(f->ids);
	free(f);
}

void storage_forget_jobs(server_t *s, iq_id_t *ids, size_t count)
{
	forget_t *f;

	if (count == 0 || s->storage == NULL) {
		free(ids);
		return;
	}
	f = xcalloc(1, sizeof(*f));
	f->work.data = f;
	snprintf(f->dir, sizeof(f->dir), "%s", s->storage->dir);
	f->ids = ids;
	f->count = count;
	IQ_ASSERT(uv_queue_work(s->loop, &f->work, forget_work, forget_done) == 0);
}

/* --- Blocking file I/O, run on the thread pool ---------------------------- */

static int write_all(int fd, const char *data, size_t len)
{
	while (len > 0) {
		ssize_t n = write(fd, data, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -1;
		data += n;
		len -= (size_t)n;
	}
	return 0;
}

int storage_write_file(const char *dir, const char *name, const char *data, size_t len,
		       char *err, size_t errlen)
{
	char tmp[PATH_MAX], path[PATH_MAX];
	const char *step = "create a temp file";
	int fd;

	snprintf(tmp, sizeof(tmp), "%s/%sXXXXXX", dir, STORAGE_TEMP_PREFIX);
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	fd = mkostemp(tmp, O_CLOEXEC);
	if (fd < 0)
		goto fail;
	step = "write";
	if (write_all(fd, data, len) != 0)
		goto fail_unlink;
	step = "fsync";
	if (fsync(fd) != 0)
		goto fail_unlink;
	step = "close";
	if (close(fd) != 0) {
		fd = -1;
		goto fail_unlink;
	}
	fd = -1;
	step = "rename";
	if (rename(tmp, path) != 0)
		goto fail_unlink;
	fsync_dir(dir);
	return 0;
fail_unlink : {
	int saved = errno;

	if (fd >= 0)
		close(fd);
	unlink(tmp);
	errno = saved;
}
fail:
	snprintf(err, errlen, "%s failed: %s", step, strerror(errno));
	return errno == ENOSPC || errno == EDQUOT ? INFERQ_ELIMIT : INFERQ_EIO;
}

static int read_range(int fd, uint64_t start, uint64_t count, buf_t *out)
{
	if (count == 0)
		return 0;
	buf_reserve(out, (size_t)count);
	while (out->len < count) {
		ssize_t n = pread(fd, out->data + out->len, (size_t)(count - out->len),
				  (off_t)(start + out->len));

		if (n < 0 && errno == EINTR)
			continue;
		if (n == 0)
			errno = 0;
		if (n <= 0)
			return -1;
		out->len += (size_t)n;
	}
	out->data[out->len] = '\0';
	return 0;
}

int storage_read_file(const char *dir, const char *name, const char *range, size_t range_len,
		      int want_body, uint64_t max_bytes, storage_read_t *out, char *err,
		      size_t errlen)
{
	char path[PATH_MAX];
	struct stat sb;
	int fd, rc;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0) {
		snprintf(err, errlen, "open failed: %s", strerror(errno));
		return errno == ENOENT || errno == ELOOP ? INFERQ_ENOTFOUND : INFERQ_EIO;
	}
	if (fstat(fd, &sb) != 0) {
		snprintf(err, errlen, "fstat failed: %s", strerror(errno));
		rc = INFERQ_EIO;
		goto out;
	}
	if (!S_ISREG(sb.st_mode)) {
		snprintf(err, errlen, "not a regular file");
		rc = INFERQ_ENOTFOUND;
		goto out;
	}
	out->size = (uint64_t)sb.st_size;
	rc = storage_range_resolve(range, range_len, out->size, &out->range);
	if (rc != 0)
		goto out;
	if (out->range.count > max_bytes) {
		rc = INFERQ_ELIMIT;
		goto out;
	}
	if (want_body && read_range(fd, out->range.start, out->range.count, &out->body) != 0) {
		snprintf(err, errlen, "read failed: %s",
			 errno ? strerror(errno) : "the file shrank while it was read");
		rc = INFERQ_EIO;
	}
out:
	close(fd);
	return rc;
}
