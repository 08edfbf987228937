"""K-means seeding: imgselect's FAISS K-means with K-means++ seeding against scikit-learn's K-means++.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/kmeans_seeding.py [--seeds 3] [--embeddings NAME=PATH.npy ...]
        [--out benchmarks/results/kmeans_seeding.json]

Goal (issue 9): an objective within 1 % of scikit-learn's ``KMeans(init="k-means++")`` at >= 10x its speed, at
K = 125 and K = 1000, on the 12,000- and 60,000-image pools.

Data: Fashion-MNIST train images (all ten classes), 28x28 grey pixels in [0, 1] projected on their 512 leading
principal components (512-d like the autoencoder's latent): the first 12,000 images and all 60,000. With
``--embeddings``, also the given ``(n, d)`` arrays (e.g. an autoencoder cache's ``embeddings.npy``).

Methods, 20 Lloyd iterations each, every point used (no subsampling):
- ``sklearn k-means++``: ``KMeans(init="k-means++", n_init=1, max_iter=20, tol=0, algorithm="lloyd")``;
- ``faiss random``: ``imgselect.selection.kmeans(init="random")``, FAISS's own seeding (the paper's rule);
- ``faiss k-means++``: ``imgselect.selection.kmeans(init="kmeans++")``: our seeding, then FAISS's Lloyd.
The objective is the same number for all three: the sum over points of the squared Euclidean distance to the
nearest final centroid, computed here with FAISS from each method's centroids (float64 sum). Times are wall
clock of the whole call (seeding + iterations), same thread count for all.
"""

from __future__ import annotations

import argparse
import gzip
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from record import save_result

FMNIST = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")


def fashion_mnist_pca(n: int, dim: int = 512) -> np.ndarray:
    """The first ``n`` Fashion-MNIST train images as ``(n, dim)`` float32 PCA coordinates."""
    from imgselect.embeddings.pixels import pca

    raw = gzip.decompress(FMNIST.read_bytes())
    images = np.frombuffer(raw, dtype=np.uint8, offset=16).reshape(-1, 784)[:n]
    x, _ = pca(images.astype(np.float32) / 255.0, dim)
    return np.ascontiguousarray(x, dtype=np.float32)


def objective(x: np.ndarray, centroids: np.ndarray) -> float:
    """Sum of squared distances of ``x`` to its nearest centroid."""
    import faiss

    index = faiss.IndexFlatL2(x.shape[1])
    index.add(np.ascontiguousarray(centroids, dtype=np.float32))
    sq, _ = index.search(x, 1)
    return float(np.maximum(sq[:, 0], 0).astype(np.float64).sum())


def run_one(method: str, x: np.ndarray, k: int, seed: int) -> tuple[float, float]:
    """``(seconds, objective)`` of one K-means run."""
    t0 = time.perf_counter()
    if method == "sklearn k-means++":
        from sklearn.cluster import KMeans

        km = KMeans(k, init="k-means++", n_init=1, max_iter=20, tol=0.0, algorithm="lloyd", random_state=seed)
        centroids = km.fit(x).cluster_centers_
    else:
        from imgselect.selection import kmeans

        init = "kmeans++" if method == "faiss k-means++" else "random"
        centroids = kmeans(x, k, niter=20, seed=seed, gpu=False, init=init).centroids
    seconds = time.perf_counter() - t0
    return seconds, objective(x, centroids)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--ks", type=int, nargs="+", default=[125, 1000])
    parser.add_argument("--sizes", type=int, nargs="+", default=[12000, 60000])
    parser.add_argument("--embeddings", nargs="*", default=[], help="NAME=PATH.npy of extra (n, d) data")
    parser.add_argument("--out", default="benchmarks/results/kmeans_seeding.json")
    args = parser.parse_args(argv)

    import torch

    datasets: dict[str, np.ndarray] = {}
    full = fashion_mnist_pca(max(args.sizes))
    for n in args.sizes:
        # PCA fitted on each pool itself, as the pixels embedding would be
        datasets[f"Fashion-MNIST pixels PCA-512, n={n}"] = full if n == len(full) else fashion_mnist_pca(n)
    for item in args.embeddings:
        name, _, path = item.partition("=")
        datasets[name] = np.ascontiguousarray(np.load(path), dtype=np.float32)

    methods = ("sklearn k-means++", "faiss random", "faiss k-means++")
    rows = []
    for data_name, x in datasets.items():
        for k in args.ks:
            per: dict[str, list[tuple[float, float]]] = {m: [] for m in methods}
            for seed in range(args.seeds):
                for m in methods:
                    per[m].append(run_one(m, x, k, seed))
            ref_obj = statistics.fmean(o for _, o in per["sklearn k-means++"])
            ref_s = statistics.fmean(s for s, _ in per["sklearn k-means++"])
            for m in methods:
                secs = [s for s, _ in per[m]]
                objs = [o for _, o in per[m]]
                row = {
                    "data": data_name,
                    "n": len(x),
                    "d": x.shape[1],
                    "k": k,
                    "method": m,
                    "seconds_mean": statistics.fmean(secs),
                    "seconds": secs,
                    "objective_mean": statistics.fmean(objs),
                    "objective": objs,
                    "objective_vs_sklearn_pct": 100.0 * (statistics.fmean(objs) / ref_obj - 1.0),
                    "speedup_vs_sklearn": ref_s / statistics.fmean(secs),
                }
                rows.append(row)
                print(
                    f"{data_name} K={k} {m:18s} {row['seconds_mean']:7.2f} s  objective "
                    f"{row['objective_vs_sklearn_pct']:+6.2f} % vs sklearn  speed x{row['speedup_vs_sklearn']:.1f}",
                    flush=True,
                )
    command = " ".join(
        ["python", "benchmarks/kmeans_seeding.py", *(argv if argv is not None else sys.argv[1:])]
    )
    save_result(args.out, command=command, threads=torch.get_num_threads(), seeds=args.seeds, rows=rows)
    md = Path(args.out).with_suffix(".md")
    lines = [
        "# K-means seeding: objective and time against scikit-learn's k-means++",
        "",
        f"Command: `OMP_NUM_THREADS={torch.get_num_threads()} {command}`; mean of {args.seeds} seeds; "
        "20 Lloyd iterations, every point.",
        "",
        "| data | K | method | time (s) | speed vs sklearn | objective vs sklearn |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['data']} | {r['k']} | {r['method']} | {r['seconds_mean']:.2f} | x{r['speedup_vs_sklearn']:.1f} | "
        f"{r['objective_vs_sklearn_pct']:+.2f} % |"
        for r in rows
    ]
    md.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("wrote", md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
