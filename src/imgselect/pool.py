"""What the core needs to know about an image pool, independent of where the images came from."""

from __future__ import annotations

import hashlib
import mmap
import weakref
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np
import torch


@dataclass
class ImageSet:
    """Decoded images, in memory or mapped from the pool store (:mod:`imgselect.io.poolstore`).

    Attributes:
        images: ``(n, 3, h, w)`` uint8 tensor; read-only by contract (a mapped pool's pages are dropped
            after scans, :func:`scan`, which would also drop a write).
        ids: one string per image (a file path, or ``train:123`` for a dataset index).
        labels: ``(n,)`` int64 class indices, or ``None`` when unknown.
        source: where the images came from, for messages (a folder path, a dataset name).
        skipped: ``(path, reason)`` of every file that could not be read.
        hashes: a content hash of each image (:func:`content_hash` of its file's bytes, or of its raw
            pixels for a dataset without files), or ``None``. A person's labels are keyed by it, so they
            survive a moved folder, a re-run, a cleared cache and a grown pool.
        known_fingerprint: :meth:`fingerprint`, when the caller computed it already (the pool store does,
            once, when it decodes the pool), so a job does not read every pixel again to key its caches.
    """

    images: torch.Tensor
    ids: list[str]
    labels: np.ndarray | None = None
    source: str = "the pool"
    skipped: list[tuple[str, str]] = field(default_factory=list)
    hashes: list[str] | None = None
    known_fingerprint: str | None = field(default=None, repr=False)

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
        if self.known_fingerprint is None:
            self.known_fingerprint = stream_fingerprint(self.images, self.ids)
        return self.known_fingerprint


@dataclass(frozen=True)
class PoolShard:
    """The block of pool rows one rank of a DDP job embeds and clusters: ``[start, stop)`` of ``total``.

    Blocks are contiguous (a mapped pool or embedding file is read in one run of pages) and as even as
    possible: the first ``total % world`` ranks hold one row more.
    """

    rank: int
    world: int
    start: int
    stop: int
    total: int

    @classmethod
    def of(cls, total: int, rank: int, world: int) -> PoolShard:
        """Rank ``rank``'s block of a pool of ``total`` rows split over ``world`` ranks."""
        if world < 1 or not 0 <= rank < world or total < 0:
            raise ValueError(f"no shard {rank} of {world} for a pool of {total}")
        base, extra = divmod(total, world)
        start = rank * base + min(rank, extra)
        return cls(rank, world, start, start + base + (rank < extra), total)

    def __len__(self) -> int:
        return self.stop - self.start

    @property
    def rows(self) -> slice:
        return slice(self.start, self.stop)


FINGERPRINT_CHUNK = 1 << 26  # bytes hashed at a time (64 MiB): no copy of the whole pool


def stream_fingerprint(images: torch.Tensor, ids: list[str]) -> str:
    """:meth:`ImageSet.fingerprint` of ``images`` and ``ids``: sha256 of the shape, the pixels (in chunks of
    whole images, read where they lie: a memory-mapped pool is never copied) and the ids."""
    h = hashlib.sha256()
    h.update(str(tuple(images.shape)).encode())
    per_image = max(1, images[0].numel() if len(images) else 1)
    step = max(1, FINGERPRINT_CHUNK // per_image)
    for chunk in scan(images, step):
        h.update(chunk.contiguous().numpy().data)  # contiguous already: no copy
    h.update("\n".join(ids).encode())
    return h.hexdigest()[:16]


# start address -> (weak reference to the mmap, length) of every pool file mapped in this process
# (imgselect.io.poolstore.map_images). Weak: a job that lets go of its pool (the next job of a sweep run in the same
# process maps it again) unmaps it; the entry is dropped then.
_MAPS: dict[int, tuple[weakref.ref[mmap.mmap], int]] = {}


def register_map(address: int, mapping: mmap.mmap, length: int) -> None:
    """Tell :func:`drop_pages` that ``length`` bytes at ``address`` are the file mapping ``mapping``."""
    _MAPS[address] = (weakref.ref(mapping, lambda _: _MAPS.pop(address, None)), length)


def drop_pages(images: torch.Tensor) -> None:
    """Let go of the resident pages of ``images`` when they are a slice of a mapped pool (else nothing).

    A scan over the whole pool (an embedding, the hashes) would otherwise leave every page it read counted
    in the process's memory, the pool's size on top of what the stage builds. The pages stay in the page
    cache (shared, reclaimable); reading them again costs a page fault, not a disk read, while memory allows.
    """
    if images.numel() == 0:
        return
    start = images.data_ptr()
    for base, (ref, length) in list(_MAPS.items()):
        mm = ref()
        if mm is not None and base <= start < base + length:
            page = mmap.PAGESIZE
            lo = ((start - base) // page) * page
            hi = min(length, start - base + images.numel())  # bytes: uint8, contiguous rows
            if hi > lo:
                mm.madvise(mmap.MADV_DONTNEED, lo, hi - lo)
            return


def scan(images: torch.Tensor, batch: int) -> Iterator[torch.Tensor]:
    """``images`` a ``batch`` of rows at a time, in order; each batch's pages are dropped once the caller is
    done with it (:func:`drop_pages`), so a scan of a mapped pool holds one batch, not the pool."""
    for i in range(0, len(images), batch):
        chunk = images[i : i + batch]
        yield chunk
        if chunk.is_contiguous():
            drop_pages(chunk)


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

    def extraction(self) -> Extraction | None:
        """How the pool's images were made from the source, when the datamodule made them (a video's
        person crops); ``None`` for a pool read as it is (a folder, a dataset)."""
        ...


@dataclass(frozen=True)
class Extraction:
    """How a datamodule made its pool's images from its source (person crops of videos).

    Attributes:
        manifest: one row per pool image, header first: the job folder's ``manifest.csv``.
        info: what the extraction did, for ``result.json`` (videos, frames, crops).
    """

    manifest: list[list[object]]
    info: dict[str, object]
