"""Changes made by timers on an idle server (lease expiries) are committed at once, not when
the next request happens to wake the server: the first read after an expiry already shows it.
The test watches the SQLite file directly, because any HTTP request would wake the server."""

import sqlite3
import time

import pytest

from support import wait_for

pytestmark = pytest.mark.local_store_only(
    reason="reads the SQLite file of the data dir directly")

MODEL = "test/idle"


def stored_state(data_dir, request_id):
    db = sqlite3.connect(f"file:{data_dir}/inferq.db?mode=ro", uri=True, timeout=5)
    try:
        row = db.execute("SELECT state, retries FROM jobs WHERE id = ?", (request_id,)).fetchone()
    finally:
        db.close()
    return row


def test_expiry_committed_without_requests(start_server):
    server = start_server()
    api = server.api()
    request_id = api.submit_ok(MODEL, {"n": 1})
    claim = api.claim_ok(MODEL, claim_timeout=1)
    assert claim["request_id"] == request_id
    api.close()

    # No request reaches the server from here until the expiry is on disk.
    wait_for(lambda: stored_state(server.data_dir, request_id) == ("pending", 1), 10,
             "the lease expiry committed while no request arrived")

    status = server.api().status_ok(request_id, MODEL)
    assert status["status"] == "pending"
    assert status["retries"] == 1
    assert len(status["info"]["retry_history"]) == 1


def test_first_read_after_idle_expiry(start_server):
    server = start_server()
    api = server.api()
    request_id = api.submit_ok(MODEL, {"n": 2})
    api.claim_ok(MODEL, claim_timeout=1)
    api.close()

    wait_for(lambda: any("lease expired" in line for line in server.log), 10,
             "the server logged the lease expiry")
    # The commit follows the log line within one fsync; allow for that, never for a request.
    wait_for(lambda: stored_state(server.data_dir, request_id) == ("pending", 1), 2,
             "the expiry on disk within 2 s of its log line")
    metrics = server.api().metrics_ok(MODEL)
    assert metrics == {"messages_waiting": 1, "messages_running": 0, "total_jobs": 1}
