"""The native label_mi's blocking: label blocks sized to L2, work in a fixed number of chunks.

Shapes here are picked so that the CPU kernel splits the labels into more block pairs than it
has chunks (64), and row sums are compared across thread counts bit for bit.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import require_backend
from test_label_mi import correlated_bins, sklearn_matrix

import ubs_kernels as ubs


@pytest.mark.parametrize("isa", ["auto", "popcnt"])
def test_many_block_pairs_match_sklearn(monkeypatch, isa):
    """tau = 128, n = 4000: 127 bitsets of 64 words per label, so 5 labels per block and
    12 blocks (78 block pairs) for q = 60."""
    require_backend("label_mi", "cpu")
    monkeypatch.setenv("UBS_CPU_ISA", isa)
    gen = torch.Generator().manual_seed(11)
    base = torch.randint(0, 128, (4000, 1), generator=gen)
    noise = torch.randint(0, 128, (4000, 60), generator=gen)
    bins = torch.where(torch.rand(4000, 60, generator=gen) < 0.5, base, noise).to(torch.uint8)
    expected = sklearn_matrix(bins)
    np.testing.assert_allclose(ubs.label_mi(bins, 128, backend="cpu").numpy(), expected, rtol=1e-5, atol=1e-6)
    c = ubs.label_mi(bins, 128, rowsum=True, backend="cpu").numpy()
    np.testing.assert_allclose(c, expected.sum(1), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("n", "q", "tau"), [(3000, 150, 10), (700, 97, 7)])
def test_row_sums_do_not_depend_on_threads(n, q, tau):
    require_backend("label_mi", "cpu")
    bins = correlated_bins(n, q, tau, seed=q)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = ubs.label_mi(bins, tau, rowsum=True, backend="cpu")
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, ubs.label_mi(bins, tau, rowsum=True, backend="cpu"))
