"""Block layouts as plain data: which tiles of the score matrix a pattern touches.

The (Lq x Lk) score matrix is cut into tiles of ``block_m`` query rows by ``block_n`` key
columns. Each tile is **full** (every pair attends: kernels skip the mask), **partial**
(some pairs attend: kernels evaluate the predicate) or **empty** (never listed, never
visited). Like FlexAttention's BlockMask, a `BlockLayout` stores for each query block the
sorted key blocks of each class in CSR form, and the transpose for the backward pass.
Partial tiles also carry a *tag*: which top-level terms of the (optimized) pattern are
partial on that tile, so kernels evaluate only those.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field
from typing import Callable

import torch

from ..components import FULL, PARTIAL

@dataclass(frozen=True)
class CSR:
    """Rows of sorted column indices: row ``r`` is ``indices[offsets[r]:offsets[r + 1]]``."""

    offsets: torch.Tensor  # int32 [rows + 1]
    indices: torch.Tensor  # int32 [nnz]
    tags: torch.Tensor | None = None  # int32 [nnz]: per entry, bit t = top-level term t is partial

    @property
    def counts(self) -> torch.Tensor:
        """int32 ``[rows]``: the number of indices in each row."""
        return self.offsets[1:] - self.offsets[:-1]

    def row(self, r: int) -> list[int]:
        return self.indices[self.offsets[r] : self.offsets[r + 1]].tolist()

    def to(self, device) -> CSR:
        return CSR(self.offsets.to(device), self.indices.to(device), None if self.tags is None else self.tags.to(device))

    @staticmethod
    def from_pairs(rows: torch.Tensor, cols: torch.Tensor, num_rows: int, tags: torch.Tensor | None = None) -> CSR:
        """From (row, col) pairs already sorted by row, then col."""
        counts = torch.bincount(rows, minlength=num_rows)
        offsets = torch.zeros(num_rows + 1, dtype=torch.int64)
        torch.cumsum(counts, 0, out=offsets[1:])
        return CSR(offsets.to(torch.int32), cols.to(torch.int32), None if tags is None else tags.to(torch.int32))


@dataclass(frozen=True)
class BlockLayout:
    """Which tiles of the score matrix a pattern touches, split into full and partial.

    ``full`` / ``partial``: per query block, its key blocks (`CSR`, int32, sorted).
    ``full_t`` / ``partial_t``: per key block, its query blocks (the transpose, for dK/dV).

    >>> import patternc
    >>> lay = patternc.parse("window(left=3, right=0)").layout(8, block_m=4, block_n=4)
    >>> lay.partial.row(1), lay.full.row(1)
    ([0, 1], [])
    >>> print(lay)  # doctest: +NORMALIZE_WHITESPACE
    BlockLayout 8x8 in 4x4 blocks (2x2): 0 full, 3 partial, 1 empty; block density 75.0%
      +.
      ++
    """

    q_len: int
    kv_len: int
    block_m: int
    block_n: int
    full: CSR
    partial: CSR
    full_t: CSR
    partial_t: CSR
    q_offset: int = 0
    _count_partial: Callable[[torch.Tensor, torch.Tensor], int] | None = field(default=None, compare=False, repr=False)

    @functools.cached_property
    def partial_terms(self) -> int:
        """Bit t set when top-level term t of the pattern is partial on some partial tile (the OR
        of their tags; for a one-term pattern 1 where any tile is partial)."""
        tags = self.partial.tags
        bits = 0
        for value in ([] if tags is None else torch.unique(tags).tolist()):
            bits |= value
        return bits

    @property
    def num_q_blocks(self) -> int:
        return -(-self.q_len // self.block_m)

    @property
    def num_kv_blocks(self) -> int:
        return -(-self.kv_len // self.block_n)

    @property
    def num_full(self) -> int:
        return self.full.indices.numel()

    @property
    def num_partial(self) -> int:
        return self.partial.indices.numel()

    @property
    def num_listed(self) -> int:
        return self.num_full + self.num_partial

    @property
    def num_empty(self) -> int:
        return self.num_q_blocks * self.num_kv_blocks - self.num_listed

    @property
    def block_density(self) -> float:
        """Listed tiles over all tiles: the fraction of dense work the kernels do."""
        return self.num_listed / (self.num_q_blocks * self.num_kv_blocks)

    @functools.cached_property
    def attended_pairs(self) -> int:
        """Exact number of (query, key) pairs that attend (counts partial tiles pair by pair)."""
        qb, kb = _pairs(self.full.to("cpu"))
        rows = torch.clamp(self.q_len - qb * self.block_m, max=self.block_m)
        cols = torch.clamp(self.kv_len - kb * self.block_n, max=self.block_n)
        total = int((rows * cols).sum())
        if self._count_partial is not None and self.num_partial:
            total += self._count_partial(*_pairs(self.partial.to("cpu")))
        return total

    @property
    def density(self) -> float:
        """Exact token-level density: attending pairs over ``q_len * kv_len``."""
        return self.attended_pairs / (self.q_len * self.kv_len)

    def to_dense(self) -> torch.Tensor:
        """int8 ``[num_q_blocks, num_kv_blocks]``: 0 empty, 1 partial, 2 full."""
        dense = torch.zeros(self.num_q_blocks, self.num_kv_blocks, dtype=torch.int8)
        for csr, state in ((self.partial, PARTIAL), (self.full, FULL)):
            qb, kb = _pairs(csr.to("cpu"))
            dense[qb, kb] = state
        return dense

    def to(self, device) -> BlockLayout:
        """The same layout with its index tensors on ``device``."""
        moved = {f: getattr(self, f).to(device) for f in ("full", "partial", "full_t", "partial_t")}
        return dataclasses.replace(self, **moved)

    def __str__(self) -> str:
        return self.summary() + "\n" + self.picture()

    def summary(self) -> str:
        return (
            f"BlockLayout {self.q_len}x{self.kv_len} in {self.block_m}x{self.block_n} blocks "
            f"({self.num_q_blocks}x{self.num_kv_blocks}): {self.num_full} full, {self.num_partial} partial, "
            f"{self.num_empty} empty; block density {100 * self.block_density:.1f}%"
        )

    def picture(self, max_width: int = 64) -> str:
        """The block matrix in text: ``#`` full, ``+`` partial, ``.`` empty.

        Larger matrices are drawn at one character per ``s x s`` blocks: ``#`` if all full,
        ``.`` if all empty, ``+`` otherwise.
        """
        nq, nk = self.num_q_blocks, self.num_kv_blocks
        s = max(1, -(-max(nq, nk) // max_width))
        rows, cols = -(-nq // s), -(-nk // s)
        full = torch.zeros(rows * cols, dtype=torch.int64)
        listed = torch.zeros(rows * cols, dtype=torch.int64)
        for csr, target in ((self.full, (full, listed)), (self.partial, (listed,))):
            qb, kb = _pairs(csr.to("cpu"))
            cell = (qb // s) * cols + kb // s
            for t in target:
                t.index_add_(0, cell, torch.ones_like(cell))
        r = torch.arange(rows).repeat_interleave(cols)
        c = torch.arange(cols).repeat(rows)
        area = (torch.clamp(nq - r * s, max=s) * torch.clamp(nk - c * s, max=s)).view(-1)
        chars = [("#" if f == a else "." if n == 0 else "+") for f, n, a in zip(full.tolist(), listed.tolist(), area.tolist())]
        scale = f"  (1 character = {s}x{s} blocks)\n" if s > 1 else ""
        return scale + "\n".join("  " + "".join(chars[k * cols : (k + 1) * cols]) for k in range(rows))


def _pairs(csr: CSR) -> tuple[torch.Tensor, torch.Tensor]:
    """(row, col) int64 tensors of every entry of a CSR."""
    rows = torch.repeat_interleave(torch.arange(csr.offsets.numel() - 1), csr.counts.long())
    return rows, csr.indices.long()
