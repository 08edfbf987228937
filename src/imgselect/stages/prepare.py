"""Around the selection: near-duplicate removal, the pool's own files (a video's crop manifest) and the
embedding map."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig

from imgselect.embedding_map import project_2d, save_embedding_map
from imgselect.embeddings.pixels import pixels_pca
from imgselect.io.artifacts import write_csv_atomic
from imgselect.labeling.labels import LabeledSet
from imgselect.pool import ImageSet, PoolSource
from imgselect.selection.dedup import (
    DEFAULT_MAX_BITS,
    DEFAULT_MIN_SIMILARITY,
    METHODS,
    Dedup,
    dhash,
    near_duplicates,
)
from imgselect.selection.selectors import Selection

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DedupSettings:
    """``dedup`` config group: ``method`` (``dhash``: perceptual hash of the pixels, no model; ``embedding``:
    cosine similarity of the selection's embedding) and its threshold."""

    method: str
    max_bits: int = DEFAULT_MAX_BITS
    min_similarity: float = DEFAULT_MIN_SIMILARITY


def dedup_settings(cfg: DictConfig | None) -> DedupSettings | None:
    """The ``dedup`` group as settings; ``None`` for ``dedup=none`` (or no group)."""
    if cfg is None or str(cfg.get("method", "none")) in ("none", "null", "None"):
        return None
    method = str(cfg.method)
    if method not in METHODS:
        raise ValueError(f"dedup.method={method!r}: use none, {' or '.join(METHODS)}")
    return DedupSettings(
        method=method,
        max_bits=int(cfg.get("max_bits", DEFAULT_MAX_BITS)),
        min_similarity=float(cfg.get("min_similarity", DEFAULT_MIN_SIMILARITY)),
    )


def find_duplicates(settings: DedupSettings, pool: ImageSet, embeddings: np.ndarray | None) -> Dedup:
    """Near-duplicate groups of the pool by ``settings.method`` (``embedding`` needs ``embeddings``)."""
    if settings.method == "embedding":
        if embeddings is None:
            raise ValueError(
                "dedup=embedding compares the selection's embeddings, and this selector uses none "
                "(selector=random); use dedup=dhash"
            )
        found = near_duplicates(embeddings, "embedding", min_similarity=settings.min_similarity)
    else:
        found = near_duplicates(dhash(pool.images), "dhash", max_bits=settings.max_bits)
    log.info(
        "near-duplicates (%s, threshold %s): %d of %d images removed, %d kept",
        found.method, found.threshold, found.removed, len(found), len(found.keep),
    )  # fmt: skip
    return found


def write_duplicates(path: Path, found: Dedup, pool: ImageSet) -> None:
    """``duplicates.csv``: each removed image, the image that stood for it, and their distance."""
    unit = "bits" if found.method == "dhash" else "1-cosine"
    rows: list[list[object]] = [["image_id", "representative_id", f"distance_{unit}"]]
    rows += [[a, b, f"{d:.6g}"] for a, b, d in found.rows(pool.ids)]
    write_csv_atomic(path, rows)


def write_pool_files(out_dir: Path, dm: PoolSource) -> None:
    """A video pool's ``manifest.csv`` (crop id, file, video, frame, time, box, score) in the job folder."""
    extraction = dm.extraction()
    if extraction is not None:
        write_csv_atomic(out_dir / "manifest.csv", extraction.manifest)


def pool_info(dm: PoolSource) -> dict[str, Any]:
    """What a video pool's extraction did, for ``result.json``."""
    extraction = dm.extraction()
    return dict(extraction.info) if extraction is not None else {}


MAP_PIXEL_DIM = 50  # principal components of the pixels a map starts from when the selection has no embedding


def map_features(pool: ImageSet, embeddings: np.ndarray | None) -> tuple[np.ndarray, str]:
    """The selection's embeddings, or (for a selector without one) the pixels at 16x16 on their 50 leading
    principal components (streamed: never the whole pool as floats at once; the map's own PCA or t-SNE
    starts from them)."""
    if embeddings is not None:
        return embeddings, "embedding"
    features = 3 * 16 * 16
    return pixels_pca(pool.images, 16, min(MAP_PIXEL_DIM, features, len(pool)))[0], "pixels"


@dataclass(frozen=True)
class MapSettings:
    """``embedding_map`` config: ``method`` (``auto``: t-SNE when scikit-learn is installed, else PCA; ``pca``;
    ``tsne``; ``none``: no map) and ``max_points`` (t-SNE is fitted on at most this many, the chosen among
    them; the rest are placed by their nearest fitted neighbours)."""

    method: str = "auto"
    max_points: int = 2000


def map_settings(cfg: DictConfig | None) -> MapSettings | None:
    """The ``embedding_map`` keys as settings; ``None`` for ``method: none``."""
    if cfg is None:
        return MapSettings()
    method = str(cfg.get("method", "auto"))
    if method in ("none", "null", "None"):
        return None
    return MapSettings(method=method, max_points=int(cfg.get("max_points", 2000)))


def write_map(
    out_dir: Path,
    settings: MapSettings,
    pool: ImageSet,
    embeddings: np.ndarray | None,
    selection: Selection,
    known: LabeledSet,
    class_names: list[str],
    seed: int,
) -> dict[str, Any]:
    """``embedding_map.png``: the pool in 2-D, the chosen images numbered, colored by class where labels are
    known (the pool's own in a benchmark, else a person's from earlier rounds; the rest grey)."""
    x, features = map_features(pool, embeddings)
    chosen = np.asarray(selection.indices)
    keep = chosen if len(chosen) <= settings.max_points else None
    xy, method = project_2d(x, settings.method, seed=seed, max_points=settings.max_points, keep=keep)
    if pool.labels is not None:
        labels: np.ndarray | None = pool.labels
    elif len(known):
        labels = np.full(len(pool), -1, dtype=np.int64)  # negative: not known, drawn grey
        labels[known.indices] = known.labels
    else:
        labels = None
    what = "labeled before" if pool.labels is None and len(known) else ""
    path = save_embedding_map(
        out_dir / "embedding_map.png",
        xy,
        chosen,
        labels,
        class_names if labels is not None else None,
        title=f"{features} ({method}); {len(chosen)} chosen" + (f", {len(known)} {what}" if what else ""),
    )
    return {"path": str(path), "method": method, "features": features}
