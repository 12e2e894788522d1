"""``window(w)`` / ``window(left=a, right=b)``: query position p attends keys p - a .. p + b."""

from __future__ import annotations

from dataclasses import dataclass

from .base import Band

INT32_MAX = 2**31 - 1


@dataclass(frozen=True)
class Window(Band):
    """Attends iff ``p - left <= j <= p + right``; ``window(w)`` is ``left = right = (w - 1) // 2``."""

    left: int
    right: int

    name = "window"
    usage = "window(w) with odd w, or window(left=a, right=b)"
    params = ("w", "left", "right")
    positional = 1

    @classmethod
    def build(cls, args):
        if args.given("w"):
            if args.given("left") or args.given("right"):
                raise args.error("give window either a width w or left=/right=, not both")
            w = args.integer("w", "window width", minimum=1)
            if w % 2 == 0:
                half = w // 2
                raise args.error(
                    f"window width must be odd (a token and (w - 1) / 2 neighbours on each side); "
                    f"for an even width use window(left={half}, right={half - 1}) "
                    f"or window(left={half - 1}, right={half})",
                    "w",
                )
            return cls(w // 2, w // 2, span=args.span)
        if not (args.given("left") or args.given("right")):
            raise args.error(f"window needs a width: {cls.usage}")
        return cls(args.integer("left", "left", minimum=0, default=0),
                   args.integer("right", "right", minimum=0, default=0), span=args.span)

    def __str__(self) -> str:
        if self.left == self.right and 2 * self.left + 1 <= INT32_MAX:  # the width must parse back
            return f"window({2 * self.left + 1})"
        return f"window(left={self.left}, right={self.right})"

    def band(self):
        return -self.left, self.right

    def emit(self, em):
        left, right = em.params(self, "left", "right")
        em.comment("window: p - left <= j <= p + right")
        return em.mask(f"(j >= p - {left}) & (j <= p + {right})")

    def kernel_values(self, ctx):
        reach = ctx.reach  # |j - p| never exceeds it: clamped bounds keep int32 math exact
        return [min(self.left, reach), min(self.right, reach)], None
