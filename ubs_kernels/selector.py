"""The batch selectors: an epoch-planning base class and the paper's UncertaintyBatchSelector.

A selector is a batch sampler: iterating it yields one epoch of CPU ``LongTensor`` batches of
sample ids, so it works in a plain loop and as ``DataLoader(dataset, batch_sampler=selector)``.
After each forward pass the training loop calls ``selector.observe(indices, probs)``. Every
new iteration starts the next epoch: the selector refreshes its distribution P (SPEC.md
Eq. 6-11) and plans the whole epoch at once (:mod:`ubs_kernels.sampling`).

Planning depends only on ``(seed, epoch, rank)`` and the selector's state, and the plan of
the epoch in progress is part of :meth:`state_dict`, so stopping after any step and resuming
gives exactly the batches of an uninterrupted run.

Under ``torch.distributed`` the selector shards the samples across ranks (sample ``i``
belongs to rank ``i % world_size``) and refreshes P from global statistics; see
:mod:`ubs_kernels.distributed`. With one rank it is exactly the single-process selector.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import torch

from . import _checks, distributed, ops, sampling

_HISTORY_DTYPES = (torch.float16, torch.float32)


def _positive_int(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def available_memory_bytes(device: torch.device) -> int | None:
    """Free memory of ``device`` in bytes (None if unknown)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    if device.type == "cpu":
        try:
            return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return None
    return None


class BatchSelector(torch.utils.data.Sampler):
    """Epoch planning, iteration, checkpointing; subclasses say how P is computed.

    Subclasses implement :meth:`_selection_log_probs` (``None`` for a uniform permutation)
    and, if they keep per-sample state, :meth:`observe`, :meth:`_state` / :meth:`_load_state`
    and :meth:`_state_bytes`.

    Distributed: when ``torch.distributed`` is initialised (or ``process_group`` is given)
    and the class can shard, rank ``r`` of ``W`` owns the samples ``i`` with ``i % W == r``
    (:attr:`owned_indices`), keeps state for those ``num_local`` samples only (local row ``k``
    is sample ``owned_indices[k]``), yields and observes global ids, and every rank yields
    ``ceil(ceil(n/W)/b)`` batches per epoch. Construction is then a collective call (the ranks
    check that they agree on the arguments). Classes that keep per-sample state must opt in
    with ``_shardable = True``; those that keep none (:class:`RandomSelector`) shard as they
    are; the others stay single-process under ``torch.distributed`` with a warning.

    Args:
        num_samples: n, the size of the training set.
        batch_size: b.
        epochs: E, the epoch at which selection pressure reaches 1.
        seed: planning depends only on ``(seed, epoch, rank)``.
        device: where per-sample state lives (the device of the predictions). Any spelling of a
            device: ``"cuda"``, ``torch.device("cuda")`` and the current device index are one device
            (:func:`ubs_kernels._checks.check_device`); :attr:`device` holds it with its index.
        drop_last: ``floor(n/b)`` batches per epoch instead of ``ceil(n/b)``.
        process_group: ``None`` (default): the default group if ``torch.distributed`` is
            initialised, else a single process; a ``ProcessGroup``: shard across it; ``False``:
            a single process even under ``torch.distributed``.
    """

    # Whether the class can shard: None = only if it keeps no per-sample state (see above).
    _shardable: bool | None = None

    def __init__(
        self,
        num_samples: int,
        batch_size: int = 128,
        epochs: int = 100,
        seed: int = 0,
        device: torch.device | str = "cpu",
        drop_last: bool = False,
        process_group=None,
    ) -> None:
        self.num_samples = _positive_int("num_samples", num_samples)
        self.batch_size = _positive_int("batch_size", batch_size)
        self.epochs = _positive_int("epochs", epochs)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"seed must be an integer, got {seed!r}")
        self.seed = seed
        self.device = _checks.check_device(device)
        self.drop_last = bool(drop_last)
        if self.drop_last and num_samples < batch_size:
            raise ValueError(f"drop_last with num_samples={num_samples} < batch_size={batch_size} leaves no batch")
        self._shard = distributed.resolve(process_group, num_samples, self._can_shard(), type(self).__name__)
        self.rank, self.world_size = self._shard.rank, self._shard.world_size
        self.num_local = self._shard.num_local
        if self.drop_last and num_samples // self.world_size < batch_size:
            raise ValueError(
                f"drop_last with num_samples={num_samples} over world_size={self.world_size} ranks leaves a rank "
                f"fewer than batch_size={batch_size} samples, so no full batch"
            )
        distributed.agree(
            self._shard,
            {"kind": type(self).__name__, "num_samples": num_samples, "batch_size": batch_size, "epochs": epochs}
            | {"seed": seed, "drop_last": self.drop_last},
            f"the arguments of {type(self).__name__}",
        )
        self.epoch = 0
        self._plan: torch.Tensor | None = None  # flat sample order of the current epoch
        self._offsets: torch.Tensor | None = None  # (batches + 1,) start of each batch in _plan
        self._cursor = 0  # batches of the current plan already handed out
        self._log_p: torch.Tensor | None = None  # (num_local,) log P of the current epoch; None = uniform

    @classmethod
    def _can_shard(cls) -> bool:
        if cls._shardable is not None:
            return cls._shardable
        hooks = ("_plan_epoch", "_selection_log_probs", "observe", "_state")
        return all(getattr(cls, h) is getattr(BatchSelector, h) for h in hooks)

    @property
    def owned_indices(self) -> torch.Tensor:
        """Global ids of the samples this rank owns (all ``n`` in a single process); row k of the state is sample k."""
        return self._shard.owned()

    # ----------------------------------------------------------------- subclass hooks
    def _selection_log_probs(self, epoch: int) -> torch.Tensor | None:
        """``(num_local,)`` log P for ``epoch`` (``(n,)`` in a single process), or None for a uniform shuffle."""
        return None

    def _state(self) -> dict:
        """The per-sample state tensors, by name (checkpointed; restored in place)."""
        return {}

    def _check_state(self, state: dict) -> None:
        for key, t in self._state().items():
            got = state.get(key)
            if not torch.is_tensor(got) or got.shape != t.shape or got.dtype != t.dtype:
                raise ValueError(
                    f"state_dict['state'][{key!r}] must be a {t.dtype} tensor of shape {tuple(t.shape)}, got "
                    f"{getattr(got, 'dtype', type(got).__name__)} {tuple(getattr(got, 'shape', ()))}"
                )

    def _load_state(self, state: dict) -> None:
        for key, t in self._state().items():
            t.copy_(state[key])

    def _state_bytes(self) -> int:
        return 0

    def observe(self, indices: torch.Tensor, probs: torch.Tensor | None = None, *, logits=None) -> None:
        """Record one step's predictions: ``probs`` after sigmoid, or ``logits`` before it.
        Selectors that ignore predictions only check them."""
        self._checked_observation(indices, probs, logits)

    def _checked_observation(self, indices, probs, logits=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Local rows ``indices`` (int64 on ``self.device``) and detached ``probs``, after the op
        checks (``logits`` given instead: checked, and their sigmoid returned as ``probs``)."""
        probs, is_logits = _checks.probs_or_logits(probs, logits)
        if is_logits:
            q = getattr(self, "num_labels", None)
            b = indices.shape[0] if torch.is_tensor(indices) and indices.dim() == 1 else -1
            if q is None:
                q = probs.shape[1] if torch.is_tensor(probs) and probs.dim() == 2 else -1
            device = probs.device if torch.is_tensor(probs) else self.device
            probs = torch.sigmoid(_checks.check_logits(probs, b, q, device).detach().to(torch.float32))
        if torch.is_tensor(indices) and indices.device != self.device:
            indices = indices.to(self.device)
        if torch.is_tensor(probs) and probs.device != self.device:
            probs = probs.to(self.device)
        indices = _checks.check_indices(self._shard.to_local(indices), self.num_local, self.device)
        q = getattr(self, "num_labels", None)
        if q is None:
            q = probs.shape[1] if torch.is_tensor(probs) and probs.dim() == 2 else -1
        probs = _checks.check_probs(probs, indices.numel(), q, self.device)
        return indices.long(), probs.detach()

    # ----------------------------------------------------------------- planning
    def __len__(self) -> int:
        """Batches per epoch: ``ceil(n/b)`` (floor with ``drop_last``); sharded, ``n`` is the largest shard."""
        return sampling.num_batches(self._shard.largest, self.batch_size, self.drop_last)

    def _plan_epoch(self) -> None:
        generator = sampling.epoch_generator(self.seed, self.epoch, self.rank)
        log_p = self._selection_log_probs(self.epoch)
        shard = self._shard
        if log_p is None:
            if shard.sharded:
                order = sampling.plan_uniform(self.num_local, self.batch_size, False, generator)
                order = shard.pad_uniform(order, len(self), self.batch_size, self.drop_last)
            else:
                order = sampling.plan_uniform(self.num_samples, self.batch_size, self.drop_last, generator)
            offsets = torch.arange(0, order.numel() + self.batch_size, self.batch_size).clamp_(max=order.numel())
            offsets = torch.unique_consecutive(offsets)
        else:
            # the plan is made on the CPU; a selector on the torch backend keeps to torch there too
            backend = "torch" if getattr(self, "backend", None) == "torch" else None
            rows = sampling.plan_weighted(log_p, self.batch_size, len(self), generator, backend)
            order = rows.flatten()
            offsets = torch.arange(rows.shape[0] + 1) * rows.shape[1]
        order = shard.to_global(order)
        self._log_p = None if log_p is None else log_p.detach().to(torch.float32)
        self._plan, self._offsets, self._cursor = order, offsets, 0

    def __iter__(self) -> Iterator[torch.Tensor]:
        if self._plan is not None and self._cursor >= self._offsets.numel() - 1:
            self.epoch += 1  # the previous epoch was used up: this iteration is the next one
            self._plan = None
        if self._plan is None:
            self._plan_epoch()
        source = views = None
        while self._cursor < self._offsets.numel() - 1:
            if source is not self._offsets:  # the batches as views, made once per plan
                source, bounds = self._offsets, self._offsets.tolist()
                whole = bounds[0] == 0 and bounds[-1] == self._plan.numel()
                views = self._plan.tensor_split(bounds[1:-1]) if whole else None
            k = self._cursor
            self._cursor = k + 1
            yield views[k] if views is not None else self._plan[bounds[k] : bounds[k + 1]]

    def set_epoch(self, epoch: int) -> None:
        """Make the next iteration epoch ``epoch`` (``DistributedSampler``-style).

        Calling it with the epoch in progress keeps the unfinished plan (so a resumed run that
        calls ``set_epoch`` before iterating continues where it stopped).
        """
        epoch = _positive_int("epoch", epoch, minimum=0)
        if epoch == self.epoch and self._plan is not None and self._cursor < self._offsets.numel() - 1:
            return
        if epoch == self.epoch and self._plan is None:
            return
        self.epoch, self._plan, self._offsets, self._cursor = epoch, None, None, 0

    @property
    def selecting(self) -> bool:
        """Whether the current epoch's batches are drawn from P (False: a uniform shuffle)."""
        return self._log_p is not None

    @property
    def sample_probabilities(self) -> torch.Tensor:
        """``(n,)`` P of the current epoch (uniform during warm-up), summing to 1.

        Sharded: ``(num_local,)``, the global P of this rank's samples (summing to 1 over all
        ranks); the rank draws its batches from P restricted to its samples.
        """
        if self._log_p is None:
            return torch.full((self.num_local,), 1.0 / self.num_samples)
        if self._shard.sharded:
            return torch.exp(self._log_p.double()).float()
        return torch.softmax(self._log_p.double(), 0).float()

    # ----------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict:
        """Everything needed to continue exactly: epoch, plan and cursor, and per-sample state.

        Sharded, each rank saves and loads its own (``rank`` and ``world_size`` are checked).
        """
        return {
            "kind": type(self).__name__,
            "num_samples": self.num_samples,
            "rank": self.rank,
            "world_size": self.world_size,
            "batch_size": self.batch_size,
            "seed": self.seed,
            "epoch": self.epoch,
            "cursor": self._cursor,
            "plan": None if self._plan is None else self._plan.clone(),
            "offsets": None if self._offsets is None else self._offsets.clone(),
            "log_p": None if self._log_p is None else self._log_p.cpu().clone(),
            "state": {k: v.cpu().clone() if torch.is_tensor(v) else v for k, v in self._state().items()},
        }

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore :meth:`state_dict`; checks everything first, so a bad dict changes nothing."""
        if not isinstance(state_dict, dict):
            raise TypeError(f"state_dict must be a dict, got {type(state_dict).__name__}")
        missing = {"kind", "num_samples", "batch_size", "epoch", "cursor", "plan", "offsets", "log_p", "state"}
        missing -= state_dict.keys()
        if missing:
            raise KeyError(f"state_dict is missing {sorted(missing)}")
        mine = {"kind": type(self).__name__, "num_samples": self.num_samples, "batch_size": self.batch_size}
        mine |= {"rank": self.rank, "world_size": self.world_size}
        for key, value in mine.items():
            got = state_dict.get(key, 1 if key == "world_size" else 0)  # dicts without rank: one process
            if got != value:
                raise ValueError(f"state_dict[{key!r}] is {got!r}, this selector has {value!r}")
        plan, offsets = state_dict["plan"], state_dict["offsets"]
        if (plan is None) != (offsets is None):
            raise ValueError("state_dict['plan'] and ['offsets'] must both be set or both be None")
        if plan is not None and not (0 <= state_dict["cursor"] <= offsets.numel() - 1):
            raise ValueError(f"state_dict['cursor'] {state_dict['cursor']} is outside the plan")
        log_p = state_dict["log_p"]
        if log_p is not None and (not torch.is_tensor(log_p) or tuple(log_p.shape) != (self.num_local,)):
            raise ValueError(f"state_dict['log_p'] must be None or a ({self.num_local},) tensor")
        if not isinstance(state_dict["state"], dict):
            raise TypeError("state_dict['state'] must be a dict")
        self._check_state(state_dict["state"])
        self.epoch, self._cursor = int(state_dict["epoch"]), int(state_dict["cursor"])
        self._plan, self._offsets = plan, offsets
        self._log_p = state_dict["log_p"]
        self._load_state(state_dict["state"])

    # ----------------------------------------------------------------- memory
    def memory_bytes(self) -> int:
        """Bytes this selector holds: per-sample state on its device plus the epoch plan on the CPU.

        The plan costs ``8 n`` (order) and ``12 n`` while a selection epoch is planned
        (float64 CDF and draws), ``log P`` ``4 n``; subclasses add their state.
        """
        return self._state_bytes() + 24 * self.num_local

    def _check_fits(self) -> None:
        need = self.memory_bytes()
        free = available_memory_bytes(self.device)
        if free is not None and need > free:
            raise MemoryError(
                f"{type(self).__name__} needs {need / 2**30:.2f} GiB on {self.device} for num_samples="
                f"{self.num_samples} (see memory_bytes()), but only {free / 2**30:.2f} GiB is free"
            )


class UncertaintyBatchSelector(BatchSelector):
    """Uncertainty-based batch selection guided by dynamic label correlations (Zhou et al., AAAI 2025).

    Per step, :meth:`observe` checks the predictions and appends them to a staging buffer (on
    the CPU: :func:`ubs_kernels.ops.stage`, a contiguous copy) or writes them into the samples'
    history rings (elsewhere: :func:`ubs_kernels.ops.record`). At each epoch ``t >= warmup`` the
    selector brings U (Eq. 1, 4, 5) and its bins up to date (on the CPU by applying the staged
    steps to the rings of the samples they touch, :func:`ubs_kernels.ops.observe_staged`;
    elsewhere from the rings of all samples in one pass), computes the mutual-information row
    sums ``c = C 1`` over the observed samples (Eq. 6, never the q x q matrix), ``w = U c``
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
        bins: τ, bins per label for the mutual information (default 10).
        s0: initial selection pressure (default 100).
        warmup: γ, uniform epochs that fill the history (default 5).
        history_dtype: ``torch.float16`` (default) or ``torch.float32``.
        backend: op backend (``ubs_kernels.ops``); default ``UBS_BACKEND`` or ``"auto"``.
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
    # Largest U + bins block of one refresh pass (the refresh's only scratch).
    _REFRESH_BLOCK_BYTES = 64 << 20
    # Largest staging buffer (CPU): one epoch of steps, or this many bytes.
    _STAGE_BYTES = 64 << 20

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
        if label_correlation not in ("mi", "ones"):
            raise ValueError(f"label_correlation must be 'mi' or 'ones', got {label_correlation!r}")
        self.label_correlation = label_correlation
        self.num_labels = _positive_int("num_labels", num_labels)
        self.window = _positive_int("window", window)
        self.lam = _checks.check_lam(lam)
        self.bins = _checks.check_tau(bins)
        self.s0 = _checks.check_pressure(s0)
        self.warmup = _positive_int("warmup", warmup, minimum=0)
        if history_dtype not in _HISTORY_DTYPES:
            raise TypeError(f"history_dtype must be torch.float16 or torch.float32, got {history_dtype}")
        self.history_dtype = history_dtype
        self.backend = backend
        limit = _positive_int("distributed_mi_limit", distributed_mi_limit, minimum=0)
        self.mi_route = distributed.choose_mi_route(distributed_mi, self._shard, self.num_labels, self.bins, limit)
        config = {"num_labels": num_labels, "window": window, "lam": self.lam, "bins": self.bins, "s0": self.s0}
        config |= {"warmup": warmup, "mi_route": self.mi_route, "label_correlation": label_correlation}
        distributed.agree(self._shard, config, "the arguments of UncertaintyBatchSelector")
        # Staging (CPU, native or torch backend): observe appends each step to a buffer, and the
        # buffered steps are applied to the rings, with U and the bins of the samples they
        # touch, when the state is next needed (ops.stage / ops.observe_staged). A step then
        # costs a contiguous copy, not b ring writes scattered over the history with caches the
        # model has just evicted. Elsewhere each step is recorded into the rings (ops.record)
        # and U comes from one whole-matrix pass when needed.
        chosen = ops.resolve_backend("record", self.device, backend)
        self._staging = self.device.type == "cpu" and chosen in ("cpu", "torch")
        self._native_stage = self._staging and chosen == "cpu"
        # The first thing observe tries: the native kernel takes the step as it comes, and
        # anything it does not take (another device, int32 ids, a full buffer, bad input) goes
        # the general way, which raises the error if there is one.
        fast = self._native_stage and not self._shard.sharded
        self._fast_stage = torch.ops.ubs_kernels.stage.default if fast else None
        self._native_record = chosen in ops.NATIVE_BACKENDS
        self._check_fits()
        n, q, d = self.num_local, self.num_labels, self.device
        self._history = torch.zeros((n, self.window, q), dtype=history_dtype, device=d)
        self._seen = torch.zeros(n, dtype=torch.int64, device=d)
        self._u_store = torch.zeros((n, q), dtype=torch.float32, device=d)
        self._bins_store = torch.zeros((n, q), dtype=torch.uint8, device=d)
        self._stale = False  # whether observe wrote rings since U and the bins were computed
        capacity = self._stage_capacity()
        self._stage_indices = torch.zeros(capacity, dtype=torch.int64, device=d)
        self._stage_probs = torch.zeros((capacity, q), dtype=history_dtype, device=d)
        self._staged = 0  # rows of the staging buffer in use

    def _stage_capacity(self) -> int:
        """Rows of the staging buffer: one epoch of steps, at most ``_STAGE_BYTES`` (0 without staging)."""
        if not self._staging:
            return 0
        row = self.num_labels * (2 if self.history_dtype == torch.float16 else 4) + 8
        return min(len(self) * self.batch_size, max(self.batch_size, self._STAGE_BYTES // row))

    @property
    def history(self) -> torch.Tensor:
        """``(n, T, q)`` ring of each sample's last T predictions (``(num_local, T, q)`` sharded).

        Reading it applies the staged steps first, so it always holds every observation made.
        """
        self._apply_staged()
        return self._history

    @property
    def seen(self) -> torch.Tensor:
        """``(n,)`` int64: how many times each sample was observed (staged steps applied first)."""
        self._apply_staged()
        return self._seen

    def _state_bytes(self) -> int:
        h = 2 if self.history_dtype == torch.float16 else 4
        staging = self._stage_capacity() * (self.num_labels * h + 8)
        return self.num_local * (self.window * self.num_labels * h + 5 * self.num_labels + 8) + staging

    def observe(self, indices: torch.Tensor, probs: torch.Tensor | None = None, *, logits=None) -> None:
        """Record the predictions of samples ``indices`` ``(b,)``: ``probs`` ``(b, q)`` after
        sigmoid, or ``logits`` ``(b, q)`` before it.

        Indices and predictions may live on any device; they are moved to the selector's. Bad
        input raises and changes nothing. Sharded, ``indices`` are global ids this rank owns.

        On the CPU the step is checked and staged (:func:`ubs_kernels.ops.stage`); it reaches
        the rings, U and the bins when they are next needed. Elsewhere only the history rings and
        counts are written here (:func:`ubs_kernels.ops.record`); U and the bins follow from them
        when next needed (see :attr:`uncertainty`).

        ``logits`` (anything but NaN) spares the training loop a sigmoid of its own: on the CPU it
        is applied as the step is staged, in float32, so a float32 history value may differ from
        ``torch.sigmoid``'s in its last bit (float16 values agreed on every one of 200,000 tried);
        elsewhere it is ``torch.sigmoid`` of the logits in float32.
        """
        x, is_logits = probs, False
        if logits is not None or probs is None:
            x, is_logits = _checks.probs_or_logits(probs, logits)
        fast = self._fast_stage
        if fast is not None:
            # In a training loop this call runs with caches the model has just evicted, where
            # each Python step costs: one native call that checks everything (writing nothing
            # if a check fails) is the whole of a step.
            k = self._staged
            try:
                fast(self._stage_indices, self._stage_probs, k, indices, x, self.num_local, is_logits)
            except (RuntimeError, TypeError, ValueError, IndexError):
                pass
            else:
                self._staged = k + indices.shape[0]
                return
        if torch.is_tensor(indices) and indices.device != self.device:
            indices = indices.to(self.device)
        if torch.is_tensor(x) and x.device != self.device:
            x = x.to(self.device)
        indices = self._shard.to_local(indices)
        x = x.detach() if torch.is_tensor(x) else x
        b = indices.shape[0] if torch.is_tensor(indices) and indices.dim() == 1 else 0
        if self._staging and b <= self._stage_indices.shape[0]:
            if self._staged + b > self._stage_indices.shape[0]:
                self._apply_staged()
            if self._native_stage and indices.dtype == torch.int64 and torch.is_tensor(x):
                # The native kernel checks indices and values itself before writing anything, with
                # the same errors as ops.stage.
                torch.ops.ubs_kernels.stage(
                    self._stage_indices, self._stage_probs, self._staged, indices, x, self.num_local, is_logits
                )
            else:
                ops.stage(
                    self._stage_indices,
                    self._stage_probs,
                    self._staged,
                    indices,
                    x,
                    self.num_local,
                    logits=is_logits,
                    backend=self.backend,
                )
            self._staged += b
            return
        if is_logits:  # the record and observe ops take probabilities (and check the rows)
            rows = x.shape[0] if torch.is_tensor(x) and x.dim() == 2 else b
            x = torch.sigmoid(_checks.check_logits(x, rows, self.num_labels, self.device).to(torch.float32))
        if self._staging:  # larger than the staging buffer: observed directly (U and bins included)
            self._apply_staged()
            ops.observe(
                self._history,
                self._seen,
                self._u_store,
                self._bins_store,
                indices,
                x,
                self.lam,
                self.bins,
                backend=self.backend,
            )
            return
        if self._native_record and torch.is_tensor(indices) and indices.dtype == torch.int64 and torch.is_tensor(x):
            # As above: the native kernel checks for itself, with the same errors as ops.record.
            torch.ops.ubs_kernels.record(self._history, self._seen, indices, x)
        else:
            ops.record(self._history, self._seen, indices, x, backend=self.backend)
        self._stale = True

    def _apply_staged(self) -> None:
        """Apply the staged steps to the rings, counts, U and bins, and empty the buffer."""
        k = self._staged
        if k == 0:
            return
        ops.observe_staged(
            self._history,
            self._seen,
            self._u_store,
            self._bins_store,
            self._stage_indices[:k],
            self._stage_probs[:k],
            self.lam,
            self.bins,
            backend=self.backend,
        )
        self._staged = 0

    def _refresh(self) -> None:
        """U and the bins of every sample from the rings, if anything was observed since last time.

        The whole-matrix pass (:func:`ubs_kernels.ops.uncertainty`) computes each row as
        :func:`ubs_kernels.ops.observe` would have at the sample's last observation (the same
        row kernel per backend). In a training loop this costs a fraction of refreshing the rows
        at every step: the rings are streamed once per epoch instead of visited one batch at a
        time with caches the model has just evicted. Outputs come in row blocks of at most
        ``_REFRESH_BLOCK_BYTES``, the only scratch the refresh needs.
        """
        self._apply_staged()
        if not self._stale:
            return
        n, q = self.num_local, self.num_labels
        rows = max(1, self._REFRESH_BLOCK_BYTES // (5 * q))
        if rows >= n:  # one block: take the fresh outputs as they are
            self._u_store, self._bins_store = ops.uncertainty(
                self._history, self._seen, self.lam, self.bins, backend=self.backend
            )
        else:
            for a in range(0, n, rows):
                u, b = ops.uncertainty(
                    self._history[a : a + rows], self._seen[a : a + rows], self.lam, self.bins, backend=self.backend
                )
                self._u_store[a : a + rows].copy_(u)
                self._bins_store[a : a + rows].copy_(b)
        self._stale = False

    @property
    def uncertainty(self) -> torch.Tensor:
        """``(n, q)`` current U (float32), ``(num_local, q)`` sharded; rows of samples never observed are 0.

        Brought up to date when read after :meth:`observe` (on the CPU by applying the staged
        steps; elsewhere by a whole-matrix pass, about 1 ms for 5,000 x 374), so reading it
        every step costs that every step. Read it again after observing: a refresh may return a
        new tensor rather than update this one.
        """
        self._refresh()
        return self._u_store

    @property
    def _uncertainty(self) -> torch.Tensor:
        return self.uncertainty

    @property
    def _bins(self) -> torch.Tensor:
        """``(n, q)`` uint8 bins of U (``min(floor(U tau), tau - 1)``), refreshed like :attr:`uncertainty`."""
        self._refresh()
        return self._bins_store

    def pressure(self, epoch: int) -> float:
        """``s_t`` of Eq. 11 at ``epoch``."""
        return ops.selection_pressure(epoch, self.s0, self.warmup, self.epochs)

    def label_correlation_rowsums(self, route: str | None = None) -> torch.Tensor:
        """``c = C 1`` (Eq. 6-8) over the samples observed so far, ``(q,)`` float32.

        Sharded, over the observed samples of all ranks, by :attr:`mi_route` (or ``route``):
        a collective call that every rank must make.
        """
        observed = self.seen > 0
        if self._shard.sharded:
            route = self.mi_route if route is None else route
            return distributed.label_mi_rowsums(self._shard, self._bins, observed, self.bins, route, self.backend)
        bins = self._bins[observed] if not bool(observed.all()) else self._bins
        return ops.label_mi(bins, self.bins, rowsum=True, backend=self.backend)

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
            return distributed.selection_log_probs(self._shard, self._uncertainty, c, self.seen, self.pressure(epoch))
        c = self._correlation_rowsums()
        return ops.selection_log_probs(self._uncertainty, c, self.seen, self.pressure(epoch), backend=self.backend)

    def _state(self) -> dict:
        return {"history": self.history, "seen": self.seen, "uncertainty": self._uncertainty, "bins": self._bins}

    def _load_state(self, state: dict) -> None:
        self._staged = 0  # steps staged before loading are replaced by the loaded state
        self._history.copy_(state["history"])
        self._seen.copy_(state["seen"])
        self._u_store.copy_(state["uncertainty"])
        self._bins_store.copy_(state["bins"])
        self._stale = False


class IndexedDataset(torch.utils.data.Dataset):
    """Wraps a dataset so each item comes with its index: ``(index, *item)``.

    With ``DataLoader(IndexedDataset(ds), batch_sampler=selector)`` every batch carries the
    sample ids to pass to ``selector.observe``, also when workers prefetch batches ahead.
    """

    def __init__(self, dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index):
        item = self.dataset[index]
        return (index, *item) if isinstance(item, tuple) else (index, item)
