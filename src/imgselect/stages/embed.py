"""The embedding stage: vectors for every pool image, from the cache or computed, kept beside the run."""

from __future__ import annotations

import gc
import json
import logging
import os
import time
import uuid
from contextlib import AbstractContextManager, ExitStack, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch.distributed as dist

from imgselect.embeddings.base import EmbedContext, Embedding, EmbedOutput
from imgselect.embeddings.file import IDS_SUFFIX
from imgselect.io.artifacts import atomic_path, write_json_atomic
from imgselect.io.cache import CacheEntry, cache_key, link_or_copy
from imgselect.pool import PoolShard
from imgselect.run.runtime import StageTimer, is_rank_zero

log = logging.getLogger(__name__)

EMBEDDINGS = "embeddings.npy"
META = "meta.json"


@dataclass
class EmbeddingResult:
    """Pool embeddings (``None`` on DDP ranks other than 0 after a gathered computation) and what
    result.json says of them.

    With ``shard`` (a sharded DDP job, :attr:`EmbedContext.shard`): ``embeddings`` is the whole pool's file
    mapped read-only on every rank, of which each rank reads only its block (``embeddings[shard.rows]``): no
    rank holds the whole matrix in memory.
    """

    embeddings: np.ndarray | None
    info: dict[str, Any] = field(default_factory=dict)
    shard: PoolShard | None = None


def embedding_cache_key(
    embedding: Embedding, settings: dict[str, Any], pool_fingerprint: str, seed: int, precision: str | None
) -> str:
    """Key of an embedding: the pool's pixels and ids, the embedding and its ``settings()`` (computed once by
    the caller: a backbone's hashes its weights file), and — for trained or randomly initialised networks —
    the seed and the training precision."""
    return cache_key(
        pool=pool_fingerprint,
        embedding=embedding.name,
        settings=settings,
        seed=seed if embedding.seeded else None,
        precision=precision if embedding.seeded else None,
    )


def embed_stage(
    embedding: Embedding,
    ctx: EmbedContext,
    cache_root: str | Path,
    timer: StageTimer,
    use_cache: bool = True,
) -> EmbeddingResult:
    """Embed the pool with ``embedding`` or load the vectors from the cache; rank 0 writes
    ``embeddings.npy`` and ``embeddings.ids.txt`` into the job folder for reuse (``embedding=file``)."""
    pool = ctx.pool
    settings = embedding.settings()
    info: dict[str, Any] = {"name": embedding.name, "settings": settings}
    entry: CacheEntry | None = None
    if embedding.cacheable:
        key = embedding_cache_key(embedding, settings, pool.fingerprint(), ctx.seed, ctx.trainers.precision)
        entry = CacheEntry(cache_root, f"embeddings/{embedding.name}", key, [EMBEDDINGS, META])
        info.update(cache_key=key, cache_dir=str(entry.path))
    # one job builds an entry, the others of a sweep that need it wait and read it (a DDP job, whose ranks
    # compute together, is not locked: its copy is written atomically and a duplicate dropped)
    if not use_cache:
        entry = None  # its key and folder are still reported; nothing is read from or written to it
    lock: AbstractContextManager[None] = nullcontext()
    if entry is not None and ctx.trainers.one_process():
        lock = entry.lock()
    if ctx.shard is not None:
        info["ranks"] = ctx.shard.world
    with lock:
        result = _cached_or_computed(embedding, ctx, entry, timer, info)
    if ctx.shard is None or result.shard is not None:
        return result
    # sharded job, vectors computed whole (rank 0 wrote them): every rank maps the file instead
    dist.barrier()
    written = entry.path / EMBEDDINGS if entry is not None else Path(ctx.out_dir) / EMBEDDINGS
    return EmbeddingResult(np.load(written, mmap_mode="r"), result.info, ctx.shard)


def _cached_or_computed(
    embedding: Embedding, ctx: EmbedContext, entry: CacheEntry | None, timer: StageTimer, info: dict[str, Any]
) -> EmbeddingResult:
    pool = ctx.pool
    out = Path(ctx.out_dir)
    if entry is not None and entry.complete():
        log.info(
            "embedding %s: loading cached vectors from %s (nothing computed)", embedding.name, entry.path
        )
        with timer("embed"):  # mapped, not read: pages come in as the selection touches them (copy-on-write)
            embeddings = np.load(entry.path / EMBEDDINGS, mmap_mode="c")
        if len(embeddings) != len(pool):
            raise RuntimeError(
                f"cached embeddings in {entry.path} hold {len(embeddings)} rows for a pool of {len(pool)}; "
                f"delete {entry.path}"
            )
        meta = json.loads((entry.path / META).read_text())
        info.update(cache_hit=True, **meta.get("metrics", {}))
        if is_rank_zero():
            for name in meta.get("files", []):
                link_or_copy(entry.path / name, out / name)
            _write_beside_run(out, embeddings, pool.ids, entry.path / EMBEDDINGS)
        info["dim"] = int(embeddings.shape[1])
        return EmbeddingResult(embeddings, info, ctx.shard)  # each rank reads its block of the mapped file

    info["cache_hit"] = False
    t0 = time.perf_counter()
    result = embedding.compute(ctx)
    for name, seconds in (result.timings or {"embed": time.perf_counter() - t0}).items():
        timer.add(name, seconds)
    info.update(result.metrics)
    if result.shard is not None:
        return _keep_shards(result, ctx, entry, info)
    embeddings = result.embeddings
    if embeddings is None:  # a DDP rank other than 0: rank 0 holds the gathered vectors
        return EmbeddingResult(None, info)
    if len(embeddings) != len(pool):
        raise RuntimeError(
            f"embedding {embedding.name} returned {len(embeddings)} rows for {len(pool)} images"
        )
    info["dim"] = int(embeddings.shape[1])
    cached: Path | None = None
    if is_rank_zero() and entry is not None:
        with entry.writing() as tmp:
            np.save(tmp / EMBEDDINGS, embeddings)
            for f in result.files:
                link_or_copy(f, tmp / f.name)
            write_json_atomic(
                tmp / META, {"metrics": result.metrics, "files": [f.name for f in result.files]}
            )
        cached = entry.path / EMBEDDINGS
        log.info("embedding %s cached at %s", embedding.name, entry.path)
    if is_rank_zero():
        _write_beside_run(out, embeddings, pool.ids, cached)
    return EmbeddingResult(embeddings, info)


def _keep_shards(
    result: EmbedOutput, ctx: EmbedContext, entry: CacheEntry | None, info: dict[str, Any]
) -> EmbeddingResult:
    """Each rank's block of rows (``result.shard``) written into one ``(n_pool, d)`` file — the cache entry's
    ``embeddings.npy``, or the job folder's with ``cache=false`` — which every rank then maps read-only.

    Rank 0 creates the file (and the entry's temporary folder) and tells the others where; each rank writes
    its block in place (:func:`_write_block`); rank 0 completes the entry (``meta.json``, one rename) and links the file
    beside the run. A failure on rank 0 before the others write is sent to them, so no rank waits forever.
    """
    shard, out = result.shard, Path(ctx.out_dir)
    assert shard is not None and result.embeddings is not None
    rows = np.ascontiguousarray(result.embeddings, dtype=np.float32)
    if rows.shape[0] != len(shard):
        raise RuntimeError(f"rank {shard.rank} embedded {rows.shape[0]} rows for its {len(shard)}")
    with ExitStack() as stack:
        target: Path | str | None = None
        if shard.rank == 0:
            try:
                if entry is not None:
                    target = stack.enter_context(entry.writing()) / EMBEDDINGS
                else:
                    out.mkdir(parents=True, exist_ok=True)
                    target = out / f".{EMBEDDINGS}.{uuid.uuid4().hex[:8]}.tmp.npy"
                header = (shard.total, rows.shape[1])
                np.lib.format.open_memmap(target, mode="w+", dtype=np.float32, shape=header).flush()
            except OSError as e:
                target = f"rank 0 could not create the embeddings file: {e}"
        target = _from_rank_zero(target, shard.world)
        if not isinstance(target, Path):
            raise RuntimeError(str(target))
        _write_block(target, rows, shard)
        # the vectors are in the file now: let go of this rank's copy before the selection maps its block
        del rows
        result.embeddings = None
        gc.collect()
        dist.barrier()  # every block is written
        if shard.rank == 0:
            if entry is not None:
                write_json_atomic(target.parent / META, {"metrics": result.metrics, "files": []})
            else:
                target.replace(out / EMBEDDINGS)
    dist.barrier()  # the entry is complete (renamed), or the job folder's file in place
    final = entry.path / EMBEDDINGS if entry is not None else out / EMBEDDINGS
    embeddings = np.load(final, mmap_mode="r")
    if len(embeddings) != shard.total:
        raise RuntimeError(f"{final} holds {len(embeddings)} rows for a pool of {shard.total}")
    if shard.rank == 0:
        _write_beside_run(out, embeddings, ctx.pool.ids, final)
        log.info("embedding written by %d ranks, a block each, into %s", shard.world, final)
    info["dim"] = int(embeddings.shape[1])
    return EmbeddingResult(embeddings, info, shard)


WRITE_CHUNK = 1 << 24  # bytes written at a time into the shared file (16 MiB)


def _write_block(path: Path, rows: np.ndarray, shard: PoolShard) -> None:
    """Write this rank's ``rows`` at their place in the ``.npy`` rank 0 created: plain positioned writes through
    the page cache (a memory map would count every page written in this process's resident memory)."""
    header = np.load(path, mmap_mode="r")
    if header.shape[1] != rows.shape[1]:
        raise RuntimeError(f"rank {shard.rank} embedded {rows.shape[1]}-d rows, rank 0 {header.shape[1]}-d")
    offset, row_bytes = header.offset, rows.shape[1] * 4
    del header
    step = max(1, WRITE_CHUNK // max(1, row_bytes))
    with path.open("r+b") as f:
        for i in range(0, len(rows), step):
            os.pwrite(f.fileno(), rows[i : i + step].tobytes(), offset + (shard.start + i) * row_bytes)
        f.flush()
        os.fsync(f.fileno())


def _from_rank_zero(obj: Any, world: int) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if world == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _write_beside_run(out: Path, embeddings: np.ndarray, ids: list[str], cached: Path | None) -> None:
    """``embeddings.npy`` (a hard link to the cache when possible) and its ids, one per line."""
    out.mkdir(parents=True, exist_ok=True)
    if cached is not None and cached == out / EMBEDDINGS:
        pass  # written there already
    elif cached is not None and cached.exists():
        link_or_copy(cached, out / EMBEDDINGS)
    else:
        with atomic_path(out / EMBEDDINGS) as tmp:
            np.save(tmp, embeddings)  # the temporary name ends in .npy: np.save adds no suffix
    with atomic_path(out / Path(EMBEDDINGS).with_suffix(IDS_SUFFIX)) as tmp:
        tmp.write_text("".join(f"{i}\n" for i in ids), encoding="utf-8")
