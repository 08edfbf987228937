"""The multirun command users type, with tiny overrides: one folder per job, each with its selection."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from imgselect.io.artifacts import read_selection_csv
from tests.conftest import run_command, sweep_command


def multirun(
    tmp_path: Path, fmnist_dir: Path, *overrides: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `python train.py -m <overrides>` on a tiny pool with every path under ``tmp_path``; the sweep goes to
    ``tmp_path/sweep``."""
    cmd = sweep_command(tmp_path, fmnist_dir, *overrides, "experiment=cpu", "fit.autoencoder.epochs=1")
    proc = run_command(cmd, tmp_path, env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.mark.slow
def test_multirun_selector_by_budget(tmp_path: Path, fmnist_dir: Path) -> None:
    multirun(
        tmp_path,
        fmnist_dir,
        "selector=ae,random",
        "budget=5,8",
        "fit.classifier.epochs=1",
        "fit.classifier.min_steps=0",
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
        "fit.classifier.epochs=1",
        "fit.classifier.min_steps=0",
        env={"OMP_NUM_THREADS": "1"},
    )
    out = proc.stdout + proc.stderr
    assert out.count("Launching 2 jobs locally") == 1  # a child that reran the sweep would launch it again
    jobs = sorted(p.name for p in (tmp_path / "sweep").iterdir() if p.is_dir())
    assert jobs == [
        "0_random_budget8_seed0",
        "1_ae_autoencoder_budget8_seed0",
    ]  # no stray folders
    for job in jobs:
        folder = tmp_path / "sweep" / job
        # rank 1 ran in the job's folder, and both ranks joined one process group
        assert "Initializing distributed: GLOBAL_RANK: 1" in (folder / "train_ddp_process_1.log").read_text()
        assert "Initializing distributed: GLOBAL_RANK: 0" in (folder / "train.log").read_text()
        result = json.loads((folder / "result.json").read_text())
        assert len({r["pool_index"] for r in read_selection_csv(folder / "selection.csv")}) == 8
        assert 0.0 <= result["metrics"]["before"]["f1"] <= 1.0  # the classifier trained and was scored
    assert not (tmp_path / "logs").exists()


def _sweep_cmd(tmp_path: Path, fmnist_dir: Path, *overrides: str) -> list[str]:
    """A fast sweep (random selector, selection only) writing every path under ``tmp_path``."""
    return sweep_command(tmp_path, fmnist_dir, "selector=random", "~classifier", *overrides)


def test_failed_job_is_recorded_and_the_sweep_goes_on(tmp_path: Path, fmnist_dir: Path) -> None:
    proc = subprocess.run(
        _sweep_cmd(tmp_path, fmnist_dir, "budget=100000,5"), capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 1, proc.stderr[-3000:]  # the sweep says a job failed ...
    assert "1 job(s) failed" in proc.stderr
    sweep = tmp_path / "sweep"
    failed, done = (
        sweep / "0_random_budget100000_seed0",
        sweep / "1_random_budget5_seed0",
    )
    error = json.loads((failed / "error.json").read_text())
    assert error["type"] == "ValueError" and "budget=100000 exceeds the pool" in error["message"]
    assert "Traceback" in (failed / "error.txt").read_text()
    assert (done / "result.json").exists()  # ... after running the job after it
    md = (sweep / "table1.md").read_text()  # and Table 1 is written anyway, naming the failure
    assert "1 finished jobs, 1 not finished: 0_random_budget100000_seed0 (failed: ValueError" in md


def test_rerun_skips_finished_jobs_and_replaces_stale_results(tmp_path: Path, fmnist_dir: Path) -> None:
    """Kill a sweep after its first job, run it again: the finished job is kept, the rest run."""
    cmd = _sweep_cmd(tmp_path, fmnist_dir, "budget=5,6,7")
    first = tmp_path / "sweep" / "0_random_budget5_seed0" / "result.json"
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while not first.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        proc.kill()
        proc.wait()
    assert first.exists()
    kept = first.read_bytes()
    mtime = first.stat().st_mtime_ns

    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "already finished with this config" in rerun.stdout + rerun.stderr
    assert first.read_bytes() == kept and first.stat().st_mtime_ns == mtime  # not redone
    for budget in (5, 6, 7):
        job = tmp_path / "sweep" / f"{budget - 5}_random_budget{budget}_seed0"
        assert json.loads((job / "result.json").read_text())["budget"] == budget

    # the same folders with another config: the old results are set aside, never counted
    changed = subprocess.run([*cmd, "data.val_limit=30"], capture_output=True, text=True, timeout=600)
    assert changed.returncode == 0, changed.stderr[-3000:]
    assert first.read_bytes() != kept
    # set aside, then kept with the earlier run's other outputs (docs/RERUNS.md)
    assert len(list(first.parent.glob("earlier/*/result.stale-*.json"))) == 1
    assert json.loads(first.read_text())["val_size"] == 30
