"""Entry point: `python train.py` (one job) or `python train.py -m selector=ae,random budget=125,200` (a sweep)."""

import os
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

os.environ.setdefault("IMGSELECT_ROOT", str(Path(__file__).resolve().parent))


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    from imgselect.jobs import run_job
    from imgselect.pipeline import run

    return run_job(cfg, run)


if __name__ == "__main__":
    main()
    from imgselect.jobs import FAILED

    if FAILED:  # a multirun went on past failed jobs; say so in the exit status
        print(f"{len(FAILED)} job(s) failed: " + ", ".join(FAILED), file=sys.stderr)
        sys.exit(1)
