"""Your own images: a folder as the pool (unlabeled, or labeled to benchmark selectors), a class-per-subfolder
folder or a CSV as validation."""

from __future__ import annotations

import logging
import os
from collections import Counter
from pathlib import Path
from typing import NamedTuple

import numpy as np

from datamodules.images import load_image_files, scan_images
from datamodules.pool import PoolDataModule
from imgselect.io.csvfiles import one_value_per_key, read_csv_rows
from imgselect.pool import ImageSet

log = logging.getLogger(__name__)


def read_labeled_csv(path: Path) -> tuple[list[Path], list[str]]:
    """Read ``path,label`` rows (a header row ``path,label`` is allowed); relative paths are taken
    relative to the CSV's folder.

    The file is read as UTF-8 (a spreadsheet's "CSV UTF-8" included). A file listed twice (the same path
    once normalised) with the same label is kept once; with two labels it is an error naming both lines.
    """
    entries: list[tuple[int, str, str]] = []
    files: dict[str, Path] = {}
    for i, (lineno, row) in enumerate(read_csv_rows(path)):
        if not row or row[0].startswith("#"):
            continue
        if i == 0 and [c.strip().lower() for c in row[:2]] == ["path", "label"]:
            continue
        if len(row) < 2 or not row[1].strip():
            raise ValueError(f"{path}:{lineno}: expected 'path,label', got {row!r}")
        p = Path(row[0].strip())
        p = p if p.is_absolute() else path.parent / p
        key = os.path.normpath(p)
        files.setdefault(key, p)
        entries.append((lineno, key, row[1].strip()))
    table = one_value_per_key(entries, path, key_name="file")
    return [files[k] for k in table], [label for _, label in table.values()]


class _Listing(NamedTuple):
    """A folder's image files, their class names (``None``: unlabeled), the images lying directly in the
    folder (outside any class subfolder) and ``(path, reason)`` for what the listing skipped."""

    paths: list[Path]
    labels: list[str] | None
    loose: list[Path]
    skipped: list[tuple[str, str]]


def _log_skipped(skipped: list[tuple[str, str]]) -> None:
    for path, reason in skipped:
        log.warning("not listed: %s (%s)", path, reason)


def _class_subfolders(root: Path, what: str) -> _Listing:
    """Every image under ``root/<class>/`` (recursive, linked folders followed), labeled with its ``<class>``
    folder's name."""
    found = scan_images(root)
    _log_skipped(found.skipped)
    paths: list[Path] = []
    labels: list[str] = []
    loose: list[Path] = []
    for p in found.files:
        parts = p.relative_to(root).parts
        if len(parts) > 1:
            paths.append(p)
            labels.append(parts[0])
        else:
            loose.append(p)
    if not paths:
        raise ValueError(f"{what} {root} has no class subfolders with images{_skipped_note(found.skipped)}")
    return _Listing(paths, labels, loose, found.skipped)


def _skipped_note(skipped: list[tuple[str, str]]) -> str:
    """`` (2 entries not listed: a: why; ...)`` for an error about an empty listing, ``""`` when none."""
    if not skipped:
        return ""
    shown = "; ".join(f"{p}: {why}" for p, why in skipped[:3])
    return f" ({len(skipped)} entries not listed: {shown}{' ...' if len(skipped) > 3 else ''})"


def _validation(path: Path) -> _Listing:
    if path.is_file():
        files, names = read_labeled_csv(path)
        return _Listing(files, names, [], [])
    if path.is_dir():
        return _class_subfolders(path, "validation folder")
    raise FileNotFoundError(
        f"validation set {path} does not exist: give a folder with one subfolder per class or a CSV of path,label"
    )


def validation_listing(path: Path) -> tuple[list[Path], list[str]]:
    """A labeled validation set's files and class names: a CSV of ``path,label`` or one subfolder per class."""
    listing = _validation(path)
    return listing.paths, listing.labels or []


def load_validation(path: Path, class_names: list[str], image_size: int, num_threads: int) -> ImageSet:
    """Decode a labeled validation set (see :func:`validation_listing`) whose labels are among ``class_names``;
    ``skipped`` holds what the listing skipped (broken links, ...) and the unreadable files."""
    listing = _validation(path)
    paths, names = listing.paths, listing.labels or []
    unknown = sorted(set(names) - set(class_names))
    if unknown:
        raise ValueError(f"validation labels {unknown} in {path} are not among classes={class_names}")
    index = {c: i for i, c in enumerate(class_names)}
    decoded = load_image_files(paths, image_size, num_threads, f"Decoding validation ({path})")
    return ImageSet(
        images=decoded.images,
        ids=[str(paths[i]) for i in decoded.kept],
        labels=np.array([index[names[i]] for i in decoded.kept], dtype=np.int64),
        source=str(path),
        skipped=listing.skipped + decoded.skipped,
    )


class FolderDataModule(PoolDataModule):
    """A pool folder of images (recursive: jpg, png, bmp, webp) and a labeled validation set.

    Every image is converted to RGB and resized to ``image_size``. Unreadable files are skipped with a
    warning naming them, and listed in ``pool.skipped`` / ``val.skipped`` (the run writes them to
    ``skipped.csv``); the run stops only when no readable pool image is left.

    The pool is unlabeled unless ``pool_labels`` says where its labels are; then ``pool.labels`` holds them
    (indices into ``class_names``, as ``val.labels`` does) and ``labels=oracle`` can measure selectors on
    a folder a person has already labeled, before a labeling budget is spent on a new one.

    Args:
        pool_dir: folder of pool images.
        val: a folder with one subfolder per class, or a CSV file of ``path,label`` rows.
        classes: class names in label order; default: the sorted names found in ``val``.
        pool_labels: ``None`` (an unlabeled pool: every image under ``pool_dir``), ``"subfolders"``
            (``pool_dir/<class>/**/*.jpg``; an image outside a class subfolder is an error) or a CSV of
            ``path,label`` rows (header optional; relative paths are relative to the CSV's folder): the
            pool is then exactly the listed files, which must lie under ``pool_dir``.
        image_size, batch_size, num_workers: see :class:`PoolDataModule`.
        num_threads: decoding threads.
        cache_dir: the cache root; the decoded pool is kept there (:mod:`imgselect.io.poolstore`: one
            memory-mapped file, decoded once for a set of files and shared by later jobs and DDP processes).
            ``None``: every job decodes into memory.
        cache: ``False`` decodes into memory, as ``cache_dir=None`` does (the top-level ``cache`` setting).
    """

    def __init__(
        self,
        pool_dir: str,
        val: str,
        classes: list[str] | None = None,
        pool_labels: str | None = None,
        image_size: int = 64,
        batch_size: int = 128,
        num_workers: int = 0,
        num_threads: int = 4,
        cache_dir: str | None = None,
        cache: bool = True,
    ) -> None:
        super().__init__(image_size=image_size, batch_size=batch_size, num_workers=num_workers)
        self.store = cache_dir if cache else None
        self.pool_dir = Path(pool_dir)
        self.val_path = Path(val)
        self.classes = list(classes) if classes else None
        self.pool_labels = pool_labels
        self.num_threads = num_threads

    def _pool_listing(self) -> _Listing:
        """The pool's files and, when ``pool_labels`` is set, their class names (nothing decoded yet)."""
        if not self.pool_dir.is_dir():
            raise FileNotFoundError(f"pool folder {self.pool_dir} does not exist or is not a folder")
        if self.pool_labels is None:
            found = scan_images(self.pool_dir)
            _log_skipped(found.skipped)
            if not found.files:
                raise FileNotFoundError(
                    f"no images (jpg, png, bmp, webp) found under {self.pool_dir}{_skipped_note(found.skipped)}"
                )
            return _Listing(found.files, None, [], found.skipped)
        if self.pool_labels == "subfolders":
            listing = _class_subfolders(self.pool_dir, "pool folder (data.pool_labels=subfolders)")
            loose = listing.loose
            if loose:
                raise ValueError(
                    f"data.pool_labels=subfolders, but {len(loose)} images lie directly in {self.pool_dir} "
                    f"with no class subfolder (e.g. {loose[0].name}): move them into pool_dir/<class>/, "
                    f"or list the labeled files in a CSV and give data.pool_labels=<that CSV>"
                )
            return listing
        csv_path = Path(self.pool_labels)
        if not csv_path.is_file():
            raise FileNotFoundError(
                f"data.pool_labels={self.pool_labels}: no such file; give null (an unlabeled pool), "
                f"'subfolders' (pool_dir/<class>/...) or a CSV of path,label rows"
            )
        paths, names = read_labeled_csv(csv_path)
        if not paths:
            raise ValueError(f"data.pool_labels={csv_path} lists no pool files")
        missing = [p for p in paths if not p.is_file()]
        if missing:
            raise FileNotFoundError(
                f"{len(missing)} of the {len(paths)} pool files listed in {csv_path} do not exist: "
                f"{', '.join(map(str, missing[:3]))}{' ...' if len(missing) > 3 else ''} "
                f"(relative paths are read relative to the CSV's folder {csv_path.parent})"
            )
        root = Path(os.path.abspath(self.pool_dir))
        outside = [p for p in paths if not Path(os.path.abspath(p)).is_relative_to(root)]
        if outside:
            raise ValueError(
                f"{len(outside)} files listed in {csv_path} lie outside pool_dir={self.pool_dir} "
                f"(e.g. {outside[0]}): set data.pool_dir to the folder that holds the pool"
            )
        return _Listing(paths, names, [], [])

    def _val_listing(self) -> tuple[list[Path], list[str]]:
        return validation_listing(self.val_path)

    def _check_pool_classes(self, pool_names: list[str], class_names: list[str]) -> None:
        """Every pool class must be a task class; checked on the listing, before anything is decoded."""
        counts = Counter(pool_names)
        unknown = {c: n for c, n in sorted(counts.items()) if c not in class_names}
        if unknown:
            found = ", ".join(f"{c!r} ({n} files)" for c, n in unknown.items())
            origin = "data.classes" if self.classes else f"the validation set {self.val_path}"
            raise ValueError(
                f"data.pool_labels={self.pool_labels}: pool classes not among the classes {class_names} "
                f"(from {origin}): {found}. Add them to data.classes (and give validation images for them), "
                f"or fix the pool's labels"
            )

    def load(self) -> tuple[ImageSet, ImageSet, list[str]]:
        listing = self._pool_listing()
        pool_paths, pool_names = listing.paths, listing.labels
        _, val_names = self._val_listing()
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
        if pool_names is not None:
            self._check_pool_classes(pool_names, class_names)
        index = {c: i for i, c in enumerate(class_names)}

        decoded = load_image_files(
            pool_paths, self.image_size, self.num_threads, f"Decoding pool ({self.pool_dir})", self.store
        )
        kept, skipped = decoded.kept, listing.skipped + decoded.skipped
        pool = ImageSet(
            images=decoded.images,
            ids=[str(pool_paths[i]) for i in kept],
            labels=None
            if pool_names is None
            else np.array([index[pool_names[i]] for i in kept], dtype=np.int64),
            source=str(self.pool_dir),
            skipped=skipped,
            hashes=decoded.hashes,
            known_fingerprint=decoded.fingerprint,
        )
        if skipped:
            log.warning(
                "%d pool entries were skipped (%d unreadable of the %d files listed, %d not listed)",
                len(skipped),
                len(decoded.skipped),
                len(pool_paths),
                len(listing.skipped),
            )
        if pool.labels is not None:
            counts = np.bincount(pool.labels, minlength=len(class_names))
            log.info(
                "pool labels (data.pool_labels=%s): %s",
                self.pool_labels,
                ", ".join(f"{c}={n}" for c, n in zip(class_names, counts.tolist(), strict=True)),
            )

        val = load_validation(self.val_path, class_names, self.image_size, self.num_threads)
        return pool, val, class_names
