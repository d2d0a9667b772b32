"""Label selectors: parsing, matching, canonical printing, errors with positions."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgefleet.api.errors import SelectorError
from edgefleet.api.selectors import (
    MAX_SELECTOR_LENGTH,
    Operator,
    Requirement,
    Selector,
    check_selector,
    parse_selector,
)

LABELS = {"tier": "edge", "region": "eu-west", "edgefleet.io/role": "cache", "empty": ""}


def test_full_syntax() -> None:
    selector = parse_selector("a=b,a==b,c!=d,e in (x,y),f notin (z),g,!h")
    assert selector.requirements == (
        Requirement("a", Operator.EQUALS, ("b",)),
        Requirement("c", Operator.NOT_EQUALS, ("d",)),
        Requirement("e", Operator.IN, ("x", "y")),
        Requirement("f", Operator.NOT_IN, ("z",)),
        Requirement("g", Operator.EXISTS),
        Requirement("h", Operator.DOES_NOT_EXIST),
    )
    assert str(selector) == "a=b,c!=d,e in (x,y),f notin (z),g,!h"


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("", ""),
        ("   ", ""),
        (" tier = edge ", "tier=edge"),
        ("tier==edge", "tier=edge"),
        ("region in ( eu-west , us-east ,eu-west)", "region in (eu-west,us-east)"),
        ("region in(b,a)", "region in (a,b)"),
        ("! draining , tier", "!draining,tier"),
        ("z,a", "a,z"),
        ("tier=edge,tier=edge", "tier=edge"),
        ("empty=", "empty="),
        ("empty!=", "empty!="),
        ("edgefleet.io/role=cache", "edgefleet.io/role=cache"),
        ("in in (in)", "in in (in)"),
        ("notin", "notin"),
        ("a=in", "a=in"),
        ("a\tnotin\n(b)", "a notin (b)"),
    ],
)
def test_canonical_form(text: str, canonical: str) -> None:
    selector = parse_selector(text)
    assert str(selector) == canonical
    assert parse_selector(canonical) == selector


@pytest.mark.parametrize(
    ("text", "matches"),
    [
        ("", True),
        ("tier=edge", True),
        ("tier=parent", False),
        ("tier!=parent", True),
        ("tier!=edge", False),
        ("missing!=x", True),
        ("region in (eu-west,us-east)", True),
        ("region in (us-east)", False),
        ("missing in (x)", False),
        ("region notin (us-east)", True),
        ("region notin (eu-west)", False),
        ("missing notin (x)", True),
        ("tier", True),
        ("missing", False),
        ("!missing", True),
        ("!tier", False),
        ("empty=", True),
        ("empty", True),
        ("tier=", False),
        ("edgefleet.io/role=cache,tier=edge,!draining", True),
        ("edgefleet.io/role=cache,tier=parent", False),
    ],
)
def test_matches(text: str, matches: bool) -> None:
    assert parse_selector(text).matches(LABELS) is matches


def test_everything_and_from_labels() -> None:
    assert Selector.everything().matches({})
    assert Selector.everything().is_everything
    assert str(Selector.everything()) == ""
    assert parse_selector("") == Selector.everything()
    selector = Selector.from_labels({"tier": "edge", "region": "eu-west"})
    assert str(selector) == "region=eu-west,tier=edge"
    assert selector.matches(LABELS)
    assert not selector.matches({"tier": "edge"})
    assert Selector.parse("tier=edge") == parse_selector("tier=edge")
    assert selector.filter([LABELS, {"tier": "edge"}]) == [LABELS]


def test_selectors_are_hashable_values() -> None:
    assert len({parse_selector("a,b"), parse_selector("b, a"), parse_selector("a")}) == 2


@pytest.mark.parametrize(
    ("text", "position", "reason"),
    [
        ("a b", 2, "expected '=', '==', '!=', 'in', 'notin', ',' or the end, found 'b'"),
        ("a in x", 5, "expected '(', found 'x'"),
        ("a in ()", 6, "expected a label value, found ')'"),
        ("a in (x,)", 8, "expected a label value, found ')'"),
        ("a in (x", 7, "expected ',' or ')', found the end"),
        ("a in (x y)", 8, "expected ',' or ')', found 'y'"),
        ("!", 1, "expected a label key after '!', found the end"),
        ("!=a", 0, "expected a label key, found '!='"),
        ("a,", 2, "expected a label key, found the end"),
        (",a", 0, "expected a label key, found ','"),
        ("a,,b", 2, "expected a label key, found ','"),
        ("a=b=c", 3, "expected ',' or the end, found '='"),
        ("a=b c", 4, "expected ',' or the end, found 'c'"),
        ("a=(", 2, "expected a label value, found '('"),
        ("a)", 1, "expected '=', '==', '!=', 'in', 'notin', ',' or the end, found ')'"),
        ("x, -bad=1", 3, "label key '-bad': the name part must be 1-63 characters"),
        ("bad_prefix.io/x=1", 0, "'bad_prefix.io' is not a DNS-1123 name"),
        ("a=" + "v" * 64, 2, "label value '" + "v" * 64 + "' must be at most 63"),
        ("a in (ok, -no)", 10, "label value '-no' must be"),
    ],
)
def test_errors_say_where_and_why(text: str, position: int, reason: str) -> None:
    with pytest.raises(SelectorError) as info:
        parse_selector(text)
    assert info.value.position == position
    assert info.value.reason.startswith(reason)
    assert str(info.value).startswith(f"position {position}: {reason}")


def test_length_limit() -> None:
    with pytest.raises(SelectorError, match="limit is 4096") as info:
        parse_selector("a" * (MAX_SELECTOR_LENGTH + 1))
    assert info.value.position is None


@pytest.mark.parametrize(
    ("key", "op", "values", "message"),
    [
        ("a", Operator.EQUALS, (), "'=' takes 1..1 values"),
        ("a", Operator.EXISTS, ("x",), "'exists' takes 0..0 values"),
        ("a", Operator.IN, (), "'in' takes 1..None values"),
        ("a", Operator.IN, ("",), "empty value in a set"),
        ("Not Valid", Operator.EXISTS, (), "label key 'Not Valid'"),
    ],
)
def test_requirement_checks_itself(key: str, op: Operator, values: tuple[str, ...], message: str) -> None:
    with pytest.raises(SelectorError, match=message):
        Requirement(key, op, values)


def test_check_selector_for_pydantic() -> None:
    assert check_selector(" tier = edge ") == " tier = edge "
    with pytest.raises(ValueError, match="invalid label selector: position 0"):
        check_selector("=x")


# Property tests -------------------------------------------------------------

_NAME = st.from_regex(r"\A[A-Za-z0-9]([-A-Za-z0-9_.]{0,10}[A-Za-z0-9])?\Z")
_PREFIX = st.from_regex(r"\A[a-z0-9]([-a-z0-9]{0,6}[a-z0-9])?(\.[a-z0-9]{1,4}){0,2}\Z")
_KEY = st.one_of(_NAME, st.builds(lambda p, n: f"{p}/{n}", _PREFIX, _NAME))
_VALUES = st.lists(_NAME, min_size=1, max_size=4)


@st.composite
def requirements(draw: st.DrawFn) -> Requirement:
    key = draw(_KEY)
    op = draw(st.sampled_from(list(Operator)))
    if op in (Operator.EXISTS, Operator.DOES_NOT_EXIST):
        return Requirement(key, op)
    if op in (Operator.EQUALS, Operator.NOT_EQUALS):
        return Requirement(key, op, (draw(st.one_of(st.just(""), _NAME)),))
    return Requirement(key, op, tuple(draw(_VALUES)))


selectors = st.builds(lambda reqs: Selector(tuple(reqs)), st.lists(requirements(), max_size=6))


@settings(deadline=None)
@given(selectors)
def test_round_trip(selector: Selector) -> None:
    assert parse_selector(str(selector)) == selector


@settings(deadline=None)
@given(selectors, st.dictionaries(_KEY, st.one_of(st.just(""), _NAME), max_size=6))
def test_matching_is_the_and_of_requirements(selector: Selector, labels: dict[str, str]) -> None:
    expected = all(requirement.matches(labels) for requirement in selector.requirements)
    assert selector.matches(labels) is expected
    # Equality requirements built from the labels themselves always match them.
    assert Selector.from_labels(labels).matches(labels)


_SELECTOR_ALPHABET = st.sampled_from([*"ab/.-_=!(),in otz\t", "in", "notin", "é"])


@settings(deadline=None, max_examples=300)
@given(st.one_of(st.text(max_size=40), st.lists(_SELECTOR_ALPHABET, max_size=20).map("".join)))
def test_random_text_parses_or_raises_selector_error(text: str) -> None:
    try:
        selector = parse_selector(text)
    except SelectorError as exc:
        assert exc.position is None or 0 <= exc.position <= len(text)
        return
    assert parse_selector(str(selector)) == selector
