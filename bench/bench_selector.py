"""Benchmark of the selector: epoch planning at scale, and the whole per-epoch overhead.

Two parts, one CSV (``selector.csv``):

* ``plan``: planning one selection epoch (``ceil(n/b)`` batches of ``b`` distinct samples by
  successive sampling from P) with :func:`ubs_kernels.ops.plan_weighted`, against what a
  user would otherwise write: ``torch.multinomial(P, b)`` once per batch. That is O(n) per
  batch, so it is timed on a few batches and extrapolated to the epoch (the row says so), and
  it refuses more than 2^24 categories (then only our row exists).
* ``epoch``: the selector's whole cost in a real training loop of a Corel5k-size run (n=5,000,
  q=374, b=128, python/demo.py's MLP with 499 input features and its optimiser, Adam at 1e-3,
  trained as it is measured, so U and its bins are those of a training run): per epoch, the
  time spent drawing batches (the epoch-boundary refresh of MI row sums, P and the plan
  included) and observing each step's logits (``observe(indices, logits=...)``, which applies
  the sigmoid itself), against the rest of the same epoch (batch loading, forward, backward,
  optimiser step). ``overhead_share`` is the ratio of the medians over epochs;
  ``overhead_share_vs_uniform_epoch`` divides by a separately timed epoch on uniform batches
  instead. Drawing batches is split into its parts, per epoch (medians): ``ubs_selector_
  apply_staged`` (the staged steps applied, U and bins of the touched samples),
  ``ubs_selector_label_mi_rowsums``, ``ubs_selector_selection_log_probs`` and
  ``ubs_selector_plan``; the MI row sums alone on the final state are the
  ``ubs_label_mi_rowsums`` row. The ``data`` column says what it trains on:

  - ``demo``: python/demo.py's data (``make_multilabel_classification``, min-max scaled) at
    Corel5k's size. The target (under 10 %) is stated for this run.
  - ``Corel5k``: the real Corel5k (all 374 labels), when the data directory is there
    (``UBS_DATA_DIR``, default ../shared/data).
  - ``random_labels``: uniform random features and labels (5 % positive), Adam at 1e-4: a
    model that cannot learn keeps U spread over many bins, the costliest case for the MI.

* ``--device cuda``: the epoch part on a GPU at the size large label spaces bring (n = 10^6,
  q = 1000, the ``gpu_large`` data: random features and labels), with an MLP of
  ``--gpu-hidden`` units wide enough that a step takes milliseconds (the target, < 2 % of the
  epoch, is stated for a step of about 2 ms on an H200; the ``training_in_selected_epoch`` row
  says what the step took). Each step is synchronised before and after the selector's share is
  timed, so the selector is not charged for the model's queued kernels.

    python bench/bench_selector.py --out bench/results [--quick] [--device cuda]
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

import harness
import torch

import ubs_kernels as ubs
import ubs_kernels.selector as selector_module
from ubs_kernels import sampling

PLAN_SIZES = [1_000_000, 10_000_000]
QUICK_PLAN_SIZES = [20_000]
EPOCH_SIZE = (5000, 374, 499)  # n, q, features (Corel5k)
QUICK_EPOCH_SIZE = (600, 20, 40)
GPU_EPOCH_SIZE = (1_000_000, 1000, 256)
SCENARIOS = ["demo", "Corel5k", "random_labels", "gpu_large"]


def quantised_log_p(n: int, pressure: float = 100.0, seed: int = 0) -> torch.Tensor:
    """A log P of the shape Eq. 10 gives: integer levels Q in [0, n], ratio ``pressure``."""
    g = torch.Generator().manual_seed(seed)
    q_levels = torch.floor(torch.rand(n, generator=g, dtype=torch.float64) * (n + 1))
    logits = -math.log(pressure) * q_levels / n
    return (logits - torch.logsumexp(logits, 0)).float()


def bench_plan(n: int, b: int, args, writer: harness.ResultWriter) -> None:
    log_p = quantised_log_p(n)
    batches = math.ceil(n / b)
    key = {"device": "cpu", "n": n, "batch": b, "dtype": "plan"}

    def ours():
        return ubs.plan_weighted(log_p, b, batches, sampling.epoch_generator(0, 0))

    rows = ours()
    assert rows.shape == (batches, b) and bool((rows.sort(1).values.diff(1) > 0).all())
    t = harness.time_call(ours, "cpu", args.min_run_time, args.quick)
    writer.timing({"provider": "ubs_plan_weighted", **key}, t)
    writer.metric({"provider": "ubs_plan_weighted", **key}, t, "samples_per_s", n / t.median)
    print(f"[plan n={n}] ubs_plan_weighted: {harness.fmt_s(t.median)}", flush=True)
    if n > 1 << 24:
        print(f"[plan n={n}] torch.multinomial: refuses more than 2^24 categories", flush=True)
        return
    p = log_p.exp()
    g = torch.Generator().manual_seed(0)
    probe = max(1, min(batches, 20))

    def multinomial():
        for _ in range(probe):
            torch.multinomial(p, b, replacement=False, generator=g)

    tm = harness.time_call(multinomial, "cpu", args.min_run_time, args.quick)
    tm = tm.scaled(batches / probe, f"extrapolated from {probe} of {batches} batches")
    writer.timing({"provider": "torch_multinomial_per_batch", **key}, tm)
    writer.metric({"provider": "ubs_plan_weighted", **key}, t, "speedup_vs_torch_multinomial", tm.median / t.median)
    print(f"[plan n={n}] torch.multinomial per batch: {harness.fmt_s(tm.median)} ({tm.note})", flush=True)


def mlp(features: int, q: int, hidden: int = 128, layers: int = 1) -> torch.nn.Module:
    """python/demo.py's MLP (one hidden layer of 128); wider and deeper for the GPU run."""
    widths = [features] + [hidden] * layers
    body = []
    for a, b in zip(widths[:-1], widths[1:], strict=True):
        body += [torch.nn.Linear(a, b), torch.nn.ReLU(), torch.nn.Dropout(0.2)]
    return torch.nn.Sequential(*body, torch.nn.Linear(widths[-1], q))


def epoch_data(scenario: str, n: int, q: int, d: int, seed: int):
    """``(x, y, lr)`` of a scenario (see the module docstring), or None if its data is missing."""
    g = torch.Generator().manual_seed(seed)
    if scenario == "gpu_large":
        return torch.rand(n, d, generator=g), torch.rand(n, q, generator=g) < 0.05, 1e-3
    if scenario == "random_labels":
        return torch.rand(n, d, generator=g), (torch.rand(n, q, generator=g) < 0.05).float(), 1e-4
    if scenario == "demo":
        from sklearn.datasets import make_multilabel_classification  # noqa: PLC0415
        from sklearn.preprocessing import MinMaxScaler  # noqa: PLC0415

        x, y = make_multilabel_classification(n_samples=n, n_features=d, n_classes=q, random_state=seed)
        x = MinMaxScaler().fit_transform(x)
        return torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y, dtype=torch.float32), 1e-3
    root = Path(__file__).resolve().parents[1]
    folder = Path(os.environ.get("UBS_DATA_DIR", root.parent / "shared" / "data"))
    if not folder.is_dir():
        return None
    sys.path.insert(0, str(root / "python"))
    import data  # noqa: PLC0415  (python/data.py: ARFF reading and the presets)

    ds = data.load_dataset(scenario, folder, min_positives=-1)
    x = ds.x.toarray() if hasattr(ds.x, "toarray") else ds.x
    return torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(ds.y, dtype=torch.float32), 1e-3


def bench_epoch(scenario: str, n: int, q: int, d: int, b: int, args, writer: harness.ResultWriter) -> None:
    """The selector inside a real training loop: per epoch, the time spent in the selector
    (drawing each batch, which includes the epoch-boundary refresh and plan, and observing the
    logits) against the rest of the epoch (loading the
    batch, forward, backward, optimiser step). Both come from the same epochs, so they share
    the machine's state; the median over epochs is reported. A separately timed epoch of plain
    uniform batches (the yardstick without any selector) is reported beside them."""
    got = epoch_data(scenario, n, q, d, args.seed)
    if got is None:
        print(f"[epoch {scenario}] skipped: no data directory (UBS_DATA_DIR)", flush=True)
        return
    device = torch.device(args.device)
    x, y, lr = got
    x, y = x.to(device), y.to(device)  # labels stay as they come (bool for gpu_large: 1 byte each)
    n, d = x.shape
    q = y.shape[1]
    g = torch.Generator().manual_seed(args.seed)
    torch.manual_seed(args.seed)
    gpu = device.type == "cuda"
    model = (mlp(d, q, args.gpu_hidden, 3) if gpu else mlp(d, q)).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=1e-4)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    sel = ubs.UncertaintyBatchSelector(n, q, batch_size=b, epochs=10_000, warmup=1, seed=args.seed, device=device)

    def sync() -> None:
        if gpu:
            torch.cuda.synchronize(device)

    def train_step(idx: torch.Tensor) -> torch.Tensor:
        idx = idx.to(device, non_blocking=True)
        logits = model(x[idx])
        loss = loss_fn(logits, y[idx].float())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sync()
        return logits

    def selected_epoch() -> tuple[float, float, float]:
        """Seconds (drawing batches, observe, the rest of the epoch)."""
        draw = observe = rest = 0.0
        batches = iter(sel)
        while True:
            t0 = time.perf_counter()
            idx = next(batches, None)  # the first call refreshes P and plans the epoch
            t1 = time.perf_counter()
            draw += t1 - t0
            if idx is None:
                return draw, observe, rest
            logits = train_step(idx)
            t2 = time.perf_counter()
            sel.observe(idx, logits=logits.detach())  # the sigmoid is applied as the step is staged
            sync()
            observe += time.perf_counter() - t2
            rest += t2 - t1

    def uniform_epoch() -> None:  # the demo MLP on uniform batches: no selector at all
        for idx in torch.randperm(n, generator=g).split(b):
            train_step(idx)

    # Where the epoch boundary's time goes: these calls are timed as they happen (a wrapper of
    # ~1 us per call), summed per epoch.
    spent: dict[str, float] = {}

    def timed(fn, name):
        def call(*a, **k):
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                spent[name] = spent.get(name, 0.0) + time.perf_counter() - t0

        return call

    wrapped = [
        (selector_module.ops, "observe_staged", "apply_staged"),
        (selector_module.ops, "uncertainty", "apply_staged"),  # the record path (CUDA, Triton)
        (selector_module.ops, "label_mi", "label_mi_rowsums"),
        (selector_module.ops, "selection_log_probs", "selection_log_probs"),
        (selector_module.ops, "plan_weighted", "plan"),
    ]
    originals = [(mod, attr, getattr(mod, attr)) for mod, attr, _ in wrapped]
    for mod, attr, name in wrapped:
        setattr(mod, attr, timed(getattr(mod, attr), name))
    try:
        for _ in range(3):  # warm-up epoch (uniform), then selection epochs: history filled, P in use
            selected_epoch()
        assert sel.selecting
        parts, breakdown = [], []  # per epoch: (draw, observe, rest), {part: seconds}
        start = time.perf_counter()
        while not parts or not (
            args.quick or (len(parts) >= 3 and time.perf_counter() - start > 10 * args.min_run_time)
        ):
            spent.clear()
            parts.append(selected_epoch())
            breakdown.append(dict(spent))
    finally:
        for mod, attr, fn in originals:
            setattr(mod, attr, fn)
    draw_s, observe_s, rest_s = zip(*parts, strict=True)
    t_sel = harness.timing_from_samples([d + o for d, o, _ in parts], "selector time within selected training epochs")
    t_draw = harness.timing_from_samples(list(draw_s), "drawing batches: MI row sums, P and the plan included")
    t_obs = harness.timing_from_samples(list(observe_s), "observe(logits=...), every step of the epoch")
    t_rest = harness.timing_from_samples(list(rest_s), "rest of the same epochs: load, forward, backward, step")
    t_mlp = harness.time_call(uniform_epoch, "cpu", args.min_run_time, args.quick)  # synchronised steps
    key = {"device": device.type, "n": n, "q": q, "tau": 10, "T": 5, "batch": b, "dtype": "float16", "data": scenario}
    writer.timing({"provider": "ubs_selector_epoch", **key}, t_sel)
    writer.timing({"provider": "ubs_selector_draw", **key}, t_draw)
    writer.timing({"provider": "ubs_selector_observe", **key}, t_obs)
    writer.timing({"provider": "training_in_selected_epoch", **key}, t_rest)
    writer.timing({"provider": "demo_mlp_epoch", **key}, t_mlp)
    for name in ("apply_staged", "label_mi_rowsums", "selection_log_probs", "plan"):
        t_part = harness.timing_from_samples(
            [b.get(name, 0.0) for b in breakdown], f"of drawing batches: {name.replace('_', ' ')}, per epoch"
        )
        writer.timing({"provider": f"ubs_selector_{name}", **key}, t_part)
    share = t_sel.median / t_rest.median
    writer.metric({"provider": "ubs_selector_epoch", **key}, t_sel, "overhead_share", share)
    writer.metric(
        {"provider": "ubs_selector_epoch", **key}, t_sel, "overhead_share_vs_uniform_epoch", t_sel.median / t_mlp.median
    )
    print(
        f"[epoch {scenario} {n}x{q}, {len(parts)} epochs] selector {harness.fmt_s(t_sel.median)} vs the rest of "
        f"the epoch {harness.fmt_s(t_rest.median)}: {100 * share:.1f}% (a uniform epoch: "
        f"{harness.fmt_s(t_mlp.median)}, {100 * t_sel.median / t_mlp.median:.1f}%); drawing batches "
        f"{harness.fmt_s(t_draw.median)}, observe {harness.fmt_s(t_obs.median)}",
        flush=True,
    )
    mi = harness.time_call(sel.label_correlation_rowsums, device.type, args.min_run_time, args.quick)
    writer.timing({"provider": "ubs_label_mi_rowsums", **key}, mi)
    print(
        f"[epoch {scenario} {n}x{q}] of which the MI row sums, once per epoch: {harness.fmt_s(mi.median)}", flush=True
    )


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="bench/results", help="output folder (selector.csv is overwritten)")
    p.add_argument("--quick", action="store_true", help="tiny sizes, one timed run")
    p.add_argument("--min-run-time", type=float, default=1.0)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scenario", choices=SCENARIOS, help="one epoch scenario (default: all of the device's)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where the model and selector run")
    p.add_argument("--gpu-hidden", type=int, default=4096, help="width of the GPU run's 3-layer MLP")
    args = p.parse_args(argv)
    harness.warn_if_busy()
    if args.quick:
        args.min_run_time = min(args.min_run_time, 0.05)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("bench_selector.py: --device cuda but torch sees no CUDA device")
    writer = harness.ResultWriter("selector", args.device)
    start = time.perf_counter()
    if args.device == "cpu":  # the plan is made on the CPU whatever the device: timed once, here
        for n in QUICK_PLAN_SIZES if args.quick else PLAN_SIZES:
            bench_plan(n, args.batch_size, args, writer)
    default = ["gpu_large"] if args.device == "cuda" else [s for s in SCENARIOS if s != "gpu_large"]
    for scenario in default if args.scenario is None else [args.scenario]:
        size = GPU_EPOCH_SIZE if scenario == "gpu_large" else EPOCH_SIZE
        n, q, d = QUICK_EPOCH_SIZE if args.quick else size
        if not (args.quick and scenario == "Corel5k"):  # real data has its own size: not in --quick
            bench_epoch(scenario, n, q, d, args.batch_size, args, writer)
    path = writer.write(Path(args.out) / "selector.csv")
    writer.print_table()
    print(f"wrote {path} ({len(writer.rows)} rows) in {time.perf_counter() - start:.0f} s")
    harness.warn_if_busy()


if __name__ == "__main__":
    main()
