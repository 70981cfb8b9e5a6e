/*
 * Storage routes for the output files of Sprocket workers (see storage.h):
 *
 *   POST /v1/storage/upload-request       a signed upload URL for a job's file (worker key)
 *   PUT  /v1/storage/upload/{filename}    the upload; the URL's signature is the credential
 *   GET  /v1/storage/{filename}           the file, also under /v1/deployments/storage/,
 *                                         with HEAD and single byte ranges (client or worker)
 *
 * Every file belongs to the job whose request id starts its name: a key
 * that does not cover the job's model gets 404, as for a missing file, and
 * a finished job takes no more uploads (409). Files are read and written on
 * libuv's thread pool; the request stays unanswered, and its body alive,
 * until the work is done. On the postgres store the job is looked up in
 * the database (pg_storage.c) instead of the local store.
 *
 * SPDX-License-Identifier: MIT
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "auth.h"
#include "clock.h"
#include "error.h"
#include "inferq_error.h"
#include "log.h"
#include "pgq.h"
#include "render.h"
#include "request.h"
#include "routes.h"
#include "storage.h"

#define UPLOAD_PREFIX "/v1/storage/upload/"
#define FILE_PREFIX "/v1/storage/"
#define DEPLOYMENT_FILE_PREFIX "/v1/deployments/storage/"
#define MAX_RANGE_HEADER 256 /* longer Range headers are ignored: the whole file is sent */
#define MAX_QUERY_VALUE 128  /* bytes of the expires and signature parameters */

/* A file read or write on the thread pool, answered on the loop thread. */
typedef struct {
	uv_work_t work;
	server_t *s;
	http_request_t *req;
	char dir[4096];
	char name[STORAGE_NAME_MAX + 1];
	size_t name_len;
	iq_id_t id;
	char range[MAX_RANGE_HEADER + 1];
	int has_range;
	int want_body;
	uint64_t max_bytes;
	int rc;
	char err[256];
	storage_read_t read;
	buf_t warnings; /* of an upload request's body, for its response */
	int on_pg;      /* started on the postgres store */
} file_work_t;

static file_work_t *file_work_new(server_t *s, http_request_t *req, const char *name,
				  size_t name_len, const iq_id_t *id)
{
	file_work_t *fw = xcalloc(1, sizeof(*fw));

	fw->work.data = fw;
	fw->s = s;
	fw->req = req;
	snprintf(fw->dir, sizeof(fw->dir), "%s", storage_dir(s->storage));
	memcpy(fw->name, name, name_len);
	fw->name[name_len] = '\0';
	fw->name_len = name_len;
	fw->id = *id;
	fw->on_pg = s->pg != NULL;
	return fw;
}

/*
 * Decodes the filename segment that follows prefix in req's path and checks
 * it against max_len. Returns 0, or a negative code after sending 400.
 */
static int read_path_name(http_request_t *req, size_t prefix_len, size_t max_len, char *name,
			  size_t *name_len, iq_id_t *id)
{
	const char *seg = req->path + prefix_len;
	size_t seg_len = req->path_len - prefix_len;
	char reason[256], shown[64];
	int rc;

	rc = storage_decode_segment(seg, seg_len, name, STORAGE_NAME_MAX + 1, name_len);
	if (rc == INFERQ_ELIMIT) {
		respond_error(req, 400, "invalid_field", "filename",
			      "filename \"%s\" is longer than %d bytes; use a shorter name",
			      excerpt(seg, seg_len, shown, sizeof(shown)), STORAGE_NAME_MAX);
		return rc;
	}
	if (rc == 0)
		rc = storage_filename_parse(name, *name_len, max_len, id, reason, sizeof(reason));
	else
		snprintf(reason, sizeof(reason), "has a malformed %%XY escape or an encoded NUL");
	if (rc != 0)
		respond_error(req, 400, "invalid_field", "filename", "filename \"%s\" %s",
			      excerpt(seg, seg_len, shown, sizeof(shown)), reason);
	return rc;
}

static void file_not_found(http_request_t *req, const char *name)
{
	respond_error(req, 404, "not_found", "filename",
		      "no file with filename %s; check the name, the file may not be uploaded "
		      "yet, or its job may have been deleted after the retention period",
		      name);
}

static void job_not_found(http_request_t *req, const char *name)
{
	respond_error(req, 404, "not_found", "filename",
		      "no job %.*s for filename %s; start the filename with the request id of "
		      "a job your key's models cover",
		      ID_TEXT_LEN, name, name);
}

/*
 * Judges the job that owns file name, as a lookup found it: found 0 when
 * there is none. With check_key, a job whose model the request's key does
 * not cover counts as missing; with for_upload, a finished job is a
 * conflict. Returns 0, or a negative code after sending 404 or 409.
 */
static int judge_file_job(server_t *s, http_request_t *req, const char *name, int found,
			  const char *model, size_t model_len, job_state_t state, int check_key,
			  int for_upload)
{
	if (!found || (check_key && !auth_covers(s, req, model, model_len))) {
		if (for_upload)
			job_not_found(req, name);
		else
			file_not_found(req, name);
		return INFERQ_ENOTFOUND;
	}
	if (for_upload && job_state_is_terminal(state)) {
		buf_t body = BUF_INIT;

		conflict_body(&body, "invalid_state", NULL, state,
			      "the job is already %s, so it takes no more files; upload a job's "
			      "files before reporting it done or failed",
			      job_state_name(state));
		respond_json(req, 409, &body);
		return INFERQ_ECONFLICT;
	}
	return 0;
}

/*
 * Finds the job that owns file name in the local store and judges it
 * (judge_file_job). Returns 0, or a negative code after sending 404, 409
 * or 503.
 */
static int find_file_job(server_t *s, http_request_t *req, const iq_id_t *id, const char *name,
			 int check_key, int for_upload)
{
	job_t *job = queue_find(s->queue, id);
	job_record_t row;
	int rc;

	if (job && !job->uncommitted_insert)
		return judge_file_job(s, req, name, 1, job->rec.model->data, job->rec.model->len,
				      job->rec.state, check_key, for_upload);
	rc = store_get(s->store, id, &row);
	if (rc == INFERQ_EIO) {
		respond_error(req, 503, "store_unavailable", NULL,
			      "the store could not be read; retry later");
		return rc;
	}
	if (rc != 0)
		return judge_file_job(s, req, name, 0, NULL, 0, JOB_PENDING, check_key, for_upload);
	rc = judge_file_job(s, req, name, 1, row.model->data, row.model->len, row.state, check_key,
			    for_upload);
	job_record_clear(&row);
	return rc;
}

/* --- POST /v1/storage/upload-request -------------------------------------- */

static const char *const upload_request_fields[] = {"filename", NULL};

static void render_upload_urls(buf_t *out, server_t *s, const char *name, int64_t expires_s)
{
	const char *base = storage_public_url(s->storage);
	char signature[STORAGE_SIGNATURE_HEX + 1];
	char expires_at[RFC3339_LEN + 1];

	storage_sign(storage_secret(s->storage), name, strlen(name), expires_s, signature);
	clock_format_rfc3339(expires_s * 1000, expires_at);
	/* base and name hold no character that JSON must escape (both are checked). */
	buf_printf(out,
		   "{\"path\":\"%s" FILE_PREFIX "%s\",\"upload_url\":{\"url\":\"%s" UPLOAD_PREFIX
		   "%s?expires=%lld&signature=%s\",\"method\":\"PUT\",\"headers\":"
		   "{\"Content-Type\":\"%s\"}},\"expires_at\":\"%s\"}",
		   base, name, base, name, (long long)expires_s, signature,
		   storage_content_type(name, strlen(name)), expires_at);
}

static void reply_upload_urls(server_t *s, http_request_t *req, const char *name,
			      const buf_t *warnings)
{
	buf_t reply = BUF_INIT;
	int64_t expires_s = (clock_wall_ms() + s->config.upload_url_ttl_ms) / 1000;

	render_upload_urls(&reply, s, name, expires_s);
	if (warnings->len)
		render_add_raw_field(&reply, "warnings", warnings->data, warnings->len);
	respond_json(req, 200, &reply);
	log_debug("storage", "upload URL issued for %s, valid until %lld", name,
		  (long long)expires_s);
}

static void on_upload_request_job(void *ctx, int rc, const char *model, size_t model_len,
				  job_state_t state, const char *err)
{
	file_work_t *fw = ctx;

	if (rc != 0 && rc != INFERQ_ENOTFOUND)
		pgq_respond_unavailable(fw->s, fw->req, rc, err);
	else if (judge_file_job(fw->s, fw->req, fw->name, rc == 0, model, model_len, state, 1,
				1) == 0)
		reply_upload_urls(fw->s, fw->req, fw->name, &fw->warnings);
	buf_free(&fw->warnings);
	free(fw);
}

void handle_storage_upload_request(server_t *s, http_request_t *req)
{
	input_error_t err;
	body_t b;
	buf_t name = BUF_INIT;
	char reason[256], shown[64];
	file_work_t *fw;
	iq_id_t id;

	if (body_parse(&s->config, req->body, req->body_len, upload_request_fields, &b, &err) != 0 ||
	    read_string(&b, "filename", 1, 1024, &name, NULL, &err) != 0) {
		respond_input_error(req, &err);
		goto out;
	}
	if (storage_filename_parse(name.data, name.len, s->config.max_filename_length, &id, reason,
				   sizeof(reason)) != 0) {
		respond_error(req, 400, "invalid_field", "filename", "filename \"%s\" %s",
			      excerpt(name.data, name.len, shown, sizeof(shown)), reason);
		goto out;
	}
	if (s->pg) {
		fw = file_work_new(s, req, name.data, name.len, &id);
		buf_append(&fw->warnings, b.warnings.data, b.warnings.len);
		pgq_file_job(s, &id, NULL, on_upload_request_job, fw);
		goto out;
	}
	if (find_file_job(s, req, &id, name.data, 1, 1) != 0)
		goto out;
	reply_upload_urls(s, req, name.data, &b.warnings);
out:
	body_free(&b);
	buf_free(&name);
}

/* --- PUT /v1/storage/upload/{filename} ------------------------------------ */

/*
 * Checks the signature of a PUT to an upload URL. Returns 0, or
 * INFERQ_EAUTH / INFERQ_ETIMEDOUT as storage_signature_check does.
 */
static int check_upload_signature(const server_t *s, const http_request_t *req, const char *name,
				  size_t name_len)
{
	char expires[MAX_QUERY_VALUE + 1], signature[MAX_QUERY_VALUE + 1];
	size_t expires_len = 0, signature_len = 0;

	if (http_query_param(req->query, req->query_len, "expires", expires, sizeof(expires),
			     &expires_len) != 1 ||
	    http_query_param(req->query, req->query_len, "signature", signature,
			     sizeof(signature), &signature_len) != 1)
		return INFERQ_EAUTH;
	return storage_signature_check(storage_secret(s->storage), name, name_len, expires,
				       expires_len, signature, signature_len,
				       clock_wall_ms() / 1000);
}

size_t storage_body_limit(void *ctx, const struct http_request *req, const char **flag)
{
	server_t *s = ctx;
	size_t prefix = strlen(UPLOAD_PREFIX);
	char name[STORAGE_NAME_MAX + 1];
	size_t name_len;

	/* Only a PUT to a valid upload URL may send more than --max-body-bytes. */
	if (s->storage && strcmp(req->method_name, "PUT") == 0 && req->path_len > prefix &&
	    memcmp(req->path, UPLOAD_PREFIX, prefix) == 0 &&
	    storage_decode_segment(req->path + prefix, req->path_len - prefix, name, sizeof(name),
				   &name_len) == 0 &&
	    check_upload_signature(s, req, name, name_len) == 0) {
		*flag = "--max-upload-bytes";
		return (size_t)s->config.max_upload_bytes;
	}
	return s->config.max_body_bytes;
}

static void upload_work(uv_work_t *w)
{
	file_work_t *fw = w->data;

	fw->rc = storage_write_file(fw->dir, fw->name, fw->req->body, fw->req->body_len, fw->err,
				    sizeof(fw->err));
}

static void on_orphan_unlinked(uv_fs_t *fs)
{
	uv_fs_req_cleanup(fs);
	free(fs);
}

static void reply_stored(file_work_t *fw)
{
	buf_t reply = BUF_INIT;
	char id_text[ID_TEXT_LEN + 1];

	id_format(&fw->id, id_text);
	buf_printf(&reply, "{\"path\":\"%s" FILE_PREFIX "%s\",\"size\":%zu}",
		   storage_public_url(fw->s->storage), fw->name, fw->req->body_len);
	log_info("storage", "stored %s (%zu bytes) request_id=%s", fw->name, fw->req->body_len,
		 id_text);
	respond_json(fw->req, 200, &reply);
}

/* Deletes the file of fw, whose job retention deleted while the file was written. */
static void unlink_orphan(file_work_t *fw)
{
	uv_fs_t *fs = xcalloc(1, sizeof(*fs));
	char path[sizeof(fw->dir) + sizeof(fw->name) + 1];

	snprintf(path, sizeof(path), "%s/%s", fw->dir, fw->name);
	uv_fs_unlink(fw->s->loop, fs, path, on_orphan_unlinked);
}

static void on_upload_recorded(void *ctx, int rc, const char *err)
{
	file_work_t *fw = ctx;

	if (rc == INFERQ_ENOTFOUND) {
		unlink_orphan(fw);
		file_not_found(fw->req, fw->name);
	} else if (rc != 0) {
		pgq_respond_unavailable(fw->s, fw->req, rc, err);
	} else {
		reply_stored(fw);
	}
	free(fw);
}

static void upload_done(uv_work_t *w, int status)
{
	file_work_t *fw = w->data;
	server_t *s = fw->s;
	http_request_t *req = fw->req;
	char id_text[ID_TEXT_LEN + 1];

	id_format(&fw->id, id_text);
	if (fw->rc != 0) {
		log_warn("storage", "cannot store %s/%s: %s; check the disk's free space and "
				    "permissions request_id=%s",
			 fw->dir, fw->name, fw->err, id_text);
		respond_error(req, 503, "storage_unavailable", NULL,
			      "the file could not be stored (%s); retry the upload", fw->err);
		goto out;
	}
	if (fw->on_pg && s->pg == NULL) {
		/* Only an orphaned request outlives the connections, and the node is stopping. */
		respond_error(req, 503, "store_unavailable", NULL,
			      "the server is stopping; retry the upload");
		goto out;
	}
	if (fw->on_pg) {
		pgq_file_stored(s, fw->name, req->body_len, on_upload_recorded, fw);
		return;
	}
	/* Retention may have deleted the job meanwhile; its file must not outlive it. */
	if (find_file_job(s, req, &fw->id, fw->name, 0, 0) != 0) {
		unlink_orphan(fw);
		goto out;
	}
	reply_stored(fw);
out:
	free(fw);
}

static void on_upload_job(void *ctx, int rc, const char *model, size_t model_len,
			  job_state_t state, const char *err)
{
	file_work_t *fw = ctx;

	if (rc != 0 && rc != INFERQ_ENOTFOUND)
		pgq_respond_unavailable(fw->s, fw->req, rc, err);
	else if (judge_file_job(fw->s, fw->req, fw->name, rc == 0, model, model_len, state, 0,
				1) == 0) {
		IQ_ASSERT(uv_queue_work(fw->s->loop, &fw->work, upload_work, upload_done) == 0);
		return;
	}
	free(fw);
}

void handle_storage_upload(server_t *s, http_request_t *req)
{
	char name[STORAGE_NAME_MAX + 1];
	char expired_at[RFC3339_LEN + 1];
	size_t name_len = 0;
	iq_id_t id;
	file_work_t *fw;
	int rc;

	if (read_path_name(req, strlen(UPLOAD_PREFIX), s->config.max_filename_length, name,
			   &name_len, &id) != 0)
		return;
	rc = check_upload_signature(s, req, name, name_len);
	if (rc == INFERQ_ETIMEDOUT) {
		char expires[32] = "";

		http_query_param(req->query, req->query_len, "expires", expires, sizeof(expires),
				 NULL);
		clock_format_rfc3339(strtoll(expires, NULL, 10) * 1000, expired_at);
		respond_error(req, 403, "upload_url_expired", NULL,
			      "the upload URL for %s expired at %s; request a new one with POST "
			      "/v1/storage/upload-request",
			      name, expired_at);
		return;
	}
	if (rc != 0) {
		respond_error(req, 403, "invalid_signature", "signature",
			      "the upload URL's expires and signature parameters are missing or "
			      "do not match %s; use the URL from POST /v1/storage/upload-request "
			      "unchanged",
			      name);
		return;
	}
	fw = file_work_new(s, req, name, name_len, &id);
	if (s->pg) {
		/* The file's row comes first, so a crash after the write leaves no file
		 * that retention cannot find. */
		pgq_file_job(s, &id, fw->name, on_upload_job, fw);
		return;
	}
	if (find_file_job(s, req, &id, name, 0, 1) != 0) {
		free(fw);
		return;
	}
	IQ_ASSERT(uv_queue_work(s->loop, &fw->work, upload_work, upload_done) == 0);
}

/* --- GET and HEAD /v1/storage/{filename} ---------------------------------- */

static void download_work(uv_work_t *w)
{
	file_work_t *fw = w->data;

	fw->rc = storage_read_file(fw->dir, fw->name, fw->has_range ? fw->range : NULL,
				   strlen(fw->range), fw->want_body, fw->max_bytes, &fw->read,
				   fw->err, sizeof(fw->err));
}

static void respond_file(file_work_t *fw)
{
	const storage_read_t *rd = &fw->read;
	char headers[160];
	int n;

	n = snprintf(headers, sizeof(headers), "Accept-Ranges: bytes\r\n");
	if (rd->range.partial)
		snprintf(headers + n, sizeof(headers) - (size_t)n,
			 "Content-Range: bytes %llu-%llu/%llu\r\n",
			 (unsigned long long)rd->range.start,
			 (unsigned long long)(rd->range.start + rd->range.count - 1),
			 (unsigned long long)rd->size);
	http_respond(fw->req, rd->range.partial ? 206 : 200,
		     storage_content_type(fw->name, fw->name_len), headers,
		     fw->want_body ? rd->body.data : NULL, (size_t)rd->range.count);
}

static void download_done(uv_work_t *w, int status)
{
	file_work_t *fw = w->data;
	http_request_t *req = fw->req;
	char header[64], shown[64];
	buf_t body = BUF_INIT;

	switch (fw->rc) {
	case 0:
		respond_file(fw);
		break;
	case INFERQ_ENOTFOUND:
		file_not_found(req, fw->name);
		break;
	case INFERQ_ERANGE:
		snprintf(header, sizeof(header), "Content-Range: bytes */%llu\r\n",
			 (unsigned long long)fw->read.size);
		error_body(&body, 416, "range_not_satisfiable", "Range",
			   "Range %s selects no byte of %s, which is %llu bytes long; request "
			   "bytes from 0 to %llu",
			   excerpt(fw->range, strlen(fw->range), shown, sizeof(shown)), fw->name,
			   (unsigned long long)fw->read.size,
			   (unsigned long long)(fw->read.size ? fw->read.size - 1 : 0));
		http_respond(req, 416, NULL, header, body.data, body.len);
		break;
	case INFERQ_ELIMIT:
		respond_error(req, 500, "file_too_large",
			      NULL, "%s is %llu bytes, over --max-upload-bytes (%llu), which bounds "
			      "a response held in memory; request a byte range of at most that "
			      "size, or raise --max-upload-bytes",
			      fw->name, (unsigned long long)fw->read.size,
			      (unsigned long long)fw->max_bytes);
		break;
	default:
		log_warn("storage", "cannot read %s/%s: %s", fw->dir, fw->name, fw->err);
		respond_error(req, 503, "storage_unavailable", NULL,
			      "the file could not be read (%s); retry later", fw->err);
		break;
	}
	buf_free(&body);
	buf_free(&fw->read.body);
	free(fw);
}

static void on_download_job(void *ctx, int rc, const char *model, size_t model_len,
			    job_state_t state, const char *err)
{
	file_work_t *fw = ctx;

	if (rc != 0 && rc != INFERQ_ENOTFOUND)
		pgq_respond_unavailable(fw->s, fw->req, rc, err);
	else if (judge_file_job(fw->s, fw->req, fw->name, rc == 0, model, model_len, state, 1,
				0) == 0) {
		IQ_ASSERT(uv_queue_work(fw->s->loop, &fw->work, download_work, download_done) == 0);
		return;
	}
	free(fw);
}

void handle_storage_get(server_t *s, http_request_t *req)
{
	size_t prefix = strlen(FILE_PREFIX);
	char name[STORAGE_NAME_MAX + 1];
	size_t name_len = 0, range_len = 0;
	const char *range;
	file_work_t *fw;
	iq_id_t id;

	if (req->path_len > strlen(DEPLOYMENT_FILE_PREFIX) &&
	    memcmp(req->path, DEPLOYMENT_FILE_PREFIX, strlen(DEPLOYMENT_FILE_PREFIX)) == 0)
		prefix = strlen(DEPLOYMENT_FILE_PREFIX);
	/* Files stored under a larger --max-filename-length stay readable. */
	if (read_path_name(req, prefix, STORAGE_NAME_MAX, name, &name_len, &id) != 0)
		return;
	if (!s->pg && find_file_job(s, req, &id, name, 1, 0) != 0)
		return;

	fw = file_work_new(s, req, name, name_len, &id);
	fw->want_body = strcmp(req->method_name, "GET") == 0;
	fw->max_bytes = fw->want_body ? s->config.max_upload_bytes : UINT64_MAX;
	/* RFC 9110 section 14.2: GET is the only method with range handling; HEAD ignores it. */
	range = http_request_header(req, "range", &range_len);
	if (range && fw->want_body && range_len <= MAX_RANGE_HEADER) {
		memcpy(fw->range, range, range_len);
		fw->has_range = 1;
	}
	if (s->pg) {
		pgq_file_job(s, &id, NULL, on_download_job, fw);
		return;
	}
	IQ_ASSERT(uv_queue_work(s->loop, &fw->work, download_work, download_done) == 0);
}
