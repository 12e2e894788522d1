"""`parse` and `load`: pattern text → checked `Pattern` (parsed once, then cached)."""

from __future__ import annotations

import functools
from pathlib import Path

from ..errors import PatterncError
from ..pattern import Pattern
from ..source import Source, Span
from .check import check
from .parser import parse_program

MAX_TEXT = 1 << 18  # characters of a pattern text (256 KiB; real patterns take a few hundred)


def parse(text: str, name: str = "<pattern>") -> Pattern:
    """Parse and check a pattern text (definitions allowed) into a `Pattern`.

    >>> parse("local = window(left=127, right=0); local & causal")
    Pattern('causal & window(left=127, right=0)')
    """
    if not isinstance(text, str):
        raise PatterncError(f"pattern text must be a str, got {type(text).__name__}")
    if len(text) > MAX_TEXT:  # parsing costs ~10 us a token: refuse what would take minutes
        raise PatterncError(f"pattern text too long: {len(text)} characters (limit {MAX_TEXT})",
                            source=Source(text[: MAX_TEXT + 1], name), span=Span(MAX_TEXT, MAX_TEXT + 1))
    return _parse(text, name)


@functools.lru_cache(maxsize=512)
def _parse(text: str, name: str) -> Pattern:  # Patterns are immutable: safe to share
    source = Source(text, name)
    return Pattern(check(parse_program(source)), source)


def load(path: str | Path) -> Pattern:
    """Read a ``.attn`` file and parse it; errors name the file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")  # tolerate a byte order mark
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise PatterncError(f"cannot read pattern file '{path}': {reason}") from None
    return parse(text, str(path))


def as_pattern(pattern) -> Pattern:
    """A `Pattern` from a `Pattern` or a pattern text."""
    if isinstance(pattern, Pattern):
        return pattern
    if isinstance(pattern, str):
        return parse(pattern)
    raise PatterncError(f"pattern must be a pattern text or a patternc.Pattern, got {type(pattern).__name__}")
