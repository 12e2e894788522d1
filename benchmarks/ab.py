"""A/B timing of several patternc versions (source trees) in one GPU run, beside FlexAttention.

    python benchmarks/ab.py --version v4=.ab/v4 --version new=. [--rows P1:16384,P3:16384] [--out FILE]
    python benchmarks/ab.py --version new=. --version big=.,fwd_block_m=128,fwd_block_n=128,fwd_num_warps=8

Each version runs in its own process (its own ``patternc`` import and kernel cache), on the
same inputs (seeded), timing the forward and forward+backward medians with
``triton.testing.do_bench``. FlexAttention (compiled, mask from the newest version's
``Pattern.to_flex``) runs once per row in this process, so every ratio is from one run on
one GPU. Prints a markdown table; ``--out`` also writes it with the command line.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

from patterns import PATTERNS, warm_call, warm_gpu

ROWS = {  # name: (pattern, B, Hq, Hkv, D)
    **{name: (text, 2, 16, 16, 128) for name, text in PATTERNS.items()},
    "P2gqa": (PATTERNS["P2"], 2, 16, 4, 64),
    "causal64": (PATTERNS["causal"], 2, 16, 16, 64),
    "causalgqa": (PATTERNS["causal"], 2, 16, 4, 128),
    "lecture": ("global(first, eos) + window(3) + random(2)", 2, 16, 16, 128),
}


def inputs(b, hq, hkv, n, d):
    import torch

    gen = torch.Generator(device="cuda").manual_seed(0)
    q = torch.randn(b, hq, n, d, device="cuda", dtype=torch.bfloat16, generator=gen).requires_grad_()
    k, v = (torch.randn(b, hkv, n, d, device="cuda", dtype=torch.bfloat16, generator=gen).requires_grad_()
            for _ in range(2))
    return q, k, v, torch.randn(q.shape, device="cuda", dtype=torch.bfloat16, generator=gen)


def time_pair(fn, do, leaves):
    """Forward and forward+backward medians (ms), after a first call (compiling) and `warm_gpu`."""
    import torch
    import triton

    torch.autograd.backward(fn(), do)
    warm_gpu()
    warm_call(fn)
    fwd = triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median")
    step = lambda: torch.autograd.backward(fn(), do)  # noqa: E731
    warm_call(step)
    fb = triton.testing.do_bench(step, warmup=25, rep=100, return_mode="median", grad_to_none=list(leaves))
    return fwd, fb


def worker(spec, rows):
    """Time patternc from ``spec`` (ROOT[,option=value...]) on each row; one JSON line per row."""
    root, *opts = spec.split(",")
    options = {k: int(v) for k, v in (o.split("=") for o in opts)}
    sys.path.insert(0, os.path.abspath(root))
    import patternc

    for name, n in rows:
        text, b, hq, hkv, d = ROWS[name]
        q, k, v, do = inputs(b, hq, hkv, n, d)
        attn = patternc.attention_from(text, **options)
        try:
            fwd, fb = time_pair(lambda: attn(q, k, v), do, (q, k, v))
            print(json.dumps({"row": name, "n": n, "fwd": fwd, "fb": fb}), flush=True)
        except Exception as exc:  # one failing version must not hide the others
            print(json.dumps({"row": name, "n": n, "error": f"{type(exc).__name__}: {str(exc)[:200]}"}), flush=True)


def flex_times(root, rows):
    import torch
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    sys.path.insert(0, os.path.abspath(root))
    import patternc

    torch._dynamo.config.cache_size_limit = 64
    flex = torch.compile(flex_attention, dynamic=False)  # one graph per row: no symbolic ints
    out = {}
    for name, n in rows:
        text, b, hq, hkv, d = ROWS[name]
        q, k, v, do = inputs(b, hq, hkv, n, d)
        try:
            mask = create_block_mask(patternc.parse(text).to_flex(n, n), None, None, n, n, device="cuda")
            fn = lambda: flex(q, k, v, block_mask=mask, enable_gqa=hq != hkv)  # noqa: E731
            ref = patternc.attention_from(text)(q, k, v).float()
            err = ((fn().float() - ref).norm() / ref.norm()).item()
            out[(name, n)] = (*time_pair(fn, do, (q, k, v)), err)
        except Exception as exc:  # the versions' numbers still print
            print(f"flex {name} {n}: {type(exc).__name__}: {str(exc)[:300]}", file=sys.stderr)
        del q, k, v, do
        torch.cuda.empty_cache()
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--version", action="append", required=True, help="NAME=ROOT (a source tree)")
    ap.add_argument("--rows", default="P1:16384,P2:16384,P2gqa:16384,P3:16384,P4:16384,causal:16384")
    ap.add_argument("--no-flex", action="store_true")
    ap.add_argument("--out")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    rows = [(r.split(":")[0], int(r.split(":")[1])) for r in args.rows.split(",")]
    if args.worker:
        return worker(args.worker, rows)
    versions = dict(v.split("=", 1) for v in args.version)
    results = {}
    for name, root in versions.items():
        proc = subprocess.run([sys.executable, __file__, "--worker", root, "--rows", args.rows, "--version", "x=."],
                              capture_output=True, text=True)
        for line in proc.stdout.splitlines():
            r = json.loads(line)
            results[(name, r["row"], r["n"])] = r
        if proc.returncode:
            print(f"{name}: exit {proc.returncode}\n{proc.stderr[-2000:]}", file=sys.stderr)
    flex = {} if args.no_flex else flex_times(list(versions.values())[-1].split(",")[0], rows)
    import torch
    import triton

    lines = [f"$ python {' '.join(sys.argv)}",
             f"{torch.cuda.get_device_name()}, torch {torch.__version__}, triton {triton.__version__}; bf16, "
             "ms = median of triton.testing.do_bench; ratio = flex ms / version ms", "",
             "| row | N | " + " | ".join(f"{v} fwd / fwd+bwd ms" for v in versions) + " | flex fwd / fwd+bwd ms | "
             + " | ".join(f"{v} vs flex" for v in versions) + " |",
             "|---|---|" + "---|" * (2 * len(versions) + 1)]
    for name, n in rows:
        cells, ratios = [], []
        f = flex.get((name, n))
        for v in versions:
            r = results.get((v, name, n), {"error": "missing"})
            if "error" in r:
                cells.append(r["error"][:60])
                ratios.append("")
                continue
            cells.append(f"{r['fwd']:.3f} / {r['fb']:.3f}")
            ratios.append(f"{f[0] / r['fwd']:.2f}x / {f[1] / r['fb']:.2f}x" if f else "")
        fcell = f"{f[0]:.3f} / {f[1]:.3f} (rel err vs patternc {f[2]:.1e})" if f else ""
        lines.append(f"| {name} | {n} | " + " | ".join(cells) + f" | {fcell} | " + " | ".join(ratios) + " |")
    text = "\n".join(lines)
    print(text)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(text + "\n")


if __name__ == "__main__":
    main()
