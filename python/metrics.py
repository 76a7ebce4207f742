"""Multi-label evaluation metrics of the paper (Zhang & Zhou 2013 definitions).

Scikit-learn computes every reported metric it has; one-error, which it lacks, is three lines of
numpy. The per-epoch validation Macro-AUC uses :func:`macro_auc_fast`, the same number from one
column-wise ranking (tested equal to the sklearn version).
Inputs: ``y_true`` (n, q) 0/1, ``scores`` (n, q) real-valued (sigmoid probabilities), and
predictions ``scores > threshold`` (0.5) for the thresholded metrics.

Conventions, chosen to match the authors' metric code (``macro_averaging_auc``,
``ranking_loss``, ``one_error``, ``hamming_loss`` and sklearn's F1 in
github.com/CquptZA/Uncertainty_Batch, ``UncertainBatch.ipynb``):

* **Macro-AUC**: the per-label ROC AUC (:func:`sklearn.metrics.roc_auc_score`) summed over the
  labels that have both classes in the evaluated set, divided by **all** q labels: a label with a
  single class in a fold counts as 0, as in the authors' code (``np.sum(p[i] / ...) / l``).
  :func:`macro_auc_defined` gives the mean over the defined labels only, and the number of
  undefined labels is reported beside it. Ties between a positive and a negative score count
  1/2 (sklearn); the authors' code counts them 1, which differs only where sigmoids saturate.
* **Ranking loss**: :func:`sklearn.metrics.label_ranking_loss`: a tied (relevant, irrelevant)
  pair counts as mis-ordered, and instances with no or all labels relevant contribute 0 but
  still count in the average, both as in the authors' code.
* **Hamming loss**, **micro-/macro-F1**: sklearn, F1 with ``zero_division=0`` (sklearn's default
  behaviour, without the warning); macro-F1 averages over all q labels.
* **One-error**: the fraction of instances whose top-scored label is irrelevant, over all n
  instances (an instance without labels always counts as an error, as in the authors' code).
  Ties for the top score go to the first label (``argmax``).
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import f1_score, hamming_loss, label_ranking_loss, roc_auc_score

# name -> True when larger is better
METRICS: dict[str, bool] = {
    "macro_auc": True,
    "ranking_loss": False,
    "hamming_loss": False,
    "micro_f1": True,
    "macro_f1": True,
    "one_error": False,
}
LABELS = {
    "macro_auc": "Macro-AUC",
    "ranking_loss": "Ranking Loss",
    "hamming_loss": "Hamming Loss",
    "micro_f1": "Micro-F1",
    "macro_f1": "Macro-F1",
    "one_error": "One-error",
}


def _check(y_true, scores) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true)
    s = np.asarray(scores, dtype=np.float64)
    if y.ndim != 2 or y.shape != s.shape:
        raise ValueError(f"y_true and scores must be 2-D of the same shape, got {y.shape} and {s.shape}")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("y_true must be 0/1")
    if not np.isfinite(s).all():
        raise ValueError("scores must be finite")
    return y.astype(np.int64), s


def per_label_auc(y_true, scores) -> np.ndarray:
    """ROC AUC of every label (sklearn); NaN for a label with a single class in ``y_true``."""
    y, s = _check(y_true, scores)
    pos = y.sum(axis=0)
    defined = (pos > 0) & (pos < y.shape[0])
    out = np.full(y.shape[1], np.nan)
    if defined.any():
        out[defined] = roc_auc_score(y[:, defined], s[:, defined], average=None)
    return out


def macro_auc(y_true, scores) -> float:
    """Macro-AUC as the authors' code computes it: single-class labels add 0, the divisor is q."""
    auc = per_label_auc(y_true, scores)
    return float(np.nansum(auc) / auc.size)


def macro_auc_fast(y_true, scores) -> float:
    """:func:`macro_auc` from one column-wise ranking (Mann-Whitney U, ties averaged): equal to sklearn's.

    The per-epoch validation score of the drivers: sklearn's per-label calls cost about 1 ms each,
    which for a few hundred labels is a noticeable share of an epoch. The tests check it against
    :func:`macro_auc`; reported test metrics use sklearn.
    """
    from scipy.stats import rankdata

    y, s = _check(y_true, scores)
    n = y.shape[0]
    pos = y.sum(axis=0)
    defined = (pos > 0) & (pos < n)
    if not defined.any():
        return 0.0
    ranks = rankdata(s[:, defined], axis=0)  # average ranks for ties
    p = pos[defined].astype(np.float64)
    u = (ranks * y[:, defined]).sum(axis=0) - p * (p + 1) / 2
    return float((u / (p * (n - p))).sum() / y.shape[1])


def macro_auc_defined(y_true, scores) -> tuple[float, int]:
    """Mean AUC over the labels with both classes, and the number of labels left out."""
    auc = per_label_auc(y_true, scores)
    undefined = int(np.isnan(auc).sum())
    return (float(np.nanmean(auc)) if undefined < auc.size else float("nan")), undefined


def one_error(y_true, scores) -> float:
    """Fraction of instances whose highest-scored label is not relevant."""
    y, s = _check(y_true, scores)
    top = s.argmax(axis=1)
    return float(1.0 - y[np.arange(y.shape[0]), top].mean())


def evaluate(y_true, scores, threshold: float = 0.5) -> dict[str, float]:
    """All metrics of :data:`METRICS`, plus ``macro_auc_defined`` and ``auc_undefined_labels``."""
    y, s = _check(y_true, scores)
    pred = (s > threshold).astype(np.int64)
    auc_def, undefined = macro_auc_defined(y, s)
    return {
        "macro_auc": macro_auc(y, s),
        "ranking_loss": float(label_ranking_loss(y, s)),
        "hamming_loss": float(hamming_loss(y, pred)),
        "micro_f1": float(f1_score(y, pred, average="micro", zero_division=0)),
        "macro_f1": float(f1_score(y, pred, average="macro", zero_division=0)),
        "one_error": one_error(y, s),
        "macro_auc_defined": auc_def,
        "auc_undefined_labels": undefined,
    }
