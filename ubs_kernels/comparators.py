"""The paper's comparators (Zhou et al., AAAI 2025, Table 3), behind the selector interface.

Each is a :class:`~ubs_kernels.selector.BatchSelector`: iterate it for an epoch of batches,
call ``observe(indices, probs)`` after each forward pass. Where a method ranks samples by a
score, P is the quantised exponential of docs/spec.md Eq. 9-11 on that score (the same fused op
as the UncertaintyBatchSelector, with ``U`` the score column and ``c = 1``), so the methods
differ only in what they score.

* :class:`RandomSelector` - uniform shuffling.
* :class:`BalanceSelector` - Hand, Castillo and Chellappa (2018): batches whose label
  distribution follows the training set's.
* :class:`ActiveBiasSelector` - Chang, Learned-Miller and McCallum (NeurIPS 2017): the
  variance of each (sample, label)'s whole prediction history, Eq. 2, summed over labels.
* :class:`RecencyBiasSelector` - Song et al. (CIKM 2020): the entropy of the binarised
  predictions in the window, Eq. 3, summed over labels.
* :class:`HardImbalanceSelector` - Zhou et al. (2024): imbalance-weighted binary
  cross-entropy; with ``chain=True``, batches that follow label correlations.
"""

from __future__ import annotations

import numpy as np
import torch

from . import _checks, ops, sampling
from .batch_selector import BatchSelector


def _as_labels(labels, name: str = "labels") -> torch.Tensor:
    """A ``(n, q)`` 0/1 label matrix as a CPU bool tensor."""
    if hasattr(labels, "toarray"):  # scipy sparse
        labels = labels.toarray()
    t = torch.as_tensor(np.asarray(labels) if not torch.is_tensor(labels) else labels)
    if t.dim() != 2 or t.shape[0] < 1 or t.shape[1] < 1:
        raise ValueError(f"{name} must be a (num_samples, num_labels) matrix, got shape {tuple(t.shape)}")
    if t.is_floating_point() and not bool(((t == 0) | (t == 1)).all()):
        raise ValueError(f"{name} must hold only 0 and 1")
    if not t.is_floating_point() and t.dtype != torch.bool and not bool(((t == 0) | (t == 1)).all()):
        raise ValueError(f"{name} must hold only 0 and 1")
    return t.cpu().bool()


def _scored_log_probs(score: torch.Tensor, seen: torch.Tensor, pressure: float) -> torch.Tensor:
    """Eq. 9-10 on a per-sample score (higher = drawn more often), unobserved samples first."""
    ones = torch.ones(1, dtype=torch.float32, device=score.device)
    return ops.selection_log_probs(score.to(torch.float32).unsqueeze(1), ones, seen, pressure)


class RandomSelector(BatchSelector):
    """Uniform random batches: a fresh permutation every epoch (the baseline of every table)."""


class BalanceSelector(BatchSelector):
    """Batches whose label distribution follows the training set's (Hand et al., 2018).

    Each epoch the samples are shuffled and then stably sorted by their label vectors, rarest
    label as the primary key (up to the 64 rarest labels), and dealt round-robin to the
    epoch's batches: systematic sampling of the sorted list, so each batch gets its share of
    every label combination, rare ones first. Batch sizes differ by at most one; batch order
    and order within a batch are shuffled. O(n log n) per epoch and sort key.

    Args:
        labels: ``(n, q)`` 0/1 training labels.
    """

    def __init__(self, labels, batch_size: int = 128, epochs: int = 100, seed: int = 0, device="cpu", drop_last=False):
        y = _as_labels(labels)
        super().__init__(y.shape[0], batch_size, epochs, seed, device, drop_last)
        self.num_labels = y.shape[1]
        # Sort keys, applied from the least to the most significant: the 64 rarest labels.
        rarity = torch.argsort(y.sum(0), stable=True)[:64]
        self._keys = y[:, rarity.flip(0)].T.contiguous()

    def _plan_epoch(self) -> None:
        g = sampling.epoch_generator(self.seed, self.epoch, self.rank)
        n, b = self.num_samples, self.batch_size
        batches = len(self)
        shuffled = torch.randperm(n, generator=g)
        order = shuffled
        for key in self._keys:  # positives first, least significant key first
            order = order[torch.argsort(~key[order], stable=True)]
        if self.drop_last:
            order = order[: batches * b]
        slot = torch.arange(order.numel()) % batches  # round-robin deal
        # Put a random batch first, and shuffle within each batch.
        slot = torch.randperm(batches, generator=g)[slot]
        within = torch.rand(order.numel(), generator=g, dtype=torch.float64)
        key = slot.double() + within
        order = order[torch.argsort(key)]
        sizes = torch.bincount(slot, minlength=batches)
        offsets = torch.zeros(batches + 1, dtype=torch.int64)
        offsets[1:] = torch.cumsum(sizes, 0)
        self._log_p, self._plan, self._offsets, self._cursor = None, order, offsets, 0


class _ScoredSelector(BatchSelector):
    """Shared by the score-ranked comparators: warm-up, pressure schedule, seen counts."""

    def __init__(self, num_samples, num_labels, batch_size, epochs, s0, warmup, seed, device, drop_last):
        super().__init__(num_samples, batch_size, epochs, seed, device, drop_last)
        self.num_labels = _checks.check_int("num_labels", num_labels, minimum=1)
        self.s0 = _checks.check_pressure(s0, "s0")
        self.warmup = _checks.check_int("warmup", warmup, minimum=0)

    def pressure(self, epoch: int) -> float:
        return ops.selection_pressure(epoch, self.s0, self.warmup, self.epochs)

    def _config(self) -> dict:
        return super()._config() | {"num_labels": self.num_labels, "s0": self.s0, "warmup": self.warmup}

    def score(self) -> torch.Tensor:
        """``(n,)`` per-sample score; higher is drawn more often."""
        raise NotImplementedError

    def _selection_log_probs(self, epoch: int) -> torch.Tensor | None:
        if epoch < self.warmup:
            return None
        return _scored_log_probs(self.score(), self.seen, self.pressure(epoch))


class ActiveBiasSelector(_ScoredSelector):
    """Active Bias (Chang, Learned-Miller and McCallum, NeurIPS 2017), summed over labels.

    For each (sample, label) the variance of the whole prediction history is kept as running
    moments (Welford; O(n q) memory whatever the number of epochs), and Eq. 2
    ``std = sqrt(var + var^2 / (|H| - 1))`` (0 while ``|H| < 2``) is summed over labels. After
    warm-up, ``P_i ∝ std_i + ε``; samples never observed get the largest score. There is no
    selection pressure in Active Bias.

    Args:
        epsilon: the smoothing constant ε; ``None`` (default) uses the mean score of the
            observed samples, so the most uncertain sample is never drawn more than
            ``1 + max/mean`` times as often as a perfectly certain one.
    """

    def __init__(
        self,
        num_samples: int,
        num_labels: int,
        batch_size: int = 128,
        epochs: int = 100,
        warmup: int = 5,
        epsilon: float | None = None,
        seed: int = 0,
        device="cpu",
        drop_last: bool = False,
    ) -> None:
        super().__init__(num_samples, num_labels, batch_size, epochs, 1.0, warmup, seed, device, drop_last)
        if epsilon is not None and not float(epsilon) > 0:
            raise ValueError(f"epsilon must be > 0 or None, got {epsilon!r}")
        self.epsilon = None if epsilon is None else float(epsilon)
        n, q, d = self.num_samples, self.num_labels, self.device
        self.seen = torch.zeros(n, dtype=torch.int64, device=d)
        self._mean = torch.zeros((n, q), dtype=torch.float32, device=d)
        self._m2 = torch.zeros((n, q), dtype=torch.float32, device=d)

    def _state_bytes(self) -> int:
        return self.num_samples * (8 * self.num_labels + 8)

    def observe(self, indices, probs=None, *, logits=None) -> None:
        indices, probs = self._checked_observation(indices, probs, logits)
        _checks.check_seen_at(self.seen, indices, self.num_local)
        x = probs.to(torch.float32)
        count = (self.seen[indices] + 1).to(torch.float32).unsqueeze(1)
        mean = self._mean[indices]
        delta = x - mean
        mean = mean + delta / count
        self._m2[indices] += delta * (x - mean)
        self._mean[indices] = mean
        self.seen[indices] += 1

    def score(self) -> torch.Tensor:
        h = self.seen.to(torch.float32).unsqueeze(1)
        var = self._m2 / h.clamp(min=1)
        std = torch.sqrt(var + var * var / (h - 1).clamp(min=1))
        return torch.where(h >= 2, std, torch.zeros_like(std)).sum(1)

    def _selection_log_probs(self, epoch: int) -> torch.Tensor | None:
        if epoch < self.warmup:
            return None
        s = self.score()
        observed = self.seen > 0
        top = s[observed].max() if bool(observed.any()) else s.new_tensor(1.0)
        s = torch.where(observed, s, top)
        eps = self.epsilon if self.epsilon is not None else float(s[observed].mean()) if bool(observed.any()) else 1.0
        return torch.log(s + max(eps, 1e-12))

    def _config(self) -> dict:
        return super()._config() | {"epsilon": self.epsilon}

    def _state(self) -> dict:
        return {"seen": self.seen, "mean": self._mean, "m2": self._m2}

    def _check_state_values(self, state: dict) -> None:
        super()._check_state_values(state)
        _checks.check_saved_values("mean", state["mean"], 0.0, 1.0)  # a mean of probabilities
        _checks.check_saved_values("m2", state["m2"], 0.0, torch.finfo(torch.float32).max)


class RecencyBiasSelector(_ScoredSelector):
    """Recency Bias (Song et al., CIKM 2020), summed over labels.

    Keeps the last T binarised predictions (``p >= 0.5``) per (sample, label); Eq. 3's
    entropy ``-Σ_c P(c) log2 P(c)`` of the positive fraction over the ``k = min(seen, T)``
    predictions in the window is summed over labels. P is the quantised exponential of
    docs/spec.md Eq. 9-10 on that score, with the pressure schedule of Eq. 11 (``s0``, ``warmup``,
    ``epochs``), as in the paper.
    """

    def __init__(
        self,
        num_samples: int,
        num_labels: int,
        batch_size: int = 128,
        epochs: int = 100,
        window: int = 5,
        s0: float = 100.0,
        warmup: int = 5,
        seed: int = 0,
        device="cpu",
        drop_last: bool = False,
    ) -> None:
        super().__init__(num_samples, num_labels, batch_size, epochs, s0, warmup, seed, device, drop_last)
        self.window = _checks.check_int("window", window, minimum=1)
        n, q, d = self.num_samples, self.num_labels, self.device
        self.seen = torch.zeros(n, dtype=torch.int64, device=d)
        self._ring = torch.zeros((n, self.window, q), dtype=torch.bool, device=d)

    def _state_bytes(self) -> int:
        return self.num_samples * (self.window * self.num_labels + 8)

    def observe(self, indices, probs=None, *, logits=None) -> None:
        indices, probs = self._checked_observation(indices, probs, logits)
        _checks.check_seen_at(self.seen, indices, self.num_local)
        slot = self.seen[indices] % self.window
        self._ring[indices, slot] = probs >= 0.5
        self.seen[indices] += 1

    def score(self) -> torch.Tensor:
        k = self.seen.clamp(max=self.window).to(torch.float32).unsqueeze(1)
        f = self._ring.sum(1, dtype=torch.float32) / k.clamp(min=1)  # slots beyond k are still 0
        ent = -(torch.special.xlogy(f, f) + torch.special.xlogy(1 - f, 1 - f)) / np.log(2.0)
        return ent.sum(1)

    def _config(self) -> dict:
        return super()._config() | {"window": self.window}

    def _state(self) -> dict:
        return {"seen": self.seen, "ring": self._ring}

    def _check_state_values(self, state: dict) -> None:
        super()._check_state_values(state)
        # Slots a sample has not filled yet (seen < T) hold no prediction.
        unfilled = torch.arange(self.window, device=self.device)[None, :] >= state["seen"][:, None]
        bad = unfilled[:, :, None] & state["ring"]
        if bool(bad.any()):
            i = int(bad.nonzero()[0, 0])
            raise ValueError(f"state_dict['state']['ring'] of sample {i} holds more predictions than seen[{i}]")


class HardImbalanceSelector(_ScoredSelector):
    """Hard Imbalance (Zhou et al., 2024): hard samples of minority labels first.

    Each (sample, label) binary cross-entropy of the latest prediction is weighted by

    * a global imbalance weight: ``IR_j = max_k N_k / N_j`` (``N_j`` positives of label j) on
      the positive entries of label j, 1 on negatives, so minority-label positives count more;
    * a local imbalance weight ``1 + r_ij``, where ``r_ij`` is the fraction of sample i's
      ``k`` nearest neighbours (Euclidean, on ``features``) whose label j differs from its
      own; without ``features`` it is 1;

    and the sample's score is the mean over labels. P is the quantised exponential of docs/spec.md
    Eq. 9-10 on the score with the pressure schedule of Eq. 11.

    With ``chain=True`` (the paper's chain variant), each selection batch starts from a seed
    drawn from P; the seed's rarest positive label picks the ``chain_labels`` labels most
    correlated with it (absolute Pearson correlation of the training label columns), and the
    rest of the batch is drawn without replacement from P reweighted by ``1 + chain_boost``
    on samples with a positive among those labels. That costs O(n) per batch.

    Args:
        labels: ``(n, q)`` 0/1 training labels.
        features: optional ``(n, d)`` features for the local (kNN) weight.
        neighbours: k of the kNN weight (default 5).
    """

    def __init__(
        self,
        labels,
        features=None,
        batch_size: int = 128,
        epochs: int = 100,
        s0: float = 100.0,
        warmup: int = 5,
        neighbours: int = 5,
        chain: bool = False,
        chain_labels: int = 3,
        chain_boost: float = 1.0,
        seed: int = 0,
        device="cpu",
        drop_last: bool = False,
    ) -> None:
        y = _as_labels(labels)
        n, q = y.shape
        super().__init__(n, q, batch_size, epochs, s0, warmup, seed, device, drop_last)
        self.neighbours = _checks.check_int("neighbours", neighbours, minimum=1)
        self.chain = bool(chain)
        self.chain_labels = _checks.check_int("chain_labels", chain_labels, minimum=1)
        self.chain_boost = float(chain_boost)
        positives = y.sum(0).to(torch.float32)
        self.imbalance_ratio = positives.max() / positives.clamp(min=1)
        weight = torch.where(y, self.imbalance_ratio, torch.ones(()))
        if features is not None:
            weight = weight * (1.0 + self._local_imbalance(features, y))
        self._labels = y.to(self.device)
        self._weight = weight.to(self.device, torch.float32)
        self.seen = torch.zeros(n, dtype=torch.int64, device=self.device)
        self._loss = torch.zeros(n, dtype=torch.float32, device=self.device)
        if self.chain:
            yf = y.to(torch.float32)
            yc = yf - yf.mean(0)
            cov = yc.T @ yc
            sd = torch.sqrt(torch.diagonal(cov).clamp(min=1e-12))
            self._label_corr = (cov / sd[:, None] / sd[None, :]).abs()

    def _local_imbalance(self, features, y: torch.Tensor) -> torch.Tensor:
        from sklearn.neighbors import NearestNeighbors

        x = features.detach().cpu().numpy() if torch.is_tensor(features) else np.asarray(features)
        if hasattr(features, "toarray"):
            x = features.toarray()
        if x.ndim != 2 or x.shape[0] != y.shape[0]:
            raise ValueError(f"features must have shape ({y.shape[0]}, d), got {tuple(x.shape)}")
        k = min(self.neighbours, y.shape[0] - 1)
        if k < 1:
            return torch.zeros(y.shape, dtype=torch.float32)
        _, idx = NearestNeighbors(n_neighbors=k + 1).fit(x).kneighbors(x)
        neigh = torch.as_tensor(idx[:, 1:])  # drop the sample itself
        return (y[neigh] != y.unsqueeze(1)).to(torch.float32).mean(1)

    def _state_bytes(self) -> int:
        return self.num_samples * (5 * self.num_labels + 12)

    def observe(self, indices, probs=None, *, logits=None) -> None:
        indices, probs = self._checked_observation(indices, probs, logits)
        _checks.check_seen_at(self.seen, indices, self.num_local)
        p = probs.to(torch.float32).clamp(1e-7, 1 - 1e-7)
        y = self._labels[indices]
        bce = -torch.where(y, torch.log(p), torch.log1p(-p))
        self._loss[indices] = (self._weight[indices] * bce).mean(1)
        self.seen[indices] += 1

    def score(self) -> torch.Tensor:
        return self._loss

    def _plan_epoch(self) -> None:
        if not self.chain or self.epoch < self.warmup:
            super()._plan_epoch()
            return
        g = sampling.epoch_generator(self.seed, self.epoch, self.rank)
        log_p = self._selection_log_probs(self.epoch).detach().cpu().double()
        labels = self._labels.cpu()
        rarest = torch.where(labels, self.imbalance_ratio, torch.zeros(())).argmax(1)
        b = min(self.batch_size, self.num_samples)
        rows = []
        for _ in range(len(self)):
            seed_sample = int(ops.plan_weighted(log_p, 1, 1, g)[0, 0])  # no 2^24-category limit
            related = torch.topk(self._label_corr[rarest[seed_sample]], min(self.chain_labels, self.num_labels)).indices
            boost = labels[:, related].any(1).double() * self.chain_boost
            gumbel = -torch.log(-torch.log(torch.rand(self.num_samples, generator=g, dtype=torch.float64)))
            keys = log_p + torch.log1p(boost) + gumbel
            keys[seed_sample] = -torch.inf  # Gumbel top-k = successive sampling without replacement
            rest = torch.topk(keys, b - 1).indices
            rows.append(torch.cat([torch.tensor([seed_sample]), rest]))
        order = torch.cat(rows)
        self._log_p = log_p.float()
        self._plan, self._offsets, self._cursor = order, torch.arange(len(rows) + 1) * b, 0

    def _config(self) -> dict:
        chain = {"chain": self.chain, "chain_labels": self.chain_labels, "chain_boost": self.chain_boost}
        return super()._config() | {"neighbours": self.neighbours} | chain

    def _state(self) -> dict:
        return {"seen": self.seen, "loss": self._loss}

    def _check_state_values(self, state: dict) -> None:
        super()._check_state_values(state)
        _checks.check_saved_values("loss", state["loss"], 0.0, torch.finfo(torch.float32).max)
