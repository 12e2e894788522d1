"""Where the Gluon kernels' programs spend their time: a copy of hopper.py whose first consumer
stamps %globaltimer (ns) and %smid at four points of each work item, launched as launch.py
launches it.

    python benchmarks/timeline.py bwd P3:16384 [option=value ...]     # prints a summary
    python benchmarks/timeline.py fwd P4:16384 fwd_persistent=1

B=2, 16 heads, D=128, bf16. Backward (attn_bwd_ws, one item per program): t0 program entry
(consumer 0 starts), t1 K/V landed, t2 the query tiles done, t3 dK/dV stored. Forward
(attn_fwd_ws, one or several items per program): t0 the item starts (before its Q wait), t1 Q
landed, t2 its key tiles done, t3 O and LSE stored. Per item: t1-t0, t2-t1 (and us per tile),
t3-t2; per SM, the gap from one item's t3 to the next item's t0 (for one item per program:
the CTA's turnaround).
"""

import importlib.util
import math
import os
import re
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from patterns import PATTERNS, warm_gpu  # noqa: E402

import patternc  # noqa: E402
from patternc.kernels import cache  # noqa: E402
from patternc.kernels.prepared import scratch, triton_args  # noqa: E402
from patternc.ops import launch  # noqa: E402
from patternc.plan import plan_for  # noqa: E402

STAMP = ("    if c == 0:\n"
         "        _stamp(TRACE, gl.program_id(0), {i})\n")
FWD_STAMP = ("        if half == 0:\n"
             "            _stamp(TRACE, w, {i})\n")
HELPER = '''

@gluon.jit
def _stamp(TRACE, item, i: gl.constexpr):
    t = gl.inline_asm_elementwise("mov.u64 $0, %globaltimer;", "=l,r", [gl.program_id(0)], dtype=gl.int64,
                                  is_pure=False, pack=1)
    sm = gl.inline_asm_elementwise("mov.u32 $0, %smid;", "=r,r", [gl.program_id(0)], dtype=gl.int32, is_pure=False,
                                   pack=1)
    gl.store(TRACE + item * 5 + i, t)
    if i == 0:
        gl.store(TRACE + item * 5 + 4, sm.to(gl.int64))
'''


def traced_module():
    src = Path(cache.__file__).with_name("hopper.py").read_text()
    src = src.replace("from .flash import", "from patternc.kernels.flash import")
    src = src.replace("def _bwd_consumer(c: gl.constexpr, q_smem,", "def _bwd_consumer(c: gl.constexpr, TRACE, q_smem,")
    src = src.replace("    consumer = (q_smem, do_smem,", "    consumer = (TRACE, q_smem, do_smem,")
    src = src.replace("def attn_bwd_ws(Q_DESC,", "def attn_bwd_ws(TRACE, Q_DESC,")
    body = src.index("def _bwd_consumer(c")
    start = src.index("    dk = gl.zeros(", body)
    src = src[:start] + STAMP.format(i=0) + src[start:]
    wait = src.index("    mbarrier.wait(kv_bar, 0)\n", body) + len("    mbarrier.wait(kv_bar, 0)\n")
    src = src[:wait] + STAMP.format(i=1) + src[wait:]
    drain = src.index("    tma.store_wait(0)\n    keys =", body)
    src = src[:drain] + STAMP.format(i=2) + src[drain:]
    end = src.index("             mask=ok)\n", src.index("dv_at = DV", body)) + len("             mask=ok)\n")
    src = src[:end] + STAMP.format(i=3) + src[end:]
    # the forward's first consumer, per item w
    src = src.replace("def _consumer(half: gl.constexpr, q_smem,", "def _consumer(half: gl.constexpr, TRACE, q_smem,")
    src = src.replace("    consumer = (q_smem, k_smem,", "    consumer = (TRACE, q_smem, k_smem,")
    src = src.replace("def attn_fwd_ws(Q_DESC,", "def attn_fwd_ws(TRACE, Q_DESC,")
    body = src.index("def _consumer(half")
    for anchor, i, after in (("        mbarrier.wait(q_ready.index(qs), (it // 2) & 1)\n", 0, False),
                             ("        mbarrier.wait(q_ready.index(qs), (it // 2) & 1)\n", 1, True),
                             ("        mbarrier.arrive(q_empty.index(qs))\n", 2, True),
                             ("        gl.store(rows_at + offs_m, lse, mask=offs_m < Q_LEN)\n", 3, True)):
        at = src.index(anchor, body) + (len(anchor) if after else 0)
        src = src[:at] + FWD_STAMP.format(i=i) + src[at:]
    src += HELPER
    path = Path(tempfile.mkdtemp()) / "hopper_traced.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location("hopper_traced", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main():
    which = sys.argv[1]
    name, n = sys.argv[2].rsplit(":", 1)
    n = int(n)
    opts = {k: int(v) for k, v in (kv.split("=") for kv in sys.argv[3:])}
    opts.setdefault(f"{which}_warp_specialize", 1)
    traced = traced_module()
    warm_gpu()
    g = torch.Generator(device="cuda").manual_seed(0)
    q, k, v, do = (torch.randn(2, 16, n, 128, device="cuda", dtype=torch.bfloat16, generator=g) for _ in range(4))
    plan = plan_for(patternc.parse(PATTERNS.get(name, name)), n, n, None, q.device, q.dtype, 128, opts)
    scale = 1 / math.sqrt(128)
    if which == "fwd":
        lay = plan.fwd_layout
        calls = launch._forward_calls(plan, q, k, v, *launch._outputs(plan, q, q.device, launch.empty), scale)
        kernel, items = traced.attn_fwd_ws, lay.num_q_blocks * 32
    else:
        lay = plan.bwd_layout
        o, lse = launch.forward(plan, q, k, v, scale)
        dq = torch.zeros(2 * 16, 1, n, 128, device="cuda", dtype=torch.float32)
        dk, dv = torch.empty_like(k), torch.empty_like(v)
        delta = torch.empty(2, 16, n, device="cuda", dtype=torch.float32)
        calls = launch._backward_calls(plan, q, k, v, o, lse, do, dq, dk, dv, delta, None, scale)
        launch._launch(calls[0][0], calls[0][1], plan, *calls[0][2:])
        kernel, items = traced.attn_bwd_ws, lay.num_kv_blocks * 32
    _, programs, _, tensors, args = calls[-1] if which == "bwd" else calls[0]
    trace = torch.zeros(items, 5, device="cuda", dtype=torch.int64)
    run = lambda: scratch(kernel[(programs,)], TRACE=trace, **triton_args(tensors), **args())  # noqa
    for _ in range(3):
        run()
    torch.cuda.synchronize()
    t = trace.cpu().double()
    t0, t1, t2, t3, sm = t.unbind(1)
    tiles = (lay.num_full + lay.num_partial) * 32
    span = (t3.max() - t0.min()) / 1e3
    print(f"{which} {name} {n} {opts}: {programs} programs, {items} items of {tiles / items:.1f} tiles; "
          f"stamps span {span:.0f} us, {torch.cuda.get_device_name()}")
    q50 = lambda x: f"median {x.median():.2f}, mean {x.mean():.2f}, p90 {x.quantile(0.9):.2f}"  # noqa
    print(f"  item  t3-t0 us: {q50((t3 - t0) / 1e3)}")
    print(f"  start t1-t0 us: {q50((t1 - t0) / 1e3)}")
    print(f"  tiles t2-t1 us: {q50((t2 - t1) / 1e3)}; per tile {((t2 - t1).sum() / 1e3 / tiles):.2f} us")
    print(f"  end   t3-t2 us: {q50((t3 - t2) / 1e3)}")
    gaps = []
    for s in sm.unique():
        on = (sm == s).nonzero().flatten()
        order = on[torch.argsort(t0[on])]
        gaps.append((t0[order[1:]] - t3[order[:-1]]) / 1e3)
    gaps = torch.cat(gaps)
    print(f"  gap (next item's t0 - t3 on an SM) us: {q50(gaps)}; items per SM {items / len(sm.unique()):.1f}")


if __name__ == "__main__":
    main()
