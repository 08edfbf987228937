"""The paper's Table 1 from a sweep folder: F1 before/after pseudo-labeling, selector × budget, mean ± std over seeds.

    python -m imgselect.report logs/train/multiruns/2026-11-29_10-00-00

Works on finished and partly finished sweeps (jobs without result.json are counted as missing). Also runs
by itself at the end of every multirun (``Table1Callback`` in ``conf/hydra/default.yaml``). Beside Table 1 it
draws ``label_efficiency.png`` (:func:`write_label_efficiency`): the metric against the number of labels, one
line per selector and learner, with the all-label ceiling where one is known (``--ceiling``, or a job that
labeled its whole pool).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from imgselect.io.artifacts import atomic_path, write_csv_atomic
from imgselect.run.jobs import ERROR_FILE, FAILED, read_error

log = logging.getLogger(__name__)

PHASES = (("before", "Before pseudo-labeling"), ("after", "After pseudo-labeling"))


SELECTOR_NAMES = {
    "ae": "K-means, random member",
    "typiclust": "TypiClust",
    "probcover": "ProbCover",
    "kcenter": "k-center",
}


def selector_label(result: dict[str, Any]) -> str:
    """Row name of a job: the paper's names for its own runs (autoencoder embedding), else selector, pick
    rule and embedding, e.g. ``TypiClust (pixels)``."""
    selector, pick = result.get("selector"), result.get("pick", "random")
    if selector == "random":
        return "Random selection"
    embedding = result.get("embedding", "autoencoder") or "autoencoder"
    if selector == "ae" and embedding == "autoencoder":
        return "Autoencoder" if pick == "random" else f"Autoencoder ({pick} pick)"
    name = SELECTOR_NAMES.get(str(selector), str(selector))
    if selector == "ae" and pick != "random":
        name = f"K-means, {pick} pick"
    return f"{name} ({embedding})"


def row_label(result: dict[str, Any], learner: bool = False) -> str:
    """Table 1 row of a job: :func:`selector_label`; its learner when the sweep has more than one (or when
    ``learner``: ``TypiClust (pixels), FixMatch``); the settings that set it apart (``[folds=2]``)."""
    label = selector_label(result)
    if learner or result.get("_learners_differ"):
        label += f", {learner_name(result)}"
    variant = result.get("_variant")
    return f"{label} [{variant}]" if variant else label


def collect(sweep_dir: str | Path) -> tuple[list[dict[str, Any]], list[str]]:
    """Every job's result.json under ``sweep_dir`` (one level down), and the job folders without one (a failed
    job's entry names its error)."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise FileNotFoundError(f"sweep folder {sweep_dir} does not exist")
    results, missing = [], []
    for job in sorted(p for p in sweep_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        path = job / "result.json"
        if not path.exists():
            error = read_error(job)
            if error is not None:
                missing.append(f"{job.name} (failed: {error.get('type')}: {str(error.get('message'))[:120]})")
            elif (job / ".hydra").exists() or (job / "train.log").exists():
                missing.append(job.name)
            continue
        try:
            result = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            log.warning("skipping unreadable %s (%s)", path, e)
            missing.append(job.name)
            continue
        overrides = job / ".hydra" / "overrides.yaml"
        if overrides.exists():
            import yaml

            result["_overrides"] = [str(o) for o in (yaml.safe_load(overrides.read_text()) or [])]
        results.append(result)
    label_variants(results)
    return results, missing


# The axes of Table 1 (rows: selector and embedding, and the learner when jobs differ in it; columns: budget;
# cells pool the seeds) and overrides that do not change what a job computes; any other setting that differs
# between jobs makes rows of its own.
TABLE_AXES = {"seed", "budget", "selector", "embedding", "semi"}
NOT_SETTINGS = ("hydra", "paths", "resume", "cache", "logger", "progress")
# result.json fields that change results, for jobs without .hydra/overrides.yaml (report on copied results);
# a field a job leaves empty (pseudo_size under FixMatch) does not apply to it
RESULT_SETTINGS = {"folds": "folds", "pseudo_size": "pseudo.size", "image_size": "image_size"}


def _override_key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def label_variants(results: list[dict[str, Any]]) -> list[str]:
    """Set ``result["_variant"]`` to the settings that tell a job apart from the others besides the table's
    axes (e.g. ``folds=2 pseudo.size=0``; ``""`` when none), so Table 1 never pools them as if they were seeds.
    Jobs of different learners (``semi``) are told apart by ``result["_learners_differ"]`` instead: their rows
    name the learner (:func:`row_label`). Returns the names of those settings."""
    # results from before the semi group that learned nothing after (after: null) name no learner of their own
    learners = {learner_of(r) for r in results if (r.get("classifier") or {}).get("learner") or _after(r)}
    learners_differ = len(learners) > 1
    # a result field only one kind of job has (pseudo.size: the pseudo-label jobs) is a setting of those jobs
    # alone: it tells jobs apart only where two that have it differ
    varying = {
        field for field in RESULT_SETTINGS if len({r[field] for r in results if r.get(field) is not None}) > 1
    }
    sets = []
    for r in results:
        r["_learners_differ"] = learners_differ
        own = {
            o
            for o in r.get("_overrides", [])
            if _override_key(o) not in TABLE_AXES and not _override_key(o).startswith(NOT_SETTINGS)
        }
        for field, name in RESULT_SETTINGS.items():
            if (
                field in varying
                and r.get(field) is not None
                and not any(_override_key(o) == name for o in own)
            ):
                own.add(f"{name}={r[field]}")
        sets.append(own)
    common = set.intersection(*sets) if sets else set()
    keys: set[str] = set()
    for r, own in zip(results, sets, strict=True):
        differ = sorted(own - common)
        r["_variant"] = " ".join(differ)
        keys.update(_override_key(o) for o in differ)
    return sorted(keys)


def summarise(results: list[dict[str, Any]], metric: str = "f1") -> dict[tuple[str, str, int], list[float]]:
    """``(selector label, phase, budget) -> [metric of each seed]``."""
    cells: dict[tuple[str, str, int], list[float]] = defaultdict(list)
    for r in results:
        metrics = r.get("metrics") or {}
        for phase, _ in PHASES:
            m = metrics.get(phase)
            if m and m.get(metric) is not None and not math.isnan(m[metric]):
                cells[(row_label(r), phase, int(r["budget"]))].append(float(m[metric]))
    return cells


def _fmt(values: list[float]) -> str:
    if not values:
        return "–"
    mean = statistics.fmean(values)
    if len(values) == 1:
        return f"{mean:.3f} (n=1)"
    return f"{mean:.3f} ± {statistics.stdev(values):.3f} (n={len(values)})"


def write_table1(
    sweep_dir: str | Path,
    out_dir: str | Path | None = None,
    metric: str = "f1",
    ceilings: dict[str, float] | None = None,
) -> dict[str, Path]:
    """Write ``table1.md``, ``table1.csv``, ``table1.png`` and ``label_efficiency.png`` (with ``ceilings``,
    ``{label: value}``, as lines) for the sweep; returns their paths."""
    sweep_dir = Path(sweep_dir)
    results, missing = collect(sweep_dir)
    if not results:
        raise ValueError(f"no finished job (result.json) under {sweep_dir}")
    out_dir = Path(out_dir) if out_dir is not None else sweep_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    cells = summarise(results, metric)
    phases = PHASES
    if any(learner_of(r) == "fixmatch" for r in results):  # "pseudo-labeling" would misname FixMatch's rows
        phases = (("before", "Labeled images alone"), ("after", "With the pool (semi)"))
    budgets = sorted({b for _, _, b in cells} | {int(r["budget"]) for r in results})
    selectors = sorted(
        {s for s, _, _ in cells} | {row_label(r) for r in results},
        key=lambda s: (not s.startswith("Random selection"), s),
    )
    varying = sorted({k for r in results for k in (_override_key(o) for o in r["_variant"].split())})

    lines = [
        f"# Table 1: {metric.upper()} on the validation set",
        "",
        f"Sweep: `{sweep_dir}` — {len(results)} finished jobs"
        + (f", {len(missing)} not finished: {'; '.join(missing)}" if missing else ""),
        "",
        *(
            [
                f"Settings that differ between these jobs besides selector, embedding, budget and seed: "
                f"{', '.join(varying)}; each setting has rows of its own (in brackets).",
                "",
            ]
            if varying
            else []
        ),
        "| Selector | Training | " + " | ".join(f"{b} images" for b in budgets) + " |",
        "|---|---|" + "---|" * len(budgets),
    ]
    rows = []
    for s in selectors:
        for phase, phase_name in phases:
            vals = [cells.get((s, phase, b), []) for b in budgets]
            if not any(vals):
                continue
            lines.append(f"| {s} | {phase_name} | " + " | ".join(_fmt(v) for v in vals) + " |")
            for b, v in zip(budgets, vals, strict=True):
                if v:
                    sd = statistics.stdev(v) if len(v) > 1 else 0.0
                    rows.append([s, phase, b, metric, f"{statistics.fmean(v):.6f}", f"{sd:.6f}", len(v)])
    lines += ["", "Cells: mean ± sample standard deviation over seeds (n = number of seeds)."]
    if not cells:
        # a selection-only sweep (~classifier): no F1 to tabulate, so say what each job chose
        lines = [
            "# Selections of the sweep",
            *lines[1 : next(i for i, line in enumerate(lines) if line.startswith("| Selector | Training"))],
            "No classifier ran in these jobs (`~classifier`): the selections they made.",
            "",
        ]
        lines += selection_summary(results)
    paths = {"md": out_dir / "table1.md", "csv": out_dir / "table1.csv", "png": out_dir / "table1.png"}
    with atomic_path(paths["md"]) as tmp:
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    write_csv_atomic(paths["csv"], [["selector", "phase", "budget", "metric", "mean", "std", "n"], *rows])
    if cells:
        _plot(paths["png"], cells, selectors, budgets, metric)
        paths["curve"] = write_label_efficiency(results, out_dir / "label_efficiency.png", metric, ceilings)
    else:
        paths.pop("png")
    return paths


def learner_of(result: dict[str, Any]) -> str:
    """The learner a job used (``semi``): ``pseudo``, ``fixmatch`` or ``none``; results from before the
    ``semi`` group say ``pseudo`` when they pseudo-labeled, else ``none``."""
    learner = (result.get("classifier") or {}).get("learner")
    if learner:
        return str(learner)
    return "pseudo" if _after(result) else "none"


LEARNER_NAMES = {"pseudo": "pseudo-labels (paper)", "fixmatch": "FixMatch", "none": "labels only"}


def _after(result: dict[str, Any]) -> bool:
    return bool((result.get("metrics") or {}).get("after"))


def learner_name(result: dict[str, Any]) -> str:
    learner = learner_of(result)
    return LEARNER_NAMES.get(learner, learner)


def efficiency_points(results: list[dict[str, Any]], metric: str = "f1") -> dict[str, dict[int, list[float]]]:
    """``line label -> labels -> [metric of each seed]``: one line per selector (with its variant) and learner,
    each job's final model (after learning from the pool; the labeled images alone with ``semi=none``). Jobs that
    labeled their whole pool are ceilings, not points (:func:`ceilings_of`)."""
    lines: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in results:
        if _labels_all(r):
            continue
        metrics = r.get("metrics") or {}
        m = metrics.get("after") or metrics.get("before")
        if not m or m.get(metric) is None or math.isnan(m[metric]):
            continue
        labels = int((r.get("classifier") or {}).get("labeled") or r["budget"])
        lines[row_label(r, learner=True)][labels].append(float(m[metric]))
    return lines


def _labels_all(result: dict[str, Any]) -> bool:
    return bool(result.get("pool_size")) and int(result["budget"]) >= int(result["pool_size"])


def ceilings_of(results: list[dict[str, Any]], metric: str = "f1") -> dict[str, float]:
    """``label -> metric`` of the jobs that labeled their whole pool (mean over seeds), by learner."""
    found: dict[str, list[float]] = defaultdict(list)
    for r in results:
        m = ((r.get("metrics") or {}).get("before") or {}).get(metric) if _labels_all(r) else None
        if m is not None:
            found[f"all {r['pool_size']} labels ({learner_name(r)})"].append(m)
    return {k: statistics.fmean(v) for k, v in found.items()}


def write_label_efficiency(
    results: list[dict[str, Any]],
    path: str | Path,
    metric: str = "f1",
    ceilings: dict[str, float] | None = None,
) -> Path:
    """``label_efficiency.png``: the metric against the number of labels (log scale), one line per selector and
    learner with mean ± std over seeds as error bars, and each ceiling (``{label: value}``, plus the jobs that
    labeled their whole pool) as a horizontal line. The picture a user decides from: how many labels buy how
    much, and what selection and learner add."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines = efficiency_points(results, metric)
    levels = {**ceilings_of(results, metric), **(ceilings or {})}
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    ticks: set[int] = set()
    for i, (name, pts) in enumerate(
        sorted(lines.items(), key=lambda kv: (not kv[0].startswith("Random"), kv[0]))
    ):
        xs = sorted(pts)
        ticks.update(xs)
        ys = [statistics.fmean(pts[x]) for x in xs]
        es = [statistics.stdev(pts[x]) if len(pts[x]) > 1 else 0.0 for x in xs]
        n = min(len(pts[x]) for x in xs)
        ax.errorbar(
            xs, ys, yerr=es, marker="o", capsize=3, color=colors[i % len(colors)],
            linestyle="--" if name.startswith("Random") else "-", label=f"{name} (n={n})",
        )  # fmt: skip
    for j, (name, value) in enumerate(sorted(levels.items())):
        ax.axhline(
            value, color="0.3", linestyle=":" if j % 2 else "-.", linewidth=1.2, label=f"{name}: {value:.3f}"
        )
    ax.set_xscale("log")
    if ticks:
        ax.set_xticks(sorted(ticks), [str(t) for t in sorted(ticks)])
    ax.minorticks_off()
    ax.set_xlabel("labeled images")
    ax.set_ylabel(f"{metric} on the validation set")
    ax.set_title("Label efficiency: mean ± std over seeds")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)
    return path


def selection_summary(results: list[dict[str, Any]]) -> list[str]:
    """Markdown rows, one per job: selector, embedding, budget, seed and, with pool labels, how the chosen
    images spread over the classes (classes covered, the largest class's count)."""
    lines = [
        "| Selector | Embedding | Budget | Seed | Classes covered | Largest class |",
        "|---|---|---|---|---|---|",
    ]
    for r in sorted(results, key=lambda r: (row_label(r), r["budget"], r["seed"])):
        hist = r.get("selected_class_histogram") or {}
        covered = f"{sum(v > 0 for v in hist.values())} of {len(hist)}" if hist else "no pool labels"
        largest = max(hist.items(), key=lambda kv: kv[1]) if hist else None
        lines.append(
            f"| {row_label(r)} | {r.get('embedding') or '-'} | {r['budget']} | {r['seed']} | {covered} | "
            + (f"{largest[0]} ({largest[1]})" if largest else "")
            + " |"
        )
    return lines


def _plot(
    path: Path,
    cells: dict[tuple[str, str, int], list[float]],
    selectors: list[str],
    budgets: list[int],
    metric: str,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, s in enumerate(selectors):
        for phase, phase_name in PHASES:
            pts = [(b, cells[(s, phase, b)]) for b in budgets if cells.get((s, phase, b))]
            if not pts:
                continue
            xs = [b for b, _ in pts]
            ys = [statistics.fmean(v) for _, v in pts]
            es = [statistics.stdev(v) if len(v) > 1 else 0.0 for _, v in pts]
            ax.errorbar(
                xs, ys, yerr=es, marker="o", capsize=3, color=colors[i % len(colors)],
                linestyle="-" if phase == "after" else "--", label=f"{s}, {phase_name.lower()}",
            )  # fmt: skip
    ax.set_xscale("log")
    ax.set_xticks(budgets, [str(b) for b in budgets])
    ax.minorticks_off()
    ax.set_xlabel("labeling budget (images)")
    ax.set_ylabel(f"validation {metric.upper()}")
    ax.set_title("Selection vs random: mean ± std over seeds")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)


try:
    from hydra.experimental.callback import Callback as _HydraCallback
except ImportError:  # pragma: no cover - hydra is a dependency
    _HydraCallback = object  # type: ignore[assignment,misc]


def failed_since(sweep_dir: str | Path, since: float) -> list[Path]:
    """Job folders under ``sweep_dir`` whose ``error.json`` was written at or after ``since`` (a Unix time)."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        return []
    found = []
    for job in sorted(p for p in sweep_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        marker = job / ERROR_FILE
        try:
            if marker.stat().st_mtime >= since:
                found.append(job)
        except OSError:
            continue
    return found


class Table1Callback(_HydraCallback):
    """Hydra callback: write Table 1 into the sweep folder when a multirun ends.

    It also adds the jobs that failed during this multirun to :data:`imgselect.run.jobs.FAILED`, so that
    ``train.py`` exits with status 1 whatever the launcher: with ``hydra/launcher=slurm``, ``local`` or
    ``parallel`` the jobs run in other processes, and their failures are known here only by the
    ``error.json`` each wrote into its folder (written since the multirun started, less a margin for the
    clocks of a cluster's nodes).
    """

    CLOCK_MARGIN_S = 60.0

    def __init__(self, metric: str = "f1") -> None:
        self.metric = metric
        self.started: float | None = None

    def on_multirun_start(self, config: Any, **kwargs: Any) -> None:
        self.started = time.time()

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if self.started is not None:
            known = {Path(f).resolve() for f in FAILED}
            for job in failed_since(sweep_dir, self.started - self.CLOCK_MARGIN_S):
                if job.resolve() not in known:
                    FAILED.append(str(job))
        try:
            paths = write_table1(sweep_dir, metric=self.metric)
        except ValueError as e:
            log.warning("no Table 1: %s", e)
            return
        log.info("Table 1: %s\n%s", paths["md"], paths["md"].read_text())
        track_table1(config, sweep_dir, paths, self.metric)


def track_table1(config: Any, sweep_dir: Path, paths: dict[str, Path], metric: str = "f1") -> None:
    """With ``logger=wandb``: Table 1, its figure and one row per finished job in a W&B run of ``job_type=summary``
    in the sweep's group (:meth:`imgselect.run.tracking.WandbTracker.log_sweep`). A W&B failure is logged, not raised:
    the table files are written."""
    logger_cfg = config.get("logger")
    if logger_cfg is None or not str(logger_cfg.get("_target_", "")).endswith(".WandbTracker"):
        return
    from hydra.utils import instantiate

    from imgselect.run.tracking import csv_table

    results, missing = collect(sweep_dir)
    jobs = [
        [
            Path(str(r.get("output_dir", ""))).name,
            selector_label(r),
            r.get("embedding"),
            r.get("budget"),
            r.get("seed"),
            *(((r.get("metrics") or {}).get(phase) or {}).get(metric) for phase, _ in PHASES),
        ]
        for r in results
    ]
    columns = [
        "job",
        "selector",
        "embedding",
        "budget",
        "seed",
        *(f"{metric} {phase}" for phase, _ in PHASES),
    ]
    try:
        instantiate(logger_cfg).log_sweep(
            sweep_dir,
            tables={"table1": csv_table(paths["csv"]), "jobs": (columns, jobs)},
            images={
                name: paths[key]
                for name, key in (("table1_figure", "png"), ("label_efficiency", "curve"))
                if key in paths
            },
            files=[paths["md"], paths["csv"]],
            summary={"jobs/finished": len(results), "jobs/not_finished": len(missing)},
        )
    except Exception:
        log.exception("W&B: no summary run for %s (table1.md has Table 1)", sweep_dir)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep_dir", help="a multirun folder (one subfolder per job)")
    parser.add_argument("--out", help="where to write table1.{md,csv,png} (default: the sweep folder)")
    parser.add_argument("--metric", default="f1", choices=["f1", "accuracy", "auroc"])
    parser.add_argument(
        "--ceiling",
        action="append",
        default=[],
        metavar="LABEL=VALUE",
        help="a horizontal line on label_efficiency.png, e.g. 'all labels, from scratch=0.826' (repeatable)",
    )
    args = parser.parse_args(argv)
    ceilings = {}
    for item in args.ceiling:
        name, _, value = item.rpartition("=")
        try:
            ceilings[name or "ceiling"] = float(value)
        except ValueError:
            parser.error(f"--ceiling {item!r}: give LABEL=VALUE with a number, e.g. 'all labels=0.85'")
    try:
        paths = write_table1(args.sweep_dir, args.out, args.metric, ceilings)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(paths["md"].read_text())
    print("wrote", ", ".join(str(p) for p in paths.values()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
