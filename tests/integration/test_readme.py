"""The first-job walk-through of README.md: submit, claim, complete, read the status.

The request bodies are the README's curl bodies, byte for byte, with the ids filled in.
"""

import time

from support import UUID4_RE, UUID7_RE, parse_time, raw_member

MODEL = "demo/echo"


def test_readme_sequence(server, api):
    submitted = api.post(
        "/v1/queue/submit",
        b'{"model": "demo/echo", "payload": {"prompt": "a red bicycle"}, "priority": 5}')
    assert submitted.status == 200, submitted
    request_id = submitted.json["request_id"]
    assert UUID7_RE.match(request_id), request_id
    assert submitted.json == {"requestId": request_id, "request_id": request_id}

    claimed = api.post("/v1/queue/claim",
                       b'{"model": "demo/echo", "claim_timeout": 60, "worker": "gpu-0"}')
    assert claimed.status == 200, claimed
    job = claimed.json
    assert job["request_id"] == request_id
    assert job["model"] == MODEL
    assert raw_member(claimed.raw, "payload") == b'{"prompt": "a red bicycle"}'
    assert job["priority"] == 5
    assert job["retries"] == 0
    assert UUID4_RE.match(job["claim_id"]), job
    assert parse_time(job["lease_expires_at"]) - parse_time(job["claimed_at"]) in (60, 61)
    assert "info" not in job

    outputs = b'{"url": "file:///tmp/bicycle.png"}'
    completed = api.post(
        "/v1/queue/complete",
        b'{"model": "demo/echo", "request_id": "' + request_id.encode() + b'", "claim_id": "'
        + job["claim_id"].encode() + b'",\n       "outputs": ' + outputs + b"}")
    assert completed.status == 200, completed
    assert completed.json == {"status": "done", "request_id": request_id, "model": MODEL}

    status = api.request("GET", f"/v1/queue/status?model=demo/echo&request_id={request_id}")
    assert status.status == 200, status
    body = status.json
    assert body["request_id"] == request_id
    assert body["model"] == MODEL
    assert body["status"] == "done"
    assert body["priority"] == 5
    assert body["retries"] == 0
    assert raw_member(status.raw, "inputs") == b'{"prompt": "a red bicycle"}'
    assert raw_member(status.raw, "outputs") == outputs
    assert parse_time(body["created_at"]) <= parse_time(body["done_at"]) <= time.time() + 1
