"""patternc attention as PyTorch custom operators, so `torch.compile` sees one opaque op.

``torch.ops.patternc.attention(q, k, v, pattern, scale, q_offset, backend, options)`` returns
``(out, lse)``; its backward is ``torch.ops.patternc.attention_backward``. Both take the
pattern as its canonical text and the tile options as JSON, and find their `KernelPlan` in
the plan cache at run time: nothing shape-specific is baked into a compiled graph, so a new
sequence length of a seen pattern reuses the graph (after at most one recompilation, when
the length becomes a dynamic dimension). Fake (meta) implementations give the output shapes.

Where an op runs (decided inside it, per call): CUDA tensors → the Triton kernels; CPU
tensors → the kernels in Triton's interpreter with ``backend="kernels"`` (or when
``TRITON_INTERPRET=1`` is set), else the chunked dense reference.

Plain eager calls (`entry`) run the same bodies through a `torch.autograd.Function`,
`attention_eager`: the custom-op machinery (schema parsing, dispatch, alias checks) costs
~90 us per call on a GPU host, as much as a small kernel (benchmarks/overhead.py).
"""

from __future__ import annotations

import functools
import json
import os
import weakref

import torch
from torch.autograd.function import once_differentiable

from ..lang import parse
from ..pattern import Pattern
from ..plan import plan_for
from ..reference import chunked_attention, chunked_attention_backward
from . import launch

_PATTERNS: weakref.WeakValueDictionary[str, Pattern] = weakref.WeakValueDictionary()


def register(pattern: Pattern) -> str:
    """The text the ops take for ``pattern``; the object itself is kept (weakly) so that
    errors found at run time still point into the user's own text."""
    text = str(pattern)
    _PATTERNS.setdefault(text, pattern)
    return text


def _pattern(text: str) -> Pattern:
    pattern = _PATTERNS.get(text)
    return pattern if pattern is not None else parse(text)


def _use_kernels(q: torch.Tensor, backend: str) -> bool:
    if backend != "auto":
        return backend == "kernels"
    return q.is_cuda or os.environ.get("TRITON_INTERPRET", "").lower() in ("1", "true", "on", "yes")


def _plan(q, k, pattern: str, q_offset, options: str):
    return plan_for(_pattern(pattern), q.shape[2], k.shape[2], q_offset, q.device, q.dtype, q.shape[3],
                    _options(options), q.shape[1] // k.shape[1])


@functools.lru_cache(maxsize=64)
def _options(text: str) -> dict:
    """The tile options' JSON, parsed once (the dict is shared: read, never changed)."""
    return json.loads(text)


def _forward(q, k, v, pattern, scale, q_offset, backend, options, grads=False, plan=None):
    """``plan``: the call's plan, where the caller looked it up already."""
    if _use_kernels(q, backend):
        return launch.forward(plan or _plan(q, k, pattern, q_offset, options), q, k, v, scale, grads)
    ctx = _pattern(pattern).resolve(q.shape[2], k.shape[2], q_offset)
    out, lse = chunked_attention(q, k, v, ctx, scale)
    return out.contiguous(), lse.contiguous()  # the layout register_fake promises, whatever q's strides


def _backward(q, k, v, o, lse, do, dlse, pattern, scale, q_offset, backend, options, plan=None):
    if _use_kernels(q, backend):
        return launch.backward(plan or _plan(q, k, pattern, q_offset, options), q, k, v, o, lse, do, dlse, scale)
    ctx = _pattern(pattern).resolve(q.shape[2], k.shape[2], q_offset)
    return tuple(g.contiguous() for g in chunked_attention_backward(q, k, v, o, lse, do, dlse, ctx, scale))


def _grads(backward, saved, args, do, dlse):
    """The inputs' gradients from the outputs' (either may be None: that output was unused)."""
    q, k, v, o, lse = saved
    do = torch.zeros_like(o) if do is None else do
    dlse = None if dlse is None else dlse.contiguous()  # the kernels index it as a packed [B, H, Lq] array
    return (*backward(q, k, v, o, lse, do, dlse, *args), None, None, None, None, None)


@torch.library.custom_op("patternc::attention", mutates_args=())
def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, pattern: str, scale: float,
              q_offset: int | None, backend: str, options: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(out [B, Hq, Lq, D], natural-log lse [B, Hq, Lq] float32)``."""
    return _forward(q, k, v, pattern, scale, q_offset, backend, options)


@attention.register_fake
def _(q, k, v, pattern, scale, q_offset, backend, options):
    return q.new_empty(q.shape), q.new_empty(q.shape[:3], dtype=torch.float32)


@torch.library.custom_op("patternc::attention_backward", mutates_args=())
def attention_backward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, o: torch.Tensor, lse: torch.Tensor,
                       do: torch.Tensor, dlse: torch.Tensor | None, pattern: str, scale: float,
                       q_offset: int | None, backend: str, options: str
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(dq, dk, dv)``; dk and dv summed over each GQA group."""
    return _backward(q, k, v, o, lse, do, dlse, pattern, scale, q_offset, backend, options)


@attention_backward.register_fake
def _(q, k, v, o, lse, do, dlse, pattern, scale, q_offset, backend, options):
    # contiguous, as both paths return them (inductor asserts the strides a fake promises)
    return q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape)


def _setup_context(ctx, inputs, output):
    q, k, v, *args = inputs
    ctx.save_for_backward(q, k, v, *output)
    ctx.args = args


def _op_backward(ctx, do, dlse):
    return _grads(attention_backward, ctx.saved_tensors, ctx.args, do, dlse)


attention.register_autograd(_op_backward, setup_context=_setup_context)


class _Eager(torch.autograd.Function):
    """The custom op's forward and backward bodies, without the custom-op machinery."""

    @staticmethod
    def forward(ctx, q, k, v, grads, *args):
        ctx.set_materialize_grads(False)  # unused outputs' gradients stay None, as with the custom op
        pattern, _, q_offset, backend, options = args
        ctx.plan = _plan(q, k, pattern, q_offset, options) if _use_kernels(q, backend) else None  # backward's too
        out, lse = _forward(q, k, v, *args, grads=grads, plan=ctx.plan)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.args = args
        return out, lse

    @staticmethod
    @once_differentiable  # as the custom op: no second derivative (an error, never a silent wrong one)
    def backward(ctx, do, dlse):
        body = functools.partial(_backward, plan=ctx.plan)
        dq, dk, dv, *rest = _grads(body, ctx.saved_tensors, ctx.args, do, dlse)
        return dq, dk, dv, None, *rest


def attention_eager(q, k, v, pattern: str, scale: float, q_offset: int | None, backend: str, options: str):
    """What ``torch.ops.patternc.attention`` computes, with the same gradients, at less CPU cost
    per call; for plain eager calls (see `entry`)."""
    grads = torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad)
    return _Eager.apply(q, k, v, grads, pattern, scale, q_offset, backend, options)  # grads: a backward may follow


def entry(q: torch.Tensor):
    """The attention function for a call with query ``q``: the custom op where PyTorch traces or
    fakes tensors (`torch.compile`, a dispatch mode such as FakeTensorMode or make_fx, tensor
    subclasses), which need its fake implementation; else `attention_eager`."""
    traced = (torch.compiler.is_compiling() or type(q) is not torch.Tensor
              or torch._C._len_torch_dispatch_stack() > 0)
    return torch.ops.patternc.attention if traced else attention_eager
