"""The golden comparison behind `patternc check`: generated kernels vs dense float64
attention on random inputs, forward and all three gradients."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .nn import attention_from
from .pattern import Pattern
from .reference import reference_attention

#: Relative-error-norm tolerances: fp32 with IEEE dots, fp16, bf16.
TOLERANCES = {torch.float32: 1e-4, torch.float16: 2e-3, torch.bfloat16: 1e-2}


@dataclass(frozen=True)
class Row:
    name: str
    max_abs: float
    rel: float
    tol: float

    @property
    def ok(self) -> bool:
        return self.rel <= self.tol  # False for NaN too


def compare(pattern: Pattern, q_len: int, kv_len: int | None = None, *, batch: int = 1, heads: int = 2,
            kv_heads: int | None = None, head_dim: int = 64, dtype=torch.float16, device="cpu",
            seed: int = 0, **options) -> list[Row]:
    """Errors of O, dQ, dK, dV (relative error norm and max abs) against float64 attention,
    on inputs drawn from ``seed`` (a private generator: the global RNG is left alone)."""
    kv_len = q_len if kv_len is None else kv_len
    gen = torch.Generator().manual_seed(seed)
    shapes = {"q": (batch, heads, q_len, head_dim), "k": (batch, kv_heads or heads, kv_len, head_dim)}
    q, k, v = (torch.randn(shapes["q" if n == "q" else "k"], generator=gen) for n in "qkv")
    d_out = torch.randn(shapes["q"], generator=gen)
    inputs = [t.to(device, dtype).requires_grad_() for t in (q, k, v)]
    out = attention_from(pattern, backend="kernels", **options)(*inputs)
    grads = torch.autograd.grad(out, inputs, d_out.to(device, dtype))
    exact = [t.detach().double().requires_grad_() for t in inputs]
    ref = reference_attention(*exact, pattern)
    ref_grads = torch.autograd.grad(ref, exact, d_out.to(device, torch.float64))
    rows = []
    for name, got, want in zip(("O", "dQ", "dK", "dV"), (out, *grads), (ref, *ref_grads)):
        diff = got.double() - want
        denom = want.norm().item()
        rel = diff.norm().item() / denom if denom > 0 else diff.norm().item()
        rows.append(Row(name, diff.abs().max().item(), rel, TOLERANCES[dtype]))
    return rows


def table(rows: list[Row]) -> str:
    lines = [f"{'tensor':<7}{'max abs err':>13}{'rel err':>11}{'tolerance':>11}  ok"]
    for r in rows:
        lines.append(f"{r.name:<7}{r.max_abs:>13.2e}{r.rel:>11.2e}{r.tol:>11.0e}  {'yes' if r.ok else 'NO'}")
    return "\n".join(lines)
