"""What the drivers in ``python/`` (``demo.py``, ``reproduce.py``, ``train_ddp.py``) share.

* **One warm-up rule.** ``--warmup`` (γ, uniform epochs before selection starts) defaults to
  :data:`DEFAULT_WARMUP`, the paper's 5. A run must keep at least one selection epoch, so with
  ``--epochs E <= 5`` the default becomes ``E - 1`` (and the driver says so); an explicit
  ``--warmup`` that leaves no selection epoch is an error, never silently changed.
* **One device rule.** ``auto`` is CUDA when torch sees a GPU, else the CPU; asking for CUDA
  without one is an error.
* **Where output goes by default.** Under ``<repo>/out/`` (git-ignored), never into the
  committed ``python/results/``.
* **How an epoch is described.** ``s_t`` is printed as ``-`` in uniform (warm-up) epochs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
OUT_ROOT = REPO_ROOT / "out"  # ignored by git ("/out/" in .gitignore)
DEFAULT_WARMUP = 5  # γ of the paper: uniform epochs that fill the prediction history


def add_warmup_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--warmup",
        type=int,
        default=None,
        help=f"warm-up epochs of uniform batches (default {DEFAULT_WARMUP}, or epochs - 1 for shorter runs)",
    )


def resolve_warmup(parser: argparse.ArgumentParser, args: argparse.Namespace, announce: bool = True) -> None:
    """Apply the warm-up rule to ``args.warmup`` in place (``args.epochs`` must be set).

    Errors go through ``parser.error`` (exit status 2); lowering the default is reported on stderr
    (when ``announce``: one process of a distributed run says it for all).
    """
    if args.epochs < 1:
        parser.error("--epochs must be >= 1")
    if args.warmup is None:
        args.warmup = min(DEFAULT_WARMUP, args.epochs - 1)
        if args.warmup < DEFAULT_WARMUP and announce:
            print(
                f"{parser.prog}: warm-up {args.warmup} epoch(s) instead of {DEFAULT_WARMUP}, "
                f"so that --epochs {args.epochs} keeps one selection epoch",
                file=sys.stderr,
            )
        return
    if args.warmup < 0:
        parser.error("--warmup must be >= 0")
    if args.warmup >= args.epochs:
        parser.error(
            f"--warmup {args.warmup} leaves no selection epoch in --epochs {args.epochs}: "
            f"give --warmup < --epochs (or leave it out: the default fits the run)"
        )


def resolve_device(name: str, prog: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; an explicit CUDA device without CUDA exits."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"{prog}: --device {name} but torch sees no CUDA device")
    return device


def pressure_text(selector, epoch: int) -> str:
    """``s_t`` of the epoch for selectors with a pressure schedule in a selection epoch, else ``-``."""
    if not getattr(selector, "selecting", False) or not hasattr(selector, "pressure"):
        return "-"
    return f"{selector.pressure(epoch):.2f}"
