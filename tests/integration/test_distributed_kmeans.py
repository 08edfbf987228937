"""Distributed K-means over a real 2-process gloo group: each process loads only its own shard of 8 separated
blobs (2,000 x 16), and the clustering it gets back is checked against plain K-means of the whole pool."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch.distributed as dist
import torch.multiprocessing as mp
from sklearn.metrics import adjusted_rand_score

from imgselect.selection.distributed import distributed_kmeans
from imgselect.selection.kmeans import kmeans
from imgselect.selection.selectors import KMeansSelector
from imgselect.selection.typiclust import TypiClustSelector

K, N, D = 8, 2000, 16
BUDGET, SAMPLE = 20, 300  # TypiClust over the ranks; a seeding sample smaller than the pool
# rows of each rank: even, uneven, and a rank holding nothing
SPLITS = {"even": (1000, 1000), "uneven": (1100, 900), "empty": (2000, 0)}

Ranks = dict[str, list[dict[str, np.ndarray]]]


def _pool() -> tuple[np.ndarray, np.ndarray]:
    """``N`` points of ``K`` Gaussian blobs (std 1, centres drawn with std 10), and the blob of each."""
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 10, (K, D))
    truth = rng.integers(0, K, N)
    return (centres[truth] + rng.normal(0, 1, (N, D))).astype(np.float32), truth


def _worker(rank: int, world: int, folder: str) -> None:
    """One rank: join the group, cluster each split's shard of this rank (read from its own file), save it."""
    dist.init_process_group("gloo", init_method=f"file://{folder}/rendezvous", rank=rank, world_size=world)
    try:
        for split in SPLITS:
            shard = np.load(f"{folder}/{split}_shard{rank}.npy")
            r = distributed_kmeans(shard, K, seed=0)
            np.savez(
                f"{folder}/{split}_out{rank}.npz",
                shard_rows=len(shard),
                centroids=r.centroids,
                assignments=r.assignments,
                sq_distances=r.sq_distances,
                objective=r.objective,
                counts=r.counts,
                world_size=r.world_size,
            )
        # interleaved shards with their pool indices: seeding by id, and TypiClust over both ranks
        ids = np.arange(N)[rank::2]
        pool = np.load(f"{folder}/pool.npy", mmap_mode="r")  # as a job's ranks see the embedding file
        r = distributed_kmeans(pool[ids], K, seed=0, ids=ids, sample_per_rank=SAMPLE, gpu=False)
        sel = TypiClustSelector(budget=BUDGET, seed=0, gpu=False).choose_sharded(pool, ids, source="blobs")
        for pick in ("centroid", "random"):
            one = KMeansSelector(BUDGET, pick=pick, seed=0, gpu=False).choose_sharded(
                pool, ids, source="blobs"
            )
            np.save(f"{folder}/{pick}_picks{rank}.npy", one.indices)
        np.savez(
            f"{folder}/ids_out{rank}.npz",
            ids=ids,
            centroids=r.centroids,
            assignments=r.assignments,
            picks=sel.indices,
            score=sel.score,
            cluster_size=sel.cluster_size,
            rule=np.array(sel.rule),
        )
        # rank 1's shard has one dimension fewer: every rank must raise, none wait forever
        shard = np.load(f"{folder}/even_shard{rank}.npy")[:, : D - rank]
        try:
            distributed_kmeans(shard, K, seed=0)
            message = "no error"
        except ValueError as err:
            message = str(err)
        Path(f"{folder}/mismatch{rank}.txt").write_text(message)
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def job(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder of one 2-process job: the shards it was given and what each rank saved."""
    folder = tmp_path_factory.mktemp("distributed_kmeans")
    x, _ = _pool()
    np.save(folder / "pool.npy", x)
    for split, (rows0, _) in SPLITS.items():
        np.save(folder / f"{split}_shard0.npy", x[:rows0])
        np.save(folder / f"{split}_shard1.npy", x[rows0:])
    mp.spawn(_worker, args=(2, str(folder)), nprocs=2, join=True)
    return folder


@pytest.fixture(scope="module")
def ranks(job: Path) -> Ranks:
    """Each split's result on rank 0 and rank 1."""
    return {s: [dict(np.load(job / f"{s}_out{r}.npz")) for r in range(2)] for s in SPLITS}


@pytest.fixture(scope="module")
def reference() -> tuple[float, np.ndarray]:
    """Plain K-means++ K-means of the whole pool in one process: objective and assignments."""
    x, _ = _pool()
    r = kmeans(x, K, seed=0, init="kmeans++", gpu=False)
    return r.objective, r.assignments


@pytest.mark.parametrize("split", ["even", "uneven"])
def test_each_rank_clusters_only_its_shard_and_gets_the_same_centroids(ranks: Ranks, split: str) -> None:
    r0, r1 = ranks[split]
    for r, rows in zip((r0, r1), SPLITS[split], strict=True):
        assert int(r["shard_rows"]) == rows
        assert len(r["assignments"]) == len(r["sq_distances"]) == rows  # the shard's, not the pool's
        assert int(r["world_size"]) == 2
    np.testing.assert_array_equal(r0["centroids"], r1["centroids"])
    assert float(r0["objective"]) == float(r1["objective"])
    # the counts were summed over the ranks: every point once, each centre's the sum of both shards'
    local = [np.bincount(r["assignments"], minlength=K) for r in (r0, r1)]
    np.testing.assert_array_equal(r0["counts"], local[0] + local[1])
    np.testing.assert_array_equal(r0["counts"], r1["counts"])
    assert r0["counts"].sum() == N
    # the objective is the global one: both shards' squared distances
    total = sum(r["sq_distances"].astype(np.float64).sum() for r in (r0, r1))
    assert float(r0["objective"]) == pytest.approx(total, rel=1e-6)


@pytest.mark.parametrize("split", ["even", "uneven"])
def test_two_ranks_match_plain_kmeans_of_the_whole_pool(
    ranks: Ranks, reference: tuple[float, np.ndarray], split: str
) -> None:
    objective, assignments = reference
    r0, r1 = ranks[split]
    assert float(r0["objective"]) == pytest.approx(objective, rel=0.005)
    both = np.concatenate([r0["assignments"], r1["assignments"]])
    assert adjusted_rand_score(assignments, both) >= 0.99
    _, truth = _pool()
    assert adjusted_rand_score(truth, both) >= 0.99


def test_a_rank_without_points_leaves_the_one_process_result(ranks: Ranks) -> None:
    # rank 1 offers no sample and adds zeros: rank 0's sample and sums are the one process's, bit for bit
    r0, r1 = ranks["empty"]
    x, _ = _pool()
    alone = distributed_kmeans(x, K, seed=0, gpu=False)
    np.testing.assert_array_equal(r0["centroids"], alone.centroids)
    np.testing.assert_array_equal(r1["centroids"], alone.centroids)
    np.testing.assert_array_equal(r0["assignments"], alone.assignments)
    assert len(r1["assignments"]) == 0 and r1["counts"].sum() == N


def test_a_shard_of_another_dimension_fails_on_every_rank(job: Path) -> None:
    for rank in range(2):
        message = (job / f"mismatch{rank}.txt").read_text()
        assert "same dimension d" in message and "rank 0: d=16, rank 1: d=15" in message


def test_without_a_process_group_it_is_plain_kmeans(reference: tuple[float, np.ndarray]) -> None:
    assert not dist.is_initialized()
    x, truth = _pool()
    r = distributed_kmeans(x, K, seed=0, gpu=False)
    assert r.world_size == 1 and r.device == "cpu"
    assert len(r.assignments) == N and r.counts.sum() == N
    np.testing.assert_array_equal(r.counts, r.cluster_sizes)
    assert r.objective == pytest.approx(reference[0], rel=0.005)
    assert adjusted_rand_score(truth, r.assignments) >= 0.99
    np.testing.assert_array_equal(distributed_kmeans(x, K, seed=0, gpu=False).centroids, r.centroids)


def test_bad_arguments_are_named() -> None:
    x, _ = _pool()
    with pytest.raises(ValueError, match="k=3000"):
        distributed_kmeans(x, 3000)
    with pytest.raises(ValueError, match="niter=0"):
        distributed_kmeans(x, K, niter=0)
    with pytest.raises(ValueError, match="NaN or inf"):
        distributed_kmeans(np.where(np.arange(N)[:, None] == 5, np.nan, x), K)


def test_an_empty_centre_keeps_its_position() -> None:
    # 3 distinct points, k=4: two seeds coincide, the nearer-index one takes every copy, the other stays empty
    x = np.repeat(np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]], dtype=np.float32), 10, axis=0)
    r = distributed_kmeans(x, 4, seed=0, gpu=False)
    assert sorted(r.counts.tolist()) == [0, 10, 10, 10]
    assert np.isfinite(r.centroids).all() and r.objective == 0.0
    empty = r.centroids[r.counts == 0][0]
    assert min(np.abs(empty - p).max() for p in x[::10]) == 0.0  # still on the point it was seeded at


def test_seeding_by_pool_index_makes_two_ranks_cluster_and_pick_as_one(job: Path) -> None:
    """With ids, the seeding sample is the same points however the pool is split: two ranks holding the even
    and the odd indices get one process's centres and assignments, and TypiClust over the ranks (typicality on
    the rank owning each cluster) the same picks, scores and cluster sizes as TypiClust over one."""
    x, _ = _pool()
    alone = distributed_kmeans(x, K, seed=0, ids=np.arange(N), sample_per_rank=SAMPLE, gpu=False)
    one = TypiClustSelector(budget=BUDGET, seed=0, gpu=False).choose_sharded(x, np.arange(N), source="blobs")
    assert one.stats["ranks"] == 1 and len(set(one.indices.tolist())) == BUDGET
    both = np.empty(N, dtype=np.int64)
    for rank in range(2):
        out = np.load(job / f"ids_out{rank}.npz")
        np.testing.assert_allclose(out["centroids"], alone.centroids, rtol=0, atol=1e-4)
        both[out["ids"]] = out["assignments"]
        np.testing.assert_array_equal(out["picks"], one.indices)
        np.testing.assert_allclose(out["score"], one.score, rtol=1e-5)
        np.testing.assert_array_equal(out["cluster_size"], one.cluster_size)
        assert out["rule"].tolist() == one.rule
    np.testing.assert_array_equal(both, alone.assignments)


def test_seeding_by_id_draws_about_the_sample_size_whatever_the_ids() -> None:
    from imgselect.selection.distributed import id_uniform

    u = id_uniform(np.arange(100_000), seed=3)
    assert u.min() >= 0.0 and u.max() < 1.0
    assert abs(float((u < 0.1).mean()) - 0.1) < 0.005  # uniform enough for a sample of 10 %
    # a draw is a function of the id and the seed alone: the same ids in another order, and another seed
    np.testing.assert_array_equal(id_uniform(np.arange(100_000)[::-1], seed=3), u[::-1])
    assert not np.array_equal(id_uniform(np.arange(1000), seed=4), u[:1000])


@pytest.mark.parametrize("pick", ["centroid", "random"])
def test_one_per_cluster_over_two_ranks_picks_as_one_rank(job: Path, pick: str) -> None:
    """The paper's selector over the ranks: each rank's best member of every cluster, the best of those; the
    random pick is a seeded draw of each pool index, so two ranks draw as one."""
    x, truth = _pool()
    one = KMeansSelector(BUDGET, pick=pick, seed=0, gpu=False).choose_sharded(x, np.arange(N), source="blobs")
    assert len(set(one.indices.tolist())) == BUDGET and one.rule == [pick] * BUDGET
    for rank in range(2):
        np.testing.assert_array_equal(np.load(job / f"{pick}_picks{rank}.npy"), one.indices)
    assert len(set(one.cluster.tolist())) == BUDGET  # one pick from each cluster
    clustering = distributed_kmeans(x, BUDGET, seed=0, ids=np.arange(N), gpu=False)  # the one it ran
    np.testing.assert_array_equal(clustering.assignments[one.indices], one.cluster)
    if pick == "centroid":  # each pick is its cluster's nearest member
        for c, i in zip(one.cluster, one.indices, strict=True):
            assert clustering.sq_distances[i] == clustering.sq_distances[clustering.assignments == c].min()
    assert len(set(truth[one.indices].tolist())) == K  # 20 clusters of 8 blobs: every blob is picked from


def test_clusters_left_empty_are_filled_with_the_farthest_images() -> None:
    # 3 distinct points (10 copies each) and 2 outliers, budget 6: K-means leaves clusters empty
    x = np.concatenate(
        [
            np.repeat(np.eye(3, dtype=np.float32) * 10, 10, axis=0),
            np.array([[5, 5, 0], [0, 5, 5]], np.float32),
        ]
    )
    sel = KMeansSelector(6, pick="centroid", seed=0, gpu=False).choose_sharded(
        x, np.arange(len(x)), source="t"
    )
    assert len(set(sel.indices.tolist())) == 6
    n_fill = sel.rule.count("fill")
    assert n_fill == sel.stats["empty_clusters"] > 0 and any("filled" in note for note in sel.notes)
