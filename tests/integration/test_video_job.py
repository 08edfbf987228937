"""``data=video`` end to end on OpenCV's real pedestrian video: crops, manifest, near-duplicates, the numbered
sheet, Label Studio tasks and the embedding map in the job folder."""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
from omegaconf import DictConfig
from PIL import Image

from imgselect.io.artifacts import read_selection_csv
from imgselect.run.pipeline import run
from tests.conftest import run_command

VTEST = Path("/usr/share/doc/opencv-doc/examples/data/vtest.avi")
ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(not VTEST.is_file(), reason="opencv-doc's vtest.avi (make install) is missing")
def test_video_selection_job_writes_everything_a_labeler_needs(
    compose_cfg: Callable[..., DictConfig], tmp_path: Path
) -> None:
    overrides = [
        "data=video",
        f"data.path={VTEST}",
        "data.fps=null",
        "data.stride=40",  # 20 frames, 4 s apart: seconds of HOG
        "selector=typiclust",
        "embedding=pixels",
        "budget=8",
        "image_size=32",
        "embedding_map.method=tsne",
        "progress=none",
        "~classifier",
    ]
    run(compose_cfg(*overrides))
    out = tmp_path / "out"
    result = json.loads((out / "result.json").read_text())
    video = result["video"]["videos"][0]
    assert video["frames"] == 795 and video["frames_sampled"] == 20 and not video["cached"]
    n_crops = result["video"]["crops"]
    assert n_crops == result["pool_size"] > 8

    with (out / "manifest.csv").open() as f:
        manifest = list(csv.DictReader(f))
    assert len(manifest) == n_crops
    assert {int(r["frame"]) % 40 for r in manifest} == {0}
    for r in manifest[:5]:  # each crop is a file a person can open, with the box it came from
        with Image.open(r["path"]) as im:
            assert im.size == (int(r["w"]), int(r["h"]))

    assert result["dedup"]["method"] == "dhash"  # on by default for video
    assert result["dedup"]["kept"] + result["dedup"]["removed"] == n_crops
    chosen = read_selection_csv(out / "selection.csv")
    assert [int(r["tile"]) for r in chosen] == list(range(1, 9))
    assert {r["image_id"] for r in chosen} <= {r["path"] for r in manifest}
    tasks = json.loads((out / "label_studio" / "tasks.json").read_text())
    assert [t["data"]["content_hash"] for t in tasks] == [r["content_hash"] for r in chosen]
    assert (out / "label_studio" / "config.xml").read_text().count("<Choice ") == 2  # staff, customer
    assert result["embedding_map"]["method"] == "tsne"
    with Image.open(out / "embedding_map.png") as im:
        assert im.size[0] > 300
    with Image.open(out / "selection.png") as im:
        assert im.size[0] >= 3 * 64

    # the second job reads the crops from the cache: no frame decoded, the same pool
    run(compose_cfg(*overrides))
    again = json.loads((out / "result.json").read_text())
    assert again["video"]["videos"][0]["cached"] and again["pool_size"] == n_crops


def test_a_missing_video_fails_before_any_work(
    compose_cfg: Callable[..., DictConfig], tmp_path: Path
) -> None:
    # the settings check (or list_videos, behind it) names the missing file
    with pytest.raises(FileNotFoundError, match=r"nope\.mp4(: no such file| does not exist)"):
        run(compose_cfg("data=video", f"data.path={tmp_path / 'nope.mp4'}", "~classifier"))


def test_videos_that_crashed_opencv_fail_as_jobs_and_the_sweep_goes_on(tmp_path: Path) -> None:
    """Issue 20: a 48x48 video, vtest.avi at data.detector.resize=0.15 and a PNG renamed .mp4 each killed the
    process inside OpenCV (exit 139 / 134: no message, no error.json, every later job of the sweep lost)."""
    tiny = tmp_path / "tiny.avi"
    out = cv2.VideoWriter(str(tiny), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (48, 48))
    assert out.isOpened()
    for k in range(5):
        out.write(np.full((48, 48, 3), 40 * k, np.uint8))
    out.release()
    png = tmp_path / "photo.png"
    assert cv2.imwrite(str(png), np.full((16, 16, 3), 90, np.uint8))
    photo = png.rename(tmp_path / "photo.mp4")
    videos = [tiny, photo, *([VTEST] if VTEST.is_file() else [])]
    cmd = [
        sys.executable,
        str(ROOT / "train.py"),
        "-m",
        "data=video",
        "data.path=" + ",".join(str(v) for v in videos),  # one job per video
        "data.max_frames=3",
        "data.detector.resize=0.15",
        "~classifier",
        "progress=none",
        f"paths.log_dir={tmp_path / 'logs'}",
        f"paths.cache_dir={tmp_path / 'cache'}",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
    ]
    proc = run_command(cmd, tmp_path, {"OMP_NUM_THREADS": "1"})
    assert proc.returncode == 1, f"exit status {proc.returncode}:\n{proc.stderr[-3000:]}"  # not killed
    assert f"{len(videos)} job(s) failed" in proc.stderr
    errors = [json.loads(f.read_text()) for f in sorted((tmp_path / "sweep").glob("*/error.json"))]
    assert len(errors) == len(videos)
    by_video = {v.name: [e for e in errors if str(v) in e["message"]] for v in videos}
    [e] = by_video["tiny.avi"]
    assert e["type"] == "FrameTooSmallError" and "48x48" in e["message"]
    assert "data.detector.resize=2.67" in e["message"]
    [e] = by_video["photo.mp4"]
    assert e["type"] == "ValueError" and "is a PNG image, not a video" in e["message"]
    if VTEST.is_file():
        [e] = by_video["vtest.avi"]
        assert "768x576 pixels (115x86 after data.detector.resize=0.15)" in e["message"]
        assert "data.detector.resize=0.23" in e["message"]
