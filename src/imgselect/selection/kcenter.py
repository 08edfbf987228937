"""Greedy k-center (core-set) selection: each pick is the pool image farthest from the picks before it."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np

from imgselect.selection.neighbors import as_float32_2d, flat_index, sq_distances_to
from imgselect.selection.selectors import EmbeddingSelector, Selection

log = logging.getLogger(__name__)


def farthest_first(
    x: np.ndarray,
    n_picks: int,
    *,
    chosen: np.ndarray | None = None,
    first: int | None = None,
    gpu: bool | str = "auto",
) -> tuple[np.ndarray, np.ndarray]:
    """Greedy k-center: ``n_picks`` points of ``x``, each the farthest from every point chosen before it.

    Keeps each point's squared distance to the nearest chosen point and lowers it with the FAISS distances
    to each new pick: one pass over ``x`` per pick. Chosen points are never picked again, even when only
    duplicates (distance 0) are left. Ties go to the lowest index.

    Args:
        x: ``(n, d)`` float32 points.
        n_picks: number of new points, ``0 <= n_picks <= n - len(chosen)``.
        chosen: indices already chosen (the distances start from them); may be empty.
        first: with nothing chosen, the index of the first pick (its score is NaN: no set to be far from).
        gpu: ``True``/``False``, or ``"auto"``: FAISS on GPU when it sees one.

    Returns:
        ``(indices, distances)``: ``(n_picks,)`` int64 picks in order and the Euclidean distance of each to
        the points chosen before it (NaN for ``first``).
    """
    x = as_float32_2d(x)
    n = len(x)
    chosen = np.asarray([] if chosen is None else chosen, dtype=np.int64)
    if n_picks < 0 or n_picks > n - len(np.unique(chosen)):
        raise ValueError(f"cannot pick {n_picks} more of {n} points with {len(chosen)} already chosen")
    picks = np.empty(n_picks, dtype=np.int64)
    scores = np.full(n_picks, np.nan)
    if n_picks == 0:
        return picks, scores
    start = 0
    if len(chosen):
        min_sq, _ = flat_index(np.ascontiguousarray(x[chosen]), gpu).search(x, 1)
        min_sq = np.maximum(min_sq[:, 0], 0.0).astype(np.float64)
    else:
        if first is None:
            raise ValueError("farthest_first needs `chosen` points or a `first` index to start from")
        picks[0] = first
        min_sq = sq_distances_to(x, x[first], gpu=gpu)[:, 0].astype(np.float64)
        chosen = np.asarray([first], dtype=np.int64)
        start = 1
    # -1 is below every squared distance: chosen points can never win the argmax again.
    min_sq[chosen] = -1.0
    for i in range(start, n_picks):
        nxt = int(np.argmax(min_sq))  # first maximum: ties go to the lowest index
        picks[i], scores[i] = nxt, np.sqrt(max(min_sq[nxt], 0.0))
        # an index holding the one new centre, searched by every point: its distance to all of them
        new_sq, _ = flat_index(x[nxt : nxt + 1], gpu).search(x, 1)
        np.minimum(min_sq, np.maximum(new_sq[:, 0], 0.0), out=min_sq)
        min_sq[nxt] = -1.0
    return picks, scores


@dataclass(kw_only=True)
class KCenterSelector(EmbeddingSelector):
    """Greedy k-center / core-set selection (Sener & Savarese, ICLR 2018) on pool embeddings.

    The first pick is the image nearest the pool's mean embedding (deterministic), or a random one with
    ``start="random"``; each next pick is the image farthest (Euclidean) from all picks so far. Its score
    is that distance at pick time, so the scores decrease; ``stats["covering_radius"]`` is the largest
    distance from any pool image to its nearest pick.

    Args:
        budget: number of images to pick.
        start: ``"mean"``: begin at the image nearest the pool mean; ``"random"``: at a random image.
        seed: random seed, used only with ``start="random"``.

    ``gpu`` and ``name`` are :class:`~imgselect.selection.selectors.EmbeddingSelector`'s.
    """

    start: Literal["mean", "random"] = "mean"
    name: str = "kcenter"

    pick = "farthest"
    title: ClassVar[str] = "k-center"

    def __post_init__(self) -> None:
        if self.start not in ("mean", "random"):
            raise ValueError(f"start={self.start!r} is not a start rule; use 'mean' or 'random'")

    def choose(self, x: np.ndarray, *, source: str, n_classes: int | None) -> Selection:
        """Pick ``budget`` images farthest-first from ``x``; ``n_classes`` is ignored."""
        if self.start == "random":
            first = int(np.random.default_rng(self.seed).integers(len(x)))
        else:
            mean_sq = sq_distances_to(x, x.mean(axis=0, dtype=np.float64), gpu=self.gpu)[:, 0]
            first = int(np.argmin(mean_sq))
        picks, scores = farthest_first(x, self.budget, first=first, gpu=self.gpu)
        notes: list[str] = []
        n_zero = int((scores[1:] == 0).sum())
        if n_zero:
            notes.append(
                f"{n_zero} of {self.budget} k-center picks are duplicates of earlier picks (distance 0): "
                f"the pool has fewer than budget={self.budget} distinct embeddings"
            )
        # the largest distance from a pool image to its nearest pick (one more pass: scores[-1] is the radius
        # of the picks before the last one)
        nearest_sq, _ = flat_index(np.ascontiguousarray(x[picks]), self.gpu).search(x, 1)
        radius = float(np.sqrt(max(float(nearest_sq.max()), 0.0)))
        log.info("k-center: %d picks from %s, covering radius %.4g", self.budget, source, radius)
        stats: dict[str, float | int | str] = {"start": self.start, "first": first, "covering_radius": radius}
        return Selection.unclustered(picks, [self.pick] * self.budget, notes=notes, stats=stats, score=scores)
