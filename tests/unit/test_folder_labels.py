"""``data.pool_labels``: a labeled folder as the pool, so ``labels=oracle`` can benchmark selectors on it."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest

from datamodules import FolderDataModule
from imgselect.labeling.labels import OracleLabels


def _folder(paths: dict[str, Path], pool_labels: str | None, **kw: object) -> FolderDataModule:
    dm = FolderDataModule(
        pool_dir=str(paths["pool"]), val=str(paths["val"]), pool_labels=pool_labels, image_size=16, **kw
    )
    dm.setup()
    return dm


def _by_name(dm: FolderDataModule) -> dict[str, str]:
    assert dm.pool.labels is not None and dm.pool.labels.dtype == np.int64
    return {Path(i).name: dm.class_names[y] for i, y in zip(dm.pool.ids, dm.pool.labels, strict=True)}


def _looks_like(dm: FolderDataModule, name: str) -> str:
    """What the pixels show at the centre: the disc is blue, the square yellow (see ``_blob_image``)."""
    i = next(k for k, p in enumerate(dm.pool.ids) if Path(p).name == name)
    r, _, b = dm.pool.images[i, :, 8, 8].tolist()
    return "disc" if b > r else "square"


class TestSubfolders:
    def test_labels_per_file(
        self, labeled_pool_folder: dict[str, Path], caplog: pytest.LogCaptureFixture
    ) -> None:
        with caplog.at_level(logging.INFO, logger="datamodules.folder"):
            dm = _folder(labeled_pool_folder, "subfolders")
        assert dm.class_names == ["disc", "square"]
        labels = _by_name(dm)
        assert labels == {
            "d0.png": "disc",
            "d1.jpg": "disc",
            "d2.png": "disc",
            "d3.png": "disc",
            "s0.png": "square",
            "s1.jpg": "square",
            "s2.bmp": "square",
        }
        assert "pool labels (data.pool_labels=subfolders): disc=4, square=3" in caplog.text

    def test_corrupt_file_keeps_ids_labels_and_pixels_aligned(
        self, labeled_pool_folder: dict[str, Path]
    ) -> None:
        # broken.jpg sorts first in disc/: labels taken by list position instead of by kept file would
        # shift every later label by one (the last disc would become a square).
        dm = _folder(labeled_pool_folder, "subfolders")
        assert [Path(p).name for p, _ in dm.pool.skipped] == ["broken.jpg"]
        assert len(dm.pool) == len(dm.pool.ids) == len(dm.pool.labels) == 7  # type: ignore[arg-type]
        assert np.bincount(dm.pool.labels).tolist() == [4, 3]  # type: ignore[arg-type]
        for name, label in _by_name(dm).items():
            assert _looks_like(dm, name) == label, name

    def test_classes_order_is_the_tasks(self, labeled_pool_folder: dict[str, Path]) -> None:
        dm = _folder(labeled_pool_folder, "subfolders", classes=["square", "disc"])
        assert dm.class_names == ["square", "disc"]
        assert _by_name(dm)["d1.jpg"] == "disc"
        assert dm.pool.labels is not None and dm.val.labels is not None
        assert dm.pool.labels.tolist().count(0) == 3 and dm.val.labels.tolist().count(0) == 3

    def test_oracle_reveals_the_folders_labels(self, labeled_pool_folder: dict[str, Path]) -> None:
        dm = _folder(labeled_pool_folder, "subfolders")
        chosen = np.array([0, len(dm.pool) - 1])
        y = OracleLabels().reveal(dm.pool, chosen, dm.class_names).labels
        assert [dm.class_names[k] for k in y] == ["disc", "square"]

    def test_null_leaves_the_pool_unlabeled(self, labeled_pool_folder: dict[str, Path]) -> None:
        dm = _folder(labeled_pool_folder, None)
        assert dm.pool.labels is None and len(dm.pool) == 7  # every image under pool_dir, recursive
        with pytest.raises(ValueError, match=r"data\.pool_labels=subfolders.*labels=file"):
            OracleLabels().reveal(dm.pool, np.array([0]), dm.class_names)

    def test_unknown_class_fails_before_decoding(
        self, tmp_path: Path, labeled_pool_folder: dict[str, Path], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        pool = tmp_path / "pool"
        for name, n in (("disc", 1), ("cat", 2)):
            (pool / name).mkdir(parents=True)
            for i in range(n):
                (pool / name / f"{i}.png").write_bytes(b"never decoded")
        monkeypatch.setattr("datamodules.folder.load_image_files", _no_decoding)
        with pytest.raises(
            ValueError,
            match=r"data\.pool_labels=subfolders: pool classes not among the classes \['disc', 'square'\] "
            r"\(from the validation set .*val\): 'cat' \(2 files\)\. Add them to data\.classes",
        ):
            _folder({"pool": pool, "val": labeled_pool_folder["val"]}, "subfolders")

    def test_image_outside_a_class_folder(self, tmp_path: Path, labeled_pool_folder: dict[str, Path]) -> None:
        pool = tmp_path / "pool"
        (pool / "disc").mkdir(parents=True)
        (pool / "disc" / "a.png").write_bytes(b"x")
        (pool / "loose.png").write_bytes(b"x")
        with pytest.raises(ValueError, match=r"1 images lie directly in .*pool .*loose\.png"):
            _folder({"pool": pool, "val": labeled_pool_folder["val"]}, "subfolders")


def _no_decoding(*args: object, **kwargs: object) -> None:
    raise AssertionError("images were decoded before the labels were checked")


class TestCsv:
    def test_relative_paths_subset_with_header(self, labeled_pool_folder: dict[str, Path]) -> None:
        dm = _folder(labeled_pool_folder, str(labeled_pool_folder["csv"]))
        assert _by_name(dm) == {
            "d3.png": "disc",
            "s1.jpg": "square",
            "d0.png": "disc",
        }  # only the listed files
        assert dm.pool.ids[0] == str(labeled_pool_folder["root"] / "pool/disc/nested/d3.png")  # CSV order
        assert [Path(p).name for p, _ in dm.pool.skipped] == ["broken.jpg"]
        for name, label in _by_name(dm).items():
            assert _looks_like(dm, name) == label, name

    def test_no_header_absolute_and_relative_paths(
        self, tmp_path: Path, labeled_pool_folder: dict[str, Path]
    ) -> None:
        pool = labeled_pool_folder["pool"]
        csv = tmp_path / "mine.csv"  # relative paths are relative to this CSV's folder, not pool_dir or cwd
        relative = os.path.relpath(pool / "square" / "s2.bmp", tmp_path)
        csv.write_text(f"{relative},square\n{pool / 'disc' / 'd2.png'},disc\n")
        dm = _folder(labeled_pool_folder, str(csv))
        assert _by_name(dm) == {"s2.bmp": "square", "d2.png": "disc"} and dm.pool.skipped == []

    def test_missing_file_is_named(self, tmp_path: Path, labeled_pool_folder: dict[str, Path]) -> None:
        csv = tmp_path / "l.csv"
        pool = labeled_pool_folder["pool"]
        csv.write_text(f"{pool}/disc/d0.png,disc\n{pool}/disc/gone.png,disc\n")
        with pytest.raises(
            FileNotFoundError, match=r"1 of the 2 pool files listed in .*l\.csv do not exist: .*gone\.png"
        ):
            _folder(labeled_pool_folder, str(csv))

    def test_missing_csv_says_what_to_give(
        self, tmp_path: Path, labeled_pool_folder: dict[str, Path]
    ) -> None:
        with pytest.raises(
            FileNotFoundError, match=r"data\.pool_labels=.*nope\.csv: no such file.*'subfolders'"
        ):
            _folder(labeled_pool_folder, str(tmp_path / "nope.csv"))

    def test_unknown_class_counts_files(
        self, tmp_path: Path, labeled_pool_folder: dict[str, Path], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        pool = labeled_pool_folder["pool"]
        csv = tmp_path / "l.csv"
        rows = [
            ("disc/d0.png", "cat"),
            ("disc/d1.jpg", "disc"),
            ("square/s0.png", "dog"),
            ("square/s1.jpg", "dog"),
        ]
        csv.write_text("".join(f"{pool / f},{label}\n" for f, label in rows))
        monkeypatch.setattr("datamodules.folder.load_image_files", _no_decoding)
        with pytest.raises(
            ValueError,
            match=r"data\.pool_labels=.*l\.csv: pool classes .*: 'cat' \(1 files\), 'dog' \(2 files\)\.",
        ):
            _folder(labeled_pool_folder, str(csv))

    def test_files_outside_pool_dir(self, labeled_pool_folder: dict[str, Path]) -> None:
        csv = labeled_pool_folder["root"] / "val_as_pool.csv"
        csv.write_text("val/disc/v0.png,disc\n")
        with pytest.raises(ValueError, match=r"1 files listed in .*val_as_pool\.csv lie outside pool_dir"):
            _folder(labeled_pool_folder, str(csv))

    def test_same_file_two_labels_names_both_lines(
        self, tmp_path: Path, labeled_pool_folder: dict[str, Path], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        pool = labeled_pool_folder["pool"]
        csv = tmp_path / "l.csv"
        csv.write_text(
            f"path,label\n{pool}/disc/d0.png,disc\n{pool}/square/s0.png,square\n{pool}/disc/./d0.png,square\n"
        )
        monkeypatch.setattr("datamodules.folder.load_image_files", _no_decoding)
        with pytest.raises(
            ValueError,
            match=r"l\.csv: file .*disc/d0\.png has two different labels: 'disc' on line 2 and 'square' on line 4",
        ):
            _folder(labeled_pool_folder, str(csv))

    def test_same_file_same_label_is_kept_once(
        self, tmp_path: Path, labeled_pool_folder: dict[str, Path]
    ) -> None:
        pool = labeled_pool_folder["pool"]
        csv = tmp_path / "l.csv"
        csv.write_text(f"{pool}/disc/d0.png,disc\n{pool}/square/s0.png,square\n{pool}/disc/d0.png,disc\n")
        dm = _folder(labeled_pool_folder, str(csv))
        assert _by_name(dm) == {"d0.png": "disc", "s0.png": "square"} and len(dm.pool) == 2

    def test_spreadsheet_csv_utf8_and_validation_csv(
        self, tmp_path: Path, labeled_pool_folder: dict[str, Path]
    ) -> None:
        """A "CSV UTF-8" file from a spreadsheet (byte-order mark) has its header read as a header, for the
        pool labels and for a validation CSV alike: no phantom class 'label'."""
        root = labeled_pool_folder["root"]
        pool_csv = root / "bom_pool.csv"
        pool_csv.write_bytes(
            "path,label\npool/disc/d0.png,disc\npool/square/s0.png,square\n".encode("utf-8-sig")
        )
        val_csv = root / "bom_val.csv"
        rows = [f"val/{c}/v{i}.png,{c}\n" for c in ("disc", "square") for i in range(3)]
        val_csv.write_bytes(("path,label\n" + "".join(rows)).encode("utf-8-sig"))
        dm = FolderDataModule(
            pool_dir=str(labeled_pool_folder["pool"]),
            val=str(val_csv),
            pool_labels=str(pool_csv),
            image_size=16,
        )
        dm.setup()
        assert dm.class_names == ["disc", "square"] and len(dm.val) == 6
        assert _by_name(dm) == {"d0.png": "disc", "s0.png": "square"}

    def test_not_utf8_says_how_to_save(self, tmp_path: Path, labeled_pool_folder: dict[str, Path]) -> None:
        csv = tmp_path / "l.csv"
        csv.write_bytes(f"{labeled_pool_folder['pool']}/disc/d0.png,disc\nné.png,disc\n".encode("cp1252"))
        with pytest.raises(ValueError, match=r"l\.csv:2: not UTF-8 text .*'CSV UTF-8"):
            _folder(labeled_pool_folder, str(csv))
