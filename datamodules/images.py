"""Decoding, resizing and serving images held in memory as uint8 tensors."""

from __future__ import annotations

import errno
import io
import logging
import os
import stat
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from imgselect.io.poolstore import ArraySink, ImageSink, files_key, stored_pool
from imgselect.pool import content_hash
from imgselect.run.progress import track
from imgselect.run.runtime import is_rank_zero

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
        buffer = None
        try:
            data = Path(p).read_bytes()
            buffer = io.BytesIO(data)
            return decode_image(buffer, size), content_hash(data)
        except (OSError, ValueError, UnidentifiedImageError, Image.DecompressionBombError) as e:
            # Pillow names the in-memory buffer it was given ("cannot identify image file <_io.BytesIO
            # object at 0x...>"): name the file instead
            reason = f"{type(e).__name__}: {e}"
            return reason.replace(repr(buffer), repr(str(p))) if buffer is not None else reason

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
        store: a cache root: the pool is decoded once into its pool store (:mod:`imgselect.io.poolstore`) and
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


class ImageListing(NamedTuple):
    """What :func:`scan_images` found: the image files (sorted) and ``(path, reason)`` for each entry it
    did not list (a broken or looping link, a folder reached twice, a second link to a listed file, an
    unreadable folder)."""

    files: list[Path]
    skipped: list[tuple[str, str]]


def _is_image_name(name: str) -> bool:
    return Path(name).suffix.lower() in IMAGE_SUFFIXES


def _bad_link_reason(path: Path, error: OSError) -> str:
    """Why the link ``path`` cannot be followed, naming it and its target."""
    try:
        target = os.readlink(path)
    except OSError:
        target = "?"
    if error.errno == errno.ELOOP:
        return f"a symbolic link loop: {path} -> {target} leads back to itself; fix or remove the link"
    if error.errno == errno.ENOENT:
        return f"a broken symbolic link: {path} -> {target}, which does not exist; fix or remove the link"
    return f"cannot follow the symbolic link {path} -> {target} ({type(error).__name__}: {error.strerror})"


def scan_images(root: str | Path) -> ImageListing:
    """Every image file under ``root`` (recursive, by suffix, case-insensitive), following symbolic links.

    A pool is often put together from links (``pool/cam1 -> /data/cam1``), so linked folders and files are
    listed like real ones, under the linked path. Each real folder is walked once and each real file listed
    once: the folders under ``root`` itself are walked before any linked folder, so the real path wins over a
    link to it, and every entry not listed is in ``skipped`` with the reason:

    - a link to a folder already walked (one of its own parent folders, which would loop forever, or a
      second link to the same folder) or to a folder that holds ``root`` (walking it would list everything
      around the pool);
    - a second path to a file already listed (a link to it, or a hard link);
    - a broken link or a link loop named like an image or with no suffix (it may have been a folder);
    - a folder that cannot be read.

    Raises:
        FileNotFoundError: ``root`` is not a folder.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} does not exist or is not a folder")
    skipped: list[tuple[str, str]] = []
    walked: dict[tuple[int, int], Path] = {}  # (device, inode) of each folder walked -> its listed path
    found: list[tuple[Path, tuple[int, int], bool]] = []  # (path, (device, inode), reached through a link)
    linked: deque[Path] = deque()  # linked folders, walked after every real one

    def walk(top: Path, st: os.stat_result, via_link: bool) -> None:
        stack = [(top, st)]
        while stack:
            folder, fst = stack.pop()
            ident = (fst.st_dev, fst.st_ino)
            if ident in walked:
                first = walked[ident]
                why = (
                    f"a link to its own parent folder {first} (a loop): not followed"
                    if first in folder.parents
                    else f"the same folder as {first}, already listed: not listed twice"
                )
                skipped.append((str(folder), why))
                continue
            walked[ident] = folder
            try:
                with os.scandir(folder) as it:
                    entries = sorted(it, key=lambda e: e.name)
            except OSError as e:
                skipped.append((str(folder), f"cannot read the folder ({type(e).__name__}: {e.strerror})"))
                continue
            subfolders = []
            for entry in entries:
                path = folder / entry.name
                try:
                    if entry.is_symlink():
                        try:
                            target = entry.stat()
                        except OSError as e:
                            if _is_image_name(entry.name) or not Path(entry.name).suffix:
                                skipped.append((str(path), _bad_link_reason(path, e)))
                            continue
                        if stat.S_ISDIR(target.st_mode):
                            linked.append(path)
                        elif stat.S_ISREG(target.st_mode) and _is_image_name(entry.name):
                            found.append((path, (target.st_dev, target.st_ino), True))
                    elif entry.is_dir(follow_symlinks=False):
                        subfolders.append((path, entry.stat(follow_symlinks=False)))
                    elif entry.is_file(follow_symlinks=False) and _is_image_name(entry.name):
                        own = entry.stat(follow_symlinks=False)
                        found.append((path, (own.st_dev, own.st_ino), via_link))
                except FileNotFoundError:  # removed while listing
                    continue
            stack.extend(reversed(subfolders))

    walk(root, root.stat(), via_link=False)
    real_root = root.resolve()
    while linked:
        link = linked.popleft()
        try:
            target = link.resolve(strict=True)
            if real_root.is_relative_to(target):  # walking it would list everything around the pool
                skipped.append(
                    (str(link), f"a link to {target}, which holds {root} itself (a loop): not followed")
                )
                continue
            walk(link, link.stat(), via_link=True)
        except OSError as e:  # removed or changed since it was listed
            skipped.append((str(link), _bad_link_reason(link, e)))

    # one path per real file: the first not reached through a link, else the first
    chosen: dict[tuple[int, int], Path] = {}
    for path, ident, _ in sorted(found, key=lambda f: (f[2], f[0])):
        chosen.setdefault(ident, path)
    kept = set(chosen.values())
    for path, ident, _ in found:
        if path not in kept:
            skipped.append((str(path), f"the same file as {chosen[ident]} (a link to it): listed once"))
    return ImageListing(sorted(kept), sorted(skipped))


def list_images(root: str | Path) -> list[Path]:
    """The image files :func:`scan_images` finds under ``root``, sorted; what it skips is logged."""
    listing = scan_images(root)
    for path, reason in listing.skipped:
        log.warning("not listed: %s (%s)", path, reason)
    return listing.files


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
