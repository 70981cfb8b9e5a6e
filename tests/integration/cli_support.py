"""Helpers for the CLI tests: run `inferq` client subcommands, find a closed port, run a
worker on a thread, and a recording HTTP server that shows which API key a request carried.

Only the standard library is used.
"""

import http.server
import json
import os
import socket
import subprocess
import threading

from support import INFERQ_BIN, Api

CLI_TIMEOUT = 60.0
KEY_VARIABLES = ("INFERQ_URL", "INFERQ_API_KEY", "TOGETHER_API_KEY")


def cli_env(url=None, **variables):
    """Return the environment for a CLI run: INFERQ_URL=url and the given variables.

    The caller's INFERQ_URL and API key variables are removed first, so only the test decides.
    """
    env = {name: value for name, value in os.environ.items() if name not in KEY_VARIABLES}
    if url is not None:
        env["INFERQ_URL"] = url
    env.update(variables)
    return env


def run_cli(args, cwd, url=None, env=None, stdin_text=None, stderr=subprocess.PIPE):
    """Run `inferq ARGS` in cwd and return the CompletedProcess (text mode).

    url sets INFERQ_URL; env replaces the whole environment when given.
    """
    if env is None:
        env = cli_env(url)
    return subprocess.run([str(INFERQ_BIN)] + list(args), cwd=cwd, env=env, input=stdin_text,
                          stdin=None if stdin_text is not None else subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=stderr, text=True,
                          timeout=CLI_TIMEOUT)


def server_url(server):
    return f"http://127.0.0.1:{server.port}"


def closed_port():
    """Return a port on 127.0.0.1 that nothing listens on (it was free a moment ago)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def describe(proc):
    return f"exit {proc.returncode}\nstdout: {proc.stdout!r}\nstderr: {proc.stderr!r}"


class Worker(threading.Thread):
    """Claim one job of model (waiting up to claim_wait seconds), then run steps on it.

    steps is a list of (route, fields) run in order, such as
    [("heartbeat", {"info": {"progress": 0.5}}), ("complete", {"outputs": {}})];
    delay seconds pass before each step. Replies are kept in self.replies; an exception in
    self.error.
    """

    def __init__(self, server, model, steps, delay=0.3, claim_wait=20):
        super().__init__(daemon=True)
        self.api = Api(server.port, server.key)
        self.model = model
        self.steps = steps
        self.delay = delay
        self.claim_wait = claim_wait
        self.replies = []
        self.job = None
        self.error = None

    def run(self):
        try:
            reply = self.api.claim(self.model, wait=self.claim_wait, claim_timeout=60)
            assert reply.status == 200, f"worker claim got {reply!r}"
            self.job = reply.json
            for route, fields in self.steps:
                threading.Event().wait(self.delay)
                self.replies.append(self.api.worker_call(route, self.model, self.job["request_id"],
                                                         self.job["claim_id"], **fields))
        except Exception as exc:  # reported by finish()
            self.error = exc
        finally:
            self.api.close()

    def finish(self, timeout=30.0):
        self.join(timeout)
        assert not self.is_alive(), f"worker on {self.model} still running after {timeout} s"
        if self.error is not None:
            raise self.error
        for reply in self.replies:
            assert reply.status == 200, f"worker call failed: {reply!r}"


class RecordingServer:
    """An HTTP server on 127.0.0.1 that records each request's Authorization header and
    replies to every GET with zero metrics, so a test can see which key the CLI sent."""

    def __init__(self):
        self.authorizations = []
        recorder = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                recorder.authorizations.append(self.headers.get("Authorization"))
                body = json.dumps({"messages_waiting": 0, "messages_running": 0,
                                   "total_jobs": 0}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)
