"""Selection: FAISS K-means and neighbour search on embeddings, pick rules, and the selectors built on them."""

from imgselect.selection.distributed import distributed_kmeans
from imgselect.selection.kcenter import KCenterSelector, farthest_first
from imgselect.selection.kmeans import (
    KMeansInit,
    KMeansOptions,
    KMeansResult,
    faiss_gpu_available,
    kmeans,
    kmeans_plusplus,
)
from imgselect.selection.neighbors import (
    TooManyNeighbors,
    knn,
    nearest_other_label,
    range_search,
    sq_distances_to,
)
from imgselect.selection.picks import cluster_members, fill_farthest, pick_nearest, pick_random
from imgselect.selection.probcover import ProbCoverSelector, greedy_coverage, purity_delta
from imgselect.selection.selectors import (
    EmbeddingSelector,
    KMeansBase,
    KMeansSelector,
    RandomSelector,
    Selection,
    Selector,
    check_budget,
    check_embeddings,
)
from imgselect.selection.typiclust import TypiClustSelector, typicality
from imgselect.selection.uncertainty import UncertaintySelector, margins

# mypy checks here that every selector class satisfies the Selector protocol the pipeline relies on.
SELECTORS: tuple[type[Selector], ...] = (
    RandomSelector,
    KMeansSelector,
    TypiClustSelector,
    ProbCoverSelector,
    KCenterSelector,
    UncertaintySelector,
)

__all__ = [
    "SELECTORS",
    "EmbeddingSelector",
    "KCenterSelector",
    "KMeansBase",
    "KMeansInit",
    "KMeansOptions",
    "KMeansResult",
    "KMeansSelector",
    "ProbCoverSelector",
    "RandomSelector",
    "Selection",
    "Selector",
    "TooManyNeighbors",
    "TypiClustSelector",
    "UncertaintySelector",
    "check_budget",
    "check_embeddings",
    "cluster_members",
    "distributed_kmeans",
    "faiss_gpu_available",
    "farthest_first",
    "fill_farthest",
    "greedy_coverage",
    "kmeans",
    "kmeans_plusplus",
    "knn",
    "margins",
    "nearest_other_label",
    "pick_nearest",
    "pick_random",
    "purity_delta",
    "range_search",
    "sq_distances_to",
    "typicality",
]
