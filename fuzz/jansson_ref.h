/*
 * jansson 2.14 as the reference for the JSON fuzz targets: a converter from
 * json.h spans to jansson values, built only with json.h's iterators and
 * decoders, and an RFC 7386 merge patch over jansson values. json.h and
 * jansson.h share no names, so both are included here.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef INFERQ_FUZZ_JANSSON_REF_H
#define INFERQ_FUZZ_JANSSON_REF_H

#include <jansson.h>

#include "json.h"

/*
 * Builds the jansson value of a validated span. Sets *beyond to 1 when the
 * span holds something jansson rejects by design: an integer outside
 * int64_t, a number that overflows a double, or a NUL in an object key.
 * Returns a new reference.
 */
json_t *ref_from_span(json_span_t v, int *beyond);

/*
 * Applies patch to target (NULL for an absent target) as RFC 7386 section 2
 * defines it, on copies. Returns a new reference; the arguments are not changed.
 */
json_t *ref_merge_patch(const json_t *target, const json_t *patch);

#endif
