"""``logger=wandb`` offline: what W&B wrote for each job and for the sweep, read back from its run files.

An offline run keeps everything in ``run-<id>.wandb``, a log of protobuf records (W&B's LevelDB-style log
format); :func:`read_run` replays it into the run's id, group, tags, config, summary, logged keys and exit code.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hydra.errors import InstantiationException
from omegaconf import DictConfig

from imgselect.io.artifacts import read_selection_csv
from imgselect.run.pipeline import run
from tests.conftest import ROOT, SELECT_ONLY, TINY, sweep_command

_BLOCK = 32768  # the log's block size; a record header is 7 bytes: crc32 (4), length (2), type (1)
_FULL, _FIRST, _LAST = 1, 2, 4


def _records(path: Path) -> Iterator[Any]:
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B run log"
    pos, chunks = 7, b""
    while pos + 7 <= len(data):
        left = _BLOCK - pos % _BLOCK
        if left < 7:  # a block's tail too short for a header is padding
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if kind == 0:
            pos += left
            continue
        if pos + 7 + length > len(data):  # the service is still writing this record
            return
        chunk = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        chunks = chunk if kind in (_FULL, _FIRST) else chunks + chunk
        if kind in (_FULL, _LAST):
            record = pb.Record()
            record.ParseFromString(chunks)
            yield record


def _put(tree: dict[str, Any], keys: list[str], value: Any) -> None:
    for k in keys[:-1]:
        tree = tree.setdefault(k, {})
    tree[keys[-1]] = value


def read_run(run_dir: Path) -> dict[str, Any]:
    """What an offline run recorded: id, name, group, job_type, tags, config, summary, history keys, files,
    artifacts (name -> their files' local copies) and the exit code (``None``: never finished)."""
    (log_file,) = run_dir.glob("run-*.wandb")
    out: dict[str, Any] = {"config": {}, "summary": {}, "history": set(), "files": [], "artifacts": {}}
    out["exit_code"] = None
    for r in _records(log_file):
        kind = r.WhichOneof("record_type")
        if kind == "run":  # the run, then its updates (tags set after the start): keep what each one says
            fields = {
                "id": r.run.run_id,
                "name": r.run.display_name,
                "group": r.run.run_group,
                "job_type": r.run.job_type,
                "tags": list(r.run.tags),
            }
            out.update({k: v for k, v in fields.items() if v or k not in out})
            for item in r.run.config.update:
                out["config"][item.key] = json.loads(item.value_json)
        elif kind == "config":
            for item in r.config.update:
                out["config"][item.key] = json.loads(item.value_json)
        elif kind == "summary":
            for item in r.summary.update:
                _put(
                    out["summary"],
                    [item.key] if item.key else list(item.nested_key),
                    json.loads(item.value_json),
                )
        elif kind == "history":
            out["history"] |= {item.key or item.nested_key[0] for item in r.history.item}
        elif kind == "files":
            out["files"] += [f.path for f in r.files.files]
        elif kind == "artifact":  # a logged table: its JSON and images, staged for upload
            out["artifacts"][r.artifact.name] = {
                c.path: Path(c.local_path) for c in r.artifact.manifest.contents
            }
        elif kind == "exit":
            out["exit_code"] = r.exit.exit_code
    return out


def only_run(folder: Path, wait_s: float = 60.0) -> tuple[Path, dict[str, Any]]:
    """The one offline run under ``folder/wandb``, read once its exit record is on disk.

    ``run.finish()`` returns once W&B's service process has the exit, which writes the run's log from its own
    buffer: in this process (the job ran in it, the service lives on) the last records can land a moment
    later. Waits up to ``wait_s`` for them; a run that never finished still reads as ``exit_code: None``."""
    (run_dir,) = (folder / "wandb").glob("offline-run-*")
    deadline = time.monotonic() + wait_s
    r = read_run(run_dir)
    while r["exit_code"] is None and time.monotonic() < deadline:
        time.sleep(0.2)
        r = read_run(run_dir)
    return run_dir, r


def table_rows(r: dict[str, Any], key: str) -> tuple[list[str], list[list[Any]], dict[str, Path]]:
    """Columns, rows and media files (path in the table -> local copy) of the table logged under ``key``."""
    files = r["artifacts"][f"run-{r['id']}-{key}"]
    table = json.loads(files[f"{key}.table.json"].read_text())
    return table["columns"], table["data"], files


@pytest.fixture
def wandb_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Offline W&B with its user folders under ``tmp_path``; nothing set that would move a run's files."""
    env = {
        "WANDB_MODE": "offline",
        "WANDB_CONFIG_DIR": str(tmp_path / "wandb-home" / "config"),
        "WANDB_CACHE_DIR": str(tmp_path / "wandb-home" / "cache"),
        "OMP_NUM_THREADS": "1",
    }
    for key in (
        "WANDB_DIR",
        "WANDB_DATA_DIR",
        "WANDB_PROJECT",
        "WANDB_ENTITY",
        "WANDB_RUN_GROUP",
        "WANDB_TAGS",
    ):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


def test_sweep_one_run_per_job_in_one_group_and_a_summary_run(
    tmp_path: Path, fmnist_dir: Path, wandb_env: dict[str, str]
) -> None:
    """3 jobs (the first fails: budget over the pool) -> 3 runs of group ``sweep``, each finished, and a
    summary run with the jobs and Table 1."""
    proc = subprocess.run(
        sweep_command(
            tmp_path,
            fmnist_dir,
            "logger=wandb",
            "logger.tags=[smoke]",
            "selector=random",
            "~classifier",
            "budget=100000,5,8",
        ),
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
        env=os.environ.copy(),
    )
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]  # the failed job, at the end
    sweep = tmp_path / "sweep"
    jobs = {budget: sweep / f"{i}_random_budget{budget}_seed0" for i, budget in enumerate((100000, 5, 8))}
    runs = {budget: only_run(folder) for budget, folder in jobs.items()}
    assert len({r["id"] for _, r in runs.values()}) == 3  # one run per job
    for budget, (_, r) in runs.items():
        assert r["name"] == jobs[budget].name and r["group"] == "sweep" and r["job_type"] == "select"
        assert {"selector:random", f"budget:{budget}", "seed:0", "smoke"} <= set(r["tags"])
        assert not any(t.startswith("embedding:") for t in r["tags"])  # random selection embeds nothing
        assert r["config"]["budget"] == budget and r["config"]["data"]["pool_limit"] == 200
        assert r["config"]["paths"]["output_dir"] == str(jobs[budget])  # resolved
        assert r["config"]["hydra"]["choices"]["selector"] == "random"
        assert f"budget={budget}" in r["config"]["hydra"]["overrides"]

    _, failed = runs[100000]
    assert failed["exit_code"] == 1  # finished, as failed
    assert "budget=100000 exceeds the pool" in failed["summary"]["error"]
    assert (jobs[100000] / "error.json").exists()

    for budget in (5, 8):
        run_dir, r = runs[budget]
        assert r["exit_code"] == 0
        result = json.loads((jobs[budget] / "result.json").read_text())
        assert r["summary"]["budget"] == result["budget"] == budget
        assert r["summary"]["pool_size"] == 200 and r["summary"]["selector"] == "random"
        assert r["summary"]["timings_s/total"] == result["timings_s"]["total"]
        assert "f1" not in r["summary"]  # no classifier ran
        # the contact sheet, and selection.csv as a table of thumbnails in pick order
        assert r["summary"]["images/selection"]["_type"] == "image-file"
        assert (run_dir / "files" / r["summary"]["images/selection"]["path"]).stat().st_size > 0
        columns, rows, media = table_rows(r, "selection")
        assert columns[:3] == ["pick", "image", "label"]
        chosen = read_selection_csv(jobs[budget] / "selection.csv")
        assert [row[columns.index("pool_index")] for row in rows] == [int(c["pool_index"]) for c in chosen]
        assert [row[0] for row in rows] == list(range(budget))
        for row in rows:
            assert row[1]["_type"] == "image-file" and media[row[1]["path"]].stat().st_size > 0
        assert {"result.json", "selection.csv"} <= set(r["files"])
        # W&B's own files, the table's staged copies included, stay in the job's folder
        assert all(p.is_relative_to(jobs[budget] / "wandb") for p in media.values())
    assert not (tmp_path / "wandb").exists() and not (ROOT / "wandb").exists()

    _, summary = only_run(sweep)
    assert summary["group"] == "sweep" and summary["job_type"] == "summary" and summary["exit_code"] == 0
    assert summary["id"] not in {r["id"] for _, r in runs.values()}
    assert summary["summary"]["jobs/finished"] == 2 and summary["summary"]["jobs/not_finished"] == 1
    columns, rows, _ = table_rows(summary, "jobs")
    assert sorted(row[columns.index("budget")] for row in rows) == [5, 8]
    columns, _, _ = table_rows(summary, "table1")
    assert columns == ["selector", "phase", "budget", "metric", "mean", "std", "n"]
    assert {"table1.md", "table1.csv"} <= set(summary["files"])


def test_whole_job_logs_every_stage_into_one_run(
    compose_cfg: Callable[..., DictConfig], wandb_env: dict[str, str]
) -> None:
    """Autoencoder + 2 fold classifiers in one run, each stage under its own prefix; F1 in the summary;
    reconstructions and confusion matrices as images."""
    cfg = compose_cfg(
        *TINY,
        "logger=wandb",
        "data.pool_limit=200",
        "data.val_limit=40",
        "budget=10",
        "folds=2",
        "pseudo.size=0",
    )
    f1 = run(cfg)
    out = Path(cfg.paths.output_dir)
    result = json.loads((out / "result.json").read_text())
    run_dir, r = only_run(out)
    assert r["exit_code"] == 0 and r["group"] == "" and r["job_type"] == "train" and r["name"] == out.name
    assert {"selector:ae", "budget:10", "seed:0", "embedding:autoencoder"} <= set(r["tags"])
    assert r["config"]["folds"] == 2 and "hydra" in r["config"]
    # one run, stages apart: each under its own prefix and x-axis
    assert {
        "autoencoder/ae/train_loss_epoch",
        "autoencoder/step",
        "classifier_fold0/train/loss",
        "classifier_fold0/val/loss",
        "classifier_fold1/val/loss",
        "classifier_fold1/step",
    } <= r["history"]
    assert not any(k.startswith(("trainer/", "train/", "val/")) for k in r["history"])
    assert r["summary"]["f1"] == f1 == result["metrics"]["before"]["f1"]
    assert r["summary"]["metrics/before/accuracy"] == result["metrics"]["before"]["accuracy"]
    for key in ("images/selection", "images/reconstructions", "images/confusion", "images/embedding_map"):
        assert (run_dir / "files" / r["summary"][key]["path"]).stat().st_size > 0
    columns, rows, _ = table_rows(r, "selection")
    assert len(rows) == 10 and {row[columns.index("label")] for row in rows} <= {"T-shirt/top", "Shirt"}


def test_a_job_failing_before_it_builds_anything_leaves_a_failed_run(
    compose_cfg: Callable[..., DictConfig], wandb_env: dict[str, str]
) -> None:
    """The run opens first: a config error (a backbone without weights) is a failed run, not a missing one."""
    cfg = compose_cfg(*SELECT_ONLY, "logger=wandb", "embedding=backbone")
    with pytest.raises(InstantiationException, match="needs local weights"):
        run(cfg)
    _, r = only_run(Path(cfg.paths.output_dir))
    assert r["exit_code"] == 1 and r["job_type"] == "select"
    assert "embedding=backbone needs local weights" in r["summary"]["error"]
    assert not (Path(cfg.paths.output_dir) / "result.json").exists()
