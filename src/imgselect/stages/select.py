"""The selection stage: one function, whatever the embeddings came from (cache, a training callback, a file)."""

from __future__ import annotations

import logging
from collections.abc import Collection
from pathlib import Path

import numpy as np
import torch.distributed as dist

from imgselect.io.artifacts import write_selection
from imgselect.pool import ImageSet, PoolShard
from imgselect.run.runtime import is_rank_zero, peak_memory_mib
from imgselect.selection.distributed import gather_all
from imgselect.selection.selectors import Selection, Selector, ShardedSelector

log = logging.getLogger(__name__)


def select_stage(
    selector: Selector,
    pool: ImageSet,
    embeddings: np.ndarray | None,
    n_classes: int,
    out_dir: str | Path | None,
    exclude: dict[str, np.ndarray] | None = None,
    keep: Collection[Path] = (),
    predictions: np.ndarray | None = None,
    shard: PoolShard | None = None,
) -> Selection:
    """Run ``selector`` on the pool and write ``selection.csv`` + ``selection.png`` (rank 0).

    ``exclude`` names pool indices the selector may not choose, by reason (``labeled``: a person's earlier
    rounds; ``duplicates``: near-duplicates of another image); the selector then runs on the rest, and the
    counts go into the selection's stats. ``keep``: files the run reads, never written over (a ``selection.csv``
    a person labeled is left as it is and the new one gets another name). ``predictions``: the previous round's
    ``(n_pool, C)`` class probabilities (rows of images it did not predict may be NaN), handed to selectors
    that use them (:attr:`Selector.uses_predictions`), for the images left to choose from.

    The budget is checked against the pool once, before any training, by
    :func:`imgselect.run.settings.check_settings`, and selectors assume it fits; this stage refuses only what that
    check could not see: a pool that near-duplicates found on the embeddings (``dedup=embedding``) left smaller
    than the budget.

    Under DDP with an initialised process group, rank 0 decides and broadcasts the selection, so every
    process trains on the same images (ranks other than 0 may hold no embeddings). Without one, each
    process selects for itself: selectors are deterministic for a given seed.

    ``shard``: this rank's block of a sharded DDP job (``embeddings`` is then the pool's file, mapped). A
    :class:`~imgselect.selection.selectors.ShardedSelector` (TypiClust, ``ae``, ``ae_centroid``) then chooses on
    every rank together, each reading only its block's candidates; the stats record the ranks, the rows each held
    and each one's peak resident memory since the embedding stage began, and how much that peak is above what the
    rank held then (:func:`imgselect.run.runtime.reset_peak_memory`). Any other selector, and one that reads the
    previous round's predictions (``cluster_margin``, ...), runs on rank 0 over the mapped file, as without a shard.
    """
    distributed = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
    if (
        shard is not None
        and selector.requires_embeddings
        and not selector.uses_predictions
        and isinstance(selector, ShardedSelector)
    ):
        if embeddings is None:
            raise ValueError(f"selector {selector.name} needs pool embeddings; none were computed")
        excluded, candidates = _candidates(selector, pool, exclude)
        local = candidates[(candidates >= shard.start) & (candidates < shard.stop)]
        chosen = selector.choose_sharded(embeddings, local, source=pool.source)
        if is_rank_zero():
            for note in chosen.notes:
                log.warning(note)
        rows, memory = zip(*gather_all((len(local), peak_memory_mib())), strict=True)
        chosen.stats.update(
            rows_per_rank=",".join(map(str, rows)),
            peak_rss_mib_per_rank=",".join(f"{peak:.0f}" for peak, _ in memory),
            rss_growth_mib_per_rank=",".join(f"{peak - start:.0f}" for peak, start in memory),
        )
        return _checked_and_written(selector, chosen, pool, excluded, out_dir, keep)
    selection: Selection | None = None
    if not distributed or dist.get_rank() == 0:
        if selector.requires_embeddings and embeddings is None:
            raise ValueError(f"selector {selector.name} needs pool embeddings; none were computed")
        excluded, candidates = _candidates(selector, pool, exclude)
        blocked = np.setdiff1d(np.arange(len(pool)), candidates)
        vectors = None
        if selector.requires_embeddings and embeddings is not None:
            # nothing set aside: the embeddings as they are (a mapped cache stays mapped, never gathered)
            vectors = embeddings[candidates] if len(blocked) else embeddings
        if selector.uses_predictions:
            probs = None if predictions is None else predictions[candidates] if len(blocked) else predictions
            selection = selector.select(  # type: ignore[call-arg]  # the protocol's select takes no predictions
                len(candidates), vectors, source=pool.source, n_classes=n_classes, predictions=probs
            )
        else:
            selection = selector.select(len(candidates), vectors, source=pool.source, n_classes=n_classes)
        selection.indices = candidates[np.asarray(selection.indices, dtype=np.int64)]
        selection = _checked_and_written(selector, selection, pool, excluded, out_dir, keep)
    if distributed:
        box = [selection]
        dist.broadcast_object_list(box, src=0)
        selection = box[0]
    assert selection is not None
    return selection


def _candidates(
    selector: Selector, pool: ImageSet, exclude: dict[str, np.ndarray] | None
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The excluded indices by reason, and the pool indices left to choose from (enough for the budget)."""
    excluded = {k: np.unique(np.asarray(v, dtype=np.int64)) for k, v in (exclude or {}).items()}
    blocked = np.unique(np.concatenate([np.zeros(0, np.int64), *excluded.values()]))
    candidates = np.setdiff1d(np.arange(len(pool)), blocked)
    if len(candidates) < selector.budget:
        # check_settings held the budget against the pool, the labeled images and dhash's near-duplicates
        # before any training; only near-duplicates found since, on the embeddings, can leave too few
        counts = ", ".join(f"{len(v)} {k}" for k, v in excluded.items())
        raise ValueError(
            f"budget={selector.budget} exceeds the {len(candidates)} images left to choose from in "
            f"{pool.source} ({len(pool)} readable; excluded: {counts}); lower budget, or raise "
            f"dedup.min_similarity so fewer images count as near-duplicates"
        )
    return excluded, candidates


def _checked_and_written(
    selector: Selector,
    selection: Selection,
    pool: ImageSet,
    excluded: dict[str, np.ndarray],
    out_dir: str | Path | None,
    keep: Collection[Path],
) -> Selection:
    """``selection`` with its exclusion counts, checked for ``budget`` distinct picks; rank 0 writes it."""
    for k, v in excluded.items():
        selection.stats[f"excluded_{k}"] = len(v)
    if len(selection) != selector.budget or len(np.unique(selection.indices)) != len(selection):
        raise RuntimeError(
            f"selector {selector.name} returned {len(selection)} picks "
            f"({len(np.unique(selection.indices))} distinct) for budget={selector.budget}"
        )
    if out_dir is not None and is_rank_zero():
        write_selection(out_dir, selection, pool, keep)
    log.info("%s selected %d of %d images", selector.name, len(selection), len(pool))
    return selection
