"""A million-image pool on one machine: time and peak memory of each stage, through the product's own code.

    .venv/bin/python benchmarks/million_pool.py --n 1000000 --sizes 32 64 --work /tmp/million \
        --out benchmarks/results/million_pool.json

The pool is Fashion-MNIST (train + test, 70,000 images) tiled to ``--n`` images: copy ``c`` of each image is
shifted by a few pixels, mirrored every other copy and brightened or darkened, so no two images are equal. It
is written through the pool store (:mod:`imgselect.io.poolstore`) as a folder pool's decoder writes it. Then, in
a fresh process as a later job would: map the store, hash (dHash, the near-duplicate stage), embed (pixels
16x16 -> PCA to ``--dim``, the embedding stage with its cache), load the cached embedding again (mapped),
select (TypiClust at K = ``--k``: K-means on every point, then the most typical member of each cluster).

Each phase runs in its own process so its peak memory is its own: ``ru_maxrss`` (peak resident set, file
pages of the mapped pool included) and, sampled every 50 ms, the peaks of anonymous memory (what the
process allocated) and of mapped file pages. The K-means time is set against its GEMM-bound time: the
2·n·K·d FLOP of each of its Lloyd iterations (and the final assignment) at this machine's measured float32
matrix-product rate.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from imgselect.io.poolstore import Decoder, ImageSink, StoredPool  # noqa: E402


def _status() -> dict[str, int]:
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile", "RssShmem"):
            out[key] = int(value.split()[0]) * 1024
    return out


class Meter:
    """Per-stage wall time and sampled memory peaks; the process's ``ru_maxrss`` at the end of each stage."""

    def __init__(self) -> None:
        self.stages: dict[str, dict[str, float]] = {}
        self._peak: dict[str, int] = {}
        self._stop = threading.Event()
        self._lock = threading.Lock()
        threading.Thread(target=self._sample, daemon=True).start()

    def _sample(self) -> None:
        while not self._stop.wait(0.05):
            s = _status()
            with self._lock:
                for k, v in s.items():
                    self._peak[k] = max(self._peak.get(k, 0), v)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        with self._lock:
            self._peak = _status()
        t0 = time.perf_counter()
        yield
        seconds = time.perf_counter() - t0
        with self._lock:
            peak = dict(self._peak)
        for k, v in _status().items():
            peak[k] = max(peak.get(k, 0), v)
        self.stages[name] = {
            "seconds": seconds,
            "peak_rss_sampled": peak.get("VmRSS", 0),
            "peak_anon": peak.get("RssAnon", 0),
            "peak_file": peak.get("RssFile", 0),
            "ru_maxrss_so_far": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        }
        print(f"  {name}: {seconds:.1f} s, peak RSS {peak.get('VmRSS', 0) / 2**30:.2f} GiB", flush=True)


def fashion_mnist() -> np.ndarray:
    from datamodules.fashion_mnist import ensure_fashion_mnist, read_idx

    folder = ensure_fashion_mnist(ROOT / "data" / "fashion-mnist")  # Debian's copy, unpacked once
    train = read_idx(folder / "train-images-idx3-ubyte")
    test = read_idx(folder / "t10k-images-idx3-ubyte")
    return np.concatenate([train, test])  # (70000, 28, 28)


def tiled_decoder(n: int, size: int) -> Decoder:
    """A decoder for :func:`imgselect.io.poolstore.stored_pool` that writes ``n`` tiled images."""
    from datamodules.images import resize_uint8
    from imgselect.pool import content_hash

    base = resize_uint8(torch.from_numpy(fashion_mnist()).unsqueeze(1), size)  # (70000, 3, size, size)
    m = len(base)

    def decode(sink: ImageSink) -> tuple[list[int], list[tuple[str, str]], list[str]]:
        hashes: list[str] = []
        copy = 0
        written = 0
        while written < n:
            dx, dy = (copy % 5) - 2, ((copy // 5) % 5) - 2
            gain = 0.8 + 0.05 * (copy % 9)
            take = min(m, n - written)
            for start in range(0, take, 5000):  # 5,000 at a time: the generator holds no second pool
                x = torch.roll(base[start : min(take, start + 5000)], shifts=(dy, dx), dims=(2, 3))
                if copy % 2:
                    x = x.flip(3)
                tile = (x.float() * gain).round_().clamp_(0, 255).to(torch.uint8).numpy()
                for image in tile:
                    sink.write(image)
                    hashes.append(content_hash(image.tobytes()))
            written += take
            copy += 1
            print(f"    tiled {written:,} / {n:,}", flush=True)
        return list(range(n)), [], hashes

    return decode


def store(args: argparse.Namespace, decode: Decoder) -> StoredPool:
    """The benchmark's pool in the store under ``--work``, decoded by ``decode`` if it is not there yet."""
    from imgselect.io.cache import cache_key
    from imgselect.io.poolstore import stored_pool

    key = cache_key(benchmark="million_pool", n=args.n, size=args.size)
    return stored_pool(args.work / "cache", key, args.size, decode, lambda kept: [f"tile:{i}" for i in kept])


def build(args: argparse.Namespace) -> dict[str, Any]:
    meter = Meter()
    with meter.stage("decode into the store"):
        stored = store(args, tiled_decoder(args.n, args.size))
    assert stored.built, f"{stored.path} existed already: delete --work first"
    return {"stages": meter.stages, "store": str(stored.path), "bytes": stored.images.numel()}


def job(args: argparse.Namespace) -> dict[str, Any]:
    import faiss

    from imgselect.embeddings.base import EmbedContext
    from imgselect.embeddings.pixels import PixelsEmbedding
    from imgselect.pool import ImageSet, stream_fingerprint
    from imgselect.run.runtime import StageTimer, TrainerFactory
    from imgselect.selection.dedup import dhash
    from imgselect.selection.kmeans import KMeansOptions
    from imgselect.selection.typiclust import TypiClustSelector
    from imgselect.stages.embed import embed_stage

    def missing(sink: ImageSink) -> tuple[list[int], list[tuple[str, str]], list[str]]:
        raise RuntimeError(f"no pool in {args.work}: the build phase runs first")

    meter = Meter()
    with meter.stage("load (map the store)"):
        stored = store(args, missing)
        pool = ImageSet(stored.images, stored.ids, hashes=stored.hashes, known_fingerprint=stored.fingerprint)
    assert not stored.built
    with meter.stage("fingerprint (streamed; a store-backed pool reads it from the store)"):
        assert stream_fingerprint(pool.images, pool.ids) == pool.fingerprint()
    with meter.stage("dHash (near-duplicate stage)"):
        dhash(pool.images)
    out_dir = args.work / f"job{args.size}"
    out_dir.mkdir(parents=True, exist_ok=True)
    # the pixels embedding trains nothing: a factory that builds no Trainer
    no_training = TrainerFactory(trainer=lambda **kw: None, logger=None, out_dir=out_dir)
    ctx = EmbedContext(pool=pool, datamodule=None, out_dir=out_dir, seed=0, trainers=no_training)  # type: ignore[arg-type]
    embedding = PixelsEmbedding(size=16, dim=args.dim)
    with meter.stage(f"embed (pixels 16x16 -> {args.dim}-d PCA, written to the cache)"):
        first = embed_stage(embedding, ctx, args.work / "cache", StageTimer())
    del first
    with meter.stage("embed again (cache hit: the vectors are mapped)"):
        res = embed_stage(embedding, ctx, args.work / "cache", StageTimer())
    emb = res.embeddings
    assert emb is not None and emb.shape == (args.n, args.dim)

    timings: dict[str, float] = {}
    original = KMeansOptions.run

    def timed(self: Any, x: np.ndarray, k: int) -> Any:
        t0 = time.perf_counter()
        result = original(self, x, k)
        timings["kmeans"] = time.perf_counter() - t0
        return result

    KMeansOptions.run = timed
    with meter.stage(f"select (TypiClust, K = {args.k}: K-means on every point + typical member)"):
        selection = TypiClustSelector(budget=args.k, gpu=False).select(args.n, emb)
    assert len(selection.indices) == args.k
    # GEMM-bound time of the K-means: 2·n·K·d FLOP per iteration (20) and for the final assignment.
    a = np.random.default_rng(0).standard_normal((65536, args.dim), dtype=np.float32)
    b = np.random.default_rng(1).standard_normal((args.dim, args.k), dtype=np.float32)
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    gflops = 2 * 65536 * args.dim * args.k / best / 1e9
    bound = (20 + 1) * 2 * args.n * args.k * args.dim / (gflops * 1e9)
    return {
        "stages": meter.stages,
        "kmeans_seconds": timings["kmeans"],
        "pick_seconds": meter.stages[next(s for s in meter.stages if s.startswith("select"))]["seconds"]
        - timings["kmeans"],
        "gemm_gflops": gflops,
        "kmeans_gemm_bound_seconds": bound,
        "kmeans_over_bound": timings["kmeans"] / bound,
        "faiss_threads": faiss.omp_get_max_threads(),
        "bytes": pool.images.numel(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--k", type=int, default=1000)
    parser.add_argument("--work", type=Path, default=Path("/tmp/million"))
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--keep", action="store_true", help="keep the stores and embeddings in --work")
    parser.add_argument("--phase", choices=["build", "job"], help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.phase:  # a child: one phase, its result as the last line of stdout
        result = build(args) if args.phase == "build" else job(args)
        print("RESULT " + json.dumps(result), flush=True)
        return

    rows = []
    for size in args.sizes:
        shutil.rmtree(args.work, ignore_errors=True)
        row: dict[str, Any] = {"n": args.n, "size": size, "dim": args.dim, "k": args.k}
        for phase in ("build", "job"):
            print(f"{phase}: {args.n:,} images at {size}x{size}", flush=True)
            cmd = [sys.executable, __file__, "--phase", phase, "--size", str(size), "--n", str(args.n)]
            cmd += ["--dim", str(args.dim), "--k", str(args.k), "--work", str(args.work)]
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
            last = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
            if proc.returncode or not last:
                print(proc.stdout[-3000:], proc.stderr[-3000:])
                raise SystemExit(f"{phase} at {size} failed (exit {proc.returncode})")
            print("\n".join(line for line in proc.stdout.splitlines() if line.startswith("  ")))
            child = json.loads(last[-1][len("RESULT ") :])
            child["peak_rss"] = max(s["ru_maxrss_so_far"] for s in child["stages"].values())
            child["peak_rss_over_pool"] = child["peak_rss"] / child["bytes"]
            row[phase] = child
        rows.append(row)
        if not args.keep:
            shutil.rmtree(args.work, ignore_errors=True)
    if args.out:
        from record import save_result

        save_result(args.out, " ".join(["python", *sys.argv]), rows=rows)
        write_markdown(args.out.with_suffix(".md"), rows)


def write_markdown(path: Path, rows: list[dict[str, Any]]) -> None:
    gib = 2**30
    lines = []
    for row in rows:
        pool = row["job"]["bytes"] / gib
        lines += [
            f"**{row['n']:,} images at {row['size']}x{row['size']}** (uint8 pool {pool:.2f} GiB; "
            f"peak RSS: build {row['build']['peak_rss'] / gib:.2f} GiB = {row['build']['peak_rss_over_pool']:.2f}x, "
            f"job {row['job']['peak_rss'] / gib:.2f} GiB = {row['job']['peak_rss_over_pool']:.2f}x the pool)",
            "",
            "| stage | seconds | peak RSS (GiB) | of it anonymous | of it mapped files |",
            "|---|---|---|---|---|",
        ]
        for phase in ("build", "job"):
            for name, s in row[phase]["stages"].items():
                lines.append(
                    f"| {name} | {s['seconds']:.1f} | {s['peak_rss_sampled'] / gib:.2f} | "
                    f"{s['peak_anon'] / gib:.2f} | {s['peak_file'] / gib:.2f} |"
                )
        j = row["job"]
        lines += [
            "",
            f"K-means (K = {row['k']}, {row['n']:,} x {row['dim']}, 20 iterations, every point): "
            f"{j['kmeans_seconds']:.0f} s; GEMM-bound {j['kmeans_gemm_bound_seconds']:.0f} s at "
            f"{j['gemm_gflops']:.0f} GFLOP/s -> {j['kmeans_over_bound']:.1f}x; typical members (pick): "
            f"{j['pick_seconds']:.0f} s.",
            "",
        ]
    path.write_text("\n".join(lines))
    print("wrote", path)


if __name__ == "__main__":
    main()
