"""Video -> person crops on a real video: frames, crops, near-duplicates, and where the time goes.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/video_crops.py \\
        --video /usr/share/doc/opencv-doc/examples/data/vtest.avi --out benchmarks/results/video_crops.json

For each sampling rate (every frame, and the default 2 per second) it measures OpenCV's own decode rate (every
frame decoded, nothing else), then the extraction as ``data=video`` runs it (decode + HOG people detector +
crop files, single-threaded OpenCV, no cache), then the near-duplicate removal at several ``max_bits``.

Near-duplicate quality, without labels: a removed crop and its representative are called *same place* when
they come from frames at most 2 s apart and their boxes overlap (IoU >= 0.3) — almost surely the same person
standing or walking. Pairs that are neither close in time nor overlapping may be the same person seen again
later (harmless) or two people who look alike at 8x9 pixels (a crop the selection can no longer offer).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

from datamodules.images import load_image_files  # noqa: E402
from imgselect.selection.dedup import dhash, near_duplicates  # noqa: E402
from imgselect.video import (  # noqa: E402
    CropRules,
    Detection,
    FrameSampling,
    HogPeopleDetector,
    iou,
    list_videos,
    video_crops,
)


def decode_rate(video: Path) -> dict[str, float]:
    """Every frame decoded by OpenCV and nothing else: the floor of any frame-based pipeline."""
    cap = cv2.VideoCapture(str(video))
    n, t0 = 0, time.perf_counter()
    while True:
        ok, _ = cap.read()
        if not ok:
            break
        n += 1
    s = time.perf_counter() - t0
    cap.release()
    return {
        "frames": n,
        "seconds": round(s, 3),
        "frames_per_s": round(n / s, 1),
        "ms_per_frame": round(1000 * s / n, 3),
    }


def one_rate(video: Path, sampling: FrameSampling, bits: list[int]) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        root, rows, [stats] = video_crops(
            [video],
            Path(tmp),
            sampling,
            HogPeopleDetector(),
            CropRules(),
            use_cache=False,
            show_progress=False,
        )
        wall = time.perf_counter() - t0
        files = [root / r["path"] for r in rows]
        images = load_image_files(files, 64, 1, "crops").images
        t1 = time.perf_counter()
        hashes = dhash(images)
        hash_s = time.perf_counter() - t1
    box = [Detection(int(r["x"]), int(r["y"]), int(r["w"]), int(r["h"]), 0.0) for r in rows]
    times = np.array([float(r["time_s"]) for r in rows])
    dedup = {}
    for b in bits:
        found = near_duplicates(hashes, "dhash", max_bits=b)
        removed = found.removed_indices()
        same_place = sum(
            1
            for i in removed
            if abs(times[i] - times[found.representative[i]]) <= 2.0
            and iou(box[i], box[found.representative[i]]) >= 0.3
        )
        dedup[str(b)] = {
            "removed": int(found.removed),
            "kept": len(found.keep),
            "removed_same_place": same_place,
            "removed_elsewhere": int(found.removed) - same_place,
        }
    n = stats.frames_sampled
    return {
        "sampling": {"fps": sampling.fps, "stride": sampling.stride},
        "frames": stats.frames,
        "frames_sampled": n,
        "detections": stats.detections,
        "crops": stats.crops,
        "wall_s": round(wall, 2),
        "decode_ms_per_sampled_frame": round(1000 * stats.decode_s / max(n, 1), 2),
        "detect_ms_per_frame": round(1000 * stats.detect_s / max(n, 1), 1),
        "dhash_s": round(hash_s, 3),
        "dedup_by_max_bits": dedup,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--video", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--bits", default="0,1,2,3,4,5")
    args = ap.parse_args()
    cv2.setNumThreads(1)
    [video] = list_videos(args.video)
    bits = [int(b) for b in args.bits.split(",")]
    result = {
        "video": str(video),
        "command": " ".join(["OMP_NUM_THREADS=1 .venv/bin/python", *sys.argv]),
        "opencv": cv2.__version__,
        "decode_only": decode_rate(video),
        "runs": [
            one_rate(video, s, bits) for s in (FrameSampling(fps=None, stride=1), FrameSampling(fps=2.0))
        ],
    }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
