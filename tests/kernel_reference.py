"""Independent float64 dense attention for golden kernel tests (shares no code with
patternc.runtime): masked softmax written out, fully masked rows giving 0 and -inf."""

import math

import torch


def dense_attention(q, k, v, mask, scale):
    """q [B, H, Lq, D], k/v [B, Hkv, Lk, D], mask [Lq, Lk] bool → (out, natural-log lse), float64."""
    q, k, v = q.double(), k.double(), v.double()
    group = q.shape[1] // k.shape[1]
    k = k.repeat_interleave(group, dim=1)
    v = v.repeat_interleave(group, dim=1)
    s = torch.einsum("bhid,bhjd->bhij", q, k) * scale
    row_max = torch.where(mask, s, -math.inf).amax(-1, keepdim=True)
    row_max = torch.where(torch.isfinite(row_max), row_max, 0.0).detach()
    e = torch.where(mask, torch.exp(torch.where(mask, s - row_max, 0.0)), 0.0)
    total = e.sum(-1, keepdim=True)
    attended = total > 0
    p = e / torch.where(attended, total, 1.0)
    out = torch.einsum("bhij,bhjd->bhid", p, v)
    lse = torch.where(attended, row_max + torch.log(torch.where(attended, total, 1.0)), -math.inf)
    return out, lse.squeeze(-1)


def rel_err(got, ref):
    """Relative error norm ||got - ref|| / ||ref|| in float64 (0 when both are 0; NaN fails)."""
    got, ref = got.double(), ref.double()
    if not torch.isfinite(got).all():
        return math.inf
    denom = ref.norm().item()
    diff = (got - ref).norm().item()
    return diff / denom if denom > 0 else diff
