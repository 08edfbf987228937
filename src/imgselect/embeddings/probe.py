"""How well an embedding keeps classes together, when the pool's labels are known (a benchmark, or a labeled
folder): a k-nearest-neighbour vote on a held-out part of the pool. Labels serve this diagnosis only."""

from __future__ import annotations

import logging

import numpy as np
import torch

log = logging.getLogger(__name__)

PROBE_MAX_IMAGES = 20_000  # a larger pool is probed on this many of its images, drawn by the seed


def knn_probe(
    features: np.ndarray,
    labels: np.ndarray,
    k: int = 10,
    holdout: float = 0.2,
    seed: int = 0,
    max_images: int | None = PROBE_MAX_IMAGES,
) -> dict[str, float | int]:
    """Accuracy of a ``k``-nearest-neighbour vote (cosine similarity) for a random ``holdout`` share of the
    images, neighbours drawn from the rest: how well the features keep classes together. Over ``max_images``
    images, that many are drawn first (the probe's cost grows with the square of the images)."""
    x = np.asarray(features, dtype=np.float32)
    y = np.asarray(labels)
    if max_images is not None and len(x) > max_images:
        keep = np.sort(np.random.default_rng([seed, len(x)]).choice(len(x), max_images, replace=False))
        x, y = x[keep], y[keep]
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    n = len(x)
    rng = np.random.default_rng(seed)
    test = rng.permutation(n)[: max(1, round(n * holdout))]
    train = np.setdiff1d(np.arange(n), test)
    k = min(k, len(train))
    n_classes = int(y.max()) + 1
    correct = 0
    neighbours = torch.from_numpy(x[train]).T  # gathered once, not per chunk of queries
    for i in range(0, len(test), 2048):
        q = test[i : i + 2048]
        sim = torch.from_numpy(x[q]) @ neighbours
        nn_idx = sim.topk(k, dim=1).indices.numpy()
        votes = np.zeros((len(q), n_classes))
        for j in range(k):
            np.add.at(votes, (np.arange(len(q)), y[train[nn_idx[:, j]]]), 1.0)
        correct += int((votes.argmax(1) == y[q]).sum())
    return {"knn_k": k, "knn_accuracy": correct / len(test), "knn_holdout": len(test)}


def probe_if_labeled(
    features: np.ndarray, labels: np.ndarray | None, k: int, seed: int, what: str
) -> dict[str, float | int]:
    """:func:`knn_probe` of ``features`` when the pool's ``labels`` are known (``{}`` otherwise), logged as
    ``what`` (e.g. ``"pretraining: its features"``)."""
    if labels is None:
        return {}
    probe = knn_probe(features, labels, k, seed=seed)
    log.info(
        "%s: %d-NN accuracy on a held-out fifth of the pool: %.3f",
        what,
        probe["knn_k"],
        probe["knn_accuracy"],
    )
    return probe
