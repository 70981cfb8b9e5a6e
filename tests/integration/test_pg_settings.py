"""The flags of the postgres store's periods and limits: each bad value is refused with a message
that names the flag, the value and the accepted range, and the settings whose effect a client can
observe behave as documented: the statement timeout, the connect timeout and the retention
batch. Tests that need a database use the session's throwaway cluster (pg_cluster.py).
"""

import re
import socket
import subprocess
import threading
import time

import pytest

from support import INFERQ_BIN, wait_for

MODEL = "settings/m"


def run_serve(tmp_path, *flags):
    return subprocess.run([str(INFERQ_BIN), "serve", "--listen", "127.0.0.1:0", "--data-dir",
                           str(tmp_path / "d"), *flags], capture_output=True, text=True,
                          timeout=60)


def uri_db(uri):
    return uri.split("///", 1)[1].split("?", 1)[0]


@pytest.mark.parametrize("flag, value, expected", [
    ("pg-sweep-interval", "50ms", "a duration from 100ms to 1m"),
    ("pg-sweep-interval", "2m", "a duration from 100ms to 1m"),
    ("pg-sweep-interval", "soon", "a duration from 100ms to 1m"),
    ("pg-poll-interval", "5ms", "a duration from 10ms to 1m"),
    ("pg-poll-interval", "0", "a duration from 10ms to 1m"),
    ("pg-retention-batch", "0", "a whole number from 1 to 1000000"),
    ("pg-retention-batch", "1000001", "a whole number from 1 to 1000000"),
    ("pg-retention-batch", "-5", "a whole number from 1 to 1000000"),
    ("pg-connect-timeout", "500ms", "whole seconds from 1s to 10m"),
    ("pg-connect-timeout", "1500ms", "whole seconds from 1s to 10m"),
    ("pg-connect-timeout", "11m", "whole seconds from 1s to 10m"),
    ("pg-statement-timeout", "5ms", "0 (no limit) or a duration from 10ms to 1d"),
    ("pg-statement-timeout", "2d", "0 (no limit) or a duration from 10ms to 1d"),
    ("pg-statement-timeout", "-1s", "0 (no limit) or a duration from 10ms to 1d"),
    ("pg-status-cache-ttl", "2h", "a duration from 0 (no caching) to 1h"),
    ("pg-status-cache-ttl", "x", "a duration from 0 (no caching) to 1h"),
])
def test_bad_pg_flag_refused(tmp_path, flag, value, expected):
    r = run_serve(tmp_path, f"--{flag}", value)
    assert r.returncode == 2, r.stderr
    assert f'invalid value "{value}" for --{flag}: expected {expected}' in r.stderr, r.stderr


def test_help_lists_pg_flags(tmp_path):
    r = subprocess.run([str(INFERQ_BIN), "serve", "--help"], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 0
    for flag, default in (("sweep-interval", "1s"), ("poll-interval", "250ms"),
                          ("retention-batch", "1000"), ("connect-timeout", "5s"),
                          ("statement-timeout", "30s"), ("status-cache-ttl", "60s")):
        assert f"--pg-{flag}" in r.stdout, flag
        text = r.stdout.split(f"--pg-{flag}", 1)[1].split("\n  --", 1)[0]
        assert f"(default {default})" in text, (flag, text)


def test_pg_settings_logged_at_start(start_server, pg_cluster):
    node = start_server(store=pg_cluster.new_database(), pg_sweep_interval="300ms",
                        pg_poll_interval="50ms", pg_retention_batch=7, pg_connect_timeout="3s",
                        pg_statement_timeout="2s", pg_status_cache_ttl="5s")
    line = [l for l in node.log if "queue on PostgreSQL" in l]
    assert len(line) == 1, node.log_tail()
    for setting in ("sweep_interval=300ms", "poll_interval=50ms", "retention_batch=7",
                    "connect_timeout=3s", "statement_timeout=2000ms", "status_cache_ttl=5000ms"):
        assert setting in line[0], line[0]


def test_statement_timeout_answers_503(start_server, pg_cluster):
    uri = pg_cluster.new_database()
    node = start_server(store=uri, pg_statement_timeout="500ms")
    api = node.api()
    locked_job = api.submit_ok(MODEL, {"n": 1})
    other = api.submit_ok(MODEL, {"n": 2})
    claim = api.claim_ok(MODEL, claim_timeout=600)
    assert claim["request_id"] == locked_job

    # A transaction of the test holds the job's row lock, so the complete waits for it.
    session = pg_cluster.session(uri_db(uri))
    try:
        session.stdin.write(f"BEGIN;\nSELECT id FROM inferq_jobs WHERE id = '{locked_job}' "
                            "FOR UPDATE;\n")
        session.stdin.flush()
        assert session.stdout.readline().strip() == locked_job
        started = time.monotonic()
        reply = api.worker_call("complete", MODEL, locked_job, claim["claim_id"], outputs={"x": 1})
        elapsed = time.monotonic() - started
        assert reply.status == 503, reply
        assert reply.headers.get("retry-after") == "1"
        assert reply.json["code"] == "store_unavailable"
        assert "--pg-statement-timeout (500 ms)" in reply.json["message"], reply.json
        assert elapsed >= 0.4, elapsed
        # Reads that take no row lock go on meanwhile.
        assert api.status_ok(locked_job, MODEL)["status"] == "running"
    finally:
        session.stdin.write("COMMIT;\n")
        session.stdin.close()
        assert session.wait(30) == 0, session.stderr.read()

    assert any("warn" in line and "--pg-statement-timeout" in line for line in node.log), \
        node.log_tail()
    # Nothing was lost or half done: the same complete now goes through.
    assert api.status_ok(locked_job, MODEL)["status"] == "running"
    reply = api.worker_call("complete", MODEL, locked_job, claim["claim_id"], outputs={"x": 1})
    assert reply.status == 200, reply
    assert api.status_ok(locked_job, MODEL)["outputs"] == {"x": 1}
    assert api.status_ok(other, MODEL)["status"] == "pending"


def test_statement_timeout_zero_waits_for_lock(start_server, pg_cluster):
    uri = pg_cluster.new_database()
    node = start_server(store=uri, pg_statement_timeout="0")
    api = node.api()
    locked_job = api.submit_ok(MODEL, {})
    claim = api.claim_ok(MODEL, claim_timeout=600)
    session = pg_cluster.session(uri_db(uri))
    session.stdin.write(f"BEGIN;\nSELECT id FROM inferq_jobs WHERE id = '{locked_job}' FOR UPDATE;\n")
    session.stdin.flush()
    assert session.stdout.readline().strip() == locked_job
    result = {}

    def complete():
        result["reply"] = node.api().worker_call("complete", MODEL, locked_job, claim["claim_id"],
                                                 outputs={})

    waiter = threading.Thread(target=complete)
    waiter.start()
    time.sleep(1.0)  # longer than the 500 ms timeout of the test above
    assert "reply" not in result, result
    session.stdin.write("COMMIT;\n")
    session.stdin.close()
    assert session.wait(30) == 0
    waiter.join(30)
    assert result["reply"].status == 200, result["reply"]


def test_connect_timeout_gives_up(tmp_path):
    # A listener that accepts TCP connections and never responds, as a hung database host does.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    port = silent.getsockname()[1]
    try:
        started = time.monotonic()
        r = run_serve(tmp_path, "--store",
                      f"postgres://inferq@127.0.0.1:{port}/x?sslmode=disable",
                      "--pg-connect-timeout", "2s")
        elapsed = time.monotonic() - started
    finally:
        silent.close()
    assert r.returncode == 1, r.stderr
    assert "cannot prepare the PostgreSQL database" in r.stderr
    assert "timeout" in r.stderr, r.stderr
    assert 1.5 <= elapsed < 20, elapsed


def test_retention_batch_bounds_each_sweep(start_server, pg_cluster):
    uri = pg_cluster.new_database()
    node = start_server(store=uri, retention="1s", pg_retention_batch=2,
                        pg_sweep_interval="200ms")
    api = node.api()
    jobs = [api.submit_ok(MODEL, {"n": i}) for i in range(5)]
    for _ in jobs:
        claim = api.claim_ok(MODEL)
        reply = api.worker_call("complete", MODEL, claim["request_id"], claim["claim_id"],
                                outputs={})
        assert reply.status == 200, reply

    def remaining():
        return int(pg_cluster.psql("SELECT count(*) FROM inferq_jobs", uri_db(uri))[0][0])

    wait_for(lambda: remaining() == 0, 20, "retention to delete the 5 finished jobs")
    counts = [int(m.group(1)) for m in
              (re.search(r"deleted finished jobs past --retention.*count=(\d+)", line)
               for line in node.log) if m]
    assert sum(counts) == 5, node.log_tail()
    assert max(counts) == 2, counts
    assert len(counts) >= 3, counts
