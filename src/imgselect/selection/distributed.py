"""K-means on embeddings sharded over the ranks of a ``torch.distributed`` job, as plain functions on arrays.

Each rank passes only its own shard of the pool's embeddings and gets back the clustering of that shard; no
rank ever holds the whole matrix. What travels between ranks is small and does not grow with the pool: a
bounded random sample of every shard, once, for the seeding, then per Lloyd iteration one all-reduce of the
per-centre sums and counts (``k·d + k + 2`` float64). The transport is the default process group that the job
already has (the one Lightning's DDP starts: gloo on CPU, NCCL on GPU); without one, or with a world of
one, the same code is plain K-means of the one shard, with no transport at all.
"""

from __future__ import annotations

import logging
import mmap
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from imgselect.run.progress import format_duration
from imgselect.selection.kmeans import (
    KMeansResult,
    count_nonfinite_rows,
    faiss_gpu_available,
    kmeans_plusplus,
    require_faiss,
)
from imgselect.selection.neighbors import flat_index

log = logging.getLogger(__name__)

# Each rank offers the seeding min(shard, max(SAMPLE_PER_CENTROID·k, SAMPLE_MIN)) of its points by default:
# K-means++ needs a few dozen points per centre (it looks at 32·k of the gathered ones, see kmeans.py).
SAMPLE_PER_CENTROID = 40
SAMPLE_MIN = 1000
# Rows converted to float64 at once when summing a shard per centre (2 MB at d = 64: larger chunks were no
# faster and left the allocator holding tens of MB).
SUM_CHUNK = 4096

Search = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class ShardKMeansResult(KMeansResult):
    """Outcome of :func:`distributed_kmeans` on one rank.

    ``centroids``, ``objective``, ``counts`` and ``iterations`` are global: the same on every rank.
    ``assignments`` and ``sq_distances`` are those of this rank's shard (its rows, in its order), so the
    inherited :attr:`cluster_sizes` counts only this shard's points; ``counts`` counts every rank's.

    Attributes:
        counts: ``(k,)`` int64 points of all ranks assigned to each centre at the final assignment.
        iterations: centroid updates run (``niter``, or fewer when no assignment changed on any rank).
        world_size: ranks the pool was sharded over (1 without a process group).
    """

    counts: np.ndarray
    iterations: int
    world_size: int


def distributed_kmeans(
    shard: np.ndarray,
    k: int,
    *,
    niter: int = 20,
    seed: int = 0,
    sample_per_rank: int | None = None,
    gpu: bool | str = "auto",
    ids: np.ndarray | None = None,
) -> ShardKMeansResult:
    """K-means (Euclidean) of a pool whose rows stay sharded over the ranks of the default process group.

    Every rank calls this with its own shard and the same ``k``, ``niter``, ``seed`` and ``sample_per_rank``.

    Seeding: each rank draws a seeded random sample of its shard, the samples are gathered to every rank (in
    rank order), and :func:`~imgselect.selection.kmeans.kmeans_plusplus` seeds ``k`` centres on them with
    ``seed``, the same on every rank (rank 0's are broadcast to make sure). Lloyd iterations: each rank
    assigns its shard to the nearest centre (an exact FAISS ``IndexFlatL2``), sums its points per centre
    (float64) and counts them; the sums, counts, objective and the number of changed assignments are summed
    over the ranks with one ``all_reduce``, and every rank sets the centres to sums / counts. A centre no
    point chose (count 0 on every rank) keeps its previous position. The iterations stop after ``niter``
    updates, or earlier once no assignment changed on any rank; a last assignment to the final centres gives
    the result.

    Without an initialised process group, or with a world of one, this is plain K-means of ``shard`` with this
    seeding (the sample is then drawn from ``shard`` alone), with no transport.

    With ``ids`` (each row's global id, a pool index), the seeding sample does not depend on how the pool is
    sharded: a point is in it when a seeded hash of its id falls below ``m / n`` (``m``: ``sample_per_rank``
    read as the sample's total size, default ``max(40·k, 1000)``; ``n``: the points of all ranks), and the
    gathered sample is put in id order. One rank, two or four then seed on the same points and start the Lloyd
    iterations from the same centres; the sums they all-reduce differ only in floating-point rounding.

    Args:
        shard: ``(n_r, d)`` this rank's embeddings (``n_r`` may be 0); converted to contiguous float32.
        k: number of clusters, ``1 <= k <=`` the points of all ranks.
        niter: Lloyd iterations (centroid updates) at most, ``>= 1``.
        seed: seeds every rank's sample (with its rank) and the K-means++ seeding.
        sample_per_rank: points each rank offers the seeding; ``None``: ``min(n_r, max(40·k, 1000))``. Every
            rank holds all ranks' samples during the seeding (``world · sample_per_rank · d`` float32).
        gpu: ``True``/``False``, or ``"auto"``: GPU when ``faiss.get_num_gpus() > 0``. Under a process group
            of several ranks, each searches on its own GPU (``torch.cuda.current_device()``).
        ids: ``(n_r,)`` distinct non-negative int global ids of the shard's rows (see above), or ``None``.

    Returns:
        The global centroids, objective and per-centre counts, and this shard's assignments and squared
        distances (see :class:`ShardKMeansResult`).
    """
    require_faiss()
    if niter < 1:
        raise ValueError(f"distributed K-means needs niter >= 1, got niter={niter}")
    if sample_per_rank is not None and sample_per_rank < 1:
        raise ValueError(f"sample_per_rank={sample_per_rank} must be >= 1 (or None for the default)")
    rank, world = rank_and_world()
    x = np.ascontiguousarray(shard, dtype=np.float32)
    use_gpu = faiss_gpu_available() if gpu == "auto" else bool(gpu)
    t0 = time.perf_counter()
    if ids is not None and len(ids) != len(x):
        raise ValueError(f"ids holds {len(ids)} ids for a shard of {len(x)} rows")
    sample, total = _gathered_sample(
        x, k, seed=seed, sample_per_rank=sample_per_rank, rank=rank, world=world, ids=ids
    )
    if rank == 0:
        log.info(
            "distributed K-means: K=%d on %s x %d over %d rank(s), seeding on %s sampled points, %s",
            k, f"{total:,}", sample.shape[1], world, f"{len(sample):,}", "GPU" if use_gpu else "CPU",
        )  # fmt: skip
    centroids = _from_rank_zero(np.ascontiguousarray(sample[kmeans_plusplus(sample, k, seed=seed)]), world)
    del sample
    seeded = time.perf_counter()
    search = _nearest_centroid_search(use_gpu, world)
    centroids, assign, sq, totals, iterations = _lloyd(x, centroids, niter, search, world)
    if rank == 0:
        log.info(
            "distributed K-means: done in %s (seeding %s, %d iterations), objective %.4g",
            format_duration(time.perf_counter() - t0), format_duration(seeded - t0), iterations, totals[k],
        )  # fmt: skip
    return ShardKMeansResult(
        centroids=centroids,
        assignments=assign,
        sq_distances=sq,
        objective=float(totals[k]),
        device="gpu" if use_gpu else "cpu",
        counts=np.rint(totals[:k]).astype(np.int64),
        iterations=iterations,
        world_size=world,
    )


def rank_and_world() -> tuple[int, int]:
    """``(rank, world size)`` of the default process group; ``(0, 1)`` when none is initialised."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _gathered_sample(
    x: np.ndarray,
    k: int,
    *,
    seed: int,
    sample_per_rank: int | None,
    rank: int,
    world: int,
    ids: np.ndarray | None = None,
) -> tuple[np.ndarray, int]:
    """Every rank's seeded sample of its shard, concatenated in rank order (the same array on every rank), and
    the points of all ranks. With ``ids``: the points whose id's seeded hash falls below the sampled fraction,
    in id order (the same whatever the sharding).

    Each rank's shape and non-finite rows travel with its sample, so that a bad shard raises the same error on
    every rank instead of leaving the others waiting in a collective.
    """
    problem = ""
    if x.ndim != 2 or x.shape[1] == 0:
        problem = f"shard must be a 2-D (n, d) array with d >= 1, got shape {x.shape}"
    elif bad := count_nonfinite_rows(x):
        problem = f"{bad} of {len(x)} embeddings contain NaN or inf"
    if ids is not None:
        return _sample_by_id(x, k, ids, seed=seed, size=sample_per_rank, problem=problem, world=world)
    sample = np.zeros((0, 0), dtype=np.float32)
    if not problem:
        m = min(len(x), sample_per_rank or max(SAMPLE_PER_CENTROID * k, SAMPLE_MIN))
        rng = np.random.default_rng([seed, rank])
        sample = x[np.sort(rng.choice(len(x), size=m, replace=False))] if m < len(x) else x.copy()
    parts = _all_gather((problem, 0 if problem else len(x), sample), world)
    _check_reports([(p, s.shape[1]) for p, _, s in parts])
    total = sum(n for _, n, _ in parts)
    gathered = np.concatenate([s for _, _, s in parts])
    if not 1 <= k <= len(gathered):
        raise ValueError(
            f"distributed K-means needs 1 <= k <= the sampled points, got k={k} for {len(gathered)} sampled "
            f"of {total} points over {world} rank(s); lower k or raise sample_per_rank"
        )
    return gathered, total


def _check_reports(reports: list[tuple[str, int | None]]) -> None:
    """Raise the same error on every rank when a rank reported a bad shard or the ranks' dimensions differ
    (``reports``: each rank's problem, empty when none, and dimension ``d``, ``None`` for a rank whose ``d``
    does not count, in rank order)."""
    problems = [f"rank {r}: {p}" for r, (p, _) in enumerate(reports) if p]
    if problems:
        raise ValueError("distributed K-means got bad shards: " + "; ".join(problems))
    if len({d for _, d in reports if d is not None}) > 1:
        dims = ", ".join(f"rank {r}: d={d}" for r, (_, d) in enumerate(reports) if d is not None)
        raise ValueError(f"every rank's shard must have the same dimension d, got {dims}")


def _sample_by_id(
    x: np.ndarray, k: int, ids: np.ndarray, *, seed: int, size: int | None, problem: str, world: int
) -> tuple[np.ndarray, int]:
    """The seeding sample chosen by id (see :func:`distributed_kmeans`): two gathers, the counts, then the
    sampled rows with their ids."""
    parts = _all_gather((problem, 0 if problem else len(x), x.shape[1] if x.ndim == 2 else 0), world)
    _check_reports([(p, d if n else None) for p, n, d in parts])  # an empty shard's d does not count
    total = sum(n for _, n, _ in parts)
    fraction = min(1.0, (size or max(SAMPLE_PER_CENTROID * k, SAMPLE_MIN)) / max(total, 1))
    keep = id_uniform(np.asarray(ids), seed) < fraction
    gathered = _all_gather((np.asarray(ids)[keep], x[keep]), world)
    order = np.argsort(np.concatenate([i for i, _ in gathered]), kind="stable")
    sample = np.concatenate([s for _, s in gathered])[order]
    if not 1 <= k <= len(sample):
        raise ValueError(
            f"distributed K-means needs 1 <= k <= the sampled points, got k={k} for {len(sample)} sampled "
            f"of {total} points over {world} rank(s); lower k or raise sample_per_rank"
        )
    return sample, total


def id_uniform(ids: np.ndarray, seed: int) -> np.ndarray:
    """A number in ``[0, 1)`` for each id, fixed by the id and ``seed`` alone (SplitMix64's finaliser of
    ``id + seed·golden ratio``): a random draw that does not depend on which rank holds the id."""
    with np.errstate(over="ignore"):
        z = ids.astype(np.uint64) + np.uint64(seed % 2**64) * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) / float(2**53)


def _all_gather(obj: Any, world: int) -> list[Any]:
    """``obj`` of every rank, in rank order (``[obj]`` without a process group)."""
    if world == 1:
        return [obj]
    parts: list[Any] = [None] * world
    dist.all_gather_object(parts, obj)
    return parts


def all_reduce_sum(buf: np.ndarray, world: int) -> np.ndarray:
    """``buf`` (float64) summed over the ranks of the default process group (``buf`` itself when ``world`` is 1)."""
    if world == 1:
        return buf
    tensor = _on_backend_device(buf)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor.cpu().numpy()


def _from_rank_zero(array: np.ndarray, world: int) -> np.ndarray:
    """Rank 0's ``array`` on every rank (same shape and dtype everywhere).

    Every rank seeds on the same sample with the same seed, so the centres already agree; taking rank 0's
    keeps them bit for bit the same where ranks' BLAS threads round a distance differently.
    """
    if world == 1:
        return array
    tensor = _on_backend_device(array)
    dist.broadcast(tensor, src=0)
    return np.ascontiguousarray(tensor.cpu().numpy())


def _on_backend_device(array: np.ndarray) -> torch.Tensor:
    """``array`` as a tensor where the default group's backend reduces it: CUDA for NCCL, else CPU."""
    tensor = torch.from_numpy(np.ascontiguousarray(array))
    if dist.get_backend() == "nccl":
        tensor = tensor.to(torch.device("cuda", torch.cuda.current_device()))
    return tensor


def _nearest_centroid_search(use_gpu: bool, world: int) -> Search:
    """``search(points, centroids) -> (sq_distances, assignments)``: each point's nearest centroid, exact.

    One rank alone: :func:`~imgselect.selection.neighbors.flat_index` (every GPU when ``use_gpu``). Several
    ranks on GPU: the index goes to this rank's own GPU, with one FAISS GPU resource kept for every call.
    """
    if not use_gpu or world == 1:

        def search_flat(points: np.ndarray, centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            return flat_index(centroids, gpu=use_gpu).search(points, 1)

        return search_flat
    import faiss

    resources = faiss.StandardGpuResources()
    device = torch.cuda.current_device() if torch.cuda.is_available() else 0

    def search_own_gpu(points: np.ndarray, centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        index = faiss.index_cpu_to_gpu(resources, device, flat_index(centroids, gpu=False))
        return index.search(points, 1)

    return search_own_gpu


def _lloyd(
    x: np.ndarray, centroids: np.ndarray, niter: int, search: Search, world: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """Lloyd iterations from ``centroids`` on the shard ``x``, the statistics summed over the ranks.

    Returns:
        The final centroids (float32), this shard's assignments (int64) and squared distances (float32) to
        them, the global totals of the final assignment (``counts (k,)``, objective, changed count), and the
        number of centroid updates.
    """
    k, d = centroids.shape
    previous: np.ndarray | None = None
    for iteration in range(niter + 1):
        sq, idx = search(x, centroids)
        assign = idx[:, 0].astype(np.int64)
        sq = np.maximum(sq[:, 0], 0.0).astype(np.float32)
        changed = len(x) if previous is None else int((assign != previous).sum())
        local = np.concatenate([_centre_sums(x, assign, k).ravel(), np.bincount(assign, minlength=k)])
        totals = all_reduce_sum(np.concatenate([local, [sq.sum(dtype=np.float64), changed]]), world)
        previous = assign
        if iteration == niter or (iteration > 0 and totals[-1] == 0):
            # no assignment changed: the centroids already are the means of this assignment
            return centroids, assign, sq, totals[k * d :], iteration
        sums, counts = totals[: k * d].reshape(k, d), totals[k * d : k * d + k]
        filled = counts > 0  # an empty centre keeps its previous position
        updated = centroids.astype(np.float64)
        updated[filled] = sums[filled] / counts[filled, None]
        centroids = np.ascontiguousarray(updated, dtype=np.float32)
    raise AssertionError("unreachable: the loop returns at iteration == niter")


def _centre_sums(x: np.ndarray, assign: np.ndarray, k: int) -> np.ndarray:
    """``(k, d)`` float64 sum of the points of ``x`` assigned to each centre, ``SUM_CHUNK`` rows at a time."""
    sums = torch.zeros((k, x.shape[1]), dtype=torch.float64)
    index = torch.from_numpy(assign)
    for start in range(0, len(x), SUM_CHUNK):
        rows = torch.from_numpy(x[start : start + SUM_CHUNK].astype(np.float64))  # a copy: x may be read-only
        sums.index_add_(0, index[start : start + SUM_CHUNK], rows)
    return sums.numpy()


def cluster_owners(counts: np.ndarray, world: int) -> np.ndarray:
    """The rank that gathers each cluster's members for the per-cluster work (TypiClust's typicality): the
    largest clusters first, each to the rank with the fewest members so far (ties: the lower rank), so every
    rank receives about ``1 / world`` of the pool. Depends on the global counts alone: the same on every rank."""
    owners = np.zeros(len(counts), dtype=np.int64)
    load = np.zeros(world, dtype=np.int64)
    for c in np.argsort(-np.asarray(counts), kind="stable"):
        r = int(np.argmin(load))
        owners[c] = r
        load[r] += counts[c]
    return owners


def send_to_owners(
    owners: np.ndarray, assignments: np.ndarray, payload: dict[str, np.ndarray], world: int
) -> dict[str, np.ndarray]:
    """Every rank's rows of the clusters this rank owns: ``payload``'s arrays (one row per shard point;
    ``assignments`` names each point's cluster, ``owners`` each cluster's rank) sent to the owning ranks with one
    ``gather_object`` per rank, and those received concatenated, in rank order."""
    if world == 1:
        return payload
    rank = rank_and_world()[0]
    dest = owners[assignments] if len(assignments) else np.zeros(0, dtype=np.int64)
    received: dict[str, np.ndarray] = {}
    for r in range(world):
        part = {name: array[dest == r] for name, array in payload.items()}
        parts: list[Any] | None = [None] * world if rank == r else None
        dist.gather_object(part, parts, dst=r)
        if rank == r:
            assert parts is not None
            received = {name: np.concatenate([p[name] for p in parts]) for name in payload}
    return received


def gather_all(obj: Any) -> list[Any]:
    """``obj`` of every rank of the default process group, in rank order (``[obj]`` without one)."""
    return _all_gather(obj, rank_and_world()[1])


def shard_rows(embeddings: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """``embeddings[ids]`` as contiguous float32: a slice (no copy of a mapped file) when ``ids`` is a run of
    consecutive indices (a rank's block with nothing excluded), else the rows gathered."""
    ids = np.asarray(ids, dtype=np.int64)
    if len(ids) and ids[-1] - ids[0] == len(ids) - 1 and bool(np.all(np.diff(ids) == 1)):
        return np.ascontiguousarray(embeddings[int(ids[0]) : int(ids[-1]) + 1], dtype=np.float32)
    return np.ascontiguousarray(embeddings[ids], dtype=np.float32)


def first_per_cluster(cluster: np.ndarray, key: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Positions of the point of lowest ``key`` in each cluster (ties: the lower id); one per non-empty cluster,
    in cluster order."""
    order = np.lexsort((ids, key, cluster))
    first = np.ones(len(order), dtype=bool)
    first[1:] = cluster[order][1:] != cluster[order][:-1]
    return order[first]


def release_pages(array: np.ndarray) -> None:
    """Hand back the pages of a memory-mapped ``array`` (an embedding file mapped read-only) that this process
    has read: they leave its resident memory and stay in the page cache, shared with the other ranks, to be read
    again at the cost of a page fault. Nothing for an array in memory."""
    mapping = _mapping_of(array)
    if mapping is not None and hasattr(mmap, "MADV_DONTNEED"):
        mapping.madvise(mmap.MADV_DONTNEED)


RowReader = Callable[[np.ndarray], np.ndarray]


@contextmanager
def row_reader(array: np.ndarray) -> Iterator[RowReader]:
    """A function ``read(ids) -> (len(ids), d) float32`` giving rows of ``array`` scattered anywhere in it.

    From a memory-mapped file (``numpy.load(..., mmap_mode=...)``: the embedding file every rank maps), the rows
    are read with positioned reads through the page cache: nothing of the file enters this process's resident
    memory. A mapped read would map much more than the row: each page fault maps the cached pages around it
    (whole large folios of the disk's read-ahead, 8 MiB on this machine), so reading a cluster's scattered
    members mapped the whole file, whatever ``madvise`` said. An array in memory is indexed as it is.
    """
    path = getattr(array, "filename", None)
    whole_file = isinstance(array, np.memmap) and isinstance(array.base, mmap.mmap) and array.ndim == 2
    if not (whole_file and path and array.flags.c_contiguous):

        def index(ids: np.ndarray) -> np.ndarray:
            return np.asarray(array[ids], dtype=np.float32)

        yield index
        return
    row_bytes, offset = array.shape[1] * array.dtype.itemsize, int(getattr(array, "offset", 0))
    with open(path, "rb") as f:

        def pread(ids: np.ndarray) -> np.ndarray:
            out = np.empty((len(ids), array.shape[1]), dtype=array.dtype)
            for j, i in enumerate(np.asarray(ids, dtype=np.int64)):
                if os.preadv(f.fileno(), [out[j]], offset + int(i) * row_bytes) != row_bytes:
                    raise RuntimeError(f"{path}: row {i} is beyond the end of the file")
            return out.astype(np.float32, copy=False)

        yield pread


def _mapping_of(array: np.ndarray) -> mmap.mmap | None:
    """The file mapping behind a ``numpy.memmap`` (or a slice of one), else ``None``."""
    mapping = getattr(array, "_mmap", None)
    return mapping if isinstance(mapping, mmap.mmap) else None
