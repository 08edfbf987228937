"""Near-duplicate removal before selection: groups of near-identical images keep one representative.

Consecutive video frames give near-identical person crops; left in the pool, a selector spends several
labels on one person. :func:`near_duplicates` groups images that are closer than a threshold, by a
perceptual hash of the pixels (:func:`dhash`, no model needed) or by the cosine similarity of embeddings,
and returns a :class:`Dedup`: which images to keep, and which representative each removed image stood
for (for ``duplicates.csv``).

Grouping is a greedy leader rule in pool order: an image joins the *earliest* representative before it
that is within the threshold, or else becomes a representative itself. Unlike connected components this
never chains (when A~B and B~C, C joins A only if C is itself within the threshold of A), and it is
deterministic: the same pool in the same order gives the same groups, and the representative of a group
is always its earliest image. Representatives are pairwise farther apart than the threshold.

It scales by range-searching each block of images against the representatives found so far (FAISS
``IndexBinaryFlat`` for hashes, ``IndexFlatIP`` for embeddings) and resolving the block's remaining
images among themselves: exact, with memory bounded by the block size, never an ``n x n`` matrix.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from imgselect.pool import scan
from imgselect.selection.kmeans import count_nonfinite_rows, require_faiss

DedupMethod = Literal["dhash", "embedding"]
METHODS: tuple[str, ...] = ("dhash", "embedding")

# A 64-bit dHash keeps most bits under the changes between consecutive frames of one person: on
# 112 x 112 images, a 2-pixel shift or a 5 % rescale moves the median image 3 bits (90th percentile 6),
# +20 brightness 0 (99th percentile 3), mild noise 1. Unrelated textured images differ in ~32 bits (each
# bit a coin toss): two random hashes fall within 5 bits with probability 4.5e-13, so a 100k pool of them
# loses no image by accident. 5 collapses most frame-to-frame changes while staying far below 32.
# Caveat: silhouettes on a plain background (Fashion-MNIST, tight crops on a flat wall) give low-entropy
# hashes: there 5 bits merges about half of 3000 distinct test images. Use it on textured crops (video
# of people in scenes), lower max_bits, or use method="embedding" for such pools.
DEFAULT_MAX_BITS = 5
# Cosine similarity of L2-normalised embeddings. 0.98 is an angle of 11 degrees: exact copies sit at 1
# (within float32 rounding) and near-identical frames just below, while distinct images of one class are
# usually much further apart. Lower it (0.95) to collapse more of a video track, at the risk of merging
# look-alikes; on Fashion-MNIST *pixel* embeddings 0.98 already removes 13 % of distinct images, 0.95 half.
DEFAULT_MIN_SIMILARITY = 0.98

# Images per block: bounds the memory of one block's range searches (its within-block pairs are at most
# BLOCK**2, 12 bytes each, 50 MB when every image of a block is a duplicate of every other).
BLOCK = 2048
# Images per batch when hashing: bounds the resize's intermediate buffers.
HASH_BATCH = 4096
# Cosine similarities within this of the threshold count as within it: float32 rounding puts an exact
# duplicate's similarity at 1 +- 1e-7, which must still meet min_similarity=1.
SIMILARITY_TOLERANCE = 1e-6

# ITU-R 601-2 luma, as PIL's convert("L") (and so the reference dHash) uses.
_LUMA = (0.299, 0.587, 0.114)
_POPCOUNT8 = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def dhash(images: torch.Tensor, hash_size: int = 8, *, batch_size: int = HASH_BATCH) -> np.ndarray:
    """Perceptual difference hash (dHash) of each image: similar pictures get hashes a few bits apart.

    Each image is resized with antialiasing to ``hash_size`` rows of ``hash_size + 1`` columns, turned grey
    and rounded to integer grey levels (as the reference implementation's 8-bit image does: it keeps flat
    regions exactly flat, so float rounding cannot set their bits at random); bit ``(r, c)`` is
    set when pixel ``(r, c + 1)`` is brighter than pixel ``(r, c)``. Gradients survive small shifts,
    rescaling, brightness and contrast changes and re-encoding, so such copies keep nearly all bits.

    Args:
        images: ``(n, 3, h, w)`` uint8 tensor, as :class:`~imgselect.pool.ImageSet` holds.
        hash_size: rows (and bits per row) of the hash, 2 to 8; ``hash_size**2`` bits in all (64 for 8).
        batch_size: images resized at a time (bounds the memory of intermediate buffers on large pools).

    Returns:
        ``(n,)`` uint64 hashes, first row in the most significant bits; compare them with
        :func:`hamming_distance`.
    """
    if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.ndim != 4:
        got = f"{images.dtype} {tuple(images.shape)}" if isinstance(images, torch.Tensor) else type(images)
        raise ValueError(f"dhash needs a (n, 3, h, w) uint8 tensor of images, got {got}")
    if images.shape[1] != 3 or images.shape[2] == 0 or images.shape[3] == 0:
        raise ValueError(
            f"dhash needs (n, 3, h, w) RGB images with h, w >= 1, got shape {tuple(images.shape)}"
        )
    if isinstance(hash_size, bool) or not isinstance(hash_size, int) or not 2 <= hash_size <= 8:
        raise ValueError(
            f"hash_size={hash_size!r} must be an integer from 2 to 8 (hash_size**2 bits fit a uint64)"
        )
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be at least 1")
    n = len(images)
    out = np.empty(n, dtype=np.uint64)
    luma = torch.tensor(_LUMA, dtype=torch.float32).view(1, 3, 1, 1)
    n_bits = hash_size * hash_size
    start = 0
    for batch in scan(images, batch_size):  # a mapped pool: one batch resident at a time
        # Resize first, on uint8 (torch's fast path, ~6x faster than on float), then grey: both are linear,
        # so the order changes only rounding, and the grey step runs on 8 x 9 pixels instead of h x w.
        small_rgb = F.interpolate(
            batch, size=(hash_size, hash_size + 1), mode="bilinear", antialias=True, align_corners=False
        )
        small = (small_rgb.to(torch.float32) * luma).sum(dim=1).round()
        bits = (small[..., 1:] > small[..., :-1]).reshape(len(batch), n_bits).numpy()
        padded = np.zeros((len(batch), 64), dtype=bool)
        padded[:, 64 - n_bits :] = bits
        out[start : start + len(batch)] = np.packbits(padded, axis=1).view(">u8").ravel()
        start += len(batch)
    return out


def hamming_distance(a: np.ndarray | int, b: np.ndarray | int) -> np.ndarray:
    """Number of differing bits between uint64 hashes ``a`` and ``b`` (broadcast), as int64."""
    x = np.bitwise_xor(np.asarray(a, dtype=np.uint64), np.asarray(b, dtype=np.uint64))
    x = np.ascontiguousarray(x)
    counts = _POPCOUNT8[x.view(np.uint8)].reshape(*x.shape, 8).sum(axis=-1, dtype=np.int64)
    return np.asarray(counts, dtype=np.int64)


@dataclass(frozen=True)
class Dedup:
    """Near-duplicate groups of a pool: one representative kept per group.

    Attributes:
        keep: sorted int64 pool indices of the representatives (the images selection should see).
        representative: ``(n,)`` int64 pool index of each image's representative (itself for a
            representative; always the earliest image of its group).
        distance: ``(n,)`` float64 distance of each image to its representative (0 for representatives):
            differing hash bits for ``dhash``, ``1 - cosine similarity`` for ``embedding``.
        method: ``dhash`` or ``embedding``.
        threshold: the threshold used: ``max_bits`` for ``dhash``, ``min_similarity`` for ``embedding``.
    """

    keep: np.ndarray
    representative: np.ndarray
    distance: np.ndarray
    method: str
    threshold: float

    def __len__(self) -> int:
        return len(self.representative)

    @property
    def removed(self) -> int:
        """Number of images removed as near-duplicates of an earlier image."""
        return len(self.representative) - len(self.keep)

    @property
    def group_size(self) -> np.ndarray:
        """``(len(keep),)`` int64: how many pool images each kept image stands for (itself included)."""
        return np.bincount(self.representative, minlength=len(self.representative))[self.keep]

    def removed_indices(self) -> np.ndarray:
        """Sorted int64 pool indices of the removed images."""
        return np.flatnonzero(self.representative != np.arange(len(self.representative)))

    def rows(self, ids: Sequence[str]) -> list[tuple[str, str, float]]:
        """``(image_id, representative_id, distance)`` for each removed image, in pool order.

        Args:
            ids: one id per pool image (``ImageSet.ids``), for ``duplicates.csv``.
        """
        if len(ids) != len(self.representative):
            raise ValueError(f"{len(ids)} ids for a deduplicated pool of {len(self.representative)} images")
        return [
            (ids[i], ids[int(self.representative[i])], float(self.distance[i]))
            for i in self.removed_indices()
        ]

    def stats(self) -> dict[str, float | int | str]:
        """Numbers for ``result.json``: method, threshold, images kept and removed."""
        return {
            "dedup_method": self.method,
            "dedup_threshold": self.threshold,
            "dedup_kept": len(self.keep),
            "dedup_removed": self.removed,
        }


def near_duplicates(
    x: np.ndarray,
    method: DedupMethod = "dhash",
    *,
    max_bits: int = DEFAULT_MAX_BITS,
    min_similarity: float = DEFAULT_MIN_SIMILARITY,
    block_size: int = BLOCK,
) -> Dedup:
    """Group near-duplicate images (greedy leader rule in pool order) and keep one per group.

    Args:
        x: for ``dhash``, the ``(n,)`` uint64 hashes from :func:`dhash`; for ``embedding``, ``(n, d)``
            embeddings (any scale: they are L2-normalised here).
        method: ``dhash`` (pixels, no model) or ``embedding`` (cosine similarity of embeddings).
        max_bits: ``dhash`` only: images whose hashes differ in at most this many bits are duplicates,
            0 (identical hashes) to 31 (random hashes differ in ~32).
        min_similarity: ``embedding`` only: images with cosine similarity at least this are duplicates,
            in ``(0, 1]``.
        block_size: images range-searched at a time (bounds memory; results do not depend on it).

    Returns:
        The groups as a :class:`Dedup`; the threshold of the other method is ignored.
    """
    if method not in METHODS:
        raise ValueError(f"dedup method={method!r} is not known; use one of {', '.join(METHODS)}")
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
        raise ValueError(f"block_size={block_size!r} must be a positive integer")
    search: _Search
    threshold: float
    if method == "dhash":
        if (
            isinstance(max_bits, bool)
            or not isinstance(max_bits, (int, np.integer))
            or not 0 <= max_bits <= 31
        ):
            raise ValueError(
                f"max_bits={max_bits!r} must be an integer from 0 to 31 (unrelated 64-bit hashes differ in "
                f"about 32 bits); the default {DEFAULT_MAX_BITS} collapses consecutive video frames"
            )
        search = _HashSearch(x, int(max_bits))
        threshold = int(max_bits)
    else:
        if not isinstance(min_similarity, (int, float, np.floating)) or not 0 < min_similarity <= 1:
            raise ValueError(
                f"min_similarity={min_similarity!r} must be a cosine similarity in (0, 1]; "
                f"the default {DEFAULT_MIN_SIMILARITY} removes only near-identical images"
            )
        search = _EmbeddingSearch(x, float(min_similarity))
        threshold = float(min_similarity)
    representative, distance = _leader_groups(search, block_size)
    keep = np.flatnonzero(representative == np.arange(len(representative)))
    return Dedup(keep, representative, distance, method, threshold)


class _Search:
    """Exact range search under one method's distance; pairs are those with distance <= threshold."""

    n: int

    def new_index(self) -> Any:
        """An empty FAISS index for this method."""
        raise NotImplementedError

    def add(self, index: Any, rows: np.ndarray) -> None:
        """Add pool images ``rows`` to ``index`` (its ids are then 0, 1, ... in the order added)."""
        raise NotImplementedError

    def range(self, index: Any, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(lims, ids, distances)``: the entries of ``index`` within the threshold of each of ``rows``."""
        raise NotImplementedError


class _HashSearch(_Search):
    def __init__(self, hashes: np.ndarray, max_bits: int) -> None:
        h = np.asarray(hashes)
        if h.ndim != 1 or h.dtype != np.uint64:
            raise ValueError(
                f"method='dhash' needs (n,) uint64 hashes from dhash(images), got {h.dtype} {h.shape}"
            )
        self.n = len(h)
        # 8 bytes per hash for FAISS's binary indexes; any fixed byte order gives the same Hamming distance.
        self.codes = np.ascontiguousarray(h.astype(">u8")).view(np.uint8).reshape(self.n, 8)
        self.max_bits = max_bits

    def new_index(self) -> Any:
        require_faiss()
        import faiss

        return faiss.IndexBinaryFlat(64)

    def add(self, index: Any, rows: np.ndarray) -> None:
        index.add(np.ascontiguousarray(self.codes[rows]))

    def range(self, index: Any, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        # FAISS returns Hamming distances strictly below the radius.
        lims, dist, ids = index.range_search(np.ascontiguousarray(self.codes[rows]), self.max_bits + 1)
        return lims.astype(np.int64), ids.astype(np.int64), dist.astype(np.float64)


class _EmbeddingSearch(_Search):
    def __init__(self, embeddings: np.ndarray, min_similarity: float) -> None:
        x = np.asarray(embeddings)
        if x.ndim != 2 or x.shape[1] == 0:
            raise ValueError(f"method='embedding' needs (n, d) embeddings, got shape {x.shape}")
        x = np.ascontiguousarray(x, dtype=np.float32)
        bad = count_nonfinite_rows(x)
        if bad:
            raise ValueError(f"{bad} of {len(x)} embeddings contain NaN or inf; check the embedding")
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        zero = np.flatnonzero(norms[:, 0] == 0)
        if len(zero):
            raise ValueError(
                f"{len(zero)} of {len(x)} embeddings are all zero (first: pool index {zero[0]}), so their "
                f"cosine similarity is undefined; use method='dhash' or an embedding without zero vectors"
            )
        self.n = len(x)
        self.x = np.ascontiguousarray(x / norms, dtype=np.float32)
        self.min_similarity = min_similarity

    def new_index(self) -> Any:
        require_faiss()
        import faiss

        return faiss.IndexFlatIP(self.x.shape[1])

    def add(self, index: Any, rows: np.ndarray) -> None:
        index.add(np.ascontiguousarray(self.x[rows]))

    def range(self, index: Any, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        # FAISS returns inner products strictly above the radius.
        radius = self.min_similarity - SIMILARITY_TOLERANCE
        lims, sim, ids = index.range_search(np.ascontiguousarray(self.x[rows]), radius)
        return lims.astype(np.int64), ids.astype(np.int64), np.clip(1.0 - sim.astype(np.float64), 0.0, 2.0)


def _leader_groups(search: _Search, block_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Representative and distance to it of each image, by the greedy leader rule in pool order.

    Each block is searched against the representatives of earlier blocks (all earlier than any image of
    the block, so the earliest hit is the earliest representative); the images of the block left without
    one are then resolved among themselves in order.
    """
    n = search.n
    representative = np.full(n, -1, dtype=np.int64)
    distance = np.zeros(n, dtype=np.float64)
    reps = search.new_index()
    rep_rows: list[np.ndarray] = []  # pool index of each entry of `reps`, ascending
    for start in range(0, n, block_size):
        rows = np.arange(start, min(n, start + block_size), dtype=np.int64)
        if reps.ntotal:
            lims, ids, dist = search.range(reps, rows)
            rep_pool = np.concatenate(rep_rows)
            counts = np.diff(lims)
            hit = np.flatnonzero(counts)
            if len(hit):
                # Sort each query's hits by entry id (= pool order): the first is the earliest representative.
                query = np.repeat(np.arange(len(rows)), counts)
                order = np.lexsort((ids, query))
                first = order[lims[hit]]
                representative[rows[hit]] = rep_pool[ids[first]]
                distance[rows[hit]] = dist[first]
        left = rows[representative[rows] < 0]
        if len(left):
            new_reps = _resolve_block(search, left, representative, distance)
            search.add(reps, new_reps)
            rep_rows.append(new_reps)
    return representative, distance


def _resolve_block(
    search: _Search, left: np.ndarray, representative: np.ndarray, distance: np.ndarray
) -> np.ndarray:
    """Group ``left`` (ascending pool indices, none near an earlier representative) among themselves.

    In order, each image not yet claimed becomes a representative and claims every later unclaimed image
    within the threshold of it: an image is thus claimed by the earliest representative near it. Only
    images with a neighbour besides themselves need a turn. Writes ``representative`` and ``distance``
    for ``left`` and returns the new representatives (ascending).
    """
    index = search.new_index()
    search.add(index, left)
    lims, ids, dist = search.range(index, left)
    local = np.full(len(left), -1, dtype=np.int64)
    local_dist = np.zeros(len(left), dtype=np.float64)
    for a in np.flatnonzero(np.diff(lims) > 1):
        if local[a] >= 0:
            continue
        local[a] = a
        nb = ids[lims[a] : lims[a + 1]]
        claim = (nb > a) & (local[nb] < 0)
        local[nb[claim]] = a
        local_dist[nb[claim]] = dist[lims[a] : lims[a + 1]][claim]
    alone = local < 0
    local[alone] = np.flatnonzero(alone)
    representative[left] = left[local]
    distance[left] = local_dist
    return left[local == np.arange(len(left))]
