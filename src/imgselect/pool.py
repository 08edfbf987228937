"""What the core needs to know about an image pool, independent of where the images came from."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np
import torch


@dataclass
class ImageSet:
    """Decoded images held in memory.

    Attributes:
        images: ``(n, 3, h, w)`` uint8 tensor.
        ids: one string per image (a file path, or ``train:123`` for a dataset index).
        labels: ``(n,)`` int64 class indices, or ``None`` when unknown.
        source: where the images came from, for messages (a folder path, a dataset name).
        skipped: ``(path, reason)`` of every file that could not be read.
        hashes: a content hash of each image (:func:`content_hash` of its file's bytes, or of its raw
            pixels for a dataset without files), or ``None``. A person's labels are keyed by it, so they
            survive a moved folder, a re-run, a cleared cache and a grown pool.
    """

    images: torch.Tensor
    ids: list[str]
    labels: np.ndarray | None = None
    source: str = "the pool"
    skipped: list[tuple[str, str]] = field(default_factory=list)
    hashes: list[str] | None = None

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4 or self.images.shape[1] != 3:
            raise ValueError(
                f"images must be a (n, 3, h, w) uint8 tensor, got {self.images.dtype} {tuple(self.images.shape)}"
            )
        if len(self.ids) != len(self.images):
            raise ValueError(f"{len(self.ids)} ids for {len(self.images)} images")
        if self.labels is not None and len(self.labels) != len(self.images):
            raise ValueError(f"{len(self.labels)} labels for {len(self.images)} images")
        if self.hashes is not None and len(self.hashes) != len(self.images):
            raise ValueError(f"{len(self.hashes)} content hashes for {len(self.images)} images")

    def __len__(self) -> int:
        return len(self.images)

    def fingerprint(self) -> str:
        """A short hash of the pixels and ids: equal pools have equal fingerprints (used as a cache key)."""
        h = hashlib.sha256()
        h.update(str(tuple(self.images.shape)).encode())
        h.update(self.images.contiguous().numpy().tobytes())
        h.update("\n".join(self.ids).encode())
        return h.hexdigest()[:16]


HASH_CHARS = 16  # 64 bits: a collision among a million images has odds of about 3e-8


def content_hash(data: bytes) -> str:
    """The key of an image's labels: sha256 of its file's bytes (or raw pixels), first 16 hex digits."""
    return hashlib.sha256(data).hexdigest()[:HASH_CHARS]


@runtime_checkable
class PoolSource(Protocol):
    """A datamodule that holds an unlabeled pool and a labeled validation set (after ``setup``)."""

    pool: ImageSet
    val: ImageSet
    class_names: list[str]
