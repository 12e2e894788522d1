"""Does Triton 3.6's Hopper warp specialization speed up a causal dQ kernel?

    python benchmarks/dq_probe.py gpu                 # correctness (N=2048) and timing at 16K
    python benchmarks/dq_probe.py STATS BM BN STAGES  # compile one variant for sm_90 here

A probe for issue 8 (v13), not patternc code: dQ of causal attention over a CSR table of key
tiles, Q/dO/K/V through in-kernel descriptors, one loop `tl.range(..., warp_specialize=True)`.
STATS is how the per-row LSE and delta reach the consumers (Triton's pass fails on tensor
loads of them: v12 step 8): 0 constants, 1 pointer loads (fails), 2 BLOCK_M scalar loads
assembled into vectors (partitions), 3/4 [BLOCK_M, 4 or 32] fp32 descriptors (fail). Timed
against patternc's own dQ kernel (profiler) on the same shapes. H100 result (v13 in
NOTES.md): 5.18 ms against 5.42 (-4%) at 128x64 tiles, 2 stages; 3 stages compute NaN.
"""

import itertools
import sys
from pathlib import Path

import torch
import triton
import triton.language as tl

sys.path.insert(0, str(Path(__file__).resolve().parent))
from patterns import cubin_resources  # noqa: E402

@triton.jit
def dq_ws(Q, K, V, DO, DQ, LSE, DELTA, OFFSETS, INDICES, qk_scale, N, H,
          HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, STATS: tl.constexpr):
    qb = tl.num_programs(0) - 1 - tl.program_id(0)  # longest causal rows first
    bh = tl.program_id(1)
    start_m = qb * BLOCK_M
    base = bh.to(tl.int64) * N * HEAD_DIM
    qd = tl.make_tensor_descriptor(Q + base, shape=[N, HEAD_DIM], strides=[HEAD_DIM, 1], block_shape=[BLOCK_M, HEAD_DIM])
    dod = tl.make_tensor_descriptor(DO + base, shape=[N, HEAD_DIM], strides=[HEAD_DIM, 1], block_shape=[BLOCK_M, HEAD_DIM])
    kd = tl.make_tensor_descriptor(K + base, shape=[N, HEAD_DIM], strides=[HEAD_DIM, 1], block_shape=[BLOCK_N, HEAD_DIM])
    vd = tl.make_tensor_descriptor(V + base, shape=[N, HEAD_DIM], strides=[HEAD_DIM, 1], block_shape=[BLOCK_N, HEAD_DIM])
    row0 = tl.maximum(start_m, 0)
    q = qd.load([row0, 0])
    do = dod.load([row0, 0])
    offs_m = start_m + tl.arange(0, BLOCK_M)
    srow = bh.to(tl.int64) * N + start_m
    if STATS == 0:  # constants (known to partition)
        lse = tl.zeros([BLOCK_M], tl.float32)
        delta = tl.zeros([BLOCK_M], tl.float32)
    elif STATS == 1:  # vector pointer loads (known to fail)
        lse = tl.load(LSE + srow + tl.arange(0, BLOCK_M))
        delta = tl.load(DELTA + srow + tl.arange(0, BLOCK_M))
    elif STATS == 2:  # scalar loads assembled into vectors
        r = tl.arange(0, BLOCK_M)
        lse = tl.zeros([BLOCK_M], tl.float32)
        delta = tl.zeros([BLOCK_M], tl.float32)
        for i in tl.static_range(BLOCK_M):
            lse = tl.where(r == i, tl.load(LSE + srow + i), lse)
            delta = tl.where(r == i, tl.load(DELTA + srow + i), delta)
    elif STATS == 3:  # a 2-D descriptor of (lse, delta, pad..) rows, [BLOCK_M, 4] fp32
        sd = tl.make_tensor_descriptor(LSE, shape=[N * H, 4], strides=[4, 1], block_shape=[BLOCK_M, 4])
        st = sd.load([(bh * N + row0).to(tl.int32), 0])
        lse = tl.sum(tl.where(tl.arange(0, 4)[None, :] == 0, st, 0.0), 1)
        delta = tl.sum(tl.where(tl.arange(0, 4)[None, :] == 1, st, 0.0), 1)
    elif STATS == 4:  # 2-D descriptor [BLOCK_M, 32] fp32 (128-byte rows)
        sd = tl.make_tensor_descriptor(LSE, shape=[N * H, 32], strides=[32, 1], block_shape=[BLOCK_M, 32])
        st = sd.load([(bh * N + row0).to(tl.int32), 0])
        lse = tl.sum(tl.where(tl.arange(0, 32)[None, :] == 0, st, 0.0), 1)
        delta = tl.sum(tl.where(tl.arange(0, 32)[None, :] == 1, st, 0.0), 1)
    dq = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
    lo = tl.load(OFFSETS + qb)
    hi = tl.load(OFFSETS + qb + 1)
    for t in tl.range(lo, hi, warp_specialize=True):
        start_n = tl.load(INDICES + t) * BLOCK_N
        k = kd.load([start_n, 0])
        v = vd.load([start_n, 0])
        qk = tl.dot(q, k.T) * qk_scale
        offs_n = start_n + tl.arange(0, BLOCK_N)
        p = tl.math.exp2(qk - lse[:, None])
        p = tl.where(offs_n[None, :] <= offs_m[:, None], p, 0.0)
        dp = tl.dot(do, v.T)
        ds = p * (dp - delta[:, None])
        dq = tl.dot(ds.to(k.dtype), k, dq)
    o = DQ + base + offs_m[:, None] * HEAD_DIM + tl.arange(0, HEAD_DIM)[None, :]
    tl.store(o, dq)


def offline(stats, bn=128, stages=2, bm=128):
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    sig = {"Q": "*bf16", "K": "*bf16", "V": "*bf16", "DO": "*bf16", "DQ": "*fp32", "LSE": "*fp32", "DELTA": "*fp32",
           "OFFSETS": "*i32", "INDICES": "*i32", "qk_scale": "fp32", "N": "i32", "H": "i32",
           "HEAD_DIM": "constexpr", "BLOCK_M": "constexpr", "BLOCK_N": "constexpr", "STATS": "constexpr"}
    consts = {"HEAD_DIM": 128, "BLOCK_M": bm, "BLOCK_N": bn, "STATS": stats}
    names = list(sig)
    src = ASTSource(dq_ws, sig, {(names.index(k),): v for k, v in consts.items()})
    try:
        kernel = triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": 4, "num_stages": stages})
        ws = "partitioned" if "ttg.warp_specialize" in kernel.asm["ttgir"] else "one partition"
        print(stats, bm, bn, stages, ws, "shared", kernel.metadata.shared, cubin_resources(kernel), flush=True)
    except Exception as e:
        print(stats, "failed", str(e).splitlines()[0][:200], flush=True)

def causal_table(n, bm, bn, device):
    counts = [min(-(-((qb + 1) * bm) // bn), n // bn) for qb in range(n // bm)]
    offsets = torch.tensor([0] + list(itertools.accumulate(counts)), dtype=torch.int32, device=device)
    indices = torch.cat([torch.arange(c, dtype=torch.int32) for c in counts]).to(device)
    return offsets, indices


def run_ws(q, k, v, do, lse2, delta, bn, stages):
    B, H, N, D = q.shape
    dq = torch.full((B, H, N, D), float("nan"), device=q.device, dtype=torch.float32)
    offsets, indices = causal_table(N, 128, bn, q.device)
    triton.set_allocator(lambda size, align, stream: torch.empty(size, dtype=torch.int8, device="cuda"))
    scale = D ** -0.5
    fn = lambda: dq_ws[(N // 128, B * H)](q, k, v, do, dq, lse2, delta, offsets, indices, scale * 1.4426950408889634,
                                          N, H, HEAD_DIM=D, BLOCK_M=128, BLOCK_N=bn, STATS=2,
                                          num_warps=4, num_stages=stages)
    return dq, fn


def gpu(n_check=2048, n=16384):
    torch.manual_seed(0)
    D = 128
    # correctness on a small case, against fp32 autograd
    q, k, v, do = (torch.randn(1, 2, n_check, D, device="cuda", dtype=torch.bfloat16) for _ in range(4))
    scale = D ** -0.5
    qf, kf, vf = (x.float().requires_grad_() for x in (q, k, v))
    s = (qf @ kf.transpose(-1, -2)) * scale
    s = s.masked_fill(torch.ones(n_check, n_check, device="cuda", dtype=torch.bool).triu(1), float("-inf"))
    lse = torch.logsumexp(s, -1)
    o = torch.softmax(s, -1) @ vf
    o.backward(do.float())
    delta = (do.float() * o.detach()).sum(-1)
    for bn, stages in ((64, 2), (64, 3)):
        dq, fn = run_ws(q, k, v, do, (lse * 1.4426950408889634).contiguous(), delta.contiguous(), bn, stages)
        fn(); torch.cuda.synchronize()
        err = ((dq * scale - qf.grad).norm() / qf.grad.norm()).item()
        print(f"check N={n_check} bn={bn} stages={stages}: rel err {err:.2e}", flush=True)
    # timing at n, against patternc's dQ kernel (profiler) on the same shapes
    B, H = 2, 16
    q, k, v, do = (torch.randn(B, H, n, D, device="cuda", dtype=torch.bfloat16) for _ in range(4))
    lse2 = torch.randn(B, H, n, device="cuda") + 10
    delta = torch.randn(B, H, n, device="cuda") * 0.01
    flops = 3 * 2 * B * H * n * n / 2 * D  # 3 products over the causal half
    for bn, stages in ((64, 2), (64, 3)):
        dq, fn = run_ws(q, k, v, do, lse2, delta, bn, stages)
        ms = triton.testing.do_bench(fn, warmup=100, rep=500)
        print(f"dq_ws bn={bn} stages={stages}: {ms:.3f} ms  {flops / ms / 1e9:.0f} TF/s", flush=True)
    import patternc
    attn = patternc.attention_from("causal")
    qg, kg, vg = (x.clone().requires_grad_() for x in (q, k, v))
    out = attn(qg, kg, vg)
    for _ in range(3):
        torch.autograd.grad(out, (qg, kg, vg), do, retain_graph=True)
    torch.cuda.synchronize()
    from torch.profiler import profile, ProfilerActivity
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(10):
            torch.autograd.grad(out, (qg, kg, vg), do, retain_graph=True)
        torch.cuda.synchronize()
    for e in prof.key_averages():
        if e.key.startswith("attn_"):
            t = getattr(e, "device_time", None) or e.cuda_time
            print(f"patternc {e.key}: {t / 1000:.3f} ms per call ({e.count} calls)", flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "gpu":
        gpu()
        sys.exit()
    s, bm, bn, st = map(int, sys.argv[1:])
    offline(s, bn, st, bm)
