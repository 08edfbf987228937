"""Lightning callbacks: embed the pool with a network when its training ends (:class:`EmbeddingCallback`), and
log one line per epoch where no progress bar can be drawn (:class:`EpochLog`).

Under DDP every process embeds its shard of the pool and the shards are all-gathered to rank 0, which
then runs the selection (:func:`imgselect.stages.select.select_stage`) and broadcasts the chosen indices.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import lightning.pytorch as pl
import numpy as np
import torch
import torch.distributed as dist

from imgselect.pool import PoolSource, scan
from imgselect.run.progress import Progress, format_duration

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
    index: torch.Tensor | np.ndarray | None = None,
) -> torch.Tensor:
    """Apply ``embed`` (an embedding or a prediction) to uint8 ``images`` in batches; returns ``(n, d)``
    float32 on the CPU. ``progress``: show it (:mod:`imgselect.run.progress`) under ``description``.

    ``index``: embed only ``images[index]``, gathered one batch at a time (a memory-mapped pool is never
    copied whole). The output is allocated once, when the first batch gives its width.
    """
    rows = torch.as_tensor(index, dtype=torch.long) if index is not None else None
    n = len(rows) if rows is not None else len(images)
    if n == 0:
        raise ValueError("no images to embed")
    out: torch.Tensor | None = None
    batches = (
        (images[rows[i : i + batch_size]] for i in range(0, n, batch_size))
        if rows is not None
        else scan(images, batch_size)  # a mapped pool: one batch resident at a time
    )
    with Progress(n, description, "images", enabled=progress) as bar:
        for i, batch in zip(range(0, n, batch_size), batches, strict=True):
            y = embed(batch.to(device, non_blocking=True)).float().cpu()
            if out is None:
                out = torch.empty((n, *y.shape[1:]), dtype=torch.float32)
            out[i : i + len(y)] = y
            bar.advance(len(batch))
    assert out is not None
    return out


class EmbeddingCallback(pl.Callback):
    """Embeds the datamodule's pool with the trained LightningModule when training ends.

    The LightningModule must offer ``embed(images) -> (n, d)``; the datamodule must be a
    :class:`~imgselect.pool.PoolSource`. After ``fit``, :attr:`embeddings` holds the pool embeddings
    (``(n, d)`` numpy) on rank 0 and ``None`` elsewhere.

    Args:
        batch_size: embedding batch size.
    """

    def __init__(self, batch_size: int = 512) -> None:
        self.batch_size = batch_size
        self.embeddings: np.ndarray | None = None
        self.seconds = 0.0

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        dm = getattr(trainer, "datamodule", None)
        if not isinstance(dm, PoolSource):
            raise TypeError(
                "EmbeddingCallback needs a datamodule with .pool, .val and .class_names (a PoolDataModule)"
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
            pool.images[rank::world],  # a strided view: no copy of the pool
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
        self.seconds = time.perf_counter() - t0
        if trainer.is_global_zero:
            if not torch.equal(idx, torch.arange(len(pool))):
                raise RuntimeError("gathered embeddings do not cover the pool exactly once")
            self.embeddings = emb.numpy()
            log.info("embedded %d images in %.1fs", len(pool), self.seconds)
        pl_module.train(was_training)


class EpochLog(pl.Callback):
    """One log line per epoch instead of a progress bar, for logs that go to a file (a cluster job).

    The line holds what the bar would show at the epoch's end (the metrics logged with ``prog_bar=True``,
    epoch averages), the time so far and the time left:
    ``classifier_fold0: epoch 3/15, train/loss 0.412, val/loss 0.455, val/acc 0.81, 12 s, 48 s left``.
    A fit of many epochs logs about :attr:`MAX_LINES` lines (every few epochs, and always the first and last).
    Rank 0 only.

    Args:
        stage: the name the lines start with (the Trainer's stage).
    """

    MAX_LINES = 20

    def __init__(self, stage: str) -> None:
        self.stage = stage
        self._start = 0.0

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        epoch = trainer.current_epoch + 1
        total = trainer.max_epochs if trainer.max_epochs is not None and trainer.max_epochs > 0 else 0
        every = -(-total // self.MAX_LINES) if total else 1
        if total and not (epoch == 1 or epoch == total or epoch % every == 0):
            return
        parts = [f"{self.stage}: epoch {epoch}/{total}" if total else f"{self.stage}: epoch {epoch}"]
        for name, value in sorted(trainer.progress_bar_metrics.items()):
            if not name.endswith("_step"):
                parts.append(f"{name.removesuffix('_epoch')} {float(value):.4g}")
        elapsed = time.perf_counter() - self._start
        parts.append(format_duration(elapsed))
        if epoch < total:
            parts.append(f"{format_duration(elapsed / epoch * (total - epoch))} left")
        log.info(", ".join(parts))
