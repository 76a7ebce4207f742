"""The base classifiers of the reproduction (python/models.py): CLIF and DELA.

Oracles from outside the code under test: label co-occurrence counted by loops, the KL divergence
of ``torch.distributions``, the logistic distribution's CDF for the Concrete gates, a plain
concatenating ``nn.Linear`` for DELA's split decoder layer, and a constant predictor's Macro-AUC
(0.5) for "it learns" on a small real dataset (emotions; a synthetic set without the data).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "python"))

import data  # noqa: E402
import metrics  # noqa: E402
import models  # noqa: E402
import training  # noqa: E402


def test_cooccurrence_graph_counts_conditional_probabilities():
    rng = np.random.default_rng(0)
    y = (rng.random((300, 9)) < rng.random(9) * 0.5).astype(np.uint8)
    y[:, 4] = 0  # a label without positives has no edges
    adj = models.cooccurrence_graph(y).numpy()
    q = y.shape[1]
    expect = np.zeros((q, q))
    for i in range(q):
        for j in range(q):
            if i == j:
                continue
            both = sum(1 for r in y if r[i] and r[j])
            p_i_given_j = both / y[:, j].sum() if y[:, j].sum() else 0.0
            p_j_given_i = both / y[:, i].sum() if y[:, i].sum() else 0.0
            expect[i, j] = (p_i_given_j + p_j_given_i) / 2
    np.testing.assert_allclose(adj, expect, rtol=1e-6, atol=1e-7)
    assert (adj[4] == 0).all() and (np.diag(adj) == 0).all()


def test_clif_uses_the_label_graph_of_its_training_labels():
    """Not the identity graph: the buffer is the co-occurrence graph, and the embeddings depend on it."""
    rng = np.random.default_rng(1)
    y = (rng.random((200, 6)) < 0.4).astype(np.uint8)
    torch.manual_seed(0)
    model = models.build_model("clif", 10, 6, y_train=y, embedding=8).eval()
    torch.testing.assert_close(model.adjacency, models.cooccurrence_graph(y))
    assert model.adjacency.sum() > 0 and not torch.equal(model.adjacency, torch.eye(6))
    emb = model.label_embeddings()
    model.adjacency.zero_()
    assert not torch.allclose(model.label_embeddings(), emb)


def test_clif_link_loss_is_the_squared_gap_between_cosines_and_the_graph():
    rng = np.random.default_rng(2)
    y = (rng.random((100, 4)) < 0.5).astype(np.uint8)
    model = models.build_model("clif", 5, 4, y_train=y, embedding=4)
    adj = model.adjacency
    # Orthogonal embeddings: the cosines are the identity, so the loss is the mean of A^2.
    assert float(model.link_loss(torch.eye(4) * 3.0)) == pytest.approx(float((adj**2).mean()), rel=1e-5)
    # All embeddings equal: every cosine is 1.
    ones = torch.ones(4, 4)
    assert float(model.link_loss(ones)) == pytest.approx(float(((1 - adj - torch.eye(4)) ** 2).mean()), rel=1e-4)


def test_concrete_gates_are_binary_with_the_logistic_probability():
    """P(gate = 1) = P(logit + Logistic(0, 1) > 0) = sigmoid(logit), whatever the temperature."""
    logits = torch.tensor([-2.0, 0.0, 1.5]).repeat(20000, 1)
    gen = torch.Generator().manual_seed(0)
    hard, soft = models.gumbel_sigmoid_hard(logits, 2 / 3, gen)
    assert torch.all((hard - hard.round()).abs() < 1e-6)  # 0 or 1, up to the straight-through rounding
    np.testing.assert_allclose(hard.round().mean(0).numpy(), torch.sigmoid(logits[0]).numpy(), atol=0.01)
    # Straight-through: the value is the hard gate, the gradient that of the soft one.
    logits = torch.tensor([0.3, -0.4], requires_grad=True)
    hard, soft = models.gumbel_sigmoid_hard(logits, 2 / 3, torch.Generator().manual_seed(1))
    hard.sum().backward()
    expect = soft.detach() * (1 - soft.detach()) / (2 / 3)
    torch.testing.assert_close(logits.grad, expect)


def test_dela_kl_matches_torch_distributions():
    torch.manual_seed(0)
    mu, logvar = torch.randn(3, 5), torch.randn(3, 5)
    gates = torch.rand(4, 5) * 0.9 + 0.1
    got = models.gated_kl(mu, logvar, gates)
    std = torch.exp(0.5 * logvar)[:, None, :] * gates[None]
    ref = torch.distributions.kl_divergence(
        torch.distributions.Normal(mu[:, None, :].expand_as(std), std), torch.distributions.Normal(0.0, 1.0)
    ).sum(-1)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)


def test_dela_prediction_equals_the_concatenating_decoder():
    """The split first decoder layer (x part once per sample) computes Linear([x, z]) of the paper's decoder."""
    torch.manual_seed(0)
    d, q = 7, 3
    model = models.build_model("dela", d, q).eval()
    x = torch.rand(5, d)
    k = model.mu.out_features
    assert k == 4  # ceil(d / 2)
    first = torch.nn.Linear(d + k, 256)
    with torch.no_grad():
        first.weight.copy_(torch.cat([model.dec_x.weight, model.dec_z.weight], 1))
        first.bias.copy_(model.dec_x.bias)
        mu = model.mu(model.encoder(x))
        z = torch.cat([x[:, None, :].expand(-1, q, -1), mu[:, None, :].expand(-1, q, -1)], 2)
        ref = model.classifier(model.dec_out(torch.relu(first(z))))
        torch.testing.assert_close(model(x), ref, rtol=1e-5, atol=1e-5)


def test_dela_training_noise_comes_from_the_given_generator():
    torch.manual_seed(0)
    model = models.build_model("dela", 6, 3, dropout=0.0)  # dropout draws from torch's global generator
    x, y = torch.rand(4, 6), (torch.rand(4, 3) < 0.5).float()
    a = models.training_loss(model, x, y, torch.Generator().manual_seed(5))[1]
    b = models.training_loss(model, x, y, torch.Generator().manual_seed(5))[1]
    c = models.training_loss(model, x, y, torch.Generator().manual_seed(6))[1]
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c)


def _small_real_split():
    directory = data.default_data_dir()
    name = "emotions" if (directory / "emotions.arff.gz").exists() else "synthetic"
    ds = data.load_dataset(name, directory if name != "synthetic" else None)
    train, val, test = training.stratified_folds(ds.y, 5, seed=0)[0]
    return name, training.make_split(ds.x, ds.y, train, val, test)


@pytest.mark.parametrize("model", ["clif", "dela"])
def test_model_learns_beyond_a_constant_predictor(model):
    """A few epochs on emotions (or the synthetic set): test Macro-AUC well above 0.5, a constant's."""
    torch.set_num_threads(1)
    name, split = _small_real_split()
    cfg = training.RunConfig(model=model, epochs=8, warmup=3, lr=1e-3, batch_size=64, train_loss=False)
    if model == "clif":
        cfg.model_options = models.clif_settings(name) | {"embedding": 32}
    result, history = training.train_one("random", split, cfg, seed=0, device=torch.device("cpu"))
    constant = metrics.macro_auc(split["y_test"], np.full(split["y_test"].shape, 0.3))
    assert constant == pytest.approx(0.5)
    assert result["macro_auc"] > 0.70, (name, result["macro_auc"])  # emotions: ~0.8 after 8 epochs
    assert history[-1]["batch_loss"] < history[0]["batch_loss"]


@pytest.mark.parametrize("model", ["clif", "dela"])
def test_every_selector_of_a_fold_starts_from_the_same_weights(model):
    y = (np.random.default_rng(0).random((50, 4)) < 0.5).astype(np.uint8)

    def build():
        torch.manual_seed(7)
        return models.build_model(model, 12, 4, y_train=y, **({"embedding": 8} if model == "clif" else {}))

    a, b = build().state_dict(), build().state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_dela_gate_parameters_train_at_the_lower_rate():
    model = models.build_model("dela", 6, 3)
    groups = models.param_groups(model, 1e-3)
    assert groups[1]["lr"] == pytest.approx(0.8e-3) and len(groups[1]["params"]) == 3
    assert sum(p.numel() for g in groups for p in g["params"]) == sum(p.numel() for p in model.parameters())
