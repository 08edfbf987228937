"""Datamodules on a generated folder (corrupt + grayscale files) and on the real Fashion-MNIST files."""

from __future__ import annotations

import gzip
import multiprocessing
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from datamodules import FashionMNISTDataModule, FolderDataModule
from datamodules.fashion_mnist import SHA256, ensure_fashion_mnist, read_idx
from datamodules.images import ImageTensorDataset, decode_image, resize_uint8


class TestFolder:
    def test_pool_skips_corrupt_and_converts_grayscale(self, image_folder: dict[str, Path]) -> None:
        dm = FolderDataModule(pool_dir=str(image_folder["pool"]), val=str(image_folder["val"]), image_size=32)
        dm.setup()
        assert len(dm.pool) == 41  # 40 generated + the grayscale one; the corrupt one is skipped
        assert dm.pool.images.shape == (41, 3, 32, 32) and dm.pool.images.dtype == torch.uint8
        assert [Path(p).name for p, _ in dm.pool.skipped] == ["corrupt.jpg"]
        assert not any(i.endswith("notes.txt") for i in dm.pool.ids)
        gray = dm.pool.images[dm.pool.ids.index(str(image_folder["pool"] / "gray.png"))]
        assert torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])
        assert dm.class_names == ["disc", "square"]
        assert len(dm.val) == 12 and sorted(np.bincount(dm.val.labels).tolist()) == [6, 6]

    def test_val_from_csv(self, image_folder: dict[str, Path]) -> None:
        dm = FolderDataModule(pool_dir=str(image_folder["pool"]), val=str(image_folder["csv"]), image_size=16)
        dm.setup()
        assert len(dm.val) == 12 and dm.class_names == ["disc", "square"]
        assert dm.val.ids[0].endswith("v0.png")

    def test_nothing_readable_is_a_clear_error(self, tmp_path: Path, image_folder: dict[str, Path]) -> None:
        bad = tmp_path / "pool"
        bad.mkdir()
        (bad / "a.png").write_bytes(b"nope")
        dm = FolderDataModule(pool_dir=str(bad), val=str(image_folder["val"]), image_size=16)
        with pytest.raises(RuntimeError, match=r"no readable images in .*pool; 1 files were skipped"):
            dm.setup()

    def test_missing_folders_name_the_path(self, tmp_path: Path, image_folder: dict[str, Path]) -> None:
        with pytest.raises(FileNotFoundError, match="nowhere"):
            FolderDataModule(pool_dir=str(tmp_path / "nowhere"), val=str(image_folder["val"])).setup()
        with pytest.raises(FileNotFoundError, match="validation set .*missing.csv"):
            FolderDataModule(
                pool_dir=str(image_folder["pool"]), val=str(tmp_path / "missing.csv"), image_size=16
            ).setup()

    def test_unknown_class_in_csv(self, tmp_path: Path, image_folder: dict[str, Path]) -> None:
        csv = tmp_path / "v.csv"
        csv.write_text(f"{image_folder['val'] / 'disc' / 'v0.png'},cat\n")
        dm = FolderDataModule(
            pool_dir=str(image_folder["pool"]), val=str(csv), classes=["disc", "square"], image_size=16
        )
        with pytest.raises(ValueError, match=r"labels \['cat'\]"):
            dm.setup()

    def test_decode_rgba_and_resize(self, tmp_path: Path) -> None:
        from PIL import Image

        p = tmp_path / "t.png"
        Image.new("RGBA", (10, 20), (255, 0, 0, 0)).save(p)  # fully transparent red -> white background
        arr = decode_image(p, 8)
        assert arr.shape == (3, 8, 8) and (arr == 255).all()


class TestHighBitDepth:
    """16-bit, 32-bit integer and float greyscale files are scaled to 8 bits, not clipped at 255."""

    @staticmethod
    def _save(tmp_path: Path, name: str, arr: np.ndarray, mode: str) -> Path:
        from PIL import Image

        p = tmp_path / name
        im = Image.fromarray(arr)
        im.save(p)
        with Image.open(p) as f:
            assert f.mode == mode  # the file really holds what the test is about
        return p

    def test_16bit_png_ramp(self, tmp_path: Path) -> None:
        ramp = np.tile(np.linspace(0, 65535, 256).round().astype(np.uint16), (16, 1))
        arr = decode_image(self._save(tmp_path, "ramp.png", ramp, "I;16"), 16)
        assert arr.shape == (3, 16, 16) and arr.dtype == np.uint8
        assert abs(arr.mean() - 127.5) < 1.0  # clipped, it was ~254
        row = arr[0, 0].astype(int)  # 16 columns, each the mean of 16 steps of the ramp
        assert row[0] <= 16 and row[-1] >= 239 and (np.diff(row) > 0).all()

    @pytest.mark.parametrize(
        ("value", "expected"), [(0, 0), (257, 1), (25700, 100), (32896, 128), (65535, 255)]
    )
    def test_16bit_png_levels(self, tmp_path: Path, value: int, expected: int) -> None:
        flat = np.full((8, 8), value, dtype=np.uint16)
        assert (decode_image(self._save(tmp_path, "flat.png", flat, "I;16"), 8) == expected).all()

    def test_32bit_integer_is_read_as_16bit(self, tmp_path: Path) -> None:
        dark = np.full((8, 8), 200 * 257, dtype=np.int32)  # a 16-bit value in a 32-bit container
        assert (decode_image(self._save(tmp_path, "i.tif", dark, "I"), 8) == 200).all()
        dark[:] = 100  # a dark 16-bit image stays dark: not stretched to 0..255
        assert (decode_image(self._save(tmp_path, "i.tif", dark, "I"), 8) == 0).all()

    def test_float_in_unit_range_and_in_8bit_range(self, tmp_path: Path) -> None:
        unit = np.full((8, 8), 0.5, dtype=np.float32)
        assert (decode_image(self._save(tmp_path, "f.tif", unit, "F"), 8) == 128).all()
        eight = np.full((8, 8), 77.0, dtype=np.float32)
        eight[0, 0] = 300.0  # beyond 255: clipped
        arr = decode_image(self._save(tmp_path, "f.tif", eight, "F"), 8)
        assert arr[0, 1, 1] == 77 and arr[0, 0, 0] == 255


class TestFashionMNIST:
    def test_read_idx_hand_made(self, tmp_path: Path) -> None:
        data = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
        header = bytes([0, 0, 8, 3]) + b"".join(d.to_bytes(4, "big") for d in data.shape)
        (tmp_path / "x").write_bytes(header + data.tobytes())
        np.testing.assert_array_equal(read_idx(tmp_path / "x"), data)
        (tmp_path / "y").write_bytes(header + data.tobytes()[:-1])
        with pytest.raises(ValueError, match="declares"):
            read_idx(tmp_path / "y")

    def test_copies_from_system_gz_and_verifies(self, tmp_path: Path, fmnist_dir: Path) -> None:
        system = tmp_path / "system"
        system.mkdir()
        for name in SHA256:
            with gzip.open(system / f"{name}.gz", "wb", compresslevel=1) as f:  # recompressed, like Debian's
                f.write((fmnist_dir / name).read_bytes())
        out = ensure_fashion_mnist(tmp_path / "data", system_dir=system, mirror=None)
        assert sorted(p.name for p in out.iterdir() if not p.name.endswith(".gz")) == sorted(SHA256)

    def test_jobs_preparing_one_data_folder_at_once_all_succeed(
        self, tmp_path: Path, fmnist_dir: Path
    ) -> None:
        """The jobs of a parallel sweep on a fresh clone unpack the same files at the same moment: each writes
        its own temporary file (one shared ``.part`` made all but one of them fail)."""
        system = tmp_path / "system"
        system.mkdir()
        for name in SHA256:
            with gzip.open(system / f"{name}.gz", "wb", compresslevel=1) as f:
                f.write((fmnist_dir / name).read_bytes())
        ctx = multiprocessing.get_context("spawn")
        barrier = ctx.Barrier(4)
        procs = [
            ctx.Process(target=_prepare_after, args=(barrier, tmp_path / "data", system)) for _ in range(4)
        ]
        for p in procs:
            p.start()
        for p in procs:
            p.join(120)
        assert [p.exitcode for p in procs] == [0, 0, 0, 0]
        assert sorted(p.name for p in (tmp_path / "data").iterdir()) == sorted(SHA256)  # no temporary left

    def test_checksum_mismatch_names_the_file(self, tmp_path: Path, fmnist_dir: Path) -> None:
        data = tmp_path / "data"
        data.mkdir()
        for name in SHA256:
            (data / name).write_bytes((fmnist_dir / name).read_bytes())
        (data / "t10k-labels-idx1-ubyte").write_bytes(b"\x00" * 100)
        with pytest.raises(RuntimeError, match="t10k-labels-idx1-ubyte has sha256"):
            ensure_fashion_mnist(data, system_dir=tmp_path / "none", mirror=None)

    def test_offline_download_fails_fast_and_says_what_to_do(self, tmp_path: Path) -> None:
        t0 = time.perf_counter()
        with pytest.raises(RuntimeError, match="apt-get install dataset-fashion-mnist"):
            ensure_fashion_mnist(
                tmp_path, system_dir=tmp_path / "none", mirror="http://127.0.0.1:9/", timeout=5
            )
        assert time.perf_counter() - t0 < 30

    def test_default_task(self, fmnist_dir: Path) -> None:
        dm = FashionMNISTDataModule(data_dir=str(fmnist_dir), image_size=32)
        dm.setup()
        assert len(dm.pool) == 12000 and len(dm.val) == 2000
        assert dm.class_names == ["T-shirt/top", "Shirt"]
        assert np.bincount(dm.pool.labels).tolist() == [6000, 6000]
        assert dm.pool.images.shape == (12000, 3, 32, 32)
        assert dm.pool.ids[0] == "train:1"  # train index 0 is an ankle boot, index 1 a T-shirt/top

    def test_ten_classes_and_limits(self, fmnist_dir: Path) -> None:
        dm = FashionMNISTDataModule(
            data_dir=str(fmnist_dir), classes=range(10), pool_limit=500, val_limit=100, image_size=16
        )
        dm.setup()
        assert len(dm.pool) == 500 and len(dm.val) == 100 and len(dm.class_names) == 10

    def test_train_holdout_never_overlaps_the_pool(self, fmnist_dir: Path) -> None:
        dm = FashionMNISTDataModule(
            data_dir=str(fmnist_dir), image_size=16, val_split="train_holdout", holdout_size=1500
        )
        dm.setup()
        assert len(dm.pool) == 10500 and len(dm.val) == 1500
        assert not set(dm.pool.ids) & set(dm.val.ids)
        assert all(i.startswith("train:") for i in dm.val.ids)
        with pytest.raises(ValueError, match="val_split='day2'"):
            FashionMNISTDataModule(val_split="day2")

    def test_bad_classes(self) -> None:
        with pytest.raises(ValueError, match="distinct Fashion-MNIST classes"):
            FashionMNISTDataModule(classes=[0, 0])
        with pytest.raises(ValueError, match="distinct Fashion-MNIST classes"):
            FashionMNISTDataModule(classes=[3, 12])


def _prepare_after(barrier: Any, data: Path, system: Path) -> None:
    barrier.wait()
    ensure_fashion_mnist(data, system_dir=system, mirror=None)


def test_resize_and_dataset() -> None:
    x = torch.full((2, 1, 28, 28), 200, dtype=torch.uint8)
    y = resize_uint8(x, 32)
    assert y.shape == (2, 3, 32, 32) and (y == 200).all()
    ds = ImageTensorDataset(y)
    img, idx = ds[1]
    assert img.shape == (3, 32, 32) and int(idx) == 1
    ds = ImageTensorDataset(y, labels=np.array([4, 5]))
    assert int(ds[1][1]) == 5
