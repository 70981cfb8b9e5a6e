"""HTTPS in `inferq serve`: handshakes, the job lifecycle, pipelining and large responses over
TLS, the protocol and cipher policy, hostile and slow clients, certificate reload on SIGHUP,
flag errors, and the CLI with --cacert.

Certificates come from a test CA made at test time with the `openssl` command (tls_support.py).
Every server listens on 127.0.0.1 and every wait has a deadline.
"""

import hashlib
import random
import signal
import socket
import ssl
import struct
import subprocess
import time

import pytest

from cli_support import describe, run_cli
from support import INFERQ_BIN, assert_error, http_request, wait_for
from tls_support import TestCA, cert_fingerprint

MODEL = "tls/test"
OPENSSL_TIMEOUT = 20.0


# ---------------------------------------------------------------------------
# Helpers


class MemoryTLS:
    """A TLS client on ssl.MemoryBIO that keeps every ciphertext byte it receives, so a test
    can count the records, and can send its handshake one byte per TCP segment."""

    def __init__(self, port, context, timeout=10.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.tls = context.wrap_bio(self.incoming, self.outgoing, server_hostname="127.0.0.1")
        self.received = bytearray()
        self.plain = b""

    def _send_pending(self, byte_at_a_time=False):
        data = self.outgoing.read()
        if not byte_at_a_time:
            self.sock.sendall(data)
            return
        for i in range(len(data)):
            self.sock.sendall(data[i:i + 1])
            time.sleep(0.002)

    def _receive(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("server closed the connection")
        self.received += chunk
        self.incoming.write(chunk)

    def handshake(self, byte_at_a_time=False):
        for _ in range(100):
            try:
                self.tls.do_handshake()
                self._send_pending()
                return
            except ssl.SSLWantReadError:
                self._send_pending(byte_at_a_time)
                self._receive()
        pytest.fail("TLS handshake did not finish within 100 round trips")

    def request(self, data):
        self.tls.write(data)
        self._send_pending()

    def _read_plain(self):
        while True:
            try:
                self.plain += self.tls.read(65536)
                return
            except ssl.SSLWantReadError:
                self._receive()

    def read_response(self):
        """Return (status, body) of one response with a Content-Length."""
        while b"\r\n\r\n" not in self.plain:
            self._read_plain()
        head, self.plain = self.plain.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        while len(self.plain) < length:
            self._read_plain()
        body, self.plain = self.plain[:length], self.plain[length:]
        return int(lines[0].split(" ")[1]), body

    def close(self):
        self.sock.close()


def count_records(data):
    """Return the number of whole TLS records in data (5-byte header, then the length)."""
    count, i = 0, 0
    while i + 5 <= len(data):
        length = int.from_bytes(data[i + 3:i + 5], "big")
        if i + 5 + length > len(data):
            break
        count += 1
        i += 5 + length
    return count


def fingerprint_of(tls_sock):
    """Return the SHA-256 fingerprint of the certificate the peer of tls_sock sent."""
    return hashlib.sha256(tls_sock.getpeercert(binary_form=True)).hexdigest()


def peer_fingerprint(port, ca):
    """Return the SHA-256 fingerprint of the certificate the server sends on a new connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        with ca.context().wrap_socket(sock, server_hostname="127.0.0.1") as tls:
            return fingerprint_of(tls)


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def s_client(port, *args):
    """Run `openssl s_client` against 127.0.0.1:port with stdin closed; return the process."""
    return subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-brief",
                           *args], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=OPENSSL_TIMEOUT)


def start_s_server(port, cert, key, *args):
    """Start `openssl s_server` on 127.0.0.1:port for one connection and wait until it accepts.

    Its stdin stays open: s_server stops when stdin ends.
    """
    proc = subprocess.Popen(["openssl", "s_server", "-accept", f"127.0.0.1:{port}", "-cert",
                             str(cert), "-key", str(key), "-naccept", "1", *args],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    lines = []
    for _ in range(10):
        lines.append(proc.stdout.readline())
        if "ACCEPT" in lines[-1]:
            return proc
        if not lines[-1]:
            break
    proc.kill()
    proc.wait()
    pytest.fail(f"openssl s_server did not start: {''.join(lines)!r}")


def job_lifecycle(api, model="tls/lifecycle"):
    """Submit, claim, heartbeat and complete one job of model (which has no other jobs)."""
    job_id = api.submit_ok(model, {"prompt": "over TLS"})
    job = api.claim_ok(model)
    assert job["request_id"] == job_id
    reply = api.worker_call("heartbeat", model, job_id, job["claim_id"], info={"step": 1})
    assert reply.status == 200, reply
    reply = api.worker_call("complete", model, job_id, job["claim_id"], outputs={"ok": True})
    assert reply.status == 200, reply
    body = api.status_ok(job_id, model)
    assert body["status"] == "done"
    assert body["outputs"] == {"ok": True}
    assert body["info"] == {"step": 1}
    return job_id


# ---------------------------------------------------------------------------
# Handshake and requests


def test_lifecycle_over_https(start_server):
    server = start_server(tls=True)
    assert server.scheme == "https"
    assert server.tls_port == server.port
    assert "listening on 127.0.0.1:%d (https)" % server.port in "\n".join(server.log)
    job_lifecycle(server.api())


def test_negotiates_tls13_and_alpn(start_server):
    server = start_server(tls=True)
    context = server.ca.context()
    context.set_alpn_protocols(["h2", "http/1.1"])
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        with context.wrap_socket(sock, server_hostname="127.0.0.1") as tls:
            assert tls.version() == "TLSv1.3"
            assert tls.selected_alpn_protocol() == "http/1.1"
            assert tls.compression() is None


def test_http_and_https_side_by_side(start_server):
    server = start_server(tls=True, tls_listen="127.0.0.1:0")
    assert server.scheme == "http"
    assert server.tls_port is not None and server.tls_port != server.port
    log = "\n".join(server.log)
    assert f"listening on 127.0.0.1:{server.port} (http)" in log
    assert f"listening on 127.0.0.1:{server.tls_port} (https)" in log

    plain = server.api()
    secure = server.api(https=True)
    job_id = plain.submit_ok(MODEL, {"n": 1})
    assert secure.status_ok(job_id, MODEL)["status"] == "pending"
    job_lifecycle(secure)
    assert plain.metrics_ok(MODEL)["total_jobs"] == 1


def test_client_without_ca_fails_handshake(start_server):
    server = start_server(tls=True)
    other = TestCA(server.data_dir.parent / "other-ca", name="another CA")
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        with pytest.raises(ssl.SSLCertVerificationError):
            other.context().wrap_socket(sock, server_hostname="127.0.0.1")
    assert server.api().get("/healthz").status == 200


def test_pipelined_requests_over_tls(start_server):
    server = start_server(tls=True)
    conn = server.raw(https=True)
    count = 20
    batch = b"".join(
        http_request("POST", "/v1/queue/submit",
                     ('{"model":"%s","payload":{"n":%d}}' % (MODEL, i)).encode(), key=server.key)
        for i in range(count))
    conn.send(batch)
    ids = []
    for _ in range(count):
        response = conn.read_response()
        assert response.status == 200, response
        ids.append(response.json["request_id"])
    assert len(set(ids)) == count

    statuses = b"".join(
        http_request("GET", f"/v1/queue/status?request_id={job_id}&model={MODEL}",
                     key=server.key) for job_id in ids)
    conn.send(statuses)
    for i, job_id in enumerate(ids):
        response = conn.read_response()
        assert response.status == 200, response
        assert response.json["request_id"] == job_id
        assert response.json["inputs"] == {"n": i}


def test_large_response_many_records(start_server):
    server = start_server(tls=True)
    api = server.api()
    payload = {"blob": "x" * (1 << 20)}
    job_id = api.submit_ok(MODEL, payload)

    client = MemoryTLS(server.port, server.ca.context())
    try:
        client.handshake()
        start = len(client.received)
        client.request(http_request("GET", f"/v1/queue/status?request_id={job_id}&model={MODEL}",
                                    key=server.key))
        status, body = client.read_response()
        assert status == 200
        assert len(body) > 1 << 20
        assert b"x" * (1 << 20) in body
        records = count_records(bytes(client.received[start:]))
        # A TLS record carries at most 16 KiB of plaintext.
        assert records >= (1 << 20) // 16384, f"only {records} records for {len(body)} bytes"
    finally:
        client.close()


def test_handshake_one_byte_at_a_time(start_server):
    server = start_server(tls=True)
    client = MemoryTLS(server.port, server.ca.context())
    try:
        client.handshake(byte_at_a_time=True)
        client.request(http_request("GET", "/healthz"))
        status, body = client.read_response()
        assert status == 200
        assert b"ok" in body
    finally:
        client.close()


# ---------------------------------------------------------------------------
# Protocol versions and ciphers


@pytest.mark.parametrize("version_flag,name", [("-tls1", "TLSv1"), ("-tls1_1", "TLSv1.1")])
def test_old_protocols_rejected(start_server, version_flag, name):
    server = start_server(tls=True)
    cert, key = server.ca.issue("control")

    # Positive control: this client can speak the old protocol to a server that allows it.
    port = free_port()
    control = start_s_server(port, cert, key, version_flag, "-cipher", "DEFAULT@SECLEVEL=0")
    try:
        proc = s_client(port, version_flag, "-cipher", "DEFAULT@SECLEVEL=0")
    finally:
        control.kill()
        control.wait()
    assert proc.returncode == 0, (
        f"positive control failed: openssl s_client {version_flag} could not connect to "
        f"openssl s_server {version_flag}, so this build cannot test the refusal:\n"
        f"{describe(proc)}")
    assert f"Protocol version: {name}" in proc.stderr + proc.stdout

    proc = s_client(server.port, version_flag, "-cipher", "DEFAULT@SECLEVEL=0")
    assert proc.returncode != 0, f"{name} handshake succeeded: {describe(proc)}"
    assert "CONNECTION ESTABLISHED" not in proc.stderr + proc.stdout
    assert "protocol version" in proc.stderr + proc.stdout
    assert server.api().get("/healthz").status == 200


def test_tls12_uses_ecdhe_aead_only(start_server):
    server = start_server(tls=True)
    proc = s_client(server.port, "-tls1_2", "-CAfile", str(server.ca.cert))
    assert proc.returncode == 0, describe(proc)
    output = proc.stderr + proc.stdout
    assert "Protocol version: TLSv1.2" in output
    suite = [line for line in output.splitlines() if line.startswith("Ciphersuite:")]
    assert suite and suite[0].split()[1].startswith("ECDHE-"), output
    assert "GCM" in suite[0] or "CHACHA20" in suite[0], output

    # Static RSA key exchange and CBC suites are refused even at the lowest security level.
    for cipher in ("AES256-GCM-SHA384", "ECDHE-ECDSA-AES128-SHA", "ECDHE-ECDSA-AES256-SHA384"):
        proc = s_client(server.port, "-tls1_2", "-cipher", cipher + ":@SECLEVEL=0")
        assert proc.returncode != 0, f"{cipher} was accepted: {describe(proc)}"
        assert "CONNECTION ESTABLISHED" not in proc.stderr + proc.stdout

    proc = s_client(server.port, "-tls1_3", "-CAfile", str(server.ca.cert))
    assert proc.returncode == 0, describe(proc)
    assert "Protocol version: TLSv1.3" in proc.stderr + proc.stdout


def test_rsa_certificate(start_server):
    server = start_server(tls=True, log_level="info")
    cert, key = server.ca.issue("rsa", algorithm="RSA")
    rsa = start_server(tls=True, tls_cert=cert, tls_key=key)
    rsa.ca = server.ca
    proc = s_client(rsa.port, "-tls1_2", "-CAfile", str(server.ca.cert))
    assert proc.returncode == 0, describe(proc)
    assert "Ciphersuite: ECDHE-RSA-AES256-GCM-SHA384" in proc.stderr + proc.stdout
    job_lifecycle(rsa.api())


def test_no_renegotiation(start_server):
    server = start_server(tls=True)
    # "R" on stdin makes s_client start a renegotiation, which the server must reject.
    proc = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{server.port}",
                           "-tls1_2", "-CAfile", str(server.ca.cert)],
                          input="R\n", capture_output=True, text=True, timeout=OPENSSL_TIMEOUT)
    output = proc.stdout + proc.stderr
    assert "RENEGOTIATING" in output, output
    assert "no renegotiation" in output, output
    assert server.api().get("/healthz").status == 200


# ---------------------------------------------------------------------------
# Bad and slow clients


def test_plain_http_to_https_port(start_server):
    server = start_server(tls=True)
    conn = server.raw(https=False)
    conn.send(http_request("GET", "/healthz"))
    response = conn.read_response()
    assert response.status == 400
    body = response.json
    assert body["code"] == "https_required"
    assert "https://" in body["message"]
    assert response.headers.get("connection") == "close"
    assert conn.wait_closed(5.0)
    assert server.api().get("/healthz").status == 200


@pytest.mark.parametrize("garbage,alert", [
    # OpenSSL reads a first byte with the high bit set as an SSLv2 header and sends no alert.
    pytest.param(bytes([0x80]) + random.Random(7).randbytes(511), False, id="random-bytes"),
    pytest.param(b"\x16\x03\x01\x00\x04\x01\x00\x00\x00", True, id="empty-client-hello"),
    pytest.param(b"\x17\x03\x03\x00\x10" + b"\x00" * 16, True, id="data-before-handshake"),
])
def test_garbage_closes_connection(start_server, garbage, alert):
    server = start_server(tls=True, log_level="debug")
    conn = server.raw(https=False)
    conn.send(garbage)
    assert conn.wait_closed(5.0), "server kept a connection that sent garbage open"
    if alert:
        # The alert OpenSSL queued goes out before the close: content type 21.
        assert conn.buf[:1] == b"\x15", f"expected a TLS alert first: {conn.buf[:20]!r}"
    wait_for(lambda: any("after a TLS error" in line for line in server.log), 5.0,
             "the TLS error log line")
    assert server.api().get("/healthz").status == 200


def test_silent_client_closed_after_handshake_timeout(start_server):
    server = start_server(tls=True, tls_handshake_timeout="500ms", idle_timeout="60s")
    silent = server.raw(https=False)
    partial = server.raw(https=False)
    partial.send(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")  # a ClientHello's first bytes
    finished = server.api()
    assert finished.get("/healthz").status == 200

    started = time.monotonic()
    assert silent.wait_closed(5.0), "a client that never handshakes was not closed"
    elapsed = time.monotonic() - started
    assert 0.3 <= elapsed < 5.0, f"closed after {elapsed:.2f} s, expected about 0.5 s"
    assert partial.wait_closed(5.0), "a client with a partial handshake was not closed"

    # A connection that finished its handshake falls under the idle timeout instead.
    time.sleep(1.0)
    assert finished.get("/healthz").status == 200


def test_client_closes_mid_handshake(start_server):
    server = start_server(tls=True)
    client = MemoryTLS(server.port, server.ca.context())
    try:
        client.tls.do_handshake()
    except ssl.SSLWantReadError:
        pass
    hello = client.outgoing.read()
    # Half a ClientHello, then an orderly close.
    client.sock.sendall(hello[: len(hello) // 2])
    client.close()

    # A whole ClientHello, then a reset (SO_LINGER 0) before the server's reply is read.
    client = MemoryTLS(server.port, server.ca.context())
    try:
        client.tls.do_handshake()
    except ssl.SSLWantReadError:
        pass
    hello = client.outgoing.read()
    client.sock.sendall(hello)
    client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    client.close()

    job_lifecycle(server.api())


# ---------------------------------------------------------------------------
# Timeouts, limits and orderly close over TLS


def test_idle_timeout_over_tls(start_server):
    server = start_server(tls=True, idle_timeout="300ms")
    conn = server.raw(https=True)
    conn.send(http_request("GET", "/healthz"))
    assert conn.read_response().status == 200
    # Python's ssl returns b"" only after close_notify; a bare TCP FIN raises SSLEOFError.
    conn.sock.settimeout(5.0)
    assert conn.sock.recv(1024) == b"", "idle TLS connection was not closed with close_notify"


def test_request_timeout_over_tls(start_server):
    server = start_server(tls=True, request_timeout="300ms")
    conn = server.raw(https=True)
    conn.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
    response = conn.read_response()
    assert response.status == 408
    assert conn.wait_closed(5.0)


def test_max_connections_over_tls(start_server):
    server = start_server(tls=True, max_connections=2)
    first = server.api()
    second = server.api()
    assert first.get("/healthz").status == 200
    assert second.get("/healthz").status == 200
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
            server.ca.context().wrap_socket(sock, server_hostname="127.0.0.1")
    assert first.get("/healthz").status == 200


def test_connection_close_sends_close_notify(start_server):
    server = start_server(tls=True)
    conn = server.raw(https=True)
    conn.send(http_request("GET", "/healthz", headers={"Connection": "close"}))
    response = conn.read_response()
    assert response.status == 200
    assert response.headers.get("connection") == "close"
    # Python's ssl returns b"" only after close_notify; a bare TCP FIN raises SSLEOFError.
    conn.sock.settimeout(5.0)
    assert conn.sock.recv(1024) == b""


def test_client_close_notify_gets_pending_response(start_server):
    server = start_server(tls=True)
    client = MemoryTLS(server.port, server.ca.context())
    try:
        client.handshake()
        # The request and the client's close_notify leave in one segment.
        client.tls.write(http_request("GET", "/healthz"))
        with pytest.raises(ssl.SSLWantReadError):
            client.tls.unwrap()
        client._send_pending()

        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            chunk = client.sock.recv(65536)
            if not chunk:
                break
            client.incoming.write(chunk)
        else:
            pytest.fail("server did not close within 5 s of the client's close_notify")
        plain = b""
        with pytest.raises(ssl.SSLZeroReturnError):  # the server's close_notify ends the data
            while True:
                plain += client.tls.read(65536)
        assert plain.startswith(b"HTTP/1.1 200 "), plain[:200]
    finally:
        client.close()
    assert server.api().get("/healthz").status == 200


def test_sigterm_with_open_tls_connections(start_server):
    server = start_server(tls=True)
    api = server.api()
    assert api.get("/healthz").status == 200
    silent = server.raw(https=False)
    assert server.stop() == 0
    silent.close()


# ---------------------------------------------------------------------------
# Certificate reload


def test_sighup_reloads_certificate(start_server):
    server = start_server(tls=True)
    cert_path = server.data_dir.parent / "tls" / "server0.pem"
    key_path = server.data_dir.parent / "tls" / "server0.key"
    first = cert_fingerprint(cert_path)
    assert peer_fingerprint(server.port, server.ca) == first

    old = server.raw(https=True)
    old.send(http_request("GET", "/healthz"))
    assert old.read_response().status == 200

    new_cert, new_key = server.ca.issue("renewed")
    second = cert_fingerprint(new_cert)
    assert second != first
    key_path.write_bytes(new_key.read_bytes())
    cert_path.write_bytes(new_cert.read_bytes())
    server.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: any("SIGHUP received: loaded the TLS certificate" in line
                         for line in server.log), 5.0, "the reload log line")
    assert any(second in line for line in server.log), "reload line lacks the new fingerprint"

    assert peer_fingerprint(server.port, server.ca) == second
    old.send(http_request("GET", "/healthz"))
    assert old.read_response().status == 200
    assert fingerprint_of(old.sock) == first

    # A broken replacement keeps the certificate in use and names the file in a warning.
    cert_path.write_text("not a certificate\n")
    server.proc.send_signal(signal.SIGHUP)
    line = wait_for(lambda: next((l for l in server.log if "was not reloaded" in l), None), 5.0,
                    "the reload warning")
    assert " warn " in line
    assert str(cert_path) in line
    assert "previous certificate" in line
    assert peer_fingerprint(server.port, server.ca) == second

    # A key that does not match the certificate is refused as well.
    cert_path.write_bytes(new_cert.read_bytes())
    other_cert, other_key = server.ca.issue("unrelated")
    key_path.write_bytes(other_key.read_bytes())
    server.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: any("does not match" in l and "was not reloaded" in l for l in server.log),
             5.0, "the mismatch warning")
    assert peer_fingerprint(server.port, server.ca) == second
    assert server.running


def test_sighup_without_tls_keeps_running(start_server):
    server = start_server()
    server.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: any("nothing to reload" in line for line in server.log), 5.0,
             "the SIGHUP log line")
    assert server.running
    assert server.api().get("/healthz").status == 200


# ---------------------------------------------------------------------------
# Flag errors


def run_serve(tmp_path, *flags):
    data_dir = tmp_path / "never-created"
    proc = subprocess.run([str(INFERQ_BIN), "serve", "--listen", "127.0.0.1:0", "--data-dir",
                           str(data_dir), *map(str, flags)], stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=30)
    assert not data_dir.exists(), "the data dir was created although the flags were bad"
    return proc


@pytest.fixture
def ca(tmp_path):
    return TestCA(tmp_path / "ca")


def test_cert_without_key_is_flag_error(tmp_path, ca):
    cert, key = ca.issue("server")
    proc = run_serve(tmp_path, "--tls-cert", cert)
    assert proc.returncode == 2, describe(proc)
    assert "--tls-cert" in proc.stderr
    assert "needs --tls-key" in proc.stderr

    proc = run_serve(tmp_path, "--tls-key", key)
    assert proc.returncode == 2, describe(proc)
    assert "needs --tls-cert" in proc.stderr

    proc = run_serve(tmp_path, "--tls-listen", "127.0.0.1:0")
    assert proc.returncode == 2, describe(proc)
    assert "--tls-listen" in proc.stderr
    assert "needs --tls-cert and --tls-key" in proc.stderr


@pytest.mark.parametrize("value", ["0", "50ms", "2h", "soon"])
def test_bad_handshake_timeout(tmp_path, ca, value):
    cert, key = ca.issue("server")
    proc = run_serve(tmp_path, "--tls-cert", cert, "--tls-key", key, "--tls-handshake-timeout",
                     value)
    assert proc.returncode == 2, describe(proc)
    assert f'"{value}"' in proc.stderr
    assert "--tls-handshake-timeout" in proc.stderr
    assert "100ms to 1h" in proc.stderr


def test_missing_certificate_file(tmp_path, ca):
    cert, key = ca.issue("server")
    missing = tmp_path / "nope.pem"
    proc = run_serve(tmp_path, "--tls-cert", missing, "--tls-key", key)
    assert proc.returncode == 1, describe(proc)
    assert f"cannot read --tls-cert {missing}" in proc.stderr
    assert "No such file" in proc.stderr

    proc = run_serve(tmp_path, "--tls-cert", cert, "--tls-key", missing)
    assert proc.returncode == 1, describe(proc)
    assert f"cannot read --tls-key {missing}" in proc.stderr


def test_key_not_matching_certificate(tmp_path, ca):
    cert, _ = ca.issue("server")
    _, other_key = ca.issue("other")
    proc = run_serve(tmp_path, "--tls-cert", cert, "--tls-key", other_key)
    assert proc.returncode == 1, describe(proc)
    assert f"--tls-key {other_key} does not match the certificate in --tls-cert {cert}" in \
        proc.stderr
    assert "pass the key the certificate was issued for" in proc.stderr


def test_not_pem_and_encrypted_key(tmp_path, ca):
    cert, key = ca.issue("server")
    junk = tmp_path / "junk.pem"
    junk.write_text("hello\n")
    proc = run_serve(tmp_path, "--tls-cert", junk, "--tls-key", key)
    assert proc.returncode == 1, describe(proc)
    assert f"cannot load the certificate from --tls-cert {junk}" in proc.stderr
    assert "BEGIN CERTIFICATE" in proc.stderr

    proc = run_serve(tmp_path, "--tls-cert", cert, "--tls-key", junk)
    assert proc.returncode == 1, describe(proc)
    assert f"cannot load the private key from --tls-key {junk}" in proc.stderr

    encrypted = tmp_path / "encrypted.key"
    subprocess.run(["openssl", "pkey", "-in", str(key), "-out", str(encrypted), "-aes256",
                    "-passout", "pass:secret"], check=True, timeout=OPENSSL_TIMEOUT)
    proc = run_serve(tmp_path, "--tls-cert", cert, "--tls-key", encrypted)
    assert proc.returncode == 1, describe(proc)
    assert f"--tls-key {encrypted} is encrypted" in proc.stderr
    assert "openssl pkey" in proc.stderr

    proc = run_serve(tmp_path, "--tls-cert", tmp_path, "--tls-key", key)
    assert proc.returncode == 1, describe(proc)
    assert "is not a regular file" in proc.stderr


def test_auth_none_needs_loopback_tls_listen(tmp_path, ca):
    cert, key = ca.issue("server")
    proc = run_serve(tmp_path, "--auth", "none", "--tls-cert", cert, "--tls-key", key,
                     "--tls-listen", "0.0.0.0:0")
    assert proc.returncode == 2, describe(proc)
    assert "--tls-listen 0.0.0.0:0" in proc.stderr


def test_certificate_chain_file(start_server, tmp_path):
    # A chain file: the server certificate, then an intermediate CA's certificate.
    root = TestCA(tmp_path / "root", name="test root")
    inter_dir = tmp_path / "inter"
    inter = TestCA(inter_dir, name="test intermediate")
    csr = inter_dir / "inter.csr"
    ext = inter_dir / "inter.ext"
    ext.write_text("basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n")
    subprocess.run(["openssl", "req", "-new", "-key", str(inter.key), "-out", str(csr), "-subj",
                    "/CN=test intermediate"], check=True, capture_output=True, timeout=30)
    subprocess.run(["openssl", "x509", "-req", "-in", str(csr), "-CA", str(root.cert), "-CAkey",
                    str(root.key), "-set_serial", "77", "-days", "2", "-out", str(inter.cert),
                    "-extfile", str(ext)], check=True, capture_output=True, timeout=30)
    leaf, key = inter.issue("leaf")
    chain = tmp_path / "chain.pem"
    chain.write_text(leaf.read_text() + inter.cert.read_text())

    server = start_server(tls=True, tls_cert=chain, tls_key=key)
    server.ca = root  # clients trust only the root; the server must send the intermediate
    job_lifecycle(server.api())


# ---------------------------------------------------------------------------
# The CLI


def test_cli_with_cacert(start_server, tmp_path):
    server = start_server(data_dir=tmp_path / "inferq-data", tls=True)
    url = f"https://127.0.0.1:{server.port}"
    cacert = str(server.ca.cert)

    proc = run_cli(["submit", "--model", MODEL, "--payload", '{"a":1}', "--cacert", cacert],
                   tmp_path, url=url)
    assert proc.returncode == 0, describe(proc)
    job_id = proc.stdout.strip()
    proc = run_cli(["status", job_id, "--model", MODEL, "--json", "--cacert", cacert], tmp_path,
                   url=url)
    assert proc.returncode == 0, describe(proc)
    assert '"pending"' in proc.stdout

    proc = run_cli(["metrics", "--model", MODEL], tmp_path, url=url)
    assert proc.returncode == 3, describe(proc)
    assert "certificate is not trusted" in proc.stderr
    assert "--cacert" in proc.stderr

    proc = run_cli(["metrics", "--model", MODEL, "--cacert", str(tmp_path / "missing.pem")],
                   tmp_path, url=url)
    assert proc.returncode == 3, describe(proc)
    assert "missing.pem" in proc.stderr
    assert "CA file cannot be read" in proc.stderr


def test_cli_names_a_host_mismatch(start_server, tmp_path):
    """A certificate for another host name is a name mismatch, not an unknown CA."""
    ca = TestCA(tmp_path / "ca")
    cert, key = ca.issue("elsewhere", names="DNS:queue.example.invalid")
    server = start_server(data_dir=tmp_path / "inferq-data", tls=True, tls_cert=cert,
                          tls_key=key)
    proc = run_cli(["metrics", "--model", MODEL, "--cacert", str(ca.cert)], tmp_path,
                   url=f"https://127.0.0.1:{server.port}")
    assert proc.returncode == 3, describe(proc)
    assert "does not name this host" in proc.stderr
    assert "not trusted" not in proc.stderr
    assert "no secure connection to" in proc.stderr


def test_cli_https_to_plain_port(start_server, tmp_path):
    server = start_server(data_dir=tmp_path / "inferq-data", tls=True, tls_listen="127.0.0.1:0")
    proc = run_cli(["metrics", "--model", MODEL, "--cacert", str(server.ca.cert)], tmp_path,
                   url=f"https://127.0.0.1:{server.port}")
    assert proc.returncode != 0, describe(proc)
    assert "TLS handshake failed" in proc.stderr
    assert "http://" in proc.stderr

    proc = run_cli(["metrics", "--model", MODEL], tmp_path,
                   url=f"http://127.0.0.1:{server.tls_port}")
    assert proc.returncode == 2, describe(proc)
    assert "https://" in proc.stderr

    proc = run_cli(["metrics", "--model", MODEL, "--cacert", str(server.ca.cert)], tmp_path,
                   url=f"https://127.0.0.1:{server.tls_port}")
    assert proc.returncode == 0, describe(proc)
