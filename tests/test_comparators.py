"""The comparators, each on its defining property, against numpy oracles of its equation."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

import ubs_kernels as ubs

N, Q, B = 400, 6, 40


def labels(seed=0, n=N, q=Q, rare=0.05, common=0.5):
    g = torch.Generator().manual_seed(seed)
    rates = torch.linspace(rare, common, q)
    return torch.rand(n, q, generator=g) < rates


def test_random_selector_shuffles_every_epoch():
    sel = ubs.RandomSelector(N, batch_size=B, seed=1)
    e0 = torch.cat(list(sel))
    e1 = torch.cat(list(sel))
    assert sorted(e0.tolist()) == sorted(e1.tolist()) == list(range(N))
    assert not torch.equal(e0, e1)
    sel.observe(torch.tensor([1, 2]), torch.full((2, 3), 0.5))  # accepted and ignored
    with pytest.raises(ValueError, match="probs"):
        sel.observe(torch.tensor([1, 2]), torch.full((2, 3), 2.0))


def test_balance_keeps_batch_label_frequencies_near_the_dataset():
    y = labels(seed=2)
    freq = y.float().mean(0)

    def deviation(sel):
        devs = [(y[b].float().mean(0) - freq).abs().mean() for b in sel]
        return float(torch.stack(devs).mean())

    balanced = ubs.BalanceSelector(y, batch_size=B, seed=3)
    assert sorted(torch.cat(list(balanced)).tolist()) == list(range(N))  # still a permutation
    dev_balance = np.mean([deviation(balanced) for _ in range(3)])
    dev_random = np.mean([deviation(ubs.RandomSelector(N, batch_size=B, seed=s)) for s in range(3)])
    assert dev_balance < 0.5 * dev_random
    # Every batch holds the rarest label's share, give or take one.
    rare = y[:, 0].sum().item() / len(balanced)
    assert all(abs(y[b, 0].sum().item() - rare) <= 1 for b in balanced)


def _observe_sequence(sel, history: list[torch.Tensor]):
    """Observe every sample with the predictions history[k] at step k."""
    everyone = torch.arange(N)
    for probs in history:
        sel.observe(everyone, probs)


def test_active_bias_score_is_eq2_of_the_whole_history():
    g = torch.Generator().manual_seed(4)
    history = [torch.rand(N, Q, generator=g) for _ in range(7)]
    sel = ubs.ActiveBiasSelector(N, Q, batch_size=B, warmup=0)
    _observe_sequence(sel, history)
    h = np.stack([p.double().numpy() for p in history])  # (|H|, n, q)
    var = h.var(axis=0)  # the prediction variance of the whole history
    expected = np.sqrt(var + var**2 / (len(history) - 1)).sum(1)
    np.testing.assert_allclose(sel.score().numpy(), expected, rtol=1e-4)
    list(sel)
    p = sel.sample_probabilities.double().numpy()
    eps = expected.mean()
    np.testing.assert_allclose(p, (expected + eps) / (expected + eps).sum(), rtol=1e-4)


def test_recency_bias_prefers_samples_whose_binarised_predictions_flip():
    flip = torch.arange(N) < N // 2
    history = []
    for step in range(5):
        p = torch.full((N, Q), 0.8)
        p[flip] = 0.8 if step % 2 == 0 else 0.2  # flips across 0.5 every step
        p[~flip] = 0.8 - 0.1 * step / 5  # drifts but never crosses 0.5
        history.append(p)
    sel = ubs.RecencyBiasSelector(N, Q, batch_size=B, window=5, warmup=0, epochs=10)
    _observe_sequence(sel, history)
    f = 2 / 5  # 2 of the 5 binarised predictions are negative
    expected = -(f * np.log2(f) + (1 - f) * np.log2(1 - f)) * Q
    np.testing.assert_allclose(sel.score()[flip].numpy(), expected, rtol=1e-5)
    assert float(sel.score()[~flip].abs().max()) == 0.0
    list(sel)
    p = sel.sample_probabilities
    assert float(p[flip].min()) == pytest.approx(100 * float(p[~flip].max()), rel=1e-3)  # pressure s0


def test_hard_imbalance_prefers_high_loss_samples_of_minority_labels():
    n, q = N, 2
    y = torch.zeros(n, q, dtype=torch.bool)
    y[:20, 0] = True  # label 0: 20 positives (minority)
    y[:200, 1] = True  # label 1: 200 positives
    sel = ubs.HardImbalanceSelector(y, batch_size=B, warmup=0, epochs=10)
    assert sel.imbalance_ratio.tolist() == [10.0, 1.0]
    # Every sample gets the same wrong confidence on its positives: equal raw BCE per positive.
    probs = torch.where(y, torch.tensor(0.3), torch.tensor(0.05))
    sel.observe(torch.arange(n), probs)
    bce = -np.where(y.numpy(), np.log(0.3), np.log(0.95))
    weight = np.where(y.numpy(), [10.0, 1.0], 1.0)
    np.testing.assert_allclose(sel.score().numpy(), (weight * bce).mean(1), rtol=1e-5)
    list(sel)
    p = sel.sample_probabilities
    assert float(p[:20].min()) > float(p[20:].max())  # minority positives first
    assert float(p[20:200].min()) > float(p[200:].max())  # then the other hard samples


def test_hard_imbalance_local_weight_uses_neighbours_labels():
    y = torch.zeros(6, 1, dtype=torch.bool)
    y[:3, 0] = True
    x = torch.tensor([[0.0], [0.1], [10.0], [10.1], [10.2], [0.2]])  # sample 2 sits among negatives
    sel = ubs.HardImbalanceSelector(y, features=x, batch_size=2, neighbours=2)
    # Sample 2's two neighbours (3, 4) disagree with it; sample 0's (1, 5) half agree.
    assert sel._weight[2, 0].item() == pytest.approx(1.0 * 2.0)
    assert sel._weight[0, 0].item() == pytest.approx(1.0 * 1.5)


def test_hard_imbalance_chain_batches_follow_label_correlations():
    g = torch.Generator().manual_seed(5)
    n, q = 600, 6
    base = torch.rand(n, generator=g) < 0.1
    y = torch.rand(n, q, generator=g) < 0.3
    y[:, 0] = base
    y[:, 1] = base ^ (torch.rand(n, generator=g) < 0.02)  # label 1 follows label 0
    probs = torch.full((n, q), 0.5)

    def share(chain):
        sel = ubs.HardImbalanceSelector(y, batch_size=30, warmup=0, epochs=10, chain=chain, chain_boost=4.0, seed=1)
        sel.observe(torch.arange(n), probs)
        batches = list(sel)
        assert all(b.unique().numel() == 30 for b in batches)
        return float(torch.stack([y[b, 1].float().mean() for b in batches]).mean())

    assert share(True) > share(False) + 0.05


@pytest.mark.parametrize(
    "make",
    [
        lambda d: ubs.ActiveBiasSelector(N, Q, batch_size=B, warmup=1, device=d),
        lambda d: ubs.RecencyBiasSelector(N, Q, batch_size=B, warmup=1, device=d),
        lambda d: ubs.HardImbalanceSelector(labels(), batch_size=B, warmup=1, device=d),
        lambda d: ubs.HardImbalanceSelector(labels(), batch_size=B, warmup=1, chain=True, device=d),
        lambda d: ubs.BalanceSelector(labels(), batch_size=B, device=d),
        lambda d: ubs.RandomSelector(N, batch_size=B, device=d),
    ],
)
def test_every_comparator_resumes_mid_epoch(make, device):
    """Bitwise the batches of an uninterrupted run, on every device."""

    def steps(sel, count, out):
        while len(out) < count:
            for b in sel:
                probs = (0.5 + 0.4 * torch.sin(b.double().unsqueeze(1) * 0.3 + len(out))).float().expand(-1, Q)
                sel.observe(b, probs.contiguous())
                out.append(b.clone())
                if len(out) == count:
                    return

    whole, part, rest = [], [], []
    steps(make(device), 35, whole)
    sel = make(device)
    steps(sel, 17, part)
    buffer = io.BytesIO()
    torch.save(sel.state_dict(), buffer)
    buffer.seek(0)
    resumed = make(device)
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    rest_count = 35 - 17
    while len(rest) < rest_count:
        for b in resumed:
            probs = (0.5 + 0.4 * torch.sin(b.double().unsqueeze(1) * 0.3 + 17 + len(rest))).float().expand(-1, Q)
            resumed.observe(b, probs.contiguous())
            rest.append(b.clone())
            if len(rest) == rest_count:
                break
    assert all(torch.equal(a, b) for a, b in zip(part + rest, whole, strict=True))


def test_labels_must_be_binary():
    with pytest.raises(ValueError, match="labels"):
        ubs.BalanceSelector(torch.full((4, 2), 0.5))
    with pytest.raises(ValueError, match="labels"):
        ubs.HardImbalanceSelector(torch.ones(4))


@pytest.mark.parametrize(
    "make",
    [
        lambda d: ubs.ActiveBiasSelector(N, Q, batch_size=B, warmup=1, device=d),
        lambda d: ubs.RecencyBiasSelector(N, Q, batch_size=B, warmup=1, device=d),
        lambda d: ubs.HardImbalanceSelector(labels(), batch_size=B, warmup=1, device=d),
        lambda d: ubs.BalanceSelector(labels(), batch_size=B, device=d),
        lambda d: ubs.RandomSelector(N, batch_size=B, device=d),
    ],
)
def test_every_comparator_takes_logits_as_their_sigmoid(make, device):
    """Same interface as UncertaintyBatchSelector: observe(indices, logits=x) is
    observe(indices, torch.sigmoid(x)); NaN logits raise and change nothing."""
    a, b = make(device), make(device)
    gen = torch.Generator().manual_seed(0)
    for _ in range(2):
        for ia, ib in zip(a, b, strict=True):
            assert torch.equal(ia, ib)
            x = torch.randn(len(ia), Q, generator=gen) * 3
            a.observe(ia, logits=x)
            b.observe(ib, torch.sigmoid(x))
    before = a.state_dict()
    with pytest.raises(ValueError, match="logits must not be NaN"):
        a.observe(torch.tensor([0, 1]), logits=torch.full((2, Q), float("nan")))
    after, expected = a.state_dict(), b.state_dict()
    for key, value in expected["state"].items():
        assert torch.equal(after["state"][key], value) and torch.equal(before["state"][key], value), key
