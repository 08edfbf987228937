"""TypiClust: typicality and the selector, checked against a brute-force numpy computation or a hand-worked
example (never against the code itself)."""

from __future__ import annotations

import numpy as np
import pytest

from imgselect.selection import TypiClustSelector, typicality
from tests.unit.selection.helpers import blobs, pairwise_sq


def brute_typicality(x: np.ndarray, k: int) -> np.ndarray:
    """1 / (mean Euclidean distance to the k nearest other points + 1e-8)."""
    d = np.sqrt(pairwise_sq(x))
    np.fill_diagonal(d, np.inf)
    return 1.0 / (np.sort(d, axis=1)[:, :k].mean(axis=1) + 1e-8)


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


def test_the_pick_order_follows_from_cluster_sizes_alone() -> None:
    from imgselect.selection.typiclust import pick_schedule

    sizes = np.array([3, 10, 0, 6, 1])
    # usable clusters (>= 5 members) largest first, one each, then round-robin; small ones only when those run out
    assert pick_schedule(sizes, 3, 5) == [(1, 0, "typical"), (3, 0, "typical"), (1, 1, "round_robin")]
    full = pick_schedule(sizes, 20, 5)
    assert len(full) == 20 and sum(r == "small_cluster" for _, _, r in full) == 4  # 3 + 1 small members
    assert full[16:] == [
        (0, 0, "small_cluster"),
        (4, 0, "small_cluster"),
        (0, 1, "small_cluster"),
        (0, 2, "small_cluster"),
    ]
    assert all(c != 2 for c, _, _ in full)  # an empty cluster gives nothing
    assert len(pick_schedule(sizes, 100, 5)) == sizes.sum()  # never more picks than members
