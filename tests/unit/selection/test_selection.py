"""K-means, pick rules and selectors on hand-made data with known answers."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from imgselect.selection import (
    KMeansSelector,
    RandomSelector,
    cluster_members,
    fill_farthest,
    kmeans,
    pick_nearest,
    pick_random,
)
from imgselect.selection.kmeans import objective_summary


def three_blobs(per: int = 50, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    x = np.concatenate([c + rng.normal(0, 0.3, (per, 2)) for c in centres]).astype(np.float32)
    return x, np.repeat(np.arange(3), per)


class TestKMeans:
    def test_recovers_separated_blobs(self) -> None:
        x, truth = three_blobs()
        res = kmeans(x, 3, seed=0)
        # each true blob maps to exactly one cluster, and the clusters are a bijection of the blobs
        mapping = {t: set(res.assignments[truth == t]) for t in range(3)}
        assert all(len(m) == 1 for m in mapping.values())
        assert len({next(iter(m)) for m in mapping.values()}) == 3
        assert sorted(res.cluster_sizes.tolist()) == [50, 50, 50]
        np.testing.assert_allclose(sorted(res.centroids[:, 0]), [0, 0, 10], atol=0.2)

    def test_logs_what_it_runs_and_how_the_objective_went(self, caplog: pytest.LogCaptureFixture) -> None:
        caplog.set_level(logging.INFO, logger="imgselect.selection.kmeans")
        x, _ = three_blobs()
        res = kmeans(x, 3, seed=0, niter=20, gpu=False)
        before, after = [r.getMessage() for r in caplog.records if r.name == "imgselect.selection.kmeans"]
        assert before == "K-means: K=3 on 150 x 2, 20 iterations, every point, random seeding, CPU"
        assert after.startswith("K-means: done in ") and " iterations/s); objective " in after
        assert after.endswith(f"; final {res.objective:.4g}")
        caplog.clear()
        kmeans(x, 3, seed=0, nredo=2, max_points_per_centroid=10, init="kmeans++", gpu=False)
        before, after = [r.getMessage() for r in caplog.records if r.name == "imgselect.selection.kmeans"]
        assert "x 2 runs, a sample of 30 points, K-means++ seeding" in before
        assert "objective on the 30-point sample " in after and "(best of 2 runs)" in after
        assert after.endswith(" on all 150 points")

    def test_objective_summary(self) -> None:
        history = np.array([100.0, 50.0, 40.0])
        assert (
            objective_summary(history, 39.0, niter=3, nredo=1, n_train=150, n=150)
            == "objective 100 -> 40, the last of 3 iterations changed it by -20%; final 39"
        )
        assert (
            objective_summary(history, 39.0, niter=20, nredo=1, n_train=150, n=150)
            == "objective 100 -> 40, converged after 3 of 20 iterations; final 39"
        )
        assert (
            objective_summary(None, 39.0, niter=20, nredo=3, n_train=30, n=150)
            == "best of 3 runs, final objective 39 on all 150 points"
        )

    def test_objective_is_sum_of_squared_distances(self) -> None:
        x, _ = three_blobs()
        res = kmeans(x, 3, seed=1)
        manual = ((x - res.centroids[res.assignments]) ** 2).sum()
        assert res.objective == pytest.approx(float(manual), rel=1e-4)

    def test_trains_on_every_point_by_default(self) -> None:
        # FAISS subsamples to k * max_points_per_centroid points unless told otherwise: with every point,
        # the converged centroids are the exact means of the whole pool's clusters.
        rng = np.random.default_rng(0)
        x = np.concatenate([rng.normal(0, 1, (3000, 4)), rng.normal(8, 1, (3000, 4))]).astype(np.float32)
        full = kmeans(x, 2, niter=30, seed=0)
        means = np.stack([x[full.assignments == c].mean(0) for c in range(2)])
        np.testing.assert_allclose(full.centroids, means, atol=1e-4)
        sub = kmeans(x, 2, niter=30, seed=0, max_points_per_centroid=20)
        sub_means = np.stack([x[sub.assignments == c].mean(0) for c in range(2)])
        assert np.abs(sub.centroids - sub_means).max() > 1e-3  # subsampled centroids are not the pool means

    def test_same_seed_same_result(self) -> None:
        x = np.random.default_rng(3).normal(size=(500, 8)).astype(np.float32)
        a, b = kmeans(x, 10, seed=7), kmeans(x, 10, seed=7)
        np.testing.assert_array_equal(a.assignments, b.assignments)

    @pytest.mark.parametrize("k", [0, 11])
    def test_bad_k(self, k: int) -> None:
        with pytest.raises(ValueError, match="1 <= k <= n"):
            kmeans(np.zeros((10, 2), np.float32), k)

    def test_nan_embeddings_are_refused(self) -> None:
        x = np.ones((10, 2), np.float32)
        x[3, 1] = np.nan
        with pytest.raises(ValueError, match="1 of 10 embeddings contain NaN"):
            kmeans(x, 2)


class TestPickRules:
    def test_cluster_members(self) -> None:
        members = cluster_members(np.array([1, 0, 1, 2, 0]), 4)
        assert [m.tolist() for m in members] == [[1, 4], [0, 2], [3], []]

    def test_pick_nearest_hand_computed(self) -> None:
        assign = np.array([0, 0, 0, 0, 1, 1, 1, 1, 2, 2])
        sq = np.array([4.0, 1.0, 0.5, 2.0, 3.0, 0.1, 0.1, 9.0, 1.0, 0.2])
        # cluster 0 -> index 2; cluster 1 -> tie between 5 and 6, lowest wins; cluster 2 -> 9
        assert pick_nearest(assign, sq, 3).tolist() == [2, 5, 9]

    def test_pick_nearest_marks_empty_clusters(self) -> None:
        assert pick_nearest(np.array([0, 0, 2]), np.array([1.0, 0.0, 0.0]), 3).tolist() == [1, -1, 2]

    def test_pick_random_is_a_member_and_seeded(self) -> None:
        assign = np.array([0, 1, 0, 1, 0, 2])
        a = pick_random(assign, 4, np.random.default_rng(5))
        b = pick_random(assign, 4, np.random.default_rng(5))
        assert a.tolist() == b.tolist()
        assert a[0] in (0, 2, 4) and a[1] in (1, 3) and a[2] == 5 and a[3] == -1

    def test_pick_random_covers_members(self) -> None:
        assign = np.zeros(4, dtype=np.int64)
        seen = {int(pick_random(assign, 1, np.random.default_rng(s))[0]) for s in range(50)}
        assert seen == {0, 1, 2, 3}

    def test_fill_farthest(self) -> None:
        sq = np.array([0.0, 5.0, 3.0, 5.0, 1.0])
        assert fill_farthest(np.array([1]), sq, 2).tolist() == [3, 2]
        with pytest.raises(ValueError, match="only 1 unchosen"):
            fill_farthest(np.array([0, 1, 2, 3]), sq, 2)


class TestSelectors:
    def test_kmeans_selector_one_per_blob(self) -> None:
        x, truth = three_blobs()
        for pick in ("random", "centroid"):
            sel = KMeansSelector(budget=3, pick=pick, seed=0).select(len(x), x)
            assert sorted(truth[sel.indices].tolist()) == [0, 1, 2]
            assert sorted(sel.cluster.tolist()) == [0, 1, 2]
            assert sel.cluster_size.tolist() == [50, 50, 50]
            assert sel.rule == [pick] * 3

    def test_centroid_pick_is_nearest_to_blob_centre(self) -> None:
        x, truth = three_blobs()
        sel = KMeansSelector(budget=3, pick="centroid").select(len(x), x)
        for idx in sel.indices:
            members = np.flatnonzero(truth == truth[idx])
            centre = x[members].mean(0)
            assert idx == members[np.argmin(((x[members] - centre) ** 2).sum(1))]

    def test_same_seed_same_selection(self) -> None:
        x = np.random.default_rng(0).normal(size=(400, 16)).astype(np.float32)
        a = KMeansSelector(budget=25, seed=3).select(400, x)
        b = KMeansSelector(budget=25, seed=3).select(400, x)
        c = KMeansSelector(budget=25, seed=4).select(400, x)
        assert a.indices.tolist() == b.indices.tolist()
        assert a.indices.tolist() != c.indices.tolist()

    def test_duplicate_embeddings_still_fill_the_budget(self) -> None:
        # 3 distinct points repeated: K-means cannot make 8 non-empty clusters
        x = np.repeat(np.eye(3, dtype=np.float32), 10, axis=0)
        sel = KMeansSelector(budget=8, seed=0).select(len(x), x)
        assert len(sel) == 8 and len(set(sel.indices.tolist())) == 8
        assert sel.rule.count("fill") == sel.stats["empty_clusters"] >= 5
        assert any("only 3 distinct embeddings" in n for n in sel.notes)
        assert any("clusters empty" in n for n in sel.notes)

    def test_budget_equal_to_pool_takes_everything(self) -> None:
        x = np.random.default_rng(0).normal(size=(20, 4)).astype(np.float32)
        sel = KMeansSelector(budget=20).select(20, x)
        assert sorted(sel.indices.tolist()) == list(range(20))

    def test_kmeans_selector_errors(self) -> None:
        with pytest.raises(ValueError, match="needs pool embeddings"):
            KMeansSelector(budget=2).select(5, None)
        with pytest.raises(ValueError, match="pick='middle'"):
            KMeansSelector(budget=2, pick="middle")  # type: ignore[arg-type]

    def test_random_selector(self) -> None:
        a = RandomSelector(budget=30, seed=1).select(100)
        assert len(set(a.indices.tolist())) == 30 and a.indices.max() < 100
        assert a.indices.tolist() == RandomSelector(budget=30, seed=1).select(100).indices.tolist()
        assert a.indices.tolist() != RandomSelector(budget=30, seed=2).select(100).indices.tolist()


def test_select_stage_refuses_a_pool_left_smaller_than_the_budget() -> None:
    """check_settings held the budget against the pool before training; near-duplicates found later, on the
    embeddings, can still leave too few images, and the stage says so instead of handing a selector a budget
    larger than its pool."""
    import torch

    from imgselect.pool import ImageSet
    from imgselect.stages.select import select_stage

    pool = ImageSet(
        torch.zeros((10, 3, 2, 2), dtype=torch.uint8), [str(i) for i in range(10)], source="data/pool"
    )
    exclude = {"labeled": np.array([0, 1]), "duplicates": np.array([2, 3, 4, 5])}
    assert len(select_stage(RandomSelector(budget=4), pool, None, 2, None, exclude=exclude)) == 4
    with pytest.raises(
        ValueError,
        match=r"budget=5 exceeds the 4 images left to choose from in data/pool \(10 readable; excluded: "
        r"2 labeled, 4 duplicates\); lower budget, or raise dedup\.min_similarity",
    ):
        select_stage(RandomSelector(budget=5), pool, None, 2, None, exclude=exclude)
