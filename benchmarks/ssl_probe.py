"""Does self-supervised pretraining learn class-separating features? 10-NN accuracy vs epochs (issue 13).

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/ssl_probe.py --epochs 30 --every 5 \\
        --out benchmarks/results/ssl_probe.json

Pretrains SimCLR (``conf/pretrain/ssl.yaml``'s model, the CPU preset: 32x32, batch 256, cosine schedule over
``--epochs``) on the default task's 12,000-image pool and, every ``--every`` epochs, measures the 10-NN accuracy
of the backbone's pooled features on a held-out fifth of the pool (:func:`imgselect.embeddings.ssl.knn_probe`,
labels used for this diagnosis only) and the wall time so far. Baselines with the same probe: the raw pixels,
the pixels embedding (16x16, PCA-50) and the randomly initialised backbone (epoch 0).

``--method byol`` pretrains BYOL (``conf/pretrain/byol.yaml``'s model) instead, with the same views, probe and
schedule.

Another pool: ``--classes 0 1 2 3 4 5 6 7 8 9 --pool-limit 12000`` (the ten-class table's); ``--epochs 0``
measures the baselines only, with the held-out fifth of ``--seed`` (a job's probe uses the job's seed):

    .venv/bin/python benchmarks/ssl_probe.py --classes 0 1 2 3 4 5 6 7 8 9 --pool-limit 12000 \
        --epochs 0 --seed 1 --out /tmp/baselines_seed1.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
import yaml
from torch.utils.data import DataLoader, TensorDataset

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

from datamodules import FashionMNISTDataModule  # noqa: E402
from datamodules.fashion_mnist import CLASS_NAMES  # noqa: E402
from imgselect.embeddings.backbone import stage_features  # noqa: E402
from imgselect.embeddings.probe import knn_probe  # noqa: E402
from imgselect.run.callbacks import embed_images  # noqa: E402
from lightning_modules.ssl import BYOLModule, SimCLRModule, ViewPretraining  # noqa: E402


@torch.no_grad()
def tap_features(model: ViewPretraining, images: torch.Tensor, batch: int = 512) -> dict[str, np.ndarray]:
    """Features of ``images`` taken at each stage of the backbone, not only after its last stride: the stage
    outputs averaged over their map (``s4``..``s32``) and flattened (``s16_flat``: the 2x2 map at 32x32), the
    pooled 1280-d head (``pool``, what the job uses) and the L2-normalised pooled stages side by side
    (``concat``)."""
    model.eval()
    names = ["s2", "s4", "s8", "s16", "s32"]
    out: dict[str, list[np.ndarray]] = {}
    for start in range(0, len(images), batch):
        x = model._normalise(images[start : start + batch].float() / 255.0)
        maps = model.backbone.forward_intermediates(x, intermediates_only=True)  # type: ignore[operator]
        feats = {f"{n}_avg": m.mean((2, 3)) for n, m in zip(names, maps, strict=True)}
        feats["s16_flat"] = maps[3].flatten(1)
        feats["pool"] = model.backbone(x)
        feats["concat"] = stage_features(model.backbone, x)  # embedding=ssl embedding.features=stages
        for k, v in feats.items():
            out.setdefault(k, []).append(v.float().numpy())
    model.train()
    return {k: np.concatenate(v) for k, v in out.items()}


METHODS: dict[str, type[ViewPretraining]] = {"simclr": SimCLRModule, "byol": BYOLModule}


class Probe(pl.Callback):
    """10-NN accuracy of the backbone's features every ``every`` epochs (with ``taps``, of each stage's too)."""

    def __init__(
        self, images: torch.Tensor, labels: np.ndarray, every: int, t0: float, taps: bool = False
    ) -> None:
        self.images, self.labels, self.every, self.t0, self.taps = images, labels, every, t0, taps
        self.rows: list[dict[str, Any]] = []

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        epoch = trainer.current_epoch + 1
        if epoch % self.every and epoch != trainer.max_epochs:
            return
        train_s = time.perf_counter() - self.t0 - sum(r["probe_s"] for r in self.rows)
        t = time.perf_counter()
        feats = embed_images(pl_module.embed, self.images, 512, "cpu", False).numpy()  # type: ignore[arg-type]
        acc = knn_probe(feats, self.labels, 10, seed=0)["knn_accuracy"]
        loss = float(trainer.callback_metrics.get("ssl/train_loss", float("nan")))
        row: dict[str, Any] = {
            "epoch": epoch,
            "knn_accuracy": acc,
            "train_loss": loss,
            "train_s": round(train_s, 1),
        }
        if self.taps:
            row["taps"] = {
                k: knn_probe(f, self.labels, 10, seed=0)["knn_accuracy"]
                for k, f in tap_features(pl_module, self.images).items()  # type: ignore[arg-type]
            }
        row["probe_s"] = round(time.perf_counter() - t, 1)
        self.rows.append(row)
        print(json.dumps(row), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--every", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--image-size", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--method", choices=sorted(METHODS), default="simclr", help="pretrain=ssl (simclr) or byol"
    )
    ap.add_argument(
        "--classes", type=int, nargs="+", default=[0, 6], help="Fashion-MNIST classes of the pool"
    )
    ap.add_argument("--pool-limit", type=int, default=None, help="the first N train images of those classes")
    ap.add_argument(
        "--model",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="the module's settings other than its conf/pretrain defaults, e.g. min_scale=0.6 temperature=0.2",
    )
    ap.add_argument("--taps", action="store_true", help="also probe each backbone stage's features")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    # values as YAML reads them (0.6 -> float, 64 -> int, false -> bool), as a Hydra override would
    model_kw = {k: yaml.safe_load(v) for k, v in (item.split("=", 1) for item in args.model)}
    pl.seed_everything(args.seed, workers=True)
    dm = FashionMNISTDataModule(
        data_dir=str(ROOT / "data" / "fashion-mnist"),
        classes=args.classes,
        pool_limit=args.pool_limit,
        image_size=args.image_size,
    )
    dm.setup()
    pool = dm.pool
    assert pool.labels is not None
    labels = pool.labels
    baselines = {}
    raw = pool.images.reshape(len(pool), -1).float().numpy()
    baselines["raw pixels"] = knn_probe(raw, labels, 10, seed=args.seed)["knn_accuracy"]
    small = torch.nn.functional.interpolate(pool.images.float(), size=(16, 16), mode="area").reshape(
        len(pool), -1
    )
    centred = small - small.mean(0)
    _, _, v = torch.pca_lowrank(centred, q=50, center=False)
    baselines["pixels embedding (16x16, PCA-50)"] = knn_probe(
        (centred @ v).numpy(), labels, 10, seed=args.seed
    )["knn_accuracy"]
    model = METHODS[args.method](**model_kw)
    feats0 = embed_images(model.embed, pool.images, 512, "cpu", False).numpy()
    baselines["mobilenetv2_100, random init (epoch 0)"] = knn_probe(feats0, labels, 10, seed=args.seed)[
        "knn_accuracy"
    ]
    if args.taps:
        baselines["mobilenetv2_100, random init (epoch 0), by stage"] = {
            k: knn_probe(f, labels, 10, seed=args.seed)["knn_accuracy"]
            for k, f in tap_features(model, pool.images).items()
        }
    print(json.dumps(baselines, indent=2), flush=True)
    names = (
        " vs ".join(CLASS_NAMES[c] for c in args.classes)
        if len(args.classes) < 4
        else f"{len(args.classes)} classes"
    )
    described = (
        f"Fashion-MNIST {names}, train split, {len(pool)} images at {args.image_size}x{args.image_size}"
    )
    probe_text = f"10-NN (cosine) accuracy on a held-out fifth of the pool, seed {args.seed}"
    if args.epochs == 0:
        result = {"command": " ".join([".venv/bin/python", *sys.argv]), "pool": described, "probe": probe_text,
                  "baselines": baselines}  # fmt: skip
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
        return

    loader = DataLoader(
        TensorDataset(pool.images, torch.arange(len(pool))),
        batch_size=args.batch_size,
        shuffle=True,
        drop_last=True,
    )
    t0 = time.perf_counter()
    probe = Probe(pool.images, labels, args.every, t0, taps=args.taps)
    trainer = pl.Trainer(
        max_epochs=args.epochs,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[probe],
    )
    trainer.fit(model, train_dataloaders=loader)
    result: dict[str, Any] = {
        "command": " ".join(
            [f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '')}", ".venv/bin/python", *sys.argv]
        ),
        "pool": described,
        "probe": probe_text,
        "settings": {
            "method": args.method,
            **dict(model.hparams),
            "epochs": args.epochs,
            "batch_size": args.batch_size,
        },
        "baselines": baselines,
        "curve": probe.rows,
        "threads": torch.get_num_threads(),
    }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
