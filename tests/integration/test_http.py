"""HTTP/1.1 behaviour: keep-alive, pipelining, Connection: close, chunked bodies,
Expect: 100-continue, framing errors, timeouts, routing errors and health checks."""

import http.client
import json
import re
import subprocess
import time

import pytest

from support import INFERQ_BIN, assert_error, http_request, parse_json

MODEL = "test/http"


def submit_request(server, payload, extra_headers=None):
    body = json.dumps({"model": MODEL, "payload": payload}).encode()
    return http_request("POST", "/v1/queue/submit", body, extra_headers, key=server.key)


def test_keep_alive(server):
    api = server.api()
    api.get("/healthz")
    sock = api.conn.sock
    assert sock is not None
    for i in range(5):
        assert api.submit(MODEL, {"i": i}).status == 200
        assert api.metrics(MODEL).status == 200
    assert api.conn.sock is sock, "the server closed a keep-alive connection"
    assert api.metrics_ok(MODEL)["messages_waiting"] == 5


def test_pipelined_in_order(server):
    conn = server.raw()
    requests = b""
    for i in range(10):
        if i % 2 == 0:
            requests += submit_request(server, {"i": i})
        else:
            requests += http_request("GET", f"/v1/queue/metrics?model={MODEL}", key=server.key)
    conn.send(requests)

    ids = []
    for i in range(10):
        response = conn.read_response()
        assert response.status == 200, f"response {i}: {response!r}"
        body = response.json
        if i % 2 == 0:
            assert set(body) == {"requestId", "request_id"}, f"response {i}: {body}"
            ids.append(body["request_id"])
        else:
            assert set(body) == {"messages_waiting", "messages_running", "total_jobs"}, body

    api = server.api()
    for n, request_id in enumerate(ids):
        assert api.status_ok(request_id, MODEL)["inputs"] == {"i": n * 2}


def test_pipelined_submits_keep_order(server):
    conn = server.raw()
    conn.send(b"".join(submit_request(server, {"i": i}) for i in range(10)))
    ids = [conn.read_response().json["request_id"] for _ in range(10)]
    api = server.api()
    claimed = [api.claim_ok(MODEL)["request_id"] for _ in range(10)]
    assert claimed == ids


def test_connection_close(server):
    conn = server.raw()
    conn.send(http_request("GET", "/healthz", headers={"Connection": "close"}, key=server.key))
    response = conn.read_response()
    assert response.status == 200, response
    assert response.headers.get("connection", "").lower() == "close"
    assert conn.wait_closed(5), "connection still open after Connection: close"
    assert conn.buf == b""


def test_http10_closes(server):
    conn = server.raw()
    conn.send(b"GET /healthz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
    response = conn.read_response()
    assert response.status == 200, response
    assert conn.wait_closed(5), "HTTP/1.0 connection without keep-alive left open"


def test_chunked_body(server):
    conn = server.raw()
    body = json.dumps({"model": MODEL, "payload": {"via": "chunked"}}).encode()
    pieces = [body[:5], body[5:17], body[17:]]
    chunks = b"".join(b"%x\r\n" % len(p) + p + b"\r\n" for p in pieces)
    head = (b"POST /v1/queue/submit HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Authorization: Bearer " + server.key.encode() + b"\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n")
    conn.send(head + chunks + b"0\r\n\r\n")
    response = conn.read_response()
    assert response.status == 200, response
    request_id = response.json["request_id"]
    assert server.api().status_ok(request_id, MODEL)["inputs"] == {"via": "chunked"}

    # The connection stays usable after a chunked request.
    conn.send(http_request("GET", "/healthz", key=server.key))
    assert conn.read_response().status == 200


def test_chunked_body_split_writes(server):
    conn = server.raw()
    body = json.dumps({"model": MODEL, "payload": {"n": 1}}).encode()
    conn.send(b"POST /v1/queue/submit HTTP/1.1\r\nHost: 127.0.0.1\r\n"
              b"Authorization: Bearer " + server.key.encode() + b"\r\n"
              b"Transfer-Encoding: chunked\r\n\r\n")
    for byte in (b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n"):
        conn.send(bytes([byte]))
    assert conn.read_response().status == 200


def test_expect_continue(server):
    conn = server.raw()
    body = json.dumps({"model": MODEL, "payload": {"expect": 1}}).encode()
    conn.send(b"POST /v1/queue/submit HTTP/1.1\r\nHost: 127.0.0.1\r\n"
              b"Authorization: Bearer " + server.key.encode() + b"\r\n"
              b"Expect: 100-continue\r\nContent-Length: %d\r\n\r\n" % len(body))
    interim = conn.read_response()
    assert interim.status == 100, interim
    conn.send(body)
    response = conn.read_response()
    assert response.status == 200, response
    assert server.api().status_ok(response.json["request_id"], MODEL)["inputs"] == {"expect": 1}


def test_expect_continue_over_limit(start_server):
    server = start_server(max_body_bytes=100)
    conn = server.raw()
    conn.send(b"POST /v1/queue/submit HTTP/1.1\r\nHost: 127.0.0.1\r\n"
              b"Expect: 100-continue\r\nContent-Length: 5000\r\n\r\n")
    response = conn.read_response()
    assert response.status == 413, response
    assert response.json["code"] == "body_too_large"


def test_bare_cr_in_header(server):
    conn = server.raw()
    conn.send(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Evil: a\rb\r\n\r\n")
    response = conn.read_response()
    assert response.status == 400, response
    assert response.json["type"] == "invalid_request_error"
    assert conn.wait_closed(5), "connection left open after a bare CR"


def test_bare_cr_line_end(server):
    conn = server.raw()
    conn.send(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\rX-Other: 1\r\n\r\n")
    response = conn.read_response()
    assert response.status == 400, response
    assert conn.wait_closed(5), "connection left open after a bare CR"


def test_length_and_chunked(server):
    conn = server.raw()
    body = json.dumps({"model": MODEL, "payload": {}}).encode()
    conn.send(b"POST /v1/queue/submit HTTP/1.1\r\nHost: 127.0.0.1\r\n"
              b"Content-Length: %d\r\nTransfer-Encoding: chunked\r\n\r\n" % len(body)
              + b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n")
    response = conn.read_response()
    assert response.status == 400, response
    assert conn.wait_closed(5), "connection left open after an ambiguous body length"
    assert server.api().metrics_ok(MODEL)["total_jobs"] == 0


def test_two_content_lengths(server):
    conn = server.raw()
    conn.send(b"POST /v1/queue/submit HTTP/1.1\r\nHost: 127.0.0.1\r\n"
              b"Content-Length: 2\r\nContent-Length: 40\r\n\r\n{}")
    response = conn.read_response()
    assert response.status == 400, response


def test_garbage_request_line(server):
    conn = server.raw()
    conn.send(b"HELLO\r\n\r\n")
    response = conn.read_response()
    assert response.status == 400, response
    assert conn.wait_closed(5)


def test_slow_request_408(start_server):
    server = start_server(request_timeout="1s")
    conn = server.raw(timeout=10)
    started = time.monotonic()
    conn.send(b"POST /v1/queue/submit HTTP/1.1\r\nHost: 127.0.0.1\r\n"
              b"Content-Length: 100\r\n\r\n{\"model\"")
    response = conn.read_response()
    elapsed = time.monotonic() - started
    assert response.status == 408, response
    body = response.json
    assert body["type"] == "timeout_error"
    assert body["code"] == "request_timeout"
    assert 0.9 <= elapsed < 8, f"408 after {elapsed:.2f} s with --request-timeout 1s"
    assert conn.wait_closed(5), "connection left open after 408"
    assert server.api().metrics_ok(MODEL)["total_jobs"] == 0


def test_slow_headers_408(start_server):
    server = start_server(request_timeout="1s")
    conn = server.raw(timeout=10)
    conn.send(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    response = conn.read_response()
    assert response.status == 408, response
    assert conn.wait_closed(5)


def test_idle_timeout_closes(start_server):
    server = start_server(idle_timeout="1s")
    conn = server.raw(timeout=10)
    conn.send(http_request("GET", "/healthz", key=server.key))
    assert conn.read_response().status == 200
    started = time.monotonic()
    assert conn.wait_closed(8), "idle keep-alive connection not closed"
    assert time.monotonic() - started >= 0.9
    assert conn.buf == b"", f"bytes sent on an idle connection: {conn.buf!r}"


def test_healthz(api):
    reply = api.get("/healthz")
    assert reply.status == 200, reply
    assert reply.json == {"status": "ok"}
    assert reply.headers["content-type"].startswith("application/json")


def test_readyz(api):
    reply = api.get("/readyz")
    assert reply.status == 200, reply
    assert reply.json == {"status": "ready"}


def test_health_without_auth(server):
    conn = server.raw()
    conn.send(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
              b"GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    assert conn.read_response().status == 200
    assert conn.read_response().status == 200


@pytest.mark.parametrize("method,path,allowed", [
    ("GET", "/v1/queue/submit", "POST"),
    ("PUT", "/v1/queue/claim", "POST"),
    ("DELETE", "/v1/queue/cancel", "POST"),
    ("GET", "/v1/queue/complete", "POST"),
    ("POST", "/v1/queue/status", "GET"),
    ("POST", "/v1/queue/metrics", "GET"),
    ("POST", "/healthz", "GET"),
])
def test_wrong_method(api, method, path, allowed):
    body = {"model": MODEL} if method in ("POST", "PUT") else None
    reply = api.request(method, path, body)
    assert_error(reply, 405, "method_not_allowed")
    allow = [m.strip() for m in reply.headers.get("allow", "").split(",")]
    assert allowed in allow, f"Allow header: {reply.headers.get('allow')!r}"


@pytest.mark.parametrize("method,path", [
    ("GET", "//"),
    ("GET", "/ui"),
    ("GET", "/ui/"),
    ("GET", "/v1/queue/nope"),
    ("POST", "/v1/queue"),
    ("GET", "/v1/queue/status/extra"),
    ("GET", "/v2/queue/status"),
])
def test_unknown_path(api, method, path):
    reply = api.request(method, path, {} if method == "POST" else None)
    assert_error(reply, 404, "not_found")


@pytest.mark.parametrize("method,path,hint", [
    ("POST", "/queue/submit", "did you mean POST /v1/queue/submit?"),
    ("POST", "/v1/queue/submitt", "did you mean POST /v1/queue/submit?"),
    ("GET", "/v1/queue/stats", "did you mean GET /v1/queue/status?"),
    ("GET", "/v1/admin/workerz", "did you mean GET /v1/admin/workers?"),
])
def test_unknown_path_names_nearest_route(api, method, path, hint):
    reply = api.request(method, path, {} if method == "POST" else None)
    assert_error(reply, 404, "not_found")
    assert hint in reply.json["message"], reply.json


def test_unknown_path_far_from_routes_has_no_hint(api):
    reply = api.request("GET", "/something/else/entirely", None)
    assert_error(reply, 404, "not_found")
    assert "did you mean" not in reply.json["message"], reply.json
    assert "see docs/api.md for the routes" in reply.json["message"], reply.json


def test_error_responses_are_json(api):
    for reply in (api.post("/v1/queue/submit", b"nope"), api.get("/nope"),
                  api.get("/v1/queue/submit")):
        assert reply.headers["content-type"].startswith("application/json"), reply.headers
        assert set(parse_json(reply.raw)) <= {"code", "message", "param", "type"}, reply.raw


def test_query_percent_decoding(api):
    request_id = api.submit_ok("org/model:v1", {})
    reply = api.request("GET", f"/v1/queue/status?model=org%2Fmodel%3Av1&request_id={request_id}")
    assert reply.status == 200, reply
    assert reply.json["model"] == "org/model:v1"


def test_pipelined_after_long_poll(server):
    conn = server.raw(timeout=10)
    claim = json.dumps({"model": MODEL, "wait": 1}).encode()
    conn.send(http_request("POST", "/v1/queue/claim", claim, key=server.key)
              + http_request("GET", "/healthz", key=server.key))
    started = time.monotonic()
    first = conn.read_response()
    assert first.status == 204, first
    assert time.monotonic() - started >= 0.9
    second = conn.read_response()
    assert second.status == 200, second
    assert second.json == {"status": "ok"}


def test_pipelined_with_error(server):
    conn = server.raw()
    conn.send(submit_request(server, {"n": 1})
              + http_request("POST", "/v1/queue/submit", b"{not json", key=server.key)
              + submit_request(server, {"n": 2}))
    first = conn.read_response()
    second = conn.read_response()
    third = conn.read_response()
    assert first.status == 200, first
    assert second.status == 400, second
    assert second.json["code"] == "invalid_json"
    assert third.status == 200, third
    api = server.api()
    assert api.status_ok(third.json["request_id"], MODEL)["inputs"] == {"n": 2}


def test_chunk_missing_crlf(server):
    # Chunk data must end with CRLF; a parser that skips any two bytes there can be made to
    # read a different request boundary than a proxy in front of it.
    conn = server.raw()
    body = json.dumps({"model": MODEL, "payload": {}}).encode()
    conn.send(b"POST /v1/queue/submit HTTP/1.1\r\nHost: 127.0.0.1\r\n"
              b"Transfer-Encoding: chunked\r\n\r\n"
              + b"%x\r\n" % len(body) + body + b"XX0\r\n\r\n")
    response = conn.read_response()
    assert response.status == 400, response
    assert conn.wait_closed(5), "connection left open after a malformed chunk"
    assert server.api().metrics_ok(MODEL)["total_jobs"] == 0


def test_missing_host_rejected(server):
    # RFC 9112 section 3.2: a server must respond 400 to an HTTP/1.1 request without Host.
    conn = server.raw()
    conn.send(b"GET /healthz HTTP/1.1\r\n\r\n")
    response = conn.read_response()
    assert response.status == 400, response


@pytest.mark.parametrize("flag", ["--listen", "--tls-listen", "--metrics-listen"])
@pytest.mark.parametrize("value", ["127.0.0.1:99999", "127.0.0.1", "example.com:80", ":8080",
                                   "[::1]8080", "127.0.0.1:-1"])
def test_bad_listen_address_is_flag_error(tmp_path, flag, value):
    args = [str(INFERQ_BIN), "serve", "--data-dir", str(tmp_path / "data"), flag, value]
    if flag != "--listen":
        args += ["--listen", "127.0.0.1:0"]
    result = subprocess.run(args, capture_output=True, timeout=30)
    assert result.returncode == 2, result
    message = result.stderr.decode()
    assert flag in message, message
    assert value in message, message
    assert "127.0.0.1:8080" in message, message
    assert not (tmp_path / "data").exists()


def test_listen_on_localhost(tmp_path):
    proc = subprocess.Popen([str(INFERQ_BIN), "serve", "--listen", "localhost:0", "--data-dir",
                             str(tmp_path / "data")], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        port = None
        for _ in range(200):  # start-up lines; the listening line comes last
            line = proc.stdout.readline()
            match = re.search(r"listening on localhost:(\d+) \(http\)", line)
            if match:
                port = int(match.group(1))
                break
        assert port, "no 'listening on localhost:PORT' line"
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/healthz")
        assert conn.getresponse().status == 200
        conn.close()
    finally:
        proc.terminate()
        assert proc.wait(timeout=30) == 0
