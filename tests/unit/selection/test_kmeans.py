"""K-means++ seeding, the principal projection it seeds on, and FAISS K-means with K-means++ init, each
checked against a brute-force numpy computation or a hand-worked example (never against the code itself)."""

from __future__ import annotations

import numpy as np
import pytest

from imgselect.selection import kmeans, kmeans_plusplus
from imgselect.selection.kmeans import project_principal
from tests.unit.selection.helpers import blobs, pairwise_sq

FIVE_CORNERS = [[0.0, 0.0], [100.0, 0.0], [0.0, 100.0], [100.0, 100.0], [50.0, 50.0]]


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
