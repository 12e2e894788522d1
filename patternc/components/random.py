"""``random(r, block=64, seed=0)``: each query position block attends r pseudo-random key blocks.

The draw is a pure function (splitmix64 + Floyd's algorithm, below), identical on every
machine and torch version. Rows are *position* blocks ``p // block``, so a query attends the
same keys whether it comes in a full forward or as a KV-cache decoding step; the draw
depends on the number of key blocks ``ceil(kv_len / block)``, so it changes as a cache grows
past a block boundary.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

from .base import Component, tile_state

_M64 = (1 << 64) - 1
_GOLDEN, _MIX1, _MIX2 = 0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB
_CHUNK = 1 << 22  # table entries looked at once when classifying tiles
HIT_LIMIT = 1 << 24  # largest boolean (row, key block) table kept for the predicate


def _signed(x: int) -> int:
    return x - (1 << 64) if x >= 1 << 63 else x


def _srl(x: torch.Tensor, s: int) -> torch.Tensor:
    """Logical right shift of int64 tensors holding uint64 bit patterns."""
    return (x >> s) & ((1 << (64 - s)) - 1)


def _splitmix64(x: torch.Tensor) -> torch.Tensor:
    """splitmix64's finalizer on int64 tensors (two's-complement wraparound = arithmetic mod 2**64)."""
    x = x + _signed(_GOLDEN)
    x = (x ^ _srl(x, 30)) * _signed(_MIX1)
    x = (x ^ _srl(x, 27)) * _signed(_MIX2)
    return x ^ _srl(x, 31)


def splitmix64(x: int) -> int:
    """splitmix64 on Python ints (mod 2**64): the reference for the tensor version."""
    x = (x + _GOLDEN) & _M64
    x = ((x ^ (x >> 30)) * _MIX1) & _M64
    x = ((x ^ (x >> 27)) * _MIX2) & _M64
    return x ^ (x >> 31)


def random_blocks(seed: int, num_query_blocks: int, num_key_blocks: int, count: int, first: int = 0) -> torch.Tensor:
    """The key blocks drawn for query (position) blocks ``first .. first + num_query_blocks - 1``.

    Returns ``LongTensor[num_query_blocks, min(count, num_key_blocks)]``, rows sorted. Row
    ``b`` is a pure function of ``(seed, b, num_key_blocks, count)``: Floyd's algorithm draws
    ``k = min(count, n)`` distinct blocks out of ``n`` as

        key_b   = splitmix64(splitmix64(seed) ^ b)
        for t in 0 .. k-1:
            m   = n - k + t
            u   = splitmix64(key_b ^ t)
            x   = ((u >> 32) * (m + 1)) >> 32          # uniform in [0, m]
            add m if x was already chosen, else x

    all arithmetic on unsigned 64-bit integers (``b`` in two's complement). No generator
    state, so it is identical on every machine, torch version and backend.
    """
    k = min(count, num_key_blocks)
    rows = torch.arange(first, first + num_query_blocks, dtype=torch.int64)
    key = _splitmix64(rows ^ _signed(splitmix64(seed)))
    chosen = torch.empty(num_query_blocks, k, dtype=torch.int64)
    for t in range(k):
        m = num_key_blocks - k + t
        u = _splitmix64(key ^ t)
        x = (_srl(u, 32) * (m + 1)) >> 32
        taken = (chosen[:, :t] == x.unsqueeze(1)).any(dim=1)
        chosen[:, t] = torch.where(taken, m, x)
    return chosen.sort(dim=1).values


@dataclass(frozen=True)
class RandomValues:
    """The draws for the position blocks ``first ..`` that the queries occupy."""

    table: torch.Tensor  # int64 [position blocks, k], rows sorted
    first: int  # position block of row 0
    block: int
    hit: torch.Tensor | None  # bool [position blocks, key blocks], when small enough (HIT_LIMIT)

    def rows(self, p: torch.Tensor) -> torch.Tensor:
        """Table row of each query position (clamped into the table)."""
        return (p // self.block - self.first).clamp(0, self.table.shape[0] - 1)


@dataclass(frozen=True)
class Random(Component):
    """Query position block ``p // block`` attends ``count`` distinct key blocks ``j // block``."""

    count: int
    block: int = 64
    seed: int = 0

    name = "random"
    usage = "random(r, block=64, seed=0)"
    params = ("r", "block", "seed")
    positional = 3

    @classmethod
    def build(cls, args):
        if not args.given("r"):
            raise args.error(f"random needs the number of key blocks r: {cls.usage}")
        return cls(args.integer("r", "r", minimum=1), args.integer("block", "block", minimum=1, default=64),
                   args.integer("seed", "seed", minimum=0, default=0), span=args.span)

    def __str__(self) -> str:
        return f"random({self.count}, block={self.block}, seed={self.seed})"

    def key_blocks(self, kv_len: int) -> int:
        return -(-kv_len // self.block)

    def resolve(self, ctx):
        first = ctx.q_offset // self.block
        last = (ctx.q_offset + ctx.q_len - 1) // self.block
        nkb = self.key_blocks(ctx.kv_len)
        table = random_blocks(self.seed, last - first + 1, nkb, self.count, first=first)
        hit = None
        if table.shape[0] * nkb <= HIT_LIMIT:
            hit = torch.zeros(table.shape[0], nkb, dtype=torch.bool).scatter_(1, table, True)
        return RandomValues(table, first, self.block, hit)

    def attends(self, ctx, i, p, j):
        r = ctx.values(self)
        col = j // self.block
        if r.hit is not None:  # one lookup: also runs under vmap and in FlexAttention's kernels (to_flex)
            return r.hit.to(p.device)[r.rows(p), col.clamp(0, r.hit.shape[1] - 1)]
        rows = r.table.to(p.device)[r.rows(p)]  # [..., k]
        return functools.reduce(torch.logical_or, (rows[..., t] == col for t in range(rows.shape[-1])))

    def candidates(self, grid):
        r = grid.ctx.values(self)
        b = self.block
        n, k = r.table.shape
        pos = (torch.arange(n) + r.first).repeat_interleave(k) * b  # first position of each (row, draw)
        kr = r.table.reshape(-1)
        i_lo = torch.clamp(pos - grid.q_offset, min=0)
        i_hi = torch.clamp(pos + b - 1 - grid.q_offset, max=grid.q_len - 1)
        keep = i_lo <= i_hi
        q_lo, q_hi = i_lo[keep] // grid.bm, i_hi[keep] // grid.bm
        k_lo, k_hi = kr[keep] * b // grid.bn, (torch.clamp(kr[keep] * b + b, max=grid.kv_len) - 1) // grid.bn
        nqr = q_hi - q_lo + 1  # expand each draw's query-block range, then its key-block range
        pair = torch.repeat_interleave(torch.arange(q_lo.numel()), nqr)
        qbs = q_lo[pair] + torch.arange(pair.numel()) - torch.repeat_interleave(torch.cumsum(nqr, 0) - nqr, nqr)
        return torch.unique(grid.product(qbs, k_lo[pair], k_hi[pair]))

    def classify(self, grid, i0, i1, j0, j1):
        """Per tile: for each position block it overlaps, how many of the tile's key blocks
        were drawn. Full iff all of them, for every such position block."""
        r = grid.ctx.values(self)
        b, k = self.block, r.table.shape[1]
        kr0, kr1 = j0 // b, j1 // b
        span = (grid.bm - 1) // b + 2  # position blocks a tile's rows can overlap
        out = torch.empty(i0.numel(), dtype=torch.int8)
        step = max(1, _CHUNK // (span * max(k, 1)))
        for s in range(0, i0.numel(), step):
            sl = slice(s, s + step)
            lo, hi = r.rows(i0[sl] + grid.q_offset), r.rows(i1[sl] + grid.q_offset)
            rows = r.table[torch.minimum(lo.unsqueeze(1) + torch.arange(span), hi.unsqueeze(1))]  # [T, span, k]
            a, z = kr0[sl].view(-1, 1, 1), kr1[sl].view(-1, 1, 1)
            hits = ((rows >= a) & (rows <= z)).sum(2)  # rows hold distinct blocks
            out[sl] = tile_state(nonempty=(hits > 0).any(1), full=(hits == (z - a + 1).view(-1, 1)).all(1))
        return out

    def estimate(self, grid):
        return grid.nq * self.count * (self.block / grid.bn + 1)

    def emit(self, em):
        table = em.table(self)
        block, base, last = em.params(self, "block", "base", "last")
        em.comment("random: key block j // block is one of the blocks drawn for position block p // block")
        rows = em.let("rows", f"tl.minimum((p - {base}) // {block}, {last})  # table row per query position")
        out = em.mask("tl.zeros((ROWS, COLS), dtype=tl.int1)")
        em.line("for t in tl.static_range(RANDOM_SLOTS):  # unrolled; padding slots hold -1, which no key block matches")
        em.line(f"    chosen = tl.load({table} + {rows} * RANDOM_SLOTS + t)")
        em.line(f"    {out} = {out} | (chosen == j // {block})")
        return out

    def kernel_values(self, ctx):
        r = ctx.values(self)
        slots = ctx.random_slots
        table = torch.nn.functional.pad(r.table, (0, slots - r.table.shape[1]), value=-1)
        # base: the first table row's first position (<= every p, so the division truncates like floor)
        return [self.block, r.first * self.block, r.table.shape[0] - 1], table.reshape(-1)

