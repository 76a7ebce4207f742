"""Epoch planning: the exact law of successive sampling, no category limit, determinism."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from conftest import require_backend
from scipy import stats

import ubs_kernels as ubs
from ubs_kernels import sampling


def _exact_ordered_pairs(p: np.ndarray) -> dict[tuple[int, int], float]:
    """Successive sampling of 2 without replacement: P(i then j) = p_i p_j / (1 - p_i)."""
    return {(i, j): p[i] * p[j] / (1 - p[i]) for i, j in itertools.permutations(range(len(p)), 2)}


@pytest.mark.parametrize("seed", [0, 1])
def test_ordered_pairs_follow_successive_sampling(seed):
    p = np.array([0.4, 0.25, 0.2, 0.1, 0.05])
    batches = 40000
    rows = sampling.plan_weighted(torch.log(torch.tensor(p)), 2, batches, sampling.epoch_generator(seed, 7))
    assert rows.shape == (batches, 2)
    assert bool((rows[:, 0] != rows[:, 1]).all())
    exact = _exact_ordered_pairs(p)
    keys = sorted(exact)
    code = {k: c for c, k in enumerate(keys)}
    observed = np.bincount([code[(int(a), int(b))] for a, b in rows.tolist()], minlength=len(keys))
    expected = np.array([exact[k] for k in keys]) * batches
    assert stats.chisquare(observed, expected).pvalue > 1e-3


def test_full_batches_are_permutations_with_plackett_luce_first_draw():
    # b = n: every batch is a permutation; its first element is drawn from P itself.
    p = np.array([0.5, 0.3, 0.15, 0.05])
    rows = sampling.plan_weighted(torch.log(torch.tensor(p)), 4, 20000, sampling.epoch_generator(3, 0))
    assert bool((rows.sort(1).values == torch.arange(4)).all())
    first = np.bincount(rows[:, 0].numpy(), minlength=4)
    assert stats.chisquare(first, p * rows.shape[0]).pvalue > 1e-3


def test_inclusion_frequencies_match_numpy_choice():
    # numpy's Generator.choice(replace=False, p=P) has the same law: compare inclusion counts.
    rng = np.random.default_rng(0)
    n, b, batches = 50, 10, 4000
    p = rng.dirichlet(np.ones(n) * 0.5)
    ours = sampling.plan_weighted(torch.log(torch.tensor(p)), b, batches, sampling.epoch_generator(0, 0))
    theirs = np.stack([rng.choice(n, b, replace=False, p=p) for _ in range(batches)])
    a = np.bincount(ours.flatten().numpy(), minlength=n)
    c = np.bincount(theirs.flatten(), minlength=n)
    table = np.stack([a, c])[:, (a + c) > 20]
    assert stats.chi2_contingency(table).pvalue > 1e-3


def test_no_category_limit_beyond_2_pow_24():
    n = (1 << 24) + 1000  # torch.multinomial refuses more than 2^24 categories
    log_p = torch.full((n,), -50.0)
    log_p[-1000:] = 0.0  # all the mass beyond 2^24
    rows = sampling.plan_weighted(log_p, 8, 3, sampling.epoch_generator(0, 0))
    assert rows.shape == (3, 8)
    assert bool((rows >= (1 << 24)).all())


def test_batch_size_capped_by_support_and_concentrated_p_terminates():
    log_p = torch.tensor([0.0, 0.0, 0.0, -float("inf"), -float("inf")])
    rows = sampling.plan_weighted(log_p, 4, 5, sampling.epoch_generator(0, 0))
    assert rows.shape == (5, 3)
    assert bool((rows.sort(1).values == torch.arange(3)).all())
    skewed = torch.tensor([0.0] + [-12.0] * 9)  # one sample holds ~99.9% of the mass
    rows = sampling.plan_weighted(skewed, 10, 4, sampling.epoch_generator(0, 1))
    assert bool((rows.sort(1).values == torch.arange(10)).all())


def test_planning_is_deterministic_per_seed_epoch_rank():
    log_p = torch.randn(1000, generator=torch.Generator().manual_seed(0))

    def plan(*key):
        return sampling.plan_weighted(log_p, 32, 31, sampling.epoch_generator(*key))

    assert torch.equal(plan(1, 2, 0), plan(1, 2, 0))
    assert not torch.equal(plan(1, 2, 0), plan(1, 3, 0))
    assert not torch.equal(plan(1, 2, 0), plan(2, 2, 0))
    assert not torch.equal(plan(1, 2, 0), plan(1, 2, 1))


def test_uniform_plan_is_a_permutation():
    g = sampling.epoch_generator(0, 0)
    order = sampling.plan_uniform(10, 4, False, g)
    assert sorted(order.tolist()) == list(range(10))
    assert sampling.plan_uniform(10, 4, True, g).numel() == 8
    assert sampling.num_batches(10, 4, False) == 3
    assert sampling.num_batches(10, 4, True) == 2


@pytest.mark.parametrize(
    ("log_p", "b", "batches"),
    [
        (torch.randn(1000, generator=torch.Generator().manual_seed(1)) * 3, 32, 31),  # the selector's case
        (torch.log(torch.rand(5000, generator=torch.Generator().manual_seed(2))).double(), 128, 40),
        (torch.tensor([0.0, 0.0, 0.0, -float("inf"), -float("inf")]), 4, 5),  # b capped by the support
        (torch.tensor([0.0] + [-12.0] * 9), 10, 4),  # rows whose streams are continued
        (torch.tensor([0.0] + [-9.0] * 299), 64, 6),  # continued over several doubling chunks
        (torch.zeros(7), 3, 0),  # no batch
        (torch.zeros(1), 5, 3),  # one sample
    ],
)
def test_native_plan_equals_the_torch_version(log_p, b, batches):
    """The native kernel draws the same random numbers in the same order and keeps the same
    values, so the plans are equal, continued rows included."""
    require_backend("plan_weighted", "cpu")
    for seed in range(3):
        ours = ubs.plan_weighted(log_p, b, batches, sampling.epoch_generator(seed, 1), backend="cpu")
        torch_version = ubs.plan_weighted(log_p, b, batches, sampling.epoch_generator(seed, 1), backend="torch")
        assert ours.dtype == torch_version.dtype == torch.int64
        assert torch.equal(ours, torch_version)


def test_plan_backend_is_checked():
    with pytest.raises(RuntimeError, match="backend='cuda' cannot run ubs_kernels.plan_weighted"):
        ubs.plan_weighted(torch.zeros(4), 2, 1, sampling.epoch_generator(0, 0), backend="cuda")


@pytest.mark.parametrize("backend", ["torch", "cpu"])
@pytest.mark.parametrize(
    ("log_p", "args", "exc", "match"),
    [
        (torch.tensor([0.0, float("nan"), 0.0]), (2, 3), ValueError, r"log_p must not be NaN or \+inf, got log_p\[1\]"),
        (torch.tensor([0.0, float("inf")]), (1, 3), ValueError, "log_p must not be NaN or \\+inf"),
        (torch.full((4,), -float("inf")), (2, 3), ValueError, "-inf everywhere"),
        (torch.zeros(4, dtype=torch.int64), (2, 3), TypeError, "log_p must be a floating tensor"),
        (torch.zeros(2, 2), (2, 3), ValueError, r"log_p must have shape \(n,\)"),
        (torch.zeros(0), (2, 3), ValueError, "n >= 1"),
        (torch.zeros(4), (0, 3), ValueError, "batch_size"),
        (torch.zeros(4), (2, -1), ValueError, "batches"),
        (torch.zeros(4), (2.0, 3), TypeError, "batch_size"),
    ],
)
def test_bad_plan_input_is_refused(backend, log_p, args, exc, match):
    """A NaN or +inf log-probability (e.g. from a corrupt comparator state) used to plan an epoch
    of empty batches without a word."""
    require_backend("plan_weighted", backend)
    with pytest.raises(exc, match=match):
        ubs.plan_weighted(log_p, *args, sampling.epoch_generator(0, 0), backend=backend)


@pytest.mark.parametrize(
    ("log_p", "match"),
    [
        (torch.tensor([0.0, float("nan")]), "NaN"),
        (torch.tensor([0.0, float("inf")]), r"\+inf"),
        (torch.full((3,), -float("inf")), "-inf"),
    ],
)
def test_native_plan_checks_for_itself(log_p, match):
    require_backend("plan_weighted", "cpu")
    with pytest.raises(ValueError, match=match):
        torch.ops.ubs_kernels.plan_weighted(log_p, 2, 3, sampling.epoch_generator(0, 0))
