"""The request sequence of a Sprocket worker, replayed over HTTPS against the built-in TLS.

Sprocket (Together's Python SDK for queue workers) speaks only HTTPS: it puts "https://" in
front of TOGETHER_API_BASE_URL. A worker long-polls GET /internal/v1/queue/retrieve, sends a
"running" update every few seconds, requests an upload URL from POST /v1/storage/upload-request,
PUTs its output file there without an API key, and reports "done" with the file's URL in its
payload; a failing job ends with a "failed" update whose info.error is the error text. These
tests make a CA at test time, start inferq with a certificate it signed, and check after each
step what a client sees through GET /v1/queue/status. Every connection trusts only the test CA.
"""

import http.client
import json
import ssl
import threading
import urllib.parse

import pytest

from support import Api, wait_for

MODEL = "video/sprocket-https"
WORKER_VERSION = "sprocket-replay/1.0"
HOSTNAME = "gpu-node-7"


class Sprocket:
    """The worker's side: every request over HTTPS to base_url, as Sprocket sends it."""

    def __init__(self, base_url, key, context):
        parts = urllib.parse.urlsplit(base_url)
        assert parts.scheme == "https", base_url
        self.host, self.port = parts.hostname, parts.port
        self.key = key
        self.context = context

    def request(self, method, target, body=None, headers=None, auth=True, timeout=30.0):
        conn = http.client.HTTPSConnection(self.host, self.port, timeout=timeout,
                                           context=self.context)
        sent = dict(headers or {})
        if auth:
            sent["Authorization"] = f"Bearer {self.key}"
            sent["x-worker-version"] = WORKER_VERSION
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
            sent["Content-Type"] = "application/json"
        try:
            conn.request(method, target, body=body, headers=sent)
            resp = conn.getresponse()
            raw = resp.read()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, raw
        finally:
            conn.close()

    def retrieve(self, timeout="5s", idle_s=0):
        query = urllib.parse.urlencode({"model": MODEL, "timeout": timeout, "hostname": HOSTNAME})
        status, _, raw = self.request("GET", f"/internal/v1/queue/retrieve?{query}",
                                      headers={"x-idle-time": str(idle_s)}, timeout=15.0)
        assert status == 200, raw
        return json.loads(raw)["data"]

    def update(self, request_id, state, **fields):
        body = {"model": MODEL, "request_id": request_id, "status": state, **fields}
        status, _, raw = self.request("POST", "/internal/v1/videos/status", body)
        return status, json.loads(raw) if raw else None

    def upload(self, request_id, name, data, content_type):
        status, _, raw = self.request("POST", "/v1/storage/upload-request",
                                      {"filename": f"{request_id}-{name}"})
        assert status == 200, raw
        urls = json.loads(raw)
        url = urls["upload_url"]
        assert url["method"] == "PUT"
        parts = urllib.parse.urlsplit(url["url"])
        assert (parts.scheme, parts.hostname, parts.port) == ("https", self.host, self.port), url
        headers = {**url.get("headers", {}), "Content-Type": content_type}
        status, _, raw = self.request("PUT", f"{parts.path}?{parts.query}", data, headers,
                                      auth=False)
        assert status == 200, raw
        return urls["path"]


def new_key(admin, name, role):
    reply = admin.post("/v1/admin/keys", {"name": name, "role": role, "models": [MODEL]})
    assert reply.status == 200, reply
    return reply.json["key"]


def start(start_server):
    server = start_server(tls=True)
    assert server.scheme == "https"
    admin = server.api()
    worker_key = new_key(admin, "sprocket-worker", "worker")
    client = Api(server.port, new_key(admin, "video-client", "client"), 30.0, server.ca.context())
    base = f"https://127.0.0.1:{server.port}"
    return server, admin, client, Sprocket(base, worker_key, server.ca.context())


def test_job_done_with_file(start_server):
    server, admin, client, worker = start(start_server)

    # The worker long-polls before any job exists; the submit wakes it.
    claimed = {}
    poll = threading.Thread(target=lambda: claimed.update(job=worker.retrieve("5s")))
    poll.start()
    wait_for(lambda: admin.get("/v1/admin/queues").json["data"] and
             admin.get("/v1/admin/queues").json["data"][0]["waiting_workers"] == 1,
             5.0, "the retrieve to wait")
    request_id = client.submit_ok(MODEL, {"prompt": "a red kite over the sea"})
    poll.join(10.0)
    assert not poll.is_alive(), "the long-poll retrieve did not return"
    job = claimed["job"]
    assert job["request_id"] == request_id
    assert job["payload"] == {"prompt": "a red kite over the sea"}
    assert client.status_ok(request_id, MODEL)["status"] == "running"

    # Progress updates: each refreshes the lease and merges info.
    for progress in (0.25, 0.75):
        status, _ = worker.update(request_id, "running", info={"progress": progress})
        assert status == 200
        seen = client.status_ok(request_id, MODEL)
        assert seen["status"] == "running"
        assert seen["info"]["progress"] == progress

    data = bytes(range(256)) * 4096  # 1 MiB, every byte value, over many TLS records
    path = worker.upload(request_id, "kite.mp4", data, "video/mp4")
    assert path == f"https://127.0.0.1:{server.port}/v1/storage/{request_id}-kite.mp4"
    assert client.status_ok(request_id, MODEL)["status"] == "running"

    status, _ = worker.update(request_id, "done", payload={"video": path})
    assert status == 200
    seen = client.status_ok(request_id, MODEL)
    assert seen["status"] == "done"
    assert seen["outputs"] == {"video": path}

    # The client follows the URL in the outputs over HTTPS with its own key.
    target = urllib.parse.urlsplit(path).path
    reply = client.get(target)
    assert reply.status == 200, reply
    assert reply.raw == data
    assert reply.headers["content-type"] == "video/mp4"
    reply = client.get(target, headers={"Range": "bytes=1000-1999"})
    assert reply.status == 206, reply
    assert reply.raw == data[1000:2000]

    # The claim kept the worker's hostname and version.
    workers = admin.get("/v1/admin/workers").json["data"]
    assert [(w["name"], w["version"], w["jobs_done"]) for w in workers] == [
        (HOSTNAME, WORKER_VERSION, 1)], workers

    # A finished job takes no more updates or files.
    status, body = worker.update(request_id, "running", info={"progress": 1.0})
    assert status == 409, body
    status, _, _ = worker.request("POST", "/v1/storage/upload-request",
                                  {"filename": f"{request_id}-late.mp4"})
    assert status == 409


def test_job_failed(start_server):
    server, admin, client, worker = start(start_server)
    request_id = client.submit_ok(MODEL, {"prompt": "too long a video"})
    assert client.status_ok(request_id, MODEL)["status"] == "pending"

    job = worker.retrieve("1s")
    assert job["request_id"] == request_id
    assert client.status_ok(request_id, MODEL)["status"] == "running"

    status, _ = worker.update(request_id, "running", info={"progress": 0.1})
    assert status == 200
    status, _ = worker.update(request_id, "failed",
                              info={"error": "CUDA out of memory at frame 212", "frame": 212})
    assert status == 200
    seen = client.status_ok(request_id, MODEL)
    assert seen["status"] == "failed"
    assert seen["error"] == "CUDA out of memory at frame 212"
    assert seen["info"]["frame"] == 212
    assert seen["info"]["progress"] == 0.1

    # Nothing more to take: an empty retrieve returns {"data": null} after its timeout.
    assert worker.retrieve("200ms") is None
    status, _ = worker.update(request_id, "done", payload={"video": "late"})
    assert status == 409


def test_plain_http_and_untrusted_ca(start_server):
    server, _, _, worker = start(start_server)
    # Without the test CA the handshake fails, so workers must trust that CA.
    untrusted = Sprocket(f"https://127.0.0.1:{server.port}", worker.key,
                         ssl.create_default_context())
    try:
        untrusted.retrieve("0s")
    except Exception as exc:  # ssl.SSLCertVerificationError
        assert "certificate" in str(exc).lower(), exc
    else:
        raise AssertionError("a client without the test CA completed the handshake")
    # Plain HTTP to the HTTPS port gets a clear 400 that names HTTPS.
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    try:
        conn.request("GET", "/healthz")
        resp = conn.getresponse()
        body = resp.read().decode()
    finally:
        conn.close()
    assert resp.status == 400, body
    assert "https" in body.lower(), body
