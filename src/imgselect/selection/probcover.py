"""ProbCover: greedy maximum coverage of the pool by δ-balls around the picks."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from imgselect.selection.kcenter import farthest_first
from imgselect.selection.neighbors import (
    TooManyNeighbors,
    estimate_pairs,
    nearest_other_label,
    range_search,
)
from imgselect.selection.selectors import KMeansBase, Selection

log = logging.getLogger(__name__)


def purity_delta(
    x: np.ndarray, labels: np.ndarray, purity: float, *, gpu: bool | str = "auto"
) -> tuple[float, np.ndarray]:
    """The largest δ for which at least a ``purity`` fraction of δ-balls are pure.

    The ball ``{y : |y - x| < δ}`` around ``x`` is pure when every point in it has ``x``'s label, i.e.
    when ``δ <= r(x)``, the distance from ``x`` to its nearest point of another label. The fraction of
    pure balls, ``#{x : r(x) >= δ} / n``, falls as δ grows, so the largest δ that keeps it at or above
    ``purity`` is the ``m``-th smallest ``r`` with ``m = floor(n · (1 - purity))`` (0-based): the
    ``(1 - purity)`` quantile of ``r``, computed exactly (FAISS, no grid over δ).

    Args:
        x: ``(n, d)`` points.
        labels: ``(n,)`` label of each point (K-means clusters in ProbCover); two distinct at least.
        purity: required fraction of pure balls, in ``(0, 1]``.
        gpu: ``True``/``False``, or ``"auto"``.

    Returns:
        ``(delta, r)``: δ and every point's distance ``r`` to its nearest point of another label.
    """
    if not 0.0 < purity <= 1.0:
        raise ValueError(f"purity={purity} must be in (0, 1]")
    sq, _ = nearest_other_label(x, labels, gpu=gpu)
    r = np.sqrt(sq.astype(np.float64))
    n = len(r)
    # the tiny epsilon keeps n * (1 - purity) = 4.999999... from flooring to 4
    m = min(n - 1, int(np.floor(n * (1.0 - purity) + 1e-9)))
    return float(np.partition(r, m)[m]), r


def transpose_csr(lims: np.ndarray, indices: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The CSR of the reversed edges: row ``j`` lists every ``i`` whose row lists ``j``."""
    rows = np.repeat(np.arange(n, dtype=indices.dtype), np.diff(lims))
    order = np.argsort(indices, kind="stable")
    t_lims = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(indices, minlength=n), out=t_lims[1:])
    return t_lims, rows[order]


def gather_rows(lims: np.ndarray, indices: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``indices`` of the CSR rows ``rows``, concatenated, without a Python loop."""
    starts = lims[rows]
    lengths = lims[rows + 1] - starts
    total = int(lengths.sum())
    if total == 0:
        return indices[:0]
    # position p of the output lies in row r at offset p - (where r's block begins in the output)
    block_begin = np.cumsum(lengths) - lengths
    return indices[np.repeat(starts - block_begin, lengths) + np.arange(total)]


def greedy_coverage(
    lims: np.ndarray, indices: np.ndarray, budget: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Greedy maximum coverage on a ball graph: repeatedly the point whose ball covers most uncovered points.

    Degrees (uncovered points in each ball) are kept up to date incrementally: when ``y`` becomes covered,
    every ball holding ``y`` loses one, and those balls are the rows of the transposed graph at ``y``. Each
    edge is thus touched a bounded number of times: O(edges) in all, plus one O(n) argmax per pick. Stops
    early when no ball covers anything new. Ties go to the lowest index.

    Args:
        lims, indices: the CSR graph; row ``i`` (which should hold ``i`` itself) is ``i``'s ball.
        budget: at most this many picks.

    Returns:
        ``(picks, newly_covered, covered)``: picks in order, how many points each covered first, and the
        final boolean coverage of every point.
    """
    n = len(lims) - 1
    t_lims, t_indices = transpose_csr(lims, indices, n)
    degree = np.diff(lims).astype(np.int64)
    covered = np.zeros(n, dtype=bool)
    picks: list[int] = []
    gains: list[int] = []
    while len(picks) < budget:
        best = int(np.argmax(degree))
        if degree[best] <= 0:
            break
        ball = indices[lims[best] : lims[best + 1]]
        new = ball[~covered[ball]]
        covered[new] = True
        degree -= np.bincount(gather_rows(t_lims, t_indices, new), minlength=n)
        picks.append(best)
        gains.append(len(new))
    return np.asarray(picks, dtype=np.int64), np.asarray(gains, dtype=np.int64), covered


@dataclass(kw_only=True)
class ProbCoverSelector(KMeansBase):
    """ProbCover (Yehuda, Dekel, Hacohen & Weinshall, NeurIPS 2022): max coverage by δ-balls.

    Embeddings are L2-normalised (``normalize=True``, as the paper does with SimCLR features). Each pool
    image is a ball of radius δ; picks are made greedily, each the image whose ball covers the most images
    not yet covered (score: that number). The δ-ball graph comes from an exact FAISS range search.

    δ is ``delta`` when given; otherwise the paper's purity rule: K-means with K = ``purity_clusters`` or
    else the task's ``n_classes``, and the largest δ for which at least ``purity`` of the balls hold only
    their centre's cluster (see :func:`purity_delta`). When every image is covered before the budget is
    spent, the remaining picks are farthest-first from the chosen set (k-center rule, ``farthest`` in
    ``selection.csv``, score: that distance), with a note.

    Args:
        budget: number of images to pick.
        delta: ball radius in the (normalised) embedding space; ``None``: chosen by purity.
        purity: fraction of pure balls the chosen δ keeps (the paper: 0.95).
        purity_clusters: K of the purity K-means; ``None``: the task's ``n_classes``.
        normalize: L2-normalise the embeddings first.
        max_edges: refuse a graph of more pairs than this (memory: ~24 bytes per pair with its transpose).

    The K-means keys (:class:`~imgselect.selection.selectors.KMeansBase`'s) are the purity K-means'; ``gpu``
    is also the neighbour searches'.
    """

    delta: float | None = None
    purity: float = 0.95
    purity_clusters: int | None = None
    normalize: bool = True
    max_edges: int = 50_000_000
    name: str = "probcover"

    pick = "coverage"
    title: ClassVar[str] = "ProbCover"

    def __post_init__(self) -> None:
        if self.delta is not None and not self.delta > 0:
            raise ValueError(f"delta={self.delta} must be positive (or null to choose it by purity)")
        if not 0.0 < self.purity <= 1.0:
            raise ValueError(f"purity={self.purity} must be in (0, 1]")

    def choose(self, x: np.ndarray, *, source: str, n_classes: int | None) -> Selection:
        """Pick ``budget`` images by greedy δ-ball coverage of ``x``; ``n_classes`` is K of the purity
        K-means when neither ``delta`` nor ``purity_clusters`` is set."""
        notes: list[str] = []
        if self.normalize:
            x = self._normalized(x, notes)
        cluster = np.full(len(x), -1, dtype=np.int64)
        sizes = np.zeros(0, dtype=np.int64)
        stats: dict[str, float | int | str] = {}
        if self.delta is not None:
            delta = float(self.delta)
            stats["delta_rule"] = "given"
        else:
            delta, cluster, sizes = self._purity_delta(x, n_classes, source)
            stats.update(delta_rule=f"purity {self.purity}", purity_clusters=len(sizes))
        lims, indices = self._ball_graph(x, delta)
        mean_degree = len(indices) / len(x)
        picks, gains, covered = greedy_coverage(lims, indices, self.budget)
        coverage = float(covered.mean())
        n_fill = self.budget - len(picks)
        rule = [self.pick] * len(picks) + ["farthest"] * n_fill
        score = gains.astype(np.float64)
        if n_fill:
            notes.append(
                f"δ-balls covered the whole pool after {len(picks)} of {self.budget} picks; the other "
                f"{n_fill} were picked farthest-first from the chosen set (rule 'farthest' in selection.csv)"
            )
            extra, dist = farthest_first(x, n_fill, chosen=picks, gpu=self.gpu)
            picks, score = np.concatenate([picks, extra]), np.concatenate([score, dist])
        log.info(
            "ProbCover: delta=%.4g, mean ball size %.1f, coverage %.1f%% with %d coverage picks from %s",
            delta,
            mean_degree,
            100 * coverage,
            self.budget - n_fill,
            source,
        )
        stats.update(delta=delta, coverage=coverage, mean_degree=mean_degree, edges=len(indices), fill=n_fill)
        selection = Selection.unclustered(picks, rule, notes=notes, stats=stats, score=score)
        if len(sizes):  # the purity K-means clusters when δ came from them
            selection.cluster, selection.cluster_size = cluster[picks], sizes[cluster[picks]]
        return selection

    @staticmethod
    def _normalized(x: np.ndarray, notes: list[str]) -> np.ndarray:
        """``x`` with each row scaled to unit length (all-zero rows stay at the origin, noted in ``notes``)."""
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        n_zero = int((norms[:, 0] == 0).sum())
        if n_zero:
            notes.append(f"{n_zero} embeddings are all zeros and stay at the origin after normalisation")
        return np.ascontiguousarray(x / np.where(norms > 0, norms, 1.0), dtype=np.float32)

    def _ball_graph(self, x: np.ndarray, delta: float) -> tuple[np.ndarray, np.ndarray]:
        """The δ-ball graph of ``x`` as CSR ``(lims, indices)`` (int32 indices), or a clear error when it would
        hold more than ``max_edges`` pairs."""
        estimate = estimate_pairs(x, delta, seed=self.seed)
        if estimate > 1.5 * self.max_edges:  # clearly too large: say so now, not after most of the search
            raise ValueError(
                f"ProbCover's δ-ball graph at delta={delta:.4g} would hold about {estimate:,.0f} pairs "
                f"(estimated from 1,000 balls), more than max_edges={self.max_edges:,}: the embeddings are "
                f"too concentrated for this δ; set a smaller delta or a lower purity (now {self.purity}), "
                f"raise max_edges, or use another embedding"
            )
        try:
            lims, indices, _ = range_search(x, delta, max_pairs=self.max_edges)
        except TooManyNeighbors as err:
            raise ValueError(
                f"ProbCover's δ-ball graph at delta={delta:.4g} is too large for max_edges={self.max_edges:,} "
                f"({err}); set a smaller delta or a lower purity (now {self.purity}), or raise max_edges"
            ) from err
        # int32 halves the graph's memory; pools are far below 2**31 images
        return lims, indices.astype(np.int32)

    def _purity_delta(
        self, x: np.ndarray, n_classes: int | None, source: str
    ) -> tuple[float, np.ndarray, np.ndarray]:
        """δ by the purity rule; also the purity clusters and their sizes."""
        k = self.purity_clusters or n_classes
        if k is None:
            raise ValueError(
                "ProbCover needs a ball radius: set delta, or purity_clusters, or run it where the task's "
                "number of classes is known (n_classes) so δ can be chosen by purity"
            )
        if not 2 <= k <= len(x):
            raise ValueError(
                f"the purity rule needs 2 <= K <= {len(x)} clusters (pool of {source}), got K={k}; "
                f"set purity_clusters or delta"
            )
        res = self.kmeans.run(x, k)
        if len(np.unique(res.assignments)) < 2:
            raise ValueError(
                f"the purity K-means (K={k}) put every embedding of {source} in one cluster; set delta"
            )
        delta, _ = purity_delta(x, res.assignments, self.purity, gpu=self.gpu)
        if not delta > 0:
            raise ValueError(
                f"the purity rule gave delta={delta} (duplicate embeddings in different K={k} clusters); "
                f"set delta or a lower purity (now {self.purity})"
            )
        log.info(
            "ProbCover: delta=%.4g keeps %.0f%% of balls pure over K=%d clusters", delta, 100 * self.purity, k
        )
        return delta, res.assignments, res.cluster_sizes
