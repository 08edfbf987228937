"""Re-running a job in its own folder, as a person labeling in rounds does (issue 20): the filled labels
file survives, earlier outputs are kept, and a re-run after a changed input recomputes instead of resuming."""

from __future__ import annotations

import csv
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from omegaconf import DictConfig

from imgselect.run.jobs import resume_or_run
from imgselect.run.pipeline import run
from tests.conftest import ROOT
from tests.integration.test_labeling_roundtrip import _common

CROPS = ROOT / "tests" / "fixtures" / "crops"


def _select(pool: Path, *extra: str) -> list[str]:
    """Choose only (``~classifier``) from ``pool``, as the labeling round trip's first round does."""
    return [*_common(pool, classifier=False), *extra]


def _fill(template: Path, labels: list[str]) -> None:
    with template.open(newline="") as f:
        rows = list(csv.reader(f))
    with template.open("w", newline="") as f:
        csv.writer(f).writerows([rows[0], *[[*r[:3], lab] for r, lab in zip(rows[1:], labels, strict=True)]])


def _result(out: Path) -> dict:
    return json.loads((out / "result.json").read_text())


@pytest.fixture
def pool(tmp_path: Path) -> Path:
    pool = tmp_path / "pool"
    shutil.copytree(CROPS / "pool", pool)
    return pool


def test_a_filled_template_survives_a_rerun_in_its_own_folder(
    compose_cfg: Callable[..., DictConfig], tmp_path: Path, pool: Path
) -> None:
    out = tmp_path / "out"
    resume_or_run(compose_cfg(*_select(pool), "budget=6"), run)  # round 1 chooses 6
    template = out / "labels_template.csv"
    first_selection = (out / "selection.csv").read_text()
    _fill(template, ["staff", "customer", "staff", "customer", "staff", ""])
    filled = template.read_bytes()

    round2 = _select(pool, "labels=file", f"labels.path={template}", "budget=3")
    resume_or_run(
        compose_cfg(*round2), run
    )  # round 2 in the same folder, reading the file it would have written
    assert template.read_bytes() == filled  # before the fix: a blank template over the person's labels
    new_templates = sorted(out.glob("labels_template-*.csv"))
    assert len(new_templates) == 1
    assert len(new_templates[0].read_text().splitlines()) == 1 + 3  # the next three to label
    earlier = sorted((out / "earlier").iterdir())
    assert len(earlier) == 1
    assert (earlier[0] / "selection.csv").read_text() == first_selection  # round 1's outputs kept
    assert (earlier[0] / "labels_template.csv").read_bytes() == filled
    assert (earlier[0] / "label_studio" / "tasks.json").is_file()
    assert _result(out)["labels"]["known"] == 5

    resume_or_run(compose_cfg(*round2), run)  # the same command again: resumes, touches nothing
    assert template.read_bytes() == filled
    assert len(list((out / "earlier").iterdir())) == 1


def test_a_rerun_after_an_edited_labels_file_recomputes(
    compose_cfg: Callable[..., DictConfig], tmp_path: Path, pool: Path
) -> None:
    out, labels = tmp_path / "out", tmp_path / "labels.csv"
    resume_or_run(compose_cfg(*_select(pool), "budget=6"), run)
    shutil.copy(out / "labels_template.csv", labels)
    _fill(labels, ["staff", "customer", "staff", "customer", "staff", "customer"])
    round2 = _select(pool, "labels=file", f"labels.path={labels}", "budget=2")
    resume_or_run(compose_cfg(*round2), run)
    assert _result(out)["labels"]["known"] == 6
    _fill(labels, ["staff", "customer", "staff", "", "", ""])  # the person takes three labels back
    resume_or_run(compose_cfg(*round2), run)
    result = _result(out)
    assert result["labels"]["known"] == 3  # before the fix: "already finished", known 6
    assert set(result["inputs"]) == {"labels.path", "data.pool_dir", "data.val"}


def test_a_rerun_after_the_pool_grew_recomputes(
    compose_cfg: Callable[..., DictConfig], tmp_path: Path, pool: Path
) -> None:
    out = tmp_path / "out"
    cfg = _select(pool, "budget=4")
    resume_or_run(compose_cfg(*cfg), run)
    n = _result(out)["pool_size"]
    for i, f in enumerate(sorted(pool.glob("*.jpg"))[:5]):
        shutil.copy(f, pool / f"added_{i}.jpg")
    resume_or_run(compose_cfg(*cfg), run)
    assert _result(out)["pool_size"] == n + 5  # before the fix: the old result.json, pool_size n
    assert len(list((out / "earlier").glob("*/result.stale-*.json"))) == 1


def test_unsafe_weights_fail_before_the_autoencoder_trains(
    compose_cfg: Callable[..., DictConfig], tmp_path: Path, pool: Path
) -> None:
    import os

    import torch

    evil = tmp_path / "evil.pth"
    torch.save({"w": torch.zeros(1), "f": os.getcwd}, evil)
    cfg = compose_cfg(*_common(pool), "budget=4", "selector=ae", f"classifier.pretrained={evil}")
    with pytest.raises(ValueError, match=r"classifier.pretrained=.*evil.pth cannot be read"):
        run(cfg)
    assert not (tmp_path / "cache").exists()  # before the fix: found after the autoencoder had trained
