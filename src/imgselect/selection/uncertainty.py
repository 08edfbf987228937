"""Later rounds: choose with the previous round's classifier, by how unsure it is of each pool image.

The first round has no classifier, so these selectors then pick as TypiClust does (typical images: what wins
at few labels). From the second round on they read the previous classifier's class probabilities of the pool:

* ``margin``: the images of lowest margin (top-1 minus top-2 probability): the model's least sure.
* ``cluster_margin`` (Citovsky et al., NeurIPS 2021, simplified): the ``candidates x budget`` images of lowest
  margin, clustered into ``budget`` K-means clusters on the embedding, and the least sure image of each:
  uncertain picks spread over the pool rather than ten of one confusion.
* ``mixed``: a ``typical_share`` of the budget by TypiClust, the rest by lowest margin (as LightlyOne weighs
  prediction scores against diversity).
* ``badge`` (Ash et al., ICLR 2020): K-means++ seeding on gradient embeddings, ``(p - onehot(argmax p)) x h``,
  the gradient of the loss of the predicted class with respect to a linear last layer on features ``h``. Here
  ``h`` is the selector's embedding reduced to its ``badge_dims`` principal components (the pipeline's
  classifier does not export its penultimate features), so the picks are both unsure and different from each
  other. The first pick is the largest gradient, as in the reference code.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Any, ClassVar, Literal

import numpy as np

from imgselect.selection.picks import cluster_members
from imgselect.selection.selectors import Selection, check_embeddings
from imgselect.selection.typiclust import TypiClustSelector

log = logging.getLogger(__name__)

UncertaintyRule = Literal["margin", "cluster_margin", "mixed", "badge"]
RULES: tuple[str, ...] = ("margin", "cluster_margin", "mixed", "badge")


def margins(probs: np.ndarray) -> np.ndarray:
    """Top-1 minus top-2 class probability of each row of ``probs`` ``(n, C)``, ``C >= 2``: 0 = a tie."""
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] < 2:
        raise ValueError(f"class probabilities must be (n, C) with C >= 2, got shape {p.shape}")
    top2 = np.sort(p, axis=1)[:, -2:]
    return top2[:, 1] - top2[:, 0]


def principal_components(x: np.ndarray, dims: int) -> np.ndarray:
    """``x`` centred and projected on its ``dims`` leading principal axes (all of ``x`` when it has fewer)."""
    x = np.asarray(x, dtype=np.float64)
    x = x - x.mean(axis=0)
    if x.shape[1] <= dims:
        return x
    _, vectors = np.linalg.eigh(x.T @ x)
    return x @ vectors[:, ::-1][:, :dims]


def gradient_embedding(probs: np.ndarray, h: np.ndarray) -> np.ndarray:
    """BADGE's ``(n, C * d)`` vectors: ``(p - onehot(argmax p))`` times each feature of ``h`` ``(n, d)``."""
    coef = np.asarray(probs, dtype=np.float64).copy()
    coef[np.arange(len(coef)), coef.argmax(axis=1)] -= 1.0
    return (coef[:, :, None] * h[:, None, :]).reshape(len(coef), -1).astype(np.float32)


def badge_seeding(g: np.ndarray, k: int, seed: int) -> np.ndarray:
    """K-means++ seeding as BADGE's reference code: the largest vector first, then each next with probability
    proportional to its squared distance to the nearest chosen one; ``k`` distinct indices."""
    rng = np.random.default_rng(seed)
    sq_norms = np.einsum("ij,ij->i", g, g)
    chosen = [int(np.argmax(sq_norms))]
    d2 = np.maximum(sq_norms + sq_norms[chosen[0]] - 2 * g @ g[chosen[0]], 0.0)
    for _ in range(1, k):
        d2[chosen] = 0.0
        total = d2.sum()
        if total <= 0:  # every vector left equals a chosen one: the next in pool order
            chosen += [int(i) for i in np.setdiff1d(np.arange(len(g)), chosen)[: k - len(chosen)]]
            break
        nxt = int(rng.choice(len(g), p=d2 / total))
        chosen.append(nxt)
        d2 = np.minimum(d2, np.maximum(sq_norms + sq_norms[nxt] - 2 * g @ g[nxt], 0.0))
    return np.asarray(chosen, dtype=np.int64)


def check_predictions(predictions: np.ndarray, n_pool: int) -> np.ndarray:
    """``predictions`` as finite ``(n_pool, C)`` float64 probabilities, or a clear error."""
    p = np.asarray(predictions, dtype=np.float64)
    if p.ndim != 2 or len(p) != n_pool:
        raise ValueError(f"got predictions of shape {p.shape} for a pool of {n_pool} images")
    if not np.isfinite(p).all():
        raise ValueError("the previous round's predictions hold NaN or inf for images left to choose from")
    return p


@dataclass(kw_only=True)
class UncertaintySelector(TypiClustSelector):
    """Round-aware selection: TypiClust in the first round, then by the previous classifier's uncertainty.

    Args:
        rule: ``margin``, ``cluster_margin`` or ``mixed`` (see the module's docstring).
        typical_share: ``mixed``: the share of the budget picked by TypiClust (rounded), the rest by margin.
        candidates: ``cluster_margin``: the ``candidates * budget`` least sure images are clustered.
        badge_dims: ``badge``: principal components of the embedding in the gradient vectors.
        name: what ``result.json`` and the tables call it (the rule by default).

    TypiClust's keys (``k_neighbors``, ``min_cluster_size``) and the K-means keys serve the first round, the
    typical share of ``mixed`` and the clusters of ``cluster_margin``.
    """

    rule: str = "margin"
    typical_share: float = 0.5
    candidates: int = 10
    badge_dims: int = 32
    name: str = ""

    pick = "uncertain"
    uses_predictions = True
    title: ClassVar[str] = "uncertainty"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.rule not in RULES:
            raise ValueError(f"selector.rule={self.rule!r}: use one of {', '.join(RULES)}")
        if not 0.0 <= self.typical_share <= 1.0:
            raise ValueError(f"selector.typical_share={self.typical_share} must lie in [0, 1]")
        if self.candidates < 1:
            raise ValueError(f"selector.candidates={self.candidates} must be at least 1")
        self.name = self.name or self.rule

    def select(
        self,
        n_pool: int,
        embeddings: np.ndarray | None = None,
        *,
        predictions: np.ndarray | None = None,
        **stage: Any,
    ) -> Selection:
        """Pick ``budget`` of ``range(n_pool)``: TypiClust's picks without ``predictions`` (no classifier yet),
        else by ``rule`` from ``predictions``, the previous classifier's ``(n_pool, C)`` class probabilities.
        ``stage``: the selection stage's ``source`` and ``n_classes``, as :class:`EmbeddingSelector` takes them."""
        source, n_classes = str(stage.get("source", "the pool")), stage.get("n_classes")
        if predictions is None:
            selection = super().select(n_pool, embeddings, source=source, n_classes=n_classes)
            selection.notes.append(
                f"{self.name}: no classifier yet (first round), so TypiClust's typical picks"
            )
            selection.stats["round_rule"] = "typical"
            return selection
        p = check_predictions(predictions, n_pool)
        m = margins(p)
        if self.rule == "margin":
            chosen = np.argsort(m, kind="stable")[: self.budget]
            selection = Selection.unclustered(chosen, ["margin"] * self.budget, score=m[chosen])
        elif self.rule == "badge":
            h = principal_components(check_embeddings(embeddings, n_pool, self.title), self.badge_dims)
            chosen = badge_seeding(gradient_embedding(p, h), self.budget, self.seed)
            selection = Selection.unclustered(chosen, ["badge"] * self.budget, score=m[chosen])
        elif self.rule == "cluster_margin":
            selection = self._cluster_margin(check_embeddings(embeddings, n_pool, self.title), m)
        else:
            selection = self._mixed(check_embeddings(embeddings, n_pool, self.title), m, source, n_classes)
        selection.stats["round_rule"] = self.rule
        selection.stats["mean_margin_chosen"] = round(float(m[selection.indices].mean()), 6)
        selection.stats["mean_margin_pool"] = round(float(m.mean()), 6)
        assert len(np.unique(selection.indices)) == len(selection) == self.budget
        return selection

    def _cluster_margin(self, x: np.ndarray, m: np.ndarray) -> Selection:
        """The least sure image of each of ``budget`` clusters of the least sure candidates."""
        order = np.argsort(m, kind="stable")
        cand = order[: min(len(m), self.budget * self.candidates)]
        res = self.kmeans.run(x[cand], self.budget)
        chosen: list[int] = []
        for members in cluster_members(res.assignments, self.budget):
            if len(members):
                chosen.append(int(cand[members[np.argmin(m[cand[members]])]]))
        taken = set(chosen)  # empty clusters: the next least sure candidates fill the budget
        chosen += [int(i) for i in order if int(i) not in taken][: self.budget - len(chosen)]
        idx = np.asarray(chosen, dtype=np.int64)
        return Selection.unclustered(idx, ["cluster_margin"] * self.budget, score=m[idx])

    def _mixed(self, x: np.ndarray, m: np.ndarray, source: str, n_classes: int | None) -> Selection:
        """``typical_share`` of the budget by TypiClust, the rest the least sure of the images left."""
        n_typical = round(self.typical_share * self.budget)
        typical = np.zeros(0, dtype=np.int64)
        notes: list[str] = []
        if n_typical:
            sel = TypiClustSelector.choose(
                replace(self, budget=n_typical), x, source=source, n_classes=n_classes
            )
            typical, notes = np.asarray(sel.indices, dtype=np.int64), sel.notes
        left = np.setdiff1d(np.arange(len(m)), typical)
        uncertain = left[np.argsort(m[left], kind="stable")][: self.budget - n_typical]
        idx = np.concatenate([typical, uncertain])
        rules = ["typical"] * len(typical) + ["margin"] * len(uncertain)
        return Selection.unclustered(idx, rules, notes=notes, score=m[idx])
