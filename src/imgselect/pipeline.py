"""The stages of one job, in order: data -> autoencoder -> selection -> labels -> k-fold classifiers ->
pseudo-labels -> final classifier -> metrics.

Only this module and ``train.py`` see the Hydra config; everything it builds takes typed arguments.
"""

from __future__ import annotations

import csv
import hashlib
import json
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
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf, open_dict, read_write
from torch.utils.data import DataLoader, TensorDataset

import imgselect
from imgselect.artifacts import save_confusion_matrices, write_json_atomic
from imgselect.callbacks import SelectionCallback, embed_images, write_selection
from imgselect.pool import PoolSource
from imgselect.selection.selectors import Selection
from imgselect.semisupervised import (
    choose_pseudo_labels,
    classification_metrics,
    epochs_for,
    stratified_folds,
)

log = logging.getLogger(__name__)


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


def autoencoder_cache_key(
    pool_fingerprint: str, ae_cfg: DictConfig, seed: int, trainer_cfg: DictConfig
) -> str:
    """Key of a trained autoencoder: the pool's pixels, the autoencoder's config, the seed and the precision."""
    h = hashlib.sha256()
    h.update(pool_fingerprint.encode())
    h.update(OmegaConf.to_yaml(ae_cfg, resolve=True, sort_keys=True).encode())
    h.update(f"seed={seed},precision={trainer_cfg.get('precision')}".encode())
    return h.hexdigest()[:16]


def _make_trainer(
    cfg: DictConfig, out_dir: Path, stage: str, max_epochs: int, callbacks: list[pl.Callback], **kwargs: Any
) -> pl.Trainer:
    logger: Any = False
    if cfg.get("logger") is not None:
        logger = instantiate(cfg.logger)(name=stage)
    factory = instantiate(cfg.trainer)
    return factory(
        max_epochs=max_epochs,
        callbacks=callbacks,
        logger=logger,
        default_root_dir=str(out_dir / stage),
        **kwargs,
    )


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
    run_node: Any = HydraConfig.instance().cfg.hydra.run  # type: ignore[union-attr]
    with read_write(run_node), open_dict(run_node):
        run_node.dir = str(out_dir)


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
                raise RuntimeError(
                    f"cached embeddings in {cache} hold {len(embeddings)} rows for a pool of {len(pool)}; delete {cache}"
                )
            selection = selector.select(len(pool), embeddings, source=pool.source)
        if is_rank_zero():
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
    # every process calls save_checkpoint (a barrier under DDP); rank 0 writes
    trainer.save_checkpoint(ckpt, weights_only=True)
    info["checkpoint"] = str(ckpt)
    if trainer.is_global_zero and use_cache and callback.embeddings is not None:
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
    return json.loads(path.read_text()) if path.exists() else {}


def _loader(images: torch.Tensor, labels: np.ndarray, batch_size: int, shuffle: bool) -> DataLoader:
    """Training loaders (``shuffle``) drop a last batch of one image: BatchNorm cannot train on it."""
    ds = TensorDataset(images, torch.as_tensor(labels, dtype=torch.long))
    drop_last = shuffle and len(ds) > 1 and len(ds) % batch_size == 1
    return DataLoader(ds, batch_size=batch_size, shuffle=shuffle, num_workers=0, drop_last=drop_last)


def _predict(model: Any, images: torch.Tensor, description: str) -> np.ndarray:
    model.eval()
    probs = embed_images(model.predict_proba, images, 512, model.device, is_rank_zero(), description)
    return probs.numpy()


def train_classifier(
    cfg: DictConfig,
    out_dir: Path,
    stage: str,
    n_classes: int,
    images: torch.Tensor,
    labels: np.ndarray,
    epochs: int,
    held_out: tuple[torch.Tensor, np.ndarray] | None = None,
) -> Any:
    """Train one classifier; with ``held_out``, keep the weights of its epoch of lowest held-out loss."""
    model = instantiate(cfg.classifier, num_classes=n_classes)
    bs = int(cfg.classifier.batch_size)
    ckpt = None
    callbacks: list[pl.Callback] = []
    if held_out is not None:
        ckpt = ModelCheckpoint(
            dirpath=str(out_dir / "classifier"),
            filename=stage,
            monitor="val/loss",
            mode="min",
            save_weights_only=True,
        )
        callbacks.append(ckpt)
    train_loader = _loader(images, labels, bs, shuffle=True)
    min_steps = int(cfg.classifier.get("min_steps") or 0)
    run_epochs = epochs_for(len(train_loader), epochs, min_steps)
    if run_epochs != epochs:
        log.info(
            "%s: %d images at batch %d -> %d epochs instead of %d (classifier.min_steps=%d)",
            stage, len(labels), bs, run_epochs, epochs, min_steps,
        )  # fmt: skip
    trainer = _make_trainer(cfg, out_dir, stage, run_epochs, callbacks, enable_checkpointing=ckpt is not None)
    val_loader = _loader(*held_out, bs, shuffle=False) if held_out is not None else None
    trainer.fit(model, train_dataloaders=train_loader, val_dataloaders=val_loader)
    if ckpt is not None and ckpt.best_model_path:
        state = torch.load(ckpt.best_model_path, map_location="cpu", weights_only=True)["state_dict"]
        model.load_state_dict(state)
    return model


def classifier_stage(
    cfg: DictConfig, dm: PoolSource, selection: Selection, out_dir: Path, timer: StageTimer
) -> dict[str, Any]:
    """Labels -> k-fold classifiers (before) -> pseudo-labels -> final classifier (after); returns result fields."""
    pool, val = dm.pool, dm.val
    n_classes = len(dm.class_names)
    chosen = np.asarray(selection.indices)
    labeler = instantiate(cfg.labels)
    y = labeler.labels_for([pool.ids[i] for i in chosen], chosen, pool.labels, dm.class_names)
    out: dict[str, Any] = {
        "labels": labeler.name,
        "folds": int(cfg.folds),
        "pseudo_size": int(cfg.pseudo.size),
    }
    counts = np.bincount(y, minlength=n_classes)
    lacking = [dm.class_names[c] for c in range(n_classes) if counts[c] == 0]
    if lacking:
        log.warning(
            "the chosen set has no image of %s: the classifier learns those classes from no label, "
            "so expect their F1 to be 0. Raise budget or check the labels.",
            lacking,
        )
        out["classes_missing_from_labels"] = lacking
    if len(val) == 0 or val.labels is None:
        raise ValueError(f"the validation set {val.source} has no readable labeled image; metrics need one")
    val_labels = val.labels

    k = int(cfg.folds)
    folds = stratified_folds(y, k, seed=int(cfg.seed))
    images = pool.images[torch.as_tensor(chosen)]
    rest = np.setdiff1d(np.arange(len(pool)), chosen)
    predict_rest = cfg.pseudo.size > 0 and len(rest) > 0
    rest_images = pool.images[torch.as_tensor(rest)] if predict_rest else None  # gathered once, not per fold
    val_probs, rest_probs = [], []
    with timer("classifier_folds"):
        for i in range(k):
            pl.seed_everything(int(cfg.seed) + i, workers=True, verbose=False)
            train_mask = folds != i if k > 1 else np.ones(len(y), dtype=bool)
            held = (images[~train_mask], y[~train_mask]) if k > 1 else None
            model = train_classifier(
                cfg,
                out_dir,
                f"classifier_fold{i}",
                n_classes,
                images[train_mask],
                y[train_mask],
                int(cfg.classifier.epochs),
                held,
            )
            val_probs.append(_predict(model, val.images, f"Fold {i}: validation"))
            if rest_images is not None:
                rest_probs.append(_predict(model, rest_images, f"Fold {i}: unlabeled pool"))
    before = np.mean(val_probs, axis=0)
    out["before"] = classification_metrics(before, val_labels, int(cfg.positive_class))
    log.info(
        "before pseudo-labeling: %s",
        {name: v for name, v in out["before"].items() if name != "confusion_matrix"},
    )
    matrices = {"before pseudo-labeling": out["before"]["confusion_matrix"]}

    out["after"] = None
    if predict_rest:
        with timer("pseudo_labeling"):
            pseudo = choose_pseudo_labels(np.mean(rest_probs, axis=0), int(cfg.pseudo.size))
            for note in pseudo.notes:
                log.warning("pseudo-labels: %s", note)
            picked = rest[pseudo.indices]
        out["pseudo"] = {
            "count": len(picked),
            "class_histogram": np.bincount(pseudo.labels, minlength=n_classes).tolist(),
            "mean_confidence": float(pseudo.confidence.mean()) if len(picked) else None,
            "accuracy": float((pool.labels[picked] == pseudo.labels).mean())
            if pool.labels is not None and len(picked)
            else None,
            "notes": pseudo.notes,
        }
        with timer("classifier_final"):
            pl.seed_everything(int(cfg.seed) + k, workers=True, verbose=False)
            x_all = torch.cat([images, pool.images[torch.as_tensor(picked)]])
            y_all = np.concatenate([y, pseudo.labels])
            final = train_classifier(
                cfg, out_dir, "classifier_final", n_classes, x_all, y_all, int(cfg.pseudo.epochs)
            )
            after = _predict(final, val.images, "Final: validation")
        out["after"] = classification_metrics(after, val_labels, int(cfg.positive_class))
        matrices["after pseudo-labeling"] = out["after"]["confusion_matrix"]
        log.info(
            "after pseudo-labeling: %s",
            {name: v for name, v in out["after"].items() if name != "confusion_matrix"},
        )
        if is_rank_zero():
            torch.save(final.state_dict(), out_dir / "classifier_final.pt")
    if is_rank_zero():
        save_confusion_matrices(out_dir / "confusion.png", matrices, dm.class_names)
    return out


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
    warnings.filterwarnings("ignore", message=r".*Checkpoint directory .* exists and is not empty.*")
    warnings.filterwarnings("ignore", message=r".*defined a `validation_step` but have no `val_dataloader`.*")
    warnings.filterwarnings("ignore", message=r".*smaller than the logging interval.*")


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
        if is_rank_zero():
            write_selection(out_dir, selection, pool)
    assert selection is not None

    classifier: dict[str, Any] = {}
    if (cfg.get("classifier") or {}).get("_target_"):  # `~classifier` stops after the selection
        classifier = classifier_stage(cfg, dm, selection, out_dir, timer)

    if not is_rank_zero():
        return None
    skipped = pool.skipped + dm.val.skipped
    if skipped:
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
        "folds": classifier.get("folds"),
        "pseudo_size": classifier.get("pseudo_size"),
        "metrics": {"before": classifier.get("before"), "after": classifier.get("after")},
        "classifier": {k: v for k, v in classifier.items() if k not in ("before", "after")},
        "selection_notes": selection.notes,
        "selection_stats": selection.stats,
        "autoencoder": info,
        "timings_s": timer.seconds,
        "versions": versions(),
        "output_dir": str(out_dir),
    }
    write_json_atomic(out_dir / "result.json", result)
    log.info("job done in %.1fs: %s", timer.seconds["total"], out_dir)
    for stage in ("after", "before"):
        if classifier.get(stage):
            return float(classifier[stage]["f1"])
    return None
