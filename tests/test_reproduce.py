"""The reproduction drivers in python/: ARFF loading, preprocessing, metrics, folds and the CLI smoke.

Oracles come from outside the code under test: the published dataset statistics (MULAN /
shared/data/MANIFEST.md), scipy's independent ARFF reader, hand-written small files and
hand-computed metric values, brute-force pair counting, and sklearn.
"""

from __future__ import annotations

import csv
import gzip
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "python"))

import data  # noqa: E402
import metrics  # noqa: E402
import reproduce  # noqa: E402

DATA_DIR = data.default_data_dir()
needs_data = pytest.mark.skipif(
    not DATA_DIR.is_dir(), reason=f"benchmark data not found at {DATA_DIR} (set UBS_DATA_DIR)"
)


def _need_file(name: str) -> None:
    if not DATA_DIR.is_dir() or not any(p.name.lower() == name.lower() for p in DATA_DIR.iterdir()):
        pytest.skip(f"{name} not in {DATA_DIR}")


# --------------------------------------------------------------------------------------------
# Real datasets (published statistics as the oracle)
# --------------------------------------------------------------------------------------------


@needs_data
@pytest.mark.parametrize(
    ("name", "file", "n", "d", "q", "card"),
    [
        ("emotions", "emotions.arff.gz", 593, 72, 6, 1.869),  # dense
        ("scene", "scene.arff.gz", 2407, 294, 6, 1.074),  # dense
        ("yeast", "yeast.arff.gz", 2417, 103, 14, 4.237),  # dense, xml order differs from the file
        ("enron", "enron.arff.gz", 1702, 1001, 53, 3.378),  # sparse, labels scattered in the xml
        ("Corel5k", "Corel5k-sparse.arff.gz", 5000, 499, 374, 3.522),  # sparse, nominal features
    ],
)
def test_real_dataset_matches_published_statistics(name, file, n, d, q, card):
    _need_file(file)
    ds = data.load_dataset(name, DATA_DIR, min_positives=-1)  # raw: no label removed
    assert ds.shape == (n, d, q)
    assert ds.x.dtype == np.float32 and ds.y.dtype == np.uint8
    assert set(np.unique(ds.y)) <= {0, 1}
    assert ds.y.sum(1).mean() == pytest.approx(card, abs=1e-3)  # MANIFEST rounds to 3 decimals
    xml = DATA_DIR / f"{ds.name}.xml"
    assert sorted(ds.label_names) == sorted(data.read_label_names(xml))


@needs_data
def test_dense_file_agrees_with_scipy_arff_reader():
    """scipy.io.arff (an independent parser) reads the same features and labels from emotions."""
    scipy_arff = pytest.importorskip("scipy.io.arff")
    _need_file("emotions.arff.gz")
    with gzip.open(DATA_DIR / "emotions.arff.gz", "rt") as fh:
        rec, meta = scipy_arff.loadarff(fh)
    labels = data.read_label_names(DATA_DIR / "emotions.xml")
    feats = [nm for nm in meta.names() if nm not in labels]
    ds = data.load_dataset("emotions", DATA_DIR)
    np.testing.assert_allclose(ds.x, np.column_stack([rec[f] for f in feats]).astype(np.float32))
    np.testing.assert_array_equal(ds.y, np.column_stack([rec[lab].astype(int) for lab in ds.label_names]))


@needs_data
def test_preprocessing_feature_and_label_reduction():
    _need_file("rcv1subset1.arff.gz")
    ds = data.load_dataset("rcv1subset1", DATA_DIR)
    assert ds.x.shape == (6000, 944)  # the paper's d: 2 % of the 47236 terms
    assert (ds.y.sum(0) > 20).all()  # labels with <= 20 positives removed
    raw = data.load_dataset("rcv1subset1", DATA_DIR, min_positives=-1, feature_ratio=0.02)
    assert raw.y.shape[1] == 101 and ds.y.shape[1] == int((raw.y.sum(0) > 20).sum())
    np.testing.assert_array_equal(ds.x, raw.x)


@needs_data
def test_train_and_test_files_make_the_full_file():
    """MULAN train + test splits are exactly the full file (sparse Corel5k): the parser agrees on all three."""
    _need_file("Corel5k-train-sparse.arff.gz")
    xml = data.read_label_names(DATA_DIR / "Corel5k.xml")
    parts = [data.read_arff(DATA_DIR / f"Corel5k-{p}-sparse.arff.gz", label_names=xml) for p in ("train", "test")]
    full = data.read_arff(DATA_DIR / "Corel5k-sparse.arff.gz", label_names=xml)
    assert parts[0][0].shape[0] + parts[1][0].shape[0] == full[0].shape[0] == 5000

    def rows(x, y):
        return sorted(map(bytes, np.hstack([x.toarray(), y]).astype(np.uint8)))

    assert rows(*full[:2]) == sorted(rows(*parts[0][:2]) + rows(*parts[1][:2]))


# --------------------------------------------------------------------------------------------
# ARFF parsing on hand-written files (dense, sparse, gzip, quoting, xml)
# --------------------------------------------------------------------------------------------

HEADER = """% a comment
@relation 'toy: -C -2'

@attribute 'feat one' numeric
@attribute "feat,two" NUMERIC
@attribute colour {red, green}
@attribute 'lab 1' {0,1}
@attribute lab2 {1,0}

@data
"""
DENSE_ROWS = "1.5,0,green,1,0\n0,2.25,red,0,1\n0,0,red,0,0\n"
# The same rows in sparse form. An omitted entry is value index 0: colour 'red', 'lab 1' '0', and
# lab2 '1' (declared {1,0}), so row 1 omits lab2 and rows 0 and 2 must give lab2 = '0' explicitly.
SPARSE_ROWS = "{0 1.5, 2 green, 3 1, 4 0}\n{1 2.25}\n{4 0}\n"
EXPECTED_X = np.array([[1.5, 0, 1], [0, 2.25, 0], [0, 0, 0]])  # colour: value index (red 0, green 1)
EXPECTED_Y = np.array([[1, 0], [0, 1], [0, 0]])
XML = """<?xml version="1.0" encoding="utf-8"?>
<labels xmlns="http://mulan.sourceforge.net/labels">
<label name="lab2"><label name="lab 1"></label></label>
</labels>
"""


def _write(path: Path, text: str) -> Path:
    if path.suffix == ".gz":
        with gzip.open(path, "wt") as fh:
            fh.write(text)
    else:
        path.write_text(text)
    return path


@pytest.mark.parametrize("rows", [DENSE_ROWS, SPARSE_ROWS], ids=["dense", "sparse"])
@pytest.mark.parametrize("suffix", [".arff", ".arff.gz"])
def test_read_arff_hand_written(tmp_path, rows, suffix):
    path = _write(tmp_path / f"toy{suffix}", HEADER + rows)
    xml = _write(tmp_path / "toy.xml", XML)
    for kwargs in ({"label_names": data.read_label_names(xml)}, {"label_count": 2}, {}):  # xml, count, MEKA -C
        x, y, feats, labels = data.read_arff(path, **kwargs)
        np.testing.assert_array_equal(x.toarray(), EXPECTED_X)
        np.testing.assert_array_equal(y, EXPECTED_Y)
        assert feats == ["feat one", "feat,two", "colour"]
        assert labels == ["lab 1", "lab2"]  # file order, names unquoted


def test_load_dataset_by_stem_gz_and_errors(tmp_path):
    _write(tmp_path / "toy.arff.gz", HEADER + DENSE_ROWS)
    _write(tmp_path / "toy.xml", XML)
    ds = data.load_dataset("toy", tmp_path, min_positives=-1)
    assert ds.shape == (3, 3, 2) and ds.name == "toy"
    with pytest.raises(ValueError, match="no label has more than"):
        data.load_dataset("toy", tmp_path)  # every label has <= 20 positives
    with pytest.raises(FileNotFoundError):
        data.load_dataset("nope", tmp_path)
    with pytest.raises(ValueError, match="not in the file"):
        data.read_arff(tmp_path / "toy.arff.gz", label_names=["lab 1", "missing"])
    _write(tmp_path / "miss.arff", HEADER.replace("'toy: -C -2'", "miss") + "?,0,red,0,1\n")
    with pytest.raises(ValueError, match="missing values"):
        data.read_arff(tmp_path / "miss.arff", label_count=2)
    with pytest.raises(ValueError, match="no label file"):
        data.read_arff(tmp_path / "miss.arff")


def test_missing_data_dir_falls_back_to_synthetic(tmp_path):
    with pytest.warns(UserWarning, match="synthetic"):
        ds = data.load_dataset("scene", tmp_path / "absent")
    assert ds.name == "synthetic" and ds.y.sum(0).min() > 0


def test_select_features_keeps_largest_column_sums_in_order():
    x = np.array([[1, 0, 5, 2, 0], [1, 1, 5, 2, 3]], dtype=float)  # sums 2, 1, 10, 4, 3
    np.testing.assert_array_equal(data.select_features(x, 0.4), [2, 3])
    np.testing.assert_array_equal(data.select_features(x, 0.6), [2, 3, 4])
    np.testing.assert_array_equal(data.select_features(x, 1.0), np.arange(5))


# --------------------------------------------------------------------------------------------
# Metrics: hand-computed cases and brute force
# --------------------------------------------------------------------------------------------

Y = np.array([[1, 0, 1], [0, 1, 1], [1, 0, 1], [0, 0, 1]])
S = np.array([[0.9, 0.2, 0.6], [0.4, 0.3, 0.8], [0.3, 0.7, 0.1], [0.6, 0.1, 0.5]])


def test_metrics_hand_computed():
    r = metrics.evaluate(Y, S)
    # Label 0: positives {0.9, 0.3} vs negatives {0.4, 0.6}: pairs won 2 of 4 -> 0.5.
    # Label 1: positive {0.3} vs negatives {0.2, 0.7, 0.1}: 2 of 3. Label 2: single class -> 0.
    assert r["macro_auc"] == pytest.approx((0.5 + 2 / 3 + 0) / 3)
    assert r["macro_auc_defined"] == pytest.approx((0.5 + 2 / 3) / 2) and r["auc_undefined_labels"] == 1
    # Ranking loss per row: row0 (+0,+2 | -1): 0/2; row1 (+1,+2 | -0): 0.3<0.4 -> 1/2;
    # row2 (+0,+2 | -1): 0.7 beats both -> 2/2; row3 (+2 | -0,-1): 0.6>0.5 -> 1/2.
    assert r["ranking_loss"] == pytest.approx((0 + 0.5 + 1 + 0.5) / 4)
    # Predictions > 0.5: [1,0,1], [0,0,1], [0,1,0], [1,0,0] -> wrong cells 0+1+3+2 = 6 of 12.
    assert r["hamming_loss"] == pytest.approx(6 / 12)
    # One-error: top labels 0, 2, 1, 0 -> rows 2 and 3 wrong.
    assert r["one_error"] == pytest.approx(0.5)
    # Micro-F1: TP 3 (cells (0,0),(0,2),(1,2)), FP 2 ((2,1),(3,0)), FN 4 -> 2*3 / (2*3 + 2 + 4).
    assert r["micro_f1"] == pytest.approx(6 / 12)
    # Macro-F1 per label: l0 TP1 FP1 FN1 -> 0.5; l1 TP0 FP1 FN1 -> 0; l2 TP2 FP0 FN2 -> 4/6.
    assert r["macro_f1"] == pytest.approx((0.5 + 0 + 4 / 6) / 3)


def test_macro_auc_equals_brute_force_pair_count():
    rng = np.random.default_rng(0)
    y = (rng.random((60, 7)) < 0.3).astype(int)
    y[:, 3] = 0  # a label without positives: counts 0 over q
    s = np.round(rng.random((60, 7)), 1)  # coarse scores: many ties (count 1/2)
    total = 0.0
    for j in range(7):
        pos, neg = s[y[:, j] == 1, j], s[y[:, j] == 0, j]
        if len(pos) and len(neg):
            total += ((pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])).mean()
    assert metrics.macro_auc(y, s) == pytest.approx(total / 7)


@pytest.mark.parametrize("seed", [0, 1])
def test_fast_macro_auc_equals_sklearn_version(seed):
    rng = np.random.default_rng(seed)
    y = (rng.random((200, 30)) < rng.random(30) * 0.3).astype(int)
    y[:, 0], y[:, 1] = 0, 1  # single-class labels count 0
    s = np.round(rng.random((200, 30)), 2)  # ties
    assert metrics.macro_auc_fast(y, s) == pytest.approx(metrics.macro_auc(y, s), abs=1e-12)
    assert metrics.macro_auc_fast(Y, S) == pytest.approx((0.5 + 2 / 3 + 0) / 3)


def test_metrics_reject_bad_input():
    with pytest.raises(ValueError):
        metrics.evaluate(Y, S[:, :2])
    with pytest.raises(ValueError):
        metrics.evaluate(Y * 2, S)
    with pytest.raises(ValueError):
        metrics.evaluate(Y, np.where(S > 0.5, np.nan, S))


# --------------------------------------------------------------------------------------------
# Folds
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [2, 5])
def test_iterative_stratification_balances_every_label(k):
    ds = data.synthetic_dataset(0, n=1000, d=10, q=10)
    y = ds.y.astype(np.int64)
    folds = reproduce.stratified_folds(y, k, seed=0)
    assert len(folds) == k
    held_all = np.concatenate([np.concatenate([v, t]) for _, v, t in folds])
    np.testing.assert_array_equal(np.sort(held_all), np.arange(len(y)))  # held-out parts partition the data
    half_gaps = []
    for train, val, test in folds:
        assert not set(train) & set(val) and not set(train) & set(test) and not set(val) & set(test)
        assert len(train) + len(val) + len(test) == len(y)
        held = np.concatenate([val, test])
        # Every label's positives are within 1.5 of the expected count (a random split misses by ~10).
        assert np.abs(y[held].sum(0) - y.sum(0) / k).max() <= 1.5
        half_gaps.append(np.abs(y[val].sum(0) - y[test].sum(0)))
    # The validation and test halves are balanced too: on average within 1.5 positives per label
    # (a random halving gives about 4 to 6 here).
    assert np.mean(half_gaps) <= 1.5


def test_table_ranks_and_gain_over_random():
    rows = []
    for fold, (r, u, b) in enumerate([(0.80, 0.82, 0.80), (0.70, 0.75, 0.70)]):
        for sel, auc in (("random", r), ("ubs", u), ("balance", b)):
            row = dict.fromkeys(reproduce.RESULT_FIELDS, 0)
            row.update(dataset="toy", model="mlp", selector=sel, fold=fold, macro_auc=auc, ranking_loss=1 - auc)
            rows.append({k: str(v) for k, v in row.items()})
    text = reproduce.markdown_tables(rows, ["random", "balance", "ubs"])
    # Random and Balance tie at 0.75 and share rank 2; UBS is first. Ranking loss is lower-is-better.
    assert "| toy | 0.7500±0.0500 (2) | 0.7500±0.0500 (2) | 0.7850±0.0350 (1) |" in text
    assert "| toy | 0.2500±0.0500 (2) | 0.2500±0.0500 (2) | 0.2150±0.0350 (1) |" in text
    assert "| Avg (Rank) | 2.00 | 2.00 | 1.00 |" in text
    assert "| toy | +0.0000 (0/0) | +0.0350 (2/0) |" in text


def test_table_names_fold_counts_when_they_differ():
    # A partial run (--only-folds) can give one selector two folds and another one: a single fold
    # has no spread to show, and each cell says how many folds its mean is over.
    rows = []
    for sel, fold, auc in (("random", 0, 0.80), ("random", 1, 0.70), ("ubs", 0, 0.82)):
        row = dict.fromkeys(reproduce.RESULT_FIELDS, 0)
        row.update(dataset="toy", model="mlp", selector=sel, fold=fold, macro_auc=auc, ranking_loss=1 - auc)
        rows.append({k: str(v) for k, v in row.items()})
    text = reproduce.markdown_tables(rows, ["random", "ubs"])
    assert "| toy | 0.7500±0.0500 (2, 2 folds) | 0.8200 (1, 1 fold) |" in text


# --------------------------------------------------------------------------------------------
# CLI smoke: one dataset, 2 folds, 3 epochs, a few selectors
# --------------------------------------------------------------------------------------------


def test_cli_smoke(tmp_path):
    import ubs_kernels

    selectors = ["random", "ubs", "ubs_noc", "ubs_s1", "hard"]
    missing = [reproduce.SELECTORS[s][1] for s in selectors if not hasattr(ubs_kernels, reproduce.SELECTORS[s][1])]
    if missing:
        pytest.skip(f"ubs_kernels does not have {missing} yet")
    dataset = "emotions" if (DATA_DIR / "emotions.arff.gz").exists() else "synthetic"
    out = tmp_path / "out"
    cmd = [sys.executable, "python/reproduce.py", "--datasets", dataset, "--selectors", *selectors]
    cmd += ["--folds", "2", "--epochs", "3", "--warmup", "1", "--device", "cpu", "--out", str(out), "--no-progress"]
    cmd += ["--threads", "1"]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:]

    with (out / "results.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert sorted((r["selector"], r["fold"]) for r in rows) == sorted((s, str(f)) for s in selectors for f in (0, 1))
    for r in rows:
        for m in ("macro_auc", "ranking_loss", "hamming_loss", "micro_f1", "macro_f1", "one_error"):
            assert 0.0 <= float(r[m]) <= 1.0, (m, r[m])
        assert 0 <= int(r["best_epoch"]) < 3
        assert int(r["n_train"]) + int(r["n_val"]) + int(r["n_test"]) == (593 if dataset == "emotions" else 600)
    with (out / "history.csv").open() as fh:
        hist = list(csv.DictReader(fh))
    assert len(hist) == len(rows) * 3
    assert all(float(h["train_loss"]) > 0 and 0 <= float(h["val_macro_auc"]) <= 1 for h in hist)
    for h in hist:  # epoch 2 selects (warm-up 1 .. 2): UBS measures how far C moved P
        measured = h["selector"] in ("ubs", "ubs_noc") and int(h["epoch"]) >= 1
        assert (h["tv_mi_ones"] != "") == measured, h
        if measured:
            assert 0.0 <= float(h["tv_mi_ones"]) <= 1.0 and float(h["c_cv"]) >= 0.0
        assert (h["pressure"] != "") == (h["selector"] != "random" and int(h["epoch"]) >= 1), h
        if h["selector"] == "ubs_s1" and int(h["epoch"]) >= 1:  # the control: uniform P, UBS's draw
            assert float(h["pressure"]) == 1.0 and float(h["p_ratio"]) == 1.0 and float(h["distinct"]) < 0.9

    table = (out / "table.md").read_text()
    assert "| Dataset | Random | UBS | UBS C=1 | UBS s0=1 | Hard |" in table and "Avg (Rank)" in table
    assert "### Selection against the draw: UBS against UBS with s0 = 1 (uniform P, the same draw), MLP" in table
    assert "### The correlation term: UBS (C = mutual information) against UBS with C = ones, MLP" in table
    assert "### How much C moves P, MLP" in table
    assert f"| {dataset} | " in table
    png = out / f"convergence_{dataset}.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "run.json").exists()

    # --report-only rebuilds the table from the CSVs.
    (out / "table.md").unlink()
    reproduce.main([*cmd[2:], "--report-only"])
    assert (out / "table.md").read_text() == table


def test_results_of_an_earlier_run_are_never_deleted(tmp_path, capsys):
    """Without --resume a run refuses an --out that holds results; with it, it adds to them."""
    out = tmp_path / "out"
    out.mkdir()
    kept = {f: "0" for f in reproduce.RESULT_FIELDS} | {"dataset": "kept", "model": "mlp", "selector": "random"}
    old = ",".join(reproduce.RESULT_FIELDS) + "\n" + ",".join(kept[f] for f in reproduce.RESULT_FIELDS) + "\n"
    (out / "results.csv").write_text(old)
    argv = ["--datasets", "synthetic", "--selectors", "random", "--folds", "2", "--epochs", "2"]
    argv += ["--device", "cpu", "--out", str(out), "--no-progress"]
    with pytest.raises(SystemExit, match="never deleted"):
        reproduce.main(argv)
    assert (out / "results.csv").read_text() == old and not (out / "history.csv").exists()
    reproduce.main([*argv, "--resume"])
    text = (out / "results.csv").read_text()
    assert text.startswith(old) and text.count("synthetic,mlp,random,") == 2


def test_default_output_is_untracked_and_ignored():
    args = reproduce.parse_args([])
    assert Path(args.out) == ROOT / "out" / "reproduce"
    ignored = subprocess.run(["git", "check-ignore", "-q", args.out], cwd=ROOT, check=False)
    if ignored.returncode == 128:
        pytest.skip("not a git checkout")
    assert ignored.returncode == 0, f"{args.out} is not git-ignored"


def _rows(cells):
    rows = []
    for dataset, sel, fold, auc, best, warmup in cells:
        row = dict.fromkeys(reproduce.RESULT_FIELDS, 0)
        row.update(dataset=dataset, model="clif", selector=sel, fold=fold, macro_auc=auc, best_epoch=best)
        row.update(warmup=warmup)
        rows.append({k: str(v) for k, v in row.items()})
    return rows


def test_table_flags_comparisons_made_in_warm_up_and_prints_the_paper_beside_ours():
    # scene: every UBS best epoch < warm-up 5 -> no comparison; yeast: UBS and UBS C=1 select.
    rows = _rows(
        [
            ("scene", "random", 0, 0.90, 1, 0),
            ("scene", "ubs", 0, 0.90, 1, 5),
            ("scene", "random", 1, 0.91, 3, 0),
            ("scene", "ubs", 1, 0.91, 4, 5),
            ("yeast", "random", 0, 0.70, 50, 0),
            ("yeast", "ubs", 0, 0.72, 60, 5),
            ("yeast", "ubs_noc", 0, 0.71, 60, 5),
            ("yeast", "random", 1, 0.70, 50, 0),
            ("yeast", "ubs", 1, 0.70, 60, 5),
            ("yeast", "ubs_noc", 1, 0.71, 60, 5),
        ]
    )
    text = reproduce.markdown_tables(rows, ["random", "ubs", "ubs_noc"])
    assert "scene (CLIF): every best epoch of UBS is a warm-up epoch" in text
    assert f"| scene | {reproduce.WARMUP_CELL} | – |" in text
    assert "| yeast | +0.0100 (1/0) | +0.0100 (2/0) |" in text
    # UBS - UBS C=1 on yeast: +0.01 and -0.01
    assert "| yeast | +0.0000 (1/1) |" in text
    # the paper's Table 3 (CLIF) under each dataset's row, with its ranks among its six selectors
    assert "| ↳ paper | 0.9418 (6) | 0.9476 (1) | – |" in text
    assert "| ↳ paper | 0.7107 (5) | 0.7222 (1) | – |" in text


@pytest.mark.parametrize("correlation", ["mi", "ones"])
def test_correlation_effect_measures_the_p_the_selector_draws_from(correlation):
    """training.correlation_effect recomputes P with C = MI and C = ones from the selector's U: the one the
    selector uses must be its own sample_probabilities, and the TV distance between the two is 0 only if c is flat."""
    import torch
    import training

    import ubs_kernels

    torch.manual_seed(0)
    n, q = 300, 6
    sel = ubs_kernels.UncertaintyBatchSelector(
        n, q, batch_size=50, epochs=6, warmup=2, label_correlation=correlation, seed=0
    )
    base = torch.rand(n, 1) * torch.ones(1, q)  # labels 0-2 move together, 3-5 independently
    for _ in range(3):  # epochs 0-1 uniform, 2 selecting
        for idx in sel:
            probs = torch.rand(len(idx), q)
            probs[:, :3] = base[idx, :3] * 0.5 + 0.5 * probs[:, :1]
            sel.observe(idx, probs)
    next(iter(sel))  # plans epoch 3
    assert sel.selecting
    u, seen = sel.uncertainty, sel.seen
    c = sel.label_correlation_rowsums()
    own = c if correlation == "mi" else torch.ones(q)
    p_own = torch.softmax(ubs_kernels.ops.selection_log_probs(u, own, seen, sel.pressure(3)).double(), 0)
    torch.testing.assert_close(sel.sample_probabilities.double(), p_own, rtol=1e-4, atol=1e-7)
    effect = training.correlation_effect(sel, 3)
    assert effect["c_cv"] == pytest.approx(float(c.double().std() / c.double().mean()), rel=1e-6)
    assert effect["c_cv"] > 0.01 and 0.0 < effect["tv_mi_ones"] < 1.0
