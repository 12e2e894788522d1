"""Language errors: every error kind is reported at the right line and column, with the
right message, rendered as a compiler diagnostic with a caret under the text."""

import re

import lark
import pytest

import patternc
from patternc import PatterncError, parse
from patternc.source import EXCERPT

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
    full = text.split("\n")[line - 1].rstrip("\r")
    if len(full) <= EXCERPT:
        assert source_line == gutter + full
    else:  # long lines are cut around the error
        shown = source_line[len(gutter):]
        assert shown.removeprefix("...").removesuffix("...") in full and len(shown) <= EXCERPT + 6
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


def test_definitions_used_twice_cannot_blow_up():
    """Each definition uses the previous one twice: the tree doubles per line. Refused at the
    first line past the limit, quickly, instead of hashing and printing an exponential tree."""
    import time

    from patternc.lang.check import MAX_NODES

    lines = ["a0 = window(3) + global(0)"] + [f"a{i} = (a{i - 1} & causal) + (a{i - 1} & window({2 * i + 1}))"
                                              for i in range(1, 40)] + ["a39"]
    start = time.perf_counter()
    with pytest.raises(PatterncError, match=f"pattern too large: .* \\(limit {MAX_NODES}\\)") as info:
        parse("\n".join(lines))
    assert time.perf_counter() - start < 5
    # nodes of a_i: s_0 = 3 (two components and a union), s_i = 2 s_(i-1) + 5 = 8 * 2**i - 5
    first_too_big = next(i for i in range(40) if 8 * 2**i - 5 > MAX_NODES)
    assert info.value.line == first_too_big + 1 and f"{8 * 2**first_too_big - 5} components" in str(info.value)
    assert len(str(parse("\n".join(lines[:9] + ["a8"])))) > 10_000  # below the limit: fine


def test_carets_line_up_after_tabs():
    err = assert_error_shape("\twindow(3) +\t windw(5)", 1, 15)
    assert err.splitlines()[1].endswith(" window(3) +  windw(5)")


def test_excerpts_show_control_format_and_surrogate_characters_as_question_marks():
    """Regression (found by tests/test_fuzz.py): a lone surrogate (what `-e` gets from bytes that
    are not UTF-8) in the excerpt made printing the error fail, and a right-to-left override
    reversed the terminal's line. They show as '?', one column each, so carets still line up."""
    for bad in ("\x00", "\u202e", "\udcff"):
        with pytest.raises(PatterncError) as info:
            parse(f"window(3) +{bad}\u202e\udcff\x00 windw(5)")
        _, shown, carets = str(info.value).encode("utf-8").decode().split("\n")
        assert shown.endswith("window(3) +???? windw(5)") and carets.index("^") == shown.index("?")


def test_long_lines_are_cut_around_the_error():
    text = "window(3) + " * 20_000 + "windw(5)"
    err = assert_error_shape(text, 1, len(text) - 7)
    assert len(err) < 400 and "..." in err


def test_megabyte_texts_are_refused_before_parsing():
    """Regression (found by tests/test_fuzz.py): a megabyte of definitions took 16 s to parse
    before its first error was reported; texts past the limit are refused at once."""
    from patternc.lang.api import MAX_TEXT

    text = "a = window(3)\n" * 80_000 + "a"
    with pytest.raises(PatterncError, match=rf"too long: {len(text)} characters \(limit {MAX_TEXT}\)") as info:
        parse(text)
    line, column = divmod(MAX_TEXT, len("a = window(3)\n"))
    assert (info.value.line, info.value.column) == (line + 1, column + 1)  # the first character past the limit
    assert parse("# " + "x" * (MAX_TEXT - 9) + "\ncausal") == parse("causal")  # at the limit: parsed


@pytest.mark.parametrize("text", ["a" * 200_000, "window(" + "9" * 200_000 + ")", "window(" + "l" * 200_000 + "=3)"])
def test_messages_never_echo_huge_names_or_numbers(text):
    """Regression (found by tests/test_fuzz.py): an unknown 200,000-character name came back in
    the message whole; messages are cut in the middle past 400 characters."""
    with pytest.raises(PatterncError) as info:
        parse(text)
    assert len(info.value.message) <= 400 and " ... " in info.value.message and len(str(info.value)) < 800


def assert_error_shape(text, line, column):
    """The diagnostic's caret stands under the error's column of the line as shown."""
    with pytest.raises(PatterncError) as info:
        parse(text)
    assert (info.value.line, info.value.column) == (line, column)
    rendered = str(info.value)
    _, shown, carets = rendered.split("\n")
    at = carets.index("^")
    assert shown[at:at + 5] == "windw", rendered[:300]
    return rendered


def test_nested_too_deeply_points_at_its_statement():
    text = "ok = window(3)\nbad = " + "causal & (all + " * 2000 + "causal" + ")" * 2000 + "\nbad"
    err = assert_error(text, 2, 1, "nested too deeply")
    assert err.span.start == text.index("bad")


def test_patterns_copy_as_themselves_however_deep():
    import copy

    p = parse("causal & (all + " * 100 + "causal" + ")" * 100)
    assert copy.deepcopy(p) == p and copy.copy(p.root) is p.root
