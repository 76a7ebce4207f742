"""Smoke test of bench/: the benchmark scripts in ``--quick`` mode, then the plot, end to end.

Checks the contract of the results, not the speed: each script exits 0 (so every provider
passed its correctness gate against the reference), writes its CSV in the long format with the
documented columns, has a timing row for every provider (for observe: the per-step rows and the
whole-matrix ``ubs_<backend>_whole`` rows with their bandwidth metrics), and ``plot.py`` writes
one PNG per op.
"""

from __future__ import annotations

import csv
import math
import subprocess
import sys
from pathlib import Path

import pytest

import ubs_kernels as ubs

ROOT = Path(__file__).resolve().parents[1]
COLUMNS = [
    "op", "provider", "device", "isa", "n", "q", "tau", "T", "batch", "rowsum", "dtype", "data",
    "median_s", "p20_s", "p80_s", "metric", "value", "note",
    "hardware", "cores", "python", "torch", "numpy", "sklearn", "ubs_kernels", "git_sha", "timestamp",
]  # fmt: skip
BASELINES = ("torch_onehot_matmul", "numpy_bincount", "sklearn_pairwise")


def _run(script: str, *args: str) -> str:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), *args],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, f"{script} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bench")
    _run("bench_observe.py", "--quick", "--out", str(out))
    _run("bench_label_mi.py", "--quick", "--out", str(out))
    _run("bench_selector.py", "--quick", "--out", str(out))
    return out


def _rows(path: Path) -> list[dict[str, str]]:
    assert path.is_file(), f"{path.name} was not written"
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == COLUMNS
        return list(reader)


def _check_providers(rows: list[dict[str, str]], op: str, providers: set[str]) -> None:
    assert {r["op"] for r in rows} == {op}
    timed = [r for r in rows if r["metric"] == "time_s"]
    assert {r["provider"] for r in timed} == providers
    for r in timed:
        assert math.isfinite(float(r["median_s"])) and float(r["median_s"]) > 0, r
        assert float(r["p20_s"]) <= float(r["median_s"]) <= float(r["p80_s"]), r
        assert r["hardware"] and r["torch"] and r["git_sha"] and r["timestamp"], r


def test_label_mi_csv(results: Path) -> None:
    rows = _rows(results / "label_mi.csv")
    ubs_names = {f"ubs_{b}" for b in ubs.available_backends("label_mi", "cpu")}
    _check_providers(rows, "label_mi", ubs_names | set(BASELINES))
    for name in ubs_names:
        modes = {r["rowsum"] for r in rows if r["provider"] == name and r["metric"] == "time_s"}
        assert modes == {"False", "True"}, f"{name}: full and rowsum modes expected, got {modes}"
        speedups = {r["metric"] for r in rows if r["provider"] == name and r["metric"].startswith("speedup_vs_")}
        assert speedups == {f"speedup_vs_{b}" for b in BASELINES}


def test_observe_csv(results: Path) -> None:
    rows = _rows(results / "observe.csv")
    backends = ubs.available_backends("observe", "cpu")
    ubs_names = {f"ubs_{b}" for b in backends}
    whole_names = {f"ubs_{b}_whole" for b in backends}  # --quick runs ubs_torch on the whole matrix too
    # copy_same_bytes: the copy timed in alternation with each whole-matrix call.
    _check_providers(rows, "observe", ubs_names | whole_names | {"authors_style", "copy_same_bytes"})
    metrics = {r["metric"] for r in rows}
    assert {"epoch_s", "GB_per_s", "speedup_vs_authors_style"} <= metrics
    assert {r["dtype"] for r in rows if r["provider"] in ubs_names} == {"float16", "float32"}
    # Whole-matrix rows: one call over all n rows of the quick size 600x17 (batch = n).
    whole = [r for r in rows if r["provider"] in whole_names]
    assert {(r["n"], r["q"], r["batch"]) for r in whole} == {("600", "17", "600")}
    for name in whole_names - {"ubs_torch_whole"}:
        for dtype in ("float16", "float32"):
            got = {r["metric"]: r for r in whole if r["provider"] == name and r["dtype"] == dtype}
            expected = {"time_s", "GB_per_s", "bw_fraction", "copy_ratio", "same_bytes_copy_ratio"}
            assert expected <= set(got), f"{name} {dtype}: {set(got)}"
            for metric in ("GB_per_s", "bw_fraction", "copy_ratio", "same_bytes_copy_ratio"):
                value = float(got[metric]["value"])
                assert math.isfinite(value) and value > 0, got[metric]


def test_selector_csv(results: Path) -> None:
    rows = _rows(results / "selector.csv")
    _check_providers(
        rows,
        "selector",
        {
            "ubs_plan_weighted",
            "torch_multinomial_per_batch",
            "ubs_selector_epoch",
            "ubs_selector_draw",
            "ubs_selector_observe",
            "training_in_selected_epoch",
            "demo_mlp_epoch",
            "ubs_label_mi_rowsums",
            "ubs_selector_apply_staged",
            "ubs_selector_label_mi_rowsums",
            "ubs_selector_selection_log_probs",
            "ubs_selector_plan",
        },
    )
    metrics = {r["metric"] for r in rows}
    assert {"speedup_vs_torch_multinomial", "overhead_share", "overhead_share_vs_uniform_epoch"} <= metrics


def test_plot(results: Path) -> None:
    _run("plot.py", str(results))
    for op in ("label_mi", "observe", "selector"):
        png = results / f"{op}.png"
        assert png.is_file() and png.stat().st_size > 1000, f"{png.name} was not written"
