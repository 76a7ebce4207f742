"""Uncertainty-based batch selection under DistributedDataParallel (torchrun).

Run: ``torchrun --standalone --nproc_per_node=2 python/train_ddp.py`` (gloo on the CPU, NCCL
when CUDA is there; without torchrun it runs as one process).

Every rank builds the same synthetic multi-label set (sklearn's
``make_multilabel_classification``), wraps the MLP in DDP, and creates the same
:class:`ubs_kernels.UncertaintyBatchSelector` after ``init_process_group``: it finds the
default group and shards the samples (sample i belongs to rank ``i % world_size``). Each rank
draws its batches from its own samples, observes its own predictions, and at each epoch
boundary the ranks refresh P together: exact label mutual information, global min/max of
the weights, P normalised over all ranks (SPEC.md Eq. 6-11). Every rank yields the same
number of batches, so DDP's gradient all-reduce stays in step.

Rank 0 prints one line per epoch: train loss (mean over all ranks), test micro-F1 and s_t
(``-`` in warm-up epochs, which draw uniform batches). ``--mi-error`` also measures, at each selection epoch,
the approximate route against the exact one (max relative error of ``c = C 1`` and the total
variation distance between the two P). ``--checkpoint DIR`` saves each rank's selector state
(``selector-rank{r}.pt``) and the model every epoch, and resumes from them (saying from which
epoch). ``--warmup`` follows the rule of ``common.py``: 5 by default, lowered to ``epochs - 1``
for shorter runs; an explicit warm-up that leaves no selection epoch is an error.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
from sklearn.datasets import make_multilabel_classification
from sklearn.metrics import f1_score
from sklearn.model_selection import train_test_split
from torch.nn.parallel import DistributedDataParallel

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

import ubs_kernels as ubs  # noqa: E402
from ubs_kernels import distributed  # noqa: E402


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="train_ddp.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--samples", type=int, default=4000)
    p.add_argument("--features", type=int, default=60)
    p.add_argument("--labels", type=int, default=20)
    p.add_argument("--epochs", type=int, default=20)
    common.add_warmup_argument(p)
    p.add_argument("--batch-size", type=int, default=64, help="per rank")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--mi-error", action="store_true", help="measure the approximate MI route against the exact one")
    p.add_argument("--checkpoint", type=Path, default=None, help="directory for per-rank checkpoints (and resume)")
    p.add_argument("--stop-after-epoch", type=int, default=None, help="stop early, as if interrupted (to try resume)")
    args = p.parse_args()
    common.resolve_warmup(p, args, announce=os.environ.get("RANK", "0") == "0")
    return args


def setup() -> tuple[int, int, torch.device]:
    """``(rank, world_size, device)``; initialises the process group under torchrun."""
    if "RANK" not in os.environ:
        return 0, 1, torch.device("cuda" if torch.cuda.is_available() else "cpu")
    # NCCL needs a GPU of its own per rank; with fewer GPUs than local ranks, gloo on the CPU.
    local_ranks = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    if torch.cuda.is_available() and torch.cuda.device_count() >= local_ranks:
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", device_id=device)
    else:
        device = torch.device("cpu")
        dist.init_process_group("gloo")
    return dist.get_rank(), dist.get_world_size(), device


def mean_over_ranks(values: list[float], device: torch.device) -> list[float]:
    t = torch.tensor(values, dtype=torch.float64, device=device)
    if dist.is_initialized():
        dist.all_reduce(t)
        t /= dist.get_world_size()
    return t.tolist()


def main() -> None:
    args = parse_args()
    rank, world, device = setup()
    torch.manual_seed(args.seed)  # the same initial model on every rank (DDP also broadcasts it)
    x, y = make_multilabel_classification(
        n_samples=args.samples, n_features=args.features, n_classes=args.labels, n_labels=3, random_state=args.seed
    )
    x = (x - x.mean(0)) / (x.std(0) + 1e-6)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.2, random_state=args.seed)
    x_tr, y_tr = torch.tensor(x_tr, dtype=torch.float32), torch.tensor(y_tr, dtype=torch.float32)
    x_te = torch.tensor(x_te, dtype=torch.float32, device=device)

    model = torch.nn.Sequential(
        torch.nn.Linear(args.features, 256), torch.nn.ReLU(), torch.nn.Linear(256, args.labels)
    ).to(device)
    ddp = DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None) if world > 1 else model
    opt = torch.optim.Adam(ddp.parameters(), lr=args.lr, weight_decay=1e-4)

    # After init_process_group: the selector finds the default group and shards the samples.
    selector = ubs.UncertaintyBatchSelector(
        len(x_tr), args.labels, batch_size=args.batch_size, epochs=args.epochs, warmup=args.warmup,
        seed=args.seed, device=device,
    )  # fmt: skip
    loader = torch.utils.data.DataLoader(
        ubs.IndexedDataset(torch.utils.data.TensorDataset(x_tr, y_tr)), batch_sampler=selector
    )

    start = 0
    if args.checkpoint is not None and (args.checkpoint / f"selector-rank{rank}.pt").exists():
        selector.load_state_dict(torch.load(args.checkpoint / f"selector-rank{rank}.pt", weights_only=True))
        saved = torch.load(args.checkpoint / "model.pt", weights_only=True, map_location=device)
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["opt"])
        start = saved["epoch"] + 1
        if rank == 0:
            print(f"resumed from {args.checkpoint} after epoch {saved['epoch']}: continuing at epoch {start}")

    if rank == 0:
        backend = dist.get_backend() if dist.is_initialized() else "one process"
        print(
            f"world_size {world} ({backend}) on {device}: {len(x_tr)} samples, {selector.num_local} on rank 0, "
            f"{len(selector)} batches of {args.batch_size} per rank per epoch, MI route {selector.mi_route}"
        )
    for epoch in range(start, args.epochs):
        t0 = time.perf_counter()
        selector.set_epoch(epoch)
        err = distributed.approximation_error(selector, epoch) if args.mi_error and epoch >= args.warmup else None
        ddp.train()
        total, steps = 0.0, 0
        for indices, xb, yb in loader:
            logits = ddp(xb.to(device))
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, yb.to(device))
            opt.zero_grad()
            loss.backward()
            opt.step()
            selector.observe(indices, logits=logits.detach())
            total, steps = total + loss.item(), steps + 1
        (loss_mean,) = mean_over_ranks([total / steps], device)
        with torch.no_grad():
            f1 = f1_score(y_te, (model(x_te) > 0).cpu().numpy(), average="micro", zero_division=0)
        if args.checkpoint is not None:
            args.checkpoint.mkdir(parents=True, exist_ok=True)
            torch.save(selector.state_dict(), args.checkpoint / f"selector-rank{rank}.pt")
            if rank == 0:
                torch.save(
                    {"model": model.state_dict(), "opt": opt.state_dict(), "epoch": epoch}, args.checkpoint / "model.pt"
                )
        if rank == 0:
            phase = "selection" if selector.selecting else "uniform"
            line = f"epoch {epoch:3d} {phase:9s} loss {loss_mean:.4f} test micro-F1 {f1:.4f}"
            line += f" s_t {common.pressure_text(selector, epoch):>6s}"
            if err is not None:
                line += f" | approximate MI: max rel err of c {err['c']:.4f}, TV(P) {err['tv']:.5f}"
            print(f"{line} ({time.perf_counter() - t0:.2f} s)", flush=True)
        if epoch == args.stop_after_epoch:
            break
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
