"""Dense references (torch only): `reference_attention` for golden tests, and
`chunked_attention`, the memory-bounded path for CPU tensors without the kernels."""

from __future__ import annotations

import math

import torch
import torch.utils.checkpoint

from .inputs import DTYPES, check_inputs
from .lang import as_pattern
from .resolve import Resolved


def _expand_kv(q, t):
    group = q.shape[1] // t.shape[1]
    return t.repeat_interleave(group, dim=1) if group > 1 else t


def masked_attention(q, k, v, mask, scale):
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


def reference_attention(q, k, v, pattern, scale=None, q_offset: int | None = None) -> torch.Tensor:
    """Dense masked attention with ``pattern`` (a text or `Pattern`), for golden tests.

    Materializes the ``[Lq, Lk]`` mask from `Pattern.dense_mask`; computes in float64 if
    any input is float64, else float32; returns q's dtype. GQA as in `attention_from`.
    Rows that attend nothing give 0 (where SDPA would give NaN).
    """
    pattern = as_pattern(pattern)
    scale = check_inputs(q, k, v, scale, dtypes=DTYPES + (torch.float64,))
    math_dtype = torch.float64 if q.dtype == torch.float64 else torch.float32
    if k.shape[2] == 0 or q.shape[2] == 0:  # no keys: every row attends nothing
        return torch.zeros_like(q)
    mask = pattern.dense_mask(q.shape[2], k.shape[2], device=q.device, q_offset=q_offset)
    k, v = _expand_kv(q, k), _expand_kv(q, v)
    o, _ = masked_attention(q.to(math_dtype), k.to(math_dtype), v.to(math_dtype), mask, scale)
    return o.to(q.dtype)


def chunked_attention(q, k, v, ctx: Resolved, scale: float, budget: int = 1 << 24):
    """Masked attention over query chunks of at most ``budget`` scores each (``ctx``: the pattern
    at these lengths). Differentiable; each chunk is recomputed in backward (checkpointed), so
    memory stays O(chunk x Lk) rather than O(Lq x Lk). Returns (out, natural-log lse)."""
    B, H, Lq, _ = q.shape
    Lk = k.shape[2]
    k, v = _expand_kv(q, k), _expand_kv(q, v)
    math_dtype = torch.float32 if q.dtype != torch.float64 else torch.float64
    rows = max(1, budget // max(1, B * H * Lk))
    j = torch.arange(Lk, device=q.device).unsqueeze(0)

    def chunk(qc, i0):
        mask = ctx.rows(i0, i0 + qc.shape[2]).mask(torch.arange(qc.shape[2], device=q.device).unsqueeze(1), j)
        o, lse = masked_attention(qc.to(math_dtype), k.to(math_dtype), v.to(math_dtype), mask, scale)
        return o.to(q.dtype), lse.float()

    needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v))
    outs, lses = [], []
    for i0 in range(0, Lq, rows):
        qc = q[:, :, i0 : i0 + rows]
        o, lse = torch.utils.checkpoint.checkpoint(chunk, qc, i0, use_reentrant=False) if needs_grad else chunk(qc, i0)
        outs.append(o)
        lses.append(lse)
    return torch.cat(outs, dim=2), torch.cat(lses, dim=2)


def chunked_attention_backward(q, k, v, o, lse, do, dlse, ctx: Resolved, scale: float, budget: int = 1 << 24):
    """Gradients ``(dq, dk, dv)`` of `chunked_attention` from its outputs, chunk by chunk (the
    FlashAttention-2 backward in torch: P = exp(S - LSE), dS = P * (dP - delta))."""
    B, H, Lq, D = q.shape
    Hkv, Lk = k.shape[1], k.shape[2]
    math_dtype = torch.float32 if q.dtype != torch.float64 else torch.float64
    ke, ve = (_expand_kv(q, t).to(math_dtype) for t in (k, v))
    delta = (do.to(math_dtype) * o.to(math_dtype)).sum(-1)
    if dlse is not None:
        delta = delta - dlse.to(math_dtype)
    lse = torch.where(torch.isinf(lse), math.inf, lse).to(math_dtype)  # rows with no keys: P = 0
    dq = torch.empty(q.shape, dtype=math_dtype, device=q.device)
    dk, dv = torch.zeros_like(ke), torch.zeros_like(ve)
    rows = max(1, budget // max(1, B * H * Lk))
    j = torch.arange(Lk, device=q.device).unsqueeze(0)
    for i0 in range(0, Lq, rows):
        sl = slice(i0, i0 + rows)
        qc, doc = q[:, :, sl].to(math_dtype), do[:, :, sl].to(math_dtype)
        mask = ctx.rows(i0, i0 + qc.shape[2]).mask(torch.arange(qc.shape[2], device=q.device).unsqueeze(1), j)
        s = (qc @ ke.transpose(-1, -2) * scale).masked_fill(~mask, -math.inf)
        p = torch.exp(s - lse[:, :, sl, None])
        ds = p * (doc @ ve.transpose(-1, -2) - delta[:, :, sl, None])
        dq[:, :, sl] = ds @ ke * scale
        dk += ds.transpose(-1, -2) @ qc * scale
        dv += p.transpose(-1, -2) @ doc
    group = H // Hkv
    dk, dv = (t.view(B, Hkv, group, Lk, D).sum(2) for t in (dk, dv))
    return dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype)
