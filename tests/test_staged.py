"""stage + observe_staged: training steps buffered, then applied at once.

Oracle: observe called for each step in turn on the same backend (itself checked against a
float64 numpy recomputation in test_observe.py), and that numpy recomputation directly. The
staged path must leave the same bits in history, seen, U and bins.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import (
    assert_bins_match,
    assert_rows_match_oracle,
    assert_state_equal,
    clone_state,
    make_state,
    require_backend,
    warm_state,
)

import ubs_kernels as ubs

HISTORY_DTYPES = {torch.float16: np.float16, torch.float32: np.float32}


def _steps(n, q, steps, b, probs_dtype, seed=0, hot=None):
    """Batches of distinct ids (samples repeat across steps; ``hot`` ids are in every step)."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(steps):
        idx = torch.randperm(n, generator=gen)[:b]
        if hot is not None:
            idx = torch.cat([hot, idx[~torch.isin(idx, hot)][: b - hot.numel()]])
            idx = idx[torch.randperm(idx.numel(), generator=gen)]
        probs = torch.rand(idx.numel(), q, generator=gen)
        probs[:, 0] = 0.0  # exact zeros and ones: e(0) = e(1) = 0
        probs[:, -1] = 1.0
        out.append((idx, probs.to(probs_dtype)))
    return out


def _staged(n, T, q, history_dtype, steps, backend, flush_every=None, lam=0.5, tau=10):
    state = make_state(n, T, q, history_dtype)
    capacity = sum(i.numel() for i, _ in steps) + 3
    sidx = torch.full((capacity,), -7, dtype=torch.int64)
    sprobs = torch.zeros(capacity, q, dtype=history_dtype)
    k = 0
    for s, (idx, probs) in enumerate(steps):
        ubs.stage(sidx, sprobs, k, idx, probs, n, backend=backend)
        k += idx.numel()
        if flush_every and (s + 1) % flush_every == 0:
            ubs.observe_staged(*state, sidx[:k], sprobs[:k], lam, tau, backend=backend)
            k = 0
    ubs.observe_staged(*state, sidx[:k], sprobs[:k], lam, tau, backend=backend)
    return state


@pytest.mark.parametrize("backend", ["torch", "cpu"])
@pytest.mark.parametrize("history_dtype", [torch.float16, torch.float32])
@pytest.mark.parametrize("probs_dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize(
    ("n", "T", "q", "b", "steps"),
    [
        (40, 5, 37, 16, 12),  # every sample staged several times: counting sort of the rows
        (5000, 3, 9, 8, 6),  # few rows in a large n: the rows are sorted instead
        (12, 1, 3, 12, 4),  # T = 1, every sample in every step
    ],
)
def test_staged_equals_observe_per_step(backend, history_dtype, probs_dtype, n, T, q, b, steps):
    require_backend("observe_staged", backend)
    hot = torch.tensor([3, 7])  # in every step: more rows than T, so older rows are only counted
    plan = _steps(n, q, steps, b, probs_dtype, hot=hot)
    expected = make_state(n, T, q, history_dtype)
    for idx, probs in plan:
        ubs.observe(*expected, idx, probs, backend=backend)
    assert_state_equal(_staged(n, T, q, history_dtype, plan, backend), expected)
    assert_state_equal(_staged(n, T, q, history_dtype, plan, backend, flush_every=5), expected)


@pytest.mark.parametrize("backend", ["torch", "cpu"])
@pytest.mark.parametrize("history_dtype", [torch.float16, torch.float32])
def test_staged_matches_numpy_recomputation(backend, history_dtype):
    require_backend("observe_staged", backend)
    n, T, q, lam, tau = 30, 4, 11, 0.3, 7
    plan = _steps(n, q, 20, 10, torch.float32, seed=3, hot=torch.tensor([0]))
    history, seen, u, bins = _staged(n, T, q, history_dtype, plan, backend, lam=lam, tau=tau)
    predictions: list[list[np.ndarray]] = [[] for _ in range(n)]
    for idx, probs in plan:
        stored = probs.to(history_dtype).float().numpy().astype(HISTORY_DTYPES[history_dtype])
        for row, i in enumerate(idx.tolist()):
            predictions[i].append(stored[row].astype(np.float64))
    assert seen.tolist() == [len(p) for p in predictions]
    assert len(predictions[0]) == 20 > T
    assert_rows_match_oracle(u, bins, predictions, T, lam, tau)


def test_native_staged_matches_torch_backend():
    require_backend("observe_staged", "cpu")
    n, T, q = 300, 5, 37
    plan = _steps(n, q, 30, 64, torch.float32, seed=5)
    a = _staged(n, T, q, torch.float16, plan, "torch")
    b = _staged(n, T, q, torch.float16, plan, "cpu")
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    torch.testing.assert_close(a[2], b[2], rtol=0, atol=1e-6)
    assert_bins_match(b[3], a[2].double().numpy(), 10)


@pytest.mark.parametrize("backend", ["torch", "cpu"])
def test_stage_writes_only_its_rows(backend):
    require_backend("stage", backend)
    sidx, sprobs = torch.full((10,), -1, dtype=torch.int64), torch.zeros(10, 4, dtype=torch.float16)
    probs = torch.rand(3, 4, dtype=torch.float64)
    ubs.stage(sidx, sprobs, 6, torch.tensor([4, 0, 2], dtype=torch.int32), probs, 5, backend=backend)
    assert sidx.tolist() == [-1] * 6 + [4, 0, 2, -1]
    assert torch.equal(sprobs[6:9], probs.to(torch.float16)) and not sprobs[:6].any() and not sprobs[9].any()
    ubs.stage(sidx, sprobs, 10, torch.empty(0, dtype=torch.int64), torch.empty(0, 4), 5, backend=backend)


N, T, Q = 12, 3, 5
IDX = torch.tensor([0, 5, 9])


def _probs(b=3, value=None):
    p = torch.full((b, Q), 0.5)
    if value is not None:
        p[1, 2] = value
    return p


# (case id, indices, probs, offset, exception, message fragment)
STAGE_CASES = [
    ("probs-nan", IDX, _probs(value=float("nan")), 0, ValueError, "probs"),
    ("probs-above-1", IDX, _probs(value=1.0001), 0, ValueError, r"\[0, 1\]"),
    ("probs-negative", IDX, _probs(value=-1e-6), 0, ValueError, "probs"),
    ("probs-shape", IDX, torch.full((3, Q + 1), 0.5), 0, ValueError, "probs must have shape"),
    ("probs-int", IDX, torch.zeros(3, Q, dtype=torch.int64), 0, TypeError, "probs"),
    ("index-too-large", torch.tensor([0, 5, N]), _probs(), 0, IndexError, "indices"),
    ("index-negative", torch.tensor([0, -1, 2]), _probs(), 0, IndexError, "indices"),
    ("index-duplicate", torch.tensor([4, 7, 4]), _probs(), 0, ValueError, "duplicate"),
    ("index-2d", IDX[None, :], _probs(), 0, ValueError, "indices"),
    ("offset-past-capacity", IDX, _probs(), 6, ValueError, "offset"),
    ("offset-negative", IDX, _probs(), -1, ValueError, "offset"),
]


def _buffers():
    return torch.full((8,), -1, dtype=torch.int64), torch.full((8, Q), 0.25, dtype=torch.float16)


@pytest.mark.parametrize("backend", ["torch", "cpu", "native"])
@pytest.mark.parametrize(
    ("indices", "probs", "offset", "exc", "match"), [c[1:] for c in STAGE_CASES], ids=[c[0] for c in STAGE_CASES]
)
def test_stage_rejects_and_leaves_buffers(backend, indices, probs, offset, exc, match):
    """``native``: torch.ops.ubs_kernels.stage called directly, without the Python checks."""
    require_backend("stage", "cpu" if backend == "native" else backend)
    buffers = _buffers()
    before = clone_state(buffers)
    with pytest.raises(exc, match=match):
        if backend == "native":
            torch.ops.ubs_kernels.stage(*buffers, offset, indices.long(), probs, N)
        else:
            ubs.stage(*buffers, offset, indices, probs, N, backend=backend)
    assert_state_equal(buffers, before)


def _staged_rows(value=None, index=None):
    sidx = torch.tensor([2, 7, 2, 11])
    sprobs = torch.full((4, Q), 0.5, dtype=torch.float16)
    if value is not None:
        sprobs[3, 1] = value
    if index is not None:
        sidx[2] = index
    return sidx, sprobs


# (case id, staged_indices, staged_probs, kwargs, exception, message fragment)
APPLY_CASES = [
    ("value-nan", *_staged_rows(value=float("nan")), {}, ValueError, "staged_probs"),
    ("value-inf", *_staged_rows(value=float("inf")), {}, ValueError, "staged_probs"),
    ("value-above-1", *_staged_rows(value=1.001), {}, ValueError, r"\[0, 1\]"),
    ("value-negative", *_staged_rows(value=-0.001), {}, ValueError, "staged_probs"),
    ("index-too-large", *_staged_rows(index=N), {}, IndexError, "staged_indices"),
    ("index-negative", *_staged_rows(index=-1), {}, IndexError, "staged_indices"),
    ("probs-dtype", _staged_rows()[0], _staged_rows()[1].float(), {}, TypeError, "dtype of history"),
    ("probs-shape", _staged_rows()[0], _staged_rows()[1][:3], {}, ValueError, "staged_probs must have shape"),
    ("indices-2d", _staged_rows()[0][None], _staged_rows()[1], {}, ValueError, "staged_indices"),
    ("lam", *_staged_rows(), {"lam": -0.1}, ValueError, "lam"),
    ("tau", *_staged_rows(), {"tau": 1}, ValueError, "tau"),
]


@pytest.mark.parametrize("backend", ["torch", "cpu", "native"])
@pytest.mark.parametrize(
    ("sidx", "sprobs", "kwargs", "exc", "match"), [c[1:] for c in APPLY_CASES], ids=[c[0] for c in APPLY_CASES]
)
def test_observe_staged_rejects_and_leaves_state(backend, sidx, sprobs, kwargs, exc, match):
    """``native``: torch.ops.ubs_kernels.observe_staged called directly."""
    require_backend("observe_staged", "cpu" if backend == "native" else backend)
    state = warm_state(N, T, Q)
    before = clone_state(state)
    with pytest.raises(exc, match=match):
        if backend == "native":
            args = {"lam": 0.5, "tau": 10} | kwargs
            torch.ops.ubs_kernels.observe_staged(*state, sidx, sprobs, args["lam"], args["tau"])
        else:
            ubs.observe_staged(*state, sidx, sprobs, backend=backend, **kwargs)
    assert_state_equal(state, before)


@pytest.mark.parametrize("backend", ["torch", "cpu"])
def test_observe_staged_rejects_negative_seen(backend):
    require_backend("observe_staged", backend)
    state = warm_state(N, T, Q)
    state[1][11] = -1
    before = clone_state(state)
    with pytest.raises(ValueError, match=r"seen must be >= 0 \(observation counts\)"):
        ubs.observe_staged(*state, *_staged_rows(), backend=backend)
    assert_state_equal(state, before)


def test_staged_negative_zero_is_accepted():
    """-0.0 is in [0, 1]: the native float16 check reads bits, where -0.0 is 0x8000."""
    require_backend("observe_staged", "cpu")
    a, b = warm_state(N, T, Q), warm_state(N, T, Q)
    sidx, sprobs = _staged_rows()
    sprobs[0, 0] = -0.0
    ubs.observe_staged(*a, sidx, sprobs, backend="cpu")
    ubs.observe_staged(*b, sidx, sprobs.abs(), backend="cpu")
    assert torch.equal(a[1], b[1]) and torch.equal(a[2], b[2]) and torch.equal(a[3], b[3])


LOGITS = torch.tensor(
    [[-float("inf"), -100.0, -88.7, -87.3, -20.0, -1e-8, -0.0],
     [0.0, 1e-8, 0.5, 3.0, 20.0, 88.7, float("inf")]]
)  # fmt: skip


@pytest.mark.parametrize("backend", ["torch", "cpu"])
@pytest.mark.parametrize("history_dtype", [torch.float16, torch.float32])
def test_stage_logits_is_the_sigmoid(backend, history_dtype):
    """Logits go in as their sigmoid (float32), against float64 and torch.sigmoid."""
    require_backend("stage", backend)
    gen = torch.Generator().manual_seed(0)
    x = torch.cat([LOGITS, torch.randn(300, 7, generator=gen) * 6])
    b = x.shape[0]
    sidx, sprobs = torch.zeros(b, dtype=torch.int64), torch.zeros(b, 7, dtype=history_dtype)
    ubs.stage(sidx, sprobs, 0, torch.arange(b), x, b, logits=True, backend=backend)
    exact = torch.sigmoid(x.double())
    if history_dtype == torch.float32:
        torch.testing.assert_close(sprobs.double(), exact, rtol=2.5e-7, atol=1e-38)
    else:  # float16: within half a float16 ulp of the exact value, as torch's rounding is
        ulp = torch.where(exact < 2**-14, 2.0**-24, 2.0 ** (torch.floor(torch.log2(exact)) - 10))
        assert bool(((sprobs.double() - exact).abs() <= ulp / 2 * (1 + 1e-6)).all())
        if backend == "torch":
            assert torch.equal(sprobs, torch.sigmoid(x).half())
    assert sprobs[0, 0] == 0 and sprobs[1, -1] == 1 and sprobs[1, 0] == 0.5


@pytest.mark.parametrize("backend", ["torch", "cpu", "native"])
def test_stage_rejects_nan_logits_and_leaves_buffers(backend):
    require_backend("stage", "cpu" if backend == "native" else backend)
    buffers = _buffers()
    before = clone_state(buffers)
    x = torch.zeros(3, Q)
    x[2, 4] = float("nan")
    with pytest.raises(ValueError, match=r"logits must not be NaN; logits\[2, 4\]"):
        if backend == "native":
            torch.ops.ubs_kernels.stage(*buffers, 0, IDX, x, N, True)
        else:
            ubs.stage(*buffers, 0, IDX, x, N, logits=True, backend=backend)
    assert_state_equal(buffers, before)
    # Out-of-range values are fine as logits: only probabilities must be in [0, 1].
    ubs.stage(
        *buffers, 0, IDX, torch.full((3, Q), 5.0), N, logits=True, backend="cpu" if backend == "native" else backend
    )
