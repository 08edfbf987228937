"""Selectors: from a pool (and, for K-means, its embeddings) to ``budget`` distinct pool indices."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from imgselect.selection.kmeans import kmeans
from imgselect.selection.picks import fill_farthest, pick_nearest, pick_random

log = logging.getLogger(__name__)

PickRule = Literal["random", "centroid"]


@dataclass
class Selection:
    """The chosen images, one row per pick.

    Attributes:
        indices: ``(budget,)`` distinct pool indices.
        cluster: cluster of each pick (``-1`` when no clustering was done).
        distance: Euclidean distance of each pick to its cluster's centroid (NaN without clustering).
        cluster_size: size of each pick's cluster (0 without clustering).
        rule: how each pick was made: ``random``/``centroid`` (one per cluster), ``fill`` (extra pick
            for an empty cluster), ``uniform`` (random selector).
        notes: warnings a person should read (empty clusters, duplicates, ...).
        stats: numbers worth keeping (K-means objective, device, empty clusters, ...).
    """

    indices: np.ndarray
    cluster: np.ndarray
    distance: np.ndarray
    cluster_size: np.ndarray
    rule: list[str]
    notes: list[str] = field(default_factory=list)
    stats: dict[str, float | int | str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.indices)


def check_budget(budget: int, n_pool: int, source: str = "the pool") -> None:
    """Raise a clear error when ``budget`` cannot be met from ``n_pool`` readable images."""
    if isinstance(budget, bool) or not isinstance(budget, (int, np.integer)):
        raise TypeError(f"budget must be an integer, got {budget!r}")
    if budget < 1:
        raise ValueError(f"budget={budget} must be at least 1 (the number of images to label)")
    if budget > n_pool:
        raise ValueError(
            f"budget={budget} exceeds the pool ({n_pool} readable images in {source}); "
            f"lower budget or add images"
        )


class RandomSelector:
    """Uniform random selection over the pool, without an autoencoder (the paper's baseline).

    Args:
        budget: number of images to pick.
        seed: random seed; same seed, same selection.
    """

    requires_embeddings = False
    name = "random"

    def __init__(self, budget: int, seed: int = 0) -> None:
        self.budget = budget
        self.seed = seed

    def select(
        self, n_pool: int, embeddings: np.ndarray | None = None, source: str = "the pool"
    ) -> Selection:
        """Pick ``budget`` distinct indices of ``range(n_pool)``; ``embeddings`` is ignored."""
        check_budget(self.budget, n_pool, source)
        rng = np.random.default_rng(self.seed)
        idx = np.sort(rng.choice(n_pool, size=self.budget, replace=False)).astype(np.int64)
        return Selection(
            indices=idx,
            cluster=np.full(self.budget, -1, dtype=np.int64),
            distance=np.full(self.budget, np.nan, dtype=np.float32),
            cluster_size=np.zeros(self.budget, dtype=np.int64),
            rule=["uniform"] * self.budget,
        )


class KMeansSelector:
    """K-means (K = budget) on pool embeddings, then one image per cluster (the paper's selector).

    Args:
        budget: number of images to pick (= K).
        pick: ``random`` member of each cluster (the paper's experiments) or the one nearest the ``centroid``.
        niter: K-means iterations.
        nredo: K-means restarts; the lowest objective wins.
        seed: seed of K-means initialisation and of the random pick.
        max_points_per_centroid: FAISS training subsample per centroid; ``None`` uses every point.
        gpu: ``"auto"`` (GPU when FAISS sees one), ``True`` or ``False``.

    Empty clusters (possible with duplicate or near-duplicate embeddings) are filled with the unchosen
    images farthest from their centroid, with a note, so the selection always has exactly ``budget``
    distinct images.
    """

    requires_embeddings = True
    name = "ae"

    def __init__(
        self,
        budget: int,
        pick: PickRule = "random",
        niter: int = 20,
        nredo: int = 1,
        seed: int = 0,
        max_points_per_centroid: int | None = None,
        gpu: bool | str = "auto",
    ) -> None:
        if pick not in ("random", "centroid"):
            raise ValueError(f"pick={pick!r} is not a pick rule; use 'random' or 'centroid'")
        self.budget = budget
        self.pick = pick
        self.niter = niter
        self.nredo = nredo
        self.seed = seed
        self.max_points_per_centroid = max_points_per_centroid
        self.gpu = gpu

    def select(
        self, n_pool: int, embeddings: np.ndarray | None = None, source: str = "the pool"
    ) -> Selection:
        """Cluster ``embeddings`` (``(n_pool, d)``) and pick one image per cluster."""
        if embeddings is None:
            raise ValueError("the K-means selector needs pool embeddings; train the autoencoder first")
        if len(embeddings) != n_pool:
            raise ValueError(f"got {len(embeddings)} embeddings for a pool of {n_pool} images")
        check_budget(self.budget, n_pool, source)
        k = self.budget
        notes: list[str] = []
        n_distinct = len(np.unique(np.asarray(embeddings, dtype=np.float32), axis=0))
        if n_distinct < k:
            notes.append(
                f"the pool has only {n_distinct} distinct embeddings for budget={k}: "
                f"duplicate images will be picked to fill the budget"
            )
        res = kmeans(
            embeddings,
            k,
            niter=self.niter,
            nredo=self.nredo,
            seed=self.seed,
            max_points_per_centroid=self.max_points_per_centroid,
            gpu=self.gpu,
        )
        sizes = res.cluster_sizes
        if self.pick == "random":
            per_cluster = pick_random(res.assignments, k, np.random.default_rng(self.seed))
        else:
            per_cluster = pick_nearest(res.assignments, res.sq_distances, k)
        chosen = per_cluster[per_cluster >= 0]
        rule: list[str] = [str(self.pick)] * len(chosen)
        n_empty = k - len(chosen)
        if n_empty:
            extra = fill_farthest(chosen, res.sq_distances, n_empty)
            notes.append(
                f"K-means left {n_empty} of {k} clusters empty; filled them with the {n_empty} images "
                f"farthest from their centroid (rule 'fill' in selection.csv)"
            )
            chosen = np.concatenate([chosen, extra])
            rule += ["fill"] * n_empty
        for note in notes:
            log.warning(note)
        assert len(np.unique(chosen)) == k, "selection must hold budget distinct images"
        return Selection(
            indices=chosen.astype(np.int64),
            cluster=res.assignments[chosen],
            distance=np.sqrt(res.sq_distances[chosen]),
            cluster_size=sizes[res.assignments[chosen]],
            rule=rule,
            notes=notes,
            stats={
                "kmeans_objective": res.objective,
                "kmeans_device": res.device,
                "empty_clusters": n_empty,
                "distinct_embeddings": n_distinct,
            },
        )
