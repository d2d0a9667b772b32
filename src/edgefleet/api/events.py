"""Event: a record of something a component decided or noticed about an object.

How: an Event names the object it is about (``involvedObject``: kind and
name), says what happened in one CamelCase word (``reason``:
``SiteActivated``) and in a sentence for people (``message``), whether it is
routine (``type: Normal``) or calls for attention (``Warning``), which
component reported it (``source``), and when: ``firstTimestamp`` and
``lastTimestamp``, with ``count`` occurrences in between (a reporter that
aggregates repeats bumps ``count`` and ``lastTimestamp``; one that does not
writes ``count: 1`` and both times equal).

Events are modelled like every other kind, so that the API server, the
store, watches and the CLI serve them without special cases: the fields
live in ``spec``, and an Event has no ``status`` (nothing observes an
observation). They are written by the cloud's components
(:mod:`edgefleet.cloud.events` names them ``<object>.<random>``), read by
people (``edgefleet get events``), and deleted after an hour by the cloud's
event garbage collector: they are a recent history, not an audit log.

Limits (security limits: events are written by components but may quote
remote input): :data:`MAX_MESSAGE_LENGTH` characters of message,
:data:`MAX_REASON_LENGTH` of reason and :data:`MAX_SOURCE_LENGTH` of source.
"""

from __future__ import annotations

import re
from typing import Annotated, ClassVar, Literal

from pydantic import AfterValidator, Field, model_validator

from edgefleet.api.common import Name, Timestamp, cell, parse_timestamp
from edgefleet.api.errors import FieldValueError
from edgefleet.api.meta import Column, KindInfo, Model, Resource, register

MAX_MESSAGE_LENGTH = 1024
MAX_REASON_LENGTH = 128
MAX_SOURCE_LENGTH = 128

_CAMEL_WORD = re.compile(r"^[A-Z][A-Za-z0-9]*$")


def check_camel_word(value: str) -> str:
    """One CamelCase word: a capital letter, then letters and digits (``SiteActivated``)."""
    if not _CAMEL_WORD.match(value):
        raise ValueError(f"{value[:80]!r} is not a CamelCase word (e.g. 'SiteActivated')")
    return value


CamelWord = Annotated[str, Field(min_length=1, max_length=MAX_REASON_LENGTH), AfterValidator(check_camel_word)]


class ObjectReference(Model):
    """The object an event is about."""

    kind: CamelWord = Field(description="Its kind, e.g. Site.")
    name: Name = Field(description="Its metadata.name.")


class EventSpec(Model):
    """What happened, to which object, how often and when."""

    involved_object: ObjectReference = Field(description="The object the event is about.")
    reason: CamelWord = Field(description="What happened, as one CamelCase word (e.g. SiteActivated).")
    message: str = Field(
        default="", max_length=MAX_MESSAGE_LENGTH, description="What happened, in a sentence for people."
    )
    type: Literal["Normal", "Warning"] = Field(
        default="Normal", description="Normal: routine; Warning: something may need attention."
    )
    count: int = Field(default=1, ge=1, description="How many times it happened between the two timestamps.")
    first_timestamp: Timestamp = Field(description="When it first happened (RFC 3339).")
    last_timestamp: Timestamp = Field(description="When it last happened (RFC 3339); not before firstTimestamp.")
    source: str = Field(
        default="",
        max_length=MAX_SOURCE_LENGTH,
        description="The component that reported it, e.g. site-activation-controller.",
    )

    @model_validator(mode="after")
    def _last_not_before_first(self) -> EventSpec:
        if parse_timestamp(self.last_timestamp) < parse_timestamp(self.first_timestamp):
            raise FieldValueError(("lastTimestamp",), "must not be before firstTimestamp")
        return self


class Event(Resource):
    """A record of something a component decided or noticed about an object."""

    KIND: ClassVar[str] = "Event"
    kind: Literal["Event"] = "Event"
    spec: EventSpec
    status: None = Field(default=None, description="Events have no status.")


def _event(obj: Resource) -> EventSpec:
    assert isinstance(obj, Event)
    return obj.spec


def _object(obj: Resource) -> str:
    """``site/ams-edge``, as kubectl writes object references."""
    involved = _event(obj).involved_object
    return f"{involved.kind.lower()}/{involved.name}"


INFO = register(
    KindInfo(
        kind="Event",
        plural="events",
        model=Event,
        short_names=("ev",),
        description="A record of something a component decided or noticed about an object; kept for an hour.",
        # LAST SEEN is a timestamp; `edgefleet get` shows its age when listed in cli.output.AGE_COLUMNS.
        columns=(
            Column("LAST SEEN", lambda o: _event(o).last_timestamp),
            Column("TYPE", lambda o: _event(o).type),
            Column("REASON", lambda o: _event(o).reason),
            Column("OBJECT", _object),
            Column("MESSAGE", lambda o: cell(_event(o).message)),
            Column("COUNT", lambda o: str(_event(o).count), wide=True),
            Column("SOURCE", lambda o: cell(_event(o).source), wide=True),
            Column("FIRST SEEN", lambda o: _event(o).first_timestamp, wide=True),
        ),
    )
)
