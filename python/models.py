"""Base classifiers for the reproduction (``python/reproduce.py``).

Every model maps a batch of features ``(b, d)`` to label logits ``(b, q)`` and is trained with
the mean binary cross-entropy over labels (:func:`torch.nn.functional.binary_cross_entropy_with_logits`);
the selectors observe ``sigmoid(logits)`` of the training forward pass.

* ``mlp``: the base classifier of this reproduction (the paper itself uses MPVAE, CLIF and DELA):
  ``d -> 512 -> 512 -> q`` with ReLU and dropout 0.2 after each hidden layer (``--hidden``,
  ``--dropout`` change it). At the paper's learning rate (1e-4, 100 epochs) it is still improving
  at the end, like every width we tried; 512 x 512 got there fastest (yeast and scene, 2 folds:
  Macro-AUC 0.690 / 0.943 against 0.666 / 0.940 for 256 x 256 and 0.668 / 0.932 for one 512 layer).

CLIF (Hang & Zhang, TPAMI 2021) and DELA (Hang & Zhang, ICML 2022) are not implemented: see
``python/README.md`` ("Deep multi-label models") for why.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

MODELS = ("mlp",)


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


def build_model(
    name: str, in_features: int, num_labels: int, hidden: Sequence[int] = (512, 512), dropout: float = 0.2
) -> nn.Module:
    if name == "mlp":
        return MLP(in_features, num_labels, hidden, dropout)
    raise ValueError(f"unknown model {name!r}; have {MODELS}")
