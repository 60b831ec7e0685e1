"""The speed bench still runs end to end (``python -m bench --quick``); its figures are not
judged here: speed is measured by the bench itself, as ratios, never asserted in tests."""

import re
import subprocess
import sys

import pytest

from tests.conftest import ROOT

TARGETS = {"P1", "P2", "P3", "P4", "P5", "P6", "A1", "F1", "F2"}


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_bench_quick_runs_every_target():
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=540,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [line for line in result.stdout.splitlines() if re.match(r"^[PAF][1-6] ", line)]
    assert {line[:2] for line in lines} == TARGETS, result.stdout
    assert all(line.endswith(("PASS", "FAIL")) for line in lines)
