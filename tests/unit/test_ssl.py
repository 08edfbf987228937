"""Self-supervised pretraining's parts: the views, the NT-Xent loss, the k-NN probe, and the backbone it hands
to the classifier."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from imgselect.embeddings.probe import knn_probe
from lightning_modules.classifier import ClassifierModule
from lightning_modules.ssl import SimCLRModule, SimCLRViews, nt_xent


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


def test_pretraining_lowers_the_loss_and_its_backbone_starts_the_classifier(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = SimCLRModule(min_scale=0.8, color=0.1, grayscale=0.0)
    g = torch.Generator().manual_seed(1)  # 32 images told apart by colour and stripe width
    colors = torch.randint(0, 256, (32, 3, 1, 1), generator=g)
    stripes = (torch.arange(32).view(1, 1, 1, 32) * torch.randint(1, 5, (32, 1, 1, 1), generator=g)) % 16 * 8
    x = (colors * 0.7 + stripes * 0.3).clamp(0, 255).expand(32, 3, 32, 32).to(torch.uint8)
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
