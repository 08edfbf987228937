"""K-means of a sharded pool: ``distributed_kmeans`` over 1 and 2 processes against plain K-means.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/distributed_kmeans.py --points 200000 --dim 64 --k 1000 \
        [--procs 1 2] [--devices cpu] [--out benchmarks/results/distributed_kmeans.json]

Data: ``--points`` points of ``--blobs`` Gaussian blobs in ``--dim`` dimensions (centres drawn with standard
deviation 4, points with 1 around them; seed ``--seed``), float32. Methods, each in fresh processes spawned
for it, ``--niter`` Lloyd iterations at most, seed ``--seed``, every point used:

- ``plain``: :func:`imgselect.selection.kmeans.kmeans` with ``init="kmeans++"`` on the whole pool, 1 process;
- ``distributed``: :func:`imgselect.selection.distributed.distributed_kmeans` with the pool split in
  ``p`` contiguous shards, one per process, for each ``p`` of ``--procs``; the processes join a gloo group
  (also on GPU: several ranks share the one GPU, which NCCL refuses), each loads only its own shard.

Per process: wall time of the call (after a barrier, so the ranks start together), and its peak resident
memory, ``VmHWM`` of ``/proc/self/status`` just before and just after the call (the growth is what the call
added on top of Python, torch, FAISS and the shard). Per method: the objective (sum of squared distances at
the final assignment) as a ratio to plain K-means', and the agreement of the assignments with plain K-means'
and with the true blobs (adjusted Rand index, scikit-learn). ``--devices gpu`` runs every method with FAISS
on the GPU as well (``scripts/gpu_check.sh``).
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from record import save_result


def blobs(n: int, d: int, n_blobs: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(n, d)`` float32 points of ``n_blobs`` Gaussian blobs and the blob of each point."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 4, (n_blobs, d)).astype(np.float32)
    truth = rng.integers(0, n_blobs, n)
    x = centres[truth]
    x += rng.standard_normal((n, d), dtype=np.float32)
    return x, truth


def hwm_mib() -> float:
    """Peak resident memory of this process since it started (``VmHWM``), MiB."""
    with open("/proc/self/status", encoding="ascii") as status:
        line = next(row for row in status if row.startswith("VmHWM"))
    return int(line.split()[1]) / 1024


class _Watch(logging.Handler):
    """The iterations that plain K-means reports in its closing log line (its result does not hold them)."""

    def __init__(self) -> None:
        super().__init__()
        self.iterations: int | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if str(record.msg).startswith("K-means: done") and isinstance(record.args, tuple):
            self.iterations = int(record.args[1])


def _time_seeding(seconds: list[float]) -> None:
    """Make both K-means modules' calls of ``kmeans_plusplus`` add their wall time to ``seconds``."""
    # the modules, not the package's functions of the same names
    kmeans, distributed = (
        importlib.import_module(f"imgselect.selection.{m}") for m in ("kmeans", "distributed")
    )
    seed = kmeans.kmeans_plusplus

    def timed(*args: Any, **kwargs: Any) -> np.ndarray:
        t0 = time.perf_counter()
        try:
            return seed(*args, **kwargs)
        finally:
            seconds.append(time.perf_counter() - t0)

    kmeans.kmeans_plusplus = distributed.kmeans_plusplus = timed


def _worker(rank: int, world: int, spec: dict[str, Any], folder: str) -> None:
    """One process of one method: load its shard, join the group, time the call, save what it measured."""
    import torch.distributed as dist

    from imgselect.selection.distributed import distributed_kmeans
    from imgselect.selection.kmeans import kmeans

    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING, format="  %(message)s")
    logging.getLogger("faiss").setLevel(logging.WARNING)  # its loader's lines on which CPU build it found
    watch, seeding = _Watch(), []
    logging.getLogger("imgselect.selection.kmeans").addHandler(watch)
    _time_seeding(seeding)
    shard = np.load(f"{folder}/shard{rank}.npy")
    gpu = spec["device"] == "gpu"
    if world > 1:
        dist.init_process_group(
            "gloo", init_method=f"file://{folder}/rendezvous", rank=rank, world_size=world
        )
        dist.barrier()
    before = hwm_mib()
    t0 = time.perf_counter()
    if spec["method"] == "plain":
        result: Any = kmeans(
            shard, spec["k"], niter=spec["niter"], seed=spec["seed"], gpu=gpu, init="kmeans++"
        )
        iterations = watch.iterations
    else:
        result = distributed_kmeans(shard, spec["k"], niter=spec["niter"], seed=spec["seed"], gpu=gpu)
        iterations = result.iterations
    seconds = time.perf_counter() - t0
    after = hwm_mib()
    np.save(f"{folder}/assignments{rank}.npy", result.assignments)
    record = {
        "rank": rank,
        "rows": len(shard),
        "seconds": seconds,
        "seeding_s": sum(seeding),
        "objective": result.objective,
        "iterations": iterations,
        "device": result.device,
        "peak_rss_before_mib": before,
        "peak_rss_after_mib": after,
    }
    Path(f"{folder}/rank{rank}.json").write_text(json.dumps(record), encoding="utf-8")
    if world > 1:
        dist.destroy_process_group()


def run_method(spec: dict[str, Any], x: np.ndarray, work: Path) -> tuple[dict[str, Any], np.ndarray]:
    """Run one method in ``spec["processes"]`` fresh processes: its row and the assignments of every point."""
    import torch.multiprocessing as mp

    world = spec["processes"]
    folder = Path(tempfile.mkdtemp(prefix=f"{spec['method']}{world}_{spec['device']}_", dir=work))
    for rank, shard in enumerate(np.array_split(x, world)):
        np.save(folder / f"shard{rank}.npy", shard)
    t0 = time.perf_counter()
    mp.spawn(_worker, args=(world, spec, str(folder)), nprocs=world, join=True)
    wall = time.perf_counter() - t0
    ranks = [json.loads((folder / f"rank{r}.json").read_text(encoding="utf-8")) for r in range(world)]
    assignments = np.concatenate([np.load(folder / f"assignments{r}.npy") for r in range(world)])
    shutil.rmtree(folder)
    if len({r["objective"] for r in ranks}) > 1:
        raise RuntimeError(f"ranks disagree on the objective: {[r['objective'] for r in ranks]}")
    row = {
        "method": spec["method"],
        "device": ranks[0]["device"],
        "processes": world,
        "rows_per_rank": [r["rows"] for r in ranks],
        "seconds": max(r["seconds"] for r in ranks),
        "seconds_per_rank": [round(r["seconds"], 3) for r in ranks],
        "wall_s_with_spawn": wall,
        "iterations": ranks[0]["iterations"],
        "seeding_s": max(r["seeding_s"] for r in ranks),
        # nearest-centre searches: one per centroid update and a last one; rows searched per second of Lloyd
        "assigned_rows_per_s_per_rank": [
            round(r["rows"] * (r["iterations"] + 1) / (r["seconds"] - r["seeding_s"])) for r in ranks
        ],
        "objective": ranks[0]["objective"],
        "peak_rss_mib_per_rank": [round(r["peak_rss_after_mib"], 1) for r in ranks],
        "peak_rss_growth_mib_per_rank": [
            round(r["peak_rss_after_mib"] - r["peak_rss_before_mib"], 1) for r in ranks
        ],
    }
    return row, assignments


def compare(rows: list[dict[str, Any]], assignments: list[np.ndarray], truth: np.ndarray) -> None:
    """Give each row its objective and time against the reference (plain K-means, on CPU once that ran, else
    the first device's) and the adjusted Rand index of its assignments with the reference's and the blobs'.

    Called after every method; a row is compared again only when the reference changed.
    """
    from sklearn.metrics import adjusted_rand_score

    plain = [i for i, r in enumerate(rows) if r["method"] == "plain"]
    ref = next((i for i in plain if rows[i]["device"] == "cpu"), plain[0])
    name = f"plain, {rows[ref]['device']}"
    for row, assign in zip(rows, assignments, strict=True):
        if "ari_vs_blobs" not in row:
            row["ari_vs_blobs"] = float(adjusted_rand_score(truth, assign))
        if row.get("reference") != name:
            row["reference"] = name
            row["objective_vs_reference"] = row["objective"] / rows[ref]["objective"]
            row["seconds_vs_reference"] = row["seconds"] / rows[ref]["seconds"]
            row["ari_vs_reference"] = float(adjusted_rand_score(assignments[ref], assign))


def print_row(row: dict[str, Any]) -> None:
    """One line of what a method measured."""
    growth = "/".join(f"{g:.0f}" for g in row["peak_rss_growth_mib_per_rank"])
    peak = "/".join(f"{p:.0f}" for p in row["peak_rss_mib_per_rank"])
    rate = "/".join(f"{r:,}" for r in row["assigned_rows_per_s_per_rank"])
    print(
        f"{row['method']:>11s} {row['device']} x{row['processes']}: {row['seconds']:7.2f} s per rank "
        f"(x{row['seconds_vs_reference']:.2f}; K-means++ {row['seeding_s']:.1f} s, {row['iterations']} iterations, "
        f"{rate} rows/s per rank), objective {row['objective']:.6g} "
        f"(x{row['objective_vs_reference']:.5f}), ARI vs plain {row['ari_vs_reference']:.4f}, "
        f"vs blobs {row['ari_vs_blobs']:.4f}, peak RSS {peak} MiB (+{growth} MiB in the call)",
        flush=True,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--points", type=int, default=200_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--k", type=int, default=1000)
    parser.add_argument("--blobs", type=int, default=None, help="blobs in the data (default: --k)")
    parser.add_argument("--niter", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--procs", type=int, nargs="+", default=[1, 2], help="processes of distributed_kmeans"
    )
    parser.add_argument(
        "--devices", nargs="+", choices=["cpu", "gpu"], default=["cpu"], help="in this order, plain first"
    )
    parser.add_argument("--work", default=None, help="folder for the shards (default: a temporary one)")
    parser.add_argument("--out", default="benchmarks/results/distributed_kmeans.json")
    args = parser.parse_args(argv)

    threads = os.environ.get("OMP_NUM_THREADS")
    command = " ".join(
        [f"OMP_NUM_THREADS={threads}"] * bool(threads)
        + ["python", "benchmarks/distributed_kmeans.py", *(argv if argv is not None else sys.argv[1:])]
    )
    record = {
        "omp_num_threads": threads,
        # other processes on the machine skew the times: the 1-minute load average before and after
        "load_average_1min": {"before": round(os.getloadavg()[0], 2)},
        "data": {"points": args.points, "dim": args.dim, "blobs": args.blobs or args.k, "seed": args.seed},
        "k": args.k,
        "niter": args.niter,
    }
    x, truth = blobs(args.points, args.dim, args.blobs or args.k, args.seed)
    work = Path(tempfile.mkdtemp(prefix="distributed_kmeans_", dir=args.work))
    common = {"k": args.k, "niter": args.niter, "seed": args.seed}
    specs = [{"method": "plain", "processes": 1, "device": dev, **common} for dev in args.devices]
    specs += [
        {"method": "distributed", "processes": p, "device": dev, **common}
        for dev in args.devices
        for p in args.procs
    ]
    rows: list[dict[str, Any]] = []
    assignments: list[np.ndarray] = []
    try:
        for i, spec in enumerate(specs, 1):
            row, assign = run_method(spec, x, work)
            rows.append(row)
            assignments.append(assign)
            compare(rows, assignments, truth)
            print_row(row)
            # saved after every method, so that a run cut short keeps what it measured
            record["load_average_1min"]["after"] = round(os.getloadavg()[0], 2)
            save_result(args.out, command=command, complete=i == len(specs), **record, rows=rows)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
