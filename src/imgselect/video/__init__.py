"""Video -> frames -> person crops: the paper's pool (security video, a person detector cropping the people).

:mod:`~imgselect.video.decode` lists videos and samples their frames; :mod:`~imgselect.video.detect` finds the
people (OpenCV's HOG people detector by default, or a local ONNX detector file); :mod:`~imgselect.video.crops`
cuts each person once into an image file with a ``manifest.csv`` row, cached per video and settings. The names
below are the package's public API.
"""

from imgselect.video.crops import MANIFEST_COLUMNS, CropRules, crops_key, extract_video_crops, video_crops
from imgselect.video.decode import (
    VIDEO_SUFFIXES,
    CropStats,
    FrameSampling,
    VideoInfo,
    list_videos,
    probe_video,
    sampled_frames,
    video_digest,
)
from imgselect.video.detect import (
    Detection,
    FrameTooSmallError,
    HogPeopleDetector,
    OnnxPersonDetector,
    PersonDetector,
    iou,
    nms,
    parse_detections,
)

__all__ = [
    "MANIFEST_COLUMNS",
    "VIDEO_SUFFIXES",
    "CropRules",
    "CropStats",
    "Detection",
    "FrameSampling",
    "FrameTooSmallError",
    "HogPeopleDetector",
    "OnnxPersonDetector",
    "PersonDetector",
    "VideoInfo",
    "crops_key",
    "extract_video_crops",
    "iou",
    "list_videos",
    "nms",
    "parse_detections",
    "probe_video",
    "sampled_frames",
    "video_crops",
    "video_digest",
]
