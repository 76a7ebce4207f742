"""The observation state of the uncertainty selector: each sample's last T predictions, how
many times it was observed, and its U (docs/spec.md Eq. 1, 4, 5) and bins, and how a training step
is written into them.

Two ways of writing a step, chosen once at construction from the device (:meth:`History.choose`):

* ``"staged"`` (the CPU): a step is checked and copied into a staging buffer
  (:func:`ubs_kernels.ops.stage`); the buffered steps reach the rings, counts, U and bins of
  the samples they touch when the state is next read (:func:`ubs_kernels.ops.observe_staged`).
  In a training loop the model evicts the caches between steps, and writing ``b`` scattered
  rings per step cost several times the contiguous copy (bench/RESULTS.md).
* ``"recorded"`` (CUDA and the rest): each step is written into the rings and counts
  (:func:`ubs_kernels.ops.record`); U and the bins come from one whole-matrix pass
  (:func:`ubs_kernels.ops.uncertainty`) when next read.

Both leave exactly the state that :func:`ubs_kernels.ops.observe` per step would. Every write
goes through :mod:`ubs_kernels.ops`, which checks the step before anything is written.
"""

from __future__ import annotations

import torch

from . import _checks, ops

HISTORY_DTYPES = (torch.float16, torch.float32)


class History:
    """Rings ``(n, T, q)``, counts ``(n,)``, U ``(n, q)`` float32 and bins ``(n, q)`` uint8.

    Args:
        num_samples, num_labels, window: n, q and T.
        lam, tau: λ1 of Eq. 5 and the bins per label.
        dtype: ``torch.float16`` or ``torch.float32`` rings.
        device: where the state lives (a resolved ``torch.device``).
        backend: op backend (:mod:`ubs_kernels.ops`), or None for the default.
        stage_rows, batch_size: a staging buffer holds ``stage_rows`` (one epoch of steps), at most
            ``STAGE_BYTES`` but never less than one batch.
        strategy: ``"staged"`` or ``"recorded"``; None: :meth:`choose`.
    """

    # The ops each strategy writes and reads the state with.
    OPS = {"staged": ("stage", "observe_staged", "observe"), "recorded": ("record", "uncertainty")}
    # Largest staging buffer: one epoch of steps, or this many bytes (a full buffer is applied).
    STAGE_BYTES = 64 << 20
    # Largest U + bins block of one whole-matrix refresh (its only scratch).
    REFRESH_BLOCK_BYTES = 64 << 20

    def __init__(
        self,
        num_samples: int,
        num_labels: int,
        window: int,
        lam: float,
        tau: int,
        dtype: torch.dtype,
        device: torch.device,
        backend: str | None = None,
        stage_rows: int = 0,
        batch_size: int = 1,
        strategy: str | None = None,
    ) -> None:
        if dtype not in HISTORY_DTYPES:
            raise TypeError(f"history_dtype must be torch.float16 or torch.float32, got {dtype}")
        self.num_samples, self.num_labels, self.window = num_samples, num_labels, window
        self.lam, self.tau, self.dtype, self.device, self.backend = lam, tau, dtype, device, backend
        self.strategy = self.choose(device, backend) if strategy is None else strategy
        if self.strategy not in self.OPS:
            raise ValueError(f"strategy must be 'staged' or 'recorded', got {self.strategy!r}")
        # Resolved once: a step then names its backend, and the ops read no environment for it.
        self.backends = {op: ops.resolve_backend(op, device, backend) for op in self.OPS[self.strategy]}
        n, q = num_samples, num_labels
        self.capacity = self.stage_capacity(stage_rows, batch_size, q, dtype) if self.strategy == "staged" else 0
        self._rings = torch.zeros((n, window, q), dtype=dtype, device=device)
        self._seen = torch.zeros(n, dtype=torch.int64, device=device)
        self._u = torch.zeros((n, q), dtype=torch.float32, device=device)
        self._bins = torch.zeros((n, q), dtype=torch.uint8, device=device)
        self._stage_indices = torch.zeros(self.capacity, dtype=torch.int64, device=device)
        self._stage_values = torch.zeros((self.capacity, q), dtype=dtype, device=device)
        self.pending = 0  # staged rows not yet applied
        self._stale = False  # recorded steps since U and the bins were computed

    @staticmethod
    def choose(device: torch.device, backend: str | None) -> str:
        """``"staged"`` where a stage kernel serves the device (the CPU), else ``"recorded"``."""
        staged = device.type == "cpu" and ops.resolve_backend("stage", device, backend) in ("cpu", "torch")
        return "staged" if staged else "recorded"

    @classmethod
    def stage_capacity(cls, rows: int, batch_size: int, num_labels: int, dtype: torch.dtype) -> int:
        """Rows of the staging buffer: ``rows``, at most ``STAGE_BYTES`` but at least a batch."""
        return min(rows, max(batch_size, cls.STAGE_BYTES // cls._row_bytes(num_labels, dtype)))

    @staticmethod
    def _row_bytes(num_labels: int, dtype: torch.dtype) -> int:
        return num_labels * (2 if dtype == torch.float16 else 4) + 8

    @classmethod
    def memory_bytes_for(cls, num_samples: int, num_labels: int, window: int, dtype: torch.dtype, capacity: int) -> int:
        """Bytes of a history of these sizes with ``capacity`` staging rows: ``n (T q h + 5 q + 8)
        + capacity (q h + 8)``, ``h`` = 2 for float16, 4 for float32 (known before allocating)."""
        h = 2 if dtype == torch.float16 else 4
        per_sample = window * num_labels * h + 5 * num_labels + 8
        return num_samples * per_sample + capacity * cls._row_bytes(num_labels, dtype)

    def memory_bytes(self) -> int:
        return self.memory_bytes_for(self.num_samples, self.num_labels, self.window, self.dtype, self.capacity)

    # ------------------------------------------------------------------ one step
    def observe(self, indices: torch.Tensor, values: torch.Tensor, logits: bool) -> None:
        """One step: ``values`` ``(b, q)`` are probabilities, or logits with ``logits``; the
        tensors are on :attr:`device`. Bad input raises and writes nothing."""
        if self.strategy == "staged":
            self._stage(indices, values, logits)
        else:
            self._record(indices, values, logits)

    def _stage(self, indices, values, logits) -> None:
        b = indices.shape[0] if indices.dim() == 1 else 0
        if b > self.capacity:  # larger than the buffer: observed at once, U and bins included
            self.apply()
            ops.observe(
                self._rings,
                self._seen,
                self._u,
                self._bins,
                indices,
                values,
                self.lam,
                self.tau,
                backend=self.backends["observe"],
                logits=logits,
            )
            return
        if self.pending + b > self.capacity:
            self.apply()
        ops.stage(
            self._stage_indices,
            self._stage_values,
            self.pending,
            indices,
            values,
            self.num_samples,
            logits=logits,
            backend=self.backends["stage"],
        )
        self.pending += b

    def _record(self, indices, values, logits) -> None:
        ops.record(self._rings, self._seen, indices, values, backend=self.backends["record"], logits=logits)
        self._stale = True

    # ------------------------------------------------------------------ reading the state
    def apply(self) -> None:
        """Apply the staged steps to the rings, counts, U and bins, and empty the buffer."""
        k = self.pending
        if k == 0:
            return
        ops.observe_staged(
            self._rings,
            self._seen,
            self._u,
            self._bins,
            self._stage_indices[:k],
            self._stage_values[:k],
            self.lam,
            self.tau,
            backend=self.backends["observe_staged"],
        )
        self.pending = 0

    def refresh(self) -> None:
        """Bring U and the bins up to date with every observation.

        Staged: the buffer is applied. Recorded: U and the bins of every sample from its ring
        (:func:`ubs_kernels.ops.uncertainty`, the row computation of :func:`ubs_kernels.ops.observe`
        at the sample's last observation), in row blocks of at most ``REFRESH_BLOCK_BYTES``.
        """
        self.apply()
        if not self._stale:
            return
        n, q = self.num_samples, self.num_labels
        rows = max(1, self.REFRESH_BLOCK_BYTES // (5 * q))
        if rows >= n:  # one block: take the fresh outputs as they are
            self._u, self._bins = ops.uncertainty(
                self._rings, self._seen, self.lam, self.tau, backend=self.backends["uncertainty"]
            )
        else:
            for a in range(0, n, rows):
                u, b = ops.uncertainty(
                    self._rings[a : a + rows],
                    self._seen[a : a + rows],
                    self.lam,
                    self.tau,
                    backend=self.backends["uncertainty"],
                )
                self._u[a : a + rows].copy_(u)
                self._bins[a : a + rows].copy_(b)
        self._stale = False

    @property
    def rings(self) -> torch.Tensor:
        """``(n, T, q)`` each sample's last T predictions (every observation applied)."""
        self.apply()
        return self._rings

    @property
    def seen(self) -> torch.Tensor:
        """``(n,)`` int64 observation counts (every observation applied)."""
        self.apply()
        return self._seen

    @property
    def uncertainty(self) -> torch.Tensor:
        """``(n, q)`` float32 U, up to date (a refresh may return a new tensor)."""
        self.refresh()
        return self._u

    @property
    def bins(self) -> torch.Tensor:
        """``(n, q)`` uint8 ``min(floor(U tau), tau - 1)``, up to date."""
        self.refresh()
        return self._bins

    # ------------------------------------------------------------------ checkpoints
    def state(self) -> dict[str, torch.Tensor]:
        """The four state tensors, up to date (the selector's checkpoint holds CPU copies)."""
        self.refresh()
        return {"history": self._rings, "seen": self._seen, "uncertainty": self._u, "bins": self._bins}

    def check(self, state: dict) -> dict[str, torch.Tensor]:
        """Validate a saved :meth:`state` as data and return it copied onto :attr:`device`,
        without touching this history. Raises ``TypeError``/``ValueError`` naming the entry."""
        n, q, T = self.num_samples, self.num_labels, self.window
        specs = {
            "history": (self.dtype, (n, T, q)),
            "seen": (torch.int64, (n,)),
            "uncertainty": (torch.float32, (n, q)),
            "bins": (torch.uint8, (n, q)),
        }
        out = _checks.check_saved_tensors(state, specs, self.device)
        rings, seen, u, bins = out["history"], out["seen"], out["uncertainty"], out["bins"]
        _checks.check_saved_values("history", rings, 0.0, 1.0)
        _checks.check_saved_values("seen", seen, 0, _checks.MAX_SEEN)
        _checks.check_saved_values("uncertainty", u, 0.0, 1.0)
        expected = torch.clamp((u * self.tau).floor_(), max=self.tau - 1).to(torch.uint8)
        expected[seen == 0] = 0
        if not torch.equal(bins, expected):
            i, j = (bins != expected).nonzero()[0].tolist()
            raise ValueError(
                f"state_dict['state']['bins'] must be min(floor(uncertainty * tau), tau - 1) with tau = {self.tau} "
                f"(0 where seen is 0): bins[{i}, {j}] = {int(bins[i, j])}, expected {int(expected[i, j])}"
            )
        unobserved = (seen == 0).unsqueeze(1) & (u != 0)
        if bool(unobserved.any()):
            i = int(unobserved.nonzero()[0, 0])
            raise ValueError(f"state_dict['state']['uncertainty'] row {i} must be 0: that sample was never observed")
        return out

    def load(self, checked: dict[str, torch.Tensor]) -> None:
        """Take tensors that :meth:`check` returned; steps staged before are dropped."""
        self._rings, self._seen = checked["history"], checked["seen"]
        self._u, self._bins = checked["uncertainty"], checked["bins"]
        self.pending, self._stale = 0, False
