"""Stage 5, layout: the exact block-sparsity layout of a pattern at given lengths.

The (Lq x Lk) score matrix is cut into tiles of ``block_m`` query rows by ``block_n`` key
columns. Each tile is **full** (every pair attends: kernels skip the mask), **partial**
(some pairs attend: kernels evaluate the predicate) or **empty** (never listed, never
visited). `BlockLayout` stores, like FlexAttention's BlockMask, for each query block the
sorted key blocks of each class in CSR form, and the transpose for the backward pass.

Building it never materializes Lq x Lk. Each component classifies tiles in O(1) per tile
with interval arithmetic (a window or causal bound is a band of diagonals, a global
selector a set of rows and columns with prefix counts, random a table of whole blocks),
and enumerates only the tiles it touches. Union and intersection decide most tiles from
their terms' classes (full + x = full, empty & x = empty, one partial among empties is
partial ...); only a tile where two terms are partial is ambiguous and gets an exact look
at its ``block_m x block_n`` pairs. Intersections enumerate their sparsest term and
classify the others on those tiles only.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field

import torch

from .pattern import All, Causal, Global, Intersect, Node, Pattern, Random, Union, Window
from .pattern import global_members, node_mask, random_table

EMPTY, PARTIAL, FULL, _AMBIGUOUS = 0, 1, 2, 3
_EXACT_CHUNK = 1 << 22  # pairs evaluated at once when resolving ambiguous tiles exactly
_FAR = 1 << 40  # "no bound" for bands (causal has no left edge)


@dataclass(frozen=True)
class CSR:
    """Rows of sorted column indices: row ``r`` is ``indices[offsets[r]:offsets[r + 1]]``."""

    offsets: torch.Tensor  # int32 [rows + 1]
    indices: torch.Tensor  # int32 [nnz]

    @property
    def counts(self) -> torch.Tensor:
        """int32 ``[rows]``: the number of indices in each row."""
        return self.offsets[1:] - self.offsets[:-1]

    def row(self, r: int) -> list[int]:
        return self.indices[self.offsets[r] : self.offsets[r + 1]].tolist()

    def to(self, device) -> CSR:
        return CSR(self.offsets.to(device), self.indices.to(device))

    @staticmethod
    def from_pairs(rows: torch.Tensor, cols: torch.Tensor, num_rows: int) -> CSR:
        """From (row, col) pairs already sorted by row, then col."""
        counts = torch.bincount(rows, minlength=num_rows)
        offsets = torch.zeros(num_rows + 1, dtype=torch.int64)
        torch.cumsum(counts, 0, out=offsets[1:])
        return CSR(offsets.to(torch.int32), cols.to(torch.int32))


@dataclass(frozen=True)
class BlockLayout:
    """Which tiles of the score matrix a pattern touches, split into full and partial.

    ``full`` / ``partial``: per query block, its key blocks (`CSR`, int32, sorted).
    ``full_t`` / ``partial_t``: per key block, its query blocks (the transpose, for dK/dV).

    >>> import patternc
    >>> lay = patternc.parse("window(left=3, right=0)").layout(8, block_m=4, block_n=4)
    >>> lay.partial.row(1), lay.full.row(1)
    ([0, 1], [])
    >>> print(lay)  # doctest: +NORMALIZE_WHITESPACE
    BlockLayout 8x8 in 4x4 blocks (2x2): 0 full, 3 partial, 1 empty; block density 75.0%
      +.
      ++
    """

    q_len: int
    kv_len: int
    block_m: int
    block_n: int
    full: CSR
    partial: CSR
    full_t: CSR
    partial_t: CSR
    pattern: Pattern | None = field(default=None, compare=False, repr=False)

    @property
    def num_q_blocks(self) -> int:
        return -(-self.q_len // self.block_m)

    @property
    def num_kv_blocks(self) -> int:
        return -(-self.kv_len // self.block_n)

    @property
    def num_full(self) -> int:
        return self.full.indices.numel()

    @property
    def num_partial(self) -> int:
        return self.partial.indices.numel()

    @property
    def num_listed(self) -> int:
        return self.num_full + self.num_partial

    @property
    def num_empty(self) -> int:
        return self.num_q_blocks * self.num_kv_blocks - self.num_listed

    @property
    def block_density(self) -> float:
        """Listed tiles over all tiles: the fraction of dense work the kernels do."""
        return self.num_listed / (self.num_q_blocks * self.num_kv_blocks)

    @functools.cached_property
    def attended_pairs(self) -> int:
        """Exact number of (query, key) pairs that attend (counts partial tiles pair by pair)."""
        qb, kb = _pairs(self.full.to("cpu"))
        rows = torch.clamp(self.q_len - qb * self.block_m, max=self.block_m)
        cols = torch.clamp(self.kv_len - kb * self.block_n, max=self.block_n)
        total = int((rows * cols).sum())
        if self.pattern is not None and self.num_partial:
            grid = _Grid(self.pattern, self.q_len, self.kv_len, self.block_m, self.block_n)
            qb, kb = _pairs(self.partial.to("cpu"))
            total += grid.count_pairs(self.pattern.root, qb * grid.nk + kb)
        return total

    @property
    def density(self) -> float:
        """Exact token-level density: attending pairs over ``q_len * kv_len``."""
        return self.attended_pairs / (self.q_len * self.kv_len)

    def to_dense(self) -> torch.Tensor:
        """int8 ``[num_q_blocks, num_kv_blocks]``: 0 empty, 1 partial, 2 full."""
        dense = torch.zeros(self.num_q_blocks, self.num_kv_blocks, dtype=torch.int8)
        for csr, state in ((self.partial, PARTIAL), (self.full, FULL)):
            qb, kb = _pairs(csr.to("cpu"))
            dense[qb, kb] = state
        return dense

    def to(self, device) -> BlockLayout:
        """The same layout with its index tensors on ``device``."""
        moved = {f: getattr(self, f).to(device) for f in ("full", "partial", "full_t", "partial_t")}
        return dataclasses.replace(self, **moved)

    def __str__(self) -> str:
        return self.summary() + "\n" + self.picture()

    def summary(self) -> str:
        return (
            f"BlockLayout {self.q_len}x{self.kv_len} in {self.block_m}x{self.block_n} blocks "
            f"({self.num_q_blocks}x{self.num_kv_blocks}): {self.num_full} full, {self.num_partial} partial, "
            f"{self.num_empty} empty; block density {100 * self.block_density:.1f}%"
        )

    def picture(self, max_width: int = 64) -> str:
        """The block matrix in text: ``#`` full, ``+`` partial, ``.`` empty.

        Larger matrices are drawn at one character per ``s x s`` blocks: ``#`` if all full,
        ``.`` if all empty, ``+`` otherwise.
        """
        nq, nk = self.num_q_blocks, self.num_kv_blocks
        s = max(1, -(-max(nq, nk) // max_width))
        rows, cols = -(-nq // s), -(-nk // s)
        full = torch.zeros(rows * cols, dtype=torch.int64)
        listed = torch.zeros(rows * cols, dtype=torch.int64)
        for csr, target in ((self.full, (full, listed)), (self.partial, (listed,))):
            qb, kb = _pairs(csr.to("cpu"))
            cell = (qb // s) * cols + kb // s
            for t in target:
                t.index_add_(0, cell, torch.ones_like(cell))
        r = torch.arange(rows).repeat_interleave(cols)
        c = torch.arange(cols).repeat(rows)
        area = (torch.clamp(nq - r * s, max=s) * torch.clamp(nk - c * s, max=s)).view(-1)
        chars = [("#" if f == a else "." if n == 0 else "+") for f, n, a in zip(full.tolist(), listed.tolist(), area.tolist())]
        scale = f"  (1 character = {s}x{s} blocks)\n" if s > 1 else ""
        return scale + "\n".join("  " + "".join(chars[k * cols : (k + 1) * cols]) for k in range(rows))


def _pairs(csr: CSR) -> tuple[torch.Tensor, torch.Tensor]:
    """(row, col) int64 tensors of every entry of a CSR."""
    rows = torch.repeat_interleave(torch.arange(csr.offsets.numel() - 1), csr.counts.long())
    return rows, csr.indices.long()


# ------------------------------------------------------------------------------ builder
class _Grid:
    """Tile geometry at fixed lengths, and the per-component classifiers.

    Tiles are named by ``id = qb * nk + kb``. ``enumerate(node)`` returns the sorted ids of
    the tiles a node touches with their exact states; ``classify(node, ids)`` the exact
    states (EMPTY included) of given tiles.
    """

    def __init__(self, pattern: Pattern, q_len: int, kv_len: int, bm: int, bn: int):
        self.pattern, self.q_len, self.kv_len, self.bm, self.bn = pattern, q_len, kv_len, bm, bn
        self.nq, self.nk = -(-q_len // bm), -(-kv_len // bn)
        self.shift = kv_len - q_len  # p = i + shift

    # ---- geometry
    def split(self, ids):
        return ids // self.nk, ids % self.nk

    def rows(self, qb):
        """First and last query row ``i`` of query blocks ``qb`` (inclusive)."""
        return qb * self.bm, torch.clamp(qb * self.bm + self.bm, max=self.q_len) - 1

    def cols(self, kb):
        return kb * self.bn, torch.clamp(kb * self.bn + self.bn, max=self.kv_len) - 1

    def product(self, qb, kb_lo, kb_hi):
        """Ids of tiles (qb[r], kb) for kb in [kb_lo[r], kb_hi[r]] (empty where hi < lo)."""
        n = torch.clamp(kb_hi - kb_lo + 1, min=0)
        start = torch.repeat_interleave(qb * self.nk + kb_lo, n)
        within = torch.arange(int(n.sum())) - torch.repeat_interleave(torch.cumsum(n, 0) - n, n)
        return start + within

    # ---- enumerate / classify
    def enumerate(self, node: Node) -> tuple[torch.Tensor, torch.Tensor]:
        if isinstance(node, Union):
            parts = [self.enumerate(t) for t in node.terms]
            ids, inverse = torch.unique(torch.cat([p[0] for p in parts]), return_inverse=True)
            states = self.combine(node, ids, inverse, torch.cat([p[1] for p in parts]))
            return ids, states
        if isinstance(node, Intersect):
            first, *rest = sorted(node.terms, key=self.estimate)
            ids, states = self.enumerate(first)
            for term in rest:
                both = torch.stack([states, self.classify(term, ids)])
                states = self.reduce_intersect(node, ids, both)
                keep = states != EMPTY
                ids, states = ids[keep], states[keep]
            return ids, states
        ids = self.candidates(node)
        if isinstance(node, Random):  # candidates are exactly the touched tiles
            states = torch.full_like(ids, PARTIAL, dtype=torch.int8)
            qb, kb = self.split(ids)
            j0, j1 = self.cols(kb)
            maybe_full = torch.nonzero(j1 // node.block - j0 // node.block < node.count).view(-1)
            if maybe_full.numel():  # a tile can only be full if it spans <= count key blocks
                i0, i1 = self.rows(qb[maybe_full])
                states[maybe_full] = self.classify_random(node, i0, i1, j0[maybe_full], j1[maybe_full])
            return ids, states
        states = self.classify(node, ids)
        keep = states != EMPTY
        return ids[keep], states[keep]

    def classify(self, node: Node, ids: torch.Tensor) -> torch.Tensor:
        if isinstance(node, (Union, Intersect)):
            states = torch.stack([self.classify(t, ids) for t in node.terms])
            if isinstance(node, Union):
                return self.reduce_union(node, ids, states)
            return self.reduce_intersect(node, ids, states)
        qb, kb = self.split(ids)
        i0, i1 = self.rows(qb)
        j0, j1 = self.cols(kb)
        if isinstance(node, All):
            return torch.full_like(ids, FULL, dtype=torch.int8)
        if isinstance(node, (Window, Causal)):
            lo, hi = self.band(node)
            dmin, dmax = j0 - (i1 + self.shift), j1 - (i0 + self.shift)  # range of j - p in the tile
            nonempty = (dmin <= hi) & (dmax >= lo) & (lo <= hi)
            return _state(nonempty=nonempty, full=(dmin >= lo) & (dmax <= hi))
        if isinstance(node, Global):
            pre = self.prefix(node)
            cols_in = pre[j1 + 1] - pre[j0]
            p0 = torch.clamp(i0 + self.shift, min=0)
            p1 = torch.clamp(i1 + self.shift, max=self.kv_len - 1)
            rows_in = torch.where(p1 >= p0, pre[p1.clamp(min=-1) + 1] - pre[p0.clamp(max=self.kv_len)], 0)
            full = (cols_in == j1 - j0 + 1) | (rows_in == i1 - i0 + 1)
            return _state(nonempty=(cols_in > 0) | (rows_in > 0), full=full)
        if isinstance(node, Random):
            return self.classify_random(node, i0, i1, j0, j1)
        raise TypeError(f"unknown pattern node {node!r}")

    def candidates(self, node: Node) -> torch.Tensor:
        """Sorted unique ids of a superset of the tiles an atom touches (few extras)."""
        qb = torch.arange(self.nq)
        if isinstance(node, All):
            return torch.arange(self.nq * self.nk)
        if isinstance(node, (Window, Causal)):
            lo, hi = self.band(node)
            i0, i1 = self.rows(qb)
            j_lo = torch.clamp(i0 + self.shift + lo, min=0)
            j_hi = torch.clamp(i1 + self.shift + hi, max=self.kv_len - 1)
            return self.product(qb, j_lo // self.bn, torch.where(j_hi >= 0, j_hi // self.bn, -1))
        if isinstance(node, Global):
            member = global_members(self.pattern, node, self.kv_len)
            kbs = torch.unique(torch.nonzero(member).view(-1) // self.bn)
            p = torch.nonzero(member).view(-1) - self.shift  # query rows whose p is global
            qbs = torch.unique(p[(p >= 0) & (p < self.q_len)] // self.bm)
            ids = torch.cat([(qb.unsqueeze(1) * self.nk + kbs).view(-1), (qbs.unsqueeze(1) * self.nk + torch.arange(self.nk)).view(-1)])
            return torch.unique(ids)
        if isinstance(node, Random):
            table = random_table(node, self.q_len, self.kv_len)  # [nrq, k]
            rb = node.block
            rq = torch.arange(table.shape[0]).repeat_interleave(table.shape[1])
            kr = table.reshape(-1)
            q_lo, q_hi = rq * rb // self.bm, (torch.clamp(rq * rb + rb, max=self.q_len) - 1) // self.bm
            k_lo, k_hi = kr * rb // self.bn, (torch.clamp(kr * rb + rb, max=self.kv_len) - 1) // self.bn
            # expand the query-block range first, then the key-block range of each pair
            nqr = q_hi - q_lo + 1
            pair = torch.repeat_interleave(torch.arange(rq.numel()), nqr)
            qbs = q_lo[pair] + torch.arange(pair.numel()) - torch.repeat_interleave(torch.cumsum(nqr, 0) - nqr, nqr)
            return torch.unique(self.product(qbs, k_lo[pair], k_hi[pair]))
        raise TypeError(f"unknown pattern node {node!r}")

    def estimate(self, node: Node) -> float:
        """Rough number of tiles a node touches (to enumerate intersections' sparsest term)."""
        if isinstance(node, Union):
            return sum(map(self.estimate, node.terms))
        if isinstance(node, Intersect):
            return min(map(self.estimate, node.terms))
        if isinstance(node, (Window, Causal)):
            lo, hi = self.band(node)
            width = min(hi - lo, self.kv_len + self.q_len)
            return self.nq * min(self.nk, width / self.bn + 2)
        if isinstance(node, Global):
            return (self.nq + self.nk) * len(node.selectors) * 2
        if isinstance(node, Random):
            return self.nq * node.count * (node.block / self.bn + 1)
        return self.nq * self.nk

    # ---- per-component helpers
    @staticmethod
    def band(node) -> tuple[int, int]:
        """``lo <= j - p <= hi`` bounds of a window or causal component."""
        return (-node.left, node.right) if isinstance(node, Window) else (-_FAR, 0)

    def prefix(self, node: Global) -> torch.Tensor:
        """``pre[x]`` = number of global keys below ``x``, length ``kv_len + 1``."""
        member = global_members(self.pattern, node, self.kv_len)
        return torch.nn.functional.pad(torch.cumsum(member, 0), (1, 0))

    def classify_random(self, node: Random, i0, i1, j0, j1) -> torch.Tensor:
        """Per tile: for each random query block it overlaps, how many of the tile's random
        key blocks were chosen. Full iff all of them for every such query block."""
        table = random_table(node, self.q_len, self.kv_len)
        rb = node.block
        kr0, kr1 = (j0 // rb).unsqueeze(1), (j1 // rb).unsqueeze(1)
        offsets = torch.arange((self.bm - 1) // rb + 2)
        rq = torch.minimum((i0 // rb).unsqueeze(1) + offsets, (i1 // rb).unsqueeze(1))  # [T, R]
        rows = table[rq]  # [T, R, k]
        hits = ((rows >= kr0.unsqueeze(2)) & (rows <= kr1.unsqueeze(2))).sum(2)  # rows hold distinct blocks
        return _state(nonempty=(hits > 0).any(1), full=(hits == kr1 - kr0 + 1).all(1))

    # ---- combining
    def combine(self, node, ids, inverse, states):
        """Union of listed states: ``inverse`` maps each listed state to its tile in ``ids``."""
        full = torch.zeros(ids.numel(), dtype=torch.bool).index_put_((inverse,), states == FULL, accumulate=True)
        npart = torch.zeros(ids.numel(), dtype=torch.int64).index_add_(0, inverse, (states == PARTIAL).long())
        out = torch.where(full, FULL, torch.where(npart == 1, PARTIAL, _AMBIGUOUS)).to(torch.int8)
        return self.resolve(node, ids, out)

    def reduce_union(self, node, ids, states):  # states: [terms, T]
        full = (states == FULL).any(0)
        npart = (states == PARTIAL).sum(0)
        out = torch.where(full, FULL, torch.where(npart == 0, EMPTY, torch.where(npart == 1, PARTIAL, _AMBIGUOUS)))
        return self.resolve(node, ids, out.to(torch.int8))

    def reduce_intersect(self, node, ids, states):
        empty = (states == EMPTY).any(0)
        npart = (states == PARTIAL).sum(0)
        out = torch.where(empty, EMPTY, torch.where(npart == 0, FULL, torch.where(npart == 1, PARTIAL, _AMBIGUOUS)))
        return self.resolve(node, ids, out.to(torch.int8))

    def resolve(self, node, ids, states):
        """Replace ambiguous states by an exact look at the tiles' pairs."""
        ambiguous = torch.nonzero(states == _AMBIGUOUS).view(-1)
        if ambiguous.numel():
            nonempty, full = self.exact(node, ids[ambiguous])
            states[ambiguous] = _state(nonempty, full)
        return states

    def tile_masks(self, node, ids):
        """Yield ``(mask & valid, mask | ~valid)`` for chunks of tiles, each [chunk, bm, bn]."""
        chunk = max(1, _EXACT_CHUNK // (self.bm * self.bn))
        for start in range(0, ids.numel(), chunk):
            qb, kb = self.split(ids[start : start + chunk])
            i = (qb * self.bm).view(-1, 1, 1) + torch.arange(self.bm).view(1, -1, 1)
            j = (kb * self.bn).view(-1, 1, 1) + torch.arange(self.bn).view(1, 1, -1)
            valid = (i < self.q_len) & (j < self.kv_len)
            mask = node_mask(node, i, j, self.q_len, self.kv_len, self.pattern)
            yield mask & valid, mask | ~valid

    def exact(self, node, ids):
        nonempty, full = [], []
        for attends, allowed in self.tile_masks(node, ids):
            nonempty.append(attends.flatten(1).any(1))
            full.append(allowed.flatten(1).all(1))
        return torch.cat(nonempty), torch.cat(full)

    def count_pairs(self, node, ids) -> int:
        return sum(int(attends.sum()) for attends, _ in self.tile_masks(node, ids))


def _state(nonempty, full):
    return torch.where(full, FULL, torch.where(nonempty, PARTIAL, EMPTY)).to(torch.int8)


def merge_bands(node: Node) -> Node:
    """An equivalent tree whose intersected bands, and overlapping united bands, are one band.

    ``window(left=a, right=b)`` and ``causal`` are bands ``lo <= j - p <= hi``; the
    intersection of bands is a band, and so is the union of overlapping ones, which the
    layout then classifies in O(1) per tile instead of looking at ambiguous tiles' pairs.
    (An empty intersection becomes a band with ``lo > hi``, which attends nothing.)
    """
    if not isinstance(node, (Union, Intersect)):
        return node
    terms = [merge_bands(t) for t in node.terms]
    bands = sorted((_Grid.band(t) for t in terms if isinstance(t, (Window, Causal))), key=lambda b: b[0])
    others = [t for t in terms if not isinstance(t, (Window, Causal))]
    if isinstance(node, Intersect) and bands:
        merged = [(max(b[0] for b in bands), min(b[1] for b in bands))]
        unions = [t for t in others if isinstance(t, Union)]
        if unions:  # band & (a + b) == (band & a) + (band & b): lets the band meet bands inside
            band = Window(-merged[0][0], merged[0][1])
            pushed = merge_bands(Union(tuple(Intersect((t, band)) for t in unions[0].terms)))
            terms = [pushed if t is unions[0] else t for t in others]
            return terms[0] if len(terms) == 1 else Intersect(tuple(terms))
    else:
        merged = []
        for lo, hi in bands:
            if merged and lo <= merged[-1][1] + 1:
                merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
            else:
                merged.append((lo, hi))
    terms = others + [Window(-lo, hi) for lo, hi in merged]
    return terms[0] if len(terms) == 1 else type(node)(tuple(terms))


@functools.lru_cache(maxsize=64)
def build_layout(pattern: Pattern, q_len: int, kv_len: int, block_m: int, block_n: int) -> BlockLayout:
    """The exact layout (cached per pattern, lengths and block sizes). See `Pattern.layout`."""
    grid = _Grid(pattern, q_len, kv_len, block_m, block_n)
    ids, states = grid.enumerate(merge_bands(pattern.root))
    qb, kb = grid.split(ids)
    csrs = {}
    for name, state in (("full", FULL), ("partial", PARTIAL)):
        sel = states == state
        q, k = qb[sel], kb[sel]
        csrs[name] = CSR.from_pairs(q, k, grid.nq)  # ids are sorted: by qb, then kb
        order = torch.argsort(k * grid.nq + q)
        csrs[name + "_t"] = CSR.from_pairs(k[order], q[order], grid.nk)
    return BlockLayout(q_len, kv_len, block_m, block_n, pattern=pattern, **csrs)
