"""One training run with a batch selector: shared by ``reproduce.py`` and ``demo.py``.

:func:`train_one` trains a base classifier (``models.py``) with the batches of one selector and
records, per epoch: the training objective on the epoch's batches, the validation Macro-AUC,
the time spent in the selector (planning, drawing, observe) and in the training steps, and what
the selector did (pressure ``s_t``, P_max/P_min, share of distinct samples drawn). For UBS
(``ubs``, ``ubs_noc``) it also measures how much the label correlation term changes P: from the
same U at the moment the epoch was planned, P with C = the mutual information (Eq. 6) and P with
C = ones, and the total-variation distance between them (``tv_mi_ones``), with the spread of the
MI row sums ``c = C 1`` (``c_cv``: std / mean). Only the spread of ``c`` matters: P depends on
``w = U c`` after min-max normalisation, so a ``c`` with equal entries gives exactly the P of C = ones.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field

import metrics as metricmod
import models as modelmod
import numpy as np
import torch
import torch.nn.functional as F

import ubs_kernels as ubs

# name -> (column title as in the paper's Table 3, ubs_kernels class)
SELECTORS: dict[str, tuple[str, str]] = {
    "random": ("Random", "RandomSelector"),
    "balance": ("Balance", "BalanceSelector"),
    "active": ("Active", "ActiveBiasSelector"),
    "recent": ("Recent", "RecencyBiasSelector"),
    "hard": ("Hard", "HardImbalanceSelector"),
    "ubs": ("UBS", "UncertaintyBatchSelector"),
    "ubs_noc": ("UBS C=1", "UncertaintyBatchSelector"),  # C = ones (the authors' released code)
    # Control: UBS's draw with the pressure fixed at 1, so P is uniform. Each batch is drawn without
    # replacement but batches are independent, so an epoch sees ~63 % distinct samples where
    # Random's permutation sees all: this separates the effect of the draw from that of selection.
    "ubs_s1": ("UBS s0=1", "UncertaintyBatchSelector"),
}
UBS_NAMES = ("ubs", "ubs_noc")


@dataclass
class RunConfig:
    """Everything a run needs besides the data and the seed."""

    model: str = "mlp"
    model_options: dict = field(default_factory=dict)
    epochs: int = 100
    warmup: int = 5
    batch_size: int = 128
    lr: float = 1e-4
    weight_decay: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    window: int = 5
    lam: float = 0.5
    bins: int = 10
    s0: float = 100.0
    backend: str = "auto"
    train_loss: bool = True  # evaluate the loss on the whole training split every epoch
    diagnostics: bool = True  # P with C = MI against C = ones for the UBS selectors


def make_selector(name: str, y_train: np.ndarray, x_train: np.ndarray, cfg: RunConfig, seed: int, device):
    """The selector ``name`` with the paper's settings (T, λ1, τ, s0, warm-up from ``cfg``)."""
    cls = getattr(ubs, SELECTORS[name][1], None)
    if cls is None:
        raise SystemExit(f"ubs_kernels has no {SELECTORS[name][1]} (selector {name!r})")
    n, q = y_train.shape
    common = {"batch_size": cfg.batch_size, "epochs": cfg.epochs, "seed": seed, "device": str(device)}
    labels = torch.from_numpy(y_train.astype(np.float32))
    if name == "random":
        return cls(n, **common)
    if name == "balance":
        return cls(labels, **common)
    if name == "active":
        return cls(n, q, warmup=cfg.warmup, **common)
    if name == "recent":
        return cls(n, q, window=cfg.window, s0=cfg.s0, warmup=cfg.warmup, **common)
    if name == "hard":
        return cls(labels, features=torch.from_numpy(x_train), s0=cfg.s0, warmup=cfg.warmup, **common)
    return cls(
        n,
        q,
        window=cfg.window,
        lam=cfg.lam,
        bins=cfg.bins,
        s0=1.0 if name == "ubs_s1" else cfg.s0,
        warmup=cfg.warmup,
        backend=cfg.backend,
        label_correlation="ones" if name in ("ubs_noc", "ubs_s1") else "mi",
        **common,
    )


@torch.no_grad()
def predict(model: torch.nn.Module, x: torch.Tensor, chunk: int = 512) -> torch.Tensor:
    """Sigmoid scores of ``x`` in eval mode, as a float32 tensor on x's device."""
    model.eval()
    out = torch.cat([model(x[i : i + chunk]).float().sigmoid() for i in range(0, len(x), chunk)])
    model.train()
    return out


@torch.no_grad()
def correlation_effect(selector, epoch: int) -> dict:
    """How much C changes P this epoch: TV(P with C = MI, P with C = ones) from the same U, and c's spread."""
    u, seen = selector.uncertainty, selector.seen
    c_mi = selector.label_correlation_rowsums()
    s_t = selector.pressure(epoch)
    log_mi = ubs.ops.selection_log_probs(u, c_mi, seen, s_t)
    log_ones = ubs.ops.selection_log_probs(u, torch.ones_like(c_mi), seen, s_t)
    p_mi, p_ones = torch.softmax(log_mi.double(), 0), torch.softmax(log_ones.double(), 0)
    q = c_mi.numel()
    return {
        "tv_mi_ones": float(0.5 * (p_mi - p_ones).abs().sum()),
        "c_cv": float(c_mi.double().std() / c_mi.double().mean()) if q > 1 else 0.0,
        "mean_mi": float((c_mi.double() - 1).mean() / max(q - 1, 1)),  # mean off-diagonal C_ab
    }


def train_one(
    name: str, split: dict, cfg: RunConfig, seed: int, device: torch.device, on_epoch=None
) -> tuple[dict, list[dict]]:
    """Train one model with selector ``name``; return test metrics at the best validation epoch and the history.

    ``split`` holds ``x_train, y_train, x_val, y_val, x_test, y_test`` (float32 features, 0/1
    labels), and optionally ``train_loss_rows``: the training rows the per-epoch training loss is
    taken over. The model's initial weights depend on ``seed`` only, so every selector of a fold
    starts from the same weights. ``on_epoch(record)`` is called after every epoch.
    """
    x_tr, y_tr = split["x_train"], split["y_train"]
    n, d = x_tr.shape
    q = y_tr.shape[1]
    xt = torch.as_tensor(x_tr, device=device)
    yt = torch.as_tensor(y_tr, dtype=torch.float32, device=device)
    xv = torch.as_tensor(split["x_val"], device=device)

    torch.manual_seed(seed)  # same initial weights for every selector in a fold
    model = modelmod.build_model(cfg.model, d, q, y_train=y_tr, **cfg.model_options).to(device)
    opt = torch.optim.Adam(
        modelmod.param_groups(model, cfg.lr), lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay
    )
    selector = make_selector(name, y_tr, x_tr, cfg, seed, device)
    # A model that draws noise in training (DELA's gates) gets its own stream, so the selectors'
    # draws do not shift it: the same seed gives the same noise for every selector of a fold.
    noise = torch.Generator(device=device).manual_seed(seed)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    history, best = [], (-math.inf, -1, None)
    t_start, t_select_total = time.perf_counter(), 0.0
    for epoch in range(cfg.epochs):
        t_epoch = time.perf_counter()
        model.train()
        loss_sum, steps, t_select, t_train, drawn, diag = torch.zeros((), device=device), 0, 0.0, 0.0, [], {}
        batches = iter(selector)
        while True:
            t0 = time.perf_counter()
            idx = next(batches, None)  # epoch planning happens in the first next()
            t_select += time.perf_counter() - t0
            if idx is None:
                break
            if steps == 0 and cfg.diagnostics and name in UBS_NAMES and selector.selecting:
                diag = correlation_effect(selector, epoch)  # not timed: a measurement, not the method
            t0 = time.perf_counter()
            idx_dev = idx.to(device, non_blocking=True)
            loss, logits = modelmod.training_loss(model, xt[idx_dev], yt[idx_dev], generator=noise)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sync()
            t1 = time.perf_counter()
            t_train += t1 - t0
            selector.observe(idx_dev, logits=logits.detach())  # the selector applies the sigmoid
            sync()
            t_select += time.perf_counter() - t1
            loss_sum += loss.detach()
            steps += 1
            drawn.append(idx)
        t_select_total += t_select
        p = selector.sample_probabilities
        record = {
            "epoch": epoch,
            "selecting": bool(selector.selecting),
            "pressure": selector.pressure(epoch) if selector.selecting and hasattr(selector, "pressure") else None,
            "p_ratio": float(p.max() / p.min()),
            "distinct": torch.cat(drawn).unique().numel() / n,
            "batch_loss": float(loss_sum) / max(steps, 1),
            "select_ms": 1000 * t_select,
            "train_ms": 1000 * t_train,
            **diag,
        }
        if cfg.train_loss:
            rows = split.get("train_loss_rows")
            xs, ys = (xt, yt) if rows is None else (xt[rows], yt[rows])
            record["train_loss"] = float(F.binary_cross_entropy(predict(model, xs), ys))
        val_auc = metricmod.macro_auc_fast(split["y_val"], predict(model, xv).cpu().numpy())
        record["val_macro_auc"] = val_auc
        if val_auc > best[0]:
            best = (val_auc, epoch, copy.deepcopy(model.state_dict()))
        record["seconds"] = time.perf_counter() - t_epoch
        history.append(record)
        if on_epoch is not None:
            on_epoch(record)
    seconds = time.perf_counter() - t_start

    model.load_state_dict(best[2])
    scores = predict(model, torch.as_tensor(split["x_test"], device=device)).cpu().numpy()
    result = metricmod.evaluate(split["y_test"], scores)
    result.update(best_epoch=best[1], val_macro_auc=best[0], seconds=seconds, selection_seconds=t_select_total)
    result["warmup"] = cfg.warmup if name not in ("random", "balance") else 0
    return result, history


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


def make_split(x: np.ndarray, y: np.ndarray, train, val, test) -> dict:
    """Fold arrays, features min-max scaled to [0, 1] with the training part's range."""
    from sklearn.preprocessing import MinMaxScaler

    scaler = MinMaxScaler().fit(x[train])
    return {
        "x_train": scaler.transform(x[train]).astype(np.float32),
        "y_train": y[train],
        "x_val": scaler.transform(x[val]).astype(np.float32),
        "y_val": y[val],
        "x_test": scaler.transform(x[test]).astype(np.float32),
        "y_test": y[test],
    }
