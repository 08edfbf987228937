"""Videos and their frames: listing the videos of a path, probing and fingerprinting a file, and sampling frames
at a chosen ``fps`` (or every ``stride``-th frame)."""

from __future__ import annotations

import hashlib
import logging
import shlex
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".avi", ".mp4", ".mov", ".mkv", ".mpg", ".mpeg", ".m4v", ".webm", ".wmv", ".ts")


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
