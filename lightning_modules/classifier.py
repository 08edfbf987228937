"""MobileNetV2 classifier (timm ``mobilenetv2_100``): Adam, BCE for two classes, paper augmentation."""

from __future__ import annotations

import logging
import math
import os
import socket
from pathlib import Path

import lightning.pytorch as pl
import torch
from torch import nn
from torch.nn import functional as F

from imgselect.io.weights import read_state_dict

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
ARCH = "mobilenetv2_100"
HUB_HOST = "huggingface.co"


def load_local_weights(model: nn.Module, path: str | Path) -> None:
    """Load ``mobilenetv2_100`` weights from a local ``.pth``/``.pt``/``.safetensors`` file into ``model``.

    The classification head is kept from ``model`` when its shape differs (another number of classes).

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is not weights of this architecture.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"classifier.pretrained={path}: no such file. Pass a local mobilenetv2_100 weights file "
            f"(.pth or .safetensors), or null to train from scratch"
        )
    state = read_state_dict(path)
    own = model.state_dict()
    head = {k for k in state if k.startswith("classifier.")}
    dropped = sorted(k for k in head if k in own and own[k].shape != state[k].shape)
    state = {k: v for k, v in state.items() if k not in dropped}
    missing, unexpected = model.load_state_dict(state, strict=False)
    backbone_missing = [k for k in missing if not k.startswith("classifier.")]
    if backbone_missing or unexpected:
        raise ValueError(
            f"{path} does not fit {ARCH}: {len(backbone_missing)} weights missing (e.g. {backbone_missing[:3]}), "
            f"{len(unexpected)} unexpected (e.g. {list(unexpected)[:3]})"
        )
    log.info(
        "classifier: loaded %s%s",
        path,
        f" (new head: {len(dropped)} tensors re-initialised)" if dropped else "",
    )


def reset_head(model: nn.Module) -> None:
    """Start the classification head neutral (all logits ~0).

    timm initialises a linear head uniformly in ``±1/sqrt(out_features)``: for the one-logit head of a
    binary task that is ``±1``, so over 1,280 features the first logits are ~±20 and BCE starts near 10
    and swings for many steps. A small normal init lets a few hundred labels train it.
    """
    head = model.get_classifier()  # type: ignore[operator]
    if isinstance(head, nn.Linear):
        nn.init.normal_(head.weight, std=0.01)
        nn.init.zeros_(head.bias)


def hub_reachable(host: str = HUB_HOST, timeout: float = 3.0) -> bool:
    """True when ``host:443`` accepts a TCP connection within ``timeout`` seconds."""
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def build_mobilenetv2(num_outputs: int, pretrained: str | None = None) -> nn.Module:
    """timm's ``mobilenetv2_100`` with ``num_outputs`` logits.

    Args:
        num_outputs: logits (1 for a binary task with BCE).
        pretrained: ``None`` (random init), a local weights file, or ``"hub"`` (timm's download; needs internet).
    """
    import timm

    if pretrained is None:
        log.warning(
            "classifier: no pretrained weights given (classifier.pretrained=null): training %s from scratch",
            ARCH,
        )
        model = timm.create_model(ARCH, pretrained=False, num_classes=num_outputs)
        reset_head(model)
        return model
    if pretrained == "hub":
        if os.environ.get("HF_HUB_OFFLINE") == "1" or not hub_reachable():
            raise RuntimeError(
                f"classifier.pretrained=hub needs {HUB_HOST}, which cannot be reached from here. Download the "
                f"ImageNet weights elsewhere (e.g. timm/{ARCH}.ra_in1k, model.safetensors) and pass the file: "
                f"classifier.pretrained=/path/to/model.safetensors"
            )
        model = timm.create_model(ARCH, pretrained=True, num_classes=num_outputs)
        if num_outputs != 1000:
            reset_head(model)
        return model
    model = timm.create_model(ARCH, pretrained=False, num_classes=num_outputs)
    reset_head(model)  # kept when the file's head fits; replaced by it otherwise
    load_local_weights(model, pretrained)
    return model


class BatchAugment(nn.Module):
    """Per-image random horizontal flip, rotation and horizontal/vertical shift (the paper's augmentation),
    done on the whole batch at once with one affine warp.

    Args:
        flip: probability of a horizontal flip.
        degrees: rotation drawn uniformly from ``[-degrees, degrees]``.
        shift: shift drawn uniformly from ``[-shift, shift]`` of the image side, per axis.
    """

    def __init__(self, flip: float = 0.5, degrees: float = 15.0, shift: float = 0.1) -> None:
        super().__init__()
        self.flip, self.degrees, self.shift = flip, degrees, shift

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = len(x)
        dev = x.device
        angle = (torch.rand(n, device=dev) * 2 - 1) * math.radians(self.degrees)
        sx = torch.where(torch.rand(n, device=dev) < self.flip, -1.0, 1.0)
        cos, sin = torch.cos(angle), torch.sin(angle)
        theta = torch.zeros(n, 2, 3, device=dev)
        theta[:, 0, 0], theta[:, 0, 1] = cos * sx, -sin
        theta[:, 1, 0], theta[:, 1, 1] = sin * sx, cos
        theta[:, :, 2] = (torch.rand(n, 2, device=dev) * 2 - 1) * 2 * self.shift  # grid units span 2
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


class ClassifierModule(pl.LightningModule):
    """MobileNetV2 trained with Adam; one logit + binary cross-entropy for two classes (the paper),
    softmax cross-entropy for more.

    Batches are ``(uint8 images, labels)``. Images are scaled and ImageNet-normalised here, in
    ``channels_last`` format. Logged: ``{stage}/loss``, and for validation ``val/acc``.

    Args:
        num_classes: classes of the task (2 -> one logit).
        pretrained: ``None``, a local weights file, or ``"hub"`` (``classifier.pretrained=ssl`` reaches here as
            the job's self-supervised backbone file, ``ssl_backbone.safetensors``).
        lr, weight_decay: Adam settings.
        augment: apply :class:`BatchAugment` while training.
        flip, degrees, shift: augmentation ranges.
        channels_last: channels-last memory format (~2.4× faster on CPU at 64×64).
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(
        self,
        num_classes: int = 2,
        pretrained: str | None = None,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        augment: bool = True,
        flip: float = 0.5,
        degrees: float = 15.0,
        shift: float = 0.1,
        channels_last: bool = True,
    ) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes={num_classes}: a classifier needs at least 2 classes")
        if pretrained == "ssl":  # the pipeline replaces it with the job's backbone file
            raise ValueError(
                "classifier.pretrained=ssl starts from the job's pretraining: add pretrain=ssl or pretrain=byol"
            )
        self.save_hyperparameters()
        self.binary = num_classes == 2
        self.net = build_mobilenetv2(1 if self.binary else num_classes, pretrained)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.net = self.net.to(memory_format=self.memory_format)
        self.augment = BatchAugment(flip, degrees, shift) if augment else nn.Identity()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) * 255, persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255, persistent=False)

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        return ((x.float() - self.mean) / self.std).contiguous(memory_format=self.memory_format)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits: ``(n,)`` for two classes, ``(n, C)`` otherwise."""
        out = self.net(self.prepare(x))
        return out.squeeze(1) if self.binary else out

    def loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.binary:
            return F.binary_cross_entropy_with_logits(logits, y.float())
        return F.cross_entropy(logits, y)

    @torch.no_grad()
    def predict_proba(self, x: torch.Tensor) -> torch.Tensor:
        """Class probabilities ``(n, C)`` (two classes: ``[1 - p, p]``)."""
        logits = self(x)
        if self.binary:
            p = torch.sigmoid(logits)
            return torch.stack([1 - p, p], dim=1)
        return torch.softmax(logits, dim=1)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        x = self.augment(self.prepare(x))
        out = self.net(x)
        loss = self.loss(out.squeeze(1) if self.binary else out, y)
        self.log("train/loss", loss, prog_bar=True, on_epoch=True, on_step=False, batch_size=len(y))
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        pred = (logits > 0).long() if self.binary else logits.argmax(1)
        self.log("val/loss", self.loss(logits, y), prog_bar=True, sync_dist=True, batch_size=len(y))
        self.log("val/acc", (pred == y).float().mean(), prog_bar=True, sync_dist=True, batch_size=len(y))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(
            self.parameters(), lr=self.hparams["lr"], weight_decay=self.hparams["weight_decay"]
        )
