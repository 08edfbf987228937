"""FAISS K-means on embeddings, as plain functions on arrays."""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from imgselect.run.progress import format_duration, format_rate

log = logging.getLogger(__name__)

KMeansInit = Literal["random", "kmeans++"]

# K-means++ seeding works on a random sample of at most SEEDING_POINTS_PER_CENTROID * k points ...
SEEDING_POINTS_PER_CENTROID = 32
# ... projected on the principal axes that hold this fraction of the sample's variance ...
SEEDING_VARIANCE = 0.9
# ... estimated from at most this many of them (the covariance costs 2·m·d² FLOP).
SEEDING_PCA_POINTS = 8192


@dataclass(frozen=True)
class KMeansResult:
    """Outcome of one K-means run.

    Attributes:
        centroids: ``(k, d)`` float32 cluster centres.
        assignments: ``(n,)`` int64 index of the nearest centroid of each point.
        sq_distances: ``(n,)`` float32 squared Euclidean distance of each point to its centroid.
        objective: sum of squared distances (the K-means loss) at the final assignment.
        device: ``"gpu"`` or ``"cpu"``: where FAISS ran.
    """

    centroids: np.ndarray
    assignments: np.ndarray
    sq_distances: np.ndarray
    objective: float
    device: str

    @property
    def cluster_sizes(self) -> np.ndarray:
        """Number of points assigned to each of the ``k`` clusters (zeros included)."""
        return np.bincount(self.assignments, minlength=len(self.centroids))


@dataclass(frozen=True)
class KMeansOptions:
    """How a selector runs :func:`kmeans`: the K-means keys of its config (``niter``, ``nredo``, ``seed``,
    ``max_points_per_centroid``, ``gpu``, ``init``), held once and used by :meth:`run`."""

    niter: int = 20
    nredo: int = 1
    seed: int = 0
    max_points_per_centroid: int | None = None
    gpu: bool | str = "auto"
    init: KMeansInit = "random"

    def run(self, x: np.ndarray, k: int) -> KMeansResult:
        """:func:`kmeans` of ``x`` into ``k`` clusters with these options."""
        return kmeans(
            x,
            k,
            niter=self.niter,
            nredo=self.nredo,
            seed=self.seed,
            max_points_per_centroid=self.max_points_per_centroid,
            gpu=self.gpu,
            init=self.init,
        )


FAISS_MISSING = (
    "FAISS is not installed; imgselect needs one of its two builds, never both (each installs the same "
    "`faiss` module): pip install 'imgselect[cpu]' (faiss-cpu) or pip install 'imgselect[gpu]' "
    "(faiss-gpu-cu12); in a checkout, `make install` (CPU) or `make install FAISS=gpu`"
)


def require_faiss() -> None:
    """Import ``faiss``, or raise :class:`ModuleNotFoundError` with :data:`FAISS_MISSING` (how to install it):
    FAISS is an extra, ``cpu`` or ``gpu``, not a core dependency."""
    try:
        import faiss  # noqa: F401
    except ModuleNotFoundError as err:
        if err.name != "faiss":
            raise
        raise ModuleNotFoundError(FAISS_MISSING, name="faiss") from None


def faiss_gpu_available() -> bool:
    """True when the installed ``faiss`` was built with GPU support and sees at least one GPU."""
    require_faiss()
    import faiss

    get_num_gpus = getattr(faiss, "get_num_gpus", None)
    return bool(get_num_gpus and get_num_gpus() > 0)


def count_nonfinite_rows(x: np.ndarray, chunk: int = 65536) -> int:
    """Rows of ``x`` holding a NaN or inf, checked ``chunk`` rows at a time (no ``x``-sized mask at once)."""
    return sum(int((~np.isfinite(x[i : i + chunk]).all(axis=1)).sum()) for i in range(0, len(x), chunk))


def kmeans(
    x: np.ndarray,
    k: int,
    *,
    niter: int = 20,
    nredo: int = 1,
    seed: int = 0,
    max_points_per_centroid: int | None = None,
    gpu: bool | str = "auto",
    verbose: bool = False,
    init: KMeansInit = "random",
) -> KMeansResult:
    """Cluster ``x`` into ``k`` clusters with FAISS (Euclidean distance).

    Args:
        x: ``(n, d)`` embeddings; converted to contiguous float32.
        k: number of clusters, ``1 <= k <= n``.
        niter: Lloyd iterations per run.
        nredo: independent runs; the one with the lowest objective is kept.
        seed: FAISS random seed (initial centroids); same seed, same result on the same device.
        max_points_per_centroid: FAISS subsamples the training set to ``k * max_points_per_centroid``
            points (its default is 256). ``None`` (our default) trains on every point.
        gpu: ``True``/``False``, or ``"auto"``: GPU when ``faiss.get_num_gpus() > 0``.
        verbose: let FAISS print one line per iteration (to stdout, from C++: not into the job's log).
            Either way the log gets a line before and one after, with the objective's course
            (:func:`objective_summary`).
        init: ``"random"``: FAISS's own seeding (``k`` distinct random points), or ``"kmeans++"``:
            :func:`kmeans_plusplus` seeds FAISS's Lloyd iterations (FAISS has no K-means++). With
            ``"kmeans++"`` each of the ``nredo`` runs seeds with ``seed + run``.

    Returns:
        The centroids, every point's assignment and squared distance, and the objective.
    """
    require_faiss()
    import faiss

    x = _checked_points(x, k, niter=niter, nredo=nredo, init=init)
    n, d = x.shape
    use_gpu = faiss_gpu_available() if gpu == "auto" else bool(gpu)
    make = functools.partial(
        faiss.Kmeans,
        d,
        k,
        niter=niter,
        gpu=use_gpu,
        verbose=verbose,
        spherical=False,
        max_points_per_centroid=max_points_per_centroid or n,
        min_points_per_centroid=1,  # silences FAISS's "too few points" warning; we handle small clusters
    )
    n_train = min(n, k * max_points_per_centroid) if max_points_per_centroid else n
    _log_start(k, n, d, niter, nredo, n_train, init, use_gpu)
    t0 = time.perf_counter()
    km, history, iterations = _train(make, x, k, init=init, nredo=nredo, seed=seed)
    sq_dist, assign = km.index.search(x, 1)
    seconds = time.perf_counter() - t0
    assignments = assign[:, 0].astype(np.int64)
    sq_distances = np.maximum(sq_dist[:, 0], 0.0).astype(np.float32)
    objective = float(sq_distances.astype(np.float64).sum())
    log.info(
        "K-means: done in %s (%d iterations, %s); %s",
        format_duration(seconds),
        iterations,
        format_rate(iterations, seconds, "iterations"),
        objective_summary(history, objective, niter, nredo, n_train, n),
    )
    return KMeansResult(
        centroids=np.asarray(km.centroids, dtype=np.float32),
        assignments=assignments,
        sq_distances=sq_distances,
        objective=objective,
        device="gpu" if use_gpu else "cpu",
    )


def check_finite(x: np.ndarray) -> None:
    """Raise a clear error when rows of the embeddings ``x`` hold a NaN or inf."""
    bad = count_nonfinite_rows(x)
    if bad:
        raise ValueError(
            f"{bad} of {len(x)} embeddings contain NaN or inf; check the embedding (an autoencoder's training loss, a file's values)"
        )


def _checked_points(x: np.ndarray, k: int, *, niter: int, nredo: int, init: str) -> np.ndarray:
    """``x`` as contiguous float32 ``(n, d)`` finite points, after checking :func:`kmeans`'s arguments."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"embeddings must be a 2-D (n, d) array, got shape {x.shape}")
    if not 1 <= k <= len(x):
        raise ValueError(f"K-means needs 1 <= k <= n, got k={k} for n={len(x)} points")
    check_finite(x)
    if niter < 1 or nredo < 1:
        raise ValueError(f"K-means needs niter >= 1 and nredo >= 1, got niter={niter}, nredo={nredo}")
    if init not in ("random", "kmeans++"):
        raise ValueError(f"init={init!r} is not a K-means initialisation; use 'random' or 'kmeans++'")
    return x


def _log_start(
    k: int, n: int, d: int, niter: int, nredo: int, n_train: int, init: str, use_gpu: bool
) -> None:
    """The line :func:`kmeans` logs before it starts: what it clusters, how and where."""
    log.info(
        "K-means: K=%d on %s x %d, %d iterations%s, %s, %s seeding, %s",
        k,
        f"{n:,}",
        d,
        niter,
        f" x {nredo} runs" if nredo > 1 else "",
        "every point" if n_train == n else f"a sample of {n_train:,} points",
        "K-means++" if init == "kmeans++" else "random",
        "GPU" if use_gpu else "CPU",
    )


def _train(
    make: Callable[..., Any], x: np.ndarray, k: int, *, init: str, nredo: int, seed: int
) -> tuple[Any, np.ndarray | None, int]:
    """Train ``make(nredo=..., seed=...)`` (a ``faiss.Kmeans``) on ``x``: once with FAISS's own seeding and
    restarts (``init="random"``), or ``nredo`` times from :func:`kmeans_plusplus` seeds (FAISS would restart
    from the same given centroids, so the restarts are ours, seeded ``seed + run``), keeping the lowest
    objective.

    Returns:
        The run kept; its objective at each iteration (``None`` for FAISS's own restarts, whose histories it
        concatenates; a run may stop early); and the iterations run in all.
    """
    if init == "random":
        km = make(nredo=nredo, seed=seed)
        km.train(x)
        all_runs = _objectives(km)
        return km, (all_runs if nredo == 1 else None), len(all_runs)
    best: Any = None
    best_obj, history, iterations = np.inf, None, 0
    for run in range(nredo):
        candidate = make(nredo=1, seed=seed + run)
        candidate.train(x, init_centroids=x[kmeans_plusplus(x, k, seed=seed + run)])
        run_history = _objectives(candidate)
        iterations += len(run_history)
        obj = float(run_history[-1]) if len(run_history) else np.inf
        if run == 0 or obj < best_obj:
            best, best_obj, history = candidate, obj, run_history
    return best, history, iterations


def _objectives(km: Any) -> np.ndarray:
    """FAISS's objective at each iteration it ran (of all its restarts, one after the other)."""
    return np.asarray(km.obj if km.obj is not None else [], dtype=np.float64)


def objective_summary(
    history: np.ndarray | None, final: float, niter: int, nredo: int, n_train: int, n: int
) -> str:
    """The course of the K-means objective (sum of squared distances) in words, as a convergence hint.

    From ``history``, FAISS's objective at each iteration of the run kept (its assignment step, over the
    ``n_train`` points it trained on): the first and last value, and how much the last iteration still
    lowered it (near 0 %: the centroids stopped moving; a few %: more iterations would help). FAISS stops a
    run early once an iteration leaves the objective unchanged: then "converged after i of niter". Always:
    ``final``, the objective over all ``n`` points after the last update. ``history=None`` (FAISS's own
    restarts, ``nredo > 1``, whose per-run histories cannot be told apart) gives only ``final``.
    """
    over = f" on all {n:,} points" if n_train < n else ""
    if history is None or len(history) == 0:
        best = f"best of {nredo} runs, " if nredo > 1 else ""
        return f"{best}final objective {final:.4g}{over}"
    sample = f" on the {n_train:,}-point sample" if n_train < n else ""
    text = f"objective{sample} {history[0]:.4g} -> {history[-1]:.4g}"
    if len(history) < niter:
        text += f", converged after {len(history)} of {niter} iterations"
    elif len(history) >= 2 and history[-2] > 0:
        change = 100 * (history[-1] - history[-2]) / history[-2]
        text += f", the last of {len(history)} iterations changed it by {change:+.2g}%"
    if nredo > 1:
        text += f" (best of {nredo} runs)"
    return f"{text}; final {final:.4g}{over}"


def kmeans_plusplus(
    x: np.ndarray,
    k: int,
    *,
    seed: int = 0,
    n_local_trials: int | None = None,
    sample_size: int | None = None,
    variance: float = SEEDING_VARIANCE,
) -> np.ndarray:
    """Greedy K-means++ seeding (Arthur & Vassilvitskii 2007; greedy variant as in scikit-learn).

    The first centre is a uniformly random point; each next one is the best of ``n_local_trials``
    candidates drawn with probability proportional to D² (squared distance to the nearest centre so
    far), "best" meaning the lowest resulting potential (sum of D²). The candidates of one step are
    evaluated together as one ``(m, d') x (d', trials)`` matrix product.

    Why a sample and a projection: the seeding is sequential, one pass over the data per centre, and that
    pass is memory-bound. On the full data at K = 1000, d = 512, n = 60,000 it reads 120 MB per centre,
    about 11 ms on a 2-core machine: 11 s of seeding, twice FAISS's 20 Lloyd iterations. We therefore seed
    on a random sample of ``m = min(n, 32·k)`` points (K-means++ needs a few dozen points per centre to
    see the clusters; the Lloyd iterations then run on every point), projected on the principal axes that
    hold ``variance`` (90 %) of the sample's variance (64 of 512 dimensions on Fashion-MNIST features,
    ~400 on an isotropic Gaussian mixture, where nothing can be dropped). Measured on Fashion-MNIST pixels
    (12,000 and 60,000 x 512 principal components, K = 125 and 1000, one thread), the K-means objective after
    20 Lloyd iterations from these seeds is within 0.2 % of scikit-learn's ``KMeans(init="k-means++")``
    (FAISS's own seeding: 0.7-4.1 % above), at 3.7-4.7x its speed (``benchmarks/kmeans_seeding.py``).

    Args:
        x: ``(n, d)`` float32 points.
        k: number of centres, ``1 <= k <= n``.
        seed: random seed; same seed, same centres.
        n_local_trials: candidates per step; ``None``: ``2 + floor(ln k)`` (scikit-learn's choice).
        sample_size: points the seeding looks at; ``None``: ``min(n, 32·k)``.
        variance: fraction of the sample's variance the projection keeps; ``1.0`` keeps every dimension.

    Returns:
        ``(k,)`` int64 distinct indices into ``x`` of the initial centres.
    """
    x = np.ascontiguousarray(x, dtype=np.float32)
    n = len(x)
    if not 1 <= k <= n:
        raise ValueError(f"K-means++ needs 1 <= k <= n, got k={k} for n={n} points")
    if not 0.0 < variance <= 1.0:
        raise ValueError(f"variance={variance} must be in (0, 1]")
    rng = np.random.default_rng(seed)
    sample, xs = _seeding_sample(x, k, sample_size, variance, rng)
    m = len(sample)
    trials = n_local_trials or 2 + int(np.log(k))

    sq_norms = np.einsum("ij,ij->i", xs, xs)
    centres = np.empty(k, dtype=np.int64)
    centres[0] = rng.integers(m)
    closest = np.maximum(sq_norms - 2.0 * (xs @ xs[centres[0]]) + sq_norms[centres[0]], 0.0)
    # A centre's own weight must be exactly 0, not the rounding leftover of |x|² - 2x·x + |x|², or it can be
    # drawn again (duplicate-heavy pools did: the same index twice).
    closest[centres[0]] = 0.0
    chosen = np.zeros(m, dtype=bool)
    chosen[centres[0]] = True
    for c in range(1, k):
        cumulative = np.cumsum(closest, dtype=np.float64)
        if cumulative[-1] <= 0.0:
            # Every sampled point coincides with a centre (fewer distinct points than k): take unchosen ones.
            centres[c] = rng.choice(np.flatnonzero(~chosen))
            chosen[centres[c]] = True
            continue
        # side="right" never lands on a point of zero weight (a centre already chosen)
        candidates = np.searchsorted(cumulative, rng.random(trials) * cumulative[-1], side="right")
        candidates = np.minimum(candidates, m - 1)
        centres[c], closest = _best_candidate(xs, sq_norms, closest, candidates)
        chosen[centres[c]] = True
        closest[centres[c]] = 0.0
    return sample[centres].astype(np.int64)


def _seeding_sample(
    x: np.ndarray, k: int, sample_size: int | None, variance: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """The points :func:`kmeans_plusplus` seeds on: the sorted indices of a random sample of ``x`` (every
    point when the sample would hold them all) and the sample projected on its principal axes."""
    n = len(x)
    m = max(min(n, sample_size or SEEDING_POINTS_PER_CENTROID * k), k)
    sample = np.sort(rng.choice(n, size=m, replace=False)) if m < n else np.arange(n)
    return sample, project_principal(x[sample], variance, rng)


def _best_candidate(
    xs: np.ndarray, sq_norms: np.ndarray, closest: np.ndarray, candidates: np.ndarray
) -> tuple[int, np.ndarray]:
    """The candidate whose choice as a centre leaves the lowest potential (sum of D²), and every point's D²
    to its nearest centre once it is chosen (``closest``: D² before; ``sq_norms``: the points' squared norms)."""
    dist = xs @ xs[candidates].T  # (m, trials): the one GEMM of this step
    dist *= -2.0
    dist += sq_norms[:, None]
    dist += sq_norms[candidates][None, :]
    np.maximum(dist, 0.0, out=dist)
    np.minimum(dist, closest[:, None], out=dist)
    best = int(np.argmin(dist.sum(axis=0, dtype=np.float64)))
    return int(candidates[best]), np.ascontiguousarray(dist[:, best])


def project_principal(x: np.ndarray, variance: float, rng: np.random.Generator) -> np.ndarray:
    """``x`` centred and projected on the fewest principal axes that hold ``variance`` of its variance.

    The axes come from the covariance of at most ``SEEDING_PCA_POINTS`` rows (drawn with ``rng``).
    Returns ``x`` unchanged (as float32) when ``variance >= 1`` or no dimension can be dropped.
    """
    n, d = x.shape
    if variance >= 1.0 or d <= 1:
        return np.ascontiguousarray(x, dtype=np.float32)
    rows = rng.choice(n, size=SEEDING_PCA_POINTS, replace=False) if n > SEEDING_PCA_POINTS else slice(None)
    part = x[rows].astype(np.float64)
    mean = part.mean(axis=0)
    part -= mean
    eigval, eigvec = np.linalg.eigh(part.T @ part)
    eigval, eigvec = eigval[::-1], eigvec[:, ::-1]  # largest first
    total = eigval.clip(min=0).sum()
    if total <= 0:
        return np.ascontiguousarray(x, dtype=np.float32)
    dims = int(np.searchsorted(np.cumsum(eigval.clip(min=0)) / total, variance)) + 1
    if dims >= d:
        return np.ascontiguousarray(x, dtype=np.float32)
    axes = np.ascontiguousarray(eigvec[:, :dims], dtype=np.float32)
    return np.ascontiguousarray((x - mean.astype(np.float32)) @ axes)
