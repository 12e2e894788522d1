"""Stage 0, source: the pattern text, its name, and positions inside it.

Every later stage points back into the text through a `Span` (character offsets), and
`Source` turns a span into ``line:column`` and a caret excerpt for error messages.
"""

from __future__ import annotations

import bisect
import unicodedata
from dataclasses import dataclass, field


EXCERPT = 120  # characters of a long line shown in an error


@dataclass(frozen=True)
class Span:
    """Half-open character range ``[start, end)`` in a `Source` text."""

    start: int
    end: int


@dataclass(frozen=True)
class Source:
    """A pattern text and the name errors should call it (a path, ``<expr>``, ``<stdin>``)."""

    text: str
    name: str = "<pattern>"
    _line_starts: tuple[int, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        starts = [0] + [i + 1 for i, ch in enumerate(self.text) if ch == "\n"]
        object.__setattr__(self, "_line_starts", tuple(starts))

    def position(self, offset: int) -> tuple[int, int]:
        """1-based ``(line, column)`` of a character offset (clamped into the text)."""
        offset = max(0, min(offset, len(self.text)))
        line = bisect.bisect_right(self._line_starts, offset) - 1
        return line + 1, offset - self._line_starts[line] + 1

    def line_text(self, line: int) -> str:
        """The text of 1-based line ``line``, without its newline."""
        start = self._line_starts[line - 1]
        end = self.text.find("\n", start)
        return self.text[start : len(self.text) if end < 0 else end].rstrip("\r")

    def excerpt(self, span: Span) -> str:
        """The span's first line, and carets under the span (at least one caret). Tabs show as
        one space each and other control, format and surrogate characters as ``?`` (so carets
        line up, and no terminal is reset or reversed); lines longer than `EXCERPT` characters
        are cut around the span, with ``...`` where text was left out."""
        line, col = self.position(span.start)
        text = self.line_text(line)
        width = max(1, min(span.end - span.start, len(text) - col + 1))
        start = max(0, min(col - 1 - EXCERPT // 4, len(text) - EXCERPT)) if len(text) > EXCERPT else 0
        shown = "".join(" " if ch == "\t" else "?" if unicodedata.category(ch)[0] == "C" else ch
                        for ch in text[start : start + EXCERPT])
        shown = ("..." if start else "") + shown + ("..." if start + EXCERPT < len(text) else "")
        gutter = f"{line:>4} | "
        caret = len(gutter) + (3 if start else 0) + col - 1 - start
        width = min(width, start + EXCERPT - (col - 1))
        return f"{gutter}{shown}\n{' ' * caret}{'^' * width}"
