"""An independent brute-force reading of the language spec, element by element in pure
Python. It shares no code with patternc's semantics (only the checked tree's node types),
so tests comparing it with `Pattern.dense_mask` can catch errors in either."""

from __future__ import annotations

import torch

from patternc import pattern as pt

M64 = (1 << 64) - 1


def splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & M64
    return x ^ (x >> 31)


def random_choice(seed: int, qb: int, n: int, r: int) -> set[int]:
    """Floyd's algorithm, as documented in docs/language.md."""
    k = min(r, n)
    key = splitmix64(splitmix64(seed) ^ qb)
    chosen: set[int] = set()
    for t in range(k):
        m = n - k + t
        x = ((splitmix64(key ^ t) >> 32) * (m + 1)) >> 32
        chosen.add(m if x in chosen else x)
    return chosen


def global_set(node: pt.Global, lk: int) -> set[int]:
    g: set[int] = set()
    for s in node.selectors:
        if isinstance(s, pt.Index):
            k = s.value + lk if s.value < 0 else s.value
            if not 0 <= k < lk:
                raise IndexError(k)
            g.add(k)
        else:
            g.update(range(lk)[s.start : s.stop])
    return g


def attends(node, i: int, j: int, lq: int, lk: int, memo: dict) -> bool:
    p = i + (lk - lq)
    if isinstance(node, pt.Global):
        g = memo.setdefault(("g", node), global_set(node, lk))
        return j in g or p in g
    if isinstance(node, pt.Window):
        return p - node.left <= j <= p + node.right
    if isinstance(node, pt.Causal):
        return j <= p
    if isinstance(node, pt.All):
        return True
    if isinstance(node, pt.Random):
        b = node.block
        key = ("r", node, i // b)
        if key not in memo:
            memo[key] = random_choice(node.seed, i // b, -(-lk // b), node.count)
        return j // b in memo[key]
    if isinstance(node, pt.Union):
        return any(attends(t, i, j, lq, lk, memo) for t in node.terms)
    if isinstance(node, pt.Intersect):
        return all(attends(t, i, j, lq, lk, memo) for t in node.terms)
    raise TypeError(node)


def brute_mask(pattern, lq: int, lk: int) -> torch.Tensor:
    """Raises IndexError if a global index is out of range for ``lk``."""
    memo: dict = {}
    for node in pt.walk(pattern.root):  # resolve every global set up front
        if isinstance(node, pt.Global):
            memo[("g", node)] = global_set(node, lk)
    rows = [[attends(pattern.root, i, j, lq, lk, memo) for j in range(lk)] for i in range(lq)]
    return torch.tensor(rows, dtype=torch.bool).view(lq, lk)


def block_classes(mask: torch.Tensor, bm: int, bn: int) -> torch.Tensor:
    """int8 [nq, nk] block classification of a dense mask: 0 empty, 1 partial, 2 full."""
    lq, lk = mask.shape
    nq, nk = -(-lq // bm), -(-lk // bn)
    out = torch.zeros(nq, nk, dtype=torch.int8)
    for a in range(nq):
        for b in range(nk):
            tile = mask[a * bm : (a + 1) * bm, b * bn : (b + 1) * bn]
            out[a, b] = 2 if bool(tile.all()) else 1 if bool(tile.any()) else 0
    return out
