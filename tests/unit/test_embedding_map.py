"""The embedding map: 2-D projections (PCA exact, t-SNE on a subsample) and the PNG drawn from them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imgselect import embedding_map
from imgselect.embedding_map import (
    CHOSEN_COLOR,
    DPI,
    FIGSIZE,
    PLACE_NEIGHBOURS,
    TSNE_MIN_POINTS,
    project_2d,
    save_embedding_map,
    write_embedding_map,
)


def blobs(n_per: int = 40, d: int = 20, gap: float = 10.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two unit Gaussian blobs ``gap`` apart along a random direction; labels 0 and 1."""
    rng = np.random.default_rng(seed)
    direction = rng.normal(size=d)
    direction /= np.linalg.norm(direction)
    x = rng.normal(size=(2 * n_per, d))
    x[n_per:] += gap * direction
    return x.astype(np.float32), np.repeat([0, 1], n_per)


def color_pixels(path: Path, hex_color: str, tol: int = 12) -> int:
    """How many pixels of the PNG at ``path`` are within ``tol`` of ``hex_color`` on every channel."""
    rgb = np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)
    target = np.array([int(hex_color[i : i + 2], 16) for i in (1, 3, 5)], dtype=np.int16)
    return int((np.abs(rgb - target).max(axis=2) <= tol).sum())


class TestPca:
    def test_two_blobs_are_split_along_x(self) -> None:
        x, y = blobs()
        xy, used = project_2d(x, "pca")
        assert used == "pca"
        assert xy.shape == (len(x), 2) and xy.dtype == np.float32
        # the gap is the top-variance direction: the first coordinate alone tells the blobs apart
        left, right = sorted([xy[y == 0, 0], xy[y == 1, 0]], key=np.mean)
        assert left.max() < right.min()
        assert xy[:, 0].std() > 3 * xy[:, 1].std()  # gap 10 against unit noise

    def test_matches_svd_and_fixes_signs(self) -> None:
        x, _ = blobs(n_per=10, d=6)
        xy, _ = project_2d(x, "pca")
        xc = x.astype(np.float64) - x.mean(axis=0)
        u, s, _ = np.linalg.svd(xc, full_matrices=False)
        np.testing.assert_allclose(np.abs(xy), np.abs(u[:, :2] * s[:2]), rtol=1e-3, atol=1e-3)
        # the sign convention: each column's largest absolute value is positive
        assert all(xy[np.abs(xy[:, j]).argmax(), j] > 0 for j in range(2))

    def test_fewer_points_than_dimensions_uses_the_gram_matrix(self) -> None:
        x, _ = blobs(n_per=3, d=50)
        xy, _ = project_2d(x, "pca")
        xc = x.astype(np.float64) - x.mean(axis=0)
        u, s, _ = np.linalg.svd(xc, full_matrices=False)
        np.testing.assert_allclose(np.abs(xy), np.abs(u[:, :2] * s[:2]), rtol=1e-3, atol=1e-3)

    def test_row_order_does_not_change_the_picture(self) -> None:
        x, _ = blobs()
        perm = np.random.default_rng(3).permutation(len(x))
        np.testing.assert_allclose(project_2d(x[perm], "pca")[0], project_2d(x, "pca")[0][perm], atol=1e-4)

    @pytest.mark.parametrize("shape", [(1, 5), (2, 5), (7, 1)])
    def test_tiny_inputs(self, shape: tuple[int, int]) -> None:
        x = np.random.default_rng(0).normal(size=shape)
        xy, used = project_2d(x)  # auto: PCA below TSNE_MIN_POINTS
        assert used == "pca" and xy.shape == (shape[0], 2) and np.isfinite(xy).all()
        if shape[1] == 1:
            assert (xy[:, 1] == 0).all()  # one dimension: the second coordinate is empty


class TestTsne:
    def test_same_seed_same_map_and_blobs_stay_apart(self) -> None:
        pytest.importorskip("sklearn")
        x, y = blobs(n_per=25)
        a, used = project_2d(x, "tsne", seed=1)
        b, _ = project_2d(x, "tsne", seed=1)
        assert used == "tsne" and a.shape == (50, 2)
        np.testing.assert_array_equal(a, b)
        # every point's nearest 2-D neighbour is in its own blob
        d = ((a[:, None] - a[None]) ** 2).sum(-1)
        np.fill_diagonal(d, np.inf)
        assert (y[d.argmin(axis=1)] == y).all()

    def test_subsample_keeps_chosen_and_places_the_rest(self, monkeypatch: pytest.MonkeyPatch) -> None:
        # a stand-in t-SNE (its first two input coordinates) shows which points were fitted and where
        fitted_sizes: list[int] = []

        def fake_tsne(feats: np.ndarray, seed: int) -> np.ndarray:
            fitted_sizes.append(len(feats))
            return feats[:, :2].astype(np.float32)

        monkeypatch.setattr(embedding_map, "_tsne", fake_tsne)
        monkeypatch.setattr(embedding_map, "tsne_available", lambda: True)
        x, _ = blobs(n_per=60, d=8)
        keep = np.array([5, 70, 119])
        xy, used = project_2d(x, "tsne", max_points=30, keep=keep)
        assert used == "tsne+knn" and fitted_sizes == [30] and xy.shape == (120, 2)
        np.testing.assert_array_equal(xy[keep], x[keep, :2])  # kept points are where "t-SNE" put them
        fitted = np.flatnonzero((xy == x[:, :2]).all(axis=1))
        assert len(fitted) == 30
        # a placed point sits at the mean of its nearest fitted points (in the input space)
        placed = np.setdiff1d(np.arange(120), fitted)[0]
        dist = ((x[fitted] - x[placed]) ** 2).sum(axis=1)
        nearest = fitted[np.argsort(dist)[:PLACE_NEIGHBOURS]]
        np.testing.assert_allclose(xy[placed], x[nearest, :2].mean(axis=0), atol=1e-5)
        # the same seed draws the same subsample
        np.testing.assert_array_equal(project_2d(x, "tsne", max_points=30, keep=keep)[0], xy)

    def test_keep_larger_than_max_points_is_refused(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(embedding_map, "tsne_available", lambda: True)
        x, _ = blobs()
        with pytest.raises(ValueError, match="exceed max_points=5"):
            project_2d(x, "tsne", max_points=5, keep=np.arange(6))

    def test_auto_without_sklearn_is_pca_and_tsne_names_the_package(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(embedding_map, "tsne_available", lambda: False)
        x, _ = blobs(n_per=TSNE_MIN_POINTS)
        assert project_2d(x)[1] == "pca"
        with pytest.raises(ImportError, match="scikit-learn"):
            project_2d(x, "tsne")

    def test_auto_is_tsne_with_sklearn_and_enough_points(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(embedding_map, "tsne_available", lambda: True)
        monkeypatch.setattr(embedding_map, "_tsne", lambda feats, seed: feats[:, :2].astype(np.float32))
        x, _ = blobs(n_per=TSNE_MIN_POINTS)
        assert project_2d(x)[1] == "tsne"
        assert project_2d(x[: TSNE_MIN_POINTS - 1])[1] == "pca"


class TestErrors:
    @pytest.mark.parametrize("shape", [(10,), (2, 3, 4), (0, 3), (3, 0)])
    def test_bad_embedding_shapes(self, shape: tuple[int, ...]) -> None:
        with pytest.raises(ValueError, match="embeddings has shape"):
            project_2d(np.zeros(shape))

    def test_nan_names_the_row(self) -> None:
        x = np.zeros((5, 3))
        x[2, 1] = np.nan
        with pytest.raises(ValueError, match="NaN or infinite values in 1 rows \\(first: row 2\\)"):
            project_2d(x)

    def test_unknown_method(self) -> None:
        with pytest.raises(ValueError, match="method='umap' is unknown"):
            project_2d(np.zeros((4, 2)), "umap")

    def test_bad_chosen_and_labels(self, tmp_path: Path) -> None:
        xy = np.zeros((4, 2))
        with pytest.raises(ValueError, match="chosen index 4 is out of range for a pool of 4"):
            save_embedding_map(tmp_path / "m.png", xy, [0, 4], None, None, "t")
        with pytest.raises(ValueError, match="chosen index -1 is out of range"):
            save_embedding_map(tmp_path / "m.png", xy, [-1], None, None, "t")
        with pytest.raises(ValueError, match="chosen has repeated indices"):
            save_embedding_map(tmp_path / "m.png", xy, [1, 1], None, None, "t")
        with pytest.raises(ValueError, match="labels has shape \\(3,\\); expected one per point \\(4,\\)"):
            save_embedding_map(tmp_path / "m.png", xy, [], [0, 1, 0], None, "t")
        with pytest.raises(ValueError, match="label 2 has no name"):
            save_embedding_map(tmp_path / "m.png", xy, [], [0, 1, 2, 0], ["a", "b"], "t")
        with pytest.raises(ValueError, match="xy has shape \\(4, 3\\)"):
            save_embedding_map(tmp_path / "m.png", np.zeros((4, 3)), [], None, None, "t")
        assert not list(tmp_path.iterdir())  # nothing written on error


class TestDrawing:
    def test_png_size_and_chosen_marker(self, tmp_path: Path) -> None:
        x, _ = blobs()
        xy, _ = project_2d(x, "pca")
        marked = save_embedding_map(tmp_path / "marked.png", xy, [3, 50, 7], None, None, "PCA")
        bare = save_embedding_map(tmp_path / "bare.png", xy, np.array([], dtype=int), None, None, "PCA")
        for path in (marked, bare):
            with Image.open(path) as im:
                assert im.format == "PNG"
                assert im.size == (round(FIGSIZE[0] * DPI), round(FIGSIZE[1] * DPI))
        # three chosen markers (and the legend's) are filled with CHOSEN_COLOR; without chosen there is none
        assert color_pixels(marked, CHOSEN_COLOR) > 50
        assert color_pixels(bare, CHOSEN_COLOR) == 0
        assert sorted(p.name for p in tmp_path.iterdir()) == ["bare.png", "marked.png"]  # no temporary left

    def test_labels_colour_the_pool(self, tmp_path: Path) -> None:
        x, y = blobs()
        xy, _ = project_2d(x, "pca")
        tab_blue = "#1f77b4"  # class 0 in tab10
        coloured = save_embedding_map(tmp_path / "c.png", xy, [0], y, ["left", "right"], "PCA")
        grey = save_embedding_map(tmp_path / "g.png", xy, [0], None, None, "PCA")
        assert color_pixels(coloured, tab_blue) > 20
        assert color_pixels(grey, tab_blue) == 0

    @pytest.mark.parametrize("n_chosen", [0, 1, 250, 2000])
    def test_any_number_chosen_with_unknown_labels(self, tmp_path: Path, n_chosen: int) -> None:
        xy = np.random.default_rng(0).normal(size=(2000, 2))
        labels = np.random.default_rng(1).integers(-1, 25, size=2000)  # -1: unknown; 25 classes: no legend
        path = save_embedding_map(tmp_path / "m.png", xy, np.arange(n_chosen), labels, None, "many")
        assert Image.open(path).size == (900, 750)

    def test_two_points_both_chosen(self, tmp_path: Path) -> None:
        path, used = write_embedding_map(tmp_path / "e.png", np.array([[0.0, 1.0], [1.0, 0.0]]), [1, 0])
        assert used == "pca" and Image.open(path).size == (900, 750)
