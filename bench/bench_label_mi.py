"""Benchmark of Eq. 6: the mutual information of every label pair of the binned U (per epoch).

Providers: ``ubs_<backend>`` for every backend that ``ubs_kernels.available_backends("label_mi",
device)`` reports, each in full (``(q, q)``) and ``rowsum`` (``c = C 1``) mode, against what a
user would otherwise run (``bench/baselines.py``): ``torch_onehot_matmul``, ``numpy_bincount``
and ``sklearn_pairwise``. Every provider is first checked against the float64 reference on a
slice of the data (MI within 1e-5), then timed. Slow baselines are bounded: sklearn is timed
on a random subset of pairs and extrapolated (the row says so in ``note``); numpy and one-hot
are skipped, with the reason printed and an ``estimated_s`` row, when a small run predicts
more than ``--max-seconds``.

``--isa auto avx2 popcnt portable`` adds the native CPU provider once per ``UBS_CPU_ISA`` cap
(``ubs_cpu_<cap>``; ``auto`` is ``ubs_cpu``); every row's ``isa`` column names the path that ran
(``label_mi_isa()`` for the native rows, torch's capability for the others). An AVX2-only
machine is stood in for by capping torch too, before it starts::

    MKL_ENABLE_INSTRUCTIONS=AVX2 ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 \
        python bench/bench_label_mi.py --isa avx2 popcnt portable --out bench/results/avx2

    python bench/bench_label_mi.py --out bench/results [--sizes 2407,6 7395,159] [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import time
from functools import partial
from pathlib import Path

import baselines
import harness
import torch

import ubs_kernels
from ubs_kernels import reference

DEFAULT_SIZES = ["2407,6", "7395,159", "5000,374", "20000,1000"]
QUICK_SIZES = ["257,5", "600,17"]
VERIFY_ROWS, VERIFY_LABELS = 2000, 40
MI_ATOL = 1e-5
BASELINES = ("torch_onehot_matmul", "numpy_bincount", "sklearn_pairwise")


def synthetic_bins(n: int, q: int, tau: int, seed: int = 0) -> torch.Tensor:
    """Bins of U = sigmoid(noisy rank-8 scores): correlated label columns, so MI is not all ~0."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + n * 1009 + q)
    rank = 8
    scores = torch.randn(n, rank, generator=g) @ torch.randn(rank, q, generator=g) / rank**0.5
    u = torch.sigmoid(scores + 0.5 * torch.randn(n, q, generator=g))
    return reference.to_bins(u, tau)


@contextlib.contextmanager
def isa_cap(cap: str | None):
    """``UBS_CPU_ISA=cap`` while the block runs (the native kernels read it on every call)."""
    before = os.environ.get("UBS_CPU_ISA")
    if cap is not None:
        os.environ["UBS_CPU_ISA"] = cap
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("UBS_CPU_ISA", None)
        else:
            os.environ["UBS_CPU_ISA"] = before


def ubs_providers(device: str, caps: list[str]) -> list[tuple[str, str, str | None]]:
    """``(provider, backend, UBS_CPU_ISA cap or None)`` for every backend, the CPU one per cap."""
    out = []
    for backend in ubs_kernels.available_backends("label_mi", device):
        if backend != "cpu":
            out.append((f"ubs_{backend}", backend, None))
            continue
        out += [("ubs_cpu" if cap == "auto" else f"ubs_cpu_{cap}", backend, cap) for cap in caps]
    return out


def provider_isa(backend: str, cap: str | None) -> str:
    """The ``isa`` column: label_mi's own path for the native CPU kernel, else torch's."""
    if backend == "cpu":
        with isa_cap(cap):
            return ubs_kernels.ops.label_mi_isa()
    return "" if backend in ("cuda", "triton") else harness.torch_isa()


def verify(bins: torch.Tensor, tau: int, device: str, ubs: list[tuple[str, str, str | None]]) -> None:
    """Every provider against ``reference.label_mi`` in float64 on the first rows and labels."""
    x = bins[:VERIFY_ROWS, :VERIFY_LABELS].contiguous()
    q = x.shape[1]
    ref = reference.label_mi(x, tau, dtype=torch.float64)
    ref_rows = reference.label_mi(x, tau, rowsum=True, dtype=torch.float64)
    xd = x.to(device)
    for name, backend, cap in ubs:
        with isa_cap(cap):
            harness.check_close(name, ubs_kernels.label_mi(xd, tau, backend=backend), ref, MI_ATOL)
            got = ubs_kernels.label_mi(xd, tau, rowsum=True, backend=backend)
        harness.check_close(f"{name} rowsum", got, ref_rows, MI_ATOL * q)
    harness.check_close("torch_onehot_matmul", baselines.torch_onehot_matmul_mi(xd, tau), ref, MI_ATOL)
    harness.check_close("numpy_bincount", baselines.numpy_bincount_mi(x, tau), ref, MI_ATOL)
    harness.check_close("sklearn_pairwise", baselines.sklearn_pairwise_mi(x, tau), ref, MI_ATOL)
    pairs = baselines.pair_subset(q, 50, seed=1)
    want = ref[pairs[:, 0], pairs[:, 1]]
    harness.check_close("sklearn_pairwise (pairs)", baselines.sklearn_pairwise_mi(x, tau, pairs), want, MI_ATOL)


def _seconds(fn, device: str = "cpu") -> float:
    t0 = time.perf_counter()
    fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def _free_bytes(device: str) -> int:
    if device == "cuda":
        return torch.cuda.mem_get_info()[0]
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def time_baselines(bins: torch.Tensor, bins_dev: torch.Tensor, tau: int, device: str, args, log) -> dict:
    """Time (or extrapolate, or skip) each baseline: ``{name: (device, Timing or None, estimate_s)}``."""
    n, q = bins.shape
    npairs = q * (q - 1) // 2
    bins_np = bins.numpy()
    tc = partial(harness.time_call, min_run_time=args.min_run_time, quick=args.quick)
    out = {}

    q0 = min(q, 64)  # one-hot work grows as q^2: estimate from the first q0 labels
    small = bins_dev[:, :q0].contiguous()
    est = _seconds(partial(baselines.torch_onehot_matmul_mi, small, tau), device) * (q / q0) ** 2
    need = 4 * (n * q * tau + 6 * (q * tau) ** 2)
    if est > args.max_seconds or need > 0.6 * _free_bytes(device):
        log(f"skip torch_onehot_matmul: estimated {est:.0f} s, {need / 2**30:.1f} GiB")
        out["torch_onehot_matmul"] = (device, None, est)
    else:
        out["torch_onehot_matmul"] = (device, tc(partial(baselines.torch_onehot_matmul_mi, bins_dev, tau), device), est)

    k0 = min(q, 3)  # numpy work is linear in q: estimate from k0 label rows
    est = _seconds(partial(baselines.numpy_bincount_mi, bins_np, tau, range(k0))) * q / k0
    if est > args.max_seconds:
        log(f"skip numpy_bincount: estimated {est:.0f} s > --max-seconds {args.max_seconds:g}")
        out["numpy_bincount"] = ("cpu", None, est)
    else:
        out["numpy_bincount"] = ("cpu", tc(partial(baselines.numpy_bincount_mi, bins_np, tau)), est)

    if npairs:
        probe = baselines.pair_subset(q, 16, seed=2)
        per_pair = _seconds(partial(baselines.sklearn_pairwise_mi, bins_np, tau, probe)) / len(probe)
        k = min(npairs, max(len(probe), int(min(args.subset_seconds, args.max_seconds) / per_pair)))
        if k == npairs:
            out["sklearn_pairwise"] = ("cpu", tc(partial(baselines.sklearn_pairwise_mi, bins_np, tau)), None)
        else:
            pairs = baselines.pair_subset(q, k, seed=3)
            t = tc(partial(baselines.sklearn_pairwise_mi, bins_np, tau, pairs))
            note = f"extrapolated from {k} of {npairs} pairs"
            out["sklearn_pairwise"] = ("cpu", t.scaled(npairs / k, note), None)
    return out


def bench_size(
    n: int, q: int, args, device: str, ubs: list[tuple[str, str, str | None]], writer: harness.ResultWriter
) -> None:
    tau = args.tau

    def log(msg: str) -> None:
        print(f"[label_mi {n}x{q}] {msg}", flush=True)

    def key(provider: str, dev: str, rowsum: bool, isa: str | None = None) -> dict:
        isa = ("" if dev == "cuda" else harness.torch_isa()) if isa is None else isa
        return {
            "provider": provider, "device": dev, "isa": isa, "n": n, "q": q, "tau": tau, "rowsum": rowsum,
            "dtype": "uint8",
        }  # fmt: skip

    bins = synthetic_bins(n, q, tau, args.seed)
    verify(bins, tau, device, ubs)
    log("all providers match the float64 reference")
    bins_dev = bins.to(device)
    npairs = q * (q - 1) // 2
    timed = []
    for name, backend, cap in ubs:
        isa = provider_isa(backend, cap)
        for rowsum in (False, True):
            fn = partial(ubs_kernels.label_mi, bins_dev, tau, rowsum=rowsum, backend=backend)
            with isa_cap(cap):
                t = harness.time_call(fn, device, args.min_run_time, args.quick)
            timed.append((key(name, device, rowsum, isa), t))
            log(f"{name}{' rowsum' if rowsum else ''} [{isa}]: {harness.fmt_s(t.median)}")
    base = time_baselines(bins, bins_dev, tau, device, args, log)
    for name, (dev, t, est) in base.items():
        if t is None:
            note = f"skipped: estimated {est:.0f} s > --max-seconds {args.max_seconds:g} (or memory)"
            writer.metric(key(name, dev, False), None, "estimated_s", est, note)
            continue
        timed.append((key(name, dev, False), t))
        log(f"{name}: {harness.fmt_s(t.median)} {t.note}")
    for k, t in timed:
        writer.timing(k, t)
        if npairs:
            writer.metric(k, t, "pairs_per_s", npairs / t.median, t.note)
        if k["provider"] in BASELINES:
            continue
        for name, (_, tb, _) in base.items():
            if tb is not None:
                note = f"baseline {tb.note}" if "extrapolated" in tb.note else ""
                writer.metric(k, t, f"speedup_vs_{name}", tb.median / t.median, note)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    harness.add_common_args(p, "label_mi", DEFAULT_SIZES, QUICK_SIZES)
    p.add_argument("--max-seconds", type=float, default=300.0, help="skip numpy/one-hot above this estimate")
    p.add_argument("--subset-seconds", type=float, default=5.0, help="time budget of the sklearn pair subset")
    p.add_argument(
        "--isa", nargs="+", default=["auto"], help="UBS_CPU_ISA caps of the native CPU provider (default: auto)"
    )
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    device, sizes = harness.start_run(args, DEFAULT_SIZES, QUICK_SIZES)
    ubs = ubs_providers(device, args.isa)
    print(f"label_mi on {device}: ubs providers {[u[0] for u in ubs]}, torch threads {torch.get_num_threads()}")
    writer = harness.ResultWriter("label_mi", device)
    start = time.perf_counter()
    for n, q in sizes:
        bench_size(n, q, args, device, ubs, writer)
    path = writer.write(Path(args.out) / "label_mi.csv")
    writer.print_table()
    print(f"wrote {path} ({len(writer.rows)} rows) in {time.perf_counter() - start:.0f} s")
    harness.warn_if_busy()


if __name__ == "__main__":
    main()
