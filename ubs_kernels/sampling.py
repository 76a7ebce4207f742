"""Epoch planning: cutting an epoch into batches, uniformly or by a selection distribution P.

docs/spec.md "Drawing batches": in a selection epoch every batch holds ``b`` distinct samples drawn
by successive sampling without replacement from P (the law of
``numpy.random.Generator.choice(n, b, replace=False, p=P)``), and batches are independent.
Successive sampling equals drawing with replacement and skipping a sample already in the
batch, so each batch is the first ``b`` distinct values of an i.i.d. stream from P.

The streams of all batches are drawn at once in O(n log n) (not O(n) per batch, and without
the 2^24-category limit of ``torch.multinomial``):

1. n i.i.d. uniforms arrive already sorted, from normalised cumulative sums of exponentials
   (the order statistics of n uniforms), so inverse-CDF lookup is a cache-friendly
   ``searchsorted`` over sorted queries;
2. a uniform random permutation of those sorted draws is an i.i.d. sequence again;
3. the sequence is cut into rows, one per batch, a little longer than ``b``, and each row
   keeps its first ``b`` distinct values; the rare row that falls short continues its stream.
"""

from __future__ import annotations

import math

import numpy as np
import torch


def epoch_generator(seed: int, epoch: int, rank: int = 0) -> torch.Generator:
    """A CPU generator that depends only on ``(seed, epoch, rank)``.

    Planning an epoch therefore needs no generator state from earlier epochs, which makes
    resuming from a checkpoint and per-rank planning exact.
    """
    state = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(epoch), int(rank)]).generate_state(2, np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def num_batches(num_samples: int, batch_size: int, drop_last: bool) -> int:
    return num_samples // batch_size if drop_last else -(-num_samples // batch_size)


def plan_uniform(num_samples: int, batch_size: int, drop_last: bool, generator: torch.Generator) -> torch.Tensor:
    """A fresh uniform permutation, cut into batches: returns the flat order ``(num_batches * b or n,)``.

    The last batch is shorter unless ``drop_last``, which drops it.
    """
    order = torch.randperm(num_samples, generator=generator)
    if drop_last:
        order = order[: num_batches(num_samples, batch_size, True) * batch_size]
    return order


def _first_occurrences(rows: torch.Tensor) -> torch.Tensor:
    """Boolean mask of the first occurrence of each value within each row."""
    ordered, where = torch.sort(rows, dim=1, stable=True)
    repeat = torch.zeros_like(ordered, dtype=torch.bool)
    repeat[:, 1:] = ordered[:, 1:] == ordered[:, :-1]
    first = torch.empty_like(repeat)
    first.scatter_(1, where, ~repeat)
    return first


def _sorted_uniform_draws(cdf: torch.Tensor, count: int, generator: torch.Generator) -> torch.Tensor:
    """``count`` i.i.d. draws from the distribution with cumulative sums ``cdf`` (float64)."""
    # Exponential spacings as -log(1 - u): the same law as Tensor.exponential_, which draws them
    # one at a time on the CPU; 1 - u is in (0, 1], so every log is finite.
    spacings = torch.rand(count + 1, dtype=torch.float64, generator=generator).neg_().log1p_().neg_()
    points = torch.cumsum(spacings, 0)
    uniforms = points[:-1] * (cdf[-1] / points[-1])
    # int32 ids (n < 2^31): half the memory traffic in the gather and the per-row sorts.
    draws = torch.searchsorted(cdf, uniforms, out_int32=True).clamp_(max=cdf.numel() - 1)
    return draws[torch.randperm(count, generator=generator)]


def _stream_draws(cdf: torch.Tensor, shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    """Small top-ups: plain inverse-CDF draws, ``shape`` of them."""
    uniforms = torch.rand(shape, generator=generator, dtype=torch.float64) * cdf[-1]
    return torch.searchsorted(cdf, uniforms, out_int32=True).clamp_(max=cdf.numel() - 1)


def plan_weighted(log_p: torch.Tensor, batch_size: int, batches: int, generator: torch.Generator) -> torch.Tensor:
    """``batches`` independent batches of distinct samples, successive sampling from ``exp(log_p)``:
    the plain-PyTorch version of :func:`ubs_kernels.ops.plan_weighted` (which checks the
    arguments and picks the native kernel when it is built; the same result from the same
    random numbers).

    Args:
        log_p: ``(n,)`` log-probabilities, no NaN or +inf, at least one finite (normalisation
            not required; ``-inf`` is probability 0).
        batch_size: samples per batch; capped at the number of samples with ``P > 0``.
        batches: number of batches.
        generator: CPU generator (see :func:`epoch_generator`).

    Returns a CPU ``(batches, min(batch_size, support))`` int64 tensor; row r lists batch r's
    samples in the order they were drawn.
    """
    weights = torch.exp(log_p.detach().to("cpu", torch.float64) - log_p.max().item())
    support = int((weights > 0).sum())
    b = min(batch_size, support)
    if batches == 0 or b == 0:
        return torch.empty((batches, b), dtype=torch.int64)
    cdf = torch.cumsum(weights, 0)
    p = weights / cdf[-1]
    # Expected repeats among m draws are about m^2 sum(p^2) / 2; leave room for three times that.
    collision = float((p * p).sum())
    extra = 4 + math.ceil(3.0 * b * b * collision)
    width = b + min(extra, 8 * b + 64)
    rows = _sorted_uniform_draws(cdf, batches * width, generator).view(batches, width)
    first = _first_occurrences(rows)
    enough = first.sum(1) >= b
    if bool(enough.all()):  # the common case: no row needs its stream continued
        return rows[first & (first.cumsum(1) <= b)].view(batches, b).long()
    short = (~enough).nonzero().flatten()
    out = torch.empty((batches, b), dtype=torch.int64)
    keep = first[enough] & (first[enough].cumsum(1) <= b)
    out[enough] = rows[enough][keep].view(-1, b).long()
    for r in short.tolist():  # rare: a row whose stream needs more than `width` draws
        stream = rows[r : r + 1]
        distinct = stream[_first_occurrences(stream)]
        chunk = width
        while distinct.numel() < b:  # continue the stream, doubling the chunk (very skewed P)
            stream = torch.cat([distinct, _stream_draws(cdf, (chunk,), generator)]).unsqueeze(0)
            distinct = stream[_first_occurrences(stream)]
            chunk *= 2
        out[r] = distinct[:b].long()
    return out
