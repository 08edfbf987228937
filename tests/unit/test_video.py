"""Video -> person crops: sampling, detection rules, the manifest, the cache and clear errors."""

from __future__ import annotations

import csv
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from imgselect.video import (
    MANIFEST_COLUMNS,
    CropRules,
    Detection,
    FrameSampling,
    FrameTooSmallError,
    HogPeopleDetector,
    OnnxPersonDetector,
    list_videos,
    nms,
    parse_detections,
    probe_video,
    video_crops,
)

VTEST = Path("/usr/share/doc/opencv-doc/examples/data/vtest.avi")
needs_vtest = pytest.mark.skipif(
    not VTEST.is_file(), reason="opencv-doc's vtest.avi (make install) is missing"
)


def write_video(path: Path, frames: int = 12, size: tuple[int, int] = (160, 120), fps: float = 10.0) -> Path:
    """A small MJPG video whose frame k shows a white bar at x = 10 k."""
    w, h = size
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h))
    assert out.isOpened()
    for k in range(frames):
        frame = np.full((h, w, 3), 40, np.uint8)
        frame[20:100, 10 * k % (w - 30) : 10 * k % (w - 30) + 30] = 230
        out.write(frame)
    out.release()
    return path


class BarDetector:
    """Finds the white bar: one box per frame (a stand-in for a person detector), counting its calls."""

    name = "bar"

    def __init__(self) -> None:
        self.calls = 0

    def settings(self) -> dict[str, Any]:
        return {"kind": "bar"}

    def detect(self, frame: np.ndarray) -> list[Detection]:
        self.calls += 1
        cols = np.flatnonzero(frame[60, :, 0] > 128)
        if len(cols) == 0:
            return []
        return [Detection(int(cols[0]), 20, int(cols[-1] - cols[0] + 1), 80, 2.0)]


RULES = CropRules(min_height=16, min_aspect=0.1, max_aspect=1.0, min_score=0.5)

ISOLATED = """
import faulthandler, sys
faulthandler.enable()
from pathlib import Path
from imgselect.video import *
try:
    {call}
except ValueError as e:
    print(type(e).__name__, e)
    sys.exit(3)
"""


def run_isolated(call: str) -> str:
    """Run ``call`` (using :mod:`imgselect.video`) in a fresh interpreter, so a crash in OpenCV's native code
    fails the test instead of killing pytest; the ``ValueError`` it must raise, as ``"<type> <message>"``."""
    proc = subprocess.run(
        [sys.executable, "-c", ISOLATED.format(call=call)],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 3, (
        f"exit status {proc.returncode} (negative: killed by signal {-proc.returncode} in native code), "
        f"not a ValueError:\n{proc.stdout[-2000:]}{proc.stderr[-3000:]}"
    )
    return proc.stdout.strip()


def write_image_as(path: Path, ext: str, size: tuple[int, int] = (16, 16)) -> Path:
    """A still image in the format ``ext`` (".png", ".jpg", ...) saved under the name ``path``."""
    tmp = path.with_name(f"image{ext}")
    assert cv2.imwrite(str(tmp), np.full((size[1], size[0], 3), 90, np.uint8))
    tmp.rename(path)
    return path


class TestSampling:
    def test_fps_sets_the_step_from_the_videos_rate(self) -> None:
        assert FrameSampling(fps=2.0).step(10.0) == 5
        assert FrameSampling(fps=None, stride=3).step(10.0) == 3
        assert FrameSampling(fps=100.0).step(10.0) == 1

    @pytest.mark.parametrize(
        ("kwargs", "match"),
        [({"fps": 0}, r"data\.fps=0 must be positive"), ({"fps": None, "stride": 0}, r"data\.stride=0")],
    )
    def test_bad_settings_are_named(self, kwargs: dict[str, Any], match: str) -> None:
        with pytest.raises(ValueError, match=match):
            FrameSampling(**kwargs)


class TestRules:
    def test_nms_keeps_the_best_of_overlapping_boxes(self) -> None:
        a, b, c = (
            Detection(0, 0, 50, 100, 1.0),
            Detection(5, 5, 50, 100, 2.0),
            Detection(200, 0, 50, 100, 0.7),
        )
        assert nms([a, b, c], 0.4) == [b, c]
        assert len(nms([a, b, c], 1.0)) == 3

    def test_score_height_and_aspect_filter_boxes(self) -> None:
        rules = CropRules(min_score=0.5, min_height=64, min_aspect=0.2, max_aspect=1.0)
        kept = rules.keep(
            [
                Detection(0, 0, 40, 100, 1.0),  # kept
                Detection(100, 0, 40, 100, 0.2),  # low score
                Detection(200, 0, 20, 40, 1.0),  # too short
                Detection(300, 0, 150, 100, 1.0),  # wider than tall
            ]
        )
        assert [d.x for d in kept] == [0]

    def test_ssd_and_yolo_outputs_give_person_boxes_in_frame_pixels(self) -> None:
        ssd = np.zeros((1, 1, 2, 7), np.float32)
        ssd[0, 0, 0] = [0, 1, 0.9, 0.1, 0.2, 0.3, 0.8]  # a person (class 1 in MobileNet-SSD's COCO labels)
        ssd[0, 0, 1] = [0, 3, 0.9, 0.5, 0.5, 0.6, 0.6]  # a car
        [d] = parse_detections(ssd, 200, 100, 300, person_class=1, confidence=0.5)
        assert (d.x, d.y, d.w, d.h) == (20, 20, 40, 60)
        v5 = np.zeros((1, 20, 7), np.float32)  # cx, cy, w, h, objectness, person, other (18 empty rows)
        v5[0, 0] = [320, 320, 64, 128, 0.9, 0.9, 0.1]
        v5[0, 1] = [100, 100, 10, 10, 0.9, 0.1, 0.9]
        [d] = parse_detections(v5, 1280, 640, 640, person_class=0, confidence=0.5)
        assert (d.x, d.y, d.w, d.h) == (576, 256, 128, 128)
        v8 = np.transpose(np.delete(v5, 4, axis=2), (0, 2, 1))  # (1, 4 + C, N), no objectness
        v8[0, 4, 0] = 0.9  # the person's class score alone
        [d] = parse_detections(v8, 1280, 640, 640, person_class=0, confidence=0.5)
        assert (d.x, d.y, d.w, d.h) == (576, 256, 128, 128)


class TestErrors:
    def test_missing_video_and_empty_folder_are_named(self, tmp_path: Path) -> None:
        with pytest.raises(FileNotFoundError, match=r"video .*nope\.mp4 does not exist"):
            list_videos(str(tmp_path / "nope.mp4"))
        with pytest.raises(FileNotFoundError, match=r"no video files .* under the folder"):
            list_videos(str(tmp_path))

    def test_a_file_that_is_no_video_fails_before_any_detection(self, tmp_path: Path) -> None:
        bad = tmp_path / "broken.mp4"
        bad.write_bytes(b"not a video at all" * 100)
        good = write_video(tmp_path / "good.avi")
        detector = BarDetector()
        with pytest.raises(ValueError, match=r"broken\.mp4"):
            video_crops([good, bad], tmp_path / "cache", FrameSampling(fps=None, stride=1), detector, RULES)
        assert detector.calls == 0

    @pytest.mark.parametrize("kind", ["text", "empty", "truncated"])
    def test_a_text_empty_or_truncated_file_is_refused_naming_it(self, tmp_path: Path, kind: str) -> None:
        bad = tmp_path / f"{kind}.mp4"
        if kind == "text":
            bad.write_text("hello\n" * 100)
        elif kind == "empty":
            bad.touch()
        else:
            real = tmp_path / "real.mp4"
            out = cv2.VideoWriter(str(real), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (64, 128))
            assert out.isOpened()
            for k in range(10):
                out.write(np.full((128, 64, 3), 20 * k, np.uint8))
            out.release()
            data = real.read_bytes()
            bad.write_bytes(data[: len(data) // 2])  # the index (moov atom) is written last: now missing
        with pytest.raises(ValueError, match=rf"cannot open the video .*{kind}\.mp4"):
            probe_video(bad)

    @pytest.mark.parametrize("ext", [".png", ".jpg", ".bmp", ".tiff", ".webp"])
    def test_an_image_renamed_as_a_video_is_refused_naming_it(self, tmp_path: Path, ext: str) -> None:
        # OpenCV opens it as a one-frame video; HOG on a small one was a "double free" (issue 20)
        bad = write_image_as(tmp_path / "photo.mp4", ext)
        with pytest.raises(ValueError, match=r"photo\.mp4 is a \w+ image, not a video.*data=folder"):
            probe_video(bad)

    def test_a_raw_mjpeg_stream_is_a_video_though_it_starts_as_a_jpeg(self, tmp_path: Path) -> None:
        path = tmp_path / "cam.mjpeg"
        out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (64, 128))
        assert out.isOpened()
        for k in range(4):
            out.write(np.full((128, 64, 3), 40 * k, np.uint8))
        out.release()
        info = probe_video(path)
        assert (info.width, info.height) == (64, 128) and info.frames >= 0  # FFmpeg's unknown count: 0

    def test_the_suggested_conversion_writes_a_new_file_and_quotes_paths(self, tmp_path: Path) -> None:
        bad = tmp_path / "my clip.avi"
        bad.write_bytes(b"\x00garbage" * 100)
        with pytest.raises(ValueError, match=r"my clip\.avi") as e:
            probe_video(bad)
        command = shlex.split(str(e.value).split("convert it: ", 1)[1])
        assert command[:3] == ["ffmpeg", "-i", str(bad)]  # one argument, space and all
        assert command[-1] == str(tmp_path / "my clip.mjpeg.avi")  # not onto its own input

    @pytest.mark.parametrize(
        ("size", "resize", "match"),
        [
            (
                (768, 576),
                0.15,
                r"768x576 pixels \(115x86 after data\.detector\.resize=0\.15\).*resize=0\.23 or",
            ),
            (
                (48, 48),
                1.0,
                r"48x48 pixels are smaller .*64x128 window.*data\.detector\.resize=2\.67 or more",
            ),
            ((10, 10), 1.0, r"even the largest data\.detector\.resize=4 is not enough: use a larger video"),
        ],
    )
    def test_hog_refuses_frames_smaller_than_its_window_and_says_which_resize_works(
        self, size: tuple[int, int], resize: float, match: str
    ) -> None:
        with pytest.raises(FrameTooSmallError, match=match):
            HogPeopleDetector(resize=resize).check_frame(*size)
        HogPeopleDetector().check_frame(64, 128)  # exactly the window: searched
        HogPeopleDetector(resize=0.23).check_frame(768, 576)  # the resize the message suggests

    @pytest.mark.parametrize(
        ("case", "match"),
        [
            ("tiny", r"FrameTooSmallError the video .*tiny\.avi: frames of 48x48 pixels .*resize=2\.67"),
            ("resized", r"FrameTooSmallError the video .*shop\.avi: frames of 320x240 pixels \(48x36 after"),
            ("png", r"ValueError .*photo\.mp4 is a PNG image, not a video"),
        ],
    )
    def test_videos_that_crashed_opencv_fail_with_a_python_error_before_detection(
        self, tmp_path: Path, case: str, match: str
    ) -> None:
        # issue 20: a 48x48 video (exit 139), vtest.avi at data.detector.resize=0.15 (139), a PNG renamed
        # .mp4 ("double free", 134): each a frame smaller than HOG's window inside detectMultiScale
        if case == "tiny":
            video, resize = write_video(tmp_path / "tiny.avi", frames=3, size=(48, 48)), 1.0
        elif case == "resized":
            video, resize = write_video(tmp_path / "shop.avi", frames=3, size=(320, 240)), 0.15
        else:
            video, resize = write_image_as(tmp_path / "photo.mp4", ".png"), 1.0
        cache = tmp_path / "cache"
        out = run_isolated(
            f"video_crops([Path({str(video)!r})], Path({str(cache)!r}), FrameSampling(fps=None, stride=1), "
            f"HogPeopleDetector(resize={resize}), CropRules(), show_progress=False)"
        )
        assert re.search(match, out), out
        assert not cache.exists()  # refused before any detection (the cache folder is made just before)

    def test_every_frame_is_checked_not_only_the_first(self, tmp_path: Path) -> None:
        video = write_video(tmp_path / "tiny.avi", frames=3, size=(48, 48))
        # a first frame that passed the check, then smaller frames: the detector refuses them itself
        out = run_isolated(
            f"extract_video_crops(VideoInfo(Path({str(video)!r}), 3, 10.0, 640, 480), Path({str(tmp_path)!r}), "
            f"FrameSampling(fps=None, stride=1), HogPeopleDetector(), CropRules(), show_progress=False)"
        )
        assert re.search(r"FrameTooSmallError the video .*tiny\.avi, frame 0: frames of 48x48 pixels", out), (
            out
        )

    def test_onnx_detector_needs_a_local_file(self, tmp_path: Path) -> None:
        with pytest.raises(
            FileNotFoundError, match=r"data\.detector\.model=.*no such file.*nothing is downloaded"
        ):
            OnnxPersonDetector(str(tmp_path / "yolo.onnx"))

    def test_a_video_without_people_says_so(self, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
        video = write_video(tmp_path / "v.avi", frames=4)

        class Nobody(BarDetector):
            def detect(self, frame: np.ndarray) -> list[Detection]:
                return []

        _, rows, stats = video_crops(
            [video], tmp_path / "c", FrameSampling(fps=None, stride=1), Nobody(), RULES
        )
        assert rows == []
        assert "no person detected in" in stats[0].notes[0]
        assert "no person detected" in caplog.text


class TestCrops:
    def test_crops_manifest_and_cache(self, tmp_path: Path) -> None:
        video = write_video(tmp_path / "shop.avi", frames=12)
        detector = BarDetector()
        sampling = FrameSampling(fps=None, stride=3)
        root, rows, stats = video_crops(
            [video], tmp_path / "cache", sampling, detector, RULES, show_progress=False
        )
        assert [int(r["frame"]) for r in rows] == [0, 3, 6, 9]  # every 3rd frame, one person each
        assert detector.calls == 4 and stats[0].frames == 12 and stats[0].crops == 4
        for r in rows:
            crop = cv2.imread(str(root / r["path"]))
            assert crop.shape[:2] == (int(r["h"]), int(r["w"]))  # the file is the box
            assert crop[40, int(r["w"]) // 2, 0] > 128  # and shows the bar
            assert float(r["time_s"]) == pytest.approx(int(r["frame"]) / 10.0)
        manifest = next((tmp_path / "cache").glob("shop-*/manifest.csv"))
        with manifest.open() as f:
            assert next(csv.reader(f)) == MANIFEST_COLUMNS

        again = BarDetector()  # same video and settings: read from the cache, nothing detected again
        _, rows2, stats2 = video_crops([video], tmp_path / "cache", sampling, again, RULES)
        assert again.calls == 0 and stats2[0].cached and rows2 == rows

        moved = tmp_path / "moved.avi"  # the cache follows the video's content, not its name
        video.rename(moved)
        _, rows3, _ = video_crops([moved], tmp_path / "cache", sampling, again, RULES)
        assert again.calls == 4 and len(rows3) == 4  # a new name: a new folder (the slug), same crops
        other = BarDetector()
        video_crops([moved], tmp_path / "cache", FrameSampling(fps=None, stride=2), other, RULES)
        assert other.calls == 6  # another setting: extracted anew

    def test_max_frames_bounds_the_work(self, tmp_path: Path) -> None:
        video = write_video(tmp_path / "v.avi", frames=12)
        detector = BarDetector()
        video_crops([video], tmp_path / "c", FrameSampling(fps=None, stride=1, max_frames=5), detector, RULES)
        assert detector.calls == 5

    def test_probe_reads_size_and_rate(self, tmp_path: Path) -> None:
        info = probe_video(write_video(tmp_path / "v.avi", frames=5, size=(160, 120), fps=10.0))
        assert (info.width, info.height, info.frames) == (160, 120, 5)
        assert info.fps == pytest.approx(10.0)

    @needs_vtest
    def test_hog_finds_people_in_the_sample_video(self, tmp_path: Path) -> None:
        _, rows, stats = video_crops(
            [VTEST],
            tmp_path / "c",
            FrameSampling(fps=None, stride=100, max_frames=2),
            HogPeopleDetector(),
            CropRules(),
        )
        assert stats[0].frames_sampled == 2 and len(rows) >= 2  # a busy pedestrian scene
        assert all(int(r["h"]) >= 64 and float(r["score"]) >= 0.5 for r in rows)
