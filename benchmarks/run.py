"""GPU benchmark harness: patternc vs FlexAttention (compiled) vs SDPA, over a table of rows.

    python benchmarks/run.py [--quick] [--only P1,P3] [--seq-lens 4096,16384] [--tag h100]
                             [--out benchmarks/results] [--skip-flex] [--no-backward] [--warm-cache]
    python benchmarks/run.py --pattern "window(255)" --seq-len 8192 [--batch 2 --heads 16
                             --kv-heads 4 --head-dim 64]      # one custom row instead of the table

Per row (pattern, N, B, Hq, Hkv, D; bf16) and method (flex, patternc; sdpa-flash and
sdpa-cudnn for the dense rows `causal` / `all`; sdpa-mask with a boolean mask up to 16K^2):
correctness first (output and dq/dk/dv against an fp32 reference for N <= 4096, else against
flex), then forward and forward+backward medians (triton.testing.do_bench), useful TFLOP/s,
peak memory and the first-call (compile) times. A failing method records its error and the run
goes on. Writes <out>/<date>-<tag>-bench.{json,md,png}; the JSON after every row (re-render
one a cut-short run left: python benchmarks/plot.py <json>). Triton, patternc and inductor
caches are fresh temp dirs unless --warm-cache.
"""

import argparse
import contextlib
import datetime
import gc
import json
import math
import os
import re
import shlex
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("PATTERNC_INTERIM", "1")  # first calls as users get them (patterns.py's default is off)
from patterns import PATTERNS, warm_call, warm_gpu  # noqa: E402
from plot import render, table_row  # stdlib-only at import: fine before the cache setup

HERE = Path(__file__).resolve().parent
G1, G2, P3, P4 = (PATTERNS[name] for name in ("P1", "P2", "P3", "P4"))
K4, K16, K64 = 4096, 16384, 65536
TABLE = (  # (name, pattern text, N, B, Hq, Hkv, D); all bf16
    [("P1", G1, n, 2, 16, 16, 128) for n in (K4, K16, K64)]
    + [("P2", G2, n, 2, 16, 16, 128) for n in (K4, K16, K64)]
    + [("P2-gqa", G2, n, 2, 16, 4, 64) for n in (K4, K16)]
    + [("P3", P3, n, 2, 16, 16, 128) for n in (K4, K16, K64)]
    + [("P4", P4, n, 2, 16, 16, 128) for n in (K4, K16, K64)]
    + [(t, t, n, 2, 16, 16, 128) for t in ("causal", "all") for n in (K4, K16)]
)
TOL = 2e-2  # bf16: a check passes when every relative error norm is below this
REF_MAX_N = 4096  # fp32 dense reference up to here; above, flex is the reference
MASK_MAX_PAIRS = K16 * K16  # SDPA with a dense boolean mask only up to Lq * Lk = 16K^2
CACHE_VARS = ("TRITON_CACHE_DIR", "PATTERNC_CACHE_DIR", "TORCHINDUCTOR_CACHE_DIR")
FLOPS = "useful FLOPs over attended pairs only (B*Hq*pairs): fwd 4*pairs*D, bwd 10*pairs*D, fwd+bwd 14*pairs*D"


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", help="comma-separated row-name prefixes (P1,P3,causal)")
    ap.add_argument("--seq-lens", help="comma-separated N to keep from the table")
    ap.add_argument("--quick", action="store_true", help="N <= 16384 and fewer timing reps")
    ap.add_argument("--out", default=str(HERE / "results"), help="output directory")
    ap.add_argument("--tag", default="run", help="goes into the output file names")
    ap.add_argument("--skip-flex", action="store_true")
    ap.add_argument("--no-backward", action="store_true", help="forward only")
    ap.add_argument("--warm-cache", action="store_true", help="keep the usual Triton/patternc/inductor caches")
    ap.add_argument("--pattern", help="benchmark this one pattern instead of the table")
    for flag, default in (("--seq-len", K16), ("--batch", 2), ("--heads", 16), ("--kv-heads", None), ("--head-dim", 128)):
        ap.add_argument(flag, type=int, default=default, help=f"custom row (default {default or '--heads'})")
    args = ap.parse_args()
    args.reps = (10, 30) if args.quick else (25, 100)  # do_bench warmup, rep (ms)
    return args


def select_rows(args):
    if args.pattern:
        return [("custom", args.pattern, args.seq_len, args.batch, args.heads, args.kv_heads or args.heads, args.head_dim)]
    rows = TABLE
    if args.only:
        prefixes = tuple(s.strip() for s in args.only.split(","))
        rows = [r for r in rows if r[0].startswith(prefixes)]
    if args.seq_lens:
        keep = {int(s) for s in args.seq_lens.split(",")}
        rows = [r for r in rows if r[2] in keep]
    return [r for r in rows if r[2] <= K16] if args.quick else rows


def load_libraries():
    """Import the GPU stack only after the cache variables are set (and never for --help)."""
    global torch, triton, patternc, F, SDPBackend, sdpa_kernel, create_block_mask, flex_attention
    sys.path.insert(0, str(HERE.parent))
    import torch
    import torch._dynamo
    import torch.nn.functional as F
    import triton
    import triton.testing
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    import patternc


def describe(exc):
    return f"{type(exc).__name__}: {exc}"[:400]


def timed(fn):
    """(fn(), wall milliseconds), synchronized with the GPU on both sides."""
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    result = fn()
    torch.cuda.synchronize()
    return result, (time.perf_counter() - t0) * 1e3


def count_pairs(p, n):
    """Attended (query, key) pairs of one head, counted on the GPU 2^28 scores at a time."""
    j = torch.arange(n, device="cuda").unsqueeze(0)
    step = max(1, (1 << 28) // n)
    return sum(int(p.mask(torch.arange(r, min(r + step, n), device="cuda").unsqueeze(1), j, n, n).sum())
               for r in range(0, n, step))


def reference(p, q, k, v, do):
    """fp32 dense reference: (out, [dq, dk, dv])."""
    leaves = [t.detach().float().requires_grad_() for t in (q, k, v)]
    out = patternc.reference_attention(*leaves, p)
    out.backward(do.float())
    return out.detach(), [t.grad for t in leaves]


def compare(out, grads, ref):
    """{name: [relative error norm, max abs error]} for the output and the gradients given."""
    errs = {}
    for name, a, b in zip(("out", "dq", "dk", "dv"), [out, *grads], [ref[0], *ref[1]]):
        a, b = a.float(), b.float()
        rel, mx = ((a - b).norm() / b.norm()).item(), (a - b).abs().max().item()
        errs[name] = [x if math.isfinite(x) else None for x in (rel, mx)]
    return errs


def sdpa(q, k, v, backend, **kw):
    def fn():
        with sdpa_kernel(backend) if backend is not None else contextlib.nullcontext():
            return F.scaled_dot_product_attention(q, k, v, **kw)
    return fn


def builders(p, q, k, v, n, flex, layout_ms):
    """[(method, build)]: build() -> (fn running one forward, info dict merged into the record)."""
    gqa, text = q.shape[1] != k.shape[1], str(p)
    out = []

    def build_flex():
        mask_mod = p.to_flex(n, n, device="cuda")
        bm, ms = timed(lambda: create_block_mask(mask_mod, None, None, n, n, device="cuda"))
        return (lambda: flex(q, k, v, block_mask=bm, enable_gqa=gqa)), {"build_ms": ms}

    def build_patternc():
        key = (text, n)  # timed once per (pattern, N)
        if key not in layout_ms:
            try:
                layout_ms[key] = {"build_ms": timed(lambda: p.layout(n, n, 128, 128))[1]}
            except Exception as exc:
                layout_ms[key] = {"build_error": describe(exc)}
        attn = patternc.attention_from(p)
        return (lambda: attn(q, k, v)), dict(layout_ms[key])

    if flex is not None:
        out.append(("flex", build_flex))  # first: it is the reference above REF_MAX_N
    out.append(("patternc", build_patternc))
    if text in ("causal", "all"):
        kw = dict(is_causal=text == "causal", enable_gqa=gqa)
        out.append(("sdpa-flash", lambda: (sdpa(q, k, v, SDPBackend.FLASH_ATTENTION, **kw), {})))
        out.append(("sdpa-cudnn", lambda: (sdpa(q, k, v, SDPBackend.CUDNN_ATTENTION, **kw), {})))
    if n * n <= MASK_MAX_PAIRS:
        out.append(("sdpa-mask", lambda: (sdpa(q, k, v, None, attn_mask=p.dense_mask(n, n, device="cuda"),
                                                enable_gqa=gqa), {})))
    return out


def measure(m, fn, q, k, v, do, args):
    """First call (wall s), then do_bench medians (ms) and peak memory (MiB) into m; returns (out, grads)."""
    q.grad = k.grad = v.grad = None  # a method that failed mid-backward may have left some
    out, ms = timed(fn)
    m["first_fwd_s"], grads = ms / 1e3, []
    if not args.no_backward:
        m["first_bwd_s"] = timed(lambda: out.backward(do))[1] / 1e3
        grads = [q.grad, k.grad, v.grad]
        q.grad = k.grad = v.grad = None
    from patternc.kernels import parallel  # (patternc is imported once the cache directories are set)

    if parallel.pending():  # the first calls ran patternc's interim kernels while its own compiled
        parallel.wait()
        out = fn()
        if not args.no_backward:
            out.backward(do)
            grads = [q.grad, k.grad, v.grad]
            q.grad = k.grad = v.grad = None
    warmup, rep = args.reps
    warm_gpu()
    warm_call(fn)
    m["fwd_ms"] = triton.testing.do_bench(fn, warmup=warmup, rep=rep, return_mode="median")
    step = fn if args.no_backward else (lambda: torch.autograd.backward(fn(), do))
    if step is not fn:
        warm_call(step)
        q.grad = k.grad = v.grad = None
        m["fb_ms"] = triton.testing.do_bench(step, warmup=warmup, rep=rep, return_mode="median", grad_to_none=[q, k, v])
        q.grad = k.grad = v.grad = None
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    timed(step)
    m["peak_mib"] = (torch.cuda.max_memory_allocated() - base) / 2**20
    q.grad = k.grad = v.grad = None
    return out.detach(), grads


def warm_up():
    """One tiny layout and block mask first, so the first row's build times hold no one-time costs."""
    patternc.parse("window(1)").layout(256, 256, 128, 128)
    create_block_mask(lambda b, h, q, kv: q >= kv, None, None, 256, 256, device="cuda")


def run_row(row, args, flex, state):
    name, text, n, b, hq, hkv, d = row
    rec = dict(row=name, pattern=text, N=n, B=b, Hq=hq, Hkv=hkv, D=d, dtype="bfloat16", methods={})
    try:
        p = patternc.parse(text)
        rec["pairs"] = count_pairs(p, n) * b * hq
        rec["density"] = rec["pairs"] / (b * hq * n * n)
        torch.manual_seed(0)
        q = torch.randn(b, hq, n, d, device="cuda", dtype=torch.bfloat16, requires_grad=True)
        k, v = (torch.randn(b, hkv, n, d, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in "kv")
        do = torch.randn_like(q)
        ref = reference(p, q, k, v, do) if n <= REF_MAX_N else None
    except Exception as exc:
        rec["error"] = describe(exc)
        print(f"| {name} | {n} | row failed: {rec['error']}", flush=True)
        return rec
    rec["reference"] = "fp32 dense" if ref is not None else "flex" if flex is not None else None
    for method, build in builders(p, q, k, v, n, flex, state["layout_ms"]):
        m = rec["methods"][method] = {}
        if method == "patternc":  # one generated kernel module per structure (where patternc says)
            m["structure"] = p.structure()
            m["new_structure"] = m["structure"] not in state["seen"]
        try:
            fn, info = build()
            m.update(info)
            out, grads = measure(m, fn, q, k, v, do, args)
            if method == "patternc":
                state["seen"].add(m["structure"])
            if ref is not None:
                m["errors"] = compare(out, grads, ref)
                m["ok"] = all(e[0] is not None and e[0] < TOL for e in m["errors"].values())
            elif method == "flex":
                ref, m["errors"] = (out, grads), "reference"
            del out, grads
        except Exception as exc:  # OOM, compile failure, unsupported backend, ...
            m["error"] = describe(exc)
            torch.cuda.empty_cache()
        print(table_row(rec, method, m), flush=True)
    return rec


def main():
    args = parse_args()
    caches = "warm (existing cache dirs)"
    if not args.warm_cache:  # before triton / patternc / inductor read them
        for var in CACHE_VARS:
            os.environ[var] = tempfile.mkdtemp(prefix=var.split("_")[0].lower() + "-cache-")
        caches = "cold (fresh temp dirs)"
    # Inductor compiles flex's kernels in this process, not in a pool of worker processes: a
    # pool starting up or compiling beside the timing loops made the small patternc rows after
    # a new flex kernel CPU-bound (P1 and P2 GQA at 4K read 3-4x slower than alone on a 16-core
    # host, results/2026-11-26-v10-h100-bench.md).
    os.environ.setdefault("TORCHINDUCTOR_COMPILE_THREADS", "1")
    rows = select_rows(args)
    if not rows:
        sys.exit("no row matches --only / --seq-lens")
    load_libraries()
    if not torch.cuda.is_available():
        sys.exit("run.py needs a CUDA GPU")
    torch._dynamo.config.cache_size_limit = 64  # one compiled flex, recompiled per shape and mask
    flex = None if args.skip_flex else torch.compile(flex_attention, dynamic=False)
    try:
        warm_up()
    except Exception as exc:
        print(f"warm-up failed (first build times include one-time costs): {describe(exc)}")
    now = datetime.datetime.now(datetime.timezone.utc)
    tag = re.sub(r"[^A-Za-z0-9._-]+", "-", args.tag)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    base = out_dir / f"{now:%Y-%m-%d}-{tag}-bench"
    doc = {"meta": {
        "date": now.isoformat(timespec="seconds"), "argv": sys.argv, "command": shlex.join(["python", *sys.argv]),
        "device": torch.cuda.get_device_name(), "torch": torch.__version__, "triton": triton.__version__,
        "cuda": torch.version.cuda, "caches": caches, "cache_dirs": {v: os.environ.get(v) for v in CACHE_VARS},
        "flops": FLOPS, "tol": TOL, "warmup_rep_ms": args.reps,
        "backward": not args.no_backward, "peak_of": "forward" if args.no_backward else "forward+backward"}, "rows": []}
    state = {"seen": set(), "layout_ms": {}}
    for row in rows:
        doc["rows"].append(run_row(row, args, flex, state))
        Path(f"{base}.json").write_text(json.dumps(doc, indent=1))
        gc.collect()
        torch.cuda.empty_cache()
    print("\n" + render(doc, base))
    print(f"wrote {base}.json, .md, .png")


if __name__ == "__main__":
    main()
