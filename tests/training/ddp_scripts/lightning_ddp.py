"""`fitlens.lightning.FitlensCallback` under Lightning's own DDP, launched by torchrun from
tests/training/test_distributed.py: ``torchrun --nproc-per-node 2 lightning_ddp.py OUT -``.

Each rank logs its own loss (``sync_dist=False``); a second callback keeps every rank's batch
losses and sizes, gathered at the end: the naive global reference. Writes ``OUT/lightning-
rank<r>.json`` with the callback's history and the reference epoch means.
"""

from __future__ import annotations

import faulthandler
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
import torch.distributed as dist

import fitlens.lightning


class Module(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3)
        )

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = torch.nn.functional.cross_entropy(self.net(x), y)
        self.log("loss", loss, on_step=True, on_epoch=True, batch_size=len(y))
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.5)


class Reference(pl.Callback):
    """Every batch's loss and size on this rank, per epoch."""

    def __init__(self) -> None:
        self.rows: list[tuple[int, float, int]] = []

    def on_train_batch_end(self, trainer: Any, module: Any, outputs: Any, batch: Any, i: int):
        self.rows.append((trainer.current_epoch, float(outputs["loss"]), len(batch[1])))


def main() -> None:
    out = Path(sys.argv[1])
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(96, 8, generator=g)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).long() + (x[:, 2] > 1).long()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16)
    lens = fitlens.lightning.FitlensCallback(verbose=0)
    reference = Reference()
    trainer = pl.Trainer(
        strategy="ddp",
        accelerator="cpu",
        devices=2,
        max_epochs=2,
        callbacks=[lens, reference],
        enable_progress_bar=False,
        enable_checkpointing=False,
        logger=False,
        enable_model_summary=False,
    )
    trainer.fit(Module(), loader)
    everyone: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(everyone, reference.rows)
    rows = [r for part in everyone for r in part]
    means = []
    for epoch in range(2):
        mine = [(loss, n) for e, loss, n in rows if e == epoch]
        means.append(sum(loss * n for loss, n in mine) / sum(n for _, n in mine))
    result = {"history": lens.history.history, "reference": means, "rows": len(rows)}
    (out / f"lightning-rank{os.environ['RANK']}.json").write_text(json.dumps(result))


if __name__ == "__main__":
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # the tests' hang report
    main()
