"""Code generation: a pattern's (optimized) tree → the Triton source of its mask function.

The generated module holds one function, ``pattern_mask``: the pattern's predicate on a
tile, emitted from the tree as Triton expressions, one commented block per component. The
kernels (`flash.py`) take it as a constexpr argument and call it on partial tiles only.
Only the tree's *structure* shapes the source. Every value (window bounds, global
intervals, random tables) lives in an int32 tensor PARAMS that `params` fills at given
lengths, so ``window(129)`` and ``window(257)`` share one module and its compiled kernels.
Numbers that do reach the source are offsets into PARAMS and tag bits, emitted from Python
ints; no user text is ever pasted into the source.

For a union or intersection at the root, each top-level term is guarded by its bit of the
tile's TAGS word (from the layout): a tile partial only in its window evaluates the window,
not the union. A term partial on no tile of the plan's layouts (a global interval or random
blocks aligned to the tiles) is left out of the module, and where one term is left the mask
is that term's, read without TAGS.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass

import torch

from .._version import __version__
from ..ir import Intersect, Node, Union, top_terms
from ..resolve import Resolved

GENERATOR_VERSION = 7
TAG_BITS = 30  # must match patternc.layout.build: terms past this are evaluated on every tile


@dataclass(frozen=True)
class KernelSource:
    """A generated module: its text, content hash and the structure it implements."""

    text: str
    digest: str
    structure: str
    scalars: int  # PARAMS scalar slots (the tables follow them)
    tagged: bool  # the mask reads TAGS: a union or intersection at the root with more than one term partial somewhere

    @property
    def module_name(self) -> str:
        return f"patternc_mask_{self.digest[:24]}"


class Emitter:
    """Collects the lines of ``pattern_mask`` and the PARAMS slots of each component, in the
    order of one walk of the tree (the same order `params` fills them)."""

    def __init__(self):
        self.lines: list[str] = []
        self.slots: list[tuple[Node, int]] = []  # (component, first PARAMS offset)
        self.size = 0  # scalar slots used so far
        self.count = 0  # names used so far

    # ---- used by components
    def line(self, text: str) -> None:
        self.lines.append(f"{self.indent}{text}")

    def comment(self, text: str) -> None:
        self.line(f"# {text}")

    def let(self, stem: str, expr: str) -> str:
        """Assign ``expr`` to a fresh name starting with ``stem``; return the name."""
        name = f"{stem}{self.count}"
        self.count += 1
        self.line(f"{name} = {expr}")
        return name

    def mask(self, expr: str) -> str:
        return self.let("m", expr)

    def table(self, node: Node) -> str:
        """A pointer to the component's int32 table (its first PARAMS slot holds the offset)."""
        self._claim(node, 1)
        return self.let("table", f"PARAMS + tl.load(PARAMS + {self.size - 1:d})")

    def params(self, node: Node, *names: str) -> list[str]:
        """Load the component's scalars from PARAMS (after its table slot, if any)."""
        at = self._claim(node, len(names))
        return [self.let(name, f"tl.load(PARAMS + {at + k:d})") for k, name in enumerate(names)]

    # ---- the walk
    indent = "    "

    def _claim(self, node: Node, count: int) -> int:
        self.size += count
        return self.size - count

    def emit(self, node: Node) -> str:
        if isinstance(node, (Union, Intersect)):
            parts = [self.emit(t) for t in node.terms]
            op = " | " if isinstance(node, Union) else " & "
            self.comment(f"{'union' if isinstance(node, Union) else 'intersection'} of {', '.join(parts)}")
            return self.mask(op.join(parts))
        self.slots.append((node, self.size))
        return node.emit(self)

    tagged = False  # the mask reads TAGS (set by emit_root)

    def emit_root(self, root: Node, live: int | None = None) -> None:
        """``live``: bit t set when top-level term t is partial on some tile the kernels visit
        (None: any may be). The others' code is left out: on a partial tile such a term is empty
        (a union's) or full (an intersection's), so it does not change the mask there. Their
        PARAMS slots stay, so that `params` serves every ``live``."""
        terms = top_terms(root)
        if len(terms) == 1:
            self.line(f"return {self.emit(root)}")
            return
        union_root = isinstance(root, Union)
        alive = [t for t in range(len(terms)) if live is None or t >= TAG_BITS or live >> t & 1]
        self.tagged = len(alive) > 1
        other = "empty" if union_root else "full"
        if self.tagged:
            self.comment(f"the tile's TAGS say which of the {len(terms)} terms are partial here; the others are "
                         f"{other} (skipped)")
        else:
            self.comment(f"no tile this mask is called on is partial in more than one of the {len(terms)} terms: "
                         f"the others are {other} there")
        # a broadcast of the indices (never negative), not tl.full: it needs no layout (hopper.py calls it too)
        self.line("keep = (i < 0) & (j < 0)  # no pair yet" if union_root else "keep = (i >= 0) & (j >= 0)  # every pair")
        for t, term in enumerate(terms):
            if t not in alive:
                mark = len(self.lines)
                self.emit(term)  # for its PARAMS slots' places; its code is dropped
                del self.lines[mark:]
                self.comment(f"term {t}: {term.shape()}: partial on no tile of the plan (left out)")
                continue
            guarded = self.tagged and t < TAG_BITS
            self.comment(f"term {t}: {term.shape()}")
            if guarded:
                self.line(f"if (TAGS & {1 << t:d}) != 0:")
                self.indent = "        "
            self.line(f"keep = keep {'|' if union_root else '&'} {self.emit(term)}")
            self.indent = "    "
        self.line("return keep")


@functools.lru_cache(maxsize=256)
def _emitted(root: Node, live: int | None = None) -> Emitter:
    emitter = Emitter()
    emitter.emit_root(root, live)
    return emitter


@functools.lru_cache(maxsize=256)
def generate(root: Node, live: int | None = None) -> KernelSource:
    """The mask module for ``root`` (an optimized tree; shared by all trees of its structure).
    ``live``: which top-level terms are partial on some tile of the plan's layouts (bit t for
    term t; `BlockLayout.partial_terms`), None for any: the others' code is left out."""
    emitter = _emitted(root, live)
    shape = root.shape()
    text = "\n".join([
        f"# Generated by patternc {__version__} (codegen v{GENERATOR_VERSION}): the mask of one pattern structure,",
        f"#   {shape}",
        "# The fused flash-attention kernels (patternc/kernels/flash.py) call pattern_mask on each partial",
        "# tile; full tiles skip it and empty tiles are never visited. Values (window bounds, global",
        "# intervals, random tables) are read from PARAMS at run time, so every pattern of this structure",
        "# shares this module and its compiled kernels.",
        "",
        "import triton",
        "import triton.language as tl",
        "",
        "",
        "@triton.jit",
        "def pattern_mask(i, j, Q_OFFSET, PARAMS, TAGS,",
        "                 ROWS: tl.constexpr, COLS: tl.constexpr, RANDOM_SLOTS: tl.constexpr):",
        f'    """True where query row i attends key j, on a [ROWS, COLS] tile of `{shape}`.',
        "",
        "    i (query rows) and j (key columns) broadcast to the tile: [ROWS, 1] and [1, COLS] for a",
        "    queries x keys tile, [1, COLS] and [ROWS, 1] for the dK/dV kernel's keys x queries tile.",
        f"    PARAMS (int32) holds {emitter.size} scalars (bounds, table offsets), then the random tables;",
        "    TAGS: bit t set when top-level term t is partial on this tile.",
        '    """',
        "    p = i + Q_OFFSET  # absolute query positions",
        *emitter.lines,
        "",
    ])
    digest = hashlib.sha256(f"codegen v{GENERATOR_VERSION}\n{text}".encode()).hexdigest()
    return KernelSource(text, digest, shape, emitter.size, emitter.tagged)


def params(ctx: Resolved) -> torch.Tensor:
    """The int32 PARAMS tensor of ``ctx.root`` (the tree `generate` was given) at ``ctx``'s
    lengths: the scalars in emission order, then the tables. A fresh CPU tensor."""
    emitter = _emitted(ctx.root)
    scalars, tables = [], []
    for node, at in emitter.slots:
        values, table = node.kernel_values(ctx)
        if table is not None:
            values = [emitter.size + sum(t.numel() for t in tables), *values]
            tables.append(table)
        assert len(scalars) == at, "emitter and params disagree on slot order"
        scalars.extend(values)
    assert len(scalars) == emitter.size, "emitter and params disagree on slot count"
    return torch.cat([torch.tensor(scalars, dtype=torch.int64), *tables]).to(torch.int32)
