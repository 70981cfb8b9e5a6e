/*
 * The postgres store's node-wide parts (pgq.h): schema migrations at start,
 * the connection pool, the lease and retention sweep that one node at a
 * time runs (pg_try_advisory_xact_lock), and long-poll claims that a
 * NOTIFY or a short poll wakes. Invariant: at most one claim task per
 * model is in flight for this node's waiters, and a waiter is answered
 * exactly once.
 *
 * SPDX-License-Identifier: MIT
 */
#include "pgq.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "auth.h"
#include "clock.h"
#include "error.h"
#include "history.h"
#include "inferq_error.h"
#include "log.h"
#include "observe.h"
#include "pg_schema.h"
#include "request.h"
#include "routes.h"
#include "status_cache.h"
#include "workers.h"

typedef struct pg_waiter {
	struct pg_waiter *prev, *next;
	server_t *server;
	char *model;
	model_state_t *counted; /* the model whose pg_waiters includes this waiter */
	http_request_t *req;
	claim_params_t params;
	uv_timer_t timer;
	int busy;    /* a claim task for it is in flight */
	int expired; /* its wait ended while busy: answer "no job" when the task returns */
	int64_t more;    /* jobs thought pending beyond the one its claim is for */
	int64_t signals; /* wakes of its model that came while its claim was in flight */
} pg_waiter_t;

/*
 * The job count of a wake that does not tell how many jobs are pending: a
 * NOTIFY (one for every job of its model that a node committed within a
 * few milliseconds) or the poll. Claims then go on until one finds no job.
 */
#define WAKE_UNKNOWN INT32_MAX

struct pgq {
	pg_pool_t *pool;
	uv_timer_t sweep_timer;
	uv_timer_t poll_timer;
	int sweeping; /* a sweep task is in flight */
	int open_timers; /* timers not closed yet; q is freed when the last one is */
	int64_t key_version; /* highest inferq_api_keys.version merged */
	int key_pulling;     /* a key pull is in flight */
	int forgetting_files; /* files of deleted jobs are being unlinked */
	pg_waiter_t *head, *tail;
};

int pgq_is_postgres(const char *store)
{
	return strncmp(store, "postgres://", 11) == 0 || strncmp(store, "postgresql://", 13) == 0;
}

void pgq_param(pg_stmt_t *st, int i, const char *v)
{
	st->values[i] = v;
	st->lengths[i] = v ? (int)strlen(v) : 0;
	if (st->nparams < i + 1)
		st->nparams = i + 1;
}

void pgq_param_len(pg_stmt_t *st, int i, const char *v, size_t len)
{
	st->values[i] = v ? v : "";
	st->lengths[i] = (int)len;
	if (st->nparams < i + 1)
		st->nparams = i + 1;
}

void pgq_exec(server_t *s, const pg_stmt_t *stmts, int count, pg_task_cb cb, void *ctx)
{
	pg_pool_exec(s->pg->pool, stmts, count, 0, cb, ctx);
}

void pgq_exec_background(server_t *s, const pg_stmt_t *stmts, int count, pg_task_cb cb,
			 void *ctx)
{
	pg_pool_exec(s->pg->pool, stmts, count, PG_TASK_BACKGROUND, cb, ctx);
}

void pgq_exec_ordered(server_t *s, const pg_stmt_t *stmts, int count, pg_task_cb cb, void *ctx)
{
	pg_pool_exec(s->pg->pool, stmts, count, PG_TASK_ORDERED, cb, ctx);
}

void pgq_respond_unavailable(server_t *s, http_request_t *req, int rc, const char *err)
{
	buf_t body = BUF_INIT;
	int64_t now = clock_mono_ms();

	if (rc == INFERQ_ELIMIT && now - s->overload_logged_ms >= 10000) {
		s->overload_logged_ms = now;
		log_warn("store", "%s; the database falls behind: raise --pg-pool or check it",
			 err);
	}
	error_body(&body, 503, rc == INFERQ_ELIMIT ? "overloaded" : "store_unavailable", NULL, "%s",
		   err && *err ? err : "the database could not be reached; retry later");
	http_respond(req, 503, NULL, "Retry-After: 1\r\n", body.data, body.len);
	buf_free(&body);
	if (rc == INFERQ_EIO)
		log_warn("store", "database request failed: %s", err ? err : "");
}

static rbuf_t *text_field(const PGresult *res, int row, int col)
{
	if (PQgetisnull(res, row, col))
		return NULL;
	return rbuf_new(PQgetvalue(res, row, col), (size_t)PQgetlength(res, row, col));
}

static int64_t int_field(const PGresult *res, int row, int col)
{
	return PQgetisnull(res, row, col) ? 0 : strtoll(PQgetvalue(res, row, col), NULL, 10);
}

void pgq_row_record(const PGresult *res, int row, job_record_t *rec)
{
	memset(rec, 0, sizeof(*rec));
	id_parse(PQgetvalue(res, row, 0), (size_t)PQgetlength(res, row, 0), &rec->id);
	rec->seq = (uint64_t)int_field(res, row, 1);
	rec->model = text_field(res, row, 2);
	rec->priority = (int32_t)int_field(res, row, 3);
	rec->state = (job_state_t)int_field(res, row, 4);
	rec->retries = (uint32_t)int_field(res, row, 5);
	rec->created_at = int_field(res, row, 6);
	rec->claimed_at = int_field(res, row, 7);
	rec->done_at = int_field(res, row, 8);
	rec->lease_expires_at = int_field(res, row, 9);
	rec->claim_timeout = (uint32_t)int_field(res, row, 10);
	if (!PQgetisnull(res, row, 11))
		id_parse(PQgetvalue(res, row, 11), (size_t)PQgetlength(res, row, 11),
			 &rec->claim_id);
	rec->worker = text_field(res, row, 12);
	rec->payload = text_field(res, row, 13);
	rec->info = text_field(res, row, 14);
	rec->outputs = text_field(res, row, 15);
	rec->error = text_field(res, row, 16);
	rec->warnings = text_field(res, row, 17);
}

void pgq_row_record_history(const PGresult *res, int row, job_record_t *rec)
{
	pgq_row_record(res, row, rec);
	rec->history = text_field(res, row, 18);
}

/* Counts a committed change in this node's totals and workers view, as the local store does. */
static void count_committed(server_t *s, const job_record_t *rec, store_op_kind_t kind,
			    int cause, job_state_t prev)
{
	queue_model_t *m = queue_model_get(s->queue, rec->model->data, rec->model->len, 1);
	model_state_t *ms = server_model_state(m);
	history_event_t event;

	if (kind == STORE_OP_INSERT)
		ms->submitted_total++;
	else if (prev != rec->state && rec->state == JOB_DONE)
		ms->completed_total++;
	else if (prev != rec->state && rec->state == JOB_FAILED)
		ms->failed_total++;
	if (!s->workers || kind == STORE_OP_INSERT)
		return;
	event = cause == OBSERVE_CAUSE_EXPIRY ? HISTORY_EXPIRED : history_event_of(prev, rec->state);
	workers_record(s->workers, event, rec, clock_wall_ms());
}

void pgq_observe(server_t *s, const job_record_t *rec, store_op_kind_t kind, int cause,
		 job_state_t prev)
{
	store_op_t op;

	memset(&op, 0, sizeof(op));
	op.kind = kind;
	op.rec = *rec;
	op.cause = (uint8_t)cause;
	op.prev_state = prev;
	observe_change_committed(s, &op);
	count_committed(s, rec, kind, cause, prev);
}

/* ---- routes ---- */

route_handler_fn pgq_route(route_handler_fn local)
{
	static const struct {
		route_handler_fn local, pg;
	} map[] = {
		{handle_submit, pg_handle_submit},
		{handle_status, pg_handle_status},
		{handle_cancel, pg_handle_cancel},
		{handle_metrics, pg_handle_metrics},
		{handle_clear, pg_handle_clear},
		{handle_claim, pg_handle_claim},
		{handle_heartbeat, pg_handle_heartbeat},
		{handle_complete, pg_handle_complete},
		{handle_fail, pg_handle_fail},
		{handle_release, pg_handle_release},
		{handle_readyz, pg_handle_readyz},
		{handle_admin_jobs, pg_handle_admin_jobs},
		{handle_admin_job, pg_handle_admin_job},
		{handle_admin_queues, pg_handle_admin_queues},
		{handle_admin_workers, pg_handle_admin_workers},
		{handle_submit_batch, pg_handle_submit_batch},
		{handle_complete_batch, pg_handle_complete_batch},
	};

	for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++) {
		if (map[i].local == local)
			return map[i].pg;
	}
	return NULL;
}

/* ---- long-poll ---- */

static void free_waiter(uv_handle_t *h)
{
	pg_waiter_t *w = h->data;

	rbuf_unref(w->params.worker);
	free(w->model);
	free(w);
}

static void unlink_waiter(pgq_t *q, pg_waiter_t *w)
{
	if (w->prev)
		w->prev->next = w->next;
	else
		q->head = w->next;
	if (w->next)
		w->next->prev = w->prev;
	else
		q->tail = w->prev;
	w->prev = w->next = NULL;
}

/* Unlinks and frees w, first sending it "no job" when answer is set. */
static void waiter_done(pgq_t *q, pg_waiter_t *w, int answer)
{
	static const char sprocket_none[] = "{\"data\":null}";

	unlink_waiter(q, w);
	w->counted->pg_waiters--;
	if (answer && w->params.format == CLAIM_FORMAT_SPROCKET)
		http_respond(w->req, 200, NULL, NULL, sprocket_none, sizeof(sprocket_none) - 1);
	else if (answer)
		http_respond(w->req, 204, NULL, NULL, "", 0);
	uv_timer_stop(&w->timer);
	uv_close((uv_handle_t *)&w->timer, free_waiter);
}

static void wake_model(server_t *s, const char *model, int64_t jobs);

static int64_t add_wakes(int64_t a, int64_t b)
{
	return a + b > WAKE_UNKNOWN ? WAKE_UNKNOWN : a + b;
}

/*
 * The claim task of w ended. With a job (sent, or given back when the
 * client left meanwhile): forget w, and
 * claim for the next waiter only when more jobs are thought pending, so
 * that one job costs one claim. Without one, w waits on. But when a wake
 * came meanwhile, its job may have committed after the claim looked, so w
 * claims again.
 */
static void waiter_claim_done(void *ctx, int claimed, int rc, const char *err)
{
	pg_waiter_t *w = ctx;
	server_t *s = w->server;
	int64_t more = add_wakes(w->more, w->signals), signals = w->signals;
	char *model;

	w->busy = 0;
	w->more = w->signals = 0;
	if (!s->pg)
		return;
	if (!claimed && (w->expired || s->stopping)) {
		waiter_done(s->pg, w, 1);
		return;
	}
	if (!claimed && (signals == 0 || rc != 0))
		return;
	if (claimed && more == 0) {
		waiter_done(s->pg, w, 0);
		return;
	}
	model = xstrdup(w->model); /* wake_model may free w */
	if (claimed)
		waiter_done(s->pg, w, 0);
	wake_model(s, model, claimed ? more : signals);
	free(model);
}

static void waiter_start_claim(server_t *s, pg_waiter_t *w);

/*
 * Starts a claim for the oldest idle waiter of model, which has jobs newly
 * pending jobs (or WAKE_UNKNOWN). While a claim of the model is in flight,
 * that claim gets the count instead, when it returns.
 */
static void wake_model(server_t *s, const char *model, int64_t jobs)
{
	pgq_t *q = s->pg;
	pg_waiter_t *w, *next;

	for (w = q->head; w; w = next) {
		next = w->next;
		if (strcmp(w->model, model) != 0)
			continue;
		if (w->busy) {
			w->signals = add_wakes(w->signals, jobs);
			return;
		}
		if (http_request_is_orphaned(w->req)) {
			waiter_done(q, w, 1);
			continue;
		}
		if (!auth_still_valid(s, w->req)) {
			auth_respond_key_gone(w->req);
			waiter_done(q, w, 0);
			continue;
		}
		w->more = jobs - 1;
		waiter_start_claim(s, w);
		return;
	}
}

static void on_wait_over(uv_timer_t *timer)
{
	pg_waiter_t *w = timer->data;

	if (w->busy) {
		w->expired = 1;
		return;
	}
	waiter_done(w->server->pg, w, 1);
}

/*
 * The client of w's request closed the connection or ended its side: answer
 * "no job" now, or, while a claim task for w is in flight, when it returns
 * without a job. A job that task claims goes back to pending at once
 * (pgq_give_back), which then sends "no job" too.
 */
static void on_client_gone(void *arg, http_request_t *req)
{
	pg_waiter_t *w = arg;

	log_fields(LOG_DEBUG, "queue", "claim wait ended: the client closed its connection",
		   LOG_STR("model", w->model));
	if (w->busy) {
		w->expired = 1;
		return;
	}
	waiter_done(w->server->pg, w, 1);
}

void pgq_wait(server_t *s, const char *model, size_t model_len, const claim_params_t *p,
	      int64_t wait_ms, http_request_t *req)
{
	pgq_t *q = s->pg;
	pg_waiter_t *w;

	/* A client already at EOF (a request followed by its FIN) gets the answer now. */
	if (http_request_is_orphaned(req)) {
		if (p->format == CLAIM_FORMAT_SPROCKET)
			http_respond(req, 200, NULL, NULL, "{\"data\":null}", 13);
		else
			http_respond(req, 204, NULL, NULL, "", 0);
		return;
	}
	w = xcalloc(1, sizeof(*w));
	w->server = s;
	w->model = xmalloc(model_len + 1);
	memcpy(w->model, model, model_len);
	w->model[model_len] = '\0';
	w->counted = server_model_state(queue_model_get(s->queue, model, model_len, 1));
	w->counted->pg_waiters++;
	w->req = req;
	w->params = *p;
	w->params.worker = p->worker ? rbuf_ref(p->worker) : NULL;
	w->prev = q->tail;
	if (q->tail)
		q->tail->next = w;
	else
		q->head = w;
	q->tail = w;
	uv_timer_init(s->loop, &w->timer);
	w->timer.data = w;
	uv_timer_start(&w->timer, on_wait_over, (uint64_t)wait_ms, 0);
	http_request_watch_orphan(req, on_client_gone, w);
	log_fields(LOG_DEBUG, "queue", "claim waits for a job", LOG_STR("model", w->model),
		   LOG_INT("wait_ms", wait_ms));
	if (!uv_is_active((uv_handle_t *)&q->poll_timer))
		uv_timer_again(&q->poll_timer);
}

void pgq_waiters_each(server_t *s, void (*fn)(void *ctx, const char *model), void *ctx)
{
	for (pg_waiter_t *w = s->pg ? s->pg->head : NULL; w; w = w->next)
		fn(ctx, w->model);
}

/* Wakes each model that has waiters once; stops polling when none wait. */
static void on_poll_timer(uv_timer_t *timer)
{
	server_t *s = timer->data;
	pgq_t *q = s->pg;
	char **models = NULL;
	size_t n = 0, cap = 0;

	if (!q->head) {
		uv_timer_stop(timer);
		return;
	}
	for (pg_waiter_t *w = q->head; w; w = w->next) {
		size_t i;

		for (i = 0; i < n && strcmp(models[i], w->model) != 0; i++)
			;
		if (i < n)
			continue;
		if (n == cap) {
			cap = cap ? cap * 2 : 8;
			models = xrealloc(models, cap * sizeof(*models));
		}
		models[n++] = xstrdup(w->model);
	}
	for (size_t i = 0; i < n; i++) {
		wake_model(s, models[i], WAKE_UNKNOWN);
		free(models[i]);
	}
	free(models);
}

static void on_notify(void *ctx, const char *channel, const char *payload)
{
	server_t *s = ctx;

	if (s->pg && payload)
		wake_model(s, payload, WAKE_UNKNOWN);
}

void pgq_flush_waiters(server_t *s)
{
	pgq_t *q = s->pg;
	pg_waiter_t *w, *next;

	if (!q)
		return;
	for (w = q->head; w; w = next) {
		next = w->next;
		if (w->busy)
			w->expired = 1;
		else
			waiter_done(q, w, 1);
	}
}

void pgq_job_added(server_t *s, const char *model)
{
	if (!s->pg)
		return;
	wake_model(s, model, 1);
	pg_pool_hint(s->pg->pool, model);
}

static void waiter_start_claim(server_t *s, pg_waiter_t *w)
{
	w->busy = 1;
	pgq_claim(s, w->model, strlen(w->model), &w->params, w->req, NULL, waiter_claim_done, w);
}

/* ---- sweep ---- */

static void zero_gauges(queue_model_t *m, void *ctx)
{
	model_state_t *ms = server_model_state(m);

	ms->committed[JOB_PENDING] = ms->committed[JOB_RUNNING] = 0;
}

/*
 * Sets the committed pending and running counts that the /metrics gauges
 * read to the cluster-wide counts of result r (model, state, count).
 */
static void set_gauges(server_t *s, const PGresult *r)
{
	queue_model_each(s->queue, zero_gauges, NULL);
	for (int i = 0; i < PQntuples(r); i++) {
		const char *model = PQgetvalue(r, i, 0);
		queue_model_t *m = queue_model_get(s->queue, model, strlen(model), 1);
		int state = atoi(PQgetvalue(r, i, 1));

		if (state == JOB_PENDING || state == JOB_RUNNING)
			server_model_state(m)->committed[state] =
				strtoull(PQgetvalue(r, i, 2), NULL, 10);
	}
}

/* Drops the jobs this node's sweep deleted (result r: id) from the status cache. */
static void forget_purged(server_t *s, const PGresult *r)
{
	for (int i = 0; i < PQntuples(r); i++) {
		iq_id_t id;

		if (id_parse(PQgetvalue(r, i, 0), (size_t)PQgetlength(r, i, 0), &id) == 0)
			status_cache_forget(s->status_cache, &id, 1);
	}
}

static void on_sweep_done(void *ctx, int rc, PGresult *const *results, int count,
			  const char *err)
{
	server_t *s = ctx;

	if (!s->pg)
		return;
	s->pg->sweeping = 0;
	if (rc == INFERQ_EIO) {
		log_warn("store", "lease and retention sweep failed: %s", err);
		return;
	}
	if (rc != 0 || count < 4)
		return;
	set_gauges(s, results[2]);
	pgq_files_forget(s, results[3], &s->pg->forgetting_files);
	for (int i = 0; i < PQntuples(results[0]); i++) {
		int pending = atoi(PQgetvalue(results[0], i, 2)) == JOB_PENDING;
		job_record_t rec = {0};

		id_parse(PQgetvalue(results[0], i, 0), (size_t)PQgetlength(results[0], i, 0),
			 &rec.id);
		rec.model = rbuf_from_str(PQgetvalue(results[0], i, 1));
		rec.state = pending ? JOB_PENDING : JOB_FAILED;
		rec.claimed_at = strtoll(PQgetvalue(results[0], i, 5), NULL, 10);
		rec.done_at = strtoll(PQgetvalue(results[0], i, 6), NULL, 10);
		rec.worker = text_field(results[0], i, 7);
		pgq_observe(s, &rec, STORE_OP_UPDATE, OBSERVE_CAUSE_EXPIRY, JOB_RUNNING);
		job_record_clear(&rec);

		log_fields(LOG_INFO, "lease",
			   pending ? "lease expired, job back to pending"
				   : "lease expired after the last retry, job failed",
			   LOG_STR("request_id", PQgetvalue(results[0], i, 0)),
			   LOG_STR("model", PQgetvalue(results[0], i, 1)),
			   LOG_UINT("retries", strtoull(PQgetvalue(results[0], i, 3), NULL, 10)));
	}
	forget_purged(s, results[1]);
	if (PQcmdTuples(results[1])[0] && strcmp(PQcmdTuples(results[1]), "0") != 0)
		log_fields(LOG_INFO, "store", "deleted finished jobs past --retention",
			   LOG_STR("count", PQcmdTuples(results[1])));
}

static void on_sweep_timer(uv_timer_t *timer)
{
	server_t *s = timer->data;
	pg_stmt_t st[4] = {{.sql = PG_SQL_EXPIRE},
			   {.sql = PG_SQL_PURGE},
			   {.sql = PG_SQL_GAUGES},
			   {.sql = PG_SQL_ORPHAN_FILES}};
	char retries[16], retention[32], batch[16], history[16];

	if (!pg_pool_up(s->pg->pool))
		return;
	pgq_keys_pull(s, &s->pg->key_version, &s->pg->key_pulling);
	if (s->pg->sweeping)
		return;
	snprintf(retries, sizeof(retries), "%u", s->config.max_retries);
	snprintf(retention, sizeof(retention), "%lld", (long long)s->config.retention_ms);
	snprintf(history, sizeof(history), "%u", s->config.max_job_history);
	pgq_param(&st[0], 0, retries);
	pgq_param(&st[0], 1, history);
	pgq_param(&st[1], 0, retention);
	snprintf(batch, sizeof(batch), "%u", s->config.pg_retention_batch);
	pgq_param(&st[1], 1, batch);
	s->pg->sweeping = 1;
	pgq_exec_background(s, st, 4, on_sweep_done, s);
}

/* ---- open and close ---- */

struct pgq_start {
	PGconn *pg; /* holds the migration lock */
	uint8_t storage_secret[STORAGE_SECRET_BYTES];
};

const uint8_t *pgq_start_storage_secret(const pgq_start_t *start)
{
	return start ? start->storage_secret : NULL;
}

int pgq_prepare(server_t *s, pgq_start_t **out)
{
	pgq_start_t *start = xcalloc(1, sizeof(*start));
	PGresult *r;
	char err[512];

	start->pg = pg_schema_connect(s->config.store, s->config.pg_connect_timeout_ms / 1000, err,
				      sizeof(err));
	if (start->pg == NULL || pg_schema_migrate(start->pg, err, sizeof(err)) != 0 ||
	    pgq_storage_secret_load(start->pg, start->storage_secret, err, sizeof(err)) != 0) {
		log_error("store", "cannot prepare the PostgreSQL database: %s", err);
		pgq_start_abort(start);
		return INFERQ_EIO;
	}
	r = PQexec(start->pg, "SELECT count(*) FROM inferq_api_keys");
	s->keys_shared = PQresultStatus(r) == PGRES_TUPLES_OK && atoi(PQgetvalue(r, 0, 0)) > 0;
	PQclear(r);
	*out = start;
	return 0;
}

void pgq_start_abort(pgq_start_t *start)
{
	if (!start)
		return;
	if (start->pg)
		PQfinish(start->pg);
	explicit_bzero(start->storage_secret, sizeof(start->storage_secret));
	free(start);
}

int pgq_open(server_t *s, pgq_start_t *start)
{
	pgq_t *q = xcalloc(1, sizeof(*q));
	pg_pool_config_t pc = {
		.conninfo = s->config.store,
		.size = s->config.pg_pool,
		.max_waiting = s->config.max_pending_changes,
		.listen = PGQ_CHANNEL,
		.notify = on_notify,
		.ctx = s,
		.connect_timeout_ms = s->config.pg_connect_timeout_ms,
		.statement_timeout_ms = s->config.pg_statement_timeout_ms,
	};
	char err[512];

	if (pgq_keys_push_start(s, start->pg, err, sizeof(err)) != 0 ||
	    pgq_keys_pull_start(s, start->pg, &q->key_version, err, sizeof(err)) != 0) {
		log_error("store", "cannot share the API keys through the database: %s", err);
		goto fail;
	}
	pgq_start_abort(start); /* closing the connection releases the migration lock */
	start = NULL;
	if (pg_pool_open(s->loop, &pc, &q->pool, err, sizeof(err)) != 0) {
		log_error("store", "bad --store connection string: %s", err);
		goto fail;
	}
	uv_timer_init(s->loop, &q->sweep_timer);
	q->sweep_timer.data = s;
	uv_timer_start(&q->sweep_timer, on_sweep_timer, (uint64_t)s->config.pg_sweep_interval_ms,
		       (uint64_t)s->config.pg_sweep_interval_ms);
	uv_timer_init(s->loop, &q->poll_timer);
	q->poll_timer.data = s;
	uv_timer_start(&q->poll_timer, on_poll_timer, (uint64_t)s->config.pg_poll_interval_ms,
		       (uint64_t)s->config.pg_poll_interval_ms);
	s->pg = q;
	log_info("store",
		 "queue on PostgreSQL at %s with %u connections: sweep_interval=%lldms "
		 "poll_interval=%lldms retention_batch=%u connect_timeout=%llds "
		 "statement_timeout=%lldms status_cache_ttl=%lldms",
		 pg_pool_host(q->pool), s->config.pg_pool,
		 (long long)s->config.pg_sweep_interval_ms, (long long)s->config.pg_poll_interval_ms,
		 s->config.pg_retention_batch, (long long)(s->config.pg_connect_timeout_ms / 1000),
		 (long long)s->config.pg_statement_timeout_ms,
		 (long long)s->config.pg_status_cache_ttl_ms);
	return 0;
fail:
	pgq_start_abort(start);
	free(q);
	return INFERQ_EIO;
}

static void free_pgq(uv_handle_t *h)
{
	pgq_t *q = h->data;

	if (--q->open_timers == 0)
		free(q);
}

void pgq_close(server_t *s)
{
	pgq_t *q = s->pg;

	if (!q)
		return;
	pgq_flush_waiters(s);
	s->pg = NULL;
	pg_pool_close(q->pool);
	q->open_timers = 2;
	uv_timer_stop(&q->sweep_timer);
	q->sweep_timer.data = q;
	uv_close((uv_handle_t *)&q->sweep_timer, free_pgq);
	uv_timer_stop(&q->poll_timer);
	q->poll_timer.data = q;
	uv_close((uv_handle_t *)&q->poll_timer, free_pgq);
}
