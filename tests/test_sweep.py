"""The multirun command users type, with tiny overrides: one folder per job, each with its selection."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from imgselect.artifacts import read_selection_csv
from tests.conftest import ROOT


def multirun(
    tmp_path: Path, fmnist_dir: Path, *overrides: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `python train.py -m <overrides>` on a tiny pool with every path under ``tmp_path``; the sweep goes to
    ``tmp_path/sweep``."""
    cmd = [
        sys.executable,
        str(ROOT / "train.py"),
        "-m",
        *overrides,
        "experiment=cpu",
        "data.pool_limit=200",
        "data.val_limit=40",
        "autoencoder.epochs=1",
        f"paths.log_dir={tmp_path / 'logs'}",
        f"paths.cache_dir={tmp_path / 'cache'}",
        f"paths.data_dir={fmnist_dir.parent}",
        "hydra.sweep.dir=" + str(tmp_path / "sweep"),
    ]
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path, env={**os.environ, **(env or {})}
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.mark.slow
def test_multirun_selector_by_budget(tmp_path: Path, fmnist_dir: Path) -> None:
    multirun(
        tmp_path,
        fmnist_dir,
        "selector=ae,random",
        "budget=5,8",
        "classifier.epochs=1",
        "classifier.min_steps=0",
        "pseudo.epochs=1",
        "pseudo.size=20",
        "folds=2",
    )
    jobs = sorted(p for p in (tmp_path / "sweep").iterdir() if p.is_dir() and (p / "result.json").exists())
    assert len(jobs) == 4
    seen = set()
    hits = []
    for job in jobs:
        result = json.loads((job / "result.json").read_text())
        rows = read_selection_csv(job / "selection.csv")
        idx = {int(r["pool_index"]) for r in rows}
        assert len(rows) == len(idx) == result["budget"]
        assert (job / "selection.png").exists()
        assert result["output_dir"] == str(job)
        seen.add((result["selector"], result["budget"]))
        if result["selector"] == "ae":
            hits.append(result["embedding_info"]["cache_hit"])
    assert seen == {("ae", 5), ("ae", 8), ("random", 5), ("random", 8)}
    assert sorted(hits) == [False, True]  # the autoencoder was trained once for the sweep
    assert not (tmp_path / "outputs").exists() and not (tmp_path / "multirun").exists()
    # the multirun-end callback wrote Table 1 with a row per selector and phase
    md = (tmp_path / "sweep" / "table1.md").read_text()
    assert "4 finished jobs" in md and "| 5 images | 8 images |" in md
    for row in (
        "| Random selection | Before",
        "| Random selection | After",
        "| Autoencoder | Before",
        "| Autoencoder | After",
    ):
        assert row in md
    assert (tmp_path / "sweep" / "table1.png").exists() and (tmp_path / "sweep" / "table1.csv").exists()


@pytest.mark.slow
def test_multirun_with_ddp_relaunches_each_job_alone(tmp_path: Path, fmnist_dir: Path) -> None:
    """Lightning's DDP relaunch of a multirun job must rerun that job in its own folder, not the sweep; and
    every job of the sweep starts its own ranks (the first job's are gone when the second starts), on every
    path: the random selector (only the classifier trains) and the autoencoder's."""
    proc = multirun(
        tmp_path,
        fmnist_dir,
        "trainer=ddp",
        "selector=random,ae",
        "budget=8",
        "folds=2",
        "pseudo.size=0",
        "classifier.epochs=1",
        "classifier.min_steps=0",
        env={"OMP_NUM_THREADS": "1"},
    )
    out = proc.stdout + proc.stderr
    assert out.count("Launching 2 jobs locally") == 1  # a child that reran the sweep would launch it again
    jobs = sorted(p.name for p in (tmp_path / "sweep").iterdir() if p.is_dir())
    assert jobs == ["0_random_autoencoder_budget8_seed0", "1_ae_autoencoder_budget8_seed0"]  # no stray folders
    for job in jobs:
        folder = tmp_path / "sweep" / job
        # rank 1 ran in the job's folder, and both ranks joined one process group
        assert "Initializing distributed: GLOBAL_RANK: 1" in (folder / "train_ddp_process_1.log").read_text()
        assert "Initializing distributed: GLOBAL_RANK: 0" in (folder / "train.log").read_text()
        result = json.loads((folder / "result.json").read_text())
        assert len({r["pool_index"] for r in read_selection_csv(folder / "selection.csv")}) == 8
        assert 0.0 <= result["metrics"]["before"]["f1"] <= 1.0  # the classifier trained and was scored
    assert not (tmp_path / "logs").exists()
