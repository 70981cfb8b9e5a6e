"""Output files and batch routes across inferq nodes over one PostgreSQL database.

Every test gets a fresh database in the session's throwaway cluster (pg_cluster.py) and starts
two real nodes on it. The nodes share one --storage-dir, as operators share it over NFS.
"""

import http.client
import os
import threading
import urllib.parse

from support import Reply, wait_for

MODEL = "cluster/files"
RETRIEVE = "/internal/v1/queue/retrieve"
STATUS = "/internal/v1/videos/status"


def two_nodes(start_server, pg_cluster, tmp_path, **flags):
    uri = pg_cluster.new_database()
    shared = tmp_path / "shared-storage"
    return [start_server(store=uri, storage_dir=shared, **flags) for _ in range(2)], uri, shared


def database_name(uri):
    return uri.split("///", 1)[1].split("?", 1)[0]


def running_job(api):
    """Submit a job and take it with a Sprocket retrieve; return its request id."""
    request_id = api.submit_ok(MODEL, {"prompt": "a cat"})
    query = urllib.parse.urlencode({"model": MODEL, "timeout": "0s", "hostname": "gpu-1"})
    reply = api.get(f"{RETRIEVE}?{query}")
    assert reply.status == 200, reply
    assert reply.json["data"]["request_id"] == request_id, reply
    return request_id


def target(url):
    """Return the path and query of url, to send them to any node."""
    parts = urllib.parse.urlsplit(url)
    return parts.path + ("?" + parts.query if parts.query else "")


def put(server, path, data):
    """PUT data to path on server with no Authorization header, as Sprocket does."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        conn.request("PUT", path, body=data)
        resp = conn.getresponse()
        raw = resp.read()
        headers = {name.lower(): value for name, value in resp.getheaders()}
    finally:
        conn.close()
    return Reply(resp.status, headers, raw)


def upload_urls(api, filename):
    reply = api.post("/v1/storage/upload-request", {"filename": filename})
    assert reply.status == 200, reply
    return reply.json


def test_upload_url_of_one_node_works_on_another(start_server, pg_cluster, tmp_path):
    (a, b), _, shared = two_nodes(start_server, pg_cluster, tmp_path)
    api_a, api_b = a.api(), b.api()
    request_id = running_job(api_a)

    # Node A signs the URL; node B checks the signature and stores the bytes.
    urls = upload_urls(api_a, f"{request_id}-clip.mp4")
    data = os.urandom(200_000)
    reply = put(b, target(urls["upload_url"]["url"]), data)
    assert reply.status == 200, reply
    assert reply.json["size"] == len(data), reply

    # Either node serves it, whole or in part.
    path = target(urls["path"])
    for api in (api_a, api_b):
        reply = api.get(path)
        assert reply.status == 200, reply
        assert reply.raw == data
    reply = api_b.get(path, headers={"Range": "bytes=10-19"})
    assert reply.status == 206, reply
    assert reply.raw == data[10:20]
    assert sorted(os.listdir(shared)) == [f"{request_id}-clip.mp4"]

    # A URL signed by B goes to A just as well, and a tampered one goes nowhere.
    urls = upload_urls(api_b, f"{request_id}-frame.png")
    bad = target(urls["upload_url"]["url"]).replace("signature=", "signature=0")
    reply = put(a, bad, b"x")
    assert reply.status == 403, reply
    assert reply.json["code"] == "invalid_signature", reply
    reply = put(a, target(urls["upload_url"]["url"]), b"frame")
    assert reply.status == 200, reply
    assert api_b.get(target(urls["path"])).raw == b"frame"


def test_finished_job_rejects_uploads_everywhere(start_server, pg_cluster, tmp_path):
    (a, b), _, _ = two_nodes(start_server, pg_cluster, tmp_path)
    api_a, api_b = a.api(), b.api()
    request_id = running_job(api_a)
    urls = upload_urls(api_a, f"{request_id}-late.png")
    reply = api_b.post(STATUS, {"model": MODEL, "request_id": request_id, "status": "done",
                                "payload": {}})
    assert reply.status == 200, reply

    reply = put(b, target(urls["upload_url"]["url"]), b"too late")
    assert reply.status == 409, reply
    assert reply.json["code"] == "invalid_state", reply
    reply = api_a.post("/v1/storage/upload-request", {"filename": f"{request_id}-more.png"})
    assert reply.status == 409, reply
    assert api_b.get(target(urls["path"])).status == 404


def test_retention_deletes_files_stored_through_any_node(start_server, pg_cluster, tmp_path):
    (a, b), uri, shared = two_nodes(start_server, pg_cluster, tmp_path, retention="1s")
    api_a, api_b = a.api(), b.api()
    done = running_job(api_a)
    running = running_job(api_b)
    for node, api, name in ((a, api_a, f"{done}-a.png"), (b, api_b, f"{done}-b.png"),
                            (a, api_b, f"{running}-c.png")):
        reply = put(node, target(upload_urls(api, name)["upload_url"]["url"]), b"bytes")
        assert reply.status == 200, reply
    reply = api_b.post(STATUS, {"model": MODEL, "request_id": done, "status": "done",
                                "payload": {}})
    assert reply.status == 200, reply

    wait_for(lambda: sorted(os.listdir(shared)) == [f"{running}-c.png"], 15,
             "the done job's files to be deleted with it")
    rows = pg_cluster.psql("SELECT name, job_id IS NOT NULL FROM inferq_files ORDER BY name",
                           database_name(uri))
    assert rows == [[f"{running}-c.png", "t"]]
    assert api_a.get(f"/v1/storage/{done}-a.png").status == 404
    assert api_a.get(f"/v1/storage/{running}-c.png").raw == b"bytes"


def test_batch_claims_across_nodes_never_share_a_job(start_server, pg_cluster, tmp_path):
    (a, b), _, _ = two_nodes(start_server, pg_cluster, tmp_path)
    jobs = 300
    ids = []
    for start in range(0, jobs, 100):
        reply = a.api().post("/v1/queue/submit_batch", {"jobs": [
            {"model": MODEL, "payload": {"i": i}} for i in range(start, start + 100)]})
        assert reply.status == 200, reply
        ids += [item["request_id"] for item in reply.json["data"]]

    claimed = []  # (request_id, claim_id, node)
    lock = threading.Lock()
    errors = []

    def claimer(server):
        api = server.api()
        for _ in range(jobs):  # bounded: never more attempts than jobs
            reply = api.post("/v1/queue/claim", {"model": MODEL, "max_jobs": 7,
                                                 "claim_timeout": 600})
            if reply.status == 204:
                return
            if reply.status != 200:
                errors.append(repr(reply))
                return
            with lock:
                claimed.extend((job["request_id"], job["claim_id"], server.port)
                               for job in reply.json["data"])

    threads = [threading.Thread(target=claimer, args=(node,)) for node in (a, b, a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    taken = [request_id for request_id, _, _ in claimed]
    assert len(taken) == len(set(taken)), "a job was handed out twice"
    assert sorted(taken) == sorted(ids)
    assert len({claim_id for _, claim_id, _ in claimed}) == jobs
    assert {port for _, _, port in claimed} == {a.port, b.port}

    # Each node completes jobs claimed through the other; a second try is refused.
    mine = {a.port: b, b.port: a}
    for port in (a.port, b.port):
        batch = [{"model": MODEL, "request_id": request_id, "claim_id": claim_id,
                  "outputs": {"by": "other node"}}
                 for request_id, claim_id, claimed_on in claimed if claimed_on == port]
        for start in range(0, len(batch), 100):
            reply = mine[port].api().post("/v1/queue/complete_batch",
                                          {"jobs": batch[start:start + 100]})
            assert reply.status == 200, reply
            assert {item.get("status") for item in reply.json["data"]} == {"done"}, reply
        reply = mine[port].api().post("/v1/queue/complete_batch", {"jobs": batch[:1]})
        assert reply.json["data"][0]["error"]["code"] == "invalid_state", reply
    assert a.api().metrics_ok(MODEL) == {"messages_waiting": 0, "messages_running": 0,
                                         "total_jobs": 0}
