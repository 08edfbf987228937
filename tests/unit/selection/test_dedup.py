"""Near-duplicate removal: dHash on hand-made images, the greedy leader rule against a brute-force one."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from imgselect.selection.dedup import DEFAULT_MAX_BITS, Dedup, dhash, hamming_distance, near_duplicates

ALL_BITS = np.uint64(2**64 - 1)


def textured(seed: int, h: int = 64, w: int = 72) -> torch.Tensor:
    """A ``(1, 3, h, w)`` uint8 image of 8 x 9 tinted grey cells, each row a random walk with steps of 25-50
    grey levels: clear left/right differences at dHash's resolution, as textured photographs have."""
    rng = np.random.default_rng(seed)
    steps = rng.choice([-1, 1], (8, 9)) * rng.uniform(25, 50, (8, 9))
    walk = np.cumsum(steps, axis=1)
    grey = torch.tensor(walk - walk.mean(axis=1, keepdims=True) + 128, dtype=torch.float32)
    cells = grey.view(1, 1, 8, 9) + torch.tensor([-20.0, 0.0, 20.0]).view(1, 3, 1, 1)
    return F.interpolate(cells, size=(h, w), mode="bilinear").clamp(0, 255).to(torch.uint8)


def flip_bits(h: int, bits: list[int]) -> np.uint64:
    for b in bits:
        h ^= 1 << b
    return np.uint64(h)


def brute_force_leader(dist: np.ndarray, threshold: float) -> np.ndarray:
    """The rule spelled out: each image joins the earliest earlier representative within the threshold."""
    rep = np.arange(len(dist))
    for i in range(len(dist)):
        for j in range(i):
            if rep[j] == j and dist[i, j] <= threshold:
                rep[i] = j
                break
    return rep


def clustered_hashes(n: int, n_groups: int, max_flips: int, seed: int) -> np.ndarray:
    """Hashes near ``n_groups`` random centres, each with up to ``max_flips`` random bits flipped."""
    rng = np.random.default_rng(seed)
    centres = rng.integers(0, 2**63, n_groups, dtype=np.int64).astype(np.uint64)
    out = np.empty(n, dtype=np.uint64)
    for i in range(n):
        bits = rng.choice(64, rng.integers(0, max_flips + 1), replace=False).tolist()
        out[i] = flip_bits(int(centres[rng.integers(n_groups)]), bits)
    return out


class TestDhash:
    def test_gradients_give_all_or_no_bits(self) -> None:
        ramp = torch.arange(0, 250, 250 / 90).to(torch.uint8)[:90]  # brighter to the right
        right = ramp.view(1, 1, 1, -1).expand(1, 3, 40, -1).contiguous()
        left = right.flip(-1).contiguous()
        flat = torch.full((1, 3, 40, 90), 128, dtype=torch.uint8)
        h = dhash(torch.cat([right, left, flat]))
        assert h.dtype == np.uint64 and h.shape == (3,)
        assert h.tolist() == [2**64 - 1, 0, 0]

    def test_small_hash_uses_low_bits(self) -> None:
        right = torch.arange(90).to(torch.uint8).view(1, 1, 1, -1).expand(1, 3, 40, -1).contiguous()
        assert dhash(right, hash_size=4).tolist() == [2**16 - 1]

    def test_brightened_and_shifted_copies_stay_close_different_image_far(self) -> None:
        img = textured(0)
        brighter = (img.int() + 15).clamp(0, 255).to(torch.uint8)
        shifted = torch.cat([img[..., :1], img[..., :-1]], dim=3)  # one pixel to the right
        other = textured(1)
        h = dhash(torch.cat([img, brighter, shifted, other]))
        assert hamming_distance(h[0], h[1]) <= 1
        assert hamming_distance(h[0], h[2]) <= DEFAULT_MAX_BITS
        assert hamming_distance(h[0], h[3]) >= 16
        # so the default threshold collapses the copies and keeps the other image
        assert near_duplicates(h).representative.tolist() == [0, 0, 0, 3]

    def test_batches_do_not_change_hashes(self) -> None:
        images = torch.cat([textured(s) for s in range(7)])
        np.testing.assert_array_equal(dhash(images, batch_size=3), dhash(images))

    @pytest.mark.parametrize(
        "images",
        [
            torch.zeros(2, 3, 8, 8),  # float
            torch.zeros(2, 1, 8, 8, dtype=torch.uint8),  # grey
            torch.zeros(3, 8, 8, dtype=torch.uint8),  # one image without the batch axis
        ],
    )
    def test_rejects_wrong_images(self, images: torch.Tensor) -> None:
        with pytest.raises(ValueError, match="uint8|RGB"):
            dhash(images)

    def test_rejects_hash_size_over_64_bits(self) -> None:
        with pytest.raises(ValueError, match="hash_size=9"):
            dhash(torch.zeros(1, 3, 8, 8, dtype=torch.uint8), hash_size=9)


def test_hamming_distance() -> None:
    assert hamming_distance(0b1011, 0).item() == 3
    assert hamming_distance(ALL_BITS, 0).item() == 64
    np.testing.assert_array_equal(hamming_distance(np.array([1, 3], dtype=np.uint64), 0), [1, 2])


class TestHashGroups:
    def test_exact_duplicates_collapse_onto_the_first(self) -> None:
        a, b = np.uint64(0x0123_4567_89AB_CDEF), np.uint64(0xFEDC_BA98_7654_3210)
        res = near_duplicates(np.array([a, b, a, a, b], dtype=np.uint64), max_bits=0)
        assert res.keep.tolist() == [0, 1]
        assert res.representative.tolist() == [0, 1, 0, 0, 1]
        assert res.distance.tolist() == [0, 0, 0, 0, 0]
        assert res.removed == 3
        assert res.group_size.tolist() == [3, 2]

    def test_no_chaining_along_a_line(self) -> None:
        a = 0
        b = int(flip_bits(a, [0, 1, 2, 3]))  # 4 bits from A
        c = int(flip_bits(b, [4, 5, 6, 7]))  # 4 bits from B, 8 from A
        res = near_duplicates(np.array([a, b, c], dtype=np.uint64), max_bits=5)
        # connected components would merge all three; C is too far from A, the only representative before it
        assert res.keep.tolist() == [0, 2]
        assert res.representative.tolist() == [0, 0, 2]
        assert res.distance.tolist() == [0, 4, 0]
        # with B first, both A and C are within reach of the one representative B
        res = near_duplicates(np.array([b, a, c], dtype=np.uint64), max_bits=5)
        assert res.representative.tolist() == [0, 0, 0]

    def test_joins_earliest_representative_not_nearest(self) -> None:
        r0, r1 = 0, int(flip_bits(0, list(range(6))))  # two representatives 6 bits apart
        x = int(flip_bits(r1, [0, 1]))  # 4 bits from r0, 2 from r1
        res = near_duplicates(np.array([r0, r1, x], dtype=np.uint64), max_bits=5)
        assert res.representative.tolist() == [0, 1, 0]
        assert res.distance.tolist() == [0, 0, 4]

    @pytest.mark.parametrize("block_size", [1, 5, 64, 2048])
    def test_matches_the_rule_spelled_out(self, block_size: int) -> None:
        h = clustered_hashes(300, n_groups=25, max_flips=8, seed=1)
        res = near_duplicates(h, max_bits=5, block_size=block_size)
        dist = hamming_distance(h[:, None], h[None, :])
        rep = brute_force_leader(dist, 5)
        np.testing.assert_array_equal(res.representative, rep)
        np.testing.assert_array_equal(res.distance, dist[np.arange(len(h)), rep])
        assert 0 < res.removed < len(h) - 25
        # representatives are the earliest of their groups and pairwise farther apart than the threshold
        for r in res.keep:
            assert np.flatnonzero(res.representative == r)[0] == r
        kept = dist[np.ix_(res.keep, res.keep)]
        assert (kept[~np.eye(len(res.keep), dtype=bool)] > 5).all()

    def test_deterministic(self) -> None:
        h = clustered_hashes(200, n_groups=10, max_flips=6, seed=2)
        first, second = near_duplicates(h), near_duplicates(h.copy())
        np.testing.assert_array_equal(first.representative, second.representative)
        np.testing.assert_array_equal(first.distance, second.distance)

    def test_twenty_thousand_hashes_with_planted_copies(self) -> None:
        rng = np.random.default_rng(3)
        unique = rng.integers(0, 2**64 - 1, 20_000, dtype=np.uint64, endpoint=True)
        copies = [flip_bits(int(unique[i]), [int(i % 64)]) for i in range(0, 20_000, 10)]
        h = np.concatenate([unique, np.array(copies, dtype=np.uint64)])
        res = near_duplicates(h)
        assert res.removed == len(copies)
        np.testing.assert_array_equal(res.keep, np.arange(20_000))
        np.testing.assert_array_equal(res.representative[20_000:], np.arange(0, 20_000, 10))
        assert (res.distance[20_000:] == 1).all()


class TestEmbeddingGroups:
    def test_cosine_threshold_and_scale(self) -> None:
        deg5 = np.deg2rad(5)
        x = np.array(
            [
                [1.0, 0.0],
                [np.cos(deg5), np.sin(deg5)],  # cosine 0.9962 to the first
                [0.0, 1.0],  # orthogonal
                [10.0, 0.0],  # the first, scaled
                [0.0, 3.0],  # the third, scaled
            ]
        )
        res = near_duplicates(x, "embedding", min_similarity=0.99)
        assert res.representative.tolist() == [0, 0, 2, 0, 2]
        np.testing.assert_allclose(res.distance, [0, 1 - np.cos(deg5), 0, 0, 0], atol=1e-6)
        assert res.method == "embedding" and res.threshold == 0.99
        # at 0.999 the 5-degree neighbour stands alone
        assert near_duplicates(x, "embedding", min_similarity=0.999).keep.tolist() == [0, 1, 2]

    def test_exact_copies_meet_similarity_one(self) -> None:
        x = np.random.default_rng(0).normal(size=(4, 33))
        res = near_duplicates(np.concatenate([x, x * 0.5]), "embedding", min_similarity=1.0)
        assert res.representative.tolist() == [0, 1, 2, 3, 0, 1, 2, 3]

    @pytest.mark.parametrize("block_size", [1, 7, 2048])
    def test_matches_the_rule_spelled_out(self, block_size: int) -> None:
        rng = np.random.default_rng(4)
        x = np.repeat(rng.normal(size=(30, 16)), 8, axis=0) + rng.normal(scale=0.08, size=(240, 16))
        x = x[rng.permutation(len(x))]
        res = near_duplicates(x, "embedding", min_similarity=0.99, block_size=block_size)
        xn = x / np.linalg.norm(x, axis=1, keepdims=True)
        rep = brute_force_leader(1 - xn @ xn.T, 1 - 0.99)
        np.testing.assert_array_equal(res.representative, rep)
        assert 0 < res.removed < len(x) - 30


class TestResult:
    def test_rows_name_removed_images_and_their_representatives(self) -> None:
        res = near_duplicates(np.array([5, 5, 9, 4], dtype=np.uint64), max_bits=1)
        # 5 = 0b101, 4 = 0b100 (1 bit), 9 = 0b1001 (2 bits from 5)
        assert res.rows(["a.jpg", "b.jpg", "c.jpg", "d.jpg"]) == [
            ("b.jpg", "a.jpg", 0.0),
            ("d.jpg", "a.jpg", 1.0),
        ]
        assert res.stats() == {
            "dedup_method": "dhash",
            "dedup_threshold": 1,
            "dedup_kept": 2,
            "dedup_removed": 2,
        }
        with pytest.raises(ValueError, match="3 ids for a deduplicated pool of 4"):
            res.rows(["a", "b", "c"])

    def test_is_a_dedup(self) -> None:
        assert isinstance(near_duplicates(np.zeros(2, dtype=np.uint64)), Dedup)


class TestValidation:
    def test_unknown_method(self) -> None:
        with pytest.raises(ValueError, match="method='phash'.*dhash, embedding"):
            near_duplicates(np.zeros(2, dtype=np.uint64), "phash")  # type: ignore[arg-type]

    @pytest.mark.parametrize("max_bits", [-1, 32, 2.5, True])
    def test_max_bits_out_of_range(self, max_bits: object) -> None:
        with pytest.raises(ValueError, match="max_bits="):
            near_duplicates(np.zeros(2, dtype=np.uint64), max_bits=max_bits)  # type: ignore[arg-type]

    @pytest.mark.parametrize("min_similarity", [0.0, -0.5, 1.5])
    def test_min_similarity_out_of_range(self, min_similarity: float) -> None:
        with pytest.raises(ValueError, match="min_similarity="):
            near_duplicates(np.ones((2, 3)), "embedding", min_similarity=min_similarity)

    def test_hashes_must_be_uint64(self) -> None:
        with pytest.raises(ValueError, match="uint64 hashes from dhash"):
            near_duplicates(np.zeros(3, dtype=np.int64))
        with pytest.raises(ValueError, match="uint64 hashes from dhash"):
            near_duplicates(np.zeros((3, 2), dtype=np.uint64))

    def test_embeddings_must_be_2d_finite_nonzero(self) -> None:
        with pytest.raises(ValueError, match=r"\(n, d\) embeddings"):
            near_duplicates(np.ones(3), "embedding")
        with pytest.raises(ValueError, match="1 of 2 embeddings contain NaN"):
            near_duplicates(np.array([[1.0, 0.0], [np.nan, 1.0]]), "embedding")
        with pytest.raises(ValueError, match="1 of 2 embeddings are all zero.*pool index 1"):
            near_duplicates(np.array([[1.0, 0.0], [0.0, 0.0]]), "embedding")
