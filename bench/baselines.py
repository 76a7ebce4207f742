"""What a user would run without ubs_kernels: the baselines every speedup is measured against.

* Eq. 6 (label-pair mutual information, natural log, ``C_aa = 1``) three ways:
  :func:`sklearn_pairwise_mi` (``sklearn.metrics.mutual_info_score`` on every pair),
  :func:`numpy_bincount_mi` (one ``np.bincount`` of joint bin indices per label) and
  :func:`torch_onehot_matmul_mi` (counts as the Gram matrix of the one-hot bins).
* Eq. 1, 4, 5 per training step (:func:`authors_style_observe`): the per-sample, per-label
  Python loops of the style of the authors' released code, over a dict of ``deque(maxlen=T)``.

Written from the equations, not copied from any code.
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np
import torch
from sklearn.metrics import mutual_info_score


def _as_numpy(bins) -> np.ndarray:
    return bins.cpu().numpy() if isinstance(bins, torch.Tensor) else np.asarray(bins)


def all_pairs(q: int) -> np.ndarray:
    """Every label pair ``(a, b)`` with ``a < b``: ``(q (q - 1) / 2, 2)`` int64."""
    a, b = np.triu_indices(q, k=1)
    return np.stack([a, b], axis=1).astype(np.int64)


def pair_subset(q: int, k: int, seed: int = 0) -> np.ndarray:
    """``k`` distinct pairs drawn uniformly from :func:`all_pairs` (every pair costs the same)."""
    pairs = all_pairs(q)
    if k >= len(pairs):
        return pairs
    rng = np.random.default_rng(seed)
    return pairs[np.sort(rng.choice(len(pairs), size=k, replace=False))]


def sklearn_pairwise_mi(bins, tau: int, pairs: np.ndarray | None = None) -> np.ndarray:
    """``mutual_info_score`` on every pair ``a < b``, mirrored, diagonal 1: ``(q, q)`` float64.

    With ``pairs`` (``(K, 2)``), only those pairs are computed and their K values returned: the
    bench times a subset of pairs and extrapolates when all of them would take too long.
    ``tau`` is unused (sklearn finds the bins itself); it is kept for a uniform signature.
    """
    b = _as_numpy(bins)
    if pairs is not None:
        return np.array([mutual_info_score(b[:, i], b[:, j]) for i, j in pairs], dtype=np.float64)
    q = b.shape[1]
    out = np.eye(q, dtype=np.float64)
    for i in range(q):
        for j in range(i + 1, q):
            out[i, j] = out[j, i] = mutual_info_score(b[:, i], b[:, j])
    return out


def _mi_from_counts_np(counts: np.ndarray, n: int) -> np.ndarray:
    """Eq. 6 from joint counts ``(..., tau, tau)`` over ``n`` samples, ``0 log 0 = 0``."""
    c = counts.astype(np.float64)
    row = c.sum(axis=-1, keepdims=True)
    col = c.sum(axis=-2, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(c > 0, c * np.log(c * n / (row * col)), 0.0)
    return np.maximum(terms.sum(axis=(-1, -2)) / max(n, 1), 0.0)


def numpy_bincount_mi(bins, tau: int, labels=None) -> np.ndarray:
    """Numpy only: for each label a one ``np.bincount`` of ``b*tau^2 + bins[:, a]*tau + bins[:, b]``.

    Returns the ``(q, q)`` MI matrix (diagonal 1), or with ``labels`` only those rows
    (``(len(labels), q)``) - what the bench runs to estimate the full cost.
    """
    x = _as_numpy(bins).astype(np.int64)
    n, q = x.shape
    labels = range(q) if labels is None else labels
    offsets = np.arange(q, dtype=np.int64) * (tau * tau)
    out = np.empty((len(labels), q), dtype=np.float64)
    for r, a in enumerate(labels):
        joint = offsets[None, :] + x[:, a : a + 1] * tau + x  # (n, q): cell of (a, b) per row
        counts = np.bincount(joint.ravel(), minlength=q * tau * tau).reshape(q, tau, tau)
        out[r] = _mi_from_counts_np(counts, n)
        out[r, a] = 1.0
    return out


def torch_onehot_matmul_mi(bins: torch.Tensor, tau: int) -> torch.Tensor:
    """The obvious torch code: one-hot ``(n, q*tau)`` float32, ``O.T @ O``, MI from the counts.

    Materialises the ``(q, q, tau, tau)`` histograms: ``O(q^2 tau^2)`` memory.
    """
    n, q = bins.shape
    onehot = torch.nn.functional.one_hot(bins.long(), tau).reshape(n, q * tau).float()
    counts = (onehot.T @ onehot).reshape(q, tau, q, tau).permute(0, 2, 1, 3)  # (q, q, tau, tau)
    p = counts / n
    pa = p.sum(dim=-1, keepdim=True)
    pb = p.sum(dim=-2, keepdim=True)
    mi = torch.where(p > 0, p * torch.log(p / (pa * pb)), torch.zeros_like(p)).sum(dim=(-1, -2))
    mi = mi.clamp(min=0)
    mi.diagonal().fill_(1.0)
    return mi


def authors_style_state(history: torch.Tensor, seen: torch.Tensor) -> dict[int, deque]:
    """The authors' state from a ring state: per sample id a ``deque(maxlen=T)`` of its newest rows.

    Rows are float32 numpy views in time order (oldest first); samples never seen get no entry.
    """
    n, T, _ = history.shape
    h = history.float().cpu().numpy()
    s = seen.cpu().numpy()
    state: dict[int, deque] = {}
    for i in range(n):
        k = min(int(s[i]), T)
        if k == 0:
            continue
        slots = [(int(s[i]) - k + t) % T for t in range(k)]
        state[i] = deque((h[i, slot] for slot in slots), maxlen=T)
    return state


def authors_style_observe(
    state: dict[int, deque], uncertainty: np.ndarray, indices, probs, T: int = 5, lam: float = 0.5
) -> None:
    """One step in the authors' style: append each prediction row, then loop sample by label.

    ``uncertainty`` is an ``(n, q)`` numpy array, written for the rows of ``indices``:
    ``u = lam * mean|diff| + (1 - lam) * entropy`` (Eq. 4, 5; entropy in bits as Eq. 1), in
    float64 on the stored (unrounded) probabilities.
    """
    ids = [int(i) for i in indices]
    for r, i in enumerate(ids):
        if i not in state:
            state[i] = deque(maxlen=T)
        state[i].append(probs[r])
    num_labels = uncertainty.shape[1]
    for i in ids:
        hist = np.array(state[i], dtype=np.float64)  # (k, q), oldest first
        for j in range(num_labels):
            h = hist[:, j]
            mean_diff = np.mean(np.abs(np.diff(h))) if len(h) >= 2 else 0.0
            p = h[-1]
            if 0.0 < p < 1.0:
                entropy = -(p * np.log(p) + (1.0 - p) * np.log(1.0 - p)) / math.log(2.0)
            else:
                entropy = 0.0
            uncertainty[i, j] = lam * mean_diff + (1.0 - lam) * entropy
