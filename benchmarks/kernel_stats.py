"""What the compiler made of each kernel: registers, spills, shared memory, instruction mix.

    python benchmarks/kernel_stats.py [--patterns causal,P2] [--n 16384] [--head-dim 128] [--dump DIR]

Runs one forward and backward per pattern (bf16, B=2, H=16) so every kernel compiles, then
prints, per compiled kernel, its registers, spills, shared memory, and counts of the SASS
instructions that matter for attention (HGMMA tensor-core ops, MUFU exp2, global loads and
stores, shared-memory traffic, barriers). ``--dump`` writes each kernel's ttgir and SASS.
"""

import argparse
import collections
import re
import sys
from pathlib import Path

import torch
from patterns import PATTERNS

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import patternc  # noqa: E402
from patternc.kernels import cache  # noqa: E402

OPS = ("HGMMA", "MUFU.EX2", "LDG", "STG", "LDGSTS", "UTMALDG", "LDS", "STS", "LDSM", "BAR", "RED", "ATOM")


def sass_mix(sass: str) -> dict:
    counts = collections.Counter()
    for line in sass.splitlines():
        m = re.match(r"\S+\t(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]+)", line)
        if m:
            op = m.group(1)
            for name in OPS:
                if op.startswith(name):
                    counts[name] += 1
            counts["total"] += 1
    return counts


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--patterns", default="P2,causal")
    ap.add_argument("--n", type=int, default=16384)
    ap.add_argument("--head-dim", type=int, default=128)
    ap.add_argument("--dump")
    ap.add_argument("--options", default="", help="attention_from options, k=v,k=v")
    ap.add_argument("--profile", action="store_true", help="also time each kernel (torch.profiler, 5 steps)")
    args = ap.parse_args()
    for name in args.patterns.split(","):
        q, k, v = (torch.randn(2, 16, args.n, args.head_dim, device="cuda", dtype=torch.bfloat16,
                               requires_grad=True) for _ in range(3))
        options = {k: int(v) for k, v in (o.split("=") for o in args.options.split(",") if o)}
        attn = patternc.attention_from(PATTERNS.get(name, name), **options)
        do = torch.randn_like(q)
        torch.autograd.backward(attn(q, k, v), do)
        if args.profile:
            with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
                for _ in range(5):
                    torch.autograd.backward(attn(q, k, v), do)
                torch.cuda.synchronize()
            times = collections.defaultdict(float)
            for e in prof.events():
                if e.device_type == torch.autograd.DeviceType.CUDA and "attn" in e.name:
                    times[e.name] += e.device_time / 5
            print(f"{name}: " + ", ".join(f"{n} {t / 1e3:.3f} ms" for n, t in times.items()))
    flash = cache.kernels(False)
    for kname in ("attn_fwd", "attn_bwd_preprocess", "attn_bwd_dkdv", "attn_bwd_dq"):
        fn = getattr(flash, kname)
        for dev_cache in fn.device_caches.values():
            for i, kernel in enumerate(dev_cache[0].values()):
                try:
                    sass = kernel.asm["sass"]  # disassembled on demand (cuobjdump)
                except Exception as exc:  # noqa: BLE001
                    sass = ""
                    print(f"  (no SASS: {exc})")
                mix = sass_mix(sass)
                print(f"{kname}#{i}: regs {kernel.n_regs} spills {kernel.n_spills} shared {kernel.metadata.shared} "
                      f"warps {kernel.metadata.num_warps} stages {kernel.metadata.num_stages} | "
                      + " ".join(f"{op} {mix[op]}" for op in ("total",) + OPS if mix[op]))
                if args.dump:
                    out = Path(args.dump)
                    out.mkdir(parents=True, exist_ok=True)
                    (out / f"{kname}_{i}.ttgir").write_text(kernel.asm["ttgir"])
                    (out / f"{kname}_{i}.sass").write_text(sass)


if __name__ == "__main__":
    main()
