"""Backpressure: while more changes wait for the disk than --max-pending-changes, submits get
503 with Retry-After and create nothing; worker calls and reads keep working."""

import json

MODEL = "test/backpressure"


def submit_request(i, key):
    body = json.dumps({"model": MODEL, "payload": {"i": i}}).encode()
    return (b"POST /v1/queue/submit HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            b"Authorization: Bearer %s\r\n"
            b"Content-Length: %d\r\n\r\n" % (key.encode(), len(body))) + body


def test_submits_refused_when_store_behind(start_server):
    server = start_server(max_pending_changes=1)
    conn = server.raw()
    # Pipelined submits reach the server in one read, before the first one's commit.
    conn.send(b"".join(submit_request(i, server.key) for i in range(20)))
    accepted = refused = 0
    for _ in range(20):
        response = conn.read_response()
        if response.status == 200:
            accepted += 1
            continue
        assert response.status == 503, response
        assert response.headers.get("retry-after") == "1", response.headers
        body = response.json
        assert body["code"] == "overloaded", body
        assert body["type"] == "server_error", body
        assert "--max-pending-changes" in body["message"], body
        refused += 1
    assert accepted >= 1
    assert refused >= 1

    # A refused submit created nothing; the accepted ones are all there.
    api = server.api()
    metrics = api.metrics_ok(MODEL)
    assert metrics["messages_waiting"] == accepted

    # Once the store caught up, submits succeed again and workers were never refused.
    assert api.submit(MODEL, {"after": True}).status == 200
    assert api.claim(MODEL).status == 200
    assert any("--max-pending-changes" in line for line in server.log), server.log_tail()
