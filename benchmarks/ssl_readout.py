"""Which reading of the pool's SimCLR backbone keeps classes together best, seed by seed, from finished jobs run
with ``embedding=ssl embedding.features=stages``: the pooled head (the pretraining's own probe,
``pretrain.knn_accuracy``), the stages reading (``embedding_info.knn_accuracy``) and raw pixels, all by the same
10-NN probe on the same held-out fifth of the same pool (the job's seed draws it).

    for s in 0 1 2; do python train.py experiment=cpu pretrain=ssl embedding=ssl embedding.features=stages \\
        selector=typiclust budget=125 seed=$s '~classifier' hydra.run.dir=/tmp/readout/s$s; done
    .venv/bin/python benchmarks/ssl_readout.py /tmp/readout/s0 /tmp/readout/s1 /tmp/readout/s2 \\
        --out benchmarks/results/ssl_readout_2class.json

Raw pixels are probed here, on the pool the job's saved config (``.hydra/config.yaml``) loads.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import OmegaConf
from record import save_result

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from imgselect.embeddings.probe import knn_probe  # noqa: E402


def job_row(folder: Path) -> dict[str, Any]:
    """One job's three readings of the same probe."""
    r = json.loads((folder / "result.json").read_text())
    info = r["embedding_info"]
    if info.get("features") != "stages" or "knn_accuracy" not in info:
        raise SystemExit(f"{folder}: not a job with embedding=ssl embedding.features=stages and known labels")
    cfg = OmegaConf.load(folder / ".hydra" / "config.yaml")
    dm = instantiate(cfg.data)
    dm.setup()
    pool = dm.pool
    raw = pool.images.reshape(len(pool), -1).float().numpy()
    k = int(info["knn_k"])
    return {
        "seed": r["seed"],
        "pool": f"{pool.source}, {len(pool)} images at {cfg.image_size}x{cfg.image_size}",
        "pooled head": r["pretrain"]["knn_accuracy"],
        "stages": info["knn_accuracy"],
        "raw pixels": knn_probe(raw, pool.labels, k, seed=int(r["seed"]))["knn_accuracy"],
        "dims": {"pooled head": r["pretrain"]["dim"], "stages": info["dim"], "raw pixels": raw.shape[1]},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("jobs", nargs="+", type=Path, help="job folders (embedding.features=stages)")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    rows = sorted((job_row(f) for f in args.jobs), key=lambda row: row["seed"])
    names = ("pooled head", "stages", "raw pixels")
    lines = ["| seed | " + " | ".join(names) + " | stages − pooled | stages − pixels |", "|---" * 6 + "|"]
    for row in rows:
        cells = [f"{row[n]:.3f}" for n in names]
        lines.append(
            f"| {row['seed']} | " + " | ".join(cells)
            + f" | {100 * (row['stages'] - row['pooled head']):+.1f} | {100 * (row['stages'] - row['raw pixels']):+.1f} |"
        )  # fmt: skip
    means = {n: statistics.fmean(row[n] for row in rows) for n in names}
    ahead = sum(row["stages"] > row["pooled head"] for row in rows)
    lines.append(
        "| mean | " + " | ".join(f"{means[n]:.3f}" for n in names)
        + f" | {100 * (means['stages'] - means['pooled head']):+.1f} ({ahead}/{len(rows)})"
        + f" | {100 * (means['stages'] - means['raw pixels']):+.1f} |"
    )  # fmt: skip
    table = "\n".join(lines)
    print(table)
    save_result(args.out, " ".join(["python", *sys.argv]), probe="10-NN (cosine), held-out fifth of the pool",
                rows=rows, means=means, stages_ahead_of_pooled=ahead, table=table)  # fmt: skip
    Path(args.out).with_suffix(".md").write_text(table + "\n")


if __name__ == "__main__":
    main()
