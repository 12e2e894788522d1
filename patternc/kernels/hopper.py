# patternc's warp-specialized forward and fused backward for Hopper (sm_90), written in Gluon (Triton's tile-level
# language with explicit layouts, shared memory, barriers and warp partitions).
#
# Pattern-independent like flash.py (whose conventions it shares: Q [B, H, Lq, D], K and V
# [B, HKV, Lk, D], scores in log2 units, LSE natural-log and -inf for empty rows, the layout's
# full and partial tile lists and tags, the plan's schedule); the pattern enters as MASK, the
# generated @triton.jit `pattern_mask`, called on partial tiles only (with the tile's TAGS word
# for a union or intersection, TAGGED).
#
# The forward (attn_fwd_ws; the fused backward, attn_bwd_ws, is described where it starts below):
# one program (a CTA of 9 warps) takes work items w = id, id + programs, ...: one item is a
# 128-row query block of one (batch, head), or one split of its key tiles (decoding). Three
# partitions run side by side:
#   producer (1 warp): TMA loads of each item's Q (two 64-row halves, double-buffered across
#     items) and of its K and V tiles into a ring of STAGES buffers;
#   two consumers (a warpgroup each, 64 query rows each): per key tile, S = Q K^T and O += P V
#     on the tensor cores (wgmma), the online softmax in between. A consumer issues tile j's
#     QK^T and tile j-1's PV together and runs tile j's softmax while the PV computes
#     (FlashAttention-3's intra-warpgroup overlap); the two consumers are not kept in step, so
#     one's softmax also overlaps the other's MMAs. (Two partitions on purpose: one 8-warp
#     partition compiles faster but Gluon syncs it before every barrier arrive, holding its
#     warpgroups in step: 7-29% slower, NOTES.md v14 step 7.)
# Barriers: *_ready (the TMA's bytes landed) and *_empty (both consumers are done reading a
# buffer; a fresh barrier passes a wait for parity 1, so the producer's first pass through the
# ring does not wait). Launched with one program per item, or fewer (persistent programs: the
# producer then runs ahead into the next item while the consumers finish this one).
# Measured against Triton 3.6's automatic warp specialization of flash.py's loop (v12-v13) on
# an H100 (results/2026-11-26-gluon-probe-h100.txt, B=2 H=16 D=128 bf16): causal 16K 4.22 ->
# 3.49 ms, `all` 16K 7.73 -> 7.01 ms, P3 16K 0.687 -> 0.628 ms (cuDNN: causal 3.68, `all` 7.13);
# this kernel in the package: results/2026-11-26-ab-v14-gluon-h100.md. Written for Triton 3.6's
# Gluon API, which later releases change (`cache.hopper_supported`).

from triton._C.libtriton import ir
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language._core import builtin
from triton.experimental.gluon.language.nvidia.hopper import (fence_async_shared, mbarrier, tma, warpgroup_mma,
                                                              warpgroup_mma_wait)

from .flash import _scheduled, _share

LN2 = gl.constexpr(0.6931471805599453)
CONSUMER_REGISTERS = gl.constexpr(232)  # per thread, of the second consumer (the first gets what remains: 248)
PRODUCER_REGISTERS = gl.constexpr(24)
BWD_CONSUMER_REGISTERS = gl.constexpr(240)  # the backward's second consumer (spills at 232: NOTES v15)
LOG2E = gl.constexpr(1.4426950408889634)


@gluon.jit
def _item(w, FULL_OFFSETS, PART_OFFSETS, ORDER, HEAVY, H, GROUP, Q_LEN, WORK, SPLITS, BLOCK_M: gl.constexpr):
    """Work item w: (query block, batch, head, kv head, split, and the split's tiles [lo, hi) of the
    block's full list then partial list laid end to end: full_lo, n_full, part_lo)."""
    qb, rest = _scheduled(w, WORK, Q_LEN, BLOCK_M, ORDER, HEAVY)
    split = rest % SPLITS
    off_bh = rest // SPLITS
    off_h = off_bh % H
    full_lo, n_full, part_lo, lo, hi = _share(qb, split, SPLITS, FULL_OFFSETS, PART_OFFSETS)
    return qb, off_bh // H, off_h, off_h // GROUP, split, full_lo, n_full, part_lo, lo, hi


@gluon.jit
def _key_start(t, FULL_INDICES, PART_INDICES, full_lo, n_full, part_lo, BLOCK_N: gl.constexpr):
    """First key of tile t of an item's list (full tiles first)."""
    if t < n_full:
        block = gl.load(FULL_INDICES + full_lo + t)
    else:
        block = gl.load(PART_INDICES + part_lo + t - n_full)
    return block * BLOCK_N


@gluon.jit
def _producer(Q_DESC, K_DESC, V_DESC, q_smem, k_smem, v_smem, q_ready, q_empty, k_ready, k_empty, v_ready, v_empty,
              FULL_OFFSETS, FULL_INDICES, PART_OFFSETS, PART_INDICES, ORDER, HEAVY, H, GROUP, Q_LEN, WORK, SPLITS,
              STAGES: gl.constexpr):
    HALF: gl.constexpr = Q_DESC.block_type.shape[2]
    BLOCK_N: gl.constexpr = K_DESC.block_type.shape[2]
    c = 0  # K/V tiles loaded so far: ring slot c % STAGES, pass c // STAGES
    it = 0  # items so far: Q buffer it % 2
    for w in range(gl.program_id(0), WORK, gl.num_programs(0)):
        qb, off_b, off_h, off_hk, split, full_lo, n_full, part_lo, lo, hi = _item(
            w, FULL_OFFSETS, PART_OFFSETS, ORDER, HEAVY, H, GROUP, Q_LEN, WORK, SPLITS, 2 * HALF)
        qs = it % 2
        mbarrier.wait(q_empty.index(qs), ((it // 2) & 1) ^ 1)
        mbarrier.expect(q_ready.index(qs), 2 * Q_DESC.block_type.nbytes)
        for half in gl.static_range(2):  # rows past Q_LEN read as zeros
            tma.async_copy_global_to_shared(Q_DESC, [off_b, off_h, qb * 2 * HALF + half * HALF, 0],
                                            q_ready.index(qs), q_smem.index(2 * qs + half))
        for t in range(lo, hi):
            start_n = _key_start(t, FULL_INDICES, PART_INDICES, full_lo, n_full, part_lo, BLOCK_N)
            s = c % STAGES
            phase = (c // STAGES) & 1
            mbarrier.wait(k_empty.index(s), phase ^ 1)
            mbarrier.expect(k_ready.index(s), K_DESC.block_type.nbytes)
            tma.async_copy_global_to_shared(K_DESC, [off_b, off_hk, start_n, 0], k_ready.index(s), k_smem.index(s))
            mbarrier.wait(v_empty.index(s), phase ^ 1)
            mbarrier.expect(v_ready.index(s), V_DESC.block_type.nbytes)
            tma.async_copy_global_to_shared(V_DESC, [off_b, off_hk, start_n, 0], v_ready.index(s), v_smem.index(s))
            c += 1
        it += 1


@gluon.jit
def _scores(qk, t, n_full, start_n, offs_m, TAGS_AT, KV_LEN, Q_OFFSET, PARAMS, MASK: gl.constexpr,
            RANDOM_SLOTS: gl.constexpr, EVEN_N: gl.constexpr, TAGGED: gl.constexpr, cols: gl.constexpr):
    """qk with -inf where a pair is dropped: the pattern's on partial tiles (TAGGED: a union or
    intersection, whose mask evaluates the terms TAGS_AT[t] names), and keys past KV_LEN (zeros
    from the TMA) unless EVEN_N."""
    HALF: gl.constexpr = qk.shape[0]
    BLOCK_N: gl.constexpr = qk.shape[1]
    offs_n = start_n + gl.arange(0, BLOCK_N, layout=cols)
    if t >= n_full:
        tags = gl.load(TAGS_AT + t) if TAGGED else 0
        keep = MASK(offs_m[:, None], offs_n[None, :], Q_OFFSET, PARAMS, tags, ROWS=HALF, COLS=BLOCK_N,
                    RANDOM_SLOTS=RANDOM_SLOTS)
        if not EVEN_N:
            keep = keep & (offs_n[None, :] < KV_LEN)
        qk = gl.where(keep, qk, float("-inf"))
    elif not EVEN_N:
        qk = gl.where(offs_n[None, :] < KV_LEN, qk, float("-inf"))
    return qk


@gluon.jit
def _softmax(qk, m_i, l_i, qk_scale):
    """One online-softmax step: P (unnormalized), the new running max and sum, and alpha, the
    factor that rescales what was accumulated before."""
    m_new = gl.maximum(m_i, gl.max(qk, 1) * qk_scale)
    m_use = gl.where(m_new == float("-inf"), 0.0, m_new)  # rows with nothing yet: avoid -inf - -inf
    p = gl.exp2(qk * qk_scale - m_use[:, None])
    alpha = gl.exp2(m_i - m_use)
    return p, m_new, l_i * alpha + gl.sum(p, 1), alpha


@gluon.jit
def _consumer(half: gl.constexpr, q_smem, k_smem, v_smem, q_ready, q_empty, k_ready, k_empty, v_ready, v_empty,
              O, LSE, PARAMS, FULL_OFFSETS, FULL_INDICES, PART_OFFSETS, PART_INDICES, PART_TAGS, ORDER, HEAVY,
              stride_ob, stride_oh, stride_om, stride_od, H, GROUP, Q_LEN, KV_LEN, Q_OFFSET, WORK, qk_scale, SPLITS,
              stride_os, stride_ls, MASK: gl.constexpr, RANDOM_SLOTS: gl.constexpr, EVEN_N: gl.constexpr,
              TAGGED: gl.constexpr, STAGES: gl.constexpr):
    """Query rows [64 half, 64 half + 64) of each item's block."""
    HALF: gl.constexpr = q_smem.shape[3]
    BLOCK_N: gl.constexpr = k_smem.shape[3]
    HEAD_DIM: gl.constexpr = k_smem.shape[4]
    dtype: gl.constexpr = q_smem.dtype
    s_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                       instr_shape=[16, BLOCK_N, 16])
    o_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                       instr_shape=[16, HEAD_DIM, 16])
    p_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=o_layout, k_width=2)
    rows: gl.constexpr = gl.SliceLayout(1, s_layout)
    cols: gl.constexpr = gl.SliceLayout(0, s_layout)
    o_rows: gl.constexpr = gl.SliceLayout(1, o_layout)
    zero = gl.zeros([HALF, BLOCK_N], gl.float32, s_layout)
    c = 0
    it = 0
    for w in range(gl.program_id(0), WORK, gl.num_programs(0)):
        qb, off_b, off_h, off_hk, split, full_lo, n_full, part_lo, lo, hi = _item(
            w, FULL_OFFSETS, PART_OFFSETS, ORDER, HEAVY, H, GROUP, Q_LEN, WORK, SPLITS, 2 * HALF)
        offs_m = qb * 2 * HALF + half * HALF + gl.arange(0, HALF, layout=rows)
        qs = it % 2
        mbarrier.wait(q_ready.index(qs), (it // 2) & 1)
        q = q_smem.index(2 * qs + half).reshape([HALF, HEAD_DIM])
        m_i = gl.full([HALF], float("-inf"), gl.float32, rows)
        l_i = gl.full([HALF], 0.0, gl.float32, rows)
        acc = gl.zeros([HALF, HEAD_DIM], gl.float32, o_layout)
        if hi > lo:
            s = c % STAGES
            mbarrier.wait(k_ready.index(s), (c // STAGES) & 1)
            qk = warpgroup_mma(q, k_smem.index(s).reshape([BLOCK_N, HEAD_DIM]).permute((1, 0)), zero,
                               use_acc=False, is_async=True)
            qk = warpgroup_mma_wait(num_outstanding=0, deps=(qk, ))
            mbarrier.arrive(k_empty.index(s))
            start_n = _key_start(lo, FULL_INDICES, PART_INDICES, full_lo, n_full, part_lo, BLOCK_N)
            tags_at = PART_TAGS + part_lo - n_full  # tile t's word: tags_at[t]
            qk = _scores(qk, lo, n_full, start_n, offs_m, tags_at, KV_LEN, Q_OFFSET, PARAMS, MASK, RANDOM_SLOTS,
                         EVEN_N, TAGGED, cols)
            p, m_i, l_i, alpha = _softmax(qk, m_i, l_i, qk_scale)
            p = gl.convert_layout(p.to(dtype), p_layout)
            for t in range(lo + 1, hi):
                s = (c + t - lo) % STAGES
                ps = (c + t - lo - 1) % STAGES
                mbarrier.wait(k_ready.index(s), ((c + t - lo) // STAGES) & 1)
                qk = warpgroup_mma(q, k_smem.index(s).reshape([BLOCK_N, HEAD_DIM]).permute((1, 0)), zero,
                                   use_acc=False, is_async=True)
                mbarrier.wait(v_ready.index(ps), ((c + t - lo - 1) // STAGES) & 1)
                acc = warpgroup_mma(p, v_smem.index(ps).reshape([BLOCK_N, HEAD_DIM]), acc, is_async=True)
                qk = warpgroup_mma_wait(num_outstanding=1, deps=(qk, ))  # this tile's S; the PV still runs
                mbarrier.arrive(k_empty.index(s))
                start_n = _key_start(t, FULL_INDICES, PART_INDICES, full_lo, n_full, part_lo, BLOCK_N)
                qk = _scores(qk, t, n_full, start_n, offs_m, tags_at, KV_LEN, Q_OFFSET, PARAMS, MASK, RANDOM_SLOTS,
                             EVEN_N, TAGGED, cols)
                p, m_i, l_i, alpha = _softmax(qk, m_i, l_i, qk_scale)
                acc = warpgroup_mma_wait(num_outstanding=0, deps=(acc, ))
                mbarrier.arrive(v_empty.index(ps))
                acc = acc * gl.convert_layout(alpha, o_rows)[:, None]
                p = gl.convert_layout(p.to(dtype), p_layout)
            s = (c + hi - lo - 1) % STAGES
            mbarrier.wait(v_ready.index(s), ((c + hi - lo - 1) // STAGES) & 1)
            acc = warpgroup_mma(p, v_smem.index(s).reshape([BLOCK_N, HEAD_DIM]), acc, is_async=True)
            acc = warpgroup_mma_wait(num_outstanding=0, deps=(acc, ))
            mbarrier.arrive(v_empty.index(s))
        mbarrier.arrive(q_empty.index(qs))
        # Rows that attended nothing: O = 0 and LSE = -inf. A split writes its own fp32 part.
        empty = l_i == 0.0
        l_use = gl.where(empty, 1.0, l_i)
        out = acc / gl.convert_layout(l_use, o_rows)[:, None]
        o_m = gl.convert_layout(offs_m, o_rows)
        d = gl.arange(0, HEAD_DIM, layout=gl.SliceLayout(0, o_layout))
        base = split.to(gl.int64) * stride_os + off_b.to(gl.int64) * stride_ob + off_h.to(gl.int64) * stride_oh
        gl.store(O + base + o_m.to(gl.int64)[:, None] * stride_om + d[None, :] * stride_od,
                 out.to(O.dtype.element_ty), mask=(o_m < Q_LEN)[:, None])
        lse = gl.where(empty, float("-inf"), (m_i + gl.log2(l_use)) * LN2)
        rows_at = LSE + split.to(gl.int64) * stride_ls + (off_b * H + off_h).to(gl.int64) * Q_LEN
        gl.store(rows_at + offs_m, lse, mask=offs_m < Q_LEN)
        c += hi - lo
        it += 1


@gluon.jit
def _consumer0(body: gl.constexpr, args, MASK: gl.constexpr, RANDOM_SLOTS: gl.constexpr, EVEN_N: gl.constexpr,
               TAGGED: gl.constexpr, STAGES: gl.constexpr):
    """Partition of consumer 0 (`_consumer` or `_bwd_consumer`): Gluon takes one function per
    partition, and the consumer's index must be a constexpr."""
    body(0, *args, MASK=MASK, RANDOM_SLOTS=RANDOM_SLOTS, EVEN_N=EVEN_N, TAGGED=TAGGED, STAGES=STAGES)


@gluon.jit
def _consumer1(body: gl.constexpr, args, MASK: gl.constexpr, RANDOM_SLOTS: gl.constexpr, EVEN_N: gl.constexpr,
               TAGGED: gl.constexpr, STAGES: gl.constexpr):
    body(1, *args, MASK=MASK, RANDOM_SLOTS=RANDOM_SLOTS, EVEN_N=EVEN_N, TAGGED=TAGGED, STAGES=STAGES)


@gluon.jit(do_not_specialize=["Q_OFFSET", "HEAVY", "WORK"])
def attn_fwd_ws(Q_DESC, K_DESC, V_DESC, O, LSE, PARAMS, FULL_OFFSETS, FULL_INDICES, PART_OFFSETS, PART_INDICES,
                PART_TAGS, ORDER, HEAVY, stride_ob, stride_oh, stride_om, stride_od, H, GROUP, Q_LEN, KV_LEN,
                Q_OFFSET, WORK, qk_scale, SPLITS, stride_os, stride_ls, MASK: gl.constexpr,
                RANDOM_SLOTS: gl.constexpr, EVEN_N: gl.constexpr, TAGGED: gl.constexpr, STAGES: gl.constexpr):
    """Forward of WORK items (query blocks x batch x heads x splits) over the programs launched.
    Q_DESC: TMA descriptor of Q [B, H, Lq, D], tiles [1, 1, 64, D]; K_DESC, V_DESC of K and V
    [B, HKV, Lk, D], tiles [1, 1, BLOCK_N, D]; STAGES: buffers in each of the K and V rings.
    Other arguments as flash.py's attn_fwd."""
    dtype: gl.constexpr = Q_DESC.dtype
    q_smem = gl.allocate_shared_memory(dtype, [4] + Q_DESC.block_type.shape, Q_DESC.layout)  # 2 items x 2 halves
    k_smem = gl.allocate_shared_memory(dtype, [STAGES] + K_DESC.block_type.shape, K_DESC.layout)
    v_smem = gl.allocate_shared_memory(dtype, [STAGES] + V_DESC.block_type.shape, V_DESC.layout)
    q_ready = gl.allocate_shared_memory(gl.int64, [2, 1], mbarrier.MBarrierLayout())
    q_empty = gl.allocate_shared_memory(gl.int64, [2, 1], mbarrier.MBarrierLayout())
    k_ready = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    k_empty = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    v_ready = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    v_empty = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    for i in gl.static_range(2):
        mbarrier.init(q_ready.index(i), count=1)
        mbarrier.init(q_empty.index(i), count=2)
    for i in gl.static_range(STAGES):
        mbarrier.init(k_ready.index(i), count=1)
        mbarrier.init(k_empty.index(i), count=2)
        mbarrier.init(v_ready.index(i), count=1)
        mbarrier.init(v_empty.index(i), count=2)
    consumer = (q_smem, k_smem, v_smem, q_ready, q_empty, k_ready, k_empty, v_ready, v_empty, O, LSE, PARAMS,
                FULL_OFFSETS, FULL_INDICES, PART_OFFSETS, PART_INDICES, PART_TAGS, ORDER, HEAVY, stride_ob, stride_oh,
                stride_om, stride_od, H, GROUP, Q_LEN, KV_LEN, Q_OFFSET, WORK, qk_scale, SPLITS, stride_os, stride_ls)
    # (constexprs apart: an assigned tuple turns its values into tensors; a function goes in as a constexpr)
    gl.warp_specialize([
        (_consumer0, (gl.constexpr(_consumer), consumer, MASK, RANDOM_SLOTS, EVEN_N, TAGGED, STAGES)),
        (_consumer1, (gl.constexpr(_consumer), consumer, MASK, RANDOM_SLOTS, EVEN_N, TAGGED, STAGES)),
        (_producer, (Q_DESC, K_DESC, V_DESC, q_smem, k_smem, v_smem, q_ready, q_empty, k_ready, k_empty, v_ready,
                     v_empty, FULL_OFFSETS, FULL_INDICES, PART_OFFSETS, PART_INDICES, ORDER, HEAVY, H, GROUP, Q_LEN,
                     WORK, SPLITS, STAGES)),
    ], [4, 1], [CONSUMER_REGISTERS, PRODUCER_REGISTERS])


# --------------------------------------------------------------------------- backward
# One program per (128-key block, batch x kv head), FlashAttention-3's arrangement: the producer
# warp loads the block's K and V once (two 64-key halves) and, for each query tile of the
# block's transposed lists (64 rows, full tiles then partial ones, for every query head of the
# GQA group), Q and dO into rings. Consumer c (a warpgroup) owns keys [64 c, 64 c + 64) and per
# query tile computes S = Q K_c^T and dP = dO V_c^T, P and dS (in shared memory, as the
# transposed A operands of dV_c += P^T dO and dK_c += dS^T Q), and then c's half of dQ's
# columns over all 128 keys, dQ[:, c half] = dS K[:, c half], from both consumers' dS. dQ goes
# out as an fp32 TMA bulk reduction into a zeroed accumulator (cp.reduce.async.bulk: one
# instruction per tile, done by the TMA unit). Five products per tile pair, against the
# plain loops' seven (their dQ kernel recomputes S and dP). Probe: benchmarks/gluon_bwd_probe.py.


@builtin
def _reduce_add(desc, coord, src, _semantic=None):
    """TMA bulk reduction, global[coord tile] += src (shared memory). Gluon 3.6 has the operation
    in its builder but no wrapper (3.9 names it tma.async_atomic_add)."""
    coord = _semantic._convert_to_ir_values(coord, require_i64=False)
    _semantic.builder.create_async_tma_reduce(ir.DESCRIPTOR_REDUCE_KIND.ADD, desc.handle, coord, src.handle)


@gluon.jit
def _bwd_producer(Q_DESC, DO_DESC, K_DESC, V_DESC, q_smem, do_smem, k_smem, v_smem, kv_bar, q_ready, q_empty,
                  do_ready, do_empty, FULL_OFFSETS, FULL_INDICES, PART_OFFSETS, PART_INDICES, kb, off_b, off_hk,
                  GROUP, STAGES: gl.constexpr):
    BLOCK_M: gl.constexpr = Q_DESC.block_type.shape[2]
    HALF: gl.constexpr = K_DESC.block_type.shape[2]
    mbarrier.expect(kv_bar, 2 * K_DESC.block_type.nbytes + 2 * V_DESC.block_type.nbytes)
    for c in gl.static_range(2):  # keys past KV_LEN read as zeros
        tma.async_copy_global_to_shared(K_DESC, [off_b, off_hk, kb * 2 * HALF + c * HALF, 0], kv_bar,
                                        k_smem.index(c))
        tma.async_copy_global_to_shared(V_DESC, [off_b, off_hk, kb * 2 * HALF + c * HALF, 0], kv_bar,
                                        v_smem.index(c))
    full_lo, n_full, part_lo, _, tiles = _share(kb, 0, 1, FULL_OFFSETS, PART_OFFSETS)
    j = 0  # query tiles loaded so far: ring slot j % STAGES, pass j // STAGES
    for g in range(GROUP):
        off_h = off_hk * GROUP + g
        for t in range(tiles):
            start_m = _key_start(t, FULL_INDICES, PART_INDICES, full_lo, n_full, part_lo, BLOCK_M)  # rows here
            s = j % STAGES
            phase = (j // STAGES) & 1
            mbarrier.wait(q_empty.index(s), phase ^ 1)
            mbarrier.expect(q_ready.index(s), Q_DESC.block_type.nbytes)
            tma.async_copy_global_to_shared(Q_DESC, [off_b, off_h, start_m, 0], q_ready.index(s), q_smem.index(s))
            mbarrier.wait(do_empty.index(s), phase ^ 1)
            mbarrier.expect(do_ready.index(s), DO_DESC.block_type.nbytes)
            tma.async_copy_global_to_shared(DO_DESC, [off_b, off_h, start_m, 0], do_ready.index(s), do_smem.index(s))
            j += 1


@gluon.jit
def _bwd_step(j, c: gl.constexpr, start_m, tags, q_smem, do_smem, k_smem, v_smem, p_smem, ds_smem, dq_smem, q_ready,
              q_empty, do_ready, do_empty, ds_ready, DQ_DESC, lse_at, delta_at, dq_bh, g, start_n, Q_LEN, KV_LEN,
              Q_OFFSET, PARAMS, qk_scale, sm_scale, dk, dv, MASK: gl.constexpr, RANDOM_SLOTS: gl.constexpr,
              EVEN_N: gl.constexpr, PARTIAL: gl.constexpr, STAGES: gl.constexpr):
    """Consumer c's share of query tile j (rows start_m..+64; PARTIAL: the pattern's mask applies):
    dK_c and dV_c accumulate, c's half of dQ's columns goes out by a TMA reduction."""
    BLOCK_M: gl.constexpr = q_smem.shape[3]
    HALF: gl.constexpr = k_smem.shape[3]
    HEAD_DIM: gl.constexpr = k_smem.shape[4]
    DQ_COLS: gl.constexpr = HEAD_DIM // 2
    dtype: gl.constexpr = q_smem.dtype
    s_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                       instr_shape=[16, HALF, 16])
    dq_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                        instr_shape=[16, DQ_COLS, 16])
    s = j % STAGES
    phase = (j // STAGES) & 1
    q = q_smem.index(s).reshape([BLOCK_M, HEAD_DIM])
    do = do_smem.index(s).reshape([BLOCK_M, HEAD_DIM])
    k = k_smem.index(c).reshape([HALF, HEAD_DIM])
    v = v_smem.index(c).reshape([HALF, HEAD_DIM])
    offs_m = start_m + gl.arange(0, BLOCK_M, layout=gl.SliceLayout(1, s_layout))
    mbarrier.wait(q_ready.index(s), phase)
    qk = warpgroup_mma(q, k.permute((1, 0)), gl.zeros([BLOCK_M, HALF], gl.float32, s_layout), use_acc=False,
                       is_async=True)
    mbarrier.wait(do_ready.index(s), phase)
    dp = warpgroup_mma(do, v.permute((1, 0)), gl.zeros([BLOCK_M, HALF], gl.float32, s_layout), use_acc=False,
                       is_async=True)
    # while the products run: the rows' LSE (log2 units; +inf for empty rows and rows past Q_LEN,
    # whose P is then 0) and delta
    lse = gl.load(lse_at + offs_m, mask=offs_m < Q_LEN, other=float("-inf"))
    lse = gl.where(lse == float("-inf"), float("inf"), lse * LOG2E)
    delta = gl.load(delta_at + offs_m, mask=offs_m < Q_LEN, other=0.0)
    qk = warpgroup_mma_wait(num_outstanding=1, deps=(qk, ))
    p = gl.exp2(qk * qk_scale - lse[:, None])
    offs_n = start_n + c * HALF + gl.arange(0, HALF, layout=gl.SliceLayout(0, s_layout))
    if PARTIAL:
        keep = MASK(offs_m[:, None], offs_n[None, :], Q_OFFSET, PARAMS, tags, ROWS=BLOCK_M, COLS=HALF,
                    RANDOM_SLOTS=RANDOM_SLOTS)
        if not EVEN_N:
            keep = keep & (offs_n[None, :] < KV_LEN)
        p = gl.where(keep, p, 0.0)
    elif not EVEN_N:  # keys past KV_LEN (zeros from the TMA) drop
        p = gl.where(offs_n[None, :] < KV_LEN, p, 0.0)
    p_smem.index(c).store(p.to(dtype))
    fence_async_shared()
    dv = warpgroup_mma(p_smem.index(c).permute((1, 0)), do, dv, is_async=True)
    dp = warpgroup_mma_wait(num_outstanding=1, deps=(dp, ))
    ds = (p * (dp - delta[:, None])).to(dtype)
    # c's dS into its half of the tile's [64 queries, 128 keys] (two buffers by tile parity: a
    # consumer writes tile j+2's only after it has seen the other's tile j+1, which the other
    # stores after its tile j's dQ products finished)
    ds0 = (j % 2) * 2
    ds_smem.index(ds0 + c).store(ds)
    fence_async_shared()
    mbarrier.arrive(ds_ready.index(j % 2))
    dk = warpgroup_mma(ds_smem.index(ds0 + c).permute((1, 0)), q, dk, is_async=True)
    mbarrier.wait(ds_ready.index(j % 2), (j // 2) & 1)
    dq = warpgroup_mma(ds_smem.index(ds0), k_smem.index(0).reshape([HALF, HEAD_DIM]).slice(c * DQ_COLS, DQ_COLS, dim=1),
                       gl.zeros([BLOCK_M, DQ_COLS], gl.float32, dq_layout), use_acc=False, is_async=True)
    dq = warpgroup_mma(ds_smem.index(ds0 + 1),
                       k_smem.index(1).reshape([HALF, HEAD_DIM]).slice(c * DQ_COLS, DQ_COLS, dim=1), dq,
                       is_async=True)
    dv, dk, dq = warpgroup_mma_wait(num_outstanding=0, deps=(dv, dk, dq))
    mbarrier.arrive(q_empty.index(s))
    mbarrier.arrive(do_empty.index(s))
    tma.store_wait(0)  # the previous tile's reduction has read the staging buffer
    dq_smem.index(c).reshape([BLOCK_M, DQ_COLS]).store(dq * sm_scale)
    fence_async_shared()
    _reduce_add(DQ_DESC, [dq_bh, g, start_m, c * DQ_COLS], dq_smem.index(c))  # rows past Q_LEN drop
    return dk, dv


@gluon.jit
def _bwd_consumer(c: gl.constexpr, q_smem, do_smem, k_smem, v_smem, p_smem, ds_smem, dq_smem, kv_bar, q_ready, q_empty,
                  do_ready, do_empty, ds_ready, DQ_DESC, DK, DV, LSE, DELTA, PARAMS, FULL_OFFSETS, FULL_INDICES,
                  PART_OFFSETS, PART_INDICES, PART_TAGS, kb, dq_bh, off_b, off_hk, stride_dkb, stride_dkh, stride_dkn,
                  stride_dkd, stride_dvb, stride_dvh, stride_dvn, stride_dvd, H, GROUP, Q_LEN, KV_LEN, Q_OFFSET,
                  qk_scale, sm_scale, MASK: gl.constexpr, RANDOM_SLOTS: gl.constexpr, EVEN_N: gl.constexpr,
                  TAGGED: gl.constexpr, STAGES: gl.constexpr):
    BLOCK_M: gl.constexpr = q_smem.shape[3]
    HALF: gl.constexpr = k_smem.shape[3]
    HEAD_DIM: gl.constexpr = k_smem.shape[4]
    acc_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                         instr_shape=[16, HEAD_DIM, 16])
    dk = gl.zeros([HALF, HEAD_DIM], gl.float32, acc_layout)
    dv = gl.zeros([HALF, HEAD_DIM], gl.float32, acc_layout)
    start_n = kb * 2 * HALF
    full_lo, n_full, part_lo, _, tiles = _share(kb, 0, 1, FULL_OFFSETS, PART_OFFSETS)
    mbarrier.wait(kv_bar, 0)
    j = 0
    for g in range(GROUP):
        off_h = off_hk * GROUP + g
        rows = (off_b * H + off_h).to(gl.int64) * Q_LEN  # this head's LSE and delta
        for t in range(n_full):
            dk, dv = _bwd_step(j, c, gl.load(FULL_INDICES + full_lo + t) * BLOCK_M, 0, q_smem, do_smem, k_smem,
                               v_smem, p_smem, ds_smem, dq_smem, q_ready, q_empty, do_ready, do_empty, ds_ready,
                               DQ_DESC, LSE + rows, DELTA + rows, dq_bh, g, start_n, Q_LEN, KV_LEN, Q_OFFSET,
                               PARAMS, qk_scale, sm_scale, dk, dv, MASK, RANDOM_SLOTS, EVEN_N, False, STAGES)
            j += 1
        for t in range(part_lo, part_lo + tiles - n_full):
            tags = gl.load(PART_TAGS + t) if TAGGED else 0
            dk, dv = _bwd_step(j, c, gl.load(PART_INDICES + t) * BLOCK_M, tags, q_smem, do_smem, k_smem,
                               v_smem, p_smem, ds_smem, dq_smem, q_ready, q_empty, do_ready, do_empty, ds_ready,
                               DQ_DESC, LSE + rows, DELTA + rows, dq_bh, g, start_n, Q_LEN, KV_LEN, Q_OFFSET,
                               PARAMS, qk_scale, sm_scale, dk, dv, MASK, RANDOM_SLOTS, EVEN_N, True, STAGES)
            j += 1
    tma.store_wait(0)
    keys = start_n + c * HALF + gl.arange(0, HALF, layout=gl.SliceLayout(1, acc_layout))
    d = gl.arange(0, HEAD_DIM, layout=gl.SliceLayout(0, acc_layout))
    ok = (keys < KV_LEN)[:, None]
    dk_at = DK + off_b.to(gl.int64) * stride_dkb + off_hk.to(gl.int64) * stride_dkh
    gl.store(dk_at + keys.to(gl.int64)[:, None] * stride_dkn + d[None, :] * stride_dkd,
             (dk * sm_scale).to(DK.dtype.element_ty), mask=ok)
    dv_at = DV + off_b.to(gl.int64) * stride_dvb + off_hk.to(gl.int64) * stride_dvh
    gl.store(dv_at + keys.to(gl.int64)[:, None] * stride_dvn + d[None, :] * stride_dvd, dv.to(DV.dtype.element_ty),
             mask=ok)


@gluon.jit(do_not_specialize=["Q_OFFSET", "HEAVY", "BH_OFFSET"])
def attn_bwd_ws(Q_DESC, DO_DESC, K_DESC, V_DESC, DQ_DESC, DK, DV, LSE, DELTA, PARAMS, FULL_OFFSETS, FULL_INDICES,
                PART_OFFSETS, PART_INDICES, PART_TAGS, ORDER, HEAVY, BH_OFFSET, stride_dkb, stride_dkh, stride_dkn,
                stride_dkd, stride_dvb, stride_dvh, stride_dvn, stride_dvd, H, HKV, GROUP, Q_LEN, KV_LEN, Q_OFFSET,
                qk_scale, sm_scale, MASK: gl.constexpr, RANDOM_SLOTS: gl.constexpr, EVEN_N: gl.constexpr,
                TAGGED: gl.constexpr, STAGES: gl.constexpr):
    """dK, dV and dQ of one 128-key block of one (batch, kv head) per program, its query tiles
    from the backward layout's transposed lists (64x128 tiles); the programs take the (batch x
    kv head) pairs BH_OFFSET, BH_OFFSET + 1, ... (a chunk of them: see launch.py). Q_DESC,
    DO_DESC: TMA descriptors of Q and dO [B, H, Lq, D], tiles [1, 1, 64, D]; K_DESC, V_DESC of K
    and V [B, HKV, Lk, D], tiles [1, 1, 64, D] (a consumer's half); DQ_DESC of the chunk's
    zeroed fp32 dQ accumulator [pairs, GROUP, Lq, D], tiles [1, 1, 64, D / 2]; LSE and DELTA
    [B, H, Lq] contiguous; STAGES: buffers in each of the Q and dO rings. Other arguments as
    flash.py's attn_bwd_dkdv."""
    dtype: gl.constexpr = Q_DESC.dtype
    BLOCK_M: gl.constexpr = Q_DESC.block_type.shape[2]
    HALF: gl.constexpr = K_DESC.block_type.shape[2]
    kb, dq_bh = _scheduled(gl.program_id(0), gl.num_programs(0), KV_LEN, 2 * HALF, ORDER, HEAVY)
    off_bh = BH_OFFSET + dq_bh
    off_b = off_bh // HKV
    off_hk = off_bh % HKV
    q_smem = gl.allocate_shared_memory(dtype, [STAGES] + Q_DESC.block_type.shape, Q_DESC.layout)
    do_smem = gl.allocate_shared_memory(dtype, [STAGES] + DO_DESC.block_type.shape, DO_DESC.layout)
    k_smem = gl.allocate_shared_memory(dtype, [2] + K_DESC.block_type.shape, K_DESC.layout)
    v_smem = gl.allocate_shared_memory(dtype, [2] + V_DESC.block_type.shape, V_DESC.layout)
    s_shared: gl.constexpr = gl.NVMMASharedLayout.get_default_for([BLOCK_M, HALF], dtype)
    p_smem = gl.allocate_shared_memory(dtype, [2, BLOCK_M, HALF], s_shared)  # [consumer]
    ds_smem = gl.allocate_shared_memory(dtype, [4, BLOCK_M, HALF], s_shared)  # [tile parity * 2 + consumer]
    dq_smem = gl.allocate_shared_memory(gl.float32, [2] + DQ_DESC.block_type.shape, DQ_DESC.layout)  # [consumer]
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
    consumer = (q_smem, do_smem, k_smem, v_smem, p_smem, ds_smem, dq_smem, kv_bar, q_ready, q_empty, do_ready,
                do_empty, ds_ready, DQ_DESC, DK, DV, LSE, DELTA, PARAMS, FULL_OFFSETS, FULL_INDICES, PART_OFFSETS,
                PART_INDICES, PART_TAGS, kb, dq_bh, off_b, off_hk, stride_dkb, stride_dkh, stride_dkn, stride_dkd,
                stride_dvb, stride_dvh, stride_dvn, stride_dvd, H, GROUP, Q_LEN, KV_LEN, Q_OFFSET, qk_scale,
                sm_scale)
    gl.warp_specialize([
        (_consumer0, (gl.constexpr(_bwd_consumer), consumer, MASK, RANDOM_SLOTS, EVEN_N, TAGGED, STAGES)),
        (_consumer1, (gl.constexpr(_bwd_consumer), consumer, MASK, RANDOM_SLOTS, EVEN_N, TAGGED, STAGES)),
        (_bwd_producer, (Q_DESC, DO_DESC, K_DESC, V_DESC, q_smem, do_smem, k_smem, v_smem, kv_bar, q_ready, q_empty,
                         do_ready, do_empty, FULL_OFFSETS, FULL_INDICES, PART_OFFSETS, PART_INDICES, kb, off_b,
                         off_hk, GROUP, STAGES)),
    ], [4, 1], [BWD_CONSUMER_REGISTERS, PRODUCER_REGISTERS])
