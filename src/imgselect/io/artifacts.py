"""Files a run leaves for a person: selection.csv, pictures, JSON; each written atomically (:func:`atomic_path`)."""

from __future__ import annotations

import csv
import json
import math
import os
import uuid
from collections.abc import Collection, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torchvision.utils import make_grid, save_image

from imgselect.io.csvfiles import formula_safe, read_csv_rows
from imgselect.pool import ImageSet
from imgselect.run.jobfolder import free_name
from imgselect.selection.selectors import Selection

# tile: the number drawn on the contact sheet (row n = tile n); content_hash: the key a person's labels use
SELECTION_COLUMNS = [
    "tile", "pool_index", "image_id", "content_hash", "cluster", "distance", "cluster_size", "rule", "score",
]  # fmt: skip


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A fresh temporary path beside ``path`` for a writer to create; it replaces ``path`` in one rename
    when the block ends without error, and is removed when it fails, leaving ``path`` as it was.

    The temporary name keeps ``path``'s suffix (writers such as ``save_image`` and ``savefig`` choose the
    format by it) and starts with a dot. The file is created by the writer, so it gets the usual permissions.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json_atomic(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as JSON so that readers never see a half-written file."""
    with atomic_path(path) as tmp, tmp.open("w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, sort_keys=False, default=_json_default)
        f.write("\n")


def write_csv_atomic(path: str | Path, rows: Iterable[Sequence[object]]) -> None:
    """Write ``rows`` (a header row first, if any) as a UTF-8 CSV, atomically (see :func:`atomic_path`).

    A string cell a spreadsheet would run as a formula is written with a leading ``'``
    (:func:`imgselect.io.csvfiles.formula_safe`; numbers such as ``-1`` are left alone); our readers undo it.
    """
    with atomic_path(path) as tmp, tmp.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        for row in rows:
            w.writerow([formula_safe(c) for c in row])


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"{type(o).__name__} is not JSON serialisable")


def write_selection_csv(
    path: str | Path, selection: Selection, ids: Sequence[str], hashes: Sequence[str] | None = None
) -> None:
    """One row per chosen image, in pick order, numbered from 1 like the contact sheet's tiles (atomically;
    formula-safe cells: see :func:`write_csv_atomic`)."""

    def rows() -> Iterator[Sequence[object]]:
        yield SELECTION_COLUMNS
        scores = selection.score if selection.score is not None else np.full(len(selection), np.nan)
        for i, idx in enumerate(selection.indices):
            dist, score = float(selection.distance[i]), float(scores[i])
            yield [
                i + 1,
                int(idx),
                ids[int(idx)],
                hashes[int(idx)] if hashes is not None else "",
                int(selection.cluster[i]),
                "" if math.isnan(dist) else f"{dist:.6g}",
                int(selection.cluster_size[i]),
                selection.rule[i],
                "" if math.isnan(score) else f"{score:.6g}",  # the rule's own number (typicality, ...)
            ]

    write_csv_atomic(path, rows())


def write_selection(
    out_dir: str | Path, selection: Selection, pool: ImageSet, keep: Collection[Path] = ()
) -> dict[str, str]:
    """Write ``selection.csv`` and ``selection.png`` (numbered contact sheet of the chosen images: tile n is
    row n); return their paths. A ``selection.csv`` among ``keep`` (a person labeled it and this run reads it)
    is left alone: the new one is ``selection-<time>.csv``."""
    out_dir = Path(out_dir)
    csv_path = free_name(out_dir / "selection.csv", keep)
    write_selection_csv(csv_path, selection, pool.ids, pool.hashes)
    sheet = save_numbered_sheet(out_dir / "selection.png", pool.images[torch.as_tensor(selection.indices)])
    return {"selection_csv": str(csv_path), "contact_sheet": str(sheet)}


def read_selection_csv(path: str | Path) -> list[dict[str, str]]:
    """Rows of a ``selection.csv`` as dictionaries of strings (formula-safe cells restored: the real ids)."""
    rows = read_csv_rows(path)
    if not rows:
        return []
    header = rows[0][1]
    return [dict(zip(header, row, strict=False)) for _, row in rows[1:] if row]


def save_reconstructions(
    path: str | Path, originals: torch.Tensor, reconstructions: torch.Tensor, min_side: int = 64
) -> Path:
    """Originals (top row) over their reconstructions (bottom row), as in the paper's Fig. 4.

    Both are float tensors in ``[0, 1]`` of shape ``(n, 3, h, w)``.
    """
    x = torch.cat([originals, reconstructions]).clamp(0, 1).float().cpu()
    side = x.shape[-1]
    if side < min_side:
        x = torch.nn.functional.interpolate(x, scale_factor=math.ceil(min_side / side), mode="nearest")
    path = Path(path)
    with atomic_path(path) as tmp:
        save_image(make_grid(x, nrow=len(originals), padding=2, pad_value=1.0), tmp)
    return path


def save_confusion_matrices(
    path: str | Path, matrices: dict[str, list[list[int]]], class_names: Sequence[str]
) -> Path:
    """Confusion matrices side by side (rows: true class, columns: predicted), counts written in the cells."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(matrices)
    size = max(3.5, 0.45 * len(class_names) + 2)
    fig, axes = plt.subplots(1, n, figsize=(size * n, size), squeeze=False)
    for ax, (title, cm) in zip(axes[0], matrices.items(), strict=True):
        m = np.asarray(cm)
        ax.imshow(m, cmap="Blues")
        ax.set_title(title)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ticks = np.arange(len(class_names))
        ax.set_xticks(ticks, class_names, rotation=45, ha="right", fontsize=8)
        ax.set_yticks(ticks, class_names, fontsize=8)
        for (r, c), v in np.ndenumerate(m):
            ax.text(
                c,
                r,
                str(v),
                ha="center",
                va="center",
                fontsize=7,
                color="white" if v > m.max() / 2 else "black",
            )
    fig.tight_layout()
    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=110)
    finally:
        plt.close(fig)
    return path


def _font(size: int) -> Any:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: a fixed bitmap font
        return ImageFont.load_default()


def save_numbered_sheet(
    path: str | Path, images: torch.Tensor, min_side: int = 64, max_images: int = 1024
) -> Path:
    """A grid of ``images`` (``(n, 3, h, w)`` uint8) with tile numbers 1..n drawn on them (row-major): tile
    ``n`` is row ``n`` of ``selection.csv``. Small images are upscaled so they and their numbers stay legible."""
    images = images[:max_images]
    if len(images) == 0:
        raise ValueError("no images to draw")
    side = int(images.shape[-1])
    scale = max(1, math.ceil(min_side / side))
    tile, pad = side * scale, 2
    ncol = math.ceil(math.sqrt(len(images)))
    nrow = math.ceil(len(images) / ncol)
    sheet = Image.new("RGB", (ncol * (tile + pad) + pad, nrow * (tile + pad) + pad), "white")
    draw = ImageDraw.Draw(sheet)
    font = _font(max(10, tile // 6))
    for k, img in enumerate(images):
        x = pad + (k % ncol) * (tile + pad)
        y = pad + (k // ncol) * (tile + pad)
        im = Image.fromarray(img.permute(1, 2, 0).numpy())
        sheet.paste(im.resize((tile, tile), Image.Resampling.NEAREST), (x, y))
        label = str(k + 1)
        box = draw.textbbox((x + 2, y + 1), label, font=font)
        draw.rectangle((box[0] - 1, box[1] - 1, box[2] + 1, box[3] + 1), fill="black")
        draw.text((x + 2, y + 1), label, fill="yellow", font=font)
    path = Path(path)
    with atomic_path(path) as tmp:
        sheet.save(tmp)
    return path
