"""The shipped Hydra launchers: `hydra/launcher=slurm` (submitit; composed and rendered to its sbatch script
here, never submitted), `hydra/launcher=local` (submitit's local executor: real 2-job sweep, each job its own
process) and `hydra/launcher=parallel` (joblib: jobs side by side, one thread each, failures still counted)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, open_dict

from imgselect.io.artifacts import read_selection_csv
from imgselect.run.runtime import prepare_ddp_relaunch
from tests.conftest import CONF, ROOT
from tests.test_sweep import _sweep_cmd

JOBS = ["0_random_budget5_seed0", "1_random_budget6_seed0"]


@pytest.fixture
def hydra_cfg() -> Iterator[Any]:
    """Compose ``conf/train.yaml`` with Hydra's own config (``hydra.launcher`` ...), as a multirun would."""

    def _compose(*overrides: str) -> DictConfig:
        GlobalHydra.instance().clear()
        os.environ["IMGSELECT_ROOT"] = str(ROOT)
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = compose(config_name="train", overrides=list(overrides), return_hydra_config=True)
        return cfg

    yield _compose
    GlobalHydra.instance().clear()
    HydraConfig.instance().cfg = None  # type: ignore[assignment]


def _run_sweep(tmp_path: Path, fmnist_dir: Path, *overrides: str, env: dict[str, str] | None = None) -> Any:
    cmd = _sweep_cmd(tmp_path, fmnist_dir, *overrides)
    return subprocess.run(
        cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path, env={**os.environ, **(env or {})}
    )


def _assert_jobs_done(sweep: Path) -> list[dict[str, Any]]:
    """Both jobs (budgets 5 and 6) finished in their own folders with a selection; returns their results."""
    results = []
    for name, budget in zip(JOBS, (5, 6), strict=True):
        job = sweep / name
        result = json.loads((job / "result.json").read_text())
        assert result["budget"] == budget and result["output_dir"] == str(job)
        assert len({r["pool_index"] for r in read_selection_csv(job / "selection.csv")}) == budget
        results.append(result)
    return results


def test_slurm_launcher_follows_trainer_and_overrides(
    hydra_cfg: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`hydra/launcher=slurm` composes with command-line overrides, takes one task (and GPU) per device from the
    trainer, and the plugin's own launch code turns it into this sbatch script (submission intercepted)."""
    import submitit

    sweep = tmp_path / "sweep"
    cfg = hydra_cfg(
        "hydra/launcher=slurm",
        "trainer=ddp",
        "trainer.devices=4",
        "hydra.launcher.partition=x",
        "hydra.launcher.timeout_min=30",
        "hydra.launcher.array_parallelism=1",
        f"hydra.sweep.dir={sweep}",
    )
    launcher_cfg = cfg.hydra.launcher
    assert launcher_cfg._target_.endswith("SlurmLauncher")
    assert (launcher_cfg.tasks_per_node, launcher_cfg.gpus_per_node, launcher_cfg.nodes) == (4, 4, 1)
    assert (launcher_cfg.partition, launcher_cfg.timeout_min) == ("x", 30)
    assert launcher_cfg.submitit_folder == f"{sweep}/.submitit/%j"
    # CPU jobs and other knobs are overrides too
    cpu = hydra_cfg("hydra/launcher=slurm", "hydra.launcher.gpus_per_node=0", "hydra.launcher.mem_gb=16")
    assert (cpu.hydra.launcher.tasks_per_node, cpu.hydra.launcher.gpus_per_node) == (1, 0)
    assert cpu.hydra.launcher.mem_gb == 16

    # submitit refuses to build a SLURM executor without `srun` on PATH: a stub that never runs
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    srun = bin_dir / "srun"
    srun.write_text("#!/bin/sh\nexit 1\n")
    srun.chmod(srun.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    seen: dict[str, Any] = {}
    real_executor = submitit.AutoExecutor

    class Intercepted:
        """The executor the plugin builds, except that map_array renders the sbatch script, not submits it."""

        def __init__(self, **kwargs: Any) -> None:
            self.real = real_executor(**kwargs)

        def update_parameters(self, **kwargs: Any) -> None:
            self.real.update_parameters(**kwargs)

        def map_array(self, fn: Any, *args: Any) -> list[Any]:
            slurm = self.real._executor
            slurm.parameters["map_count"] = len(args[0])
            seen["sbatch"] = slurm._make_submission_file_text("python -u -m submitit.core._submit DIR", "uid")
            seen["overrides"] = list(args[0])

            class Done:
                def results(self) -> list[str]:
                    return ["not run"]

            return [Done() for _ in args[0]]

    monkeypatch.setattr(submitit, "AutoExecutor", Intercepted)
    launcher = instantiate(cfg.hydra.launcher)
    launcher.setup(hydra_context=None, task_function=lambda c: None, config=cfg)
    assert launcher.launch([["budget=5"], ["budget=6"]], initial_job_idx=0) == ["not run", "not run"]
    sbatch = seen["sbatch"]
    for line in (
        "#SBATCH --partition=x",
        "#SBATCH --time=30",
        "#SBATCH --ntasks-per-node=4",
        "#SBATCH --gpus-per-node=4",
        "#SBATCH --cpus-per-task=4",
        "#SBATCH --nodes=1",
        "#SBATCH --job-name=imgselect",
        "#SBATCH --array=0-1%1",
        f"srun --unbuffered --output {sweep}/.submitit/%A_%a/%A_%a_%t_log.out",  # each task's log
    ):
        assert line in sbatch, f"{line!r} not in:\n{sbatch}"
    assert seen["overrides"] == [["budget=5"], ["budget=6"]]


def test_ddp_relaunch_is_refused_where_jobs_run_in_workers(
    hydra_cfg: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Lightning's DDP relaunch restarts the process's own program: in a joblib or submitit-local worker that
    is the worker, not train.py, so a multi-device DDP job says what to do instead; under SLURM (ranks started
    by srun) and with one device nothing is relaunched, so nothing is refused or changed."""
    for key in ("SLURM_NTASKS", "SLURM_JOB_NAME", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setattr(sys, "argv", ["worker"])
    for launcher in ("parallel", "local"):
        cfg = hydra_cfg(f"hydra/launcher={launcher}", "trainer=ddp")
        with open_dict(cfg):
            cfg.hydra.mode = RunMode.MULTIRUN
        HydraConfig.instance().set_config(cfg)
        with pytest.raises(RuntimeError, match=f"hydra/launcher={launcher} cannot"):
            prepare_ddp_relaunch("ddp", tmp_path, 2)
        prepare_ddp_relaunch("ddp", tmp_path, 1)
        monkeypatch.setenv("SLURM_NTASKS", "2")
        monkeypatch.setenv("SLURM_JOB_NAME", "imgselect")
        prepare_ddp_relaunch("ddp", tmp_path, 2)
        monkeypatch.delenv("SLURM_NTASKS")
        assert sys.argv == ["worker"]
    # the default launcher runs the job in train.py's process: the relaunch reruns this one job
    cfg = hydra_cfg("trainer=ddp", "budget=7")
    with open_dict(cfg):
        cfg.hydra.mode = RunMode.MULTIRUN
    HydraConfig.instance().set_config(cfg)
    prepare_ddp_relaunch("ddp", tmp_path, 2)
    # the job's config name travels with its overrides (a flag, not an override)
    assert sys.argv == ["worker", "--config-name=train", "trainer=ddp", "budget=7"]
    assert HydraConfig.get().run.dir == str(tmp_path)


def test_submitit_local_sweep(tmp_path: Path, fmnist_dir: Path) -> None:
    """A real 2-job sweep through submitit's local executor: each job runs in its own submitit process and
    writes its folder; Table 1 is written by the launching process when both are done."""
    proc = _run_sweep(tmp_path, fmnist_dir, "budget=5,6", "hydra/launcher=local")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    assert "Submitit 'local' sweep output dir" in out
    sweep = tmp_path / "sweep"
    _assert_jobs_done(sweep)
    assert len(list((sweep / ".submitit").glob("*/*_0_result.pkl"))) == 2  # two submitit jobs, each done
    md = (sweep / "table1.md").read_text()
    assert "2 finished jobs" in md and "not finished" not in md  # the .submitit folder is no job


def test_joblib_parallel_sweep_one_thread_per_job(tmp_path: Path, fmnist_dir: Path) -> None:
    """`hydra/launcher=parallel`: two workers, each job on one PyTorch thread although the launching shell asks
    for two (joblib passes those to its workers); a job that fails in a worker still fails the command."""
    proc = _run_sweep(
        tmp_path,
        fmnist_dir,
        "budget=5,6,100000",
        "hydra/launcher=parallel",
        env={"OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"},
    )
    out = proc.stdout + proc.stderr
    assert "Joblib.Parallel(n_jobs=2" in out
    assert proc.returncode == 1, out[-3000:]  # the failed job ran in a worker, yet the sweep says so
    assert "1 job(s) failed" in proc.stderr and "2_random_budget100000_seed0" in proc.stderr
    sweep = tmp_path / "sweep"
    for result in _assert_jobs_done(sweep):
        assert result["versions"]["torch_threads"] == "1"
    assert (sweep / "2_random_budget100000_seed0" / "error.json").exists()
    md = (sweep / "table1.md").read_text()
    assert "2 finished jobs, 1 not finished: 2_random_budget100000_seed0 (failed: ValueError" in md
