"""One job's result, built from what actually ran and written once as ``result.json``."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from imgselect.io.artifacts import write_json_atomic


@dataclass
class RunResult:
    """What one job did and measured (``result.json``; Table 1 and the benchmarks read it).

    ``budget`` is the length of the selection, ``selector``/``pick`` are what the selector calls itself and
    ``embedding`` the embedding it ran on (``None`` when it needed none): nothing is re-read from config.
    """

    selector: str
    pick: str
    embedding: str | None
    budget: int
    seed: int
    image_size: int
    pool_size: int
    val_size: int
    skipped_files: int
    classes: list[str]
    selected_class_histogram: dict[str, int] | None
    folds: int | None
    pseudo_size: int | None
    metrics: dict[str, Any]
    classifier: dict[str, Any]
    selection_notes: list[str]
    selection_stats: dict[str, Any]
    embedding_info: dict[str, Any]
    timings_s: dict[str, float]
    versions: dict[str, str]
    output_dir: str
    config_hash: str = ""  # imgselect.run.jobs.config_hash: with the same inputs, a re-run skips this job
    inputs: dict[str, str] = field(default_factory=dict)  # digests of the files the job read (jobfolder)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(d.pop("extra"))
        return d

    def write(self, path: str | Path) -> None:
        write_json_atomic(path, self.to_dict())
