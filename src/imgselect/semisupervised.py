"""k-fold splitting, pseudo-label choice and classification metrics, as plain functions on arrays."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import torch
from torchmetrics.functional.classification import (
    binary_auroc,
    binary_f1_score,
    multiclass_accuracy,
    multiclass_auroc,
    multiclass_confusion_matrix,
    multiclass_f1_score,
)

log = logging.getLogger(__name__)


def stratified_folds(labels: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """Assign each sample to one of ``k`` folds, each class spread as evenly as possible.

    Within each class the samples are shuffled (seeded) and dealt round-robin, continuing where the
    previous class stopped, so fold sizes differ by at most one.

    Returns:
        ``(n,)`` int64 fold of each sample.

    Raises:
        ValueError: ``k < 1`` or fewer samples than folds.
    """
    labels = np.asarray(labels)
    n = len(labels)
    if k < 1:
        raise ValueError(f"folds={k} must be at least 1")
    if n < k:
        raise ValueError(f"cannot split {n} labeled images into folds={k}; lower folds or raise budget")
    rng = np.random.default_rng(seed)
    folds = np.empty(n, dtype=np.int64)
    start = 0
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        folds[members] = (start + np.arange(len(members))) % k
        start = (start + len(members)) % k
    return folds


@dataclass
class PseudoLabels:
    """Pseudo-labels chosen from the unlabeled pool.

    Attributes:
        indices: positions in the array of predictions that was given.
        labels: predicted class of each.
        confidence: probability of that class.
        notes: shortfalls a person should know about.
    """

    indices: np.ndarray
    labels: np.ndarray
    confidence: np.ndarray
    notes: list[str]


def choose_pseudo_labels(probs: np.ndarray, size: int) -> PseudoLabels:
    """The ``size // C`` most confident predictions of each class (the paper: top 500 per class of 1,000).

    A sample counts for the class it is predicted as (argmax). When a class has fewer predictions than
    its quota, all of them are taken and a note says so; the other classes do not fill in for it, so
    pseudo-labels never shift the class balance towards the majority prediction.

    Args:
        probs: ``(n, C)`` class probabilities.
        size: total pseudo-labels wanted; 0 gives none.
    """
    probs = np.asarray(probs)
    n, n_classes = probs.shape
    if size < 0:
        raise ValueError(f"pseudo.size={size} must be >= 0")
    per_class = size // n_classes
    pred = probs.argmax(1)
    conf = probs[np.arange(n), pred]
    idx: list[np.ndarray] = []
    notes: list[str] = []
    for c in range(n_classes):
        cand = np.flatnonzero(pred == c)
        order = np.lexsort((cand, -conf[cand]))  # most confident first, then lowest index
        take = cand[order[:per_class]]
        if len(take) < per_class:
            notes.append(
                f"class {c}: only {len(take)} unlabeled images are predicted as it (quota {per_class})"
            )
        idx.append(take)
    chosen = np.concatenate(idx) if idx else np.empty(0, dtype=np.int64)
    return PseudoLabels(chosen.astype(np.int64), pred[chosen].astype(np.int64), conf[chosen], notes)


def classification_metrics(
    probs: np.ndarray, target: np.ndarray, positive_class: int = 1
) -> dict[str, object]:
    """F1, accuracy, AUROC and the confusion matrix.

    Two classes: F1 and AUROC of ``positive_class`` (the paper reports F1); more: macro F1 and AUROC.
    """
    p = torch.as_tensor(np.asarray(probs), dtype=torch.float32)
    t = torch.as_tensor(np.asarray(target), dtype=torch.long)
    n_classes = p.shape[1]
    pred = p.argmax(1)
    acc = multiclass_accuracy(pred, t, num_classes=n_classes, average="micro")
    cm = multiclass_confusion_matrix(pred, t, num_classes=n_classes)
    if n_classes == 2:
        pos = (t == positive_class).long()
        f1 = binary_f1_score((pred == positive_class).long(), pos)
        auroc = (
            binary_auroc(p[:, positive_class], pos)
            if 0 < int(pos.sum()) < len(pos)
            else torch.tensor(float("nan"))
        )
    else:
        f1 = multiclass_f1_score(pred, t, num_classes=n_classes, average="macro")
        auroc = multiclass_auroc(p, t, num_classes=n_classes, average="macro")
    return {
        "f1": round(float(f1), 6),
        "accuracy": round(float(acc), 6),
        "auroc": round(float(auroc), 6),
        "confusion_matrix": cm.tolist(),
    }


def epochs_for(steps_per_epoch: int, epochs: int, min_steps: int = 0) -> int:
    """Epochs to train: ``epochs``, raised until there are at least ``min_steps`` optimizer steps.

    ``steps_per_epoch`` is the training loader's length. With few labels a small batch count per epoch leaves
    a from-scratch network barely trained (budget 125 in 3 folds at batch 128: 1 step per epoch);
    ``min_steps`` lifts small sets and leaves large ones alone.
    """
    if steps_per_epoch <= 0:
        raise ValueError(f"epochs_for: steps_per_epoch={steps_per_epoch} must be positive")
    if epochs < 1 or min_steps < 0:
        raise ValueError(f"epochs={epochs} must be >= 1 and min_steps={min_steps} >= 0")
    return max(epochs, math.ceil(min_steps / steps_per_epoch))
