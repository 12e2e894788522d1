"""Do persistent programs help Triton 3.6's warp-specialized forward on rows of few tiles?

    python benchmarks/persist_probe.py gpu          # correctness (N=2048) and timing (4K, 16K)
    python benchmarks/persist_probe.py OUTER FLAT   # compile one variant for sm_90 here (0/1 each)

A probe for issue 8 (v13), not patternc code: a forward over P3's rows (`window(left=1023,
right=0)`, 9 key tiles of 128 per 128-row block, CSR table as patternc's layouts), Q/K/V/O
through in-kernel descriptors, in the variants that matter: ``plain`` (one program per block,
the inner loop warp-specialized: patternc's v12 forward), ``persist-inner`` (one program per
SM looping over blocks, the inner loop specialized), ``persist-outer`` (the outer loop
specialized: the producer runs ahead into the next block), ``persist-flat`` (that, flattened),
``persist-inner-264`` (two programs per SM-slot), beside patternc's own P3 forward.
H100 result (v13 in NOTES.md): 16K plain 0.780 ms, persist-outer 0.674, patternc 0.780.
"""

import sys

import torch
import triton
import triton.language as tl


@triton.jit
def fwd_persist(Q, K, V, O, OFFSETS, INDICES, qk_scale, N, BH, NUM_BLOCKS,
                HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, OUTER_WS: tl.constexpr,
                FLATTEN: tl.constexpr):
    pid = tl.program_id(0)
    nprog = tl.num_programs(0)
    total = NUM_BLOCKS * BH
    for w in tl.range(pid, total, nprog, warp_specialize=OUTER_WS, flatten=FLATTEN):
        qb = w % NUM_BLOCKS
        bh = w // NUM_BLOCKS
        base = bh.to(tl.int64) * N * HEAD_DIM
        qd = tl.make_tensor_descriptor(Q + base, shape=[N, HEAD_DIM], strides=[HEAD_DIM, 1], block_shape=[BLOCK_M, HEAD_DIM])
        kd = tl.make_tensor_descriptor(K + base, shape=[N, HEAD_DIM], strides=[HEAD_DIM, 1], block_shape=[BLOCK_N, HEAD_DIM])
        vd = tl.make_tensor_descriptor(V + base, shape=[N, HEAD_DIM], strides=[HEAD_DIM, 1], block_shape=[BLOCK_N, HEAD_DIM])
        start_m = qb * BLOCK_M
        q = qd.load([tl.maximum(start_m, 0), 0])
        offs_m = start_m + tl.arange(0, BLOCK_M)
        m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
        l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
        acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
        lo = tl.load(OFFSETS + qb)
        hi = tl.load(OFFSETS + qb + 1)
        for t in tl.range(lo, hi, warp_specialize=not OUTER_WS):
            start_n = tl.load(INDICES + t) * BLOCK_N
            qk = tl.dot(q, kd.load([start_n, 0]).T)
            offs_n = start_n + tl.arange(0, BLOCK_N)
            keep = (offs_n[None, :] <= offs_m[:, None]) & (offs_n[None, :] >= offs_m[:, None] - 1023)
            qk = tl.where(keep, qk, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(qk, 1) * qk_scale)
            m_use = tl.where(m_new == float("-inf"), 0.0, m_new)  # rows with nothing yet in this tile
            p = tl.math.exp2(qk * qk_scale - m_use[:, None])
            alpha = tl.math.exp2(m_i - m_use)
            l_i = l_i * alpha + tl.sum(p, 1)
            v = vd.load([start_n, 0])
            acc = tl.dot(p.to(v.dtype), v, acc * alpha[:, None])
            m_i = m_new
        od = tl.make_tensor_descriptor(O + base, shape=[N, HEAD_DIM], strides=[HEAD_DIM, 1], block_shape=[BLOCK_M, HEAD_DIM])
        od.store([tl.maximum(start_m, 0), 0], (acc / l_i[:, None]).to(tl.bfloat16))


def offline(outer_ws, flatten):
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    sig = {"Q": "*bf16", "K": "*bf16", "V": "*bf16", "O": "*bf16", "OFFSETS": "*i32", "INDICES": "*i32",
           "qk_scale": "fp32", "N": "i32", "BH": "i32", "NUM_BLOCKS": "i32",
           "HEAD_DIM": "constexpr", "BLOCK_M": "constexpr", "BLOCK_N": "constexpr", "OUTER_WS": "constexpr",
           "FLATTEN": "constexpr"}
    consts = {"HEAD_DIM": 128, "BLOCK_M": 128, "BLOCK_N": 128, "OUTER_WS": outer_ws, "FLATTEN": flatten}
    names = list(sig)
    src = ASTSource(fwd_persist, sig, {(names.index(k),): v for k, v in consts.items()})
    try:
        kernel = triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": 4, "num_stages": 2})
        ws = "partitioned" if "ttg.warp_specialize" in kernel.asm["ttgir"] else "one partition"
        print(outer_ws, flatten, ws, "shared", kernel.metadata.shared, flush=True)
    except Exception as e:
        print(outer_ws, flatten, "failed", str(e).splitlines()[0][:200], flush=True)


if __name__ == "__main__" and sys.argv[1] != "gpu":
    offline(int(sys.argv[1]), int(sys.argv[2]))


def window_table(n, bm, bn, left, device):
    import itertools
    rows = []
    for qb in range(n // bm):
        lo = max(0, (qb * bm - left) // bn)
        hi = min(n // bn - 1, (qb * bm + bm - 1) // bn)
        rows.append(list(range(lo, hi + 1)))
    offsets = torch.tensor([0] + list(itertools.accumulate(len(r) for r in rows)), dtype=torch.int32, device=device)
    indices = torch.tensor([i for r in rows for i in r], dtype=torch.int32, device=device)
    return offsets, indices


def launcher(q, k, v, o, mode):
    B, H, N, D = q.shape
    offsets, indices = window_table(N, 128, 128, 1023, q.device)
    nb = N // 128
    total = nb * B * H
    outer_ws, flatten, grid = {"plain": (0, 0, total), "persist-inner": (0, 0, 132), "persist-outer": (1, 0, 132),
                               "persist-flat": (1, 1, 132), "persist-inner-264": (0, 0, 264)}[mode]
    return lambda: fwd_persist[(grid,)](q, k, v, o, offsets, indices, D ** -0.5 * 1.4426950408889634, N, B * H, nb,
                                        HEAD_DIM=D, BLOCK_M=128, BLOCK_N=128, OUTER_WS=outer_ws, FLATTEN=flatten,
                                        num_warps=4, num_stages=2)


def gpu():
    triton.set_allocator(lambda size, align, stream: torch.empty(size, dtype=torch.int8, device="cuda"))
    modes = ["plain", "persist-inner", "persist-outer", "persist-flat", "persist-inner-264"]
    n = 2048
    q, k, v = (torch.randn(1, 2, n, 128, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    i = torch.arange(n, device="cuda")
    mask = (i[None, :] <= i[:, None]) & (i[None, :] >= i[:, None] - 1023)
    ref = torch.nn.functional.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=mask)
    for mode in modes:
        o = torch.full_like(q, float("nan"))
        try:
            launcher(q, k, v, o, mode)()
            torch.cuda.synchronize()
            print(mode, "rel err", ((o.float() - ref).norm() / ref.norm()).item(), flush=True)
        except Exception as e:
            print(mode, "failed", str(e).splitlines()[0][:200], flush=True)
    for n in (4096, 16384):
        B, H = 2, 16
        q, k, v = (torch.randn(B, H, n, 128, device="cuda", dtype=torch.bfloat16) for _ in range(3))
        pairs = B * H * sum(min(r + 1, 1024) for r in range(n))
        for mode in modes:
            o = torch.empty_like(q)
            try:
                ms = triton.testing.do_bench(launcher(q, k, v, o, mode), warmup=100, rep=400)
                print(f"N={n} {mode}: {ms:.3f} ms {4 * pairs * 128 / ms / 1e9:.0f} TF/s", flush=True)
            except Exception as e:
                print(mode, "failed", str(e).splitlines()[0][:200], flush=True)
        import patternc
        attn = patternc.attention_from("window(left=1023, right=0)")
        ms = triton.testing.do_bench(lambda: attn(q, k, v), warmup=100, rep=400)
        print(f"N={n} patternc P3: {ms:.3f} ms {4 * pairs * 128 / ms / 1e9:.0f} TF/s", flush=True)


if __name__ == "__main__" and sys.argv[1] == "gpu":
    gpu()
