"""Stage 4, pattern: the checked, normalized pattern and its exact token-level meaning.

A `Pattern` wraps a tree of immutable nodes (`Global`, `Window`, `Random`, `Causal`, `All`,
`Union`, `Intersect`). Nodes compare and hash by structure and values, never by where they
came from in the text, so ``parse(str(p)) == p``. `Pattern.dense_mask` is the golden
definition that every layout and kernel is tested against.

Positions: query ``i`` in ``[0, Lq)``, key ``j`` in ``[0, Lk)``; the query's absolute
position is ``p = i + (Lk - Lq)`` (bottom-right alignment, as FlashAttention does).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Union as _U

import torch

from .errors import PatterncError
from .source import Source, Span

if TYPE_CHECKING:
    from .layout import BlockLayout


# ----------------------------------------------------------------------------- selectors
@dataclass(frozen=True)
class Index:
    """Selector ``k``: one position; negative counts from the end (``-1`` is the last)."""

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


Selector = _U[Index, Range]


# --------------------------------------------------------------------------------- nodes
@dataclass(frozen=True)
class Node:
    """Base of the pattern tree. ``span`` points into the text (ignored by ==/hash)."""

    span: Span | None = field(default=None, compare=False, repr=False, kw_only=True)


@dataclass(frozen=True)
class Global(Node):
    """``global(s, ...)``: the selected tokens G see everything and are seen by everything."""

    selectors: tuple[Selector, ...]

    def __str__(self) -> str:
        return f"global({', '.join(map(str, self.selectors))})"


@dataclass(frozen=True)
class Window(Node):
    """``window(...)``: attends iff ``p - left <= j <= p + right``."""

    left: int
    right: int

    def __str__(self) -> str:
        if self.left == self.right and 2 * self.left + 1 <= 2**31 - 1:  # the width must parse back
            return f"window({2 * self.left + 1})"
        return f"window(left={self.left}, right={self.right})"


@dataclass(frozen=True)
class Random(Node):
    """``random(r, block, seed)``: each query block attends ``r`` pseudo-random key blocks."""

    count: int
    block: int = 64
    seed: int = 0

    def __str__(self) -> str:
        return f"random({self.count}, block={self.block}, seed={self.seed})"


@dataclass(frozen=True)
class Causal(Node):
    """``causal``: attends iff ``j <= p``."""

    def __str__(self) -> str:
        return "causal"


@dataclass(frozen=True)
class All(Node):
    """``all``: every pair."""

    def __str__(self) -> str:
        return "all"


@dataclass(frozen=True)
class Union(Node):
    """``a + b + ...``: attends iff any term does. Build with `union` (canonical order)."""

    terms: tuple[Node, ...]

    def __str__(self) -> str:
        return " + ".join(map(str, self.terms))


@dataclass(frozen=True)
class Intersect(Node):
    """``a & b & ...``: attends iff every term does. Build with `intersect` (canonical order)."""

    terms: tuple[Node, ...]

    def __str__(self) -> str:
        return " & ".join(f"({t})" if isinstance(t, Union) else str(t) for t in self.terms)


def _combine(cls, terms, span):
    flat: list[Node] = []
    for term in terms:
        flat.extend(term.terms if isinstance(term, cls) else (term,))
    unique = sorted(dict.fromkeys(flat), key=str)  # dedupe (first span wins), canonical order
    return unique[0] if len(unique) == 1 else cls(tuple(unique), span=span)


def union(*terms: Node, span: Span | None = None) -> Node:
    """Canonical union: flattened, duplicates removed, terms sorted by their text."""
    return _combine(Union, terms, span)


def intersect(*terms: Node, span: Span | None = None) -> Node:
    """Canonical intersection: flattened, duplicates removed, terms sorted by their text."""
    return _combine(Intersect, terms, span)


def walk(node: Node):
    """Every node of the tree, parents before children, left to right."""
    yield node
    for child in getattr(node, "terms", ()):
        yield from walk(child)


# ------------------------------------------------------------------------------ pattern
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

    def dense_mask(self, q_len: int, kv_len: int | None = None, device="cpu") -> torch.Tensor:
        """``BoolTensor[q_len, kv_len]``: True where query ``i`` attends key ``j``.

        Vectorized over the whole matrix; the golden definition of the pattern.
        """
        q_len, kv_len = _lengths(q_len, kv_len)
        i = torch.arange(q_len, device=device).unsqueeze(1)
        j = torch.arange(kv_len, device=device).unsqueeze(0)
        return self.mask(i, j, q_len, kv_len)

    def mask(self, i: torch.Tensor, j: torch.Tensor, q_len: int, kv_len: int) -> torch.Tensor:
        """The predicate on broadcastable int64 tensors of query rows ``i`` and key columns ``j``.

        Indices outside ``[0, q_len) x [0, kv_len)`` are allowed and give unspecified values.
        """
        return node_mask(self.root, i, j, q_len, kv_len, self)

    def layout(self, q_len: int, kv_len: int | None = None, block_m: int = 128, block_n: int = 128) -> BlockLayout:
        """The exact `BlockLayout` of this pattern for the given lengths and tile sizes (cached)."""
        from .layout import build_layout

        q_len, kv_len = _lengths(q_len, kv_len)
        for name, value in (("block_m", block_m), ("block_n", block_n)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise PatterncError(f"{name} must be a positive integer, got {value!r}")
        return build_layout(self, q_len, kv_len, block_m, block_n)

    def error(self, message: str, node: Node) -> PatterncError:
        """A `PatterncError` about ``node``, pointing into the text when the pattern has one."""
        return PatterncError(message, source=self.source, span=node.span)


def _lengths(q_len, kv_len):
    kv_len = q_len if kv_len is None else kv_len
    for name, value in (("q_len", q_len), ("kv_len", kv_len)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise PatterncError(f"{name} must be a positive integer, got {value!r}")
    return q_len, kv_len


# ------------------------------------------------------------------------ global tokens
def global_intervals(pattern: Pattern, node: Global, kv_len: int) -> tuple[tuple[int, int], ...]:
    """Each selector of ``node`` resolved against ``kv_len`` as a half-open ``[lo, hi)``.

    Integer selectors out of range are an error; slices clip (an empty slice is ``(0, 0)``).
    """
    out = []
    for sel in node.selectors:
        if isinstance(sel, Index):
            k = sel.value + kv_len if sel.value < 0 else sel.value
            if not 0 <= k < kv_len:
                raise pattern.error(
                    f"{node}: index {sel.value} is out of range for a sequence of {kv_len} keys", node
                )
            out.append((k, k + 1))
        else:
            r = range(kv_len)[slice(sel.start, sel.stop)]
            out.append((r.start, r.stop) if len(r) else (0, 0))
    return tuple(out)


def global_members(pattern: Pattern, node: Global, kv_len: int, device="cpu") -> torch.Tensor:
    """``BoolTensor[kv_len]``: the set G as a membership vector."""
    member = torch.zeros(kv_len, dtype=torch.bool, device=device)
    for lo, hi in global_intervals(pattern, node, kv_len):
        member[lo:hi] = True
    return member


# ------------------------------------------------------------------------- random blocks
_M64 = (1 << 64) - 1
_GOLDEN, _MIX1, _MIX2 = 0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB


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


@functools.lru_cache(maxsize=256)
def random_blocks(seed: int, num_query_blocks: int, num_key_blocks: int, count: int) -> torch.Tensor:
    """The key blocks each query block of ``random(count, seed=seed)`` attends.

    Returns ``LongTensor[num_query_blocks, min(count, num_key_blocks)]``, rows sorted. Row
    ``b`` is a pure function of ``(seed, b, num_key_blocks, count)``: Floyd's algorithm
    draws ``k = min(count, n)`` distinct blocks out of ``n`` as

        key_b   = splitmix64(splitmix64(seed) ^ b)
        for t in 0 .. k-1:
            m   = n - k + t
            u   = splitmix64(key_b ^ t)
            x   = ((u >> 32) * (m + 1)) >> 32          # uniform in [0, m]
            add m if x was already chosen, else x

    all arithmetic on unsigned 64-bit integers. No generator state, so it is identical on
    every machine, torch version and backend (tests check it against pure-Python ints).
    """
    k = min(count, num_key_blocks)
    rows = torch.arange(num_query_blocks, dtype=torch.int64)
    key = _splitmix64(rows ^ _signed(splitmix64(seed)))
    chosen = torch.empty(num_query_blocks, k, dtype=torch.int64)
    for t in range(k):
        m = num_key_blocks - k + t
        u = _splitmix64(key ^ t)
        x = (_srl(u, 32) * (m + 1)) >> 32
        taken = (chosen[:, :t] == x.unsqueeze(1)).any(dim=1)
        chosen[:, t] = torch.where(taken, m, x)
    return chosen.sort(dim=1).values


def random_table(node: Random, q_len: int, kv_len: int) -> torch.Tensor:
    """`random_blocks` for ``node`` at these lengths (query blocks cut ``i``, key blocks cut ``j``)."""
    return random_blocks(node.seed, -(-q_len // node.block), -(-kv_len // node.block), node.count)


# ------------------------------------------------------------------------ the predicate
def node_mask(node: Node, i, j, q_len: int, kv_len: int, pattern: Pattern) -> torch.Tensor:
    p = i + (kv_len - q_len)
    if isinstance(node, Window):
        return (j >= p - node.left) & (j <= p + node.right)
    if isinstance(node, Causal):
        return j <= p
    if isinstance(node, All):
        return torch.ones(torch.broadcast_shapes(i.shape, j.shape), dtype=torch.bool, device=i.device)
    if isinstance(node, Global):
        member = global_members(pattern, node, kv_len, i.device)
        return _lookup(member, j) | _lookup(member, p)
    if isinstance(node, Random):
        table = random_table(node, q_len, kv_len).to(i.device)
        rows = table[(i // node.block).clamp(0, table.shape[0] - 1)]  # [..., k]
        col = j // node.block
        out = torch.zeros(torch.broadcast_shapes(i.shape, j.shape), dtype=torch.bool, device=i.device)
        for t in range(table.shape[1]):
            out |= rows[..., t] == col
        return out
    if isinstance(node, (Union, Intersect)):
        parts = (node_mask(t, i, j, q_len, kv_len, pattern) for t in node.terms)
        return functools.reduce(torch.logical_or if isinstance(node, Union) else torch.logical_and, parts)
    raise TypeError(f"unknown pattern node {node!r}")


def _lookup(member: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``member[x]`` where ``x`` is in range, False elsewhere."""
    inside = (x >= 0) & (x < member.numel())
    return member[x.clamp(0, member.numel() - 1)] & inside
