"""Person detectors: OpenCV's HOG people detector (the default; no weights to download) or a local ONNX
detector file through OpenCV's DNN module, and the non-maximum suppression of their boxes."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np

from imgselect.io.cache import sha256_file

log = logging.getLogger(__name__)


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
