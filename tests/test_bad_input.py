"""Bad input gets a clear error naming the argument, and leaves all state exactly as it was.

Covers the public ops on every backend of this build, on the CPU and on CUDA (where there is
a device), and the raw native ops (which must check for themselves: they can be called through
torch.ops directly). The bad inputs are made on the CPU and moved to the device under test.
"""

from __future__ import annotations

import pytest
import torch
from conftest import assert_state_equal, clone_state, device_backends, on, require_backend, warm_state

import ubs_kernels as ubs

N, T, Q = 12, 3, 5


def _probs(b=3, value=None):
    p = torch.full((b, Q), 0.5)
    if value is not None:
        p[1, 2] = value
    return p


IDX = torch.tensor([0, 5, 9])

# (case id, indices, probs, kwargs, exception, message fragment)
OBSERVE_CASES = [
    ("probs-nan", IDX, _probs(value=float("nan")), {}, ValueError, "probs"),
    ("probs-inf", IDX, _probs(value=float("inf")), {}, ValueError, "probs"),
    ("probs-above-1", IDX, _probs(value=1.0001), {}, ValueError, r"\[0, 1\]"),
    ("probs-negative", IDX, _probs(value=-1e-6), {}, ValueError, "probs"),
    ("probs-shape-rows", IDX, _probs(b=4), {}, ValueError, "probs must have shape"),
    ("probs-shape-labels", IDX, torch.full((3, Q + 1), 0.5), {}, ValueError, "probs must have shape"),
    ("probs-int", IDX, torch.zeros(3, Q, dtype=torch.int64), {}, TypeError, "probs"),
    ("probs-device", IDX, torch.full((3, Q), 0.5, device="meta"), {}, ValueError, "probs"),
    ("probs-list", IDX, [[0.5] * Q] * 3, {}, TypeError, "probs must be a torch.Tensor"),
    ("index-too-large", torch.tensor([0, 5, N]), _probs(), {}, IndexError, "indices"),
    ("index-negative", torch.tensor([0, -1, 2]), _probs(), {}, IndexError, "indices"),
    ("index-duplicate", torch.tensor([4, 7, 4]), _probs(), {}, ValueError, "duplicate"),
    ("index-float", torch.tensor([0.0, 1.0, 2.0]), _probs(), {}, TypeError, "indices"),
    ("index-2d", IDX[None, :], _probs(), {}, ValueError, "indices"),
    ("lam", IDX, _probs(), {"lam": 1.5}, ValueError, "lam"),
    ("tau-small", IDX, _probs(), {"tau": 1}, ValueError, "tau"),
    ("tau-large", IDX, _probs(), {"tau": 257}, ValueError, "tau"),
    ("lam-str", IDX, _probs(), {"lam": "0.5"}, TypeError, "lam"),
    ("lam-none", IDX, _probs(), {"lam": None}, TypeError, "lam"),
    ("tau-float", IDX, _probs(), {"tau": 10.0}, TypeError, "tau"),
]


NATIVE = {"cpu": "cpu", "cuda": "cuda"}  # the native backend of each device


@pytest.mark.parametrize(("device", "backend"), device_backends("torch", "cpu", "cuda"))
@pytest.mark.parametrize(
    ("indices", "probs", "kwargs", "exc", "match"), [c[1:] for c in OBSERVE_CASES], ids=[c[0] for c in OBSERVE_CASES]
)
def test_observe_rejects_and_leaves_state(device, backend, indices, probs, kwargs, exc, match):
    require_backend("observe", backend, device)
    state = warm_state(N, T, Q, device=device)
    before = clone_state(state)
    with pytest.raises(exc, match=match):
        ubs.observe(*state, on(indices, device), on(probs, device), backend=backend, **kwargs)
    assert_state_equal(state, before)


RECORD_CASES = [c for c in OBSERVE_CASES if not c[3]]  # record has no lam or tau
# What the raw op cannot be given: its schema converts or refuses Python objects before any
# kernel runs (a list, a float tensor of indices, a string for a float).
NOT_FOR_RAW_OPS = ("index-float", "probs-device", "probs-list", "lam-str", "lam-none", "tau-float")


@pytest.mark.parametrize(("device", "backend"), device_backends())
@pytest.mark.parametrize(
    ("indices", "probs", "exc", "match"),
    [(c[1], c[2], c[4], c[5]) for c in RECORD_CASES],
    ids=[c[0] for c in RECORD_CASES],
)
def test_record_rejects_and_leaves_state(device, backend, indices, probs, exc, match):
    require_backend("record", backend, device)
    state = warm_state(N, T, Q, device=device)
    before = clone_state(state)
    with pytest.raises(exc, match=match):
        ubs.record(state[0], state[1], on(indices, device), on(probs, device), backend=backend)
    assert_state_equal(state, before)


@pytest.mark.parametrize(
    ("indices", "probs", "exc", "match"),
    [(c[1], c[2], c[4], c[5]) for c in RECORD_CASES if c[0] not in NOT_FOR_RAW_OPS],
    ids=[c[0] for c in RECORD_CASES if c[0] not in NOT_FOR_RAW_OPS],
)
def test_native_record_checks_for_itself(device, indices, probs, exc, match):
    """torch.ops.ubs_kernels.record called directly, without the Python checks."""
    require_backend("record", NATIVE[device], device)
    state = warm_state(N, T, Q, device=device)
    before = clone_state(state)
    with pytest.raises(exc, match=match):
        torch.ops.ubs_kernels.record(state[0], state[1], indices.long().to(device), probs.to(device))
    assert_state_equal(state, before)


@pytest.mark.parametrize("op", ["observe", "record"])
@pytest.mark.parametrize(
    ("n", "indices", "exc", "match"),
    [
        # a batch of fewer than n / 16 rows is ordered by sorting, a larger one by a table of n
        (400, [3, 250, 17, 250], ValueError, "duplicate"),
        (400, [3, 250, 17, 400], IndexError, r"in \[0, 400\), got values in \[3, 400\]"),
        (40, list(range(0, 40, 2)) + [6], ValueError, "duplicate"),
        (40, list(range(0, 40, 2)) + [-1], IndexError, r"got values in \[-1, 38\]"),
    ],
    ids=["sorted-duplicate", "sorted-range", "table-duplicate", "table-range"],
)
def test_native_batch_order_checks(device, op, n, indices, exc, match):
    """Both ways the native kernels put a batch in index order find duplicates and bad indices."""
    require_backend(op, NATIVE[device], device)
    state = warm_state(n, T, Q, device=device)
    idx = torch.tensor(indices, device=device)
    before = clone_state(state)
    probs = torch.full((len(indices), Q), 0.5, device=device)
    with pytest.raises(exc, match=match):
        if op == "observe":
            torch.ops.ubs_kernels.observe(*state, idx, probs, 0.5, 10)
        else:
            torch.ops.ubs_kernels.record(state[0], state[1], idx, probs)
    assert_state_equal(state, before)


@pytest.mark.parametrize(("device", "backend"), device_backends())
@pytest.mark.parametrize("where", [0, 5])
def test_record_rejects_negative_seen(device, backend, where):
    require_backend("record", backend, device)
    history, seen = warm_state(N, T, Q, device=device)[:2]
    seen[where] = -1
    before = clone_state((history, seen))
    with pytest.raises(ValueError, match=r"seen must be >= 0 \(observation counts\)"):
        ubs.record(history, seen, IDX.to(device), _probs().to(device), backend=backend)
    assert_state_equal((history, seen), before)


@pytest.mark.parametrize(
    ("which", "bad", "exc", "match"),
    [
        (0, torch.zeros(N, T, Q, dtype=torch.float64), TypeError, "history"),
        (0, torch.zeros(N, Q, dtype=torch.float16), ValueError, "history"),
        (0, torch.zeros(N, 0, Q, dtype=torch.float16), ValueError, "every size >= 1"),
        (1, torch.zeros(N, dtype=torch.int32), TypeError, "seen"),
        (1, torch.zeros(N + 1, dtype=torch.int64), ValueError, "seen"),
        (2, torch.zeros(N, Q + 1), ValueError, "uncertainty"),
        (2, torch.zeros(N, Q, dtype=torch.float64), TypeError, "uncertainty"),
        (3, torch.zeros(N, Q, dtype=torch.int64), TypeError, "bins"),
        (3, torch.zeros(Q, N, dtype=torch.uint8).T, ValueError, "bins"),
    ],
)
@pytest.mark.parametrize(("device", "backend"), device_backends("torch", "cpu", "cuda"))
def test_observe_rejects_bad_state(device, backend, which, bad, exc, match):
    require_backend("observe", backend, device)
    state = list(warm_state(N, T, Q, device=device))
    state[which] = bad.to(device)
    before = clone_state(state)
    with pytest.raises(exc, match=match):
        ubs.observe(*state, IDX.to(device), _probs().to(device), backend=backend)
    assert_state_equal(state, before)


@pytest.mark.parametrize(
    ("indices", "probs", "kwargs", "exc", "match"),
    [c[1:] for c in OBSERVE_CASES if c[0] not in NOT_FOR_RAW_OPS],
    ids=[c[0] for c in OBSERVE_CASES if c[0] not in NOT_FOR_RAW_OPS],
)
def test_native_op_checks_for_itself(device, indices, probs, kwargs, exc, match):
    """torch.ops.ubs_kernels.observe called directly, without the Python checks."""
    require_backend("observe", NATIVE[device], device)
    state = warm_state(N, T, Q, device=device)
    before = clone_state(state)
    args = {"lam": 0.5, "tau": 10, **kwargs}
    with pytest.raises(exc, match=match):
        torch.ops.ubs_kernels.observe(*state, indices.long().to(device), probs.to(device), args["lam"], args["tau"])
    assert_state_equal(state, before)


def test_unknown_backend_and_unbuilt_backend():
    state = warm_state(N, T, Q)
    with pytest.raises(ValueError, match="backend must be one of"):
        ubs.observe(*state, IDX, _probs(), backend="fast")
    with pytest.raises(RuntimeError, match="backend='cuda' cannot run"):
        ubs.observe(*state, IDX, _probs(), backend="cuda")


def test_env_default_backend(monkeypatch):
    monkeypatch.setenv("UBS_BACKEND", "nope")
    with pytest.raises(ValueError, match="UBS_BACKEND"):
        ubs.label_mi(torch.zeros(3, 2, dtype=torch.uint8), 10)
    monkeypatch.setenv("UBS_BACKEND", "torch")
    assert ubs.resolve_backend("observe", "cpu") == "torch"


@pytest.mark.parametrize(
    ("bins", "tau", "exc", "match"),
    [
        (torch.zeros(4, 3), 10, TypeError, "bins must be an integer"),
        (torch.zeros(4, dtype=torch.uint8), 10, ValueError, r"bins must have shape \(n, q\)"),
        (torch.zeros(4, 0, dtype=torch.uint8), 10, ValueError, "q >= 1"),
        (torch.full((4, 3), 10, dtype=torch.uint8), 10, ValueError, r"bins must be in \[0, tau=10\)"),
        (torch.full((4, 3), -1, dtype=torch.int64), 10, ValueError, "bins must be in"),
        (torch.zeros(4, 3, dtype=torch.uint8), 1, ValueError, "tau"),
        (torch.zeros(4, 3, dtype=torch.uint8), 2.5, TypeError, "tau"),
        (torch.zeros(4, 3, dtype=torch.uint8), "10", TypeError, "tau"),
        ([[0, 1]], 10, TypeError, "bins must be a torch.Tensor"),
    ],
)
@pytest.mark.parametrize(("device", "backend"), device_backends())
def test_label_mi_rejects(device, backend, bins, tau, exc, match):
    require_backend("label_mi", backend, device)
    with pytest.raises(exc, match=match):
        ubs.label_mi(on(bins, device), tau, backend=backend)


@pytest.mark.parametrize(
    ("args", "exc", "match"),
    [
        (
            (torch.rand(5, 3), torch.ones(4), torch.ones(5, dtype=torch.long), 10.0),
            ValueError,
            r"c must have shape \(3,\)",
        ),
        (
            (torch.rand(5, 3), torch.ones(3, dtype=torch.long), torch.ones(5, dtype=torch.long), 10.0),
            TypeError,
            "c must be",
        ),
        ((torch.rand(5, 3), torch.ones(3), torch.ones(5, dtype=torch.int32), 10.0), TypeError, "seen must be int64"),
        ((torch.rand(5, 3), torch.ones(3), torch.ones(4, dtype=torch.long), 10.0), ValueError, "seen must have shape"),
        ((torch.rand(5, 3), torch.ones(3), torch.ones(5, dtype=torch.long), "2"), TypeError, "pressure"),
        ((torch.rand(5, 3), torch.ones(3), torch.ones(5, dtype=torch.long), 0.5), ValueError, "pressure"),
        ((torch.rand(5, 3), torch.ones(3), torch.ones(5, dtype=torch.long), float("nan")), ValueError, "pressure"),
        (
            (torch.rand(5, 3), torch.tensor([1.0, float("nan"), 1.0]), torch.ones(5, dtype=torch.long), 2.0),
            ValueError,
            "c must be finite",
        ),
        (
            (torch.zeros(5, 3, dtype=torch.long), torch.ones(3), torch.ones(5, dtype=torch.long), 2.0),
            TypeError,
            "uncertainty",
        ),
    ],
)
@pytest.mark.parametrize(("device", "backend"), device_backends())
def test_selection_log_probs_rejects(device, backend, args, exc, match):
    require_backend("selection_log_probs", backend, device)
    with pytest.raises(exc, match=match):
        ubs.selection_log_probs(*(on(a, device) for a in args), backend=backend)


@pytest.mark.parametrize(("device", "backend"), device_backends())
def test_uncertainty_rejects_bad_history(device, backend):
    require_backend("uncertainty", backend, device)
    with pytest.raises(TypeError, match="history"):
        ubs.uncertainty(
            torch.zeros(3, 2, 2, dtype=torch.int32, device=device),
            torch.zeros(3, dtype=torch.long, device=device),
            backend=backend,
        )
    with pytest.raises(ValueError, match="seen"):
        ubs.uncertainty(
            torch.zeros(3, 2, 2, device=device), torch.zeros(4, dtype=torch.long, device=device), backend=backend
        )


# Bad values that some backends do not check for themselves: ops checks them in Python for
# those, so every backend raises the same exception naming the argument, and writes nothing.
# (The CUDA kernels check neither a negative seen in uncertainty nor a non-finite w: that
# would need a device sync in the kernel's binding; ops makes those checks for them.)


@pytest.mark.parametrize(("device", "backend"), device_backends())
@pytest.mark.parametrize("where", [0, 5])
def test_observe_rejects_negative_seen(device, backend, where):
    """Sample 0's ring is first in memory: a negative count there would write before it."""
    require_backend("observe", backend, device)
    state = warm_state(N, T, Q, device=device)
    state[1][where] = -1
    before = clone_state(state)
    # The CUDA kernel's device-side verdict says which check failed, not at which sample.
    at = "" if backend == "cuda" else rf".*seen\[{where}\] = -1"
    with pytest.raises(ValueError, match=rf"seen must be >= 0 \(observation counts\){at}"):
        ubs.observe(*state, IDX.to(device), _probs().to(device), backend=backend)
    assert_state_equal(state, before)


@pytest.mark.parametrize(("device", "backend"), device_backends())
def test_uncertainty_rejects_negative_seen(device, backend):
    require_backend("uncertainty", backend, device)
    history, seen = warm_state(N, T, Q, device=device)[:2]
    seen[7] = -2
    before = clone_state((history, seen))
    with pytest.raises(ValueError, match=r"seen must be >= 0 \(observation counts\), got seen\[7\] = -2"):
        ubs.uncertainty(history, seen, backend=backend)
    assert_state_equal((history, seen), before)


def _weights_inputs(row=None, value=None, c=None):
    u = torch.rand(6, 3, generator=torch.Generator().manual_seed(1))
    seen = torch.tensor([1, 2, 0, 1, 3, 1])
    if row is not None:
        u[row, 1] = value
    return u, torch.ones(3) if c is None else c, seen


# (case id, (U, c, seen), message); row 2 is never observed (seen 0).
NONFINITE_WEIGHTS = [
    ("u-nan", _weights_inputs(3, float("nan")), r"uncertainty must be finite: row 3 gives w = U c = nan"),
    ("u-inf", _weights_inputs(1, float("inf")), r"uncertainty must be finite: row 1 gives w = U c = inf"),
    ("u-inf-times-0", _weights_inputs(1, float("inf"), torch.tensor([1.0, 0.0, 1.0])), "uncertainty must be finite"),
    ("w-overflow", _weights_inputs(4, 3e38, torch.full((3,), 10.0)), "uncertainty must be finite: row 4"),
    ("c-nan", _weights_inputs(c=torch.tensor([1.0, float("nan"), 1.0])), r"c must be finite, got c\[1\] = nan"),
    ("c-inf", _weights_inputs(c=torch.tensor([1.0, 1.0, -float("inf")])), r"c must be finite, got c\[2\] = -inf"),
]


@pytest.mark.parametrize(("device", "backend"), device_backends())
@pytest.mark.parametrize(("args", "match"), [c[1:] for c in NONFINITE_WEIGHTS], ids=[c[0] for c in NONFINITE_WEIGHTS])
def test_selection_log_probs_rejects_nonfinite(device, backend, args, match):
    require_backend("selection_log_probs", backend, device)
    args = tuple(a.to(device) for a in args)
    before = clone_state(args)
    with pytest.raises(ValueError, match=match):
        ubs.selection_log_probs(*args, 2.0, backend=backend)
    for x, y in zip(args, before, strict=True):
        torch.testing.assert_close(x, y, rtol=0, atol=0, equal_nan=True)


@pytest.mark.parametrize(("device", "backend"), device_backends())
def test_selection_log_probs_ignores_nonfinite_unobserved_row(device, backend):
    """U of a never-observed sample is not used (z = 1), so NaN there is no error anywhere."""
    require_backend("selection_log_probs", backend, device)
    u, c, seen = (t.to(device) for t in _weights_inputs(2, float("nan")))
    got = ubs.selection_log_probs(u, c, seen, 2.0, backend=backend)
    want = ubs.selection_log_probs(u.nan_to_num(0.0), c, seen, 2.0, backend="torch")
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
