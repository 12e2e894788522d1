"""Probe: a hand-scheduled Hopper forward in Gluon for one-term patterns (causal, a causal
window, `all`), against patternc's Triton forward and SDPA cuDNN on the same inputs.

    python benchmarks/gluon_probe.py [--n 16384] [--offline]

The question (NOTES.md, v14): does a forward whose partitions we write ourselves (one TMA
producer warp, two consumer warpgroups of 64 query rows each that run out of step, so one's
softmax can overlap the other's MMAs) beat Triton 3.6's automatic warp specialization of the
same loop (v12), which reaches 0.86-0.90x of cuDNN? No masks beyond these three patterns, Q,
K, V contiguous [B, H, N, 128], N a multiple of 128, bf16: a probe, not a kernel of the
package. ``--offline`` only compiles it for sm_90 (no GPU) and prints registers and shared
memory.
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

LN2 = gl.constexpr(0.6931471805599453)


@gluon.jit
def _producer(q_desc, k_desc, v_desc, q_smem, k_smem, v_smem, q_bar, k_ready, k_empty, v_ready, v_empty,
              q_row, kv_row, tile_lo, n_tiles, STAGES: gl.constexpr):
    """One warp: Q's two halves once, then each key tile's K and V into a ring of STAGES
    buffers, each waiting until both consumers released its buffer."""
    HALF: gl.constexpr = q_desc.block_type.shape[0]
    BLOCK_N: gl.constexpr = k_desc.block_type.shape[0]
    mbarrier.expect(q_bar, 2 * q_desc.block_type.nbytes)
    tma.async_copy_global_to_shared(q_desc, [q_row, 0], q_bar, q_smem.index(0))
    tma.async_copy_global_to_shared(q_desc, [q_row + HALF, 0], q_bar, q_smem.index(1))
    for j in range(n_tiles):
        s = j % STAGES
        phase = (j // STAGES) & 1
        row = kv_row + (tile_lo + j) * BLOCK_N
        mbarrier.wait(k_empty.index(s), phase ^ 1)  # a fresh barrier passes the wait for parity 1
        mbarrier.expect(k_ready.index(s), k_desc.block_type.nbytes)
        tma.async_copy_global_to_shared(k_desc, [row, 0], k_ready.index(s), k_smem.index(s))
        mbarrier.wait(v_empty.index(s), phase ^ 1)
        mbarrier.expect(v_ready.index(s), v_desc.block_type.nbytes)
        tma.async_copy_global_to_shared(v_desc, [row, 0], v_ready.index(s), v_smem.index(s))


@gluon.jit
def _masked(qk, tile, offs_m, full_lo, full_hi, N, LEFT, CAUSAL: gl.constexpr, BLOCK_N: gl.constexpr,
            cols: gl.constexpr):
    """qk with -inf where the pattern drops a pair, on partial tiles only."""
    if (tile < full_lo) | (tile >= full_hi):
        offs_n = tile * BLOCK_N + gl.arange(0, BLOCK_N, layout=cols)
        keep = (offs_n[None, :] >= offs_m[:, None] - LEFT) & (offs_n[None, :] < N)
        if CAUSAL:
            keep = keep & (offs_n[None, :] <= offs_m[:, None])
        qk = gl.where(keep, qk, float("-inf"))
    return qk


@gluon.jit
def _consumer(half, q_smem, k_smem, v_smem, o_desc, LSE, q_bar, k_ready, k_empty, v_ready, v_empty,
              q_row, lse_row, start_m, tile_lo, n_tiles, full_lo, full_hi, N, LEFT, qk_scale,
              CAUSAL: gl.constexpr, STAGES: gl.constexpr, OVERLAP: gl.constexpr):
    """One warpgroup: query rows [start_m + 64 half, +64) against the row's key tiles; partial
    tiles (outside [full_lo, full_hi)) masked to k <= q (CAUSAL) and k >= q - LEFT."""
    HALF: gl.constexpr = q_smem.shape[1]
    BLOCK_N: gl.constexpr = k_smem.shape[1]
    HEAD_DIM: gl.constexpr = k_smem.shape[2]
    s_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                       instr_shape=[16, BLOCK_N, 16])
    o_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                       instr_shape=[16, HEAD_DIM, 16])
    p_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=o_layout, k_width=2)
    rows: gl.constexpr = gl.SliceLayout(1, s_layout)
    cols: gl.constexpr = gl.SliceLayout(0, s_layout)
    o_rows: gl.constexpr = gl.SliceLayout(1, o_layout)
    offs_m = start_m + half * HALF + gl.arange(0, HALF, layout=rows)
    m_i = gl.full([HALF], float("-inf"), gl.float32, rows)
    l_i = gl.full([HALF], 0.0, gl.float32, rows)
    acc = gl.zeros([HALF, HEAD_DIM], gl.float32, o_layout)
    zero = gl.zeros([HALF, BLOCK_N], gl.float32, s_layout)
    q = q_smem.index(half)
    mbarrier.wait(q_bar, 0)
    if not OVERLAP:
        for j in range(n_tiles):
            s = j % STAGES
            phase = (j // STAGES) & 1
            mbarrier.wait(k_ready.index(s), phase)
            qk = warpgroup_mma(q, k_smem.index(s).permute((1, 0)), zero, use_acc=False, is_async=True)
            qk = warpgroup_mma_wait(num_outstanding=0, deps=(qk, ))
            mbarrier.arrive(k_empty.index(s))
            qk = _masked(qk, tile_lo + j, offs_m, full_lo, full_hi, N, LEFT, CAUSAL, BLOCK_N, cols)
            m_new = gl.maximum(m_i, gl.max(qk, 1) * qk_scale)
            m_use = gl.where(m_new == float("-inf"), 0.0, m_new)
            p = gl.exp2(qk * qk_scale - m_use[:, None])
            alpha = gl.exp2(m_i - m_use)
            l_i = l_i * alpha + gl.sum(p, 1)
            m_i = m_new
            acc = acc * gl.convert_layout(alpha, o_rows)[:, None]
            p = gl.convert_layout(p.to(q_smem.dtype), p_layout)
            mbarrier.wait(v_ready.index(s), phase)
            acc = warpgroup_mma(p, v_smem.index(s), acc, is_async=True)
            acc = warpgroup_mma_wait(num_outstanding=0, deps=(acc, ))
            mbarrier.arrive(v_empty.index(s))
    elif n_tiles > 0:
        # FA3's intra-warpgroup overlap: tile j's QK^T and tile j-1's PV are in flight together,
        # and tile j's softmax runs while the PV still computes.
        mbarrier.wait(k_ready.index(0), 0)
        qk = warpgroup_mma(q, k_smem.index(0).permute((1, 0)), zero, use_acc=False, is_async=True)
        qk = warpgroup_mma_wait(num_outstanding=0, deps=(qk, ))
        mbarrier.arrive(k_empty.index(0))
        qk = _masked(qk, tile_lo, offs_m, full_lo, full_hi, N, LEFT, CAUSAL, BLOCK_N, cols)
        m_i = gl.max(qk, 1) * qk_scale
        m_use = gl.where(m_i == float("-inf"), 0.0, m_i)
        p = gl.exp2(qk * qk_scale - m_use[:, None])
        l_i = gl.sum(p, 1)
        p16 = gl.convert_layout(p.to(q_smem.dtype), p_layout)
        for j in range(1, n_tiles):
            s = j % STAGES
            phase = (j // STAGES) & 1
            ps = (j - 1) % STAGES
            pphase = ((j - 1) // STAGES) & 1
            mbarrier.wait(k_ready.index(s), phase)
            qk = warpgroup_mma(q, k_smem.index(s).permute((1, 0)), zero, use_acc=False, is_async=True)
            mbarrier.wait(v_ready.index(ps), pphase)
            acc = warpgroup_mma(p16, v_smem.index(ps), acc, is_async=True)
            qk = warpgroup_mma_wait(num_outstanding=1, deps=(qk, ))
            mbarrier.arrive(k_empty.index(s))
            qk = _masked(qk, tile_lo + j, offs_m, full_lo, full_hi, N, LEFT, CAUSAL, BLOCK_N, cols)
            m_new = gl.maximum(m_i, gl.max(qk, 1) * qk_scale)
            m_use = gl.where(m_new == float("-inf"), 0.0, m_new)
            p = gl.exp2(qk * qk_scale - m_use[:, None])
            alpha = gl.exp2(m_i - m_use)
            l_i = l_i * alpha + gl.sum(p, 1)
            m_i = m_new
            acc = warpgroup_mma_wait(num_outstanding=0, deps=(acc, ))
            mbarrier.arrive(v_empty.index(ps))
            acc = acc * gl.convert_layout(alpha, o_rows)[:, None]
            p16 = gl.convert_layout(p.to(q_smem.dtype), p_layout)
        ls = (n_tiles - 1) % STAGES
        mbarrier.wait(v_ready.index(ls), ((n_tiles - 1) // STAGES) & 1)
        acc = warpgroup_mma(p16, v_smem.index(ls), acc, is_async=True)
        acc = warpgroup_mma_wait(num_outstanding=0, deps=(acc, ))
        mbarrier.arrive(v_empty.index(ls))
    empty = l_i == 0.0
    l_use = gl.where(empty, 1.0, l_i)
    out = acc / gl.convert_layout(l_use, o_rows)[:, None]
    q.store(out.to(q_smem.dtype))  # this half of Q's buffer holds the output tile now
    fence_async_shared()
    tma.async_copy_shared_to_global(o_desc, [q_row + half * HALF, 0], q)
    lse = gl.where(empty, float("-inf"), (m_i + gl.log2(l_use)) * LN2)
    gl.store(LSE + lse_row + offs_m, lse)
    tma.store_wait(pendings=0)


@gluon.jit
def _consumer0(args):
    _consumer(0, *args)


@gluon.jit
def _consumer1(args):
    _consumer(1, *args)


@gluon.jit
def attn_fwd_gluon(q_desc, k_desc, v_desc, o_desc, LSE, N, LEFT, qk_scale, CAUSAL: gl.constexpr,
                   STAGES: gl.constexpr, OVERLAP: gl.constexpr, num_warps: gl.constexpr):
    """One program per (128-row query block, batch x head), longest rows first."""
    HALF: gl.constexpr = q_desc.block_type.shape[0]
    BLOCK_M: gl.constexpr = 2 * HALF
    BLOCK_N: gl.constexpr = k_desc.block_type.shape[0]
    dtype: gl.constexpr = q_desc.dtype
    num_m = gl.cdiv(N, BLOCK_M)
    pid = gl.program_id(0)
    mb = num_m - 1 - pid % num_m
    bh = pid // num_m
    start_m = mb * BLOCK_M
    lo_key = gl.maximum(start_m - LEFT, 0)
    if CAUSAL:
        hi_key = gl.minimum(start_m + BLOCK_M, N)
        full_hi = (start_m + 1) // BLOCK_N  # tiles whose last key <= the block's first query
    else:
        hi_key = N
        full_hi = N // BLOCK_N
    tile_lo = lo_key // BLOCK_N
    n_tiles = gl.maximum(gl.cdiv(hi_key, BLOCK_N) - tile_lo, 0)
    full_lo = gl.cdiv(gl.maximum(start_m + BLOCK_M - 1 - LEFT, 0), BLOCK_N)  # first key >= last query - LEFT
    q_row = bh * N + start_m

    q_smem = gl.allocate_shared_memory(dtype, [2] + q_desc.block_type.shape, q_desc.layout)
    k_smem = gl.allocate_shared_memory(dtype, [STAGES] + k_desc.block_type.shape, k_desc.layout)
    v_smem = gl.allocate_shared_memory(dtype, [STAGES] + v_desc.block_type.shape, v_desc.layout)
    q_bar = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
    k_ready = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    k_empty = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    v_ready = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    v_empty = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    mbarrier.init(q_bar, count=1)
    for i in gl.static_range(STAGES):
        mbarrier.init(k_ready.index(i), count=1)
        mbarrier.init(k_empty.index(i), count=2)
        mbarrier.init(v_ready.index(i), count=1)
        mbarrier.init(v_empty.index(i), count=2)

    consumer_args = (q_smem, k_smem, v_smem, o_desc, LSE, q_bar, k_ready, k_empty, v_ready, v_empty, q_row,
                     bh * N, start_m, tile_lo, n_tiles, full_lo, full_hi, N, LEFT, qk_scale, CAUSAL, STAGES, OVERLAP)
    gl.warp_specialize([
        (_consumer0, (consumer_args, )),
        (_consumer1, (consumer_args, )),
        (_producer, (q_desc, k_desc, v_desc, q_smem, k_smem, v_smem, q_bar, k_ready, k_empty, v_ready, v_empty,
                     q_row, bh * N, tile_lo, n_tiles, STAGES)),
    ], [4, 1], [232, 24])


def forward(q, k, v, left: int, causal: bool, stages: int = 2, overlap: bool = True):
    """O and LSE of the probe's kernel; q, k, v contiguous [B, H, N, D], N % 128 == 0."""
    B, H, N, D = q.shape
    out = torch.empty_like(q)
    lse = torch.empty(B, H, N, device=q.device, dtype=torch.float32)
    dt = gl.bfloat16 if q.dtype == torch.bfloat16 else gl.float16

    def desc(x, rows):
        flat = x.view(B * H * N, D)
        return TensorDescriptor(flat, list(flat.shape), list(flat.stride()), [rows, D],
                                gl.NVMMASharedLayout.get_default_for([rows, D], dt))

    grid = (triton.cdiv(N, 128) * B * H, )
    attn_fwd_gluon[grid](desc(q, 64), desc(k, 128), desc(v, 128), desc(out, 64), lse, N, left,
                         D ** -0.5 * 1.4426950408889634, causal, stages, overlap, num_warps=4)
    return out, lse


PATTERNS = {"causal": ("causal", None, True), "P3": ("window(left=1023, right=0)", 1023, True),
            "all": ("all", None, False)}


def offline():
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from patterns import compile_for_sm90, cubin_resources

    compile_for_sm90()
    n = 1024
    q = torch.empty(1, 2, n, 128, dtype=torch.bfloat16)
    lse = torch.empty(1, 2, n, dtype=torch.float32)
    dt = gl.bfloat16

    def desc(rows):
        flat = q.view(-1, 128)
        return TensorDescriptor(flat, list(flat.shape), list(flat.stride()), [rows, 128],
                                gl.NVMMASharedLayout.get_default_for([rows, 128], dt))

    for causal in (True, False):
        kernel = attn_fwd_gluon.warmup(desc(64), desc(128), desc(128), desc(64), lse, n, 1023, 0.1, causal, 2, True,
                                       num_warps=4, grid=(1, ))
        print(f"causal={causal}: {cubin_resources(kernel)} shared {kernel.metadata.shared}")
    Path("/tmp/gluon_probe.ttgir").write_text(kernel.asm["ttgir"])
    Path("/tmp/gluon_probe.ptx").write_text(kernel.asm["ptx"])


def gpu(n: int, rows: list[str], check: bool = True):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    import patternc
    from torch.nn.attention import SDPBackend, sdpa_kernel

    torch.manual_seed(0)
    B, H, D = 2, 16, 128
    # correctness first, small: against a float64 dense reference
    for name, (text, left, causal) in PATTERNS.items() if check else ():
        for nn, overlap in ((512, False), (1024, False), (128, True), (512, True), (1024, True)):
            lft = nn if left is None else 300  # a window shorter than the check's rows
            q, k, v = (torch.randn(1, 2, nn, D, device="cuda", dtype=torch.bfloat16) for _ in range(3))
            out, lse = forward(q, k, v, lft, causal, overlap=overlap)
            i = torch.arange(nn, device="cuda")
            keep = (i[None, :] >= i[:, None] - lft)
            keep &= (i[None, :] <= i[:, None]) if causal else True
            s = (q.double() @ k.double().transpose(-1, -2)) * D ** -0.5
            s = s.masked_fill(~keep, float("-inf"))
            ref = torch.softmax(s, -1) @ v.double()
            err = ((out.double() - ref).norm() / ref.norm()).item()
            lse_err = (lse.double() - torch.logsumexp(s, -1)).abs().max().item()
            print(f"check {name} n={nn} overlap={overlap}: rel err {err:.2e}, lse max abs err {lse_err:.2e}", flush=True)
    flops = {}
    for name, (text, left, causal) in PATTERNS.items():
        if name not in rows:
            continue
        q, k, v = (torch.randn(B, H, n, D, device="cuda", dtype=torch.bfloat16) for _ in range(3))
        attn = patternc.attention_from(text)
        ref = attn(q, k, v)
        out, _ = forward(q, k, v, n if left is None else left, causal)
        err = ((out.float() - ref.float()).norm() / ref.float().norm()).item()
        pairs = sum(min(i + 1, (n if left is None else left) + 1) if causal else n for i in range(n))
        flops[name] = 4 * B * H * pairs * D
        lft = n if left is None else left
        t_p = triton.testing.do_bench(lambda: attn(q, k, v), rep=200)
        t_0 = triton.testing.do_bench(lambda: forward(q, k, v, lft, causal, overlap=False), rep=200)
        t_g = triton.testing.do_bench(lambda: forward(q, k, v, lft, causal), rep=200)
        line = (f"{name} n={n}: patternc {t_p:.3f} ms ({flops[name] / t_p / 1e9:.0f} TF/s), gluon plain {t_0:.3f} ms "
                f"({flops[name] / t_0 / 1e9:.0f} TF/s), gluon overlap {t_g:.3f} ms ({flops[name] / t_g / 1e9:.0f} "
                f"TF/s), overlap/patternc {t_g / t_p:.3f}, vs patternc rel err {err:.1e}")
        if left is None:
            with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
                t_c = triton.testing.do_bench(
                    lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=causal), rep=200)
            line += f", cuDNN {t_c:.3f} ms ({flops[name] / t_c / 1e9:.0f} TF/s), cuDNN/gluon {t_c / t_g:.3f}"
        print(line, flush=True)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", default="16384", help="lengths, comma-separated")
    ap.add_argument("--rows", default="causal,P3,all")
    ap.add_argument("--offline", action="store_true")
    args = ap.parse_args()
    if args.offline:
        offline()
    else:
        for i, n in enumerate(args.n.split(",")):
            gpu(int(n), args.rows.split(","), check=i == 0)
