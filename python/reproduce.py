"""Reproduce the paper's batch-selection comparison (Zhou et al., AAAI 2025, Table 3) on MULAN data.

For every dataset, iterative-stratified k-fold cross-validation (Sechidis et al. 2011, the
``iterative-stratification`` package); in each fold the held-out part is split in half
(again iteratively stratified) into a validation set, which picks the best epoch by Macro-AUC,
and a test set, on which that epoch's model is scored: the authors' protocol. Every selector
trains the same model from the same initial weights in a fold (paired comparison) with Adam
(lr 1e-4, weight decay 1e-4, betas 0.9/0.999), batch 128, for ``--epochs`` epochs; the
selectors' pressure schedule and warm-up are theirs (T=5, lambda1=0.5, s0=100, 5 warm-up epochs).

Writes to ``--out``:

* ``results.csv``: one row per (dataset, selector, fold): test metrics at the best validation epoch;
* ``history.csv``: one row per epoch: loss on the epoch's batches, loss on the whole training
  split, validation Macro-AUC, seconds;
* ``table.md``: Table-3-style tables (mean ± std over folds, rank per dataset, average rank) for
  every metric, and each selector's gain over Random;
* ``convergence_<dataset>.png``: training loss and validation Macro-AUC per epoch (fold means);
* ``run.json``: arguments, library versions, dataset shapes and preprocessing notes, timings.

Example::

    python python/reproduce.py --datasets scene yeast --selectors random ubs --folds 5 --epochs 100 --out results

``--resume`` skips runs already in ``results.csv``; ``--report-only`` rebuilds the table and
plots from the CSVs in ``--out``.
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import math
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))

import data as datamod  # noqa: E402
import metrics as metricmod  # noqa: E402
import models as modelmod  # noqa: E402

import ubs_kernels as ubs  # noqa: E402

# name -> (column title as in the paper's Table 3, ubs_kernels class)
SELECTORS: dict[str, tuple[str, str]] = {
    "random": ("Random", "RandomSelector"),
    "balance": ("Balance", "BalanceSelector"),
    "active": ("Active", "ActiveBiasSelector"),
    "recent": ("Recent", "RecencyBiasSelector"),
    "hard": ("Hard", "HardImbalanceSelector"),
    "ubs": ("UBS", "UncertaintyBatchSelector"),
}
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
]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--datasets", nargs="+", default=["scene", "yeast"], help="dataset names (see python/README.md)")
    p.add_argument("--selectors", nargs="+", default=list(SELECTORS), choices=list(SELECTORS))
    p.add_argument("--model", default="mlp", choices=modelmod.MODELS)
    p.add_argument("--folds", type=int, default=5, help="cross-validation folds (iteratively stratified)")
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--betas", type=float, nargs=2, default=(0.9, 0.999))
    p.add_argument("--warmup", type=int, default=5, help="warm-up epochs of uniform batches (gamma)")
    p.add_argument("--window", type=int, default=5, help="T: predictions kept per sample")
    p.add_argument("--lam", type=float, default=0.5, help="lambda1 of Eq. 5")
    p.add_argument("--bins", type=int, default=10, help="tau: bins per label for the mutual information")
    p.add_argument("--s0", type=float, default=100.0, help="initial selection pressure (UBS, Recent, Hard)")
    p.add_argument("--hidden", type=int, nargs="*", default=[512, 512], help="MLP hidden widths")
    p.add_argument("--dropout", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", default=None, help="default: $UBS_DATA_DIR, else <repo>/../shared/data")
    p.add_argument("--min-positives", type=int, default=datamod.MIN_POSITIVES, help="drop labels with <= this many")
    p.add_argument("--device", default="auto", help="auto (cuda when available), cpu, cuda, cuda:1, ...")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--out", default="results", help="output directory")
    p.add_argument("--resume", action="store_true", help="skip (dataset, selector, fold) runs already in results.csv")
    p.add_argument("--report-only", action="store_true", help="only rebuild table.md and the plots from the CSVs")
    p.add_argument("--no-progress", action="store_true", help="no tqdm progress bar")
    args = p.parse_args(argv)
    if args.folds < 2:
        p.error("--folds must be >= 2")
    if args.epochs < 1:
        p.error("--epochs must be >= 1")
    if args.warmup < 0:
        p.error("--warmup must be >= 0")
    if args.warmup >= args.epochs:  # e.g. a 3-epoch smoke run: keep one selection epoch
        args.warmup = args.epochs - 1
        print(f"reproduce.py: --warmup lowered to {args.warmup} (must be below --epochs)", file=sys.stderr)
    return args


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("reproduce.py: --device cuda but torch sees no CUDA device")
    return device


# --------------------------------------------------------------------------------------------
# Folds
# --------------------------------------------------------------------------------------------


def stratified_folds(y: np.ndarray, folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(train, val, test) index arrays per fold.

    ``MultilabelStratifiedKFold`` (iterative stratification) gives train / held-out; the held-out
    part is halved into validation and test by a 2-fold ``MultilabelStratifiedKFold`` (the
    authors' code halves it too, with a plain random split).
    """
    from iterstrat.ml_stratifiers import MultilabelStratifiedKFold

    dummy = np.zeros((len(y), 1))
    out = []
    kfold = MultilabelStratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    for f, (train, held) in enumerate(kfold.split(dummy, y)):
        half = MultilabelStratifiedKFold(n_splits=2, shuffle=True, random_state=seed + 1 + f)
        val_pos, test_pos = next(half.split(dummy[held], y[held]))
        out.append((np.sort(train), np.sort(held[val_pos]), np.sort(held[test_pos])))
    return out


# --------------------------------------------------------------------------------------------
# One training run
# --------------------------------------------------------------------------------------------


def make_selector(name: str, y_train: np.ndarray, x_train: np.ndarray, args, seed: int, device: torch.device):
    cls = getattr(ubs, SELECTORS[name][1], None)
    if cls is None:
        raise SystemExit(f"reproduce.py: ubs_kernels has no {SELECTORS[name][1]} (selector {name!r})")
    n, q = y_train.shape
    common = {"batch_size": args.batch_size, "epochs": args.epochs, "seed": seed, "device": str(device)}
    labels = torch.from_numpy(y_train.astype(np.float32))
    if name == "random":
        return cls(n, **common)
    if name == "balance":
        return cls(labels, **common)
    if name == "active":
        return cls(n, q, warmup=args.warmup, **common)
    if name == "recent":
        return cls(n, q, window=args.window, s0=args.s0, warmup=args.warmup, **common)
    if name == "hard":
        return cls(labels, features=torch.from_numpy(x_train), s0=args.s0, warmup=args.warmup, **common)
    return cls(n, q, window=args.window, lam=args.lam, bins=args.bins, s0=args.s0, warmup=args.warmup, **common)


@torch.no_grad()
def predict(model: torch.nn.Module, x: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    """Sigmoid scores of ``x`` in eval mode, as a float32 tensor on x's device."""
    model.eval()
    out = torch.cat([model(x[i : i + chunk]).float().sigmoid() for i in range(0, len(x), chunk)])
    model.train()
    return out


def train_one(name: str, split: dict, args, seed: int, device: torch.device, on_epoch=None) -> tuple[dict, list[dict]]:
    """Train one model with selector ``name``; return test metrics at the best validation epoch and the history."""
    x_tr, y_tr = split["x_train"], split["y_train"]
    n, d = x_tr.shape
    q = y_tr.shape[1]
    xt = torch.as_tensor(x_tr, device=device)
    yt = torch.as_tensor(y_tr, dtype=torch.float32, device=device)
    xv = torch.as_tensor(split["x_val"], device=device)

    torch.manual_seed(seed)  # same initial weights for every selector in a fold
    model = modelmod.build_model(args.model, d, q, args.hidden, args.dropout).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr, betas=tuple(args.betas), weight_decay=args.weight_decay)
    selector = make_selector(name, y_tr, x_tr, args, seed, device)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    history, best = [], (-math.inf, -1, None)
    t_start, t_select = time.perf_counter(), 0.0
    for epoch in range(args.epochs):
        t_epoch = time.perf_counter()
        model.train()
        loss_sum, steps = torch.zeros((), device=device), 0
        batches = iter(selector)
        while True:
            t0 = time.perf_counter()
            idx = next(batches, None)  # epoch planning happens in the first next()
            t_select += time.perf_counter() - t0
            if idx is None:
                break
            idx_dev = idx.to(device, non_blocking=True)
            logits = model(xt[idx_dev])
            loss = F.binary_cross_entropy_with_logits(logits, yt[idx_dev])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            probs = logits.detach().sigmoid()
            sync()
            t0 = time.perf_counter()
            selector.observe(idx, probs)
            sync()
            t_select += time.perf_counter() - t0
            loss_sum += loss.detach()
            steps += 1
        batch_loss = float(loss_sum) / max(steps, 1)
        train_loss = float(F.binary_cross_entropy(predict(model, xt), yt))
        val_auc = metricmod.macro_auc_fast(split["y_val"], predict(model, xv).cpu().numpy())
        if val_auc > best[0]:
            best = (val_auc, epoch, copy.deepcopy(model.state_dict()))
        history.append(
            {
                "epoch": epoch,
                "batch_loss": batch_loss,
                "train_loss": train_loss,
                "val_macro_auc": val_auc,
                "seconds": time.perf_counter() - t_epoch,
            }
        )
        if on_epoch is not None:
            on_epoch(epoch, val_auc)
    seconds = time.perf_counter() - t_start

    model.load_state_dict(best[2])
    scores = predict(model, torch.as_tensor(split["x_test"], device=device)).cpu().numpy()
    result = metricmod.evaluate(split["y_test"], scores)
    result.update(best_epoch=best[1], val_macro_auc=best[0], seconds=seconds, selection_seconds=t_select)
    return result, history


def make_split(ds: datamod.MultiLabelData, train, val, test) -> dict:
    """Fold arrays, features min-max scaled to [0, 1] with the training part's range."""
    from sklearn.preprocessing import MinMaxScaler

    scaler = MinMaxScaler().fit(ds.x[train])
    return {
        "x_train": scaler.transform(ds.x[train]).astype(np.float32),
        "y_train": ds.y[train],
        "x_val": scaler.transform(ds.x[val]).astype(np.float32),
        "y_val": ds.y[val],
        "x_test": scaler.transform(ds.x[test]).astype(np.float32),
        "y_test": ds.y[test],
    }


# --------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------


def _fmt(v):
    """CSV cell: floats with 7 significant digits (the tables show 4 decimals)."""
    return f"{v:.7g}" if isinstance(v, float) else v


def _append_csv(path: Path, fields: list[str], rows: list[dict]) -> None:
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


def summarise(rows: list[dict]) -> dict:
    """{(dataset, model): {selector: {metric: [values over folds]}}} from results.csv rows."""
    out: dict = {}
    for r in rows:
        cell = out.setdefault((r["dataset"], r["model"]), {}).setdefault(r["selector"], {})
        for m in (*metricmod.METRICS, "macro_auc_defined", "seconds", "selection_seconds"):
            cell.setdefault(m, []).append(float(r[m]))
        cell.setdefault("fold", []).append(int(r["fold"]))
    return out


def _gain_cell(diffs: list[float], with_p: bool = False) -> str:
    better, worse = sum(d > 0 for d in diffs), sum(d < 0 for d in diffs)
    cell = f"{np.mean(diffs):+.4f} ({better}/{worse})"
    if with_p and better + worse > 0:
        from scipy.stats import wilcoxon

        p = wilcoxon(diffs).pvalue
        cell += ", p<0.001" if p < 0.001 else f", p={p:.3f}"
    return cell


def markdown_tables(rows: list[dict], selectors: list[str] | None = None) -> str:
    """Table-3-style Markdown: per metric, mean ± std over folds (rank), average rank; gains over Random."""
    summary = summarise(rows)
    if not summary:
        return "No results.\n"
    present = {s for cells in summary.values() for s in cells}
    order = [s for s in (selectors or SELECTORS) if s in present]
    head = "| Dataset | " + " | ".join(SELECTORS[s][0] for s in order) + " |"
    sep = "|---|" + "---|" * len(order)
    lines = []
    models = sorted({m for _, m in summary})
    for model in models:
        keys = [k for k in summary if k[1] == model]
        for metric, higher in metricmod.METRICS.items():
            arrow = "↑" if higher else "↓"
            lines += [f"### {metricmod.LABELS[metric]} ({arrow}), {model.upper()}", "", head, sep]
            rank_sum, rank_n = dict.fromkeys(order, 0.0), dict.fromkeys(order, 0)
            for key in keys:
                cells = summary[key]
                avail = [s for s in order if s in cells]
                means = [float(np.mean(cells[s][metric])) for s in avail]
                ranks = dict(zip(avail, _rank(means, higher), strict=True))
                row = []
                for s in order:
                    if s not in cells:
                        row.append("–")
                        continue
                    v = np.asarray(cells[s][metric])
                    row.append(f"{v.mean():.4f}±{v.std():.4f} ({ranks[s]})")
                    rank_sum[s] += ranks[s]
                    rank_n[s] += 1
                lines.append(f"| {key[0]} | " + " | ".join(row) + " |")
            avg = [f"{rank_sum[s] / rank_n[s]:.2f}" if rank_n[s] else "–" for s in order]
            lines += ["| Avg (Rank) | " + " | ".join(avg) + " |", ""]

        if "random" in order and len(order) > 1:
            others = [s for s in order if s != "random"]
            lines += [
                f"### Gain over Random in test Macro-AUC, {model.upper()}",
                "",
                "Mean over folds of (selector − Random) on the same fold; in brackets the folds where "
                "the selector is better / worse than Random. Last row: all folds of all datasets, with the "
                "two-sided Wilcoxon signed-rank p-value of the paired differences.",
                "",
                "| Dataset | " + " | ".join(SELECTORS[s][0] for s in others) + " |",
                "|---|" + "---|" * len(others),
            ]
            pooled: dict[str, list[float]] = {s: [] for s in others}
            for key in keys:
                cells = summary[key]
                if "random" not in cells:
                    continue
                base = dict(zip(cells["random"]["fold"], cells["random"]["macro_auc"], strict=True))
                row = []
                for s in others:
                    if s not in cells:
                        row.append("–")
                        continue
                    diffs = [
                        v - base[f] for f, v in zip(cells[s]["fold"], cells[s]["macro_auc"], strict=True) if f in base
                    ]
                    if not diffs:
                        row.append("–")
                        continue
                    pooled[s] += diffs
                    row.append(_gain_cell(diffs))
                lines.append(f"| {key[0]} | " + " | ".join(row) + " |")
            if len(keys) > 1:
                count = max(len(v) for v in pooled.values())
                row = [_gain_cell(pooled[s], with_p=True) if pooled[s] else "–" for s in others]
                lines.append(f"| all ({count} folds) | " + " | ".join(row) + " |")
            lines.append("")

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
    return "\n".join(lines)


def plot_convergence(history: list[dict], out_dir: Path, selectors: list[str] | None = None) -> list[Path]:
    """One PNG per (dataset, model): batch loss, whole-training-split loss and validation Macro-AUC per epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups: dict = {}
    for r in history:
        g = groups.setdefault((r["dataset"], r["model"]), {}).setdefault(r["selector"], {})
        for col in ("batch_loss", "train_loss", "val_macro_auc"):
            g.setdefault(col, {}).setdefault(int(r["epoch"]), []).append(float(r[col]))
    paths = []
    for (dataset, model), by_sel in groups.items():
        fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
        panels = [
            ("batch_loss", "training loss (epoch's batches)"),
            ("train_loss", "training loss (whole training split)"),
            ("val_macro_auc", "validation Macro-AUC"),
        ]
        for ax, (col, title) in zip(axes, panels, strict=True):
            tails = []
            for s in [s for s in (selectors or SELECTORS) if s in by_sel]:
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
        axes[0].set_ylabel("BCE")
        axes[2].legend()
        fig.suptitle(f"{dataset} ({model.upper()}), mean over folds")
        fig.tight_layout()
        path = (
            out_dir / f"convergence_{dataset}.png" if model == "mlp" else out_dir / f"convergence_{dataset}_{model}.png"
        )
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
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


def write_report(out_dir: Path, selectors: list[str] | None = None) -> None:
    rows = _read_csv(out_dir / "results.csv")
    history = _read_csv(out_dir / "history.csv")
    text = markdown_tables(rows, selectors)
    (out_dir / "table.md").write_text(
        "# Batch selection comparison (test metrics at the best validation epoch)\n\n"
        "Mean ± std over folds, (rank among the selectors for that dataset; ties share the best rank), "
        "as in the paper's Table 3. Written by `python/reproduce.py`.\n\n"
        + text
        + "\n"
        + convergence_table(history, selectors)
    )
    plot_convergence(history, out_dir, selectors)


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


def main(argv=None) -> None:
    args = parse_args(argv)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    if args.report_only:
        write_report(out_dir, args.selectors)
        print(f"wrote {out_dir / 'table.md'} and the plots")
        return
    device = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    missing = [SELECTORS[s][1] for s in args.selectors if not hasattr(ubs, SELECTORS[s][1])]
    if missing:
        raise SystemExit(f"reproduce.py: ubs_kernels {ubs.__version__} lacks {missing}")

    results_path, history_path = out_dir / "results.csv", out_dir / "history.csv"
    if not args.resume:
        for p in (results_path, history_path):
            p.unlink(missing_ok=True)
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
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "ubs_kernels": ubs.__version__,
            "numpy": np.__version__,
        },
        "datasets": previous.get("datasets", {})
        | {ds.name: {"shape": ds.shape, "source": ds.source, "notes": ds.notes} for ds in datasets},
        "seconds": previous.get("seconds", {}),
    }
    if previous:
        run_info["previous_argv"] = previous.get("previous_argv", []) + [previous.get("argv")]
    total = len(datasets) * args.folds * len(args.selectors) * args.epochs
    bar = tqdm(total=total, unit="epoch", disable=args.no_progress, mininterval=1.0, dynamic_ncols=True)
    t_all = time.perf_counter()
    for ds in datasets:
        t_ds = time.perf_counter()
        for fold, (train, val, test) in enumerate(stratified_folds(ds.y, args.folds, args.seed)):
            split = make_split(ds, train, val, test)
            for name in args.selectors:
                if (ds.name, args.model, name, fold) in done:
                    bar.update(args.epochs)
                    continue
                bar.set_description(f"{ds.name} fold {fold + 1}/{args.folds} {SELECTORS[name][0]}")

                def on_epoch(epoch, val_auc):
                    bar.update(1)
                    bar.set_postfix(val_auc=f"{val_auc:.4f}", refresh=False)

                seed = args.seed * 1000 + fold
                result, history = train_one(name, split, args, seed, device, on_epoch)
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
    bar.close()
    run_info["seconds"]["total"] = round(time.perf_counter() - t_all, 1)
    run_path.write_text(json.dumps(run_info, indent=2, default=str) + "\n")
    write_report(out_dir, args.selectors)
    tqdm.write(f"wrote {results_path}, {history_path}, {out_dir / 'table.md'} and the plots in {out_dir}")


if __name__ == "__main__":
    main()
