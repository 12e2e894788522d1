"""Validation of attention inputs: one check for every path (kernels, interpreter, reference)."""

from __future__ import annotations

import math

import torch

from .errors import PatterncError

DTYPES = (torch.float16, torch.bfloat16, torch.float32)
MAX_HEAD_DIM = 256


def check_inputs(q, k, v, scale, dtypes=DTYPES) -> float:
    """Check q ``[B, Hq, Lq, D]``, k and v ``[B, Hkv, Lk, D]`` (``Hq % Hkv == 0``) and the scale;
    return the scale to use (``D ** -0.5`` by default). Errors name the argument."""
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
    if not 1 <= q.shape[3] <= MAX_HEAD_DIM:
        raise PatterncError(f"q has head dim {q.shape[3]}; head dims from 1 to {MAX_HEAD_DIM} are supported")
    if k.shape[1] == 0 or q.shape[1] % k.shape[1]:
        raise PatterncError(
            f"q has {q.shape[1]} heads, which is not a multiple of k's {k.shape[1]} heads "
            "(grouped-query attention needs Hq % Hkv == 0)"
        )
    if scale is not None and (not isinstance(scale, (int, float)) or isinstance(scale, bool) or not math.isfinite(scale)):
        raise PatterncError(f"scale must be a finite float or None, got {scale!r}")
    return q.shape[3] ** -0.5 if scale is None else float(scale)
