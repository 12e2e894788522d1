"""What every component provides, and the shared machinery of band components.

A component is a frozen dataclass (an IR atom) that knows, in one place:

- its **arguments**: ``params``/``positional`` (Python-style binding, done by the checker)
  and `build`, which validates them through the checker's ``args`` reader;
- its **values at given lengths**: `resolve` (global intervals, random tables), once per
  `patternc.resolve.Resolved`;
- its **torch predicate** `attends`, the golden definition on token indices;
- its **tile classification**: `candidates` (a superset of the tiles it touches),
  `classify` (each tile EMPTY / PARTIAL / FULL, exactly) and `pairs` (each tile's attending
  pairs, exactly, without looking at them), over a layout `Grid`;
- its **Triton mask expression**: `emit`, and `kernel_values`, the numbers the emitted
  code reads from the kernels' int32 PARAMS tensor (so values never shape the source).

Tile states are int8: ``EMPTY`` (no pair attends), ``PARTIAL``, ``FULL`` (every pair).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import torch

from ..ir import Node

if TYPE_CHECKING:  # only for annotations: components never import later stages
    from ..kernels.emit import Emitter
    from ..layout.build import Grid
    from ..resolve import Resolved

EMPTY, PARTIAL, FULL = 0, 1, 2
FAR = 1 << 40  # "no bound" for bands (causal has no left edge)


def tile_state(nonempty: torch.Tensor, full: torch.Tensor) -> torch.Tensor:
    """int8 states from two boolean tensors."""
    return torch.where(full, FULL, torch.where(nonempty, PARTIAL, EMPTY)).to(torch.int8)


class Component(Node):
    """Base class of the atoms; see the module docstring for the contract."""

    name: ClassVar[str]
    usage: ClassVar[str]  # shown in argument errors
    params: ClassVar[tuple[str, ...]] = ()  # parameter names, positional ones first
    positional: ClassVar[int] = 0  # how many of them may be given positionally
    variadic: ClassVar[str] = ""  # if set, what its any-number-of positional values are called
    words: ClassVar[dict[str, int]] = {}  # reserved argument words (global's ``first``, ...)

    @classmethod
    def build(cls, args) -> Component:
        """The component from checked arguments (``args`` is the checker's reader)."""
        return cls(span=args.span)

    # ---- meaning at given lengths
    def resolve(self, ctx: Resolved):
        """Values at ``ctx``'s lengths (cached by ``ctx``); ``None`` when there are none."""
        return None

    def attends(self, ctx: Resolved, i: torch.Tensor, p: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
        """Bool tensor: query row ``i`` (at position ``p``) attends key ``j`` (broadcast)."""
        raise NotImplementedError

    # ---- tiles
    def candidates(self, grid: Grid) -> torch.Tensor:
        """Sorted unique tile ids of a superset of the tiles this component touches."""
        raise NotImplementedError

    def classify(self, grid: Grid, ids: torch.Tensor) -> torch.Tensor:
        """Exact int8 state of each tile of ``ids`` (sorted, unique)."""
        raise NotImplementedError

    def pairs(self, grid: Grid, ids: torch.Tensor) -> torch.Tensor:
        """int64: the exact number of attending pairs in each tile of ``ids`` (sorted, unique)."""
        raise NotImplementedError

    def estimate(self, grid: Grid) -> float:
        """Rough number of tiles touched (an intersection enumerates its sparsest term)."""
        return grid.nq * grid.nk

    # ---- kernels
    def emit(self, em: Emitter) -> str:
        """Emit Triton lines computing this component on a tile; return the mask's name."""
        raise NotImplementedError

    def kernel_values(self, ctx: Resolved) -> tuple[list[int], torch.Tensor | None]:
        """The int32 scalars `emit` loads (in its order) and an optional int32 table."""
        return [], None


class Band(Component):
    """A component that is a band of diagonals, ``lo <= j - p <= hi`` (window, causal, all):
    tiles classify in O(1) and bands combine into bands (`patternc.optimize`)."""

    def attends(self, ctx, i, p, j):
        lo, hi = self.band()  # |j - p| <= reach: clamped, the bounds fit int32 (to_flex compiles to Triton)
        return (j >= p + max(lo, -ctx.reach)) & (j <= p + min(hi, ctx.reach))

    def candidates(self, grid):
        lo, hi = self.band()
        qb = torch.arange(grid.nq)
        i0, i1 = grid.rows(qb)
        j_lo = torch.clamp(i0 + grid.q_offset + lo, min=0)
        j_hi = torch.clamp(i1 + grid.q_offset + hi, max=grid.kv_len - 1)
        last = torch.where((j_hi >= 0) & (j_lo < grid.kv_len), j_hi // grid.bn, -1)
        return grid.product(qb, torch.clamp(j_lo // grid.bn, max=grid.nk - 1), last)

    def classify(self, grid, ids):
        lo, hi = self.band()
        i0, i1, j0, j1 = grid.bounds(ids)
        dmin, dmax = j0 - (i1 + grid.q_offset), j1 - (i0 + grid.q_offset)  # range of j - p in the tile
        nonempty = (dmin <= hi) & (dmax >= lo) & (lo <= hi)
        return tile_state(nonempty=nonempty, full=(dmin >= lo) & (dmax <= hi))

    def pairs(self, grid, ids):
        """Pairs with ``j - p <= hi`` minus those with ``j - p < lo``, each a sum of clamped ramps."""
        lo, hi = self.band()
        if lo > hi:
            return torch.zeros(ids.numel(), dtype=torch.int64)
        i0, i1, j0, j1 = grid.bounds(ids)
        p0, p1, width = i0 + grid.q_offset, i1 + grid.q_offset, j1 - j0 + 1

        def at_most(x):  # pairs with j - p <= x: row p has clamp(p + x - j0 + 1, 0, width) of them
            x = max(min(x, grid.ctx.reach), -grid.ctx.reach)
            return _ramp(p1 + x - j0 + 1, width) - _ramp(p0 + x - j0, width)

        return at_most(hi) - at_most(lo - 1)

    def estimate(self, grid):
        lo, hi = self.band()
        width = min(hi - lo, grid.kv_len + grid.q_len)
        return grid.nq * min(grid.nk, width / grid.bn + 2)


def _ramp(t: torch.Tensor, width: torch.Tensor) -> torch.Tensor:
    """``sum(min(s, width) for s in 1 .. t)`` elementwise (0 where ``t <= 0``)."""
    t = torch.clamp(t, min=0)
    a = torch.minimum(t, width)
    return a * (a + 1) // 2 + (t - a) * width
