/*
 * JSON views of a job: the status response and the claim response.
 * Raw JSON fields (payload, info, outputs, warnings) are copied byte for
 * byte; fields with no value are left out.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef INFERQ_RENDER_H
#define INFERQ_RENDER_H

#include "buf.h"
#include "job.h"

/* Appends the status object of rec to out. */
void render_status(buf_t *out, const job_record_t *rec);
/* Appends the claim response of a freshly claimed rec to out. */
void render_claim(buf_t *out, const job_record_t *rec);
/* Appends {"status": ..., "request_id": ..., "model": ...} to out. */
void render_state(buf_t *out, const job_record_t *rec);

/* Adds "name":raw as the last member of the JSON object that ends out. */
void render_add_raw_field(buf_t *out, const char *name, const char *raw, size_t len);

/* Appends "name":"<rfc3339>" preceded by a comma. */
void render_time_field(buf_t *out, const char *name, int64_t ms);

#endif
