"""Sweep tile configurations of the forward and backward kernels, each checked before timed.

    python benchmarks/tune_tiles.py [--n 16384] [--patterns causal,P3] [--head-dim 128]

For each pattern and configuration (block_m, block_n, num_warps, num_stages): the forward
output (and, for backward configurations, dQ/dK/dV) is compared with the baseline
configuration's on the same inputs, then timed (median of ``triton.testing.do_bench``; the
backward alone, on a retained graph). ``--device cpu`` is a dry run in the interpreter.
"""

import argparse
import sys
from pathlib import Path

import torch
from patterns import PATTERNS

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import patternc  # noqa: E402

FWD = [(64, 64, 4, 3), (128, 64, 8, 3), (128, 64, 4, 3), (128, 128, 8, 3), (128, 32, 4, 3), (128, 64, 8, 2)]
BWD = [(64, 64, 4, 2), (64, 128, 8, 2), (128, 64, 8, 2), (128, 128, 8, 2), (64, 64, 4, 3), (32, 64, 4, 2)]


def rel(a, b):
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=16384)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--heads", type=int, default=16)
    ap.add_argument("--head-dim", type=int, default=128)
    ap.add_argument("--patterns", default="causal,P3,P2")
    ap.add_argument("--device", default="cuda")
    args = ap.parse_args()
    cuda = args.device == "cuda"
    dtype = torch.bfloat16 if cuda else torch.float32
    if cuda:
        import triton

        bench = lambda fn: triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median")  # noqa: E731
        print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, triton {triton.__version__}")
    else:
        bench = lambda fn: float("nan")  # noqa: E731
    print(f"$ python {' '.join(sys.argv)}\nB={args.batch} H={args.heads} N={args.n} D={args.head_dim} {dtype}")
    for name in args.patterns.split(","):
        text = PATTERNS.get(name, name)
        gen = torch.Generator(device=args.device).manual_seed(0)
        shape = (args.batch, args.heads, args.n, args.head_dim)
        q, k, v, do = (torch.randn(shape, device=args.device, dtype=dtype, generator=gen) for _ in range(4))
        for t in (q, k, v):
            t.requires_grad_()
        print(f"\n{name}: {text}")
        base_out = base_grads = None
        for cfg in FWD:
            opts = dict(zip(("fwd_block_m", "fwd_block_n", "fwd_num_warps", "fwd_num_stages"), cfg))
            attn = patternc.attention_from(text, backend="kernels", **opts)
            try:
                out = attn(q, k, v)
                base_out = out if base_out is None else base_out
                print(f"  fwd {cfg}: {bench(lambda: attn(q, k, v)):.3f} ms  (rel diff vs first {rel(out, base_out):.1e})")
            except Exception as exc:
                print(f"  fwd {cfg}: failed {type(exc).__name__}: {str(exc)[:120]}")
        for cfg in BWD:
            opts = dict(zip(("bwd_block_m", "bwd_block_n", "bwd_num_warps", "bwd_num_stages"), cfg))
            attn = patternc.attention_from(text, backend="kernels", **opts)
            try:
                out = attn(q, k, v)
                grads = torch.autograd.grad(out, (q, k, v), do, retain_graph=True)
                base_grads = grads if base_grads is None else base_grads
                diff = max(rel(g, b) for g, b in zip(grads, base_grads))
                t = bench(lambda: torch.autograd.grad(out, (q, k, v), do, retain_graph=True))
                print(f"  bwd {cfg}: {t:.3f} ms  (rel diff of grads vs first {diff:.1e})")
            except Exception as exc:
                print(f"  bwd {cfg}: failed {type(exc).__name__}: {str(exc)[:120]}")
        del q, k, v, do
        if cuda:
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
