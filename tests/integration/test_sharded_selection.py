"""A DDP job shards the pool over its ranks from the embedding on: each rank embeds and clusters its own block,
the clustering's statistics are all-reduced, and one rank, two, with or without the cache choose the same set."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from imgselect.io.artifacts import read_selection_csv
from imgselect.pool import PoolShard
from tests.conftest import run_command, sweep_command

POOL = 200  # sweep_command's data.pool_limit


@pytest.mark.slow
def test_one_and_two_ranks_choose_the_same_set_with_no_rank_holding_the_pool(
    tmp_path: Path, fmnist_dir: Path
) -> None:
    cmd = sweep_command(
        tmp_path,
        fmnist_dir,
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.devices=2,1",
        "cache=true,false",
        "selector=typiclust",
        "selector.min_cluster_size=3",
        "embedding=pixels",
        "budget=12",
        "~classifier",
        "hydra.sweep.subdir=devices${trainer.devices}_cache${cache}",
    )
    proc = run_command(cmd, tmp_path, {"OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    sweep = tmp_path / "sweep"
    jobs = {p.name: p for p in sweep.iterdir() if (p / "result.json").exists()}
    assert sorted(jobs) == [
        "devices1_cacheFalse",
        "devices1_cacheTrue",
        "devices2_cacheFalse",
        "devices2_cacheTrue",
    ]
    picks = {}
    for name, folder in jobs.items():
        ranks = int(name[len("devices")])
        stats = json.loads((folder / "result.json").read_text())["selection_stats"]
        # the sharded path ran on every rank: each held its own block of the pool, never the whole
        assert stats["ranks"] == ranks
        rows = [int(r) for r in str(stats["rows_per_rank"]).split(",")]
        assert rows == [len(PoolShard.of(POOL, r, ranks)) for r in range(ranks)]
        assert sum(rows) == POOL and (ranks == 1 or max(rows) < POOL)
        peaks = [float(p) for p in str(stats["peak_rss_mib_per_rank"]).split(",")]
        growth = [float(g) for g in str(stats["rss_growth_mib_per_rank"]).split(",")]
        assert len(peaks) == len(growth) == ranks and all(
            0 <= g <= p for g, p in zip(growth, peaks, strict=True)
        )
        picks[name] = [int(r["pool_index"]) for r in read_selection_csv(folder / "selection.csv")]
        assert len(set(picks[name])) == 12
        if ranks == 2:  # rank 1 joined this job's group and took part in the selection
            assert "typiclust selected 12 of 200 images" in (folder / "train_ddp_process_1.log").read_text()
    # the same chosen set whatever the number of ranks and wherever the vectors came from
    assert len({tuple(sorted(p)) for p in picks.values()}) == 1, picks
    # the vectors every rank wrote into one file match those one process computed
    one = np.load(jobs["devices1_cacheFalse"] / "embeddings.npy")
    for name in ("devices2_cacheFalse", "devices2_cacheTrue"):
        np.testing.assert_allclose(np.load(jobs[name] / "embeddings.npy"), one, rtol=0, atol=1e-4)
    assert len(one) == POOL
