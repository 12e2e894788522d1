"""Where one attention call spends its time: CPU (Python, dispatch, launch) and GPU, per op.

    python benchmarks/profile_call.py [--pattern P4] [--q-len 1] [--kv-len 65536] [--backward]

B=8, 32 query / 8 kv heads, D=128, bf16 (the decoding row of issue 8). Prints the wall time
per call with and without a synchronize, then torch.profiler's table of the 10 calls.
"""

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import patternc  # noqa: E402
from patterns import PATTERNS  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pattern", default="P4")
    ap.add_argument("--q-len", type=int, default=1)
    ap.add_argument("--kv-len", type=int, default=65536)
    ap.add_argument("--backward", action="store_true")
    args = ap.parse_args()
    q = torch.randn(8, 32, args.q_len, 128, device="cuda", dtype=torch.bfloat16, requires_grad=args.backward)
    k, v = (torch.randn(8, 8, args.kv_len, 128, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    attn = patternc.attention_from(PATTERNS.get(args.pattern, args.pattern))

    def call():
        out = attn(q, k, v)
        if args.backward:
            out.sum().backward()

    for _ in range(3):
        call()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(100):
        call()
    t1 = time.perf_counter()
    torch.cuda.synchronize()
    t2 = time.perf_counter()
    for _ in range(100):
        call()
        torch.cuda.synchronize()
    t3 = time.perf_counter()
    print(f"{args.pattern} Lq={args.q_len} Lk={args.kv_len}: CPU issue {1e4 * (t1 - t0):.1f} us/call, "
          f"queue drained {1e4 * (t2 - t0):.1f} us/call, synchronized {1e4 * (t3 - t2):.1f} us/call")
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU,
                                            torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(10):
            call()
        torch.cuda.synchronize()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))


if __name__ == "__main__":
    main()
