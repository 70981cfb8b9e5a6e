"""Batch routes, an inferq extension: POST /v1/queue/submit_batch (all or nothing, one commit),
claims of several jobs with max_jobs, and POST /v1/queue/complete_batch (each job on its own).

Every check runs against the real binary. Crash safety is checked with SIGKILL, and with a disk
that fails during the commit (the LD_PRELOAD shim of test_faults.py).
"""

import http.client
import json
import subprocess
import threading
import time

import pytest

from support import (
    INFERQ_BIN,
    UNKNOWN_CLAIM,
    UNKNOWN_ID,
    UUID4_RE,
    UUID7_RE,
    Api,
    assert_error,
    parse_time,
    raw_member,
    wait_for,
)
from test_faults import check_store_unavailable, fault_server  # noqa: F401 (fixture)


MODEL = "batch/model"
CLAIM_FIELDS = {"request_id", "model", "payload", "priority", "retries", "claim_id",
                "claimed_at", "lease_expires_at"}


def submit_batch(api, jobs, headers=None):
    return api.post("/v1/queue/submit_batch", {"jobs": jobs}, headers)


def submit_batch_ok(api, jobs, headers=None):
    reply = submit_batch(api, jobs, headers)
    assert reply.status == 200, f"submit_batch failed: {reply!r}"
    data = reply.json["data"]
    assert len(data) == len(jobs), reply.json
    for item in data:
        assert item["requestId"] == item["request_id"], item
        assert UUID7_RE.match(item["request_id"]), item
    return [item["request_id"] for item in data]


def claim_many(api, model, max_jobs, **fields):
    fields.setdefault("claim_timeout", 300)
    return api.post("/v1/queue/claim", {"model": model, "max_jobs": max_jobs, **fields})


def complete_batch(api, jobs):
    return api.post("/v1/queue/complete_batch", {"jobs": jobs})


def jobs_of(n, model=MODEL, tag="j"):
    return [{"model": model, "payload": {"tag": tag, "i": i}} for i in range(n)]


def create_key(server, name, role, models):
    admin = server.api()
    reply = admin.post("/v1/admin/keys", {"name": name, "role": role, "models": models})
    assert reply.status == 200, f"creating key {name} failed: {reply!r}"
    return Api(server.port, reply.json["key"])


def waiting_workers(api, model):
    reply = api.get("/v1/admin/queues")
    assert reply.status == 200, reply
    for row in reply.json["data"]:
        if row["model"] == model:
            return row["waiting_workers"]
    return 0


def wait_until_parked(api, model):
    """Wait until one claim waits for a job of model.

    The postgres store does not serve GET /v1/admin/queues (501), so there the claim gets one
    second to park. A claim that has not parked yet takes the same jobs at once, so the checks
    that follow hold either way.
    """
    if api.get("/v1/admin/queues").status == 501:
        time.sleep(1.0)
        return
    wait_for(lambda: waiting_workers(api, model) == 1, 10, "the claim to wait")


# ---------------------------------------------------------------------------
# submit_batch


def test_submit_batch_order_and_ids(server):
    api = server.api()
    jobs = [
        {"model": MODEL, "payload": {"i": 0}},
        {"model": MODEL, "payload": {"i": 1}, "priority": 7, "info": {"who": "b"}},
        {"model": "batch/other", "payload": {"i": 2}, "priority": -3},
        {"model": MODEL, "payload": {"i": 3}, "extra": True},
    ]
    # Job 0's payload as raw text, to check that it comes back byte for byte.
    raw_payload = b'{"i": 0, "big": 123456789012345678901234567890, "f": 1.0, "e": 1e400}'
    body = json.dumps({"jobs": jobs, "note": 1}).encode().replace(b'{"i": 0}', raw_payload, 1)
    reply = api.post("/v1/queue/submit_batch", body)
    assert reply.status == 200, reply
    data = reply.json["data"]
    ids = [item["request_id"] for item in data]
    assert len(set(ids)) == 4, ids
    assert all(UUID7_RE.match(i) for i in ids), ids
    assert all(item["requestId"] == item["request_id"] for item in data), data
    # Unknown fields: per job in its own result, and at the top level for the envelope.
    assert reply.json["warnings"] == ['unknown field "note" ignored'], reply.json
    assert data[3]["warnings"] == ['unknown field "extra" ignored'], data
    assert "warnings" not in data[0], data

    for i, job_id in enumerate(ids):
        status = api.status_ok(job_id, jobs[i]["model"])
        assert status["status"] == "pending", status
        assert status["priority"] == jobs[i].get("priority", 0), status
        assert status["inputs"]["i"] == i, status
    assert raw_member(api.status(ids[0], MODEL).raw, "inputs") == raw_payload
    assert api.status_ok(ids[1], MODEL)["info"] == {"who": "b"}
    assert api.status_ok(ids[3], MODEL)["warnings"] == ['unknown field "extra" ignored']
    # A job is not visible under another model.
    assert api.status(ids[2], MODEL).status == 404
    assert api.metrics_ok(MODEL)["messages_waiting"] == 3
    assert api.metrics_ok("batch/other")["messages_waiting"] == 1


def test_submit_batch_keeps_awkward_bytes(server):
    api = server.api()
    # Quotes, backslashes, braces, commas, a "NULL" string, an escaped NUL and UTF-8: what an
    # encoding of the batch into SQL arrays could garble.
    raws = [
        b'{"q": "say \\"hi\\"", "path": "C:\\\\x\\\\y", "b": "{a,b}"}',
        b'{"n": "NULL", "z": "\\u0000", "u": "\xc3\xa9\xe2\x82\xac", "e": {}}',
        b'{ "spaced" :\t[ 1 , 2 ] }',
    ]
    body = b'{"jobs": [' + b",".join(
        b'{"model": "' + MODEL.encode() + b'", "payload": ' + raw + b', "info": ' + raw + b"}"
        for raw in raws) + b"]}"
    reply = api.post("/v1/queue/submit_batch", body)
    assert reply.status == 200, reply
    ids = [item["request_id"] for item in reply.json["data"]]
    for job_id, raw in zip(ids, raws):
        status = api.status(job_id, MODEL)
        assert raw_member(status.raw, "inputs") == raw
        assert raw_member(status.raw, "info") == raw


def test_submit_batch_keeps_fifo_within_priority(server):
    api = server.api()
    first = submit_batch_ok(api, jobs_of(5, tag="a"))
    second = submit_batch_ok(api, jobs_of(5, tag="b"))
    claimed = [api.claim_ok(MODEL)["request_id"] for _ in range(10)]
    assert claimed == first + second


BAD_JOBS = [
    # (job at index 3, status, code, param)
    ({"payload": {}}, 400, "missing_field", "jobs[3].model"),
    ({"model": "", "payload": {}}, 400, "invalid_field", "jobs[3].model"),
    ({"model": "bad model", "payload": {}}, 400, "invalid_field", "jobs[3].model"),
    ({"model": MODEL}, 400, "missing_field", "jobs[3].payload"),
    ({"model": MODEL, "payload": [1]}, 400, "invalid_field", "jobs[3].payload"),
    ({"model": MODEL, "payload": {}, "priority": 1.5}, 400, "invalid_field", "jobs[3].priority"),
    ({"model": MODEL, "payload": {}, "priority": 2147483648}, 400, "invalid_field",
     "jobs[3].priority"),
    ({"model": MODEL, "payload": {}, "info": {"retry_history": []}}, 400, "invalid_field",
     "jobs[3].info"),
    ({"model": MODEL, "payload": {}, "info": "x"}, 400, "invalid_field", "jobs[3].info"),
    ("not an object", 400, "invalid_field", "jobs[3]"),
    (None, 400, "invalid_field", "jobs[3]"),
]


@pytest.mark.parametrize("bad,status,code,param", BAD_JOBS,
                         ids=[case[3] + ":" + json.dumps(case[0])[:30] for case in BAD_JOBS])
def test_one_bad_job_stores_nothing(server, bad, status, code, param):
    api = server.api()
    jobs = jobs_of(6)
    jobs[3] = bad
    assert_error(submit_batch(api, jobs), status, code, param)
    assert api.metrics_ok(MODEL) == {"messages_waiting": 0, "messages_running": 0,
                                     "total_jobs": 0}
    assert api.claim(MODEL).status == 204
    # The same batch with the job fixed goes through whole.
    jobs[3] = {"model": MODEL, "payload": {"fixed": True}}
    assert len(submit_batch_ok(api, jobs)) == 6
    assert api.metrics_ok(MODEL)["messages_waiting"] == 6


def test_duplicate_field_in_a_job(server):
    api = server.api()
    body = ('{"jobs": [{"model": "batch/model", "payload": {}}, '
            '{"model": "batch/model", "payload": {}, "priority": 1, "priority": 2}]}')
    assert_error(api.post("/v1/queue/submit_batch", body), 400, "duplicate_field",
                 "jobs[1].priority")
    assert api.metrics_ok(MODEL)["total_jobs"] == 0


def test_envelope_errors(server):
    api = server.api()
    for route in ("submit_batch", "complete_batch"):
        path = f"/v1/queue/{route}"
        assert_error(api.post(path, {"jobs": []}), 400, "invalid_field", "jobs",
                     message_has="empty")
        assert_error(api.post(path, {}), 400, "missing_field", "jobs")
        assert_error(api.post(path, {"jobs": {"model": MODEL}}), 400, "invalid_field", "jobs")
        assert_error(api.post(path, {"jobs": None}), 400, "invalid_field", "jobs")
        assert_error(api.post(path, b'{"jobs": [}'), 400, "invalid_json")
        assert_error(api.post(path, b'[]'), 400, "invalid_body")
        assert_error(api.post(path, b'{"jobs": [], "jobs": []}'), 400, "duplicate_field", "jobs")
        reply = api.request("GET", path)
        assert reply.status == 405, reply
        assert reply.headers["allow"] == "POST", reply
    assert api.metrics_ok(MODEL)["total_jobs"] == 0


def test_foreign_model_rejects_whole_batch(server):
    admin = server.api()
    client = create_key(server, "team-client", "client", ["team/*"])
    worker = create_key(server, "team-worker", "worker", ["team/*"])
    jobs = [{"model": "team/a", "payload": {}}, {"model": "team/a", "payload": {}},
            {"model": "other/b", "payload": {}}]
    body = assert_error(submit_batch(client, jobs), 404, "not_found", "jobs[2].model")
    assert "other/b" in body["message"], body
    assert admin.metrics_ok("team/a")["total_jobs"] == 0
    assert admin.metrics_ok("other/b")["total_jobs"] == 0

    # Covered models go through; the worker role may not submit, the client role may not
    # complete.
    ids = submit_batch_ok(client, jobs[:2])
    assert admin.metrics_ok("team/a")["messages_waiting"] == 2
    assert_error(submit_batch(worker, jobs[:2]), 403, "permission_denied")
    assert_error(complete_batch(client, [{"model": "team/a", "request_id": ids[0],
                                          "claim_id": UNKNOWN_CLAIM, "outputs": {}}]),
                 403, "permission_denied")
    # A job whose model the worker key does not cover gets not_found, job by job.
    claims = claim_many(worker, "team/a", 2).json["data"]
    reply = complete_batch(worker, [
        {"model": "other/b", "request_id": claims[0]["request_id"],
         "claim_id": claims[0]["claim_id"], "outputs": {}},
        {"model": "team/a", "request_id": claims[1]["request_id"],
         "claim_id": claims[1]["claim_id"], "outputs": {}},
    ])
    assert reply.status == 200, reply
    first, second = reply.json["data"]
    assert first["error"]["code"] == "not_found", first
    assert first["error"]["param"] == "jobs[0].request_id", first
    assert second == {"request_id": claims[1]["request_id"], "status": "done"}, second


def test_max_batch_flag(start_server):
    server = start_server(max_batch=3)
    api = server.api()
    body = assert_error(submit_batch(api, jobs_of(4)), 400, "too_large", "jobs",
                        message_has=["--max-batch", "4", "3"])
    assert "split" in body["message"], body
    assert api.metrics_ok(MODEL)["total_jobs"] == 0
    assert len(submit_batch_ok(api, jobs_of(3))) == 3

    assert_error(claim_many(api, MODEL, 4), 400, "invalid_field", "max_jobs",
                 message_has="--max-batch")
    assert len(claim_many(api, MODEL, 3).json["data"]) == 3
    reply = complete_batch(api, [{"model": MODEL, "request_id": UNKNOWN_ID,
                                  "claim_id": UNKNOWN_CLAIM, "outputs": {}}] * 4)
    assert_error(reply, 400, "too_large", "jobs", message_has="--max-batch")


def test_max_batch_default_is_1000(server):
    api = server.api()
    assert len(submit_batch_ok(api, jobs_of(1000))) == 1000
    assert_error(submit_batch(api, jobs_of(1001)), 400, "too_large", "jobs",
                 message_has="1000")
    assert api.metrics_ok(MODEL)["messages_waiting"] == 1000
    assert len(claim_many(api, MODEL, 1000).json["data"]) == 1000
    assert_error(claim_many(api, MODEL, 1001), 400, "invalid_field", "max_jobs")


@pytest.mark.parametrize("value", ["0", "100001", "x", "-1", ""])
def test_bad_max_batch_flag(tmp_path, value):
    proc = subprocess.run([str(INFERQ_BIN), "serve", "--listen", "127.0.0.1:0", "--data-dir",
                           str(tmp_path / "never"), "--max-batch", value],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2, proc
    assert "--max-batch" in proc.stderr, proc.stderr
    assert f'"{value}"' in proc.stderr, proc.stderr
    assert "1 to 100000" in proc.stderr, proc.stderr


# ---------------------------------------------------------------------------
# Idempotency-Key on submit_batch


def test_idempotent_replay_returns_same_ids(start_server):
    server = start_server()
    api = server.api()
    jobs = jobs_of(4) + [{"model": "batch/second", "payload": {"x": 1}}]
    key = {"Idempotency-Key": "batch-key-1"}
    ids = submit_batch_ok(api, jobs, key)
    assert submit_batch_ok(api, jobs, key) == ids
    assert api.metrics_ok(MODEL)["messages_waiting"] == 4
    assert api.metrics_ok("batch/second")["messages_waiting"] == 1

    # The same key with another body is a conflict, and stores nothing.
    other = jobs_of(4, tag="other")
    assert_error(submit_batch(api, other, key), 409, "idempotency_conflict", "Idempotency-Key")
    assert api.metrics_ok(MODEL)["messages_waiting"] == 4
    # A single submit with the same key is independent of the batch.
    single_keyed = api.post("/v1/queue/submit", {"model": MODEL, "payload": {"s": 1}}, key)
    assert single_keyed.status == 200, single_keyed
    assert single_keyed.json["request_id"] not in ids
    # An invalid key is rejected before anything is stored.
    assert_error(submit_batch(api, jobs, {"Idempotency-Key": "has space"}), 400,
                 "invalid_field", "Idempotency-Key")

    # After a crash and a restart, the replay still returns the same ids, also after
    # some of the jobs finished.
    claimed = api.claim_ok(MODEL)
    assert api.worker_call("complete", MODEL, claimed["request_id"], claimed["claim_id"],
                           outputs={}).status == 200
    server.kill()
    server.restart()
    api = server.api()
    assert submit_batch_ok(api, jobs, key) == ids
    assert api.metrics_ok(MODEL)["total_jobs"] == 3 + 1  # 3 of the batch, 1 single submit
    assert_error(submit_batch(api, other, key), 409, "idempotency_conflict", "Idempotency-Key")


def test_idempotency_key_expires(start_server):
    server = start_server(idempotency_ttl="1s")
    api = server.api()
    key = {"Idempotency-Key": "short-lived"}
    ids = submit_batch_ok(api, jobs_of(2), key)
    time.sleep(1.1)  # the key window is 1 s; no state to poll for
    again = submit_batch_ok(api, jobs_of(2), key)
    assert set(again).isdisjoint(ids)
    assert api.metrics_ok(MODEL)["messages_waiting"] == 4


# ---------------------------------------------------------------------------
# Crash safety


def test_kill_after_ack_keeps_every_job(start_server):
    server = start_server()
    api = server.api()
    ids = []
    for b in range(3):
        ids += submit_batch_ok(api, jobs_of(200, tag=f"b{b}"))
    server.kill()
    server.restart()
    api = server.api()
    assert api.metrics_ok(MODEL)["messages_waiting"] == 600
    for n, job_id in enumerate(ids):
        status = api.status_ok(job_id, MODEL)
        assert status["status"] == "pending", status
        assert status["inputs"] == {"tag": f"b{n // 200}", "i": n % 200}, status


def test_kill_during_batches_leaves_whole_batches(start_server):
    """SIGKILL while batches stream in: every acknowledged batch is there in full, and no
    batch is there in part."""
    server = start_server()
    size = 50
    acked = []
    stop = threading.Event()

    def producer():
        api = server.api(timeout=10)
        for b in range(400):
            if stop.is_set():
                return
            try:
                reply = submit_batch(api, jobs_of(size, tag=f"b{b}"))
            except (OSError, http.client.HTTPException):
                return
            if reply.status != 200:
                return
            acked.append(b)

    thread = threading.Thread(target=producer)
    thread.start()
    wait_for(lambda: len(acked) >= 20, 30, "20 acknowledged batches")
    server.kill()
    stop.set()
    thread.join(15)
    assert not thread.is_alive()

    server.restart()
    api = server.api()
    counts = {}
    for _ in range(100):
        reply = claim_many(api, MODEL, 1000)
        if reply.status == 204:
            break
        assert reply.status == 200, reply
        for job in reply.json["data"]:
            counts[job["payload"]["tag"]] = counts.get(job["payload"]["tag"], 0) + 1
    partial = {tag: n for tag, n in counts.items() if n != size}
    assert not partial, f"batches stored in part: {partial}"
    missing = [b for b in acked if f"b{b}" not in counts]
    assert not missing, f"acknowledged batches lost: {missing}"


@pytest.mark.local_store_only(
    reason="fails the SQLite WAL writes through the LD_PRELOAD shim; "
           "test_failed_insert_stores_no_job_of_the_batch checks the postgres store")
def test_failed_commit_stores_no_job_of_the_batch(fault_server):  # noqa: F811
    server, control = fault_server()
    api = server.api()
    kept = submit_batch_ok(api, jobs_of(3, tag="kept"))
    control.set("files=inferq.db-wal", "write=enospc")
    check_store_unavailable(submit_batch(api, jobs_of(20, tag="lost")), "disk is full")
    assert api.metrics_ok(MODEL)["messages_waiting"] == 3
    control.set("off")
    assert api.metrics_ok(MODEL)["messages_waiting"] == 3

    server.kill()
    server.restart()
    api = server.api()
    reply = claim_many(api, MODEL, 100)
    assert sorted(job["request_id"] for job in reply.json["data"]) == sorted(kept)
    assert claim_many(api, MODEL, 100).status == 204


def test_failed_insert_stores_no_job_of_the_batch(request, start_server, pg_store):
    if pg_store is None:
        pytest.skip("checks the postgres store; "
                    "test_failed_commit_stores_no_job_of_the_batch checks the local one")
    cluster = request.getfixturevalue("pg_cluster")
    database = pg_store.split("///", 1)[1].split("?", 1)[0]
    server = start_server()
    api = server.api()
    kept = submit_batch_ok(api, jobs_of(3, tag="kept"))

    # A constraint that job 15 of the batch breaks makes the database reject the insert.
    cluster.psql("ALTER TABLE inferq_jobs ADD CONSTRAINT test_no_poison "
                 "CHECK (payload NOT LIKE '%poison%')", database)
    jobs = jobs_of(20, tag="lost")
    jobs[15]["payload"] = {"poison": True}
    reply = submit_batch(api, jobs)
    assert reply.status == 503, reply
    assert reply.json["code"] == "store_unavailable", reply
    assert reply.headers.get("retry-after") == "1", reply
    cluster.psql("ALTER TABLE inferq_jobs DROP CONSTRAINT test_no_poison", database)

    assert api.metrics_ok(MODEL)["messages_waiting"] == 3
    reply = claim_many(api, MODEL, 100)
    assert sorted(job["request_id"] for job in reply.json["data"]) == sorted(kept)


# ---------------------------------------------------------------------------
# Claims with max_jobs


def test_claim_max_jobs_priority_then_fifo(server):
    api = server.api()
    priorities = [0, 5, 0, 9, 5, -1, 0]
    ids = submit_batch_ok(api, [{"model": MODEL, "payload": {"i": i}, "priority": p}
                                for i, p in enumerate(priorities)])
    order = sorted(range(len(ids)), key=lambda i: (-priorities[i], i))

    reply = claim_many(api, MODEL, 4, claim_timeout=120, worker="w1")
    assert reply.status == 200, reply
    assert set(reply.json) == {"data"}, reply.json
    data = reply.json["data"]
    assert [job["request_id"] for job in data] == [ids[i] for i in order[:4]]
    claim_ids = set()
    for job in data:
        assert set(job) == CLAIM_FIELDS, job
        assert UUID4_RE.match(job["claim_id"]), job
        assert parse_time(job["lease_expires_at"]) - parse_time(job["claimed_at"]) == 120, job
        claim_ids.add(job["claim_id"])
        assert api.status_ok(job["request_id"], MODEL)["status"] == "running"
    assert len(claim_ids) == 4

    # Fewer pending than max_jobs: the rest, then 204 with no body.
    rest = claim_many(api, MODEL, 10).json["data"]
    assert [job["request_id"] for job in rest] == [ids[i] for i in order[4:]]
    empty = claim_many(api, MODEL, 10)
    assert empty.status == 204, empty
    assert empty.raw == b"", empty
    metrics = api.metrics_ok(MODEL)
    assert metrics == {"messages_waiting": 0, "messages_running": 7, "total_jobs": 7}


def test_claim_ids_fence_only_their_job(server):
    api = server.api()
    submit_batch_ok(api, jobs_of(3))
    a, b, c = claim_many(api, MODEL, 3).json["data"]
    # b's claim id does not fit a's job.
    reply = api.worker_call("complete", MODEL, a["request_id"], b["claim_id"], outputs={})
    assert_error(reply, 409, "claim_mismatch")
    assert api.status_ok(a["request_id"], MODEL)["status"] == "running"
    for job in (a, b):
        assert api.worker_call("complete", MODEL, job["request_id"], job["claim_id"],
                               outputs={"r": job["request_id"]}).status == 200
    assert api.worker_call("release", MODEL, c["request_id"], c["claim_id"]).status == 200
    assert api.status_ok(a["request_id"], MODEL)["outputs"] == {"r": a["request_id"]}
    assert api.status_ok(c["request_id"], MODEL)["status"] == "pending"


def test_leases_expire_per_job(server):
    api = server.api()
    submit_batch_ok(api, jobs_of(2))
    kept, lapsed = claim_many(api, MODEL, 2, claim_timeout=2).json["data"]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        reply = api.worker_call("heartbeat", MODEL, kept["request_id"], kept["claim_id"])
        assert reply.status == 200, reply
        if api.status_ok(lapsed["request_id"], MODEL)["status"] == "pending":
            break
        time.sleep(0.2)
    status = api.status_ok(lapsed["request_id"], MODEL)
    assert status["status"] == "pending", status
    assert status["retries"] == 1, status
    assert api.status_ok(kept["request_id"], MODEL)["status"] == "running"
    assert api.worker_call("complete", MODEL, kept["request_id"], kept["claim_id"],
                           outputs={}).status == 200


def test_long_poll_takes_the_batch(server):
    api = server.api()
    result = {}

    def waiter():
        worker = server.api(timeout=30)
        result["reply"] = claim_many(worker, MODEL, 5, wait=20)

    thread = threading.Thread(target=waiter)
    thread.start()
    wait_until_parked(api, MODEL)
    ids = submit_batch_ok(api, jobs_of(7))
    thread.join(15)
    assert not thread.is_alive()
    reply = result["reply"]
    assert reply.status == 200, reply
    assert [job["request_id"] for job in reply.json["data"]] == ids[:5]
    assert api.metrics_ok(MODEL)["messages_waiting"] == 2


def test_long_poll_wakes_on_first_job(server):
    api = server.api()
    result = {}

    def waiter():
        worker = server.api(timeout=30)
        result["reply"] = claim_many(worker, MODEL, 5, wait=20)

    thread = threading.Thread(target=waiter)
    thread.start()
    wait_until_parked(api, MODEL)
    started = time.monotonic()
    job_id = api.submit_ok(MODEL, {"only": 1})
    thread.join(15)
    assert time.monotonic() - started < 10  # woken by the submit, not by the end of the wait
    reply = result["reply"]
    assert reply.status == 200, reply
    assert [job["request_id"] for job in reply.json["data"]] == [job_id]


def test_long_poll_times_out_with_204(server):
    api = server.api()
    reply = claim_many(api, MODEL, 5, wait=0.3)
    assert reply.status == 204, reply
    assert reply.raw == b"", reply


@pytest.mark.parametrize("value", [0, -1, 1.5, "2", None, True, 1001, 2 ** 70])
def test_max_jobs_bounds(server, value):
    api = server.api()
    submit_batch_ok(api, jobs_of(2))
    body = assert_error(claim_many(api, MODEL, value), 400, "invalid_field", "max_jobs")
    assert "1 to 1000" in body["message"], body
    assert api.metrics_ok(MODEL)["messages_waiting"] == 2


def test_single_claim_shape_unchanged(server):
    api = server.api()
    submit_batch_ok(api, jobs_of(3))
    for fields in ({}, {"max_jobs": 1}):
        reply = api.claim(MODEL, claim_timeout=60, **fields)
        assert reply.status == 200, reply
        assert set(reply.json) == CLAIM_FIELDS, reply.json
    # Unknown fields are reported inside the job object for a single claim, and beside
    # "data" for a claim of several.
    single = api.claim(MODEL, claim_timeout=60, max_jobs=1, color="red").json
    assert single["warnings"] == ['unknown field "color" ignored'], single
    assert claim_many(api, MODEL, 2, color="red").status == 204
    submit_batch_ok(api, jobs_of(1))
    many = claim_many(api, MODEL, 2, color="red").json
    assert set(many) == {"data", "warnings"}, many
    assert many["warnings"] == ['unknown field "color" ignored'], many


# ---------------------------------------------------------------------------
# complete_batch


def test_complete_batch_results_per_job(server):
    api = server.api()
    submit_batch_ok(api, jobs_of(5))
    a, b, c, d, e = claim_many(api, MODEL, 5).json["data"]
    # d is already done before the batch.
    assert api.worker_call("complete", MODEL, d["request_id"], d["claim_id"],
                           outputs={"early": True}).status == 200

    def item(job, claim_id=None, **extra):
        body = {"model": MODEL, "request_id": job["request_id"],
                "claim_id": claim_id or job["claim_id"], "outputs": {"r": job["request_id"]}}
        body.update(extra)
        return body

    jobs = [
        item(a, info={"progress": 1.0}),
        item(b, claim_id=c["claim_id"]),
        {"model": MODEL, "request_id": UNKNOWN_ID, "claim_id": UNKNOWN_CLAIM, "outputs": {}},
        item(d),
        {"model": MODEL, "request_id": e["request_id"], "claim_id": e["claim_id"]},
        {"model": MODEL, "request_id": c["request_id"], "outputs": {}},
        "not an object",
        {"model": MODEL, "request_id": "not-an-id", "claim_id": c["claim_id"], "outputs": {}},
        item(a),
        item(c, extra_field=1),
    ]
    reply = complete_batch(api, jobs)
    assert reply.status == 200, reply
    data = reply.json["data"]
    assert len(data) == len(jobs)

    assert data[0] == {"request_id": a["request_id"], "status": "done"}
    assert data[1]["request_id"] == b["request_id"]
    assert data[1]["error"]["code"] == "claim_mismatch", data[1]
    assert data[1]["error"]["status"] == "running", data[1]
    assert data[1]["error"]["type"] == "conflict_error", data[1]
    assert data[2]["error"]["code"] == "not_found", data[2]
    assert data[2]["error"]["param"] == "jobs[2].request_id", data[2]
    assert data[3]["error"]["code"] == "invalid_state", data[3]
    assert data[3]["error"]["status"] == "done", data[3]
    assert data[4]["error"]["code"] == "missing_field", data[4]
    assert data[4]["error"]["param"] == "jobs[4].outputs", data[4]
    assert data[4]["request_id"] == e["request_id"], data[4]
    assert data[5]["error"]["code"] == "claim_mismatch", data[5]
    assert data[5]["error"]["param"] == "jobs[5].claim_id", data[5]
    assert set(data[6]) == {"error"}, data[6]
    assert data[6]["error"]["param"] == "jobs[6]", data[6]
    assert data[7]["error"]["code"] == "invalid_field", data[7]
    assert "request_id" not in data[7], data[7]
    # The same job twice: the first entry completed it, so the second finds it done.
    assert data[8]["error"]["code"] == "invalid_state", data[8]
    assert data[8]["error"]["status"] == "done", data[8]
    assert data[9] == {"request_id": c["request_id"], "status": "done",
                       "warnings": ['unknown field "extra_field" ignored']}, data[9]
    for result in data:
        if "error" in result:
            assert result["error"]["param"] in result["error"]["message"], result

    status_a = api.status_ok(a["request_id"], MODEL)
    assert status_a["status"] == "done", status_a
    assert status_a["outputs"] == {"r": a["request_id"]}, status_a
    assert status_a["info"] == {"progress": 1.0}
    assert api.status_ok(b["request_id"], MODEL)["status"] == "running"
    assert api.status_ok(c["request_id"], MODEL)["status"] == "done"
    assert api.status_ok(d["request_id"], MODEL)["outputs"] == {"early": True}
    assert api.status_ok(e["request_id"], MODEL)["status"] == "running"
    assert api.metrics_ok(MODEL) == {"messages_waiting": 0, "messages_running": 2,
                                     "total_jobs": 2}


def test_complete_batch_info_too_large(start_server):
    server = start_server(max_info_bytes=64)
    api = server.api()
    submit_batch_ok(api, [{"model": MODEL, "payload": {}, "info": {"a": "x" * 30}}
                          for _ in range(2)])
    first, second = claim_many(api, MODEL, 2).json["data"]
    reply = complete_batch(api, [
        {"model": MODEL, "request_id": first["request_id"], "claim_id": first["claim_id"],
         "outputs": {}, "info": {"b": "y" * 30}},
        {"model": MODEL, "request_id": second["request_id"], "claim_id": second["claim_id"],
         "outputs": {}, "info": {"a": None}},
    ])
    assert reply.status == 200, reply
    data = reply.json["data"]
    assert data[0]["error"]["code"] == "too_large", data[0]
    assert data[0]["error"]["param"] == "jobs[0].info", data[0]
    assert "status" not in data[0]["error"], data[0]
    assert data[1] == {"request_id": second["request_id"], "status": "done"}, data[1]
    assert api.status_ok(first["request_id"], MODEL)["status"] == "running"
    assert api.status_ok(second["request_id"], MODEL)["info"] == {}


def test_complete_batch_survives_kill(start_server):
    server = start_server()
    api = server.api()
    ids = submit_batch_ok(api, jobs_of(100))
    claims = claim_many(api, MODEL, 100).json["data"]
    reply = complete_batch(api, [{"model": MODEL, "request_id": job["request_id"],
                                  "claim_id": job["claim_id"], "outputs": {"n": n}}
                                 for n, job in enumerate(claims)])
    assert all(result["status"] == "done" for result in reply.json["data"]), reply
    server.kill()
    server.restart()
    api = server.api()
    for n, job_id in enumerate(ids):
        status = api.status_ok(job_id, MODEL)
        assert status["status"] == "done", status
        assert status["outputs"] == {"n": n}, status
    assert api.metrics_ok(MODEL)["total_jobs"] == 0
