"""Quality table from finished sweeps: F1 before/after pseudo-labeling per selector × budget, mean ± std over
seeds, the gain of each autoencoder selector over random paired by seed, the ceiling, the paper's Table 1
beside ours, and what explains the numbers (class coverage of the chosen sets, pseudo-label accuracy).

    .venv/bin/python benchmarks/quality.py logs/quality_2class --ceiling logs/ceiling_2class \
        --out benchmarks/results/quality_2class.json [--paper]

Reads every ``<job>/result.json`` one level under each sweep folder (the pipeline's own output), so it also
works on a sweep that is still running (unfinished jobs are listed as missing).
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

from record import mean_std, save_result

from imgselect.report import collect, selector_label

# The paper's Table 1 (F1 on its validation day; one run, private retail data, 64×64, ImageNet init).
PAPER_TABLE1 = {
    ("Random selection", "before"): {125: 0.82, 200: 0.66, 500: 0.84, 1000: 0.82},
    ("Random selection", "after"): {125: 0.83, 200: 0.83, 500: 0.88, 1000: 0.92},
    ("Autoencoder", "before"): {125: 0.85, 200: 0.85, 500: 0.89, 1000: 0.90},
    ("Autoencoder", "after"): {125: 0.90, 200: 0.88, 500: 0.89, 1000: 0.92},
}
PHASES = ("before", "after")


def _stats(values: list[float]) -> dict[str, Any]:
    return {**mean_std(values), "n": len(values), "values": values}


def _cell(s: dict[str, Any] | None, digits: int = 3) -> str:
    if not s:
        return "–"
    if s["n"] == 1:
        return f"{s['mean']:.{digits}f} (n=1)"
    return f"{s['mean']:.{digits}f} ± {s['std']:.{digits}f}"


def summarise(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Per (selector, budget): metric stats over seeds, paired gains over random, coverage and pseudo-labels."""
    by: dict[tuple[str, int], dict[int, dict[str, Any]]] = defaultdict(dict)
    for r in results:
        key, seed = (selector_label(r), int(r["budget"])), int(r["seed"])
        if seed in by[key]:
            raise ValueError(
                f"two finished jobs for {key[0]}, budget {key[1]}, seed {seed}: "
                f"{by[key][seed].get('output_dir')} and {r.get('output_dir')}; pass only one of their sweep folders"
            )
        by[key][seed] = r
    selectors = sorted({s for s, _ in by}, key=lambda s: (s != "Random selection", s))
    budgets = sorted({b for _, b in by})
    cells: dict[str, dict[str, Any]] = {}
    for s in selectors:
        for b in budgets:
            runs = by.get((s, b), {})
            if not runs:
                continue
            cell: dict[str, Any] = {"seeds": sorted(runs)}
            for phase in PHASES:
                vals = [
                    float(runs[k]["metrics"][phase]["f1"])
                    for k in sorted(runs)
                    if (runs[k].get("metrics") or {}).get(phase)
                ]
                if vals:
                    cell[phase] = _stats(vals)
                    rand = by.get(("Random selection", b), {})
                    paired = [
                        float(runs[k]["metrics"][phase]["f1"]) - float(rand[k]["metrics"][phase]["f1"])
                        for k in sorted(runs)
                        if k in rand
                        and (runs[k].get("metrics") or {}).get(phase)
                        and (rand[k].get("metrics") or {}).get(phase)
                    ]
                    if paired and s != "Random selection":
                        cell[f"gain_over_random_{phase}"] = _stats(paired)
                for metric in ("accuracy", "auroc"):
                    other = [
                        float(runs[k]["metrics"][phase][metric])
                        for k in sorted(runs)
                        if ((runs[k].get("metrics") or {}).get(phase) or {}).get(metric) is not None
                    ]
                    if other:
                        cell[f"{phase}_{metric}"] = _stats(other)
            # Class coverage: the smallest class's share of the chosen set (0.5 = balanced for 2 classes).
            shares = []
            for r in runs.values():
                hist = list((r.get("selected_class_histogram") or {}).values())
                if hist and sum(hist):
                    shares.append(min(hist) / sum(hist))
            if shares:
                cell["smallest_class_share"] = _stats(shares)
            acc = [
                float(r["classifier"]["pseudo"]["accuracy"])
                for r in runs.values()
                if ((r.get("classifier") or {}).get("pseudo") or {}).get("accuracy") is not None
            ]
            if acc:
                cell["pseudo_label_accuracy"] = _stats(acc)
            totals = [float(r["timings_s"]["total"]) for r in runs.values() if "timings_s" in r]
            if totals:
                cell["job_seconds"] = _stats(totals)
            cells[f"{s}|{b}"] = cell
    n_classes = max((len(r.get("classes") or []) for r in results), default=2)
    return {"selectors": selectors, "budgets": budgets, "cells": cells, "n_classes": n_classes}


def markdown(summary: dict[str, Any], ceiling: dict[str, Any] | None, paper: bool) -> str:
    budgets, cells = summary["budgets"], summary["cells"]
    head = "| selector | phase | " + " | ".join(f"{b}" for b in budgets) + " |"
    sep = "|---|---|" + "---|" * len(budgets)
    n_classes = int(summary.get("n_classes", 2))
    f1 = "F1" if n_classes <= 2 else "Macro F1"
    lines = [f"{f1} on the validation set, mean ± std over seeds:", "", head, sep]
    for s in summary["selectors"]:
        for phase in PHASES:
            row = [_cell(cells.get(f"{s}|{b}", {}).get(phase)) for b in budgets]
            lines.append(f"| {s} | {phase} | " + " | ".join(row) + " |")
    if ceiling:
        lines += [
            "",
            f"Ceiling (every pool label): F1 {_cell(ceiling)}, accuracy {_cell(ceiling['accuracy'])}.",
        ]
    lines += [
        "",
        f"Accuracy on the validation set (a model predicting one class scores about 1/{n_classes} here):",
        "",
        head,
        sep,
    ]
    for s in summary["selectors"]:
        for phase in PHASES:
            row = [_cell(cells.get(f"{s}|{b}", {}).get(f"{phase}_accuracy")) for b in budgets]
            lines.append(f"| {s} | {phase} | " + " | ".join(row) + " |")
    lines += [
        "",
        f"Gain over random selection, paired by seed ({f1} points × 100, mean ± std):",
        "",
        head,
        sep,
    ]
    for s in summary["selectors"]:
        if s == "Random selection":
            continue
        for phase in PHASES:
            row = []
            for b in budgets:
                g = cells.get(f"{s}|{b}", {}).get(f"gain_over_random_{phase}")
                row.append(f"{100 * g['mean']:+.1f} ± {100 * g['std']:.1f}" if g else "–")
            lines.append(f"| {s} | {phase} | " + " | ".join(row) + " |")
    lines += [
        "",
        f"Smallest class's share of the chosen set (1/{n_classes} = balanced) / pseudo-label accuracy"
        " (mean over seeds):",
        "",
        head,
        sep,
    ]
    for s in summary["selectors"]:
        row = []
        for b in budgets:
            c = cells.get(f"{s}|{b}", {})
            share = c.get("smallest_class_share")
            acc = c.get("pseudo_label_accuracy")
            row.append(
                (f"{share['mean']:.3f}" if share else "–") + " / " + (f"{acc['mean']:.3f}" if acc else "–")
            )
        lines.append(f"| {s} | – | " + " | ".join(row) + " |")
    if paper:
        lines += [
            "",
            "The paper's Table 1 beside ours (ours: mean over seeds; paper: one run):",
            "",
            head,
            sep,
        ]
        for (s, phase), vals in PAPER_TABLE1.items():
            ours = [cells.get(f"{s}|{b}", {}).get(phase) for b in budgets]
            row = [
                f"{vals.get(b, float('nan')):.2f} / " + (f"{o['mean']:.3f}" if o else "–")
                for b, o in zip(budgets, ours, strict=True)
            ]
            lines.append(f"| {s} | {phase} (paper / ours) | " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sweeps", nargs="+", help="multirun folders (one subfolder per job)")
    parser.add_argument("--ceiling", nargs="*", default=[], help="sweep folders of the every-label runs")
    parser.add_argument("--paper", action="store_true", help="add the paper's Table 1 beside ours")
    parser.add_argument("--out", required=True, help="JSON to write; the markdown goes beside it (.md)")
    parser.add_argument("--command", default=" ".join(sys.argv), help="how the sweeps were run (recorded)")
    args = parser.parse_args(argv)

    results, missing = [], []
    for d in args.sweeps:
        r, m = collect(d)
        results += r
        missing += [f"{d}/{name}" for name in m]
    if not results:
        print(f"error: no finished job (result.json) under {args.sweeps}", file=sys.stderr)
        return 2
    try:
        summary = summarise(results)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    ceiling = None
    if args.ceiling:
        ceil_results = [r for d in args.ceiling for r in collect(d)[0]]
        vals = [
            float(r["metrics"]["before"]["f1"])
            for r in ceil_results
            if (r.get("metrics") or {}).get("before")
        ]
        if vals:
            ceiling = _stats(vals)
            ceiling["accuracy"] = _stats([float(r["metrics"]["before"]["accuracy"]) for r in ceil_results])
            ceiling["jobs"] = [
                {k: r.get(k) for k in ("seed", "budget", "selected", "folds")}
                | {"seconds": r.get("timings_s", {}).get("total")}
                for r in ceil_results
            ]
    md = markdown(summary, ceiling, args.paper)
    out = Path(args.out)
    save_result(
        out,
        args.command,
        sweeps=args.sweeps,
        ceiling_sweeps=args.ceiling,
        unfinished_jobs=missing,
        jobs=len(results),
        summary=summary,
        ceiling=ceiling,
        paper_table1={f"{s}|{p}": v for (s, p), v in PAPER_TABLE1.items()} if args.paper else None,
    )
    out.with_suffix(".md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
