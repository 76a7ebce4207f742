"""The README's training loop runs as written (on a small synthetic set, 3 epochs)."""

from __future__ import annotations

import re
from pathlib import Path

import torch

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_training_loop_runs():
    section = README.read_text().split("## The selector", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, flags=re.DOTALL).group(1)
    assert len(code.strip().splitlines()) <= 15
    g = torch.Generator().manual_seed(0)
    scope = {"x": torch.rand(300, 8, generator=g), "y": (torch.rand(300, 4, generator=g) < 0.3).float()}
    exec(compile(code.replace("range(100)", "range(7)"), str(README), "exec"), scope)  # noqa: S102
    selector = scope["selector"]
    assert selector.epoch == 6 and selector.selecting  # selection epochs after the 5 warm-up ones
    assert int(selector.seen.sum()) == 5 * 300 + 2 * len(selector) * 128
