"""Fault injection against the real server binary: a disk that fails during commits, a full
disk, a wall clock that jumps, and failures while a long-poll claim waits or a pipelined burst
is in flight.

The faults come from tests/fault/libfault.so, an LD_PRELOAD shim next to the binary (`make
test` builds it); the control file format is in tests/fault/README.md. The server has no
test-only code path: SQLite meets the failing fdatasync or pwrite64 as it would on a bad disk.
"""

import json
import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from support import (

    INFERQ_BIN,
    TIME_RE,
    http_request,
    parse_time,
    uuid7_time,
    wait_for,
)

pytestmark = pytest.mark.local_store_only(
    reason=("the fault shim fails fsync and WAL writes of SQLite and shifts the clock of the "
            "in-memory lease timers; the postgres store has neither"))

FAULT_LIB = INFERQ_BIN.parent / "libfault.so"
MODEL = "fault/model"

# Status of a request whose commit failed; every other request gets its usual status.
STORE_DOWN = 503


def server_is_asan():
    """Return True when INFERQ_BIN links the ASan runtime (a `make SANITIZE=...` build)."""
    return "build-san" in str(INFERQ_BIN) or b"libasan.so" in INFERQ_BIN.read_bytes()


class FaultControl:
    """The control file of libfault. Each set() replaces the whole file.

    Every version gets a new inode that stays linked under history/. The shim compares the
    file's identity at each intercepted call, so it applies every change at its next call.
    """

    def __init__(self, directory):
        self.directory = Path(directory)
        self.path = self.directory / "control"
        self.history = self.directory / "history"
        self.history.mkdir(parents=True)
        self.version = 0
        self.set("off")

    def set(self, *lines):
        self.version += 1
        tmp = self.directory / f"control.{self.version}"
        tmp.write_text(f"# version {self.version}\n" + "".join(line + "\n" for line in lines))
        os.link(tmp, self.history / str(self.version))
        os.replace(tmp, self.path)


@pytest.fixture
def fault_server(start_server, tmp_path, monkeypatch):
    """Return a function that starts a server under libfault: fault_server(**flags) ->
    (server, control). The shim's settings start all off.
    """
    if not FAULT_LIB.exists():
        pytest.fail(f"fault shim not found at {FAULT_LIB}; build it with `make test` or "
                    f"`make {FAULT_LIB.relative_to(INFERQ_BIN.parent.parent)}`")
    control = FaultControl(tmp_path / "fault")
    monkeypatch.setenv("INFERQ_FAULT_CONTROL", str(control.path))
    monkeypatch.setenv("LD_PRELOAD", str(FAULT_LIB))
    if server_is_asan():
        # ASan wants its runtime first in the preload order; the shim comes first here.
        options = os.environ.get("ASAN_OPTIONS", "")
        monkeypatch.setenv("ASAN_OPTIONS",
                           (options + ":" if options else "") + "verify_asan_link_order=0")

    def start(**flags):
        server = start_server(**flags)
        return server, control

    return start


def check_store_unavailable(reply, cause):
    """Check a 503 of a failed commit: code, type, Retry-After, and a message with the cause."""
    assert reply.status == 503, f"expected 503 store_unavailable, got {reply!r}"
    assert reply.headers.get("retry-after", "").isdigit(), f"no Retry-After: {reply.headers}"
    body = reply.json
    assert body["code"] == "store_unavailable", body
    assert body["type"] == "server_error", body
    message = body["message"].lower()
    assert cause in message, f"message does not name the cause {cause!r}: {body['message']}"
    assert "retry" in message, f"message does not say to retry: {body['message']}"
    return body


def readyz(api):
    return api.request("GET", "/readyz")


def claim_all(api, model, limit=200):
    """Claim every pending job of model and return the claim bodies (bounded by limit)."""
    claimed = []
    for _ in range(limit):
        reply = api.claim(model, claim_timeout=300)
        if reply.status == 204:
            return claimed
        assert reply.status == 200, f"claim failed: {reply!r}"
        claimed.append(reply.json)
    pytest.fail(f"more than {limit} jobs pending on {model}")


def markers_of(claims):
    return sorted(body["payload"]["marker"] for body in claims)


def log_has(server, *words):
    """Return the first log line that contains every word, or None. A thread reads the
    server's output, so a line logged just before a response may arrive after it: wait for
    a line with wait_for rather than assert it at once."""
    for line in list(server.log):
        if all(word in line for word in words):
            return line
    return None


# ---------------------------------------------------------------------------
# A disk that fails during commits.

COMMIT_FAULTS = {
    # fdatasync of the WAL or the database file fails: SQLite reports SQLITE_IOERR_FSYNC.
    "fsync-eio": (["fsync=eio"], "disk i/o error", ["disk I/O error", "check the disk"]),
    # Every write to the WAL fails with ENOSPC: SQLite reports SQLITE_FULL.
    "wal-enospc": (["files=inferq.db-wal", "write=enospc"], "disk is full",
                   ["database or disk is full", "the disk is full: free space"]),
}


@pytest.mark.parametrize("fault", sorted(COMMIT_FAULTS))
def test_failed_commit_applies_nothing(fault_server, fault):
    lines, cause, log_words = COMMIT_FAULTS[fault]
    server, control = fault_server()
    api = server.api()

    acked = {}
    for i in range(3):
        acked[f"ok-{i}"] = api.submit_ok(MODEL, {"marker": f"ok-{i}"})
    assert readyz(api).status == 200
    before = api.metrics_ok(MODEL)
    assert before == {"messages_waiting": 3, "messages_running": 0, "total_jobs": 3}

    control.set(*lines)

    # Submits fail whole: 503 with the cause, and nothing of them shows.
    for i in range(2):
        check_store_unavailable(api.submit(MODEL, {"marker": f"failed-{i}"}), cause)
    ready = readyz(api)
    assert ready.status == 503, f"/readyz while commits fail: {ready!r}"
    assert cause in ready.json["message"].lower(), ready.json
    assert api.metrics_ok(MODEL) == before

    # Reads of committed jobs keep working.
    for marker, job_id in acked.items():
        body = api.status_ok(job_id, MODEL)
        assert body["status"] == "pending", body
        assert body["inputs"] == {"marker": marker}, body

    # A claim fails too, and its job stays pending.
    check_store_unavailable(api.claim(MODEL, claim_timeout=300), cause)
    for job_id in acked.values():
        assert api.status_ok(job_id, MODEL)["status"] == "pending"
    assert api.metrics_ok(MODEL) == before

    wait_for(lambda: log_has(server, "commit of", "failed", *log_words), 5.0,
             f"a log line that names {log_words}")

    # The disk recovers: the next commit succeeds and /readyz follows.
    control.set("off")
    acked["ok-3"] = api.submit_ok(MODEL, {"marker": "ok-3"})
    ready = readyz(api)
    assert ready.status == 200, f"/readyz after the disk recovered: {ready!r}"
    assert api.metrics_ok(MODEL)["messages_waiting"] == 4

    # After a crash, exactly the acknowledged jobs exist, all pending.
    server.kill()
    server.restart()
    api = server.api()
    for job_id in acked.values():
        assert api.status_ok(job_id, MODEL)["status"] == "pending"
    assert api.metrics_ok(MODEL) == {"messages_waiting": 4, "messages_running": 0,
                                     "total_jobs": 4}
    claims = claim_all(api, MODEL)
    assert markers_of(claims) == sorted(acked)
    assert sorted(body["request_id"] for body in claims) == sorted(acked.values())


def test_failed_fsync_retry_with_key_runs_once(fault_server):
    """A failed fsync leaves its outcome unknown: the WAL may keep the commit, and a crash
    before the next commit recovers it although the request got 503. The same submit retried
    with its Idempotency-Key must then yield exactly one job, whichever way it went."""
    server, control = fault_server()
    api = server.api()
    kept = api.submit_ok(MODEL, {"marker": "ok-0"})
    body = {"model": MODEL, "payload": {"marker": "retried-0"}}
    headers = {"Idempotency-Key": "fsync-retry-1"}

    control.set("fsync=eio")
    failed = api.post("/v1/queue/submit", body, headers=headers)
    check_store_unavailable(failed, "disk i/o error")
    assert "idempotency-key" in failed.json["message"].lower(), failed.json
    control.set("off")

    # Crash before a later commit can overwrite the failed transaction's WAL frames.
    server.kill()
    server.restart()
    api = server.api()
    retried = api.post("/v1/queue/submit", body, headers=headers)
    assert retried.status == 200, retried
    again = api.post("/v1/queue/submit", body, headers=headers)
    assert again.json["requestId"] == retried.json["requestId"]
    assert api.status_ok(kept, MODEL)["status"] == "pending"
    assert sorted(markers_of(claim_all(api, MODEL))) == ["ok-0", "retried-0"]


def test_batch_behind_failed_commit_is_not_run(fault_server):
    """A request that arrives while a commit is on disk waits in the next batch, which the
    writer takes as soon as that commit ends. When the commit fails, the waiting batch may
    build on its changes, so it is rejected without running: both requests get 503, nothing of
    the second reaches the disk, and the next request after the failure commits as usual."""
    server, control = fault_server()
    api = server.api()
    committed = api.submit_ok(MODEL, {"marker": "committed"})

    # The next fdatasync waits 400 ms, then fails; later ones pass.
    control.set("fsync=eio", "fsync_count=1", "fsync_delay_ms=400")
    replies = {}

    def submit(marker):
        replies[marker] = server.api().submit(MODEL, {"marker": marker})

    first = threading.Thread(target=submit, args=("first",))
    first.start()
    # The second submit arrives while the first one's commit waits in fdatasync.
    time.sleep(0.15)
    second = threading.Thread(target=submit, args=("second",))
    second.start()
    first.join(10)
    second.join(10)
    control.set("off")

    check_store_unavailable(replies["first"], "disk i/o error")
    check_store_unavailable(replies["second"], "disk i/o error")
    # The server writes the line before its responses, but the test reads its log in a thread.
    wait_for(lambda: log_has(server, "commit of 1 changes failed, 1 more rolled back"), 5.0,
             "the log line of the failed commit (the second submit was not in flight behind "
             "the first)")
    ready = readyz(api)
    assert ready.status == 503, ready
    assert "not run, because the commit before it failed" in ready.json["message"], ready.json

    # The era of the failure is over: the next batch runs and commits.
    after = api.submit_ok(MODEL, {"marker": "after"})
    assert readyz(api).status == 200
    server.kill()
    server.restart()
    api = server.api()
    assert api.status_ok(committed, MODEL)["status"] == "pending"
    assert api.status_ok(after, MODEL)["status"] == "pending"
    markers = markers_of(claim_all(api, MODEL))
    assert "second" not in markers, f"the rejected batch reached the disk: {markers}"
    assert {"committed", "after"} <= set(markers), markers


def test_failed_commit_undoes_worker_calls(fault_server):
    """Complete, fail, heartbeat, release and cancel that get 503 change nothing."""
    server, control = fault_server()
    api = server.api()
    ids = [api.submit_ok(MODEL, {"marker": f"ok-{i}"}) for i in range(5)]
    claims = {body["request_id"]: body for body in (api.claim_ok(MODEL) for _ in range(4))}
    pending = sorted(set(ids) - set(claims))
    assert len(pending) == 1
    running = sorted(claims)
    leases = {job_id: api.status_ok(job_id, MODEL)["lease_expires_at"] for job_id in running}

    control.set("fsync=eio")
    cause = "disk i/o error"
    first, second, third, fourth = running
    check_store_unavailable(api.worker_call("complete", MODEL, first,
                                            claims[first]["claim_id"], outputs={"x": 1}), cause)
    check_store_unavailable(api.worker_call("fail", MODEL, second, claims[second]["claim_id"],
                                            error="worker gave up"), cause)
    check_store_unavailable(api.worker_call("release", MODEL, third,
                                            claims[third]["claim_id"]), cause)
    check_store_unavailable(api.worker_call("heartbeat", MODEL, fourth,
                                            claims[fourth]["claim_id"], info={"step": 2}), cause)
    check_store_unavailable(api.post("/v1/queue/cancel", {"model": MODEL,
                                                          "request_id": pending[0]}), cause)

    for job_id in running:
        body = api.status_ok(job_id, MODEL)
        assert body["status"] == "running", body
        assert body.get("info", {}).get("step") is None, body
        assert body["lease_expires_at"] == leases[job_id], body
    assert api.status_ok(pending[0], MODEL)["status"] == "pending"

    # The same calls succeed once the disk recovers, with the same claim ids.
    control.set("off")
    reply = api.worker_call("complete", MODEL, first, claims[first]["claim_id"],
                            outputs={"x": 1})
    assert reply.status == 200, reply
    assert api.status_ok(first, MODEL)["status"] == "done"
    reply = api.worker_call("heartbeat", MODEL, fourth, claims[fourth]["claim_id"])
    assert reply.status == 200, reply

    server.kill()
    server.restart()
    api = server.api()
    states = {job_id: api.status_ok(job_id, MODEL)["status"] for job_id in ids}
    assert states == {first: "done", second: "running", third: "running", fourth: "running",
                      pending[0]: "pending"}


def test_lease_expiry_while_disk_fails(fault_server):
    """A lease that ends while commits fail is retried at a bounded rate, then expires once."""
    server, control = fault_server()
    api = server.api()
    job_id = api.submit_ok(MODEL, {"marker": "ok-0"})
    claim = api.claim_ok(MODEL, claim_timeout=1)

    control.set("fsync=eio")
    wait_for(lambda: log_has(server, "lease expired"), 5, "the lease timer to fire")
    # The expiry cannot be saved, so it is undone and the job stays running.
    assert api.status_ok(job_id, MODEL)["status"] == "running"
    # A second of failing commits: the retries must be paced, not a busy loop.
    window_start = len(server.log)
    time.sleep(1.0)
    attempts = [line for line in server.log[window_start:] if "commit of" in line]
    assert len(attempts) <= 5, (
        f"{len(attempts)} failed commits logged within 1 s after the lease ended; "
        f"first lines:\n" + "\n".join(attempts[:5]))

    control.set("off")
    body = api.wait_status(job_id, MODEL, "pending", timeout=5)
    assert body["retries"] == 1, body
    assert len(body["info"]["retry_history"]) == 1, body
    assert body["info"]["retry_history"][0]["claimed_at"] == claim["claimed_at"], body
    assert readyz(api).status == 200


# ---------------------------------------------------------------------------
# Clock jumps: leases run on the monotonic clock, stored times follow the wall clock.


def wall_offset_text(offset_ms):
    return f"wall_offset_ms={offset_ms:+d}"


@pytest.mark.parametrize("offset_ms", [3600000, -3600000], ids=["forward", "backward"])
def test_wall_clock_jump_keeps_lease(fault_server, offset_ms):
    claim_timeout = 5
    server, control = fault_server(max_retries=3)
    api = server.api()
    job_id = api.submit_ok(MODEL, {"marker": "ok-0"})

    sent = time.monotonic()
    claim = api.claim_ok(MODEL, claim_timeout=claim_timeout)
    answered = time.monotonic()
    assert claim["request_id"] == job_id
    control.set(wall_offset_text(offset_ms))

    # The lease must hold until claim_timeout has passed on the monotonic clock.
    def left_running():
        body = api.status_ok(job_id, MODEL)
        return (time.monotonic(), body) if body["status"] != "running" else None

    ended, body = wait_for(left_running, claim_timeout + 5, "the lease to expire", interval=0.05)
    assert ended >= sent + claim_timeout - 0.05, (
        f"lease ended {ended - sent:.2f} s after the claim, before its {claim_timeout} s")
    assert ended <= answered + claim_timeout + 3, f"lease ended {ended - answered:.2f} s late"
    assert body["status"] == "pending", body
    assert body["retries"] == 1, body
    history = body["info"]["retry_history"]
    assert len(history) == 1, history
    expired_at = parse_time(history[0]["expired_at"])
    assert abs(expired_at - (time.time() + offset_ms / 1000)) < 30, history

    # New jobs take their times from the (jumped) wall clock, as valid RFC 3339.
    new_id = api.submit_ok(MODEL, {"marker": "ok-1"})
    created = api.status_ok(new_id, MODEL)["created_at"]
    assert TIME_RE.match(created), created
    assert abs(parse_time(created) - (time.time() + offset_ms / 1000)) < 30, created
    assert abs(uuid7_time(new_id) - (time.time() + offset_ms / 1000)) < 30, new_id

    # A new claim under the jumped clock gets a lease of claim_timeout on that clock.
    again = api.claim_ok(MODEL, claim_timeout=claim_timeout)
    lease = parse_time(again["lease_expires_at"]) - parse_time(again["claimed_at"])
    assert claim_timeout - 1 <= lease <= claim_timeout + 1, again

    control.set("off")
    assert server.running, server.log_tail()
    assert readyz(api).status == 200


@pytest.mark.parametrize("offset_ms", [3600000, -3600000], ids=["forward", "backward"])
def test_clock_jump_then_failed_commit_keeps_lease(fault_server, offset_ms):
    claim_timeout = 4
    server, control = fault_server()
    api = server.api()
    job_id = api.submit_ok(MODEL, {"marker": "ok-0"})
    sent = time.monotonic()
    claim = api.claim_ok(MODEL, claim_timeout=claim_timeout)
    answered = time.monotonic()

    control.set(wall_offset_text(offset_ms), "fsync=eio")
    reply = api.worker_call("heartbeat", MODEL, job_id, claim["claim_id"])
    check_store_unavailable(reply, "disk i/o error")
    control.set(wall_offset_text(offset_ms))

    def left_running():
        body = api.status_ok(job_id, MODEL)
        return (time.monotonic(), body) if body["status"] != "running" else None

    ended, body = wait_for(left_running, claim_timeout + 5, "the lease to expire", interval=0.05)
    assert ended >= sent + claim_timeout - 0.05, (
        f"lease ended {ended - sent:.2f} s after the claim, before its {claim_timeout} s")
    assert ended <= answered + claim_timeout + 3, f"lease ended {ended - answered:.2f} s late"
    assert body["status"] == "pending", body


# ---------------------------------------------------------------------------
# A commit that fails while a long-poll claim waits.


def test_failed_commit_during_long_poll(fault_server):
    server, control = fault_server()
    api = server.api()
    barrier_id = api.submit_ok("fault/other", {"marker": "barrier"})

    waiter = server.raw(timeout=20)
    body = json.dumps({"model": MODEL, "wait": 5, "claim_timeout": 300}).encode()
    waiter.send(http_request("POST", "/v1/queue/claim", body, {"Content-Type":
                                                             "application/json"}, server.key))
    result = {}

    def read_claim():
        try:
            result["reply"] = waiter.read_response()
        except Exception as err:  # reported below by the main thread
            result["error"] = err

    reader = threading.Thread(target=read_claim, daemon=True)
    reader.start()
    # The claim's bytes were in the server's socket buffer before this request was sent, so
    # the server has parked the claim by the time it answers this one.
    api.status_ok(barrier_id, "fault/other")

    control.set("fsync=eio")
    check_store_unavailable(api.submit(MODEL, {"marker": "failed-0"}), "disk i/o error")
    control.set("off")
    kept = api.submit_ok(MODEL, {"marker": "ok-0"})

    reader.join(15)
    assert not reader.is_alive(), "the long-poll claim got no answer within 15 s"
    assert "error" not in result, f"reading the claim failed: {result.get('error')!r}"
    reply = result["reply"]
    assert reply.status in (200, 204, STORE_DOWN), reply
    status = api.status_ok(kept, MODEL)
    if reply.status == 200:
        # The waiter may only get the acknowledged job, never the one whose commit failed.
        assert reply.json["payload"] == {"marker": "ok-0"}, reply
        assert reply.json["request_id"] == kept
        assert status["status"] == "running", status
    else:
        assert status["status"] == "pending", status

    server.kill()
    server.restart()
    api = server.api()
    assert api.metrics_ok(MODEL)["total_jobs"] == 1
    assert api.status_ok(kept, MODEL)["status"] == status["status"]


# ---------------------------------------------------------------------------
# A failure in the middle of a pipelined burst on several connections.

CONNECTIONS = 3  # per wave
PER_CONNECTION = 4  # pipelined requests on each


class Op:
    """One request of the burst, with how to apply it to the expected state when it is 200."""

    def __init__(self, kind, job_id=None, claim_id=None, marker=None):
        self.kind = kind
        self.job_id = job_id
        self.claim_id = claim_id
        self.marker = marker
        self.reply = None

    def request(self, key):
        if self.kind == "submit":
            path, body = "/v1/queue/submit", {"model": MODEL, "payload": {"marker": self.marker}}
        elif self.kind == "cancel":
            path, body = "/v1/queue/cancel", {"model": MODEL, "request_id": self.job_id}
        elif self.kind == "claim":
            path, body = "/v1/queue/claim", {"model": "fault/claims", "claim_timeout": 300}
        else:
            path = f"/v1/queue/{self.kind}"
            body = {"model": MODEL, "request_id": self.job_id, "claim_id": self.claim_id}
            if self.kind == "complete":
                body["outputs"] = {"done_by": self.job_id}
            elif self.kind == "fail":
                body["error"] = "burst failure"
        data = json.dumps(body).encode()
        return http_request("POST", path, data, {"Content-Type": "application/json"}, key)


def test_failure_inside_pipelined_burst(fault_server):
    server, control = fault_server()
    api = server.api()

    # Jobs for the burst: pending ones to cancel, running ones to finish, and a second model
    # whose jobs the burst claims. Every op touches its own job, so ops commute.
    running = []
    for i in range(12):
        job_id = api.submit_ok(MODEL, {"marker": f"run-{i}"})
        claim = api.claim_ok(MODEL)
        assert claim["request_id"] == job_id, claim
        running.append((job_id, claim["claim_id"]))
    to_cancel = [api.submit_ok(MODEL, {"marker": f"cancel-{i}"}) for i in range(6)]
    claimable = [api.submit_ok("fault/claims", {"marker": f"claim-{i}"}) for i in range(8)]

    ops = [Op("cancel", job_id) for job_id in to_cancel]
    kinds = ["complete", "fail", "release", "heartbeat"]
    ops += [Op(kinds[i % 4], job_id, claim_id) for i, (job_id, claim_id) in enumerate(running)]
    ops += [Op("claim") for _ in range(8)]
    ops += [Op("submit", marker=f"burst-{i}") for i in range(22)]
    assert len(ops) == 4 * CONNECTIONS * PER_CONNECTION
    # Interleave the kinds, so every wave mixes them.
    ops = ops[::4] + ops[1::4] + ops[2::4] + ops[3::4]
    waves = [ops[w * CONNECTIONS * PER_CONNECTION:(w + 1) * CONNECTIONS * PER_CONNECTION]
             for w in range(4)]

    # Each fdatasync takes 150 ms and only the second one fails: the first commit succeeds,
    # the second fails and takes the batch collected meanwhile with it, later ones succeed.
    # Which requests fall into which batch depends on timing, so the checks below hold for
    # any split.
    control.set("fsync=eio", "fsync_skip=1", "fsync_count=1", "fsync_delay_ms=150")

    def send_wave(wave):
        conns = []
        for c in range(CONNECTIONS):
            conn = server.raw(timeout=15)
            part = wave[c * PER_CONNECTION:(c + 1) * PER_CONNECTION]
            conn.send(b"".join(op.request(server.key) for op in part))
            conns.append((conn, part))
        return conns

    def read_wave(conns):
        for conn, part in conns:
            for op in part:
                op.reply = conn.read_response()

    first = send_wave(waves[0])
    second = send_wave(waves[1])  # sent while the first commit is in flight
    read_wave(first)
    third = send_wave(waves[2])  # sent while the second (failing) commit is in flight
    read_wave(second)
    read_wave(third)
    fourth = send_wave(waves[3])
    read_wave(fourth)
    control.set("off")

    normal = {"submit": 200, "cancel": 200, "claim": 200, "complete": 200, "fail": 200,
              "release": 200, "heartbeat": 200}
    for op in ops:
        assert op.reply.status in (normal[op.kind], STORE_DOWN), (op.kind, op.reply)
        if op.reply.status == STORE_DOWN:
            assert op.reply.json["code"] == "store_unavailable", op.reply
            assert op.reply.headers.get("retry-after"), op.reply
    failed = [op for op in ops if op.reply.status == STORE_DOWN]
    assert failed, "no request of the burst met the failed commit"
    assert len(failed) < len(ops), "every request of the burst failed"
    wait_for(lambda: log_has(server, "commit of", "failed", "disk I/O error"), 5.0,
             "the log line of the failed commit")

    # The expected state: the ops that got 200 applied, nothing of the others.
    expected = {}
    for job_id in to_cancel:
        expected[job_id] = "pending"
    for job_id, _ in running:
        expected[job_id] = "running"
    for job_id in claimable:
        expected[job_id] = "pending"
    after = {"cancel": "canceled", "complete": "done", "fail": "failed", "release": "pending",
             "heartbeat": "running"}
    claimed_ids = []
    burst_submits = {}
    for op in ops:
        if op.reply.status != 200:
            continue
        if op.kind == "submit":
            burst_submits[op.reply.json["request_id"]] = op.marker
            expected[op.reply.json["request_id"]] = "pending"
        elif op.kind == "claim":
            claimed_ids.append(op.reply.json["request_id"])
            expected[op.reply.json["request_id"]] = "running"
        else:
            expected[op.job_id] = after[op.kind]
    assert len(set(claimed_ids)) == len(claimed_ids), "one job was handed to two claims"

    def check_state(api):
        actual = {job_id: api.status_ok(job_id, MODEL if job_id not in claimable
                                        else "fault/claims")["status"]
                  for job_id in expected}
        assert actual == expected
        metrics = api.metrics_ok(MODEL)
        want_waiting = sum(1 for job_id, state in expected.items()
                           if state == "pending" and job_id not in claimable)
        assert metrics["messages_waiting"] == want_waiting, metrics

    check_state(api)
    server.kill()
    server.restart()
    api = server.api()
    check_state(api)

    # No submit that got 503 left a job behind.
    claims = claim_all(api, MODEL)
    burst_claimed = {body["request_id"]: body["payload"]["marker"] for body in claims
                     if body["payload"]["marker"].startswith("burst-")}
    assert burst_claimed == burst_submits


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_no_request_served_during_start(fault_server):
    """The first start commits the admin key while the loop runs, but serves nobody yet.

    The port is bound and listening from the start, so a client can connect at once; its
    request must be answered only after the server logs "listening on", when the store is
    loaded and the commit engine runs. Slow fsyncs stretch the start, and the access log
    line of the request must come after the "listening on" line.
    """
    port = free_port()
    started = {}

    def start():
        started["server"], _ = fault_server(listen=f"127.0.0.1:{port}", access_log=True)

    # No server runs yet, so writing the control file in place is safe.
    control = Path(os.environ["INFERQ_FAULT_CONTROL"])
    control.write_text("fsync_delay_ms=200\n")
    thread = threading.Thread(target=start)
    thread.start()
    conn = None
    for _ in range(1000):
        try:
            conn = socket.create_connection(("127.0.0.1", port), timeout=30)
            break
        except OSError:
            time.sleep(0.01)
    assert conn is not None, "the server never bound its port"
    with conn:
        conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        reply = conn.recv(4096)
    thread.join(60)
    assert not thread.is_alive(), "the server did not start"
    assert reply.startswith(b"HTTP/1.1 200"), reply

    server = started["server"]
    wait_for(lambda: any("/healthz" in line for line in server.log), 5.0, "the access log line")
    listening = next(i for i, line in enumerate(server.log) if "listening on" in line)
    served = next(i for i, line in enumerate(server.log) if "/healthz" in line)
    assert served > listening, "a request was served before the server logged that it listens"


@pytest.mark.parametrize("signum", [signal.SIGHUP, signal.SIGTERM])
def test_signal_during_start_waits_for_start(fault_server, tmp_path, signum):
    """A SIGHUP or SIGTERM that arrives while the server starts takes effect once it has
    started: a reload (the server keeps running) or a graceful stop (exit status 0), never
    the signal's default action, which kills the process. Slow fsyncs stretch the start, and
    the port is bound before the store opens, so a connect marks a start in progress."""
    port = free_port()
    Path(os.environ["INFERQ_FAULT_CONTROL"]).write_text("fsync_delay_ms=300\n")
    log = tmp_path / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(INFERQ_BIN), "serve", "--listen", f"127.0.0.1:{port}",
                                 "--data-dir", str(tmp_path / "data")],
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: port_open(port), 10, "the server to bind its port")
        assert "listening on" not in log.read_text(), "the start ended before the signal"
        proc.send_signal(signum)
        if signum == signal.SIGTERM:
            assert proc.wait(30) == 0, log.read_text()
            assert "listening on" in log.read_text()
            return
        wait_for(lambda: "listening on" in log.read_text() or proc.poll() is not None, 30,
                 "the start to end")
        assert proc.poll() is None, log.read_text()
        with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
            conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert conn.recv(4096).startswith(b"HTTP/1.1 200")
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(30)


def port_open(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False
