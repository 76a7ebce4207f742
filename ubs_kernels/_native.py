"""Loading the compiled extension ``ubs_kernels._C`` and asking it what it provides.

The package always imports: without ``_C`` every op runs on the torch backend, said once in
a log line.
"""

from __future__ import annotations

import logging
import os

import torch

log = logging.getLogger("ubs_kernels")


class _NativeOps:
    def __init__(self) -> None:
        self.loaded = False
        self.error: str | None = None
        if os.environ.get("UBS_SKIP_NATIVE") == "1":
            self.error = "UBS_SKIP_NATIVE=1"
            return
        try:
            from . import _C  # noqa: F401  (registers the ubs_kernels:: ops on import)

            self.loaded = True
        except ImportError as exc:  # not built, or built against another torch
            self.error = str(exc)
            log.info("ubs_kernels: native extension not loaded (%s); using the torch backend", exc)

    def has_kernel(self, name: str, dispatch_key: str) -> bool:
        if not self.loaded:
            return False
        try:
            return torch._C._dispatch_has_kernel_for_dispatch_key(f"ubs_kernels::{name}", dispatch_key)
        except RuntimeError:  # no schema of that name in this build
            return False


native_ops = _NativeOps()
