"""patternc: declarative sparse attention patterns compiled to fused Triton flash kernels.

    >>> import patternc
    >>> p = patternc.parse("global(first, eos) + window(3) + random(2)")
    >>> print(p)
    global(0, -1) + random(2, block=64, seed=0) + window(3)
    >>> p.layout(1024, block_m=128, block_n=128).num_listed
    52

The pipeline, one module per stage: source → parser → ast → check → pattern → layout →
codegen → runtime → cli.
"""

from __future__ import annotations

import functools
from pathlib import Path

__version__ = "0.1.0"

from .check import check  # noqa: E402  (after __version__, which codegen reads)
from .errors import PatterncError
from .layout import BlockLayout
from .parser import parse_program
from .pattern import Pattern
from .runtime import attention_from, reference_attention
from .source import Source

__all__ = ["parse", "load", "attention_from", "reference_attention", "Pattern", "BlockLayout", "PatterncError"]


def parse(text: str, name: str = "<pattern>") -> Pattern:
    """Parse and check a pattern text (definitions allowed) into a `Pattern`.

    >>> parse("local = window(left=127, right=0); local & causal")
    Pattern('causal & window(left=127, right=0)')
    """
    if not isinstance(text, str):
        raise PatterncError(f"pattern text must be a str, got {type(text).__name__}")
    return _parse(text, name)


@functools.lru_cache(maxsize=512)
def _parse(text: str, name: str) -> Pattern:
    source = Source(text, name)
    return check(parse_program(source))


def load(path: str | Path) -> Pattern:
    """Read a ``.attn`` file and parse it; errors name the file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")  # tolerate a byte order mark
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise PatterncError(f"cannot read pattern file '{path}': {reason}") from None
    return parse(text, str(path))
