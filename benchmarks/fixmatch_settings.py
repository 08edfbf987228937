"""FixMatch jobs that differ in one learner setting, side by side: for each budget and value of the setting
(``classifier.fixmatch.settings[<key>]`` in each result.json), the metric before (labels alone) and after
(FixMatch), the final mask rate and pseudo-label accuracy, mean ± std over seeds; and each value against the
others, paired by seed, with how many seeds are ahead.

    .venv/bin/python benchmarks/fixmatch_settings.py <sweep folder> --key flex \
        --out benchmarks/results/fixmatch_holdout_threshold.json
    .venv/bin/python benchmarks/fixmatch_settings.py <sweep folders> --key steps --where flex=True \
        --out benchmarks/results/fixmatch_holdout_steps.json

``--where KEY=VALUE`` keeps only the jobs run with that setting (repeatable).

Jobs must share their validation set (a held-out split and the test split are never mixed in one table).
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

from record import mean_std, save_result
from ssl_pipeline import differences, load_jobs

RUN = ("train/mask", "train/pseudo_acc")  # what the last 100 steps of each run report


def _order(value: str) -> tuple[float, str]:
    """Numbers by size (``"500" < "1000"``), ``False`` before ``True``, other text after them."""
    try:
        return float(value), value
    except ValueError:
        return {"False": 0.0, "True": 1.0}.get(value, float("inf")), value


def settings_of(job: dict[str, Any]) -> dict[str, str]:
    """A FixMatch job's settings as text (its steps among them); empty for any other job."""
    fm = (job.get("classifier") or {}).get("fixmatch")
    if not fm:
        return {}
    return {k: str(v) for k, v in {"steps": fm.get("steps"), **fm.get("settings", {})}.items()}


def keep(jobs: list[dict[str, Any]], where: list[str]) -> list[dict[str, Any]]:
    """The jobs whose settings match every ``KEY=VALUE`` of ``where``."""
    wanted = dict(w.split("=", 1) for w in where)
    return [r for r in jobs if all(settings_of(r).get(k) == v for k, v in wanted.items())]


def table(jobs: list[dict[str, Any]], key: str, metric: str) -> dict[str, Any]:
    """cells[budget][value][seed] = {before, after, mask, pseudo_acc}; summaries and paired differences."""
    if not jobs:
        raise SystemExit("no jobs to compare (check the folders and --where)")
    val_sizes = {r.get("val_size") for r in jobs}
    if len(val_sizes) > 1:
        raise SystemExit(
            f"jobs validated on different sets (val_size {sorted(map(str, val_sizes))}): one table each"
        )
    cells: dict[int, dict[str, dict[int, dict[str, float]]]] = defaultdict(lambda: defaultdict(dict))
    for r in jobs:
        settings = settings_of(r)
        if key not in settings:
            raise SystemExit(f"{r['_file']}: no FixMatch setting {key!r} recorded (semi=fixmatch jobs only)")
        fm = r["classifier"]["fixmatch"]
        value, seed = settings[key], int(r["seed"])
        if seed in cells[r["budget"]][value]:
            raise SystemExit(f"two jobs for budget {r['budget']}, {key}={value}, seed {seed}: {r['_file']}")
        last = fm.get("last_epoch", {})
        cells[r["budget"]][value][seed] = {
            "before": float(r["metrics"]["before"][metric]),
            "after": float(r["metrics"]["after"][metric]),
            **{k.split("/")[1]: float(last[k]) for k in RUN if k in last},
        }
    summary: dict[str, Any] = {}
    pairs: dict[str, Any] = {}
    for b, by_value in sorted(cells.items()):
        for value, by_seed in sorted(by_value.items()):
            fields = sorted({f for c in by_seed.values() for f in c})
            cell = summary[f"{b}/{value}"] = {}
            for f in fields:
                v = [c[f] for c in by_seed.values() if f in c]
                cell[f] = {**mean_std(v), "n": len(v)}
            gain = [c["after"] - c["before"] for c in by_seed.values()]
            pairs[f"{b}: {key}={value}, after - the same job's labels alone"] = differences(gain)
        values = sorted(by_value, key=_order)
        for i, low in enumerate(values):
            for high in values[i + 1 :]:  # the larger value (True, more steps) minus the smaller
                seeds = sorted(set(by_value[low]) & set(by_value[high]))
                d = [by_value[high][s]["after"] - by_value[low][s]["after"] for s in seeds]
                if d:
                    pairs[f"{b}: {key}={high} - {key}={low}, after"] = differences(d)
    return {
        "metric": metric,
        "key": key,
        "val_size": val_sizes.pop(),
        "cells": {
            f"{b}/{v}": {str(s): c for s, c in sorted(bs.items())}
            for b, bv in cells.items()
            for v, bs in bv.items()
        },
        "summary": summary,
        "paired_by_seed": pairs,
    }


def markdown(t: dict[str, Any]) -> str:
    m, key = t["metric"], t["key"]
    lines = [
        f"{m} on {t['val_size']} validation images, before (labels alone) / after (FixMatch); the last 100 steps'",
        "mask rate and pseudo-label accuracy; mean ± std over seeds:",
        "",
        f"| labels | {key} | seeds | {m} before / after | mask | pseudo-labels right |",
        "|---|---|---|---|---|---|",
    ]

    def cell(c: dict[str, Any], f: str) -> str:
        return f"{c[f]['mean']:.3f} ± {c[f]['std']:.3f}" if f in c else "–"

    for name, c in t["summary"].items():
        b, value = name.split("/", 1)
        lines.append(
            f"| {b} | {value} | {c['after']['n']} | {cell(c, 'before')} / {cell(c, 'after')} "
            f"| {cell(c, 'mask')} | {cell(c, 'pseudo_acc')} |"
        )
    lines += ["", "Paired by seed (points × 100, seeds with a positive difference):", ""]
    lines += ["| difference | mean | per seed |", "|---|---|---|"]
    for name, p in t["paired_by_seed"].items():
        per_seed = ", ".join(f"{100 * x:+.1f}" for x in p["per_seed"])
        lines.append(f"| {name} | {100 * p['mean']:+.1f} ({p['positive']}/{p['n']}) | {per_seed} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("paths", nargs="+", type=Path, help="job folders, sweep folders or job JSON copies")
    parser.add_argument(
        "--key", required=True, help="the setting the jobs differ in (flex, threshold, mu, ...)"
    )
    parser.add_argument("--where", action="append", default=[], metavar="KEY=VALUE", help="only these jobs")
    parser.add_argument("--metric", default="accuracy", choices=("accuracy", "f1", "auroc"))
    parser.add_argument("--out", type=Path, required=True, help="JSON to write; the markdown goes beside it")
    parser.add_argument("--command", default=" ".join(["python", *sys.argv]), help="how the jobs were run")
    args = parser.parse_args()
    t = table(keep(load_jobs(args.paths), args.where), args.key, args.metric)
    save_result(args.out, args.command, **t)
    md = markdown(t)
    args.out.with_suffix(".md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
