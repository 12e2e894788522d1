"""`Pattern.analyze` and `patternc analyze`: information flow through stacked layers and row
statistics, against breadth-first searches written out here and closed forms for known patterns."""

import dataclasses
import io
import re
from collections import deque
from pathlib import Path

import pytest
import torch

import patternc
from helpers import PATTERNS, block_classes, brute_mask, run_cli as run
from patternc import analyze as flow
from patternc.resolve import Resolved

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def distance_counts(adj) -> dict[int, int]:
    """{d: number of ordered pairs (j, i), j != i, whose shortest path j -> i has d edges}, where
    adj[i][j] (nested lists of bools) is an edge j -> i: a plain breadth-first search per source."""
    n = len(adj)
    out = [[i for i in range(n) if adj[i][j]] for j in range(n)]
    counts: dict[int, int] = {}
    for source in range(n):
        dist = {source: 0}
        queue = deque([source])
        while queue:
            k = queue.popleft()
            for i in out[k]:
                if i not in dist:
                    dist[i] = dist[k] + 1
                    queue.append(i)
        for d in dist.values():
            if d:
                counts[d] = counts.get(d, 0) + 1
    return counts


def expected_flow(adj):
    """(coverage, closure, layers_to_closure) by the definitions, from `distance_counts`."""
    n = len(adj)
    counts = distance_counts(adj)
    layers = max(counts, default=1)
    reached = [sum(c for d, c in counts.items() if d <= layer) for layer in range(1, layers + 1)]
    coverage = tuple(r / (n * (n - 1)) if n > 1 else 1.0 for r in reached)
    return coverage, coverage[-1], layers


def check_rows(a, mask):
    keys = mask.sum(1)
    n = mask.shape[0]
    assert (a.min_keys, a.max_keys, a.empty_rows) == (int(keys.min()), int(keys.max()), int((keys == 0).sum()))
    assert a.mean_keys == pytest.approx(int(keys.sum()) / n)
    assert a.density == a.flops_fraction == int(keys.sum()) / n**2


# ------------------------------------------------------------------ token level
@pytest.mark.parametrize("push_cost", [0, None, 10**30], ids=["push", "auto", "pull"])
@pytest.mark.parametrize("text", PATTERNS + ["global(first) + window(3)", "window(left=2, right=0) + global(-1)"])
def test_token_level_matches_breadth_first_search(monkeypatch, text, push_cost):
    """Every step of the engine (push only, pull only, and the cost-based choice) against a plain BFS
    on the independent reference mask, at lengths around the engine's 64-token tiles."""
    if push_cost is not None:
        monkeypatch.setattr(flow, "_PUSH_COST", push_cost)
    pattern = patternc.parse(text)
    for n in (1, 2, 9, 64, 100, 131):
        try:
            mask = brute_mask(pattern, n, n)
        except IndexError:  # a global index past the tokens
            continue
        a = pattern.analyze(n)
        assert (a.level, a.nodes, a.seq_len) == ("token", n, n)
        assert (a.coverage, a.closure, a.layers_to_closure) == expected_flow(mask.tolist()), (text, n)
        check_rows(a, mask)


def test_small_chunks_give_the_same_counts(monkeypatch):
    """Pushes and pulls split into many chunks (as large graphs are) count the same pairs."""
    masks = [brute_mask(patternc.parse(t), 150, 150) for t in ("global(first) + window(5)", "random(3, block=7) + causal")]
    expected = [flow.reach_counts(m) for m in masks]
    monkeypatch.setattr(flow, "_CHUNK", 1000)
    for push_cost in (0, 10**30):
        monkeypatch.setattr(flow, "_PUSH_COST", push_cost)
        assert [flow.reach_counts(m) for m in masks] == expected


def test_random_graphs_match_breadth_first_search():
    gen = torch.Generator().manual_seed(9)
    for _ in range(20):
        n = int(torch.randint(2, 140, (), generator=gen))
        adj = torch.rand(n, n, generator=gen) < float(torch.rand((), generator=gen)) * 0.08
        counts = distance_counts(adj.tolist())
        assert flow.reach_counts(adj) == [sum(c for d, c in counts.items() if d <= layer)
                                          for layer in range(1, max(counts, default=1) + 1)]


@pytest.mark.parametrize("n", [2, 7, 100, 1000])
def test_causal_closure_is_one_half(n):
    """Causal: j reaches i iff j < i, in one layer: n (n - 1) / 2 of the n (n - 1) ordered pairs."""
    a = patternc.parse("causal").analyze(n)
    assert a.coverage == (0.5,) and a.closure == 0.5 and a.layers_to_closure == 1
    assert (a.min_keys, a.max_keys, a.mean_keys) == (1, n, (n + 1) / 2)


def test_all_closes_in_one_layer():
    a = patternc.parse("all").analyze(300)
    assert a.coverage == (1.0,) and a.layers_to_closure == 1
    assert (a.min_keys, a.max_keys, a.density, a.tile_fraction) == (300, 300, 1.0, 1.0)


@pytest.mark.parametrize("n", [5, 64, 300])
def test_window_3_needs_n_minus_1_layers(n):
    """window(3): the shortest path j -> i has |i - j| edges, and 2 (n - d) pairs are d apart, so
    coverage(L) = (2 n L - L (L + 1)) / (n (n - 1)) and the ends meet after n - 1 layers."""
    a = patternc.parse("window(3)").analyze(n)
    assert a.layers_to_closure == n - 1 and a.closure == 1.0
    assert a.coverage == pytest.approx([(2 * n * L - L * (L + 1)) / (n * (n - 1)) for L in range(1, n)], abs=1e-15)
    assert (a.min_keys, a.max_keys, a.empty_rows) == (2, 3, 0)


def test_causal_chain_reaches_half_after_n_minus_1_layers():
    """window(left=1, right=0): j -> j + 1 only; n - d pairs are d apart, all forwards."""
    n = 50
    a = patternc.parse("window(left=1, right=0)").analyze(n)
    assert a.layers_to_closure == n - 1 and a.closure == 0.5
    assert a.coverage == pytest.approx([sum(n - d for d in range(1, L + 1)) / (n * (n - 1)) for L in range(1, n)])


@pytest.mark.parametrize("n", [4, 200, 4096])
def test_a_global_token_closes_in_two_layers(n):
    """global(first) + window(3): token 0 hears everyone and everyone hears it. Edges off the
    diagonal: the window's 2 (n - 1) plus row 0's and column 0's n - 1 each, less the 2 shared."""
    a = patternc.parse("global(first) + window(3)").analyze(n)
    edges = 2 * (n - 1) + 2 * (n - 1) - 2
    assert a.coverage == (edges / (n * (n - 1)), 1.0) and a.layers_to_closure == 2
    assert (a.min_keys, a.max_keys) == (min(3, n), n)


def test_single_token_and_empty_rows():
    one = patternc.parse("window(3)").analyze(1)
    assert (one.coverage, one.closure, one.layers_to_closure, one.nodes) == ((1.0,), 1.0, 1, 1)
    nobody = patternc.parse("window(1) & global(5)").analyze(20)  # only token 5 attends (itself)
    assert (nobody.coverage, nobody.layers_to_closure) == ((0.0,), 1)
    assert (nobody.empty_rows, nobody.min_keys, nobody.max_keys, nobody.density) == (19, 0, 1, 1 / 400)


def test_analysis_is_a_frozen_value():
    a = patternc.parse("causal").analyze(10)
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.closure = 1.0
    assert a == patternc.parse("causal").analyze(10)


# ------------------------------------------------------------------ block level
def test_block_level_above_the_limit():
    assert flow.TOKEN_LEVEL_LIMIT == 8192
    at = patternc.parse("all").analyze(8192)
    above = patternc.parse("all").analyze(8193)
    assert (at.level, at.nodes, at.coverage) == ("token", 8192, (1.0,))
    assert (above.level, above.nodes, above.coverage, above.density) == ("block", 65, (1.0,), 1.0)


@pytest.mark.parametrize("text", ["window(3)", "lecture.attn", "(global(0:4) + window(left=1023, right=0)) & causal",
                                  "window(1) & global(5)"])
def test_block_level_graph_and_exact_rows(text):
    """Nodes are 128-token blocks, edges the tiles where any pair attends (classified here from the
    dense mask); row statistics stay exact, token by token."""
    n = 9001
    pattern = patternc.load(EXAMPLES / text) if text.endswith(".attn") else patternc.parse(text)
    a = pattern.analyze(n)
    mask = pattern.dense_mask(n)
    blocks = (block_classes(mask, 128, 128) > 0).tolist()
    assert (a.level, a.nodes) == ("block", 71)
    assert (a.coverage, a.closure, a.layers_to_closure) == expected_flow(blocks)
    check_rows(a, mask)


@pytest.mark.parametrize("text", PATTERNS)
def test_keys_per_query_from_the_layout(text):
    """The block-level row counts (full tiles whole, partial tiles pair by pair) at small tiles."""
    pattern = patternc.parse(text)
    for n, block in ((37, 4), (64, 16), (100, 7)):
        try:
            mask = brute_mask(pattern, n, n)
        except IndexError:
            continue
        ctx = pattern.resolve(n, optimized=True)
        keys = flow.keys_per_query(ctx, pattern.layout(n, block_m=block, block_n=block))
        assert torch.equal(keys, mask.sum(1)), (text, n, block)


def test_analysis_needs_one_length_and_no_offset():
    causal = patternc.parse("causal")
    for ctx in (Resolved(causal.root, 8, 16), Resolved(causal.root, 8, 8, q_offset=2)):
        with pytest.raises(patternc.PatterncError, match="q_len == kv_len and q_offset == 0"):
            flow.analyze(ctx)
    with pytest.raises(patternc.PatterncError, match="q_len must be a positive integer"):
        causal.analyze(0)


# ------------------------------------------------------------------ CLI
def row(out, label):
    """The cells of a table row, split on runs of 2+ spaces."""
    (line,) = [line for line in out.splitlines() if line.startswith(label + "  ")]
    return re.split(r"\s{2,}", line[len(label):].strip())


def test_cli_compares_patterns_side_by_side(capsys):
    files = [EXAMPLES / "lecture.attn", EXAMPLES / "sliding_window.attn"]
    code, out, err = run(capsys, "analyze", *files, "-e", "causal", "-n", 600)
    assert code == 0 and err == ""
    assert out.splitlines()[0].split() == [str(f) for f in files] + ["causal"]
    patterns = [patternc.load(f) for f in files] + [patternc.parse("causal")]
    assert row(out, "pattern") == [str(p) for p in patterns]
    runs = [p.analyze(600) for p in patterns]
    assert row(out, "layers to closure") == [str(a.layers_to_closure) for a in runs] == ["2", "1", "1"]
    assert row(out, "closure") == ["100.000%", "50.000%", "50.000%"]
    assert row(out, "coverage, 1 layer") == [f"{a.coverage[0]:.3%}" for a in runs]
    assert row(out, "coverage, 2 layers") == [f"{a.coverage[-1]:.3%}" for a in runs]  # stays at closure
    assert row(out, "empty rows") == ["0", "0", "0"] and row(out, "graph") == ["600 tokens"] * 3
    assert row(out, "keys per query: min") == [str(a.min_keys) for a in runs]
    assert row(out, "density") == [f"{a.density:.3%}" for a in runs]


def test_cli_reads_stdin(capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO("local = window(3)\nlocal + global(first)\n"))
    code, out, _ = run(capsys, "analyze", "-", "-n", 50)
    assert code == 0 and row(out, "pattern") == ["global(0) + window(3)"] and out.split()[0] == "<stdin>"


def test_cli_elides_long_coverage(capsys):
    code, out, _ = run(capsys, "analyze", "-e", "window(3)", "-n", 40)
    labels = [line.split("  ")[0] for line in out.splitlines() if line.startswith(("coverage", "..."))]
    assert code == 0 and labels == [f"coverage, {L} layer{'s' * (L > 1)}" for L in range(1, 7)] + ["...", "coverage, 39 layers"]
    assert row(out, "coverage, 39 layers") == ["100.000%"]


def test_cli_block_level(capsys):
    code, out, _ = run(capsys, "analyze", "-e", "window(3)", "-n", 10000)
    assert code == 0 and row(out, "graph") == ["79 blocks of 128 tokens"] and row(out, "layers to closure") == ["78"]


@pytest.mark.parametrize("argv,fragment", [
    (["-e", "window(4)", "-n", "8"], "window width must be odd"),
    (["-n", "8"], "no pattern given"),
    (["-e", "causal"], "--seq-len"),
    (["-e", "causal", "-n", "0"], "positive integer"),
    ([EXAMPLES / "nope.attn", "-n", "8"], "nope.attn"),
    (["-e", "global(20)", "-n", "8"], "out of range"),
])
def test_cli_bad_input_exits_2(capsys, argv, fragment):
    code, out, err = run(capsys, "analyze", *argv)
    assert code == 2 and out == "" and fragment in err
