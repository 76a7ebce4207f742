"""Build driver: runs CMake (CMakeLists.txt is the source of truth for csrc/).

Environment flags (see README):
  UBS_TARGET_DEVICE=auto|cpu|cuda  which native kernels to build (auto: CUDA when torch has
                                   CUDA and nvcc is found)
  UBS_SKIP_NATIVE=1                build no extension (pure-Python install, torch backend only)
  TORCH_CUDA_ARCH_LIST             CUDA architectures, e.g. "9.0" (default: 9.0)
  MAX_JOBS                         parallel compile jobs
  DEBUG=1                          debug build

Install with ``pip install --no-build-isolation -e .`` so the build links the installed torch.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent


class CMakeExtension(Extension):
    def __init__(self, name: str) -> None:
        super().__init__(name, sources=[])


def _want_cuda(torch) -> bool:
    target = os.environ.get("UBS_TARGET_DEVICE", "auto")
    if target not in ("auto", "cpu", "cuda"):
        raise ValueError(f"UBS_TARGET_DEVICE must be auto, cpu or cuda, got {target!r}")
    has_nvcc = shutil.which("nvcc") is not None or os.path.exists("/usr/local/cuda/bin/nvcc")
    if target == "cuda" and not (torch.version.cuda and has_nvcc):
        raise RuntimeError("UBS_TARGET_DEVICE=cuda needs a CUDA build of torch and nvcc")
    return target != "cpu" and bool(torch.version.cuda) and has_nvcc


def _cuda_archs() -> str:
    archs = os.environ.get("TORCH_CUDA_ARCH_LIST", "9.0")
    return ";".join(a.replace(".", "").replace("+PTX", "") for a in archs.replace(",", " ").replace(";", " ").split())


def _runtime_libstdcxx() -> str | None:
    """The libstdc++.so.6 this process runs with (loaded by torch), from /proc/self/maps."""
    try:
        with open("/proc/self/maps") as maps:
            paths = {line.split()[-1] for line in maps if "/libstdc++.so" in line}
    except OSError:
        return None
    return min(paths) if paths else None


class CMakeBuild(build_ext):
    def run(self) -> None:
        if os.environ.get("UBS_SKIP_NATIVE") == "1":
            print("UBS_SKIP_NATIVE=1: building no native extension")
            return
        super().run()

    def build_extension(self, ext: CMakeExtension) -> None:
        import torch  # the installed torch: --no-build-isolation

        out_dir = Path(self.get_ext_fullpath(ext.name)).resolve().parent
        build_dir = Path(self.build_temp).resolve() / "cmake"
        build_dir.mkdir(parents=True, exist_ok=True)
        cfg = "Debug" if os.environ.get("DEBUG") == "1" else "Release"
        args = [
            f"-DCMAKE_LIBRARY_OUTPUT_DIRECTORY={out_dir}",
            f"-DCMAKE_BUILD_TYPE={cfg}",
            f"-DCMAKE_PREFIX_PATH={torch.utils.cmake_prefix_path}",
            f"-DPython_EXECUTABLE={sys.executable}",
            f"-DUBS_WITH_CUDA={'ON' if _want_cuda(torch) else 'OFF'}",
        ]
        if _want_cuda(torch):
            args.append(f"-DCMAKE_CUDA_ARCHITECTURES={_cuda_archs()}")
        stdcxx = _runtime_libstdcxx()
        if stdcxx:  # used only if the compiler's own libstdc++.so link is missing (CMakeLists.txt)
            args.append(f"-DUBS_RUNTIME_STDCXX={stdcxx}")
        if shutil.which("ninja"):
            args.append("-GNinja")
        subprocess.check_call(["cmake", str(ROOT), *args], cwd=build_dir)
        jobs = os.environ.get("MAX_JOBS", str(os.cpu_count() or 1))
        subprocess.check_call(["cmake", "--build", ".", "--parallel", jobs], cwd=build_dir)


setup(
    ext_modules=[] if os.environ.get("UBS_SKIP_NATIVE") == "1" else [CMakeExtension("ubs_kernels._C")],
    cmdclass={"build_ext": CMakeBuild},
)
