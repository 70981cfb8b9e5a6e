"""Worker routes without lease expiry: long-poll, heartbeat, info merge patch, complete, fail,
release and the conflicts of terminal jobs."""

import threading
import time

import pytest

from support import (UNKNOWN_CLAIM, UNKNOWN_ID, assert_error, compact, parse_time, raw_member,
                     wait_for)

MODEL = "test/worker"


class ClaimThread(threading.Thread):
    """A claim with wait, run on its own connection; records the reply and when it came."""

    def __init__(self, server, model, wait):
        super().__init__(daemon=True)
        self.api = server.api()
        self.model = model
        self.wait = wait
        self.reply = None
        self.finished_at = None

    def run(self):
        self.reply = self.api.claim(self.model, wait=self.wait, claim_timeout=60)
        self.finished_at = time.monotonic()


def test_long_poll_hand_off(server, api):
    waiter = ClaimThread(server, MODEL, 5)
    started = time.monotonic()
    waiter.start()
    # The claim must still be waiting: no job exists yet.
    waiter.join(0.3)
    assert waiter.is_alive(), f"claim with wait=5 returned early: {waiter.reply!r}"

    request_id = api.submit_ok(MODEL, {"hand": "off"})
    acked_at = time.monotonic()
    waiter.join(5)
    assert not waiter.is_alive(), "waiting claim did not return"
    assert waiter.reply.status == 200, waiter.reply
    assert waiter.reply.json["request_id"] == request_id
    assert waiter.reply.json["payload"] == {"hand": "off"}
    assert waiter.finished_at - acked_at < 1.0, "hand-off took over 1 s after the submit ack"
    assert waiter.finished_at - started < 4.0
    assert api.status_ok(request_id, MODEL)["status"] == "running"


def test_long_poll_oldest_waiter_first(server, api):
    first = ClaimThread(server, MODEL, 10)
    first.start()
    first.join(0.3)
    second = ClaimThread(server, MODEL, 10)
    second.start()
    second.join(0.3)
    assert first.is_alive()
    assert second.is_alive()

    job_one = api.submit_ok(MODEL, {"n": 1})
    first.join(5)
    assert not first.is_alive(), "oldest waiter did not get the first job"
    assert first.reply.json["request_id"] == job_one
    assert second.is_alive(), f"second waiter returned without a job: {second.reply!r}"

    job_two = api.submit_ok(MODEL, {"n": 2})
    second.join(5)
    assert not second.is_alive()
    assert second.reply.json["request_id"] == job_two


def test_long_poll_ignores_other_model(server, api):
    waiter = ClaimThread(server, MODEL, 1)
    waiter.start()
    waiter.join(0.2)
    other_id = api.submit_ok("test/other", {})
    waiter.join(10)
    assert waiter.reply.status == 204, waiter.reply
    assert api.status_ok(other_id, "test/other")["status"] == "pending"


def test_claim_wait_times_out(api):
    started = time.monotonic()
    reply = api.claim(MODEL, wait=1)
    elapsed = time.monotonic() - started
    assert reply.status == 204, reply
    assert reply.raw == b""
    assert elapsed >= 0.9, f"claim with wait=1 returned after {elapsed:.2f} s"
    assert elapsed < 10


def test_claim_fractional_wait(api):
    started = time.monotonic()
    reply = api.claim(MODEL, wait=0.5)
    elapsed = time.monotonic() - started
    assert reply.status == 204, reply
    assert elapsed >= 0.45, f"claim with wait=0.5 returned after {elapsed:.2f} s"


def test_claim_wait_zero_immediate(api):
    started = time.monotonic()
    assert api.claim(MODEL, wait=0).status == 204
    assert time.monotonic() - started < 0.5


def test_heartbeat_response(api):
    request_id = api.submit_ok(MODEL, {})
    job = api.claim_ok(MODEL, claim_timeout=60)
    reply = api.worker_call("heartbeat", MODEL, request_id, job["claim_id"])
    assert reply.status == 200, reply
    assert set(reply.json) == {"status", "lease_expires_at"}, reply.json
    assert reply.json["status"] == "running"
    lease = parse_time(reply.json["lease_expires_at"])
    assert abs(lease - (time.time() + 60)) <= 2
    assert api.status_ok(request_id, MODEL)["lease_expires_at"] == reply.json["lease_expires_at"]


def test_heartbeat_extends_lease(api):
    request_id = api.submit_ok(MODEL, {})
    job = api.claim_ok(MODEL, claim_timeout=1)
    first_lease = parse_time(job["lease_expires_at"])
    started = time.monotonic()
    latest = job["lease_expires_at"]
    # Heartbeats every 0.3 s keep a 1 s lease alive for 2.5 s.
    while time.monotonic() - started < 2.5:
        reply = api.worker_call("heartbeat", MODEL, request_id, job["claim_id"])
        assert reply.status == 200, reply
        latest = reply.json["lease_expires_at"]
        status = api.status_ok(request_id, MODEL)
        assert status["status"] == "running"
        assert status["retries"] == 0
        time.sleep(0.3)
    assert parse_time(latest) >= first_lease + 2
    assert "info" not in api.status_ok(request_id, MODEL)


def test_heartbeat_merges_info(api):
    info = {"a": 1, "b": {"c": 2, "d": 3}, "e": "x", "list": [1, 2, 3]}
    request_id = api.submit_ok(MODEL, {}, info=info)
    job = api.claim_ok(MODEL)
    patch = {"a": 10, "b": {"c": None, "f": {"g": 4}}, "e": None, "list": [9], "new": "n"}
    reply = api.worker_call("heartbeat", MODEL, request_id, job["claim_id"], info=patch)
    assert reply.status == 200, reply
    expected = {"a": 10, "b": {"d": 3, "f": {"g": 4}}, "list": [9], "new": "n"}
    assert api.status_ok(request_id, MODEL)["info"] == expected

    reply = api.worker_call("heartbeat", MODEL, request_id, job["claim_id"],
                            info={"b": "flat", "missing": None})
    assert reply.status == 200, reply
    expected = {"a": 10, "b": "flat", "list": [9], "new": "n"}
    assert api.status_ok(request_id, MODEL)["info"] == expected


def test_merge_into_absent_info(api):
    request_id = api.submit_ok(MODEL, {})
    job = api.claim_ok(MODEL)
    reply = api.worker_call("heartbeat", MODEL, request_id, job["claim_id"],
                            info={"x": {"y": None, "z": 1}, "gone": None})
    assert reply.status == 200, reply
    assert api.status_ok(request_id, MODEL)["info"] == {"x": {"z": 1}}


def test_merge_deleting_every_key(api):
    request_id = api.submit_ok(MODEL, {}, info={"a": 1})
    job = api.claim_ok(MODEL)
    reply = api.worker_call("heartbeat", MODEL, request_id, job["claim_id"], info={"a": None})
    assert reply.status == 200, reply
    assert api.status_ok(request_id, MODEL).get("info", {}) == {}


@pytest.mark.parametrize("route,extra,final", [
    ("complete", {"outputs": {"r": 1}}, "done"),
    ("fail", {"error": "out of memory"}, "failed"),
    ("release", {}, "pending"),
])
def test_end_of_claim_merges_info(api, route, extra, final):
    request_id = api.submit_ok(MODEL, {}, info={"keep": 1, "drop": 2})
    job = api.claim_ok(MODEL)
    reply = api.worker_call(route, MODEL, request_id, job["claim_id"],
                            info={"drop": None, "step": route}, **extra)
    assert reply.status == 200, reply
    body = api.status_ok(request_id, MODEL)
    assert body["status"] == final
    assert body["info"] == {"keep": 1, "step": route}


def test_heartbeat_info_over_limit(start_server):
    server = start_server(max_info_bytes=100)
    api = server.api()
    info = {"k": "x" * 60}
    request_id = api.submit_ok(MODEL, {}, info=info)
    job = api.claim_ok(MODEL)
    reply = api.worker_call("heartbeat", MODEL, request_id, job["claim_id"],
                            info={"more": "y" * 60})
    assert_error(reply, 400, "too_large", param="info")
    body = api.status_ok(request_id, MODEL)
    assert body["info"] == info
    assert body["status"] == "running"


def test_heartbeat_rejects_retry_history(api):
    request_id = api.submit_ok(MODEL, {}, info={"a": 1})
    job = api.claim_ok(MODEL)
    reply = api.worker_call("heartbeat", MODEL, request_id, job["claim_id"],
                            info={"retry_history": []})
    body = assert_error(reply, 400, "invalid_field")
    assert "retry_history" in body["message"]
    assert api.status_ok(request_id, MODEL)["info"] == {"a": 1}


@pytest.mark.parametrize("route", ["heartbeat", "complete", "fail", "release"])
def test_info_patch_not_object(api, route):
    request_id = api.submit_ok(MODEL, {}, info={"a": 1})
    job = api.claim_ok(MODEL)
    extra = {"complete": {"outputs": {}}, "fail": {"error": "e"}}.get(route, {})
    reply = api.worker_call(route, MODEL, request_id, job["claim_id"], info=[1], **extra)
    assert_error(reply, 400, "invalid_field", param="info")
    body = api.status_ok(request_id, MODEL)
    assert body["status"] == "running"
    assert body["info"] == {"a": 1}


def test_complete_response(api):
    request_id = api.submit_ok(MODEL, {})
    job = api.claim_ok(MODEL)
    reply = api.worker_call("complete", MODEL, request_id, job["claim_id"], outputs={"x": 1})
    assert reply.status == 200, reply
    assert reply.json == {"status": "done", "request_id": request_id, "model": MODEL}
    assert api.metrics_ok(MODEL)["total_jobs"] == 0


def test_fail_response(api):
    request_id = api.submit_ok(MODEL, {})
    job = api.claim_ok(MODEL)
    reply = api.worker_call("fail", MODEL, request_id, job["claim_id"], error="CUDA error: oom")
    assert reply.status == 200, reply
    assert reply.json == {"status": "failed", "request_id": request_id, "model": MODEL}
    body = api.status_ok(request_id, MODEL)
    assert body["error"] == "CUDA error: oom"
    assert "outputs" not in body
    assert api.claim(MODEL).status == 204, "a failed job was delivered again"


def test_release_keeps_place(api):
    ids = [api.submit_ok(MODEL, {"i": i}) for i in range(3)]
    first = api.claim_ok(MODEL, worker="leaving")
    assert first["request_id"] == ids[0]
    reply = api.worker_call("release", MODEL, ids[0], first["claim_id"])
    assert reply.status == 200, reply
    assert reply.json == {"status": "pending", "request_id": ids[0], "model": MODEL}

    body = api.status_ok(ids[0], MODEL)
    assert body["status"] == "pending"
    assert body["retries"] == 0
    assert "lease_expires_at" not in body
    assert "retry_history" not in body.get("info", {})
    assert api.metrics_ok(MODEL) == {"messages_waiting": 3, "messages_running": 0,
                                     "total_jobs": 3}

    again = api.claim_ok(MODEL)
    assert again["request_id"] == ids[0]
    assert again["retries"] == 0
    assert again["claim_id"] != first["claim_id"]
    assert [api.claim_ok(MODEL)["request_id"] for _ in range(2)] == ids[1:]


def test_released_claim_is_dead(api):
    request_id = api.submit_ok(MODEL, {})
    job = api.claim_ok(MODEL)
    assert api.worker_call("release", MODEL, request_id, job["claim_id"]).status == 200

    for route, extra in [("complete", {"outputs": {}}), ("fail", {"error": "e"}),
                         ("heartbeat", {}), ("release", {})]:
        reply = api.worker_call(route, MODEL, request_id, job["claim_id"], **extra)
        assert reply.status == 409, f"{route} after release: {reply!r}"
        assert reply.json["status"] == "pending", reply.json
        assert reply.json["type"] == "conflict_error"
        assert api.status_ok(request_id, MODEL)["status"] == "pending"


@pytest.mark.parametrize("state", ["done", "failed"])
@pytest.mark.parametrize("route", ["complete", "fail", "heartbeat", "release"])
def test_terminal_job_conflict(api, state, route):
    request_id = api.submit_ok(MODEL, {})
    job = api.claim_ok(MODEL)
    if state == "done":
        end = api.worker_call("complete", MODEL, request_id, job["claim_id"], outputs={"v": 1})
    else:
        end = api.worker_call("fail", MODEL, request_id, job["claim_id"], error="boom")
    assert end.status == 200, end
    before = api.status_ok(request_id, MODEL)

    extra = {"complete": {"outputs": {"v": 2}}, "fail": {"error": "again"}}.get(route, {})
    reply = api.worker_call(route, MODEL, request_id, job["claim_id"], info={"x": 1}, **extra)
    body = assert_error(reply, 409, "invalid_state")
    assert body["status"] == state
    assert api.status_ok(request_id, MODEL) == before


@pytest.mark.parametrize("route", ["complete", "fail", "heartbeat", "release"])
def test_canceled_job_conflict(api, route):
    request_id = api.submit_ok(MODEL, {})
    assert api.post("/v1/queue/cancel", {"model": MODEL, "request_id": request_id}).status == 200
    extra = {"complete": {"outputs": {}}, "fail": {"error": "e"}}.get(route, {})
    reply = api.worker_call(route, MODEL, request_id, UNKNOWN_CLAIM, **extra)
    body = assert_error(reply, 409, "invalid_state")
    assert body["status"] == "canceled"


@pytest.mark.parametrize("route", ["complete", "fail", "heartbeat", "release"])
def test_wrong_claim_conflict(api, route):
    request_id = api.submit_ok(MODEL, {})
    job = api.claim_ok(MODEL)
    extra = {"complete": {"outputs": {}}, "fail": {"error": "e"}}.get(route, {})
    reply = api.worker_call(route, MODEL, request_id, UNKNOWN_CLAIM, **extra)
    body = assert_error(reply, 409, "claim_mismatch")
    assert body["status"] == "running"
    status = api.status_ok(request_id, MODEL)
    assert status["status"] == "running"
    assert status["lease_expires_at"] == job["lease_expires_at"]


@pytest.mark.parametrize("route", ["complete", "fail", "heartbeat", "release"])
def test_claim_id_missing(api, route):
    request_id = api.submit_ok(MODEL, {})
    api.claim_ok(MODEL)
    body = {"model": MODEL, "request_id": request_id, "outputs": {}, "error": "e"}
    if route in ("heartbeat", "release"):
        del body["outputs"], body["error"]
    reply = api.post(f"/v1/queue/{route}", body)
    error = assert_error(reply, 409, "claim_mismatch", param="claim_id", message_has="claim_id")
    assert error["status"] == "running"
    assert api.status_ok(request_id, MODEL)["status"] == "running"


@pytest.mark.parametrize("claim_id", ["abc", "", 42, "11111111-2222-4333-8444-55555555555",
                                      "11111111-2222-4333-8444-5555555555555",
                                      "1111111122224333844455555555555555"])
def test_claim_id_malformed(api, claim_id):
    request_id = api.submit_ok(MODEL, {})
    api.claim_ok(MODEL)
    reply = api.worker_call("complete", MODEL, request_id, claim_id, outputs={})
    assert_error(reply, 400, "invalid_field", param="claim_id")
    assert api.status_ok(request_id, MODEL)["status"] == "running"


@pytest.mark.parametrize("route", ["complete", "fail", "heartbeat", "release"])
def test_worker_call_unknown_job(api, route):
    extra = {"complete": {"outputs": {}}, "fail": {"error": "e"}}.get(route, {})
    reply = api.worker_call(route, MODEL, UNKNOWN_ID, UNKNOWN_CLAIM, **extra)
    assert_error(reply, 404, "not_found")


def test_worker_call_other_model(api):
    request_id = api.submit_ok(MODEL, {})
    job = api.claim_ok(MODEL)
    reply = api.worker_call("complete", "test/other", request_id, job["claim_id"], outputs={})
    assert_error(reply, 404, "not_found")
    assert api.status_ok(request_id, MODEL)["status"] == "running"


def test_complete_outputs_missing(api):
    request_id = api.submit_ok(MODEL, {})
    job = api.claim_ok(MODEL)
    reply = api.worker_call("complete", MODEL, request_id, job["claim_id"])
    assert_error(reply, 400, "missing_field", param="outputs")
    assert api.status_ok(request_id, MODEL)["status"] == "running"


@pytest.mark.parametrize("outputs", [[1], "text", 3, None])
def test_complete_outputs_not_object(api, outputs):
    request_id = api.submit_ok(MODEL, {})
    job = api.claim_ok(MODEL)
    reply = api.worker_call("complete", MODEL, request_id, job["claim_id"], outputs=outputs)
    assert_error(reply, 400, "invalid_field", param="outputs")
    assert api.status_ok(request_id, MODEL)["status"] == "running"


def test_fail_error_missing(api):
    request_id = api.submit_ok(MODEL, {})
    job = api.claim_ok(MODEL)
    reply = api.worker_call("fail", MODEL, request_id, job["claim_id"])
    assert_error(reply, 400, "missing_field", param="error")
    assert api.status_ok(request_id, MODEL)["status"] == "running"


@pytest.mark.parametrize("error", [{"msg": "x"}, 5, "bad\u0000byte"],
                         ids=["object", "number", "nul_escape"])
def test_fail_error_invalid(api, error):
    request_id = api.submit_ok(MODEL, {})
    job = api.claim_ok(MODEL)
    reply = api.worker_call("fail", MODEL, request_id, job["claim_id"], error=error)
    assert_error(reply, 400, "invalid_field", param="error")
    assert api.status_ok(request_id, MODEL)["status"] == "running"


@pytest.mark.parametrize("worker", ["w" * 129, "nul\u0000name", 7],
                         ids=["129_bytes", "nul_escape", "number"])
def test_claim_worker_invalid(api, worker):
    api.submit_ok(MODEL, {})
    reply = api.claim(MODEL, worker=worker)
    assert_error(reply, 400, "invalid_field", param="worker")
    assert api.metrics_ok(MODEL) == {"messages_waiting": 1, "messages_running": 0,
                                     "total_jobs": 1}


def test_claim_worker_max_length(api):
    api.submit_ok(MODEL, {})
    assert api.claim(MODEL, worker="w" * 128).status == 200


def test_claim_default_timeout(start_server):
    server = start_server(claim_timeout=45)
    api = server.api()
    api.submit_ok(MODEL, {})
    reply = api.claim(MODEL)
    assert reply.status == 200, reply
    lease = parse_time(reply.json["lease_expires_at"]) - parse_time(reply.json["claimed_at"])
    assert lease in (45, 46)


def test_complete_after_wait_claim(server, api):
    waiter = ClaimThread(server, MODEL, 5)
    waiter.start()
    waiter.join(0.2)
    request_id = api.submit_ok(MODEL, {})
    wait_for(lambda: not waiter.is_alive(), 5, "the waiting claim to return")
    job = waiter.reply.json
    reply = api.worker_call("complete", MODEL, request_id, job["claim_id"], outputs={"ok": 1})
    assert reply.status == 200, reply
    assert api.status_ok(request_id, MODEL)["outputs"] == {"ok": 1}


def test_closed_waiter_gets_no_job(server, api):
    conn = server.raw()
    body = b'{"model": "test/worker", "wait": 5, "claim_timeout": 600}'
    conn.send(b"POST /v1/queue/claim HTTP/1.1\r\nHost: 127.0.0.1\r\n"
              b"Authorization: Bearer " + server.key.encode() + b"\r\n"
              b"Content-Length: %d\r\n\r\n" % len(body) + body)
    assert not conn.wait_closed(0.3), "the server closed a waiting claim"
    conn.close()

    # The job must not go to the waiter whose connection is gone.
    request_id = api.submit_ok(MODEL, {})
    assert api.status_ok(request_id, MODEL)["status"] == "pending"
    job = api.claim_ok(MODEL)
    assert job["request_id"] == request_id


def test_concurrent_claims_unique(server, api):
    ids = {api.submit_ok(MODEL, {"i": i}) for i in range(120)}
    results = []

    def claim_all():
        client = server.api()
        mine = []
        for _ in range(200):
            reply = client.claim(MODEL, claim_timeout=600)
            if reply.status == 204:
                break
            assert reply.status == 200, reply
            mine.append(reply.json["request_id"])
        results.append(mine)

    threads = [threading.Thread(target=claim_all, daemon=True) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
        assert not thread.is_alive(), "a claiming thread hung"
    claimed = [request_id for mine in results for request_id in mine]
    assert len(results) == 6, "a claiming thread failed"
    assert len(claimed) == len(set(claimed)), "a job was delivered twice"
    assert set(claimed) == ids
    assert api.metrics_ok(MODEL) == {"messages_waiting": 0, "messages_running": 120,
                                     "total_jobs": 120}


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded",
                                          None])
def test_submit_any_content_type(server, content_type):
    conn = server.raw()
    body = b'{"model": "test/worker", "payload": {"ct": 1}}'
    headers = {"Content-Type": content_type} if content_type else {}
    lines = b"".join(b"%s: %s\r\n" % (k.encode(), v.encode()) for k, v in headers.items())
    conn.send(b"POST /v1/queue/submit HTTP/1.1\r\nHost: 127.0.0.1\r\n"
              b"Authorization: Bearer " + server.key.encode() + b"\r\n" + lines
              + b"Content-Length: %d\r\n\r\n" % len(body) + body)
    response = conn.read_response()
    assert response.status == 200, response
    assert response.headers["content-type"].startswith("application/json")


def test_merge_keeps_unpatched_bytes(api):
    info = (b'{"big": 123456789012345678901234567890, "f": 1.0, "n": {"huge": 1e400, "x": 1},'
            b' "s": "\\u0000\\u00e9"}')
    reply = api.post("/v1/queue/submit",
                     b'{"model": "test/worker", "payload": {}, "info": ' + info + b"}")
    assert reply.status == 200, reply
    request_id = reply.json["request_id"]
    job = api.claim_ok(MODEL)
    patch = b'{"n": {"x": 2}, "added": 98765432109876543210987654321, "g": 2.50}'
    reply = api.post("/v1/queue/heartbeat",
                     b'{"model": "test/worker", "request_id": "' + request_id.encode()
                     + b'", "claim_id": "' + job["claim_id"].encode() + b'", "info": '
                     + patch + b"}")
    assert reply.status == 200, reply

    status = api.status(request_id, MODEL)
    merged = compact(raw_member(status.raw, "info"))
    assert b'"big":123456789012345678901234567890' in merged, merged
    assert b'"f":1.0' in merged, merged
    assert b'"huge":1e400' in merged, merged
    assert b'"s":"\\u0000\\u00e9"' in merged, merged
    assert b'"added":98765432109876543210987654321' in merged, merged
    assert b'"g":2.50' in merged, merged
    assert status.json["info"]["n"]["x"] == 2


@pytest.mark.parametrize("text", ["\u00e9chec \U0001F600", 'quote " and \\ and\nnewline',
                                  "x" * 5000])
def test_fail_error_round_trip(api, text):
    request_id = api.submit_ok(MODEL, {})
    job = api.claim_ok(MODEL)
    assert api.worker_call("fail", MODEL, request_id, job["claim_id"], error=text).status == 200
    assert api.status_ok(request_id, MODEL)["error"] == text


def test_waiter_gets_released_job(server, api):
    request_id = api.submit_ok(MODEL, {})
    job = api.claim_ok(MODEL)
    waiter = ClaimThread(server, MODEL, 5)
    waiter.start()
    waiter.join(0.3)
    assert waiter.is_alive()
    assert api.worker_call("release", MODEL, request_id, job["claim_id"]).status == 200
    waiter.join(3)
    assert not waiter.is_alive(), "a waiting claim did not get the released job"
    assert waiter.reply.status == 200, waiter.reply
    assert waiter.reply.json["request_id"] == request_id


def test_waiter_gets_expired_job(server, api):
    request_id = api.submit_ok(MODEL, {})
    api.claim_ok(MODEL, claim_timeout=1)
    waiter = ClaimThread(server, MODEL, 8)
    waiter.start()
    waiter.join(5)
    assert not waiter.is_alive(), "a waiting claim did not get the job whose lease expired"
    assert waiter.reply.status == 200, waiter.reply
    assert waiter.reply.json["request_id"] == request_id
    assert waiter.reply.json["retries"] == 1


def test_large_payload_round_trip(api):
    payload = b'{"blob": "' + b"ab" * (2 * 1024 * 1024) + b'", "n": 1.0}'
    reply = api.post("/v1/queue/submit", b'{"model": "test/worker", "payload": ' + payload + b"}")
    assert reply.status == 200, reply
    status = api.status(reply.json["request_id"], MODEL)
    assert raw_member(status.raw, "inputs") == payload
    claim = api.claim(MODEL)
    assert raw_member(claim.raw, "payload") == payload
