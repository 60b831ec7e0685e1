"""The speed bench still runs end to end (``python -m bench --quick``); its figures are not
judged here: speed is measured by the bench itself, as ratios, never asserted in tests."""

import re
import subprocess
import sys

from tests.conftest import ROOT


def test_bench_quick_runs_every_target():
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [line for line in result.stdout.splitlines() if re.match(r"^P[1-6] ", line)]
    assert {line[:2] for line in lines} == {"P1", "P2", "P3", "P4", "P5", "P6"}, result.stdout
    assert all(line.endswith(("PASS", "FAIL")) for line in lines)
