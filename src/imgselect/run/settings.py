"""A job's settings checked against each other and against the pool, once the pool is known and before
anything is trained, so a setting that cannot work fails in seconds with what to change."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from imgselect.selection.selectors import check_budget

log = logging.getLogger(__name__)

MIN_IMAGE_SIZE = 8  # datamodules.pool.PoolDataModule refuses smaller images


def check_settings(
    *,
    budget: int,
    n_pool: int,
    folds: int | None,
    pseudo_size: int | None,
    image_size: int,
    n_classes: int,
    source: str = "the pool",
    halvings: int = 0,
    n_known: int = 0,
    n_excluded: int = 0,
    reveals: bool = True,
    n_val: int | None = None,
) -> None:
    """Raise ``ValueError`` naming the setting, its value and what to do, for settings that cannot work.

    Rules:

    - ``1 <= budget <= n_pool - n_excluded`` (:func:`~imgselect.selection.selectors.check_budget`); with labels
      from a person's files (``n_known > 0``) ``budget=0`` is allowed: train on them, pick nothing new.
    - ``n_classes >= 2`` when a classifier is trained: it tells classes apart.
    - ``1 <= folds <= n_train``: each fold holds out at least one labeled image; ``n_train`` is ``n_known``
      plus, when the labeler ``reveals`` the chosen images' labels (a benchmark), ``budget``.
    - ``pseudo_size >= 0`` (above ``n_pool - budget``, the images left unlabeled, a warning: fewer are
      added); and
      ``pseudo_size`` is 0 or at least ``n_classes``, as it is split evenly (``pseudo_size // n_classes``
      per class), so fewer than one per class adds none.
    - ``image_size >= 8`` and a multiple of ``2 ** halvings`` (the autoencoder halves the image ``halvings``
      times and upsamples it back: 8 for the paper's three ``autoencoder.channels``, 4 for ``experiment=cpu``).

    Args:
        budget: images to label (``budget``).
        n_pool: readable pool images.
        folds: k of k-fold learning (``folds``); ``None`` when no classifier is trained (``~classifier``).
        pseudo_size: pseudo-labels (``pseudo.size``); ``None`` when no classifier is trained.
        image_size: side of the square images the models see (``image_size``).
        n_classes: classes of the task.
        source: the pool's folder or dataset, for messages.
        halvings: ``len(autoencoder.channels)`` when the autoencoder embedding runs, else 0 (the pixels,
            backbone and file embeddings and the classifier take any size).
        n_known: pool images a person has already labeled (``labels=file``); they are not chosen again.
        n_excluded: pool images the selection may not choose (labeled ones and near-duplicates).
        reveals: whether the chosen images' labels are known at once (``labels=oracle``).
        n_val: labeled validation images (``None``: not checked); a classifier needs at least one.
    """
    if not (n_known > 0 and budget == 0):
        check_budget(
            budget, n_pool, source, n_pool - n_excluded, f"{n_excluded} already labeled or near-duplicates"
        )
    n_train = n_known + (budget if reveals else 0)
    if folds is not None:
        _check_classifier(folds, n_train, n_classes, n_val, budget, n_known, source)
    if pseudo_size is not None:
        _check_pseudo(pseudo_size, n_pool, n_train, n_classes, source)
    check_image_size(image_size, halvings)


def _check_classifier(
    folds: int, n_train: int, n_classes: int, n_val: int | None, budget: int, n_known: int, source: str
) -> None:
    """The classifier's rules of :func:`check_settings`: validation images, labels, classes and folds."""
    if n_val == 0:
        raise ValueError(
            f"no labeled validation image for {source}: the classifier's metrics need some. Give data.val=<a "
            f"folder with one subfolder per class, or a CSV of path,label>, or run with ~classifier to only choose"
        )
    if n_train == 0:
        raise ValueError(
            "no labeled image to train the classifier on: run with ~classifier to choose images, label "
            "them, then give the labels (labels=file labels.path=<filled CSV or Label Studio export>)"
        )
    if n_classes < 2:
        raise ValueError(f"the task has {n_classes} class; a classifier needs 2 or more (data.classes)")
    if folds < 1:
        raise ValueError(f"folds={folds} must be at least 1 (1: one classifier trained on every label)")
    if folds > n_train:
        what = f"budget={budget}" if n_known == 0 else f"the {n_train} labeled images"
        raise ValueError(
            f"folds={folds} exceeds {what}: each fold needs at least one labeled image; "
            f"set folds to at most {n_train} or label more images"
        )


def _check_pseudo(pseudo_size: int, n_pool: int, n_train: int, n_classes: int, source: str) -> None:
    """The pseudo-labels' rules of :func:`check_settings`."""
    rest = n_pool - n_train
    if pseudo_size < 0:
        raise ValueError(f"pseudo.size={pseudo_size} must be 0 (no pseudo-labels) or more")
    if pseudo_size > rest:
        # not an error: the default pseudo.size (1000) must keep working on a small folder
        log.warning(
            "pseudo.size=%d exceeds the images left unlabeled (%d in %s - %d labeled = %d): at most %d "
            "pseudo-labels will be added",
            pseudo_size, n_pool, source, n_train, rest, rest,
        )  # fmt: skip
    if 0 < pseudo_size < n_classes:
        raise ValueError(
            f"pseudo.size={pseudo_size} is split evenly over {n_classes} classes ({pseudo_size} // "
            f"{n_classes} = 0 per class) and would add no pseudo-label; set it to 0 or at least {n_classes}"
        )


def check_image_size(image_size: int, halvings: int = 0) -> None:
    """``image_size >= 8`` and a multiple of ``2 ** halvings`` (see :func:`check_settings`); the pipeline calls
    it from the config before the autoencoder is built, whose own check would fail inside Hydra's wrapper."""
    if halvings < 0:
        raise ValueError(f"halvings={halvings} must be 0 or more")
    multiple = 2**halvings
    if image_size < MIN_IMAGE_SIZE:
        raise ValueError(
            f"image_size={image_size} is too small; use {max(MIN_IMAGE_SIZE, multiple)} or more (the paper: 64)"
        )
    if image_size % multiple:
        lower = image_size // multiple * multiple
        nearest = [s for s in (lower, lower + multiple) if s >= MIN_IMAGE_SIZE]
        raise ValueError(
            f"image_size={image_size} must be a multiple of {multiple}: the autoencoder halves the image "
            f"{halvings} times (once per entry of autoencoder.channels); use {' or '.join(map(str, nearest))}, "
            f"or change autoencoder.channels"
        )


def check_numbers(values: dict[str, object]) -> None:
    """Each of ``values`` (``{"budget": 125, ...}``, from the command line) is a whole number: ``budget=ten``
    fails here, naming the key, instead of as a ``TypeError`` deep in a selector."""
    for key, value in values.items():
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(
                f"{key}={value!r} must be a whole number (e.g. {key}={DEFAULT_NUMBERS.get(key, 1)})"
            )


DEFAULT_NUMBERS = {"budget": 125, "seed": 0, "folds": 3, "image_size": 64, "pseudo.size": 1000}


def check_input_files(inputs: dict[str, list[Path]]) -> None:
    """Every file or folder a job reads (:func:`imgselect.run.jobfolder.input_paths`) exists, and weights, embedding
    and labels files load, before anything is decoded, detected or trained; raises naming the key and file.

    Weights are read as a plain state dict (never unpickled: a file holding code fails here, not after the
    embedding trained); labels files are parsed (their labels are matched to the pool later).
    """
    from imgselect.io.weights import read_state_dict
    from imgselect.labeling.labels import read_label_file

    for key, paths in inputs.items():
        for path in paths:
            if not path.exists():
                raise FileNotFoundError(f"{key}={path}: no such file or folder; check the path")
            if key == "labels.path":
                read_label_file(path)  # its errors name the file and line
                continue
            try:
                if key in ("classifier.pretrained", "embedding.weights"):
                    read_state_dict(path)
                elif key == "embedding.path" and path.suffix == ".npy":
                    np.load(path, mmap_mode="r", allow_pickle=False)
                elif key == "embedding.path" and path.suffix == ".npz":
                    with np.load(path, allow_pickle=False) as z:
                        z.files  # noqa: B018 - reads the archive's listing
            except Exception as err:  # unpickling refused, a damaged archive, object arrays, ...
                raise ValueError(
                    f"{key}={path} cannot be read ({type(err).__name__}: {str(err).splitlines()[0][:300]}); "
                    f"give a {_WHAT.get(key, 'valid file')}"
                ) from None


_WHAT = {
    "classifier.pretrained": "weights file (.safetensors, or a .pth of tensors only)",
    "embedding.weights": "weights file (.safetensors, or a .pth of tensors only)",
    "embedding.path": ".npy of float vectors (or a .npz with embeddings and ids)",
}
