"""Label selectors: ``tier=edge,region in (eu,us),!draining``.

How: :func:`parse_selector` turns the Kubernetes selector syntax into a
:class:`Selector`, an immutable, hashable value holding a sorted tuple of
:class:`Requirement`; ``Selector.matches(labels)`` evaluates it against a
label mapping and ``str(selector)`` prints the canonical form, which parses
back to an equal selector. Requirements are ANDed; an empty selector
(``Selector.everything()``, the empty string) matches everything.

Grammar (whitespace is allowed between tokens)::

    selector    := "" | requirement ("," requirement)*
    requirement := key                          # label present
                 | "!" key                      # label absent
                 | key ("=" | "==") value       # present and equal
                 | key "!=" value               # absent or different
                 | key ("in" | "notin") "(" value ("," value)* ")"

``key`` is ``[dns-prefix/]name`` and ``value`` a label value (see
:mod:`edgefleet.api.meta`); ``value`` may be empty after ``=``/``!=`` but
not inside a set. ``in``/``notin`` must be separated from the key by
whitespace, as in Kubernetes.

Why canonical: selectors are stored in specs and compared (``apply`` skips
unchanged objects, the cloud computes each node's view from them), so two
spellings of the same selector should compare equal once parsed.

Security limit: selector text longer than :data:`MAX_SELECTOR_LENGTH`
characters is refused before parsing.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Annotated

from pydantic import AfterValidator

from edgefleet.api.errors import SelectorError
from edgefleet.api.meta import check_label_key, check_label_value

MAX_SELECTOR_LENGTH = 4096
"""Security limit on the length of selector text, in characters."""

_SPECIAL = frozenset("!=(),")


class Operator(enum.Enum):
    EXISTS = "exists"
    DOES_NOT_EXIST = "!"
    EQUALS = "="
    NOT_EQUALS = "!="
    IN = "in"
    NOT_IN = "notin"


_ARITY: dict[Operator, tuple[int, int | None]] = {
    Operator.EXISTS: (0, 0),
    Operator.DOES_NOT_EXIST: (0, 0),
    Operator.EQUALS: (1, 1),
    Operator.NOT_EQUALS: (1, 1),
    Operator.IN: (1, None),
    Operator.NOT_IN: (1, None),
}
_ORDER = {op: index for index, op in enumerate(Operator)}


def _compile(operator: Operator, values: tuple[str, ...]) -> Callable[[str | None], bool]:
    """The test of one label value (None: the label is absent) for ``operator`` over ``values``."""
    allowed = frozenset(values)
    match operator:
        case Operator.EXISTS:
            return lambda value: value is not None
        case Operator.DOES_NOT_EXIST:
            return lambda value: value is None
        case Operator.EQUALS | Operator.IN:
            return lambda value: value is not None and value in allowed
        case Operator.NOT_EQUALS | Operator.NOT_IN:
            return lambda value: value is None or value not in allowed


@dataclass(frozen=True, slots=True)
class Requirement:
    """One condition on one label. ``values`` is sorted and deduplicated."""

    key: str
    operator: Operator
    values: tuple[str, ...] = ()
    test: Callable[[str | None], bool] = field(init=False, repr=False, compare=False)
    """The check of one label value, compiled once (a push tests one selector against every node)."""

    def __post_init__(self) -> None:
        _check_key(self.key)
        values = tuple(sorted(set(self.values)))
        low, high = _ARITY[self.operator]
        if len(values) < low or (high is not None and len(values) > high):
            raise SelectorError(f"{self.operator.value!r} takes {low}..{high} values")
        for value in values:
            _check_value(value, in_set=self.operator in (Operator.IN, Operator.NOT_IN))
        object.__setattr__(self, "values", values)
        object.__setattr__(self, "test", _compile(self.operator, values))

    def matches(self, labels: Mapping[str, str]) -> bool:
        return self.test(labels.get(self.key))

    def sort_key(self) -> tuple[str, int, tuple[str, ...]]:
        return (self.key, _ORDER[self.operator], self.values)

    def __str__(self) -> str:
        match self.operator:
            case Operator.EXISTS:
                return self.key
            case Operator.DOES_NOT_EXIST:
                return f"!{self.key}"
            case Operator.EQUALS | Operator.NOT_EQUALS:
                return f"{self.key}{self.operator.value}{self.values[0]}"
            case Operator.IN | Operator.NOT_IN:
                return f"{self.key} {self.operator.value} ({','.join(self.values)})"


@dataclass(frozen=True, slots=True)
class Selector:
    """An AND of requirements, kept sorted and deduplicated (canonical)."""

    requirements: tuple[Requirement, ...] = ()

    def __post_init__(self) -> None:
        canonical = tuple(sorted(set(self.requirements), key=Requirement.sort_key))
        object.__setattr__(self, "requirements", canonical)

    @classmethod
    def everything(cls) -> Selector:
        """The empty selector, which matches every label set."""
        return cls(())

    @classmethod
    def parse(cls, text: str) -> Selector:
        return parse_selector(text)

    @classmethod
    def from_labels(cls, labels: Mapping[str, str]) -> Selector:
        """``k1=v1,k2=v2``: matches label sets that contain all of ``labels``."""
        return cls(tuple(Requirement(k, Operator.EQUALS, (v,)) for k, v in labels.items()))

    @property
    def is_everything(self) -> bool:
        return not self.requirements

    def matches(self, labels: Mapping[str, str]) -> bool:
        for requirement in self.requirements:  # noqa: SIM110 - a loop: all() over a generator costs twice as much
            if not requirement.test(labels.get(requirement.key)):
                return False
        return True

    def filter(self, label_sets: Iterable[Mapping[str, str]]) -> list[Mapping[str, str]]:
        return [labels for labels in label_sets if self.matches(labels)]

    def __str__(self) -> str:
        return ",".join(str(requirement) for requirement in self.requirements)


def _check_key(key: str) -> None:
    try:
        check_label_key(key)
    except ValueError as exc:
        raise SelectorError(str(exc)) from None


def _check_value(value: str, *, in_set: bool) -> None:
    if in_set and not value:
        raise SelectorError("empty value in a set; use 'key=' to select an empty value")
    try:
        check_label_value(value)
    except ValueError as exc:
        raise SelectorError(str(exc)) from None


def _check_plain_value(value: str) -> None:
    _check_value(value, in_set=False)


@dataclass(frozen=True, slots=True)
class _Token:
    text: str  # an identifier, or one of ! = == != ( ) , or "" for the end
    position: int
    is_word: bool


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char.isspace():
            i += 1
        elif text.startswith(("==", "!="), i):
            tokens.append(_Token(text[i : i + 2], i, False))
            i += 2
        elif char in _SPECIAL:
            tokens.append(_Token(char, i, False))
            i += 1
        else:
            start = i
            while i < len(text) and not text[i].isspace() and text[i] not in _SPECIAL:
                i += 1
            tokens.append(_Token(text[start:i], start, True))
    tokens.append(_Token("", len(text), False))
    return tokens


class _Parser:
    """Recursive descent over the token list; one method per grammar rule."""

    def __init__(self, text: str) -> None:
        self.tokens = _tokenize(text)
        self.index = 0

    def peek(self) -> _Token:
        return self.tokens[self.index]

    def take(self) -> _Token:
        token = self.tokens[self.index]
        self.index = min(self.index + 1, len(self.tokens) - 1)
        return token

    def fail(self, token: _Token, reason: str) -> SelectorError:
        found = repr(token.text) if token.text else "the end"
        return SelectorError(f"{reason}, found {found}", position=token.position)

    def selector(self) -> Selector:
        if self.peek().text == "":
            return Selector.everything()
        requirements = [self.requirement()]
        while self.peek().text == ",":
            self.take()
            requirements.append(self.requirement())
        if self.peek().text != "":
            raise self.fail(self.peek(), "expected ',' or the end")
        return Selector(tuple(requirements))

    def requirement(self) -> Requirement:
        if self.peek().text == "!":
            self.take()
            key = self.word("expected a label key after '!'")
            return self.build(key, Operator.DOES_NOT_EXIST, ())
        key = self.word("expected a label key")
        token = self.peek()
        if token.text in ("", ","):
            return self.build(key, Operator.EXISTS, ())
        if token.text in ("=", "==", "!="):
            self.take()
            op = Operator.NOT_EQUALS if token.text == "!=" else Operator.EQUALS
            return self.build(key, op, (self.optional_value(),))
        if token.is_word and token.text in ("in", "notin"):
            self.take()
            op = Operator.IN if token.text == "in" else Operator.NOT_IN
            return self.build(key, op, self.value_set())
        raise self.fail(token, "expected '=', '==', '!=', 'in', 'notin', ',' or the end")

    def word(self, reason: str) -> _Token:
        token = self.take()
        if not token.is_word:
            raise self.fail(token, reason)
        return token

    def optional_value(self) -> _Token:
        token = self.peek()
        if token.text in ("", ","):
            return _Token("", token.position, True)
        return self.word("expected a label value")

    def value_set(self) -> tuple[_Token, ...]:
        if self.peek().text != "(":
            raise self.fail(self.peek(), "expected '('")
        self.take()
        values = [self.word("expected a label value")]
        while self.peek().text == ",":
            self.take()
            values.append(self.word("expected a label value"))
        if self.peek().text != ")":
            raise self.fail(self.peek(), "expected ',' or ')'")
        self.take()
        return tuple(values)

    def build(self, key: _Token, op: Operator, values: tuple[_Token, ...]) -> Requirement:
        _relocate(_check_key, key.text, key.position)
        for value in values:
            _relocate(_check_plain_value, value.text, value.position)
        return Requirement(key.text, op, tuple(value.text for value in values))


def _relocate(check: Callable[[str], None], text: str, position: int) -> None:
    """Run ``check(text)``, re-raising its SelectorError with ``position``."""
    try:
        check(text)
    except SelectorError as exc:
        raise SelectorError(exc.reason, position=position) from None


def parse_selector(text: str) -> Selector:
    """Parse selector text; raises :class:`SelectorError` saying where and why."""
    if len(text) > MAX_SELECTOR_LENGTH:
        raise SelectorError(f"selector is {len(text)} characters long; the limit is {MAX_SELECTOR_LENGTH}")
    return _Parser(text).selector()


def check_selector(text: str) -> str:
    """Pydantic validator: the text must parse; it is kept as written."""
    try:
        parse_selector(text)
    except SelectorError as exc:
        raise ValueError(f"invalid label selector: {exc}") from None
    return text


SelectorText = Annotated[str, AfterValidator(check_selector)]
"""A field holding label selector text, checked by :func:`parse_selector`."""
