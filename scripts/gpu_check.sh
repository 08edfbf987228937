#!/usr/bin/env bash
# The GPU checks, as one script for a machine with one NVIDIA GPU:  bash scripts/gpu_check.sh
#
#   (a) K-means on 1,000,000 x 512 blob points, K = 1000: FAISS on the GPU against the CPU, plain and
#       distributed_kmeans over 1 and 2 processes (benchmarks/distributed_kmeans.py)
#                                           -> benchmarks/results/gpu_check_kmeans.json
#   (b) a 2-job sweep, CPU preset on the GPU (trainer=gpu; selector=random,typiclust, embedding=pixels,
#       budget 125, 12,000 images): each job's timings -> benchmarks/results/gpu_check_sweep.json
#   (c) one seed of the paper's settings (64x64, 25 autoencoder epochs, 25 per fold, 50 after
#       pseudo-labeling, batch 128; trainer=gpu selector=ae budget=125 seed=0): its timings and metrics
#                                           -> benchmarks/results/gpu_check_paper.json
#
# Run from anywhere; it works in the repository root. Expected: about 6 minutes on one H100 once set up,
# at most 8 (each step is cut at its limit: STEP_A_S=120, STEP_B_S=120, STEP_C_S=240 seconds; a step cut
# or failed is reported, the others still run, and the script exits 1). Set-up, when .venv lacks
# faiss-gpu, is `make install FAISS=gpu` (needs PyPI; minutes more). Jobs' folders go to $GPU_CHECK_WORK
# (default: a new folder under /tmp). Where $OUT is set, the three JSON files and the log are copied there.
# Exit status: 0 all ran; 1 a step failed or was cut; 2 no GPU; 3 no Python environment with faiss-gpu.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

STEP_A_S=${STEP_A_S:-120}
STEP_B_S=${STEP_B_S:-120}
STEP_C_S=${STEP_C_S:-240}
RESULTS=benchmarks/results
WORK=${GPU_CHECK_WORK:-$(mktemp -d /tmp/gpu_check.XXXXXX)}
PY=.venv/bin/python
FAILED=()
START=$SECONDS
mkdir -p "$WORK"
LOG="$WORK/gpu_check.log"
exec > >(tee -a "$LOG") 2>&1

say() { printf '[gpu_check %4ss] %s\n' "$((SECONDS - START))" "$*"; }
die() {
  say "STOP: $2"
  exit "$1"
}

# ---- 0. a GPU, an environment with faiss-gpu, the data --------------------------------------------------
if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
  die 2 "no NVIDIA GPU here (nvidia-smi is missing or lists none). Run this on a machine with one GPU."
fi
say "GPU: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | head -1)"

faiss_gpus() { "$PY" -c 'import faiss; print(faiss.get_num_gpus())' 2>/dev/null || echo 0; }
if [ ! -x "$PY" ] || [ "$(faiss_gpus)" -lt 1 ]; then
  say "set-up: .venv has no FAISS that sees the GPU; running make install FAISS=gpu (pip, from PyPI)"
  if ! make install FAISS=gpu; then
    die 3 "make install FAISS=gpu failed. It needs python3 with venv (3.11, as the locks were compiled for),
  network access to PyPI for requirements-dev-gpu.lock (torch, lightning, hydra-core, faiss-gpu-cu12 and
  the CUDA 12 runtime wheels nvidia-cublas-cu12 and nvidia-cuda-runtime-cu12 that faiss-gpu-cu12 loads) and
  an NVIDIA driver for CUDA 12 or later. On a machine without network, make .venv elsewhere with the same
  OS and Python (make install FAISS=gpu) and bring it here, then run this script again."
  fi
  [ "$(faiss_gpus)" -ge 1 ] || die 3 "FAISS in .venv sees no GPU after make install FAISS=gpu: check that
  faiss-gpu-cu12 is installed (.venv/bin/pip show faiss-gpu-cu12), not faiss-cpu, and that nvidia-smi works."
fi
say "python: $("$PY" -c 'import faiss, torch; print(f"torch {torch.__version__} (CUDA {torch.cuda.is_available()}), faiss {faiss.__version__} ({faiss.get_num_gpus()} GPU)")')"
if [ ! -f data/fashion-mnist/train-images-idx3-ubyte ] && [ ! -f data/fashion-mnist/train-images-idx3-ubyte.gz ] \
  && [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  say "Fashion-MNIST is in neither data/fashion-mnist nor /usr/share/datasets/fashion-mnist: steps (b) and (c)
  will try to download it (needs the network; else copy the four IDX files, 30 MB as .gz, into data/fashion-mnist)"
fi

# ---- helpers -------------------------------------------------------------------------------------------
# step NAME LIMIT_S COMMAND...: run with a time limit, say how long it took, note a failure and go on
step() {
  local name=$1 limit=$2 t0=$SECONDS rc=0
  shift 2
  say "step $name: $*"
  timeout --signal=INT --kill-after=20 "$limit" "$@" || rc=$?
  if [ "$rc" -eq 0 ]; then
    say "step $name: done in $((SECONDS - t0)) s"
    return
  elif [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
    say "step $name: CUT at its limit of $limit s"
  else
    say "step $name: FAILED after $((SECONDS - t0)) s (exit $rc)"
  fi
  FAILED+=("$name")
}

# collect FOLDER OUT.json COMMAND: each job's result.json under FOLDER (timings, metrics, selection stats)
collect() {
  "$PY" - "$@" <<'PY'
import json, sys
from pathlib import Path

sys.path.insert(0, "benchmarks")
from record import save_result

folder, out, command = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
keep = ("selector", "budget", "seed", "image_size", "pool_size", "timings_s", "metrics", "selection_stats", "versions")
jobs = {p.parent.name: {k: v for k, v in json.loads(p.read_text()).items() if k in keep}
        for p in sorted(folder.glob("**/result.json"))}
failed = sorted(p.parent.name for p in folder.glob("**/error.json"))
if not jobs and not failed:
    sys.exit(f"  nothing to collect: no job folder with result.json or error.json under {folder}")
for name, job in jobs.items():
    print(f"  {name}: timings {job.get('timings_s')}")
save_result(out, command=command, jobs=jobs, failed_jobs=failed)
PY
}

# ---- (a) K-means: GPU against CPU ----------------------------------------------------------------------
step a "$STEP_A_S" "$PY" benchmarks/distributed_kmeans.py --points 1000000 --dim 512 --k 1000 \
  --procs 1 2 --devices gpu cpu --work "$WORK" --out "$RESULTS/gpu_check_kmeans.json"

# ---- (b) a 2-job sweep on the GPU, CPU preset ----------------------------------------------------------
SWEEP=(experiment=cpu trainer=gpu 'selector=random,typiclust' embedding=pixels budget=125
  data.pool_limit=12000 seed=0 "paths.cache_dir=$WORK/cache" "hydra.sweep.dir=$WORK/sweep")
step b "$STEP_B_S" "$PY" train.py -m "${SWEEP[@]}"
collect "$WORK/sweep" "$RESULTS/gpu_check_sweep.json" "python train.py -m ${SWEEP[*]}" || FAILED+=("b: collect")

# ---- (c) one seed of the paper's settings --------------------------------------------------------------
PAPER=(trainer=gpu selector=ae budget=125 seed=0 "paths.cache_dir=$WORK/cache" "hydra.run.dir=$WORK/paper")
step c "$STEP_C_S" "$PY" train.py "${PAPER[@]}"
collect "$WORK/paper" "$RESULTS/gpu_check_paper.json" "python train.py ${PAPER[*]}" || FAILED+=("c: collect")

# ---- the end -------------------------------------------------------------------------------------------
if [ -n "${OUT:-}" ]; then
  cp -f "$RESULTS"/gpu_check_{kmeans,sweep,paper}.json "$LOG" "$OUT"/ 2>/dev/null || true
fi
say "jobs' folders: $WORK; results: $RESULTS/gpu_check_{kmeans,sweep,paper}.json"
if [ "${#FAILED[@]}" -gt 0 ]; then
  say "not all ran: ${FAILED[*]}"
  exit 1
fi
say "all steps ran in $((SECONDS - START)) s"
