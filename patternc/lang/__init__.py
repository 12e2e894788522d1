"""The language front end: text → `Pattern` (parser, syntax tree, checker). No Triton."""

from .api import as_pattern, load, parse

__all__ = ["parse", "load", "as_pattern"]
