#!/usr/bin/env bash
# One device call. Results under $OUT.
#   run(command="bash benchmarks/gpu_run.sh golden", carry=[".whl"])            GPU golden suite
#   run(command="bash benchmarks/gpu_run.sh ab", carry=[".whl", ".ab"])          A/B timing of .ab/* vs this tree
#   run(command="bash benchmarks/gpu_run.sh bench [run.py args]", carry=[".whl"])  the benchmark table
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit
export PYTHONPATH=/tmp/site:$PWD PATTERNC_CACHE_DIR=/tmp/pc PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
what=$1; shift
header() {
  echo "\$ $*   # $(date -u +%FT%TZ)"
  nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
  python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, 'cuda', torch.version.cuda)"
}
case $what in
  golden)  # without arguments the int64-offsets case (~50 GB) runs alone: beside 3 workers it overflows an 80 GB H100
    pytest_gpu() {  # $1: time limit (s); the two runs together stay under the device's 600 s per command
      limit=$1; shift
      timeout "$limit" python3 -m pytest tests/test_gpu.py -m gpu -q -rP -p no:cacheprovider "$@" 2>&1 \
        | grep -E "^ok |passed|failed|Error|error|FAILED|assert"
    }
    { if [ $# -gt 0 ]; then header "python -m pytest tests/test_gpu.py -m gpu -q -rP -n 4 $*"
        pytest_gpu "${GOLDEN_S:-540}" -n 4 "$@"
      else header "python -m pytest tests/test_gpu.py -m gpu -q -rP -n 4 -k 'not offsets_beyond'; then -k offsets_beyond"
        pytest_gpu "${GOLDEN_S:-420}" -n 4 -k "not offsets_beyond"; pytest_gpu 120 -k offsets_beyond
      fi ; } > "$OUT/gpu-golden.txt" 2>&1
    tail -25 "$OUT/gpu-golden.txt" ;;
  ab)
    versions=""
    for d in .ab/*/; do [ -d "$d" ] && versions="$versions --version $(basename $d)=$d"; done
    timeout ${AB_S:-540} python3 benchmarks/ab.py $versions --version new=. --out "$OUT/ab.md" "$@" 2>&1 | tail -40 ;;
  bench)
    timeout ${BENCH_S:-540} python3 benchmarks/run.py --out "$OUT" "$@" 2>&1 | tail -60 ;;
esac
