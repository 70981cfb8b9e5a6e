/*
 * The nearest name to a mistyped one (see suggest.h).
 *
 * SPDX-License-Identifier: MIT
 */
#include "suggest.h"

#include <stdint.h>
#include <string.h>

#define MAX_EDITS 2

size_t suggest_distance(const char *a, const char *b)
{
	size_t len_a = strlen(a), len_b = strlen(b);
	size_t row[32];

	if (len_a >= sizeof(row) / sizeof(row[0]) || len_b >= sizeof(row) / sizeof(row[0]))
		return SIZE_MAX;
	for (size_t j = 0; j <= len_b; j++)
		row[j] = j;
	for (size_t i = 1; i <= len_a; i++) {
		size_t diagonal = row[0];

		row[0] = i;
		for (size_t j = 1; j <= len_b; j++) {
			size_t above = row[j];
			size_t best = diagonal + (a[i - 1] != b[j - 1]);

			if (above + 1 < best)
				best = above + 1;
			if (row[j - 1] + 1 < best)
				best = row[j - 1] + 1;
			row[j] = best;
			diagonal = above;
		}
	}
	return row[len_b];
}

const char *suggest_nearest(const char *name, const char *const *candidates, size_t count)
{
	const char *best = NULL;
	size_t best_distance = MAX_EDITS + 1;

	for (size_t i = 0; i < count; i++) {
		size_t d = suggest_distance(name, candidates[i]);

		if (d < best_distance && d < strlen(candidates[i])) {
			best = candidates[i];
			best_distance = d;
		}
	}
	return best;
}
