"""The selector under ``torch.distributed``: sample ownership and the global per-epoch refresh.

Ownership. With W ranks, sample ``i`` belongs to rank ``i % W`` (strided, like the shards of
``DistributedSampler``), so shard sizes differ by at most one and a dataset stored sorted by
label set is spread over all ranks. A rank keeps state only for its ``n_r`` samples: local row
``k`` is global sample ``k W + r``. Selectors yield and observe global ids.

Batches. Every rank yields ``B = ceil(m / b)`` batches per epoch (``floor`` with ``drop_last``),
``m = ceil(n / W)`` the largest shard, so DDP ranks step together. Warm-up epochs are a
permutation of the rank's own samples; a rank one sample short of ``m`` repeats its first
sample when its last batch would otherwise be empty (or short, with ``drop_last``).
Selection epochs draw ``B`` batches from P restricted to the rank's samples.

Refresh (docs/spec.md Eq. 6-10), the same on every rank:

* Eq. 6, ``c = C 1`` over the observed samples of all ranks, by one of three routes:
  ``"gather"`` all-gathers the binned U (``W m (q+1)`` bytes, uint8) in global sample order and
  runs :func:`ubs_kernels.ops.label_mi` on it: the very matrix, and so the very ``c``, of a
  single process; ``"counts"`` all-reduces the integer joint histograms (``q^2 tau^2 8``
  bytes, int64, in label blocks), exact too; ``"approximate"`` combines per-rank statistics
  (``8 (2q+2)`` bytes): each rank's own ``c`` and that of its two halves, averaged over ranks
  and extrapolated to remove the plug-in bias of the smaller samples
  (:func:`combine_mi_statistics`). ``"auto"`` takes the exact route that moves fewer bytes
  when that is at most ``limit`` bytes (default 256 MiB), otherwise the approximation.
* Eq. 7-10, ``w = U c`` per rank; the min and max of ``w`` over observed samples by one
  all-reduce; ``Q = floor((1 - z) n)`` with the global n; ``log P`` normalised over all n
  samples by an all-reduce of ``sum exp``. Each rank's log P is therefore its slice of the
  single-process log P for the same state (to float32 rounding of ``w``).

Cost per refresh: ``"gather"`` holds the ``n (q+1)``-byte gathered bins on every rank and runs
the full ``label_mi`` there (the single-process time, on every rank); ``"counts"`` splits the
work, ``O(n_r q^2 tau^2)`` per rank, but as a float32 one-hot Gram product in plain torch (no
native kernel yet); ``"approximate"`` costs about twice the rank's share of ``label_mi``.

Every collective runs on CPU tensors for gloo and on the current CUDA device for NCCL.
"""

from __future__ import annotations

import math
import warnings
import zlib
from dataclasses import dataclass

import numpy as np
import torch

from . import ops, reference

MI_ROUTES = ("auto", "gather", "counts", "approximate")
DEFAULT_MI_LIMIT = 256 * 2**20  # bytes exchanged per refresh for exact mutual information
_COUNT_BLOCK_BYTES = 32 * 2**20  # int64 joint counts all-reduced at a time (label blocks)
_ONEHOT_CHUNK_BYTES = 64 * 2**20  # float32 one-hot rows per Gram product (sample chunks)


def _dist():
    import torch.distributed as dist

    return dist


@dataclass(frozen=True)
class Shard:
    """Which samples a rank owns: ``i % world_size == rank``.

    ``group`` is the process group (``None`` in a single process). With ``world_size == 1``
    nothing is exchanged and the selector is exactly the single-process one.
    """

    num_samples: int
    rank: int = 0
    world_size: int = 1
    group: object = None

    @property
    def sharded(self) -> bool:
        return self.world_size > 1

    @property
    def num_local(self) -> int:
        """``n_r``, the samples this rank owns."""
        return len(range(self.rank, self.num_samples, self.world_size))

    @property
    def largest(self) -> int:
        """``m = ceil(n / W)``, the largest shard: every rank plans epochs of this size."""
        return -(-self.num_samples // self.world_size)

    def owned(self) -> torch.Tensor:
        """Global ids of this rank's samples, in local-row order."""
        return torch.arange(self.rank, self.num_samples, self.world_size)

    def to_global(self, local: torch.Tensor) -> torch.Tensor:
        return local * self.world_size + self.rank if self.sharded else local

    def to_local(self, indices: torch.Tensor) -> torch.Tensor:
        """Local rows of global ``indices`` (already checked: integers in ``[0, n)``); raises,
        naming ``indices``, on ids this rank does not own."""
        if not self.sharded:
            return indices
        if indices.numel():
            foreign = indices.remainder(self.world_size) != self.rank
            if bool(foreign.any()):
                i = int(indices[foreign][0])
                raise ValueError(
                    f"indices: sample {i} is owned by rank {i % self.world_size}, not by this rank {self.rank} "
                    f"(sample i belongs to rank i % world_size, world_size={self.world_size}); observe only the "
                    "batches this rank's selector yields"
                )
        return torch.div(indices, self.world_size, rounding_mode="floor")

    def pad_uniform(self, order: torch.Tensor, batches: int, batch_size: int, drop_last: bool) -> torch.Tensor:
        """A warm-up permutation of the rank's samples, cut or padded to exactly ``batches`` batches.

        A rank one sample short of the largest shard repeats its first sample when its last
        batch would otherwise be empty (or short, with ``drop_last``); with two or more batches
        that sample sits in the first batch, so no batch holds a sample twice.
        """
        need = batches * batch_size if drop_last else (batches - 1) * batch_size + 1
        if order.numel() < need:
            order = torch.cat([order, order[: need - order.numel()]])
        return order[: batches * batch_size] if drop_last else order


def resolve(process_group, num_samples: int, shardable: bool, owner: str) -> Shard:
    """The shard of this process: ``process_group`` given, the default group, or none.

    ``process_group=None`` uses the default group when ``torch.distributed`` is initialised;
    ``False`` keeps a single process (every rank selects over all samples).
    """
    if process_group is False:
        return Shard(num_samples)
    dist = _dist()
    if process_group is None:
        if not (dist.is_available() and dist.is_initialized()):
            return Shard(num_samples)
        group = dist.group.WORLD
        explicit = False
    else:
        group, explicit = process_group, True
    world = dist.get_world_size(group)
    rank = dist.get_rank(group)
    if rank < 0:
        raise ValueError("process_group: this process is not a member of the given group")
    if world == 1:
        return Shard(num_samples, 0, 1, group)
    if not shardable:
        if explicit:
            raise NotImplementedError(f"{owner} does not shard across ranks; pass process_group=None or False")
        warnings.warn(
            f"{owner} does not shard under torch.distributed: every rank selects from all {num_samples} samples",
            stacklevel=4,
        )
        return Shard(num_samples)
    if num_samples < world:
        raise ValueError(f"num_samples={num_samples} must be at least the world size {world} (one sample per rank)")
    return Shard(num_samples, rank, world, group)


# --------------------------------------------------------------------------- collectives
def comm_device(shard: Shard, device: torch.device) -> torch.device:
    """Where collective tensors live: the state's CUDA device for NCCL, else the CPU (gloo)."""
    backend = str(_dist().get_backend(shard.group)).lower()
    if "nccl" in backend and device.type == "cuda":
        return device
    if backend == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce(shard: Shard, tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """All-reduce ``tensor`` over the shard's group; returns the result on ``tensor``'s device.

    A single process (``world_size == 1``) returns ``tensor`` itself.
    """
    if not shard.sharded:
        return tensor
    dist = _dist()
    device = comm_device(shard, tensor.device)
    buf = tensor.to(device, copy=True).contiguous()
    dist.all_reduce(buf, op={"sum": dist.ReduceOp.SUM, "min": dist.ReduceOp.MIN}[op], group=shard.group)
    return buf.to(tensor.device)


def _as_int(value) -> int:
    if isinstance(value, float):
        return int(np.float64(value).view(np.int64))
    if isinstance(value, str):
        return zlib.crc32(value.encode())
    return int(value)


def agree(shard: Shard, values: dict, what: str) -> None:
    """Raise on every rank, naming the keys, unless all ranks pass the same ``values``.

    One all-reduce (MIN of ``v`` and ``-v``); every rank sees the same result, so all raise
    together instead of hanging in a later collective.
    """
    if not shard.sharded:
        return
    v = torch.tensor([_as_int(x) for x in values.values()], dtype=torch.int64)
    out = all_reduce(shard, torch.cat([v, -v]), "min")
    lo, hi = out[: v.numel()], -out[v.numel() :]
    differ = [k for k, a, b in zip(values, lo.tolist(), hi.tolist(), strict=True) if a != b]
    if differ:
        raise ValueError(f"ranks disagree on {what}: {differ} (every rank must use the same values)")


# --------------------------------------------------------------------------- Eq. 6 across ranks
def mi_exchange_bytes(shard: Shard, num_labels: int, tau: int) -> dict[str, int]:
    """Bytes each refresh exchanges per route (the payload each rank receives or reduces)."""
    q = num_labels
    return {
        "gather": shard.world_size * shard.largest * (q + 1),
        "counts": q * q * tau * tau * 8,
        "approximate": 8 * (2 * q + 2),
    }


def choose_mi_route(route: str, shard: Shard, num_labels: int, tau: int, limit: int) -> str:
    """``route`` itself, or for ``"auto"`` the exact route moving fewer bytes if within ``limit``."""
    if route not in MI_ROUTES:
        raise ValueError(f"distributed_mi must be one of {MI_ROUTES}, got {route!r}")
    if route != "auto":
        return route
    sizes = mi_exchange_bytes(shard, num_labels, tau)
    best = min(("gather", "counts"), key=sizes.__getitem__)
    return best if sizes[best] <= limit else "approximate"


def _gather_bins(shard: Shard, bins: torch.Tensor, observed: torch.Tensor) -> torch.Tensor:
    """The binned U of every observed sample of every rank, in global sample order."""
    dist = _dist()
    n_r, q = bins.shape
    m, world = shard.largest, shard.world_size
    device = comm_device(shard, bins.device)
    payload = torch.zeros((m, q + 1), dtype=torch.uint8, device=device)
    payload[:n_r, :q] = bins.to(device)
    payload[:n_r, q] = observed.to(device)
    parts = [torch.empty_like(payload) for _ in range(world)]
    dist.all_gather(parts, payload, group=shard.group)
    rows = torch.stack(parts, 1).reshape(m * world, q + 1)[: shard.num_samples]  # row k W + r = rank r's row k
    return rows[rows[:, q] == 1, :q].to(bins.device)


def joint_counts(bins: torch.Tensor, tau: int, a0: int, a1: int) -> torch.Tensor:
    """Integer joint histograms ``N_ab(k, l)`` of label rows ``a0:a1`` against all labels.

    ``(a1 - a0, q, tau, tau)`` int64, as a one-hot Gram product (float32, exact below 2^24
    rows per chunk) accumulated over sample chunks; O(n (a1 - a0) q tau^2) work.
    """
    n, q = bins.shape
    out = torch.zeros((a1 - a0, q, tau, tau), dtype=torch.int64, device=bins.device)
    chunk = max(1, min(1 << 23, _ONEHOT_CHUNK_BYTES // (4 * q * tau)))
    for s0 in range(0, n, chunk):
        onehot = reference.one_hot_bins(bins[s0 : s0 + chunk], tau, torch.float32)
        out += reference.joint_counts(onehot, tau, a0, a1).round().long()
    return out


def _rowsums_from_counts(shard: Shard, bins: torch.Tensor, tau: int) -> torch.Tensor:
    q = bins.shape[1]
    block = max(1, min(q, _COUNT_BLOCK_BYTES // (8 * q * tau * tau)))
    c = torch.empty(q, dtype=torch.float64, device=bins.device)
    for a0 in range(0, q, block):  # the same blocks on every rank, so the collectives pair up
        a1 = min(q, a0 + block)
        counts = all_reduce(shard, joint_counts(bins, tau, a0, a1), "sum")
        mi = reference.mutual_information(counts, torch.float64)  # (block, q)
        rows = torch.arange(a1 - a0, device=mi.device)
        mi[rows, rows + a0] = 1.0
        c[a0:a1] = mi.sum(1)
    return c.to(torch.float32)


def local_mi_statistics(bins: torch.Tensor, tau: int, backend: str | None = None) -> torch.Tensor:
    """What a rank contributes to the approximate ``c``: ``(2q + 2,)`` float64, summed over ranks.

    ``[m c_r, m c_r', m, [m > 0]]`` with ``m`` the rank's observed samples, ``c_r`` the row
    sums of its own MI matrix and ``c_r'`` the mean of those of its two halves (even and odd
    rows, weighted by their sizes). Each costs one :func:`ubs_kernels.ops.label_mi` on the
    rank's rows, so about twice the rank's share of the exact computation.
    """
    m = bins.shape[0]
    c = ops.label_mi(bins, tau, rowsum=True, backend=backend).to(torch.float64)
    halves = [bins[0::2], bins[1::2]]
    c_half = sum(h.shape[0] * ops.label_mi(h, tau, rowsum=True, backend=backend).to(torch.float64) for h in halves)
    return torch.cat([m * c, c_half, c.new_tensor([m, float(m > 0)])])


def combine_mi_statistics(total: torch.Tensor) -> torch.Tensor:
    """The approximate ``c`` (float32) from the sum over ranks of :func:`local_mi_statistics`.

    The plug-in MI of ``m`` samples overestimates the true MI by about ``k / m`` (``k``
    about ``(tau - 1)^2 / 2`` per independent pair). The size-weighted mean ``A`` of the
    ranks' ``c`` thus carries ``W k / M`` per pair (``W`` contributing ranks, ``M`` samples in
    all), the mean ``A'`` over half shards ``2 W k / M``, and the exact ``c`` of all M samples
    ``k / M``. Eliminating ``k`` (Richardson extrapolation in ``1 / m``):
    ``c = A - (1 - 1/W) (A' - A)``, at least 1 (the diagonal). With one contributing rank it
    is that rank's exact ``c``.

    It assumes the shards are samples of one distribution, which strided ownership gives
    unless the data order has period ``W`` (then each shard holds one kind of sample and the
    per-shard MI misses what the kinds share). Measured error: README, "Distributed training".
    """
    q = (total.numel() - 2) // 2
    samples, ranks = float(total[2 * q]), float(total[2 * q + 1])
    if samples == 0:
        return torch.ones(q, dtype=torch.float32, device=total.device)
    a, a_half = total[:q] / samples, total[q : 2 * q] / samples
    return (a - (1.0 - 1.0 / ranks) * (a_half - a)).clamp(min=1.0).to(torch.float32)


def _rowsums_approximate(shard: Shard, bins: torch.Tensor, tau: int, backend: str | None) -> torch.Tensor:
    return combine_mi_statistics(all_reduce(shard, local_mi_statistics(bins, tau, backend), "sum"))


def label_mi_rowsums(
    shard: Shard, bins: torch.Tensor, observed: torch.Tensor, tau: int, route: str, backend: str | None = None
) -> torch.Tensor:
    """``c = C 1`` (Eq. 6) over the observed samples of all ranks, ``(q,)`` float32, on every rank.

    Args:
        bins: ``(n_r, q)`` uint8 binned U of this rank's samples.
        observed: ``(n_r,)`` bool, samples observed at least once.
        route: ``"gather"``, ``"counts"`` or ``"approximate"`` (see the module docstring).
    """
    if route == "gather":
        return ops.label_mi(_gather_bins(shard, bins, observed), tau, rowsum=True, backend=backend)
    local = bins[observed] if not bool(observed.all()) else bins
    if route == "counts":
        return _rowsums_from_counts(shard, local, tau)
    if route == "approximate":
        return _rowsums_approximate(shard, local, tau, backend)
    raise ValueError(f"route must be 'gather', 'counts' or 'approximate', got {route!r}")


# --------------------------------------------------------------------------- Eq. 7-10 across ranks
def selection_log_probs(
    shard: Shard, uncertainty: torch.Tensor, c: torch.Tensor, seen: torch.Tensor, pressure: float
) -> torch.Tensor:
    """Eq. 7-10 with global statistics: this rank's slice ``(n_r,)`` of the global log P (float32).

    ``w = U c`` per rank (float32, as :func:`ubs_kernels.reference.selection_log_probs`); the
    min and max of ``w`` over the observed samples of all ranks; ``Q = floor((1 - z) n)`` with
    the global n (Eq. 9); ``log P = -ln(s) Q / n - ln sum_all exp(-ln(s) Q / n)`` (Eq. 10).
    """
    n = shard.num_samples
    w = reference.weights(uncertainty, c)
    observed = seen > 0
    any_seen = bool(observed.any())
    lo = float(w[observed].min()) if any_seen else math.inf  # float32 -> float64 is exact
    hi = float(w[observed].max()) if any_seen else -math.inf
    bounds = all_reduce(shard, torch.tensor([lo, -hi], dtype=torch.float64, device=w.device), "min")
    lo, hi = bounds[0].to(torch.float32), (-bounds[1]).to(torch.float32)  # float32 values: exact round trip
    z = reference.normalise(w, seen, None if bool(torch.isinf(lo)) else (lo, hi))
    Q = reference.quantise(z, n)
    logits = -math.log(pressure) * Q.to(torch.float32) / n  # in [-ln s, 0]: exp cannot overflow
    total = all_reduce(shard, torch.exp(logits.double()).sum().reshape(1), "sum")
    return logits - torch.log(total).to(torch.float32)


def approximation_error(selector, epoch: int) -> dict[str, float]:
    """How far the approximate route is from the exact one for ``selector``'s state now.

    ``{"c": max_j |c~_j - c_j| / c_j, "tv": total variation distance between the two P}`` at
    the pressure of ``epoch``. A collective call (two refreshes' worth of exchange).
    """
    exact = selector.label_correlation_rowsums(route="gather")
    approx = selector.label_correlation_rowsums(route="approximate")
    shard, s = selector.shard, selector.pressure(epoch)
    p = [selection_log_probs(shard, selector.uncertainty, c, selector.seen, s).double().exp() for c in (exact, approx)]
    diff = (p[0] - p[1]).abs().sum().reshape(1)
    tv = float(all_reduce(shard, diff, "sum")) / 2
    return {"c": float(((approx - exact).abs() / exact).max()), "tv": tv}
