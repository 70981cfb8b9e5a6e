"""Retention: finished jobs are deleted after --retention, unfinished jobs never are."""

from support import assert_error, wait_for

MODEL = "test/retention"


def test_retention_purges_finished(start_server):
    server = start_server(retention="2s")
    api = server.api()
    pending_id = api.submit_ok(MODEL, {"keep": "pending"})
    running_id = api.submit_ok(MODEL, {"keep": "running"}, priority=10)
    done_id = api.submit_ok(MODEL, {"drop": "done"}, priority=9)
    failed_id = api.submit_ok(MODEL, {"drop": "failed"}, priority=8)
    canceled_id = api.submit_ok(MODEL, {"drop": "canceled"}, priority=-1)

    assert api.claim_ok(MODEL, claim_timeout=600)["request_id"] == running_id
    job = api.claim_ok(MODEL)
    assert job["request_id"] == done_id
    assert api.worker_call("complete", MODEL, done_id, job["claim_id"], outputs={}).status == 200
    job = api.claim_ok(MODEL)
    assert job["request_id"] == failed_id
    assert api.worker_call("fail", MODEL, failed_id, job["claim_id"], error="x").status == 200
    reply = api.post("/v1/queue/cancel", {"model": MODEL, "request_id": canceled_id})
    assert reply.status == 200, reply

    assert api.status_ok(done_id, MODEL)["status"] == "done"
    for request_id in (done_id, failed_id, canceled_id):
        wait_for(lambda: api.status(request_id, MODEL).status == 404, 15,
                 f"job {request_id} to be deleted after the 2 s retention")
        assert_error(api.status(request_id, MODEL), 404, "not_found")

    assert api.status_ok(pending_id, MODEL)["status"] == "pending"
    assert api.status_ok(running_id, MODEL)["status"] == "running"
    assert api.metrics_ok(MODEL) == {"messages_waiting": 1, "messages_running": 1,
                                     "total_jobs": 2}


def test_retention_purge_survives_restart(start_server):
    server = start_server(retention="2s")
    api = server.api()
    request_id = api.submit_ok(MODEL, {})
    job = api.claim_ok(MODEL)
    assert api.worker_call("complete", MODEL, request_id, job["claim_id"], outputs={}).status == 200
    wait_for(lambda: api.status(request_id, MODEL).status == 404, 15,
             "the done job to be deleted")
    assert server.stop() == 0
    server.restart()
    assert_error(server.api().status(request_id, MODEL), 404, "not_found")


def test_retention_after_restart(start_server):
    server = start_server(retention="2s")
    api = server.api()
    request_id = api.submit_ok(MODEL, {})
    job = api.claim_ok(MODEL)
    assert api.worker_call("complete", MODEL, request_id, job["claim_id"], outputs={}).status == 200
    assert server.stop() == 0
    server.restart()
    api = server.api()
    wait_for(lambda: api.status(request_id, MODEL).status == 404, 15,
             "a job finished before the restart to be deleted")
