"""Every option of every config group composes and instantiates."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, open_dict

from tests.conftest import CONF


def options(group: str) -> list[str]:
    """The group's choices; a file named ``_*`` holds keys its choices share (``selector/_kmeans``)."""
    return sorted(p.stem for p in (CONF / group).glob("*.yaml") if not p.stem.startswith("_"))


def test_groups_are_all_there() -> None:
    for group in (
        "data",
        "autoencoder",
        "embedding",
        "selector",
        "trainer",
        "logger",
        "paths",
        "hydra",
        "experiment",
        "dedup",
        "labels",
        "semi",
    ):
        assert options(group), group
    assert {"pseudo", "fixmatch", "none"} <= set(options("semi"))
    assert {"ae", "random", "ae_centroid", "typiclust", "probcover", "kcenter"} <= set(options("selector"))
    assert {"autoencoder", "pixels", "backbone", "file"} <= set(options("embedding"))
    assert {"cpu", "gpu", "ddp"} <= set(options("trainer"))
    assert {"none", "dhash", "embedding"} <= set(options("dedup"))
    assert {"oracle", "file"} <= set(options("data")) | set(options("labels"))
    assert {"ssl", "byol"} <= set(options("pretrain"))


@pytest.mark.parametrize(("name", "module"), [("ssl", "SimCLRModule"), ("byol", "BYOLModule")])
def test_pretrain(name: str, module: str, compose_cfg: Callable[..., DictConfig]) -> None:
    """Both methods build the same embedding class around their own module, with the CPU preset's length."""
    cfg = compose_cfg("experiment=cpu", f"pretrain={name}")
    assert cfg.pretrain._target_ == "imgselect.embeddings.SSLEmbedding"
    assert cfg.pretrain.model._target_ == f"lightning_modules.{module}" and cfg.pretrain.epochs == 30
    pretraining = instantiate(cfg.pretrain)
    assert type(pretraining.model).__name__ == module and pretraining.epochs == 30
    assert ("momentum" in pretraining.settings()) == (name == "byol")  # the cache keys of the two differ


@pytest.mark.parametrize("name", options("dedup"))
def test_dedup(name: str, compose_cfg: Callable[..., DictConfig]) -> None:
    from imgselect.stages.prepare import dedup_settings

    settings = dedup_settings(compose_cfg(f"dedup={name}").dedup)
    assert (settings is None) == (name == "none")
    assert compose_cfg().dedup.method == "none"  # off by default for images and datasets


def test_defaults_are_the_papers(compose_cfg: Callable[..., DictConfig]) -> None:
    cfg = compose_cfg()
    assert cfg.image_size == 64 and cfg.autoencoder.latent_dim == 512
    assert cfg.autoencoder.lr == 1.0 and cfg.autoencoder.rho == 0.95
    assert cfg.selector.pick == "random" and cfg.budget == 125
    assert list(cfg.data.classes) == [0, 6]
    fit = cfg.fit.classifier  # the paper's classifier
    assert fit.batch_size == 128 and fit.min_steps == 0
    assert cfg.fit.classifier.epochs == 25 and cfg.fit.autoencoder.epochs == 25 and cfg.pseudo.epochs == 50
    cpu = compose_cfg("experiment=cpu")
    assert cpu.image_size == 32 and cpu.data.image_size == 32 and cpu.autoencoder.image_size == 32


def test_progress_is_a_mode_outside_the_job_hash(compose_cfg: Callable[..., DictConfig]) -> None:
    from imgselect.run.jobs import config_hash
    from imgselect.run.progress import MODES

    def job(*overrides: str) -> DictConfig:  # as @hydra.main hands it to the job: without the hydra node
        cfg = compose_cfg(*overrides)
        with open_dict(cfg):
            del cfg["hydra"]
        return cfg

    assert job().progress == "auto" and set(MODES) == {"auto", "rich", "tqdm", "log", "none"}
    assert config_hash(job("progress=log")) == config_hash(job())  # a sweep resumes whatever it shows
    assert config_hash(job("seed=1")) != config_hash(job())


@pytest.mark.parametrize("name", options("data"))
def test_data(name: str, compose_cfg: Callable[..., DictConfig], image_folder: dict) -> None:
    extra = {
        "folder": [f"data.pool_dir={image_folder['pool']}", f"data.val={image_folder['val']}"],
        "video": ["data.path=/any/video.mp4"],  # nothing is opened before setup()
    }.get(name, [])
    cfg = compose_cfg(f"data={name}", "image_size=32", *extra)
    dm = instantiate(cfg.data)
    assert dm.image_size == 32
    if name == "video":  # the data group turns near-duplicate removal on
        assert cfg.dedup.method == "dhash"


@pytest.mark.parametrize("name", options("autoencoder"))
def test_autoencoder(name: str, compose_cfg: Callable[..., DictConfig]) -> None:
    for preset in ([], ["experiment=cpu"]):
        cfg = compose_cfg(f"autoencoder={name}", *preset)
        ae = instantiate(cfg.autoencoder)
        x = torch.zeros(2, 3, cfg.image_size, cfg.image_size, dtype=torch.uint8)
        assert ae.embed(x).shape == (2, 512)


@pytest.mark.parametrize("name", options("selector"))
def test_selector(name: str, compose_cfg: Callable[..., DictConfig]) -> None:
    sel = instantiate(compose_cfg(f"selector={name}", "budget=7").selector)
    assert sel.budget == 7
    selection = sel.select(20, torch.randn(20, 4).numpy(), n_classes=2)
    assert len(set(selection.indices.tolist())) == 7


@pytest.mark.parametrize("name", options("embedding"))
def test_embedding(name: str, compose_cfg: Callable[..., DictConfig], tmp_path) -> None:
    import numpy as np

    extra = {
        "file": [f"embedding.path={tmp_path / 'e.npy'}"],
        "backbone": ["embedding.random_init=true"],
    }.get(name, [])
    np.save(tmp_path / "e.npy", np.zeros((3, 2), np.float32))
    emb = instantiate(compose_cfg(f"embedding={name}", "experiment=cpu", *extra).embedding)
    assert emb.name == name and isinstance(emb.settings(), dict)
    if name == "autoencoder":  # the autoencoder group's settings reach the embedding's model
        assert emb.settings()["image_size"] == 32 and emb.epochs == 4


@pytest.mark.parametrize("name", options("trainer"))
def test_trainer(name: str, compose_cfg: Callable[..., DictConfig]) -> None:
    factory = instantiate(compose_cfg(f"trainer={name}").trainer)
    assert isinstance(factory, functools.partial)
    if name == "gpu" and not torch.cuda.is_available():
        assert factory.keywords["accelerator"] == "gpu"
        return
    trainer = factory(max_epochs=1, logger=False)
    if name == "ddp":
        assert trainer.num_devices == 2 and type(trainer.strategy).__name__ == "DDPStrategy"
    else:
        assert trainer.num_devices == 1


@pytest.mark.parametrize("name", options("logger"))
def test_logger(name: str, compose_cfg: Callable[..., DictConfig], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    cfg = compose_cfg(f"logger={name}")
    logger = instantiate(cfg.logger)
    if name == "wandb":  # one W&B run per job, opened by the pipeline: tests/integration/test_wandb.py
        from imgselect.run.tracking import JobTracker

        assert isinstance(logger, JobTracker) and logger.project == "imgselect"
        with pytest.raises(RuntimeError, match="must open the job's run"):
            logger(name="autoencoder")
        return
    logger = logger(name="autoencoder")
    assert type(logger).__name__ == "CSVLogger"
    assert str(logger.save_dir) == cfg.paths.output_dir


@pytest.mark.parametrize("name", options("experiment"))
def test_experiment(name: str, compose_cfg: Callable[..., DictConfig]) -> None:
    base, cfg = compose_cfg(), compose_cfg(f"experiment={name}")
    changed = {k for k in ("image_size", "autoencoder", "classifier", "pseudo") if cfg[k] != base[k]}
    assert changed, f"experiment={name} changes none of the settings it is for"
    ae = instantiate(cfg.autoencoder)
    assert ae.embed(torch.zeros(1, 3, cfg.image_size, cfg.image_size, dtype=torch.uint8)).shape[1] == 512
    instantiate(cfg.selector)


@pytest.mark.parametrize(
    "name",
    [
        "paper_table1",
        "smoke",
        "selection_10class",
        "ssl_2class",
        "ssl_10class",
        "fixmatch_10class",
        "fixmatch_2class",
        "fixmatch_holdout",
    ],
)
def test_versioned_sweeps_compose(name: str, tmp_path) -> None:
    """The sweep files extend conf/train.yaml and carry their sweep; the CPU preset still applies on top."""
    import os

    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from tests.conftest import ROOT

    GlobalHydra.instance().clear()
    os.environ["IMGSELECT_ROOT"] = str(ROOT)
    with initialize_config_dir(config_dir=str(ROOT / "sweeps"), version_base="1.3"):
        overrides = [f"hydra.searchpath=[file://{ROOT / 'conf'}]", "experiment=cpu"]  # as --config-dir does
        cfg = compose(config_name=name, overrides=overrides, return_hydra_config=True)
    GlobalHydra.instance().clear()
    params = dict(cfg.hydra.sweeper.params)
    if name == "fixmatch_holdout":  # a setting chosen on the held-out split, never on validation
        assert params == {"semi.module.flex": "true,false", "seed": "0,1,2"}
        assert cfg.data.val_split == "train_holdout" and cfg.budget == 20 and len(cfg.data.classes) == 10
        assert cfg.selector.name == "typiclust" and cfg.embedding._target_.endswith("PixelsEmbedding")
        assert cfg.semi.kind == "fixmatch" and cfg.classifier.pretrained == "ssl" and cfg.image_size == 32
        return
    if name.startswith("fixmatch_"):  # {random, typiclust} x FixMatch from the SimCLR start
        # ten classes: TypiClust on pixels, the first 12,000 images; the paper's task: on the SimCLR features
        budgets, embedding, classes, pool_limit = {
            "fixmatch_10class": ("10,20,50", "PixelsEmbedding", list(range(10)), 12000),
            "fixmatch_2class": ("125,200,500", "PretrainedEmbedding", [0, 6], None),
        }[name]
        assert params == {"budget": budgets, "selector": "random,typiclust", "seed": "0,1,2"}
        assert cfg.semi.kind == "fixmatch" and cfg.classifier.pretrained == "ssl"
        assert cfg.pretrain.epochs == 30 and cfg.embedding._target_.endswith(embedding)
        assert (
            list(cfg.data.classes) == classes and cfg.data.pool_limit == pool_limit and cfg.image_size == 32
        )
        return
    if name.startswith("ssl_"):  # {random, typiclust} x {scratch, pretrained=ssl} x budgets x seeds
        budgets, n_classes = {"ssl_2class": ("125,200,500,1000", 2), "ssl_10class": ("10,20,50", 10)}[name]
        assert params == {
            "selector": "random,typiclust",
            "classifier.pretrained": "null,ssl",
            "budget": budgets,
            "seed": "0,1,2",
        }
        assert len(cfg.data.classes) == n_classes and (n_classes == 2 or cfg.data.pool_limit == 12000)
        assert cfg.pretrain.epochs == 30 and cfg.image_size == 32  # the CPU preset on top
        assert cfg.embedding._target_.endswith("PretrainedEmbedding")
        return
    if name == "selection_10class":
        assert params == {"selector": "random,ae,ae_centroid", "budget": "10,20,50", "seed": "0,1,2"}
        assert len(cfg.data.classes) == 10 and cfg.data.pool_limit == 12000 and cfg.image_size == 32
        return
    assert params["selector"] == "ae,random"
    if name == "paper_table1":
        assert params == {"selector": "ae,random", "budget": "125,200,500,1000", "seed": "0,1,2"}
        fit = cfg.fit.classifier  # the preset on top of the paper sweep
        assert fit.epochs == 15 and fit.batch_size == 32 and fit.min_steps == 150 and cfg.image_size == 32
    else:
        assert cfg.data.pool_limit == 1000 and cfg.pseudo.size == 100
    assert cfg.selector._target_.endswith("KMeansSelector") and cfg.folds == 3


def test_job_hash_ignores_where_the_job_lives(compose_cfg: Callable[..., DictConfig], tmp_path: Path) -> None:
    """A moved checkout or sweep folder resumes: paths (and what is built from them) are not in the hash."""
    from imgselect.run.jobs import config_hash

    def job(*overrides: str) -> DictConfig:
        cfg = compose_cfg(*overrides)
        with open_dict(cfg):
            del cfg["hydra"]
        return cfg

    here = job()
    moved = job(f"paths.output_dir={tmp_path / 'elsewhere'}", f"paths.root_dir={tmp_path}", "cache=false")
    assert moved.logger.save_dir != here.logger.save_dir  # the resolved paths do differ ...
    assert config_hash(moved) == config_hash(here)  # ... the job does not
    assert config_hash(job("budget=7")) != config_hash(here)


def test_job_hash_ignores_hydras_own_node(compose_cfg: Callable[..., DictConfig]) -> None:
    """Hydra's node (run folders with ${now:...}) never enters the hash: a re-run a second later resumes
    (found by a re-run test that failed whenever its two runs straddled a second)."""
    from imgselect.run.jobs import config_hash

    a, b = compose_cfg("hydra.run.dir=/x/one"), compose_cfg("hydra.run.dir=/x/two")
    assert config_hash(a) == config_hash(b)
    assert config_hash(a) != config_hash(compose_cfg("hydra.run.dir=/x/one", "budget=7"))
