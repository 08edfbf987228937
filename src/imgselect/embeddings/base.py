"""What an embedding is to the selection stage: a named, cacheable map from the pool to ``(n, d)`` vectors."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import lightning.pytorch as pl
import numpy as np

from imgselect.pool import ImageSet, PoolShard
from imgselect.run.runtime import TrainerFactory


@dataclass(frozen=True)
class EmbedContext:
    """What an embedding may use besides its own settings.

    Attributes:
        pool: the decoded pool.
        datamodule: the pool's datamodule (embeddings that train a network fit on it).
        out_dir: the job folder (pictures and checkpoints a person should see go here).
        seed: the job's seed.
        trainers: builds Lightning Trainers with the job's hardware and logger.
        shard: under DDP, this rank's block of the pool: an embedding that can (``pixels``) computes only
            those rows and says so (:attr:`EmbedOutput.shard`); ``None``: one process, or not sharded.
    """

    pool: ImageSet
    datamodule: pl.LightningDataModule
    out_dir: Path
    seed: int
    trainers: TrainerFactory
    shard: PoolShard | None = None


@dataclass
class EmbedOutput:
    """The result of :meth:`Embedding.compute`.

    Attributes:
        embeddings: ``(n_pool, d)`` float32, row ``i`` for pool image ``i``; ``None`` on DDP ranks other
            than 0 when the embedding was gathered to rank 0; only the rows of :attr:`shard` when set.
        shard: the block of the pool ``embeddings`` holds (each rank computed its own), or ``None``.
        files: files in the job folder to keep with the cached embeddings (a checkpoint, pictures).
        metrics: numbers for result.json (training losses, ...).
        timings: seconds of named sub-stages (``autoencoder``, ``embed``).
    """

    embeddings: np.ndarray | None
    files: list[Path] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    shard: PoolShard | None = None


@runtime_checkable
class Embedding(Protocol):
    """A way to turn pool images into vectors for the selectors.

    Attributes:
        name: what result.json and the cache call it.
        seeded: the vectors depend on the job's seed (trained or randomly initialised networks).
        cacheable: worth caching (False for embeddings that are a file already).
        from_pretraining: the vectors are the features of the job's pretraining (``pretrain=ssl``), which the
            pipeline computes there; :meth:`compute` is never called.
    """

    name: str
    seeded: bool
    cacheable: bool
    from_pretraining: bool

    def settings(self) -> dict[str, Any]:
        """Every setting that changes the vectors (the cache key and result.json use it)."""
        ...

    def compute(self, ctx: EmbedContext) -> EmbedOutput:
        """Embed ``ctx.pool``."""
        ...


@runtime_checkable
class PretrainingReadout(Protocol):
    """An embedding of the job's pretraining (``from_pretraining``) that may read the pretrained backbone itself
    (``embedding=ssl embedding.features=stages``)."""

    def readout(self, backbone: Path) -> Embedding | None:
        """The embedding that reads the ``backbone`` weights file, or ``None``: the pretraining's own vectors."""
        ...
