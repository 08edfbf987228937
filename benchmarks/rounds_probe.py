"""Fast probe of labeling in rounds: which policy chooses the next labels best, at which number of labels.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/rounds_probe.py [--seeds 10] [--rounds 10] [--per-round 10]
        [--splits train_holdout test] [--policies random typiclust margin cluster_margin mixed badge]
        [--out benchmarks/results/rounds_probe.json]

Ten-class Fashion-MNIST (pool: the first 12,000 train images), pixels embedding (16x16, PCA-50: the selection
probe's). Each policy runs ``--rounds`` rounds of ``--per-round`` labels through the pipeline's own selection
stage (each selector built from its ``conf/selector/*.yaml``; earlier picks set aside): ``random`` and
``typiclust`` every round (cold start), ``margin`` / ``cluster_margin`` / ``mixed`` (TypiClust first, then the
last classifier's predictions of the pool). The classifier of each round is the selection probe's: a logistic
regression on the standardised PCA-50 pixels of the labels so far; it predicts the pool for the next round and
is scored on the split's validation set. Paired by seed against cold-start TypiClust, with sign counts.
Splits: ``train_holdout`` (2,000 train images held out of the pool) to choose a policy, ``test`` to report.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from record import mean_std, save_result
from rounds import plot as plot_policies
from selection_probe import TASKS, compose, embed, fit_probe_features, hydra_conf, probe_scores, quiet_logs

POLICIES = ("random", "typiclust", "margin", "cluster_margin", "mixed", "badge")
BASE = "typiclust"


def probe_model(x: np.ndarray, y: np.ndarray, n_classes: int) -> Any:
    """The round's classifier: a logistic regression on the labels so far (one class: predicts it)."""
    from sklearn.linear_model import LogisticRegression

    present = np.unique(y)
    return None if len(present) == 1 else LogisticRegression(max_iter=1000).fit(x, y)


def pool_probs(model: Any, x: np.ndarray, y_train: np.ndarray, n_classes: int) -> np.ndarray:
    """``(n, n_classes)`` probabilities; classes the labels lack get 0."""
    probs = np.zeros((len(x), n_classes))
    if model is None:
        probs[:, int(y_train[0])] = 1.0
    else:
        probs[:, model.classes_] = model.predict_proba(x)
    return probs


def run_policy(
    policy: str, seed: int, ctx: dict[str, Any], rounds: int, per_round: int
) -> list[dict[str, Any]]:
    """One policy, one seed: the accuracy after each round."""
    from hydra.utils import instantiate

    from imgselect.stages.select import select_stage

    cfg = ctx["selector_cfgs"][policy]
    cfg.budget, cfg.seed = per_round, seed
    selector = instantiate(cfg.selector)
    pool, x_pool, y_pool = ctx["pool"], ctx["x_pool"], ctx["y_pool"]
    chosen, predictions, rows = np.zeros(0, dtype=np.int64), None, []
    for r in range(1, rounds + 1):
        emb = ctx["embeddings"] if selector.requires_embeddings else None
        selection = select_stage(
            selector, pool, emb, ctx["n_classes"], None, exclude={"labeled": chosen}, predictions=predictions
        )
        chosen = np.concatenate([chosen, selection.indices])
        y = y_pool[chosen]
        scores = probe_scores(x_pool[chosen], y, ctx["x_val"], ctx["y_val"], ctx["n_classes"])
        model = probe_model(x_pool[chosen], y, ctx["n_classes"])
        predictions = pool_probs(model, x_pool, y, ctx["n_classes"]) if selector.uses_predictions else None
        rule = str(selection.stats.get("round_rule", selector.pick))
        rows.append(
            {"policy": policy, "seed": seed, "round": r, "labels": len(chosen), "rule": rule, **scores}
        )
    return rows


def run_split(split: str, args: argparse.Namespace, cache_dir: str) -> list[dict[str, Any]]:
    from hydra.utils import instantiate

    from imgselect.embeddings.pixels import downscale

    task = TASKS["ten"]
    with tempfile.TemporaryDirectory() as out:
        base = compose(task, split, 0, cache_dir, out)
        dm = instantiate(base.data)
        dm.setup()
        selector_cfgs = {p: compose(task, split, 0, cache_dir, out, f"selector={p}") for p in args.policies}
    x_pool, x_val = fit_probe_features(downscale(dm.pool.images, 16), downscale(dm.val.images, 16), 50)
    ctx: dict[str, Any] = {
        "pool": dm.pool, "x_pool": x_pool, "y_pool": np.asarray(dm.pool.labels), "x_val": x_val,
        "y_val": np.asarray(dm.val.labels), "n_classes": len(dm.class_names), "selector_cfgs": selector_cfgs,
    }  # fmt: skip
    rows: list[dict[str, Any]] = []
    for seed in range(args.seeds):
        t0 = time.perf_counter()
        ctx["embeddings"], _ = embed(task, split, seed, "pixels", dm, cache_dir)
        for policy in args.policies:
            rows += [
                {"split": split, **row} for row in run_policy(policy, seed, ctx, args.rounds, args.per_round)
            ]
        print(
            f"[{split} | seed {seed}] {len(args.policies)} policies in {time.perf_counter() - t0:.1f} s",
            flush=True,
        )
    return rows


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """``{split: {policy: {labels: mean ± std, paired difference from cold-start TypiClust}}}``."""
    acc: dict[tuple[str, str, int], dict[int, float]] = defaultdict(dict)
    for r in rows:
        acc[(r["split"], r["policy"], r["labels"])][r["seed"]] = r["accuracy"]
    out: dict[str, Any] = defaultdict(lambda: defaultdict(dict))
    for (split, policy, labels), by_seed in sorted(acc.items()):
        entry: dict[str, Any] = {"n": len(by_seed), **mean_std(list(by_seed.values()))}
        base = acc.get((split, BASE, labels), {})
        seeds = sorted(set(base) & set(by_seed))
        if policy != BASE and seeds:
            diffs = [100 * (by_seed[s] - base[s]) for s in seeds]
            entry["minus_typiclust_points"] = {
                "mean": statistics.fmean(diffs), "std": statistics.stdev(diffs) if len(diffs) > 1 else 0.0,
                "wins": sum(d > 0 for d in diffs), "losses": sum(d < 0 for d in diffs), "pairs": len(diffs),
            }  # fmt: skip
        out[split][policy][labels] = entry
    return {s: dict(p) for s, p in out.items()}


def markdown(summary: dict[str, Any], policies: list[str]) -> str:
    lines: list[str] = []
    for split, by_policy in summary.items():
        labels = sorted({n for rows in by_policy.values() for n in rows})
        lines += [f"**{split}** (accuracy, mean ± std over seeds; in brackets: points over cold-start TypiClust "
                  "with the same seed, and seeds ahead / pairs)", "",
                  "| policy | " + " | ".join(str(n) for n in labels) + " |", "|---|" + "---|" * len(labels)]  # fmt: skip
        for policy in policies:
            cells = []
            for n in labels:
                e = by_policy.get(policy, {}).get(n)
                if e is None:
                    cells.append("–")
                    continue
                d = e.get("minus_typiclust_points")
                gain = f" ({d['mean']:+.1f}, {d['wins']}/{d['pairs']})" if d else ""
                cells.append(f"{e['mean']:.3f}{gain}")
            lines.append(f"| {policy} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def plot(summary: dict[str, Any], split: str, path: Path) -> None:
    """One split's curves, drawn as ``benchmarks/rounds.py`` draws a sweep's."""
    ylabel = f"accuracy ({split} split, linear probe)"
    plot_policies(summary[split], path, ylabel=ylabel, xlabel="labels (all rounds so far; ten classes)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--per-round", type=int, default=10)
    parser.add_argument("--splits", nargs="+", default=["train_holdout", "test"])
    parser.add_argument("--policies", nargs="+", default=list(POLICIES))
    parser.add_argument(
        "--cache-dir", default=str(Path(__file__).resolve().parents[1] / ".cache" / "imgselect")
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/rounds_probe.json"))
    args = parser.parse_args()
    quiet_logs()
    t0 = time.perf_counter()
    rows: list[dict[str, Any]] = []
    with hydra_conf():
        for split in args.splits:
            rows += run_split(split, args, args.cache_dir)
    summary = summarise(rows)
    md = markdown(summary, args.policies)
    print(md)
    save_result(args.out, " ".join(["python", *sys.argv]), minutes=round((time.perf_counter() - t0) / 60, 1),
                summary=summary, runs=rows)  # fmt: skip
    args.out.with_suffix(".md").write_text(md)
    for split in summary:
        plot(summary, split, args.out.with_name(f"{args.out.stem}_{split}.png"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
