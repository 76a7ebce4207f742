"""Argument checks shared by every backend of :mod:`ubs_kernels.ops`.

Every check runs before any state is written, so a bad call leaves the state exactly as it
was. Messages name the argument and what was expected. The exception classes match the
native ``TORCH_CHECK_*`` macros: ``TypeError`` for dtypes, ``IndexError`` for indices out of
range, ``ValueError`` for everything else.
"""

from __future__ import annotations

import numbers

import torch

MAX_TAU = 256  # bins are stored as uint8

_INT_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)
_PROB_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
_HISTORY_DTYPES = (torch.float16, torch.float32)


def check_int(name: str, value, minimum: int | None = None, maximum: int | None = None) -> int:
    """An integer (not a bool, a float or a string) in ``[minimum, maximum]``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}")
    value = int(value)
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        lo = "" if minimum is None else f">= {minimum}"
        hi = "" if maximum is None else f"<= {maximum}"
        raise ValueError(f"{name} must be an integer {' and '.join(x for x in (lo, hi) if x)}, got {value}")
    return value


def check_real(name: str, value) -> float:
    """A real number (int or float, numpy's too; not a bool, a string or None) as a float."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    return float(value)


def check_tau(tau, name: str = "tau") -> int:
    if isinstance(tau, bool) or not isinstance(tau, numbers.Integral):
        raise TypeError(f"{name} must be an integer in [2, {MAX_TAU}], got {type(tau).__name__} {tau!r}")
    if not 2 <= tau <= MAX_TAU:
        raise ValueError(f"{name} must be an integer in [2, {MAX_TAU}], got {tau!r}")
    return int(tau)


def check_lam(lam, name: str = "lam") -> float:
    lam = check_real(name, lam)
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {lam!r}")
    return lam


def check_pressure(pressure, name: str = "pressure") -> float:
    pressure = check_real(name, pressure)
    if not pressure >= 1.0 or pressure == float("inf"):
        raise ValueError(f"{name} must be a finite number >= 1, got {pressure!r}")
    return pressure


def check_device(device, name: str = "device") -> torch.device:
    """The one device that ``device`` names, with its index: PyTorch's spellings of a device
    (``"cuda"``, ``"cuda:0"``, ``torch.device("cuda")``, ``0``) all resolve to the same
    ``torch.device``, so state made on it compares equal to the device of any tensor there.

    ``"cuda"`` without an index is the current CUDA device (as for tensor creation); ``"cpu"``
    has no index (``"cpu:0"`` is ``"cpu"``, as tensors report it).
    """
    if isinstance(device, bool) or not isinstance(device, (str, int, torch.device)):
        raise TypeError(f"{name} must be a torch.device, a string such as 'cuda:0', or an index, got {device!r}")
    try:
        device = torch.device(device)
    except (RuntimeError, ValueError) as exc:
        raise ValueError(f"{name} must name a device such as 'cpu' or 'cuda:0', got {device!r}") from exc
    if device.type == "cpu":
        return torch.device("cpu")
    if device.type == "meta":
        raise ValueError(f"{name} must be a device that holds data, got {device}")
    module = getattr(torch, device.type, None)
    is_available = getattr(module, "is_available", None)
    if is_available is not None and not is_available():
        raise ValueError(f"{name} is {device}, but torch sees no {device.type} device here")
    if device.index is None:
        current = getattr(module, "current_device", None)
        device = torch.device(device.type, current() if current is not None else 0)
    return device


def _tensor(name: str, t) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    return t


def check_data(name: str, t) -> torch.Tensor:
    """A dense tensor with values (not on ``meta``, not sparse), which a selector may move to its
    device: what :meth:`observe` takes from the training loop."""
    t = _tensor(name, t)
    if t.device.type == "meta":
        raise ValueError(f"{name} is a meta tensor: it holds no values")
    if t.layout != torch.strided:
        raise ValueError(f"{name} must be a dense (strided) tensor, got layout {t.layout}")
    return t


def _same_device(name: str, t: torch.Tensor, device: torch.device, ref_name: str) -> None:
    if t.device != device:
        raise ValueError(f"{name} is on {t.device} but {ref_name} is on {device}: expected one device")


def check_state(history, seen, uncertainty=None, bins=None):
    """The selector state: ``history (n, T, q)``, ``seen (n,)``, ``uncertainty``/``bins (n, q)``."""
    history = _tensor("history", history)
    if history.dim() != 3 or min(history.shape) < 1:
        raise ValueError(f"history must have shape (n, T, q) with every size >= 1, got {tuple(history.shape)}")
    if history.dtype not in _HISTORY_DTYPES:
        raise TypeError(f"history must be float16 or float32, got {history.dtype}")
    n, _, q = history.shape
    seen = _tensor("seen", seen)
    if seen.dtype != torch.int64:
        raise TypeError(f"seen must be int64, got {seen.dtype}")
    if tuple(seen.shape) != (n,):
        raise ValueError(f"seen must have shape ({n},) to match history, got {tuple(seen.shape)}")
    _same_device("seen", seen, history.device, "history")
    for name, t, dtype in (("uncertainty", uncertainty, torch.float32), ("bins", bins, torch.uint8)):
        if t is None:
            continue
        _tensor(name, t)
        if t.dtype != dtype:
            raise TypeError(f"{name} must be {dtype}, got {t.dtype}")
        if tuple(t.shape) != (n, q):
            raise ValueError(f"{name} must have shape ({n}, {q}) to match history, got {tuple(t.shape)}")
        _same_device(name, t, history.device, "history")
        if not t.is_contiguous():
            raise ValueError(f"{name} must be contiguous (it is written in place)")
    if not history.is_contiguous() or not seen.is_contiguous():
        raise ValueError("history and seen must be contiguous (they are written in place)")
    return n, q


def check_indices(indices, n: int, device: torch.device, values: bool = True) -> torch.Tensor:
    """1-D integer indices, each in ``[0, n)``, no duplicates (the last two only with ``values``)."""
    indices = _tensor("indices", indices)
    if indices.dtype not in _INT_DTYPES[1:]:
        raise TypeError(f"indices must be an integer tensor (int8..int64), got {indices.dtype}")
    if indices.dim() != 1:
        raise ValueError(f"indices must be 1-D, got shape {tuple(indices.shape)}")
    _same_device("indices", indices, device, "history")
    if values and indices.numel():
        lo, hi = int(indices.min()), int(indices.max())
        if lo < 0 or hi >= n:
            raise IndexError(f"indices must be in [0, {n}), got values in [{lo}, {hi}]")
        if torch.unique(indices).numel() != indices.numel():
            raise ValueError("indices must not contain duplicates within one call")
    return indices


def _batch_values(name: str, x, b: int, q: int | None, device: torch.device) -> torch.Tensor:
    """A ``(b, q)`` floating tensor on ``device``: one step's probabilities or logits (any
    number of labels when ``q`` is None)."""
    x = _tensor(name, x)
    if x.dtype not in _PROB_DTYPES:
        raise TypeError(f"{name} must be a floating tensor (float32/float16/bfloat16/float64), got {x.dtype}")
    if q is None and (x.dim() != 2 or x.shape[0] != b):
        raise ValueError(f"{name} must have shape ({b}, num_labels) (len(indices) rows), got {tuple(x.shape)}")
    if q is not None and tuple(x.shape) != (b, q):
        raise ValueError(f"{name} must have shape ({b}, {q}) (len(indices), num_labels), got {tuple(x.shape)}")
    _same_device(name, x, device, "history")
    return x


def check_probs(probs, b: int, q: int | None, device: torch.device, values: bool = True) -> torch.Tensor:
    """``(b, q)`` floating probabilities, finite and in [0, 1] (the values only with ``values``)."""
    probs = _batch_values("probs", probs, b, q, device)
    if values:
        _check_unit_interval("probs", probs)
    return probs


def _check_unit_interval(name: str, t: torch.Tensor) -> None:
    """Every value of ``t`` finite and in [0, 1]; the error names the first that is not."""
    if not t.numel():
        return
    bad = ~((t >= 0) & (t <= 1))  # NaN compares false, so it is caught here too
    if bool(bad.any()):
        first = bad.nonzero()[0].tolist()
        raise ValueError(
            f"{name} must be finite and in [0, 1] (after sigmoid); {name}{first} = {t[tuple(first)].item()}"
        )


def check_staging(staged_indices, staged_probs, offset, b: int) -> tuple[int, int]:
    """The staging buffers of :func:`ubs_kernels.ops.stage` and the rows ``[offset, offset + b)``
    this call writes; returns ``(capacity, q)``."""
    staged_indices = _tensor("staged_indices", staged_indices)
    staged_probs = _tensor("staged_probs", staged_probs)
    if staged_indices.dtype != torch.int64:
        raise TypeError(f"staged_indices must be int64, got {staged_indices.dtype}")
    if staged_probs.dtype not in _HISTORY_DTYPES:
        raise TypeError(f"staged_probs must be float16 or float32 (the history dtype), got {staged_probs.dtype}")
    if staged_probs.dim() != 2 or staged_probs.shape[1] < 1:
        raise ValueError(f"staged_probs must have shape (capacity, q) with q >= 1, got {tuple(staged_probs.shape)}")
    capacity, q = staged_probs.shape
    if tuple(staged_indices.shape) != (capacity,):
        raise ValueError(
            f"staged_indices must have shape ({capacity},) to match staged_probs, got {tuple(staged_indices.shape)}"
        )
    if not staged_indices.is_contiguous() or not staged_probs.is_contiguous():
        raise ValueError("staged_indices and staged_probs must be contiguous (written in place)")
    _same_device("staged_indices", staged_indices, staged_probs.device, "staged_probs")
    if isinstance(offset, bool) or not isinstance(offset, int) or not 0 <= offset <= capacity - b:
        raise ValueError(
            f"offset must be in [0, {capacity - b}] (capacity {capacity} minus the {b} rows of this call), "
            f"got {offset!r}"
        )
    return capacity, q


def check_staged(staged_indices, staged_probs, history: torch.Tensor, values: bool = True):
    """What :func:`ubs_kernels.ops.observe_staged` applies: ``staged_indices (m,)`` in ``[0, n)``
    (repeats allowed) and ``staged_probs (m, q)`` of the history dtype, finite in [0, 1]."""
    n, _, q = history.shape
    staged_indices = _tensor("staged_indices", staged_indices)
    staged_probs = _tensor("staged_probs", staged_probs)
    if staged_indices.dtype not in _INT_DTYPES[1:]:
        raise TypeError(f"staged_indices must be an integer tensor (int8..int64), got {staged_indices.dtype}")
    if staged_indices.dim() != 1:
        raise ValueError(f"staged_indices must be 1-D, got shape {tuple(staged_indices.shape)}")
    m = staged_indices.shape[0]
    if staged_probs.dtype != history.dtype:
        raise TypeError(f"staged_probs must have the dtype of history ({history.dtype}), got {staged_probs.dtype}")
    if tuple(staged_probs.shape) != (m, q):
        raise ValueError(
            f"staged_probs must have shape ({m}, {q}) (len(staged_indices), num_labels), "
            f"got {tuple(staged_probs.shape)}"
        )
    _same_device("staged_indices", staged_indices, history.device, "history")
    _same_device("staged_probs", staged_probs, history.device, "history")
    if values and m:
        lo, hi = int(staged_indices.min()), int(staged_indices.max())
        if lo < 0 or hi >= n:
            raise IndexError(f"staged_indices must be in [0, {n}), got values in [{lo}, {hi}]")
        _check_unit_interval("staged_probs", staged_probs)
    return staged_indices, staged_probs


def check_logits(logits, b: int, q: int | None, device: torch.device, values: bool = True) -> torch.Tensor:
    """``(b, q)`` floating logits, no NaN (the values only with ``values``); infinities are
    allowed (their sigmoid is 0 or 1)."""
    logits = _batch_values("logits", logits, b, q, device)
    if values and logits.numel():
        bad = torch.isnan(logits)
        if bool(bad.any()):
            first = bad.nonzero()[0].tolist()
            raise ValueError(f"logits must not be NaN; logits{first} = {logits[tuple(first)].item()}")
    return logits


def probs_or_logits(probs, logits) -> tuple[object, bool]:
    """The one of ``probs`` and ``logits`` given, and whether it is logits."""
    if (probs is None) == (logits is None):
        raise TypeError("pass exactly one of probs (after sigmoid) and logits (before sigmoid)")
    return (probs, False) if logits is None else (logits, True)


def check_bins(bins, tau: int) -> torch.Tensor:
    """``(n, q)`` integer bins in ``[0, tau)``."""
    bins = _tensor("bins", bins)
    if bins.dtype not in _INT_DTYPES:
        raise TypeError(f"bins must be an integer tensor, got {bins.dtype}")
    if bins.dim() != 2:
        raise ValueError(f"bins must have shape (n, q), got {tuple(bins.shape)}")
    if bins.shape[1] < 1:
        raise ValueError("bins must have at least one label column (q >= 1)")
    if bins.numel():
        lo, hi = int(bins.min()), int(bins.max())
        if lo < 0 or hi >= tau:
            raise ValueError(f"bins must be in [0, tau={tau}), got values in [{lo}, {hi}]")
    return bins


def check_log_p(log_p) -> torch.Tensor:
    """``(n,)`` floating log-probabilities with ``n >= 1``: no NaN, no ``+inf``, at least one
    finite (``-inf`` is a probability of 0). A plan from anything else would be empty or biased."""
    log_p = _tensor("log_p", log_p)
    if not log_p.is_floating_point():
        raise TypeError(f"log_p must be a floating tensor, got {log_p.dtype}")
    if log_p.dim() != 1 or log_p.shape[0] < 1:
        raise ValueError(f"log_p must have shape (n,) with n >= 1, got {tuple(log_p.shape)}")
    bad = torch.isnan(log_p) | (log_p == float("inf"))
    if bool(bad.any()):
        i = int(bad.nonzero()[0, 0])
        raise ValueError(f"log_p must not be NaN or +inf, got log_p[{i}] = {log_p[i].item()}")
    if not bool((log_p > float("-inf")).any()):
        raise ValueError("log_p must give some sample a probability > 0, got -inf everywhere")
    return log_p


def check_weights_args(u, c, seen):
    """``u (n, q)`` float, ``c (q,)`` float, ``seen (n,)`` int64, one device."""
    u = _tensor("uncertainty", u)
    c = _tensor("c", c)
    seen = _tensor("seen", seen)
    if not u.is_floating_point():
        raise TypeError(f"uncertainty must be a floating tensor, got {u.dtype}")
    if u.dim() != 2 or u.shape[0] < 1 or u.shape[1] < 1:
        raise ValueError(f"uncertainty must have shape (n, q) with n, q >= 1, got {tuple(u.shape)}")
    n, q = u.shape
    if not c.is_floating_point():
        raise TypeError(f"c must be a floating tensor, got {c.dtype}")
    if tuple(c.shape) != (q,):
        raise ValueError(f"c must have shape ({q},) to match uncertainty, got {tuple(c.shape)}")
    if seen.dtype != torch.int64:
        raise TypeError(f"seen must be int64, got {seen.dtype}")
    if tuple(seen.shape) != (n,):
        raise ValueError(f"seen must have shape ({n},) to match uncertainty, got {tuple(seen.shape)}")
    _same_device("c", c, u.device, "uncertainty")
    _same_device("seen", seen, u.device, "uncertainty")
    finite = torch.isfinite(c)
    if not bool(finite.all()):
        j = int((~finite).nonzero()[0, 0])
        raise ValueError(f"c must be finite, got c[{j}] = {c[j].item()}")
    return n, q


# Value checks for the backends that do not make them themselves (the torch reference and
# Triton); the messages are the native CPU kernels'. Each reads the tensor on the host.


def check_seen(seen: torch.Tensor) -> None:
    """Every observation count ``seen[i] >= 0`` (the whole-matrix uncertainty pass)."""
    bad = seen < 0
    if bool(bad.any()):
        i = int(bad.nonzero()[0, 0])
        raise ValueError(f"seen must be >= 0 (observation counts), got seen[{i}] = {int(seen[i])}")


MAX_SEEN = 2**63 - 1  # the largest observation count: one more would wrap the int64 counter


def check_seen_at(seen: torch.Tensor, indices: torch.Tensor, n: int) -> None:
    """``seen[i] >= 0`` at every index ``i`` observed (a negative count addresses a slot outside
    the ring), with room for as many more observations as ``i`` appears in ``indices``. Indices
    out of ``[0, n)`` are skipped: check_indices or the kernel reports them."""
    idx = indices.long()
    idx, adds = torch.unique(idx[(idx >= 0) & (idx < n)], return_counts=True)
    counts = seen[idx]
    bad = counts < 0
    if bool(bad.any()):
        r = int(bad.nonzero()[0, 0])
        raise ValueError(
            f"seen must be >= 0 (observation counts) at every index observed, "
            f"got seen[{int(idx[r])}] = {int(counts[r])}"
        )
    full = counts > MAX_SEEN - adds
    if bool(full.any()):
        r = int(full.nonzero()[0, 0])
        raise ValueError(
            f"seen[{int(idx[r])}] = {int(counts[r])} has no room for another observation (counts stop at 2^63 - 1)"
        )


def check_weights_finite(u: torch.Tensor, c: torch.Tensor, seen: torch.Tensor) -> None:
    """``w = U c`` finite for every observed sample (``seen > 0``); other rows are not used.

    ``w`` is the float32 product the torch and Triton backends compute (the native CPU kernel
    accumulates in float64 and rounds once, so the two differ only where ``|U c|`` overflows
    float32 on the way).
    """
    w = u.to(torch.float32) @ c.to(torch.float32)
    bad = (seen > 0) & ~torch.isfinite(w)
    if bool(bad.any()):
        i = int(bad.nonzero()[0, 0])
        raise ValueError(f"uncertainty must be finite: row {i} gives w = U c = {w[i].item()}")


# A checkpoint (a selector's state_dict) is data from outside: every entry is checked before
# anything is loaded, and copied, so that a load either takes all of it or changes nothing.


def check_saved_tensors(state, specs: dict, device: torch.device, where: str = "state_dict['state']") -> dict:
    """``state[key]`` for each ``key: (dtype, shape)`` of ``specs``: a dense tensor with values,
    of that dtype and shape, returned copied onto ``device`` (contiguous, owning its memory)."""
    if not isinstance(state, dict):
        raise TypeError(f"{where} must be a dict, got {type(state).__name__}")
    unknown = sorted(set(state) - set(specs), key=str)
    if unknown:
        raise ValueError(f"{where} has unexpected entries {unknown} (expected {sorted(specs)})")
    out = {}
    for key, (dtype, shape) in specs.items():
        name = f"{where}[{key!r}]"
        if key not in state:
            raise KeyError(f"{name} is missing")
        t = state[key]
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.device.type == "meta" or t.layout != torch.strided:
            raise ValueError(f"{name} must be a dense tensor with values, got {t.layout} on {t.device}")
        if t.dtype != dtype:
            raise TypeError(f"{name} must be {dtype}, got {t.dtype}")
        if tuple(t.shape) != tuple(shape):
            raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(t.shape)}")
        out[key] = t.detach().to(device, copy=True).contiguous()
    return out


def check_saved_values(name: str, t: torch.Tensor, lo, hi, where: str = "state_dict['state']") -> None:
    """Every value of ``t`` in ``[lo, hi]`` (finite, for floating tensors); the message names the first."""
    if not t.numel():
        return
    bad = ~((t >= lo) & (t <= hi))  # NaN compares false
    if bool(bad.any()):
        first = bad.nonzero()[0].tolist()
        raise ValueError(
            f"{where}[{name!r}] must hold values in [{lo}, {hi}], got {name}{first} = {t[tuple(first)].item()}"
        )


def check_saved_plan(plan, offsets, cursor: int, batches: int, batch_size: int, shard):
    """A saved epoch plan: ids the rank of ``shard`` owns, batch bounds rising from 0 to the end,
    ``batches`` batches of 1 to ``batch_size`` samples with no sample twice in one, and the
    cursor within them; returns CPU copies of ``(plan, offsets)`` (both None: no plan)."""
    if plan is None and offsets is None:
        if cursor != 0:
            raise ValueError(f"state_dict['cursor'] is {cursor} but no plan was saved")
        return None, None
    for name, t in (("plan", plan), ("offsets", offsets)):
        if not isinstance(t, torch.Tensor) or t.dtype != torch.int64 or t.dim() != 1 or t.layout != torch.strided:
            raise ValueError(f"state_dict[{name!r}] must be a 1-D int64 tensor (or both None), got {type(t).__name__}")
        if t.device.type == "meta":
            raise ValueError(f"state_dict[{name!r}] must hold values, got a meta tensor")
    plan, offsets = plan.detach().cpu().clone(), offsets.detach().cpu().clone()
    if offsets.numel() - 1 != batches:
        raise ValueError(f"state_dict['offsets'] must bound {batches} batches, got {offsets.numel() - 1}")
    sizes = offsets.diff()
    if int(offsets[0]) != 0 or int(offsets[-1]) != plan.numel() or bool((sizes < 1).any()):
        raise ValueError(
            f"state_dict['offsets'] must rise from 0 to len(plan) = {plan.numel()} by at least 1 a batch, "
            f"got {offsets.tolist()[:8]}{'...' if offsets.numel() > 8 else ''}"
        )
    if bool((sizes > batch_size).any()):
        raise ValueError(f"state_dict['offsets'] makes a batch larger than batch_size={batch_size}")
    if cursor > batches:
        raise ValueError(f"state_dict['cursor'] is {cursor}, the plan has {batches} batches")
    owned = (plan >= 0) & (plan < shard.num_samples) & (plan.remainder(shard.world_size) == shard.rank)
    if not bool(owned.all()):
        i = int((~owned).nonzero()[0, 0])
        raise ValueError(f"state_dict['plan'][{i}] = {int(plan[i])} is not a sample this rank owns")
    key = torch.repeat_interleave(torch.arange(batches), sizes) * shard.num_samples + plan
    if torch.unique(key).numel() != key.numel():
        raise ValueError("state_dict['plan'] holds a sample twice in one batch")
    return plan, offsets


def check_saved_log_p(log_p, num_local: int) -> torch.Tensor | None:
    """A saved ``log P`` of the epoch in progress: None, or ``(num_local,)`` as :func:`check_log_p`
    accepts it; returns a float32 CPU copy."""
    if log_p is None:
        return None
    if not isinstance(log_p, torch.Tensor) or tuple(log_p.shape) != (num_local,):
        raise ValueError(f"state_dict['log_p'] must be None or a ({num_local},) tensor")
    if log_p.device.type == "meta" or log_p.layout != torch.strided:
        raise ValueError("state_dict['log_p'] must be a dense tensor with values")
    return check_log_p(log_p.detach().cpu()).to(torch.float32, copy=True)
