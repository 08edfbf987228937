"""A user's precomputed embeddings (CLIP features computed elsewhere, or a previous run's ``embeddings.npy``)."""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Any

import numpy as np

from imgselect.embeddings.base import EmbedContext, EmbedOutput
from imgselect.io.csvfiles import formula_restore, read_user_text

log = logging.getLogger(__name__)

IDS_SUFFIX = ".ids.txt"


def ids_path_for(path: Path) -> Path:
    """Where the ids of ``embeddings.npy`` live by default: ``embeddings.ids.txt`` beside it."""
    return path.with_suffix(IDS_SUFFIX)


def read_ids(path: Path) -> list[str]:
    """Image ids, one per line, or a CSV with an ``image_id`` (or ``path``/``id``) column (UTF-8; a
    ``selection.csv`` included: its formula-safe cells are read back as the real ids)."""
    if not path.is_file():
        raise FileNotFoundError(
            f"embedding ids file {path} does not exist: give embedding.ids=<file with one image id per line, "
            f"in the order of the rows of the embeddings>"
        )
    text = read_user_text(path)
    lines = text.splitlines()
    if path.suffix.lower() == ".csv" and lines:
        rows = [[formula_restore(c) for c in r] for r in csv.reader(lines)]
        header = [c.strip().lower() for c in rows[0]]
        for col in ("image_id", "path", "id"):
            if col in header:
                i = header.index(col)
                return [r[i].strip() for r in rows[1:] if r]
        return [r[0].strip() for r in rows if r]
    return [ln.strip() for ln in lines if ln.strip()]


class FileEmbedding:
    """Embeddings read from a file, matched to the pool by image id.

    ``path`` is a ``.npy`` of shape ``(n, d)`` with its ids in ``ids`` (default: ``<path>.ids.txt`` beside it,
    as every run writes its own ``embeddings.npy``), or a ``.npz`` with arrays ``embeddings`` and ``ids``.
    Rows are matched to pool images by id (exactly, else by path relative to the pool folder); extra rows
    are ignored; a pool image without a row is an error naming it.

    Args:
        path: the embeddings file.
        ids: the ids file (one id per line, or a CSV with an ``image_id`` column); ``None``: beside ``path``.
    """

    name = "file"
    seeded = False
    cacheable = False
    from_pretraining = False

    def __init__(self, path: str, ids: str | None = None) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(
                f"embedding.path={self.path}: no such file. Give a .npy of (n, d) embeddings (ids in "
                f"embedding.ids) or a .npz with 'embeddings' and 'ids'"
            )
        if self.path.suffix not in (".npy", ".npz"):
            raise ValueError(f"embedding.path={self.path}: expected a .npy or .npz file")
        self.ids = Path(ids) if ids else None

    def settings(self) -> dict[str, Any]:
        return {"path": str(self.path), "ids": str(self.ids or "")}

    def load(self) -> tuple[np.ndarray, list[str]]:
        """The file's ``(n, d)`` array and its ``n`` ids (checked for shape, length and finiteness)."""
        if self.path.suffix == ".npz":
            with np.load(self.path, allow_pickle=False) as z:
                if "embeddings" not in z or "ids" not in z:
                    raise ValueError(
                        f"{self.path} must hold arrays 'embeddings' and 'ids', has {list(z.keys())}"
                    )
                x, ids = np.asarray(z["embeddings"]), [str(i) for i in z["ids"]]
        else:
            x = np.load(self.path, mmap_mode="r", allow_pickle=False)
            ids = read_ids(self.ids or ids_path_for(self.path))
        if x.ndim != 2:
            raise ValueError(f"{self.path} holds an array of shape {x.shape}; embeddings must be (n, d)")
        if len(ids) != len(x):
            raise ValueError(f"{self.path} has {len(x)} rows but its ids file lists {len(ids)} ids")
        if len(set(ids)) != len(ids):
            raise ValueError(f"the ids of {self.path} are not unique")
        return x, ids

    def compute(self, ctx: EmbedContext) -> EmbedOutput:
        x, ids = self.load()
        rows = {i: r for r, i in enumerate(ids)}
        pool_ids = ctx.pool.ids
        found = [rows.get(i, -1) for i in pool_ids]
        if all(r < 0 for r in found):  # ids relative to the pool folder (features computed elsewhere)
            root = Path(ctx.pool.source)
            rel = {str(Path(i)): r for i, r in rows.items()}
            found = [rel.get(_relative(p, root), -1) for p in pool_ids]
        missing = [pool_ids[k] for k, r in enumerate(found) if r < 0]
        if missing:
            raise ValueError(
                f"{self.path} has no row for {len(missing)} of the {len(pool_ids)} pool images "
                f"(e.g. {missing[:3]}); compute embeddings for every pool image, keyed by the ids in selection.csv"
            )
        emb = np.ascontiguousarray(x[np.asarray(found)], dtype=np.float32)
        if not np.isfinite(emb).all():
            bad = int((~np.isfinite(emb).all(axis=1)).sum())
            raise ValueError(f"{bad} rows of {self.path} used by the pool contain NaN or inf")
        log.info("embeddings: %d x %d from %s (%d rows unused)", *emb.shape, self.path, len(x) - len(emb))
        return EmbedOutput(embeddings=emb, metrics={"rows_in_file": len(x), "dim": int(emb.shape[1])})


def _relative(path: str, root: Path) -> str:
    try:
        return str(Path(path).relative_to(root))
    except ValueError:
        return path
