#!/usr/bin/env python3
"""Alternating runs of two or more inferq builds on one `inferq bench` scenario.

Each round runs every build once, in the order given, each against a server of its own: a
fresh data directory, 127.0.0.1 on a free port, --auth none, stopped after its run. Runs
alternate (A B A B ...) because the machine's speed drifts, so a change is judged by the
median of each build over the rounds, not by one run. Each run prints its rate, the p50 and
p99 latency, and the server's CPU time (from /proc/PID/stat) per request, job or hand-off.
The medians per build come last.

    bench/ab.py 5 lifecycle before=/tmp/inferq-before after=build/inferq \\
        -- -c 64 --workers 64 -d 3

The arguments after -- go to `inferq bench SCENARIO`; give -d or -n so that each run ends.

SPDX-License-Identifier: MIT
"""
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def cpu_seconds(pid):
    """User plus system CPU time of every thread of process pid, in seconds."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_listening(port, proc, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"the server exited with status {proc.returncode} before listening")
        try:
            socket.create_connection(("127.0.0.1", port), 0.1).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"the server did not listen on port {port} within {timeout:.0f} s")


def run_once(binary, scenario, extra):
    """One server and one bench run; returns (rate, unit, cpu µs per unit, p50 ms, p99 ms)."""
    data = tempfile.mkdtemp(prefix="inferq-ab-")
    port = free_port()
    server = subprocess.Popen([binary, "serve", "--data-dir", data, "--listen",
                               f"127.0.0.1:{port}", "--auth", "none"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_listening(port, server)
        before = cpu_seconds(server.pid)
        out = subprocess.run([binary, "bench", scenario, "--server", f"http://127.0.0.1:{port}",
                              "--json", *extra], capture_output=True, text=True)
        used = cpu_seconds(server.pid) - before
    finally:
        server.terminate()
        server.wait()
        shutil.rmtree(data, ignore_errors=True)
    if out.returncode != 0:
        sys.exit(f"inferq bench failed with status {out.returncode}: {out.stderr.strip()}")
    result = json.loads(out.stdout)
    units = result.get("units") or result["requests"]
    latency = result["latency_ms"]
    return (result["rate"], result["unit"], used * 1e6 / max(units, 1), latency["p50"],
            latency["p99"])


def main():
    args = sys.argv[1:]
    split = args.index("--") if "--" in args else len(args)
    head, extra = args[:split], args[split + 1:]
    if len(head) < 4 or not head[0].isdigit() or not all("=" in b for b in head[2:]):
        sys.exit("usage: bench/ab.py ROUNDS SCENARIO NAME=BINARY NAME=BINARY ... "
                 "[-- inferq bench options]")
    rounds, scenario = int(head[0]), head[1]
    builds = dict(b.split("=", 1) for b in head[2:])
    runs = {name: [] for name in builds}
    for r in range(rounds):
        for name, binary in builds.items():
            rate, unit, cpu, p50, p99 = run_once(binary, scenario, extra)
            runs[name].append((rate, cpu, p50, p99))
            print(f"round {r + 1} {name}: {rate:,.0f} {unit}/s, server CPU {cpu:.1f} µs per "
                  f"{unit.rstrip('s')}, p50 {p50:.3f} ms, p99 {p99:.3f} ms", flush=True)
    for name, rows in runs.items():
        median = [statistics.median(row[i] for row in rows) for i in range(4)]
        print(f"{name}: median {median[0]:,.0f}/s, server CPU {median[1]:.1f} µs, "
              f"p50 {median[2]:.3f} ms, p99 {median[3]:.3f} ms")


if __name__ == "__main__":
    main()
