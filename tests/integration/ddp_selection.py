"""Run the autoencoder + embedding callback + selection stage on a tiny pool, single-process or DDP (2 CPU processes, gloo).

Used by test_ddp.py in a subprocess (DDP relaunches the running script, so it cannot run inside pytest).

    python ddp_selection.py OUT_DIR DEVICES

Writes the selection rank 0 made (indices.txt), the one each process received (rank<N>.txt), and the
weights every process embedded with (weights.pt), so the test can redo the selection in one process.
"""

from __future__ import annotations

import sys
from pathlib import Path

import lightning.pytorch as pl
import torch

from datamodules.pool import PoolDataModule
from imgselect.pool import ImageSet
from imgselect.run.callbacks import EmbeddingCallback
from imgselect.selection import KMeansSelector
from imgselect.stages.select import select_stage
from lightning_modules import AutoencoderModule


class SyntheticPool(PoolDataModule):
    """101 images (odd, so DDP shards need padding) of four kinds of pattern plus noise."""

    def load(self) -> tuple[ImageSet, ImageSet, list[str]]:
        g = torch.Generator().manual_seed(0)
        n, s = 101, self.image_size
        base = torch.zeros(4, 3, s, s)
        base[0, 0, : s // 2] = 1
        base[1, 1, :, : s // 2] = 1
        base[2, 2, s // 4 : 3 * s // 4, s // 4 : 3 * s // 4] = 1
        base[3] = 0.5
        x = base[torch.arange(n) % 4] + 0.2 * torch.rand(n, 3, s, s, generator=g)
        imgs = (x.clamp(0, 1) * 255).to(torch.uint8)
        return (
            ImageSet(imgs, [f"img{i}" for i in range(n)]),
            ImageSet(imgs[:8], [f"v{i}" for i in range(8)]),
            ["a", "b"],
        )


def main() -> None:
    out_dir, devices = Path(sys.argv[1]), int(sys.argv[2])
    pl.seed_everything(0)
    model = AutoencoderModule(image_size=16, channels=(8, 16), latent_dim=32)
    cb = EmbeddingCallback(batch_size=16)
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=devices,
        strategy="ddp" if devices > 1 else "auto",
        max_epochs=1,
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
        limit_val_batches=0,
        enable_model_summary=False,
        callbacks=[cb],
    )
    dm = SyntheticPool(image_size=16, batch_size=16)
    trainer.fit(model, datamodule=dm)
    # rank 0 holds the gathered embeddings, the others none; the selection stage decides on rank 0 and
    # broadcasts, so every process ends with rank 0's selection
    assert (cb.embeddings is not None) == trainer.is_global_zero
    selection = select_stage(
        KMeansSelector(budget=10, pick="random", seed=3), dm.pool, cb.embeddings, 2, out_dir
    )
    assert len(selection) == 10
    if trainer.is_global_zero:
        torch.save(model.state_dict(), out_dir / "weights.pt")
        (out_dir / "indices.txt").write_text(",".join(map(str, selection.indices.tolist())))
    (out_dir / f"rank{trainer.global_rank}.txt").write_text(",".join(map(str, selection.indices.tolist())))


if __name__ == "__main__":
    main()
