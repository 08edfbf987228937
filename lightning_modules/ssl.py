"""Self-supervised pretraining on the unlabeled pool on the classifier's own architecture (timm
``mobilenetv2_100``), so one pretraining serves the selection (its pooled features) and the classifier (its
backbone weights). Two methods share the views, the backbone and the schedule:

* :class:`SimCLRModule` (Chen et al., 2020; ``pretrain=ssl``): contrastive, each view must find its partner
  among the batch's other views (NT-Xent).
* :class:`BYOLModule` (Grill et al., 2020; ``pretrain=byol``): no negatives; an online network predicts a
  momentum (EMA) copy of itself on the other view.

Compact implementations (views, heads, losses) rather than lightly's: lightly pins the separate
``pytorch_lightning`` package, and these parts are a few dozen lines each, tested in ``tests/unit/test_ssl.py``.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import lightning.pytorch as pl
import torch
from torch import nn
from torch.nn import functional as F

from lightning_modules.classifier import ARCH, IMAGENET_MEAN, IMAGENET_STD


class SimCLRViews(nn.Module):
    """Random views of a batch of ``[0, 1]`` float images, all on the batch at once (no per-image loop).

    Per image: a random resized crop (area fraction in ``[min_scale, 1]``, aspect ratio in ``[3/4, 4/3]``) and
    a horizontal flip by one affine warp; then with probability ``jitter_p`` brightness, contrast and
    saturation each scaled by a factor in ``[1 - color, 1 + color]``; then grayscale with probability
    ``grayscale``.
    """

    def __init__(
        self, min_scale: float = 0.3, color: float = 0.4, jitter_p: float = 0.8, grayscale: float = 0.2
    ):
        super().__init__()
        if not 0 < min_scale <= 1:
            raise ValueError(f"pretrain.model.min_scale={min_scale} must be in (0, 1]")
        self.min_scale, self.color, self.jitter_p, self.grayscale = min_scale, color, jitter_p, grayscale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, dev = len(x), x.device
        area = self.min_scale + (1 - self.min_scale) * torch.rand(n, device=dev)
        log_ratio = (torch.rand(n, device=dev) * 2 - 1) * math.log(4 / 3)
        sw = torch.sqrt(area * torch.exp(log_ratio)).clamp(max=1.0)  # crop side, fraction of the image
        sh = torch.sqrt(area / torch.exp(log_ratio)).clamp(max=1.0)
        flip = torch.where(torch.rand(n, device=dev) < 0.5, -1.0, 1.0)
        theta = torch.zeros(n, 2, 3, device=dev)
        theta[:, 0, 0], theta[:, 1, 1] = sw * flip, sh
        theta[:, 0, 2] = (torch.rand(n, device=dev) * 2 - 1) * (1 - sw)  # the crop stays inside the image
        theta[:, 1, 2] = (torch.rand(n, device=dev) * 2 - 1) * (1 - sh)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)

        def factor() -> torch.Tensor:
            f = 1 + (torch.rand(n, 1, 1, 1, device=dev) * 2 - 1) * self.color
            keep = torch.rand(n, 1, 1, 1, device=dev) >= self.jitter_p
            return torch.where(keep, torch.ones_like(f), f)

        grey = (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]).expand_as(x)
        x = x * factor()  # brightness
        mean = grey.mean(dim=(1, 2, 3), keepdim=True)
        x = (x - mean) * factor() + mean  # contrast
        grey = (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]).expand_as(x)
        x = (x - grey) * factor() + grey  # saturation
        to_grey = torch.rand(n, 1, 1, 1, device=dev) < self.grayscale
        x = torch.where(to_grey, grey, x)
        return x.clamp(0, 1)


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCLR's loss: each view must pick its partner among the ``2n - 1`` other views of the batch
    (cosine similarity / ``temperature``, cross-entropy)."""
    n = len(z1)
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    sim = z @ z.T / temperature
    sim.fill_diagonal_(float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(sim, target)


def mlp_head(in_dim: int, hidden_dim: int, out_dim: int) -> nn.Sequential:
    """The 2-layer head of SimCLR's projection and BYOL's projection and prediction: linear, batch norm,
    ReLU, linear."""
    return nn.Sequential(
        nn.Linear(in_dim, hidden_dim),
        nn.BatchNorm1d(hidden_dim),
        nn.ReLU(inplace=True),
        nn.Linear(hidden_dim, out_dim),
    )


def byol_loss(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """BYOL's loss: ``2 - 2 cos(p, z)`` averaged over the batch (0 when the prediction points where the target
    does, 4 when opposite); the target ``z`` gets no gradient."""
    return (2 - 2 * F.cosine_similarity(p, z.detach(), dim=1)).mean()


class ViewPretraining(pl.LightningModule):
    """What SimCLR and BYOL share: the ``mobilenetv2_100`` backbone (channels-last on request), the views of
    :class:`SimCLRViews`, ImageNet normalisation, AdamW with a cosine learning-rate schedule over the run, and
    the two outputs the pipeline reads: :meth:`embed` (pooled 1,280-d features, the selection's embedding) and
    :meth:`backbone_state` (the classifier's starting point). Batches are ``(uint8 images, anything)``."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(
        self, min_scale: float, color: float, jitter_p: float, grayscale: float, channels_last: bool
    ) -> None:
        super().__init__()
        import timm

        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        backbone = timm.create_model(ARCH, pretrained=False, num_classes=0)
        self.backbone = backbone.to(memory_format=self.memory_format)
        self.features = int(backbone.num_features)  # type: ignore[arg-type]
        self.views = SimCLRViews(min_scale, color, jitter_p, grayscale)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def _normalise(self, x: torch.Tensor) -> torch.Tensor:
        return ((x - self.mean) / self.std).contiguous(memory_format=self.memory_format)

    @torch.no_grad()
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled backbone features ``(n, 1280)`` of uint8 images (eval mode, no views)."""
        was = self.training
        self.eval()
        out = self.backbone(self._normalise(x.float() / 255.0))
        self.train(was)
        return out

    def backbone_state(self) -> dict[str, torch.Tensor]:
        """The backbone's weights as a ``mobilenetv2_100`` state dict without its classification head."""
        return {k: v.detach().cpu().contiguous() for k, v in self.backbone.state_dict().items()}

    def configure_optimizers(self) -> Any:
        trainable = [p for p in self.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(trainable, lr=self.hparams["lr"], weight_decay=self.hparams["weight_decay"])
        total = max(1, int(self.trainer.estimated_stepping_batches))
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


class SimCLRModule(ViewPretraining):
    """SimCLR on ``mobilenetv2_100``: two views per image, a 2-layer projection head, NT-Xent; AdamW with a
    cosine learning-rate schedule over the run. Batches are ``(uint8 images, anything)``.

    After training, :meth:`embed` gives the backbone's pooled 1,280-d features (the selection's embedding)
    and :meth:`backbone_state` the backbone's weights (the classifier's starting point; no head).

    Args:
        temperature: NT-Xent temperature.
        proj_dim, hidden_dim: projection head sizes.
        lr, weight_decay: AdamW settings.
        min_scale, color, jitter_p, grayscale: the views (:class:`SimCLRViews`).
        channels_last: channels-last memory format (faster on CPU).
    """

    def __init__(
        self,
        temperature: float = 0.5,
        proj_dim: int = 128,
        hidden_dim: int = 512,
        lr: float = 1e-3,
        weight_decay: float = 1e-6,
        min_scale: float = 0.3,
        color: float = 0.4,
        jitter_p: float = 0.8,
        grayscale: float = 0.2,
        channels_last: bool = True,
    ) -> None:
        if temperature <= 0:
            raise ValueError(f"pretrain.model.temperature={temperature} must be positive")
        super().__init__(min_scale, color, jitter_p, grayscale, channels_last)
        self.save_hyperparameters()
        self.head = mlp_head(self.features, hidden_dim, proj_dim)

    def project(self, x01: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(self._normalise(x01)))

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x = batch[0].float() / 255.0
        loss = nt_xent(self.project(self.views(x)), self.project(self.views(x)), self.hparams["temperature"])
        self.log("ssl/train_loss", loss, prog_bar=True, on_epoch=True, on_step=False, batch_size=len(x))
        return loss


def momentum_at(step: int, total: int, base: float) -> float:
    """BYOL's target momentum: ``base`` at the first step, rising to 1 along a cosine at the last."""
    if total <= 1:
        return base
    return 1 - (1 - base) * (math.cos(math.pi * min(step, total) / total) + 1) / 2


class BYOLModule(ViewPretraining):
    """BYOL on ``mobilenetv2_100``: the online network (backbone, projection, prediction head) predicts, from
    one view, the projection a momentum copy of its backbone and projection (the target, never trained by
    gradient) gives the other view; both directions, :func:`byol_loss`. After each step the target moves
    toward the online weights by ``1 - momentum`` (``momentum`` rising from ``momentum`` to 1 over the run,
    :func:`momentum_at`). No negatives, so no dependence on the batch size for them. The backbone handed on
    is the online one.

    Args:
        proj_dim, hidden_dim: projection and prediction head sizes.
        momentum: the target's momentum at the first step.
        lr, weight_decay: AdamW settings (cosine schedule over the run).
        min_scale, color, jitter_p, grayscale: the views (:class:`SimCLRViews`).
        channels_last: channels-last memory format (faster on CPU).
    """

    def __init__(
        self,
        proj_dim: int = 128,
        hidden_dim: int = 512,
        momentum: float = 0.99,
        lr: float = 1e-3,
        weight_decay: float = 1e-6,
        min_scale: float = 0.3,
        color: float = 0.4,
        jitter_p: float = 0.8,
        grayscale: float = 0.2,
        channels_last: bool = True,
    ) -> None:
        if not 0 <= momentum < 1:
            raise ValueError(f"pretrain.model.momentum={momentum} must be in [0, 1)")
        super().__init__(min_scale, color, jitter_p, grayscale, channels_last)
        self.save_hyperparameters()
        self.projector = mlp_head(self.features, hidden_dim, proj_dim)
        self.predictor = mlp_head(proj_dim, hidden_dim, proj_dim)
        self.target_backbone = copy.deepcopy(self.backbone)
        self.target_projector = copy.deepcopy(self.projector)
        for p in self.target_parameters():
            p.requires_grad_(False)
        self.momentum = momentum
        self.total_steps = 1  # set when training starts

    def target_parameters(self) -> list[torch.Tensor]:
        return [*self.target_backbone.parameters(), *self.target_projector.parameters()]

    def online_parameters(self) -> list[torch.Tensor]:
        return [*self.backbone.parameters(), *self.projector.parameters()]

    def predict_view(self, x01: torch.Tensor) -> torch.Tensor:
        return self.predictor(self.projector(self.backbone(self._normalise(x01))))

    @torch.no_grad()
    def target_view(self, x01: torch.Tensor) -> torch.Tensor:
        return self.target_projector(self.target_backbone(self._normalise(x01)))

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x = batch[0].float() / 255.0
        v1, v2 = self.views(x), self.views(x)
        loss = (byol_loss(self.predict_view(v1), self.target_view(v2)) +
                byol_loss(self.predict_view(v2), self.target_view(v1))) / 2  # fmt: skip
        self.log("ssl/train_loss", loss, prog_bar=True, on_epoch=True, on_step=False, batch_size=len(x))
        return loss

    @torch.no_grad()
    def update_target(self, momentum: float) -> None:
        """Move the target's weights toward the online ones: ``t <- m t + (1 - m) o``; its batch-norm
        statistics are copied from the online network."""
        torch._foreach_lerp_(self.target_parameters(), self.online_parameters(), 1 - momentum)
        for online, target in (
            (self.backbone, self.target_backbone),
            (self.projector, self.target_projector),
        ):
            for b_t, b_o in zip(target.buffers(), online.buffers(), strict=True):
                b_t.copy_(b_o)

    def on_train_start(self) -> None:
        self.total_steps = int(self.trainer.estimated_stepping_batches)  # once, not at every step

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.momentum = momentum_at(self.global_step, self.total_steps, self.hparams["momentum"])
        self.update_target(self.momentum)
