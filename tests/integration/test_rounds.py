"""rounds=N: select -> reveal -> train, N times in one job; later rounds choose with the last classifier."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from omegaconf import DictConfig

from imgselect.run.pipeline import run
from tests.conftest import TINY


def test_four_oracle_rounds_write_per_round_results_and_one_curve(
    compose_cfg: Callable[..., DictConfig], tmp_path: Path
) -> None:
    run(compose_cfg(*TINY, "selector=margin", "embedding=pixels", "budget=6", "rounds=4", "folds=2"))
    out = tmp_path / "out"
    rounds = [json.loads((out / f"round_{r}" / "result.json").read_text()) for r in range(1, 5)]
    picks = [
        {row["image_id"] for row in csv.DictReader((out / f"round_{r}" / "selection.csv").open())}
        for r in range(1, 5)
    ]
    assert all(len(p) == 6 for p in picks)
    assert len(set().union(*picks)) == 24  # no image is chosen twice across rounds
    assert [r["classifier"]["labeled"] for r in rounds] == [6, 12, 18, 24]  # each round trains on all so far
    assert [r["labels"]["known"] for r in rounds] == [0, 6, 12, 18]  # the earlier rounds, known
    assert rounds[0]["selection_stats"]["round_rule"] == "typical"  # no classifier yet
    assert all(r["selection_stats"]["round_rule"] == "margin" for r in rounds[1:])
    table = list(csv.DictReader((out / "rounds.csv").open()))
    assert [int(row["labels"]) for row in table] == [6, 12, 18, 24]
    assert (out / "rounds.png").stat().st_size > 5000
    top = json.loads((out / "result.json").read_text())
    assert top["budget"] == 24 and len(top["rounds"]) == 4


def test_rounds_need_the_oracle_and_a_classifier(
    compose_cfg: Callable[..., DictConfig], tmp_path: Path
) -> None:
    labels = tmp_path / "filled.csv"
    labels.write_text("image_id,content_hash,label\n")
    with pytest.raises(ValueError, match="rounds=3 runs every round in one job, so it needs labels=oracle"):
        run(compose_cfg(*TINY, "rounds=3", "labels=file", f"labels.path={labels}"))
    with pytest.raises(ValueError, match="drop ~classifier"):
        run(compose_cfg(*TINY, "rounds=3", "~classifier"))
