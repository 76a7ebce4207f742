"""The whole-matrix uncertainty pass (docs/spec.md Eq. 1, 4, 5 and the bin for all n rows), on
every backend and device.

Oracles: the independent float64 numpy recomputation of conftest.numpy_uncertainty from each
sample's full list of predictions, and the float64 reference. The history is filled the way the
README documents (prediction t of a sample goes to ring slot t % T), so the numpy oracle never
reads the ring. Triton on the CPU runs under the interpreter; the CUDA cases are marked ``gpu``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import (
    assert_bins_match,
    assert_rows_match_oracle,
    device_backends,
    make_state,
    numpy_uncertainty,
    registered_op,
    require_backend,
)

import ubs_kernels as ubs
from ubs_kernels import reference

HISTORY_DTYPES = [torch.float16, torch.float32]
# Every instruction-set path of the native kernel that UBS_CPU_ISA can select.
ISAS = ["auto", "avx512", "avx2", "popcnt", "portable"]


def filled_history(n, T, q, history_dtype, seed=0, max_seen=None):
    """History of n samples seen 0 .. max_seen times, and each sample's predictions in order.

    Predictions include exact 0 and 1 (e(0) = e(1) = 0); they are rounded to the history
    dtype first, so the oracle sees what the ring stores.
    """
    gen = torch.Generator().manual_seed(seed)
    max_seen = T + 3 if max_seen is None else max_seen
    seen = torch.arange(n) % (max_seen + 1)
    seen = seen[torch.randperm(n, generator=gen)]
    history = torch.zeros(n, T, q, dtype=history_dtype)
    predictions = []
    for i in range(n):
        rows = torch.rand(int(seen[i]), q, generator=gen)
        if rows.numel():
            rows[:, 0] = 0.0
            rows[-1, q // 2] = 1.0
        rows = rows.to(history_dtype)
        for t in range(rows.shape[0]):
            history[i, t % T] = rows[t]
        predictions.append([r.double().numpy() for r in rows])
    return history, seen, predictions


@pytest.mark.parametrize(("device", "backend"), device_backends())
@pytest.mark.parametrize("history_dtype", HISTORY_DTYPES)
@pytest.mark.parametrize("T", [1, 2, 3, 4, 5, 6])
@pytest.mark.parametrize(("q", "tau"), [(1, 10), (7, 2), (16, 10), (37, 256)])
def test_matches_numpy_oracle(device, backend, history_dtype, T, q, tau):
    require_backend("uncertainty", backend, device)
    lam = 0.3
    history, seen, predictions = filled_history(3 * (T + 4), T, q, history_dtype, seed=T * 100 + q)
    u, bins = ubs.uncertainty(history.to(device), seen.to(device), lam=lam, tau=tau, backend=backend)
    assert u.shape == bins.shape == (history.shape[0], q) and u.device == bins.device == torch.device(device)
    assert_rows_match_oracle(u, bins, predictions, T, lam, tau)


# (n, T, q, lam, tau): rows not a multiple of a block, T = 1 and 8, q = 1, vectorised (q = 64)
# and scalar (q = 37) rows, q = 600 and 1000 over several column blocks.
REFERENCE_CASES = [
    (1000, 5, 37, 0.5, 10),
    (999, 4, 64, 0.5, 10),
    (500, 1, 6, 0.5, 10),
    (77, 3, 12, 0.5, 10),
    (300, 8, 1, 0.5, 10),
    (2, 5, 1000, 0.5, 10),
    (37, 4, 5, 0.7, 7),
    (3, 2, 600, 0.7, 7),
    (1, 1, 1, 0.7, 7),
]


@pytest.mark.parametrize(("device", "backend", "n", "T", "q", "lam", "tau"), device_backends(cases=REFERENCE_CASES))
@pytest.mark.parametrize("history_dtype", HISTORY_DTYPES)
def test_matches_float64_reference(device, backend, n, T, q, lam, tau, history_dtype):
    """A random ring of samples seen 0 .. 3T-1 times (sample 0 never) against the float64
    reference on the same device; a history one element off alignment gives the same bits."""
    require_backend("uncertainty", backend, device)
    gen = torch.Generator().manual_seed(n + q)
    history = torch.rand(n, T, q, generator=gen).to(history_dtype).to(device)
    seen = torch.randint(0, 3 * T, (n,), generator=gen)
    seen[0] = 0
    seen = seen.to(device)
    u, bins = ubs.uncertainty(history, seen, lam=lam, tau=tau, backend=backend)
    expected, _ = reference.uncertainty(history, seen, lam, tau, dtype=torch.float64)
    assert u.dtype == torch.float32 and bins.dtype == torch.uint8 and u.device == history.device
    torch.testing.assert_close(u.double(), expected, rtol=0, atol=2e-6)
    assert torch.all(u[seen == 0] == 0) and torch.all(bins[seen == 0] == 0)
    assert_bins_match(bins, expected.cpu().numpy(), tau)
    # A history one element off alignment takes the scalar path: the same bits.
    buf = torch.empty(history.numel() + 1, dtype=history_dtype, device=device)
    shifted = buf[1:].view(n, T, q)
    shifted.copy_(history)
    u2, b2 = ubs.uncertainty(shifted, seen, lam=lam, tau=tau, backend=backend)
    assert torch.equal(u2, u) and torch.equal(b2, bins)


@pytest.mark.parametrize(("device", "backend"), device_backends("torch", "cuda", "triton", devices=("cuda",)))
@pytest.mark.parametrize("history_dtype", HISTORY_DTYPES)
def test_large_matches_float64_reference(device, backend, history_dtype):
    """100 003 samples of 999 labels, against the float64 reference on the GPU."""
    require_backend("uncertainty", backend, device)
    g = torch.Generator(device=device).manual_seed(1)
    n, T, q = 100_003, 5, 999
    history = torch.rand(n, T, q, generator=g, device=device).to(history_dtype)
    seen = torch.randint(0, 2 * T, (n,), generator=g, device=device)
    u, bins = ubs.uncertainty(history, seen, lam=0.5, tau=10, backend=backend)
    expected = reference.uncertainty(history, seen, 0.5, 10, dtype=torch.float64)[0]
    torch.testing.assert_close(u.double(), expected, rtol=0, atol=2e-6)
    assert_bins_match(bins, expected.cpu().numpy(), 10)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("history_dtype", HISTORY_DTYPES)
@pytest.mark.parametrize("q", [1, 3, 4, 8, 15, 16, 17, 33, 100])
def test_native_isa_paths(monkeypatch, isa, history_dtype, q):
    """Each vector width (16, 8, 4 lanes) with full vectors and every tail length."""
    require_backend("uncertainty", "cpu")
    monkeypatch.setenv("UBS_CPU_ISA", isa)
    T, lam, tau = 5, 0.5, 10
    history, seen, predictions = filled_history(20, T, q, history_dtype, seed=q)
    u, bins = torch.ops.ubs_kernels.uncertainty(history, seen, lam, tau)
    assert_rows_match_oracle(u, bins, predictions, T, lam, tau)


@pytest.mark.parametrize("isa", ["auto", "avx2", "portable"])
@pytest.mark.parametrize("history_dtype", HISTORY_DTYPES)
@pytest.mark.parametrize("T", [7, 8, 9, 12])
def test_native_long_windows(monkeypatch, isa, history_dtype, T):
    """Windows of up to 8 predictions have a loop each (unrolled); longer ones share one."""
    require_backend("uncertainty", "cpu")
    monkeypatch.setenv("UBS_CPU_ISA", isa)
    lam, tau = 0.4, 10
    history, seen, predictions = filled_history(3 * (T + 4), T, 37, history_dtype, seed=T)
    u, bins = torch.ops.ubs_kernels.uncertainty(history, seen, lam, tau)
    assert_rows_match_oracle(u, bins, predictions, T, lam, tau)


@pytest.mark.parametrize("lam", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("history_dtype", HISTORY_DTYPES)
def test_native_equals_torch_backend(lam, history_dtype):
    require_backend("uncertainty", "cpu")
    history, seen, _ = filled_history(300, 5, 41, history_dtype, seed=3)
    u_t, b_t = ubs.uncertainty(history, seen, lam=lam, backend="torch")
    u_c, b_c = ubs.uncertainty(history, seen, lam=lam, backend="cpu")
    torch.testing.assert_close(u_c, u_t, rtol=0, atol=1e-6)
    assert_bins_match(b_c, u_t.double().numpy(), 10)


@pytest.mark.parametrize("isa", ["auto", "avx2", "portable"])
@pytest.mark.parametrize("history_dtype", HISTORY_DTYPES)
@pytest.mark.parametrize("T", [4, 9])
def test_native_equals_native_observe_bitwise(monkeypatch, isa, history_dtype, T):
    """The per-step and whole-matrix passes share their code: same bits, not just close.
    (observe writes the new prediction to the ring and reads it back in the same pass; the
    whole-matrix pass reads it from the ring.)"""
    require_backend("uncertainty", "cpu")
    require_backend("observe", "cpu")
    monkeypatch.setenv("UBS_CPU_ISA", isa)
    gen = torch.Generator().manual_seed(4)
    n, q = 90, 37
    state = make_state(n, T, q, history_dtype)
    for _ in range(9):
        idx = torch.randperm(n, generator=gen)[:50]
        ubs.observe(*state, idx, torch.rand(50, q, generator=gen), lam=0.7, tau=7, backend="cpu")
    u, bins = torch.ops.ubs_kernels.uncertainty(state[0], state[1], 0.7, 7)
    assert torch.equal(u, state[2]) and torch.equal(bins, state[3])


def test_native_reproducible_across_threads():
    require_backend("uncertainty", "cpu")
    history, seen, _ = filled_history(4000, 5, 24, torch.float16, seed=5)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = torch.ops.ubs_kernels.uncertainty(history, seen, 0.5, 10)
    finally:
        torch.set_num_threads(threads)
    many = torch.ops.ubs_kernels.uncertainty(history, seen, 0.5, 10)
    assert torch.equal(one[0], many[0]) and torch.equal(one[1], many[1])


def test_native_noncontiguous_history():
    require_backend("uncertainty", "cpu")
    history, seen, _ = filled_history(30, 3, 10, torch.float32, seed=6)
    strided = history.transpose(0, 2).contiguous().transpose(0, 2)
    assert not strided.is_contiguous()
    got = torch.ops.ubs_kernels.uncertainty(strided, seen, 0.5, 10)
    want = torch.ops.ubs_kernels.uncertainty(history, seen, 0.5, 10)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


@pytest.mark.parametrize(("device", "backend"), device_backends("cpu", "cuda"))
def test_native_empty_and_unobserved(device, backend):
    """n = 0 gives empty outputs from the raw op (the public API rejects n = 0 as a state)."""
    require_backend("uncertainty", backend, device)
    op = registered_op("uncertainty", backend)
    for T, q in [(3, 4), (5, 3)]:
        empty = (torch.zeros(0, T, q, device=device), torch.zeros(0, dtype=torch.long, device=device))
        u, bins = op(*empty, 0.5, 10)
        assert u.shape == bins.shape == (0, q)
    with pytest.raises(ValueError, match="every size >= 1"):
        ubs.uncertainty(torch.zeros(0, 3, 4, device=device), torch.zeros(0, dtype=torch.long, device=device))
    # Rows of never-observed samples are 0 even when their ring holds garbage.
    history = torch.rand(5, 3, 4, device=device)
    u, bins = op(history, torch.zeros(5, dtype=torch.long, device=device), 0.5, 10)
    assert torch.all(u == 0) and torch.all(bins == 0)


def test_reference_float64_agrees_with_oracle():
    """The torch reference in float64 is the same maths as the numpy oracle (to 1e-12)."""
    history, seen, predictions = filled_history(40, 4, 6, torch.float32, seed=7)
    u, _ = reference.uncertainty(history, seen, 0.4, 10, dtype=torch.float64)
    for i, preds in enumerate(predictions):
        if preds:
            np.testing.assert_allclose(u[i].numpy(), numpy_uncertainty(preds, 4, 0.4), rtol=0, atol=1e-12)


N, T, Q = 6, 3, 4
GOOD = (torch.rand(N, T, Q), torch.ones(N, dtype=torch.long), 0.5, 10)
RAW_CASES = [
    ("history-float64", (torch.rand(N, T, Q, dtype=torch.float64), *GOOD[1:]), TypeError, "history must be float16"),
    ("history-int", (torch.zeros(N, T, Q, dtype=torch.int32), *GOOD[1:]), TypeError, "history must be float16"),
    ("history-2d", (torch.rand(N, Q), *GOOD[1:]), ValueError, r"history must have shape \(n, T, q\)"),
    ("history-T0", (torch.rand(N, 0, Q), *GOOD[1:]), ValueError, "history must have shape"),
    ("history-q0", (torch.rand(N, T, 0), *GOOD[1:]), ValueError, "history must have shape"),
    ("seen-int32", (GOOD[0], torch.ones(N, dtype=torch.int32), 0.5, 10), TypeError, "seen must be int64"),
    ("seen-length", (GOOD[0], torch.ones(N + 1, dtype=torch.long), 0.5, 10), ValueError, "seen must have shape"),
    ("seen-2d", (GOOD[0], torch.ones(N, 1, dtype=torch.long), 0.5, 10), ValueError, "seen must have shape"),
    ("seen-negative", (GOOD[0], torch.tensor([1, 2, -1, 0, 3, 1]), 0.5, 10), ValueError, "seen must be >= 0"),
    ("lam-large", (*GOOD[:2], 1.5, 10), ValueError, r"lam must be in \[0, 1\]"),
    ("lam-nan", (*GOOD[:2], float("nan"), 10), ValueError, "lam"),
    ("tau-small", (*GOOD[:3], 1), ValueError, "tau"),
    ("tau-large", (*GOOD[:3], 257), ValueError, "tau"),
]


@pytest.mark.parametrize(("args", "exc", "match"), [c[1:] for c in RAW_CASES], ids=[c[0] for c in RAW_CASES])
def test_native_op_checks_for_itself(args, exc, match):
    """torch.ops.ubs_kernels.uncertainty called directly, without the Python checks."""
    require_backend("uncertainty", "cpu")
    with pytest.raises(exc, match=match):
        torch.ops.ubs_kernels.uncertainty(*args)


def test_native_rejects_unknown_isa(monkeypatch):
    require_backend("uncertainty", "cpu")
    monkeypatch.setenv("UBS_CPU_ISA", "sse9")
    with pytest.raises(ValueError, match="UBS_CPU_ISA"):
        torch.ops.ubs_kernels.uncertainty(*GOOD)
