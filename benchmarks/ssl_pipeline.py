"""Issue 13's table from finished jobs: {selector} x {classifier from scratch, from the SSL backbone} x budget,
a metric before/after pseudo-labeling, mean ± std over seeds, and the paired differences with their sign counts.

    .venv/bin/python benchmarks/ssl_pipeline.py benchmarks/results/ssl_pipeline_jobs \
        --out benchmarks/results/ssl_pipeline.json
    .venv/bin/python benchmarks/ssl_pipeline.py benchmarks/results/ssl_pipeline_10class_jobs \
        --metric accuracy --metric f1 --out benchmarks/results/ssl_pipeline_10class.json

The metric is F1 by default (of the positive class on two classes, macro over classes on more); `--metric`
more than once writes one table per metric.

Reads every ``result.json`` (a job folder's) or ``*.json`` job copy under the given paths. A random selection
from scratch does not depend on the pretraining, so those jobs may come from a sweep without ``pretrain=ssl``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

from record import save_result

PHASES = ("before", "after")


def load_jobs(paths: list[Path]) -> list[dict[str, Any]]:
    files: list[Path] = []
    for p in paths:
        files += sorted(p.rglob("*.json")) if p.is_dir() else [p]
    jobs = []
    for f in files:
        r = json.loads(f.read_text())
        if not isinstance(r, dict) or "metrics" not in r or "budget" not in r:
            continue  # not a job's result (multirun.yaml's neighbours, ssl_backbone.json, ...)
        r["_file"] = str(f)
        jobs.append(r)
    return jobs


def metric_label(metric: str, jobs: list[dict[str, Any]]) -> str:
    classes = {tuple(r.get("classes") or ()) for r in jobs}
    names = classes.pop() if len(classes) == 1 else ()
    if metric == "f1":
        return f"F1 of {names[1]}" if len(names) == 2 else "Macro F1"
    return metric.capitalize()


def selection_name(job: dict[str, Any]) -> str:
    """``random``, or the selector and the embedding it ran on (``typiclust on ssl``)."""
    selector, embedding = job["selector"], job.get("embedding")
    return selector if selector == "random" or not embedding else f"{selector} on {embedding}"


def start_name(job: dict[str, Any]) -> str:
    """The classifier's start and, when it is not the paper's pseudo-labeling, its learner: ``scratch``,
    ``ssl``, ``ssl+fixmatch`` (issue 21's ``semi`` group; older results have none: pseudo-labels)."""
    learner = (job.get("classifier") or {}).get("learner") or "pseudo"
    init = job.get("classifier_init") or "scratch"
    return init if learner == "pseudo" else f"{init}+{learner}"


def differences(d: list[float]) -> dict[str, Any]:
    """Paired differences, one a seed: their mean, the list, and how many are positive."""
    return {"mean": statistics.fmean(d), "per_seed": d, "positive": sum(x > 0 for x in d), "n": len(d)}


def table(jobs: list[dict[str, Any]], metric: str = "f1") -> dict[str, Any]:
    """cells[selector/init/budget][seed] = {before, after} of ``metric``; paired differences by seed."""
    cells: dict[str, dict[int, dict[str, float | None]]] = defaultdict(dict)
    for r in jobs:
        key = f"{selection_name(r)}/{start_name(r)}/{r['budget']}"
        seed = int(r["seed"])
        if seed in cells[key]:
            raise SystemExit(f"two jobs for {key} seed {seed}: {cells[key][seed]['file']} and {r['_file']}")
        m = r["metrics"]
        cells[key][seed] = {
            "before": m["before"][metric],
            "after": m["after"][metric] if m.get("after") else None,
            "file": r["_file"],
        }
    summary: dict[str, Any] = {}
    for key, by_seed in cells.items():
        summary[key] = {}
        for phase in PHASES:
            v = [float(x[phase]) for x in by_seed.values() if x[phase] is not None]  # type: ignore[arg-type]
            if v:
                sd = statistics.stdev(v) if len(v) > 1 else 0.0
                summary[key][phase] = {"mean": statistics.fmean(v), "std": sd, "n": len(v)}
    pairs: dict[str, Any] = {}

    def pair(name: str, a: str, b: str) -> None:
        if a not in cells or b not in cells:
            return
        for phase in PHASES:
            d = [
                float(cells[a][s][phase]) - float(cells[b][s][phase])  # type: ignore[arg-type]
                for s in sorted(set(cells[a]) & set(cells[b]))
                if cells[a][s][phase] is not None and cells[b][s][phase] is not None
            ]
            if d:
                pairs[f"{name} ({phase})"] = differences(d)

    def gain(name: str, key: str) -> None:
        """What a job's learner added to the same job's labels-only models (after - before: the same picks,
        start and backbone, so free of the spread between two sweeps' backbones)."""
        d = [
            float(c["after"]) - float(c["before"])  # type: ignore[arg-type]
            for c in cells.get(key, {}).values()
            if c["after"] is not None
        ]
        if d:
            pairs[f"{name} (after)"] = differences(d)

    budgets = sorted({int(k.split("/")[2]) for k in cells})
    selectors = sorted({k.split("/")[0] for k in cells}, key=lambda s: (s != "random", s))
    inits = sorted({k.split("/")[1] for k in cells} | {"scratch", "ssl"})
    for b in budgets:
        for s in selectors:
            pair(f"{b}: ssl init - scratch, {s}", f"{s}/ssl/{b}", f"{s}/scratch/{b}")
            for init in (
                i for i in inits if "+" in i
            ):  # a learner against pseudo-labels, same picks and start
                base, learner = init.split("+", 1)
                pair(f"{b}: {learner} - pseudo-labels, {s}, {base}", f"{s}/{init}/{b}", f"{s}/{base}/{b}")
                gain(f"{b}: {learner}'s model - the same job's labels alone, {s}, {base}", f"{s}/{init}/{b}")
        for s in selectors[1:]:
            for init in inits:
                pair(f"{b}: {s} - random, {init}", f"{s}/{init}/{b}", f"random/{init}/{b}")
            # both changes against what users start from
            pair(f"{b}: {s} + ssl init - random from scratch", f"{s}/ssl/{b}", f"random/scratch/{b}")
        # selectors (or one selector on two embeddings) against each other
        for i, a in enumerate(selectors[1:], 1):
            for other in selectors[i + 1 :]:
                for init in inits:
                    pair(f"{b}: {a} - {other}, {init}", f"{a}/{init}/{b}", f"{other}/{init}/{b}")
    return {
        "metric": metric,
        "metric_label": metric_label(metric, jobs),
        "budgets": budgets,
        "selectors": selectors,
        "cells": {k: {str(s): v for s, v in sorted(c.items())} for k, c in sorted(cells.items())},
        "summary": summary,
        "paired_by_seed": pairs,
    }


def markdown(t: dict[str, Any]) -> str:
    budgets = t["budgets"]
    lines = [
        f"{t['metric_label']} before / after (pseudo-labeling, or the `semi` learner named), mean ± std over seeds:",
        "",
        "| selection | classifier | " + " | ".join(f"{b} labels" for b in budgets) + " |",
        "|---|---|" + "---|" * len(budgets),
    ]
    inits = sorted({k.split("/")[1] for k in t["summary"]}, key=lambda i: (i != "scratch", i))
    starts = {"scratch": "from scratch", "ssl": "`pretrained=ssl`"}
    for s in t["selectors"]:
        for init in inits:
            if not any(f"{s}/{init}/{b}" in t["summary"] for b in budgets):
                continue  # not run
            row = []
            for b in budgets:
                c = t["summary"].get(f"{s}/{init}/{b}", {})
                row.append(
                    " / ".join(f"{c[p]['mean']:.3f} ± {c[p]['std']:.3f}" if p in c else "–" for p in PHASES)
                )
            start = starts.get(init) or "`pretrained=" + init.replace("+", "`, `semi=") + "`"
            lines.append(f"| {s} | {start} | " + " | ".join(row) + " |")
    lines += ["", f"Paired by seed ({t['metric_label']} points × 100, seeds with a positive difference):", ""]
    lines += ["| difference | before | after |", "|---|---|---|"]
    names = sorted(
        {k.rsplit(" (", 1)[0] for k in t["paired_by_seed"]}, key=lambda n: (int(n.split(":")[0]), n)
    )
    for name in names:
        cells = []
        for phase in PHASES:
            p = t["paired_by_seed"].get(f"{name} ({phase})")
            cells.append(f"{100 * p['mean']:+.1f} ({p['positive']}/{p['n']})" if p else "–")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("paths", nargs="+", type=Path, help="job folders, sweep folders or job JSON copies")
    parser.add_argument("--out", type=Path, required=True, help="JSON to write; the markdown goes beside it")
    parser.add_argument("--command", default=" ".join(["python", *sys.argv]), help="how the jobs were run")
    parser.add_argument(
        "--metric", action="append", choices=("f1", "accuracy", "auroc"), help="f1 (default); repeat for more"
    )
    args = parser.parse_args()
    jobs = load_jobs(args.paths)
    tables = [table(jobs, m) for m in args.metric or ["f1"]]
    if len(tables) == 1:
        save_result(args.out, args.command, **tables[0])
    else:
        save_result(args.out, args.command, tables={t["metric"]: t for t in tables})
    md = "\n".join(markdown(t) for t in tables)
    args.out.with_suffix(".md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
