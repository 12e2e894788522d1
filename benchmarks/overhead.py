"""Per-call CPU cost of one attention call, layer by layer, against its GPU time.

    python benchmarks/overhead.py [--rows P2:4096,P3:4096,causal:4096,P4:1x65536]

Rows are NAME:N (B=2, H=16, D=128, bf16) or NAME:LQxLK (decoding: B=8, 32 query / 8 kv heads).
For each row: microseconds per call of 200 back-to-back calls without synchronizing (the CPU
cost when the CPU is the bottleneck) through each layer - the module, the custom op, the op's
plan lookup alone, and the `launch` function - beside the GPU time of the kernels
(torch.profiler), do_bench's median of the module call, and the same CPU and GPU figures
for forward+backward.
"""

import argparse
import sys
import time
from pathlib import Path

import torch
import triton

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import patternc  # noqa: E402
from patternc.ops import launch, op  # noqa: E402
from patternc.plan import plan_for  # noqa: E402
from patterns import PATTERNS  # noqa: E402


PROFILE = False


def per_call(fn, n=200):
    for _ in range(5):
        fn()
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(n):
        fn()
    cpu = (time.perf_counter() - t) / n * 1e6
    torch.cuda.synchronize()
    return cpu


def gpu_time(fn):
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(10):
            fn()
        torch.cuda.synchronize()
    return sum(e.device_time_total for e in prof.key_averages()) / 10


def row(name, spec):
    if "x" in spec:
        lq, lk = map(int, spec.split("x"))
        b, hq, hkv = 8, 32, 8
    else:
        lq = lk = int(spec)
        b, hq, hkv = 2, 16, 16
    text = PATTERNS.get(name, name)
    q = torch.randn(b, hq, lq, 128, device="cuda", dtype=torch.bfloat16)
    k, v = (torch.randn(b, hkv, lk, 128, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    attn = patternc.attention_from(text)
    scale = 128 ** -0.5
    plan = plan_for(attn.pattern, lq, lk, None, q.device, q.dtype, 128, {}, hq // hkv)
    with torch.no_grad():
        layers = {
            "module": lambda: attn(q, k, v),
            "custom op": lambda: torch.ops.patternc.attention(q, k, v, attn._text, scale, None, "auto", "{}"),
            "op body": lambda: op._plan(q, k, attn._text, None, "{}"),
            "launch.forward": lambda: launch.forward(plan, q, k, v, scale),
        }
        cpu = {name: per_call(fn) for name, fn in layers.items()}
        gpu = gpu_time(layers["module"])
        bench = triton.testing.do_bench(layers["module"], warmup=25, rep=100, return_mode="median") * 1e3
    qg, kg, vg = (t.clone().requires_grad_() for t in (q, k, v))
    do = torch.randn_like(q)

    def fb():
        torch.autograd.backward(attn(qg, kg, vg), do)
        qg.grad = kg.grad = vg.grad = None

    fb_cpu, fb_gpu = per_call(fb, 100), gpu_time(fb)
    if PROFILE:
        import cProfile
        import pstats
        profile = cProfile.Profile()
        profile.runcall(lambda: [fb() for _ in range(100)])
        torch.cuda.synchronize()
        pstats.Stats(profile).sort_stats("tottime").print_stats(25)
    cells = " | ".join(f"{cpu[n]:.0f}" for n in layers)
    print(f"| {name} | {lq}x{lk} | {cells} | {gpu:.0f} | {bench:.0f} | {fb_cpu:.0f} | {fb_gpu:.0f} |", flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", default="P1:4096,P2:4096,P3:4096,causal:4096,P2:16384,P4:1x65536,causal:16x65536")
    ap.add_argument("--profile", action="store_true", help="also print cProfile's top functions of each row's forward+backward")
    args = ap.parse_args()
    global PROFILE
    PROFILE = args.profile
    print(torch.cuda.get_device_name(), "torch", torch.__version__, "triton", triton.__version__)
    print("microseconds per call: CPU cost of 200 unsynchronized calls through each layer, GPU time of the "
          "kernels (profiler), do_bench median of the module; then forward+backward CPU and GPU")
    print("| row | Lq x Lk | module | custom op | op body (plan lookup) | launch.forward | GPU | do_bench "
          "| f+b CPU | f+b GPU |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for item in args.rows.split(","):
        name, spec = item.split(":")
        row(name, spec)


if __name__ == "__main__":
    main()
