"""The `inferq` client subcommands against a real server: output, --json, exit codes, payload
sources, key resolution, help and the progress bar of `wait`.

Each test runs the CLI as a subprocess in its own temp dir, so the default key file
./inferq-data/admin.key exists only where a test creates it.
"""

import os
import re
import subprocess
import threading
import time

import pytest

from cli_support import (RecordingServer, Worker, closed_port, cli_env, describe, run_cli,
                         server_url)
from support import INFERQ_BIN, UNKNOWN_ID, UUID7_RE, compact, raw_member

MODEL = "cli/test"


@pytest.fixture
def server(start_server, tmp_path):
    """The server, with its data dir where the CLI finds the admin key: ./inferq-data."""
    return start_server(data_dir=tmp_path / "inferq-data")


@pytest.fixture
def cli(server, tmp_path):
    """Return run(*args, **kwargs) that runs the CLI against the default server in tmp_path."""

    def run(*args, **kwargs):
        kwargs.setdefault("url", server_url(server))
        return run_cli(args, tmp_path, **kwargs)

    return run


def submit_id(cli, model=MODEL, *args):
    proc = cli("submit", "--model", model, *args)
    assert proc.returncode == 0, describe(proc)
    job_id = proc.stdout.strip()
    assert UUID7_RE.match(job_id), f"submit did not print a request id: {proc.stdout!r}"
    return job_id


# ---------------------------------------------------------------------------
# Commands and their output


def test_submit_prints_request_id(cli, api):
    job_id = submit_id(cli, MODEL, "--payload", '{"big": 123456789012345678901234567890}',
                       "--priority", "5", "--info", '{"tag":"x"}')
    body = api.status_ok(job_id, MODEL)
    assert body["status"] == "pending"
    assert body["priority"] == 5
    assert body["info"] == {"tag": "x"}
    raw = api.status(job_id, MODEL).raw
    assert raw_member(raw, "inputs") == b'{"big": 123456789012345678901234567890}'


def test_submit_json_is_server_response(cli, api):
    proc = cli("submit", "--model", MODEL, "--json")
    assert proc.returncode == 0, describe(proc)
    body = api.status_ok(raw_member(proc.stdout.encode(), "request_id").decode().strip('"'),
                         MODEL)
    assert body["status"] == "pending"
    assert set(re.findall(r'"(\w+)":', proc.stdout)) >= {"requestId", "request_id"}
    assert proc.stdout.endswith("}\n")


def test_status_json_equals_server(cli, api):
    job_id = submit_id(cli, MODEL, "--payload", '{"x": 1e400, "f": 1.0}')
    proc = cli("status", job_id, "--model", MODEL, "--json")
    assert proc.returncode == 0, describe(proc)
    assert proc.stdout.encode() == api.status(job_id, MODEL).raw + b"\n"


def test_status_human_lines(cli, api):
    job_id = submit_id(cli, MODEL, "--payload", '{"p": 1}')
    proc = cli("status", job_id, "--model", MODEL)
    assert proc.returncode == 0, describe(proc)
    fields = dict(line.split(None, 1) for line in proc.stdout.splitlines())
    assert fields["request_id"] == job_id
    assert fields["model"] == MODEL
    assert fields["status"] == "pending"
    assert fields["priority"] == "0"
    assert fields["retries"] == "0"
    assert fields["inputs"] == '{"p": 1}'
    assert "outputs" not in fields


def test_metrics_and_clear(cli, api):
    for _ in range(3):
        submit_id(cli)
    api.claim_ok(MODEL)
    proc = cli("metrics", "--model", MODEL)
    assert proc.returncode == 0, describe(proc)
    assert proc.stdout == "waiting  2\nrunning  1\ntotal    3\n"
    proc = cli("metrics", "--model", MODEL, "--json")
    assert proc.stdout.encode() == api.metrics(MODEL).raw + b"\n"

    proc = cli("clear", "--model", MODEL)
    assert proc.returncode == 0, describe(proc)
    assert proc.stdout == f"canceled 2 pending jobs of {MODEL}\n"
    proc = cli("clear", "--model", MODEL, "--json")
    assert proc.returncode == 0, describe(proc)
    assert proc.stdout == '{"canceled_count":0}\n' or \
        compact(proc.stdout.strip()) == b'{"canceled_count":0}'
    assert api.metrics_ok(MODEL) == {"messages_waiting": 0, "messages_running": 1,
                                     "total_jobs": 1}


def test_cancel_pending_then_conflict(cli, api):
    job_id = submit_id(cli)
    proc = cli("cancel", job_id, "--model", MODEL)
    assert proc.returncode == 0, describe(proc)
    assert proc.stdout == f"canceled {job_id}\n"
    assert api.status_ok(job_id, MODEL)["status"] == "canceled"

    # The second cancel meets 409; --json prints the server's error body.
    proc = cli("cancel", job_id, "--model", MODEL, "--json")
    assert proc.returncode == 5, describe(proc)
    reply = api.post("/v1/queue/cancel", {"model": MODEL, "request_id": job_id})
    assert proc.stdout.encode() == reply.raw + b"\n"
    assert "inferq cancel:" in proc.stderr


def test_payload_from_file_and_stdin(cli, api, tmp_path):
    text = '{"n": 123456789012345678901234567890, "s": "caf\\u00e9", "e": 1E+2}'
    path = tmp_path / "payload.json"
    path.write_text(text)
    job_id = submit_id(cli, MODEL, "--payload", f"@{path}")
    assert raw_member(api.status(job_id, MODEL).raw, "inputs") == text.encode()

    proc = cli("submit", "--model", MODEL, "--payload", "-", stdin_text=text + "\n")
    assert proc.returncode == 0, describe(proc)
    job_id = proc.stdout.strip()
    assert raw_member(api.status(job_id, MODEL).raw, "inputs") == text.encode()


def test_payload_default_is_empty_object(cli, api):
    job_id = submit_id(cli)
    assert raw_member(api.status(job_id, MODEL).raw, "inputs") == b"{}"


# ---------------------------------------------------------------------------
# wait and submit --wait


def test_wait_done_prints_final_status(server, cli, api):
    job_id = submit_id(cli)
    worker = Worker(server, MODEL, [("complete", {"outputs": {"answer": 42}})])
    worker.start()
    proc = cli("wait", job_id, "--model", MODEL, "--json", "--timeout", "30")
    worker.finish()
    assert proc.returncode == 0, describe(proc)
    assert proc.stdout.encode() == api.status(job_id, MODEL).raw + b"\n"
    assert proc.stderr == "", "wait off a terminal must print nothing on stderr"


def test_wait_failed_job_exits_6(server, cli):
    job_id = submit_id(cli)
    worker = Worker(server, MODEL, [("fail", {"error": "model crashed"})])
    worker.start()
    proc = cli("wait", job_id, "--model", MODEL)
    worker.finish()
    assert proc.returncode == 6, describe(proc)
    assert "model crashed" in proc.stderr
    assert re.search(r"^status\s+failed$", proc.stdout, re.M), proc.stdout
    assert re.search(r"^error\s+model crashed$", proc.stdout, re.M), proc.stdout


def test_wait_canceled_job_exits_6(cli, api):
    job_id = submit_id(cli)
    assert cli("cancel", job_id, "--model", MODEL).returncode == 0
    proc = cli("wait", job_id, "--model", MODEL)
    assert proc.returncode == 6, describe(proc)
    assert "canceled" in proc.stderr


def test_wait_timeout_exits_7(cli):
    job_id = submit_id(cli)
    start = time.monotonic()
    proc = cli("wait", job_id, "--model", MODEL, "--timeout", "0.5")
    elapsed = time.monotonic() - start
    assert proc.returncode == 7, describe(proc)
    assert "timed out" in proc.stderr
    assert re.search(r"^status\s+pending$", proc.stdout, re.M), proc.stdout
    assert elapsed < 10, f"wait --timeout 0.5 took {elapsed:.1f} s"


def test_submit_wait_until_done(server, cli):
    worker = Worker(server, MODEL, [("complete", {"outputs": {"ok": True}})])
    worker.start()
    proc = cli("submit", "--model", MODEL, "--wait", "--timeout", "30")
    worker.finish()
    assert proc.returncode == 0, describe(proc)
    assert re.search(r"^status\s+done$", proc.stdout, re.M), proc.stdout
    assert re.search(r'^outputs\s+\{"ok": ?true\}$', proc.stdout, re.M), proc.stdout


def read_pty(master, chunks, stop):
    while not stop.is_set():
        try:
            data = os.read(master, 4096)
        except OSError:
            return
        if not data:
            return
        chunks.append(data)


def test_wait_progress_bar_on_terminal(server, cli, tmp_path):
    job_id = submit_id(cli)
    worker = Worker(server, MODEL, [("heartbeat", {"info": {"progress": 0.5}}),
                                    ("complete", {"outputs": {}})], delay=0.8)
    master, slave = os.openpty()
    chunks, stop = [], threading.Event()
    reader = threading.Thread(target=read_pty, args=(master, chunks, stop), daemon=True)
    reader.start()
    worker.start()
    try:
        proc = run_cli(["wait", job_id, "--model", MODEL], tmp_path, url=server_url(server),
                       stderr=slave)
    finally:
        os.close(slave)
        worker.finish()
        reader.join(5)
        stop.set()
        os.close(master)
    assert proc.returncode == 0, f"exit {proc.returncode}, stdout {proc.stdout!r}"
    screen = b"".join(chunks).decode()
    assert "\r[" in screen, f"no progress line redrawn with \\r: {screen!r}"
    assert " 50%" in screen, f"info.progress 0.5 not shown: {screen!r}"
    assert "running" in screen, screen
    assert re.search(r"\d+\.\d s", screen), f"no elapsed time: {screen!r}"
    assert screen.endswith("\r\x1b[K"), f"progress line not erased at the end: {screen!r}"
    assert re.search(r"^status\s+done$", proc.stdout, re.M), proc.stdout


# ---------------------------------------------------------------------------
# Exit codes


@pytest.mark.parametrize("args, message", [
    (["status", "--model", MODEL], "missing the request id"),
    (["submit"], "missing --model"),
    (["submit", "--model", MODEL, "--bogus"], "unknown option"),
    (["submit", "--model", MODEL, "--priority", "1.5"], "invalid --priority"),
    (["submit", "--model", MODEL, "--priority", "2147483648"], "invalid --priority"),
    (["submit", "--model", MODEL, "--timeout", "5"], "only with --wait"),
    (["wait", UNKNOWN_ID, "--model", MODEL, "--timeout", "-1"], "invalid --timeout"),
    (["status", UNKNOWN_ID, "extra", "--model", MODEL], "unexpected argument"),
    (["status", UNKNOWN_ID, "--model", MODEL, "--priority", "1"], "does not apply"),
    (["metrics", "--model"], "needs a value"),
    (["submit", "--model", MODEL, "--payload", "{bad"], "payload is not valid JSON"),
    (["submit", "--model", MODEL, "--payload", "[1]"], "JSON object"),
    (["submit", "--model", MODEL, "--payload", "@/nonexistent/payload.json"],
     "/nonexistent/payload.json"),
    (["submit", "--model", MODEL, "--server", "localhost:8080"], "http://"),
    (["sumbit", "--model", MODEL], 'unknown command "sumbit"; did you mean "submit"?'),
    (["wrker"], 'did you mean "worker"?'),
    (["serv"], 'did you mean "serve"?'),
    (["frobnicate"], 'unknown command "frobnicate"\nusage: inferq COMMAND'),
])
def test_usage_errors_exit_2(cli, args, message):
    proc = cli(*args)
    assert proc.returncode == 2, describe(proc)
    assert message in proc.stderr, describe(proc)
    assert proc.stdout == ""


def test_server_rejection_exits_2(cli):
    proc = cli("submit", "--model", "bad model!")
    assert proc.returncode == 2, describe(proc)
    assert "model" in proc.stderr


def test_connection_refused_exits_3(tmp_path):
    url = f"http://127.0.0.1:{closed_port()}"
    proc = run_cli(["metrics", "--model", MODEL], tmp_path, url=url)
    assert proc.returncode == 3, describe(proc)
    assert f"cannot reach {url}" in proc.stderr, proc.stderr
    assert proc.stdout == ""


def test_not_found_exits_4(cli):
    for command in ("status", "wait", "cancel"):
        proc = cli(command, UNKNOWN_ID, "--model", MODEL)
        assert proc.returncode == 4, f"{command}: {describe(proc)}"
        assert UNKNOWN_ID in proc.stderr or "no job" in proc.stderr, proc.stderr


def test_cancel_running_exits_5(cli, api):
    job_id = submit_id(cli)
    api.claim_ok(MODEL)
    proc = cli("cancel", job_id, "--model", MODEL)
    assert proc.returncode == 5, describe(proc)
    assert api.status_ok(job_id, MODEL)["status"] == "running"


def test_invalid_inferq_url_exits_2(tmp_path):
    proc = run_cli(["metrics", "--model", MODEL], tmp_path, url="127.0.0.1:8080")
    assert proc.returncode == 2, describe(proc)
    assert "INFERQ_URL" in proc.stderr


def test_server_option_overrides_env(server, tmp_path):
    proc = run_cli(["metrics", "--model", MODEL, "--server", server_url(server) + "/v1"],
                   tmp_path, url="not a url")
    assert proc.returncode == 0, describe(proc)
    assert proc.stdout.startswith("waiting  0\n")


# ---------------------------------------------------------------------------
# API key resolution


@pytest.fixture
def recorder():
    server = RecordingServer()
    yield server
    server.close()


def write_key(path, key):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(key + "\n")
    return path


def key_sent(recorder, tmp_path, extra_args=(), **variables):
    before = len(recorder.authorizations)
    proc = run_cli(["metrics", "--model", MODEL, *extra_args], tmp_path,
                   env=cli_env(recorder.url, **variables))
    assert proc.returncode == 0, describe(proc)
    assert len(recorder.authorizations) == before + 1
    return recorder.authorizations[-1]


def test_key_env_order(recorder, tmp_path):
    key_file = write_key(tmp_path / "given.key", "from-key-file")
    write_key(tmp_path / "inferq-data" / "admin.key", "from-default-file")
    both = {"INFERQ_API_KEY": "from-inferq-env", "TOGETHER_API_KEY": "from-together-env"}
    assert key_sent(recorder, tmp_path, ["--key-file", str(key_file)],
                    **both) == "Bearer from-inferq-env"
    assert key_sent(recorder, tmp_path, ["--key-file", str(key_file)],
                    TOGETHER_API_KEY="from-together-env") == "Bearer from-together-env"
    assert key_sent(recorder, tmp_path, ["--key-file", str(key_file)]) == "Bearer from-key-file"
    assert key_sent(recorder, tmp_path) == "Bearer from-default-file"


def test_key_file_missing(recorder, tmp_path):
    # No key anywhere: the request goes without Authorization.
    assert key_sent(recorder, tmp_path) is None
    # A missing --key-file does not matter when the environment has a key.
    missing = tmp_path / "absent.key"
    assert key_sent(recorder, tmp_path, ["--key-file", str(missing)],
                    INFERQ_API_KEY="env-key") == "Bearer env-key"
    # Without one, a missing --key-file is a usage error that names the file.
    proc = run_cli(["metrics", "--model", MODEL, "--key-file", str(missing)], tmp_path,
                   env=cli_env(recorder.url))
    assert proc.returncode == 2, describe(proc)
    assert str(missing) in proc.stderr


def test_key_env_with_newline_rejected(recorder, tmp_path):
    # A key pasted with its line end: nothing is sent, and the error names the variable.
    before = len(recorder.authorizations)
    proc = run_cli(["metrics", "--model", MODEL], tmp_path,
                   env=cli_env(recorder.url, INFERQ_API_KEY="iq_pasted\n"))
    assert proc.returncode == 2, describe(proc)
    assert "$INFERQ_API_KEY" in proc.stderr
    assert "newline" in proc.stderr
    assert len(recorder.authorizations) == before


def test_server_admin_key_accepted(server, tmp_path):
    write_key(tmp_path / "inferq-data" / "admin.key", server.key)
    proc = run_cli(["submit", "--model", MODEL], tmp_path, url=server_url(server))
    assert proc.returncode == 0, describe(proc)


# ---------------------------------------------------------------------------
# Help


@pytest.mark.parametrize("command", ["submit", "status", "wait", "cancel", "clear", "metrics"])
def test_help_of_every_command(command, tmp_path):
    proc = run_cli([command, "--help"], tmp_path)
    assert proc.returncode == 0, describe(proc)
    assert proc.stdout.startswith(f"usage: inferq {command} ")
    assert "--request-timeout S     seconds" in proc.stdout
    assert "exit codes" in proc.stdout
    if command in ("submit", "wait"):
        assert "--timeout S             " in proc.stdout
        assert "give up after S seconds" in proc.stdout


@pytest.mark.parametrize("command", ["submit", "serve", "worker", "keys", "bench", "jobs"])
def test_help_command_prints_command_help(command, tmp_path):
    proc = subprocess.run([str(INFERQ_BIN), "help", command], capture_output=True, text=True,
                          timeout=10)
    assert proc.returncode == 0, describe(proc)
    assert proc.stdout.startswith(f"usage: inferq {command} "), proc.stdout


def test_help_of_unknown_command(tmp_path):
    proc = subprocess.run([str(INFERQ_BIN), "help", "sumbit"], capture_output=True, text=True,
                          timeout=10)
    assert proc.returncode == 2, describe(proc)
    assert 'unknown command "sumbit"; did you mean "submit"?' in proc.stderr, proc.stderr


def test_top_help_lists_commands_and_exit_codes(tmp_path):
    proc = subprocess.run([str(INFERQ_BIN), "--help"], capture_output=True, text=True,
                          timeout=10)
    assert proc.returncode == 0
    for command in ("submit", "status", "wait", "cancel", "clear", "metrics"):
        assert re.search(rf"^  {command}\s", proc.stdout, re.M), proc.stdout
    for code in range(8):
        assert re.search(rf"^  {code}  ", proc.stdout, re.M), f"exit code {code} not listed"
