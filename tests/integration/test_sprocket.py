"""Sprocket worker routes: GET /internal/v1/queue/retrieve and POST /internal/v1/videos/status.

Sprocket (Together's Python SDK for queue workers) cannot be installed here, so these tests
replay the requests a Sprocket worker sends. First comes a long-poll retrieve with hostname,
claim_timeout, x-worker-version and x-idle-time. Then come status updates that carry no claim
id: running with progress in info about once a second, then done or failed. Sprocket itself
only speaks HTTPS, but the server has no TLS yet, so the replay runs over plain HTTP on
127.0.0.1.
"""

import http.client
import json
import subprocess
import threading
import time
import urllib.parse

from support import INFERQ_BIN, UNKNOWN_ID, assert_error, parse_time, raw_member

MODEL = "test/sprocket"
RETRIEVE = "/internal/v1/queue/retrieve"
STATUS = "/internal/v1/videos/status"
WORKER_HEADERS = {"x-worker-version": "sprocket 0.9", "x-idle-time": "12.5"}


def retrieve(api, model=MODEL, headers=None, **params):
    """Send one retrieve; params become the query string (model first)."""
    query = urllib.parse.urlencode({"model": model, **params})
    return api.get(f"{RETRIEVE}?{query}", headers=WORKER_HEADERS if headers is None else headers)


def retrieve_job(api, **params):
    """Retrieve and return the job object, failing when none came."""
    params.setdefault("timeout", "0s")
    reply = retrieve(api, **params)
    assert reply.status == 200, reply
    assert reply.json["data"] is not None, f"retrieve returned no job: {reply!r}"
    return reply.json["data"]


def update(api, request_id, status, model=MODEL, **fields):
    return api.post(STATUS, {"model": model, "request_id": request_id, "status": status, **fields})


def update_ok(api, request_id, status, **fields):
    reply = update(api, request_id, status, **fields)
    assert reply.status == 200, f"{status} update failed: {reply!r}"
    assert reply.json == {"status": status, "request_id": request_id, "model": MODEL}, reply
    return reply


class RetrieveThread(threading.Thread):
    """A long-poll retrieve on its own connection; records the reply and when it came."""

    def __init__(self, server, **params):
        super().__init__(daemon=True)
        self.api = server.api()
        self.params = params
        self.reply = None
        self.finished_at = None

    def run(self):
        self.reply = retrieve(self.api, **self.params)
        self.finished_at = time.monotonic()


def test_retrieve_long_poll_hand_off(server, api):
    waiter = RetrieveThread(server, timeout="5s", hostname="gpu-1", claim_timeout=60)
    waiter.start()
    waiter.join(0.3)
    assert waiter.is_alive(), f"retrieve with timeout=5s returned early: {waiter.reply!r}"

    request_id = api.submit_ok(MODEL, {"prompt": "a cat"}, info={"user": "u1"}, priority=3)
    acked_at = time.monotonic()
    waiter.join(5)
    assert not waiter.is_alive(), "waiting retrieve did not return"
    assert waiter.reply.status == 200, waiter.reply
    assert waiter.finished_at - acked_at < 1.0, "hand-off took over 1 s after the submit ack"

    assert set(waiter.reply.json) == {"data"}, waiter.reply
    job = waiter.reply.json["data"]
    assert set(job) == {"request_id", "model", "payload", "info", "priority", "retries",
                        "claim_id", "claimed_at", "lease_expires_at"}, job
    assert job["request_id"] == request_id
    assert job["model"] == MODEL
    assert job["payload"] == {"prompt": "a cat"}
    assert job["info"] == {"user": "u1"}
    assert job["priority"] == 3
    assert job["retries"] == 0
    assert parse_time(job["lease_expires_at"]) - parse_time(job["claimed_at"]) in (59, 60, 61)
    assert api.status_ok(request_id, MODEL)["status"] == "running"


def test_retrieve_payload_bytes_unchanged(api):
    raw_payload = b'{"big": 123456789012345678901234567890, "f": 1.50e+3}'
    body = b'{"model": "' + MODEL.encode() + b'", "payload": ' + raw_payload + b"}"
    reply = api.post("/v1/queue/submit", body)
    assert reply.status == 200, reply
    reply = retrieve(api)
    assert reply.status == 200, reply
    assert raw_member(raw_member(reply.raw, "data"), "payload") == raw_payload


def test_worker_sequence_done(server, api):
    """The whole Sprocket sequence: retrieve, running updates with progress, done."""
    worker = server.api()
    request_id = api.submit_ok(MODEL, {"prompt": "a dog"}, info={"user": "u2"})
    job = retrieve_job(worker, timeout="5s", hostname="gpu-2", claim_timeout=30)
    assert job["request_id"] == request_id

    last_lease = parse_time(job["lease_expires_at"])
    for step in range(1, 4):
        time.sleep(1.0)  # Sprocket's pace between progress updates, not a wait for state
        update_ok(worker, request_id, "running", info={"progress": step / 4})
        status = api.status_ok(request_id, MODEL)
        assert status["status"] == "running"
        assert status["info"] == {"user": "u2", "progress": step / 4}
        lease = parse_time(status["lease_expires_at"])
        assert lease >= last_lease, "a running update did not extend the lease"
        last_lease = lease

    outputs = {"video_url": "file:///out/1.mp4", "frames": 120}
    update_ok(worker, request_id, "done", payload=outputs, info={"progress": 1})
    status = api.status_ok(request_id, MODEL)
    assert status["status"] == "done"
    assert status["outputs"] == outputs
    assert status["info"] == {"user": "u2", "progress": 1}
    assert "done_at" in status
    assert "error" not in status


def test_done_outputs_bytes_unchanged(api):
    request_id = api.submit_ok(MODEL, {})
    retrieve_job(api)
    raw_outputs = b'{"n": 98765432109876543210987654321, "x": 1e400}'
    body = (b'{"model": "' + MODEL.encode() + b'", "request_id": "' + request_id.encode() +
            b'", "status": "done", "payload": ' + raw_outputs + b"}")
    assert api.post(STATUS, body).status == 200
    reply = api.status(request_id, MODEL)
    assert raw_member(reply.raw, "outputs") == raw_outputs


def test_worker_sequence_failed(api):
    request_id = api.submit_ok(MODEL, {}, info={"user": "u3"})
    retrieve_job(api, hostname="gpu-3")
    update_ok(api, request_id, "running", info={"progress": 0.5})
    update_ok(api, request_id, "failed", payload={}, info={"error": "CUDA out of memory"})
    status = api.status_ok(request_id, MODEL)
    assert status["status"] == "failed"
    assert status["error"] == "CUDA out of memory"
    assert status["info"] == {"user": "u3", "progress": 0.5, "error": "CUDA out of memory"}
    assert "outputs" not in status
    assert status["retries"] == 0


def test_failed_without_error_text(api):
    request_id = api.submit_ok(MODEL, {})
    retrieve_job(api)
    update_ok(api, request_id, "failed")
    status = api.status_ok(request_id, MODEL)
    assert status["status"] == "failed"
    assert "info.error" in status["error"], status["error"]


def test_failed_error_not_string(api):
    request_id = api.submit_ok(MODEL, {})
    retrieve_job(api)
    update_ok(api, request_id, "failed", info={"error": {"type": "oom", "gpu": 0}})
    status = api.status_ok(request_id, MODEL)
    assert json.loads(status["error"]) == {"type": "oom", "gpu": 0}
    assert status["info"]["error"] == {"type": "oom", "gpu": 0}


def test_retrieve_without_claim_timeout_default_hold(api):
    api.submit_ok(MODEL, {})
    job = retrieve_job(api)
    hold_seconds = parse_time(job["lease_expires_at"]) - parse_time(job["claimed_at"])
    assert 86399 <= hold_seconds <= 86401, f"default hold is {hold_seconds} s, expected 24 h"


def test_max_claim_hold_expires_job(start_server):
    api = start_server(max_claim_hold="2s").api()
    request_id = api.submit_ok(MODEL, {})
    job = retrieve_job(api, hostname="gpu-4")
    claimed = time.monotonic()
    hold_seconds = parse_time(job["lease_expires_at"]) - parse_time(job["claimed_at"])
    assert 1 <= hold_seconds <= 3, f"hold is {hold_seconds} s with --max-claim-hold 2s"

    status = api.wait_status(request_id, MODEL, "pending", timeout=8.0)
    assert time.monotonic() - claimed >= 1.5, "the job expired before --max-claim-hold"
    assert status["retries"] == 1
    entry = status["info"]["retry_history"][0]
    assert entry["worker"] == "gpu-4 (sprocket 0.9)", entry
    assert entry["attempt"] == 1

    again = retrieve_job(api, hostname="gpu-5")
    assert again["request_id"] == request_id
    assert again["retries"] == 1
    assert again["claim_id"] != job["claim_id"]


def test_max_claim_hold_zero_means_no_lease(start_server):
    api = start_server(max_claim_hold=0).api()
    request_id = api.submit_ok(MODEL, {})
    job = retrieve_job(api)
    assert "lease_expires_at" not in job, job
    update_ok(api, request_id, "running", info={"progress": 0.1})
    status = api.status_ok(request_id, MODEL)
    assert status["status"] == "running"
    assert "lease_expires_at" not in status


def test_claim_timeout_sets_lease(api):
    api.submit_ok(MODEL, {})
    job = retrieve_job(api, claim_timeout=7)
    hold_seconds = parse_time(job["lease_expires_at"]) - parse_time(job["claimed_at"])
    assert 6 <= hold_seconds <= 8, hold_seconds


def test_late_update_after_expiry(api):
    request_id = api.submit_ok(MODEL, {})
    retrieve_job(api, claim_timeout=1)
    api.wait_status(request_id, MODEL, "pending", timeout=6.0)
    update_ok(api, request_id, "done", payload={"late": True})
    status = api.status_ok(request_id, MODEL)
    assert status["status"] == "done"
    assert status["outputs"] == {"late": True}
    assert status["retries"] == 1


def test_late_running_update_takes_job_back(api):
    request_id = api.submit_ok(MODEL, {})
    retrieve_job(api, claim_timeout=1)
    api.wait_status(request_id, MODEL, "pending", timeout=6.0)
    update_ok(api, request_id, "running", info={"progress": 0.9})
    status = api.status_ok(request_id, MODEL)
    assert status["status"] == "running"
    assert status["retries"] == 1
    assert retrieve(api).json == {"data": None}


def test_stale_update_after_terminal(api):
    request_id = api.submit_ok(MODEL, {})
    retrieve_job(api)
    update_ok(api, request_id, "done", payload={"ok": 1})
    for status, fields in (("running", {}), ("done", {"payload": {"ok": 2}}), ("failed", {})):
        reply = update(api, request_id, status, **fields)
        body = assert_error(reply, 409, "invalid_state", message_has="done")
        assert body["status"] == "done", body
    assert api.status_ok(request_id, MODEL)["outputs"] == {"ok": 1}


def test_update_of_canceled_job(api):
    request_id = api.submit_ok(MODEL, {})
    assert api.post("/v1/queue/cancel", {"model": MODEL, "request_id": request_id}).status == 200
    body = assert_error(update(api, request_id, "running"), 409, "invalid_state")
    assert body["status"] == "canceled"


def test_update_of_job_never_retrieved(api):
    request_id = api.submit_ok(MODEL, {})
    body = assert_error(update(api, request_id, "done", payload={}), 409, "invalid_state",
                        message_has="retrieve")
    assert body["status"] == "pending"
    assert api.status_ok(request_id, MODEL)["status"] == "pending"


def test_update_of_released_job(api):
    request_id = api.submit_ok(MODEL, {})
    job = retrieve_job(api)
    assert api.worker_call("release", MODEL, request_id, job["claim_id"]).status == 200
    body = assert_error(update(api, request_id, "running"), 409, "invalid_state")
    assert body["status"] == "pending"


def test_update_unknown_job(api):
    body = assert_error(update(api, UNKNOWN_ID, "running"), 404, "not_found")
    assert body["param"] == "request_id", body


def test_retrieve_null_after_timeout(api):
    started = time.monotonic()
    reply = retrieve(api, timeout="500ms")
    elapsed = time.monotonic() - started
    assert reply.status == 200, reply
    assert reply.json == {"data": None}
    assert elapsed >= 0.45, f"retrieve with timeout=500ms returned after {elapsed:.2f} s"
    assert elapsed < 10


def test_retrieve_null_at_once(api):
    for params in ({"timeout": "0s"}, {}):
        started = time.monotonic()
        reply = retrieve(api, **params)
        assert reply.status == 200, reply
        assert reply.json == {"data": None}
        assert time.monotonic() - started < 0.5, params


def test_retrieve_ignores_other_model(server, api):
    waiter = RetrieveThread(server, timeout="1s")
    waiter.start()
    waiter.join(0.2)
    other = api.submit_ok("test/other", {})
    waiter.join(10)
    assert not waiter.is_alive()
    assert waiter.reply.json == {"data": None}, waiter.reply
    assert api.status_ok(other, "test/other")["status"] == "pending"


def test_retrieve_bad_timeout(api):
    for value in ("abc", "61s", "2m", "-1s", "", "5x"):
        reply = retrieve(api, timeout=value)
        assert_error(reply, 400, "invalid_field", "timeout")


def test_retrieve_bad_claim_timeout(api):
    for value in ("0", "86401", "1.5", "abc", "", "-5", "90s", "99999999999999999999"):
        reply = retrieve(api, claim_timeout=value)
        assert_error(reply, 400, "invalid_field", "claim_timeout")
    api.submit_ok(MODEL, {})
    job = retrieve_job(api, claim_timeout="86400")
    hold_seconds = parse_time(job["lease_expires_at"]) - parse_time(job["claimed_at"])
    assert 86399 <= hold_seconds <= 86401


def test_retrieve_model_missing(api):
    reply = api.get(f"{RETRIEVE}?timeout=1s")
    assert_error(reply, 400, "missing_field", "model")


def test_retrieve_hostname_too_long(api):
    assert_error(retrieve(api, hostname="h" * 129), 400, "invalid_field", "hostname")
    headers = {"x-worker-version": "v" * 65}
    assert_error(retrieve(api, headers=headers), 400, "invalid_field", "x-worker-version")


def test_worker_name_without_version(start_server):
    api = start_server(max_claim_hold="1s").api()
    request_id = api.submit_ok(MODEL, {})
    retrieve_job(api, hostname="plain-host", headers={})
    status = api.wait_status(request_id, MODEL, "pending", timeout=6.0)
    assert status["info"]["retry_history"][0]["worker"] == "plain-host"


def test_update_bad_bodies(api):
    request_id = api.submit_ok(MODEL, {})
    retrieve_job(api)
    base = {"model": MODEL, "request_id": request_id}
    cases = [
        ({**base, "status": "finished"}, "status"),
        ({**base, "status": 1}, "status"),
        (base, "status"),
        ({**base, "status": "done"}, "payload"),
        ({**base, "status": "done", "payload": [1]}, "payload"),
        ({**base, "status": "running", "info": "x"}, "info"),
        ({**base, "status": "running", "info": {"retry_history": []}}, "info"),
        ({"model": MODEL, "status": "running"}, "request_id"),
        ({"request_id": request_id, "status": "running"}, "model"),
    ]
    for body, param in cases:
        reply = api.post(STATUS, body)
        assert reply.status == 400, f"{body} -> {reply!r}"
        assert reply.json["param"] == param, f"{body} -> {reply.json}"
    assert api.status_ok(request_id, MODEL)["status"] == "running"


def test_update_ignores_payload_when_running(api):
    request_id = api.submit_ok(MODEL, {})
    retrieve_job(api)
    update_ok(api, request_id, "running", payload=None)
    update_ok(api, request_id, "running", payload={"partial": 1})
    assert "outputs" not in api.status_ok(request_id, MODEL)


def test_update_warns_unknown_field(api):
    request_id = api.submit_ok(MODEL, {})
    retrieve_job(api)
    reply = update(api, request_id, "running", extra=1)
    assert reply.status == 200, reply
    assert reply.json["warnings"] == ['unknown field "extra" ignored']


def test_retrieve_and_update_methods(api):
    reply = api.post(RETRIEVE, {})
    assert reply.status == 405, reply
    assert reply.headers.get("allow") == "GET"
    reply = api.get(STATUS)
    assert reply.status == 405, reply
    assert reply.headers.get("allow") == "POST"


def call(server, method, path, key, body=None):
    """One request on a new connection with key."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        headers = {"Authorization": f"Bearer {key}"}
        data = None if body is None else json.dumps(body).encode()
        conn.request(method, path, body=data, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def test_auth_roles_and_coverage(server, api):
    keys = {}
    for name, role in (("w", "worker"), ("c", "client")):
        reply = api.post("/v1/admin/keys", {"name": name, "role": role, "models": ["a/*"]})
        assert reply.status == 200, reply
        keys[role] = reply.json["key"]

    mine = api.submit_ok("a/m", {})
    theirs = api.submit_ok("b/m", {})

    status, _ = call(server, "GET", f"{RETRIEVE}?model=b/m", keys["worker"])
    assert status == 404
    status, raw = call(server, "GET", f"{RETRIEVE}?model=a/m", keys["worker"])
    assert status == 200
    assert json.loads(raw)["data"]["request_id"] == mine

    body = {"model": "a/m", "request_id": mine, "status": "done", "payload": {}}
    assert call(server, "POST", STATUS, keys["client"], body)[0] == 403
    assert call(server, "GET", f"{RETRIEVE}?model=a/m", keys["client"])[0] == 403
    assert call(server, "POST", STATUS, keys["worker"], body)[0] == 200

    retrieve_job(api, model="b/m")
    body = {"model": "b/m", "request_id": theirs, "status": "running"}
    status, raw = call(server, "POST", STATUS, keys["worker"], body)
    assert status == 404, raw
    assert api.status_ok(theirs, "b/m")["status"] == "running"


def test_waiting_retrieve_answered_at_stop(start_server):
    server = start_server()
    result = {}

    def wait():
        status, raw = call(server, "GET", f"{RETRIEVE}?model={MODEL}&timeout=30s", server.key)
        result["reply"] = (status, raw)

    waiter = threading.Thread(target=wait, daemon=True)
    waiter.start()
    waiter.join(0.3)
    assert waiter.is_alive(), f"retrieve with timeout=30s returned early: {result}"
    assert server.stop() == 0
    waiter.join(10)
    assert result.get("reply") == (200, b'{"data":null}'), result


def test_max_claim_hold_flag_rejected(tmp_path):
    for value in ("1.5s", "500ms", "366d", "-1s", "abc"):
        proc = subprocess.run([str(INFERQ_BIN), "serve", "--listen", "127.0.0.1:0",
                               "--data-dir", str(tmp_path / "data"), "--max-claim-hold", value],
                              stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=10)
        assert proc.returncode != 0, f"--max-claim-hold {value} was accepted"
        assert "--max-claim-hold" in proc.stderr, proc.stderr
        assert "whole seconds" in proc.stderr, proc.stderr
