"""The MobileNetV2 classifier: heads, losses, weights files, the offline hub error, augmentation, fast_dev_run."""

from __future__ import annotations

import time
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from lightning_modules import BatchAugment, ClassifierModule
from lightning_modules.classifier import build_mobilenetv2


def test_binary_has_one_logit_and_bce() -> None:
    m = ClassifierModule(num_classes=2).eval()
    x = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8)
    assert m(x).shape == (3,)
    p = m.predict_proba(x)
    assert p.shape == (3, 2) and torch.allclose(p.sum(1), torch.ones(3))
    logits = torch.tensor([0.0, 2.0])
    assert m.loss(logits, torch.tensor([1, 0])).item() == pytest.approx(
        torch.nn.functional.binary_cross_entropy_with_logits(logits, torch.tensor([1.0, 0.0])).item()
    )
    assert isinstance(m.configure_optimizers(), torch.optim.Adam)


def test_multiclass_softmax() -> None:
    m = ClassifierModule(num_classes=10).eval()
    assert m(torch.zeros(2, 3, 32, 32, dtype=torch.uint8)).shape == (2, 10)
    with pytest.raises(ValueError, match="at least 2 classes"):
        ClassifierModule(num_classes=1)


def test_scratch_init_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("WARNING"):
        build_mobilenetv2(1, None)
    assert "from scratch" in caplog.text


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_local_weights_load_and_head_adapts(tmp_path: Path, suffix: str) -> None:
    src = build_mobilenetv2(1000, None)  # ImageNet-shaped head, as a downloaded file would have
    path = tmp_path / f"w{suffix}"
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(path))
    else:
        torch.save({"state_dict": src.state_dict()}, path)
    m = build_mobilenetv2(1, str(path))
    assert torch.equal(m.conv_stem.weight, src.conv_stem.weight)
    assert m.classifier.out_features == 1


def test_bad_weights_files(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no such file"):
        build_mobilenetv2(1, str(tmp_path / "nope.pth"))
    wrong = tmp_path / "wrong.pth"
    torch.save({"conv.weight": torch.zeros(3)}, wrong)
    with pytest.raises(ValueError, match="does not fit mobilenetv2_100"):
        build_mobilenetv2(1, str(wrong))


def test_hub_offline_fails_fast_with_advice(monkeypatch: pytest.MonkeyPatch) -> None:
    import lightning_modules.classifier as c

    monkeypatch.setattr(c, "HUB_HOST", "hub.invalid")  # never resolves, like any host from this machine
    t0 = time.perf_counter()
    with pytest.raises(RuntimeError, match=r"classifier.pretrained=/path/to/model.safetensors"):
        build_mobilenetv2(1, "hub")
    assert time.perf_counter() - t0 < 15


def test_augmentation_changes_images_but_keeps_shape() -> None:
    torch.manual_seed(0)
    x = torch.rand(16, 3, 32, 32)
    y = BatchAugment()(x)
    assert y.shape == x.shape and not torch.allclose(x, y)
    flip_only = BatchAugment(flip=1.0, degrees=0.0, shift=0.0)(x)
    assert torch.allclose(flip_only, x.flip(-1), atol=1e-5)
    assert torch.allclose(BatchAugment(flip=0.0, degrees=0.0, shift=0.0)(x), x, atol=1e-5)


def test_fast_dev_run() -> None:
    x = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    y = torch.tensor([0, 1] * 4)
    loader = DataLoader(TensorDataset(x, y), batch_size=4)
    m = ClassifierModule()
    trainer = pl.Trainer(fast_dev_run=True, accelerator="cpu", logger=False, enable_progress_bar=False)
    trainer.fit(m, loader, loader)
    assert {"train/loss", "val/loss", "val/acc"} <= set(trainer.callback_metrics)


def test_new_head_starts_neutral() -> None:
    # timm's default init of a one-logit head gives logits of ~±20 and a BCE near 10 at the first step
    torch.manual_seed(0)
    m = ClassifierModule().eval()
    logits = m(torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8))
    assert logits.abs().max() < 1.0


def test_a_rerun_replaces_a_killed_runs_checkpoint(tmp_path: Path) -> None:
    """A killed job leaves classifier/classifier_fold0.ckpt; its re-run writes the same file again instead of
    a classifier_fold0-v1.ckpt beside it (and loads its own best weights)."""
    from functools import partial

    import numpy as np

    from imgselect.run.runtime import TrainerFactory
    from imgselect.stages.classify import ClassifierPlan, train_classifier

    plan = ClassifierPlan(
        build=lambda n: ClassifierModule(num_classes=n, channels_last=False),
        batch_size=4, epochs=1, min_steps=0, folds=2, seed=0, pseudo_size=0, pseudo_epochs=1,
        positive_class=1,
    )  # fmt: skip
    trainers = TrainerFactory(
        trainer=partial(pl.Trainer, accelerator="cpu", devices=1, enable_model_summary=False),
        logger=None,
        out_dir=tmp_path,
        progress="none",
    )
    x = torch.randint(0, 255, (8, 3, 32, 32), dtype=torch.uint8)
    y = np.array([0, 1] * 4)
    for _ in range(2):  # the first run stands for the killed one
        train_classifier(plan, trainers, "classifier_fold0", 2, x[:6], y[:6], 1, (x[6:], y[6:]))
    assert sorted(p.name for p in (tmp_path / "classifier").glob("*.ckpt")) == ["classifier_fold0.ckpt"]
