"""Shared fixtures: a small generated image folder (with a corrupt and a grayscale file), the real
Fashion-MNIST files, and Hydra config composition with every path pointed into a temporary folder."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def sweep_command(tmp_path: Path, fmnist_dir: Path, *overrides: str) -> list[str]:
    """`python train.py -m <overrides>` on a tiny pool (200 images, 40 for validation) with every path under
    ``tmp_path``; the sweep goes to ``tmp_path/sweep``."""
    return [
        sys.executable,
        str(ROOT / "train.py"),
        "-m",
        *overrides,
        "data.pool_limit=200",
        "data.val_limit=40",
        f"paths.log_dir={tmp_path / 'logs'}",
        f"paths.cache_dir={tmp_path / 'cache'}",
        f"paths.data_dir={fmnist_dir.parent}",
        "embedding_map.method=pca",  # t-SNE's seconds per job add up over a suite; its own tests run it
        "hydra.sweep.dir=" + str(tmp_path / "sweep"),
    ]


def run_command(
    cmd: list[str], cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``cmd`` (a ``train.py`` sweep) in ``cwd`` with the environment plus ``env``, output captured, at most
    10 minutes; the caller asserts on its exit status."""
    return subprocess.run(
        cmd, capture_output=True, text=True, timeout=600, cwd=cwd, env={**os.environ, **(env or {})}
    )


CONF = ROOT / "conf"


def _blob_image(rng: np.random.Generator, kind: int, size: tuple[int, int]) -> Image.Image:
    """A synthetic picture of one of two kinds: a bright square or a dark disc, on noise."""
    w, h = size
    arr = rng.integers(0, 60, (h, w, 3), dtype=np.uint8)
    yy, xx = np.mgrid[0:h, 0:w]
    if kind == 0:
        arr[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4] = [230, 200, 40]
    else:
        arr[(yy - h / 2) ** 2 + (xx - w / 2) ** 2 < (min(h, w) / 3) ** 2] = [40, 90, 220]
    return Image.fromarray(arr)


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``pool/`` (40 images in nested folders, mixed formats and sizes, one corrupt, one grayscale),
    ``val/`` (two class subfolders) and ``val.csv``."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    pool = root / "pool"
    for i in range(40):
        sub = pool / f"cam{i % 3}"
        sub.mkdir(parents=True, exist_ok=True)
        ext = [".png", ".jpg", ".bmp", ".webp"][i % 4]
        _blob_image(rng, i % 2, (40 + i, 30 + 2 * i)).save(sub / f"img_{i:03d}{ext}")
    _blob_image(rng, 0, (50, 50)).convert("L").save(pool / "gray.png")
    (pool / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    (pool / "notes.txt").write_text("not an image, not listed")
    val = root / "val"
    rows = ["path,label"]
    for c, name in enumerate(["disc", "square"]):
        (val / name).mkdir(parents=True)
        for i in range(6):
            p = val / name / f"v{i}.png"
            _blob_image(rng, 1 - c, (48, 48)).save(p)
            rows.append(f"val/{name}/v{i}.png,{name}")
    (root / "val.csv").write_text("\n".join(rows) + "\n")
    return {"root": root, "pool": pool, "val": val, "csv": root / "val.csv"}


@pytest.fixture(scope="session")
def labeled_pool_folder(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A pool laid out one subfolder per class (``pool/disc/``: 4 discs, one nested, and a corrupt file
    sorted first; ``pool/square/``: 3 squares), ``val/`` with the same two classes, and ``labels.csv``
    (header, paths relative to its folder) listing 3 of the pool's files and the corrupt one."""
    root = tmp_path_factory.mktemp("labeled")
    rng = np.random.default_rng(1)
    pool = root / "pool"
    files = {
        "disc": ["d0.png", "d1.jpg", "d2.png", "nested/d3.png"],
        "square": ["s0.png", "s1.jpg", "s2.bmp"],
    }
    for name, kind in (("disc", 1), ("square", 0)):
        for f in files[name]:
            (pool / name / f).parent.mkdir(parents=True, exist_ok=True)
            _blob_image(rng, kind, (40, 36)).save(pool / name / f)
    (pool / "disc" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    val = root / "val"
    for name, kind in (("disc", 1), ("square", 0)):
        (val / name).mkdir(parents=True)
        for i in range(3):
            _blob_image(rng, kind, (32, 32)).save(val / name / f"v{i}.png")
    csv = root / "labels.csv"
    csv.write_text(
        "path,label\npool/disc/nested/d3.png,disc\npool/disc/broken.jpg,disc\n"
        "pool/square/s1.jpg,square\npool/disc/d0.png,disc\n"
    )
    return {"root": root, "pool": pool, "val": val, "csv": csv}


@pytest.fixture(scope="session")
def fmnist_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real Fashion-MNIST IDX files, verified (from the project's data dir or Debian's package)."""
    from datamodules.fashion_mnist import ensure_fashion_mnist

    project_copy = ROOT / "data" / "fashion-mnist"
    try:
        return ensure_fashion_mnist(project_copy, mirror=None)
    except RuntimeError as e:
        pytest.skip(f"Fashion-MNIST not available offline: {e}")


@pytest.fixture
def compose_cfg(tmp_path: Path, fmnist_dir: Path) -> Callable[..., DictConfig]:
    """Compose ``conf/train.yaml`` with overrides, as Hydra would for a run, with outputs in ``tmp_path``."""

    def _compose(*overrides: str) -> DictConfig:
        GlobalHydra.instance().clear()
        os.environ["IMGSELECT_ROOT"] = str(ROOT)
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = compose(
                config_name="train",
                overrides=[
                    f"paths.log_dir={tmp_path / 'logs'}",
                    f"paths.cache_dir={tmp_path / 'cache'}",
                    f"paths.data_dir={fmnist_dir.parent}",
                    "embedding_map.method=pca",  # t-SNE's seconds per job add up; its own tests run it
                    *overrides,
                ],
                return_hydra_config=True,
            )
        with open_dict(cfg):
            cfg.hydra.runtime.output_dir = str(tmp_path / "out")
            cfg.hydra.job.num = 0
        HydraConfig.instance().set_config(cfg)
        return cfg

    yield _compose
    GlobalHydra.instance().clear()


# A job small enough for a test: 300 pool images, one epoch of everything.
TINY = [
    "experiment=cpu",
    "data.pool_limit=300",
    "data.val_limit=60",
    "fit.autoencoder.epochs=1",
    "budget=12",
    "fit.classifier.epochs=1",
    "fit.classifier.min_steps=0",  # the CPU preset's 150-step floor would make every test job train 150 steps
    "pseudo.epochs=1",
    "pseudo.size=40",
]
# The selection half only (no classifier stage).
SELECT_ONLY = [*TINY, "~classifier"]
