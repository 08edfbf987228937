"""Progress of long steps: log lines where there is no terminal, a bar where there is; one line per epoch."""

from __future__ import annotations

import functools
import io
import logging
from collections.abc import Iterator
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from imgselect.run import progress as progress_module
from imgselect.run.callbacks import EpochLog, embed_images
from imgselect.run.progress import Progress, display, format_duration, set_progress_mode, track
from imgselect.run.runtime import TrainerFactory


class Stream(io.StringIO):
    """stderr as a terminal or as a log file."""

    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


class Clock:
    """Seconds that pass only when told."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(autouse=True)
def auto_mode(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(progress_module, "_mode", "auto")
    yield


def messages(caplog: pytest.LogCaptureFixture, logger: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == logger]


def test_auto_is_a_bar_on_a_terminal_and_log_lines_elsewhere(monkeypatch: pytest.MonkeyPatch) -> None:
    assert display(stream=Stream(tty=True)) == "rich"
    assert display(stream=Stream(tty=False)) == "log"
    monkeypatch.setattr("sys.stderr", Stream(tty=False))
    assert display() == "log"
    set_progress_mode("none")
    assert display(stream=Stream(tty=True)) == "none"
    assert display("tqdm", Stream(tty=False)) == "tqdm"
    with pytest.raises(ValueError, match="progress='bar' is not a progress mode; use one of auto, rich"):
        set_progress_mode("bar")


def test_log_lines_every_10_percent_and_30_seconds_then_the_rate(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="imgselect")
    clock = Clock()
    with Progress(100, "Decoding pool (data/pool)", "images", stream=Stream(False), clock=clock) as p:
        for _ in range(100):
            clock.now += 1.0  # one image a second: 30 s pass before 10 %, so a line every 30 images
            p.advance()
    assert messages(caplog, "imgselect.run.progress") == [
        "Decoding pool (data/pool): 30/100 images (30%), 1.0 images/s, 1 min 10 s left",
        "Decoding pool (data/pool): 60/100 images (60%), 1.0 images/s, 40 s left",
        "Decoding pool (data/pool): 90/100 images (90%), 1.0 images/s, 10 s left",
        "Decoding pool (data/pool): 100 images in 1 min 40 s (1.0 images/s)",
    ]


def test_log_lines_at_least_30_seconds_apart(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="imgselect")
    clock = Clock()
    with Progress(10_000, "Embedding pool", "images", stream=Stream(False), clock=clock) as p:
        for _ in range(10):
            clock.now += 20.0  # 10 % each time, but 30 s between lines: every other batch
            p.advance(1000)
    assert messages(caplog, "imgselect.run.progress") == [
        "Embedding pool: 2,000/10,000 images (20%), 50 images/s, 2 min 40 s left",
        "Embedding pool: 4,000/10,000 images (40%), 50 images/s, 2 min 00 s left",
        "Embedding pool: 6,000/10,000 images (60%), 50 images/s, 1 min 20 s left",
        "Embedding pool: 8,000/10,000 images (80%), 50 images/s, 40 s left",
        "Embedding pool: 10,000 images in 3 min 20 s (50 images/s)",
    ]


def test_a_fast_step_logs_only_its_final_line(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="imgselect")
    clock = Clock()
    with Progress(10_000, "Embedding pool", "images", stream=Stream(False), clock=clock) as p:
        for _ in range(10):
            clock.now += 0.5
            p.advance(1000)
    assert messages(caplog, "imgselect.run.progress") == [
        "Embedding pool: 10,000 images in 5.0 s (2,000 images/s)"
    ]


def test_a_terminal_gets_a_bar_and_the_log_only_the_final_line(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.INFO, logger="imgselect")
    terminal = Stream(tty=True)
    monkeypatch.setattr("sys.stderr", terminal)
    assert list(track(range(50), "Decoding pool", "images")) == list(range(50))
    [line] = messages(caplog, "imgselect.run.progress")
    assert line.startswith("Decoding pool: 50 images in ")
    assert "Decoding pool" in terminal.getvalue()  # the bar was drawn on stderr


def test_nothing_when_disabled_or_none(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="imgselect")
    assert list(track([1, 2, 3], "Decoding pool", "images", enabled=False)) == [1, 2, 3]
    set_progress_mode("none")
    out = embed_images(lambda x: x.float().flatten(1), torch.zeros(5, 1, 2, 2, dtype=torch.uint8), 2)
    assert out.shape == (5, 4)
    assert messages(caplog, "imgselect.run.progress") == []


def test_embed_images_ends_with_a_rate_line(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.INFO, logger="imgselect")
    monkeypatch.setattr("sys.stderr", Stream(tty=False))
    images = torch.zeros(5, 1, 2, 2, dtype=torch.uint8)
    embed_images(lambda x: x.float().flatten(1), images, 2, description="Predicting validation (fold 0)")
    [line] = messages(caplog, "imgselect.run.progress")
    assert line.startswith("Predicting validation (fold 0): 5 images in ") and "images/s" in line


def test_format_duration() -> None:
    assert [format_duration(s) for s in (0.44, 45.2, 185, 7620)] == [
        "0.4 s",
        "45 s",
        "3 min 05 s",
        "2 h 07 min",
    ]


class TwoLayers(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))

    def _loss(self, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x, y = batch
        return torch.nn.functional.mse_loss(self.net(x), y)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self._loss(batch)
        self.log("train/loss", loss, prog_bar=True, on_epoch=True, on_step=True)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self.log("val/loss", self._loss(batch), prog_bar=True)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.05)


def factory(tmp_path: Path) -> TrainerFactory:
    trainer = functools.partial(
        pl.Trainer, accelerator="cpu", devices=1, enable_model_summary=False, enable_checkpointing=False
    )
    return TrainerFactory(trainer=trainer, logger=None, out_dir=tmp_path)


def test_without_a_terminal_training_logs_one_line_per_epoch(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.INFO, logger="imgselect")
    monkeypatch.setattr("sys.stderr", Stream(tty=False))
    torch.manual_seed(0)
    x = torch.randn(32, 4)
    loader = DataLoader(TensorDataset(x, x.sum(1, keepdim=True)), batch_size=8)
    trainer = factory(tmp_path)("classifier_fold0", 2, [])
    assert trainer.progress_bar_callback is None  # no bar redrawn into a log file
    trainer.fit(TwoLayers(), loader, loader)
    lines = messages(caplog, "imgselect.run.callbacks")
    assert len(lines) == 2
    for epoch, line in enumerate(lines, 1):
        assert line.startswith(f"classifier_fold0: epoch {epoch}/2, train/loss ")
        assert ", val/loss " in line and "_step" not in line and "_epoch" not in line
    loss = float(trainer.callback_metrics["train/loss_epoch"])
    assert f"train/loss {loss:.4g}," in lines[-1]  # the epoch's mean, as the bar would show it
    assert lines[0].endswith(" left") and not lines[1].endswith(" left")


def test_a_terminal_gets_lightnings_rich_bar(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lightning.pytorch.callbacks import RichProgressBar, TQDMProgressBar

    monkeypatch.setattr("sys.stderr", Stream(tty=True))
    trainer = factory(tmp_path)("autoencoder", 1, [])
    assert isinstance(trainer.progress_bar_callback, RichProgressBar)
    assert not any(isinstance(c, EpochLog) for c in trainer.callbacks)
    set_progress_mode("tqdm")
    assert isinstance(factory(tmp_path)("autoencoder", 1, []).progress_bar_callback, TQDMProgressBar)
    set_progress_mode("none")
    trainer = factory(tmp_path)("autoencoder", 1, [])
    assert trainer.progress_bar_callback is None and not any(
        isinstance(c, EpochLog) for c in trainer.callbacks
    )


def test_many_epochs_log_about_twenty_lines(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="imgselect")
    x = torch.randn(4, 4)
    loader = DataLoader(TensorDataset(x, x.sum(1, keepdim=True)), batch_size=4)
    trainer = TrainerFactory(factory(tmp_path).trainer, None, tmp_path, progress="log")(
        "classifier_final", 45, []
    )
    trainer.fit(TwoLayers(), loader, loader)
    epochs = [
        int(line.split("epoch ")[1].split("/")[0]) for line in messages(caplog, "imgselect.run.callbacks")
    ]
    assert epochs == [1, *range(3, 45, 3), 45]  # every 3rd (45 / 20 rounded up), the first and the last


def test_decoding_a_folder_ends_with_a_rate_line(
    image_folder: dict[str, Path], caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from datamodules.images import list_images, load_image_files

    caplog.set_level(logging.INFO, logger="imgselect")
    monkeypatch.setattr("sys.stderr", Stream(tty=False))
    paths = list_images(image_folder["pool"])
    decoded = load_image_files(paths, 8, 1, f"Decoding pool ({image_folder['pool']})")
    images, skipped = decoded.images, decoded.skipped
    [line] = messages(caplog, "imgselect.run.progress")
    assert line.startswith(f"Decoding pool ({image_folder['pool']}): {len(paths)} images in ")
    assert len(images) + len(skipped) == len(paths)
