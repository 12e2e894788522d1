#!/usr/bin/env bash
# Nsight Compute on the kernels of one forward+backward per row (bf16, B=2, H=16, D=128), after a
# first call that compiles them; the report of each kernel goes to $OUT/ncu-ROW.txt.
#   run(command="bash benchmarks/ncu_kernels.sh P3:16384 causal:16384", carry=[".whl"])
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit
export PYTHONPATH=/tmp/site:$PWD PATTERNC_CACHE_DIR=/tmp/pc PATTERNC_PARALLEL_COMPILE=0
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
NCU=$(command -v ncu || ls /usr/local/cuda*/bin/ncu 2>/dev/null | head -1)
[ -n "$NCU" ] || { echo "no ncu on this machine"; exit 1; }
for row in "$@"; do
  [[ $row == *:* ]] || { echo "rows are NAME:N (P3:16384), got $row"; exit 2; }
  name=${row%%:*}; n=${row##*:}
  timeout ${NCU_S:-240} "$NCU" -k "regex:attn_(fwd|bwd_dkdv|bwd_dq|bwd_ws)" --launch-skip "${NCU_SKIP:-3}" --launch-count "${NCU_COUNT:-3}" \
    --section SpeedOfLight --section Occupancy --section LaunchStats --section WarpStateStats \
    --section ComputeWorkloadAnalysis --section MemoryWorkloadAnalysis \
    python3 - "$name" "$n" > "$OUT/ncu-$name-$n.txt" 2>&1 <<'PY'
import sys
import torch
sys.path.insert(0, "benchmarks")
import patternc
from patterns import PATTERNS
name, n = sys.argv[1], int(sys.argv[2])
q, k, v = (torch.randn(2, 16, n, 128, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
attn = patternc.attention_from(PATTERNS[name])
for _ in range(3):  # the first call compiles; ncu skips its kernels (NCU_SKIP: 3 plain kernels, 2 fused)
    attn(q, k, v).backward(torch.ones_like(q))
torch.cuda.synchronize()
PY
  grep -E "attn_|Duration|Compute \(SM\) Throughput|Memory Throughput|Achieved Occupancy|Theoretical Occupancy|Registers Per|Block Limit|Issue Slots Busy|No Eligible|Warp Cycles Per Issued|L2 Hit|DRAM Throughput|Executed Ipc A" "$OUT/ncu-$name-$n.txt" | head -80
done
