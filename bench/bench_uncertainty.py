"""Benchmark of the whole-matrix uncertainty pass (Eq. 1, 4, 5 and the bin for all n rows).

State: n samples, q labels, a window of T = 5 predictions (history float16 and float32), every
sample seen T+1 .. 4T-1 times. One call reads the whole ring and writes U and the bins of all
n rows. Providers: ``ubs_<backend>`` for every backend that
``ubs_kernels.available_backends("uncertainty", device)`` reports (``ubs_cpu`` is the native
C++ op, ``ubs_torch`` the PyTorch reference). Every provider is checked against
``reference.uncertainty`` in float32 on the first rows before it is timed. The pass is
memory-bound, so the yardstick is a plain copy of the same bytes, measured in the same run.

Derived rows: ``GB_per_s`` (bytes the op must read and write: the ring, seen, U and the bins,
over the median), ``bw_fraction`` (that over the copy bandwidth measured at the start of the
run), ``copy_ratio`` (the median over the time a copy of the same bytes takes at that
bandwidth; the target is <= 2) and, for native backends, ``speedup_vs_ubs_torch``.
``ubs_torch`` is skipped (a ``skipped`` row says so) above ``--torch-max-elements`` n*q, where
its float32 temporaries would need several GB.

    python bench/bench_uncertainty.py --out bench/results [--sizes 100000,1000] [--quick]
"""

from __future__ import annotations

import argparse
import time
from functools import partial
from pathlib import Path

import harness
import torch

import ubs_kernels
from ubs_kernels import reference

# The per-step sizes of bench_observe.py, and n*q = 1e8: the memory-bound target.
DEFAULT_SIZES = ["2407,6", "7395,159", "5000,374", "20000,1000", "100000,1000"]
QUICK_SIZES = ["257,5", "600,17"]
DTYPES = {"float16": torch.float16, "float32": torch.float32}
VERIFY_ROWS, U_ATOL = 2000, 1e-6


def make_state(n: int, q: int, T: int, dtype: torch.dtype, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(history, seen)`` with every sample seen T+1 .. 4T-1 times (every ring slot in use)."""
    g = torch.Generator().manual_seed(seed)
    history = torch.empty(n, T, q, dtype=dtype)
    for i0 in range(0, n, 10_000):  # in slices: no float32 copy of a 1e8-element ring
        history[i0 : i0 + 10_000] = torch.rand(min(10_000, n - i0), T, q, generator=g).to(dtype)
    return history, torch.randint(T + 1, 4 * T, (n,), generator=g)


def moved_bytes(history: torch.Tensor) -> int:
    """What the pass must read (the ring, seen) and write (U float32, bins uint8)."""
    n, _, q = history.shape
    return history.numel() * history.element_size() + n * 8 + n * q * (4 + 1)


def verify(history, seen, ubs, device: str, lam: float, tau: int) -> None:
    """Every provider against ``reference.uncertainty`` in float32 on the first rows."""
    h, s = history[:VERIFY_ROWS].contiguous(), seen[:VERIFY_ROWS].contiguous()
    u_ref, b_ref = reference.uncertainty(h, s, lam, tau, dtype=torch.float32)
    scaled = u_ref * tau
    boundary = (scaled - scaled.round()).abs() < 1e-4  # u * tau on a bin edge: either bin is right
    for name, backend in ubs:
        u, b = ubs_kernels.uncertainty(h.to(device), s.to(device), lam=lam, tau=tau, backend=backend)
        harness.check_close(f"{name} uncertainty", u, u_ref, U_ATOL)
        harness.check_equal(f"{name} bins", b, b_ref, allowed=boundary)


def bench_size(n: int, q: int, args, device: str, ubs, bw: float, writer: harness.ResultWriter) -> None:
    T, lam, tau = args.window, args.lam, args.tau
    tc = partial(harness.time_call, min_run_time=args.min_run_time, quick=args.quick)

    def log(msg: str) -> None:
        print(f"[uncertainty {n}x{q}] {msg}", flush=True)

    for dname in args.dtypes:
        history, seen = make_state(n, q, T, DTYPES[dname], args.seed)
        verify(history, seen, ubs, device, lam, tau)
        history, seen = history.to(device), seen.to(device)
        moved = moved_bytes(history)
        base = {}
        for name, backend in ubs:
            k = {"provider": name, "device": device, "n": n, "q": q, "tau": tau, "T": T, "dtype": dname}
            if backend == "torch" and n * q > args.torch_max_elements:
                writer.metric(k, None, "skipped", float("nan"), f"skipped: n*q > {args.torch_max_elements:g}")
                log(f"{name} {dname}: skipped (n*q > {args.torch_max_elements:g})")
                continue
            fn = partial(ubs_kernels.uncertainty, history, seen, lam=lam, tau=tau, backend=backend)
            t = tc(fn, device)
            base[name] = t
            gbs = harness.bandwidth_rows(writer, k, t, moved, bw)
            log(f"{name} {dname}: {harness.fmt_s(t.median)} per call, {gbs:.1f} GB/s ({bw / gbs:.2f}x a copy)")
            if name != "ubs_torch" and "ubs_torch" in base:
                writer.metric(k, t, "speedup_vs_ubs_torch", base["ubs_torch"].median / t.median)
        del history, seen


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    harness.add_common_args(p, "uncertainty", DEFAULT_SIZES, QUICK_SIZES)
    p.add_argument("--dtypes", nargs="+", default=list(DTYPES), choices=list(DTYPES), help="history dtypes")
    p.add_argument("--window", type=int, default=5, help="T")
    p.add_argument("--lam", type=float, default=0.5)
    p.add_argument("--torch-max-elements", type=float, default=2e7, help="skip ubs_torch above this n*q")
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    device, sizes = harness.start_run(args, DEFAULT_SIZES, QUICK_SIZES)
    ubs = [(f"ubs_{b}", b) for b in ubs_kernels.available_backends("uncertainty", device)]
    ubs.sort(key=lambda u: u[1] != "torch")  # ubs_torch first: the others report a speedup over it
    bw = harness.copy_bandwidth(device, mib=32 if args.quick else 256)
    print(f"uncertainty on {device}: ubs providers {[u[0] for u in ubs]}, copy bandwidth {bw:.1f} GB/s")
    writer = harness.ResultWriter("uncertainty", device)
    start = time.perf_counter()
    for n, q in sizes:
        bench_size(n, q, args, device, ubs, bw, writer)
    path = writer.write(Path(args.out) / "uncertainty.csv")
    writer.print_table()
    print(f"wrote {path} ({len(writer.rows)} rows) in {time.perf_counter() - start:.0f} s")
    harness.warn_if_busy()


if __name__ == "__main__":
    main()
