"""Round-aware selectors (imgselect.selection.uncertainty) against a classifier whose doubts are known."""

from __future__ import annotations

import numpy as np
import pytest

from imgselect.selection import TypiClustSelector, UncertaintySelector, margins


def _blobs(n_per: int = 60, seed: int = 0) -> np.ndarray:
    """Four well-separated 2-D blobs, ``n_per`` points each (pool index // n_per = blob)."""
    rng = np.random.default_rng(seed)
    centres = np.array([[0, 0], [20, 0], [0, 20], [20, 20]], dtype=np.float32)
    return np.concatenate([c + rng.normal(size=(n_per, 2)).astype(np.float32) for c in centres])


def _probs_with_margins(m: np.ndarray) -> np.ndarray:
    """Two-class probabilities whose top-1 minus top-2 is ``m``."""
    return np.stack([(1 + m) / 2, (1 - m) / 2], axis=1)


def test_margin_is_top1_minus_top2() -> None:
    p = np.array([[0.7, 0.2, 0.1], [0.34, 0.33, 0.33], [0.0, 0.0, 1.0]])
    assert np.allclose(margins(p), [0.5, 0.01, 1.0])
    with pytest.raises(ValueError, match="C >= 2"):
        margins(np.ones((3, 1)))


def test_margin_picks_the_images_a_known_classifier_is_least_sure_of() -> None:
    x = _blobs()
    rng = np.random.default_rng(1)
    m = rng.uniform(0.3, 1.0, len(x))
    unsure = np.array([5, 77, 140, 199, 230])
    m[unsure] = [0.01, 0.05, 0.0, 0.02, 0.04]
    sel = UncertaintySelector(budget=5, rule="margin").select(len(x), x, predictions=_probs_with_margins(m))
    assert sorted(sel.indices.tolist()) == sorted(unsure.tolist())
    assert set(sel.rule) == {"margin"} and np.allclose(np.sort(sel.score), np.sort(m[unsure]))
    assert sel.stats["round_rule"] == "margin" and sel.stats["mean_margin_chosen"] < 0.05


def test_cluster_margin_spreads_its_picks_where_margin_piles_them_into_one_confusion() -> None:
    x = _blobs()
    m = np.full(len(x), 0.9)
    m[:60] = np.linspace(0.0, 0.2, 60)  # blob 0: the model's one confusion, everything least sure is there
    m[[70, 130, 190]] = [0.25, 0.26, 0.27]  # one less sure image in each other blob
    probs = _probs_with_margins(m)
    plain = UncertaintySelector(budget=4, rule="margin").select(len(x), x, predictions=probs)
    spread = UncertaintySelector(budget=4, rule="cluster_margin", candidates=16, seed=0).select(
        len(x), x, predictions=probs
    )
    assert {int(i) // 60 for i in plain.indices} == {0}
    assert {int(i) // 60 for i in spread.indices} == {0, 1, 2, 3}
    assert 0 in spread.indices.tolist()  # blob 0's least sure image


def test_mixed_takes_its_typical_share_and_the_least_sure_of_the_rest() -> None:
    x = _blobs()
    m = np.random.default_rng(2).uniform(0.2, 1.0, len(x))
    m[[3, 4, 5]] = 0.0
    sel = UncertaintySelector(budget=6, rule="mixed", typical_share=0.5, seed=0).select(
        len(x), x, predictions=_probs_with_margins(m)
    )
    assert sel.rule == ["typical"] * 3 + ["margin"] * 3
    assert set(sel.indices[3:].tolist()) == {3, 4, 5}
    typical = TypiClustSelector(budget=3, seed=0).select(len(x), x)
    assert sel.indices[:3].tolist() == typical.indices.tolist()


def test_the_first_round_has_no_classifier_and_picks_as_typiclust() -> None:
    x = _blobs()
    sel = UncertaintySelector(budget=4, rule="margin", seed=0).select(len(x), x)
    assert sel.indices.tolist() == TypiClustSelector(budget=4, seed=0).select(len(x), x).indices.tolist()
    assert sel.stats["round_rule"] == "typical" and any("first round" in n for n in sel.notes)


def test_bad_settings_and_predictions_are_named() -> None:
    with pytest.raises(ValueError, match="selector.rule='entropy'"):
        UncertaintySelector(budget=2, rule="entropy")
    with pytest.raises(ValueError, match="typical_share=1.5"):
        UncertaintySelector(budget=2, rule="mixed", typical_share=1.5)
    x = _blobs()
    with pytest.raises(ValueError, match="predictions of shape"):
        UncertaintySelector(budget=2).select(len(x), x, predictions=np.full((3, 2), 0.5))
    bad = np.full((len(x), 2), 0.5)
    bad[0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        UncertaintySelector(budget=2).select(len(x), x, predictions=bad)


def test_gradient_embedding_is_zero_for_a_sure_prediction_and_grows_with_doubt() -> None:
    from imgselect.selection.uncertainty import gradient_embedding

    h = np.array([[1.0, 2.0], [1.0, 2.0], [1.0, 2.0]])
    g = gradient_embedding(np.array([[1.0, 0.0], [0.9, 0.1], [0.5, 0.5]]), h)
    assert g.shape == (3, 4)
    assert np.allclose(g[0], 0) and np.allclose(g[1], [-0.1, -0.2, 0.1, 0.2])
    assert np.linalg.norm(g[2]) > np.linalg.norm(g[1]) > 0


def test_badge_picks_unsure_images_of_different_blobs_where_margin_piles_into_one() -> None:
    """Sure images have near-zero gradients, one cluster at the origin: K-means++ takes at most one of them
    (its D² mass) and spends the rest on unsure images, each unlike the ones before."""
    x = _blobs()
    m = np.full(len(x), 0.98)
    unsure = np.concatenate([np.arange(0, 6), np.arange(60, 66), np.arange(120, 126), np.arange(180, 186)])
    m[unsure] = 0.05
    probs = _probs_with_margins(m)
    plain = UncertaintySelector(budget=4, rule="margin").select(len(x), x, predictions=probs)
    assert {int(i) // 60 for i in plain.indices} == {0}
    for seed in range(5):
        sel = UncertaintySelector(budget=4, rule="badge", seed=seed).select(len(x), x, predictions=probs)
        picked_unsure = [int(i) for i in sel.indices if i in set(unsure.tolist())]
        assert len(picked_unsure) >= 3 and len({i // 60 for i in picked_unsure}) == len(picked_unsure)
        assert set(sel.rule) == {"badge"} and len(set(sel.indices.tolist())) == 4
