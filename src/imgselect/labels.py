"""Labels for the chosen images: revealed from the dataset (benchmarks) or read from a person's CSV."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from imgselect.csvfiles import one_value_per_key, read_csv_rows

log = logging.getLogger(__name__)


class Labeler(Protocol):
    """Where the chosen images' labels come from (``labels`` config group)."""

    name: str

    def labels_for(
        self, ids: Sequence[str], indices: np.ndarray, pool_labels: np.ndarray | None, class_names: list[str]
    ) -> np.ndarray:
        """``(len(ids),)`` int64 class indices of the chosen images."""
        ...


class OracleLabels:
    """Reveal the dataset's own labels for the chosen images only (benchmark mode)."""

    name = "oracle"

    def labels_for(
        self, ids: Sequence[str], indices: np.ndarray, pool_labels: np.ndarray | None, class_names: list[str]
    ) -> np.ndarray:
        if pool_labels is None:
            raise ValueError(
                "labels=oracle needs a pool with known labels: a benchmark dataset, or a labeled folder "
                "(data=folder data.pool_labels=subfolders, or data.pool_labels=<CSV of path,label>); for "
                "your own unlabeled images label selection.csv and run with labels=csv labels.path=<your file>"
            )
        return np.asarray(pool_labels)[np.asarray(indices)].astype(np.int64)


class CsvLabels:
    """Read ``image_id,label`` rows written by a person (production mode).

    ``label`` is a class name (as in ``class_names``) or its index. A header row is optional.
    ``selection.csv`` with a ``label`` column added is accepted as it is. The file is read as UTF-8 (a
    spreadsheet's "CSV UTF-8" included); an image listed twice with two labels is an error naming both lines.

    Args:
        path: the CSV file.
    """

    name = "csv"

    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def read(self) -> dict[str, str]:
        if not self.path.is_file():
            raise FileNotFoundError(
                f"labels.path={self.path}: no such file. Write one 'image_id,label' row per image of selection.csv"
            )
        rows = read_csv_rows(self.path)
        if not rows:
            raise ValueError(f"{self.path} is empty")
        header = [c.strip().lower() for c in rows[0][1]]
        has_header = "image_id" in header and "label" in header
        i_id, i_label = (header.index("image_id"), header.index("label")) if has_header else (0, 1)
        entries: list[tuple[int, str, str]] = []
        for lineno, row in rows[1:] if has_header else rows:
            if not row or not "".join(row).strip():
                continue
            if len(row) <= max(i_id, i_label) or not row[i_label].strip():
                raise ValueError(f"{self.path}:{lineno}: expected image_id and label, got {row!r}")
            entries.append((lineno, row[i_id].strip(), row[i_label].strip()))
        return {key: label for key, (_, label) in one_value_per_key(entries, self.path).items()}

    def labels_for(
        self, ids: Sequence[str], indices: np.ndarray, pool_labels: np.ndarray | None, class_names: list[str]
    ) -> np.ndarray:
        table = self.read()
        missing = [i for i in ids if i not in table]
        if missing:
            raise ValueError(
                f"{self.path} has no label for {len(missing)} of the {len(ids)} chosen images "
                f"(e.g. {missing[:3]}); label every image_id in selection.csv"
            )
        index = {name: i for i, name in enumerate(class_names)}
        out = []
        for image_id in ids:
            raw = table[image_id]
            if raw in index:
                out.append(index[raw])
            elif raw.isdigit() and int(raw) < len(class_names):
                out.append(int(raw))
            else:
                raise ValueError(
                    f"{self.path}: label {raw!r} of {image_id} is not one of the classes {class_names} (or their index)"
                )
        return np.asarray(out, dtype=np.int64)
