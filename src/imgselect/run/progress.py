"""Progress of long steps (decoding, embedding, predicting): a live bar on a terminal, log lines elsewhere.

A cluster job has no terminal: its output goes to a file, where a bar redrawn with carriage returns becomes
thousands of lines. So what is shown depends on the process-wide mode (the ``progress`` key of
``conf/train.yaml``, set once per job with :func:`set_progress_mode`):

- ``auto`` (default): ``rich`` when stderr is a terminal, else ``log``;
- ``rich`` / ``tqdm``: a live bar on stderr, gone when the step ends;
- ``log``: a line through :mod:`logging` when at least 10 % of the step *and* 30 s have passed since the
  last one: ``Decoding pool: 5,000/10,000 images (50%), 812 images/s, 6 s left``;
- ``none``: nothing.

Every mode but ``none`` ends a step with one line giving the count, the time and the rate, so the job's log
file (Hydra writes one per job) says how long each step took. :class:`imgselect.run.runtime.TrainerFactory`
follows the same mode for Lightning's own progress bar.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from typing import Any, Literal, TextIO, TypeVar, cast, get_args

log = logging.getLogger(__name__)

ProgressMode = Literal["auto", "rich", "tqdm", "log", "none"]
Display = Literal["rich", "tqdm", "log", "none"]
MODES: tuple[str, ...] = get_args(ProgressMode)

# In ``log`` mode a line needs both this fraction of the step and this many seconds since the previous one:
# a step of a few seconds logs only its final line, one of an hour about ten.
LOG_FRACTION = 0.1
LOG_SECONDS = 30.0

T = TypeVar("T")

_mode: ProgressMode = "auto"


def set_progress_mode(mode: str) -> None:
    """Choose how every later step shows its progress in this process (see the module's docstring)."""
    global _mode
    if mode not in MODES:
        raise ValueError(f"progress={mode!r} is not a progress mode; use one of {', '.join(MODES)}")
    _mode = cast(ProgressMode, mode)


def display(mode: ProgressMode | None = None, stream: TextIO | None = None) -> Display:
    """What ``mode`` (default: the process-wide one) shows: ``auto`` is ``rich`` when ``stream`` (default:
    stderr) is a terminal, else ``log``."""
    mode = mode or _mode
    if mode != "auto":
        return mode
    stream = stream if stream is not None else sys.stderr
    isatty = getattr(stream, "isatty", None)
    try:
        return "rich" if isatty is not None and isatty() else "log"
    except ValueError:  # a closed stream
        return "log"


def format_duration(seconds: float) -> str:
    """``0.4 s``, ``45 s``, ``3 min 05 s``, ``2 h 07 min``."""
    if seconds < 10:
        return f"{seconds:.1f} s"
    s = round(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def format_rate(count: float, seconds: float, unit: str) -> str:
    """``812 images/s``; ``3.5 images/s`` below 10."""
    rate = count / seconds if seconds > 0 else math.inf
    if math.isinf(rate):
        return f"- {unit}/s"
    return f"{rate:,.1f} {unit}/s" if rate < 10 else f"{rate:,.0f} {unit}/s"


class Progress:
    """Progress of one step of ``total`` units, shown as the mode says; use as a context manager.

    ``with Progress(len(images), "Embedding pool", "images") as p: ... p.advance(len(batch))``.

    Args:
        total: units the step will do (``None``: unknown; log lines then say the count and rate only).
        description: what the step does, as it starts each line: ``Decoding pool (data/pool)``.
        unit: the plural noun of what is counted (``images``, ``batches``).
        enabled: ``False`` shows nothing (DDP ranks other than 0).
        mode: overrides the process-wide mode for this step.
        stream: the stream whose being a terminal decides ``auto`` (default: stderr).
        clock: seconds, monotonic (tests pass a fake one).
    """

    def __init__(
        self,
        total: int | None,
        description: str,
        unit: str = "items",
        *,
        enabled: bool = True,
        mode: ProgressMode | None = None,
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total, self.description, self.unit = total, description, unit
        self.shown: Display = display(mode, stream) if enabled else "none"
        self.clock = clock
        self.done = 0
        self._start = self._last_time = 0.0
        self._last_done = 0
        self._bar: Any = None
        self._task: Any = None

    def __enter__(self) -> Progress:
        self._start = self._last_time = self.clock()
        if self.shown == "rich":
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )
            from rich.progress import Progress as RichProgress

            self._bar = RichProgress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn(self.unit),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=Console(stderr=True),
                transient=True,
            )
            self._bar.start()
            self._task = self._bar.add_task(self.description, total=self.total)
        elif self.shown == "tqdm":
            from tqdm.auto import tqdm

            self._bar = tqdm(total=self.total, desc=self.description, unit=f" {self.unit}", leave=False)
        return self

    def advance(self, n: int = 1) -> None:
        """``n`` more units done."""
        self.done += n
        if self.shown == "rich":
            self._bar.update(self._task, advance=n)
        elif self.shown == "tqdm":
            self._bar.update(n)
        elif self.shown == "log":
            self._maybe_log()

    def _maybe_log(self) -> None:
        now = self.clock()
        if now - self._last_time < LOG_SECONDS:
            return
        if self.total is not None and (
            self.done >= self.total or self.done - self._last_done < LOG_FRACTION * self.total
        ):
            return  # the final line says 100 %
        self._last_time, self._last_done = now, self.done
        elapsed = now - self._start
        if self.total is None:
            log.info(
                "%s: %s %s, %s",
                self.description, f"{self.done:,}", self.unit, format_rate(self.done, elapsed, self.unit),
            )  # fmt: skip
            return
        rate = self.done / elapsed if elapsed > 0 else math.inf
        left = (self.total - self.done) / rate if rate > 0 else math.inf
        log.info(
            "%s: %s/%s %s (%d%%), %s, %s left",
            self.description,
            f"{self.done:,}",
            f"{self.total:,}",
            self.unit,
            100 * self.done // self.total,
            format_rate(self.done, elapsed, self.unit),
            format_duration(left) if math.isfinite(left) else "?",
        )

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._bar is not None:
            if self.shown == "rich":
                self._bar.stop()
            else:
                self._bar.close()
            self._bar = None
        if exc_type is None and self.shown != "none":
            elapsed = self.clock() - self._start
            log.info(
                "%s: %s %s in %s (%s)",
                self.description,
                f"{self.done:,}",
                self.unit,
                format_duration(elapsed),
                format_rate(self.done, elapsed, self.unit),
            )


def track(
    items: Iterable[T],
    description: str,
    unit: str = "items",
    *,
    total: int | None = None,
    enabled: bool = True,
) -> Iterator[T]:
    """Yield ``items``, counting one unit each (``total`` defaults to ``len(items)`` when it has one)."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with Progress(total, description, unit, enabled=enabled) as p:
        for item in items:
            yield item
            p.advance()
