"""Embeddings (pixels + PCA, a file, a timm backbone), the cache entry and the embedding stage, on tiny pools."""

from __future__ import annotations

import multiprocessing
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from imgselect.embeddings import BackboneEmbedding, EmbedContext, FileEmbedding, PixelsEmbedding
from imgselect.embeddings.pixels import downscale, pca
from imgselect.io.cache import CacheEntry, cache_key
from imgselect.pool import ImageSet
from imgselect.run.runtime import StageTimer, TrainerFactory
from imgselect.stages.embed import embed_stage


def tiny_pool(n: int = 24, side: int = 8, seed: int = 0) -> ImageSet:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, side, side), generator=g, dtype=torch.uint8)
    return ImageSet(images, [f"img{i}" for i in range(n)], source="tiny")


def ctx_for(pool: ImageSet, out: Path, seed: int = 0) -> EmbedContext:
    def no_trainer(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("this embedding must not train")

    return EmbedContext(pool, None, out, seed, TrainerFactory(no_trainer, None, out))  # type: ignore[arg-type]


class TestPixels:
    def test_downscale_keeps_a_constant_image_constant(self) -> None:
        x = torch.full((2, 3, 8, 8), 51, dtype=torch.uint8)
        out = downscale(x, 4)
        assert out.shape == (2, 48)
        np.testing.assert_allclose(out, 0.2, atol=1e-6)
        assert downscale(x, 4, grayscale=True).shape == (2, 16)

    def test_pca_of_points_on_a_line(self) -> None:
        t = np.linspace(-1, 1, 11)
        x = np.stack([t, 2 * t, np.zeros_like(t)], axis=1).astype(np.float32)
        z, ratio = pca(x, 2)
        assert ratio[0] == pytest.approx(1.0) and ratio[1] == pytest.approx(0.0, abs=1e-9)
        # the first component is the position along the line, scaled by its length sqrt(5), sign fixed
        np.testing.assert_allclose(z[:, 0], t * np.sqrt(5), atol=1e-5)

    def test_same_pool_same_vectors_and_dim_capped(self, tmp_path: Path) -> None:
        pool = tiny_pool()
        emb = PixelsEmbedding(size=4, dim=10)
        a = emb.compute(ctx_for(pool, tmp_path)).embeddings
        b = emb.compute(ctx_for(pool, tmp_path)).embeddings
        assert a is not None and a.shape == (24, 10)
        np.testing.assert_array_equal(a, b)
        wide = PixelsEmbedding(size=2, dim=500).compute(ctx_for(pool, tmp_path))
        assert wide.embeddings is not None and wide.embeddings.shape == (24, 12)  # 2*2*3 pixel values


class TestFile:
    def test_rows_matched_by_id_in_any_order(self, tmp_path: Path) -> None:
        pool = tiny_pool(5)
        x = np.arange(12, dtype=np.float32).reshape(6, 2)
        ids = ["img3", "other", "img0", "img4", "img1", "img2"]  # shuffled, one extra row
        np.save(tmp_path / "e.npy", x)
        (tmp_path / "e.ids.txt").write_text("\n".join(ids) + "\n")
        out = FileEmbedding(str(tmp_path / "e.npy")).compute(ctx_for(pool, tmp_path)).embeddings
        assert out is not None
        np.testing.assert_array_equal(out, x[[2, 4, 5, 0, 3]])

    def test_npz_and_relative_paths(self, tmp_path: Path) -> None:
        root = tmp_path / "pool"
        pool = ImageSet(torch.zeros(2, 3, 4, 4, dtype=torch.uint8), [str(root / "a.png"), str(root / "b/c.png")],
                        source=str(root))  # fmt: skip
        np.savez(tmp_path / "e.npz", embeddings=np.array([[1.0], [2.0]]), ids=np.array(["b/c.png", "a.png"]))
        out = FileEmbedding(str(tmp_path / "e.npz")).compute(ctx_for(pool, tmp_path)).embeddings
        assert out is not None and out[:, 0].tolist() == [2.0, 1.0]

    def test_missing_pool_image_is_named(self, tmp_path: Path) -> None:
        np.save(tmp_path / "e.npy", np.zeros((2, 3), np.float32))
        (tmp_path / "e.ids.txt").write_text("img0\nimg1\n")
        with pytest.raises(
            ValueError, match=r"no row for 3 of the 5 pool images \(e.g. \['img2', 'img3', 'img4'\]"
        ):
            FileEmbedding(str(tmp_path / "e.npy")).compute(ctx_for(tiny_pool(5), tmp_path))

    def test_bad_files_fail_before_anything_runs(self, tmp_path: Path) -> None:
        with pytest.raises(FileNotFoundError, match="embedding.path=.*nope.npy: no such file"):
            FileEmbedding(str(tmp_path / "nope.npy"))
        np.save(tmp_path / "e.npy", np.zeros((3, 2), np.float32))
        (tmp_path / "e.ids.txt").write_text("a\nb\n")
        with pytest.raises(ValueError, match="has 3 rows but its ids file lists 2 ids"):
            FileEmbedding(str(tmp_path / "e.npy")).load()
        with pytest.raises(FileNotFoundError, match="ids file .*other.txt does not exist"):
            FileEmbedding(str(tmp_path / "e.npy"), ids=str(tmp_path / "other.txt")).load()


class TestBackbone:
    def test_needs_weights_or_an_explicit_random_init(self) -> None:
        with pytest.raises(ValueError, match="needs local weights: embedding.weights=/path/to/resnet18"):
            BackboneEmbedding("resnet18")
        with pytest.raises(ValueError, match="not a timm architecture"):
            BackboneEmbedding("no_such_net", random_init=True)

    def test_local_weights_are_loaded_and_change_the_features(self, tmp_path: Path) -> None:
        import timm

        pool = tiny_pool(6, side=16)
        torch.manual_seed(1)
        net = timm.create_model("resnet18", num_classes=7)  # another head: dropped on load
        torch.save(net.state_dict(), tmp_path / "w.pth")
        loaded = BackboneEmbedding("resnet18", weights=str(tmp_path / "w.pth"), batch_size=4)
        a = loaded.compute(ctx_for(pool, tmp_path, seed=0)).embeddings
        b = loaded.compute(ctx_for(pool, tmp_path, seed=5)).embeddings
        assert a is not None and a.shape == (6, 512)
        np.testing.assert_allclose(a, b, rtol=1e-5)  # weights from the file: the seed does not matter
        rand = BackboneEmbedding("resnet18", random_init=True).compute(ctx_for(pool, tmp_path)).embeddings
        assert rand is not None and not np.allclose(rand, a)
        torch.save({"conv1.weight": torch.zeros(1)}, tmp_path / "bad.pth")
        with pytest.raises(ValueError, match="does not fit resnet18"):
            BackboneEmbedding("resnet18", weights=str(tmp_path / "bad.pth")).build()

    def test_stages_readout_adds_the_stages_before_the_last_strides(self, tmp_path: Path) -> None:
        """``features=stages``: every stage from stride 4 on, averaged, then the pooled head, each of unit
        length; the head's block is the pooled readout's direction, so the two readouts share their last part."""
        import timm

        torch.manual_seed(2)
        net = timm.create_model("resnet18", num_classes=0)
        torch.save(net.state_dict(), tmp_path / "w.pth")
        pool = tiny_pool(6, side=32)
        pooled = BackboneEmbedding("resnet18", weights=str(tmp_path / "w.pth")).compute(
            ctx_for(pool, tmp_path)
        )
        stages = BackboneEmbedding("resnet18", weights=str(tmp_path / "w.pth"), features="stages")
        out = stages.compute(ctx_for(pool, tmp_path))
        assert out.embeddings is not None and pooled.embeddings is not None
        widths = [64, 128, 256, 512, 512]  # resnet18's layer1..layer4 (strides 4..32), then the 512-d head
        assert out.embeddings.shape == (6, sum(widths)) and out.metrics["features"] == "stages"
        blocks = np.split(out.embeddings, np.cumsum(widths)[:-1], axis=1)
        for block in blocks:
            np.testing.assert_allclose(np.linalg.norm(block, axis=1), 1.0, rtol=1e-4)
        head = pooled.embeddings / np.linalg.norm(pooled.embeddings, axis=1, keepdims=True)
        np.testing.assert_allclose(blocks[-1], head, atol=1e-5)
        assert not np.allclose(blocks[0], blocks[1][:, :64])  # the stages are read, not the head repeated
        assert (
            stages.settings()["features"] == "stages"
            and "features" not in BackboneEmbedding("resnet18", weights=str(tmp_path / "w.pth")).settings()
        )  # pooled entries keep the keys they had
        with pytest.raises(ValueError, match="embedding.features='middle': use one of pooled, stages"):
            BackboneEmbedding("resnet18", random_init=True, features="middle")

    def test_probe_reports_how_well_labeled_features_keep_classes_apart(self, tmp_path: Path) -> None:
        pool = tiny_pool(40, side=16)
        labels = np.arange(40) % 2
        # class 1 bright, class 0 dark: even an untrained network's features keep them apart
        images = (pool.images // 8 + torch.from_numpy(labels * 200).view(-1, 1, 1, 1)).to(torch.uint8)
        labeled = ImageSet(images, pool.ids, source="tiny", labels=labels)
        out = BackboneEmbedding("resnet18", random_init=True, probe_k=3).compute(ctx_for(labeled, tmp_path))
        assert out.metrics["knn_k"] == 3 and out.metrics["knn_holdout"] == 8
        assert out.metrics["knn_accuracy"] == 1.0
        shuffled = ImageSet(
            images, pool.ids, source="tiny", labels=np.random.default_rng(0).permutation(labels)
        )
        chance = BackboneEmbedding("resnet18", random_init=True, probe_k=3).compute(
            ctx_for(shuffled, tmp_path)
        )
        assert chance.metrics["knn_accuracy"] < 1.0
        unlabeled = BackboneEmbedding("resnet18", random_init=True).compute(ctx_for(pool, tmp_path))
        assert "knn_accuracy" not in unlabeled.metrics


class TestCache:
    def test_key_ignores_keyword_order_and_sees_every_value(self) -> None:
        assert cache_key(a=1, b=[1, 2]) == cache_key(b=[1, 2], a=1)
        assert cache_key(a=1, b=[1, 2]) != cache_key(a=1, b=[2, 1])

    def test_entry_appears_whole_or_not_at_all(self, tmp_path: Path) -> None:
        entry = CacheEntry(tmp_path, "kind", "k1", ["x.npy"])
        with pytest.raises(RuntimeError, match="incomplete"), entry.writing():
            pass
        assert not entry.path.exists() and os.listdir(tmp_path / "kind") == []
        with pytest.raises(KeyError), entry.writing() as tmp:
            np.save(tmp / "x.npy", np.zeros(1))
            raise KeyError("job died half way")
        assert not entry.complete() and os.listdir(tmp_path / "kind") == []

    def test_second_writer_keeps_the_first_entry(self, tmp_path: Path) -> None:
        first, second = (CacheEntry(tmp_path, "kind", "k", ["x.npy"]) for _ in range(2))
        with second.writing() as tmp2:
            np.save(tmp2 / "x.npy", np.array([2]))
            with first.writing() as tmp1:  # finishes first, while the second is still writing
                np.save(tmp1 / "x.npy", np.array([1]))
        assert np.load(first.path / "x.npy").tolist() == [1]
        assert sorted(os.listdir(tmp_path / "kind")) == ["k"]  # no stray temporary folder


def test_embed_stage_caches_writes_beside_the_run_and_reads_back_as_a_file(tmp_path: Path) -> None:
    pool = tiny_pool()
    timer = StageTimer()
    run1, run2 = tmp_path / "run1", tmp_path / "run2"
    first = embed_stage(PixelsEmbedding(size=4, dim=6), ctx_for(pool, run1), tmp_path / "cache", timer)
    assert first.info["cache_hit"] is False and first.info["dim"] == 6
    again = embed_stage(PixelsEmbedding(size=4, dim=6), ctx_for(pool, run2), tmp_path / "cache", timer)
    assert again.info["cache_hit"] is True and again.info["cache_key"] == first.info["cache_key"]
    assert first.embeddings is not None and again.embeddings is not None
    np.testing.assert_array_equal(first.embeddings, again.embeddings)
    other = embed_stage(PixelsEmbedding(size=4, dim=5), ctx_for(pool, run2), tmp_path / "cache", timer)
    assert other.info["cache_hit"] is False  # another setting, another entry
    # the run's embeddings.npy + embeddings.ids.txt are a valid embedding=file input
    reread = FileEmbedding(str(run1 / "embeddings.npy")).compute(ctx_for(pool, tmp_path)).embeddings
    assert reread is not None
    np.testing.assert_array_equal(reread, first.embeddings)


class CountingEmbedding:
    """A seeded, cacheable embedding that records each computation in a file and takes a while."""

    name = "counting"
    seeded = True
    cacheable = True
    from_pretraining = False

    def __init__(self, counter: Path) -> None:
        self.counter = counter

    def settings(self) -> dict[str, Any]:
        return {"dim": 3}

    def compute(self, ctx: EmbedContext) -> Any:
        from imgselect.embeddings.base import EmbedOutput

        with self.counter.open("a") as f:
            f.write("computed\n")
        time.sleep(1.0)
        return EmbedOutput(embeddings=np.arange(len(ctx.pool) * 3, dtype=np.float32).reshape(-1, 3))


def _embed_in_a_job(tmp_path: Path, job: int) -> None:
    out = embed_stage(
        CountingEmbedding(tmp_path / "computed.txt"),
        ctx_for(tiny_pool(), tmp_path / f"job{job}"),
        tmp_path / "cache",
        StageTimer(),
    )
    assert out.embeddings is not None and out.embeddings.shape == (24, 3)
    (tmp_path / f"job{job}.hit").write_text(str(out.info["cache_hit"]))


def test_jobs_that_need_one_entry_compute_it_once(tmp_path: Path) -> None:
    """Jobs of a parallel sweep that share a seed: the first trains (here: computes), the others wait for it and
    read its entry instead of training the same model beside it."""
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_embed_in_a_job, args=(tmp_path, job)) for job in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    assert (tmp_path / "computed.txt").read_text().count("computed") == 1
    assert sorted((tmp_path / f"job{j}.hit").read_text() for j in range(3)) == ["False", "True", "True"]


def test_only_a_one_process_job_waits_at_a_cache_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from functools import partial

    def factory(**trainer_kw: Any) -> TrainerFactory:
        return TrainerFactory(
            partial(dict, **trainer_kw), None, tmp_path, strategy=trainer_kw.get("strategy")
        )

    assert factory(devices=1).one_process() and factory().one_process()
    assert factory(devices=[0]).one_process()
    assert not factory(devices=2).one_process()
    assert not factory(devices=1, strategy="ddp").one_process()  # its ranks compute together: no lock
    monkeypatch.setenv("WORLD_SIZE", "4")  # a rank that SLURM or torchrun started
    assert not factory(devices=1).one_process()
