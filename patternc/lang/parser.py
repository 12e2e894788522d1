"""Parser (stage 1 of the front end): text → `ast.Program`, with Lark's LALR parser over grammar/patternc.lark.

Lark's exceptions never escape: they become `PatterncError`s pointing at the text.
"""

from __future__ import annotations

import functools
from importlib import resources
from pathlib import Path

import lark
from lark import Lark, Token, Tree

from . import ast
from ..errors import PatterncError
from ..source import Source, Span

# Literals larger than this are rejected by `check`; the parser keeps them saturated here
# so that absurdly long digit strings never reach int() (which limits digits).
_INT_DIGITS = 12

_TOKEN_NAMES = {
    "NAME": "a name",
    "INT": "an integer",
    "_PLUS": "'+'",
    "_AMP": "'&'",
    "_LPAR": "'('",
    "_RPAR": "')'",
    "_COMMA": "','",
    "_EQUAL": "'='",
    "_COLON": "':'",
    "_SEMICOLON": "';'",
    "_NL": "end of line",
    "$END": "end of input",
}


def _grammar_text() -> str:
    """The grammar, from the installed package (wheel) or the source checkout."""
    packaged = resources.files("patternc").joinpath("grammar").joinpath("patternc.lark")
    if packaged.is_file():
        return packaged.read_text(encoding="utf-8")
    checkout = Path(__file__).resolve().parents[2] / "grammar" / "patternc.lark"
    try:
        return checkout.read_text(encoding="utf-8")
    except OSError as exc:  # a broken install, not a user error
        raise RuntimeError(f"patternc: grammar file not found ({checkout})") from exc


class _Continuations:
    """Postlexer: drop newlines that do not end a statement.

    A newline is not a separator inside parentheses, after a token that cannot end an
    expression (``+ & ( , = :``), or before a line that starts with ``+`` or ``&``.
    """

    always_accept = ()
    _AFTER = {"_PLUS", "_AMP", "_LPAR", "_COMMA", "_EQUAL", "_COLON"}
    _BEFORE = {"_PLUS", "_AMP"}

    def process(self, stream):
        depth, previous, pending = 0, None, None
        for token in stream:
            if token.type == "_NL":
                if depth == 0 and previous not in self._AFTER and pending is None:
                    pending = token
                continue
            if pending is not None and token.type not in self._BEFORE:
                yield pending
            pending = None
            depth += {"_LPAR": 1, "_RPAR": -1}.get(token.type, 0)
            previous = token.type
            yield token
        if pending is not None:
            yield pending


@functools.cache
def _lark() -> Lark:
    return Lark(
        _grammar_text(),
        parser="lalr",
        lexer="basic",
        postlex=_Continuations(),
        propagate_positions=True,
        maybe_placeholders=True,
    )


def _span(node) -> Span:
    if isinstance(node, Token):
        return Span(node.start_pos, node.end_pos)
    return node.span


class _ToAst:
    """Lark tree → `ast` dataclasses (every node gets the span of its text).

    `transform` works bottom-up without recursion: a union of many terms is a deep
    left-leaning tree, and Lark's recursive `Transformer` overflows the stack on it.
    """

    def __init__(self, source: Source):
        self.source = source

    def transform(self, tree: Tree):
        done = {}
        for sub in tree.iter_subtrees():  # children before parents
            children = [done[id(c)] if isinstance(c, Tree) else c for c in sub.children]
            done[id(sub)] = getattr(self, sub.data)(sub.meta, children)
        return done[id(tree)]

    def start(self, meta, statements):
        return ast.Program(tuple(s for s in statements if s is not None), self.source)

    def define(self, meta, children):
        name, value = children
        return ast.Define(str(name), value, Span(meta.start_pos, meta.end_pos), _span(name))

    def union(self, meta, children):
        return ast.BinOp("+", children[0], children[1], Span(meta.start_pos, meta.end_pos))

    def intersect(self, meta, children):
        return ast.BinOp("&", children[0], children[1], Span(meta.start_pos, meta.end_pos))

    def group(self, meta, children):
        return children[0]

    def call(self, meta, children):
        name, args = children
        span = Span(meta.start_pos, meta.end_pos)
        return ast.Call(str(name), tuple(args or ()), span, _span(name))

    def ref(self, meta, children):
        return ast.Ref(str(children[0]), _span(children[0]))

    def args(self, meta, children):
        values = [c for c in children if c is not None]
        return tuple(v if isinstance(v, ast.Arg) else ast.Arg(None, v, v.span) for v in values)

    def keyword(self, meta, children):
        name, value = children
        return ast.Arg(str(name), value, Span(meta.start_pos, meta.end_pos))

    def integer(self, meta, children):
        return _int(children[0])

    def slice(self, meta, children):
        start, stop = children
        return ast.Slice(
            _int(start) if start is not None else None,
            _int(stop) if stop is not None else None,
            Span(meta.start_pos, meta.end_pos),
        )

    def word(self, meta, children):
        return ast.Word(str(children[0]), _span(children[0]))


def _int(token: Token) -> ast.Int:
    text = str(token)
    digits = text.lstrip("-")
    if len(digits) > _INT_DIGITS:  # saturate: check() reports it as too large
        value = 10**_INT_DIGITS
        return ast.Int(-value if text.startswith("-") else value, _span(token))
    return ast.Int(int(text), _span(token))


def parse_program(source: Source) -> ast.Program:
    """Parse a whole text into an `ast.Program` (syntax only; see `check`)."""
    try:
        tree = _lark().parse(source.text)
    except lark.exceptions.UnexpectedCharacters as exc:
        char = source.text[exc.pos_in_stream] if exc.pos_in_stream < len(source.text) else ""
        raise PatterncError(
            f"unexpected character {char!r}", source=source, span=Span(exc.pos_in_stream, exc.pos_in_stream + 1)
        ) from None
    except lark.exceptions.UnexpectedToken as exc:
        raise _unexpected_token(source, exc) from None
    except lark.exceptions.UnexpectedInput as exc:  # other lexer/parser failures
        pos = getattr(exc, "pos_in_stream", None) or len(source.text)
        raise PatterncError("invalid syntax", source=source, span=Span(pos, pos + 1)) from None
    return _ToAst(source).transform(tree)


def _unexpected_token(source: Source, exc) -> PatterncError:
    token = exc.token
    if token.type == "$END":
        start = len(source.text.rstrip())
        found = "end of input"
    else:
        start = token.start_pos
        found = "end of line" if token.type == "_NL" else f"'{token}'" if token.type != "INT" else f"integer {token}"
    # `accepts` tries each token on a copy of the parser: exact, unlike `expected`, which
    # LALR state merging pads with tokens valid elsewhere (')' with no '(' open).
    expected = sorted({_TOKEN_NAMES.get(t, t) for t in (getattr(exc, "accepts", None) or exc.expected)})
    if "'+'" in expected and "'&'" not in expected:
        # LALR reduced `term` to `expr` before failing, dropping '&' from its expected set,
        # but '&' is valid wherever '+' is (both may follow a complete expression).
        expected = sorted(expected + ["'&'"])
    if expected:
        message = f"unexpected {found}; expected {_or(expected)}"
    else:
        message = f"unexpected {found}"
    end = start + max(1, len(str(token)) if token.type not in ("$END", "_NL") else 1)
    return PatterncError(message, source=source, span=Span(start, end))


def _or(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " or " + items[-1]
