"""The postgres store with 1, 2 and 3 nodes on one database, for `make bench` (bench/run.py).

Each round starts, for N = 1, 2 and 3, N `inferq serve --store postgres://...` nodes on a new
database of the throwaway PostgreSQL cluster that bench/run.py starts for its SKIP LOCKED peer,
and measures with one `inferq bench` process whose connections alternate between the nodes
(`--server` once per node): the lifecycle, submit, then claim-complete of the jobs that submit
left, and the hand-off from a submitter on the first node to workers long-polling the others
(on the one node when N is 1). Each round also runs the same phases on a fresh local-store
server and the SKIP LOCKED peer's lifecycle, so every ratio compares runs of the same round.
The report gives the median over the rounds of each figure and of each per-round ratio, and
the CPU the nodes, PostgreSQL and the client used in each phase.
"""

import os
import resource
import signal
import statistics
import subprocess
import time

NODE_COUNTS = (1, 2, 3)
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    """User plus system CPU seconds of a process so far, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def cluster_pids(postmaster_pid):
    """Return the pids of the postmaster and of every process it started (backends and
    background workers)."""
    pids = [postmaster_pid]
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid == postmaster_pid:
            pids.append(int(entry))
    return pids


class CpuMeter:
    """CPU seconds used by the inferq nodes, the PostgreSQL cluster and the bench client
    between start() and stop(). A backend that exits in between loses its share, so the
    PostgreSQL figure is a lower bound. The nodes keep their connections for the whole phase."""

    def __init__(self, node_pids, postmaster_pid):
        self.node_pids = node_pids
        self.postmaster_pid = postmaster_pid

    def snapshot(self):
        pg = {pid: cpu_seconds(pid) for pid in cluster_pids(self.postmaster_pid)}
        return {
            "nodes": {pid: cpu_seconds(pid) for pid in self.node_pids},
            "postgres": {pid: s for pid, s in pg.items() if s is not None},
            "client": resource.getrusage(resource.RUSAGE_CHILDREN),
            "t": time.monotonic(),
        }

    def start(self):
        self.before = self.snapshot()

    def stop(self):
        """Return the cores (CPU seconds per second) each group used since start()."""
        after = self.snapshot()
        wall = after["t"] - self.before["t"]

        def used(group):
            return sum(s - self.before[group].get(pid, 0.0) for pid, s in after[group].items()
                       if s is not None)

        client = ((after["client"].ru_utime + after["client"].ru_stime) -
                  (self.before["client"].ru_utime + self.before["client"].ru_stime))
        return {"nodes": used("nodes") / wall, "postgres": used("postgres") / wall,
                "client": client / wall, "seconds": wall}


class PgNodes:
    """Runs the rounds on a Bench (bench/run.py) whose PostgreSQL cluster is running."""

    def __init__(self, bench, peer_lifecycle, log):
        self.bench = bench
        self.log = log
        self.args = bench.args
        self.peer_lifecycle = peer_lifecycle  # fn(n, seconds) of the SKIP LOCKED peer, or None
        self.databases = 0

    def psql(self, sql):
        """Run sql in the cluster's postgres database; return the output rows as lists."""
        pg = self.bench.pg
        out = subprocess.run([str(pg["bin"] / "psql"), "-h", str(pg["sock"]), "-U", "postgres",
                              "-d", "postgres", "-qAt", "-F", "\t", "-v", "ON_ERROR_STOP=1",
                              "-c", sql], check=True, capture_output=True, text=True)
        return [line.split("\t") for line in out.stdout.splitlines() if line]

    def new_store(self):
        """Create an empty database in the cluster; return the --store URI of it."""
        self.databases += 1
        self.database = f"inferq_{self.databases}"
        self.psql(f"CREATE DATABASE {self.database}")
        return f"postgres:///{self.database}?host={self.bench.pg['sock']}&user=postgres"

    def top_statements(self, seconds):
        """Return the statements of the current database since the last reset (--pg-profile),
        by planning plus execution time, and those times per second of the phase."""
        rows = self.psql(
            "SELECT s.calls, s.total_plan_time, s.total_exec_time, s.rows, "
            "left(regexp_replace(s.query, '\\s+', ' ', 'g'), 110) FROM pg_stat_statements s "
            f"JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = '{self.database}' "
            "ORDER BY s.total_plan_time + s.total_exec_time DESC")
        statements = [{"calls": int(calls), "plan_ms": float(plan), "exec_ms": float(ms),
                       "rows": int(n), "query": q} for calls, plan, ms, n, q in rows]
        return {"plan_s_per_s": sum(x["plan_ms"] for x in statements) / 1000 / seconds,
                "exec_s_per_s": sum(x["exec_ms"] for x in statements) / 1000 / seconds,
                "top": statements[:6]}

    def start_wait_sampler(self):
        """Start one psql that counts the active backends of the current database by wait
        event every 20 ms ("CPU" when a backend waits for nothing), until stopped."""
        pg = self.bench.pg
        # The row 'sample' marks each sample, which may have no active backend.
        sql = ("SELECT 'sample', 1 UNION ALL "
               "SELECT coalesce(wait_event_type || ':' || wait_event, 'CPU'), count(*) "
               f"FROM pg_stat_activity WHERE datname = '{self.database}' AND state = 'active' "
               "GROUP BY 1 \\watch 0.02\n")
        proc = subprocess.Popen([str(pg["bin"] / "psql"), "-h", str(pg["sock"]), "-U",
                                 "postgres", "-d", "postgres", "-qAt", "-F", "\t"],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, text=True)
        proc.stdin.write(sql)
        proc.stdin.flush()
        return proc

    @staticmethod
    def stop_wait_sampler(proc):
        """Stop the sampler; return the mean number of active backends per wait event."""
        # SIGINT ends \watch, and the end of its input ends psql with its output flushed.
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=10)
        counts = {}
        for line in out.splitlines():
            if "\t" in line:
                event, n = line.split("\t")
                counts[event] = counts.get(event, 0) + int(n)
        samples = counts.pop("sample", 0)
        return {"samples": samples,
                "active": {event: n / samples for event, n in
                           sorted(counts.items(), key=lambda x: -x[1])} if samples else {}}

    def postmaster_pid(self):
        return int((self.bench.pg["data"] / "postmaster.pid").read_text().split("\n")[0])

    def start_nodes(self, n):
        """Start n nodes on a new database. The first creates the admin key and the others
        take it from the database, as an operator's second node does."""
        store = self.new_store()
        first = self.bench.fresh_node(store)
        nodes = [first] + [self.bench.fresh_node(store, key=first.key) for _ in range(n - 1)]
        return nodes

    def phase(self, nodes, scenario, *flags, worker_nodes=None, postmaster=True):
        """One `inferq bench` run against nodes; returns its result with the CPU it cost."""
        argv = []
        for node in nodes:
            argv += ["--server", node.url]
        for node in worker_nodes or []:
            argv += ["--worker-server", node.url]
        argv += ["--key", nodes[0].key]
        meter = CpuMeter([node.proc.proc.pid for node in set(nodes) | set(worker_nodes or [])],
                         self.postmaster_pid() if postmaster else -1)
        profile = postmaster and self.args.pg_profile
        if profile:
            self.psql("SELECT pg_stat_statements_reset()")
            sampler = self.start_wait_sampler()
        meter.start()
        result = self.bench.inferq_bench(None, scenario, *flags, *argv)
        result["cores"] = meter.stop()
        if profile:
            result["wait_events"] = self.stop_wait_sampler(sampler)
            result["statements"] = self.top_statements(result["cores"]["seconds"])
        return result

    def measure(self, nodes, tag, pg=True):
        """Run the four phases on one set of nodes (one local server when pg is False)."""
        a = self.args
        secs, c, life = a.seconds, a.connections, a.lifecycle_concurrency
        workers = nodes[1:] if len(nodes) > 1 else nodes
        out = {
            "lifecycle": self.phase(nodes, "lifecycle", "-c", life, "--workers", life, "-d", secs,
                                    "--model", f"life-{tag}", postmaster=pg),
            "submit": self.phase(nodes, "submit", "-c", c, "-d", secs, "--model", f"cc-{tag}",
                                 postmaster=pg),
        }
        # claim-complete takes the jobs that submit left, so it needs no prefill of its own.
        out["claim_complete"] = self.phase(nodes, "claim-complete", "--prefill", 0, "-c", c, "-d",
                                           secs, "--model", f"cc-{tag}", postmaster=pg)
        out["handoff"] = self.phase(nodes[:1], "handoff", "-d", max(1.0, secs * 0.6), "--model",
                                    f"ho-{tag}", worker_nodes=workers, postmaster=pg)
        return out

    def run(self):
        if self.args.pg_profile:
            self.psql("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        rounds = []
        for r in range(self.args.pairs):
            row = {}
            for n in NODE_COUNTS:
                nodes = self.start_nodes(n)
                try:
                    row[f"pg{n}"] = self.measure(nodes, f"r{r}n{n}")
                finally:
                    for node in nodes:
                        self.bench.retire(node)
                self.log_row(r, f"pg{n}", row[f"pg{n}"])
            local = self.bench.fresh("inferq")
            try:
                row["local"] = self.measure([local], f"r{r}local", pg=False)
            finally:
                self.bench.retire(local)
            self.log_row(r, "local", row["local"])
            if self.peer_lifecycle:
                row["peer_lifecycle"] = self.peer_lifecycle(self.args.lifecycle_concurrency,
                                                            self.args.seconds)
                self.log(f"pg nodes round {r + 1} peer: lifecycle "
                               f"{row['peer_lifecycle']['rate']:.0f} jobs/s")
            rounds.append(row)
        return {"rounds": rounds, "summary": summarize(rounds)}

    def log_row(self, r, name, m):
        self.log(f"pg nodes round {r + 1} {name}: lifecycle {m['lifecycle']['rate']:.0f}, "
                 f"submit {m['submit']['rate']:.0f}, claim-complete "
                 f"{m['claim_complete']['rate']:.0f} jobs/s; submit to claim p50 "
                 f"{m['handoff']['submit_to_claim_ms']['p50']:.2f} ms p99 "
                 f"{m['handoff']['submit_to_claim_ms']['p99']:.2f} ms")


SCENARIOS = ("lifecycle", "submit", "claim_complete")


def median_ratio(rounds, num, den):
    ratios = [num(r) / den(r) for r in rounds if den(r)]
    return statistics.median(ratios) if ratios else None


def summarize(rounds):
    """Return the median over the rounds of each rate, core count and hand-off quantile, and
    of the per-round ratios to 1 node, to the local store and to the SKIP LOCKED peer."""
    systems = [f"pg{n}" for n in NODE_COUNTS] + ["local"]
    out = {}
    for system in systems:
        entry = {}
        for s in SCENARIOS:
            rate = lambda r, s=s, system=system: r[system][s]["rate"]
            entry[s] = {
                "rate": statistics.median(rate(r) for r in rounds),
                "vs_pg1": median_ratio(rounds, rate, lambda r, s=s: r["pg1"][s]["rate"]),
                "vs_local": median_ratio(rounds, rate, lambda r, s=s: r["local"][s]["rate"]),
                "cores": {g: statistics.median(r[system][s]["cores"][g] for r in rounds)
                          for g in ("nodes", "postgres", "client")},
            }
        if all("peer_lifecycle" in r for r in rounds):
            entry["lifecycle"]["vs_peer"] = median_ratio(
                rounds, lambda r, system=system: r[system]["lifecycle"]["rate"],
                lambda r: r["peer_lifecycle"]["rate"])
        for name in ("handoff_ms", "submit_to_claim_ms"):
            entry[name] = {q: statistics.median(r[system]["handoff"][name][q] for r in rounds)
                           for q in ("p50", "p99")}
        entry["handoff_rate"] = statistics.median(r[system]["handoff"]["rate"] for r in rounds)
        out[system] = entry
    if all("peer_lifecycle" in r for r in rounds):
        out["peer_lifecycle_rate"] = statistics.median(r["peer_lifecycle"]["rate"] for r in rounds)
    return out


def system_name(system):
    """Return the table name of a system: "pg2" is "postgres, 2 nodes", "local" is "local
    store"."""
    if system == "local":
        return "local store"
    n = int(system[2:])
    return f"postgres, {n} node" + ("s" if n > 1 else "")


def summary_lines(result):
    """Return the lines of the Markdown tables for summary.md."""
    s = result["summary"]
    fmt = lambda v: "-" if v is None else f"{v:.2f}"
    lines = ["\npostgres store, N nodes on one database (median of the rounds; ratios are "
             "medians of the per-round ratios):\n",
             "| system | lifecycle jobs/s | ÷ 1 node | ÷ local | ÷ SKIP LOCKED | submit/s | "
             "÷ 1 node | ÷ local | claim-complete jobs/s | ÷ 1 node | ÷ local | "
             "submit to claim p50 / p99 ms | ack to claim p50 / p99 ms |",
             "| --- |" + " --- |" * 12]
    for system in [f"pg{n}" for n in NODE_COUNTS] + ["local"]:
        e = s[system]
        cells = [system_name(system)]
        for sc in SCENARIOS:
            cells += [f"{e[sc]['rate']:,.0f}", fmt(e[sc]["vs_pg1"]), fmt(e[sc]["vs_local"])]
            if sc == "lifecycle":
                cells.append(fmt(e[sc].get("vs_peer")))
        for name in ("submit_to_claim_ms", "handoff_ms"):
            cells.append(f"{e[name]['p50']:.2f} / {e[name]['p99']:.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    if "peer_lifecycle_rate" in s:
        lines.append(f"\nPostgreSQL SKIP LOCKED peer lifecycle: {s['peer_lifecycle_rate']:,.0f} "
                     "jobs/s")
    lines.append("\nCPU cores used (median; nodes / PostgreSQL / bench client):\n")
    lines.append("| system | lifecycle | submit | claim-complete |")
    lines.append("| --- | --- | --- | --- |")
    for system in [f"pg{n}" for n in NODE_COUNTS] + ["local"]:
        e = s[system]
        lines.append(f"| {system_name(system)} | " + " | ".join(
            "{nodes:.2f} / {postgres:.2f} / {client:.2f}".format(**e[sc]["cores"])
            for sc in SCENARIOS) + " |")
    return lines
