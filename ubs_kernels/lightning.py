"""PyTorch Lightning integration: a callback that feeds a selector from the training steps.

Install with ``pip install ubs_kernels[lightning]``. Usage::

    selector = ubs.UncertaintyBatchSelector(len(train_set), num_labels, epochs=max_epochs)
    loader = DataLoader(ubs.IndexedDataset(train_set), batch_sampler=selector)

    class Model(L.LightningModule):
        def training_step(self, batch, batch_idx):
            indices, x, y = batch
            logits = self(x)
            return {"loss": F.binary_cross_entropy_with_logits(logits, y), "probs": logits.sigmoid()}

    L.Trainer(max_epochs=max_epochs, callbacks=[UBSCallback(selector)], use_distributed_sampler=False)

After every training batch the callback calls ``selector.observe(indices, probs)`` (indices
from ``outputs["indices"]`` if the step returns them, else the batch's first element, which
:class:`~ubs_kernels.IndexedDataset` provides). Epochs advance by themselves: Lightning calls
``set_epoch`` on the batch sampler and re-iterates it. The selector's state is saved in
Lightning checkpoints and restored from them.

``use_distributed_sampler=False`` is required: with its default (True) Lightning replaces the
batch sampler of a distributed run with a ``DistributedSampler``-based one, and the selector
would no longer choose the batches.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch

from .batch_selector import BatchSelector


class UBSCallback(pl.Callback):
    """Calls ``selector.observe`` after each training batch; checkpoints the selector.

    Args:
        selector: any :class:`~ubs_kernels.BatchSelector` used as the train loader's batch sampler.
        probs_key: key of the sigmoid outputs ``(b, q)`` in the dict ``training_step`` returns.
        indices_key: key of the sample ids in that dict; if absent, ``batch[0]`` is used.
    """

    def __init__(self, selector: BatchSelector, probs_key: str = "probs", indices_key: str = "indices") -> None:
        super().__init__()
        if not isinstance(selector, BatchSelector):
            raise TypeError(f"selector must be a ubs_kernels BatchSelector, got {type(selector).__name__}")
        self.selector = selector
        self.probs_key = probs_key
        self.indices_key = indices_key

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if not isinstance(outputs, dict) or self.probs_key not in outputs:
            raise KeyError(
                f"UBSCallback: training_step must return a dict with {self.probs_key!r} (the batch's sigmoid "
                f"outputs), got {type(outputs).__name__}"
            )
        indices = outputs.get(self.indices_key)
        if indices is None:
            indices = batch[0]
        if not torch.is_tensor(indices) or indices.dim() != 1:
            raise TypeError(
                "UBSCallback: the sample indices must be the batch's first element (wrap the dataset in "
                f"ubs_kernels.IndexedDataset) or outputs[{self.indices_key!r}]"
            )
        self.selector.observe(indices, outputs[self.probs_key].detach())

    def state_dict(self) -> dict[str, Any]:
        return {"selector": self.selector.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.selector.load_state_dict(state_dict["selector"])
