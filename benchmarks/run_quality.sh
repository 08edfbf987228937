#!/usr/bin/env bash
# The quality benchmark (issue 4) on a CPU machine: every sweep of docs/BENCHMARKS.md "Quality", then the
# tables. On 2 cores, several single-threaded sweeps side by side train ~2× more images per second than one
# sweep on two threads (measured: benchmarks/results/parallel_streams.json), so each seed is its own stream.
#
#     bash benchmarks/run_quality.sh [2class|10class|ceiling|tables|all]    (default: all)
#
# Sweep folders: logs/quality/<part>/seed<N>. Re-running a part starts its sweeps again from scratch (move away
# any logs/quality/<part>_*/ folders of cells run on their own first: tables refuses a cell finished twice).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
SEEDS=${SEEDS:-"0 1 2"}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
part=${1:-all}

streams() {  # streams <name> <overrides...>: one multirun per seed, side by side
  local name=$1
  shift
  local pids=()
  for s in $SEEDS; do
    "$PY" train.py -m experiment=cpu seed="$s" "$@" hydra.sweep.dir="logs/quality/$name/seed$s" \
      >"logs/quality/$name.seed$s.log" 2>&1 &
    pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p"; done
}

mkdir -p logs/quality
if [[ $part == 2class || $part == all ]]; then
  # Default task: T-shirt/top vs Shirt, pool = train split (12,000), validation = test split (2,000).
  streams 2class selector=random,ae,ae_centroid budget=125,200,500,1000
fi
if [[ $part == 10class || $part == all ]]; then
  # Ten classes, pool = the first 12,000 train images (CPU time; see BENCHMARKS.md), validation = 10,000 test.
  streams 10class data=fashion_mnist_10 data.pool_limit=12000 selector=random,ae,ae_centroid budget=125,500
fi
if [[ $part == ceiling || $part == all ]]; then
  # Every pool label: the whole pool as the "selection", one model (folds=1), no pseudo-labels.
  SEEDS=${CEILING_SEEDS:-0} streams ceiling_2class selector=random budget=12000 folds=1 pseudo.size=0 \
    classifier.epochs=5
fi
if [[ $part == tables || $part == all ]]; then
  # Every sweep folder of a task: <task>/seed<N>, plus <task>_<suffix>/seed<N> for cells run later on their own
  # (docs/BENCHMARKS.md says which). A cell finished in two folders is refused, naming both.
  shopt -s nullglob
  two=(logs/quality/2class/seed* logs/quality/2class_*/seed*)
  ten=(logs/quality/10class/seed* logs/quality/10class_*/seed*)
  "$PY" benchmarks/quality.py "${two[@]}" --ceiling logs/quality/ceiling_2class/seed* --paper \
    --out benchmarks/results/quality_2class.json --command "bash benchmarks/run_quality.sh 2class; ... ceiling"
  if ((${#ten[@]})); then
    "$PY" benchmarks/quality.py "${ten[@]}" \
      --out benchmarks/results/quality_10class.json --command "bash benchmarks/run_quality.sh 10class"
  fi
fi
