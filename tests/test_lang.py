"""The language: every construct parses and means what it says (against an independent
brute-force reading of the spec), canonical forms round-trip, global indices resolve."""

import re

import pytest
import torch

from patternc import PatterncError, parse
from patternc import pattern as pt
from helpers import block_classes

GLOBAL_0_EOS = pt.Global((pt.Index(0), pt.Index(-1)))


def spec_mask(predicate, lq, lk=None):
    """A mask straight from a per-element predicate on (p, j), p = i + (Lk - Lq)."""
    lk = lq if lk is None else lk
    return torch.tensor([[bool(predicate(i + lk - lq, j)) for j in range(lk)] for i in range(lq)]).view(lq, lk)


# ------------------------------------------------------------------ the examples
def test_lecture_example():
    p = parse("global(first, eos) + window(3) + random(2)")
    assert p.root == pt.union(GLOBAL_0_EOS, pt.Window(1, 1), pt.Random(2, 64, 0))
    assert str(p) == "global(0, -1) + random(2, block=64, seed=0) + window(3)"
    # with one 64-token random block and 64 keys, random(2) is everything: use 20 tokens
    # for the rest and check global + window against the table in the issue
    m = parse("global(first, eos) + window(3)").dense_mask(20)
    assert torch.equal(m, spec_mask(lambda p, j: j in (0, 19) or p in (0, 19) or abs(p - j) <= 1, 20))


def test_causal_prefix_example():
    p = parse("(global(0:4) + window(left=1023, right=0)) & causal")
    g = pt.Global((pt.Range(0, 4),))
    assert p.root == pt.intersect(pt.union(g, pt.Window(1023, 0)), pt.Causal())
    assert str(p) == "causal & (global(0:4) + window(left=1023, right=0))"  # terms sorted by text
    expected = spec_mask(lambda p, j: (j < 4 or p < 4 or p - 1023 <= j <= p) and j <= p, 30)
    assert torch.equal(p.dense_mask(30), expected)


def test_bigbird_like_example():
    p = parse("global(first, -1) + window(255) + random(3, block=128, seed=7)")
    assert p.root == pt.union(GLOBAL_0_EOS, pt.Window(127, 127), pt.Random(3, 128, 7))
    assert str(p) == "global(0, -1) + random(3, block=128, seed=7) + window(255)"


# ------------------------------------------------------------------ constructs
@pytest.mark.parametrize(
    "text",
    [
        "a = window(3); b = causal; a & b",
        "a = window(3)\nb = causal\na & b",
        "a = window(3)\r\nb = causal\r\na & b\r\n",
        "\n\n;a = window(3);;\n\n b = causal ;\n a & b;\n\n",
        "# leading comment\na = window(3)  # the window\n# between\nb = causal\na & b  # final\n# trailing",
        "a = window(3) # comment with ( ) + & ; = characters\nb = causal\na & b",
    ],
)
def test_definitions_separators_and_comments(text):
    assert parse(text) == parse("window(3) & causal")


def test_definitions_build_on_earlier_ones():
    text = "local = window(left=2, right=0)\nsinks = global(0:2)\nboth = sinks + local\nboth & causal"
    assert parse(text) == parse("(global(0:2) + window(left=2, right=0)) & causal")
    assert parse("_x1 = causal; Causal2 = _x1 + all; Causal2") == parse("all + causal")
    assert parse("unused = window(5); causal") == parse("causal")


def test_parentheses():
    assert parse("((window(3)))") == parse("window(3)")
    assert parse("(window(3) + (causal))") == parse("window(3) + causal")
    assert parse("a = (window(3)); ((a))") == parse("window(3)")


def test_intersection_binds_tighter_than_union():
    a, b, c = "window(3)", "causal", "global(0)"
    p = parse(f"{a} + {b} & {c}")
    assert p == parse(f"{a} + ({b} & {c})") != parse(f"({a} + {b}) & {c}")
    assert p.root == pt.union(pt.Window(1, 1), pt.intersect(pt.Causal(), pt.Global((pt.Index(0),))))
    assert parse(f"{b} & {c} + {a}") == p
    m = p.dense_mask(9)
    assert torch.equal(m, spec_mask(lambda p, j: abs(p - j) <= 1 or (j <= p and (j == 0 or p == 0)), 9))


@pytest.mark.parametrize(
    "text",
    [
        "window(3) +\n causal",
        "window(3)\n+ causal",
        "window(3)\n\n   + causal",
        "window(3)  # comment\n# another\n+ causal",
        "window(3) + # comment\n\n causal",
        "(window(3)\n+\ncausal\n)",
        "(\n  window(3)\n  + causal\n)",
        "a = \n window(3) +\n causal\na",
        "a =\n(window(3)\n + causal)\na",
    ],
)
def test_newline_continuation_around_plus(text):
    assert parse(text) == parse("window(3) + causal")


@pytest.mark.parametrize("text", ["window(3) &\n causal", "window(3)\n& causal", "(window(3)\n&\ncausal)"])
def test_newline_continuation_around_amp(text):
    assert parse(text) == parse("window(3) & causal")


def test_newline_continuation_inside_call_arguments():
    assert parse("global(\n  first,\n  eos\n)") == parse("global(0, -1)")
    assert parse("random(\n2,\nblock\n=\n8,\nseed=1)") == parse("random(2, block=8, seed=1)")
    assert parse("global(2\n:\n5)") == parse("global(2:5)")


def test_newline_ends_a_statement_elsewhere():
    with pytest.raises(PatterncError, match="only the last statement"):
        parse("window(3)\ncausal")


@pytest.mark.parametrize(
    "text,canonical",
    [
        ("global(first, eos,)", "global(0, -1)"),
        ("window(3,)", "window(3)"),
        ("window(left=1, right=2,)", "window(left=1, right=2)"),
        ("random(2, block=8, seed=3,)", "random(2, block=8, seed=3)"),
    ],
)
def test_trailing_commas(text, canonical):
    assert str(parse(text)) == canonical


@pytest.mark.parametrize(
    "selector,start,stop,members",  # members for Lk = 10
    [
        ("2:5", 2, 5, {2, 3, 4}),
        (":3", None, 3, {0, 1, 2}),
        ("7:", 7, None, {7, 8, 9}),
        (":", None, None, set(range(10))),
        ("-3:", -3, None, {7, 8, 9}),
        (":-8", None, -8, {0, 1}),
        ("-4:-2", -4, -2, {6, 7}),
        ("5:2", 5, 2, set()),
        ("8:100", 8, 100, {8, 9}),
        ("-100:1", -100, 1, {0}),
    ],
)
def test_slices(selector, start, stop, members):
    p = parse(f"global({selector})")
    assert p.root == pt.Global((pt.Range(start, stop),))
    assert str(p) == f"global({selector})"
    expected = spec_mask(lambda p, j: j in members or p in members, 10)
    assert torch.equal(p.dense_mask(10), expected)


def test_selector_words():
    assert parse("global(first)") == parse("global(0)")
    assert parse("global(last)") == parse("global(eos)") == parse("global(-1)")
    assert str(parse("global(first, last)")) == "global(0, -1)"
    assert str(parse("global(first, 0, eos, last, -1)")) == "global(0, -1)"  # duplicates removed
    m = parse("global(last)").dense_mask(5, 7)
    assert torch.equal(m, spec_mask(lambda p, j: j == 6 or p == 6, 5, 7))


def test_causal_and_all():
    assert parse("causal").root == pt.Causal() and str(parse("causal")) == "causal"
    assert parse("causal()") == parse("causal")
    assert parse("all").root == pt.All() and parse("all()") == parse("all")
    assert torch.equal(parse("causal").dense_mask(4, 6), spec_mask(lambda p, j: j <= p, 4, 6))
    assert parse("all").dense_mask(3, 5).all()


@pytest.mark.parametrize(
    "text,left,right,canonical",
    [
        ("window(1)", 0, 0, "window(1)"),
        ("window(3)", 1, 1, "window(3)"),
        ("window(w=7)", 3, 3, "window(7)"),
        ("window(left=1, right=1)", 1, 1, "window(3)"),
        ("window(right=1, left=1)", 1, 1, "window(3)"),
        ("window(left=0, right=0)", 0, 0, "window(1)"),
        ("window(left=2)", 2, 0, "window(left=2, right=0)"),
        ("window(right=3)", 0, 3, "window(left=0, right=3)"),
        ("window(left=127, right=0)", 127, 0, "window(left=127, right=0)"),
    ],
)
def test_window_forms(text, left, right, canonical):
    p = parse(text)
    assert p.root == pt.Window(left, right) and str(p) == canonical
    assert torch.equal(p.dense_mask(9), spec_mask(lambda p, j: p - left <= j <= p + right, 9))


def test_window_w_means_half_width_each_side():
    for w in (1, 3, 5, 9):
        m = parse(f"window({w})").dense_mask(12)
        assert torch.equal(m, spec_mask(lambda p, j: abs(p - j) <= (w - 1) // 2, 12))
    assert parse("window(3)") == parse("window(left=1, right=1)")


@pytest.mark.parametrize(
    "text",
    ["random(2)", "random(r=2)", "random(2, 64)", "random(2, 64, 0)", "random(2, block=64, seed=0)",
     "random(seed=0, r=2, block=64)", "random(2, seed=0)"],
)
def test_random_defaults(text):
    p = parse(text)
    assert p.root == pt.Random(2, 64, 0)
    assert str(p) == "random(2, block=64, seed=0)"


def test_random_arguments():
    assert parse("random(3, 16, 5)").root == pt.Random(3, 16, 5)
    assert parse("random(3, seed=5, block=16)") == parse("random(3, 16, 5)")
    assert parse("random(3, block=16)") != parse("random(3, block=16, seed=1)")


# ------------------------------------------------------------------ canonical form
def test_union_and_intersection_order_is_irrelevant():
    for op in ("+", "&"):
        a, b = parse(f"window(3) {op} causal"), parse(f"causal {op} window(3)")
        assert a == b and hash(a) == hash(b) and str(a) == str(b)
    assert parse("global(0) + causal + window(3)") == parse("window(3) + global(0) + causal")


def test_duplicate_terms_are_removed():
    assert parse("window(3) + window(3)") == parse("window(3)")
    assert parse("window(3) + window(left=1, right=1) + causal") == parse("causal + window(3)")
    assert parse("causal & causal & all") == parse("all & causal")
    assert str(parse("random(2) + random(2, block=64, seed=0)")) == "random(2, block=64, seed=0)"


def test_unions_and_intersections_are_flattened():
    assert parse("window(1) + (causal + (all + window(3)))") == parse("((window(1) + causal) + all) + window(3)")
    assert str(parse("window(1) + (causal + all)")) == "all + causal + window(1)"
    assert str(parse("(window(1) & causal) & all")) == "all & causal & window(1)"
    assert str(parse("(window(1) + causal) & all")) == "all & (causal + window(1))"
    assert str(parse("window(1) & causal + all")) == "all + causal & window(1)"


CANONICAL_CASES = [
    "global(first, eos) + window(3) + random(2)",
    "(global(0:4) + window(left=1023, right=0)) & causal",
    "global(first, -1) + window(255) + random(3, block=128, seed=7)",
    "a = window(3) + causal; b = a & global(:2, -3:); b + all",
    "(causal + window(3)) & (global(0) + random(1, block=1)) & all",
    "window(left=0, right=5) & (causal + (global(1) & window(1)))",
    "global(:) + global(first, 2:-1, last)",
]


@pytest.mark.parametrize("text", CANONICAL_CASES)
def test_str_round_trips(text):
    p = parse(text)
    q = parse(str(p))
    assert q == p and hash(q) == hash(p) and str(q) == str(p)
    assert str(parse(str(q))) == str(q)  # canonical form is a fixed point


def test_patterns_are_hashable_and_immutable():
    p = parse("window(3) + causal")
    assert len({p, parse("causal + window(3)"), parse("window(left=1, right=1) + causal")}) == 1
    with pytest.raises(AttributeError):
        p.root = pt.All()
    assert repr(p) == "Pattern('causal + window(3)')"


def test_parse_rejects_non_text():
    with pytest.raises(PatterncError, match="str"):
        parse(b"window(3)")


# ------------------------------------------------------------------ global index range
@pytest.mark.parametrize(
    "text,lq,lk,column",
    [
        ("global(5)", 5, 5, 1),
        ("window(3) + global(-6)", 6, 5, 13),
        ("global(first, 4)", 8, 4, 1),
        ("a = global(2)\ncausal & a", 3, 2, 5),
    ],
)
def test_global_index_out_of_range(text, lq, lk, column):
    p = parse(text)
    for build in (lambda: p.dense_mask(lq, lk), lambda: p.layout(lq, lk, 4, 4)):
        with pytest.raises(PatterncError) as info:
            build()
        err = info.value
        assert "out of range" in err.message and str(lk) in err.message
        assert re.search(r"global\([^)]*\)", err.message)  # names the component
        assert err.source == "<pattern>" and err.column == column


def test_global_index_in_range_at_the_boundary():
    assert parse("global(4) + global(-5)").dense_mask(3, 5)[:, [0, 4]].all()
    # resolved against the keys, not the queries
    assert parse("global(6)").dense_mask(2, 7)[:, 6].all()


def test_global_slices_clip():
    p = parse("global(3:100, -100:1)")
    m = p.dense_mask(6)
    assert torch.equal(m, spec_mask(lambda p, j: j in (0, 3, 4, 5) or p in (0, 3, 4, 5), 6))
    assert torch.equal(p.layout(6, 6, 2, 2).to_dense(), block_classes(m, 2, 2))
