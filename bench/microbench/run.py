"""``make microbench``: the pytest-benchmark suite of bench/microbench, compared with this machine's
committed baseline.

    python bench/microbench/run.py [--device cuda] [--save] [--fail min:25%] [-- PYTEST ARGS]

Writes the run's JSON to ``out/microbench/<host>.json``. Baselines live in
``bench/microbench/baselines/<host>/`` (``<host>``: the CPU model, and the GPU's name with
``--device cuda``), as pytest-benchmark saves them; with one there, every benchmark is compared
with it and a regression past ``--fail`` fails the run, as does the suite's own path-order
gate (conftest.py). The default, the minimum 25% slower, leaves room for a shared machine:
on the 2-core VM of bench/RESULTS.md, with another tenant busy, one thread's minimum moved by
2% (median) and 10% (most) between runs at these cache-resident sizes; memory-bound sizes moved
by up to 60% and are left to bench/. On a quiet machine, ``--fail min:15%``. ``--save`` saves this run as the new
baseline (commit it). Exit status: pytest's.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def host(device: str) -> str:
    name = cpu_model()
    if device == "cuda":
        import torch

        name += "_" + torch.cuda.get_device_name()
    return re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-").lower()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--save", action="store_true", help="save this run as the machine's baseline")
    p.add_argument("--fail", default="min:25%", help="pytest-benchmark --benchmark-compare-fail (default min:25%%)")
    p.add_argument("pytest_args", nargs="*", help="more pytest arguments (after --)")
    args = p.parse_args(argv)

    name = host(args.device)
    storage = HERE / "baselines" / name
    out = ROOT / "out" / "microbench" / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable, "-m", "pytest", str(HERE), "-p", "no:cacheprovider", "-p", "no:xdist", "-q",
        "--benchmark-only", f"--device={args.device}", f"--benchmark-storage=file://{storage}",
        f"--benchmark-json={out}", "--benchmark-sort=name", "--benchmark-columns=min,median,iqr,rounds",
        "--benchmark-min-rounds=5", "--benchmark-max-time=0.5",
    ]  # fmt: skip
    baselines = sorted(storage.glob("*/*.json"))
    if baselines and not args.save:
        cmd += ["--benchmark-compare", f"--benchmark-compare-fail={args.fail}"]
        print(f"microbench: comparing with {baselines[-1].relative_to(ROOT)} (fail on {args.fail})")
    elif not args.save:
        print(f"microbench: no baseline for {name} yet (bench/microbench/run.py --save makes one)")
    if args.save:
        cmd.append("--benchmark-save=baseline")
    cmd += args.pytest_args
    rc = subprocess.call(cmd, cwd=ROOT)
    print(f"microbench: results in {out.relative_to(ROOT)}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
