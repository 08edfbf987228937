"""Downscaled raw pixels reduced by PCA: the embedding that needs no training and no weights."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from imgselect.embeddings.base import EmbedContext, EmbedOutput
from imgselect.pool import PoolShard, scan
from imgselect.selection.distributed import all_reduce_sum

log = logging.getLogger(__name__)


DOWNSCALE_BATCH = 4096


def downscale_batches(
    images: torch.Tensor, size: int, grayscale: bool = False, batch: int | None = None
) -> Iterator[np.ndarray]:
    """:func:`downscale` one batch (default :data:`DOWNSCALE_BATCH`) at a time: ``(m, c·size²)`` float32
    arrays, in pool order (the pool is read where it lies, a batch at a time: a memory-mapped pool is never
    held as floats at once)."""
    for chunk in scan(images, batch or DOWNSCALE_BATCH):
        x = chunk.float().div_(255.0)
        if grayscale:
            x = x.mean(dim=1, keepdim=True)
        if x.shape[-1] != size or x.shape[-2] != size:
            x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        yield x.flatten(1).numpy()


def downscale(
    images: torch.Tensor, size: int, grayscale: bool = False, batch: int | None = None
) -> np.ndarray:
    """``(n, 3, h, w)`` uint8 -> ``(n, c·size²)`` float32 in ``[0, 1]`` (bilinear, antialiased)."""
    out = list(downscale_batches(images, size, grayscale, batch))
    if not out:
        return np.zeros((0, (1 if grayscale else 3) * size * size), dtype=np.float32)
    return np.concatenate(out).astype(np.float32, copy=False)


class Moments:
    """Mean and covariance of rows given a batch at a time (float64, shifted by the first batch's mean so
    the sums do not cancel): the PCA of a pool that is never held as one matrix. ``shift``: the point the sums
    are taken around (default: the first batch's mean); ranks that sum shards of one pool share it, and
    :meth:`all_reduced` adds their sums up."""

    def __init__(self, shift: np.ndarray | None = None) -> None:
        self.n = 0
        self.shift: np.ndarray | None = None if shift is None else np.asarray(shift, dtype=np.float64)
        self.s1: np.ndarray | None = None
        self.s2: np.ndarray | None = None

    def add(self, x: np.ndarray) -> None:
        x64 = x.astype(np.float64)
        if self.shift is None:
            self.shift = x64.mean(axis=0)
        if self.s1 is None or self.s2 is None:
            self.s1 = np.zeros(x.shape[1])
            self.s2 = np.zeros((x.shape[1], x.shape[1]))
        d = x64 - self.shift
        self.s1 += d.sum(axis=0)
        self.s2 += d.T @ d
        self.n += len(x)

    def all_reduced(self, world: int) -> Moments:
        """These moments summed with those of every rank of the default process group (``world`` ranks; all
        built with the same ``shift``; a rank may have added no rows)."""
        assert self.shift is not None
        d = len(self.shift)
        s1 = self.s1 if self.s1 is not None else np.zeros(d)
        s2 = self.s2 if self.s2 is not None else np.zeros((d, d))
        flat = all_reduce_sum(np.concatenate([[float(self.n)], s1, s2.ravel()]), world)
        total = Moments(self.shift)
        total.n, total.s1, total.s2 = round(flat[0]), flat[1 : 1 + d], flat[1 + d :].reshape(d, d)
        return total

    def mean(self) -> np.ndarray:
        assert self.shift is not None and self.s1 is not None
        return self.shift + self.s1 / self.n

    def cov(self) -> np.ndarray:
        """The sample covariance (divisor ``n - 1``, as :func:`numpy.cov`; zeros for a single row)."""
        assert self.s1 is not None and self.s2 is not None
        if self.n < 2:
            return np.zeros_like(self.s2)
        return (self.s2 - np.outer(self.s1, self.s1) / self.n) / (self.n - 1)


@dataclass(frozen=True)
class PCA:
    """Leading principal components: ``mean``, ``(f, dim)`` ``components`` and their variances."""

    mean: np.ndarray
    components: np.ndarray
    variances: np.ndarray
    explained_ratio: np.ndarray

    @classmethod
    def fit(cls, moments: Moments, dim: int) -> PCA:
        """Exact and deterministic: each component's sign is fixed so that its largest loading is positive
        (the same data always gives the same vectors)."""
        cov = np.atleast_2d(moments.cov())
        vals, vecs = np.linalg.eigh(cov)
        order = np.argsort(vals)[::-1][:dim]
        vals, vecs = np.clip(vals[order], 0, None), vecs[:, order]
        signs = np.sign(vecs[np.abs(vecs).argmax(axis=0), np.arange(vecs.shape[1])])
        vecs = vecs * np.where(signs == 0, 1, signs)
        total = float(np.clip(np.linalg.eigvalsh(cov), 0, None).sum()) or 1.0
        return cls(moments.mean(), vecs, vals, (vals / total).astype(np.float32))

    def transform(self, x: np.ndarray, whiten: bool = False) -> np.ndarray:
        z = (x.astype(np.float64) - self.mean) @ self.components
        if whiten:
            z /= np.sqrt(self.variances + 1e-12)
        return z.astype(np.float32)


def pca(x: np.ndarray, dim: int, whiten: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Project ``x`` (``(n, f)``) on its ``dim`` leading principal components (exact, deterministic; see
    :meth:`PCA.fit`). Returns the ``(n, dim)`` float32 projection and each component's explained-variance
    ratio."""
    moments = Moments()
    moments.add(x)
    fitted = PCA.fit(moments, dim)
    return fitted.transform(x, whiten), fitted.explained_ratio


class PixelsEmbedding:
    """Raw pixels, downscaled to ``size``×``size`` and reduced to ``dim`` principal components.

    A strong baseline on small, centred images (on Fashion-MNIST its 10-NN accuracy matches the paper's
    autoencoder latent) and the cheapest embedding: seconds on 60,000 images, no training, no weights.

    Args:
        size: side the images are downscaled to before flattening.
        dim: principal components kept (capped at the number of pixel values).
        grayscale: average the colour channels first.
        whiten: scale each component to unit variance.
    """

    name = "pixels"
    seeded = False
    cacheable = True
    from_pretraining = False

    def __init__(self, size: int = 16, dim: int = 50, grayscale: bool = False, whiten: bool = False) -> None:
        if size < 1 or dim < 1:
            raise ValueError(f"embedding.size={size} and embedding.dim={dim} must be positive")
        self.size, self.dim, self.grayscale, self.whiten = size, dim, grayscale, whiten

    def settings(self) -> dict[str, Any]:
        return {"size": self.size, "dim": self.dim, "grayscale": self.grayscale, "whiten": self.whiten}

    def compute(self, ctx: EmbedContext) -> EmbedOutput:
        images = ctx.pool.images
        features = (1 if self.grayscale else 3) * self.size * self.size
        dim = min(self.dim, features, len(images))
        if dim < self.dim:
            log.warning("pixels: only %d components possible (asked %d)", dim, self.dim)
        z, explained = pixels_pca(images, self.size, dim, self.grayscale, self.whiten, shard=ctx.shard)
        log.info(
            "pixels: %d images -> %d-d PCA of %d pixel values (%.1f%% of variance)",
            len(images),
            dim,
            features,
            100 * explained,
        )
        metrics = {"pca_explained_variance": explained, "dim": dim}
        return EmbedOutput(embeddings=z, metrics=metrics, shard=ctx.shard)


def pixels_pca(
    images: torch.Tensor,
    size: int,
    dim: int,
    grayscale: bool = False,
    whiten: bool = False,
    shard: PoolShard | None = None,
) -> tuple[np.ndarray, float]:
    """``images`` downscaled to ``size``×``size`` and projected on their ``dim`` leading principal components:
    the ``(n, dim)`` float32 projection and the fraction of the variance it keeps.

    Two passes over the pool, a batch at a time: the pixels' moments, then their projection. No ``(n, pixel
    values)`` matrix is ever held (at a million images of 16x16x3 it would be 3 GB of floats).

    ``shard``: this DDP rank's block of the pool. Each rank sums the moments of its block around the same point
    (the mean of the pool's first batch), the sums are all-reduced, every rank fits the same PCA, and each
    projects its own block: the ``(len(shard), dim)`` rows of its block are returned.
    """
    rows, shift = images, None
    if shard is not None:  # every rank sums around the pool's first batch's mean, as one process does
        rows = images[shard.rows]
        first = next(downscale_batches(images[:DOWNSCALE_BATCH], size, grayscale), None)
        shift = None if first is None else first.astype(np.float64).mean(axis=0)
    moments = Moments(shift)
    for x in downscale_batches(rows, size, grayscale):
        moments.add(x)
    if shard is not None:
        moments = moments.all_reduced(shard.world)
    fitted = PCA.fit(moments, dim)
    z = np.empty((len(rows), dim), dtype=np.float32)
    i = 0
    for x in downscale_batches(rows, size, grayscale):
        z[i : i + len(x)] = fitted.transform(x, whiten)
        i += len(x)
    return z, float(fitted.explained_ratio.sum())
