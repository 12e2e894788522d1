#!/usr/bin/env bash
# Nsight Compute's warp stall reasons (% of active warps' cycles) for one kernel of one
# forward+backward per row (bf16, B=2, H=16, D=128), after a first call that compiles it.
#   run(command="KERNEL=attn_fwd_ws bash benchmarks/ncu_stalls.sh P4:16384", carry=[".whl"])
# Rows: NAME:N with NAME in benchmarks/patterns.py, or a pattern's text (then PATTERN:N).
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit
export PYTHONPATH=/tmp/site:$PWD PATTERNC_CACHE_DIR=/tmp/pc PATTERNC_PARALLEL_COMPILE=0
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
NCU=$(command -v ncu || ls /usr/local/cuda*/bin/ncu 2>/dev/null | head -1)
[ -n "$NCU" ] || { echo "no ncu on this machine"; exit 1; }
reasons="no_instruction barrier long_scoreboard short_scoreboard wait math_pipe_throttle mio_throttle lg_throttle
 branch_resolving membar sleeping dispatch_stall drain imc_miss misc not_selected selected tex_throttle"
metrics=$(for r in $reasons; do printf "smsp__warp_issue_stalled_%s_per_warp_active.pct," "$r"; done)
metrics="${metrics}smsp__inst_executed.sum,sm__cycles_elapsed.max,gpu__time_duration.sum"
for row in "$@"; do
  name=${row%:*}; n=${row##*:}
  echo "== $row ${KERNEL:-attn_fwd_ws}"
  timeout ${NCU_S:-240} "$NCU" -k "regex:${KERNEL:-attn_fwd_ws}" --launch-skip 1 --launch-count 1 --metrics "$metrics" \
    python3 - "$name" "$n" 2>&1 <<'PY' | grep -E "smsp__|sm__|gpu__" | sed 's/smsp__warp_issue_stalled_//; s/_per_warp_active.pct//'
import sys
import torch
sys.path.insert(0, "benchmarks")
import patternc
from patterns import PATTERNS
name, n = sys.argv[1], int(sys.argv[2])
q, k, v = (torch.randn(2, 16, n, 128, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
attn = patternc.attention_from(PATTERNS.get(name, name))
for _ in range(2):
    attn(q, k, v).backward(torch.ones_like(q))
torch.cuda.synchronize()
PY
done | tee -a "$OUT/ncu-stalls.txt"
