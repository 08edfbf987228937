"""One job, in order: data -> embedding -> selection -> classifier (labels, k-fold models, pseudo-labels,
final model) -> result.json.

:func:`run` is the only reader of the Hydra config: it builds typed objects and hands each stage
(:mod:`imgselect.stages`) what it needs.
"""

from __future__ import annotations

import csv
import logging
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from hydra.utils import instantiate
from omegaconf import DictConfig

from imgselect.embeddings.base import EmbedContext, Embedding
from imgselect.jobs import config_hash
from imgselect.result import RunResult
from imgselect.runtime import (
    StageTimer,
    TrainerFactory,
    is_rank_zero,
    quiet_lightning,
    reset_distributed,
    versions,
)
from imgselect.selection.selectors import Selector, check_budget
from imgselect.stages.classify import ClassifierPlan, classifier_stage
from imgselect.stages.embed import embed_stage
from imgselect.stages.select import select_stage

log = logging.getLogger(__name__)


def classifier_plan(cfg: DictConfig) -> ClassifierPlan | None:
    """The classifier stage's plan from the config; ``None`` after ``~classifier`` (stop after selection)."""
    ccfg = cfg.get("classifier")
    if ccfg is None or not ccfg.get("_target_"):
        return None
    pseudo_size = int(cfg.pseudo.size)
    if pseudo_size < 0:
        raise ValueError(f"pseudo.size={pseudo_size} must be 0 (no pseudo-labels) or more")
    if int(cfg.folds) < 1:
        raise ValueError(f"folds={cfg.folds} must be at least 1")
    return ClassifierPlan(
        build=lambda n_classes: instantiate(ccfg, num_classes=n_classes),
        batch_size=int(ccfg.batch_size),
        epochs=int(ccfg.epochs),
        min_steps=int(ccfg.get("min_steps") or 0),
        folds=int(cfg.folds),
        seed=int(cfg.seed),
        pseudo_size=pseudo_size,
        pseudo_epochs=int(cfg.pseudo.epochs),
        positive_class=int(cfg.positive_class),
        labeler=instantiate(cfg.labels),
    )


def run(cfg: DictConfig) -> float | None:
    """Run one job; returns the metric a hyper-parameter sweeper would optimise (or ``None``)."""
    quiet_lightning()
    reset_distributed()
    out_dir = Path(cfg.paths.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    seed = int(cfg.seed)
    pl.seed_everything(seed, workers=True)
    timer = StageTimer()
    t_start = time.perf_counter()

    with timer("data"):
        dm = instantiate(cfg.data)
        dm.setup()
    pool = dm.pool
    n_classes = len(dm.class_names)
    selector: Selector = instantiate(cfg.selector)
    check_budget(selector.budget, len(pool), pool.source)  # before any training
    plan = classifier_plan(cfg)
    trainers = TrainerFactory(
        trainer=instantiate(cfg.trainer),
        logger=instantiate(cfg.logger) if cfg.get("logger") is not None else None,
        out_dir=out_dir,
        precision=str(cfg.trainer.get("precision")),
        strategy=cfg.trainer.get("strategy"),
    )

    embeddings, embedding_info, embedding_name = None, {}, None
    if selector.requires_embeddings:
        embedding: Embedding = instantiate(cfg.embedding)
        embedding_name = embedding.name
        ctx = EmbedContext(pool=pool, datamodule=dm, out_dir=out_dir, seed=seed, trainers=trainers)
        emb = embed_stage(embedding, ctx, cfg.paths.cache_dir, timer, use_cache=bool(cfg.get("cache", True)))
        embeddings, embedding_info = emb.embeddings, emb.info
    with timer("selection"):
        selection = select_stage(selector, pool, embeddings, n_classes, out_dir)

    classifier: dict[str, Any] = {}
    if plan is not None:
        classifier = classifier_stage(plan, trainers, dm, selection, timer)

    if not is_rank_zero():
        return None
    skipped = pool.skipped + dm.val.skipped
    if skipped:
        with (out_dir / "skipped.csv").open("w", newline="") as f:
            csv.writer(f).writerows([("path", "reason"), *skipped])
    timer.seconds["total"] = round(time.perf_counter() - t_start, 3)
    chosen_labels = pool.labels[selection.indices] if pool.labels is not None else None
    result = RunResult(
        selector=selector.name,
        pick=selector.pick,
        embedding=embedding_name,
        budget=len(selection),
        seed=seed,
        image_size=int(pool.images.shape[-1]),
        pool_size=len(pool),
        val_size=len(dm.val),
        skipped_files=len(skipped),
        classes=list(dm.class_names),
        selected_class_histogram=(
            {name: int((chosen_labels == c).sum()) for c, name in enumerate(dm.class_names)}
            if chosen_labels is not None
            else None
        ),
        folds=classifier.get("folds"),
        pseudo_size=classifier.get("pseudo_size"),
        metrics={"before": classifier.get("before"), "after": classifier.get("after")},
        classifier={k: v for k, v in classifier.items() if k not in ("before", "after")},
        selection_notes=selection.notes,
        selection_stats=selection.stats,
        embedding_info=embedding_info,
        timings_s=timer.seconds,
        versions=versions(),
        output_dir=str(out_dir),
        config_hash=config_hash(cfg),
    )
    result.write(out_dir / "result.json")
    log.info("job done in %.1fs: %s", timer.seconds["total"], out_dir)
    for stage in ("after", "before"):
        if classifier.get(stage):
            return float(classifier[stage]["f1"])
    return None
