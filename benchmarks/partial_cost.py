"""What a pattern's partial tiles cost: each kernel timed on the plan's layout, then on the same
layout with every partial tile listed as full (the mask skipped: wrong results, same tiles).

    python benchmarks/partial_cost.py "P3:16384;P4:16384;window(left=511, right=0):16384" [option=value ...]

B=2, 16 heads, D=128, bf16; rows PATTERN:N, PATTERN a name of benchmarks/patterns.py or a
pattern's text. Per row: the forward's
and the backward's kernel time (do_bench medians of patternc.ops.launch.forward / .backward,
which launch the kernels only), their tile counts, and microseconds per tile per SM, to tell a
tile's own cost from its program's fixed cost (prologue, epilogue) and its mask's.
"""

import dataclasses
import math
import sys
from pathlib import Path

import torch
import triton

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from patterns import PATTERNS, warm_gpu  # noqa: E402

import patternc  # noqa: E402
from patternc.layout.blocks import CSR  # noqa: E402
from patternc.ops import launch  # noqa: E402
from patternc.plan import plan_for  # noqa: E402


def merged(full: CSR, part: CSR) -> CSR:
    """Each row's full and partial entries as one sorted full list."""
    rows = full.offsets.numel() - 1
    r = torch.cat([torch.repeat_interleave(torch.arange(rows), c.counts.long().cpu()) for c in (full, part)])
    c = torch.cat([full.indices.cpu(), part.indices.cpu()]).long()
    order = torch.argsort(r * (c.max().item() + 1 if c.numel() else 1) + c)
    out = CSR.from_pairs(r[order], c[order], rows)
    return out.to(full.offsets.device)


def none(csr: CSR) -> CSR:
    offsets = torch.zeros_like(csr.offsets)
    empty = csr.indices[:0]
    return CSR(offsets, empty, None if csr.tags is None else csr.tags[:0])


def all_full(lay):
    return dataclasses.replace(lay, full=merged(lay.full, lay.partial), partial=none(lay.partial),
                               full_t=merged(lay.full_t, lay.partial_t), partial_t=none(lay.partial_t))


def main():
    rows = [r.rsplit(":", 1) for r in sys.argv[1].split(";")]
    opts = {k: int(v) for k, v in (kv.split("=") for kv in sys.argv[2:])}
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    warm_gpu()
    print(f"{torch.cuda.get_device_name()}, options {opts}; us/tile = kernel ms x {sms} SMs / tiles (per SM)")
    print("| row | N | layout | fwd ms | fwd tiles | fwd us/tile | bwd ms | bwd tiles | bwd us/tile |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, n in rows:
        n = int(n)
        g = torch.Generator(device="cuda").manual_seed(0)
        q, k, v, do = (torch.randn(2, 16, n, 128, device="cuda", dtype=torch.bfloat16, generator=g)
                       for _ in range(4))
        plan = plan_for(patternc.parse(PATTERNS.get(name, name)), n, n, None, q.device, q.dtype, 128, opts)
        if name == rows[0][0]:
            print(f"<!-- {plan} -->")
        scale = 1 / math.sqrt(128)
        for label, p in (("plan", plan), ("all full", dataclasses.replace(
                plan, fwd_layout=all_full(plan.fwd_layout), bwd_layout=all_full(plan.bwd_layout)))):
            o, lse = launch.forward(p, q, k, v, scale)
            launch.backward(p, q, k, v, o, lse, do, None, scale)
            fwd = triton.testing.do_bench(lambda: launch.forward(p, q, k, v, scale), warmup=50, rep=300)
            bwd = triton.testing.do_bench(lambda: launch.backward(p, q, k, v, o, lse, do, None, scale),
                                          warmup=50, rep=300)
            share = [lay.num_partial / max(1, lay.num_full + lay.num_partial) for lay in (plan.fwd_layout,
                                                                                          plan.bwd_layout)]
            ft, bt = (32 * (lay.num_full + lay.num_partial) for lay in (p.fwd_layout, p.bwd_layout))  # B x H = 32
            part = f" ({share[0]:.1%} / {share[1]:.1%} partial)" if label == "plan" else ""
            print(f"| {name} | {n} | {label}{part} | {fwd:.3f} | {ft} | "
                  f"{fwd * 1e3 * sms / ft:.2f} | {bwd:.3f} | {bt} | {bwd * 1e3 * sms / bt:.2f} |", flush=True)


if __name__ == "__main__":
    main()
