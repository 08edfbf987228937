"""Exact neighbour search (knn, range search, distances to queries, nearest other label, pair estimates),
each checked against a brute-force numpy computation (never against the code itself)."""

from __future__ import annotations

import numpy as np
import pytest

from imgselect.selection import TooManyNeighbors, knn, nearest_other_label, range_search, sq_distances_to
from imgselect.selection import neighbors as neighbors_module
from tests.unit.selection.helpers import pairwise_sq, radius_with_margin


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


def test_estimate_pairs_is_exact_on_small_sets_and_close_on_samples() -> None:
    x = np.random.default_rng(17).normal(size=(1500, 3)).astype(np.float32)
    true = int((pairwise_sq(x, x) < 0.8**2).sum())
    assert neighbors_module.estimate_pairs(x, 0.8, sample=1500) == true
    estimate = neighbors_module.estimate_pairs(x, 0.8, sample=500, seed=3)
    assert abs(estimate - true) < 0.1 * true
