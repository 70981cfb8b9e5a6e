"""Hostile clients: slowloris, bodies that never finish, many idle connections, a client that
pipelines without reading, pipelined floods, oversized headers, request-smuggling shapes and
--max-connections. In every case a normal client on the side must keep being served.

INFERQ_TEST_CONNECTIONS sets the idle connection count (default 2000; `make stress` uses
10000). The test process raises its own RLIMIT_NOFILE soft limit up to the hard limit.
"""

import json
import os
import resource
import select
import socket
import threading
import time

import pytest

from support import http_request, wait_for

MODEL = "test/hostile"
IDLE_CONNECTIONS = int(os.environ.get("INFERQ_TEST_CONNECTIONS", "2000"))
RSS_LIMIT = 200 * 1024 * 1024


def rss_bytes(server):
    """Return the server's resident set size from /proc/PID/status."""
    with open(f"/proc/{server.proc.pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS line in /proc/PID/status")


def raise_fd_limit(needed):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(hard, needed)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert soft >= needed, (f"this test needs {needed} open files, but RLIMIT_NOFILE hard limit "
                            f"is {hard}; raise it (ulimit -Hn) or lower INFERQ_TEST_CONNECTIONS")


def side_ok(side):
    """Check that the normal client on the side is served."""
    reply = side.get("/healthz")
    assert reply.status == 200, f"side client not served: {reply!r}"
    reply = side.metrics(MODEL)
    assert reply.status == 200, f"side client not served: {reply!r}"


def expect_response_and_close(conn, status, timeout=5.0):
    response = conn.read_response()
    assert response.status == status, response
    assert conn.wait_closed(timeout), f"connection left open after {status}"
    return response


def trickle(conn, data, interval, limit):
    """Send data one byte every interval seconds until the server responds or closes.

    Returns the seconds from the first byte until the server's first bytes arrived, or None
    when all bytes were sent (at most `limit` of them) without a response.
    """
    started = time.monotonic()
    for byte in data[:limit]:
        readable, _, _ = select.select([conn.sock], [], [], interval)
        if readable:
            return time.monotonic() - started
        try:
            conn.send(bytes([byte]))
        except (BrokenPipeError, ConnectionResetError):
            return time.monotonic() - started
    readable, _, _ = select.select([conn.sock], [], [], interval)
    return time.monotonic() - started if readable else None


# ---------------------------------------------------------------------------
# Slow clients.


def test_slowloris_headers_408(start_server):
    server = start_server(request_timeout="1s")
    side = server.api()
    conn = server.raw(timeout=10)
    head = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 200
    elapsed = trickle(conn, head, 0.2, limit=40)
    assert elapsed is not None, "no answer to headers trickled for 8 s with --request-timeout 1s"
    response = expect_response_and_close(conn, 408)
    assert response.json["code"] == "request_timeout"
    assert elapsed < 3.0, f"408 after {elapsed:.1f} s: each byte restarted the request timer"
    side_ok(side)


def test_slow_body_never_finishes_408(start_server):
    server = start_server(request_timeout="1s")
    side = server.api()
    conn = server.raw(timeout=10)
    body = json.dumps({"model": MODEL, "payload": {"p": "x" * 300}}).encode()
    conn.send(b"POST /v1/queue/submit HTTP/1.1\r\nHost: 127.0.0.1\r\n"
              b"Authorization: Bearer " + server.key.encode() + b"\r\n"
              b"Content-Length: %d\r\n\r\n" % len(body))
    elapsed = trickle(conn, body[:-1], 0.2, limit=40)
    assert elapsed is not None, "no answer to a body trickled for 8 s with --request-timeout 1s"
    response = expect_response_and_close(conn, 408)
    assert response.json["code"] == "request_timeout"
    assert elapsed < 3.0, f"408 after {elapsed:.1f} s: each byte restarted the request timer"
    side_ok(side)
    assert side.metrics_ok(MODEL)["total_jobs"] == 0


def test_slow_chunked_body_408(start_server):
    server = start_server(request_timeout="1s")
    side = server.api()
    conn = server.raw(timeout=10)
    conn.send(b"POST /v1/queue/submit HTTP/1.1\r\nHost: 127.0.0.1\r\n"
              b"Authorization: Bearer " + server.key.encode() + b"\r\n"
              b"Transfer-Encoding: chunked\r\n\r\n")
    elapsed = trickle(conn, b"1\r\n{\r\n" * 100, 0.2, limit=40)
    assert elapsed is not None, "no answer to chunks trickled for 8 s with --request-timeout 1s"
    expect_response_and_close(conn, 408)
    assert elapsed < 3.0, f"408 after {elapsed:.1f} s: each chunk restarted the request timer"
    side_ok(side)


# ---------------------------------------------------------------------------
# Many connections.


def open_idle(port, count):
    conns = []
    for _ in range(count):
        conns.append(socket.create_connection(("127.0.0.1", port), timeout=10))
    return conns


def serve_each(conns, key):
    """Send one request on every connection; return the connections not answered with 200."""
    request = http_request("GET", "/healthz", key=key)
    for sock in conns:
        sock.sendall(request)
    failures = []
    for i, sock in enumerate(conns):
        data = b""
        try:
            while b"\r\n\r\n" not in data:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                data += chunk
        except OSError as e:
            data += repr(e).encode()
        if not data.startswith(b"HTTP/1.1 200"):
            failures.append((i, data[:80]))
    return failures


def test_many_idle_connections(start_server):
    raise_fd_limit(IDLE_CONNECTIONS + 200)
    server = start_server(max_connections=IDLE_CONNECTIONS + 100)
    side = server.api()
    side_ok(side)
    before = rss_bytes(server)
    conns = open_idle(server.port, IDLE_CONNECTIONS)
    try:
        side_ok(side)
        failures = serve_each(conns, server.key)
        assert not failures, (f"{len(failures)} of {IDLE_CONNECTIONS} connections not served, "
                              f"first: {failures[:3]}\n{server.log_tail()}")
        side_ok(side)
        grown = rss_bytes(server) - before
        print(f"{IDLE_CONNECTIONS} connections: RSS grew {grown} bytes, "
              f"{grown // IDLE_CONNECTIONS} per connection")
        assert rss_bytes(server) < RSS_LIMIT
    finally:
        for sock in conns:
            sock.close()
    side_ok(side)


def test_fd_limit_below_connections(start_server):
    # A server started with the common default soft limit of 1024 open files must still take
    # its --max-connections (up to the hard limit), or at least keep serving new clients.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    count = 2000
    if hard != resource.RLIM_INFINITY and hard < count + 200:
        pytest.fail(f"RLIMIT_NOFILE hard limit {hard} is below {count + 200}; raise it")
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))
    try:
        server = start_server()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    raise_fd_limit(count + 200)
    side = server.api()
    conns = open_idle(server.port, count)
    try:
        failures = serve_each(conns, server.key)
        late = server.api()
        reply = None
        try:
            reply = late.get("/healthz")
        except OSError as e:
            reply = e
        assert not failures, (
            f"server started with RLIMIT_NOFILE soft limit 1024 (hard {hard}) and "
            f"--max-connections 10000 served only {count - len(failures)} of {count} "
            f"connections; first unserved: {failures[:2]}; a new client got {reply!r}\n"
            f"{server.log_tail(5)}")
    finally:
        for sock in conns:
            sock.close()
    side_ok(side)


def test_max_connections_limit(start_server):
    limit = 20
    server = start_server(max_connections=limit)
    side = server.api()
    side_ok(side)
    conns = [side]
    raws = [server.raw() for _ in range(limit - 1)]
    for conn in raws:
        conn.send(http_request("GET", "/healthz", key=server.key))
        assert conn.read_response().status == 200

    extra = server.raw()
    try:
        extra.send(http_request("GET", "/healthz", key=server.key))
    except (BrokenPipeError, ConnectionResetError):
        pass
    assert extra.wait_closed(5), "connection over --max-connections was not closed"
    assert extra.buf == b"", f"connection over the limit got bytes: {extra.buf!r}"
    wait_for(lambda: any(f"connection limit of {limit} reached" in line for line in server.log),
             5, "the log line about the connection limit")

    # The first N still work.
    side_ok(conns[0])
    for conn in raws:
        conn.send(http_request("GET", "/healthz", key=server.key))
        assert conn.read_response().status == 200

    # Once one closes, a new connection is taken.
    raws.pop().close()

    def new_connection_served():
        conn = server.raw()
        try:
            conn.send(http_request("GET", "/healthz", key=server.key))
            return conn.read_response().status == 200
        except (ConnectionError, OSError):
            return False

    wait_for(new_connection_served, 5, "a connection after one of the first N closed")


# ---------------------------------------------------------------------------
# Pipelining.


def test_unread_pipeline_bounded_memory(start_server):
    server = start_server()
    side = server.api()
    request_id = side.submit_ok(MODEL, {"blob": "y" * (1024 * 1024)})
    before = rss_bytes(server)

    # Each 200-byte status request requests a 1 MiB response, and the client never reads. A
    # server that stops reading while responses wait keeps a few of them in memory, and one
    # that keeps parsing keeps all 600.
    count = 600
    sock = socket.create_connection(("127.0.0.1", server.port))
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.settimeout(2.0)
        request = http_request("GET", f"/v1/queue/status?request_id={request_id}&model={MODEL}",
                               key=server.key)
        sent = 0
        try:
            while sent < count:
                sock.sendall(request)
                sent += 1
        except socket.timeout:
            pass  # the server stopped reading: the wanted backpressure
        peak = before
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and peak < RSS_LIMIT:
            peak = max(peak, rss_bytes(server))
            time.sleep(0.05)
        print(f"unread pipeline: {sent} requests sent ({sent} MiB of responses asked), "
              f"RSS {before} -> {peak} bytes")
        side_ok(side)
        assert side.status_ok(request_id, MODEL)["status"] == "pending"
        assert peak < RSS_LIMIT, (f"server RSS reached {peak} bytes (from {before}) after {sent} "
                                  f"pipelined requests for a 1 MiB response that the client "
                                  f"never read; limit {RSS_LIMIT}")
    finally:
        sock.close()
    side_ok(side)


def test_pipelined_flood(start_server):
    server = start_server()
    side = server.api()
    count = 5000
    request = http_request("GET", f"/v1/queue/metrics?model={MODEL}", key=server.key)
    results = {}

    def flood(index):
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=20)
        received = [b""]

        def reader():
            total = 0
            try:
                while total < count:
                    chunk = sock.recv(65536)
                    if not chunk:
                        break
                    received[0] += chunk
                    total = received[0].count(b"HTTP/1.1 ")
            except OSError:
                pass

        thread = threading.Thread(target=reader)
        thread.start()
        sock.sendall(request * count)
        thread.join(30)
        sock.close()
        data = received[0]
        results[index] = (data.count(b"HTTP/1.1 200 "), data.count(b"HTTP/1.1 "))

    floods = [threading.Thread(target=flood, args=(i,)) for i in range(4)]
    for t in floods:
        t.start()
    for _ in range(20):
        side_ok(side)
    for t in floods:
        t.join(40)
    for index in range(4):
        assert results.get(index) == (count, count), f"flood {index}: {results.get(index)}"
    side_ok(side)
    assert rss_bytes(server) < RSS_LIMIT


# ---------------------------------------------------------------------------
# Headers and smuggling.


def test_oversized_header_431(server):
    side = server.api()
    conn = server.raw()
    conn.send(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n")
    response = expect_response_and_close(conn, 431)
    assert response.json["code"] == "headers_too_large"
    side_ok(side)


def test_endless_headers_431(server):
    # Headers that never end must be cut off at the limit, not buffered.
    side = server.api()
    conn = server.raw(timeout=10)
    conn.send(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    sent = 0
    try:
        while sent < 4 * 1024 * 1024:
            readable, _, _ = select.select([conn.sock], [], [], 0)
            if readable:
                break
            conn.send(b"X-Filler-%d: %s\r\n" % (sent, b"b" * 100))
            sent += 120
    except (BrokenPipeError, ConnectionResetError):
        pass
    response = conn.read_response()
    assert response.status == 431, response
    assert sent < 1024 * 1024, f"{sent} bytes of headers taken before the 431"
    side_ok(side)


BODY = b'{"model":"test/hostile","payload":{}}'
GET_SMUGGLED = b"GET /v1/queue/metrics?model=test/hostile HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"

SMUGGLING = {
    "length_and_chunked": (
        b"POST /v1/queue/submit HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"%x\r\n" % len(BODY) + BODY + b"\r\n0\r\n\r\n"),
    "chunked_and_length": (
        b"POST /v1/queue/submit HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Transfer-Encoding: chunked\r\nContent-Length: %d\r\n\r\n" % len(BODY)
        + b"0\r\n\r\n" + BODY),
    "two_lengths_differ": (
        b"POST /v1/queue/submit HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Length: %d\r\nContent-Length: 0\r\n\r\n" % len(BODY) + BODY),
    "two_lengths_same": (
        b"POST /v1/queue/submit HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Length: %d\r\nContent-Length: %d\r\n\r\n" % (len(BODY), len(BODY)) + BODY),
    "length_list": (
        b"POST /v1/queue/submit HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Length: %d, %d\r\n\r\n" % (len(BODY), len(BODY)) + BODY),
    "bare_cr_in_header": (
        b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-A: 1\rContent-Length: 5\r\n\r\n"),
    "bare_cr_line_end": (
        b"GET /healthz HTTP/1.1\rHost: 127.0.0.1\r\n\r\n"),
    "bare_lf_line_end": (
        b"GET /healthz HTTP/1.1\nHost: 127.0.0.1\nContent-Length: 5\n\n"),
    "space_before_colon": (
        b"POST /v1/queue/submit HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Length : %d\r\n\r\n" % len(BODY) + BODY),
    "chunk_without_crlf": (
        b"POST /v1/queue/submit HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"%x\r\n" % len(BODY) + BODY + b"0\r\n\r\n"),
    "chunk_size_bare_cr": (
        b"POST /v1/queue/submit HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"%x\r" % len(BODY) + BODY + b"\r\n0\r\n\r\n"),
    "negative_length": (
        b"POST /v1/queue/submit HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: -1\r\n\r\n"),
    "two_hosts": (
        b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nHost: example.com\r\n\r\n"),
}


@pytest.mark.parametrize("shape", sorted(SMUGGLING))
def test_smuggling_rejected(server, shape):
    side = server.api()
    conn = server.raw()
    auth = b"Authorization: Bearer " + server.key.encode() + b"\r\n"
    request = SMUGGLING[shape].replace(b"Host: 127.0.0.1\r\n", b"Host: 127.0.0.1\r\n" + auth, 1)
    try:
        conn.send(request + GET_SMUGGLED)
    except (BrokenPipeError, ConnectionResetError):
        pass
    response = conn.read_response()
    assert response.status == 400, f"{shape}: {response!r}"
    assert response.json["type"] == "invalid_request_error", response
    assert conn.wait_closed(5), f"{shape}: connection left open after 400"
    assert b"HTTP/1.1" not in conn.buf, f"{shape}: a second response followed: {conn.buf!r}"
    side_ok(side)
    assert side.metrics_ok(MODEL)["total_jobs"] == 0, f"{shape}: a job was created"


def test_obs_fold_length(server):
    # RFC 9112 section 5.2: a server must reject a request with obsolete line folding (400),
    # or replace each fold with spaces before it reads the value.
    side = server.api()
    conn = server.raw()
    conn.send(b"POST /v1/queue/submit HTTP/1.1\r\nHost: 127.0.0.1\r\n"
              b"Authorization: Bearer " + server.key.encode() + b"\r\n"
              b"Content-Length:\r\n %d\r\n\r\n" % len(BODY) + BODY
              + http_request("GET", "/healthz", key=server.key))
    response = conn.read_response()
    if response.status == 400:
        assert conn.wait_closed(5), "connection left open after 400"
        assert side.metrics_ok(MODEL)["total_jobs"] == 0
    else:
        # The folded value was read as one Content-Length, so the next request is separate.
        assert response.status == 200, response
        assert conn.read_response().status == 200
        assert side.metrics_ok(MODEL)["total_jobs"] == 1
    side_ok(side)
