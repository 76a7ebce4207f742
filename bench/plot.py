"""Plot the benchmark CSVs of a folder: one PNG per op, median time per call against problem size.

Reads every ``*.csv`` in DIR (the long format of ``bench/harness.py``; only ``metric=time_s``
rows are plotted) and writes ``DIR/<op>.png``: log-scale median time (bars from p20 to p80)
against the sizes, labelled ``n×q`` and ordered by ``n*q``, one line per provider (and mode:
``rowsum`` for label_mi, the history dtype for observe). Extrapolated timings (sklearn on a
subset of pairs) are drawn as hollow markers on dashed segments.

    python bench/plot.py bench/results
"""

from __future__ import annotations

import argparse
import csv
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

TITLES = {
    "label_mi": "label_mi (Eq. 6): all label-pair MI per epoch",
    "observe": "observe (Eq. 1, 4, 5): one training step",
    "uncertainty": "uncertainty (Eq. 1, 4, 5): all n rows from the history",
    "selection_log_probs": "selection_log_probs (Eq. 7-10): log P of every sample",
    "selector": "selector: epoch planning (n) and a whole epoch's overhead (n×q)",
}


def size(row: dict[str, str]) -> tuple[int, int]:
    """``(n, q)``; q is 0 for rows without a label count (epoch planning)."""
    return int(row["n"] or 0), int(row["q"] or 0)


def read_rows(folder: Path) -> list[dict[str, str]]:
    rows: list[dict[str, str]] = []
    for path in sorted(folder.glob("*.csv")):
        with open(path, newline="") as f:
            rows.extend(csv.DictReader(f))
    return rows


def _detail(row: dict[str, str]) -> bool:
    """Rows the plots leave to the CSV: the selector's parts of drawing batches, and its epoch
    rows on data other than the demo's (one plot per op stays readable)."""
    if row.get("op") != "selector":
        return False
    parts = ("apply_staged", "label_mi_rowsums", "selection_log_probs", "plan")
    return row.get("data", "") not in ("", "demo") or row["provider"] in [f"ubs_selector_{p}" for p in parts]


def series_name(row: dict[str, str], dtypes: set[str]) -> str:
    name = row["provider"]
    if row.get("rowsum") == "True":
        name += " rowsum"
    if len(dtypes) > 1 and row.get("dtype"):
        name += f" [{row['dtype']}]"
    if row.get("device") and row["device"] != "cpu":
        name += f" ({row['device']})"
    if row.get("data"):  # selector epoch rows: the training data
        name += f" / {row['data']}"
    return name


def plot_op(op: str, rows: list[dict[str, str]], out: Path) -> Path:
    sizes = sorted({size(r) for r in rows}, key=lambda s: (s[0] * max(s[1], 1), s))
    xpos = {s: i for i, s in enumerate(sizes)}
    dtypes = {r.get("dtype", "") for r in rows}
    series: dict[str, list[dict[str, str]]] = defaultdict(list)
    for r in rows:
        series[series_name(r, dtypes)].append(r)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(sizes) + 3), 5))
    for ci, name in enumerate(sorted(series)):
        pts = sorted(series[name], key=lambda r: xpos[size(r)])
        x = [xpos[size(r)] for r in pts]
        y = [float(r["median_s"]) for r in pts]
        lo = [yi - float(r["p20_s"]) for yi, r in zip(y, pts, strict=True)]
        hi = [float(r["p80_s"]) - yi for yi, r in zip(y, pts, strict=True)]
        extra = ["extrapolated" in r["note"] for r in pts]
        color = f"C{ci % 10}"
        ax.plot([], [], marker="o", color=color, label=name)
        for i in range(len(x) - 1):  # dashed where either end is an extrapolation
            style = "--" if extra[i] or extra[i + 1] else "-"
            ax.plot(x[i : i + 2], y[i : i + 2], linestyle=style, color=color, linewidth=1.5)
        ax.errorbar(x, y, yerr=[lo, hi], fmt="none", ecolor=color, capsize=3, linewidth=1)
        for xi, yi, ex in zip(x, y, extra, strict=True):
            ax.plot(xi, yi, marker="o", markersize=7, color=color, markerfacecolor="white" if ex else color)
    if any("extrapolated" in r["note"] for r in rows):
        ax.plot([], [], marker="o", linestyle="--", color="gray", markerfacecolor="white",
                label="hollow / dashed: extrapolated")  # fmt: skip
    ax.set_yscale("log")
    ax.set_xticks(range(len(sizes)))
    ax.set_xticklabels([f"{n}×{q}" if q else f"{n}" for n, q in sizes])
    ax.set_xlabel("problem size n×q (samples × labels)")
    unit = "per step" if op == "observe" else "per call"
    ax.set_ylabel(f"median time {unit} [s] (bars: p20-p80)")
    hw = rows[0].get("hardware", "")
    ax.set_title(f"{TITLES.get(op, op)}\n{hw}, {rows[0].get('cores', '?')} cores, torch {rows[0].get('torch', '')}",
                 fontsize=10)  # fmt: skip
    ax.grid(True, which="both", axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    path = out / f"{op}.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("dir", type=Path, help="folder with the benchmark CSVs; PNGs are written there")
    args = p.parse_args(argv)
    by_op: dict[str, list[dict[str, str]]] = defaultdict(list)
    for r in read_rows(args.dir):
        if r.get("metric") == "time_s" and r.get("median_s") and not _detail(r):
            by_op[r["op"]].append(r)
    if not by_op:
        raise SystemExit(f"no timing rows in {args.dir}/*.csv")
    for op, rows in sorted(by_op.items()):
        print(f"wrote {plot_op(op, rows, args.dir)}")


if __name__ == "__main__":
    main()
