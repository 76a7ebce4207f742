"""The selector under torch.distributed: gloo process groups of 1, 2 and 3 ranks on the CPU.

Each world size is spawned once (module-scoped); the ranks run every scenario in lockstep and
save what they saw, and the tests below check it against a single process fed the same
observations. Predictions are a deterministic function of (sample id, epoch), so a sample's
state depends only on how often it was observed, wherever that happened.
"""

from __future__ import annotations

import datetime
import io
import math
import os
import re
import subprocess
import sys
import time
import warnings

import pytest
import torch

import ubs_kernels as ubs
from ubs_kernels import distributed, sampling

N, Q, B, EPOCHS, WARMUP, SEED = 193, 6, 16, 6, 2, 5  # 97 + 96 and 65 + 64 + 64: the short ranks pad
ROUTES = ("gather", "counts", "approximate")
SPAWN_TIMEOUT_S = 90
# Gloo finds its interface through the hostname, which some containers cannot resolve: use loopback.
LOOPBACK = {"GLOO_SOCKET_IFNAME": "lo"} if sys.platform == "linux" else {}


def fake_probs(indices: torch.Tensor, epoch: int, q: int = Q) -> torch.Tensor:
    """Deterministic predictions that depend on the sample and the epoch, in [0, 1].

    No period in the sample id: with ``i % 3`` (as in test_selector) each of 3 strided shards
    would hold one kind of sample, which only the approximate route cares about (documented).
    """
    i = indices.double().unsqueeze(1)
    j = torch.arange(q, dtype=torch.float64)
    return (0.5 + 0.5 * torch.sin(0.37 * i * (j + 1) + 0.9 * epoch * (1 + torch.frac(0.618034 * i)))).float()


def make(**kw) -> ubs.UncertaintyBatchSelector:
    kw = {"batch_size": B, "epochs": EPOCHS, "warmup": WARMUP, "seed": SEED, **kw}
    return ubs.UncertaintyBatchSelector(N, Q, **kw)


def train(sel, log: list, start: int = 0, stop_after: int | None = None, on_epoch=None, on_plan=None) -> None:
    """The training loop, DistributedSampler-style (``set_epoch`` each epoch)."""
    for epoch in range(start, EPOCHS):
        sel.set_epoch(epoch)
        if on_epoch is not None:
            on_epoch(epoch)
        for k, batch in enumerate(sel):
            if k == 0 and on_plan is not None:
                on_plan(epoch)
            sel.observe(batch, fake_probs(batch, epoch))
            log.append((epoch, batch.clone()))
            if stop_after is not None and len(log) == stop_after:
                return


# --------------------------------------------------------------------------- the ranks
def _scenarios(rank: int, world: int) -> dict:
    out = {"rank": rank, "world": world, "runs": {}}
    for route in ROUTES:
        sel = make(distributed_mi=route)
        run = {"log": [], "c": {}, "c_exact": {}, "log_p": {}, "len": len(sel), "route": sel.mi_route}

        def on_epoch(epoch, sel=sel, run=run):
            if epoch >= WARMUP:  # collective: every rank asks at the same point
                run["c"][epoch] = sel.label_correlation_rowsums()
                run["c_exact"][epoch] = sel.label_correlation_rowsums(route="gather")

        def on_plan(epoch, sel=sel, run=run):
            if epoch >= WARMUP:
                run["log_p"][epoch] = sel._log_p.clone()

        train(sel, run["log"], on_epoch=on_epoch, on_plan=on_plan)
        run["owned"] = sel.owned_indices
        out["runs"][route] = run

    # Resume per rank mid selection epoch 3 from a saved state dict.
    stop = 3 * out["runs"]["gather"]["len"] + 2
    first, rest = [], []
    sel = make(distributed_mi="gather")
    train(sel, first, stop_after=stop)
    buffer = io.BytesIO()
    torch.save(sel.state_dict(), buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    resumed = make(distributed_mi="gather")
    if world > 1:
        try:
            resumed.load_state_dict({**saved, "rank": (rank + 1) % world})
        except ValueError as e:
            out["wrong_rank_error"] = str(e)
    resumed.load_state_dict(saved)
    train(resumed, rest, start=saved["epoch"])
    out["resumed"] = first + rest

    if world > 1:
        before = {k: v.clone() for k, v in resumed.state_dict()["state"].items()}
        try:
            foreign = torch.tensor([rank, (rank + 1) % world])
            resumed.observe(foreign, fake_probs(foreign, 0))
        except ValueError as e:
            out["foreign_error"] = str(e)
        out["unchanged"] = all(torch.equal(resumed.state_dict()["state"][k], v) for k, v in before.items())
        try:
            make(batch_size=B + rank)
        except ValueError as e:
            out["disagree_error"] = str(e)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            active = ubs.ActiveBiasSelector(N, Q, batch_size=B)
        out["active_bias"] = (active.world_size, [str(w.message) for w in caught])

    rnd = ubs.RandomSelector(N, batch_size=B, seed=SEED)
    out["random"] = [(epoch, [b.clone() for b in rnd]) for epoch in range(2)]
    out["random_len"] = len(rnd)
    return out


def _worker(rank: int, world: int, store: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    for key, value in LOOPBACK.items():
        os.environ.setdefault(key, value)
    torch.distributed.init_process_group(
        "gloo", init_method=f"file://{store}", rank=rank, world_size=world, timeout=datetime.timedelta(seconds=60)
    )
    try:
        torch.save(_scenarios(rank, world), os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        torch.distributed.destroy_process_group()


def _spawn(world: int, tmp: str) -> list[dict]:
    """Run the scenarios on ``world`` gloo ranks; a hang fails after SPAWN_TIMEOUT_S instead of blocking."""
    ctx = torch.multiprocessing.start_processes(
        _worker, args=(world, os.path.join(tmp, "store"), tmp), nprocs=world, join=False, start_method="spawn"
    )
    deadline = time.monotonic() + SPAWN_TIMEOUT_S
    while not ctx.join(timeout=1):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.kill()
            raise TimeoutError(f"{world} gloo ranks did not finish within {SPAWN_TIMEOUT_S} s")
    return [torch.load(os.path.join(tmp, f"rank{r}.pt"), weights_only=False) for r in range(world)]


_RESULTS: dict[int, list[dict] | str] = {}


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    """The ranks' results for a world size; spawned once, and a failure is remembered, not retried."""

    def get(world: int) -> list[dict]:
        if world not in _RESULTS:
            try:
                _RESULTS[world] = _spawn(world, str(tmp_path_factory.mktemp(f"world{world}")))
            except Exception as e:  # reported by every test that needs this world size
                _RESULTS[world] = f"{type(e).__name__}: {e}"
        if isinstance(_RESULTS[world], str):
            pytest.fail(f"the {world}-rank run failed: {_RESULTS[world]}")
        return _RESULTS[world]

    return get


def replay(logs: list[list], until_epoch: int) -> ubs.UncertaintyBatchSelector:
    """A single process fed every rank's observations of the epochs before ``until_epoch``."""
    single = make(process_group=False)
    for log in logs:
        for epoch, batch in log:
            if epoch < until_epoch:
                single.observe(batch, fake_probs(batch, epoch))
    return single


# --------------------------------------------------------------------------- tests
def test_world_size_1_gives_the_single_process_batches(ranks):
    (got,) = ranks(1)
    expected = []
    train(make(), expected)
    for route in ROUTES:
        log = got["runs"][route]["log"]
        assert len(log) == len(expected) == EPOCHS * math.ceil(N / B)
        assert all(e1 == e2 and torch.equal(x, y) for (e1, x), (e2, y) in zip(log, expected, strict=True))
    assert all(torch.equal(x, y) for (_, x), (_, y) in zip(got["resumed"], expected, strict=True))


@pytest.mark.parametrize("world", [2, 3])
def test_every_sample_is_owned_by_exactly_one_rank(ranks, world):
    results = ranks(world)
    owned = [r["runs"]["gather"]["owned"] for r in results]
    assert sorted(torch.cat(owned).tolist()) == list(range(N))
    for r, res in enumerate(results):
        assert torch.equal(owned[r], torch.arange(r, N, world))
        for route in ROUTES:
            for epoch, batch in res["runs"][route]["log"]:
                assert bool((batch % world == r).all()), (route, epoch)
                assert batch.unique().numel() == batch.numel()
    for epoch in range(WARMUP):  # warm-up: together the ranks cover every sample
        drawn = torch.cat([b for res in results for e, b in res["runs"]["gather"]["log"] if e == epoch])
        assert sorted(drawn.unique().tolist()) == list(range(N))
        assert drawn.numel() == world * math.ceil(N / world)  # N makes the short ranks repeat one sample


@pytest.mark.parametrize("world", [2, 3])
def test_every_rank_yields_the_same_number_of_batches_each_epoch(ranks, world):
    results = ranks(world)
    expected = math.ceil(math.ceil(N / world) / B)
    for res in results:
        for route in ROUTES:
            run = res["runs"][route]
            assert run["len"] == expected
            counts = [sum(1 for e, _ in run["log"] if e == epoch) for epoch in range(EPOCHS)]
            assert counts == [expected] * EPOCHS, route
        assert res["random_len"] == expected
        assert [len(batches) for _, batches in res["random"]] == [expected] * 2


@pytest.mark.parametrize("world", [2, 3])
@pytest.mark.parametrize("route", ["gather", "counts"])
def test_exact_c_equals_the_single_process_c_on_the_same_observations(ranks, world, route):
    results = ranks(world)
    assert all(res["runs"][route]["route"] == route for res in results)
    logs = [res["runs"][route]["log"] for res in results]
    for epoch in range(WARMUP, EPOCHS):
        single = replay(logs, epoch)
        expected = single.label_correlation_rowsums()
        assert float((expected - 1).abs().max()) > 0.05  # the labels are correlated: c is not trivial
        for res in results:
            got = res["runs"][route]["c"][epoch]
            if route == "gather":  # the very bins matrix of the single process: identical bits
                assert torch.equal(got, expected)
            else:
                torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("world", [2, 3])
def test_each_rank_holds_its_slice_of_the_single_process_log_p(ranks, world):
    results = ranks(world)
    logs = [res["runs"]["gather"]["log"] for res in results]
    for epoch in range(WARMUP, EPOCHS):
        single = replay(logs, epoch)
        c = single.label_correlation_rowsums()
        pressure = single.pressure(epoch)
        expected = ubs.selection_log_probs(single.uncertainty, c, single.seen, pressure)
        total = 0.0
        for res in results:
            got = res["runs"]["gather"]["log_p"][epoch]
            want = expected[res["runs"]["gather"]["owned"]]
            diff = (got - want).abs()
            # Float32 w may land on the other side of a Q step (ln(s)/n) for a rare sample.
            assert float(diff.max()) <= math.log(pressure) / N + 1e-4
            assert float((diff <= 1e-5).float().mean()) >= 0.97
            total += float(torch.exp(got.double()).sum())
        assert total == pytest.approx(1.0, abs=1e-5)  # P is normalised over all ranks


@pytest.mark.parametrize("world", [2, 3])
def test_approximate_c_combines_the_ranks_statistics(ranks, world):
    results = ranks(world)
    logs = [res["runs"]["approximate"]["log"] for res in results]
    for epoch in range(WARMUP, EPOCHS):
        single = replay(logs, epoch)
        parts = []
        for res in results:
            owned = res["runs"]["approximate"]["owned"]
            parts.append(distributed.local_mi_statistics(single.bins[owned][single.seen[owned] > 0], 10))
        expected = distributed.combine_mi_statistics(sum(parts))
        exact = single.label_correlation_rowsums()
        for res in results:
            run = res["runs"]["approximate"]
            assert run["route"] == "approximate"
            torch.testing.assert_close(run["c"][epoch], expected, rtol=1e-6, atol=1e-6)
            assert torch.equal(run["c_exact"][epoch], exact)
            # Shards of 64-97 samples for 100 bin pairs: a loose bound; the tight one is below.
            assert not torch.equal(run["c"][epoch], exact)
            assert float(((run["c"][epoch] - exact).abs() / exact).max()) < 0.6


@pytest.mark.parametrize("world", [2, 3])
def test_resume_from_state_dict_per_rank_gives_the_uninterrupted_batches(ranks, world):
    for res in ranks(world):
        whole = res["runs"]["gather"]["log"]
        assert len(res["resumed"]) == len(whole)
        assert all(e1 == e2 and torch.equal(x, y) for (e1, x), (e2, y) in zip(res["resumed"], whole, strict=True))
        assert "rank" in res["wrong_rank_error"]


@pytest.mark.parametrize("world", [2, 3])
def test_observing_another_ranks_sample_raises_and_changes_nothing(ranks, world):
    for res in ranks(world):
        assert res["foreign_error"].startswith("indices: sample")
        assert f"owned by rank {(res['rank'] + 1) % world}" in res["foreign_error"]
        assert res["unchanged"]


def test_ranks_that_disagree_on_the_arguments_all_raise(ranks):
    for res in ranks(2):
        assert "ranks disagree" in res["disagree_error"] and "batch_size" in res["disagree_error"]


def test_selectors_that_cannot_shard_stay_single_process_with_a_warning(ranks):
    for res in ranks(2):
        world, messages = res["active_bias"]
        assert world == 1
        assert any("does not shard" in m for m in messages)


# --------------------------------------------------------------------------- no processes needed
@pytest.mark.parametrize("drop_last", [False, True])
def test_warmup_padding_gives_every_rank_the_same_batches_without_repeats(drop_last):
    for world in (2, 3, 5):
        for n in range(world, 40):
            for b in (1, 2, 3, 7, 16):
                if drop_last and n // world < b:
                    continue
                counts = set()
                for rank in range(world):
                    shard = distributed.Shard(n, rank, world)
                    batches = sampling.num_batches(shard.largest, b, drop_last)
                    order = shard.pad_uniform(torch.randperm(shard.num_local), batches, b, drop_last)
                    cut = list(order.split(b))
                    counts.add(len(cut))
                    assert all(len(c) > 0 and c.unique().numel() == len(c) for c in cut)
                    assert not drop_last or all(len(c) == b for c in cut)
                    if not drop_last:
                        assert sorted(order.unique().tolist()) == list(range(shard.num_local))
                assert counts == {batches}, (n, world, b)


def test_bias_corrected_approximation_beats_the_plain_average_on_a_longer_run():
    n, q, tau = 4800, 8, 10
    sel = ubs.UncertaintyBatchSelector(n, q, batch_size=128, epochs=8, warmup=3, seed=0)
    for epoch in range(4):
        for batch in sel:
            sel.observe(batch, fake_probs(batch, epoch, q))
    bins = sel.bins
    exact = ubs.label_mi(bins, tau, rowsum=True).double()
    for world in (2, 3, 4):
        total = sum(distributed.local_mi_statistics(bins[r::world], tau) for r in range(world))
        approx = distributed.combine_mi_statistics(total).double()
        plain = total[:q] / total[2 * q]
        err, err_plain = float(((approx - exact) / exact).abs().max()), float(((plain - exact) / exact).abs().max())
        assert err < 0.02 and err < err_plain / 2, (world, err, err_plain)


def test_route_choice_follows_the_size_rule():
    shard = distributed.Shard(20000, 0, 4)
    gather, counts = 4 * 5000 * 1001, 1000 * 1000 * 100 * 8
    assert distributed.mi_exchange_bytes(shard, 1000, 10)["gather"] == gather
    assert distributed.mi_exchange_bytes(shard, 1000, 10)["counts"] == counts
    assert distributed.choose_mi_route("auto", shard, 1000, 10, distributed.DEFAULT_MI_LIMIT) == "gather"
    assert distributed.choose_mi_route("auto", shard, 1000, 10, gather - 1) == "approximate"
    big = distributed.Shard(10**7, 0, 8)  # n q = 5e8 bytes to gather, 2 MB of counts
    assert distributed.choose_mi_route("auto", big, 50, 10, distributed.DEFAULT_MI_LIMIT) == "counts"
    assert distributed.choose_mi_route("counts", shard, 1000, 10, 0) == "counts"
    with pytest.raises(ValueError, match="distributed_mi"):
        distributed.choose_mi_route("exact", shard, 10, 10, 0)


def test_single_process_state_dict_carries_rank_and_world_size():
    sel = make()
    sd = sel.state_dict()
    assert (sd["rank"], sd["world_size"]) == (0, 1)
    with pytest.raises(ValueError, match="world_size"):
        make().load_state_dict({**sd, "world_size": 2})
    del sd["rank"], sd["world_size"]  # dicts saved before distributed support still load
    make().load_state_dict(sd)


def test_train_ddp_example_runs_under_torchrun(tmp_path):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "python/train_ddp.py"]
    cmd += ["--samples", "500", "--epochs", "3", "--warmup", "2", "--mi-error", "--checkpoint", str(tmp_path)]
    # The CPU run (gloo), also on a GPU machine: NCCL's run is tests/test_gpu.py's.
    env = {**LOOPBACK, **os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=120, check=False, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    header = (
        r"^world_size 2 \(gloo\) on cpu: 400 samples, 200 on rank 0, 4 batches of 64 per rank per epoch, "
        r"MI route gather$"
    )
    assert re.search(header, out, re.M), out
    lines = re.findall(r"^epoch +(\d) (\w+) +loss .*$", out, re.M)
    assert lines == [("0", "uniform"), ("1", "uniform"), ("2", "selection")], out
    err = re.search(r"approximate MI: max rel err of c (\S+), TV\(P\) (\S+)", out)
    assert err and float(err[1]) < 0.5 and float(err[2]) < 0.05, out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt", "selector-rank0.pt", "selector-rank1.pt"]
