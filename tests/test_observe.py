"""observe and record (docs/spec.md Eq. 1, 4, 5 and the bin) on every backend and device.

Oracles: an independent float64 numpy recomputation from each sample's full list of
predictions, for samples seen 0, 1, 2, ..., T+3 times, and the float64 reference. Triton on
the CPU runs under the interpreter (``-m interpreter`` with TRITON_INTERPRET=1), on the small
shapes; the CUDA cases are marked ``gpu``.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from conftest import (
    assert_bins_match,
    assert_rows_match_oracle,
    assert_state_equal,
    clone_state,
    device_backends,
    make_state,
    registered_op,
    require_backend,
    warm_state,
)

import ubs_kernels as ubs
from ubs_kernels import reference

HISTORY_DTYPES = [torch.float16, torch.float32]
PROBS_DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64]
# (T, q, tau): T = 1 and 2, q = 1, a q that fills no vector, tau = 2 and 16, 64 labels.
SHAPES = [(5, 7, 10), (1, 3, 2), (2, 1, 16), (8, 33, 10), (5, 64, 10), (5, 37, 10)]
OBSERVE_CASES = [(h, p, *shape) for h, p, shape in itertools.product(HISTORY_DTYPES, PROBS_DTYPES, SHAPES)]
# The interpreter takes about 0.2 s a launch: every dtype on one small shape, then more shapes.
INTERPRETER_CASES = [(h, p, 3, 5, 10) for h, p in itertools.product(HISTORY_DTYPES, PROBS_DTYPES)] + [
    (torch.float16, torch.float32, *shape) for shape in [(1, 1, 2), (2, 3, 16), (5, 19, 10)]
]


def observe_rounds(device, backend, T, q, history_dtype, probs_dtype, lam, tau, seed=0):
    """Observe sample i exactly i % (T+4) times, in shuffled batches, with ``backend`` on ``device``
    and with the float64 reference on the CPU. Returns the state, the reference's state, each
    sample's predictions as stored (float64, in time order) and the expected counts."""
    gen = torch.Generator().manual_seed(seed)
    n = 3 * (T + 4)
    target = torch.arange(n) % (T + 4)
    state, ref = make_state(n, T, q, history_dtype, device), make_state(n, T, q, history_dtype)
    predictions: list[list[np.ndarray]] = [[] for _ in range(n)]
    for r in range(T + 4):
        idx = (target > r).nonzero().flatten()
        idx = idx[torch.randperm(idx.numel(), generator=gen)]
        probs = torch.rand(idx.numel(), q, generator=gen)
        probs[:, 0] = 0.0  # exact zeros and ones: e(0) = e(1) = 0
        probs[:, 1 % q] = 1.0
        probs = probs.to(probs_dtype)
        ubs.observe(*state, idx.to(device), probs.to(device), lam=lam, tau=tau, backend=backend)
        reference.observe(*ref, idx, probs, lam, tau, dtype=torch.float64)
        stored = probs.to(history_dtype).double().numpy()
        for row, i in enumerate(idx.tolist()):
            predictions[i].append(stored[row])
    return state, ref, predictions, target


@pytest.mark.parametrize(
    ("device", "backend", "history_dtype", "probs_dtype", "T", "q", "tau"),
    device_backends(cases=OBSERVE_CASES, interpreter_cases=INTERPRETER_CASES),
)
def test_observe_matches_numpy_recomputation(device, backend, history_dtype, probs_dtype, T, q, tau):
    require_backend("observe", backend, device)
    lam = 0.5
    (history, seen, u, bins), ref, predictions, target = observe_rounds(
        device, backend, T, q, history_dtype, probs_dtype, lam, tau
    )
    assert torch.equal(seen.cpu(), target)
    assert_rows_match_oracle(u, bins, predictions, T, lam, tau)
    for i, preds in enumerate(predictions):
        # The ring holds the last min(seen, T) predictions at slots (seen - k + h) % T.
        k = min(len(preds), T)
        for h, p in enumerate(preds[-k:]):
            slot = (len(preds) - k + h) % T
            np.testing.assert_array_equal(history[i, slot].double().cpu().numpy(), p)
    # The float64 reference: the same ring and counts, U to float32 rounding.
    assert torch.equal(history.cpu(), ref[0]) and torch.equal(seen.cpu(), ref[1])
    torch.testing.assert_close(u.cpu(), ref[2], rtol=0, atol=2e-6)
    # The whole-matrix pass of the same backend gives the same bits from the history alone.
    u2, b2 = ubs.uncertainty(history, seen, lam, tau, backend=backend)
    assert torch.equal(u2, u) and torch.equal(b2, bins)


@pytest.mark.parametrize("lam", [0.0, 0.3, 1.0])
def test_native_matches_torch_backend(lam):
    require_backend("observe", "cpu")
    gen = torch.Generator().manual_seed(1)
    n, T, q = 200, 5, 37
    a, b = make_state(n, T, q), make_state(n, T, q)
    for _ in range(15):
        idx = torch.randperm(n, generator=gen)[:64]
        probs = torch.rand(64, q, generator=gen)
        ubs.observe(*a, idx, probs, lam=lam, backend="torch")
        ubs.observe(*b, idx, probs, lam=lam, backend="cpu")
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    torch.testing.assert_close(a[2], b[2], rtol=0, atol=1e-6)
    assert_bins_match(b[3], a[2].double().numpy(), 10)


@pytest.mark.parametrize(("device", "backend"), device_backends("torch", "cuda", "triton", devices=("cuda",)))
@pytest.mark.parametrize("history_dtype", HISTORY_DTYPES)
@pytest.mark.parametrize("lam", [0.3, 0.5])
def test_observe_large_matches_reference(device, backend, history_dtype, lam):
    """50 000 samples of 1000 labels, three batches of 4096 over a random state."""
    require_backend("observe", backend, device)
    g = torch.Generator(device=device).manual_seed(0)
    n, T, q, b, tau = 50_000, 5, 1000, 4096, 10
    history = torch.rand(n, T, q, generator=g, device=device).to(history_dtype)
    seen = torch.randint(0, 3 * T, (n,), generator=g, device=device)
    state = [history, seen, *reference.uncertainty(history, seen, lam, tau)]
    ref = [t.clone() for t in state]
    for _ in range(3):
        idx = torch.randperm(n, generator=g, device=device)[:b]
        probs = torch.rand(b, q, generator=g, device=device)
        ubs.observe(*state, idx, probs, lam=lam, tau=tau, backend=backend)
        reference.observe(*ref, idx, probs, lam, tau, dtype=torch.float64)
    assert torch.equal(state[0], ref[0]) and torch.equal(state[1], ref[1])
    torch.testing.assert_close(state[2], ref[2], rtol=0, atol=2e-6)
    assert_bins_match(state[3], ref[2].double().cpu().numpy(), tau)


@pytest.mark.parametrize(("device", "backend"), device_backends())
@pytest.mark.parametrize("history_dtype", HISTORY_DTYPES)
def test_whole_matrix_uncertainty_equals_observed_rows(device, backend, history_dtype):
    require_backend("observe", backend, device)
    gen = torch.Generator().manual_seed(2)
    n, T, q = 64, 4, 9
    state = make_state(n, T, q, history_dtype, device)
    for _ in range(7):
        idx = torch.randperm(n, generator=gen)[:40]
        ubs.observe(*state, idx.to(device), torch.rand(40, q, generator=gen).to(device), tau=7, backend=backend)
    u, bins = ubs.uncertainty(state[0], state[1], tau=7)
    torch.testing.assert_close(u, state[2], rtol=0, atol=1e-6)
    observed = state[1] > 0
    assert torch.all(u[~observed] == 0)
    assert_bins_match(bins, state[2].double().cpu().numpy(), 7)


@pytest.mark.parametrize(("device", "backend"), device_backends())
def test_empty_batch_is_a_no_op(device, backend):
    """Through the public op, and through the backend's kernel itself (the public op returns
    before any kernel for an empty batch)."""
    require_backend("observe", backend, device)
    state = make_state(5, 3, 2, device=device)
    before = clone_state(state)
    empty = (torch.empty(0, dtype=torch.long, device=device), torch.empty(0, 2, device=device))
    ubs.observe(*state, *empty, backend=backend)
    assert_state_equal(state, before)
    if backend != "torch":
        registered_op("observe", backend)(*state, *empty, 0.5, 10)
        assert_state_equal(state, before)


@pytest.mark.parametrize(("device", "backend"), device_backends())
def test_int32_indices_and_noncontiguous_probs(device, backend):
    """int32 indices and a strided view of probs give the bits of int64 indices and contiguous
    probs on the same backend, and the torch backend's state (U to 1e-6)."""
    require_backend("observe", backend, device)
    a, b, c = (make_state(10, 3, 4, device=device) for _ in range(3))
    probs = torch.rand(8, 4, device=device)[::2]  # every other row: a strided view
    assert not probs.is_contiguous()
    idx = torch.tensor([3, 1, 7, 0], device=device)
    ubs.observe(*a, idx.int(), probs, backend=backend)
    ubs.observe(*b, idx, probs.contiguous(), backend=backend)
    ubs.observe(*c, idx, probs.contiguous(), backend="torch")
    assert_state_equal(a, b)
    assert torch.equal(a[0], c[0]) and torch.equal(a[1], c[1])
    torch.testing.assert_close(a[2], c[2], rtol=0, atol=1e-6)


IDX = [0, 5, 9]


def _probs(device, value=None):
    p = torch.full((3, 5), 0.5, device=device)
    if value is not None:
        p[1, 2] = value
    return p


# (case id, indices, bad probability value, exception, message fragment)
BAD_OBSERVE = [
    ("probs-nan", IDX, float("nan"), ValueError, "probs"),
    ("probs-inf", IDX, float("inf"), ValueError, "probs"),
    ("probs-above-1", IDX, 1.0001, ValueError, r"\[0, 1\]"),
    ("probs-negative", IDX, -1e-6, ValueError, r"probs\[1, 2\]"),
    ("index-too-large", [0, 5, 12], None, IndexError, "indices"),
    ("index-negative", [0, -1, 2], None, IndexError, "indices"),
    ("index-duplicate", [4, 7, 4], None, ValueError, "duplicate"),
]


@pytest.mark.parametrize(("device", "backend"), device_backends("cpu", "cuda"))
@pytest.mark.parametrize(
    ("idx", "value", "exc", "match"), [c[1:] for c in BAD_OBSERVE], ids=[c[0] for c in BAD_OBSERVE]
)
def test_native_observe_rejects_and_leaves_state(device, backend, idx, value, exc, match):
    """torch.ops.ubs_kernels.observe without the Python checks: the kernel's own checks run first."""
    require_backend("observe", backend, device)
    state = warm_state(12, 3, 5, device=device)
    before = clone_state(state)
    with pytest.raises(exc, match=match):
        torch.ops.ubs_kernels.observe(*state, torch.tensor(idx, device=device), _probs(device, value), 0.5, 10)
    assert_state_equal(state, before)


@pytest.mark.parametrize(("device", "backend"), device_backends("cpu", "cuda"))
def test_native_observe_rejects_bad_metadata(device, backend):
    require_backend("observe", backend, device)
    state, idx, op = (
        warm_state(12, 3, 5, device=device),
        torch.tensor(IDX, device=device),
        torch.ops.ubs_kernels.observe,
    )
    with pytest.raises(TypeError, match="probs"):
        op(*state, idx, torch.zeros(3, 5, dtype=torch.int64, device=device), 0.5, 10)
    with pytest.raises(ValueError, match="probs must have shape"):
        op(*state, idx, torch.full((3, 6), 0.5, device=device), 0.5, 10)
    with pytest.raises(ValueError, match="lam"):
        op(*state, idx, _probs(device), 1.5, 10)
    with pytest.raises(ValueError, match="tau"):
        op(*state, idx, _probs(device), 0.5, 257)
    if device != "cpu":  # indices on another device than the state
        with pytest.raises(ValueError, match="device"):
            op(*state, idx.cpu(), _probs(device), 0.5, 10)
    state[1][5] = -1
    with pytest.raises(ValueError, match="seen must be >= 0"):
        op(*state, idx, _probs(device), 0.5, 10)
    op(*state, idx[:0], _probs(device)[:0], 0.5, 10)  # an empty batch is a no-op


# ---------------------------------------------------------------- record


@pytest.mark.parametrize(("device", "backend"), device_backends())
@pytest.mark.parametrize("history_dtype", HISTORY_DTYPES)
@pytest.mark.parametrize("probs_dtype", [torch.float32, torch.float16, torch.float64])
@pytest.mark.parametrize(("T", "q"), [(5, 37), (1, 3), (3, 1)])
def test_record_then_uncertainty_equals_observe(device, backend, history_dtype, probs_dtype, T, q):
    """record writes the ring and counts as observe does; the whole-matrix pass then gives the
    U and bins observe left (observe itself is checked against the numpy oracle above)."""
    require_backend("record", backend, device)
    gen = torch.Generator().manual_seed(T * 100 + q)
    n = 40
    observed = make_state(n, T, q, history_dtype, device)
    history, seen = make_state(n, T, q, history_dtype, device)[:2]
    for _ in range(T + 3):
        idx = torch.randperm(n, generator=gen)[: n // 2]
        probs = torch.rand(idx.numel(), q, generator=gen).to(probs_dtype)
        probs[:, 0] = 1.0
        idx, probs = idx.to(device), probs.to(device)
        ubs.observe(*observed, idx, probs, backend="torch" if backend == "torch" else None)
        ubs.record(history, seen, idx, probs, backend=backend)
    assert torch.equal(seen, observed[1])
    assert torch.equal(history, observed[0])
    u, bins = ubs.uncertainty(history, seen, backend="torch" if backend == "torch" else None)
    if backend in ("torch", "cpu"):  # the same row computation on both sides: the same bits
        assert torch.equal(u, observed[2]) and torch.equal(bins, observed[3])
    else:
        torch.testing.assert_close(u, observed[2], rtol=0, atol=1e-6)
        assert_bins_match(bins, observed[2].double().cpu().numpy(), 10)


@pytest.mark.parametrize(("device", "backend"), device_backends())
def test_record_empty_batch_and_int32_indices(device, backend):
    require_backend("record", backend, device)
    history, seen = make_state(6, 2, 3, device=device)[:2]
    empty = (torch.empty(0, dtype=torch.long, device=device), torch.empty(0, 3, device=device))
    ubs.record(history, seen, *empty, backend=backend)
    if backend != "torch":  # the kernel itself, which the public op does not call for b = 0
        registered_op("record", backend)(history, seen, *empty)
    assert not history.any() and not seen.any()
    probs = torch.rand(8, 3, device=device)[::2]  # a strided view
    ubs.record(history, seen, torch.tensor([5, 0, 2, 3], dtype=torch.int32, device=device), probs, backend=backend)
    assert seen.tolist() == [1, 0, 1, 1, 0, 1]
    assert torch.equal(history[[5, 0, 2, 3], 0], probs.to(torch.float16))


@pytest.mark.parametrize("history_dtype", HISTORY_DTYPES)
def test_record_large_batch_matches_reference(history_dtype):
    """A batch of 3000 x 100 values: the CPU kernel splits the checks and the writes over the
    thread pool (a training step's batch runs on one thread), and gives the reference's bits.
    A bad probability in the last row is found and nothing is written."""
    require_backend("record", "cpu")
    gen = torch.Generator().manual_seed(7)
    n, T, q = 3000, 3, 100
    history, seen = make_state(n, T, q, history_dtype)[:2]
    seen += torch.randint(0, 7, (n,), generator=gen)
    ref_history, ref_seen = history.clone(), seen.clone()
    idx = torch.randperm(n, generator=gen)
    probs = torch.rand(n, q, generator=gen)
    ubs.record(history, seen, idx, probs, backend="cpu")
    ubs.record(ref_history, ref_seen, idx, probs, backend="torch")
    assert torch.equal(seen, ref_seen) and torch.equal(history, ref_history)
    bad = probs.clone()
    bad[-1, -1] = 1.5
    before = clone_state((history, seen))
    with pytest.raises(ValueError, match=r"probs\[2999, 99\] = 1.5"):
        ubs.record(history, seen, idx, bad, backend="cpu")
    assert_state_equal((history, seen), before)
