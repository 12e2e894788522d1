"""`Pattern.dense_mask` (the golden definition) against the independent brute-force reading
of the spec in tests/reference.py, and the deterministic random component."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import patternc
from helpers import PATTERNS, SETTINGS, brute_mask, random_choice
from patternc.components import random_blocks

LENGTHS = [(1, 1), (7, 7), (33, 33), (70, 70), (33, 70), (70, 33), (17, 5), (5, 17)]


@pytest.mark.parametrize("text", PATTERNS)
def test_dense_mask_matches_brute_force(text):
    p = patternc.parse(text)
    for lq, lk in LENGTHS:
        try:
            expected = brute_mask(p, lq, lk)
        except IndexError:  # a global index out of range for this length
            with pytest.raises(patternc.PatterncError, match="out of range"):
                p.dense_mask(lq, lk)
            continue
        got = p.dense_mask(lq, lk)
        assert got.dtype == torch.bool and got.shape == (lq, lk)
        assert torch.equal(got, expected), (text, lq, lk)


def test_window_3_is_token_and_one_neighbour_each_side():
    m = patternc.parse("window(3)").dense_mask(6)
    for i in range(6):
        assert m[i].nonzero().view(-1).tolist() == [j for j in (i - 1, i, i + 1) if 0 <= j < 6]


def test_causal_sliding_window_of_128_tokens():
    m = patternc.parse("window(left=127, right=0)").dense_mask(300)
    assert m.sum(1).tolist() == [min(i + 1, 128) for i in range(300)]
    assert torch.equal(m, m & patternc.parse("causal").dense_mask(300))


def test_global_tokens_see_and_are_seen_by_everything():
    m = patternc.parse("global(first, eos)").dense_mask(9)
    assert m[0].all() and m[-1].all() and m[:, 0].all() and m[:, -1].all()
    assert not m[1:-1, 1:-1].any()


def test_bottom_right_alignment_when_lq_differs_from_lk():
    # Lq < Lk: the last query is at the last key position (as FlashAttention does).
    m = patternc.parse("causal").dense_mask(3, 8)
    assert m.sum(1).tolist() == [6, 7, 8]
    # Lq > Lk: the first queries come "before" every key and attend nothing under causal.
    m = patternc.parse("causal").dense_mask(8, 3)
    assert m.sum(1).tolist() == [0] * 5 + [1, 2, 3]
    # global sets resolve against Lk; query i is global iff p = i + Lk - Lq is.
    m = patternc.parse("global(0)").dense_mask(4, 6)
    assert m[:, 0].all() and m.sum().item() == 4


def test_dense_mask_device_and_default_kv_len():
    p = patternc.parse("window(3)")
    assert p.dense_mask(5, device="meta").device.type == "meta"
    assert torch.equal(p.dense_mask(5), p.dense_mask(5, 5))


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "8"])
def test_dense_mask_rejects_bad_lengths(bad):
    with pytest.raises(patternc.PatterncError, match="q_len"):
        patternc.parse("all").dense_mask(bad)


@pytest.mark.parametrize("seed", [0, 1, 7, 2**31 - 1])
@pytest.mark.parametrize("n,r", [(1, 1), (2, 5), (10, 3), (64, 2), (1000, 7), (3, 3)])
def test_random_blocks_is_the_documented_pure_function(seed, n, r):
    table = random_blocks(seed, 50, n, r)
    assert table.shape == (50, min(n, r))
    for qb in range(50):
        row = table[qb].tolist()
        assert row == sorted(set(row)), "distinct and sorted"
        assert set(row) == random_choice(seed, qb, n, r)


@SETTINGS
@given(st.integers(0, 2**63 - 1), st.integers(1, 300), st.data())
def test_random_blocks_without_the_sequential_loop_is_floyds_algorithm(seed, n, data):
    """`random_blocks` computes Floyd's steps all at once (chains of collisions by pointer
    doubling); many draws out of few blocks collide often, in long chains."""
    r = data.draw(st.integers(1, n + 2) | st.integers(max(1, n - 3), n + 2))
    first = data.draw(st.integers(-2**40, 2**40))
    table = random_blocks(seed, 4, n, r, first=first)
    assert [set(row) for row in table.tolist()] == [random_choice(seed, first + b, n, r) for b in range(4)]

def test_random_picks_every_block_when_there_are_fewer_than_r():
    m = patternc.parse("random(10, block=4)").dense_mask(16, 12)
    assert m.all()


def test_random_is_deterministic_and_seed_dependent():
    a = patternc.parse("random(2, block=8, seed=1)").dense_mask(256)
    b = patternc.parse("random(2, block=8, seed=1)").dense_mask(256)
    c = patternc.parse("random(2, block=8, seed=2)").dense_mask(256)
    assert torch.equal(a, b) and not torch.equal(a, c)
    # every 8-row query block attends exactly 2 whole 8-column key blocks
    assert (a.sum(1) == 16).all()


def test_random_is_roughly_uniform():
    table = random_blocks(3, 20000, 10, 2)
    counts = torch.bincount(table.view(-1), minlength=10).double()
    expected = 20000 * 2 / 10
    assert ((counts - expected).abs() / expected).max() < 0.05
