"""The status cache of finished jobs (--status-cache-bytes): it answers repeated status reads of
a finished job, forgets a job when the retention purge deletes it, and is off at 0. On the
postgres store an entry also expires when any node's retention sweep may delete the job, and
after --pg-status-cache-ttl at the latest.

A cached answer is told apart from a store read by changing the job's row in the SQLite file,
or in the PostgreSQL database, behind the server's back: the server never changes a finished
job's row, so only this test can make the two differ.
"""

import sqlite3
import subprocess
import time

import pytest

from support import INFERQ_BIN, assert_error, wait_for

MODEL = "test/status-cache"


def finish_job(api, outputs):
    request_id = api.submit_ok(MODEL, {"n": 1})
    job = api.claim_ok(MODEL)
    assert job["request_id"] == request_id
    reply = api.worker_call("complete", MODEL, request_id, job["claim_id"], outputs=outputs)
    assert reply.status == 200, reply
    return request_id


def uri_db(uri):
    return uri.split("///", 1)[1].split("?", 1)[0]


@pytest.fixture
def change_stored_outputs(request):
    """Return change(server, request_id, outputs_json), which rewrites the job's outputs in the
    server's store: its SQLite file, or its PostgreSQL database."""

    def change(server, request_id, outputs_json):
        store = getattr(server, "store", None)
        if store and store.startswith("postgres"):
            cluster = request.getfixturevalue("pg_cluster")
            rows = cluster.psql(f"WITH u AS (UPDATE inferq_jobs SET outputs = '{outputs_json}' "
                                f"WHERE id = '{request_id}' RETURNING id) SELECT id FROM u",
                                uri_db(store))
            assert rows == [[request_id]]
            return
        db = sqlite3.connect(server.data_dir / "inferq.db", timeout=10)
        try:
            with db:
                changed = db.execute("UPDATE jobs SET outputs = ? WHERE id = ?",
                                     (outputs_json, request_id)).rowcount
        finally:
            db.close()
        assert changed == 1

    return change


def test_repeated_status_served_from_cache(start_server, change_stored_outputs):
    server = start_server()
    api = server.api()
    request_id = finish_job(api, {"text": "first"})

    first = api.status_ok(request_id, MODEL)
    assert first["status"] == "done"
    assert first["outputs"] == {"text": "first"}
    change_stored_outputs(server, request_id, '{"text":"changed"}')

    # The first read cached the body, so the changed row is not read again.
    for _ in range(3):
        assert api.status_ok(request_id, MODEL) == first


def test_cache_off_reads_store_each_time(start_server, change_stored_outputs):
    server = start_server(status_cache_bytes=0)
    api = server.api()
    request_id = finish_job(api, {"text": "first"})

    assert api.status_ok(request_id, MODEL)["outputs"] == {"text": "first"}
    change_stored_outputs(server, request_id, '{"text":"changed"}')
    assert api.status_ok(request_id, MODEL)["outputs"] == {"text": "changed"}


def test_cached_status_same_as_store_read(start_server):
    cached = start_server()
    uncached = start_server(status_cache_bytes=0)
    for server in (cached, uncached):
        api = server.api()
        request_id = finish_job(api, {"text": "same", "n": [1, 2]})
        reads = [api.status_ok(request_id, MODEL) for _ in range(2)]
        assert reads[0] == reads[1]
        assert reads[0]["request_id"] == request_id
        assert reads[0]["outputs"] == {"text": "same", "n": [1, 2]}
        assert "done_at" in reads[0]


def test_cached_status_other_model_not_found(start_server):
    server = start_server()
    api = server.api()
    request_id = finish_job(api, {})
    assert api.status_ok(request_id, MODEL)["status"] == "done"
    assert_error(api.status(request_id, MODEL + "-other"), 404, "not_found")
    assert api.status_ok(request_id, MODEL)["status"] == "done"


def test_purge_drops_cached_status(start_server):
    server = start_server(retention="2s")
    api = server.api()
    request_id = finish_job(api, {"text": "short-lived"})

    # Cached by the first read, then deleted by the purge: the cache must not keep it.
    assert api.status_ok(request_id, MODEL)["status"] == "done"
    assert api.status_ok(request_id, MODEL)["status"] == "done"
    wait_for(lambda: api.status(request_id, MODEL).status == 404, 15,
             "the cached done job to be deleted after the 2 s retention")
    assert_error(api.status(request_id, MODEL), 404, "not_found")


def test_cache_bytes_limit_evicts_oldest(start_server, change_stored_outputs):
    # Each entry is charged at least its body and model name, so 4 KiB holds at most
    # 4096 // that many entries; a body here is about 300 bytes, an eighth of 4 KiB is 512.
    server = start_server(status_cache_bytes="4K")
    api = server.api()
    ids = [finish_job(api, {"i": i}) for i in range(16)]
    body_len = 0
    for i, request_id in enumerate(ids):
        reply = api.status(request_id, MODEL)
        assert reply.status == 200, reply
        assert reply.json["outputs"] == {"i": i}
        body_len = max(body_len, len(reply.raw))
    most_entries = 4096 // (body_len + len(MODEL))
    assert most_entries < 16
    for request_id in ids:
        change_stored_outputs(server, request_id, '{"i":"changed"}')

    # Read newest first, so that no read evicts an entry not read yet.
    cached = []
    for i in reversed(range(16)):
        outputs = api.status_ok(ids[i], MODEL)["outputs"]
        assert outputs in ({"i": i}, {"i": "changed"})
        cached.append(outputs == {"i": i})
    assert cached[0], "the most recently read job was not cached"
    assert not cached[-1], "the first job read stayed cached past the 4 KiB limit"
    assert 1 <= sum(cached) <= most_entries, cached


def test_entry_over_eighth_not_cached(start_server, change_stored_outputs):
    # 2 KiB allows entries of 256 bytes at most, less than one status body: nothing is kept.
    server = start_server(status_cache_bytes="2K")
    api = server.api()
    request_id = finish_job(api, {"text": "first"})
    assert api.status_ok(request_id, MODEL)["outputs"] == {"text": "first"}
    change_stored_outputs(server, request_id, '{"text":"changed"}')
    assert api.status_ok(request_id, MODEL)["outputs"] == {"text": "changed"}


def test_bad_status_cache_bytes_rejected(tmp_path):
    for value in ("-1", "2G", "abc", "1T", ""):
        proc = subprocess.run([str(INFERQ_BIN), "serve", "--listen", "127.0.0.1:0", "--data-dir",
                               str(tmp_path / "never"), "--status-cache-bytes", value],
                              capture_output=True, text=True, timeout=30)
        assert proc.returncode == 2, (value, proc)
        assert "--status-cache-bytes" in proc.stderr, proc.stderr
        assert "from 0 to 1G" in proc.stderr, proc.stderr


def finish_and_cache(api, change, server, outputs):
    """Finish a job, read its status once (which caches it) and change the stored row, so that
    a later read shows whether it came from the cache. Returns the request id."""
    request_id = finish_job(api, outputs)
    assert api.status_ok(request_id, MODEL)["outputs"] == outputs
    change(server, request_id, '{"text":"changed"}')
    return request_id


def test_pg_cache_ttl_bounds_entry(start_server, pg_cluster, change_stored_outputs):
    server = start_server(store=pg_cluster.new_database(), pg_status_cache_ttl="1s")
    api = server.api()
    request_id = finish_and_cache(api, change_stored_outputs, server, {"text": "first"})
    assert api.status_ok(request_id, MODEL)["outputs"] == {"text": "first"}
    time.sleep(1.2)
    assert api.status_ok(request_id, MODEL)["outputs"] == {"text": "changed"}


def test_pg_cache_ttl_zero_reads_database(start_server, pg_cluster, change_stored_outputs):
    server = start_server(store=pg_cluster.new_database(), pg_status_cache_ttl="0")
    api = server.api()
    request_id = finish_and_cache(api, change_stored_outputs, server, {"text": "first"})
    assert api.status_ok(request_id, MODEL)["outputs"] == {"text": "changed"}


def test_pg_cache_expires_at_other_node_purge(start_server, pg_cluster, change_stored_outputs):
    # Node A sweeps once a minute, so only node B's sweep deletes the job. A's cached entry must
    # expire by the time that delete can happen, although A is not told of it.
    uri = pg_cluster.new_database()
    a = start_server(store=uri, retention="3s", pg_sweep_interval="1m")
    b = start_server(store=uri, retention="3s")
    api_a = a.api()
    request_id = finish_and_cache(api_a, change_stored_outputs, a, {"text": "first"})
    assert api_a.status_ok(request_id, MODEL)["outputs"] == {"text": "first"}

    wait_for(lambda: b.api().status(request_id, MODEL).status == 404, 15,
             "node B's retention sweep to delete the job")
    assert_error(api_a.status(request_id, MODEL), 404, "not_found")
