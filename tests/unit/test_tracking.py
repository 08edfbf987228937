"""The W&B tracker's pure parts: result.json as a summary, a stage's metric keys, a run finished whatever happens.
What W&B itself writes is read back in tests/integration/test_wandb.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from imgselect.run.tracking import StageLogger, TrackedJob, WandbTracker, summary_of, tracking


def test_summary_flattens_numbers_and_names_the_f1() -> None:
    result = {
        "selector": "ae",
        "budget": 125,
        "classes": ["a", "b"],  # lists stay in result.json, attached whole
        "embedding": None,
        "metrics": {"before": {"f1": 0.5, "confusion_matrix": [[1, 0], [0, 1]]}, "after": {"f1": 0.75}},
        "timings_s": {"total": 3.5},
    }
    assert summary_of(result) == {
        "selector": "ae",
        "budget": 125,
        "metrics/before/f1": 0.5,
        "metrics/after/f1": 0.75,
        "timings_s/total": 3.5,
        "f1": 0.75,  # after pseudo-labeling, else before
    }
    assert "f1" not in summary_of({"metrics": {"before": None, "after": None}})


class FakeRun:
    """What a stage logger calls on a W&B run."""

    def __init__(self) -> None:
        self.defined: list[tuple[str, str | None]] = []
        self.rows: list[dict[str, Any]] = []

    def define_metric(self, name: str, step_metric: str | None = None, **kwargs: Any) -> None:
        self.defined.append((name, step_metric))

    def log(self, row: dict[str, Any]) -> None:
        self.rows.append(row)


def test_stage_logger_prefixes_every_metric_and_plots_it_over_its_own_step(tmp_path: Path) -> None:
    run = FakeRun()
    logger = StageLogger("classifier_fold1", run, tmp_path)
    logger.log_metrics({"val/loss": 0.25, "epoch": 0}, step=7)
    logger.log_hyperparams({"lr": 0.1})  # the run's config holds the job's full config already
    assert run.rows == [
        {"classifier_fold1/val/loss": 0.25, "classifier_fold1/epoch": 0, "classifier_fold1/step": 7}
    ]
    assert ("classifier_fold1/*", "classifier_fold1/step") in run.defined
    assert logger.name == "classifier_fold1" and logger.save_dir == str(tmp_path)


class RecordingTracker(WandbTracker):
    """A tracker that records instead of starting W&B runs."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def start(self, job: TrackedJob) -> None:
        self.calls.append(f"start {job.name}")

    def finish(self, error: BaseException | None = None) -> None:
        self.calls.append(f"finish {type(error).__name__ if error else 'ok'}")


def test_the_run_is_finished_when_the_job_fails_and_the_error_goes_on(tmp_path: Path) -> None:
    job = TrackedJob(name="0_ae", dir=tmp_path, group="sweep", job_type="train")
    tracker = RecordingTracker()
    with tracking(tracker, job):
        pass
    with pytest.raises(ValueError, match="budget"), tracking(tracker, job):
        raise ValueError("budget too large")
    assert tracker.calls == ["start 0_ae", "finish ok", "start 0_ae", "finish ValueError"]
    with tracking(None, job):  # no tracker (logger=csv): nothing to start or finish
        pass
