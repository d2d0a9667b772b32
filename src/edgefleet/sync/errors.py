"""The exceptions of the sync package: bad input from the peer versus local bugs.

How: everything derives from :class:`SyncError`. :class:`ProtocolError` means
the *peer* sent something this side must not accept (malformed JSON, an
unknown field, an ack for a batch never sent, a message in the wrong state);
it carries the WebSocket close code the shell should close *that* session
with and a reason that can be logged as is. :class:`SessionStateError` means
*our* code used a session wrongly (called ``applied`` for a batch it was
never given, fed a closed session): a bug to fix, never the peer's fault.

Why two branches: a shell must close a session on bad peer input and go on
serving every other session, but must not hide its own bugs behind a
"protocol error" log line.
"""

from __future__ import annotations

CLOSE_POLICY = 1008
"""WebSocket close code for a malformed or out-of-order message (RFC 6455: policy violation)."""

CLOSE_TOO_BIG = 1009
"""WebSocket close code for a message over its size limit (RFC 6455: message too big)."""


class SyncError(Exception):
    """Base of every error raised by :mod:`edgefleet.sync`."""


class ProtocolError(SyncError):
    """The peer broke the protocol; close its session with :attr:`close_code`."""

    close_code: int = CLOSE_POLICY

    def __init__(self, reason: str, *, close_code: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        if close_code is not None:
            self.close_code = close_code


class MessageTooLarge(ProtocolError):
    """A message over its size limit (a security limit, see :mod:`edgefleet.sync.messages`)."""

    close_code = CLOSE_TOO_BIG


class SessionStateError(SyncError):
    """Local misuse of a session: a bug in the calling code, not in the peer."""
