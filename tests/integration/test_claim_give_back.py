"""A claim whose response cannot be delivered gives its jobs back at once.

The server claims jobs for a worker and only then sends the response. The worker's client may
close its connection, or end its side of it, before that response goes out. Then the server
puts the claimed jobs back to pending at once, fenced on their claim ids, as a release does.
`retries` stays unchanged, and the history gets a "released" event whose detail gives the
reason. Every claim here requests a lease of an hour, so a job left to its lease fails the
checks, which all end within seconds.

Each test widens the window between the claim and its response, and holds it open:
- postgres store: a psql session of the test locks the jobs table, so the claim's UPDATE waits
  in the database while the client goes away;
- local store: the fault shim (tests/fault/libfault.so) delays each fsync, so the claim's
  response waits for its commit while the client goes away.

The tests know that the server has read the client's FIN when a request sent afterwards on
another connection is answered: the FIN was in the server's socket buffer before that request
was sent, and the server reads every ready socket of a loop pass before it sends that pass's
responses.
"""

import json
import os
import select
import socket
import urllib.parse

import pytest

from prometheus_text import parse
from support import INFERQ_BIN, http_request, read_all, wait_for

MODEL = "test/give-back"
LEASE_S = 3600
GIVE_BACK_DETAIL = ("given back because the client closed its connection before the claim "
                    "response was sent")
WORKER = "gone-worker"
RETRIEVE = "/internal/v1/queue/retrieve"


# ---------------------------------------------------------------------------
# Helpers for both stores.


def claim_bytes(server, **fields):
    body = json.dumps({"model": MODEL, "claim_timeout": LEASE_S, "worker": WORKER,
                       **fields}).encode()
    return http_request("POST", "/v1/queue/claim", body, {"Content-Type": "application/json"},
                        server.key)


def retrieve_bytes(server, timeout="0s"):
    query = urllib.parse.urlencode({"model": MODEL, "timeout": timeout, "hostname": WORKER,
                                    "claim_timeout": LEASE_S})
    return http_request("GET", f"{RETRIEVE}?{query}", b"", None, server.key)


# The ways a worker claims: (name, request bytes, jobs the claim takes).
CLAIMS = {
    "single": (lambda server: claim_bytes(server), 1),
    "batch": (lambda server: claim_bytes(server, max_jobs=3), 3),
    "sprocket": (lambda server: retrieve_bytes(server), 1),
}


def open_claim(server, request):
    """Send a claim request on a new connection and return the socket, unread."""
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    sock.sendall(request)
    return sock


def barrier(api):
    """Return once the server has read everything sent to it before this call.

    /healthz touches neither the disk nor the database, so it is served while the claim
    still waits.
    """
    reply = api.get("/healthz")
    assert reply.status == 200, reply


def job_view(api, request_id):
    reply = api.get(f"/v1/admin/jobs/{request_id}")
    assert reply.status == 200, reply
    return reply.json


def released_events(api, request_id):
    return [e for e in job_view(api, request_id)["history"] if e["event"] == "released"]


def wait_given_back(api, ids):
    wait_for(lambda: all(released_events(api, i) for i in ids), 15,
             f"the {len(ids)} claimed jobs to be given back")


def job_counter(api, event):
    reply = api.get("/metrics")
    assert reply.status == 200, reply
    samples = parse(reply.raw.decode()).samples(f"inferq_jobs_{event}_total")
    values = [value for labels, value in samples if labels.get("model") == MODEL]
    return values[0] if values else 0


def waiting_workers(api):
    reply = api.get("/metrics")
    assert reply.status == 200, reply
    samples = parse(reply.raw.decode()).samples("inferq_waiting_workers")
    values = [value for labels, value in samples if labels.get("model") == MODEL]
    return values[0] if values else 0


def check_given_back(server, api, ids):
    """Check that each job of ids is pending again, not retried, with the give-back in its
    history, counted and logged, and that another worker can claim them all in order."""
    for request_id in ids:
        status = api.status_ok(request_id, MODEL)
        assert status["status"] == "pending", status
        assert status["retries"] == 0, status
        history = job_view(api, request_id)["history"]
        assert [(e["event"], e.get("worker")) for e in history] == [
            ("submitted", None), ("claimed", WORKER), ("released", WORKER)], history
        assert history[2]["detail"] == GIVE_BACK_DETAIL, history
        logged = [line for line in server.log
                  if "claim response not sent" in line and request_id in line]
        assert len(logged) == 1, server.log_tail()
        assert " info " in logged[0], logged[0]
        assert f"model={MODEL}" in logged[0], logged[0]
        assert f"worker={WORKER}" in logged[0], logged[0]
    assert job_counter(api, "undelivered") == len(ids)
    assert job_counter(api, "released") == 0
    assert job_counter(api, "claimed") == len(ids)

    taken = [api.claim_ok(MODEL, claim_timeout=60)["request_id"] for _ in ids]
    assert taken == ids


# ---------------------------------------------------------------------------
# Postgres store: a lock of the test's session holds the claim in the database.


def uri_db(uri):
    return uri.split("///", 1)[1].split("?", 1)[0]


class TableLock:
    """A psql session that locks inferq_jobs until release(); the claim's UPDATE waits."""

    def __init__(self, cluster, uri):
        self.cluster = cluster
        self.db = uri_db(uri)
        self.session = cluster.session(self.db)

    def run(self, sql, marker):
        """Run sql, then wait until the session printed marker, so sql has taken effect.
        Returns the lines sql printed."""
        self.session.stdin.write(f"{sql}\nSELECT '{marker}';\n")
        self.session.stdin.flush()
        printed = []
        for line in self.session.stdout:
            if line.strip() == marker:
                return printed
            printed.append(line.strip())
        self.session.wait(30)
        pytest.fail(f"psql ended before {marker!r}: {self.session.stderr.read()}")

    def lock_table(self):
        self.run("BEGIN;\nLOCK TABLE inferq_jobs IN ACCESS EXCLUSIVE MODE;", "locked")

    def claims_blocked(self):
        """Return the number of claim UPDATEs that wait for a lock in this database."""
        rows = self.cluster.psql(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock' AND query LIKE 'UPDATE inferq_jobs SET state = 1%'",
            self.db)
        return int(rows[0][0])

    def release(self):
        self.session.stdin.write("COMMIT;\n")
        self.session.stdin.close()
        assert self.session.wait(30) == 0, self.session.stderr.read()

    def abort(self):
        if self.session.poll() is None:
            self.session.kill()
            self.session.wait(30)


@pytest.fixture
def pg_node(start_server, pg_cluster):
    """A node on a fresh PostgreSQL database, with the lock helper of that database."""
    uri = pg_cluster.new_database()
    node = start_server(store=uri, claim_timeout=LEASE_S, pg_poll_interval="50ms")
    lock = TableLock(pg_cluster, uri)
    yield node, lock
    lock.abort()


@pytest.mark.parametrize("kind", sorted(CLAIMS))
def test_pg_claim_of_closed_client_given_back(pg_node, kind):
    node, lock = pg_node
    api = node.api()
    request, count = CLAIMS[kind]
    ids = [api.submit_ok(MODEL, {"n": i}) for i in range(count)]

    lock.lock_table()
    sock = open_claim(node, request(node))
    wait_for(lock.claims_blocked, 10, "the claim to wait for the table lock")
    sock.close()
    barrier(api)
    lock.release()

    wait_given_back(api, ids)
    check_given_back(node, api, ids)


def test_pg_long_poll_of_closed_client_given_back(pg_node):
    """The claim that a waiting worker's wake-up starts (the poll here) meets a closed client."""
    node, lock = pg_node
    api = node.api()
    job = api.submit_ok(MODEL, {})

    # The test's row lock hides the job from the claim (SKIP LOCKED), so the claim waits.
    assert lock.run(f"BEGIN;\nSELECT id FROM inferq_jobs WHERE id = '{job}' FOR UPDATE;",
                    "row") == [job]
    sock = open_claim(node, claim_bytes(node, wait=30))
    wait_for(lambda: waiting_workers(api) == 1, 10, "the claim to wait for a job")
    lock.run("LOCK TABLE inferq_jobs IN ACCESS EXCLUSIVE MODE;", "locked")
    wait_for(lock.claims_blocked, 10, "the waiting claim's next attempt to wait for the lock")
    sock.close()
    barrier(api)
    lock.release()

    wait_given_back(api, [job])
    check_given_back(node, api, [job])
    assert waiting_workers(api) == 0


def test_pg_half_closed_client_gets_no_job(pg_node):
    node, lock = pg_node
    api = node.api()
    job = api.submit_ok(MODEL, {})

    lock.lock_table()
    sock = open_claim(node, claim_bytes(node))
    wait_for(lock.claims_blocked, 10, "the claim to wait for the table lock")
    sock.shutdown(socket.SHUT_WR)
    barrier(api)
    lock.release()

    data = read_all(sock)
    sock.close()
    assert data.startswith(b"HTTP/1.1 204 No Content\r\n"), data
    check_given_back(node, api, [job])


def test_pg_claim_of_open_client_delivered(pg_node):
    """The same window with a client that stays: the job is delivered, not given back."""
    node, lock = pg_node
    api = node.api()
    job = api.submit_ok(MODEL, {})

    lock.lock_table()
    conn = node.raw(timeout=20)
    conn.send(claim_bytes(node))
    wait_for(lock.claims_blocked, 10, "the claim to wait for the table lock")
    barrier(api)
    lock.release()

    reply = conn.read_response()
    conn.close()
    assert reply.status == 200, reply
    assert reply.json["request_id"] == job
    assert api.status_ok(job, MODEL)["status"] == "running"
    assert released_events(api, job) == []
    assert job_counter(api, "undelivered") == 0


# ---------------------------------------------------------------------------
# Local store: a slow fsync delays the claim's response until its commit.

FAULT_LIB = INFERQ_BIN.parent / "libfault.so"
FSYNC_DELAY_MS = 3000  # far longer than the server needs to read a FIN between two requests

local_only = pytest.mark.local_store_only(
    reason="the fault shim delays the fsync of SQLite; the postgres store has none")


class SlowDisk:
    """The control file of libfault: each set() replaces it by a new inode, kept linked, so
    the shim reads every change at its next intercepted call."""

    def __init__(self, directory):
        self.directory = directory
        self.path = directory / "control"
        self.version = 0
        self.set("off")

    def set(self, *lines):
        self.version += 1
        tmp = self.directory / f"control.{self.version}"
        tmp.write_text("".join(line + "\n" for line in lines))
        os.link(tmp, self.directory / f"kept.{self.version}")
        os.replace(tmp, self.path)

    def slow(self):
        self.set(f"fsync_delay_ms={FSYNC_DELAY_MS}")


@pytest.fixture
def local_node(start_server, tmp_path, monkeypatch):
    """A local-store node under libfault, with its control file, all faults off."""
    if not FAULT_LIB.exists():
        pytest.fail(f"fault shim not found at {FAULT_LIB}; build it with `make test` or "
                    f"`make {FAULT_LIB.relative_to(INFERQ_BIN.parent.parent)}`")
    directory = tmp_path / "fault"
    directory.mkdir()
    disk = SlowDisk(directory)
    monkeypatch.setenv("INFERQ_FAULT_CONTROL", str(disk.path))
    monkeypatch.setenv("LD_PRELOAD", str(FAULT_LIB))
    if "build-san" in str(INFERQ_BIN):
        options = os.environ.get("ASAN_OPTIONS", "")
        monkeypatch.setenv("ASAN_OPTIONS",
                           (options + ":" if options else "") + "verify_asan_link_order=0")
    node = start_server(claim_timeout=LEASE_S)
    return node, disk


def check_still_uncommitted(api, ids):
    """Check that the claim of ids had not committed when the server read the client's FIN:
    status shows committed state only, so a job still pending there was claimed but not yet
    committed. Else the delay was too short for this machine and the test proves nothing."""
    for request_id in ids:
        status = api.status_ok(request_id, MODEL)["status"]
        assert status == "pending", (
            f"the claim committed before the server read the client's FIN (status {status}); "
            f"FSYNC_DELAY_MS={FSYNC_DELAY_MS} is too short for this machine")


@local_only
@pytest.mark.parametrize("kind", sorted(CLAIMS))
def test_local_claim_of_closed_client_given_back(local_node, kind):
    node, disk = local_node
    api = node.api()
    request, count = CLAIMS[kind]
    ids = [api.submit_ok(MODEL, {"n": i}) for i in range(count)]

    disk.slow()
    sock = open_claim(node, request(node))
    barrier(api)  # the claim took the jobs in memory; its commit waits for the slow fsync
    sock.close()
    barrier(api)
    check_still_uncommitted(api, ids)
    disk.set("off")

    wait_given_back(api, ids)
    check_given_back(node, api, ids)


def has_bytes(sock):
    """Return True when sock has bytes to read now."""
    return bool(select.select([sock], [], [], 0)[0])


@local_only
def test_local_long_poll_of_closed_client_given_back(local_node):
    node, disk = local_node
    api = node.api()
    sock = open_claim(node, claim_bytes(node, wait=30))
    wait_for(lambda: waiting_workers(api) == 1, 10, "the claim to wait for a job")

    # The submit hands the job to the waiting claim at once, and both wait for one slow commit.
    disk.slow()
    submitter = node.raw(timeout=20)
    submitter.send(http_request("POST", "/v1/queue/submit",
                                json.dumps({"model": MODEL, "payload": {}}).encode(),
                                {"Content-Type": "application/json"}, node.key))
    wait_for(lambda: waiting_workers(api) == 0, 10, "the waiting claim to take the job")
    sock.close()
    barrier(api)
    assert not has_bytes(submitter.sock), (
        f"the submit committed before the server read the client's FIN; "
        f"FSYNC_DELAY_MS={FSYNC_DELAY_MS} is too short for this machine")
    disk.set("off")
    reply = submitter.read_response()
    submitter.close()
    assert reply.status == 200, reply
    job = reply.json["requestId"]

    wait_given_back(api, [job])
    check_given_back(node, api, [job])


@local_only
def test_local_half_closed_client_gets_no_job(local_node):
    node, disk = local_node
    api = node.api()
    job = api.submit_ok(MODEL, {})

    disk.slow()
    sock = open_claim(node, claim_bytes(node))
    barrier(api)
    sock.shutdown(socket.SHUT_WR)
    barrier(api)
    check_still_uncommitted(api, [job])
    disk.set("off")

    data = read_all(sock)
    sock.close()
    assert data.startswith(b"HTTP/1.1 204 No Content\r\n"), data
    check_given_back(node, api, [job])


@local_only
def test_local_give_back_skips_job_that_changed(local_node):
    """A job that changed between the claim and the response keeps its change. Here a
    Sprocket update, which carries no claim id, completes it before the claim commits."""
    node, disk = local_node
    api = node.api()
    job = api.submit_ok(MODEL, {})

    disk.slow()
    sock = open_claim(node, claim_bytes(node))
    barrier(api)
    updater = node.raw(timeout=20)
    updater.send(http_request("POST", "/internal/v1/videos/status",
                              json.dumps({"model": MODEL, "request_id": job, "status": "done",
                                          "payload": {"ok": True}}).encode(),
                              {"Content-Type": "application/json"}, node.key))
    barrier(api)  # the update completed the running job in memory
    sock.close()
    barrier(api)
    check_still_uncommitted(api, [job])
    disk.set("off")
    reply = updater.read_response()
    updater.close()
    assert reply.status == 200, reply

    status = api.status_ok(job, MODEL)
    assert status["status"] == "done", status
    assert status["outputs"] == {"ok": True}, status
    assert [e["event"] for e in job_view(api, job)["history"]] == [
        "submitted", "claimed", "completed"]
    assert job_counter(api, "undelivered") == 0
    assert not [line for line in node.log if "claim response not sent" in line]
