"""`attention_from`: a pattern as a `torch.nn.Module` with SDPA conventions.

Where each call runs (chosen per call, from the tensors and the ``backend`` option):
- CUDA tensors: the generated Triton kernels.
- CPU tensors: the same kernels in Triton's interpreter with ``backend="kernels"`` (or when
  ``TRITON_INTERPRET=1`` is set at call time), else `chunked_attention`, a dense masked
  reference over query chunks with bounded memory.

The work happens in one custom operator (`patternc.ops.op`), so the module runs inside
``torch.compile(model, fullgraph=True)`` without a graph break; plain eager calls run the
same bodies through an autograd function, which costs less CPU per call (`op.entry`).
"""

from __future__ import annotations

import json
import math

import torch

from .errors import PatterncError, require_int
from .inputs import DTYPES, check_inputs
from .kernels import cache
from .lang import as_pattern
from .ops import launch, op
from .pattern import Pattern
from .plan import Options, check_options, plan_for

BACKENDS = ("auto", "kernels", "reference")


class PatternAttention(torch.nn.Module):
    """Sparse attention for one pattern, with `torch.nn.functional.scaled_dot_product_attention`
    conventions. Build it with `attention_from`.

    ``forward(q, k, v, *, scale=None, return_lse=False, q_offset=None)``: q ``[B, Hq, Lq, D]``,
    k and v ``[B, Hkv, Lk, D]`` with ``Hq % Hkv == 0`` (GQA: query head h uses kv head
    ``h // (Hq // Hkv)``), fp16 / bf16 / fp32, any strides. Query row ``i`` sits at position
    ``i + q_offset`` (default ``Lk - Lq``: the last query meets the last key, as in KV-cache
    decoding). Returns ``[B, Hq, Lq, D]`` (and the float32 natural-log log-sum-exp
    ``[B, Hq, Lq]``, differentiable, with ``return_lse=True``). Rows that attend nothing give
    0 and -inf. The module holds no state beyond its pattern and options: it copies, pickles
    and saves like any module; plans live in one bounded process-wide cache.
    """

    def __init__(self, pattern: Pattern, backend: str = "auto", **options):
        super().__init__()
        self.pattern = pattern
        self.backend = backend
        self.options: Options = options
        self._text = op.register(pattern)  # what the operator takes (plain strings trace well)
        self._options = json.dumps(options, sort_keys=True)

    def __setstate__(self, state):  # unpickled: register the pattern in this process too
        super().__setstate__(state)
        op.register(self.pattern)

    def extra_repr(self) -> str:
        return f"pattern={str(self.pattern)!r}"

    def forward(self, q, k, v, *, scale=None, return_lse=False, q_offset=None):
        scale = check_inputs(q, k, v, scale)
        if q_offset is not None:
            require_int("q_offset", q_offset, minimum=None)
        if q.numel() == 0 or k.shape[2] == 0:  # nothing to attend: rows of zeros, LSE -inf
            o = q.new_zeros(q.shape).requires_grad_(q.requires_grad)
            return (o, q.new_full(q.shape[:3], -math.inf, dtype=torch.float32)) if return_lse else o
        if self.backend == "kernels" and not q.is_cuda and not torch.compiler.is_compiling():
            cache.prepare(interpret=True)  # before the operator, whose first call imports Triton
        o, lse = op.entry(q)(q, k, v, self._text, scale, q_offset, self.backend, self._options)
        return (o, lse) if return_lse else o


def attention_from(pattern, backend: str = "auto", **options) -> PatternAttention:
    """A `torch.nn.Module` computing attention restricted to ``pattern`` (a text or `Pattern`).

    ``backend``: ``"auto"`` (kernels on CUDA; on the CPU the reference path, or the kernels in
    Triton's interpreter when ``TRITON_INTERPRET=1``), ``"kernels"`` (always the kernels: on
    the CPU, interpreted) or ``"reference"`` (CPU tensors: always the chunked reference).
    Options (`patternc.plan.Options`): ``block_m``, ``block_n`` (tile sizes, powers of two
    >= 16), ``num_warps``, ``num_stages``, ``max_registers`` (per thread; 0: the compiler's
    choice), each also ``fwd_``/``bwd_``-prefixed for one pass;
    defaults are chosen per device, dtype and head dim.

    >>> import torch, patternc
    >>> attn = patternc.attention_from("global(first) + window(129)")
    >>> q = k = v = torch.randn(1, 2, 300, 64)
    >>> attn(q, k, v).shape
    torch.Size([1, 2, 300, 64])
    """
    pattern = as_pattern(pattern)
    if backend not in BACKENDS:
        raise PatterncError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    return PatternAttention(pattern, backend, **check_options(options))


def precompile(pattern, q_shape, kv_shape=None, *, dtype=torch.bfloat16, device="cuda", backward: bool = True,
               q_offset: int | None = None, **options) -> None:
    """Compile ahead of time the kernels that ``attention_from(pattern, **options)`` launches on
    contiguous CUDA tensors q of ``q_shape`` ``[B, Hq, Lq, D]`` and k, v of ``kv_shape``
    (default ``q_shape``), and with ``backward`` those of its backward; no kernel runs (the
    plan's small tables are copied to the GPU).
    Give the model's head counts and head dim: the kernels are specialized on them (and on
    whether lengths are multiples of 16 and of the tile), not on the batch or the lengths.

    The kernels compile side by side in child processes into Triton's on-disk cache, so the
    first call of that structure, in this process or another one sharing the cache (a server's
    workers, a container built with the cache), only loads them. Other lengths of the same
    structure mostly reuse the same kernels. ``pattern``: a text, a `Pattern`, or a module from
    `attention_from` (its options are used). ``patternc compile --build`` does this from the
    command line. Needs a CUDA device: CPU calls run the kernels in Triton's interpreter,
    which compiles nothing.
    """
    if isinstance(pattern, PatternAttention):
        pattern, options = pattern.pattern, {**pattern.options, **options}
    pattern, options = as_pattern(pattern), check_options(options)
    if dtype not in DTYPES:
        allowed = ", ".join(f"torch.{str(d).removeprefix('torch.')}" for d in DTYPES)
        raise PatterncError(f"dtype must be one of {allowed}, got {dtype!r}")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        raise PatterncError(f"device must be a CUDA device such as 'cuda' or 'cuda:1', got {device!r}") from None
    if device.type != "cuda" or not torch.cuda.is_available():
        raise PatterncError(f"precompile needs a CUDA device, got device={str(device)!r}"
                            + ("" if torch.cuda.is_available() else " (no CUDA device is available)"))
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise PatterncError(f"device={str(device)!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    shapes = {}
    for name, shape in (("q_shape", q_shape), ("kv_shape", q_shape if kv_shape is None else kv_shape)):
        if not (isinstance(shape, (tuple, list, torch.Size)) and len(shape) == 4):
            raise PatterncError(f"{name} must be 4 sizes [batch, heads, length, head_dim], got {shape!r}")
        shapes[name] = tuple(require_int(f"{name}[{i}]", n, minimum=1) for i, n in enumerate(shape))
    if q_offset is not None:
        require_int("q_offset", q_offset, minimum=None)
    q = torch.empty(shapes["q_shape"], dtype=dtype, device="meta")
    k = torch.empty(shapes["kv_shape"], dtype=dtype, device="meta")
    scale = check_inputs(q, k, k, None)
    if device.index is None:  # the plan cache knows devices by index, as tensors name them
        device = torch.device("cuda", torch.cuda.current_device())
    cache.prepare(interpret=False)
    plan = plan_for(pattern, q.shape[2], k.shape[2], q_offset, device, dtype, q.shape[3], options,
                    q.shape[1] // k.shape[1])
    launch.precompile(plan, q, k, k, scale, device, backward)
