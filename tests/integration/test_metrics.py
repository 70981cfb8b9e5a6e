"""GET /metrics: the Prometheus exposition after a known sequence of job changes.

The strict parser of prometheus_text.py checks every scrape, and so does promtool when it is
installed. Further tests cover the admin key on the main listener, the unauthenticated
--metrics-listen address, label values, the model cap, finished-job gauges across a restart
and a retention purge, and bad flags.
"""

import http.client
import math
import os
import re
import shutil
import subprocess
import threading
import time

import pytest

from prometheus_text import FormatError, parse
from support import (INFERQ_BIN, REJECTED_REQUESTS, REJECTION_FLAGS, RawConn, assert_error,
                     send_rejected_requests, wait_for)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
METRICS_PORT_RE = re.compile(r"serving /metrics without auth on 127\.0\.0\.1:([1-9][0-9]*)")
ALPHA = "metrics/alpha"
BETA = "metrics/beta"
EXPIRY_TIMEOUT = 6.0
# The postgres store recounts the pending and running gauges every --pg-sweep-interval (1 s),
# and its finished-job gauges count the finishes this node committed since it started.
ON_POSTGRES = os.environ.get("INFERQ_TEST_STORE") == "postgres"
RECOUNT_TIMEOUT = 5.0


def get_raw(port, path, key=None, method="GET"):
    """Send one request on a new connection; return (status, headers, body bytes)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        conn.request(method, path, headers=headers)
        resp = conn.getresponse()
        body = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, body
    finally:
        conn.close()


def promtool_check(text):
    """Run `promtool check metrics` on text when promtool is installed (package prometheus)."""
    promtool = shutil.which("promtool")
    if promtool is None:
        return
    result = subprocess.run([promtool, "check", "metrics"], input=text.encode(),
                            capture_output=True, timeout=30)
    assert result.returncode == 0, f"promtool check metrics failed:\n{result.stdout.decode()}" \
                                   f"{result.stderr.decode()}"


def scrape(server, port=None, key=None):
    """Fetch /metrics (with the admin key by default) and return the parsed exposition."""
    status, headers, body = get_raw(port or server.port, "/metrics",
                                    key if key is not None else server.key)
    assert status == 200, f"GET /metrics returned {status}: {body[:300]!r}"
    assert headers.get("content-type") == CONTENT_TYPE, headers
    text = body.decode("utf-8")
    promtool_check(text)
    return parse(text)


def scrape_settled(server, settled, what):
    """Scrape /metrics once on the local store, whose gauges change with each commit. On the
    postgres store scrape until settled(exposition) holds, for up to RECOUNT_TIMEOUT, because
    the pending and running gauges change only at the next recount. Either way the caller
    asserts the exact values on the returned exposition."""
    if not ON_POSTGRES:
        return scrape(server)
    found = {}

    def check():
        found["expo"] = scrape(server)
        try:
            return settled(found["expo"])
        except AssertionError:  # a series the recount has not made yet
            return False

    wait_for(check, RECOUNT_TIMEOUT, what, interval=0.1)
    return found["expo"]


def metrics_port(server):
    return int(wait_for(lambda: next((m.group(1) for m in map(METRICS_PORT_RE.search, server.log)
                                      if m), None), 5, "the metrics listener's address"))


def job_counter(expo, event, model):
    return expo.value(f"inferq_jobs_{event}_total", model=model)


def jobs_gauge(expo, model, state):
    return expo.value("inferq_jobs", model=model, state=state)


def finish(api, model, job, route, **fields):
    reply = api.worker_call(route, model, job["request_id"], job["claim_id"], **fields)
    assert reply.status == 200, f"{route} failed: {reply!r}"


# ---------------------------------------------------------------------------


def test_parser_rejects_malformed():
    """The parser must catch each kind of malformed exposition, or the other tests prove nothing."""
    good = ("# HELP a_total A.\n# TYPE a_total counter\na_total{m=\"x\"} 1\n"
            "# HELP h H.\n# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\n"
            "h_sum 3\nh_count 2\n")
    parse(good)
    bad = {
        "no newline at the end": good[:-1],
        "samples before TYPE": "a_total 1\n# HELP a_total A.\n# TYPE a_total counter\n",
        "second TYPE": good.replace("a_total counter\n", "a_total counter\n# TYPE a_total counter\n"),
        "counter without _total": "# HELP a A.\n# TYPE a counter\na 1\n",
        "bad escape": good.replace('m="x"', 'm="\\t"'),
        "unescaped quote": good.replace('m="x"', 'm="a"b"'),
        "trailing comma": good.replace('m="x"', 'm="x",'),
        "bad label name": good.replace('m="x"', '1m="x"'),
        "duplicate series": good.replace("a_total{m=\"x\"} 1\n", "a_total{m=\"x\"} 1\na_total{m=\"x\"} 2\n"),
        "not cumulative": good.replace('h_bucket{le="+Inf"} 2', 'h_bucket{le="+Inf"} 0').replace(
            "h_count 2", "h_count 0"),
        "+Inf differs from count": good.replace("h_count 2", "h_count 3"),
        "no +Inf bucket": good.replace('h_bucket{le="+Inf"} 2\n', ""),
        "family split": good + "a_total{m=\"y\"} 1\n",
        "empty line": good + "\n",
        "bad value": good.replace("a_total{m=\"x\"} 1", "a_total{m=\"x\"} one"),
        "missing HELP": "# TYPE g gauge\ng 1\n",
    }
    for why, text in bad.items():
        with pytest.raises(FormatError):
            parse(text)
            pytest.fail(f"the parser accepted an exposition with {why}")


def test_known_sequence_counts(start_server):
    server = start_server()
    api = server.api()

    # alpha: complete, fail, an expiry with a retry, a cancel, one running, one pending.
    alpha = [api.submit_ok(ALPHA, {"n": i}) for i in range(6)]
    finish(api, ALPHA, api.claim_ok(ALPHA), "complete", outputs={"ok": True})
    finish(api, ALPHA, api.claim_ok(ALPHA), "fail", error="bad input")
    expiring = api.claim_ok(ALPHA, claim_timeout=1)
    assert expiring["request_id"] == alpha[2]
    body = api.wait_status(alpha[2], ALPHA, "pending", timeout=EXPIRY_TIMEOUT)
    assert body["retries"] == 1
    again = api.claim_ok(ALPHA)
    assert again["request_id"] == alpha[2]
    finish(api, ALPHA, again, "complete", outputs={})
    reply = api.post("/v1/queue/cancel", {"model": ALPHA, "request_id": alpha[3]})
    assert reply.status == 200, reply
    assert api.claim_ok(ALPHA)["request_id"] == alpha[4]

    # beta: a release, a claim that stays running, two pending jobs cleared.
    beta = [api.submit_ok(BETA, {"n": i}) for i in range(3)]
    released = api.claim_ok(BETA)
    finish(api, BETA, released, "release")
    assert api.claim_ok(BETA)["request_id"] == beta[0]
    reply = api.post("/v1/queue/clear", {"model": BETA})
    assert reply.status == 200, reply
    assert reply.json["canceled_count"] == 2, reply

    # HTTP outcomes on a few routes.
    assert api.submit(ALPHA, "not an object").status == 400
    assert api.get("/no/such/path").status == 404
    assert api.status_ok(alpha[0], ALPHA)["status"] == "done"
    assert api.request("DELETE", "/v1/admin/keys/nobody").status == 404

    expo = scrape_settled(
        server, lambda e: (jobs_gauge(e, ALPHA, "pending"), jobs_gauge(e, ALPHA, "running"),
                           jobs_gauge(e, BETA, "pending"), jobs_gauge(e, BETA, "running"))
        == (1, 1, 0, 1), "the recount of the pending and running gauges")
    expected_alpha = {"submitted": 6, "claimed": 5, "completed": 2, "failed": 1, "expired": 1,
                      "retried": 1, "canceled": 1, "released": 0}
    expected_beta = {"submitted": 3, "claimed": 2, "completed": 0, "failed": 0, "expired": 0,
                     "retried": 0, "canceled": 2, "released": 1}
    for event, count in expected_alpha.items():
        assert job_counter(expo, event, ALPHA) == count, f"alpha {event}"
    for event, count in expected_beta.items():
        assert job_counter(expo, event, BETA) == count, f"beta {event}"

    states_alpha = {"pending": 1, "running": 1, "done": 2, "failed": 1, "canceled": 1}
    states_beta = {"pending": 0, "running": 1, "done": 0, "failed": 0, "canceled": 2}
    for state, count in states_alpha.items():
        assert jobs_gauge(expo, ALPHA, state) == count, f"alpha {state}"
    for state, count in states_beta.items():
        assert jobs_gauge(expo, BETA, state) == count, f"beta {state}"
    assert expo.value("inferq_waiting_workers", model=ALPHA) == 0

    # One wait observation per claim, one run observation per completion or failure.
    assert expo.value("inferq_job_wait_seconds_count", model=ALPHA) == 5
    assert expo.value("inferq_job_wait_seconds_count", model=BETA) == 2
    assert expo.value("inferq_job_run_seconds_count", model=ALPHA) == 3
    assert expo.value("inferq_job_run_seconds_count", model=BETA) == 0
    # The retried job waited at least its 1 s lease between submission and its second claim.
    assert expo.value("inferq_job_wait_seconds_bucket", model=ALPHA, le="0.5") <= 4
    assert expo.value("inferq_job_wait_seconds_sum", model=ALPHA) >= 1
    assert expo.value("inferq_job_wait_seconds_bucket", model=ALPHA, le="+Inf") == 5

    requests = "inferq_http_requests_total"
    assert expo.value(requests, route="/v1/queue/submit", code="200") == 9
    assert expo.value(requests, route="/v1/queue/submit", code="400") == 1
    assert expo.value(requests, route="/v1/queue/claim", code="200") == 7
    assert expo.value(requests, route="/v1/queue/complete", code="200") == 2
    assert expo.value(requests, route="other", code="404") == 1
    assert expo.value(requests, route="/v1/admin/keys/", code="404") == 1
    assert expo.value(requests, route="/v1/queue/status", code="200") >= 2
    routes = expo.label_values(requests, "route")
    for route in routes:
        assert route == "other" or route.startswith("/"), route
        assert "?" not in route, route
    assert not any("nobody" in route or "no/such" in route for route in routes), routes
    assert expo.value("inferq_http_request_duration_seconds_count", route="/v1/queue/submit") == 10
    assert expo.value("inferq_http_connections") >= 1

    commits = expo.value("inferq_store_commits_total")
    assert expo.value("inferq_store_commit_failures_total") == 0
    assert expo.value("inferq_store_commit_batch_size_count") == commits
    assert expo.value("inferq_store_commit_duration_seconds_count") == commits
    if ON_POSTGRES:
        # The commit series describe the local store's SQLite writer, which postgres does not use.
        assert commits == 0
    else:
        assert commits >= 1
        # 9 inserts, 7 claims, 2 completes, 1 fail, 1 expiry, 1 cancel, 1 release, 2 cleared.
        assert expo.value("inferq_store_commit_batch_size_sum") >= 24

    assert expo.value("inferq_metrics_models_dropped_total") == 0
    assert expo.family("inferq_build_info").samples[0][1]["version"]
    assert expo.value("process_resident_memory_bytes") > 1 << 20
    assert expo.value("process_open_fds") >= 3
    assert abs(expo.value("process_start_time_seconds") - time.time()) < 600
    assert expo.value("process_cpu_seconds_total") > 0


def test_last_expiry_counts_failed(start_server):
    server = start_server(max_retries=0)
    api = server.api()
    request_id = api.submit_ok(ALPHA, {})
    api.claim_ok(ALPHA, claim_timeout=1)
    api.wait_status(request_id, ALPHA, "failed", timeout=EXPIRY_TIMEOUT)

    expo = scrape(server)
    assert job_counter(expo, "expired", ALPHA) == 1
    assert job_counter(expo, "failed", ALPHA) == 1
    assert job_counter(expo, "retried", ALPHA) == 0
    assert jobs_gauge(expo, ALPHA, "failed") == 1
    assert jobs_gauge(expo, ALPHA, "running") == 0
    assert expo.value("inferq_job_run_seconds_count", model=ALPHA) == 1
    assert expo.value("inferq_job_run_seconds_bucket", model=ALPHA, le="0.5") == 0


def test_sprocket_routes_count(start_server):
    server = start_server()
    api = server.api()
    model = "metrics/sprocket"
    done_id = api.submit_ok(model, {})
    failed_id = api.submit_ok(model, {})
    for request_id, status, fields in ((done_id, "done", {"payload": {"url": "x"}}),
                                       (failed_id, "failed", {"info": {"error": "oom"}})):
        reply = api.get("/internal/v1/queue/retrieve?model=metrics/sprocket&timeout=0s")
        assert reply.status == 200, reply
        assert reply.json["data"]["request_id"] == request_id, reply
        reply = api.post("/internal/v1/videos/status",
                         {"model": model, "request_id": request_id, "status": "running"})
        assert reply.status == 200, reply
        reply = api.post("/internal/v1/videos/status",
                         {"model": model, "request_id": request_id, "status": status, **fields})
        assert reply.status == 200, reply

    expo = scrape(server)
    assert job_counter(expo, "claimed", model) == 2
    assert job_counter(expo, "completed", model) == 1
    assert job_counter(expo, "failed", model) == 1
    assert jobs_gauge(expo, model, "done") == 1
    assert jobs_gauge(expo, model, "failed") == 1
    assert expo.value("inferq_job_run_seconds_count", model=model) == 2
    assert expo.value("inferq_http_requests_total", route="/internal/v1/videos/status",
                      code="200") == 4
    assert expo.value("inferq_http_requests_total", route="/internal/v1/queue/retrieve",
                      code="200") == 2


def test_waiting_workers_gauge(start_server):
    server = start_server()
    api = server.api()
    model = "metrics/gamma"
    result = {}

    def long_poll():
        result["reply"] = server.api().claim(model, wait=10)

    waiter = threading.Thread(target=long_poll)
    waiter.start()
    def waiting():
        samples = scrape(server).samples("inferq_waiting_workers")
        return [value for labels, value in samples if labels == {"model": model}] == [1]

    wait_for(waiting, 5, "the long-poll claim to show in inferq_waiting_workers")
    request_id = api.submit_ok(model, {})
    waiter.join(10)
    assert not waiter.is_alive()
    assert result["reply"].status == 200
    assert result["reply"].json["request_id"] == request_id
    expo = scrape_settled(server, lambda e: jobs_gauge(e, model, "running") == 1,
                          "the recount of the running gauge")
    assert expo.value("inferq_waiting_workers", model=model) == 0
    assert jobs_gauge(expo, model, "running") == 1


def test_admin_key_required(start_server):
    server = start_server()
    api = server.api()
    keys = []
    for name, role in (("c", "client"), ("w", "worker")):
        reply = api.post("/v1/admin/keys", {"name": name, "role": role, "models": ["*"]})
        assert reply.status == 200, reply
        keys.append(reply.json["key"])

    status, headers, body = get_raw(server.port, "/metrics")
    assert status == 401, body
    assert "www-authenticate" in headers
    status, _, body = get_raw(server.port, "/metrics", "iq_" + "0" * 64)
    assert status == 401, body
    for key in keys:
        status, _, body = get_raw(server.port, "/metrics", key)
        assert status == 403, body
        assert b"inferq_" not in body
    status, headers, body = get_raw(server.port, "/metrics", server.key, method="HEAD")
    assert status == 200
    assert body == b""
    assert headers["content-type"] == CONTENT_TYPE
    assert int(headers["content-length"]) > 1000
    status, headers, _ = get_raw(server.port, "/metrics", server.key, method="POST")
    assert status == 405
    assert headers.get("allow") == "GET"

    expo = scrape(server)
    assert expo.value("inferq_http_requests_total", route="/metrics", code="401") == 2
    assert expo.value("inferq_http_requests_total", route="/metrics", code="403") == 2


def test_metrics_listen_without_auth(start_server):
    server = start_server(metrics_listen="127.0.0.1:0")
    port = metrics_port(server)
    assert port != server.port
    api = server.api()
    api.submit_ok(ALPHA, {})

    expo = scrape(server, port=port, key="")
    assert job_counter(expo, "submitted", ALPHA) == 1
    # Any Authorization header is ignored there, even an invalid one.
    status, _, _ = get_raw(port, "/metrics", "not-a-key")
    assert status == 200

    for path in ("/v1/queue/status?model=m&request_id=x", "/healthz", "/metrics/", "/"):
        status, headers, body = get_raw(port, path)
        assert status == 404, (path, body)
        assert b"only GET /metrics" in body
    status, headers, body = get_raw(port, "/metrics", method="POST")
    assert status == 405, body
    assert headers.get("allow") == "GET", body
    status, _, body = get_raw(port, "/metrics", method="HEAD")
    assert status == 200
    assert body == b""

    # The main listener still wants the admin key.
    assert get_raw(server.port, "/metrics")[0] == 401
    assert get_raw(server.port, "/metrics", server.key)[0] == 200

    expo = scrape(server, port=port, key="")
    requests = "inferq_http_requests_total"
    assert expo.value(requests, route="/metrics", code="200") >= 3
    assert expo.value(requests, route="other", code="404") == 4
    assert expo.value(requests, route="/metrics", code="405") == 1
    assert expo.value(requests, route="/metrics", code="401") == 1


def test_rejected_requests_counted(start_server):
    """Requests that the HTTP layer rejects before routing count under route="unrouted", on
    both listeners, and never under the route that their path names."""
    server = start_server(metrics_listen="127.0.0.1:0", **REJECTION_FLAGS)
    port = metrics_port(server)
    send_rejected_requests(server)
    conn = server.raw()
    conn.send(b"GARBAGE\r\n\r\n")
    assert conn.read_response().status == 400
    conn = RawConn(port)
    conn.send(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"p" * 2000 + b"\r\n\r\n")
    assert conn.read_response().status == 431
    conn.close()

    expo = scrape(server, port=port, key="")
    requests = "inferq_http_requests_total"
    expected = {}
    for _, _, status, _, _ in REJECTED_REQUESTS:
        expected[str(status)] = expected.get(str(status), 0) + 1
    expected["400"] += 1
    expected["431"] += 1
    counted = {labels["code"]: value for labels, value in expo.samples(requests)
               if labels["route"] == "unrouted"}
    assert counted == expected, counted
    total = sum(expected.values())
    assert expo.value("inferq_http_request_duration_seconds_count", route="unrouted") == total
    # The 408 waited its 1 s request timeout from the request's first byte.
    assert expo.value("inferq_http_request_duration_seconds_sum", route="unrouted") >= 1.0
    for labels, _ in expo.samples(requests):
        if labels["route"] != "unrouted":
            assert labels["code"] not in ("408", "413", "431", "501"), labels


def test_metrics_listen_stops_with_server(start_server):
    server = start_server(metrics_listen="127.0.0.1:0")
    port = metrics_port(server)
    assert get_raw(port, "/metrics")[0] == 200
    assert server.stop() == 0
    with pytest.raises(OSError):
        get_raw(port, "/metrics")


def test_model_names_in_labels(start_server):
    server = start_server()
    api = server.api()
    # Model names allow only A-Z a-z 0-9 . _ : / -, so a quote or backslash never reaches a
    # label; the escaping itself is covered by the unit tests of metrics.c.
    for name in ['q"uote', "back\\slash", "new\nline"]:
        assert_error(api.submit(name, {}), 400, "invalid_field", "model")
    odd = "Org.v2:large_model/x-1"
    api.submit_ok(odd, {})
    expo = scrape(server)
    assert job_counter(expo, "submitted", odd) == 1
    models = expo.label_values("inferq_jobs_submitted_total", "model")
    assert models == {odd}, models


def test_model_cap(start_server):
    server = start_server(metrics_max_models=2)
    api = server.api()
    for name in ("cap/m1", "cap/m2", "cap/m3", "cap/m4", "cap/m3"):
        api.submit_ok(name, {})
    api.claim_ok("cap/m4")

    expo = scrape_settled(
        server, lambda e: (jobs_gauge(e, "__other__", "pending"),
                           jobs_gauge(e, "__other__", "running")) == (2, 1),
        "the recount of the pending and running gauges")
    models = expo.label_values("inferq_jobs_submitted_total", "model")
    assert models == {"cap/m1", "cap/m2", "__other__"}, models
    assert job_counter(expo, "submitted", "cap/m1") == 1
    assert job_counter(expo, "submitted", "__other__") == 3
    assert job_counter(expo, "claimed", "__other__") == 1
    assert jobs_gauge(expo, "__other__", "pending") == 2
    assert jobs_gauge(expo, "__other__", "running") == 1
    assert expo.value("inferq_metrics_models_dropped_total") == 2
    assert len(expo.samples("inferq_jobs")) == 3 * 5


def test_finished_counts_survive_restart(start_server):
    server = start_server()
    api = server.api()
    ids = [api.submit_ok(ALPHA, {"n": i}) for i in range(4)]
    finish(api, ALPHA, api.claim_ok(ALPHA), "complete", outputs={})
    finish(api, ALPHA, api.claim_ok(ALPHA), "fail", error="x")
    assert api.post("/v1/queue/cancel", {"model": ALPHA, "request_id": ids[2]}).status == 200
    before = scrape(server)
    assert job_counter(before, "submitted", ALPHA) == 4

    assert server.stop() == 0
    server.restart()
    after = scrape_settled(server, lambda e: jobs_gauge(e, ALPHA, "pending") == 1,
                           "the first recount of the pending gauge")
    # The local store counts finished jobs from its SQLite file at start. On postgres the
    # pending and running gauges come from the database, but the finished gauges count only
    # what the restarted node finished since it started.
    finished = 0 if ON_POSTGRES else 1
    expected = {"pending": 1, "running": 0, "done": finished, "failed": finished,
                "canceled": finished}
    for state, count in expected.items():
        assert jobs_gauge(after, ALPHA, state) == count, state
    # Counters count since the process started.
    assert job_counter(after, "submitted", ALPHA) == 0
    assert job_counter(after, "completed", ALPHA) == 0


def test_retention_purge_lowers_finished(start_server):
    server = start_server(retention="2s")
    api = server.api()
    request_id = api.submit_ok(ALPHA, {})
    canceled = api.submit_ok(ALPHA, {})
    finish(api, ALPHA, api.claim_ok(ALPHA), "complete", outputs={})
    assert api.post("/v1/queue/cancel", {"model": ALPHA, "request_id": canceled}).status == 200
    expo = scrape(server)
    assert jobs_gauge(expo, ALPHA, "done") == 1
    assert jobs_gauge(expo, ALPHA, "canceled") == 1

    wait_for(lambda: api.status(request_id, ALPHA).status == 404, 15, "the purge of the done job")
    wait_for(lambda: api.status(canceled, ALPHA).status == 404, 15, "the purge of the canceled job")
    expo = scrape(server)
    # On postgres the finished gauges count this node's finishes since it started, which a
    # retention delete (run by whichever node sweeps) does not lower.
    kept = 1 if ON_POSTGRES else 0
    assert jobs_gauge(expo, ALPHA, "done") == kept
    assert jobs_gauge(expo, ALPHA, "canceled") == kept
    assert job_counter(expo, "completed", ALPHA) == 1


@pytest.mark.parametrize("flag, value, expected", [
    ("--metrics-max-models", "0", "a whole number from 1 to 100000"),
    ("--metrics-max-models", "100001", "a whole number from 1 to 100000"),
    ("--metrics-max-models", "ten", "a whole number from 1 to 100000"),
    ("--log-format", "xml", "text or json"),
])
def test_bad_flag_values(tmp_path, flag, value, expected):
    result = subprocess.run([str(INFERQ_BIN), "serve", "--listen", "127.0.0.1:0", "--data-dir",
                             str(tmp_path / "data"), flag, value], capture_output=True, timeout=30)
    assert result.returncode == 2, result
    message = result.stderr.decode()
    assert flag in message, message
    assert value in message, message
    assert expected in message, message
    assert not (tmp_path / "data").exists()


def test_bad_metrics_listen(tmp_path, start_server):
    result = subprocess.run([str(INFERQ_BIN), "serve", "--listen", "127.0.0.1:0", "--data-dir",
                             str(tmp_path / "data"), "--metrics-listen", "nowhere"],
                            capture_output=True, timeout=30)
    assert result.returncode == 2, result
    message = result.stderr.decode()
    assert "--metrics-listen" in message, message
    assert "nowhere" in message, message

    # A port that is taken: the main listener's own.
    server = start_server()
    result = subprocess.run([str(INFERQ_BIN), "serve", "--listen", "127.0.0.1:0", "--data-dir",
                             str(tmp_path / "data2"), "--metrics-listen",
                             f"127.0.0.1:{server.port}"], capture_output=True, timeout=30)
    assert result.returncode == 1, result
    assert "--metrics-listen" in result.stderr.decode()
    assert not (tmp_path / "data2").exists()
