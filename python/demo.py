"""End-to-end demo: uncertainty-based batch selection (UBS) while training a multi-label MLP.

Trains a small MLP on a synthetic multi-label dataset (sklearn's
``make_multilabel_classification``) with its mini-batches drawn by
:class:`ubs_kernels.UncertaintyBatchSelector` (Zhou et al., AAAI 2025; exact rules in SPEC.md):

* every training step, ``selector.observe(indices, logits=logits)`` records the batch's sigmoid
  outputs and refreshes those samples' uncertainty U (Eq. 1, 4, 5) and its bins;
* at each epoch boundary the selector computes the row sums of the label-correlation matrix
  C (Eq. 6) and the sampling distribution P (Eq. 7-10) under the pressure s_t of Eq. 11, and
  plans the epoch: uniform shuffles for the first ``--warmup`` epochs, then ceil(n/b)
  batches of b distinct samples each drawn from P.

Each epoch prints one line: train loss, validation Macro-AUC, s_t, the mean off-diagonal
mutual information between labels (the "dynamic label correlations" that steered this epoch),
P_max/P_min of the distribution the batches came from, the fraction of distinct training
samples drawn, and the selection overhead: time in observe + epoch planning as a share of
the epoch's selection + training time (validation is not counted). ``--selector`` also takes
the paper's comparators (random, balance, active, recent, hard).

Run: ``python python/demo.py`` (defaults take well under a minute on a 2-core CPU).
"""

from __future__ import annotations

import argparse
import math
import os
import time

import torch
from sklearn.datasets import make_multilabel_classification
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import MinMaxScaler
from tqdm import tqdm

import ubs_kernels as ubs

WINDOW = 5  # T: predictions kept per sample
LAM = 0.5  # lambda_1 of Eq. 5
TAU = 10  # bins per label for the mutual information


SELECTORS = {
    "ubs": "UncertaintyBatchSelector",
    "random": "RandomSelector",
    "balance": "BalanceSelector",
    "active": "ActiveBiasSelector",
    "recent": "RecencyBiasSelector",
    "hard": "HardImbalanceSelector",
}


def make_selector(args, x_tr, y_tr, device) -> ubs.BatchSelector:
    """The selector named by ``--selector``, with the paper's settings."""
    n, q = y_tr.shape
    common = {"batch_size": args.batch_size, "epochs": args.epochs, "seed": args.seed, "device": device}
    if args.selector == "ubs":
        return ubs.UncertaintyBatchSelector(
            n, q, window=WINDOW, lam=LAM, bins=TAU, s0=args.s0, warmup=args.warmup, backend=args.backend, **common
        )
    if args.selector == "random":
        return ubs.RandomSelector(n, **common)
    if args.selector == "balance":
        return ubs.BalanceSelector(y_tr.cpu(), **common)
    if args.selector == "active":
        return ubs.ActiveBiasSelector(n, q, warmup=args.warmup, **common)
    if args.selector == "recent":
        return ubs.RecencyBiasSelector(n, q, window=WINDOW, s0=args.s0, warmup=args.warmup, **common)
    return ubs.HardImbalanceSelector(y_tr.cpu(), x_tr.cpu(), s0=args.s0, warmup=args.warmup, **common)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--samples", type=int, default=3000)
    p.add_argument("--features", type=int, default=60)
    p.add_argument("--labels", type=int, default=20)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--s0", type=float, default=100.0, help="initial selection pressure (Eq. 11)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, ...")
    p.add_argument(
        "--backend", default=os.environ.get("UBS_BACKEND", "auto"), choices=ubs.ops.BACKENDS, help="ubs_kernels backend"
    )
    p.add_argument("--selector", default="ubs", choices=tuple(SELECTORS))
    args = p.parse_args(argv)
    if not 0 <= args.warmup < args.epochs:
        p.error("need 0 <= --warmup < --epochs")
    return args


def make_data(args, device):
    """Seeded synthetic multi-label data, 80/20 split, features min-max scaled (fit on train)."""
    x, y = make_multilabel_classification(
        n_samples=args.samples, n_features=args.features, n_classes=args.labels, random_state=args.seed
    )
    x_tr, x_va, y_tr, y_va = train_test_split(x, y, test_size=0.2, random_state=args.seed)
    scaler = MinMaxScaler().fit(x_tr)
    x_tr, x_va = scaler.transform(x_tr), scaler.transform(x_va)

    def as_tensor(a):
        return torch.as_tensor(a, dtype=torch.float32, device=device)

    return as_tensor(x_tr), as_tensor(y_tr), as_tensor(x_va), y_va


def macro_auc(model, x_va, y_va) -> float:
    """Macro-AUC over the labels that have both classes in the validation set."""
    model.eval()
    with torch.no_grad():
        scores = model(x_va).float().cpu().numpy()
    model.train()
    keep = (y_va.min(axis=0) == 0) & (y_va.max(axis=0) == 1)
    return float(roc_auc_score(y_va[:, keep], scores[:, keep], average="macro"))


def main(argv=None) -> None:
    args = parse_args(argv)
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("demo.py: --device cuda but torch sees no CUDA device")
    # Fail fast, with ubs_kernels' own message, if the requested backend is not built for this device.
    try:
        backends = {op: ubs.resolve_backend(op, device, args.backend) for op in ubs.OPS}
    except (RuntimeError, ValueError) as exc:
        raise SystemExit(f"demo.py: {exc}") from None
    torch.manual_seed(args.seed)

    def sync():  # CUDA ops are asynchronous: time them only after they finished
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    x_tr, y_tr, x_va, y_va = make_data(args, device)
    n, q, b = x_tr.shape[0], args.labels, args.batch_size
    model = torch.nn.Sequential(
        torch.nn.Linear(args.features, 128), torch.nn.ReLU(), torch.nn.Dropout(0.2), torch.nn.Linear(128, q)
    ).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-4)
    loss_fn = torch.nn.BCEWithLogitsLoss()

    selector = make_selector(args, x_tr, y_tr, device)

    tqdm.write(
        f"{args.selector} selector | train {n} x {args.features}, {q} labels, val {len(y_va)} | "
        f"{args.epochs} epochs, warm-up {args.warmup}, batch {b} | device {device}"
    )
    best_auc, best_epoch, total_overhead, total_time = -math.inf, -1, 0.0, 0.0
    for t in tqdm(range(args.epochs), desc="epochs", unit="epoch", disable=None):
        sync()
        t0 = time.perf_counter()
        batches = iter(selector)  # the first next() refreshes P and plans the epoch
        overhead, loss_sum, steps, drawn = 0.0, 0.0, 0, []
        while True:
            t1 = time.perf_counter()
            idx = next(batches, None)
            overhead += time.perf_counter() - t1
            if idx is None:
                break
            idx_dev = idx.to(device)
            logits = model(x_tr[idx_dev])
            loss = loss_fn(logits, y_tr[idx_dev])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += loss.item()  # also syncs, so the observe timing below is its own
            t1 = time.perf_counter()
            selector.observe(idx_dev, logits=logits.detach())  # the selector applies the sigmoid
            sync()
            overhead += time.perf_counter() - t1
            steps += 1
            drawn.append(idx)
        epoch_time = time.perf_counter() - t0
        total_overhead, total_time = total_overhead + overhead, total_time + epoch_time

        auc = macro_auc(model, x_va, y_va)
        if auc > best_auc:
            best_auc, best_epoch = auc, t
        p = selector.sample_probabilities
        p_ratio = float(p.max() / p.min())
        selecting = selector.selecting
        pressure = selector.pressure(t) if selecting and hasattr(selector, "pressure") else None
        mi = None
        if isinstance(selector, ubs.UncertaintyBatchSelector) and t > 0:
            # c_a = 1 + sum_{b != a} C_ab, so (c - 1) / (q - 1) is label a's mean MI with the others.
            c = selector.label_correlation_rowsums()
            mi = float(((c - 1) / max(q - 1, 1)).mean())
        distinct = torch.cat(drawn).unique().numel() / n
        phase = "selection" if selecting else "uniform"
        tqdm.write(
            f"epoch {t:3d} {phase:<9s} | loss {loss_sum / steps:.4f} | val Macro-AUC {auc:.4f} | "
            f"s_t {'-' if pressure is None else f'{pressure:.2f}':>6s} | MI {'-' if mi is None else f'{mi:.4f}':>6s} | "
            f"Pmax/Pmin {p_ratio:6.2f} | distinct {distinct:.2f} | overhead {100 * overhead / epoch_time:4.1f}%"
        )

    tqdm.write(f"best val Macro-AUC {best_auc:.4f} at epoch {best_epoch}")
    share = 100 * total_overhead / total_time
    tqdm.write(f"selection overhead {share:.1f}% of {total_time:.2f} s spent selecting + training")
    tqdm.write(f"ubs_kernels backends (auto) on {device.type}: {ubs.build_info()['backends'].get(device.type)}")
    if args.backend != "auto":
        tqdm.write(f"ubs_kernels backends used (--backend {args.backend}): {backends}")


if __name__ == "__main__":
    main()
