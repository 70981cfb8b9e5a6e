/*
 * The nearest name to a mistyped one, for "did you mean" hints in the
 * messages of unknown commands and flags.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef INFERQ_SUGGEST_H
#define INFERQ_SUGGEST_H

#include <stddef.h>

/* Returns the Levenshtein distance of a and b, or SIZE_MAX when either has 32 bytes or more. */
size_t suggest_distance(const char *a, const char *b);

/*
 * Returns the candidate nearest to name within two edits, the first of
 * the nearest ones on a tie, or NULL. A candidate is skipped when the
 * edits would replace all of it (a one-letter name is never suggested
 * for another one-letter name).
 */
const char *suggest_nearest(const char *name, const char *const *candidates, size_t count);

#endif
