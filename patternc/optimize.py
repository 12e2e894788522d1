"""Rewrites of the pattern IR that keep its meaning and make layouts and kernels cheaper.

`merge_bands`: ``window(left=a, right=b)``, ``causal`` and ``all`` are bands
``lo <= j - p <= hi``. The intersection of bands is a band, and so is the union of
overlapping ones: one band classifies tiles in O(1) (no exact look at ambiguous tiles) and
costs the kernels two compares instead of several. The layout and the kernels both run on
the merged tree; `Pattern.dense_mask` stays the unoptimized definition, so golden tests
check this pass too.

    >>> from patternc import parse
    >>> str(merge_bands(parse("(global(0:4) + window(left=4095, right=0)) & causal").root))
    'causal & global(0:4) + window(left=4095, right=0)'
"""

from __future__ import annotations

from .components import All, Causal, Window
from .components.base import FAR
from .ir import Intersect, Node, Union, intersect, union


def band(lo: int, hi: int) -> Node:
    """The component for ``lo <= j - p <= hi``: causal or all where it is one of them."""
    if lo <= -FAR:
        if hi >= FAR:
            return All()
        if hi == 0:
            return Causal()
    return Window(-lo, hi)


def merge_bands(node: Node) -> Node:
    """An equivalent tree whose intersected bands, and overlapping united bands, are one band.
    (An empty intersection becomes a window with ``lo > hi``, which attends nothing.)"""
    if not isinstance(node, (Union, Intersect)):
        return node
    terms = [merge_bands(t) for t in node.terms]
    bands = sorted((t.band() for t in terms if t.band() is not None), key=lambda b: b[0])
    others = [t for t in terms if t.band() is None]
    if isinstance(node, Intersect):
        if not bands:
            return intersect(*others)
        lo, hi = max(b[0] for b in bands), min(b[1] for b in bands)
        merged = band(lo, hi)
        unions = [t for t in others if isinstance(t, Union)]
        if unions:  # band & (a + b) == (band & a) + (band & b): lets the band meet bands inside
            pushed = merge_bands(union(*(intersect(t, merged) for t in unions[0].terms)))
            return intersect(*(pushed if t is unions[0] else t for t in others))
        return intersect(*others, merged)
    merged: list[tuple[int, int]] = []
    for lo, hi in bands:
        if merged and lo <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
        else:
            merged.append((lo, hi))
    return union(*others, *(band(lo, hi) for lo, hi in merged))
