"""Lease expiry, retries, retry_history, fencing by claim_id and the late-completion rule.

Leases are 1 s long so each expiry takes about a second; the tests poll the status with a
deadline instead of sleeping.
"""

import re
import subprocess
import time

import pytest

from support import INFERQ_BIN, assert_error, parse_time

MODEL = "test/leases"
EXPIRY_TIMEOUT = 6.0


def claim_short(api, worker, claim_timeout=1):
    return api.claim_ok(MODEL, claim_timeout=claim_timeout, worker=worker)


def wait_expired(api, request_id, state="pending"):
    return api.wait_status(request_id, MODEL, state, timeout=EXPIRY_TIMEOUT)


def check_history_entry(entry, attempt, job):
    assert set(entry) == {"attempt", "worker", "claimed_at", "expired_at"}, entry
    assert entry["attempt"] == attempt
    assert entry["worker"] == job["worker_name"]
    assert entry["claimed_at"] == job["claimed_at"]
    expired_at = parse_time(entry["expired_at"])
    assert expired_at >= parse_time(job["claimed_at"]) + 1, entry
    assert expired_at <= parse_time(job["lease_expires_at"]) + 3, entry


def test_expiry_retries_then_fails(server, api):
    request_id = api.submit_ok(MODEL, {"p": 1}, info={"owner": "alice"})
    claims = []
    for attempt in range(1, 5):
        job = claim_short(api, f"worker-{attempt}")
        job["worker_name"] = f"worker-{attempt}"
        assert job["request_id"] == request_id
        assert job["retries"] == attempt - 1
        claims.append(job)
        body = wait_expired(api, request_id, "pending" if attempt < 4 else "failed")

        history = body["info"]["retry_history"]
        assert len(history) == attempt, history
        for number, (entry, claim) in enumerate(zip(history, claims), start=1):
            check_history_entry(entry, number, claim)
        assert body["info"]["owner"] == "alice"
        assert body["retries"] == min(attempt, 3)
        assert "lease_expires_at" not in body

    assert body["status"] == "failed"
    assert body["retries"] == 3
    assert re.search(r"claim|lease", body["error"], re.I), body["error"]
    assert re.search(r"timed out|timeout|expired", body["error"], re.I), body["error"]
    assert "done_at" in body
    assert "outputs" not in body
    assert api.claim(MODEL).status == 204
    assert api.metrics_ok(MODEL)["total_jobs"] == 0


def test_expiry_without_retries(start_server):
    api = start_server(max_retries=0).api()
    request_id = api.submit_ok(MODEL, {})
    job = claim_short(api, "only")
    job["worker_name"] = "only"
    body = wait_expired(api, request_id, "failed")
    assert body["retries"] == 0
    assert len(body["info"]["retry_history"]) == 1
    check_history_entry(body["info"]["retry_history"][0], 1, job)
    assert re.search(r"timed out|timeout|expired", body["error"], re.I), body["error"]
    assert api.claim(MODEL).status == 204


def test_expired_job_keeps_place(server, api):
    first = api.submit_ok(MODEL, {"n": 1})
    second = api.submit_ok(MODEL, {"n": 2})
    job = claim_short(api, "a")
    assert job["request_id"] == first
    wait_expired(api, first)
    assert api.claim_ok(MODEL)["request_id"] == first
    assert api.claim_ok(MODEL)["request_id"] == second


def test_fencing_after_reclaim(server, api):
    request_id = api.submit_ok(MODEL, {}, info={"v": 1})
    job_a = claim_short(api, "a")
    wait_expired(api, request_id)
    job_b = api.claim_ok(MODEL, claim_timeout=60, worker="b")
    assert job_b["request_id"] == request_id
    assert job_b["retries"] == 1
    assert job_b["claim_id"] != job_a["claim_id"]
    before = api.status_ok(request_id, MODEL)

    for route, extra in [("heartbeat", {}), ("complete", {"outputs": {"from": "a"}}),
                         ("fail", {"error": "from a"}), ("release", {})]:
        reply = api.worker_call(route, MODEL, request_id, job_a["claim_id"],
                                info={"v": 2}, **extra)
        body = assert_error(reply, 409, "claim_mismatch")
        assert body["status"] == "running"
        assert api.status_ok(request_id, MODEL) == before, f"stale {route} changed the job"

    reply = api.worker_call("heartbeat", MODEL, request_id, job_b["claim_id"])
    assert reply.status == 200, reply
    reply = api.worker_call("complete", MODEL, request_id, job_b["claim_id"],
                            outputs={"from": "b"})
    assert reply.status == 200, reply
    body = api.status_ok(request_id, MODEL)
    assert body["status"] == "done"
    assert body["outputs"] == {"from": "b"}
    assert body["info"]["v"] == 1

    reply = api.worker_call("complete", MODEL, request_id, job_a["claim_id"], outputs={})
    assert reply.status == 409, reply
    assert reply.json["status"] == "done"
    assert reply.json["code"] in ("claim_mismatch", "invalid_state")


def test_late_complete(server, api):
    request_id = api.submit_ok(MODEL, {})
    job = claim_short(api, "slow")
    body = wait_expired(api, request_id)
    assert body["retries"] == 1
    reply = api.worker_call("complete", MODEL, request_id, job["claim_id"],
                            outputs={"late": True})
    assert reply.status == 200, reply
    assert reply.json == {"status": "done", "request_id": request_id, "model": MODEL}
    body = api.status_ok(request_id, MODEL)
    assert body["status"] == "done"
    assert body["outputs"] == {"late": True}
    assert body["retries"] == 1
    assert len(body["info"]["retry_history"]) == 1
    assert api.claim(MODEL).status == 204
    assert api.metrics_ok(MODEL)["total_jobs"] == 0


def test_late_fail(server, api):
    request_id = api.submit_ok(MODEL, {})
    job = claim_short(api, "slow")
    wait_expired(api, request_id)
    reply = api.worker_call("fail", MODEL, request_id, job["claim_id"], error="gave up")
    assert reply.status == 200, reply
    body = api.status_ok(request_id, MODEL)
    assert body["status"] == "failed"
    assert body["error"] == "gave up"
    assert body["retries"] == 1


def test_late_heartbeat_takes_back(server, api):
    request_id = api.submit_ok(MODEL, {})
    job = claim_short(api, "slow", claim_timeout=1)
    expired = wait_expired(api, request_id)
    history = expired["info"]["retry_history"]

    reply = api.worker_call("heartbeat", MODEL, request_id, job["claim_id"])
    assert reply.status == 200, reply
    assert reply.json["status"] == "running"
    assert parse_time(reply.json["lease_expires_at"]) >= int(time.time())
    body = api.status_ok(request_id, MODEL)
    assert body["status"] == "running"
    assert body["retries"] == 1
    assert body["info"]["retry_history"] == history
    assert body["lease_expires_at"] == reply.json["lease_expires_at"]
    assert api.claim(MODEL).status == 204, "a job taken back was delivered again"

    reply = api.worker_call("complete", MODEL, request_id, job["claim_id"], outputs={"v": 1})
    assert reply.status == 200, reply
    assert api.status_ok(request_id, MODEL)["retries"] == 1


def test_late_claim_lost_to_new_claim(server, api):
    request_id = api.submit_ok(MODEL, {})
    job_a = claim_short(api, "a")
    wait_expired(api, request_id)
    job_b = claim_short(api, "b")
    body = wait_expired(api, request_id)
    assert body["retries"] == 2

    # B is now the last claimant, so A's late calls are fenced off.
    for route, extra in [("heartbeat", {}), ("complete", {"outputs": {}}),
                         ("fail", {"error": "e"})]:
        reply = api.worker_call(route, MODEL, request_id, job_a["claim_id"], **extra)
        body = assert_error(reply, 409, "claim_mismatch")
        assert body["status"] == "pending"
    after = api.status_ok(request_id, MODEL)
    assert after["status"] == "pending"
    assert after["retries"] == 2

    reply = api.worker_call("complete", MODEL, request_id, job_b["claim_id"], outputs={"b": 1})
    assert reply.status == 200, reply


def test_info_survives_retries(server, api):
    request_id = api.submit_ok(MODEL, {}, info={"base": 1})
    job = claim_short(api, "a")
    reply = api.worker_call("heartbeat", MODEL, request_id, job["claim_id"],
                            info={"progress": 0.5})
    assert reply.status == 200, reply
    body = wait_expired(api, request_id)
    assert body["info"]["base"] == 1
    assert body["info"]["progress"] == 0.5
    assert len(body["info"]["retry_history"]) == 1

    job = api.claim_ok(MODEL, worker="b")
    assert job["info"]["progress"] == 0.5
    assert len(job["info"]["retry_history"]) == 1
    reply = api.worker_call("heartbeat", MODEL, request_id, job["claim_id"],
                            info={"progress": 0.9})
    assert reply.status == 200, reply
    body = api.status_ok(request_id, MODEL)
    assert body["info"]["progress"] == 0.9
    assert len(body["info"]["retry_history"]) == 1


def test_patch_cannot_touch_retry_history(server, api):
    request_id = api.submit_ok(MODEL, {})
    claim_short(api, "a")
    wait_expired(api, request_id)
    job = api.claim_ok(MODEL)
    history = job["info"]["retry_history"]
    reply = api.worker_call("heartbeat", MODEL, request_id, job["claim_id"],
                            info={"retry_history": [{"attempt": 99}]})
    assert_error(reply, 400, "invalid_field")
    assert api.status_ok(request_id, MODEL)["info"]["retry_history"] == history


def test_ended_lease_never_expires(server, api):
    done_id = api.submit_ok(MODEL, {})
    released_id = api.submit_ok(MODEL, {})
    done = claim_short(api, "a")
    released = claim_short(api, "b")
    reply = api.worker_call("complete", MODEL, done_id, done["claim_id"], outputs={})
    assert reply.status == 200, reply
    reply = api.worker_call("release", MODEL, released_id, released["claim_id"])
    assert reply.status == 200, reply

    # The old leases' deadlines pass; neither job may gain a retry or a history entry.
    deadline = parse_time(released["lease_expires_at"]) + 2
    while time.time() < deadline:
        for request_id in (done_id, released_id):
            body = api.status_ok(request_id, MODEL)
            assert body["retries"] == 0, body
            assert "retry_history" not in body.get("info", {}), body
        time.sleep(0.2)
    assert api.status_ok(done_id, MODEL)["status"] == "done"
    assert api.status_ok(released_id, MODEL)["status"] == "pending"


def test_late_complete_after_cancel(server, api):
    request_id = api.submit_ok(MODEL, {})
    job = claim_short(api, "slow")
    wait_expired(api, request_id)
    reply = api.post("/v1/queue/cancel", {"model": MODEL, "request_id": request_id})
    assert reply.status == 200, reply

    reply = api.worker_call("complete", MODEL, request_id, job["claim_id"], outputs={})
    body = assert_error(reply, 409, "invalid_state")
    assert body["status"] == "canceled"
    reply = api.worker_call("heartbeat", MODEL, request_id, job["claim_id"])
    body = assert_error(reply, 409, "invalid_state")
    assert body["status"] == "canceled"
    assert api.status_ok(request_id, MODEL)["status"] == "canceled"


def test_late_complete_after_final_failure(start_server):
    api = start_server(max_retries=0).api()
    request_id = api.submit_ok(MODEL, {})
    job = claim_short(api, "slow")
    before = wait_expired(api, request_id, "failed")
    for route, extra in [("complete", {"outputs": {}}), ("heartbeat", {}),
                         ("fail", {"error": "late"})]:
        reply = api.worker_call(route, MODEL, request_id, job["claim_id"], **extra)
        body = assert_error(reply, 409, "invalid_state")
        assert body["status"] == "failed"
    assert api.status_ok(request_id, MODEL) == before


def test_late_release_rejected(server, api):
    request_id = api.submit_ok(MODEL, {})
    job = claim_short(api, "slow")
    wait_expired(api, request_id)
    reply = api.worker_call("release", MODEL, request_id, job["claim_id"])
    assert reply.status == 409, reply
    assert reply.json["status"] == "pending"
    body = api.status_ok(request_id, MODEL)
    assert body["status"] == "pending"
    assert body["retries"] == 1


def test_history_without_worker(server, api):
    request_id = api.submit_ok(MODEL, {})
    job = api.claim_ok(MODEL, claim_timeout=1)
    body = wait_expired(api, request_id)
    entry = body["info"]["retry_history"][0]
    assert set(entry) == {"attempt", "claimed_at", "expired_at"}, entry
    assert entry["attempt"] == 1
    assert entry["claimed_at"] == job["claimed_at"]


def test_history_added_past_info_limit(start_server):
    api = start_server(max_info_bytes=100).api()
    info = {"k": "x" * 80}
    request_id = api.submit_ok(MODEL, {}, info=info)
    claim_short(api, "a")
    body = wait_expired(api, request_id)
    assert body["info"]["k"] == info["k"]
    assert len(body["info"]["retry_history"]) == 1
    assert body["retries"] == 1


def test_claim_timeout_flag_takes_a_duration(start_server):
    api = start_server(claim_timeout="2m").api()
    api.submit_ok(MODEL, {})
    before = time.time()
    reply = api.post("/v1/queue/claim", {"model": MODEL})
    assert reply.status == 200, reply
    lease = parse_time(reply.json["lease_expires_at"]) - before
    assert 115 <= lease <= 125, reply.json


@pytest.mark.parametrize("value", ["0", "1.5s", "25h", "5x", "-1"])
def test_bad_claim_timeout_flag(tmp_path, value):
    proc = subprocess.run([str(INFERQ_BIN), "serve", "--listen", "127.0.0.1:0", "--data-dir",
                           str(tmp_path / "never"), "--claim-timeout", value],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2, proc
    assert "--claim-timeout" in proc.stderr, proc.stderr
    assert value in proc.stderr, proc.stderr
    assert "5m" in proc.stderr, proc.stderr
