"""``causal``: query position p attends keys j <= p."""

from __future__ import annotations

from dataclasses import dataclass

from .base import FAR, Band


@dataclass(frozen=True)
class Causal(Band):
    """Attends iff ``j <= p``."""

    name = "causal"
    usage = "causal"

    def __str__(self) -> str:
        return "causal"

    def band(self):
        return -FAR, 0

    def emit(self, em):
        em.comment("causal: j <= p")
        return em.mask("j <= p")
