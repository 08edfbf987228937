"""Selectors: from a pool (and, for most, its embeddings) to ``budget`` distinct pool indices.

A selector is any class that satisfies :class:`Selector`; each has a YAML file in ``conf/selector/`` and
is built from its ``_target_``, so a new one needs no edit to the pipeline. Those that choose from pool
embeddings build on :class:`EmbeddingSelector` (which checks the embeddings once for all of them), and those
that run K-means on :class:`KMeansBase` (whose keys ``conf/selector/_kmeans.yaml`` holds).
"""

from __future__ import annotations

import logging
from dataclasses import KW_ONLY, dataclass, field
from typing import ClassVar, Protocol, runtime_checkable

import numpy as np

from imgselect.selection.distributed import (
    distributed_kmeans,
    first_per_cluster,
    gather_all,
    id_uniform,
    release_pages,
    shard_rows,
)
from imgselect.selection.kmeans import KMeansInit, KMeansOptions, KMeansResult, check_finite
from imgselect.selection.picks import fill_farthest, pick_nearest, pick_random

log = logging.getLogger(__name__)


@dataclass
class Selection:
    """The chosen images, one row per pick.

    Attributes:
        indices: ``(budget,)`` distinct pool indices.
        cluster: cluster of each pick (``-1`` when no clustering was done).
        distance: Euclidean distance of each pick to its cluster's centroid (NaN without clustering).
        cluster_size: size of each pick's cluster (0 without clustering).
        rule: how each pick was made: ``random``/``centroid`` (one per cluster), ``fill`` (extra pick
            for an empty cluster), ``uniform`` (random selector), ``typical``/``round_robin``/
            ``small_cluster`` (TypiClust), ``coverage`` (ProbCover), ``farthest`` (k-center, and
            ProbCover once everything is covered).
        notes: warnings a person should read (empty clusters, duplicates, ...).
        stats: numbers worth keeping (K-means objective, device, empty clusters, ...).
        score: the rule's own number for each pick, float64, NaN where the rule has none: typicality
            (TypiClust), points newly covered (ProbCover's ``coverage`` picks), Euclidean distance to the
            picks before it (``farthest`` picks). ``None`` at construction means all NaN; it is never
            ``None`` afterwards.
    """

    indices: np.ndarray
    cluster: np.ndarray
    distance: np.ndarray
    cluster_size: np.ndarray
    rule: list[str]
    notes: list[str] = field(default_factory=list)
    stats: dict[str, float | int | str] = field(default_factory=dict)
    score: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.score is None:
            self.score = np.full(len(self.indices), np.nan)
        else:
            self.score = np.asarray(self.score, dtype=np.float64)
            if self.score.shape != (len(self.indices),):
                raise ValueError(
                    f"score has shape {self.score.shape}; expected one per pick ({len(self.indices)},)"
                )

    def __len__(self) -> int:
        return len(self.indices)

    @classmethod
    def unclustered(
        cls,
        indices: np.ndarray,
        rule: list[str],
        *,
        notes: list[str] | None = None,
        stats: dict[str, float | int | str] | None = None,
        score: np.ndarray | None = None,
    ) -> Selection:
        """Picks made without clustering: cluster ``-1``, distance NaN and cluster size 0 for each."""
        n = len(indices)
        return cls(
            indices=np.asarray(indices, dtype=np.int64),
            cluster=np.full(n, -1, dtype=np.int64),
            distance=np.full(n, np.nan, dtype=np.float32),
            cluster_size=np.zeros(n, dtype=np.int64),
            rule=rule,
            notes=notes or [],
            stats=stats or {},
            score=score,
        )

    @classmethod
    def of_clusters(
        cls,
        res: KMeansResult,
        indices: np.ndarray,
        rule: list[str],
        *,
        notes: list[str],
        stats: dict[str, float | int | str],
        score: np.ndarray | None = None,
    ) -> Selection:
        """Picks from the clusters of ``res``: each one's cluster, Euclidean distance to its centroid and
        cluster size; the K-means objective and device lead ``stats``."""
        cluster = res.assignments[indices]
        return cls(
            indices=np.asarray(indices, dtype=np.int64),
            cluster=cluster,
            distance=np.sqrt(res.sq_distances[indices]),
            cluster_size=res.cluster_sizes[cluster],
            rule=rule,
            notes=notes,
            stats={"kmeans_objective": res.objective, "kmeans_device": res.device, **stats},
            score=score,
        )


@runtime_checkable
class Selector(Protocol):
    """What the pipeline needs from a selector.

    Attributes:
        name: what ``result.json`` and Table 1 call it (``random``, ``ae``, ``typiclust``, ...).
        pick: the per-image rule (``uniform``, ``random``, ``centroid``, ``typical``, ``coverage``,
            ``farthest``).
        budget: number of images it picks.
        requires_embeddings: whether :meth:`select` needs pool embeddings (embeddings are computed
            only when it does).
        uses_predictions: whether :meth:`select` takes ``predictions=``, the previous round's class
            probabilities of the pool (:mod:`imgselect.selection.uncertainty`); the stage passes them only then.
    """

    name: str
    pick: str
    budget: int
    requires_embeddings: bool
    uses_predictions: bool

    def select(
        self, n_pool: int, embeddings: np.ndarray | None, *, source: str, n_classes: int | None
    ) -> Selection:
        """Pick ``budget`` distinct indices of ``range(n_pool)`` (the selection stage passes every argument;
        the selectors here default all but ``n_pool``).

        The caller makes sure that ``1 <= budget <= n_pool`` (the job checks it once, before any training:
        :func:`imgselect.run.settings.check_settings`); selectors do not check it again.

        Args:
            n_pool: number of readable images in the pool.
            embeddings: ``(n_pool, d)`` pool embeddings; required when ``requires_embeddings``.
            source: where the pool comes from, for error messages.
            n_classes: number of classes of the task, for selectors whose rules need it (ProbCover's
                purity rule); others ignore it.
        """
        ...


@runtime_checkable
class ShardedSelector(Protocol):
    """A selector that can choose from a pool whose embeddings stay sharded over a DDP job's ranks
    (:mod:`imgselect.selection.distributed`): every rank calls :meth:`choose_sharded` with its own block and
    gets the same selection back. The selection stage uses it when the job runs under DDP; a selector without
    it gets the whole matrix on rank 0 instead."""

    def choose_sharded(self, embeddings: np.ndarray, ids: np.ndarray, *, source: str) -> Selection:
        """Pick ``budget`` distinct pool indices from the candidates of every rank: ``embeddings`` the pool's
        ``(n_pool, d)`` matrix as every rank sees it (a mapped file: a rank reads what it needs), ``ids`` this
        rank's candidates (ascending pool indices). Every rank gets the same selection."""
        ...


def check_embeddings(embeddings: np.ndarray | None, n_pool: int, selector: str) -> np.ndarray:
    """``embeddings`` as a finite contiguous float32 ``(n_pool, d)`` array, or a clear error."""
    if embeddings is None:
        raise ValueError(
            f"the {selector} selector needs pool embeddings (set an embedding: embedding=pixels, ...)"
        )
    x = np.ascontiguousarray(embeddings, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"embeddings must be a 2-D (n, d) array, got shape {x.shape}")
    if len(x) != n_pool:
        raise ValueError(f"got {len(x)} embeddings for a pool of {n_pool} images")
    check_finite(x)
    return x


def check_budget(
    budget: int, n_pool: int, source: str = "the pool", n_left: int | None = None, excluded: str = ""
) -> None:
    """Raise a clear error when ``budget`` cannot be met from ``n_pool`` readable images, or from the
    ``n_left`` of them the selection may still choose (``excluded`` says what was set aside).

    The job's one check of the budget, made by :func:`imgselect.run.settings.check_settings` before any training;
    selectors assume a budget that passed it."""
    if isinstance(budget, bool) or not isinstance(budget, (int, np.integer)):
        raise TypeError(f"budget must be an integer, got {budget!r}")
    if budget < 1:
        raise ValueError(f"budget={budget} must be at least 1 (the number of images to label)")
    if n_left is not None and n_left < n_pool and budget > n_left:
        raise ValueError(
            f"budget={budget} exceeds the {n_left} images left to choose from in {source} "
            f"({n_pool} readable; excluded: {excluded}); lower budget"
        )
    if budget > n_pool:
        raise ValueError(
            f"budget={budget} exceeds the pool ({n_pool} readable images in {source}); "
            f"lower budget or add images"
        )


@dataclass
class RandomSelector:
    """Uniform random selection over the pool, without an autoencoder (the paper's baseline).

    Args:
        budget: number of images to pick.
        seed: random seed; same seed, same selection.
    """

    budget: int
    seed: int = 0

    requires_embeddings = False
    uses_predictions = False
    name = "random"
    pick = "uniform"

    def select(self, n_pool: int, embeddings: np.ndarray | None = None, **_: object) -> Selection:
        """Pick ``budget`` distinct indices of ``range(n_pool)``; the embeddings and the stage's other
        arguments (``source``, ``n_classes``) are not used."""
        rng = np.random.default_rng(self.seed)
        idx = np.sort(rng.choice(n_pool, size=self.budget, replace=False))
        return Selection.unclustered(idx, ["uniform"] * self.budget)


@dataclass
class EmbeddingSelector:
    """What the selectors that choose from pool embeddings share: the fields below and :meth:`select`, which
    checks the embeddings, applies the subclass's rule (:meth:`choose`), logs its notes and makes sure it
    picked ``budget`` distinct images.

    Args:
        budget: number of images to pick.
        seed: random seed; same seed, same selection.
        gpu: ``"auto"`` (FAISS on GPU when it sees one), ``True`` or ``False``.
        name: what ``result.json`` and Table 1 call this selector.
    """

    budget: int
    _: KW_ONLY
    seed: int = 0
    gpu: bool | str = "auto"
    name: str = "embedding"

    requires_embeddings = True
    uses_predictions = False
    title: ClassVar[str] = "embedding"  # what error messages call the rule ("K-means", "TypiClust", ...)

    def select(
        self,
        n_pool: int,
        embeddings: np.ndarray | None = None,
        *,
        source: str = "the pool",
        n_classes: int | None = None,
    ) -> Selection:
        """Pick ``budget`` distinct indices of ``range(n_pool)`` from ``embeddings`` (``(n_pool, d)``).

        Args:
            n_pool: number of pool images; ``budget <= n_pool`` is the caller's to ensure.
            embeddings: ``(n_pool, d)`` pool embeddings.
            source: where the pool comes from, for messages.
            n_classes: number of classes of the task, for rules that need it (ProbCover's purity rule).
        """
        x = check_embeddings(embeddings, n_pool, self.title)
        selection = self.choose(x, source=source, n_classes=n_classes)
        for note in selection.notes:
            log.warning(note)
        n_distinct = len(np.unique(selection.indices))
        assert len(selection) == n_distinct == self.budget, "selection must hold budget distinct images"
        return selection

    def choose(self, x: np.ndarray, *, source: str, n_classes: int | None) -> Selection:
        """The subclass's rule on ``x``, the pool's embeddings checked (finite float32 ``(n_pool, d)``)."""
        raise NotImplementedError


@dataclass(kw_only=True)
class KMeansBase(EmbeddingSelector):
    """What the selectors that run K-means on the embeddings share: its keys (``conf/selector/_kmeans.yaml``),
    besides :class:`EmbeddingSelector`'s (``seed`` also seeds K-means, ``gpu`` also places it).

    Args:
        niter: K-means iterations.
        nredo: K-means restarts; the lowest objective wins.
        max_points_per_centroid: FAISS training subsample per centroid; ``None`` uses every point.
        init: K-means seeding, ``"kmeans++"`` or ``"random"`` (FAISS's own).
    """

    niter: int = 20
    nredo: int = 1
    max_points_per_centroid: int | None = None
    init: KMeansInit = "kmeans++"

    @property
    def kmeans(self) -> KMeansOptions:
        """How this selector runs :func:`~imgselect.selection.kmeans.kmeans`."""
        return KMeansOptions(
            self.niter, self.nredo, self.seed, self.max_points_per_centroid, self.gpu, self.init
        )


@dataclass
class KMeansSelector(KMeansBase):
    """K-means (K = budget) on pool embeddings, then one image per cluster (the paper's selector).

    Args:
        budget: number of images to pick (= K).
        pick: ``random`` member of each cluster (the paper's experiments) or the one nearest the ``centroid``.
        init: K-means seeding, ``"random"`` (FAISS's, the paper's) or ``"kmeans++"``.
        name: ``ae`` for the paper's presets.

    The other keys are :class:`KMeansBase`'s (``seed`` also seeds the random pick).

    Empty clusters (possible with duplicate or near-duplicate embeddings) are filled with the unchosen
    images farthest from their centroid, with a note, so the selection always has exactly ``budget``
    distinct images.
    """

    pick: str = "random"  # or "centroid"; a str as the Selector protocol's, checked in __post_init__
    _: KW_ONLY
    init: KMeansInit = "random"
    name: str = "ae"

    title: ClassVar[str] = "K-means"

    def __post_init__(self) -> None:
        if self.pick not in ("random", "centroid"):
            raise ValueError(f"pick={self.pick!r} is not a pick rule; use 'random' or 'centroid'")

    def choose(self, x: np.ndarray, *, source: str, n_classes: int | None) -> Selection:
        """Cluster ``x`` and pick one image per cluster; ``n_classes`` is ignored."""
        k = self.budget
        notes: list[str] = []
        n_distinct = len(np.unique(x, axis=0))
        if n_distinct < k:
            notes.append(
                f"the pool has only {n_distinct} distinct embeddings for budget={k}: "
                f"duplicate images will be picked to fill the budget"
            )
        res = self.kmeans.run(x, k)
        if self.pick == "random":
            per_cluster = pick_random(res.assignments, k, np.random.default_rng(self.seed))
        else:
            per_cluster = pick_nearest(res.assignments, res.sq_distances, k)
        chosen = per_cluster[per_cluster >= 0]
        rule = [self.pick] * len(chosen)
        n_empty = k - len(chosen)
        if n_empty:
            extra = fill_farthest(chosen, res.sq_distances, n_empty)
            notes.append(
                f"K-means left {n_empty} of {k} clusters empty; filled them with the {n_empty} images "
                f"farthest from their centroid (rule 'fill' in selection.csv)"
            )
            chosen = np.concatenate([chosen, extra])
            rule += ["fill"] * n_empty
        stats: dict[str, float | int | str] = {"empty_clusters": n_empty, "distinct_embeddings": n_distinct}
        return Selection.of_clusters(res, chosen, rule, notes=notes, stats=stats)

    def choose_sharded(self, embeddings: np.ndarray, ids: np.ndarray, *, source: str) -> Selection:
        """One image per cluster of a pool sharded over a DDP job's ranks (:class:`ShardedSelector`):
        :func:`~imgselect.selection.distributed.distributed_kmeans` of each rank's rows (seeded by pool index),
        then each rank's best member of every cluster, gathered, and the best of those: the nearest to the centroid
        (``pick=centroid``), or the member with the lowest seeded draw of its pool index (``pick=random``: a
        uniform pick that does not depend on the sharding; a one-process job draws differently). Empty clusters
        are filled with the unchosen images farthest from their centroid, as in :meth:`choose`. Vectors never
        travel: only a few numbers per cluster and rank.
        """
        k = self.budget
        ids = np.asarray(ids, dtype=np.int64)
        res = distributed_kmeans(
            shard_rows(embeddings, ids), k, niter=self.niter, seed=self.seed, gpu=self.gpu, ids=ids
        )
        release_pages(embeddings)
        sq = res.sq_distances.astype(np.float64)
        key = sq if self.pick == "centroid" else id_uniform(ids, self.seed)
        best = first_per_cluster(res.assignments, key, ids)
        offered = [res.assignments[best], key[best], ids[best], sq[best]]
        cluster, keys, cand, cand_sq = (
            np.concatenate(parts) for parts in zip(*gather_all(offered), strict=True)
        )
        win = first_per_cluster(cluster, keys, cand)
        chosen, chosen_cluster, chosen_sq = cand[win], cluster[win], cand_sq[win]
        rule = [self.pick] * len(chosen)
        notes: list[str] = []
        n_empty = k - len(chosen)
        if n_empty:
            free = ~np.isin(ids, chosen)
            far = np.lexsort((ids[free], -sq[free]))[:n_empty]  # this rank's farthest, then lowest index
            offered = [ids[free][far], sq[free][far], res.assignments[free][far]]
            cand, cand_sq, cluster = (
                np.concatenate(parts) for parts in zip(*gather_all(offered), strict=True)
            )
            top = np.lexsort((cand, -cand_sq))[:n_empty]
            chosen = np.concatenate([chosen, cand[top]])
            chosen_cluster = np.concatenate([chosen_cluster, cluster[top]])
            chosen_sq = np.concatenate([chosen_sq, cand_sq[top]])
            rule += ["fill"] * n_empty
            notes.append(
                f"K-means left {n_empty} of {k} clusters empty; filled them with the {n_empty} images "
                f"farthest from their centroid (rule 'fill' in selection.csv)"
            )
        return Selection(
            indices=chosen.astype(np.int64),
            cluster=chosen_cluster.astype(np.int64),
            distance=np.sqrt(chosen_sq).astype(np.float32),
            cluster_size=res.counts[chosen_cluster.astype(np.int64)],
            rule=rule,
            notes=notes,
            stats={
                "kmeans_objective": res.objective,
                "kmeans_device": res.device,
                "empty_clusters": n_empty,
                "ranks": res.world_size,
            },
        )
