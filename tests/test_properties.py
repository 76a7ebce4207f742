"""Property tests (hypothesis): symmetry and bounds of MI, self-information, probabilities."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from sklearn.metrics import mutual_info_score

import ubs_kernels as ubs
from ubs_kernels import reference

settings.register_profile("ubs", max_examples=60, deadline=None)
settings.load_profile("ubs")


@st.composite
def bins_and_tau(draw, max_n=80, max_q=6):
    tau = draw(st.integers(2, 16))
    n = draw(st.integers(1, max_n))
    q = draw(st.integers(1, max_q))
    arr = draw(arrays(np.uint8, (n, q), elements=st.integers(0, tau - 1)))
    return torch.from_numpy(arr), tau


def column_entropy(col: np.ndarray) -> float:
    p = np.bincount(col) / col.size
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


@given(bins_and_tau())
def test_mi_symmetric_and_bounded(data):
    bins, tau = data
    C = ubs.label_mi(bins, tau).double().numpy()
    np.testing.assert_allclose(C, C.T, atol=1e-6)
    np.testing.assert_allclose(np.diag(C), 1.0)
    q = bins.shape[1]
    H = [column_entropy(bins[:, j].numpy()) for j in range(q)]
    for a in range(q):
        for b in range(q):
            if a != b:
                assert -1e-7 <= C[a, b] <= min(H[a], H[b]) + 1e-5


@given(bins_and_tau(max_q=1))
def test_mi_of_column_with_itself_is_its_entropy(data):
    bins, tau = data
    twice = torch.cat([bins, bins], dim=1)
    H = column_entropy(bins[:, 0].numpy())
    assert abs(ubs.label_mi(twice, tau)[0, 1].item() - H) <= 1e-5 * max(1.0, H)
    assert abs(mutual_info_score(bins[:, 0], bins[:, 0]) - H) < 1e-9  # the oracle agrees


@given(
    arrays(np.float32, st.tuples(st.integers(1, 40), st.integers(1, 5)), elements=st.floats(0, 1, width=32)),
    st.floats(1.0, 1e4),
)
def test_probabilities_sum_to_one_and_grow_with_weight(u_np, s):
    u = torch.from_numpy(u_np)
    n, q = u.shape
    c = torch.ones(q)
    seen = torch.ones(n, dtype=torch.long)
    logp = ubs.selection_log_probs(u, c, seen, s)
    p = logp.double().exp()
    assert abs(p.sum().item() - 1.0) < 1e-5
    # Ordered by w in float64: the native kernel accumulates U c in float64, so rows whose w
    # tie in float32 (e.g. 1 + 2e-16 and 1) may differ there; rows that tie in float32 get the
    # same P from the float32 backends, so this order is right for every backend.
    w = u.double() @ c.double()
    order = torch.argsort(w, stable=True)
    assert torch.all(logp[order][1:] >= logp[order][:-1] - 1e-6), "P must not decrease as w grows"


@given(
    arrays(np.float32, st.tuples(st.integers(1, 8), st.integers(1, 6)), elements=st.floats(0, 1, width=32)),
    st.integers(1, 6),
    st.floats(0, 1),
)
def test_observe_u_in_unit_interval(probs_np, repeats, lam):
    probs = torch.from_numpy(probs_np)
    b, q = probs.shape
    state = (
        torch.zeros(b, 3, q),
        torch.zeros(b, dtype=torch.long),
        torch.zeros(b, q),
        torch.zeros(b, q, dtype=torch.uint8),
    )
    for r in range(repeats):
        ubs.observe(*state, torch.arange(b), probs.roll(r, dims=0), lam=lam)
    u = state[2]
    assert torch.all((u >= 0) & (u <= 1 + 1e-6))


@given(st.floats(0, 1))
def test_entropy_symmetric_and_bounded(p):
    t = torch.tensor([p, 1 - p], dtype=torch.float64)
    e = reference.entropy(t, torch.float64)
    assert abs(e[0] - e[1]) < 1e-12 and 0 <= e[0] <= 1 + 1e-12
