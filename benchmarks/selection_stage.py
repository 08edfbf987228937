"""The selection stage end to end (embed + K-means + pick + files), split into its parts.

    .venv/bin/python benchmarks/selection_stage.py [--checkpoint PATH] [--out benchmarks/results/selection_stage.json]

Pools: the default task's 12,000 images and all 60,000 Fashion-MNIST train images, at the CPU preset's
32x32 (and, with --image-size 64, the paper's size). The autoencoder's weights do not change the cost of
embedding; a trained checkpoint (--checkpoint, e.g. a job's autoencoder.ckpt) makes K-means converge as it
does in a real run.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch
from record import save_result

from datamodules import FashionMNISTDataModule
from imgselect.io.artifacts import write_selection
from imgselect.run.callbacks import embed_images
from imgselect.selection import KMeansSelector
from lightning_modules import AutoencoderModule


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", help="autoencoder checkpoint (weights) to embed with")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--budgets", type=int, nargs="+", default=[125, 1000])
    parser.add_argument("--out", default="benchmarks/results/selection_stage.json")
    args = parser.parse_args()
    channels = [32, 64] if args.image_size == 32 else [32, 64, 128]
    model = AutoencoderModule(image_size=args.image_size, channels=channels)
    if args.checkpoint:
        model.load_state_dict(
            torch.load(args.checkpoint, map_location="cpu", weights_only=False)[
                "state_dict"
            ]  # our own Lightning checkpoint
        )
    model.eval()
    rows = []
    for classes in ([0, 6], list(range(10))):
        dm = FashionMNISTDataModule(
            data_dir="data/fashion-mnist", classes=classes, image_size=args.image_size
        )
        dm.setup()
        pool = dm.pool
        t0 = time.perf_counter()
        emb = embed_images(model.embed, pool.images, batch_size=512, progress=False).numpy()
        t_embed = time.perf_counter() - t0
        for budget in args.budgets:
            for pick in ("random", "centroid"):
                sel = KMeansSelector(budget=budget, pick=pick, seed=0)
                t1 = time.perf_counter()
                selection = sel.select(len(pool), emb)
                t_select = time.perf_counter() - t1
                with tempfile.TemporaryDirectory() as tmp:
                    t2 = time.perf_counter()
                    write_selection(tmp, selection, pool)
                    t_write = time.perf_counter() - t2
                total = t_embed + t_select + t_write
                row = {
                    "pool": len(pool), "image_size": args.image_size, "budget": budget, "pick": pick,
                    "embed_s": t_embed, "kmeans_pick_s": t_select, "write_s": t_write, "total_s": total,
                    "kmeans_pick_share": t_select / total, "kmeans_objective": selection.stats["kmeans_objective"],
                }  # fmt: skip
                rows.append(row)
                print(
                    f"pool {len(pool):6d} budget {budget:5d} {pick:8s}: embed {t_embed:6.2f}s  K-means+pick {t_select:6.2f}s "
                    f"write {t_write:5.2f}s  total {total:6.2f}s  (K-means+pick {t_select / total:.0%})",
                    flush=True,
                )
    save_result(
        args.out,
        command="python benchmarks/selection_stage.py"
        + (f" --checkpoint {args.checkpoint}" if args.checkpoint else "")
        + f" --image-size {args.image_size}",
        rows=rows,
    )


if __name__ == "__main__":
    main()
