"""check_settings: settings that cannot work fail before training, naming the value and what to do."""

from __future__ import annotations

from typing import Any

import pytest

from imgselect.run.settings import check_settings
from imgselect.selection import check_budget

OK: dict[str, Any] = dict(
    budget=10, n_pool=100, folds=3, pseudo_size=50, image_size=64, n_classes=2, source="data/pool", halvings=3
)


def _check(**changes: Any) -> None:
    check_settings(**{**OK, **changes})


class TestCheckSettings:
    def test_the_paper_and_the_edges_pass(self) -> None:
        _check()
        _check(budget=100, pseudo_size=0, folds=100)  # every image labeled, one per fold
        _check(pseudo_size=90)  # every image left unlabeled
        _check(folds=None, pseudo_size=None, n_classes=1)  # ~classifier: folds, pseudo.size, classes unused
        _check(image_size=32, halvings=2)  # experiment=cpu
        _check(image_size=30, halvings=0)  # no autoencoder: any size

    @pytest.mark.parametrize(
        ("changes", "message"),
        [
            ({"budget": 0}, r"budget=0 must be at least 1"),
            ({"budget": 101}, r"budget=101 exceeds the pool \(100 readable images in data/pool\)"),
            ({"n_classes": 1}, r"the task has 1 class; a classifier needs 2 or more"),
            ({"folds": 0}, r"folds=0 must be at least 1"),
            (
                {"folds": 11},
                r"folds=11 exceeds budget=10: each fold needs at least one labeled image; set folds to at most 10",
            ),
            ({"pseudo_size": -1}, r"pseudo\.size=-1 must be 0 \(no pseudo-labels\) or more"),
            (
                {"pseudo_size": 1},
                r"pseudo\.size=1 is split evenly over 2 classes .* set it to 0 or at least 2",
            ),
            ({"image_size": 4, "halvings": 0}, r"image_size=4 is too small; use 8 or more"),
            (
                {"image_size": 60},
                r"image_size=60 must be a multiple of 8: the autoencoder halves the image 3 times "
                r"\(once per entry of autoencoder\.channels\); use 56 or 64",
            ),
            ({"image_size": 30, "halvings": 2}, r"image_size=30 must be a multiple of 4: .*use 28 or 32"),
        ],
    )
    def test_errors_name_the_value_and_the_fix(self, changes: dict[str, Any], message: str) -> None:
        with pytest.raises(ValueError, match=message):
            _check(**changes)


def test_pseudo_size_above_the_unlabeled_images_warns(caplog: pytest.LogCaptureFixture) -> None:
    """The default pseudo.size (1000) keeps working on a small folder: a warning, not an error."""
    with caplog.at_level("WARNING", logger="imgselect.run.settings"):
        check_settings(**{**OK, "pseudo_size": 91})
    assert (
        "pseudo.size=91 exceeds the images left unlabeled (100 in data/pool - 10 labeled = 90)" in caplog.text
    )


def test_budget_counts_only_the_images_left_to_choose() -> None:
    """Labeled images and near-duplicates are set aside: the budget must fit what is left."""
    _check(n_known=20, n_excluded=95, budget=5, pseudo_size=0)  # 100 - 95 = 5 left: fits
    with pytest.raises(ValueError, match=r"budget=6 exceeds the 5 images left to choose from in data/pool"):
        _check(n_known=20, n_excluded=95, budget=6, pseudo_size=0)
    _check(n_known=20, n_excluded=100, budget=0, pseudo_size=0)  # train on the labels only


def test_check_budget_names_the_budget_and_the_pool() -> None:
    """The rule check_settings owns (selectors assume a budget that passed it)."""
    with pytest.raises(ValueError, match=r"budget=0 must be at least 1"):
        check_budget(0, 10)
    with pytest.raises(ValueError, match=r"budget=500 exceeds the pool \(312 readable images in data/pool\)"):
        check_budget(500, 312, "data/pool")
    with pytest.raises(TypeError):
        check_budget(2.5, 10)  # type: ignore[arg-type]
    check_budget(10, 10)
