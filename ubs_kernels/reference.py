"""Plain-PyTorch reference of every stage of docs/spec.md, equation by equation.

This module is the test oracle of every fast backend and the last-resort fallback of
:mod:`ubs_kernels.ops` (backend ``"torch"``). Every function takes a ``dtype`` for its
arithmetic: ``torch.float32`` is what the kernels do (docs/spec.md: "all arithmetic is float32"),
``torch.float64`` is the oracle.

Equations (Zhou et al., AAAI 2025):

* Eq. 1  ``e = -(p log2 p + (1-p) log2(1-p))``, ``0 log 0 = 0``.
* Eq. 4  ``d = 1/(k-1) * sum_h |y^(h+1) - y^(h)|`` over the ``k = min(seen, T)`` newest
  predictions of a sample, ``d = 0`` when ``k < 2``.
* Eq. 5  ``u = lam * d + (1 - lam) * e``; the bin is ``min(floor(u * tau), tau - 1)``.
* Eq. 6  ``C_ab = sum_kl p_ab(k,l) ln(p_ab(k,l) / (p_a(k) p_b(l)))`` over the binned U of the
  observed samples; ``C_aa = 1``.
* Eq. 7-8 ``w = (U C) 1 = U c`` with ``c = C 1``; ``z`` is ``w`` min-max normalised over the
  observed samples, ``z = 1`` for samples never observed.
* Eq. 9  ``Q = floor((1 - z) / Delta)``, ``Delta = 1/n``.
* Eq. 10 ``P_i ∝ exp(-ln(s) Q_i / n)``, returned as log-probabilities.
* Eq. 11 ``s_t = s0 * (exp(ln(1/s0) / (t_end - t_start)))^(t - t_start)``.

State layout (shared by all backends): ``history`` is ``(n, T, q)`` float16 or float32, the
ring of the last T probability rows of each sample; ``seen`` is ``(n,)`` int64, how many times
each sample was observed. A sample's next prediction goes to slot ``seen % T``, so the ring
start needs no storage of its own. ``uncertainty`` is ``(n, q)`` float32 and ``bins`` is
``(n, q)`` uint8.

U is always computed from the probabilities *as stored* in ``history`` (rounded to its
dtype), so the per-step observe pass and the whole-matrix pass agree (exactly within one
backend; to float32 rounding across backends, which order operations differently).
"""

from __future__ import annotations

import math

import torch

__all__ = [
    "entropy",
    "time_ordered_window",
    "window_fluctuation",
    "uncertainty_rows",
    "to_bins",
    "observe",
    "uncertainty",
    "one_hot_bins",
    "joint_counts",
    "joint_histograms",
    "mutual_information",
    "label_mi",
    "weights",
    "normalise",
    "quantise",
    "log_probabilities",
    "selection_log_probs",
    "selection_pressure",
]

_LN2 = math.log(2.0)


def entropy(p: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Eq. 1: binary entropy in bits, ``e(0) = e(1) = 0``."""
    p = p.to(dtype)
    return -(torch.special.xlogy(p, p) + torch.special.xlogy(1 - p, 1 - p)) / _LN2


def time_ordered_window(history: torch.Tensor, seen: torch.Tensor):
    """Reorder each sample's ring oldest-to-newest.

    Returns ``(window, k)``: ``window`` is ``(m, T, q)`` with the newest prediction at index
    ``T-1`` and ``k = min(seen, T)`` (``(m,)``) tells how many of the trailing entries are
    real predictions.
    """
    T = history.shape[1]
    steps = torch.arange(T, device=history.device)
    slots = (seen[:, None] - T + steps[None, :]).remainder(T)  # (m, T), newest last
    window = torch.gather(history, 1, slots[:, :, None].expand(-1, -1, history.shape[2]))
    return window, seen.clamp(max=T)


def window_fluctuation(window: torch.Tensor, k: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Eq. 4: mean absolute difference of adjacent predictions among the k newest."""
    T = window.shape[1]
    w = window.to(dtype)
    diffs = (w[:, 1:] - w[:, :-1]).abs()  # (m, T-1, q); diff j joins steps j and j+1
    valid = torch.arange(T - 1, device=w.device)[None, :] >= (T - k)[:, None]
    total = (diffs * valid[:, :, None]).sum(dim=1)
    denom = (k - 1).clamp(min=1).to(dtype)[:, None]
    return torch.where((k >= 2)[:, None], total / denom, torch.zeros_like(total))


def uncertainty_rows(
    history_rows: torch.Tensor, seen_rows: torch.Tensor, lam: float, dtype=torch.float32
) -> torch.Tensor:
    """Eq. 5 for the given rows: ``u = lam * d + (1 - lam) * e`` (zero where never seen)."""
    window, k = time_ordered_window(history_rows, seen_rows)
    d = window_fluctuation(window, k, dtype)
    e = entropy(window[:, -1], dtype)
    u = lam * d + (1.0 - lam) * e
    return torch.where((k >= 1)[:, None], u, torch.zeros_like(u))


def to_bins(u: torch.Tensor, tau: int) -> torch.Tensor:
    """The bin of Eq. 6's histograms: ``min(floor(u * tau), tau - 1)`` as uint8."""
    return torch.floor(u * tau).clamp(0, tau - 1).to(torch.uint8)


def observe(
    history: torch.Tensor,
    seen: torch.Tensor,
    uncertainty_out: torch.Tensor,
    bins_out: torch.Tensor,
    indices: torch.Tensor,
    probs: torch.Tensor,
    lam: float = 0.5,
    tau: int = 10,
    dtype: torch.dtype = torch.float32,
) -> None:
    """One training step: write ``probs`` into the rings of ``indices`` and refresh their U/bins.

    In place on ``history``, ``seen``, ``uncertainty_out`` and ``bins_out``. No validation:
    :func:`ubs_kernels.ops.observe` checks its arguments before any backend runs.
    """
    T = history.shape[1]
    idx = indices.long()
    s = seen[idx]
    history[idx, s.remainder(T)] = probs.to(history.dtype)
    s = s + 1
    seen[idx] = s
    u = uncertainty_rows(history[idx], s, lam, dtype)
    uncertainty_out[idx] = u.to(uncertainty_out.dtype)
    bins_out[idx] = to_bins(u, tau)


def record(history: torch.Tensor, seen: torch.Tensor, indices: torch.Tensor, probs: torch.Tensor) -> None:
    """The ring write and count of :func:`observe` alone (U and bins untouched). In place."""
    T = history.shape[1]
    idx = indices.long()
    s = seen[idx]
    history[idx, s.remainder(T)] = probs.to(history.dtype)
    seen[idx] = s + 1


def stage(
    staged_indices: torch.Tensor,
    staged_probs: torch.Tensor,
    offset: int,
    indices: torch.Tensor,
    probs: torch.Tensor,
    logits: bool = False,
) -> None:
    """One step's observation into the staging buffers at row ``offset`` (probs rounded to their
    dtype; with ``logits``, their sigmoid in float32)."""
    b = indices.shape[0]
    staged_indices[offset : offset + b] = indices.long()
    staged_probs[offset : offset + b] = (torch.sigmoid(probs.to(torch.float32)) if logits else probs).to(
        staged_probs.dtype
    )


def observe_staged(
    history: torch.Tensor,
    seen: torch.Tensor,
    uncertainty_out: torch.Tensor,
    bins_out: torch.Tensor,
    staged_indices: torch.Tensor,
    staged_probs: torch.Tensor,
    lam: float = 0.5,
    tau: int = 10,
    dtype: torch.dtype = torch.float32,
) -> None:
    """The staged rows applied in order, as :func:`observe` per staged step. In place.

    A row that is a sample's r-th staged row goes in round r; within a round samples are
    distinct, so each round is one :func:`record`, and rounds in order keep every sample's rows
    in order. U and bins of the staged samples then come from their rings, as :func:`observe`
    leaves them after a sample's last observation.
    """
    idx = staged_indices.long()
    if idx.numel() == 0:
        return
    ordered, where = torch.sort(idx, stable=True)
    _, counts = torch.unique_consecutive(ordered, return_counts=True)
    starts = torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
    rank = torch.empty_like(idx)
    rank[where] = torch.arange(idx.numel(), device=idx.device) - starts
    for r in range(int(counts.max())):
        rows = (rank == r).nonzero().flatten()
        record(history, seen, idx[rows], staged_probs[rows])
    touched = torch.unique(idx)
    u = uncertainty_rows(history[touched], seen[touched], lam, dtype)
    uncertainty_out[touched] = u.to(uncertainty_out.dtype)
    bins_out[touched] = to_bins(u, tau)


def uncertainty(history: torch.Tensor, seen: torch.Tensor, lam: float = 0.5, tau: int = 10, dtype=torch.float32):
    """Whole-matrix variant: U (Eq. 5) and bins of all n rows from the history alone."""
    u = uncertainty_rows(history, seen, lam, dtype)
    return u, to_bins(u, tau)


def one_hot_bins(bins: torch.Tensor, tau: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """The ``(n, q tau)`` one-hot matrix of the binned columns: column ``a tau + k`` is 1 where
    ``bins[:, a] = k``."""
    n, q = bins.shape
    return torch.nn.functional.one_hot(bins.long(), tau).reshape(n, q * tau).to(dtype)


def joint_counts(onehot: torch.Tensor, tau: int, a0: int = 0, a1: int | None = None) -> torch.Tensor:
    """Joint histograms ``N_ab(k, l) = #{i : bins[i, a] = k and bins[i, b] = l}`` of labels
    ``a0:a1`` against every label, ``(a1 - a0, q, tau, tau)``, as a block of the Gram matrix of
    :func:`one_hot_bins` (exact in its dtype: float64 up to 2^53 rows, float32 up to 2^24)."""
    q = onehot.shape[1] // tau
    a1 = q if a1 is None else a1
    counts = onehot[:, a0 * tau : a1 * tau].T @ onehot
    return counts.reshape(a1 - a0, tau, q, tau).permute(0, 2, 1, 3)


def joint_histograms(bins: torch.Tensor, tau: int, dtype: torch.dtype = torch.float64):
    """All q x q joint histograms of the binned columns, ``(q, q, tau, tau)`` counts."""
    return joint_counts(one_hot_bins(bins, tau, dtype), tau)


def mutual_information(counts: torch.Tensor, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Eq. 6 from joint counts ``(..., tau, tau)``: natural-log MI, ``0 log 0 = 0``.

    ``MI = sum_kl (N_kl / N) * (ln N_kl + ln N - ln N_k. - ln N_.l)``.
    """
    c = counts.to(dtype)
    total = c.sum(dim=(-1, -2), keepdim=True)
    row = c.sum(dim=-1, keepdim=True)
    col = c.sum(dim=-2, keepdim=True)
    safe_total = total.clamp(min=1)
    log_ratio = (
        torch.log(c.clamp(min=1)) + torch.log(safe_total) - torch.log(row.clamp(min=1)) - torch.log(col.clamp(min=1))
    )
    mi = torch.where(c > 0, c * log_ratio, torch.zeros_like(c)).sum(dim=(-1, -2))
    # Rounding can leave a true zero as -1e-17; MI is non-negative by definition.
    return (mi / safe_total[..., 0, 0]).clamp(min=0)


def label_mi(
    bins: torch.Tensor,
    tau: int,
    rowsum: bool = False,
    dtype: torch.dtype = torch.float64,
    block_labels: int | None = None,
) -> torch.Tensor:
    """Eq. 6 for every label pair, diagonal set to 1.

    ``bins`` holds the rows of the observed samples only. Returns ``(q, q)`` or, with
    ``rowsum=True``, the row sums ``c = C 1`` of shape ``(q,)``. Work is blocked over label
    rows so memory stays ``O(n q tau + block * q * tau^2)``.
    """
    q = bins.shape[1]
    onehot = one_hot_bins(bins, tau, dtype)
    if block_labels is None:
        block_labels = max(1, min(q, (1 << 24) // max(1, q * tau * tau)))
    out = torch.empty((q,) if rowsum else (q, q), dtype=dtype, device=bins.device)
    for a0 in range(0, q, block_labels):
        a1 = min(q, a0 + block_labels)
        mi = mutual_information(joint_counts(onehot, tau, a0, a1), dtype)  # (B, q)
        rows = torch.arange(a1 - a0, device=bins.device)
        mi[rows, rows + a0] = 1.0
        out[a0:a1] = mi.sum(dim=1) if rowsum else mi
    return out


def weights(u: torch.Tensor, c: torch.Tensor, dtype=torch.float32) -> torch.Tensor:
    """Eq. 7-8: ``w_i = sum_j (U C)_ij = (U c)_i`` with ``c = C 1`` (C is symmetric)."""
    return u.to(dtype) @ c.to(dtype)


def normalise(w: torch.Tensor, seen: torch.Tensor, bounds: tuple | None = None) -> torch.Tensor:
    """Min-max normalisation over observed samples; never-observed samples get ``z = 1``.

    If every observed ``w`` is equal, the observed samples get ``z = 0`` (uniform selection).
    ``bounds``: the ``(min, max)`` of ``w`` over the observed samples of a larger set (every
    rank's, :mod:`ubs_kernels.distributed`), None when nothing there was observed.
    """
    observed = seen > 0
    if bounds is None and bool(observed.any()):
        wo = w[observed]
        bounds = (wo.min(), wo.max())
    if bounds is None:
        return torch.ones_like(w)
    lo, hi = bounds
    span = hi - lo
    z = (w - lo) / span if bool(span > 0) else torch.zeros_like(w)
    return torch.where(observed, z, torch.ones_like(w))


def quantise(z: torch.Tensor, n: int) -> torch.Tensor:
    """Eq. 9: ``Q = floor((1 - z) / Delta)`` with ``Delta = 1/n``; an integer in ``[0, n]``."""
    return torch.floor((1.0 - z.to(torch.float64)) * n).clamp(0, n)


def log_probabilities(Q: torch.Tensor, n: int, pressure: float, dtype=torch.float64):
    """Eq. 10: ``log P_i = -ln(s) Q_i / n - logsumexp``; sums to 1 in probability space."""
    logits = -math.log(pressure) * Q.to(dtype) / n
    return logits - torch.logsumexp(logits, dim=0)


def selection_log_probs(
    u: torch.Tensor, c: torch.Tensor, seen: torch.Tensor, pressure: float, dtype=torch.float32
) -> torch.Tensor:
    """Eq. 7-10 composed: log P of every sample for the next epoch, ``(n,)``."""
    n = u.shape[0]
    z = normalise(weights(u, c, dtype), seen)
    return log_probabilities(quantise(z, n), n, pressure, dtype)


def selection_pressure(epoch: int, s0: float = 100.0, warmup: int = 5, epochs: int = 100) -> float:
    """Eq. 11 with ``t_start = warmup`` and ``t_end = epochs``.

    ``s0`` at ``t_start`` (and during warm-up, where it is unused), falling exponentially to 1
    at ``t_end``, and 1 after.
    """
    if epoch >= epochs:
        return 1.0
    if epoch <= warmup:
        return float(s0)
    rate = math.exp(math.log(1.0 / s0) / (epochs - warmup))
    return float(s0 * rate ** (epoch - warmup))
