/*
 * jansson reference helpers for the JSON fuzz targets (see jansson_ref.h).
 *
 * SPDX-License-Identifier: MIT
 */
#include "jansson_ref.h"

#include <stdint.h>

#include "buf.h"
#include "inferq_error.h"

static json_t *number_from_span(json_span_t v, int *beyond)
{
	int64_t i;
	double d;
	int rc = json_int64(v, &i);

	if (rc == 0)
		return json_integer(i);
	if (rc == INFERQ_ERANGE || json_double(v, &d) != 0) {
		*beyond = 1;
		return json_null();
	}
	return json_real(d);
}

static json_t *object_from_span(json_span_t v, int *beyond)
{
	json_t *out = json_object();
	buf_t key = BUF_INIT;
	json_iter_t it;
	json_member_t m;

	json_object_begin(&it, v);
	while (json_object_next(&it, &m)) {
		buf_reset(&key);
		if (json_string_decode(m.key, &key) != 0) {
			*beyond = 1;
			continue;
		}
		json_object_setn_new(out, key.data ? key.data : "", key.len,
		                     ref_from_span(m.value, beyond));
	}
	buf_free(&key);
	return out;
}

json_t *ref_from_span(json_span_t v, int *beyond)
{
	json_iter_t it;
	json_span_t e;
	json_t *out;
	buf_t text = BUF_INIT;

	switch (v.type) {
	case JSON_TYPE_NULL: return json_null();
	case JSON_TYPE_TRUE: return json_true();
	case JSON_TYPE_FALSE: return json_false();
	case JSON_TYPE_NUMBER: return number_from_span(v, beyond);
	case JSON_TYPE_STRING:
		/* A NUL in a string value is fine: the documents load with JSON_ALLOW_NUL. */
		json_string_decode(v, &text);
		out = json_stringn(text.data ? text.data : "", text.len);
		buf_free(&text);
		return out;
	case JSON_TYPE_ARRAY:
		out = json_array();
		json_array_begin(&it, v);
		while (json_array_next(&it, &e))
			json_array_append_new(out, ref_from_span(e, beyond));
		return out;
	case JSON_TYPE_OBJECT: return object_from_span(v, beyond);
	}
	return json_null();
}

/*
 * Applies patch to target in place as RFC 7386 MergePatch() does, taking
 * over the target reference (NULL when absent); returns the result.
 */
static json_t *merge_into(json_t *target, const json_t *patch)
{
	const char *name;
	size_t name_len;
	json_t *value;

	if (!json_is_object(patch)) {
		json_decref(target);
		return json_deep_copy(patch);
	}
	if (!json_is_object(target)) {
		json_decref(target);
		target = json_object();
	}
	json_object_keylen_foreach((json_t *)patch, name, name_len, value)
	{
		if (json_is_null(value)) {
			json_object_deln(target, name, name_len);
			continue;
		}
		json_t *old = json_object_getn(target, name, name_len);

		json_object_setn_new(target, name, name_len,
		                     merge_into(old ? json_incref(old) : NULL, value));
	}
	return target;
}

json_t *ref_merge_patch(const json_t *target, const json_t *patch)
{
	return merge_into(target ? json_deep_copy(target) : NULL, patch);
}
