"""The native CUDA kernels (csrc/cuda) on a CUDA device. Every test is marked ``gpu`` and skips,
with the reason, without a CUDA device or when this build has no CUDA kernels.

Oracles: ``sklearn.metrics.mutual_info_score`` on every pair (label_mi), the float64 reference
(on the GPU for the large shapes), and the float64 numpy recomputation of Eq. 7-10. Shapes cover
every code path of the kernels: tau = 2 (128 labels per tile), 16 (the last prmt tau), 17 (the
byte compare), 65 and 129 (one label per tile), 130 and 256 (every bin kept, padding corrected),
n not a multiple of the 128-sample chunk, q = 1, vectorised and scalar rows, unobserved samples.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from conftest import assert_bins_match, make_state, require_backend
from sklearn.metrics import mutual_info_score

import ubs_kernels as ubs
from ubs_kernels import reference

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]
CUDA = "cuda"


def cuda_or_skip(op: str) -> None:
    require_backend(op, "cuda", CUDA)


def correlated_bins(n: int, q: int, tau: int, seed: int) -> torch.Tensor:
    """Bins of a noisy rank-2 U; column 1 copies column 0 and a block of rows sits in the last
    bin, so the joint tables have a heavy diagonal and a populated (tau-1, tau-1) cell."""
    if n == 0:
        return torch.empty(0, q, dtype=torch.uint8)
    gen = torch.Generator().manual_seed(seed)
    factors = torch.rand(n, 2, generator=gen) @ torch.rand(2, q, generator=gen)
    u = (factors / factors.max() + 0.3 * torch.rand(n, q, generator=gen)) / 1.3
    bins = reference.to_bins(u, tau)
    if q > 1:
        bins[:, 1] = bins[:, 0]
    bins[: n // 5] = tau - 1
    return bins


def sklearn_matrix(bins: torch.Tensor) -> np.ndarray:
    b = bins.cpu().numpy()
    q = b.shape[1]
    out = np.eye(q)
    for i, j in itertools.combinations(range(q), 2):
        out[i, j] = out[j, i] = mutual_info_score(b[:, i], b[:, j]) if b.shape[0] else 0.0
    return out


MI_SHAPES = [(1000, 37, 10), (1, 3, 10), (0, 4, 10), (997, 1, 10), (300, 130, 2), (517, 20, 16),
             (517, 20, 17), (300, 9, 65), (300, 5, 129), (300, 4, 130), (600, 3, 256), (129, 17, 3)]  # fmt: skip


@pytest.mark.parametrize(("n", "q", "tau"), MI_SHAPES)
def test_label_mi_matches_sklearn(n, q, tau):
    cuda_or_skip("label_mi")
    bins = correlated_bins(n, q, tau, seed=n + q + tau)
    expected = sklearn_matrix(bins)
    C = ubs.label_mi(bins.to(CUDA), tau, backend="cuda")
    assert C.device.type == "cuda" and C.dtype == torch.float32 and C.shape == (q, q)
    np.testing.assert_allclose(C.cpu().numpy(), expected, rtol=1e-5, atol=1e-6)
    c = ubs.label_mi(bins.to(CUDA), tau, rowsum=True, backend="cuda")
    assert c.shape == (q,)
    np.testing.assert_allclose(c.cpu().numpy(), expected.sum(1), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("n", "q", "tau"), [(100_003, 257, 10), ((1 << 24) + 3, 3, 4)])
def test_label_mi_large_matches_reference(n, q, tau):
    """Many tiles and chunks; the second has more rows than float32 counts exactly."""
    cuda_or_skip("label_mi")
    gen = torch.Generator(device=CUDA).manual_seed(n)
    u = torch.rand(n, 4, generator=gen, device=CUDA) @ torch.rand(4, q, generator=gen, device=CUDA) / 4
    bins = reference.to_bins((u + 0.2 * torch.rand(n, q, generator=gen, device=CUDA)) / 1.2, tau)
    expected = reference.label_mi(bins, tau, dtype=torch.float64)
    torch.testing.assert_close(ubs.label_mi(bins, tau, backend="cuda").double(), expected, rtol=1e-5, atol=1e-6)
    got = ubs.label_mi(bins, tau, rowsum=True, backend="cuda").double()
    torch.testing.assert_close(got, expected.sum(1), rtol=1e-5, atol=1e-5)


def test_label_mi_row_sums_are_deterministic():
    cuda_or_skip("label_mi")
    bins = correlated_bins(20_000, 150, 10, 5).to(CUDA)
    first = ubs.label_mi(bins, 10, rowsum=True, backend="cuda")
    for _ in range(3):
        assert torch.equal(ubs.label_mi(bins, 10, rowsum=True, backend="cuda"), first)


def test_label_mi_native_checks_for_itself():
    cuda_or_skip("label_mi")
    op = torch.ops.ubs_kernels.label_mi
    with pytest.raises(ValueError, match=r"bins must be in \[0, tau=4\)"):
        op(torch.full((300, 2), 4, dtype=torch.uint8, device=CUDA), 4, False)
    with pytest.raises(TypeError, match="bins must be uint8"):
        op(torch.zeros(5, 2, dtype=torch.int64, device=CUDA), 4, False)
    with pytest.raises(ValueError, match="tau"):
        op(torch.zeros(5, 2, dtype=torch.uint8, device=CUDA), 1, False)


def run_rounds(T, q, tau, history_dtype, probs_dtype, lam=0.5, seed=0):
    """Observe sample i exactly i % (T+4) times on CUDA and with the float64 reference on the CPU."""
    gen = torch.Generator().manual_seed(seed)
    n = 3 * (T + 4)
    target = torch.arange(n) % (T + 4)
    state, ref = make_state(n, T, q, history_dtype, device=CUDA), make_state(n, T, q, history_dtype)
    for r in range(T + 4):
        idx = (target > r).nonzero().flatten()
        idx = idx[torch.randperm(idx.numel(), generator=gen)]
        probs = torch.rand(idx.numel(), q, generator=gen)
        probs[:, 0], probs[:, 1 % q] = 0.0, 1.0  # e(0) = e(1) = 0
        probs = probs.to(probs_dtype)
        ubs.observe(*state, idx.to(CUDA), probs.to(CUDA), lam=lam, tau=tau, backend="cuda")
        reference.observe(*ref, idx, probs, lam, tau, dtype=torch.float64)
    return state, ref


@pytest.mark.parametrize("history_dtype", [torch.float16, torch.float32])
@pytest.mark.parametrize("probs_dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize(("T", "q", "tau"), [(5, 7, 10), (1, 3, 2), (2, 1, 16), (8, 33, 10), (5, 64, 10)])
def test_observe_matches_reference(history_dtype, probs_dtype, T, q, tau):
    cuda_or_skip("observe")
    state, ref = run_rounds(T, q, tau, history_dtype, probs_dtype)
    assert torch.equal(state[0].cpu(), ref[0]) and torch.equal(state[1].cpu(), ref[1])
    torch.testing.assert_close(state[2].cpu(), ref[2], rtol=0, atol=2e-6)
    u64, _ = reference.uncertainty(ref[0], ref[1], 0.5, tau, dtype=torch.float64)
    assert_bins_match(state[3], u64.numpy(), tau)
    # The whole-matrix kernel runs the same device code: the same bits.
    u, b = ubs.uncertainty(state[0], state[1], 0.5, tau, backend="cuda")
    assert torch.equal(u, state[2]) and torch.equal(b, state[3])


@pytest.mark.parametrize("history_dtype", [torch.float16, torch.float32])
def test_observe_large_matches_reference(history_dtype):
    cuda_or_skip("observe")
    g = torch.Generator(device=CUDA).manual_seed(0)
    n, T, q, b, tau, lam = 50_000, 5, 1000, 4096, 10, 0.3
    history = torch.rand(n, T, q, generator=g, device=CUDA).to(history_dtype)
    seen = torch.randint(0, 3 * T, (n,), generator=g, device=CUDA)
    state = [history, seen, *reference.uncertainty(history, seen, lam, tau)]
    ref = [t.clone() for t in state]
    for _ in range(3):
        idx = torch.randperm(n, generator=g, device=CUDA)[:b]
        probs = torch.rand(b, q, generator=g, device=CUDA)
        ubs.observe(*state, idx, probs, lam=lam, tau=tau, backend="cuda")
        reference.observe(*ref, idx, probs, lam, tau, dtype=torch.float64)
    assert torch.equal(state[0], ref[0]) and torch.equal(state[1], ref[1])
    torch.testing.assert_close(state[2], ref[2], rtol=0, atol=2e-6)
    assert_bins_match(state[3], ref[2].double().cpu().numpy(), tau)


def _warm_state(n=12, T=3, q=5):
    state = make_state(n, T, q, device=CUDA)
    for _ in range(4):
        ubs.observe(*state, torch.randperm(n, device=CUDA)[:6], torch.rand(6, q, device=CUDA), backend="torch")
    return state


def _probs(value=None):
    p = torch.full((3, 5), 0.5, device=CUDA)
    if value is not None:
        p[1, 2] = value
    return p


IDX = [0, 5, 9]
BAD_OBSERVE = [
    ("probs-nan", IDX, _probs, float("nan"), ValueError, "probs"),
    ("probs-inf", IDX, _probs, float("inf"), ValueError, "probs"),
    ("probs-above-1", IDX, _probs, 1.0001, ValueError, r"\[0, 1\]"),
    ("probs-negative", IDX, _probs, -1e-6, ValueError, r"probs\[1, 2\]"),
    ("index-too-large", [0, 5, 12], _probs, None, IndexError, "indices"),
    ("index-negative", [0, -1, 2], _probs, None, IndexError, "indices"),
    ("index-duplicate", [4, 7, 4], _probs, None, ValueError, "duplicate"),
]


@pytest.mark.parametrize(
    ("idx", "make", "value", "exc", "match"), [c[1:] for c in BAD_OBSERVE], ids=[c[0] for c in BAD_OBSERVE]
)
def test_native_observe_rejects_and_leaves_state(idx, make, value, exc, match):
    """torch.ops.ubs_kernels.observe on CUDA, without the Python checks: the device checks run first."""
    cuda_or_skip("observe")
    state = _warm_state()
    before = [t.clone() for t in state]
    with pytest.raises(exc, match=match):
        torch.ops.ubs_kernels.observe(*state, torch.tensor(idx, device=CUDA), make(value), 0.5, 10)
    for x, y in zip(state, before, strict=True):
        assert torch.equal(x, y), "state changed"


def test_native_observe_rejects_bad_metadata():
    cuda_or_skip("observe")
    state, idx, op = _warm_state(), torch.tensor(IDX, device=CUDA), torch.ops.ubs_kernels.observe
    with pytest.raises(TypeError, match="probs"):
        op(*state, idx, torch.zeros(3, 5, dtype=torch.int64, device=CUDA), 0.5, 10)
    with pytest.raises(ValueError, match="probs must have shape"):
        op(*state, idx, torch.full((3, 6), 0.5, device=CUDA), 0.5, 10)
    with pytest.raises(ValueError, match="lam"):
        op(*state, idx, _probs(), 1.5, 10)
    with pytest.raises(ValueError, match="tau"):
        op(*state, idx, _probs(), 0.5, 257)
    with pytest.raises(ValueError, match="device"):
        op(*state, idx.cpu(), _probs(), 0.5, 10)
    state[1][5] = -1
    with pytest.raises(ValueError, match="seen must be >= 0"):
        op(*state, idx, _probs(), 0.5, 10)
    op(*state, idx[:0], _probs()[:0], 0.5, 10)  # an empty batch is a no-op


@pytest.mark.parametrize("history_dtype", [torch.float16, torch.float32])
@pytest.mark.parametrize(
    ("n", "T", "q"), [(1000, 5, 37), (999, 4, 64), (500, 1, 6), (77, 3, 12), (300, 8, 1), (2, 5, 1000)]
)
def test_uncertainty_matches_reference(history_dtype, n, T, q):
    cuda_or_skip("uncertainty")
    g = torch.Generator(device=CUDA).manual_seed(n + q)
    history = torch.rand(n, T, q, generator=g, device=CUDA).to(history_dtype)
    seen = torch.randint(0, 3 * T, (n,), generator=g, device=CUDA)
    u, b = ubs.uncertainty(history, seen, 0.5, 10, backend="cuda")
    expected, _ = reference.uncertainty(history, seen, 0.5, 10, dtype=torch.float64)
    torch.testing.assert_close(u.double(), expected, rtol=0, atol=2e-6)
    assert torch.all(u[seen == 0] == 0) and torch.all(b[seen == 0] == 0)
    assert_bins_match(b, expected.cpu().numpy(), 10)
    # A history one element off alignment takes the scalar path: the same bits.
    buf = torch.empty(history.numel() + 1, dtype=history_dtype, device=CUDA)
    shifted = buf[1:].view(n, T, q)
    shifted.copy_(history)
    u2, b2 = torch.ops.ubs_kernels.uncertainty(shifted, seen, 0.5, 10)
    assert torch.equal(u2, u) and torch.equal(b2, b)


def test_uncertainty_empty():
    cuda_or_skip("uncertainty")
    u, b = torch.ops.ubs_kernels.uncertainty(
        torch.zeros(0, 5, 3, device=CUDA), torch.zeros(0, dtype=torch.long, device=CUDA), 0.5, 10
    )
    assert u.shape == (0, 3) and b.shape == (0, 3)


def numpy_log_probs(u, c, seen, s):
    """Eq. 7-10 in float64 numpy: w = U c, z over observed samples, Q, log P."""
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


@pytest.mark.parametrize("s", [1.0, 2.0, 100.0])
@pytest.mark.parametrize(
    ("n", "q", "unobserved"), [(300, 9, 20), (301, 64, 0), (1, 3, 0), (5, 2, 5), (200_000, 300, 1000)]
)
def test_selection_log_probs_matches_numpy(s, n, q, unobserved):
    cuda_or_skip("selection_log_probs")
    g = torch.Generator(device=CUDA).manual_seed(n + q)
    u = torch.rand(n, q, generator=g, device=CUDA)
    seen = torch.randint(1, 9, (n,), generator=g, device=CUDA)
    seen[torch.randperm(n, generator=g, device=CUDA)[:unobserved]] = 0
    c = torch.rand(q, generator=g, device=CUDA) * q
    logp = ubs.selection_log_probs(u, c, seen, s, backend="cuda")
    assert logp.dtype == torch.float32 and logp.shape == (n,) and logp.device.type == "cuda"
    # One quantisation step (Q off by one at an exact boundary) moves log P by ln(s) / n.
    np.testing.assert_allclose(logp.cpu().numpy(), numpy_log_probs(u, c, seen, s), rtol=0, atol=math.log(s) / n + 1e-5)
    assert logp.double().exp().sum().item() == pytest.approx(1.0, abs=1e-5)
    assert torch.equal(ubs.selection_log_probs(u, c, seen, s, backend="cuda"), logp)  # deterministic


def test_selection_log_probs_uniform_cases():
    cuda_or_skip("selection_log_probs")
    n, q = 50, 4
    u, c = torch.full((n, q), 0.25, device=CUDA), torch.ones(q, device=CUDA)
    for seen in (torch.ones(n, dtype=torch.long, device=CUDA), torch.zeros(n, dtype=torch.long, device=CUDA)):
        p = ubs.selection_log_probs(u, c, seen, 100.0, backend="cuda").exp()
        torch.testing.assert_close(p, torch.full((n,), 1.0 / n, device=CUDA))


def _op_samples():
    gen = torch.Generator().manual_seed(0)
    state = [t for t in make_state(20, 4, 8, device=CUDA)]
    observe = (
        *state,
        torch.randperm(20, generator=gen)[:8].to(CUDA),
        torch.rand(8, 8, generator=gen).to(CUDA),
        0.5,
        10,
    )
    bins = correlated_bins(300, 7, 10, 0).to(CUDA)
    seen = torch.randint(0, 3, (20,), device=CUDA)
    return {
        "observe": observe,
        "record": (state[0].clone(), state[1].clone(), observe[4], observe[5]),
        "uncertainty": (torch.rand(20, 4, 8, device=CUDA).half(), seen, 0.5, 10),
        "label_mi": (bins, 10, True),
        "selection_log_probs": (torch.rand(20, 8, device=CUDA), torch.rand(8, device=CUDA), seen, 3.0),
    }


@pytest.mark.parametrize("op", ["observe", "record", "uncertainty", "label_mi", "selection_log_probs"])
def test_opcheck_cuda(op):
    cuda_or_skip(op)
    torch.library.opcheck(getattr(torch.ops.ubs_kernels, op).default, _op_samples()[op])


def test_compile_fullgraph_label_mi_and_current_stream():
    cuda_or_skip("label_mi")
    bins = correlated_bins(3000, 40, 10, 1).to(CUDA)
    compiled = torch.compile(lambda b: torch.ops.ubs_kernels.label_mi(b, 10, True) * 2, fullgraph=True)
    expected = ubs.label_mi(bins, 10, rowsum=True, backend="cuda") * 2
    torch.testing.assert_close(compiled(bins), expected)
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):  # the kernels launch on the current stream
        got = ubs.label_mi(bins, 10, rowsum=True, backend="cuda") * 2
    stream.synchronize()
    assert torch.equal(got, expected)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_runs_on_the_device_of_its_inputs():
    cuda_or_skip("label_mi")
    bins = correlated_bins(500, 9, 10, 2)
    got = ubs.label_mi(bins.to("cuda:1"), 10, backend="cuda")
    assert got.device == torch.device("cuda:1")
    torch.testing.assert_close(got.cpu(), ubs.label_mi(bins.to("cuda:0"), 10, backend="cuda").cpu())
