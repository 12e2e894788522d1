"""The language's components, one module each. A new component is one new module (a
`Component` subclass: arguments, values, torch predicate, tile classification, Triton
expression) plus one line in `REGISTRY`."""

from .all import All
from .base import EMPTY, FULL, PARTIAL, Band, Component
from .causal import Causal
from .global_ import Global, Index, Range
from .random import Random, random_blocks
from .window import Window

#: Component classes by their name in the language.
REGISTRY: dict[str, type[Component]] = {c.name: c for c in (Global, Window, Random, Causal, All)}

__all__ = ["REGISTRY", "Component", "Band", "Global", "Index", "Range", "Window", "Random", "Causal", "All",
           "random_blocks", "EMPTY", "PARTIAL", "FULL"]
