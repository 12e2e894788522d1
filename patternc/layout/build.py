"""Building a `BlockLayout` without materializing Lq x Lk.

Each component classifies tiles in O(1) per tile (`patternc.components`) and enumerates a
superset of the tiles it touches. Union and intersection decide most tiles from their
terms' classes (full + x = full, empty & x = empty, one partial among empties is
partial ...); only a tile where two terms are partial is ambiguous and gets an exact look at
its ``block_m x block_n`` pairs. Intersections enumerate their sparsest term and classify
the others on those tiles only. Finally each partial tile is tagged with the top-level
terms that are partial on it.
"""

from __future__ import annotations

import torch

from ..components import EMPTY, FULL, PARTIAL
from ..components.base import tile_state
from ..ir import Intersect, Node, Union, top_terms
from ..resolve import Resolved
from .blocks import CSR, BlockLayout

_AMBIGUOUS = 3
_EXACT_CHUNK = 1 << 22  # pairs evaluated at once when resolving ambiguous tiles exactly
_TAG_BITS = 30  # terms past this many are evaluated on every partial tile (their bit is never read)


class Grid:
    """Tile geometry of a `Resolved` pattern, and the classification of its tree.

    Tiles are named by ``id = qb * nk + kb``. ``enumerate(node)`` returns the sorted ids of
    the tiles a node touches with their exact states; ``classify(node, ids)`` the exact
    states (EMPTY included) of given tiles.
    """

    def __init__(self, ctx: Resolved, bm: int, bn: int):
        self.ctx, self.bm, self.bn = ctx, bm, bn
        self.q_len, self.kv_len, self.q_offset = ctx.q_len, ctx.kv_len, ctx.q_offset
        self.nq, self.nk = -(-self.q_len // bm), -(-self.kv_len // bn)

    # ---- geometry
    def split(self, ids):
        return ids // self.nk, ids % self.nk

    def rows(self, qb):
        """First and last query row ``i`` of query blocks ``qb`` (inclusive)."""
        return qb * self.bm, torch.clamp(qb * self.bm + self.bm, max=self.q_len) - 1

    def cols(self, kb):
        return kb * self.bn, torch.clamp(kb * self.bn + self.bn, max=self.kv_len) - 1

    def bounds(self, ids):
        """``(i0, i1, j0, j1)``: the first and last query row and key of each tile (inclusive)."""
        qb, kb = self.split(ids)
        return *self.rows(qb), *self.cols(kb)

    def product(self, qb, kb_lo, kb_hi):
        """Ids of tiles (qb[r], kb) for kb in [kb_lo[r], kb_hi[r]] (empty where hi < lo)."""
        n = torch.clamp(kb_hi - kb_lo + 1, min=0)
        start = torch.repeat_interleave(qb * self.nk + kb_lo, n)
        within = torch.arange(int(n.sum())) - torch.repeat_interleave(torch.cumsum(n, 0) - n, n)
        return start + within

    # ---- enumerate / classify
    def enumerate(self, node: Node) -> tuple[torch.Tensor, torch.Tensor]:
        if isinstance(node, Union):
            ids, states, _ = self.union(node)
            return ids, states
        if isinstance(node, Intersect):
            first, *rest = sorted(node.terms, key=self.estimate)
            ids, states = self.enumerate(first)
            for term in rest:
                states = self.combine(node, ids, torch.stack([states, self.classify(term, ids)]))
                keep = states != EMPTY
                ids, states = ids[keep], states[keep]
            return ids, states
        ids = node.candidates(self)
        states = self.classify(node, ids)
        keep = states != EMPTY
        return ids[keep], states[keep]

    def union(self, node: Union):
        """``enumerate`` of a union, plus each tile's tag: bit t set when term t is partial on it."""
        parts = [self.enumerate(t) for t in node.terms]
        ids, inverse = torch.unique(torch.cat([p[0] for p in parts]), return_inverse=True)
        states = torch.cat([p[1] for p in parts])
        full = torch.zeros(ids.numel(), dtype=torch.bool).index_put_((inverse,), states == FULL, accumulate=True)
        npart = torch.zeros(ids.numel(), dtype=torch.int64).index_add_(0, inverse, (states == PARTIAL).long())
        out = torch.where(full, FULL, torch.where(npart == 1, PARTIAL, _AMBIGUOUS)).to(torch.int8)
        term = torch.repeat_interleave(torch.arange(len(parts)), torch.tensor([p[0].numel() for p in parts]))
        bits = torch.where((states == PARTIAL) & (term < _TAG_BITS), 1 << term.clamp(max=_TAG_BITS - 1), 0)
        tags = torch.zeros(ids.numel(), dtype=torch.int64).index_add_(0, inverse, bits)  # distinct bits: sum = or
        return ids, self.resolve(node, ids, out), tags.to(torch.int32)

    def classify(self, node: Node, ids: torch.Tensor) -> torch.Tensor:
        if isinstance(node, (Union, Intersect)):
            return self.combine(node, ids, torch.stack([self.classify(t, ids) for t in node.terms]))
        return node.classify(self, ids)

    def estimate(self, node: Node) -> float:
        """Rough number of tiles a node touches (to enumerate intersections' sparsest term)."""
        if isinstance(node, Union):
            return sum(map(self.estimate, node.terms))
        if isinstance(node, Intersect):
            return min(map(self.estimate, node.terms))
        return node.estimate(self)

    def combine(self, node, ids, states):
        """States of a union or intersection from its terms' states ``[terms, T]``."""
        npart = (states == PARTIAL).sum(0)
        if isinstance(node, Union):
            decided = torch.where((states == FULL).any(0), FULL, torch.where(npart == 0, EMPTY, PARTIAL))
        else:
            decided = torch.where((states == EMPTY).any(0), EMPTY, torch.where(npart == 0, FULL, PARTIAL))
        out = torch.where((decided == PARTIAL) & (npart > 1), _AMBIGUOUS, decided).to(torch.int8)
        return self.resolve(node, ids, out)

    def resolve(self, node, ids, states):
        """Replace ambiguous states by an exact look at the tiles' pairs."""
        ambiguous = torch.nonzero(states == _AMBIGUOUS).view(-1)
        if ambiguous.numel():
            nonempty, full = [], []
            for _, attends, allowed in self.tile_masks(node, ids[ambiguous]):
                nonempty.append(attends.flatten(1).any(1))
                full.append(allowed.flatten(1).all(1))
            states[ambiguous] = tile_state(torch.cat(nonempty), torch.cat(full))
        return states

    def tile_masks(self, node, ids):
        """Yield ``(ids, mask & valid, mask | ~valid)`` for chunks of the (sorted) tiles ``ids``, the
        masks [chunk, bm, bn]. A chunk's pairs come from the pattern at just its query rows
        (`Resolved.rows`), whose tables are small: random draws are one lookup per pair."""
        chunk = max(1, _EXACT_CHUNK // (self.bm * self.bn))
        for start in range(0, ids.numel(), chunk):
            part = ids[start : start + chunk]
            qb, kb = self.split(part)
            first = int(qb[0]) * self.bm
            rows = self.ctx.rows(first, min(self.q_len, int(qb[-1]) * self.bm + self.bm))
            i = (qb * self.bm - first).view(-1, 1, 1) + torch.arange(self.bm).view(1, -1, 1)
            j = (kb * self.bn).view(-1, 1, 1) + torch.arange(self.bn).view(1, 1, -1)
            valid = (i < rows.q_len) & (j < self.kv_len)
            mask = rows.mask(i, j, node)
            yield part, mask & valid, mask | ~valid

    def pairs(self, node: Node, ids: torch.Tensor) -> torch.Tensor:
        """int64: the exact number of attending pairs in each tile of ``ids`` (sorted, unique).
        Components count in closed form; a union or intersection counts a tile through the one
        term that decides it (the others empty, resp. full) and looks at the pairs only where
        two terms are partial: the tiles the layout already resolved that way."""
        if not isinstance(node, (Union, Intersect)):
            return node.pairs(self, ids)
        states = torch.stack([self.classify(t, ids) for t in node.terms])
        union = isinstance(node, Union)
        absorbing = (states == (FULL if union else EMPTY)).any(0)  # a full term of a union, an empty one of an &
        deciding = states != (EMPTY if union else FULL)  # the terms that are not neutral on the tile
        i0, i1, j0, j1 = self.bounds(ids)
        whole = absorbing if union else ~absorbing & ~deciding.any(0)
        out = torch.where(whole, (i1 - i0 + 1) * (j1 - j0 + 1), 0)
        n = torch.where(absorbing, 0, deciding.sum(0))  # terms that decide an undecided tile
        for t, term in enumerate(node.terms):
            sel = (n == 1) & deciding[t]
            if sel.any():
                out[sel] = self.pairs(term, ids[sel])
        mixed = n > 1
        if mixed.any():
            out[mixed] = torch.cat([attends.flatten(1).sum(1) for _, attends, _ in self.tile_masks(node, ids[mixed])])
        return out

    def enumerate_root(self, root: Node):
        """``enumerate(root)`` and the tags of its tiles (meaningful on partial tiles): bit t set
        when top-level term t is partial there (kernels evaluate only those terms)."""
        if isinstance(root, Union):
            return self.union(root)
        ids, states = self.enumerate(root)
        tags = torch.ones(ids.numel(), dtype=torch.int32)
        if isinstance(root, Intersect):  # an intersection's tile is partial in its partial terms
            tags = torch.zeros(ids.numel(), dtype=torch.int32)
            for t, term in enumerate(top_terms(root)[:_TAG_BITS]):
                tags |= (self.classify(term, ids) == PARTIAL).to(torch.int32) << t
        return ids, states, tags


def build_layout(ctx: Resolved, block_m: int, block_n: int) -> BlockLayout:
    """The exact layout of ``ctx.root`` (an optimized tree) at ``ctx``'s lengths."""
    grid = Grid(ctx, block_m, block_n)
    ids, states, all_tags = grid.enumerate_root(ctx.root)
    qb, kb = grid.split(ids)
    csrs = {}
    for name, state in (("full", FULL), ("partial", PARTIAL)):
        sel = states == state
        q, k = qb[sel], kb[sel]
        tags = all_tags[sel] if state == PARTIAL else None
        csrs[name] = CSR.from_pairs(q, k, grid.nq, tags)  # ids are sorted: by qb, then kb
        order = torch.argsort(k * grid.nq + q)
        csrs[name + "_t"] = CSR.from_pairs(k[order], q[order], grid.nk, None if tags is None else tags[order])
    return BlockLayout(ctx.q_len, ctx.kv_len, block_m, block_n, q_offset=ctx.q_offset,
                       _count_partial=lambda q, k: int(grid.pairs(ctx.root, q * grid.nk + k).sum()), **csrs)
