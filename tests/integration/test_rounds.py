"""rounds=N: select -> reveal -> train, N times in one job; later rounds choose with the last classifier."""

from __future__ import annotations

import csv
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from omegaconf import DictConfig

from imgselect.io.artifacts import read_selection_csv
from imgselect.run.pipeline import run
from tests.conftest import ROOT, TINY
from tests.integration.test_labeling_roundtrip import _common

CROPS = ROOT / "tests" / "fixtures" / "crops"


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


def test_a_persons_next_round_trains_first_and_chooses_where_that_model_is_least_sure(
    compose_cfg: Callable[..., DictConfig], tmp_path: Path
) -> None:
    """labels=file selector=margin: one command per round; the classifier trains on the labels so far, then
    the selector reads its predictions of the pool, and the new picks carry them as pre-annotations."""
    pool = tmp_path / "pool"
    shutil.copytree(CROPS / "pool", pool)
    choose = [*_common(pool, classifier=False), "selector=margin", "embedding=pixels"]
    choose = [o for o in choose if o != "selector=random"]
    run(compose_cfg(*choose, "budget=6"))  # round 1: no labels yet, TypiClust's typical picks
    out = tmp_path / "out"
    first = json.loads((out / "result.json").read_text())
    assert first["selection_stats"]["round_rule"] == "typical"
    template = out / "labels_template.csv"
    rows = list(csv.reader(template.open(newline="")))
    labels = ["staff", "customer"] * 3
    with template.open("w", newline="") as f:
        csv.writer(f).writerows([rows[0], *[[*r[:3], lab] for r, lab in zip(rows[1:], labels, strict=True)]])
    train = [o for o in _common(pool) if o != "selector=random"]
    run(
        compose_cfg(
            *train,
            "selector=margin",
            "embedding=pixels",
            "labels=file",
            f"labels.path={template}",
            "budget=4",
        )
    )
    second = json.loads((out / "result.json").read_text())
    assert second["selection_stats"]["round_rule"] == "margin"
    assert second["classifier"]["labeled"] == 6 and second["budget"] == 4
    picked = {r["image_id"] for r in read_selection_csv(out / "selection.csv")}
    assert len(picked) == 4 and not picked & {r[2] for r in rows[1:]}  # new images only
    tasks = json.loads((out / "label_studio" / "tasks.json").read_text())
    assert len(tasks) == 4 and all(t["predictions"] for t in tasks)  # pre-annotated by the same model


def test_a_rounds_value_that_is_no_number_is_named(compose_cfg: Callable[..., DictConfig]) -> None:
    with pytest.raises(ValueError, match="rounds='four' must be a whole number"):
        run(compose_cfg(*TINY, "rounds=four"))
    with pytest.raises(ValueError, match="rounds=0 must be at least 1"):
        run(compose_cfg(*TINY, "rounds=0"))
