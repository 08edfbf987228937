"""Every selector runs with every embedding, through the real job (``run``), on a small real pool."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from omegaconf import DictConfig

from imgselect.io.artifacts import read_selection_csv
from imgselect.run.pipeline import run
from tests.conftest import CONF, SELECT_ONLY

SELECTORS = sorted(p.stem for p in (CONF / "selector").glob("*.yaml") if not p.stem.startswith("_"))
ROUND_AWARE = (
    "badge",
    "cluster_margin",
    "margin",
    "mixed",
)  # conf/selector files built on UncertaintySelector
EMBEDDINGS = {
    "pixels": ["embedding=pixels"],
    "autoencoder": ["embedding=autoencoder"],
    "backbone": ["embedding=backbone", "embedding.random_init=true", "embedding.batch_size=150"],
}


def _selection(cfg: DictConfig) -> tuple[dict, list[int]]:
    out = Path(cfg.paths.output_dir)
    result = json.loads((out / "result.json").read_text())
    return result, [int(r["pool_index"]) for r in read_selection_csv(out / "selection.csv")]


@pytest.mark.slow
@pytest.mark.parametrize("embedding", sorted(EMBEDDINGS))
def test_every_selector_with_every_embedding(
    embedding: str, compose_cfg: Callable[..., DictConfig], tmp_path: Path
) -> None:
    chosen: dict[str, list[int]] = {}
    for selector in SELECTORS:
        cfg = compose_cfg(*SELECT_ONLY, f"selector={selector}", *EMBEDDINGS[embedding])
        run(cfg)
        result, idx = _selection(cfg)
        assert len(idx) == 12 and len(set(idx)) == 12 and all(0 <= i < 300 for i in idx), selector
        assert result["budget"] == 12 and result["selector"] == cfg.selector.get("name", selector)
        if selector == "random":
            assert result["embedding"] is None
        else:
            assert result["embedding"] == embedding
            info = result["embedding_info"]
            # computed by the first selector that needed it, then read from the cache
            first = not any(s != "random" for s in chosen)
            assert info["cache_hit"] is not first, (selector, info)
        rows = read_selection_csv(Path(cfg.paths.output_dir) / "selection.csv")
        # the rule's own number is written for the rules that have one (typicality, coverage, distance)
        scored = [r["score"] != "" for r in rows]
        if selector == "typiclust":
            assert all(scored)
        elif selector in ("ae", "ae_centroid", "random"):
            assert not any(scored)
        chosen[selector] = idx
    # the round-aware selectors have no classifier in a job's first round: they pick as TypiClust does
    for selector in ROUND_AWARE:
        assert chosen.pop(selector) == chosen["typiclust"], selector
    # the other rules differ: not every selector picks the same images
    assert len({tuple(sorted(v)) for v in chosen.values()}) >= len(chosen) - 1

    # the run's embeddings.npy is a valid embedding=file input, and gives the same selection
    out = Path(cfg.paths.output_dir)
    np.save(tmp_path / "copy.npy", np.load(out / "embeddings.npy"))
    (tmp_path / "copy.ids.txt").write_text((out / "embeddings.ids.txt").read_text())
    cfg = compose_cfg(
        *SELECT_ONLY, "selector=typiclust", "embedding=file", f"embedding.path={tmp_path / 'copy.npy'}"
    )
    run(cfg)
    result, idx = _selection(cfg)
    assert result["embedding"] == "file" and idx == chosen["typiclust"]


def test_file_embedding_for_every_selector(compose_cfg: Callable[..., DictConfig], tmp_path: Path) -> None:
    """A user's precomputed vectors (here: two well-separated groups keyed by the pool's ids)."""
    ids = [f"train:{i}" for i in range(0, 20000)]
    rng = np.random.default_rng(0)
    x = rng.normal(size=(len(ids), 8)).astype(np.float32)
    np.save(tmp_path / "feats.npy", x)
    (tmp_path / "feats.ids.txt").write_text("\n".join(ids) + "\n")
    for selector in SELECTORS:
        cfg = compose_cfg(
            *SELECT_ONLY, f"selector={selector}", "embedding=file", f"embedding.path={tmp_path / 'feats.npy'}"
        )
        run(cfg)
        _, idx = _selection(cfg)
        assert len(set(idx)) == 12, selector
