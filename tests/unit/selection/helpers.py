"""Brute-force numpy references and data shared by the selection tests."""

from __future__ import annotations

import numpy as np


def pairwise_sq(a: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
    """Squared Euclidean distances between the rows of ``a`` and ``b`` (default ``a``), in float64."""
    a64 = np.asarray(a, dtype=np.float64)
    b64 = a64 if b is None else np.asarray(b, dtype=np.float64)
    return ((a64[:, None, :] - b64[None, :, :]) ** 2).sum(-1)


def blobs(
    centres: list[list[float]] | np.ndarray, sizes: list[int], std: float, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian blobs around ``centres``: float32 points and the blob of each."""
    rng = np.random.default_rng(seed)
    c = np.asarray(centres, dtype=np.float64)
    x = np.concatenate([ci + rng.normal(0, std, (s, c.shape[1])) for ci, s in zip(c, sizes, strict=True)])
    return x.astype(np.float32), np.repeat(np.arange(len(sizes)), sizes)


def radius_with_margin(d: np.ndarray, quantile: float, margin: float = 1e-3) -> float:
    """A radius near the ``quantile`` of the distances ``d`` that lies ``margin`` away from every one of them,
    so float32 rounding cannot move a pair across it."""
    vals = np.unique(d[np.triu_indices(len(d), k=1)])
    i = int(quantile * (len(vals) - 1))
    while vals[i + 1] - vals[i] < 2 * margin:
        i += 1
    return float((vals[i] + vals[i + 1]) / 2)


def brute_farthest_first(
    x: np.ndarray, n_picks: int, chosen: list[int] | None = None, first: int | None = None
) -> tuple[list[int], list[float]]:
    """Greedy k-center by recomputing every distance at every step; ties to the lowest index."""
    d = np.sqrt(pairwise_sq(x))
    picks: list[int] = []
    scores: list[float] = []
    done = list(chosen or [])
    if not done:
        assert first is not None
        picks, scores, done = [first], [np.nan], [first]
    while len(picks) < n_picks:
        nearest = d[:, done].min(axis=1)
        nearest[done] = -1.0
        nxt = int(np.argmax(nearest))
        picks.append(nxt)
        scores.append(float(nearest[nxt]))
        done.append(nxt)
    return picks, scores
