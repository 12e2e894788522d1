"""Stage 7, runtime: `attention_from` (an nn.Module with SDPA conventions), the autograd
Function over the generated kernels, and the dense references.

Where it runs:
- CUDA tensors run the generated Triton kernels.
- CPU tensors with ``TRITON_INTERPRET=1`` run the same kernels in Triton's interpreter.
- Other CPU tensors run `chunked_attention`: dense masked attention over query chunks, so
  memory stays bounded (checkpointed per chunk when gradients are needed).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import os
from dataclasses import dataclass

import torch
import triton

from . import codegen
from .errors import PatterncError
from .pattern import Pattern

_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
MAX_HEAD_DIM = 256
WIDE_ROW_OFFSETS = 2**31  # row offsets from here on need 64-bit pointer math in the dK/dV loop


# --------------------------------------------------------------------------- inputs
def as_pattern(pattern) -> Pattern:
    if isinstance(pattern, Pattern):
        return pattern
    if isinstance(pattern, str):
        from . import parse

        return parse(pattern)
    raise PatterncError(f"pattern must be a pattern text or a patternc.Pattern, got {type(pattern).__name__}")


def _check_inputs(q, k, v, scale, dtypes=_DTYPES):
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor):
            raise PatterncError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 4:
            raise PatterncError(f"{name} must have 4 dimensions [batch, heads, length, head_dim], got shape {tuple(t.shape)}")
        if t.dtype not in dtypes:
            allowed = ", ".join(str(d).removeprefix("torch.") for d in dtypes)
            raise PatterncError(f"{name} has dtype {str(t.dtype).removeprefix('torch.')}; expected one of {allowed}")
    for name, t in (("k", k), ("v", v)):
        if t.dtype != q.dtype:
            raise PatterncError(f"{name} has dtype {t.dtype} but q has {q.dtype}; q, k and v must share a dtype")
        if t.device != q.device:
            raise PatterncError(f"{name} is on {t.device} but q is on {q.device}; q, k and v must share a device")
    if k.shape != v.shape:
        raise PatterncError(f"v must have the shape of k {tuple(k.shape)}, got {tuple(v.shape)}")
    if k.shape[0] != q.shape[0]:
        raise PatterncError(f"k has batch size {k.shape[0]} but q has {q.shape[0]}")
    if k.shape[3] != q.shape[3]:
        raise PatterncError(f"k has head dim {k.shape[3]} but q has {q.shape[3]}")
    if k.shape[1] == 0 or q.shape[1] % k.shape[1]:
        raise PatterncError(
            f"q has {q.shape[1]} heads, which is not a multiple of k's {k.shape[1]} heads "
            "(grouped-query attention needs Hq % Hkv == 0)"
        )
    if k.shape[2] == 0 and q.shape[2] > 0:
        raise PatterncError("k has no keys (length 0): every query would attend nothing")
    if scale is not None and (not isinstance(scale, (int, float)) or isinstance(scale, bool) or not math.isfinite(scale)):
        raise PatterncError(f"scale must be a finite float or None, got {scale!r}")
    return q.shape[3] ** -0.5 if scale is None else float(scale)


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "").lower() in ("1", "true", "on", "yes")


# ------------------------------------------------------------------------ the kernels
@dataclass(frozen=True)
class TileConfig:
    """Tile sizes (which are also the layout's block sizes) and launch settings."""

    block_m: int
    block_n: int
    num_warps: int = 4
    num_stages: int = 2


def default_configs(device: torch.device, head_dim: int, dtype: torch.dtype) -> tuple[TileConfig, TileConfig]:
    """(forward, backward) tile configurations.

    fp16/bf16 with D <= 128: the best of a sweep on an H100 (benchmarks/tune_tiles.py,
    results in NOTES.md). fp32 or D > 128: smaller tiles that fit shared memory, checked by
    the GPU golden suite but not tuned.
    """
    if device.type != "cuda":  # the interpreter: small tiles keep its numpy work small
        return TileConfig(32, 32), TileConfig(32, 32)
    if head_dim > 128 and dtype == torch.float32:
        return TileConfig(32, 32, 4, 1), TileConfig(32, 32, 4, 1)
    if head_dim > 128 or dtype == torch.float32:
        return TileConfig(64, 32, 4, 2), TileConfig(32, 32, 4, 1)
    return TileConfig(64, 64, 4, 3), TileConfig(64, 64, 4, 2)


class _Plan:
    """Everything a launch needs for one (pattern, lengths, device, head dim, tiles)."""

    def __init__(self, pattern: Pattern, q_len: int, kv_len: int, device, head_dim, fwd: TileConfig, bwd: TileConfig):
        self.module = codegen.load(codegen.generate(pattern))
        self.params = codegen.params(pattern, q_len, kv_len).to(device)
        self.fwd_cfg, self.bwd_cfg = fwd, bwd
        self.fwd_layout = pattern.layout(q_len, kv_len, fwd.block_m, fwd.block_n).to(device)
        self.bwd_layout = pattern.layout(q_len, kv_len, bwd.block_m, bwd.block_n).to(device)
        self.q_len, self.kv_len = q_len, kv_len
        self.random_slots = codegen.random_slots(pattern, kv_len)
        self.d_pad = max(16, triton.next_power_of_2(head_dim))

    def forward(self, q, k, v, scale):
        B, H, Lq, D = q.shape
        HKV = k.shape[1]
        o = _empty(q.shape, q.dtype, q.device)
        lse = _empty((B, H, Lq), torch.float32, q.device)
        cfg, lay = self.fwd_cfg, self.fwd_layout
        grid = (lay.num_q_blocks * B * H,)
        self.module.attn_fwd[grid](
            q, k, v, o, lse, self.params,
            lay.full.offsets, lay.full.indices, lay.partial.offsets, lay.partial.indices,
            *q.stride(), *k.stride(), *v.stride(), *o.stride(),
            H, H // HKV, Lq, self.kv_len, scale * 1.4426950408889634,
            HEAD_DIM=D, D_PAD=self.d_pad, BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, RANDOM_SLOTS=self.random_slots,
            EVEN_N=self.kv_len % cfg.block_n == 0, DOT_PRECISION=_dot_precision(q),
            num_warps=cfg.num_warps, num_stages=cfg.num_stages,
        )
        return o, lse

    def backward(self, q, k, v, o, lse, do, dlse, scale):
        B, H, Lq, D = q.shape
        HKV = k.shape[1]
        cfg, lay = self.bwd_cfg, self.bwd_layout
        delta = _empty((B, H, Lq), torch.float32, q.device)
        self.module.attn_bwd_preprocess[(triton.cdiv(Lq, 64) * B * H,)](
            o, do, dlse if dlse is not None else delta, delta, *o.stride(), *do.stride(), H, Lq,
            HEAD_DIM=D, D_PAD=self.d_pad, BLOCK_M=64, HAS_DLSE=dlse is not None,
        )
        dq = _empty(q.shape, q.dtype, q.device)
        dk = _empty(k.shape, k.dtype, k.device)
        dv = _empty(v.shape, v.dtype, v.device)
        common = dict(HEAD_DIM=D, D_PAD=self.d_pad, BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n,
                      RANDOM_SLOTS=self.random_slots,
                      EVEN_N=self.kv_len % cfg.block_n == 0, DOT_PRECISION=_dot_precision(q),
                      num_warps=cfg.num_warps, num_stages=cfg.num_stages)
        qk_scale = scale * 1.4426950408889634
        self.module.attn_bwd_dkdv[(lay.num_kv_blocks * B * HKV,)](
            q, k, v, do, dk, dv, lse, delta, self.params,
            lay.full_t.offsets, lay.full_t.indices, lay.partial_t.offsets, lay.partial_t.indices,
            *q.stride(), *k.stride(), *v.stride(), *do.stride(), *dk.stride(), *dv.stride(),
            HKV, H // HKV, Lq, self.kv_len, qk_scale, scale, **common,
            WIDE_ROWS=max(q.stride(2), do.stride(2)) * (Lq + cfg.block_m) >= WIDE_ROW_OFFSETS,
        )
        self.module.attn_bwd_dq[(lay.num_q_blocks * B * H,)](
            q, k, v, do, dq, lse, delta, self.params,
            lay.full.offsets, lay.full.indices, lay.partial.offsets, lay.partial.indices,
            *q.stride(), *k.stride(), *v.stride(), *do.stride(), *dq.stride(),
            H, H // HKV, Lq, self.kv_len, qk_scale, scale, **common,
        )
        return dq, dk, dv


@functools.lru_cache(maxsize=512)
def _shared_plan(*key) -> _Plan:
    """Plans shared by every module of the same pattern (e.g. one per layer of a model)."""
    return _Plan(*key)


def _dot_precision(q) -> str:
    """fp32 dots use TF32 exactly when torch's matmuls would (read at each call, as torch does)."""
    tf32 = q.dtype == torch.float32 and q.is_cuda and torch.backends.cuda.matmul.allow_tf32
    return "tf32" if tf32 else "ieee"


def _on(device):
    """Launch on the tensors' GPU, whatever the current device is."""
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


def _empty(shape, dtype, device):
    """Output allocation (tests replace it with NaN-filled buffers to catch unwritten elements)."""
    return torch.empty(shape, dtype=dtype, device=device)


class _SparseFlashAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, scale, plan):
        with _on(q.device):
            o, lse = plan.forward(q, k, v, scale)
        ctx.save_for_backward(q, k, v, o, lse)
        ctx.scale, ctx.plan = scale, plan
        return o, lse

    @staticmethod
    def backward(ctx, do, dlse):
        q, k, v, o, lse = ctx.saved_tensors
        if dlse is not None:
            dlse = dlse.contiguous()  # the kernels index it as a packed [B, H, Lq] array
        with _on(q.device):
            dq, dk, dv = ctx.plan.backward(q, k, v, o, lse, do, dlse, ctx.scale)
        return dq, dk, dv, None, None


# ------------------------------------------------------------------------ the module
class PatternAttention(torch.nn.Module):
    """Sparse attention for one pattern, with `torch.nn.functional.scaled_dot_product_attention`
    conventions. Build it with `attention_from`.

    ``forward(q, k, v, *, scale=None, return_lse=False)``: q ``[B, Hq, Lq, D]``, k and v
    ``[B, Hkv, Lk, D]`` with ``Hq % Hkv == 0`` (GQA), fp16 / bf16 / fp32, any strides.
    Returns ``[B, Hq, Lq, D]`` (and the float32 natural-log log-sum-exp ``[B, Hq, Lq]``,
    differentiable, with ``return_lse=True``). Rows that attend nothing give 0 and -inf.
    """

    def __init__(self, pattern: Pattern, block_m: int | None = None, block_n: int | None = None,
                 num_warps: int | None = None, num_stages: int | None = None):
        super().__init__()
        self.pattern = pattern
        self.tiles = dict(block_m=block_m, block_n=block_n, num_warps=num_warps, num_stages=num_stages)
        self._plans: dict = {}

    def extra_repr(self) -> str:
        return f"pattern={str(self.pattern)!r}"

    def forward(self, q, k, v, *, scale=None, return_lse=False):
        scale = _check_inputs(q, k, v, scale)
        if q.numel() == 0:
            o = q.new_zeros(q.shape).requires_grad_(q.requires_grad)
            return (o, q.new_full(q.shape[:3], -math.inf, dtype=torch.float32)) if return_lse else o
        if q.is_cuda or (q.device.type == "cpu" and _interpreting()):
            plan = self._plan(q, k)
            o, lse = _SparseFlashAttention.apply(q, k, v, scale, plan)
        else:
            o, lse = chunked_attention(q, k, v, self.pattern, scale)
        return (o, lse) if return_lse else o

    def _plan(self, q, k) -> _Plan:
        key = (q.device, q.dtype, q.shape[3], q.shape[2], k.shape[2])
        plan = self._plans.get(key)
        if plan is None:
            plan = self._plans[key] = self._make_plan(q, k)
        return plan

    def _make_plan(self, q, k) -> _Plan:
        D = q.shape[3]
        if D > MAX_HEAD_DIM:
            raise PatterncError(f"q has head dim {D}; the kernels support head dims up to {MAX_HEAD_DIM}")
        fwd, bwd = default_configs(q.device, D, q.dtype)
        overrides = {k: v for k, v in self.tiles.items() if v is not None}
        fwd, bwd = dataclasses.replace(fwd, **overrides), dataclasses.replace(bwd, **overrides)
        return _shared_plan(self.pattern, q.shape[2], k.shape[2], q.device, D, fwd, bwd)


def attention_from(pattern, **options) -> PatternAttention:
    """A `torch.nn.Module` computing attention restricted to ``pattern`` (a text or `Pattern`).

    Options: ``block_m``, ``block_n`` (tile sizes, powers of two >= 16), ``num_warps``,
    ``num_stages`` (GPU launch settings); defaults are chosen per device, dtype and head dim.

    >>> import torch, patternc
    >>> attn = patternc.attention_from("global(first) + window(129)")
    >>> q = k = v = torch.randn(1, 2, 300, 64)
    >>> attn(q, k, v).shape
    torch.Size([1, 2, 300, 64])
    """
    pattern = as_pattern(pattern)
    known = ("block_m", "block_n", "num_warps", "num_stages")
    for name, value in options.items():
        if name not in known:
            raise PatterncError(f"unknown option {name!r} for attention_from (expected one of {', '.join(known)})")
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise PatterncError(f"option {name} must be a positive integer, got {value!r}")
        if name.startswith("block_") and (value < 16 or value & (value - 1)):
            raise PatterncError(f"option {name} must be a power of two >= 16, got {value}")
    return PatternAttention(pattern, **options)


# ----------------------------------------------------------------------- references
def _expand_kv(q, t):
    group = q.shape[1] // t.shape[1]
    return t.repeat_interleave(group, dim=1) if group > 1 else t


def _masked_attention(q, k, v, mask, scale):
    """Dense masked softmax attention in q's dtype; rows with no keys give 0 and -inf.

    Written so that fully masked rows stay NaN-free in backward too (no -inf - -inf)."""
    s = (torch.matmul(q, k.transpose(-1, -2)) * scale).masked_fill(~mask, -math.inf)
    s_max = s.amax(dim=-1, keepdim=True).detach()  # softmax is shift-invariant: exact gradients
    s_max = torch.where(torch.isinf(s_max), 0.0, s_max)
    p = torch.exp(s - s_max)
    l = p.sum(dim=-1, keepdim=True)
    empty = l == 0
    l_use = torch.where(empty, 1.0, l)
    lse = torch.where(empty, -math.inf, s_max + torch.log(l_use)).squeeze(-1)
    return torch.matmul(p / l_use, v), lse


def reference_attention(q, k, v, pattern, scale=None) -> torch.Tensor:
    """Dense masked attention with ``pattern`` (a text or `Pattern`), for golden tests.

    Materializes the ``[Lq, Lk]`` mask from `Pattern.dense_mask`; computes in float64 if
    any input is float64, else float32; returns q's dtype. GQA as in `attention_from`.
    Rows that attend nothing give 0 (where SDPA would give NaN).
    """
    pattern = as_pattern(pattern)
    scale = _check_inputs(q, k, v, scale, dtypes=_DTYPES + (torch.float64,))
    math_dtype = torch.float64 if q.dtype == torch.float64 else torch.float32
    mask = pattern.dense_mask(q.shape[2], k.shape[2], device=q.device)
    k, v = _expand_kv(q, k), _expand_kv(q, v)
    o, _ = _masked_attention(q.to(math_dtype), k.to(math_dtype), v.to(math_dtype), mask, scale)
    return o.to(q.dtype)


def chunked_attention(q, k, v, pattern: Pattern, scale: float, budget: int = 1 << 24):
    """Masked attention over query chunks of at most ``budget`` scores each: the CPU path
    without Triton. Differentiable; each chunk is recomputed in backward (checkpointed), so
    memory stays O(chunk x Lk) rather than O(Lq x Lk). Returns (out, natural-log lse)."""
    B, H, Lq, _ = q.shape
    Lk = k.shape[2]
    k, v = _expand_kv(q, k), _expand_kv(q, v)
    math_dtype = torch.float32 if q.dtype != torch.float64 else torch.float64
    rows = max(1, budget // max(1, B * H * Lk))
    j = torch.arange(Lk, device=q.device).unsqueeze(0)
    outs, lses = [], []

    def chunk(qc, i0):
        i = torch.arange(i0, i0 + qc.shape[2], device=q.device).unsqueeze(1)
        mask = pattern.mask(i, j, Lq, Lk)
        o, lse = _masked_attention(qc.to(math_dtype), k.to(math_dtype), v.to(math_dtype), mask, scale)
        return o.to(q.dtype), lse.float()

    needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v))
    for i0 in range(0, Lq, rows):
        qc = q[:, :, i0 : i0 + rows]
        if needs_grad:
            o, lse = torch.utils.checkpoint.checkpoint(chunk, qc, i0, use_reentrant=False)
        else:
            o, lse = chunk(qc, i0)
        outs.append(o)
        lses.append(lse)
    return torch.cat(outs, dim=2), torch.cat(lses, dim=2)
