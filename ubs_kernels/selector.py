"""The paper's selector: uncertainty-based batch selection guided by dynamic label correlations.

:class:`UncertaintyBatchSelector` keeps its observations in a :class:`~ubs_kernels.history.History`
and, at each selection epoch, turns U and the label correlations into P (docs/spec.md Eq. 6-11);
planning, iteration and checkpoints are :class:`~ubs_kernels.batch_selector.BatchSelector`'s.
With one rank under ``torch.distributed`` it is exactly the single-process selector; with more,
the epoch refresh is global (:mod:`ubs_kernels.distributed`).
"""

from __future__ import annotations

import torch

from . import _checks, distributed, ops
from .batch_selector import BatchSelector, IndexedDataset
from .history import History

__all__ = ["BatchSelector", "IndexedDataset", "UncertaintyBatchSelector"]


class UncertaintyBatchSelector(BatchSelector):
    """Uncertainty-based batch selection guided by dynamic label correlations (Zhou et al., AAAI 2025).

    Per step, :meth:`observe` hands the predictions to the selector's :class:`~ubs_kernels.history.History`,
    which keeps each sample's last T predictions, counts, U (Eq. 1, 4, 5) and bins (staged and
    applied when next read on the CPU; recorded into the rings elsewhere). At each epoch
    ``t >= warmup`` the selector reads U and the bins, computes the mutual-information row sums
    ``c = C 1`` over the observed samples (Eq. 6, never the q x q matrix), ``w = U c``
    (Eq. 7-8), the min-max normalisation, the quantised exponential P with pressure ``s_t``
    (Eq. 9-11), and plans the epoch's batches by successive sampling from P. Epochs before
    ``warmup`` are uniform shuffles.

    Memory (:meth:`memory_bytes`): ``n (T q h + 5 q + 8)`` bytes on ``device`` for history
    (``h`` = 2 for float16, 4 for float32), U (float32), bins (uint8) and counts, plus ``24 n``
    bytes on the CPU for the plan. On the CPU, the staging buffer adds ``m (q h + 8)`` bytes,
    ``m = min(ceil(n / b) b, max(b, 64 MiB / (q h + 8)))`` rows: one epoch of steps, or 64 MiB
    (a full buffer is applied and emptied). Elsewhere, computing U and the bins takes at most
    64 MiB of scratch (more on the ``torch`` backend). Construction fails with ``MemoryError``
    before allocating if that does not fit. Sharded, ``n`` is ``num_local``.

    Under ``torch.distributed`` (see :class:`BatchSelector` and :mod:`ubs_kernels.distributed`)
    the epoch refresh is global: ``c`` over the observed samples of all ranks (exact, or the
    documented approximation beyond ``distributed_mi_limit`` bytes), the min and max of ``w``
    and the normalisation of P over all ranks. :attr:`uncertainty`, :attr:`seen` and
    :attr:`sample_probabilities` then hold this rank's samples (:attr:`owned_indices`).

    Args:
        num_samples, num_labels: n and q.
        batch_size, epochs, seed, device, drop_last: see :class:`BatchSelector`.
        window: T, predictions kept per sample (default 5).
        lam: λ1 of Eq. 5 (default 0.5).
        bins: τ, the number of bins per label for the mutual information (default 10; the
            selector keeps it as :attr:`tau`, and :attr:`bins` is the binned U).
        s0: initial selection pressure (default 100).
        warmup: γ, uniform epochs that fill the history (default 5).
        history_dtype: ``torch.float16`` (default) or ``torch.float32``.
        backend: op backend (``ubs_kernels.ops``); default ``UBS_BACKEND`` or ``"auto"``. The
            ops that write the history resolve it once, here; the epoch's ops at each call.
        process_group: see :class:`BatchSelector`.
        distributed_mi: how ranks combine Eq. 6: ``"auto"`` (default), ``"gather"``,
            ``"counts"`` or ``"approximate"`` (:mod:`ubs_kernels.distributed`).
        distributed_mi_limit: ``"auto"`` is exact while an exact route exchanges at most this
            many bytes per epoch (default 256 MiB), approximate beyond.
        label_correlation: ``"mi"`` (default): C of Eq. 6, the paper's method; ``"ones"``: C is a
            matrix of ones, as in the authors' released code, so every label weighs the same
            (``c = 1``; min-max normalisation makes any constant the same) and no mutual
            information is computed. For the ablation of the correlation term.
    """

    _shardable = True

    def __init__(
        self,
        num_samples: int,
        num_labels: int,
        batch_size: int = 128,
        epochs: int = 100,
        window: int = 5,
        lam: float = 0.5,
        bins: int = 10,
        s0: float = 100.0,
        warmup: int = 5,
        seed: int = 0,
        device: torch.device | str = "cpu",
        drop_last: bool = False,
        history_dtype: torch.dtype = torch.float16,
        backend: str | None = None,
        process_group=None,
        distributed_mi: str = "auto",
        distributed_mi_limit: int = distributed.DEFAULT_MI_LIMIT,
        label_correlation: str = "mi",
    ) -> None:
        super().__init__(num_samples, batch_size, epochs, seed, device, drop_last, process_group)
        self.num_labels = _checks.check_int("num_labels", num_labels, minimum=1)
        self.window = _checks.check_int("window", window, minimum=1)
        self.lam = _checks.check_lam(lam)
        self.tau = _checks.check_tau(bins, "bins")
        self.s0 = _checks.check_pressure(s0, "s0")
        self.warmup = _checks.check_int("warmup", warmup, minimum=0)
        if label_correlation not in ("mi", "ones"):
            raise ValueError(f"label_correlation must be 'mi' or 'ones', got {label_correlation!r}")
        self.label_correlation = label_correlation
        if history_dtype not in (torch.float16, torch.float32):
            raise TypeError(f"history_dtype must be torch.float16 or torch.float32, got {history_dtype}")
        self.history_dtype = history_dtype
        if backend is not None and backend not in ops.BACKENDS:
            raise ValueError(f"backend must be one of {ops.BACKENDS} or None, got {backend!r}")
        self.backend = backend
        limit = _checks.check_int("distributed_mi_limit", distributed_mi_limit, minimum=0)
        self.mi_route = distributed.choose_mi_route(distributed_mi, self._shard, self.num_labels, self.tau, limit)
        distributed.agree(self._shard, self._config(), "the arguments of UncertaintyBatchSelector")
        strategy = History.choose(self.device, backend)
        rows = len(self) * self.batch_size
        capacity = History.stage_capacity(rows, self.batch_size, self.num_labels, history_dtype)
        self._history_bytes = History.memory_bytes_for(
            self.num_local, self.num_labels, self.window, history_dtype, capacity if strategy == "staged" else 0
        )
        self._check_fits()
        self._history = History(
            self.num_local,
            self.num_labels,
            self.window,
            self.lam,
            self.tau,
            history_dtype,
            self.device,
            backend,
            stage_rows=rows,
            batch_size=self.batch_size,
            strategy=strategy,
        )

    def _config(self) -> dict:
        return super()._config() | {
            "num_labels": self.num_labels,
            "window": self.window,
            "lam": self.lam,
            "bins": self.tau,
            "s0": self.s0,
            "warmup": self.warmup,
            "history_dtype": str(self.history_dtype),
            "label_correlation": self.label_correlation,
            "mi_route": self.mi_route,
        }

    def _state_bytes(self) -> int:
        return self._history_bytes

    @property
    def history(self) -> torch.Tensor:
        """``(n, T, q)`` ring of each sample's last T predictions (``(num_local, T, q)`` sharded),
        holding every observation made."""
        return self._history.rings

    @property
    def seen(self) -> torch.Tensor:
        """``(n,)`` int64: how many times each sample was observed."""
        return self._history.seen

    @property
    def uncertainty(self) -> torch.Tensor:
        """``(n, q)`` current U (float32), ``(num_local, q)`` sharded; rows of samples never observed are 0.

        Brought up to date when read after :meth:`observe` (on the CPU by applying the staged
        steps; elsewhere by a whole-matrix pass over every sample), so reading it
        every step costs that every step. Read it again after observing: a refresh may return a
        new tensor rather than update this one.
        """
        return self._history.uncertainty

    @property
    def bins(self) -> torch.Tensor:
        """``(n, q)`` uint8 bins of U (``min(floor(U tau), tau - 1)``), refreshed like :attr:`uncertainty`."""
        return self._history.bins

    def observe(self, indices: torch.Tensor, probs: torch.Tensor | None = None, *, logits=None) -> None:
        """Record the predictions of samples ``indices`` ``(b,)``: ``probs`` ``(b, q)`` after
        sigmoid, or ``logits`` ``(b, q)`` before it.

        Indices and predictions may live on any device; they are moved to the selector's. Bad
        input raises and changes nothing. Sharded, ``indices`` are global ids this rank owns.

        ``logits`` (anything but NaN) spares the training loop a sigmoid of its own: on the CPU it
        is applied as the step is staged, in float32, so a float32 history value may differ from
        ``torch.sigmoid``'s in its last bit (float16 values agreed on every one of 200,000 tried);
        elsewhere it is ``torch.sigmoid`` of the logits in float32.
        """
        indices, values, is_logits = self._moved(indices, probs, logits)
        self._history.observe(indices, values, is_logits)

    def pressure(self, epoch: int) -> float:
        """``s_t`` of Eq. 11 at ``epoch``."""
        return ops.selection_pressure(epoch, self.s0, self.warmup, self.epochs)

    def label_correlation_rowsums(self, route: str | None = None) -> torch.Tensor:
        """``c = C 1`` (Eq. 6-8) over the samples observed so far, ``(q,)`` float32.

        Sharded, over the observed samples of all ranks, by :attr:`mi_route` (or ``route``):
        a collective call that every rank must make.
        """
        observed = self.seen > 0
        bins = self.bins
        if self._shard.sharded:
            route = self.mi_route if route is None else route
            return distributed.label_mi_rowsums(self._shard, bins, observed, self.tau, route, self.backend)
        bins = bins[observed] if not bool(observed.all()) else bins
        return ops.label_mi(bins, self.tau, rowsum=True, backend=self.backend)

    def _correlation_rowsums(self) -> torch.Tensor:
        """``c`` of Eq. 7-8 for this epoch: the MI row sums, or ones (``label_correlation="ones"``)."""
        if self.label_correlation == "ones":
            return torch.ones(self.num_labels, dtype=torch.float32, device=self.device)
        return self.label_correlation_rowsums()

    def _selection_log_probs(self, epoch: int) -> torch.Tensor | None:
        if epoch < self.warmup:
            return None
        if self._shard.sharded:
            distributed.agree(self._shard, {"epoch": epoch}, "the epoch being planned")
        c = self._correlation_rowsums()
        u, seen, s = self.uncertainty, self.seen, self.pressure(epoch)
        if self._shard.sharded:
            return distributed.selection_log_probs(self._shard, u, c, seen, s)
        return ops.selection_log_probs(u, c, seen, s, backend=self.backend)

    def _state(self) -> dict:
        return self._history.state()

    def _check_state(self, state) -> dict:
        return self._history.check(state)

    def _load_state(self, checked: dict) -> None:
        self._history.load(checked)
