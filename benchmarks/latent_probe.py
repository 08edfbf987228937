"""Why does (or doesn't) autoencoder selection help? Evidence that needs no classifier training.

    .venv/bin/python benchmarks/latent_probe.py --checkpoint PATH/autoencoder.ckpt [--out benchmarks/results/latent_probe.json]

On the default task's pool (Fashion-MNIST train split, T-shirt/top vs Shirt, 12,000 images; the labels
are used here for diagnosis only, never by the selection):

1. How well the latent space separates the classes: k-NN (k=10) accuracy on 10,000 pool images -> the
   other 2,000 pool images (a split held out from the train split; the validation set is not touched),
   for the trained autoencoder's latents, an untrained autoencoder's, and raw pixels.
2. Class coverage of the chosen sets: share of the minority class among the picks of each selector, for
   budgets 125/200/500/1000 over 5 seeds.
3. Reconstruction quality: MSE on those 2,000 held-out pool images.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from record import save_result

from datamodules import FashionMNISTDataModule
from imgselect.run.callbacks import embed_images
from imgselect.selection import KMeansSelector, RandomSelector
from lightning_modules import AutoencoderModule


def knn_accuracy(train: np.ndarray, ytr: np.ndarray, test: np.ndarray, yte: np.ndarray, k: int = 10) -> float:
    import faiss

    index = faiss.IndexFlatL2(train.shape[1])
    index.add(np.ascontiguousarray(train, dtype=np.float32))
    _, nn = index.search(np.ascontiguousarray(test, dtype=np.float32), k)
    votes = ytr[nn]
    pred = (votes.mean(1) > 0.5).astype(np.int64)
    return float((pred == yte).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--out", default="benchmarks/results/latent_probe.json")
    args = parser.parse_args()
    channels = [32, 64] if args.image_size == 32 else [32, 64, 128]
    dm = FashionMNISTDataModule(data_dir="data/fashion-mnist", image_size=args.image_size)
    dm.setup()
    x, y = dm.pool.images, dm.pool.labels
    rng = np.random.default_rng(0)
    perm = rng.permutation(len(x))
    tr, te = perm[:10000], perm[10000:]

    trained = AutoencoderModule(image_size=args.image_size, channels=channels)
    ckpt = torch.load(args.checkpoint, map_location="cpu", weights_only=False)  # our own Lightning checkpoint
    trained.load_state_dict(ckpt["state_dict"])
    torch.manual_seed(0)
    untrained = AutoencoderModule(image_size=args.image_size, channels=channels)
    reps = {
        "trained autoencoder latent (512-d)": embed_images(trained.eval().embed, x, progress=False).numpy(),
        "untrained autoencoder latent (512-d)": embed_images(
            untrained.eval().embed, x, progress=False
        ).numpy(),
        f"raw pixels ({3 * args.image_size**2}-d)": x.reshape(len(x), -1).float().numpy() / 255.0,
    }
    knn = {name: knn_accuracy(r[tr], y[tr], r[te], y[te]) for name, r in reps.items()}
    for name, acc in knn.items():
        print(f"k-NN accuracy, {name}: {acc:.3f}")

    with torch.no_grad():
        xt = trained.prepare(x[te])
        mse = float(torch.nn.functional.mse_loss(trained.net(xt), xt))
    print(f"reconstruction MSE on 2,000 held-out pool images: {mse:.5f}")

    emb = reps["trained autoencoder latent (512-d)"]
    coverage = []
    for budget in (125, 200, 500, 1000):
        for seed in range(args.seeds):
            for name, sel in (
                ("random", RandomSelector(budget, seed)),
                ("ae (random pick)", KMeansSelector(budget, "random", seed=seed)),
                ("ae (centroid pick)", KMeansSelector(budget, "centroid", seed=seed)),
            ):
                idx = sel.select(len(x), emb).indices
                share = float(y[idx].mean())  # share of class 1 (Shirt)
                coverage.append({"budget": budget, "seed": seed, "selector": name, "shirt_share": share})
    summary = {}
    for budget in (125, 200, 500, 1000):
        for name in ("random", "ae (random pick)", "ae (centroid pick)"):
            s = [c["shirt_share"] for c in coverage if c["budget"] == budget and c["selector"] == name]
            dev = [abs(v - 0.5) for v in s]
            summary[f"{name} @ {budget}"] = {
                "shirt_share_mean": float(np.mean(s)),
                "mean_abs_imbalance": float(np.mean(dev)),
            }
            print(
                f"budget {budget:5d} {name:20s} Shirt share {np.mean(s):.3f}  mean |share - 0.5| {np.mean(dev):.3f}"
            )

    save_result(
        args.out,
        command=f"python benchmarks/latent_probe.py --checkpoint {args.checkpoint} --image-size {args.image_size}",
        knn_accuracy=knn,
        reconstruction_mse_heldout=mse,
        coverage_summary=summary,
        coverage=coverage,
    )


if __name__ == "__main__":
    main()
