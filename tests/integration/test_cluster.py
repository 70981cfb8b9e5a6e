"""Several inferq nodes over one PostgreSQL database (--store postgres://...).

Every test gets a fresh database in the session's throwaway cluster (pg_cluster.py) and starts
two or three real nodes on it. Each node has its own data dir and admin key, so each client
talks to one node with that node's key.
"""

import re
import subprocess
import threading
import time

import pytest

from support import INFERQ_BIN, UNKNOWN_CLAIM, UNKNOWN_ID, Api, wait_for

MODEL = "cluster/m"
# A line of the default text log format: time, level, subsystem.
LOG_LINE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z (debug|info |warn |error) "
                         r"[a-z]+: ")


def nodes(start_server, uri, count, **flags):
    return [start_server(store=uri, **flags) for _ in range(count)]


def submit(api, payload, **fields):
    reply = api.submit(MODEL, payload, **fields)
    assert reply.status == 200, reply
    return reply.json["request_id"]


def test_nodes_started_at_once_share_one_schema(start_server, pg_cluster, tmp_path):
    uri = pg_cluster.new_database()
    servers, errors = [], []

    def start(i):
        try:
            servers.append(start_server(data_dir=tmp_path / f"n{i}", store=uri))
        except BaseException as e:  # pytest.fail raises outside Exception
            errors.append(repr(e))

    threads = [threading.Thread(target=start, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors
    assert len(servers) == 3
    # Each migration ran once although three nodes applied them at the same time.
    versions = pg_cluster.psql("SELECT version FROM inferq_schema ORDER BY version", uri_db(uri))
    assert versions == [["1"], ["2"], ["3"], ["4"]]
    # Only the first node to take the lock made an admin key; it works on every node.
    makers = [s for s in servers if (s.data_dir / "admin.key").exists()]
    assert len(makers) == 1
    key = makers[0].key
    job = submit(Api(servers[0].port, key), {"n": 1})
    for s in servers:
        assert Api(s.port, key).status_ok(job, MODEL)["status"] == "pending"


def uri_db(uri):
    return uri.split("///", 1)[1].split("?", 1)[0]


def test_no_job_goes_to_two_workers(start_server, pg_cluster):
    uri = pg_cluster.new_database()
    servers = nodes(start_server, uri, 3)
    jobs = 120
    for i in range(jobs):
        submit(servers[i % 3].api(), {"i": i})

    claimed = []  # (request_id, claim_id)
    lock = threading.Lock()
    errors = []

    def claimer(server):
        api = server.api()
        for _ in range(jobs):  # bounded: never more attempts than jobs
            reply = api.claim(MODEL, claim_timeout=600)
            if reply.status == 204:
                return
            if reply.status != 200:
                errors.append(repr(reply))
                return
            with lock:
                claimed.append((reply.json["request_id"], reply.json["claim_id"]))

    threads = [threading.Thread(target=claimer, args=(servers[i % 3],)) for i in range(9)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    ids = [job for job, _ in claimed]
    assert len(ids) == jobs, f"{len(ids)} claims for {jobs} jobs"
    assert len(set(ids)) == jobs, "a job was handed to two workers"

    # Every claim is valid exactly once: completing through any node works, a second fails.
    for n, (job, claim) in enumerate(claimed):
        api = servers[n % 3].api()
        reply = api.worker_call("complete", MODEL, job, claim, outputs={"n": n})
        assert reply.status == 200, reply
    metrics = servers[1].api().metrics_ok(MODEL)
    assert metrics == {"messages_waiting": 0, "messages_running": 0, "total_jobs": 0}
    job, claim = claimed[0]
    again = servers[2].api().worker_call("complete", MODEL, job, claim, outputs={})
    assert again.status == 409
    assert again.json["status"] == "done"


def test_priority_then_fifo_across_nodes(start_server, pg_cluster):
    uri = pg_cluster.new_database()
    a, b = nodes(start_server, uri, 2)
    submitted = []
    for i, priority in enumerate([0, 5, 0, 5, -3, 10, 0]):
        api = (a if i % 2 == 0 else b).api()
        submitted.append((priority, i, submit(api, {"i": i}, priority=priority)))
    expected = [job for _, _, job in sorted(submitted, key=lambda t: (-t[0], t[1]))]
    got = []
    for i in range(len(expected)):
        got.append(((b if i % 2 == 0 else a).api()).claim_ok(MODEL)["request_id"])
    assert got == expected
    assert a.api().claim(MODEL).status == 204


def test_long_poll_across_nodes(start_server, pg_cluster):
    uri = pg_cluster.new_database()
    a, b = nodes(start_server, uri, 2)
    result = {}

    def wait_on_b():
        started = time.monotonic()
        result["reply"] = b.api().claim(MODEL, wait=20)
        result["elapsed"] = time.monotonic() - started

    waiter = threading.Thread(target=wait_on_b)
    waiter.start()
    time.sleep(0.5)  # let the claim park on node B before the job exists
    job = submit(a.api(), {"hand": "off"})
    waiter.join(30)
    reply = result["reply"]
    assert reply.status == 200, reply
    assert reply.json["request_id"] == job
    # Well before the 20 s wait ended: the NOTIFY or the short poll woke it.
    assert result["elapsed"] < 10


def test_killed_node_leases_expire_and_others_retry(start_server, pg_cluster):
    uri = pg_cluster.new_database()
    a, b = nodes(start_server, uri, 2)
    jobs = [submit(b.api(), {"i": i}) for i in range(4)]
    api_a = a.api()
    held = [api_a.claim_ok(MODEL, claim_timeout=1, worker="doomed")["request_id"] for _ in jobs]
    assert sorted(held) == sorted(jobs)
    a.kill()

    api_b = b.api()
    for job in jobs:
        status = api_b.wait_status(job, MODEL, "pending", timeout=15)
        assert status["retries"] == 1
        history = status["info"]["retry_history"]
        assert len(history) == 1
        assert history[0]["worker"] == "doomed"
        assert history[0]["attempt"] == 1
    again = {api_b.claim_ok(MODEL, claim_timeout=60)["request_id"] for _ in jobs}
    assert again == set(jobs)


def test_late_completion_and_stale_claims_across_nodes(start_server, pg_cluster):
    uri = pg_cluster.new_database()
    a, b = nodes(start_server, uri, 2)
    job = submit(a.api(), {})
    first = a.api().claim_ok(MODEL, claim_timeout=1)["claim_id"]
    b.api().wait_status(job, MODEL, "pending", timeout=15)

    # Nobody claimed it since the expiry: the last claimant may still take it back.
    reply = b.api().worker_call("heartbeat", MODEL, job, first)
    assert reply.status == 200
    assert reply.json["status"] == "running"
    reply = b.api().worker_call("release", MODEL, job, first)
    assert reply.status == 200
    assert reply.json["status"] == "pending"

    second = b.api().claim_ok(MODEL, claim_timeout=60)["claim_id"]
    stale = a.api().worker_call("complete", MODEL, job, first, outputs={"x": 1})
    assert stale.status == 409
    assert stale.json["code"] == "claim_mismatch"
    unknown = a.api().worker_call("fail", MODEL, job, UNKNOWN_CLAIM, error="no")
    assert unknown.status == 409
    done = a.api().worker_call("complete", MODEL, job, second, outputs={"x": 2})
    assert done.status == 200
    assert done.json["status"] == "done"
    status = b.api().status_ok(job, MODEL)
    assert status["outputs"] == {"x": 2}
    assert status["retries"] == 1


def test_idempotency_key_across_nodes(start_server, pg_cluster):
    uri = pg_cluster.new_database()
    a, b = nodes(start_server, uri, 2)
    body = {"model": MODEL, "payload": {"k": 1}}
    first = a.api().post("/v1/queue/submit", body, headers={"Idempotency-Key": "key-1"})
    again = b.api().post("/v1/queue/submit", body, headers={"Idempotency-Key": "key-1"})
    assert first.status == again.status == 200
    assert first.json["request_id"] == again.json["request_id"]
    other = b.api().post("/v1/queue/submit", {"model": MODEL, "payload": {"k": 2}},
                         headers={"Idempotency-Key": "key-1"})
    assert other.status == 409
    assert other.json["code"] == "idempotency_conflict"
    assert a.api().metrics_ok(MODEL)["messages_waiting"] == 1


def test_database_restart_under_load_loses_nothing_acknowledged(start_server, pg_cluster):
    uri = pg_cluster.new_database()
    a, b = nodes(start_server, uri, 2)
    acked, refused, other = [], [], []
    stop = threading.Event()

    def load(server, tag):
        api = server.api(timeout=10)
        for i in range(2000):  # bounded; the test stops it long before
            if stop.is_set():
                return
            try:
                reply = api.submit(MODEL, {"tag": tag, "i": i})
            except OSError as e:
                other.append(repr(e))
                time.sleep(0.05)
                continue
            if reply.status == 200:
                acked.append(reply.json["request_id"])
            elif reply.status == 503:
                refused.append(reply)
                time.sleep(0.02)
            else:
                other.append(repr(reply))

    threads = [threading.Thread(target=load, args=(s, t)) for s, t in ((a, "a"), (b, "b"))]
    for t in threads:
        t.start()
    wait_for(lambda: len(acked) >= 20, 20, "submits before the restart")
    pg_cluster.stop("fast")
    try:
        wait_for(lambda: len(refused) >= 2, 20, "503 while the database is down")
    finally:
        pg_cluster.start()
    before = len(acked)
    wait_for(lambda: len(acked) >= before + 20, 30, "submits after the database came back")
    stop.set()
    for t in threads:
        t.join(30)

    assert not other, other[:5]
    sample = refused[0]
    assert sample.headers.get("retry-after") == "1"
    assert sample.json["type"] == "server_error"
    assert pg_cluster.dir.name in sample.json["message"], sample.json["message"]
    assert any("unreachable" in line and pg_cluster.dir.name in line for line in a.log + b.log)
    assert any("reachable again" in line for line in a.log)

    stored = {row[0] for row in pg_cluster.psql("SELECT id FROM inferq_jobs", uri_db(uri))}
    missing = [job for job in acked if job not in stored]
    assert not missing, f"{len(missing)} acknowledged submits were lost"
    # Each node reconnects on its own backoff, so B may still answer 503 after A is back.
    wait_for(lambda: any("reachable again" in line for line in list(b.log)), 20,
             "node B to reconnect to the database")
    for job in acked[:: max(1, len(acked) // 20)]:
        assert b.api().status_ok(job, MODEL)["status"] == "pending"
    # The FATAL that PostgreSQL sends each connection as it stops is logged in the log's
    # format, not printed raw by libpq.
    raw = [line for line in a.log + b.log if not LOG_LINE_RE.match(line)]
    assert not raw, raw[:5]
    assert any("terminating connection" in line for line in a.log + b.log)


def test_keys_reach_other_nodes(start_server, pg_cluster):
    uri = pg_cluster.new_database()
    a, b = nodes(start_server, uri, 2)
    created = a.api().post("/v1/admin/keys", {"name": "w1", "role": "worker", "models": ["m/*"]})
    assert created.status == 200, created
    worker_key = created.json["key"]
    on_b = Api(b.port, worker_key)
    # Nodes pull key changes every second.
    wait_for(lambda: on_b.get("/v1/queue/status",
                              {"request_id": UNKNOWN_ID, "model": "m/x"}).status == 404, 10,
             "the key made on node A to work on node B")
    assert on_b.claim("m/x").status == 204
    assert on_b.claim("other/x").status == 404  # outside its model patterns

    revoked = b.api().post("/v1/admin/keys/revoke", {"name": "w1"})
    assert revoked.status == 200, revoked
    on_a = Api(a.port, worker_key)
    wait_for(lambda: on_a.claim("m/x").status == 401, 10, "the revocation on B to reach A")
    listed = a.api().get("/v1/admin/keys")
    assert [k for k in listed.json["data"] if k["name"] == "w1"][0]["revoked_at"]


def gauge(api, state):
    reply = api.get("/metrics")
    assert reply.status == 200, reply
    pattern = re.compile(r'^inferq_jobs\{model="%s",state="%s"\} (\d+)$' % (re.escape(MODEL), state),
                         re.M)
    match = pattern.search(reply.raw.decode())
    return int(match.group(1)) if match else None


def test_queue_gauges_are_cluster_wide(start_server, pg_cluster):
    uri = pg_cluster.new_database()
    a, b = nodes(start_server, uri, 2)
    for i in range(3):
        submit(a.api(), {"i": i})
    b.api().claim_ok(MODEL)
    # Each node counts the whole database once per second.
    api_b = b.api()
    wait_for(lambda: gauge(api_b, "pending") == 2 and gauge(api_b, "running") == 1, 10,
             "node B's gauges to count the jobs submitted on node A")
    api_a = a.api()
    wait_for(lambda: gauge(api_a, "pending") == 2 and gauge(api_a, "running") == 1, 10,
             "node A's gauges to count the claim made on node B")


def run_serve(tmp_path, *flags, env=None):
    return subprocess.run([str(INFERQ_BIN), "serve", "--listen", "127.0.0.1:0", "--data-dir",
                           str(tmp_path / "d"), *flags], capture_output=True, text=True,
                          timeout=30, env=env)


@pytest.mark.parametrize("flags, says", [
    (["--store", "mysql://x/y"], '"mysql://x/y" for --store'),
    (["--store", ""], "for --store"),
    (["--pg-pool", "0"], "--pg-pool: expected a whole number from 1 to 64"),
    (["--pg-pool", "65"], "--pg-pool"),
])
def test_bad_store_flags_are_refused(tmp_path, flags, says):
    r = run_serve(tmp_path, *flags)
    assert r.returncode == 2
    assert says in r.stderr


def test_bad_store_from_the_environment_is_refused(tmp_path):
    r = run_serve(tmp_path, env={"INFERQ_STORE": "redis://x"})
    assert r.returncode == 2
    assert "INFERQ_STORE" in r.stderr
    assert "redis://x" in r.stderr


def test_unreachable_database_at_start_names_it(tmp_path):
    missing = tmp_path / "no-socket-here"
    r = run_serve(tmp_path, "--store", f"postgres:///x?host={missing}&port=5999")
    assert r.returncode == 1
    assert "cannot prepare the PostgreSQL database" in r.stderr
    assert str(missing) in r.stderr


def test_store_from_the_environment_and_pool_size(start_server, pg_cluster, tmp_path):
    uri = pg_cluster.new_database()
    proc = subprocess.Popen([str(INFERQ_BIN), "serve", "--listen", "127.0.0.1:0", "--data-dir",
                             str(tmp_path / "env"), "--pg-pool", "2"],
                            env={"INFERQ_STORE": uri}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        lines = []
        for _ in range(200):  # bounded read of the start-up lines
            line = proc.stdout.readline()
            lines.append(line)
            if "listening on" in line or not line:
                break
        assert any("queue on PostgreSQL" in l and "with 2 connections" in l for l in lines), lines
        backends = pg_cluster.psql(f"SELECT count(*) FROM pg_stat_activity WHERE datname = "
                                   f"'{uri_db(uri)}'")
        # 2 task connections and 1 listening connection.
        wait_for(lambda: pg_cluster.psql(f"SELECT count(*) FROM pg_stat_activity WHERE datname = "
                                         f"'{uri_db(uri)}'") == [["3"]], 10,
                 f"3 connections, saw {backends}")
    finally:
        proc.terminate()
        assert proc.wait(10) == 0
