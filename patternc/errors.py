"""The one error type patternc raises for bad input.

Language errors carry the source name, line, column and a caret excerpt and render like
a compiler diagnostic::

    attn/bigbird.attn:2:11: error: unknown component 'windw'; did you mean 'window'?
       2 | local = windw(3)
                   ^^^^^

Errors about tensors (shape, dtype, device) and options name the argument and what was
expected; they have no position.
"""

from __future__ import annotations

from .source import Source, Span

MESSAGE_LIMIT = 400  # characters of a message; longer ones are cut in the middle


class PatterncError(ValueError):
    """Bad pattern text, bad arguments or bad tensors.

    Attributes ``source`` (name of the text: a path, ``<expr>``, ...), ``line`` and
    ``column`` (1-based) are ``None`` for errors that do not point into a pattern text.
    """

    def __init__(self, message: str, *, source: Source | None = None, span: Span | None = None):
        if len(message) > MESSAGE_LIMIT:  # it echoes a huge name or number: keep both ends
            message = f"{message[: MESSAGE_LIMIT // 2]} ... {message[-MESSAGE_LIMIT // 4 :]}"
        self.message = message
        self.span = span if source is not None else None
        self._source = source
        self.source = source.name if source is not None else None
        if source is not None and span is not None:
            self.line, self.column = source.position(span.start)
        else:
            self.line = self.column = None
        super().__init__(self.render())

    def render(self) -> str:
        """``file:line:col: error: message`` followed by the line and a caret."""
        if self._source is None:
            return self.message
        if self.span is None:
            return f"{self.source}: error: {self.message}"
        return (
            f"{self.source}:{self.line}:{self.column}: error: {self.message}\n"
            f"{self._source.excerpt(self.span)}"
        )

    def __reduce__(self):  # picklable across processes (e.g. pytest-xdist, multiprocessing)
        return (_rebuild, (self.message, self._source, self.span, type(self)))


def _rebuild(message, source, span, cls):
    return cls(message, source=source, span=span)


def require_int(name: str, value, minimum: int | None = 1, maximum: int | None = None) -> int:
    """``value`` if it is an int (not a bool) within bounds, else a `PatterncError` naming ``name``:
    the one integer check of every API entry and CLI option."""
    what = "an integer" if minimum is None else "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
    if not isinstance(value, int) or isinstance(value, bool) or (minimum is not None and value < minimum):
        raise PatterncError(f"{name} must be {what}, got {value!r}")
    if maximum is not None and value > maximum:
        raise PatterncError(f"{name} must be at most {maximum}, got {value!r}")
    return value
