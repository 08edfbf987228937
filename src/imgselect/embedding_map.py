"""The embedding map: the pool drawn in two dimensions, the chosen images marked, coloured by class if known.

Two steps, usable apart: :func:`project_2d` turns ``(n, d)`` embeddings into ``(n, 2)`` coordinates, and
:func:`save_embedding_map` draws them to a PNG; :func:`write_embedding_map` does both for a run.

Projections (see ``benchmarks/results/embedding_map.md`` for the measurements behind the choice):

- ``pca``: the two leading principal components (numpy, exact, deterministic). About a second for 60,000
  points on 2 cores, but classes overlap: on Fashion-MNIST a point's 10 nearest 2-D neighbours share its
  class 46 % of the time.
- ``tsne``: scikit-learn's Barnes-Hut t-SNE after a PCA to 50 dimensions. scikit-learn is not a runtime
  dependency of imgselect (only of ``[dev]``), so this path raises an error naming it when it is absent.
  On 2 cores a full t-SNE takes 40 s at 12,000 points and many minutes at 60,000, so it is fitted on at most
  ``max_points`` points (every ``keep`` index among them, the rest a seeded random sample); every other
  point is placed at the mean position of its 5 nearest fitted points in the PCA-50 space. 10-NN class
  agreement on Fashion-MNIST: 0.67-0.68 with 2,000 points fitted (about 5 s, the default), 0.69-0.71 with
  5,000 (about 15 s), 0.76-0.79 for a full t-SNE.
- ``auto``: ``tsne`` when scikit-learn is importable and there are at least :data:`TSNE_MIN_POINTS`
  points, else ``pca``.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from imgselect.io.artifacts import atomic_path

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

log = logging.getLogger(__name__)

Method = Literal["auto", "pca", "tsne"]
METHODS: tuple[str, ...] = ("auto", "pca", "tsne")

TSNE_MAX_POINTS = 2000
"""Points t-SNE is fitted on by default: about 5 s on 2 idle cores whatever the pool size (measured), so a
sweep of selection jobs does not pay 15 s a job for the 5,000-point map's 0.02-0.03 better agreement."""
TSNE_MIN_POINTS = 50
"""Below this ``auto`` uses PCA: t-SNE's neighbourhoods (perplexity 30) need more points than that."""
TSNE_PCA_DIM = 50
"""t-SNE runs on this many principal components (the usual pre-reduction: faster, less noise)."""
PLACE_NEIGHBOURS = 5
"""Points not fitted by t-SNE sit at the mean of this many nearest fitted points (in the PCA space)."""

FIGSIZE = (9.0, 7.5)
DPI = 100
"""The PNG is always ``FIGSIZE * DPI`` = 900 x 750 pixels, whatever is drawn."""
POOL_GREY = "#9a9a9a"
CHOSEN_COLOR = "#d62728"
"""Fill of a chosen point when no labels are given (with labels it is filled with its class colour)."""
MAX_NUMBERED = 200
"""Chosen points are labelled with their tile number (1-based position in ``chosen``) up to this many."""
MAX_LEGEND_CLASSES = 20


def tsne_available() -> bool:
    """Whether scikit-learn (which provides t-SNE here) can be imported."""
    return importlib.util.find_spec("sklearn") is not None


def project_2d(
    embeddings: np.ndarray,
    method: str = "auto",
    seed: int = 0,
    max_points: int | None = TSNE_MAX_POINTS,
    keep: np.ndarray | Sequence[int] | None = None,
) -> tuple[np.ndarray, str]:
    """Project ``embeddings`` to two dimensions for drawing.

    Args:
        embeddings: ``(n, d)`` finite numbers, ``n >= 1``.
        method: ``auto``, ``pca`` or ``tsne`` (see the module docstring).
        seed: seeds t-SNE and its subsample; PCA needs none. The same inputs and seed give the same output.
        max_points: t-SNE is fitted on at most this many points (``None``: all of them); PCA ignores it.
        keep: indices that must be among the t-SNE-fitted points (the chosen images, so they sit where t-SNE
            put them rather than where their neighbours were put).

    Returns:
        ``(xy, used)``: ``(n, 2)`` float32 coordinates in the order of ``embeddings``, and the method used:
        ``pca``, ``tsne`` (every point fitted) or ``tsne+knn`` (a subsample fitted, the rest placed at the
        mean position of their :data:`PLACE_NEIGHBOURS` nearest fitted points).

    Raises:
        ValueError: ``embeddings`` not 2-D, empty or not finite; unknown ``method``; ``keep`` out of range
            or larger than ``max_points``; ``max_points < 2``.
        (``method="tsne"`` on fewer than 3 points falls back to PCA: t-SNE has nothing to fit.)
        ImportError: ``method="tsne"`` without scikit-learn installed.
    """
    x = _check_embeddings(embeddings)
    n = len(x)
    if method not in METHODS:
        raise ValueError(f"embedding map method={method!r} is unknown; use one of {', '.join(METHODS)}")
    if max_points is not None and max_points < 2:
        raise ValueError(f"max_points={max_points} must be at least 2 (or None for every point)")
    keep_idx = _check_indices(keep, n, "keep")
    if method == "auto":
        method = "tsne" if tsne_available() and n >= TSNE_MIN_POINTS else "pca"
    if method == "pca":
        return _pca(x, 2), "pca"
    if not tsne_available():
        raise ImportError(
            "embedding map method='tsne' needs scikit-learn, which imgselect does not install at run time: "
            "`pip install scikit-learn` (or `pip install -e .[dev]`), or use method='pca'"
        )
    if n < 3:  # t-SNE's perplexity must be below the number of points minus one: nothing to fit
        return _pca(x, 2), "pca"
    feats = _pca(x, TSNE_PCA_DIM) if x.shape[1] > TSNE_PCA_DIM else x.astype(np.float32)
    if max_points is None or n <= max_points:
        return _tsne(feats, seed), "tsne"
    if len(keep_idx) > max_points:
        raise ValueError(
            f"{len(keep_idx)} points to keep exceed max_points={max_points}; raise max_points or keep fewer"
        )
    fitted = _subsample(n, max_points, keep_idx, seed)
    xy = np.empty((n, 2), dtype=np.float32)
    xy[fitted] = _tsne(feats[fitted], seed)
    rest = np.setdiff1d(np.arange(n), fitted, assume_unique=True)
    xy[rest] = _place(feats[fitted], xy[fitted], feats[rest])
    log.info("embedding map: t-SNE on %d of %d points, the rest placed by their neighbours", len(fitted), n)
    return xy, "tsne+knn"


def save_embedding_map(
    path: str | Path,
    xy: np.ndarray,
    chosen: np.ndarray | Sequence[int],
    labels: np.ndarray | Sequence[int] | None,
    class_names: Sequence[str] | None,
    title: str,
) -> Path:
    """Draw the pool at ``xy`` with the ``chosen`` images marked, and write it to ``path`` atomically.

    Pool points are small and faint: coloured by class when ``labels`` are given (negative labels, if any,
    mean unknown and are grey), grey otherwise. Chosen points are larger, ringed in black and filled with
    their class colour (:data:`CHOSEN_COLOR` without labels); when there are at most :data:`MAX_NUMBERED`
    of them each carries its tile number, its 1-based position in ``chosen``, as on ``selection.png``. The
    image is always :data:`FIGSIZE` x :data:`DPI` pixels, with the title over a line of counts.

    Args:
        path: where to write (the format follows the suffix; ``.png`` is meant).
        xy: ``(n, 2)`` finite coordinates, e.g. from :func:`project_2d`.
        chosen: distinct indices into ``xy``, in pick order (may be empty, may be all of them).
        labels: ``(n,)`` integer classes, or ``None``.
        class_names: a name per class (index = label), or ``None`` to call classes by their number.
        title: first line of the title (say which projection it is).

    Raises:
        ValueError: ``xy`` not ``(n, 2)`` or not finite; ``chosen`` out of range or repeated; ``labels`` of
            the wrong length or not integers; a label without a name in ``class_names``.
    """
    from matplotlib.figure import Figure  # no pyplot: no global backend, no figure left open

    xy = _check_embeddings(xy, name="xy")
    if xy.shape[1] != 2:
        raise ValueError(f"xy has shape {xy.shape}; expected (n, 2) coordinates")
    chosen_idx = _check_indices(chosen, len(xy), "chosen")
    y = _check_labels(labels, len(xy), class_names)

    fig = Figure(figsize=FIGSIZE, dpi=DPI)
    ax = fig.add_axes((0.03, 0.03, 0.70, 0.86))
    ax.set_xticks([])
    ax.set_yticks([])
    colors = _map_colors(y, class_names)
    handles = _draw_pool(ax, xy, chosen_idx, y, class_names, colors)
    if len(chosen_idx):
        handles.append(_draw_chosen(ax, xy[chosen_idx], None if y is None else y[chosen_idx], colors))
        if len(chosen_idx) <= MAX_NUMBERED:
            _number_tiles(ax, xy[chosen_idx])
    fig.legend(handles=handles, loc="upper left", bbox_to_anchor=(0.75, 0.89), fontsize=8, frameon=False)
    fig.suptitle(f"{title}\n{_counts_line(len(xy), len(chosen_idx), y)}", fontsize=11)
    return _write_figure(fig, Path(path))


def _map_colors(
    y: np.ndarray | None, class_names: Sequence[str] | None
) -> list[tuple[float, float, float, float]]:
    """One colour per named class: the same class keeps its colour whichever classes this pool holds."""
    n_classes = int(y.max()) + 1 if y is not None and (y >= 0).any() else 0
    return _class_colors(max(n_classes, len(class_names) if class_names is not None else 0))


def _legend_marker(label: str, face: object, edge: str = "none", size: float = 6.0) -> Line2D:
    """A legend entry's marker: the drawn markers are too faint or too big to show there."""
    from matplotlib.lines import Line2D

    return Line2D([], [], ls="", marker="o", ms=size, mfc=face, mec=edge, label=label)


def _draw_pool(
    ax: Axes,
    xy: np.ndarray,
    chosen_idx: np.ndarray,
    y: np.ndarray | None,
    class_names: Sequence[str] | None,
    colors: list[tuple[float, float, float, float]],
) -> list[Line2D]:
    """The points not chosen, small and faint (grey, or by class), and their legend entries: one per class
    with its count (all labels, chosen included), or a single one when there are over
    :data:`MAX_LEGEND_CLASSES` classes."""
    n = len(xy)
    is_chosen = np.zeros(n, dtype=bool)
    is_chosen[chosen_idx] = True
    pool = np.flatnonzero(~is_chosen)
    size = float(np.clip(6000.0 / max(n, 1), 1.0, 16.0))
    alpha = 0.4 if n > 2000 else 0.6
    if y is None:
        ax.scatter(xy[pool, 0], xy[pool, 1], s=size, c=POOL_GREY, alpha=alpha, lw=0)
        return [_legend_marker(f"pool ({n})", POOL_GREY)]
    handles: list[Line2D] = []
    classes = [int(c) for c in np.unique(y)]
    for c in classes:
        sel = pool[y[pool] == c]
        name = "unknown" if c < 0 else (class_names[c] if class_names is not None else str(c))
        color = POOL_GREY if c < 0 else colors[c]
        ax.scatter(xy[sel, 0], xy[sel, 1], s=size, color=color, alpha=alpha, lw=0)
        handles.append(_legend_marker(f"{name} ({int((y == c).sum())})", color))
    if len(classes) > MAX_LEGEND_CLASSES:
        handles = [_legend_marker(f"{len(classes)} classes", POOL_GREY)]
    return handles


def _draw_chosen(
    ax: Axes, points: np.ndarray, y: np.ndarray | None, colors: list[tuple[float, float, float, float]]
) -> Line2D:
    """The chosen ``points`` (``(m, 2)``, ``m >= 1``), larger and ringed in black, filled with their class
    colour (``y``: their labels) or :data:`CHOSEN_COLOR` without labels; returns their legend entry."""
    if y is None:
        face: str | np.ndarray = CHOSEN_COLOR
    else:
        face = np.array([(*_hex_rgb(POOL_GREY), 1.0) if c < 0 else colors[c] for c in y])
    big = float(np.clip(6000.0 / len(points), 12.0, 60.0))
    ax.scatter(points[:, 0], points[:, 1], s=big, c=face, edgecolors="black", linewidths=0.8, zorder=3)
    what = "chosen" if y is None else "chosen (class fill)"
    return _legend_marker(f"{what} ({len(points)})", CHOSEN_COLOR if y is None else "white", "black", 8)


def _number_tiles(ax: Axes, points: np.ndarray) -> None:
    """Each chosen point's tile number (its 1-based position in pick order), as on ``selection.png``."""
    for tile, (px, py) in enumerate(points, start=1):
        ax.annotate(
            str(tile),
            (float(px), float(py)),
            xytext=(3, 3),
            textcoords="offset points",
            fontsize=6,
            zorder=4,
        )


def _counts_line(n: int, n_chosen: int, y: np.ndarray | None) -> str:
    """The title's second line: pool size, chosen, and known classes when there are labels."""
    counts = f"{n} pool images, {n_chosen} chosen"
    if y is not None:
        counts += f", {len(np.unique(y[y >= 0]))} classes"
    return counts


def _write_figure(fig: Figure, path: Path) -> Path:
    """Write ``fig`` to ``path`` at :data:`DPI`, atomically (a reader never sees half a PNG)."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=DPI)
    return path


def write_embedding_map(
    path: str | Path,
    embeddings: np.ndarray,
    chosen: np.ndarray | Sequence[int],
    labels: np.ndarray | Sequence[int] | None = None,
    class_names: Sequence[str] | None = None,
    method: str = "auto",
    seed: int = 0,
    what: str = "embeddings",
) -> tuple[Path, str]:
    """Project ``embeddings`` (:func:`project_2d`, chosen points always fitted) and draw them to ``path``.

    ``what`` names the embeddings in the title (``autoencoder latent``, ``pixels``, ...). Returns the path
    and the projection used.
    """
    n_chosen = len(np.asarray(chosen))
    # the chosen points are fitted by t-SNE, not placed, unless they alone exceed its budget of points
    keep = chosen if n_chosen <= TSNE_MAX_POINTS else None
    xy, used = project_2d(embeddings, method=method, seed=seed, keep=keep)
    n_fitted = min(len(xy), TSNE_MAX_POINTS)
    included = "chosen included" if keep is not None else "a random sample"
    how = {
        "pca": "PCA, 2 leading components",
        "tsne": "t-SNE (PCA-50 first)",
        "tsne+knn": f"t-SNE on {n_fitted} points ({included}), the rest at their {PLACE_NEIGHBOURS} nearest",
    }[used]
    return save_embedding_map(
        path, xy, chosen, labels, class_names, f"Embedding map of the {what}: {how}"
    ), used


def _check_embeddings(x: np.ndarray, name: str = "embeddings") -> np.ndarray:
    a = np.asarray(x)
    if a.ndim != 2:
        raise ValueError(f"{name} has shape {a.shape}; expected a 2-D (n, d) array")
    if a.shape[0] < 1 or a.shape[1] < 1:
        raise ValueError(f"{name} has shape {a.shape}; need at least one point and one dimension")
    if not np.issubdtype(a.dtype, np.number) or np.issubdtype(a.dtype, np.complexfloating):
        raise ValueError(f"{name} has dtype {a.dtype}; expected real numbers")
    if not np.isfinite(a).all():
        bad = np.flatnonzero(~np.isfinite(a).all(axis=1))
        raise ValueError(f"{name} has NaN or infinite values in {len(bad)} rows (first: row {bad[0]})")
    return a


def _check_indices(idx: np.ndarray | Sequence[int] | None, n: int, name: str) -> np.ndarray:
    if idx is None:
        return np.zeros(0, dtype=np.int64)
    a = np.asarray(idx)
    if a.size == 0:
        return np.zeros(0, dtype=np.int64)
    if a.ndim != 1 or not np.issubdtype(a.dtype, np.integer):
        raise ValueError(
            f"{name} must be a 1-D array of integer indices; got shape {a.shape}, dtype {a.dtype}"
        )
    out_of_range = a[(a < 0) | (a >= n)]
    if len(out_of_range):
        raise ValueError(f"{name} index {int(out_of_range[0])} is out of range for a pool of {n} points")
    if len(np.unique(a)) != len(a):
        raise ValueError(f"{name} has repeated indices ({len(a)} given, {len(np.unique(a))} distinct)")
    return a.astype(np.int64)


def _check_labels(
    labels: np.ndarray | Sequence[int] | None, n: int, class_names: Sequence[str] | None
) -> np.ndarray | None:
    if labels is None:
        return None
    y = np.asarray(labels)
    if y.shape != (n,):
        raise ValueError(f"labels has shape {y.shape}; expected one per point ({n},)")
    if n and not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"labels must be integer classes; got dtype {y.dtype}")
    y = y.astype(np.int64)
    if class_names is not None and n and y.max() >= len(class_names):
        raise ValueError(f"label {int(y.max())} has no name: class_names lists {len(class_names)} classes")
    return y


def _pca(x: np.ndarray, dim: int) -> np.ndarray:
    """``(n, dim)`` float32 scores on the ``dim`` leading principal components of ``x`` (zero columns when
    ``x`` has fewer). Exact: an eigendecomposition of the ``d x d`` covariance, or of the ``n x n`` Gram
    matrix when there are fewer points than dimensions. Each column's sign is fixed so that its largest
    absolute value is positive, so the same data always gives the same picture."""
    n, d = x.shape
    xc = x.astype(np.float32) - x.mean(axis=0, dtype=np.float64).astype(np.float32)
    k = min(dim, n, d)
    if d <= n:
        vals, vecs = np.linalg.eigh((xc.T @ xc).astype(np.float64))
        z = xc @ vecs[:, ::-1][:, :k].astype(np.float32)
    else:
        vals, u = np.linalg.eigh((xc @ xc.T).astype(np.float64))
        vals, u = np.clip(vals[::-1][:k], 0, None), u[:, ::-1][:, :k]
        z = (u * np.sqrt(vals)).astype(np.float32)
    if k:
        top = z[np.abs(z).argmax(axis=0), np.arange(k)]
        z *= np.where(top < 0, -1.0, 1.0).astype(np.float32)
    out = np.zeros((n, dim), dtype=np.float32)
    out[:, :k] = z
    return out


def _tsne(feats: np.ndarray, seed: int) -> np.ndarray:
    """scikit-learn's Barnes-Hut t-SNE of ``feats`` (``(m, f)``, ``m >= 3``) as ``(m, 2)`` float32."""
    from sklearn.manifold import TSNE

    m = len(feats)
    perplexity = float(min(30.0, max(1.0, (m - 1) / 3)))
    if np.ptp(feats, axis=0).max() == 0:  # every point the same: nothing for t-SNE (or its PCA init) to do
        return np.zeros((m, 2), dtype=np.float32)
    tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", learning_rate="auto", random_state=seed)
    return np.asarray(tsne.fit_transform(feats), dtype=np.float32)


def _subsample(n: int, m: int, keep: np.ndarray, seed: int) -> np.ndarray:
    """``m`` sorted distinct indices of ``range(n)``: all of ``keep``, the rest drawn at random."""
    rng = np.random.default_rng(seed)
    others = np.setdiff1d(np.arange(n), keep, assume_unique=False)
    extra = rng.choice(others, size=m - len(keep), replace=False) if m > len(keep) else others[:0]
    return np.sort(np.concatenate([keep, extra]).astype(np.int64))


def _place(fit_feats: np.ndarray, fit_xy: np.ndarray, feats: np.ndarray) -> np.ndarray:
    """Each row of ``feats`` at the mean 2-D position of its nearest rows of ``fit_feats`` (exact search)."""
    from imgselect.selection.kmeans import require_faiss

    require_faiss()
    import faiss

    k = min(PLACE_NEIGHBOURS, len(fit_feats))
    index = faiss.IndexFlatL2(fit_feats.shape[1])
    index.add(np.ascontiguousarray(fit_feats, dtype=np.float32))
    _, nn = index.search(np.ascontiguousarray(feats, dtype=np.float32), k)
    return fit_xy[nn].mean(axis=1).astype(np.float32)


def _class_colors(n_classes: int) -> list[tuple[float, float, float, float]]:
    """A colour per class: tab10 up to 10 classes, tab20 up to 20, evenly spaced hues beyond."""
    from matplotlib import colormaps

    if n_classes <= 10:
        cmap, pos = colormaps["tab10"], [i / 10 + 0.05 for i in range(n_classes)]
    elif n_classes <= 20:
        cmap, pos = colormaps["tab20"], [i / 20 + 0.025 for i in range(n_classes)]
    else:
        cmap, pos = colormaps["hsv"], [i / n_classes for i in range(n_classes)]
    return [tuple(float(v) for v in cmap(p)) for p in pos]  # type: ignore[misc]


def _hex_rgb(color: str) -> tuple[float, float, float]:
    from matplotlib.colors import to_rgb

    r, g, b = to_rgb(color)
    return (r, g, b)
