"""The classifier stage: labels for the chosen images -> k-fold classifiers ("before") -> a learner that uses
the rest of the pool ("after": the paper's pseudo-labels, or FixMatch) -> metrics on the validation set."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import CombinedLoader
from torch.utils.data import DataLoader, Dataset, RandomSampler, TensorDataset

from imgselect.io.artifacts import atomic_path, save_confusion_matrices
from imgselect.labeling.labels import LabeledSet
from imgselect.pool import ImageSet, PoolSource
from imgselect.run.callbacks import embed_images
from imgselect.run.runtime import StageTimer, TrainerFactory, is_rank_zero
from imgselect.semisupervised import (
    choose_pseudo_labels,
    classification_metrics,
    epochs_for,
    stratified_folds,
)

log = logging.getLogger(__name__)


class ClassifierModel(Protocol):
    """A LightningModule classifier (``ClassifierModule``)."""

    device: torch.device

    def predict_proba(self, x: torch.Tensor) -> torch.Tensor: ...
    def eval(self) -> Any: ...
    def load_state_dict(self, state: dict[str, Any]) -> Any: ...
    def state_dict(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class FixMatchPlan:
    """How ``semi=fixmatch`` trains (``conf/semi/fixmatch.yaml``).

    Attributes:
        wrap: ``(classifier=, n_unlabeled=, total_steps=, unlabeled_labels=) -> LightningModule`` (a partial of
            ``lightning_modules.FixMatchModule`` with its settings) with ``finished_classifier()``.
        steps: optimizer steps.
        steps_per_epoch: steps between progress lines.
        batch_size: labeled images per step (drawn with replacement).
        mu: unlabeled images per labeled one.
    """

    wrap: Callable[..., Any]
    steps: int
    steps_per_epoch: int
    batch_size: int
    mu: int

    def __post_init__(self) -> None:
        for name in ("steps", "steps_per_epoch", "batch_size", "mu"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"semi.{name}={getattr(self, name)} must be at least 1")

    def settings(self) -> dict[str, Any]:
        """What result.json records of the run's settings: the step sizes and the module's scalar settings
        (threshold, flex, ema_decay, lr, ...), so jobs that differ only there can be told apart."""
        module = getattr(self.wrap, "keywords", {})
        scalars = {k: v for k, v in module.items() if isinstance(v, (bool, int, float, str))}
        return {"batch_size": self.batch_size, "mu": self.mu, **scalars}


Learner = Literal["pseudo", "fixmatch", "none"]


@dataclass(frozen=True)
class ClassifierPlan:
    """How the classifier stage trains.

    Attributes:
        build: ``num_classes -> model``, a fresh classifier.
        batch_size: training batch.
        epochs: epochs per fold model.
        min_steps: at least this many optimizer steps per model (more epochs for small labeled sets).
        folds: k of k-fold learning (1: one model on every label).
        seed: seeds each model and the folds.
        pseudo_size: pseudo-labels added from the rest of the pool (0: none).
        pseudo_epochs: epochs of the final model on labeled + pseudo-labeled images.
        positive_class: the class whose F1 a 2-class task reports.
        learner: what makes "after" from the rest of the pool: ``pseudo`` (the paper), ``fixmatch`` or
            ``none`` (``semi`` config group).
        fixmatch: the FixMatch plan when ``learner == "fixmatch"``.
    """

    build: Callable[[int], Any]
    batch_size: int
    epochs: int
    min_steps: int
    folds: int
    seed: int
    pseudo_size: int
    pseudo_epochs: int
    positive_class: int
    learner: Learner = "pseudo"
    fixmatch: FixMatchPlan | None = None

    def __post_init__(self) -> None:
        if self.learner not in ("pseudo", "fixmatch", "none"):
            raise ValueError(f"semi={self.learner!r}: use pseudo, fixmatch or none")
        if self.learner == "fixmatch" and self.fixmatch is None:
            raise ValueError("semi=fixmatch needs its settings (conf/semi/fixmatch.yaml)")


@dataclass
class ClassifierResult:
    """What the classifier stage measured.

    Attributes:
        labeled: labeled images it trained on.
        folds: k of the "before" models.
        learner: ``pseudo``, ``fixmatch`` or ``none``.
        pseudo_size: pseudo-labels asked for (``semi=pseudo``), else ``None``.
        before: metrics of the k-fold ensemble on the validation set (labeled images alone).
        after: metrics of the model that also learned from the pool (``None`` without one).
        details: what a person reads besides (pseudo-label counts and accuracy, FixMatch's mask rate, classes
            missing from the labels).
        predictions: class probabilities of the images asked for (the next round's picks), or ``None``.
    """

    labeled: int
    folds: int
    learner: str
    pseudo_size: int | None
    before: dict[str, Any]
    after: dict[str, Any] | None = None
    details: dict[str, Any] = field(default_factory=dict)
    predictions: np.ndarray | None = None

    def summary(self) -> dict[str, Any]:
        """``result.json``'s ``classifier`` entry."""
        return {"labeled": self.labeled, "folds": self.folds, "learner": self.learner, **self.details}


def make_loader(images: torch.Tensor, labels: np.ndarray, batch_size: int, shuffle: bool) -> DataLoader:
    """Training loaders (``shuffle``) drop a last batch of one image: BatchNorm cannot train on it."""
    ds = TensorDataset(images, torch.as_tensor(labels, dtype=torch.long))
    drop_last = shuffle and len(ds) > 1 and len(ds) % batch_size == 1
    return DataLoader(ds, batch_size=batch_size, shuffle=shuffle, num_workers=0, drop_last=drop_last)


def _predict(
    model: ClassifierModel, images: torch.Tensor, description: str, index: np.ndarray | None = None
) -> np.ndarray:
    """Class probabilities of ``images`` (of ``images[index]``, gathered a batch at a time: no copy)."""
    model.eval()
    probs = embed_images(
        model.predict_proba, images, 512, model.device, is_rank_zero(), description, index=index
    )
    return probs.numpy()


def train_classifier(
    plan: ClassifierPlan,
    trainers: TrainerFactory,
    stage: str,
    n_classes: int,
    images: torch.Tensor,
    labels: np.ndarray,
    epochs: int,
    held_out: tuple[torch.Tensor, np.ndarray] | None = None,
) -> Any:
    """Train one classifier; with ``held_out``, keep the weights of its epoch of lowest held-out loss."""
    model = plan.build(n_classes)
    bs = plan.batch_size
    ckpt = None
    callbacks: list[pl.Callback] = []
    if held_out is not None:
        ckpt = ModelCheckpoint(
            dirpath=str(trainers.out_dir / "classifier"),
            filename=stage,
            monitor="val/loss",
            mode="min",
            save_weights_only=True,
            # a killed run's classifier_fold0.ckpt is replaced, not kept beside a new classifier_fold0-v1.ckpt
            enable_version_counter=False,
        )
        callbacks.append(ckpt)
    train_loader = make_loader(images, labels, bs, shuffle=True)
    run_epochs = epochs_for(len(train_loader), epochs, plan.min_steps)
    if run_epochs != epochs:
        log.info(
            "%s: %d images at batch %d -> %d epochs instead of %d (fit.classifier.min_steps=%d)",
            stage, len(labels), bs, run_epochs, epochs, plan.min_steps,
        )  # fmt: skip
    trainer = trainers(stage, run_epochs, callbacks, enable_checkpointing=ckpt is not None)
    val_loader = make_loader(*held_out, bs, shuffle=False) if held_out is not None else None
    trainer.fit(model, train_dataloaders=train_loader, val_dataloaders=val_loader)
    if ckpt is not None and ckpt.best_model_path:
        state = torch.load(ckpt.best_model_path, map_location="cpu", weights_only=True)["state_dict"]
        model.load_state_dict(state)
    return model


class PoolPositions(Dataset):
    """``(position, image)`` of the pool images at ``indices`` (no copy of the pool: a mapped pool stays
    mapped); the position indexes FixMatch's per-image table."""

    def __init__(self, images: torch.Tensor, indices: np.ndarray) -> None:
        self.images, self.indices = images, torch.as_tensor(indices, dtype=torch.long)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k: int) -> tuple[int, torch.Tensor]:
        return k, self.images[self.indices[k]]


def train_fixmatch(
    plan: ClassifierPlan,
    trainers: TrainerFactory,
    n_classes: int,
    labeled: tuple[torch.Tensor, np.ndarray],
    pool_images: torch.Tensor,
    unlabeled: np.ndarray,
    unlabeled_labels: np.ndarray | None = None,
) -> tuple[Any, dict[str, Any]]:
    """FixMatch on ``labeled`` images and the pool images at ``unlabeled``: the finished classifier (its
    weight average) and what a person reads of the run (steps, final mask rate and pseudo-label accuracy)."""
    fm = plan.fixmatch
    assert fm is not None
    images, y = labeled
    epochs = max(1, -(-fm.steps // fm.steps_per_epoch))
    per_epoch = fm.steps_per_epoch
    labeled_loader = DataLoader(
        TensorDataset(images, torch.as_tensor(y, dtype=torch.long)),
        batch_size=fm.batch_size,
        sampler=RandomSampler(range(len(y)), replacement=True, num_samples=per_epoch * fm.batch_size),
        drop_last=True,
    )
    u_batch = fm.mu * fm.batch_size
    unlabeled_loader = DataLoader(
        PoolPositions(pool_images, unlabeled),
        batch_size=u_batch,
        sampler=RandomSampler(range(len(unlabeled)), replacement=True, num_samples=per_epoch * u_batch),
        drop_last=True,
    )
    module = fm.wrap(
        classifier=plan.build(n_classes),
        n_unlabeled=len(unlabeled),
        total_steps=epochs * per_epoch,
        unlabeled_labels=torch.as_tensor(unlabeled_labels) if unlabeled_labels is not None else None,
    )
    log.info(
        "FixMatch: %d labeled + %d unlabeled images, %d steps of %d + %d (%d epochs of %d steps)",
        len(y), len(unlabeled), epochs * per_epoch, fm.batch_size, u_batch, epochs, per_epoch,
    )  # fmt: skip
    trainer = trainers("classifier_fixmatch", epochs, [], enable_checkpointing=False)
    combined = CombinedLoader({"labeled": labeled_loader, "unlabeled": unlabeled_loader}, mode="min_size")
    trainer.fit(module, train_dataloaders=combined)
    metrics = {k: round(float(v), 4) for k, v in trainer.callback_metrics.items() if k.startswith("train/")}
    info = {"steps": epochs * per_epoch, "settings": fm.settings(), "last_epoch": metrics}
    return module.finished_classifier(), info


@dataclass(frozen=True)
class _StageData:
    """What the classifier stage's steps read, checked once by :func:`_stage_data`.

    Attributes:
        pool: the pool (its images, and its true labels where known).
        val: the validation set.
        val_labels: its labels.
        n_classes: classes of the task.
        images: the labeled images (``pool.images[labeled.indices]``).
        y: their labels.
        rest: pool indices of every other image (indices, never a copy of the pool).
        new: pool indices whose class probabilities the stage returns, or ``None``.
    """

    pool: ImageSet
    val: ImageSet
    val_labels: np.ndarray
    n_classes: int
    images: torch.Tensor
    y: np.ndarray
    rest: np.ndarray
    new: np.ndarray | None


@dataclass
class _FoldProbs:
    """Class probabilities from each of the k fold models (one entry per fold; empty where not asked)."""

    val: list[np.ndarray] = field(default_factory=list)
    rest: list[np.ndarray] = field(default_factory=list)
    new: list[np.ndarray] = field(default_factory=list)


def _classes_without_labels(y: np.ndarray, class_names: list[str]) -> list[str]:
    """The classes of which the labeled set has no image, with a warning when there are any."""
    counts = np.bincount(y, minlength=len(class_names))
    lacking = [class_names[c] for c in range(len(class_names)) if counts[c] == 0]
    if lacking:
        log.warning(
            "the chosen set has no image of %s: the classifier learns those classes from no label, "
            "so expect their F1 to be 0. Raise budget or check the labels.",
            lacking,
        )
    return lacking


def _stage_data(dm: PoolSource, chosen: np.ndarray, y: np.ndarray, predict: np.ndarray | None) -> _StageData:
    """The labeled images, the rest of the pool and the images to predict; the validation set must have labels."""
    pool, val = dm.pool, dm.val
    if len(val) == 0 or val.labels is None:
        raise ValueError(f"the validation set {val.source} has no readable labeled image; metrics need one")
    return _StageData(
        pool=pool,
        val=val,
        val_labels=val.labels,
        n_classes=len(dm.class_names),
        images=pool.images[torch.as_tensor(chosen)],
        y=y,
        rest=np.setdiff1d(np.arange(len(pool)), chosen),
        new=np.asarray(predict, dtype=np.int64) if predict is not None and len(predict) else None,
    )


def _train_folds(
    plan: ClassifierPlan, trainers: TrainerFactory, data: _StageData, predict_rest: bool, predict_new: bool
) -> _FoldProbs:
    """Train the k fold models in order (model ``i`` seeded ``plan.seed + i``, its fold held out for picking its
    best epoch; k = 1: one model on every label) and collect their probabilities of the validation set, of the
    rest of the pool (``predict_rest``) and of the new picks (``predict_new``)."""
    k, y = plan.folds, data.y
    folds = stratified_folds(y, k, seed=plan.seed)
    probs = _FoldProbs()
    for i in range(k):
        pl.seed_everything(plan.seed + i, workers=True, verbose=False)
        train_mask = folds != i if k > 1 else np.ones(len(y), dtype=bool)
        held = (data.images[~train_mask], y[~train_mask]) if k > 1 else None
        model = train_classifier(
            plan, trainers, f"classifier_fold{i}", data.n_classes,
            data.images[train_mask], y[train_mask], plan.epochs, held,
        )  # fmt: skip
        probs.val.append(_predict(model, data.val.images, f"Predicting validation (fold {i})"))
        if predict_rest:
            probs.rest.append(
                _predict(model, data.pool.images, f"Predicting unlabeled pool (fold {i})", data.rest)
            )
        if predict_new and data.new is not None:
            probs.new.append(
                _predict(model, data.pool.images, f"Predicting the new picks (fold {i})", data.new)
            )
    return probs


def _pseudo_label_step(
    plan: ClassifierPlan,
    trainers: TrainerFactory,
    timer: StageTimer,
    data: _StageData,
    rest_probs: list[np.ndarray],
) -> tuple[Any, dict[str, Any]]:
    """The paper's learner: pseudo-labels chosen from the fold models' mean ``rest_probs`` (of the pool at
    ``data.rest``), then a final classifier (seeded ``plan.seed + plan.folds``) on labeled + pseudo-labeled
    images. Returns it and what a person reads of the pseudo-labels."""
    with timer("pseudo_labeling"):
        pseudo = choose_pseudo_labels(np.mean(rest_probs, axis=0), plan.pseudo_size)
        for note in pseudo.notes:
            log.warning("pseudo-labels: %s", note)
        picked = data.rest[pseudo.indices]
    pool_labels = data.pool.labels
    report = {
        "count": len(picked),
        "class_histogram": np.bincount(pseudo.labels, minlength=data.n_classes).tolist(),
        "mean_confidence": float(pseudo.confidence.mean()) if len(picked) else None,
        "accuracy": float((pool_labels[picked] == pseudo.labels).mean())
        if pool_labels is not None and len(picked)
        else None,
        "notes": pseudo.notes,
    }
    with timer("classifier_final"):
        pl.seed_everything(plan.seed + plan.folds, workers=True, verbose=False)
        x_all = torch.cat([data.images, data.pool.images[torch.as_tensor(picked)]])
        y_all = np.concatenate([data.y, pseudo.labels])
        final = train_classifier(
            plan, trainers, "classifier_final", data.n_classes, x_all, y_all, plan.pseudo_epochs
        )
    return final, report


def _fixmatch_step(
    plan: ClassifierPlan, trainers: TrainerFactory, timer: StageTimer, data: _StageData
) -> tuple[Any, dict[str, Any]]:
    """FixMatch (seeded ``plan.seed + plan.folds``) on the labeled images and the rest of the pool; the pool's
    true labels, where known, only measure its pseudo-labels. Returns the finished classifier and its report."""
    with timer("classifier_fixmatch"):
        pl.seed_everything(plan.seed + plan.folds, workers=True, verbose=False)
        truth = data.pool.labels[data.rest] if data.pool.labels is not None else None
        return train_fixmatch(
            plan, trainers, data.n_classes, (data.images, data.y), data.pool.images, data.rest, truth
        )


def _evaluate_final(
    plan: ClassifierPlan, out_dir: Path, data: _StageData, final: ClassifierModel
) -> tuple[dict[str, Any], np.ndarray | None]:
    """The final model's metrics on the validation set and its probabilities of the new picks (``None`` without
    any); writes its weights to ``classifier_final.pt`` (rank 0)."""
    probs = _predict(final, data.val.images, "Predicting validation (final model)")
    new_probs = None
    if data.new is not None:
        new_probs = _predict(final, data.pool.images, "Predicting the new picks (final model)", data.new)
    after = classification_metrics(probs, data.val_labels, plan.positive_class)
    log.info("after (%s): %s", plan.learner, {n: v for n, v in after.items() if n != "confusion_matrix"})
    if is_rank_zero():
        with atomic_path(out_dir / "classifier_final.pt") as tmp:
            torch.save(final.state_dict(), tmp)
    return after, new_probs


def _save_confusion(
    out_dir: Path, learner: str, before: dict[str, Any], after: dict[str, Any] | None, class_names: list[str]
) -> None:
    """``confusion.png``: the fold ensemble's confusion matrix, beside the final model's when there is one."""
    matrices: dict[str, Any] = {"labeled images alone": before["confusion_matrix"]}
    if after is not None:
        matrices[f"with the pool ({learner})"] = after["confusion_matrix"]
    if is_rank_zero():
        save_confusion_matrices(out_dir / "confusion.png", matrices, class_names)


def classifier_stage(
    plan: ClassifierPlan,
    trainers: TrainerFactory,
    dm: PoolSource,
    labeled: LabeledSet,
    timer: StageTimer,
    predict: np.ndarray | None = None,
) -> ClassifierResult:
    """Labeled images -> k-fold classifiers (before) -> the learner on the rest of the pool (after: pseudo-labels
    and a final classifier, or FixMatch). With ``predict`` (pool indices), ``predictions`` holds the last model's
    class probabilities of those images (the final model's, else the fold ensemble's): a labeling tool's
    pre-annotations for the next round."""
    chosen = np.asarray(labeled.indices, dtype=np.int64)
    y = np.asarray(labeled.labels, dtype=np.int64)
    details: dict[str, Any] = {}
    lacking = _classes_without_labels(y, dm.class_names)
    if lacking:
        details["classes_missing_from_labels"] = lacking
    data = _stage_data(dm, chosen, y, predict)
    has_rest = len(data.rest) > 0
    predict_rest = plan.learner == "pseudo" and plan.pseudo_size > 0 and has_rest
    learns_from_pool = predict_rest or (plan.learner == "fixmatch" and has_rest)
    with timer("classifier_folds"):  # the folds predict the new picks only where no final model will
        fold_probs = _train_folds(plan, trainers, data, predict_rest, predict_new=not learns_from_pool)
    before = classification_metrics(np.mean(fold_probs.val, axis=0), data.val_labels, plan.positive_class)
    log.info(
        "before (labels alone): %s", {name: v for name, v in before.items() if name != "confusion_matrix"}
    )
    final: Any = None
    if predict_rest:
        final, details["pseudo"] = _pseudo_label_step(plan, trainers, timer, data, fold_probs.rest)
    elif learns_from_pool:
        final, details["fixmatch"] = _fixmatch_step(plan, trainers, timer, data)
    new_probs = fold_probs.new
    after = None
    if final is not None:
        after, final_new = _evaluate_final(plan, trainers.out_dir, data, final)
        if final_new is not None:
            new_probs = [final_new]
    _save_confusion(trainers.out_dir, plan.learner, before, after, dm.class_names)
    return ClassifierResult(
        labeled=len(chosen),
        folds=plan.folds,
        learner=plan.learner,
        pseudo_size=plan.pseudo_size if plan.learner == "pseudo" else None,
        before=before,
        after=after,
        details=details,
        predictions=np.mean(new_probs, axis=0) if new_probs else None,
    )
