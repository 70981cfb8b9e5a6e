"""How the postgres store talks to PostgreSQL: prepared statements and NOTIFY hints.

The cluster's log is the witness. With log_min_duration_statement = 0 set on the test's
database, PostgreSQL logs each stage of the extended protocol under the statement's name:
"parse iq_3: SELECT ..." once when a connection prepares it, "execute iq_3: ..." on each run,
and "execute <unnamed>: ..." for a statement that was not prepared.
"""

import re
import threading
import time

import pytest

from support import wait_for

MODEL = "statements/m"
STATUS_TEXT = "FROM inferq_jobs WHERE id = $1::uuid AND model = $2"


def uri_db(uri):
    return uri.split("?", 1)[0].rsplit("/", 1)[1]


def logged_database(pg_cluster):
    """A fresh database whose statements PostgreSQL logs with their stage and name."""
    uri = pg_cluster.new_database()
    pg_cluster.psql(f"ALTER DATABASE {uri_db(uri)} SET log_min_duration_statement = 0")
    return uri


def log_since(pg_cluster, offset):
    with open(pg_cluster.log, encoding="utf-8", errors="replace") as f:
        f.seek(offset)
        return f.read().splitlines()


def log_size(pg_cluster):
    return pg_cluster.log.stat().st_size


def stage_lines(lines, stage, text):
    """The log lines of stage (parse, execute) of the statement that contains text."""
    return [line for line in lines if f" {stage} " in line and text in line]


def test_statements_are_prepared_once_per_connection(start_server, pg_cluster):
    uri = logged_database(pg_cluster)
    node = start_server(store=uri, pg_pool=1)
    api = node.api()
    job = api.submit_ok(MODEL, {"n": 1})
    start = log_size(pg_cluster)
    for _ in range(20):
        assert api.status_ok(job, MODEL)["status"] == "pending"
    wait_for(lambda: len(stage_lines(log_since(pg_cluster, start), "execute", STATUS_TEXT)) >= 20,
             10, "the status statements in the log")
    lines = log_since(pg_cluster, start)
    parses = stage_lines(lines, "parse", STATUS_TEXT)
    executes = stage_lines(lines, "execute", STATUS_TEXT)
    # The one connection prepared it with the first status (or before this window, with
    # none here), then ran it by name every time.
    assert len(parses) <= 1, parses
    assert len(executes) == 20, executes
    assert all(re.search(r"execute iq_\d+:", line) for line in executes), executes[:3]

    # A database restart breaks the connection; the new one must prepare the text again
    # instead of running a name its backend never heard of.
    pg_cluster.stop("fast")
    pg_cluster.start()
    wait_for(lambda: api.status(job, MODEL).status == 200, 30, "the node to reconnect")
    start = log_size(pg_cluster)
    for _ in range(20):
        assert api.status_ok(job, MODEL)["status"] == "pending"
    wait_for(lambda: len(stage_lines(log_since(pg_cluster, start), "execute", STATUS_TEXT)) >= 20,
             10, "the status statements in the log")
    lines = log_since(pg_cluster, start)
    assert len(stage_lines(lines, "parse", STATUS_TEXT)) <= 1
    assert all(re.search(r"execute iq_\d+:", line)
               for line in stage_lines(lines, "execute", STATUS_TEXT))
    assert not any("does not exist" in line for line in lines), \
        [line for line in lines if "does not exist" in line]


def submit_one(api, payload, batch):
    """Submit one job, alone or as a batch of one; return its request id."""
    if not batch:
        return api.submit_ok(MODEL, payload)
    reply = api.post("/v1/queue/submit_batch", {"jobs": [{"model": MODEL, "payload": payload}]})
    assert reply.status == 200, reply
    return reply.json["data"][0]["request_id"]


@pytest.mark.parametrize("batch", [False, True], ids=["submit", "submit_batch"])
def test_notify_leaves_the_submit_transaction(start_server, pg_cluster, batch):
    uri = logged_database(pg_cluster)
    node = start_server(store=uri)
    start = log_size(pg_cluster)
    submit_one(node.api(), {"n": 1}, batch)
    wait_for(lambda: stage_lines(log_since(pg_cluster, start), "execute", "pg_notify"), 10,
             "the NOTIFY hint in the log")
    lines = log_since(pg_cluster, start)
    inserts = stage_lines(lines, "execute", "INSERT INTO inferq_jobs")
    assert len(inserts) == 1, inserts
    assert "pg_notify" not in inserts[0]


def claim_in_thread(api, wait):
    result = {}

    def run():
        started = time.monotonic()
        result["reply"] = api.claim(MODEL, wait=wait)
        result["elapsed"] = time.monotonic() - started

    thread = threading.Thread(target=run)
    thread.start()
    return thread, result


@pytest.mark.parametrize("batch", [False, True], ids=["submit", "submit_batch"])
def test_hint_wakes_waiters_on_both_nodes_without_polling(start_server, pg_cluster, batch):
    # With a 1-minute poll, only the direct wake (same node) or the NOTIFY hint (other node)
    # can answer these waits within seconds.
    uri = pg_cluster.new_database()
    a = start_server(store=uri, pg_poll_interval="1m")
    b = start_server(store=uri, pg_poll_interval="1m")
    for waiter_node in (a, b):
        thread, result = claim_in_thread(waiter_node.api(), 30)
        time.sleep(0.5)  # let the claim park before the job exists
        job = submit_one(a.api(), {"to": waiter_node.port}, batch)
        thread.join(40)
        assert result["reply"].status == 200, result["reply"]
        assert result["reply"].json["request_id"] == job
        assert result["elapsed"] < 5, result["elapsed"]
