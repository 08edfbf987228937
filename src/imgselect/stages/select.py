"""The selection stage: one function, whatever the embeddings came from (cache, a training callback, a file)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch.distributed as dist

from imgselect.artifacts import write_selection
from imgselect.pool import ImageSet
from imgselect.runtime import is_rank_zero
from imgselect.selection.selectors import Selection, Selector

log = logging.getLogger(__name__)


def select_stage(
    selector: Selector,
    pool: ImageSet,
    embeddings: np.ndarray | None,
    n_classes: int,
    out_dir: str | Path | None,
) -> Selection:
    """Run ``selector`` on the pool and write ``selection.csv`` + ``selection.png`` (rank 0).

    Under DDP with an initialised process group, rank 0 decides and broadcasts the selection, so every
    process trains on the same images (ranks other than 0 may hold no embeddings). Without one, each
    process selects for itself: selectors are deterministic for a given seed.
    """
    distributed = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
    selection: Selection | None = None
    if not distributed or dist.get_rank() == 0:
        if selector.requires_embeddings and embeddings is None:
            raise ValueError(f"selector {selector.name} needs pool embeddings; none were computed")
        selection = selector.select(
            len(pool),
            embeddings if selector.requires_embeddings else None,
            source=pool.source,
            n_classes=n_classes,
        )
        if len(selection) != selector.budget or len(np.unique(selection.indices)) != len(selection):
            raise RuntimeError(
                f"selector {selector.name} returned {len(selection)} picks "
                f"({len(np.unique(selection.indices))} distinct) for budget={selector.budget}"
            )
        if out_dir is not None and is_rank_zero():
            write_selection(out_dir, selection, pool)
        log.info("%s selected %d of %d images", selector.name, len(selection), len(pool))
    if distributed:
        box = [selection]
        dist.broadcast_object_list(box, src=0)
        selection = box[0]
    assert selection is not None
    return selection
