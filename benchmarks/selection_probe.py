"""Fast probe of "selection that beats random": a linear classifier trained only on the chosen images.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/selection_probe.py [--seeds 10] [--tasks ten two]
        [--splits train_holdout test] [--embeddings pixels autoencoder backbone]
        [--selectors random ae ae_centroid typiclust probcover kcenter] [--out benchmarks/results/selection_probe.json]

Every selector (built from its ``conf/selector/*.yaml`` by Hydra compose: the shipped defaults, budget and
seed overridden) on every embedding (obtained through the pipeline's own embedding stage with a config
composed like a job's, so trained autoencoders land in, or come from, the project's cache) chooses images
from the pool; a scikit-learn logistic regression is fitted on the chosen images with their true labels and
scored on the validation set. Its input is the same for every selector (PCA-50 of 16x16 pixels of the pool,
standardised), so only the choice of images differs. Gains over random are paired by seed.

Tasks: ten-class Fashion-MNIST with the pool limited to 12,000 images (``data.pool_limit=12000``, so the
autoencoder trains in about a minute per seed) and the default two-class task (T-shirt/top vs Shirt).
Splits: ``train_holdout`` (2,000 train images held out of the pool) to choose a selector x embedding,
``test`` (the test split) for the figures reported. Writes the JSON and a markdown table beside it.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from record import mean_std, save_result

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
SPLITS = ("train_holdout", "test")


@dataclass(frozen=True)
class Task:
    """A probe task: its data config, budgets and the budgets that make its low-budget regime."""

    name: str
    title: str
    overrides: tuple[str, ...]
    budgets: tuple[int, ...]
    low_budget_max: int


TASKS = {
    "ten": Task(
        "ten",
        "ten-class Fashion-MNIST (pool limited to the first 12,000 images: data.pool_limit=12000)",
        ("data=fashion_mnist_10", "data.pool_limit=12000"),
        (10, 20, 50, 100, 200),
        50,
    ),
    "two": Task(
        "two",
        "two-class Fashion-MNIST (T-shirt/top vs Shirt, the default task)",
        ("data=fashion_mnist",),
        (20, 50, 125, 200, 500, 1000),
        200,
    ),
}
EMBEDDINGS = {
    "pixels": ("pixels (16x16, PCA-50)", ("embedding=pixels",)),
    "autoencoder": ("autoencoder (CPU preset)", ("embedding=autoencoder",)),
    "backbone": ("backbone (random init)", ("embedding=backbone", "embedding.random_init=true")),
}
SELECTORS = {
    "random": "random",
    "ae": "ae (K-means, random member)",
    "ae_centroid": "ae_centroid (K-means, nearest centre)",
    "typiclust": "typiclust",
    "probcover": "probcover",
    "kcenter": "kcenter",
}
NO_EMBEDDING = "-"  # the random selector's embedding


# --------------------------------------------------------------------------------------------- pure helpers
def fit_probe_features(pool: np.ndarray, val: np.ndarray, dim: int = 50) -> tuple[np.ndarray, np.ndarray]:
    """PCA-``dim`` of ``pool`` (``(n, f)``), standardised on the pool; ``val`` projected and scaled alike."""
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import StandardScaler

    pca = PCA(n_components=min(dim, pool.shape[1], len(pool)), svd_solver="full").fit(pool)
    scaler = StandardScaler().fit(pca.transform(pool))
    return (
        scaler.transform(pca.transform(pool)).astype(np.float32),
        scaler.transform(pca.transform(val)).astype(np.float32),
    )


def probe_scores(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    n_classes: int,
    positive_class: int = 1,
) -> dict[str, Any]:
    """Fit a logistic regression on ``(x_train, y_train)``; accuracy and F1 on the validation set with the
    pipeline's definitions (two classes: F1 of ``positive_class``; more: macro F1). A training set of one
    class cannot fit a classifier: it predicts that class (``one_class`` says so)."""
    from sklearn.linear_model import LogisticRegression

    from imgselect.semisupervised import classification_metrics

    present = np.unique(y_train)
    probs = np.zeros((len(x_val), n_classes), dtype=np.float32)
    if len(present) == 1:
        probs[:, present[0]] = 1.0
    else:
        clf = LogisticRegression(max_iter=1000).fit(x_train, y_train)
        probs[:, clf.classes_] = clf.predict_proba(x_val)
    m = classification_metrics(probs, y_val, positive_class=positive_class)
    return {
        "accuracy": float(m["accuracy"]),  # type: ignore[arg-type]
        "f1": float(m["f1"]),  # type: ignore[arg-type]
        "classes_covered": len(present),
        "one_class": len(present) == 1,
    }


def paired_gain(values: dict[int, float], baseline: dict[int, float]) -> dict[str, Any] | None:
    """Gain of ``values`` over ``baseline`` (both by seed) in points (x100) on the seeds both have: mean,
    std, the number of seeds where it is strictly higher and the number of pairs."""
    seeds = sorted(set(values) & set(baseline))
    if not seeds:
        return None
    diffs = [100.0 * (values[s] - baseline[s]) for s in seeds]
    return {**mean_std(diffs), "wins": sum(d > 0 for d in diffs), "pairs": len(seeds)}


def format_gain(gain: dict[str, Any] | None) -> str:
    """``+13.1 (10/10)``: mean gain in points and the seeds won out of the pairs."""
    if gain is None:
        return ""
    return f"{gain['mean']:+.1f} ({gain['wins']}/{gain['pairs']})"


def summarise(runs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Cells keyed ``task|split|selector|embedding|budget``: per-seed values, mean ± std of accuracy and
    F1, and the paired gain over random (same task, split, budget and seed)."""
    by_cell: dict[tuple[str, str, str, str, int], dict[int, dict[str, Any]]] = defaultdict(dict)
    for r in runs:
        by_cell[(r["task"], r["split"], r["selector"], r["embedding"], r["budget"])][r["seed"]] = r
    cells: dict[str, dict[str, Any]] = {}
    for (task, split, sel, emb, budget), seeds in sorted(by_cell.items(), key=lambda kv: str(kv[0])):
        base = by_cell.get((task, split, "random", NO_EMBEDDING, budget), {})
        cell: dict[str, Any] = {
            "task": task, "split": split, "selector": sel, "embedding": emb, "budget": budget,
            "seeds": sorted(seeds),
        }  # fmt: skip
        for metric in ("accuracy", "f1"):
            vals = {s: r[metric] for s, r in seeds.items()}
            cell[metric] = {**mean_std(list(vals.values())), "per_seed": [vals[s] for s in sorted(vals)]}
            if sel != "random":
                cell[f"{metric}_gain"] = paired_gain(vals, {s: r[metric] for s, r in base.items()})
        cell["one_class_seeds"] = sum(r["one_class"] for r in seeds.values())
        cell["classes_covered"] = statistics.fmean(r["classes_covered"] for r in seeds.values())
        cells[f"{task}|{split}|{sel}|{emb}|{budget}"] = cell
    return cells


def choose(
    cells: dict[str, dict[str, Any]], task: str, split: str, budgets: Sequence[int], metric: str = "accuracy"
) -> tuple[tuple[str, str], float] | None:
    """The selector x embedding with the highest mean paired gain over random, averaged over ``budgets``
    (only candidates measured at all of them)."""
    gains: dict[tuple[str, str], list[float]] = defaultdict(list)
    for c in cells.values():
        if c["task"] == task and c["split"] == split and c["budget"] in budgets and c.get(f"{metric}_gain"):
            gains[(c["selector"], c["embedding"])].append(c[f"{metric}_gain"]["mean"])
    full = {k: statistics.fmean(v) for k, v in gains.items() if len(v) == len(budgets)}
    if not full:
        return None
    best = max(full, key=lambda k: full[k])
    return best, full[best]


def _rows(cells: dict[str, dict[str, Any]], task: str, split: str) -> list[tuple[str, str]]:
    order_sel = {s: i for i, s in enumerate(SELECTORS)}
    order_emb = {e: i for i, e in enumerate([NO_EMBEDDING, *EMBEDDINGS])}
    rows = {
        (c["selector"], c["embedding"]) for c in cells.values() if c["task"] == task and c["split"] == split
    }
    return sorted(rows, key=lambda r: (order_sel.get(r[0], 99), order_emb.get(r[1], 99), r))


def table(
    cells: dict[str, dict[str, Any]], task: str, split: str, budgets: Sequence[int], metric: str
) -> str:
    """Markdown: rows selector x embedding, columns budgets; ``mean ± std`` and, below it, the paired gain."""
    head = f"| selector | embedding | {' | '.join(str(b) for b in budgets)} |"
    lines = [head, "|---|---|" + "---|" * len(budgets)]
    for sel, emb in _rows(cells, task, split):
        out = []
        for b in budgets:
            c = cells.get(f"{task}|{split}|{sel}|{emb}|{b}")
            if c is None:
                out.append("")
                continue
            s = f"{c[metric]['mean']:.3f} ± {c[metric]['std']:.3f}"
            if c.get(f"{metric}_gain"):
                s += f"<br>{format_gain(c[f'{metric}_gain'])}"
            out.append(s)
        emb_label = EMBEDDINGS[emb][0] if emb in EMBEDDINGS else emb
        lines.append(f"| {SELECTORS.get(sel, sel)} | {emb_label} | {' | '.join(out)} |")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ the runs
@contextmanager
def hydra_conf() -> Iterator[None]:
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    os.environ.setdefault("IMGSELECT_ROOT", str(ROOT))
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        yield
    GlobalHydra.instance().clear()


def compose(task: Task, split: str, seed: int, cache_dir: str, out_dir: str, *extra: str) -> Any:
    """The job config the pipeline would see for ``train.py experiment=cpu <task> data.val_split=<split>``."""
    from hydra import compose as hydra_compose

    return hydra_compose(
        config_name="train",
        overrides=[
            "experiment=cpu",
            *task.overrides,
            f"data.val_split={split}",
            f"seed={seed}",
            f"paths.cache_dir={cache_dir}",
            f"paths.output_dir={out_dir}",
            *extra,
        ],
    )


def select(
    selector: Any, n_pool: int, embeddings: np.ndarray | None, n_classes: int
) -> tuple[np.ndarray, list[str]]:
    """The chosen pool indices, checked to be ``budget`` distinct ones, and the selector's notes."""
    selection = selector.select(
        n_pool, embeddings if selector.requires_embeddings else None, source="the pool", n_classes=n_classes
    )
    idx = np.asarray(selection.indices, dtype=np.int64)
    if len(idx) != selector.budget or len(np.unique(idx)) != len(idx):
        raise RuntimeError(f"{selector.name} returned {len(idx)} picks ({len(np.unique(idx))} distinct)")
    return idx, list(selection.notes)


def embed(
    task: Task, split: str, seed: int, emb_name: str, dm: Any, cache_dir: str
) -> tuple[np.ndarray, dict]:
    """Pool embeddings through the pipeline's embedding stage (cache hit, or computed and cached)."""
    import lightning.pytorch as pl
    from hydra.utils import instantiate

    from imgselect.embeddings.base import EmbedContext
    from imgselect.run.runtime import StageTimer, TrainerFactory
    from imgselect.stages.embed import embed_stage

    with tempfile.TemporaryDirectory(prefix="selection_probe_") as out:
        cfg = compose(task, split, seed, cache_dir, out, *EMBEDDINGS[emb_name][1])
        pl.seed_everything(seed, workers=True, verbose=False)  # as run() does before it builds anything
        trainers = TrainerFactory(
            trainer=functools.partial(instantiate(cfg.trainer), enable_progress_bar=False),
            logger=instantiate(cfg.logger) if cfg.get("logger") is not None else None,
            out_dir=Path(out),
            precision=str(cfg.trainer.get("precision")),
            strategy=cfg.trainer.get("strategy"),
        )
        embedding = instantiate(cfg.embedding)
        ctx = EmbedContext(pool=dm.pool, datamodule=dm, out_dir=Path(out), seed=seed, trainers=trainers)
        res = embed_stage(embedding, ctx, cache_dir, StageTimer(), use_cache=bool(cfg.get("cache", True)))
    assert res.embeddings is not None
    return res.embeddings, res.info


def run_split(
    task: Task,
    split: str,
    seeds: Sequence[int],
    budgets: Sequence[int],
    embeddings: Sequence[str],
    selectors: Sequence[str],
    cache_dir: str,
    t_start: float,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Every selector x embedding x budget x seed on one task and split: one row per probe fit."""
    from hydra.utils import instantiate

    from imgselect.embeddings.pixels import downscale

    with tempfile.TemporaryDirectory() as out:
        base = compose(task, split, 0, cache_dir, out)
        dm = instantiate(base.data)
        dm.setup()
        sel_cfgs = {s: compose(task, split, 0, cache_dir, out, f"selector={s}") for s in selectors}
    pool, val = dm.pool, dm.val
    n_classes, positive = len(dm.class_names), int(base.positive_class)
    x_pool, x_val = fit_probe_features(downscale(pool.images, 16), downscale(val.images, 16), 50)
    y_pool, y_val = np.asarray(pool.labels), np.asarray(val.labels)
    info = {
        "pool": len(pool),
        "val": len(val),
        "classes": list(dm.class_names),
        "image_size": pool.images.shape[-1],
    }
    print(f"[{task.name} | {split}] pool {len(pool)}, validation {len(val)}, {n_classes} classes", flush=True)

    runs: list[dict[str, Any]] = []
    failures: list[dict[str, Any]] = []

    def probe(seed: int, sel_name: str, emb_name: str, emb: np.ndarray | None) -> None:
        for budget in budgets:
            cfg = sel_cfgs[sel_name]
            cfg.budget, cfg.seed = budget, seed
            selector = instantiate(cfg.selector)
            t0 = time.perf_counter()
            try:
                idx, notes = select(selector, len(pool), emb, n_classes)
            except Exception as e:  # report it and go on: one selector failing must not lose the others
                import traceback

                failures.append(
                    {"task": task.name, "split": split, "seed": seed, "selector": sel_name,
                     "embedding": emb_name, "budget": budget, "error": repr(e),
                     "traceback": traceback.format_exc()}
                )  # fmt: skip
                print(f"  FAILED {sel_name} on {emb_name} at budget {budget}: {e!r}", flush=True)
                continue
            select_s = time.perf_counter() - t0
            scores = probe_scores(x_pool[idx], y_pool[idx], x_val, y_val, n_classes, positive)
            runs.append(
                {"task": task.name, "split": split, "seed": seed, "selector": sel_name, "embedding": emb_name,
                 "budget": budget, "select_s": round(select_s, 3), **scores, **({"notes": notes} if notes else {})}
            )  # fmt: skip

    for seed in seeds:
        if "random" in selectors:
            t0 = time.perf_counter()
            probe(seed, "random", NO_EMBEDDING, None)
            print(
                f"[{task.name} | {split} | seed {seed} | no embedding] random: {len(budgets)} budgets in "
                f"{time.perf_counter() - t0:.1f} s (elapsed {(time.perf_counter() - t_start) / 60:.1f} min)",
                flush=True,
            )
        others = [s for s in selectors if s != "random"]
        if not others:
            continue
        for emb_name in embeddings:
            t0 = time.perf_counter()
            emb, emb_info = embed(task, split, seed, emb_name, dm, cache_dir)
            t_emb = time.perf_counter() - t0
            for sel_name in others:
                probe(seed, sel_name, emb_name, emb)
            how = "cached" if emb_info.get("cache_hit") else "computed"
            print(
                f"[{task.name} | {split} | seed {seed} | {emb_name}] {emb.shape[1]}-d embedding {how} in "
                f"{t_emb:.1f} s; {len(others)} selectors x {len(budgets)} budgets in "
                f"{time.perf_counter() - t0 - t_emb:.1f} s (elapsed {(time.perf_counter() - t_start) / 60:.1f} min)",
                flush=True,
            )
            del emb
    return runs, {**info, "failures": failures}


# ------------------------------------------------------------------------------------------------- report
def markdown(
    cells: dict[str, dict[str, Any]], tasks: Sequence[Task], splits: Sequence[str], meta: dict[str, Any]
) -> str:
    lines = [
        "# Selection probe: a linear classifier trained only on the chosen images",
        "",
        f"Command: `{meta['command']}`; {meta['seeds']} seeds; wall time {meta['wall_min']:.1f} min on "
        f"{meta['cpus']} CPU cores.",
        "",
        "Each selector (its `conf/selector/*.yaml`, budget and seed overridden) chooses images from the pool on "
        "each embedding (the pipeline's embedding stage and cache, `experiment=cpu`: 32x32 images, the "
        "autoencoder trained 4 epochs per seed; the backbone is an untrained resnet18, `embedding.random_init="
        "true`, with a fresh random network per seed: no weights can be downloaded here). A logistic regression "
        "(scikit-learn, C=1, max_iter=1000) is fitted on the chosen images only, with their true labels, on the "
        "same features for every selector: PCA-50 of 16x16 pixels of the pool, standardised (the `pixels` "
        "embedding is the same PCA, unstandardised). A chosen set of one class predicts that class.",
        "",
        "Cells: mean ± std over seeds on the validation set; below, the gain over random selection paired by "
        "seed, in points (x100), and the seeds on which it beat random (strictly).",
    ]
    for task in tasks:
        info = meta["splits"].get(f"{task.name}|test") or {}
        lines += ["", f"## {task.title}", ""]
        if info:
            lines.append(
                f"Test split: pool {info['pool']} images, validation {info['val']} (the test split); train_holdout: "
                f"pool {meta['splits'].get(f'{task.name}|train_holdout', {}).get('pool', '?')} images, "
                f"validation 2,000 train images held out."
            )
        metric_f1 = "macro F1" if task.name == "ten" else "F1 of Shirt (class 1)"
        if "test" in splits:
            lines += [
                "",
                "Accuracy on the test split:",
                "",
                table(cells, task.name, "test", task.budgets, "accuracy"),
            ]
            lines += [
                "",
                f"{metric_f1} on the test split:",
                "",
                table(cells, task.name, "test", task.budgets, "f1"),
            ]
            one = [c for c in cells.values() if c["task"] == task.name and c["one_class_seeds"]]
            if one:
                lines += [
                    "",
                    "Chosen sets of a single class (predicting that class): "
                    + ", ".join(
                        f"{c['selector']}/{c['embedding']} @ {c['budget']} ({c['split']}): {c['one_class_seeds']}"
                        for c in one
                    ),
                ]
        if "train_holdout" in splits:
            low = tuple(b for b in task.budgets if b <= task.low_budget_max)
            lines += [
                "",
                "Choice on train_holdout (mean accuracy gain over random, averaged over budgets):",
                "",
            ]
            lines += [
                "| regime | budgets | chosen | holdout gain | test: gain per budget |",
                "|---|---|---|---|---|",
            ]
            for regime, budgets in (
                (f"low budget (≤ {task.low_budget_max})", low),
                ("overall", task.budgets),
            ):
                pick = choose(cells, task.name, "train_holdout", budgets)
                if pick is None:
                    lines.append(f"| {regime} | {', '.join(map(str, budgets))} | none measured | | |")
                    continue
                (sel, emb), gain = pick
                test_cells = [cells.get(f"{task.name}|test|{sel}|{emb}|{b}") for b in budgets]
                test = ", ".join(
                    f"{b}: {c['accuracy']['mean']:.3f} {format_gain(c.get('accuracy_gain'))}"
                    for b, c in zip(budgets, test_cells, strict=True)
                    if c
                )
                emb_label = EMBEDDINGS[emb][0] if emb in EMBEDDINGS else emb
                lines.append(
                    f"| {regime} | {', '.join(map(str, budgets))} | {SELECTORS.get(sel, sel)} on {emb_label} | "
                    f"{gain:+.1f} | {test} |"
                )
            lines += ["", "Accuracy on train_holdout (what the choice was made on):", ""]
            lines.append(table(cells, task.name, "train_holdout", task.budgets, "accuracy"))
    if meta.get("failures"):
        lines += ["", "## Failures", ""]
        lines += [
            f"- {f['task']} {f['split']} seed {f['seed']}: {f['selector']} on {f['embedding']} at budget "
            f"{f['budget']}: `{f['error']}`"
            for f in meta["failures"]
        ]
    if meta.get("notes"):
        lines += ["", "## Notes", "", *[f"- {n}" for n in meta["notes"]]]
    return "\n".join(lines) + "\n"


def quiet_logs() -> None:
    """One progress line per embedding: Lightning's banners, tips and per-selection K-means notes (kept in
    the JSON instead) stay out of the log."""
    import warnings

    import lightning.pytorch  # noqa: F401  (it sets its loggers' levels on import: override them after)

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "imgselect.selection"):
        logging.getLogger(name).setLevel(logging.ERROR)
    for message in (r".*does not have many workers.*", r".*isinstance\(treespec, LeafSpec\).*"):
        warnings.filterwarnings("ignore", message=message)


def report(
    out: str | Path,
    command: str,
    runs: list[dict[str, Any]],
    tasks: Sequence[Task],
    splits: Sequence[str],
    seeds: Sequence[int],
    split_info: dict[str, Any],
    failures: list[dict[str, Any]],
    wall_s: float,
    embeddings: Sequence[str],
    selectors: Sequence[str],
) -> None:
    """Summarise ``runs``, choose on train_holdout, and write the JSON and its markdown table."""
    cells = summarise(runs)
    choices = {}
    for task in tasks:
        low = tuple(b for b in task.budgets if b <= task.low_budget_max)
        for regime, budgets in (("low_budget", low), ("overall", task.budgets)):
            pick = choose(cells, task.name, "train_holdout", budgets)
            if pick:
                choices[f"{task.name}|{regime}"] = {
                    "selector": pick[0][0], "embedding": pick[0][1], "budgets": list(budgets),
                    "holdout_mean_accuracy_gain_points": pick[1],
                }  # fmt: skip
    notes = [
        "ten-class pool limited to the first 12,000 Fashion-MNIST train images (data.pool_limit=12000) so the "
        "autoencoder trains in about a minute per seed; the two-class pool is the task's full 12,000 "
        "(10,000 with train_holdout).",
    ]
    meta = {
        "command": command, "seeds": len(seeds), "wall_min": wall_s / 60, "cpus": os.cpu_count(),
        "splits": split_info, "failures": failures, "notes": notes,
    }  # fmt: skip
    save_result(
        out,
        command=command,
        wall_s=round(wall_s, 1),
        seeds=list(seeds),
        tasks={
            t.name: {"title": t.title, "budgets": list(t.budgets), "low_budget_max": t.low_budget_max}
            for t in tasks
        },
        embeddings={e: EMBEDDINGS[e][0] for e in embeddings},
        selectors=list(selectors),
        probe={
            "features": "PCA-50 of 16x16 pool pixels, standardised on the pool",
            "classifier": "sklearn LogisticRegression(max_iter=1000, C=1.0)",
        },
        splits=split_info,
        choices=choices,
        failures=failures,
        notes=notes,
        cells=cells,
        runs=runs,
    )
    md = Path(out).with_suffix(".md")
    md.write_text(markdown(cells, tasks, splits, meta), encoding="utf-8")
    print("wrote", md)


def merge(paths: Sequence[str], out: str) -> int:
    """Combine result files of this script (same tasks, other splits or seeds) into one, as one run would."""
    import json

    parts = [json.loads(Path(p).read_text()) for p in paths]
    runs = [r for part in parts for r in part["runs"]]
    task_names = list(dict.fromkeys(n for part in parts for n in part["tasks"]))
    tasks = [
        Task(n, parts[0]["tasks"].get(n, {}).get("title", TASKS[n].title), TASKS[n].overrides,
             tuple(next(p["tasks"][n]["budgets"] for p in parts if n in p["tasks"])), TASKS[n].low_budget_max)
        for n in task_names
    ]  # fmt: skip
    splits = [s for s in SPLITS if any(r["split"] == s for r in runs)]
    command = " + ".join(part["command"] for part in parts) + f" (merged: --merge {' '.join(paths)})"
    report(
        out,
        command,
        runs,
        tasks,
        splits,
        sorted({r["seed"] for r in runs}),
        {k: v for part in parts for k, v in part["splits"].items()},
        [f for part in parts for f in part["failures"]],
        max(part["wall_s"] for part in parts),  # they ran side by side
        list(dict.fromkeys(e for part in parts for e in part["embeddings"])),
        list(dict.fromkeys(s for part in parts for s in part["selectors"])),
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", nargs="+", choices=list(TASKS), default=list(TASKS))
    parser.add_argument("--seeds", type=int, default=10, help="seeds 0..N-1")
    parser.add_argument("--budgets-10", type=int, nargs="+", default=list(TASKS["ten"].budgets))
    parser.add_argument("--budgets-2", type=int, nargs="+", default=list(TASKS["two"].budgets))
    parser.add_argument("--embeddings", nargs="+", choices=list(EMBEDDINGS), default=list(EMBEDDINGS))
    parser.add_argument("--selectors", nargs="+", default=list(SELECTORS))
    parser.add_argument("--splits", nargs="+", choices=SPLITS, default=list(SPLITS))
    parser.add_argument("--cache-dir", default=str(ROOT / ".cache" / "imgselect"))
    parser.add_argument("--out", default="benchmarks/results/selection_probe.json")
    parser.add_argument(
        "--merge",
        nargs="+",
        metavar="JSON",
        help="no runs: combine the runs of these result files (e.g. one per split, run side by side) into --out",
    )
    args = parser.parse_args(argv)
    if args.merge:
        return merge(args.merge, args.out)
    missing = [s for s in args.selectors if not (CONF / "selector" / f"{s}.yaml").is_file()]
    if missing:
        print(f"error: no conf/selector/{missing[0]}.yaml (selectors: {sorted(SELECTORS)})", file=sys.stderr)
        return 2
    quiet_logs()
    tasks = [
        Task(
            t.name,
            t.title,
            t.overrides,
            tuple(args.budgets_10 if t.name == "ten" else args.budgets_2),
            t.low_budget_max,
        )
        for t in (TASKS[n] for n in args.tasks)
    ]
    seeds = list(range(args.seeds))
    t_start = time.perf_counter()
    runs: list[dict[str, Any]] = []
    split_info: dict[str, Any] = {}
    failures: list[dict[str, Any]] = []
    with hydra_conf():
        for task in tasks:
            for split in args.splits:
                r, info = run_split(
                    task, split, seeds, task.budgets, args.embeddings, args.selectors, args.cache_dir, t_start
                )
                runs += r
                failures += info.pop("failures")
                split_info[f"{task.name}|{split}"] = info
    wall = time.perf_counter() - t_start
    command = " ".join(
        ["python", "benchmarks/selection_probe.py", *(argv if argv is not None else sys.argv[1:])]
    )
    report(
        args.out, command, runs, tasks, args.splits, seeds, split_info, failures, wall,
        args.embeddings, args.selectors,
    )  # fmt: skip
    print(f"wall time {wall / 60:.1f} min")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
