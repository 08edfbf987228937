"""Choosing the CPU preset's classifier settings on a split held out of the train pool (never the validation
set): held-out accuracy, AUROC and F1 per classifier setting, mean over budgets and seeds.

    .venv/bin/python benchmarks/holdout_preset.py logs/holdout_bs3 logs/holdout_bs16 logs/holdout_bs32_ep30

The sweeps are ordinary multiruns with ``data.val_split=train_holdout pseudo.size=0`` (commands in
docs/BENCHMARKS.md); each job's setting is read from its own ``.hydra/config.yaml``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

from omegaconf import OmegaConf
from record import mean_std, save_result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sweeps", nargs="+")
    parser.add_argument("--out", default="benchmarks/results/holdout_preset.json")
    args = parser.parse_args(argv)
    groups: dict[str, list[dict]] = defaultdict(list)
    for d in args.sweeps:
        for res in sorted(Path(d).glob("*/result.json")):
            cfg = OmegaConf.load(res.parent / ".hydra" / "config.yaml")
            if cfg.data.get("val_split") != "train_holdout":
                print(f"error: {res.parent} was not validated on the held-out split", file=sys.stderr)
                return 2
            fit = cfg.get("fit")
            c = fit.classifier if fit is not None else cfg.classifier  # sweeps from before fit.classifier
            key = f"batch {c.batch_size}, epochs {c.epochs}, min_steps {c.get('min_steps', 0)}"
            r = json.loads(res.read_text())
            m = r["metrics"]["before"]
            groups[key].append(
                {
                    "budget": r["budget"],
                    "seed": r["seed"],
                    "accuracy": m["accuracy"],
                    "auroc": m["auroc"],
                    "f1": m["f1"],
                    "folds_s": r["timings_s"]["classifier_folds"],
                }
            )
    rows = []
    for key, runs in groups.items():
        row = {"setting": key, "jobs": len(runs), "runs": runs}
        for metric in ("accuracy", "auroc", "f1", "folds_s"):
            vals = [x[metric] for x in runs]
            row[metric] = mean_std(vals)
        rows.append(row)
        print(
            f"{key:40s} n={len(runs)}  acc {row['accuracy']['mean']:.3f} ± {row['accuracy']['std']:.3f}  "
            f"AUROC {row['auroc']['mean']:.3f}  F1 {row['f1']['mean']:.3f}  folds {row['folds_s']['mean']:.0f} s"
        )
    save_result(args.out, " ".join(["python", *sys.argv]), sweeps=args.sweeps, settings=rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
