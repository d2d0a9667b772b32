"""Node conditions from agent reports: the cloud's clock on them, and Events when they change.

Why: a node that lacks a Secret its edge rules name denies the requests those rules check (fail closed).
The agent says so in its report as the ``RulesReady`` condition (:mod:`edgefleet.edge.rulestatus`); the
hub writes it to ``Node.status.conditions`` on change only (:mod:`edgefleet.cloud.statuswrites`), and
this module does the rest, called by the hub around each status write:

- :func:`stamp_conditions`: ``lastTransitionTime`` is the cloud's time when a condition's status last
  changed, kept from the stored status while it holds (the agent's clock is not trusted, and a time in
  the report would make every report differ);
- :func:`condition_events`: a Warning Event ``SecretMissing`` on the Node when its ``RulesReady`` turns
  False or its message changes, a Normal Event ``SecretsPresent`` when it turns True again: one per
  change, never per report (the stored status is compared with the one written);
- :class:`EventGate`: a Secret missing for a Domain served by a thousand nodes is one problem, not a
  thousand Events: an Event with the same reason and condition message as one recorded less than
  ``window`` seconds ago by this replica is not recorded again (each Node's condition still says it).
  Bounded, with an injected clock.

The reasons are the cloud's constants, not the agent's text, so a node cannot make an Event say
anything but its condition's message (bounded by the ``Condition`` model, under the node's name).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from edgefleet.api.documents import JSONObject
from edgefleet.cloud import events
from edgefleet.cloud.registry import Registry

log = logging.getLogger("edgefleet.cloud.hub")

RULES_READY = "RulesReady"
MISSING_REASON = "SecretMissing"
PRESENT_REASON = "SecretsPresent"
GATE_WINDOW_SECONDS = 60.0
GATE_SIZE = 1024
"""Recent Events the gate remembers (cleared when full: at worst a repeat)."""

__all__ = [
    "EventGate",
    "NodeEvent",
    "condition_events",
    "record_condition_events",
    "stamp_conditions",
]


@dataclass(frozen=True, slots=True)
class NodeEvent:
    """An Event to record about a Node."""

    type: str
    reason: str
    message: str
    gate_key: str
    """What the gate compares: the reason and the condition's message (the node's name left out)."""


def _conditions(status: object) -> dict[str, Mapping[str, Any]]:
    listed = status.get("conditions") if isinstance(status, Mapping) else None
    found: dict[str, Mapping[str, Any]] = {}
    for condition in listed if isinstance(listed, list) else ():
        if isinstance(condition, Mapping) and isinstance(condition.get("type"), str):
            found[condition["type"]] = condition
    return found


def stamp_conditions(status: JSONObject, stored: object, now: str) -> None:
    """Set ``lastTransitionTime`` of the conditions in status patch ``status`` (in place; see the module docstring)."""
    listed = status.get("conditions")
    if not isinstance(listed, list):
        return
    before = _conditions(stored)
    stamped = []
    for condition in listed:
        if not isinstance(condition, Mapping):
            continue
        old = before.get(str(condition.get("type")))
        kept = (
            old.get("lastTransitionTime") if old is not None and old.get("status") == condition.get("status") else None
        )
        stamped.append({**condition, "lastTransitionTime": kept if isinstance(kept, str) else now})
    status["conditions"] = stamped


def condition_events(node: str, stored: object, written: object) -> list[NodeEvent]:
    """The Events a status write of ``node`` calls for (``stored``: its status before, ``written``: the patch)."""
    new = _conditions(written).get(RULES_READY)
    if new is None:
        return []
    old = _conditions(stored).get(RULES_READY)
    was, now = (old or {}).get("status"), new.get("status")
    message = str(new.get("message") or "")
    if now == "False" and (was != "False" or (old or {}).get("message") != message):
        return [NodeEvent("Warning", MISSING_REASON, f"node {node}: {message}", f"{MISSING_REASON}\n{message}")]
    if now == "True" and was == "False":
        text = "every Secret the edge rules of its Domains name is present again; token checks run"
        was_message = (old or {}).get("message")
        return [NodeEvent("Normal", PRESENT_REASON, f"node {node}: {text}", f"{PRESENT_REASON}\n{was_message}")]
    return []


@dataclass(slots=True)
class EventGate:
    """At most one Event per gate key per ``window`` seconds (see the module docstring)."""

    window: float = GATE_WINDOW_SECONDS
    size: int = GATE_SIZE
    _recorded: dict[str, float] = field(default_factory=dict)

    def allow(self, key: str, now: float) -> bool:
        last = self._recorded.get(key)
        if last is not None and now - last < self.window:
            return False
        if len(self._recorded) >= self.size:
            self._recorded.clear()
        self._recorded[key] = now
        return True


async def record_condition_events(
    registry: Registry, node: str, stored: object, written: object, gate: EventGate, now: float
) -> None:
    """Record the Events :func:`condition_events` calls for, through ``gate`` (logged, never raised)."""
    for event in condition_events(node, stored, written):
        if not gate.allow(event.gate_key, now):
            continue
        try:
            await events.record(registry, "Node", node, event.reason, event.message, event.type, source="edgefleet-hub")
        except Exception as exc:  # an Event is a courtesy; the condition already says it
            log.warning("cannot record the %s event of node %s: %s", event.reason, node, exc)
