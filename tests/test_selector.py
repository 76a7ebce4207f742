"""UncertaintyBatchSelector: epochs, P against an independent float64 pipeline, resume, memory."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from sklearn.metrics import mutual_info_score

import ubs_kernels as ubs
from ubs_kernels import reference
from ubs_kernels.history import History


def fake_probs(indices: torch.Tensor, epoch: int, q: int) -> torch.Tensor:
    """Deterministic predictions that depend on the sample and the epoch, in [0, 1]."""
    i = indices.double().unsqueeze(1)
    j = torch.arange(q, dtype=torch.float64)
    return (0.5 + 0.5 * torch.sin(0.37 * i * (j + 1) + 0.9 * epoch * (1 + (i % 3)))).float()


def run(sel, epochs: int, q: int, record: list | None = None, stop_after: int | None = None) -> int:
    """Train-loop stand-in; returns the number of steps taken (stops after ``stop_after``)."""
    steps = 0
    while sel.epoch < epochs or sel._plan is None or sel._cursor < len(sel):
        epoch = sel.epoch if sel._plan is None or sel._cursor < len(sel) else sel.epoch + 1
        if epoch >= epochs:
            break
        for indices in sel:
            sel.observe(indices, fake_probs(indices, sel.epoch, q))
            if record is not None:
                record.append((sel.epoch, indices.clone()))
            steps += 1
            if stop_after is not None and steps == stop_after:
                return steps
    return steps


def make(n=300, q=7, **kw):
    kw = {"batch_size": 32, "epochs": 8, "warmup": 2, "seed": 5, **kw}
    return ubs.UncertaintyBatchSelector(n, q, **kw)


def test_warmup_epochs_are_permutations_then_selection_batches_are_distinct(device):
    n, q = 300, 7
    sel = make(n, q, device=device)
    seen_epochs = []
    for epoch in range(4):
        batches = list(sel)
        for b in batches:
            sel.observe(b, fake_probs(b, epoch, q))
        seen_epochs.append(sel.epoch)
        assert len(batches) == len(sel) == 10
        flat = torch.cat(batches)
        if epoch < 2:
            assert sorted(flat.tolist()) == list(range(n))
            assert [len(b) for b in batches] == [32] * 9 + [12]
        else:
            assert all(len(b) == 32 and b.unique().numel() == 32 for b in batches)
            assert float(sel.sample_probabilities.sum()) == pytest.approx(1.0, abs=1e-5)
    assert seen_epochs == [0, 1, 2, 3]


@pytest.mark.parametrize("correlation", ["mi", "ones"])
def test_selection_probabilities_match_an_independent_float64_pipeline(correlation):
    n, q, tau = 200, 5, 10
    sel = make(n, q, bins=tau, label_correlation=correlation)
    for epoch in range(3):
        for b in sel:
            sel.observe(b, fake_probs(b, epoch, q))
    next(iter(sel))  # plans epoch 3 (a selection epoch)
    # Independent: U from the numpy oracle of each sample's own history; MI from sklearn
    # ("ones": C is a matrix of ones, as in the authors' released code).
    u = sel.uncertainty.double().numpy()
    bins = np.minimum(np.floor(u * tau), tau - 1).astype(int)
    observed = sel.seen.numpy() > 0
    C = np.ones((q, q))
    for a in range(q):
        for c in range(q):
            if a != c and correlation == "mi":
                C[a, c] = mutual_info_score(bins[observed, a], bins[observed, c])
    w = u @ C.sum(1)
    z = np.where(observed, (w - w[observed].min()) / (w[observed].max() - w[observed].min()), 1.0)
    Q = np.floor((1 - z) * n)
    s = ubs.selection_pressure(3, 100.0, 2, 8)
    logits = -np.log(s) * Q / n
    p = np.exp(logits - logits.max())
    p /= p.sum()
    np.testing.assert_allclose(sel.sample_probabilities.double().numpy(), p, rtol=2e-4, atol=1e-9)


def recording(monkeypatch) -> None:
    """Selectors made from here on take the path they take on CUDA: each step recorded into the
    rings, U from the whole-matrix pass (instead of staged steps)."""
    monkeypatch.setattr(History, "choose", staticmethod(lambda device, backend: "recorded"))


# staged: steps staged, applied when U is read; full buffer: a buffer of one batch, applied
# whenever the next step does not fit, with an observation larger than the buffer; recorded:
# each step into the rings, U by the whole-matrix pass, in one block or in blocks of 7 rows.
MODES = ["staged", "staged-full-buffer", "recorded", "recorded-blocks"]


@pytest.mark.parametrize("mode", MODES)
def test_uncertainty_follows_every_observation(mode, monkeypatch):
    """U and bins, brought up to date when read, against the numpy oracle of each sample's own
    list of predictions; read mid-epoch and at epoch ends."""
    from conftest import assert_bins_match, numpy_uncertainty

    n, q, window, lam = 60, 9, 3, 0.3
    if mode == "staged-full-buffer":
        monkeypatch.setattr(History, "STAGE_BYTES", 1)
    if mode.startswith("recorded"):
        recording(monkeypatch)
    if mode == "recorded-blocks":
        monkeypatch.setattr(History, "REFRESH_BLOCK_BYTES", 5 * q * 7)
    sel = make(n, q, batch_size=16, window=window, lam=lam, bins=7)
    expected_rows = {"staged": 64, "staged-full-buffer": 16}.get(mode, 0)
    assert sel._history.strategy == ("recorded" if mode.startswith("recorded") else "staged")
    assert sel._history.capacity == expected_rows
    predictions = [[] for _ in range(n)]
    for epoch in range(4):
        for step, b in enumerate(sel):
            probs = fake_probs(b, epoch, q)
            sel.observe(b, probs)
            for row, i in enumerate(b.tolist()):
                predictions[i].append(probs[row].half().double().numpy())
            if step == 1 and epoch == 2:  # 40 samples at once: more than a one-batch buffer holds
                big = torch.arange(10, 50)
                probs = fake_probs(big, 7, q)
                sel.observe(big, probs)
                for row, i in enumerate(big.tolist()):
                    predictions[i].append(probs[row].half().double().numpy())
            if step % 3 == 1 or epoch == 3:
                u = sel.uncertainty
                for i, preds in enumerate(predictions):
                    expected = numpy_uncertainty(preds, window, lam) if preds else np.zeros(q)
                    np.testing.assert_allclose(u[i].numpy(), expected, rtol=0, atol=2e-6)
                    assert_bins_match(sel.bins[i], expected, 7)
    assert sel.seen.tolist() == [len(p) for p in predictions]


def test_staged_and_recorded_paths_give_the_same_run(monkeypatch):
    """The CPU's staged steps and the per-step ring writes (CUDA, Triton) leave the same bits
    in the state after every epoch, so the same batches are drawn."""
    a = make()
    recording(monkeypatch)
    b = make()
    got_a, got_b = [], []
    for epochs in range(1, 6):
        run(a, epochs, 7, got_a)
        run(b, epochs, 7, got_b)
        for key in ("history", "seen", "uncertainty", "bins"):
            assert torch.equal(a.state_dict()["state"][key], b.state_dict()["state"][key]), key
    assert len(got_a) == len(got_b) == 50
    assert all(e1 == e2 and torch.equal(x, y) for (e1, x), (e2, y) in zip(got_a, got_b, strict=True))


@pytest.mark.parametrize("path", ["staged-native", "staged-torch", "recorded"])
def test_observe_logits_is_observe_of_their_sigmoid(path, monkeypatch):
    """observe(indices, logits=x) records sigmoid(x): the same state as observe(indices,
    torch.sigmoid(x)) (the native kernel's float32 sigmoid may differ in a last bit, which
    float16 rounding absorbs: every value was the same in this run)."""
    kw = {"backend": "torch"} if path == "staged-torch" else {}
    if path == "recorded":
        recording(monkeypatch)
    a, b = make(**kw), make(**kw)
    gen = torch.Generator().manual_seed(0)
    for _ in range(3):
        for ia, ib in zip(a, b, strict=True):
            assert torch.equal(ia, ib)
            x = torch.randn(len(ia), 7, generator=gen) * 4
            a.observe(ia, logits=x)
            b.observe(ib, torch.sigmoid(x))
    for key in ("history", "seen", "uncertainty", "bins"):
        assert torch.equal(a.state_dict()["state"][key], b.state_dict()["state"][key]), key


def test_observe_takes_probs_or_logits_not_both():
    sel = make()
    with pytest.raises(TypeError, match="exactly one of probs"):
        sel.observe(torch.tensor([0, 1]), torch.full((2, 7), 0.5), logits=torch.zeros(2, 7))
    with pytest.raises(TypeError, match="exactly one of probs"):
        sel.observe(torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="logits must not be NaN"):
        sel.observe(torch.tensor([0, 1]), logits=torch.full((2, 7), float("nan")))
    assert sel._history.pending == 0


def test_same_seed_same_batches_other_seed_other_batches():
    a, b, c = [], [], []
    run(make(), 5, 7, a)
    run(make(), 5, 7, b)
    run(make(seed=6), 5, 7, c)
    assert all(e1 == e2 and torch.equal(x, y) for (e1, x), (e2, y) in zip(a, b, strict=True))
    assert any(not torch.equal(x, y) for (_, x), (_, y) in zip(a, c, strict=False))


@pytest.mark.parametrize("stop_after", [3, 10, 20, 25, 47])  # mid warm-up, epoch ends, mid selection
def test_resume_from_state_dict_gives_the_uninterrupted_run(stop_after, device):
    q, epochs = 7, 6
    whole = []
    ref = make(device=device)
    assert run(ref, epochs, q, whole) == epochs * len(ref) == 60
    first = []
    sel = make(device=device)
    run(sel, epochs, q, first, stop_after=stop_after)
    buffer = io.BytesIO()
    torch.save(sel.state_dict(), buffer)
    buffer.seek(0)
    resumed = make(device=device)
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    rest = []
    run(resumed, epochs, q, rest)
    joined = first + rest
    assert len(joined) == len(whole)
    for (e1, x), (e2, y) in zip(joined, whole, strict=True):
        assert e1 == e2 and torch.equal(x, y)
    for key in ("history", "seen", "uncertainty", "bins"):
        assert torch.equal(resumed.state_dict()["state"][key], ref.state_dict()["state"][key])


def test_set_epoch_keeps_the_epoch_in_progress_and_jumps_otherwise():
    sel = make()
    it = iter(sel)
    next(it)
    sel.set_epoch(0)  # same epoch, unfinished: keep the plan
    assert sel._cursor == 1
    sel.set_epoch(4)
    assert sel.epoch == 4 and sel._plan is None
    batches = list(sel)
    assert sel.epoch == 4 and len(batches) == len(sel)


def test_bad_state_dict_changes_nothing(device):
    sel = make(device=device)
    run(sel, 3, 7)
    before = sel.state_dict()
    for mutate in (
        lambda sd: sd.pop("plan"),
        lambda sd: sd.__setitem__("num_samples", 301),
        lambda sd: sd.__setitem__("kind", "RandomSelector"),
        lambda sd: sd["state"].__setitem__("history", torch.zeros(3)),
        lambda sd: sd.__setitem__("cursor", 99),
    ):
        sd = sel.state_dict()
        mutate(sd)
        with pytest.raises((KeyError, ValueError, TypeError)):
            sel.load_state_dict(sd)
        after = sel.state_dict()
        assert after["epoch"] == before["epoch"] and after["cursor"] == before["cursor"]
        assert torch.equal(after["plan"], before["plan"])
        assert all(torch.equal(after["state"][k], before["state"][k]) for k in before["state"])


@pytest.mark.parametrize(
    ("indices", "probs", "error"),
    [
        (torch.tensor([0, 0]), torch.full((2, 7), 0.5), ValueError),
        (torch.tensor([0, 300]), torch.full((2, 7), 0.5), IndexError),
        (torch.tensor([0, 1]), torch.tensor([[0.5] * 6 + [float("nan")]] * 2), ValueError),
        (torch.tensor([0, 1]), torch.full((2, 7), 1.5), ValueError),
        (torch.tensor([0, 1]), torch.full((2, 6), 0.5), ValueError),
    ],
)
def test_bad_observation_raises_and_changes_nothing(indices, probs, error, device):
    sel, untouched = make(device=device), make(device=device)
    for s in (sel, untouched):
        run(s, 1, 7)
        s.observe(torch.tensor([3, 4]), torch.full((2, 7), 0.25))  # a step left staged (CPU)
    staged = sel._history.pending
    with pytest.raises(error):
        sel.observe(indices.to(device), probs.to(device))
    assert sel._history.pending == staged  # the bad call staged nothing
    after, expected = sel.state_dict()["state"], untouched.state_dict()["state"]
    assert all(torch.equal(after[k], expected[k]) for k in expected)


def test_memory_bytes_formula_and_refusal_before_allocating():
    sel = make(n=300, q=7, window=5)
    held = [*sel._state().values(), sel._history._stage_indices, sel._history._stage_values]
    state = sum(t.numel() * t.element_size() for t in held)
    # Staging buffer (CPU): one epoch of steps, ceil(300 / 32) * 32 = 320 rows of q h + 8 bytes.
    staging = 320 * (7 * 2 + 8)
    assert sel.memory_bytes() == state + 24 * 300 == 300 * (5 * 7 * 2 + 5 * 7 + 8) + staging + 24 * 300
    assert make(history_dtype=torch.float32).memory_bytes() == (
        300 * (5 * 7 * 4 + 5 * 7 + 8) + 320 * (7 * 4 + 8) + 24 * 300
    )
    # At most 64 MiB of staging: q = 4000 float16 rows are 8008 bytes, so 8380 of them.
    big = ubs.UncertaintyBatchSelector(10_000, 4000, batch_size=128, window=1)
    assert big._history._stage_values.shape == (8380, 4000) and (64 << 20) // 8008 == 8380
    with pytest.raises(MemoryError, match="num_samples=10000000000"):
        ubs.UncertaintyBatchSelector(10**10, 1000)


@pytest.mark.parametrize(
    ("kwargs", "exc", "name"),
    [
        ({"batch_size": 0}, ValueError, "batch_size"),
        ({"batch_size": 32.0}, TypeError, "batch_size"),
        ({"window": 0}, ValueError, "window"),
        ({"bins": 1}, ValueError, "bins"),
        ({"bins": "10"}, TypeError, "bins"),
        ({"s0": 0.5}, ValueError, "s0"),
        ({"s0": "2"}, TypeError, "s0"),
        ({"lam": "0.5"}, TypeError, "lam"),
        ({"lam": None}, TypeError, "lam"),
        ({"lam": float("nan")}, ValueError, "lam"),
        ({"seed": 1.5}, TypeError, "seed"),
        ({"warmup": True}, TypeError, "warmup"),
        ({"label_correlation": "none"}, ValueError, "label_correlation"),
        ({"device": "meta"}, ValueError, "device"),
        ({"device": "tpu:0"}, ValueError, "device"),
        ({"device": 1.0}, TypeError, "device"),
    ],
)
def test_bad_construction_names_the_argument(kwargs, exc, name):
    with pytest.raises(exc, match=name):
        make(**kwargs)


def test_works_as_dataloader_batch_sampler(device):
    """The README's loop: data and model on the device, indices from IndexedDataset."""
    n, q = 100, 4
    x = torch.randn(n, 3, device=device)
    y = (torch.rand(n, q, device=device) < 0.3).float()
    sel = make(n, q, batch_size=16, device=device)
    loader = torch.utils.data.DataLoader(ubs.IndexedDataset(torch.utils.data.TensorDataset(x, y)), batch_sampler=sel)
    assert len(loader) == 7
    for epoch in range(3):
        got = []
        for idx, xb, yb in loader:
            assert torch.equal(xb, x[idx]) and torch.equal(yb, y[idx])
            sel.observe(idx, torch.sigmoid(xb[:, :1]).expand(-1, q))
            got.append(idx)
        assert sel.epoch == epoch
        if epoch < 2:
            assert sorted(torch.cat(got).tolist()) == list(range(n))


def test_stateful_dataloader_resumes_exactly():
    sdl = pytest.importorskip("torchdata.stateful_dataloader")
    n, q = 120, 4
    data = ubs.IndexedDataset(torch.utils.data.TensorDataset(torch.randn(n, 2)))

    def loop(sel, loader, stop, out):
        while len(out) < stop:
            for idx, _x in loader:
                sel.observe(idx, fake_probs(idx, sel.epoch, q))
                out.append(idx.clone())
                if len(out) == stop:
                    return

    whole, part, rest = [], [], []
    ref = make(n, q, batch_size=16)
    loop(ref, sdl.StatefulDataLoader(data, batch_sampler=ref), 40, whole)  # 5 epochs of 8 batches
    sel = make(n, q, batch_size=16)
    loader = sdl.StatefulDataLoader(data, batch_sampler=sel)
    loop(sel, loader, 19, part)  # stops mid selection epoch 2
    saved = loader.state_dict()
    sel2 = make(n, q, batch_size=16)
    loader2 = sdl.StatefulDataLoader(data, batch_sampler=sel2)
    loader2.load_state_dict(saved)
    loop(sel2, loader2, 21, rest)
    assert len(part + rest) == len(whole) == 40
    assert all(torch.equal(a, b) for a, b in zip(part + rest, whole, strict=True))


def test_reference_mi_rowsums_agree_with_sklearn_on_selector_bins():
    sel = make(n=150, q=4)
    run(sel, 3, 4)
    c = sel.label_correlation_rowsums().double()
    bins = sel.bins.long()
    expected = reference.label_mi(bins, 10, rowsum=True)
    torch.testing.assert_close(c, expected, rtol=1e-5, atol=1e-6)
