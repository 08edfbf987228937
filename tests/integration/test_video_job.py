"""``data=video`` end to end on OpenCV's real pedestrian video: crops, manifest, near-duplicates, the numbered
sheet, Label Studio tasks and the embedding map in the job folder."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from omegaconf import DictConfig
from PIL import Image

from imgselect.artifacts import read_selection_csv
from imgselect.pipeline import run

VTEST = Path("/usr/share/doc/opencv-doc/examples/data/vtest.avi")


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
    with pytest.raises(FileNotFoundError, match=r"video .*nope\.mp4 does not exist"):
        run(compose_cfg("data=video", f"data.path={tmp_path / 'nope.mp4'}", "~classifier"))
