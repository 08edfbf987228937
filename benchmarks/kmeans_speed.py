"""K-means speed: FAISS (as imgselect calls it) against scikit-learn, with the objective beside each time.

    .venv/bin/python benchmarks/kmeans_speed.py [--embeddings PATH.npy] [--out benchmarks/results/kmeans_speed.json]

Data: synthetic 200,000 x 512 (Gaussian mixture of 2,000 components) and, when given, the real autoencoder
embeddings of the pool (``embeddings.npy`` from the autoencoder cache). K = 125 and 1000, 20 iterations
for every method (scikit-learn with tol=0 so it runs all of them, n_init=1). Also reports each run's
Lloyd-iteration rate, 2·N·K·d FLOP per iteration, as a fraction of this machine's float32 matmul rate.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from record import save_result


def matmul_gflops(repeats: int = 5) -> dict[str, float]:
    """Best float32 GEMM rate (GFLOP/s) of torch and numpy on square and K-means-shaped products; the
    maximum is the machine's reference rate."""
    import torch

    shapes = {"4096x4096x4096": (4096, 4096, 4096), "200000x512x1000": (200000, 512, 1000)}
    rates: dict[str, float] = {}
    for name, (m, k, n) in shapes.items():
        a, b = torch.randn(m, k), torch.randn(k, n)
        for lib, mul in (("torch", lambda: a @ b), ("numpy", lambda: a.numpy() @ b.numpy())):  # noqa: B023
            best = float("inf")
            for _ in range(repeats):
                t0 = time.perf_counter()
                mul()
                best = min(best, time.perf_counter() - t0)
            rates[f"{lib} {name}"] = 2 * m * k * n / best / 1e9
    return rates


def synthetic(n: int, d: int, components: int = 2000, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1, (components, d)).astype(np.float32)
    x = centres[rng.integers(components, size=n)] + rng.normal(0, 0.5, (n, d)).astype(np.float32)
    return np.ascontiguousarray(x, dtype=np.float32)


def run_faiss(x: np.ndarray, k: int, niter: int) -> dict[str, float]:
    from imgselect.selection.kmeans import kmeans

    t0 = time.perf_counter()
    res = kmeans(x, k, niter=niter, seed=0)
    dt = time.perf_counter() - t0
    return {"seconds": dt, "objective": res.objective}


def run_sklearn(x: np.ndarray, k: int, niter: int, init: str) -> dict[str, float]:
    from sklearn.cluster import KMeans

    t0 = time.perf_counter()
    km = KMeans(
        n_clusters=k, init=init, n_init=1, max_iter=niter, tol=0.0, random_state=0, algorithm="lloyd"
    ).fit(x)
    dt = time.perf_counter() - t0
    return {"seconds": dt, "objective": float(km.inertia_), "iterations": int(km.n_iter_)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--embeddings",
        help="real pool embeddings (.npy), e.g. .cache/imgselect/autoencoder/<key>/embeddings.npy",
    )
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument("--ks", type=int, nargs="+", default=[125, 1000])
    parser.add_argument("--niter", type=int, default=20)
    parser.add_argument("--skip-sklearn-random", action="store_true")
    parser.add_argument("--out", default="benchmarks/results/kmeans_speed.json")
    args = parser.parse_args()

    matmul = matmul_gflops()
    peak = max(matmul.values())
    print("float32 matmul GFLOP/s:", {k: round(v, 1) for k, v in matmul.items()})
    datasets = {f"synthetic {args.n}x512": synthetic(args.n, 512)}
    if args.embeddings:
        datasets[f"autoencoder embeddings ({Path(args.embeddings).name})"] = np.load(args.embeddings).astype(
            np.float32
        )
    rows = []
    for name, x in datasets.items():
        n, d = x.shape
        for k in args.ks:
            methods = ["faiss", "sklearn k-means++"] + (
                [] if args.skip_sklearn_random else ["sklearn random init"]
            )
            for method in methods:
                if method == "faiss":
                    r = run_faiss(x, k, args.niter)
                else:
                    r = run_sklearn(x, k, args.niter, "k-means++" if "++" in method else "random")
                r["gflops"] = 2 * n * k * d * args.niter / r["seconds"] / 1e9
                r["fraction_of_matmul"] = r["gflops"] / peak
                row = {"data": name, "n": n, "d": d, "k": k, "niter": args.niter, "method": method, **r}
                rows.append(row)
                print(f"{name:40s} K={k:5d} {method:20s} {r['seconds']:8.2f}s objective {r['objective']:.6g} "
                      f"{r['gflops']:6.1f} GFLOP/s ({r['fraction_of_matmul']:.0%} of matmul)", flush=True)  # fmt: skip
    save_result(
        args.out,
        command=" ".join(["python", *sys.argv]),
        matmul_gflops=peak,
        matmul_gflops_each=matmul,
        rows=rows,
    )


if __name__ == "__main__":
    main()
