"""What a person labels from: a numbered contact sheet, a CSV template and Label Studio tasks.

Every one of them numbers the chosen images the same way: tile ``n`` is row ``n`` of ``selection.csv``, and
carries the image's content hash, the key labels are read back by (:mod:`imgselect.labeling.labels`).

Label Studio (``label_studio/`` in the job folder; ``HOW_TO_LABEL.txt`` there spells it out with the job's
paths): start it with local-file serving rooted at ``<job>/label_studio``, create a project with ``config.xml``
as its labeling interface and a Local Files source storage on ``<job>/label_studio/images`` (not synced:
Label Studio serves a local file only when a storage covers its folder), import ``tasks.json``, label, and
export as JSON; ``python train.py ... labels=file labels.path=<export.json>`` reads it back. Checked against a
real server by ``scripts/label_studio_roundtrip.py``.
"""

from __future__ import annotations

import json
import math
import shlex
import shutil
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any
from xml.sax.saxutils import quoteattr

import numpy as np
from PIL import Image

from imgselect.io.artifacts import atomic_path, write_csv_atomic, write_json_atomic
from imgselect.pool import ImageSet
from imgselect.run.jobfolder import free_name
from imgselect.selection.selectors import Selection

TEMPLATE_COLUMNS = ["tile", "content_hash", "image_id", "label"]
LS_DIR = "label_studio"
FROM_NAME, TO_NAME = "label", "image"  # the labeling config's Choices and Image names


def image_hashes(pool: ImageSet) -> list[str]:
    """The pool's content hashes (``""`` each when the pool has none)."""
    return pool.hashes if pool.hashes is not None else [""] * len(pool)


def write_labels_template(path: str | Path, selection: Selection, pool: ImageSet) -> Path:
    """``tile,content_hash,image_id,label`` with an empty label column: fill it in and give it back as
    ``labels.path``; rows left empty are reported as not labeled yet."""
    hashes = image_hashes(pool)
    rows: list[list[object]] = [list(TEMPLATE_COLUMNS)]
    rows += [[t, hashes[int(i)], pool.ids[int(i)], ""] for t, i in enumerate(selection.indices, start=1)]
    write_csv_atomic(path, rows)
    return Path(path)


def label_studio_config(class_names: Sequence[str]) -> str:
    """A Label Studio labeling interface: the image, its tile number and one choice per class."""
    choices = "\n".join(f"    <Choice value={quoteattr(c)}/>" for c in class_names)
    return (
        "<View>\n"
        '  <Header value="Tile $tile: which class?"/>\n'
        f'  <Image name="{TO_NAME}" value="$image" zoom="true"/>\n'
        f'  <Choices name="{FROM_NAME}" toName="{TO_NAME}" choice="single" showInline="true">\n'
        f"{choices}\n"
        "  </Choices>\n"
        "</View>\n"
    )


def how_to_label(folder: Path) -> str:
    """Steps to label this folder's tasks in Label Studio and read the labels back, with its own paths (quoted
    for the shell: a path with spaces works as it is pasted)."""
    q = shlex.quote
    return f"""Label these images in Label Studio (pip install label-studio, best in a virtualenv of its own):

1. LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true \\
   LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT={q(str(folder))} label-studio start
2. Create a project. Labeling Setup -> Code: paste {folder / "config.xml"}
3. Settings -> Cloud Storage -> Add Source Storage -> Local files, absolute local path
   {folder / "images"}  (save it; do not sync: the tasks come from step 4)
4. Import {folder / "tasks.json"}
5. Label (tile n = row n of selection.csv and tile n of selection.png). Export -> JSON.
6. python train.py <the same data settings> labels=file labels.path=<the exported .json>
   (or fill the label column of labels_template.csv and give that file instead; a run in this same job folder
   leaves your file as it is and keeps its earlier outputs in earlier/)
"""


def _number(x: float) -> float | None:
    return None if math.isnan(x) else round(float(x), 6)


def _write_task_image(pool: ImageSet, index: int, folder: Path, stem: str) -> str:
    """The chosen image as a file Label Studio serves: the original file when there is one (full resolution),
    else the pool's pixels as PNG. Returns its name."""
    src = Path(pool.ids[index])
    if src.is_file():
        name = f"{stem}{src.suffix.lower()}"
        with atomic_path(folder / name) as tmp:
            shutil.copyfile(src, tmp)
    else:
        name = f"{stem}.png"
        with atomic_path(folder / name) as tmp:
            Image.fromarray(pool.images[index].permute(1, 2, 0).numpy()).save(tmp)
    return name


def write_label_studio(
    out_dir: str | Path,
    selection: Selection,
    pool: ImageSet,
    class_names: Sequence[str],
    predictions: np.ndarray | None = None,
    model_version: str = "imgselect",
) -> dict[str, str]:
    """``<out_dir>/label_studio/``: ``config.xml``, ``tasks.json`` and ``images/`` (the chosen images).

    Each task's data hold the image URL (local-file serving, relative to the ``label_studio`` folder), its tile
    number, content hash, pool id and index, cluster, distance to the centroid, rule and score. With
    ``predictions`` (``(budget, n_classes)`` class probabilities of the chosen images) each task carries the
    most likely class as a pre-annotation.
    """
    folder = Path(out_dir) / LS_DIR
    images = folder / "images"
    shutil.rmtree(images, ignore_errors=True)  # an earlier selection's images in this folder would linger
    images.mkdir(parents=True)
    hashes = image_hashes(pool)
    assert selection.score is not None
    tasks: list[dict[str, Any]] = []
    for k, idx in enumerate(int(i) for i in selection.indices):
        name = _write_task_image(pool, idx, images, f"{k + 1:04d}_{hashes[idx][:12] or f'pool{idx}'}")
        task: dict[str, Any] = {
            "data": {
                "image": f"/data/local-files/?d=images/{name}",
                "tile": k + 1,
                "content_hash": hashes[idx],
                "image_id": pool.ids[idx],
                "pool_index": idx,
                "cluster": int(selection.cluster[k]),
                "distance": _number(float(selection.distance[k])),
                "rule": selection.rule[k],
                "score": _number(float(selection.score[k])),
            }
        }
        if predictions is not None:
            task["predictions"] = [pre_annotation(predictions[k], class_names, model_version)]
        tasks.append(task)
    config = folder / "config.xml"
    with atomic_path(config) as tmp:
        tmp.write_text(label_studio_config(class_names), encoding="utf-8")
    with atomic_path(folder / "HOW_TO_LABEL.txt") as tmp:
        tmp.write_text(how_to_label(folder.resolve()), encoding="utf-8")
    write_json_atomic(folder / "tasks.json", tasks)
    return {"label_studio_tasks": str(folder / "tasks.json"), "label_studio_config": str(config)}


def pre_annotation(probs: np.ndarray, class_names: Sequence[str], model_version: str) -> dict[str, Any]:
    """A Label Studio prediction: the most likely class of ``probs`` and its probability as the score."""
    c = int(np.argmax(probs))
    return {
        "model_version": model_version,
        "score": round(float(probs[c]), 4),
        "result": [
            {
                "from_name": FROM_NAME,
                "to_name": TO_NAME,
                "type": "choices",
                "value": {"choices": [class_names[c]]},
            }
        ],
    }


def add_predictions(
    out_dir: str | Path, predictions: np.ndarray, class_names: Sequence[str], model_version: str = "imgselect"
) -> Path:
    """Give the tasks :func:`write_label_studio` wrote (one per tile, in order) the classifier's guesses as
    pre-annotations, once a classifier exists; nothing else in ``label_studio/`` is written again."""
    path = Path(out_dir) / LS_DIR / "tasks.json"
    tasks = json.loads(path.read_text(encoding="utf-8"))
    if len(tasks) != len(predictions):
        raise ValueError(f"{len(predictions)} predictions for the {len(tasks)} tasks of {path}")
    for task, probs in zip(tasks, predictions, strict=True):
        task["predictions"] = [pre_annotation(probs, class_names, model_version)]
    write_json_atomic(path, tasks)
    return path


def write_labeling_files(
    out_dir: str | Path,
    selection: Selection,
    pool: ImageSet,
    class_names: Sequence[str],
    keep: Collection[Path] = (),
) -> dict[str, str]:
    """``labels_template.csv`` and ``label_studio/`` for the chosen images (pre-annotations come later, from
    :func:`add_predictions`, once a classifier exists); returns their paths. A template among ``keep`` (a
    person's filled labels this run reads) is never written over: the new one is ``labels_template-<time>.csv``."""
    template = write_labels_template(free_name(Path(out_dir) / "labels_template.csv", keep), selection, pool)
    return {"labels_template": str(template), **write_label_studio(out_dir, selection, pool, class_names)}
