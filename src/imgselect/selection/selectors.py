"""Selectors: from a pool (and, for most, its embeddings) to ``budget`` distinct pool indices.

A selector is any class that satisfies :class:`Selector`; each has a YAML file in ``conf/selector/`` and
is built from its ``_target_``, so a new one needs no edit to the pipeline.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

import numpy as np

from imgselect.selection.kmeans import KMeansInit, KMeansOptions, count_nonfinite_rows
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
    """

    name: str
    pick: str
    budget: int
    requires_embeddings: bool

    def select(
        self,
        n_pool: int,
        embeddings: np.ndarray | None = None,
        *,
        source: str = "the pool",
        n_classes: int | None = None,
    ) -> Selection:
        """Pick ``budget`` distinct indices of ``range(n_pool)``.

        The caller makes sure that ``1 <= budget <= n_pool`` (the job checks it once, before any training:
        :func:`imgselect.settings.check_settings`); selectors do not check it again.

        Args:
            n_pool: number of readable images in the pool.
            embeddings: ``(n_pool, d)`` pool embeddings; required when ``requires_embeddings``.
            source: where the pool comes from, for error messages.
            n_classes: number of classes of the task, for selectors whose rules need it (ProbCover's
                purity rule); others ignore it.
        """
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
    bad = count_nonfinite_rows(x)
    if bad:
        raise ValueError(
            f"{bad} of {n_pool} embeddings contain NaN or inf; check the embedding (an autoencoder's training loss, a file's values)"
        )
    return x


def check_budget(
    budget: int, n_pool: int, source: str = "the pool", n_left: int | None = None, excluded: str = ""
) -> None:
    """Raise a clear error when ``budget`` cannot be met from ``n_pool`` readable images, or from the
    ``n_left`` of them the selection may still choose (``excluded`` says what was set aside).

    The job's one check of the budget, made by :func:`imgselect.settings.check_settings` before any training;
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


class RandomSelector:
    """Uniform random selection over the pool, without an autoencoder (the paper's baseline).

    Args:
        budget: number of images to pick.
        seed: random seed; same seed, same selection.
    """

    requires_embeddings = False
    name = "random"
    pick = "uniform"

    def __init__(self, budget: int, seed: int = 0) -> None:
        self.budget = budget
        self.seed = seed

    def select(
        self,
        n_pool: int,
        embeddings: np.ndarray | None = None,
        *,
        source: str = "the pool",
        n_classes: int | None = None,
    ) -> Selection:
        """Pick ``budget`` distinct indices of ``range(n_pool)``; ``embeddings`` and ``n_classes`` are ignored."""
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
        name: what ``result.json`` and Table 1 call this selector (``ae`` for the paper's presets).
        init: K-means seeding, ``"random"`` (FAISS's, the paper's) or ``"kmeans++"``.

    Empty clusters (possible with duplicate or near-duplicate embeddings) are filled with the unchosen
    images farthest from their centroid, with a note, so the selection always has exactly ``budget``
    distinct images.
    """

    requires_embeddings = True

    def __init__(
        self,
        budget: int,
        pick: PickRule = "random",
        niter: int = 20,
        nredo: int = 1,
        seed: int = 0,
        max_points_per_centroid: int | None = None,
        gpu: bool | str = "auto",
        name: str = "ae",
        init: KMeansInit = "random",
    ) -> None:
        if pick not in ("random", "centroid"):
            raise ValueError(f"pick={pick!r} is not a pick rule; use 'random' or 'centroid'")
        self.budget = budget
        self.pick: str = pick
        self.name = name
        self.seed = seed
        self.kmeans = KMeansOptions(niter, nredo, seed, max_points_per_centroid, gpu, init)

    def select(
        self,
        n_pool: int,
        embeddings: np.ndarray | None = None,
        *,
        source: str = "the pool",
        n_classes: int | None = None,
    ) -> Selection:
        """Cluster ``embeddings`` (``(n_pool, d)``) and pick one image per cluster; ``n_classes`` is ignored."""
        x = check_embeddings(embeddings, n_pool, "K-means")
        k = self.budget
        notes: list[str] = []
        n_distinct = len(np.unique(x, axis=0))
        if n_distinct < k:
            notes.append(
                f"the pool has only {n_distinct} distinct embeddings for budget={k}: "
                f"duplicate images will be picked to fill the budget"
            )
        res = self.kmeans.run(x, k)
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
