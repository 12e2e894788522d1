"""Per-kernel GPU time of one pattern's forward+backward, beside do_bench's wall times.

    python benchmarks/kernel_times.py PATTERN N [option=value ...]    # e.g. P3 4096 fwd_warp_specialize=1

B=2, 16 query heads, bf16; ``kv_heads=`` (default 16) and ``head_dim=`` (128) among the options set
the shape; PATTERN is a name of benchmarks/patterns.py or a pattern's text.
Prints do_bench's forward and forward+backward medians, then torch.profiler's GPU time per
kernel per forward+backward step: at 4K, forward+backward wall times are CPU-bound and move by
~15% between runs, where the kernels' own times do not.
"""

import sys
from pathlib import Path

import torch
import triton
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import patternc  # noqa: E402
from patterns import PATTERNS  # noqa: E402

pattern, n, opts = sys.argv[1], int(sys.argv[2]), dict(kv.split("=") for kv in sys.argv[3:])
opts = {k: int(v) for k, v in opts.items()}
hkv, d = opts.pop("kv_heads", 16), opts.pop("head_dim", 128)
g = torch.Generator(device="cuda").manual_seed(0)
q, do = (torch.randn(2, 16, n, d, device="cuda", dtype=torch.bfloat16, generator=g) for _ in range(2))
k, v = (torch.randn(2, hkv, n, d, device="cuda", dtype=torch.bfloat16, generator=g) for _ in range(2))
q, k, v = (x.requires_grad_() for x in (q, k, v))
attn = patternc.attention_from(PATTERNS.get(pattern, pattern), **opts)


def fb():
    out = attn(q, k, v)
    torch.autograd.grad(out, (q, k, v), do)


for _ in range(30):
    fb()
torch.cuda.synchronize()
ms_f = triton.testing.do_bench(lambda: attn(q, k, v), warmup=50, rep=300)
ms = triton.testing.do_bench(fb, warmup=50, rep=300)
with profile(activities=[ProfilerActivity.CUDA]) as prof:
    for _ in range(20):
        fb()
    torch.cuda.synchronize()
print(f"{patternc.__file__} {pattern} {n} kv_heads={hkv} head_dim={d} {opts}: fwd {ms_f:.3f} ms, fwd+bwd {ms:.3f} ms")
for e in sorted(prof.key_averages(), key=lambda e: -e.device_time_total)[:8]:
    print(f"   {e.key[:40]:40s} {e.device_time_total / 20 / 1000:.3f} ms per step ({e.count // 20} per step)")
