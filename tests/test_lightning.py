"""The Lightning callback: observe after every step, epochs advance, state in checkpoints."""

from __future__ import annotations

import pytest
import torch

import ubs_kernels as ubs

L = pytest.importorskip("lightning.pytorch", reason="the lightning extra is not installed")
from ubs_kernels.lightning import UBSCallback  # noqa: E402

N, Q, D, B = 96, 5, 4, 16


class Model(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = torch.nn.Linear(D, Q)
        self.steps = []

    def training_step(self, batch, batch_idx):
        indices, x, y = batch
        logits = self.net(x)
        self.steps.append((self.current_epoch, indices.clone()))
        return {"loss": torch.nn.functional.binary_cross_entropy_with_logits(logits, y), "probs": logits.sigmoid()}

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N, D, generator=g)
    y = (torch.rand(N, Q, generator=g) < 0.3).float()
    return ubs.IndexedDataset(torch.utils.data.TensorDataset(x, y))


def fit(selector, model, epochs, ckpt_path=None, callbacks=()):
    loader = torch.utils.data.DataLoader(data(), batch_sampler=selector)
    trainer = L.Trainer(
        max_epochs=epochs,
        accelerator="gpu" if selector.device.type == "cuda" else "cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        use_distributed_sampler=False,
        callbacks=[UBSCallback(selector), *callbacks],
    )
    trainer.fit(model, loader, ckpt_path=ckpt_path)
    return trainer


def test_callback_observes_every_step_and_epochs_advance(device):
    torch.manual_seed(0)
    selector = ubs.UncertaintyBatchSelector(N, Q, batch_size=B, epochs=5, warmup=2, seed=1, device=device)
    model = Model()
    fit(selector, model, 5)
    assert len(model.steps) == 5 * len(selector)
    assert [e for e, _ in model.steps] == [e for e in range(5) for _ in range(len(selector))]
    assert int(selector.seen.sum()) == sum(idx.numel() for _, idx in model.steps)
    for epoch in range(2):  # warm-up epochs are permutations
        drawn = torch.cat([idx for e, idx in model.steps if e == epoch])
        assert sorted(drawn.tolist()) == list(range(N))
    assert selector.epoch == 4 and selector.selecting  # the last epoch selected by P


def test_selector_state_round_trips_through_a_lightning_checkpoint(tmp_path, device):
    torch.manual_seed(0)
    selector = ubs.UncertaintyBatchSelector(N, Q, batch_size=B, epochs=6, warmup=1, seed=2, device=device)
    trainer = fit(selector, Model(), 3)
    path = tmp_path / "run.ckpt"
    trainer.save_checkpoint(path)
    saved = selector.state_dict()
    fresh = ubs.UncertaintyBatchSelector(N, Q, batch_size=B, epochs=6, warmup=1, seed=2, device=device)
    ckpt = torch.load(path, weights_only=False)
    (state,) = [v for k, v in ckpt["callbacks"].items() if "UBSCallback" in k]
    UBSCallback(fresh).load_state_dict(state)
    restored = fresh.state_dict()
    assert restored["epoch"] == saved["epoch"] == 2
    for key in saved["state"]:
        assert torch.equal(restored["state"][key], saved["state"][key])


def test_training_step_without_probs_is_a_clear_error():
    class NoProbs(Model):
        def training_step(self, batch, batch_idx):
            return super().training_step(batch, batch_idx)["loss"]

    selector = ubs.RandomSelector(N, batch_size=B)
    with pytest.raises(KeyError, match="probs"):
        fit(selector, NoProbs(), 1)
