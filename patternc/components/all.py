"""``all``: every pair attends (dense attention)."""

from __future__ import annotations

from dataclasses import dataclass

from .base import FAR, Band


@dataclass(frozen=True)
class All(Band):
    """Attends every pair."""

    name = "all"
    usage = "all"

    def __str__(self) -> str:
        return "all"

    def band(self):
        return -FAR, FAR

    def emit(self, em):
        em.comment("all: every pair (indices are never negative; a broadcast, which needs no layout)")
        return em.mask("(i >= 0) & (j >= 0)")
