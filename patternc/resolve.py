"""A pattern at given lengths: the values of its components and its token-level predicate.

Query row ``i`` in ``[0, q_len)`` sits at absolute position ``p = i + q_offset``; key ``j``
is in ``[0, kv_len)``. The default ``q_offset = kv_len - q_len`` aligns the last query with
the last key (bottom-right, as FlashAttention does); KV-cache decoding and sequence-parallel
shards set it explicitly. This is the only place that offset is defaulted.
"""

from __future__ import annotations

import dataclasses
import functools

import torch

from .errors import PatterncError, require_int
from .ir import Intersect, Node, Union, walk
from .source import Source

_CHUNK = 1 << 22  # (query, key) pairs of `dense_mask` computed at once


class Resolved:
    """``root`` at ``(q_len, kv_len, q_offset)``: component values computed once, on demand.

    Errors that depend on the lengths (a global index past the keys) point into ``source``.
    """

    def __init__(self, root: Node, q_len: int, kv_len: int, q_offset: int | None = None,
                 source: Source | None = None):
        self.root, self.source = root, source
        self.q_len = require_int("q_len", q_len, minimum=1)
        self.kv_len = require_int("kv_len", kv_len, minimum=1)
        self.q_offset = kv_len - q_len if q_offset is None else require_int("q_offset", q_offset, minimum=None)
        self._values: dict = {}

    def values(self, node):
        """The component's values at these lengths (computed once per `Resolved`)."""
        if node not in self._values:
            self._values[node] = node.resolve(self)
        return self._values[node]

    def to(self, device) -> Resolved:
        """Compute every component's values now, with their tensors on ``device`` (so a
        predicate traced or vmapped later captures them there)."""
        for node in walk(self.root):
            value = self.values(node) if not isinstance(node, (Union, Intersect)) else None
            if dataclasses.is_dataclass(value):
                moved = {f.name: getattr(value, f.name).to(device) for f in dataclasses.fields(value)
                         if isinstance(getattr(value, f.name), torch.Tensor)}
                self._values[node] = dataclasses.replace(value, **moved)
        return self

    def error(self, message: str, node: Node) -> PatterncError:
        return PatterncError(message, source=self.source, span=node.span)

    @property
    def reach(self) -> int:
        """A bound on ``|j - p|`` over all pairs."""
        return abs(self.q_offset) + self.q_len + self.kv_len

    @functools.cached_property
    def random_slots(self) -> int:
        """The kernels' unroll count for random tables: the most key blocks a random component
        draws per row, rounded up to a power of two (few values, so few compiled variants)."""
        counts = [min(n.count, n.key_blocks(self.kv_len)) for n in walk(self.root) if hasattr(n, "key_blocks")]
        return 1 << (max(counts, default=1) - 1).bit_length()

    def mask(self, i: torch.Tensor, j: torch.Tensor, node: Node | None = None) -> torch.Tensor:
        """Bool: query rows ``i`` attend keys ``j`` (int64, broadcastable). Indices outside
        ``[0, q_len) x [0, kv_len)`` are allowed and give unspecified values."""
        node = self.root if node is None else node
        p = i + self.q_offset
        if isinstance(node, (Union, Intersect)):
            combine = torch.logical_or if isinstance(node, Union) else torch.logical_and
            return functools.reduce(combine, (self.mask(i, j, t) for t in node.terms))
        return node.attends(self, i, p, j)

    def rows(self, start: int, stop: int) -> Resolved:
        """This pattern for the query rows ``start .. stop - 1`` alone (its row 0 is row ``start``):
        its values cover only those rows, so a random table and its lookup table shrink with them."""
        return Resolved(self.root, stop - start, self.kv_len, self.q_offset + start, self.source)

    def dense_mask(self, device="cpu") -> torch.Tensor:
        """``BoolTensor[q_len, kv_len]``: the golden definition, computed for a few rows at a time
        (`rows`), so that no intermediate is larger than the mask."""
        out = torch.empty(self.q_len, self.kv_len, dtype=torch.bool, device=device)
        j = torch.arange(self.kv_len, device=device).unsqueeze(0)
        step = max(1, _CHUNK // self.kv_len)
        for start in range(0, self.q_len, step):
            part = self.rows(start, min(start + step, self.q_len))
            out[start : start + part.q_len] = part.mask(torch.arange(part.q_len, device=device).unsqueeze(1), j)
        return out
