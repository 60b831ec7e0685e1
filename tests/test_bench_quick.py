"""The speed bench still runs end to end (``python -m bench --quick``); its figures are not
judged here: speed is measured by the bench itself, as ratios, never asserted in tests."""

import os
import re
import signal
import subprocess
import sys

import pytest

from tests.conftest import ROOT

TARGETS = {"P1", "P2", "P3", "P4", "P5", "P6", "A1", "F1", "F2"}


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_bench_quick_runs_every_target():
    # Its own process group: should it overrun, its servers and workers go with it.
    process = subprocess.Popen(
        [sys.executable, "-m", "bench", "--quick"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=540)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        raise
    result = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [line for line in result.stdout.splitlines() if re.match(r"^[PAF][1-6] ", line)]
    assert {line[:2] for line in lines} == TARGETS, result.stdout
    assert all(line.endswith(("PASS", "FAIL")) for line in lines)
