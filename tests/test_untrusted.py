"""Every entry point treats its input as untrusted: it raises a documented exception (TypeError,
ValueError, IndexError, KeyError) naming what is wrong, or succeeds; and when it raises, the
selector's state is bitwise what it was. Property-based (hypothesis, derandomised so CI is
stable), on the CPU and on CUDA where there is a device, plus one test per class of input that
once slipped through (a checkpoint's plan or values, meta tensors, counters at their limit,
non-finite log-probabilities, scalars of the wrong type, misleading messages).
"""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from conftest import make_state, require_backend
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ubs_kernels as ubs
from ubs_kernels import sampling

DOCUMENTED = (TypeError, ValueError, IndexError, KeyError)
N, Q, B = 40, 5, 8
FUZZ = settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))


def labels() -> torch.Tensor:
    return torch.rand(N, Q, generator=torch.Generator().manual_seed(0)) < 0.4


SELECTORS = {
    "ubs": lambda d: ubs.UncertaintyBatchSelector(N, Q, batch_size=B, epochs=6, warmup=1, device=d),
    "ubs-torch": lambda d: ubs.UncertaintyBatchSelector(
        N, Q, batch_size=B, epochs=6, warmup=1, device=d, backend="torch"
    ),
    "active": lambda d: ubs.ActiveBiasSelector(N, Q, batch_size=B, warmup=1, device=d),
    "recent": lambda d: ubs.RecencyBiasSelector(N, Q, batch_size=B, warmup=1, device=d),
    "hard": lambda d: ubs.HardImbalanceSelector(labels(), batch_size=B, warmup=1, device=d),
    "random": lambda d: ubs.RandomSelector(N, batch_size=B, device=d),
}


def warm(name: str, device) -> ubs.BatchSelector:
    """A selector two steps into its first selection epoch, with a step not yet applied (CPU)."""
    sel = SELECTORS[name](device)
    gen = torch.Generator().manual_seed(1)
    steps = 0
    for _ in range(2):
        for batch in sel:
            sel.observe(batch, torch.rand(len(batch), Q, generator=gen))
            steps += 1
            if steps == len(sel) + 2:
                return sel
    return sel


def snapshot(sel) -> dict:
    return copy.deepcopy(sel.state_dict())


def same(a, b) -> bool:
    """Equal, bit for bit (NaN included), through dicts, lists and tensors."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if torch.is_tensor(a):
        return (
            torch.is_tensor(b)
            and a.dtype == b.dtype
            and a.shape == b.shape
            and torch.equal(a.reshape(-1).view(torch.uint8), b.reshape(-1).view(torch.uint8))
        )
    return type(a) is type(b) and a == b


# --------------------------------------------------------------------------- checkpoints

JUNK = [None, -1, 0, 3, 2**63 - 1, 1.5, "x", float("nan"), True, [], {}]
ODD_VALUES = [float("nan"), float("inf"), -float("inf"), -1.0, 2.0, 0.5, 10.0, 255.0, -(2**63), 2**63 - 1]


def odd_tensor(t: torch.Tensor, kind: int) -> object:
    return [
        lambda: t.to(torch.float64),
        lambda: t.flatten()[:-1] if t.numel() > 1 else t.reshape(1, -1),
        lambda: torch.empty(t.shape, dtype=t.dtype, device="meta"),
        lambda: t.to_sparse() if t.dim() >= 1 else t,
        t.tolist,
        lambda: t.unsqueeze(0),
    ][kind]()


@st.composite
def mutations(draw, sd: dict):
    """A copy of ``sd`` with one thing changed, as a corrupt or hostile file would."""
    sd = copy.deepcopy(sd)
    what = draw(st.sampled_from(["junk", "drop", "plan", "offsets", "value", "tensor", "config", "log_p"]))
    if what == "junk":
        sd[draw(st.sampled_from(sorted(sd)))] = draw(st.sampled_from(JUNK))
    elif what == "drop":
        del sd[draw(st.sampled_from(sorted(sd)))]
    elif what == "plan" and sd["plan"] is not None:
        plan = sd["plan"]
        i = draw(st.integers(0, plan.numel() - 1))
        plan[i] = draw(st.sampled_from([-1, -97, N, N + 5, int(plan[(i + 1) % plan.numel()])]))
    elif what == "offsets" and sd["offsets"] is not None:
        off = sd["offsets"]
        choice = draw(st.integers(0, 2))
        if choice == 0:
            off[draw(st.integers(0, off.numel() - 1))] = draw(st.sampled_from([-3, 0, 1, 10**6]))
        elif choice == 1:
            sd["offsets"] = off[:-1]
        else:
            sd["offsets"] = off.flip(0)
    elif what == "value" and sd["state"]:
        key = draw(st.sampled_from(sorted(sd["state"])))
        t = sd["state"][key]
        if t.numel():
            value = draw(st.sampled_from(ODD_VALUES))
            flat = t.view(-1)
            i = draw(st.integers(0, flat.numel() - 1))
            if t.dtype == torch.bool:
                flat[i] = not bool(flat[i])
            else:
                try:  # whatever the dtype makes of it (an integer tensor wraps or refuses)
                    flat[i] = value
                except (RuntimeError, OverflowError, ValueError):
                    pass
    elif what == "tensor" and sd["state"]:
        key = draw(st.sampled_from(sorted(sd["state"])))
        sd["state"][key] = odd_tensor(sd["state"][key], draw(st.integers(0, 5)))
    elif what == "config" and "config" in sd:
        key = draw(st.sampled_from(sorted(sd["config"])))
        sd["config"][key] = draw(st.sampled_from(JUNK + [7, 0.25, "float32"]))
    elif what == "log_p" and sd["log_p"] is not None:
        sd["log_p"][draw(st.integers(0, sd["log_p"].numel() - 1))] = draw(st.sampled_from([float("nan"), float("inf")]))
    return sd


@pytest.mark.parametrize("name", sorted(SELECTORS))
def test_fuzzed_checkpoints_load_whole_or_not_at_all(name, device):
    sel = warm(name, device)
    base = sel.state_dict()

    @FUZZ
    @given(data=st.data())
    def check(data):
        bad = data.draw(mutations(base))
        before = snapshot(sel)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                sel.load_state_dict(bad)
            except DOCUMENTED:
                assert same(snapshot(sel), before), "a failed load changed the selector"
                return
        # Taken: the selector goes on working from it (an epoch and a bit).
        gen = torch.Generator().manual_seed(2)
        for _ in range(2):
            for batch in sel:
                sel.observe(batch, torch.rand(len(batch), Q, generator=gen))
        sel.load_state_dict(base)

    check()


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda sd: sd["plan"].__setitem__(0, -97), r"plan'\]\[0\] = -97 is not a sample"),
        (lambda sd: sd["plan"].__setitem__(0, N), "is not a sample this rank owns"),
        (lambda sd: sd.__setitem__("plan", sd["plan"][:-3]), "offsets"),
        (lambda sd: sd["offsets"].__setitem__(2, 1), "rise from 0"),
        (lambda sd: sd["offsets"].__setitem__(-1, 10**6), "rise from 0"),
        (lambda sd: sd["plan"].__setitem__(1, int(sd["plan"][0])), "twice in one batch"),
        (lambda sd: sd.__setitem__("epoch", 2.0), "epoch"),
        (lambda sd: sd.__setitem__("epoch", -1), "epoch"),
        (lambda sd: sd.__setitem__("cursor", "1"), "cursor"),
        (lambda sd: sd.__setitem__("cursor", 99), "cursor"),
        (lambda sd: sd["state"]["history"].view(-1).__setitem__(3, float("nan")), "history"),
        (lambda sd: sd["state"]["uncertainty"].view(-1).__setitem__(7, float("nan")), "uncertainty"),
        (lambda sd: sd["state"]["seen"].__setitem__(4, -2), "seen"),
        (lambda sd: sd["state"]["bins"].view(-1).__setitem__(5, 10), "bins"),
        (lambda sd: sd["config"].__setitem__("bins", 12), "config"),
        (lambda sd: sd["config"].__setitem__("window", 3), "config"),
        (lambda sd: sd.__setitem__("seed", 1), "seed"),
        (lambda sd: sd["log_p"].__setitem__(0, float("nan")), "log_p"),
        (lambda sd: sd["state"].__setitem__("history", sd["state"]["history"].to("meta")), "history"),
        (lambda sd: sd["state"].__setitem__("uncertainty", sd["state"]["uncertainty"].to_sparse()), "uncertainty"),
        (lambda sd: sd["state"].__setitem__("extra", torch.zeros(1)), "unexpected"),
    ],
)
def test_each_kind_of_bad_checkpoint_is_refused_and_changes_nothing(mutate, match, device):
    """The checkpoint cases that used to load (and then yielded batches like [-97, -95, ...]),
    or failed half-way: a meta or sparse tensor after epoch, cursor, plan and some state were
    already replaced."""
    sel = warm("ubs", device)
    bad = copy.deepcopy(sel.state_dict())
    mutate(bad)
    before = snapshot(sel)
    with pytest.raises(DOCUMENTED, match=match):
        sel.load_state_dict(bad)
    assert same(snapshot(sel), before)


def test_a_checkpoint_from_another_isa_path_loads_with_a_warning():
    sel = warm("ubs", "cpu")
    sd = sel.state_dict()
    assert sd["numerics"] == {"device": "cpu", "cpu_isa": ubs.ops.cpu_isa()}
    other = {
        **sd,
        "numerics": {"device": "cpu", "cpu_isa": "portable" if sd["numerics"]["cpu_isa"] != "portable" else "avx2"},
    }
    with pytest.warns(UserWarning, match="last bits"):
        warm("ubs", "cpu").load_state_dict(other)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warm("ubs", "cpu").load_state_dict(sd)


# --------------------------------------------------------------------------- observe

INDEX_SPECS = st.one_of(
    st.lists(st.integers(-3, N + 3), max_size=6).map(lambda v: torch.tensor(v, dtype=torch.int64)),
    st.lists(st.integers(0, N - 1), max_size=6, unique=True).map(lambda v: torch.tensor(v, dtype=torch.int64)),
    st.lists(st.integers(0, N - 1), max_size=6, unique=True).map(lambda v: torch.tensor(v, dtype=torch.int32)),
    st.sampled_from(
        [
            torch.tensor([0.0, 1.0]),
            torch.zeros(2, 2, dtype=torch.int64),
            torch.zeros(2, dtype=torch.int64, device="meta"),
            [0, 1],
            None,
            torch.tensor([True, False]),
        ]
    ),
)
VALUE_DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.int64, torch.float8_e4m3fn]
ODD_PROBS = [float("nan"), float("inf"), -float("inf"), -0.0, 1.0000001, -1e-30, 1e-45, 0.0, 1.0, 0.5]


@st.composite
def steps(draw):
    indices = draw(INDEX_SPECS)
    b = indices.shape[0] if torch.is_tensor(indices) and indices.dim() == 1 else 2
    rows = draw(st.sampled_from([b, b, b + 1]))
    cols = draw(st.sampled_from([Q, Q, Q - 1]))
    dtype = draw(st.sampled_from(VALUE_DTYPES))
    values = (
        torch.full((rows, cols), 0.5).to(dtype) if dtype.is_floating_point else torch.zeros(rows, cols, dtype=dtype)
    )
    if rows and cols and dtype.is_floating_point:
        values[draw(st.integers(0, rows - 1)), draw(st.integers(0, cols - 1))] = draw(st.sampled_from(ODD_PROBS))
    if draw(st.booleans()):
        values = values.to("meta")
    return indices, values, draw(st.booleans())


@pytest.mark.parametrize("name", sorted(SELECTORS))
def test_fuzzed_observations_raise_a_documented_error_or_succeed(name, device):
    sel = warm(name, device)

    @FUZZ
    @given(step=steps())
    def check(step):
        indices, values, as_logits = step
        before = snapshot(sel)
        kwargs = {"logits": values} if as_logits else {"probs": values}
        try:
            sel.observe(indices, **kwargs)
        except DOCUMENTED:
            assert same(snapshot(sel), before), "a refused observation changed the state"

    check()


def test_meta_tensors_are_refused_and_stage_nothing():
    """A meta tensor used to reach the native stage kernel's fake twin: nothing raised and the
    staged-row count grew, so stale rows were applied as observations later."""
    sel = warm("ubs", "cpu")
    pending = sel._history.pending
    for indices, probs in (
        (torch.tensor([1, 2], device="meta"), torch.full((2, Q), 0.5)),
        (torch.tensor([1, 2]), torch.full((2, Q), 0.5, device="meta")),
    ):
        with pytest.raises(ValueError, match="meta"):
            sel.observe(indices, probs)
        with pytest.raises(ValueError, match="meta"):
            sel.observe(indices, logits=probs)
    assert sel._history.pending == pending


@pytest.mark.parametrize("op", ["observe", "record", "stage", "uncertainty", "selection_log_probs"])
def test_raw_ops_refuse_a_meta_tensor_among_real_ones(op):
    require_backend(op, "cpu")
    state = make_state(6, 2, 3)
    meta = torch.full((2, 3), 0.5, device="meta")
    args = {
        "observe": (*state, torch.tensor([0, 1]), meta, 0.5, 10),
        "record": (state[0], state[1], torch.tensor([0, 1]), meta),
        "stage": (
            torch.zeros(4, dtype=torch.int64),
            torch.zeros(4, 3, dtype=torch.float16),
            0,
            torch.tensor([0, 1]),
            meta,
            6,
        ),
        "uncertainty": (state[0], state[1].to("meta"), 0.5, 10),
        "selection_log_probs": (torch.rand(6, 3), torch.ones(3, device="meta"), state[1], 2.0),
    }[op]
    with pytest.raises(ValueError, match="device"):
        getattr(torch.ops.ubs_kernels, op)(*args)


# --------------------------------------------------------------------------- limits and scalars


@pytest.mark.parametrize("backend", ["torch", "cpu"])
@pytest.mark.parametrize("op", ["observe", "record", "observe_staged"])
def test_a_count_at_its_limit_is_refused_not_wrapped(op, backend):
    """seen = 2^63 - 1 used to wrap to -2^63 (and the CPU observe dropped the prediction)."""
    require_backend(op, backend)
    state = make_state(6, 2, 3)
    state[1][2] = 2**63 - 1
    before = [t.clone() for t in state]
    idx, probs = torch.tensor([2, 4]), torch.full((2, 3), 0.5, dtype=torch.float16)
    with pytest.raises(ValueError, match=r"seen\[2\] = 9223372036854775807 has no room"):
        if op == "observe":
            ubs.observe(*state, idx, probs, backend=backend)
        elif op == "record":
            ubs.record(state[0], state[1], idx, probs, backend=backend)
        else:
            ubs.observe_staged(*state, idx, probs, backend=backend)
    assert all(torch.equal(a, b) for a, b in zip(state, before, strict=True))


@pytest.mark.parametrize("backend", ["torch", "cpu"])
def test_staged_repeats_need_room_for_each(backend):
    require_backend("observe_staged", backend)
    state = make_state(6, 2, 3)
    state[1][1] = 2**63 - 2  # room for one more, not two
    idx, probs = torch.tensor([1, 3, 1]), torch.full((3, 3), 0.5, dtype=torch.float16)
    with pytest.raises(ValueError, match=r"seen\[1\] = 9223372036854775806 has no room"):
        ubs.observe_staged(*state, idx, probs, backend=backend)
    ubs.observe_staged(*state, idx[:2], probs[:2], backend=backend)
    assert int(state[1][1]) == 2**63 - 1


@pytest.mark.parametrize("name", ["active", "recent", "hard"])
def test_comparator_counts_at_their_limit_are_refused(name):
    sel = warm(name, "cpu")
    sel.seen[3] = 2**63 - 1
    before = snapshot(sel)
    with pytest.raises(ValueError, match="no room"):
        sel.observe(torch.tensor([3]), torch.full((1, Q), 0.5))
    assert same(snapshot(sel), before)


def test_a_nan_log_probability_stops_the_plan_instead_of_planning_empty_batches():
    """One NaN in ActiveBias's running moments (reachable before checkpoints were checked) used to
    plan a whole epoch of [] batches."""
    sel = warm("active", "cpu")
    sel._m2[int(sel.seen.argmax()), 0] = float("nan")  # a sample with a variance (seen >= 2)
    sel.set_epoch(3)
    with pytest.raises(ValueError, match="log_p must not be NaN"):
        next(iter(sel))
    with pytest.raises(ValueError, match="log_p"):
        ubs.plan_weighted(torch.tensor([0.0, float("nan")]), 1, 2, sampling.epoch_generator(0, 0))


@pytest.mark.parametrize(
    ("call", "exc", "match"),
    [
        (lambda s: ubs.observe(*s, torch.tensor([0]), torch.full((1, 3), 0.5), lam="0.5"), TypeError, "lam"),
        (lambda s: ubs.observe(*s, torch.tensor([0]), torch.full((1, 3), 0.5), lam=None), TypeError, "lam"),
        (lambda s: ubs.observe(*s, torch.tensor([0]), torch.full((1, 3), 0.5), tau=10.0), TypeError, "tau"),
        (lambda s: ubs.selection_log_probs(torch.rand(6, 3), torch.ones(3), s[1], "2"), TypeError, "pressure"),
        (
            lambda s: ubs.selection_log_probs(torch.rand(6, 3), torch.ones(3, dtype=torch.long), s[1], 2.0),
            TypeError,
            "c",
        ),
        (lambda s: ubs.selection_log_probs(torch.rand(6, 3), torch.ones(3), s[1].int(), 2.0), TypeError, "seen"),
        (lambda s: ubs.observe(*s, [0, 1], torch.full((2, 3), 0.5)), TypeError, "indices"),
        (
            lambda s: ubs.observe(*s, torch.tensor([0]), torch.full((1, 3), 0.5).to(torch.float8_e4m3fn)),
            TypeError,
            "probs",
        ),
    ],
)
def test_scalars_and_dtypes_are_checked_by_type(call, exc, match):
    state = make_state(6, 2, 3)
    before = [t.clone() for t in state]
    with pytest.raises(exc, match=match):
        call(state)
    assert all(torch.equal(a, b) for a, b in zip(state, before, strict=True))


def test_messages_name_what_was_passed():
    ubs_sel, random_sel = warm("ubs", "cpu"), warm("random", "cpu")
    with pytest.raises(TypeError, match="indices must be a torch.Tensor, got list"):
        ubs_sel.observe([0, 1], torch.full((2, Q), 0.5))
    with pytest.raises(ValueError, match=r"logits must have shape \(2, 5\)"):
        ubs_sel.observe(torch.tensor([0, 1]), logits=torch.zeros(2, 4))
    with pytest.raises(ValueError, match=r"probs must have shape \(2, num_labels\)"):
        random_sel.observe(torch.tensor([0, 1]), torch.full((3, Q), 0.5))
    require_backend("stage", "cpu")
    with pytest.raises(ValueError, match=r"logits must have shape \(2, 5\)"):
        torch.ops.ubs_kernels.stage(
            torch.zeros(4, dtype=torch.int64),
            torch.zeros(4, Q, dtype=torch.float16),
            0,
            torch.tensor([0, 1]),
            torch.zeros(2, 4),
            N,
            True,
        )
    with pytest.raises(TypeError, match="probs must be float32, float16, bfloat16 or float64"):
        torch.ops.ubs_kernels.record(
            *make_state(6, 2, 3)[:2], torch.tensor([0]), torch.zeros(1, 3).to(torch.float8_e4m3fn)
        )
