# patternc's fused block-sparse flash attention, forward and backward (FlashAttention-2).
#
# This file is pattern-independent and imported as it is (Triton reads its source). The
# pattern enters as MASK, a constexpr @triton.jit function generated per pattern structure
# by patternc.kernels.emit:
#     MASK(i, j, Q_OFFSET, PARAMS, TAGS, ROWS=, COLS=, RANDOM_SLOTS=) -> bool [ROWS, COLS]:
#         query row i attends key j, for row and column indices broadcast to the tile
#         (queries x keys in the forward and dQ kernels, keys x queries in the dK/dV kernel)
# so each structure compiles its own specialization of these kernels, and the preprocess and
# merge kernels (no MASK) compile once for all patterns.
#
# Conventions:
#   Q [B, H, Lq, D], K and V [B, HKV, Lk, D], any strides; H = HKV * GROUP (GQA: query head h
#   reads kv head h // GROUP). Query row i sits at position p = i + Q_OFFSET.
#   Scores are kept in log2 units: s = q.k * scale * log2(e), so softmax uses exp2.
#   LSE [B, H, Lq] float32 is the natural-log log-sum-exp (as SDPA and FlashAttention return
#   it); -inf for rows that attend nothing, whose output is 0.
#   The layout lists, per query block (per key block for dK/dV), its full tiles and its
#   partial tiles (CSR: OFFSETS, INDICES), and per partial tile a TAGS word: which top-level
#   terms of the pattern are partial there (MASK evaluates only those). Full tiles do no
#   mask math at all when EVEN_N (Lk % BLOCK_N == 0).
#   Grids are 1-D with blocks varying fastest (neighbouring programs share one head's K/V in
#   L2; B x H is not bound by the 65535 limit of a second grid axis), in the order of the
#   plan's schedule (ORDER, HEAVY): blocks with many times the mean number of tiles first.
#   The warp-specialized forward on Hopper (long rows) is hopper.py's, in Gluon.
#   Pointers: a tile's first row is added in 64 bits, offsets inside it stay 32-bit (WIDE),
#   except in the dK/dV inner loop, where that 64-bit add cost 13% of the backward pass:
#   there rows are 32-bit unless WIDE_ROWS says offsets may pass 2**31.

import triton
import triton.language as tl

LN2 = tl.constexpr(0.6931471805599453)
LOG2E = tl.constexpr(1.4426950408889634)
# Triton compiles a variant per integer argument equal to 1 or divisible by 16. The query
# offset and the count of heavy blocks change with the call's lengths and gain nothing from
# it (P4 at 16K after 4K compiled its backward again: HEAVY 0 -> 1), so they are plain int32
# arguments. Q_LEN and KV_LEN stay specialized: Q_LEN % 16 == 0 aligns the LSE and delta
# rows of each head (vector loads); unspecialized lengths made forward+backward 3-9% slower
# (results/2026-11-26-ab-nospec-h200.md). A length of a seen structure compiles at most a
# variant per class (divisible by 16 or not; Lk % BLOCK_N == 0 or not, EVEN_N).
LENGTHS = ["Q_OFFSET", "HEAVY", "WORK"]


# ---------------------------------------------------------------------------- helpers
@triton.jit
def _program(w, LEN, BLOCK: tl.constexpr):
    """(block, rest) of work item w of a 1-D grid over blocks x rests, blocks varying fastest."""
    num_blocks = tl.cdiv(LEN, BLOCK)
    return w % num_blocks, w // num_blocks


@triton.jit
def _scheduled(w, WORK, LEN, BLOCK: tl.constexpr, ORDER, HEAVY):
    """(block, rest) of work item w of WORK = blocks x rests (rest: batch x head, and more): first
    the HEAVY blocks ORDER[:HEAVY] for every rest, then for each rest its other blocks
    ORDER[HEAVY:], varying fastest (see patternc.plan.Schedule). A program takes item w = its
    id, or (hopper.py's persistent forward) every item its id + k x programs."""
    num_blocks = tl.cdiv(LEN, BLOCK)
    rests = WORK // num_blocks
    if HEAVY == 0:  # ORDER is the identity: no load before the program's first tile
        block, rest = _program(w, LEN, BLOCK)
    else:
        if w < HEAVY * rests:
            rank = w // rests
            rest = w % rests
        else:
            light = num_blocks - HEAVY
            rank = HEAVY + (w - HEAVY * rests) % light
            rest = (w - HEAVY * rests) // light
        block = tl.load(ORDER + rank)
    return block, rest


@triton.jit
def _share(block, split, SPLITS, FULL_OFFSETS, PART_OFFSETS):
    """Block ``block``'s lists (its full tiles from full_lo, n_full of them; its partial ones from
    part_lo) and the share [lo, hi) of split ``split`` of SPLITS in the two laid end to end."""
    full_lo = tl.load(FULL_OFFSETS + block)
    n_full = tl.load(FULL_OFFSETS + block + 1) - full_lo
    part_lo = tl.load(PART_OFFSETS + block)
    tiles = n_full + tl.load(PART_OFFSETS + block + 1) - part_lo
    return full_lo, n_full, part_lo, split * tiles // SPLITS, (split + 1) * tiles // SPLITS


@triton.jit
def _head(X, off_b, off_h, stride_b, stride_h):
    """Base pointer of one (batch, head) matrix, offsets in 64 bits."""
    return X + off_b.to(tl.int64) * stride_b + off_h.to(tl.int64) * stride_h


@triton.jit
def _tile(X, start, LEN, stride_m, stride_d, HEAD_DIM: tl.constexpr, D_PAD: tl.constexpr,
          BLOCK: tl.constexpr, WIDE: tl.constexpr, TRANS: tl.constexpr):
    """Rows [start, start + BLOCK) of the [LEN, HEAD_DIM] matrix at X, zero past either edge;
    [D_PAD, BLOCK] when TRANS. WIDE: the first row's offset is computed in 64 bits."""
    r = tl.arange(0, BLOCK)
    d = tl.arange(0, D_PAD)
    if WIDE:
        X = X + start.to(tl.int64) * stride_m
        rows = r
    else:
        rows = start + r
    row_ok = (start + r) < LEN
    d_ok = d < HEAD_DIM
    if TRANS:
        ptrs = X + rows[None, :] * stride_m + d[:, None] * stride_d
        ok = row_ok[None, :] & d_ok[:, None]
    else:
        ptrs = X + rows[:, None] * stride_m + d[None, :] * stride_d
        ok = row_ok[:, None] & d_ok[None, :]
    return tl.load(ptrs, mask=ok, other=0.0)  # one return: Triton wants one return type


@triton.jit
def _rows(X, DESC, off_b, off_h, start, LEN, stride_m, stride_d, HEAD_DIM: tl.constexpr, D_PAD: tl.constexpr,
          BLOCK: tl.constexpr, WIDE: tl.constexpr, TRANS: tl.constexpr):
    """Rows [start, start + BLOCK) of the head (off_b, off_h) whose matrix is at X, as `_tile` loads
    them, or through the tensor memory accelerator when DESC (a [B, H, LEN, HEAD_DIM] descriptor of
    block [1, 1, BLOCK, D_PAD]) is given: one copy instruction per tile, zeros past the edges,
    no pointer arithmetic (the registers it frees are what the dK/dV kernel was spilling)."""
    if DESC is None:
        x = _tile(X, start, LEN, stride_m, stride_d, HEAD_DIM=HEAD_DIM, D_PAD=D_PAD, BLOCK=BLOCK, WIDE=WIDE, TRANS=TRANS)
    else:
        x = DESC.load([off_b, off_h, start, 0]).reshape(BLOCK, D_PAD)
        if TRANS:
            x = tl.trans(x)
    return x


@triton.jit
def _gather_rows(X, off_b, heads, offs_m, LEN, stride_b, stride_h, stride_m, stride_d,
                 HEAD_DIM: tl.constexpr, D_PAD: tl.constexpr):
    """Row i = offs_m[r] of head heads[r] of batch off_b, for each tile row r; zero past LEN."""
    d = tl.arange(0, D_PAD)
    rows = off_b.to(tl.int64) * stride_b + heads.to(tl.int64) * stride_h + offs_m.to(tl.int64) * stride_m
    ok = (offs_m < LEN)[:, None] & (d < HEAD_DIM)[None, :]
    return tl.load(X + rows[:, None] + d[None, :] * stride_d, mask=ok, other=0.0)


@triton.jit
def _store_tile(X, start, LEN, stride_m, stride_d, value, HEAD_DIM: tl.constexpr, D_PAD: tl.constexpr,
                BLOCK: tl.constexpr):
    """Store rows [start, start + BLOCK) of the [LEN, HEAD_DIM] matrix at X (those that exist)."""
    r = tl.arange(0, BLOCK)
    d = tl.arange(0, D_PAD)
    ptrs = X + start.to(tl.int64) * stride_m + r[:, None] * stride_m + d[None, :] * stride_d
    tl.store(ptrs, value.to(X.dtype.element_ty), mask=((start + r) < LEN)[:, None] & (d < HEAD_DIM)[None, :])


@triton.jit
def _keep(offs_m, offs_n, KV_LEN, Q_OFFSET, PARAMS, tags, MASK: tl.constexpr, IS_FULL: tl.constexpr,
          BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, RANDOM_SLOTS: tl.constexpr, KEYS_FIRST: tl.constexpr):
    """Which pairs of a tile take part: the pattern on partial tiles, key bounds on ragged ones.
    [BLOCK_M, BLOCK_N] (queries x keys), or [BLOCK_N, BLOCK_M] when KEYS_FIRST."""
    if KEYS_FIRST:
        i = offs_m[None, :]
        j = offs_n[:, None]
        keep = j < KV_LEN
        if not IS_FULL:
            keep = keep & MASK(i, j, Q_OFFSET, PARAMS, tags, ROWS=BLOCK_N, COLS=BLOCK_M, RANDOM_SLOTS=RANDOM_SLOTS)
    else:
        i = offs_m[:, None]
        j = offs_n[None, :]
        keep = j < KV_LEN
        if not IS_FULL:
            keep = keep & MASK(i, j, Q_OFFSET, PARAMS, tags, ROWS=BLOCK_M, COLS=BLOCK_N, RANDOM_SLOTS=RANDOM_SLOTS)
    return keep


@triton.jit
def _row_stats(LSE, DELTA, offs_m, Q_LEN):
    """LSE in log2 units (+inf where a row attends nothing or lies past Q_LEN, so its P is 0)
    and delta; LSE and DELTA point at this (batch, head)'s rows."""
    row_ok = offs_m < Q_LEN
    lse = tl.load(LSE + offs_m, mask=row_ok, other=float("inf"))
    lse = tl.where(lse == float("-inf"), float("inf"), lse * LOG2E)
    delta = tl.load(DELTA + offs_m, mask=row_ok, other=0.0)
    return lse, delta


# ---------------------------------------------------------------------------- forward
@triton.jit
def _fwd_tiles(acc, l_i, m_i, q, K, V, K_DESC, V_DESC, off_b, off_hk, INDICES, TAGS, lo, hi, offs_m,
               stride_kn, stride_kd, stride_vn, stride_vd, KV_LEN, Q_OFFSET, PARAMS, qk_scale,
               MASK: tl.constexpr, IS_FULL: tl.constexpr, EVEN_N: tl.constexpr, HEAD_DIM: tl.constexpr,
               D_PAD: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, RANDOM_SLOTS: tl.constexpr,
               DOT_PRECISION: tl.constexpr):
    """Online softmax over the key tiles INDICES[lo:hi]: update running max m, sum l, output acc."""
    for t in range(lo, hi):
        start_n = tl.load(INDICES + t) * BLOCK_N
        k_t = _rows(K, K_DESC, off_b, off_hk, start_n, KV_LEN, stride_kn, stride_kd,
                    HEAD_DIM=HEAD_DIM, D_PAD=D_PAD, BLOCK=BLOCK_N, WIDE=True, TRANS=True)
        qk = tl.dot(q, k_t, input_precision=DOT_PRECISION)  # unscaled: the scale folds into one FMA below
        if not (IS_FULL and EVEN_N):  # full tiles of an even length skip every mask
            tags = 0 if IS_FULL else tl.load(TAGS + t)
            keep = _keep(offs_m, start_n + tl.arange(0, BLOCK_N), KV_LEN, Q_OFFSET, PARAMS, tags, MASK=MASK,
                         IS_FULL=IS_FULL, BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N, RANDOM_SLOTS=RANDOM_SLOTS,
                         KEYS_FIRST=False)
            qk = tl.where(keep, qk, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(qk, 1) * qk_scale)
        m_use = tl.where(m_new == float("-inf"), 0.0, m_new)  # rows with nothing yet: avoid -inf - -inf
        p = tl.math.exp2(qk * qk_scale - m_use[:, None])
        alpha = tl.math.exp2(m_i - m_use)
        l_i = l_i * alpha + tl.sum(p, 1)
        v = _rows(V, V_DESC, off_b, off_hk, start_n, KV_LEN, stride_vn, stride_vd,
                  HEAD_DIM=HEAD_DIM, D_PAD=D_PAD, BLOCK=BLOCK_N, WIDE=True, TRANS=False)
        acc = tl.dot(p.to(v.dtype), v, acc * alpha[:, None], input_precision=DOT_PRECISION)
        m_i = m_new
    return acc, l_i, m_i


@triton.jit(do_not_specialize=LENGTHS)
def attn_fwd(Q, K, V, O, LSE, K_DESC, V_DESC, PARAMS, FULL_OFFSETS, FULL_INDICES, PART_OFFSETS, PART_INDICES, PART_TAGS,
             ORDER, HEAVY,
             stride_qb, stride_qh, stride_qm, stride_qd, stride_kb, stride_kh, stride_kn, stride_kd,
             stride_vb, stride_vh, stride_vn, stride_vd, stride_ob, stride_oh, stride_om, stride_od,
             H, GROUP, Q_LEN, KV_LEN, Q_OFFSET, WORK, qk_scale, SPLITS, stride_os, stride_ls,
             MASK: tl.constexpr, HEAD_DIM: tl.constexpr, D_PAD: tl.constexpr, BLOCK_M: tl.constexpr,
             BLOCK_N: tl.constexpr, RANDOM_SLOTS: tl.constexpr, EVEN_N: tl.constexpr, DOT_PRECISION: tl.constexpr,
             PACK: tl.constexpr):
    """Forward: WORK = (query blocks x batch x heads) items, one per program, each computing O and
    LSE of one query block's rows.
    PACK = GROUP (GQA): an item takes the query block of every head of one kv head's group,
    its tile's rows interleaved (row r: head r % PACK, query r // PACK of a block of
    BLOCK_M // PACK queries), so each K/V tile is read once for the group.
    With SPLITS > 1 (decoding: few query blocks, long rows), SPLITS items share a row's key
    tiles, each writing its part's normalized O and LSE at O + split * stride_os and
    LSE + split * stride_ls, merged afterwards through the log-sum-exp (patternc.ops.launch)."""
    tl.static_assert(BLOCK_M % 16 == 0 and BLOCK_N % 16 == 0 and D_PAD >= HEAD_DIM and BLOCK_M % PACK == 0)
    qb, rest = _scheduled(tl.program_id(0), WORK, Q_LEN, BLOCK_M // PACK, ORDER, HEAVY)
    split = rest % SPLITS
    off_bh = rest // SPLITS  # (batch, head), or (batch, kv head) when packed
    off_b = off_bh // (H // PACK)
    if PACK == 1:
        off_h = off_bh % H
        off_hk = off_h // GROUP
        start_m = qb * BLOCK_M
        offs_m = start_m + tl.arange(0, BLOCK_M)
        q = _tile(_head(Q, off_b, off_h, stride_qb, stride_qh), start_m, Q_LEN, stride_qm, stride_qd,
                  HEAD_DIM=HEAD_DIM, D_PAD=D_PAD, BLOCK=BLOCK_M, WIDE=True, TRANS=False)
    else:
        off_hk = off_bh % (H // PACK)
        r = tl.arange(0, BLOCK_M)
        heads = off_hk * PACK + r % PACK  # each row's query head
        offs_m = qb * (BLOCK_M // PACK) + r // PACK
        q = _gather_rows(Q, off_b, heads, offs_m, Q_LEN, stride_qb, stride_qh, stride_qm, stride_qd,
                         HEAD_DIM=HEAD_DIM, D_PAD=D_PAD)
    K = _head(K, off_b, off_hk, stride_kb, stride_kh)
    V = _head(V, off_b, off_hk, stride_vb, stride_vh)
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, D_PAD], dtype=tl.float32)
    # Full tiles (no mask math), then partial tiles (the pattern decides pair by pair); this
    # split's share of the row is the slice [lo, hi) of the two lists laid end to end.
    full_lo, n_full, part_lo, lo, hi = _share(qb, split, SPLITS, FULL_OFFSETS, PART_OFFSETS)
    acc, l_i, m_i = _fwd_tiles(acc, l_i, m_i, q, K, V, K_DESC, V_DESC, off_b, off_hk, FULL_INDICES, PART_TAGS,
                               full_lo + tl.minimum(lo, n_full), full_lo + tl.minimum(hi, n_full), offs_m,
                               stride_kn, stride_kd, stride_vn, stride_vd, KV_LEN, Q_OFFSET, PARAMS, qk_scale,
                               MASK=MASK, IS_FULL=True, EVEN_N=EVEN_N, HEAD_DIM=HEAD_DIM, D_PAD=D_PAD,
                               BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N, RANDOM_SLOTS=RANDOM_SLOTS,
                               DOT_PRECISION=DOT_PRECISION)
    acc, l_i, m_i = _fwd_tiles(acc, l_i, m_i, q, K, V, K_DESC, V_DESC, off_b, off_hk, PART_INDICES, PART_TAGS,
                               part_lo + tl.maximum(lo - n_full, 0), part_lo + tl.maximum(hi - n_full, 0),
                               offs_m, stride_kn, stride_kd, stride_vn, stride_vd, KV_LEN, Q_OFFSET, PARAMS,
                               qk_scale, MASK=MASK, IS_FULL=False, EVEN_N=EVEN_N, HEAD_DIM=HEAD_DIM, D_PAD=D_PAD,
                               BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N, RANDOM_SLOTS=RANDOM_SLOTS,
                               DOT_PRECISION=DOT_PRECISION)
    # Rows that attended nothing: O = 0 and LSE = -inf.
    empty = l_i == 0.0
    l_use = tl.where(empty, 1.0, l_i)
    O = O + split.to(tl.int64) * stride_os
    LSE = LSE + split.to(tl.int64) * stride_ls
    lse = tl.where(empty, float("-inf"), (m_i + tl.math.log2(l_use)) * LN2)
    if PACK == 1:
        _store_tile(_head(O, off_b, off_h, stride_ob, stride_oh), start_m, Q_LEN, stride_om, stride_od,
                    acc / l_use[:, None], HEAD_DIM=HEAD_DIM, D_PAD=D_PAD, BLOCK=BLOCK_M)
        tl.store(LSE + off_bh.to(tl.int64) * Q_LEN + offs_m, lse, mask=offs_m < Q_LEN)
    else:
        d = tl.arange(0, D_PAD)
        rows = off_b.to(tl.int64) * stride_ob + heads.to(tl.int64) * stride_oh + offs_m.to(tl.int64) * stride_om
        tl.store(O + rows[:, None] + d[None, :] * stride_od, (acc / l_use[:, None]).to(O.dtype.element_ty),
                 mask=(offs_m < Q_LEN)[:, None] & (d < HEAD_DIM)[None, :])
        tl.store(LSE + (off_b * H + heads).to(tl.int64) * Q_LEN + offs_m, lse, mask=offs_m < Q_LEN)


@triton.jit
def attn_merge(PARTS, PART_LSE, O, LSE, ROWS, SPLITS, HEAD_DIM: tl.constexpr, D_PAD: tl.constexpr,
               MAX_SPLITS: tl.constexpr):
    """Split rows (attn_fwd with SPLITS > 1): one program per row merges its SPLITS parts, the
    normalized O_s [SPLITS, ROWS, HEAD_DIM] (float32) and natural-log lse_s [SPLITS, ROWS] of a
    share of its key tiles each: lse = log sum_s exp(lse_s), O = sum_s exp(lse_s - lse) O_s.
    All parts are loaded at once ([MAX_SPLITS, D_PAD], MAX_SPLITS a power of two >= SPLITS):
    one memory latency per row, where a loop over the splits waits for each load in turn.
    O [ROWS, HEAD_DIM] and LSE [ROWS] are contiguous; rows whose parts attended nothing get 0
    and -inf."""
    row = tl.program_id(0).to(tl.int64)
    s = tl.arange(0, MAX_SPLITS)
    d = tl.arange(0, D_PAD)
    s_ok = s < SPLITS
    part = s.to(tl.int64) * ROWS + row
    lse_s = tl.load(PART_LSE + part, mask=s_ok, other=float("-inf"))
    m = tl.max(lse_s, 0)
    w = tl.exp(lse_s - tl.where(m == float("-inf"), 0.0, m))  # rows with nothing: every weight is 0
    o_s = tl.load(PARTS + part[:, None] * HEAD_DIM + d[None, :], mask=s_ok[:, None] & (d < HEAD_DIM)[None, :],
                  other=0.0)
    l = tl.sum(w, 0)
    empty = l == 0.0
    l = tl.where(empty, 1.0, l)
    tl.store(O + row * HEAD_DIM + d, (tl.sum(w[:, None] * o_s, 0) / l).to(O.dtype.element_ty), mask=d < HEAD_DIM)
    tl.store(LSE + row, tl.where(empty, float("-inf"), m + tl.log(l)))


# --------------------------------------------------------------------------- backward
@triton.jit
def attn_bwd_preprocess(O, DO, DLSE, DELTA, DQ_ACC,
                        stride_ob, stride_oh, stride_om, stride_od, stride_dob, stride_doh, stride_dom, stride_dod,
                        H, Q_LEN,
                        HEAD_DIM: tl.constexpr, D_PAD: tl.constexpr, BLOCK_M: tl.constexpr, HAS_DLSE: tl.constexpr,
                        ZERO_DQ: tl.constexpr):
    """delta = rowsum(dO * O) - dLSE: the softmax-gradient correction of each query row; with
    ZERO_DQ also zeros of the rows of DQ_ACC [B * H, Q_LEN, HEAD_DIM] (fp32, contiguous), the
    fused backward's dQ accumulator (one pass less than a separate fill)."""
    qb, off_bh = _program(tl.program_id(0), Q_LEN, BLOCK_M)
    start_m = qb * BLOCK_M
    o = _tile(_head(O, off_bh // H, off_bh % H, stride_ob, stride_oh), start_m, Q_LEN, stride_om, stride_od,
              HEAD_DIM=HEAD_DIM, D_PAD=D_PAD, BLOCK=BLOCK_M, WIDE=True, TRANS=False)
    do = _tile(_head(DO, off_bh // H, off_bh % H, stride_dob, stride_doh), start_m, Q_LEN, stride_dom, stride_dod,
               HEAD_DIM=HEAD_DIM, D_PAD=D_PAD, BLOCK=BLOCK_M, WIDE=True, TRANS=False)
    delta = tl.sum(o.to(tl.float32) * do.to(tl.float32), 1)
    offs_m = start_m + tl.arange(0, BLOCK_M)
    row = off_bh.to(tl.int64) * Q_LEN + offs_m
    if HAS_DLSE:  # d lse / d score = softmax, so a gradient on LSE shifts delta
        delta -= tl.load(DLSE + row, mask=offs_m < Q_LEN, other=0.0)
    tl.store(DELTA + row, delta, mask=offs_m < Q_LEN)
    if ZERO_DQ:
        d = tl.arange(0, D_PAD)
        tl.store(DQ_ACC + row[:, None] * HEAD_DIM + d[None, :], tl.zeros([BLOCK_M, D_PAD], dtype=tl.float32),
                 mask=(offs_m < Q_LEN)[:, None] & (d < HEAD_DIM)[None, :])


@triton.jit
def _dkdv_tiles(dk, dv, k, v, Q, DO, Q_DESC, DO_DESC, off_b, off_h, LSE, DELTA, INDICES, TAGS, lo, hi, offs_n,
                stride_qm, stride_qd, stride_dom, stride_dod, Q_LEN, KV_LEN, Q_OFFSET, PARAMS, qk_scale,
                MASK: tl.constexpr, IS_FULL: tl.constexpr, EVEN_N: tl.constexpr, HEAD_DIM: tl.constexpr,
                D_PAD: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, RANDOM_SLOTS: tl.constexpr,
                DOT_PRECISION: tl.constexpr, WIDE_ROWS: tl.constexpr):
    """Contributions of the query tiles INDICES[lo:hi] to this key block's dK and dV. The tile is
    computed keys x queries (S^T = K Q^T), so P^T and dS^T feed the dK and dV products as they are
    (no transpose of a register tile, which would round-trip through shared memory)."""
    for t in range(lo, hi):
        start_m = tl.load(INDICES + t) * BLOCK_M
        offs_m = start_m + tl.arange(0, BLOCK_M)
        q_t = _rows(Q, Q_DESC, off_b, off_h, start_m, Q_LEN, stride_qm, stride_qd,
                    HEAD_DIM=HEAD_DIM, D_PAD=D_PAD, BLOCK=BLOCK_M, WIDE=WIDE_ROWS, TRANS=True)
        do = _rows(DO, DO_DESC, off_b, off_h, start_m, Q_LEN, stride_dom, stride_dod,
                   HEAD_DIM=HEAD_DIM, D_PAD=D_PAD, BLOCK=BLOCK_M, WIDE=WIDE_ROWS, TRANS=False)
        lse, delta = _row_stats(LSE, DELTA, offs_m, Q_LEN)
        s_t = tl.dot(k, q_t, input_precision=DOT_PRECISION) * qk_scale  # [BLOCK_N, BLOCK_M]
        p_t = tl.math.exp2(s_t - lse[None, :])
        if not (IS_FULL and EVEN_N):
            tags = 0 if IS_FULL else tl.load(TAGS + t)
            keep = _keep(offs_m, offs_n, KV_LEN, Q_OFFSET, PARAMS, tags, MASK=MASK, IS_FULL=IS_FULL,
                         BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N, RANDOM_SLOTS=RANDOM_SLOTS, KEYS_FIRST=True)
            p_t = tl.where(keep, p_t, 0.0)
        dv = tl.dot(p_t.to(do.dtype), do, dv, input_precision=DOT_PRECISION)
        dp_t = tl.dot(v, tl.trans(do), input_precision=DOT_PRECISION)
        ds_t = p_t * (dp_t - delta[None, :])
        dk = tl.dot(ds_t.to(q_t.dtype), tl.trans(q_t), dk, input_precision=DOT_PRECISION)
    return dk, dv


@triton.jit(do_not_specialize=LENGTHS)
def attn_bwd_dkdv(Q, K, V, DO, DK, DV, LSE, DELTA, Q_DESC, DO_DESC, PARAMS,
                  FULL_OFFSETS, FULL_INDICES, PART_OFFSETS, PART_INDICES, PART_TAGS, ORDER, HEAVY,
                  stride_qb, stride_qh, stride_qm, stride_qd, stride_kb, stride_kh, stride_kn, stride_kd,
                  stride_vb, stride_vh, stride_vn, stride_vd, stride_dob, stride_doh, stride_dom, stride_dod,
                  stride_dkb, stride_dkh, stride_dkn, stride_dkd, stride_dvb, stride_dvh, stride_dvn, stride_dvd,
                  HKV, GROUP, Q_LEN, KV_LEN, Q_OFFSET, qk_scale, sm_scale,
                  MASK: tl.constexpr, HEAD_DIM: tl.constexpr, D_PAD: tl.constexpr, BLOCK_M: tl.constexpr,
                  BLOCK_N: tl.constexpr, RANDOM_SLOTS: tl.constexpr, EVEN_N: tl.constexpr,
                  DOT_PRECISION: tl.constexpr, WIDE_ROWS: tl.constexpr):
    """dK, dV: one program per (key block, batch x kv head) walks the transposed layout (the
    query blocks that attend this key block) for every query head of its GQA group."""
    tl.static_assert(BLOCK_M % 16 == 0 and BLOCK_N % 16 == 0 and D_PAD >= HEAD_DIM)
    kb, off_bh = _scheduled(tl.program_id(0), tl.num_programs(0), KV_LEN, BLOCK_N, ORDER, HEAVY)
    off_b = off_bh // HKV
    off_hk = off_bh % HKV
    start_n = kb * BLOCK_N
    offs_n = start_n + tl.arange(0, BLOCK_N)
    k = _tile(_head(K, off_b, off_hk, stride_kb, stride_kh), start_n, KV_LEN, stride_kn, stride_kd,
              HEAD_DIM=HEAD_DIM, D_PAD=D_PAD, BLOCK=BLOCK_N, WIDE=True, TRANS=False)
    v = _tile(_head(V, off_b, off_hk, stride_vb, stride_vh), start_n, KV_LEN, stride_vn, stride_vd,
              HEAD_DIM=HEAD_DIM, D_PAD=D_PAD, BLOCK=BLOCK_N, WIDE=True, TRANS=False)
    dk = tl.zeros([BLOCK_N, D_PAD], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, D_PAD], dtype=tl.float32)
    for g in range(GROUP):
        off_h = off_hk * GROUP + g
        rows = (off_b * HKV * GROUP + off_h).to(tl.int64) * Q_LEN  # this head's LSE / delta
        Qh = _head(Q, off_b, off_h, stride_qb, stride_qh)
        DOh = _head(DO, off_b, off_h, stride_dob, stride_doh)
        dk, dv = _dkdv_tiles(dk, dv, k, v, Qh, DOh, Q_DESC, DO_DESC, off_b, off_h, LSE + rows, DELTA + rows, FULL_INDICES, PART_TAGS,
                             tl.load(FULL_OFFSETS + kb), tl.load(FULL_OFFSETS + kb + 1), offs_n,
                             stride_qm, stride_qd, stride_dom, stride_dod, Q_LEN, KV_LEN, Q_OFFSET, PARAMS, qk_scale,
                             MASK=MASK, IS_FULL=True, EVEN_N=EVEN_N, HEAD_DIM=HEAD_DIM, D_PAD=D_PAD, BLOCK_M=BLOCK_M,
                             BLOCK_N=BLOCK_N, RANDOM_SLOTS=RANDOM_SLOTS, DOT_PRECISION=DOT_PRECISION,
                             WIDE_ROWS=WIDE_ROWS)
        dk, dv = _dkdv_tiles(dk, dv, k, v, Qh, DOh, Q_DESC, DO_DESC, off_b, off_h, LSE + rows, DELTA + rows, PART_INDICES, PART_TAGS,
                             tl.load(PART_OFFSETS + kb), tl.load(PART_OFFSETS + kb + 1), offs_n,
                             stride_qm, stride_qd, stride_dom, stride_dod, Q_LEN, KV_LEN, Q_OFFSET, PARAMS, qk_scale,
                             MASK=MASK, IS_FULL=False, EVEN_N=EVEN_N, HEAD_DIM=HEAD_DIM, D_PAD=D_PAD, BLOCK_M=BLOCK_M,
                             BLOCK_N=BLOCK_N, RANDOM_SLOTS=RANDOM_SLOTS, DOT_PRECISION=DOT_PRECISION,
                             WIDE_ROWS=WIDE_ROWS)
    _store_tile(_head(DK, off_b, off_hk, stride_dkb, stride_dkh), start_n, KV_LEN, stride_dkn, stride_dkd,
                dk * sm_scale, HEAD_DIM=HEAD_DIM, D_PAD=D_PAD, BLOCK=BLOCK_N)
    _store_tile(_head(DV, off_b, off_hk, stride_dvb, stride_dvh), start_n, KV_LEN, stride_dvn, stride_dvd,
                dv, HEAD_DIM=HEAD_DIM, D_PAD=D_PAD, BLOCK=BLOCK_N)


@triton.jit
def _dq_tiles(dq, q, do, lse, delta, K, V, K_DESC, V_DESC, off_b, off_hk, INDICES, TAGS, lo, hi, offs_m,
              stride_kn, stride_kd, stride_vn, stride_vd, KV_LEN, Q_OFFSET, PARAMS, qk_scale,
              MASK: tl.constexpr, IS_FULL: tl.constexpr, EVEN_N: tl.constexpr, HEAD_DIM: tl.constexpr,
              D_PAD: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, RANDOM_SLOTS: tl.constexpr,
              DOT_PRECISION: tl.constexpr):
    """Contributions of the key tiles INDICES[lo:hi] to this query block's dQ."""
    for t in range(lo, hi):
        start_n = tl.load(INDICES + t) * BLOCK_N
        k_t = _rows(K, K_DESC, off_b, off_hk, start_n, KV_LEN, stride_kn, stride_kd,
                    HEAD_DIM=HEAD_DIM, D_PAD=D_PAD, BLOCK=BLOCK_N, WIDE=True, TRANS=True)
        v_t = _rows(V, V_DESC, off_b, off_hk, start_n, KV_LEN, stride_vn, stride_vd,
                    HEAD_DIM=HEAD_DIM, D_PAD=D_PAD, BLOCK=BLOCK_N, WIDE=True, TRANS=True)
        qk = tl.dot(q, k_t, input_precision=DOT_PRECISION) * qk_scale
        p = tl.math.exp2(qk - lse[:, None])  # the forward's probabilities, recomputed
        if not (IS_FULL and EVEN_N):
            tags = 0 if IS_FULL else tl.load(TAGS + t)
            keep = _keep(offs_m, start_n + tl.arange(0, BLOCK_N), KV_LEN, Q_OFFSET, PARAMS, tags, MASK=MASK,
                         IS_FULL=IS_FULL, BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N, RANDOM_SLOTS=RANDOM_SLOTS,
                         KEYS_FIRST=False)
            p = tl.where(keep, p, 0.0)
        dp = tl.dot(do, v_t, input_precision=DOT_PRECISION)
        ds = p * (dp - delta[:, None])
        dq = tl.dot(ds.to(k_t.dtype), tl.trans(k_t), dq, input_precision=DOT_PRECISION)
    return dq


@triton.jit(do_not_specialize=LENGTHS)
def attn_bwd_dq(Q, K, V, DO, DQ, LSE, DELTA, K_DESC, V_DESC, PARAMS,
                FULL_OFFSETS, FULL_INDICES, PART_OFFSETS, PART_INDICES, PART_TAGS, ORDER, HEAVY,
                stride_qb, stride_qh, stride_qm, stride_qd, stride_kb, stride_kh, stride_kn, stride_kd,
                stride_vb, stride_vh, stride_vn, stride_vd, stride_dob, stride_doh, stride_dom, stride_dod,
                stride_dqb, stride_dqh, stride_dqm, stride_dqd,
                H, GROUP, Q_LEN, KV_LEN, Q_OFFSET, qk_scale, sm_scale,
                MASK: tl.constexpr, HEAD_DIM: tl.constexpr, D_PAD: tl.constexpr, BLOCK_M: tl.constexpr,
                BLOCK_N: tl.constexpr, RANDOM_SLOTS: tl.constexpr, EVEN_N: tl.constexpr, DOT_PRECISION: tl.constexpr):
    """dQ: one program per (query block, batch x head) walks the layout's key tiles."""
    tl.static_assert(BLOCK_M % 16 == 0 and BLOCK_N % 16 == 0 and D_PAD >= HEAD_DIM)
    qb, off_bh = _scheduled(tl.program_id(0), tl.num_programs(0), Q_LEN, BLOCK_M, ORDER, HEAVY)
    off_b = off_bh // H
    off_h = off_bh % H
    start_m = qb * BLOCK_M
    offs_m = start_m + tl.arange(0, BLOCK_M)
    q = _tile(_head(Q, off_b, off_h, stride_qb, stride_qh), start_m, Q_LEN, stride_qm, stride_qd,
              HEAD_DIM=HEAD_DIM, D_PAD=D_PAD, BLOCK=BLOCK_M, WIDE=True, TRANS=False)
    do = _tile(_head(DO, off_b, off_h, stride_dob, stride_doh), start_m, Q_LEN, stride_dom, stride_dod,
               HEAD_DIM=HEAD_DIM, D_PAD=D_PAD, BLOCK=BLOCK_M, WIDE=True, TRANS=False)
    rows = off_bh.to(tl.int64) * Q_LEN
    lse, delta = _row_stats(LSE + rows, DELTA + rows, offs_m, Q_LEN)
    off_hk = off_h // GROUP
    K = _head(K, off_b, off_hk, stride_kb, stride_kh)
    V = _head(V, off_b, off_hk, stride_vb, stride_vh)
    dq = tl.zeros([BLOCK_M, D_PAD], dtype=tl.float32)
    dq = _dq_tiles(dq, q, do, lse, delta, K, V, K_DESC, V_DESC, off_b, off_hk, FULL_INDICES, PART_TAGS,
                   tl.load(FULL_OFFSETS + qb), tl.load(FULL_OFFSETS + qb + 1), offs_m,
                   stride_kn, stride_kd, stride_vn, stride_vd, KV_LEN, Q_OFFSET, PARAMS, qk_scale,
                   MASK=MASK, IS_FULL=True, EVEN_N=EVEN_N, HEAD_DIM=HEAD_DIM, D_PAD=D_PAD,
                   BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N, RANDOM_SLOTS=RANDOM_SLOTS, DOT_PRECISION=DOT_PRECISION)
    dq = _dq_tiles(dq, q, do, lse, delta, K, V, K_DESC, V_DESC, off_b, off_hk, PART_INDICES, PART_TAGS,
                   tl.load(PART_OFFSETS + qb), tl.load(PART_OFFSETS + qb + 1), offs_m,
                   stride_kn, stride_kd, stride_vn, stride_vd, KV_LEN, Q_OFFSET, PARAMS, qk_scale,
                   MASK=MASK, IS_FULL=False, EVEN_N=EVEN_N, HEAD_DIM=HEAD_DIM, D_PAD=D_PAD,
                   BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N, RANDOM_SLOTS=RANDOM_SLOTS, DOT_PRECISION=DOT_PRECISION)
    _store_tile(_head(DQ, off_b, off_h, stride_dqb, stride_dqh), start_m, Q_LEN, stride_dqm, stride_dqd,
                dq * sm_scale, HEAD_DIM=HEAD_DIM, D_PAD=D_PAD, BLOCK=BLOCK_M)
