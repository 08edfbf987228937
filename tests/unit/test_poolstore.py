"""The pool store (a decoded pool memory-mapped from the cache) and the stages that must not copy the pool."""

from __future__ import annotations

import gc
import hashlib
import multiprocessing
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import datamodules.images as images_module
from datamodules import FolderDataModule
from imgselect import pool as pool_module
from imgselect.embeddings import pixels as pixels_module
from imgselect.embeddings.pixels import pixels_pca
from imgselect.io.cache import list_entries
from imgselect.io.poolstore import ImageSink, map_images, stored_pool
from imgselect.pool import ImageSet, scan, stream_fingerprint
from imgselect.run.callbacks import embed_images
from imgselect.selection.kmeans import count_nonfinite_rows


def _folder(image_folder: dict[str, Path], cache: Path | None) -> FolderDataModule:
    dm = FolderDataModule(
        pool_dir=str(image_folder["pool"]),
        val=str(image_folder["val"]),
        image_size=24,
        cache_dir=str(cache) if cache else None,
    )
    dm.setup()
    return dm


class TestFolderPoolStore:
    def test_stored_pool_is_the_decoded_pool_mapped_from_one_file(
        self, tmp_path: Path, image_folder: dict[str, Path]
    ) -> None:
        memory = _folder(image_folder, None)
        stored = _folder(image_folder, tmp_path)
        assert torch.equal(stored.pool.images, memory.pool.images)
        assert stored.pool.ids == memory.pool.ids and stored.pool.hashes == memory.pool.hashes
        assert stored.pool.skipped == memory.pool.skipped  # the corrupt file, reported by later jobs too
        # the fingerprint came from the store, and it is the one the in-memory pool computes
        assert stored.pool.known_fingerprint is not None
        assert stored.pool.fingerprint() == memory.pool.fingerprint()
        (entry,) = list_entries(tmp_path, ["pools"])
        data = (entry.path / "images.u8").read_bytes()
        assert data == memory.pool.images.numpy().tobytes()
        # the tensor's memory is the file's mapping, not a copy
        start = stored.pool.images.data_ptr()
        assert any(base <= start < base + n for base, (_, n) in pool_module._MAPS.items())
        # a job that lets go of its pool unmaps it: nothing is kept alive for the next job of the sweep
        bases = {base for base in pool_module._MAPS if base <= start < base + pool_module._MAPS[base][1]}
        del stored
        gc.collect()
        assert not bases & set(pool_module._MAPS)

    def test_a_later_job_maps_the_store_without_decoding(
        self, tmp_path: Path, image_folder: dict[str, Path], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        first = _folder(image_folder, tmp_path)
        decoded: list[int] = []
        real = images_module.decode_image

        def counting(*args: object, **kwargs: object) -> np.ndarray:
            decoded.append(1)
            return real(*args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(images_module, "decode_image", counting)
        second = _folder(image_folder, tmp_path)
        assert len(decoded) == len(second.val) == 12  # the validation images only (kept in memory)
        assert torch.equal(second.pool.images, first.pool.images)
        assert len(list_entries(tmp_path, ["pools"])) == 1

    def test_a_changed_file_decodes_the_pool_again(
        self, tmp_path: Path, image_folder: dict[str, Path]
    ) -> None:
        pool_dir = tmp_path / "pool"
        shutil.copytree(image_folder["pool"], pool_dir)
        folder = {**image_folder, "pool": pool_dir}
        before = _folder(folder, tmp_path / "cache")
        victim = pool_dir / "gray.png"
        from PIL import Image

        Image.new("RGB", (30, 30), (200, 10, 10)).save(victim)
        os.utime(victim, ns=(time.time_ns(), time.time_ns() + 10**9))
        after = _folder(folder, tmp_path / "cache")
        i = after.pool.ids.index(str(victim))
        assert not torch.equal(after.pool.images[i], before.pool.images[i])
        assert after.pool.images[i, 0].float().mean() > 150  # the new red square
        assert len(list_entries(tmp_path / "cache", ["pools"])) == 2

    def test_decoding_in_small_chunks_keeps_the_pool_order(
        self, tmp_path: Path, image_folder: dict[str, Path], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        whole = _folder(image_folder, None)
        monkeypatch.setattr(images_module, "DECODE_CHUNK", 4)  # 11 chunks, the corrupt file inside one
        chunked = _folder(image_folder, tmp_path)
        assert chunked.pool.ids == whole.pool.ids and chunked.pool.skipped == whole.pool.skipped
        assert torch.equal(chunked.pool.images, whole.pool.images)

    def test_cache_false_decodes_into_memory(self, tmp_path: Path, image_folder: dict[str, Path]) -> None:
        dm = FolderDataModule(
            pool_dir=str(image_folder["pool"]),
            val=str(image_folder["val"]),
            image_size=24,
            cache_dir=str(tmp_path),
            cache=False,
        )
        dm.setup()
        assert len(dm.pool) == 41 and not (tmp_path / "pools").exists()


def _slow_decoder(counter: Path) -> None:
    """Build the store of key 'shared' in a child process, counting decodes in ``counter``."""

    def decode(sink: ImageSink) -> tuple[list[int], list[tuple[str, str]], list[str]]:
        with counter.open("a") as f:
            f.write("decode\n")
        time.sleep(0.5)
        for i in range(4):
            sink.write(np.full((3, 4, 4), i, dtype=np.uint8))
        return [0, 1, 2, 3], [], ["a", "b", "c", "d"]

    stored = stored_pool(counter.parent / "cache", "shared", 4, decode, lambda kept: [str(i) for i in kept])
    assert stored.images[:, 0, 0, 0].tolist() == [0, 1, 2, 3]


def test_concurrent_jobs_decode_the_pool_once(tmp_path: Path) -> None:
    counter = tmp_path / "decodes.txt"
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_slow_decoder, args=(counter,)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    assert counter.read_text().count("decode") == 1
    assert not [p for p in (tmp_path / "cache" / "pools").iterdir() if p.name.endswith(".tmp")]


def test_a_damaged_store_says_to_delete_it(tmp_path: Path) -> None:
    def decode(sink: ImageSink) -> tuple[list[int], list[tuple[str, str]], list[str]]:
        sink.write(np.zeros((3, 4, 4), dtype=np.uint8))
        return [0], [], ["h"]

    stored = stored_pool(tmp_path, "k", 4, decode, lambda kept: ["a"])
    with (stored.path / "images.u8").open("ab") as f:
        f.write(b"xx")
    with pytest.raises(RuntimeError, match=r"damaged; delete its folder"):
        stored_pool(tmp_path, "k", 4, decode, lambda kept: ["a"])


def test_fingerprint_streams_in_chunks_and_matches_the_whole_pools_hash(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    images = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (37, 3, 5, 5), dtype=np.uint8))
    ids = [f"i{k}" for k in range(37)]
    whole = hashlib.sha256()
    whole.update(str((37, 3, 5, 5)).encode())
    whole.update(images.numpy().tobytes())
    whole.update("\n".join(ids).encode())
    monkeypatch.setattr(pool_module, "FINGERPRINT_CHUNK", 3 * 75 + 10)  # 3 images a chunk, 13 chunks
    assert stream_fingerprint(images, ids) == whole.hexdigest()[:16]
    assert ImageSet(images, ids).fingerprint() == whole.hexdigest()[:16]


def _rss_file() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssFile:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no RssFile in /proc/self/status")


def test_a_scan_of_a_mapped_pool_lets_go_of_its_pages(tmp_path: Path) -> None:
    n, size = 1024, 64  # 12 MiB per pass
    path = tmp_path / "images.u8"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, n * 3 * size * size, dtype=np.uint8).tobytes())
    images = map_images(path, n, size)
    base = _rss_file()
    total = sum(int(images[i : i + 64].sum()) for i in range(0, n, 64))  # touches every page, keeps them
    touched = _rss_file()
    assert touched - base > 10 * 2**20
    again = sum(int(b.sum()) for b in scan(images, 64))  # the same pages, dropped batch by batch
    assert again == total  # and the data read back is the same
    assert _rss_file() - base < 2 * 2**20


def test_embed_images_of_an_index_gathers_a_batch_at_a_time() -> None:
    images = torch.from_numpy(np.random.default_rng(1).integers(0, 256, (50, 3, 4, 4), dtype=np.uint8))
    index = np.array([49, 3, 3, 17, 0, 25, 8])
    seen: list[int] = []

    def embed(batch: torch.Tensor) -> torch.Tensor:
        seen.append(len(batch))
        return batch.float().flatten(1)[:, :2]

    out = embed_images(embed, images, batch_size=3, progress=False, index=index)
    assert torch.equal(out, images[torch.as_tensor(index)].float().flatten(1)[:, :2])
    assert seen == [3, 3, 1]


def test_streamed_pixels_pca_matches_scikit_learn(monkeypatch: pytest.MonkeyPatch) -> None:
    from sklearn.decomposition import PCA

    rng = np.random.default_rng(2)
    images = torch.from_numpy(rng.integers(0, 256, (300, 3, 8, 8), dtype=np.uint8))
    monkeypatch.setattr(pixels_module, "DOWNSCALE_BATCH", 7)  # 43 batches, twice
    z, explained = pixels_pca(images, 4, 5)
    x = pixels_module.downscale(images, 4)
    ref = PCA(n_components=5, svd_solver="full").fit(x.astype(np.float64))
    expected = ref.transform(x.astype(np.float64))
    signs = np.sign((z * expected).sum(axis=0))  # components are defined up to sign
    np.testing.assert_allclose(z, expected * signs, atol=1e-4)
    assert explained == pytest.approx(ref.explained_variance_ratio_.sum(), rel=1e-6)


def test_nonfinite_rows_are_counted_across_chunks() -> None:
    x = np.zeros((10, 3), dtype=np.float32)
    x[[0, 4, 5, 9], [1, 0, 2, 2]] = [np.nan, np.inf, -np.inf, np.nan]
    x[5, 0] = np.nan  # a row with two bad values counts once
    assert count_nonfinite_rows(x, chunk=3) == 4
    assert count_nonfinite_rows(x[[1, 2, 3]], chunk=2) == 0


def test_select_stage_hands_unfiltered_embeddings_over_without_a_copy() -> None:
    from imgselect.selection.selectors import RandomSelector, Selection
    from imgselect.stages.select import select_stage

    emb = np.random.default_rng(3).standard_normal((40, 4)).astype(np.float32)
    pool = ImageSet(torch.zeros((40, 3, 2, 2), dtype=torch.uint8), [str(i) for i in range(40)])
    seen: list[np.ndarray] = []

    class Recording(RandomSelector):
        requires_embeddings = True

        def select(self, n_pool: int, embeddings: np.ndarray | None = None, **kw: object) -> Selection:
            assert embeddings is not None
            seen.append(embeddings)
            return super().select(n_pool, embeddings, **kw)  # type: ignore[arg-type]

    first = select_stage(Recording(5), pool, emb, 2, None)
    assert seen[0] is emb  # a 1M x 512 mapped cache would otherwise be gathered into 2 GB of memory
    labeled = np.array([0, 1, 2])
    second = select_stage(Recording(5), pool, emb, 2, None, exclude={"labeled": labeled})
    assert seen[1].shape == (37, 4) and np.array_equal(seen[1], emb[3:])
    assert len(first) == 5 and not set(second.indices) & set(labeled)
