"""Embedding map projections: wall time and 2-D class agreement, to choose what ``method="auto"`` runs.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/embedding_map.py [--sizes 12000 60000]
        [--subsamples 2000 5000] [--full-tsne-max 60000] [--extra-site DIR]
        [--out benchmarks/results/embedding_map.json]

Data: Fashion-MNIST train images (the first ``n``, all ten classes), 784 grey pixels in [0, 1], as two
embeddings of the pool: ``PCA-50`` (fitted on the pool itself, like the ``pixels`` embedding) and ``512-d``
(a Gaussian random projection of the pixels to 512 dimensions, seed 0: as wide as the autoencoder latent,
with no structure made easier by PCA).

Methods (every one returns a position for every one of the ``n`` points):
- ``pca``: ``project_2d(method="pca")``, the two leading components;
- ``tsne+knn m``: ``project_2d(method="tsne", max_points=m)``: scikit-learn t-SNE on ``m`` points (100 random
  "chosen" indices among them), the others placed at the mean of their 5 nearest fitted points;
- ``tsne (all)``: ``project_2d(method="tsne", max_points=None)``: scikit-learn t-SNE on every point (only up
  to ``--full-tsne-max`` points, and on PCA-50 only above 12,000: minutes each);
- ``openTSNE``, ``umap``: only when importable (``--extra-site DIR`` appends DIR to ``sys.path``, after the
  venv, for a throwaway ``pip install --target DIR umap-learn openTSNE``); on PCA-50 only, default settings
  (openTSNE ``n_jobs=2``; UMAP ``n_jobs=2``, ``random_state`` unset so its threads are used). UMAP compiles with
  numba on first use: a warm-up on 1,000 points is run first and its time reported apart.

Time: wall clock of the whole call, PCA pre-reduction included, and the CPU time of this process over all its
threads (less sensitive than wall time to other work on the machine, whose 1-minute load average is recorded). Quality: ``10-NN class agreement`` = the
share of each point's 10 nearest 2-D neighbours (exact, FAISS) with its Fashion-MNIST label, over all ``n``
points; the same number in the input space is given as a ceiling. One seed (0) per cell.
"""

from __future__ import annotations

import argparse
import gzip
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from record import save_result

FMNIST = Path("/usr/share/datasets/fashion-mnist")
K_AGREE = 10
N_CHOSEN = 100


def fashion_mnist(n: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``n`` train images as ``(n, 784)`` float32 in [0, 1] and their ``(n,)`` labels."""
    raw = gzip.decompress((FMNIST / "train-images-idx3-ubyte.gz").read_bytes())
    images = np.frombuffer(raw, dtype=np.uint8, offset=16).reshape(-1, 784)[:n]
    labels = np.frombuffer(
        gzip.decompress((FMNIST / "train-labels-idx1-ubyte.gz").read_bytes()), np.uint8, offset=8
    )
    return images.astype(np.float32) / 255.0, labels[:n].astype(np.int64)


def knn_agreement(x: np.ndarray, labels: np.ndarray, k: int = K_AGREE) -> float:
    """Share of each point's ``k`` nearest neighbours (itself excluded) that have its label."""
    import faiss

    x = np.ascontiguousarray(x, dtype=np.float32)
    index = faiss.IndexFlatL2(x.shape[1])
    index.add(x)
    _, nn = index.search(x, k + 1)
    # drop each point itself (duplicates may put another index first: drop column 0 all the same)
    return float((labels[nn[:, 1:]] == labels[:, None]).mean())


def timed(fn: Callable[[], np.ndarray]) -> tuple[float, float, np.ndarray]:
    """``(wall seconds, CPU seconds of this process, all threads, result)`` of ``fn()``."""
    t0, c0 = time.perf_counter(), time.process_time()
    xy = fn()
    return time.perf_counter() - t0, time.process_time() - c0, np.asarray(xy, dtype=np.float32)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[12000, 60000])
    parser.add_argument("--subsamples", type=int, nargs="+", default=[2000, 5000])
    parser.add_argument("--full-tsne-max", type=int, default=60000)
    parser.add_argument(
        "--extra-site", default=None, help="a folder appended to sys.path (umap-learn, openTSNE)"
    )
    parser.add_argument("--out", default="benchmarks/results/embedding_map.json")
    args = parser.parse_args(argv)
    if args.extra_site:
        sys.path.append(args.extra_site)

    import torch

    from imgselect.embedding_map import TSNE_MAX_POINTS, project_2d
    from imgselect.embeddings.pixels import pca

    command = " ".join(
        ["python", "benchmarks/embedding_map.py", *(argv if argv is not None else sys.argv[1:])]
    )
    versions: dict[str, str] = {}
    for mod in ("sklearn", "openTSNE", "umap", "numba"):
        try:
            versions[mod] = __import__(mod).__version__
        except ImportError:
            versions[mod] = "not installed"
    print(versions, flush=True)

    rows: list[dict[str, object]] = []
    notes: list[str] = []

    def record(
        data: str, n: int, method: str, seconds: float, cpu: float, xy: np.ndarray, labels: np.ndarray
    ) -> None:
        row = {
            "data": data,
            "n": n,
            "method": method,
            "seconds": seconds,
            "cpu_seconds": cpu,
            "knn_agreement_2d": knn_agreement(xy, labels),
            "load_avg_1min": os.getloadavg()[0],
        }
        rows.append(row)
        print(
            f"{data} n={n} {method:18s} {seconds:7.1f} s (CPU {cpu:6.1f} s, load {row['load_avg_1min']:.1f})  10-NN agreement {row['knn_agreement_2d']:.3f}",
            flush=True,
        )
        save_result(
            args.out,
            command=command,
            threads=torch.get_num_threads(),
            versions=versions,
            rows=rows,
            notes=notes,
        )

    pixels, all_labels = fashion_mnist(max(args.sizes))
    projection = np.random.default_rng(0).normal(size=(784, 512)).astype(np.float32) / np.sqrt(512)
    umap_warm = False
    for n in args.sizes:
        labels = all_labels[:n]
        chosen = np.random.default_rng(1).choice(n, size=N_CHOSEN, replace=False)
        feats = {"PCA-50": pca(pixels[:n], 50)[0], "512-d": pixels[:n] @ projection}
        for data, x in feats.items():
            ceiling = knn_agreement(x, labels)
            rows.append(
                {"data": data, "n": n, "method": "input space (ceiling)", "knn_agreement_2d": ceiling}
            )
            print(f"{data} n={n} 10-NN agreement in the input space {ceiling:.3f}", flush=True)
            record(data, n, "pca", *timed(lambda x=x: project_2d(x, "pca")[0]), labels)
            for m in args.subsamples:
                if m < n:
                    fn = lambda x=x, m=m, c=chosen: project_2d(x, "tsne", max_points=m, keep=c)[0]  # noqa: E731
                    record(data, n, f"tsne+knn {m}", *timed(fn), labels)
            if n <= args.full_tsne_max and (data == "PCA-50" or n <= 12000):
                fn = lambda x=x: project_2d(x, "tsne", max_points=None)[0]  # noqa: E731
                record(data, n, "tsne (all)", *timed(fn), labels)
            if data != "PCA-50":
                continue
            try:
                import openTSNE

                fn = lambda x=x: np.asarray(openTSNE.TSNE(n_jobs=2, random_state=0).fit(x))  # noqa: E731
                record(data, n, "openTSNE (all)", *timed(fn), labels)
            except ImportError:
                pass
            try:
                import umap

                if not umap_warm:
                    secs, _, _ = timed(lambda x=x: umap.UMAP(n_jobs=2).fit_transform(x[:1000]))
                    notes.append(
                        f"umap first call (numba compilation) on 1,000 points: {secs:.1f} s, not counted"
                    )
                    print(notes[-1], flush=True)
                    umap_warm = True
                record(
                    data, n, "umap (all)", *timed(lambda x=x: umap.UMAP(n_jobs=2).fit_transform(x)), labels
                )
            except ImportError:
                pass
    save_result(
        args.out, command=command, threads=torch.get_num_threads(), versions=versions, rows=rows, notes=notes
    )
    write_markdown(Path(args.out).with_suffix(".md"), command, torch.get_num_threads(), versions, rows, notes)
    print("default max_points:", TSNE_MAX_POINTS)
    return 0


def write_markdown(
    path: Path,
    command: str,
    threads: int,
    versions: dict[str, str],
    rows: list[dict[str, object]],
    notes: list[str],
) -> None:
    """The table of ``rows`` (the discussion is added by hand below the marker line, and kept on rewrite)."""
    marker = "<!-- discussion -->"
    old = path.read_text(encoding="utf-8") if path.exists() else ""
    discussion = old[old.index(marker) :] if marker in old else marker + "\n"
    lines = [
        "# Embedding map: time and class agreement of 2-D projections",
        "",
        f"Command: `OMP_NUM_THREADS={threads} {command}` (one run, seed 0, 2 CPU cores, shared with other work).",
        "",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()) + ".",
        "",
        "| data | n | method | wall time (s) | CPU time (s) | load (1 min) | 10-NN class agreement in 2-D |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "seconds" in r:
            timing = f"{r['seconds']:.1f} | {r['cpu_seconds']:.1f} | {r['load_avg_1min']:.1f}"
        else:
            timing = "- | - | -"
        lines.append(f"| {r['data']} | {r['n']} | {r['method']} | {timing} | {r['knn_agreement_2d']:.3f} |")
    lines += ["", *[f"- {note}" for note in notes], "", discussion.rstrip("\n"), ""]
    path.write_text("\n".join(lines), encoding="utf-8")
    print("wrote", path)


if __name__ == "__main__":
    raise SystemExit(main())
