"""Sweep tile configurations for the forward and backward kernels (bf16, 16K tokens).

    python benchmarks/tune_tiles.py

Forward timed alone; backward timed alone on a retained graph (triton.testing.do_bench,
median). Patterns with and without the random component separate mask cost from tiling."""

import sys
from pathlib import Path

import torch
import triton

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import patternc  # noqa: E402
from patternc import runtime  # noqa: E402
from patternc.runtime import TileConfig  # noqa: E402

FWD = [(128, 64, 4, 3), (128, 64, 8, 3), (128, 128, 8, 3), (64, 64, 4, 3), (128, 32, 4, 4), (64, 128, 4, 3)]
BWD = [(64, 64, 4, 2), (64, 64, 8, 3), (128, 64, 8, 2), (64, 128, 8, 2), (32, 64, 4, 3), (128, 128, 8, 2)]
PATTERNS = ["global(first, eos) + window(3) + random(2)", "global(first, eos) + window(3)", "window(left=1023, right=0)"]


def bench(pattern, d, fwd, bwd, n=16384, heads=16):
    runtime.default_configs = lambda *a: (TileConfig(*fwd), TileConfig(*bwd))
    attn = patternc.attention_from(pattern)
    q, k, v = (torch.randn(1, heads, n, d, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
    do = torch.randn_like(q)
    try:
        t_f = triton.testing.do_bench(lambda: attn(q, k, v), warmup=25, rep=100, return_mode="median")
        o = attn(q, k, v)
        t_b = triton.testing.do_bench(lambda: torch.autograd.backward(o, do, retain_graph=True), warmup=25, rep=100,
                                      return_mode="median", grad_to_none=[q, k, v])
    except Exception as exc:
        return f"failed {type(exc).__name__}: {str(exc)[:60]}"
    return t_f, t_b


def main():
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, triton {triton.__version__}; bf16 B=1 H=16 N=16384")
    for d in (64, 128):
        for pattern in PATTERNS:
            print(f"\nD={d} {pattern}")
            for fwd in FWD:
                r = bench(pattern, d, fwd, BWD[0])
                print(f"  fwd {fwd}: " + (f"{r[0]:.3f} ms" if isinstance(r, tuple) else r))
            for bwd in BWD:
                r = bench(pattern, d, FWD[0], bwd)
                print(f"  bwd {bwd}: " + (f"{r[1]:.3f} ms" if isinstance(r, tuple) else r))


if __name__ == "__main__":
    main()
