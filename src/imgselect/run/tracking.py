"""Experiment tracking with Weights & Biases: one W&B run per job, the jobs of a sweep in one group.

``logger=wandb`` (``conf/logger/wandb.yaml``) makes a :class:`WandbTracker` the job's logger. It starts one run
per job, named after the job folder, with

* ``group``: the sweep (its folder's name, or ``logger.group``); a single run (no ``-m``) has none;
* ``job_type``: ``train`` (selection + classifier) or ``select`` (``~classifier``), or ``logger.job_type``;
* ``tags``: ``selector:<name>``, ``budget:<n>``, ``seed:<n>``, ``embedding:<name>`` and ``logger.tags``;
* ``config``: the job's full resolved config, with Hydra's group choices and command-line overrides.

Every Lightning stage logs into that one run under its own prefix and its own x-axis
(``autoencoder/ae/train_loss`` over ``autoencoder/step``, ``classifier_fold0/val/loss`` ...). When the job is
done the run gets result.json's numbers as its summary (``f1``: after pseudo-labeling, else before),
``selection.png``, ``reconstructions.png`` and ``confusion.png`` as images, ``selection.csv`` as a table with a
thumbnail of every chosen image, and result.json and selection.csv as files. The run opens before the job
builds anything and is finished whatever happens: a failed job's run ends with exit code 1 and the error in
its summary. At the end of a sweep, :meth:`WandbTracker.log_sweep` logs Table 1 into a run of
``job_type=summary`` in the same group.

Everything W&B writes for a job stays in its folder: the run in ``<job>/wandb/run-*`` (``offline-run-*`` with
``WANDB_MODE=offline``) and the staging copies of table files in ``<job>/wandb/artifacts/staging`` (unless
``WANDB_DATA_DIR`` is set); the summary run's go to the sweep folder.

``wandb`` is imported only when a run starts.
"""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from lightning.pytorch.loggers import Logger, WandbLogger
from lightning.pytorch.utilities import rank_zero_only

from imgselect.io.artifacts import read_selection_csv
from imgselect.pool import ImageSet
from imgselect.run.jobs import metric_of
from imgselect.run.runtime import is_rank_zero

log = logging.getLogger(__name__)

# Pictures a job leaves in its folder, as W&B image keys.
JOB_IMAGES = {
    "images/selection": "selection.png",
    "images/reconstructions": "reconstructions.png",
    "images/confusion": "confusion.png",
    "images/embedding_map": "embedding_map.png",
}
# Files of the job folder attached to its run.
JOB_FILES = ("result.json", "selection.csv")


@dataclass(frozen=True)
class TrackedJob:
    """What names one job's run, from the job itself (a tracker's settings may add to it).

    Attributes:
        name: the run's name (the job folder's name).
        dir: the job folder; the tracker's local files go under it.
        group: the sweep the job belongs to (``None``: a single run).
        job_type: ``train`` or ``select``.
        config: the full resolved config.
    """

    name: str
    dir: Path
    group: str | None
    job_type: str
    config: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class JobTracker(Protocol):
    """Follows one job in an experiment tracker; also the job's Lightning logger factory (``tracker(name=stage)``)."""

    def start(self, job: TrackedJob) -> None:
        """Open the job's run (rank 0 only)."""
        ...

    def tag(self, tags: list[str]) -> None:
        """Add tags to the open run (``selector:ae``, ``budget:125`` ...: known once the job's objects are built)."""
        ...

    def __call__(self, name: str) -> Logger:
        """The Lightning logger of one stage, writing into the job's run."""
        ...

    def log_result(self, result: dict[str, Any], pool: ImageSet) -> None:
        """Attach the finished job's result, pictures and selection to its run."""
        ...

    def finish(self, error: BaseException | None = None) -> None:
        """Close the run, as failed when ``error`` is given."""
        ...


@contextmanager
def tracking(tracker: JobTracker | None, job: TrackedJob) -> Iterator[None]:
    """Start ``tracker``'s run for ``job`` and finish it on the way out, as failed when the job raised."""
    if tracker is None:
        yield
        return
    tracker.start(job)
    try:
        yield
    except BaseException as err:
        tracker.finish(err)
        raise
    tracker.finish(None)


class StageLogger(WandbLogger):
    """One stage's Lightning logger inside the job's W&B run: every metric under ``<stage>/``, plotted over
    ``<stage>/step`` (each stage's Trainer counts its steps from 0).

    Module hyper-parameters are not logged: the run's config already holds the job's full config.
    Checkpoints without a ``dirpath`` go to ``<save_dir>/<stage>/<run id>/checkpoints``.
    """

    def __init__(self, stage: str, run: Any, save_dir: str | Path) -> None:
        super().__init__(save_dir=save_dir, experiment=run, log_model=False)
        self._stage = stage
        if run is not None:
            run.define_metric(f"{stage}/step", hidden=True)
            run.define_metric(f"{stage}/*", step_metric=f"{stage}/step")

    @property
    def name(self) -> str:
        return self._stage

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        return None

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        row: dict[str, Any] = {f"{self._stage}/{k}": v for k, v in metrics.items()}
        if step is not None:
            row[f"{self._stage}/step"] = step
        self.experiment.log(row)


def summary_of(result: Mapping[str, Any]) -> dict[str, Any]:
    """result.json as a W&B summary: nested numbers and strings flattened to ``a/b/c`` keys (lists and
    ``None`` left out: the file is attached whole), and ``f1``, the number a sweep is judged by."""
    flat: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, Mapping):
            for k, v in value.items():
                walk(f"{prefix}/{k}" if prefix else str(k), v)
        elif isinstance(value, bool | int | float | str):
            flat[prefix] = value

    walk("", result)
    f1 = metric_of(dict(result))
    if f1 is not None:
        flat["f1"] = f1
    return flat


def _number(text: str) -> int | float | str | None:
    """A selection.csv cell as a number where it is one (empty: ``None``)."""
    if text == "":
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _tags(*tags: str) -> tuple[str, ...]:
    """Distinct tags in order, cut to W&B's 64 characters."""
    return tuple(dict.fromkeys(t[:64] for t in tags))


def _git_root(start: Path) -> Path | None:
    for folder in (start, *start.parents):
        if (folder / ".git").exists():
            return folder
    return None


@contextmanager
def _staging_in(folder: Path) -> Iterator[None]:
    """Stage the files of logged tables in ``folder/wandb/artifacts/staging`` instead of the user's data folder
    (unless ``WANDB_DATA_DIR`` says where): an offline run's tables are uploaded from there by ``wandb sync``.
    W&B reads the variable when it stages a file, so it is set only while tables are logged."""
    if "WANDB_DATA_DIR" in os.environ:
        yield
        return
    os.environ["WANDB_DATA_DIR"] = str(folder / "wandb")
    try:
        yield
    finally:
        os.environ.pop("WANDB_DATA_DIR", None)


class WandbTracker:
    """Weights & Biases, one run per job (see the module's docstring).

    Args:
        project: the W&B project.
        entity: the W&B team or user (``None``: your default entity).
        group: the group of every run (``None``: the sweep folder's name; single runs get none).
        job_type: the job type of every job's run (``None``: ``train``, or ``select`` after ``~classifier``).
        tags: tags added to every run.
        mode: ``online``, ``offline`` or ``disabled`` (``None``: ``WANDB_MODE``, else online).
    """

    def __init__(
        self,
        project: str = "imgselect",
        entity: str | None = None,
        group: str | None = None,
        job_type: str | None = None,
        tags: list[str] | tuple[str, ...] = (),
        mode: str | None = None,
    ) -> None:
        self.project, self.entity, self.group, self.job_type = project, entity, group, job_type
        self.tags, self.mode = list(tags), mode
        self.run: Any = None
        self.job: TrackedJob | None = None

    def _init(
        self,
        name: str,
        folder: Path,
        group: str | None,
        job_type: str,
        tags: list[str],
        config: dict[str, Any],
    ) -> Any:
        import wandb

        folder.mkdir(parents=True, exist_ok=True)
        git_root = _git_root(Path.cwd())  # the code that ran, though the run's files live in its folder
        try:
            return wandb.init(
                project=self.project,
                entity=self.entity,
                group=group,
                job_type=job_type,
                name=name,
                tags=_tags(*tags, *self.tags),
                config=config,
                dir=str(folder),
                mode=self.mode,  # type: ignore[arg-type]
                reinit="create_new",  # its own run, whatever else this process has open
                settings=wandb.Settings(git_root=str(git_root)) if git_root else None,
            )
        except Exception as err:
            raise RuntimeError(
                f"W&B could not start a run for {folder} ({type(err).__name__}: {err}). Log in with "
                "`wandb login`, or run offline: WANDB_MODE=offline, then `wandb sync <job folder>/wandb/offline-run-*`"
            ) from err

    def start(self, job: TrackedJob) -> None:
        self.job = job
        if not is_rank_zero():  # other DDP ranks log nothing; their stage loggers stay empty
            return
        self.run = self._init(
            job.name, job.dir, self.group or job.group, self.job_type or job.job_type, [], job.config
        )
        log.info("W&B run %s (%s) in %s", self.run.name, self.run.id, Path(self.run.dir).parent)

    def tag(self, tags: list[str]) -> None:
        if self.run is not None:
            self.run.tags = _tags(*self.run.tags, *tags)

    def __call__(self, name: str) -> Logger:
        if self.job is None or (self.run is None and is_rank_zero()):
            raise RuntimeError("WandbTracker.start(job) must open the job's run before a stage logs into it")
        return StageLogger(name, self.run, self.job.dir)

    def log_result(self, result: dict[str, Any], pool: ImageSet) -> None:
        if self.run is None or self.job is None:
            return
        import wandb

        out = self.job.dir
        try:
            self.run.summary.update(summary_of(result))
            row: dict[str, Any] = {
                key: wandb.Image(str(out / name)) for key, name in JOB_IMAGES.items() if (out / name).exists()
            }
            if (out / "selection.csv").exists():
                row["selection"] = self._selection_table(out / "selection.csv", pool, result.get("classes"))
            with _staging_in(out):
                self.run.log(row)
            for name in JOB_FILES:
                if (out / name).exists():
                    self.run.save(str(out / name), base_path=str(out), policy="now")
        except Exception:  # result.json is written: the job stands, only its run lacks something
            log.exception("W&B: could not attach the job's result to run %s; result.json has it", self.run.id)

    @staticmethod
    def _selection_table(path: Path, pool: ImageSet, classes: list[str] | None) -> Any:
        """selection.csv, one row per chosen image in pick order, with its thumbnail and (when the pool
        knows it) its class."""
        import wandb

        rows = read_selection_csv(path)  # formula-safe cells restored: the real ids
        columns: list[str | int] = [
            "pick",
            "image",
            *(["label"] if pool.labels is not None else []),
            *(rows[0] if rows else []),
        ]
        table = wandb.Table(columns=columns)
        for pick, r in enumerate(rows):
            i = int(r["pool_index"])
            thumb = wandb.Image(pool.images[i].permute(1, 2, 0).numpy(), caption=r.get("image_id"))
            label = []
            if pool.labels is not None:
                c = int(pool.labels[i])
                label = [classes[c] if classes and c < len(classes) else c]
            table.add_data(pick, thumb, *label, *(_number(v) for v in r.values()))
        return table

    def finish(self, error: BaseException | None = None) -> None:
        run, self.run, self.job = self.run, None, None
        if run is None:
            return
        try:
            if error is not None:
                run.summary["error"] = f"{type(error).__name__}: {error}"[:1000]
            run.finish(exit_code=0 if error is None else 1)
        except Exception:  # never hide the job's own error behind the tracker's
            log.exception("W&B: could not finish run %s", getattr(run, "id", "?"))

    def log_sweep(
        self,
        sweep_dir: Path,
        tables: dict[str, tuple[list[Any], list[list[Any]]]],
        images: dict[str, Path],
        files: list[Path],
        summary: dict[str, Any],
    ) -> None:
        """One run of ``job_type=summary`` in the sweep's group: ``tables`` (name -> columns, rows), ``images``
        (name -> PNG), ``files`` attached, ``summary`` numbers. Its local files go into the sweep folder."""
        import wandb

        group = self.group or sweep_dir.name
        run = self._init(
            f"{group}-summary", sweep_dir, group, "summary", ["summary"], {"sweep_dir": str(sweep_dir)}
        )
        error: BaseException | None = None
        try:
            row: dict[str, Any] = {name: wandb.Table(columns=c, data=d) for name, (c, d) in tables.items()}
            row.update({name: wandb.Image(str(p)) for name, p in images.items() if p.exists()})
            with _staging_in(sweep_dir):
                run.log(row)
            run.summary.update(summary)
            for p in files:
                run.save(str(p), base_path=str(p.parent), policy="now")
        except BaseException as err:
            error = err
            raise
        finally:
            run.finish(exit_code=0 if error is None else 1)
        log.info("W&B: Table 1 in run %s of group %s", run.id, group)


def csv_table(path: Path) -> tuple[list[Any], list[list[Any]]]:
    """A CSV file as table columns and rows, numbers as numbers."""
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    if not rows:
        return [], []
    return rows[0], [[_number(v) for v in r] for r in rows[1:]]
