"""Whole jobs on real Fashion-MNIST (a few hundred images, one epoch) and on a generated folder."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
from omegaconf import DictConfig
from PIL import Image

from imgselect.io.artifacts import read_selection_csv
from imgselect.run.pipeline import run
from tests.conftest import SELECT_ONLY, TINY


def _check_selection(out: Path, budget: int, pool_size: int) -> list[dict[str, str]]:
    rows = read_selection_csv(out / "selection.csv")
    idx = [int(r["pool_index"]) for r in rows]
    assert len(idx) == budget and len(set(idx)) == budget
    assert all(0 <= i < pool_size for i in idx)
    with Image.open(out / "selection.png") as im:
        assert im.size[0] >= 48
    return rows


def test_ae_job_then_cache_hit(compose_cfg: Callable[..., DictConfig]) -> None:
    cfg = compose_cfg(*SELECT_ONLY)
    run(cfg)
    out = Path(cfg.paths.output_dir)
    result = json.loads((out / "result.json").read_text())
    rows = _check_selection(out, 12, 300)
    assert result["selector"] == "ae" and result["budget"] == 12 and result["pool_size"] == 300
    assert result["embedding_info"]["cache_hit"] is False
    assert result["embedding_info"]["ae/train_loss"] > 0
    assert sum(result["selected_class_histogram"].values()) == 12
    assert {r["rule"] for r in rows} == {"random"}
    assert {int(r["cluster"]) for r in rows} == set(range(12))  # one image per cluster
    assert (out / "reconstructions.png").exists() and (out / "autoencoder.ckpt").exists()
    assert set(result["timings_s"]) >= {"data", "autoencoder", "embed", "selection", "total"}

    # same pool, autoencoder config and seed: the next job loads the model, trains nothing,
    # and (same selector, same seed) picks the same images
    cfg2 = compose_cfg(*SELECT_ONLY)
    run(cfg2)
    result2 = json.loads((out / "result.json").read_text())
    assert result2["embedding_info"]["cache_hit"] is True
    assert "autoencoder" not in result2["timings_s"]
    assert read_selection_csv(out / "selection.csv") == rows

    # a different budget reuses the autoencoder too; a different seed does not
    run(compose_cfg(*SELECT_ONLY, "budget=7", "selector.pick=centroid"))
    r3 = json.loads((out / "result.json").read_text())
    assert r3["embedding_info"]["cache_hit"] is True and r3["pick"] == "centroid"
    _check_selection(out, 7, 300)
    run(compose_cfg(*SELECT_ONLY, "seed=1"))
    assert json.loads((out / "result.json").read_text())["embedding_info"]["cache_hit"] is False


def test_random_job_never_trains(compose_cfg: Callable[..., DictConfig]) -> None:
    cfg = compose_cfg(*SELECT_ONLY, "selector=random")
    run(cfg)
    out = Path(cfg.paths.output_dir)
    result = json.loads((out / "result.json").read_text())
    assert result["selector"] == "random" and result["embedding_info"] == {} and result["embedding"] is None
    assert not (out / "autoencoder.ckpt").exists()
    rows = _check_selection(out, 12, 300)
    assert {r["rule"] for r in rows} == {"uniform"}


def test_folder_job_reports_skipped_files(compose_cfg: Callable[..., DictConfig], image_folder: dict) -> None:
    cfg = compose_cfg(
        "data=folder",
        f"data.pool_dir={image_folder['pool']}",
        f"data.val={image_folder['csv']}",
        "experiment=cpu",
        "fit.autoencoder.epochs=1",
        "budget=5",
        "~classifier",
    )
    run(cfg)
    out = Path(cfg.paths.output_dir)
    result = json.loads((out / "result.json").read_text())
    assert result["pool_size"] == 41 and result["skipped_files"] == 1
    assert "corrupt.jpg" in (out / "skipped.csv").read_text()
    rows = _check_selection(out, 5, 41)
    assert all(Path(r["image_id"]).exists() for r in rows)


def test_budget_over_pool_is_a_clear_error(compose_cfg: Callable[..., DictConfig]) -> None:
    import pytest

    with pytest.raises(
        ValueError, match=r"budget=301 exceeds the pool \(300 readable images in Fashion-MNIST train"
    ):
        run(compose_cfg(*SELECT_ONLY, "selector=random", "budget=301"))


def test_settings_that_cannot_work_fail_before_the_autoencoder_trains(
    compose_cfg: Callable[..., DictConfig],
) -> None:
    """Issue 11: budget over the pool (and folds over budget) failed only after the autoencoder had trained."""
    import pytest

    for overrides, message in (
        (("~classifier", "budget=301"), r"budget=301 exceeds the pool"),
        (("budget=4", "folds=5"), r"folds=5 exceeds budget=4"),
    ):
        cfg = compose_cfg(*TINY, "selector=ae", *overrides)
        with pytest.raises(ValueError, match=message):
            run(cfg)
        out = Path(cfg.paths.output_dir)
        assert not (out / "autoencoder").exists() and not (out / "embeddings.npy").exists()
        assert not (Path(cfg.paths.cache_dir) / "embeddings").exists()


def test_autoencoder_cache_key_sees_the_training_batch(compose_cfg: Callable[..., DictConfig]) -> None:
    """Issue 11: data.batch_size (the autoencoder's training batch) was missing from its cache key."""
    from hydra.utils import instantiate

    from imgselect.io.cache import cache_key

    keys = {
        cache_key(**instantiate(compose_cfg(*TINY, f"data.batch_size={b}").embedding).settings())
        for b in (32, 64)
    }
    assert len(keys) == 2


def test_whole_job_result_json(compose_cfg: Callable[..., DictConfig]) -> None:
    """pool -> autoencoder -> selection -> labels -> 2 fold classifiers -> pseudo-labels -> final -> metrics."""
    cfg = compose_cfg(*TINY, "folds=2", "budget=20")
    f1 = run(cfg)
    out = Path(cfg.paths.output_dir)
    r = json.loads((out / "result.json").read_text())
    assert r["selector"] == "ae" and r["pick"] == "random" and r["budget"] == 20 and r["seed"] == 0
    assert r["folds"] == 2 and r["pseudo_size"] == 40
    for phase in ("before", "after"):
        m = r["metrics"][phase]
        assert 0 <= m["f1"] <= 1 and 0 <= m["accuracy"] <= 1
        assert np.array(m["confusion_matrix"]).sum() == 60  # every validation image counted once
    assert f1 == r["metrics"]["after"]["f1"]
    pseudo = r["classifier"]["pseudo"]
    assert pseudo["count"] <= 40 and sum(pseudo["class_histogram"]) == pseudo["count"]
    assert 0 <= pseudo["accuracy"] <= 1
    assert sum(r["selected_class_histogram"].values()) == 20
    assert set(r["timings_s"]) >= {
        "data",
        "autoencoder",
        "embed",
        "selection",
        "classifier_folds",
        "pseudo_labeling",
        "classifier_final",
        "total",
    }
    assert {"torch", "lightning", "faiss", "imgselect"} <= set(r["versions"])
    assert (out / "confusion.png").exists() and (out / "classifier_final.pt").exists()
    assert sorted(p.name for p in (out / "classifier").iterdir()) == [
        "classifier_fold0.ckpt",
        "classifier_fold1.ckpt",
    ]


def test_labels_csv_round_trip(compose_cfg: Callable[..., DictConfig], tmp_path: Path) -> None:
    """A person labels selection.csv by image id (a file of earlier versions; here from the dataset's labels),
    the job reads it back."""
    cfg = compose_cfg(*SELECT_ONLY, "selector=random")
    run(cfg)
    out = Path(cfg.paths.output_dir)
    rows = read_selection_csv(out / "selection.csv")
    from datamodules.fashion_mnist import CLASS_NAMES, read_idx

    train_labels = read_idx(Path(cfg.data.data_dir) / "train-labels-idx1-ubyte")
    labels = tmp_path / "labels.csv"
    labels.write_text(
        "image_id,label\n"
        + "".join(
            f"{r['image_id']},{CLASS_NAMES[train_labels[int(r['image_id'].split(':')[1])]]}\n" for r in rows
        )
    )
    cfg2 = compose_cfg(*TINY, "selector=random", "labels=csv", f"labels.path={labels}", "pseudo.size=0")
    run(cfg2)
    r = json.loads((out / "result.json").read_text())
    assert r["labels"]["source"] == "file" and r["labels"]["known"] == 12
    assert r["classifier"]["labeled"] == 12  # trained on the person's labels, not on a re-run selection
    assert r["metrics"]["after"] is None and r["metrics"]["before"]["f1"] >= 0
    # and the same job chose the next 12, none of them labeled already
    new = {x["image_id"] for x in read_selection_csv(out / "selection.csv")}
    assert len(new) == 12 and not new & {x["image_id"] for x in rows}
