"""imgselect: choose the images most worth labeling from an unlabeled pool, then learn from them."""

from omegaconf import OmegaConf

__version__ = "0.1.0"

NO_EMBEDDING = ("random",)  # selectors that choose without an embedding


def job_name(selector: str, embedding: str) -> str:
    """The selector and, when it uses one, its embedding: the middle of a sweep job's folder name
    (``conf/hydra/default.yaml``): ``typiclust_pixels``, ``random``. Registered as the ``job_name`` resolver
    when the package is imported (every entry point and test that composes the configs imports it first)."""
    return selector if selector in NO_EMBEDDING else f"{selector}_{embedding}"


OmegaConf.register_new_resolver("job_name", job_name, replace=True)
