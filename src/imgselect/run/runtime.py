"""What every stage shares at run time: which process writes, stage timers, versions, log set-up, DDP relaunch
and the factory that builds Lightning Trainers."""

from __future__ import annotations

import logging
import os
import platform
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_only

import imgselect
from imgselect.run.callbacks import EpochLog
from imgselect.run.progress import ProgressMode, display

log = logging.getLogger(__name__)

# What Lightning's DDP launcher writes into the launching process's environment. Set before this module was
# imported, they came from outside (a child Lightning started, torchrun, SLURM) and are left alone.
_LAUNCHER_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")
_ENV_AT_START = {key: os.environ.get(key) for key in _LAUNCHER_ENV}


def is_rank_zero() -> bool:
    """True in the process that writes files (rank 0, or the only process)."""
    return getattr(rank_zero_only, "rank", 0) == 0


class StageTimer:
    """Wall time of named stages: ``with timer("data"): ...``; ``timer.seconds`` maps names to seconds."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - t0)

    def add(self, name: str, seconds: float) -> None:
        self.seconds[name] = round(self.seconds.get(name, 0.0) + seconds, 3)


def versions() -> dict[str, str]:
    """Versions of what produced a result, and the number of threads PyTorch ran on (``torch_threads``: a
    parallel sweep runs each job on one, ``conf/hydra/launcher/parallel.yaml``)."""
    from imgselect.selection.kmeans import require_faiss

    require_faiss()
    import faiss
    import hydra
    import lightning

    return {
        "imgselect": imgselect.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "lightning": lightning.__version__,
        "hydra": hydra.__version__,
        "faiss": getattr(faiss, "__version__", "unknown"),
        "numpy": np.__version__,
        "torch_threads": str(torch.get_num_threads()),
    }


@dataclass(frozen=True)
class TrainerFactory:
    """Builds one Lightning Trainer per stage with the job's hardware settings and logger.

    Attributes:
        trainer: a partial of ``lightning.pytorch.Trainer`` (hardware only: the ``trainer`` config group).
        logger: a partial of a Lightning logger taking ``name=``, or a :class:`imgselect.run.tracking.JobTracker`
            (``None``: no logger).
        out_dir: the job folder; each stage logs under ``out_dir / stage``.
        precision: the trainer's precision (part of cache keys: it changes trained weights).
        strategy: the trainer's strategy (``ddp`` relaunches the script; see :func:`prepare_ddp_relaunch`).
        progress: how training shows its progress (:mod:`imgselect.run.progress`; ``None``: the process-wide mode,
            the ``progress`` key): ``rich`` / ``tqdm``: Lightning's bar of that kind; ``log``: no bar, one log
            line per epoch (:class:`imgselect.run.callbacks.EpochLog`); ``none``: neither.
    """

    trainer: Callable[..., pl.Trainer]
    logger: Callable[..., Any] | None
    out_dir: Path
    precision: str | None = None
    strategy: str | None = None
    progress: ProgressMode | None = None

    @property
    def devices(self) -> Any:
        """``trainer.devices`` as configured (``None`` when not set: the trainer is a partial of pl.Trainer)."""
        return getattr(self.trainer, "keywords", {}).get("devices")

    def one_process(self) -> bool:
        """Whether the job trains in this process alone: no DDP ranks that would wait for each other (and
        deadlock) while one of them waits at a cache lock."""
        if self.strategy not in (None, "auto") or int(os.environ.get("WORLD_SIZE", "1")) > 1:
            return False
        return self.devices is None or one_device(self.devices)

    def data_parallel(self) -> bool:
        """Whether the job runs as DDP ranks (``trainer=ddp``, any number of devices, one included)."""
        return str(self.strategy or "").startswith("ddp")

    def start_ranks(self) -> None:
        """Start the job's DDP ranks and their process group now, before any Trainer, so that the embedding
        and the selection run sharded over them (a job whose selection needs no training would otherwise
        start them only for the classifier, after choosing on one process).

        Lightning's own launcher does it (:class:`lightning.fabric.Fabric` with the trainer's accelerator,
        devices and nodes): it relaunches this script once per further device on this node, as a Trainer
        would, and the job's later Trainers find the group up and reuse it. A no-op when the group is up
        already or the job is not DDP.
        """
        import torch.distributed as dist

        if not self.data_parallel() or (dist.is_available() and dist.is_initialized()):
            return
        from lightning.fabric import Fabric

        prepare_ddp_relaunch(self.strategy, self.out_dir, self.devices)
        keywords = getattr(self.trainer, "keywords", {})
        fabric = Fabric(
            accelerator=keywords.get("accelerator", "auto"),
            devices=keywords.get("devices", "auto"),
            num_nodes=keywords.get("num_nodes", 1),
            strategy=str(self.strategy),
        )
        fabric.launch()
        log.info(
            "DDP: rank %d of %d started for the embedding and selection",
            fabric.global_rank,
            fabric.world_size,
        )

    def __call__(
        self, stage: str, max_epochs: int, callbacks: list[pl.Callback], **kwargs: Any
    ) -> pl.Trainer:
        # every Trainer may be the first to launch the other DDP ranks in this job (a cache hit skips the
        # autoencoder; the random selector has none), so each one prepares the relaunch
        prepare_ddp_relaunch(self.strategy, self.out_dir, self.devices)
        logger: Any = self.logger(name=stage) if self.logger is not None else False
        shown = display(self.progress)
        return self.trainer(
            max_epochs=max_epochs,
            callbacks=[*callbacks, *progress_callbacks(shown, stage)],
            logger=logger,
            default_root_dir=str(self.out_dir / stage),
            enable_progress_bar=shown in ("rich", "tqdm"),
            **kwargs,
        )


def progress_callbacks(shown: str, stage: str) -> list[pl.Callback]:
    """What shows a Trainer's progress: Lightning's Rich or tqdm bar, or one log line per epoch."""
    from lightning.pytorch.callbacks import RichProgressBar, TQDMProgressBar

    if shown == "rich":
        return [RichProgressBar()]
    if shown == "tqdm":  # Lightning's default is Rich when it is installed
        return [TQDMProgressBar()]
    return [EpochLog(stage)] if shown == "log" else []


def one_device(devices: Any) -> bool:
    """Whether ``trainer.devices`` names a single device (``1``, ``"1"`` or a list of one)."""
    return devices in (1, "1") or (isinstance(devices, list) and len(devices) == 1)


def prepare_ddp_relaunch(strategy: str | None, out_dir: Path, devices: Any = None) -> None:
    """Make Lightning's DDP relaunch of this script re-run this one job, not the whole sweep.

    Lightning relaunches ``sys.argv`` with ``hydra.run.dir`` set to the job's run dir; in a multirun that
    would start the sweep again in every child process and write to a stray folder. Here the relaunch
    gets this job's own overrides and output folder.

    Only Hydra's basic launcher runs a job in the ``train.py`` process that can be relaunched. Under SLURM
    (``hydra/launcher=slurm``: one task per device) SLURM has started the ranks and Lightning relaunches
    nothing; any other launcher (``local``, ``parallel``) runs jobs in worker processes whose relaunch would
    start the worker, not the job, so a multi-device DDP job is refused there with a clear message.
    """
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict, read_write

    if strategy in (None, "auto") or not HydraConfig.initialized():
        return
    hc = HydraConfig.get()
    if str(hc.mode) != "RunMode.MULTIRUN" or os.environ.get("LOCAL_RANK"):
        return
    launcher = str(hc.launcher.get("_target_", ""))
    if not launcher.endswith(".BasicLauncher"):
        from lightning.fabric.plugins.environments import SLURMEnvironment

        if SLURMEnvironment.detect() or one_device(devices):
            return  # SLURM started the ranks, or one process needs no relaunch
        choice = hc.runtime.choices.get("hydra/launcher")
        raise RuntimeError(
            f"trainer.strategy={strategy} with trainer.devices={devices} needs Lightning to relaunch train.py, "
            f"which hydra/launcher={choice} cannot do (its jobs run in worker processes): use "
            "hydra/launcher=slurm (one SLURM task per device), the default launcher, or one device per job"
        )
    # the job's own overrides, and the config it was composed from (--config-name / --config-dir are flags,
    # not overrides: without them the other ranks would compose train.yaml)
    config_dirs = [
        f"--config-dir={source.path}"
        for source in hc.runtime.config_sources
        if source.provider == "command-line" and source.schema == "file"
    ]
    sys.argv = [sys.argv[0], f"--config-name={hc.job.config_name}", *config_dirs, *hc.overrides.task]
    run_node: Any = HydraConfig.instance().cfg.hydra.run  # type: ignore[union-attr]
    with read_write(run_node), open_dict(run_node):
        run_node.dir = str(out_dir)


def reset_distributed() -> None:
    """Forget the previous job's DDP processes: a multirun runs many jobs in one process.

    Lightning's launcher starts the other ranks for one job, and those exit with it; but the launching
    process keeps the dead process group and the ``LOCAL_RANK``/``MASTER_PORT``... it set, so the next job
    would wait on ranks that are gone (or broadcast to them). Called at the start of every job: it destroys
    a process group left from an earlier job and restores the launcher's variables as they were when the
    process started, so the next Trainer launches its own ranks.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        log.debug("destroying the process group left by the previous job")
        dist.destroy_process_group()
    for key, value in _ENV_AT_START.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


_RSS_AT_RESET: list[float] = []  # this process's resident memory (MiB) when reset_peak_memory last ran


def reset_peak_memory() -> None:
    """Start this process's peak resident memory afresh (Linux: ``5`` into ``/proc/self/clear_refs``) and note
    what is resident now, so that :func:`peak_memory_mib` reports the peak of what follows, not of an earlier job
    of the same process (a sweep runs its jobs in one process, and a DDP child inherits ``ru_maxrss`` from the
    rank that started it). Does nothing where the file cannot be written."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        log.debug("cannot reset the peak resident memory: /proc/self/clear_refs not writable")
        return
    _RSS_AT_RESET[:] = [_status_mib("VmRSS") or 0.0]


def peak_memory_mib() -> tuple[float, float]:
    """This process's peak resident memory in MiB (``VmHWM``, else ``ru_maxrss``) and what it was when
    :func:`reset_peak_memory` ran (0 when it did not): their difference is what the work since added."""
    peak = _status_mib("VmHWM")
    if peak is None:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return peak, (_RSS_AT_RESET[0] if _RSS_AT_RESET else 0.0)


def _status_mib(key: str) -> float | None:
    """A ``kB`` line of ``/proc/self/status`` in MiB (``None`` where there is none)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{key}:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def limit_threads_from_env() -> None:
    """Hold PyTorch to ``OMP_NUM_THREADS`` when this job's environment sets fewer threads than it runs on.

    PyTorch fixes its thread count when it is imported, and a launcher's worker may have imported it before
    the job's ``hydra.job.env_set`` applied (joblib's workers import it while unpickling the Hydra callbacks):
    ``hydra/launcher=parallel`` sets ``OMP_NUM_THREADS=1`` per job, and this makes it hold. Never raises the
    count.
    """
    value = os.environ.get("OMP_NUM_THREADS", "").strip()
    if value.isdigit() and 0 < int(value) < torch.get_num_threads():
        torch.set_num_threads(int(value))


class _DropTips(logging.Filter):
    """Lightning advertises cloud services on every Trainer; a run log is no place for that."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Tip:" not in record.getMessage()


def quiet_lightning() -> None:
    """One line per message: Lightning's own console handlers duplicate Hydra's, so defer to Hydra's. FAISS's
    loader reports at INFO each CPU instruction set it could not load (a traceback-like line per try):
    only its warnings are kept."""
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)
    root_has_handlers = bool(logging.getLogger().handlers)
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logger = logging.getLogger(name)
        if root_has_handlers:
            logger.handlers = [h for h in logger.handlers if not isinstance(h, logging.StreamHandler)]
            logger.propagate = True
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logging.getLogger(name).addFilter(_DropTips())
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
    warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=r".*Checkpoint directory .* exists and is not empty.*")
    warnings.filterwarnings("ignore", message=r".*defined a `validation_step` but have no `val_dataloader`.*")
    warnings.filterwarnings("ignore", message=r".*smaller than the logging interval.*")
