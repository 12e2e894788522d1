#!/usr/bin/env bash
# One device call: the GPU golden suite, then the seed timing. Results under $OUT.
#   run(command="bash benchmarks/gpu_run.sh", carry=[".whl"])
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit
export PYTHONPATH=/tmp/site:$PWD PATTERNC_CACHE_DIR=/tmp/pc
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
{
  echo "\$ python -m pytest tests/test_gpu.py -m gpu -s -q   # $(date -u +%FT%TZ)"
  nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
  python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, 'cuda', torch.version.cuda)"
  timeout ${GOLDEN_S:-400} python3 -m pytest tests/test_gpu.py -m gpu -s -q -p no:cacheprovider 2>&1 | grep -v "^$"
} > "$OUT/gpu-golden.txt" 2>&1
tail -5 "$OUT/gpu-golden.txt"
for d in ${BENCH_DIMS:-64}; do
  echo "\$ python benchmarks/bench_seed.py --head-dim $d" > "$OUT/seed-d$d.txt"
  timeout ${BENCH_S:-120} python3 benchmarks/bench_seed.py --head-dim $d >> "$OUT/seed-d$d.txt" 2>&1
  cat "$OUT/seed-d$d.txt"
done
