"""The syntax tree (stage 2 of the front end): the syntax tree the parser builds, one frozen dataclass per construct.

The tree is purely syntactic: a `Call` named ``windw`` is still a `Call`; deciding what
names mean is `check`'s job. Every node carries the `Span` of its text.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

from ..source import Source, Span


@dataclass(frozen=True)
class Int:
    """An integer literal (``3``, ``-1``)."""

    value: int
    span: Span


@dataclass(frozen=True)
class Word:
    """A bare word used as an argument (``first``, ``eos``)."""

    name: str
    span: Span


@dataclass(frozen=True)
class Slice:
    """``a:b`` with either bound optional."""

    start: Int | None
    stop: Int | None
    span: Span


Value = Union[Int, Word, Slice]


@dataclass(frozen=True)
class Arg:
    """A positional (``keyword is None``) or keyword argument."""

    keyword: str | None
    value: Value
    span: Span


@dataclass(frozen=True)
class Call:
    """``name(args...)``: a component with arguments."""

    name: str
    args: tuple[Arg, ...]
    span: Span
    name_span: Span


@dataclass(frozen=True)
class Ref:
    """A bare name: a definition, or a component without arguments (``causal``)."""

    name: str
    span: Span


@dataclass(frozen=True)
class BinOp:
    """``left + right`` (union) or ``left & right`` (intersection)."""

    op: str
    left: Expr
    right: Expr
    span: Span


Expr = Union[Call, Ref, BinOp]


@dataclass(frozen=True)
class Define:
    """``name = expr``."""

    name: str
    value: Expr
    span: Span
    name_span: Span


Statement = Union[Define, Call, Ref, BinOp]


@dataclass(frozen=True)
class Program:
    """A whole text: its statements in order, and the `Source` they came from."""

    statements: tuple[Statement, ...]
    source: Source
