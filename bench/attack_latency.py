#!/usr/bin/env python3
"""Measure a normal client's latency while hostile clients attack the server.

The script starts its own inferq server (a temporary data directory, 127.0.0.1, port 0) and
runs one normal client on one keep-alive connection. The client repeats a fixed cycle of four
requests: submit a job, read its status, claim it, and complete it. Every request's latency
is recorded, and each phase reports p50, p90, p99 and max latency and requests per second.

Each scenario runs as pairs of phases, A then B: A without an attack and B with the
scenario's attacker running in a separate process. A machine with 2 cores is noisy, so every
scenario runs at least 3 pairs and the report gives the median of the pairs and the median of
the per-pair ratios attacked/baseline. The "baseline" scenario runs no attacker in B either,
so its ratios show the noise between two identical phases.

Attackers (all on 127.0.0.1, each bounded in connections, requests and time, and stopped at
the end of its phase):

- slowloris: 500 connections that send one header byte every 0.5 s and never finish.
- idle: 5,000 keep-alive connections that make one request each and then stay idle.
- unread_pipeline: 20 connections that pipeline status requests for a job with a 256 KiB
  payload and never read a response.
- flood: 4 connections that pipeline metrics requests 100 at a time as fast as they can.

The attacker and the server share the machine's cores with the normal client, so the report
gives the CPU time that each of them used during the phase (resource.getrusage for the
client and the attacker, /proc/PID/stat for the server).

This is a benchmark, not a test: it exits 0 whatever the figures, and non-zero only when it
cannot run (the server does not start, an attacker fails to set up).

Run: python3 bench/attack_latency.py [--binary build/inferq] [--seconds 15] [--pairs 3] [--json]
Only the Python 3 standard library is used.
"""

import argparse
import json
import os
import re
import resource
import selectors
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

MODEL = "bench/latency"
ATTACK_MODEL = "bench/attack"

SCENARIOS = ["baseline", "slowloris", "idle", "unread_pipeline", "flood"]

SLOWLORIS_CONNECTIONS = 500
SLOWLORIS_INTERVAL = 0.5
IDLE_CONNECTIONS = 5000
UNREAD_CONNECTIONS = 20
UNREAD_PAYLOAD_BYTES = 256 * 1024
# NOTE: on loopback the socket buffers grow to several MiB, so each connection usually reaches
# this cap before its send buffer fills. The server stops reading long before that.
UNREAD_MAX_REQUESTS = 20000
FLOOD_CONNECTIONS = 4
FLOOD_WINDOW = 100

# A request of the normal client that takes longer than this is counted as a stall and the
# connection is opened again.
STALL_SECONDS = 10.0
START_TIMEOUT = 10.0
ATTACKER_SETUP_TIMEOUT = 60.0
# How long an attacker runs at most beyond its phase when the parent does not stop it.
ATTACKER_GRACE = 60.0
SETTLE_TIMEOUT = 15.0
WARMUP_SECONDS = 2.0

LISTEN_RE = re.compile(r"listening on 127\.0\.0\.1:([1-9][0-9]*)")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------------------
# HTTP on a raw socket.


def build_request(method, target, key, body=None):
    """Return the bytes of one HTTP/1.1 request with a Bearer key and an optional JSON body."""
    lines = [f"{method} {target} HTTP/1.1", "Host: 127.0.0.1", f"Authorization: Bearer {key}"]
    data = b""
    if body is not None:
        data = json.dumps(body, separators=(",", ":")).encode()
        lines.append("Content-Type: application/json")
        lines.append(f"Content-Length: {len(data)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + data


class Connection:
    """A blocking keep-alive HTTP/1.1 connection that reads Content-Length responses."""

    def __init__(self, port, timeout):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def close(self):
        self.sock.close()

    def request(self, data):
        """Send one request and return (status, body bytes) of its response."""
        self.sock.sendall(data)
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head, _, rest = self.buf.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
        while len(rest) < length:
            self.buf = rest
            self._fill()
            rest = self.buf
        self.buf = rest[length:]
        return status, rest[:length]

    def _fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        self.buf += chunk


# ---------------------------------------------------------------------------
# Statistics.


def percentile(sorted_values, fraction):
    """Return the nearest-rank percentile of an already sorted list."""
    if not sorted_values:
        return float("nan")
    rank = max(1, int(round(fraction * len(sorted_values) + 0.5)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def summarize(latencies, seconds):
    """Return p50, p90, p99 and max in milliseconds and requests per second."""
    values = sorted(latencies)
    return {
        "requests": len(values),
        "p50_ms": percentile(values, 0.50) * 1000,
        "p90_ms": percentile(values, 0.90) * 1000,
        "p99_ms": percentile(values, 0.99) * 1000,
        "max_ms": (values[-1] if values else float("nan")) * 1000,
        "requests_per_s": len(values) / seconds,
    }


def cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# ---------------------------------------------------------------------------
# The normal client.


def run_client(port, key, seconds):
    """Run the submit, status, claim, complete cycle for `seconds` and return its figures.

    A request that gets no response within STALL_SECONDS, or whose connection closes, is
    counted as a stall. The client then opens a new connection and starts the next cycle.
    """
    latencies = []
    per_route = {"submit": [], "status": [], "claim": [], "complete": []}
    unexpected = []
    stalls = []
    claim_request = build_request("POST", "/v1/queue/claim", key, {"model": MODEL})
    conn = Connection(port, STALL_SECONDS)
    cpu_before = cpu_seconds()
    started = time.perf_counter()
    deadline = started + seconds
    cycle = 0
    slowest = [0.0, 0.0]  # latency and start time, in seconds into the phase, of the slowest

    def call(route, data, expected):
        t0 = time.perf_counter()
        status, body = conn.request(data)
        elapsed = time.perf_counter() - t0
        if elapsed > slowest[0]:
            slowest[:] = [elapsed, t0 - started]
        latencies.append(elapsed)
        per_route[route].append(elapsed)
        if status != expected:
            unexpected.append({"route": route, "status": status, "body": body[:200].decode()})
            return None
        return json.loads(body)

    while time.perf_counter() < deadline:
        cycle += 1
        route = "submit"
        try:
            submit = build_request("POST", "/v1/queue/submit", key,
                                   {"model": MODEL, "payload": {"prompt": "hello", "n": cycle}})
            reply = call("submit", submit, 200)
            if reply is None:
                continue
            job = reply["request_id"]
            query = urllib.parse.urlencode({"request_id": job, "model": MODEL})
            route = "status"
            call("status", build_request("GET", f"/v1/queue/status?{query}", key), 200)
            route = "claim"
            claimed = call("claim", claim_request, 200)
            if claimed is None:
                continue
            route = "complete"
            call("complete", build_request("POST", "/v1/queue/complete", key, {
                "model": MODEL, "request_id": claimed["request_id"],
                "claim_id": claimed["claim_id"], "outputs": {"text": "ok"}}), 200)
        except (OSError, ConnectionError) as e:
            stalls.append({"route": route, "error": repr(e),
                           "at_s": round(time.perf_counter() - started, 3)})
            conn.close()
            conn = Connection(port, STALL_SECONDS)

    elapsed = time.perf_counter() - started
    client_cpu = cpu_seconds() - cpu_before
    conn.close()
    result = summarize(latencies, elapsed)
    result["seconds"] = elapsed
    result["max_at_s"] = slowest[1]
    result["client_cpu_s"] = client_cpu
    result["route_p50_ms"] = {name: percentile(sorted(values), 0.5) * 1000
                              for name, values in per_route.items()}
    result["route_p99_ms"] = {name: percentile(sorted(values), 0.99) * 1000
                              for name, values in per_route.items()}
    result["unexpected"] = unexpected[:10]
    result["unexpected_count"] = len(unexpected)
    result["stalls"] = stalls
    return result


# ---------------------------------------------------------------------------
# Attackers. Each runs in its own process (`--attacker NAME`), so the normal client does not
# share a Python interpreter with it and its CPU time can be measured with getrusage.


def connect_nonblocking(port, rcvbuf=None):
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(10)
    sock.connect(("127.0.0.1", port))
    sock.setblocking(False)
    return sock


class Slowloris:
    """Connections that send a request head one byte at a time and never finish it."""

    def __init__(self, port, key, sel):
        self.port = port
        self.sel = sel
        self.conns = []
        self.stats = {"connections": SLOWLORIS_CONNECTIONS, "bytes_sent": 0, "reopened": 0,
                      "responses": 0}
        self.turn = 0
        self.slices = 10
        self.max_reopen = SLOWLORIS_CONNECTIONS * 10

    def _open(self):
        sock = connect_nonblocking(self.port)
        sock.send(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        self.sel.register(sock, selectors.EVENT_READ, self)
        return sock

    def setup(self):
        self.conns = [self._open() for _ in range(SLOWLORIS_CONNECTIONS)]

    def tick_interval(self):
        return SLOWLORIS_INTERVAL / self.slices

    def tick(self):
        # One slice of the connections sends a byte on each tick, so every connection sends
        # one byte per SLOWLORIS_INTERVAL and the bytes are spread evenly over it.
        for i in range(self.turn, len(self.conns), self.slices):
            try:
                self.stats["bytes_sent"] += self.conns[i].send(b"a")
            except OSError:
                self._reopen(i)
        self.turn = (self.turn + 1) % self.slices

    def readable(self, sock):
        # The server sent a response (408 after --request-timeout) or closed the connection.
        self.stats["responses"] += 1
        self._reopen(self.conns.index(sock))

    def _reopen(self, i):
        self.sel.unregister(self.conns[i])
        self.conns[i].close()
        if self.stats["reopened"] < self.max_reopen:
            self.stats["reopened"] += 1
            self.conns[i] = self._open()
        else:
            self.conns[i] = _ClosedSocket()

    def teardown(self):
        for sock in self.conns:
            sock.close()


class _ClosedSocket:
    def send(self, data):
        return 0

    def close(self):
        pass


class Idle:
    """Keep-alive connections that make one request each and then send nothing."""

    def __init__(self, port, key, sel):
        self.port = port
        self.sel = sel
        self.request = build_request("GET", "/healthz", key)
        self.conns = []
        self.stats = {"connections": IDLE_CONNECTIONS, "closed_by_server": 0}

    def setup(self):
        batch = 500
        for start in range(0, IDLE_CONNECTIONS, batch):
            socks = [socket.create_connection(("127.0.0.1", self.port), timeout=30)
                     for _ in range(min(batch, IDLE_CONNECTIONS - start))]
            for sock in socks:
                sock.sendall(self.request)
            for sock in socks:
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = sock.recv(4096)
                    if not chunk:
                        raise RuntimeError("idle attacker: the server closed a connection "
                                           "before answering its first request")
                    data += chunk
                if not data.startswith(b"HTTP/1.1 200"):
                    raise RuntimeError(f"idle attacker: expected 200 to the first request, "
                                       f"got {data[:60]!r}")
                sock.setblocking(False)
                self.sel.register(sock, selectors.EVENT_READ, self)
            self.conns.extend(socks)

    def tick_interval(self):
        return 1.0

    def tick(self):
        pass

    def readable(self, sock):
        self.stats["closed_by_server"] += 1
        self.sel.unregister(sock)

    def teardown(self):
        for sock in self.conns:
            sock.close()


class UnreadPipeline:
    """Connections that pipeline requests for large responses and never read them."""

    def __init__(self, port, key, sel):
        self.port = port
        self.key = key
        self.conns = []
        self.pending = []
        self.sent = []
        self.request = b""
        self.stats = {"connections": UNREAD_CONNECTIONS, "requests_sent": 0}

    def setup(self):
        conn = Connection(self.port, 30)
        status, body = conn.request(build_request("POST", "/v1/queue/submit", self.key, {
            "model": ATTACK_MODEL, "payload": {"blob": "y" * UNREAD_PAYLOAD_BYTES}}))
        conn.close()
        if status != 200:
            raise RuntimeError(f"unread_pipeline attacker: submit returned status {status}: "
                               f"{body!r}")
        query = urllib.parse.urlencode({"request_id": json.loads(body)["request_id"],
                                        "model": ATTACK_MODEL})
        self.request = build_request("GET", f"/v1/queue/status?{query}", self.key)
        self.conns = [connect_nonblocking(self.port, rcvbuf=4096)
                      for _ in range(UNREAD_CONNECTIONS)]
        self.pending = [b""] * UNREAD_CONNECTIONS
        self.sent = [0] * UNREAD_CONNECTIONS

    def tick_interval(self):
        return 0.05

    def tick(self):
        # Push requests until the socket's send buffer is full, that is until the server
        # stops reading, and try again on the next tick.
        for i, sock in enumerate(self.conns):
            while True:
                if not self.pending[i]:
                    if self.sent[i] >= UNREAD_MAX_REQUESTS:
                        break
                    self.pending[i] = self.request
                    self.sent[i] += 1
                    self.stats["requests_sent"] += 1
                try:
                    n = sock.send(self.pending[i])
                except (BlockingIOError, InterruptedError):
                    break
                except OSError:
                    self.sent[i] = UNREAD_MAX_REQUESTS
                    self.pending[i] = b""
                    break
                self.pending[i] = self.pending[i][n:]

    def readable(self, sock):
        pass

    def teardown(self):
        for sock in self.conns:
            sock.close()


class Flood:
    """Connections that pipeline FLOOD_WINDOW metrics requests, read all responses, repeat."""

    MARK = b"HTTP/1.1 "

    def __init__(self, port, key, sel):
        self.port = port
        self.sel = sel
        self.batch = build_request("GET", f"/v1/queue/metrics?model={ATTACK_MODEL}",
                                   key) * FLOOD_WINDOW
        self.state = {}
        self.stats = {"connections": FLOOD_CONNECTIONS, "responses": 0, "responses_200": 0}

    def setup(self):
        for _ in range(FLOOD_CONNECTIONS):
            sock = connect_nonblocking(self.port)
            self.state[sock] = {"out": b"", "waiting": 0, "tail": b""}
            self.sel.register(sock, selectors.EVENT_READ, self)
            self._send_batch(sock)

    def _send_batch(self, sock):
        st = self.state[sock]
        st["out"] += self.batch
        st["waiting"] += FLOOD_WINDOW
        self._flush(sock)

    def _flush(self, sock):
        st = self.state[sock]
        while st["out"]:
            try:
                n = sock.send(st["out"])
            except (BlockingIOError, InterruptedError):
                break
            st["out"] = st["out"][n:]
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if st["out"] else 0)
        self.sel.modify(sock, events, self)

    def tick_interval(self):
        return 0.05

    def tick(self):
        for sock in self.state:
            if self.state[sock]["out"]:
                self._flush(sock)

    def readable(self, sock):
        st = self.state[sock]
        try:
            chunk = sock.recv(262144)
        except (BlockingIOError, InterruptedError):
            return
        if not chunk:
            raise RuntimeError("flood attacker: the server closed a connection")
        # The tail is one byte shorter than the mark, so no mark is counted twice.
        data = st["tail"] + chunk
        got = data.count(self.MARK)
        self.stats["responses"] += got
        self.stats["responses_200"] += data.count(b"HTTP/1.1 200 ")
        st["tail"] = data[-(len(self.MARK) - 1):]
        st["waiting"] -= got
        if st["waiting"] <= 0:
            self._send_batch(sock)

    def writable(self, sock):
        self._flush(sock)

    def teardown(self):
        for sock in self.state:
            sock.close()


ATTACKERS = {"slowloris": Slowloris, "idle": Idle, "unread_pipeline": UnreadPipeline,
             "flood": Flood}


def attacker_main(name, port, key_file, max_seconds):
    """Run one attacker until stdin closes or max_seconds pass; print its figures as JSON.

    Protocol with the parent: one line `ready` on stdout once the attack is set up, then one
    JSON line with the figures after stdin reached end of file.
    """
    key = Path(key_file).read_text().strip()
    sel = selectors.DefaultSelector()
    attack = ATTACKERS[name](port, key, sel)
    hard_deadline = time.monotonic() + max_seconds
    setup_started = time.monotonic()
    attack.setup()
    setup_seconds = time.monotonic() - setup_started
    stdin = sys.stdin.buffer
    sel.register(stdin, selectors.EVENT_READ, None)
    print("ready", flush=True)

    cpu_before = cpu_seconds()
    started = time.monotonic()
    next_tick = started
    stopped_by = "time limit"
    while time.monotonic() < hard_deadline:
        now = time.monotonic()
        if now >= next_tick:
            attack.tick()
            next_tick = now + attack.tick_interval()
        events = sel.select(max(0.0, next_tick - time.monotonic()))
        stop = False
        for event_key, mask in events:
            if event_key.data is None:
                if not os.read(stdin.fileno(), 4096):
                    stop = True
                continue
            if mask & selectors.EVENT_READ:
                attack.readable(event_key.fileobj)
            if mask & selectors.EVENT_WRITE:
                attack.writable(event_key.fileobj)
        if stop:
            stopped_by = "parent"
            break
    attack_seconds = time.monotonic() - started
    attack_cpu = cpu_seconds() - cpu_before
    attack.teardown()
    figures = dict(attack.stats)
    figures.update({"setup_s": setup_seconds, "attack_s": attack_seconds,
                    "attacker_cpu_s": attack_cpu, "stopped_by": stopped_by})
    print(json.dumps(figures), flush=True)


# ---------------------------------------------------------------------------
# The server and the phases.


class Server:
    """An inferq server in a temporary directory, logging to a file there."""

    def __init__(self, binary, root):
        self.data_dir = root / "data"
        self.log_path = root / "server.log"
        self.log_file = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [str(binary), "serve", "--listen", "127.0.0.1:0", "--data-dir", str(self.data_dir)],
            stdin=subprocess.DEVNULL, stdout=self.log_file, stderr=subprocess.STDOUT)
        self.port = self._wait_port()
        self.key_file = self.data_dir / "admin.key"
        self.key = self.key_file.read_text().strip()

    def _wait_port(self):
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            match = LISTEN_RE.search(self.log_path.read_text(errors="replace"))
            if match:
                return int(match.group(1))
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        sys.exit(f"inferq serve did not log 'listening on 127.0.0.1:PORT' within "
                 f"{START_TIMEOUT:.0f} s; its log:\n{self.log_path.read_text(errors='replace')}")

    def cpu_seconds(self):
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        # Fields 14 and 15 of /proc/PID/stat (utime, stime) are the 12th and 13th after ")".
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS

    def open_fds(self):
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))

    def rss_bytes(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        return 0

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log_file.close()


class Attacker:
    """A child process running `attack_latency.py --attacker NAME`."""

    def __init__(self, name, server, seconds):
        self.name = name
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--attacker", name,
             "--port", str(server.port), "--key-file", str(server.key_file),
             "--max-seconds", str(seconds + ATTACKER_GRACE)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        ready = sel.select(ATTACKER_SETUP_TIMEOUT)
        sel.close()
        line = self.proc.stdout.readline() if ready else b""
        if line.strip() != b"ready":
            self.proc.kill()
            self.proc.wait()
            raise RuntimeError(f"attacker {name} did not become ready within "
                               f"{ATTACKER_SETUP_TIMEOUT:.0f} s (got {line!r}); see its stderr")

    def stop(self):
        """Close the attacker's stdin, wait for it and return its figures."""
        try:
            out, _ = self.proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise RuntimeError(f"attacker {self.name} did not stop within 30 s")
        if self.proc.returncode != 0:
            raise RuntimeError(f"attacker {self.name} exited with status {self.proc.returncode}")
        return json.loads(out.decode().strip().splitlines()[-1])


def settle(server, baseline_fds):
    """Wait until the server has closed the previous phase's connections, then a little more.

    Returns the seconds waited and the server's open file count at the end.
    """
    started = time.monotonic()
    while time.monotonic() - started < SETTLE_TIMEOUT:
        fds = server.open_fds()
        if fds <= baseline_fds + 2:
            break
        time.sleep(0.1)
    time.sleep(0.5)
    return time.monotonic() - started, server.open_fds()


def run_phase(server, scenario, attacked, seconds, baseline_fds):
    settle_s, fds_before = settle(server, baseline_fds)
    attacker = None
    if attacked and scenario != "baseline":
        attacker = Attacker(scenario, server, seconds)
    server_cpu_before = server.cpu_seconds()
    result = run_client(server.port, server.key, seconds)
    # Taken at the end of the phase, while the attacker still runs.
    result["server_cpu_s"] = server.cpu_seconds() - server_cpu_before
    result["server_rss_bytes"] = server.rss_bytes()
    result["server_open_files"] = server.open_fds()
    result["settle_s"] = settle_s
    result["open_files_before"] = fds_before
    if attacker is not None:
        result["attacker"] = attacker.stop()
    return result


def median_of(phases, field):
    return statistics.median(phase[field] for phase in phases)


def compare(pairs):
    """Return the medians over the pairs and the median per-pair ratios attacked/baseline."""
    summary = {}
    for side in ("baseline", "attacked"):
        phases = [pair[side] for pair in pairs]
        summary[side] = {field: median_of(phases, field)
                         for field in ("p50_ms", "p90_ms", "p99_ms", "max_ms", "requests_per_s")}
        summary[side]["cpu_cores"] = {
            "client": median_of(phases, "client_cpu_s") / median_of(phases, "seconds"),
            "server": median_of(phases, "server_cpu_s") / median_of(phases, "seconds"),
        }
        attacker_cpu = [p["attacker"]["attacker_cpu_s"] / p["attacker"]["attack_s"]
                        for p in phases if "attacker" in p]
        summary[side]["cpu_cores"]["attacker"] = (statistics.median(attacker_cpu)
                                                  if attacker_cpu else 0.0)
        summary[side]["stalls"] = sum(len(p["stalls"]) for p in phases)
        summary[side]["unexpected"] = sum(p["unexpected_count"] for p in phases)
    ratios = {}
    for field in ("p50_ms", "p99_ms", "requests_per_s"):
        values = [pair["attacked"][field] / pair["baseline"][field] for pair in pairs]
        ratios[field] = {"median": statistics.median(values), "min": min(values),
                         "max": max(values)}
    summary["ratio"] = ratios
    return summary


def machine_info(binary):
    model = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_kib = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    version = subprocess.run([str(binary), "version"], capture_output=True, text=True,
                             check=False).stdout.strip()
    return {"nproc": os.cpu_count(), "cpu_model": model,
            "memory_gib": round(mem_kib / 1024 / 1024, 1), "inferq_version": version,
            "python": sys.version.split()[0],
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}


def raise_fd_limit(needed):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(hard, needed)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        sys.exit(f"this benchmark needs {needed} open files (the idle attack opens "
                 f"{IDLE_CONNECTIONS} connections and the server takes each), but the "
                 f"RLIMIT_NOFILE hard limit is {hard}; raise it with `ulimit -Hn {needed}` as root")


def log(message):
    print(message, file=sys.stderr, flush=True)


def format_table(results):
    lines = [
        "| scenario | p50 ms base / attacked | p99 ms base / attacked | max ms base / attacked "
        "| req/s base / attacked | p50 ratio | p99 ratio | req/s ratio "
        "| CPU cores: server, client, attacker (attacked) | stalls |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, entry in results["scenarios"].items():
        s = entry["summary"]
        base, hit, ratio = s["baseline"], s["attacked"], s["ratio"]
        cores = hit["cpu_cores"]

        def span(field):
            r = ratio[field]
            return f"{r['median']:.2f} ({r['min']:.2f}–{r['max']:.2f})"

        lines.append(
            f"| {name} | {base['p50_ms']:.2f} / {hit['p50_ms']:.2f} "
            f"| {base['p99_ms']:.2f} / {hit['p99_ms']:.2f} "
            f"| {base['max_ms']:.1f} / {hit['max_ms']:.1f} "
            f"| {base['requests_per_s']:.0f} / {hit['requests_per_s']:.0f} "
            f"| {span('p50_ms')} | {span('p99_ms')} | {span('requests_per_s')} "
            f"| {cores['server']:.2f}, {cores['client']:.2f}, {cores['attacker']:.2f} "
            f"| {base['stalls'] + hit['stalls']} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(
        description="Measure a normal client's latency while hostile clients attack inferq.")
    parser.add_argument("--binary", default=str(Path(__file__).resolve().parents[1] / "build" /
                                                "inferq"),
                        help="inferq binary to run (default build/inferq)")
    parser.add_argument("--seconds", type=float, default=15.0,
                        help="length of each measured phase in seconds (default 15)")
    parser.add_argument("--pairs", type=int, default=3,
                        help="baseline/attacked pairs per scenario (default 3)")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS),
                        help=f"comma-separated scenarios to run (default {','.join(SCENARIOS)})")
    parser.add_argument("--json", action="store_true",
                        help="print the full results as JSON instead of a Markdown table")
    parser.add_argument("--attacker", choices=sorted(ATTACKERS), help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--key-file", help=argparse.SUPPRESS)
    parser.add_argument("--max-seconds", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()

    raise_fd_limit(IDLE_CONNECTIONS + 1000)
    if args.attacker:
        attacker_main(args.attacker, args.port, args.key_file, args.max_seconds)
        return

    binary = Path(args.binary)
    if not (binary.is_file() and os.access(binary, os.X_OK)):
        parser.error(f"--binary {binary}: no executable file there; run `make` first or pass "
                     f"the path of an inferq binary")
    if not 1.0 <= args.seconds <= 600.0:
        parser.error(f"--seconds {args.seconds}: must be from 1 to 600")
    if not 1 <= args.pairs <= 20:
        parser.error(f"--pairs {args.pairs}: must be from 1 to 20 (3 or more for a report)")
    scenarios = [name.strip() for name in args.scenarios.split(",") if name.strip()]
    unknown = [name for name in scenarios if name not in SCENARIOS]
    if unknown or not scenarios:
        parser.error(f"--scenarios {args.scenarios}: unknown scenario {unknown}; "
                     f"choose from {','.join(SCENARIOS)}")

    results = {"machine": machine_info(binary), "command": " ".join(sys.argv),
               "seconds": args.seconds, "pairs": args.pairs, "scenarios": {}}
    root = Path(tempfile.mkdtemp(prefix="inferq-attack-bench-"))
    server = Server(binary, root)
    try:
        log(f"server on 127.0.0.1:{server.port}, data in {server.data_dir}")
        run_client(server.port, server.key, WARMUP_SECONDS)
        baseline_fds = server.open_fds()
        for name in scenarios:
            pairs = []
            for index in range(args.pairs):
                pair = {}
                for side, attacked in (("baseline", False), ("attacked", True)):
                    phase = run_phase(server, name, attacked, args.seconds, baseline_fds)
                    pair[side] = phase
                    log(f"{name} pair {index + 1} {side}: p50 {phase['p50_ms']:.2f} ms, "
                        f"p99 {phase['p99_ms']:.2f} ms, max {phase['max_ms']:.1f} ms, "
                        f"{phase['requests_per_s']:.0f} req/s, stalls {len(phase['stalls'])}, "
                        f"server CPU {phase['server_cpu_s']:.1f} s, "
                        f"route p50 ms {json.dumps(phase['route_p50_ms'])}"
                        + (f", attacker {json.dumps(phase['attacker'])}"
                           if "attacker" in phase else ""))
                pairs.append(pair)
            results["scenarios"][name] = {"pairs": pairs, "summary": compare(pairs)}
        results["server_log_warnings"] = [
            line for line in server.log_path.read_text(errors="replace").splitlines()
            if " warn " in line.lower() or " error " in line.lower()][:50]
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)

    if args.json:
        print(json.dumps(results, indent=2))
    else:
        m = results["machine"]
        print(f"{m['inferq_version']}, {m['nproc']} x {m['cpu_model']}, {m['memory_gib']} GiB, "
              f"{m['date']}; {args.pairs} pairs of {args.seconds:g} s per scenario\n")
        print(format_table(results))


if __name__ == "__main__":
    main()
