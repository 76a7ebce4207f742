"""Demo: what uncertainty-based batch selection (UBS) buys, and what it costs, against random batches.

Trains the same MLP on the same folds from the same initial weights with each selector of
``--selectors`` (default: Random, UBS, and UBS with C = ones, the variant of the authors'
released code), and prints

* one line per epoch per selector (first fold): training loss, validation Macro-AUC, the
  selection pressure ``s_t`` (``-`` in warm-up epochs of uniform batches), the mean mutual
  information between labels that steered the epoch (``MI``), how far that moved P from the
  C = ones P of the same uncertainties (``TV``: total-variation distance), P_max/P_min, the share
  of distinct training samples drawn, and the milliseconds spent in the selector (planning,
  drawing, observe) and in the training steps;
* a comparison table over ``--folds`` folds: test Macro-AUC at the best validation epoch, the
  paired difference to Random (folds better / worse), the validation Macro-AUC half-way through
  training (how fast each selector got there), the best epochs, and the selector's cost per
  epoch beside the training step's (medians over the selection epochs of all folds);
* a plot (``--plot``, default ``out/demo.png``): validation Macro-AUC per epoch and the cost bars.

Data: ``--dataset yeast`` (the default) from ``../shared/data`` (or ``$UBS_DATA_DIR``); when that
directory is missing, or with ``--dataset synthetic``, a seeded synthetic set
(``make_multilabel_classification``, ``--samples`` x ``--features``, ``--labels`` labels).
Folds: iterative-stratified 5-fold splits; each fold trains on 80 %, picks its best epoch on
10 % and is tested on the other 10 %, as in ``python/reproduce.py``.

Run: ``python python/demo.py`` (about 30 s on a 2-core CPU with the defaults).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
import data as datamod  # noqa: E402
import training  # noqa: E402

import ubs_kernels as ubs  # noqa: E402

CV_FOLDS = 5  # the folds come from a 5-fold split; --folds of them are run


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="demo.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="yeast", help="a dataset of ../shared/data, or 'synthetic'")
    p.add_argument("--selectors", nargs="+", default=["random", "ubs", "ubs_noc"], choices=tuple(training.SELECTORS))
    p.add_argument("--folds", type=int, default=CV_FOLDS, help=f"folds to run (of a {CV_FOLDS}-fold split)")
    p.add_argument("--epochs", type=int, default=30)
    common.add_warmup_argument(p)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--hidden", type=int, nargs="*", default=[256], help="MLP hidden widths")
    p.add_argument("--s0", type=float, default=100.0, help="initial selection pressure (Eq. 11)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--samples", type=int, default=3000, help="synthetic set: samples")
    p.add_argument("--features", type=int, default=60, help="synthetic set: features")
    p.add_argument("--labels", type=int, default=20, help="synthetic set: labels")
    p.add_argument("--data-dir", default=None, help="default: $UBS_DATA_DIR, else <repo>/../shared/data")
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, ...")
    p.add_argument(
        "--backend", default=os.environ.get("UBS_BACKEND", "auto"), choices=ubs.ops.BACKENDS, help="ubs_kernels backend"
    )
    p.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads (the demo's small MLP gains nothing from more)"
    )
    p.add_argument("--plot", default=str(common.OUT_ROOT / "demo.png"), help="where to write the plot ('' for none)")
    args = p.parse_args(argv)
    if not 1 <= args.folds <= CV_FOLDS:
        p.error(f"--folds must be in 1..{CV_FOLDS}")
    common.resolve_warmup(p, args)
    return args


def load(args) -> datamod.MultiLabelData:
    data_dir = Path(args.data_dir) if args.data_dir else datamod.default_data_dir()
    if args.dataset.lower() == datamod.SYNTHETIC or not data_dir.is_dir():
        if args.dataset.lower() != datamod.SYNTHETIC:
            print(f"demo.py: {data_dir} not found: a synthetic set instead of {args.dataset}", file=sys.stderr)
        return datamod.synthetic_dataset(args.seed, n=args.samples, d=args.features, q=args.labels)
    return datamod.load_dataset(args.dataset, data_dir, seed=args.seed)


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def epoch_line(name: str, r: dict) -> str:
    phase = "selection" if r["selecting"] else "uniform"
    return (
        f"epoch {r['epoch']:3d} {name:<7s} {phase:<9s} | loss {r['batch_loss']:.4f} | "
        f"val Macro-AUC {r['val_macro_auc']:.4f} | s_t {_fmt(r['pressure'], '.2f'):>6s} | "
        f"MI {_fmt(r.get('mean_mi'), '.4f'):>6s} | TV {_fmt(r.get('tv_mi_ones'), '.4f'):>6s} | "
        f"Pmax/Pmin {r['p_ratio']:6.1f} | distinct {r['distinct']:.2f} | "
        f"select {r['select_ms']:6.1f} ms | train {r['train_ms']:6.1f} ms"
    )


def summary_table(args, runs: dict) -> list[str]:
    """The comparison: test Macro-AUC, paired gain over Random, cost per epoch."""
    title = {s: training.SELECTORS[s][0] for s in args.selectors}
    base = runs.get("random")
    mid = args.epochs // 2
    lines = [
        f"{'selector':<9s} {'test Macro-AUC':>16s} {'vs Random (better/worse folds)':>31s} {f'val @ep{mid}':>10s} "
        f"{'best epochs':>14s} {'select ms/ep':>12s} {'train ms/ep':>11s} {'overhead':>8s}"
    ]
    for s in args.selectors:
        folds = runs[s]
        auc = np.array([f["result"]["macro_auc"] for f in folds])
        if base is not None and s != "random":
            diff = auc - np.array([f["result"]["macro_auc"] for f in base])
            gain = f"{diff.mean():+.4f} ({int((diff > 0).sum())}/{int((diff < 0).sum())})"
        else:
            gain = "-"
        epochs = ",".join(str(f["result"]["best_epoch"]) for f in folds)
        val_mid = float(np.mean([f["history"][mid]["val_macro_auc"] for f in folds]))
        # Cost over the epochs where the selector selects (all epochs for Random / Balance).
        recs = [r for f in folds for r in f["history"] if r["selecting"] or s in ("random", "balance")]
        recs = recs or [r for f in folds for r in f["history"]]
        sel, tr = float(np.median([r["select_ms"] for r in recs])), float(np.median([r["train_ms"] for r in recs]))
        spread = f"±{auc.std():.4f}" if len(auc) > 1 else ""
        lines.append(
            f"{title[s]:<9s} {auc.mean():>9.4f}{spread:>7s} {gain:>31s} {val_mid:>10.4f} {epochs:>14s} "
            f"{sel:>12.1f} {tr:>11.1f} {100 * sel / (sel + tr):>7.1f}%"
        )
    return lines


def verdict(args, runs: dict) -> list[str]:
    """Plain-language reading of the table: the paired differences to Random and, with 5 folds, a Wilcoxon test."""
    if "random" not in runs:
        return []
    base = np.array([f["result"]["macro_auc"] for f in runs["random"]])
    out = []
    for s in args.selectors:
        if s == "random":
            continue
        folds = runs[s]
        name = training.SELECTORS[s][0]
        if s != "balance" and all(f["result"]["best_epoch"] < args.warmup for f in folds):
            out.append(f"{name}: every best epoch is a warm-up epoch (uniform batches): selection played no part")
            continue
        diff = np.array([f["result"]["macro_auc"] for f in folds]) - base
        text = (
            f"{name} vs Random: {diff.mean():+.4f} Macro-AUC on average (paired over {len(diff)} folds, "
            f"better on {int((diff > 0).sum())}, worse on {int((diff < 0).sum())}"
        )
        if len(diff) >= 5 and np.any(diff != 0):
            from scipy.stats import wilcoxon

            text += f"; Wilcoxon p = {wilcoxon(diff).pvalue:.3f}, the smallest possible with {len(diff)} folds being "
            text += f"{2 / 2 ** len(diff):.3f})"
        else:
            text += "; too few folds for a test)"
        out.append(text)
    out.append("python/reproduce.py runs the full comparison (all selectors, several datasets, 5 folds each).")
    return out


def plot(path: Path, args, runs: dict, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, bars) = plt.subplots(1, 2, figsize=(12, 4.2), gridspec_kw={"width_ratios": [2, 1]})
    for s in args.selectors:
        curves = np.array([[r["val_macro_auc"] for r in f["history"]] for f in runs[s]])
        mean = curves.mean(0)
        (line,) = ax.plot(range(len(mean)), mean, label=training.SELECTORS[s][0], lw=1.6)
        if len(curves) > 1:
            ax.fill_between(range(len(mean)), curves.min(0), curves.max(0), color=line.get_color(), alpha=0.12)
    ax.axvspan(-0.5, args.warmup - 0.5, color="grey", alpha=0.12, label="warm-up (uniform)")
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation Macro-AUC")
    ax.set_title(f"mean over {args.folds} fold(s), band: min-max")
    tail = np.concatenate(
        [[r["val_macro_auc"] for r in f["history"][args.epochs // 4 :]] for s in runs for f in runs[s]]
    )
    lo, hi = tail.min(), tail.max()
    ax.set_ylim(lo - 0.1 * (hi - lo + 1e-6), hi + 0.1 * (hi - lo + 1e-6))
    ax.grid(alpha=0.3)
    ax.legend()
    names = [training.SELECTORS[s][0] for s in args.selectors]
    sel, tr = [], []
    for s in args.selectors:
        recs = [r for f in runs[s] for r in f["history"] if r["selecting"] or s in ("random", "balance")]
        recs = recs or [r for f in runs[s] for r in f["history"]]
        sel.append(np.median([r["select_ms"] for r in recs]))
        tr.append(np.median([r["train_ms"] for r in recs]))
    ybar = np.arange(len(names))
    bars.barh(ybar, tr, color="#9ecae1", label="training steps")
    bars.barh(ybar, sel, left=tr, color="#e6550d", label="selector")
    bars.set_yticks(ybar, names)
    bars.invert_yaxis()
    bars.set_xlabel("ms per epoch (median over selection epochs)")
    bars.legend(loc="lower right")
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> None:
    args = parse_args(argv)
    device = common.resolve_device(args.device, "demo.py")
    # Fail fast, with ubs_kernels' own message, if the requested backend is not built for this device.
    try:
        backends = {op: ubs.resolve_backend(op, device, args.backend) for op in ubs.OPS}
    except (RuntimeError, ValueError) as exc:
        raise SystemExit(f"demo.py: {exc}") from None

    torch.set_num_threads(args.threads)
    t_all = time.perf_counter()
    ds = load(args)
    folds = training.stratified_folds(ds.y, CV_FOLDS, args.seed)[: args.folds]
    n, d, q = ds.shape
    cfg = training.RunConfig(
        model="mlp",
        model_options={"hidden": args.hidden, "dropout": 0.2},
        epochs=args.epochs,
        warmup=args.warmup,
        batch_size=args.batch_size,
        lr=args.lr,
        s0=args.s0,
        backend=args.backend,
        train_loss=False,
    )
    widths = "-".join(str(w) for w in [d, *args.hidden, q])
    tr, va, te = (len(a) for a in folds[0])
    tqdm.write(
        f"{ds.name}: train {tr} x {d}, {q} labels, val {va}, test {te} | {len(args.selectors)} selectors x "
        f"{args.folds} fold(s), {args.epochs} epochs (warm-up {args.warmup}), batch {args.batch_size}, "
        f"MLP {widths}, Adam lr {args.lr:g} | device {device}"
    )
    runs: dict = {}
    bar = tqdm(total=args.folds * len(args.selectors) * args.epochs, unit="epoch", disable=None, leave=False)
    for fold, (train, val, test) in enumerate(folds):
        split = training.make_split(ds.x, ds.y, train, val, test)
        for s in args.selectors:

            def on_epoch(r, s=s, fold=fold):
                bar.update(1)
                if fold == 0:
                    tqdm.write(epoch_line(s, r))

            result, history = training.train_one(s, split, cfg, 1000 * args.seed + fold, device, on_epoch)
            runs.setdefault(s, []).append({"result": result, "history": history})
            if fold > 0:
                tqdm.write(
                    f"fold {fold} {s:<7s}: best val Macro-AUC {result['val_macro_auc']:.4f} at epoch "
                    f"{result['best_epoch']}, test {result['macro_auc']:.4f}"
                )
    bar.close()

    tqdm.write("")
    tqdm.write(f"test Macro-AUC at the best validation epoch, {args.folds} fold(s); cost per epoch:")
    for line in summary_table(args, runs):
        tqdm.write(line)
    for line in verdict(args, runs):
        tqdm.write(line)
    if args.plot:
        title = f"{ds.name} ({n} x {d}, {q} labels): MLP {widths}, batch {args.batch_size}, lr {args.lr:g}"
        plot(Path(args.plot), args, runs, title)
        tqdm.write(f"wrote {args.plot}")
    tqdm.write(f"demo took {time.perf_counter() - t_all:.1f} s")
    tqdm.write(f"ubs_kernels backends (auto) on {device.type}: {ubs.build_info()['backends'].get(device.type)}")
    if args.backend != "auto":
        tqdm.write(f"ubs_kernels backends used (--backend {args.backend}): {backends}")


if __name__ == "__main__":
    main()
