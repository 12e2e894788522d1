"""Launching the kernels of a `KernelPlan`: allocation, grids, arguments, and launches prepared
once per call geometry (`_launch`).

Kernels come from `patternc.kernels.cache`, compiled for CUDA tensors or interpreted for CPU
tensors (the plan says which). Interpreted launches are serialized: Triton's interpreter
patches module state while it runs and is not thread-safe.
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
from dataclasses import replace

import torch

from ..kernels import cache, parallel
from ..kernels.prepared import Prepared, Tma, scratch, triton_args
from ..plan import KernelPlan

LOG2E = 1.4426950408889634
WIDE_ROW_OFFSETS = 2**31  # row offsets from here on need 64-bit pointer math in the dK/dV loop
TMA = None  # K/V tiles through the tensor memory accelerator: None = on CUDA GPUs that have it; tests set it
SPLITS = None  # programs per forward row: None = chosen per call (`_splits`); tests set it
SPLIT_BELOW = 2  # forward rows are split only where there are fewer programs than this per multiprocessor
MIN_SPLIT_TILES = 8  # a split of a row gets at least this many key tiles
MAX_SPLITS = 64  # programs per forward row at most; the split merge loads all of a row's parts at once
PERSISTENT = None  # programs of the warp-specialized forward: None = one per multiprocessor; tests set it
OVERLAP_DQ = True  # the backward's dQ kernel runs beside its dK/dV kernel, on a second stream
FUSED_PAIRS = None  # (batch, kv head) pairs per fused backward launch: None = chosen per call; tests set it
INTERIM = None  # a pass whose kernels compile runs the plan's interim (`_compiling`): None = unless PATTERNC_INTERIM=0
_INTERPRETER = threading.Lock()
# Plans whose kernels CUDA graphs captured: a graph replays with the addresses of the plan's
# tables, so the plan may not die when the plan cache evicts it.
CAPTURED: dict[int, KernelPlan] = {}
LAUNCHES_PER_PLAN = 64  # call geometries a plan keeps prepared launches for, before starting over


def empty(shape, dtype, device):
    """Output allocation (tests replace it with NaN-filled buffers to catch unwritten elements)."""
    return torch.empty(shape, dtype=dtype, device=device)


def _strides(prefix: str, t: torch.Tensor, dims: str) -> dict:
    return {f"stride_{prefix}{d}": s for d, s in zip(dims, t.stride())}


def _kernels(plan: KernelPlan):
    """(static kernels module, the plan's mask function), in the plan's mode."""
    return cache.kernels(plan.interpret), cache.mask_function(plan.source, plan.interpret)


@contextlib.contextmanager
def _launching(plan: KernelPlan, device: torch.device):
    """On the tensors' GPU whatever the current device is. In the interpreter: one launch at a
    time, with Triton's interpret switch on (parts of Triton read it while launching). A plan
    whose kernels a CUDA graph captures is kept for good (`CAPTURED`)."""
    if not plan.interpret:
        with torch.cuda.device(device):
            if torch.cuda.is_current_stream_capturing():
                CAPTURED[id(plan)] = plan
            yield
        return
    with _INTERPRETER, cache.interpreting(True):
        yield


def _launch(kernel, programs: int, plan: KernelPlan, geometry: tuple, tensors: dict, args) -> None:
    """``kernel[(programs,)](**tensors, **args())``: ``tensors`` are this call's tensors (and `Tma`
    descriptors), ``args()`` gives every other argument, a function of the plan and ``geometry``.

    Triton binds and specializes all 30-50 arguments on every launch (~100 us of CPU, as long
    as a small kernel runs). So the first launch of a geometry goes through Triton (which
    compiles or finds the kernel) and the plan keeps the compiled kernel, `Prepared` with the
    other arguments; later launches hand it just this call's tensors. ``geometry`` must hold
    whatever Triton specializes on besides the plan: shapes, strides, the tensors' 16-byte
    alignment, scalars; the tensors passed here must be the call's only other difference
    (their addresses)."""
    if plan.interpret:
        kernel[(programs,)](**triton_args(tensors), **args())
        return
    key = (kernel.__name__, programs, geometry)
    prepared = plan.launches.get(key)
    if prepared is None:
        every = {**tensors, **args()}
        compiled = scratch(kernel[(programs,)], **triton_args(every))
        slots = [kernel.arg_names.index(name) for name in tensors]
        if len(plan.launches) >= LAUNCHES_PER_PLAN:
            plan.launches.clear()
        plan.launches[key] = Prepared(compiled, [every[name] for name in kernel.arg_names], slots)
        return
    prepared(programs, tensors.values())


def _geometry(*tensors) -> tuple:
    """Shapes, strides, dtypes and 16-byte alignment of ``tensors`` (None: absent), for `_launch`."""
    return tuple(None if t is None else (t.shape, t.stride(), t.dtype, t.data_ptr() % 16 == 0) for t in tensors)


def _dot_precision(plan: KernelPlan) -> str:
    """fp32 dots use TF32 exactly when torch's matmuls would (read at each call, as torch does)."""
    tf32 = plan.dtype == torch.float32 and not plan.interpret and torch.backends.cuda.matmul.allow_tf32
    return "tf32" if tf32 else "ieee"


def _common(plan: KernelPlan, q, cfg) -> dict:
    return dict(Q_LEN=plan.q_len, KV_LEN=plan.kv_len, Q_OFFSET=plan.q_offset, PARAMS=plan.params,
                HEAD_DIM=plan.head_dim, D_PAD=plan.d_pad, BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n,
                RANDOM_SLOTS=plan.random_slots, EVEN_N=plan.kv_len % cfg.block_n == 0,
                DOT_PRECISION=_dot_precision(plan), num_warps=cfg.num_warps, num_stages=cfg.num_stages,
                **({"maxnreg": cfg.max_registers} if cfg.max_registers else {}))


def _tma_ok(t: torch.Tensor) -> bool:
    """A tensor a TMA descriptor can address: last dim contiguous, other strides positive multiples of
    16 bytes, base 16-byte aligned, no empty dim."""
    return _tma_shape_ok(t.shape, t.stride(), t.element_size()) and t.data_ptr() % 16 == 0


@functools.lru_cache(maxsize=256)
def _tma_shape_ok(shape, strides, size: int) -> bool:
    return strides[-1] == 1 and all(n > 0 for n in shape) and all(s > 0 and s * size % 16 == 0 for s in strides[:-1])


def _tma_wanted(plan: KernelPlan) -> bool:
    """The kernels load tiles through TMA descriptors where tensors allow: on Hopper (or as tests set)."""
    return plan.hopper if TMA is None else TMA


def _warp_specialized(plan: KernelPlan, cfg, q, k, v) -> bool:
    """The forward runs the warp-specialized kernel (`TileConfig.warp_specialize`, `hopper.py`),
    which loads Q, K and V through TMA descriptors: where the plan asks for it, on a GPU, and the
    TMA can address the tensors."""
    return bool(cfg.warp_specialize and not plan.interpret and _tma_wanted(plan) and plan.pack == 1
                and plan.d_pad == plan.head_dim and all(_tma_ok(t) for t in (q, k, v)))


def _descriptors(plan: KernelPlan, block: int, *tensors) -> list:
    """`Tma` descriptors of ``tensors`` ([B, H, L, D], tiles of ``block`` rows), None for each one the
    kernels load through pointers (no TMA on this device, or a tensor it cannot address, such as
    the stride-0 gradient of a sum)."""
    return [Tma(t, (1, 1, block, plan.d_pad)) if _tma_wanted(plan) and _tma_ok(t) else None for t in tensors]


@functools.lru_cache(maxsize=None)
def _multiprocessors(device: torch.device) -> int:
    return torch.cuda.get_device_properties(device).multi_processor_count


def _splits(plan: KernelPlan, programs: int, device: torch.device) -> int:
    """How many programs share each forward row: 1, unless there are too few rows to fill the GPU
    (fewer than SPLIT_BELOW programs per multiprocessor; decoding: a few queries against a long
    cache), then enough for about 8 programs per multiprocessor, each with at least
    MIN_SPLIT_TILES key tiles. (Splitting where rows are many costs more than it gains: the
    parts are fp32 and the merge reads them all; `all` at 4K with 128-row tiles, 1024
    programs, split in two: forward 0.54 ms + merge 0.56 ms, against 0.52 ms unsplit.)"""
    if SPLITS is not None:
        return min(SPLITS, MAX_SPLITS)
    if plan.interpret:
        return 1
    sms = _multiprocessors(device)  # a tensor's device: it names its index
    if programs >= SPLIT_BELOW * sms:
        return 1
    want = -(-8 * sms // programs)
    return max(1, min(want, plan.fwd_row_tiles // MIN_SPLIT_TILES, MAX_SPLITS))


def _persistent(plan: KernelPlan, work: int) -> int:
    """Programs of the persistent warp-specialized forward, which loop over its ``work`` items: one
    per multiprocessor (its 197 KB of shared memory fit one)."""
    if PERSISTENT is not None:
        return min(PERSISTENT, work)
    return min(work, _multiprocessors(plan.device))


def _lists(lay, transposed: bool, schedule) -> dict:
    full, part = (lay.full_t, lay.partial_t) if transposed else (lay.full, lay.partial)
    return dict(FULL_OFFSETS=full.offsets, FULL_INDICES=full.indices, PART_OFFSETS=part.offsets,
                PART_INDICES=part.indices, PART_TAGS=part.tags, ORDER=schedule.order, HEAVY=schedule.heavy)


def forward(plan: KernelPlan, q, k, v, scale: float, grads: bool = False):
    """O ``[B, H, Lq, D]`` in q's dtype and the natural-log LSE ``[B, H, Lq]`` (float32).
    ``grads``: a backward is expected; the first time for this call geometry, its kernels
    start compiling in child processes while this one compiles the forward (`parallel`).
    While the plan's warp-specialized kernels compile, its interim plan runs (`_compiling`)."""
    if plan.specialized:  # (its interim plan is built only if a call runs it)
        fwd = _compiling(plan, "forward", q, k, v, lambda: _forward_warmups(plan, q, k, v, scale, q.device))
        if grads:  # a head start for the backward's own kernels
            _compiling(plan, "backward", q, k, v, lambda: _backward_warmups(plan, q, k, v, scale))
        if fwd:
            return forward(plan.interim, q, k, v, scale, grads)
    out, lse, parts = _outputs(plan, q, q.device, empty)
    calls = _forward_calls(plan, q, k, v, out, lse, parts, scale)
    with _launching(plan, q.device):
        if grads and _first(plan, ("compile backward", calls[0][2])):
            with contextlib.suppress(Exception):  # a head start only: the backward compiles what this misses
                _compile(_backward_warmups(plan, q, k, v, scale), wait=False, nice=parallel.SOON_NICE)
        for kernel, programs, geometry, tensors, args in calls:
            _launch(kernel, programs, plan, geometry, tensors, args)
    return out, lse


def _outputs(plan: KernelPlan, q, device, alloc) -> tuple:
    """The forward's O and LSE, and None or, when a row's key tiles are split over several
    programs (decoding: few rows, long ones), each split's fp32 O and LSE (`_splits`)."""
    B, H, Lq, D = q.shape
    splits = _splits(plan, plan.fwd_layout.num_q_blocks * B * H // plan.pack, device)
    parts = None if splits == 1 else (alloc((splits, B, H, Lq, D), torch.float32, device),
                                      alloc((splits, B, H, Lq), torch.float32, device))
    return alloc(q.shape, q.dtype, device), alloc((B, H, Lq), torch.float32, device), parts


def _forward_calls(plan: KernelPlan, q, k, v, out, lse, parts, scale: float) -> list:
    """The forward's launches as `_launch` takes them: (kernel, programs, geometry, tensors,
    args). ``parts``: None, or the fp32 (O, LSE) of each split of a row (decoding: few rows,
    long ones), which `attn_merge` then merges into ``out`` and ``lse``."""
    flash, mask = _kernels(plan)
    B, H, Lq, D = q.shape
    lay, cfg = plan.fwd_layout, plan.fwd
    splits = 1 if parts is None else parts[0].shape[0]
    o, ls = (out, lse) if parts is None else parts
    work = lay.num_q_blocks * B * H // plan.pack * splits

    def outputs():  # O's and LSE's strides, for the prepared launch's first call (the lambdas below)
        return dict(**_strides("o", o.view(splits, B, H, Lq, D), "sbhmd"),
                    stride_ls=ls.view(splits, B * H * Lq).stride(0))

    if _warp_specialized(plan, cfg, q, k, v):
        descriptors = dict(Q_DESC=Tma(q, (1, 1, cfg.block_m // 2, D), gluon=True),
                           K_DESC=Tma(k, (1, 1, cfg.block_n, D), gluon=True),
                           V_DESC=Tma(v, (1, 1, cfg.block_n, D), gluon=True))
        geometry = (_geometry(q, k, v), "warp-specialized", scale, splits)
        calls = [(cache.hopper_kernels().attn_fwd_ws, _persistent(plan, work) if cfg.persistent else work, geometry,
                  dict(**descriptors, O=o, LSE=ls), lambda: dict(
                      **_lists(lay, False, plan.fwd_schedule),
                      **outputs(), H=H, GROUP=H // k.shape[1], Q_LEN=plan.q_len, KV_LEN=plan.kv_len,
                      Q_OFFSET=plan.q_offset, WORK=work, qk_scale=scale * LOG2E, SPLITS=splits, PARAMS=plan.params,
                      MASK=mask, RANDOM_SLOTS=plan.random_slots, EVEN_N=plan.kv_len % cfg.block_n == 0,
                      TAGGED=plan.source.tagged, STAGES=cfg.num_stages, num_warps=cfg.num_warps))]
    else:
        if cfg.warp_specialize:  # the plain loops on its tile (TMA off, or tensors it cannot address): 8 warps
            cfg = replace(cfg, num_warps=max(cfg.num_warps, 8))
        k_desc, v_desc = _descriptors(plan, cfg.block_n, k, v)
        geometry = (_geometry(q, k, v), k_desc is None, v_desc is None, scale, splits, _dot_precision(plan))
        calls = [(flash.attn_fwd, work, geometry, dict(Q=q, K=k, V=v, O=o, LSE=ls, K_DESC=k_desc, V_DESC=v_desc),
                  lambda: dict(
                      **_lists(lay, False, plan.fwd_schedule), **_strides("q", q, "bhmd"), **_strides("k", k, "bhnd"),
                      **_strides("v", v, "bhnd"), **outputs(), H=H, GROUP=H // k.shape[1], WORK=work,
                      qk_scale=scale * LOG2E, SPLITS=splits, PACK=plan.pack, MASK=mask, **_common(plan, q, cfg)))]
    if parts is not None:
        calls.append((flash.attn_merge, B * H * Lq, geometry, dict(PARTS=o, PART_LSE=ls, O=out, LSE=lse),
                      lambda: dict(ROWS=B * H * Lq, SPLITS=splits, HEAD_DIM=plan.head_dim, D_PAD=plan.d_pad,
                                   MAX_SPLITS=MAX_SPLITS)))  # one variant for every split count
    return calls


def precompile(plan: KernelPlan, q, k, v, scale: float, device: torch.device, backward: bool) -> None:
    """Compile every kernel a call on contiguous tensors shaped as the storage-free (meta) ``q``,
    ``k``, ``v`` launches on ``device``, and with ``backward`` its backward's, side by side in
    child processes (`parallel`; one after another in this process where that is off), into
    Triton's on-disk cache and this process. Nothing runs on the GPU."""
    calls = _forward_warmups(plan, q, k, v, scale, device)
    if backward:
        calls += _backward_warmups(plan, q, k, v, scale)
    with _launching(plan, device):
        _compile(calls, wait=True)


def backward(plan: KernelPlan, q, k, v, o, lse, do, dlse, scale: float):
    """dQ, dK, dV (dK and dV summed over each GQA group). ``dlse`` may be None. While the plan's
    warp-specialized kernels compile, its interim plan runs (`_compiling`)."""
    if plan.specialized and _compiling(plan, "backward", q, k, v, lambda: _backward_warmups(plan, q, k, v, scale)):
        return backward(plan.interim, q, k, v, o, lse, do, dlse, scale)
    B, H, Lq, _ = q.shape
    fused = _fused_backward(plan)
    if fused:  # its TMA descriptors need addressable tensors: copy any other (a stride-0 dO, say)
        if torch.are_deterministic_algorithms_enabled():  # asked for by its option: torch's alert (raises)
            torch._C._alert_not_deterministic("patternc's fused attention backward (option bwd_warp_specialize=1)")
        q, k, v, do = (t if _tma_ok(t) else t.clone(memory_format=torch.contiguous_format) for t in (q, k, v, do))
        pairs = _pairs_per_launch(plan, B * k.shape[1], H // k.shape[1] * Lq)
        dq = empty(_accumulator(q, k, pairs), torch.float32, q.device)  # zeroed by `_fused`
    else:
        dq = empty(q.shape, q.dtype, q.device)
    dk, dv = empty(k.shape, k.dtype, k.device), empty(v.shape, v.dtype, v.device)
    delta = empty((B, H, Lq), torch.float32, q.device)
    calls = _backward_calls(plan, q, k, v, o, lse, do, dq, dk, dv, delta, dlse, scale)
    with _launching(plan, q.device):
        if _first(plan, ("compile", calls[0][2])):  # the kernels compile side by side
            _compile(calls, wait=True)
        launches = [(kernel, programs, plan, *rest) for kernel, programs, *rest in calls]
        if fused:
            return _fused(launches, dq, q, k), dk, dv
        if plan.interpret or not OVERLAP_DQ:
            for launch in launches:
                _launch(*launch)
            return dq, dk, dv
        preprocess, dkdv, dq_ = launches  # dQ needs only delta: it runs beside dK/dV, on a second stream
        _launch(*preprocess)
        main = torch.cuda.current_stream()
        side = side_stream(main)
        side.wait_stream(main)
        try:
            _launch(*dkdv)
            with torch.cuda.stream(side):
                _launch(*dq_)
        finally:
            main.wait_stream(side)  # the caller's stream: everything after sees dQ, and frees after it
    return dq, dk, dv


def _pairs_per_launch(plan: KernelPlan, pairs: int, rows: int) -> int:
    """(batch, kv head) pairs per launch of the fused backward, whose fp32 dQ accumulator (``rows``
    x D per pair) covers one launch's pairs and is reused by the next: all of them, as
    FlashAttention-3 and cuDNN do (the accumulator is twice dQ's size in bf16), unless that
    would take more than half the memory free on the GPU and in torch's cache when a call of
    this shape first comes (kept for its later calls: torch's memory statistics cost ~0.3 ms;
    inside a CUDA graph's capture, all pairs); then as many as fit. (Launching in chunks costs
    the fused kernel its overlap of heavy and light programs: chunks of ~4 programs per
    multiprocessor measured causal 16K +9%, P4 +43%, causal GQA +17%:
    results/2026-11-26-ab-v15-fused-bwd-chunks-h100.md.)"""
    if FUSED_PAIRS is not None:
        return min(FUSED_PAIRS, pairs)
    key = ("pairs per launch", pairs, rows)
    if key not in plan.launches:
        if torch.cuda.is_current_stream_capturing():
            return pairs
        need = 2 * pairs * rows * plan.head_dim * 4
        spare = (torch.cuda.mem_get_info(plan.device)[0] + torch.cuda.memory_reserved(plan.device)
                 - torch.cuda.memory_allocated(plan.device))
        plan.launches[key] = max(1, min(pairs, pairs * spare // need))
    return plan.launches[key]


def _accumulator(q, k, pairs: int) -> tuple:
    """Shape of the fused backward's fp32 dQ accumulator: [pairs of (batch, kv head), GROUP, Lq, D]."""
    B, H, Lq, D = q.shape
    return pairs, H // k.shape[1], Lq, D


def _fused(launches: list, acc, q, k):
    """Run the fused backward's launches (preprocess, then the kernel once per chunk of (batch, kv
    head) pairs, each into the accumulator ``acc``, zeroed by the preprocess for one launch, else
    here before each chunk); dQ in q's dtype."""
    preprocess, (kernel, programs, plan, geometry, tensors, args) = launches
    _launch(*preprocess)
    pairs, total = acc.shape[0], q.shape[0] * k.shape[1]
    dq = empty(q.shape, q.dtype, q.device)
    chunks = dq.view(_accumulator(q, k, total))  # dQ by (batch, kv head) pair, as the accumulator
    for first in range(0, total, pairs):
        n = min(pairs, total - first)
        if pairs < total:
            acc.zero_()
        _launch(kernel, programs // pairs * n, plan, geometry, dict(tensors, BH_OFFSET=first), args)
        chunks[first:first + n].copy_(acc[:n])
    return dq


def _fused_backward(plan: KernelPlan) -> bool:
    """The backward runs hopper.py's fused warp-specialized kernel (`TileConfig.warp_specialize`),
    which loads Q, dO, K and V through TMA descriptors: where the plan asks for it, on a GPU
    with TMA (tests may turn it off: the plain kernels then run on its tile)."""
    return bool(plan.bwd.warp_specialize and not plan.interpret and _tma_wanted(plan)
                and plan.d_pad == plan.head_dim)


_SIDE = threading.local()


def side_stream(main: torch.cuda.Stream) -> torch.cuda.Stream:
    """This thread's second stream on ``main``'s device, never ``main`` itself (torch hands out
    pooled streams). One per thread: a thread capturing a CUDA graph forks it into its capture."""
    streams = _SIDE.__dict__.setdefault("streams", {})
    side = streams.get(main.device)
    while side is None or side.cuda_stream == main.cuda_stream:
        side = streams[main.device] = torch.cuda.Stream(main.device)
    return side


def _backward_calls(plan: KernelPlan, q, k, v, o, lse, do, dq, dk, dv, delta, dlse, scale: float) -> list:
    """The backward's launches, in order, as `_launch` takes them: (kernel, programs, geometry,
    tensors, args)."""
    flash, mask = _kernels(plan)
    B, H, Lq, D = q.shape
    HKV = k.shape[1]
    lay, cfg = plan.bwd_layout, plan.bwd
    fused = _fused_backward(plan)
    every = (_geometry(q, k, v, o, lse, do, dlse, dq), scale, _dot_precision(plan))  # the backward's first compile
    zero_dq = fused and dq.shape[0] * dq.shape[1] == B * H  # one launch: an accumulator of all rows
    preprocess = (flash.attn_bwd_preprocess, -(-Lq // 64) * B * H, every,
                  dict(O=o, DO=do, DLSE=delta if dlse is None else dlse, DELTA=delta, DQ_ACC=dq if zero_dq else delta),
                  lambda: dict(**_strides("o", o, "bhmd"), **_strides("do", do, "bhmd"), H=H, Q_LEN=Lq,
                               HEAD_DIM=plan.head_dim, D_PAD=plan.d_pad, BLOCK_M=64, HAS_DLSE=dlse is not None,
                               ZERO_DQ=zero_dq))
    if fused:  # dq: the zeroed fp32 accumulator of its reductions, [pairs, GROUP, Lq, D]
        half = cfg.block_n // 2
        descriptors = dict(Q_DESC=Tma(q, (1, 1, cfg.block_m, D), gluon=True),
                           DO_DESC=Tma(do, (1, 1, cfg.block_m, D), gluon=True),
                           K_DESC=Tma(k, (1, 1, half, D), gluon=True), V_DESC=Tma(v, (1, 1, half, D), gluon=True),
                           DQ_DESC=Tma(dq, (1, 1, cfg.block_m, D // 2), gluon=True))
        geometry = (_geometry(q, k, v, lse, do, dq, dk, dv), scale, "warp-specialized")
        return [preprocess, (  # programs of one launch: `_fused` sets BH_OFFSET, its first (batch, kv head)
            cache.hopper_kernels().attn_bwd_ws, lay.num_kv_blocks * dq.shape[0], geometry,
            dict(**descriptors, DK=dk, DV=dv, LSE=lse, DELTA=delta, BH_OFFSET=0), lambda: dict(
                **_lists(lay, True, plan.dkdv_schedule), **_strides("dk", dk, "bhnd"), **_strides("dv", dv, "bhnd"),
                H=H, HKV=HKV, GROUP=H // HKV, Q_LEN=Lq, KV_LEN=plan.kv_len, Q_OFFSET=plan.q_offset,
                qk_scale=scale * LOG2E, sm_scale=scale, PARAMS=plan.params, MASK=mask,
                RANDOM_SLOTS=plan.random_slots, EVEN_N=plan.kv_len % cfg.block_n == 0, TAGGED=plan.source.tagged,
                STAGES=cfg.num_stages, num_warps=cfg.num_warps))]
    if cfg.warp_specialize:  # the plain kernels on its tile (TMA off): 8 warps
        cfg = replace(cfg, num_warps=8)
    q_desc, do_desc = _descriptors(plan, cfg.block_m, q, do)
    k_desc, v_desc = _descriptors(plan, cfg.block_n, k, v)
    wide_rows = max(q.stride(2), do.stride(2)) * (Lq + cfg.block_m) >= WIDE_ROW_OFFSETS
    geometry = (_geometry(q, k, v, o, lse, do, dlse), *(d is None for d in (q_desc, do_desc, k_desc, v_desc)),
                scale, _dot_precision(plan), wide_rows)
    return [
        preprocess,
        (flash.attn_bwd_dkdv, lay.num_kv_blocks * B * HKV, geometry,
         dict(Q=q, K=k, V=v, DO=do, DK=dk, DV=dv, LSE=lse, DELTA=delta, Q_DESC=q_desc, DO_DESC=do_desc),
         lambda: dict(
             **_lists(lay, True, plan.dkdv_schedule), **_strides("q", q, "bhmd"), **_strides("k", k, "bhnd"),
             **_strides("v", v, "bhnd"), **_strides("do", do, "bhmd"), **_strides("dk", dk, "bhnd"),
             **_strides("dv", dv, "bhnd"), HKV=HKV, GROUP=H // HKV, qk_scale=scale * LOG2E,
             sm_scale=scale, MASK=mask, **_common(plan, q, cfg), WIDE_ROWS=wide_rows)),
        (flash.attn_bwd_dq, lay.num_q_blocks * B * H, geometry,
         dict(Q=q, K=k, V=v, DO=do, DQ=dq, LSE=lse, DELTA=delta, K_DESC=k_desc, V_DESC=v_desc),
         lambda: dict(
             **_lists(lay, False, plan.dq_schedule), **_strides("q", q, "bhmd"), **_strides("k", k, "bhnd"),
             **_strides("v", v, "bhnd"), **_strides("do", do, "bhmd"), **_strides("dq", dq, "bhmd"),
             H=H, GROUP=H // HKV, qk_scale=scale * LOG2E, sm_scale=scale, MASK=mask, **_common(plan, q, cfg))),
    ]


def _meta(shape, dtype, device=None) -> torch.Tensor:
    """A storage-free stand-in for a tensor (its address reads as 0: aligned)."""
    return torch.empty(shape, dtype=dtype, device="meta")


def _stand_ins(plan: KernelPlan, q, k, v) -> tuple:
    """Stand-ins shaped as a backward's O, LSE, dO, dQ, dK, dV and delta usually are
    (contiguous; for the fused backward dQ is its fp32 accumulator), to compile the backward's
    kernels before it runs."""
    B, H, Lq, _ = q.shape
    lse = (B, H, Lq)
    dq = _meta(_accumulator(q, k, B * k.shape[1]), torch.float32) if _fused_backward(plan) else _meta(q.shape, q.dtype)
    return (_meta(q.shape, q.dtype), _meta(lse, torch.float32), _meta(q.shape, q.dtype), dq,
            _meta(k.shape, k.dtype), _meta(v.shape, v.dtype), _meta(lse, torch.float32))


def _forward_warmups(plan: KernelPlan, q, k, v, scale: float, device: torch.device) -> list:
    """The forward's launches on storage-free outputs: what `_warm` compiles before a call."""
    return _forward_calls(plan, q, k, v, *_outputs(plan, q, device, _meta), scale)


def _backward_warmups(plan: KernelPlan, q, k, v, scale: float) -> list:
    """The backward's launches on `_stand_ins`: what `_warm` compiles before the backward runs."""
    return _backward_calls(plan, q, k, v, *_stand_ins(plan, q, k, v), None, scale)


def _first(plan: KernelPlan, key) -> bool:
    """True the first time the plan sees ``key`` (kept with its prepared launches)."""
    if plan.interpret or key in plan.launches:
        return False
    plan.launches[key] = None
    return True


def _compiling(plan: KernelPlan, what: str, q, k, v, calls) -> bool:
    """True while the kernels of the plan's ``what`` pass ("forward" or "backward") are compiling
    in child processes (`parallel`), started here on the plan's first call (for its q, k and
    v's shapes and strides; a later call of other strides compiles its variant as it launches,
    as without this): ``calls()`` gives the pass's launches. The plan's interim (`KernelPlan.interim`: the
    plain kernels, which compile in ~1 s where the warp-specialized ones take 2.5-5.5 s) runs
    the pass meanwhile, so a new structure's first call does not wait for them. False where
    `INTERIM` (or the environment's ``PATTERNC_INTERIM=0``) or `parallel` is off, where torch's
    deterministic algorithms are on (a call's result would change with the kernels), and
    inside a CUDA graph's capture, which waits for them instead (a graph would replay the
    interim kernels for good)."""
    key = ("compiling", what)  # not per geometry: each call pays this lookup (a geometry costs ~7 us)
    keys = plan.launches.get(key)
    if keys == ():  # compiled, or never compiling here: the plan's own kernels run
        return False
    with torch.cuda.device(q.device):  # Triton compiles for (and a graph captures on) the current device
        if keys is None:
            tiered = os.environ.get("PATTERNC_INTERIM", "1") != "0" if INTERIM is None else INTERIM
            tiered = tiered and parallel.enabled() and not torch.are_deterministic_algorithms_enabled()
            keys = plan.launches[key] = _compile(calls(), wait=False, nice=parallel.BACKGROUND_NICE) if tiered else ()
        if keys and torch.cuda.is_current_stream_capturing():
            parallel.wait(keys)
    if keys and parallel.busy(keys):
        return True
    plan.launches[key] = ()
    return False


def _compile(calls: list, wait: bool, nice: int = 0) -> tuple:
    """Compile the kernels ``calls`` need and Triton lacks, each in a child process, side by side
    (`parallel`). ``wait``: return once they are compiled and loaded here: each is warmed up
    in this process too, which finds the children's work in Triton's cache, and compiles (and
    raises the errors of) whatever a child failed on, or everything where `parallel` is off.
    Else only start the children (nothing, where it is off); ``nice``: their CPU priority
    (`parallel.forking`). Returns the kernels' Triton cache keys
    (`parallel.busy`; none where `parallel` is off)."""
    keys = ()
    if parallel.enabled():
        with parallel.forking(nice) as keys:
            _warm(calls)
        keys = tuple(keys)
        if not wait:
            return keys
        parallel.wait(keys)
    if wait:
        _warm(calls)
    return keys


def _warm(calls: list) -> None:
    for kernel, programs, _, tensors, args in calls:
        kernel.warmup(grid=(programs,), **triton_args(tensors), **args())
