"""A short run of the crash loop (tests/stress/crash_loop.py): the server is killed with
SIGKILL 4 times under load, and every acknowledged job must survive, finished at most once.

`make stress` runs the same script longer; its seed is printed, so a failure can be replayed
with `python3 tests/stress/crash_loop.py --seed N`.
"""

import subprocess
import sys
from pathlib import Path

from support import INFERQ_BIN

SCRIPT = Path(__file__).resolve().parents[1] / "stress" / "crash_loop.py"


def test_crash_loop_short():
    cmd = [sys.executable, str(SCRIPT), "--kills", "4", "--seconds", "20",
           "--binary", str(INFERQ_BIN)]
    result = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                            timeout=120)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"crash loop exited with {result.returncode}:\n{output}"
    assert "lost=0 double_completions=0 violations=0" in result.stdout, output
    assert "kills=5 " in result.stdout, f"expected 4 kills under load and 1 at the end:\n{output}"
