"""Benchmark of observe (Eq. 1, 4, 5 and the bin): one training step, and a whole epoch in one call.

State: n samples, q labels, a window of T = 5 predictions (history float16 and float32), pre-
filled so every sample has been seen more than T times.

Per step (``--sizes``): each step observes a batch of b = 128 random distinct samples with
random probabilities. Providers: ``ubs_<backend>`` for every backend that
``ubs_kernels.available_backends("observe", device)`` reports (``ubs_cpu`` is the native C++
op, ``ubs_torch`` the PyTorch reference), and ``authors_style``: the per-sample, per-label
Python loops of the authors' released code (``bench/baselines.py``). Every provider is checked
against ``reference.observe`` before it is timed. Derived rows: ``epoch_s`` (per-step median x
ceil(n / b) steps, not measured as an epoch), ``GB_per_s`` (bytes the op must read and write per
step / median time), ``bw_fraction`` (that against the measured copy bandwidth),
``speedup_vs_authors_style`` and, for native backends, ``speedup_vs_ubs_torch``.

Whole matrix (``--whole-sizes``, default n*q = 1e8; none given: skipped): ONE observe call
whose indices are a random permutation of all n rows and whose probs are an (n, q) float32
matrix, i.e. a whole epoch of observations at once: the project targets "within 2x of a plain
copy of the same bytes" at n*q = 1e8 (CPU) and ">= 80% of copy bandwidth" at n*q = 1e9 (GPU:
``--device cuda --whole-sizes 1000000,1000``). Its rows have provider ``ubs_<backend>_whole``
and ``batch`` = n. The state is built in slices (no float32 copy of the ring) with U and bins
zero (the call rewrites every row); every provider is first checked against
``reference.observe`` on the first rows, as above. The call is in place: repeated timed calls
write every row again (``seen`` grows by one each time), and the indices and probs are made
once, outside the timed call. ``authors_style`` is not run here (no rows: its per-sample Python
loops would take hours); ``ubs_torch`` is skipped (a ``skipped`` row says so) above
``--torch-max-elements`` n*q, where its float32 gathers of the ring would need several GB.
Derived rows: ``GB_per_s`` (bytes the call must move, over the median: probs read n*q*4, the
ring read T*n*q*h plus the new slot written n*q*h (h = 2 or 4 bytes), U written n*q*4, the bins
written n*q, indices read and seen read and written n*24), ``bw_fraction`` (that over the copy
bandwidth measured at the start of the run), ``copy_ratio`` (the median over the time a copy of
the same bytes takes at that bandwidth) and, for native backends when ``ubs_torch`` ran,
``speedup_vs_ubs_torch``. The target itself is checked against a copy timed beside the call: a
``copy_same_bytes`` row (``dst.copy_(src)`` of float32 tensors of half the moved bytes each, so
it reads and writes as many bytes as the call), timed in alternation with it, and the
``same_bytes_copy_ratio`` row, the op's median over that copy's (the CPU target is <= 2). The
bandwidth measured once at the start drifts on a shared machine (27.7 and 39.2 GB/s on two runs
of the same VM), which moved ``copy_ratio`` between 1.44 and 2.08 for the same kernel.

    python bench/bench_observe.py --out bench/results [--sizes 2407,6 7395,159]
        [--whole-sizes 100000,1000] [--quick]
"""

from __future__ import annotations

import argparse
import itertools
import time
from functools import partial
from pathlib import Path

import baselines
import harness
import numpy as np
import torch

import ubs_kernels
from ubs_kernels import reference

DEFAULT_SIZES = ["2407,6", "7395,159", "5000,374", "20000,1000"]
QUICK_SIZES = ["257,5", "600,17"]
WHOLE_SIZES, QUICK_WHOLE_SIZES = ["100000,1000"], ["600,17"]  # one call observes all n rows
DTYPES = {"float16": torch.float16, "float32": torch.float32}
STEPS = 16  # distinct pre-generated batches, cycled through while timing
U_ATOL, AUTHORS_ATOL = 1e-6, 1e-3
SLICE_ROWS, VERIFY_ROWS = 10_000, 2000  # whole matrix: build in slices; check on the first rows


def make_state(n: int, q: int, T: int, dtype: torch.dtype, lam: float, tau: int, seed: int):
    """``(history, seen, uncertainty, bins)`` with every sample seen T+1 .. 4T-1 times."""
    g = torch.Generator().manual_seed(seed)
    history = torch.rand(n, T, q, generator=g).to(dtype)
    seen = torch.randint(T + 1, 4 * T, (n,), generator=g)
    u, bins = reference.uncertainty(history, seen, lam, tau)
    return [history, seen, u.contiguous(), bins.contiguous()]


def make_whole_state(n: int, q: int, T: int, dtype: torch.dtype, seed: int, device: str):
    """``(history, seen, uncertainty, bins)`` on ``device``, built in slices of ``SLICE_ROWS`` rows.

    No float32 copy of the whole ring is ever made (1e8 * T values at n*q = 1e8). Every sample has
    been seen T+1 .. 4T-1 times; U and the bins are zero, since a whole-matrix call rewrites them.
    """
    g = torch.Generator().manual_seed(seed)
    history = torch.empty(n, T, q, dtype=dtype, device=device)
    for i0 in range(0, n, SLICE_ROWS):
        history[i0 : i0 + SLICE_ROWS] = torch.rand(min(SLICE_ROWS, n - i0), T, q, generator=g).to(dtype)
    seen = torch.randint(T + 1, 4 * T, (n,), generator=g).to(device)
    u = torch.zeros(n, q, dtype=torch.float32, device=device)
    return [history, seen, u, torch.zeros(n, q, dtype=torch.uint8, device=device)]


def make_whole_step(n: int, q: int, seed: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """A random permutation of all n rows and an (n, q) float32 matrix of probabilities."""
    g = torch.Generator().manual_seed(seed + 2)
    idx = torch.randperm(n, generator=g).to(device)
    probs = torch.empty(n, q, dtype=torch.float32, device=device)
    for i0 in range(0, n, SLICE_ROWS):
        probs[i0 : i0 + SLICE_ROWS] = torch.rand(min(SLICE_ROWS, n - i0), q, generator=g)
    return idx, probs


def make_steps(n: int, q: int, b: int, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed + 1)
    return [(torch.randperm(n, generator=g)[:b], torch.rand(b, q, generator=g)) for _ in range(STEPS)]


def step_bytes(b: int, q: int, T: int, hbytes: int) -> int:
    """Bytes one step must move: probs in, ring slot out, ring (T rows) in, U and bins out, seen."""
    return b * (q * 4 + q * hbytes + T * q * hbytes + q * 4 + q + 8 + 16)


def ubs_step(state: list[torch.Tensor], steps, backend: str, lam: float, tau: int) -> None:
    idx, probs = next(steps)
    ubs_kernels.observe(*state, idx, probs, lam=lam, tau=tau, backend=backend)


def authors_step(astate: dict, u: np.ndarray, steps, T: int, lam: float) -> None:
    idx, probs = next(steps)
    baselines.authors_style_observe(astate, u, idx, probs, T, lam)


def verify(state, steps, ubs, device: str, lam: float, tau: int, authors: bool) -> None:
    """One step of every provider against ``reference.observe`` in float32 from the same state."""
    idx, probs = steps[0]
    ref = [t.clone() for t in state]
    reference.observe(*ref, idx, probs, lam, tau, dtype=torch.float32)
    scaled = ref[2] * tau
    boundary = (scaled - scaled.round()).abs() < 1e-4  # u * tau on a bin edge: either bin is right
    for name, backend in ubs:
        got = [t.clone().to(device) for t in state]
        ubs_kernels.observe(*got, idx.to(device), probs.to(device), lam=lam, tau=tau, backend=backend)
        harness.check_equal(f"{name} history", got[0], ref[0])
        harness.check_equal(f"{name} seen", got[1], ref[1])
        harness.check_close(f"{name} uncertainty", got[2], ref[2], U_ATOL)
        harness.check_equal(f"{name} bins", got[3], ref[3], allowed=boundary)
    if authors:  # float32 history: the authors' float64 loops see the same values
        u = state[2].numpy().copy()
        baselines.authors_style_observe(baselines.authors_style_state(state[0], state[1]), u, idx.numpy(),
                                        probs.numpy(), state[0].shape[1], lam)  # fmt: skip
        harness.check_close("authors_style uncertainty", u[idx.numpy()], ref[2][idx], AUTHORS_ATOL)


def bench_size(n: int, q: int, args, device: str, ubs, bw: float, writer: harness.ResultWriter) -> None:
    T, b, lam, tau = args.window, min(args.batch, n), args.lam, args.tau
    nsteps = harness.ceil_div(n, b)
    tc = partial(harness.time_call, min_run_time=args.min_run_time, quick=args.quick)

    def log(msg: str) -> None:
        print(f"[observe {n}x{q}] {msg}", flush=True)

    def key(provider: str, dev: str, dtype: str) -> dict:
        return {"provider": provider, "device": dev, "n": n, "q": q, "tau": tau, "T": T, "batch": b, "dtype": dtype}

    steps = make_steps(n, q, b, args.seed)
    state32 = make_state(n, q, T, torch.float32, lam, tau, args.seed)
    verify(state32, steps, [], device, lam, tau, authors=True)
    astate = baselines.authors_style_state(state32[0], state32[1])
    u_np = state32[2].numpy().copy()
    np_steps = [(i.numpy(), p.numpy()) for i, p in steps]
    t_auth = tc(partial(authors_step, astate, u_np, itertools.cycle(np_steps), T, lam))
    del astate, u_np
    k_auth = key("authors_style", "cpu", "float32")
    writer.timing(k_auth, t_auth)
    writer.metric(k_auth, t_auth, "epoch_s", t_auth.median * nsteps, f"derived: per-step median x {nsteps} steps")
    log(f"authors_style: {harness.fmt_s(t_auth.median)} per step")

    for dname in args.dtypes:
        state = state32 if dname == "float32" else make_state(n, q, T, DTYPES[dname], lam, tau, args.seed)
        verify(state, steps, ubs, device, lam, tau, authors=False)
        state = [t.to(device) for t in state]
        dev_steps = [(i.to(device), p.to(device)) for i, p in steps]
        moved = step_bytes(b, q, T, state[0].element_size())
        base = {}
        for name, backend in ubs:
            k = key(name, device, dname)
            t = tc(partial(ubs_step, state, itertools.cycle(dev_steps), backend, lam, tau), device)
            base[name] = t
            log(f"{name} {dname}: {harness.fmt_s(t.median)} per step")
            writer.timing(k, t)
            writer.metric(k, t, "epoch_s", t.median * nsteps, f"derived: per-step median x {nsteps} steps")
            gbs = moved / t.median / 1e9
            writer.metric(k, t, "GB_per_s", gbs, f"{moved} bytes read+written per step / median")
            writer.metric(k, t, "bw_fraction", gbs / bw, f"vs measured copy bandwidth {bw:.1f} GB/s")
            writer.metric(k, t, "speedup_vs_authors_style", t_auth.median / t.median, "authors_style on float32")
            if name != "ubs_torch" and "ubs_torch" in base:
                writer.metric(k, t, "speedup_vs_ubs_torch", base["ubs_torch"].median / t.median)


def bench_whole(n: int, q: int, args, device: str, ubs, bw: float, writer: harness.ResultWriter) -> None:
    """One observe call over all n rows (a whole epoch of observations) per history dtype."""
    T, lam, tau = args.window, args.lam, args.tau

    def log(msg: str) -> None:
        print(f"[observe whole {n}x{q}] {msg}", flush=True)

    idx, probs = make_whole_step(n, q, args.seed, device)
    rows = min(VERIFY_ROWS, n)
    g = torch.Generator().manual_seed(args.seed + 3)
    check_step = [(torch.randperm(rows, generator=g), torch.rand(rows, q, generator=g))]
    for dname in args.dtypes:
        state = make_whole_state(n, q, T, DTYPES[dname], args.seed, device)
        verify([t[:rows].cpu() for t in state], check_step, ubs, device, lam, tau, authors=False)
        moved = step_bytes(n, q, T, state[0].element_size())
        base = {}
        for name, backend in ubs:
            k = {"provider": f"{name}_whole", "device": device, "n": n, "q": q, "tau": tau, "T": T, "batch": n,
                 "dtype": dname}  # fmt: skip
            if backend == "torch" and n * q > args.torch_max_elements:
                writer.metric(k, None, "skipped", float("nan"), f"skipped: n*q > {args.torch_max_elements:g}")
                log(f"{name} {dname}: skipped (n*q > {args.torch_max_elements:g})")
                continue
            call = partial(ubs_kernels.observe, *state, idx, probs, lam=lam, tau=tau, backend=backend)
            t, tcopy = harness.time_beside_copy(writer, k, call, moved, device, args.min_run_time, args.quick)
            base[name] = t
            gbs = harness.bandwidth_rows(writer, k, t, moved, bw)
            log(
                f"{name} {dname}: {harness.fmt_s(t.median)} per call, {gbs:.1f} GB/s ({bw / gbs:.2f}x a copy at the "
                f"start-of-run bandwidth); a copy of the same bytes {harness.fmt_s(tcopy.median)}, in alternation: "
                f"{t.median / tcopy.median:.2f}x"
            )
            if name != "ubs_torch" and "ubs_torch" in base:
                writer.metric(k, t, "speedup_vs_ubs_torch", base["ubs_torch"].median / t.median)
        del state


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    harness.add_common_args(p, "observe", DEFAULT_SIZES, QUICK_SIZES)
    p.add_argument("--dtypes", nargs="+", default=list(DTYPES), choices=list(DTYPES), help="history dtypes")
    p.add_argument("--window", type=int, default=5, help="T")
    p.add_argument("--batch", type=int, default=128, help="b")
    p.add_argument("--lam", type=float, default=0.5)
    p.add_argument("--whole-sizes", nargs="*",
                   help=f"n,q pairs for one observe call over all n rows (default {' '.join(WHOLE_SIZES)}, "
                        f"--quick {' '.join(QUICK_WHOLE_SIZES)}; no values: skip)")  # fmt: skip
    p.add_argument("--torch-max-elements", type=float, default=2e7,
                   help="whole matrix: skip ubs_torch above this n*q")  # fmt: skip
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    device, sizes = harness.start_run(args, DEFAULT_SIZES, QUICK_SIZES)
    ubs = [(f"ubs_{b}", b) for b in ubs_kernels.available_backends("observe", device)]
    # ubs_torch first so native backends can report their speedup over it.
    ubs.sort(key=lambda u: u[1] != "torch")
    bw = harness.copy_bandwidth(device, mib=32 if args.quick else 256)
    print(f"observe on {device}: ubs providers {[u[0] for u in ubs]}, copy bandwidth {bw:.1f} GB/s")
    writer = harness.ResultWriter("observe", device)
    start = time.perf_counter()
    for n, q in sizes:
        bench_size(n, q, args, device, ubs, bw, writer)
    whole = args.whole_sizes if args.whole_sizes is not None else QUICK_WHOLE_SIZES if args.quick else WHOLE_SIZES
    for n, q in harness.parse_sizes(whole):
        bench_whole(n, q, args, device, ubs, bw, writer)
    path = writer.write(Path(args.out) / "observe.csv")
    writer.print_table()
    print(f"wrote {path} ({len(writer.rows)} rows) in {time.perf_counter() - start:.0f} s")
    harness.warn_if_busy()


if __name__ == "__main__":
    main()
