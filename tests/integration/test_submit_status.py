"""Client routes: submit, status, cancel, metrics, clear, and the claim order."""

import time

import pytest

from support import (UNKNOWN_ID, UUID4_RE, UUID7_RE, assert_error, assert_no_nulls, compact,
                     parse_time, raw_member, uuid7_time)

MODEL = "test/model-a"
OTHER = "test/model-b"

STATUS_FIELDS_ALWAYS = {"request_id", "model", "status", "priority", "retries", "created_at",
                        "inputs"}


def job_in_state(api, state, model=MODEL, payload=None):
    """Submit a job and bring it to state; return (request_id, claim_id or None).

    The job must be the only pending one of model when state needs a claim.
    """
    request_id = api.submit_ok(model, payload or {"state": state})
    if state == "pending":
        return request_id, None
    if state == "canceled":
        reply = api.post("/v1/queue/cancel", {"model": model, "request_id": request_id})
        assert reply.status == 200, reply
        return request_id, None
    job = api.claim_ok(model)
    assert job["request_id"] == request_id, "another job was pending"
    claim_id = job["claim_id"]
    if state == "done":
        reply = api.worker_call("complete", model, request_id, claim_id, outputs={"ok": True})
        assert reply.status == 200, reply
    elif state == "failed":
        reply = api.worker_call("fail", model, request_id, claim_id, error="model crashed")
        assert reply.status == 200, reply
    return request_id, claim_id


def test_submit_response_fields(api):
    before = time.time()
    reply = api.submit(MODEL, {"prompt": "hi"})
    assert reply.status == 200, reply
    assert reply.headers["content-type"].startswith("application/json")
    body = reply.json
    assert set(body) == {"requestId", "request_id"}, body
    assert body["requestId"] == body["request_id"]
    assert len(body["request_id"]) == 36
    assert UUID7_RE.match(body["request_id"]), body
    assert before - 2 <= uuid7_time(body["request_id"]) <= time.time() + 2


def test_submit_ids_unique(api):
    ids = [api.submit_ok(MODEL, {"i": i}) for i in range(20)]
    assert len(set(ids)) == 20


def test_status_pending_fields(api):
    before = int(time.time())
    request_id = api.submit_ok(MODEL, {"prompt": "hi"})
    reply = api.status(request_id, MODEL)
    assert reply.status == 200, reply
    body = reply.json
    assert_no_nulls(body)
    assert set(body) == STATUS_FIELDS_ALWAYS, body
    assert body["request_id"] == request_id
    assert body["model"] == MODEL
    assert body["status"] == "pending"
    assert body["priority"] == 0
    assert body["retries"] == 0
    assert body["inputs"] == {"prompt": "hi"}
    assert before - 1 <= parse_time(body["created_at"]) <= time.time() + 1


def test_status_running_fields(api):
    request_id = api.submit_ok(MODEL, {"prompt": "hi"}, info={"k": 1}, priority=7)
    job = api.claim_ok(MODEL, claim_timeout=120)
    body = api.status_ok(request_id, MODEL)
    assert_no_nulls(body)
    assert set(body) == STATUS_FIELDS_ALWAYS | {"info", "claimed_at", "lease_expires_at"}, body
    assert body["status"] == "running"
    assert body["priority"] == 7
    assert body["info"] == {"k": 1}
    assert body["claimed_at"] == job["claimed_at"]
    assert body["lease_expires_at"] == job["lease_expires_at"]
    assert parse_time(body["lease_expires_at"]) - parse_time(body["claimed_at"]) in (120, 121)


def test_status_done_fields(api):
    request_id, _ = job_in_state(api, "done")
    body = api.status_ok(request_id, MODEL)
    assert_no_nulls(body)
    assert set(body) == STATUS_FIELDS_ALWAYS | {"claimed_at", "done_at", "outputs"}, body
    assert body["status"] == "done"
    assert body["outputs"] == {"ok": True}
    assert parse_time(body["done_at"]) >= parse_time(body["claimed_at"])


def test_status_failed_fields(api):
    request_id, _ = job_in_state(api, "failed")
    body = api.status_ok(request_id, MODEL)
    assert_no_nulls(body)
    assert set(body) == STATUS_FIELDS_ALWAYS | {"claimed_at", "done_at", "error"}, body
    assert body["status"] == "failed"
    assert body["error"] == "model crashed"
    assert body["retries"] == 0


def test_status_canceled_fields(api):
    request_id, _ = job_in_state(api, "canceled")
    body = api.status_ok(request_id, MODEL)
    assert_no_nulls(body)
    assert set(body) == STATUS_FIELDS_ALWAYS | {"done_at"}, body
    assert body["status"] == "canceled"


# Payload text with numbers no double holds, a float spelling that parsers normalize, raw
# and escaped non-ASCII, the \u0000 escape, escapes of every kind, and nested containers.
EXACT_PAYLOAD = (
    b'{"huge": 1e400, "big": 123456789012345678901234567890, "one": 1.0, "neg": -0,'
    b' "exp": 2.50E-3, "emoji": "\xf0\x9f\x98\x80", "escaped_emoji": "\\ud83d\\ude00",'
    b' "nul": "a\\u0000b", "escapes": "\\"\\\\\\/\\b\\f\\n\\r\\t\\u00e9",'
    b' "nested": {"a": [1, [2, [3, {}]], []], "t": true, "f": false, "n": null}}'
)


def test_inputs_byte_exact(api):
    body = b'{"model": "test/model-a", "payload": ' + EXACT_PAYLOAD + b"}"
    reply = api.post("/v1/queue/submit", body)
    assert reply.status == 200, reply
    request_id = reply.json["request_id"]

    status = api.status(request_id, MODEL)
    assert status.status == 200, status
    assert compact(raw_member(status.raw, "inputs")) == compact(EXACT_PAYLOAD)

    claim = api.claim(MODEL)
    assert claim.status == 200, claim
    assert compact(raw_member(claim.raw, "payload")) == compact(EXACT_PAYLOAD)


def test_payload_whitespace_kept(api):
    payload = b'{ "a" :\t[ 1 ,\n 2 ] , "b" : "x y" }'
    reply = api.post("/v1/queue/submit", b'{"model":"test/model-a","payload":' + payload + b"}")
    assert reply.status == 200, reply
    status = api.status(reply.json["request_id"], MODEL)
    assert raw_member(status.raw, "inputs") == payload


def test_payload_duplicate_keys_kept(api):
    payload = b'{"a":1,"a":2}'
    reply = api.post("/v1/queue/submit", b'{"model":"test/model-a","payload":' + payload + b"}")
    assert reply.status == 200, reply
    status = api.status(reply.json["request_id"], MODEL)
    assert compact(raw_member(status.raw, "inputs")) == payload


def test_info_byte_exact(api):
    info = b'{"big": 123456789012345678901234567890, "f": 1.0, "s": "\\u0000"}'
    body = b'{"model": "test/model-a", "payload": {}, "info": ' + info + b"}"
    reply = api.post("/v1/queue/submit", body)
    assert reply.status == 200, reply
    status = api.status(reply.json["request_id"], MODEL)
    assert compact(raw_member(status.raw, "info")) == compact(info)
    claim = api.claim(MODEL)
    assert compact(raw_member(claim.raw, "info")) == compact(info)


def test_submit_warns_unknown_fields(api):
    reply = api.submit(MODEL, {}, colour="blue", extra_field={"x": 1})
    assert reply.status == 200, reply
    warnings = reply.json["warnings"]
    assert isinstance(warnings, list) and len(warnings) == 2, warnings
    assert all(isinstance(w, str) for w in warnings), warnings
    assert any("colour" in w for w in warnings), warnings
    assert any("extra_field" in w for w in warnings), warnings
    assert reply.json["requestId"] == reply.json["request_id"]

    status = api.status_ok(reply.json["request_id"], MODEL)
    assert status["warnings"] == warnings


def test_submit_no_warnings_field(api):
    reply = api.submit(MODEL, {}, info={}, priority=1)
    assert "warnings" not in reply.json
    assert "warnings" not in api.status_ok(reply.json["request_id"], MODEL)


def test_claim_warns_unknown_fields(api):
    api.submit_ok(MODEL, {})
    reply = api.claim(MODEL, gpu="a100")
    assert reply.status == 200, reply
    assert any("gpu" in w for w in reply.json["warnings"]), reply.json


def test_cancel_warns_unknown_fields(api):
    request_id = api.submit_ok(MODEL, {})
    reply = api.post("/v1/queue/cancel", {"model": MODEL, "request_id": request_id, "why": "x"})
    assert reply.status == 200, reply
    assert any("why" in w for w in reply.json["warnings"]), reply.json


def test_claim_response_fields(api):
    before = int(time.time())
    request_id = api.submit_ok(MODEL, {"p": 1}, priority=-4)
    reply = api.claim(MODEL, claim_timeout=30, worker="w-1")
    assert reply.status == 200, reply
    job = reply.json
    assert_no_nulls(job)
    assert set(job) == {"request_id", "model", "payload", "priority", "retries", "claim_id",
                        "claimed_at", "lease_expires_at"}, job
    assert job["request_id"] == request_id
    assert job["model"] == MODEL
    assert job["payload"] == {"p": 1}
    assert job["priority"] == -4
    assert job["retries"] == 0
    assert UUID4_RE.match(job["claim_id"]), job
    claimed_at = parse_time(job["claimed_at"])
    assert before - 1 <= claimed_at <= time.time() + 1
    assert parse_time(job["lease_expires_at"]) - claimed_at in (30, 31)


def test_claim_ids_differ(api):
    api.submit_ok(MODEL, {})
    api.submit_ok(MODEL, {})
    first = api.claim_ok(MODEL)
    second = api.claim_ok(MODEL)
    assert first["claim_id"] != second["claim_id"]


def test_claim_empty_returns_204(api):
    reply = api.claim(MODEL)
    assert reply.status == 204, reply
    assert reply.raw == b""


def test_metrics_mixed_states(api):
    job_in_state(api, "done")
    job_in_state(api, "failed")
    job_in_state(api, "canceled")
    job_in_state(api, "running")
    api.submit_ok(MODEL, {})
    api.submit_ok(MODEL, {})
    api.submit_ok(OTHER, {})

    reply = api.metrics(MODEL)
    assert reply.status == 200, reply
    assert reply.json == {"messages_waiting": 2, "messages_running": 1, "total_jobs": 3}
    assert api.metrics_ok(OTHER) == {"messages_waiting": 1, "messages_running": 0, "total_jobs": 1}


def test_metrics_unknown_model_zeros(api):
    assert api.metrics_ok("never/used") == {"messages_waiting": 0, "messages_running": 0,
                                             "total_jobs": 0}


def test_clear_cancels_pending_only(api):
    running_id, claim_id = job_in_state(api, "running")
    done_id, _ = job_in_state(api, "done")
    pending = [api.submit_ok(MODEL, {"i": i}) for i in range(3)]
    other_id = api.submit_ok(OTHER, {})

    reply = api.post("/v1/queue/clear", {"model": MODEL})
    assert reply.status == 200, reply
    assert reply.json == {"canceled_count": 3}

    for request_id in pending:
        body = api.status_ok(request_id, MODEL)
        assert body["status"] == "canceled"
        assert "done_at" in body
    running = api.status_ok(running_id, MODEL)
    assert running["status"] == "running"
    assert api.status_ok(done_id, MODEL)["status"] == "done"
    assert api.status_ok(other_id, OTHER)["status"] == "pending"
    assert api.metrics_ok(MODEL) == {"messages_waiting": 0, "messages_running": 1, "total_jobs": 1}

    reply = api.worker_call("complete", MODEL, running_id, claim_id, outputs={})
    assert reply.status == 200, reply
    again = api.post("/v1/queue/clear", {"model": MODEL})
    assert again.json == {"canceled_count": 0}
    assert api.post("/v1/queue/clear", {"model": "never/used"}).json == {"canceled_count": 0}


def test_cancel_pending(api):
    request_id = api.submit_ok(MODEL, {})
    reply = api.post("/v1/queue/cancel", {"model": MODEL, "request_id": request_id})
    assert reply.status == 200, reply
    assert reply.json == {"status": "canceled", "request_id": request_id, "model": MODEL}
    body = api.status_ok(request_id, MODEL)
    assert body["status"] == "canceled"
    assert parse_time(body["done_at"]) >= parse_time(body["created_at"])
    assert api.claim(MODEL).status == 204
    assert api.metrics_ok(MODEL)["total_jobs"] == 0


@pytest.mark.parametrize("state", ["running", "done", "failed", "canceled"])
def test_cancel_conflict(api, state):
    request_id, _ = job_in_state(api, state)
    before = api.status_ok(request_id, MODEL)
    reply = api.post("/v1/queue/cancel", {"model": MODEL, "request_id": request_id})
    body = assert_error(reply, 409, "invalid_state")
    assert body["status"] == state
    assert api.status_ok(request_id, MODEL) == before


def test_status_other_model_404(api):
    request_id = api.submit_ok(MODEL, {})
    assert_error(api.status(request_id, OTHER), 404, "not_found")


def test_status_unknown_id_404(api):
    assert_error(api.status(UNKNOWN_ID, MODEL), 404, "not_found")


def test_cancel_other_model_404(api):
    request_id = api.submit_ok(MODEL, {})
    reply = api.post("/v1/queue/cancel", {"model": OTHER, "request_id": request_id})
    assert_error(reply, 404, "not_found")
    assert api.status_ok(request_id, MODEL)["status"] == "pending"


def test_cancel_unknown_id_404(api):
    reply = api.post("/v1/queue/cancel", {"model": MODEL, "request_id": UNKNOWN_ID})
    assert_error(reply, 404, "not_found")


def test_status_model_slash_unencoded(api):
    request_id = api.submit_ok(MODEL, {})
    reply = api.request("GET", f"/v1/queue/status?request_id={request_id}&model={MODEL}")
    assert reply.status == 200, reply
    assert reply.json["request_id"] == request_id


def test_claim_order_priority_then_fifo(api):
    priorities = [0, 5, -3, 2147483647, -2147483648, 5, 0, 2147483647, -3, 1, -2147483648, 0]
    ids = []
    for index, priority in enumerate(priorities):
        ids.append(api.submit_ok(MODEL, {"index": index}, priority=priority))
    expected = [ids[i] for i in sorted(range(len(ids)), key=lambda i: (-priorities[i], i))]

    claimed = []
    for _ in priorities:
        job = api.claim_ok(MODEL)
        assert job["priority"] == priorities[ids.index(job["request_id"])]
        claimed.append(job["request_id"])
    assert claimed == expected
    assert api.claim(MODEL).status == 204


def test_claim_only_own_model(api):
    api.submit_ok(OTHER, {})
    assert api.claim(MODEL).status == 204
    assert api.metrics_ok(OTHER)["messages_waiting"] == 1
