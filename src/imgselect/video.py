"""Video -> frames -> person crops: the paper's pool (security video, a person detector cropping the people).

Frames are sampled at a chosen ``fps`` (or every ``stride``-th frame), people are found by OpenCV's HOG
people detector (default; no weights to download) or by a local ONNX detector file through OpenCV's DNN
module, and each person is cropped and written once as an image file with one ``manifest.csv`` row
(crop id, video, frame, time, box, score), so a person can open any crop and find where it came from.

Crops are cached per video and settings (:func:`crops_key`): a sweep, a re-run or a second video added to
a folder decodes each video once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shlex
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np

from imgselect.artifacts import write_csv_atomic
from imgselect.cache import sha256_file
from imgselect.csvfiles import read_csv_rows
from imgselect.progress import Progress

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".avi", ".mp4", ".mov", ".mkv", ".mpg", ".mpeg", ".m4v", ".webm", ".wmv", ".ts")
MANIFEST_COLUMNS = ["crop_id", "path", "video", "frame", "time_s", "x", "y", "w", "h", "score"]
CROPS_VERSION = 1  # bump when the crops a given setting writes change


@dataclass(frozen=True)
class Detection:
    """One person box in frame pixels: top-left ``(x, y)``, size ``(w, h)`` and the detector's score."""

    x: int
    y: int
    w: int
    h: int
    score: float


class FrameTooSmallError(ValueError):
    """Frames smaller than the detector's search window (OpenCV's HOG reads and writes past such an image and
    kills the process: a segmentation fault or ``double free``, no Python error)."""


class PersonDetector(Protocol):
    """Finds people in a BGR frame (``(h, w, 3)`` uint8, as OpenCV decodes it).

    A detector that cannot search small frames also has ``check_frame(width, height)``, raising
    :class:`FrameTooSmallError` for frames it refuses; :func:`video_crops` calls it on each video's first
    frame before any detection, and :func:`extract_video_crops` names the video when ``detect`` raises it.
    """

    name: str

    def detect(self, frame: np.ndarray) -> list[Detection]: ...

    def settings(self) -> dict[str, Any]:
        """Everything that changes its boxes (part of the crops' cache key)."""
        ...


def iou(a: Detection, b: Detection) -> float:
    """Intersection over union of two boxes."""
    w = min(a.x + a.w, b.x + b.w) - max(a.x, b.x)
    h = min(a.y + a.h, b.y + b.h) - max(a.y, b.y)
    inter = max(w, 0) * max(h, 0)
    union = a.w * a.h + b.w * b.h - inter
    return inter / union if union > 0 else 0.0


def nms(dets: Sequence[Detection], max_iou: float) -> list[Detection]:
    """Non-maximum suppression: of boxes overlapping more than ``max_iou``, the highest-scoring one is kept."""
    kept: list[Detection] = []
    for d in sorted(dets, key=lambda d: -d.score):
        if all(iou(d, k) <= max_iou for k in kept):
            kept.append(d)
    return kept


class HogPeopleDetector:
    """OpenCV's HOG + linear SVM people detector (Dalal & Triggs), built into OpenCV: no weights to download.

    Args:
        hit_threshold: SVM margin a window needs (OpenCV's ``hitThreshold``; raise it for fewer, surer boxes).
        win_stride: window step in pixels (8: the usual; 4 finds more, ~4x slower).
        padding: padding added around the image in pixels.
        scale: step between image-pyramid levels (1.05: fine, slow; 1.2: coarse, ~3x faster).
        resize: frames are scaled by this factor first (0.5: ~4x faster, finds only people ≥ ~256 px tall).
    """

    name = "hog"

    def __init__(
        self,
        hit_threshold: float = 0.0,
        win_stride: int = 8,
        padding: int = 8,
        scale: float = 1.05,
        resize: float = 1.0,
    ) -> None:
        if scale <= 1.0:
            raise ValueError(f"data.detector.scale={scale} must be above 1 (the image pyramid's step)")
        if not 0.1 <= resize <= 4.0:
            raise ValueError(f"data.detector.resize={resize} must be between 0.1 and 4")
        if not hasattr(cv2, "HOGDescriptor"):
            raise RuntimeError(
                f"OpenCV {cv2.__version__} has no HOGDescriptor (OpenCV 5 dropped it): install "
                f"opencv-python-headless<5, or use data.detector.kind=onnx with a local model file"
            )
        self.hit_threshold, self.win_stride, self.padding = hit_threshold, win_stride, padding
        self.scale, self.resize = scale, resize
        self._hog = cv2.HOGDescriptor()
        self._hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())  # type: ignore[attr-defined]

    def settings(self) -> dict[str, Any]:
        return {
            "kind": "hog",
            "hit_threshold": self.hit_threshold,
            "win_stride": self.win_stride,
            "padding": self.padding,
            "scale": self.scale,
            "resize": self.resize,
        }

    @property
    def window(self) -> tuple[int, int]:
        """The detection window ``(width, height)``: 64 x 128 for OpenCV's default people detector."""
        w, h = self._hog.winSize
        return int(w), int(h)

    def check_frame(self, width: int, height: int) -> None:
        """Raise :class:`FrameTooSmallError` unless a ``width`` x ``height`` frame, scaled by ``resize``, holds
        the detection window (a smaller image crashes OpenCV's detectMultiScale in native code)."""
        # cv2.resize rounds the scaled size to the nearest integer, as round() does here
        self._check_scaled(width, height, round(width * self.resize), round(height * self.resize))

    def _check_scaled(self, width: int, height: int, scaled_w: int, scaled_h: int) -> None:
        win_w, win_h = self.window
        if scaled_w >= win_w and scaled_h >= win_h:
            return
        # the smallest resize (to 2 decimals, rounded up) that makes both sides at least the window's
        need = math.ceil(max(win_w / width, win_h / height) * 100 - 1e-9) / 100
        if need <= 4.0:
            fix = f"set data.detector.resize={need:g} or more"
        else:
            fix = (
                "even the largest data.detector.resize=4 is not enough: use a larger video, or "
                "data.detector.kind=onnx (a local detector file; it takes any frame size)"
            )
        scaled = (
            f" ({scaled_w}x{scaled_h} after data.detector.resize={self.resize:g})" if self.resize != 1 else ""
        )
        raise FrameTooSmallError(
            f"frames of {width}x{height} pixels{scaled} are smaller than the HOG people detector's "
            f"{win_w}x{win_h} window (OpenCV crashes on such frames): {fix}"
        )

    def detect(self, frame: np.ndarray) -> list[Detection]:
        img = frame if self.resize == 1.0 else cv2.resize(frame, None, fx=self.resize, fy=self.resize)
        # checked on the image actually searched: no frame smaller than the window ever reaches OpenCV
        self._check_scaled(frame.shape[1], frame.shape[0], img.shape[1], img.shape[0])
        rects, weights = self._hog.detectMultiScale(
            img,
            hitThreshold=self.hit_threshold,
            winStride=(self.win_stride, self.win_stride),
            padding=(self.padding, self.padding),
            scale=self.scale,
        )
        f = 1.0 / self.resize
        return [
            Detection(round(x * f), round(y * f), round(w * f), round(h * f), float(s))
            for (x, y, w, h), s in zip(
                np.asarray(rects).reshape(-1, 4), np.asarray(weights).reshape(-1), strict=True
            )
        ]


class OnnxPersonDetector:
    """A local ONNX (or any OpenCV-DNN-readable) detector file; nothing is downloaded.

    Two output layouts are understood, chosen by the output's shape:

    - SSD (``(1, 1, N, 7)``: image id, class id, confidence, x1, y1, x2, y2 in 0..1), e.g. MobileNet-SSD;
    - YOLO (``(1, N, 5 + C)`` with centre x, centre y, w, h, objectness, class scores, as YOLOv5 writes it,
      or ``(1, 4 + C, N)`` without objectness, as YOLOv8 writes it), in input pixels.

    Args:
        model: path of the model file.
        input_size: side of the square input the model expects.
        person_class: class index of "person" in the model's classes (COCO: 0 for YOLO, 1 for SSD).
        confidence: minimum score of a box.
        swap_rb: feed RGB instead of OpenCV's BGR (most exported models want RGB).
        scale: pixel scale factor (1/255 for YOLO; SSD models often use 1/127.5 with ``mean``).
        mean: value subtracted from each pixel before scaling.
    """

    name = "onnx"

    def __init__(
        self,
        model: str,
        input_size: int = 640,
        person_class: int = 0,
        confidence: float = 0.4,
        swap_rb: bool = True,
        scale: float = 1 / 255,
        mean: float = 0.0,
    ) -> None:
        path = Path(model)
        if not path.is_file():
            raise FileNotFoundError(
                f"data.detector.model={model}: no such file. Give a local ONNX detector file (nothing is "
                f"downloaded), or use the built-in HOG people detector: data.detector.kind=hog"
            )
        try:
            self._net = cv2.dnn.readNet(str(path))
        except cv2.error as e:
            raise ValueError(f"OpenCV could not read the detector {path}: {e}") from e
        self.model, self.input_size, self.person_class = path, input_size, person_class
        self.confidence, self.swap_rb, self.scale, self.mean = confidence, swap_rb, scale, mean
        self._digest = sha256_file(path)[:16]

    def settings(self) -> dict[str, Any]:
        return {
            "kind": "onnx",
            "model_sha256": self._digest,
            "input_size": self.input_size,
            "person_class": self.person_class,
            "confidence": self.confidence,
            "swap_rb": self.swap_rb,
            "scale": self.scale,
            "mean": self.mean,
        }

    def detect(self, frame: np.ndarray) -> list[Detection]:
        fh, fw = frame.shape[:2]
        s = self.input_size
        blob = cv2.dnn.blobFromImage(
            frame, self.scale, (s, s), (self.mean, self.mean, self.mean), swapRB=self.swap_rb, crop=False
        )
        self._net.setInput(blob)
        out = np.asarray(self._net.forward(), dtype=np.float32)
        return parse_detections(out, fw, fh, s, self.person_class, self.confidence)


def parse_detections(
    out: np.ndarray, frame_w: int, frame_h: int, input_size: int, person_class: int, confidence: float
) -> list[Detection]:
    """Person boxes in frame pixels from an SSD or YOLO output (see :class:`OnnxPersonDetector`)."""
    if out.ndim == 4 and out.shape[-1] == 7:  # SSD
        rows = out.reshape(-1, 7)
        rows = rows[(rows[:, 1] == person_class) & (rows[:, 2] >= confidence)]
        dets = []
        for r in rows:
            x1, y1 = r[3] * frame_w, r[4] * frame_h
            x2, y2 = r[5] * frame_w, r[6] * frame_h
            dets.append(Detection(round(x1), round(y1), round(x2 - x1), round(y2 - y1), float(r[2])))
        return dets
    if out.ndim != 3:
        raise ValueError(
            f"detector output of shape {out.shape} is neither SSD (1, 1, N, 7) nor YOLO (1, N, 5+C) / (1, 4+C, N)"
        )
    a = out[0]
    if a.shape[0] < a.shape[1] and a.shape[0] >= 5:  # YOLOv8: (4 + C, N)
        a = a.T
        boxes, scores = a[:, :4], a[:, 4 + person_class]
    else:  # YOLOv5: (N, 5 + C)
        if a.shape[1] <= 5 + person_class:
            raise ValueError(f"detector output {out.shape} has no class {person_class}")
        boxes, scores = a[:, :4], a[:, 4] * a[:, 5 + person_class]
    keep = scores >= confidence
    sx, sy = frame_w / input_size, frame_h / input_size
    return [
        Detection(round((cx - w / 2) * sx), round((cy - h / 2) * sy), round(w * sx), round(h * sy), float(sc))
        for (cx, cy, w, h), sc in zip(boxes[keep], scores[keep], strict=True)
    ]


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


@dataclass(frozen=True)
class FrameSampling:
    """Which frames are looked at: ``fps`` per second of video, or every ``stride``-th frame (``fps`` wins
    when both are set); at most ``max_frames`` per video (``None``: all)."""

    fps: float | None = 2.0
    stride: int | None = None
    max_frames: int | None = None

    def __post_init__(self) -> None:
        if self.fps is not None and self.fps <= 0:
            raise ValueError(f"data.fps={self.fps} must be positive (or null, then data.stride is used)")
        if self.stride is not None and self.stride < 1:
            raise ValueError(f"data.stride={self.stride} must be 1 or more")
        if self.max_frames is not None and self.max_frames < 1:
            raise ValueError(f"data.max_frames={self.max_frames} must be 1 or more (or null: every frame)")

    def step(self, video_fps: float) -> int:
        if self.fps is not None:
            return max(1, round((video_fps if video_fps > 0 else 25.0) / self.fps))
        return self.stride or 1


@dataclass
class VideoInfo:
    path: Path
    frames: int
    fps: float
    width: int
    height: int


def list_videos(paths: str | Path | Sequence[str | Path]) -> list[Path]:
    """The video files named: each file as given, each folder searched recursively by suffix."""
    items = [paths] if isinstance(paths, str | Path) else list(paths)
    if not items:
        raise ValueError("data.path is empty: give a video file, a list of them, or a folder of videos")
    out: list[Path] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in VIDEO_SUFFIXES)
            if not found:
                raise FileNotFoundError(f"no video files ({', '.join(VIDEO_SUFFIXES)}) under the folder {p}")
            out += found
        elif p.is_file():
            out.append(p)
        else:
            raise FileNotFoundError(f"data.path: video {p} does not exist")
    return out


# Still-image formats by their first bytes. OpenCV's FFmpeg backend opens such a file as a one-frame "video"
# whatever its name, so a photo renamed .mp4 would be searched as a video.
IMAGE_SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
)
MJPEG_SUFFIXES = (".mjpeg", ".mjpg")  # a raw Motion-JPEG stream is a video that starts as a JPEG does


def image_format(path: Path) -> str | None:
    """The still-image format ``path`` holds by its first bytes (``"PNG"``, ``"JPEG"``, ...), or ``None``."""
    with path.open("rb") as f:
        head = f.read(12)
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WebP"
    for magic, name in IMAGE_SIGNATURES:
        if head.startswith(magic):
            return None if name == "JPEG" and path.suffix.lower() in MJPEG_SUFFIXES else name
    return None


def convert_command(path: Path) -> str:
    """A shell command that re-encodes ``path`` as Motion-JPEG AVI (which every OpenCV build reads) into a new
    file beside it: never onto its own input, which ffmpeg would destroy while reading it."""
    out = path.with_name(f"{path.stem}.mjpeg.avi")
    return f"ffmpeg -i {shlex.quote(str(path))} -c:v mjpeg -q:v 3 {shlex.quote(str(out))}"


def probe_video(path: Path) -> VideoInfo:
    """Open ``path`` and read its first frame, or raise ``ValueError`` naming the file."""
    kind = image_format(path)
    if kind is not None:
        raise ValueError(
            f"{path} is a {kind} image, not a video (whatever its name says): give video files in data.path, "
            f"or for a folder of images use data=folder data.pool_dir=<folder>"
        )
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise ValueError(
                f"OpenCV cannot open the video {path} (not a video, truncated, or a codec this OpenCV build "
                f"lacks); if it plays elsewhere, convert it: {convert_command(path)}"
            )
        ok, frame = cap.read()
        if not ok or frame is None:
            raise ValueError(f"the video {path} opens but no frame can be decoded from it (empty or corrupt)")
        frames = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        return VideoInfo(
            path=path,
            frames=max(frames, 0),  # FFmpeg gives a negative count when the container does not say
            fps=float(cap.get(cv2.CAP_PROP_FPS) or 0.0),
            width=frame.shape[1],
            height=frame.shape[0],
        )
    finally:
        cap.release()


def video_digest(path: Path, chunks: int = 16, chunk_size: int = 1 << 20) -> str:
    """A content digest of a video: its size and ``chunks`` slices spread over the file (a moved or
    renamed video keeps its crops; an edited one gets new ones). Reads at most ``chunks`` MiB."""
    size = path.stat().st_size
    h = hashlib.sha256(str(size).encode())
    with path.open("rb") as f:
        if size <= chunks * chunk_size:
            h.update(f.read())
        else:
            for k in range(chunks):
                f.seek(k * (size - chunk_size) // (chunks - 1))
                h.update(f.read(chunk_size))
    return h.hexdigest()[:16]


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


@dataclass
class CropStats:
    """What one video gave, for the log, ``result.json`` and the benchmarks."""

    video: str
    frames: int = 0
    frames_sampled: int = 0
    detections: int = 0
    crops: int = 0
    decode_s: float = 0.0
    detect_s: float = 0.0
    cached: bool = False
    notes: list[str] = field(default_factory=list)


def sampled_frames(
    path: Path, sampling: FrameSampling, stats: CropStats
) -> Iterator[tuple[int, float, np.ndarray]]:
    """``(frame index, time in seconds, BGR frame)`` of the sampled frames; skipped frames are only grabbed
    (not decoded to pixels), so a stride costs little."""
    cap = cv2.VideoCapture(str(path))
    try:
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        step = sampling.step(fps)
        index = 0
        t0 = time.perf_counter()
        while sampling.max_frames is None or stats.frames_sampled < sampling.max_frames:
            if not cap.grab():
                break
            if index % step == 0:
                ok, frame = cap.retrieve()
                if ok and frame is not None:
                    stats.frames_sampled += 1
                    stats.decode_s += time.perf_counter() - t0
                    yield index, (index / fps if fps > 0 else float("nan")), frame
                    t0 = time.perf_counter()
            index += 1
        stats.decode_s += time.perf_counter() - t0
        stats.frames = index
    finally:
        cap.release()


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
