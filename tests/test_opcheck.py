"""Every op's registration and tracing, on every backend and device this build has.

``torch.library.opcheck`` on each kernel: the native CPU ones, the native CUDA ones and Triton's
on a CUDA device (schema, autograd registration, fake tensors, AOT dispatch); Triton under the
interpreter on the CPU gets the schema and autograd checks only (the fake and AOT checks need
real kernels). ``torch.compile(fullgraph=True)`` traces every op: the native ones with
``backend="aot_eager"`` on the CPU and with Inductor on CUDA, Triton's on a CUDA device, and
Triton's functionalised graph with fake CUDA tensors where there is no GPU. The CUDA kernels
launch on the current stream.
"""

from __future__ import annotations

import os

import pytest
import torch
from conftest import correlated_bins, device_backends, make_state, on, registered_op, require_backend

import ubs_kernels as ubs
from ubs_kernels import reference, sampling

HISTORY = {"float16": torch.float16, "float32": torch.float32}
# (op, variant): the history dtype, or label_mi's matrix or row sums.
CASES = [
    *[(op, dtype) for op in ("observe", "record", "uncertainty") for dtype in HISTORY],
    ("label_mi", "matrix"),
    ("label_mi", "rowsum"),
    ("selection_log_probs", "-"),
    *[(op, dtype) for op in ("stage", "observe_staged") for dtype in HISTORY],
    ("plan_weighted", "-"),
]
GPU_OPS = ("observe", "record", "uncertainty", "label_mi", "selection_log_probs")
KERNELS = {"cpu": ubs.OPS, "cuda": GPU_OPS, "triton": GPU_OPS}  # the ops each backend has a kernel for


def samples(op: str, variant: str, device: str) -> list[tuple]:
    """The arguments opcheck calls ``op`` with: a fresh state and a warm one, a few sizes."""
    gen = torch.Generator().manual_seed(0)
    history_dtype = HISTORY.get(variant)

    def rand(*size):
        return torch.rand(*size, generator=gen)

    def to(*args):
        return tuple(on(a, device) for a in args)

    if op in ("observe", "record"):
        steps = []
        for n, T, q, b in [(20, 4, 6, 8), (20, 4, 8, 8)]:  # fresh states
            steps.append((*make_state(n, T, q, history_dtype), torch.randperm(n, generator=gen)[:b], rand(b, q)))
        n, T, q = 12, 3, 5  # a warm state: a random ring, counts 0 .. 4
        warm = (rand(n, T, q).to(history_dtype), torch.randint(0, 5, (n,), generator=gen))
        steps.append(
            (*warm, torch.zeros(n, q), torch.zeros(n, q, dtype=torch.uint8), torch.tensor([3, 0, 7]), rand(3, q))
        )
        if op == "observe":
            out = [(*to(*step), 0.5, 10) for step in steps]
        else:
            out = [to(s[0], s[1], s[4], s[5]) for s in steps]
    elif op == "uncertainty":
        shapes = [(24, 4, 9), (20, 4, 8), (12, 3, 5)]
        out = [(*to(rand(*s).to(history_dtype), torch.randint(0, 8, s[:1], generator=gen)), 0.5, 10) for s in shapes]
    elif op == "label_mi":
        random = [torch.randint(0, 10, size, generator=gen, dtype=torch.uint8) for size in [(300, 7), (40, 5)]]
        out = [(on(bins, device), 10, variant == "rowsum") for bins in [*random, correlated_bins(300, 7, 10, 0)]]
    elif op == "selection_log_probs":
        out = [(*to(rand(n, q), rand(q), torch.randint(0, 5, (n,), generator=gen)), s)
               for n, q, s in [(64, 7, 30.0), (20, 8, 3.0), (12, 5, 10.0)]]  # fmt: skip
    elif op == "stage":
        buffers = (torch.zeros(20, dtype=torch.int64), torch.zeros(20, 6, dtype=history_dtype))
        out = [(*to(*buffers), 4, *to(torch.randperm(20, generator=gen)[:8], rand(8, 6)), 20)]
    elif op == "observe_staged":
        staged = (torch.randint(0, 20, (30,), generator=gen), rand(30, 6).to(history_dtype))
        out = [(*to(*make_state(20, 3, 6, history_dtype), *staged), 0.5, 10)]
    else:
        assert op == "plan_weighted"
        out = [(on(torch.randn(200, generator=gen), device), 16, 5, sampling.epoch_generator(0, 0))]
    return out


@pytest.mark.parametrize(
    ("device", "backend", "op", "variant"),
    [p for p in device_backends("cpu", "cuda", "triton", cases=CASES) if p.values[2] in KERNELS[p.values[1]]],
)
def test_opcheck(device, backend, op, variant):
    require_backend(op, backend, device)
    checks = {}  # every check opcheck has
    if backend == "triton" and device == "cpu":  # interpreted kernels: no fake or AOT tracing
        checks = {"test_utils": ("test_schema", "test_autograd_registration")}
    elif op == "plan_weighted":  # a Generator argument: no AOT dispatch
        checks = {"test_utils": ("test_schema", "test_faketensor")}
    for args in samples(op, variant, device):
        torch.library.opcheck(registered_op(op, backend).default, args, **checks)


def _compile(fn, device):
    return torch.compile(fn, fullgraph=True, backend="aot_eager" if device == "cpu" else "inductor")


@pytest.mark.parametrize(("device", "backend"), device_backends("cpu", "cuda"))
def test_compile_fullgraph_native_label_mi(device, backend):
    require_backend("label_mi", backend, device)
    bins = torch.randint(0, 10, (300, 7), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)).to(device)
    compiled = _compile(lambda b: torch.ops.ubs_kernels.label_mi(b, 10, True) * 2, device)
    torch.testing.assert_close(compiled(bins), ubs.label_mi(bins, 10, rowsum=True, backend=backend) * 2)


@pytest.mark.parametrize(("device", "backend"), device_backends("cpu", "cuda"))
def test_compile_fullgraph_native_observe(device, backend):
    require_backend("observe", backend, device)

    def step(history, seen, u, bins, idx, probs):
        torch.ops.ubs_kernels.observe(history, seen, u, bins, idx, probs, 0.5, 10)
        return u.sum()

    args = samples("observe", "float16", device)[0][:6]
    eager = tuple(t.clone() for t in args)
    _compile(step, device)(*args)
    step(*eager)
    for a, b in zip(args, eager, strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize(("device", "backend"), device_backends("cpu", "cuda"))
def test_compile_fullgraph_native_uncertainty(device, backend):
    require_backend("uncertainty", backend, device)
    history, seen, _, _ = samples("uncertainty", "float16", device)[0]

    def f(h, s):
        u, bins = torch.ops.ubs_kernels.uncertainty(h, s, 0.5, 10)
        return u.sum(dim=1), bins.long().sum()

    for got, want in zip(_compile(f, device)(history, seen), f(history, seen), strict=True):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize(("device", "backend"), device_backends("cpu", "cuda"))
def test_compile_fullgraph_native_selection_log_probs(device, backend):
    require_backend("selection_log_probs", backend, device)
    u, c, seen, s = samples("selection_log_probs", "-", device)[0]

    def f(u, c, seen):
        return torch.ops.ubs_kernels.selection_log_probs(u, c, seen, s).exp()

    torch.testing.assert_close(_compile(f, device)(u, c, seen), f(u, c, seen))


@pytest.mark.parametrize(("device", "backend"), device_backends("cuda", devices=("cuda",)))
def test_compile_fullgraph_label_mi_and_current_stream(device, backend):
    require_backend("label_mi", backend, device)
    bins = correlated_bins(3000, 40, 10, 1).to(device)
    compiled = torch.compile(lambda b: torch.ops.ubs_kernels.label_mi(b, 10, True) * 2, fullgraph=True)
    expected = ubs.label_mi(bins, 10, rowsum=True, backend=backend) * 2
    torch.testing.assert_close(compiled(bins), expected)
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):  # the kernels launch on the current stream
        got = ubs.label_mi(bins, 10, rowsum=True, backend=backend) * 2
    stream.synchronize()
    assert torch.equal(got, expected)


@pytest.mark.parametrize(("device", "backend"), device_backends("triton", devices=("cuda",)))
def test_compile_fullgraph_triton_traces_every_op(device, backend):
    require_backend("label_mi", backend, device)
    ops = torch.ops.ubs_kernels

    def epoch_step(history, seen, u, bins, idx, probs):
        ops.observe_triton(history, seen, u, bins, idx, probs, 0.5, 10)
        c = ops.label_mi_triton(bins, 10, True)
        u2, b2 = ops.uncertainty_triton(history, seen, 0.5, 10)
        return ops.selection_log_probs_triton(u, c, seen, 10.0), ops.label_mi_triton(bins, 10, False), u2, b2

    g = torch.Generator(device=device).manual_seed(4)
    n, T, q = 3000, 5, 40
    history = torch.rand(n, T, q, generator=g, device=device).half()
    seen = torch.randint(0, 8, (n,), generator=g, device=device)
    state = [history, seen, *reference.uncertainty(history, seen)]
    idx = torch.randperm(n, generator=g, device=device)[:256]
    probs = torch.rand(256, q, generator=g, device=device)
    eager_state = [t.clone() for t in state]
    expected = epoch_step(*eager_state, idx, probs)
    got = torch.compile(epoch_step, fullgraph=True)(*state, idx, probs)
    for a, b in zip(state, eager_state, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)  # row sums use float atomics: order may differ


@pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") == "1", reason="interpreted kernels are not traceable")
def test_functional_trace_through_wrap_triton():
    """What torch.compile sees, without a GPU: fake CUDA tensors, functionalised, every launch a
    ``triton_kernel_wrapper_functional`` node and every output of the right shape."""
    pytest.importorskip("triton")
    from torch._functorch.aot_autograd import aot_export_module
    from torch._subclasses.fake_tensor import FakeTensorMode

    import ubs_kernels.triton as ubs_triton

    if ubs_triton.ERROR is not None:
        pytest.skip(ubs_triton.ERROR)

    class Step(torch.nn.Module):
        def forward(self, history, seen, u, bins, idx, probs):
            ops = torch.ops.ubs_kernels
            ops.observe_triton(history, seen, u, bins, idx, probs, 0.5, 10)
            c = ops.label_mi_triton(bins, 10, True)
            u2, b2 = ops.uncertainty_triton(history, seen, 0.5, 10)
            return ops.selection_log_probs_triton(u, c, seen, 10.0), ops.label_mi_triton(bins, 200, False), u2, b2

    with FakeTensorMode():
        n, T, q = 50, 5, 7
        args = (
            torch.empty(n, T, q, dtype=torch.float16, device="cuda"),
            torch.zeros(n, dtype=torch.long, device="cuda"),
            torch.empty(n, q, device="cuda"),
            torch.empty(n, q, dtype=torch.uint8, device="cuda"),
            torch.arange(8, device="cuda"),
            torch.empty(8, q, dtype=torch.float64, device="cuda"),
        )
        gm, _ = aot_export_module(Step(), args, trace_joint=False)
        outs = [node for node in gm.graph.nodes if node.op == "output"][0].args[0]
    launches = [nd for nd in gm.graph.nodes if "triton_kernel_wrapper_functional" in str(nd.target)]
    assert len(launches) >= 12
    shapes = [tuple(o.meta["val"].shape) for o in outs[-4:]]
    assert shapes == [(n,), (q, q), (n, q), (n, q)]
