"""One job, in order: data -> embedding -> selection -> classifier (labels, k-fold models, pseudo-labels,
final model) -> result.json.

:func:`run` is the only reader of the Hydra config: it builds typed objects and hands each stage
(:mod:`imgselect.stages`) what it needs.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from imgselect.artifacts import write_csv_atomic
from imgselect.embeddings.base import EmbedContext, Embedding
from imgselect.embeddings.ssl import BACKBONE_FILE, PretrainedEmbedding
from imgselect.jobfolder import input_digests, input_paths
from imgselect.jobs import config_hash, metric_of
from imgselect.labeling import add_predictions, write_labeling_files
from imgselect.labels import FileLabels, Labeler
from imgselect.progress import set_progress_mode
from imgselect.result import RunResult
from imgselect.runtime import (
    StageTimer,
    TrainerFactory,
    is_rank_zero,
    limit_threads_from_env,
    quiet_lightning,
    reset_distributed,
    versions,
)
from imgselect.selection.selectors import Selector
from imgselect.settings import check_image_size, check_input_files, check_numbers, check_settings
from imgselect.stages.classify import ClassifierPlan, ClassifierResult, FixMatchPlan, classifier_stage
from imgselect.stages.embed import embed_stage
from imgselect.stages.prepare import (
    dedup_settings,
    find_duplicates,
    map_settings,
    pool_info,
    write_duplicates,
    write_map,
    write_pool_files,
)
from imgselect.stages.select import select_stage
from imgselect.tracking import JobTracker, TrackedJob, tracking

log = logging.getLogger(__name__)


def has_classifier(cfg: DictConfig) -> bool:
    """False after ``~classifier``: the job stops after the selection."""
    ccfg = cfg.get("classifier")
    return ccfg is not None and bool(ccfg.get("_target_"))


SSL_START = "ssl"  # classifier.pretrained=ssl: start from the job's self-supervised backbone


def classifier_init(cfg: DictConfig) -> str:
    """Where the classifier starts, as ``result.json`` records it: ``ssl`` (``classifier.pretrained=ssl``, the
    job's pretrained backbone) or ``scratch`` (random init, or a weights file / the hub)."""
    ssl = has_classifier(cfg) and cfg.classifier.get("pretrained") == SSL_START
    return SSL_START if ssl else "scratch"


def pretraining_of(cfg: DictConfig) -> Embedding | None:
    """The job's self-supervised pretraining (``pretrain=ssl``), or ``None`` (``pretrain=null``)."""
    pcfg = cfg.get("pretrain")
    return instantiate(pcfg) if pcfg is not None else None


def classifier_plan(cfg: DictConfig, out_dir: Path) -> ClassifierPlan | None:
    """The classifier stage's plan from the config; ``None`` after ``~classifier`` (stop after selection)."""
    if not has_classifier(cfg):
        return None
    ccfg, fit = cfg.classifier, cfg.fit.classifier
    # classifier.pretrained=ssl: every model (k-fold and final) starts from the job's pretrained backbone
    start = {"pretrained": str(out_dir / BACKBONE_FILE)} if classifier_init(cfg) == SSL_START else {}
    semi = cfg.get("semi")
    learner = str(semi.get("kind", "pseudo")) if semi is not None else "pseudo"
    fixmatch = None
    if semi is not None and learner == "fixmatch":
        fixmatch = FixMatchPlan(
            wrap=instantiate(semi.module),
            steps=int(semi.steps),
            steps_per_epoch=int(semi.steps_per_epoch),
            batch_size=int(semi.batch_size),
            mu=int(semi.mu),
        )
    return ClassifierPlan(  # folds and pseudo.size are checked with the other settings by check_settings
        build=lambda n_classes: instantiate(ccfg, num_classes=n_classes, **start),
        batch_size=int(fit.batch_size),
        epochs=int(fit.epochs),
        min_steps=int(fit.get("min_steps") or 0),
        folds=int(cfg.folds),
        seed=int(cfg.seed),
        pseudo_size=int(cfg.pseudo.size),
        pseudo_epochs=int(cfg.pseudo.epochs),
        positive_class=int(cfg.positive_class),
        learner=learner,  # type: ignore[arg-type]  # checked by ClassifierPlan
        fixmatch=fixmatch,
    )


def tracked_job(cfg: DictConfig, out_dir: Path) -> TrackedJob:
    """How a tracker names this job: its folder, its sweep, what it runs and the full resolved config (with
    Hydra's group choices and the command line's overrides, when Hydra runs it)."""
    from hydra.core.hydra_config import HydraConfig

    resolved = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(resolved, dict)
    config: dict[str, Any] = {str(k): v for k, v in resolved.items() if k != "hydra"}
    group = None
    if HydraConfig.initialized():
        hc = HydraConfig.get()
        config["hydra"] = {
            "choices": OmegaConf.to_container(hc.runtime.choices),
            "overrides": list(hc.overrides.task),
        }
        if str(hc.mode) == "RunMode.MULTIRUN":
            group = Path(hc.sweep.dir).name
    return TrackedJob(
        name=out_dir.name,
        dir=out_dir,
        group=group,
        job_type="train" if has_classifier(cfg) else "select",
        config=config,
    )


def job_tags(selector: Selector, embedding: Embedding | None, seed: int) -> list[str]:
    """``selector:ae``, ``budget:125``, ``seed:0`` and, when the selector embeds, ``embedding:autoencoder``."""
    tags = [f"selector:{selector.name}", f"budget:{selector.budget}", f"seed:{seed}"]
    return [*tags, f"embedding:{embedding.name}"] if embedding is not None else tags


def run(cfg: DictConfig, input_ids: dict[str, str] | None = None) -> float | None:
    """Run one job; returns the metric a hyper-parameter sweeper would optimise (or ``None``). ``input_ids``:
    the digests of the job's input files when :func:`imgselect.jobs.run_job` already took them (a pool folder's
    listing is walked once per job), else taken here."""
    quiet_lightning()
    set_progress_mode(str(cfg.get("progress", "auto")))
    reset_distributed()
    limit_threads_from_env()
    out_dir = Path(cfg.paths.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # before anything is built or trained: numbers that are numbers, input files that exist and load
    check_numbers(
        {k: OmegaConf.select(cfg, k) for k in ("budget", "seed", "folds", "image_size", "pseudo.size")}
    )
    inputs = input_paths(cfg)
    check_input_files(inputs)
    if input_ids is None:
        input_ids = input_digests(cfg)
    # the job's own inputs inside its folder (labels.path=<this folder>/labels_template.csv) are never written over
    keep = [p for paths in inputs.values() for p in paths if p.is_file()]
    seed = int(cfg.seed)
    pl.seed_everything(seed, workers=True)
    timer = StageTimer()
    t_start = time.perf_counter()

    logger = instantiate(cfg.logger) if cfg.get("logger") is not None else None
    tracker = logger if isinstance(logger, JobTracker) else None  # logger=wandb: one W&B run for the job
    trainers = TrainerFactory(
        trainer=instantiate(cfg.trainer),
        logger=logger,
        out_dir=out_dir,
        # Lightning's default when the trainer config names none (part of cache keys: never the string "None")
        precision=str(cfg.trainer.get("precision") or "32-true"),
        strategy=cfg.trainer.get("strategy"),
    )
    with tracking(tracker, tracked_job(cfg, out_dir)):  # the run is open before anything else can fail
        selector: Selector = instantiate(cfg.selector)
        labeler: Labeler = instantiate(cfg.labels)
        # with a person's labels, budget=0 trains on them and chooses nothing new
        selecting = selector.budget > 0 or not isinstance(labeler, FileLabels)
        uses_embedding = selecting and selector.requires_embeddings
        if uses_embedding and cfg.embedding.get("model") is not None and "channels" in cfg.embedding.model:
            # the autoencoder halves the image once per entry of its channels: checked before it is built
            check_image_size(int(cfg.image_size), len(cfg.embedding.model.channels))
        embedding: Embedding | None = instantiate(cfg.embedding) if uses_embedding else None
        pretraining = pretraining_of(cfg)
        plan = classifier_plan(cfg, out_dir)
        if pretraining is None and (
            isinstance(embedding, PretrainedEmbedding) or (plan is not None and classifier_init(cfg) == "ssl")
        ):
            raise ValueError(
                "embedding=ssl and classifier.pretrained=ssl use the job's self-supervised pretraining: "
                "add pretrain=ssl"
            )
        dedup = dedup_settings(cfg.get("dedup"))
        map_cfg = map_settings(cfg.get("embedding_map"))
        map_info: dict[str, Any] | None = None
        if tracker is not None:
            tracker.tag(job_tags(selector, embedding, seed))
        with timer("data"):
            dm = instantiate(cfg.data)
            dm.setup()
        pool = dm.pool
        class_names = list(dm.class_names)
        n_classes = len(class_names)
        known = labeler.known(pool, class_names)  # a person's labels from earlier rounds (none in benchmarks)
        duplicates = None
        if selecting and dedup is not None and dedup.method == "dhash":
            with timer("dedup"):
                duplicates = find_duplicates(dedup, pool, None)
        check_settings(  # every setting against the pool and each other, before any training
            budget=selector.budget,
            n_pool=len(pool),
            folds=plan.folds if plan is not None else None,
            pseudo_size=plan.pseudo_size if plan is not None else None,
            image_size=int(pool.images.shape[-1]),
            n_classes=n_classes,
            source=pool.source,
            n_known=len(known),
            n_excluded=len(np.union1d(known.indices, duplicates.removed_indices() if duplicates else [])),
            reveals=not isinstance(labeler, FileLabels),
            n_val=len(dm.val) if dm.val.labels is not None else 0,
        )
        if is_rank_zero():
            write_pool_files(out_dir, dm)

        ctx = EmbedContext(pool=pool, datamodule=dm, out_dir=out_dir, seed=seed, trainers=trainers)
        use_cache = bool(cfg.get("cache", True))
        pretrained = None
        if pretraining is not None:  # trained once per pool, settings and seed (cached like the autoencoder)
            pretrained = embed_stage(pretraining, ctx, cfg.paths.cache_dir, timer, use_cache=use_cache)
        embeddings, embedding_info = None, {}
        if isinstance(embedding, PretrainedEmbedding) and pretrained is not None:
            embeddings, embedding_info = pretrained.embeddings, {**pretrained.info, "from": "pretrain"}
        elif embedding is not None:
            emb = embed_stage(embedding, ctx, cfg.paths.cache_dir, timer, use_cache=use_cache)
            embeddings, embedding_info = emb.embeddings, emb.info
        selection = None
        if selecting:
            if dedup is not None and dedup.method == "embedding":
                with timer("dedup"):
                    duplicates = find_duplicates(dedup, pool, embeddings)
            exclude = {"labeled": known.indices}
            if duplicates is not None:
                exclude["duplicates"] = duplicates.removed_indices()
                if is_rank_zero():
                    write_duplicates(out_dir / "duplicates.csv", duplicates, pool)
            with timer("selection"):
                selection = select_stage(
                    selector, pool, embeddings, n_classes, out_dir, exclude=exclude, keep=keep
                )
            if is_rank_zero():
                write_labeling_files(out_dir, selection, pool, class_names, keep=keep)
                if map_cfg is not None:
                    with timer("embedding_map"):
                        map_info = write_map(
                            out_dir, map_cfg, pool, embeddings, selection, known, class_names, seed
                        )

        classifier: ClassifierResult | None = None
        if plan is not None:
            revealed = labeler.reveal(pool, selection.indices, class_names) if selection is not None else None
            train = known.plus(revealed) if revealed is not None else known
            new_picks = (
                selection.indices if selection is not None and isinstance(labeler, FileLabels) else None
            )
            classifier = classifier_stage(plan, trainers, dm, train, timer, predict=new_picks)
            if classifier.predictions is not None and selection is not None and is_rank_zero():
                # the next round's tasks carry this model's guesses as pre-annotations
                add_predictions(out_dir, classifier.predictions, class_names)

        if not is_rank_zero():
            return None
        skipped = pool.skipped + dm.val.skipped
        if skipped:
            write_csv_atomic(out_dir / "skipped.csv", [("path", "reason"), *skipped])
        timer.seconds["total"] = round(time.perf_counter() - t_start, 3)
        chosen = selection.indices if selection is not None else np.zeros(0, dtype=np.int64)
        chosen_labels = pool.labels[chosen] if pool.labels is not None else None
        result = RunResult(
            selector=selector.name,
            pick=selector.pick,
            embedding=embedding.name if embedding is not None else None,
            budget=len(chosen),
            seed=seed,
            image_size=int(pool.images.shape[-1]),
            pool_size=len(pool),
            val_size=len(dm.val),
            skipped_files=len(skipped),
            classes=class_names,
            selected_class_histogram=(
                {name: int((chosen_labels == c).sum()) for c, name in enumerate(class_names)}
                if chosen_labels is not None
                else None
            ),
            folds=classifier.folds if classifier is not None else None,
            pseudo_size=classifier.pseudo_size if classifier is not None else None,
            metrics={
                "before": classifier.before if classifier is not None else None,
                "after": classifier.after if classifier is not None else None,
            },
            classifier=classifier.summary() if classifier is not None else {},
            selection_notes=selection.notes if selection is not None else [],
            selection_stats=selection.stats if selection is not None else {},
            embedding_info=embedding_info,
            timings_s=timer.seconds,
            versions=versions(),
            output_dir=str(out_dir),
            config_hash=config_hash(cfg),
            inputs=input_ids,
            extra={
                "labels": {
                    "source": labeler.name,
                    "known": len(known),
                    "not_labeled_yet": known.unlabeled,
                    "notes": known.notes,
                },
                **(
                    {"dedup": {k.removeprefix("dedup_"): v for k, v in duplicates.stats().items()}}
                    if duplicates is not None
                    else {}
                ),
                **({"embedding_map": map_info} if map_info is not None else {}),
                **pool_info(dm),
                **({"pretrain": pretrained.info} if pretrained is not None else {}),
                "classifier_init": classifier_init(cfg) if plan is not None else None,
            },
        )
        result.write(out_dir / "result.json")
        if tracker is not None:
            tracker.log_result(result.to_dict(), pool)
        log.info("job done in %.1fs: %s", timer.seconds["total"], out_dir)
        return metric_of(result.to_dict())
