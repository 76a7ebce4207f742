"""label_mi (docs/spec.md Eq. 6) on every backend and device, against
sklearn.metrics.mutual_info_score on every pair (conftest.sklearn_matrix), the float64
reference (on the GPU for the large shapes), numpy.bincount and hand-computed values.

The native CUDA and Triton shapes cover every code path of those kernels: tau = 2 (128 labels
per tile), 16 (the last prmt tau), 17 (the byte compare), 65 and 129 (one label per tile), 130
and 256 (every bin kept, padding corrected), tau = 200 in chunks, off-diagonal and ragged tiles,
n not a multiple of the 128-sample chunk, n = 0 and 1, q = 1, more rows than float32 counts
exactly."""

from __future__ import annotations

import itertools
import platform

import numpy as np
import pytest
import torch
from conftest import backend_params, correlated_bins, cuda_param, device_backends, require_backend, sklearn_matrix
from sklearn.metrics import mutual_info_score

import ubs_kernels as ubs
from ubs_kernels import reference


def adversarial_cases():
    gen = torch.Generator().manual_seed(7)
    rnd = torch.randint(0, 10, (50, 4), generator=gen, dtype=torch.uint8)
    const_col = rnd.clone()
    const_col[:, 2] = 3
    return {
        "random": (rnd, 10),
        "constant-column": (const_col, 10),
        "all-one-bin": (torch.full((40, 5), 9, dtype=torch.uint8), 10),
        "n=1": (torch.tensor([[1, 4, 0]], dtype=torch.uint8), 10),
        "n=0": (torch.empty(0, 3, dtype=torch.uint8), 10),
        "q=1": (torch.randint(0, 10, (30, 1), generator=gen, dtype=torch.uint8), 10),
        "tau=2": (torch.randint(0, 2, (64, 6), generator=gen, dtype=torch.uint8), 2),
        "tau=16": (torch.randint(0, 16, (300, 7), generator=gen, dtype=torch.uint8), 16),
        "tau=256": (torch.randint(0, 256, (500, 3), generator=gen, dtype=torch.int64).to(torch.uint8), 256),
        "identical-columns": (torch.cat([rnd[:, :1]] * 3, dim=1), 10),
        "correlated": (correlated_bins(997, 13, 10, 3, heavy=False), 10),
    }


CASES = adversarial_cases()

# UBS_CPU_ISA caps of this architecture (csrc/cpu/isa_levels.h); a cap the CPU lacks falls to the
# next path it has, so every value runs everywhere.
X86 = platform.machine().lower() in ("x86_64", "amd64")
ISA_CAPS = ["avx512", "avx2", "popcnt", "portable"] if X86 else ["neon", "portable"]


@pytest.mark.parametrize("case", list(CASES))
def test_reference_equals_sklearn_float64(case):
    bins, tau = CASES[case]
    got = reference.label_mi(bins, tau, dtype=torch.float64).numpy()
    np.testing.assert_allclose(got, sklearn_matrix(bins), rtol=0, atol=1e-9)
    rows = reference.label_mi(bins, tau, rowsum=True, dtype=torch.float64, block_labels=2).numpy()
    np.testing.assert_allclose(rows, sklearn_matrix(bins).sum(1), rtol=0, atol=1e-9)


@pytest.mark.parametrize("backend", backend_params())
@pytest.mark.parametrize("case", list(CASES))
def test_label_mi_backend_equals_sklearn(backend, case):
    require_backend("label_mi", backend)
    bins, tau = CASES[case]
    expected = sklearn_matrix(bins)
    C = ubs.label_mi(bins, tau, backend=backend)
    assert C.dtype == torch.float32 and C.shape == (bins.shape[1],) * 2
    np.testing.assert_allclose(C.numpy(), expected, rtol=1e-5, atol=1e-6)
    c = ubs.label_mi(bins, tau, rowsum=True, backend=backend)
    assert c.shape == (bins.shape[1],)
    np.testing.assert_allclose(c.numpy(), expected.sum(1), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("isa", ["auto", *ISA_CAPS])
@pytest.mark.parametrize(("n", "q", "tau"), [(64, 3, 10), (513, 9, 10), (4099, 17, 7), (1000, 5, 256), (3, 40, 2)])
def test_native_cpu_isa_paths(monkeypatch, isa, n, q, tau):
    """Every popcount path: AVX-512 VPOPCNTDQ, AVX2, POPCNT (NEON on Arm) where the CPU has them,
    and the portable one."""
    require_backend("label_mi", "cpu")
    monkeypatch.setenv("UBS_CPU_ISA", isa)
    bins = correlated_bins(n, q, tau, seed=n + q, heavy=False)
    expected = reference.label_mi(bins, tau, dtype=torch.float64)
    torch.testing.assert_close(ubs.label_mi(bins, tau, backend="cpu").double(), expected, rtol=1e-5, atol=1e-6)
    c = ubs.label_mi(bins, tau, rowsum=True, backend="cpu").double()
    torch.testing.assert_close(c, expected.sum(1), rtol=1e-5, atol=1e-5)


def test_native_row_sums_are_deterministic():
    """Row sums are reduced in a fixed order: repeated calls give the same bits."""
    require_backend("label_mi", "cpu")
    bins = correlated_bins(3000, 150, 10, 5, heavy=False)
    first = ubs.label_mi(bins, 10, rowsum=True, backend="cpu")
    for _ in range(5):
        assert torch.equal(ubs.label_mi(bins, 10, rowsum=True, backend="cpu"), first)


@pytest.mark.parametrize("name", ["sse9", "neon" if X86 else "avx2"])
def test_native_label_mi_rejects_unknown_isa(monkeypatch, name):
    """A name that is not a path of this architecture is refused, naming the accepted ones."""
    require_backend("label_mi", "cpu")
    monkeypatch.setenv("UBS_CPU_ISA", name)
    with pytest.raises(ValueError, match="UBS_CPU_ISA must be auto, .* on this CPU architecture"):
        ubs.label_mi(torch.zeros(4, 3, dtype=torch.uint8), 10, backend="cpu")


def test_native_label_mi_reports_its_path(monkeypatch):
    """label_mi_isa() names the pair-counting path: the highest at or below an explicit cap, and
    with auto one of the paths this CPU runs (the fastest measured); every cap gives the same bits."""
    require_backend("label_mi", "cpu")
    bins = correlated_bins(700, 30, 10, 9, heavy=False)
    paths, sums = {}, {}
    for cap in ISA_CAPS:
        monkeypatch.setenv("UBS_CPU_ISA", cap)
        paths[cap] = torch.ops.ubs_kernels.label_mi_isa()
        sums[cap] = ubs.label_mi(bins, 10, rowsum=True, backend="cpu")
    order = ISA_CAPS  # highest first
    for cap, path in paths.items():
        assert path in order[order.index(cap) :], (cap, path)  # never above the cap
    assert paths["portable"] == "portable"
    monkeypatch.setenv("UBS_CPU_ISA", "auto")
    assert torch.ops.ubs_kernels.label_mi_isa() in set(paths.values())
    first = next(iter(sums.values()))
    assert all(torch.equal(s, first) for s in sums.values())


def test_native_label_mi_checks_for_itself():
    require_backend("label_mi", "cpu")
    with pytest.raises(ValueError, match=r"bins must be in \[0, tau=4\)"):
        torch.ops.ubs_kernels.label_mi(torch.full((5, 2), 4, dtype=torch.uint8), 4, False)
    with pytest.raises(TypeError, match="bins must be uint8"):
        torch.ops.ubs_kernels.label_mi(torch.zeros(5, 2, dtype=torch.int64), 4, False)
    with pytest.raises(ValueError, match="tau"):
        torch.ops.ubs_kernels.label_mi(torch.zeros(5, 2, dtype=torch.uint8), 1, False)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int16, torch.int32, torch.int64])
def test_label_mi_accepts_integer_dtypes(dtype):
    bins = correlated_bins(200, 6, 10, 1, heavy=False)
    torch.testing.assert_close(ubs.label_mi(bins.to(dtype), 10), ubs.label_mi(bins, 10))


def test_label_mi_noncontiguous_and_sliced():
    bins = correlated_bins(300, 12, 10, 2, heavy=False)
    view = bins.T.contiguous().T[:, 1::3]  # strided columns
    assert not view.is_contiguous()
    np.testing.assert_allclose(ubs.label_mi(view, 10).numpy(), sklearn_matrix(view.contiguous()), atol=1e-6)


def test_independent_columns_give_near_zero_and_known_values():
    gen = torch.Generator().manual_seed(0)
    n = 200_000
    bins = torch.randint(0, 4, (n, 2), generator=gen, dtype=torch.uint8)
    C = ubs.label_mi(bins, 4)
    # Plug-in MI of independent columns: bias ~ (tau-1)^2 / (2n) nats.
    assert 0 <= C[0, 1] < 5 * 9 / (2 * n)
    # Hand-computed: b = a for half the rows, constant 0 for the other half.
    a = torch.tensor([0, 1, 0, 1], dtype=torch.uint8)
    b = torch.tensor([0, 1, 0, 0], dtype=torch.uint8)
    # p(0,0)=1/2, p(1,1)=1/4, p(1,0)=1/4; p_a=(1/2,1/2), p_b=(3/4,1/4)
    expected = (
        0.5 * np.log(0.5 / (0.5 * 0.75)) + 0.25 * np.log(0.25 / (0.5 * 0.25)) + 0.25 * np.log(0.25 / (0.5 * 0.75))
    )
    C = ubs.label_mi(torch.stack([a, b], dim=1), 2)
    assert C[0, 1].item() == pytest.approx(expected, abs=1e-7)


def test_joint_histograms_counts_exact():
    bins = correlated_bins(500, 5, 10, 4, heavy=False)
    counts = reference.joint_histograms(bins, 10)
    b = bins.long().numpy()
    for i, j in itertools.product(range(5), repeat=2):
        expected = np.bincount(b[:, i] * 10 + b[:, j], minlength=100).reshape(10, 10)
        np.testing.assert_array_equal(counts[i, j].numpy(), expected)


@pytest.mark.parametrize("backend", backend_params())
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_labels_using_few_scattered_bins(backend, seed):
    """Each label occupies 1-4 of tau=16 bins, at random positions, its most populated bin
    anywhere (the CPU kernel renames occupied bins and derives the most populated one)."""
    require_backend("label_mi", backend)
    rng = np.random.default_rng(seed)
    n, q, tau = 300, 9, 16
    cols = []
    for _ in range(q):
        used = rng.choice(tau, size=rng.integers(1, 5), replace=False)
        weights = rng.dirichlet(np.ones(len(used)) * 0.5)
        cols.append(rng.choice(used, size=n, p=weights))
    bins = np.stack(cols, axis=1)
    got = ubs.label_mi(torch.as_tensor(bins, dtype=torch.uint8), tau, backend=backend).double().numpy()
    want = sklearn_matrix(torch.as_tensor(bins))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    rows = ubs.label_mi(torch.as_tensor(bins, dtype=torch.uint8), tau, rowsum=True, backend=backend)
    np.testing.assert_allclose(rows.double().numpy(), want.sum(1), rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------- native CUDA and Triton

# (n, q, tau). The interpreter takes the small ones; q > labels per tile gives off-diagonal
# tiles (16 at tau = 10, 8 at tau = 16).
SMALL_SHAPES = [(203, 21, 10), (64, 6, 2), (150, 11, 16), (40, 5, 4), (90, 3, 200), (30, 1, 10), (1, 3, 10),
                (0, 4, 10)]  # fmt: skip
SHAPES = [(1000, 37, 10), (1, 3, 10), (0, 4, 10), (997, 1, 10), (300, 130, 2), (517, 20, 16), (517, 20, 17),
          (300, 9, 65), (300, 5, 129), (300, 4, 130), (600, 3, 256), (129, 17, 3)]  # fmt: skip


@pytest.mark.parametrize(
    ("device", "backend", "n", "q", "tau"),
    device_backends("cuda", "triton", cases=SHAPES + SMALL_SHAPES, interpreter_cases=SMALL_SHAPES),
)
def test_label_mi_matches_sklearn(device, backend, n, q, tau):
    require_backend("label_mi", backend, device)
    bins = correlated_bins(n, q, tau, seed=n + q + tau)
    expected = sklearn_matrix(bins)
    C = ubs.label_mi(bins.to(device), tau, backend=backend)
    assert C.device.type == torch.device(device).type and C.dtype == torch.float32 and C.shape == (q, q)
    np.testing.assert_allclose(C.cpu().numpy(), expected, rtol=1e-5, atol=1e-6)
    c = ubs.label_mi(bins.to(device), tau, rowsum=True, backend=backend)
    assert c.shape == (q,)
    np.testing.assert_allclose(c.cpu().numpy(), expected.sum(1), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("device", "backend"), device_backends("cuda", "triton"))
def test_label_mi_many_labels_tau2(device, backend):
    """128 labels per tile at tau = 2: q = 130 needs an off-diagonal tile and a ragged one."""
    require_backend("label_mi", backend, device)
    bins = correlated_bins(70, 130, 2, seed=3)
    expected = reference.label_mi(bins, 2, dtype=torch.float64).numpy()
    C = ubs.label_mi(bins.to(device), 2, backend=backend).cpu().numpy()
    np.testing.assert_allclose(C, expected, rtol=1e-5, atol=1e-6)
    c = ubs.label_mi(bins.to(device), 2, rowsum=True, backend=backend).cpu().numpy()
    np.testing.assert_allclose(c, expected.sum(1), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("device", "backend"), device_backends("cuda", "triton"))
def test_label_mi_known_values(device, backend):
    """Self-MI is the entropy; the hand-computed case of test_label_mi."""
    require_backend("label_mi", backend, device)
    col = correlated_bins(200, 1, 10, seed=9)
    C = ubs.label_mi(torch.cat([col, col], dim=1).to(device), 10, backend=backend)
    p = np.bincount(col[:, 0].numpy()) / 200
    p = p[p > 0]
    assert C[0, 1].item() == pytest.approx(-(p * np.log(p)).sum(), rel=1e-6)
    a = torch.tensor([0, 1, 0, 1], dtype=torch.uint8)
    b = torch.tensor([0, 1, 0, 0], dtype=torch.uint8)
    expected = 0.5 * np.log(0.5 / 0.375) + 0.25 * np.log(0.25 / 0.125) + 0.25 * np.log(0.25 / 0.375)
    got = ubs.label_mi(torch.stack([a, b], 1).to(device), 2, backend=backend)[0, 1].item()
    assert got == pytest.approx(expected, abs=1e-7)


@pytest.mark.parametrize(("device", "backend"), device_backends("triton"))
@pytest.mark.parametrize("tau", [3, 10, 200])
def test_triton_bin_counts_are_exact(device, backend, tau):
    """The marginal pass (the last bin of each pair is derived from it) against numpy.bincount."""
    require_backend("label_mi", backend, device)
    from ubs_kernels.triton import label_mi as tmi

    bins = correlated_bins(301, 5, tau, seed=tau)
    th = 1 << (tau - 1).bit_length()
    hist = tmi._histogram(bins.to(device), tau, th).cpu()
    for a in range(5):
        np.testing.assert_array_equal(hist[a].numpy(), np.bincount(bins[:, a].numpy(), minlength=th))


LARGE_SHAPES = [(100_003, 257, 10), ((1 << 24) + 3, 3, 4), (200_000, 300, 10), (100_000, 257, 2), (50_000, 65, 16),
                (20_000, 9, 256)]  # fmt: skip


@pytest.mark.parametrize(
    ("device", "backend", "n", "q", "tau"), device_backends("cuda", "triton", devices=("cuda",), cases=LARGE_SHAPES)
)
def test_label_mi_large_matches_reference(device, backend, n, q, tau):
    """Many tiles and chunks; (1 << 24) + 3 rows are more than float32 counts exactly."""
    require_backend("label_mi", backend, device)
    gen = torch.Generator(device=device).manual_seed(n)
    u = torch.rand(n, 4, generator=gen, device=device) @ torch.rand(4, q, generator=gen, device=device) / 4
    bins = reference.to_bins((u + 0.2 * torch.rand(n, q, generator=gen, device=device)) / 1.2, tau)
    expected = reference.label_mi(bins, tau, dtype=torch.float64)
    C = ubs.label_mi(bins, tau, backend=backend)
    torch.testing.assert_close(C.double(), expected, rtol=1e-5, atol=1e-6)
    c = ubs.label_mi(bins, tau, rowsum=True, backend=backend)
    torch.testing.assert_close(c.double(), expected.sum(1), rtol=1e-5, atol=1e-5)
    b = bins.cpu().numpy()
    for i, j in [(0, q - 1), (1 % q, q // 2)]:  # an outside oracle on a few pairs
        if i != j:
            assert C[i, j].item() == pytest.approx(mutual_info_score(b[:, i], b[:, j]), rel=1e-5, abs=1e-6)


@pytest.mark.parametrize(("device", "backend"), device_backends("triton", devices=("cuda",)))
def test_triton_counts_exact_past_float32_range(device, backend):
    """n > 2^24: int32 tensor-core counts stay exact (a float32 accumulator would stall at 2^24)."""
    require_backend("label_mi", backend, device)
    n = (1 << 24) + (1 << 23) + 7
    g = torch.Generator(device=device).manual_seed(2)
    col = (torch.rand(n, generator=g, device=device) < 0.9).to(torch.uint8)
    bins = torch.stack([col, col, 1 - col], dim=1)
    ones = int(col.sum())
    p = np.array([n - ones, ones], dtype=np.float64) / n
    entropy = float(-(p * np.log(p)).sum())
    C = ubs.label_mi(bins, 2, backend=backend).cpu()
    assert C[0, 1].item() == pytest.approx(entropy, rel=1e-5)
    assert C[0, 2].item() == pytest.approx(entropy, rel=1e-5)
    from ubs_kernels.triton import label_mi as tmi

    hist = tmi._histogram(bins, 2, 2).cpu()
    assert hist[0].tolist() == [n - ones, ones] and hist[2].tolist() == [ones, n - ones]


@pytest.mark.parametrize(("device", "backend"), device_backends("cuda"))
def test_native_cuda_row_sums_are_deterministic(device, backend):
    """The native CUDA row sums are reduced in a fixed order (Triton's use float atomics)."""
    require_backend("label_mi", backend, device)
    bins = correlated_bins(20_000, 150, 10, 5).to(device)
    first = ubs.label_mi(bins, 10, rowsum=True, backend=backend)
    for _ in range(3):
        assert torch.equal(ubs.label_mi(bins, 10, rowsum=True, backend=backend), first)


@pytest.mark.parametrize(("device", "backend"), device_backends("cuda"))
def test_native_cuda_checks_for_itself(device, backend):
    require_backend("label_mi", backend, device)
    op = torch.ops.ubs_kernels.label_mi
    with pytest.raises(ValueError, match=r"bins must be in \[0, tau=4\)"):
        op(torch.full((300, 2), 4, dtype=torch.uint8, device=device), 4, False)
    with pytest.raises(TypeError, match="bins must be uint8"):
        op(torch.zeros(5, 2, dtype=torch.int64, device=device), 4, False)
    with pytest.raises(ValueError, match="tau"):
        op(torch.zeros(5, 2, dtype=torch.uint8, device=device), 1, False)


@pytest.mark.parametrize("device", [cuda_param()])
def test_auto_prefers_a_gpu_backend(device):
    assert "triton" in ubs.available_backends("label_mi", device)


@pytest.mark.parametrize("device", [cuda_param()])
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_runs_on_the_device_of_its_inputs(device):
    require_backend("label_mi", "cuda", device)
    bins = correlated_bins(500, 9, 10, 2)
    got = ubs.label_mi(bins.to("cuda:1"), 10, backend="cuda")
    assert got.device == torch.device("cuda:1")
    torch.testing.assert_close(got.cpu(), ubs.label_mi(bins.to("cuda:0"), 10, backend="cuda").cpu())
