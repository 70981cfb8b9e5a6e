/*
 * Fuzz target for json_merge_patch (RFC 7386). The input is a target and a
 * patch separated by the first NUL byte (a byte that valid JSON never
 * contains); an empty target stands for an absent one. When both validate:
 *
 *   - the merge succeeds, or returns INFERQ_ELIMIT and leaves out as it was;
 *   - its output validates;
 *   - merging the same patch into the output changes nothing (RFC 7386
 *     patches are idempotent);
 *   - where jansson can hold both documents, the output equals an
 *     independent RFC 7386 merge done on jansson values.
 *
 * Each input also runs once with a small depth limit derived from its
 * length, so the INFERQ_ELIMIT path is reached.
 *
 * SPDX-License-Identifier: MIT
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "check.h"
#include "inferq_error.h"
#include "jansson_ref.h"
#include "json.h"

#define MAX_DEPTH 64
#define MARK      "prefix:" /* bytes in out before each merge, which must survive it */

/* Returns 1 and the jansson value of a validated document, or 0 when jansson cannot hold it. */
static int to_jansson(const char *p, size_t len, json_t **out)
{
	json_span_t root;
	int beyond = 0;

	if (json_validate(p, len, MAX_DEPTH, &root, NULL) != 0)
		fuzz_fail("json_validate rejects a document it accepted before: %s",
		          fuzz_show(p, len));
	*out = ref_from_span(root, &beyond);
	if (beyond) {
		json_decref(*out);
		*out = NULL;
	}
	return *out != NULL;
}

/* Merges and checks the result; returns the merge code, the result (without MARK) in *result. */
static int merge(const char *t, size_t tlen, const char *patch, size_t plen, int depth,
                 buf_t *result)
{
	buf_t out = BUF_INIT;
	json_span_t root;
	int rc;

	buf_puts(&out, MARK);
	rc = json_merge_patch(t, tlen, patch, plen, depth, &out);
	FUZZ_CHECK(out.len >= strlen(MARK) && memcmp(out.data, MARK, strlen(MARK)) == 0,
	           "json_merge_patch changed bytes already in out");
	if (rc != 0) {
		FUZZ_CHECK(rc == INFERQ_ELIMIT,
		           "json_merge_patch returned %d for target %s patch %s", rc,
		           fuzz_show(t, tlen), fuzz_show(patch, plen));
		FUZZ_CHECK(out.len == strlen(MARK), "json_merge_patch failed but changed out");
		buf_free(&out);
		return rc;
	}
	buf_reset(result);
	buf_append(result, out.data + strlen(MARK), out.len - strlen(MARK));
	buf_free(&out);
	FUZZ_CHECK(json_validate(result->data, result->len, depth, &root, NULL) == 0,
	           "merge output %s does not validate at depth %d (target %s patch %s)",
	           fuzz_show(result->data, result->len), depth, fuzz_show(t, tlen),
	           fuzz_show(patch, plen));
	return 0;
}

static void check_against_jansson(const char *t, size_t tlen, const char *patch, size_t plen,
                                  const buf_t *result)
{
	json_t *jt = NULL, *jp = NULL, *jr = NULL, *want = NULL;

	if ((tlen > 0 && !to_jansson(t, tlen, &jt)) || !to_jansson(patch, plen, &jp) ||
	    !to_jansson(result->data, result->len, &jr))
		goto out;
	want = ref_merge_patch(jt, jp);
	FUZZ_CHECK(json_equal(want, jr), "merge of target %s and patch %s gave %s",
	           fuzz_show(t, tlen), fuzz_show(patch, plen),
	           fuzz_show(result->data, result->len));
out:
	json_decref(jt);
	json_decref(jp);
	json_decref(jr);
	json_decref(want);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *copy = malloc(size ? size : 1);
	const char *sep;
	const char *t, *patch;
	size_t tlen, plen;
	buf_t once = BUF_INIT, twice = BUF_INIT, small = BUF_INIT;

	memcpy(copy, data, size);
	sep = memchr(copy, '\0', size);
	if (sep == NULL)
		goto out;
	t = copy;
	tlen = (size_t)(sep - copy);
	patch = sep + 1;
	plen = size - tlen - 1;
	if ((tlen > 0 && json_validate(t, tlen, MAX_DEPTH, &(json_span_t){0}, NULL) != 0) ||
	    json_validate(patch, plen, MAX_DEPTH, &(json_span_t){0}, NULL) != 0)
		goto out;

	/* An absent target is passed as NULL, as the header allows. */
	if (merge(tlen ? t : NULL, tlen, patch, plen, MAX_DEPTH, &once) != 0)
		goto out;
	FUZZ_CHECK(merge(once.data, once.len, patch, plen, MAX_DEPTH, &twice) == 0,
	           "second merge of the same patch failed");
	FUZZ_CHECK(twice.len == once.len && memcmp(twice.data, once.data, once.len) == 0,
	           "patch %s is not idempotent: once %s, twice %s", fuzz_show(patch, plen),
	           fuzz_show(once.data, once.len), fuzz_show(twice.data, twice.len));
	check_against_jansson(t, tlen, patch, plen, &once);

	/* A small limit: either the same result or INFERQ_ELIMIT with out untouched. */
	if (merge(tlen ? t : NULL, tlen, patch, plen, (int)(size % 4), &small) == 0)
		FUZZ_CHECK(small.len == once.len && memcmp(small.data, once.data, once.len) == 0,
		           "merge at depth %d differs from the merge at depth %d", (int)(size % 4),
		           MAX_DEPTH);
out:
	buf_free(&once);
	buf_free(&twice);
	buf_free(&small);
	free(copy);
	return 0;
}
