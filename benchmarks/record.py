"""Where benchmark scripts write what they measured: one JSON per script, with its command, date and machine."""

from __future__ import annotations

import os
import platform
import statistics
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from imgselect.io.artifacts import write_json_atomic


def save_result(path: str | Path, command: str, **fields: Any) -> Path:
    """Write ``fields`` to ``path`` with the command that produced them, the date and the machine."""
    record = {
        "command": command,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "processor": platform.processor() or platform.machine(),
        },
        **fields,
    }
    write_json_atomic(path, record)
    print("wrote", path)
    return Path(path)


def mean_std(values: list[float]) -> dict[str, float]:
    """Mean and sample standard deviation (0 for a single value) of what several seeds or runs measured."""
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0}
