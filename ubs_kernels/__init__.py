"""ubs_kernels: uncertainty-based mini-batch selection for multi-label training.

Fused kernels for the method of Zhou et al., "Batch Selection for Multi-Label Classification
Guided by Uncertainty and Dynamic Label Correlations" (AAAI 2025), as specified in docs/spec.md.
The functional API lives in :mod:`ubs_kernels.ops`; the plain-PyTorch reference of every
equation in :mod:`ubs_kernels.reference`.
"""

from __future__ import annotations

import torch

from ._native import native_ops
from .batch_selector import BatchSelector, IndexedDataset
from .comparators import (
    ActiveBiasSelector,
    BalanceSelector,
    HardImbalanceSelector,
    RandomSelector,
    RecencyBiasSelector,
)
from .ops import (
    OPS,
    available_backends,
    label_mi,
    observe,
    observe_staged,
    plan_weighted,
    record,
    resolve_backend,
    selection_log_probs,
    selection_pressure,
    stage,
    uncertainty,
)
from .selector import UncertaintyBatchSelector

__version__ = "0.1.0"

__all__ = [
    "OPS",
    "ActiveBiasSelector",
    "BalanceSelector",
    "BatchSelector",
    "HardImbalanceSelector",
    "IndexedDataset",
    "RandomSelector",
    "RecencyBiasSelector",
    "UncertaintyBatchSelector",
    "available_backends",
    "build_info",
    "label_mi",
    "observe",
    "observe_staged",
    "plan_weighted",
    "record",
    "resolve_backend",
    "selection_log_probs",
    "selection_pressure",
    "stage",
    "uncertainty",
]


def build_info() -> dict:
    """What this build provides and which backend ``"auto"`` uses for each op.

    Keys: ``version``, ``torch``, ``native_cpu`` and ``native_cuda`` (ops with a native
    kernel for that device), ``native_error`` (why ``_C`` did not load, if it did not),
    ``cuda`` (torch's CUDA version or None), ``triton`` (version or None), and
    ``backends``: ``{device: {op: backend}}`` for ``cpu`` (and ``cuda`` when a GPU is visible).
    """
    try:
        import triton  # noqa: PLC0415

        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    return {
        "version": __version__,
        "torch": torch.__version__,
        "native_cpu": [op for op in OPS if native_ops.has_kernel(op, "CPU")],
        "native_cuda": [op for op in OPS if native_ops.has_kernel(op, "CUDA")],
        "native_error": native_ops.error,
        "cuda": torch.version.cuda,
        "triton": triton_version,
        "backends": {d: {op: resolve_backend(op, d, "auto") for op in OPS} for d in devices},
    }
