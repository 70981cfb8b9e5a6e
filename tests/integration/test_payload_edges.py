"""Payload edge cases: bodies at the size limit, nesting at the depth limit, non-ASCII text,
escaped NUL, huge integers and floats. Payloads and outputs must come back byte for byte
(apart from whitespace outside strings) from status and claim, also after a kill -9.
"""

import json

from support import assert_error, compact, raw_member

MODEL = "test/payload"
MIB = 1024 * 1024

# Number spellings that a parser into doubles or 64-bit integers would change.
NUMBERS = (b'{"big": 123456789012345678901234567890, "neg": -98765432109876543210987654321,'
           b' "u64": 18446744073709551616, "huge": 1e400, "tiny": 1E-400, "one": 1.0,'
           b' "negzero": -0, "negzerof": -0.0, "pi": 3.14159265358979323846264338327950288,'
           b' "exp": 6.02214076e+23, "max": 1.7976931348623157e308, "arr": [1.10, 2.000, 1e-7]}')
# UTF-8 text as raw bytes, escapes of the same characters, surrogate pairs and escaped NUL.
TEXT = ('{"plain": "h\u00e9llo w\u00f6rld \u4f60\u597d \U0001F389 \U0001F468\u200D\U0001F469'
        '\u200D\U0001F467 \U0010FFFF \u0301e", "escaped": "\\u00e9\\u4f60\\ud83c\\udf89",'
        ' "nul": "a\\u0000b", "ctrl": "\\t\\n\\r\\b\\f\\"\\\\\\/", "key\\u0000\U0001F389": 1,'
        ' "rtl": "\u05e9\u05dc\u05d5\u05dd \u0645\u0631\u062d\u0628\u0627"}').encode()


def submit_raw(api, payload, model=MODEL):
    """Submit payload bytes as sent; return the reply."""
    return api.post("/v1/queue/submit", b'{"model":"' + model.encode() + b'","payload":'
                    + payload + b"}")


def check_inputs(api, request_id, payload):
    reply = api.status(request_id, MODEL)
    assert reply.status == 200, reply
    assert compact(raw_member(reply.raw, "inputs")) == compact(payload)
    return reply


def test_body_just_under_limit(start_server):
    server = start_server(max_body_bytes="1M")
    api = server.api()
    prefix = b'{"model":"' + MODEL.encode() + b'","payload":{"s":"'
    suffix = b'"}}'
    fill = MIB - 3 - len(prefix) - len(suffix)
    text = (b"0123456789abcdef" * (fill // 16 + 1))[:fill]
    body = prefix + text + suffix
    assert len(body) == MIB - 3
    reply = api.post("/v1/queue/submit", body)
    assert reply.status == 200, reply
    request_id = reply.json["request_id"]
    payload = b'{"s":"' + text + b'"}'
    status = api.status(request_id, MODEL)
    assert b'"inputs":' + payload in status.raw, "inputs differ from the payload sent"

    # At the limit is accepted; one byte over is 413.
    at_limit = prefix + text + b"xyz" + suffix
    assert len(at_limit) == MIB
    assert api.post("/v1/queue/submit", at_limit).status == 200
    over = prefix + text + b"xyzw" + suffix
    assert_error(server.api().post("/v1/queue/submit", over), 413, "body_too_large")
    assert server.api().metrics_ok(MODEL)["messages_waiting"] == 2


def big_payload(size):
    """Return a payload of about size bytes with varied text, escapes and numbers."""
    piece = (b'"k%07d":{"t":"\\u00e9\\n\\"q\\" \xe2\x82\xac \xf0\x9f\x8e\x89 abc",'
             b'"n":123456789012345678901234567890,"f":1.0e-300},')
    parts = []
    total = 2
    i = 0
    while total < size - 200:
        part = piece.replace(b"%07d", b"%07d" % i)
        parts.append(part)
        total += len(part)
        i += 1
    return b"{" + b"".join(parts) + b'"end":true}'


def test_large_payload_round_trip(start_server):
    server = start_server()
    api = server.api()
    payload = big_payload(9_900_000)
    assert 9_800_000 < len(payload) < 10 * MIB - 100
    reply = submit_raw(api, payload)
    assert reply.status == 200, reply
    request_id = reply.json["request_id"]
    assert b'"inputs":' + payload in api.status(request_id, MODEL).raw

    claim = api.claim(MODEL, claim_timeout=300)
    assert claim.status == 200, claim
    assert b'"payload":' + payload in claim.raw, "claimed payload differs from the one sent"
    claim_id = claim.json["claim_id"]
    outputs = payload.replace(b'"end":true', b'"end":false')
    body = (b'{"model":"' + MODEL.encode() + b'","request_id":"' + request_id.encode()
            + b'","claim_id":"' + claim_id.encode() + b'","outputs":' + outputs + b"}")
    reply = api.post("/v1/queue/complete", body)
    assert reply.status == 200, reply
    status = api.status(request_id, MODEL)
    assert b'"outputs":' + outputs in status.raw, "outputs differ from the ones sent"

    server.kill()
    server.restart()
    api = server.api()
    status = api.status(request_id, MODEL)
    assert status.status == 200, status
    assert b'"inputs":' + payload in status.raw, "inputs changed across a kill -9"
    assert b'"outputs":' + outputs in status.raw, "outputs changed across a kill -9"


def nested_payload(levels):
    """Return a payload object whose deepest container is `levels` levels below it."""
    inner = b"[" * (levels - 1) + b"1" + b"]" * (levels - 1)
    return b'{"a":' + inner + b"}"


def test_depth_limit_inside_payload(start_server):
    server = start_server()
    api = server.api()
    # The submit body is level 1 and payload level 2, so payload may nest 63 levels.
    at_limit = nested_payload(63)
    reply = submit_raw(api, at_limit)
    assert reply.status == 200, reply
    request_id = reply.json["request_id"]
    check_inputs(api, request_id, at_limit)

    over = nested_payload(64)
    body = assert_error(submit_raw(api, over), 400, "too_deep")
    assert "64" in body["message"], body["message"]
    objects_over = b'{"a":' + b'{"b":' * 63 + b"1" + b"}" * 63 + b"}"
    assert_error(submit_raw(api, objects_over), 400, "too_deep")

    # Outputs nested to the limit are kept; one level more is rejected and changes nothing.
    job = api.claim_ok(MODEL)
    prefix = (b'{"model":"' + MODEL.encode() + b'","request_id":"' + request_id.encode()
              + b'","claim_id":"' + job["claim_id"].encode() + b'","outputs":')
    reply = api.post("/v1/queue/complete", prefix + nested_payload(64) + b"}")
    assert_error(reply, 400, "too_deep")
    assert api.status_ok(request_id, MODEL)["status"] == "running"
    reply = api.post("/v1/queue/complete", prefix + at_limit + b"}")
    assert reply.status == 200, reply
    status = api.status(request_id, MODEL)
    assert compact(raw_member(status.raw, "outputs")) == compact(at_limit)
    assert api.metrics_ok(MODEL)["total_jobs"] == 0


def test_text_and_numbers_kept(start_server):
    server = start_server()
    api = server.api()
    ids = {}
    for name, payload in [("numbers", NUMBERS), ("text", TEXT)]:
        reply = submit_raw(api, payload)
        assert reply.status == 200, f"{name}: {reply!r}"
        ids[name] = reply.json["request_id"]
        check_inputs(api, ids[name], payload)

    parsed = json.loads(TEXT)
    status = api.status_ok(ids["text"], MODEL)
    assert status["inputs"] == parsed
    assert status["inputs"]["nul"] == "a\u0000b"
    assert status["inputs"]["escaped"] == "\u00e9\u4f60\U0001F389"

    # Claim returns the same bytes; complete keeps outputs with the same edge cases.
    for name in ("numbers", "text"):
        claim = api.claim(MODEL, claim_timeout=300)
        assert claim.status == 200, claim
        payload = NUMBERS if name == "numbers" else TEXT
        assert claim.json["request_id"] == ids[name]
        assert compact(raw_member(claim.raw, "payload")) == compact(payload)
        outputs = TEXT if name == "numbers" else NUMBERS
        body = (b'{"model":"' + MODEL.encode() + b'","request_id":"' + ids[name].encode()
                + b'","claim_id":"' + claim.json["claim_id"].encode() + b'","outputs":'
                + outputs + b"}")
        assert api.post("/v1/queue/complete", body).status == 200

    # A third job stays pending across the kill, with its info byte for byte.
    info = b'{"note": "\xc3\xa9t\xc3\xa9 \\u0000 \xf0\x9f\x8e\x89", "n": 1e400}'
    reply = api.post("/v1/queue/submit", b'{"model":"' + MODEL.encode() + b'","payload":'
                     + NUMBERS + b',"info":' + info + b"}")
    assert reply.status == 200, reply
    pending_id = reply.json["request_id"]

    server.kill()
    server.restart()
    api = server.api()
    for name, inputs, outputs in [("numbers", NUMBERS, TEXT), ("text", TEXT, NUMBERS)]:
        status = api.status(ids[name], MODEL)
        assert status.status == 200, status
        assert compact(raw_member(status.raw, "inputs")) == compact(inputs), name
        assert compact(raw_member(status.raw, "outputs")) == compact(outputs), name
    status = check_inputs(api, pending_id, NUMBERS)
    assert compact(raw_member(status.raw, "info")) == compact(info)
    claim = api.claim(MODEL, claim_timeout=300)
    assert claim.status == 200, claim
    assert compact(raw_member(claim.raw, "payload")) == compact(NUMBERS)
    assert compact(raw_member(claim.raw, "info")) == compact(info)


def test_raw_nul_and_invalid_utf8_rejected(api):
    # The escape \u0000 is valid; a raw NUL byte or invalid UTF-8 is not JSON text.
    for payload in (b'{"s": "a\x00b"}', b'{"s": "\xc3"}', b'{"s": "\xed\xa0\x80"}',
                    b'{"s": "\xf4\x90\x80\x80"}', b'{"s": "\\ud800"}', b'{"s": "\xc0\xaf"}'):
        reply = submit_raw(api, payload)
        assert_error(reply, 400, "invalid_json")
    assert api.metrics_ok(MODEL)["total_jobs"] == 0
