"""Where a new structure's first call spends its compile time: Triton's stages per kernel.

    python benchmarks/compile_stages.py [--pattern TEXT] [--n 4096] [--offline [--options k=v,...] [--d 128]
                                        [--kv-heads 16]]

Fresh Triton/patternc cache directories, kernels compiled in this process one after another
(PATTERNC_PARALLEL_COMPILE=0), each stage of Triton's NVIDIA backend timed (ttir, ttgir,
llir, ptx, cubin: the last one is ptxas), with the kernel's registers, spills and shared
memory. "other" is the rest of Triton's compile: its Python frontend (the kernel's AST to
MLIR), cache keys and files.

``--offline`` compiles for an H100/H200 (sm_90, 132 SMs) on a machine without a GPU: Triton's
compiler needs no device, only its target, so a stand-in driver names it, the plan keeps its
tables on the CPU and the kernels are only compiled (as `patternc.precompile` does), never
launched; registers and stack (spills) come from the cubin (Triton's cuobjdump). Compile times
compare between versions on one machine; this 2-core CPU compiles ~1.5-2x slower than the
GPU hosts.
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

for var in ("TRITON_CACHE_DIR", "PATTERNC_CACHE_DIR"):
    os.environ[var] = tempfile.mkdtemp(prefix=var.lower())
os.environ["PATTERNC_PARALLEL_COMPILE"] = "0"
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import torch  # noqa: E402
import triton.compiler  # noqa: E402
from triton.backends.nvidia.compiler import CUDABackend  # noqa: E402

import patternc  # noqa: E402
from patterns import compile_for_sm90, cubin_resources  # noqa: E402

ROWS = []


def _timed_stages():
    add_stages = CUDABackend.add_stages

    def patched(self, stages, options, language):
        add_stages(self, stages, options, language)
        for name, fn in list(stages.items()):
            def timed(src, metadata, _fn=fn, _name=name):
                t0 = time.perf_counter()
                result = _fn(src, metadata)
                ROWS[-1][1][_name] = time.perf_counter() - t0
                return result
            stages[name] = timed

    CUDABackend.add_stages = patched
    compile_ = triton.compiler.compile

    def compile(src, *args, **kwargs):
        ROWS.append((getattr(src, "name", "?"), {}))
        t0 = time.perf_counter()
        kernel = compile_(src, *args, **kwargs)
        ROWS[-1][1]["total"] = time.perf_counter() - t0
        ROWS[-1][1]["kernel"] = kernel
        return kernel

    triton.compiler.compile = compile


def offline(pattern: str, n: int, options: dict, d: int = 128, kv_heads: int = 16):
    """Compile every kernel of a forward+backward of ``pattern`` at ``n`` tokens (B=2, 16 query
    heads, ``kv_heads`` K/V heads, head dim ``d``, bf16) for sm_90, here."""
    import patternc.plan as plans
    from patternc.ops import launch

    compile_for_sm90()
    to_device = plans._to_device
    plans._to_device = lambda tables, device: to_device(tables, torch.device("cpu"))
    torch.cuda.get_device_capability = lambda device=None: (9, 0)
    torch.cuda.get_device_properties = lambda device=None: type("Props", (), {"multi_processor_count": 132})()
    device = torch.device("cuda", 0)
    plan = plans.plan_for(patternc.parse(pattern), n, n, None, device, torch.bfloat16, d, options,
                          group=16 // kv_heads)
    q = torch.empty(2, 16, n, d, dtype=torch.bfloat16, device="meta")
    k, v = (torch.empty(2, kv_heads, n, d, dtype=torch.bfloat16, device="meta") for _ in range(2))
    scale = d ** -0.5
    launch._warm(launch._forward_warmups(plan, q, k, v, scale, device) + launch._backward_warmups(plan, q, k, v, scale))
    print(f"pattern: {pattern}  n={n}  bf16 D={d} {16 // kv_heads} query heads per K/V head, compiled here for sm_90")
    for name, t in ROWS:
        kernel = t.pop("kernel")
        split = " warp-specialized" if "ttg.warp_specialize" in kernel.asm["ttgir"] else ""
        print(f"{_stages(name, t)}  {cubin_resources(kernel)} shared {kernel.metadata.shared}{split}")


def _stages(name: str, t: dict) -> str:
    """A kernel's total compile time, its stages', and the rest ("other")."""
    stages = {s: v for s, v in t.items() if s != "total"}
    return (f"{name:22s} total {t['total']:.2f} s  ({'  '.join(f'{s} {v:.2f}' for s, v in stages.items())}"
            f"  other {t['total'] - sum(stages.values()):.2f})")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pattern", default="global(first, eos) + window(5) + random(2, block=128)")
    ap.add_argument("--n", type=int, default=4096)
    ap.add_argument("--profile", action="store_true", help="cProfile the first backward")
    ap.add_argument("--offline", action="store_true", help="compile for sm_90 on this machine, GPU or not")
    ap.add_argument("--options", default="", help="with --offline: tile options, k=v,k=v (as attention_from takes them)")
    ap.add_argument("--d", type=int, default=128, help="with --offline: head dim")
    ap.add_argument("--kv-heads", type=int, default=16, help="with --offline: K/V heads (of 16 query heads)")
    args = ap.parse_args()
    _timed_stages()
    if args.offline:
        if 16 % args.kv_heads:
            sys.exit("--kv-heads must divide the 16 query heads")
        return offline(args.pattern, args.n, {k: int(v) for k, v in (o.split("=") for o in args.options.split(",") if o)},
                       args.d, args.kv_heads)
    q, k, v = (torch.randn(2, 16, args.n, 128, device="cuda", dtype=torch.bfloat16, requires_grad=True)
               for _ in range(3))
    t0 = time.perf_counter()
    out = patternc.attention_from(args.pattern)(q, k, v)
    torch.cuda.synchronize()
    t1 = time.perf_counter()
    d_out = torch.randn_like(out)
    if args.profile:
        import cProfile
        import pstats
        profile = cProfile.Profile()
        profile.enable()
    out.backward(d_out)
    torch.cuda.synchronize()
    t2 = time.perf_counter()
    print(f"pattern: {args.pattern}  n={args.n}  bf16 D=128: first forward {t1 - t0:.2f} s, backward {t2 - t1:.2f} s")
    if args.profile:
        profile.disable()
        pstats.Stats(profile).sort_stats("cumulative").print_stats(30)
    for name, t in ROWS:
        kernel = t.pop("kernel")
        kernel._init_handles()
        print(f"{_stages(name, t)}  regs {kernel.n_regs} spills {kernel.n_spills} shared {kernel.metadata.shared}")


if __name__ == "__main__":
    main()
