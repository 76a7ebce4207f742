"""Multi-label benchmark data: MULAN ARFF loading and the paper's preprocessing.

Reads MULAN-style ARFF files (dense or sparse rows, plain ``.arff`` or gzipped ``.arff.gz``)
with `liac-arff <https://github.com/renatopp/liac-arff>`_ and locates the label attributes by
the MULAN label file ``<dataset>.xml`` (or, without one, by a given label count / the MEKA
``-C`` option in the relation name: labels are the last ``q`` attributes, MULAN's convention).

Data directory: ``$UBS_DATA_DIR`` if set, else ``<repo>/../shared/data``. When that directory
does not exist, :func:`load_dataset` falls back to a seeded synthetic set from
:func:`sklearn.datasets.make_multilabel_classification` (with a warning), so the drivers and
their tests also run on a machine without the benchmark files.

Preprocessing (see :func:`load_dataset` and ``python/README.md``), as the authors' released code
(github.com/CquptZA/Uncertainty_Batch) does it unless noted:

* feature reduction for the text sets with huge vocabularies: keep the ``ratio`` fraction of the
  features with the largest column sums (the authors' ``FeatureSelect``; unsupervised, so it is
  applied to the whole dataset before the folds): rcv1subset1-3 keep 2 % (47236 -> 944, the
  paper's d), yahoo-Arts1 / yahoo-Business1 keep 10 % (23146 -> 2314 and 21924 -> 2192, the
  paper's d; the authors' README says 0.05, which would not give the paper's d);
* labels with at most ``min_positives`` = 20 positive instances in the whole dataset are removed
  (the authors' ``LabelSelect``); instances are all kept, also those left without a label;
* min-max scaling of the features to [0, 1] is done per fold by the driver, fitted on the
  training part only (the authors fit it on the whole dataset before splitting).
"""

from __future__ import annotations

import gzip
import io
import os
import re
import warnings
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import arff  # liac-arff
import numpy as np
import scipy.sparse as sp

REPO_ROOT = Path(__file__).resolve().parents[1]

# Label removal threshold of the authors' code: labels with <= 20 positives are dropped.
MIN_POSITIVES = 20

# Per-dataset defaults: the file stem to read, the xml label file and the feature retention
# ratio. Names are matched case-insensitively; aliases cover the spellings of the paper.
PRESETS: dict[str, dict] = {
    "emotions": {"file": "emotions"},
    "scene": {"file": "scene"},
    "yeast": {"file": "yeast"},
    "corel5k": {"file": "Corel5k-sparse", "xml": "Corel5k"},
    "rcv1subset1": {"file": "rcv1subset1", "feature_ratio": 0.02},
    "rcv1subset2": {"file": "rcv1subset2", "feature_ratio": 0.02},
    "rcv1subset3": {"file": "rcv1subset3", "feature_ratio": 0.02},
    "yahoo-arts1": {"file": "yahoo-Arts1", "feature_ratio": 0.1},
    "yahoo-business1": {"file": "yahoo-Business1", "feature_ratio": 0.1},
    "bibtex": {"file": "bibtex"},
    # The paper's tmc2007 keeps 1 % of the full 49060 features (490); only the standard
    # 500-feature variant is available, so it is used as is.
    "tmc2007-500": {"file": "tmc2007-500"},
    "enron": {"file": "enron"},
    "cal500": {"file": "cal500"},
    "llog-f": {"file": "LLOG-F"},
    "delicious": {"file": "delicious"},
    "stackex_cooking": {"file": "stackex_cooking"},
}
ALIASES = {
    "yahoo-arts": "yahoo-arts1",
    "yahoo-business": "yahoo-business1",
    "tmc2007": "tmc2007-500",
    "ca1500": "cal500",  # the paper's typesetting of CAL500
    "llog": "llog-f",
}
SYNTHETIC = "synthetic"


def default_data_dir() -> Path:
    """``$UBS_DATA_DIR`` if set, else the ``shared/data`` directory beside the repository."""
    env = os.environ.get("UBS_DATA_DIR")
    return Path(env) if env else (REPO_ROOT / ".." / "shared" / "data").resolve()


@dataclass
class MultiLabelData:
    """A multi-label dataset: dense float32 features, 0/1 uint8 labels, and what was done to it."""

    name: str
    x: np.ndarray  # (n, d) float32
    y: np.ndarray  # (n, q) uint8 in {0, 1}
    feature_names: list[str]
    label_names: list[str]
    source: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.x.shape[0], self.x.shape[1], self.y.shape[1]

    def summary(self) -> str:
        n, d, q = self.shape
        card = float(self.y.sum(1).mean()) if n else 0.0
        return f"{self.name}: n={n} d={d} q={q} card={card:.3f}"


# --------------------------------------------------------------------------------------------
# ARFF parsing
# --------------------------------------------------------------------------------------------


def _open_text(path: Path) -> io.TextIOBase:
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8")
    return open(path, encoding="utf-8")  # noqa: SIM115 - returned to the caller's with-block


def _is_sparse(path: Path) -> bool:
    """True when the first data row of the file uses the sparse ``{index value, ...}`` form."""
    with _open_text(path) as fh:
        in_data = False
        for line in fh:
            s = line.strip()
            if not s or s.startswith("%"):
                continue
            if not in_data:
                in_data = s.lower() == "@data"
                continue
            return s.startswith("{")
    return False  # no data rows


def read_label_names(xml_path: str | os.PathLike) -> list[str]:
    """Label attribute names from a MULAN label file (``<labels><label name=...>``, possibly nested)."""
    root = ET.parse(xml_path).getroot()
    names = [el.get("name") for el in root.iter() if el.tag.rsplit("}", 1)[-1] == "label" and el.get("name")]
    if not names:
        raise ValueError(f"{xml_path}: no <label name=...> elements")
    return names


def _meka_label_count(relation: str) -> int | None:
    """Labels at the end from a MEKA relation option ``-C -q`` (``-C q`` means the first q: unsupported)."""
    m = re.search(r"-C\s+(-?\d+)", relation or "")
    if not m:
        return None
    c = int(m.group(1))
    if c > 0:
        raise ValueError(f"relation {relation!r}: labels first (-C {c}) are not supported, MULAN puts them last")
    return -c


def _nominal_value_map(values: list[str]) -> np.ndarray | None:
    """Index -> numeric value for a nominal attribute whose values are numbers, else None (keep the index)."""
    try:
        return np.array([float(v) for v in values], dtype=np.float64)
    except ValueError:
        return None


def read_arff(
    path: str | os.PathLike,
    label_names: list[str] | None = None,
    label_count: int | None = None,
) -> tuple[sp.csr_matrix, np.ndarray, list[str], list[str]]:
    """Parse a dense or sparse (optionally gzipped) MULAN ARFF file.

    Labels are the attributes named in ``label_names`` (kept in file order); else the last
    ``label_count`` attributes; else the last ``q`` of a MEKA relation name ``'name: -C -q'``.

    Nominal attributes whose values are numbers (``{0,1}``, ``{1,0}``) get those numbers; other
    nominal attributes get their value index (ordinal code). An omitted entry of a sparse row is
    value index 0 (ARFF rule). Missing values (``?``) are not supported.

    Returns ``(x, y, feature_names, label_names)``: features as a CSR float64 matrix, labels as
    a dense uint8 0/1 array.
    """
    path = Path(path)
    sparse = _is_sparse(path)
    with _open_text(path) as fh:
        # encode_nominal: nominal values become their index, so the COO reader can hold them.
        data = arff.load(fh, encode_nominal=True, return_type=arff.COO if sparse else arff.DENSE)
    attrs = data["attributes"]
    names = [a[0] for a in attrs]
    m = len(names)

    if label_names is not None:
        wanted = set(label_names)
        missing = [nm for nm in label_names if nm not in set(names)]
        if missing:
            raise ValueError(f"{path.name}: label attributes not in the file: {missing[:5]}")
        label_idx = [i for i, nm in enumerate(names) if nm in wanted]
    else:
        q = label_count if label_count is not None else _meka_label_count(data.get("relation", ""))
        if q is None:
            raise ValueError(f"{path.name}: no label file and no label count: cannot tell labels from features")
        if not 0 < q < m:
            raise ValueError(f"{path.name}: label count {q} out of range for {m} attributes")
        label_idx = list(range(m - q, m))
    label_set = set(label_idx)
    feat_idx = [i for i in range(m) if i not in label_set]

    if sparse:
        values, rows, cols = data["data"]
        values = np.asarray(values, dtype=np.float64)  # a missing value (None) becomes NaN
        shape = (_count_data_rows(path), m)
        full = sp.coo_matrix((values, (np.asarray(rows), np.asarray(cols))), shape=shape).tocsc()
    else:
        values = np.asarray(data["data"], dtype=np.float64).reshape(-1, m)
        full = sp.csc_matrix(values)
    if np.isnan(values).any():
        raise ValueError(f"{path.name}: missing values ('?') are not supported")

    # Nominal attributes with numeric values: index -> value. Omitted sparse entries are index 0,
    # so a map with a non-zero value at index 0 needs the column densified.
    remap: dict[int, np.ndarray] = {}
    for i, (_, typ) in enumerate(attrs):
        if isinstance(typ, list):
            vmap = _nominal_value_map(typ)
            if vmap is not None and not np.array_equal(vmap, np.arange(len(vmap))):
                remap[i] = vmap

    def column_block(idx: list[int]) -> sp.csc_matrix:
        block = full[:, idx].tocsc()
        changed = [k for k, i in enumerate(idx) if i in remap]
        if changed:
            dense = block.toarray()
            for k in changed:
                dense[:, k] = remap[idx[k]][dense[:, k].astype(np.int64)]
            block = sp.csc_matrix(dense)
        return block

    y_float = column_block(label_idx).toarray()
    if not np.isin(y_float, (0.0, 1.0)).all():
        raise ValueError(f"{path.name}: label attributes must be 0/1")
    x = column_block(feat_idx).tocsr()
    return x, y_float.astype(np.uint8), [names[i] for i in feat_idx], [names[i] for i in label_idx]


def _count_data_rows(path: Path) -> int:
    """Number of data rows (the COO reader does not report trailing all-zero rows)."""
    count, in_data = 0, False
    with _open_text(path) as fh:
        for line in fh:
            s = line.strip()
            if not s or s.startswith("%"):
                continue
            if in_data:
                count += 1
            elif s.lower() == "@data":
                in_data = True
    return count


# --------------------------------------------------------------------------------------------
# Preprocessing
# --------------------------------------------------------------------------------------------


def select_features(x: sp.spmatrix | np.ndarray, ratio: float) -> np.ndarray:
    """Indices (ascending) of the ``int(d * ratio)`` features with the largest column sums.

    The authors' ``FeatureSelect``: rank features by the sum of their values over all instances
    (term weight mass for the bag-of-words sets), ties broken by the lower index, and keep the
    top fraction in the original column order. ``ratio >= 1`` keeps everything.
    """
    d = x.shape[1]
    if ratio >= 1:
        return np.arange(d)
    if not 0 < ratio:
        raise ValueError(f"feature ratio must be in (0, 1], got {ratio}")
    k = max(1, int(d * ratio))
    sums = np.asarray(x.sum(axis=0)).ravel()
    top = np.argsort(-sums, kind="stable")[:k]
    return np.sort(top)


def frequent_labels(y: np.ndarray, min_positives: int) -> np.ndarray:
    """Boolean mask of the labels with more than ``min_positives`` positive instances."""
    return y.sum(axis=0) > min_positives


# --------------------------------------------------------------------------------------------
# Datasets
# --------------------------------------------------------------------------------------------


def resolve_name(name: str) -> tuple[str, dict]:
    """Canonical preset key and preset (``{}`` for an unknown name: the file stem is the name)."""
    key = name.lower()
    key = ALIASES.get(key, key)
    return key, PRESETS.get(key, {})


def find_file(stem: str, data_dir: Path) -> Path:
    """``<stem>.arff.gz`` / ``<stem>.arff`` (or the ``-sparse`` variant) in ``data_dir``, case-insensitively."""
    candidates = [f"{stem}{suffix}" for suffix in (".arff.gz", ".arff", "-sparse.arff.gz", "-sparse.arff")]
    by_lower = {p.name.lower(): p for p in data_dir.iterdir()}
    for c in candidates:
        if c.lower() in by_lower:
            return by_lower[c.lower()]
    raise FileNotFoundError(f"no {stem}.arff[.gz] in {data_dir}")


def find_xml(stem: str, data_dir: Path) -> Path | None:
    """The MULAN label file of a data file stem: ``<stem>.xml``, else without -train/-test/-sparse."""
    by_lower = {p.name.lower(): p for p in data_dir.iterdir()}
    base = stem
    for _ in range(3):
        if f"{base}.xml".lower() in by_lower:
            return by_lower[f"{base}.xml".lower()]
        base = re.sub(r"-(train|test|sparse)$", "", base, flags=re.IGNORECASE)
    return None


def synthetic_dataset(seed: int = 0, n: int = 600, d: int = 40, q: int = 8) -> MultiLabelData:
    """Seeded stand-in for the benchmark files (sklearn ``make_multilabel_classification``)."""
    from sklearn.datasets import make_multilabel_classification

    x, y = make_multilabel_classification(
        n_samples=n, n_features=d, n_classes=q, n_labels=2, allow_unlabeled=False, random_state=seed
    )
    return MultiLabelData(
        name=SYNTHETIC,
        x=x.astype(np.float32),
        y=y.astype(np.uint8),
        feature_names=[f"x{i}" for i in range(d)],
        label_names=[f"y{j}" for j in range(q)],
        source=f"sklearn.datasets.make_multilabel_classification(n_samples={n}, n_features={d}, n_classes={q})",
        notes=["synthetic: the data directory is missing"],
    )


def load_dataset(
    name: str,
    data_dir: str | os.PathLike | None = None,
    *,
    label_count: int | None = None,
    feature_ratio: float | None = None,
    min_positives: int = MIN_POSITIVES,
    seed: int = 0,
) -> MultiLabelData:
    """Load a benchmark dataset by name and apply the paper's preprocessing (scaling excepted).

    ``name`` is a preset (``scene``, ``yeast``, ``Corel5k``, ``rcv1subset1``, ``yahoo-Arts1``,
    ``tmc2007``, ``CAL500``, ...; case-insensitive) or the stem of any ARFF file in the data
    directory. ``feature_ratio`` overrides the preset's retention ratio; ``min_positives < 0``
    keeps every label. ``synthetic`` (or a missing data directory) gives the synthetic set.
    """
    data_dir = Path(data_dir) if data_dir is not None else default_data_dir()
    if name.lower() == SYNTHETIC:
        return synthetic_dataset(seed)
    if not data_dir.is_dir():
        warnings.warn(
            f"data directory {data_dir} not found (set UBS_DATA_DIR): using a synthetic dataset instead of {name!r}",
            stacklevel=2,
        )
        return synthetic_dataset(seed)

    key, preset = resolve_name(name)
    path = find_file(preset.get("file", name), data_dir)
    stem = re.sub(r"\.arff(\.gz)?$", "", path.name, flags=re.IGNORECASE)
    xml = find_xml(preset.get("xml", stem), data_dir) if label_count is None else None
    labels = read_label_names(xml) if xml is not None else None
    x, y, feature_names, label_names = read_arff(path, label_names=labels, label_count=label_count)
    notes = [f"read {path.name}: n={x.shape[0]} d={x.shape[1]} q={y.shape[1]}"]
    notes.append(f"labels from {xml.name}" if xml is not None else "labels: the last q attributes")

    ratio = feature_ratio if feature_ratio is not None else preset.get("feature_ratio", 1.0)
    if ratio < 1:
        keep = select_features(x, ratio)
        x = x[:, keep]
        feature_names = [feature_names[i] for i in keep]
        notes.append(f"kept {len(keep)} features with the largest column sums (ratio {ratio})")

    if min_positives >= 0:
        mask = frequent_labels(y, min_positives)
        if not mask.all():
            notes.append(f"removed {int((~mask).sum())} labels with <= {min_positives} positives")
            y = y[:, mask]
            label_names = [nm for nm, k in zip(label_names, mask, strict=True) if k]
        if y.shape[1] == 0:
            raise ValueError(f"{name}: no label has more than {min_positives} positives")

    display = preset.get("file", name) if key in PRESETS else stem
    display = display.removesuffix("-sparse")
    return MultiLabelData(
        name=display,
        x=np.asarray(x.toarray(), dtype=np.float32),
        y=np.ascontiguousarray(y),
        feature_names=feature_names,
        label_names=label_names,
        source=str(path),
        notes=notes,
    )
