"""Smoke test of the per-epoch benchmarks: bench_uncertainty.py and bench_selection_log_probs.py.

Both scripts in ``--quick`` mode: each exits 0 (every provider passed its correctness gate),
writes its CSV in the long format, and has a timing row and the derived rows for every provider.
"""

from __future__ import annotations

import csv
import math
import subprocess
import sys
from pathlib import Path

import pytest
from test_bench_smoke import COLUMNS

import ubs_kernels as ubs

ROOT = Path(__file__).resolve().parents[1]


def _run(script: str, out: Path) -> list[dict[str, str]]:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), "--quick", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, f"{script} failed:\n{proc.stdout}\n{proc.stderr}"
    with open(out / script.removeprefix("bench_").replace(".py", ".csv"), newline="") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == COLUMNS
        return list(reader)


@pytest.mark.parametrize(
    ("script", "op", "metrics"),
    [
        ("bench_uncertainty.py", "uncertainty", {"GB_per_s", "bw_fraction", "copy_ratio"}),
        ("bench_selection_log_probs.py", "selection_log_probs", {"GB_per_s", "bw_fraction"}),
    ],
)
def test_bench_script_writes_csv(tmp_path, script, op, metrics):
    rows = _run(script, tmp_path)
    providers = {f"ubs_{b}" for b in ubs.available_backends(op, "cpu")}
    assert {r["op"] for r in rows} == {op}
    timed = [r for r in rows if r["metric"] == "time_s"]
    assert {r["provider"] for r in timed} == providers
    for r in timed:
        assert math.isfinite(float(r["median_s"])) and float(r["median_s"]) > 0, r
        assert r["hardware"] and r["torch"] and r["git_sha"] and r["timestamp"], r
    for name in providers:
        assert metrics <= {r["metric"] for r in rows if r["provider"] == name}, name
    if "ubs_cpu" in providers:
        assert any(r["metric"] == "speedup_vs_ubs_torch" for r in rows if r["provider"] == "ubs_cpu")
