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
BREAKDOWN = False


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


def breakdown(fb, n=200):
    """Inclusive CPU microseconds per forward+backward of the functions on its path (wrapped with
    timers; each wrapper adds ~0.5 us), and the autograd engine's fixed cost (a do-nothing
    autograd Function on the same tensors)."""
    import collections
    from patternc import nn
    spent, calls, saved = collections.Counter(), collections.Counter(), []

    def wrap(owner, attr):
        fn = getattr(owner, attr)
        saved.append((owner, attr, fn))

        def timed(*a, **kw):
            key = f"{attr}:{a[0].__name__}" if attr == "_launch" else attr
            t = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                spent[key] += time.perf_counter() - t
                calls[key] += 1
        setattr(owner, attr, timed)

    for owner, attr in [(nn.PatternAttention, "forward"), (op, "_forward"), (op, "_backward"), (op, "_plan"),
                        (launch, "forward"), (launch, "backward"), (launch, "_launch"), (launch, "empty"),
                        (launch, "_descriptors"), (launch, "_geometry"), (launch, "_forward_calls"),
                        (launch, "_backward_calls"), (launch, "_outputs"), (launch, "_launching"),
                        (torch.autograd, "backward")]:
        wrap(owner, attr)
    try:
        for _ in range(5):
            fb()
        spent.clear(), calls.clear()
        torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(n):
            fb()
        total = time.perf_counter() - t
        torch.cuda.synchronize()
    finally:
        for owner, attr, fn in reversed(saved):
            setattr(owner, attr, fn)

    # the same calls with the launch layer replaced by ready-made outputs: module, op and autograd alone
    ready = {}

    def fake_forward(plan, q, k, v, *_):
        if "fwd" not in ready:
            ready["fwd"] = torch.empty_like(q), q.new_empty(q.shape[:3], dtype=torch.float32)
        return ready["fwd"]

    def fake_backward(plan, q, k, v, *_):
        if "bwd" not in ready:
            ready["bwd"] = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
        return ready["bwd"]
    saved = [(launch, "forward", launch.forward), (launch, "backward", launch.backward)]
    launch.forward, launch.backward = fake_forward, fake_backward
    try:
        layers = per_call(fb, 500)
    finally:
        for owner, attr, fn in saved:
            setattr(owner, attr, fn)

    class Nothing(torch.autograd.Function):
        @staticmethod
        def forward(ctx, q, k, v):
            return torch.empty_like(q)

        @staticmethod
        def backward(ctx, do):
            return do, None, None

    q = torch.randn(2, 16, 64, 64, device="cuda", requires_grad=True)
    do = torch.randn_like(q)
    engine = per_call(lambda: torch.autograd.backward(Nothing.apply(q, q, q), do), 500)
    print(f"breakdown, us per forward+backward (wrapped total {total / n * 1e6:.0f}): " + ", ".join(
        f"{k} {v / n * 1e6:.1f}" + (f" ({calls[k] // n}x)" if calls[k] > n else "") for k, v in spent.items())
        + f"; without launch.forward/backward (module, op, autograd) {layers:.0f}"
        + f"; do-nothing autograd Function forward+backward {engine:.0f}", flush=True)


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
    if BREAKDOWN:
        breakdown(fb)
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
    ap.add_argument("--breakdown", action="store_true", help="also print each row's forward+backward CPU time per function")
    args = ap.parse_args()
    global PROFILE, BREAKDOWN
    PROFILE, BREAKDOWN = args.profile, args.breakdown
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
