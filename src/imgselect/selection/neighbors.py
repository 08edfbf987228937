"""Exact nearest-neighbour and distance helpers on FAISS, as plain functions on arrays.

Every helper uses an exact ``IndexFlatL2`` (no approximation: selections must not depend on an index's
recall) and moves it to every GPU with ``faiss.index_cpu_to_all_gpus`` when :func:`faiss_gpu_available`
(``gpu="auto"``). FAISS works in squared Euclidean distance; so do these helpers, and they clamp the tiny
negative values that ``|x|² + |y|² - 2x·y`` can give for (near-)identical points to 0.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from imgselect.selection.kmeans import count_nonfinite_rows, faiss_gpu_available, require_faiss

log = logging.getLogger(__name__)

# Queries per FAISS range search call: bounds the memory of one call's result and lets us stop early when
# the total number of pairs passes the caller's limit.
RANGE_SEARCH_BATCH = 4096


class TooManyNeighbors(ValueError):
    """A range search found more pairs than the caller allowed (``max_pairs``)."""


def as_float32_2d(x: np.ndarray, name: str = "embeddings") -> np.ndarray:
    """``x`` as a contiguous float32 ``(n, d)`` array with finite values.

    Raises:
        ValueError: ``x`` is not 2-D, is empty, or holds NaN/inf.
    """
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (n, d) array, got shape {x.shape}")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(
            f"{name} must hold at least one point of at least one dimension, got shape {x.shape}"
        )
    bad = count_nonfinite_rows(x)
    if bad:
        raise ValueError(f"{bad} of {len(x)} {name} contain NaN or inf")
    return x


def _use_gpu(gpu: bool | str) -> bool:
    return faiss_gpu_available() if gpu == "auto" else bool(gpu)


def flat_index(x: np.ndarray, gpu: bool | str = "auto") -> Any:
    """An exact L2 index holding ``x`` (float32, contiguous), on every GPU when ``gpu`` says so."""
    require_faiss()
    import faiss

    index: Any = faiss.IndexFlatL2(x.shape[1])
    if _use_gpu(gpu):
        index = faiss.index_cpu_to_all_gpus(index)
    index.add(x)
    return index


def knn(x: np.ndarray, k: int, *, gpu: bool | str = "auto") -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest neighbours of every point of ``x`` among the other points of ``x``.

    A point is never its own neighbour, even when duplicates of it exist (those are neighbours at
    distance 0, as they should be).

    Args:
        x: ``(n, d)`` points.
        k: neighbours per point, ``1 <= k <= n - 1``.
        gpu: ``True``/``False``, or ``"auto"``: GPU when FAISS sees one.

    Returns:
        ``(sq_distances, indices)``, both ``(n, k)``, nearest first: float32 squared distances and int64
        indices into ``x``.
    """
    x = as_float32_2d(x)
    n = len(x)
    if not 1 <= k <= n - 1:
        raise ValueError(f"knn needs 1 <= k <= n - 1, got k={k} for n={n} points")
    sq, idx = flat_index(x, gpu).search(x, k + 1)
    # Drop the point itself; where ties at distance 0 pushed it out of the k + 1 results, drop the last.
    is_self = idx == np.arange(n)[:, None]
    no_self = ~is_self.any(axis=1)
    is_self[no_self, -1] = True
    keep = ~is_self
    sq = np.maximum(sq[keep].reshape(n, k), 0.0).astype(np.float32)
    return sq, idx[keep].reshape(n, k).astype(np.int64)


def range_search(
    x: np.ndarray, radius: float, *, max_pairs: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All ordered pairs ``(i, j)`` of points of ``x`` closer than ``radius``, as a CSR graph.

    Pair ``(i, i)`` is included (distance 0). Runs on CPU: FAISS's GPU flat indexes do not implement
    range search.

    Args:
        x: ``(n, d)`` points.
        radius: Euclidean radius (not squared); pairs with distance strictly below it are returned.
        max_pairs: raise :class:`TooManyNeighbors` as soon as more pairs than this are found (guards
            memory: each pair costs 12 bytes here and more in callers).

    Returns:
        ``(lims, indices, sq_distances)``: the neighbours of point ``i`` are
        ``indices[lims[i]:lims[i + 1]]`` (int64, ascending distance not guaranteed) at squared distances
        ``sq_distances[lims[i]:lims[i + 1]]`` (float32); ``lims`` is ``(n + 1,)`` int64.
    """
    x = as_float32_2d(x)
    if not np.isfinite(radius) or radius <= 0:
        raise ValueError(f"range search needs a positive finite radius, got {radius}")
    index = flat_index(x, gpu=False)
    n = len(x)
    counts = np.zeros(n, dtype=np.int64)
    idx_parts: list[np.ndarray] = []
    sq_parts: list[np.ndarray] = []
    total = 0
    for start in range(0, n, RANGE_SEARCH_BATCH):
        stop = min(n, start + RANGE_SEARCH_BATCH)
        lims, sq, idx = index.range_search(x[start:stop], float(radius) ** 2)
        total += int(lims[-1])
        if max_pairs is not None and total > max_pairs:
            raise TooManyNeighbors(
                f"more than {max_pairs:,} pairs within radius {radius:.4g} (found {total:,} after "
                f"{stop} of {n} points)"
            )
        counts[start:stop] = np.diff(lims)
        idx_parts.append(idx.astype(np.int64))
        sq_parts.append(np.maximum(sq, 0.0).astype(np.float32))
    out_lims = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(counts, out=out_lims[1:])
    return out_lims, np.concatenate(idx_parts), np.concatenate(sq_parts)


def estimate_pairs(x: np.ndarray, radius: float, *, sample: int = 1000, seed: int = 0) -> float:
    """Estimated number of ordered pairs of ``x`` within ``radius`` (self-pairs included), from the range
    search of ``sample`` random points against all of ``x``: exact when ``sample >= n``.

    Lets a caller refuse a graph far too large for memory in a second instead of after most of a full range
    search.
    """
    x = as_float32_2d(x)
    n = len(x)
    if sample >= n:
        rows = np.arange(n)
    else:
        rows = np.sort(np.random.default_rng(seed).choice(n, size=sample, replace=False))
    index = flat_index(x, gpu=False)
    lims, _, _ = index.range_search(np.ascontiguousarray(x[rows]), float(radius) ** 2)
    return float(lims[-1]) * n / len(rows)


def sq_distances_to(x: np.ndarray, queries: np.ndarray, *, gpu: bool | str = "auto") -> np.ndarray:
    """Squared Euclidean distances of every point of ``x`` to each of a few ``queries``.

    Args:
        x: ``(n, d)`` points.
        queries: ``(q, d)`` or ``(d,)`` query points (a few: the result is dense ``(n, q)``).
        gpu: ``True``/``False``, or ``"auto"``.

    Returns:
        ``(n, q)`` float32 squared distances, column ``j`` for ``queries[j]``.
    """
    x = as_float32_2d(x)
    q = as_float32_2d(np.atleast_2d(queries), name="queries")
    if q.shape[1] != x.shape[1]:
        raise ValueError(f"queries have dimension {q.shape[1]} but the points have {x.shape[1]}")
    # The queries are the database: searching every point for all q of them returns the full (n, q) matrix.
    sq, idx = flat_index(q, gpu).search(x, len(q))
    out = np.empty((len(x), len(q)), dtype=np.float32)
    out[np.arange(len(x))[:, None], idx] = np.maximum(sq, 0.0)
    return out


def nearest_other_label(
    x: np.ndarray, labels: np.ndarray, *, gpu: bool | str = "auto"
) -> tuple[np.ndarray, np.ndarray]:
    """For each point, its nearest point carrying a different label.

    One exact index per label over the points without that label, searched by the points with it:
    ``n²·d`` work in all, like one full distance matrix, without ever holding one.

    Args:
        x: ``(n, d)`` points.
        labels: ``(n,)`` integer label of each point; at least two distinct labels.
        gpu: ``True``/``False``, or ``"auto"``.

    Returns:
        ``(sq_distances, indices)``, both ``(n,)``: float32 squared distance to, and int64 index of, the
        nearest point whose label differs.
    """
    x = as_float32_2d(x)
    labels = np.asarray(labels)
    if labels.shape != (len(x),):
        raise ValueError(f"labels must have shape ({len(x)},) to match the points, got {labels.shape}")
    values = np.unique(labels)
    if len(values) < 2:
        raise ValueError(f"nearest_other_label needs at least two distinct labels, got {values.tolist()}")
    sq_out = np.empty(len(x), dtype=np.float32)
    idx_out = np.empty(len(x), dtype=np.int64)
    for value in values:
        inside = np.flatnonzero(labels == value)
        outside = np.flatnonzero(labels != value)
        sq, idx = flat_index(np.ascontiguousarray(x[outside]), gpu).search(np.ascontiguousarray(x[inside]), 1)
        sq_out[inside] = np.maximum(sq[:, 0], 0.0)
        idx_out[inside] = outside[idx[:, 0]]
    return sq_out, idx_out
