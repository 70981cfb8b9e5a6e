"""Durability: every acknowledged change survives SIGKILL and a graceful stop, leases keep their
deadlines across a restart, and a lease that ran out while the server was down expires at start."""

import http.client
import signal
import threading
import time

from support import Api, compact, parse_json, raw_member, wait_for

MODEL = "test/durable"
PRIORITIES = [0, 3, -2, 2147483647, -2147483648, 3, 0, 1]


def payload_text(i):
    """Return varied payload JSON text for job i: big numbers, escapes, unicode and sizes."""
    kinds = [
        b'{"i": %d}' % i,
        b'{"i": %d, "big": 123456789012345678901234567890, "huge": 1e400, "one": 1.0}' % i,
        b'{"i": %d, "s": "caf\xc3\xa9 \xf0\x9f\x9a\x80 \\u0000 \\"q\\""}' % i,
        b'{"i": %d, "nested": {"a": [1, {"b": [null, true, false]}], "e": {}}}' % i,
        b'{"i": %d, "blob": "' % i + b"z" * 20000 + b'"}',
    ]
    return kinds[i % len(kinds)]


def info_text(i):
    if i % 3 == 0:
        return None
    return b'{"n": %d, "tag": "t%d", "f": 2.50}' % (i, i % 7)


def submit_raw(api, i):
    body = b'{"model": "test/durable", "payload": ' + payload_text(i)
    info = info_text(i)
    if info is not None:
        body += b', "info": ' + info
    body += b', "priority": %d' % PRIORITIES[i % len(PRIORITIES)]
    if i % 10 == 0:
        body += b', "unknown_field": %d' % i
    body += b"}"
    reply = api.post("/v1/queue/submit", body)
    assert reply.status == 200, f"submit {i}: {reply!r}"
    return reply.json["request_id"]


def snapshot(api, ids):
    """Return {request_id: (parsed status, raw inputs, raw info or None)}."""
    result = {}
    for request_id in ids:
        reply = api.status(request_id, MODEL)
        assert reply.status == 200, f"status of {request_id}: {reply!r}"
        info = raw_member(reply.raw, "info") if "info" in reply.json else None
        result[request_id] = (reply.json, raw_member(reply.raw, "inputs"), info)
    return result


def test_restart_after_kill(start_server):
    server = start_server()
    api = server.api()
    count = 200
    ids = [submit_raw(api, i) for i in range(count)]
    index = {request_id: i for i, request_id in enumerate(ids)}
    order = sorted(range(count), key=lambda i: (-PRIORITIES[i % len(PRIORITIES)], i))

    claims = [api.claim_ok(MODEL, claim_timeout=600, worker=f"w{n}") for n in range(12)]
    assert [index[c["request_id"]] for c in claims] == order[:12]
    done = claims[0]
    failed = claims[1]
    released = claims[2]
    running = claims[3:]
    assert api.worker_call("complete", MODEL, done["request_id"], done["claim_id"],
                           outputs={"r": 123456789012345678901234567890}).status == 200
    assert api.worker_call("fail", MODEL, failed["request_id"], failed["claim_id"],
                           error="worker crashed").status == 200
    assert api.worker_call("release", MODEL, released["request_id"], released["claim_id"],
                           info={"released": True}).status == 200
    assert api.worker_call("heartbeat", MODEL, running[0]["request_id"], running[0]["claim_id"],
                           info={"progress": 0.25}).status == 200
    canceled = [ids[i] for i in order[-5:]]
    for request_id in canceled:
        reply = api.post("/v1/queue/cancel", {"model": MODEL, "request_id": request_id})
        assert reply.status == 200, reply

    before = snapshot(api, ids)
    metrics_before = api.metrics_ok(MODEL)
    assert metrics_before == {"messages_waiting": count - 12 + 1 - 5, "messages_running": 9,
                              "total_jobs": count - 12 + 1 - 5 + 9}
    server.kill()
    server.restart()
    api = server.api()

    after = snapshot(api, ids)
    for i, request_id in enumerate(ids):
        status_before, inputs_before, info_before = before[request_id]
        status_after, inputs_after, info_after = after[request_id]
        assert status_after == status_before, f"job {i} changed across the restart"
        assert compact(inputs_after) == compact(payload_text(i)), f"inputs of job {i}"
        assert inputs_after == inputs_before
        assert info_after == info_before, f"info of job {i}"
        if info_text(i) is not None and request_id not in (released["request_id"],
                                                           running[0]["request_id"]):
            assert compact(info_after) == compact(info_text(i)), f"info of job {i}"
    assert api.metrics_ok(MODEL) == metrics_before

    done_status = api.status(done["request_id"], MODEL)
    assert compact(raw_member(done_status.raw, "outputs")) == b'{"r":123456789012345678901234567890}'

    # The claims made before the crash are still valid.
    for n, claim in enumerate(running):
        status = after[claim["request_id"]][0]
        assert status["status"] == "running"
        assert status["claimed_at"] == claim["claimed_at"]
        if n > 0:
            assert status["lease_expires_at"] == claim["lease_expires_at"]
    reply = api.worker_call("heartbeat", MODEL, running[1]["request_id"], running[1]["claim_id"])
    assert reply.status == 200, reply
    for claim in running:
        reply = api.worker_call("complete", MODEL, claim["request_id"], claim["claim_id"],
                                outputs={"after": "restart"})
        assert reply.status == 200, f"old claim rejected after restart: {reply!r}"

    # Pending jobs are claimed in the same order as before the crash.
    skip = {ids[i] for i in order[:12]} - {released["request_id"]}
    skip |= set(canceled)
    expected = [ids[i] for i in order if ids[i] not in skip]
    claimed = [api.claim_ok(MODEL)["request_id"] for _ in expected]
    assert claimed == expected
    assert api.claim(MODEL).status == 204


def test_lease_expired_while_down(start_server):
    server = start_server()
    api = server.api()
    request_id = api.submit_ok(MODEL, {"p": 1}, info={"a": 1})
    job = api.claim_ok(MODEL, claim_timeout=1, worker="crashed")
    server.kill()
    # The server is down, so there is no state to poll: wait out the 1 s lease instead.
    time.sleep(2)
    server.restart()
    api = server.api()

    body = api.wait_status(request_id, MODEL, "pending", timeout=5)
    assert body["retries"] == 1
    assert body["info"]["a"] == 1
    history = body["info"]["retry_history"]
    assert len(history) == 1, history
    assert history[0]["attempt"] == 1
    assert history[0]["worker"] == "crashed"
    assert history[0]["claimed_at"] == job["claimed_at"]

    # The crashed worker is still the last claimant, so its late completion counts.
    reply = api.worker_call("complete", MODEL, request_id, job["claim_id"], outputs={"late": 1})
    assert reply.status == 200, reply
    assert api.status_ok(request_id, MODEL)["status"] == "done"


def test_lease_expires_after_restart(start_server):
    server = start_server()
    api = server.api()
    request_id = api.submit_ok(MODEL, {})
    job = api.claim_ok(MODEL, claim_timeout=3, worker="w")
    server.kill()
    server.restart()
    api = server.api()
    assert api.status_ok(request_id, MODEL)["status"] == "running"
    body = api.wait_status(request_id, MODEL, "pending", timeout=8)
    assert body["retries"] == 1
    assert body["info"]["retry_history"][0]["claimed_at"] == job["claimed_at"]


def test_running_lease_survives_restart(start_server):
    server = start_server()
    api = server.api()
    request_id = api.submit_ok(MODEL, {})
    job = api.claim_ok(MODEL, claim_timeout=3600)
    assert server.stop() == 0
    server.restart()
    api = server.api()
    body = api.status_ok(request_id, MODEL)
    assert body["status"] == "running"
    assert body["lease_expires_at"] == job["lease_expires_at"]
    assert body["retries"] == 0
    assert api.claim(MODEL).status == 204


class Submitter(threading.Thread):
    """Submits jobs on its own connection until the server goes away."""

    def __init__(self, server, number):
        super().__init__(daemon=True)
        self.api = Api(server.port, server.key, timeout=10)
        self.number = number
        self.acked = []  # (request_id, payload)
        self.other = []  # non-200 replies

    def run(self):
        for i in range(5000):
            payload = {"thread": self.number, "i": i}
            try:
                reply = self.api.submit(MODEL, payload)
            except (OSError, http.client.HTTPException):
                return
            if reply.status == 200:
                self.acked.append((reply.json["request_id"], payload))
            else:
                self.other.append(reply)
        self.api.close()


class Waiter(threading.Thread):
    def __init__(self, server):
        super().__init__(daemon=True)
        self.api = Api(server.port, server.key, timeout=40)
        self.outcome = None

    def run(self):
        try:
            self.outcome = self.api.claim("test/nothing", wait=30).status
        except (OSError, http.client.HTTPException) as exc:
            self.outcome = type(exc).__name__


def test_sigterm_in_flight(start_server):
    server = start_server()
    waiter = Waiter(server)
    waiter.start()
    submitters = [Submitter(server, n) for n in range(4)]
    for thread in submitters:
        thread.start()
    wait_for(lambda: sum(len(t.acked) for t in submitters) >= 100, 20, "100 acknowledged submits")

    server.proc.send_signal(signal.SIGTERM)
    stopped_at = time.monotonic()
    try:
        status = server.proc.wait(10)
    finally:
        if server.proc.poll() is None:
            server.proc.kill()
            server.proc.wait()
    assert status == 0, f"exit status {status} after SIGTERM\n{server.log_tail()}"
    for thread in submitters:
        thread.join(10)
        assert not thread.is_alive(), "a submitter hung after the server stopped"
    waiter.join(10)
    assert not waiter.is_alive(), "a waiting claim kept its connection after the server stopped"
    assert time.monotonic() - stopped_at < 10
    for thread in submitters:
        for reply in thread.other:
            assert reply.status == 503, f"unexpected reply during shutdown: {reply!r}"

    server.restart()
    api = server.api()
    acked = [job for thread in submitters for job in thread.acked]
    for request_id, payload in acked:
        reply = api.status(request_id, MODEL)
        assert reply.status == 200, f"acknowledged job {request_id} lost: {reply!r}"
        assert parse_json(raw_member(reply.raw, "inputs")) == payload
        assert reply.json["status"] == "pending"
    assert api.metrics_ok(MODEL)["messages_waiting"] >= len(acked)
