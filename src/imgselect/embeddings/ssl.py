"""Self-supervised pretraining on the pool (``pretrain=ssl``): its pooled features are an embedding for the
selection (``embedding=ssl``) and its backbone the classifier's starting point (``classifier.pretrained=ssl``).

Trained once per (pool, settings, seed, precision) and cached like the autoencoder; the backbone's weights go
to ``ssl_backbone.safetensors`` in the job folder (a link into the cache) with ``ssl_backbone.json`` (its
settings). When the pool's labels are known (a benchmark, or a labeled folder), a k-NN probe on a held-out
part of the pool says whether the features learned anything: labels are used for that diagnosis only.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Protocol

import torch
from torch.utils.data import DataLoader, TensorDataset

from imgselect.embeddings.backbone import READOUTS, BackboneEmbedding
from imgselect.embeddings.base import EmbedContext, EmbedOutput
from imgselect.embeddings.probe import probe_if_labeled
from imgselect.io.artifacts import atomic_path, write_json_atomic
from imgselect.run.callbacks import embed_images
from imgselect.run.runtime import is_rank_zero

BACKBONE_FILE = "ssl_backbone.safetensors"
BACKBONE_INFO = "ssl_backbone.json"


class PretrainModel(Protocol):
    """A self-supervised LightningModule (``SimCLRModule``, ``BYOLModule``)."""

    hparams: Any
    device: torch.device

    def embed(self, x: torch.Tensor) -> torch.Tensor: ...
    def backbone_state(self) -> dict[str, torch.Tensor]: ...


class SSLEmbedding:
    """Pretrain ``model`` on the pool for ``epochs`` (its own loader: ``batch_size``, shuffled, last partial
    batch dropped), then embed every pool image with its backbone.

    Args:
        model: a fresh ``SimCLRModule`` (``conf/pretrain/ssl.yaml``) or ``BYOLModule`` (``byol.yaml``).
        epochs: pretraining epochs.
        batch_size: images per step (each gives two views; more negatives per batch help SimCLR).
        embed_batch_size: images per forward pass when embedding.
        probe_k: k of the k-NN probe (run when the pool's labels are known).
    """

    name = "ssl"
    seeded = True
    cacheable = True
    from_pretraining = False

    def __init__(
        self,
        model: PretrainModel,
        epochs: int,
        batch_size: int = 256,
        embed_batch_size: int = 512,
        probe_k: int = 10,
    ) -> None:
        if epochs < 1:
            raise ValueError(f"fit.pretrain.epochs={epochs} must be at least 1")
        if batch_size < 2:
            raise ValueError(f"pretrain.batch_size={batch_size} must be at least 2 (each image's partner view "
                             f"is told apart from the other images of its batch)")  # fmt: skip
        self.model, self.epochs, self.batch_size = model, epochs, batch_size
        self.embed_batch_size, self.probe_k = embed_batch_size, probe_k

    def settings(self) -> dict[str, Any]:
        hparams = {k: (list(v) if isinstance(v, tuple) else v) for k, v in dict(self.model.hparams).items()}
        return {**hparams, "epochs": self.epochs, "batch_size": self.batch_size, "probe_k": self.probe_k}

    def compute(self, ctx: EmbedContext) -> EmbedOutput:
        pool = ctx.pool
        if len(pool) < self.batch_size:
            raise ValueError(
                f"pretrain.batch_size={self.batch_size} exceeds the pool ({len(pool)} images in {pool.source}); "
                f"lower it"
            )
        model: Any = self.model
        loader = DataLoader(
            TensorDataset(pool.images, torch.arange(len(pool))),
            batch_size=self.batch_size,
            shuffle=True,
            drop_last=True,
        )
        trainer = ctx.trainers("pretrain", self.epochs, [])
        t0 = time.perf_counter()
        trainer.fit(model, train_dataloaders=loader)
        fit_s = time.perf_counter() - t0
        metrics: dict[str, Any] = {
            k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("ssl/train_loss")
        }
        t1 = time.perf_counter()
        feats = embed_images(model.embed, pool.images, self.embed_batch_size, model.device, is_rank_zero())
        embed_s = time.perf_counter() - t1
        embeddings = feats.numpy()
        metrics.update(
            probe_if_labeled(embeddings, pool.labels, self.probe_k, ctx.seed, "pretraining: its features")
        )
        files: list[Path] = []
        if is_rank_zero():
            from safetensors.torch import save_file

            # written beside and renamed over: atomic, and never through a hard link into the cache
            weights = ctx.out_dir / BACKBONE_FILE
            with atomic_path(weights) as tmp:
                save_file(model.backbone_state(), str(tmp))
            info = ctx.out_dir / BACKBONE_INFO
            write_json_atomic(info, {"settings": self.settings(), "metrics": metrics})
            files = [weights, info]
        return EmbedOutput(
            embeddings=embeddings, files=files, metrics=metrics, timings={"pretrain": fit_s, "embed": embed_s}
        )


class PretrainedEmbedding:
    """``embedding=ssl``: the features of the job's pretraining (``pretrain=ssl``).

    Args:
        features: ``pooled``: the backbone's pooled head, the vectors the pretraining computed itself;
            ``stages``: its stages from stride 4 on as well (:func:`imgselect.embeddings.backbone.stage_features`),
            read from the pretrained backbone's file by a :class:`BackboneEmbedding` (cached by the file's hash).
        model: the pretraining's timm architecture (SimCLR's: the classifier's ``mobilenetv2_100``).
    """

    name = "ssl"
    seeded = True
    cacheable = False
    from_pretraining = True

    def __init__(self, features: str = "pooled", model: str = "mobilenetv2_100") -> None:
        if features not in READOUTS:
            raise ValueError(f"embedding.features={features!r}: use one of {', '.join(READOUTS)}")
        self.features, self.model = features, model

    def settings(self) -> dict[str, Any]:
        return {"from": "pretrain", "features": self.features}

    def readout(self, backbone: Path) -> BackboneEmbedding | None:
        """The embedding that reads the pretrained ``backbone`` file, or ``None`` for the pooled features the
        pretraining computed already."""
        if self.features == "pooled":
            return None
        return BackboneEmbedding(model=self.model, weights=str(backbone), features=self.features)

    def compute(self, ctx: EmbedContext) -> EmbedOutput:
        raise ValueError(
            "embedding=ssl uses the features of the pretraining: add pretrain=ssl (SimCLR) or pretrain=byol"
        )
