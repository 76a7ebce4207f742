"""Triton kernels of every op, registered as ``ubs_kernels::<op>_triton`` (torch.library.triton_op).

They run on CUDA devices, and on the CPU under ``TRITON_INTERPRET=1`` (the CI tests). Each op
is launched through ``wrap_triton``, so ``torch.compile(fullgraph=True)`` traces through it and
the fake kernels come from the launchers themselves. Without Triton (or with a torch that has
no ``triton_op``) the package still imports: ``ERROR`` says why, once, in a log line, and
:func:`available` answers False.

Triton reads ``TRITON_INTERPRET`` when a kernel is defined, so it must be set before this
package is first imported (``ubs_kernels.ops`` imports it lazily, on first use).
"""

from __future__ import annotations

import logging
import os

import torch

log = logging.getLogger("ubs_kernels")

ERROR: str | None = None

try:
    from . import label_mi, observe, selection_log_probs, uncertainty  # noqa: F401  (registers the ops)
except Exception as exc:  # no triton, a torch without torch.library.triton_op, a broken install
    ERROR = f"Triton kernels unavailable: {type(exc).__name__}: {exc}"
    log.info("ubs_kernels: %s; the triton backend is off", ERROR)


def available(op: str, device: torch.device) -> bool:
    """Whether ``ubs_kernels::<op>_triton`` is registered and can run on ``device``.

    CUDA devices always; the CPU only under the interpreter (``TRITON_INTERPRET=1``).
    """
    if ERROR is not None or not hasattr(torch.ops.ubs_kernels, f"{op}_triton"):
        return False
    device = torch.device(device)
    if device.type == "cuda":
        return True
    return device.type == "cpu" and os.environ.get("TRITON_INTERPRET") == "1"
