"""Shared benchmark machinery: timing, the environment stamp, correctness gates and the CSV writer.

What it measures: wall-clock time of one call of a provider. On the CPU,
``torch.utils.benchmark.Timer.blocked_autorange`` (all of torch's threads), or, for a call that
takes longer than ``SLOW_CALL_S``, the call itself run once or twice with ``time.perf_counter``.
On CUDA, ``triton.testing.do_bench`` when triton imports, else CUDA events around each call.
Every timing yields the median and the 20th/80th percentiles in seconds.

Results are written in long format: one row per timing (``metric="time_s"``) and one row per
derived figure (``speedup_vs_<baseline>``, ``GB_per_s``, ...), every row stamped with the
hardware, the library versions and the git sha.
"""

from __future__ import annotations

import csv
import datetime
import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import sklearn
import torch
import torch.utils.benchmark as torch_benchmark

import ubs_kernels

SLOW_CALL_S = 2.0  # above this one call is its own measurement: no autorange blocks
SLOW_REPEAT_S = 10.0  # a slow call is run a second time only while the runs total less than this

COLUMNS = [
    "op", "provider", "device", "isa", "n", "q", "tau", "T", "batch", "rowsum", "dtype", "data",
    "median_s", "p20_s", "p80_s", "metric", "value", "note",
    "hardware", "cores", "python", "torch", "numpy", "sklearn", "ubs_kernels", "git_sha", "timestamp",
]  # fmt: skip
KEY_COLUMNS = ["op", "provider", "device", "n", "q", "tau", "T", "batch", "rowsum", "dtype", "data"]


@dataclass
class Timing:
    """Seconds per call: median and the 20th/80th percentiles over ``runs`` measurements."""

    median: float
    p20: float
    p80: float
    runs: int
    note: str = ""

    def scaled(self, factor: float, note: str) -> Timing:
        return Timing(self.median * factor, self.p20 * factor, self.p80 * factor, self.runs, note)


def timing_from_samples(samples: list[float], note: str = "") -> Timing:
    """A :class:`Timing` of seconds measured by the caller (median and 20th/80th percentiles)."""
    a = np.asarray(samples, dtype=np.float64)
    p20, med, p80 = np.percentile(a, [20, 50, 80])
    return Timing(float(med), float(p20), float(p80), len(samples), note)


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _time_slow(fn: Callable[[], object], device: str, first: float, min_run_time: float, max_runs: int) -> Timing:
    """One or two plain runs: the warm-up counts, since a call this long amortises its set-up."""
    samples = [first]
    while len(samples) < max_runs and sum(samples) < max(min_run_time, SLOW_REPEAT_S):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        samples.append(time.perf_counter() - t0)
    return timing_from_samples(samples, f"{len(samples)} run(s) of > {SLOW_CALL_S:g} s each")


def _time_cuda(fn: Callable[[], object], min_run_time: float) -> Timing:
    try:
        from triton.testing import do_bench
    except ImportError:
        do_bench = None
    if do_bench is not None:
        ms = do_bench(fn, warmup=25, rep=max(1, int(min_run_time * 1000)), quantiles=[0.5, 0.2, 0.8])
        return Timing(ms[0] / 1e3, ms[1] / 1e3, ms[2] / 1e3, 0, "triton.testing.do_bench")
    samples: list[float] = []
    while sum(samples) < min_run_time or len(samples) < 5:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        samples.append(start.elapsed_time(end) / 1e3)
    return timing_from_samples(samples, "cuda events")


def time_call(fn: Callable[[], object], device: str = "cpu", min_run_time: float = 1.0, quick: bool = False,
              max_slow_runs: int = 2) -> Timing:  # fmt: skip
    """Time ``fn()`` (no arguments) on ``device``; the first call is a warm-up.

    ``quick`` times a single run after the warm-up (CI smoke). A call slower than ``SLOW_CALL_S``
    is timed as up to ``max_slow_runs`` plain runs (warm-up included) instead of autorange blocks.
    """
    t0 = time.perf_counter()
    fn()
    _sync(device)
    first = time.perf_counter() - t0
    if first > SLOW_CALL_S and device == "cuda":
        # On a GPU a slow first call is usually compilation (Triton's JIT, module loading), not
        # the call: the second one decides (bench/RESULTS.md, Triton's label_mi).
        t0 = time.perf_counter()
        fn()
        _sync(device)
        first = time.perf_counter() - t0
    if first > SLOW_CALL_S:
        return _time_slow(fn, device, first, min_run_time, 1 if quick else max_slow_runs)
    if quick:
        t0 = time.perf_counter()
        fn()
        _sync(device)
        return timing_from_samples([time.perf_counter() - t0], "1 run (--quick)")
    if device == "cuda":
        return _time_cuda(fn, min_run_time)
    timer = torch_benchmark.Timer(stmt="fn()", globals={"fn": fn}, num_threads=torch.get_num_threads())
    m = timer.blocked_autorange(min_run_time=min_run_time)
    p20, p80 = np.percentile(np.asarray(m.times), [20, 80])
    return Timing(float(m.median), float(p20), float(p80), len(m.times) * m.number_per_run)


def bandwidth_rows(writer: ResultWriter, key: dict, t: Timing, moved: int, bw: float) -> float:
    """Writes the timing of a memory-bound call and its ``GB_per_s``, ``bw_fraction`` and
    ``copy_ratio`` rows (``moved`` bytes per call, copy bandwidth ``bw`` GB/s); returns GB/s."""
    gbs = moved / t.median / 1e9
    writer.timing(key, t)
    writer.metric(key, t, "GB_per_s", gbs, f"{moved} bytes read+written per call / median")
    writer.metric(key, t, "bw_fraction", gbs / bw, f"vs measured copy bandwidth {bw:.1f} GB/s")
    writer.metric(key, t, "copy_ratio", bw / gbs, f"median / time to copy the same bytes at {bw:.1f} GB/s")
    return gbs


def time_alternating(fns: dict[str, Callable[[], object]], device: str = "cpu", min_run_time: float = 1.0,
                     quick: bool = False, min_rounds: int = 5) -> dict[str, Timing]:  # fmt: skip
    """Time several calls in alternation, one call of each per round, so slow drifts of the
    machine (other tenants of a VM, clocks) affect all of them alike; for a ratio of two calls
    that should share the machine's state. After a warm-up round, rounds continue until every
    call has run ``min_rounds`` times and the rounds took ``min_run_time`` (one round when
    ``quick``)."""
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for fn in fns.values():
        fn()
    _sync(device)
    start = time.perf_counter()
    while True:
        for name, fn in fns.items():
            _sync(device)
            t0 = time.perf_counter()
            fn()
            _sync(device)
            samples[name].append(time.perf_counter() - t0)
        rounds = len(next(iter(samples.values())))
        if quick or (rounds >= min_rounds and time.perf_counter() - start >= min_run_time):
            break
    note = f"{rounds} rounds, calls alternating"
    return {name: timing_from_samples(s, note) for name, s in samples.items()}


def time_beside_copy(writer: ResultWriter, key: dict, fn: Callable[[], object], moved: int, device: str,
                     min_run_time: float, quick: bool) -> tuple[Timing, Timing]:  # fmt: skip
    """Times ``fn`` in alternation with a plain copy of the same bytes (``dst.copy_(src)`` of two
    float32 tensors of ``moved / 2`` bytes each) and writes the copy's timing (provider
    ``copy_same_bytes``) and the ``same_bytes_copy_ratio`` row (``fn``'s median over the copy's);
    returns both timings. The caller writes ``fn``'s own timing rows."""
    src = torch.ones(moved // 8, dtype=torch.float32, device=device)
    dst = torch.zeros_like(src)
    times = time_alternating({"op": fn, "copy": lambda: dst.copy_(src)}, device, min_run_time, quick)
    t, tcopy = times["op"], times["copy"]
    writer.timing({**key, "provider": "copy_same_bytes"}, tcopy)
    note = f"median / median of a copy reading and writing {src.nbytes} bytes each, calls alternating"
    writer.metric(key, t, "same_bytes_copy_ratio", t.median / tcopy.median, note)
    return t, tcopy


def copy_bandwidth(device: str = "cpu", mib: int = 256) -> float:
    """Measured device-memory bandwidth in GB/s: read + write of a ``mib`` MiB tensor copy."""
    src = torch.ones(mib << 18, device=device)  # float32: 2^18 values per MiB
    dst = torch.empty_like(src)
    t = time_call(lambda: dst.copy_(src), device, min_run_time=0.3)
    return 2 * src.numel() * 4 / t.median / 1e9


def _cpu_ticks() -> tuple[int, int] | None:
    try:
        with open("/proc/stat") as f:
            ticks = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    return sum(ticks), ticks[3] + ticks[4]  # total, idle + iowait


def busy_warning(interval: float = 0.5) -> str:
    """A warning line when other processes keep the CPUs busy (timings are then unreliable).

    Samples ``/proc/stat`` for ``interval`` seconds while this process sleeps.
    """
    before = _cpu_ticks()
    time.sleep(interval)
    after = _cpu_ticks()
    if before is None or after is None or after[0] == before[0]:
        return ""
    busy = 1.0 - (after[1] - before[1]) / (after[0] - before[0])
    if busy > 0.25:
        return f"WARNING: other processes kept {busy:.0%} of the CPUs busy just now: timings may be unreliable"
    return ""


def warn_if_busy() -> None:
    warning = busy_warning()
    if warning:
        print(warning, flush=True)


def _git_sha() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(__file__).resolve().parent, capture_output=True, text=True, timeout=10, check=True,
        )  # fmt: skip
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def native_isa(device: str = "cpu") -> str:
    """The instruction-set path the native CPU kernels take in this process (``UBS_CPU_ISA`` and the
    CPU): ``ops.cpu_isa()`` (avx512, avx2, neon, portable; ``torch`` without the extension);
    empty for CUDA runs. label_mi rows record ``label_mi_isa()``, its own path, instead."""
    return "" if device == "cuda" else ubs_kernels.ops.cpu_isa()


def torch_isa() -> str:
    """What torch's own CPU code ran with, for baseline rows: ATen's vector capability, and MKL's
    cap when ``MKL_ENABLE_INSTRUCTIONS`` sets one (an AVX2-only stand-in caps both)."""
    isa = f"torch-{torch.backends.cpu.get_cpu_capability().lower()}"
    mkl = os.environ.get("MKL_ENABLE_INSTRUCTIONS")
    return f"{isa}+mkl-{mkl.lower()}" if mkl else isa


def environment(device: str = "cpu") -> dict[str, str]:
    """The columns every row carries: hardware, core count, versions, git sha, UTC timestamp, and
    the native kernels' instruction-set path (``isa``, which a row may override)."""
    hardware = torch.cuda.get_device_name() if device == "cuda" else _cpu_model()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "isa": native_isa(device),
        "hardware": hardware,
        "cores": str(cores),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "sklearn": sklearn.__version__,
        "ubs_kernels": ubs_kernels.__version__,
        "git_sha": _git_sha(),
        "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


class ResultWriter:
    """Collects long-format rows; ``write`` overwrites ``path`` with all of them."""

    def __init__(self, op: str, device: str) -> None:
        self.op = op
        self.env = environment(device)
        self.rows: list[dict[str, object]] = []

    def timing(self, key: dict[str, object], t: Timing) -> None:
        self._add(key, t, "time_s", t.median, t.note)

    def metric(self, key: dict[str, object], t: Timing | None, metric: str, value: float, note: str = "") -> None:
        """A derived figure; ``t`` (the timing it derives from) may be None, e.g. for a skip."""
        self._add(key, t, metric, value, note)

    def _add(self, key: dict[str, object], t: Timing | None, metric: str, value: float, note: str) -> None:
        row: dict[str, object] = {c: "" for c in COLUMNS}
        row.update(self.env)
        row.update({"op": self.op, **key})
        if t is not None:
            row.update({"median_s": f"{t.median:.6g}", "p20_s": f"{t.p20:.6g}", "p80_s": f"{t.p80:.6g}"})
        row.update({"metric": metric, "value": f"{value:.6g}", "note": note})
        self.rows.append(row)

    def write(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=COLUMNS)
            w.writeheader()
            w.writerows(self.rows)
        return path

    def print_table(self) -> None:
        """Median time and the first derived metrics of each timed row, one line each."""
        width = max([len(str(r["provider"])) for r in self.rows] + [8])
        for r in self.rows:
            if r["metric"] != "time_s":
                continue
            mode = {"True": "rowsum", "False": "full"}.get(str(r["rowsum"]), str(r["dtype"]))
            print(f"  {r['n']:>6}x{r['q']:<5} {r['provider']:<{width}} {mode:<8} {fmt_s(float(r['median_s']))}"
                  f"  {r['note']}")  # fmt: skip


def fmt_s(s: float) -> str:
    if s >= 1:
        return f"{s:9.3f} s "
    if s >= 1e-3:
        return f"{s * 1e3:9.3f} ms"
    return f"{s * 1e6:9.1f} us"


def check_close(name: str, got, want, atol: float, rtol: float = 0.0) -> None:
    """Raise ``AssertionError`` naming the provider unless ``got`` matches ``want``."""
    got = torch.as_tensor(np.asarray(got) if not isinstance(got, torch.Tensor) else got).double().cpu()
    want = torch.as_tensor(np.asarray(want) if not isinstance(want, torch.Tensor) else want).double().cpu()
    if got.shape != want.shape:
        raise AssertionError(f"{name}: shape {tuple(got.shape)} != reference {tuple(want.shape)}")
    err = (got - want).abs()
    bad = err > atol + rtol * want.abs()
    if bool(bad.any()) or not bool(torch.isfinite(got).all()):
        raise AssertionError(
            f"{name}: {int(bad.sum())} of {got.numel()} values differ from the reference "
            f"(max abs err {float(err.max()):.3g}, atol {atol:g})"
        )


def check_equal(name: str, got, want, allowed: torch.Tensor | None = None) -> None:
    """Exact equality (integer counts, bins), except where ``allowed`` is True."""
    got, want = torch.as_tensor(got).cpu(), torch.as_tensor(want).cpu()
    diff = got != want
    if allowed is not None:
        diff &= ~allowed.cpu()
    if bool(diff.any()):
        raise AssertionError(f"{name}: {int(diff.sum())} of {got.numel()} values differ from the reference")


def parse_sizes(items: list[str]) -> list[tuple[int, int]]:
    """``["2407,6", "7395,159"]`` -> ``[(2407, 6), (7395, 159)]``."""
    out = []
    for item in items:
        n, q = (int(v) for v in item.split(","))
        out.append((n, q))
    return out


def resolve_device(device: str) -> str:
    if device == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: no CUDA device is visible to torch")
    return device


def ceil_div(a: int, b: int) -> int:
    return math.ceil(a / b)


def add_common_args(p, op: str, default_sizes: list[str], quick_sizes: list[str]) -> None:
    """The CLI every bench script shares."""
    p.add_argument("--out", default="bench/results", help=f"output folder ({op}.csv is overwritten)")
    p.add_argument("--sizes", nargs="+", help=f"n,q pairs (default {' '.join(default_sizes)})")
    p.add_argument("--quick", action="store_true", help=f"tiny sizes ({' '.join(quick_sizes)}), one timed run")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--min-run-time", type=float, default=1.0, help="autorange time per measurement")
    p.add_argument("--tau", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)


def start_run(args, default_sizes: list[str], quick_sizes: list[str]) -> tuple[str, list[tuple[int, int]]]:
    """Warn if the machine is busy, shorten --quick runs; returns ``(device, sizes)``."""
    warn_if_busy()
    if args.quick:
        args.min_run_time = min(args.min_run_time, 0.05)
    sizes = parse_sizes(args.sizes or (quick_sizes if args.quick else default_sizes))
    return resolve_device(args.device), sizes
