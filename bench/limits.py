"""The CPU budget of one request, for `bench/run.sh --only limits` (bench/run.py).

Measures where the machine's time goes in the runs whose targets are ratios to nginx. For
nginx serving POSTs, it takes the CPU of its workers and of the client. For inferq's submit
and lifecycle, it takes the CPU of the loop thread, of the writer thread `inferq-writer` and
of the client. Each run also gives the machine's idle and iowait share. inferq runs under
eatmydata too (Debian's LD_PRELOAD library that turns fsync and fdatasync into no-ops), which
gives what the same work costs without waiting for the disk. That server is not durable: it
is a measure of what durability costs, never a result.

Each round runs every system once, in turn, on a fresh server, so drift of the machine's
speed affects all of them alike. The report gives the median of each figure over the rounds.
"""

import http.client
import os
import resource
import statistics
import time

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def thread_cpu(pid):
    """Return the CPU seconds of each thread of process pid, keyed by (tid, name)."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                text = f.read()
        except OSError:
            continue
        name = text[text.index("(") + 1:text.rindex(")")]
        fields = text.rsplit(")", 1)[1].split()
        out[(int(tid), name)] = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return out


def process_cpu(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def children_of(pid):
    kids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        kids.append(int(entry))
            except (OSError, ValueError, IndexError):
                pass
    return kids


def machine_times():
    """Return the machine's total, idle and iowait jiffies (the first line of /proc/stat)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return sum(v), v[3], v[4]


def client_cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


class Meter:
    """The CPU of the server's parts, of the client and of the whole machine during one run."""

    def __init__(self, parts):
        self.parts = parts  # name -> function returning CPU seconds so far

    def __enter__(self):
        self.t0 = time.monotonic()
        self.c0 = client_cpu()
        self.m0 = machine_times()
        self.p0 = {k: f() for k, f in self.parts.items()}
        return self

    def __exit__(self, *exc):
        self.wall = time.monotonic() - self.t0
        self.client = client_cpu() - self.c0
        m1 = machine_times()
        total = m1[0] - self.m0[0]
        self.idle = (m1[1] - self.m0[1]) / total if total else 0
        self.iowait = (m1[2] - self.m0[2]) / total if total else 0
        self.used = {k: f() - self.p0[k] for k, f in self.parts.items()}
        return False

    def row(self, rate, count):
        """Return the µs of CPU of each part per request (or job), and the machine's idle share."""
        per = {k: v * 1e6 / count for k, v in self.used.items()}
        per["client"] = self.client * 1e6 / count
        return {"rate": rate, "count": count, "us": per,
                "us_total": sum(per.values()), "idle": self.idle, "iowait": self.iowait}


def commit_figures(server):
    """Return the store's batches, their mean size and mean commit time from /metrics."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    conn.request("GET", "/metrics", headers={"Authorization": f"Bearer {server.key}"})
    text = conn.getresponse().read().decode()
    conn.close()
    v = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in ("inferq_store_commit_batch_size_sum", "inferq_store_commit_batch_size_count",
                    "inferq_store_commit_duration_seconds_sum"):
            v[name] = float(value)
    batches = v.get("inferq_store_commit_batch_size_count", 0)
    if not batches:
        return {"batches": 0, "changes_per_batch": 0, "commit_ms": 0}
    return {"batches": batches,
            "changes_per_batch": v["inferq_store_commit_batch_size_sum"] / batches,
            "commit_ms": v["inferq_store_commit_duration_seconds_sum"] * 1e3 / batches}


def inferq_parts(pid):
    """Return CPU readers of the loop (the main thread), the writer (the thread named
    inferq-writer) and every other thread."""
    def kind(tid, name):
        if tid == pid:
            return "loop"
        if name == "inferq-writer":
            return "writer"
        return "other"

    def part(which):
        def read():
            return sum(secs for (tid, name), secs in thread_cpu(pid).items()
                       if kind(tid, name) == which)
        return read
    return {k: part(k) for k in ("loop", "writer", "other")}


class Limits:
    """The rounds of runs. bench is the Bench of bench/run.py, which starts servers and clients."""

    def __init__(self, bench, log):
        self.b = bench
        self.log = log

    def inferq_run(self, scenario, wrap, flags):
        srv = self.b.fresh("inferq-eatmydata" if wrap else "inferq", wrap=wrap)
        try:
            with Meter(inferq_parts(srv.proc.proc.pid)) as m:
                r = self.b.inferq_bench(srv, scenario, *flags)
            commits = commit_figures(srv)
        finally:
            self.b.retire(srv)
        # Per job (three requests) for the lifecycle, per request for submit; the CPU covers
        # the whole run, its drain included, and so do these counts.
        count = r["completed"] if scenario == "lifecycle" else r["requests_total"]
        row = m.row(r["rate"], count)
        row["p50_ms"] = r["latency_ms"]["p50"]
        row.update(commits)
        return row

    def nginx_run(self, url, flags):
        master = self.b.nginx_pid
        workers = children_of(master)

        def nginx_cpu():
            return sum(process_cpu(p) for p in workers)
        with Meter({"nginx": nginx_cpu}) as m:
            r = self.b.inferq_bench(None, "post", *flags, url=url)
        row = m.row(r["rate"], r["requests_total"])
        row["p50_ms"] = r["latency_ms"]["p50"]
        return row

    def run(self):
        a = self.b.args
        secs, c, n = a.seconds, a.connections, a.lifecycle_concurrency
        url = self.b.start_nginx()
        submit = ("-c", c, "-d", secs, "--model", "sub")
        life = ("-c", n, "--workers", n, "-d", secs, "--model", "life")
        runs = {
            "nginx_post": lambda: self.nginx_run(url, ("-c", c, "-d", secs)),
            "submit": lambda: self.inferq_run("submit", None, submit),
            "submit_eatmydata": lambda: self.inferq_run("submit", ["eatmydata"], submit),
            "lifecycle": lambda: self.inferq_run("lifecycle", None, life),
            "lifecycle_eatmydata": lambda: self.inferq_run("lifecycle", ["eatmydata"], life),
        }
        rounds = {k: [] for k in runs}
        for i in range(a.pairs):
            for name, fn in runs.items():
                row = fn()
                rounds[name].append(row)
                self.log(f"limits round {i + 1} {name}: {row['rate']:.0f}/s, "
                         f"{row['us_total']:.1f} µs of CPU each, idle {row['idle']:.0%}, "
                         f"iowait {row['iowait']:.0%}")
        return {name: summarize(rows) for name, rows in rounds.items()}


def summarize(rows):
    med = statistics.median
    parts = rows[0]["us"].keys()
    out = {"us": {k: med(r["us"][k] for r in rows) for k in parts}, "rounds": rows}
    for key in ("rate", "us_total", "idle", "iowait", "p50_ms", "changes_per_batch",
                "commit_ms"):
        if key in rows[0]:
            out[key] = med(r[key] for r in rows)
    return out


def summary_lines(res):
    cores = os.cpu_count() or 1
    lines = ["\n| run | rate/s | server µs of CPU per request or job (by part) | client µs | "
             "total µs | idle, iowait | rate at full use of the cores | p50 ms | "
             "changes per batch, mean commit ms |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, s in res.items():
        server = ", ".join(f"{k} {v:.1f}" for k, v in s["us"].items() if k != "client")
        cap = cores * 1e6 / s["us_total"] if s["us_total"] else 0
        commits = "-"
        if "commit_ms" in s:
            commits = f"{s['changes_per_batch']:.1f}, {s['commit_ms']:.3f}"
        lines.append(f"| {name} | {s['rate']:,.0f} | {server} | {s['us']['client']:.1f} | "
                     f"{s['us_total']:.1f} | {s['idle']:.0%}, {s['iowait']:.0%} | {cap:,.0f} | "
                     f"{s['p50_ms']:.3f} | {commits} |")
    return lines
