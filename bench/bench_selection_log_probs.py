"""Benchmark of Eq. 7-10 fused (``selection_log_probs``): log P of every sample, once per epoch.

Inputs: U (n, q) float32 uniform in [0, 1), c (q,) the row sums of a symmetric C with unit
diagonal, 1% of the samples never observed, pressure s = 100 (the start of selection).
Providers: ``ubs_<backend>`` for every backend that
``ubs_kernels.available_backends("selection_log_probs", device)`` reports (``ubs_cpu`` is the
native C++ op, ``ubs_torch`` the PyTorch reference: a float32 GEMV, then min-max, Q and a
logsumexp as separate tensor ops). Every provider is first checked against the float64 Eq. 10
of the Q that the reference's steps give on the correctly rounded float32 w, within one
quantisation step ln(s)/n (a float32 GEMV may round w to a neighbouring float).

Derived rows: ``GB_per_s`` (the bytes of U, c and seen read, and log P written, over the
median), ``bw_fraction`` (that over the copy bandwidth measured at the start of the run) and,
for native backends, ``speedup_vs_ubs_torch``.

    python bench/bench_selection_log_probs.py --out bench/results [--sizes 100000,1000] [--quick]
"""

from __future__ import annotations

import argparse
import math
import time
from functools import partial
from pathlib import Path

import harness
import torch

import ubs_kernels
from ubs_kernels import reference

DEFAULT_SIZES = ["2407,6", "7395,159", "5000,374", "20000,1000", "100000,1000"]
QUICK_SIZES = ["257,5", "600,17"]
PRESSURE = 100.0


def make_inputs(n: int, q: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    u = torch.rand(n, q, generator=g)
    a = torch.rand(q, q, generator=g) * 0.1
    c = ((a + a.T) / 2).fill_diagonal_(1.0).sum(1)
    seen = torch.randint(1, 20, (n,), generator=g)
    seen[torch.randperm(n, generator=g)[: n // 100]] = 0
    return u, c, seen


def verify(u, c, seen, ubs, device: str) -> None:
    """log P of every provider against Eq. 10 in float64 of the reference's Q."""
    n = u.shape[0]
    w = reference.weights(u, c, torch.float64).float()  # correctly rounded float32 w
    Q = reference.quantise(reference.normalise(w, seen), n)
    want = reference.log_probabilities(Q, n, PRESSURE, torch.float64)
    step = math.log(PRESSURE) / n
    for name, backend in ubs:
        got = ubs_kernels.selection_log_probs(u.to(device), c.to(device), seen.to(device), PRESSURE, backend=backend)
        harness.check_close(name, got, want, step + 1e-5)


def bench_size(n: int, q: int, args, device: str, ubs, bw: float, writer: harness.ResultWriter) -> None:
    tc = partial(harness.time_call, min_run_time=args.min_run_time, quick=args.quick)
    u, c, seen = make_inputs(n, q, args.seed)
    verify(u, c, seen, ubs, device)
    u, c, seen = u.to(device), c.to(device), seen.to(device)
    moved = n * q * 4 + q * 4 + n * 8 + n * 4
    base = {}
    for name, backend in ubs:
        k = {"provider": name, "device": device, "n": n, "q": q, "dtype": "float32"}
        t = tc(partial(ubs_kernels.selection_log_probs, u, c, seen, PRESSURE, backend=backend), device)
        base[name] = t
        gbs = moved / t.median / 1e9
        print(f"[selection_log_probs {n}x{q}] {name}: {harness.fmt_s(t.median)} per call, {gbs:.1f} GB/s", flush=True)
        writer.timing(k, t)
        writer.metric(k, t, "GB_per_s", gbs, f"{moved} bytes read+written per call / median")
        writer.metric(k, t, "bw_fraction", gbs / bw, f"vs measured copy bandwidth {bw:.1f} GB/s")
        if name != "ubs_torch" and "ubs_torch" in base:
            writer.metric(k, t, "speedup_vs_ubs_torch", base["ubs_torch"].median / t.median)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    harness.add_common_args(p, "selection_log_probs", DEFAULT_SIZES, QUICK_SIZES)
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    device, sizes = harness.start_run(args, DEFAULT_SIZES, QUICK_SIZES)
    ubs = [(f"ubs_{b}", b) for b in ubs_kernels.available_backends("selection_log_probs", device)]
    ubs.sort(key=lambda u: u[1] != "torch")  # ubs_torch first: the others report a speedup over it
    bw = harness.copy_bandwidth(device, mib=32 if args.quick else 256)
    print(f"selection_log_probs on {device}: ubs providers {[u[0] for u in ubs]}, copy bandwidth {bw:.1f} GB/s")
    writer = harness.ResultWriter("selection_log_probs", device)
    start = time.perf_counter()
    for n, q in sizes:
        bench_size(n, q, args, device, ubs, bw, writer)
    path = writer.write(Path(args.out) / "selection_log_probs.csv")
    writer.print_table()
    print(f"wrote {path} ({len(writer.rows)} rows) in {time.perf_counter() - start:.0f} s")
    harness.warn_if_busy()


if __name__ == "__main__":
    main()
