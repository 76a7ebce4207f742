"""Weights and selection probabilities (docs/spec.md Eq. 7-10) and the pressure schedule
(Eq. 11), on every backend and device.

Oracle: Eq. 7-10 in float64 numpy (conftest.numpy_log_probs), to one quantisation step. The
native CPU kernel is also held to the reference's exact steps: float32 w and z, Q in double from
z. Triton on the CPU runs under the interpreter; the CUDA cases are marked ``gpu``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import device_backends, numpy_log_probs, require_backend

import ubs_kernels as ubs
from ubs_kernels import reference


def selection_inputs(n, q, seed, unobserved):
    """U, a symmetric C with unit diagonal (as label_mi gives) and counts with ``unobserved``
    samples never seen. Their rows of U alternate between 0 and 1, so their weights lie below
    and above every observed one: the normalisation must leave them out."""
    gen = torch.Generator().manual_seed(seed)
    u = torch.rand(n, q, generator=gen)
    seen = torch.randint(1, 9, (n,), generator=gen)
    never = torch.randperm(n, generator=gen)[:unobserved]
    seen[never] = 0
    u[never] = (torch.arange(never.numel()) % 2).float()[:, None]
    A = torch.rand(q, q, generator=gen)
    C = (A + A.T) / 4
    C.fill_diagonal_(1.0)
    return u, C, seen


# (n, q, unobserved): n not a multiple of a block, q = 1, n = 1, every sample unobserved.
SHAPES = [(300, 9, 20), (301, 64, 0), (1, 3, 0), (5, 2, 5), (1500, 9, 30), (7, 1, 0)]


@pytest.mark.parametrize(("device", "backend", "n", "q", "unobserved"), device_backends(cases=SHAPES))
@pytest.mark.parametrize("s", [1.0, 2.0, 100.0])
def test_log_probs_match_numpy(device, backend, n, q, unobserved, s):
    require_backend("selection_log_probs", backend, device)
    u, C, seen = selection_inputs(n, q, n + q, unobserved)
    check_log_probs(u, C, seen, s, device, backend, sum_tol=1e-5)


@pytest.mark.parametrize(
    ("device", "backend", "n", "q", "unobserved"),
    device_backends("torch", "cuda", "triton", devices=("cuda",), cases=[(200_000, 300, 1000), (1_000_003, 100, 1000)]),
)
@pytest.mark.parametrize("s", [1.0, 2.0, 100.0])
def test_log_probs_large(device, backend, n, q, unobserved, s):
    require_backend("selection_log_probs", backend, device)
    u, C, seen = selection_inputs(n, q, 3, unobserved)
    check_log_probs(u, C, seen, s, device, backend, sum_tol=1e-4 if n > 500_000 else 1e-5)


def check_log_probs(u, C, seen, s, device, backend, sum_tol):
    n = u.shape[0]
    args = (u.to(device), C.sum(1).to(device), seen.to(device), s)
    logp = ubs.selection_log_probs(*args, backend=backend)
    assert logp.dtype == torch.float32 and logp.shape == (n,) and logp.device.type == torch.device(device).type
    # One quantisation step (Q off by 1 at an exact boundary) moves log P by ln(s)/n.
    np.testing.assert_allclose(logp.cpu().numpy(), numpy_log_probs(u, C, seen, s), rtol=0, atol=math.log(s) / n + 1e-5)
    assert logp.double().exp().sum().item() == pytest.approx(1.0, abs=sum_tol)
    assert torch.equal(ubs.selection_log_probs(*args, backend=backend), logp)  # deterministic


@pytest.mark.parametrize(("device", "backend"), device_backends())
@pytest.mark.parametrize("q", [5, 9])
def test_pressure_ratio_and_unobserved_first(device, backend, q):
    require_backend("selection_log_probs", backend, device)
    u, C, seen = selection_inputs(300, q, q, 20)
    s = 100.0
    p = ubs.selection_log_probs(u.to(device), C.sum(1).to(device), seen.to(device), s, backend=backend).exp().cpu()
    # z spans [0, 1] over the observed samples, so Q spans [0, n] and max/min P = s.
    assert (p.max() / p.min()).item() == pytest.approx(s, rel=1e-4)
    assert torch.all(p[seen == 0] == p.max()), "never-observed samples must get the largest P"


@pytest.mark.parametrize(("device", "backend"), device_backends())
@pytest.mark.parametrize(("n", "q"), [(50, 4), (40, 3)])
def test_all_equal_weights_give_uniform_selection(device, backend, n, q):
    require_backend("selection_log_probs", backend, device)
    u, c = torch.full((n, q), 0.25, device=device), torch.ones(q, device=device)
    for seen in (torch.ones(n, dtype=torch.long, device=device), torch.zeros(n, dtype=torch.long, device=device)):
        p = ubs.selection_log_probs(u, c, seen, 100.0, backend=backend).exp()
        torch.testing.assert_close(p, torch.full((n,), 1.0 / n, device=device))


def test_pressure_schedule_eq11():
    s0, warmup, epochs = 100.0, 5, 100
    values = [ubs.selection_pressure(t, s0, warmup, epochs) for t in range(0, epochs + 5)]
    assert values[warmup] == pytest.approx(s0)
    assert values[epochs] == pytest.approx(1.0) and values[-1] == 1.0
    decay = values[warmup : epochs + 1]
    assert all(a > b for a, b in zip(decay, decay[1:], strict=False))
    # Exponential: constant ratio between epochs, (1/s0)^(1/(E - warmup)).
    ratios = np.array(decay[1:]) / np.array(decay[:-1])
    np.testing.assert_allclose(ratios, (1 / s0) ** (1 / (epochs - warmup)), rtol=1e-12)
    t = 40
    assert values[t] == pytest.approx(s0 * math.exp(math.log(1 / s0) / (epochs - warmup)) ** (t - warmup))


# ---------------------------------------------------------------- the native CPU kernel

ISAS = ["auto", "avx512", "avx2", "portable"]


def log_probs_from_q(Q: np.ndarray, s: float) -> np.ndarray:
    """Eq. 10 in float64 from the integer Q."""
    logits = -math.log(s) * Q / Q.shape[0]
    return logits - np.logaddexp.reduce(logits)


def q_from_weights(w: torch.Tensor, seen: torch.Tensor) -> np.ndarray:
    """Eq. 9 from float32 weights, with the reference's own normalise and quantise."""
    return reference.quantise(reference.normalise(w, seen), w.shape[0]).numpy()


def dyadic_inputs(n, q, seed, unobserved=5):
    """U in multiples of 1/8 and small-integer c: every w = U c is exact in float32."""
    gen = torch.Generator().manual_seed(seed)
    u = torch.randint(0, 9, (n, q), generator=gen).float() / 8
    c = torch.randint(1, 4, (q,), generator=gen).float()
    seen = torch.randint(1, 6, (n,), generator=gen)
    seen[torch.randperm(n, generator=gen)[:unobserved]] = 0
    return u, c, seen


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize(("n", "q"), [(1, 1), (2, 3), (97, 5), (1000, 33), (5000, 17)])
@pytest.mark.parametrize("s", [1.0, 7.5, 100.0])
def test_exact_weights_give_exact_q_and_log_p(monkeypatch, isa, n, q, s):
    """With exact w, Q is the reference's exactly and log P is within 1e-6 of float64."""
    require_backend("selection_log_probs", "cpu")
    monkeypatch.setenv("UBS_CPU_ISA", isa)
    u, c, seen = dyadic_inputs(n, q, seed=n + q, unobserved=min(5, n - 1))
    Q = q_from_weights(reference.weights(u, c), seen)
    got = torch.ops.ubs_kernels.selection_log_probs(u, c, seen, s)
    assert got.dtype == torch.float32 and got.shape == (n,)
    np.testing.assert_allclose(got.double().numpy(), log_probs_from_q(Q, s), rtol=0, atol=1e-6)
    torch.testing.assert_close(got, ubs.selection_log_probs(u, c, seen, s, backend="torch"), rtol=0, atol=1e-6)


@pytest.mark.parametrize(("n", "q"), [(300, 9), (4000, 120)])
def test_random_weights_q_matches_correctly_rounded_reference(n, q):
    """Q equals the reference's on the correctly rounded float32 w; the torch backend's float32
    GEMV can be an ulp off, which moves Q by one step for a few samples, never more."""
    require_backend("selection_log_probs", "cpu")
    gen = torch.Generator().manual_seed(n)
    u, c = torch.rand(n, q, generator=gen), torch.rand(q, generator=gen) * 2
    seen = torch.randint(0, 4, (n,), generator=gen)
    s = 50.0
    Q = q_from_weights(reference.weights(u, c, torch.float64).float(), seen)
    got = torch.ops.ubs_kernels.selection_log_probs(u, c, seen, s).double().numpy()
    np.testing.assert_allclose(got, log_probs_from_q(Q, s), rtol=0, atol=1e-6)
    torch_backend = ubs.selection_log_probs(u, c, seen, s, backend="torch").double().numpy()
    step = math.log(s) / n
    assert np.abs(got - torch_backend).max() <= step + 1e-5
    assert (np.abs(got - torch_backend) > step / 2).mean() < 0.01


def test_unobserved_first_and_uniform_cases():
    require_backend("selection_log_probs", "cpu")
    op = torch.ops.ubs_kernels.selection_log_probs
    u, c, seen = dyadic_inputs(200, 6, seed=1, unobserved=7)
    p = op(u, c, seen, 100.0).double().exp()
    assert p.sum().item() == pytest.approx(1.0, abs=1e-6)
    assert torch.all(p[seen == 0] == p.max())
    assert (p.max() / p.min()).item() == pytest.approx(100.0, rel=1e-5)
    n = 50
    flat = torch.full((n, 4), 0.25)
    for seen_all in (torch.ones(n, dtype=torch.long), torch.zeros(n, dtype=torch.long)):
        torch.testing.assert_close(op(flat, torch.ones(4), seen_all, 100.0).exp(), torch.full((n,), 1.0 / n))
    torch.testing.assert_close(op(u, c, seen, 1.0).exp(), torch.full((200,), 1.0 / 200))


def test_reproducible_across_threads():
    require_backend("selection_log_probs", "cpu")
    gen = torch.Generator().manual_seed(2)
    u, c = torch.rand(20000, 40, generator=gen), torch.rand(40, generator=gen)
    seen = torch.randint(0, 3, (20000,), generator=gen)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = torch.ops.ubs_kernels.selection_log_probs(u, c, seen, 20.0)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, torch.ops.ubs_kernels.selection_log_probs(u, c, seen, 20.0))


U, C, SEEN = torch.rand(5, 3), torch.ones(3), torch.ones(5, dtype=torch.long)
U_INF = U.clone()
U_INF[2, 1] = float("inf")
RAW_CASES = [
    ("u-float64", (U.double(), C, SEEN, 2.0), TypeError, "uncertainty must be float32"),
    ("u-1d", (U[0], C, SEEN, 2.0), ValueError, r"uncertainty must have shape \(n, q\)"),
    ("u-empty", (torch.rand(0, 3), C, torch.ones(0, dtype=torch.long), 2.0), ValueError, "n, q >= 1"),
    ("u-inf", (U_INF, C, SEEN, 2.0), ValueError, "uncertainty must be finite"),
    ("c-float64", (U, C.double(), SEEN, 2.0), TypeError, "c must be float32"),
    ("c-shape", (U, torch.ones(4), SEEN, 2.0), ValueError, r"c must have shape \(3,\)"),
    ("c-nan", (U, torch.tensor([1.0, float("nan"), 1.0]), SEEN, 2.0), ValueError, "c must be finite"),
    ("seen-int32", (U, C, SEEN.int(), 2.0), TypeError, "seen must be int64"),
    ("seen-shape", (U, C, torch.ones(6, dtype=torch.long), 2.0), ValueError, r"seen must have shape \(5,\)"),
    ("pressure-small", (U, C, SEEN, 0.5), ValueError, "pressure must be a finite number >= 1"),
    ("pressure-nan", (U, C, SEEN, float("nan")), ValueError, "pressure"),
    ("pressure-inf", (U, C, SEEN, float("inf")), ValueError, "pressure"),
]


@pytest.mark.parametrize(("args", "exc", "match"), [c[1:] for c in RAW_CASES], ids=[c[0] for c in RAW_CASES])
def test_native_op_checks_for_itself(args, exc, match):
    """torch.ops.ubs_kernels.selection_log_probs called directly, without the Python checks."""
    require_backend("selection_log_probs", "cpu")
    with pytest.raises(exc, match=match):
        torch.ops.ubs_kernels.selection_log_probs(*args)
