"""The decoded pool on disk: one memory-mapped uint8 file, decoded once and shared by later jobs and DDP processes.

A pool of a million 64×64 images is 12 GB of uint8 pixels. Held as an in-memory tensor, every job of a sweep
and every DDP process would decode it again and hold its own copy. Instead the decoder writes each image, in
order, straight into ``images.u8`` of a cache entry (``<cache>/pools/<key>/``); jobs map that file read-only
(copy-on-write: an accidental in-place write changes the process's private copy, never the file). The pages
live in the operating system's page cache, shared by every process that maps the file and reclaimable when
memory is short, so a pool larger than the free memory still works (at the speed of the disk).

The key is the listing: every file's path, size and modification time, the image size and the decoder's
version; a changed, added or removed file decodes the pool again. The first job to need an entry builds it
under a lock; the others wait for it and map it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from imgselect.io.cache import CacheEntry, cache_key
from imgselect.pool import FINGERPRINT_CHUNK, register_map

log = logging.getLogger(__name__)

STORE_VERSION = (
    2  # 2: skipped-file reasons name the file. Bump when the decoding changes what a file's pixels are
)
KIND = "pools"
IMAGES = "images.u8"
META = "meta.json"
IDS = "ids.txt"
HASHES = "hashes.txt"


class ImageSink(Protocol):
    """Where a decoder puts its images, one ``(3, size, size)`` uint8 array at a time, in pool order."""

    def write(self, image: np.ndarray) -> None: ...


class ArraySink:
    """An in-memory sink: a preallocated ``(capacity, 3, size, size)`` array filled in order (no list of
    arrays stacked at the end, which would hold the pool twice)."""

    def __init__(self, capacity: int, size: int) -> None:
        self.array = np.empty((capacity, 3, size, size), dtype=np.uint8)
        self.count = 0

    def write(self, image: np.ndarray) -> None:
        self.array[self.count] = image
        self.count += 1

    def tensor(self) -> torch.Tensor:
        """The images written so far (a view, not a copy)."""
        return torch.from_numpy(self.array[: self.count])


class FileSink:
    """A sink that appends each image's bytes to a file (sequential writes: nothing held in memory)."""

    def __init__(self, path: Path, size: int) -> None:
        self.path = path
        self.shape = (3, size, size)
        self.count = 0
        self._f = path.open("wb", buffering=1 << 22)

    def write(self, image: np.ndarray) -> None:
        if image.shape != self.shape or image.dtype != np.uint8:
            raise ValueError(f"expected a {self.shape} uint8 image, got {image.dtype} {image.shape}")
        self._f.write(np.ascontiguousarray(image).data)
        self.count += 1

    def close(self) -> None:
        self._f.close()


def files_key(paths: Sequence[Path], size: int, **extra: object) -> str:
    """Key of a pool decoded from ``paths``: each file's path, size and modification time (no file is read),
    the image size, the store's version and ``extra`` (anything else that changes the pixels)."""
    listing = []
    for p in paths:
        st = os.stat(p)
        listing.append((str(p), st.st_size, st.st_mtime_ns))
    return cache_key(version=STORE_VERSION, size=size, files=listing, **extra)


def map_images(path: Path, n: int, size: int) -> torch.Tensor:
    """``path`` (``n`` images of ``3×size×size`` bytes) as a ``(n, 3, size, size)`` uint8 tensor backed by the
    file (copy-on-write: writes stay private to the process)."""
    expected = n * 3 * size * size
    actual = path.stat().st_size
    if actual != expected:
        raise RuntimeError(
            f"{path} holds {actual:,} bytes, not the {expected:,} of {n:,} images of 3x{size}x{size}: the "
            f"decoded pool is damaged; delete its folder {path.parent} (or run `python -m imgselect.io.cache "
            f"clear --kind pools --yes`) and it is decoded again"
        )
    if n == 0:
        return torch.empty((0, 3, size, size), dtype=torch.uint8)
    array = np.memmap(path, dtype=np.uint8, mode="c", shape=(n, 3, size, size))
    register_map(array.ctypes.data, array._mmap, expected)  # type: ignore[attr-defined]
    with warnings.catch_warnings():  # a copy-on-write map is writable; torch only warns for read-only arrays
        warnings.simplefilter("ignore")
        return torch.from_numpy(array)


@dataclass
class StoredPool:
    """A decoded pool as the store holds it.

    Attributes:
        images: ``(n, 3, size, size)`` uint8, mapped from ``path / images.u8``.
        ids: one string per image.
        kept: position of each image in the listing it was decoded from.
        skipped: ``(file, reason)`` of every listed file that could not be decoded.
        hashes: each image's content hash.
        fingerprint: :meth:`imgselect.pool.ImageSet.fingerprint` of these images and ids (computed once, at
            build time, by streaming the file).
        path: the entry's folder.
        built: this call decoded the pool (False: it was mapped from an earlier job's entry).
    """

    images: torch.Tensor
    ids: list[str]
    kept: list[int]
    skipped: list[tuple[str, str]]
    hashes: list[str]
    fingerprint: str
    path: Path
    built: bool


Decoder = Callable[[ImageSink], tuple[list[int], list[tuple[str, str]], list[str]]]


def stored_pool(
    cache_root: str | Path, key: str, size: int, decode: Decoder, ids_of: Callable[[list[int]], list[str]]
) -> StoredPool:
    """Map the pool of ``key`` from the store, decoding it first if no job has.

    Args:
        cache_root: the cache root (``paths.cache_dir``); the entry is ``cache_root/pools/<key>``.
        key: see :func:`files_key`.
        size: side of the square images.
        decode: writes every readable image into the sink it is given, in order, and returns ``(kept,
            skipped, hashes)`` (as :func:`datamodules.images.decode_into` does).
        ids_of: the ids of the kept listing positions.
    """
    entry = CacheEntry(cache_root, KIND, key, [IMAGES, META, IDS, HASHES])
    built = False
    with entry.lock():  # the first job (or DDP process) decodes; the others wait here, then map its file
        if not entry.complete():
            with entry.writing() as tmp:
                sink = FileSink(tmp / IMAGES, size)
                try:
                    kept, skipped, hashes = decode(sink)
                finally:
                    sink.close()
                ids = ids_of(kept)
                fingerprint = file_fingerprint(tmp / IMAGES, (sink.count, 3, size, size), ids)
                (tmp / IDS).write_text("".join(f"{i}\n" for i in ids), encoding="utf-8")
                (tmp / HASHES).write_text("".join(f"{h}\n" for h in hashes), encoding="ascii")
                meta = {
                    "version": STORE_VERSION,
                    "n": sink.count,
                    "size": size,
                    "fingerprint": fingerprint,
                    "kept": kept,
                    "skipped": skipped,
                }
                (tmp / META).write_text(json.dumps(meta), encoding="utf-8")
            built = True
            log.info("decoded pool stored at %s (%d images, %s)", entry.path, len(kept), _gib(entry.path))
    meta = json.loads((entry.path / META).read_text(encoding="utf-8"))
    n = int(meta["n"])
    ids = (entry.path / IDS).read_text(encoding="utf-8").splitlines()
    hashes = (entry.path / HASHES).read_text(encoding="ascii").splitlines()
    if len(ids) != n or len(hashes) != n or int(meta["size"]) != size:
        raise RuntimeError(
            f"the decoded pool at {entry.path} is inconsistent ({n} images, {len(ids)} ids, {len(hashes)} "
            f"hashes, size {meta['size']} for {size}); delete that folder (or run `python -m imgselect.io.cache "
            f"clear --kind pools --yes`) and it is decoded again"
        )
    if not built:
        log.info("pool: mapping the decoded images at %s (decoded by an earlier job)", entry.path)
    return StoredPool(
        images=map_images(entry.path / IMAGES, n, size),
        ids=ids,
        kept=[int(i) for i in meta["kept"]],
        skipped=[(str(f), str(r)) for f, r in meta["skipped"]],
        hashes=hashes,
        fingerprint=str(meta["fingerprint"]),
        path=entry.path,
        built=built,
    )


def file_fingerprint(path: Path, shape: tuple[int, ...], ids: list[str]) -> str:
    """:meth:`imgselect.pool.ImageSet.fingerprint` of the images stored in ``path`` (C order, ``shape``),
    read a chunk at a time (through the page cache: nothing mapped, one chunk in memory)."""
    h = hashlib.sha256()
    h.update(str(shape).encode())
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(FINGERPRINT_CHUNK), b""):
            h.update(chunk)
    h.update("\n".join(ids).encode())
    return h.hexdigest()[:16]


def _gib(folder: Path) -> str:
    size = (folder / IMAGES).stat().st_size
    return f"{size / 2**30:.2f} GiB" if size >= 2**30 else f"{size / 2**20:.1f} MiB"
