"""Under DDP (2 CPU processes, gloo) the selection equals the single-process one for the same weights and seed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from imgselect.io.artifacts import read_selection_csv
from imgselect.run.callbacks import embed_images
from imgselect.selection import KMeansSelector
from lightning_modules import AutoencoderModule

HERE = Path(__file__).resolve().parent


def _run(out: Path, devices: int) -> None:
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(HERE), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, str(HERE / "ddp_selection.py"), str(out), str(devices)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=out,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def _reselect(out: Path) -> str:
    """The selection redone in this process, independently of the script: the weights it saved, embedded
    here with ``embed_images`` (not its callback) and selected by the selector (not ``select_stage``)."""
    sys.path.insert(0, str(HERE))
    try:
        from ddp_selection import SyntheticPool
    finally:
        sys.path.remove(str(HERE))
    dm = SyntheticPool(image_size=16)
    dm.setup()
    model = AutoencoderModule(image_size=16, channels=(8, 16), latent_dim=32)
    model.load_state_dict(torch.load(out / "weights.pt"))
    model.eval()
    emb = embed_images(model.embed, dm.pool.images, batch_size=16, progress=False).numpy()
    single = KMeansSelector(budget=10, pick="random", seed=3).select(len(emb), emb)
    return ",".join(map(str, single.indices.tolist()))


@pytest.mark.slow
def test_ddp_selection_equals_single_process(tmp_path: Path) -> None:
    _run(tmp_path, devices=2)
    ddp = (tmp_path / "indices.txt").read_text()
    # every process received rank 0's selection
    assert (tmp_path / "rank0.txt").read_text() == ddp == (tmp_path / "rank1.txt").read_text()
    lines = (tmp_path / "selection.csv").read_text().splitlines()
    assert len(lines) == 11 and len({ln.split(",")[0] for ln in lines[1:]}) == 10
    # the same weights, embedded and selected in one process
    assert _reselect(tmp_path) == ddp


@pytest.mark.slow
def test_single_process_script_equals_an_independent_selection(tmp_path: Path) -> None:
    """The script in one process against the selection redone here: guards the script and the test itself
    (a wrong callback gather, selection stage or saved weights fails here without DDP in the way)."""
    _run(tmp_path, devices=1)
    script = (tmp_path / "indices.txt").read_text()
    assert _reselect(tmp_path) == script
    assert ",".join(r["pool_index"] for r in read_selection_csv(tmp_path / "selection.csv")) == script
