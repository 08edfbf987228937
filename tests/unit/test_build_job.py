"""build_job: the config read once into a typed Job, its checks before anything is loaded or trained."""

from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch

from imgselect.run.pipeline import _pool_source, build_job


def test_the_job_holds_what_the_config_names(compose_cfg) -> None:
    job = build_job(
        compose_cfg("experiment=cpu", "selector=typiclust", "embedding=pixels", "budget=7", "seed=3")
    )
    assert job.selector.name == "typiclust" and job.selector.budget == 7
    assert job.embedding is not None and job.embedding.name == "pixels" and not job.embedding.from_pretraining
    assert job.labeler.reveals and job.selecting
    assert job.plan is not None and job.plan.seed == 3 and job.plan.learner == "pseudo"
    assert job.record["classifier_init"] == "scratch" and len(job.record["config_hash"]) > 8


@pytest.mark.parametrize("start", ["hub", "file"])
def test_the_record_names_where_the_classifier_starts(compose_cfg, tmp_path, start) -> None:
    from safetensors.torch import save_file

    weights = tmp_path / "backbone.safetensors"
    save_file({"conv_stem.weight": torch.zeros(1)}, str(weights))
    value = weights if start == "file" else start
    job = build_job(compose_cfg("experiment=cpu", "selector=random", f"classifier.pretrained={value}"))
    assert job.record["classifier_init"] == start  # never "scratch" for a pretrained start


def test_a_persons_labels_with_budget_zero_train_without_choosing(compose_cfg, tmp_path) -> None:
    labels = tmp_path / "filled.csv"
    labels.write_text("image_id,content_hash,label\n")
    job = build_job(compose_cfg("experiment=cpu", "labels=file", f"labels.path={labels}", "budget=0"))
    assert not job.labeler.reveals and not job.selecting
    assert job.embedding is None  # nothing is chosen, so nothing is embedded


@pytest.mark.parametrize("override", ["embedding=ssl", "classifier.pretrained=ssl"])
def test_the_pretrainings_features_need_the_pretraining(compose_cfg, override) -> None:
    with pytest.raises(ValueError, match="add pretrain=ssl"):
        build_job(compose_cfg("experiment=cpu", "selector=typiclust", override))  # pretrain=null: the default


def test_a_datamodule_without_a_pool_is_named() -> None:
    class Plain(pl.LightningDataModule):
        pass

    with pytest.raises(TypeError, match="Plain holds no pool"):
        _pool_source(Plain())
