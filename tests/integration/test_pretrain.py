"""``pretrain=ssl`` in a job: trained on the pool, its features select (``embedding=ssl``, pooled or read from its
stages), its backbone starts the classifier (``classifier.pretrained=ssl``), and the next jobs of the sweep reuse
it from the cache."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from omegaconf import DictConfig

from imgselect.run.pipeline import run
from tests.conftest import TINY

SSL = [
    "pretrain=ssl",
    "fit.pretrain.epochs=2",
    "pretrain.batch_size=64",
    "embedding=ssl",
    "selector=typiclust",
]


def test_pretraining_serves_selection_and_classifier_once(
    compose_cfg: Callable[..., DictConfig], tmp_path: Path
) -> None:
    run(compose_cfg(*TINY, *SSL, "classifier.pretrained=ssl", "folds=2", "pseudo.size=0"))
    out = tmp_path / "out"
    r = json.loads((out / "result.json").read_text())
    pre = r["pretrain"]
    assert pre["cache_hit"] is False and pre["dim"] == 1280
    assert 0.0 <= pre["knn_accuracy"] <= 1.0 and pre["knn_holdout"] == 60  # a fifth of the 300-image pool
    assert pre["ssl/train_loss"] > 0
    assert r["embedding"] == "ssl" and r["embedding_info"]["from"] == "pretrain"
    assert r["classifier_init"] == "ssl" and r["metrics"]["before"]["f1"] >= 0
    assert (out / "ssl_backbone.safetensors").stat().st_size > 1_000_000  # mobilenetv2_100's ~2.2M weights
    assert json.loads((out / "ssl_backbone.json").read_text())["settings"]["epochs"] == 2
    assert "pretrain" in r["timings_s"]

    # the next job of a sweep (another budget, no classifier) trains nothing: the cache has the pretraining
    run(compose_cfg(*TINY, *SSL, "budget=7", "~classifier"))
    r2 = json.loads((out / "result.json").read_text())
    assert r2["pretrain"]["cache_hit"] is True and "pretrain" not in r2["timings_s"]
    assert r2["pretrain"]["knn_accuracy"] == pre["knn_accuracy"]

    # embedding.features=stages reads the cached backbone's stages as well: no second pretraining
    run(compose_cfg(*TINY, *SSL, "embedding.features=stages", "budget=7", "~classifier"))
    r3 = json.loads((out / "result.json").read_text())
    assert r3["pretrain"]["cache_hit"] is True and "pretrain" not in r3["timings_s"]
    info = r3["embedding_info"]
    assert info["from"] == "pretrain" and info["features"] == "stages"
    assert info["dim"] == 24 + 32 + 96 + 320 + 1280  # mobilenetv2_100's stages from stride 4 on, and its head
    assert info["knn_holdout"] == 60 and 0.0 <= info["knn_accuracy"] <= 1.0
    assert sum(r3["selected_class_histogram"].values()) == 7


@pytest.mark.parametrize("wanted", [["embedding=ssl", "selector=typiclust"], ["classifier.pretrained=ssl"]])
def test_ssl_without_pretraining_fails_before_any_work(
    compose_cfg: Callable[..., DictConfig], wanted: list[str]
) -> None:
    with pytest.raises(ValueError, match="add pretrain=ssl"):
        run(compose_cfg(*TINY, "data.data_dir=/nonexistent", *wanted))


def test_byol_pretraining_starts_the_classifier_and_is_cached_apart_from_simclr(
    compose_cfg: Callable[..., DictConfig], tmp_path: Path
) -> None:
    byol = ["pretrain=byol", *SSL[1:]]
    run(compose_cfg(*TINY, *byol, "classifier.pretrained=ssl", "folds=2", "pseudo.size=0"))
    out = tmp_path / "out"
    r = json.loads((out / "result.json").read_text())
    pre = r["pretrain"]
    assert pre["cache_hit"] is False and pre["settings"]["momentum"] == 0.99 and pre["dim"] == 1280
    assert 0 <= pre["ssl/train_loss"] <= 4 and 0.0 <= pre["knn_accuracy"] <= 1.0  # BYOL's loss: 2 - 2 cos
    assert r["classifier_init"] == "ssl" and r["metrics"]["before"]["f1"] >= 0
    assert (out / "ssl_backbone.safetensors").stat().st_size > 1_000_000
    # SimCLR on the same pool and seed is another entry of the cache, not BYOL's read back
    run(compose_cfg(*TINY, *SSL, "budget=7", "~classifier"))
    simclr = json.loads((out / "result.json").read_text())["pretrain"]
    assert simclr["cache_hit"] is False and simclr["cache_key"] != pre["cache_key"]
    assert "momentum" not in simclr["settings"] and "temperature" in simclr["settings"]
