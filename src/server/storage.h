/*
 * Output files of Sprocket workers. A worker requests an upload URL for
 * "{request_id}-{name}", PUTs the bytes to that signed URL (it sends no API
 * key there), and puts the file's download URL in the job's outputs;
 * clients then GET the file with a key that covers the job's model.
 *
 * Files live in --storage-dir (default DATA_DIR/storage) under their
 * validated filename, which is the only name ever joined to that directory,
 * so no request can reach a path outside it. A file belongs to the job
 * whose id starts its name and is deleted with that job when retention
 * deletes it. Upload URLs carry an HMAC-SHA256 signature made with the
 * secret in DATA_DIR/storage.key, or, on the postgres store, with the
 * secret every node reads from the database (pg_storage.c).
 *
 * storage_rules.c has the pure parts (names, signatures, ranges, content
 * types, the public URL), safe on any thread; storage.c the directory, the
 * secret and the file I/O, which runs on libuv's thread pool; and
 * handlers_storage.c the routes. Everything else runs on the loop thread.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef INFERQ_STORAGE_H
#define INFERQ_STORAGE_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "ids.h"

struct server;

#define STORAGE_DIR "storage"            /* under the data dir */
#define STORAGE_SECRET_FILE "storage.key" /* under the data dir, mode 0600 */
#define STORAGE_SECRET_BYTES 32
#define STORAGE_SIGNATURE_HEX 64         /* hex digits of an HMAC-SHA256 */
#define STORAGE_NAME_MAX 255             /* NAME_MAX of common file systems */
#define STORAGE_URL_MAX 512              /* bytes of --public-url, without the NUL */
#define STORAGE_TEMP_PREFIX ".upload-"   /* temp files; no valid filename starts with '.' */
#define STORAGE_TEMP_STALE_S 3600        /* a shared directory's temp file this old is abandoned */

/* --- Pure rules (storage_rules.c) ----------------------------------------- */

/*
 * Checks a filename "{request_id}-{name}": a 36-character lowercase UUID, a
 * '-', then a name of A-Z a-z 0-9 . _ - that does not start with '.' and
 * contains no "..", the whole at most max_len bytes. Stores the id in *id.
 * Returns 0, or INFERQ_EINVAL with the reason and the fix in reason (a
 * sentence without the value, which the caller quotes).
 */
int storage_filename_parse(const char *name, size_t len, size_t max_len, iq_id_t *id,
			   char *reason, size_t reason_len);

/*
 * Percent-decodes one path segment text[0..len) into out (outlen bytes with
 * room for a NUL). '+' stays a '+'. Returns 0 with *out_len set, or
 * INFERQ_EINVAL for a malformed %XY or a decoded NUL, or INFERQ_ELIMIT when
 * it does not fit.
 */
int storage_decode_segment(const char *text, size_t len, char *out, size_t outlen,
			   size_t *out_len);

/*
 * Writes the lowercase hex HMAC-SHA256 of "PUT\n{filename}\n{expires}"
 * under secret, and a NUL, into out. expires is Unix seconds.
 */
void storage_sign(const uint8_t secret[STORAGE_SECRET_BYTES], const char *filename,
		  size_t filename_len, int64_t expires, char out[STORAGE_SIGNATURE_HEX + 1]);

/*
 * Checks the query parameters of a signed upload URL: expires (decimal Unix
 * seconds) and signature (64 hex digits, either case), compared with the
 * expected signature in constant time. Returns 0 when they are authentic
 * and expires >= now_s, INFERQ_EAUTH when missing, malformed or not
 * matching, INFERQ_ETIMEDOUT when authentic but expired.
 */
int storage_signature_check(const uint8_t secret[STORAGE_SECRET_BYTES], const char *filename,
			    size_t filename_len, const char *expires, size_t expires_len,
			    const char *signature, size_t signature_len, int64_t now_s);

/* One byte range of a file: first byte and count. */
typedef struct {
	uint64_t start;
	uint64_t count;
	int partial; /* 1: answer 206 with this range; 0: the whole file with 200 */
} storage_range_t;

/*
 * Resolves a Range header (value[0..len), or NULL when absent) against a
 * file of size bytes, following RFC 9110 section 14: "bytes=a-b", "bytes=a-"
 * and "bytes=-n" select one range (b is clamped to the last byte). An
 * absent, malformed or multi-range header, or another unit, selects the
 * whole file. Returns 0 with *out filled, or INFERQ_ERANGE when the single
 * range is unsatisfiable (first byte at or past the end, "bytes=-0", or any
 * range of an empty file), which is answered 416.
 */
int storage_range_resolve(const char *value, size_t len, uint64_t size, storage_range_t *out);

/*
 * Returns the media type for a filename's extension (case-insensitive):
 * mp4, webm, mov, png, jpg and jpeg, webp, gif, json, txt, wav, mp3; else
 * "application/octet-stream".
 */
const char *storage_content_type(const char *name, size_t len);

/*
 * Writes the default public base URL for a --listen value and the bound
 * port into out: "{scheme}://HOST:PORT" (brackets kept for IPv6). A
 * wildcard host (0.0.0.0 or [::]) is replaced by hostname, or by 127.0.0.1
 * when hostname is NULL or empty. Returns 0, or INFERQ_ELIMIT when it does
 * not fit in outlen.
 */
int storage_default_public_url(const char *scheme, const char *listen, int port,
			       const char *hostname, char *out, size_t outlen);

/*
 * Checks a --public-url value: "http://" or "https://", a host, then an
 * optional port and path; printable ASCII without spaces, quotes,
 * backslashes, '?' or '#', at most STORAGE_URL_MAX bytes. Returns 0 or
 * INFERQ_EINVAL.
 */
int storage_public_url_check(const char *url);

/* --- Server side (storage.c) ---------------------------------------------- */

typedef struct storage storage_t;

/*
 * Sets up storage for s once the store is loaded and the listener is bound:
 * creates --storage-dir (default DATA_DIR/storage, mode 0700), settles the
 * public base URL (--public-url, or scheme, listen and the bound port) and
 * removes temp files left by an interrupted upload. With shared_secret NULL
 * (the local store) it loads or creates the signing secret file (0600,
 * fsynced) and removes files whose job no longer exists (one store read per
 * file). With shared_secret (the postgres store's, from the database) it
 * signs with that and removes only temp files older than
 * STORAGE_TEMP_STALE_S, since other nodes share the directory. Sets
 * s->storage. Returns 0, or INFERQ_EIO / INFERQ_EINVAL after logging the
 * cause and the remedy. Loop thread, before serving.
 */
int storage_open(struct server *s, const char *scheme, const char *listen, int port,
		 const uint8_t *shared_secret);

/* Frees s->storage; accepts NULL. Call after the loop stopped. */
void storage_close(struct server *s);

/* Returns the public base URL without a trailing '/'. */
const char *storage_public_url(const storage_t *st);

/* Returns the directory of the files, DATA_DIR/storage. */
const char *storage_dir(const storage_t *st);

/* Returns the signing secret. Never log it or send it. */
const uint8_t *storage_secret(const storage_t *st);

/*
 * Deletes, off the loop thread, the files of the count jobs in ids, which
 * retention has just deleted from the store. Takes over ids (malloc'd;
 * may be NULL when count is 0).
 */
void storage_forget_jobs(struct server *s, iq_id_t *ids, size_t count);

/*
 * The body_limit hook of http_limits_t (ctx is the server): a PUT to an
 * upload URL with a valid, unexpired signature may send --max-upload-bytes;
 * every other request --max-body-bytes. Loop thread.
 */
struct http_request;
size_t storage_body_limit(void *ctx, const struct http_request *req, const char **flag);

/*
 * Writes data[0..len) to dir/name through a temp file in dir: write, fsync,
 * rename over name, fsync dir. name must be a checked filename. Blocking:
 * call it on the thread pool. Returns 0, INFERQ_ELIMIT when the disk is
 * full, or INFERQ_EIO, with the failed step and its cause in err.
 */
int storage_write_file(const char *dir, const char *name, const char *data, size_t len,
		       char *err, size_t errlen);

/* The result of storage_read_file. */
typedef struct {
	uint64_t size;         /* bytes of the whole file */
	storage_range_t range; /* the bytes selected by the Range header */
	buf_t body;            /* those bytes, when they were read; the caller frees it */
} storage_read_t;

/*
 * Opens dir/name (no symlinks), resolves the Range header range[0..len)
 * (NULL: the whole file) and, when want_body is set, reads the selected
 * bytes into out->body. Blocking: call it on the thread pool. Returns 0;
 * INFERQ_ENOTFOUND when there is no such regular file; INFERQ_ERANGE for
 * an unsatisfiable range (out->size set); INFERQ_ELIMIT when the selected
 * bytes exceed max_bytes (out->size set); INFERQ_EIO with the cause in err.
 */
int storage_read_file(const char *dir, const char *name, const char *range, size_t range_len,
		      int want_body, uint64_t max_bytes, storage_read_t *out, char *err,
		      size_t errlen);

#endif
