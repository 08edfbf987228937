"""Video as the pool: person crops from one video, several, or a folder of them (the paper's input)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from datamodules.folder import load_validation, validation_listing
from datamodules.images import load_image_files
from datamodules.pool import PoolDataModule
from imgselect.pool import Extraction, ImageSet
from imgselect.run.runtime import is_rank_zero
from imgselect.video import (
    MANIFEST_COLUMNS,
    CropRules,
    CropStats,
    FrameSampling,
    HogPeopleDetector,
    OnnxPersonDetector,
    PersonDetector,
    list_videos,
    video_crops,
)

log = logging.getLogger(__name__)


def build_detector(settings: dict[str, Any] | None) -> PersonDetector:
    """``{"kind": "hog", ...}`` (OpenCV's HOG people detector) or ``{"kind": "onnx", "model": <file>, ...}``."""
    opts = dict(settings or {})
    kind = opts.pop("kind", "hog")
    if kind == "hog":
        return HogPeopleDetector(**opts)
    if kind == "onnx":
        if not opts.get("model"):
            raise ValueError("data.detector.kind=onnx needs data.detector.model=<a local ONNX detector file>")
        return OnnxPersonDetector(**opts)
    raise ValueError(f"data.detector.kind={kind!r}: use hog (OpenCV's built-in people detector) or onnx")


class VideoDataModule(PoolDataModule):
    """Person crops of videos as the pool; a labeled folder (or CSV) as the optional validation set.

    Frames are sampled (``fps`` or ``stride``), people detected, and each crop written once as a JPEG under
    ``crops_dir`` with a ``manifest.csv`` (:mod:`imgselect.video`); the pool is every crop, in video and frame
    order, with each crop's file as its id. Before any label exists there is no validation set: select with
    ``~classifier``, label, then train with ``data.val`` set.

    Args:
        path: a video file, a list of them, or a folder (searched recursively).
        fps: frames looked at per second of video (``None``: every ``stride``-th frame).
        stride: every ``stride``-th frame, when ``fps`` is ``None``.
        max_frames: at most this many sampled frames per video (``None``: all).
        detector: ``kind`` (``hog`` or ``onnx``) and its settings (see :func:`build_detector`).
        crops: which detections become crops (:class:`imgselect.video.CropRules`).
        crops_dir: where the crops are cached (per video and settings).
        cache: reuse crops extracted before with the same video and settings, and the decoded crops.
        cache_dir: the cache root the decoded crops are kept in (:mod:`imgselect.io.poolstore`); ``None``: every
            job decodes them into memory.
        classes: the task's classes (the labeling tool offers them); default: the validation set's.
        val: a labeled validation set (folder of class subfolders or CSV of path,label), or ``None``.
        image_size, batch_size, num_workers: see :class:`PoolDataModule`.
        num_threads: decoding threads for the crops.
    """

    def __init__(
        self,
        path: str | list[str],
        fps: float | None = 2.0,
        stride: int | None = None,
        max_frames: int | None = None,
        detector: dict[str, Any] | None = None,
        crops: dict[str, Any] | None = None,
        crops_dir: str = ".cache/imgselect/video_crops",
        cache: bool = True,
        classes: list[str] | None = None,
        val: str | None = None,
        image_size: int = 64,
        batch_size: int = 128,
        num_workers: int = 0,
        num_threads: int = 4,
        cache_dir: str | None = None,
    ) -> None:
        super().__init__(image_size=image_size, batch_size=batch_size, num_workers=num_workers)
        self.paths = [str(p) for p in path] if isinstance(path, list | tuple) else str(path)
        self.sampling = FrameSampling(fps=fps, stride=stride, max_frames=max_frames)
        self.detector = build_detector(dict(detector) if detector is not None else None)
        self.rules = CropRules(**dict(crops or {}))
        self.crops_dir = Path(crops_dir)
        self.cache = cache
        self.store = cache_dir if cache else None
        self.classes = list(classes) if classes else None
        self.val_path = Path(val) if val else None
        self.num_threads = num_threads
        self.manifest: list[dict[str, str]] = []
        self.crop_stats: list[CropStats] = []

    def extraction(self) -> Extraction | None:
        """The crops' ``manifest.csv`` (crop id, file, video, frame, time, box, score) and what each video gave."""
        if not self.manifest:
            return None
        rows: list[list[object]] = [list(MANIFEST_COLUMNS)]
        for r in self.manifest:
            rows.append([r[c] if c != "path" else str(self.crops_dir / r[c]) for c in MANIFEST_COLUMNS])
        info = {"videos": [vars(s) for s in self.crop_stats], "crops": sum(s.crops for s in self.crop_stats)}
        return Extraction(manifest=rows, info={"video": info})

    def load(self) -> tuple[ImageSet, ImageSet, list[str]]:
        if self.classes is None and self.val_path is None:
            raise ValueError(
                "data=video needs the task's classes: data.classes=[staff,customer] (or data.val=<labeled "
                "folder>, whose class subfolders name them)"
            )
        videos = list_videos(self.paths)
        root, rows, self.crop_stats = video_crops(
            videos, self.crops_dir, self.sampling, self.detector, self.rules, self.cache, is_rank_zero()
        )
        files = [root / r["path"] for r in rows]
        decoded = load_image_files(
            files, self.image_size, self.num_threads, "Decoding person crops", self.store
        )
        self.manifest = [rows[i] for i in decoded.kept]
        source = str(self.paths if isinstance(self.paths, str) else ", ".join(self.paths))
        pool = ImageSet(
            images=decoded.images,
            ids=[str(files[i]) for i in decoded.kept],
            source=source,
            skipped=decoded.skipped,
            hashes=decoded.hashes,
            known_fingerprint=decoded.fingerprint,
        )
        if self.val_path is not None:
            class_names = self.classes or sorted(set(validation_listing(self.val_path)[1]))
            val = load_validation(self.val_path, class_names, self.image_size, self.num_threads)
        else:
            class_names = list(self.classes or [])
            val = ImageSet(
                images=torch.empty((0, 3, self.image_size, self.image_size), dtype=torch.uint8),
                ids=[],
                labels=np.zeros(0, dtype=np.int64),
                source="no validation set (data.val)",
            )
        return pool, val, class_names
