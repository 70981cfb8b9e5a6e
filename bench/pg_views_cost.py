#!/usr/bin/python3
"""What the admin views cost the postgres store: the job history written by every change, and
GET /v1/admin/queues read while workers claim.

Starts a throwaway PostgreSQL cluster (tests/integration/pg_cluster.py: Unix socket only,
fsync off) and, per round, servers on fresh databases, each on 127.0.0.1:

- lifecycle: `inferq bench lifecycle` against the current binary, the current binary with
  --max-job-history 0, and --base-bin (a build without the history) when given;
- history function: the time of one inferq_history_add call on a history of 0, 5, 31 and 32
  events (32 is the default cap, so that call drops the oldest), less the time of a plain
  call of inferq_now_ms(), each the best of 3 runs of 100,000 calls in one SELECT;
- queues: the latency of GET /v1/admin/queues over a table of --finished finished jobs. Then
  the lifecycle rate on that table with a client reading the view every --poll seconds,
  against the rate without it; the two runs swap order from round to round.

Prints one line per run and a summary of the medians with the ratios to the current binary.
Every server and the cluster are stopped at the end. Usage:

    /usr/bin/python3 bench/pg_views_cost.py [--base-bin PATH] [--rounds 3] [--duration 5]
"""

import argparse
import json
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "integration"))
from pg_cluster import PgCluster  # noqa: E402

INFERQ = ROOT / "build" / "inferq"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Node:
    """One `inferq serve` on a postgres database, stopped by stop()."""

    def __init__(self, binary, store, *flags):
        self.dir = Path(tempfile.mkdtemp(prefix="inferq-bench-"))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(self.dir / "server.log", "w")
        self.proc = subprocess.Popen(
            [str(binary), "serve", "--listen", f"127.0.0.1:{self.port}", "--data-dir",
             str(self.dir), "--store", store, *flags], stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(self.url + "/readyz", timeout=1).read()
                break
            except OSError:
                time.sleep(0.1)
        else:
            self.stop()
            raise RuntimeError(f"{binary} did not become ready; see {self.dir}/server.log")
        self.key = (self.dir / "admin.key").read_text().split()[0]

    def get(self, path):
        req = urllib.request.Request(self.url + path,
                                     headers={"Authorization": f"Bearer {self.key}"})
        with urllib.request.urlopen(req, timeout=30) as reply:
            return reply.read()

    def lifecycle(self, duration, connections):
        out = subprocess.run(
            [str(INFERQ), "bench", "lifecycle", "--server", self.url, "--key", self.key, "-c",
             str(connections), "--workers", str(connections), "-d", str(duration), "--json"],
            capture_output=True, text=True, timeout=duration + 120, check=True)
        return json.loads(out.stdout)

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def rate(result):
    """Jobs completed per second of a `inferq bench lifecycle --json` result."""
    return float(result["rate"])


def fill_finished(cluster, uri, count):
    """Insert count done jobs over 20 models straight into the table, as a long retention keeps."""
    name = uri.split("///", 1)[1].split("?", 1)[0]
    cluster.psql("INSERT INTO inferq_jobs (id, model, state, created_at, done_at, payload) "
                 "SELECT gen_random_uuid(), 'old/m' || (i % 20), 2, inferq_now_ms(), "
                 f"inferq_now_ms(), '{{}}' FROM generate_series(1, {count}) AS i; "
                 "ANALYZE inferq_jobs", name)


def history_call_cost(cluster, uri, calls=100000):
    """Return the microseconds of one inferq_history_add call per history length."""
    name = uri.split("///", 1)[1].split("?", 1)[0]
    event = '{"at":"2026-12-05T02:20:35Z","event":"claimed","worker":"gpu-1"}'

    def best_of_3(expression):
        times = []
        for _ in range(3):
            start = time.perf_counter()
            cluster.psql(f"SELECT count({expression}) FROM generate_series(1, {calls})", name)
            times.append(time.perf_counter() - start)
        return min(times)

    empty = best_of_3("inferq_now_ms()")
    costs = {}
    for events in (0, 5, 31, 32):
        history = "NULL" if events == 0 else "'[" + ",".join([event] * events) + "]'::json"
        spent = best_of_3(f"inferq_history_add({history}, inferq_now_ms(), 'claimed', "
                          "'gpu-1', NULL, 32)")
        costs[events] = (spent - empty) / calls * 1e6
    return costs


def queues_latency(node, samples):
    times = []
    for _ in range(samples):
        start = time.perf_counter()
        node.get("/v1/admin/queues")
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times), max(times)


def lifecycle_with_poller(node, args, poll):
    """Measure the lifecycle rate while one client reads the queues view every poll seconds."""
    stop = threading.Event()
    reads = []

    def poller():
        while not stop.wait(poll):
            node.get("/v1/admin/queues")
            reads.append(1)

    thread = threading.Thread(target=poller, daemon=True)
    thread.start()
    try:
        return rate(node.lifecycle(args.duration, args.connections)), len(reads)
    finally:
        stop.set()
        thread.join(30)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--base-bin", help="an inferq binary without the history, for comparison")
    ap.add_argument("--rounds", type=int, default=3,
                    help="lifecycle and queues rounds; 0 measures only the history function")
    ap.add_argument("--duration", type=int, default=5, help="seconds per lifecycle run")
    ap.add_argument("--connections", type=int, default=16, help="submitters and workers each")
    ap.add_argument("--finished", type=int, default=200000, help="finished jobs in the table")
    ap.add_argument("--poll", type=float, default=0.5, help="seconds between view reads")
    args = ap.parse_args()

    variants = [("current", INFERQ, [])]
    variants.append(("current --max-job-history 0", INFERQ, ["--max-job-history", "0"]))
    if args.base_bin:
        variants.append(("base", Path(args.base_bin), []))
    rates = {name: [] for name, _, _ in variants}
    views = {"quiet": [], "polled": []}
    latencies = []
    cluster = PgCluster()
    try:
        uri = cluster.new_database()
        Node(INFERQ, uri).stop()  # applies the migrations
        costs = history_call_cost(cluster, uri)
        for events, micros in costs.items():
            print(f"inferq_history_add on {events} events: {micros:.1f} us per call", flush=True)
        for round_no in range(1, args.rounds + 1):
            # Rotate the order, so that no variant always runs first in a round.
            shift = (round_no - 1) % len(variants)
            for name, binary, flags in variants[shift:] + variants[:shift]:
                node = Node(binary, cluster.new_database(), *flags)
                try:
                    r = rate(node.lifecycle(args.duration, args.connections))
                finally:
                    node.stop()
                rates[name].append(r)
                print(f"round {round_no} lifecycle {name}: {r:,.0f} jobs/s", flush=True)

            uri = cluster.new_database()
            node = Node(INFERQ, uri)
            try:
                fill_finished(cluster, uri, args.finished)
                median, worst = queues_latency(node, 20)
                latencies.append(median)
                print(f"round {round_no} queues view over {args.finished:,} finished jobs: "
                      f"median {median:.1f} ms, max {worst:.1f} ms", flush=True)
                # Alternate the order, so the table growing over the round favors neither.
                if round_no % 2:
                    quiet = rate(node.lifecycle(args.duration, args.connections))
                    polled, reads = lifecycle_with_poller(node, args, args.poll)
                else:
                    polled, reads = lifecycle_with_poller(node, args, args.poll)
                    quiet = rate(node.lifecycle(args.duration, args.connections))
            finally:
                node.stop()
            views["quiet"].append(quiet)
            views["polled"].append(polled)
            print(f"round {round_no} lifecycle on that table: {quiet:,.0f} jobs/s without the "
                  f"view, {polled:,.0f} with {reads} reads", flush=True)
    finally:
        cluster.destroy()

    if args.rounds < 1:
        return
    print("\nsummary (medians)")
    current = statistics.median(rates["current"])
    for name, values in rates.items():
        m = statistics.median(values)
        print(f"  lifecycle {name}: {m:,.0f} jobs/s, {m / current:.2f} of current")
    quiet, polled = statistics.median(views["quiet"]), statistics.median(views["polled"])
    print(f"  queues view latency: {statistics.median(latencies):.1f} ms")
    print(f"  lifecycle with the view read every {args.poll} s: {polled / quiet:.2f} of without")


if __name__ == "__main__":
    main()
