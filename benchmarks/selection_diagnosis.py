"""What kind of images does each selector choose? For every finished job of the quality sweeps, in the
autoencoder's latent space of the same seed: how typical the chosen images are (distance to their 10th
nearest pool neighbour, relative to the pool's median) and how unambiguous (share of their 10 nearest pool
neighbours with the same label). Pool labels are used for diagnosis only.

    .venv/bin/python benchmarks/selection_diagnosis.py logs/quality/2class/seed* \
        --out benchmarks/results/selection_diagnosis.json

Needs each seed's ``ae`` job in the same sweep folder (its cached embeddings are the latent space).
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
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from record import save_result

from imgselect.report import selector_label


def knn(emb: torch.Tensor, queries: torch.Tensor, k: int, chunk: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """Indices and distances of each query's k nearest pool points, the point itself excluded."""
    sq = (emb * emb).sum(1)
    idx, dist = [], []
    for start in range(0, len(queries), chunk):
        q = emb[queries[start : start + chunk]]
        d2 = (q * q).sum(1, keepdim=True) - 2 * q @ emb.T + sq[None]
        d2[torch.arange(len(q)), queries[start : start + chunk]] = float("inf")
        d, i = torch.topk(d2, k, largest=False)
        idx.append(i.numpy())
        dist.append(d.clamp_min(0).sqrt().numpy())
    return np.concatenate(idx), np.concatenate(dist)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sweeps", nargs="+")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--cache-dir", default=".cache/imgselect", help="the pipeline's paths.cache_dir")
    parser.add_argument("--out", default="benchmarks/results/selection_diagnosis.json")
    args = parser.parse_args(argv)
    jobs = [p.parent for d in args.sweeps for p in sorted(Path(d).glob("*/result.json"))]
    if not jobs:
        print(f"error: no finished job under {args.sweeps}", file=sys.stderr)
        return 2
    labels = None
    per_seed: dict[int, dict] = {}
    cells: dict[tuple[str, int], list[dict]] = defaultdict(list)
    for job in jobs:
        r = json.loads((job / "result.json").read_text())
        if labels is None:
            cfg = OmegaConf.load(job / ".hydra" / "config.yaml")
            dm = instantiate(cfg.data)
            dm.setup()
            labels = np.asarray(dm.pool.labels)
        seed = int(r["seed"])
        if seed not in per_seed:
            ae_jobs = [
                j
                for j in jobs
                if j.name.split("_", 1)[1].startswith("ae_") and j.name.endswith(f"seed{seed}")
            ]
            if not ae_jobs:
                print(f"error: no ae job of seed {seed} in {args.sweeps}", file=sys.stderr)
                return 2
            key = json.loads((ae_jobs[0] / "result.json").read_text())["autoencoder"]["cache_key"]
            path = Path(args.cache_dir) / "autoencoder" / key / "embeddings.npy"
            if not path.exists():
                print(
                    f"error: {path} is missing: rerun the ae job of seed {seed} with ae_cache=true",
                    file=sys.stderr,
                )
                return 2
            emb = torch.from_numpy(np.load(path)).float()
            all_idx, all_dist = knn(emb, torch.arange(len(emb)), args.k)
            purity = (labels[all_idx] == labels[:, None]).mean(1)
            per_seed[seed] = {
                "emb": emb,
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
