"""The torch-free CPU kernels (csrc/cpu/label_mi_tiles.h, uncertainty_row_kernels.h) in standalone
programs (tests/native/): every instruction-set path against scalar and float64 oracles.

Built with the host's C++ compiler and run here (AVX-512, AVX2, POPCNT and portable paths on
x86-64; NEON on AArch64), and cross-compiled for AArch64 (``aarch64-linux-gnu-g++``) and run
under ``qemu-aarch64``, so the NEON paths are tested on an x86 machine too. Each test skips,
saying which tool is missing, where the toolchain is not installed (Debian:
``apt-get install g++-aarch64-linux-gnu qemu-user``). The extension's own sources that hold
NEON code are also compiled for AArch64 (syntax only: there is no AArch64 torch to link).
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NATIVE = ROOT / "tests" / "native"
CPU = ROOT / "csrc" / "cpu"
PROGRAMS = ["tiles_test", "row_test"]
CROSS, QEMU = "aarch64-linux-gnu-g++", "qemu-aarch64"
FLAGS = ["-O2", "-std=c++17", "-Wall", "-Wextra", "-Werror", f"-I{CPU}"]


def _host_compiler() -> str | None:
    return os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")


def _build(compiler: str, program: str, out_dir: Path, extra: list[str]) -> Path:
    exe = out_dir / program
    cmd = [compiler, *FLAGS, *extra, str(NATIVE / f"{program}.cpp"), "-o", str(exe)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stdout}{proc.stderr}"
    return exe


def _run(cmd: list[str]) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout}{proc.stderr}"
    return proc.stdout


@pytest.mark.parametrize("program", PROGRAMS)
def test_native_paths_on_this_cpu(tmp_path, program):
    compiler = _host_compiler()
    if compiler is None:
        pytest.skip("no C++ compiler (g++, c++ or clang++) on PATH")
    out = _run([str(_build(compiler, program, tmp_path, []))])
    assert "FAIL" not in out and " ok" in out, out
    if program == "tiles_test":  # every path the CPU runs was checked, portable included
        assert "tiles portable" in out
        if platform.machine().lower() in ("x86_64", "amd64"):
            assert "tiles popcnt" in out  # every x86-64 CPU this suite meets has POPCNT


def _cross_tools() -> None:
    missing = [tool for tool in (CROSS, QEMU) if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"{' and '.join(missing)} not installed (Debian: g++-aarch64-linux-gnu, qemu-user)")


@pytest.mark.parametrize("program", PROGRAMS)
def test_neon_paths_under_qemu(tmp_path, program):
    _cross_tools()
    exe = _build(CROSS, program, tmp_path, ["-static"])
    out = _run([QEMU, str(exe)])
    assert "FAIL" not in out, out
    expected = ["tiles neon      ok", "tiles portable  ok"] if program == "tiles_test" else []
    expected += [] if program == "tiles_test" else ["rows float32 neon      ok", "rows float16 neon      ok"]
    for line in expected:
        assert line in out, out


@pytest.mark.parametrize("source", ["label_mi.cpp", "uncertainty_row.cpp"])
def test_extension_sources_compile_for_aarch64(source):
    """The extension's NEON-bearing sources compile for AArch64 against torch's headers."""
    if shutil.which(CROSS) is None:
        pytest.skip(f"{CROSS} not installed (Debian: g++-aarch64-linux-gnu)")
    from torch.utils.cpp_extension import include_paths

    includes = [f"-I{p}" for p in include_paths()]
    cmd = [CROSS, "-std=c++17", "-fsyntax-only", "-fopenmp", f"-I{ROOT / 'csrc'}", *includes, str(CPU / source)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
