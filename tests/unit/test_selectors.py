"""K-means++, exact neighbour search, TypiClust, ProbCover and k-center, each checked against a brute-force
numpy computation or a hand-worked example (never against the code itself)."""

from __future__ import annotations

import inspect

import numpy as np
import pytest

from imgselect.selection import (
    SELECTORS,
    KCenterSelector,
    ProbCoverSelector,
    Selection,
    Selector,
    TooManyNeighbors,
    TypiClustSelector,
    farthest_first,
    greedy_coverage,
    kmeans,
    kmeans_plusplus,
    knn,
    nearest_other_label,
    purity_delta,
    range_search,
    sq_distances_to,
    typicality,
)
from imgselect.selection import neighbors as neighbors_module
from imgselect.selection.kmeans import project_principal
from imgselect.selection.probcover import gather_rows, transpose_csr

# --------------------------------------------------------------------------------------------------------
# brute-force references


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


def brute_typicality(x: np.ndarray, k: int) -> np.ndarray:
    """1 / (mean Euclidean distance to the k nearest other points + 1e-8)."""
    d = np.sqrt(pairwise_sq(x))
    np.fill_diagonal(d, np.inf)
    return 1.0 / (np.sort(d, axis=1)[:, :k].mean(axis=1) + 1e-8)


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


def brute_greedy_coverage(balls: np.ndarray, budget: int) -> tuple[list[int], list[int], np.ndarray]:
    """Greedy max coverage on a dense boolean ``balls[i, j]`` (j in i's ball), recounting every step."""
    covered = np.zeros(balls.shape[1], dtype=bool)
    picks: list[int] = []
    gains: list[int] = []
    while len(picks) < budget:
        gain = (balls & ~covered).sum(axis=1)
        best = int(np.argmax(gain))
        if gain[best] == 0:
            break
        picks.append(best)
        gains.append(int(gain[best]))
        covered |= balls[best]
    return picks, gains, covered


def csr_from_sets(rows: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    lims = np.concatenate([[0], np.cumsum([len(r) for r in rows])]).astype(np.int64)
    indices = np.asarray([j for r in rows for j in r], dtype=np.int64)
    return lims, indices


def csr_to_dense(lims: np.ndarray, indices: np.ndarray, n: int) -> np.ndarray:
    dense = np.zeros((n, n), dtype=bool)
    rows = np.repeat(np.arange(n), np.diff(lims))
    dense[rows, indices] = True
    return dense


FIVE_CORNERS = [[0.0, 0.0], [100.0, 0.0], [0.0, 100.0], [100.0, 100.0], [50.0, 50.0]]


# --------------------------------------------------------------------------------------------------------
# K-means++ seeding and K-means


class TestKMeansPlusPlus:
    def test_returns_k_distinct_valid_indices(self) -> None:
        x = np.random.default_rng(0).normal(size=(300, 6)).astype(np.float32)
        idx = kmeans_plusplus(x, 20, seed=1)
        assert idx.shape == (20,) and idx.dtype == np.int64
        assert len(set(idx.tolist())) == 20
        assert idx.min() >= 0 and idx.max() < 300

    def test_same_seed_same_centres(self) -> None:
        x = np.random.default_rng(1).normal(size=(200, 4)).astype(np.float32)
        a = kmeans_plusplus(x, 10, seed=3)
        np.testing.assert_array_equal(a, kmeans_plusplus(x, 10, seed=3))
        others = [kmeans_plusplus(x, 10, seed=s).tolist() for s in range(4, 9)]
        assert any(o != a.tolist() for o in others)

    @pytest.mark.parametrize("seed", range(8))
    def test_one_centre_per_separated_blob(self, seed: int) -> None:
        x, truth = blobs(FIVE_CORNERS, [40] * 5, std=0.5, seed=seed)
        idx = kmeans_plusplus(x, 5, seed=seed)
        assert sorted(truth[idx].tolist()) == [0, 1, 2, 3, 4]

    @pytest.mark.parametrize("seed", range(4))
    def test_one_centre_per_blob_after_projection(self, seed: int) -> None:
        # blobs differ in 2 of 10 dimensions; the other 8 hold only tiny noise, so the seeding projects
        x2, truth = blobs(FIVE_CORNERS, [40] * 5, std=0.5, seed=seed)
        noise = np.random.default_rng(seed).normal(0, 0.01, (len(x2), 8)).astype(np.float32)
        idx = kmeans_plusplus(np.hstack([x2, noise]), 5, seed=seed)
        assert sorted(truth[idx].tolist()) == [0, 1, 2, 3, 4]

    def test_sample_smaller_than_pool(self) -> None:
        x = np.random.default_rng(2).normal(size=(1000, 3)).astype(np.float32)
        idx = kmeans_plusplus(x, 10, seed=0, sample_size=40)
        assert len(set(idx.tolist())) == 10 and idx.min() >= 0 and idx.max() < 1000

    def test_fewer_distinct_points_than_k(self) -> None:
        # 3 distinct points, 10 copies each (interleaved): 8 distinct indices, every distinct point among them
        x = np.tile(np.eye(3, dtype=np.float32), (10, 1))
        for seed in range(5):
            idx = kmeans_plusplus(x, 8, seed=seed)
            assert len(set(idx.tolist())) == 8
            assert len(np.unique(x[idx], axis=0)) == 3

    @pytest.mark.parametrize("k", [0, 11])
    def test_bad_k(self, k: int) -> None:
        with pytest.raises(ValueError, match="1 <= k <= n"):
            kmeans_plusplus(np.zeros((10, 2), np.float32), k)

    @pytest.mark.parametrize("variance", [0.0, 1.5])
    def test_bad_variance(self, variance: float) -> None:
        with pytest.raises(ValueError, match="variance"):
            kmeans_plusplus(np.random.default_rng(0).normal(size=(10, 2)), 2, variance=variance)


class TestProjectPrincipal:
    def test_keeps_fewest_axes_holding_the_variance(self) -> None:
        rng = np.random.default_rng(0)
        # standard deviations 10, 3, 1, 0.1 along a random rotation
        rot, _ = np.linalg.qr(rng.normal(size=(4, 4)))
        x = ((rng.normal(size=(500, 4)) * [10.0, 3.0, 1.0, 0.1]) @ rot.T + 5.0).astype(np.float32)
        centred = x.astype(np.float64) - x.astype(np.float64).mean(0)
        _, s, vt = np.linalg.svd(centred, full_matrices=False)
        share = np.cumsum(s**2) / (s**2).sum()
        for variance in (0.5, 0.95, 0.995):
            dims = int(np.argmax(share >= variance)) + 1
            assert dims < 4, "the test needs a case where axes are dropped"
            out = project_principal(x, variance, np.random.default_rng(0))
            assert out.shape == (500, dims) and out.dtype == np.float32
            expected = centred @ vt[:dims].T
            # each axis is defined up to its sign
            signs = np.sign((out * expected).sum(0))
            np.testing.assert_allclose(out * signs, expected, atol=1e-3)

    def test_full_variance_or_constant_data_unchanged(self) -> None:
        x = np.random.default_rng(1).normal(size=(50, 3))
        np.testing.assert_array_equal(
            project_principal(x, 1.0, np.random.default_rng(0)), x.astype(np.float32)
        )
        const = np.full((20, 3), 2.0)
        np.testing.assert_array_equal(project_principal(const, 0.9, np.random.default_rng(0)), const)

    def test_isotropic_data_keeps_every_axis(self) -> None:
        # two equal axes: 90 % of the variance needs both, so nothing is dropped and x is returned as is
        x = np.array([[1, 0], [-1, 0], [0, 1], [0, -1]], dtype=np.float32) + 7
        np.testing.assert_array_equal(project_principal(x, 0.9, np.random.default_rng(0)), x)


class TestKMeansPlusPlusInit:
    def test_unbalanced_blobs_reach_the_optimum(self) -> None:
        # one big blob and four small ones: random seeding puts several centres in the big blob
        centres = [[0.0, 0.0], [100.0, 0.0], [0.0, 100.0], [-100.0, 0.0], [0.0, -100.0]]
        x, truth = blobs(centres, [400, 40, 40, 40, 40], std=1.0, seed=0)
        optimum = sum(
            float(pairwise_sq(x[truth == b], x[truth == b].mean(0, keepdims=True)).sum()) for b in range(5)
        )
        for seed in range(3):
            res = kmeans(x, 5, seed=seed, gpu=False, init="kmeans++")
            assert res.objective == pytest.approx(optimum, rel=1e-3)
            # the clusters are the blobs
            for b in range(5):
                assert len(set(res.assignments[truth == b].tolist())) == 1
            assert len(set(res.assignments.tolist())) == 5
        # the case is hard: FAISS's random seeding misses the optimum for at least one of the same seeds
        rand = [kmeans(x, 5, seed=seed, gpu=False, init="random").objective for seed in range(3)]
        assert min(rand) >= optimum * (1 - 1e-3)
        assert max(rand) > 10 * optimum

    def test_nredo_keeps_the_best_seeding(self) -> None:
        x = np.random.default_rng(4).normal(size=(400, 5)).astype(np.float32)
        single = [kmeans(x, 12, seed=s, gpu=False, init="kmeans++").objective for s in (10, 11, 12)]
        best = kmeans(x, 12, seed=10, nredo=3, gpu=False, init="kmeans++").objective
        assert best == pytest.approx(min(single), rel=1e-3)
        assert any(best == pytest.approx(s, rel=1e-6) for s in single)

    def test_objective_and_assignments_are_consistent(self) -> None:
        x = np.random.default_rng(5).normal(size=(300, 4)).astype(np.float32)
        res = kmeans(x, 7, seed=0, gpu=False, init="kmeans++")
        sq = pairwise_sq(x, res.centroids)
        np.testing.assert_array_equal(res.assignments, sq.argmin(1))
        np.testing.assert_allclose(res.sq_distances, sq.min(1), rtol=1e-4, atol=1e-5)

    def test_invalid_init(self) -> None:
        with pytest.raises(ValueError, match="init='kmeans--'"):
            kmeans(np.zeros((10, 2), np.float32), 2, gpu=False, init="kmeans--")


# --------------------------------------------------------------------------------------------------------
# neighbours


class TestKnn:
    def test_matches_brute_force(self) -> None:
        x = np.random.default_rng(0).normal(size=(60, 5)).astype(np.float32)
        sq, idx = knn(x, 4, gpu=False)
        d = pairwise_sq(x)
        np.fill_diagonal(d, np.inf)
        order = np.argsort(d, axis=1)[:, :4]
        assert sq.shape == idx.shape == (60, 4) and idx.dtype == np.int64 and sq.dtype == np.float32
        np.testing.assert_array_equal(idx, order)
        np.testing.assert_allclose(sq, np.take_along_axis(d, order, 1), rtol=1e-4, atol=1e-5)

    def test_duplicates_are_neighbours_but_never_self(self) -> None:
        # 5 copies each of two points: more zero-distance ties than the k + 1 results FAISS returns
        x = np.repeat(np.array([[0.0, 0.0], [3.0, 4.0]], dtype=np.float32), 5, axis=0)
        group = np.repeat([0, 1], 5)
        sq, idx = knn(x, 2, gpu=False)
        assert (idx != np.arange(10)[:, None]).all()
        assert (group[idx] == group[:, None]).all()
        np.testing.assert_array_equal(sq, 0.0)
        assert all(len(set(row)) == 2 for row in idx.tolist())
        # k = 5 reaches past the 4 duplicates to the other group, at distance 5² = 25
        sq5, idx5 = knn(x, 5, gpu=False)
        assert (idx5 != np.arange(10)[:, None]).all()
        np.testing.assert_array_equal(sq5[:, :4], 0.0)
        np.testing.assert_allclose(sq5[:, 4], 25.0)
        assert (group[idx5[:, 4]] != group).all()

    @pytest.mark.parametrize("k", [0, 10])
    def test_k_out_of_range(self, k: int) -> None:
        with pytest.raises(ValueError, match="1 <= k <= n - 1"):
            knn(np.random.default_rng(0).normal(size=(10, 2)), k, gpu=False)


class TestRangeSearch:
    @staticmethod
    def pairs(lims: np.ndarray, indices: np.ndarray) -> set[tuple[int, int]]:
        rows = np.repeat(np.arange(len(lims) - 1), np.diff(lims))
        return set(zip(rows.tolist(), indices.tolist(), strict=True))

    @pytest.mark.parametrize("batch", [4096, 7])
    def test_matches_brute_force(self, batch: int, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(neighbors_module, "RANGE_SEARCH_BATCH", batch)
        x = np.random.default_rng(1).uniform(size=(80, 3)).astype(np.float32)
        d2 = pairwise_sq(x)
        radius = radius_with_margin(np.sqrt(d2), 0.1)
        lims, indices, sq = range_search(x, radius)
        assert lims.shape == (81,) and lims[0] == 0 and lims[-1] == len(indices) == len(sq)
        expected = {(int(i), int(j)) for i, j in np.argwhere(np.sqrt(d2) < radius)}
        assert self.pairs(lims, indices) == expected
        assert all((i, i) in expected for i in range(80))  # self included
        rows = np.repeat(np.arange(80), np.diff(lims))
        np.testing.assert_allclose(sq, d2[rows, indices], rtol=1e-4, atol=1e-5)

    def test_max_pairs(self) -> None:
        x = np.random.default_rng(2).uniform(size=(50, 2)).astype(np.float32)
        radius = radius_with_margin(np.sqrt(pairwise_sq(x)), 0.3)
        total = int((np.sqrt(pairwise_sq(x)) < radius).sum())
        lims, _, _ = range_search(x, radius, max_pairs=total)  # exactly the limit is allowed
        assert lims[-1] == total
        with pytest.raises(TooManyNeighbors, match="pairs within radius"):
            range_search(x, radius, max_pairs=total - 1)
        assert issubclass(TooManyNeighbors, ValueError)

    @pytest.mark.parametrize("radius", [0.0, -1.0, float("inf")])
    def test_bad_radius(self, radius: float) -> None:
        with pytest.raises(ValueError, match="positive finite radius"):
            range_search(np.zeros((3, 2), np.float32), radius)


class TestSqDistancesTo:
    def test_matches_brute_force(self) -> None:
        rng = np.random.default_rng(3)
        x = rng.normal(size=(50, 4)).astype(np.float32)
        q = rng.normal(size=(3, 4)).astype(np.float32)
        q = np.vstack([q, q[1:2]])  # a repeated query fills its own column too
        out = sq_distances_to(x, q, gpu=False)
        assert out.shape == (50, 4) and out.dtype == np.float32
        np.testing.assert_allclose(out, pairwise_sq(x, q), rtol=1e-4, atol=1e-5)

    def test_single_query_and_dimension_check(self) -> None:
        x = np.random.default_rng(4).normal(size=(30, 3)).astype(np.float32)
        out = sq_distances_to(x, x[7], gpu=False)
        assert out.shape == (30, 1)
        np.testing.assert_allclose(out[:, 0], pairwise_sq(x, x[7:8])[:, 0], rtol=1e-4, atol=1e-5)
        with pytest.raises(ValueError, match="dimension 2 but the points have 3"):
            sq_distances_to(x, np.zeros(2), gpu=False)


class TestNearestOtherLabel:
    def test_matches_brute_force(self) -> None:
        rng = np.random.default_rng(5)
        x = rng.normal(size=(70, 3)).astype(np.float32)
        labels = rng.integers(0, 3, 70)
        sq, idx = nearest_other_label(x, labels, gpu=False)
        d = pairwise_sq(x)
        d[labels[:, None] == labels[None, :]] = np.inf
        np.testing.assert_array_equal(idx, d.argmin(1))
        np.testing.assert_allclose(sq, d.min(1), rtol=1e-4, atol=1e-5)
        assert (labels[idx] != labels).all()

    def test_needs_two_labels_of_the_right_shape(self) -> None:
        x = np.zeros((4, 2), np.float32)
        with pytest.raises(ValueError, match="at least two distinct labels"):
            nearest_other_label(x, np.zeros(4, dtype=int), gpu=False)
        with pytest.raises(ValueError, match=r"labels must have shape \(4,\)"):
            nearest_other_label(x, np.array([0, 1, 0]), gpu=False)


# --------------------------------------------------------------------------------------------------------
# TypiClust


class TestTypicality:
    def test_matches_brute_force(self) -> None:
        x = np.random.default_rng(6).normal(size=(40, 3)).astype(np.float32)
        np.testing.assert_allclose(typicality(x, 5, gpu=False), brute_typicality(x, 5), rtol=1e-4)

    def test_fewer_points_than_neighbours_uses_all_others(self) -> None:
        x = np.array([[0, 0], [3, 0], [0, 4], [3, 4]], dtype=np.float32)
        # point 0: distances 3, 4, 5 -> mean 4; every corner of this rectangle has the same
        np.testing.assert_allclose(typicality(x, 20, gpu=False), 1 / (4 + 1e-8), rtol=1e-6)

    def test_dense_centre_beats_outlier(self) -> None:
        rng = np.random.default_rng(7)
        x = np.vstack([rng.normal(0, 0.2, (30, 2)), [[5.0, 5.0]]]).astype(np.float32)
        typ = typicality(x, 10, gpu=False)
        assert int(np.argmin(typ)) == 30
        assert typ[np.argmin((x[:30] ** 2).sum(1))] > typ[30]

    def test_single_point_and_bad_k(self) -> None:
        np.testing.assert_array_equal(typicality(np.ones((1, 3), np.float32), 5, gpu=False), [0.0])
        with pytest.raises(ValueError, match="k_neighbors=0"):
            typicality(np.ones((4, 3), np.float32), 0, gpu=False)


class TestTypiClustSelector:
    def test_most_typical_per_blob_never_the_outlier(self) -> None:
        centres = np.array([[0.0, 0.0], [50.0, 0.0], [0.0, 50.0], [50.0, 50.0]])
        x, truth = blobs(centres, [30] * 4, std=0.5, seed=1)
        # one outlier per blob, still nearer its own blob than any other
        x = np.vstack([x, centres + 4.0]).astype(np.float32)
        truth = np.concatenate([truth, np.arange(4)])
        outliers = set(range(120, 124))
        sel = TypiClustSelector(budget=4, k_neighbors=20, gpu=False).select(len(x), x)
        assert len(sel) == 4 and sorted(truth[sel.indices].tolist()) == [0, 1, 2, 3]
        assert not outliers & set(sel.indices.tolist())
        assert sel.rule == ["typical"] * 4
        assert sel.cluster_size.tolist() == [31] * 4
        for pick, score in zip(sel.indices, sel.score, strict=True):
            members = np.flatnonzero(truth == truth[pick])
            typ = brute_typicality(x[members], 20)
            assert pick == members[np.argmax(typ)]
            assert score == pytest.approx(typ.max(), rel=1e-4)

    def test_round_robin_when_budget_exceeds_clusters(self) -> None:
        # 3 distinct points, 10 copies each (interleaved): only 3 clusters can be non-empty for budget 6;
        # all copies tie at typicality 1e8, so each cluster gives its two lowest indices
        x = np.tile(np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]], dtype=np.float32), (10, 1))
        group = np.tile([0, 1, 2], 10)
        sel = TypiClustSelector(budget=6, k_neighbors=20, gpu=False).select(30, x)
        assert len(set(sel.indices.tolist())) == 6
        assert sel.rule == ["typical"] * 3 + ["round_robin"] * 3
        expected = {int(i) for g in range(3) for i in np.flatnonzero(group == g)[:2]}
        assert set(sel.indices.tolist()) == expected
        np.testing.assert_allclose(sel.score, 1e8, rtol=1e-6)
        assert sel.stats["round_robin_picks"] == 3 and sel.stats["empty_clusters"] == 3
        assert any("round-robin" in n for n in sel.notes)
        assert any("3 are empty" in n for n in sel.notes)

    def test_small_clusters_used_last(self) -> None:
        # clusters of 6, 6, 1, 1 (min_cluster_size 5): 12 picks from the big two, then one singleton
        big = np.tile(np.array([[0.0, 0.0], [10.0, 0.0]], dtype=np.float32), (6, 1))
        x = np.vstack([big, [[0.0, 10.0], [10.0, 10.0]]]).astype(np.float32)
        sel = TypiClustSelector(budget=13, k_neighbors=3, min_cluster_size=5, gpu=False).select(14, x)
        assert len(set(sel.indices.tolist())) == 13
        assert sel.rule == ["typical"] * 2 + ["round_robin"] * 10 + ["small_cluster"]
        assert set(sel.indices[:12].tolist()) == set(range(12))
        assert sel.indices[12] in (12, 13)
        assert sel.score is not None and sel.score[12] == 0.0  # a singleton has typicality 0
        assert any("singletons" in n for n in sel.notes)
        assert any("small_cluster" in n for n in sel.notes)

    def test_bad_arguments(self) -> None:
        with pytest.raises(ValueError, match="k_neighbors=0"):
            TypiClustSelector(budget=2, k_neighbors=0)
        with pytest.raises(ValueError, match="min_cluster_size=0"):
            TypiClustSelector(budget=2, min_cluster_size=0)
        with pytest.raises(ValueError, match="needs pool embeddings"):
            TypiClustSelector(budget=2, gpu=False).select(5, None)


# --------------------------------------------------------------------------------------------------------
# ProbCover


class TestPurityDelta:
    def test_two_labels_on_a_line_by_hand(self) -> None:
        # label 0 at 0, 1, 2, 3 and label 1 at 10, 11, 12: r = 10, 9, 8, 7 | 7, 8, 9
        x = np.array([[0], [1], [2], [3], [10], [11], [12]], dtype=np.float32)
        labels = np.array([0, 0, 0, 0, 1, 1, 1])
        delta, r = purity_delta(x, labels, 1.0, gpu=False)
        np.testing.assert_allclose(r, [10, 9, 8, 7, 7, 8, 9])
        assert delta == pytest.approx(7.0)  # every ball pure: the smallest r
        # 70 %: δ = 8 keeps r >= 8 for 5 of 7 (71 %); anything above 8 keeps only 3 of 7
        assert purity_delta(x, labels, 0.7, gpu=False)[0] == pytest.approx(8.0)
        assert purity_delta(x, labels, 0.5, gpu=False)[0] == pytest.approx(8.0)  # δ = 9 keeps 3 of 7
        assert purity_delta(x, labels, 0.4, gpu=False)[0] == pytest.approx(9.0)  # 3 of 7 = 43 %

    @pytest.mark.parametrize("purity", [0.95, 0.9, 0.75, 0.5, 0.05])
    def test_largest_delta_with_enough_pure_balls(self, purity: float) -> None:
        rng = np.random.default_rng(8)
        x = rng.normal(size=(40, 2)).astype(np.float32)
        labels = rng.integers(0, 3, 40)
        delta, r = purity_delta(x, labels, purity, gpu=False)
        d = pairwise_sq(x)
        d[labels[:, None] == labels[None, :]] = np.inf
        brute_r = np.sqrt(d.min(1))
        np.testing.assert_allclose(r, brute_r, rtol=1e-4)
        # the ball {|y - x| < δ} is pure iff δ <= r(x)
        assert (brute_r >= delta - 1e-5).mean() >= purity
        larger = brute_r[brute_r > delta + 1e-5]
        if len(larger):
            assert (brute_r >= larger.min()).mean() < purity

    @pytest.mark.parametrize("purity", [0.0, 1.01])
    def test_bad_purity(self, purity: float) -> None:
        with pytest.raises(ValueError, match="purity"):
            purity_delta(np.zeros((4, 1), np.float32), np.array([0, 0, 1, 1]), purity, gpu=False)


class TestGraphHelpers:
    def test_transpose_csr(self) -> None:
        rng = np.random.default_rng(9)
        n = 12
        dense = rng.random((n, n)) < 0.3
        dense[5] = False  # an empty row
        lims, indices = csr_from_sets([np.flatnonzero(row).tolist() for row in dense])
        t_lims, t_indices = transpose_csr(lims, indices, n)
        assert t_lims.shape == (n + 1,)
        np.testing.assert_array_equal(csr_to_dense(t_lims, t_indices, n), dense.T)
        assert len(t_indices) == dense.sum()

    def test_gather_rows(self) -> None:
        lims, indices = csr_from_sets([[0, 1], [], [2, 3, 4], [5], [6, 7]])
        for rows in ([2, 0, 2], [1], [4, 1, 3], []):
            r = np.asarray(rows, dtype=np.int64)
            expected = [j for i in rows for j in indices[lims[i] : lims[i + 1]].tolist()]
            assert gather_rows(lims, indices, r).tolist() == expected

    def test_greedy_coverage_hand_built(self) -> None:
        # balls: 0:{0,1,2}  1:{0,1}  2:{0,2,3,4}  3:{3}  4:{4,5}  5:{5}
        # 2 covers 4 points; then 1 new for 0 (1), 1 (1) and 4 (5): ties to the lowest index, 0; then 4
        lims, indices = csr_from_sets([[0, 1, 2], [1, 0], [2, 3, 4, 0], [3], [4, 5], [5]])
        picks, gains, covered = greedy_coverage(lims, indices, 10)
        assert picks.tolist() == [2, 0, 4]
        assert gains.tolist() == [4, 1, 1]
        assert covered.all()
        two, gains2, covered2 = greedy_coverage(lims, indices, 2)
        assert two.tolist() == [2, 0] and gains2.tolist() == [4, 1]
        assert covered2.tolist() == [True, True, True, True, True, False]

    @pytest.mark.parametrize("seed", range(5))
    def test_greedy_coverage_matches_brute_force(self, seed: int) -> None:
        rng = np.random.default_rng(seed)
        n = 40
        balls = rng.random((n, n)) < 0.08
        np.fill_diagonal(balls, True)
        lims, indices = csr_from_sets([np.flatnonzero(b).tolist() for b in balls])
        for budget in (3, 10, n):
            picks, gains, covered = greedy_coverage(lims, indices, budget)
            bp, bg, bc = brute_greedy_coverage(balls, budget)
            assert picks.tolist() == bp and gains.tolist() == bg
            np.testing.assert_array_equal(covered, bc)
        # with budget n it stops as soon as everything is covered
        assert covered.all() and len(picks) < n and gains.sum() == n


class TestProbCoverSelector:
    def test_greedy_picks_match_brute_force_with_given_delta(self) -> None:
        x = np.random.default_rng(10).uniform(size=(60, 2)).astype(np.float32)
        d = np.sqrt(pairwise_sq(x))
        delta = radius_with_margin(d, 0.05)
        sel = ProbCoverSelector(budget=5, delta=delta, normalize=False, gpu=False).select(60, x)
        picks, gains, covered = brute_greedy_coverage(d < delta, 5)
        assert not covered.all(), "the test needs a case where the budget runs out first"
        # the first pick's ball holds the most points
        assert sel.indices[0] == int(np.argmax((d < delta).sum(1)))
        assert sel.indices.tolist() == picks
        np.testing.assert_array_equal(sel.score, gains)
        assert sel.rule == ["coverage"] * 5
        assert sel.stats["delta"] == delta and sel.stats["delta_rule"] == "given"
        assert sel.stats["coverage"] == pytest.approx(covered.mean())
        assert sel.cluster.tolist() == [-1] * 5 and sel.cluster_size.tolist() == [0] * 5

    def test_normalises_before_the_balls(self) -> None:
        rng = np.random.default_rng(11)
        # radii vary wildly, so the balls differ with and without normalisation
        x = (rng.normal(size=(50, 3)) * rng.uniform(0.1, 10, (50, 1))).astype(np.float32)
        xn = x / np.linalg.norm(x.astype(np.float64), axis=1, keepdims=True)
        d = np.sqrt(pairwise_sq(xn))
        delta = radius_with_margin(d, 0.1)
        sel = ProbCoverSelector(budget=4, delta=delta, gpu=False).select(50, x)
        picks, gains, _ = brute_greedy_coverage(d < delta, 4)
        assert sel.indices.tolist() == picks
        np.testing.assert_array_equal(sel.score, gains)

    def test_farthest_first_once_everything_is_covered(self) -> None:
        x = np.random.default_rng(12).normal(size=(30, 2)).astype(np.float32)
        xn = x / np.linalg.norm(x.astype(np.float64), axis=1, keepdims=True)
        # unit vectors are at most 2 apart: one ball of radius 3 covers the pool, every ball ties, 0 wins
        sel = ProbCoverSelector(budget=4, delta=3.0, gpu=False).select(30, x)
        assert sel.indices[0] == 0 and sel.score is not None and sel.score[0] == 30
        assert sel.rule == ["coverage", "farthest", "farthest", "farthest"]
        extra, dist = brute_farthest_first(xn, 3, chosen=[0])
        assert sel.indices[1:].tolist() == extra
        np.testing.assert_allclose(sel.score[1:], dist, rtol=1e-4)
        assert sel.stats["fill"] == 3 and sel.stats["coverage"] == 1.0
        assert any("farthest" in n for n in sel.notes)

    def test_needs_delta_or_classes(self) -> None:
        x = np.random.default_rng(13).normal(size=(20, 3)).astype(np.float32)
        with pytest.raises(ValueError, match="delta"):
            ProbCoverSelector(budget=3, gpu=False).select(20, x)
        with pytest.raises(ValueError, match="2 <= K"):
            ProbCoverSelector(budget=3, purity_clusters=1, gpu=False).select(20, x)
        with pytest.raises(ValueError, match="delta=0"):
            ProbCoverSelector(budget=3, delta=0.0)

    def test_purity_rule_with_n_classes(self) -> None:
        # three blobs in three directions: K-means on the normalised points finds them
        x, truth = blobs([[10.0, 0.0], [0.0, 10.0], [-10.0, -10.0]], [30, 30, 30], std=1.0, seed=14)
        sel = ProbCoverSelector(budget=6, gpu=False).select(90, x, n_classes=3)
        assert len(set(sel.indices.tolist())) == 6 and sel.indices.max() < 90
        assert str(sel.stats["delta_rule"]).startswith("purity") and sel.stats["purity_clusters"] == 3
        assert set(sel.cluster.tolist()) <= {0, 1, 2} and all(s == 30 for s in sel.cluster_size)
        # δ is the largest radius that keeps at least 95 % of the balls inside their blob
        xn = x / np.linalg.norm(x.astype(np.float64), axis=1, keepdims=True)
        d = pairwise_sq(xn)
        d[truth[:, None] == truth[None, :]] = np.inf
        r = np.sqrt(d.min(1))
        delta = float(sel.stats["delta"])
        assert (r >= delta - 1e-5).mean() >= 0.95
        assert (r >= r[r > delta + 1e-5].min()).mean() < 0.95

    def test_max_edges_too_small(self) -> None:
        x = np.random.default_rng(15).normal(size=(20, 2)).astype(np.float32)
        # δ = 3 on unit vectors: all 400 ordered pairs
        ProbCoverSelector(budget=2, delta=3.0, max_edges=400, gpu=False).select(20, x)
        with pytest.raises(ValueError, match="max_edges=399") as err:
            ProbCoverSelector(budget=2, delta=3.0, max_edges=399, gpu=False).select(20, x)
        assert not isinstance(err.value, TooManyNeighbors)

    def test_far_too_large_graph_is_refused_from_an_estimate(self) -> None:
        """A concentrated embedding (every vector nearly the same direction) would make a near-complete graph."""
        rng = np.random.default_rng(16)
        x = (np.ones((3000, 8)) + 0.01 * rng.normal(size=(3000, 8))).astype(np.float32)
        with pytest.raises(ValueError, match=r"would hold about .* pairs \(estimated from 1,000 balls\)"):
            ProbCoverSelector(budget=2, delta=0.5, max_edges=100_000, gpu=False).select(3000, x)


def test_estimate_pairs_is_exact_on_small_sets_and_close_on_samples() -> None:
    x = np.random.default_rng(17).normal(size=(1500, 3)).astype(np.float32)
    true = int((pairwise_sq(x, x) < 0.8**2).sum())
    assert neighbors_module.estimate_pairs(x, 0.8, sample=1500) == true
    estimate = neighbors_module.estimate_pairs(x, 0.8, sample=500, seed=3)
    assert abs(estimate - true) < 0.1 * true


# --------------------------------------------------------------------------------------------------------
# k-center


class TestFarthestFirst:
    def test_matches_brute_force_from_first(self) -> None:
        x = np.random.default_rng(16).normal(size=(50, 3)).astype(np.float32)
        picks, scores = farthest_first(x, 10, first=7, gpu=False)
        bp, bs = brute_farthest_first(x, 10, first=7)
        assert picks.tolist() == bp
        assert np.isnan(scores[0])
        np.testing.assert_allclose(scores[1:], bs[1:], rtol=1e-4)
        assert (np.diff(scores[1:]) <= 1e-6).all()  # non-increasing
        assert len(set(picks.tolist())) == 10

    def test_matches_brute_force_from_chosen(self) -> None:
        x = np.random.default_rng(17).normal(size=(40, 2)).astype(np.float32)
        picks, scores = farthest_first(x, 6, chosen=np.array([3, 11]), gpu=False)
        bp, bs = brute_farthest_first(x, 6, chosen=[3, 11])
        assert picks.tolist() == bp and not {3, 11} & set(bp)
        np.testing.assert_allclose(scores, bs, rtol=1e-4)

    def test_duplicates_never_repeat_a_pick(self) -> None:
        # 3 distinct points, 4 copies each (interleaved): after 3 picks every distance is 0, the
        # remaining picks are the lowest unchosen indices
        x = np.tile(np.array([[0.0, 0.0], [4.0, 0.0], [0.0, 3.0]], dtype=np.float32), (4, 1))
        picks, scores = farthest_first(x, 8, first=0, gpu=False)
        bp, bs = brute_farthest_first(x, 8, first=0)
        assert picks.tolist() == bp and len(set(bp)) == 8
        np.testing.assert_allclose(scores[1:], bs[1:], atol=1e-6)
        np.testing.assert_array_equal(scores[3:], 0.0)

    def test_errors(self) -> None:
        x = np.zeros((5, 2), np.float32)
        with pytest.raises(ValueError, match="cannot pick 4 more of 5 points"):
            farthest_first(x, 4, chosen=np.array([0, 1]), gpu=False)
        with pytest.raises(ValueError, match="`first`"):
            farthest_first(x, 2, gpu=False)
        empty, empty_scores = farthest_first(x, 0, chosen=np.array([0]), gpu=False)
        assert len(empty) == 0 and len(empty_scores) == 0


class TestKCenterSelector:
    def test_mean_start_then_farthest_first(self) -> None:
        x = np.random.default_rng(18).normal(size=(60, 4)).astype(np.float32)
        sel = KCenterSelector(budget=8, gpu=False).select(60, x)
        first = int(np.argmin(pairwise_sq(x, x.astype(np.float64).mean(0, keepdims=True))[:, 0]))
        bp, bs = brute_farthest_first(x, 8, first=first)
        assert sel.indices.tolist() == bp and sel.stats["first"] == first
        assert sel.score is not None and np.isnan(sel.score[0])
        np.testing.assert_allclose(sel.score[1:], bs[1:], rtol=1e-4)
        assert sel.rule == ["farthest"] * 8 and not sel.notes

    def test_covering_radius_is_that_of_the_selection(self) -> None:
        x = np.random.default_rng(19).normal(size=(60, 4)).astype(np.float32)
        sel = KCenterSelector(budget=8, gpu=False).select(60, x)
        radius = np.sqrt(pairwise_sq(x, x[sel.indices]).min(1).max())
        assert sel.stats["covering_radius"] == pytest.approx(radius, rel=1e-4)

    def test_random_start_depends_on_seed(self) -> None:
        x = np.random.default_rng(20).normal(size=(100, 3)).astype(np.float32)
        a = KCenterSelector(budget=5, start="random", seed=1, gpu=False).select(100, x)
        b = KCenterSelector(budget=5, start="random", seed=1, gpu=False).select(100, x)
        assert a.indices.tolist() == b.indices.tolist()
        firsts = {
            KCenterSelector(budget=5, start="random", seed=s, gpu=False).select(100, x).indices[0]
            for s in range(6)
        }
        assert len(firsts) > 1
        # every start is followed by the brute-force farthest-first sequence
        bp, _ = brute_farthest_first(x, 5, first=int(a.indices[0]))
        assert a.indices.tolist() == bp

    def test_duplicate_pool_is_noted(self) -> None:
        x = np.tile(np.array([[0.0, 0.0], [4.0, 0.0], [0.0, 3.0]], dtype=np.float32), (3, 1))
        sel = KCenterSelector(budget=5, gpu=False).select(9, x)
        assert len(set(sel.indices.tolist())) == 5
        assert any(n.startswith("2 of 5 k-center picks are duplicates") for n in sel.notes)

    def test_invalid_start(self) -> None:
        with pytest.raises(ValueError, match="start='median'"):
            KCenterSelector(budget=2, start="median")


# --------------------------------------------------------------------------------------------------------
# Selection and the Selector protocol


class TestSelectionAndProtocol:
    def test_score_defaults_to_nan_and_is_checked(self) -> None:
        base = {
            "indices": np.arange(3),
            "cluster": np.full(3, -1),
            "distance": np.full(3, np.nan),
            "cluster_size": np.zeros(3, dtype=int),
            "rule": ["x"] * 3,
        }
        sel = Selection(**base)
        assert sel.score is not None and sel.score.shape == (3,) and np.isnan(sel.score).all()
        given = Selection(**base, score=[1, 2, 3])
        assert given.score is not None and given.score.dtype == np.float64
        np.testing.assert_array_equal(given.score, [1.0, 2.0, 3.0])
        with pytest.raises(ValueError, match=r"score has shape \(2,\)"):
            Selection(**base, score=np.zeros(2))
        with pytest.raises(ValueError, match="score has shape"):
            Selection(**base, score=np.zeros((3, 1)))

    @pytest.mark.parametrize("cls", SELECTORS, ids=lambda c: c.__name__)
    def test_every_selector_satisfies_the_protocol(self, cls: type[Selector]) -> None:
        kwargs: dict[str, object] = {"budget": 6}
        if "gpu" in inspect.signature(cls).parameters:
            kwargs["gpu"] = False
        selector = cls(**kwargs)
        assert isinstance(selector, Selector)
        assert selector.budget == 6 and isinstance(selector.name, str) and isinstance(selector.pick, str)
        x, _ = blobs([[10.0, 0.0], [0.0, 10.0], [-10.0, -10.0]], [20, 20, 20], std=1.0, seed=21)
        sel = selector.select(60, x if selector.requires_embeddings else None, n_classes=3)
        assert len(sel) == 6 and len(set(sel.indices.tolist())) == 6
        assert sel.indices.min() >= 0 and sel.indices.max() < 60
        assert len(sel.rule) == len(sel.cluster) == len(sel.distance) == len(sel.cluster_size) == 6
        assert sel.score is not None and sel.score.shape == (6,)


def test_kmeans_plusplus_never_repeats_a_centre_on_a_duplicate_heavy_pool() -> None:
    """6 distinct points, 20 copies each, k = 12: a centre's own rounding leftover must not be drawn again
    (before the fix 89 of 200 seeds returned a repeated index)."""
    base = np.random.default_rng(0).normal(size=(6, 16)).astype(np.float32) * 3
    x = np.repeat(base, 20, axis=0)
    for seed in range(200):
        idx = kmeans_plusplus(x, 12, seed=seed, variance=1.0)
        assert len(np.unique(idx)) == 12, seed


def test_kmeans_rejects_zero_iterations_or_runs() -> None:
    x = np.random.default_rng(1).normal(size=(50, 3)).astype(np.float32)
    for kwargs in ({"nredo": 0}, {"niter": 0}):
        with pytest.raises(ValueError, match="niter >= 1 and nredo >= 1"):
            kmeans(x, 3, gpu=False, init="kmeans++", **kwargs)
