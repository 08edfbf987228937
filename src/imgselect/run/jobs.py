"""One job as a sweep runs it: skipped when it already finished with the same config, and a failure recorded in
its folder without stopping the sweep.

* **Resume** (``resume: true``, the default): a job whose folder holds a ``result.json`` with the same
  :func:`config_hash` is not run again; its result stands. Re-running a killed sweep into the same
  ``hydra.sweep.dir`` therefore redoes only what did not finish.
* **Inputs**: the same config is not enough: ``result.json`` also holds the digests of the files the job read
  (:func:`imgselect.run.jobfolder.input_digests`: labels files, the pool folder, an embedding file, weights,
  videos). A re-run after one of them changed runs again.
* **Stale results**: a ``result.json`` of another config or other inputs (or any, with ``resume=false``) is
  renamed ``result.stale-<time>.json`` before the job runs, so Table 1 never counts it; the earlier run's
  selection and labeling files move into ``earlier/<time>/`` (:func:`imgselect.run.jobfolder.keep_earlier_outputs`).
* **One job per folder**: a job holds ``<job>/.job.lock`` while it runs; a second process asked to run the same
  folder meanwhile fails at once and writes nothing there. A job in a worker process of a parallel sweep ends
  when the sweep's process is killed (:func:`imgselect.run.jobfolder.die_with_parent`).
* **Failures**: in a multirun, an exception in a job is written to ``error.json`` (type, message, config hash)
  and ``error.txt`` (the traceback) in its folder, logged, and the sweep goes on; Table 1 names the failed
  jobs and ``train.py`` exits with status 1 at the end. A single run (no ``-m``) raises as usual.
"""

from __future__ import annotations

import json
import logging
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from imgselect.io.artifacts import atomic_path, write_json_atomic
from imgselect.io.cache import cache_key
from imgselect.run.jobfolder import (
    JobBusy,
    check_writable,
    describe_changes,
    die_with_parent,
    in_worker_process,
    input_digests,
    input_paths,
    job_lock,
    keep_earlier_outputs,
)
from imgselect.run.runtime import is_rank_zero

log = logging.getLogger(__name__)

# Config keys that do not change what a job computes: where it writes, whether it may resume, how it shows
# its progress; and Hydra's own node (a config composed with it, as tests do, carries ${now:...} in its folders:
# a re-run a second later would never resume; a job's config from @hydra.main has none).
NOT_HASHED = ("paths", "resume", "progress", "cache", "logger", "hydra")
ERROR_FILE = "error.json"
TRACEBACK_FILE = "error.txt"

# Output folders of the jobs that failed in this process (train.py exits 1 when a multirun leaves any).
FAILED: list[str] = []


def config_hash(cfg: DictConfig) -> str:
    """A short hash of the job's resolved config without :data:`NOT_HASHED` keys: the same job, the same hash,
    wherever its folder is."""
    cfg = cfg.copy()
    # every value built from a path (data.data_dir, a logger's save_dir, ...) hashes as the path's name, not
    # the folder it resolves to here: a moved checkout or sweep folder resumes as it was
    paths = cfg.get("paths") or {}
    with open_dict(cfg):
        cfg.paths = {str(k): f"<paths.{k}>" for k in paths}
    container = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(container, dict)
    return cache_key(**{str(k): v for k, v in container.items() if k not in NOT_HASHED})


def metric_of(result: dict[str, Any]) -> float | None:
    """What a hyper-parameter sweeper optimises: F1 after pseudo-labeling, else before, else ``None``."""
    metrics = result.get("metrics") or {}
    for stage in ("after", "before"):
        if metrics.get(stage):
            return float(metrics[stage]["f1"])
    return None


def _in_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.initialized() and str(HydraConfig.get().mode) == "RunMode.MULTIRUN"


def resume_or_run(cfg: DictConfig, run: Callable[[DictConfig, dict[str, str]], float | None]) -> float | None:
    """``run(cfg)`` unless the job already finished with this config and these inputs; see the module's
    docstring."""
    out = Path(cfg.paths.output_dir)
    if _in_multirun() and in_worker_process():
        die_with_parent()
    try:
        if not is_rank_zero():
            return _run_recorded(cfg, run, out)
        check_writable(out, "the job folder", "run it elsewhere (hydra.run.dir=... or hydra.sweep.dir=...)")
        with job_lock(out):
            return _run_recorded(cfg, run, out)
    except JobBusy as err:  # the folder belongs to the job running there: write nothing into it
        if not _in_multirun():
            raise
        FAILED.append(str(out))
        log.error("job not run: %s", err)
        return None


def _finished(cfg: DictConfig, out: Path, key: str, inputs: dict[str, str]) -> dict[str, Any] | None:
    """The result of this job when it already finished with this config and these inputs (resume); else
    ``None``, after setting aside (rank 0) a result of another config or other inputs."""
    result_path = out / "result.json"
    if not result_path.exists():
        return None
    try:
        previous = json.loads(result_path.read_text())
    except (OSError, json.JSONDecodeError):
        previous = {}
    changed = describe_changes(previous.get("inputs") or {}, inputs)
    same = previous.get("config_hash") == key and not changed
    if cfg.get("resume", True) and same:
        log.info(
            "resume: %s already finished with this config and inputs (result.json); not running it again", out
        )
        return previous
    if is_rank_zero():
        stale = result_path.with_name(f"result.stale-{time.strftime('%Y%m%d-%H%M%S')}.json")
        result_path.rename(stale)
        if same:
            why = "resume=false"
        elif previous.get("config_hash") != key:
            why = "it came from another config"
        else:
            why = f"its inputs changed since: {', '.join(changed)}"
        log.warning("%s moved to %s (%s): this run replaces it", result_path, stale.name, why)
    return None


def _run_recorded(
    cfg: DictConfig, run: Callable[[DictConfig, dict[str, str]], float | None], out: Path
) -> float | None:
    key = config_hash(cfg)
    inputs = input_digests(cfg)
    previous = _finished(cfg, out, key, inputs)
    if previous is not None:
        return metric_of(previous)
    if is_rank_zero():
        for name in (ERROR_FILE, TRACEBACK_FILE):
            (out / name).unlink(missing_ok=True)
        keep_earlier_outputs(out, [p for paths in input_paths(cfg).values() for p in paths])
    try:
        return run(cfg, inputs)  # the digests taken for the resume check go into result.json as they are
    except Exception as err:
        if is_rank_zero():
            out.mkdir(parents=True, exist_ok=True)
            with atomic_path(out / TRACEBACK_FILE) as tmp:
                tmp.write_text(traceback.format_exc(), encoding="utf-8")
            write_json_atomic(
                out / ERROR_FILE,
                {
                    "type": type(err).__name__,
                    "message": str(err),
                    "traceback": TRACEBACK_FILE,
                    "config_hash": key,
                    "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
                },
            )
        if not _in_multirun():
            raise
        FAILED.append(str(out))
        log.error(
            "job failed (%s: %s); the sweep goes on. Traceback: %s",
            type(err).__name__,
            err,
            out / TRACEBACK_FILE,
        )
        return None


def read_error(job_dir: str | Path) -> dict[str, Any] | None:
    """A failed job's ``error.json``, or ``None``."""
    path = Path(job_dir) / ERROR_FILE
    if not path.exists():
        return None
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        data = {"type": "unknown", "message": f"unreadable {path}"}
    return data
