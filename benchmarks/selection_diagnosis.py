"""What kind of images does each selector choose? For every finished job of the quality sweeps, in the
autoencoder's latent space of the same seed: how typical the chosen images are (distance to their 10th
nearest pool neighbour, relative to the pool's median) and how unambiguous (share of their 10 nearest pool
neighbours with the same label). Pool labels are used for diagnosis only.

    .venv/bin/python benchmarks/selection_diagnosis.py logs/quality/2class/seed* \
        --out benchmarks/results/selection_diagnosis.json

Needs an ``ae`` job of each seed among the given sweep folders (its cached embeddings are the latent space).
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
from hydra.utils import instantiate
from omegaconf import OmegaConf
from record import save_result

from imgselect.report import selector_label


def knn(emb: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices and distances of every pool point's k nearest pool points, the point itself excluded
    (exact L2 search with FAISS, as ``latent_probe.py`` does)."""
    import faiss

    x = np.ascontiguousarray(emb, dtype=np.float32)
    index = faiss.IndexFlatL2(x.shape[1])
    index.add(x)
    d2, nn = index.search(x, k + 1)
    # Drop each point itself (usually column 0; a duplicate image may tie with it), else the farthest.
    order = np.argsort(nn == np.arange(len(x))[:, None], axis=1, kind="stable")
    nn = np.take_along_axis(nn, order, 1)[:, :k]
    dist = np.sqrt(np.maximum(np.take_along_axis(d2, order, 1)[:, :k], 0))
    return nn, dist


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sweeps", nargs="+")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--cache-dir", default=".cache/imgselect", help="the pipeline's paths.cache_dir")
    parser.add_argument("--out", default="benchmarks/results/selection_diagnosis.json")
    args = parser.parse_args(argv)
    jobs = [
        (p.parent, json.loads(p.read_text()))
        for d in args.sweeps
        for p in sorted(Path(d).glob("*/result.json"))
    ]
    if not jobs:
        print(f"error: no finished job under {args.sweeps}", file=sys.stderr)
        return 2
    labels = None
    per_seed: dict[int, dict] = {}
    cells: dict[tuple[str, int], list[dict]] = defaultdict(list)
    for job, r in jobs:
        if labels is None:
            cfg = OmegaConf.load(job / ".hydra" / "config.yaml")
            dm = instantiate(cfg.data)
            dm.setup()
            labels = np.asarray(dm.pool.labels)
        seed = int(r["seed"])
        if seed not in per_seed:
            keys = [
                (x.get("embedding_info") or x.get("autoencoder") or {}).get("cache_dir")
                or str(Path(args.cache_dir) / "autoencoder" / x["autoencoder"]["cache_key"])
                for _, x in jobs
                if x["selector"] == "ae" and x["seed"] == seed
            ]
            if not keys:
                print(f"error: no ae job of seed {seed} in {args.sweeps}", file=sys.stderr)
                return 2
            path = Path(keys[0]) / "embeddings.npy"
            if not path.exists():
                print(
                    f"error: {path} is missing: rerun the ae job of seed {seed} with cache=true",
                    file=sys.stderr,
                )
                return 2
            all_idx, all_dist = knn(np.load(path), args.k)
            purity = (labels[all_idx] == labels[:, None]).mean(1)
            per_seed[seed] = {
                "kth": all_dist[:, -1],
                "median_kth": float(np.median(all_dist[:, -1])),
                "pool_purity": float(purity.mean()),
                "purity": purity,
            }
        s = per_seed[seed]
        with (job / "selection.csv").open() as f:
            chosen = np.array([int(row["pool_index"]) for row in csv.DictReader(f)])
        cells[(selector_label(r), int(r["budget"]))].append(
            {
                "seed": seed,
                "kth_distance_vs_pool_median": float(np.mean(s["kth"][chosen]) / s["median_kth"]),
                "neighbour_label_agreement": float(s["purity"][chosen].mean()),
                "pool_neighbour_label_agreement": s["pool_purity"],
            }
        )
    rows = []
    for (sel, budget), runs in sorted(cells.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        row = {"selector": sel, "budget": budget, "seeds": [x["seed"] for x in runs]}
        for key in (
            "kth_distance_vs_pool_median",
            "neighbour_label_agreement",
            "pool_neighbour_label_agreement",
        ):
            row[key] = statistics.fmean(x[key] for x in runs)
        rows.append(row)
        print(
            f"{sel:32s} {budget:5d}  {args.k}th-NN distance / pool median {row['kth_distance_vs_pool_median']:.3f}  "
            f"neighbour label agreement {row['neighbour_label_agreement']:.3f} "
            f"(pool {row['pool_neighbour_label_agreement']:.3f})  n={len(runs)}"
        )
    save_result(args.out, " ".join(["python", *sys.argv]), sweeps=args.sweeps, k=args.k, rows=rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
