"""FixMatch (Sohn et al., NeurIPS 2020) with FlexMatch's class-wise thresholds (Zhang et al., NeurIPS 2021) as
an option: a classifier learns from a few labeled images and the whole unlabeled pool at once.

Each step takes ``B`` labeled images (weakly augmented: flip, rotation, shift) and ``mu * B`` unlabeled ones.
The model's prediction on a weak view of an unlabeled image becomes its label where the prediction is
confident (``>= threshold``); the model is then trained to predict that label on a *strong* view of the same
image (RandAugment + Cutout). Low-confidence images add no loss. FlexMatch lowers the threshold of classes
the model rarely predicts confidently yet (their "learning effect"), so hard classes are not starved early.
An exponential moving average of the weights (timm's ``ModelEmaV3``, with its decay warm-up: a short CPU run
is not dominated by the random start) is the model that predicts.
"""

from __future__ import annotations

import math
from typing import Any

import lightning.pytorch as pl
import torch
from timm.utils import ModelEmaV3
from torch import nn
from torch.nn import functional as F
from torchvision.transforms import v2

from lightning_modules.classifier import ClassifierModule


class StrongAugment(nn.Module):
    """FixMatch's strong view of a uint8 batch: RandAugment (``num_ops`` random operations of ``magnitude``,
    drawn per image), then on the normalised batch the weak augmentation and a Cutout square of up to
    ``cutout`` of the side at a random place, per image."""

    def __init__(self, num_ops: int = 2, magnitude: int = 10, cutout: float = 0.5) -> None:
        super().__init__()
        self.randaugment = v2.RandAugment(num_ops=num_ops, magnitude=magnitude)
        self.cutout = cutout

    def pixels(self, x: torch.Tensor) -> torch.Tensor:
        """RandAugment of each uint8 image of ``x`` ``(n, 3, h, w)``, drawn independently."""
        return torch.stack([self.randaugment(xi) for xi in x])

    def erase(self, x: torch.Tensor) -> torch.Tensor:
        """Cutout: a square of side up to ``cutout`` of the image, set to 0 (the mean of a normalised image)."""
        if self.cutout <= 0:
            return x
        n, _, h, w = x.shape
        dev = x.device
        side = (torch.rand(n, device=dev) * self.cutout * min(h, w)).clamp(min=1)
        cy, cx = torch.rand(n, device=dev) * h, torch.rand(n, device=dev) * w
        ys = torch.arange(h, device=dev).view(1, h, 1)
        xs = torch.arange(w, device=dev).view(1, 1, w)
        half = (side / 2).view(n, 1, 1)
        inside = ((ys - cy.view(n, 1, 1)).abs() <= half) & ((xs - cx.view(n, 1, 1)).abs() <= half)
        return x.masked_fill(inside.unsqueeze(1), 0.0)


def flex_thresholds(
    learned: torch.Tensor, n_classes: int, threshold: float, warmup: bool = True
) -> torch.Tensor:
    """FlexMatch's per-class thresholds ``threshold * M(beta_c)`` with ``M(x) = x / (2 - x)``.

    Args:
        learned: ``(n_unlabeled,)`` the class each unlabeled image was last predicted as with confidence above
            ``threshold``, ``-1`` for none yet.
        warmup: normalise by the images not yet learned too while they outnumber every class (FlexMatch's
            threshold warm-up: thresholds rise from low to high as the model learns, instead of starting
            high for whichever class was learned first).

    Returns:
        ``(n_classes,)`` thresholds.
    """
    counts = torch.bincount(learned[learned >= 0], minlength=n_classes).float()
    top = counts.max()
    if warmup:
        top = torch.maximum(top, (learned < 0).sum().float())
    beta = counts / top.clamp(min=1)
    return threshold * beta / (2 - beta)


class FixMatchModule(pl.LightningModule):
    """Trains ``classifier``'s network with FixMatch; :meth:`finished_classifier` gives the classifier with
    the averaged (EMA) weights.

    Batches are ``{"labeled": (uint8 images, labels), "unlabeled": (pool positions, uint8 images)}``.

    Args:
        classifier: the classifier to train (its network, normalisation, weak augmentation and loss).
        n_unlabeled: unlabeled images (the size of FlexMatch's learning-effect table).
        total_steps: optimizer steps of the run (the cosine schedule spans them).
        threshold: confidence a weak-view prediction needs to become a label (FixMatch: 0.95).
        lambda_u: weight of the unlabeled loss.
        flex: FlexMatch's class-wise thresholds instead of one threshold.
        flex_warmup: FlexMatch's threshold warm-up.
        ema_decay: decay of the weight average (``0``: no average, the last weights predict).
        optimizer: ``sgd`` (FixMatch: Nesterov momentum 0.9) or ``adam``.
        lr, weight_decay: the optimizer's; the rate follows FixMatch's cosine ``cos(7 pi t / 16 T)``.
        randaug_ops, randaug_magnitude, cutout: the strong view (:class:`StrongAugment`).
        unlabeled_labels: the unlabeled images' true labels when known (a benchmark): only to log how right the
            pseudo-labels are, never used to train.
    """

    def __init__(
        self,
        classifier: ClassifierModule,
        n_unlabeled: int,
        total_steps: int,
        threshold: float = 0.95,
        lambda_u: float = 1.0,
        flex: bool = False,
        flex_warmup: bool = True,
        ema_decay: float = 0.999,
        optimizer: str = "sgd",
        lr: float = 0.03,
        weight_decay: float = 5e-4,
        randaug_ops: int = 2,
        randaug_magnitude: int = 10,
        cutout: float = 0.5,
        unlabeled_labels: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        if not 0 < threshold <= 1:
            raise ValueError(f"semi.threshold={threshold} must be in (0, 1]")
        if optimizer not in ("sgd", "adam"):
            raise ValueError(f"semi.optimizer={optimizer!r}: use sgd or adam")
        if total_steps < 1 or n_unlabeled < 1:
            raise ValueError(f"FixMatch needs steps ({total_steps}) and unlabeled images ({n_unlabeled})")
        self.save_hyperparameters(ignore=["classifier", "unlabeled_labels"])
        self.classifier = classifier
        self.n_classes = 2 if classifier.binary else int(classifier.hparams["num_classes"])
        self.strong = StrongAugment(randaug_ops, randaug_magnitude, cutout)
        self.learned: torch.Tensor
        self.register_buffer("learned", torch.full((n_unlabeled,), -1, dtype=torch.long), persistent=False)
        self.unlabeled_labels = unlabeled_labels
        # kept out of the module tree (a list): Lightning would put the average in train mode and count its
        # weights; it moves to the model's device at the start of fit
        self._ema = [ModelEmaV3(classifier.net, decay=ema_decay, use_warmup=True)] if ema_decay > 0 else []

    @property
    def ema(self) -> ModelEmaV3 | None:
        """The weight average (``None`` with ``ema_decay=0``)."""
        return self._ema[0] if self._ema else None

    def on_fit_start(self) -> None:
        if self.ema is not None:
            self.ema.module.to(self.device)

    def _probs(self, logits: torch.Tensor) -> torch.Tensor:
        if self.classifier.binary:
            p = torch.sigmoid(logits.squeeze(1))
            return torch.stack([1 - p, p], dim=1)
        return torch.softmax(logits, dim=1)

    def _loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-image cross-entropy (binary: BCE of the one logit)."""
        if self.classifier.binary:
            return F.binary_cross_entropy_with_logits(logits.squeeze(1), y.float(), reduction="none")
        return F.cross_entropy(logits, y, reduction="none")

    def thresholds(self) -> torch.Tensor:
        """``(n_classes,)`` the confidence each class's pseudo-labels need now."""
        tau = float(self.hparams["threshold"])
        if not self.hparams["flex"]:
            return torch.full((self.n_classes,), tau, device=self.learned.device)
        return flex_thresholds(self.learned, self.n_classes, tau, bool(self.hparams["flex_warmup"]))

    def pseudo_labels(self, weak_logits: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Labels, mask and confidence from the weak view's logits; records FlexMatch's learning effect."""
        probs = self._probs(weak_logits.detach())
        conf, label = probs.max(dim=1)
        mask = conf >= self.thresholds()[label]
        confident = conf > float(self.hparams["threshold"])
        self.learned[positions[confident]] = label[confident]
        return label, mask, conf

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        c = self.classifier
        x, y = batch["labeled"]
        positions, u = batch["unlabeled"]
        weak_l = c.augment(c.prepare(x))
        weak_u = c.augment(c.prepare(u))
        strong_u = self.strong.erase(c.augment(c.prepare(self.strong.pixels(u))))
        logits = c.net(torch.cat([weak_l, weak_u, strong_u]))  # one pass: BatchNorm sees every view
        logits_l, logits_w, logits_s = logits.split([len(x), len(u), len(u)])
        loss_x = self._loss(logits_l, y).mean()
        label, mask, _ = self.pseudo_labels(logits_w, positions)
        loss_u = (self._loss(logits_s, label) * mask.float()).mean()
        loss = loss_x + float(self.hparams["lambda_u"]) * loss_u
        n = len(y)
        self.log("train/loss", loss, prog_bar=True, on_epoch=True, on_step=False, batch_size=n)
        self.log("train/loss_x", loss_x, on_epoch=True, on_step=False, batch_size=n)
        self.log("train/loss_u", loss_u, on_epoch=True, on_step=False, batch_size=n)
        self.log("train/mask", mask.float().mean(), prog_bar=True, on_epoch=True, on_step=False, batch_size=n)
        if self.unlabeled_labels is not None and bool(mask.any()):
            truth = self.unlabeled_labels.to(positions.device)[positions]
            right = (label[mask] == truth[mask]).float().mean()
            self.log("train/pseudo_acc", right, prog_bar=True, on_epoch=True, on_step=False, batch_size=n)
        return loss

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.ema is not None:
            self.ema.update(self.classifier.net, step=self.global_step)

    def finished_classifier(self) -> ClassifierModule:
        """The classifier with the averaged weights (or the last ones without an average), in eval mode."""
        if self.ema is not None:
            self.classifier.net.load_state_dict(self.ema.module.state_dict())
        return self.classifier.eval()

    def configure_optimizers(self) -> Any:
        hp = self.hparams
        decay: list[nn.Parameter] = []
        no_decay: list[nn.Parameter] = []
        for name, p in self.classifier.net.named_parameters():
            (no_decay if p.ndim <= 1 or name.endswith(".bias") else decay).append(p)
        groups = [
            {"params": decay, "weight_decay": float(hp["weight_decay"])},
            {"params": no_decay, "weight_decay": 0.0},
        ]
        opt: torch.optim.Optimizer
        if hp["optimizer"] == "sgd":
            opt = torch.optim.SGD(groups, lr=float(hp["lr"]), momentum=0.9, nesterov=True)
        else:
            opt = torch.optim.AdamW(groups, lr=float(hp["lr"]))
        total = int(hp["total_steps"])
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: math.cos(7 * math.pi * min(s, total) / (16 * total))
        )
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
