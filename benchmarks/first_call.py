"""First-call (compile) time of a never-seen structure, cold caches, with and without parallel
compilation (`patternc.kernels.parallel`).

    python benchmarks/first_call.py [--out FILE] [--structure TEXT ...] [--mode parallel]
    python benchmarks/first_call.py --profile [--structure TEXT]   # its first forward, cProfiled

Each (structure, mode) runs in a fresh process with empty Triton and patternc cache
directories. The process first warms up (CUDA context, imports; a forward of another
structure without gradients, which compiles no backward kernel, and a backward of a
multiplication: PyTorch's first backward in a process imports sympy, 0.5-2.3 s whatever the
op, not patternc's compile time), then times the new
structure's first forward (with gradients) and first backward, synchronized: wall seconds.
Mode ``serial``: PATTERNC_PARALLEL_COMPILE=0 (each kernel compiles when first launched);
``no-interim``: PATTERNC_INTERIM=0 (the forward forks children that compile the backward's
kernels); ``parallel``: the default (also, while a warp-specialized kernel compiles in a child,
its pass runs the plan's interim plain kernels). "own kernels s": from the first call until a
forward+backward on the plan's own kernels is done (children joined).
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

STRUCTURES = ["global(first, eos) + window(5) + random(2, block=128)", "causal",
              "(global(0:4) + window(left=4095, right=0)) & causal"]


def child(text: str, profile: bool = False) -> None:
    import torch

    import patternc

    def inputs():
        return [torch.randn(2, 16, 4096, 128, device="cuda", dtype=torch.bfloat16, requires_grad=True)
                for _ in range(3)]

    with torch.no_grad():
        patternc.attention_from("window(3)")(*inputs())
    x = torch.ones(2, device="cuda", requires_grad=True)
    (x * 2).backward(torch.ones_like(x))  # PyTorch's first backward in a process imports sympy (0.5-2 s)
    torch.cuda.synchronize()
    q, k, v = inputs()
    attn = patternc.attention_from(text)
    if profile:  # after the same warm-up: where the structure's first forward goes
        import cProfile
        import pstats

        t0 = time.perf_counter()
        with cProfile.Profile() as prof:
            attn(q, k, v)
            torch.cuda.synchronize()
        print(f"first forward (with gradients) of {text}: {time.perf_counter() - t0:.2f} s (under cProfile)")
        pstats.Stats(prof).sort_stats("cumulative").print_stats(45)
        return
    t0 = time.perf_counter()
    out = attn(q, k, v)
    torch.cuda.synchronize()
    t1 = time.perf_counter()
    out.backward(torch.randn_like(out))
    torch.cuda.synchronize()
    t2 = time.perf_counter()
    from patternc.kernels import parallel

    parallel.wait()  # the plan's own kernels, where the first calls ran its interim ones
    attn(q, k, v).backward(torch.randn_like(out))
    torch.cuda.synchronize()
    print(f"{t1 - t0:.2f} {t2 - t1:.2f} {time.perf_counter() - t0:.2f}")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--out")
    parser.add_argument("--structure", action="append", help="a pattern to time (repeatable; default: three)")
    parser.add_argument("--mode", action="append", choices=["serial", "no-interim", "parallel"], help="default: all")
    parser.add_argument("--profile", action="store_true",
                        help="instead: cProfile the first structure's first forward (after the warm-up), cold caches")
    args = parser.parse_args()
    if args.child:
        return child(args.child, args.profile)
    if args.profile:
        for var in ("TRITON_CACHE_DIR", "PATTERNC_CACHE_DIR"):
            os.environ[var] = tempfile.mkdtemp(prefix=var.lower())
        os.environ["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parent.parent),
                                                   os.environ.get("PYTHONPATH", "")])
        return subprocess.run([sys.executable, __file__, "--child", (args.structure or STRUCTURES)[0],
                               "--profile"]).returncode
    lines = ["| structure | mode | first forward s | first backward s | forward+backward s | own kernels s |",
             "|---|---|---|---|---|---|"]
    for text in args.structure or STRUCTURES:
        for mode in args.mode or ("serial", "no-interim", "parallel"):
            env = dict(os.environ, PATTERNC_PARALLEL_COMPILE="0" if mode == "serial" else "1",
                       PATTERNC_INTERIM="1" if mode == "parallel" else "0",
                       PYTHONPATH=os.pathsep.join([str(Path(__file__).resolve().parent.parent),
                                                   os.environ.get("PYTHONPATH", "")]))
            for var in ("TRITON_CACHE_DIR", "PATTERNC_CACHE_DIR"):
                env[var] = tempfile.mkdtemp(prefix=var.lower())
            result = subprocess.run([sys.executable, __file__, "--child", text], env=env, capture_output=True,
                                    text=True, timeout=600)
            if result.returncode != 0:
                raise SystemExit(result.stderr)
            fwd, bwd, own = map(float, result.stdout.split()[-3:])
            lines.append(f"| `{text}` | {mode} | {fwd:.2f} | {bwd:.2f} | {fwd + bwd:.2f} | {own:.2f} |")
            print(lines[-1], flush=True)
    text = "\n".join(lines) + "\n"
    if args.out:
        Path(args.out).write_text(f"command: python benchmarks/first_call.py\n\n{text}")


if __name__ == "__main__":
    main()
