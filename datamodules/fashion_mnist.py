"""Fashion-MNIST, found on disk (the project's data dir or Debian's package) or downloaded, then verified.

The default task stands in for the paper's staff/customer problem: T-shirt/top (0) vs Shirt (6).
Pool = those classes of the train split (labels hidden from selection); validation = those classes
of the test split: the paper's "day D pool, day D+1 validation".
"""

from __future__ import annotations

import gzip
import logging
import shutil
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from datamodules.images import resize_uint8
from datamodules.pool import PoolDataModule
from imgselect.io.artifacts import atomic_path
from imgselect.io.cache import sha256_file
from imgselect.pool import ImageSet, content_hash

log = logging.getLogger(__name__)

CLASS_NAMES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]

# sha256 of the *uncompressed* IDX files. Debian recompressed the .gz archives (their bytes and md5 differ
# from the official ones) but the uncompressed bytes are the official ones.
SHA256 = {
    "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}
SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")  # Debian package dataset-fashion-mnist
MIRROR = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"


# Each writer fills its own temporary file and renames it over the target (atomic_path): jobs of a parallel sweep
# that prepare the data folder at the same moment each write a whole copy, and no reader sees half a file.
def _gunzip(src: Path, dst: Path) -> None:
    with atomic_path(dst) as tmp, gzip.open(src, "rb") as fin, tmp.open("wb") as fout:
        shutil.copyfileobj(fin, fout)


def _copy(src: Path, dst: Path) -> None:
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)


def _download(url: str, dst: Path, timeout: float) -> None:
    try:
        with atomic_path(dst) as tmp, urllib.request.urlopen(url, timeout=timeout) as r, tmp.open("wb") as f:
            shutil.copyfileobj(r, f)
    except (urllib.error.URLError, TimeoutError, OSError) as e:
        raise RuntimeError(
            f"Fashion-MNIST is not in {dst.parent} nor in {SYSTEM_DIR}, and downloading {url} failed ({e}). "
            f"Offline? Install Debian's copy (apt-get install dataset-fashion-mnist) or put the four IDX files "
            f"(.gz or uncompressed) in {dst.parent}."
        ) from e
    tmp.replace(dst)


def ensure_fashion_mnist(
    data_dir: str | Path,
    system_dir: str | Path = SYSTEM_DIR,
    mirror: str | None = MIRROR,
    timeout: float = 10.0,
) -> Path:
    """Make the four uncompressed, verified IDX files exist in ``data_dir``; return it.

    Order: uncompressed files in ``data_dir``; ``.gz`` there; ``.gz`` or plain files in ``system_dir``;
    download from ``mirror`` (``None`` forbids downloading). Every file is checked by sha256.

    Raises:
        RuntimeError: a file is missing and cannot be fetched, or its checksum is wrong.
    """
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    system_dir = Path(system_dir)
    for name, digest in SHA256.items():
        dst = data_dir / name
        if not dst.exists():
            for candidate in (data_dir / f"{name}.gz", system_dir / name, system_dir / f"{name}.gz"):
                if candidate.exists():
                    log.info("Fashion-MNIST: %s from %s", name, candidate)
                    if candidate.suffix == ".gz":
                        _gunzip(candidate, dst)
                    else:
                        _copy(candidate, dst)
                    break
            else:
                if mirror is None:
                    raise RuntimeError(
                        f"{name} is not in {data_dir} nor in {system_dir} and downloading is off; "
                        f"run `apt-get install dataset-fashion-mnist` or copy the IDX files into {data_dir}"
                    )
                gz = data_dir / f"{name}.gz"
                log.info("Fashion-MNIST: downloading %s", mirror + gz.name)
                _download(mirror + gz.name, gz, timeout)
                _gunzip(gz, dst)
        actual = sha256_file(dst)
        if actual != digest:
            raise RuntimeError(
                f"{dst} has sha256 {actual}, expected {digest}: the file is corrupt or not Fashion-MNIST. "
                f"Delete it and run again to fetch a fresh copy."
            )
    return data_dir


def read_idx(path: str | Path) -> np.ndarray:
    """Read an uncompressed IDX file (ubyte data) into a numpy array of its declared shape."""
    raw = Path(path).read_bytes()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte IDX file")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    offset = 4 + 4 * ndim
    expected = int(np.prod(dims))
    if len(raw) - offset != expected:
        raise ValueError(f"{path} declares {dims} ({expected} bytes) but holds {len(raw) - offset}")
    return np.frombuffer(raw, dtype=np.uint8, offset=offset).reshape(dims)


class FashionMNISTDataModule(PoolDataModule):
    """Fashion-MNIST as an unlabeled pool (train split) and a validation set (test split).

    Args:
        data_dir: where the IDX files are (or will be copied to).
        classes: Fashion-MNIST class indices to keep, in the order of the task's labels
            (default ``[0, 6]``: T-shirt/top vs Shirt). All ten gives the 10-class task.
        pool_limit: keep only the first ``pool_limit`` pool images of those classes (``None``: all).
        val_limit: likewise for the validation set.
        image_size, batch_size, num_workers: see :class:`PoolDataModule`.
        allow_download: fall back to the official mirror when no local copy exists.
        val_split: ``"test"`` (the paper's next-day validation: the test split) or ``"train_holdout"``:
            ``holdout_size`` images held out of the train split (fixed seed) as validation and removed from
            the pool — for choosing settings without looking at the test split.
        holdout_size: size of that held-out set.
    """

    def __init__(
        self,
        data_dir: str = "data/fashion-mnist",
        classes: Sequence[int] = (0, 6),
        pool_limit: int | None = None,
        val_limit: int | None = None,
        image_size: int = 64,
        batch_size: int = 128,
        num_workers: int = 0,
        allow_download: bool = True,
        val_split: str = "test",
        holdout_size: int = 2000,
    ) -> None:
        super().__init__(image_size=image_size, batch_size=batch_size, num_workers=num_workers)
        classes = [int(c) for c in classes]
        bad = [c for c in classes if not 0 <= c < len(CLASS_NAMES)]
        if bad or len(set(classes)) != len(classes) or len(classes) < 2:
            raise ValueError(f"data.classes={classes} must be 2 to 10 distinct Fashion-MNIST classes in 0..9")
        self.data_dir = Path(data_dir)
        self.classes = classes
        self.pool_limit = pool_limit
        self.val_limit = val_limit
        self.allow_download = allow_download
        if val_split not in ("test", "train_holdout"):
            raise ValueError(f"data.val_split={val_split!r}: use 'test' or 'train_holdout'")
        self.val_split = val_split
        self.holdout_size = holdout_size

    def prepare_data(self) -> None:
        ensure_fashion_mnist(self.data_dir, mirror=MIRROR if self.allow_download else None)

    def _split(self, prefix: str, split: str, limit: int | None, part: np.ndarray | None = None) -> ImageSet:
        images = read_idx(self.data_dir / f"{prefix}-images-idx3-ubyte")
        labels = read_idx(self.data_dir / f"{prefix}-labels-idx1-ubyte").astype(np.int64)
        keep = np.flatnonzero(np.isin(labels, self.classes))
        if part is not None:
            keep = keep[part]
        keep = keep[:limit]
        remap = np.full(len(CLASS_NAMES), -1, dtype=np.int64)
        remap[self.classes] = np.arange(len(self.classes))
        x = torch.from_numpy(images[keep].copy()).unsqueeze(1)
        return ImageSet(
            images=resize_uint8(x, self.image_size),
            ids=[f"{split}:{i}" for i in keep],
            labels=remap[labels[keep]],
            source=f"Fashion-MNIST {split} split ({self.data_dir})",
            hashes=[content_hash(images[i].tobytes()) for i in keep],  # the original 28x28 pixels
        )

    def load(self) -> tuple[ImageSet, ImageSet, list[str]]:
        self.prepare_data()  # cheap when the files are there; makes setup() enough on its own
        if self.val_split == "test":
            pool = self._split("train", "train", self.pool_limit)
            val = self._split("t10k", "test", self.val_limit)
        else:
            n = int(np.isin(read_idx(self.data_dir / "train-labels-idx1-ubyte"), self.classes).sum())
            if not 0 < self.holdout_size < n:
                raise ValueError(f"data.holdout_size={self.holdout_size} must be between 1 and {n - 1}")
            perm = np.random.default_rng(12345).permutation(n)
            held, rest = np.sort(perm[: self.holdout_size]), np.sort(perm[self.holdout_size :])
            pool = self._split("train", "train", self.pool_limit, rest)
            val = self._split("train", "train", self.val_limit, held)
        return pool, val, [CLASS_NAMES[c] for c in self.classes]
