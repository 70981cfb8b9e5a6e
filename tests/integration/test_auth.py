"""API keys, roles and tenant isolation: 401 without a usable key, 403 for the wrong role, 404
for a model outside the key's patterns (byte for byte the response for a job that does not
exist), the admin key routes, the admin.key file, the failure rate limit behind a trusted
proxy, and --auth none. Every server of these tests runs with --log-level debug, and at the
end of each test its log must contain none of the keys the test saw."""

import hashlib
import http.client
import json
import re
import stat
import subprocess
import threading
import time

import pytest

from support import INFERQ_BIN, UNKNOWN_CLAIM, UNKNOWN_ID, RawConn, Reply, http_request, wait_for

KEY_RE = re.compile(r"^iq_[0-9a-f]{64}$")
PROXY = "127.0.0.1/32"


class AuthServer:
    """A server started for these tests, with the keys seen so far."""

    def __init__(self, server):
        self.server = server
        self.keys = [server.key]
        self.next_address = 0

    @property
    def admin(self):
        return self.server.key

    def fresh_address(self):
        """Return an address no other request of this test used, for X-Forwarded-For."""
        self.next_address += 1
        return f"198.18.{self.next_address // 250}.{self.next_address % 250 + 1}"

    def call(self, method, path, body=None, auth=None, headers=None, key=None):
        """Send one request on a new connection; auth is the Authorization value or None."""
        all_headers = {}
        if key is not None:
            auth = f"Bearer {key}"
        if auth is not None:
            all_headers["Authorization"] = auth
        all_headers.update(headers or {})
        data = None
        if body is not None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            all_headers["Content-Type"] = "application/json"
        conn = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=30)
        try:
            conn.request(method, path, body=data, headers=all_headers)
            resp = conn.getresponse()
            raw = resp.read()
            headers_lower = {name.lower(): value for name, value in resp.getheaders()}
            reply = Reply(resp.status, headers_lower, raw)
        finally:
            conn.close()
        if isinstance(reply.json, dict) and KEY_RE.match(str(reply.json.get("key", ""))):
            self.keys.append(reply.json["key"])
        return reply

    def create_key(self, name, role, models=None, expires_in=None):
        body = {"name": name, "role": role}
        if models is not None:
            body["models"] = models
        if expires_in is not None:
            body["expires_in"] = expires_in
        reply = self.call("POST", "/v1/admin/keys", body, key=self.admin)
        assert reply.status == 200, f"creating key {name} failed: {reply!r}"
        return reply.json["key"]

    def revoke(self, name):
        reply = self.call("DELETE", f"/v1/admin/keys/{name}", key=self.admin)
        assert reply.status == 200, f"revoking key {name} failed: {reply!r}"
        return reply.json


@pytest.fixture
def auth_start(start_server):
    """Return start(**flags) -> AuthServer; checks every server's log for keys at the end."""
    started = []

    def start(**flags):
        flags.setdefault("log_level", "debug")
        server = AuthServer(start_server(**flags))
        started.append(server)
        return server

    yield start

    for auth in started:
        server = auth.server
        if server.running:
            assert server.stop() == 0, server.log_tail()
        time.sleep(0.1)  # let the drain threads take the last lines
        log = "\n".join(server.log)
        for key in auth.keys:
            assert key not in log, f"an API key appears in the server log of {server.data_dir}"
            assert key[3:] not in log, "the hex part of an API key appears in the server log"


@pytest.fixture
def auth(auth_start):
    """A server behind a trusted proxy on 127.0.0.1, so tests can vary the client address."""
    return auth_start(trusted_proxy=PROXY)


# Every route that needs a key, with a body that would be valid.
def routes(job_id=UNKNOWN_ID, model="t/m"):
    job = {"model": model, "request_id": job_id, "claim_id": UNKNOWN_CLAIM}
    return [
        ("POST", "/v1/queue/submit", {"model": model, "payload": {}}),
        ("GET", f"/v1/queue/status?model={model}&request_id={job_id}", None),
        ("POST", "/v1/queue/cancel", {"model": model, "request_id": job_id}),
        ("GET", f"/v1/queue/metrics?model={model}", None),
        ("POST", "/v1/queue/clear", {"model": model}),
        ("POST", "/v1/queue/claim", {"model": model}),
        ("POST", "/v1/queue/heartbeat", job),
        ("POST", "/v1/queue/complete", dict(job, outputs={})),
        ("POST", "/v1/queue/fail", dict(job, error="x")),
        ("POST", "/v1/queue/release", job),
        ("POST", "/v1/admin/keys", {"name": "never", "role": "client", "models": ["*"]}),
        ("GET", "/v1/admin/keys", None),
        ("POST", "/v1/admin/keys/revoke", {"name": "never"}),
        ("DELETE", "/v1/admin/keys/never", None),
    ]


CLIENT_ROUTES = {"/v1/queue/submit", "/v1/queue/status", "/v1/queue/cancel",
                 "/v1/queue/metrics", "/v1/queue/clear"}
WORKER_ROUTES = {"/v1/queue/status", "/v1/queue/claim", "/v1/queue/heartbeat",
                 "/v1/queue/complete", "/v1/queue/fail", "/v1/queue/release"}


def route_path(path):
    path = path.split("?")[0]
    return "/v1/admin/keys/NAME" if path == "/v1/admin/keys/never" else path


def assert_auth_error(reply, status, code, type_, secrets=()):
    assert reply.status == status, f"expected {status} {code}, got {reply!r}"
    body = reply.json
    assert body["type"] == type_, body
    assert body["code"] == code, body
    assert isinstance(body["message"], str) and body["message"], body
    for secret in secrets:
        assert secret not in reply.raw.decode("latin-1"), "the response echoes the key"
        for value in reply.headers.values():
            assert secret not in value, "a response header echoes the key"
    if status == 401:
        assert reply.headers.get("www-authenticate", "").startswith("Bearer"), reply.headers
    return body


def test_routes_reject_missing_and_bad_keys(auth):
    revoked = auth.create_key("revoked", "admin")
    auth.revoke("revoked")
    expiring = auth.create_key("expiring", "admin", expires_in="1s")
    wait_for(lambda: auth.call("GET", "/v1/admin/keys", key=expiring).status == 401, 10,
             "the key with expires_in 1s to expire")
    unknown = "iq_" + "0" * 64

    cases = [
        (None, "missing_api_key", "no Authorization header"),
        ("Bearer", "missing_api_key", "Bearer with no key"),
        ("Basic dXNlcjpwYXNz", "invalid_authorization", "Basic scheme"),
        (f"Token {unknown}", "invalid_authorization", "unknown scheme"),
        (f"Bearer {unknown[:10]} {unknown[10:]}", "invalid_authorization", "key with a space"),
        (f"Bearer {unknown}", "invalid_api_key", "unknown key"),
        (f"Bearer {revoked}", "invalid_api_key", "revoked key"),
        (f"Bearer {expiring}", "invalid_api_key", "expired key"),
        (f"Bearer {auth.admin}x", "invalid_api_key", "admin key with a byte more"),
        (f"Bearer {auth.admin[:-1]}", "invalid_api_key", "admin key with a byte less"),
    ]

    for method, path, body in routes():
        for value, code, what in cases:
            reply = auth.call(method, path, body, auth=value,
                              headers={"X-Forwarded-For": auth.fresh_address()})
            print(f"{method} {path} with {what}")
            assert_auth_error(reply, 401, code, "authentication_error",
                              secrets=[revoked, expiring, auth.admin])
    # Revoked and expired keys name their cause, and nothing of the key.
    reply = auth.call("GET", "/v1/admin/keys", key=revoked)
    assert "revoked" in reply.json["message"], reply
    reply = auth.call("GET", "/v1/admin/keys", key=expiring)
    assert "expired" in reply.json["message"], reply


def test_bearer_scheme_any_case(auth):
    for scheme in ("Bearer", "bearer", "BEARER"):
        reply = auth.call("GET", "/v1/queue/metrics?model=t/m", auth=f"{scheme} {auth.admin}")
        assert reply.status == 200, f"{scheme}: {reply!r}"


def test_two_authorization_headers_rejected(auth):
    conn = auth.server.raw()
    conn.send(b"GET /v1/queue/metrics?model=t/m HTTP/1.1\r\nHost: t\r\n"
              b"Authorization: Bearer " + auth.admin.encode() + b"\r\n"
              b"Authorization: Bearer " + auth.admin.encode() + b"\r\n\r\n")
    response = conn.read_response()
    assert response.status == 401, response
    assert response.json["code"] == "invalid_authorization", response


def test_health_needs_no_key(auth):
    assert auth.call("GET", "/healthz").status == 200
    assert auth.call("GET", "/readyz").status == 200
    assert auth.call("GET", "/healthz", auth="Basic x").status == 200


def test_roles(auth):
    client = auth.create_key("client", "client", ["*"])
    worker = auth.create_key("worker", "worker", ["*"])
    for method, path, body in routes():
        name = route_path(path)
        for key, role, allowed in ((client, "client", CLIENT_ROUTES),
                                   (worker, "worker", WORKER_ROUTES),
                                   (auth.admin, "admin", None)):
            reply = auth.call(method, path, body, key=key)
            if allowed is None or name in allowed:
                assert reply.status not in (401, 403), f"{role} on {method} {name}: {reply!r}"
            else:
                body_ = assert_auth_error(reply, 403, "permission_denied", "permission_error",
                                          secrets=[key])
                assert role in body_["message"], body_
                assert reply.headers.get("x-should-retry") == "false", reply.headers


def test_pattern_covers(auth):
    client = auth.create_key("a-client", "client", ["a/*", "exact/model"])
    worker = auth.create_key("a-worker", "worker", ["a/*"])
    for model in ("a/m", "a/deep/model", "exact/model"):
        reply = auth.call("POST", "/v1/queue/submit", {"model": model, "payload": {}}, key=client)
        assert reply.status == 200, f"{model}: {reply!r}"
        job_id = reply.json["request_id"]
        status = auth.call("GET", f"/v1/queue/status?model={model}&request_id={job_id}",
                           key=client)
        assert status.status == 200, status
    claimed = auth.call("POST", "/v1/queue/claim", {"model": "a/m"}, key=worker)
    assert claimed.status == 200, claimed
    job = {"model": "a/m", "request_id": claimed.json["request_id"],
           "claim_id": claimed.json["claim_id"]}
    assert auth.call("POST", "/v1/queue/heartbeat", job, key=worker).status == 200
    assert auth.call("POST", "/v1/queue/complete", dict(job, outputs={}), key=worker).status == 200
    for model in ("exact/model2", "a", "a/", "b/m", "exact"):
        reply = auth.call("POST", "/v1/queue/submit", {"model": model, "payload": {}}, key=client)
        assert reply.status == 404, f"{model}: {reply!r}"


def test_uncovered_model_looks_like_unknown_job(auth_start):
    """A job of another tenant gets the same response as a job that never existed."""
    auth = auth_start(trusted_proxy=PROXY, retention="1s")
    a_client = auth.create_key("a-client", "client", ["a/*"])
    a_worker = auth.create_key("a-worker", "worker", ["a/*"])
    b_client = auth.create_key("b-client", "client", ["b/*"])
    reply = auth.call("POST", "/v1/queue/submit", {"model": "b/m", "payload": {}}, key=b_client)
    job_id = reply.json["request_id"]
    assert auth.call("POST", "/v1/queue/cancel", {"model": "b/m", "request_id": job_id},
                     key=b_client).status == 200

    # What tenant A gets for B's existing job, on every job route.
    job_routes = [(method, path, body) for method, path, body in routes(job_id, "b/m")
                  if route_path(path) in {"/v1/queue/status", "/v1/queue/cancel",
                                          "/v1/queue/heartbeat", "/v1/queue/complete",
                                          "/v1/queue/fail", "/v1/queue/release"}]
    hidden = {}
    for method, path, body in job_routes:
        key = a_client if route_path(path) in CLIENT_ROUTES else a_worker
        reply = auth.call(method, path, body, key=key)
        assert reply.status == 404, f"{path}: {reply!r}"
        assert reply.json["type"] == "not_found_error", reply
        hidden[path] = reply.raw

    # Once retention deleted the job, the admin gets the response for a job that does not exist.
    status_path = job_routes[0][1]
    wait_for(lambda: auth.call("GET", status_path, key=auth.admin).status == 404, 15,
             "the canceled job to be deleted after --retention 1s")
    for method, path, body in job_routes:
        reply = auth.call(method, path, body, key=auth.admin)
        assert reply.status == 404, f"{path}: {reply!r}"
        assert reply.raw == hidden[path], f"{path}: {reply.raw!r} != {hidden[path]!r}"


def test_uncovered_queue_routes_do_not_reveal_models(auth):
    a_client = auth.create_key("a-client", "client", ["a/*"])
    a_worker = auth.create_key("a-worker", "worker", ["a/*"])
    for _ in range(3):
        assert auth.call("POST", "/v1/queue/submit", {"model": "b/used", "payload": {}},
                         key=auth.admin).status == 200
    queue_routes = [
        ("POST", "/v1/queue/submit", lambda m: {"model": m, "payload": {}}, a_client),
        ("GET", "/v1/queue/metrics?model={}", None, a_client),
        ("POST", "/v1/queue/clear", lambda m: {"model": m}, a_client),
        ("POST", "/v1/queue/claim", lambda m: {"model": m}, a_worker),
    ]
    for method, path, body, key in queue_routes:
        replies = {}
        for model in ("b/used", "b/never"):
            reply = auth.call(method, path.format(model), body(model) if body else None, key=key)
            assert reply.status == 404, f"{path} {model}: {reply!r}"
            assert reply.json["type"] == "not_found_error", reply
            replies[model] = reply.raw.replace(model.encode(), b"MODEL")
        assert replies["b/used"] == replies["b/never"], replies
    # Nothing of b/used changed.
    metrics = auth.call("GET", "/v1/queue/metrics?model=b/used", key=auth.admin).json
    assert metrics["messages_waiting"] == 3, metrics


def test_two_tenants_isolated(auth):
    keys = {}
    for tenant in ("a", "b"):
        keys[tenant] = (auth.create_key(f"{tenant}-client", "client", [f"{tenant}/*"]),
                        auth.create_key(f"{tenant}-worker", "worker", [f"{tenant}/*"]))
    jobs = {}
    for tenant in ("a", "b"):
        reply = auth.call("POST", "/v1/queue/submit", {"model": f"{tenant}/m", "payload": {}},
                          key=keys[tenant][0])
        jobs[tenant] = reply.json["request_id"]

    for me, other in (("a", "b"), ("b", "a")):
        client, worker = keys[me]
        model, job_id = f"{other}/m", jobs[other]
        attempts = [
            ("GET", f"/v1/queue/status?model={model}&request_id={job_id}", None, client),
            ("GET", f"/v1/queue/status?model={model}&request_id={job_id}", None, worker),
            ("POST", "/v1/queue/cancel", {"model": model, "request_id": job_id}, client),
            ("POST", "/v1/queue/clear", {"model": model}, client),
            ("GET", f"/v1/queue/metrics?model={model}", None, client),
            ("POST", "/v1/queue/claim", {"model": model}, worker),
            ("POST", "/v1/queue/claim", {"model": model, "wait": 0.2}, worker),
        ]
        for method, path, body, key in attempts:
            reply = auth.call(method, path, body, key=key)
            assert reply.status == 404, f"{me} on {other}'s {path}: {reply!r}"
        # Asking under one's own model does not find the other's job either.
        reply = auth.call("GET", f"/v1/queue/status?model={me}/m&request_id={job_id}",
                          key=client)
        assert reply.status == 404, reply

    # Both jobs are untouched, and each tenant's own worker gets its own job.
    for tenant in ("a", "b"):
        client, worker = keys[tenant]
        status = auth.call("GET", f"/v1/queue/status?model={tenant}/m&request_id={jobs[tenant]}",
                           key=client)
        assert status.json["status"] == "pending", status
        metrics = auth.call("GET", f"/v1/queue/metrics?model={tenant}/m", key=client).json
        assert metrics["messages_waiting"] == 1, metrics
        claimed = auth.call("POST", "/v1/queue/claim", {"model": f"{tenant}/m"}, key=worker)
        assert claimed.status == 200, claimed
        assert claimed.json["request_id"] == jobs[tenant], claimed


def test_admin_key_file(start_server, tmp_path):
    data = tmp_path / "data"
    server = start_server(data_dir=data)
    key_file = data / "admin.key"
    mode = stat.S_IMODE(key_file.stat().st_mode)
    assert mode == 0o600, oct(mode)
    text = key_file.read_text()
    assert text.endswith("\n"), "admin.key does not end with a newline"
    assert KEY_RE.match(text.strip()), "admin.key is not one iq_ key line"
    key = text.strip()
    assert any(str(key_file) in line for line in server.log), server.log_tail()
    assert key not in "\n".join(server.log)

    # A restart keeps the key; without the file the server does not create another one.
    assert server.stop() == 0
    key_file.unlink()
    server.restart()
    assert not key_file.exists(), "the server created a second admin key"
    api_reply = AuthServer(server).call("GET", "/v1/admin/keys", key=key)
    assert api_reply.status == 200, api_reply
    assert [k["name"] for k in api_reply.json["data"]] == ["admin"]
    assert key not in "\n".join(server.log)


def test_stale_admin_key_file_refused(tmp_path):
    """An admin.key without keys in the store is not this data dir's key: refuse to start."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "admin.key").write_text("iq_" + "1" * 64 + "\n")
    proc = subprocess.run([str(INFERQ_BIN), "serve", "--listen", "127.0.0.1:0", "--data-dir",
                           str(data)], capture_output=True, text=True, timeout=30)
    assert proc.returncode != 0
    assert "admin.key exists" in proc.stderr, proc.stderr
    assert "1" * 64 not in proc.stderr


def test_key_admin_routes(auth):
    a = auth
    reply = a.call("POST", "/v1/admin/keys",
                   {"name": "web", "role": "client", "models": ["org/*", "x/y"],
                    "expires_in": "30d"}, key=a.admin)
    assert reply.status == 200, reply
    created = reply.json
    assert KEY_RE.match(created["key"]), created
    assert created["name"] == "web", created
    assert created["role"] == "client", created
    assert created["models"] == ["org/*", "x/y"]
    assert created["key_prefix"] == hashlib.sha256(created["key"].encode()).hexdigest()[:8]
    expires = time.mktime(time.strptime(created["expires_at"], "%Y-%m-%dT%H:%M:%SZ"))
    made = time.mktime(time.strptime(created["created_at"], "%Y-%m-%dT%H:%M:%SZ"))
    assert abs(expires - made - 30 * 86400) <= 1, created

    # The list shows every key without its text; the key is shown only once.
    assert a.call("GET", "/v1/queue/metrics?model=org/m", key=created["key"]).status == 200
    listed = a.call("GET", "/v1/admin/keys", key=a.admin)
    assert listed.status == 200, listed
    assert created["key"] not in listed.raw.decode()
    by_name = {k["name"]: k for k in listed.json["data"]}
    assert set(by_name) == {"admin", "web"}
    assert "key" not in by_name["web"]
    assert by_name["web"]["key_prefix"] == created["key_prefix"]
    assert "last_used_at" in by_name["web"], by_name["web"]
    assert "revoked_at" not in by_name["web"]
    assert by_name["admin"]["models"] == ["*"]

    # Revoke by POST; revoking again changes nothing; the key stops working at once.
    revoked = a.call("POST", "/v1/admin/keys/revoke", {"name": "web"}, key=a.admin)
    assert revoked.status == 200, revoked
    assert "revoked_at" in revoked.json, revoked
    again = a.call("DELETE", "/v1/admin/keys/web", key=a.admin)
    assert again.status == 200, again
    assert again.json["revoked_at"] == revoked.json["revoked_at"], again
    assert a.call("GET", "/v1/queue/metrics?model=org/m", key=created["key"]).status == 401

    # A revoked key's name stays taken; the last working admin key cannot be revoked.
    dup = a.call("POST", "/v1/admin/keys", {"name": "web", "role": "client", "models": ["*"]},
                 key=a.admin)
    assert dup.status == 409, dup
    assert dup.json["param"] == "name", dup
    last = a.call("DELETE", "/v1/admin/keys/admin", key=a.admin)
    assert last.status == 409, last
    assert last.json["code"] == "last_admin_key", last
    unknown = a.call("DELETE", "/v1/admin/keys/nobody", key=a.admin)
    assert unknown.status == 404, unknown
    assert unknown.json["param"] == "name", unknown
    second = a.create_key("admin2", "admin")
    assert a.call("DELETE", "/v1/admin/keys/admin", key=second).status == 200
    assert a.call("GET", "/v1/admin/keys", key=a.admin).status == 401


def test_keys_checked_per_request_on_one_connection(auth):
    """The server hashes a connection's key once; a changed or revoked key still fails."""
    key = auth.create_key("conn", "client", ["*"])
    auth.keys.append(key)
    wrong = key[:-1] + ("0" if key[-1] != "0" else "1")
    conn = RawConn(auth.server.port)
    try:
        def metrics(with_key):
            conn.send(http_request("GET", "/v1/queue/metrics?model=t/m", key=with_key))
            return conn.read_response()

        assert metrics(key).status == 200
        assert metrics(wrong).status == 401
        assert metrics(key).status == 200
        assert metrics(key).status == 200
        auth.revoke("conn")
        assert metrics(key).status == 401
        assert metrics(auth.admin).status == 200
    finally:
        conn.close()


def test_revocation_survives_restart(auth):
    key = auth.create_key("gone", "client", ["*"])
    kept = auth.create_key("kept", "client", ["*"])
    assert auth.call("GET", "/v1/queue/metrics?model=x/y", key=kept).status == 200
    auth.revoke("gone")
    auth.server.stop()
    auth.server.restart()
    assert auth.call("GET", "/v1/queue/metrics?model=x/y", key=key).status == 401
    assert auth.call("GET", "/v1/queue/metrics?model=x/y", key=kept).status == 200
    listed = {k["name"]: k for k in auth.call("GET", "/v1/admin/keys", key=auth.admin).json["data"]}
    assert "revoked_at" in listed["gone"], listed
    assert "revoked_at" not in listed["kept"], listed
    # The use of "kept" before the stop was written at the stop.
    assert "last_used_at" not in listed["gone"]
    assert "last_used_at" in listed["kept"]


@pytest.mark.parametrize("body, param", [
    ({"role": "client", "models": ["*"]}, "name"),
    ({"name": "", "role": "client", "models": ["*"]}, "name"),
    ({"name": "has space", "role": "client", "models": ["*"]}, "name"),
    ({"name": "x" * 65, "role": "client", "models": ["*"]}, "name"),
    ({"name": "k", "models": ["*"]}, "role"),
    ({"name": "k", "role": "root", "models": ["*"]}, "role"),
    ({"name": "k", "role": "client"}, "models"),
    ({"name": "k", "role": "worker", "models": []}, "models"),
    ({"name": "k", "role": "client", "models": "a/*"}, "models"),
    ({"name": "k", "role": "client", "models": ["a*"]}, "models"),
    ({"name": "k", "role": "client", "models": ["a/*", 5]}, "models"),
    ({"name": "k", "role": "admin", "models": ["a/*"]}, "models"),
    ({"name": "k", "role": "client", "models": ["*"], "expires_in": "soon"}, "expires_in"),
    ({"name": "k", "role": "client", "models": ["*"], "expires_in": 30}, "expires_in"),
    ({"name": "k", "role": "client", "models": ["*"], "expires_in": "0s"}, "expires_in"),
])
def test_create_key_validation(auth, body, param):
    reply = auth.call("POST", "/v1/admin/keys", body, key=auth.admin)
    assert reply.status == 400, reply
    assert reply.json["param"] == param, reply
    assert param in reply.json["message"], reply
    listed = auth.call("GET", "/v1/admin/keys", key=auth.admin).json["data"]
    assert [k["name"] for k in listed] == ["admin"]


def test_waiting_claim_of_revoked_key(auth):
    worker = auth.create_key("w", "worker", ["*"])
    result = {}

    def park():
        result["reply"] = auth.call("POST", "/v1/queue/claim", {"model": "t/m", "wait": 10},
                                    key=worker)

    thread = threading.Thread(target=park, daemon=True)
    thread.start()
    wait_for(lambda: any("claim waits" in line for line in auth.server.log), 10,
             "the claim to wait for a job (debug log line)")
    auth.revoke("w")
    job = auth.call("POST", "/v1/queue/submit", {"model": "t/m", "payload": {}}, key=auth.admin)
    thread.join(15)
    assert not thread.is_alive()
    assert result["reply"].status == 401, result["reply"]
    assert "while the request waited" in result["reply"].json["message"], result["reply"]
    status = auth.call("GET", f"/v1/queue/status?model=t/m&request_id={job.json['request_id']}",
                       key=auth.admin)
    assert status.json["status"] == "pending", status


def bad_key_from(auth, address):
    return auth.call("GET", "/v1/queue/metrics?model=t/m", key="iq_" + "f" * 64,
                     headers={"X-Forwarded-For": address})


def test_rate_limit_per_forwarded_address(auth):
    abused, other = "203.0.113.5", "203.0.113.6"
    statuses = [bad_key_from(auth, abused).status for _ in range(25)]
    assert statuses[:20] == [401] * 20, statuses
    assert 429 in statuses, statuses
    blocked = bad_key_from(auth, abused)
    body = assert_auth_error(blocked, 429, "too_many_auth_failures", "rate_limit_error")
    assert abused in body["message"]
    assert 1 <= int(blocked.headers["retry-after"]) <= 60, blocked.headers
    assert blocked.headers.get("x-should-retry") == "false", blocked.headers

    # Another address is unaffected, with a bad key or a good one.
    assert bad_key_from(auth, other).status == 401
    ok = auth.call("GET", "/v1/queue/metrics?model=t/m", key=auth.admin,
                   headers={"X-Forwarded-For": other})
    assert ok.status == 200, ok
    # A valid key passes even from the blocked address: the limit answers failures only.
    ok = auth.call("GET", "/v1/queue/metrics?model=t/m", key=auth.admin,
                   headers={"X-Forwarded-For": abused})
    assert ok.status == 200, ok
    # The last hop counts: a client cannot pick its address by sending its own header.
    chained = auth.call("GET", "/v1/queue/metrics?model=t/m", key="iq_" + "f" * 64,
                        headers={"X-Forwarded-For": f"198.51.100.77, {abused}"})
    assert chained.status == 429, chained
    assert any("failed authentications from 203.0.113.5" in line for line in auth.server.log)


def test_rate_limit_ignores_forwarded_for_untrusted_peer(auth_start):
    auth = auth_start()
    statuses = [bad_key_from(auth, auth.fresh_address()).status for _ in range(25)]
    assert statuses[-1] == 429, statuses
    ok = auth.call("GET", "/v1/queue/metrics?model=t/m", key=auth.admin)
    assert ok.status == 200, ok


def test_auth_none_on_loopback(auth_start):
    auth = auth_start(auth="none")
    reply = auth.call("POST", "/v1/queue/submit", {"model": "t/m", "payload": {}})
    assert reply.status == 200, reply
    assert any("--auth none" in line for line in auth.server.log), auth.server.log_tail()


@pytest.mark.parametrize("listen", ["0.0.0.0:0", "[::]:0", "192.0.2.1:0"])
def test_auth_none_refused_off_loopback(tmp_path, listen):
    # The server must exit during flag parsing, before it binds or sends anything.
    proc = subprocess.run([str(INFERQ_BIN), "serve", "--auth", "none", "--listen", listen,
                           "--data-dir", str(tmp_path / "data")],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode != 0
    assert "--auth none" in proc.stderr, proc.stderr
    assert "loopback" in proc.stderr, proc.stderr
    assert listen in proc.stderr
    assert not (tmp_path / "data").exists(), "the server got past flag parsing"


@pytest.mark.parametrize("flag, value", [("auth", "maybe"), ("trusted-proxy", "10.0.0.1/8"),
                                         ("trusted-proxy", "example.com")])
def test_bad_auth_flags(tmp_path, flag, value):
    proc = subprocess.run([str(INFERQ_BIN), "serve", f"--{flag}", value, "--listen", "127.0.0.1:0",
                           "--data-dir", str(tmp_path / "data")],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2, proc
    assert f"--{flag}" in proc.stderr, proc.stderr
    assert value in proc.stderr, proc.stderr


def test_cli_keys_commands(auth_start, tmp_path):
    from cli_support import describe, run_cli, server_url

    auth = auth_start(data_dir=tmp_path / "inferq-data")
    url = server_url(auth.server)

    def cli(*args):
        return run_cli(args, tmp_path, url=url)

    proc = cli("keys", "create", "--name", "web", "--role", "client", "--models", "a/*,b/m",
               "--models", "c/*", "--expires", "30d")
    assert proc.returncode == 0, describe(proc)
    lines = dict(line.split(None, 1) for line in proc.stdout.splitlines())
    key = lines["key"]
    auth.keys.append(key)
    assert KEY_RE.match(key), proc.stdout
    assert lines["models"] == '["a/*","b/m","c/*"]', proc.stdout
    assert "expires_at" in lines
    assert auth.call("GET", "/v1/queue/metrics?model=c/x", key=key).status == 200

    proc = cli("keys", "list")
    assert proc.returncode == 0, describe(proc)
    assert key not in proc.stdout
    rows = [line.split()[0] for line in proc.stdout.splitlines()[1:]]
    assert rows == ["admin", "web"], proc.stdout

    assert cli("keys", "create", "--name", "web", "--role", "client", "--models",
               "*").returncode == 5
    assert cli("keys", "create", "--name", "x", "--role", "client").returncode == 2
    assert cli("keys", "create", "--name", "x", "--role", "client", "--models",
               "a*").returncode == 2
    # A bare number has no unit: 90 would be 90 seconds, rarely what was meant.
    proc = cli("keys", "create", "--name", "x", "--role", "client", "--models", "a/*",
               "--expires", "90")
    assert proc.returncode == 2, describe(proc)
    assert "--expires 90 has no unit" in proc.stderr
    assert "90d" in proc.stderr
    proc = cli("keys", "revoke", "web")
    assert proc.returncode == 0, describe(proc)
    assert proc.stdout == "revoked web\n", describe(proc)
    assert auth.call("GET", "/v1/queue/metrics?model=c/x", key=key).status == 401
    unknown = cli("keys", "revoke", "nobody")
    assert unknown.returncode == 4
    assert 'no API key named "nobody"' in unknown.stderr
    assert "inferq keys list" in unknown.stderr
    assert cli("keys", "revoke", "admin").returncode == 5

    # Without the admin key the commands fail with the server's message.
    proc = run_cli(["keys", "list"], tmp_path / "inferq-data", url=url)
    assert proc.returncode == 1, describe(proc)
    assert "API key" in proc.stderr, describe(proc)
