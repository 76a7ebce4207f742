"""Base classifiers for the reproduction: an MLP and the paper's CLIF and DELA.

Every model maps features ``(b, d)`` to label logits ``(b, q)`` (``model(x)``, deterministic in
eval mode) and is trained through :func:`training_loss`, which returns the model's own objective
and the logits of that training forward pass (the selectors observe their sigmoid).

* ``mlp``: ``d -> 512 -> 512 -> q``, ReLU, dropout 0.2, mean binary cross-entropy.
* ``clif``: CLIF (Hang & Zhang, "Collaborative Learning of Label Semantics and Deep
  Label-Specific Features for Multi-Label Classification", TPAMI 2022). A graph isomorphism
  network (GIN) encodes the labels as nodes of the label graph of the training fold (edge
  weights: symmetric conditional co-occurrence, ``A_ij = (P(i|j) + P(j|i)) / 2``, no self-loops)
  into label embeddings; a feature-disentangling module multiplies a feature encoding of x with
  each label's projected embedding and transforms the product into that label's specific
  features; a per-label linear classifier reads them. Objective: multi-label soft margin loss
  + λ · a link-prediction loss, the mean squared difference between the embeddings' cosine
  similarities and ``A + I`` (the graph autoencoder that ties the embeddings to the graph).
* ``dela``: DELA (Hang & Zhang, "Dual Perspective of Label-Specific Feature Learning for
  Multi-Label Classification", ICML 2022). An encoder maps x to a Gaussian latent (mean and
  log-variance); per label, binary Concrete (Gumbel-sigmoid) gates pick the latent dimensions
  that are *non-informative* for that label and perturb them with the latent noise during
  training, so that the label's classifier learns to ignore them; a decoder reads
  ``[x, perturbed latent]`` per label and a per-label linear classifier gives the logit.
  Objective: the soft margin loss summed over labels + β · KL of the gated noise distribution
  to the standard normal. At prediction time the latent mean is used without noise.

Sizes and defaults, and where they come from (the papers' public code, read not copied): see
:data:`CLIF_DATASETS`, :class:`CLIF`, :class:`DELA` and ``python/README.md``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

MODELS = ("mlp", "clif", "dela")

# CLIF's per-dataset settings in its authors' defaults: (label embedding size, λ, feature layers).
# Datasets they did not tune (enron, bibtex, yahoo, LLOG-F, rcv1subset2/3) take CLIF_DEFAULT,
# rcv1subset2/3 that of rcv1subset1.
CLIF_DATASETS: dict[str, tuple[int, float, int]] = {
    "scene": (128, 1e-3, 1),
    "yeast": (256, 1e-3, 1),
    "cal500": (64, 1e-4, 1),
    "corel5k": (256, 1e-4, 1),
    "rcv1subset1": (256, 1e-1, 1),
    "rcv1subset2": (256, 1e-1, 1),
    "rcv1subset3": (256, 1e-1, 1),
    "tmc2007-500": (256, 1.0, 2),
    "delicious": (256, 1e-1, 1),
}
CLIF_DEFAULT = (256, 1e-3, 1)


# --------------------------------------------------------------------------------------------
# MLP
# --------------------------------------------------------------------------------------------


class MLP(nn.Module):
    """Fully connected multi-label classifier: ``[Linear -> ReLU -> Dropout] * len(hidden) -> Linear``."""

    def __init__(self, in_features: int, num_labels: int, hidden: Sequence[int] = (512, 512), dropout: float = 0.2):
        super().__init__()
        layers: list[nn.Module] = []
        width = in_features
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU(), nn.Dropout(dropout)]
            width = h
        layers.append(nn.Linear(width, num_labels))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


# --------------------------------------------------------------------------------------------
# Pieces shared by CLIF and DELA
# --------------------------------------------------------------------------------------------


class PerLabelLinear(nn.Module):
    """``q`` independent linear classifiers, one per label: ``(b, q, h) -> (b, q)``."""

    def __init__(self, num_labels: int, width: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_labels, width))
        self.bias = nn.Parameter(torch.empty(num_labels))
        bound = 1 / math.sqrt(width)  # torch's default init of a Linear / Conv1d of this fan-in
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bqh,qh->bq", z, self.weight) + self.bias


def _stack(widths: Sequence[int], act: nn.Module, dropout: float = 0.0, batch_norm: bool = False) -> nn.Sequential:
    """``Linear [-> BatchNorm] -> act [-> Dropout]`` for each consecutive pair of ``widths``."""
    layers: list[nn.Module] = []
    for a, b in zip(widths[:-1], widths[1:], strict=True):
        layers.append(nn.Linear(a, b))
        if batch_norm:
            layers.append(nn.BatchNorm1d(b))
        layers.append(act)
        if dropout:
            layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


def cooccurrence_graph(y: np.ndarray | torch.Tensor) -> torch.Tensor:
    """CLIF's label graph: ``A_ij = (P(l_i | l_j) + P(l_j | l_i)) / 2`` over the rows of ``y``, ``A_ii = 0``.

    ``P(l_i | l_j) = #(i and j) / #j``; a label without positives has no edges.
    """
    y = torch.as_tensor(np.asarray(y), dtype=torch.float64)
    both = y.T @ y
    count = torch.diagonal(both).clone()
    cond = both / count.clamp(min=1)[None, :]  # column j: P(l_i | l_j)
    adj = 0.5 * (cond + cond.T)
    adj.fill_diagonal_(0.0)
    return adj.to(torch.float32)


# --------------------------------------------------------------------------------------------
# CLIF
# --------------------------------------------------------------------------------------------


class GINLayer(nn.Module):
    """One GIN layer on a weighted graph: ``h' = MLP((1 + ε) h + A h)`` (+ h when the width is kept)."""

    def __init__(self, in_dim: int, out_dim: int, hidden: int, dropout: float):
        super().__init__()
        self.eps = nn.Parameter(torch.zeros(1))  # learnable ε, starting at 0
        self.mlp = _stack((in_dim, hidden, out_dim), nn.LeakyReLU(0.1), dropout, batch_norm=True)
        self.residual = in_dim == out_dim

    def forward(self, h: torch.Tensor, adj: torch.Tensor) -> torch.Tensor:
        out = self.mlp((1 + self.eps) * h + adj @ h)
        return out + h if self.residual else out


class CLIF(nn.Module):
    """CLIF: GIN label semantics on the co-occurrence graph + feature disentangling + per-label classifiers.

    Defaults follow CLIF's authors' public configuration: label embeddings of ``embedding``
    (64-256 per dataset) from 2 GIN layers (hidden width ``embedding / 2``, batch norm,
    LeakyReLU 0.1) over fixed random node features; a feature encoder of ``in_layers`` layers
    of width ``hidden`` = 512 (LeakyReLU 0.1); the label embedding projected linearly to 512
    and multiplied elementwise with the encoded x; one 512 -> 512 LeakyReLU layer per (sample,
    label); a per-label linear classifier. ``lam`` weights the link-prediction loss.
    """

    def __init__(
        self,
        in_features: int,
        num_labels: int,
        adjacency: torch.Tensor,
        embedding: int = 256,
        lam: float = 1e-3,
        in_layers: int = 1,
        hidden: int = 512,
        gin_layers: int = 2,
        dropout: float = 0.2,
    ):
        super().__init__()
        q = num_labels
        if adjacency.shape != (q, q):
            raise ValueError(f"adjacency must be ({q}, {q}), got {tuple(adjacency.shape)}")
        self.lam = float(lam)
        self.register_buffer("adjacency", adjacency.float())
        # Node features of the label graph: fixed Gaussian vectors (not trained); the GIN learns the embeddings.
        self.register_buffer("node_features", torch.randn(q, q))
        widths = [q] + [embedding] * gin_layers
        self.gin = nn.ModuleList(
            GINLayer(a, b, max(1, math.ceil(embedding / 2)), dropout)
            for a, b in zip(widths[:-1], widths[1:], strict=True)
        )
        self.encode_x = _stack([in_features] + [hidden] * in_layers, nn.LeakyReLU(0.1), dropout)
        self.project_label = nn.Linear(embedding, hidden)
        self.disentangle = _stack((hidden, hidden), nn.LeakyReLU(0.1))
        self.classifier = PerLabelLinear(q, hidden)

    def label_embeddings(self) -> torch.Tensor:
        h = self.node_features
        for layer in self.gin:
            h = layer(h, self.adjacency)
        return h

    def _forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        emb = self.label_embeddings()  # (q, e)
        features = self.encode_x(x)[:, None, :] * self.project_label(emb)[None, :, :]  # (b, q, hidden)
        return self.classifier(self.disentangle(features)), emb

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._forward(x)[0]

    def link_loss(self, emb: torch.Tensor) -> torch.Tensor:
        """Graph reconstruction: mean over all label pairs of ``(A + I - cos(e_i, e_j))^2``."""
        unit = emb / (emb.norm(dim=1, keepdim=True) + 1e-6)
        target = self.adjacency + torch.eye(len(emb), device=emb.device)
        return ((unit @ unit.T - target) ** 2).mean()

    def loss(self, x: torch.Tensor, y: torch.Tensor, generator=None) -> tuple[torch.Tensor, torch.Tensor]:
        logits, emb = self._forward(x)
        return F.multilabel_soft_margin_loss(logits, y) + self.lam * self.link_loss(emb), logits


# --------------------------------------------------------------------------------------------
# DELA
# --------------------------------------------------------------------------------------------


def gumbel_sigmoid_hard(
    logits: torch.Tensor, tau: float, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Binary Concrete sample, thresholded at 1/2 with a straight-through gradient: ``(hard, soft)``."""
    u = torch.rand(logits.shape, generator=generator, device=logits.device, dtype=logits.dtype)
    eps = torch.finfo(logits.dtype).eps
    u = u.clamp(eps, 1 - eps)
    soft = torch.sigmoid((logits + torch.log(u) - torch.log1p(-u)) / tau)
    hard = (soft > 0.5).to(soft.dtype)
    return hard + soft - soft.detach(), soft


def gated_kl(mu: torch.Tensor, logvar: torch.Tensor, gates: torch.Tensor) -> torch.Tensor:
    """``KL(N(mu, (g sigma)^2) || N(0, 1))`` summed over the latent dimensions: ``(b, k), (b, k), (q, k) -> (b, q)``.

    Label j's perturbed latent of one sample has mean ``mu`` and standard deviation ``g_j sigma``,
    ``sigma = exp(logvar / 2)``.
    """
    var = torch.exp(logvar)[:, None, :] * gates[None, :, :] ** 2
    return 0.5 * (var + mu[:, None, :] ** 2 - 1 - torch.log(var + 1e-12)).sum(-1)


class DELA(nn.Module):
    """DELA: perturbation of each label's non-informative latent dimensions, chosen by Concrete gates.

    Defaults as in the public code the batch-selection authors trained for the paper's Table 3
    (which match DELA's own code where both set a value): encoder ``d -> 256 -> 512 -> 256``
    (ReLU, dropout 0.2), latent size ``ceil(d / 2)``, gate logits ``(q, latent)`` drawn from
    U(-10, 10) and passed through a linear layer (bias 2), temperature 2/3, gates clamped below
    at ``off_noise`` = 0.5 in the forward pass (DELA's default; every dimension keeps some noise),
    decoder ``[x, z] -> 256 -> 512`` (ReLU), β = 1e-4, and the gate parameters trained at 0.8 × lr.
    """

    gate_lr_ratio = 0.8

    def __init__(
        self,
        in_features: int,
        num_labels: int,
        latent: int | None = None,
        beta: float = 1e-4,
        tau: float = 2 / 3,
        off_noise: float = 0.5,
        dropout: float = 0.2,
    ):
        super().__init__()
        d, q = in_features, num_labels
        k = latent if latent is not None else math.ceil(d / 2)
        self.beta, self.tau, self.off_noise, self.num_labels = float(beta), float(tau), float(off_noise), q
        self.encoder = _stack((d, 256, 512, 256), nn.ReLU(), dropout)
        self.mu = nn.Linear(256, k)
        self.logvar = nn.Linear(256, k)
        self.gate_logits = nn.Parameter(torch.empty(q, k).uniform_(-10, 10))
        self.gate_scale = nn.Linear(k, k)
        nn.init.constant_(self.gate_scale.bias, 2.0)
        # The decoder's first layer reads [x, z]; split into its x and z parts so that the x part
        # is computed once per sample instead of once per (sample, label).
        first = nn.Linear(d + k, 256)
        self.dec_x = nn.Linear(d, 256)
        self.dec_z = nn.Linear(k, 256, bias=False)
        with torch.no_grad():
            self.dec_x.weight.copy_(first.weight[:, :d])
            self.dec_x.bias.copy_(first.bias)
            self.dec_z.weight.copy_(first.weight[:, d:])
        self.dec_out = _stack((256, 512), nn.ReLU())
        self.classifier = PerLabelLinear(q, 512)

    def gate_parameters(self) -> list[nn.Parameter]:
        return [self.gate_logits, *self.gate_scale.parameters()]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Prediction: the latent mean, no perturbation (the decoder input is then the same for every label)."""
        mu = self.mu(self.encoder(x))
        h = self.dec_out(F.relu(self.dec_x(x) + self.dec_z(mu)))  # (b, 512)
        return h @ self.classifier.weight.T + self.classifier.bias

    def loss(self, x: torch.Tensor, y: torch.Tensor, generator=None) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.encoder(x)
        mu, logvar = self.mu(hidden), self.logvar(hidden)  # (b, k)
        gates, _ = gumbel_sigmoid_hard(self.gate_scale(self.gate_logits), self.tau, generator)  # (q, k)
        gates = gates.clamp(min=self.off_noise).detach() + gates - gates.detach()
        noise = torch.exp(0.5 * logvar) * torch.randn(mu.shape, generator=generator, device=mu.device)
        z = mu[:, None, :] + gates[None, :, :] * noise[:, None, :]  # (b, q, k)
        h = F.relu(self.dec_x(x)[:, None, :] + self.dec_z(z))
        logits = self.classifier(self.dec_out(h))
        cls = F.binary_cross_entropy_with_logits(logits, y, reduction="sum") / len(x)  # summed over labels
        return cls + self.beta * gated_kl(mu, logvar, gates).mean(), logits


# --------------------------------------------------------------------------------------------
# Construction and training helpers
# --------------------------------------------------------------------------------------------


def clif_settings(dataset: str) -> dict:
    """CLIF's ``embedding``, ``lam`` and ``in_layers`` for a dataset (its authors' values where they set them)."""
    emb, lam, layers = CLIF_DATASETS.get(dataset.lower(), CLIF_DEFAULT)
    return {"embedding": emb, "lam": lam, "in_layers": layers}


def build_model(name: str, in_features: int, num_labels: int, y_train=None, **options) -> nn.Module:
    """``mlp`` (options ``hidden``, ``dropout``), ``clif`` (needs ``y_train`` for the label graph) or ``dela``."""
    if name == "mlp":
        return MLP(in_features, num_labels, **options)
    if name == "clif":
        if y_train is None:
            raise ValueError("clif needs y_train: its label graph comes from the training labels")
        return CLIF(in_features, num_labels, cooccurrence_graph(y_train), **options)
    if name == "dela":
        return DELA(in_features, num_labels, **options)
    raise ValueError(f"unknown model {name!r}; have {MODELS}")


def param_groups(model: nn.Module, lr: float) -> list[dict]:
    """Optimiser parameter groups: DELA's gate parameters at ``gate_lr_ratio`` × lr, everything else at lr."""
    if isinstance(model, DELA):
        gates = {id(p) for p in model.gate_parameters()}
        rest = [p for p in model.parameters() if id(p) not in gates]
        return [{"params": rest}, {"params": model.gate_parameters(), "lr": model.gate_lr_ratio * lr}]
    return [{"params": list(model.parameters())}]


def training_loss(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(objective, logits)`` of one training forward pass."""
    if hasattr(model, "loss"):
        return model.loss(x, y, generator)
    logits = model(x)
    return F.binary_cross_entropy_with_logits(logits, y), logits
