"""Entry point: `python train.py` (one job) or `python train.py -m selector=ae,random budget=125,200` (a sweep).
An installed package has the same command as `imgselect-train` (imgselect/run/cli.py)."""

import os
from pathlib import Path

import hydra
from omegaconf import DictConfig

from imgselect.run.cli import exit_on_failures, job

os.environ.setdefault("IMGSELECT_ROOT", str(Path(__file__).resolve().parent))


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    return job(cfg)


if __name__ == "__main__":
    main()
    exit_on_failures()  # a multirun went on past failed jobs: say so in the exit status
