# The pattern-independent part of every generated kernel module.
#
# patternc.codegen writes a module made of a header comment and this text, with the
# pattern's `pattern_mask` function (generated from the pattern tree) in place of the
# marker line below. Importing this file alone works but its kernels cannot run.
#
# Conventions (FlashAttention-2, as in Triton's fused-attention tutorial):
#   Q [B, H, Lq, D], K and V [B, HKV, Lk, D], any strides; H = HKV * GROUP (GQA).
#   Query row i sits at absolute position p = i + (Lk - Lq) (bottom-right alignment).
#   Scores are kept in log2 units: s = q.k * scale * log2(e), so softmax uses exp2.
#   LSE [B, H, Lq] float32 is the natural-log log-sum-exp (as SDPA and FlashAttention
#   return it); -inf for rows that attend nothing, whose output is 0.
#   Tiles are BLOCK_M query rows x BLOCK_N key columns and match the layout's blocks.
#   Each program walks its CSR list of full tiles (IS_FULL: no mask math), then its
#   partial tiles (the pattern's predicate, `pattern_mask`).
#   Pointers: a tile's first row is added to the base pointer in 64 bits, then offsets
#   inside the tile (< BLOCK x stride) stay 32-bit: long or strided tensors stay addressable.
#   The dK/dV inner loop instead uses 32-bit row offsets unless WIDE_ROWS says they may
#   pass 2**31 (the 64-bit base there cost 13% of the backward pass).

import triton
import triton.language as tl

LN2 = tl.constexpr(0.6931471805599453)
LOG2E = tl.constexpr(1.4426950408889634)

# @@pattern_mask@@


@triton.jit
def _program(LEN, BLOCK: tl.constexpr):
    """(block, batch x head) of this program. The grid is 1-D with blocks varying fastest, so
    neighbouring programs share one head's K and V in L2, and B x H is not bound by the
    65535 limit of a second grid axis."""
    num_blocks = tl.cdiv(LEN, BLOCK)
    pid = tl.program_id(0)
    return pid % num_blocks, pid // num_blocks


@triton.jit
def _tile_keep(offs_m, offs_n, Q_LEN, KV_LEN, PARAMS, IS_FULL: tl.constexpr,
               BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, RANDOM_SLOTS: tl.constexpr):
    """Which pairs of a tile take part: the pattern on partial tiles, key bounds on ragged ones."""
    in_bounds = offs_n[None, :] < KV_LEN
    if IS_FULL:
        keep = in_bounds
    else:
        keep = pattern_mask(offs_m, offs_n, Q_LEN, KV_LEN, PARAMS, BLOCK_M, BLOCK_N, RANDOM_SLOTS) & in_bounds  # noqa: F821
    return keep


@triton.jit
def _fwd_tile(acc, l_i, m_i, q, K_blk, V_blk, start_n, offs_m, offs_d, stride_kn, stride_kd, stride_vn, stride_vd,
              Q_LEN, KV_LEN, PARAMS, qk_scale,
              IS_FULL: tl.constexpr, EVEN_N: tl.constexpr, HEAD_DIM: tl.constexpr,
              BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, RANDOM_SLOTS: tl.constexpr, DOT_PRECISION: tl.constexpr):
    """One key tile of the online softmax: update the running max m, sum l and output acc."""
    rn = tl.arange(0, BLOCK_N)
    offs_n = start_n + rn
    kv_ok = offs_n < KV_LEN
    d_ok = offs_d < HEAD_DIM
    K_tile = K_blk + start_n.to(tl.int64) * stride_kn
    V_tile = V_blk + start_n.to(tl.int64) * stride_vn
    k_t = tl.load(K_tile + rn[None, :] * stride_kn + offs_d[:, None] * stride_kd,
                  mask=kv_ok[None, :] & d_ok[:, None], other=0.0)
    qk = tl.dot(q, k_t, input_precision=DOT_PRECISION) * qk_scale
    if not (IS_FULL and EVEN_N):  # full tiles of an even length skip every mask
        keep = _tile_keep(offs_m, offs_n, Q_LEN, KV_LEN, PARAMS, IS_FULL, BLOCK_M, BLOCK_N, RANDOM_SLOTS)
        qk = tl.where(keep, qk, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(qk, 1))
    m_use = tl.where(m_new == float("-inf"), 0.0, m_new)  # rows with nothing yet: avoid -inf - -inf
    p = tl.math.exp2(qk - m_use[:, None])
    alpha = tl.math.exp2(m_i - m_use)
    l_i = l_i * alpha + tl.sum(p, 1)
    v = tl.load(V_tile + rn[:, None] * stride_vn + offs_d[None, :] * stride_vd,
                mask=kv_ok[:, None] & d_ok[None, :], other=0.0)
    acc = tl.dot(p.to(v.dtype), v, acc * alpha[:, None], input_precision=DOT_PRECISION)
    return acc, l_i, m_new


@triton.jit
def attn_fwd(Q, K, V, O, LSE, PARAMS,
             FULL_OFFSETS, FULL_INDICES, PART_OFFSETS, PART_INDICES,
             stride_qb, stride_qh, stride_qm, stride_qd,
             stride_kb, stride_kh, stride_kn, stride_kd,
             stride_vb, stride_vh, stride_vn, stride_vd,
             stride_ob, stride_oh, stride_om, stride_od,
             H, GROUP, Q_LEN, KV_LEN, qk_scale,
             HEAD_DIM: tl.constexpr, D_PAD: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, RANDOM_SLOTS: tl.constexpr,
             EVEN_N: tl.constexpr, DOT_PRECISION: tl.constexpr):
    """Forward: one program per (query block, batch x head) computes O and LSE for its rows."""
    start_m, off_bh = _program(Q_LEN, BLOCK_M)
    off_b = (off_bh // H).to(tl.int64)
    off_h = (off_bh % H).to(tl.int64)
    off_hk = off_h // GROUP
    row0 = (start_m * BLOCK_M).to(tl.int64)
    Q_blk = Q + off_b * stride_qb + off_h * stride_qh + row0 * stride_qm
    K_blk = K + off_b * stride_kb + off_hk * stride_kh
    V_blk = V + off_b * stride_vb + off_hk * stride_vh
    rm = tl.arange(0, BLOCK_M)
    offs_m = start_m * BLOCK_M + rm
    offs_d = tl.arange(0, D_PAD)
    row_ok = offs_m < Q_LEN
    d_ok = offs_d < HEAD_DIM
    q = tl.load(Q_blk + rm[:, None] * stride_qm + offs_d[None, :] * stride_qd,
                mask=row_ok[:, None] & d_ok[None, :], other=0.0)
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, D_PAD], dtype=tl.float32)
    # Full tiles: every pair attends, no mask math.
    for t in range(tl.load(FULL_OFFSETS + start_m), tl.load(FULL_OFFSETS + start_m + 1)):
        start_n = tl.load(FULL_INDICES + t) * BLOCK_N
        acc, l_i, m_i = _fwd_tile(acc, l_i, m_i, q, K_blk, V_blk, start_n, offs_m, offs_d,
                                  stride_kn, stride_kd, stride_vn, stride_vd, Q_LEN, KV_LEN, PARAMS, qk_scale,
                                  True, EVEN_N, HEAD_DIM, BLOCK_M, BLOCK_N, RANDOM_SLOTS, DOT_PRECISION)
    # Partial tiles: the pattern's predicate decides pair by pair.
    for t in range(tl.load(PART_OFFSETS + start_m), tl.load(PART_OFFSETS + start_m + 1)):
        start_n = tl.load(PART_INDICES + t) * BLOCK_N
        acc, l_i, m_i = _fwd_tile(acc, l_i, m_i, q, K_blk, V_blk, start_n, offs_m, offs_d,
                                  stride_kn, stride_kd, stride_vn, stride_vd, Q_LEN, KV_LEN, PARAMS, qk_scale,
                                  False, EVEN_N, HEAD_DIM, BLOCK_M, BLOCK_N, RANDOM_SLOTS, DOT_PRECISION)
    # Rows that attended nothing: O = 0 and LSE = -inf.
    empty = l_i == 0.0
    l_use = tl.where(empty, 1.0, l_i)
    o = acc / l_use[:, None]
    lse = tl.where(empty, float("-inf"), (m_i + tl.math.log2(l_use)) * LN2)
    O_blk = O + off_b * stride_ob + off_h * stride_oh + row0 * stride_om
    tl.store(O_blk + rm[:, None] * stride_om + offs_d[None, :] * stride_od, o.to(O.dtype.element_ty),
             mask=row_ok[:, None] & d_ok[None, :])
    tl.store(LSE + off_bh.to(tl.int64) * Q_LEN + offs_m, lse, mask=row_ok)


@triton.jit
def attn_bwd_preprocess(O, DO, DLSE, DELTA,
                        stride_ob, stride_oh, stride_om, stride_od,
                        stride_dob, stride_doh, stride_dom, stride_dod,
                        H, Q_LEN,
                        HEAD_DIM: tl.constexpr, D_PAD: tl.constexpr, BLOCK_M: tl.constexpr, HAS_DLSE: tl.constexpr):
    """delta = rowsum(dO * O) - dLSE: the softmax-gradient correction of each query row."""
    start_m, off_bh = _program(Q_LEN, BLOCK_M)
    off_b = (off_bh // H).to(tl.int64)
    off_h = (off_bh % H).to(tl.int64)
    row0 = (start_m * BLOCK_M).to(tl.int64)
    rm = tl.arange(0, BLOCK_M)
    offs_m = start_m * BLOCK_M + rm
    offs_d = tl.arange(0, D_PAD)
    ok = (offs_m < Q_LEN)[:, None] & (offs_d < HEAD_DIM)[None, :]
    O_blk = O + off_b * stride_ob + off_h * stride_oh + row0 * stride_om
    DO_blk = DO + off_b * stride_dob + off_h * stride_doh + row0 * stride_dom
    o = tl.load(O_blk + rm[:, None] * stride_om + offs_d[None, :] * stride_od, mask=ok, other=0.0)
    do = tl.load(DO_blk + rm[:, None] * stride_dom + offs_d[None, :] * stride_dod, mask=ok, other=0.0)
    delta = tl.sum(o.to(tl.float32) * do.to(tl.float32), 1)
    row = off_bh.to(tl.int64) * Q_LEN + offs_m
    if HAS_DLSE:  # d lse / d score = softmax, so a gradient on LSE shifts delta
        delta -= tl.load(DLSE + row, mask=offs_m < Q_LEN, other=0.0)
    tl.store(DELTA + row, delta, mask=offs_m < Q_LEN)


@triton.jit
def _bwd_tile_probs(q, k_t, lse, offs_m, offs_n, Q_LEN, KV_LEN, PARAMS, qk_scale,
                    IS_FULL: tl.constexpr, EVEN_N: tl.constexpr,
                    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, RANDOM_SLOTS: tl.constexpr, DOT_PRECISION: tl.constexpr):
    """Recompute the tile's probabilities P = exp2(s - LSE), zero where pairs do not attend."""
    qk = tl.dot(q, k_t, input_precision=DOT_PRECISION) * qk_scale
    p = tl.math.exp2(qk - lse[:, None])
    if not (IS_FULL and EVEN_N):
        keep = _tile_keep(offs_m, offs_n, Q_LEN, KV_LEN, PARAMS, IS_FULL, BLOCK_M, BLOCK_N, RANDOM_SLOTS)
        p = tl.where(keep, p, 0.0)
    return p


@triton.jit
def _load_row_stats(LSE, DELTA, row_base, offs_m, Q_LEN):
    """LSE in log2 units (+inf where a row attends nothing or lies past Q_LEN, so its P is 0)
    and delta."""
    row_ok = offs_m < Q_LEN
    lse = tl.load(LSE + row_base + offs_m, mask=row_ok, other=float("inf"))
    lse = tl.where(lse == float("-inf"), float("inf"), lse * LOG2E)
    delta = tl.load(DELTA + row_base + offs_m, mask=row_ok, other=0.0)
    return lse, delta


@triton.jit
def _dkdv_tile(dk, dv, k_t, v_t, Q_blk, DO_blk, LSE, DELTA, row_base, start_m, offs_n, offs_d,
               stride_qm, stride_qd, stride_dom, stride_dod, Q_LEN, KV_LEN, PARAMS, qk_scale,
               IS_FULL: tl.constexpr, EVEN_N: tl.constexpr, HEAD_DIM: tl.constexpr,
               BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, RANDOM_SLOTS: tl.constexpr, DOT_PRECISION: tl.constexpr,
               WIDE_ROWS: tl.constexpr):
    """One query tile's contribution to dK and dV of this key block."""
    offs_m = start_m + tl.arange(0, BLOCK_M)
    ok = (offs_m < Q_LEN)[:, None] & (offs_d < HEAD_DIM)[None, :]
    # Row offsets in 32 bits unless they can pass 2**31 (WIDE_ROWS): in this inner loop a
    # 64-bit tile base measured 13% slower backward (NOTES.md, v3).
    rows = offs_m.to(tl.int64) if WIDE_ROWS else offs_m
    q = tl.load(Q_blk + rows[:, None] * stride_qm + offs_d[None, :] * stride_qd, mask=ok, other=0.0)
    do = tl.load(DO_blk + rows[:, None] * stride_dom + offs_d[None, :] * stride_dod, mask=ok, other=0.0)
    lse, delta = _load_row_stats(LSE, DELTA, row_base, offs_m, Q_LEN)
    p = _bwd_tile_probs(q, k_t, lse, offs_m, offs_n, Q_LEN, KV_LEN, PARAMS, qk_scale,
                        IS_FULL, EVEN_N, BLOCK_M, BLOCK_N, RANDOM_SLOTS, DOT_PRECISION)
    dv = tl.dot(tl.trans(p.to(do.dtype)), do, dv, input_precision=DOT_PRECISION)
    dp = tl.dot(do, v_t, input_precision=DOT_PRECISION)
    ds = p * (dp - delta[:, None])
    dk = tl.dot(tl.trans(ds.to(q.dtype)), q, dk, input_precision=DOT_PRECISION)
    return dk, dv


@triton.jit
def attn_bwd_dkdv(Q, K, V, DO, DK, DV, LSE, DELTA, PARAMS,
                  FULL_OFFSETS, FULL_INDICES, PART_OFFSETS, PART_INDICES,
                  stride_qb, stride_qh, stride_qm, stride_qd,
                  stride_kb, stride_kh, stride_kn, stride_kd,
                  stride_vb, stride_vh, stride_vn, stride_vd,
                  stride_dob, stride_doh, stride_dom, stride_dod,
                  stride_dkb, stride_dkh, stride_dkn, stride_dkd,
                  stride_dvb, stride_dvh, stride_dvn, stride_dvd,
                  HKV, GROUP, Q_LEN, KV_LEN, qk_scale, sm_scale,
                  HEAD_DIM: tl.constexpr, D_PAD: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, RANDOM_SLOTS: tl.constexpr,
                  EVEN_N: tl.constexpr, DOT_PRECISION: tl.constexpr, WIDE_ROWS: tl.constexpr):
    """dK, dV: one program per (key block, batch x kv head) walks the transposed layout
    (the query blocks that attend this key block) for every query head of its GQA group."""
    kb, off_bh = _program(KV_LEN, BLOCK_N)
    start_n = kb * BLOCK_N
    off_b = (off_bh // HKV).to(tl.int64)
    off_hk = (off_bh % HKV).to(tl.int64)
    col0 = start_n.to(tl.int64)
    rn = tl.arange(0, BLOCK_N)
    offs_n = start_n + rn
    offs_d = tl.arange(0, D_PAD)
    ok_t = (offs_n < KV_LEN)[None, :] & (offs_d < HEAD_DIM)[:, None]
    K_blk = K + off_b * stride_kb + off_hk * stride_kh + col0 * stride_kn
    V_blk = V + off_b * stride_vb + off_hk * stride_vh + col0 * stride_vn
    k_t = tl.load(K_blk + rn[None, :] * stride_kn + offs_d[:, None] * stride_kd, mask=ok_t, other=0.0)
    v_t = tl.load(V_blk + rn[None, :] * stride_vn + offs_d[:, None] * stride_vd, mask=ok_t, other=0.0)
    dk = tl.zeros([BLOCK_N, D_PAD], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, D_PAD], dtype=tl.float32)
    for g in range(GROUP):
        off_h = off_hk * GROUP + g
        Q_blk = Q + off_b * stride_qb + off_h * stride_qh
        DO_blk = DO + off_b * stride_dob + off_h * stride_doh
        row_base = (off_b * HKV * GROUP + off_h) * Q_LEN
        for t in range(tl.load(FULL_OFFSETS + kb), tl.load(FULL_OFFSETS + kb + 1)):
            start_m = tl.load(FULL_INDICES + t) * BLOCK_M
            dk, dv = _dkdv_tile(dk, dv, k_t, v_t, Q_blk, DO_blk, LSE, DELTA, row_base, start_m, offs_n, offs_d,
                                stride_qm, stride_qd, stride_dom, stride_dod, Q_LEN, KV_LEN, PARAMS, qk_scale,
                                True, EVEN_N, HEAD_DIM, BLOCK_M, BLOCK_N, RANDOM_SLOTS, DOT_PRECISION, WIDE_ROWS)
        for t in range(tl.load(PART_OFFSETS + kb), tl.load(PART_OFFSETS + kb + 1)):
            start_m = tl.load(PART_INDICES + t) * BLOCK_M
            dk, dv = _dkdv_tile(dk, dv, k_t, v_t, Q_blk, DO_blk, LSE, DELTA, row_base, start_m, offs_n, offs_d,
                                stride_qm, stride_qd, stride_dom, stride_dod, Q_LEN, KV_LEN, PARAMS, qk_scale,
                                False, EVEN_N, HEAD_DIM, BLOCK_M, BLOCK_N, RANDOM_SLOTS, DOT_PRECISION, WIDE_ROWS)
    ok = (offs_n < KV_LEN)[:, None] & (offs_d < HEAD_DIM)[None, :]
    DK_blk = DK + off_b * stride_dkb + off_hk * stride_dkh + col0 * stride_dkn
    DV_blk = DV + off_b * stride_dvb + off_hk * stride_dvh + col0 * stride_dvn
    tl.store(DK_blk + rn[:, None] * stride_dkn + offs_d[None, :] * stride_dkd,
             (dk * sm_scale).to(DK.dtype.element_ty), mask=ok)
    tl.store(DV_blk + rn[:, None] * stride_dvn + offs_d[None, :] * stride_dvd, dv.to(DV.dtype.element_ty), mask=ok)


@triton.jit
def attn_bwd_dq(Q, K, V, DO, DQ, LSE, DELTA, PARAMS,
                FULL_OFFSETS, FULL_INDICES, PART_OFFSETS, PART_INDICES,
                stride_qb, stride_qh, stride_qm, stride_qd,
                stride_kb, stride_kh, stride_kn, stride_kd,
                stride_vb, stride_vh, stride_vn, stride_vd,
                stride_dob, stride_doh, stride_dom, stride_dod,
                stride_dqb, stride_dqh, stride_dqm, stride_dqd,
                H, GROUP, Q_LEN, KV_LEN, qk_scale, sm_scale,
                HEAD_DIM: tl.constexpr, D_PAD: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, RANDOM_SLOTS: tl.constexpr,
                EVEN_N: tl.constexpr, DOT_PRECISION: tl.constexpr):
    """dQ: one program per (query block, batch x head) walks the layout's key blocks."""
    start_m, off_bh = _program(Q_LEN, BLOCK_M)
    off_b = (off_bh // H).to(tl.int64)
    off_h = (off_bh % H).to(tl.int64)
    off_hk = off_h // GROUP
    row0 = (start_m * BLOCK_M).to(tl.int64)
    rm = tl.arange(0, BLOCK_M)
    offs_m = start_m * BLOCK_M + rm
    offs_d = tl.arange(0, D_PAD)
    ok = (offs_m < Q_LEN)[:, None] & (offs_d < HEAD_DIM)[None, :]
    Q_blk = Q + off_b * stride_qb + off_h * stride_qh + row0 * stride_qm
    DO_blk = DO + off_b * stride_dob + off_h * stride_doh + row0 * stride_dom
    q = tl.load(Q_blk + rm[:, None] * stride_qm + offs_d[None, :] * stride_qd, mask=ok, other=0.0)
    do = tl.load(DO_blk + rm[:, None] * stride_dom + offs_d[None, :] * stride_dod, mask=ok, other=0.0)
    lse, delta = _load_row_stats(LSE, DELTA, off_bh.to(tl.int64) * Q_LEN, offs_m, Q_LEN)
    K_blk = K + off_b * stride_kb + off_hk * stride_kh
    V_blk = V + off_b * stride_vb + off_hk * stride_vh
    dq = tl.zeros([BLOCK_M, D_PAD], dtype=tl.float32)
    for t in range(tl.load(FULL_OFFSETS + start_m), tl.load(FULL_OFFSETS + start_m + 1)):
        dq = _dq_tile(dq, q, do, lse, delta, K_blk, V_blk, tl.load(FULL_INDICES + t) * BLOCK_N, offs_m, offs_d,
                      stride_kn, stride_kd, stride_vn, stride_vd, Q_LEN, KV_LEN, PARAMS, qk_scale,
                      True, EVEN_N, HEAD_DIM, BLOCK_M, BLOCK_N, RANDOM_SLOTS, DOT_PRECISION)
    for t in range(tl.load(PART_OFFSETS + start_m), tl.load(PART_OFFSETS + start_m + 1)):
        dq = _dq_tile(dq, q, do, lse, delta, K_blk, V_blk, tl.load(PART_INDICES + t) * BLOCK_N, offs_m, offs_d,
                      stride_kn, stride_kd, stride_vn, stride_vd, Q_LEN, KV_LEN, PARAMS, qk_scale,
                      False, EVEN_N, HEAD_DIM, BLOCK_M, BLOCK_N, RANDOM_SLOTS, DOT_PRECISION)
    DQ_blk = DQ + off_b * stride_dqb + off_h * stride_dqh + row0 * stride_dqm
    tl.store(DQ_blk + rm[:, None] * stride_dqm + offs_d[None, :] * stride_dqd,
             (dq * sm_scale).to(DQ.dtype.element_ty), mask=ok)


@triton.jit
def _dq_tile(dq, q, do, lse, delta, K_blk, V_blk, start_n, offs_m, offs_d,
             stride_kn, stride_kd, stride_vn, stride_vd, Q_LEN, KV_LEN, PARAMS, qk_scale,
             IS_FULL: tl.constexpr, EVEN_N: tl.constexpr, HEAD_DIM: tl.constexpr,
             BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, RANDOM_SLOTS: tl.constexpr, DOT_PRECISION: tl.constexpr):
    """One key tile's contribution to dQ of this query block."""
    rn = tl.arange(0, BLOCK_N)
    offs_n = start_n + rn
    ok_t = (offs_n < KV_LEN)[None, :] & (offs_d < HEAD_DIM)[:, None]
    K_tile = K_blk + start_n.to(tl.int64) * stride_kn
    V_tile = V_blk + start_n.to(tl.int64) * stride_vn
    k_t = tl.load(K_tile + rn[None, :] * stride_kn + offs_d[:, None] * stride_kd, mask=ok_t, other=0.0)
    v_t = tl.load(V_tile + rn[None, :] * stride_vn + offs_d[:, None] * stride_vd, mask=ok_t, other=0.0)
    p = _bwd_tile_probs(q, k_t, lse, offs_m, offs_n, Q_LEN, KV_LEN, PARAMS, qk_scale,
                        IS_FULL, EVEN_N, BLOCK_M, BLOCK_N, RANDOM_SLOTS, DOT_PRECISION)
    dp = tl.dot(do, v_t, input_precision=DOT_PRECISION)
    ds = p * (dp - delta[:, None])
    return tl.dot(ds.to(k_t.dtype), tl.trans(k_t), dq, input_precision=DOT_PRECISION)
