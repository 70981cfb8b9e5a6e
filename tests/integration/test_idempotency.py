"""Idempotency-Key on submit: a repeated submit with the same key and body returns the first
job's id and creates nothing, also when the first is not committed yet and across a crash; the
same key with another body is a conflict; keys are per model and expire after
--idempotency-ttl."""

import json

from support import assert_error, wait_for

MODEL = "test/idem"
BODY = {"model": MODEL, "payload": {"prompt": "a cat", "n": 1}}


def submit_keyed(api, key, body=BODY):
    return api.post("/v1/queue/submit", body, headers={"Idempotency-Key": key})


def test_same_key_same_body_returns_first_id(api):
    first = submit_keyed(api, "key-1")
    again = submit_keyed(api, "key-1")
    assert first.status == 200, first
    assert again.status == 200, again
    assert again.json["requestId"] == first.json["requestId"]
    assert again.json["request_id"] == first.json["request_id"]
    assert api.metrics_ok(MODEL)["messages_waiting"] == 1


def test_same_key_other_body_conflicts(api):
    first = submit_keyed(api, "key-2")
    other = submit_keyed(api, "key-2", {"model": MODEL, "payload": {"prompt": "a dog"}})
    assert first.status == 200, first
    assert_error(other, 409, "idempotency_conflict", param="Idempotency-Key",
                 message_has="different body")
    assert api.metrics_ok(MODEL)["messages_waiting"] == 1


def test_keys_are_per_model(api):
    first = submit_keyed(api, "shared-key")
    other_model = submit_keyed(api, "shared-key", {"model": "test/idem-other", "payload": {}})
    assert other_model.status == 200, other_model
    assert other_model.json["requestId"] != first.json["requestId"]


def test_submits_without_key_are_distinct(api):
    ids = {api.submit_ok(MODEL, {"prompt": "same"}) for _ in range(3)}
    assert len(ids) == 3


def test_repeat_in_one_pipeline(server):
    """The second submit arrives before the first one's commit: still one job."""
    body = json.dumps(BODY).encode()
    request = (b"POST /v1/queue/submit HTTP/1.1\r\nHost: t\r\nIdempotency-Key: piped\r\n"
               b"Authorization: Bearer %s\r\n"
               b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n"
               % (server.key.encode(), len(body))) + body
    conn = server.raw()
    conn.send(request * 5)
    ids = set()
    for _ in range(5):
        response = conn.read_response()
        assert response.status == 200, response
        ids.add(response.json["requestId"])
    assert len(ids) == 1
    assert server.api().metrics_ok(MODEL)["messages_waiting"] == 1


def test_key_survives_crash(start_server):
    server = start_server()
    first = submit_keyed(server.api(), "crash-key")
    assert first.status == 200, first
    server.kill()
    server.restart()
    again = submit_keyed(server.api(), "crash-key")
    assert again.status == 200, again
    assert again.json["requestId"] == first.json["requestId"]
    assert server.api().metrics_ok(MODEL)["messages_waiting"] == 1


def test_key_expires_after_ttl(start_server):
    server = start_server(idempotency_ttl="1s")
    api = server.api()
    first = submit_keyed(api, "short-key")
    assert first.status == 200, first

    def new_job_created():
        reply = submit_keyed(api, "short-key")
        assert reply.status == 200, reply
        return reply.json["requestId"] != first.json["requestId"]

    wait_for(new_job_created, 10, "a new job for the key once its 1 s window passed")


def test_invalid_key_rejected(api):
    for key in ["has space", "x" * 256]:
        reply = submit_keyed(api, key)
        assert_error(reply, 400, "invalid_field", param="Idempotency-Key",
                     message_has="Idempotency-Key")
    assert api.metrics_ok(MODEL)["messages_waiting"] == 0


def test_longest_valid_key_accepted(api):
    reply = submit_keyed(api, "k" * 255)
    assert reply.status == 200, reply
