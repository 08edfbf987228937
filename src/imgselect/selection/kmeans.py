"""FAISS K-means on embeddings, as plain functions on arrays."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class KMeansResult:
    """Outcome of one K-means run.

    Attributes:
        centroids: ``(k, d)`` float32 cluster centres.
        assignments: ``(n,)`` int64 index of the nearest centroid of each point.
        sq_distances: ``(n,)`` float32 squared Euclidean distance of each point to its centroid.
        objective: sum of squared distances (the K-means loss) at the final assignment.
        device: ``"gpu"`` or ``"cpu"``: where FAISS ran.
    """

    centroids: np.ndarray
    assignments: np.ndarray
    sq_distances: np.ndarray
    objective: float
    device: str

    @property
    def cluster_sizes(self) -> np.ndarray:
        """Number of points assigned to each of the ``k`` clusters (zeros included)."""
        return np.bincount(self.assignments, minlength=len(self.centroids))


def faiss_gpu_available() -> bool:
    """True when the installed ``faiss`` was built with GPU support and sees at least one GPU."""
    import faiss

    get_num_gpus = getattr(faiss, "get_num_gpus", None)
    return bool(get_num_gpus and get_num_gpus() > 0)


def kmeans(
    x: np.ndarray,
    k: int,
    *,
    niter: int = 20,
    nredo: int = 1,
    seed: int = 0,
    max_points_per_centroid: int | None = None,
    gpu: bool | str = "auto",
    verbose: bool = False,
) -> KMeansResult:
    """Cluster ``x`` into ``k`` clusters with FAISS (Euclidean distance).

    Args:
        x: ``(n, d)`` embeddings; converted to contiguous float32.
        k: number of clusters, ``1 <= k <= n``.
        niter: Lloyd iterations per run.
        nredo: independent runs; the one with the lowest objective is kept.
        seed: FAISS random seed (initial centroids); same seed, same result on the same device.
        max_points_per_centroid: FAISS subsamples the training set to ``k * max_points_per_centroid``
            points (its default is 256). ``None`` (our default) trains on every point.
        gpu: ``True``/``False``, or ``"auto"``: GPU when ``faiss.get_num_gpus() > 0``.
        verbose: let FAISS print one line per iteration.

    Returns:
        The centroids, every point's assignment and squared distance, and the objective.
    """
    import faiss

    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"embeddings must be a 2-D (n, d) array, got shape {x.shape}")
    n, d = x.shape
    if not 1 <= k <= n:
        raise ValueError(f"K-means needs 1 <= k <= n, got k={k} for n={n} points")
    if not np.isfinite(x).all():
        bad = int((~np.isfinite(x).all(axis=1)).sum())
        raise ValueError(f"{bad} of {n} embeddings contain NaN or inf; check the autoencoder's training loss")
    use_gpu = faiss_gpu_available() if gpu == "auto" else bool(gpu)

    km = faiss.Kmeans(
        d,
        k,
        niter=niter,
        nredo=nredo,
        seed=seed,
        gpu=use_gpu,
        verbose=verbose,
        spherical=False,
        max_points_per_centroid=max_points_per_centroid or n,
        min_points_per_centroid=1,  # silences FAISS's "too few points" warning; we handle small clusters
    )
    km.train(x)
    sq_dist, assign = km.index.search(x, 1)
    assignments = assign[:, 0].astype(np.int64)
    sq_distances = np.maximum(sq_dist[:, 0], 0.0).astype(np.float32)
    return KMeansResult(
        centroids=np.asarray(km.centroids, dtype=np.float32),
        assignments=assignments,
        sq_distances=sq_distances,
        objective=float(sq_distances.astype(np.float64).sum()),
        device="gpu" if use_gpu else "cpu",
    )
