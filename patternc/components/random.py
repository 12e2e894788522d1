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
_CHUNK = 1 << 20  # draws (or draw-tile pairs) handled at once
HIT_LIMIT = 1 << 24  # largest boolean (row, key block) table kept for the predicate
DRAW_LIMIT = 1 << 25  # most draws (query position blocks x r) of one component at given lengths


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
    state, so it is identical on every machine, torch version and backend. (Computed for all
    ``t`` at once, in ``O(k log k)`` per row: see `_floyd`.)
    """
    k = min(count, num_key_blocks)
    out = torch.empty(num_query_blocks, k, dtype=torch.int64)
    step = max(1, _CHUNK // k)
    for start in range(0, num_query_blocks, step):
        rows = min(step, num_query_blocks - start)
        out[start : start + rows] = _floyd(seed, first + start, rows, num_key_blocks, k)
    return out


def _floyd(seed: int, first: int, rows: int, n: int, k: int) -> torch.Tensor:
    """`random_blocks` for ``rows`` rows, without the sequential loop. Step ``t`` draws ``x_t``
    (independent of earlier steps) and adds ``m_t`` instead iff ``x_t`` was chosen before; as
    every ``m_s`` exceeds all earlier choices, that happens iff ``x_t`` equals an earlier draw
    ``x_s`` (chosen itself, or already present), or ``x_t = m_s`` for the ``s = x_t - (n - k) < t``
    whose own draw was taken. Following that chain of ``s`` by pointer doubling takes ``log k`` steps."""
    t = torch.arange(k)
    m = n - k + t
    key = _splitmix64(torch.arange(first, first + rows).view(-1, 1) ^ _signed(splitmix64(seed)))
    x = (_srl(_splitmix64(key ^ t), 32) * (m + 1)) >> 32  # [rows, k]
    ordered, order = torch.sort(x, dim=1, stable=True)  # equal draws in step order: all but the first repeat
    taken = torch.zeros_like(x, dtype=torch.bool).scatter_(1, order[:, 1:], ordered[:, 1:] == ordered[:, :-1])
    s = x - (n - k)
    chain = torch.where((s >= 0) & (s < t), s, t)  # t itself: the chain ends
    for _ in range(k.bit_length()):
        taken |= taken.gather(1, chain)
        chain = chain.gather(1, chain)
    return torch.where(taken, m, x).sort(dim=1).values


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
        rows = (ctx.q_offset + ctx.q_len - 1) // self.block - first + 1
        nkb = self.key_blocks(ctx.kv_len)
        k = min(self.count, nkb)
        if rows * k > DRAW_LIMIT:
            raise ctx.error(f"{self} draws {k} key blocks for each of {rows} query position blocks: {rows * k} "
                            f"draws, more than the limit of {DRAW_LIMIT} (2**{DRAW_LIMIT.bit_length() - 1}); use a "
                            "larger block or fewer draws", self)
        table = random_blocks(self.seed, rows, nkb, self.count, first=first)
        hit = None
        if rows * nkb <= HIT_LIMIT:
            hit = torch.zeros(rows, nkb, dtype=torch.bool).scatter_(1, table, True)
        return RandomValues(table, first, self.block, hit)

    def attends(self, ctx, i, p, j):
        r = ctx.values(self)
        col = j // self.block
        if r.hit is not None:  # one lookup: also runs under vmap and in FlexAttention's kernels (to_flex)
            return r.hit.to(p.device)[r.rows(p), col.clamp(0, r.hit.shape[1] - 1)]
        rows = r.table.to(p.device)[r.rows(p)]  # [..., k]
        return functools.reduce(torch.logical_or, (rows[..., t] == col for t in range(rows.shape[-1])))

    # Tiles from the draws: a draw is the rectangle of its position block's query rows and its key
    # block's columns; draws never overlap. Work and memory follow the draws, never Lq x Lk.
    def candidates(self, grid):
        return torch.unique(torch.cat([torch.unique(tile) for tile, _ in self._draw_tiles(grid)]))

    def classify(self, grid, ids):
        """Full iff every position block the tile's rows overlap drew every key block its columns
        overlap: as no block draws more of them than that, iff the tile meets that many draws."""
        r, b = grid.ctx.values(self), self.block
        i0, i1, j0, j1 = grid.bounds(ids)
        blocks = r.rows(i1 + grid.q_offset) - r.rows(i0 + grid.q_offset) + 1
        met = torch.zeros(ids.numel(), dtype=torch.int64)
        for at, _ in self._draws_in(grid, ids):
            met.index_add_(0, at, torch.ones_like(at))
        return tile_state(nonempty=met > 0, full=met == blocks * (j1 // b - j0 // b + 1))

    def pairs(self, grid, ids):
        out = torch.zeros(ids.numel(), dtype=torch.int64)
        for at, area in self._draws_in(grid, ids):
            out.index_add_(0, at, area)
        return out

    def _draws_in(self, grid, ids):
        """`_draw_tiles` restricted to the (sorted) tiles ``ids``, each named by its index there."""
        if not ids.numel():
            return
        for tile, area in self._draw_tiles(grid):
            at = torch.searchsorted(ids, tile).clamp(max=ids.numel() - 1)
            keep = ids[at] == tile
            yield at[keep], area[keep]

    def _draw_tiles(self, grid):
        """For chunks of draws: each (draw, tile it touches) as (tile id, pairs of the draw's
        rectangle inside the tile)."""
        r, b = grid.ctx.values(self), self.block
        n, k = r.table.shape
        per_draw = ((b - 1) // grid.bm + 2) * ((b - 1) // grid.bn + 2)  # most tiles a draw touches
        step = max(1, _CHUNK // (k * per_draw))
        for start in range(0, n, step):
            row = torch.arange(start, min(n, start + step)).repeat_interleave(k)
            kb = r.table[start : start + step].reshape(-1)
            pos = (row + r.first) * b  # the draw's first query position
            i_lo = torch.clamp(pos - grid.q_offset, min=0)
            i_hi = torch.clamp(pos + b - 1 - grid.q_offset, max=grid.q_len - 1)
            j_lo, j_hi = kb * b, torch.clamp(kb * b + b, max=grid.kv_len) - 1
            tiles_q = torch.clamp(i_hi // grid.bm - i_lo // grid.bm + 1, min=0)
            tiles_k = j_hi // grid.bn - j_lo // grid.bn + 1
            tiles = tiles_q * tiles_k
            d = torch.repeat_interleave(torch.arange(tiles.numel()), tiles)  # the draw of each (draw, tile)
            within = torch.arange(d.numel()) - torch.repeat_interleave(torch.cumsum(tiles, 0) - tiles, tiles)
            qb = i_lo[d] // grid.bm + within // tiles_k[d]
            kbt = j_lo[d] // grid.bn + within % tiles_k[d]
            r0, r1 = grid.rows(qb)
            c0, c1 = grid.cols(kbt)
            area = ((torch.minimum(i_hi[d], r1) - torch.maximum(i_lo[d], r0) + 1)
                    * (torch.minimum(j_hi[d], c1) - torch.maximum(j_lo[d], c0) + 1))
            yield qb * grid.nk + kbt, area

    def estimate(self, grid):
        return grid.nq * self.count * (self.block / grid.bn + 1)

    def emit(self, em):
        table = em.table(self)
        block, base, last = em.params(self, "block", "base", "last")
        em.comment("random: key block j // block is one of the blocks drawn for position block p // block")
        rows = em.let("rows", f"tl.minimum((p - {base}) // {block}, {last})  # table row per query position")
        out = em.mask("(i < 0) & (j < 0)  # no pair yet (a broadcast: no layout needed)")
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

