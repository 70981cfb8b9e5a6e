"""Log lines in both formats, and the access log.

--log-format json writes one JSON object per line with ts, level, subsystem, msg and fields,
and job lines carry request_id and model. --access-log writes one line per request. That line
holds no Authorization value, no key and no query string, and a long path is cut with a marker.
"""

import http.client
import json
import os
import re
import signal
import subprocess
from pathlib import Path

from support import (INFERQ_BIN, REJECTED_REQUESTS, REJECTION_FLAGS, send_rejected_requests,
                     wait_for)

TS_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
TEXT_LINE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z (debug|info |warn |error) "
                          r"[a-z]+: ")
MARK = "...(truncated)"
PATH_MAX = 128  # bytes of a logged path before the mark
MODEL = "logs/model"
# Messages of lines about one job; each must carry request_id and model.
ACCESS_FIELDS = {"ts", "level", "subsystem", "msg", "method", "route", "path", "status",
                 "duration_ms", "bytes", "remote", "peer", "request"}
JOB_MESSAGES = {"submitted", "claimed", "change committed", "lease expired, job back to pending",
                "lease expired after the last retry, job failed", "sprocket update"}


def json_lines(server):
    """Parse every line the server wrote; fail on the first that is not one JSON object."""
    lines = []
    for text in server.log:
        try:
            obj = json.loads(text)
        except ValueError as err:
            raise AssertionError(f"log line is not JSON ({err}): {text!r}") from None
        assert isinstance(obj, dict), text
        lines.append(obj)
    return lines


def access_lines(lines):
    return [line for line in lines if line.get("subsystem") == "access"]


def run_job_sequence(server):
    """Submit, claim, complete; submit, claim with a 1 s lease and wait for its expiry."""
    api = server.api()
    done_id = api.submit_ok(MODEL, {"n": 1})
    job = api.claim_ok(MODEL, worker="gpu \"0\"")
    reply = api.worker_call("complete", MODEL, done_id, job["claim_id"], outputs={})
    assert reply.status == 200, reply
    expiring_id = api.submit_ok(MODEL, {"n": 2})
    api.claim_ok(MODEL, claim_timeout=1)
    api.wait_status(expiring_id, MODEL, "pending", timeout=6)
    return api, done_id, expiring_id


def test_json_lines_carry_fields(start_server):
    server = start_server(log_format="json", log_level="debug")
    _, done_id, expiring_id = run_job_sequence(server)
    assert server.stop() == 0

    lines = json_lines(server)
    assert len(lines) > 10
    for line in lines:
        assert TS_RE.match(line.get("ts", "")), line
        assert line.get("level") in ("debug", "info", "warn", "error"), line
        assert isinstance(line.get("msg"), str), line
        assert line["msg"], line
        assert isinstance(line.get("subsystem"), str), line
        assert line["subsystem"], line
    assert any(line["msg"].startswith("listening on 127.0.0.1:") for line in lines)
    assert lines[-1]["msg"] == "stopped"

    job_lines = [line for line in lines if line["msg"] in JOB_MESSAGES]
    assert job_lines
    for line in job_lines:
        assert line.get("request_id") in (done_id, expiring_id), line
        assert line.get("model") == MODEL, line
    messages = {(line["msg"], line["request_id"]) for line in job_lines}
    assert ("submitted", done_id) in messages
    assert ("claimed", done_id) in messages
    assert ("lease expired, job back to pending", expiring_id) in messages
    states = [line["state"] for line in job_lines
              if line["msg"] == "change committed" and line["request_id"] == done_id]
    assert states == ["pending", "running", "done"], states

    expiry = next(line for line in job_lines if line["msg"].startswith("lease expired"))
    assert expiry["level"] == "info"
    assert expiry["subsystem"] == "lease"
    assert expiry["retries"] == 1
    claimed = next(line for line in job_lines if line["msg"] == "claimed")
    assert claimed["worker"] == "gpu \"0\""


def test_text_lines_default(start_server):
    server = start_server(log_level="debug")
    _, done_id, _ = run_job_sequence(server)
    assert server.stop() == 0

    for text in server.log:
        assert TEXT_LINE_RE.match(text), text
    submitted = [text for text in server.log if " queue: submitted " in text]
    assert submitted, server.log_tail()
    assert f"request_id={done_id} model={MODEL}" in submitted[0]
    assert any(' worker="gpu \\"0\\""' in text for text in server.log)
    assert not any(" access: " in text for text in server.log)


def test_start_line_counts_local_jobs(start_server):
    """The local store logs how many jobs it loaded at start. A postgres node keeps its jobs in
    the database and reads none from the local file, so it logs no such count."""
    server = start_server()
    api = server.api()
    api.submit_ok(MODEL, {"n": 1})
    server.kill()
    server.restart()
    loaded = [text for text in server.log if "pending and running jobs" in text]
    if os.environ.get("INFERQ_TEST_STORE") != "postgres":
        assert any("loaded 1 pending and running jobs" in text for text in loaded), loaded
    else:
        assert loaded == [], loaded


def test_access_log_lines(start_server):
    server = start_server(log_format="json", access_log=True)
    key = server.key
    api = server.api()
    request_id = api.submit_ok(MODEL, {"secret-looking": "payload"})
    api.status_ok(request_id, MODEL)
    assert api.get("/v1/queue/status", {"request_id": request_id, "model": MODEL,
                                        "signature": "sig-SHOULD-NOT-APPEAR"}).status == 200
    conn = server.raw()
    conn.send(b"GET /unknown HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer iq_wrong-key-VALUE\r\n\r\n")
    assert conn.read_response().status == 404
    long_path = "/" + "p" * 5000
    conn.send(f"GET {long_path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    assert conn.read_response().status == 404
    conn.send(b'GET /odd"path\\\xc3\xa9\xff HTTP/1.1\r\nHost: x\r\n\r\n')
    assert conn.read_response().status == 404
    assert api.get("/v1/queue/status", {"request_id": request_id, "model": MODEL},
                   headers={"Authorization": "Bearer nope"}).status == 401

    # The server writes each access line before the response; the test reads them on a thread.
    wait_for(lambda: len(access_lines(json_lines(server))) >= 7, 5, "seven access log lines")
    access = access_lines(json_lines(server))
    assert len(access) == 7, access
    for line in access:
        assert set(line) == ACCESS_FIELDS, line
        assert line["level"] == "info"
        assert line["msg"] == "request"
        assert line["duration_ms"] >= 0
        assert line["bytes"] >= 0
        assert line["remote"] == "127.0.0.1", line
        assert re.fullmatch(r"127\.0\.0\.1:[0-9]+", line["peer"]), line
        assert "?" not in line["path"]
    numbers = [line["request"] for line in access]
    assert numbers == sorted(numbers)
    assert len(set(numbers)) == len(numbers)

    submit = access[0]
    assert (submit["method"], submit["route"], submit["path"], submit["status"]) == \
        ("POST", "/v1/queue/submit", "/v1/queue/submit", 200)
    assert submit["bytes"] > 0
    assert access[3]["route"] == "other"
    assert access[3]["path"] == "/unknown"
    cut = access[4]["path"]
    assert cut == "/" + "p" * (PATH_MAX - 1) + MARK, cut
    assert access[5]["path"] == "/odd\"path\\\u00e9\\xff"
    assert access[6]["status"] == 401
    assert access[6]["route"] == "/v1/queue/status"

    whole_log = "\n".join(server.log)
    for secret in (key, "wrong-key-VALUE", "Bearer nope", "sig-SHOULD-NOT-APPEAR", "Bearer iq_",
                   "secret-looking"):
        assert secret not in whole_log, f"{secret!r} appears in the log"


def test_access_log_rejected_requests(start_server):
    """Requests that the HTTP layer rejects before routing get an access line each, with the
    route "unrouted", the status and body bytes sent, and "-" for what was not read."""
    server = start_server(log_format="json", access_log=True, **REJECTION_FLAGS)
    lengths = send_rejected_requests(server)

    want = len(REJECTED_REQUESTS)
    wait_for(lambda: len(access_lines(json_lines(server))) >= want, 5, f"{want} access log lines")
    access = access_lines(json_lines(server))
    assert len(access) == want, access
    for (case, _, status, method, path), length, line in zip(REJECTED_REQUESTS, lengths, access):
        assert set(line) == ACCESS_FIELDS, (case, line)
        assert line["route"] == "unrouted", (case, line)
        assert line["status"] == status, (case, line)
        assert line["method"] == method, (case, line)
        assert line["path"] == path, (case, line)
        assert line["bytes"] == length, (case, line)
        assert line["remote"] == "127.0.0.1", (case, line)
        assert re.fullmatch(r"127\.0\.0\.1:[0-9]+", line["peer"]), (case, line)
    numbers = [line["request"] for line in access]
    assert len(set(numbers)) == len(numbers), numbers
    timed_out = access[[case for case, *_ in REJECTED_REQUESTS].index("request_timeout")]
    assert timed_out["duration_ms"] >= 1000, timed_out
    assert "QUERY-NOT-LOGGED" not in "\n".join(server.log)


def forwarded_healthz(server, forwarded_for):
    """GET /healthz with X-Forwarded-For, then return its access line."""
    conn = server.raw()
    conn.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: " + forwarded_for.encode()
              + b"\r\n\r\n")
    assert conn.read_response().status == 200
    wait_for(lambda: access_lines(json_lines(server)), 5, "the access log line")
    return access_lines(json_lines(server))[-1]


def test_access_log_forwarded_client(start_server):
    """Behind a --trusted-proxy, remote is the last X-Forwarded-For entry and peer the proxy,
    also for a request rejected before routing once its headers were read."""
    server = start_server(log_format="json", access_log=True, trusted_proxy="127.0.0.1/32",
                          max_body_bytes=1000)
    line = forwarded_healthz(server, "198.51.100.7, 203.0.113.9")
    assert line["remote"] == "203.0.113.9", line
    assert re.fullmatch(r"127\.0\.0\.1:[0-9]+", line["peer"]), line

    conn = server.raw()
    conn.send(b"POST /v1/queue/submit HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 203.0.113.10\r\n"
              b"Content-Length: 5000\r\n\r\n")
    assert conn.read_response().status == 413
    wait_for(lambda: len(access_lines(json_lines(server))) >= 2, 5, "the second access log line")
    line = access_lines(json_lines(server))[-1]
    assert line["route"] == "unrouted", line
    assert line["status"] == 413, line
    assert line["remote"] == "203.0.113.10", line
    assert re.fullmatch(r"127\.0\.0\.1:[0-9]+", line["peer"]), line


def test_access_log_ignores_untrusted_forwarded(start_server):
    """Without --trusted-proxy, X-Forwarded-For is ignored and remote is the peer's IP."""
    server = start_server(log_format="json", access_log=True)
    line = forwarded_healthz(server, "203.0.113.9")
    assert line["remote"] == "127.0.0.1", line
    assert re.fullmatch(r"127\.0\.0\.1:[0-9]+", line["peer"]), line


def listening_port(pid, timeout):
    """Return the TCP port process pid listens on, read from /proc (the server logs nothing)."""

    def find():
        inodes = set()
        for fd in (Path(f"/proc/{pid}/fd")).iterdir():
            try:
                target = os.readlink(fd)
            except FileNotFoundError:  # closed since the listing
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
        for row in Path("/proc/net/tcp").read_text().splitlines()[1:]:
            fields = row.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                return int(fields[1].split(":")[1], 16)
        return None

    return wait_for(find, timeout, f"process {pid} to listen")


def test_access_log_whatever_level(tmp_path, start_server):
    """--log-level error hides the start-up lines, but not the access log."""
    # A first start creates the admin key. That start commits the key while it already
    # listens and before it handles SIGTERM, so the test below reuses the data dir and
    # its server answers only once it is fully started.
    data_dir = tmp_path / "data"
    assert start_server(data_dir=data_dir).stop() == 0
    proc = subprocess.Popen([str(INFERQ_BIN), "serve", "--listen", "127.0.0.1:0", "--data-dir",
                             str(data_dir), "--log-level", "error", "--access-log"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        port = listening_port(proc.pid, 10)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/healthz")
        assert conn.getresponse().status == 200
        conn.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    lines = err.decode().splitlines()
    assert len(lines) == 1, lines
    assert TEXT_LINE_RE.match(lines[0]), lines[0]
    assert " info  access: request method=GET route=/healthz path=/healthz status=200 " in lines[0]
    assert re.search(r" duration_ms=[0-9.e-]+ bytes=15 remote=127\.0\.0\.1 peer=127\.0\.0\.1:\d+ "
                     r"request=1$",
                     lines[0]), lines[0]
