"""The pattern IR: immutable nodes and their algebra (no torch, no Triton).

Atoms are the language's components (`patternc.components`, one module each); they
subclass `Node`. `Union` and `Intersect` combine them. Nodes compare and hash by structure
and values, never by where they came from in the text (``span`` is excluded from
equality), so the checker's output and ``parse(str(p))`` are equal.

Canonical form: `union` and `intersect` flatten nested operators of their own kind, drop
duplicates and sort terms by their printed form, so ``a + b`` and ``b + a`` are one node.

    >>> from patternc.components import Causal, Window
    >>> str(union(Window(1, 1), intersect(Causal(), Window(3, 0)), Window(1, 1)))
    'causal & window(left=3, right=0) + window(3)'
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .source import Span


@dataclass(frozen=True)
class Node:
    """Base of the pattern tree. ``span`` points into the pattern text (ignored by ==/hash)."""

    span: Span | None = field(default=None, compare=False, repr=False, kw_only=True)

    def __copy__(self):  # immutable: copies are the node itself (no recursion over deep trees)
        return self

    def __deepcopy__(self, memo):
        return self

    def shape(self) -> str:
        """This node's structure without its values (what a generated kernel depends on)."""
        return type(self).__name__.lower()

    def band(self) -> tuple[int, int] | None:
        """``(lo, hi)`` if this node is the band ``lo <= j - p <= hi`` (window, causal, all)."""
        return None


@dataclass(frozen=True)
class Union(Node):
    """``a + b + ...``: attends iff any term does. Build with `union` (canonical order)."""

    terms: tuple[Node, ...]

    def __str__(self) -> str:
        return " + ".join(map(str, self.terms))

    def shape(self) -> str:
        return " + ".join(t.shape() for t in self.terms)


@dataclass(frozen=True)
class Intersect(Node):
    """``a & b & ...``: attends iff every term does. Build with `intersect` (canonical order)."""

    terms: tuple[Node, ...]

    def __str__(self) -> str:
        return " & ".join(f"({t})" if isinstance(t, Union) else str(t) for t in self.terms)

    def shape(self) -> str:
        return " & ".join(f"({t.shape()})" if isinstance(t, Union) else t.shape() for t in self.terms)


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
    stack = [node]
    while stack:
        node = stack.pop()
        yield node
        stack.extend(reversed(getattr(node, "terms", ())))


def top_terms(node: Node) -> tuple[Node, ...]:
    """The terms of the root operator (the node itself for an atom). Kernels flag, per tile,
    which of these are partial, and evaluate only those."""
    return node.terms if isinstance(node, (Union, Intersect)) else (node,)
