"""Probe: a fused backward in Gluon (dK, dV and dQ from one pass, 5 matrix products per tile
pair, FlashAttention-3's arrangement) against patternc's backward and SDPA cuDNN, for `causal`
and `all`. The package's kernel grew from it: patternc/kernels/hopper.py `attn_bwd_ws`.

    python benchmarks/gluon_bwd_probe.py [--n 16384] [--offline]

One program per (128-key block, batch x head): a producer warp loads the block's K and V once
and each 64-row query tile's Q and dO into rings (TMA); two consumer warpgroups own 64 keys
each and per query tile compute S = Q K_c^T and dP = dO V_c^T, P and dS into shared memory
(the transposed A operands of dV_c += P^T dO and dK_c += dS^T Q), then both consumers' dS
[64, 128] feed dQ, each consumer computing half of dQ's columns over all 128 keys, added to an
fp32 accumulator by TMA bulk reductions (one instruction per tile). Probe limits: Q, K, V, dO
contiguous [B, H, N, 128] bf16, N a multiple of 128, no GQA; delta (rowsum dO * O) and the dQ
conversion are torch ops here. ``--offline`` only compiles it for sm_90. (v14's first version,
each consumer a full dQ over its 64 keys by per-element atomics, S^T in registers: commit
522c49a, results/2026-11-26-gluon-bwd-probe-h100.txt.)
"""

import argparse
import sys
from pathlib import Path

import torch
import triton
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import (fence_async_shared, mbarrier, tma, warpgroup_mma,
                                                              warpgroup_mma_wait)
from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from patternc.kernels.hopper import _reduce_add  # noqa: E402  (the TMA bulk reduction, as the package's kernel adds dQ)

LOG2E = gl.constexpr(1.4426950408889634)


@gluon.jit
def _producer(q_desc, do_desc, k_desc, v_desc, q_smem, do_smem, k_smem, v_smem, kv_bar, q_ready, q_empty,
              do_ready, do_empty, kv_row, q_row0, m_lo, n_m, STAGES: gl.constexpr):
    KEYS: gl.constexpr = k_desc.block_type.shape[0]
    BM: gl.constexpr = q_desc.block_type.shape[0]
    mbarrier.expect(kv_bar, 2 * k_desc.block_type.nbytes + 2 * v_desc.block_type.nbytes)
    for c in gl.static_range(2):
        tma.async_copy_global_to_shared(k_desc, [kv_row + c * KEYS, 0], kv_bar, k_smem.index(c))
        tma.async_copy_global_to_shared(v_desc, [kv_row + c * KEYS, 0], kv_bar, v_smem.index(c))
    for j in range(n_m):
        s = j % STAGES
        phase = (j // STAGES) & 1
        row = q_row0 + (m_lo + j) * BM
        mbarrier.wait(q_empty.index(s), phase ^ 1)
        mbarrier.expect(q_ready.index(s), q_desc.block_type.nbytes)
        tma.async_copy_global_to_shared(q_desc, [row, 0], q_ready.index(s), q_smem.index(s))
        mbarrier.wait(do_empty.index(s), phase ^ 1)
        mbarrier.expect(do_ready.index(s), do_desc.block_type.nbytes)
        tma.async_copy_global_to_shared(do_desc, [row, 0], do_ready.index(s), do_smem.index(s))


@gluon.jit
def _step(j, c: gl.constexpr, k, v, q_smem, do_smem, k_smem, p_smem, ds_smem, dq_smem, q_ready, q_empty, do_ready,
          do_empty,
          ds_ready, dq_desc, LSE, DELTA, bh, N, n_start, m_lo, qk_scale, sm_scale, dk, dv, MASK: gl.constexpr,
          STAGES: gl.constexpr):
    """One query tile of a consumer's 64 keys: dV, dK accumulate; dQ's share goes out by a TMA reduction."""
    KEYS: gl.constexpr = k.shape[0]
    D: gl.constexpr = k.shape[1]
    BM: gl.constexpr = q_smem.shape[1]
    DH: gl.constexpr = D // 2
    dtype: gl.constexpr = q_smem.dtype
    s_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                       instr_shape=[16, KEYS, 16])
    dq_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                        instr_shape=[16, DH, 16])
    rows_l: gl.constexpr = gl.SliceLayout(1, s_layout)
    s = j % STAGES
    phase = (j // STAGES) & 1
    start_m = (m_lo + j) * BM
    offs_m = start_m + gl.arange(0, BM, layout=rows_l)
    mbarrier.wait(q_ready.index(s), phase)
    qk = warpgroup_mma(q_smem.index(s), k.permute((1, 0)), gl.zeros([BM, KEYS], gl.float32, s_layout),
                       use_acc=False, is_async=True)
    mbarrier.wait(do_ready.index(s), phase)
    dp = warpgroup_mma(do_smem.index(s), v.permute((1, 0)), gl.zeros([BM, KEYS], gl.float32, s_layout),
                       use_acc=False, is_async=True)
    lse = gl.load(LSE + bh * N + offs_m)  # loaded while the products run
    lse = gl.where(lse == float("-inf"), float("inf"), lse * LOG2E)
    delta = gl.load(DELTA + bh * N + offs_m)
    qk = warpgroup_mma_wait(num_outstanding=1, deps=(qk, ))
    p = gl.exp2(qk * qk_scale - lse[:, None])
    if MASK:  # the diagonal: keys after the query drop
        offs_n = n_start + c * KEYS + gl.arange(0, KEYS, layout=gl.SliceLayout(0, s_layout))
        p = gl.where(offs_m[:, None] >= offs_n[None, :], p, 0.0)
    p_smem.index(c).store(p.to(dtype))
    fence_async_shared()
    dv = warpgroup_mma(p_smem.index(c).permute((1, 0)), do_smem.index(s), dv, is_async=True)
    dp = warpgroup_mma_wait(num_outstanding=1, deps=(dp, ))
    ds = (p * (dp - delta[:, None])).to(dtype)
    # dS into this consumer's half of the step's [64 queries, 128 keys] (two buffers by step
    # parity: a consumer writes step j+2's only after it has seen the other's step j+1, which
    # the other stores after its step j's dQ products finished)
    ds0 = (j % 2) * 2
    ds_smem.index(ds0 + c).store(ds)
    fence_async_shared()
    mbarrier.arrive(ds_ready.index(j % 2))
    dk = warpgroup_mma(ds_smem.index(ds0 + c).permute((1, 0)), q_smem.index(s), dk, is_async=True)
    mbarrier.wait(ds_ready.index(j % 2), (j // 2) & 1)
    # dQ[:, c's half of D] = dS K over all 128 keys: both consumers' dS halves
    dq = warpgroup_mma(ds_smem.index(ds0), k_smem.index(0).slice(c * DH, DH, dim=1),
                       gl.zeros([BM, DH], gl.float32, dq_layout), use_acc=False, is_async=True)
    dq = warpgroup_mma(ds_smem.index(ds0 + 1), k_smem.index(1).slice(c * DH, DH, dim=1), dq, is_async=True)
    dv, dk, dq = warpgroup_mma_wait(num_outstanding=0, deps=(dv, dk, dq))
    mbarrier.arrive(q_empty.index(s))
    mbarrier.arrive(do_empty.index(s))
    tma.store_wait(0)  # the previous step's reduction has read the staging buffer
    dq_smem.index(c).store(dq * sm_scale)
    fence_async_shared()
    _reduce_add(dq_desc, [bh * N + start_m, c * DH], dq_smem.index(c))
    return dk, dv


@gluon.jit
def _consumer(c: gl.constexpr, q_smem, do_smem, k_smem, v_smem, p_smem, ds_smem, dq_smem, kv_bar, q_ready, q_empty,
              do_ready, do_empty, ds_ready, dq_desc, DK, DV, LSE, DELTA, bh, N, n_start, m_lo, n_m, qk_scale,
              sm_scale, CAUSAL: gl.constexpr, STAGES: gl.constexpr):
    KEYS: gl.constexpr = k_smem.shape[1]
    D: gl.constexpr = k_smem.shape[2]
    BM: gl.constexpr = q_smem.shape[1]
    dtype: gl.constexpr = q_smem.dtype
    acc_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                         instr_shape=[16, D, 16])
    k = k_smem.index(c)
    v = v_smem.index(c)
    dk = gl.zeros([KEYS, D], gl.float32, acc_layout)
    dv = gl.zeros([KEYS, D], gl.float32, acc_layout)
    mbarrier.wait(kv_bar, 0)
    args = (k, v, q_smem, do_smem, k_smem, p_smem, ds_smem, dq_smem, q_ready, q_empty, do_ready, do_empty, ds_ready,
            dq_desc,
            LSE, DELTA, bh, N, n_start, m_lo, qk_scale, sm_scale)
    n_diag = 2 if CAUSAL else 0  # causal: the block's first two query tiles cross the diagonal
    for j in range(n_diag):
        dk, dv = _step(j, c, *args, dk, dv, True, STAGES)
    for j in range(n_diag, n_m):
        dk, dv = _step(j, c, *args, dk, dv, False, STAGES)
    tma.store_wait(0)
    acc_rows: gl.constexpr = gl.SliceLayout(1, acc_layout)
    d = gl.arange(0, D, layout=gl.SliceLayout(0, acc_layout))
    keys = (bh * N + n_start + c * KEYS + gl.arange(0, KEYS, layout=acc_rows)).to(gl.int64)
    gl.store(DK + keys[:, None] * D + d[None, :], (dk * sm_scale).to(dtype))
    gl.store(DV + keys[:, None] * D + d[None, :], dv.to(dtype))


@gluon.jit
def _consumer0(args, CAUSAL: gl.constexpr, STAGES: gl.constexpr):
    _consumer(0, *args, CAUSAL=CAUSAL, STAGES=STAGES)


@gluon.jit
def _consumer1(args, CAUSAL: gl.constexpr, STAGES: gl.constexpr):
    _consumer(1, *args, CAUSAL=CAUSAL, STAGES=STAGES)


@gluon.jit
def attn_bwd_gluon(q_desc, do_desc, k_desc, v_desc, dq_desc, DK, DV, LSE, DELTA, N, qk_scale, sm_scale,
                   CAUSAL: gl.constexpr, STAGES: gl.constexpr, num_warps: gl.constexpr):
    KEYS: gl.constexpr = k_desc.block_type.shape[0]
    BM: gl.constexpr = q_desc.block_type.shape[0]
    dtype: gl.constexpr = q_desc.dtype
    num_n = N // (2 * KEYS)
    pid = gl.program_id(0)
    nb = pid % num_n
    bh = pid // num_n
    n_start = nb * 2 * KEYS
    m_lo = n_start // BM if CAUSAL else 0
    n_m = N // BM - m_lo
    q_smem = gl.allocate_shared_memory(dtype, [STAGES] + q_desc.block_type.shape, q_desc.layout)
    do_smem = gl.allocate_shared_memory(dtype, [STAGES] + do_desc.block_type.shape, do_desc.layout)
    k_smem = gl.allocate_shared_memory(dtype, [2] + k_desc.block_type.shape, k_desc.layout)
    v_smem = gl.allocate_shared_memory(dtype, [2] + v_desc.block_type.shape, v_desc.layout)
    ds_layout: gl.constexpr = gl.NVMMASharedLayout.get_default_for([BM, KEYS], dtype)
    p_smem = gl.allocate_shared_memory(dtype, [2, BM, KEYS], ds_layout)  # [consumer]
    ds_smem = gl.allocate_shared_memory(dtype, [4, BM, KEYS], ds_layout)  # [parity * 2 + consumer]
    dq_smem = gl.allocate_shared_memory(gl.float32, [2] + dq_desc.block_type.shape, dq_desc.layout)
    kv_bar = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
    q_ready = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    q_empty = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    do_ready = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    do_empty = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    ds_ready = gl.allocate_shared_memory(gl.int64, [2, 1], mbarrier.MBarrierLayout())
    mbarrier.init(kv_bar, count=1)
    for i in gl.static_range(STAGES):
        mbarrier.init(q_ready.index(i), count=1)
        mbarrier.init(q_empty.index(i), count=2)
        mbarrier.init(do_ready.index(i), count=1)
        mbarrier.init(do_empty.index(i), count=2)
    for i in gl.static_range(2):
        mbarrier.init(ds_ready.index(i), count=2)
    args = (q_smem, do_smem, k_smem, v_smem, p_smem, ds_smem, dq_smem, kv_bar, q_ready, q_empty, do_ready, do_empty,
            ds_ready, dq_desc, DK, DV, LSE, DELTA, bh, N, n_start, m_lo, n_m, qk_scale, sm_scale)
    gl.warp_specialize([
        (_consumer0, (args, CAUSAL, STAGES)),
        (_consumer1, (args, CAUSAL, STAGES)),
        (_producer, (q_desc, do_desc, k_desc, v_desc, q_smem, do_smem, k_smem, v_smem, kv_bar, q_ready, q_empty,
                     do_ready, do_empty, bh * N + n_start, bh * N, m_lo, n_m, STAGES)),
    ], [4, 1], [240, 24])


def _desc(x, rows, cols=None):
    flat = x.reshape(-1, x.shape[-1])
    block = [rows, cols or x.shape[-1]]
    dtype = gl.float32 if x.dtype == torch.float32 else gl.bfloat16
    return TensorDescriptor(flat, list(flat.shape), list(flat.stride()), block,
                            gl.NVMMASharedLayout.get_default_for(block, dtype))


def backward(q, k, v, o, lse, do, causal: bool, stages: int = 2):
    """dQ, dK, dV of the probe's kernel (delta and the dQ conversion in torch)."""
    B, H, N, D = q.shape
    scale = D ** -0.5
    delta = (do.float() * o.float()).sum(-1)
    dq = torch.zeros(B, H, N, D, device=q.device, dtype=torch.float32)
    dk, dv = torch.empty_like(k), torch.empty_like(v)
    attn_bwd_gluon[(N // 128 * B * H, )](_desc(q, 64), _desc(do, 64), _desc(k, 64), _desc(v, 64),
                                         _desc(dq, 64, D // 2), dk, dv, lse, delta, N, scale * 1.4426950408889634,
                                         scale, causal, stages,
                                         num_warps=4)
    return dq.to(q.dtype), dk, dv


def offline():
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from patterns import compile_for_sm90, cubin_resources

    compile_for_sm90()
    x = torch.empty(1, 2, 1024, 128, dtype=torch.bfloat16)
    f = torch.empty(1, 2, 1024, 128, dtype=torch.float32)
    lse = torch.empty(1, 2, 1024, dtype=torch.float32)
    for causal in (True, False):
        kernel = attn_bwd_gluon.warmup(_desc(x, 64), _desc(x, 64), _desc(x, 64), _desc(x, 64), _desc(f, 64, 64), x, x,
                                       lse, lse,
                                       1024, 0.1, 0.1, causal, 2, num_warps=4, grid=(1, ))
        print(f"causal={causal}: {cubin_resources(kernel)} shared {kernel.metadata.shared}")
    Path("/tmp/gluon_bwd_probe.ptx").write_text(kernel.asm["ptx"])


def gpu(n: int, rows: list[str]):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    import patternc
    from torch.nn.attention import SDPBackend, sdpa_kernel

    torch.manual_seed(0)
    for name in rows:
        causal = name == "causal"
        for b, h, nn in ((1, 2, 512), (1, 2, 1024), (2, 16, n)):
            q, k, v, do = (torch.randn(b, h, nn, 128, device="cuda", dtype=torch.bfloat16) for _ in range(4))
            attn = patternc.attention_from(name)
            qr, kr, vr = (t.clone().requires_grad_() for t in (q, k, v))
            o, lse = attn(qr, kr, vr, return_lse=True)
            o.backward(do)
            got = backward(q, k, v, o.detach(), lse.detach(), do, causal)
            errs = [((g.float() - r.grad.float()).norm() / r.grad.float().norm()).item() for g, r in zip(got, (qr, kr, vr))]
            print(f"check {name} n={nn}: dQ {errs[0]:.1e} dK {errs[1]:.1e} dV {errs[2]:.1e} (vs patternc)", flush=True)
        o, lse = o.detach(), lse.detach()
        pairs = nn * (nn + 1) // 2 if causal else nn * nn
        flops = 10 * b * h * pairs * 128  # the backward's useful FLOPs (5 products)
        t_g = triton.testing.do_bench(lambda: backward(q, k, v, o, lse, do, causal), rep=200)

        def patternc_bwd():
            torch.autograd.grad(attn(qr, kr, vr), (qr, kr, vr), do)

        t_pf = triton.testing.do_bench(patternc_bwd, rep=200)
        t_pfwd = triton.testing.do_bench(lambda: attn(q, k, v), rep=200)
        t_p = t_pf - t_pfwd
        with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
            def cudnn():
                out = torch.nn.functional.scaled_dot_product_attention(qr, kr, vr, is_causal=causal)
                torch.autograd.grad(out, (qr, kr, vr), do)
            t_cf = triton.testing.do_bench(cudnn, rep=200)
            t_cfwd = triton.testing.do_bench(
                lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=causal), rep=200)
        t_c = t_cf - t_cfwd
        print(f"{name} n={n} backward: gluon {t_g:.3f} ms ({flops / t_g / 1e9:.0f} TF/s; includes torch delta and dQ "
              f"conversion), patternc {t_p:.3f} ms ({flops / t_p / 1e9:.0f}), cuDNN {t_c:.3f} ms "
              f"({flops / t_c / 1e9:.0f}); gluon/patternc {t_g / t_p:.3f}", flush=True)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=16384)
    ap.add_argument("--rows", default="causal,all")
    ap.add_argument("--offline", action="store_true")
    args = ap.parse_args()
    offline() if args.offline else gpu(args.n, args.rows.split(","))
