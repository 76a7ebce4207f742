"""End to end on a CUDA device, as a GPU user runs the library: every spelling of the device,
the README's loop, the demo with its defaults, torchrun with NCCL, torch.compile around a
training step that observes. (The kernels, the comparators, resume, Lightning and bad input run
on CUDA in their own files, through the ``device`` fixture of conftest.py.) Skips without CUDA.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import NO_CUDA

import ubs_kernels as ubs
from ubs_kernels import _checks

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason=NO_CUDA)]
ROOT = Path(__file__).resolve().parents[1]


def spellings() -> list:
    """Every way a user names the current CUDA device."""
    current = torch.cuda.current_device() if torch.cuda.is_available() else 0
    return ["cuda", f"cuda:{current}", torch.device("cuda"), torch.device("cuda", current), current]


@pytest.mark.parametrize("spelling", range(5), ids=["str", "str-index", "device", "device-index", "int"])
def test_every_spelling_is_one_device(spelling):
    name = spellings()[spelling]
    current = torch.device("cuda", torch.cuda.current_device())
    assert _checks.check_device(name) == current
    x = torch.zeros(1, device=name)
    assert x.device == current
    for make in (
        lambda d: ubs.UncertaintyBatchSelector(64, 3, batch_size=8, device=d),
        lambda d: ubs.ActiveBiasSelector(64, 3, batch_size=8, device=d),
        lambda d: ubs.RandomSelector(64, batch_size=8, device=d),
    ):
        sel = make(name)
        assert sel.device == current
        for batch in sel:
            sel.observe(batch.to(name), torch.rand(len(batch), 3, device=name))
        assert next(iter(sel)).device.type == "cpu"  # batches are CPU ids, as for any sampler


@pytest.mark.parametrize("spelling", [0, 2], ids=["str", "device"])
def test_readme_loop_on_cuda(spelling):
    """The README's training loop, with the data, model and selector on the GPU."""
    device = spellings()[spelling]
    torch.manual_seed(0)
    n, d, q = 600, 10, 6
    x = torch.randn(n, d, device=device)
    y = (x[:, :q] + 0.5 * torch.randn(n, q, device=device) > 0.3).float()
    selector = ubs.UncertaintyBatchSelector(n, q, batch_size=64, epochs=6, warmup=2, device=device)
    loader = torch.utils.data.DataLoader(
        ubs.IndexedDataset(torch.utils.data.TensorDataset(x, y)), batch_sampler=selector
    )
    model = torch.nn.Sequential(torch.nn.Linear(d, 32), torch.nn.ReLU(), torch.nn.Linear(32, q)).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for epoch in range(6):
        for indices, xb, yb in loader:
            logits = model(xb)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            selector.observe(indices, logits=logits)
        assert selector.selecting == (epoch >= 2)
    assert selector.uncertainty.device == selector.device == torch.device("cuda", torch.cuda.current_device())
    assert int(selector.seen.sum()) == 6 * len(selector) * 64 - 2 * (len(selector) * 64 - n)
    p = selector.sample_probabilities
    assert float(p.sum()) == pytest.approx(1.0, abs=1e-5) and float(p.max() / p.min()) > 1.0


def _run(cmd: list[str], timeout: int = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False, env=env)
    assert result.returncode == 0, f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
    return result


def test_demo_with_its_defaults_runs_on_the_gpu():
    """``make demo`` is ``python python/demo.py``: device "auto" is CUDA here."""
    out = _run([sys.executable, "python/demo.py", "--epochs", "4", "--warmup", "2"]).stdout
    assert re.search(r"device cuda", out), out
    assert re.search(r"^ubs_kernels backends \(auto\) on cuda: \{.*'observe'", out, flags=re.MULTILINE), out


def test_train_ddp_with_one_nccl_rank():
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1", "python/train_ddp.py"]
    out = _run([*cmd, "--epochs", "4", "--warmup", "2", "--samples", "800"]).stdout
    assert re.search(r"^world_size 1 \(nccl\) on cuda", out, flags=re.MULTILINE), out
    assert len(re.findall(r"^epoch", out, flags=re.MULTILINE)) == 4, out


def test_compiled_training_step_with_observe_inside():
    """torch.compile of the whole step, the selector's observe included: the step runs, and the
    history holds the compiled step's own predictions."""
    torch.manual_seed(0)
    n, d, q, b = 256, 8, 5, 32
    x, y = torch.randn(n, d, device="cuda"), (torch.rand(n, q, device="cuda") < 0.4).float()
    model = torch.nn.Linear(d, q).cuda()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    selector = ubs.UncertaintyBatchSelector(n, q, batch_size=b, epochs=4, warmup=1, device="cuda")

    def step(indices):
        logits = model(x[indices])
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, y[indices])
        opt.zero_grad()
        loss.backward()
        opt.step()
        selector.observe(indices, logits=logits.detach())
        return logits.detach()

    compiled = torch.compile(step)
    for _ in range(3):
        for batch in selector:
            indices = batch.cuda()
            slot = selector.seen[indices] % selector.window
            logits = compiled(indices)
            recorded = selector.history[indices, slot].float()
            # the compiled sigmoid may round differently from eager's in float32: one float16 ulp
            torch.testing.assert_close(recorded, torch.sigmoid(logits.float()), rtol=0, atol=1e-3)
    assert int(selector.seen.sum()) == 3 * n
