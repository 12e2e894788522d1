"""Checker (stage 3 of the front end): `ast.Program` → pattern tree.

Resolves definitions, binds each call's arguments to its component's parameters (Python
style), and lets the component validate them (`patternc.components`). Every problem is a
`PatterncError` pointing at the text.
"""

from __future__ import annotations

import difflib

from ..components import REGISTRY
from ..errors import PatterncError
from ..ir import Node, intersect, union
from ..source import Span
from . import ast

INT_LIMIT = 2**31 - 1  # every number must fit the kernels' int32 arithmetic
MAX_NODES = 4096  # components and operators in a pattern, definitions expanded where used
RESERVED = {word for c in REGISTRY.values() for word in c.words}  # argument words: first, last, eos


def suggest(word: str, candidates) -> str:
    """``"; did you mean 'x'?"`` for the closest candidate, or ``""``."""
    close = difflib.get_close_matches(word, sorted(candidates), n=1)
    return f"; did you mean '{close[0]}'?" if close else ""


class Args:
    """A call's arguments, bound to its component's parameters; what components validate.

    Keys are parameter names, or positions (ints) for variadic components.
    """

    def __init__(self, checker: _Checker, bound: dict, span: Span):
        self._checker, self._bound, self.span = checker, bound, span
        self.suggest = suggest

    def given(self, key) -> bool:
        return key in self._bound

    def error(self, message: str, key=None) -> PatterncError:
        """An error pointing at argument ``key`` (the whole call when None)."""
        return self._checker.error(message, self._bound[key].span if key is not None else self.span)

    def integer(self, key, what: str, minimum: int | None = None, default: int | None = None) -> int:
        if key not in self._bound:
            return default
        return self._checker.integer(self._bound[key], what, minimum)

    def positional(self) -> list[tuple[str, object]]:
        """Each argument as ``("int", k)``, ``("word", name)`` or ``("slice", (start, stop))``."""
        out = []
        for v in self._bound.values():
            if isinstance(v, ast.Word):
                out.append(("word", v.name))
            elif isinstance(v, ast.Int):
                out.append(("int", self._checker.integer(v, "index")))
            else:
                out.append(("slice", tuple(None if b is None else self._checker.integer(b, "slice bound")
                                           for b in (v.start, v.stop))))
        return out


class _Checker:
    def __init__(self, program: ast.Program):
        self.source = program.source
        self.names: dict[str, tuple[Node, ast.Define]] = {}
        self.sizes: dict[int, int] = {}  # id(node) -> nodes of its tree with definitions expanded
        self.statement = Span(0, 0)  # the statement being checked (where "nested too deeply" points)

    def size(self, node: Node) -> int:
        return self.sizes.get(id(node), 1)

    def error(self, message: str, span: Span) -> PatterncError:
        return PatterncError(message, source=self.source, span=span)

    # -------------------------------------------------------------------- program
    def program(self, program: ast.Program) -> Node:
        statements = program.statements
        if not statements:
            end = len(self.source.text)
            raise self.error("empty pattern: expected an expression such as 'window(3)'", Span(end, end))
        *definitions, final = statements
        for statement in definitions:
            self.statement = statement.span
            if not isinstance(statement, ast.Define):
                raise self.error(
                    "only the last statement may be a bare expression; "
                    "give this one a name ('name = ...') or move it to the end",
                    statement.span,
                )
            self.define(statement)
        self.statement = final.span
        if isinstance(final, ast.Define):
            self.define(final)  # report errors inside it first
            raise self.error(
                f"the pattern ends with a definition; add a final expression (e.g. '{final.name}')",
                final.span,
            )
        return self.expr(final)

    def define(self, d: ast.Define) -> None:
        if d.name in REGISTRY or d.name in RESERVED:
            kind = "component" if d.name in REGISTRY else "selector"
            raise self.error(f"'{d.name}' is a built-in {kind} and cannot be redefined", d.name_span)
        if d.name in self.names:
            line, _ = self.source.position(self.names[d.name][1].span.start)
            raise self.error(f"'{d.name}' is already defined (line {line})", d.name_span)
        self.names[d.name] = (self.expr(d.value), d)

    # ---------------------------------------------------------------- expressions
    def expr(self, e: ast.Expr) -> Node:
        if isinstance(e, ast.BinOp):
            # a + b + c is a deep left-leaning tree: walk each chain of one operator
            # without recursion (left to right, so the first error in the text is reported).
            terms, stack = [], [e]
            while stack:
                node = stack.pop()
                if isinstance(node, ast.BinOp) and node.op == e.op:
                    stack += [node.right, node.left]
                else:
                    terms.append(self.expr(node))
            # A definition used twice doubles the tree: refuse huge trees before building them
            # (hashing and printing a tree cost its expanded size).
            size = 1 + sum(map(self.size, terms))
            if size > MAX_NODES:
                raise self.error(f"pattern too large: {size} components and operators once definitions are "
                                 f"expanded (limit {MAX_NODES})", e.span)
            combine = union if e.op == "+" else intersect
            node = combine(*terms, span=e.span)
            self.sizes.setdefault(id(node), size)  # a deduplicated union may be an existing node
            return node
        if isinstance(e, ast.Ref):
            return self.ref(e)
        return self.call(e)

    def ref(self, r: ast.Ref) -> Node:
        if r.name in self.names:
            return self.names[r.name][0]
        component = REGISTRY.get(r.name)
        if component is not None:
            if component.params or component.variadic:
                raise self.error(f"{r.name} needs arguments: {component.usage}", r.span)
            return component.build(Args(self, {}, r.span))
        if r.name in RESERVED:
            raise self.error(f"'{r.name}' is a selector; use it inside global(), e.g. global({r.name})", r.span)
        bare = {name for name, c in REGISTRY.items() if not (c.params or c.variadic)}
        hint = suggest(r.name, set(self.names) | bare) or suggest(r.name, REGISTRY)
        raise self.error(f"unknown name '{r.name}'{hint}", r.span)

    def call(self, c: ast.Call) -> Node:
        if c.name in self.names:
            raise self.error(f"'{c.name}' is a definition, not a component; write '{c.name}' without arguments", c.name_span)
        component = REGISTRY.get(c.name)
        if component is None:
            raise self.error(f"unknown component '{c.name}'{suggest(c.name, REGISTRY)}", c.name_span)
        return component.build(Args(self, self.bind(component, c.args), c.span))

    def bind(self, component, args: tuple[ast.Arg, ...]) -> dict:
        """Match arguments to parameter names, Python style (positions for variadic ones)."""
        name = component.name
        if component.variadic:
            for arg in args:
                if arg.keyword is not None:
                    raise self.error(f"{name} takes {component.variadic}, not keyword arguments: {component.usage}",
                                     arg.span)
            return {k: arg.value for k, arg in enumerate(args)}
        params, npos = component.params, component.positional
        bound: dict[str, ast.Value] = {}
        positional = [a for a in args if a.keyword is None]
        if len(positional) > npos:
            extra = positional[npos]
            if npos == 0:
                raise self.error(f"{name} takes no arguments", extra.span)
            s = "" if npos == 1 else "s"
            raise self.error(f"{name} takes at most {npos} positional argument{s}: {component.usage}", extra.span)
        seen_keyword = False
        for arg in args:
            if arg.keyword is None:
                if seen_keyword:
                    raise self.error("positional argument follows keyword argument", arg.span)
                key = params[len(bound)]
            else:
                key, seen_keyword = arg.keyword, True
                if key not in params:
                    known = ", ".join(params) if params else "none"
                    raise self.error(
                        f"unknown keyword '{key}' for {name} (expected {known}){suggest(key, params)}", arg.span
                    )
                if key in bound:
                    raise self.error(f"{name} got '{key}' twice", arg.span)
            bound[key] = arg.value
        return bound

    def integer(self, v: ast.Value, what: str, minimum: int | None = None) -> int:
        if not isinstance(v, ast.Int):
            shown = self.source.text[v.span.start : v.span.end]
            raise self.error(f"{what} must be an integer, got '{shown}'", v.span)
        if abs(v.value) > INT_LIMIT:
            shown = self.source.text[v.span.start : v.span.end]  # v.value is saturated by the parser
            raise self.error(f"{what} {shown} is too large (limit {INT_LIMIT})", v.span)
        if minimum is not None and v.value < minimum:
            bound = "positive" if minimum == 1 else "non-negative"
            raise self.error(f"{what} must be {bound}, got {v.value}", v.span)
        return v.value


def check(program: ast.Program) -> Node:
    """Validate a parsed program and lower it to a canonical pattern tree."""
    checker = _Checker(program)
    try:
        return checker.program(program)
    except RecursionError:
        raise checker.error("pattern is nested too deeply", checker.statement) from None
