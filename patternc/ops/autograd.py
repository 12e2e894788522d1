"""The autograd Function over the kernels: forward saves (q, k, v, O, LSE); backward
recomputes the probabilities tile by tile (O(N) memory)."""

from __future__ import annotations

import torch

from . import launch


class SparseFlashAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, scale, plan):
        o, lse = launch.forward(plan, q, k, v, scale)
        ctx.save_for_backward(q, k, v, o, lse)
        ctx.scale, ctx.plan = scale, plan
        return o, lse

    @staticmethod
    def backward(ctx, do, dlse):
        q, k, v, o, lse = ctx.saved_tensors
        if dlse is not None:
            dlse = dlse.contiguous()  # the kernels index it as a packed [B, H, Lq] array
        dq, dk, dv = launch.backward(ctx.plan, q, k, v, o, lse, do, dlse, ctx.scale)
        return dq, dk, dv, None, None
