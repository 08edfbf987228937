"""The stages of one job, in order: data -> autoencoder -> selection (-> classifier, in later stages).

Only this module and ``train.py`` see the Hydra config; everything it builds takes typed arguments.
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
import shutil
import sys
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf, open_dict

import imgselect
from imgselect.artifacts import write_json_atomic
from imgselect.callbacks import SelectionCallback, embed_images, write_selection
from imgselect.pool import PoolSource
from imgselect.selection.selectors import Selection

log = logging.getLogger(__name__)


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
            self.seconds[name] = round(self.seconds.get(name, 0.0) + time.perf_counter() - t0, 3)


def versions() -> dict[str, str]:
    """Versions of what produced a result."""
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
    }


def autoencoder_cache_key(pool_fingerprint: str, ae_cfg: DictConfig, seed: int, trainer_cfg: DictConfig) -> str:
    """Key of a trained autoencoder: the pool's pixels, the autoencoder's config, the seed and the precision."""
    h = hashlib.sha256()
    h.update(pool_fingerprint.encode())
    h.update(OmegaConf.to_yaml(ae_cfg, resolve=True, sort_keys=True).encode())
    h.update(f"seed={seed},precision={trainer_cfg.get('precision')}".encode())
    return h.hexdigest()[:16]


def _make_trainer(cfg: DictConfig, out_dir: Path, stage: str, max_epochs: int, callbacks: list[pl.Callback]) -> pl.Trainer:
    logger: Any = False
    if cfg.get("logger") is not None:
        logger = instantiate(cfg.logger)(name=stage)
    factory = instantiate(cfg.trainer)
    return factory(max_epochs=max_epochs, callbacks=callbacks, logger=logger, default_root_dir=str(out_dir / stage))


def _prepare_ddp_relaunch(cfg: DictConfig, out_dir: Path) -> None:
    """Make Lightning's DDP relaunch of this script re-run this one job, not the whole sweep.

    Lightning relaunches ``sys.argv`` with ``hydra.run.dir`` set to the job's run dir; in a multirun that
    would start the sweep again in every child process and write to a stray folder. Here the relaunch
    gets this job's own overrides and output folder.
    """
    if cfg.trainer.get("strategy") in (None, "auto") or not HydraConfig.initialized():
        return
    hc = HydraConfig.get()
    if str(hc.mode) != "RunMode.MULTIRUN" or os.environ.get("LOCAL_RANK"):
        return
    sys.argv = [sys.argv[0], *hc.overrides.task]
    with open_dict(hc):
        hc.run.dir = str(out_dir)


def autoencoder_selection(
    cfg: DictConfig,
    dm: PoolSource,
    selector: Any,
    out_dir: Path,
    timer: StageTimer,
) -> tuple[Selection | None, dict[str, Any]]:
    """Train the autoencoder (or load it from the cache), embed the pool and select; returns the selection
    (on every process) and facts for result.json."""
    pool = dm.pool
    info: dict[str, Any] = {}
    use_cache = bool(cfg.get("ae_cache", True))
    key = autoencoder_cache_key(pool.fingerprint(), cfg.autoencoder, cfg.seed, cfg.trainer)
    cache = Path(cfg.paths.cache_dir) / "autoencoder" / key
    info["cache_key"] = key
    if use_cache and (cache / "embeddings.npy").exists() and (cache / "autoencoder.ckpt").exists():
        log.info("autoencoder: loading cached model and pool embeddings from %s (no training)", cache)
        info["cache_hit"] = True
        with timer("selection"):
            embeddings = np.load(cache / "embeddings.npy")
            if len(embeddings) != len(pool):
                raise RuntimeError(f"cached embeddings in {cache} hold {len(embeddings)} rows for a pool of {len(pool)}; delete {cache}")
            selection = selector.select(len(pool), embeddings, source=pool.source)
        if rank_zero_only.rank == 0:
            write_selection(out_dir, selection, pool)
            for name in ("reconstructions.png", "ae_metrics.json"):
                if (cache / name).exists():
                    shutil.copyfile(cache / name, out_dir / name)
        info.update(_read_json(cache / "ae_metrics.json"))
        info["checkpoint"] = str(cache / "autoencoder.ckpt")
        return selection, info

    info["cache_hit"] = False
    ae = instantiate(cfg.autoencoder, recon_dir=str(out_dir))
    callback = SelectionCallback(selector, out_dir)
    _prepare_ddp_relaunch(cfg, out_dir)
    trainer = _make_trainer(cfg, out_dir, "autoencoder", cfg.autoencoder.epochs, [callback])
    with timer("autoencoder"):
        trainer.fit(ae, datamodule=dm)  # type: ignore[arg-type]
    timer.seconds["embed"] = round(callback.timings.get("embed_s", 0.0), 3)
    timer.seconds["selection"] = round(callback.timings.get("select_s", 0.0), 3)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("ae/")}
    info.update(metrics)
    ckpt = out_dir / "autoencoder.ckpt"
    trainer.save_checkpoint(ckpt, weights_only=True)  # every process calls it (a barrier under DDP); rank 0 writes
    info["checkpoint"] = str(ckpt)
    if trainer.is_global_zero:
        if use_cache and callback.embeddings is not None:
            tmp = cache.with_name(f".{key}.{os.getpid()}.tmp")
            tmp.mkdir(parents=True, exist_ok=True)
            np.save(tmp / "embeddings.npy", callback.embeddings)
            shutil.copyfile(ckpt, tmp / "autoencoder.ckpt")
            write_json_atomic(tmp / "ae_metrics.json", metrics)
            if (out_dir / "reconstructions.png").exists():
                shutil.copyfile(out_dir / "reconstructions.png", tmp / "reconstructions.png")
            shutil.rmtree(cache, ignore_errors=True)
            tmp.rename(cache)
            log.info("autoencoder cached at %s", cache)
    return callback.selection, info


def _read_json(path: Path) -> dict[str, Any]:
    import json

    return json.loads(path.read_text()) if path.exists() else {}


class _DropTips(logging.Filter):
    """Lightning advertises cloud services on every Trainer; a run log is no place for that."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Tip:" not in record.getMessage()


def quiet_lightning() -> None:
    """One line per message: Lightning's own console handlers duplicate Hydra's, so defer to Hydra's."""
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


def run(cfg: DictConfig) -> float | None:
    """Run one job; returns the metric a hyper-parameter sweeper would optimise (or ``None``)."""
    quiet_lightning()
    out_dir = Path(cfg.paths.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    pl.seed_everything(cfg.seed, workers=True)
    timer = StageTimer()
    t_start = time.perf_counter()

    with timer("data"):
        dm = instantiate(cfg.data)
        dm.setup()
    pool = dm.pool
    selector = instantiate(cfg.selector)

    info: dict[str, Any] = {}
    if selector.requires_embeddings:
        selection, info = autoencoder_selection(cfg, dm, selector, out_dir, timer)
    else:
        with timer("selection"):
            selection = selector.select(len(pool), source=pool.source)
        if rank_zero_only.rank == 0:
            write_selection(out_dir, selection, pool)
    assert selection is not None

    if rank_zero_only.rank != 0:
        return None
    skipped = pool.skipped + dm.val.skipped
    if skipped:
        import csv

        with (out_dir / "skipped.csv").open("w", newline="") as f:
            csv.writer(f).writerows([("path", "reason"), *skipped])
    timer.seconds["total"] = round(time.perf_counter() - t_start, 3)
    chosen_labels = pool.labels[selection.indices] if pool.labels is not None else None
    result: dict[str, Any] = {
        "selector": selector.name,
        "pick": getattr(selector, "pick", "uniform"),
        "budget": int(cfg.budget),
        "seed": int(cfg.seed),
        "image_size": int(cfg.image_size),
        "pool_size": len(pool),
        "val_size": len(dm.val),
        "skipped_files": len(skipped),
        "classes": list(dm.class_names),
        "selected": len(selection),
        "selected_class_histogram": (
            {dm.class_names[c]: int((chosen_labels == c).sum()) for c in range(len(dm.class_names))}
            if chosen_labels is not None
            else None
        ),
        "selection_notes": selection.notes,
        "selection_stats": selection.stats,
        "autoencoder": info,
        "timings_s": timer.seconds,
        "versions": versions(),
        "output_dir": str(out_dir),
    }
    write_json_atomic(out_dir / "result.json", result)
    log.info("job done in %.1fs: %s", timer.seconds["total"], out_dir)
    return None
