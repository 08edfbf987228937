"""Selection: FAISS K-means on embeddings, pick rules, and the selectors built on them."""

from imgselect.selection.kmeans import KMeansResult, faiss_gpu_available, kmeans
from imgselect.selection.picks import cluster_members, fill_farthest, pick_nearest, pick_random
from imgselect.selection.selectors import KMeansSelector, RandomSelector, Selection, check_budget

__all__ = [
    "KMeansResult",
    "KMeansSelector",
    "RandomSelector",
    "Selection",
    "check_budget",
    "cluster_members",
    "faiss_gpu_available",
    "fill_farthest",
    "kmeans",
    "pick_nearest",
    "pick_random",
]
