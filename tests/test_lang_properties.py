"""Property tests of the front end: random valid programs parse to what they say and
round-trip through `str`; random and mutated text gives a `Pattern` or a well-formed
`PatterncError`, never another exception."""

import lark
import torch
from hypothesis import given
from hypothesis import strategies as st

from patternc import PatterncError, parse
from helpers import LK, LQ, SETTINGS, brute_mask, programs


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
