#!/usr/bin/env python3
"""Crash loop: kill -9 the server at random moments under load and check that no acknowledged
job is lost and no job is finished twice.

Submitters, workers and status readers (threads, each on its own keep-alive connection) run
against one `inferq serve` on 127.0.0.1 with a temporary data dir, while the main thread kills
the server with SIGKILL and restarts it at seeded random moments. Every loop is bounded in
count and time. At the end, with the server running and every job driven to a terminal state,
the script checks:

- every acknowledged submit exists (status 200) with its payload byte for byte, and the store
  contains no job that was never acknowledged (an Idempotency-Key retry must not duplicate);
- for each job at most one complete or fail was accepted (200), and a done job's outputs name
  a claim_id that its worker really received;
- retries and info.retry_history agree, and the history covers every claim that ended without
  a release or a finish;
- metrics (messages_waiting, messages_running) equal the pending and running jobs counted by
  status, and a running lease survives a kill -9;
- the server never exited by itself and exits 0 on SIGTERM at the end.

Prints a summary and exits 1 on any violation, 2 on a setup error. Standard library only.
Usage: python3 tests/stress/crash_loop.py --kills 20 --seconds 120 [--seed N]
"""

import argparse
import http.client
import json
import os
import random
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEFAULT_BIN = os.environ.get("INFERQ_BIN", str(REPO / "build" / "inferq"))
LISTEN_RE = re.compile(r"listening on 127\.0\.0\.1:([1-9][0-9]*)")
MODEL = "stress/crash-loop"
MAX_RETRIES = 3
# The error of a job failed by its last lease expiry starts with this text (details follow).
EXPIRY_ERROR = "claim timed out after the last retry"
TERMINAL = ("done", "failed", "canceled")
START_TIMEOUT = float(os.environ.get("INFERQ_START_TIMEOUT", "20"))
# Errors of a connection to a server that was killed or is restarting.
NET_ERRORS = (OSError, http.client.HTTPException)


class SetupError(Exception):
    pass


class ServerProcess:
    """One `inferq serve` on 127.0.0.1, restarted on the same data dir after each kill."""

    def __init__(self, binary, data_dir, log_path, flags):
        self.binary = binary
        self.data_dir = data_dir
        self.log_path = log_path
        self.flags = flags
        self.proc = None
        self.port = None
        self.starts = 0
        self.start_seconds = []

    def start(self):
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        cmd = [self.binary, "serve", "--listen", "127.0.0.1:0", "--data-dir", str(self.data_dir)]
        log = open(self.log_path, "ab")
        started = time.monotonic()
        self.proc = subprocess.Popen(cmd + self.flags, stdin=subprocess.DEVNULL, stdout=log,
                                     stderr=subprocess.STDOUT)
        log.close()
        deadline = started + START_TIMEOUT
        while time.monotonic() < deadline:
            with open(self.log_path, "rb") as f:
                f.seek(offset)
                match = LISTEN_RE.search(f.read().decode("utf-8", "replace"))
            if match:
                self.port = int(match.group(1))
                self.starts += 1
                self.start_seconds.append(time.monotonic() - started)
                return
            if self.proc.poll() is not None:
                raise SetupError(f"server exited with status {self.proc.returncode} at start; "
                                 f"log: {self.log_path}")
            time.sleep(0.01)
        self.proc.kill()
        self.proc.wait()
        raise SetupError(f"server did not log 'listening on' within {START_TIMEOUT} s; "
                         f"log: {self.log_path}")

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self):
        """Send SIGTERM and return the exit status, or None when it did not exit in 20 s."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return None

    @property
    def key(self):
        key_file = self.data_dir / "admin.key"
        return key_file.read_text().strip() if key_file.exists() else "test-key"


class Client:
    """A keep-alive HTTP client that follows the server to its new port after a restart."""

    def __init__(self, server, timeout=10.0):
        self.server = server
        self.timeout = timeout
        self.conn = None
        self.port = None

    def request(self, method, path, body=None, headers=None):
        """Send one request and return (status, raw body); raises a NET_ERRORS on failure."""
        if self.conn is None or self.port != self.server.port:
            self.close()
            self.port = self.server.port
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
        all_headers = {"Authorization": f"Bearer {self.server.key}"}
        data = None
        if body is not None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            all_headers["Content-Type"] = "application/json"
        all_headers.update(headers or {})
        try:
            self.conn.request(method, path, body=data, headers=all_headers)
            resp = self.conn.getresponse()
            return resp.status, resp.read()
        except NET_ERRORS:
            self.close()
            raise

    def answered(self, method, path, body=None, headers=None, deadline=None):
        """Retry after connection errors until the server responds or the deadline passes.

        Returns (status, raw body, number of failed attempts); status is None at the deadline.
        """
        failures = 0
        while True:
            try:
                status, raw = self.request(method, path, body, headers)
                return status, raw, failures
            except NET_ERRORS:
                failures += 1
            if deadline is not None and time.monotonic() >= deadline:
                return None, b"", failures
            time.sleep(0.05)

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None


class Record:
    """Everything the clients saw, shared between threads under one lock."""

    def __init__(self):
        self.lock = threading.Lock()
        self.acked = {}  # request_id -> (payload bytes, idempotency key, body bytes)
        self.claims = {}  # request_id -> [(claim_id, worker, payload)]
        self.finishes = []  # (request_id, claim_id, worker, kind, outcome, detail)
        self.claims_unanswered = 0
        self.submit_retries = 0
        self.submits_unacked = 0
        self.heartbeats = {"accepted": 0, "rejected": 0}
        self.late_completes = {"accepted": 0, "rejected": 0, "unknown": 0}
        self.terminal_seen = {}  # request_id -> status first seen terminal by a reader
        self.status_reads = 0
        self.violations = []

    def violation(self, text):
        with self.lock:
            self.violations.append(text)
        print(f"VIOLATION: {text}", flush=True)


def job_path(route, request_id):
    return f"/v1/queue/{route}?request_id={request_id}&model={MODEL.replace('/', '%2F')}"


# ---------------------------------------------------------------------------
# Load: submitters, workers, readers.


def submitter(index, server, record, rng, stop, hard_deadline):
    client = Client(server)
    n = 0
    while not stop.is_set() and time.monotonic() < hard_deadline:
        n += 1
        payload = {"submitter": index, "n": n, "big": 12345678901234567890123,
                   "pad": "x" * rng.randint(0, 200)}
        payload_bytes = json.dumps(payload, separators=(",", ":")).encode()
        body = b'{"model":"' + MODEL.encode() + b'","payload":' + payload_bytes + b"}"
        key = str(uuid.UUID(int=rng.getrandbits(128), version=4))

        # Retry the same key and body until acknowledged, also after stop, so that no
        # committed but unacknowledged job is left behind.
        while True:
            status, raw, failures = client.answered(
                "POST", "/v1/queue/submit", body, {"Idempotency-Key": key}, hard_deadline)
            with record.lock:
                record.submit_retries += failures
            if status == 503:
                time.sleep(0.1)
                continue
            break
        if status is None:
            with record.lock:
                record.submits_unacked += 1
            break
        if status != 200:
            record.violation(f"submit answered {status}: {raw[:200]!r}")
            continue
        request_id = json.loads(raw)["request_id"]
        with record.lock:
            if request_id in record.acked:
                record.violations.append(f"two submits acknowledged with id {request_id}")
            record.acked[request_id] = (payload_bytes, key, body)
        time.sleep(rng.uniform(0.03, 0.12))
    client.close()


def finish(client, record, job, worker, kind, rng):
    """Send complete, fail or release for a claim, retrying after connection errors."""
    request_id, claim_id = job["request_id"], job["claim_id"]
    fields = {"model": MODEL, "request_id": request_id, "claim_id": claim_id}
    detail = None
    if kind == "complete":
        detail = {"by": worker, "claim_id": claim_id}
        fields["outputs"] = detail
    elif kind == "fail":
        detail = f"failed by {worker} under claim {claim_id}"
        fields["error"] = detail
    status, raw, failures = client.answered("POST", f"/v1/queue/{kind}", fields,
                                            deadline=time.monotonic() + 15)
    if status == 200:
        outcome = "accepted"
        expected = {"complete": "done", "fail": "failed", "release": "pending"}[kind]
        body = json.loads(raw)
        if body.get("status") != expected or body.get("request_id") != request_id:
            record.violation(f"{kind} of {request_id} answered 200 with {raw[:200]!r}")
    elif status == 409:
        # After a lost response, a 409 may mean that the first attempt was applied.
        outcome = "unknown" if failures else "rejected"
    elif status is None:
        outcome = "unknown"
    else:
        record.violation(f"{kind} of {request_id} answered {status}: {raw[:200]!r}")
        outcome = "unknown"
    with record.lock:
        record.finishes.append((request_id, claim_id, worker, kind, outcome, detail))
    return outcome


def heartbeat(client, record, job):
    """Send a heartbeat; return True while the job is still this claim's."""
    fields = {"model": MODEL, "request_id": job["request_id"], "claim_id": job["claim_id"]}
    status, raw, _ = client.answered("POST", "/v1/queue/heartbeat", fields,
                                     deadline=time.monotonic() + 15)
    if status == 200:
        with record.lock:
            record.heartbeats["accepted"] += 1
        return True
    if status not in (409, None):
        record.violation(f"heartbeat of {job['request_id']} answered {status}: {raw[:200]!r}")
    with record.lock:
        record.heartbeats["rejected"] += 1
    return False


def claim(client, record, worker, claim_timeout, wait):
    """Return a claimed job, or None."""
    body = {"model": MODEL, "claim_timeout": claim_timeout, "wait": wait, "worker": worker}
    try:
        status, raw = client.request("POST", "/v1/queue/claim", body)
    except NET_ERRORS:
        # The claim may have been committed with its response lost: its lease expires unseen.
        with record.lock:
            record.claims_unanswered += 1
        time.sleep(0.05)
        return None
    if status == 204:
        return None
    if status != 200:
        record.violation(f"claim answered {status}: {raw[:200]!r}")
        return None
    job = json.loads(raw)
    payload = compact_payload(raw)
    with record.lock:
        record.claims.setdefault(job["request_id"], []).append((job["claim_id"], worker, payload))
    return job


def compact_payload(raw):
    """Return the raw bytes of the payload member of a claim response."""
    start = raw.index(b'"payload":') + len(b'"payload":')
    return raw_value(raw, start)


def raw_value(raw, i):
    """Return the JSON object or array that starts at raw[i] (strings inside are skipped)."""
    depth = 0
    j = i
    in_string = False
    while True:
        c = raw[j]
        if in_string:
            if c == 0x5C:
                j += 1
            elif c == 0x22:
                in_string = False
        elif c == 0x22:
            in_string = True
        elif c in b"{[":
            depth += 1
        elif c in b"}]":
            depth -= 1
            if depth == 0:
                return raw[i:j + 1]
        j += 1


def worker_loop(index, server, record, rng, stop, claim_timeout):
    client = Client(server)
    name = f"worker-{index}"
    actions = ["complete", "fail", "release", "die", "late"]
    weights = [55, 10, 10, 10, 15]
    while not stop.is_set():
        job = claim(client, record, name, claim_timeout, 0.5)
        if job is None:
            continue
        action = rng.choices(actions, weights)[0]
        holding = True
        for _ in range(rng.randint(0, 2)):
            time.sleep(rng.uniform(0.1, claim_timeout * 0.3))
            holding = heartbeat(client, record, job)
            if not holding:
                break
        if not holding or action == "die":
            continue
        if action == "late":
            # Outlive the lease: the complete is either a late completion or fenced off.
            time.sleep(claim_timeout + rng.uniform(0.1, 1.0))
            outcome = finish(client, record, job, name, "complete", rng)
            with record.lock:
                record.late_completes[outcome] += 1
            continue
        finish(client, record, job, name, action, rng)
    client.close()


def reader_loop(index, server, record, rng, stop):
    client = Client(server)
    while not stop.is_set():
        with record.lock:
            ids = list(record.acked)
        if not ids or rng.random() < 0.1:
            read_metrics(client, record)
            time.sleep(0.02)
            continue
        request_id = rng.choice(ids)
        try:
            status, raw = client.request("GET", job_path("status", request_id))
        except NET_ERRORS:
            time.sleep(0.05)
            continue
        with record.lock:
            record.status_reads += 1
        if status != 200:
            record.violation(f"status of acknowledged job {request_id} answered {status}: "
                             f"{raw[:200]!r}")
            continue
        state = json.loads(raw)["status"]
        with record.lock:
            seen = record.terminal_seen.get(request_id)
            if seen is None and state in TERMINAL:
                record.terminal_seen[request_id] = state
        if seen is not None and state != seen:
            record.violation(f"job {request_id} was {seen} and later {state}")
    client.close()


def read_metrics(client, record):
    try:
        status, raw = client.request("GET", f"/v1/queue/metrics?model={MODEL}")
    except NET_ERRORS:
        return None
    if status != 200:
        record.violation(f"metrics answered {status}: {raw[:200]!r}")
        return None
    body = json.loads(raw)
    if body["total_jobs"] != body["messages_waiting"] + body["messages_running"]:
        record.violation(f"metrics total is not waiting + running: {body}")
    return body


# ---------------------------------------------------------------------------
# Kills.


def kill_loop(server, record, rng, kills, seconds):
    """Kill -9 and restart the server `kills` times within `seconds`; return the count.

    The kill times are drawn uniformly over the first 90% of the load phase. One kill in five
    comes instead within 0.2 s of the previous start, while the server rebuilds its queue.
    """
    started = time.monotonic()
    times = sorted(rng.uniform(0, seconds * 0.9) for _ in range(kills))
    done = 0
    for at in times:
        if done and rng.random() < 0.2:
            at = time.monotonic() - started + rng.uniform(0.0, 0.2)
        delay = started + at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        if server.proc.poll() is not None:
            record.violation(f"server exited by itself with status {server.proc.returncode}")
        server.kill9()
        done += 1
        server.start()
    rest = started + seconds - time.monotonic()
    if rest > 0:
        time.sleep(rest)
    return done


# ---------------------------------------------------------------------------
# End: quiesce, check metrics and lease survival, drain, check every job.


def statuses(client, record, ids):
    result = {}
    for request_id in ids:
        status, raw, _ = client.answered("GET", job_path("status", request_id),
                                         deadline=time.monotonic() + 10)
        if status != 200:
            record.violation(f"status of acknowledged job {request_id} answered {status}: "
                             f"{raw[:200]!r} (job lost)")
            continue
        result[request_id] = (json.loads(raw), raw)
    return result


def count_states(jobs):
    counts = {}
    for body, _ in jobs.values():
        counts[body["status"]] = counts.get(body["status"], 0) + 1
    return counts


def check_metrics(client, record, ids, when):
    counts = count_states(statuses(client, record, ids))
    metrics = read_metrics(client, record)
    expected = {"messages_waiting": counts.get("pending", 0),
                "messages_running": counts.get("running", 0)}
    if metrics is None or any(metrics[k] != v for k, v in expected.items()):
        record.violation(f"{when}: metrics {metrics} do not match the jobs' states {counts}")
    return counts


def quiesce(client, record, claim_timeout):
    """Wait until no lease of a load worker is left (all expired or finished)."""
    deadline = time.monotonic() + claim_timeout * (MAX_RETRIES + 2) + 10
    while time.monotonic() < deadline:
        metrics = read_metrics(client, record)
        if metrics is not None and metrics["messages_running"] == 0:
            return True
        time.sleep(0.1)
    record.violation(f"jobs still running {claim_timeout * (MAX_RETRIES + 2) + 10} s after "
                     f"the load stopped, with {claim_timeout} s leases")
    return False


def check_lease_survives(server, client, record, ids):
    """Claim a few jobs with long leases, kill -9, and heartbeat them after the restart."""
    held = []
    for _ in range(5):
        job = claim(client, record, "checker", 300, 0)
        if job is None:
            break
        held.append(job)
    counts = check_metrics(client, record, ids, "with checker claims")
    if counts.get("running", 0) != len(held):
        record.violation(f"{len(held)} jobs claimed by the checker, {counts} running")
    server.kill9()
    server.start()
    for job in held:
        if not heartbeat(client, record, job):
            record.violation(f"lease of {job['request_id']} did not survive a kill -9")
    check_metrics(client, record, ids, "after a restart with running leases")
    return held


def check_idempotent_replay(client, record, rng):
    with record.lock:
        sample = rng.sample(sorted(record.acked.items()), min(50, len(record.acked)))
    for request_id, (_, key, body) in sample:
        status, raw, _ = client.answered("POST", "/v1/queue/submit", body,
                                         {"Idempotency-Key": key}, time.monotonic() + 10)
        if status != 200 or json.loads(raw)["request_id"] != request_id:
            record.violation(f"replay of Idempotency-Key {key} answered {status} {raw[:200]!r}, "
                             f"expected 200 with {request_id}")


def drain(client, record, held):
    """Complete every job left, including the checker's held claims."""
    for job in held:
        finish(client, record, job, "checker", "complete", None)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        job = claim(client, record, "drain", 300, 0)
        if job is not None:
            finish(client, record, job, "drain", "complete", None)
            continue
        metrics = read_metrics(client, record)
        if metrics is not None and metrics["total_jobs"] == 0:
            return
        time.sleep(0.1)
    record.violation("jobs left pending or running 60 s into the drain")


def check_job(record, request_id, body, raw, claims, finishes, stats):
    """Check one job after the drain; return nothing, record violations."""
    payload_bytes = record.acked[request_id][0]
    state = body["status"]
    if state not in ("done", "failed"):
        record.violation(f"job {request_id} is {state} after the drain")
    if body.get("model") != MODEL:
        record.violation(f"job {request_id} has model {body.get('model')!r}")
    inputs = raw_value(raw, raw.index(b'"inputs":') + len(b'"inputs":'))
    if inputs != payload_bytes:
        record.violation(f"job {request_id} inputs {inputs[:100]!r} differ from the payload "
                         f"{payload_bytes[:100]!r}")
    for claim_id, worker, claimed_payload in claims:
        if claimed_payload != payload_bytes:
            record.violation(f"claim {claim_id} of {request_id} by {worker} returned payload "
                             f"{claimed_payload[:100]!r}")

    # At most one accepted complete or fail, and the final state is the accepted one.
    accepted = {(f[1], f[3]) for f in finishes if f[3] != "release" and f[4] == "accepted"}
    if len(accepted) > 1:
        stats["double"] += 1
        record.violation(f"job {request_id}: several finishes accepted: {sorted(accepted)}")
    claim_workers = {claim_id: worker for claim_id, worker, _ in claims}
    if state == "done":
        outputs = body.get("outputs") or {}
        claim_id = outputs.get("claim_id")
        if claim_workers.get(claim_id) != outputs.get("by"):
            record.violation(f"job {request_id} done with outputs {outputs}, but "
                             f"{outputs.get('by')} never received claim {claim_id}")
        sent = [f for f in finishes if f[1] == claim_id and f[3] == "complete"
                and f[4] in ("accepted", "unknown")]
        if not sent:
            record.violation(f"job {request_id} done under claim {claim_id} whose complete "
                             f"was rejected or never sent")
        if accepted and accepted != {(claim_id, "complete")}:
            record.violation(f"job {request_id} done under claim {claim_id}, accepted: "
                             f"{sorted(accepted)}")
    elif state == "failed":
        error = body.get("error")
        by_expiry = isinstance(error, str) and error.startswith(EXPIRY_ERROR)
        if by_expiry:
            stats["failed_by_expiry"] += 1
        else:
            sent = [f for f in finishes if f[3] == "fail" and f[5] == error
                    and f[4] in ("accepted", "unknown")]
            if not sent:
                record.violation(f"job {request_id} failed with {error!r}, which no accepted "
                                 f"fail sent")
        if accepted and {kind for _, kind in accepted} != {"fail"}:
            record.violation(f"job {request_id} failed, accepted: {sorted(accepted)}")

    check_history(record, request_id, body, claims, finishes, stats)


def check_history(record, request_id, body, claims, finishes, stats):
    history = (body.get("info") or {}).get("retry_history", [])
    retries = body["retries"]
    stats["expiries"] += len(history)
    failed_by_expiry = (body["status"] == "failed"
                        and str(body.get("error")).startswith(EXPIRY_ERROR))
    expected = retries + 1 if failed_by_expiry else retries
    if len(history) != expected:
        record.violation(f"job {request_id}: {len(history)} retry_history entries, retries "
                         f"{retries}, status {body['status']}")
    if failed_by_expiry and retries != MAX_RETRIES:
        record.violation(f"job {request_id} failed by expiry with retries {retries}")
    if [e.get("attempt") for e in history] != list(range(1, len(history) + 1)):
        record.violation(f"job {request_id}: retry_history attempts {history}")

    # Each claim but the last ended in a release or an expiry.
    releases = sum(1 for f in finishes if f[3] == "release" and f[4] != "rejected")
    if len(history) < len(claims) - 1 - releases:
        record.violation(f"job {request_id}: {len(claims)} claims, {releases} releases, only "
                         f"{len(history)} expiries in retry_history")


def check_store(record, db_path):
    """Compare the jobs in the SQLite file with the acknowledged ones (server stopped)."""
    try:
        db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
        rows = db.execute("SELECT id FROM jobs WHERE model = ?", (MODEL,)).fetchall()
        db.close()
    except sqlite3.Error as e:
        print(f"note: store check skipped: {e}")
        return None
    stored = {row[0] for row in rows}
    extra = stored - set(record.acked)
    missing = set(record.acked) - stored
    if extra:
        record.violation(f"{len(extra)} jobs in the store were never acknowledged (duplicates "
                         f"of a retried submit?): {sorted(extra)[:5]}")
    if missing:
        record.violation(f"{len(missing)} acknowledged jobs missing from the store: "
                         f"{sorted(missing)[:5]}")
    return len(stored)


def final_checks(client, record):
    ids = sorted(record.acked)
    jobs = statuses(client, record, ids)
    stats = {"double": 0, "expiries": 0, "failed_by_expiry": 0}
    with record.lock:
        claims = dict(record.claims)
        finishes_by_job = {}
        for f in record.finishes:
            finishes_by_job.setdefault(f[0], []).append(f)
    for request_id, (body, raw) in jobs.items():
        check_job(record, request_id, body, raw, claims.get(request_id, []),
                  finishes_by_job.get(request_id, []), stats)
    unknown_claims = set(claims) - set(record.acked)
    if unknown_claims:
        record.violation(f"claims returned jobs never acknowledged: {sorted(unknown_claims)[:5]}")

    total_claims = sum(len(c) for c in claims.values())
    if stats["expiries"] > total_claims + record.claims_unanswered:
        record.violation(f"{stats['expiries']} expiries for {total_claims} claims seen and "
                         f"{record.claims_unanswered} unanswered")
    stats["states"] = count_states(jobs)
    stats["lost"] = len(ids) - len(jobs)
    stats["claims"] = total_claims
    return stats


# ---------------------------------------------------------------------------


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=5, help="kill -9 count (default 5)")
    parser.add_argument("--seconds", type=float, default=30,
                        help="length of the load phase in seconds (default 30)")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: random)")
    parser.add_argument("--binary", default=DEFAULT_BIN, help=f"server binary ({DEFAULT_BIN})")
    parser.add_argument("--submitters", type=int, default=2)
    parser.add_argument("--workers", type=int, default=6)
    parser.add_argument("--readers", type=int, default=2)
    parser.add_argument("--claim-timeout", type=int, default=2,
                        help="lease of the load workers' claims in seconds (default 2)")
    parser.add_argument("--keep", action="store_true", help="keep the data dir and log")
    args = parser.parse_args()
    if args.kills < 0 or args.seconds <= 0 or args.claim_timeout < 1:
        parser.error("--kills must be >= 0, --seconds > 0 and --claim-timeout >= 1")
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(1 << 32)
    return args


def run(args, work_dir):
    rng = random.Random(args.seed)
    data_dir = work_dir / "data"
    server = ServerProcess(args.binary, data_dir, work_dir / "server.log",
                           ["--max-retries", str(MAX_RETRIES), "--log-level", "info"])
    record = Record()
    stop = threading.Event()
    started = time.monotonic()
    server.start()
    try:
        return load_and_check(args, server, record, stop, rng, started, data_dir)
    finally:
        if server.proc.poll() is None:
            server.kill9()


def load_and_check(args, server, record, stop, rng, started, data_dir):

    hard_deadline = started + args.seconds + 60
    threads = []
    for i in range(args.submitters):
        threads.append(threading.Thread(target=submitter, args=(
            i, server, record, random.Random(rng.random()), stop, hard_deadline)))
    for i in range(args.workers):
        threads.append(threading.Thread(target=worker_loop, args=(
            i, server, record, random.Random(rng.random()), stop, args.claim_timeout)))
    for i in range(args.readers):
        threads.append(threading.Thread(target=reader_loop, args=(
            i, server, record, random.Random(rng.random()), stop)))
    for t in threads:
        t.daemon = True
        t.start()

    kills = kill_loop(server, record, random.Random(rng.random()), args.kills, args.seconds)
    stop.set()
    join_deadline = time.monotonic() + args.claim_timeout + 40
    for t in threads:
        t.join(max(0.0, join_deadline - time.monotonic()))
        if t.is_alive():
            record.violation(f"thread {t.name} still running 40 s after the load stopped")
    load_seconds = time.monotonic() - started

    client = Client(server)
    ids = sorted(record.acked)
    quiesce(client, record, args.claim_timeout)
    check_metrics(client, record, ids, "after the load")
    held = check_lease_survives(server, client, record, ids)
    kills += 1
    check_idempotent_replay(client, record, rng)
    drain(client, record, held)
    stats = final_checks(client, record)
    client.close()

    if server.proc.poll() is not None:
        record.violation(f"server exited by itself with status {server.proc.returncode}")
    exit_status = server.stop()
    if exit_status != 0:
        record.violation(f"server exit status {exit_status} after SIGTERM, expected 0")
    stored = check_store(record, data_dir / "inferq.db")

    finishes = record.finishes
    accepted = {kind: sum(1 for f in finishes if f[3] == kind and f[4] == "accepted")
                for kind in ("complete", "fail", "release")}
    print(f"seed={args.seed} kills={kills} restarts={server.starts - 1} "
          f"load_seconds={load_seconds:.1f} total_seconds={time.monotonic() - started:.1f}")
    print(f"jobs acknowledged={len(record.acked)} stored={stored} "
          f"states={stats['states']} submit_retries={record.submit_retries} "
          f"submits_unacknowledged={record.submits_unacked}")
    print(f"claims={stats['claims']} claims_unanswered={record.claims_unanswered} "
          f"heartbeats={record.heartbeats} accepted={accepted} expiries={stats['expiries']} "
          f"failed_by_expiry={stats['failed_by_expiry']} late_completes={record.late_completes} "
          f"status_reads={record.status_reads}")
    starts = server.start_seconds
    print(f"restart_seconds max={max(starts):.3f} mean={sum(starts) / len(starts):.3f}")
    print(f"lost={stats['lost']} double_completions={stats['double']} "
          f"violations={len(record.violations)}")
    return record.violations


def main():
    args = parse_args()
    if not Path(args.binary).exists():
        print(f"server binary not found at {args.binary}; build it with `make` or set "
              f"INFERQ_BIN", file=sys.stderr)
        return 2
    work_dir = Path(tempfile.mkdtemp(prefix="inferq-crash-loop-"))
    violations = None
    try:
        violations = run(args, work_dir)
    except SetupError as e:
        print(f"setup error: {e}", file=sys.stderr)
        args.keep = True
        return 2
    finally:
        if violations or args.keep:
            print(f"data dir and server log kept in {work_dir}")
        else:
            shutil.rmtree(work_dir, ignore_errors=True)
    if violations:
        print(f"FAILED: {len(violations)} violations, first: {violations[0]}")
        return 1
    print("OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
