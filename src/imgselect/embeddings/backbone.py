"""Features of a timm network with local weights (no download at run time): its pooled head, or its stages
read before the last strides as well."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch.nn import functional as F

from imgselect.embeddings.base import EmbedContext, EmbedOutput
from imgselect.embeddings.probe import probe_if_labeled
from imgselect.io.cache import sha256_file
from imgselect.io.weights import read_state_dict
from imgselect.run.progress import Progress
from imgselect.run.runtime import is_rank_zero

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
HEAD_PREFIXES = ("fc.", "classifier.", "head.", "head_drop.", "last_linear.")
READOUTS = ("pooled", "stages")


def stage_features(net: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The ``stages`` readout of a timm network (no head) for a normalised batch ``x``: each stage's output from
    stride 4 on averaged over its map, and the pooled head, each L2-normalised, side by side.

    At 32x32 a network's last stride leaves a 1x1 map, which keeps little of what tells small images apart; the
    stages before it keep more (docs/BENCHMARKS.md, "Which layer of the pretrained network to read": +4.3 points
    of 10-NN accuracy over the pooled head for the pool's SimCLR backbone on ten classes).
    """
    final, maps = net.forward_intermediates(x)  # type: ignore[operator]
    strides = [int(info["reduction"]) for info in net.feature_info]  # type: ignore[union-attr]
    parts = [m.mean((2, 3)) for m, stride in zip(maps, strides, strict=True) if stride >= 4]
    parts.append(net.forward_head(final))  # type: ignore[operator]
    return torch.cat([F.normalize(p.flatten(1).float(), dim=1) for p in parts], dim=1)


class BackboneEmbedding:
    """A timm network's features (classification head removed): the pooled head, or :func:`stage_features`.

    Weights come from a local file only; nothing is downloaded. A network with random weights gives
    features that reflect its architecture, not learned content: allowed only when asked for
    (``random_init=true``) and said in the log.

    Args:
        model: a timm architecture name (``resnet18``, ``mobilenetv2_100``, ``vit_small_patch16_224``, ...).
        weights: a local ``.pth``/``.safetensors`` of that architecture (the head may be missing or any size).
        random_init: allow random weights when ``weights`` is ``None``.
        image_size: side the images are resized to before the network (``None``: the pool's own size).
        batch_size: images per forward pass.
        device: ``auto`` (CUDA when available), ``cpu`` or ``cuda``.
        features: ``pooled`` (the head's features) or ``stages`` (:func:`stage_features`).
        probe_k: k of the k-NN probe of the features, run when the pool's labels are known (diagnosis only).
    """

    name = "backbone"
    cacheable = True
    from_pretraining = False

    def __init__(
        self,
        model: str = "resnet18",
        weights: str | None = None,
        random_init: bool = False,
        image_size: int | None = None,
        batch_size: int = 256,
        device: str = "auto",
        features: str = "pooled",
        probe_k: int = 10,
    ) -> None:
        import timm

        if features not in READOUTS:
            raise ValueError(f"embedding.features={features!r}: use one of {', '.join(READOUTS)}")
        if not timm.is_model(model):
            raise ValueError(f"embedding.model={model!r} is not a timm architecture (see timm.list_models())")
        self.weights = Path(weights) if weights else None
        if self.weights is None and not random_init:
            raise ValueError(
                f"embedding=backbone needs local weights: embedding.weights=/path/to/{model}.safetensors "
                f"(nothing is downloaded at run time). To use an untrained network as a baseline, set "
                f"embedding.random_init=true"
            )
        if self.weights is not None and not self.weights.is_file():
            raise FileNotFoundError(f"embedding.weights={self.weights}: no such file")
        self.model, self.random_init = model, random_init and self.weights is None
        self.image_size, self.batch_size, self.device = image_size, batch_size, device
        self.features, self.probe_k = features, probe_k
        self.seeded = self.random_init

    def settings(self) -> dict[str, Any]:
        # a pooled entry keeps the key it had before the stages reading existed
        readout = {"features": self.features} if self.features != "pooled" else {}
        return {
            "model": self.model,
            "weights": str(self.weights) if self.weights else None,
            "weights_sha256": sha256_file(self.weights)[:16] if self.weights else None,
            "random_init": self.random_init,
            "image_size": self.image_size,
            **readout,
        }

    def build(self) -> torch.nn.Module:
        """The network without its head, weights loaded (or random, when allowed)."""
        import timm

        net = timm.create_model(self.model, pretrained=False, num_classes=0)
        if self.weights is None:
            log.warning(
                "embedding: %s with RANDOM weights (embedding.random_init=true): a baseline only", self.model
            )
            return net
        state = {k: v for k, v in read_state_dict(self.weights).items() if not k.startswith(HEAD_PREFIXES)}
        try:
            missing, unexpected = net.load_state_dict(state, strict=False)
        except RuntimeError as e:  # shapes that differ
            raise ValueError(
                f"{self.weights} does not fit {self.model}: {str(e).splitlines()[-1].strip()}"
            ) from e
        if missing or unexpected:
            raise ValueError(
                f"{self.weights} does not fit {self.model}: {len(missing)} weights missing (e.g. {missing[:3]}), "
                f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})"
            )
        log.info("embedding: %s with weights from %s", self.model, self.weights)
        return net

    @torch.no_grad()
    def compute(self, ctx: EmbedContext) -> EmbedOutput:
        torch.manual_seed(ctx.seed)
        device = torch.device("cuda" if self.device == "auto" and torch.cuda.is_available() else
                              "cpu" if self.device == "auto" else self.device)  # fmt: skip
        net = self.build().eval().to(device).to(memory_format=torch.channels_last)
        mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)
        images = ctx.pool.images
        out = []
        with Progress(len(images), f"Embedding pool ({self.model})", "images", enabled=is_rank_zero()) as bar:
            for i in range(0, len(images), self.batch_size):
                x = images[i : i + self.batch_size].to(device).float().div_(255.0)
                if self.image_size and x.shape[-1] != self.image_size:
                    x = F.interpolate(
                        x, size=(self.image_size, self.image_size), mode="bilinear", antialias=True
                    )
                x = ((x - mean) / std).contiguous(memory_format=torch.channels_last)
                out.append((net(x) if self.features == "pooled" else stage_features(net, x)).float().cpu())
                bar.advance(len(x))
        emb = torch.cat(out).numpy()
        metrics: dict[str, Any] = {"dim": int(emb.shape[1]), "random_init": self.random_init}
        if self.features != "pooled":
            metrics["features"] = self.features
        what = f"embedding: the {self.features} features of {self.model}"
        metrics.update(probe_if_labeled(emb, ctx.pool.labels, self.probe_k, ctx.seed, what))
        return EmbedOutput(embeddings=emb, metrics=metrics)
