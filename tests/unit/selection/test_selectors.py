"""Selection and the Selector protocol, which every selector satisfies."""

from __future__ import annotations

import inspect

import numpy as np
import pytest

from imgselect.selection import SELECTORS, Selection, Selector
from tests.unit.selection.helpers import blobs


class TestSelectionAndProtocol:
    def test_score_defaults_to_nan_and_is_checked(self) -> None:
        base = {
            "indices": np.arange(3),
            "cluster": np.full(3, -1),
            "distance": np.full(3, np.nan),
            "cluster_size": np.zeros(3, dtype=int),
            "rule": ["x"] * 3,
        }
        sel = Selection(**base)
        assert sel.score is not None and sel.score.shape == (3,) and np.isnan(sel.score).all()
        given = Selection(**base, score=[1, 2, 3])
        assert given.score is not None and given.score.dtype == np.float64
        np.testing.assert_array_equal(given.score, [1.0, 2.0, 3.0])
        with pytest.raises(ValueError, match=r"score has shape \(2,\)"):
            Selection(**base, score=np.zeros(2))
        with pytest.raises(ValueError, match="score has shape"):
            Selection(**base, score=np.zeros((3, 1)))

    @pytest.mark.parametrize("cls", SELECTORS, ids=lambda c: c.__name__)
    def test_every_selector_satisfies_the_protocol(self, cls: type[Selector]) -> None:
        kwargs: dict[str, object] = {"budget": 6}
        if "gpu" in inspect.signature(cls).parameters:
            kwargs["gpu"] = False
        selector = cls(**kwargs)
        assert isinstance(selector, Selector)
        assert selector.budget == 6 and isinstance(selector.name, str) and isinstance(selector.pick, str)
        x, _ = blobs([[10.0, 0.0], [0.0, 10.0], [-10.0, -10.0]], [20, 20, 20], std=1.0, seed=21)
        sel = selector.select(60, x if selector.requires_embeddings else None, n_classes=3)
        assert len(sel) == 6 and len(set(sel.indices.tolist())) == 6
        assert sel.indices.min() >= 0 and sel.indices.max() < 60
        assert len(sel.rule) == len(sel.cluster) == len(sel.distance) == len(sel.cluster_size) == 6
        assert sel.score is not None and sel.score.shape == (6,)
