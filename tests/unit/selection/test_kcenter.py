"""k-center: farthest-first traversal and the selector, checked against a brute-force numpy computation
(never against the code itself)."""

from __future__ import annotations

import numpy as np
import pytest

from imgselect.selection import KCenterSelector, farthest_first
from tests.unit.selection.helpers import brute_farthest_first, pairwise_sq


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
