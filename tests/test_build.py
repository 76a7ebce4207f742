"""What was built: build_info, the package without its native module or without Triton, and
the native module's link to the shared C++ runtime. (opcheck and torch.compile of every op:
test_opcheck.py.)"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import make_state, require_backend

import ubs_kernels as ubs


def test_build_info_reports_backends():
    info = ubs.build_info()
    assert info["torch"] == torch.__version__
    assert set(info["backends"]["cpu"]) == set(ubs.OPS)
    for op, backend in info["backends"]["cpu"].items():
        assert backend in ubs.available_backends(op, "cpu")
    if info["native_error"] is None:
        assert "observe" in info["native_cpu"]
        assert info["backends"]["cpu"]["observe"] == "cpu"


def test_package_imports_without_native(tmp_path):
    code = "import ubs_kernels as u; i = u.build_info(); assert i['native_cpu'] == [], i; print(i['backends'])"
    env = {"UBS_SKIP_NATIVE": "1", "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert "'observe': 'torch'" in out.stdout


def test_package_imports_without_triton():
    """No Triton: ``ubs_kernels`` still imports, the backend says why and is never offered."""
    code = (
        "import sys; sys.modules['triton'] = None\n"
        "import ubs_kernels, ubs_kernels.triton as t\n"
        "assert t.ERROR and 'triton' in t.ERROR.lower(), t.ERROR\n"
        "assert not t.available('label_mi', 'cuda')\n"
        "assert 'triton' not in ubs_kernels.available_backends('label_mi', 'cpu')\n"
    )
    env = {**os.environ, "TRITON_INTERPRET": "1"}  # so that ops does try the Triton backend on the CPU
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr


# The extension must use torch's shared C++ runtime. Linked against libstdc++.a (a relocated GCC
# whose libstdc++.so link dangles, as on the H200 image), it carries a private copy of the
# iostreams that was never set up: every native error message that formats a number crashed
# the process there (GCC 13), or lost the number (GCC 12). CMakeLists.txt links the shared
# library and checks the module after the build; these tests check the module that was loaded.
_OWN_LIBSTDCXX = re.compile(r"\s\d+\s+(_ZNSt6locale\S*|_ZTIN10__cxxabiv1\S*|_ZNSo9_M_insert\S*)")


def _native_module() -> Path:
    if not ubs.build_info()["native_cpu"]:
        pytest.skip("the native extension is not built")
    from ubs_kernels import _C

    return Path(_C.__file__)


def test_extension_links_the_shared_libstdcxx():
    readelf = shutil.which("readelf")
    if readelf is None:
        pytest.skip("readelf (binutils) is not installed")
    module = _native_module()
    dynamic = subprocess.run([readelf, "-d", str(module)], capture_output=True, text=True, check=True).stdout
    assert "[libstdc++.so.6]" in dynamic, f"{module.name} does not load libstdc++.so.6:\n{dynamic}"
    symbols = subprocess.run([readelf, "-W", "--dyn-syms", str(module)], capture_output=True, text=True, check=True)
    own = _OWN_LIBSTDCXX.findall(symbols.stdout)
    assert not own, f"{module.name} defines libstdc++'s own symbols (linked statically): {own[:3]}"


def test_native_errors_quote_their_numbers():
    """A native check's message formats integers and doubles (the path that crashed), in full."""
    require_backend("label_mi", "cpu")
    _native_module()
    with pytest.raises(ValueError, match=r"tau must be an integer in \[2, 256\], got 1$"):
        torch.ops.ubs_kernels.label_mi(torch.zeros(5, 2, dtype=torch.uint8), 1, False)
    state = make_state(4, 2, 3)
    probs = torch.full((1, 3), 0.5, dtype=torch.float64)
    probs[0, 2] = 1.0000001
    with pytest.raises(ValueError, match=r"probs\[0, 2\] = 1\.0000001$"):
        torch.ops.ubs_kernels.observe(*state, torch.tensor([1]), probs, 0.5, 10)
    with pytest.raises(ValueError, match=r"lam must be in \[0, 1\], got 1\.5$"):
        torch.ops.ubs_kernels.observe(*state, torch.tensor([1]), probs.clamp(0, 1), 1.5, 10)
