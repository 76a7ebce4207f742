"""What was built: build_info, the native op's registration (opcheck), torch.compile."""

from __future__ import annotations

import pytest
import torch
from conftest import make_state, require_backend

import ubs_kernels as ubs


def test_build_info_reports_backends():
    info = ubs.build_info()
    assert info["torch"] == torch.__version__
    assert set(info["backends"]["cpu"]) == set(ubs.OPS)
    for op, backend in info["backends"]["cpu"].items():
        assert backend in ubs.available_backends(op, "cpu")
    if info["native_error"] is None:
        assert "observe" in info["native_cpu"]
        assert info["backends"]["cpu"]["observe"] == "cpu"


def test_package_imports_without_native(tmp_path):
    import subprocess
    import sys

    code = "import ubs_kernels as u; i = u.build_info(); assert i['native_cpu'] == [], i; print(i['backends'])"
    env = {"UBS_SKIP_NATIVE": "1", "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert "'observe': 'torch'" in out.stdout


def _observe_args(history_dtype):
    state = make_state(20, 4, 6, history_dtype)
    gen = torch.Generator().manual_seed(0)
    return (*state, torch.randperm(20, generator=gen)[:8], torch.rand(8, 6, generator=gen), 0.5, 10)


@pytest.mark.parametrize("history_dtype", [torch.float16, torch.float32])
def test_opcheck_native_observe(history_dtype):
    require_backend("observe", "cpu")
    torch.library.opcheck(torch.ops.ubs_kernels.observe.default, _observe_args(history_dtype))


@pytest.mark.parametrize("history_dtype", [torch.float16, torch.float32])
def test_opcheck_native_record(history_dtype):
    require_backend("record", "cpu")
    args = _observe_args(history_dtype)
    torch.library.opcheck(torch.ops.ubs_kernels.record.default, (args[0], args[1], args[4], args[5]))


@pytest.mark.parametrize("rowsum", [False, True])
def test_opcheck_native_label_mi(rowsum):
    require_backend("label_mi", "cpu")
    bins = torch.randint(0, 10, (300, 7), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    torch.library.opcheck(torch.ops.ubs_kernels.label_mi.default, (bins, 10, rowsum))


def test_compile_fullgraph_native_label_mi():
    require_backend("label_mi", "cpu")
    bins = torch.randint(0, 10, (300, 7), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    compiled = torch.compile(
        lambda b: torch.ops.ubs_kernels.label_mi(b, 10, True) * 2, fullgraph=True, backend="aot_eager"
    )
    torch.testing.assert_close(compiled(bins), ubs.label_mi(bins, 10, rowsum=True) * 2)


def test_compile_fullgraph_native_observe():
    require_backend("observe", "cpu")

    def step(history, seen, u, bins, idx, probs):
        torch.ops.ubs_kernels.observe(history, seen, u, bins, idx, probs, 0.5, 10)
        return u.sum()

    args = _observe_args(torch.float16)[:6]
    eager = tuple(t.clone() for t in args)
    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    compiled(*args)
    step(*eager)
    for a, b in zip(args, eager, strict=True):
        assert torch.equal(a, b)
