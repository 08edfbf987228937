"""Decoding, resizing and serving images held in memory as uint8 tensors."""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from imgselect.pool import content_hash
from imgselect.poolstore import ArraySink, ImageSink, files_key, stored_pool
from imgselect.progress import track
from imgselect.runtime import is_rank_zero

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
DECODE_CHUNK = 4096  # files submitted to the decoding threads at a time


def resize_uint8(images: torch.Tensor, size: int, batch: int = 4096) -> torch.Tensor:
    """Resize ``(n, c, h, w)`` uint8 images to ``size``×``size`` (bilinear, antialiased); grey becomes RGB."""
    if images.ndim != 4:
        raise ValueError(f"expected (n, c, h, w) images, got shape {tuple(images.shape)}")
    if images.shape[1] == 1:
        images = images.expand(-1, 3, -1, -1)
    if images.shape[-2:] == (size, size):
        return images.contiguous()
    out = torch.empty((len(images), 3, size, size), dtype=torch.uint8)
    for i in range(0, len(images), batch):
        x = images[i : i + batch].float()
        y = torch.nn.functional.interpolate(
            x, size=(size, size), mode="bilinear", antialias=True, align_corners=False
        )
        out[i : i + batch] = y.round_().clamp_(0, 255).to(torch.uint8)
    return out


def to_8bit(im: Image.Image) -> Image.Image:
    """A high-bit-depth or float greyscale image scaled to 8-bit ``L``; other modes are returned unchanged.

    PIL's ``convert`` clips these modes to 0..255 instead of scaling them (a 0..65535 ramp would come out
    nearly all white). Each mode is scaled by the range of its format, not stretched to the image's own
    minimum and maximum, so a dark 16-bit image stays dark:

    - ``I;16``, ``I;16B``, ... (16-bit PNG and TIFF): ``value / 257`` (65535 -> 255).
    - ``I`` (32-bit integer: 16-bit PNGs in older Pillow versions, PGM, TIFF): read as 16-bit, negative
      values clipped to 0; an image with values above 65535 holds more than 16 bits and is scaled by its
      own maximum instead.
    - ``F`` (32-bit float, TIFF): ``[0, 1]`` data when every value lies in it (``value × 255``), else already
      on the 0..255 scale (clipped to it); NaN counts as 0.
    """
    if not (im.mode.startswith("I;16") or im.mode in ("I", "F")):
        return im
    a = np.asarray(im).astype(np.float64)
    if im.mode == "F":
        a = np.nan_to_num(a, nan=0.0, posinf=255.0, neginf=0.0)
        scaled = a * 255.0 if a.size and a.min() >= 0.0 and a.max() <= 1.0 else a
    else:
        a = np.clip(a, 0, None)
        top = float(a.max(initial=0.0))
        scaled = a * (255.0 / (top if top > 65535 else 65535))
    return Image.fromarray(np.rint(np.clip(scaled, 0, 255)).astype(np.uint8))


def decode_image(path: str | Path | io.BytesIO, size: int) -> np.ndarray:
    """Read any image file as RGB, resized to ``size``×``size``: a ``(3, size, size)`` uint8 array.

    16-bit, 32-bit integer and float images are scaled to 8 bits first (see :func:`to_8bit`).

    Raises:
        OSError, ValueError, UnidentifiedImageError: the file is unreadable or not an image.
    """
    with Image.open(path) as f:
        f.load()
        im: Image.Image = to_8bit(f)
        if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
            bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
            im = Image.alpha_composite(bg, im.convert("RGBA"))
        rgb = im.convert("RGB").resize((size, size), Image.Resampling.BILINEAR, reducing_gap=2.0)
    return np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1).copy()


class DecodedFiles(NamedTuple):
    """What :func:`load_image_files` read: the ``(m, 3, size, size)`` tensor, the positions in ``paths`` of
    the ``m`` readable files, ``(path, reason)`` for each skipped file and the readable files' content hashes
    (:func:`imgselect.pool.content_hash` of their bytes); with the pool store, also the pool's fingerprint
    (ids = the kept paths) and the store's folder."""

    images: torch.Tensor
    kept: list[int]
    skipped: list[tuple[str, str]]
    hashes: list[str]
    fingerprint: str | None = None
    store: Path | None = None


def decode_into(
    paths: Sequence[Path],
    size: int,
    sink: ImageSink,
    num_threads: int = 4,
    description: str = "Decoding images",
) -> tuple[list[int], list[tuple[str, str]], list[str]]:
    """Decode ``paths`` into ``sink`` in order, skipping (and logging) the unreadable ones; each file is read
    once, for its pixels and its content hash. Returns ``(kept, skipped, hashes)``."""

    def one(p: Path) -> tuple[np.ndarray, str] | str:
        try:
            data = Path(p).read_bytes()
            return decode_image(io.BytesIO(data), size), content_hash(data)
        except (OSError, ValueError, UnidentifiedImageError, Image.DecompressionBombError) as e:
            return f"{type(e).__name__}: {e}"

    hashes: list[str] = []
    kept: list[int] = []
    skipped: list[tuple[str, str]] = []
    with ThreadPoolExecutor(max_workers=num_threads) as ex:

        def in_order() -> Iterator[tuple[np.ndarray, str] | str]:
            # in pool order, so the sink gets the images in order; a chunk of files in flight at a time (a
            # million files submitted at once would hold a million futures and every decoded image not yet
            # written)
            for start in range(0, len(paths), DECODE_CHUNK):
                yield from ex.map(one, paths[start : start + DECODE_CHUNK])

        shown = track(in_order(), description, "images", total=len(paths), enabled=is_rank_zero())
        for i, r in enumerate(shown):
            if isinstance(r, str):
                skipped.append((str(paths[i]), r))
                log.warning("skipping unreadable image %s (%s)", paths[i], r)
            else:
                sink.write(r[0])
                hashes.append(r[1])
                kept.append(i)
    return kept, skipped, hashes


def load_image_files(
    paths: Sequence[Path],
    size: int,
    num_threads: int = 4,
    description: str = "Decoding images",
    store: str | Path | None = None,
) -> DecodedFiles:
    """Decode ``paths`` into one uint8 tensor, skipping the unreadable ones.

    Args:
        store: a cache root: the pool is decoded once into its pool store (:mod:`imgselect.poolstore`) and
            mapped from there by this and every later job with the same files; ``None``: decoded into memory.
    """
    if store is not None:
        stored = stored_pool(
            store,
            files_key(paths, size),
            size,
            lambda sink: decode_into(paths, size, sink, num_threads, description),
            lambda kept: [str(paths[i]) for i in kept],
        )
        return DecodedFiles(
            stored.images, stored.kept, stored.skipped, stored.hashes, stored.fingerprint, stored.path
        )
    array = ArraySink(len(paths), size)
    kept, skipped, hashes = decode_into(paths, size, array, num_threads, description)
    return DecodedFiles(array.tensor(), kept, skipped, hashes)


def list_images(root: str | Path) -> list[Path]:
    """Every image file under ``root`` (recursive), sorted, by suffix (case-insensitive)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} does not exist or is not a folder")
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


class ImageTensorDataset(Dataset):
    """Serves ``(image, target)`` from an in-memory uint8 tensor.

    ``target`` is the label when ``labels`` is given, else the image's index, so a model can tell
    which pool image it saw. ``transform`` (if any) gets and returns a uint8 ``(3, h, w)`` tensor.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: np.ndarray | torch.Tensor | None = None,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        self.images = images
        self.targets = (
            torch.as_tensor(labels, dtype=torch.long) if labels is not None else torch.arange(len(images))
        )
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.images[i]
        if self.transform is not None:
            x = self.transform(x)
        return x, self.targets[i]
