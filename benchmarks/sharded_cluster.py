"""A simulated cluster on one machine: the same job with ``trainer=ddp trainer.devices=1,2,4`` on CPU (gloo) over a
million-image pool, each rank embedding and clustering its own block of the pool.

    .venv/bin/python benchmarks/sharded_cluster.py --n 1000000 --devices 1 2 4 --work /tmp/sharded \
        --out benchmarks/results/sharded_cluster.json            # -> sharded_cluster.{json,md}

The pool is :mod:`benchmarks.million_pool`'s (Fashion-MNIST tiled to ``--n`` images of 32x32, written once into
the pool store under ``--work``). The jobs are ``train.py -m`` itself, one per device count, with a data config
that maps that store (:class:`TiledPool`), ``embedding=pixels`` (16x16 -> ``--dim``-d PCA: each rank downscales
its block, the moments are all-reduced, each projects its block into the shared file), ``selector=typiclust``
at ``budget=--k`` (distributed K-means, typicality on the rank that owns each cluster), no classifier, no cache
(every job embeds), ``OMP_NUM_THREADS=1`` per rank (one core per rank, as one GPU per rank on a cluster; this
machine has 2 cores, so 4 ranks share them).

Read from each job's ``result.json``: the rows of every rank, its peak resident memory from the start of the
embedding stage to the end of the selection and that peak's growth over what the rank held at the start (the
~1 GiB every process holds for Python, PyTorch, FAISS, Lightning and the mapped pool's ids and hashes), the
K-means objective, the stage times; from ``selection.csv``: the chosen set, compared with the one-rank job's.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

import million_pool  # noqa: E402

from datamodules.pool import PoolDataModule  # noqa: E402
from imgselect.io.poolstore import ImageSink  # noqa: E402
from imgselect.pool import ImageSet  # noqa: E402


class TiledPool(PoolDataModule):
    """The benchmark's million-image pool, mapped from the store :mod:`million_pool` wrote under ``work``
    (never decoded by a job); validation: its first 64 images, unlabeled (the jobs train nothing)."""

    def __init__(self, work: str, n: int, size: int, **kwargs: Any) -> None:
        super().__init__(image_size=size, **kwargs)
        self.work, self.n, self.size = Path(work), n, size

    def load(self) -> tuple[ImageSet, ImageSet, list[str]]:
        def missing(sink: ImageSink) -> tuple[list[int], list[tuple[str, str]], list[str]]:
            raise RuntimeError(f"no pool in {self.work}: run benchmarks/sharded_cluster.py to build it")

        stored = million_pool.store(argparse.Namespace(work=self.work, n=self.n, size=self.size), missing)
        pool = ImageSet(
            stored.images,
            stored.ids,
            hashes=stored.hashes,
            known_fingerprint=stored.fingerprint,
            source=f"tiled Fashion-MNIST ({self.n:,} images)",
        )
        return pool, ImageSet(stored.images[:64], stored.ids[:64], source="first 64 of the pool"), ["a", "b"]


def sweep(args: argparse.Namespace) -> Path:
    """Run the jobs (``train.py -m``, one per device count); returns the sweep folder."""
    conf = args.work / "conf" / "data"
    conf.mkdir(parents=True, exist_ok=True)
    (conf / "tiled.yaml").write_text(
        f"_target_: sharded_cluster.TiledPool\nwork: {args.work}\nn: {args.n}\nsize: {args.size}\n"
    )
    folder = args.work / "sweep"
    shutil.rmtree(folder, ignore_errors=True)
    cmd = [
        sys.executable,
        str(ROOT / "train.py"),
        "-m",
        f"--config-dir={args.work / 'conf'}",
        "data=tiled",
        f"image_size={args.size}",
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.devices=" + ",".join(map(str, args.devices)),
        "selector=typiclust",
        "embedding=pixels",
        f"embedding.dim={args.dim}",
        f"budget={args.k}",
        "~classifier",
        "cache=false",
        "embedding_map.method=none",
        f"paths.cache_dir={args.work / 'jobcache'}",
        f"hydra.sweep.dir={folder}",
        "hydra.sweep.subdir=devices${trainer.devices}",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(HERE), str(ROOT)])}
    print(" ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, env=env, cwd=args.work)
    return folder


def read_job(folder: Path) -> dict[str, Any]:
    result = json.loads((folder / "result.json").read_text())
    stats = result["selection_stats"]
    with (folder / "selection.csv").open() as f:
        picks = sorted(int(line.split(",")[1]) for line in list(f)[1:])
    return {
        "ranks": int(stats["ranks"]),
        "rows_per_rank": [int(r) for r in str(stats["rows_per_rank"]).split(",")],
        "peak_rss_mib_per_rank": [float(p) for p in str(stats["peak_rss_mib_per_rank"]).split(",")],
        "rss_growth_mib_per_rank": [float(p) for p in str(stats["rss_growth_mib_per_rank"]).split(",")],
        "kmeans_objective": float(stats["kmeans_objective"]),
        "largest_owned_share": float(stats["largest_owned_share"]),
        "seconds": {
            k: result["timings_s"][k]
            for k in ("data", "embed", "selection", "total")
            if k in result["timings_s"]
        },
        "picks": picks,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--dim", type=int, default=512, help="PCA components of the pixels embedding")
    parser.add_argument("--k", type=int, default=1000, help="budget = K of TypiClust's K-means")
    parser.add_argument("--devices", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--work", type=Path, default=Path("/tmp/sharded"))
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "sharded_cluster.json")
    args = parser.parse_args()
    args.work = args.work.resolve()
    t0 = time.perf_counter()
    stored = million_pool.store(args, million_pool.tiled_decoder(args.n, args.size))
    print(f"pool store: {stored.path} ({time.perf_counter() - t0:.0f} s)", flush=True)
    folder = sweep(args)
    jobs = {d: read_job(folder / f"devices{d}") for d in args.devices}
    base = jobs[min(args.devices)]
    bytes_embedding = args.n * args.dim * 4
    rows = []
    for d, job in jobs.items():
        rows.append(
            {
                "devices": d,
                **{k: v for k, v in job.items() if k != "picks"},
                "embedding_mib_per_rank": [r * args.dim * 4 / 2**20 for r in job["rows_per_rank"]],
                # against the fewest ranks run (None for that run itself: the reference)
                "objective_ratio": job["kmeans_objective"] / base["kmeans_objective"]
                if job is not base
                else None,
                "same_picks": len(set(job["picks"]) & set(base["picks"])) / len(base["picks"])
                if job is not base
                else None,
            }
        )
    record = {
        "command": "python benchmarks/sharded_cluster.py " + " ".join(sys.argv[1:]),
        "n": args.n,
        "size": args.size,
        "dim": args.dim,
        "k": args.k,
        "embedding_mib": bytes_embedding / 2**20,
        "cores": os.cpu_count(),
        "jobs": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    write_markdown(args.out.with_suffix(".md"), record)
    print(args.out.with_suffix(".md").read_text())


def write_markdown(path: Path, record: dict[str, Any]) -> None:
    lines = [
        f"# Simulated cluster: {record['n']:,} images, pixels {record['dim']}-d, TypiClust K = {record['k']}",
        "",
        f"`{record['command']}` ({record['cores']} cores; one thread per rank)",
        "",
        "| ranks | rows per rank | embedding per rank (MiB) | peak RSS per rank (MiB) | RSS growth per rank (MiB) "
        "| embed (s) | select (s) "
        "| job (s) | K-means objective vs the fewest ranks | picks shared with the fewest ranks |",
        "|---:|---|---:|---|---|---:|---:|---:|---:|---:|",
    ]
    for job in record["jobs"]:
        seconds = job["seconds"]
        lines.append(
            f"| {job['devices']} | {', '.join(f'{r:,}' for r in job['rows_per_rank'])} "
            f"| {max(job['embedding_mib_per_rank']):.0f} "
            f"| {', '.join(f'{p:.0f}' for p in job['peak_rss_mib_per_rank'])} "
            f"| {', '.join(f'{p:.0f}' for p in job['rss_growth_mib_per_rank'])} "
            f"| {seconds.get('embed', float('nan')):.0f} | {seconds.get('selection', float('nan')):.0f} "
            f"| {seconds.get('total', float('nan')):.0f} | {_ratio(job['objective_ratio'])} "
            f"| {_share(job['same_picks'])} |"
        )
    lines.append("")
    path.write_text("\n".join(lines))


def _ratio(value: float | None) -> str:
    return "—" if value is None else f"{value:.5f}"


def _share(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f} %"


if __name__ == "__main__":
    main()
