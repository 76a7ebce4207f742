"""Triton whole-matrix uncertainty pass (Eq. 1, 4, 5 and the bin for all n rows), and the
per-element helper it shares with the per-step ``observe`` kernel.

For sample i with ``count = seen_i`` predictions, label j, and ``k = min(count, T)``, the k newest
predictions sit in ring slots ``(count - k + h) % T`` for ``h = 0 .. k-1`` (oldest first):

* Eq. 4  ``d = sum_h |y_h - y_{h-1}| / (k - 1)`` (``d = 0`` when ``k < 2``);
* Eq. 1  ``e = -(p ln p + (1-p) ln(1-p)) / ln 2`` of the newest ``p = y_{k-1}``, ``0 ln 0 = 0``;
* Eq. 5  ``u = lam d + (1 - lam) e`` and ``bin = min(floor(u tau), tau - 1)``; rows with
  ``count = 0`` are 0.

Everything is float32 on the values as stored in the ring (float16 or float32), in the same
order of operations as :mod:`ubs_kernels.reference`, so ``observe`` and ``uncertainty`` of this
backend agree bit for bit. The pass is memory-bound: it reads ``k`` ring slots per element and
writes 5 bytes, so tiles are wide along q (contiguous, vectorised) and a few rows tall.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl
from torch.library import triton_op, wrap_triton

LN2 = tl.constexpr(math.log(2.0))  # a constexpr: jit code may read only constexpr globals
ELEMENTS_PER_PROGRAM = 4096  # whole-matrix tile: enough bytes in flight per SM to reach HBM bandwidth


@triton.jit
def window_uncertainty(
    ring, stride_t, count, mask, newest, lam, one_minus_lam, tau, T: tl.constexpr, HAS_NEWEST: tl.constexpr
):
    """U (Eq. 5) and its bin for a tile of (sample, label) elements.

    ``ring`` points at slot 0 of each element's ring (slots ``stride_t`` apart); ``count`` is the
    sample's number of predictions, broadcastable to the tile. With ``HAS_NEWEST`` the newest
    prediction is taken from ``newest`` (just written by ``observe``, still in registers)
    instead of being read back.
    """
    k = tl.minimum(count, T)
    start = count - k
    if HAS_NEWEST:
        x = tl.load(ring + (start % T) * stride_t, mask=mask & (k > 1), other=0.0).to(tl.float32)
        x = tl.where(k == 1, newest, x)
    else:
        x = tl.load(ring + (start % T) * stride_t, mask=mask & (k > 0), other=0.0).to(tl.float32)
    total = tl.zeros_like(x)
    last = x
    prev = x
    # Time order, oldest first, as the reference sums; slots past the window are never read.
    for h in tl.static_range(1, T):
        ptr = ring + ((start + h) % T) * stride_t
        if HAS_NEWEST:
            x = tl.load(ptr, mask=mask & (h < k - 1), other=0.0).to(tl.float32)
            x = tl.where(h == k - 1, newest, x)
        else:
            x = tl.load(ptr, mask=mask & (h < k), other=0.0).to(tl.float32)
        valid = h < k
        total += tl.where(valid, tl.abs(x - prev), 0.0)
        last = tl.where(valid, x, last)
        prev = x
    d = tl.where(k >= 2, total / tl.maximum(k - 1, 1).to(tl.float32), 0.0)  # Eq. 4
    p = last
    r = 1.0 - p
    # 0 ln 0 = 0: the log argument is replaced by 1 where the factor is 0.
    e = -(p * tl.log(tl.where(p > 0, p, 1.0)) + r * tl.log(tl.where(r > 0, r, 1.0))) / LN2  # Eq. 1
    u = lam * d + one_minus_lam * e  # Eq. 5
    u = tl.where(count >= 1, u, 0.0)
    b = tl.minimum(tl.maximum(tl.floor(u * tau), 0.0), tau - 1.0).to(tl.uint8)
    return u, b


@triton.jit
def _uncertainty_kernel(
    history,
    seen,
    u_out,
    bins_out,
    n,
    q_div,
    lam,
    one_minus_lam,
    tau,
    T: tl.constexpr,
    ALIGN: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_Q: tl.constexpr,
):
    # q arrives as q / ALIGN: rebuilt here, the compiler knows q (every row and slot offset, and
    # the cols < q mask) is a multiple of ALIGN, so loads and stores become 16-byte vectors.
    q = q_div * ALIGN
    rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    cols = tl.program_id(1) * BLOCK_Q + tl.arange(0, BLOCK_Q)
    cols = tl.max_contiguous(tl.multiple_of(cols, BLOCK_Q), BLOCK_Q)
    rmask = rows < n
    count = tl.load(seen + rows, mask=rmask, other=0)[:, None]
    mask = rmask[:, None] & (cols < q)[None, :]
    rows64 = rows.to(tl.int64)
    ring_off = (rows64 * (T * q))[:, None]
    out_off = (rows64 * q)[:, None]
    u, b = window_uncertainty(
        history + ring_off + cols[None, :], q, count, mask, 0.0, lam, one_minus_lam, tau, T, False
    )
    tl.store(u_out + out_off + cols[None, :], u, mask=mask)
    tl.store(bins_out + out_off + cols[None, :], b, mask=mask)


def alignment(q: int) -> int:
    """Largest power of two (up to 16) dividing q: the vector width the kernels can prove."""
    return math.gcd(q, 16)


@triton_op("ubs_kernels::uncertainty_triton", mutates_args=())
def uncertainty_triton(
    history: torch.Tensor, seen: torch.Tensor, lam: float, tau: int
) -> tuple[torch.Tensor, torch.Tensor]:
    n, T, q = history.shape
    u = torch.empty((n, q), dtype=torch.float32, device=history.device)
    bins = torch.empty((n, q), dtype=torch.uint8, device=history.device)
    if n == 0 or q == 0:
        return u, bins
    block_q = min(triton.next_power_of_2(q), 512)
    block_n = max(1, ELEMENTS_PER_PROGRAM // block_q)
    grid = (triton.cdiv(n, block_n), triton.cdiv(q, block_q))
    wrap_triton(_uncertainty_kernel)[grid](
        history,
        seen,
        u,
        bins,
        n,
        q // alignment(q),
        float(lam),
        float(1.0 - lam),
        int(tau),
        T=T,
        ALIGN=alignment(q),
        BLOCK_N=block_n,
        BLOCK_Q=block_q,
        num_warps=8,
    )
    return u, bins
