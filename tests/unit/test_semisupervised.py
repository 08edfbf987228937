"""Fold splitting, pseudo-label choice and metrics with hand-computable answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from imgselect.semisupervised import (
    choose_pseudo_labels,
    classification_metrics,
    epochs_for,
    stratified_folds,
)


class TestFolds:
    def test_stratified_and_balanced(self) -> None:
        y = np.array([0] * 9 + [1] * 6)
        f = stratified_folds(y, 3, seed=0)
        for k in range(3):
            assert (y[f == k] == 0).sum() == 3 and (y[f == k] == 1).sum() == 2
        assert sorted(np.bincount(f).tolist()) == [5, 5, 5]

    def test_uneven_classes_spread_round_robin(self) -> None:
        y = np.array([0, 0, 0, 0, 1, 1])
        f = stratified_folds(y, 3, seed=1)
        assert sorted(np.bincount(f).tolist()) == [2, 2, 2]
        assert sorted(np.bincount(f[y == 0], minlength=3).tolist()) == [1, 1, 2]
        assert len(set(f[y == 1].tolist())) == 2  # the two 1s land in different folds

    def test_seeded(self) -> None:
        y = np.arange(30) % 2
        assert stratified_folds(y, 3, 4).tolist() == stratified_folds(y, 3, 4).tolist()
        assert stratified_folds(y, 3, 4).tolist() != stratified_folds(y, 3, 5).tolist()

    def test_errors(self) -> None:
        with pytest.raises(ValueError, match="cannot split 2 labeled images into folds=3"):
            stratified_folds(np.array([0, 1]), 3)
        with pytest.raises(ValueError, match="folds=0"):
            stratified_folds(np.array([0, 1]), 0)

    def test_one_fold_is_everything(self) -> None:
        assert stratified_folds(np.array([0, 1, 1]), 1).tolist() == [0, 0, 0]


class TestPseudoLabels:
    def test_top_per_class(self) -> None:
        p1 = np.array([0.9, 0.2, 0.6, 0.99, 0.1, 0.45, 0.8, 0.3])
        probs = np.stack([1 - p1, p1], 1)
        pl = choose_pseudo_labels(probs, 4)
        # class 0 (p1 < .5): confidences .8 (1), .9 (4), .55 (5), .7 (7) -> 4, 1
        # class 1: .9 (0), .6 (2), .99 (3), .8 (6) -> 3, 0
        assert pl.indices.tolist() == [4, 1, 3, 0]
        assert pl.labels.tolist() == [0, 0, 1, 1]
        np.testing.assert_allclose(pl.confidence, [0.9, 0.8, 0.99, 0.9])
        assert pl.notes == []

    def test_shortfall_is_not_filled_by_the_other_class(self) -> None:
        probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.7, 0.3], [0.2, 0.8]])
        pl = choose_pseudo_labels(probs, 6)
        assert pl.labels.tolist() == [0, 0, 0, 1]
        assert pl.notes == ["class 1: only 1 unlabeled images are predicted as it (quota 3)"]

    def test_three_classes_and_zero(self) -> None:
        probs = np.eye(3)[[0, 1, 2, 0, 1, 2]] * 0.7 + 0.1
        assert np.bincount(choose_pseudo_labels(probs, 6).labels).tolist() == [2, 2, 2]
        assert len(choose_pseudo_labels(probs, 0).indices) == 0


class TestMetrics:
    def test_binary_f1_of_positive_class(self) -> None:
        target = np.array([1, 1, 1, 0, 0, 0])
        p1 = np.array([0.9, 0.8, 0.2, 0.7, 0.1, 0.3])  # TP=2, FN=1, FP=1 -> F1 = 2/3
        m = classification_metrics(np.stack([1 - p1, p1], 1), target, positive_class=1)
        assert m["f1"] == pytest.approx(2 / 3, abs=1e-6)
        assert m["accuracy"] == pytest.approx(4 / 6, abs=1e-6)
        assert m["confusion_matrix"] == [[2, 1], [1, 2]]
        assert m["auroc"] == pytest.approx(7 / 9, abs=1e-6)  # 7 of 9 (positive, negative) pairs ranked right
        m0 = classification_metrics(np.stack([1 - p1, p1], 1), target, positive_class=0)
        assert m0["f1"] == pytest.approx(2 / 3, abs=1e-6)

    def test_macro_f1(self) -> None:
        target = np.array([0, 1, 2, 2])
        probs = np.eye(3)[[0, 1, 2, 1]]  # class 0 F1=1, class 1: P=.5 R=1 -> 2/3, class 2: P=1 R=.5 -> 2/3
        assert classification_metrics(probs, target)["f1"] == pytest.approx((1 + 2 / 3 + 2 / 3) / 3, abs=1e-6)


@pytest.mark.parametrize(
    ("steps", "epochs", "min_steps", "expected"),
    [
        (3, 15, 150, 50),  # budget 125 in 3 folds (83 images) at batch 32: 3 steps per epoch -> 50 epochs
        (5, 15, 150, 30),  # budget 200: 5 steps per epoch
        (21, 15, 150, 15),  # budget 1000: 21 steps per epoch already give 315 steps
        (1, 25, 0, 25),  # min_steps 0 = the paper's epoch count
        (1, 1, 7, 7),
    ],
)
def test_epochs_for_raises_epochs_only_for_small_sets(steps, epochs, min_steps, expected):
    got = epochs_for(steps, epochs, min_steps)
    assert got == expected
    assert got * steps >= min_steps


@pytest.mark.parametrize(("steps", "epochs", "min_steps"), [(0, 15, 0), (10, 0, 0), (10, 1, -1)])
def test_epochs_for_rejects_bad_values(steps, epochs, min_steps):
    with pytest.raises(ValueError, match="must be"):
        epochs_for(steps, epochs, min_steps)


@pytest.mark.parametrize(
    ("n", "shuffle", "last"), [(1025, True, 32), (1025, False, 1), (1024, True, 32), (1030, True, 6)]
)
def test_training_loader_never_ends_on_a_batch_of_one(n, shuffle, last):
    from imgselect.stages.classify import make_loader as _loader

    loader = _loader(torch.zeros(n, 3, 4, 4, dtype=torch.uint8), np.zeros(n, dtype=np.int64), 32, shuffle)
    sizes = [len(y) for _, y in loader]
    assert sizes[-1] == last and sum(sizes) == n - (1 if shuffle and n % 32 == 1 else 0)
    assert len(loader) == len(sizes)  # the steps per epoch that epochs_for counts (min_steps)
