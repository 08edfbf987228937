"""LightningDataModules for imgselect and the datasets, loaders and transforms they use."""

from datamodules.fashion_mnist import FashionMNISTDataModule
from datamodules.folder import FolderDataModule
from datamodules.pool import PoolDataModule
from datamodules.video import VideoDataModule

__all__ = ["FashionMNISTDataModule", "FolderDataModule", "PoolDataModule", "VideoDataModule"]
