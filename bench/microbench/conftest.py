"""pytest-benchmark suite of the kernels: every op x backend x CPU instruction-set path at a few
sizes (``bench/microbench/README.md``). Run it with ``make microbench`` (``run.py``), not with
``make test``: it measures speed and gates regressions, it does not check correctness.

Options: ``--device cpu|cuda`` (the device of the ubs providers), ``--threads N`` (torch CPU
threads; default 1, whose times are steady on a shared machine), ``--path-tolerance F`` (the
path-order gate below).

Besides pytest-benchmark's comparison with a saved baseline, the session fails when, for one op
and size, a CPU path is slower than a path below it (``avx512`` > ``avx2`` > ``popcnt`` >
``portable``; ``neon`` > ``portable``) by more than the tolerance on the minimum: the gate that
shows a fast path that is not fast. label_mi also fails when its full matrix costs more than
its row sums by that much.
"""

from __future__ import annotations

import platform

import pytest
import torch

import ubs_kernels

X86 = platform.machine().lower() in ("x86_64", "amd64")
# UBS_CPU_ISA caps, highest first (csrc/cpu/isa_levels.h).
LABEL_MI_PATHS = ["avx512", "avx2", "popcnt", "portable"] if X86 else ["neon", "portable"]
ROW_PATHS = ["avx512", "avx2", "portable"] if X86 else ["neon", "portable"]
ORDER = {name: i for i, name in enumerate(LABEL_MI_PATHS)}

# (group, isa) -> (min seconds, test id), filled as benchmarks finish; checked at the end.
TIMES: dict[tuple[str, str], tuple[float, str]] = {}


def pytest_addoption(parser):
    parser.addoption("--device", default="cpu", choices=["cpu", "cuda"], help="device of the ubs providers")
    parser.addoption("--threads", type=int, default=1, help="torch CPU threads (default 1: steadiest)")
    parser.addoption("--path-tolerance", type=float, default=0.15, help="path-order gate on the minimum")


@pytest.fixture(scope="session")
def device(request) -> str:
    dev = request.config.getoption("--device")
    if dev == "cuda" and not torch.cuda.is_available():
        pytest.skip("--device cuda: torch sees no CUDA device")
    return dev


@pytest.fixture(scope="session", autouse=True)
def _threads(request):
    before = torch.get_num_threads()
    torch.set_num_threads(request.config.getoption("--threads"))
    yield
    torch.set_num_threads(before)


@pytest.fixture
def cap(request, monkeypatch):
    """Sets ``UBS_CPU_ISA`` to the test's ``isa`` parameter (None: left as it is)."""
    isa = getattr(request, "param", None)
    if isa is not None:
        monkeypatch.setenv("UBS_CPU_ISA", isa)
    return isa


def sync(device: str):
    return torch.cuda.synchronize if device == "cuda" else (lambda: None)


def measure(benchmark, fn, device: str, group: str, isa: str | None, ran: str) -> None:
    """Times ``fn`` (synchronised on CUDA) in ``group``; records the path that ran (``ran``)."""
    wait = sync(device)

    def call():
        fn()
        wait()

    benchmark.group = group
    benchmark.extra_info.update({"isa": ran, "cap": isa or "", "threads": torch.get_num_threads()})
    benchmark(call)
    if isa is not None and benchmark.stats is not None:
        TIMES[(group, ran)] = (benchmark.stats.stats.min, benchmark.name)


def require_path(isa: str | None, ran: str) -> None:
    """Skips a cap whose path this CPU does not have (the kernel would run a lower one)."""
    if isa is not None and isa != ran:
        pytest.skip(f"UBS_CPU_ISA={isa}: this CPU runs {ran} for it")


def pytest_sessionfinish(session, exitstatus):
    tol = session.config.getoption("--path-tolerance")
    failures = []
    groups = {group for group, _ in TIMES}
    for group in sorted(groups):
        paths = sorted(((ORDER[isa], isa) for g, isa in TIMES if g == group and isa in ORDER))
        for i, (_, high) in enumerate(paths):
            for _, low in paths[i + 1 :]:
                t_high, t_low = TIMES[(group, high)][0], TIMES[(group, low)][0]
                if t_high > t_low * (1 + tol):
                    failures.append(f"{group}: {high} {t_high * 1e3:.3f} ms slower than {low} {t_low * 1e3:.3f} ms")
    for (group, isa), (t_full, _) in TIMES.items():
        if " full " in group:
            rows = TIMES.get((group.replace(" full ", " rowsum "), isa))
            if rows is not None and t_full > rows[0] * (1 + tol):
                failures.append(f"{group} [{isa}]: full {t_full * 1e3:.3f} ms > row sums {rows[0] * 1e3:.3f} ms")
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None and TIMES:
        reporter.write_sep("-", f"path-order gate (tolerance {tol:.0%} on the minimum)")
        for line in failures or ["every path at least as fast as the paths below it"]:
            reporter.write_line(line)
    if failures and session.exitstatus == 0:
        session.exitstatus = 1


def ubs_cpu_isa() -> str:
    return ubs_kernels.ops.cpu_isa()


def label_mi_isa() -> str:
    return torch.ops.ubs_kernels.label_mi_isa()


__all__ = ["LABEL_MI_PATHS", "ROW_PATHS", "label_mi_isa", "measure", "require_path", "ubs_cpu_isa"]
