/*
 * The scenarios of `inferq bench`: which request each connection sends
 * next and what a response means. Job scenarios keep one job per worker
 * connection (claim, then complete it), or with --batch the jobs of one
 * claim (completed with one complete_batch), and count the jobs completed.
 * A worker holding jobs always completes them, even after the measured
 * phase ended, so a run leaves no job running on the server.
 *
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "alloc.h"
#include "bench.h"
#include "inferq_error.h"

int bench_json_string(const char *body, size_t len, const char *name, char *out, size_t cap)
{
	size_t nlen = strlen(name), i = 0, n;
	int depth = 0, in_string = 0;

	/* Scans for "name": at depth 1, skipping strings and nested values. */
	for (i = 0; i < len; i++) {
		char ch = body[i];

		if (in_string) {
			if (ch == '\\')
				i++;
			else if (ch == '"')
				in_string = 0;
			continue;
		}
		if (ch == '{' || ch == '[') {
			depth++;
		} else if (ch == '}' || ch == ']') {
			depth--;
		} else if (ch == '"') {
			if (depth == 1 && len - i > nlen + 3 &&
			    memcmp(body + i + 1, name, nlen) == 0 && body[i + 1 + nlen] == '"' &&
			    body[i + 2 + nlen] == ':' && body[i + 3 + nlen] == '"') {
				const char *v = body + i + 4 + nlen, *end;

				end = memchr(v, '"', len - (size_t)(v - body));
				n = end ? (size_t)(end - v) : 0;
				if (!end || n + 1 > cap || memchr(v, '\\', n))
					return INFERQ_ENOTFOUND;
				memcpy(out, v, n);
				out[n] = '\0';
				return 0;
			}
			in_string = 1;
		}
	}
	return INFERQ_ENOTFOUND;
}

int bench_json_each(const char *body, size_t len, const char *name,
                    int (*fn)(const char *elem, size_t elem_len, void *ctx), void *ctx)
{
	size_t nlen = strlen(name), i, start = 0;
	int depth = 0, in_string = 0, in_member = 0, count = 0;

	/* Finds "name":[ at depth 1, then hands each object at depth 2 to fn. */
	for (i = 0; i < len; i++) {
		char ch = body[i];

		if (in_string) {
			if (ch == '\\')
				i++;
			else if (ch == '"')
				in_string = 0;
			continue;
		}
		if (ch == '"') {
			if (depth == 1 && !in_member && len - i > nlen + 3 &&
			    memcmp(body + i + 1, name, nlen) == 0 && body[i + 1 + nlen] == '"' &&
			    body[i + 2 + nlen] == ':') {
				if (body[i + 3 + nlen] != '[')
					return INFERQ_ENOTFOUND;
				in_member = 1;
				depth++;
				i += 3 + nlen;
				continue;
			}
			in_string = 1;
		} else if (ch == '{' || ch == '[') {
			if (in_member && depth == 2 && ch == '{')
				start = i;
			depth++;
		} else if (ch == '}' || ch == ']') {
			depth--;
			if (in_member && depth == 2 && ch == '}') {
				count++;
				if (fn(body + start, i + 1 - start, ctx) != 0)
					return count;
			} else if (in_member && depth == 1) {
				return count;
			}
		}
	}
	return in_member ? count : INFERQ_ENOTFOUND;
}

/*
 * Appends a request with a JSON body (or none when body is NULL) to out,
 * without the Host header: the engine adds the Host of the connection's server.
 */
/* Appends a request with the run's headers, then extra (whole header lines, or ""). */
static void put_request_with(const bench_run_t *run, buf_t *out, const char *method,
                             const char *path, const char *extra, const char *body,
                             size_t body_len)
{
	buf_printf(out, "%s %s HTTP/1.1\r\n%s", method, path, extra);
	buf_append(out, run->head.data, run->head.len);
	if (body) {
		buf_printf(out, "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n",
		           body_len);
		buf_append(out, body, body_len);
	} else {
		buf_puts(out, "\r\n");
	}
}

static void put_request(const bench_run_t *run, buf_t *out, const char *method, const char *path,
                        const char *body, size_t body_len)
{
	put_request_with(run, out, method, path, "", body, body_len);
}

static void build_templates(bench_run_t *run)
{
	const bench_opts_t *o = run->opts;
	buf_t body = BUF_INIT;

	if (o->key)
		buf_printf(&run->head, "Authorization: Bearer %s\r\n", o->key);

	buf_printf(&body, "{\"model\":\"%s\",\"payload\":%s}", o->model, o->payload);
	if (o->batch > 1) {
		buf_t jobs = BUF_INIT;

		buf_puts(&jobs, "{\"jobs\":[");
		for (unsigned i = 0; i < o->batch; i++) {
			if (i > 0)
				buf_putc(&jobs, ',');
			buf_append(&jobs, body.data, body.len);
		}
		buf_puts(&jobs, "]}");
		put_request(run, &run->submit_req, "POST", "/v1/queue/submit_batch", jobs.data,
		            jobs.len);
		buf_free(&jobs);
	} else {
		put_request(run, &run->submit_req, "POST", "/v1/queue/submit", body.data, body.len);
	}
	if (strcmp(o->scenario, "post") == 0)
		put_request(run, &run->plain_req, "POST", run->target->path,
		            o->body ? o->body : body.data, o->body ? strlen(o->body) : body.len);
	else if (strcmp(o->scenario, "get") == 0)
		put_request(run, &run->plain_req, "GET", run->target->path, NULL, 0);

	buf_reset(&body);
	buf_printf(&body, "{\"model\":\"%s\",\"wait\":%g", o->model,
	           strcmp(o->scenario, "claim-complete") == 0 ? 0 : o->wait);
	if (o->batch > 1)
		buf_printf(&body, ",\"max_jobs\":%u", o->batch);
	buf_putc(&body, '}');
	put_request(run, &run->claim_req, "POST", "/v1/queue/claim", body.data, body.len);
	buf_reset(&body);
	buf_printf(&body, "{\"model\":\"%s-idle\",\"wait\":60}", o->model);
	put_request(run, &run->park_req, "POST", "/v1/queue/claim", body.data, body.len);
	buf_free(&body);
}

static int is_handoff(const bench_run_t *run)
{
	return strcmp(run->opts->scenario, "handoff") == 0;
}

/* --- Plain load: submit, status, get, post -------------------------------- */

static int load_next(bench_conn_t *c, buf_t *out)
{
	bench_run_t *run = c->run;
	int submit = strcmp(run->opts->scenario, "submit") == 0;

	if (run->stopping || (run->limit && run->issued >= run->limit))
		return -1;
	if (submit) {
		run->issued += run->opts->batch;
		buf_append(out, run->submit_req.data, run->submit_req.len);
		return KIND_SUBMIT;
	}
	run->issued++;
	buf_append(out, run->plain_req.data, run->plain_req.len);
	return KIND_PLAIN;
}

static int load_done(bench_conn_t *c, int kind, int status, const char *body, size_t len,
                     uint64_t latency_ns)
{
	bench_run_t *run = c->run;

	(void)latency_ns;
	if (kind == KIND_SUBMIT ? status != 200 : (status < 200 || status > 299)) {
		bench_run_error(run, "%s returned HTTP %d: %.*s", run->opts->scenario, status,
		                (int)(len < 200 ? len : 200), body);
		return 0;
	}
	if (kind != KIND_SUBMIT) {
		bench_run_unit(run);
		return 0;
	}
	/* A submit_batch of --batch jobs counts as that many units. */
	run->submitted += run->opts->batch;
	for (unsigned i = 0; i < run->opts->batch && !run->stopping; i++)
		bench_run_unit(run);
	return 0;
}

static const bench_scenario_t load_scenario = {load_next, load_done};

/* --- Jobs: claim-complete, lifecycle, handoff ------------------------------ */

static void put_complete(bench_conn_t *c, buf_t *out)
{
	char body[512];
	int n = snprintf(body, sizeof(body),
	                 "{\"model\":\"%s\",\"request_id\":\"%s\",\"claim_id\":\"%s\","
	                 "\"outputs\":{\"ok\":true}}",
	                 c->run->opts->model, c->job_id, c->claim_id);

	put_request(c->run, out, "POST", "/v1/queue/complete", body, (size_t)n);
}

/* Appends one complete_batch of every job the worker holds. */
static void put_complete_batch(bench_conn_t *c, buf_t *out)
{
	buf_t body = BUF_INIT;

	buf_puts(&body, "{\"jobs\":[");
	for (unsigned i = 0; i < c->held_count; i++)
		buf_printf(&body,
		           "%s{\"model\":\"%s\",\"request_id\":\"%s\",\"claim_id\":\"%s\","
		           "\"outputs\":{\"ok\":true}}",
		           i ? "," : "", c->run->opts->model, c->held[i].job_id,
		           c->held[i].claim_id);
	buf_puts(&body, "]}");
	put_request(c->run, out, "POST", "/v1/queue/complete_batch", body.data, body.len);
	buf_free(&body);
}

static int submitter_next(bench_conn_t *c, buf_t *out)
{
	bench_run_t *run = c->run;

	if (run->stopping || (c->inflight > 0 && is_handoff(run)))
		return -1;
	if (is_handoff(run)) {
		if (run->handoff_busy)
			return -1;
		run->handoff_busy = 1;
		run->handoff_id[0] = run->handoff_claimed[0] = '\0';
		run->handoff_ack_ns = run->handoff_claim_ns = 0;
		run->handoff_sent_ns = uv_hrtime();
	} else {
		if (run->limit && run->issued >= run->limit)
			return -1;
		if (run->issued - run->completed >= run->opts->backlog) {
			if (!c->paused)
				run->paused++;
			c->paused = 1;
			return -1;
		}
	}
	run->issued += run->opts->batch;
	buf_append(out, run->submit_req.data, run->submit_req.len);
	return KIND_SUBMIT;
}

static int worker_next(bench_conn_t *c, buf_t *out)
{
	bench_run_t *run = c->run;

	if (c->inflight > 0)
		return -1;
	if (c->has_job) {
		if (run->opts->batch > 1)
			put_complete_batch(c, out);
		else
			put_complete(c, out);
		return KIND_COMPLETE;
	}
	if (c->resubmit && !run->stopping) {
		c->resubmit = 0;
		run->issued++;
		buf_append(out, run->submit_req.data, run->submit_req.len);
		return KIND_SUBMIT;
	}
	if (run->stopping)
		return -1;
	if (strcmp(run->opts->scenario, "claim-complete") == 0 && run->limit &&
	    run->claims_sent >= run->limit)
		return -1;
	run->claims_sent++;
	buf_append(out, run->claim_req.data, run->claim_req.len);
	return is_handoff(run) ? KIND_PARK : KIND_CLAIM;
}

static int job_next(bench_conn_t *c, buf_t *out)
{
	switch (c->role) {
	case ROLE_SUBMIT: return submitter_next(c, out);
	case ROLE_WORKER: return worker_next(c, out);
	case ROLE_IDLE:
		if (c->run->stopping || c->inflight > 0)
			return -1;
		buf_append(out, c->run->park_req.data, c->run->park_req.len);
		return KIND_PARK;
	}
	return -1;
}

/* Both halves of a hand-off were seen: record it and let the submitter go on. */
static void handoff_finish(bench_run_t *run)
{
	uint64_t ns = run->handoff_claim_ns > run->handoff_ack_ns
	                  ? run->handoff_claim_ns - run->handoff_ack_ns
	                  : 0;

	bench_hist_record(run->unit_latency, ns);
	bench_hist_record(run->e2e_latency, run->handoff_claim_ns - run->handoff_sent_ns);
	run->handoff_busy = 0;
	bench_run_unit(run);
	bench_conn_pump(&run->conns[0]);
	bench_run_check(run);
}

/* Wakes the submitters that wait for the backlog to shrink; they are the first connections. */
static void wake_submitters(bench_run_t *run)
{
	for (unsigned i = 0; run->paused > 0 && i < run->n_conns; i++) {
		bench_conn_t *c = &run->conns[i];

		if (c->role != ROLE_SUBMIT)
			break;
		if (c->paused) {
			c->paused = 0;
			run->paused--;
			bench_conn_pump(c);
		}
	}
}

static void submit_acked(bench_conn_t *c, const char *body, size_t len)
{
	bench_run_t *run = c->run;

	run->submitted += run->opts->batch;
	if (!is_handoff(run))
		return;
	if (bench_json_string(body, len, "request_id", run->handoff_id, sizeof(run->handoff_id))) {
		bench_run_error(run, "submit response without a request_id: %.*s",
		                (int)(len < 200 ? len : 200), body);
		return;
	}
	run->handoff_ack_ns = uv_hrtime();
	if (strcmp(run->handoff_claimed, run->handoff_id) == 0)
		handoff_finish(run);
}

/* Keeps one job of a claim_batch response for the worker; returns nonzero to stop. */
static int hold_job(const char *elem, size_t len, void *ctx)
{
	bench_conn_t *c = ctx;
	struct bench_job *j;

	if (c->held_count == c->run->opts->batch)
		return 1;
	j = &c->held[c->held_count];
	if (bench_json_string(elem, len, "request_id", j->job_id, sizeof(j->job_id)) ||
	    bench_json_string(elem, len, "claim_id", j->claim_id, sizeof(j->claim_id)))
		return 1;
	c->held_count++;
	return 0;
}

/* Reads the jobs of a claim with max_jobs. Returns 0, or -1 when the body has none. */
static int claim_list_answered(bench_conn_t *c, const char *body, size_t len)
{
	int n;

	if (!c->held)
		c->held = xcalloc(c->run->opts->batch, sizeof(*c->held));
	c->held_count = 0;
	n = bench_json_each(body, len, "data", hold_job, c);
	if (n <= 0 || (unsigned)n != c->held_count)
		return -1;
	c->run->claimed += c->held_count;
	return 0;
}

/* Counts one job result of a complete_batch response; returns nonzero when it is not done. */
static int count_done(const char *elem, size_t len, void *ctx)
{
	bench_run_t *run = ctx;
	char status[16];

	if (bench_json_string(elem, len, "status", status, sizeof(status)) != 0 ||
	    strcmp(status, "done") != 0) {
		bench_run_error(run, "complete_batch returned a job that is not done: %.*s",
		                (int)(len < 200 ? len : 200), elem);
		return 1;
	}
	run->completed++;
	bench_run_unit(run);
	return 0;
}

static void complete_batch_answered(bench_conn_t *c, int status, const char *body, size_t len)
{
	bench_run_t *run = c->run;

	if (status != 200 ||
	    bench_json_each(body, len, "data", count_done, run) != (int)c->held_count)
		bench_run_error(run, "complete_batch returned HTTP %d: %.*s", status,
		                (int)(len < 200 ? len : 200), body);
	wake_submitters(run);
}

static void claim_answered(bench_conn_t *c, int status, const char *body, size_t len)
{
	bench_run_t *run = c->run;

	if (status == 204) {
		/* claim-complete claims with wait 0: the queue is empty. */
		if (strcmp(run->opts->scenario, "claim-complete") == 0 && !run->opts->refill &&
		    !run->stopping)
			bench_run_stop(run);
		return;
	}
	if (status == 200 && c->role != ROLE_IDLE && run->opts->batch > 1) {
		if (claim_list_answered(c, body, len) == 0)
			c->has_job = 1;
		else
			bench_run_error(run, "claim with max_jobs returned no job list: %.*s",
			                (int)(len < 200 ? len : 200), body);
		return;
	}
	if (status != 200 || c->role == ROLE_IDLE ||
	    bench_json_string(body, len, "request_id", c->job_id, sizeof(c->job_id)) ||
	    bench_json_string(body, len, "claim_id", c->claim_id, sizeof(c->claim_id))) {
		bench_run_error(run, "claim returned HTTP %d: %.*s", status,
		                (int)(len < 200 ? len : 200), body);
		return;
	}
	c->has_job = 1;
	run->claimed++;
	if (is_handoff(run)) {
		run->handoff_claim_ns = uv_hrtime();
		memcpy(run->handoff_claimed, c->job_id, sizeof(c->job_id));
		if (strcmp(run->handoff_claimed, run->handoff_id) == 0)
			handoff_finish(run);
	}
}

static int job_done(bench_conn_t *c, int kind, int status, const char *body, size_t len,
                    uint64_t latency_ns)
{
	bench_run_t *run = c->run;

	(void)latency_ns;
	switch (kind) {
	case KIND_SUBMIT:
		if (status == 200)
			submit_acked(c, body, len);
		else
			bench_run_error(run, "submit returned HTTP %d: %.*s", status,
			                (int)(len < 200 ? len : 200), body);
		break;
	case KIND_CLAIM:
	case KIND_PARK: claim_answered(c, status, body, len); break;
	case KIND_COMPLETE:
		c->has_job = 0;
		if (run->opts->batch > 1) {
			complete_batch_answered(c, status, body, len);
			break;
		}
		if (status != 200) {
			bench_run_error(run, "complete returned HTTP %d: %.*s", status,
			                (int)(len < 200 ? len : 200), body);
			break;
		}
		run->completed++;
		c->resubmit = run->opts->refill;
		if (!is_handoff(run))
			bench_run_unit(run);
		wake_submitters(run);
		break;
	}
	return 0;
}

static const bench_scenario_t job_scenario = {job_next, job_done};

/* --- Set-up calls --------------------------------------------------------- */

/*
 * One blocking request on its own connection, for set-up steps. Stores
 * the status and up to cap-1 bytes of the body (NUL-terminated). Returns 0
 * or INFERQ_ECONNECT / INFERQ_EPROTO with why in err.
 */
static int setup_call(const bench_run_t *run, const char *method, const char *path,
                      const char *body, int *status, char *resp, size_t cap, char *err,
                      size_t err_len)
{
	const bench_target_t *t = run->target;
	buf_t req = BUF_INIT, plain = BUF_INIT;
	char raw[16384];
	size_t got = 0;
	ssize_t n;
	int fd, rc = 0;
	const char *sep;

	fd = socket(t->addr.ss_family, SOCK_STREAM, 0);
	if (fd < 0 || connect(fd, (const struct sockaddr *)&t->addr,
	                      t->addr.ss_family == AF_INET ? sizeof(struct sockaddr_in)
	                                                   : sizeof(struct sockaddr_in6)) != 0) {
		snprintf(err, err_len, "cannot connect to %s:%s: %s", t->host, t->port,
		         strerror(errno));
		rc = INFERQ_ECONNECT;
		goto out;
	}
	/*
	 * The server closes the connection after the response. The client must
	 * not half-close first: a claim whose client has ended its side is given
	 * back, not delivered.
	 */
	put_request_with(run, &plain, method, path, "Connection: close\r\n", body,
	                 body ? strlen(body) : 0);
	bench_put_request_for(&req, t, plain.data, plain.len);
	if (write(fd, req.data, req.len) != (ssize_t)req.len) {
		snprintf(err, err_len, "cannot send to %s:%s", t->host, t->port);
		rc = INFERQ_ECONNECT;
		goto out;
	}
	while (got < sizeof(raw) - 1 && (n = read(fd, raw + got, sizeof(raw) - 1 - got)) > 0)
		got += (size_t)n;
	raw[got] = '\0';
	sep = strstr(raw, "\r\n\r\n");
	if (got < 12 || strncmp(raw, "HTTP/1.", 7) != 0 || !sep) {
		snprintf(err, err_len, "%s %s: no HTTP response from %s:%s", method, path, t->host,
		         t->port);
		rc = INFERQ_EPROTO;
		goto out;
	}
	*status = atoi(raw + 9);
	snprintf(resp, cap, "%s", sep + 4);
out:
	if (fd >= 0)
		close(fd);
	buf_free(&req);
	buf_free(&plain);
	return rc;
}

/* Makes one finished job for the status scenario and points plain_req at its status. */
static int make_finished_job(bench_run_t *run, char *err, size_t err_len)
{
	const bench_opts_t *o = run->opts;
	char body[1024], resp[16384], path[512];
	bench_conn_t c = {.run = run};
	int status = 0, rc;

	snprintf(body, sizeof(body), "{\"model\":\"%s\",\"payload\":%s}", o->model, o->payload);
	rc = setup_call(run, "POST", "/v1/queue/submit", body, &status, resp, sizeof(resp), err,
	                err_len);
	if (rc == 0 && status == 200) {
		snprintf(body, sizeof(body), "{\"model\":\"%s\",\"wait\":5}", o->model);
		rc = setup_call(run, "POST", "/v1/queue/claim", body, &status, resp, sizeof(resp),
		                err, err_len);
	}
	if (rc == 0 && status == 200 &&
	    bench_json_string(resp, strlen(resp), "request_id", c.job_id, sizeof(c.job_id)) == 0 &&
	    bench_json_string(resp, strlen(resp), "claim_id", c.claim_id, sizeof(c.claim_id)) ==
	        0) {
		snprintf(body, sizeof(body),
		         "{\"model\":\"%s\",\"request_id\":\"%s\",\"claim_id\":\"%s\","
		         "\"outputs\":{\"text\":\"done\"}}",
		         o->model, c.job_id, c.claim_id);
		rc = setup_call(run, "POST", "/v1/queue/complete", body, &status, resp,
		                sizeof(resp), err, err_len);
	} else if (rc == 0 && status == 200) {
		status = 0;
	}
	if (rc != 0)
		return rc;
	if (status != 200) {
		snprintf(err, err_len, "could not make a finished job to read (HTTP %d): %.200s",
		         status, resp);
		return INFERQ_EPROTO;
	}
	snprintf(path, sizeof(path), "/v1/queue/status?request_id=%s&model=%s", c.job_id, o->model);
	put_request(run, &run->plain_req, "GET", path, NULL, 0);
	return 0;
}

/* --- Phases --------------------------------------------------------------- */

/* Runs one phase with n connections of the given roles and prints its report. */
static int run_phase(bench_run_t *run, const bench_scenario_t *scen, const int *roles, unsigned n,
                     const char *unit, int report)
{
	const bench_opts_t *o = run->opts;
	double duration = o->count ? 0 : o->duration;
	int rc;

	run->scen = scen;
	if (run->limit == 0 && o->count)
		run->limit = o->count;
	if (run->limit)
		duration = 0;
	rc = bench_run(run, roles, n, duration);
	if (report && rc != INFERQ_ECONNECT && rc != INFERQ_ELIMIT)
		bench_report(o, run, unit);
	return rc;
}

/* Fills the queue with opts->prefill jobs, pipelined, before a claim-complete phase. */
static int prefill(const bench_opts_t *o, const bench_targets_t *t, char *err, size_t err_len)
{
	bench_opts_t fill = *o;
	bench_run_t run = {0};
	int *roles, rc;

	fill.scenario = "submit";
	fill.pipeline = o->pipeline > 16 ? o->pipeline : 16;
	fill.count = o->prefill;
	run.opts = &fill;
	run.targets = t;
	run.target = &t->load[0];
	build_templates(&run);
	roles = calloc(o->connections, sizeof(*roles));
	rc = run_phase(&run, &load_scenario, roles, o->connections, "requests", 0);
	if (rc == 0 && run.errors)
		rc = INFERQ_EPROTO;
	if (rc != 0)
		snprintf(err, err_len, "prefill of %llu jobs failed: %.400s",
		         (unsigned long long)o->prefill,
		         run.error[0] ? run.error : inferq_strerror(rc));
	else
		fprintf(stderr, "inferq bench: prefilled %llu jobs in %.2f s\n",
		        (unsigned long long)run.submitted,
		        (double)(run.t_stop - run.t_start) / 1e9);
	bench_run_free(&run);
	free(roles);
	return rc;
}

/* Lays out the roles of a job scenario: submitters, workers, idle workers. */
static unsigned job_roles(const bench_opts_t *o, int **out)
{
	unsigned submitters = 0, n;
	int *roles;

	if (strcmp(o->scenario, "lifecycle") == 0)
		submitters = o->connections;
	else if (strcmp(o->scenario, "handoff") == 0)
		submitters = 1;
	n = submitters + o->workers + o->idle_workers;
	if (strcmp(o->scenario, "claim-complete") == 0)
		n = o->connections;
	roles = calloc(n, sizeof(*roles));
	for (unsigned i = 0; i < n; i++)
		roles[i] = i < submitters            ? ROLE_SUBMIT
		           : i < n - o->idle_workers ? ROLE_WORKER
		                                     : ROLE_IDLE;
	if (strcmp(o->scenario, "claim-complete") == 0)
		for (unsigned i = 0; i < n; i++)
			roles[i] = ROLE_WORKER;
	*out = roles;
	return n;
}

int bench_scenario_main(const bench_opts_t *o, const bench_targets_t *t)
{
	bench_run_t run = {0};
	const char *s = o->scenario;
	int *roles = NULL, rc = 0, exit_code;
	unsigned n;
	char err[640] = "";

	run.opts = o;
	run.targets = t;
	run.target = &t->load[0];
	build_templates(&run);
	if (strcmp(s, "status") == 0)
		rc = make_finished_job(&run, err, sizeof(err));
	if (rc == 0 && strcmp(s, "claim-complete") == 0 && o->prefill > 0)
		rc = prefill(o, t, err, sizeof(err));
	if (rc == 0 && strcmp(s, "claim-complete") == 0 && !o->count && !o->refill &&
	    o->duration <= 0)
		run.limit = o->prefill;
	if (rc != 0) {
		fprintf(stderr, "inferq bench: %s\n", err);
		exit_code = rc == INFERQ_ECONNECT ? 3 : 1;
		goto out;
	}

	if (strcmp(s, "submit") == 0 || strcmp(s, "status") == 0 || strcmp(s, "get") == 0 ||
	    strcmp(s, "post") == 0) {
		n = o->connections;
		roles = calloc(n, sizeof(*roles));
		rc = run_phase(&run, &load_scenario, roles, n, o->batch > 1 ? "jobs" : "requests",
		               1);
	} else {
		n = job_roles(o, &roles);
		rc = run_phase(&run, &job_scenario, roles, n,
		               strcmp(s, "handoff") == 0 ? "hand-offs" : "jobs", 1);
	}
	if (rc == INFERQ_ECONNECT || rc == INFERQ_ELIMIT || rc == INFERQ_EAUTH ||
	    (rc == 0 && run.errors)) {
		fprintf(stderr, "inferq bench: %s\n", run.error);
		if (run.errors && rc != INFERQ_ECONNECT)
			fprintf(stderr, "inferq bench: %llu requests failed\n",
			        (unsigned long long)run.errors);
	}
	exit_code = rc == INFERQ_ECONNECT ? 3 : (rc != 0 || run.errors) ? 1 : 0;
out:
	bench_run_free(&run);
	free(roles);
	return exit_code;
}
