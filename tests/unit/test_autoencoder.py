"""The paper's autoencoder: shapes, latent size, configuration errors, a fast_dev_run."""

from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch

from datamodules.pool import PoolDataModule
from imgselect.pool import ImageSet
from lightning_modules import AutoencoderModule, ConvAutoencoder


class TinyPool(PoolDataModule):
    def load(self) -> tuple[ImageSet, ImageSet, list[str]]:
        g = torch.Generator().manual_seed(0)
        imgs = torch.randint(
            0, 256, (40, 3, self.image_size, self.image_size), dtype=torch.uint8, generator=g
        )
        return (
            ImageSet(imgs[:30], [f"p{i}" for i in range(30)]),
            ImageSet(imgs[30:], [f"v{i}" for i in range(10)]),
            ["a", "b"],
        )


@pytest.mark.parametrize(("size", "channels"), [(64, (32, 64, 128)), (32, (32, 64)), (32, (8, 16, 32))])
def test_latent_is_512_and_shapes_round_trip(size: int, channels: tuple[int, ...]) -> None:
    net = ConvAutoencoder(size, 512, channels).eval()
    x = torch.rand(2, 3, size, size)
    z = net.encode(x)
    assert z.shape == (2, 512)
    y = net.decode(z)
    assert y.shape == x.shape and y.min() >= 0 and y.max() <= 1
    kinds = {type(m).__name__ for m in net.modules()}
    assert {"Conv2d", "MaxPool2d", "BatchNorm2d", "Upsample"} <= kinds


def test_bad_geometry_is_explained() -> None:
    with pytest.raises(ValueError, match="divisible by 2\\*\\*len"):
        ConvAutoencoder(30, 512, (32, 64))
    with pytest.raises(ValueError, match="latent_dim=500 must be a multiple"):
        ConvAutoencoder(64, 500, (32, 64, 128))


def test_paper_optimiser() -> None:
    opt = AutoencoderModule(image_size=32, channels=(8, 16)).configure_optimizers()
    assert isinstance(opt, torch.optim.Adadelta)
    assert opt.defaults["lr"] == 1.0 and opt.defaults["rho"] == 0.95


def test_embed_accepts_uint8_and_is_deterministic_in_eval() -> None:
    m = AutoencoderModule(image_size=32, channels=(8, 16)).eval()
    x = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    a, b = m.embed(x), m.embed(x)
    assert a.shape == (4, 512) and torch.equal(a, b)
    assert torch.allclose(m.embed(x[:1]), a[:1], atol=1e-5)  # batch composition does not change a latent


def test_fast_dev_run_trains_and_saves_reconstructions(tmp_path) -> None:
    m = AutoencoderModule(image_size=32, channels=(8, 16), recon_dir=str(tmp_path))
    before = [p.detach().clone() for p in m.parameters()]
    trainer = pl.Trainer(fast_dev_run=True, accelerator="cpu", logger=False, enable_progress_bar=False)
    trainer.fit(m, datamodule=TinyPool(image_size=32, batch_size=8))
    assert any(not torch.equal(a, b) for a, b in zip(before, m.parameters(), strict=True))
    assert "ae/train_loss" in trainer.callback_metrics
    assert (tmp_path / "reconstructions.png").stat().st_size > 0
