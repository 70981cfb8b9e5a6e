"""`inferq worker -- CMD`: a real worker process runs small shell scripts (written to tmp_path)
against a real server. Covers outputs, failures with the stderr tail, crashes, timeouts, info
lines on fd 3 and their batching, draining and forced shutdown, a server restart during a
job, a claim lost to another worker, concurrency and the render-image example.

Scripts that must wait for the test poll for a file the test creates, in a bounded loop, so
no step waits a fixed time for a state.
"""

import http.client
import http.server
import json
import os
import signal
import struct
import subprocess
import threading
import time
from pathlib import Path

import pytest

from cli_support import cli_env, closed_port, server_url
from support import INFERQ_BIN, compact, parse_time, raw_member, wait_for

MODEL = "runner/test"
REPO = Path(__file__).resolve().parents[2]
EXIT_TIMEOUT = 20.0

# Waits up to 30 s for the file named by $1; exits 9 when it does not appear.
WAIT_FOR_FILE = """
wait_for_file() {
	n=0
	while [ ! -e "$1" ]; do
		n=$((n + 1))
		[ "$n" -gt 600 ] && { echo "gave up waiting for $1" >&2; exit 9; }
		sleep 0.05
	done
}
"""


def write_script(directory, name, body):
    path = Path(directory) / name
    path.write_text("#!/bin/sh\n" + WAIT_FOR_FILE + body)
    path.chmod(0o755)
    return path


class WorkerProcess:
    """One `inferq worker` process; its stderr lines are collected on a thread."""

    def __init__(self, server, cwd, command, options, env_extra):
        url = server_url(server)
        env = cli_env(url, INFERQ_API_KEY=server.key, **env_extra)
        args = [str(INFERQ_BIN), "worker", "--model", MODEL, *options, "--", *map(str, command)]
        self.lines = []
        self.proc = subprocess.Popen(args, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.out = []
        threading.Thread(target=self._drain, args=(self.proc.stderr, self.lines),
                         daemon=True).start()
        threading.Thread(target=self._drain, args=(self.proc.stdout, self.out),
                         daemon=True).start()

    @staticmethod
    def _drain(stream, lines):
        for line in iter(stream.readline, ""):
            lines.append(line.rstrip("\n"))
        stream.close()

    def log(self):
        return "\n".join(self.lines)

    def wait_log(self, text, timeout=10.0):
        wait_for(lambda: any(text in line for line in self.lines), timeout,
                 f"worker log line containing {text!r}; log so far:\n{self.log()}")

    def signal(self, sig):
        self.proc.send_signal(sig)

    def wait_exit(self, timeout=EXIT_TIMEOUT):
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"worker still running {timeout} s later; log:\n{self.log()}")

    def running(self):
        return self.proc.poll() is None


@pytest.fixture
def run_worker(tmp_path, request):
    """Return start(server, command, *options, **env) -> WorkerProcess.

    Workers still running at the end get SIGTERM twice (which kills their commands), then
    SIGKILL.
    """
    workers = []

    def start(server, command, *options, **env):
        worker = WorkerProcess(server, tmp_path, command, options, env)
        workers.append(worker)
        return worker

    yield start

    for worker in workers:
        if worker.running():
            worker.signal(signal.SIGTERM)
            worker.signal(signal.SIGTERM)
            try:
                worker.proc.wait(20)
            except subprocess.TimeoutExpired:
                worker.proc.kill()
                worker.proc.wait()
    report = getattr(request.node, "report_call", None)
    if report is not None and report.failed:
        for worker in workers:
            print(f"--- worker log ---\n{worker.log()}")


def wait_done(api, request_id, state, timeout=15.0):
    return api.wait_status(request_id, MODEL, state, timeout=timeout)


# ---------------------------------------------------------------------------
# Results


def test_success_sends_outputs(server, api, tmp_path, run_worker):
    script = write_script(tmp_path, "echo.sh", """
payload=$(cat)
echo "working on it" >&2
printf '{"echo": %s, "id": "%s", "model": "%s", "retries": "%s"}\\n' \\
	"$payload" "$INFERQ_REQUEST_ID" "$INFERQ_MODEL" "$INFERQ_RETRIES"
""")
    payload = b'{"big": 123456789012345678901234567890, "f": 1.50}'
    reply = api.post("/v1/queue/submit",
                     b'{"model": "' + MODEL.encode() + b'", "payload": ' + payload + b"}")
    assert reply.status == 200, reply
    request_id = reply.json["request_id"]
    worker = run_worker(server, [script], "--wait", "1")

    body = wait_done(api, request_id, "done")
    assert body["outputs"]["id"] == request_id
    assert body["outputs"]["model"] == MODEL
    assert body["outputs"]["retries"] == "0"
    outputs = raw_member(api.status(request_id, MODEL).raw, "outputs")
    assert compact(payload) in compact(outputs), outputs
    worker.wait_log(f"completed request_id={request_id}")
    worker.wait_log(f"[{request_id}] working on it")

    worker.signal(signal.SIGTERM)
    assert worker.wait_exit() == 0, worker.log()


def test_exit_status_fails_with_stderr_tail(server, api, tmp_path, run_worker):
    script = write_script(tmp_path, "fail.sh", """
cat >/dev/null
echo "FIRST-LINE-OF-STDERR" >&2
i=0
while [ $i -lt 100 ]; do
	echo "filler line $i of stderr, long enough to push the first line out" >&2
	i=$((i + 1))
done
echo "the last words" >&2
exit 3
""")
    request_id = api.submit_ok(MODEL, {})
    run_worker(server, [script], "--wait", "1")

    body = wait_done(api, request_id, "failed")
    error = body["error"]
    assert "exit status 3" in error
    assert error.rstrip().endswith("the last words"), error[-200:]
    assert "FIRST-LINE-OF-STDERR" not in error, "more than the last 4 KiB of stderr was kept"
    assert "filler line 99" in error
    assert len(error.encode()) < 4096 + 200, len(error)
    assert "outputs" not in body


def test_signal_crash_fails_with_name(server, api, tmp_path, run_worker):
    script = write_script(tmp_path, "crash.sh", """
cat >/dev/null
echo "about to crash" >&2
kill -SEGV $$
""")
    request_id = api.submit_ok(MODEL, {})
    run_worker(server, [script], "--wait", "1")

    error = wait_done(api, request_id, "failed")["error"]
    assert "SIGSEGV" in error
    assert "about to crash" in error


@pytest.mark.parametrize("stdout, reason", [
    ("not json at all", "not one JSON object"),
    ("[1, 2]", "another JSON value"),
    ('{"a": 1} {"b": 2}', "not one JSON object"),
    ("", "printed nothing on stdout"),
])
def test_stdout_not_object_fails(server, api, tmp_path, run_worker, stdout, reason):
    (tmp_path / "stdout.txt").write_text(stdout)
    script = write_script(tmp_path, "bad.sh", f"""
cat >/dev/null
cat "{tmp_path / 'stdout.txt'}"
""")
    request_id = api.submit_ok(MODEL, {})
    run_worker(server, [script], "--wait", "1")

    error = wait_done(api, request_id, "failed")["error"]
    assert reason in error
    assert "status 0" in error


def test_large_payload_and_outputs(server, api, tmp_path, run_worker):
    """A payload beyond a pipe's buffer, echoed back while CMD still reads."""
    script = write_script(tmp_path, "cat.sh", "cat\n")
    payload = {"blob": "x" * (3 << 20)}
    request_id = api.submit_ok(MODEL, payload)
    run_worker(server, [script], "--wait", "1")

    body = wait_done(api, request_id, "done", timeout=30)
    assert body["outputs"] == payload


# ---------------------------------------------------------------------------
# Info on fd 3


def test_progress_lines_reach_info(server, api, tmp_path, run_worker):
    go = tmp_path / "go"
    script = write_script(tmp_path, "progress.sh", f"""
cat >/dev/null
echo '{{"progress": 0.4}}' >&3
echo 'this is not json' >&3
wait_for_file "{go}"
echo '{{"progress": 1.0, "stage": "done"}}' >&3
echo '{{}}'
""")
    request_id = api.submit_ok(MODEL, {}, info={"tag": "kept"})
    worker = run_worker(server, [script], "--wait", "1")

    def progress_seen():
        body = api.status_ok(request_id, MODEL)
        info = body.get("info") or {}
        return body if info.get("progress") == 0.4 else None

    body = wait_for(progress_seen, 10, "info.progress 0.4 while the job runs")
    assert body["status"] == "running"
    assert body["info"]["tag"] == "kept"
    worker.wait_log("ignored a line on fd 3")
    go.touch()

    body = wait_done(api, request_id, "done")
    assert body["info"] == {"tag": "kept", "progress": 1.0, "stage": "done"}


def test_info_lines_combine_like_merge_patches(server, api, tmp_path, run_worker):
    """Lines written at once become few updates with the effect of each line in turn."""
    script = write_script(tmp_path, "patches.sh", """
cat >/dev/null
{
	echo '{"a": 1, "nested": {"keep": 1, "drop": 2}}'
	echo '{"b": {"c": 1}}'
	echo '{"b": {"d": 2}, "nested": {"drop": null}}'
	echo '{"a": null}'
	echo '{"x": 5}'
	echo '{"x": {"y": 1}}'
	printf '{"last": "no newline"}'
} >&3
echo '{}'
""")
    request_id = api.submit_ok(MODEL, {}, info={"x": {"z": 0}, "old": True})
    run_worker(server, [script], "--wait", "1")

    body = wait_done(api, request_id, "done")
    assert body["info"] == {
        "old": True,
        "nested": {"keep": 1},
        "b": {"c": 1, "d": 2},
        # {"x": 5} replaced the object, so {"x": {"y": 1}} starts from nothing.
        "x": {"y": 1},
        "last": "no newline",
    }


class CountingProxy:
    """An HTTP proxy on 127.0.0.1 that forwards every request to a server and records the
    paths and bodies of the POST requests."""

    def __init__(self, port):
        self.posts = []
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def forward(self, method):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                if method == "POST":
                    proxy.posts.append((self.path, body))
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=90)
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in ("host", "connection")}
                conn.request(method, self.path, body=body, headers=headers)
                reply = conn.getresponse()
                data = reply.read()
                self.send_response(reply.status)
                for name, value in reply.getheaders():
                    if name.lower() not in ("connection", "transfer-encoding", "content-length"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                conn.close()

            def do_POST(self):
                self.forward("POST")

            def do_GET(self):
                self.forward("GET")

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def heartbeats(self):
        return [json.loads(body) for path, body in self.posts if path == "/v1/queue/heartbeat"]

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_chatty_fd3_is_rate_limited(server, api, tmp_path, run_worker):
    script = write_script(tmp_path, "chatty.sh", """
cat >/dev/null
start=$(date +%s)
i=0
while [ $i -lt 400 ]; do
	echo "{\\"progress\\": $i, \\"step$((i % 7))\\": $i}" >&3
	i=$((i + 1))
	[ $((i % 100)) -eq 0 ] && sleep 0.5
done
echo '{"progress": "end"}' >&3
echo '{}'
""")
    proxy = CountingProxy(server.port)
    try:
        request_id = api.submit_ok(MODEL, {})
        started = time.monotonic()
        run_worker(server, [script], "--wait", "1", "--server", proxy.url)
        body = wait_done(api, request_id, "done", timeout=30)
        elapsed = time.monotonic() - started
        beats = [b for b in proxy.heartbeats() if b["request_id"] == request_id]
    finally:
        proxy.close()

    assert body["info"]["progress"] == "end"
    for k in range(7):
        assert body["info"][f"step{k}"] == max(i for i in range(400) if i % 7 == k)
    # One info heartbeat per second at most, plus the last one after CMD exits.
    assert 1 <= len(beats) <= elapsed + 2, f"{len(beats)} heartbeats in {elapsed:.1f} s"


# ---------------------------------------------------------------------------
# Timeouts


def test_timeout_kills_and_fails(server, api, tmp_path, run_worker):
    script = write_script(tmp_path, "slow.sh", """
cat >/dev/null
echo "starting a long sleep" >&2
sleep 30
echo '{}'
""")
    request_id = api.submit_ok(MODEL, {})
    started = time.monotonic()
    run_worker(server, [script], "--wait", "1", "--timeout", "1")

    error = wait_done(api, request_id, "failed", timeout=10)["error"]
    assert time.monotonic() - started < 8
    assert "timed out after 1 s" in error
    assert "SIGTERM" in error
    assert "starting a long sleep" in error


def test_timeout_escalates_to_sigkill(server, api, tmp_path, run_worker):
    script = write_script(tmp_path, "stubborn.sh", """
cat >/dev/null
trap '' TERM
i=0
while [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
echo '{}'
""")
    request_id = api.submit_ok(MODEL, {})
    run_worker(server, [script], "--wait", "1", "--timeout", "0.5")

    error = wait_done(api, request_id, "failed", timeout=15)["error"]
    assert "timed out" in error
    assert "SIGKILL" in error


# ---------------------------------------------------------------------------
# Shutdown


def test_sigterm_drains_running_job(server, api, tmp_path, run_worker):
    go = tmp_path / "go"
    started = tmp_path / "started"
    script = write_script(tmp_path, "drain.sh", f"""
touch "{started}"
cat >/dev/null
wait_for_file "{go}"
echo '{{"drained": true}}'
""")
    request_id = api.submit_ok(MODEL, {})
    worker = run_worker(server, [script], "--wait", "1", "--grace", "20")
    wait_done(api, request_id, "running")
    # The server shows the claim before the worker has it: wait until CMD really runs.
    wait_for(started.exists, 10, "the job's command started")

    worker.signal(signal.SIGTERM)
    worker.wait_log("no more claims")
    later_id = api.submit_ok(MODEL, {"after": "sigterm"})
    assert worker.running()
    go.touch()

    assert worker.wait_exit() == 0, worker.log()
    assert api.status_ok(request_id, MODEL)["outputs"] == {"drained": True}
    later = api.status_ok(later_id, MODEL)
    assert later["status"] == "pending", "the worker claimed a job after SIGTERM"


def test_idle_worker_exits_on_sigterm(server, tmp_path, run_worker):
    script = write_script(tmp_path, "idle.sh", "echo '{}'\n")
    worker = run_worker(server, [script], "--wait", "30")
    worker.wait_log("started model=")

    started = time.monotonic()
    worker.signal(signal.SIGINT)
    assert worker.wait_exit() == 0, worker.log()
    assert time.monotonic() - started < 5, "an idle worker waited for its long-poll claim"


def test_sighup_stops_gracefully(server, api, tmp_path, run_worker):
    """A closed terminal sends SIGHUP: the running job still finishes and is delivered."""
    go = tmp_path / "go"
    script = write_script(tmp_path, "hup.sh", f"""
cat >/dev/null
wait_for_file "{go}"
echo '{{"after": "hangup"}}'
""")
    request_id = api.submit_ok(MODEL, {})
    worker = run_worker(server, [script], "--wait", "1", "--grace", "30")
    wait_done(api, request_id, "running")

    worker.signal(signal.SIGHUP)
    worker.wait_log("SIGHUP: no more claims")
    go.touch()

    assert worker.wait_exit() == 0, worker.log()
    body = api.status_ok(request_id, MODEL)
    assert body["status"] == "done"
    assert body["outputs"] == {"after": "hangup"}


def read_pid(path):
    return wait_for(lambda: path.exists() and path.read_text().strip(), 10,
                    f"the command to write {path}")


def process_gone(pid):
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    # A zombie is gone too: it only waits for its parent to read its status.
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split(") ")[-1].startswith("Z")


@pytest.mark.parametrize("how", ["second signal", "grace period over"])
def test_forced_stop_releases_job(server, api, tmp_path, run_worker, how):
    pid_file = tmp_path / "pid"
    script = write_script(tmp_path, "forever.sh", f"""
cat >/dev/null
echo $$ > "{pid_file}"
wait_for_file "{tmp_path / 'never'}"
echo '{{}}'
""")
    request_id = api.submit_ok(MODEL, {})
    grace = "30" if how == "second signal" else "0.5"
    worker = run_worker(server, [script], "--wait", "1", "--grace", grace)
    wait_done(api, request_id, "running")
    pid = read_pid(pid_file)

    worker.signal(signal.SIGTERM)
    worker.wait_log("no more claims")
    if how == "second signal":
        worker.signal(signal.SIGTERM)

    assert worker.wait_exit() == 0, worker.log()
    body = api.status_ok(request_id, MODEL)
    assert body["status"] == "pending"
    assert body["retries"] == 0
    assert f"released request_id={request_id}" in worker.log()
    wait_for(lambda: process_gone(pid), 5, f"the command (pid {pid}) to be killed")


# ---------------------------------------------------------------------------
# The server goes away, or the job moves on


def test_result_survives_server_restart(start_server, tmp_path, run_worker):
    port = closed_port()
    server = start_server(listen=f"127.0.0.1:{port}")
    api = server.api()
    go = tmp_path / "go"
    script = write_script(tmp_path, "restart.sh", f"""
cat >/dev/null
wait_for_file "{go}"
echo '{{"survived": "restart"}}'
""")
    request_id = api.submit_ok(MODEL, {})
    worker = run_worker(server, [script], "--wait", "1")
    wait_done(api, request_id, "running")

    server.kill()
    go.touch()
    worker.wait_log("complete failed", timeout=15)
    server.restart()
    assert server.port == port
    api = server.api()

    body = wait_done(api, request_id, "done", timeout=30)
    assert body["outputs"] == {"survived": "restart"}
    assert body["retries"] == 0
    worker.wait_log(f"completed request_id={request_id}")


def test_claim_timeout_takes_a_duration(server, api, tmp_path, run_worker):
    go = tmp_path / "go"
    script = write_script(tmp_path, "hold.sh", f"""
cat >/dev/null
wait_for_file "{go}"
echo '{{}}'
""")
    request_id = api.submit_ok(MODEL, {})
    worker = run_worker(server, [script], "--wait", "1", "--claim-timeout", "2m")
    running = wait_done(api, request_id, "running")
    lease = parse_time(running["lease_expires_at"]) - parse_time(running["claimed_at"])
    assert 119 <= lease <= 121, running
    go.touch()
    wait_done(api, request_id, "done")
    worker.signal(signal.SIGTERM)
    assert worker.wait_exit() == 0, worker.log()


def test_complete_after_lost_claim_is_dropped(server, api, tmp_path, run_worker):
    """A worker paused past its lease finds the job taken by another worker: 409, logged."""
    go = tmp_path / "go"
    script = write_script(tmp_path, "late.sh", f"""
cat >/dev/null
wait_for_file "{go}"
echo '{{"from": "late worker"}}'
""")
    request_id = api.submit_ok(MODEL, {})
    worker = run_worker(server, [script], "--wait", "1", "--claim-timeout", "1")
    wait_done(api, request_id, "running")

    worker.signal(signal.SIGSTOP)
    try:
        wait_done(api, request_id, "pending", timeout=10)
        other = api.claim_ok(MODEL)
        assert other["request_id"] == request_id
        go.touch()
    finally:
        worker.signal(signal.SIGCONT)

    wait_for(lambda: any("another claim" in line for line in worker.lines), 10,
             f"the worker to log the lost claim; log:\n{worker.log()}")
    done = api.worker_call("complete", MODEL, request_id, other["claim_id"],
                           outputs={"from": "new owner"})
    assert done.status == 200, done
    assert api.status_ok(request_id, MODEL)["outputs"] == {"from": "new owner"}


# ---------------------------------------------------------------------------
# Concurrency, usage and the example


def test_concurrency_runs_jobs_at_once(server, api, tmp_path, run_worker):
    started = tmp_path / "started"
    started.mkdir()
    script = write_script(tmp_path, "pair.sh", f"""
cat >/dev/null
touch "{started}/$INFERQ_REQUEST_ID"
n=0
while [ "$(ls "{started}" | wc -l)" -lt 2 ]; do
	n=$((n + 1))
	[ "$n" -gt 400 ] && {{ echo "the other job never started" >&2; exit 9; }}
	sleep 0.05
done
echo '{{"together": true}}'
""")
    ids = [api.submit_ok(MODEL, {"n": n}) for n in range(2)]
    run_worker(server, [script], "--wait", "1", "--concurrency", "2")

    for request_id in ids:
        body = wait_done(api, request_id, "done", timeout=30)
        assert body["outputs"] == {"together": True}


def test_usage_errors(server, tmp_path):
    env = cli_env(server_url(server), INFERQ_API_KEY=server.key)

    def run(*args):
        return subprocess.run([str(INFERQ_BIN), "worker", *args], cwd=tmp_path, env=env,
                              stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=30)

    help_text = run("--help")
    assert help_text.returncode == 0
    for option in ("--concurrency N", "--claim-timeout S", "--timeout S", "--grace S",
                   "--wait S", "--worker NAME"):
        assert option in help_text.stdout
    assert "seconds" in help_text.stdout

    cases = [
        (["--", "true"], "missing --model"),
        (["--model", MODEL], "missing the command"),
        (["--model", MODEL, "--concurrency", "0", "--", "true"], "--concurrency"),
        (["--model", MODEL, "--wait", "61", "--", "true"], "--wait"),
        (["--model", MODEL, "--claim-timeout", "1.5", "--", "true"], "--claim-timeout"),
        (["--model", MODEL, "--claim-timeout", "1.5s", "--", "true"], "--claim-timeout"),
        (["--model", MODEL, "--claim-timeout", "25h", "--", "true"], "--claim-timeout"),
        (["--model", MODEL, "--", "./no-such-script.sh"], "no-such-script.sh"),
        (["--model", MODEL, "--colour", "--", "true"], "unknown option"),
    ]
    for args, message in cases:
        proc = run(*args)
        assert proc.returncode == 2, (args, proc.stderr)
        assert message in proc.stderr, (args, proc.stderr)


def test_bad_key_stops_worker(server, tmp_path):
    env = cli_env(server_url(server), INFERQ_API_KEY="not-a-key")
    proc = subprocess.run([str(INFERQ_BIN), "worker", "--model", MODEL, "--", "true"],
                          cwd=tmp_path, env=env, stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=30)
    assert proc.returncode == 1, proc.stderr
    assert "claim failed, stopping" in proc.stderr


def png_size(path):
    data = Path(path).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])


def test_render_image_example(server, api, tmp_path, run_worker):
    renders = tmp_path / "renders"
    request_id = api.submit_ok(MODEL, {"prompt": "a red bicycle", "width": 96, "height": 64})
    worker = run_worker(server, [REPO / "examples" / "render-image.sh"], "--wait", "1",
                        INFERQ_OUTPUT_DIR=str(renders))

    body = wait_done(api, request_id, "done", timeout=60)
    outputs = body["outputs"]
    assert outputs["width"] == 96
    assert outputs["height"] == 64
    assert Path(outputs["path"]) == renders / f"{request_id}.png"
    assert png_size(outputs["path"]) == (96, 64)
    assert body["info"]["progress"] == 1.0

    bad_id = api.submit_ok(MODEL, {"prompt": "x", "width": 5})
    error = wait_done(api, bad_id, "failed", timeout=60)["error"]
    assert "exit status 2" in error
    assert 'invalid "width" 5' in error
    assert worker.running()
