"""Triton selection log-probabilities (docs/spec.md Eq. 7-10) from U, the MI row sums c and seen.

* Eq. 7-8  ``w = U c`` (``c = C 1``; C is symmetric, so ``(U C) 1 = U c``).
* ``z = (w - min w) / (max w - min w)`` over observed samples (``seen > 0``); ``z = 0`` for all
  of them when every w is equal; never-observed samples get ``z = 1``.
* Eq. 9   ``Q = floor((1 - z) n)`` in float64 (as the reference), clamped to ``[0, n]``.
* Eq. 10  ``log P = -ln(s) Q / n - logsumexp``.

Two global reductions (min/max of w, then the log-sum-exp) split the work into five launches:
``w`` and per-block min/max, their one-program reduction, logits and per-block (max, sum exp),
their one-program reduction, and the final shift. Every reduction has a fixed order, so the
result is deterministic. The op is memory-bound on reading U once.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl
from torch.library import triton_op, wrap_triton

BLOCK = 1024  # rows per program of the elementwise passes; partials per step of the reductions


@triton.jit
def _weights_kernel(u, c, seen, w, partial, n, q, BLOCK_N: tl.constexpr, BLOCK_Q: tl.constexpr):
    """``w = U c`` for BLOCK_N rows; ``partial[pid] = (min, max)`` of w over the observed ones."""
    rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    rmask = rows < n
    base = u + rows.to(tl.int64)[:, None] * q
    acc2 = tl.zeros([BLOCK_N, BLOCK_Q], dtype=tl.float32)  # reduced across lanes once, after the loop
    for q0 in range(0, q, BLOCK_Q):
        cols = q0 + tl.arange(0, BLOCK_Q)
        cmask = cols < q
        x = tl.load(base + cols[None, :], mask=rmask[:, None] & cmask[None, :], other=0.0)
        acc2 += x * tl.load(c + cols, mask=cmask, other=0.0)[None, :]
    acc = tl.sum(acc2, axis=1)
    tl.store(w + rows, acc, mask=rmask)
    observed = rmask & (tl.load(seen + rows, mask=rmask, other=0) > 0)
    tl.store(partial + 2 * tl.program_id(0), tl.min(tl.where(observed, acc, float("inf")), axis=0))
    tl.store(partial + 2 * tl.program_id(0) + 1, tl.max(tl.where(observed, acc, -float("inf")), axis=0))


@triton.jit
def _range_kernel(partial, stats, nblocks, BLOCK: tl.constexpr):
    """``stats[0:2] = (min w, max w)`` over the observed samples (+inf, -inf if none)."""
    lo = tl.full([BLOCK], float("inf"), dtype=tl.float32)
    hi = tl.full([BLOCK], -float("inf"), dtype=tl.float32)
    for b0 in range(0, nblocks, BLOCK):
        b = b0 + tl.arange(0, BLOCK)
        m = b < nblocks
        lo = tl.minimum(lo, tl.load(partial + 2 * b, mask=m, other=float("inf")))
        hi = tl.maximum(hi, tl.load(partial + 2 * b + 1, mask=m, other=-float("inf")))
    tl.store(stats, tl.min(lo, axis=0))
    tl.store(stats + 1, tl.max(hi, axis=0))


@triton.jit
def _logits_kernel(w, seen, stats, out, partial, n, neg_log_s, BLOCK: tl.constexpr):
    """Eq. 9-10 logits ``-ln(s) Q / n``; ``partial[pid] = (max, sum exp(logit - max))``."""
    rows = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    rmask = rows < n
    lo = tl.load(stats)
    span = tl.load(stats + 1) - lo
    wv = tl.load(w + rows, mask=rmask, other=0.0)
    observed = tl.load(seen + rows, mask=rmask, other=0) > 0
    z = tl.where(span > 0, (wv - lo) / tl.where(span > 0, span, 1.0), 0.0)  # all equal: z = 0
    z = tl.where(observed, z, 1.0)
    Q = tl.floor((1.0 - z.to(tl.float64)) * n)  # Eq. 9 with Delta = 1/n, in float64 as the reference
    Q = tl.minimum(tl.maximum(Q, 0.0), n)
    logit = neg_log_s * Q.to(tl.float32) / n
    tl.store(out + rows, logit, mask=rmask)
    logit = tl.where(rmask, logit, -float("inf"))
    m = tl.max(logit, axis=0)
    tl.store(partial + 2 * tl.program_id(0), m)
    tl.store(partial + 2 * tl.program_id(0) + 1, tl.sum(tl.exp(logit - m), axis=0))


@triton.jit
def _lse_kernel(partial, stats, nblocks, BLOCK: tl.constexpr):
    """``stats[2] = logsumexp`` of all logits from the per-block (max, sum exp) pairs."""
    m = tl.full([BLOCK], -float("inf"), dtype=tl.float32)
    for b0 in range(0, nblocks, BLOCK):
        b = b0 + tl.arange(0, BLOCK)
        m = tl.maximum(m, tl.load(partial + 2 * b, mask=b < nblocks, other=-float("inf")))
    top = tl.max(m, axis=0)
    s = tl.zeros([BLOCK], dtype=tl.float32)
    for b0 in range(0, nblocks, BLOCK):
        b = b0 + tl.arange(0, BLOCK)
        mb = tl.load(partial + 2 * b, mask=b < nblocks, other=-float("inf"))
        sb = tl.load(partial + 2 * b + 1, mask=b < nblocks, other=0.0)
        s += tl.where(b < nblocks, sb * tl.exp(mb - top), 0.0)
    tl.store(stats + 2, top + tl.log(tl.sum(s, axis=0)))


@triton.jit
def _shift_kernel(out, stats, n, BLOCK: tl.constexpr):
    rows = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    rmask = rows < n
    tl.store(out + rows, tl.load(out + rows, mask=rmask) - tl.load(stats + 2), mask=rmask)


@triton_op("ubs_kernels::selection_log_probs_triton", mutates_args=())
def selection_log_probs_triton(
    uncertainty: torch.Tensor, c: torch.Tensor, seen: torch.Tensor, pressure: float
) -> torch.Tensor:
    n, q = uncertainty.shape
    dev = uncertainty.device
    out = torch.empty((n,), dtype=torch.float32, device=dev)
    if n == 0:
        return out
    block_q = min(triton.next_power_of_2(max(q, 1)), 128)
    block_n = max(1, 4096 // block_q)
    nb_w = triton.cdiv(n, block_n)
    nb = triton.cdiv(n, BLOCK)
    w = torch.empty((n,), dtype=torch.float32, device=dev)
    partial_w = torch.empty((2 * nb_w,), dtype=torch.float32, device=dev)
    partial_l = torch.empty((2 * nb,), dtype=torch.float32, device=dev)
    stats = torch.empty((4,), dtype=torch.float32, device=dev)
    wrap_triton(_weights_kernel)[(nb_w,)](
        uncertainty, c, seen, w, partial_w, n, q, BLOCK_N=block_n, BLOCK_Q=block_q, num_warps=8
    )
    wrap_triton(_range_kernel)[(1,)](partial_w, stats, nb_w, BLOCK=BLOCK)
    neg_log_s = -math.log(pressure)
    wrap_triton(_logits_kernel)[(nb,)](w, seen, stats, out, partial_l, n, neg_log_s, BLOCK=BLOCK)
    wrap_triton(_lse_kernel)[(1,)](partial_l, stats, nb, BLOCK=BLOCK)
    wrap_triton(_shift_kernel)[(nb,)](out, stats, n, BLOCK=BLOCK)
    return out
