"""imgselect: choose the images most worth labeling from an unlabeled pool, then learn from them."""

__version__ = "0.1.0"
