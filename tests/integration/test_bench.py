"""`inferq bench`: short runs of each scenario against a test server, with the figures the
tool prints checked against the server's own state (queue metrics, job status), and bad flags
rejected with a message that names the value. No timing is asserted: only counts and shapes.
"""

import http.client
import http.server
import json
import os
import re
import threading
import time

import pytest

from cli_support import closed_port, describe, run_cli, server_url
from prometheus_text import parse

TEST_STORE = os.environ.get("INFERQ_TEST_STORE", "local")


def bench(server, tmp_path, *args, model="bench"):
    """Run `inferq bench ARGS --json` against server and return (CompletedProcess, result)."""
    argv = ["bench", *map(str, args), "--server", server_url(server), "--key", server.key,
            "--model", model, "--json"]
    proc = run_cli(argv, cwd=tmp_path)
    assert proc.returncode == 0, describe(proc)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["errors"] == 0, result
    assert "error" not in result, result
    return proc, result


def check_latency(result, name="latency_ms"):
    lat = result[name]
    assert lat["count"] > 0, result
    assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["p999"] <= lat["max"], lat


def test_submit_count_matches_the_queue(start_server, tmp_path):
    server = start_server()
    proc, r = bench(server, tmp_path, "submit", "-n", 300, "-c", 4, "-P", 4, model="sub")
    assert r["scenario"] == "submit"
    assert r["model"] == "sub", r
    assert r["unit"] == "requests"
    assert r["units"] == 300, r
    assert r["requests"] == 300, r
    assert r["submitted"] == 300, r
    assert r["statuses"] == {"200": 300}, r
    assert r["rate"] > 0, r
    assert r["seconds"] > 0, r
    check_latency(r)
    metrics = server.api().metrics_ok("sub")
    assert metrics["messages_waiting"] == 300, metrics


def test_submit_by_duration_stops_by_itself(start_server, tmp_path):
    server = start_server()
    _, r = bench(server, tmp_path, "submit", "-d", 1, "-c", 2, model="dur")
    # Submits answered after the end are not in the rate, but every one is a job.
    assert r["submitted"] >= r["units"] > 0, r
    assert server.api().metrics_ok("dur")["messages_waiting"] == r["submitted"], r
    assert 0.9 < r["seconds"] < 5, r


def test_status_reads_a_finished_job(start_server, tmp_path):
    server = start_server()
    _, r = bench(server, tmp_path, "status", "-n", 200, "-c", 3, model="st")
    assert r["units"] == 200, r
    assert r["statuses"] == {"200": 200}, r
    check_latency(r)
    # The set-up made one job and finished it; nothing is left waiting or running.
    metrics = server.api().metrics_ok("st")
    assert metrics["messages_waiting"] == 0, metrics
    assert metrics["messages_running"] == 0, metrics


def test_claim_complete_drains_the_prefill(start_server, tmp_path):
    server = start_server()
    _, r = bench(server, tmp_path, "claim-complete", "--prefill", 250, "-c", 5, model="cc")
    assert r["unit"] == "jobs", r
    assert r["prefilled"] == 250, r
    assert r["submitted"] == 0, r
    assert r["units"] == 250, r
    assert r["claimed"] == 250, r
    assert r["completed"] == 250, r
    # 250 claims and 250 completes, plus one empty claim (204) per connection or fewer.
    assert r["statuses"]["200"] == 500, r
    metrics = server.api().metrics_ok("cc")
    assert metrics == {"messages_waiting": 0, "messages_running": 0, "total_jobs": 0}, metrics


def test_claim_complete_refill_keeps_the_queue_level(start_server, tmp_path):
    server = start_server()
    api = server.api()
    _, r = bench(server, tmp_path, "claim-complete", "--prefill", 100, "--refill", "-n", 150,
                 "-c", 2, model="refill")
    assert r["completed"] >= 150, r
    assert r["claimed"] == r["completed"], r
    # Each complete submits one job, except those that fell after the end.
    waiting = api.metrics_ok("refill")["messages_waiting"]
    assert waiting == 100 + r["submitted"] - r["completed"], (waiting, r)
    assert 98 <= waiting <= 100, (waiting, r)


def test_lifecycle_leaves_no_job_running(start_server, tmp_path):
    server = start_server()
    api = server.api()
    _, r = bench(server, tmp_path, "lifecycle", "-d", 1, "-c", 3, "--workers", 3, "--backlog", 50,
                 model="life")
    assert r["unit"] == "jobs", r
    assert r["units"] > 0, r
    assert r["claimed"] == r["completed"] >= r["units"], r
    metrics = api.metrics_ok("life")
    assert metrics["messages_running"] == 0, metrics
    assert metrics["messages_waiting"] == r["submitted"] - r["completed"], (metrics, r)
    assert metrics["messages_waiting"] <= 50, metrics


def test_submit_batch_counts_jobs(start_server, tmp_path):
    server = start_server()
    _, r = bench(server, tmp_path, "submit", "--batch", 50, "-n", 500, "-c", 2, model="sb")
    assert r["unit"] == "jobs", r
    assert r["batch"] == 50, r
    assert r["units"] == 500, r
    assert r["submitted"] == 500, r
    assert r["requests"] == 10, r
    assert r["statuses"] == {"200": 10}, r
    assert server.api().metrics_ok("sb")["messages_waiting"] == 500


def test_lifecycle_batch_leaves_no_job_running(start_server, tmp_path):
    server = start_server()
    api = server.api()
    _, r = bench(server, tmp_path, "lifecycle", "--batch", 20, "-n", 400, "-c", 2,
                 "--workers", 3, "--backlog", 100, model="lb")
    assert r["units"] >= 400, r
    assert r["claimed"] == r["completed"], r
    assert r["submitted"] % 20 == 0, r
    metrics = api.metrics_ok("lb")
    assert metrics["messages_running"] == 0, metrics
    assert metrics["messages_waiting"] == r["submitted"] - r["completed"], (metrics, r)


def test_lifecycle_count_with_idle_workers(start_server, tmp_path):
    server = start_server()
    api = server.api()
    _, r = bench(server, tmp_path, "lifecycle", "-n", 200, "-c", 2, "--workers", 2,
                 "--idle-workers", 20, model="idle")
    assert r["units"] == 200, r
    assert r["completed"] == 200, r
    assert r["submitted"] == 200, r
    assert r["idle_workers"] == 20, r
    assert api.metrics_ok("idle") == {"messages_waiting": 0, "messages_running": 0,
                                      "total_jobs": 0}
    # The idle workers long-polled a model that got no job.
    assert api.metrics_ok("idle-idle")["total_jobs"] == 0


def test_handoff_measures_each_job(start_server, tmp_path):
    server = start_server()
    _, r = bench(server, tmp_path, "handoff", "-n", 40, "--workers", 2, model="ho")
    assert r["unit"] == "hand-offs", r
    assert r["units"] == 40, r
    assert r["submitted"] == r["claimed"] == r["completed"] == 40, r
    assert r["handoff_ms"]["count"] == 40, r
    assert r["submit_to_claim_ms"]["count"] == 40, r
    assert r["handoff_ms"]["p50"] <= r["submit_to_claim_ms"]["max"], r
    check_latency(r, "submit_to_claim_ms")
    assert server.api().metrics_ok("ho")["messages_running"] == 0


def test_text_report(start_server, tmp_path):
    server = start_server()
    proc = run_cli(["bench", "submit", "-n", "20", "-c", "1", "--server", server_url(server),
                    "--key", server.key], cwd=tmp_path)
    assert proc.returncode == 0, describe(proc)
    assert "inferq bench submit:" in proc.stdout, proc.stdout
    assert re.search(r", model bench-[0-9]+-[0-9]+", proc.stdout), proc.stdout
    assert "requests   20" in proc.stdout, proc.stdout
    assert "p99" in proc.stdout, proc.stdout
    assert "errors     0" in proc.stdout, proc.stdout


class _Static(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    seen = []

    def _answer(self):
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length) if length else b""
        _Static.seen.append((self.command, self.path, body))
        data = b'{"ok":true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = _answer

    def log_message(self, *args):
        pass


def requests_answered(server, route, code="200"):
    """Return how many requests on route this server answered with code, from its /metrics."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.request("GET", "/metrics", headers={"Authorization": f"Bearer {server.key}"})
    resp = conn.getresponse()
    body = resp.read().decode()
    conn.close()
    assert resp.status == 200, body[:300]
    samples = parse(body).samples("inferq_http_requests_total")
    return sum(value for labels, value in samples if labels == {"route": route, "code": code})


def test_servers_share_the_connections(start_server, tmp_path):
    # --auth none lets one --key serve two local servers, whose keys differ.
    first = start_server(auth="none")
    second = start_server(auth="none")
    urls = [server_url(first), server_url(second)]
    proc = run_cli(["bench", "submit", "-n", "300", "-c", "4", "--server", urls[0], "--server",
                    urls[1], "--key", first.key, "--model", "spread", "--json"], cwd=tmp_path)
    assert proc.returncode == 0, describe(proc)
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    assert r["errors"] == 0, r
    assert r["units"] == 300, r
    assert r["targets"] == [u.removeprefix("http://") for u in urls], r
    assert r["worker_targets"] == r["targets"], r
    on_first = requests_answered(first, "/v1/queue/submit")
    on_second = requests_answered(second, "/v1/queue/submit")
    assert on_first > 0, (on_first, on_second)
    assert on_second > 0, (on_first, on_second)
    assert on_first + on_second == 300, (on_first, on_second)


class _EmptyQueue(http.server.BaseHTTPRequestHandler):
    """Answers every claim with 204 after 20 ms, as a server with no job for the model."""
    protocol_version = "HTTP/1.1"
    seen = []

    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length) if length else b""
        _EmptyQueue.seen.append((self.path, self.headers.get("Host"), json.loads(body)))
        time.sleep(0.02)
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_worker_server_gets_the_claims(start_server, tmp_path):
    server = start_server()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _EmptyQueue)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        _EmptyQueue.seen.clear()
        workers = f"http://127.0.0.1:{httpd.server_address[1]}"
        proc = run_cli(["bench", "lifecycle", "-d", "1", "-c", "2", "--workers", "2",
                        "--server", server_url(server), "--worker-server", workers, "--key",
                        server.key, "--model", "split", "--json"], cwd=tmp_path)
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert proc.returncode == 0, describe(proc)
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    assert r["errors"] == 0, r
    assert r["worker_targets"] == [workers.removeprefix("http://")], r
    assert r["submitted"] > 0, r
    assert r["claimed"] == 0, r
    assert len(_EmptyQueue.seen) >= 2, _EmptyQueue.seen
    for path, host, body in _EmptyQueue.seen:
        assert path == "/v1/queue/claim", path
        assert host == "127.0.0.1", host
        assert body["model"] == "split", body
    # The submitters stayed on the inferq server, and no claim went there.
    assert requests_answered(server, "/v1/queue/submit") == r["submitted"], r
    assert requests_answered(server, "/v1/queue/claim") == 0
    assert requests_answered(server, "/v1/queue/claim", "204") == 0


@pytest.mark.skipif(TEST_STORE != "postgres",
                    reason="two nodes share their jobs only on the postgres store")
def test_handoff_between_nodes(start_server, tmp_path):
    submit_node = start_server()
    worker_node = start_server()
    proc = run_cli(["bench", "handoff", "-n", "30", "--workers", "2", "--server",
                    server_url(submit_node), "--worker-server", server_url(worker_node), "--key",
                    submit_node.key, "--model", "cross", "--json"], cwd=tmp_path)
    assert proc.returncode == 0, describe(proc)
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    assert r["errors"] == 0, r
    assert r["units"] == 30, r
    assert r["submitted"] == 30, r
    assert r["claimed"] == 30, r
    assert r["completed"] == 30, r
    assert r["handoff_ms"]["count"] == 30, r
    assert requests_answered(submit_node, "/v1/queue/submit") == 30
    assert requests_answered(submit_node, "/v1/queue/claim") == 0
    assert requests_answered(worker_node, "/v1/queue/claim") == 30
    assert requests_answered(worker_node, "/v1/queue/complete") == 30
    assert submit_node.api().metrics_ok("cross")["messages_running"] == 0


def test_get_and_post_any_url(tmp_path):
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Static)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}/ceiling?x=1"
        _Static.seen.clear()
        proc = run_cli(["bench", "get", url, "-n", "30", "-c", "2", "--json"], cwd=tmp_path)
        assert proc.returncode == 0, describe(proc)
        r = json.loads(proc.stdout)
        assert r["units"] == 30, r
        assert r["statuses"] == {"200": 30}, r
        assert r["model"] is None, r
        proc = run_cli(["bench", "post", url, "-n", "10", "-c", "1", "--body", '{"a":1}', "--json"],
                       cwd=tmp_path)
        assert proc.returncode == 0, describe(proc)
        assert json.loads(proc.stdout)["units"] == 10
        assert ("GET", "/ceiling?x=1", b"") in _Static.seen
        assert _Static.seen.count(("POST", "/ceiling?x=1", b'{"a":1}')) == 10
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_unreachable_server_exits_3(tmp_path):
    proc = run_cli(["bench", "submit", "-n", "5", "--server", f"http://127.0.0.1:{closed_port()}",
                    "--key", "k"], cwd=tmp_path)
    assert proc.returncode == 3, describe(proc)
    assert "cannot connect to 127.0.0.1:" in proc.stderr, proc.stderr


def test_wrong_key_is_reported_as_errors(start_server, tmp_path):
    server = start_server()
    proc = run_cli(["bench", "submit", "-n", "5", "-c", "1", "--server", server_url(server),
                    "--key", "not-a-key", "--json"], cwd=tmp_path)
    assert proc.returncode == 1, describe(proc)
    r = json.loads(proc.stdout)
    # The first 401 ends the run: every later request would fail the same way.
    assert r["errors"] == 1, r
    assert r["statuses"] == {"401": 1}, r
    assert "the server rejected the API key with HTTP 401" in r["error"], r


@pytest.mark.parametrize("args, message", [
    ([], "missing the scenario"),
    (["fly"], 'unknown scenario "fly"'),
    (["submit", "-c", "0"], 'invalid -c "0"'),
    (["submit", "-c", "many"], 'invalid -c "many"'),
    (["submit", "-P", "2000"], 'invalid -P "2000": use a whole number from 1 to 1024'),
    (["submit", "-d", "-1"], 'invalid -d "-1"'),
    (["submit", "-n", "0"], 'invalid -n "0"'),
    (["submit", "-d", "1", "-n", "5"], "give -d or -n, not both"),
    (["get"], "get needs a URL"),
    (["get", "ftp://127.0.0.1/"], 'invalid URL "ftp://127.0.0.1/"'),
    (["submit", "http://127.0.0.1:1/"], "only get and post take a URL"),
    (["submit", "--server", "http://127.0.0.1:99999"], 'invalid URL "http://127.0.0.1:99999"'),
    (["submit", "--model", "a b"], 'invalid --model "a b"'),
    (["submit", "--payload", "[1]"], 'invalid --payload "[1]": give a JSON object'),
    (["submit", "--payload", "{"], 'invalid --payload "{"'),
    (["submit", "--workers", "2"], "--workers and --idle-workers apply to lifecycle and handoff"),
    (["handoff", "--idle-workers", "2"], "--idle-workers applies to lifecycle only"),
    (["status", "--wait", "1"], "--wait applies to lifecycle and handoff only"),
    (["lifecycle", "--wait", "61"], 'invalid --wait "61": use seconds from 0 to 60'),
    (["submit", "--prefill", "5"], "--prefill and --refill apply to claim-complete only"),
    (["claim-complete", "--refill"], "--refill keeps the queue full, so it needs -d or -n"),
    (["handoff", "-P", "2"], "-P applies to submit, status, get, post and lifecycle"),
    (["submit", "--body", "{}"], "--body applies to post only"),
    (["status", "--batch", "5"], "--batch applies to submit and lifecycle only"),
    (["handoff", "--batch", "5"], "--batch applies to submit and lifecycle only"),
    (["submit", "--batch", "0"], 'invalid --batch "0": use a whole number from 1 to 100000'),
    (["submit", "--key-file", "/nonexistent/key"], "cannot read an API key from --key-file"),
    (["submit", "--worker-server", "http://127.0.0.1:1"],
     "--worker-server applies to claim-complete, lifecycle and handoff only"),
    (["get", "http://127.0.0.1:1/", "--server", "http://127.0.0.1:2"],
     "get sends to its URL; --server and --worker-server name inferq servers"),
    (["submit", "--server", "http://127.0.0.1:1", "--server", "http://127.0.0.1:0"],
     'invalid URL "http://127.0.0.1:0"'),
    (["handoff", "--worker-server", "ftp://127.0.0.1/"], 'invalid URL "ftp://127.0.0.1/"'),
    (["submit", "--bogus"], 'unknown option "--bogus"'),
    (["submit", "-c"], "needs a value"),
])
def test_bad_flags(tmp_path, args, message):
    proc = run_cli(["bench", *args], cwd=tmp_path)
    assert proc.returncode == 2, describe(proc)
    assert message in proc.stderr, proc.stderr
    assert "inferq bench --help" in proc.stderr, proc.stderr


@pytest.mark.parametrize("scenario", ["submit", "lifecycle", "claim-complete"])
def test_rejected_key_stops_the_run(start_server, tmp_path, scenario):
    server = start_server()
    argv = ["bench", scenario, "--server", server_url(server), "--key", "iq_not_a_key", "-c",
            4, "-n", 100000, "--json"]
    proc = run_cli(list(map(str, argv)), cwd=tmp_path)
    assert proc.returncode == 1, describe(proc)
    assert "the server rejected the API key with HTTP 401, so the run stopped" in proc.stderr
    assert "--key or INFERQ_API_KEY" in proc.stderr, proc.stderr
    if scenario == "claim-complete":
        return  # the prefill pipelines 16 submits per connection before the first response
    # Only the requests in flight at the first response were sent: fewer than the server's 20
    # failed authentications per address that start its 429s, so a second run gets 401 too.
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["statuses"] == {"401": result["requests"]}, result
    assert result["requests"] <= 8, result
    again = run_cli(["bench", "submit", "--server", server_url(server), "--key",
                     "iq_not_a_key", "-n", "1"], cwd=tmp_path)
    assert "HTTP 401" in again.stderr, describe(again)


def test_help_lists_every_scenario(tmp_path):
    proc = run_cli(["bench", "--help"], cwd=tmp_path)
    assert proc.returncode == 0, describe(proc)
    for name in ("submit", "status", "claim-complete", "lifecycle", "handoff", "get URL",
                 "post URL", "--pipeline", "--idle-workers", "--refill", "--worker-server",
                 "--json"):
        assert name in proc.stdout, name
    top = run_cli(["--help"], cwd=tmp_path)
    assert "bench" in top.stdout
