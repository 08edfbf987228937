"""The paper's embedding: the latent of a convolutional autoencoder trained on the pool."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import lightning.pytorch as pl
import torch

from imgselect.embeddings.base import EmbedContext, EmbedOutput
from imgselect.run.callbacks import EmbeddingCallback
from imgselect.run.runtime import is_rank_zero

log = logging.getLogger(__name__)


class EmbeddingModel(Protocol):
    """A LightningModule that maps uint8 images to vectors after training (``AutoencoderModule``)."""

    hparams: Any
    recon_dir: str | None

    def embed(self, x: torch.Tensor) -> torch.Tensor: ...


class AutoencoderEmbedding:
    """Train ``model`` on the pool for ``epochs``, then embed every pool image with it.

    Args:
        model: the autoencoder LightningModule (``conf/autoencoder``), freshly initialised.
        epochs: training epochs.
        batch_size: the training batch of the pool's loader (``data.batch_size``): it changes the weights,
            so it is part of the cache key.
        embed_batch_size: images per forward pass when embedding.
    """

    name = "autoencoder"
    seeded = True
    cacheable = True
    from_pretraining = False

    def __init__(
        self, model: EmbeddingModel, epochs: int, batch_size: int, embed_batch_size: int = 512
    ) -> None:
        if epochs < 1:
            raise ValueError(f"fit.autoencoder.epochs={epochs} must be at least 1")
        self.model, self.epochs, self.batch_size, self.embed_batch_size = (
            model,
            epochs,
            batch_size,
            embed_batch_size,
        )

    def settings(self) -> dict[str, Any]:
        hparams = {
            k: list(v) if isinstance(v, Sequence) and not isinstance(v, str) else v
            for k, v in dict(self.model.hparams).items()
        }  # plain values: config lists become lists, for JSON and the cache key
        return {**hparams, "epochs": self.epochs, "train_batch_size": self.batch_size}

    def compute(self, ctx: EmbedContext) -> EmbedOutput:
        model: Any = self.model
        model.recon_dir = str(ctx.out_dir)
        callback = EmbeddingCallback(self.embed_batch_size)
        trainer: pl.Trainer = ctx.trainers("autoencoder", self.epochs, [callback])
        t0 = time.perf_counter()
        trainer.fit(model, datamodule=ctx.datamodule)
        fit_s = time.perf_counter() - t0
        # training metrics only: the validation loss depends on the validation set, which is not in the cache
        # key, so a later cache hit must not report it as its own
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("ae/train")}
        ckpt = ctx.out_dir / "autoencoder.ckpt"
        if is_rank_zero():
            # may be a hard link into the cache (an earlier job in this folder): never write through it
            ckpt.unlink(missing_ok=True)
        trainer.save_checkpoint(ckpt, weights_only=True)  # every process calls it (a barrier); rank 0 writes
        files = [ckpt] + [p for p in [Path(ctx.out_dir) / "reconstructions.png"] if p.exists()]
        return EmbedOutput(
            embeddings=callback.embeddings,
            files=files,
            metrics=metrics,
            timings={"autoencoder": fit_s - callback.seconds, "embed": callback.seconds},
        )
