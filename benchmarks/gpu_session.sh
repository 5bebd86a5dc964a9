#!/usr/bin/env bash
# The GPU work of the course in steps that each fit one 10-minute command on a
# GPU machine that has python3 with torch, triton, numpy and pytest (nothing is
# installed). Run from the repository root; what a step produces is copied to
# OUTDIR (default: $OUT, else /tmp/bnref-gpu), because the machine's copy of the
# repository does not come back.
#
#   bash benchmarks/gpu_session.sh check    versions, compile for sm_90, the Triton
#                                           tests on CUDA, A3's solution with its
#                                           bandwidth test
#   bash benchmarks/gpu_session.sh sweep I,J,...   tilings per case on those shapes
#                                           (0,1,2,3 then 4,5,6,7: each half fits one
#                                           command) -> sweep.json in OUTDIR
#   bash benchmarks/gpu_session.sh bench    benchmark without torch.compile, shapes 0-7
#   bash benchmarks/gpu_session.sh compile I,J,...   benchmark with torch.compile
#                                           on those shapes (split the list over
#                                           several commands), merge with
#                                           gpu_bn.py --merge
set -euo pipefail
step=${1:?usage: gpu_session.sh check|sweep|bench|compile SHAPES [OUTDIR]}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
unset TRITON_INTERPRET
case "$step" in
  check)
    out=${2:-${OUT:-/tmp/bnref-gpu}}; mkdir -p "$out"
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/check.log"
    python3 -c "import torch, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'cudnn', torch.backends.cudnn.version(), 'triton', triton.__version__)" | tee -a "$out/check.log"
    python3 benchmarks/gpu_bn.py --compile-only 2>&1 | tee -a "$out/check.log"
    python3 -m pytest -q -p no:cacheprovider tests/test_triton.py 2>&1 | tee -a "$out/check.log"
    python3 tools/run_notebook_plain.py solutions/a3_triton_batchnorm/a3_triton_batchnorm.ipynb 2>&1 | tee -a "$out/check.log"
    ;;
  sweep)
    out=${3:-${OUT:-/tmp/bnref-gpu}}; mkdir -p "$out"
    python3 benchmarks/gpu_bn.py --sweep ${2:+--shapes "$2"} --out "$out/sweep.json" 2>&1 | tee "$out/sweep.log"
    ;;
  bench)
    out=${2:-${OUT:-/tmp/bnref-gpu}}; mkdir -p "$out"
    python3 benchmarks/gpu_bn.py --no-compile --markdown --out "$out/bench.json" 2>&1 | tee "$out/bench.log"
    ;;
  compile)
    shapes=${2:?compile needs shape indices, e.g. 0,1,2,3}
    out=${3:-${OUT:-/tmp/bnref-gpu}}; mkdir -p "$out"
    python3 benchmarks/gpu_bn.py --shapes "$shapes" --markdown --out "$out/compile-${shapes//,/_}.json" 2>&1 | tee "$out/compile-${shapes//,/_}.log"
    ;;
  *)
    echo "unknown step $step: use check, sweep, bench or compile" >&2; exit 2
    ;;
esac
