"""The selection probe's pure parts (benchmarks/selection_probe.py): features, scores, paired gains, the choice."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import selection_probe as sp


def test_probe_features_are_standardised_on_the_pool_and_val_projected_alike() -> None:
    rng = np.random.default_rng(0)
    pool = rng.normal(size=(200, 8)) * np.arange(1, 9)
    zp, zv = sp.fit_probe_features(pool, pool[:10], dim=3)
    assert zp.shape == (200, 3) and zv.shape == (10, 3)
    np.testing.assert_allclose(zp.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(zp.std(0), 1, atol=1e-4)
    np.testing.assert_allclose(zv, zp[:10], atol=1e-5)  # the same images get the same features


def test_probe_scores_separable_two_classes() -> None:
    x = np.array([[-2.0], [-1.0], [1.0], [2.0]])
    y = np.array([0, 0, 1, 1])
    s = sp.probe_scores(x, y, np.array([[-3.0], [3.0]]), np.array([0, 1]), n_classes=2)
    assert s == {"accuracy": 1.0, "f1": 1.0, "classes_covered": 2, "one_class": False}


def test_probe_scores_one_class_predicts_it() -> None:
    x_val, y_val = np.zeros((4, 2)), np.array([0, 1, 1, 1])
    s = sp.probe_scores(np.zeros((3, 2)), np.array([1, 1, 1]), x_val, y_val, n_classes=2)
    assert s["one_class"] and s["classes_covered"] == 1
    assert s["accuracy"] == 0.75  # everything predicted Shirt (class 1): 3 of 4 right
    assert s["f1"] == pytest.approx(2 * 0.75 * 1.0 / 1.75)  # precision 3/4, recall 1


def test_probe_scores_classes_missing_from_the_chosen_set_keep_their_columns() -> None:
    x = np.array([[0.0, 0.0], [0.1, 0.0], [5.0, 5.0], [5.1, 5.0]])
    s = sp.probe_scores(x, np.array([0, 0, 2, 2]), x, np.array([0, 0, 2, 1]), n_classes=3)
    assert s["accuracy"] == 0.75 and s["classes_covered"] == 2


def test_paired_gain_pairs_by_seed() -> None:
    g = sp.paired_gain({0: 0.60, 1: 0.50, 2: 0.70, 3: 0.9}, {0: 0.50, 1: 0.55, 2: 0.70})  # seed 3 unpaired
    assert g is not None
    assert g["pairs"] == 3 and g["wins"] == 1  # a tie is no win
    assert g["mean"] == pytest.approx((10 - 5 + 0) / 3)
    assert sp.format_gain(g) == "+1.7 (1/3)"
    assert sp.paired_gain({0: 0.5}, {1: 0.5}) is None


def _run(sel: str, emb: str, budget: int, seed: int, acc: float) -> dict[str, Any]:
    return {
        "task": "two", "split": "train_holdout", "seed": seed, "selector": sel, "embedding": emb,
        "budget": budget, "accuracy": acc, "f1": acc, "classes_covered": 2, "one_class": False,
    }  # fmt: skip


def test_summarise_and_choose_by_mean_gain_over_the_regime() -> None:
    runs = []
    for seed in (0, 1):
        for b in (20, 500):
            runs.append(_run("random", sp.NO_EMBEDDING, b, seed, 0.70))
            # ae on pixels: +10 points at 20, -10 at 500; kcenter on pixels: +2 at both
            runs.append(_run("ae", "pixels", b, seed, 0.80 if b == 20 else 0.60))
            runs.append(_run("kcenter", "pixels", b, seed, 0.72))
    runs.append(_run("typiclust", "pixels", 20, 0, 0.99))  # not measured at 500: never chosen overall
    cells = sp.summarise(runs)
    c = cells["two|train_holdout|ae|pixels|20"]
    assert c["accuracy"]["mean"] == pytest.approx(0.80) and c["accuracy"]["per_seed"] == [0.80, 0.80]
    assert c["accuracy_gain"]["mean"] == pytest.approx(10.0) and c["accuracy_gain"]["wins"] == 2
    assert "accuracy_gain" not in cells["two|train_holdout|random|-|20"]
    best, gain = sp.choose(cells, "two", "train_holdout", (20,))  # type: ignore[misc]
    assert best == ("typiclust", "pixels") and gain == pytest.approx(29.0)
    best, gain = sp.choose(cells, "two", "train_holdout", (20, 500))  # type: ignore[misc]
    assert best == ("kcenter", "pixels") and gain == pytest.approx(2.0)
    assert sp.choose(cells, "two", "test", (20,)) is None
