"""Shared test helpers: backend parametrisation and independent float64 oracles."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

import ubs_kernels as ubs
from ubs_kernels import reference

# Every backend the public ops accept; the ones this build or machine lacks skip with a reason.
ALL_BACKENDS = ("torch", "cpu", "triton", "cuda")


def backend_params(*names: str) -> list:
    """Backends for ``@pytest.mark.parametrize("backend", ...)``; "triton" carries the
    ``interpreter`` marker, so ``make test-interpret`` (``-m interpreter``) runs it on the CPU.
    In the plain run it still skips with a reason unless TRITON_INTERPRET=1 or CUDA is there."""
    return [pytest.param(b, marks=pytest.mark.interpreter) if b == "triton" else b for b in names or ALL_BACKENDS]


NO_CUDA = "needs a CUDA device (torch.cuda.is_available() is False)"


def cuda_param(value="cuda", **kwargs):
    """A parameter that runs on a CUDA device: marked ``gpu``, skipped with the reason without one."""
    marks = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason=NO_CUDA)]
    return pytest.param(value, marks=marks, **kwargs)


# The devices every device-parametrised test runs on: the CPU always, CUDA where there is one.
DEVICES = ["cpu", cuda_param()]


@pytest.fixture(params=DEVICES)
def device(request) -> str:
    return request.param


def device_backends(
    *backends: str, devices: tuple[str, ...] = ("cpu", "cuda"), cases=None, interpreter_cases=None
) -> list:
    """``(device, backend)`` pairs for ``@pytest.mark.parametrize(("device", "backend"), ...)``:
    each backend on each of ``devices`` it can serve (the native "cpu" kernels on the CPU, the
    "cuda" ones on CUDA; torch and Triton on both), marked and skipped as :func:`backend_params`
    and :func:`cuda_param` do.

    With ``cases`` (tuples of further argument values), each pair is repeated with every case
    appended: ``(device, backend, *case)``. Triton on the CPU, which the interpreter runs about a
    thousand times slower, takes ``interpreter_cases`` instead where they are given."""
    params = []
    for device in devices:
        for b in backends or ALL_BACKENDS:
            if b in ("cpu", "cuda") and b != device:
                continue
            interpreted = b == "triton" and device == "cpu"
            marks = [pytest.mark.interpreter] if interpreted else []
            if device == "cuda":
                marks += [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason=NO_CUDA)]
            if cases is None:
                params.append(pytest.param(device, b, marks=marks, id=f"{device}-{b}"))
                continue
            for case in interpreter_cases if interpreted and interpreter_cases is not None else cases:
                ids = "-".join(str(v).removeprefix("torch.") for v in case)
                params.append(pytest.param(device, b, *case, marks=marks, id=f"{device}-{b}-{ids}"))
    return params


def registered_op(op: str, backend: str):
    """The kernel ``ubs_kernels.ops`` calls for ``backend`` ("cpu", "cuda" or "triton"), called
    directly: ``torch.ops.ubs_kernels.<op>``, or ``<op>_triton``. No Python checks run before it."""
    return getattr(torch.ops.ubs_kernels, f"{op}_triton" if backend == "triton" else op)


def on(x, device):
    """``x`` moved to ``device`` if it is a CPU tensor (meta tensors and non-tensors stay as they are)."""
    return x.to(device) if torch.is_tensor(x) and x.device.type == "cpu" else x


def require_backend(op: str, backend: str, device: str = "cpu") -> None:
    if torch.device(device).type == "cuda" and not torch.cuda.is_available():
        pytest.skip(NO_CUDA)
    available = ubs.available_backends(op, device)
    if backend not in available:
        if backend == "triton":
            why = "Triton runs on CUDA, or on the CPU under TRITON_INTERPRET=1"
        elif backend in ("cpu", "cuda") and backend != torch.device(device).type:
            why = f"the native {backend} kernels take {backend} tensors only"
        elif backend in ("cpu", "cuda"):
            why = f"this build has no native {backend} kernel for {op} (see ubs_kernels.build_info())"
        else:
            why = f"have {available}"
        pytest.skip(f"backend {backend!r} cannot run {op} on {device}: {why}")


def numpy_uncertainty(predictions: list[np.ndarray], T: int, lam: float) -> np.ndarray:
    """docs/spec.md Eq. 1, 4, 5 in float64 numpy from a sample's full list of predictions.

    Independent of the ring: takes the k = min(len, T) newest rows in time order.
    """
    window = np.asarray(predictions[-T:], dtype=np.float64)
    k = window.shape[0]
    d = np.abs(np.diff(window, axis=0)).sum(axis=0) / (k - 1) if k >= 2 else np.zeros(window.shape[1])
    p = window[-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        e = -(np.where(p > 0, p * np.log2(p), 0.0) + np.where(p < 1, (1 - p) * np.log2(1 - p), 0.0))
    return lam * d + (1 - lam) * e


def numpy_log_probs(u: torch.Tensor, c: torch.Tensor, seen: torch.Tensor, s: float) -> np.ndarray:
    """docs/spec.md Eq. 7-10 in float64 numpy: ``w = U c`` (literally ``w = (U C) 1`` when ``c``
    is the q x q matrix C), z min-max normalised over the observed samples (1 for the others),
    ``Q = floor((1 - z) n)``, and log P."""
    u, c, seen = u.double().cpu().numpy(), c.double().cpu().numpy(), seen.cpu().numpy()
    n = u.shape[0]
    w = (u @ c).sum(axis=1) if c.ndim == 2 else u @ c
    obs = seen > 0
    z = np.ones(n)
    if obs.any():
        lo, hi = w[obs].min(), w[obs].max()
        z[obs] = (w[obs] - lo) / (hi - lo) if hi > lo else 0.0
    logits = -np.log(s) * np.floor((1 - z) * n) / n
    return logits - np.logaddexp.reduce(logits)


def sklearn_matrix(bins: torch.Tensor) -> np.ndarray:
    """docs/spec.md Eq. 6 by ``sklearn.metrics.mutual_info_score`` on every pair of columns
    (float64), with the diagonal 1; all 0 off the diagonal when there are no rows."""
    from sklearn.metrics import mutual_info_score  # noqa: PLC0415  (only the label_mi tests need it)

    b = bins.cpu().numpy()
    q = b.shape[1]
    out = np.eye(q)
    for i, j in itertools.combinations(range(q), 2):
        out[i, j] = out[j, i] = mutual_info_score(b[:, i], b[:, j]) if b.shape[0] else 0.0
    return out


def correlated_bins(n: int, q: int, tau: int, seed: int, *, heavy: bool = True) -> torch.Tensor:
    """Bins of a noisy rank-2 U in [0, 1): columns share structure, so MI is far from 0.

    ``heavy``: column 1 copies column 0 and the first n // 5 rows sit in the last bin, so the
    joint tables have a heavy diagonal and a populated (tau-1, tau-1) cell."""
    if n == 0:
        return torch.empty(0, q, dtype=torch.uint8)
    gen = torch.Generator().manual_seed(seed)
    factors = torch.rand(n, 2, generator=gen) @ torch.rand(2, q, generator=gen)
    u = (factors / factors.max() + 0.3 * torch.rand(n, q, generator=gen)) / 1.3
    bins = reference.to_bins(u, tau)
    if heavy:
        if q > 1:
            bins[:, 1] = bins[:, 0]
        bins[: n // 5] = tau - 1
    return bins


def assert_bins_match(bins: torch.Tensor, u_ref: np.ndarray, tau: int, tol: float = 1e-4) -> None:
    """Bins equal ``min(floor(u tau), tau-1)`` of the oracle, except where u*tau sits on a boundary."""
    scaled = np.asarray(u_ref, dtype=np.float64) * tau
    expected = np.clip(np.floor(scaled), 0, tau - 1)
    on_boundary = np.abs(scaled - np.round(scaled)) < tol
    got = bins.cpu().numpy().astype(np.float64)
    mismatch = (got != expected) & ~on_boundary
    assert not mismatch.any(), f"{mismatch.sum()} bins differ, first at {np.argwhere(mismatch)[0]}"


def assert_rows_match_oracle(u: torch.Tensor, bins: torch.Tensor, predictions, T: int, lam: float, tau: int) -> None:
    """Every row of U and the bins against ``numpy_uncertainty`` of that sample's predictions
    (float64, in time order); a sample with none must have 0 in both."""
    assert u.dtype == torch.float32 and bins.dtype == torch.uint8
    for i, preds in enumerate(predictions):
        if not len(preds):
            assert torch.all(u[i] == 0) and torch.all(bins[i] == 0), f"unobserved row {i} is not 0"
            continue
        expected = numpy_uncertainty(preds, T, lam)
        np.testing.assert_allclose(
            u[i].cpu().numpy(), expected, rtol=0, atol=2e-6, err_msg=f"row {i}, seen {len(preds)}"
        )
        assert_bins_match(bins[i], expected, tau)


def make_state(n: int, T: int, q: int, history_dtype=torch.float16, device="cpu"):
    return (
        torch.zeros(n, T, q, dtype=history_dtype, device=device),
        torch.zeros(n, dtype=torch.int64, device=device),
        torch.zeros(n, q, dtype=torch.float32, device=device),
        torch.zeros(n, q, dtype=torch.uint8, device=device),
    )


def clone_state(state):
    return tuple(t.clone() for t in state)


def assert_state_equal(a, b) -> None:
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x, y), "state changed"


def warm_state(n: int, T: int, q: int, history_dtype=torch.float16, device="cpu"):
    """A state after four steps of 6 random samples each (torch backend), for bad-input tests;
    the same values on every device."""
    state = make_state(n, T, q, history_dtype)
    gen = torch.Generator().manual_seed(0)
    for _ in range(4):
        ubs.observe(*state, torch.randperm(n, generator=gen)[:6], torch.rand(6, q, generator=gen), backend="torch")
    return tuple(t.to(device) for t in state)
