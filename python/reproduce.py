"""Reproduce the paper's batch-selection comparison (Zhou et al., AAAI 2025, Table 3) on MULAN data.

For every dataset, iterative-stratified k-fold cross-validation (Sechidis et al. 2011, the
``iterative-stratification`` package); in each fold the held-out part is split in half
(again iteratively stratified) into a validation set, which picks the best epoch by Macro-AUC,
and a test set, on which that epoch's model is scored: the authors' protocol. Every selector
trains the same model (``--model mlp|clif|dela``) from the same initial weights in a fold
(paired comparison) with Adam (lr 1e-4, weight decay 1e-4, betas 0.9/0.999), batch 128, for
``--epochs`` epochs; the selectors' pressure schedule and warm-up are the paper's (T=5,
lambda1=0.5, s0=100, 5 warm-up epochs). ``ubs_noc`` is UBS with C = ones (the authors'
released code), the ablation of the label-correlation term.

Writes to ``--out`` (default ``out/reproduce`` in the repository, git-ignored):

* ``results.csv``: one row per (dataset, selector, fold): test metrics at the best validation epoch;
* ``history.csv``: one row per epoch: loss on the epoch's batches, loss on the training split,
  validation Macro-AUC, seconds, and what the selector did (pressure, P_max/P_min, distinct
  samples drawn, milliseconds in the selector and in training; for UBS the total-variation
  distance between P with C = MI and P with C = ones);
* ``table.md``: Table-3-style tables (mean ± std over folds, rank per dataset, average rank) for
  every metric, the paper's numbers beside ours (CLIF / DELA), each selector's gain over Random,
  UBS against UBS with C = ones, and how much C moved P;
* ``convergence_<dataset>[_<model>].png``: training loss and validation Macro-AUC per epoch (fold means);
* ``run.json``: arguments, library versions, dataset shapes and preprocessing notes, timings.

Example::

    python python/reproduce.py --datasets scene yeast --selectors random ubs ubs_noc --model clif --out out/clif

An existing ``results.csv`` in ``--out`` is never deleted: add to it with ``--resume`` (runs
already there are skipped), or choose another ``--out``. ``--report-only`` rebuilds the table
and plots from the CSVs.
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
import data as datamod  # noqa: E402
import metrics as metricmod  # noqa: E402
import models as modelmod  # noqa: E402
import paper  # noqa: E402
import training  # noqa: E402

import ubs_kernels as ubs  # noqa: E402

SELECTORS = training.SELECTORS
stratified_folds = training.stratified_folds

RESULT_FIELDS = [
    "dataset",
    "model",
    "selector",
    "fold",
    "best_epoch",
    *metricmod.METRICS,
    "macro_auc_defined",
    "auc_undefined_labels",
    "val_macro_auc",
    "n_train",
    "n_val",
    "n_test",
    "num_labels",
    "num_features",
    "seconds",
    "selection_seconds",
    "warmup",
]
HISTORY_FIELDS = [
    "dataset",
    "model",
    "selector",
    "fold",
    "epoch",
    "batch_loss",
    "train_loss",
    "val_macro_auc",
    "seconds",
    "pressure",
    "p_ratio",
    "distinct",
    "select_ms",
    "train_ms",
    "tv_mi_ones",
    "c_cv",
    "mean_mi",
]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="reproduce.py", description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    p.add_argument("--datasets", nargs="+", default=["scene", "yeast"], help="dataset names (see python/README.md)")
    p.add_argument(
        "--selectors",
        nargs="+",
        default=[s for s in SELECTORS if s not in ("ubs_noc", "ubs_s1")],
        choices=list(SELECTORS),
        help="the paper's six by default; ubs_noc: UBS with C = ones; ubs_s1: UBS's draw with uniform P (control)",
    )
    p.add_argument("--model", default="mlp", choices=modelmod.MODELS)
    p.add_argument("--folds", type=int, default=5, help="cross-validation folds (iteratively stratified)")
    p.add_argument("--only-folds", type=int, nargs="+", default=None, help="run only these folds (0-based) of --folds")
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--betas", type=float, nargs=2, default=(0.9, 0.999))
    common.add_warmup_argument(p)
    p.add_argument("--window", type=int, default=5, help="T: predictions kept per sample")
    p.add_argument("--lam", type=float, default=0.5, help="lambda1 of Eq. 5")
    p.add_argument("--bins", type=int, default=10, help="tau: bins per label for the mutual information")
    p.add_argument("--s0", type=float, default=100.0, help="initial selection pressure (UBS, Recent, Hard)")
    p.add_argument("--hidden", type=int, nargs="*", default=[512, 512], help="MLP hidden widths")
    p.add_argument("--dropout", type=float, default=0.2, help="MLP dropout")
    p.add_argument(
        "--train-loss-samples",
        type=int,
        default=0,
        help="loss on the training split each epoch over a fixed sample of this many (0: the whole split)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", default=None, help="default: $UBS_DATA_DIR, else <repo>/../shared/data")
    p.add_argument("--min-positives", type=int, default=datamod.MIN_POSITIVES, help="drop labels with <= this many")
    p.add_argument("--device", default="auto", help="auto (cuda when available), cpu, cuda, cuda:1, ...")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--out", default=str(common.OUT_ROOT / "reproduce"), help="output directory (default out/reproduce)")
    p.add_argument("--resume", action="store_true", help="add to the results in --out, skipping runs already there")
    p.add_argument("--report-only", action="store_true", help="only rebuild table.md and the plots from the CSVs")
    p.add_argument("--no-progress", action="store_true", help="no tqdm progress bar")
    args = p.parse_args(argv)
    if args.folds < 2:
        p.error("--folds must be >= 2")
    if args.only_folds is not None and not all(0 <= f < args.folds for f in args.only_folds):
        p.error(f"--only-folds must be in 0..{args.folds - 1}")
    common.resolve_warmup(p, args)
    return args


# --------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------


def _fmt(v):
    """CSV cell: floats with 7 significant digits (the tables show 4 decimals); None as empty."""
    if v is None:
        return ""
    return f"{v:.7g}" if isinstance(v, float) else v


def _append_csv(path: Path, fields: list[str], rows: list[dict]) -> None:
    """Append rows; a file written by an earlier version keeps its own columns."""
    if path.exists():
        with path.open(newline="") as fh:
            fields = next(csv.reader(fh), fields)
    new = not path.exists()
    with path.open("a", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore")
        if new:
            w.writeheader()
        w.writerows({k: _fmt(v) for k, v in row.items()} for row in rows)


def _read_csv(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def _rank(values: list[float], higher_better: bool) -> list[float]:
    """Ranks 1..k of the 4-decimal values, ties sharing the best rank (the paper's Table 3 style)."""
    rounded = [round(v, 4) for v in values]
    return [1 + sum((o > v) if higher_better else (o < v) for o in rounded) for v in rounded]


def _float(row: dict, key: str) -> float | None:
    value = row.get(key, "")
    return float(value) if value not in ("", None) else None


def summarise(rows: list[dict]) -> dict:
    """{(dataset, model): {selector: {metric: [values over folds]}}} from results.csv rows."""
    out: dict = {}
    for r in rows:
        cell = out.setdefault((r["dataset"], r["model"]), {}).setdefault(r["selector"], {})
        for m in (*metricmod.METRICS, "macro_auc_defined", "seconds", "selection_seconds"):
            cell.setdefault(m, []).append(float(r[m]))
        cell.setdefault("fold", []).append(int(r["fold"]))
        cell.setdefault("best_epoch", []).append(int(r["best_epoch"]))
        cell.setdefault("warmup", []).append(int(_float(r, "warmup") or 0))
    return out


def chosen_in_warmup(cell: dict) -> bool:
    """Whether every fold's best epoch lies in the selector's warm-up (uniform batches, as Random's)."""
    return all(w > 0 and e < w for e, w in zip(cell["best_epoch"], cell["warmup"], strict=True))


def _gain_cell(diffs: list[float], with_p: bool = False) -> str:
    better, worse = sum(d > 0 for d in diffs), sum(d < 0 for d in diffs)
    cell = f"{np.mean(diffs):+.4f} ({better}/{worse})"
    if with_p and better + worse > 0:
        from scipy.stats import wilcoxon

        p = wilcoxon(diffs).pvalue
        cell += ", p<0.001" if p < 0.001 else f", p={p:.3f}"
    return cell


def _paired(cells: dict, s: str, base: str) -> list[float]:
    ref = dict(zip(cells[base]["fold"], cells[base]["macro_auc"], strict=True))
    return [v - ref[f] for f, v in zip(cells[s]["fold"], cells[s]["macro_auc"], strict=True) if f in ref]


WARMUP_CELL = "no selection (best epochs in warm-up)"


def gain_table(summary: dict, keys: list, order: list[str], model: str, base: str, title: str, intro: str) -> list[str]:
    """Paired Macro-AUC differences of each selector in ``order`` to ``base`` per dataset, pooled with Wilcoxon."""
    others = [s for s in order if s != base]
    lines = [
        f"### {title}, {model.upper()}",
        "",
        intro,
        "",
        "| Dataset | " + " | ".join(SELECTORS[s][0] for s in others) + " |",
        "|---|" + "---|" * len(others),
    ]
    pooled: dict[str, list[float]] = {s: [] for s in others}
    for key in keys:
        cells = summary[key]
        if base not in cells:
            continue
        row = []
        for s in others:
            diffs = _paired(cells, s, base) if s in cells else []
            if not diffs:
                row.append("–")
            elif chosen_in_warmup(cells[s]):
                row.append(WARMUP_CELL)
            else:
                pooled[s] += diffs
                row.append(_gain_cell(diffs))
        lines.append(f"| {key[0]} | " + " | ".join(row) + " |")
    if len(keys) > 1:
        count = max(len(v) for v in pooled.values())
        row = [_gain_cell(pooled[s], with_p=True) if pooled[s] else "–" for s in others]
        lines.append(f"| all ({count} folds) | " + " | ".join(row) + " |")
    return [*lines, ""]


def warmup_notes(summary: dict) -> list[str]:
    """One sentence per (dataset, selector) whose every best epoch is a warm-up epoch."""
    notes = []
    for (dataset, model), cells in summary.items():
        empty = [SELECTORS[s][0] for s in cells if s in SELECTORS and chosen_in_warmup(cells[s])]
        if empty:
            notes.append(
                f"{dataset} ({model.upper()}): every best epoch of {', '.join(empty)} is a warm-up epoch "
                f"(uniform batches, the same as Random's), so selection played no part in the models compared: "
                f"that comparison is empty; run more epochs."
            )
    return notes


def markdown_tables(rows: list[dict], selectors: list[str] | None = None, history: list[dict] | None = None) -> str:
    """Table-3-style Markdown: per metric, mean ± std over folds (rank), average rank; gains; diagnostics."""
    summary = summarise(rows)
    if not summary:
        return "No results.\n"
    present = {s for cells in summary.values() for s in cells}
    order = [s for s in (selectors or SELECTORS) if s in present]
    head = "| Dataset | " + " | ".join(SELECTORS[s][0] for s in order) + " |"
    sep = "|---|" + "---|" * len(order)
    lines = []
    notes = warmup_notes(summary)
    if notes:
        lines += ["**Note.** " + " ".join(notes), ""]
    models = sorted({m for _, m in summary})
    for model in models:
        keys = [k for k in summary if k[1] == model]
        for metric, higher in metricmod.METRICS.items():
            arrow = "↑" if higher else "↓"
            lines += [f"### {metricmod.LABELS[metric]} ({arrow}), {model.upper()}", ""]
            with_paper = metric == "macro_auc" and paper.TABLE3.get(model)
            if with_paper:
                lines += [
                    f"Each dataset's second row: the paper's Table 3 with {model.upper()} (its rank among its six "
                    "selectors; it has no UBS C=1 column).",
                    "",
                ]
            lines += [head, sep]
            rank_sum, rank_n = dict.fromkeys(order, 0.0), dict.fromkeys(order, 0)
            for key in keys:
                cells = summary[key]
                avail = [s for s in order if s in cells]
                means = [float(np.mean(cells[s][metric])) for s in avail]
                ranks = dict(zip(avail, _rank(means, higher), strict=True))
                # A partial run (--only-folds) can leave selectors with different fold counts: say so in
                # each cell, and give no spread for a single fold.
                counts = {len(cells[s][metric]) for s in avail}
                row = []
                for s in order:
                    if s not in cells:
                        row.append("–")
                        continue
                    v = np.asarray(cells[s][metric])
                    spread = f"±{v.std():.4f}" if len(v) > 1 else ""
                    nfolds = f", {len(v)} fold{'s' if len(v) > 1 else ''}" if len(counts) > 1 else ""
                    row.append(f"{v.mean():.4f}{spread} ({ranks[s]}{nfolds})")
                    rank_sum[s] += ranks[s]
                    rank_n[s] += 1
                lines.append(f"| {key[0]} | " + " | ".join(row) + " |")
                published = paper.macro_auc(model, key[0]) if with_paper else None
                if published:
                    names = list(published)
                    pranks = dict(zip(names, _rank([published[s] for s in names], True), strict=True))
                    cells_p = [f"{published[s]:.4f} ({pranks[s]})" if s in published else "–" for s in order]
                    lines.append("| ↳ paper | " + " | ".join(cells_p) + " |")
            avg = [f"{rank_sum[s] / rank_n[s]:.2f}" if rank_n[s] else "–" for s in order]
            lines += ["| Avg (Rank) | " + " | ".join(avg) + " |", ""]

        if "random" in order and len(order) > 1:
            lines += gain_table(
                summary,
                keys,
                order,
                model,
                "random",
                "Gain over Random in test Macro-AUC",
                "Mean over folds of (selector − Random) on the same fold; in brackets the folds where the selector "
                "is better / worse than Random. Last row: all folds of all datasets, with the two-sided Wilcoxon "
                f"signed-rank p-value of the paired differences. “{WARMUP_CELL}”: every best epoch of the selector "
                "was a warm-up epoch, so the comparison is empty.",
            )
        if "ubs" in order and "ubs_noc" in order:
            lines += gain_table(
                summary,
                keys,
                ["ubs_noc", "ubs"],
                model,
                "ubs_noc",
                "The correlation term: UBS (C = mutual information) against UBS with C = ones",
                "Mean over folds of (UBS − UBS C=1) in test Macro-AUC, same folds, seeds and initial weights; "
                "folds better / worse; last row pooled, with the Wilcoxon p-value.",
            )

        if "ubs" in order and "ubs_s1" in order:
            lines += gain_table(
                summary,
                keys,
                ["ubs_s1", "ubs"],
                model,
                "ubs_s1",
                "Selection against the draw: UBS against UBS with s0 = 1 (uniform P, the same draw)",
                "Mean over folds of (UBS − UBS s0=1) in test Macro-AUC. UBS s0=1 draws its batches as UBS does "
                "(each batch without replacement, batches independent: about two thirds of the samples per "
                "epoch, more when a batch is a large share of n) "
                "from a uniform P, so this difference is what the uncertainty-based P adds to that draw.",
            )

        lines += [
            f"### Seconds per run, {model.upper()}",
            "",
            "Wall time of one run (training, selection and the per-epoch evaluation); in brackets the share spent "
            "in the selector (epoch planning, drawing, observe; not its construction).",
            "",
            head,
            sep,
        ]
        for key in keys:
            cells = summary[key]
            row = []
            for s in order:
                if s not in cells:
                    row.append("–")
                    continue
                sec, sel = np.mean(cells[s]["seconds"]), np.mean(cells[s]["selection_seconds"])
                row.append(f"{sec:.1f} ({100 * sel / max(sec, 1e-9):.0f}%)")
            lines.append(f"| {key[0]} | " + " | ".join(row) + " |")
        lines.append("")
        if history:
            lines += correlation_table(history, model)
    return "\n".join(lines)


def correlation_table(history: list[dict], model: str) -> list[str]:
    """How much the label correlation term moved P, per dataset (UBS runs, selection epochs)."""
    stats: dict = {}
    for r in history:
        if r["model"] != model or r["selector"] not in training.UBS_NAMES:
            continue
        tv = _float(r, "tv_mi_ones")
        if tv is None:
            continue
        g = stats.setdefault((r["dataset"], r["selector"]), {"tv": [], "cv": [], "mi": [], "ratio": [], "distinct": []})
        g["tv"].append(tv)
        g["cv"].append(_float(r, "c_cv"))
        g["mi"].append(_float(r, "mean_mi"))
        g["ratio"].append(_float(r, "p_ratio"))
        g["distinct"].append(_float(r, "distinct"))
    if not stats:
        return []
    lines = [
        f"### How much C moves P, {model.upper()}",
        "",
        "Over the selection epochs of every fold, from the U each epoch was planned with: the total-variation "
        "distance between P with C = mutual information (Eq. 6) and P with C = ones (mean, max), the spread of "
        "the MI row sums c = C·1 (std / mean; P depends on c only through its spread, since w = U c is min-max "
        "normalised), the mean off-diagonal MI, P_max / P_min (= s_t) and the share of distinct training "
        "samples drawn per epoch. The selector's P is the MI one for UBS and the ones one for UBS C=1.",
        "",
        "| Dataset | selector | TV(P_MI, P_ones) mean | max | c std/mean | mean MI | Pmax/Pmin (mean) | distinct |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for (dataset, sel), g in stats.items():
        lines.append(
            f"| {dataset} | {SELECTORS[sel][0]} | {np.mean(g['tv']):.4f} | {np.max(g['tv']):.4f} | "
            f"{np.mean(g['cv']):.4f} | {np.mean(g['mi']):.4f} | {np.mean(g['ratio']):.1f} | "
            f"{np.mean(g['distinct']):.2f} |"
        )
    return [*lines, ""]


def plot_convergence(history: list[dict], out_dir: Path, selectors: list[str] | None = None) -> list[Path]:
    """One PNG per (dataset, model): batch loss, training-split loss and validation Macro-AUC per epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups: dict = {}
    for r in history:
        g = groups.setdefault((r["dataset"], r["model"]), {}).setdefault(r["selector"], {})
        for col in ("batch_loss", "train_loss", "val_macro_auc"):
            value = _float(r, col)
            if value is not None:
                g.setdefault(col, {}).setdefault(int(r["epoch"]), []).append(value)
    paths = []
    for (dataset, model), by_sel in groups.items():
        fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
        panels = [
            ("batch_loss", "training objective (epoch's batches)"),
            ("train_loss", "BCE on the training split"),
            ("val_macro_auc", "validation Macro-AUC"),
        ]
        for ax, (col, title) in zip(axes, panels, strict=True):
            tails = []
            for s in [s for s in (selectors or SELECTORS) if s in by_sel]:
                if col not in by_sel[s]:
                    continue
                epochs = sorted(by_sel[s][col])
                curve = [float(np.mean(by_sel[s][col][e])) for e in epochs]
                ax.plot(epochs, curve, label=SELECTORS[s][0], lw=1.4)
                tails += curve[len(curve) // 10 :]
            if tails:  # zoom past the first tenth of training
                lo, hi = min(tails), max(tails)
                ax.set_ylim(lo - 0.05 * (hi - lo + 1e-9), hi + 0.05 * (hi - lo + 1e-9))
            ax.set_title(title)
            ax.set_xlabel("epoch")
            ax.grid(alpha=0.3)
        axes[2].legend()
        fig.suptitle(f"{dataset} ({model.upper()}), mean over folds")
        fig.tight_layout()
        name = f"convergence_{dataset}.png" if model == "mlp" else f"convergence_{dataset}_{model}.png"
        fig.savefig(out_dir / name, dpi=110)
        plt.close(fig)
        paths.append(out_dir / name)
    return paths


def convergence_table(history: list[dict], selectors: list[str] | None = None, points: int = 5) -> str:
    """Markdown: validation Macro-AUC (mean over folds) at ``points`` evenly spaced epochs, per dataset."""
    curves: dict = {}
    for r in history:
        g = curves.setdefault((r["dataset"], r["model"]), {}).setdefault(r["selector"], {})
        g.setdefault(int(r["epoch"]), []).append(float(r["val_macro_auc"]))
    lines = []
    for (dataset, model), by_sel in curves.items():
        order = [s for s in (selectors or SELECTORS) if s in by_sel]
        last = min(max(by_sel[s]) for s in order)
        marks = sorted({max(0, round((k + 1) * (last + 1) / points) - 1) for k in range(points)})
        if not lines:
            lines += [
                "### Validation Macro-AUC during training (mean over folds; best per epoch in bold)",
                "",
                "| Dataset | Epoch | " + " | ".join(SELECTORS[s][0] for s in order) + " |",
                "|---|---|" + "---|" * len(order),
            ]
        for e in marks:
            vals = [float(np.mean(by_sel[s].get(e, [np.nan]))) for s in order]
            top = max(round(v, 4) for v in vals)
            cells = [f"**{v:.4f}**" if round(v, 4) == top else f"{v:.4f}" for v in vals]
            lines.append(f"| {dataset} ({model.upper()}) | {e + 1} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n" if lines else ""


def write_report(out_dir: Path, selectors: list[str] | None = None) -> list[str]:
    """Rebuild table.md and the plots from the CSVs; return the warm-up notes (also in table.md)."""
    rows = _read_csv(out_dir / "results.csv")
    history = _read_csv(out_dir / "history.csv")
    text = markdown_tables(rows, selectors, history)
    (out_dir / "table.md").write_text(
        "# Batch selection comparison (test metrics at the best validation epoch)\n\n"
        "Mean ± std over folds, (rank among the selectors for that dataset; ties share the best rank), "
        "as in the paper's Table 3. Written by `python/reproduce.py`.\n\n"
        + text
        + "\n"
        + convergence_table(history, selectors)
    )
    plot_convergence(history, out_dir, selectors)
    return warmup_notes(summarise(rows))


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


def run_config(args, ds: datamod.MultiLabelData) -> training.RunConfig:
    if args.model == "mlp":
        options = {"hidden": args.hidden, "dropout": args.dropout}
    elif args.model == "clif":
        options = modelmod.clif_settings(ds.name)
    else:
        options = {}
    return training.RunConfig(
        model=args.model,
        model_options=options,
        epochs=args.epochs,
        warmup=args.warmup,
        batch_size=args.batch_size,
        lr=args.lr,
        weight_decay=args.weight_decay,
        betas=tuple(args.betas),
        window=args.window,
        lam=args.lam,
        bins=args.bins,
        s0=args.s0,
        train_loss=True,
    )


def source_version() -> dict:
    """The commit the run's code comes from, and whether the library or the drivers differed from it."""
    import subprocess

    def git(*cmd):
        done = subprocess.run(["git", *cmd], cwd=common.REPO_ROOT, capture_output=True, text=True, check=False)
        return done.stdout.strip() if done.returncode == 0 else None

    changed = git("status", "--porcelain", "ubs_kernels", "csrc", "python")
    return {"commit": git("rev-parse", "HEAD"), "uncommitted": changed}


def main(argv=None) -> None:
    args = parse_args(argv)
    out_dir = Path(args.out)
    results_path, history_path = out_dir / "results.csv", out_dir / "history.csv"
    if args.report_only:
        if not results_path.exists():
            raise SystemExit(f"reproduce.py: no {results_path} to report on")
        for note in write_report(out_dir, args.selectors):
            print(note)
        print(f"wrote {out_dir / 'table.md'} and the plots")
        return
    if not args.resume and (results_path.exists() or history_path.exists()):
        raise SystemExit(
            f"reproduce.py: {out_dir} already holds results of an earlier run, which are never deleted: "
            f"add to them with --resume, or give another --out"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    device = common.resolve_device(args.device, "reproduce.py")
    if args.threads:
        torch.set_num_threads(args.threads)
    missing = [SELECTORS[s][1] for s in args.selectors if not hasattr(ubs, SELECTORS[s][1])]
    if missing:
        raise SystemExit(f"reproduce.py: ubs_kernels {ubs.__version__} lacks {missing}")
    done = {(r["dataset"], r["model"], r["selector"], int(r["fold"])) for r in _read_csv(results_path)}

    datasets = []
    for name in args.datasets:
        ds = datamod.load_dataset(name, args.data_dir, min_positives=args.min_positives, seed=args.seed)
        if any(d.name == ds.name for d in datasets):  # e.g. several names -> synthetic without the data
            tqdm.write(f"{name}: same dataset as before ({ds.name}), skipped")
            continue
        datasets.append(ds)
        tqdm.write(ds.summary() + "  [" + "; ".join(ds.notes) + "]")

    run_path = out_dir / "run.json"
    previous = json.loads(run_path.read_text()) if args.resume and run_path.exists() else {}
    run_info = {
        "argv": sys.argv,
        "args": vars(args),
        "device": str(device),
        "source": source_version(),
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "ubs_kernels": ubs.__version__,
            "numpy": np.__version__,
        },
        "datasets": previous.get("datasets", {})
        | {
            ds.name: {
                "shape": ds.shape,
                "source": ds.source,
                "notes": ds.notes,
                "model_options": run_config(args, ds).model_options,
            }
            for ds in datasets
        },
        "seconds": previous.get("seconds", {}),
    }
    if previous:
        run_info["previous_argv"] = previous.get("previous_argv", []) + [previous.get("argv")]
    folds_run = args.only_folds if args.only_folds is not None else list(range(args.folds))
    total = len(datasets) * len(folds_run) * len(args.selectors) * args.epochs
    bar = tqdm(total=total, unit="epoch", disable=args.no_progress, mininterval=1.0, dynamic_ncols=True)
    t_all = time.perf_counter()
    for ds in datasets:
        t_ds = time.perf_counter()
        cfg = run_config(args, ds)
        for fold, (train, val, test) in enumerate(stratified_folds(ds.y, args.folds, args.seed)):
            if fold not in folds_run:
                continue
            split = training.make_split(ds.x, ds.y, train, val, test)
            if args.train_loss_samples and len(train) > args.train_loss_samples:
                # A fixed sample of the training split for the per-epoch training loss (the same for every selector).
                pick = np.random.default_rng(args.seed * 1000 + fold).choice(len(train), args.train_loss_samples, False)
                split["train_loss_rows"] = np.sort(pick)
            for name in args.selectors:
                if (ds.name, args.model, name, fold) in done:
                    bar.update(args.epochs)
                    continue
                bar.set_description(f"{ds.name} fold {fold + 1}/{args.folds} {SELECTORS[name][0]}")

                def on_epoch(record):
                    bar.update(1)
                    bar.set_postfix(val_auc=f"{record['val_macro_auc']:.4f}", refresh=False)

                seed = args.seed * 1000 + fold
                result, history = training.train_one(name, split, cfg, seed, device, on_epoch)
                tag = {"dataset": ds.name, "model": args.model, "selector": name, "fold": fold}
                result.update(
                    tag,
                    n_train=len(train),
                    n_val=len(val),
                    n_test=len(test),
                    num_labels=ds.y.shape[1],
                    num_features=ds.x.shape[1],
                )
                _append_csv(results_path, RESULT_FIELDS, [result])
                _append_csv(history_path, HISTORY_FIELDS, [{**tag, **h} for h in history])
        run_info["seconds"][ds.name] = round(time.perf_counter() - t_ds, 1)
        write_report(out_dir, args.selectors)
        run_path.write_text(json.dumps(run_info, indent=2, default=str) + "\n")
    bar.close()
    run_info["seconds"]["total"] = round(time.perf_counter() - t_all, 1)
    run_path.write_text(json.dumps(run_info, indent=2, default=str) + "\n")
    for note in write_report(out_dir, args.selectors):
        tqdm.write(note)
    tqdm.write(f"wrote {results_path}, {history_path}, {out_dir / 'table.md'} and the plots in {out_dir}")


if __name__ == "__main__":
    main()
