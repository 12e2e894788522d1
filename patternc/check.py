"""Stage 3, check: `ast.Program` → `Pattern`.

Resolves definitions, validates every component's arguments and lowers the syntax tree to
the canonical pattern nodes. Every problem is a `PatterncError` pointing at the text.
"""

from __future__ import annotations

import difflib

from . import ast
from . import pattern as pt
from .errors import PatterncError
from .source import Span

COMPONENTS = ("global", "window", "random", "causal", "all")
SELECTOR_WORDS = {"first": 0, "last": -1, "eos": -1}
INT_LIMIT = 2**31 - 1  # every number must fit the kernels' int32 arithmetic

# Positional parameter names, then keyword-only ones ("global" takes selectors instead).
_PARAMS = {
    "window": ("w", "left", "right"),
    "random": ("r", "block", "seed"),
    "causal": (),
    "all": (),
}
_POSITIONAL = {"window": 1, "random": 3, "causal": 0, "all": 0}
_USAGE = {
    "global": "global(selector, ...), e.g. global(first, eos) or global(0:4)",
    "window": "window(w) with odd w, or window(left=a, right=b)",
    "random": "random(r, block=64, seed=0)",
    "causal": "causal",
    "all": "all",
}


def _suggest(word: str, candidates) -> str:
    close = difflib.get_close_matches(word, sorted(candidates), n=1)
    return f"; did you mean '{close[0]}'?" if close else ""


class _Checker:
    def __init__(self, program: ast.Program):
        self.source = program.source
        self.names: dict[str, tuple[pt.Node, ast.Define]] = {}

    def error(self, message: str, span: Span) -> PatterncError:
        return PatterncError(message, source=self.source, span=span)

    # -------------------------------------------------------------------- program
    def program(self, program: ast.Program) -> pt.Pattern:
        statements = program.statements
        if not statements:
            end = len(self.source.text)
            raise self.error("empty pattern: expected an expression such as 'window(3)'", Span(end, end))
        *definitions, final = statements
        for statement in definitions:
            if not isinstance(statement, ast.Define):
                raise self.error(
                    "only the last statement may be a bare expression; "
                    "give this one a name ('name = ...') or move it to the end",
                    statement.span,
                )
            self.define(statement)
        if isinstance(final, ast.Define):
            self.define(final)  # report errors inside it first
            raise self.error(
                f"the pattern ends with a definition; add a final expression (e.g. '{final.name}')",
                final.span,
            )
        return pt.Pattern(self.expr(final), self.source)

    def define(self, d: ast.Define) -> None:
        if d.name in COMPONENTS or d.name in SELECTOR_WORDS:
            kind = "component" if d.name in COMPONENTS else "selector"
            raise self.error(f"'{d.name}' is a built-in {kind} and cannot be redefined", d.name_span)
        if d.name in self.names:
            line, _ = self.source.position(self.names[d.name][1].span.start)
            raise self.error(f"'{d.name}' is already defined (line {line})", d.name_span)
        self.names[d.name] = (self.expr(d.value), d)

    # ---------------------------------------------------------------- expressions
    def expr(self, e: ast.Expr) -> pt.Node:
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
            combine = pt.union if e.op == "+" else pt.intersect
            return combine(*terms, span=e.span)
        if isinstance(e, ast.Ref):
            return self.ref(e)
        return self.call(e)

    def ref(self, r: ast.Ref) -> pt.Node:
        if r.name in self.names:
            return self.names[r.name][0]
        if r.name in ("causal", "all"):
            return self.component(r.name, (), r.span)
        if r.name in COMPONENTS:
            raise self.error(f"{r.name} needs arguments: {_USAGE[r.name]}", r.span)
        if r.name in SELECTOR_WORDS:
            raise self.error(f"'{r.name}' is a selector; use it inside global(), e.g. global({r.name})", r.span)
        hint = _suggest(r.name, set(self.names) | {"causal", "all"}) or _suggest(r.name, COMPONENTS)
        raise self.error(f"unknown name '{r.name}'{hint}", r.span)

    def call(self, c: ast.Call) -> pt.Node:
        if c.name in self.names:
            raise self.error(f"'{c.name}' is a definition, not a component; write '{c.name}' without arguments", c.name_span)
        if c.name not in COMPONENTS:
            raise self.error(f"unknown component '{c.name}'{_suggest(c.name, COMPONENTS)}", c.name_span)
        return self.component(c.name, c.args, c.span)

    # ---------------------------------------------------------------- components
    def component(self, name: str, args: tuple[ast.Arg, ...], span: Span) -> pt.Node:
        if name == "global":
            return self.global_(args, span)
        bound = self.bind(name, args, span)
        if name == "window":
            return self.window(bound, span)
        if name == "random":
            if "r" not in bound:
                raise self.error(f"random needs the number of key blocks r: {_USAGE['random']}", span)
            return pt.Random(
                self.integer(bound["r"], "r", minimum=1),
                self.integer(bound["block"], "block", minimum=1) if "block" in bound else 64,
                self.integer(bound["seed"], "seed", minimum=0) if "seed" in bound else 0,
                span=span,
            )
        return pt.Causal(span=span) if name == "causal" else pt.All(span=span)

    def bind(self, name: str, args: tuple[ast.Arg, ...], span: Span) -> dict[str, ast.Value]:
        """Match arguments to parameter names, Python style."""
        params, npos = _PARAMS[name], _POSITIONAL[name]
        bound: dict[str, ast.Value] = {}
        positional = [a for a in args if a.keyword is None]
        if len(positional) > npos:
            extra = positional[npos]
            if npos == 0:
                raise self.error(f"{name} takes no arguments", extra.span)
            s = "" if npos == 1 else "s"
            raise self.error(f"{name} takes at most {npos} positional argument{s}: {_USAGE[name]}", extra.span)
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
                        f"unknown keyword '{key}' for {name} (expected {known}){_suggest(key, params)}", arg.span
                    )
                if key in bound:
                    raise self.error(f"{name} got '{key}' twice", arg.span)
            bound[key] = arg.value
        return bound

    def window(self, bound: dict[str, ast.Value], span: Span) -> pt.Window:
        if "w" in bound:
            if len(bound) > 1:
                raise self.error("give window either a width w or left=/right=, not both", span)
            w = self.integer(bound["w"], "window width", minimum=1)
            if w % 2 == 0:
                half = w // 2
                raise self.error(
                    f"window width must be odd (a token and (w - 1) / 2 neighbours on each side); "
                    f"for an even width use window(left={half}, right={half - 1}) "
                    f"or window(left={half - 1}, right={half})",
                    bound["w"].span,
                )
            return pt.Window(w // 2, w // 2, span=span)
        if not bound:
            raise self.error(f"window needs a width: {_USAGE['window']}", span)
        left = self.integer(bound["left"], "left", minimum=0) if "left" in bound else 0
        right = self.integer(bound["right"], "right", minimum=0) if "right" in bound else 0
        return pt.Window(left, right, span=span)

    def global_(self, args: tuple[ast.Arg, ...], span: Span) -> pt.Global:
        if not args:
            raise self.error(f"global needs at least one selector: {_USAGE['global']}", span)
        selectors = []
        for arg in args:
            if arg.keyword is not None:
                raise self.error(f"global takes selectors, not keyword arguments: {_USAGE['global']}", arg.span)
            v = arg.value
            if isinstance(v, ast.Word):
                if v.name not in SELECTOR_WORDS:
                    hint = _suggest(v.name, SELECTOR_WORDS)
                    raise self.error(f"unknown selector '{v.name}' (expected first, last, eos, k or a:b){hint}", v.span)
                selectors.append(pt.Index(SELECTOR_WORDS[v.name]))
            elif isinstance(v, ast.Int):
                selectors.append(pt.Index(self.integer(v, "index")))
            else:
                bounds = [None if b is None else self.integer(b, "slice bound") for b in (v.start, v.stop)]
                selectors.append(pt.Range(*bounds))
        return pt.Global(tuple(dict.fromkeys(selectors)), span=span)

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


def check(program: ast.Program) -> pt.Pattern:
    """Validate a parsed program and lower it to a canonical `Pattern`."""
    try:
        return _Checker(program).program(program)
    except RecursionError:
        raise PatterncError(
            "pattern is nested too deeply", source=program.source, span=Span(0, 0)
        ) from None
