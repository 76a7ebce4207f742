"""Triton kernels of every op, registered as ``ubs_kernels::<op>_triton`` (torch.library.triton_op).

They run on CUDA devices, and on the CPU under ``TRITON_INTERPRET=1`` (the CI tests). Without
Triton the package still imports and these ops are simply not available.
"""

from __future__ import annotations

import logging

import torch

log = logging.getLogger("ubs_kernels")

OPS: tuple[str, ...] = ()
ERROR: str | None = "Triton kernels not written yet"


def available(op: str, device: torch.device) -> bool:
    """Whether ``ubs_kernels::<op>_triton`` is registered and can run on ``device``."""
    return ERROR is None and op in OPS
