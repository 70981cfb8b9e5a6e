"""Admin views: GET /v1/admin/jobs (listing with filters and cursors), GET /v1/admin/jobs/ID
(the job with its history), GET /v1/admin/workers and GET /v1/admin/queues, against the real
server. Covers paging under concurrent submits, bad input, the admin role, history across
expiries, retries and a restart, the workers and queues figures, the bounds set by flags, and
the migration of a schema version 3 database.
"""

import json
import sqlite3
import subprocess
import threading
import time
import urllib.parse

import pytest

from cli_support import cli_env, run_cli, server_url
from support import (INFERQ_BIN, TIME_RE, UNKNOWN_ID, Api, assert_error, parse_time,
                     wait_for)

JOBS = "/v1/admin/jobs"
WORKERS = "/v1/admin/workers"
QUEUES = "/v1/admin/queues"
RETRIEVE = "/internal/v1/queue/retrieve"

JOB_KEYS = {"request_id", "model", "status", "priority", "retries", "inputs", "created_at"}
WORKER_KEYS = {"name", "first_seen", "last_seen", "current_jobs", "jobs_done", "jobs_failed",
               "jobs_expired"}
QUEUE_KEYS = {"model", "pending", "running", "done", "failed", "canceled", "waiting_workers",
              "submitted_total", "completed_total", "failed_total"}


def list_page(api, **params):
    reply = api.get(JOBS, params)
    assert reply.status == 200, reply
    assert set(reply.json) <= {"data", "next_cursor"}, reply.json
    return reply.json


def list_all(api, **params):
    """Follow next_cursor from the first page to the last; return (ids, pages)."""
    ids, pages, cursor = [], 0, None
    for _ in range(10000):
        query = dict(params)
        if cursor:
            query["cursor"] = cursor
        page = list_page(api, **query)
        pages += 1
        ids += [job["request_id"] for job in page["data"]]
        cursor = page.get("next_cursor")
        if cursor is None:
            return ids, pages
        assert isinstance(cursor, str), page
        assert cursor, page
    raise AssertionError("the listing did not end within 10000 pages")


def job_view(api, request_id):
    reply = api.get(f"{JOBS}/{request_id}")
    assert reply.status == 200, reply
    return reply.json


def events(job):
    return [(event["event"], event.get("worker")) for event in job["history"]]


def complete(api, claim, **fields):
    reply = api.worker_call("complete", claim["model"], claim["request_id"], claim["claim_id"],
                            outputs=fields.get("outputs", {}))
    assert reply.status == 200, reply


# ---------------------------------------------------------------------------
# GET /v1/admin/jobs


def test_list_newest_first_matches_status(start_server):
    server = start_server()
    api = server.api()
    ids = [api.submit_ok("t/list", {"i": i}, priority=i % 3) for i in range(5)]
    page = list_page(api)
    assert [job["request_id"] for job in page["data"]] == ids[::-1]
    assert "next_cursor" not in page
    for job in page["data"]:
        assert job == api.status_ok(job["request_id"], "t/list"), job
        assert JOB_KEYS <= set(job), job
        assert TIME_RE.match(job["created_at"]), job


def test_paging_with_concurrent_submits(start_server):
    server = start_server()
    api = server.api()
    before = [api.submit_ok(f"t/page{i % 2}", {"i": i}) for i in range(40)]
    stop = threading.Event()
    added = []

    def submit_more():
        other = server.api()
        for i in range(200):
            if stop.is_set():
                return
            added.append(other.submit_ok("t/page0", {"late": i}))

    thread = threading.Thread(target=submit_more, daemon=True)
    thread.start()
    seen, cursor = [], None
    for _ in range(100):
        page = list_page(api, limit=3, **({"cursor": cursor} if cursor else {}))
        seen += [job["request_id"] for job in page["data"]]
        cursor = page.get("next_cursor")
        if cursor is None:
            break
        time.sleep(0.005)
    stop.set()
    thread.join(10)

    assert len(seen) == len(set(seen)), "a job appeared on two pages"
    assert set(before) <= set(seen), "a job that existed at the first page was skipped"
    old = [job_id for job_id in seen if job_id in set(before)]
    assert old == before[::-1], "jobs that existed at the start are not newest first"
    late_seen = [job_id for job_id in seen if job_id not in set(before)]
    assert set(late_seen) <= set(added)


def test_filters(start_server):
    server = start_server()
    api = server.api()
    a = [api.submit_ok("t/fa", {"i": i}) for i in range(4)]
    b = [api.submit_ok("t/fb", {"i": i}) for i in range(3)]
    claim = api.claim_ok("t/fa")
    complete(api, claim)
    assert api.post("/v1/queue/cancel", {"model": "t/fb", "request_id": b[0]}).status == 200
    running = api.claim_ok("t/fa")

    ids, _ = list_all(api, model="t/fa")
    assert ids == a[::-1]
    ids, _ = list_all(api, status="pending")
    assert ids == [b[2], b[1], a[3], a[2]]
    ids, _ = list_all(api, model="t/fb", status="canceled")
    assert ids == [b[0]]
    ids, _ = list_all(api, model="t/fa", status="done")
    assert ids == [claim["request_id"]]
    ids, _ = list_all(api, status="running")
    assert ids == [running["request_id"]]
    assert list_all(api, status="failed") == ([], 1)
    assert list_all(api, model="t/none") == ([], 1)
    page = list_page(api, model="t/fa", status="done")
    assert page["data"][0]["outputs"] == {}


def test_cursor_walks_every_job_once(start_server):
    server = start_server()
    api = server.api()
    ids = [api.submit_ok("t/walk", {"i": i}) for i in range(23)]
    for limit in (1, 5, 22, 23, 1000):
        seen, pages = list_all(api, limit=limit)
        assert seen == ids[::-1], f"limit {limit}"
        assert pages == -(-23 // limit), f"limit {limit}: {pages} pages"
    assert len(list_page(api)["data"]) == 23


def test_scan_limit_gives_short_pages(start_server):
    server = start_server(max_list_scan=4)
    api = server.api()
    ids = [api.submit_ok("t/scan", {"i": i}) for i in range(12)]
    for job_id in ids[::3]:
        assert api.post("/v1/queue/cancel", {"model": "t/scan", "request_id": job_id}).status == 200
    seen, pages = list_all(api, status="canceled", limit=10)
    assert seen == ids[::3][::-1]
    assert pages >= 3, "a scan limit of 4 rows must split 12 rows over at least 3 pages"
    first = list_page(api, status="canceled", limit=10)
    assert len(first["data"]) <= 2, first
    assert "next_cursor" in first, first


def test_list_bad_input(start_server):
    server = start_server()
    api = server.api()
    api.submit_ok("t/bad", {})
    for limit in ("0", "1001", "-1", "abc", "", "1.5", "99999999999999999999"):
        assert_error(api.get(JOBS, {"limit": limit}), 400, "invalid_field", "limit")
    for cursor in ("junk", "", "0000000000000000", "zzzzzzzzzzzzzzzz", "00000000000000001",
                   "FFFFFFFFFFFFFFFF", "8000000000000000", "%00"):
        reply = api.get(JOBS + "?cursor=" + urllib.parse.quote(cursor, safe="%"))
        assert_error(reply, 400, "invalid_field", "cursor")
    body = assert_error(api.get(JOBS, {"status": "finished"}), 400, "invalid_field", "status")
    assert "finished" in body["message"]
    assert "pending" in body["message"]
    assert_error(api.get(JOBS, {"model": "bad model!"}), 400, "invalid_field", "model")
    assert_error(api.get(JOBS, {"model": ""}), 400, "invalid_field", "model")
    assert list_page(api, limit="1000")["data"]


def test_non_admin_keys_get_403(start_server):
    server = start_server()
    api = server.api()
    job_id = api.submit_ok("t/roles", {})
    keys = {}
    for role in ("client", "worker"):
        reply = api.post("/v1/admin/keys", {"name": role, "role": role, "models": ["*"]})
        assert reply.status == 200, reply
        keys[role] = reply.json["key"]
    for role, key in keys.items():
        other = Api(server.port, key)
        for path in (JOBS, f"{JOBS}/{job_id}", WORKERS, QUEUES):
            reply = other.get(path)
            assert reply.status == 403, (role, path, reply)
            assert reply.json["code"] == "permission_denied", reply
            assert reply.json["type"] == "permission_error", reply
            assert role in reply.json["message"], reply
        other.close()
    anonymous = Api(server.port, "")
    assert anonymous.get(JOBS).status == 401
    anonymous.close()


# ---------------------------------------------------------------------------
# GET /v1/admin/jobs/ID and the history


def test_history_of_expiry_retry_and_completion(start_server):
    server = start_server(max_retries=2)
    api = server.api()
    job_id = api.submit_ok("t/hist", {"x": 1})
    first = api.claim_ok("t/hist", worker="w1", claim_timeout=1)
    assert first["request_id"] == job_id
    wait_for(lambda: api.status_ok(job_id, "t/hist")["retries"] == 1, 10, "the lease to expire")
    second = api.claim_ok("t/hist", worker="w2")
    assert second["request_id"] == job_id
    complete(api, second, outputs={"y": 2})

    job = job_view(api, job_id)
    history = job.pop("history")
    assert job == api.status_ok(job_id, "t/hist")
    assert events(job | {"history": history}) == [
        ("submitted", None), ("claimed", "w1"), ("expired", "w1"), ("retried", "w1"),
        ("claimed", "w2"), ("completed", "w2")]
    times = [parse_time(event["at"]) for event in history]
    assert times == sorted(times)
    assert history[0]["at"] == job["created_at"]
    assert "retry 1 of 2" in history[3]["detail"]
    assert "1 s" in history[2]["detail"]
    for event in history:
        assert set(event) <= {"at", "event", "worker", "detail"}, event


def test_history_of_fail_release_cancel(start_server):
    server = start_server(max_retries=0)
    api = server.api()
    failed = api.submit_ok("t/events", {})
    claim = api.claim_ok("t/events", worker="wf")
    reply = api.worker_call("fail", "t/events", failed, claim["claim_id"], error="boom " * 200)
    assert reply.status == 200, reply
    history = job_view(api, failed)["history"]
    assert [e["event"] for e in history] == ["submitted", "claimed", "failed"]
    assert history[2]["worker"] == "wf"
    assert history[2]["detail"].startswith("boom boom")
    assert len(history[2]["detail"].encode()) <= 256

    released = api.submit_ok("t/events", {})
    claim = api.claim_ok("t/events", worker="wr")
    assert api.worker_call("release", "t/events", released, claim["claim_id"]).status == 200
    assert api.post("/v1/queue/cancel", {"model": "t/events", "request_id": released}).status == 200
    assert events(job_view(api, released)) == [
        ("submitted", None), ("claimed", "wr"), ("released", "wr"), ("canceled", None)]

    expired = api.submit_ok("t/events", {})
    api.claim_ok("t/events", claim_timeout=1)
    wait_for(lambda: api.status_ok(expired, "t/events")["status"] == "failed", 10,
             "the job to fail after its only lease")
    history = job_view(api, expired)["history"]
    assert [(e["event"], e.get("worker")) for e in history] == [
        ("submitted", None), ("claimed", None), ("expired", None), ("failed", None)]
    assert history[3]["detail"] == api.status_ok(expired, "t/events")["error"]
    assert history[3]["detail"].startswith("claim timed out")


def test_history_survives_restart(start_server):
    server = start_server()
    api = server.api()
    done = api.submit_ok("t/restart", {})
    claim = api.claim_ok("t/restart", worker="wd")
    complete(api, claim)
    running = api.submit_ok("t/restart", {})
    api.claim_ok("t/restart", worker="wr")
    before = {job_id: job_view(api, job_id) for job_id in (done, running)}
    server.stop()
    server.restart()
    api = server.api()
    for job_id, job in before.items():
        assert job_view(api, job_id) == job
    ids, _ = list_all(api, model="t/restart")
    assert ids == [running, done]


def test_history_kept_to_the_flag(start_server):
    server = start_server(max_job_history=3)
    api = server.api()
    job_id = api.submit_ok("t/bound", {})
    for i in range(4):
        claim = api.claim_ok("t/bound", worker=f"w{i}")
        assert api.worker_call("release", "t/bound", job_id, claim["claim_id"]).status == 200
    history = job_view(api, job_id)["history"]
    assert events({"history": history}) == [
        ("submitted", None), ("released", "w2"), ("claimed", "w3"), ("released", "w3")]

    server.stop()
    server.flags += ["--max-job-history", "0"]
    server.restart()
    api = server.api()
    claim = api.claim_ok("t/bound", worker="w9")
    complete(api, claim)
    assert events(job_view(api, job_id)) == [("submitted", None)]


def test_history_detail_cut_on_character(start_server):
    server = start_server(max_retries=0)
    api = server.api()
    job_id = api.submit_ok("t/cut", {})
    claim = api.claim_ok("t/cut", worker="wc")
    error = "\u00e9" * 200  # 400 bytes of UTF-8
    reply = api.worker_call("fail", "t/cut", job_id, claim["claim_id"], error=error)
    assert reply.status == 200, reply
    detail = job_view(api, job_id)["history"][-1]["detail"]
    assert detail == "\u00e9" * 128, "the detail keeps whole characters within 256 bytes"


def test_job_view_errors(start_server):
    server = start_server()
    api = server.api()
    assert_error(api.get(f"{JOBS}/{UNKNOWN_ID}"), 404, "not_found", "request_id")
    assert_error(api.get(f"{JOBS}/not-an-id"), 400, "invalid_field", "request_id")
    assert_error(api.get(f"{JOBS}/{UNKNOWN_ID}/x"), 400, "invalid_field", "request_id")
    assert api.post(f"{JOBS}/{UNKNOWN_ID}", {}).status == 405


# ---------------------------------------------------------------------------
# GET /v1/admin/workers


def test_workers_view(start_server):
    server = start_server(claim_timeout=60)
    api = server.api()
    jobs = [api.submit_ok("t/wk", {"i": i}) for i in range(4)]
    a = api.claim_ok("t/wk", worker="alpha")
    b = api.claim_ok("t/wk", worker="beta")
    complete(api, b)
    reply = api.get(RETRIEVE + "?" + urllib.parse.urlencode(
        {"model": "t/wk", "timeout": "0s", "hostname": "gpu-7"}),
        headers={"x-worker-version": "sprocket 1.4"})
    assert reply.status == 200, reply
    assert reply.json["data"]["request_id"] == jobs[2], reply
    assert api.claim("t/wk", claim_timeout=60).status == 200  # no worker name

    data = api.get(WORKERS).json["data"]
    by_name = {worker["name"]: worker for worker in data}
    assert set(by_name) == {"alpha", "beta", "gpu-7", "(anonymous)"}, data
    for worker in data:
        assert WORKER_KEYS <= set(worker), worker
        assert parse_time(worker["first_seen"]) <= parse_time(worker["last_seen"])
    seen = [parse_time(worker["last_seen"]) for worker in data]
    assert seen == sorted(seen, reverse=True)
    assert by_name["alpha"]["current_jobs"] == [{"request_id": a["request_id"], "model": "t/wk"}]
    assert by_name["beta"]["current_jobs"] == []
    assert by_name["beta"]["jobs_done"] == 1
    assert by_name["gpu-7"]["version"] == "sprocket 1.4"
    assert by_name["gpu-7"]["current_jobs"] == [{"request_id": jobs[2], "model": "t/wk"}]
    assert "version" not in by_name["alpha"]
    assert by_name["(anonymous)"]["current_jobs"][0]["request_id"] == jobs[3]

    reply = api.worker_call("fail", "t/wk", a["request_id"], a["claim_id"], error="no")
    assert reply.status == 200
    alpha = {w["name"]: w for w in api.get(WORKERS).json["data"]}["alpha"]
    assert alpha["jobs_failed"] == 1
    assert alpha["current_jobs"] == []


def test_workers_count_expiries(start_server):
    server = start_server()
    api = server.api()
    job_id = api.submit_ok("t/wexp", {})
    api.claim_ok("t/wexp", worker="slow", claim_timeout=1)
    wait_for(lambda: api.status_ok(job_id, "t/wexp")["retries"] == 1, 10, "the lease to expire")
    slow = {w["name"]: w for w in api.get(WORKERS).json["data"]}["slow"]
    assert slow["jobs_expired"] == 1
    assert slow["current_jobs"] == []


def test_workers_bounded_and_forgotten(start_server):
    server = start_server(max_workers_tracked=2, worker_forget="2s")
    api = server.api()
    for name in ("one", "two", "three"):
        assert api.claim("t/wb", worker=name).status == 204
        time.sleep(0.01)
    names = [w["name"] for w in api.get(WORKERS).json["data"]]
    assert names == ["three", "two"]
    wait_for(lambda: api.get(WORKERS).json["data"] == [], 10, "idle workers to be forgotten")


def test_worker_with_job_not_forgotten(start_server):
    server = start_server(worker_forget="1s")
    api = server.api()
    job_id = api.submit_ok("t/wkeep", {})
    claim = api.claim_ok("t/wkeep", worker="holder", claim_timeout=600)
    api.claim("t/wkeep", worker="idle")
    time.sleep(1.5)
    # A new worker makes the view forget idle ones; the holder's job keeps it listed.
    assert api.claim("t/wkeep", worker="late").status == 204
    by_name = {w["name"]: w for w in api.get(WORKERS).json["data"]}
    assert set(by_name) == {"holder", "late"}, by_name
    assert by_name["holder"]["current_jobs"] == [{"request_id": job_id, "model": "t/wkeep"}]

    complete(api, claim)
    wait_for(lambda: "holder" not in {w["name"] for w in api.get(WORKERS).json["data"]}, 10,
             "the holder to be forgotten once its job is done")


def test_workers_evicted_without_jobs_first(start_server):
    server = start_server(max_workers_tracked=2)
    api = server.api()
    job_id = api.submit_ok("t/wevict", {})
    api.claim_ok("t/wevict", worker="holder")
    assert api.claim("t/wevict", worker="idle").status == 204
    assert api.claim("t/wevict", worker="newest").status == 204
    by_name = {w["name"]: w for w in api.get(WORKERS).json["data"]}
    assert set(by_name) == {"holder", "newest"}, by_name
    assert by_name["holder"]["current_jobs"] == [{"request_id": job_id, "model": "t/wevict"}]


def test_running_jobs_listed_after_restart(start_server):
    server = start_server()
    api = server.api()
    job_id = api.submit_ok("t/wrst", {})
    api.claim_ok("t/wrst", worker="keeper")
    server.stop()
    server.restart()
    api = server.api()
    data = api.get(WORKERS).json["data"]
    assert [w["name"] for w in data] == ["keeper"]
    assert data[0]["current_jobs"] == [{"request_id": job_id, "model": "t/wrst"}]


# ---------------------------------------------------------------------------
# GET /v1/admin/queues


def queues(api):
    reply = api.get(QUEUES)
    assert reply.status == 200, reply
    return {row["model"]: row for row in reply.json["data"]}, [r["model"] for r in reply.json["data"]]


def test_queues_view(start_server):
    server = start_server(max_retries=0)
    api = server.api()
    ids = [api.submit_ok("t/qa", {"i": i}) for i in range(5)]
    api.submit_ok("t/qb", {})
    complete(api, api.claim_ok("t/qa"))
    failed = api.claim_ok("t/qa")
    assert api.worker_call("fail", "t/qa", failed["request_id"], failed["claim_id"],
                           error="x").status == 200
    assert api.post("/v1/queue/cancel", {"model": "t/qa", "request_id": ids[4]}).status == 200
    api.claim_ok("t/qa")

    waiter = threading.Thread(target=lambda: server.api().claim("t/qc", wait=5), daemon=True)
    waiter.start()
    rows, order = wait_for(lambda: (lambda r: r if "t/qc" in r[0] else None)(queues(api)), 5,
                           "the waiting claim to show")
    assert order == sorted(order)
    qa = rows["t/qa"]
    assert QUEUE_KEYS <= set(qa), qa
    assert (qa["pending"], qa["running"], qa["done"], qa["failed"], qa["canceled"]) == (1, 1, 1, 1, 1)
    assert (qa["submitted_total"], qa["completed_total"], qa["failed_total"]) == (5, 1, 1)
    assert qa["oldest_pending_at"] == api.status_ok(ids[3], "t/qa")["created_at"]
    assert rows["t/qb"]["pending"] == 1
    assert rows["t/qb"]["submitted_total"] == 1
    assert rows["t/qc"]["waiting_workers"] == 1
    assert rows["t/qc"]["pending"] == 0
    assert "oldest_pending_at" not in rows["t/qc"]
    waiter.join(10)

    server.stop()
    server.restart()
    api = server.api()
    rows, _ = queues(api)
    qa = rows["t/qa"]
    assert (qa["pending"], qa["running"], qa["done"], qa["failed"], qa["canceled"]) == (1, 1, 1, 1, 1)
    assert (qa["submitted_total"], qa["completed_total"], qa["failed_total"]) == (0, 0, 0)


# ---------------------------------------------------------------------------
# Flags and the schema migration


def test_bad_flag_values(tmp_path):
    cases = [("--max-job-history", "1001"), ("--max-job-history", "x"),
             ("--max-workers-tracked", "0"), ("--worker-forget", "0s"),
             ("--worker-forget", "31d"), ("--max-list-scan", "0")]
    for flag, value in cases:
        proc = subprocess.run([str(INFERQ_BIN), "serve", "--listen", "127.0.0.1:0", "--data-dir",
                               str(tmp_path / "never"), flag, value],
                              capture_output=True, text=True, timeout=30)
        assert proc.returncode == 2, (flag, value, proc)
        assert flag in proc.stderr, proc.stderr
        assert value in proc.stderr, proc.stderr


# The schema of version 3 as inferq wrote it, with one job in each state.
V3_SCHEMA = """
CREATE TABLE jobs (seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE CHECK (length(id) = 36),
 model TEXT NOT NULL, priority INTEGER NOT NULL CHECK (priority BETWEEN -2147483648 AND 2147483647),
 state TEXT NOT NULL CHECK (state IN ('pending', 'running', 'done', 'failed', 'canceled')),
 retries INTEGER NOT NULL CHECK (retries >= 0), created_at INTEGER NOT NULL, claimed_at INTEGER,
 done_at INTEGER, lease_expires_at INTEGER, claim_timeout INTEGER CHECK (claim_timeout >= 0),
 claim_id TEXT CHECK (length(claim_id) = 36), worker TEXT, payload TEXT NOT NULL, info TEXT,
 outputs TEXT, error TEXT, warnings TEXT) STRICT;
CREATE INDEX jobs_active ON jobs (seq) WHERE state IN ('pending', 'running');
CREATE INDEX jobs_done_at ON jobs (done_at) WHERE done_at IS NOT NULL;
CREATE TABLE store_meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL) STRICT, WITHOUT ROWID;
INSERT INTO store_meta (name, value) VALUES ('max_seq', 0);
ALTER TABLE jobs ADD COLUMN idempotency_key TEXT;
ALTER TABLE jobs ADD COLUMN body_hash TEXT;
CREATE INDEX jobs_idempotency ON jobs (model, idempotency_key, created_at)
 WHERE idempotency_key IS NOT NULL;
CREATE TABLE api_keys (name TEXT NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 64),
 key_hash TEXT NOT NULL UNIQUE CHECK (length(key_hash) = 64),
 role TEXT NOT NULL CHECK (role IN ('admin', 'client', 'worker')), models TEXT NOT NULL,
 created_at INTEGER NOT NULL, last_used_at INTEGER, expires_at INTEGER, revoked_at INTEGER) STRICT;
PRAGMA user_version = 3;
"""

V3_IDS = ["01900000-0000-7000-8000-00000000000%d" % i for i in range(1, 6)]


def make_v3_data_dir(data_dir):
    data_dir.mkdir(parents=True)
    db = sqlite3.connect(data_dir / "inferq.db")
    db.executescript(V3_SCHEMA)
    now = int(time.time() * 1000)
    rows = [
        (1, V3_IDS[0], "t/old", "done", now - 9000, now - 8000, now - 7000, None, '{"r":1}', None),
        (2, V3_IDS[1], "t/old", "failed", now - 8000, now - 7000, now - 6000, None, None, "bad"),
        (3, V3_IDS[2], "t/old", "canceled", now - 7000, None, now - 6000, None, None, None),
        (4, V3_IDS[3], "t/old", "running", now - 6000, now - 5000, None, now + 600000, None, None),
        (5, V3_IDS[4], "t/old2", "pending", now - 5000, None, None, None, None, None),
    ]
    for seq, job_id, model, state, created, claimed, done, lease, outputs, error in rows:
        db.execute(
            "INSERT INTO jobs (seq, id, model, priority, state, retries, created_at, claimed_at,"
            " done_at, lease_expires_at, claim_timeout, claim_id, worker, payload, outputs, error)"
            " VALUES (?, ?, ?, 0, ?, 0, ?, ?, ?, ?, ?, ?, ?, '{}', ?, ?)",
            (seq, job_id, model, state, created, claimed, done, lease,
             600 if state == "running" else None,
             "11111111-2222-4333-8444-555555555555" if state == "running" else None,
             "old-worker" if claimed else None, outputs, error))
    db.commit()
    db.close()


@pytest.mark.local_store_only(reason="it migrates a SQLite database of schema version 3")
def test_v3_database_migrates(start_server, tmp_path):
    data_dir = tmp_path / "v3"
    make_v3_data_dir(data_dir)
    server = start_server(data_dir=data_dir)
    api = server.api()

    ids, _ = list_all(api)
    assert ids == V3_IDS[::-1]
    rows, order = queues(api)
    assert order == ["t/old", "t/old2"]
    old = rows["t/old"]
    assert (old["pending"], old["running"], old["done"], old["failed"], old["canceled"]) == (0, 1, 1, 1, 1)
    assert rows["t/old2"]["pending"] == 1
    assert events(job_view(api, V3_IDS[0])) == [("submitted", None)]
    assert job_view(api, V3_IDS[0])["outputs"] == {"r": 1}

    # The running job of the old database gets new events on top of no history.
    reply = api.worker_call("complete", "t/old", V3_IDS[3], "11111111-2222-4333-8444-555555555555",
                            outputs={})
    assert reply.status == 200, reply
    assert events(job_view(api, V3_IDS[3])) == [("submitted", None), ("completed", "old-worker")]
    rows, _ = queues(api)
    assert (rows["t/old"]["running"], rows["t/old"]["done"]) == (0, 2)

    db = sqlite3.connect(data_dir / "inferq.db")
    try:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 5
    finally:
        db.close()


# ---------------------------------------------------------------------------
# inferq jobs and inferq workers


def run_admin_cli(server, tmp_path, *args, key=None):
    env = cli_env(server_url(server), INFERQ_API_KEY=key or server.key)
    return run_cli(list(args), tmp_path, env=env)


def table_rows(stdout):
    lines = stdout.rstrip("\n").split("\n")
    return lines[0].split(), [line.split() for line in lines[1:]]


def test_cli_jobs_table_and_paging(start_server, tmp_path):
    server = start_server()
    api = server.api()
    ids = [api.submit_ok("t/cli", {"i": i}, priority=i) for i in range(5)]
    api.submit_ok("t/cli-other", {})
    api.claim_ok("t/cli")  # the highest priority: ids[4]

    proc = run_admin_cli(server, tmp_path, "jobs", "--model", "t/cli")
    assert proc.returncode == 0, proc
    header, rows = table_rows(proc.stdout)
    assert header == ["ID", "MODEL", "STATUS", "PRIORITY", "RETRIES", "CREATED", "AGE"]
    assert [row[0] for row in rows] == ids[::-1]
    assert rows[0][1:5] == ["t/cli", "running", "4", "0"]
    assert rows[1][1:5] == ["t/cli", "pending", "3", "0"]
    for row in rows:
        assert TIME_RE.match(row[5]), row
        assert row[6].endswith("s"), row
    assert proc.stderr == ""

    proc = run_admin_cli(server, tmp_path, "jobs", "--limit", "2")
    assert proc.returncode == 0, proc
    _, rows = table_rows(proc.stdout)
    assert len(rows) == 2
    assert "--cursor" in proc.stderr
    cursor = proc.stderr.split("--cursor ")[1].split()[0]
    proc = run_admin_cli(server, tmp_path, "jobs", "--limit", "2", "--cursor", cursor)
    _, more = table_rows(proc.stdout)
    assert [row[0] for row in more] == ids[3:1:-1]

    proc = run_admin_cli(server, tmp_path, "jobs", "--all", "--limit", "2")
    assert proc.returncode == 0, proc
    _, rows = table_rows(proc.stdout)
    assert len(rows) == 6
    assert proc.stderr == ""

    proc = run_admin_cli(server, tmp_path, "jobs", "--all", "--limit", "1", "--json",
                         "--status", "pending")
    assert proc.returncode == 0, proc
    body = json.loads(proc.stdout)
    assert [job["request_id"] for job in body["data"]] == (
        [job["request_id"] for job in list_page(api, status="pending")["data"]])

    proc = run_admin_cli(server, tmp_path, "jobs", "--json", "--limit", "1")
    assert json.loads(proc.stdout) == list_page(api, limit=1)


def test_cli_jobs_bad_input(start_server, tmp_path):
    server = start_server()
    proc = run_admin_cli(server, tmp_path, "jobs", "--status", "finished")
    assert proc.returncode == 2, proc
    assert proc.stdout == ""
    assert "finished" in proc.stderr
    for limit in ("0", "1001", "x"):
        proc = run_admin_cli(server, tmp_path, "jobs", "--limit", limit)
        assert proc.returncode == 2, proc
        assert "--limit" in proc.stderr, proc
    proc = run_admin_cli(server, tmp_path, "jobs", "--cursor", "junk")
    assert proc.returncode == 2, proc
    assert "cursor" in proc.stderr, proc
    proc = run_admin_cli(server, tmp_path, "workers", "--status", "done")
    assert proc.returncode == 2, proc
    assert "only to `inferq jobs`" in proc.stderr, proc

    reply = server.api().post("/v1/admin/keys", {"name": "c", "role": "client", "models": ["*"]})
    proc = run_admin_cli(server, tmp_path, "jobs", key=reply.json["key"])
    assert proc.returncode == 1, proc
    assert "admin" in proc.stderr


def test_cli_workers(start_server, tmp_path):
    server = start_server()
    api = server.api()
    api.submit_ok("t/cliw", {})
    api.submit_ok("t/cliw", {})
    complete(api, api.claim_ok("t/cliw", worker="done-worker"))
    api.claim("t/cliw", worker="busy-worker", claim_timeout=60)

    proc = run_admin_cli(server, tmp_path, "workers")
    assert proc.returncode == 0, proc
    header, rows = table_rows(proc.stdout)
    assert header == ["NAME", "VERSION", "LAST_SEEN", "CURRENT", "DONE", "FAILED", "EXPIRED"]
    by_name = {row[0]: row for row in rows}
    assert by_name["busy-worker"][1:2] + by_name["busy-worker"][3:] == ["-", "1", "0", "0", "0"]
    assert by_name["done-worker"][3:] == ["0", "1", "0", "0"]

    proc = run_admin_cli(server, tmp_path, "workers", "--json")
    assert json.loads(proc.stdout) == api.get(WORKERS).json


# ---------------------------------------------------------------------------
# The views on the postgres store: several nodes, and the schema migration


def db_name(uri):
    return uri.split("///", 1)[1].split("?", 1)[0]


def test_views_across_two_nodes(start_server, pg_cluster):
    """Jobs, history and queue counts come from the database, so every node shows the same.
    The workers view shows every running job of the cluster but counts only this node's
    requests. Long-poll claims are counted on the node where they wait."""
    uri = pg_cluster.new_database()
    a = start_server(store=uri, claim_timeout=60, max_retries=1)
    b = start_server(store=uri, claim_timeout=60, max_retries=1)
    api_a, api_b = a.api(), b.api()
    ids = [api_a.submit_ok("t/two", {"i": i}) for i in range(3)]
    ids.append(api_b.submit_ok("t/two", {"i": 3}))
    done = api_a.claim_ok("t/two", worker="alpha")
    complete(api_a, done)
    running = api_a.claim_ok("t/two", worker="alpha")
    # beta polls node A too, so both nodes track it and whichever sweeps counts its expiry.
    assert api_a.claim("t/empty", worker="beta").status == 204
    expiring = api_b.claim_ok("t/two", worker="beta", claim_timeout=1)
    wait_for(lambda: api_a.status_ok(expiring["request_id"], "t/two")["retries"] == 1, 10,
             "the lease to expire")

    assert list_all(api_a) == list_all(api_b)
    assert list_all(api_b)[0] == ids[::-1]
    for job_id in ids:
        assert job_view(api_a, job_id) == job_view(api_b, job_id)
    assert events(job_view(api_b, done["request_id"])) == [
        ("submitted", None), ("claimed", "alpha"), ("completed", "alpha")]
    assert events(job_view(api_a, expiring["request_id"])) == [
        ("submitted", None), ("claimed", "beta"), ("expired", "beta"), ("retried", "beta")]

    waiter = threading.Thread(target=lambda: b.api().claim("t/idle", wait=5), daemon=True)
    waiter.start()
    rows_b, _ = wait_for(lambda: (lambda r: r if "t/idle" in r[0] else None)(queues(api_b)), 5,
                         "the waiting claim to show on its node")
    rows_a, _ = queues(api_a)
    for rows in (rows_a, rows_b):
        two = rows["t/two"]
        assert (two["pending"], two["running"], two["done"], two["failed"]) == (2, 1, 1, 0)
        assert two["oldest_pending_at"] == api_a.status_ok(ids[2], "t/two")["created_at"]
    assert rows_b["t/idle"]["waiting_workers"] == 1
    assert "t/idle" not in rows_a
    assert rows_a["t/two"]["submitted_total"] == 3
    assert rows_b["t/two"]["submitted_total"] == 1
    waiter.join(10)

    workers_a = {w["name"]: w for w in api_a.get(WORKERS).json["data"]}
    workers_b = {w["name"]: w for w in api_b.get(WORKERS).json["data"]}
    current = [{"request_id": running["request_id"], "model": "t/two"}]
    assert workers_a["alpha"]["current_jobs"] == current
    assert workers_b["alpha"]["current_jobs"] == current
    assert workers_a["alpha"]["jobs_done"] == 1
    assert workers_b["alpha"]["jobs_done"] == 0, "counters are per node"
    assert workers_b["beta"]["current_jobs"] == []
    expired = workers_a["beta"]["jobs_expired"] + workers_b["beta"]["jobs_expired"]
    assert expired == 1, "only the node that swept the lease counts the expiry"

    complete(api_a, running)
    assert {w["name"]: w for w in api_b.get(WORKERS).json["data"]}["alpha"]["current_jobs"] == []


def test_postgres_schema_2_migrates(start_server, pg_cluster):
    uri = pg_cluster.new_database()
    server = start_server(store=uri)
    api = server.api()
    done = api.submit_ok("t/pgold", {})
    complete(api, api.claim_ok("t/pgold", worker="old"))
    running = api.submit_ok("t/pgold", {})
    claim = api.claim_ok("t/pgold", worker="old")
    assert server.stop() == 0
    # Back to schema version 2 as an earlier inferq left it: no history, no model index, no
    # tables of output files and settings.
    pg_cluster.psql("DROP TABLE inferq_files; DROP TABLE inferq_settings; "
                    "ALTER TABLE inferq_jobs DROP COLUMN history; "
                    "DROP INDEX inferq_jobs_model_seq; DROP FUNCTION inferq_history_add; "
                    "DELETE FROM inferq_schema WHERE version IN (3, 4)", db_name(uri))

    server.restart()
    api = server.api()
    versions = pg_cluster.psql("SELECT version FROM inferq_schema ORDER BY version", db_name(uri))
    assert versions == [["1"], ["2"], ["3"], ["4"]]
    assert events(job_view(api, done)) == [("submitted", None)]
    complete(api, claim)
    assert events(job_view(api, running)) == [("submitted", None), ("completed", "old")]
    assert list_all(api, model="t/pgold")[0] == [running, done]
