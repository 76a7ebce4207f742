"""observe (docs/spec.md Eq. 1, 4, 5 and the bin) and the whole-matrix uncertainty pass.

Oracle: an independent float64 numpy recomputation from each sample's full list of
predictions, for samples seen 0, 1, 2, ..., T+3 times.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import (
    assert_bins_match,
    assert_rows_match_oracle,
    assert_state_equal,
    backend_params,
    clone_state,
    make_state,
    require_backend,
)

import ubs_kernels as ubs

HISTORY_DTYPES = {torch.float16: np.float16, torch.float32: np.float32}


def _run_rounds(backend, T, q, history_dtype, probs_dtype, lam, tau, seed=0):
    """Observe sample i exactly i % (T+4) times, in shuffled batches; return state + oracle lists."""
    gen = torch.Generator().manual_seed(seed)
    n = 3 * (T + 4)
    target = torch.arange(n) % (T + 4)
    state = make_state(n, T, q, history_dtype)
    predictions: list[list[np.ndarray]] = [[] for _ in range(n)]
    for r in range(T + 4):
        idx = (target > r).nonzero().flatten()
        idx = idx[torch.randperm(idx.numel(), generator=gen)]
        probs = torch.rand(idx.numel(), q, generator=gen)
        probs[:, 0] = 0.0  # exact zeros and ones: e(0) = e(1) = 0
        probs[:, 1 % q] = 1.0
        probs = probs.to(probs_dtype)
        ubs.observe(*state, idx, probs, lam=lam, tau=tau, backend=backend)
        stored = probs.to(history_dtype).float().numpy().astype(HISTORY_DTYPES[history_dtype])
        for row, i in enumerate(idx.tolist()):
            predictions[i].append(stored[row].astype(np.float64))
    return state, predictions, target


@pytest.mark.parametrize("backend", ["torch", "cpu"])
@pytest.mark.parametrize("history_dtype", [torch.float16, torch.float32])
@pytest.mark.parametrize("probs_dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize(("T", "q", "tau"), [(5, 7, 10), (1, 3, 2), (2, 1, 16), (8, 33, 10)])
def test_observe_matches_numpy_recomputation(backend, history_dtype, probs_dtype, T, q, tau):
    require_backend("observe", backend)
    lam = 0.5
    (history, seen, u, bins), predictions, target = _run_rounds(backend, T, q, history_dtype, probs_dtype, lam, tau)
    assert torch.equal(seen, target)
    assert_rows_match_oracle(u, bins, predictions, T, lam, tau)
    for i, preds in enumerate(predictions):
        # The ring holds the last min(seen, T) predictions at slots (seen - k + h) % T.
        k = min(len(preds), T)
        for h, p in enumerate(preds[-k:]):
            slot = (len(preds) - k + h) % T
            np.testing.assert_array_equal(history[i, slot].float().numpy(), p.astype(np.float32))


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


@pytest.mark.parametrize("backend", ["torch", "cpu"])
@pytest.mark.parametrize("history_dtype", [torch.float16, torch.float32])
def test_whole_matrix_uncertainty_equals_observed_rows(backend, history_dtype):
    require_backend("observe", backend)
    gen = torch.Generator().manual_seed(2)
    n, T, q = 64, 4, 9
    state = make_state(n, T, q, history_dtype)
    for _ in range(7):
        idx = torch.randperm(n, generator=gen)[:40]
        ubs.observe(*state, idx, torch.rand(40, q, generator=gen), tau=7, backend=backend)
    u, bins = ubs.uncertainty(state[0], state[1], tau=7)
    torch.testing.assert_close(u, state[2], rtol=0, atol=1e-6)
    observed = state[1] > 0
    assert torch.all(u[~observed] == 0)
    assert_bins_match(bins, state[2].double().numpy(), 7)


@pytest.mark.parametrize("backend", ["torch", "cpu"])
def test_empty_batch_is_a_no_op(backend):
    require_backend("observe", backend)
    state = make_state(5, 3, 2)
    before = clone_state(state)
    ubs.observe(*state, torch.empty(0, dtype=torch.long), torch.empty(0, 2), backend=backend)
    for x, y in zip(state, before, strict=True):
        assert torch.equal(x, y)


@pytest.mark.parametrize("backend", ["torch", "cpu"])
def test_int32_indices_and_noncontiguous_probs(backend):
    require_backend("observe", backend)
    a, b = make_state(10, 3, 4), make_state(10, 3, 4)
    probs = torch.rand(8, 4)[::2]  # every other row: a strided view
    assert not probs.is_contiguous()
    ubs.observe(*a, torch.tensor([3, 1, 7, 0], dtype=torch.int32), probs, backend=backend)
    ubs.observe(*b, torch.tensor([3, 1, 7, 0]), probs.contiguous(), backend=backend)
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x, y)


@pytest.mark.parametrize("backend", backend_params("torch", "cpu", "triton", "cuda"))
@pytest.mark.parametrize("history_dtype", [torch.float16, torch.float32])
@pytest.mark.parametrize("probs_dtype", [torch.float32, torch.float16, torch.float64])
@pytest.mark.parametrize(("T", "q"), [(5, 37), (1, 3), (3, 1)])
def test_record_then_uncertainty_equals_observe(backend, history_dtype, probs_dtype, T, q):
    """record writes the ring and counts as observe does; the whole-matrix pass then gives the
    U and bins observe left (observe itself is checked against the numpy oracle above)."""
    device = "cuda" if backend == "cuda" else "cpu"
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


@pytest.mark.parametrize("backend", backend_params("torch", "cpu", "triton"))
def test_record_empty_batch_and_int32_indices(backend):
    require_backend("record", backend)
    history, seen = make_state(6, 2, 3)[:2]
    ubs.record(history, seen, torch.empty(0, dtype=torch.long), torch.empty(0, 3), backend=backend)
    assert not history.any() and not seen.any()
    probs = torch.rand(8, 3)[::2]  # a strided view
    ubs.record(history, seen, torch.tensor([5, 0, 2, 3], dtype=torch.int32), probs, backend=backend)
    assert seen.tolist() == [1, 0, 1, 1, 0, 1]
    assert torch.equal(history[[5, 0, 2, 3], 0], probs.to(torch.float16))


@pytest.mark.parametrize("history_dtype", [torch.float16, torch.float32])
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
