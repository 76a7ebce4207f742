"""The demo (python/demo.py) and the drivers' shared rules (python/common.py).

The demo runs on a small synthetic set here (the default, yeast from ../shared/data, takes ~15 s):
it must print one line per epoch per selector, with ``s_t`` as ``-`` in warm-up epochs, a
comparison table with one row per selector, write its plot, and end with the backends line
(tests/test_gpu.py checks the same on CUDA).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "python"))

import common  # noqa: E402

EPOCHS, WARMUP = 4, 2
SELECTORS = ["random", "ubs", "ubs_noc", "hard"]
TITLES = {"random": "Random", "ubs": "UBS", "ubs_noc": "UBS C=1", "hard": "Hard"}


def _demo(tmp_path: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "python/demo.py", "--dataset", "synthetic", "--samples", "600", "--labels", "8"]
    cmd += ["--device", "cpu", "--plot", str(tmp_path / "demo.png"), *extra]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)


def test_demo_compares_selectors_epoch_by_epoch_and_in_a_table(tmp_path):
    result = _demo(
        tmp_path, "--epochs", str(EPOCHS), "--warmup", str(WARMUP), "--folds", "2", "--selectors", *SELECTORS
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert re.search(r"^synthetic: train \d+ x 60, 8 labels, .* \| device cpu$", out, flags=re.MULTILINE), out

    pattern = (
        r"^epoch +(\d+) (\S+) +(uniform|selection) +\| loss \S+ \| val Macro-AUC (\S+) \| s_t +(\S+) \| "
        r"MI +(\S+) \| TV +(\S+) \| Pmax/Pmin +(\S+) \| distinct (\S+) \| select +(\S+) ms \| train +(\S+) ms$"
    )
    lines = re.findall(pattern, out, flags=re.MULTILINE)
    assert [(s, int(t)) for t, s, *_ in lines] == [(s, t) for s in SELECTORS for t in range(EPOCHS)], out
    for epoch, sel, phase, auc, s_t, mi, tv, ratio, distinct, select_ms, train_ms in lines:
        uniform = sel == "random" or int(epoch) < WARMUP
        assert phase == ("uniform" if uniform else "selection")
        assert (s_t == "-") == uniform  # no pressure in uniform epochs
        assert (mi == "-") == (uniform or sel not in ("ubs", "ubs_noc"))
        assert 0.0 <= float(auc) <= 1.0 and 0.0 < float(distinct) <= 1.0
        assert float(select_ms) >= 0 and float(train_ms) > 0
        if uniform:
            assert float(ratio) == pytest.approx(1.0)
        elif sel != "hard":
            assert float(s_t) > 1.0 and float(ratio) == pytest.approx(float(s_t), rel=0.02)  # Pmax/Pmin = s_t
        if tv != "-":
            assert 0.0 <= float(tv) <= 1.0

    # The comparison: one row per selector, Random's gain "-", the others paired over the 2 folds.
    rows = re.findall(
        r"^(Random|UBS C=1|UBS|Hard) +(\S+)±\S+ +(\S+)(?: \((\d)/(\d)\))? +0\.\d{4} +\S+ +(\S+) +(\S+) +(\S+)%$",
        out,
        flags=re.MULTILINE,
    )
    assert [r[0] for r in rows] == [TITLES[s] for s in SELECTORS], out
    assert rows[0][2] == "-"
    for _, auc, gain, better, worse, select_ms, train_ms, overhead in rows[1:]:
        assert 0.0 <= float(auc) <= 1.0 and int(better) + int(worse) <= 2 and re.fullmatch(r"[+-]\d\.\d{4}", gain)
        share = 100 * float(select_ms) / (float(select_ms) + float(train_ms))
        assert float(overhead) == pytest.approx(share, abs=1.0)  # from the rounded columns
    assert re.search(r"^UBS vs Random: [+-]\d\.\d{4} Macro-AUC .*too few folds for a test\)$", out, re.MULTILINE), out

    assert (tmp_path / "demo.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert re.search(r"^ubs_kernels backends \(auto\) on cpu: \{.*'observe'", out.splitlines()[-1]), out


def test_demo_says_when_selection_played_no_part(tmp_path, capsys):
    """Three epochs at the default warm-up rule: warm-up 2, and a best epoch in it says so rather than tie."""
    import demo

    threads = torch.get_num_threads()  # the demo sets its own
    try:
        demo.main(
            ["--dataset", "synthetic", "--samples", "600", "--labels", "8", "--device", "cpu"]
            + ["--plot", "", "--epochs", "3", "--folds", "1", "--selectors", "random", "ubs", "--lr", "1e-6"]
        )
    finally:
        torch.set_num_threads(threads)
    out, err = capsys.readouterr()
    assert "warm-up 2 epoch(s) instead of 5, so that --epochs 3 keeps one selection epoch" in err
    # At lr 1e-6 the model barely moves, so the first epoch can be the best; whichever it is, the
    # verdict either compares (a selection epoch won) or says that selection played no part.
    best = re.search(r"^UBS +\S+ +\S+(?: \(\d/\d\))? +\S+ +(\d+) ", out, re.MULTILINE)
    assert best, out
    if int(best[1]) < 2:
        assert "UBS: every best epoch is a warm-up epoch (uniform batches): selection played no part" in out
    else:
        assert "UBS vs Random:" in out


@pytest.mark.parametrize(
    ("epochs", "warmup", "expect"),
    [
        (100, None, 5),  # the paper's default
        (3, None, 2),  # lowered, with a note: one selection epoch left
        (1, None, 0),
        (10, 0, 0),
        (10, 9, 9),
        (3, 3, "error"),  # explicit and leaving no selection epoch: never silently changed
        (3, 7, "error"),
        (10, -1, "error"),
        (0, None, "error"),
    ],
)
def test_one_warmup_rule(epochs, warmup, expect, capsys):
    parser = argparse.ArgumentParser(prog="driver")
    parser.add_argument("--epochs", type=int)
    common.add_warmup_argument(parser)
    argv = ["--epochs", str(epochs)] + ([] if warmup is None else ["--warmup", str(warmup)])
    args = parser.parse_args(argv)
    if expect == "error":
        with pytest.raises(SystemExit) as exc:
            common.resolve_warmup(parser, args)
        assert exc.value.code == 2
        return
    common.resolve_warmup(parser, args)
    assert args.warmup == expect
    assert ("keeps one selection epoch" in capsys.readouterr().err) == (warmup is None and expect < 5)


@pytest.mark.parametrize("driver", ["demo", "reproduce", "train_ddp"])
def test_every_driver_refuses_a_warmup_without_selection(driver, tmp_path, monkeypatch, capsys):
    module = __import__(driver)
    argv = ["--epochs", "3", "--warmup", "3"]
    with pytest.raises(SystemExit) as exc:
        if driver == "train_ddp":  # reads sys.argv
            monkeypatch.setattr(sys, "argv", ["train_ddp.py", *argv])
            module.parse_args()
        else:
            module.parse_args([*argv, "--out" if driver == "reproduce" else "--plot", str(tmp_path / "x")])
    assert exc.value.code == 2
    assert "--warmup 3 leaves no selection epoch in --epochs 3" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
