"""The public functional API of docs/spec.md: one function per op, backend choice in one place.

Every function takes ``backend="auto" | "torch" | "cpu" | "triton" | "cuda"``; the default
comes from the ``UBS_BACKEND`` environment variable, else ``"auto"``. ``"auto"`` picks the
fastest backend built for the op on the device of its inputs and falls back to ``"torch"``
(the plain-PyTorch reference of :mod:`ubs_kernels.reference`), which serves every op on every
device. Arguments are checked here, before any backend runs, so that a bad call raises a
clear error and leaves the state untouched.

Ops (equation numbers of Zhou et al., AAAI 2025):

* :func:`observe` - one training step: history ring write, Eq. 1, 4, 5 and the bin, in place.
* :func:`record` - the ring write of :func:`observe` alone (U later, by :func:`uncertainty`).
* :func:`stage` / :func:`observe_staged` - a step's observation appended to a buffer, and the
  buffered steps applied at once: the result of :func:`observe` per step, at a fraction of the
  cost in a training loop (CPU).
* :func:`uncertainty` - Eq. 5 and the bins for all n rows from the history.
* :func:`label_mi` - Eq. 6 for every label pair (or its row sums).
* :func:`selection_log_probs` - Eq. 7-10 fused: ``log P`` of every sample.
* :func:`plan_weighted` - one selection epoch's batches, successive sampling from P (CPU).
* :func:`selection_pressure` - Eq. 11 (a scalar schedule, no backend).
"""

from __future__ import annotations

import functools
import os

import torch

from . import _checks, reference, sampling
from ._native import native_ops

BACKENDS = ("auto", "torch", "cpu", "triton", "cuda")
NATIVE_BACKENDS = ("cpu", "cuda")  # the C++/CUDA kernels: they check their arguments themselves

# The ops, each with a torch reference, a native kernel registered as ubs_kernels::<op> per
# device where this build has one (csrc/registration.cpp holds the schemas), and a Triton
# kernel as ubs_kernels::<op>_triton where ubs_kernels.triton registered one. Dispatch asks
# the dispatcher which of them this build has for the device at hand.
OPS = (
    "observe",
    "record",
    "stage",
    "observe_staged",
    "uncertainty",
    "label_mi",
    "selection_log_probs",
    "plan_weighted",
)

selection_pressure = reference.selection_pressure


def available_backends(op: str, device: torch.device | str) -> list[str]:
    """The backends that can run ``op`` on ``device`` in this build, fastest first."""
    device = torch.device(device)
    # What is registered does not change while the process runs, except whether Triton may
    # run on the CPU (TRITON_INTERPRET): cache on that.
    return list(_available_backends(op, device.type, os.environ.get("TRITON_INTERPRET") == "1"))


@functools.lru_cache(maxsize=64)
def _available_backends(op: str, device_type: str, interpret: bool) -> tuple[str, ...]:
    found = []
    key = {"cpu": "CPU", "cuda": "CUDA"}.get(device_type)
    if op not in OPS:
        raise ValueError(f"op must be one of {OPS}, got {op!r}")
    # Order is the "auto" preference: native, then Triton, then the reference. On CUDA the
    # native kernels stay first until the GPU benchmarks say otherwise (bench/RESULTS.md).
    if key is not None and native_ops.has_kernel(op, key):
        found.append(device_type)
    if _triton_available(op, device_type, interpret):
        found.append("triton")
    found.append("torch")
    return tuple(found)


def _triton_available(op: str, device_type: str, interpret: bool) -> bool:
    """Triton runs on CUDA devices, and on the CPU only under ``TRITON_INTERPRET=1``."""
    if device_type not in ("cpu", "cuda") or (device_type == "cpu" and not interpret):
        return False
    from . import triton as triton_backend

    return triton_backend.available(op, torch.device(device_type))


def _call(op: str, backend: str, *args):
    """Run the registered kernel of ``op`` for a non-torch ``backend``."""
    name = f"{op}_triton" if backend == "triton" else op
    return getattr(torch.ops.ubs_kernels, name)(*args)


def resolve_backend(op: str, device: torch.device | str, backend: str | None = None) -> str:
    """The backend that :mod:`ops` will use for ``op`` on ``device``."""
    from_env = backend is None
    if from_env:
        backend = os.environ.get("UBS_BACKEND", "auto")
    elif not isinstance(backend, str):
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    device_type = device.type if isinstance(device, torch.device) else torch.device(device).type
    # Called at every step: cached on everything it reads. Only "auto" and "triton" depend on
    # TRITON_INTERPRET, so a named native or torch backend costs no environment read.
    interpret = backend in ("auto", "triton") and os.environ.get("TRITON_INTERPRET") == "1"
    return _resolve_backend(op, device_type, backend, from_env, interpret)


@functools.lru_cache(maxsize=256)
def _resolve_backend(op: str, device_type: str, backend: str, from_env: bool, interpret: bool) -> str:
    if backend not in BACKENDS:
        name = "UBS_BACKEND" if from_env else "backend"
        raise ValueError(f"{name} must be one of {BACKENDS}, got {backend!r}")
    available = _available_backends(op, device_type, interpret)
    if backend == "auto":
        return available[0]
    if backend not in available:
        raise RuntimeError(
            f"backend={backend!r} cannot run ubs_kernels.{op} on {torch.device(device_type)} in this build "
            f"(available: {list(available)}); see ubs_kernels.build_info()"
        )
    return backend


def _checks_values(backend: str) -> bool:
    """Whether Python must check the values for ``backend``: the native kernels check index
    range, duplicates, counts and probabilities themselves before writing (CUDA on the device,
    without a sync per check), and under torch.compile data-dependent Python checks cannot be
    traced."""
    return backend in ("torch", "triton") and not torch.compiler.is_compiling()


def _detached(t: torch.Tensor) -> torch.Tensor:
    """``t`` without autograd history (the kernels have no backward); a view only when needed,
    since a step calls it."""
    return t.detach() if t.requires_grad else t


def _checked_step(history, seen, indices, probs, backend: str, logits: bool = False):
    """One step's ``indices`` and ``probs`` against a checked state (values where
    :func:`_checks_values`), the probabilities detached; with ``logits``, ``probs`` holds
    logits (no NaN; checked here whatever the backend) and their float32 sigmoid is returned."""
    n, q = history.shape[0], history.shape[2]
    values = _checks_values(backend)
    indices = _checks.check_indices(indices, n, history.device, values)
    if values:  # a negative count would address a slot outside the sample's ring
        _checks.check_seen_at(seen, indices, n)
    if logits:
        x = _checks.check_logits(probs, indices.numel(), q, history.device, not torch.compiler.is_compiling())
        return indices, torch.sigmoid(_detached(x).to(torch.float32))
    return indices, _detached(_checks.check_probs(probs, indices.numel(), q, history.device, values))


def observe(
    history: torch.Tensor,
    seen: torch.Tensor,
    uncertainty: torch.Tensor,
    bins: torch.Tensor,
    indices: torch.Tensor,
    probs: torch.Tensor,
    lam: float = 0.5,
    tau: int = 10,
    backend: str | None = None,
    logits: bool = False,
) -> None:
    """Record one training step's predictions and refresh those samples' U and bins.

    Args:
        history: ``(n, T, q)`` float16/float32 ring of each sample's last T predictions. In place.
        seen: ``(n,)`` int64 observation counts, >= 0; sample i's next prediction goes to slot
            ``seen[i] % T``. In place.
        uncertainty: ``(n, q)`` float32 U (Eq. 5). In place, rows ``indices`` only.
        bins: ``(n, q)`` uint8, ``min(floor(U * tau), tau - 1)``. In place, rows ``indices`` only.
        indices: ``(b,)`` distinct integer sample ids in ``[0, n)``.
        probs: ``(b, q)`` probabilities after sigmoid, finite and in [0, 1]; float32, float16,
            bfloat16 or float64. Detached internally.
        lam: λ1 of Eq. 5, in [0, 1].
        tau: bins per label, in [2, 256].
        logits: ``probs`` holds logits (anything but NaN): their float32 ``torch.sigmoid`` is observed.

    Raises ``TypeError``/``ValueError``/``IndexError`` naming the bad argument; nothing is
    written then.
    """
    _checks.check_state(history, seen, uncertainty, bins)
    chosen = resolve_backend("observe", history.device, backend)
    indices, probs = _checked_step(history, seen, indices, probs, chosen, logits)
    lam, tau = _checks.check_lam(lam), _checks.check_tau(tau)
    if indices.numel() == 0:
        return
    if chosen == "torch":
        with torch.no_grad():
            reference.observe(history, seen, uncertainty, bins, indices, probs, lam, tau)
    else:
        _call("observe", chosen, history, seen, uncertainty, bins, indices.long(), probs, lam, tau)


def record(
    history: torch.Tensor,
    seen: torch.Tensor,
    indices: torch.Tensor,
    probs: torch.Tensor,
    backend: str | None = None,
    logits: bool = False,
) -> None:
    """The ring write and count of :func:`observe` without refreshing U and the bins.

    For a caller that needs U only now and then (the selector, at each epoch boundary): record
    every step, then :func:`uncertainty` gives exactly the U and bins that :func:`observe` would
    have left for every observed sample (the same row computation). Arguments, checks and
    errors as :func:`observe`; nothing is written when a check fails.
    """
    _checks.check_state(history, seen)
    chosen = resolve_backend("record", history.device, backend)
    indices, probs = _checked_step(history, seen, indices, probs, chosen, logits)
    if indices.numel() == 0:
        return
    if chosen == "torch":
        with torch.no_grad():
            reference.record(history, seen, indices, probs)
    else:
        _call("record", chosen, history, seen, indices.long(), probs)


def stage(
    staged_indices: torch.Tensor,
    staged_probs: torch.Tensor,
    offset: int,
    indices: torch.Tensor,
    probs: torch.Tensor,
    num_samples: int,
    logits: bool = False,
    backend: str | None = None,
) -> None:
    """Check one training step's observation and append it to a staging buffer.

    The per-step half of :func:`observe_staged`: ``indices`` go to ``staged_indices[offset :
    offset + b]`` and ``probs``, rounded to the buffer's dtype as the ring write rounds them, to
    the same rows of ``staged_probs``. Nothing else is written, so a step costs a contiguous
    copy instead of ``b`` ring writes scattered over the history.

    Args:
        staged_indices: ``(capacity,)`` int64 buffer. In place, rows ``[offset, offset + b)``.
        staged_probs: ``(capacity, q)`` buffer of the history dtype (float16/float32). In place.
        offset: first row to write; ``offset + b <= capacity``.
        indices: ``(b,)`` distinct integer sample ids in ``[0, num_samples)``.
        probs: ``(b, q)`` probabilities after sigmoid, finite and in [0, 1]; float32, float16,
            bfloat16 or float64.
        num_samples: n.
        logits: ``probs`` holds logits (anything but NaN): the buffer gets their sigmoid,
            computed in float32 (the native kernel's exp is within ~2 ulp, so a value may differ
            from ``torch.sigmoid``'s in its last float32 bit; rounded to float16 they agreed on
            every one of 200,000 values from -100 to 100).

    Raises as :func:`observe` for bad ``indices`` or ``probs``; nothing is written then.
    """
    device = staged_probs.device if torch.is_tensor(staged_probs) else None
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples must be an integer >= 1, got {num_samples!r}")
    chosen = resolve_backend("stage", device if device is not None else "cpu", backend)
    values = _checks_values(chosen)
    b = indices.shape[0] if torch.is_tensor(indices) and indices.dim() == 1 else 0
    _, q = _checks.check_staging(staged_indices, staged_probs, offset, b)
    indices = _checks.check_indices(indices, num_samples, device, values)
    check = _checks.check_logits if logits else _checks.check_probs
    probs = _detached(check(probs, indices.numel(), q, device, values))
    if chosen == "torch":
        with torch.no_grad():
            reference.stage(staged_indices, staged_probs, offset, indices, probs, bool(logits))
    else:
        _call("stage", chosen, staged_indices, staged_probs, offset, indices.long(), probs, num_samples, bool(logits))


def observe_staged(
    history: torch.Tensor,
    seen: torch.Tensor,
    uncertainty: torch.Tensor,
    bins: torch.Tensor,
    staged_indices: torch.Tensor,
    staged_probs: torch.Tensor,
    lam: float = 0.5,
    tau: int = 10,
    backend: str | None = None,
) -> None:
    """Apply staged training steps (:func:`stage`) in the order they were staged.

    Leaves ``history``, ``seen``, ``uncertainty`` and ``bins`` exactly as :func:`observe` would
    have, called for each staged step in turn: a sample may appear in several steps, and its
    rows are applied in order. U and the bins change for the staged samples only.

    Args:
        history, seen, uncertainty, bins, lam, tau: as :func:`observe`.
        staged_indices: ``(m,)`` integer sample ids in ``[0, n)``; repeats allowed.
        staged_probs: ``(m, q)`` of the history dtype, finite and in [0, 1].

    Raises ``TypeError``/``ValueError``/``IndexError`` naming the bad argument; nothing is
    written then.
    """
    n, q = _checks.check_state(history, seen, uncertainty, bins)
    chosen = resolve_backend("observe_staged", history.device, backend)
    values = _checks_values(chosen)
    staged_indices, staged_probs = _checks.check_staged(staged_indices, staged_probs, history, values)
    if values:
        _checks.check_seen_at(seen, staged_indices, n)
    lam, tau = _checks.check_lam(lam), _checks.check_tau(tau)
    if staged_indices.numel() == 0:
        return
    if chosen == "torch":
        with torch.no_grad():
            reference.observe_staged(history, seen, uncertainty, bins, staged_indices, staged_probs, lam, tau)
    else:
        _call("observe_staged", chosen, history, seen, uncertainty, bins, staged_indices.long(), staged_probs, lam, tau)


def uncertainty(
    history: torch.Tensor, seen: torch.Tensor, lam: float = 0.5, tau: int = 10, backend: str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """U (Eq. 5) and bins of all n samples from the history: ``((n, q) float32, (n, q) uint8)``.

    Rows of samples never observed are 0. A negative ``seen`` raises ``ValueError`` (on CUDA
    that reads one flag back from the device; the raw CUDA op does not check it and gives 0 rows).
    """
    _checks.check_state(history, seen)
    lam, tau = _checks.check_lam(lam), _checks.check_tau(tau)
    chosen = resolve_backend("uncertainty", history.device, backend)
    # The native CPU kernel rejects a negative count itself; the others are checked here.
    if chosen != "cpu" and not torch.compiler.is_compiling():
        _checks.check_seen(seen)
    if chosen != "torch":
        u, b = _call("uncertainty", chosen, history, seen, lam, tau)
        return u, b
    with torch.no_grad():
        return reference.uncertainty(history, seen, lam, tau)


def label_mi(bins: torch.Tensor, tau: int = 10, rowsum: bool = False, backend: str | None = None) -> torch.Tensor:
    """Mutual information (Eq. 6, natural log) between every pair of label columns.

    Args:
        bins: ``(n, q)`` integer tensor in ``[0, tau)``, the binned U of the observed samples.
        tau: number of bins, in [2, 256].
        rowsum: return ``c = C 1`` of shape ``(q,)`` instead of the ``(q, q)`` matrix.

    Returns float32 ``C`` with ``C_aa = 1`` (as in the paper), or its row sums. With ``n = 0``
    every off-diagonal entry is 0.
    """
    tau = _checks.check_tau(tau)
    bins = _checks.check_bins(bins, tau)
    chosen = resolve_backend("label_mi", bins.device, backend)
    if chosen != "torch":
        # The native and Triton kernels take uint8 bins; values were range-checked above.
        return _call("label_mi", chosen, bins.to(torch.uint8).contiguous(), tau, rowsum)
    n = bins.shape[0]
    # One-hot Gram counts are exact in float32 up to 2^24 rows; beyond that use float64.
    dtype = torch.float32 if n < (1 << 24) else torch.float64
    with torch.no_grad():
        return reference.label_mi(bins, tau, rowsum=rowsum, dtype=dtype).to(torch.float32)


def selection_log_probs(
    uncertainty: torch.Tensor,
    c: torch.Tensor,
    seen: torch.Tensor,
    pressure: float,
    backend: str | None = None,
) -> torch.Tensor:
    """Eq. 7-10 fused: ``log P`` (``(n,)`` float32) of drawing each sample next epoch.

    ``w = U c`` (Eq. 7-8), min-max normalised over the observed samples (``seen > 0``) to
    ``z`` (never-observed samples get ``z = 1``), ``Q = floor((1 - z) n)`` (Eq. 9) and
    ``log P = -ln(pressure) Q / n - logsumexp`` (Eq. 10). ``pressure`` is ``s_t`` of Eq. 11.

    A non-finite ``c``, or a non-finite ``w`` of an observed sample, raises ``ValueError`` (the
    raw CUDA op checks neither: its result is undefined then).
    """
    _checks.check_weights_args(uncertainty, c, seen)
    pressure = _checks.check_pressure(pressure)
    chosen = resolve_backend("selection_log_probs", uncertainty.device, backend)
    # The native CPU kernel checks w itself; the others are checked here.
    if chosen != "cpu" and not torch.compiler.is_compiling():
        _checks.check_weights_finite(uncertainty, c, seen)
    if chosen != "torch":
        return _call(
            "selection_log_probs",
            chosen,
            uncertainty.to(torch.float32).contiguous(),
            c.to(torch.float32).contiguous(),
            seen,
            pressure,
        )
    with torch.no_grad():
        return reference.selection_log_probs(uncertainty, c, seen, pressure).to(torch.float32)


def plan_weighted(
    log_p: torch.Tensor, batch_size: int, batches: int, generator: torch.Generator, backend: str | None = None
) -> torch.Tensor:
    """One selection epoch: ``batches`` independent batches of ``min(batch_size, support)``
    distinct samples, each drawn by successive sampling from ``P = softmax(log_p)``
    (:mod:`ubs_kernels.sampling` explains the algorithm; the law of
    ``numpy.random.Generator.choice(n, b, replace=False, p=P)`` per batch).

    Args:
        log_p: ``(n,)`` floating log-probabilities on any device: no NaN or ``+inf``, at least
            one finite (``-inf``: never drawn). The plan is made on the CPU.
        batch_size: b >= 1.
        batches: number of batches >= 0.
        generator: a CPU ``torch.Generator`` (:func:`ubs_kernels.sampling.epoch_generator`).
        backend: ``"cpu"`` (the native kernel) or ``"torch"`` (:func:`ubs_kernels.sampling.plan_weighted`):
            the same plan from the same random numbers.

    Returns a CPU ``(batches, min(batch_size, support))`` int64 tensor, row r the samples of
    batch r in the order drawn.
    """
    log_p = _checks.check_log_p(log_p).detach().to("cpu")
    batch_size = _checks.check_int("batch_size", batch_size, minimum=1)
    batches = _checks.check_int("batches", batches, minimum=0)
    if not isinstance(generator, torch.Generator) or generator.device.type != "cpu":
        raise TypeError(f"generator must be a CPU torch.Generator, got {generator!r}")
    chosen = resolve_backend("plan_weighted", "cpu", backend)
    if chosen == "torch":
        return sampling.plan_weighted(log_p, batch_size, batches, generator)
    return _call("plan_weighted", chosen, log_p, batch_size, batches, generator)


def cpu_isa() -> str:
    """The instruction-set path of the native CPU uncertainty rows now (``"avx512"``, ``"avx2"``,
    ``"neon"``, ``"portable"``; ``UBS_CPU_ISA`` caps it), or ``"torch"`` without the native
    extension. U computed on different paths agrees to float32 rounding, not bit for bit."""
    return torch.ops.ubs_kernels.cpu_isa() if native_ops.loaded else "torch"


def label_mi_isa() -> str:
    """The instruction-set path of the native CPU label_mi's pair counting now (``"avx512"``,
    ``"avx2"``, ``"popcnt"``, ``"neon"``, ``"portable"``; with ``UBS_CPU_ISA=auto`` the fastest
    measured on this CPU), or ``"torch"`` without the native extension. Every path gives the same bits."""
    return torch.ops.ubs_kernels.label_mi_isa() if native_ops.loaded else "torch"


def _fake_same_device(**tensors) -> None:
    """The device check of the native kernels, in their fake kernels: a call that mixes a
    ``meta`` tensor with real ones dispatches to the fake kernel, which must refuse it as the
    real one would (under torch.compile every tensor reports the same fake device)."""
    (first, ref), *rest = tensors.items()
    for name, t in rest:
        if t.device != ref.device:
            raise ValueError(f"all tensors must be on the device of {first} ({ref.device}), got {name} on {t.device}")


# Fake (meta) kernels of the native ops, for torch.compile and opcheck.
if native_ops.loaded:

    @torch.library.register_fake("ubs_kernels::observe")
    def _observe_fake(history, seen, uncertainty, bins, indices, probs, lam, tau):
        _fake_same_device(history=history, seen=seen, uncertainty=uncertainty, bins=bins, indices=indices, probs=probs)

    @torch.library.register_fake("ubs_kernels::record")
    def _record_fake(history, seen, indices, probs):
        _fake_same_device(history=history, seen=seen, indices=indices, probs=probs)

    @torch.library.register_fake("ubs_kernels::stage")
    def _stage_fake(staged_indices, staged_probs, offset, indices, probs, num_samples, logits=False):
        _fake_same_device(staged_probs=staged_probs, staged_indices=staged_indices, indices=indices, probs=probs)

    @torch.library.register_fake("ubs_kernels::observe_staged")
    def _observe_staged_fake(history, seen, uncertainty, bins, staged_indices, staged_probs, lam, tau):
        _fake_same_device(
            history=history,
            seen=seen,
            uncertainty=uncertainty,
            bins=bins,
            staged_indices=staged_indices,
            staged_probs=staged_probs,
        )

    @torch.library.register_fake("ubs_kernels::plan_weighted")
    def _plan_weighted_fake(log_p, batch_size, batches, generator=None):
        # min(batch_size, samples with P > 0): data-dependent
        return log_p.new_empty((batches, torch.library.get_ctx().new_dynamic_size()), dtype=torch.int64)

    @torch.library.register_fake("ubs_kernels::label_mi")
    def _label_mi_fake(bins, tau, rowsum=False):
        q = bins.shape[1]
        return bins.new_empty((q,) if rowsum else (q, q), dtype=torch.float32)

    @torch.library.register_fake("ubs_kernels::uncertainty")
    def _uncertainty_fake(history, seen, lam, tau):
        _fake_same_device(history=history, seen=seen)
        n, _, q = history.shape
        return history.new_empty((n, q), dtype=torch.float32), history.new_empty((n, q), dtype=torch.uint8)

    @torch.library.register_fake("ubs_kernels::selection_log_probs")
    def _selection_log_probs_fake(uncertainty, c, seen, pressure):
        _fake_same_device(uncertainty=uncertainty, c=c, seen=seen)
        return uncertainty.new_empty((uncertainty.shape[0],), dtype=torch.float32)
