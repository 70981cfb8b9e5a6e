"""The dashboard's static routes: GET / and GET /ui/NAME serve the files of web/ compiled into
the binary, and need no API key. Each response carries its content type, an ETag that
If-None-Match turns into 304, Cache-Control, and a Content-Security-Policy that allows no
inline script."""

import http.client
import re
from pathlib import Path

import pytest

from support import assert_error, http_request, parse_json

WEB_DIR = Path(__file__).resolve().parents[2] / "web"

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
}


def get(server, path, headers=None, method="GET"):
    """Send one request without an API key; return (status, lowercase headers, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.request(method, path, headers=headers or {})
        resp = conn.getresponse()
        body = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, body
    finally:
        conn.close()


def csp_directives(headers):
    policy = headers.get("content-security-policy", "")
    directives = {}
    for part in policy.split(";"):
        words = part.split()
        if words:
            directives[words[0]] = words[1:]
    return directives


def assert_security_headers(headers):
    directives = csp_directives(headers)
    assert directives.get("default-src") == ["'self'"], headers
    assert directives.get("script-src") == ["'self'"], headers
    assert directives.get("object-src") == ["'none'"], headers
    assert directives.get("frame-ancestors") == ["'none'"], headers
    assert "'unsafe-inline'" not in headers["content-security-policy"]
    assert "'unsafe-eval'" not in headers["content-security-policy"]
    assert headers.get("x-content-type-options") == "nosniff", headers


def test_index_without_key(server):
    status, headers, body = get(server, "/")
    assert status == 200, body[:200]
    assert headers["content-type"] == "text/html; charset=utf-8"
    assert body == (WEB_DIR / "index.html").read_bytes()
    assert headers["cache-control"] == "no-cache"
    assert re.fullmatch(r'"[0-9a-f]{20}"', headers["etag"]), headers["etag"]
    assert_security_headers(headers)


def test_index_has_no_inline_script(server):
    _, _, body = get(server, "/")
    scripts = re.findall(rb"<script\b[^>]*>", body)
    assert scripts, "index.html loads no script"
    for tag in scripts:
        assert b' src="/ui/' in tag, f"inline or foreign script: {tag!r}"
    assert not re.search(rb"\son[a-z]+\s*=", body), "inline event handler attribute"
    assert b"style=" not in body, "inline style attribute"


def test_wrong_key_still_serves(server):
    status, _, _ = get(server, "/", {"Authorization": "Bearer iq_wrong"})
    assert status == 200


@pytest.mark.parametrize("path", sorted(p.name for p in WEB_DIR.iterdir()))
def test_every_web_file_served(server, path):
    status, headers, body = get(server, f"/ui/{path}")
    assert status == 200, body[:200]
    assert headers["content-type"] == CONTENT_TYPES[Path(path).suffix]
    assert body == (WEB_DIR / path).read_bytes()
    assert_security_headers(headers)


def test_referenced_files_exist(server):
    """Every /ui/ file that index.html names and every module a script imports is served."""
    _, _, index = get(server, "/")
    wanted = set(re.findall(r'(?:src|href)="/ui/([^"]+)"', index.decode()))
    assert {"app.js", "app.css"} <= wanted
    for name in sorted(p.name for p in WEB_DIR.glob("*.js")):
        text = (WEB_DIR / name).read_text()
        wanted |= set(re.findall(r"from '\./([^']+)'", text))
    for name in sorted(wanted):
        status, _, _ = get(server, f"/ui/{name}")
        assert status == 200, f"/ui/{name} is referenced but answers {status}"


def test_etags_differ_per_file(server):
    tags = {}
    for path in ("/", "/ui/app.js", "/ui/app.css", "/ui/api.js"):
        tags[path] = get(server, path)[1]["etag"]
    assert len(set(tags.values())) == len(tags), tags
    assert get(server, "/ui/index.html")[1]["etag"] == tags["/"]


def test_if_none_match_304(server):
    _, headers, _ = get(server, "/ui/app.js")
    etag = headers["etag"]
    for value in (etag, f"W/{etag}", f'"nope", {etag}', f'W/"x",W/{etag}', "*"):
        status, h304, body = get(server, "/ui/app.js", {"If-None-Match": value})
        assert status == 304, f"If-None-Match: {value} answered {status}"
        assert body == b""
        assert h304["etag"] == etag
        assert h304["cache-control"] == "no-cache"
        assert "content-length" not in h304
        assert_security_headers(h304)


@pytest.mark.parametrize("value", ['"0000"', "abc", '"unterminated', "W/", '""', ", ,"])
def test_if_none_match_other_200(server, value):
    status, headers, body = get(server, "/ui/app.js", {"If-None-Match": value})
    assert status == 200, f"If-None-Match: {value} answered {status}"
    assert body == (WEB_DIR / "app.js").read_bytes()


def test_head_has_no_body(server):
    conn = server.raw()
    conn.send(http_request("HEAD", "/"))
    response = conn.read_response(head_request=True)
    assert response.status == 200
    assert response.body == b""
    length = int(response.headers["content-length"])
    assert length == (WEB_DIR / "index.html").stat().st_size


def test_query_string_ignored(server):
    status, _, body = get(server, "/?from=bookmark#/jobs")
    assert status == 200
    assert body == (WEB_DIR / "index.html").read_bytes()


@pytest.mark.parametrize("path", [
    "/ui/nope.js",
    "/ui/APP.JS",
    "/ui/app.js/",
    "/ui/../index.html",
    "/ui/%61pp.js",
    "/ui/app.js%00",
    "/ui/.",
    "/index.html",
])
def test_unknown_file_404(server, path):
    status, headers, body = get(server, path)
    assert status == 404, f"{path} answered {status}"
    assert headers["content-type"] == "application/json"
    error = parse_json(body)
    assert error["code"] == "not_found"
    assert error["type"] == "not_found_error"


def test_unknown_file_message_names_it(server):
    _, _, body = get(server, "/ui/missing.css")
    message = parse_json(body)["message"]
    assert '"missing.css"' in message, message
    assert "open /" in message, message


@pytest.mark.parametrize("path", ["/", "/ui/app.js"])
def test_post_not_allowed(api, path):
    reply = api.post(path, {})
    assert_error(reply, 405, "method_not_allowed")
    assert reply.headers["allow"] == "GET"
