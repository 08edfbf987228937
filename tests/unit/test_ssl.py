"""Self-supervised pretraining's parts: the views, SimCLR's NT-Xent loss, BYOL's loss and momentum target, the
k-NN probe, and the backbone it hands to the classifier."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch

from imgselect.embeddings.probe import knn_probe
from lightning_modules.classifier import ClassifierModule
from lightning_modules.ssl import BYOLModule, SimCLRModule, SimCLRViews, byol_loss, momentum_at, nt_xent


def test_views_differ_stay_in_range_and_keep_shape() -> None:
    torch.manual_seed(0)
    x = torch.rand(16, 3, 32, 32)
    views = SimCLRViews()
    a, b = views(x), views(x)
    assert a.shape == x.shape and a.min() >= 0 and a.max() <= 1
    assert not torch.allclose(a, b)  # two random views of the same images
    # crops and flips move pixels but cannot change a uniform image; without colour changes it stays as it was
    uniform = torch.rand(16, 3, 1, 1).expand(16, 3, 32, 32).contiguous()
    geometric = SimCLRViews(min_scale=0.3, color=0.0, jitter_p=0.0, grayscale=0.0)
    assert torch.allclose(geometric(uniform), uniform, atol=1e-5)
    grey = SimCLRViews(min_scale=0.3, color=0.0, jitter_p=0.0, grayscale=1.0)(uniform)
    assert torch.allclose(grey[:, 0], grey[:, 1]) and torch.allclose(grey[:, 1], grey[:, 2])
    with pytest.raises(ValueError, match="min_scale"):
        SimCLRViews(min_scale=0.0)


def test_nt_xent_rewards_matching_pairs() -> None:
    torch.manual_seed(0)
    z = torch.randn(32, 16)
    aligned = nt_xent(z, z + 0.01 * torch.randn_like(z), 0.5)
    shuffled = nt_xent(z, z[torch.randperm(32)], 0.5)
    assert float(aligned) < float(shuffled)
    # with every view orthogonal to all but its partner, the loss is log(1 + (2n - 2) e^0 / e^(1/t))
    n, t = 4, 0.5
    e = torch.eye(2 * n)[:n]
    expected = np.log(1 + (2 * n - 2) * np.exp(-1 / t))
    assert float(nt_xent(e, e, t)) == pytest.approx(expected, rel=1e-5)


def test_knn_probe_separates_separable_features() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 600)
    good = np.eye(3)[y] * 5 + rng.normal(size=(600, 3))
    noise = rng.normal(size=(600, 3))
    assert knn_probe(good, y)["knn_accuracy"] > 0.95
    assert knn_probe(noise, y)["knn_accuracy"] < 0.5
    assert knn_probe(good, y)["knn_holdout"] == 120


def test_knn_probe_draws_a_sample_of_a_large_pool() -> None:
    """Over ``max_images`` the probe runs on that many images, drawn by the seed (its cost grows with the square)."""
    rng = np.random.default_rng(1)
    y = np.arange(500) % 2
    good = np.eye(2)[y] + 0.05 * rng.normal(size=(500, 2))
    small = knn_probe(good, y, max_images=100)
    assert small["knn_holdout"] == 20 and small["knn_accuracy"] > 0.95
    assert knn_probe(good, y, max_images=None)["knn_holdout"] == 100


def striped_images(n: int = 32) -> torch.Tensor:
    """``n`` uint8 images told apart by colour and stripe width."""
    g = torch.Generator().manual_seed(1)
    colors = torch.randint(0, 256, (n, 3, 1, 1), generator=g)
    stripes = (torch.arange(32).view(1, 1, 1, 32) * torch.randint(1, 5, (n, 1, 1, 1), generator=g)) % 16 * 8
    return (colors * 0.7 + stripes * 0.3).clamp(0, 255).expand(n, 3, 32, 32).to(torch.uint8)


def test_pretraining_lowers_the_loss_and_its_backbone_starts_the_classifier(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = SimCLRModule(min_scale=0.8, color=0.1, grayscale=0.0)
    x = striped_images()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(15):
        loss = nt_xent(
            model.project(model.views(x.float() / 255)), model.project(model.views(x.float() / 255)), 0.5
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert np.mean(losses[-3:]) < np.mean(losses[:3])  # it learns to match the views
    assert model.embed(x).shape == (32, 1280)

    from safetensors.torch import save_file

    weights = tmp_path / "ssl_backbone.safetensors"
    save_file(model.backbone_state(), str(weights))
    fresh = ClassifierModule(num_classes=2)
    started = ClassifierModule(num_classes=2, pretrained=str(weights))
    key = "conv_stem.weight"
    assert torch.equal(started.net.state_dict()[key], model.backbone_state()[key])
    assert not torch.equal(fresh.net.state_dict()[key], started.net.state_dict()[key])
    with pytest.raises(ValueError, match="classifier.pretrained=ssl .* add pretrain=ssl"):
        ClassifierModule(num_classes=2, pretrained="ssl")  # the pipeline hands the module the backbone's file


def test_byol_loss_measures_the_angle_and_leaves_the_target_alone() -> None:
    torch.manual_seed(0)
    z = torch.randn(16, 8)
    assert float(byol_loss(3 * z, z)) == pytest.approx(0.0, abs=1e-6)  # same direction, any length
    assert float(byol_loss(-z, z)) == pytest.approx(4.0, abs=1e-6)  # opposite
    orthogonal = torch.stack([torch.eye(8)[0]] * 4), torch.stack([torch.eye(8)[1]] * 4)
    assert float(byol_loss(*orthogonal)) == pytest.approx(2.0, abs=1e-6)
    p, target = torch.randn(16, 8, requires_grad=True), torch.randn(16, 8, requires_grad=True)
    byol_loss(p, target).backward()
    assert (
        p.grad is not None and p.grad.abs().sum() > 0 and target.grad is None
    )  # only the online side learns


def test_byol_momentum_rises_from_its_base_to_one() -> None:
    schedule = [momentum_at(step, 100, 0.99) for step in range(101)]
    assert schedule[0] == pytest.approx(0.99) and schedule[-1] == pytest.approx(1.0)
    assert schedule[50] == pytest.approx(0.995)
    assert all(a <= b for a, b in itertools.pairwise(schedule))
    with pytest.raises(ValueError, match="momentum"):
        BYOLModule(momentum=1.0)


def test_byol_target_follows_the_online_network_by_its_momentum() -> None:
    torch.manual_seed(0)
    model = BYOLModule()
    online, target = model.online_parameters(), model.target_parameters()
    assert all(torch.equal(o, t) for o, t in zip(online, target, strict=True))  # a copy at the start
    assert not any(t.requires_grad for t in target) and all(o.requires_grad for o in online)
    with torch.no_grad():
        for o in online:
            o.add_(torch.randn_like(o))
    before = sum(float((o - t).detach().norm()) for o, t in zip(online, target, strict=True))
    model.update_target(0.9)
    after = sum(float((o - t).detach().norm()) for o, t in zip(online, target, strict=True))
    assert after == pytest.approx(0.9 * before, rel=1e-4)  # t <- 0.9 t + 0.1 o closes a tenth of the gap
    model.update_target(1.0)  # momentum 1: the target stays where it is
    assert sum(float((o - t).detach().norm()) for o, t in zip(online, target, strict=True)) == pytest.approx(
        after
    )


def test_byol_trains_its_online_network_only_and_hands_on_its_backbone(tmp_path: Path) -> None:
    import lightning.pytorch as pl
    from torch.utils.data import DataLoader, TensorDataset

    torch.manual_seed(0)
    x = striped_images()
    model = BYOLModule(min_scale=0.8, color=0.1, grayscale=0.0, momentum=0.9)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    trainer = pl.Trainer(max_epochs=4, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)  # fmt: skip
    trainer.fit(model, DataLoader(TensorDataset(x, torch.zeros(32)), batch_size=16, drop_last=True))
    optimised = {id(p) for group in trainer.optimizers[0].param_groups for p in group["params"]}
    assert optimised == {id(p) for p in model.parameters() if p.requires_grad}
    assert not optimised & {id(p) for p in model.target_parameters()}
    assert 0 <= float(trainer.callback_metrics["ssl/train_loss"]) <= 4
    assert model.momentum == pytest.approx(1.0)  # the schedule reached its end at the last of 8 steps

    def moved(prefix: str) -> float:
        state = model.state_dict()
        return sum(float((state[k] - start[k]).abs().sum()) for k in start if k.startswith(prefix)
                   and start[k].is_floating_point())  # fmt: skip

    assert moved("backbone.") > 0 and moved("predictor.") > 0
    assert moved("target_backbone.") > 0  # moved by the momentum updates, not by gradients
    assert model.embed(x).shape == (32, 1280)
    state = model.backbone_state()
    assert not any(k.startswith("target") for k in state) and torch.equal(
        state["conv_stem.weight"], model.backbone.state_dict()["conv_stem.weight"]
    )
    from safetensors.torch import save_file

    weights = tmp_path / "byol_backbone.safetensors"
    save_file(state, str(weights))
    started = ClassifierModule(num_classes=2, pretrained=str(weights))
    assert torch.equal(started.net.state_dict()["conv_stem.weight"], state["conv_stem.weight"])
