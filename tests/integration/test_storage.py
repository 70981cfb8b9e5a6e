"""Storage routes for Sprocket output files: upload URLs, signed uploads and downloads.

A Sprocket worker requests an upload URL from POST /v1/storage/upload-request for
"{request_id}-{name}", PUTs the bytes there without an API key (the URL's signature is the
credential), and reports the job done with the file's URL in its payload. Clients GET that URL.
Sprocket itself only speaks HTTPS; these tests replay its requests over plain HTTP on 127.0.0.1,
and test_sprocket_https.py replays the whole sequence over HTTPS.
"""

import http.client
import json
import os
import stat
import subprocess
import time
import urllib.parse

import pytest

from support import INFERQ_BIN, UNKNOWN_ID, Api, Reply, Server, assert_error, wait_for


MODEL = "test/storage"
RETRIEVE = "/internal/v1/queue/retrieve"
STATUS = "/internal/v1/videos/status"
UPLOAD_REQUEST = "/v1/storage/upload-request"


def running_job(api, model=MODEL):
    """Submit a job and take it with a Sprocket retrieve; return its request id."""
    request_id = api.submit_ok(model, {"prompt": "a cat"})
    query = urllib.parse.urlencode({"model": model, "timeout": "0s", "hostname": "gpu-1"})
    reply = api.get(f"{RETRIEVE}?{query}")
    assert reply.status == 200, reply
    assert reply.json["data"]["request_id"] == request_id, reply
    return request_id


def sprocket_update(api, request_id, status, model=MODEL, **fields):
    body = {"model": model, "request_id": request_id, "status": status, **fields}
    return api.post(STATUS, body)


def upload_request(api, filename):
    return api.post(UPLOAD_REQUEST, {"filename": filename})


def upload_url(api, filename):
    reply = upload_request(api, filename)
    assert reply.status == 200, reply
    return reply.json


def split(url):
    """Return the path and query of a URL as one request target."""
    parts = urllib.parse.urlsplit(url)
    return parts.path + ("?" + parts.query if parts.query else "")


def put(server, target, data, headers=None):
    """PUT data to target with no Authorization header, as Sprocket does."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        conn.request("PUT", target, body=data, headers=headers or {})
        resp = conn.getresponse()
        raw = resp.read()
        headers_lower = {name.lower(): value for name, value in resp.getheaders()}
    finally:
        conn.close()
    return Reply(resp.status, headers_lower, raw)


def upload(server, api, filename, data):
    """Run the upload-request and the PUT; return the file's download URL."""
    urls = upload_url(api, filename)
    reply = put(server, split(urls["upload_url"]["url"]), data)
    assert reply.status == 200, reply
    assert reply.json == {"path": urls["path"], "size": len(data)}, reply
    return urls["path"]


def storage_files(server):
    return sorted(os.listdir(server.data_dir / "storage"))


def create_key(server, name, role, models):
    admin = server.api()
    reply = admin.post("/v1/admin/keys", {"name": name, "role": role, "models": models})
    assert reply.status == 200, reply
    return reply.json["key"]


def test_sprocket_sequence_end_to_end(server, api):
    request_id = running_job(api)
    assert sprocket_update(api, request_id, "running", info={"progress": 0.5}).status == 200

    filename = f"{request_id}-video.mp4"
    urls = upload_url(api, filename)
    base = f"http://127.0.0.1:{server.port}"
    assert urls["path"] == f"{base}/v1/storage/{filename}"
    assert urls["upload_url"]["method"] == "PUT"
    assert urls["upload_url"]["url"].startswith(f"{base}/v1/storage/upload/{filename}?expires=")
    assert urls["upload_url"]["headers"] == {"Content-Type": "video/mp4"}

    data = bytes(range(256)) * 1000  # 256,000 bytes, every byte value
    reply = put(server, split(urls["upload_url"]["url"]), data, {"Content-Type": "video/mp4"})
    assert reply.status == 200, reply

    reply = sprocket_update(api, request_id, "done", payload={"video": urls["path"]})
    assert reply.status == 200, reply
    status = api.status_ok(request_id, MODEL)
    assert status["status"] == "done"
    assert status["outputs"] == {"video": urls["path"]}

    for url in (status["outputs"]["video"],
                f"{base}/v1/deployments/storage/{filename}"):
        reply = api.get(split(url))
        assert reply.status == 200, reply
        assert reply.raw == data, f"GET {url} returned other bytes"
        assert reply.headers["content-type"] == "video/mp4"
        assert reply.headers["content-length"] == str(len(data))
        assert reply.headers["accept-ranges"] == "bytes"
    assert storage_files(server) == [filename]


def test_upload_request_job_errors(start_server):
    server = start_server()
    api = server.api()

    reply = upload_request(api, f"{UNKNOWN_ID}-out.png")
    assert_error(reply, 404, "not_found", "filename", message_has=UNKNOWN_ID)

    done = running_job(api)
    assert sprocket_update(api, done, "done", payload={"ok": True}).status == 200
    # A pending job takes files too; only finished jobs refuse them.
    pending = api.submit_ok(MODEL, {})
    assert upload_request(api, f"{pending}-early.png").status == 200

    reply = upload_request(api, f"{done}-late.png")
    body = assert_error(reply, 409, "invalid_state", message_has="done")
    assert body["status"] == "done"

    canceled = api.submit_ok(MODEL, {})
    assert api.post("/v1/queue/cancel", {"model": MODEL, "request_id": canceled}).status == 200
    assert_error(upload_request(api, f"{canceled}-x.png"), 409, "invalid_state")


def test_foreign_key_sees_no_job(server, api):
    request_id = running_job(api)
    path = split(upload(server, api, f"{request_id}-out.txt", b"secret output"))
    other_worker = Api(server.port, create_key(server, "other-worker", "worker", ["other/*"]))
    other_client = Api(server.port, create_key(server, "other-client", "client", ["other/*"]))
    own_client = Api(server.port, create_key(server, "own-client", "client", [MODEL]))
    own_worker = Api(server.port, create_key(server, "own-worker", "worker", ["test/*"]))
    try:
        reply = upload_request(other_worker, f"{request_id}-more.txt")
        unknown = upload_request(other_worker, f"{UNKNOWN_ID}-more.txt")
        assert_error(reply, 404, "not_found", "filename")
        assert_error(unknown, 404, "not_found", "filename")
        assert_error(other_client.get(path), 404, "not_found", "filename")

        assert upload_request(own_worker, f"{request_id}-more.txt").status == 200
        assert own_worker.get(path).raw == b"secret output"
        assert own_client.get(path).raw == b"secret output"
        # A client key reads files but cannot ask for upload URLs.
        assert upload_request(own_client, f"{request_id}-more.txt").status == 403
    finally:
        for client in (other_worker, other_client, own_client, own_worker):
            client.close()


BAD_NAMES = [
    ("out.png", "request id"),
    ("{id}", "request id"),
    ("{id}-", "request id"),
    ("{ID}-out.png", "request id"),
    ("{id}out.png", "request id"),
    ("{id}-.hidden", "starts with '.'"),
    ("{id}-a/b.png", "A-Z a-z 0-9"),
    ("{id}-../../admin.key", "starts with '.'"),
    ("{id}-a/../../admin.key", "A-Z a-z 0-9"),
    ("{id}-a..png", '".."'),
    ("{id}-caf\u00e9.png", "A-Z a-z 0-9"),
    ("{id}-a b.png", "A-Z a-z 0-9"),
    ("{id}-a%2Fb.png", "A-Z a-z 0-9"),
    ("{id}-" + "x" * 219, "255 bytes"),
]


@pytest.mark.parametrize("template,reason", BAD_NAMES)
def test_upload_request_bad_names(server, api, template, reason):
    request_id = running_job(api)
    filename = template.replace("{id}", request_id).replace("{ID}", request_id.upper())
    reply = upload_request(api, filename)
    assert_error(reply, 400, "invalid_field", "filename", message_has=reason)
    assert storage_files(server) == []


def test_upload_request_bad_bodies(server, api):
    assert_error(api.post(UPLOAD_REQUEST, {}), 400, "missing_field", "filename")
    reply = api.post(UPLOAD_REQUEST, {"filename": 7})
    assert reply.status == 400, reply
    assert reply.json["param"] == "filename", reply
    assert api.post(UPLOAD_REQUEST, b"not json").status == 400


def test_filename_length_flag(start_server):
    server = start_server(max_filename_length=40)
    api = server.api()
    request_id = running_job(api)
    assert upload_request(api, f"{request_id}-abc").status == 200
    reply = upload_request(api, f"{request_id}-abcd")
    assert_error(reply, 400, "invalid_field", "filename", message_has="--max-filename-length")


def test_bad_signatures(server, api):
    request_id = running_job(api)
    filename = f"{request_id}-out.bin"
    url = upload_url(api, filename)["upload_url"]["url"]
    parts = urllib.parse.urlsplit(url)
    query = dict(urllib.parse.parse_qsl(parts.query))
    signature, expires = query["signature"], query["expires"]
    flipped = ("0" if signature[0] != "0" else "1") + signature[1:]
    other = f"{request_id}-other.bin"
    targets = [
        f"{parts.path}",
        f"{parts.path}?expires={expires}",
        f"{parts.path}?signature={signature}",
        f"{parts.path}?expires={expires}&signature={flipped}",
        f"{parts.path}?expires={int(expires) + 3600}&signature={signature}",
        f"{parts.path}?expires={expires}&signature={signature[:-2]}",
        f"{parts.path}?expires={expires}&signature={signature}00",
        f"{parts.path}?expires=-1&signature={signature}",
        f"/v1/storage/upload/{other}?expires={expires}&signature={signature}",
    ]
    for target in targets:
        reply = put(server, target, b"data")
        assert_error(reply, 403, "invalid_signature", "signature")
    assert storage_files(server) == []

    # Upper-case hex is the same signature.
    reply = put(server, f"{parts.path}?expires={expires}&signature={signature.upper()}", b"ok")
    assert reply.status == 200, reply
    assert storage_files(server) == [filename]


def test_expired_upload_url(start_server):
    server = start_server(upload_url_ttl="1s")
    api = server.api()
    request_id = running_job(api)
    urls = upload_url(api, f"{request_id}-late.bin")
    expires = int(dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(
        urls["upload_url"]["url"]).query))["expires"])
    assert expires - time.time() <= 1.5, urls
    wait_for(lambda: time.time() > expires + 1, 5, "the upload URL to expire")
    reply = put(server, split(urls["upload_url"]["url"]), b"late")
    assert_error(reply, 403, "upload_url_expired", message_has="expired")
    assert storage_files(server) == []


def test_upload_to_finished_job(server, api):
    request_id = running_job(api)
    urls = upload_url(api, f"{request_id}-out.bin")
    assert sprocket_update(api, request_id, "failed", info={"error": "boom"}).status == 200
    reply = put(server, split(urls["upload_url"]["url"]), b"too late")
    body = assert_error(reply, 409, "invalid_state", message_has="failed")
    assert body["status"] == "failed"
    assert storage_files(server) == []


def test_traversal_attempts(server, api):
    request_id = running_job(api)
    upload(server, api, f"{request_id}-ok.txt", b"inside")
    url = upload_url(api, f"{request_id}-ok.txt")["upload_url"]["url"]
    query = urllib.parse.urlsplit(url).query
    data_dir = server.data_dir
    before = sorted(os.listdir(data_dir))
    key_before = (data_dir / "admin.key").read_bytes()

    names = [
        "../admin.key",
        "..%2Fadmin.key",
        "..%2fadmin.key",
        "%2e%2e%2fadmin.key",
        "%2E%2E/admin.key",
        f"{request_id}-..%2F..%2Fadmin.key",
        f"{request_id}-%2e%2e%2f%2e%2e%2fadmin.key",
        f"{request_id}-ok.txt%00.png",
        f"{request_id}-ok.txt%2",
        "..%252fadmin.key",
        "%2Fetc%2Fpasswd",
    ]
    for name in names:
        reply = put(server, f"/v1/storage/upload/{name}?{query}", b"overwrite")
        assert reply.status in (400, 405), f"PUT {name}: {reply!r}"
        reply = api.get(f"/v1/storage/{name}")
        assert reply.status in (400, 404, 405), f"GET {name}: {reply!r}"
        assert b"iq_" not in reply.raw, f"GET {name} returned a key file"
        reply = api.get(f"/v1/deployments/storage/{name}")
        assert reply.status in (400, 404, 405), f"GET deployments {name}: {reply!r}"
        assert b"iq_" not in reply.raw

    reply = api.get("/v1/storage/..%2Fadmin.key")
    assert_error(reply, 400, "invalid_field", "filename")
    reply = api.get(f"/v1/storage/{request_id}-..%2F..%2Fadmin.key")
    assert_error(reply, 400, "invalid_field", "filename", message_has="starts with '.'")
    reply = api.get(f"/v1/storage/{request_id}-x%2F..%2F..%2Fadmin.key")
    assert_error(reply, 400, "invalid_field", "filename", message_has="A-Z a-z 0-9")
    assert sorted(os.listdir(data_dir)) == before
    assert (data_dir / "admin.key").read_bytes() == key_before
    assert storage_files(server) == [f"{request_id}-ok.txt"]
    # Percent-encoded safe characters decode to the same file.
    assert api.get(f"/v1/storage/{request_id}-ok%2Etxt").raw == b"inside"


def test_size_limits(start_server):
    server = start_server(max_upload_bytes="4K", max_body_bytes="1K")
    api = server.api()
    request_id = running_job(api)
    filename = f"{request_id}-big.bin"
    target = split(upload_url(api, filename)["upload_url"]["url"])

    assert put(server, target, b"a" * 4096).status == 200
    reply = put(server, target, b"b" * 4097)
    assert_error(reply, 413, "body_too_large", message_has="--max-upload-bytes")
    assert (server.data_dir / "storage" / filename).read_bytes() == b"a" * 4096

    # Without a valid signature a PUT gets only the ordinary body limit.
    bad = target.replace("signature=", "signature=0")
    reply = put(server, bad, b"c" * 2048)
    assert_error(reply, 413, "body_too_large", message_has="--max-body-bytes")
    # Every other route keeps --max-body-bytes.
    reply = api.post("/v1/queue/submit", {"model": MODEL, "payload": {"x": "d" * 2048}})
    assert_error(reply, 413, "body_too_large", message_has="--max-body-bytes")


def test_wrong_methods(server, api):
    request_id = running_job(api)
    name = f"{request_id}-out.bin"
    cases = [
        ("GET", UPLOAD_REQUEST, "POST"),
        ("PUT", UPLOAD_REQUEST, "POST"),
        ("GET", f"/v1/storage/upload/{name}", "PUT"),
        ("POST", f"/v1/storage/upload/{name}", "PUT"),
        ("PUT", f"/v1/storage/{name}", "GET"),
        ("DELETE", f"/v1/storage/{name}", "GET"),
        ("POST", f"/v1/deployments/storage/{name}", "GET"),
    ]
    for method, path, allowed in cases:
        reply = api.request(method, path, b"" if method in ("POST", "PUT") else None)
        assert_error(reply, 405, "method_not_allowed")
        assert reply.headers["allow"] == allowed, (method, path, reply.headers)


@pytest.fixture
def ranged(server, api):
    """A stored file of 100 bytes (0..99), returning (api, path)."""
    request_id = running_job(api)
    path = split(upload(server, api, f"{request_id}-r.bin", bytes(range(100))))
    return api, path


RANGE_CASES = [
    ("bytes=0-0", 0, 0),
    ("bytes=10-19", 10, 19),
    ("bytes=90-", 90, 99),
    ("bytes=0-", 0, 99),
    ("bytes=-10", 90, 99),
    ("bytes=-1000", 0, 99),
    ("bytes=95-500", 95, 99),
    ("Bytes=5-6", 5, 6),
    ("bytes=99-99999999999999999999999", 99, 99),
]


@pytest.mark.parametrize("header,first,last", RANGE_CASES)
def test_single_ranges(ranged, header, first, last):
    api, path = ranged
    reply = api.get(path, headers={"Range": header})
    assert reply.status == 206, reply
    assert reply.raw == bytes(range(first, last + 1))
    assert reply.headers["content-range"] == f"bytes {first}-{last}/100"
    assert reply.headers["content-length"] == str(last - first + 1)
    assert reply.headers["content-type"] == "application/octet-stream"


@pytest.mark.parametrize("header", ["bytes=100-", "bytes=100-200", "bytes=-0",
                                    "bytes=99999999999999999999999-"])
def test_unsatisfiable_ranges(ranged, header):
    api, path = ranged
    reply = api.get(path, headers={"Range": header})
    assert_error(reply, 416, "range_not_satisfiable", "Range")
    assert reply.headers["content-range"] == "bytes */100"


@pytest.mark.parametrize("header", ["bytes=5-2", "bytes=abc", "bytes=-", "bytes=1-2-3",
                                    "items=0-1", "bytes=0-1,3-4", "bytes= 0-1", "bytes",
                                    "bytes=" + "1" * 300])
def test_malformed_ranges_get_whole_file(ranged, header):
    api, path = ranged
    reply = api.get(path, headers={"Range": header})
    assert reply.status == 200, reply
    assert reply.raw == bytes(range(100))
    assert "content-range" not in reply.headers


def test_head(ranged):
    api, path = ranged
    for headers in ({}, {"Range": "bytes=0-9"}):
        reply = api.request("HEAD", path, headers=headers)
        assert reply.status == 200, reply
        assert reply.raw == b""
        assert reply.headers["content-length"] == "100"
        assert reply.headers["accept-ranges"] == "bytes"
    reply = api.request("HEAD", path.replace("-r.bin", "-missing.bin"))
    assert reply.status == 404


CONTENT_TYPES = [
    ("mp4", "video/mp4"), ("webm", "video/webm"), ("mov", "video/quicktime"),
    ("png", "image/png"), ("jpg", "image/jpeg"), ("JPEG", "image/jpeg"),
    ("webp", "image/webp"), ("gif", "image/gif"), ("json", "application/json"),
    ("txt", "text/plain; charset=utf-8"), ("wav", "audio/wav"), ("mp3", "audio/mpeg"),
    ("bin", "application/octet-stream"), ("tar.gz", "application/octet-stream"),
]


def test_content_types(server, api):
    request_id = running_job(api)
    upload(server, api, f"{request_id}-noext", b"x")
    assert api.get(f"/v1/storage/{request_id}-noext").headers["content-type"] == \
        "application/octet-stream"
    for ext, expected in CONTENT_TYPES:
        data = json.dumps({"ext": ext}).encode()  # valid JSON, which the .json case parses
        path = split(upload(server, api, f"{request_id}-file.{ext}", data))
        reply = api.get(path)
        assert reply.status == 200, reply
        assert reply.raw == data, reply
        assert reply.headers["content-type"] == expected, ext


def test_missing_files(server, api):
    request_id = running_job(api)
    reply = api.get(f"/v1/storage/{request_id}-never.png")
    assert_error(reply, 404, "not_found", "filename", message_has="never.png")
    reply = api.get(f"/v1/storage/{UNKNOWN_ID}-x.png")
    assert_error(reply, 404, "not_found", "filename")
    assert api.request("GET", f"/v1/storage/{request_id}-never.png",
                       headers={"Authorization": "Bearer iq_nope"}).status == 401


def test_replace_and_empty_file(server, api):
    request_id = running_job(api)
    filename = f"{request_id}-out.json"
    path = split(upload(server, api, filename, b'{"v": 1}'))
    upload(server, api, filename, b'{"v": 2, "longer": true}')
    assert api.get(path).raw == b'{"v": 2, "longer": true}'
    upload(server, api, filename, b"")
    reply = api.get(path)
    assert reply.status == 200
    assert reply.raw == b""
    assert reply.headers["content-length"] == "0"
    assert_error(api.get(path, headers={"Range": "bytes=0-"}), 416, "range_not_satisfiable")
    assert storage_files(server) == [filename], "a temp file was left behind"


def on_postgres(server):
    return (getattr(server, "store", None) or "local").startswith("postgres")


def database_name(server):
    return server.store.split("///", 1)[1].split("?", 1)[0]


def signing_secret(request, server):
    """Return the upload signing secret: DATA_DIR/storage.key on the local store, the
    storage_secret row of table inferq_settings on the postgres store."""
    if on_postgres(server):
        assert not (server.data_dir / "storage.key").exists()
        rows = request.getfixturevalue("pg_cluster").psql(
            "SELECT value FROM inferq_settings WHERE name = 'storage_secret'",
            database_name(server))
        assert len(rows) == 1, rows
        assert len(rows[0][0]) == 64, rows
        return bytes.fromhex(rows[0][0])
    secret = server.data_dir / "storage.key"
    mode = stat.S_IMODE(os.stat(secret).st_mode)
    assert mode == 0o600, oct(mode)
    return secret.read_bytes()


def test_restart_keeps_files_secret_and_urls(request, server, api):
    secret_bytes = signing_secret(request, server)
    assert len(secret_bytes) == 32

    request_id = running_job(api)
    path = split(upload(server, api, f"{request_id}-a.png", b"first"))
    pending_url = upload_url(api, f"{request_id}-b.png")["upload_url"]["url"]

    assert server.stop() == 0
    server.restart()
    api = server.api()
    assert signing_secret(request, server) == secret_bytes
    assert api.get(path).raw == b"first"
    reply = put(server, split(pending_url), b"after restart")
    assert reply.status == 200, reply
    assert api.get(f"/v1/storage/{request_id}-b.png").raw == b"after restart"
    assert not any(secret_bytes.hex() in line for line in server.log), "secret was logged"


def test_bad_secret_file_stops_start(start_server, tmp_path):
    data_dir = tmp_path / "bad-secret"
    data_dir.mkdir()
    (data_dir / "storage.key").write_bytes(b"short")
    server = Server(data_dir, [])
    with pytest.raises(pytest.fail.Exception):
        server.start()
    assert server.proc.returncode != 0
    assert any("storage.key" in line and "32 bytes" in line for line in server.log), \
        server.log_tail()


def test_start_removes_leftovers(server, api):
    request_id = running_job(api)
    upload(server, api, f"{request_id}-keep.png", b"keep")
    storage = server.data_dir / "storage"
    assert server.stop() == 0
    (storage / ".upload-abc123").write_bytes(b"half an upload")
    (storage / f"{UNKNOWN_ID}-orphan.png").write_bytes(b"job gone")
    (storage / "README").write_bytes(b"not ours")
    if on_postgres(server):
        # Nodes share the directory, so a young temp file may be another node's upload in
        # progress, and files of deleted jobs are found through table inferq_files instead.
        two_hours_ago = time.time() - 7200
        (storage / ".upload-old456").write_bytes(b"abandoned upload")
        os.utime(storage / ".upload-old456", (two_hours_ago, two_hours_ago))
        server.restart()
        assert storage_files(server) == sorted([
            ".upload-abc123", f"{UNKNOWN_ID}-orphan.png", "README", f"{request_id}-keep.png"])
        return
    server.restart()
    assert storage_files(server) == sorted(["README", f"{request_id}-keep.png"])


def test_retention_removes_files(start_server):
    server = start_server(retention="1s")
    api = server.api()
    done = running_job(api)
    running = running_job(api)
    upload(server, api, f"{done}-a.png", b"a")
    upload(server, api, f"{done}-b.png", b"b")
    path = split(upload(server, api, f"{running}-c.png", b"c"))
    assert sprocket_update(api, done, "done", payload={"a": "x"}).status == 200

    wait_for(lambda: storage_files(server) == [f"{running}-c.png"], 10,
             "the done job's files to be deleted with it")
    assert api.status(done, MODEL).status == 404
    assert api.get(f"/v1/storage/{done}-a.png").status == 404
    assert api.get(path).raw == b"c"


def test_public_url_flag(start_server):
    server = start_server(public_url="https://queue.example.com/base/")
    api = server.api()
    request_id = running_job(api)
    urls = upload_url(api, f"{request_id}-x.png")
    assert urls["path"] == f"https://queue.example.com/base/v1/storage/{request_id}-x.png"
    assert urls["upload_url"]["url"].startswith(
        f"https://queue.example.com/base/v1/storage/upload/{request_id}-x.png?expires=")


def test_storage_dir_flag(start_server, tmp_path):
    files = tmp_path / "elsewhere" / "files"
    files.parent.mkdir()
    server = start_server(storage_dir=files)
    api = server.api()
    request_id = running_job(api)
    path = split(upload(server, api, f"{request_id}-a.png", b"moved"))
    assert sorted(os.listdir(files)) == [f"{request_id}-a.png"]
    assert stat.S_IMODE(os.stat(files).st_mode) == 0o700
    assert not (server.data_dir / "storage").exists()
    assert api.get(path).raw == b"moved"
    assert any(str(files) in line for line in server.log), server.log_tail()


def test_storage_dir_that_cannot_be_made_stops_start(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_bytes(b"")
    server = Server(tmp_path / "d", ["--storage-dir", str(blocker / "files")])
    with pytest.raises(pytest.fail.Exception):
        server.start()
    assert server.proc.returncode != 0
    assert any("--storage-dir" in line and str(blocker) in line for line in server.log), \
        server.log_tail()


@pytest.mark.parametrize("flag,value", [
    ("--public-url", "ftp://x"),
    ("--public-url", "https://"),
    ("--public-url", "https://a b"),
    ("--public-url", "https://x/?q=1"),
    ("--max-filename-length", "37"),
    ("--max-filename-length", "256"),
    ("--upload-url-ttl", "0s"),
    ("--upload-url-ttl", "8d"),
    ("--upload-url-ttl", "1500ms"),
    ("--max-upload-bytes", "0"),
    ("--max-upload-bytes", "17G"),
    ("--storage-dir", ""),
])
def test_bad_flags(tmp_path, flag, value):
    result = subprocess.run([str(INFERQ_BIN), "serve", "--listen", "127.0.0.1:0", "--data-dir",
                             str(tmp_path / "d"), flag, value], capture_output=True, timeout=10)
    assert result.returncode == 2, result
    assert flag.encode() in result.stderr, result.stderr
    assert value.encode() in result.stderr, result.stderr
