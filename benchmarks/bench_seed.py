"""First rough timing: the lecture example at 16K tokens, patternc vs FlexAttention
(compiled, same mask) vs dense SDPA (flash, no mask) vs SDPA with a dense boolean mask.

    python benchmarks/bench_seed.py [--seq-len 16384] [--head-dim 64] [--heads 16] [--batch 1]

Prints forward and forward+backward medians (triton.testing.do_bench), useful TFLOP/s
(4 * attended pairs * D per forward, x2.5 for forward+backward) and ratios."""

import argparse
import sys
from pathlib import Path

import torch
import triton
from torch.nn.attention.flex_attention import create_block_mask, flex_attention

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import patternc  # noqa: E402
from flex_masks import mask_mod_for  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pattern", default="global(first, eos) + window(3) + random(2)")
    ap.add_argument("--seq-len", type=int, default=16384)
    ap.add_argument("--head-dim", type=int, default=64)
    ap.add_argument("--heads", type=int, default=16)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--dtype", default="bfloat16")
    args = ap.parse_args()
    torch.manual_seed(0)
    dtype = getattr(torch, args.dtype)
    B, H, N, D = args.batch, args.heads, args.seq_len, args.head_dim
    pattern = patternc.parse(args.pattern)
    q, k, v = (torch.randn(B, H, N, D, device="cuda", dtype=dtype, requires_grad=True) for _ in range(3))
    do = torch.randn_like(q)
    pairs = pattern.layout(N, N, 128, 128).attended_pairs
    fwd_flops = 4 * pairs * D * B * H
    dense_flops = 4 * N * N * D * B * H

    attn = patternc.attention_from(pattern)
    block_mask = create_block_mask(mask_mod_for(pattern, N, N), None, None, N, N, device="cuda")
    flex = torch.compile(flex_attention)
    dense_mask = pattern.dense_mask(N, N, device="cuda")
    impls = {
        "patternc": lambda: attn(q, k, v),
        "flex (compiled)": lambda: flex(q, k, v, block_mask=block_mask),
        "sdpa dense (no mask)": lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v),
        "sdpa + bool mask": lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=dense_mask),
    }
    ref = impls["flex (compiled)"]().float()
    print(f"device {torch.cuda.get_device_name()}, torch {torch.__version__}, triton {triton.__version__}")
    print(f"pattern {pattern}; B={B} H={H} N={N} D={D} {args.dtype}; density {pairs / N / N:.4%}")
    print(f"flex block mask: {block_mask.sparsity():.2f}% sparse at {block_mask.BLOCK_SIZE}")
    lay = pattern.layout(N, N, 128, 128)
    print(f"patternc layout 128x128: {lay.num_full} full, {lay.num_partial} partial tiles")
    print(f"{'impl':<22}{'fwd ms':>9}{'fwd TF/s':>10}{'fwd+bwd ms':>12}{'f+b TF/s':>10}{'max|diff|':>11}")
    rows = {}
    for name, fn in impls.items():
        try:
            out = fn()
            diff = (out.float() - ref).abs().max().item() if "dense (no" not in name else float("nan")
            t_f = triton.testing.do_bench(fn, warmup=25, rep=200, return_mode="median")
            t_fb = triton.testing.do_bench(lambda: torch.autograd.backward(fn(), do), warmup=25, rep=200,
                                           return_mode="median", grad_to_none=[q, k, v])
        except Exception as exc:  # e.g. out of memory for the dense mask
            print(f"{name:<22} failed: {type(exc).__name__}: {str(exc)[:100]}")
            continue
        flops = dense_flops if "dense (no" in name else fwd_flops
        rows[name] = (t_f, t_fb)
        print(f"{name:<22}{t_f:>9.3f}{flops / t_f / 1e9:>10.1f}{t_fb:>12.3f}{2.5 * flops / t_fb / 1e9:>10.1f}{diff:>11.2e}")
    if "patternc" in rows:
        for name, (t_f, t_fb) in rows.items():
            if name != "patternc":
                print(f"patternc speedup vs {name:<20} fwd {t_f / rows['patternc'][0]:.2f}x  fwd+bwd {t_fb / rows['patternc'][1]:.2f}x")


if __name__ == "__main__":
    main()
