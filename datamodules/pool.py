"""Base datamodule: an unlabeled pool (the autoencoder's training data) and a validation set."""

from __future__ import annotations

import logging

import lightning.pytorch as pl
from torch.utils.data import DataLoader

from datamodules.images import ImageTensorDataset
from imgselect.pool import Extraction, ImageSet

log = logging.getLogger(__name__)


class PoolDataModule(pl.LightningDataModule):
    """Holds ``pool`` and ``val`` as in-memory :class:`ImageSet` after :meth:`setup`.

    Subclasses implement :meth:`load`. The train loader serves the pool (labels never included:
    the autoencoder and the selection see images only); the val loader serves the validation
    images, for the autoencoder's held-out reconstruction loss.

    Args:
        image_size: side of the square images the models see.
        batch_size: batch size of the autoencoder's loaders.
        num_workers: DataLoader workers (0 is fastest for in-memory tensors on a small machine).
    """

    def __init__(self, image_size: int = 64, batch_size: int = 128, num_workers: int = 0) -> None:
        super().__init__()
        if image_size < 8:
            raise ValueError(f"image_size={image_size} is too small; use 8 or more (the paper: 64)")
        self.image_size = image_size
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.pool: ImageSet
        self.val: ImageSet
        self.class_names: list[str] = []
        self._loaded = False

    def load(self) -> tuple[ImageSet, ImageSet, list[str]]:
        """Return ``(pool, val, class_names)``."""
        raise NotImplementedError

    def extraction(self) -> Extraction | None:
        """A pool read as it is: no extraction (the video datamodule makes its pool from videos)."""
        return None

    def setup(self, stage: str | None = None) -> None:
        if self._loaded:
            return
        self.pool, self.val, self.class_names = self.load()
        if len(self.pool) == 0:
            raise RuntimeError(
                f"no readable images in {self.pool.source}; {len(self.pool.skipped)} files were skipped"
            )
        log.info(
            "pool: %d images from %s (%d skipped); validation: %d images; classes: %s",
            len(self.pool),
            self.pool.source,
            len(self.pool.skipped),
            len(self.val),
            self.class_names,
        )
        self._loaded = True

    def _loader(self, dataset: ImageTensorDataset, shuffle: bool) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(ImageTensorDataset(self.pool.images), shuffle=True)

    def val_dataloader(self) -> DataLoader | list[DataLoader]:
        if len(self.val) == 0:  # no validation images (a video pool before any labels): no validation loop
            return []
        return self._loader(ImageTensorDataset(self.val.images), shuffle=False)
