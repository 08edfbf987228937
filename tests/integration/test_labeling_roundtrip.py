"""The labeling round trip end to end on a small pool of real person crops: select -> a person's labels (a
filled CSV, or a real Label Studio export) -> classifier, with the pool folder moved in between."""

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
from tests.conftest import ROOT

FIXTURES = ROOT / "tests" / "fixtures"
CROPS = FIXTURES / "crops"
EXPORT = FIXTURES / "label_studio" / "export.json"


def _common(pool: Path, classifier: bool = True) -> list[str]:
    data = [
        "data=folder",
        f"data.pool_dir={pool}",
        f"data.val={CROPS / 'val'}",
        "image_size=32",
        "selector=random",
        "progress=none",
    ]
    if not classifier:
        return [*data, "~classifier"]
    return [
        *data,
        "folds=2",
        "fit.classifier.epochs=1",
        "fit.classifier.min_steps=0",
        "pseudo.size=4",
        "pseudo.epochs=1",
    ]


def _moved_pool(tmp_path: Path) -> tuple[Path, Path]:
    """The fixture pool copied to ``A/pool``; and where the test will move it (``B/moved``)."""
    pool = tmp_path / "A" / "pool"
    shutil.copytree(CROPS / "pool", pool)
    return pool, tmp_path / "B" / "moved"


def test_csv_labels_survive_a_moved_folder_and_train_the_classifier(
    compose_cfg: Callable[..., DictConfig], tmp_path: Path
) -> None:
    pool, moved = _moved_pool(tmp_path)
    run(compose_cfg(*_common(pool, classifier=False), "budget=6"))  # round 1: choose
    out = tmp_path / "out"
    chosen = read_selection_csv(out / "selection.csv")
    template = out / "labels_template.csv"
    with template.open(newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["tile", "content_hash", "image_id", "label"]
    assert [r[1] for r in rows[1:]] == [r["content_hash"] for r in chosen]  # tile n = row n of selection.csv
    labels = ["staff", "customer", "staff", "customer", "staff", ""]  # the person leaves tile 6 for later
    filled = tmp_path / "labels.csv"
    with filled.open("w", newline="") as f:
        csv.writer(f).writerows([rows[0], *[[*r[:3], lab] for r, lab in zip(rows[1:], labels, strict=True)]])

    shutil.move(pool, moved)  # every absolute path in selection.csv is now wrong
    shutil.rmtree(tmp_path / "cache", ignore_errors=True)  # and the cache is cleared
    run(compose_cfg(*_common(moved), "labels=file", f"labels.path={filled}", "budget=0"))  # train only
    result = json.loads((out / "result.json").read_text())
    assert result["labels"]["known"] == 5
    assert result["labels"]["not_labeled_yet"] == [f"tile 6: {chosen[5]['content_hash']}"]
    assert result["classifier"]["labeled"] == 5
    assert result["metrics"]["before"]["accuracy"] is not None
    assert result["budget"] == 0  # nothing new chosen


@pytest.mark.skipif(not EXPORT.is_file(), reason="the saved Label Studio export is missing")
def test_label_studio_export_trains_and_starts_the_next_round(
    compose_cfg: Callable[..., DictConfig], tmp_path: Path
) -> None:
    """The fixture is a real Label Studio export of tasks imgselect wrote for this pool
    (scripts/label_studio_roundtrip.py); here the pool sits in another folder than when it was labeled."""
    pool, moved = _moved_pool(tmp_path)
    shutil.move(pool, moved)
    export = json.loads(EXPORT.read_text())
    labeled = {
        t["data"]["content_hash"] for t in export if any(not a.get("was_cancelled") for a in t["annotations"])
    }
    assert 0 < len(labeled) < len(export)  # the export holds labeled and unlabeled tasks
    run(compose_cfg(*_common(moved), "labels=file", f"labels.path={EXPORT}", "budget=5"))
    out = tmp_path / "out"
    result = json.loads((out / "result.json").read_text())
    assert result["labels"]["known"] == len(labeled)
    assert len(result["labels"]["not_labeled_yet"]) == len(export) - len(labeled)
    assert result["classifier"]["labeled"] == len(labeled)
    # round 2: five new images, none of them labeled before
    new = read_selection_csv(out / "selection.csv")
    assert len(new) == 5 and not {r["content_hash"] for r in new} & labeled
    assert result["selection_stats"]["excluded_labeled"] == len(labeled)
    # and its tasks carry the classifier's guesses as pre-annotations
    tasks = json.loads((out / "label_studio" / "tasks.json").read_text())
    assert len(tasks) == 5
    for t in tasks:
        [p] = t["predictions"]
        assert p["result"][0]["value"]["choices"][0] in result["classes"]
        assert 0.0 <= p["score"] <= 1.0
