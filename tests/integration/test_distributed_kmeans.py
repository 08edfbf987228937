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

K, N, D = 8, 2000, 16
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
