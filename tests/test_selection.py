"""Weights and selection probabilities (docs/spec.md Eq. 7-10) and the pressure schedule (Eq. 11)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import backend_params, require_backend

import ubs_kernels as ubs


def numpy_log_probs(u, C, seen, s):
    """Eq. 7-10 in float64 numpy, literally: U_bar = U C, w = U_bar 1, z, Q, P."""
    u, C, seen = u.double().numpy(), C.double().numpy(), seen.numpy()
    n = u.shape[0]
    w = (u @ C).sum(axis=1)
    obs = seen > 0
    z = np.ones(n)
    if obs.any():
        lo, hi = w[obs].min(), w[obs].max()
        z[obs] = (w[obs] - lo) / (hi - lo) if hi > lo else 0.0
    Q = np.floor((1 - z) / (1.0 / n))
    logits = -np.log(s) * Q / n
    return logits - np.logaddexp.reduce(logits), Q


def _inputs(n=300, q=9, seed=0, unobserved=20):
    gen = torch.Generator().manual_seed(seed)
    u = torch.rand(n, q, generator=gen)
    seen = torch.randint(1, 9, (n,), generator=gen)
    seen[torch.randperm(n, generator=gen)[:unobserved]] = 0
    u[seen == 0] = 0
    A = torch.rand(q, q, generator=gen)
    C = (A + A.T) / 4
    C.fill_diagonal_(1.0)
    return u, C, seen


@pytest.mark.parametrize("backend", backend_params())
@pytest.mark.parametrize("s", [1.0, 2.0, 100.0])
def test_log_probs_match_numpy(backend, s):
    require_backend("selection_log_probs", backend)
    u, C, seen = _inputs()
    logp = ubs.selection_log_probs(u, C.sum(1), seen, s, backend=backend)
    expected, _ = numpy_log_probs(u, C, seen, s)
    assert logp.dtype == torch.float32 and logp.shape == (u.shape[0],)
    # One quantisation step (Q off by 1 at an exact boundary) moves log P by ln(s)/n.
    np.testing.assert_allclose(logp.numpy(), expected, rtol=0, atol=math.log(s) / u.shape[0] + 1e-5)
    assert logp.exp().sum().item() == pytest.approx(1.0, abs=1e-5)


def test_pressure_ratio_and_unobserved_first():
    u, C, seen = _inputs()
    s = 100.0
    p = ubs.selection_log_probs(u, C.sum(1), seen, s).exp()
    # z spans [0, 1] over the observed samples, so Q spans [0, n] and max/min P = s.
    assert (p.max() / p.min()).item() == pytest.approx(s, rel=1e-4)
    assert torch.all(p[seen == 0] == p.max()), "never-observed samples must get the largest P"


def test_all_equal_weights_give_uniform_selection():
    n, q = 50, 4
    u = torch.full((n, q), 0.25)
    p = ubs.selection_log_probs(u, torch.ones(q), torch.ones(n, dtype=torch.long), 100.0).exp()
    torch.testing.assert_close(p, torch.full((n,), 1.0 / n))
    none_seen = ubs.selection_log_probs(u, torch.ones(q), torch.zeros(n, dtype=torch.long), 100.0).exp()
    torch.testing.assert_close(none_seen, torch.full((n,), 1.0 / n))


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
