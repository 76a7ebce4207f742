"""The paper's Table 3 (Zhou et al., AAAI 2025): test Macro-AUC of each batch selector with CLIF and DELA.

Mean over the authors' 5 folds, as printed in the paper (``../shared/seeds/ubs-paper-fulltext.md``).
Keys: lower-case dataset names as ``data.py`` names the datasets (the paper's tmc2007 is the
1 %-feature version of the full tmc2007; ours is tmc2007-500, see ``python/README.md``).
Selector keys as in ``training.SELECTORS``; the paper has no UBS C = ones column.
"""

from __future__ import annotations

_ORDER = ("random", "balance", "active", "recent", "hard", "ubs")

_CLIF = {
    "scene": (0.9418, 0.9442, 0.9437, 0.9446, 0.9454, 0.9476),
    "yeast": (0.7107, 0.7077, 0.7164, 0.7195, 0.7191, 0.7222),
    "corel5k": (0.7664, 0.7625, 0.7650, 0.7648, 0.7683, 0.7689),
    "rcv1subset1": (0.9221, 0.9262, 0.9281, 0.9296, 0.9307, 0.9324),
    "rcv1subset2": (0.9279, 0.9316, 0.9326, 0.9338, 0.9329, 0.9345),
    "rcv1subset3": (0.9268, 0.9277, 0.9282, 0.9308, 0.9279, 0.9306),
    "yahoo-business1": (0.7801, 0.7926, 0.7862, 0.7884, 0.7940, 0.8077),
    "yahoo-arts1": (0.7580, 0.7591, 0.7598, 0.7599, 0.7535, 0.7562),
    "bibtex": (0.9013, 0.8975, 0.8996, 0.8982, 0.9011, 0.9059),
    "tmc2007-500": (0.9048, 0.9053, 0.9051, 0.9046, 0.9059, 0.9062),
    "enron": (0.7700, 0.7744, 0.7753, 0.7782, 0.7763, 0.7764),
    "cal500": (0.5901, 0.5949, 0.5843, 0.5885, 0.5932, 0.6054),
    "llog-f": (0.7659, 0.7686, 0.7682, 0.7716, 0.7703, 0.7721),
}
_DELA = {
    "scene": (0.9405, 0.9432, 0.9458, 0.9476, 0.9449, 0.9465),
    "yeast": (0.7006, 0.6972, 0.6996, 0.7036, 0.7121, 0.7132),
    "corel5k": (0.7626, 0.7583, 0.7594, 0.7618, 0.7621, 0.7664),
    "rcv1subset1": (0.9179, 0.9169, 0.9187, 0.9190, 0.9194, 0.9204),
    "rcv1subset2": (0.9203, 0.9220, 0.9213, 0.9216, 0.9220, 0.9226),
    "rcv1subset3": (0.9175, 0.9178, 0.9185, 0.9189, 0.9183, 0.9192),
    "yahoo-business1": (0.7979, 0.7972, 0.8026, 0.8039, 0.8010, 0.8086),
    "yahoo-arts1": (0.7407, 0.7395, 0.7422, 0.7460, 0.7444, 0.7480),
    "bibtex": (0.9062, 0.8974, 0.9046, 0.9052, 0.9057, 0.9060),
    "tmc2007-500": (0.9121, 0.9087, 0.9145, 0.9162, 0.9120, 0.9179),
    "enron": (0.7727, 0.7732, 0.7748, 0.7806, 0.7748, 0.7754),
    "cal500": (0.5933, 0.5761, 0.5872, 0.5914, 0.5927, 0.5954),
    "llog-f": (0.7909, 0.7911, 0.7916, 0.7935, 0.7930, 0.7924),
}
TABLE3: dict[str, dict[str, dict[str, float]]] = {
    model: {ds: dict(zip(_ORDER, values, strict=True)) for ds, values in table.items()}
    for model, table in (("clif", _CLIF), ("dela", _DELA))
}
# The paper's average ranks over its 13 datasets (last row of Table 3).
AVERAGE_RANK = {
    "clif": dict(zip(_ORDER, (5.00, 4.38, 4.15, 3.08, 2.92, 1.46), strict=True)),
    "dela": dict(zip(_ORDER, (4.46, 5.38, 4.00, 2.54, 3.08, 1.38), strict=True)),
}


def macro_auc(model: str, dataset: str) -> dict[str, float] | None:
    """The paper's Table 3 row for ``model`` (clif / dela) and ``dataset``, or None."""
    return TABLE3.get(model.lower(), {}).get(dataset.lower())
