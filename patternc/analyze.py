"""How information flows through stacked layers of a pattern: ``Pattern.analyze`` and ``patternc analyze``.

At ``N`` tokens (``q_len == kv_len == N``, ``q_offset == 0``: query ``i`` and key ``i`` are the
same token) the **attention graph** G has one node per token and an edge ``j -> i`` when query
``i`` attends key ``j``. Stack attention layers with residual connections: token ``i``'s output
after ``L`` layers depends on token ``j`` iff a path of at most ``L`` edges leads from ``j`` to
``i`` (the residual stream lets information wait a layer). `Analysis` reports:

- ``coverage[L - 1]``: the fraction of ordered pairs ``(j, i)``, ``j != i``, joined by such a
  path, for ``L = 1, 2, ...`` up to the last ``L`` where it grows (``coverage[0]`` counts G's
  edges off the diagonal). A single token has no pairs: its coverage is ``(1.0,)``.
- ``closure``: the last coverage, the fraction of pairs joined by any path: 1.0 when every token
  reaches every other (a global token does it in 2 layers), exactly 0.5 for causal patterns
  (only ``j < i``).
- ``layers_to_closure``: the first ``L`` where coverage reaches ``closure``, i.e. the longest
  shortest path between joined pairs (``len(coverage)``; 1 when G is transitively closed, as
  ``causal`` and ``all`` are; ``N - 1`` for ``window(3)``).

``level`` says what G's ``nodes`` are: ``"token"`` up to ``TOKEN_LEVEL_LIMIT`` tokens, else
``"block"``: the ``ceil(N / 128)`` blocks of 128 tokens, with an edge when any pair of the two
blocks attends (a listed tile of the 128x128 layout), and coverage over pairs of blocks. A block
path need not be a token path, so block-level coverage is optimistic.

Row statistics are exact and token-level at every ``N``: keys per query (``min_keys``,
``mean_keys``, ``max_keys``), ``empty_rows`` (queries that attend nothing), ``density``
(attending pairs / N²) and ``flops_fraction``: the FLOPs of exact sparse attention relative to
dense attention (QKᵀ and PV cost the same per attending pair, so this equals ``density``).
``tile_fraction`` is what tile-skipping kernels compute instead: listed 128x128 tiles / all tiles.

Token-level reachability (`reach_counts`) runs on torch, layer by layer from the pairs reached
last, pushing or pulling, whichever costs less; the block graph is small (N / 128 nodes, the
layout's tiles as edges) and networkx's breadth-first searches measure it.
"""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass

import torch

from .errors import PatterncError
from .layout import CSR, BlockLayout, Grid, build_layout
from .resolve import Resolved

TOKEN_LEVEL_LIMIT = 8192  # largest N analyzed token by token (N x N bools: 64 MB)
BLOCK = 128  # tokens per node of the block-level graph, and the tile of `tile_fraction`
_TILE = 64  # tile of the pull step's block-sparse product
_PUSH_COST = 2048  # a pushed pair costs about this many of the pull's multiply-adds (measured, 2-core CPU)
_CHUNK = 1 << 22  # elements handled at once (pushed pairs, pulled columns x rows)


@dataclass(frozen=True)
class Analysis:
    """A pattern's information flow and row statistics at ``seq_len`` tokens (module docstring)."""

    seq_len: int
    level: str  # "token" or "block": what the nodes of the attention graph are
    nodes: int
    min_keys: int
    mean_keys: float
    max_keys: int
    empty_rows: int
    density: float
    flops_fraction: float
    tile_fraction: float
    coverage: tuple[float, ...]
    closure: float
    layers_to_closure: int


def analyze(ctx: Resolved) -> Analysis:
    """The `Analysis` of a pattern resolved at ``q_len == kv_len`` with ``q_offset == 0``."""
    n = ctx.q_len
    if ctx.kv_len != n or ctx.q_offset != 0:
        raise PatterncError(f"the analysis needs q_len == kv_len and q_offset == 0 (query i is token i), got "
                            f"q_len={n}, kv_len={ctx.kv_len}, q_offset={ctx.q_offset}")
    layout = build_layout(ctx, BLOCK, BLOCK)
    if n <= TOKEN_LEVEL_LIMIT:
        mask = ctx.dense_mask()
        level, nodes, keys, counts = "token", n, mask.sum(1), reach_counts(mask)
    else:
        listed = layout.to_dense() > 0
        level, nodes, keys, counts = "block", listed.shape[0], keys_per_query(ctx, layout), _block_reach_counts(listed)
    pairs = nodes * (nodes - 1)
    coverage = tuple(c / pairs if pairs else 1.0 for c in counts)
    return Analysis(seq_len=n, level=level, nodes=nodes, min_keys=int(keys.min()), mean_keys=keys.double().mean().item(),
                    max_keys=int(keys.max()), empty_rows=int((keys == 0).sum()), density=int(keys.sum()) / n**2,
                    flops_fraction=int(keys.sum()) / n**2, tile_fraction=layout.block_density, coverage=coverage,
                    closure=coverage[-1], layers_to_closure=len(coverage))


def table(columns: list[tuple[str, str, Analysis]]) -> str:
    """``patternc analyze``'s report: one column per ``(name, pattern text, analysis)``. Coverage
    rows go up to 6 layers, then to each column's ``layers_to_closure`` (coverage stays at
    ``closure`` after it)."""
    runs = [a for _, _, a in columns]
    shown = sorted(set(range(1, min(max(a.layers_to_closure for a in runs), 6) + 1))
                   | {a.layers_to_closure for a in runs})
    rows = [("", [name for name, _, _ in columns]), ("pattern", [text for _, text, _ in columns]),
            ("graph", [f"{a.nodes} {'tokens' if a.level == 'token' else f'blocks of {BLOCK} tokens'}" for a in runs]),
            ("keys per query: min", [str(a.min_keys) for a in runs]),
            ("                mean", [f"{a.mean_keys:.1f}" for a in runs]),
            ("                max", [str(a.max_keys) for a in runs]),
            ("empty rows", [str(a.empty_rows) for a in runs]),
            ("density", [f"{a.density:.3%}" for a in runs]),
            ("FLOPs vs dense", [f"{a.flops_fraction:.3%}" for a in runs]),
            (f"tiles listed ({BLOCK}x{BLOCK})", [f"{a.tile_fraction:.3%}" for a in runs])]
    for previous, layers in zip([0, *shown], shown):
        if layers > previous + 1:
            rows.append(("...", [""] * len(runs)))
        rows.append((f"coverage, {layers} layer{'s' * (layers > 1)}",
                     [f"{a.coverage[min(layers, a.layers_to_closure) - 1]:.3%}" for a in runs]))
    rows += [("closure", [f"{a.closure:.3%}" for a in runs]),
             ("layers to closure", [str(a.layers_to_closure) for a in runs])]
    widths = [max(len(r[1][c]) for r in rows) for c in range(len(runs))]
    label = max(len(r[0]) for r in rows)
    return "\n".join("  ".join([r[0].ljust(label), *(v.ljust(w) for v, w in zip(r[1], widths))]).rstrip()
                     for r in rows)


def keys_per_query(ctx: Resolved, layout: BlockLayout) -> torch.Tensor:
    """int64 ``[q_len]``: keys each query attends, exactly, without ``q_len x kv_len`` work: the
    widths of its full tiles plus its attending pairs in partial tiles."""
    bm, bn, nq = layout.block_m, layout.block_n, layout.num_q_blocks
    qb, kb = _entries(layout.full)
    per_block = torch.zeros(nq, dtype=torch.int64).index_add_(0, qb, torch.clamp(ctx.kv_len - kb * bn, max=bn))
    keys = per_block.repeat_interleave(bm)
    grid = Grid(ctx, bm, bn)
    qb, kb = _entries(layout.partial)
    for ids, attends, _ in grid.tile_masks(ctx.root, qb * grid.nk + kb):
        rows = (ids // grid.nk * bm).view(-1, 1) + torch.arange(bm)
        keys.index_add_(0, rows.flatten(), attends.sum(2).flatten())
    return keys[: ctx.q_len]


def _entries(csr: CSR) -> tuple[torch.Tensor, torch.Tensor]:
    """(row, column) int64 tensors of a CSR's entries."""
    rows = torch.repeat_interleave(torch.arange(csr.offsets.numel() - 1), csr.counts.long())
    return rows, csr.indices.long()


def _block_reach_counts(listed: torch.Tensor) -> list[int]:
    """`reach_counts` of the block graph (``listed[qb, kb]``: edge ``kb -> qb``), by networkx's
    breadth-first search from every block: counts of pairs at each distance, accumulated."""
    import networkx as nx  # only block-level analyses need it

    graph = nx.DiGraph()
    graph.add_nodes_from(range(listed.shape[0]))
    qb, kb = listed.nonzero(as_tuple=True)
    graph.add_edges_from(zip(kb.tolist(), qb.tolist()))
    at = Counter(d for _, dist in nx.all_pairs_shortest_path_length(graph) for d in dist.values() if d)
    return list(itertools.accumulate(at[d] for d in range(1, max(at, default=1) + 1)))


def reach_counts(adj: torch.Tensor) -> list[int]:
    """``counts[L - 1]``: ordered pairs ``(j, i)``, ``j != i``, joined by a path of at most ``L``
    edges, where ``adj[i, j]`` (bool ``[n, n]``) is an edge ``j -> i``; for ``L = 1, 2, ...`` up to
    the last ``L`` that adds pairs (at least one entry).

    Breadth-first search from all sources at once: ``reach[i, s]`` (s reaches i) is
    ``reach_{L+1} = reach_L | adj ∘ reach_L`` (a boolean matrix product), and only the pairs
    reached last (the frontier) can add pairs: ``reach_{L+1} = reach_L | adj ∘ frontier``. Each
    step takes the cheaper direction (Beamer et al.'s direction-optimizing BFS): *push* expands
    each frontier pair along its node's out-edges (cost: their number); *pull* computes
    ``adj ∘ frontier`` as a block-sparse product over ``adj``'s 64x64 tiles, each tile only over
    the sources whose frontier touches its key block (cost: a few passes over ``n x n`` bools).
    Long thin paths (windows) push a few pairs per layer; hubs and dense patterns pull once or twice.
    """
    n = adj.shape[0]
    graph = _Graph(adj)
    eye = torch.eye(n, dtype=torch.bool)
    reach = adj | eye
    frontier = reach & ~eye  # bool [n, n], or int64 indices i * n + s of reach's flat view
    counts = [int(torch.count_nonzero(frontier))]
    added = counts[0]
    while added and counts[-1] < n * (n - 1):
        frontier = graph.push(frontier, reach) if graph.push_cost(frontier, added) < graph.pull_cost \
            else graph.pull(frontier, reach)
        added = frontier.numel() if frontier.dtype != torch.bool else int(torch.count_nonzero(frontier))
        if added:
            counts.append(counts[-1] + added)
    return counts


class _Graph:
    """The two steps of `reach_counts` on one adjacency matrix (``adj[i, j]``: edge ``j -> i``):
    each takes the frontier and ``reach``, adds the next pairs to ``reach`` and returns them."""

    def __init__(self, adj: torch.Tensor):
        self.adj, self.n = adj, adj.shape[0]
        self.out_degree = adj.sum(0)
        self.blocks = nb = -(-self.n // _TILE)
        padded = torch.zeros(nb * _TILE, nb * _TILE, dtype=torch.bool)
        padded[: self.n, : self.n] = adj
        tiles = padded.view(nb, _TILE, nb, _TILE).view(torch.uint8)  # min / max: all / any, but faster
        self.full = tiles.amin(3).amin(1) > 0
        partial = (tiles.amax(3).amax(1) > 0) & ~self.full
        # per query block with partial tiles: their key blocks, the columns with edges there, its rows of adj on those
        self.partial = []
        for qb in torch.nonzero(partial.any(1)).view(-1).tolist():
            kbs = torch.nonzero(partial[qb]).view(-1)
            cols = (kbs.view(-1, 1) * _TILE + torch.arange(_TILE)).view(-1)
            cols = cols[cols < self.n]
            cols = cols[adj[qb * _TILE : (qb + 1) * _TILE, cols].any(0)]
            self.partial.append((qb, kbs, cols, adj[qb * _TILE : (qb + 1) * _TILE, cols].float()))
        # the most a pull costs (every source active in every tile), in multiply-adds, passes over n x n included
        self.pull_cost = self.n * (_TILE * sum(c.numel() for _, _, c, _ in self.partial) + nb * nb) + 8 * self.n**2
        self._out = None

    def push_cost(self, frontier: torch.Tensor, size: int) -> int:
        """Multiply-adds of a pull worth the pairs a push would expand (for a bool frontier, a
        bound: its ``size`` pairs times the largest out-degree among its nodes)."""
        if frontier.dtype == torch.bool:
            return _PUSH_COST * size * int(self.out_degree[_any(frontier, 1)].max())
        return _PUSH_COST * int(self.out_degree[frontier // self.n].sum())

    def push(self, frontier: torch.Tensor, reach: torch.Tensor) -> torch.Tensor:
        """The new pairs one edge beyond ``frontier``, as indices ``i * n + s``."""
        n, reach = self.n, reach.view(-1)
        if frontier.dtype == torch.bool:
            frontier = torch.nonzero((frontier & (self.out_degree > 0).view(-1, 1)).view(-1)).view(-1)
        if self._out is None:  # out-edges in CSR form: targets of node k are targets[offsets[k]:offsets[k + 1]]
            _, targets = torch.nonzero(self.adj.T, as_tuple=True)
            self._out = (torch.cumsum(self.out_degree, 0) - self.out_degree, targets)
        offsets, targets = self._out
        nodes, sources = frontier // n, frontier % n
        degrees = self.out_degree[nodes]
        ends = torch.cumsum(degrees, 0)
        total = int(ends[-1]) if ends.numel() else 0
        cuts = torch.searchsorted(ends, torch.arange(_CHUNK, max(total, _CHUNK), _CHUNK))
        added = []
        for node, source, degree in zip(*(torch.tensor_split(t, cuts) for t in (nodes, sources, degrees))):
            within = torch.arange(int(degree.sum())) - torch.repeat_interleave(torch.cumsum(degree, 0) - degree, degree)
            pairs = targets[torch.repeat_interleave(offsets[node], degree) + within] * n
            pairs += torch.repeat_interleave(source, degree)
            pairs = torch.unique(pairs[~reach[pairs]])
            reach[pairs] = True
            added.append(pairs)
        return torch.cat(added)

    def pull(self, frontier: torch.Tensor, reach: torch.Tensor) -> torch.Tensor:
        """The new pairs ``adj ∘ frontier & ~reach``, as a bool ``[n, n]``: ``(adj ∘ frontier)[i, s]``
        iff ``adj[i, k]`` and ``frontier[k, s]`` for some ``k``."""
        n, nb = self.n, self.blocks
        if frontier.dtype != torch.bool:
            frontier = torch.zeros(n * n, dtype=torch.bool).index_fill_(0, frontier, True).view(n, n)
        active = _any(_pad_rows(frontier, nb * _TILE).view(nb, _TILE, n), 1)  # [key block, source]
        out = torch.zeros(nb * _TILE, n, dtype=torch.bool)
        if self.full.any():  # a full tile passes its key block's frontier to every row of its query block
            blocks = out.view(nb, _TILE, n)
            blocks |= (self.full.float() @ active.float() > 0).unsqueeze(1)
        for qb, kbs, cols, rows in self.partial:
            sources = torch.nonzero(_any(active[kbs], 0)).view(-1)
            whole = sources.numel() == n  # every source: slices of columns rather than gathers
            step = max(1, _CHUNK // cols.numel())
            for start in range(0, sources.numel(), step):
                src = slice(start, start + step) if whole else sources[start : start + step]
                picked = frontier[:, src][cols] if whole else frontier[cols.view(-1, 1), src]
                out[qb * _TILE : qb * _TILE + rows.shape[0], src] |= rows @ picked.float() > 0
        new = torch.gt(out[:n], reach)
        reach |= new
        return new


def _any(x: torch.Tensor, dim: int) -> torch.Tensor:
    """``x.any(dim)`` for a bool tensor, as a max over its bytes (several times faster on the CPU)."""
    return x.view(torch.uint8).amax(dim).view(torch.bool)


def _pad_rows(x: torch.Tensor, rows: int) -> torch.Tensor:
    """``x`` with zero rows appended up to ``rows`` rows."""
    return x if x.shape[0] == rows else torch.cat([x, x.new_zeros(rows - x.shape[0], *x.shape[1:])])
