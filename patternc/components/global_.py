"""``global(s, ...)``: selected tokens see every key and are seen by every query."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

from .base import Component, tile_state


@dataclass(frozen=True)
class Index:
    """Selector ``k``: one position; negative counts from the end of the keys (``-1`` is the last)."""

    value: int

    def __str__(self) -> str:
        return str(self.value)


@dataclass(frozen=True)
class Range:
    """Selector ``a:b`` with Python slice semantics (bounds optional, negatives allowed, clipped)."""

    start: int | None
    stop: int | None

    def __str__(self) -> str:
        return f"{'' if self.start is None else self.start}:{'' if self.stop is None else self.stop}"


@dataclass(frozen=True)
class GlobalValues:
    """A global set at given lengths: half-open intervals and prefix counts of members."""

    intervals: tuple[tuple[int, int], ...]
    prefix: torch.Tensor  # int64 [kv_len + 1]: number of global keys below x

    def member(self, x: torch.Tensor) -> torch.Tensor:
        """Bool: position ``x`` is in the set. Plain compares with the interval bounds: the
        predicate also runs under vmap and inside FlexAttention's compiled kernels (to_flex)."""
        return functools.reduce(torch.logical_or, ((x >= lo) & (x < hi) for lo, hi in self.intervals))


@dataclass(frozen=True)
class Global(Component):
    """Attends iff key ``j`` or query position ``p`` is in the selected set G."""

    selectors: tuple[Index | Range, ...]

    name = "global"
    usage = "global(selector, ...), e.g. global(first, eos) or global(0:4)"
    variadic = "selectors"
    words = {"first": 0, "last": -1, "eos": -1}

    @classmethod
    def build(cls, args):
        values = args.positional()
        if not values:
            raise args.error(f"global needs at least one selector: {cls.usage}")
        selectors = []
        for at, (kind, value) in enumerate(values):
            if kind == "word":
                if value not in cls.words:
                    raise args.error(f"unknown selector '{value}' (expected first, last, eos, k or a:b)"
                                     f"{args.suggest(value, cls.words)}", at)
                selectors.append(Index(cls.words[value]))
            elif kind == "int":
                selectors.append(Index(value))
            else:
                selectors.append(Range(*value))
        return cls(tuple(dict.fromkeys(selectors)), span=args.span)

    def __str__(self) -> str:
        return f"global({', '.join(map(str, self.selectors))})"

    def shape(self) -> str:
        return f"global[{len(self.selectors)}]"

    def resolve(self, ctx):
        """Each selector against ``kv_len``: integers out of range are an error; slices clip."""
        intervals = []
        for sel in self.selectors:
            if isinstance(sel, Index):
                k = sel.value + ctx.kv_len if sel.value < 0 else sel.value
                if not 0 <= k < ctx.kv_len:
                    raise ctx.error(f"{self}: index {sel.value} is out of range for a sequence of {ctx.kv_len} keys",
                                    self)
                intervals.append((k, k + 1))
            else:
                r = range(ctx.kv_len)[slice(sel.start, sel.stop)]
                intervals.append((r.start, r.stop) if len(r) else (0, 0))
        member = torch.zeros(ctx.kv_len, dtype=torch.int64)
        for lo, hi in intervals:
            member[lo:hi] = 1
        return GlobalValues(tuple(intervals), torch.nn.functional.pad(torch.cumsum(member, 0), (1, 0)))

    def attends(self, ctx, i, p, j):
        g = ctx.values(self)
        return g.member(j) | g.member(p)

    def candidates(self, grid):
        g = grid.ctx.values(self)
        keys = torch.nonzero(g.prefix[1:] > g.prefix[:-1]).view(-1)
        kbs = torch.unique(keys // grid.bn)
        rows = keys - grid.q_offset  # query rows whose position is global
        qbs = torch.unique(rows[(rows >= 0) & (rows < grid.q_len)] // grid.bm)
        qb = torch.arange(grid.nq)
        ids = torch.cat([(qb.unsqueeze(1) * grid.nk + kbs).view(-1),
                         (qbs.unsqueeze(1) * grid.nk + torch.arange(grid.nk)).view(-1)])
        return torch.unique(ids)

    def classify(self, grid, ids):
        rows_in, cols_in, height, width = self._members(grid, ids)
        return tile_state(nonempty=(cols_in > 0) | (rows_in > 0), full=(cols_in == width) | (rows_in == height))

    def pairs(self, grid, ids):
        rows_in, cols_in, height, width = self._members(grid, ids)
        return rows_in * width + cols_in * height - rows_in * cols_in

    def _members(self, grid, ids):
        """Per tile: its rows whose position is in G, its keys in G, its height and width."""
        pre = grid.ctx.values(self).prefix
        i0, i1, j0, j1 = grid.bounds(ids)
        cols_in = pre[j1 + 1] - pre[j0]
        p0 = torch.clamp(i0 + grid.q_offset, min=0)
        p1 = torch.clamp(i1 + grid.q_offset, max=grid.kv_len - 1)
        rows_in = torch.where(p1 >= p0, pre[p1.clamp(min=-1) + 1] - pre[p0.clamp(max=grid.kv_len)], 0)
        return rows_in, cols_in, i1 - i0 + 1, j1 - j0 + 1

    def estimate(self, grid):
        return (grid.nq + grid.nk) * len(self.selectors) * 2

    def emit(self, em):
        n = len(self.selectors)
        bounds = em.params(self, *(f"{edge}{s}" for s in range(n) for edge in ("lo", "hi")))
        pairs = list(zip(bounds[::2], bounds[1::2]))
        em.comment(f"global, {n} selector(s): key j or query position p in G = union of [lo, hi)")
        in_j = " | ".join(f"((j >= {lo}) & (j < {hi}))" for lo, hi in pairs)
        in_p = " | ".join(f"((p >= {lo}) & (p < {hi}))" for lo, hi in pairs)
        return em.mask(f"{in_j} | {in_p}")

    def kernel_values(self, ctx):
        return [x for interval in ctx.values(self).intervals for x in interval], None
