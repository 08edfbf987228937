"""Person crops of videos, cached per video and settings (:func:`crops_key`): each person is cropped and written
once as an image file with one ``manifest.csv`` row (crop id, video, frame, time, box, score), so a person can
open any crop and find where it came from; a sweep, a re-run or a second video added to a folder decodes each
video once."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from imgselect.io.artifacts import write_csv_atomic
from imgselect.io.csvfiles import read_csv_rows
from imgselect.run.progress import Progress
from imgselect.video.decode import (
    CropStats,
    FrameSampling,
    VideoInfo,
    probe_video,
    sampled_frames,
    video_digest,
)
from imgselect.video.detect import Detection, FrameTooSmallError, PersonDetector, nms

log = logging.getLogger(__name__)

MANIFEST_COLUMNS = ["crop_id", "path", "video", "frame", "time_s", "x", "y", "w", "h", "score"]


CROPS_VERSION = 1  # bump when the crops a given setting writes change


@dataclass(frozen=True)
class CropRules:
    """Which detections become crops, and how they are cut.

    Attributes:
        min_score: detections scoring below this are dropped (HOG: SVM margin; ONNX: confidence).
        nms_iou: of boxes overlapping more than this (intersection over union), only the best is kept.
        min_height: boxes shorter than this many frame pixels are dropped (too small to label).
        min_aspect, max_aspect: allowed width / height of a box (people standing: ~0.3-0.6).
        margin: each box is grown by this fraction of its size on every side before cutting (context).
        quality: JPEG quality of the crop files.
    """

    min_score: float = 0.5
    nms_iou: float = 0.4
    min_height: int = 64
    min_aspect: float = 0.2
    max_aspect: float = 1.0
    margin: float = 0.0
    quality: int = 95

    def __post_init__(self) -> None:
        if not 0.0 < self.nms_iou <= 1.0:
            raise ValueError(f"data.crops.nms_iou={self.nms_iou} must be in (0, 1] (1: no suppression)")
        if self.min_height < 8:
            raise ValueError(f"data.crops.min_height={self.min_height} must be at least 8 pixels")
        if not 0 < self.min_aspect <= self.max_aspect:
            raise ValueError(
                f"data.crops.min_aspect={self.min_aspect} / max_aspect={self.max_aspect}: need 0 < min <= max"
            )
        if not 0 <= self.margin <= 1:
            raise ValueError(f"data.crops.margin={self.margin} must be between 0 and 1")
        if not 1 <= self.quality <= 100:
            raise ValueError(f"data.crops.quality={self.quality} must be between 1 and 100")

    def keep(self, dets: Sequence[Detection]) -> list[Detection]:
        good = [
            d
            for d in dets
            if d.score >= self.min_score
            and d.h >= self.min_height
            and self.min_aspect <= d.w / max(d.h, 1) <= self.max_aspect
        ]
        return sorted(nms(good, self.nms_iou), key=lambda d: (d.x, d.y))


def crops_key(digest: str, sampling: FrameSampling, detector: PersonDetector, rules: CropRules) -> str:
    """Cache key of one video's crops: its content and every setting that changes them."""
    settings = {
        "v": CROPS_VERSION,
        "video": digest,
        "sampling": asdict(sampling),
        "detector": detector.settings(),
        "rules": asdict(rules),
    }
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def cut(frame: np.ndarray, d: Detection, margin: float) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """The crop of ``d`` grown by ``margin`` and clipped to the frame, and its box ``(x, y, w, h)``."""
    fh, fw = frame.shape[:2]
    mx, my = round(d.w * margin), round(d.h * margin)
    x1, y1 = max(0, d.x - mx), max(0, d.y - my)
    x2, y2 = min(fw, d.x + d.w + mx), min(fh, d.y + d.h + my)
    return frame[y1:y2, x1:x2], (x1, y1, x2 - x1, y2 - y1)


def extract_video_crops(
    info: VideoInfo,
    folder: Path,
    sampling: FrameSampling,
    detector: PersonDetector,
    rules: CropRules,
    show_progress: bool = True,
) -> tuple[list[list[str]], CropStats]:
    """Detect people in one video's sampled frames and write each crop to ``folder`` as a JPEG.

    Returns the manifest rows (paths relative to ``folder``'s parent) and the video's stats.
    """
    stats = CropStats(video=str(info.path))
    rows: list[list[str]] = []
    folder.mkdir(parents=True, exist_ok=True)
    step = sampling.step(info.fps)
    expected = info.frames // step + 1 if info.frames > 0 else None
    if sampling.max_frames is not None and expected is not None:
        expected = min(expected, sampling.max_frames)
    with Progress(expected, f"Detecting people ({info.path.name})", "frames", enabled=show_progress) as bar:
        for index, t, frame in sampled_frames(info.path, sampling, stats):
            t0 = time.perf_counter()
            try:
                found = detector.detect(frame)
            except FrameTooSmallError as e:  # a frame of another size than the first one checked
                raise FrameTooSmallError(f"the video {info.path}, frame {index}: {e}") from e
            stats.detect_s += time.perf_counter() - t0
            stats.detections += len(found)
            for k, d in enumerate(rules.keep(found)):
                crop, (x, y, w, h) = cut(frame, d, rules.margin)
                name = f"f{index:07d}_{k:02d}.jpg"
                if not cv2.imwrite(str(folder / name), crop, [cv2.IMWRITE_JPEG_QUALITY, rules.quality]):
                    raise OSError(f"could not write the crop {folder / name}")
                crop_id = f"{folder.name}/{name}"
                time_s = "" if t != t else f"{t:.3f}"  # NaN when the video has no frame rate
                rows.append(
                    [
                        crop_id,
                        crop_id,
                        str(info.path),
                        str(index),
                        time_s,
                        str(x),
                        str(y),
                        str(w),
                        str(h),
                        f"{d.score:.4f}",
                    ]
                )
                stats.crops += 1
            bar.advance()
    return rows, stats


def video_crops(
    videos: Sequence[Path],
    cache_dir: Path,
    sampling: FrameSampling,
    detector: PersonDetector,
    rules: CropRules,
    use_cache: bool = True,
    show_progress: bool = True,
) -> tuple[Path, list[dict[str, str]], list[CropStats]]:
    """Person crops of every video, each video's crops cached under ``cache_dir/<key>/``.

    Returns ``(root, manifest rows, stats per video)``: each row's ``path`` is relative to ``root``.
    Every video is opened first, and its first frame's size checked against the detector's window: a missing
    or unreadable video, or one too small to search, fails before any detection runs. A video with no
    detection is reported in the log and in its stats' notes.
    """
    infos = [probe_video(v) for v in videos]  # fail fast, before any long detection
    check_frame = getattr(detector, "check_frame", None)
    if check_frame is not None:
        for info in infos:
            try:
                check_frame(info.width, info.height)
            except FrameTooSmallError as e:
                raise FrameTooSmallError(f"the video {info.path}: {e}") from e
    cache_dir.mkdir(parents=True, exist_ok=True)
    all_rows: list[dict[str, str]] = []
    all_stats: list[CropStats] = []
    for info in infos:
        key = crops_key(video_digest(info.path), sampling, detector, rules)
        folder = cache_dir / f"{_slug(info.path.stem)}-{key}"
        manifest = folder / "manifest.csv"
        if use_cache and manifest.is_file():
            rows = _read_manifest(manifest)
            stats = CropStats(video=str(info.path), crops=len(rows), cached=True)
            log.info("%s: %d person crops from the cache (%s)", info.path, len(rows), folder)
        else:
            tmp = folder.with_name(f".{folder.name}.{os.getpid()}.tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            try:
                raw, stats = extract_video_crops(info, tmp, sampling, detector, rules, show_progress)
                raw = [
                    [r[0].replace(tmp.name, folder.name, 1), r[1].replace(tmp.name, folder.name, 1), *r[2:]]
                    for r in raw
                ]
                write_csv_atomic(tmp / "manifest.csv", [MANIFEST_COLUMNS, *raw])
                shutil.rmtree(folder, ignore_errors=True)
                os.replace(tmp, folder)  # a folder with a manifest is complete: a killed run leaves only .tmp
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            rows = [dict(zip(MANIFEST_COLUMNS, r, strict=True)) for r in raw]
            per_frame = 1000 * stats.detect_s / max(stats.frames_sampled, 1)
            log.info(
                "%s: %d frames, %d sampled, %d detections -> %d person crops (detection %.0f ms/frame)",
                info.path, stats.frames, stats.frames_sampled, stats.detections, stats.crops, per_frame,
            )  # fmt: skip
        if not rows:
            note = (
                f"no person detected in {info.path} ({stats.frames_sampled or 'its'} sampled frames): lower "
                f"data.crops.min_score or data.crops.min_height, sample more frames (data.fps), or check the video"
            )
            stats.notes.append(note)
            log.warning(note)
        all_rows += rows
        all_stats.append(stats)
    return cache_dir, all_rows, all_stats


def _read_manifest(path: Path) -> list[dict[str, str]]:
    rows = read_csv_rows(path)
    header = rows[0][1] if rows else []
    if header != MANIFEST_COLUMNS:
        raise ValueError(f"{path} is not a crops manifest (header {header}); delete its folder to re-extract")
    return [dict(zip(header, r, strict=True)) for _, r in rows[1:] if r]


def _slug(name: str) -> str:
    s = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
    return s[:40] or "video"
