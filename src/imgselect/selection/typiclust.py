"""TypiClust: K-means with K = budget, then the most typical (densest) image of each cluster."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from imgselect.selection.distributed import (
    cluster_owners,
    distributed_kmeans,
    gather_all,
    rank_and_world,
    release_pages,
    row_reader,
    send_to_owners,
    shard_rows,
)
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

        schedule = pick_schedule(sizes, k, self.min_cluster_size)
        picks = [int(ranked[c][depth]) for c, depth, _ in schedule]
        rule = [r for _, _, r in schedule]
        chosen = np.asarray(picks, dtype=np.int64)
        stats = self._stats(sizes, rule, source)
        notes = self._notes(sizes, rule)
        return Selection.of_clusters(res, chosen, rule, notes=notes, stats=stats, score=typ[chosen])

    def choose_sharded(self, embeddings: np.ndarray, ids: np.ndarray, *, source: str) -> Selection:
        """TypiClust of a pool sharded over the ranks of a DDP job (:class:`ShardedSelector`): the same rules as
        :meth:`choose`, with the clustering and the typicality spread over the ranks.

        1. :func:`~imgselect.selection.distributed.distributed_kmeans` (K = budget) of this rank's rows
           ``embeddings[ids]``, seeded on a sample drawn by pool index, so one rank, two or four start from the
           same centres.
        2. Each cluster gets an owner rank (:func:`~imgselect.selection.distributed.cluster_owners`: about
           ``1 / world`` of the pool each); every rank sends it the pool indices (and squared distances) of its
           members of that cluster, and the owner reads their vectors from ``embeddings`` one cluster at a time and
           ranks them by typicality among all the cluster's members, exactly as :meth:`choose` does.
        3. The order of the picks follows from the global cluster sizes alone (:func:`pick_schedule`), so each
           owner sends back only the members it is asked for, and every rank assembles the same selection.

        ``embeddings`` is the whole pool's matrix as every rank sees it: in a job, the embedding file mapped
        read-only (:mod:`imgselect.stages.embed`), of which a rank reads only its block and, one cluster at a time,
        the members of the clusters it owns. What travels between ranks is indices and distances, never vectors.
        """
        k = self.budget
        ids = np.asarray(ids, dtype=np.int64)
        res = distributed_kmeans(
            shard_rows(embeddings, ids), k, niter=self.niter, seed=self.seed, gpu=self.gpu, ids=ids
        )
        release_pages(embeddings)  # the block K-means read; the owners read their members' rows next
        sizes = res.counts
        world = rank_and_world()[1]
        owners = cluster_owners(sizes, world)
        mine = send_to_owners(
            owners, res.assignments, {"ids": ids, "cluster": res.assignments, "sq": res.sq_distances}, world
        )
        schedule = pick_schedule(sizes, k, self.min_cluster_size)
        wanted = np.zeros(k, dtype=np.int64)
        for c, depth, _ in schedule:
            wanted[c] = max(wanted[c], depth + 1)
        found: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        order = np.lexsort((mine["ids"], mine["cluster"]))  # by cluster, members in pool order
        cluster = mine["cluster"][order]
        bounds = np.searchsorted(cluster, np.arange(k + 1))
        with row_reader(embeddings) as read:  # a cluster's members lie anywhere in the file
            for c in map(int, np.flatnonzero(wanted)):
                members = order[bounds[c] : bounds[c + 1]]
                if not len(members):
                    continue  # another rank's cluster
                typ = typicality(read(mine["ids"][members]), self.k_neighbors, gpu=self.gpu)
                best = np.lexsort((mine["ids"][members], -typ))[: wanted[c]]
                found[c] = (mine["ids"][members][best], typ[best], mine["sq"][members][best])
        merged: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        for part in gather_all(found):
            merged.update(part)
        chosen = np.asarray([merged[c][0][d] for c, d, _ in schedule], dtype=np.int64)
        rule = [r for _, _, r in schedule]
        clusters = np.asarray([c for c, _, _ in schedule], dtype=np.int64)
        return Selection(
            indices=chosen,
            cluster=clusters,
            distance=np.sqrt(np.asarray([merged[c][2][d] for c, d, _ in schedule], dtype=np.float32)),
            cluster_size=sizes[clusters],
            rule=rule,
            notes=self._notes(sizes, rule),
            stats={
                "kmeans_objective": res.objective,
                "kmeans_device": res.device,
                **self._stats(sizes, rule, source),
                "ranks": world,
                # the most any rank gathered for the typicality, as a share of the pool
                "largest_owned_share": round(
                    float(np.bincount(owners, sizes, world).max() / max(1, sizes.sum())), 4
                ),
            },
            score=np.asarray([merged[c][1][d] for c, d, _ in schedule], dtype=np.float64),
        )

    def _stats(self, sizes: np.ndarray, rule: list[str], source: str) -> dict[str, float | int | str]:
        """The cluster counts and pick rules of a selection (logged too)."""
        n_usable = int((sizes >= self.min_cluster_size).sum())
        n_small = int(((sizes > 0) & (sizes < self.min_cluster_size)).sum())
        n_empty = int((sizes == 0).sum())
        log.info(
            "TypiClust: %d clusters (%d usable, %d small, %d empty), %d picks from %s",
            len(sizes), n_usable, n_small, n_empty, len(rule), source,
        )  # fmt: skip
        return {
            "empty_clusters": n_empty,
            "small_clusters": n_small,
            "usable_clusters": n_usable,
            "round_robin_picks": rule.count("round_robin"),
            "small_cluster_picks": rule.count("small_cluster"),
        }

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


def pick_schedule(sizes: np.ndarray, budget: int, min_cluster_size: int) -> list[tuple[int, int, str]]:
    """The order of TypiClust's picks from the cluster sizes alone: ``(cluster, depth, rule)`` for each, ``depth``
    being the rank of the pick among its cluster's members by typicality (0: the most typical).

    Usable clusters (``min_cluster_size`` members or more) go first, largest first (ties: the lower cluster
    id), one pick each (``typical``), then again at the next depth (``round_robin``) while the budget lasts;
    if still short, the small clusters the same way (``small_cluster``). Empty clusters give nothing.
    """
    sizes = np.asarray(sizes)
    by_size = np.argsort(-sizes, kind="stable")
    usable = [int(c) for c in by_size if sizes[c] >= min_cluster_size]
    small = [int(c) for c in by_size if 0 < sizes[c] < min_cluster_size]
    schedule: list[tuple[int, int, str]] = []
    for group, first_rule in ((usable, "typical"), (small, "small_cluster")):
        depth = 0
        while len(schedule) < budget and any(depth < sizes[c] for c in group):
            for c in group:
                if len(schedule) == budget:
                    break
                if depth < sizes[c]:
                    later = "round_robin" if first_rule == "typical" else first_rule
                    schedule.append((c, depth, first_rule if depth == 0 else later))
            depth += 1
        if len(schedule) == budget:
            break
    return schedule
