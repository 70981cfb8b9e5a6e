#!/usr/bin/env python3
"""Status reads of a finished job on the postgres store, with and without the status cache.

Starts a throwaway PostgreSQL cluster (tests/integration/pg_cluster.py: a temp dir, Unix socket
only, fsync off), then two `inferq serve --store postgres://...` nodes on 127.0.0.1 with their
own databases: A with the default --status-cache-bytes (16M), B with --status-cache-bytes 0,
which reads the database on every status request as the store did before it used the cache.
Runs `inferq bench status -c CONNECTIONS -d SECONDS` against A and B in turn, PAIRS times
(A B A B ...), and prints each run, the median rate and p50 of each, and the median of the
per-pair ratios A/B. Everything it started is stopped at the end.

    bench/pg_status_cache.py [--binary build/inferq] [--pairs 3] [--seconds 5] [-c 50]

SPDX-License-Identifier: MIT
"""

import argparse
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "integration"))

from pg_cluster import PgCluster  # noqa: E402

LISTEN_RE = re.compile(r"listening on 127\.0\.0\.1:([1-9][0-9]*)")


def start_node(binary, data_dir, store, *flags):
    log = open(data_dir.with_suffix(".log"), "w+")
    proc = subprocess.Popen([str(binary), "serve", "--listen", "127.0.0.1:0", "--data-dir",
                             str(data_dir), "--store", store, *flags],
                            stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        log.seek(0)
        match = LISTEN_RE.search(log.read())
        if match and (data_dir / "admin.key").exists():
            key = (data_dir / "admin.key").read_text().split("\n")[0]
            return proc, int(match.group(1)), key
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.kill()
    log.seek(0)
    sys.exit(f"the server did not start:\n{log.read()[-2000:]}")


def bench(binary, port, key, connections, seconds):
    out = subprocess.run([str(binary), "bench", "status", "--server", f"http://127.0.0.1:{port}",
                          "--key", key, "-c", str(connections), "-d", str(seconds), "--json"],
                         capture_output=True, text=True, timeout=seconds + 120, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if result["errors"]:
        sys.exit(f"bench errors: {result}")
    return result["rate"], result["latency_ms"]["p50"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--binary", default=str(ROOT / "build" / "inferq"))
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("-c", "--connections", type=int, default=50)
    args = parser.parse_args()

    cluster = PgCluster()
    procs = []
    tmp = Path(tempfile.mkdtemp(prefix="inferq-pgcache-"))
    try:
        a = start_node(args.binary, tmp / "a", cluster.new_database())
        b = start_node(args.binary, tmp / "b", cluster.new_database(), "--status-cache-bytes", "0")
        procs = [a[0], b[0]]
        runs = {"cache": [], "no cache": []}
        for pair in range(args.pairs):
            for name, (_, port, key) in (("cache", a), ("no cache", b)):
                rate, p50 = bench(args.binary, port, key, args.connections, args.seconds)
                runs[name].append((rate, p50))
                print(f"pair {pair + 1} {name:8}: {rate:9.0f} requests/s, p50 {p50:.3f} ms")
        for name, got in runs.items():
            print(f"median {name:8}: {statistics.median(r for r, _ in got):9.0f} requests/s, "
                  f"p50 {statistics.median(p for _, p in got):.3f} ms")
        ratios = [ra / rb for (ra, _), (rb, _) in zip(runs["cache"], runs["no cache"])]
        print(f"median rate ratio cache / no cache: {statistics.median(ratios):.2f}")
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(30)
        cluster.destroy()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
