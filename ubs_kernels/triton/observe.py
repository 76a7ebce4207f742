"""Triton per-step ``observe`` pass: history ring write, Eq. 1, 4, 5 and the bin for the batch rows,
and ``record``, its ring write and count alone (U and the bins left to the whole-matrix pass).

For each batch row r with sample ``i = indices[r]`` and ``s = seen[i]``: the probabilities are
rounded to the history dtype and written to ring slot ``s % T``, then U and the bin of row i are
recomputed from the ``k = min(s + 1, T)`` newest predictions (see
:func:`ubs_kernels.triton.uncertainty.window_uncertainty`, shared with the whole-matrix pass so
both agree bit for bit), and finally ``seen[i] += 1``.

Two launches: the row pass is split over (row, label block) programs that all read ``seen[i]``,
so the increment runs afterwards as its own tiny kernel (stream order) instead of racing them.
Indices are distinct (checked by :func:`ubs_kernels.ops.observe`), so rows never collide.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch.library import triton_op, wrap_triton

from .uncertainty import alignment, window_uncertainty


@triton.jit
def _observe_rows_kernel(
    history,
    seen,
    u_out,
    bins_out,
    indices,
    probs,
    stride_pr,
    stride_pq,
    q_div,
    lam,
    one_minus_lam,
    tau,
    T: tl.constexpr,
    ALIGN: tl.constexpr,
    BLOCK_Q: tl.constexpr,
):
    q = q_div * ALIGN  # q passed as q / ALIGN, so its divisibility is known: vector loads (see uncertainty.py)
    r = tl.program_id(0)
    cols = tl.program_id(1) * BLOCK_Q + tl.arange(0, BLOCK_Q)
    cols = tl.max_contiguous(tl.multiple_of(cols, BLOCK_Q), BLOCK_Q)
    mask = cols < q
    i = tl.load(indices + r)
    s = tl.load(seen + i)
    ring = history + i * (T * q) + cols
    p = tl.load(probs + r.to(tl.int64) * stride_pr + cols * stride_pq, mask=mask, other=0.0)
    p = p.to(history.dtype.element_ty)  # round to the storage dtype: U is computed from what is stored
    tl.store(ring + (s % T) * q, p, mask=mask)
    # The count as a (BLOCK_Q,) tensor, not a scalar: the interpreter mistypes scalar & tensor masks.
    count = tl.zeros([BLOCK_Q], dtype=tl.int64) + (s + 1)
    u, b = window_uncertainty(ring, q, count, mask, p.to(tl.float32), lam, one_minus_lam, tau, T, True)
    row = i * q
    tl.store(u_out + row + cols, u, mask=mask)
    tl.store(bins_out + row + cols, b, mask=mask)


@triton.jit
def _record_rows_kernel(history, seen, indices, probs, stride_pr, stride_pq, q, T: tl.constexpr, BLOCK_Q: tl.constexpr):
    r = tl.program_id(0)
    cols = tl.program_id(1) * BLOCK_Q + tl.arange(0, BLOCK_Q)
    mask = cols < q
    i = tl.load(indices + r)
    s = tl.load(seen + i)
    p = tl.load(probs + r.to(tl.int64) * stride_pr + cols * stride_pq, mask=mask, other=0.0)
    tl.store(history + i * (T * q) + (s % T) * q + cols, p.to(history.dtype.element_ty), mask=mask)


@triton.jit
def _increment_seen_kernel(seen, indices, b, BLOCK: tl.constexpr):
    r = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = r < b
    i = tl.load(indices + r, mask=mask, other=0)
    tl.store(seen + i, tl.load(seen + i, mask=mask, other=0) + 1, mask=mask)


@triton_op("ubs_kernels::observe_triton", mutates_args={"history", "seen", "uncertainty", "bins"})
def observe_triton(
    history: torch.Tensor,
    seen: torch.Tensor,
    uncertainty: torch.Tensor,
    bins: torch.Tensor,
    indices: torch.Tensor,
    probs: torch.Tensor,
    lam: float,
    tau: int,
) -> None:
    b = indices.shape[0]
    _, T, q = history.shape
    if b == 0 or q == 0:
        return
    if probs.dtype == torch.float64:
        # torch rounds float64 -> float16 through float32; do the same as the reference does,
        # instead of a direct conversion that could round differently.
        probs = probs.to(history.dtype)
    block_q = min(triton.next_power_of_2(q), 1024)
    wrap_triton(_observe_rows_kernel)[(b, triton.cdiv(q, block_q))](
        history,
        seen,
        uncertainty,
        bins,
        indices,
        probs,
        probs.stride(0),
        probs.stride(1),
        q // alignment(q),
        float(lam),
        float(1.0 - lam),
        int(tau),
        T=T,
        ALIGN=alignment(q),
        BLOCK_Q=block_q,
        num_warps=4,
    )
    wrap_triton(_increment_seen_kernel)[(triton.cdiv(b, 1024),)](seen, indices, b, BLOCK=1024)


@triton_op("ubs_kernels::record_triton", mutates_args={"history", "seen"})
def record_triton(history: torch.Tensor, seen: torch.Tensor, indices: torch.Tensor, probs: torch.Tensor) -> None:
    b = indices.shape[0]
    _, T, q = history.shape
    if b == 0 or q == 0:
        return
    if probs.dtype == torch.float64:
        probs = probs.to(history.dtype)  # through float32, as observe_triton (and torch) round it
    block_q = min(triton.next_power_of_2(q), 1024)
    wrap_triton(_record_rows_kernel)[(b, triton.cdiv(q, block_q))](
        history, seen, indices, probs, probs.stride(0), probs.stride(1), q, T=T, BLOCK_Q=block_q, num_warps=4
    )
    wrap_triton(_increment_seen_kernel)[(triton.cdiv(b, 1024),)](seen, indices, b, BLOCK=1024)
