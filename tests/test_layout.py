"""`BlockLayout` against the block classification of the dense mask, for many patterns,
odd lengths and unequal block sizes; plus its CSR invariants, density and printing."""

import os
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
import torch

import patternc
from helpers import EXAMPLES_DIR, PATTERNS, block_classes, programs, run_cli
from patternc import resolve
from patternc.components import random as random_component
from patternc.layout import Grid, build
from patternc.optimize import merge_bands

SHAPES = [(1, 1), (7, 7), (33, 70), (70, 33), (77, 77), (130, 45)]
BLOCKS = [(4, 4), (8, 16), (16, 8), (5, 3), (32, 32), (128, 128), (1, 1)]


def _in_range(p, lq, lk):
    try:
        return p.dense_mask(lq, lk)
    except patternc.PatterncError:
        return None


@pytest.mark.parametrize("text", PATTERNS)
def test_layout_is_the_exact_block_classification(text):
    p = patternc.parse(text)
    for lq, lk in SHAPES:
        mask = _in_range(p, lq, lk)
        if mask is None:
            continue
        for bm, bn in BLOCKS:
            lay = p.layout(lq, lk, bm, bn)
            assert torch.equal(lay.to_dense(), block_classes(mask, bm, bn)), (text, lq, lk, bm, bn)
            assert lay.attended_pairs == int(mask.sum())
            _check_csr_invariants(lay)


def _check_csr_invariants(lay):
    nq, nk = lay.num_q_blocks, lay.num_kv_blocks
    pairs = {}
    for name, rows in (("full", nq), ("partial", nq), ("full_t", nk), ("partial_t", nk)):
        csr = getattr(lay, name)
        assert csr.offsets.dtype == torch.int32 and csr.indices.dtype == torch.int32
        assert csr.offsets.shape == (rows + 1,) and csr.offsets[0] == 0
        assert csr.offsets[-1] == csr.indices.numel()
        assert torch.equal(csr.counts, csr.offsets[1:] - csr.offsets[:-1])
        found = set()
        for r in range(rows):
            row = csr.row(r)
            assert row == sorted(set(row))
            found |= {(r, c) if not name.endswith("_t") else (c, r) for c in row}
        pairs[name.removesuffix("_t") + ("_t" if name.endswith("_t") else "")] = found
    assert pairs["full"] == pairs["full_t"] and pairs["partial"] == pairs["partial_t"]
    assert not pairs["full"] & pairs["partial"]
    assert lay.num_listed + lay.num_empty == nq * nk


def test_lecture_example_counts_and_density():
    p = patternc.parse("global(first, eos) + window(3) + random(2)")
    lay = p.layout(1000, block_m=128, block_n=128)
    mask = p.dense_mask(1000)
    assert lay.density == pytest.approx(mask.float().mean().item())
    assert lay.block_density == pytest.approx(lay.num_listed / 64)
    # global rows/columns make the first and last tile row and column non-empty
    dense = lay.to_dense()
    assert (dense[0] > 0).all() and (dense[-1] > 0).all() and (dense[:, 0] > 0).all() and (dense[:, -1] > 0).all()


def test_aligned_random_blocks_are_full_tiles():
    lay = patternc.parse("random(2, block=32)").layout(256, block_m=32, block_n=32)
    assert lay.num_partial == 0 and lay.num_full == 8 * 2


def test_causal_sliding_window_tiles():
    lay = patternc.parse("window(left=127, right=0)").layout(1024, block_m=64, block_n=64)
    # query block b >= 2 touches tiles b-2 (partial), b-1 (full) and b (partial, the diagonal)
    assert lay.full.counts.tolist() == [0] + [1] * 15
    assert lay.partial.counts.tolist() == [1, 1] + [2] * 14
    assert lay.full.row(5) == [4] and lay.partial.row(5) == [3, 5]


def test_layouts_are_fresh_data_and_printable():
    """No cache hands out shared tensors: mutating one layout leaves the next one intact."""
    p = patternc.parse("window(left=3, right=0)")
    first = p.layout(64, block_m=16, block_n=16)
    first.partial.indices.fill_(0)
    assert p.layout(64, block_m=16, block_n=16).partial.row(1) == [0, 1]
    text = str(p.layout(64, block_m=16, block_n=16))
    assert text.splitlines()[1:] == ["  +...", "  ++..", "  .++.", "  ..++"]
    big = str(patternc.parse("window(3)").layout(1 << 15, block_m=128, block_n=128))
    assert "1 character = 4x4 blocks" in big and len(big.splitlines()) == 2 + 64


def test_layout_to_device_keeps_values():
    lay = patternc.parse("causal").layout(100, block_m=16, block_n=32)
    moved = lay.to("meta")
    assert moved.full.indices.device.type == "meta" and moved.q_len == 100


@pytest.mark.parametrize("bad", [0, -1, 1.5])
def test_layout_rejects_bad_block_sizes(bad):
    with pytest.raises(patternc.PatterncError, match="block_m"):
        patternc.parse("causal").layout(16, block_m=bad)


@pytest.mark.parametrize(
    "text",
    [
        "window(left=3, right=0) & window(left=0, right=3)",
        "window(left=0, right=2) + window(left=4, right=0)",
        "(window(left=9, right=0) & causal) + window(left=0, right=4)",
        "(global(0:4) + window(left=9, right=0)) & causal & window(left=3, right=3)",
        "window(left=0, right=2) & window(left=5, right=0) & causal",
    ],
)
def test_merged_bands_mean_the_same(text):
    p = patternc.parse(text)
    merged = patternc.Pattern(merge_bands(p.root))
    for lq, lk in [(40, 40), (13, 40), (40, 13)]:
        assert torch.equal(merged.dense_mask(lq, lk), p.dense_mask(lq, lk))


@settings(max_examples=150, deadline=None)
@given(programs(), st.integers(1, 90), st.integers(1, 90), st.sampled_from([1, 3, 4, 8, 16, 32]),
       st.sampled_from([1, 2, 5, 8, 16, 64]))
def test_layout_property_any_pattern_any_shape(program, lq, lk, bm, bn):
    """Any valid program, any lengths and block sizes: the layout is the dense mask's exact
    block classification, and its CSR lists are consistent."""
    p = patternc.parse(program[0])
    mask = _in_range(p, lq, lk)
    if mask is None:  # e.g. global(40) with 30 keys: an error by design
        return
    lay = p.layout(lq, lk, bm, bn)
    assert torch.equal(lay.to_dense(), block_classes(mask, bm, bn))
    assert lay.attended_pairs == int(mask.sum())
    _check_csr_invariants(lay)


def _tile_sums(mask, bm, bn):
    """int64 [nq * nk]: the attending pairs of each tile of a dense mask."""
    lq, lk = mask.shape
    padded = torch.zeros(-(-lq // bm) * bm, -(-lk // bn) * bn, dtype=torch.int64)
    padded[:lq, :lk] = mask
    return padded.view(padded.shape[0] // bm, bm, -1, bn).sum((1, 3)).view(-1)


@settings(max_examples=150, deadline=None)
@given(programs(), st.integers(1, 60), st.integers(1, 60), st.sampled_from([None, -7, 0, 5, 40]),
       st.sampled_from([1, 3, 4, 8, 16]), st.sampled_from([1, 2, 5, 8, 16]), st.booleans())
def test_pair_counts_are_exact_on_every_tile(program, lq, lk, q_offset, bm, bn, small_chunks):
    """`Grid.pairs` (closed forms per component, pairs looked at only where two terms are partial)
    equals the dense mask's count on every tile, empty and full ones included."""
    p = patternc.parse(program[0])
    try:
        mask = p.dense_mask(lq, lk, q_offset=q_offset)
    except patternc.PatterncError:
        return
    ctx = p.resolve(lq, lk, q_offset, optimized=True)
    grid = Grid(ctx, bm, bn)
    with pytest.MonkeyPatch.context() as mp:
        if small_chunks:  # many chunks of draws, of looked-at tiles and of dense rows
            for module, name, value in ((random_component, "_CHUNK", 5), (build, "_EXACT_CHUNK", 40), (resolve, "_CHUNK", 9)):
                mp.setattr(module, name, value)
            assert torch.equal(p.dense_mask(lq, lk, q_offset=q_offset), mask)
        assert torch.equal(grid.pairs(ctx.root, torch.arange(grid.nq * grid.nk)), _tile_sums(mask, bm, bn))
        assert p.layout(lq, lk, bm, bn, q_offset=q_offset).attended_pairs == int(mask.sum())


@pytest.mark.parametrize("n,pairs", [(2**20, 141556977), (2**22, 566230070)])
def test_density_at_millions_of_tokens_looks_at_few_pairs(monkeypatch, n, pairs):
    """Regression (issue 10 #6): the density line of `patternc compile` cost O(partial tiles x
    tile area) (lecture at 1M tokens: 114661 tiles, 13 s). It counts in closed form now and looks
    at pairs only on the tiles where two terms are partial. (The counts: the old pair-by-pair sum.)"""
    looked = []
    tile_masks = Grid.tile_masks
    monkeypatch.setattr(Grid, "tile_masks", lambda self, node, ids: looked.append(ids.numel()) or tile_masks(self, node, ids))
    lay = patternc.load(os.path.join(EXAMPLES_DIR, "lecture.attn")).layout(n, block_m=64, block_n=64)
    looked.clear()
    assert lay.attended_pairs == pairs and sum(looked) <= 8


def test_token_level_random_costs_what_its_draws_cost():
    """Regression (issue 10 #7): `random(256, block=1)` at 16K tokens ran for 9 minutes (an earlier
    version allocated > 8 GB). Its table, layout, kernel tables and density follow its 4M draws;
    only the dense mask, when asked for, is Lq x Lk (268 MB), computed a few rows at a time."""
    code = ("import resource, time, patternc\n"
            "from patternc.kernels.emit import params\n"
            "peak = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss >> 10\n"
            "p = patternc.parse('random(256, block=1)')\n"
            "base, start = peak(), time.time()\n"
            "lay = p.layout(16384, block_m=64, block_n=64)\n"
            "print(lay.num_partial, lay.attended_pairs, params(p.resolve(16384, optimized=True)).numel(), peak() - base)\n"
            "print(int(p.dense_mask(16384).count_nonzero()), peak() - base, time.time() - start)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    (partial, pairs, entries, layout_mb), (dense_pairs, dense_mb, seconds) = (
        map(float, line.split()) for line in result.stdout.splitlines())
    assert (partial, pairs, dense_pairs) == (256 * 256, 16384 * 256, 16384 * 256) and entries < 16384 * 256 + 100
    assert layout_mb < 300 and dense_mb < 268 + 300 and seconds < 60, result.stdout


def test_random_draws_beyond_the_limit_are_refused_up_front(capsys):
    p = patternc.parse("window(3) +\n  random(256, block=1)")
    message = (r"random\(256, block=1, seed=0\) draws 256 key blocks for each of 262144 query position blocks: "
               r"67108864 draws, more than the limit of 33554432 \(2\*\*25\); use a larger block or fewer draws")
    with pytest.raises(patternc.PatterncError, match=message) as err:
        p.layout(2**18)
    assert (err.value.line, err.value.column) == (2, 3)
    code, _, stderr = run_cli(capsys, "compile", "-e", "random(256, block=1)", "-n", 2**18)
    assert code == 2 and "more than the limit of 33554432" in stderr
