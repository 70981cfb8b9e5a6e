"""A long-poll claim whose client closes its connection ends at once: the server answers the
no-job response (204, or {"data":null} for a Sprocket retrieve) and closes, instead of keeping
the socket in CLOSE_WAIT until the wait ends. A client that only half-closed still reads that
answer.

Every wait here is 30 s, and every check is done within 10 s, so a server that kept the
waiter until its wait ended fails them.
"""

import socket

from prometheus_text import parse
from support import read_all, wait_for

MODEL = "test/longpoll-close"
WAIT_S = 30


def waiting_workers(api, model=MODEL):
    """Read the node's inferq_waiting_workers gauge of model (0 when it has no series), which
    both stores fill from the server's own list of waiting claims."""
    reply = api.get("/metrics")
    assert reply.status == 200, reply
    samples = parse(reply.raw.decode()).samples("inferq_waiting_workers")
    values = [value for labels, value in samples if labels.get("model") == model]
    return values[0] if values else 0


def claim_request(server, model=MODEL):
    body = b'{"model": "%s", "wait": %d}' % (model.encode(), WAIT_S)
    return (b"POST /v1/queue/claim HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Authorization: Bearer " + server.key.encode() + b"\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body)


def retrieve_request(server, model=MODEL):
    return (b"GET /internal/v1/queue/retrieve?model=%s&timeout=%ds HTTP/1.1\r\n"
            b"Host: 127.0.0.1\r\nAuthorization: Bearer " % (model.encode(), WAIT_S) +
            server.key.encode() + b"\r\n\r\n")


def close_wait_sockets(port):
    """Count the server's sockets on port in CLOSE_WAIT, from /proc/net/tcp (state 08)."""
    count = 0
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = open(path).read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            if local_port == port and fields[3] == "08":
                count += 1
    return count


def test_closed_long_poll_released(start_server):
    server = start_server()
    api = server.api()
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    sock.sendall(claim_request(server))
    wait_for(lambda: waiting_workers(api) == 1, 10, "the claim to wait")
    sock.close()

    wait_for(lambda: waiting_workers(api) == 0, 10, "the closed claim to stop waiting")
    wait_for(lambda: close_wait_sockets(server.port) == 0, 10,
             "the server to close the socket of the closed claim")

    # The job submitted next is not handed to the client that left.
    request_id = api.submit_ok(MODEL, {})
    assert api.status_ok(request_id, MODEL)["status"] == "pending"
    assert api.claim_ok(MODEL)["request_id"] == request_id


def test_half_closed_long_poll_answered(start_server):
    server = start_server()
    api = server.api()
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    sock.sendall(claim_request(server))
    wait_for(lambda: waiting_workers(api) == 1, 10, "the claim to wait")
    sock.shutdown(socket.SHUT_WR)

    data = read_all(sock)
    sock.close()
    assert data.startswith(b"HTTP/1.1 204 No Content\r\n"), data
    assert b"Connection: close\r\n" in data
    assert waiting_workers(api) == 0


def test_half_closed_retrieve_gets_null(start_server):
    server = start_server()
    api = server.api()
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    sock.sendall(retrieve_request(server))
    wait_for(lambda: waiting_workers(api) == 1, 10, "the retrieve to wait")
    sock.shutdown(socket.SHUT_WR)

    data = read_all(sock)
    sock.close()
    assert data.startswith(b"HTTP/1.1 200 OK\r\n"), data
    assert data.endswith(b'\r\n\r\n{"data":null}'), data


def test_claim_sent_with_fin_answered_at_once(start_server):
    # The request and the FIN arrive together, so the claim meets a client already at EOF.
    server = start_server()
    api = server.api()
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    sock.sendall(claim_request(server))
    sock.shutdown(socket.SHUT_WR)
    data = read_all(sock)
    sock.close()
    assert data.startswith(b"HTTP/1.1 204 No Content\r\n"), data
    assert waiting_workers(api) == 0


def test_other_waiters_keep_waiting(start_server):
    server = start_server()
    api = server.api()
    staying = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    leaving = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    staying.sendall(claim_request(server))
    wait_for(lambda: waiting_workers(api) == 1, 10, "the first claim to wait")
    leaving.sendall(claim_request(server))
    wait_for(lambda: waiting_workers(api) == 2, 10, "both claims to wait")
    leaving.close()
    wait_for(lambda: waiting_workers(api) == 1, 10, "the closed claim to stop waiting")

    # The remaining waiter still gets the next job.
    request_id = api.submit_ok(MODEL, {})
    data = b""
    while b"\r\n\r\n" not in data or not data.endswith(b"}"):
        chunk = staying.recv(65536)
        assert chunk, data
        data += chunk
    staying.close()
    assert data.startswith(b"HTTP/1.1 200 OK\r\n"), data
    assert request_id.encode() in data
