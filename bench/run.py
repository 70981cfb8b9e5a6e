#!/usr/bin/env python3
"""The benchmark run behind `make bench`: inferq against the HTTP ceiling and the peer queues.

Starts every server itself on 127.0.0.1 or a Unix socket in a temporary directory: inferq with
its durable SQLite store, nginx serving a static JSON 200 (the HTTP ceiling, measured by the same
`inferq bench get|post` client), BullMQ on Redis (appendfsync always, then everysec), beanstalkd
(-f0, then its in-memory default) and a PostgreSQL SKIP LOCKED queue. Each comparison runs in
pairs A B A B ..., and the report gives the medians and the inferq/peer ratio of each pair.
On the same PostgreSQL cluster, pg_nodes.py measures the postgres store with 1, 2 and 3 nodes.
Writes results.json, throughput.dat, throughput.png and summary.md to bench/results/DATE/.

bench/run.sh installs the peers and builds what this needs; run that instead of this file.
"""

import argparse
import datetime
import http.client
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from limits import Limits, summary_lines as limits_summary
from pg_nodes import PgNodes, summary_lines as pg_nodes_summary

ROOT = Path(__file__).resolve().parents[1]
LISTEN_RE = re.compile(r"listening on 127\.0\.0\.1:([1-9][0-9]*)")
PAYLOAD = '{"input":"bench"}'  # 17 bytes, the payload of every job in every system
PG_BIN = Path("/usr/lib/postgresql/15/bin")


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=15.0, path=None):
    """Wait until something accepts connections on 127.0.0.1:port (or the Unix socket path)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if path:
                with socket.socket(socket.AF_UNIX) as s:
                    s.connect(path)
            else:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"nothing listened on {path or port} within {timeout} s")


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class Proc:
    """A server process that this script started; stopped by its own pid only."""

    def __init__(self, name, argv, logfile, **kw):
        self.name = name
        self.log = open(logfile, "ab")
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT, **kw)

    def stop(self, sig=signal.SIGTERM, timeout=20):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


class Inferq:
    def __init__(self, binary, tmp, name, procs, port=0, store=None, key=None, wrap=None):
        self.procs = procs  # every process started is added at once, so none is left running
        self.binary = binary
        self.dir = Path(tmp) / name
        self.name = name
        self.port = port
        self.proc = None
        self.store = store  # a postgres --store URI, or None for the local store
        # A node that joins a postgres store writes no admin.key: it is given the first's key.
        self.key = key
        self.wrap = wrap or []  # a command that execs the server, such as ["eatmydata"]

    def start(self):
        """Start the server; returns the seconds from process start to its first answered request."""
        logfile = self.dir.with_suffix(".log")
        self.dir.mkdir(exist_ok=True)
        offset = logfile.stat().st_size if logfile.exists() else 0
        t0 = time.monotonic()
        argv = self.wrap + [str(self.binary), "serve", "--listen", f"127.0.0.1:{self.port}",
                "--data-dir", str(self.dir), "--max-connections", "12000"]
        if self.store:
            argv += ["--store", self.store]
        self.proc = Proc(self.name, argv, logfile)
        self.procs.append(self.proc)
        deadline = t0 + 120
        while not self.port or (self.key is None and not (self.dir / "admin.key").exists()):
            text = logfile.read_bytes()[offset:].decode(errors="replace")
            m = LISTEN_RE.search(text)
            if m:
                self.port = int(m.group(1))
                continue
            if self.proc.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"inferq {self.name} did not start:\n{text[-2000:]}")
            time.sleep(0.002)
        if self.key is None:
            self.key = (self.dir / "admin.key").read_text().split("\n")[0]
        while True:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                conn.request("GET", "/v1/queue/metrics?model=bench",
                             headers={"Authorization": f"Bearer {self.key}"})
                status = conn.getresponse().status
                conn.close()
                if status == 200:
                    return time.monotonic() - t0
            except OSError:
                pass
            if self.proc.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"inferq {self.name} did not answer within 120 s")
            time.sleep(0.002)

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def metrics(self, model):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        conn.request("GET", f"/v1/queue/metrics?model={model}",
                     headers={"Authorization": f"Bearer {self.key}"})
        body = json.loads(conn.getresponse().read())
        conn.close()
        return body

    def rss_kib(self):
        return rss_kib(self.proc.proc.pid)

    def stop(self):
        self.proc.stop()


class Bench:
    """Runs `inferq bench` and the peer drivers, and keeps every figure."""

    def __init__(self, args, tmp):
        self.args = args
        self.tmp = Path(tmp)
        self.binary = Path(args.binary).resolve()
        self.procs = []
        self.results = {"comparisons": {}, "scaling": {}, "sweep": {}, "errors": []}

    # --- servers -----------------------------------------------------------------------

    def start(self, name, argv, port=None, path=None, **kw):
        p = Proc(name, argv, self.tmp / f"{name}.log", **kw)
        self.procs.append(p)
        wait_port(port, path=path)
        return p

    def start_nginx(self):
        port = free_port()
        d = self.tmp / "nginx"
        d.mkdir()
        body = '{"request_id":"01a24356-0f5a-78ce-80ed-7e2ca2761b4c"}'
        (d / "nginx.conf").write_text(f"""worker_processes auto;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
daemon off;
events {{ worker_connections 16384; }}
http {{
    access_log off;
    client_body_temp_path {d}/body;
    keepalive_requests 100000000;
    server {{
        listen 127.0.0.1:{port};
        default_type application/json;
        location / {{ return 200 '{body}'; }}
    }}
}}
""")
        self.nginx_pid = self.start("nginx", ["nginx", "-c", str(d / "nginx.conf"), "-p", str(d)],
                                    port).proc.pid
        return f"http://127.0.0.1:{port}/"

    def start_redis(self, fsync):
        port = free_port()
        d = self.tmp / f"redis-{fsync}"
        d.mkdir()
        self.start(f"redis-{fsync}", ["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                                      "--save", "", "--appendonly", "yes", "--appendfsync", fsync,
                                      "--dir", str(d)], port)
        return port

    def start_beanstalkd(self, durable):
        port = free_port()
        argv = ["beanstalkd", "-l", "127.0.0.1", "-p", str(port)]
        if durable:
            d = self.tmp / "beanstalkd-binlog"
            d.mkdir()
            argv += ["-b", str(d), "-f0"]
        self.start("beanstalkd-f0" if durable else "beanstalkd", argv, port)
        return port

    def start_postgres(self):
        d = self.tmp / "pg"
        d.mkdir()
        os.chmod(self.tmp, 0o755)
        for sub in ("data", "sock"):
            (d / sub).mkdir()
            shutil.chown(d / sub, "postgres")
        (d / "pg.log").touch()
        shutil.chown(d / "pg.log", "postgres")
        runas = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        subprocess.run(runas + [str(PG_BIN / "initdb"), "-D", str(d / "data"), "-A", "trust",
                                "-U", "postgres", "--no-instructions"],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        options = f"-c listen_addresses='' -k {d / 'sock'} -c max_connections=400"
        if self.args.pg_profile:
            options += (" -c shared_preload_libraries=pg_stat_statements"
                        " -c pg_stat_statements.track_planning=on")
        subprocess.run(runas + [str(PG_BIN / "pg_ctl"), "-D", str(d / "data"), "-l",
                                str(d / "pg.log"), "-w", "-o", options, "start"],
                       check=True, stdout=subprocess.DEVNULL)
        self.pg_stop = runas + [str(PG_BIN / "pg_ctl"), "-D", str(d / "data"), "-m", "fast", "stop"]
        self.pg = {"bin": PG_BIN, "sock": d / "sock", "data": d / "data"}
        return f"host={d / 'sock'} user=postgres dbname=postgres"

    def stop_all(self):
        for p in reversed(self.procs):
            p.stop()
        if getattr(self, "pg_stop", None):
            subprocess.run(self.pg_stop, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    # --- clients -----------------------------------------------------------------------

    def inferq_bench(self, server, scenario, *flags, url=None):
        argv = [str(self.binary), "bench", scenario] + ([url] if url else [])
        argv += list(map(str, flags)) + ["--json"]
        if server is not None:
            argv += ["--server", server.url, "--key", server.key]
        out = subprocess.run(argv, capture_output=True, text=True, timeout=900)
        lines = [l for l in out.stdout.splitlines() if l.startswith("{")]
        if not lines:
            raise RuntimeError(f"inferq bench {scenario} printed no result: {out.stderr[-800:]}")
        result = json.loads(lines[-1])
        if out.returncode != 0:
            self.results["errors"].append({"run": f"inferq bench {scenario}",
                                           "exit": out.returncode, "stderr": out.stderr[-800:]})
        return result

    def peer(self, argv):
        out = subprocess.run(argv, capture_output=True, text=True, timeout=300)
        lines = [l for l in out.stdout.splitlines() if l.startswith("{")]
        if out.returncode != 0 or not lines:
            raise RuntimeError(f"{' '.join(argv[:3])} failed: {out.stderr[-800:]}")
        return json.loads(lines[-1])

    def bullmq(self, port, n, seconds):
        return self.peer(["node", str(ROOT / "bench/peers/bullmq_bench.js"), "--port", str(port),
                          "--seconds", str(seconds), "--producers", str(n), "--workers", str(n),
                          "--queue", f"q{time.monotonic_ns()}"])

    def peerbench(self, kind, target, n, seconds):
        return self.peer([str(self.args.peerbench), kind, str(target), "--producers", str(n),
                          "--workers", str(n), "--seconds", str(seconds)])

    # --- the measures ------------------------------------------------------------------

    def pairs(self, name, a, b, what):
        """Run a() and b() alternately; keep each figure and the ratio a/b of each pair."""
        rows = []
        for i in range(self.args.pairs):
            ra = a()
            rb = b()
            rows.append({"a": ra, "b": rb, "ratio": ra["rate"] / rb["rate"] if rb["rate"] else None})
            log(f"{name} pair {i + 1}: {ra['rate']:.0f} vs {rb['rate']:.0f} {what}")
        ratios = [r["ratio"] for r in rows if r["ratio"] is not None]
        summary = {
            "what": what,
            "a_median": statistics.median(r["a"]["rate"] for r in rows),
            "b_median": statistics.median(r["b"]["rate"] for r in rows),
            "ratio_median": statistics.median(ratios) if ratios else None,
            "ratio_min": min(ratios) if ratios else None,
            "ratio_max": max(ratios) if ratios else None,
            "pairs": rows,
        }
        self.results["comparisons"][name] = summary
        return summary

    def fresh(self, name, wrap=None):
        """Start a new inferq server with an empty data directory (under the command wrap if
        given) and return it."""
        self.serial = getattr(self, "serial", 0) + 1
        srv = Inferq(self.binary, self.tmp, f"{name}-{self.serial}", self.procs, wrap=wrap)
        srv.start()
        return srv

    def fresh_node(self, store, key=None):
        """A new inferq node on the postgres store URI store, with an empty data directory."""
        self.serial = getattr(self, "serial", 0) + 1
        srv = Inferq(self.binary, self.tmp, f"inferq-pg-{self.serial}", self.procs, store=store,
                     key=key)
        srv.start()
        return srv

    def retire(self, srv):
        srv.stop()
        shutil.rmtree(srv.dir, ignore_errors=True)

    def on_fresh(self, name, fn):
        """Run fn(server) on a server of its own, removed afterwards."""
        srv = self.fresh(name)
        try:
            return fn(srv)
        finally:
            self.retire(srv)

    def run(self):
        """Every measure; each group of runs gets a fresh server so none inherits another's jobs."""
        a = self.args
        secs = a.seconds
        c = a.connections
        life = a.lifecycle_concurrency
        srv = self.fresh("inferq")
        self.results["inferq_rss_kib_idle"] = srv.rss_kib()
        nginx = self.start_nginx()

        self.pairs("submit_vs_nginx_post",
                   lambda: self.inferq_bench(srv, "submit", "-c", c, "-d", secs, "--model", "sub"),
                   lambda: self.inferq_bench(None, "post", "-c", c, "-d", secs, url=nginx),
                   "requests/s")
        self.retire(srv)
        srv = self.fresh("inferq")
        self.pairs("status_vs_nginx_get",
                   lambda: self.inferq_bench(srv, "status", "-c", c, "-d", secs, "--model", "st"),
                   lambda: self.inferq_bench(None, "get", "-c", c, "-d", secs, url=nginx),
                   "requests/s")
        self.retire(srv)

        def inferq_life(server, n=life, extra=()):
            return self.inferq_bench(server, "lifecycle", "-c", n, "--workers", n, "-d", secs,
                                     "--model", "life", *extra)

        peers = self.start_peers()
        for name, fn in peers.items():
            srv = self.fresh("inferq")
            self.pairs(f"lifecycle_vs_{name}", lambda: inferq_life(srv),
                       lambda fn=fn: fn(life, secs), "jobs/s")
            self.retire(srv)
        if "beanstalkd_default" in peers:
            self.lifecycle_batch(peers["beanstalkd_default"])

        srv = self.fresh("inferq")
        handoffs = [self.inferq_bench(srv, "handoff", "-d", secs, "--model", f"ho{i}")
                    for i in range(a.pairs)]
        self.retire(srv)
        self.results["scaling"]["handoff"] = handoffs
        log("handoff p99 ms: " + ", ".join(f"{h['handoff_ms']['p99']:.3f}" for h in handoffs))

        # A closed client's long-poll stays open on the server until its wait ends, so each
        # run with idle workers gets its own server, and so does each run without.
        idle = a.idle_workers
        self.pairs(f"lifecycle_vs_lifecycle_with_{idle}_idle_workers",
                   lambda: self.on_fresh("inferq", inferq_life),
                   lambda: self.on_fresh("inferq", lambda s: inferq_life(
                       s, extra=("--idle-workers", idle))), "jobs/s")

        self.pg_nodes(peers)
        self.sweep(peers)
        self.pending_scaling()
        return self.results

    def pg_nodes(self, peers):
        """The postgres store with 1, 2 and 3 nodes on one database of the peer's cluster."""
        if not getattr(self, "pg", None):
            self.results["errors"].append({"run": "pg nodes", "error": "PostgreSQL did not start"})
            return
        self.results["pg_nodes"] = PgNodes(self, peers.get("postgres_skip_locked"), log).run()

    def run_pg_nodes_only(self):
        """`--only pg-nodes`: the postgres store by node count, with its local and peer runs."""
        conninfo = self.start_postgres()
        self.pg_nodes({"postgres_skip_locked":
                       lambda n, s: self.peerbench("postgres", conninfo, n, s)})
        return self.results

    def lifecycle_batch(self, beanstalkd_default):
        """The lifecycle on the batch routes (100 jobs per submit_batch, claim and
        complete_batch) against beanstalkd's non-durable default, same concurrency. The
        backlog lets every producer have one batch outstanding."""
        a = self.args
        n, batch = a.lifecycle_concurrency, 100
        srv = self.fresh("inferq")
        self.pairs("lifecycle_batch_vs_beanstalkd_default",
                   lambda: self.inferq_bench(srv, "lifecycle", "-c", n, "--workers", n, "-d",
                                             a.seconds, "--model", "life-batch", "--batch",
                                             batch, "--backlog", n * batch),
                   lambda: beanstalkd_default(n, a.seconds), "jobs/s")
        self.retire(srv)

    def run_pg_batch_only(self):
        """`--only pg-batch`: on one node of the postgres store, the lifecycle on the batch
        routes (as lifecycle_batch) against the single-job lifecycle, same concurrency."""
        a = self.args
        n, batch = a.lifecycle_concurrency, 100
        self.start_postgres()
        sock = self.tmp / "pg" / "sock"
        srv = Inferq(self.binary, self.tmp, "inferq-pg", self.procs,
                     store=f"postgres:///postgres?host={sock}&user=postgres")
        srv.start()
        self.pairs("pg_lifecycle_batch_vs_single",
                   lambda: self.inferq_bench(srv, "lifecycle", "-c", n, "--workers", n, "-d",
                                             a.seconds, "--model", "pg-batch", "--batch",
                                             batch, "--backlog", n * batch),
                   lambda: self.inferq_bench(srv, "lifecycle", "-c", n, "--workers", n, "-d",
                                             a.seconds, "--model", "pg-single", "--backlog",
                                             n * batch), "jobs/s")
        srv.stop()
        return self.results

    def run_limits_only(self):
        """`--only limits`: the CPU per request of nginx and of inferq, durable and under
        eatmydata, with the machine's idle time (bench/limits.py)."""
        self.results["limits"] = Limits(self, log).run()
        return self.results

    def run_lifecycle_batch_only(self):
        """`--only lifecycle-batch`: the batch lifecycle against beanstalkd's default alone."""
        port = self.start_beanstalkd(False)
        self.lifecycle_batch(lambda n, s: self.peerbench("beanstalk", port, n, s))
        return self.results

    def start_peers(self):
        peers = {}
        try:
            for fsync in ("always", "everysec"):
                port = self.start_redis(fsync)
                peers[f"bullmq_{fsync}"] = (lambda port: lambda n, s: self.bullmq(port, n, s))(port)
        except (OSError, RuntimeError) as e:
            self.results["errors"].append({"peer": "bullmq", "error": str(e)})
        try:
            for durable, name in ((True, "beanstalkd_f0"), (False, "beanstalkd_default")):
                port = self.start_beanstalkd(durable)
                peers[name] = (lambda port: lambda n, s: self.peerbench("beanstalk", port, n, s))(port)
        except (OSError, RuntimeError) as e:
            self.results["errors"].append({"peer": "beanstalkd", "error": str(e)})
        try:
            conninfo = self.start_postgres()
            peers["postgres_skip_locked"] = lambda n, s: self.peerbench("postgres", conninfo, n, s)
        except (OSError, subprocess.CalledProcessError) as e:
            self.results["errors"].append({"peer": "postgres", "error": str(e)})
        return peers

    def sweep(self, peers):
        """Lifecycle jobs/s by concurrency (producers = workers = n) for the chart."""
        secs = max(1.0, self.args.seconds * 0.6)
        for n in self.args.sweep:
            row = {"inferq": self.on_fresh("inferq", lambda srv: self.inferq_bench(
                srv, "lifecycle", "-c", n, "--workers", n, "-d", secs, "--model", "sweep"))["rate"]}
            for name, fn in peers.items():
                row[name] = fn(n, secs)["rate"]
            self.results["sweep"][n] = row
            log(f"sweep {n}: " + ", ".join(f"{k} {v:.0f}" for k, v in row.items()))

    def pending_scaling(self):
        """Claim with few and many pending jobs; restart time and RSS with many pending."""
        a = self.args
        small = Inferq(self.binary, self.tmp, "inferq-small", self.procs)
        small.start()
        big = Inferq(self.binary, self.tmp, "inferq-big", self.procs, port=free_port())
        big.start()
        rss_empty = big.rss_kib()
        fill = ["-c", 50, "-P", 32, "--model", "claim"]
        self.inferq_bench(small, "submit", "-n", 1000, *fill)
        t0 = time.monotonic()
        filled = self.inferq_bench(big, "submit", "-n", a.many, *fill)
        log(f"prefilled {a.many} jobs at {filled['rate']:.0f}/s in {time.monotonic() - t0:.1f} s")
        rss_full = big.rss_kib()

        def claim(server):
            return self.inferq_bench(server, "claim-complete", "--prefill", 0, "--refill",
                                     "-c", self.args.connections, "-d", a.seconds, "--model", "claim")

        self.pairs(f"claim_{a.many}_pending_vs_1000_pending", lambda: claim(big),
                   lambda: claim(small), "jobs/s")
        waiting = big.metrics("claim")["messages_waiting"]
        big.stop()
        restart_s = big.start()
        rss_restart = big.rss_kib()
        after = big.metrics("claim")["messages_waiting"]
        per_job = lambda kib: (kib - rss_empty) * 1024 / waiting - len(PAYLOAD)
        self.results["scaling"]["pending"] = {
            "pending": waiting, "pending_after_restart": after, "payload_bytes": len(PAYLOAD),
            "rss_kib_empty": rss_empty, "rss_kib_full": rss_full, "rss_kib_after_restart": rss_restart,
            "rss_bytes_per_job_beyond_payload": per_job(rss_full),
            "rss_bytes_per_job_beyond_payload_after_restart": per_job(rss_restart),
            "restart_seconds": restart_s, "prefill_rate": filled["rate"],
        }
        log(f"restart with {waiting} pending: {restart_s:.2f} s; RSS {rss_full} KiB full, "
            f"{rss_restart} KiB after restart")


def machine():
    def first(path, key):
        try:
            for line in open(path):
                if line.startswith(key):
                    return line.split(":", 1)[1].strip()
        except OSError:
            return None

    def version(argv):
        try:
            out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
            return (out.stdout or out.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.TimeoutExpired):
            return "not installed"

    return {
        "nproc": os.cpu_count(), "cpu": first("/proc/cpuinfo", "model name"),
        "mem": first("/proc/meminfo", "MemTotal"), "kernel": platform.release(),
        "loadavg": open("/proc/loadavg").read().strip(),
        "versions": {
            "inferq": version([ROOT / "build/inferq", "version"]),
            "nginx": version(["nginx", "-v"]),
            "redis": version(["redis-server", "--version"]),
            "beanstalkd": version(["beanstalkd", "-v"]),
            "postgres": version([PG_BIN / "postgres", "--version"]),
            "node": version(["node", "--version"]),
            "bullmq": json.loads((ROOT / "bench/peers/package.json").read_text())["dependencies"],
        },
    }


def write_chart(out, sweep):
    names = list(next(iter(sweep.values())).keys())
    with open(out / "throughput.dat", "w") as f:
        f.write("# concurrency " + " ".join(names) + "\n")
        for n, row in sweep.items():
            f.write(f"{n} " + " ".join(f"{row[k]:.1f}" for k in names) + "\n")
    plots = ", ".join(f"'{out / 'throughput.dat'}' using 1:{i + 2} with linespoints title '{k}'"
                      for i, k in enumerate(names))
    script = (f"set terminal pngcairo size 900,560 noenhanced\nset output '{out / 'throughput.png'}'\n"
              "set logscale x 2\nset logscale y 10\nset grid\nset key outside right\n"
              "set xlabel 'producers = workers (concurrency)'\nset ylabel 'jobs/s (submit, claim, complete)'\n"
              "set title 'Durable job lifecycle throughput by concurrency'\n"
              f"plot {plots}\n")
    r = subprocess.run(["gnuplot"], input=script, text=True, capture_output=True)
    if r.returncode != 0:
        print(f"gnuplot failed: {r.stderr}", file=sys.stderr)


def summary(res):
    lines = ["| comparison | inferq (A) median | peer (B) median | ratio A/B median (min-max) |",
             "| --- | --- | --- | --- |"]
    for name, s in res["comparisons"].items():
        lines.append(f"| {name} | {s['a_median']:,.0f} {s['what']} | {s['b_median']:,.0f} | "
                     f"{s['ratio_median']:.2f} ({s['ratio_min']:.2f}-{s['ratio_max']:.2f}) |")
    h = res["scaling"].get("handoff", [])
    if h:
        lines.append("\nhand-off p99 ms (submit ack to claim response): " +
                     ", ".join(f"{x['handoff_ms']['p99']:.3f}" for x in h) +
                     "; submit sent to claim response p99 ms: " +
                     ", ".join(f"{x['submit_to_claim_ms']['p99']:.3f}" for x in h))
    p = res["scaling"].get("pending")
    if p:
        lines.append(f"\n{p['pending']:,} pending: restart {p['restart_seconds']:.2f} s, RSS "
                     f"{p['rss_kib_full']:,} KiB ({p['rss_bytes_per_job_beyond_payload']:.0f} B/job "
                     f"beyond the payload), after restart {p['rss_kib_after_restart']:,} KiB "
                     f"({p['rss_bytes_per_job_beyond_payload_after_restart']:.0f} B/job)")
    if res["sweep"]:
        names = list(next(iter(res["sweep"].values())).keys())
        lines.append("\n| concurrency | " + " | ".join(names) + " |")
        lines.append("| --- |" + " --- |" * len(names))
        for n, row in res["sweep"].items():
            lines.append(f"| {n} | " + " | ".join(f"{row[k]:,.0f}" for k in names) + " |")
        peak = {k: max(row[k] for row in res["sweep"].values()) for k in names}
        lines.append("| peak | " + " | ".join(f"{peak[k]:,.0f}" for k in names) + " |")
        lines.append("| inferq peak / peak | " + " | ".join(
            f"{peak['inferq'] / peak[k]:.2f}" if peak[k] else "-" for k in names) + " |")
    if res.get("pg_nodes"):
        lines += pg_nodes_summary(res["pg_nodes"])
    if res.get("limits"):
        lines += limits_summary(res["limits"])
    if res["errors"]:
        lines.append("\nerrors: " + json.dumps(res["errors"]))
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="a smoke run: 1 pair, 1 s phases, small counts")
    ap.add_argument("--binary", default=str(ROOT / "build/inferq"))
    ap.add_argument("--peerbench", default=str(ROOT / "build/bench/peerbench"))
    ap.add_argument("--out", help="results directory (default bench/results/DATE)")
    ap.add_argument("--pg-profile", action="store_true",
                    help="profile the postgres-store phases: load pg_stat_statements (with "
                         "planning times) into the PostgreSQL cluster, record the statements of "
                         "each phase and sample the wait events of its backends every 20 ms (adds "
                         "their overhead to every PostgreSQL figure)")
    ap.add_argument("--only", choices=["lifecycle-batch", "pg-nodes", "pg-batch", "limits"],
                    help="run one comparison alone: lifecycle-batch is the lifecycle on the batch "
                         "routes against beanstalkd's in-memory default; pg-nodes is the postgres "
                         "store with 1, 2 and 3 nodes against the local store and the SKIP LOCKED "
                         "peer; pg-batch is, on the postgres store, the batch lifecycle against "
                         "the single-job one; limits is the CPU per request of nginx and of "
                         "inferq's submit and lifecycle, durable and under eatmydata")
    args = ap.parse_args()
    args.pairs, args.seconds, args.connections = 3, 5.0, 50
    args.lifecycle_concurrency, args.idle_workers, args.many = 64, 10000, 1000000
    args.sweep = [1, 4, 16, 64]
    if args.quick:
        args.pairs, args.seconds, args.idle_workers, args.many = 1, 1.0, 1000, 20000
        args.sweep = [1, 16]
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H%M%SZ")
    suffix = ("-quick" if args.quick else "") + (f"-{args.only}" if args.only else "")
    out = Path(args.out) if args.out else ROOT / "bench/results" / (stamp + suffix)
    out.mkdir(parents=True, exist_ok=True)

    started = time.monotonic()
    tmp = tempfile.mkdtemp(prefix="inferq-bench-")
    bench = Bench(args, tmp)
    res = {"date": stamp, "command": " ".join(sys.argv), "machine": machine(),
           "settings": {k: v for k, v in vars(args).items()}}
    try:
        only = {"lifecycle-batch": bench.run_lifecycle_batch_only,
                "pg-nodes": bench.run_pg_nodes_only,
                "pg-batch": bench.run_pg_batch_only,
                "limits": bench.run_limits_only}
        res.update(only[args.only]() if args.only else bench.run())
    finally:
        bench.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)
    res["seconds"] = time.monotonic() - started
    res["loadavg_end"] = open("/proc/loadavg").read().strip()
    (out / "results.json").write_text(json.dumps(res, indent=1) + "\n")
    if res.get("sweep"):
        write_chart(out, res["sweep"])
    text = summary(res)
    (out / "summary.md").write_text(text)
    print(text)
    log(f"results in {out} ({res['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
