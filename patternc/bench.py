"""`patternc bench`: a pattern's attention timed against what a user could run instead.

For one pattern and shape on this machine: patternc (`attention_from`), SDPA with the pattern's
dense boolean mask (while ``Lq x Lk`` fits `MASK_LIMIT`), SDPA's own kernels for `causal` and
`all` at Lq == Lk (flash and cuDNN on CUDA, math on the CPU), and, on CUDA, FlexAttention
compiled with the pattern's BlockMask (`Pattern.to_flex`). Each method's output and gradients
are checked against patternc's before it is timed; times are medians of ``torch.utils.benchmark``
(which synchronizes CUDA), forward and forward+backward; useful TFLOP/s count attended pairs
only (forward 4, backward 10 multiply-adds x2 per pair and head dim). Also per method: what it
builds from the pattern first (patternc's layout at 128x128 blocks, as benchmarks/run.py
times it; flex's BlockMask; SDPA's dense mask),
its first forward call (compilation included) and, on CUDA, a forward+backward's peak memory.
The whole table of issue 8 is benchmarks/run.py.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.nn.attention import sdpa_kernel
from torch.utils import benchmark

from .kernels import parallel
from .nn import attention_from
from .pattern import Pattern

MASK_LIMIT = 2**28  # SDPA with a dense mask: at most this many (query, key) pairs (256 MiB of bool)


@dataclass(frozen=True)
class Row:
    method: str
    fwd_ms: float | None = None
    fb_ms: float | None = None
    rel_err: float | None = None  # worst of the output's and the gradients' against patternc's
    build_ms: float | None = None  # what the method builds from the pattern: layout, BlockMask, dense mask
    first_s: float | None = None  # the first forward call, compilation included
    peak_mib: float | None = None  # CUDA: memory a forward+backward allocates at its peak
    note: str = ""


def _median_ms(fn, seconds: float) -> float:
    return benchmark.Timer("fn()", globals={"fn": fn}).blocked_autorange(min_run_time=seconds).median * 1e3


def _timed(fn):
    """(fn(), wall ms), synchronized on CUDA."""
    _sync()
    start = time.perf_counter()
    result = fn()
    _sync()
    return result, (time.perf_counter() - start) * 1e3


def _sync() -> None:
    if torch.cuda.is_initialized():
        torch.cuda.synchronize()


def _methods(pattern: Pattern, q, k, v):
    """[(name, forward function or the reason it cannot run, the SDPA backend it needs or None,
    build ms)]."""
    q_len, kv_len, gqa = q.shape[2], k.shape[2], q.shape[1] != k.shape[1]
    attn = attention_from(pattern)
    _, build = _timed(lambda: pattern.layout(q_len, kv_len, 128, 128))
    yield "patternc", lambda: attn(q, k, v), None, build
    if q_len * kv_len <= MASK_LIMIT:
        mask, build = _timed(lambda: pattern.dense_mask(q_len, kv_len, device=q.device))
        yield "sdpa-mask", lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=gqa), None, build
    else:
        yield "sdpa-mask", f"skipped: a dense mask of {q_len} x {kv_len} is over {MASK_LIMIT} pairs", None, None
    if str(pattern) in ("causal", "all") and q_len == kv_len:  # what users of SDPA run for these
        from torch.nn.attention import SDPBackend

        backends = ((("sdpa-flash", SDPBackend.FLASH_ATTENTION), ("sdpa-cudnn", SDPBackend.CUDNN_ATTENTION))
                    if q.is_cuda else (("sdpa-math", SDPBackend.MATH),))
        causal = str(pattern) == "causal"
        for name, backend in backends:  # `run` restricts SDPA to the backend while it checks and times
            yield name, lambda: F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=gqa), backend, None
    if not q.is_cuda:
        yield "flex", "skipped: compiled FlexAttention needs a GPU", None, None
        return
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    block_mask, build = _timed(lambda: create_block_mask(pattern.to_flex(q_len, kv_len, q.device), None, None, q_len,
                                                         kv_len, device=q.device))
    flex = torch.compile(flex_attention, dynamic=False)
    yield "flex", lambda: flex(q, k, v, block_mask=block_mask, enable_gqa=gqa), None, build


def _rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    return ((got - want).norm() / want.norm().clamp_min(1e-30)).item()


def run(pattern: Pattern, q_len: int, kv_len: int | None = None, *, batch: int = 2, heads: int = 16,
        kv_heads: int | None = None, head_dim: int = 128, dtype=torch.bfloat16, device="cuda",
        backward: bool = True, seed: int = 0, seconds: float = 0.5) -> list[Row]:
    """One `Row` per method on inputs drawn from ``seed``. Each method's output (and, with
    ``backward``, its gradients) is checked against patternc's before it is timed."""
    kv_len = q_len if kv_len is None else kv_len
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, heads, q_len, head_dim, generator=gen)
    k, v = (torch.randn(batch, kv_heads or heads, kv_len, head_dim, generator=gen) for _ in range(2))
    d_out = torch.randn(q.shape, generator=gen).to(device, dtype)
    q, k, v = (t.to(device, dtype).requires_grad_(backward) for t in (q, k, v))
    with torch.cuda.device(q.device) if q.is_cuda else contextlib.nullcontext():  # synchronize, peaks: q's GPU
        return _run(pattern, q, k, v, d_out, backward, seconds)


def _run(pattern, q, k, v, d_out, backward, seconds) -> list[Row]:
    rows, want = [], None
    for name, fn, backend, build_ms in _methods(pattern, q, k, v):
        if isinstance(fn, str):
            rows.append(Row(name, note=fn))
            continue

        def step(fn=fn):
            return torch.autograd.grad(fn(), (q, k, v), d_out)

        with sdpa_kernel(backend) if backend else contextlib.nullcontext():
            try:
                out, first = _timed(fn)
                grads = torch.autograd.grad(out, (q, k, v), d_out) if backward else ()
                if parallel.pending():  # patternc's first calls ran its interim kernels: check and time its own
                    parallel.wait()
                    out = fn()
                    grads = torch.autograd.grad(out, (q, k, v), d_out) if backward else ()
            except Exception as exc:  # an unsupported shape or dtype in one method must not hide the others
                rows.append(Row(name, note=f"failed: {type(exc).__name__}: {str(exc)[:120]}"))
                continue
            # SDPA gives NaN rows where a query attends nothing, patternc 0; and then NaN gradients
            got = [out.float().nan_to_num(), *(g.float() for g in grads)]
            note = "" if all(g.isfinite().all() for g in got[1:]) else "gradients not compared: NaN"
            want = got if want is None else want
            err = max(_rel_err(a, b) for a, b in zip(got if not note else got[:1], want))
            fwd = _median_ms(fn, seconds)
            fb = _median_ms(step, seconds) if backward else None
            peak = None
            if q.is_cuda:
                _sync()
                torch.cuda.reset_peak_memory_stats()
                base = torch.cuda.memory_allocated()
                step() if backward else fn()
                _sync()
                peak = (torch.cuda.max_memory_allocated() - base) / 2**20
        rows.append(Row(name, fwd, fb, err, build_ms, first / 1e3, peak, note))
    return rows


def table(rows: list[Row], pairs: int, head_dim: int) -> str:
    """Markdown: build and first-call times, times, patternc's speedup over each method, useful
    TFLOP/s, peak memory, the check against patternc."""
    base = rows[0]

    def tflops(ms, per_pair):
        return f"{per_pair * pairs * head_dim / (ms * 1e-3) / 1e12:.3g}" if ms else "-"

    def ratio(a, b):
        return f"{a / b:.2f}x" if a and b else "-"

    def num(x, fmt):
        return "-" if x is None else format(x, fmt)

    lines = ["| method | build ms | first call s | fwd ms | fwd+bwd ms | fwd TF/s | fwd+bwd TF/s | "
             "patternc speedup fwd / fwd+bwd | peak MiB | check |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r.fwd_ms is None:
            lines.append(f"| {r.method} | - | - | - | - | - | - | - | - | {r.note} |")
            continue
        check = "reference" if r is base else f"{'ok' if r.rel_err < 2e-2 else 'DIFFERS'} {r.rel_err:.1e}"
        lines.append(f"| {r.method} | {num(r.build_ms, '.2f')} | {num(r.first_s, '.3g')} | {r.fwd_ms:.3f} | "
                     f"{num(r.fb_ms, '.3f')} | {tflops(r.fwd_ms, 4)} | {tflops(r.fb_ms, 14)} | "
                     f"{ratio(r.fwd_ms, base.fwd_ms)} / {ratio(r.fb_ms, base.fb_ms)} | {num(r.peak_mib, '.0f')} | "
                     f"{check}{'; ' + r.note if r.note else ''} |")
    return "\n".join(lines)
