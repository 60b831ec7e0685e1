"""The speed bench still runs end to end (``python -m bench --quick``); its figures are not
judged here: speed is measured by the bench itself, as ratios, never asserted in tests."""

import json
import os
import re
import signal
import subprocess
import sys

import pytest

from tests.conftest import ROOT

TARGETS = {"P1", "P2", "P2'", "P3", "P4", "P5", "P6", "A1", "P7", "P8", "P9", "F1", "F2"}


@pytest.mark.slow
# A guard against a hang, not a bound on speed: the run takes about two minutes alone, and
# three to four times that beside the rest of the suite on two cores.
@pytest.mark.timeout(1800)
def test_bench_quick_runs_every_target(tmp_path):
    # Its own process group: should it overrun, its servers and workers go with it.
    process = subprocess.Popen(
        [sys.executable, "-m", "bench", "--quick"],
        cwd=ROOT,
        # Ports of a range of its own: this test's process keeps its servers meanwhile.
        env=os.environ | {"TESTKIT_PORTS_CHILD": "1", "BENCH_RESULTS": str(tmp_path / "r.json")},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=1740)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        raise
    result = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [line for line in result.stdout.splitlines() if re.match(r"^[PAF][1-9]'? ", line)]
    assert {line.split()[0] for line in lines} == TARGETS, result.stdout
    assert all(line.endswith(("PASS", "FAIL")) for line in lines)
    # The same targets, machine-readable.
    document = json.loads((tmp_path / "r.json").read_text())
    assert document["quick"] is True and document["runs"] == 1
    assert {t["id"] for t in document["targets"]} == TARGETS
    assert len(document["targets"]) == len(lines)
    for target in document["targets"]:
        assert set(target) == {
            "id", "scenario", "product", "baseline", "baseline_is", "unit", "ratio", "target",
            "pass", "runs",
        }  # fmt: skip
        assert len(target["runs"]) == 1
