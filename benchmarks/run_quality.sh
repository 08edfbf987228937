#!/usr/bin/env bash
# The quality benchmark (issue 4) on a CPU machine: every sweep of docs/BENCHMARKS.md "Quality", then the
# tables. Each part is one multirun over selectors × budgets × seeds through the joblib launcher
# (hydra/launcher=parallel): N_JOBS single-threaded jobs side by side, because on 2 cores two one-thread jobs
# train 1.7-1.8× more images per second than one job on two threads (benchmarks/results/parallel_streams.json).
#
#     bash benchmarks/run_quality.sh [2class|10class|ceiling|tables|all]    (default: all)
#     N_JOBS=4 SEEDS="0 1 2 3 4" bash benchmarks/run_quality.sh 2class
#
# Sweep folders: logs/quality/<part>/<n>_<selector>_<embedding>_budget<B>_seed<S> (one job each; the log of the
# launching process: logs/quality/<part>.log). Seeds vary fastest, so the jobs side by side are mostly other
# seeds of one cell, and each seed's autoencoder is trained once and then read from the cache. Re-running a
# part resumes it: finished jobs are kept (resume=true). Cells run later on their own go to
# logs/quality/<part>_<suffix>/ (tables refuses a cell finished twice). Folders of the earlier script, one
# sweep per seed (logs/quality/<part>/seed<N>/), are read too.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
SEEDS=${SEEDS:-"0 1 2"}
N_JOBS=${N_JOBS:-$(nproc)}
part=${1:-all}

sweep() {  # sweep <name> <overrides...>: one multirun, seeds last (fastest), N_JOBS jobs at a time
  local name=$1
  shift
  "$PY" train.py -m hydra/launcher=parallel hydra.launcher.n_jobs="$N_JOBS" experiment=cpu "$@" \
    seed="${SEEDS// /,}" hydra.sweep.dir="logs/quality/$name" >"logs/quality/$name.log" 2>&1
}

mkdir -p logs/quality
if [[ $part == 2class || $part == all ]]; then
  # Default task: T-shirt/top vs Shirt, pool = train split (12,000), validation = test split (2,000).
  sweep 2class selector=random,ae,ae_centroid budget=125,200,500,1000
fi
if [[ $part == 10class || $part == all ]]; then
  # Ten classes, pool = the first 12,000 train images (CPU time; see BENCHMARKS.md), validation = 10,000 test.
  sweep 10class data=fashion_mnist_10 data.pool_limit=12000 selector=random,ae,ae_centroid budget=125,500
fi
if [[ $part == ceiling || $part == all ]]; then
  # Every pool label: the whole pool as the "selection", one model (folds=1), no pseudo-labels.
  SEEDS=${CEILING_SEEDS:-0} sweep ceiling_2class selector=random budget=12000 folds=1 pseudo.size=0 \
    fit.classifier.epochs=5
fi
if [[ $part == tables || $part == all ]]; then
  # Every sweep folder of a task: <task>/ and <task>_<suffix>/ (cells run later on their own; docs/BENCHMARKS.md
  # says which), and the one-sweep-per-seed folders <task>/seed<N>/ of the earlier script. A folder holding no
  # job adds nothing; a cell finished in two folders is refused, naming both.
  shopt -s nullglob
  sweeps() {  # sweeps <task>: its sweep folders, one per line
    local d
    for d in "logs/quality/$1"/ "logs/quality/$1"_*/ "logs/quality/$1"/seed*/ "logs/quality/$1"_*/seed*/; do
      [[ -d $d ]] && echo "${d%/}"
    done
  }
  mapfile -t two < <(sweeps 2class)
  mapfile -t ten < <(sweeps 10class)
  mapfile -t ceiling < <(sweeps ceiling_2class)
  "$PY" benchmarks/quality.py "${two[@]}" --ceiling "${ceiling[@]}" --paper \
    --out benchmarks/results/quality_2class.json --command "bash benchmarks/run_quality.sh 2class; ... ceiling"
  if ((${#ten[@]})); then
    "$PY" benchmarks/quality.py "${ten[@]}" \
      --out benchmarks/results/quality_10class.json --command "bash benchmarks/run_quality.sh 10class"
  fi
fi
