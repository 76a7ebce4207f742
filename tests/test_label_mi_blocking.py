"""The native label_mi's blocking: label blocks sized to L2, work in a fixed number of chunks.

Shapes here are picked so that the CPU kernel splits the labels into more block pairs than it
has chunks (64), and row sums are compared across thread counts bit for bit.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import correlated_bins, require_backend, sklearn_matrix
from test_label_mi import ISA_CAPS

import ubs_kernels as ubs


@pytest.mark.parametrize("isa", ["auto", *ISA_CAPS[1:]])
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
    bins = correlated_bins(n, q, tau, seed=q, heavy=False)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = ubs.label_mi(bins, tau, rowsum=True, backend="cpu")
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, ubs.label_mi(bins, tau, rowsum=True, backend="cpu"))


def _bins_using(occupancy: list[int], n: int, tau: int, seed: int) -> torch.Tensor:
    """Label j occupies exactly occupancy[j] of tau bins (random positions, uneven weights)."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, max(occupancy), n)
    cols = []
    for m in occupancy:
        used = rng.choice(tau, size=m, replace=False)
        own = rng.choice(m, size=n, p=rng.dirichlet(np.ones(m)))
        cols.append(used[np.where(rng.random(n) < 0.4, base % m, own)])  # correlated through base
    return torch.as_tensor(np.stack(cols, axis=1), dtype=torch.uint8)


@pytest.mark.parametrize("occupancy", ["2", "3", "4", "5", "7", "mixed"])
def test_few_bins_tiles_span_label_pairs(monkeypatch, occupancy):
    """A label occupying m bins keeps m - 1 bitsets; labels with equal counts are neighbours,
    and one register tile covers several pairs when their bitsets fit it (AVX-512 and NEON: 3 x 8
    rows; POPCNT: 2 x 4; AVX2: 1 x 3; portable: 1 x 4), or several tiles cover one pair. q = 61
    gives 8 label blocks (one partial), so groups are cut at block ends, on the diagonal and, in
    "mixed" (1 to 7 bins per label, constant labels too), where the bin count changes. Every path
    equals sklearn, and the row sums are the same bits on every path (pairs are visited in the same
    order)."""
    require_backend("label_mi", "cpu")
    rng = np.random.default_rng(len(occupancy))
    m = rng.integers(1, 8, 61).tolist() if occupancy == "mixed" else [int(occupancy)] * 61
    bins = _bins_using(m, 777, 10, seed=len(m) + m[0])
    expected = sklearn_matrix(bins)
    sums = {}
    for isa in ISA_CAPS:
        monkeypatch.setenv("UBS_CPU_ISA", isa)
        got = ubs.label_mi(bins, 10, backend="cpu").double().numpy()
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6, err_msg=isa)
        sums[isa] = ubs.label_mi(bins, 10, rowsum=True, backend="cpu")
        np.testing.assert_allclose(sums[isa].double().numpy(), expected.sum(1), rtol=1e-5, atol=1e-5)
    assert all(torch.equal(sums[isa], sums["portable"]) for isa in ISA_CAPS)


def _bins_with_rare(n: int, q: int, tau: int, seed: int) -> torch.Tensor:
    """Per label: a dominant bin, one or two bins of hundreds of samples, and rare bins of 1 to
    60 samples (7 of them, or 197 when tau > 70; some labels constant, some with only rare bins
    besides the dominant one)."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 1 << 30, n)
    cols = []
    for j in range(q):
        order = rng.permutation(tau)
        col = np.full(n, order[0])
        if j % 11 != 0:  # every 11th label is constant
            start = 0
            for k in range(1, min(tau, 9 if tau <= 70 else 200)):
                size = int(rng.integers(300, 900)) if k <= j % 3 else int(rng.integers(1, 61))
                pick = (base + j * 7919 + start) % n if k == 1 else rng.integers(0, n, size)
                col[np.sort(np.unique(pick))[:size] if k == 1 else pick] = order[k]
                start += size
        cols.append(col)
    return torch.as_tensor(np.stack(cols, axis=1), dtype=torch.uint8)


@pytest.mark.parametrize(("n", "q", "tau"), [(8000, 70, 10), (8000, 70, 70), (3000, 40, 256)])
def test_rare_bins_counted_from_rows(monkeypatch, n, q, tau):
    """Bins of at most a few dozen samples are counted from their samples' rows, not ANDed as
    bitsets (the cost model makes them sparse at these sizes): mixed with dense bins, byte
    tables of tau x 128 labels (q = 70 pads to 128), tau > 64 (the scalar row scan on every
    path), and at tau = 256 more rare bins than the tables' memory cap admits (the smallest
    stay sparse). Every path equals sklearn; row sums are the same bits on every path."""
    require_backend("label_mi", "cpu")
    bins = _bins_with_rare(n, q, tau, seed=q + tau)
    expected = sklearn_matrix(bins)
    sums = {}
    for isa in ISA_CAPS:
        monkeypatch.setenv("UBS_CPU_ISA", isa)
        got = ubs.label_mi(bins, tau, backend="cpu").double().numpy()
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6, err_msg=isa)
        sums[isa] = ubs.label_mi(bins, tau, rowsum=True, backend="cpu")
        np.testing.assert_allclose(sums[isa].double().numpy(), expected.sum(1), rtol=1e-5, atol=1e-5)
    assert all(torch.equal(sums[isa], sums["portable"]) for isa in ISA_CAPS)


@pytest.mark.parametrize("active", [0, 1, 2, 9, 40])
def test_constant_labels_are_skipped(active):
    """Most labels constant, as a settled model's bins are (the demo at Corel5k size: 1.4
    occupied bins per label): their pairs are skipped, the matrix is 0 there (diagonal 1), and
    the active labels' pairs are counted as before. The active labels are scattered among the
    constant ones; with none or one active label there is no pair to count at all."""
    require_backend("label_mi", "cpu")
    n, q = 2000, 64
    rng = np.random.default_rng(active)
    bins = torch.as_tensor(rng.integers(0, 10, q), dtype=torch.uint8).expand(n, q).clone()  # constants
    cols = rng.choice(q, active, replace=False)
    base = rng.integers(0, 10, n)
    for k, j in enumerate(cols):  # correlated, 2 to 10 occupied bins
        col = np.where(rng.random(n) < 0.6, base, rng.integers(0, 10, n)) % (2 + k % 9)
        bins[:, j] = torch.as_tensor(col, dtype=torch.uint8)
    expected = sklearn_matrix(bins)
    got = ubs.label_mi(bins, 10, backend="cpu").double().numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    constant = np.setdiff1d(np.arange(q), cols)
    assert (got[np.ix_(constant, np.arange(q))] == np.eye(q)[constant]).all()
    c = ubs.label_mi(bins, 10, rowsum=True, backend="cpu").double().numpy()
    np.testing.assert_allclose(c, expected.sum(1), rtol=1e-5, atol=1e-5)
    assert (c[constant] == 1).all()
