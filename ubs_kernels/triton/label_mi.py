"""Triton mutual information of every pair of binned label columns (docs/spec.md Eq. 6).

``C_ab = sum_kl (N_kl / n) ln(N_kl n / (H_a(k) H_b(l)))`` with ``N_kl`` the joint counts of
columns a and b and ``H_a`` the bin counts of column a; ``C_aa = 1``. Output: the (q, q) matrix,
or only its row sums ``c = C 1`` in O(q) memory.

Design. A program owns a tile of BA labels x BA labels (upper triangle only: C is symmetric)
and streams the n rows in chunks of BK. The one-hot operands are never in memory: each chunk
loads the (BK, BA) uint8 bins and expands them in registers, ``(x == k)`` for each bin k, into
int8 (label, bin) tiles, and the joint counts of all BA^2 pairs accumulate on the tensor cores
with int8 x int8 -> int32 ``tl.dot``: exact for n < 2^31 (float32 would be exact only to
2^24). The epilogue turns each pair's tau x tau block into its MI, from the exact counts: one
float32 log of the ratio ``N n / (H_a H_b)`` per cell. Full matrix: each tile writes its block
and the transposed one; row sums: float32 atomics into c (so the last bits depend on order).

Work saving (``DERIVE``): only the first tau-1 bins are expanded; the last row and column of
each block follow from the bin counts H (a first, cheap pass): ``N_{k,last} = H_a(k) - sum_l
N_kl`` and ``N_{last,last} = sum N_kl + H_a(last) + H_b(last) - n``, all in exact int32. The
tau-1 bins are split into a power of two P and a remainder padded to RP (tl.dot needs power-of-
two shapes), e.g. tau = 10: 9 = 8 + 1, so no tensor-core work is wasted on padding.
For tau > 161 a block does not fit the registers: bins are then taken in chunks of 128 per
label, one launch per chunk pair, each adding its cells' terms (no derived cells).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch.library import triton_op, wrap_triton

MAX_TILE_ROWS = 160  # BA * (P + RP): int32 accumulators of at most 160 x 160 per program
BLOCK_K = 128  # rows of bins per step (int8 tl.dot needs K >= 32)
CHUNK = 128  # bins per label per launch when tau is too large for one block


def plan(tau: int) -> dict:
    """The tile constexprs for tau: labels per tile side BA, the two power-of-two bin groups P and
    RP, whether the last bin is derived (DERIVE), the operand order LM, the histogram width TH."""
    t1 = tau - 1
    p = 1 << (t1.bit_length() - 1)
    r = t1 - p
    for ba in (128, 64, 32, 16, 8, 4, 2, 1):
        # tl.dot operands need at least 16 rows: pad a small remainder group up to that.
        rp = 0 if r == 0 else max(triton.next_power_of_2(r), 16 // ba)
        if p >= ba and rp > 1:  # label-major operands (see _onehot_rows) need >= 8 bins per group
            rp = max(rp, 8)
        if ba * p >= 16 and ba * (p + rp) <= MAX_TILE_ROWS:
            derive = True
            break
    else:  # tau > 161: one label per tile side, CHUNK bins per launch, nothing derived
        derive, ba, p, rp = False, 1, CHUNK, 0
    # LM: label-major operands when the bins outnumber the labels (see _onehot_rows).
    return {"BA": ba, "P": p, "RP": rp, "DERIVE": derive, "LM": int(p >= ba), "TH": triton.next_power_of_2(tau),
            "BK": BLOCK_K}  # fmt: skip


@triton.jit
def _hist_kernel(bins, hist, n, q, ROWS: tl.constexpr, BR: tl.constexpr, BL: tl.constexpr, TH: tl.constexpr):
    """``hist[a, k] = #{i : bins[i, a] = k}`` for a strip of BL labels and ROWS rows."""
    labels = tl.program_id(1) * BL + tl.arange(0, BL)
    lmask = labels < q
    ks = tl.arange(0, TH)
    acc = tl.zeros([BL, TH], dtype=tl.int32)
    start = tl.program_id(0) * ROWS
    for r0 in range(start, tl.minimum(start + ROWS, n), BR):
        rows = r0 + tl.arange(0, BR)
        m = (rows < n)[:, None] & lmask[None, :]
        x = tl.load(bins + rows.to(tl.int64)[:, None] * q + labels[None, :], mask=m, other=0).to(tl.int32)
        x = tl.where(m, x, -1)
        acc += tl.sum((x[:, :, None] == ks[None, None, :]).to(tl.int32), axis=0)
    tl.atomic_add(hist + labels[:, None] * TH + ks[None, :], acc, mask=lmask[:, None])


@triton.jit
def _term(N, x, y, nf):
    """``N ln(N n / (x y))`` where N > 0, else 0; one ratio, not a sum of logs, so that
    near-independent columns (ratio ~ 1) do not lose their MI to cancellation."""
    Nf = N.to(tl.float32)
    den = tl.maximum(x.to(tl.float32) * y.to(tl.float32), 1.0)
    num = tl.where(N > 0, Nf * nf, den)
    return tl.where(N > 0, Nf * tl.log(num / den), 0.0)


@triton.jit
def _onehot_rows(x, k0, lim, K: tl.constexpr, LM: tl.constexpr):
    """int8 one-hot of bins ``k0 .. k0+K-1`` (only those < lim): (BA, BK) -> (BA * K, BK).

    Row ``a * K + k`` if LM (label-major), else ``k * BA + a`` (bin-major). The order is chosen
    so that the inner of the two merged axes is the longer one: otherwise Triton's sm_90
    dot-operand pass fails ("Illegal shared layout"), as it does for a reshape that only drops a
    size-1 axis (hence K == 1 apart).
    """
    if K == 1:
        oh = ((x == k0) & (k0 < lim)).to(tl.int8)
    elif LM:
        ks = k0 + tl.arange(0, K)
        oh3 = (x[:, None, :] == ks[None, :, None]) & (ks < lim)[None, :, None]
        oh = tl.reshape(oh3.to(tl.int8), [x.shape[0] * K, x.shape[1]])
    else:
        ks = k0 + tl.arange(0, K)
        oh3 = (x[None, :, :] == ks[:, None, None]) & (ks < lim)[:, None, None]
        oh = tl.reshape(oh3.to(tl.int8), [K * x.shape[0], x.shape[1]])
    return oh


@triton.jit
def _onehot_cols(x, k0, lim, K: tl.constexpr, LM: tl.constexpr):
    """The same for the right operand: (BK, BA) -> (BK, BA * K), columns in the same order."""
    if K == 1:
        oh = ((x == k0) & (k0 < lim)).to(tl.int8)
    elif LM:
        ks = k0 + tl.arange(0, K)
        oh3 = (x[:, :, None] == ks[None, None, :]) & (ks < lim)[None, None, :]
        oh = tl.reshape(oh3.to(tl.int8), [x.shape[0], x.shape[1] * K])
    else:
        ks = k0 + tl.arange(0, K)
        oh3 = (x[:, None, :] == ks[None, :, None]) & (ks < lim)[None, :, None]
        oh = tl.reshape(oh3.to(tl.int8), [x.shape[0], K * x.shape[1]])
    return oh


@triton.jit
def _marginal(hist, labels, lmask, k0, lim, K: tl.constexpr, TH: tl.constexpr, LM: tl.constexpr):
    """Bin counts ``H[label, k0 + k]``, (BA, K) if LM else (K, BA); 0 past lim."""
    ks = k0 + tl.arange(0, K)
    if LM:
        h = tl.load(hist + labels[:, None] * TH + ks[None, :], mask=lmask[:, None] & (ks < lim)[None, :], other=0)
    else:
        h = tl.load(hist + labels[None, :] * TH + ks[:, None], mask=(ks < lim)[:, None] & lmask[None, :], other=0)
    return h


@triton.jit
def _block_terms(acc, ha, hb, nf, BA: tl.constexpr, KA: tl.constexpr, KB: tl.constexpr, LM: tl.constexpr):
    """Counts -> N, 4-D: ``[a, k, b, l]`` if LM else ``[k, a, l, b]``; returns N and the MI terms
    summed over the bins k, l, (BA, BA)."""
    if LM:
        N = tl.reshape(acc, [BA, KA, BA, KB])
    else:
        N = tl.reshape(acc, [KA, BA, KB, BA])
    t = _term(N, ha[:, :, None, None], hb[None, None, :, :], nf)
    return N, tl.sum(tl.sum(t, axis=2 + LM), axis=LM)


@triton.jit
def _mi_tiles_kernel(
    bins,
    hist,
    out,
    n,
    nf,
    q,
    lim,
    ka0,
    kb0,
    diag_value,
    BA: tl.constexpr,
    P: tl.constexpr,
    RP: tl.constexpr,
    BK: tl.constexpr,
    TH: tl.constexpr,
    DERIVE: tl.constexpr,
    ROWSUM: tl.constexpr,
    ACCUMULATE: tl.constexpr,
    LM: tl.constexpr,  # 1: label-major operands (a * K + k), 0: bin-major (k * BA + a)
):
    ti = tl.program_id(1)
    tj = tl.program_id(0)
    if tj < ti:  # symmetric: only tiles on or above the diagonal do work
        return
    la = ti * BA + tl.arange(0, BA)
    lb = tj * BA + tl.arange(0, BA)
    ma, mb = la < q, lb < q
    acc11 = tl.zeros([BA * P, BA * P], dtype=tl.int32)
    if RP > 0:
        acc12 = tl.zeros([BA * P, BA * RP], dtype=tl.int32)
        acc21 = tl.zeros([BA * RP, BA * P], dtype=tl.int32)
        acc22 = tl.zeros([BA * RP, BA * RP], dtype=tl.int32)
    ks = tl.arange(0, BK)
    pa = bins + la[:, None] + ks.to(tl.int64)[None, :] * q  # (BA, BK): operand A, labels down
    pb = bins + lb[None, :] + ks.to(tl.int64)[:, None] * q  # (BK, BA): operand B, labels across
    for k0 in range(0, n, BK):
        rmask = (k0 + ks) < n
        xa = tl.load(pa, mask=ma[:, None] & rmask[None, :], other=0).to(tl.int32)
        xa = tl.where(ma[:, None] & rmask[None, :], xa, -1)  # padding matches no bin
        xb = tl.load(pb, mask=rmask[:, None] & mb[None, :], other=0).to(tl.int32)
        xb = tl.where(rmask[:, None] & mb[None, :], xb, -1)
        a1 = _onehot_rows(xa, ka0, lim, P, LM)
        b1 = _onehot_cols(xb, kb0, lim, P, LM)
        acc11 = tl.dot(a1, b1, acc11, out_dtype=tl.int32)
        if RP > 0:
            a2 = _onehot_rows(xa, ka0 + P, lim, RP, LM)
            b2 = _onehot_cols(xb, kb0 + P, lim, RP, LM)
            acc12 = tl.dot(a1, b2, acc12, out_dtype=tl.int32)
            acc21 = tl.dot(a2, b1, acc21, out_dtype=tl.int32)
            acc22 = tl.dot(a2, b2, acc22, out_dtype=tl.int32)
        pa += BK * q
        pb += BK * q

    # LM (0 or 1) is also the axis of a's bins in the 4-D counts N; b's bins are at LM + 2.
    ha1 = _marginal(hist, la, ma, ka0, lim, P, TH, LM)
    hb1 = _marginal(hist, lb, mb, kb0, lim, P, TH, LM)
    N11, mi = _block_terms(acc11, ha1, hb1, nf, BA, P, P, LM)
    rows1 = tl.sum(N11, axis=LM + 2)  # counts of (a = k, b = any of these bins), 3-D
    cols1 = tl.sum(N11, axis=LM)  # counts of (a = any, b = l)
    if RP > 0:
        ha2 = _marginal(hist, la, ma, ka0 + P, lim, RP, TH, LM)
        hb2 = _marginal(hist, lb, mb, kb0 + P, lim, RP, TH, LM)
        N12, t12 = _block_terms(acc12, ha1, hb2, nf, BA, P, RP, LM)
        N21, t21 = _block_terms(acc21, ha2, hb1, nf, BA, RP, P, LM)
        N22, t22 = _block_terms(acc22, ha2, hb2, nf, BA, RP, RP, LM)
        mi += t12 + t21 + t22
        rows1 += tl.sum(N12, axis=LM + 2)
        cols1 += tl.sum(N21, axis=LM)
        rows2 = tl.sum(N21, axis=LM + 2) + tl.sum(N22, axis=LM + 2)
        cols2 = tl.sum(N12, axis=LM) + tl.sum(N22, axis=LM)
    if DERIVE:  # the last bin (lim = tau - 1) of each label, from the marginals, in exact int32
        hal = tl.load(hist + la * TH + lim, mask=ma, other=0)
        hbl = tl.load(hist + lb * TH + lim, mask=mb, other=0)
        # rows: [a, k, b] or [k, a, b] (bin axis LM); cols: [a, b, l] or [a, l, b] (bin axis LM + 1)
        inner = tl.sum(rows1, axis=LM)
        mi += tl.sum(_term(ha1[:, :, None] - rows1, ha1[:, :, None], hbl[None, None, :], nf), axis=LM)
        mi += tl.sum(_term(hb1[None, :, :] - cols1, hal[:, None, None], hb1[None, :, :], nf), axis=LM + 1)
        if RP > 0:
            inner += tl.sum(rows2, axis=LM)
            mi += tl.sum(_term(ha2[:, :, None] - rows2, ha2[:, :, None], hbl[None, None, :], nf), axis=LM)
            mi += tl.sum(_term(hb2[None, :, :] - cols2, hal[:, None, None], hb2[None, :, :], nf), axis=LM + 1)
        corner = inner + hal[:, None] + hbl[None, :] - n
        mi += _term(corner, hal[:, None], hbl[None, :], nf)

    valid = ma[:, None] & mb[None, :]
    mi = tl.maximum(mi / tl.maximum(nf, 1.0), 0.0)  # rounding can leave a true 0 at -1e-9
    mi = tl.where(la[:, None] == lb[None, :], diag_value, mi)
    mi = tl.where(valid, mi, 0.0)
    if ROWSUM:
        tl.atomic_add(out + la, tl.sum(mi, axis=1), mask=ma)
        if ti != tj:
            tl.atomic_add(out + lb, tl.sum(mi, axis=0), mask=mb)
    else:
        p_ab = out + la[:, None].to(tl.int64) * q + lb[None, :]
        p_ba = out + lb[None, :].to(tl.int64) * q + la[:, None]
        if ACCUMULATE:
            tl.store(p_ab, mi + tl.load(p_ab, mask=valid, other=0.0), mask=valid)
            if ti != tj:
                tl.store(p_ba, mi + tl.load(p_ba, mask=valid, other=0.0), mask=valid)
        else:
            tl.store(p_ab, mi, mask=valid)
            if ti != tj:
                tl.store(p_ba, mi, mask=valid)


def _histogram(bins: torch.Tensor, tau: int, th: int) -> torch.Tensor:
    n, q = bins.shape
    hist = torch.zeros((q, th), dtype=torch.int32, device=bins.device)
    bl = min(triton.next_power_of_2(q), 32)
    br = triton.next_power_of_2(max(1, 4096 // (bl * th)))
    rows = max(br, 4096)
    wrap_triton(_hist_kernel)[(triton.cdiv(n, rows), triton.cdiv(q, bl))](
        bins, hist, n, q, ROWS=rows, BR=br, BL=bl, TH=th, num_warps=4
    )
    return hist


@triton_op("ubs_kernels::label_mi_triton", mutates_args=())
def label_mi_triton(bins: torch.Tensor, tau: int, rowsum: bool) -> torch.Tensor:
    n, q = bins.shape
    if n == 0:  # no observed sample: every off-diagonal MI is 0
        eye = torch.eye(q, dtype=torch.float32, device=bins.device)
        return eye.sum(dim=1) if rowsum else eye
    cfg = plan(tau)
    hist = _histogram(bins, tau, cfg["TH"])
    out = (
        torch.zeros((q,), dtype=torch.float32, device=bins.device)
        if rowsum
        else bins.new_empty((q, q), dtype=torch.float32)
    )
    nb = triton.cdiv(q, cfg["BA"])
    # Derive mode: one launch, bins 0 .. tau-2 one-hot, the last derived. Otherwise chunk pairs.
    chunks = [0] if cfg["DERIVE"] else list(range(0, tau, CHUNK))
    pairs = [(ka, kb) for ka in chunks for kb in chunks]
    for step, (ka0, kb0) in enumerate(pairs):
        lim = tau - 1 if cfg["DERIVE"] else tau
        wrap_triton(_mi_tiles_kernel)[(nb, nb)](
            bins, hist, out, n, float(n), q, lim, ka0, kb0, 1.0 if step == 0 else 0.0,
            ROWSUM=rowsum, ACCUMULATE=step > 0, num_warps=8, num_stages=3, **cfg,
        )  # fmt: skip
    return out
