#!/usr/bin/env bash
# One-command GPU self-check of brainvq_monai (issue 14): a thin wrapper over `brainvq selfcheck --device cuda`.
#
#   scripts/gpu_check.sh [--install] [--total-s SECONDS] [other `brainvq selfcheck` options...]
#
# Run it from anywhere on a machine with one CUDA GPU. It uses this checkout's package (PYTHONPATH), so no install
# is needed when the dependencies are importable; --install runs `python -m pip install -q -e .[test]` (without
# the CPU constraints file) only when they are not. The self-check (CUDA tests, 2D bundle train/eval/sample at
# 128x128, benchmark sections) gets what is left of --total-s (default 480 s) after the install, and a hard
# `timeout` 60 s above it. Results: $OUT (default ./gpu_check): selfcheck.json, selfcheck.md, logs/, benchmark/,
# samples/. Checkpoints and the demo cohort go to $BRAINVQ_GPU_CHECK_WORK (default /tmp/brainvq_gpu_check).
#
# Exit status: 0 every step passed; 1 a step failed (named on the last line of stderr); 2 bad input;
# 3 CUDA not available (nothing run); 4 the install failed; 124 the hard timeout ended it.
set -u -o pipefail

cd "$(dirname "$0")/.." || exit 2
PY="${PYTHON:-$(command -v python || command -v python3)}"
install=0
total=480
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --install) install=1 ;;
    --total-s) total="${2:?--total-s needs a number of seconds}"; shift ;;
    *) args+=("$1") ;;
  esac
  shift
done
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
start=$SECONDS

deps="import brainvq_monai.cli, torch, monai, ignite, nibabel, skimage, tensorboard, PIL, nilearn, scipy, matplotlib, tqdm, jsonschema, einops, fire, pytest"
if [ "$install" = 1 ]; then
  if "$PY" -c "$deps" 2>/dev/null; then
    echo "gpu_check: the dependencies are importable; install skipped" >&2
  elif ! "$PY" -m pip install -q -e ".[test]"; then
    echo "gpu_check: error: python -m pip install -e .[test] failed" >&2
    exit 4
  fi
fi

left=$((total - (SECONDS - start)))
if [ "$left" -lt 60 ]; then
  echo "gpu_check: error: only ${left} s of --total-s ${total} left after the install" >&2
  exit 2
fi
"$PY" -c "import torch; print('gpu_check: torch', torch.__version__, 'CUDA', torch.version.cuda, 'available', torch.cuda.is_available())" >&2
exec timeout -k 15 $((left + 60)) "$PY" -m brainvq_monai.cli selfcheck --device cuda --out "${OUT:-gpu_check}" \
  --work "${BRAINVQ_GPU_CHECK_WORK:-/tmp/brainvq_gpu_check}" --total-s "$left" ${args[@]+"${args[@]}"}
