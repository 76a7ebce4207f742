"""The Triton backend on a CUDA device: large shapes, exact counts past 2^24 rows, opcheck and
``torch.compile(fullgraph=True)``. Every test is marked ``gpu`` and skips without CUDA.

Oracles as in ``test_triton.py``: the float64 reference (on the GPU, for speed), numpy float64,
and ``sklearn.metrics.mutual_info_score`` on a sample of pairs.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import assert_bins_match, require_backend
from sklearn.metrics import mutual_info_score
from test_triton import check_observe, correlated_bins, numpy_log_probs, op_samples, selection_inputs

import ubs_kernels as ubs
from ubs_kernels import reference

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]
CUDA = "cuda"


def triton_or_skip(op: str) -> None:
    require_backend(op, "triton", CUDA)


@pytest.mark.parametrize("history_dtype", [torch.float16, torch.float32])
@pytest.mark.parametrize("probs_dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_observe_small_shapes_on_gpu(history_dtype, probs_dtype):
    triton_or_skip("observe")
    check_observe(5, 37, 10, history_dtype, probs_dtype, device=CUDA)


@pytest.mark.parametrize("history_dtype", [torch.float16, torch.float32])
def test_observe_large_matches_reference(history_dtype):
    triton_or_skip("observe")
    g = torch.Generator(device=CUDA).manual_seed(0)
    n, T, q, b, tau, lam = 50_000, 5, 1000, 4096, 10, 0.5
    history = torch.rand(n, T, q, generator=g, device=CUDA).to(history_dtype)
    seen = torch.randint(0, 3 * T, (n,), generator=g, device=CUDA)
    state = [history, seen, *reference.uncertainty(history, seen, lam, tau)]
    ref = [t.clone() for t in state]
    for _ in range(3):
        idx = torch.randperm(n, generator=g, device=CUDA)[:b]
        probs = torch.rand(b, q, generator=g, device=CUDA)
        ubs.observe(*state, idx, probs, lam=lam, tau=tau, backend="triton")
        reference.observe(*ref, idx, probs, lam, tau, dtype=torch.float64)
    assert torch.equal(state[0], ref[0]) and torch.equal(state[1], ref[1])
    torch.testing.assert_close(state[2], ref[2].float(), rtol=0, atol=2e-6)
    assert_bins_match(state[3], ref[2].double().cpu().numpy(), tau)


@pytest.mark.parametrize("history_dtype", [torch.float16, torch.float32])
def test_uncertainty_large_matches_reference(history_dtype):
    triton_or_skip("uncertainty")
    g = torch.Generator(device=CUDA).manual_seed(1)
    n, T, q = 100_003, 5, 999
    history = torch.rand(n, T, q, generator=g, device=CUDA).to(history_dtype)
    seen = torch.randint(0, 2 * T, (n,), generator=g, device=CUDA)
    u, bins = ubs.uncertainty(history, seen, lam=0.5, tau=10, backend="triton")
    expected = reference.uncertainty(history, seen, 0.5, 10, dtype=torch.float64)[0]
    torch.testing.assert_close(u.double(), expected, rtol=0, atol=2e-6)
    assert_bins_match(bins, expected.cpu().numpy(), 10)


@pytest.mark.parametrize(("n", "q", "tau"), [(200_000, 300, 10), (100_000, 257, 2), (50_000, 65, 16), (20_000, 9, 256)])
def test_label_mi_large_matches_reference(n, q, tau):
    triton_or_skip("label_mi")
    bins = correlated_bins(n, q, tau, seed=q).to(CUDA)
    expected = reference.label_mi(bins, tau, dtype=torch.float64)
    C = ubs.label_mi(bins, tau, backend="triton")
    torch.testing.assert_close(C.double(), expected, rtol=1e-5, atol=1e-6)
    c = ubs.label_mi(bins, tau, rowsum=True, backend="triton")
    torch.testing.assert_close(c.double(), expected.sum(1), rtol=1e-5, atol=1e-5)
    b = bins.cpu().numpy()
    for i, j in [(0, q - 1), (1 % q, q // 2)]:  # an outside oracle on a few pairs
        if i != j:
            assert C[i, j].item() == pytest.approx(mutual_info_score(b[:, i], b[:, j]), rel=1e-5, abs=1e-6)


def test_counts_exact_past_float32_range():
    """n > 2^24: int32 tensor-core counts stay exact (a float32 accumulator would stall at 2^24)."""
    triton_or_skip("label_mi")
    n = (1 << 24) + (1 << 23) + 7
    g = torch.Generator(device=CUDA).manual_seed(2)
    col = (torch.rand(n, generator=g, device=CUDA) < 0.9).to(torch.uint8)
    bins = torch.stack([col, col, 1 - col], dim=1)
    ones = int(col.sum())
    p = np.array([n - ones, ones], dtype=np.float64) / n
    entropy = float(-(p * np.log(p)).sum())
    C = ubs.label_mi(bins, 2, backend="triton").cpu()
    assert C[0, 1].item() == pytest.approx(entropy, rel=1e-5)
    assert C[0, 2].item() == pytest.approx(entropy, rel=1e-5)
    from ubs_kernels.triton import label_mi as tmi

    hist = tmi._histogram(bins, 2, 2).cpu()
    assert hist[0].tolist() == [n - ones, ones] and hist[2].tolist() == [ones, n - ones]


@pytest.mark.parametrize("s", [1.0, 100.0])
def test_selection_log_probs_large(s):
    triton_or_skip("selection_log_probs")
    u, c, seen = selection_inputs(1_000_003, 100, 3, 1000)
    logp = ubs.selection_log_probs(u.to(CUDA), c.to(CUDA), seen.to(CUDA), s, backend="triton").cpu()
    n = u.shape[0]
    np.testing.assert_allclose(logp.numpy(), numpy_log_probs(u, c, seen, s), rtol=0, atol=math.log(s) / n + 1e-5)
    assert logp.double().exp().sum().item() == pytest.approx(1.0, abs=1e-4)


def test_auto_prefers_a_gpu_backend():
    assert "triton" in ubs.available_backends("label_mi", CUDA)


def test_opcheck_every_triton_op():
    triton_or_skip("label_mi")
    for op, args in op_samples(CUDA):
        torch.library.opcheck(op, args)


def test_torch_compile_fullgraph_traces_every_op():
    triton_or_skip("label_mi")
    ops = torch.ops.ubs_kernels

    def epoch_step(history, seen, u, bins, idx, probs):
        ops.observe_triton(history, seen, u, bins, idx, probs, 0.5, 10)
        c = ops.label_mi_triton(bins, 10, True)
        u2, b2 = ops.uncertainty_triton(history, seen, 0.5, 10)
        return ops.selection_log_probs_triton(u, c, seen, 10.0), ops.label_mi_triton(bins, 10, False), u2, b2

    g = torch.Generator(device=CUDA).manual_seed(4)
    n, T, q = 3000, 5, 40
    history = torch.rand(n, T, q, generator=g, device=CUDA).half()
    seen = torch.randint(0, 8, (n,), generator=g, device=CUDA)
    state = [history, seen, *reference.uncertainty(history, seen)]
    idx = torch.randperm(n, generator=g, device=CUDA)[:256]
    probs = torch.rand(256, q, generator=g, device=CUDA)
    eager_state = [t.clone() for t in state]
    expected = epoch_step(*eager_state, idx, probs)
    got = torch.compile(epoch_step, fullgraph=True)(*state, idx, probs)
    for a, b in zip(state, eager_state, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)  # row sums use float atomics: order may differ
