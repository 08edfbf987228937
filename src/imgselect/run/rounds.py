"""What a ``rounds=N`` job writes beside its rounds: one row per round (labels so far, the classifier's metrics,
how the round chose) in ``rounds.csv`` and ``rounds.json``, and ``rounds.png``, the metric against labels."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from imgselect.io.artifacts import atomic_path, write_csv_atomic, write_json_atomic
from imgselect.io.result import RunResult

ROUND_COLUMNS = ("round", "labels", "new", "selector", "rule", "before_accuracy", "before_f1", "after_accuracy",
                 "after_f1")  # fmt: skip


def round_row(r: int, result: RunResult) -> dict[str, Any]:
    """Round ``r`` as a row: labels so far (earlier rounds and this one), picks, rule and metrics."""
    before, after = result.metrics.get("before") or {}, result.metrics.get("after") or {}
    classifier = result.classifier or {}
    return {
        "round": r,
        "labels": int(classifier.get("labeled", result.budget)),
        "new": result.budget,
        "selector": result.selector,
        "rule": str(result.selection_stats.get("round_rule", result.pick)),
        "before_accuracy": before.get("accuracy"),
        "before_f1": before.get("f1"),
        "after_accuracy": after.get("accuracy"),
        "after_f1": after.get("f1"),
    }


def best_accuracy(row: dict[str, Any]) -> float | None:
    """The round's accuracy: after the pool's learner when it ran, else the labels alone."""
    value = row["after_accuracy"] if row["after_accuracy"] is not None else row["before_accuracy"]
    return float(value) if value is not None else None


def write_rounds(out_dir: Path, rows: list[dict[str, Any]]) -> None:
    """``rounds.json``, ``rounds.csv`` and ``rounds.png`` in ``out_dir``."""
    write_json_atomic(out_dir / "rounds.json", rows)
    write_csv_atomic(
        out_dir / "rounds.csv", [ROUND_COLUMNS, *([row[c] for c in ROUND_COLUMNS] for row in rows)]
    )
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    labels = [row["labels"] for row in rows]
    for key, style, name in (
        ("before_accuracy", "--", "labels alone"),
        ("after_accuracy", "-", "with the pool"),
    ):
        ys = [row[key] for row in rows]
        if any(y is not None for y in ys):
            ax.plot(labels, [y if y is not None else float("nan") for y in ys], style, marker="o", label=name)
    for row in rows:
        y = best_accuracy(row)
        if y is not None:
            ax.annotate(row["rule"], (row["labels"], y), textcoords="offset points", xytext=(0, 6), fontsize=7,
                        ha="center")  # fmt: skip
    ax.set_xlabel("labels (all rounds so far)")
    ax.set_ylabel("validation accuracy")
    ax.set_title(f"{rows[0]['selector']}: {len(rows)} rounds of {rows[0]['new']} labels")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    with atomic_path(out_dir / "rounds.png") as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
