"""Smoke test of the end-to-end demo (python/demo.py): it runs, prints a line per epoch and the summary."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EPOCHS, WARMUP = 4, 2


@pytest.mark.parametrize("selector", ["ubs", "random", "hard"])
def test_demo_runs_and_reports_every_epoch(selector):
    cmd = [sys.executable, "python/demo.py", "--epochs", str(EPOCHS), "--warmup", str(WARMUP)]
    cmd += ["--samples", "600", "--labels", "8", "--device", "cpu", "--selector", selector]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    out = result.stdout

    lines = re.findall(r"^epoch +(\d+) +(\S+) .*val Macro-AUC (\S+) .*overhead +(\S+)%$", out, flags=re.MULTILINE)
    assert [int(t) for t, *_ in lines] == list(range(EPOCHS)), out
    phases = ["uniform"] * WARMUP + ["selection"] * (EPOCHS - WARMUP) if selector != "random" else ["uniform"] * EPOCHS
    assert [phase for _, phase, *_ in lines] == phases, out
    for _, _, auc, overhead in lines:
        assert 0.0 <= float(auc) <= 1.0
        assert 0.0 <= float(overhead) <= 100.0

    assert re.search(r"^best val Macro-AUC \S+ at epoch \d+$", out, flags=re.MULTILINE), out
    assert re.search(r"^selection overhead \S+% of ", out, flags=re.MULTILINE), out
    assert re.search(r"^ubs_kernels backends \(auto\) on cpu: \{.*'observe'", out, flags=re.MULTILINE), out
