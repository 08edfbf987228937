"""How a DDP job splits the pool: contiguous, balanced blocks; cluster owners that balance the members each
rank gathers; pixel moments summed around a shared point, whatever the blocks."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from imgselect.embeddings.pixels import Moments
from imgselect.pool import PoolShard
from imgselect.selection.distributed import cluster_owners, release_pages, row_reader


@pytest.mark.parametrize(("total", "world"), [(10, 1), (10, 3), (7, 4), (2, 4), (0, 2), (1_000_003, 8)])
def test_blocks_cover_the_pool_once_in_order_and_differ_by_at_most_one_row(total: int, world: int) -> None:
    shards = [PoolShard.of(total, r, world) for r in range(world)]
    assert shards[0].start == 0 and shards[-1].stop == total
    for a, b in itertools.pairwise(shards):
        assert a.stop == b.start  # contiguous, in rank order
    sizes = [len(s) for s in shards]
    assert sum(sizes) == total and max(sizes) - min(sizes) <= 1
    assert sizes == sorted(sizes, reverse=True)  # the first total % world ranks hold the extra row
    assert np.arange(total)[shards[-1].rows].tolist() == list(range(shards[-1].start, total))


def test_a_shard_outside_the_world_is_refused() -> None:
    with pytest.raises(ValueError, match="no shard 2 of 2"):
        PoolShard.of(10, 2, 2)


def test_owners_balance_the_members_each_rank_gathers() -> None:
    counts = np.array([500, 10, 10, 300, 200, 0, 480])
    owners = cluster_owners(counts, 3)
    load = np.bincount(owners, counts, 3)
    assert load.sum() == counts.sum()
    assert load.max() <= 510  # the largest cluster alone is 500: greedy gives it a rank with little else
    assert len({owners[0], owners[6], owners[3]}) == 3  # the three largest go to three ranks
    np.testing.assert_array_equal(cluster_owners(counts, 3), owners)  # a function of the counts alone
    assert set(cluster_owners(counts, 1).tolist()) == {0}


def test_moments_around_a_shared_point_give_the_covariance_of_all_rows() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(5.0, 2.0, (300, 4))
    shift = x[:50].mean(axis=0)
    blocks = [Moments(shift) for _ in range(3)]
    for m, part in zip(blocks, np.array_split(x, [100, 100]), strict=True):  # the middle block is empty
        if len(part):
            m.add(part)
    # what all_reduce sums over ranks, summed here: n, s1, s2 around the same shift
    total = blocks[0].all_reduced(1)
    for m in blocks[1:]:
        other = m.all_reduced(1)
        total.n += other.n
        total.s1 = total.s1 + other.s1  # type: ignore[operator]
        total.s2 = total.s2 + other.s2  # type: ignore[operator]
    np.testing.assert_allclose(total.mean(), x.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(total.cov(), np.cov(x, rowvar=False), rtol=1e-10)


def _rss_file_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssFile:"):
            return int(line.split()[1]) / 1024
    pytest.skip("no RssFile in /proc/self/status")


def test_pages_read_from_a_mapped_embedding_file_are_handed_back(tmp_path: Path) -> None:
    """A rank reads its block, then its clusters' members, from the mapped embedding file: what it read leaves
    its resident memory when released (the pages stay in the page cache for the next read)."""
    np.save(tmp_path / "e.npy", np.ones((16_384, 1024), dtype=np.float32))  # 64 MiB
    mapped = np.load(tmp_path / "e.npy", mmap_mode="r")
    before = _rss_file_mib()
    assert float(mapped[::1024].sum()) == 16 * 1024  # touch one row in 1024: few pages
    assert float(np.asarray(mapped, dtype=np.float64).sum()) == 16_384 * 1024  # every page
    assert _rss_file_mib() - before > 48
    release_pages(mapped[100:200])  # a slice of the mapping releases the whole mapping's pages
    assert _rss_file_mib() - before < 16
    assert float(mapped[5].sum()) == 1024  # still readable
    release_pages(np.ones(3))  # an array in memory: nothing to release


def test_rows_read_from_a_mapped_file_do_not_enter_resident_memory(tmp_path: Path) -> None:
    """The owners of clusters read their members, rows anywhere in the embedding file: positioned reads give
    the rows without mapping the file's pages into the process."""
    values = np.arange(16_384, dtype=np.float32)[:, None] * np.ones((1, 1024), dtype=np.float32)  # 64 MiB
    np.save(tmp_path / "e.npy", values)
    mapped = np.load(tmp_path / "e.npy", mmap_mode="r")
    before = _rss_file_mib()
    with row_reader(mapped) as read:
        for start in range(0, 37):  # every row once, scattered, a "cluster" at a time
            ids = np.arange(start, 16_384, 37)
            rows = read(ids)
            assert rows.dtype == np.float32 and rows.shape == (len(ids), 1024)
            np.testing.assert_array_equal(rows[:, 7], ids.astype(np.float32))
    assert _rss_file_mib() - before < 8  # a mapped read of the same rows maps the whole 64 MiB
    with row_reader(values) as read:  # an array in memory: indexed
        np.testing.assert_array_equal(read(np.array([3, 1])), values[[3, 1]])
    with row_reader(mapped[10:]) as read:  # a slice of a mapping: indexed, not read at the wrong offset
        np.testing.assert_array_equal(read(np.array([0])), values[[10]])
