"""Pick rules: which member of each cluster goes to the labeler.

All functions are pure and work on arrays of cluster assignments, so they can be tested by hand.
A cluster with no members yields ``-1`` in the returned per-cluster array.
"""

from __future__ import annotations

import numpy as np


def cluster_members(assignments: np.ndarray, k: int) -> list[np.ndarray]:
    """Pool indices of each of the ``k`` clusters, in ascending order (empty arrays for empty clusters)."""
    assignments = np.asarray(assignments, dtype=np.int64)
    order = np.argsort(assignments, kind="stable")
    bounds = np.searchsorted(assignments[order], np.arange(k + 1))
    return [order[bounds[c] : bounds[c + 1]] for c in range(k)]


def pick_random(assignments: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """One uniformly random member of each cluster (the paper's experiments).

    Args:
        assignments: ``(n,)`` cluster of each point.
        k: number of clusters.
        rng: the random generator; same seed, same picks.

    Returns:
        ``(k,)`` int64 pool index picked from each cluster, ``-1`` where the cluster is empty.
    """
    picks = np.full(k, -1, dtype=np.int64)
    for c, members in enumerate(cluster_members(assignments, k)):
        if len(members):
            picks[c] = members[rng.integers(len(members))]
    return picks


def pick_nearest(assignments: np.ndarray, sq_distances: np.ndarray, k: int) -> np.ndarray:
    """The member of each cluster nearest its centroid; ties go to the lowest pool index.

    Args:
        assignments: ``(n,)`` cluster of each point.
        sq_distances: ``(n,)`` squared distance of each point to its own centroid.
        k: number of clusters.

    Returns:
        ``(k,)`` int64 pool index picked from each cluster, ``-1`` where the cluster is empty.
    """
    sq_distances = np.asarray(sq_distances)
    picks = np.full(k, -1, dtype=np.int64)
    for c, members in enumerate(cluster_members(assignments, k)):
        if len(members):
            picks[c] = members[np.argmin(sq_distances[members])]  # members ascend, argmin takes the first
    return picks


def fill_farthest(chosen: np.ndarray, sq_distances: np.ndarray, n_missing: int) -> np.ndarray:
    """Indices of the ``n_missing`` unchosen points farthest from their centroid.

    Used when K-means leaves clusters empty (duplicate or near-duplicate embeddings): the points the
    clustering covers worst are the most informative extra picks. Ties go to the lowest index.

    Raises:
        ValueError: if fewer than ``n_missing`` points are left to choose from.
    """
    sq_distances = np.asarray(sq_distances)
    free = np.setdiff1d(np.arange(len(sq_distances)), chosen)
    if len(free) < n_missing:
        raise ValueError(f"cannot fill {n_missing} picks: only {len(free)} unchosen points are left")
    order = np.lexsort((free, -sq_distances[free]))  # farthest first, then lowest index
    return free[order[:n_missing]]
