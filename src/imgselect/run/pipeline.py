"""One job, in order: data -> embedding -> selection -> classifier (labels, k-fold models, pseudo-labels,
final model) -> result.json.

:func:`build_job` is the only reader of the Hydra config: it builds a typed :class:`Job`. :func:`run_job` calls
the stages (:mod:`imgselect.stages`) in order, each with typed inputs, and returns the :class:`RunResult`.
:func:`run` is both, inside the job's tracker run (open before anything is built, so a job that fails to
build shows as a failed run).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from imgselect.embeddings.base import EmbedContext, Embedding, PretrainingReadout
from imgselect.embeddings.ssl import BACKBONE_FILE
from imgselect.io.artifacts import write_csv_atomic
from imgselect.io.result import RunResult
from imgselect.labeling.labels import EarlierRounds, LabeledSet, Labeler
from imgselect.labeling.tasks import add_predictions, write_labeling_files
from imgselect.pool import ImageSet, PoolShard, PoolSource
from imgselect.run.jobfolder import input_digests, input_paths
from imgselect.run.jobs import config_hash, metric_of
from imgselect.run.progress import set_progress_mode
from imgselect.run.rounds import round_row, write_rounds
from imgselect.run.runtime import (
    StageTimer,
    TrainerFactory,
    is_rank_zero,
    limit_threads_from_env,
    quiet_lightning,
    reset_distributed,
    reset_peak_memory,
    versions,
)
from imgselect.run.settings import check_image_size, check_input_files, check_numbers, check_settings
from imgselect.run.tracking import JobTracker, TrackedJob, tracking
from imgselect.selection.dedup import Dedup
from imgselect.selection.distributed import rank_and_world
from imgselect.selection.selectors import Selection, Selector
from imgselect.stages.classify import ClassifierPlan, ClassifierResult, FixMatchPlan, classifier_stage
from imgselect.stages.embed import embed_stage
from imgselect.stages.prepare import (
    DedupSettings,
    MapSettings,
    dedup_settings,
    find_duplicates,
    map_settings,
    pool_info,
    write_duplicates,
    write_map,
    write_pool_files,
)
from imgselect.stages.select import select_stage

log = logging.getLogger(__name__)


def has_classifier(cfg: DictConfig) -> bool:
    """False after ``~classifier``: the job stops after the selection."""
    ccfg = cfg.get("classifier")
    return ccfg is not None and bool(ccfg.get("_target_"))


SSL_START = "ssl"  # classifier.pretrained=ssl: start from the job's self-supervised backbone


def classifier_init(cfg: DictConfig) -> str:
    """Where the classifier starts, as ``result.json`` records it: ``scratch`` (random init), ``ssl``
    (``classifier.pretrained=ssl``, the job's pretrained backbone), ``hub`` (timm's ImageNet weights) or ``file``
    (a weights file, named with its hash under ``inputs``)."""
    start = cfg.classifier.get("pretrained") if has_classifier(cfg) else None
    if start is None or str(start) == "":
        return "scratch"
    return str(start) if str(start) in (SSL_START, "hub") else "file"


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


@dataclass(frozen=True)
class Job:
    """One job, built from the config by :func:`build_job`: what :func:`run_job` needs and nothing of Hydra.

    Attributes:
        out_dir: the job folder.
        seed: the job's seed (Lightning's, the selector's, the folds').
        data: builds the datamodule (its ``setup`` loads the pool and the validation set).
        selector: the ``selector`` group, with its budget.
        labeler: where labels come from (``labels``).
        embedding: the selector's embedding, ``None`` when the selector reads none or nothing is chosen.
        pretraining: the self-supervised pretraining (``pretrain=ssl``), else ``None``.
        plan: the classifier's training plan, ``None`` after ``~classifier``.
        dedup: near-duplicate removal before selection, ``None`` for ``dedup=none``.
        embedding_map: the map of the pool and the picks, ``None`` for ``embedding_map.method=none``.
        trainers: makes the Lightning trainers of every stage.
        tracker: the job's experiment tracker run (``logger=wandb``), else ``None``.
        cache_dir: the embedding and pretraining cache; ``use_cache`` turns it off.
        keep: the job's own input files, never written over (``labels.path=<this folder>/...``).
        record: what ``result.json`` records of the config (``config_hash``, ``inputs``, ``classifier_init``).
        rounds: labeling rounds in this job (``rounds``, :func:`run_rounds`); 1: one selection.
        predictions: the previous round's ``(n_pool, C)`` class probabilities (NaN rows: images it did not
            predict, the labeled ones), for the selectors that use them; ``None`` in a first round.
        predict_pool: the classifier predicts every unlabeled pool image (for the next round).
    """

    out_dir: Path
    seed: int
    data: Callable[[], pl.LightningDataModule]
    selector: Selector
    labeler: Labeler
    embedding: Embedding | None
    pretraining: Embedding | None
    plan: ClassifierPlan | None
    dedup: DedupSettings | None
    embedding_map: MapSettings | None
    trainers: TrainerFactory
    tracker: JobTracker | None
    cache_dir: Path
    use_cache: bool
    keep: list[Path] = field(default_factory=list)
    record: dict[str, Any] = field(default_factory=dict)
    rounds: int = 1
    predictions: np.ndarray | None = None
    predict_pool: bool = False

    @property
    def selecting(self) -> bool:
        """Whether the job chooses images (:func:`chooses`)."""
        return chooses(self.selector, self.labeler)


def chooses(selector: Selector, labeler: Labeler) -> bool:
    """Whether a job chooses images: with a person's labels, ``budget=0`` trains on them, choosing none."""
    return selector.budget > 0 or labeler.reveals


def run(cfg: DictConfig, input_ids: dict[str, str] | None = None) -> float | None:
    """Run one job; returns the metric a hyper-parameter sweeper would optimise (or ``None``). ``input_ids``:
    the digests of the job's input files when :func:`imgselect.run.jobs.resume_or_run` already took them (a pool
    folder's listing is walked once per job), else taken here."""
    quiet_lightning()
    set_progress_mode(str(cfg.get("progress", "auto")))
    reset_distributed()
    limit_threads_from_env()
    out_dir = Path(cfg.paths.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    logger = instantiate(cfg.logger) if cfg.get("logger") is not None else None
    tracker = logger if isinstance(logger, JobTracker) else None  # logger=wandb: one W&B run for the job
    with tracking(tracker, tracked_job(cfg, out_dir)):  # the run is open before anything else can fail
        job = build_job(cfg, logger, input_ids)
        result = run_rounds(job) if job.rounds > 1 else run_job(job)
    return metric_of(result.to_dict()) if result is not None else None


def build_job(cfg: DictConfig, logger: Any = None, input_ids: dict[str, str] | None = None) -> Job:
    """The job ``cfg`` describes, every setting that can be checked without the pool checked: numbers that are
    numbers, input files that exist and load, an image size the autoencoder can halve, a pretraining where
    the embedding or the classifier needs one. ``logger``: the Lightning logger :func:`run` built from
    ``cfg.logger`` (the job's tracker when it is one)."""
    out_dir = Path(cfg.paths.output_dir)
    check_numbers(
        {
            k: OmegaConf.select(cfg, k)
            for k in ("budget", "seed", "folds", "image_size", "pseudo.size", "rounds")
        }
    )
    inputs = input_paths(cfg)
    check_input_files(inputs)
    trainers = TrainerFactory(
        trainer=instantiate(cfg.trainer),
        logger=logger,
        out_dir=out_dir,
        # Lightning's default when the trainer config names none (part of cache keys: never the string "None")
        precision=str(cfg.trainer.get("precision") or "32-true"),
        strategy=cfg.trainer.get("strategy"),
    )
    selector: Selector = instantiate(cfg.selector)
    labeler: Labeler = instantiate(cfg.labels)
    uses_embedding = chooses(selector, labeler) and selector.requires_embeddings
    if uses_embedding and cfg.embedding.get("model") is not None and "channels" in cfg.embedding.model:
        # the autoencoder halves the image once per entry of its channels: checked before it is built
        check_image_size(int(cfg.image_size), len(cfg.embedding.model.channels))
    embedding: Embedding | None = instantiate(cfg.embedding) if uses_embedding else None
    pretraining = pretraining_of(cfg)
    plan = classifier_plan(cfg, out_dir)
    rounds = int(cfg.get("rounds", 1))
    check_rounds(rounds, plan is not None, labeler.reveals, selector.budget)
    ssl_start = plan is not None and classifier_init(cfg) == SSL_START
    if pretraining is None and ((embedding is not None and embedding.from_pretraining) or ssl_start):
        raise ValueError(
            "embedding=ssl and classifier.pretrained=ssl use the job's self-supervised pretraining: "
            "add pretrain=ssl (SimCLR) or pretrain=byol"
        )
    return Job(
        out_dir=out_dir,
        seed=int(cfg.seed),
        data=instantiate(cfg.data, _partial_=True),  # built (and its pool loaded) by the data stage
        selector=selector,
        labeler=labeler,
        embedding=embedding,
        pretraining=pretraining,
        plan=plan,
        dedup=dedup_settings(cfg.get("dedup")),
        embedding_map=map_settings(cfg.get("embedding_map")),
        trainers=trainers,
        tracker=logger if isinstance(logger, JobTracker) else None,
        cache_dir=Path(cfg.paths.cache_dir),
        use_cache=bool(cfg.get("cache", True)),
        keep=[p for paths in inputs.values() for p in paths if p.is_file()],
        record={
            "config_hash": config_hash(cfg),
            "inputs": input_ids if input_ids is not None else input_digests(cfg),
            "classifier_init": classifier_init(cfg) if plan is not None else None,
        },
        rounds=rounds,
    )


@dataclass
class _Outputs:
    """What the stages of one job made, gathered for ``result.json``."""

    datamodule: pl.LightningDataModule
    dm: PoolSource  # the same datamodule, as the pool it holds
    known: LabeledSet
    duplicates: Dedup | None = None
    pretrained_info: dict[str, Any] | None = None
    embeddings: np.ndarray | None = None
    embedding_info: dict[str, Any] = field(default_factory=dict)
    shard: PoolShard | None = None  # this rank's block of the pool in a sharded DDP job
    selection: Selection | None = None
    labeled: LabeledSet | None = None  # what the classifier trained on (earlier rounds' labels and the new)
    pool_predictions: np.ndarray | None = None  # (n_pool, C), NaN rows for images not predicted
    map_info: dict[str, Any] | None = None
    classifier: ClassifierResult | None = None


def run_job(job: Job) -> RunResult | None:
    """The stages of ``job`` in order; rank 0 writes and returns the :class:`RunResult` (other ranks: ``None``)."""
    out, timings = _stages(job)
    return _finish(job, out, timings)


def _stages(job: Job) -> tuple[_Outputs, dict[str, float]]:
    """Data, checks, embedding, selection and classifier of ``job``; what they made and their seconds."""
    pl.seed_everything(job.seed, workers=True)
    timer = StageTimer()
    t_start = time.perf_counter()
    if job.tracker is not None:
        job.tracker.tag(job_tags(job.selector, job.embedding, job.seed))
    with timer("data"):
        datamodule = job.data()
        datamodule.setup("fit")
    dm = _pool_source(datamodule)
    out = _Outputs(datamodule, dm, known=job.labeler.known(dm.pool, list(dm.class_names)))
    if job.selecting and job.dedup is not None and job.dedup.method == "dhash":
        with timer("dedup"):
            out.duplicates = find_duplicates(job.dedup, dm.pool, None)
    _check_against_pool(job, out)
    if is_rank_zero():
        write_pool_files(job.out_dir, dm)
    _embed(job, out, timer)
    if job.plan is not None and _trains_first(job, out):
        _train_then_choose(job, job.plan, out, timer)
    else:
        if job.selecting:
            _select(job, out, timer)
        if job.plan is not None:
            _classify(job, job.plan, out, timer)
    timer.seconds["total"] = round(time.perf_counter() - t_start, 3)
    return out, timer.seconds


def _trains_first(job: Job, out: _Outputs) -> bool:
    """A person's next round with a round-aware selector (``labels=file selector=margin``): the classifier
    trains on the labels so far first, and the selector chooses where it is least sure."""
    return job.selecting and job.selector.uses_predictions and not job.labeler.reveals and len(out.known) > 0


def _train_then_choose(job: Job, plan: ClassifierPlan, out: _Outputs, timer: StageTimer) -> None:
    """One command per round for a person: train on the labels so far, predict the pool, choose by those
    predictions, and give the new picks the same predictions as pre-annotations."""
    _classify(replace(job, predict_pool=True), plan, out, timer)
    _select(replace(job, predictions=out.pool_predictions), out, timer)
    if out.selection is not None and out.pool_predictions is not None and is_rank_zero():
        add_predictions(job.out_dir, out.pool_predictions[out.selection.indices], list(out.dm.class_names))


def _finish(job: Job, out: _Outputs, timings: dict[str, float], log_it: bool = True) -> RunResult | None:
    """Rank 0 writes ``result.json`` (and logs it to the tracker); other ranks return ``None``."""
    if not is_rank_zero():
        return None
    result = _result(job, out, timings)
    result.write(job.out_dir / "result.json")
    if job.tracker is not None and log_it:
        job.tracker.log_result(result.to_dict(), out.dm.pool)
    log.info("job done in %.1fs: %s", timings["total"], job.out_dir)
    return result


def check_rounds(rounds: int, trains: bool, reveals: bool, budget: int) -> None:
    """``rounds=N`` (N > 1) needs labels revealed at once (``labels=oracle``), a classifier and a budget."""
    if rounds < 1:
        raise ValueError(f"rounds={rounds} must be at least 1 (1: one selection)")
    if rounds == 1:
        return
    if not reveals:
        raise ValueError(
            f"rounds={rounds} runs every round in one job, so it needs labels=oracle (a benchmark); with a "
            "person labeling, run one job per round (labels=file labels.path=[round1.csv,...])"
        )
    if not trains:
        raise ValueError(f"rounds={rounds} trains a classifier each round: drop ~classifier")
    if budget < 1:
        raise ValueError(f"rounds={rounds} chooses budget images a round: budget={budget} must be at least 1")


def run_rounds(job: Job) -> RunResult | None:
    """``rounds=N``: select -> reveal -> train, N times, each round in ``round_<r>/`` with its own
    ``result.json``; round ``r`` knows the labels of the rounds before and (for ``selector=margin``,
    ``cluster_margin``, ``mixed``) the previous classifier's predictions of the pool. The job folder gets
    ``rounds.csv``, ``rounds.json``, ``rounds.png`` (accuracy against labels) and a ``result.json`` of the last
    round with the labels of all rounds as its budget."""
    labeled, predictions = LabeledSet.empty(), None
    rows: list[dict[str, Any]] = []
    result: RunResult | None = None
    for r in range(1, job.rounds + 1):
        folder = job.out_dir / f"round_{r}"
        folder.mkdir(parents=True, exist_ok=True)
        round_job = replace(
            job,
            out_dir=folder,
            trainers=replace(job.trainers, out_dir=folder),
            labeler=EarlierRounds(job.labeler, labeled),
            seed=job.seed + r - 1,  # a new random draw and new folds each round, reproducible
            rounds=1,
            predictions=predictions,
            predict_pool=r < job.rounds,
        )
        log.info(
            "round %d of %d: %d labels so far, choosing %d", r, job.rounds, len(labeled), job.selector.budget
        )
        out, timings = _stages(round_job)
        result = _finish(round_job, out, timings, log_it=False)
        assert out.labeled is not None  # check_rounds: every round trains
        labeled, predictions, pool = out.labeled, out.pool_predictions, out.dm.pool
        if result is not None:
            rows.append(round_row(r, result))
    if result is None:
        return None
    write_rounds(job.out_dir, rows)
    total = replace(
        result, budget=len(labeled), output_dir=str(job.out_dir), extra={**result.extra, "rounds": rows}
    )
    total.write(job.out_dir / "result.json")
    if job.tracker is not None:
        job.tracker.log_result(total.to_dict(), pool)
    return total


def _pool_source(datamodule: pl.LightningDataModule) -> PoolSource:
    """The datamodule as the pool it holds, or an error naming what it lacks (a user's own ``data=``)."""
    if not isinstance(datamodule, PoolSource):
        raise TypeError(
            f"data: {type(datamodule).__name__} holds no pool; a datamodule for imgselect sets pool, val and "
            "class_names in setup() and has extraction() (build it on datamodules.pool.PoolDataModule)"
        )
    return datamodule


def _excluded(out: _Outputs) -> np.ndarray:
    """Pool indices the selection may not choose: labeled ones and near-duplicates."""
    dups = out.duplicates.removed_indices() if out.duplicates is not None else np.zeros(0, dtype=np.int64)
    return np.union1d(out.known.indices, dups)


def _check_against_pool(job: Job, out: _Outputs) -> None:
    """Every setting against the pool and each other, before any training (:func:`check_settings`)."""
    pool, plan = out.dm.pool, job.plan
    check_settings(
        budget=job.selector.budget,
        n_pool=len(pool),
        folds=plan.folds if plan is not None else None,
        pseudo_size=plan.pseudo_size if plan is not None and plan.learner == "pseudo" else None,
        image_size=int(pool.images.shape[-1]),
        n_classes=len(out.dm.class_names),
        source=pool.source,
        n_known=len(out.known),
        n_excluded=len(_excluded(out)),
        reveals=job.labeler.reveals,
        n_val=len(out.dm.val) if out.dm.val.labels is not None else 0,
    )


def _embed(job: Job, out: _Outputs, timer: StageTimer) -> None:
    """The pretraining (trained once per pool, settings and seed, cached like the autoencoder) and the
    selector's embedding (the pretraining's features for ``embedding=ssl``).

    Under DDP (``trainer=ddp``) the job's ranks start here, before any training, and the pool is sharded over
    them: each rank embeds its block where the embedding can (``pixels``; any cached embedding is read a block
    per rank), and the selection runs on every rank (:func:`select_stage`)."""
    shard = None
    if job.embedding is not None and job.trainers.data_parallel():
        job.trainers.start_ranks()
        shard = PoolShard.of(len(out.dm.pool), *rank_and_world())
        reset_peak_memory()  # the selection stats report each rank's peak from here
    ctx = EmbedContext(
        pool=out.dm.pool,
        datamodule=out.datamodule,
        out_dir=job.out_dir,
        seed=job.seed,
        trainers=job.trainers,
        shard=shard,
    )
    pretrained = None
    if job.pretraining is not None:
        pretrained = embed_stage(job.pretraining, ctx, job.cache_dir, timer, use_cache=job.use_cache)
        out.pretrained_info = pretrained.info
    if job.embedding is None:
        return
    embedding, info = job.embedding, {}
    if embedding.from_pretraining and pretrained is not None:
        reader = embedding if isinstance(embedding, PretrainingReadout) else None
        readout = reader.readout(job.out_dir / BACKBONE_FILE) if reader is not None else None
        if readout is None:  # the pooled features the pretraining computed
            out.embeddings, out.shard = pretrained.embeddings, pretrained.shard
            out.embedding_info = {**pretrained.info, "from": "pretrain"}
            return
        embedding, info = readout, {"from": "pretrain"}  # its backbone read another way (embedding.features)
    emb = embed_stage(embedding, ctx, job.cache_dir, timer, use_cache=job.use_cache)
    out.embeddings, out.embedding_info, out.shard = emb.embeddings, {**emb.info, **info}, emb.shard


def _select(job: Job, out: _Outputs, timer: StageTimer) -> None:
    """Near-duplicates by the embedding, the selection (``selection.csv``), the labeling files and the map."""
    pool, class_names = out.dm.pool, list(out.dm.class_names)
    if job.dedup is not None and job.dedup.method == "embedding":
        with timer("dedup"):
            out.duplicates = find_duplicates(job.dedup, pool, out.embeddings)
    exclude = {"labeled": out.known.indices}
    if out.duplicates is not None:
        exclude["duplicates"] = out.duplicates.removed_indices()
        if is_rank_zero():
            write_duplicates(job.out_dir / "duplicates.csv", out.duplicates, pool)
    with timer("selection"):
        out.selection = select_stage(
            job.selector,
            pool,
            out.embeddings,
            len(class_names),
            job.out_dir,
            exclude=exclude,
            keep=job.keep,
            predictions=job.predictions,
            shard=out.shard,
        )
    if not is_rank_zero():
        return
    write_labeling_files(job.out_dir, out.selection, pool, class_names, keep=job.keep)
    if job.embedding_map is not None:
        with timer("embedding_map"):
            out.map_info = write_map(
                job.out_dir,
                job.embedding_map,
                pool,
                out.embeddings,
                out.selection,
                out.known,
                class_names,
                job.seed,
            )


def _classify(job: Job, plan: ClassifierPlan, out: _Outputs, timer: StageTimer) -> None:
    """The classifier on the labels known and revealed; a person's new picks get its predictions as the next
    round's pre-annotations."""
    pool, class_names, selection = out.dm.pool, list(out.dm.class_names), out.selection
    revealed = job.labeler.reveal(pool, selection.indices, class_names) if selection is not None else None
    train = out.known.plus(revealed) if revealed is not None else out.known
    out.labeled = train
    if job.predict_pool:  # the next round's selector reads this model's view of every unlabeled image
        rest = np.setdiff1d(np.arange(len(pool)), train.indices)
        out.classifier = classifier_stage(plan, job.trainers, out.dm, train, timer, predict=rest)
        if out.classifier.predictions is not None:
            out.pool_predictions = np.full((len(pool), len(class_names)), np.nan)
            out.pool_predictions[rest] = out.classifier.predictions
        return
    new_picks = selection.indices if selection is not None and not job.labeler.reveals else None
    out.classifier = classifier_stage(plan, job.trainers, out.dm, train, timer, predict=new_picks)
    if out.classifier.predictions is not None and selection is not None and is_rank_zero():
        add_predictions(job.out_dir, out.classifier.predictions, class_names)


def _result(job: Job, out: _Outputs, timings: dict[str, float]) -> RunResult:
    """``result.json`` of the job: what was chosen, the classifier's metrics, and how the job ran."""
    dm, pool, clf, sel = out.dm, out.dm.pool, out.classifier, out.selection
    skipped = pool.skipped + dm.val.skipped
    if skipped:
        write_csv_atomic(job.out_dir / "skipped.csv", [("path", "reason"), *skipped])
    chosen = sel.indices if sel is not None else np.zeros(0, dtype=np.int64)
    return RunResult(
        selector=job.selector.name,
        pick=job.selector.pick,
        embedding=job.embedding.name if job.embedding is not None else None,
        budget=len(chosen),
        seed=job.seed,
        image_size=int(pool.images.shape[-1]),
        pool_size=len(pool),
        val_size=len(dm.val),
        skipped_files=len(skipped),
        classes=list(dm.class_names),
        selected_class_histogram=_histogram(pool, chosen, list(dm.class_names)),
        folds=clf.folds if clf is not None else None,
        pseudo_size=clf.pseudo_size if clf is not None else None,
        metrics={
            "before": clf.before if clf is not None else None,
            "after": clf.after if clf is not None else None,
        },
        classifier=clf.summary() if clf is not None else {},
        selection_notes=sel.notes if sel is not None else [],
        selection_stats=sel.stats if sel is not None else {},
        embedding_info=out.embedding_info,
        timings_s=timings,
        versions=versions(),
        output_dir=str(job.out_dir),
        config_hash=job.record["config_hash"],
        inputs=job.record["inputs"],
        extra=_extra(job, out),
    )


def _histogram(pool: ImageSet, chosen: np.ndarray, class_names: list[str]) -> dict[str, int] | None:
    """Chosen images per class, when the pool's labels are known (a benchmark)."""
    if pool.labels is None:
        return None
    labels = pool.labels[chosen]
    return {name: int((labels == c).sum()) for c, name in enumerate(class_names)}


def _extra(job: Job, out: _Outputs) -> dict[str, Any]:
    """``result.json``'s other sections: labels, dedup, map, the video extraction, pretraining, start."""
    extra: dict[str, Any] = {
        "labels": {
            "source": job.labeler.name,
            "known": len(out.known),
            "not_labeled_yet": out.known.unlabeled,
            "notes": out.known.notes,
        }
    }
    if out.duplicates is not None:
        extra["dedup"] = {k.removeprefix("dedup_"): v for k, v in out.duplicates.stats().items()}
    if out.map_info is not None:
        extra["embedding_map"] = out.map_info
    extra.update(pool_info(out.dm))
    if out.pretrained_info is not None:
        extra["pretrain"] = out.pretrained_info
    extra["classifier_init"] = job.record["classifier_init"]
    return extra
