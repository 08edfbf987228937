"""Listing an image folder: symbolic links followed once (no loop, no file twice), broken or looping links and
unreadable files reported with a reason that names them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from datamodules import FolderDataModule
from datamodules.images import load_image_files, scan_images


def _images(folder: Path, n: int, prefix: str = "img") -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(len(str(folder)))
    out = []
    for i in range(n):
        p = folder / f"{prefix}_{i}.png"
        Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(p)
        out.append(p)
    return out


def _reasons(skipped: list[tuple[str, str]]) -> dict[str, str]:
    return {Path(p).name: why for p, why in skipped}


class TestScanImages:
    def test_follows_a_linked_folder(self, tmp_path: Path) -> None:
        _images(tmp_path / "data" / "cam1", 4)
        pool = tmp_path / "pool"
        _images(pool / "cam0", 2)
        (pool / "cam1").symlink_to(tmp_path / "data" / "cam1", target_is_directory=True)
        found = scan_images(pool)
        assert [str(p.relative_to(pool).parent) for p in found.files] == ["cam0"] * 2 + ["cam1"] * 4
        assert found.skipped == []

    def test_link_to_an_ancestor_is_not_followed_and_is_reported(self, tmp_path: Path) -> None:
        pool = tmp_path / "pool"
        _images(pool / "cam0", 2)
        (pool / "cam0" / "again").symlink_to(pool, target_is_directory=True)  # a loop
        (pool / "outside").symlink_to(tmp_path, target_is_directory=True)  # holds the pool itself
        found = scan_images(pool)
        assert len(found.files) == 2
        why = _reasons(found.skipped)
        assert set(why) == {"again", "outside"}
        assert "loop" in why["again"] and str(pool) in why["again"]
        assert "loop" in why["outside"] and str(tmp_path) in why["outside"]

    def test_two_links_to_one_folder_list_its_files_once(self, tmp_path: Path) -> None:
        _images(tmp_path / "data" / "cam1", 3)
        pool = tmp_path / "pool"
        _images(pool / "real", 2)
        (pool / "a").symlink_to(tmp_path / "data" / "cam1", target_is_directory=True)
        (pool / "b").symlink_to(tmp_path / "data" / "cam1", target_is_directory=True)
        (pool / "0_first").symlink_to(pool / "real", target_is_directory=True)  # sorts before real/
        found = scan_images(pool)
        assert sorted(str(p.relative_to(pool).parent) for p in found.files) == ["a"] * 3 + ["real"] * 2
        why = _reasons(found.skipped)
        assert set(why) == {"b", "0_first"}
        assert f"the same folder as {pool / 'a'}" in why["b"]
        assert f"the same folder as {pool / 'real'}" in why["0_first"]  # the real path wins over a link

    def test_a_link_to_a_listed_file_is_counted_once(self, tmp_path: Path) -> None:
        pool = tmp_path / "pool"
        (real,) = _images(pool / "z", 1)
        (pool / "a.png").symlink_to(real)
        found = scan_images(pool)
        assert found.files == [real]
        assert found.skipped == [
            (str(pool / "a.png"), f"the same file as {real} (a link to it): listed once")
        ]

    def test_broken_and_looping_links_are_reported_with_their_name(self, tmp_path: Path) -> None:
        pool = tmp_path / "pool"
        _images(pool, 1)
        (pool / "self.jpg").symlink_to(pool / "self.jpg")
        (pool / "gone.png").symlink_to(tmp_path / "nowhere.png")
        (pool / "cam2").symlink_to(tmp_path / "unmounted")  # a folder link whose folder is gone
        (pool / "notes.txt").symlink_to(tmp_path / "nowhere.txt")  # not an image: not reported
        found = scan_images(pool)
        assert [p.name for p in found.files] == ["img_0.png"]
        why = _reasons(found.skipped)
        assert set(why) == {"self.jpg", "gone.png", "cam2"}
        assert (
            why["self.jpg"].startswith("a symbolic link loop") and str(pool / "self.jpg") in why["self.jpg"]
        )
        assert why["gone.png"].startswith("a broken symbolic link") and "nowhere.png" in why["gone.png"]
        assert "unmounted" in why["cam2"]


class TestFolderPool:
    def test_linked_folder_counted_and_bad_links_in_skipped(self, tmp_path: Path) -> None:
        _images(tmp_path / "data" / "cam1", 5)
        pool = tmp_path / "pool"
        _images(pool / "cam0", 3)
        (pool / "cam1").symlink_to(tmp_path / "data" / "cam1", target_is_directory=True)
        (pool / "cam1_again").symlink_to(tmp_path / "data" / "cam1", target_is_directory=True)
        (pool / "loop.png").symlink_to(pool / "loop.png")
        val = tmp_path / "val"
        _images(val / "a", 2)
        _images(val / "b", 2)
        dm = FolderDataModule(pool_dir=str(pool), val=str(val), image_size=8)
        dm.setup()
        assert len(dm.pool) == 8
        assert sum("/cam1/" in i for i in dm.pool.ids) == 5
        assert sorted(_reasons(dm.pool.skipped)) == ["cam1_again", "loop.png"]

    def test_only_bad_links_is_an_error_saying_why(self, tmp_path: Path) -> None:
        pool = tmp_path / "pool"
        pool.mkdir()
        (pool / "cam1").symlink_to(tmp_path / "unmounted")
        val = tmp_path / "val"
        _images(val / "a", 1)
        _images(val / "b", 1)
        dm = FolderDataModule(pool_dir=str(pool), val=str(val), image_size=8)
        with pytest.raises(FileNotFoundError, match=r"no images .* \(1 entries not listed: .*cam1: a broken"):
            dm.setup()


def test_unreadable_file_reason_names_the_file_not_a_buffer(tmp_path: Path) -> None:
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    decoded = load_image_files([bad], 8, num_threads=1)
    ((path, reason),) = decoded.skipped
    assert path == str(bad)
    assert str(bad) in reason and "BytesIO" not in reason
