"""The Triton backend (``ubs_kernels/triton``) against independent oracles.

``interpreter`` tests run the kernels on the CPU under ``TRITON_INTERPRET=1`` (``make
test-interpret``) on tiny shapes, chosen so that n and q are not multiples of the block sizes,
tiles off the diagonal exist, windows are not yet full and some samples are never observed.
``gpu`` tests repeat the checks on large shapes, run ``opcheck`` and ``torch.compile`` on a CUDA
device. Oracles: the float64 numpy recomputation of Eq. 1, 4, 5 (``conftest``),
``sklearn.metrics.mutual_info_score``, ``numpy.bincount`` and the float64 reference.
"""

from __future__ import annotations

import itertools
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import assert_bins_match, make_state, numpy_uncertainty, require_backend
from sklearn.metrics import mutual_info_score

import ubs_kernels as ubs
from ubs_kernels import reference

interpreter = pytest.mark.interpreter
gpu = pytest.mark.gpu
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
HISTORY_NP = {torch.float16: np.float16, torch.float32: np.float32}


def triton_or_skip(op: str, device: str = "cpu") -> None:
    require_backend(op, "triton", device)


def observe_rounds(T, q, history_dtype, probs_dtype, tau, lam=0.3, device="cpu", seed=0):
    """Sample i is observed i % (T + 3) times in shuffled batches: seen 0 .. T+2, windows not yet
    full and full. Returns the state and each sample's list of stored predictions (float64)."""
    gen = torch.Generator().manual_seed(seed)
    n = 2 * (T + 3) + 1
    target = torch.arange(n) % (T + 3)
    state = make_state(n, T, q, history_dtype, device)
    preds: list[list[np.ndarray]] = [[] for _ in range(n)]
    for r in range(T + 2):
        idx = (target > r).nonzero().flatten()
        idx = idx[torch.randperm(idx.numel(), generator=gen)]
        probs = torch.rand(idx.numel(), q, generator=gen)
        probs[:, 0] = 0.0  # e(0) = e(1) = 0
        probs[:, -1] = 1.0
        probs = probs.to(probs_dtype)
        ubs.observe(*state, idx.to(device), probs.to(device), lam=lam, tau=tau, backend="triton")
        stored = probs.to(history_dtype).float().numpy().astype(HISTORY_NP[history_dtype]).astype(np.float64)
        for row, i in enumerate(idx.tolist()):
            preds[i].append(stored[row])
    return state, preds, target


def sklearn_mi(bins: torch.Tensor) -> np.ndarray:
    b = bins.cpu().numpy()
    q = b.shape[1]
    out = np.eye(q)
    for i, j in itertools.combinations(range(q), 2):
        out[i, j] = out[j, i] = mutual_info_score(b[:, i], b[:, j])
    return out


def correlated_bins(n: int, q: int, tau: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    u = (torch.rand(n, 2, generator=gen) @ torch.rand(2, q, generator=gen)) / 2 + 0.3 * torch.rand(n, q, generator=gen)
    return reference.to_bins(u / 1.3, tau)


def numpy_log_probs(u, c, seen, s):
    """Eq. 7-10 in float64 numpy, and Q (Eq. 9)."""
    u, c, seen = u.double().cpu().numpy(), c.double().cpu().numpy(), seen.cpu().numpy()
    n = u.shape[0]
    w = u @ c
    obs = seen > 0
    z = np.ones(n)
    if obs.any():
        lo, hi = w[obs].min(), w[obs].max()
        z[obs] = (w[obs] - lo) / (hi - lo) if hi > lo else 0.0
    logits = -np.log(s) * np.floor((1 - z) * n) / n
    return logits - np.logaddexp.reduce(logits)


# ---------------------------------------------------------------- observe and uncertainty


@interpreter
@pytest.mark.parametrize("history_dtype", [torch.float16, torch.float32])
@pytest.mark.parametrize("probs_dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
def test_observe_matches_numpy_every_dtype(history_dtype, probs_dtype):
    triton_or_skip("observe")
    check_observe(3, 5, 10, history_dtype, probs_dtype)


@interpreter
@pytest.mark.parametrize(("T", "q", "tau"), [(1, 1, 2), (2, 3, 16), (5, 19, 10)])
def test_observe_matches_numpy_shapes(T, q, tau):
    triton_or_skip("observe")
    check_observe(T, q, tau, torch.float16, torch.float32)


def check_observe(T, q, tau, history_dtype, probs_dtype, device="cpu", lam=0.3):
    (history, seen, u, bins), preds, target = observe_rounds(T, q, history_dtype, probs_dtype, tau, lam, device)
    assert torch.equal(seen.cpu(), target)
    history, u, bins = history.cpu(), u.cpu(), bins.cpu()
    for i, p in enumerate(preds):
        if not p:
            assert torch.all(u[i] == 0) and torch.all(bins[i] == 0), "a never-observed row was written"
            continue
        expected = numpy_uncertainty(p, T, lam)
        np.testing.assert_allclose(u[i].numpy(), expected, rtol=0, atol=2e-6)
        assert_bins_match(bins[i], expected, tau)
        k = min(len(p), T)
        for h, row in enumerate(p[-k:]):  # ring slot (seen - k + h) % T holds the h-th newest-k row
            np.testing.assert_array_equal(history[i, (len(p) - k + h) % T].double().numpy(), row)
    # The whole-matrix pass of the same backend gives the same bits from the history alone.
    u2, b2 = ubs.uncertainty(history.to(seen.device), seen, lam=lam, tau=tau, backend="triton")
    assert torch.equal(u2.cpu(), u) and torch.equal(b2.cpu(), bins)


@interpreter
@pytest.mark.parametrize(("n", "T", "q"), [(37, 4, 5), (3, 2, 600), (1, 1, 1)])
@pytest.mark.parametrize("history_dtype", [torch.float16, torch.float32])
def test_uncertainty_matches_float64_reference(n, T, q, history_dtype):
    triton_or_skip("uncertainty")
    gen = torch.Generator().manual_seed(n + q)
    history = torch.rand(n, T, q, generator=gen).to(history_dtype)
    seen = torch.randint(0, 2 * T + 2, (n,), generator=gen)
    seen[0] = 0
    u, bins = ubs.uncertainty(history, seen, lam=0.7, tau=7, backend="triton")
    expected = reference.uncertainty(history, seen, 0.7, 7, dtype=torch.float64)[0]
    assert u.dtype == torch.float32 and bins.dtype == torch.uint8
    np.testing.assert_allclose(u.numpy(), expected.numpy(), rtol=0, atol=2e-6)
    assert_bins_match(bins, expected.numpy(), 7)
    assert torch.all(u[seen == 0] == 0) and torch.all(bins[seen == 0] == 0)


@interpreter
def test_observe_edge_calls():
    triton_or_skip("observe")
    state = make_state(6, 3, 4)
    before = tuple(t.clone() for t in state)
    torch.ops.ubs_kernels.observe_triton(*state, torch.empty(0, dtype=torch.long), torch.empty(0, 4), 0.5, 10)
    assert all(torch.equal(a, b) for a, b in zip(state, before, strict=True)), "b = 0 must be a no-op"
    a, b = make_state(10, 3, 4), make_state(10, 3, 4)
    probs = torch.rand(8, 4)[::2]  # a strided view
    ubs.observe(*a, torch.tensor([3, 1, 7, 0], dtype=torch.int32), probs, backend="triton")
    ubs.observe(*b, torch.tensor([3, 1, 7, 0]), probs.contiguous(), backend="torch")
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    torch.testing.assert_close(a[2], b[2], rtol=0, atol=1e-6)


# ---------------------------------------------------------------- label_mi

MI_CASES = {  # (n, q, tau): q > labels per tile gives off-diagonal tiles (16 at tau=10, 8 at tau=16)
    "tau10-offdiag": (203, 21, 10),
    "tau2": (64, 6, 2),
    "tau16-offdiag": (150, 11, 16),
    "tau4-remainder": (40, 5, 4),
    "tau200-chunked": (90, 3, 200),
    "q=1": (30, 1, 10),
    "n=1": (1, 3, 10),
    "n=0": (0, 4, 10),
}


@interpreter
@pytest.mark.parametrize("case", list(MI_CASES))
def test_label_mi_equals_sklearn(case):
    triton_or_skip("label_mi")
    n, q, tau = MI_CASES[case]
    bins = correlated_bins(n, q, tau, seed=n + q)
    expected = sklearn_mi(bins) if n else np.eye(q)
    C = ubs.label_mi(bins, tau, backend="triton")
    assert C.dtype == torch.float32 and C.shape == (q, q)
    np.testing.assert_allclose(C.numpy(), expected, rtol=1e-5, atol=1e-6)
    c = ubs.label_mi(bins, tau, rowsum=True, backend="triton")
    assert c.shape == (q,)
    np.testing.assert_allclose(c.numpy(), expected.sum(1), rtol=1e-5, atol=1e-5)


@interpreter
def test_label_mi_many_labels_tau2():
    """128 labels per tile at tau = 2: q = 130 needs an off-diagonal tile and a ragged one."""
    triton_or_skip("label_mi")
    bins = correlated_bins(70, 130, 2, seed=3)
    expected = reference.label_mi(bins, 2, dtype=torch.float64).numpy()
    np.testing.assert_allclose(ubs.label_mi(bins, 2, backend="triton").numpy(), expected, rtol=1e-5, atol=1e-6)
    c = ubs.label_mi(bins, 2, rowsum=True, backend="triton").numpy()
    np.testing.assert_allclose(c, expected.sum(1), rtol=1e-5, atol=1e-5)


@interpreter
@pytest.mark.parametrize("tau", [3, 10, 200])
def test_bin_counts_are_exact(tau):
    """The marginal pass (the last bin of each pair is derived from it) against numpy.bincount."""
    triton_or_skip("label_mi")
    from ubs_kernels.triton import label_mi as tmi

    bins = correlated_bins(301, 5, tau, seed=tau)
    th = 1 << (tau - 1).bit_length()
    hist = tmi._histogram(bins, tau, th)
    for a in range(5):
        np.testing.assert_array_equal(hist[a].numpy(), np.bincount(bins[:, a].numpy(), minlength=th))


@interpreter
def test_label_mi_known_values():
    """Self-MI is the entropy; the hand-computed case of test_label_mi."""
    triton_or_skip("label_mi")
    col = correlated_bins(200, 1, 10, seed=9)
    C = ubs.label_mi(torch.cat([col, col], dim=1), 10, backend="triton")
    p = np.bincount(col[:, 0].numpy()) / 200
    p = p[p > 0]
    assert C[0, 1].item() == pytest.approx(-(p * np.log(p)).sum(), rel=1e-6)
    a = torch.tensor([0, 1, 0, 1], dtype=torch.uint8)
    b = torch.tensor([0, 1, 0, 0], dtype=torch.uint8)
    expected = 0.5 * np.log(0.5 / 0.375) + 0.25 * np.log(0.25 / 0.125) + 0.25 * np.log(0.25 / 0.375)
    assert ubs.label_mi(torch.stack([a, b], 1), 2, backend="triton")[0, 1].item() == pytest.approx(expected, abs=1e-7)


# ---------------------------------------------------------------- selection_log_probs


def selection_inputs(n, q, seed, unobserved):
    gen = torch.Generator().manual_seed(seed)
    u = torch.rand(n, q, generator=gen)
    seen = torch.randint(1, 9, (n,), generator=gen)
    seen[torch.randperm(n, generator=gen)[:unobserved]] = 0
    u[seen == 0] = 0
    return u, torch.rand(q, generator=gen) * q, seen


@interpreter
@pytest.mark.parametrize(("n", "q", "unobserved"), [(1500, 9, 30), (7, 1, 0), (1, 3, 0), (5, 2, 5)])
@pytest.mark.parametrize("s", [1.0, 100.0])
def test_selection_log_probs_match_numpy(n, q, unobserved, s):
    triton_or_skip("selection_log_probs")
    u, c, seen = selection_inputs(n, q, n + q, unobserved)
    logp = ubs.selection_log_probs(u, c, seen, s, backend="triton")
    assert logp.dtype == torch.float32 and logp.shape == (n,)
    # One quantisation step (Q off by one at an exact boundary) moves log P by ln(s)/n.
    np.testing.assert_allclose(logp.numpy(), numpy_log_probs(u, c, seen, s), rtol=0, atol=math.log(s) / n + 1e-5)
    assert logp.double().exp().sum().item() == pytest.approx(1.0, abs=1e-5)


@interpreter
def test_selection_all_equal_and_ratio():
    triton_or_skip("selection_log_probs")
    n, q = 40, 3
    p = ubs.selection_log_probs(torch.full((n, q), 0.25), torch.ones(q), torch.ones(n, dtype=torch.long), 100.0,
                                backend="triton").exp()  # fmt: skip
    torch.testing.assert_close(p, torch.full((n,), 1.0 / n))
    u, c, seen = selection_inputs(300, 5, 1, 20)
    p = ubs.selection_log_probs(u, c, seen, 100.0, backend="triton").exp()
    assert (p.max() / p.min()).item() == pytest.approx(100.0, rel=1e-4)
    assert torch.all(p[seen == 0] == p.max())


# ---------------------------------------------------------------- registration, tracing


def op_samples(device):
    gen = torch.Generator().manual_seed(0)
    n, T, q = 12, 3, 5
    history = torch.rand(n, T, q, generator=gen).half().to(device)
    seen = torch.randint(0, 5, (n,), generator=gen).to(device)
    u = torch.rand(n, q, generator=gen).to(device)
    bins = torch.randint(0, 10, (40, q), generator=gen, dtype=torch.uint8).to(device)
    state = (history, seen, torch.zeros(n, q, device=device), torch.zeros(n, q, dtype=torch.uint8, device=device))
    idx, probs = torch.tensor([3, 0, 7], device=device), torch.rand(3, q, generator=gen).to(device)
    ops = torch.ops.ubs_kernels
    return [
        (ops.observe_triton, (*state, idx, probs, 0.5, 10)),
        (ops.record_triton, (history.clone(), seen.clone(), idx, probs)),
        (ops.uncertainty_triton, (history, seen, 0.5, 10)),
        (ops.label_mi_triton, (bins, 10, False)),
        (ops.label_mi_triton, (bins, 10, True)),
        (ops.selection_log_probs_triton, (u, torch.rand(q, generator=gen).to(device), seen, 10.0)),
    ]


@interpreter
def test_opcheck_schema_on_interpreter():
    """Schema and mutation declarations; fake and AOT checks need real kernels (see the gpu test)."""
    triton_or_skip("label_mi")
    for op, args in op_samples("cpu"):
        torch.library.opcheck(op, args, test_utils=("test_schema", "test_autograd_registration"))


@pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") == "1", reason="interpreted kernels are not traceable")
def test_functional_trace_through_wrap_triton():
    """What torch.compile sees, without a GPU: fake CUDA tensors, functionalised, every launch a
    ``triton_kernel_wrapper_functional`` node and every output of the right shape."""
    pytest.importorskip("triton")
    from torch._functorch.aot_autograd import aot_export_module
    from torch._subclasses.fake_tensor import FakeTensorMode

    import ubs_kernels.triton as ubs_triton

    if ubs_triton.ERROR is not None:
        pytest.skip(ubs_triton.ERROR)

    class Step(torch.nn.Module):
        def forward(self, history, seen, u, bins, idx, probs):
            ops = torch.ops.ubs_kernels
            ops.observe_triton(history, seen, u, bins, idx, probs, 0.5, 10)
            c = ops.label_mi_triton(bins, 10, True)
            u2, b2 = ops.uncertainty_triton(history, seen, 0.5, 10)
            return ops.selection_log_probs_triton(u, c, seen, 10.0), ops.label_mi_triton(bins, 200, False), u2, b2

    with FakeTensorMode():
        n, T, q = 50, 5, 7
        args = (
            torch.empty(n, T, q, dtype=torch.float16, device="cuda"),
            torch.zeros(n, dtype=torch.long, device="cuda"),
            torch.empty(n, q, device="cuda"),
            torch.empty(n, q, dtype=torch.uint8, device="cuda"),
            torch.arange(8, device="cuda"),
            torch.empty(8, q, dtype=torch.float64, device="cuda"),
        )
        gm, _ = aot_export_module(Step(), args, trace_joint=False)
        outs = [node for node in gm.graph.nodes if node.op == "output"][0].args[0]
    launches = [nd for nd in gm.graph.nodes if "triton_kernel_wrapper_functional" in str(nd.target)]
    assert len(launches) >= 12
    shapes = [tuple(o.meta["val"].shape) for o in outs[-4:]]
    assert shapes == [(n,), (q, q), (n, q), (n, q)]


def test_package_imports_without_triton():
    """No Triton: ``ubs_kernels`` still imports, the backend says why and is never offered."""
    code = (
        "import sys; sys.modules['triton'] = None\n"
        "import ubs_kernels, ubs_kernels.triton as t\n"
        "assert t.ERROR and 'triton' in t.ERROR.lower(), t.ERROR\n"
        "assert not t.available('label_mi', 'cuda')\n"
        "assert 'triton' not in ubs_kernels.available_backends('label_mi', 'cpu')\n"
    )
    env = {**os.environ, "TRITON_INTERPRET": "1"}  # so that ops does try the Triton backend on the CPU
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr
