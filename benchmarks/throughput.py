"""Training throughput inside the real pipeline (Lightning Trainer + our DataLoaders) against the bare model
step on tensors already in memory, same batch size: is the data path a bottleneck?

    .venv/bin/python benchmarks/throughput.py [--image-size 32] [--out benchmarks/results/throughput.json]

Autoencoder: the Fashion-MNIST pool datamodule. Classifier: the labeled loader the pipeline builds
(TensorDataset of uint8 images, augmentation on the batch). Images/s are measured over the same number of
steps after warm-up; the first steps (allocation, oneDNN kernel choice) are excluded from both.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from record import save_result

from datamodules import FashionMNISTDataModule
from imgselect.stages.classify import make_loader as _loader
from lightning_modules import AutoencoderModule, ClassifierModule


class StepTimer(pl.Callback):
    """Wall time from the start of step ``warmup`` to the end of the last step."""

    def __init__(self, warmup: int) -> None:
        self.warmup = warmup
        self.t0 = 0.0
        self.t1 = 0.0
        self.images = 0

    def on_train_batch_start(self, trainer: pl.Trainer, module: Any, batch: Any, batch_idx: int) -> None:
        if batch_idx == self.warmup:
            self.t0 = time.perf_counter()

    def on_train_batch_end(
        self, trainer: pl.Trainer, module: Any, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if batch_idx >= self.warmup:
            self.images += len(batch[0])
            self.t1 = time.perf_counter()


def bare(module: Any, batches: list[tuple[torch.Tensor, torch.Tensor]], warmup: int) -> float:
    opt = module.configure_optimizers()
    module.train()
    n, t0 = 0, 0.0
    for i, batch in enumerate(batches):
        if i == warmup:
            t0 = time.perf_counter()
        loss = module.training_step(batch, i)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if i >= warmup:
            n += len(batch[0])
    return n / (time.perf_counter() - t0)


def in_pipeline(module: Any, loader: Any, steps: int, warmup: int) -> float:
    timer = StepTimer(warmup)
    trainer = pl.Trainer(
        accelerator="cpu", max_epochs=1, limit_train_batches=steps, limit_val_batches=0, logger=False,
        enable_checkpointing=False, enable_progress_bar=True, enable_model_summary=False, callbacks=[timer],
    )  # fmt: skip
    trainer.fit(module, train_dataloaders=loader)
    return timer.images / (timer.t1 - timer.t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--out", default="benchmarks/results/throughput.json")
    args = parser.parse_args()
    torch.manual_seed(0)
    dm = FashionMNISTDataModule(data_dir="data/fashion-mnist", image_size=args.image_size)
    dm.setup()
    channels = [32, 64] if args.image_size == 32 else [32, 64, 128]
    rows = []

    # autoencoder
    ae_loader = dm.train_dataloader()
    it = iter(ae_loader)
    batches = [next(it) for _ in range(args.steps)]
    ae_bare = bare(AutoencoderModule(image_size=args.image_size, channels=channels), batches, args.warmup)
    ae_pipe = in_pipeline(
        AutoencoderModule(image_size=args.image_size, channels=channels),
        dm.train_dataloader(),
        args.steps,
        args.warmup,
    )
    rows.append(
        {"model": "autoencoder", "bare_img_s": ae_bare, "pipeline_img_s": ae_pipe, "ratio": ae_pipe / ae_bare}
    )

    # classifier (binary, augmentation on)
    rng = np.random.default_rng(0)
    idx = rng.choice(len(dm.pool), 128 * args.steps, replace=False)
    x, y = dm.pool.images[idx], dm.pool.labels[idx]
    cls_loader = _loader(x, y, 128, shuffle=True)
    batches = [(x[i : i + 128], torch.as_tensor(y[i : i + 128])) for i in range(0, len(x), 128)]
    c_bare = bare(ClassifierModule(), batches, args.warmup)
    c_pipe = in_pipeline(ClassifierModule(), cls_loader, args.steps, args.warmup)
    rows.append(
        {
            "model": "classifier (MobileNetV2)",
            "bare_img_s": c_bare,
            "pipeline_img_s": c_pipe,
            "ratio": c_pipe / c_bare,
        }
    )

    for r in rows:
        print(
            f"{r['model']:26s} bare {r['bare_img_s']:7.1f} img/s  pipeline {r['pipeline_img_s']:7.1f} img/s  ratio {r['ratio']:.0%}"
        )
    save_result(
        args.out,
        command=f"python benchmarks/throughput.py --image-size {args.image_size} --steps {args.steps}",
        image_size=args.image_size,
        batch_size=128,
        rows=rows,
    )


if __name__ == "__main__":
    main()
