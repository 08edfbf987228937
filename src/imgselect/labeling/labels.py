"""Labels: revealed from the dataset (benchmarks) or read from what a person labeled (a filled CSV or a
Label Studio JSON export).

A person's labels are keyed by the image's content hash (``selection.csv``'s ``content_hash`` column, kept in
the CSV template and in every Label Studio task), so they survive a moved folder, a re-run, a cleared cache
and a grown pool. A job with labels from files trains on every labeled image it finds in the pool, and its
selection (a next round) leaves those images out.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from imgselect.io.csvfiles import read_csv_rows, read_user_text
from imgselect.pool import ImageSet

log = logging.getLogger(__name__)


@dataclass
class LabeledSet:
    """Labeled pool images.

    Attributes:
        indices: ``(n,)`` distinct pool indices.
        labels: ``(n,)`` int64 class indices.
        unlabeled: chosen images a person has not labeled yet (``tile 3: <image id>``), for the message.
        notes: what a person should read (labels for images that are not in this pool, relabels, ...).
    """

    indices: np.ndarray
    labels: np.ndarray
    unlabeled: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.indices)

    @classmethod
    def empty(cls) -> LabeledSet:
        return cls(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))

    def plus(self, other: LabeledSet) -> LabeledSet:
        """Both sets; an image in both keeps ``other``'s label."""
        idx = np.concatenate([self.indices, other.indices])
        lab = np.concatenate([self.labels, other.labels])
        last = {int(i): k for k, i in enumerate(idx)}
        order = np.array(sorted(last.values()), dtype=np.int64)
        return LabeledSet(
            idx[order], lab[order], [*self.unlabeled, *other.unlabeled], [*self.notes, *other.notes]
        )


class Labeler(Protocol):
    """Where labels come from (``labels`` config group).

    Attributes:
        name: ``oracle`` or ``file``.
        reveals: the chosen images' labels are known as soon as they are chosen (a benchmark's oracle); a
            person's labels (``False``) come in a later run, so a job may train on them with ``budget=0``.
    """

    name: str
    reveals: bool

    def known(self, pool: ImageSet, class_names: list[str]) -> LabeledSet:
        """Labels that exist before this job selects anything (a person's earlier rounds)."""
        ...

    def reveal(self, pool: ImageSet, chosen: np.ndarray, class_names: list[str]) -> LabeledSet:
        """Labels of the images this job has just chosen (a benchmark reveals them; a person has not yet)."""
        ...


class OracleLabels:
    """Reveal the dataset's own labels for the chosen images only (benchmark mode)."""

    name = "oracle"
    reveals = True

    def known(self, pool: ImageSet, class_names: list[str]) -> LabeledSet:
        return LabeledSet.empty()

    def reveal(self, pool: ImageSet, chosen: np.ndarray, class_names: list[str]) -> LabeledSet:
        if pool.labels is None:
            raise ValueError(
                "labels=oracle needs a pool with known labels: a benchmark dataset, or a labeled folder "
                "(data=folder data.pool_labels=subfolders, or data.pool_labels=<CSV of path,label>); for "
                "your own unlabeled images label the selection (labels_template.csv or Label Studio) and run "
                "with labels=file labels.path=<your file>"
            )
        chosen = np.asarray(chosen, dtype=np.int64)
        return LabeledSet(chosen, np.asarray(pool.labels)[chosen].astype(np.int64))


class EarlierRounds:
    """The oracle in round ``r`` of a ``rounds=N`` job: the labels of rounds ``1 .. r-1`` are known, and the
    images chosen now are revealed by ``oracle`` (a benchmark's labeler)."""

    name = "oracle"
    reveals = True

    def __init__(self, oracle: Labeler, earlier: LabeledSet) -> None:
        self.oracle, self.earlier = oracle, earlier

    def known(self, pool: ImageSet, class_names: list[str]) -> LabeledSet:
        return self.earlier

    def reveal(self, pool: ImageSet, chosen: np.ndarray, class_names: list[str]) -> LabeledSet:
        return self.oracle.reveal(pool, chosen, class_names)


@dataclass(frozen=True)
class LabelEntry:
    """One labeled (or still unlabeled) image of a person's file."""

    where: str  # "labels.csv:4" or "export.json: task 12"
    key: str  # content hash, or image id for an old file without hashes
    by_hash: bool
    label: str  # "" when the image is not labeled yet
    tile: str = ""


def read_label_file(path: Path) -> list[LabelEntry]:
    """Entries of a filled CSV (``content_hash``/``image_id`` and ``label`` columns: ``labels_template.csv``
    or ``selection.csv`` with a label column; a header-less file is read as ``image_id,label``) or of a
    Label Studio JSON export (by the suffix ``.json``)."""
    if not path.is_file():
        raise FileNotFoundError(
            f"labels.path={path}: no such file. Give the filled labels_template.csv (or selection.csv with a "
            f"label column) or a Label Studio JSON export"
        )
    if path.suffix.lower() == ".json":
        return _read_label_studio(path)
    rows = read_csv_rows(path)
    if not rows:
        raise ValueError(f"{path} is empty")
    header = [c.strip().lower() for c in rows[0][1]]
    if "label" in header and ("content_hash" in header or "image_id" in header):
        col = {
            name: header.index(name)
            for name in ("content_hash", "image_id", "label", "tile")
            if name in header
        }
        body = rows[1:]
    else:  # an old header-less file: image_id,label
        col, body = {"image_id": 0, "label": 1}, rows

    def cell(row: list[str], name: str) -> str:
        return row[col[name]].strip() if name in col and len(row) > col[name] else ""

    out = []
    for lineno, row in body:
        if not row or not "".join(row).strip():
            continue
        key, by_hash = cell(row, "content_hash"), True
        if not key:  # a pool without hashes wrote an empty cell: the id is the key
            key, by_hash = cell(row, "image_id"), False
        if not key:
            raise ValueError(f"{path}:{lineno}: neither content_hash nor image_id in {row!r}")
        out.append(LabelEntry(f"{path}:{lineno}", key, by_hash, cell(row, "label"), cell(row, "tile")))
    return out


def _latest_choice(annotations: Any, where: str) -> str:
    """The class a task's most recent kept annotation chose ("" when none).

    ``choices`` is a list in Label Studio's exports; a plain string (a hand-written export) is taken whole
    as the label, never read letter by letter.

    Raises:
        ValueError: an annotation, its ``result`` or a result's ``value`` is not shaped as Label Studio
            writes it; the message names ``where`` (the file and task).
    """
    fix = "export the project again as 'JSON' from Label Studio, or fix the file by hand"
    if not isinstance(annotations, list):
        raise ValueError(
            f"{where}: 'annotations' is {type(annotations).__name__} {annotations!r:.80}, "
            f"expected a list; {fix}"
        )
    for n, a in enumerate(annotations, 1):
        if not isinstance(a, dict):
            raise ValueError(
                f"{where}: annotation {n} is {type(a).__name__} {a!r:.80}, expected an object; {fix}"
            )
        if not isinstance(a.get("result") or [], list):
            raise ValueError(
                f"{where}: annotation {a.get('id', n)}: 'result' is {type(a['result']).__name__}, "
                f"expected a list; {fix}"
            )

    def order(a: dict[str, Any]) -> tuple[str, int]:
        ident = str(a.get("id", ""))
        return str(a.get("updated_at") or a.get("created_at") or ""), int(ident) if ident.isdigit() else 0

    kept = [a for a in annotations if not a.get("was_cancelled") and a.get("result")]
    kept.sort(key=order)
    for a in reversed(kept):
        for item in a["result"]:
            if not isinstance(item, dict):
                raise ValueError(
                    f"{where}: annotation {a.get('id', '?')}: a result is {type(item).__name__} "
                    f"{item!r:.80}, expected an object; {fix}"
                )
            if item.get("type") != "choices":
                continue
            value = item.get("value") or {}
            if not isinstance(value, dict):
                raise ValueError(
                    f"{where}: annotation {a.get('id', '?')}: a choices result's 'value' is "
                    f"{type(value).__name__} {value!r:.80}, expected an object like "
                    f'{{"choices": ["<class>"]}}; {fix}'
                )
            choices = value.get("choices")
            if isinstance(choices, str):
                if choices.strip():
                    return choices.strip()
                continue
            if choices is not None and not isinstance(choices, list):
                raise ValueError(
                    f"{where}: annotation {a.get('id', '?')}: 'choices' is {type(choices).__name__} "
                    f"{choices!r:.80}, expected a list of class names; {fix}"
                )
            if choices:
                return str(choices[0])
    return ""


def _read_label_studio(path: Path) -> list[LabelEntry]:
    try:
        tasks = json.loads(read_user_text(path))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}:{e.lineno}: not JSON ({e.msg}); export the project as 'JSON'") from None
    if isinstance(tasks, dict) and isinstance(tasks.get("tasks"), list):
        tasks = tasks["tasks"]
    if not isinstance(tasks, list):
        raise ValueError(f"{path} is not a Label Studio JSON export (a list of tasks); export it as 'JSON'")
    out = []
    for k, task in enumerate(tasks):
        if not isinstance(task, dict):
            raise ValueError(
                f"{path}: task {k + 1} is {type(task).__name__} {task!r:.80}, not a task object; export the "
                f"project again as 'JSON' from Label Studio"
            )
        where = f"{path}: task {task.get('id', k + 1)}"
        data = task.get("data") or {}
        if not isinstance(data, dict):
            raise ValueError(
                f"{where}: 'data' is {type(data).__name__} {data!r:.80}, expected an object with content_hash "
                f"and image_id: import the tasks imgselect wrote (label_studio/tasks.json), whose data carry them"
            )
        key, by_hash = data.get("content_hash"), True
        if not key:
            key, by_hash = data.get("image_id"), False
        if not key:
            raise ValueError(
                f"{where} has neither data.content_hash nor data.image_id: import the tasks imgselect wrote "
                f"(label_studio/tasks.json), whose data carry them"
            )
        label = _latest_choice(task.get("annotations") or [], where)
        out.append(LabelEntry(where, str(key), by_hash, label, str(data.get("tile", ""))))
    return out


def _targets(e: LabelEntry, by_hash: dict[str, list[int]], by_id: dict[str, int]) -> list[int]:
    """Pool indices an entry names: every image with its content hash, or the image with its id."""
    if e.by_hash:
        return by_hash.get(e.key, [])
    return [by_id[e.key]] if e.key in by_id else []


class FileLabels:
    """A person's labels: filled CSVs or Label Studio JSON exports, one file or a list (one per round).

    Args:
        path: a file or a list of files; a later file's label wins for an image labeled twice.
    """

    name = "file"
    reveals = False

    def __init__(self, path: str | Sequence[str]) -> None:
        self.paths = [Path(path)] if isinstance(path, str | Path) else [Path(p) for p in path]
        if not self.paths:
            raise ValueError("labels.path is empty: give the filled CSV or the Label Studio export")

    def known(self, pool: ImageSet, class_names: list[str]) -> LabeledSet:
        index = {name: i for i, name in enumerate(class_names)}
        if pool.hashes is None:
            raise ValueError(
                f"{pool.source} has no content hashes, so a person's labels cannot be matched to it"
            )
        by_hash: dict[str, list[int]] = {}
        for i, h in enumerate(pool.hashes):
            by_hash.setdefault(h, []).append(i)
        by_id = {image_id: i for i, image_id in enumerate(pool.ids)}
        labels: dict[int, tuple[int, str]] = {}
        unlabeled: list[LabelEntry] = []
        notes: list[str] = []
        missing: list[str] = []
        for path in self.paths:
            seen: dict[str, LabelEntry] = {}
            for e in read_label_file(path):
                if not e.label:
                    unlabeled.append(e)
                    continue
                first = seen.setdefault(e.key, e)
                if first.label != e.label:
                    raise ValueError(
                        f"{e.key} has two different labels: {first.label!r} ({first.where}) and {e.label!r} "
                        f"({e.where}); keep one"
                    )
                c = index.get(e.label)
                if c is None and e.label.isdigit() and int(e.label) < len(class_names):
                    c = int(e.label)
                if c is None:
                    raise ValueError(
                        f"{e.where}: label {e.label!r} is not one of the classes {class_names} (or their index)"
                    )
                targets = _targets(e, by_hash, by_id)
                if not targets:
                    missing.append(e.key)
                for t in targets:
                    if t in labels and labels[t][0] != c:
                        was, where = class_names[labels[t][0]], labels[t][1]
                        notes.append(
                            f"{e.where} relabels {pool.ids[t]} as {e.label!r} (was {was!r} in {where})"
                        )
                    labels[t] = (c, e.where)
        if missing:
            notes.append(
                f"{len(missing)} labeled images of {', '.join(map(str, self.paths))} are not in this pool "
                f"(e.g. {missing[:3]}) and are not used"
            )
        if not labels and not unlabeled:
            raise ValueError(
                f"none of the labels in {', '.join(map(str, self.paths))} belongs to an image of {pool.source}: "
                f"is it the same pool? (labels are matched by content hash)"
            )
        waiting = [  # still unlabeled in every file
            f"tile {e.tile}: {e.key}" if e.tile else e.key
            for e in unlabeled
            if not any(t in labels for t in _targets(e, by_hash, by_id))
        ]
        for note in notes:
            log.warning("labels: %s", note)
        if waiting:
            log.warning(
                "labels: %d chosen images have no label yet and are not used: %s%s",
                len(waiting), ", ".join(waiting[:10]), " ..." if len(waiting) > 10 else "",
            )  # fmt: skip
        idx = np.array(sorted(labels), dtype=np.int64)
        return LabeledSet(idx, np.array([labels[int(i)][0] for i in idx], dtype=np.int64), waiting, notes)

    def reveal(self, pool: ImageSet, chosen: np.ndarray, class_names: list[str]) -> LabeledSet:
        return LabeledSet.empty()  # a person has not seen this job's picks yet


CsvLabels = FileLabels  # labels=csv: the name of earlier versions
