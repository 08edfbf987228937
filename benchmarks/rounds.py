"""Labeling in rounds: which policy wins at which number of labels (``sweeps/rounds_10class.yaml``).

    .venv/bin/python benchmarks/rounds.py <the sweep's folder> --out benchmarks/results/rounds_10class.json

Reads every job's ``rounds.json`` (one row per round: labels so far, accuracy) under the given folders, and
writes: accuracy per policy and number of labels (mean ± std over seeds), each policy's paired difference from
cold-start TypiClust every round with its sign count (same seed, same labels), a Markdown table beside the JSON
and ``rounds_<name>.png`` (accuracy against labels, one line per policy). A job's policy is its selector:
``random`` and ``typiclust`` every round, ``margin`` and ``mixed`` after a TypiClust first round.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

from record import mean_std, save_result

from imgselect.run.rounds import best_accuracy

BASE = "typiclust"
ORDER = ("random", "typiclust", "margin", "cluster_margin", "mixed")


def load(paths: list[Path]) -> dict[str, dict[int, dict[int, float]]]:
    """``{policy: {labels: {seed: accuracy}}}`` from every finished job's ``rounds.json``."""
    table: dict[str, dict[int, dict[int, float]]] = defaultdict(lambda: defaultdict(dict))
    for root in paths:
        for rounds_file in sorted(root.rglob("rounds.json")):
            result = json.loads((rounds_file.parent / "result.json").read_text())
            for row in json.loads(rounds_file.read_text()):
                table[row["selector"]][int(row["labels"])][int(result["seed"])] = best_accuracy(row)
    return table


def summarise(table: dict[str, dict[int, dict[int, float]]]) -> dict[str, Any]:
    """Mean ± std per policy and labels; paired differences from the base policy with sign counts."""
    summary: dict[str, Any] = {}
    for policy in sorted(table, key=lambda p: ORDER.index(p) if p in ORDER else len(ORDER)):
        rows = {}
        for labels, by_seed in sorted(table[policy].items()):
            entry: dict[str, Any] = {"n": len(by_seed), **mean_std(list(by_seed.values()))}
            base = table.get(BASE, {}).get(labels, {})
            seeds = sorted(set(base) & set(by_seed))
            if policy != BASE and seeds:
                diffs = [by_seed[s] - base[s] for s in seeds]
                entry["minus_typiclust"] = {
                    "mean": statistics.fmean(diffs),
                    "wins": sum(d > 0 for d in diffs),
                    "losses": sum(d < 0 for d in diffs),
                    "pairs": len(diffs),
                }
            rows[labels] = entry
        summary[policy] = rows
    return summary


def markdown(summary: dict[str, Any]) -> str:
    labels = sorted({n for rows in summary.values() for n in rows})
    lines = [
        "| policy | " + " | ".join(f"{n} labels" for n in labels) + " |",
        "|---|" + "---|" * len(labels),
    ]
    for policy, rows in summary.items():
        cells = []
        for n in labels:
            e = rows.get(n)
            if e is None:
                cells.append("–")
                continue
            cell = f"{e['mean']:.3f} ± {e['std']:.3f}"
            if "minus_typiclust" in e:
                d = e["minus_typiclust"]
                cell += f" ({d['mean']:+.3f}, {d['wins']}/{d['pairs']})"
            cells.append(cell)
        lines.append(f"| {policy} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(
        "Accuracy on the validation set, mean ± std over seeds; in brackets the paired difference from "
        "cold-start TypiClust every round (same seed) and the seeds where the policy is ahead."
    )
    return "\n".join(lines) + "\n"


def plot(
    summary: dict[str, Any],
    path: Path,
    ylabel: str = "validation accuracy",
    xlabel: str = "labels (all rounds so far)",
) -> None:
    """Accuracy against labels, one line per policy (``{policy: {labels: mean, std, n}}``), seed error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for policy, rows in summary.items():
        xs = sorted(rows)
        ax.errorbar(
            xs, [rows[x]["mean"] for x in xs], yerr=[rows[x]["std"] for x in xs], marker="o", capsize=3,
            linestyle="--" if policy == "random" else "-", label=f"{policy} (n={min(rows[x]['n'] for x in xs)})",
        )  # fmt: skip
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title("Labeling in rounds: which policy chooses the next labels")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", type=Path, help="sweep folders (or copies of their jobs)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/rounds_10class.json"))
    args = parser.parse_args()
    table = load(args.paths)
    if not table:
        sys.exit(f"no rounds.json under {', '.join(map(str, args.paths))}")
    summary = summarise(table)
    md = markdown(summary)
    print(md)
    save_result(args.out, " ".join(["python", *sys.argv]), summary=summary)
    args.out.with_suffix(".md").write_text(md)
    plot(summary, args.out.with_name(f"rounds_{args.out.stem.removeprefix('rounds_')}.png"))


if __name__ == "__main__":
    main()
