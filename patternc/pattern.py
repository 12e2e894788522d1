"""`Pattern`: a checked attention pattern, the value every API takes.

Immutable and hashable, with a canonical text form (``parse(str(p)) == p``). Its meaning at
given lengths comes from `patternc.resolve`, its block layout from `patternc.layout`, its
information flow through stacked layers from `patternc.analyze`; the tree itself is
`patternc.ir` with the atoms of `patternc.components` (re-exported here, so
``from patternc import pattern as pt`` gives the whole vocabulary).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import torch

from .analyze import Analysis, analyze as analyze_resolved
from .components import All, Causal, Global, Index, Random, Range, Window, random_blocks
from .errors import require_int
from .ir import Intersect, Node, Union, intersect, union, walk
from .layout import BlockLayout, build_layout
from .optimize import merge_bands
from .resolve import Resolved
from .source import Source

__all__ = ["Pattern", "Node", "Union", "Intersect", "union", "intersect", "walk", "Global", "Index", "Range",
           "Window", "Random", "Causal", "All", "random_blocks"]


@dataclass(frozen=True)
class Pattern:
    """A checked attention pattern: immutable, hashable, with a canonical text form.

    >>> import patternc
    >>> p = patternc.parse("window(3) + global(first, eos)")
    >>> str(p)
    'global(0, -1) + window(3)'
    >>> p.dense_mask(5).int()
    tensor([[1, 1, 1, 1, 1],
            [1, 1, 1, 0, 1],
            [1, 1, 1, 1, 1],
            [1, 0, 1, 1, 1],
            [1, 1, 1, 1, 1]], dtype=torch.int32)
    """

    root: Node
    source: Source | None = field(default=None, compare=False, repr=False)

    def __str__(self) -> str:
        return str(self.root)

    def __repr__(self) -> str:
        return f"Pattern({str(self)!r})"

    @functools.cached_property
    def optimized(self) -> Node:
        """The equivalent tree layouts and kernels run on (`patternc.optimize`)."""
        return merge_bands(self.root)

    def structure(self) -> str:
        """The optimized tree's shape without values: one generated kernel module per structure."""
        return self.optimized.shape()

    def resolve(self, q_len: int, kv_len: int | None = None, q_offset: int | None = None,
                optimized: bool = False) -> Resolved:
        """This pattern at given lengths (``kv_len`` defaults to ``q_len``; ``q_offset`` to
        ``kv_len - q_len``): query row ``i`` sits at position ``p = i + q_offset``."""
        kv_len = q_len if kv_len is None else kv_len
        return Resolved(self.optimized if optimized else self.root, q_len, kv_len, q_offset, self.source)

    def dense_mask(self, q_len: int, kv_len: int | None = None, device="cpu", q_offset: int | None = None) -> torch.Tensor:
        """``BoolTensor[q_len, kv_len]``: True where query ``i`` attends key ``j``; the golden
        definition every layout and kernel is tested against."""
        return self.resolve(q_len, kv_len, q_offset).dense_mask(device)

    def mask(self, i: torch.Tensor, j: torch.Tensor, q_len: int, kv_len: int, q_offset: int | None = None) -> torch.Tensor:
        """The predicate on broadcastable int64 tensors of query rows ``i`` and keys ``j``."""
        return self.resolve(q_len, kv_len, q_offset).mask(i, j)

    def layout(self, q_len: int, kv_len: int | None = None, block_m: int = 128, block_n: int = 128,
               q_offset: int | None = None) -> BlockLayout:
        """The exact `BlockLayout` at these lengths and block sizes (built fresh: it is data)."""
        require_int("block_m", block_m)
        require_int("block_n", block_n)
        return build_layout(self.resolve(q_len, kv_len, q_offset, optimized=True), block_m, block_n)

    def analyze(self, seq_len: int) -> Analysis:
        """How information flows through stacked layers of this pattern at ``seq_len`` tokens
        (queries and keys alike), and its row statistics: see `patternc.analyze`.

        >>> import patternc
        >>> a = patternc.parse("global(first) + window(3)").analyze(100)
        >>> a.layers_to_closure, a.closure, a.min_keys, a.max_keys
        (2, 1.0, 3, 100)
        """
        return analyze_resolved(self.resolve(seq_len, optimized=True))

    def to_flex(self, q_len: int, kv_len: int | None = None, device="cuda", q_offset: int | None = None):
        """A FlexAttention ``mask_mod(b, h, q_idx, kv_idx)`` with this pattern's meaning, for
        `torch.nn.attention.flex_attention.create_block_mask` (component tables captured on
        ``device``)."""
        ctx = self.resolve(q_len, kv_len, q_offset).to(device)
        return lambda b, h, q_idx, kv_idx: ctx.mask(q_idx, kv_idx)
