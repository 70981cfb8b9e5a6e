"""bench/cpu_per_request.sh: short bounded runs of the script against the real binary, with the
printed rate checked for the scenario's unit and the CPU lines checked for their shape. No
timing is asserted.
"""

import re
import subprocess
from pathlib import Path

from support import INFERQ_BIN

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "cpu_per_request.sh"
RATE = re.compile(r"^rate [0-9]+ ([a-z-]+)/s, ([0-9]+) requests, p50 [0-9.]+ ms$")
THREAD = re.compile(r"^  (loop thread|thread [0-9]+): [0-9.]+ s CPU, [0-9.]+ us per request(.*)$")


def run_script(*args):
    """Run the script on INFERQ_BIN with bench ARGS; return its stdout lines."""
    proc = subprocess.run(["bash", str(SCRIPT), str(INFERQ_BIN), *map(str, args)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.splitlines()


def test_submit_rate_in_requests():
    # One second, so that each busy thread gets CPU clock ticks (10 ms each) to report.
    lines = run_script("submit", "-d", 1, "-c", 4)
    m = RATE.match(lines[0])
    assert m, lines
    assert m.group(1) == "requests", lines[0]
    assert int(m.group(2)) > 0, lines[0]
    threads = [THREAD.match(line) for line in lines[1:]]
    assert threads and all(threads), lines
    assert any(t.group(1) == "loop thread" for t in threads), lines
    # With the requests as the unit, no per-job figure is added.
    assert all(t.group(2) == "" for t in threads), lines


def test_lifecycle_rate_in_jobs():
    lines = run_script("lifecycle", "-d", 1, "-c", 4, "--workers", 4)
    m = RATE.match(lines[0])
    assert m, lines
    assert m.group(1) == "jobs", lines[0]
    assert int(m.group(2)) > 0, lines[0]
    threads = [THREAD.match(line) for line in lines[1:]]
    assert threads and all(threads), lines
    for t in threads:
        assert re.fullmatch(r", [0-9.]+ us per job", t.group(2)), t.group(0)
