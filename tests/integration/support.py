"""Helpers for the integration tests: a server process, an HTTP client, a raw socket client,
a raw JSON member scanner and polling with a deadline.

Only the standard library is used, so the tests run with Debian's python3 and python3-pytest.
"""

import calendar
import http.client
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import threading
import time
import urllib.parse
from pathlib import Path

import pytest

INFERQ_BIN = Path(os.environ.get("INFERQ_BIN", Path(__file__).resolve().parents[2] / "build" / "inferq"))

UUID7_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
UUID4_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
TIME_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")
# The start-up line of each listener with its bound port and scheme ("http" or "https"); a line
# naming the requested port 0 does not match.
LISTEN_RE = re.compile(r"listening on 127\.0\.0\.1:([1-9][0-9]*)(?: \((https?)\))?")

# A well-formed UUIDv7 that no server generates: its timestamp is in 1970.
UNKNOWN_ID = "00000000-0001-7000-8000-000000000001"
# A well-formed UUIDv4 that is nobody's claim.
UNKNOWN_CLAIM = "11111111-2222-4333-8444-555555555555"

START_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0


def wait_for(predicate, timeout, what, interval=0.02):
    """Poll predicate until it returns a truthy value, and return that value.

    Fails the test with "timed out after N s waiting for WHAT" when the deadline passes.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}; last value: {value!r}")
        time.sleep(interval)


def parse_time(text):
    """Return the seconds since the epoch of an RFC 3339 UTC timestamp with whole seconds."""
    assert isinstance(text, str), f"timestamp is not a string: {text!r}"
    assert TIME_RE.match(text), f"timestamp is not RFC 3339 UTC with whole seconds: {text!r}"
    return calendar.timegm(time.strptime(text, "%Y-%m-%dT%H:%M:%SZ"))


def uuid7_time(job_id):
    """Return the Unix time in seconds stored in the first 48 bits of a UUIDv7."""
    return int(job_id.replace("-", "")[:12], 16) / 1000.0


# ---------------------------------------------------------------------------
# Raw JSON text: compare what the server returns with what was sent, byte for byte.

_WS = b" \t\r\n"


def compact(raw):
    """Return JSON text with the whitespace outside strings removed."""
    if isinstance(raw, str):
        raw = raw.encode()
    out = bytearray()
    in_string = False
    i = 0
    while i < len(raw):
        c = raw[i]
        if in_string:
            out.append(c)
            if c == 0x5C:  # backslash: copy the escaped byte as is
                out.append(raw[i + 1])
                i += 1
            elif c == 0x22:
                in_string = False
        elif c == 0x22:
            in_string = True
            out.append(c)
        elif c not in _WS:
            out.append(c)
        i += 1
    return bytes(out)


def _skip_ws(raw, i):
    while i < len(raw) and raw[i] in _WS:
        i += 1
    return i


def _value_end(raw, i):
    """Return the index just past the JSON value that starts at raw[i]."""
    c = raw[i]
    if c == 0x22:
        i += 1
        while raw[i] != 0x22:
            i += 2 if raw[i] == 0x5C else 1
        return i + 1
    if c in b"{[":
        depth = 0
        while True:
            c = raw[i]
            if c == 0x22:
                i = _value_end(raw, i)
                continue
            if c in b"{[":
                depth += 1
            elif c in b"}]":
                depth -= 1
                if depth == 0:
                    return i + 1
            i += 1
    while i < len(raw) and raw[i] not in b",}] \t\r\n":
        i += 1
    return i


def raw_members(raw):
    """Return {name: raw value bytes} for the members of the top-level JSON object in raw.

    Raises AssertionError when a name appears twice.
    """
    i = _skip_ws(raw, 0)
    assert raw[i : i + 1] == b"{", f"response is not a JSON object: {raw[:80]!r}"
    members = {}
    i = _skip_ws(raw, i + 1)
    if raw[i : i + 1] == b"}":
        return members
    while True:
        end = _value_end(raw, i)
        name = json.loads(raw[i:end])
        i = _skip_ws(raw, end)
        assert raw[i : i + 1] == b":", f"expected ':' at byte {i} of {raw[:200]!r}"
        i = _skip_ws(raw, i + 1)
        end = _value_end(raw, i)
        assert name not in members, f"member {name!r} appears twice in {raw[:200]!r}"
        members[name] = raw[i:end]
        i = _skip_ws(raw, end)
        if raw[i : i + 1] == b"}":
            return members
        assert raw[i : i + 1] == b",", f"expected ',' at byte {i} of {raw[:200]!r}"
        i = _skip_ws(raw, i + 1)


def raw_member(raw, name):
    """Return the raw bytes of one top-level member, failing when it is absent."""
    members = raw_members(raw)
    assert name in members, f"member {name!r} missing from {raw[:300]!r}"
    return members[name]


def parse_json(raw):
    """Parse a response body, failing when its top-level object repeats a member name.

    Nested objects may repeat names because payload, info and outputs come back as sent.
    """
    value = json.loads(raw)
    if isinstance(value, dict):
        raw_members(raw)
    return value


# ---------------------------------------------------------------------------
# HTTP client on http.client, keep-alive.


class Reply:
    """One HTTP response: status, headers (lowercase names), parsed json (or None) and raw body."""

    def __init__(self, status, headers, raw):
        self.status = status
        self.headers = headers
        self.raw = raw
        self.json = None
        content_type = headers.get("content-type", "")
        if raw and "json" in content_type:
            self.json = parse_json(raw)

    def __iter__(self):
        return iter((self.status, self.headers, self.json))

    def __repr__(self):
        return f"Reply({self.status}, {self.raw[:300]!r})"


def encode_body(body):
    if body is None:
        return None
    if isinstance(body, (bytes, bytearray)):
        return bytes(body)
    if isinstance(body, str):
        return body.encode()
    return json.dumps(body).encode()


class Api:
    """An HTTP/1.1 client on one keep-alive connection to a server; HTTPS with ssl_context."""

    def __init__(self, port, key, timeout=30.0, ssl_context=None):
        self.port = port
        self.key = key
        if ssl_context is None:
            self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        else:
            self.conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=timeout,
                                                    context=ssl_context)

    def request(self, method, path, body=None, headers=None):
        all_headers = {"Authorization": f"Bearer {self.key}"}
        data = encode_body(body)
        if data is not None:
            all_headers["Content-Type"] = "application/json"
        all_headers.update(headers or {})
        self.conn.request(method, path, body=data, headers=all_headers)
        resp = self.conn.getresponse()
        raw = resp.read()
        headers_lower = {name.lower(): value for name, value in resp.getheaders()}
        return Reply(resp.status, headers_lower, raw)

    def post(self, path, body, headers=None):
        return self.request("POST", path, body, headers)

    def get(self, path, params=None, headers=None):
        if params:
            path = path + "?" + urllib.parse.urlencode(params)
        return self.request("GET", path, None, headers)

    def close(self):
        self.conn.close()

    # Shortcuts for the routes; each returns the Reply.

    def submit(self, model, payload, **fields):
        return self.post("/v1/queue/submit", {"model": model, "payload": payload, **fields})

    def status(self, request_id, model):
        return self.get("/v1/queue/status", {"request_id": request_id, "model": model})

    def claim(self, model, **fields):
        return self.post("/v1/queue/claim", {"model": model, **fields})

    def metrics(self, model):
        return self.get("/v1/queue/metrics", {"model": model})

    def worker_call(self, route, model, request_id, claim_id, **fields):
        body = {"model": model, "request_id": request_id, "claim_id": claim_id, **fields}
        return self.post(f"/v1/queue/{route}", body)

    # Shortcuts that also check success and return the parsed body.

    def submit_ok(self, model, payload, **fields):
        reply = self.submit(model, payload, **fields)
        assert reply.status == 200, f"submit failed: {reply!r}"
        return reply.json["request_id"]

    def status_ok(self, request_id, model):
        reply = self.status(request_id, model)
        assert reply.status == 200, f"status of {request_id} failed: {reply!r}"
        return reply.json

    def claim_ok(self, model, **fields):
        fields.setdefault("claim_timeout", 300)
        reply = self.claim(model, **fields)
        assert reply.status == 200, f"claim on {model} returned no job: {reply!r}"
        return reply.json

    def metrics_ok(self, model):
        reply = self.metrics(model)
        assert reply.status == 200, f"metrics of {model} failed: {reply!r}"
        return reply.json

    def wait_status(self, request_id, model, state, timeout=5.0):
        """Poll status until the job is in state, and return the status body."""

        def reached():
            body = self.status_ok(request_id, model)
            return body if body["status"] == state else None

        return wait_for(reached, timeout, f"job {request_id} to become {state}", interval=0.05)


def assert_error(reply, status, code, param=None, message_has=None):
    """Check a QueueError response: status, code, type, param, x-should-retry and the message.

    param=None asserts nothing about param. When param is given, the message must name it too.
    message_has is a string or list of strings the message must contain (case-insensitive).
    """
    types = {
        400: "invalid_request_error",
        403: "permission_error",
        404: "not_found_error",
        405: "invalid_request_error",
        408: "timeout_error",
        409: "conflict_error",
        413: "request_too_large",
        416: "invalid_request_error",
        431: "request_too_large",
    }
    assert reply.status == status, f"expected {status} {code}, got {reply!r}"
    assert reply.headers.get("content-type", "").startswith("application/json"), reply.headers
    body = reply.json
    assert isinstance(body, dict), f"error body is not a JSON object: {reply!r}"
    assert body.get("code") == code, f"expected code {code}: {body}"
    assert body.get("type") == types[status], f"expected type {types[status]}: {body}"
    assert isinstance(body.get("message"), str) and body["message"], f"empty message: {body}"
    if param is not None:
        assert body.get("param") == param, f"expected param {param}: {body}"
        assert param in body["message"], f"message does not name {param}: {body['message']}"
    if "param" in body:
        assert isinstance(body["param"], str), f"param is not a string: {body}"
    for text in [message_has] if isinstance(message_has, str) else message_has or []:
        assert text.lower() in body["message"].lower(), f"message lacks {text!r}: {body['message']}"
    if 400 <= status < 500 and status not in (408, 429):
        assert reply.headers.get("x-should-retry") == "false", f"x-should-retry: {reply.headers}"
    return body


def assert_no_nulls(body):
    """Check that no top-level field of a response is null (absent fields are left out)."""
    nulls = [name for name, value in body.items() if value is None]
    assert not nulls, f"fields sent as null instead of left out: {nulls} in {body}"


# ---------------------------------------------------------------------------
# Raw sockets, for protocol tests that http.client cannot express.


class RawResponse:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers  # lowercase name -> value (last wins)
        self.body = body

    @property
    def json(self):
        return parse_json(self.body) if self.body else None

    def __repr__(self):
        return f"RawResponse({self.status}, {self.headers}, {self.body[:200]!r})"


class RawConn:
    """A TCP connection that sends bytes as given and parses HTTP/1.1 responses; it speaks TLS
    over the connection when ssl_context is given."""

    def __init__(self, port, timeout=5.0, ssl_context=None):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        if ssl_context is not None:
            self.sock = ssl_context.wrap_socket(self.sock, server_hostname="127.0.0.1")
        self.buf = b""

    def send(self, data):
        self.sock.sendall(data)

    def _fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"connection closed; unparsed bytes: {self.buf[:200]!r}")
        self.buf += chunk

    def _read_until(self, marker):
        while marker not in self.buf:
            self._fill()
        head, self.buf = self.buf.split(marker, 1)
        return head

    def _read_exact(self, n):
        while len(self.buf) < n:
            self._fill()
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def read_response(self, head_request=False):
        """Read one response (an interim 1xx response counts as one)."""
        head = self._read_until(b"\r\n\r\n").decode("latin-1")
        lines = head.split("\r\n")
        parts = lines[0].split(" ", 2)
        assert parts[0] == "HTTP/1.1", f"bad status line: {lines[0]!r}"
        status = int(parts[1])

        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()

        if status < 200 or status in (204, 304) or head_request:
            return RawResponse(status, headers, b"")
        if headers.get("transfer-encoding", "").lower() == "chunked":
            body = b""
            while True:
                size = int(self._read_until(b"\r\n").split(b";")[0], 16)
                if size == 0:
                    self._read_until(b"\r\n")
                    break
                body += self._read_exact(size)
                self._read_exact(2)
            return RawResponse(status, headers, body)
        if "content-length" in headers:
            return RawResponse(status, headers, self._read_exact(int(headers["content-length"])))

        while True:
            try:
                self._fill()
            except ConnectionError:
                break
        body, self.buf = self.buf, b""
        return RawResponse(status, headers, body)

    def wait_closed(self, timeout):
        """Return True when the peer closes within timeout; unexpected bytes are kept in buf."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                return False
            except (ConnectionResetError, ssl.SSLEOFError):
                return True
            if not chunk:
                return True
            self.buf += chunk
        return False

    def close(self):
        self.sock.close()


# Flags of a server for REJECTED_REQUESTS.
REJECTION_FLAGS = {"max_header_bytes": 1024, "max_body_bytes": 1000, "request_timeout": "1s"}
# Requests that the HTTP layer of a server started with REJECTION_FLAGS rejects before routing:
# (case, request bytes, status, method, path). method and path are what the access log shows,
# "-" where the request line could not be read, and never the query string.
REJECTED_REQUESTS = [
    ("malformed_request_line", b"GARBAGE\r\n\r\n", 400, "-", "-"),
    ("headers_over_limit",
     b"GET /healthz?sig=QUERY-NOT-LOGGED HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"p" * 2000 + b"\r\n\r\n",
     431, "GET", "/healthz"),
    ("content_length_over_limit",
     b"POST /v1/queue/submit HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n",
     413, "POST", "/v1/queue/submit"),
    ("chunked_body_over_limit",
     b"POST /v1/queue/submit HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"7d0\r\n" + b"x" * 2000 + b"\r\n0\r\n\r\n",
     413, "POST", "/v1/queue/submit"),
    ("missing_host", b"GET /healthz HTTP/1.1\r\n\r\n", 400, "GET", "/healthz"),
    ("unsupported_transfer_encoding",
     b"POST /v1/queue/submit HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n",
     501, "POST", "/v1/queue/submit"),
    ("request_timeout", b"GET /healthz?x=1 HTTP/1.1\r\nHost: x\r\n", 408, "GET", "/healthz"),
]


def send_rejected_requests(server, port=None):
    """Send each of REJECTED_REQUESTS on a connection of its own and check its status.

    Returns the response body lengths in the order of REJECTED_REQUESTS.
    """
    lengths = []
    for case, data, status, _, _ in REJECTED_REQUESTS:
        conn = RawConn(port or server.port)
        try:
            conn.send(data)
            response = conn.read_response()
        finally:
            conn.close()
        assert response.status == status, (case, response)
        lengths.append(len(response.body))
    return lengths


def read_all(sock):
    """Return every byte the peer sends on sock until it closes its side."""
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk


def http_request(method, path, body=b"", headers=None, key="test-key"):
    """Return the bytes of one HTTP/1.1 request with Host, Authorization and Content-Length."""
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", f"Authorization: Bearer {key}"]
    for name, value in (headers or {}).items():
        lines.append(f"{name}: {value}")
    if body or method == "POST":
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


# ---------------------------------------------------------------------------
# The server process.


class Server:
    """One `inferq serve` process on 127.0.0.1 with an ephemeral port.

    port is the --listen port and scheme its scheme; tls_port is the HTTPS port (the --listen
    port itself unless --tls-listen is set). ca is the TestCA whose context() trusts the server.
    """

    def __init__(self, data_dir, flags, ca=None):
        self.data_dir = Path(data_dir)
        self.flags = list(flags)
        self.ca = ca
        self.proc = None
        self.port = None
        self.scheme = "http"
        self.tls_port = None
        self.log = []  # lines from stdout and stderr, in arrival order per stream
        self.killed = False
        self._clients = []

    def start(self):
        if not INFERQ_BIN.exists():
            pytest.fail(f"server binary not found at {INFERQ_BIN}; build it with `make` first")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log = []
        self.killed = False
        cmd = [str(INFERQ_BIN), "serve", "--listen", "127.0.0.1:0", "--data-dir", str(self.data_dir)]
        cmd += self.flags
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE)
        for stream in (self.proc.stdout, self.proc.stderr):
            threading.Thread(target=self._drain, args=(stream,), daemon=True).start()
        listeners = 2 if "--tls-listen" in self.flags else 1
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            found = [m for m in map(LISTEN_RE.search, list(self.log)) if m]
            if len(found) >= listeners:
                self.port = int(found[0].group(1))
                self.scheme = found[0].group(2) or "http"
                self.tls_port = None
                for match in found[:listeners]:
                    if match.group(2) == "https":
                        self.tls_port = int(match.group(1))
                return self
            if self.proc.poll() is not None:
                time.sleep(0.1)  # let the drain threads take the last lines
                pytest.fail(f"server exited with status {self.proc.returncode} at start:\n"
                            f"{self.log_tail()}")
            time.sleep(0.01)
        self.proc.kill()
        self.proc.wait()
        pytest.fail(f"server did not log 'listening on 127.0.0.1:PORT' within {START_TIMEOUT} s:\n"
                    f"{self.log_tail()}")

    def _drain(self, stream):
        for line in iter(stream.readline, b""):
            self.log.append(line.decode("utf-8", "replace").rstrip("\n"))
        stream.close()

    def log_tail(self, lines=40):
        return "\n".join(self.log[-lines:]) or "(no output)"

    @property
    def running(self):
        return self.proc is not None and self.proc.poll() is None

    @property
    def key(self):
        key_file = self.data_dir / "admin.key"
        if key_file.exists():
            return key_file.read_text().strip()
        return "test-key"

    def _target(self, https):
        """Return (port, ssl context or None) to reach: https=None the --listen port with its
        scheme, True the HTTPS port with TLS, False the --listen port without TLS (even when it
        serves HTTPS)."""
        if https is None:
            https = self.scheme == "https"
        if not https:
            return self.port, None
        assert self.tls_port is not None and self.ca is not None, "server has no HTTPS port"
        return self.tls_port, self.ca.context()

    def api(self, timeout=30.0, https=None):
        """A keep-alive client of the --listen port (https=True: of the HTTPS port)."""
        port, context = self._target(https)
        client = Api(port, self.key, timeout, context)
        self._clients.append(client)
        return client

    def raw(self, timeout=5.0, https=None):
        port, context = self._target(https)
        conn = RawConn(port, timeout, context)
        self._clients.append(conn)
        return conn

    def _close_clients(self):
        for client in self._clients:
            client.close()
        self._clients = []

    def stop(self):
        """Stop with SIGTERM and return the exit status (killed after STOP_TIMEOUT)."""
        self._close_clients()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                return f"did not exit within {STOP_TIMEOUT} s of SIGTERM (killed)"
        return self.proc.returncode

    def kill(self):
        """Stop with SIGKILL, as a crash would."""
        self._close_clients()
        self.killed = True
        self.proc.kill()
        self.proc.wait()

    def restart(self):
        """Start a new process on the same data dir and flags (after stop or kill)."""
        assert not self.running, "restart of a running server"
        return self.start()
