"""What a person labels from: the numbered sheet, the CSV template and Label Studio's config and tasks."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from imgselect.io.artifacts import save_numbered_sheet
from imgselect.labeling.labels import FileLabels
from imgselect.labeling.tasks import label_studio_config, write_label_studio, write_labels_template
from imgselect.pool import ImageSet, content_hash
from imgselect.selection.selectors import Selection

CLASSES = ["staff", "customer & co"]


def _pool(tmp_path: Path, n: int = 5) -> ImageSet:
    """``n`` images, the odd ones backed by a file (a folder pool), the even ones only pixels (a dataset)."""
    images = torch.stack([torch.full((3, 8, 8), 40 * k, dtype=torch.uint8) for k in range(n)])
    ids, hashes = [], []
    for k in range(n):
        if k % 2:
            f = tmp_path / f"img{k}.png"
            Image.fromarray(images[k].permute(1, 2, 0).numpy()).save(f)
            ids.append(str(f))
            hashes.append(content_hash(f.read_bytes()))
        else:
            ids.append(f"train:{k}")
            hashes.append(content_hash(images[k].numpy().tobytes()))
    return ImageSet(images=images, ids=ids, hashes=hashes)


def _selection(indices: list[int]) -> Selection:
    n = len(indices)
    return Selection(
        indices=np.array(indices),
        cluster=np.arange(n),
        distance=np.array([0.5] * (n - 1) + [np.nan]),
        cluster_size=np.full(n, 2),
        rule=["typical"] * n,
        score=np.linspace(1, 2, n),
    )


def test_label_studio_config_offers_every_class() -> None:
    root = ET.fromstring(label_studio_config(CLASSES))
    choices = root.find("Choices")
    assert choices is not None and choices.get("name") == "label" and choices.get("toName") == "image"
    assert [c.get("value") for c in choices] == CLASSES  # '&' escaped, read back as written
    image = root.find("Image")
    assert image is not None and image.get("value") == "$image"


def test_tasks_carry_tile_hash_and_a_servable_image(tmp_path: Path) -> None:
    (tmp_path / "pool").mkdir()
    pool = _pool(tmp_path / "pool")
    sel = _selection([3, 0, 4])
    probs = np.array([[0.2, 0.8], [0.9, 0.1], [0.5, 0.5]])
    out = tmp_path / "job"
    write_label_studio(out, sel, pool, CLASSES, probs)
    tasks = json.loads((out / "label_studio" / "tasks.json").read_text())
    assert [t["data"]["tile"] for t in tasks] == [1, 2, 3]
    assert [t["data"]["pool_index"] for t in tasks] == [3, 0, 4]
    for t, idx in zip(tasks, [3, 0, 4], strict=True):
        d = t["data"]
        assert d["content_hash"] == pool.hashes[idx] and d["image_id"] == pool.ids[idx]  # type: ignore[index]
        assert d["image"].startswith("/data/local-files/?d=images/")
        served = out / "label_studio" / d["image"].split("?d=", 1)[1]
        if Path(pool.ids[idx]).is_file():  # the original file itself, byte for byte
            assert served.read_bytes() == Path(pool.ids[idx]).read_bytes()
        else:  # the pool's pixels
            assert np.array_equal(np.asarray(Image.open(served)), pool.images[idx].permute(1, 2, 0).numpy())
    assert tasks[2]["data"]["distance"] is None  # NaN is no JSON: null
    assert tasks[0]["predictions"][0]["result"][0]["value"] == {"choices": ["customer & co"]}
    assert tasks[0]["predictions"][0]["score"] == 0.8
    assert tasks[1]["predictions"][0]["result"][0]["value"] == {"choices": ["staff"]}


def test_filled_template_reads_back_by_content_hash(tmp_path: Path) -> None:
    pool = _pool(tmp_path)
    f = write_labels_template(tmp_path / "labels_template.csv", _selection([1, 2, 3]), pool)
    lines = f.read_text().splitlines()
    assert lines[0] == "tile,content_hash,image_id,label"
    filled = [lines[0], lines[1] + "staff", lines[2] + "customer & co", lines[3]]  # tile 3 left for later
    f.write_text("\n".join(filled) + "\n")
    assert pool.hashes is not None
    moved = ImageSet(  # the same images, moved and in reverse order
        images=pool.images.flip(0), ids=[f"/elsewhere/{k}" for k in range(5)], hashes=pool.hashes[::-1]
    )
    got = FileLabels(str(f)).known(moved, CLASSES)
    assert dict(zip(got.indices.tolist(), got.labels.tolist(), strict=True)) == {3: 0, 2: 1}  # 4 - 1, 4 - 2
    assert got.unlabeled == [f"tile 3: {pool.hashes[3]}"]


def test_numbered_sheet_draws_numbers_on_tiles(tmp_path: Path) -> None:
    images = torch.full((5, 3, 16, 16), 128, dtype=torch.uint8)
    f = save_numbered_sheet(tmp_path / "s.png", images, min_side=64)
    a = np.asarray(Image.open(f).convert("RGB"))
    assert a.shape == (2 * 66 + 2, 3 * 66 + 2, 3)  # 3 columns, 2 rows of 64-pixel tiles, 2-pixel gaps
    tile1 = a[2:66, 2:66]
    assert ((tile1[..., 0] > 200) & (tile1[..., 2] < 80)).any()  # the yellow number
    tile5 = a[68:132, 68:132]
    assert ((tile5[..., 0] > 200) & (tile5[..., 2] < 80)).any()
    assert (a[68:132, 134:198] == 255).all()  # no sixth tile: white
