"""The learners of the `semi` group through the whole job: what result.json says of each."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from omegaconf import DictConfig

from imgselect.run.pipeline import run
from tests.conftest import TINY

FIXMATCH = ["semi=fixmatch", "semi.steps=4", "semi.steps_per_epoch=2", "semi.batch_size=4", "semi.mu=2"]


@pytest.mark.parametrize("learner", ["fixmatch", "none", "pseudo"])
def test_every_learner_keeps_before_and_after_meaning_the_same(
    learner: str, compose_cfg: Callable[..., DictConfig], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    overrides = FIXMATCH if learner == "fixmatch" else [f"semi={learner}"]
    # pseudo.size (1000, above the 288 unlabeled images) is no setting of the other learners: no warning of it
    size = [] if learner == "pseudo" else ["pseudo.size=1000"]
    with caplog.at_level("WARNING", logger="imgselect.run.settings"):
        run(compose_cfg(*TINY, "selector=random", "folds=2", *overrides, *size))
    assert "pseudo.size" not in caplog.text
    result = json.loads((tmp_path / "out" / "result.json").read_text())
    assert result["classifier"]["learner"] == learner
    assert result["metrics"]["before"]["accuracy"] is not None  # the labeled images alone, every learner
    if learner == "none":
        assert result["metrics"]["after"] is None and result["pseudo_size"] is None
    else:
        assert 0 <= result["metrics"]["after"]["accuracy"] <= 1
    if learner == "fixmatch":
        assert result["classifier"]["fixmatch"]["steps"] == 4
        settings = result["classifier"]["fixmatch"]["settings"]  # conf/semi/fixmatch.yaml's, as run
        assert settings["mu"] == 2 and settings["threshold"] == 0.95 and settings["flex"] is True
        assert result["pseudo_size"] is None and "classifier_fixmatch" in result["timings_s"]
        assert (tmp_path / "out" / "classifier_final.pt").is_file()
    if learner == "pseudo":
        assert result["pseudo_size"] == 40 and 0 < result["classifier"]["pseudo"]["count"] <= 40


def test_fixmatch_settings_that_cannot_work_are_named(compose_cfg: Callable[..., DictConfig]) -> None:
    with pytest.raises(ValueError, match="semi.mu=0 must be at least 1"):
        run(compose_cfg(*TINY, *FIXMATCH, "semi.mu=0"))
