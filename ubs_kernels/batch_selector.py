"""The batch-selector base: epoch planning, iteration and checkpoints, shared by every selector.

A selector is a batch sampler: iterating it yields one epoch of CPU ``LongTensor`` batches of
sample ids, so it works in a plain loop and as ``DataLoader(dataset, batch_sampler=selector)``.
After each forward pass the training loop calls ``selector.observe(indices, probs)``. Every
new iteration starts the next epoch: the selector computes its distribution P (a subclass's
:meth:`BatchSelector._selection_log_probs`; uniform without one) and plans the whole epoch at
once (:func:`ubs_kernels.ops.plan_weighted`).

Planning depends only on ``(seed, epoch, rank)`` and the selector's state, and the plan of
the epoch in progress is part of :meth:`BatchSelector.state_dict`, so stopping after any step
and resuming gives exactly the batches of an uninterrupted run.

Under ``torch.distributed`` the selector shards the samples across ranks (sample ``i``
belongs to rank ``i % world_size``); see :mod:`ubs_kernels.distributed`.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator

import torch

from . import _checks, distributed, ops, sampling


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
    and, if they keep per-sample state, :meth:`observe`, :meth:`_state` (the tensors, by
    name), :meth:`_state_specs` and :meth:`_check_state_values` (what a checkpoint of them
    must hold), :meth:`_config` (the arguments a checkpoint must agree with) and
    :meth:`_state_bytes`.

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
    # Labels per prediction row, where the class knows them (observe checks the width).
    num_labels: int | None = None
    # The op backend of the class's ops (ubs_kernels.ops); the plan follows it to the torch one.
    backend: str | None = None

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
        self.num_samples = _checks.check_int("num_samples", num_samples, minimum=1)
        self.batch_size = _checks.check_int("batch_size", batch_size, minimum=1)
        self.epochs = _checks.check_int("epochs", epochs, minimum=1)
        self.seed = _checks.check_int("seed", seed)
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
    def shard(self) -> distributed.Shard:
        """How the ``n`` samples are split over the process group (one shard in a single process)."""
        return self._shard

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

    def _state_specs(self) -> dict:
        """``{name: (dtype, shape)}`` of :meth:`_state` (what a checkpoint must hold)."""
        return {k: (t.dtype, tuple(t.shape)) for k, t in self._state().items()}

    def _check_state_values(self, state: dict) -> None:
        """Raise ``ValueError`` if checked state tensors hold values this class cannot have."""
        if "seen" in state:
            _checks.check_saved_values("seen", state["seen"], 0, _checks.MAX_SEEN)

    def _check_state(self, state) -> dict:
        """The checkpoint's state tensors, checked and copied to :attr:`device` (nothing loaded)."""
        checked = _checks.check_saved_tensors(state, self._state_specs(), self.device)
        self._check_state_values(checked)
        return checked

    def _load_state(self, checked: dict) -> None:
        """Take tensors that :meth:`_check_state` returned (cannot fail)."""
        for key, t in self._state().items():
            t.copy_(checked[key])

    def _config(self) -> dict:
        """Arguments that a checkpoint must have been made with (they shape its state or its P)."""
        return {"epochs": self.epochs, "drop_last": self.drop_last}

    def _state_bytes(self) -> int:
        return 0

    def observe(self, indices: torch.Tensor, probs: torch.Tensor | None = None, *, logits=None) -> None:
        """Record one step's predictions: ``probs`` after sigmoid, or ``logits`` before it.
        Selectors that ignore predictions only check them."""
        self._checked_observation(indices, probs, logits)

    def _moved(self, indices, probs, logits) -> tuple[torch.Tensor, torch.Tensor, bool]:
        """``indices`` (local rows) and the values on :attr:`device`, and whether they are logits:
        tensors with data (a list or a ``meta`` tensor is refused, naming it) from any device."""
        values, is_logits = _checks.probs_or_logits(probs, logits)
        indices = _checks.check_data("indices", indices)
        values = _checks.check_data("logits" if is_logits else "probs", values)
        if indices.device != self.device:
            indices = indices.to(self.device)
        if values.device != self.device:
            values = values.to(self.device)
        if self._shard.sharded:
            indices = self._shard.to_local(_checks.check_indices(indices, self.num_samples, self.device))
        return indices, values, is_logits

    def _checked_observation(self, indices, probs, logits=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Local rows ``indices`` (int64 on ``self.device``) and ``probs``, after the op checks
        (``logits`` given instead: checked, and their sigmoid returned as ``probs``)."""
        indices, values, is_logits = self._moved(indices, probs, logits)
        values = values.detach()  # the comparators keep statistics of them
        indices = _checks.check_indices(indices, self.num_local, self.device)
        b = indices.numel()
        if is_logits:
            values = torch.sigmoid(_checks.check_logits(values, b, self.num_labels, self.device).to(torch.float32))
        return indices.long(), _checks.check_probs(values, b, self.num_labels, self.device)

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
            backend = "torch" if self.backend == "torch" else None
            rows = ops.plan_weighted(log_p, self.batch_size, len(self), generator, backend)
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
        epoch = _checks.check_int("epoch", epoch, minimum=0)
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
    def _numerics(self) -> dict:
        """What the state's floating-point values depend on beyond the arguments: resuming
        elsewhere gives the same batches only where these agree (U differs in its last bit
        between CPU instruction-set paths, and between the CPU and CUDA)."""
        return {"device": self.device.type, "cpu_isa": ops.cpu_isa() if self.device.type == "cpu" else None}

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
            "config": self._config(),
            "numerics": self._numerics(),
            "epoch": self.epoch,
            "cursor": self._cursor,
            "plan": None if self._plan is None else self._plan.clone(),
            "offsets": None if self._offsets is None else self._offsets.clone(),
            "log_p": None if self._log_p is None else self._log_p.cpu().clone(),
            "state": {k: v.cpu().clone() for k, v in self._state().items()},
        }

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore :meth:`state_dict`, or raise and change nothing.

        The dict is data from outside: every entry is checked before anything is loaded (the
        arguments it was made with, the plan's ids and batch bounds, the cursor, the state's
        dtypes, shapes and values), and the state is copied onto :attr:`device` before the
        selector takes any of it. A dict from another device or CPU instruction-set path loads,
        with a warning: its batches can differ from the uninterrupted run's in the last bits of U.
        """
        if not isinstance(state_dict, dict):
            raise TypeError(f"state_dict must be a dict, got {type(state_dict).__name__}")
        missing = {"kind", "num_samples", "batch_size", "epoch", "cursor", "plan", "offsets", "log_p", "state"}
        missing -= state_dict.keys()
        if missing:
            raise KeyError(f"state_dict is missing {sorted(missing)}")
        mine = {"kind": type(self).__name__, "num_samples": self.num_samples, "batch_size": self.batch_size}
        mine |= {"rank": self.rank, "world_size": self.world_size, "seed": self.seed}
        for key, value in mine.items():
            got = state_dict.get(key, 1 if key == "world_size" else 0 if key == "rank" else value)
            if type(got) is not type(value) or got != value:
                raise ValueError(f"state_dict[{key!r}] is {got!r}, this selector has {value!r}")
        config = state_dict.get("config", self._config())  # dicts saved before configs were recorded
        if config != self._config():
            raise ValueError(f"state_dict['config'] is {config!r}, this selector has {self._config()!r}")
        epoch = _checks.check_int("state_dict['epoch']", state_dict["epoch"], minimum=0)
        cursor = _checks.check_int("state_dict['cursor']", state_dict["cursor"], minimum=0)
        plan, offsets = _checks.check_saved_plan(
            state_dict["plan"], state_dict["offsets"], cursor, len(self), self.batch_size, self._shard
        )
        log_p = _checks.check_saved_log_p(state_dict["log_p"], self.num_local)
        checked = self._check_state(state_dict["state"])
        numerics = state_dict.get("numerics")
        if numerics is not None and numerics != self._numerics():
            warnings.warn(
                f"state_dict was saved with {numerics}, this selector runs with {self._numerics()}: the "
                "uncertainty may differ in its last bits, and the batches from those of an uninterrupted run",
                stacklevel=2,
            )
        # Everything is checked and copied: from here on nothing can fail.
        self.epoch, self._cursor, self._plan, self._offsets, self._log_p = epoch, cursor, plan, offsets, log_p
        self._load_state(checked)

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
