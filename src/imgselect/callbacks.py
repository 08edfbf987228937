"""The selection callback: when the autoencoder finishes training, embed the pool and pick the images.

Under DDP every process embeds its shard of the pool; the shards are all-gathered, rank 0 runs
K-means and the pick rule, and the chosen indices are broadcast, so every process ends with the
same selection. Only rank 0 writes files.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch
import torch.distributed as dist
from rich.progress import track

from imgselect.artifacts import save_contact_sheet, write_selection_csv
from imgselect.pool import ImageSet, PoolSource
from imgselect.selection.selectors import KMeansSelector, RandomSelector, Selection

log = logging.getLogger(__name__)

Embedder = Callable[[torch.Tensor], torch.Tensor]


@torch.no_grad()
def embed_images(
    embed: Embedder,
    images: torch.Tensor,
    batch_size: int = 512,
    device: torch.device | str = "cpu",
    progress: bool = True,
    description: str = "Embedding pool",
) -> torch.Tensor:
    """Apply ``embed`` (an embedding or a prediction) to uint8 ``images`` in batches; returns ``(n, d)``
    float32 on the CPU."""
    out = []
    starts = range(0, len(images), batch_size)
    it = track(starts, description=description, transient=True) if progress else starts
    for i in it:
        out.append(embed(images[i : i + batch_size].to(device, non_blocking=True)).float().cpu())
    if not out:
        raise ValueError("no images to embed")
    return torch.cat(out)


def write_selection(out_dir: str | Path, selection: Selection, pool: ImageSet) -> dict[str, str]:
    """Write ``selection.csv`` and ``selection.png`` (contact sheet of the chosen images); return their paths."""
    out_dir = Path(out_dir)
    csv_path = out_dir / "selection.csv"
    write_selection_csv(csv_path, selection, pool.ids)
    sheet = save_contact_sheet(out_dir / "selection.png", pool.images[torch.as_tensor(selection.indices)])
    return {"selection_csv": str(csv_path), "contact_sheet": str(sheet)}


class SelectionCallback(pl.Callback):
    """Embeds the datamodule's pool with the trained autoencoder and runs ``selector`` on it.

    The LightningModule must offer ``embed(images) -> (n, d)``; the datamodule must be a
    :class:`~imgselect.pool.PoolSource`. After ``fit``, :attr:`selection` holds the result on every
    process and :attr:`embeddings` holds the pool embeddings (``(n, d)`` numpy, rank 0 only).

    Args:
        selector: the selector to run on the embeddings.
        out_dir: run folder for ``selection.csv`` and the contact sheet (``None``: write nothing).
        batch_size: embedding batch size.
    """

    def __init__(
        self,
        selector: KMeansSelector | RandomSelector,
        out_dir: str | Path | None = None,
        batch_size: int = 512,
    ) -> None:
        self.selector = selector
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.batch_size = batch_size
        self.selection: Selection | None = None
        self.embeddings: np.ndarray | None = None
        self.timings: dict[str, float] = {}
        self.outputs: dict[str, str] = {}

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        dm = getattr(trainer, "datamodule", None)
        if not isinstance(dm, PoolSource):
            raise TypeError(
                "SelectionCallback needs a datamodule with .pool, .val and .class_names (a PoolDataModule)"
            )
        pool = dm.pool
        world, rank = trainer.world_size, trainer.global_rank
        was_training = pl_module.training
        pl_module.eval()
        if world > 1 and dist.is_available() and dist.is_initialized():
            # Each process updated its own BatchNorm statistics in its last step; make every process
            # embed with rank 0's, or the gathered shards would come from different models.
            for buf in pl_module.buffers():
                dist.broadcast(buf, src=0)

        t0 = time.perf_counter()
        local = torch.arange(rank, len(pool), world)
        shard = len(pool) // world + (len(pool) % world > 0)
        emb = embed_images(
            pl_module.embed,  # type: ignore[arg-type]
            pool.images[local],
            self.batch_size,
            pl_module.device,
            progress=trainer.is_global_zero,
        )
        n_pad = shard - len(local)
        idx = torch.cat([local, torch.full((n_pad,), -1, dtype=torch.long)])
        emb = torch.cat([emb, emb.new_zeros((n_pad, emb.shape[1]))])
        if world > 1:
            all_emb = trainer.strategy.all_gather(emb.to(pl_module.device)).reshape(-1, emb.shape[1]).cpu()
            all_idx = trainer.strategy.all_gather(idx.to(pl_module.device)).reshape(-1).cpu()
            keep = all_idx >= 0
            order = torch.argsort(all_idx[keep])
            emb, idx = all_emb[keep][order], all_idx[keep][order]
        self.timings["embed_s"] = time.perf_counter() - t0

        selection = None
        if trainer.is_global_zero:
            if not torch.equal(idx, torch.arange(len(pool))):
                raise RuntimeError("gathered embeddings do not cover the pool exactly once")
            self.embeddings = emb.numpy()
            t1 = time.perf_counter()
            selection = self.selector.select(len(pool), self.embeddings, source=pool.source)
            self.timings["select_s"] = time.perf_counter() - t1
            if self.out_dir is not None:
                self.outputs = write_selection(self.out_dir, selection, pool)
            log.info(
                "selected %d of %d images in %.1fs (embed %.1fs, K-means + pick %.1fs)",
                len(selection),
                len(pool),
                time.perf_counter() - t0,
                self.timings["embed_s"],
                self.timings["select_s"],
            )
        self.selection = trainer.strategy.broadcast(selection, src=0)
        pl_module.train(was_training)
