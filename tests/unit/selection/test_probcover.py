"""ProbCover: the purity rule for delta, the delta-ball graph helpers, greedy coverage and the selector,
each checked against a brute-force numpy computation or a hand-worked example (never against the code
itself)."""

from __future__ import annotations

import numpy as np
import pytest

from imgselect.selection import ProbCoverSelector, TooManyNeighbors, greedy_coverage, purity_delta
from imgselect.selection.probcover import gather_rows, transpose_csr
from tests.unit.selection.helpers import blobs, brute_farthest_first, pairwise_sq, radius_with_margin


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
