"""The console scripts: ``imgselect-train`` (:func:`train`: ``python train.py`` of an installed package) and
``imgselect-report`` (:func:`imgselect.report.main`: ``python -m imgselect.report``), named in
``pyproject.toml``.

``imgselect-train`` composes the configs shipped in the package (:data:`CONF_DIR`: ``imgselect/conf`` in the
wheel; in a checkout ``src/imgselect/conf`` links to ``conf/``) and takes Hydra's whole command line:
overrides, ``-m``, ``--cfg job``, ``--config-dir``, ``--help``. Data, logs and the cache go under
``$IMGSELECT_ROOT``, else the current folder (``conf/paths/default.yaml``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"


def job(cfg: DictConfig) -> float | None:
    """One Hydra job of ``train.py`` or ``imgselect-train``: :func:`imgselect.run.pipeline.run` through
    :func:`imgselect.run.jobs.resume_or_run` (resume, failures recorded in a multirun)."""
    from imgselect.selection.kmeans import require_faiss

    require_faiss()  # before any training: without FAISS the job would fail at selection, minutes later
    from imgselect.run.jobs import resume_or_run
    from imgselect.run.pipeline import run

    return resume_or_run(cfg, run)


def exit_on_failures() -> None:
    """Exit with status 1 when a multirun went on past failed jobs (:data:`imgselect.run.jobs.FAILED`)."""
    from imgselect.run.jobs import FAILED

    if FAILED:
        print(f"{len(FAILED)} job(s) failed: " + ", ".join(FAILED), file=sys.stderr)
        sys.exit(1)


def train() -> None:
    """``imgselect-train``: ``python train.py`` with the package's own configs."""
    hydra.main(version_base="1.3", config_path=str(CONF_DIR.resolve()), config_name="train")(job)()
    exit_on_failures()
