"""TypiClust: K-means with K = budget, then the most typical (densest) image of each cluster."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from imgselect.selection.neighbors import knn
from imgselect.selection.picks import cluster_members
from imgselect.selection.selectors import KMeansBase, Selection

log = logging.getLogger(__name__)

# Added to the mean neighbour distance so duplicates (distance 0) get a large finite typicality.
TYPICALITY_EPS = 1e-8


def typicality(x: np.ndarray, k_neighbors: int, *, gpu: bool | str = "auto") -> np.ndarray:
    """Typicality of each point among the points of ``x``: ``1 / (mean distance to its k nearest + 1e-8)``.

    Distances are Euclidean (not squared). With fewer than ``k_neighbors + 1`` points each point uses
    all the others (``k = n - 1``); a single point has typicality 0 (nothing to be typical of).

    Args:
        x: ``(n, d)`` points, usually the members of one cluster.
        k_neighbors: neighbours per point (the TypiClust paper uses 20).
        gpu: ``True``/``False``, or ``"auto"``: FAISS on GPU when it sees one.

    Returns:
        ``(n,)`` float64 typicalities.
    """
    n = len(x)
    if k_neighbors < 1:
        raise ValueError(f"k_neighbors={k_neighbors} must be at least 1")
    if n <= 1:
        return np.zeros(n)
    sq, _ = knn(x, min(k_neighbors, n - 1), gpu=gpu)
    return 1.0 / (np.sqrt(sq.astype(np.float64)).mean(axis=1) + TYPICALITY_EPS)


@dataclass(kw_only=True)
class TypiClustSelector(KMeansBase):
    """TypiClust (Hacohen, Dekel & Weinshall, ICML 2022): typical images of K-means clusters, K = budget.

    Each cluster gives the member of highest typicality, ``1 / (mean Euclidean distance to its
    k_neighbors nearest neighbours inside its cluster + 1e-8)``: the image at the densest spot, not an
    outlier. Rules, each logged and noted in :attr:`Selection.notes` when it applies:

    * a cluster with ``k_neighbors`` or fewer members measures typicality with ``k = size - 1``; a
      singleton's typicality is 0;
    * clusters with fewer than ``min_cluster_size`` members (as in the paper, which drops tiny outlier
      clusters) are not used while larger ("usable") clusters have unchosen members;
    * when the budget exceeds the usable clusters, the remaining picks go round-robin over the usable
      clusters from largest to smallest (ties: lower cluster id), each taking its next most typical
      unchosen member (typicality is computed once, over the whole cluster);
    * if still short (tiny pools), the small clusters are used the same way.

    So the selection always has exactly ``budget`` distinct images. Unlike the reference code we keep
    K = budget (no cap at 500 clusters) and compute typicality once per cluster rather than again after
    each pick from it.

    Args:
        budget: number of images to pick (= K).
        k_neighbors: neighbours in the typicality estimate.
        min_cluster_size: clusters smaller than this are used only when the others run out.

    The other keys are :class:`~imgselect.selection.selectors.KMeansBase`'s (``init``: ``"kmeans++"`` by
    default, as the reference code, scikit-learn's KMeans; ``gpu`` also for the neighbour search).
    """

    k_neighbors: int = 20
    min_cluster_size: int = 5
    name: str = "typiclust"

    pick = "typical"
    title: ClassVar[str] = "TypiClust"

    def __post_init__(self) -> None:
        if self.k_neighbors < 1:
            raise ValueError(f"k_neighbors={self.k_neighbors} must be at least 1")
        if self.min_cluster_size < 1:
            raise ValueError(f"min_cluster_size={self.min_cluster_size} must be at least 1")

    def choose(self, x: np.ndarray, *, source: str, n_classes: int | None) -> Selection:
        """Cluster ``x`` into ``budget`` clusters and pick typical images; ``n_classes`` is ignored."""
        k = self.budget
        res = self.kmeans.run(x, k)
        sizes = res.cluster_sizes
        members = cluster_members(res.assignments, k)
        typ = np.zeros(len(x))
        ranked: list[np.ndarray] = []  # members of each cluster, most typical first (ties: lowest index)
        for m in members:
            typ[m] = typicality(x[m], self.k_neighbors, gpu=self.gpu)
            ranked.append(m[np.lexsort((m, -typ[m]))])

        # largest first, ties to the lower cluster id (argsort is stable)
        by_size = np.argsort(-sizes, kind="stable")
        usable = [int(c) for c in by_size if sizes[c] >= self.min_cluster_size]
        small = [int(c) for c in by_size if 0 < sizes[c] < self.min_cluster_size]
        picks: list[int] = []
        rule: list[str] = []
        for group, first_rule in ((usable, "typical"), (small, "small_cluster")):
            depth = 0
            while len(picks) < k and any(depth < sizes[c] for c in group):
                for c in group:
                    if len(picks) == k:
                        break
                    if depth < sizes[c]:
                        picks.append(int(ranked[c][depth]))
                        rule.append(
                            first_rule if depth == 0 or first_rule == "small_cluster" else "round_robin"
                        )
                depth += 1
            if len(picks) == k:
                break
        chosen = np.asarray(picks, dtype=np.int64)
        log.info(
            "TypiClust: %d clusters (%d usable, %d small, %d empty), %d picks from %s",
            k,
            len(usable),
            len(small),
            int((sizes == 0).sum()),
            k,
            source,
        )
        stats: dict[str, float | int | str] = {
            "empty_clusters": int((sizes == 0).sum()),
            "small_clusters": len(small),
            "usable_clusters": len(usable),
            "round_robin_picks": rule.count("round_robin"),
            "small_cluster_picks": rule.count("small_cluster"),
        }
        notes = self._notes(sizes, rule)
        return Selection.of_clusters(res, chosen, rule, notes=notes, stats=stats, score=typ[chosen])

    def _notes(self, sizes: np.ndarray, rule: list[str]) -> list[str]:
        """What a person should know about how this selection deviated from one-typical-per-cluster."""
        notes: list[str] = []
        n_few = int(((sizes >= 2) & (sizes <= self.k_neighbors)).sum())
        n_single = int((sizes == 1).sum())
        n_small = int(((sizes > 0) & (sizes < self.min_cluster_size)).sum())
        n_empty = int((sizes == 0).sum())
        if n_few:
            notes.append(
                f"{n_few} clusters have {self.k_neighbors} or fewer members: their typicality uses "
                f"k = size - 1 neighbours instead of k_neighbors={self.k_neighbors}"
            )
        if n_single:
            notes.append(f"{n_single} clusters are singletons: their typicality is 0")
        if n_small or n_empty:
            notes.append(
                f"{n_small} clusters have fewer than min_cluster_size={self.min_cluster_size} members and "
                f"{n_empty} are empty: they are not used while larger clusters have images left"
            )
        if rule.count("round_robin"):
            notes.append(
                f"{rule.count('round_robin')} picks went round-robin over the usable clusters, largest first "
                f"(rule 'round_robin' in selection.csv)"
            )
        if rule.count("small_cluster"):
            notes.append(
                f"{rule.count('small_cluster')} picks came from clusters smaller than "
                f"min_cluster_size={self.min_cluster_size} (rule 'small_cluster'): the larger ones ran out"
            )
        return notes
