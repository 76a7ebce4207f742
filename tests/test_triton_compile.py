"""Every Triton kernel compiles for sm_90 (H100/H200) on a machine without a GPU.

The interpreter runs the kernels' logic but not Triton's GPU passes: layouts, tensor-core dot
operands and reshapes that only fail there ("Illegal shared layout") are caught here, by
compiling to a cubin with the ptxas bundled in Triton. Pointers are declared 16-byte aligned,
as a launch specialises them. Skipped where a GPU is present (the gpu tests run the kernels)
and under TRITON_INTERPRET=1 (the kernels are then interpreted functions).
"""

from __future__ import annotations

import os

import pytest
import torch

triton = pytest.importorskip("triton")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") == "1", reason="interpreted kernels do not compile"),
    pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present: the gpu tests run the kernels"),
]


def compile_sm90(kernel, types: dict[str, str], constexprs: dict, **options) -> None:
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    signature = {name: types.get(name, "constexpr") for name in kernel.arg_names}
    aligned = {(i,): [["tt.divisibility", 16]] for i, t in enumerate(signature.values()) if t.startswith("*")}
    src = ASTSource(kernel, signature, constexprs, aligned)
    triton.compile(src, target=GPUTarget("cuda", 90, 32), options=options)


@pytest.fixture(scope="module")
def kernels():
    from ubs_kernels import triton as ubs_triton

    if ubs_triton.ERROR is not None:
        pytest.skip(ubs_triton.ERROR)
    try:
        from triton.backends.nvidia.compiler import CUDABackend  # noqa: F401
    except ImportError as exc:
        pytest.skip(f"Triton has no NVIDIA backend here: {exc}")
    from ubs_kernels.triton import label_mi, observe, selection_log_probs, uncertainty

    return label_mi, observe, selection_log_probs, uncertainty


@pytest.mark.parametrize("tau", [2, 4, 10, 12, 16, 34, 200])
def test_label_mi_tiles_compile(kernels, tau):
    label_mi = kernels[0]
    types = {"bins": "*u8", "hist": "*i32", "out": "*fp32", "n": "i32", "nf": "fp32", "q": "i32", "lim": "i32"}
    types.update(ka0="i32", kb0="i32", diag_value="fp32")
    cfg = label_mi.plan(tau)  # the constexprs the launcher uses
    for rowsum in (False, True) if tau == 10 else (False,):
        consts = {**cfg, "ROWSUM": rowsum, "ACCUMULATE": not cfg["DERIVE"]}
        compile_sm90(label_mi._mi_tiles_kernel, types, consts, num_warps=8, num_stages=3)


def test_elementwise_kernels_compile(kernels):
    label_mi, observe, sel, unc = kernels
    compile_sm90(label_mi._hist_kernel, {"bins": "*u8", "hist": "*i32", "n": "i32", "q": "i32"},
                 {"ROWS": 4096, "BR": 8, "BL": 32, "TH": 16}, num_warps=4)  # fmt: skip
    ring = {"seen": "*i64", "u_out": "*fp32", "bins_out": "*u8", "q_div": "i32", "lam": "fp32", "one_minus_lam": "fp32"}
    ring["tau"] = "i32"
    for hist in ("*fp16", "*fp32"):
        compile_sm90(unc._uncertainty_kernel, {**ring, "history": hist, "n": "i32"},
                     {"T": 5, "ALIGN": 8, "BLOCK_N": 8, "BLOCK_Q": 512}, num_warps=8)  # fmt: skip
        step = {**ring, "history": hist, "indices": "*i64", "probs": "*bf16", "stride_pr": "i32", "stride_pq": "i32"}
        compile_sm90(observe._observe_rows_kernel, step, {"T": 5, "ALIGN": 8, "BLOCK_Q": 1024}, num_warps=4)
    compile_sm90(observe._increment_seen_kernel, {"seen": "*i64", "indices": "*i64", "b": "i32"}, {"BLOCK": 1024})
    rows = {"u": "*fp32", "c": "*fp32", "seen": "*i64", "w": "*fp32", "partial": "*fp32", "n": "i32", "q": "i32"}
    compile_sm90(sel._weights_kernel, rows, {"BLOCK_N": 32, "BLOCK_Q": 128}, num_warps=8)
    reduce = {"partial": "*fp32", "stats": "*fp32", "nblocks": "i32"}
    compile_sm90(sel._range_kernel, reduce, {"BLOCK": 1024})
    compile_sm90(sel._lse_kernel, reduce, {"BLOCK": 1024})
    logits = {"w": "*fp32", "seen": "*i64", "stats": "*fp32", "out": "*fp32", "partial": "*fp32", "n": "i32"}
    compile_sm90(sel._logits_kernel, {**logits, "neg_log_s": "fp32"}, {"BLOCK": 1024})
    compile_sm90(sel._shift_kernel, {"out": "*fp32", "stats": "*fp32", "n": "i32"}, {"BLOCK": 1024})
