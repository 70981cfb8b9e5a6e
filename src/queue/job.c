/*
 * Job record helpers (see job.h).
 *
 * SPDX-License-Identifier: MIT
 */
#include "job.h"

#include <string.h>

#include "inferq_error.h"

static const char *const state_names[JOB_STATE_COUNT] = {
	"pending", "running", "done", "failed", "canceled",
};

const char *job_state_name(job_state_t state)
{
	if ((unsigned)state >= JOB_STATE_COUNT)
		return "unknown";
	return state_names[state];
}

int job_state_parse(const char *name, job_state_t *out)
{
	for (int i = 0; i < JOB_STATE_COUNT; i++) {
		if (strcmp(name, state_names[i]) == 0) {
			*out = (job_state_t)i;
			return 0;
		}
	}
	return INFERQ_EINVAL;
}

void job_record_copy(job_record_t *dst, const job_record_t *src)
{
	*dst = *src;
	rbuf_ref(dst->model);
	rbuf_ref(dst->worker);
	rbuf_ref(dst->payload);
	rbuf_ref(dst->info);
	rbuf_ref(dst->outputs);
	rbuf_ref(dst->error);
	rbuf_ref(dst->warnings);
	rbuf_ref(dst->idempotency_key);
	rbuf_ref(dst->body_hash);
	rbuf_ref(dst->history);
}

void job_record_clear(job_record_t *r)
{
	rbuf_unref(r->model);
	rbuf_unref(r->worker);
	rbuf_unref(r->payload);
	rbuf_unref(r->info);
	rbuf_unref(r->outputs);
	rbuf_unref(r->error);
	rbuf_unref(r->warnings);
	rbuf_unref(r->idempotency_key);
	rbuf_unref(r->body_hash);
	rbuf_unref(r->history);
	memset(r, 0, sizeof(*r));
}
