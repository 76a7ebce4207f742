"""One benchmark per op x backend x CPU path x size (conftest.py: options and the path gate).

Each CPU path is forced with ``UBS_CPU_ISA`` and skipped where this CPU has no such path; the
``isa`` of each benchmark's ``extra_info`` is the path that ran. ``auto`` is label_mi's own
choice (the fastest path measured); the row kernels' ``auto`` is their highest path, already
timed under its name. The torch reference is timed for label_mi (small size) and
selection_log_probs only: its other ops are Python-level code whose times move by a third
between runs of a shared machine, too unevenly for the regression gate (bench/ has their
figures).
"""

from __future__ import annotations

import pytest
import torch
from conftest import LABEL_MI_PATHS, ROW_PATHS, label_mi_isa, measure, require_path, ubs_cpu_isa

import ubs_kernels as ubs
from ubs_kernels import reference
from ubs_kernels.sampling import epoch_generator

TAU, T, LAM, BATCH = 10, 5, 0.5, 128
LABEL_MI_SIZES = [(2000, 100), (5000, 374)]
STEP_SIZES = [(5000, 374)]
# Whole-matrix passes at sizes that stay in the last-level cache: the kernels' own speed. Their
# memory-bound figures at n q = 1e8, against a copy of the same bytes, are bench/'s.
WHOLE_SIZES = [(4000, 374)]
SMALL = 2000 * 100  # n * q up to which the torch reference is timed


def providers(op: str, device: str, paths: list[str], auto: bool = False) -> list[tuple[str, str | None]]:
    """(backend, UBS_CPU_ISA cap or None) for every backend of ``op`` on ``device``."""
    out = []
    for backend in ubs.available_backends(op, device):
        if backend == "cpu":
            out += [("cpu", cap) for cap in (["auto"] if auto else []) + paths]
        else:
            out.append((backend, None))
    return out


def params(op: str, paths: list[str], auto: bool = False):
    """Parametrises (backend, cap) for both devices; the device's own list is filtered at run time."""
    seen, out = set(), []
    for dev in ("cpu", "cuda"):
        for backend, cap in providers(op, dev, paths, auto) if dev == "cpu" or torch.cuda.is_available() else []:
            if (backend, cap) not in seen:
                seen.add((backend, cap))
                out.append(pytest.param(backend, cap, id=f"{backend}-{cap}" if cap else backend))
    return out


TORCH_TIMED = ("label_mi", "selection_log_probs")  # the torch reference's steady timings


def skip_unless(op: str, device: str, backend: str, n: int, q: int) -> None:
    if backend not in ubs.available_backends(op, device):
        pytest.skip(f"{backend} cannot run {op} on {device}")
    if backend == "torch" and (op not in TORCH_TIMED or n * q > SMALL):
        pytest.skip("the torch reference is timed for label_mi (small size) and selection_log_probs only")


def ran_path(backend: str, cap: str | None, which) -> tuple[str | None, str]:
    """(the cap the gate files the time under, the path that ran) for a (backend, cap)."""
    if backend != "cpu":
        return None, backend
    ran = which()
    if cap == "auto":
        return None, ran  # label_mi's measured choice: shown, not part of the path order
    require_path(cap, ran)
    return cap, ran


def label_bins(n: int, q: int, device: str) -> torch.Tensor:
    g = torch.Generator().manual_seed(n + q)
    scores = torch.randn(n, 8, generator=g) @ torch.randn(8, q, generator=g) / 8**0.5
    return reference.to_bins(torch.sigmoid(scores + 0.5 * torch.randn(n, q, generator=g)), TAU).to(device)


@pytest.mark.parametrize(("n", "q"), LABEL_MI_SIZES, ids=str)
@pytest.mark.parametrize("rowsum", [False, True], ids=["full", "rowsum"])
@pytest.mark.parametrize(("backend", "cap"), params("label_mi", LABEL_MI_PATHS, auto=True), indirect=["cap"])
def test_label_mi(benchmark, device, backend, cap, rowsum, n, q):
    skip_unless("label_mi", device, backend, n, q)
    gate, ran = ran_path(backend, cap, label_mi_isa)
    bins = label_bins(n, q, device)
    mode = "rowsum" if rowsum else "full"
    measure(
        benchmark, lambda: ubs.label_mi(bins, TAU, rowsum=rowsum, backend=backend), device,
        f"label_mi {mode} {n}x{q}", gate, ran,
    )  # fmt: skip


def filled_state(n: int, q: int, dtype: torch.dtype, device: str):
    """History pre-filled past the window, and U/bins from it."""
    g = torch.Generator().manual_seed(n * 7 + q)
    history = torch.rand(n, T, q, generator=g).to(dtype).to(device)
    seen = torch.full((n,), 2 * T + 1, dtype=torch.int64, device=device)
    u = torch.zeros(n, q, device=device)
    bins = torch.zeros(n, q, dtype=torch.uint8, device=device)
    return history, seen, u, bins


def step_batches(n: int, q: int, device: str, count: int = 16):
    g = torch.Generator().manual_seed(q)
    return [
        (torch.randperm(n, generator=g)[:BATCH].to(device), torch.rand(BATCH, q, generator=g).to(device))
        for _ in range(count)
    ]


DTYPES = pytest.mark.parametrize("dtype", [torch.float16, torch.float32], ids=["f16", "f32"])


@pytest.mark.parametrize(("n", "q"), STEP_SIZES, ids=str)
@DTYPES
@pytest.mark.parametrize(("backend", "cap"), params("observe", ROW_PATHS), indirect=["cap"])
def test_observe_step(benchmark, device, backend, cap, dtype, n, q):
    skip_unless("observe", device, backend, 0, 0)
    gate, ran = ran_path(backend, cap, ubs_cpu_isa)
    state = filled_state(n, q, dtype, device)
    batches = step_batches(n, q, device)
    it = iter(range(1 << 62))

    def step():
        idx, probs = batches[next(it) % len(batches)]
        ubs.observe(*state, idx, probs, LAM, TAU, backend=backend)

    measure(benchmark, step, device, f"observe step b={BATCH} {str(dtype)[6:]} {n}x{q}", gate, ran)


@pytest.mark.parametrize(("n", "q"), WHOLE_SIZES, ids=str)
@DTYPES
@pytest.mark.parametrize(("backend", "cap"), params("uncertainty", ROW_PATHS), indirect=["cap"])
def test_uncertainty_whole(benchmark, device, backend, cap, dtype, n, q):
    skip_unless("uncertainty", device, backend, n, q)
    gate, ran = ran_path(backend, cap, ubs_cpu_isa)
    history, seen, _, _ = filled_state(n, q, dtype, device)
    measure(
        benchmark, lambda: ubs.uncertainty(history, seen, LAM, TAU, backend=backend), device,
        f"uncertainty {str(dtype)[6:]} {n}x{q}", gate, ran,
    )  # fmt: skip


@pytest.mark.parametrize(("n", "q"), STEP_SIZES, ids=str)
@DTYPES
@pytest.mark.parametrize("logits", [False, True], ids=["probs", "logits"])
@pytest.mark.parametrize(("backend", "cap"), params("stage", ROW_PATHS), indirect=["cap"])
def test_stage(benchmark, device, backend, cap, logits, dtype, n, q):
    skip_unless("stage", device, backend, 0, 0)
    gate, ran = ran_path(backend, cap, ubs_cpu_isa)
    batches = step_batches(n, q, device)
    if logits:
        batches = [(idx, torch.logit(p.clamp(1e-4, 1 - 1e-4))) for idx, p in batches]
    staged_idx = torch.zeros(len(batches) * BATCH, dtype=torch.int64, device=device)
    staged = torch.zeros(len(batches) * BATCH, q, dtype=dtype, device=device)
    it = iter(range(1 << 62))

    def step():
        k = next(it) % len(batches)
        idx, values = batches[k]
        ubs.stage(staged_idx, staged, k * BATCH, idx, values, n, logits=logits, backend=backend)

    kind = "logits" if logits else "probs"
    if not logits and dtype == torch.float32:
        gate = None  # a plain copy on every path: nothing for the path-order gate to compare
    measure(benchmark, step, device, f"stage {kind} b={BATCH} {str(dtype)[6:]} {n}x{q}", gate, ran)


@pytest.mark.parametrize(("n", "q"), STEP_SIZES, ids=str)
@DTYPES
@pytest.mark.parametrize(("backend", "cap"), params("observe_staged", ROW_PATHS), indirect=["cap"])
def test_observe_staged_epoch(benchmark, device, backend, cap, dtype, n, q):
    """One epoch of staged steps (ceil(n / b) batches of b) applied at once."""
    skip_unless("observe_staged", device, backend, n, q)
    gate, ran = ran_path(backend, cap, ubs_cpu_isa)
    state = filled_state(n, q, dtype, device)
    g = torch.Generator().manual_seed(3)
    steps = -(-n // BATCH)
    idx = torch.cat([torch.randperm(n, generator=g)[:BATCH] for _ in range(steps)]).to(device)
    probs = torch.rand(len(idx), q, generator=g).to(dtype).to(device)
    measure(
        benchmark, lambda: ubs.observe_staged(*state, idx, probs, LAM, TAU, backend=backend), device,
        f"observe_staged epoch {str(dtype)[6:]} {n}x{q}", gate, ran,
    )  # fmt: skip


@pytest.mark.parametrize(("n", "q"), [(10000, 374)], ids=str)
@pytest.mark.parametrize(("backend", "cap"), params("selection_log_probs", ROW_PATHS), indirect=["cap"])
def test_selection_log_probs(benchmark, device, backend, cap, n, q):
    skip_unless("selection_log_probs", device, backend, 0, 0)  # torch at every size here
    gate, ran = ran_path(backend, cap, ubs_cpu_isa)
    g = torch.Generator().manual_seed(5)
    u, c = torch.rand(n, q, generator=g).to(device), torch.rand(q, generator=g).to(device)
    seen = torch.ones(n, dtype=torch.int64, device=device)
    measure(
        benchmark, lambda: ubs.selection_log_probs(u, c, seen, 100.0, backend=backend), device,
        f"selection_log_probs {n}x{q}", gate, ran,
    )  # fmt: skip


@pytest.mark.parametrize("n", [100000], ids=lambda v: f"n={v}")
@pytest.mark.parametrize("backend", ["cpu", "torch"])
def test_plan_weighted(benchmark, backend, n):
    if backend not in ubs.available_backends("plan_weighted", "cpu"):
        pytest.skip(f"{backend} cannot run plan_weighted")
    log_p = torch.randn(n, generator=torch.Generator().manual_seed(1))
    batches = -(-n // BATCH)
    measure(
        benchmark, lambda: ubs.plan_weighted(log_p, BATCH, batches, epoch_generator(0, 1), backend=backend), "cpu",
        f"plan_weighted n={n} b={BATCH}", None, backend,
    )  # fmt: skip
