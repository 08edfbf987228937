"""Your own images: a folder as the unlabeled pool, a class-per-subfolder folder or a CSV as validation."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import numpy as np
import torch

from datamodules.images import list_images, load_image_files
from datamodules.pool import PoolDataModule
from imgselect.pool import ImageSet

log = logging.getLogger(__name__)


def read_labeled_csv(path: Path) -> tuple[list[Path], list[str]]:
    """Read ``path,label`` rows (a header row ``path,label`` is allowed); relative paths are taken
    relative to the CSV's folder."""
    paths: list[Path] = []
    labels: list[str] = []
    with path.open(newline="") as f:
        for lineno, row in enumerate(csv.reader(f), start=1):
            if not row or row[0].startswith("#"):
                continue
            if lineno == 1 and [c.strip().lower() for c in row[:2]] == ["path", "label"]:
                continue
            if len(row) < 2 or not row[1].strip():
                raise ValueError(f"{path}:{lineno}: expected 'path,label', got {row!r}")
            p = Path(row[0].strip())
            paths.append(p if p.is_absolute() else path.parent / p)
            labels.append(row[1].strip())
    return paths, labels


class FolderDataModule(PoolDataModule):
    """A pool folder of images (recursive: jpg, png, bmp, webp) and a labeled validation set.

    Every image is converted to RGB and resized to ``image_size``. Unreadable files are skipped with a
    warning naming them, and listed in ``pool.skipped`` / ``val.skipped`` (the run writes them to
    ``skipped.csv``); the run stops only when no readable pool image is left.

    Args:
        pool_dir: folder of unlabeled images.
        val: a folder with one subfolder per class, or a CSV file of ``path,label`` rows.
        classes: class names in label order; default: the sorted names found in ``val``.
        image_size, batch_size, num_workers: see :class:`PoolDataModule`.
        num_threads: decoding threads.
    """

    def __init__(
        self,
        pool_dir: str,
        val: str,
        classes: list[str] | None = None,
        image_size: int = 64,
        batch_size: int = 128,
        num_workers: int = 0,
        num_threads: int = 4,
    ) -> None:
        super().__init__(image_size=image_size, batch_size=batch_size, num_workers=num_workers)
        self.pool_dir = Path(pool_dir)
        self.val_path = Path(val)
        self.classes = list(classes) if classes else None
        self.num_threads = num_threads

    def _val_listing(self) -> tuple[list[Path], list[str]]:
        if self.val_path.is_file():
            return read_labeled_csv(self.val_path)
        if self.val_path.is_dir():
            paths: list[Path] = []
            labels: list[str] = []
            for sub in sorted(p for p in self.val_path.iterdir() if p.is_dir()):
                files = list_images(sub)
                paths += files
                labels += [sub.name] * len(files)
            if not paths:
                raise ValueError(f"validation folder {self.val_path} has no class subfolders with images")
            return paths, labels
        raise FileNotFoundError(
            f"validation set {self.val_path} does not exist: give a folder with one subfolder per class "
            f"or a CSV of path,label"
        )

    def load(self) -> tuple[ImageSet, ImageSet, list[str]]:
        pool_paths = list_images(self.pool_dir)
        if not pool_paths:
            raise FileNotFoundError(f"no images (jpg, png, bmp, webp) found under {self.pool_dir}")
        images, kept, skipped = load_image_files(
            pool_paths, self.image_size, self.num_threads, "Decoding pool"
        )
        pool = ImageSet(
            images=images,
            ids=[str(pool_paths[i]) for i in kept],
            source=str(self.pool_dir),
            skipped=skipped,
        )
        if skipped:
            log.warning("%d of %d pool files were unreadable and skipped", len(skipped), len(pool_paths))

        val_paths, val_names = self._val_listing()
        class_names = self.classes or sorted(set(val_names))
        unknown = sorted(set(val_names) - set(class_names))
        if unknown:
            raise ValueError(
                f"validation labels {unknown} in {self.val_path} are not among classes={class_names}"
            )
        if len(class_names) < 2:
            raise ValueError(
                f"validation set {self.val_path} has {len(class_names)} class; a classifier needs 2 or more"
            )
        vimages, vkept, vskipped = load_image_files(
            val_paths, self.image_size, self.num_threads, "Decoding validation"
        )
        index = {c: i for i, c in enumerate(class_names)}
        val = ImageSet(
            images=vimages
            if len(vimages)
            else torch.empty((0, 3, self.image_size, self.image_size), dtype=torch.uint8),
            ids=[str(val_paths[i]) for i in vkept],
            labels=np.array([index[val_names[i]] for i in vkept], dtype=np.int64),
            source=str(self.val_path),
            skipped=vskipped,
        )
        return pool, val, class_names
