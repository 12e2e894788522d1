"""Parser and checker: every construct parses and means what it says, every error kind is
reported at the right place with the right message, and property tests (random valid
programs round-trip through `str`; random garbage gives `PatterncError` and nothing else)."""

import re

import lark
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import patternc
from patternc import PatterncError, parse
from patternc import pattern as pt
from helpers import LK, LQ, SETTINGS, block_classes, brute_mask, programs

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


# ------------------------------------------------------------------ errors
def assert_error(text, line, column, fragments, name="<pattern>", err=None):
    """Parse ``text``, expect a PatterncError at (line, column) whose message contains
    every fragment, rendered as ``name:line:col: error: message`` + source line + caret."""
    if err is None:
        with pytest.raises(PatterncError) as info:
            parse(text, name)
        err = info.value
    assert not isinstance(err, lark.exceptions.LarkError)
    assert not isinstance(err.__cause__, lark.exceptions.LarkError)
    assert (err.source, err.line, err.column) == (name, line, column), str(err)
    for fragment in [fragments] if isinstance(fragments, str) else fragments:
        assert fragment in err.message, (fragment, err.message)
    header, source_line, caret_line = str(err).split("\n")
    assert header == f"{name}:{line}:{column}: error: {err.message}"
    gutter = source_line[: source_line.index("| ") + 2]
    assert source_line == gutter + text.split("\n")[line - 1].rstrip("\r")
    assert caret_line.index("^") == len(gutter) + column - 1
    assert set(caret_line.strip()) == {"^"}
    return err


ERRORS = {
    # kind: (text, line, column, message fragments)
    "unexpected character": ("window(3) $ causal", 1, 11, "unexpected character '$'"),
    "unexpected character (unicode)": ("window(3) + caus\u00e9l", 1, 17, "unexpected character"),
    "unexpected token": ("window(3) causal", 1, 11, ["unexpected 'causal'", "expected", "'+'", "'&'"]),
    "unexpected integer": ("global(1 2)", 1, 10, "unexpected integer 2"),
    "unexpected operator": ("window(3) & & causal", 1, 13, ["unexpected '&'", "expected '(' or a name"]),
    "unexpected '=' after expression": ("window(3) = causal", 1, 11, "unexpected '='"),
    "unclosed paren": ("(window(3) + causal", 1, 20, ["unexpected end of input", "')'"]),
    "unclosed call": ("global(first, eos", 1, 18, ["unexpected end of input", "')'"]),
    "unmatched close paren": ("window(3))", 1, 10, "unexpected ')'"),
    "unmatched close paren later": ("(window(3)) + causal)", 1, 21, "unexpected ')'"),
    "unexpected end of input": ("window(3) +", 1, 12, ["unexpected end of input", "expected '(' or a name"]),
    "unexpected end after '='": ("a = ", 1, 4, "unexpected end of input"),
    "empty argument": ("window(3,,)", 1, 10, "unexpected ','"),
    "unknown component": ("windw(3)", 1, 1, "unknown component 'windw'; did you mean 'window'?"),
    "unknown component global": ("glob(0) + causal", 1, 1, "did you mean 'global'?"),
    "unknown component no suggestion": ("xyzzy(3)", 1, 1, "unknown component 'xyzzy'"),
    "unknown name": ("window(3) + foo", 1, 13, "unknown name 'foo'"),
    "unknown name suggestion": ("local = window(3)\nlocl + causal", 2, 1, "unknown name 'locl'; did you mean 'local'?"),
    "unknown name causal typo": ("caual", 1, 1, "did you mean 'causal'?"),
    "too many positional window": ("window(1, 3)", 1, 11, "window takes at most 1 positional argument"),
    "too many positional random": ("random(1, 2, 3, 4)", 1, 17, "random takes at most 3 positional arguments"),
    "arguments to causal": ("causal(1)", 1, 8, "causal takes no arguments"),
    "arguments to all": ("all(left=1)", 1, 5, "unknown keyword 'left' for all"),
    "global without selectors": ("global()", 1, 1, "global needs at least one selector"),
    "random without r": ("random(block=4)", 1, 1, "random needs the number of key blocks r"),
    "window without width": ("window()", 1, 1, "window needs a width"),
    "window width and left": ("window(3, left=1)", 1, 1, "either a width w or left=/right="),
    "wrong type word": ("window(first)", 1, 8, "window width must be an integer, got 'first'"),
    "wrong type slice": ("window(1:3)", 1, 8, "window width must be an integer, got '1:3'"),
    "wrong type keyword": ("random(2, block=eos)", 1, 17, "block must be an integer, got 'eos'"),
    "wrong type slice in left": ("window(left=:)", 1, 13, "left must be an integer"),
    "unknown selector": ("global(fist)", 1, 8, ["unknown selector 'fist'", "did you mean 'first'?"]),
    "keyword in global": ("global(k=1)", 1, 8, "global takes selectors, not keyword arguments"),
    "unknown keyword": ("window(lft=1)", 1, 8, ["unknown keyword 'lft' for window", "did you mean 'left'?"]),
    "unknown keyword random": ("random(2, sed=1)", 1, 11, ["unknown keyword 'sed'", "did you mean 'seed'?"]),
    "duplicate keyword": ("window(left=1, left=2)", 1, 16, "window got 'left' twice"),
    "keyword repeats positional": ("random(2, r=3)", 1, 11, "random got 'r' twice"),
    "positional after keyword": ("random(block=4, 2)", 1, 17, "positional argument follows keyword argument"),
    "zero window": ("window(0)", 1, 8, "window width must be positive, got 0"),
    "negative window": ("window(-3)", 1, 8, "window width must be positive, got -3"),
    "zero random": ("random(0)", 1, 8, "r must be positive, got 0"),
    "zero block": ("random(2, block=0)", 1, 17, "block must be positive, got 0"),
    "negative seed": ("random(2, seed=-1)", 1, 16, "seed must be non-negative, got -1"),
    "negative left": ("window(left=-1)", 1, 13, "left must be non-negative, got -1"),
    "negative right": ("window(left=1, right=-2)", 1, 22, "right must be non-negative, got -2"),
    "even window": ("window(4)", 1, 8, ["window width must be odd", "window(left="]),
    "redefined name": ("a = causal\nb = all\na = window(3)\na", 3, 1, "'a' is already defined (line 1)"),
    "redefined name same line": ("x = causal; x = all; x", 1, 13, "'x' is already defined (line 1)"),
    "shadowing a component": ("window = causal\nwindow", 1, 1, "'window' is a built-in component"),
    "shadowing causal": ("causal = window(3)\ncausal", 1, 1, "'causal' is a built-in component"),
    "shadowing a selector": ("eos = causal; eos", 1, 1, "'eos' is a built-in selector"),
    "empty input": ("", 1, 1, "empty pattern"),
    "whitespace only": ("   \n\t\n", 3, 1, "empty pattern"),
    "comments only": ("# a comment\n# another", 2, 10, "empty pattern"),
    "separators only": (" ;\n; ", 2, 3, "empty pattern"),
    "ends in a definition": ("a = window(3)", 1, 1, ["ends with a definition", "(e.g. 'a')"]),
    "ends in a definition, line 2": ("x = causal\ny = x + all\n", 2, 1, "ends with a definition"),
    "bare expression not last": ("causal\nb = window(3)\nb", 1, 1, "only the last statement may be a bare expression"),
    "bare expression in the middle": ("a = causal; all; a", 1, 13, "only the last statement"),
    "integer too large": ("window(99999999999999999999)", 1, 8, "window width 99999999999999999999 is too large"),
    "integer just too large": ("window(2147483649)", 1, 8, "window width 2147483649 is too large"),
    "negative integer too large": ("global(-3000000000)", 1, 8, "-3000000000 is too large"),
    "bare window": ("window + causal", 1, 1, ["window needs arguments", "window(left=a, right=b)"]),
    "bare global": ("causal + global", 1, 10, "global needs arguments"),
    "bare random": ("random", 1, 1, "random needs arguments"),
    "selector outside global": ("causal + eos", 1, 10, ["'eos' is a selector", "global(eos)"]),
    "selector first outside global": ("first", 1, 1, "'first' is a selector"),
    "definition called": ("w = window(3); w(5)", 1, 16, "'w' is a definition, not a component"),
    "definition called, no arguments": ("w = window(3)\nw() + causal", 2, 1, "'w' is a definition"),
}


@pytest.mark.parametrize("kind", ERRORS)
def test_error(kind):
    assert_error(*ERRORS[kind])


@pytest.mark.parametrize("w", [2, 4, 10, 256])
def test_even_window_suggests_left_right_windows_of_that_width(w):
    err = assert_error(f"window({w})", 1, 8, "must be odd")
    suggestions = re.findall(r"window\(left=\d+, right=\d+\)", err.message)
    assert suggestions
    for s in suggestions:
        win = parse(s).root
        assert win.left + win.right + 1 == w, s


def test_expected_tokens_are_exact():
    # LALR's own expected sets are padded by merged states and trimmed by early reductions
    assert "')'" not in assert_error("window(3) causal", 1, 11, "unexpected 'causal'").message
    assert "'&'" in assert_error("window(3))", 1, 10, "unexpected ')'").message
    assert "')'" in assert_error("(window(3) + causal", 1, 20, "unexpected end of input").message


def test_errors_in_unused_definitions_are_reported():
    assert_error("unused = windw(3)\ncausal", 1, 10, "unknown component 'windw'")


def test_definitions_do_not_see_later_names():
    assert_error("a = b\nb = causal\na", 1, 5, "unknown name 'b'")
    assert_error("a = a + causal\na", 1, 5, "unknown name 'a'")


def test_errors_on_later_lines_point_at_the_right_place():
    assert_error("a = window(3)\n\nb = a + windw(5)\nb", 3, 9, "unknown component 'windw'")
    assert_error("x = (window(3)\n     + causal\n     + rnd(2))\nx", 3, 8, "unknown component 'rnd'")
    assert_error("window(3) +\n  causal @", 2, 10, "unexpected character '@'")
    assert_error("a = causal\r\nb = windw(3)\r\nb", 2, 5, "unknown component 'windw'")
    assert_error("a = global(0)\nb = random(2,\n   block=0)\na + b", 3, 10, "block must be positive")
    assert_error("# header\n\nlocal = window(4)\nlocal", 3, 16, "must be odd")
    assert_error("causal +\n\n", 1, 9, "unexpected end of input")
    assert_error("a = causal\n  b = (all\n", 2, 11, "unexpected end of input")


def test_deep_nesting_is_an_error_not_a_crash():
    text = "causal & (all + " * 2000 + "causal" + ")" * 2000
    assert_error(text, 1, 1, "nested too deeply")


def test_long_flat_unions_and_deep_parentheses_parse():
    p = parse(" + ".join(f"window({2 * k + 1})" for k in range(3000)))
    assert len(p.root.terms) == 3000
    assert parse(" & ".join(["causal"] * 3000)) == parse("causal")
    assert parse("(" * 3000 + "window(3)" + ")" * 3000) == parse("window(3)")


def test_error_source_name():
    assert_error("windw(3)", 1, 1, "unknown component", name="<expr>")


def test_load_reads_a_file(tmp_path):
    path = tmp_path / "lecture.attn"
    path.write_text("# comment\nlocal = window(3)\nglobal(first, eos) + local + random(2)\n")
    assert patternc.load(path) == parse("global(first, eos) + window(3) + random(2)")
    assert patternc.load(str(path)) == patternc.load(path)


def test_load_errors_carry_the_path(tmp_path):
    path = tmp_path / "bad.attn"
    text = "# a comment\nlocal = windw(3)\nlocal\n"
    path.write_text(text)
    with pytest.raises(PatterncError) as info:
        patternc.load(path)
    assert_error(text, 2, 9, "unknown component 'windw'", name=str(path), err=info.value)


def test_load_missing_file(tmp_path):
    path = tmp_path / "missing.attn"
    with pytest.raises(PatterncError) as info:
        patternc.load(path)
    assert str(path) in str(info.value)
    with pytest.raises(PatterncError, match="cannot read"):
        patternc.load(tmp_path)  # a directory
    bad = tmp_path / "latin1.attn"
    bad.write_bytes(b"window(3) # \xff\n")
    with pytest.raises(PatterncError, match="latin1.attn"):
        patternc.load(bad)


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


@SETTINGS
@given(programs())
def test_valid_programs_parse_to_what_they_say_and_round_trip(program):
    text, expected = program
    p = parse(text)
    assert p.root == expected
    q = parse(str(p))
    assert q == p and hash(q) == hash(p) and str(q) == str(p)
    mask = p.dense_mask(LQ, LK)
    assert torch.equal(mask, q.dense_mask(LQ, LK))
    assert torch.equal(mask, brute_mask(p, LQ, LK))


def _parse_or_error(text):
    """parse(text), which must either succeed or raise a well-formed PatterncError."""
    try:
        p = parse(text)
    except PatterncError as err:
        assert not isinstance(err, lark.exceptions.LarkError)
        assert not isinstance(err.__cause__, lark.exceptions.LarkError)
        assert err.line >= 1 and err.column >= 1 and err.source == "<pattern>"
        assert str(err).startswith(f"<pattern>:{err.line}:{err.column}: error: ")
        return None
    assert parse(str(p)) == p
    return p


TOKENS = ["window", "global", "random", "causal", "all", "first", "last", "eos", "x", "w",
          "(", ")", ",", "=", ":", ";", "+", "&", "\n", "# c\n", " ", "3", "-1", "0", "4",
          "left=", "block=", "seed", "99999999999999999999", "\r\n", "$"]


@SETTINGS
@given(st.text(max_size=40))
def test_arbitrary_text_gives_pattern_or_patternc_error(text):
    _parse_or_error(text)


@SETTINGS
@given(st.lists(st.sampled_from(TOKENS), max_size=25).map("".join))
def test_token_soup_gives_pattern_or_patternc_error(text):
    _parse_or_error(text)


@SETTINGS
@given(programs(), st.data())
def test_mutated_programs_give_pattern_or_patternc_error(program, data):
    text = program[0]
    at = data.draw(st.integers(0, len(text)))
    cut = data.draw(st.integers(0, 3))
    insert = data.draw(st.sampled_from(TOKENS + [""]))
    _parse_or_error(text[:at] + insert + text[at + cut:])
