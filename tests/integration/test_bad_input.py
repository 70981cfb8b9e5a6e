"""Bad requests: each gets the right status, code, type and param, a message that names the
field, and changes nothing."""

import pytest

from support import assert_error, compact, raw_member

MODEL = "test/bad"
ZERO = {"messages_waiting": 0, "messages_running": 0, "total_jobs": 0}


def assert_nothing_queued(api, model=MODEL):
    assert api.metrics_ok(model) == ZERO
    assert api.claim(model).status == 204


def body_with(payload_text):
    return b'{"model": "test/bad", "payload": ' + payload_text + b"}"


# (case id, raw body, code, param)
SUBMIT_CASES = [
    ("truncated", b'{"model": "test/bad"', "invalid_json", None),
    ("empty_body", b"", "invalid_json", None),
    ("trailing_bytes", b'{"model": "test/bad", "payload": {}} x', "invalid_json", None),
    ("two_values", b'{"model": "test/bad", "payload": {}}{}', "invalid_json", None),
    ("single_quotes", b"{'model': 'test/bad', 'payload': {}}", "invalid_json", None),
    ("trailing_comma", b'{"model": "test/bad", "payload": {},}', "invalid_json", None),
    ("bad_escape", body_with(b'{"s": "\\x"}'), "invalid_json", None),
    ("nan", body_with(b'{"n": NaN}'), "invalid_json", None),
    ("leading_zero", body_with(b'{"n": 012}'), "invalid_json", None),
    ("number_dot_end", body_with(b'{"n": 1.}'), "invalid_json", None),
    ("number_dot_start", body_with(b'{"n": .5}'), "invalid_json", None),
    ("number_plus", body_with(b'{"n": +1}'), "invalid_json", None),
    ("number_bare_minus", body_with(b'{"n": -}'), "invalid_json", None),
    ("number_empty_exponent", body_with(b'{"n": 1e+}'), "invalid_json", None),
    ("number_hex", body_with(b'{"n": 0x10}'), "invalid_json", None),
    ("short_unicode_escape", body_with(b'{"s": "\\u12"}'), "invalid_json", None),
    ("byte_order_mark", b'\xef\xbb\xbf{"model": "test/bad", "payload": {}}', "invalid_json", None),
    ("trailing_nul", b'{"model": "test/bad", "payload": {}}\x00', "invalid_json", None),
    ("raw_nul", body_with(b'{"s": "a\x00b"}'), "invalid_json", None),
    ("raw_control", body_with(b'{"s": "a\x1fb"}'), "invalid_json", None),
    ("raw_newline", body_with(b'{"s": "a\nb"}'), "invalid_json", None),
    ("utf8_ff", body_with(b'{"s": "a\xffb"}'), "invalid_json", None),
    ("utf8_overlong", body_with(b'{"s": "\xc0\xaf"}'), "invalid_json", None),
    ("utf8_overlong_3", body_with(b'{"s": "\xe0\x80\xaf"}'), "invalid_json", None),
    ("utf8_surrogate", body_with(b'{"s": "\xed\xa0\x80"}'), "invalid_json", None),
    ("utf8_above_max", body_with(b'{"s": "\xf4\x90\x80\x80"}'), "invalid_json", None),
    ("utf8_truncated", body_with(b'{"s": "\xe2\x82"}'), "invalid_json", None),
    ("utf8_in_key", body_with(b'{"\xff": 1}'), "invalid_json", None),
    ("array", b"[1, 2]", "invalid_body", None),
    ("string", b'"text"', "invalid_body", None),
    ("number", b"42", "invalid_body", None),
    ("null", b"null", "invalid_body", None),
    ("payload_missing", b'{"model": "test/bad"}', "missing_field", "payload"),
    ("payload_array", body_with(b"[1]"), "invalid_field", "payload"),
    ("payload_string", body_with(b'"text"'), "invalid_field", "payload"),
    ("payload_number", body_with(b"1"), "invalid_field", "payload"),
    ("model_missing", b'{"payload": {}}', "missing_field", "model"),
    ("model_empty", b'{"model": "", "payload": {}}', "invalid_field", "model"),
    ("model_129", b'{"model": "' + b"m" * 129 + b'", "payload": {}}', "invalid_field", "model"),
    ("model_space", b'{"model": "test bad", "payload": {}}', "invalid_field", "model"),
    ("model_unicode", '{"model": "mod\u00e8le", "payload": {}}'.encode(), "invalid_field",
     "model"),
    ("model_nul_escape", b'{"model": "test\\u0000bad", "payload": {}}', "invalid_field",
     "model"),
    ("model_number", b'{"model": 5, "payload": {}}', "invalid_field", "model"),
    ("model_question", b'{"model": "a?b", "payload": {}}', "invalid_field", "model"),
    ("priority_string", body_with(b'{}, "priority": "5"'), "invalid_field", "priority"),
    ("priority_fraction", body_with(b'{}, "priority": 1.5'), "invalid_field", "priority"),
    ("priority_float_int", body_with(b'{}, "priority": 1.0'), "invalid_field", "priority"),
    ("priority_exponent", body_with(b'{}, "priority": 1e2'), "invalid_field", "priority"),
    ("priority_above_int32", body_with(b'{}, "priority": 2147483648'), "invalid_field",
     "priority"),
    ("priority_below_int32", body_with(b'{}, "priority": -2147483649'), "invalid_field",
     "priority"),
    ("priority_huge", body_with(b'{}, "priority": 99999999999999999999999'), "invalid_field",
     "priority"),
    ("priority_bool", body_with(b'{}, "priority": true'), "invalid_field", "priority"),
    ("info_array", body_with(b'{}, "info": [1]'), "invalid_field", "info"),
    ("info_string", body_with(b'{}, "info": "x"'), "invalid_field", "info"),
    ("info_number", body_with(b'{}, "info": 3'), "invalid_field", "info"),
    ("duplicate_model", b'{"model": "test/bad", "model": "test/bad", "payload": {}}',
     "duplicate_field", "model"),
    ("duplicate_payload", body_with(b'{}, "payload": {}'), "duplicate_field", "payload"),
    ("duplicate_priority", body_with(b'{}, "priority": 1, "priority": 2'), "duplicate_field",
     "priority"),
]


@pytest.mark.parametrize("body,code,param", [case[1:] for case in SUBMIT_CASES],
                         ids=[case[0] for case in SUBMIT_CASES])
def test_submit_rejected(api, body, code, param):
    reply = api.post("/v1/queue/submit", body)
    assert_error(reply, 400, code, param=param)
    assert_nothing_queued(api)


def test_missing_field_names_misspelling(api):
    reply = api.post("/v1/queue/submit", b'{"modle": "test/bad", "payload": {}}')
    body = assert_error(reply, 400, "missing_field", param="model")
    assert 'unknown field "modle"' in body["message"], body["message"]
    assert_nothing_queued(api)


def test_invalid_json_names_offset(api):
    reply = api.post("/v1/queue/submit", b'{"model": x}')
    body = assert_error(reply, 400, "invalid_json")
    assert "10" in body["message"], f"message does not give byte offset 10: {body['message']}"


def test_submit_retry_history_rejected(api):
    reply = api.submit(MODEL, {}, info={"retry_history": []})
    body = assert_error(reply, 400, "invalid_field")
    assert "retry_history" in body["message"]
    assert body.get("param", "info").startswith("info"), body
    assert_nothing_queued(api)


@pytest.mark.parametrize("model", ["m" * 128, "A-Z.a_z:0/9-", "x"])
def test_model_accepted(api, model):
    request_id = api.submit_ok(model, {})
    assert api.status_ok(request_id, model)["model"] == model


def test_nul_escape_in_payload_kept(api):
    payload = b'{"s": "before\\u0000after", "k\\u0000": 1}'
    reply = api.post("/v1/queue/submit", body_with(payload))
    assert reply.status == 200, reply
    status = api.status(reply.json["request_id"], MODEL)
    assert compact(raw_member(status.raw, "inputs")) == compact(payload)
    assert status.json["inputs"]["s"] == "before\u0000after"


def test_model_length_custom(start_server):
    api = start_server(max_model_length=10).api()
    assert api.submit("a" * 10, {}).status == 200
    reply = api.submit("a" * 11, {})
    body = assert_error(reply, 400, "invalid_field", param="model")
    assert "10" in body["message"], body["message"]
    assert api.metrics_ok("a" * 10)["total_jobs"] == 1


def test_info_size_limit(start_server):
    api = start_server(max_info_bytes=100).api()
    # {"k":"xxx..."} is 8 bytes plus the string.
    fits = b'{"k":"' + b"x" * 92 + b'"}'
    over = b'{"k":"' + b"x" * 93 + b'"}'
    assert len(fits) == 100
    reply = api.post("/v1/queue/submit", b'{"model":"test/bad","payload":{},"info":' + fits + b"}")
    assert reply.status == 200, reply
    reply = api.post("/v1/queue/submit", b'{"model":"test/bad","payload":{},"info":' + over + b"}")
    body = assert_error(reply, 400, "too_large", param="info")
    assert "100" in body["message"], body["message"]
    assert api.metrics_ok(MODEL)["total_jobs"] == 1


def nested_body(depth, model=b"test/bad"):
    """Return a submit body whose deepest value is nested depth containers deep.

    The top-level object counts as level 1 and payload as level 2; the rest are arrays.
    """
    arrays = depth - 2
    return (b'{"model": "' + model + b'", "payload": {"a": ' + b"[" * arrays + b"]" * arrays
            + b"}}")


def test_depth_default_limit(api):
    reply = api.post("/v1/queue/submit", nested_body(64))
    assert reply.status == 200, reply
    reply = api.post("/v1/queue/submit", nested_body(65))
    body = assert_error(reply, 400, "too_deep")
    assert "64" in body["message"], body["message"]
    assert api.metrics_ok(MODEL)["total_jobs"] == 1


def test_depth_custom_limit(start_server):
    api = start_server(max_json_depth=8).api()
    assert api.post("/v1/queue/submit", nested_body(8)).status == 200
    reply = api.post("/v1/queue/submit", nested_body(9))
    body = assert_error(reply, 400, "too_deep")
    assert "8" in body["message"], body["message"]
    info_body = b'{"model": "test/bad", "payload": {}, "info": {"a": [[[[[[[1]]]]]]]}}'
    assert_error(api.post("/v1/queue/submit", info_body), 400, "too_deep")
    assert api.metrics_ok(MODEL)["total_jobs"] == 1


def test_depth_objects_counted(start_server):
    api = start_server(max_json_depth=4).api()
    ok = b'{"model": "test/bad", "payload": {"a": {"b": {}}}}'
    deep = b'{"model": "test/bad", "payload": {"a": {"b": {"c": {}}}}}'
    assert api.post("/v1/queue/submit", ok).status == 200
    assert_error(api.post("/v1/queue/submit", deep), 400, "too_deep")


def test_body_size_limit(start_server):
    server = start_server(max_body_bytes=1000)
    prefix = b'{"model": "test/bad", "payload": {"s": "'
    suffix = b'"}}'
    fits = prefix + b"x" * (1000 - len(prefix) - len(suffix)) + suffix
    assert len(fits) == 1000
    api = server.api()
    assert api.post("/v1/queue/submit", fits).status == 200

    over = prefix + b"x" * (1001 - len(prefix) - len(suffix)) + suffix
    api = server.api()
    reply = api.post("/v1/queue/submit", over)
    body = assert_error(reply, 413, "body_too_large")
    assert "1000" in body["message"], body["message"]
    assert server.api().metrics_ok(MODEL)["total_jobs"] == 1


def test_body_size_limit_large(start_server):
    server = start_server(max_body_bytes=1000)
    api = server.api()
    body = body_with(b'{"s": "' + b"x" * 200000 + b'"}')
    reply = api.post("/v1/queue/submit", body)
    assert_error(reply, 413, "body_too_large")
    assert server.api().metrics_ok(MODEL)["total_jobs"] == 0


def chunked(body, size):
    out = b""
    for start in range(0, len(body), size):
        piece = body[start : start + size]
        out += b"%x\r\n" % len(piece) + piece + b"\r\n"
    return out + b"0\r\n\r\n"


def test_body_size_limit_chunked(start_server):
    server = start_server(max_body_bytes=1000)
    prefix = b'{"model": "test/bad", "payload": {"s": "'
    suffix = b'"}}'
    head = (b"POST /v1/queue/submit HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Authorization: Bearer " + server.key.encode() + b"\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n")

    fits = prefix + b"x" * (1000 - len(prefix) - len(suffix)) + suffix
    conn = server.raw()
    conn.send(head + chunked(fits, 100))
    response = conn.read_response()
    assert response.status == 200, response

    over = prefix + b"x" * (1001 - len(prefix) - len(suffix)) + suffix
    conn = server.raw()
    conn.send(head + chunked(over, 100))
    response = conn.read_response()
    assert response.status == 413, response
    assert response.json["code"] == "body_too_large"
    assert response.json["type"] == "request_too_large"
    assert response.headers.get("x-should-retry") == "false"
    assert server.api().metrics_ok(MODEL)["total_jobs"] == 1


@pytest.mark.parametrize("limit", [None, 1024])
def test_header_size_limit(start_server, limit):
    server = start_server(max_header_bytes=limit) if limit else start_server()
    limit = limit or 16384
    conn = server.raw()
    conn.send(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: " + b"p" * (limit // 2)
              + b"\r\n\r\n")
    assert conn.read_response().status == 200

    conn = server.raw()
    conn.send(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: " + b"p" * (limit + 10)
              + b"\r\n\r\n")
    response = conn.read_response()
    assert response.status == 431, response
    assert response.json["code"] == "headers_too_large"
    assert response.json["type"] == "request_too_large"
    assert response.headers.get("x-should-retry") == "false"


def test_header_limit_many_headers(start_server):
    server = start_server(max_header_bytes=1024)
    conn = server.raw()
    headers = b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 20) for i in range(60))
    conn.send(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n" + headers + b"\r\n")
    response = conn.read_response()
    assert response.status == 431, response
    assert response.json["code"] == "headers_too_large"


# (case id, query parameters, code, param)
STATUS_CASES = [
    ("id_missing", {"model": MODEL}, "missing_field", "request_id"),
    ("id_malformed", {"model": MODEL, "request_id": "abc"}, "invalid_field", "request_id"),
    ("id_short", {"model": MODEL, "request_id": "01938f6e-8a1c-7cc2-9b1e-3f0a5e0c2d1"},
     "invalid_field", "request_id"),
    ("id_not_hex", {"model": MODEL, "request_id": "0193zf6e-8a1c-7cc2-9b1e-3f0a5e0c2d11"},
     "invalid_field", "request_id"),
    ("model_missing", {"request_id": "01938f6e-8a1c-7cc2-9b1e-3f0a5e0c2d11"}, "missing_field",
     "model"),
    ("model_invalid", {"request_id": "01938f6e-8a1c-7cc2-9b1e-3f0a5e0c2d11", "model": "a b"},
     "invalid_field", "model"),
]


@pytest.mark.parametrize("params,code,param", [case[1:] for case in STATUS_CASES],
                         ids=[case[0] for case in STATUS_CASES])
def test_status_rejected(api, params, code, param):
    assert_error(api.get("/v1/queue/status", params), 400, code, param=param)


def test_metrics_model_missing(api):
    assert_error(api.get("/v1/queue/metrics"), 400, "missing_field", param="model")


def test_metrics_model_invalid(api):
    assert_error(api.metrics("bad model"), 400, "invalid_field", param="model")


CANCEL_CASES = [
    ("id_missing", {"model": MODEL}, "missing_field", "request_id"),
    ("id_malformed", {"model": MODEL, "request_id": "xyz"}, "invalid_field", "request_id"),
    ("id_number", {"model": MODEL, "request_id": 5}, "invalid_field", "request_id"),
    ("model_missing", {"request_id": "01938f6e-8a1c-7cc2-9b1e-3f0a5e0c2d11"}, "missing_field",
     "model"),
]


@pytest.mark.parametrize("body,code,param", [case[1:] for case in CANCEL_CASES],
                         ids=[case[0] for case in CANCEL_CASES])
def test_cancel_rejected(api, body, code, param):
    request_id = api.submit_ok(MODEL, {})
    assert_error(api.post("/v1/queue/cancel", body), 400, code, param=param)
    assert api.status_ok(request_id, MODEL)["status"] == "pending"


@pytest.mark.parametrize("body,code,param", [
    ({}, "missing_field", "model"),
    ({"model": ""}, "invalid_field", "model"),
    (b"not json", "invalid_json", None),
], ids=["model_missing", "model_empty", "not_json"])
def test_clear_rejected(api, body, code, param):
    api.submit_ok(MODEL, {})
    assert_error(api.post("/v1/queue/clear", body), 400, code, param=param)
    assert api.metrics_ok(MODEL)["messages_waiting"] == 1


CLAIM_CASES = [
    ("timeout_zero", {"claim_timeout": 0}, "claim_timeout"),
    ("timeout_negative", {"claim_timeout": -1}, "claim_timeout"),
    ("timeout_above_day", {"claim_timeout": 86401}, "claim_timeout"),
    ("timeout_fraction", {"claim_timeout": 1.5}, "claim_timeout"),
    ("timeout_string", {"claim_timeout": "10"}, "claim_timeout"),
    ("wait_61", {"wait": 61}, "wait"),
    ("wait_negative", {"wait": -1}, "wait"),
    ("wait_string", {"wait": "1"}, "wait"),
]


@pytest.mark.parametrize("fields,param", [case[1:] for case in CLAIM_CASES],
                         ids=[case[0] for case in CLAIM_CASES])
def test_claim_rejected(api, fields, param):
    request_id = api.submit_ok(MODEL, {})
    assert_error(api.claim(MODEL, **fields), 400, "invalid_field", param=param)
    assert api.status_ok(request_id, MODEL)["status"] == "pending"
    assert api.metrics_ok(MODEL) == {"messages_waiting": 1, "messages_running": 0,
                                     "total_jobs": 1}


def test_claim_model_missing(api):
    assert_error(api.post("/v1/queue/claim", {"wait": 0}), 400, "missing_field", param="model")


@pytest.mark.parametrize("fields", [{"claim_timeout": 1}, {"claim_timeout": 86400},
                                    {"wait": 60}, {"wait": 0.25}])
def test_claim_limits_accepted(api, fields):
    request_id = api.submit_ok(MODEL, {})
    job = api.claim_ok(MODEL, **fields)
    assert job["request_id"] == request_id


def test_status_4xx_no_retry_header(api):
    reply = api.status("01938f6e-8a1c-7cc2-9b1e-3f0a5e0c2d11", MODEL)
    assert_error(reply, 404, "not_found")
    assert reply.headers["x-should-retry"] == "false"


@pytest.mark.parametrize("route,body,param", [
    ("claim", b'{"model": "test/bad", "wait": 0, "wait": 1}', "wait"),
    ("cancel", b'{"model": "test/bad", "request_id": "01938f6e-8a1c-7cc2-9b1e-3f0a5e0c2d11",'
               b' "request_id": "01938f6e-8a1c-7cc2-9b1e-3f0a5e0c2d12"}', "request_id"),
    ("clear", b'{"model": "test/bad", "model": "test/other"}', "model"),
], ids=["claim", "cancel", "clear"])
def test_duplicate_field_other_routes(api, route, body, param):
    request_id = api.submit_ok(MODEL, {})
    assert_error(api.post(f"/v1/queue/{route}", body), 400, "duplicate_field", param=param)
    assert api.status_ok(request_id, MODEL)["status"] == "pending"


def test_valid_edge_values_kept(api):
    payload = (b'{"a": 1e99999999999999999999, "b": -0.0e-0, "c": "\x7f", "d": "\xf4\x8f\xbf\xbf",'
               b' "e": "\xef\xbf\xbe", "f": "\xc2\x80", "g": "\\ud83d\\ude00"}')
    reply = api.post("/v1/queue/submit", body_with(payload))
    assert reply.status == 200, reply
    status = api.status(reply.json["request_id"], MODEL)
    assert raw_member(status.raw, "inputs") == payload


def test_body_surrounding_whitespace(api):
    reply = api.post("/v1/queue/submit", b' \r\n\t{"model": "test/bad", "payload": {}}\n ')
    assert reply.status == 200, reply
