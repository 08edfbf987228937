"""The embedding stage: vectors for every pool image, from the cache or computed, kept beside the run."""

from __future__ import annotations

import json
import logging
import time
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from imgselect.embeddings.base import EmbedContext, Embedding
from imgselect.embeddings.file import IDS_SUFFIX
from imgselect.io.artifacts import atomic_path, write_json_atomic
from imgselect.io.cache import CacheEntry, cache_key, link_or_copy
from imgselect.run.runtime import StageTimer, is_rank_zero

log = logging.getLogger(__name__)

EMBEDDINGS = "embeddings.npy"
META = "meta.json"


@dataclass
class EmbeddingResult:
    """Pool embeddings (``None`` on DDP ranks other than 0 after a gathered computation) and what
    result.json says of them."""

    embeddings: np.ndarray | None
    info: dict[str, Any] = field(default_factory=dict)


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
    with lock:
        return _cached_or_computed(embedding, ctx, entry, timer, info)


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
        return EmbeddingResult(embeddings, info)

    info["cache_hit"] = False
    t0 = time.perf_counter()
    result = embedding.compute(ctx)
    for name, seconds in (result.timings or {"embed": time.perf_counter() - t0}).items():
        timer.add(name, seconds)
    info.update(result.metrics)
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


def _write_beside_run(out: Path, embeddings: np.ndarray, ids: list[str], cached: Path | None) -> None:
    """``embeddings.npy`` (a hard link to the cache when possible) and its ids, one per line."""
    out.mkdir(parents=True, exist_ok=True)
    if cached is not None and cached.exists():
        link_or_copy(cached, out / EMBEDDINGS)
    else:
        with atomic_path(out / EMBEDDINGS) as tmp:
            np.save(tmp, embeddings)  # the temporary name ends in .npy: np.save adds no suffix
    with atomic_path(out / Path(EMBEDDINGS).with_suffix(IDS_SUFFIX)) as tmp:
        tmp.write_text("".join(f"{i}\n" for i in ids), encoding="utf-8")
