"""Stage 6, codegen: a pattern's structure → a Triton kernel module on disk, imported.

The generated module is `kernel_template.py` (forward, delta preprocess, dK/dV and dQ
kernels) with one generated function in it, ``pattern_mask``: the pattern's predicate on a
tile, emitted from the pattern tree as Triton expressions. Only the tree's *structure*
(component kinds, how they combine, how many global selectors) shapes the source. Every
value (window bounds, global intervals, random tables) lives in an int32 tensor PARAMS that
`params` fills for each (Lq, Lk), so ``window(129)`` and ``window(257)`` share one kernel.
Numbers that do reach the source are offsets into PARAMS, emitted from Python ints; no
user text is ever pasted into the source (the pattern's text appears only in comments,
through `repr`-free canonical forms that contain no newlines).

Modules are written to the cache directory (``PATTERNC_CACHE_DIR``, else
``$XDG_CACHE_HOME/patternc`` or ``~/.cache/patternc``) as ``patternc_<hash>.py``, the hash
being of the generator version and the whole source, written atomically (temp file +
rename) so concurrent processes never see a partial file, and imported from there
(Triton reads kernel source from real files).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import sys
import tempfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import torch

from . import __version__
from .errors import PatterncError
from .pattern import All, Causal, Global, Intersect, Node, Pattern, Random, Union, Window
from .pattern import global_intervals, random_table, walk

GENERATOR_VERSION = 4
_MARKER = "# @@pattern_mask@@"


@dataclass(frozen=True)
class KernelSource:
    """A generated module: its text, content hash and the structure it implements."""

    text: str
    digest: str
    structure: str

    @property
    def module_name(self) -> str:
        return f"patternc_{self.digest[:24]}"


# ------------------------------------------------------------------------- the emitter
class _Emitter:
    """Walks the tree once, left to right, emitting Triton lines and PARAMS slots.

    The same walk order is used by `params`, so slot offsets always agree with the code.
    """

    def __init__(self):
        self.lines: list[str] = []
        self.slots: list[tuple[Node, int]] = []  # (atom, first PARAMS offset), walk order
        self.size = 0  # scalar slots used so far
        self.names = 0

    def scalars(self, node: Node, count: int) -> int:
        self.slots.append((node, self.size))
        self.size += count
        return self.size - count

    def load(self, name: str, offset: int) -> str:
        self.lines.append(f"    {name} = tl.load(PARAMS + {offset:d})")
        return name

    def emit(self, node: Node) -> str:
        k = self.names
        self.names += 1
        out = f"m{k}"
        if isinstance(node, (Union, Intersect)):
            parts = [self.emit(t) for t in node.terms]
            op = " | " if isinstance(node, Union) else " & "
            self.lines.append(f"    # {'union' if isinstance(node, Union) else 'intersection'} of {', '.join(parts)}")
            self.lines.append(f"    {out} = {op.join(parts)}")
        elif isinstance(node, Window):
            base = self.scalars(node, 2)
            self.lines.append("    # window: p - left <= j <= p + right")
            left = self.load(f"left{k}", base)
            right = self.load(f"right{k}", base + 1)
            self.lines.append(f"    {out} = (j >= p - {left}) & (j <= p + {right})")
        elif isinstance(node, Causal):
            self.lines.append("    # causal: j <= p")
            self.lines.append(f"    {out} = j <= p")
        elif isinstance(node, All):
            self.lines.append("    # all: every pair")
            self.lines.append(f"    {out} = tl.full((BLOCK_M, BLOCK_N), 1, tl.int1)")
        elif isinstance(node, Global):
            n = len(node.selectors)
            base = self.scalars(node, 2 * n)
            self.lines.append(f"    # global, {n} selector(s): key j or query position p in G = union of [lo, hi)")
            bounds = [(self.load(f"lo{k}_{s}", base + 2 * s), self.load(f"hi{k}_{s}", base + 2 * s + 1)) for s in range(n)]
            in_j = " | ".join(f"((j >= {lo}) & (j < {hi}))" for lo, hi in bounds)
            in_p = " | ".join(f"((p >= {lo}) & (p < {hi}))" for lo, hi in bounds)
            self.lines.append(f"    {out} = {in_j} | {in_p}")
        elif isinstance(node, Random):
            base = self.scalars(node, 2)
            self.lines += [
                "    # random: query block i // block attends the key blocks in its row of a table",
                f"    table{k} = PARAMS + tl.load(PARAMS + {base:d})  # [query blocks, RANDOM_SLOTS] int32, -1 pads",
            ]
            block = self.load(f"block{k}", base + 1)
            self.lines += [
                f"    rows{k} = offs_m // {block}",
                f"    {out} = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.int1)",
                "    for t in tl.static_range(RANDOM_SLOTS):  # unrolled; padding slots hold -1, which no key block matches",
                f"        chosen = tl.load(table{k} + rows{k} * RANDOM_SLOTS + t, mask=offs_m < Q_LEN, other=-1)",
                f"        {out} = {out} | (chosen[:, None] == j // {block})",
            ]
        else:
            raise TypeError(f"unknown pattern node {node!r}")
        return out


def structure(node: Node) -> str:
    """The pattern's shape without its values, e.g. ``global[2] + random + window``."""
    if isinstance(node, Union):
        return " + ".join(map(structure, node.terms))
    if isinstance(node, Intersect):
        return " & ".join(f"({structure(t)})" if isinstance(t, Union) else structure(t) for t in node.terms)
    if isinstance(node, Global):
        return f"global[{len(node.selectors)}]"
    return type(node).__name__.lower()


@functools.lru_cache(maxsize=256)
def _emit(root: Node) -> _Emitter:
    """The emitter after one walk of ``root`` (cached: `generate`, `params` and `emit_for` share it)."""
    emitter = _Emitter()
    result = emitter.emit(root)
    emitter.lines.append(f"    return {result}")
    return emitter


@functools.lru_cache(maxsize=256)
def _source_for_structure(shape: str, body: str, scalars: int) -> KernelSource:
    template = resources.files("patternc").joinpath("kernel_template.py").read_text(encoding="utf-8")
    mask_fn = "\n".join([
        "@triton.jit",
        "def pattern_mask(offs_m, offs_n, Q_LEN, KV_LEN, PARAMS,",
        "                 BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, RANDOM_SLOTS: tl.constexpr):",
        f'    """The pattern `{shape}` on one tile: True where query row i attends key j.',
        "",
        f"    PARAMS (int32) holds {scalars} scalars (bounds, table offsets), then the random tables.",
        '    """',
        "    i = offs_m[:, None]  # query rows     [BLOCK_M, 1]",
        "    j = offs_n[None, :]  # key columns    [1, BLOCK_N]",
        "    p = i + (KV_LEN - Q_LEN)  # absolute query positions (bottom-right aligned)",
        body,
        "",
    ])
    header = "\n".join([
        "# Generated by patternc: fused block-sparse flash attention (forward and backward).",
        f"# structure: {shape}",
        f"# generator: patternc {__version__}, codegen v{GENERATOR_VERSION}",
        "#",
        "# One module per pattern *structure*: values (window bounds, global intervals, random",
        "# tables) are read at run time from PARAMS, so other sizes of the same shape reuse it.",
        "#",
        "# Kernels (1-D grids, one program per block x (batch * head)):",
        "#   attn_fwd             per query block: O [B, H, Lq, D] and LSE [B, H, Lq] (natural log)",
        "#   attn_bwd_preprocess  per query block: delta = rowsum(dO * O) - dLSE",
        "#   attn_bwd_dkdv        per key block:   dK, dV over the query blocks that see it (GQA group summed)",
        "#   attn_bwd_dq          per query block: dQ",
        "# Arguments: Q, K, V (and dO, outputs) with all four strides each; PARAMS (int32, below);",
        "#   the layout's CSR lists FULL_OFFSETS/FULL_INDICES and PART_OFFSETS/PART_INDICES (key blocks",
        "#   per query block; the transpose for attn_bwd_dkdv); H, GROUP = Hq // Hkv, Q_LEN, KV_LEN;",
        "#   qk_scale = scale * log2(e). Constexprs: HEAD_DIM, D_PAD (next power of two), BLOCK_M,",
        "#   BLOCK_N, RANDOM_SLOTS (random-table width), EVEN_N (KV_LEN % BLOCK_N == 0), DOT_PRECISION,",
        "#   and for attn_bwd_dkdv WIDE_ROWS (64-bit row offsets, when they may pass 2**31).",
        "# Block classes: empty tiles are never visited; full tiles (IS_FULL=True) do no mask math at",
        "#   all when EVEN_N; partial tiles evaluate pattern_mask pair by pair.",
        "",
    ])
    body_start = template.index("# Conventions")  # drop the template's note about itself
    text = header + "#\n" + template[body_start:].replace(_MARKER, mask_fn)
    digest = hashlib.sha256(f"codegen v{GENERATOR_VERSION}\n{text}".encode()).hexdigest()
    return KernelSource(text, digest, shape)


@functools.lru_cache(maxsize=256)
def generate(pattern: Pattern) -> KernelSource:
    """The kernel module source for ``pattern`` (shared by all patterns of its structure)."""
    emitter = _emit(pattern.root)
    return _source_for_structure(structure(pattern.root), "\n".join(emitter.lines), emitter.size)


@functools.lru_cache(maxsize=256)
def params(pattern: Pattern, q_len: int, kv_len: int) -> torch.Tensor:
    """The int32 PARAMS tensor of ``pattern`` at these lengths (CPU; move it to the device)."""
    emitter = _emit(pattern.root)
    values = [0] * emitter.size
    tables = []
    end = emitter.size
    reach = q_len + kv_len  # |j - p| < Lq + Lk: clamping bounds keeps int32 math exact
    slots = random_slots(pattern, kv_len)
    for node, at in emitter.slots:
        if isinstance(node, Window):
            values[at : at + 2] = [min(node.left, reach), min(node.right, reach)]
        elif isinstance(node, Global):
            for s, (lo, hi) in enumerate(global_intervals(pattern, node, kv_len)):
                values[at + 2 * s : at + 2 * s + 2] = [lo, hi]
        elif isinstance(node, Random):
            table = random_table(node, q_len, kv_len)
            table = torch.nn.functional.pad(table, (0, slots - table.shape[1]), value=-1)
            values[at : at + 2] = [end, node.block]
            tables.append(table.reshape(-1))
            end += table.numel()
    out = torch.tensor(values, dtype=torch.int64)
    return torch.cat([out, *tables]).to(torch.int32)


def random_slots(pattern: Pattern, kv_len: int) -> int:
    """RANDOM_SLOTS, the kernels' unroll count for random tables: the largest number of key
    blocks a random component picks per query block, rounded up to a power of two (so few
    values, hence few compiled variants)."""
    counts = [min(n.count, -(-kv_len // n.block)) for n in walk(pattern.root) if isinstance(n, Random)]
    return 1 << (max(counts, default=1) - 1).bit_length()


def emit_for(pattern: Pattern, q_len: int | None = None, kv_len: int | None = None) -> str:
    """The source as `patternc compile --emit` shows it: a preamble naming the pattern (and its
    PARAMS at the given lengths), then the exact cached module text."""
    src = generate(pattern)
    lines = [f"# pattern: {pattern}", f"# module:  {src.module_name}.py (shared by every pattern of this structure)"]
    if q_len is not None:
        kv_len = q_len if kv_len is None else kv_len
        values = params(pattern, q_len, kv_len)
        scalars = _emit(pattern.root).size
        shown = values[:scalars].tolist()
        lines.append(f"# PARAMS at q_len={q_len}, kv_len={kv_len}: {shown}" + (f" + {values.numel() - scalars} table entries" if values.numel() > scalars else ""))
    return "\n".join(lines) + "\n#\n" + src.text


# ------------------------------------------------------------------------ cache + import
def cache_dir() -> Path:
    configured = os.environ.get("PATTERNC_CACHE_DIR")
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "patternc"


_MODULES: dict[str, object] = {}


def load(src: KernelSource):
    """Write ``src`` to the cache directory (atomically, if absent or different) and import it."""
    module = _MODULES.get(src.digest)
    if module is not None:
        return module
    directory = cache_dir()
    path = directory / f"{src.module_name}.py"
    try:
        current = path.read_text(encoding="utf-8")
    except OSError:
        current = None
    if current != src.text:
        try:
            directory.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{src.module_name}.", suffix=".tmp")
        except OSError as exc:
            raise PatterncError(f"cannot write the kernel cache in '{directory}': {exc.strerror or exc} "
                                "(set PATTERNC_CACHE_DIR to a writable directory)") from None
        try:  # write a private temp file, then rename: readers see the old file or the whole new one
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(src.text)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    spec = importlib.util.spec_from_file_location(src.module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[src.module_name] = module
    spec.loader.exec_module(module)
    _MODULES[src.digest] = module
    return module
